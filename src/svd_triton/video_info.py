"""Frame count and size of a saved video, for the CLI's summary line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def video_info(path: Path, video_format: str) -> tuple[int, int, int]:
    """(frames, width, height) of the file at `path`, read with Pillow, numpy or the bundled ffmpeg."""
    if video_format == "frames":
        frames = np.load(path, mmap_mode="r", allow_pickle=False)
        return frames.shape[0], frames.shape[2], frames.shape[1]
    if video_format in ("gif", "webp"):
        with Image.open(path) as image:
            return getattr(image, "n_frames", 1), image.width, image.height
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    width, height = next(reader)["size"]
    reader.close()
    frames, _ = imageio_ffmpeg.count_frames_and_secs(str(path))
    return frames, width, height
