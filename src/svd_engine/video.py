"""Encoding uint8 frames into video files in memory, with the ffmpeg that imageio-ffmpeg bundles."""

from __future__ import annotations

import io
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from svd_contract import VIDEO_FORMATS

from .errors import VideoEncodingError


def ffmpeg_reading_frames(width: int, height: int, fps: int) -> list[str]:
    """The start of an ffmpeg command that reads raw RGB frames of this size and rate from its standard input."""
    import imageio_ffmpeg

    return [
        imageio_ffmpeg.get_ffmpeg_exe(),
        "-hide_banner",
        "-loglevel",
        "error",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-s",
        f"{width}x{height}",
        "-r",
        str(fps),
        "-i",
        "pipe:0",
    ]


@dataclass(frozen=True)
class Encoder:
    """How one video format (svd_contract.VIDEO_FORMATS) is written: ffmpeg arguments and its quality knob."""

    codec_args: tuple[str, ...] = ()
    quality_option: str | None = None
    default_quality: int | None = None
    even_dimensions: bool = False

    def quality_args(self, quality: int | None) -> list[str]:
        if self.quality_option is None:
            return []
        return [self.quality_option, str(self.default_quality if quality is None else quality)]


ENCODERS: dict[str, Encoder] = {
    "mp4": Encoder(
        ("-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-movflags", "+faststart"),
        "-crf",
        20,
        even_dimensions=True,
    ),
    "avi": Encoder(("-c:v", "mjpeg", "-pix_fmt", "yuvj420p"), "-q:v", 3, even_dimensions=True),
    "webm": Encoder(
        (
            "-c:v",
            "libvpx-vp9",
            "-deadline",
            "realtime",
            "-cpu-used",
            "8",
            "-row-mt",
            "1",
            "-b:v",
            "0",
            "-pix_fmt",
            "yuv420p",
        ),
        "-crf",
        32,
        even_dimensions=True,
    ),
    "gif": Encoder(("-c:v", "gif", "-loop", "0")),
    "webp": Encoder(("-c:v", "libwebp_anim", "-loop", "0", "-lossless", "0"), "-quality", 80),
    "frames": Encoder(),
}
"""One per svd_contract.VIDEO_FORMATS entry (tests/unit/test_contract.py checks both name the same formats)."""


def encode_video(frames: np.ndarray, video_format: str, fps: int, quality: int | None = None) -> bytes:
    """Encode F×H×W×3 uint8 `frames` as `video_format` at `fps`; `frames` yields a .npy file."""
    spec, encoder = VIDEO_FORMATS[video_format], ENCODERS[video_format]
    if spec.name == "frames":
        buffer = io.BytesIO()
        np.save(buffer, frames, allow_pickle=False)
        return buffer.getvalue()

    num_frames, height, width, _ = frames.shape
    filters = ["-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2"] if encoder.even_dimensions and (width % 2 or height % 2) else []
    with tempfile.TemporaryDirectory(prefix="svd-video-") as folder:
        # A temporary file, not a pipe: AVI written to a pipe gets a broken header, and +faststart needs seeking.
        target = Path(folder) / f"video{spec.extension}"
        command = [
            *ffmpeg_reading_frames(width, height, fps),
            *filters,
            *encoder.codec_args,
            *encoder.quality_args(quality),
            "-r",
            str(fps),
            "-y",
            str(target),
        ]
        done = subprocess.run(
            command, input=np.ascontiguousarray(frames, dtype=np.uint8).tobytes(), capture_output=True
        )
        if done.returncode != 0:
            raise VideoEncodingError(
                f"ffmpeg could not write {video_format}: {done.stderr.decode(errors='replace')[-500:]}"
            )
        return target.read_bytes()
