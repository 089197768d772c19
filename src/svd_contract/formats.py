"""Video formats a request may ask for: name, file extension, MIME type and quality range."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import InvalidRequest


@dataclass(frozen=True)
class VideoFormat:
    name: str
    extension: str
    mime_type: str
    quality_range: tuple[int, int] | None = None
    """video_quality's accepted range; None where the format has no quality knob."""
    quality_meaning: str = ""

    def check_quality(self, quality: int) -> None:
        """InvalidRequest naming video_quality unless this format accepts `quality`."""
        if self.quality_range is None:
            raise InvalidRequest(
                "video_quality", f"video_format={self.name} has no quality setting; leave video_quality unset"
            )
        low, high = self.quality_range
        if not low <= quality <= high:
            raise InvalidRequest(
                "video_quality",
                f"video_quality={quality} is out of range for {self.name}; "
                f"accepted: an integer in {low}–{high} ({self.quality_meaning})",
            )


VIDEO_FORMATS: dict[str, VideoFormat] = {
    f.name: f
    for f in (
        VideoFormat("mp4", ".mp4", "video/mp4", (0, 51), "x264 CRF, lower is better"),
        VideoFormat("avi", ".avi", "video/x-msvideo", (2, 31), "MJPEG quantiser, lower is better"),
        VideoFormat("webm", ".webm", "video/webm", (0, 63), "VP9 CRF, lower is better"),
        VideoFormat("gif", ".gif", "image/gif"),
        VideoFormat("webp", ".webp", "image/webp", (0, 100), "WebP quality, higher is better"),
        VideoFormat("frames", ".npy", "application/x-npy"),
    )
}
EXTENSION_FORMATS = {f.extension: f.name for f in VIDEO_FORMATS.values()}
MIME_TYPES = {f.name: f.mime_type for f in VIDEO_FORMATS.values()}
