"""Encoding uint8 frames into video files in memory, with the ffmpeg that imageio-ffmpeg bundles."""
from __future__ import annotations

import io
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InvalidRequest, VideoEncodingError


@dataclass(frozen=True)
class VideoFormat:
    """How one `video_format` is written: codec arguments and its quality knob, if it has one."""

    name: str
    extension: str
    mime_type: str
    codec_args: tuple[str, ...] = ()
    quality_option: str | None = None
    quality_range: tuple[int, int] | None = None
    default_quality: int | None = None
    quality_meaning: str = ""
    even_dimensions: bool = False

    def check_quality(self, quality: int) -> None:
        if self.quality_range is None:
            raise InvalidRequest("video_quality", f"video_format={self.name} has no quality setting; leave video_quality unset")
        low, high = self.quality_range
        if not low <= quality <= high:
            raise InvalidRequest("video_quality", f"video_quality={quality} is out of range for {self.name}; accepted: an integer in {low}–{high} ({self.quality_meaning})")

    def quality_args(self, quality: int | None) -> list[str]:
        if self.quality_option is None:
            return []
        return [self.quality_option, str(self.default_quality if quality is None else quality)]


VIDEO_FORMATS: dict[str, VideoFormat] = {f.name: f for f in (
    VideoFormat("mp4", ".mp4", "video/mp4",
                ("-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-movflags", "+faststart"),
                "-crf", (0, 51), 20, "x264 CRF, lower is better", even_dimensions=True),
    VideoFormat("avi", ".avi", "video/x-msvideo", ("-c:v", "mjpeg", "-pix_fmt", "yuvj420p"),
                "-q:v", (2, 31), 3, "MJPEG quantiser, lower is better", even_dimensions=True),
    VideoFormat("webm", ".webm", "video/webm",
                ("-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-row-mt", "1", "-b:v", "0", "-pix_fmt", "yuv420p"),
                "-crf", (0, 63), 32, "VP9 CRF, lower is better", even_dimensions=True),
    VideoFormat("gif", ".gif", "image/gif", ("-c:v", "gif", "-loop", "0")),
    VideoFormat("webp", ".webp", "image/webp", ("-c:v", "libwebp_anim", "-loop", "0", "-lossless", "0"),
                "-quality", (0, 100), 80, "WebP quality, higher is better"),
    VideoFormat("frames", ".npy", "application/x-npy"),
)}


def encode_video(frames: np.ndarray, video_format: str, fps: int, quality: int | None = None) -> bytes:
    """Encode F×H×W×3 uint8 `frames` as `video_format` at `fps`; `frames` yields a .npy file."""
    spec = VIDEO_FORMATS[video_format]
    if spec.name == "frames":
        buffer = io.BytesIO()
        np.save(buffer, frames, allow_pickle=False)
        return buffer.getvalue()
    import imageio_ffmpeg

    num_frames, height, width, _ = frames.shape
    filters = ["-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2"] if spec.even_dimensions and (width % 2 or height % 2) else []
    with tempfile.TemporaryDirectory(prefix="svd-video-") as folder:
        # A temporary file, not a pipe: AVI written to a pipe gets a broken header, and +faststart needs seeking.
        target = Path(folder) / f"video{spec.extension}"
        command = [
            imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", str(fps), "-i", "pipe:0",
            *filters, *spec.codec_args, *spec.quality_args(quality), "-r", str(fps), "-y", str(target),
        ]
        done = subprocess.run(command, input=np.ascontiguousarray(frames, dtype=np.uint8).tobytes(), capture_output=True)
        if done.returncode != 0:
            raise VideoEncodingError(f"ffmpeg could not write {video_format}: {done.stderr.decode(errors='replace')[-500:]}")
        return target.read_bytes()
