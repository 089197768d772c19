"""Stills made from a stored video, for the content variants of OpenAI's Videos API: the first frame
(`thumbnail`) and every frame side by side (`spritesheet`). Decoded with the bundled ffmpeg (imageio-ffmpeg,
a base dependency), drawn with Pillow. Blocking: async code calls these through `run_in_threadpool`."""
from __future__ import annotations

import io
import math
import tempfile
from pathlib import Path

import imageio_ffmpeg
from PIL import Image

SPRITE_WIDTH = 256
"""Width of one frame in a sprite sheet, in pixels (smaller videos keep their own)."""


def video_frames(video: bytes, scratch: Path, most: int | None = None) -> list[Image.Image]:
    """The first `most` frames (all by default) of a video ffmpeg can read."""
    with tempfile.NamedTemporaryFile(dir=scratch, suffix=".video") as source:
        source.write(video)
        source.flush()
        reader = imageio_ffmpeg.read_frames(source.name)
        try:
            size = next(reader)["size"]
            frames = []
            for raw in reader:
                frames.append(Image.frombytes("RGB", size, raw))
                if most and len(frames) == most:
                    break
        finally:
            reader.close()
    return frames


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def thumbnail(video: bytes, scratch: Path) -> bytes:
    """The first frame as a JPEG."""
    return jpeg(video_frames(video, scratch, most=1)[0])


def spritesheet(video: bytes, scratch: Path) -> bytes:
    """Every frame, left to right then top to bottom in a near-square grid, as one JPEG."""
    frames = video_frames(video, scratch)
    width = min(SPRITE_WIDTH, frames[0].width)
    height = round(frames[0].height * width / frames[0].width)
    columns = math.ceil(math.sqrt(len(frames)))
    sheet = Image.new("RGB", (columns * width, math.ceil(len(frames) / columns) * height))
    for index, frame in enumerate(frames):
        sheet.paste(frame.resize((width, height), Image.Resampling.BILINEAR),
                    ((index % columns) * width, (index // columns) * height))
    return jpeg(sheet)
