"""Decoding what a user receives, so tests check frames, size and fps of real files."""
from __future__ import annotations

import io
from dataclasses import dataclass

import av
import numpy as np
from PIL import Image


@dataclass
class DecodedVideo:
    frames: np.ndarray  # F×H×W×3 uint8
    fps: float

    @property
    def num_frames(self) -> int:
        return self.frames.shape[0]

    @property
    def size(self) -> tuple[int, int]:
        return self.frames.shape[2], self.frames.shape[1]


def decode_video(data: bytes, video_format: str) -> DecodedVideo:
    if video_format == "frames":
        return DecodedVideo(np.load(io.BytesIO(data), allow_pickle=False), fps=float("nan"))
    if video_format in ("gif", "webp"):
        image = Image.open(io.BytesIO(data))
        frames, durations = [], []
        for index in range(image.n_frames):
            image.seek(index)
            frames.append(np.asarray(image.convert("RGB")))
            durations.append(image.info["duration"])
        return DecodedVideo(np.stack(frames), fps=1000.0 / float(np.mean(durations)))
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        return DecodedVideo(np.stack(frames), fps=float(stream.average_rate))


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())
