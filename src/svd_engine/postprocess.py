"""Frame post-processing after generation: joining segments, interpolation and loops.

These work on F×H×W×3 uint8 frames, before any encoding, so every video format and the FRAMES output
get the same result. The order is: segments are joined, then interpolated, then looped (so a loop's
turn-around or blend uses the smooth frames).
"""

from __future__ import annotations

import subprocess

import numpy as np

from .errors import VideoEncodingError
from .video import ffmpeg_reading_frames

MIN_CROSSFADE_FRAMES = 4
"""Crossfade blends a quarter of the clip: at least one frame, leaving at least three."""


def joined_frame_count(num_frames: int, segments: int) -> int:
    """Frames of `segments` chained clips of `num_frames`, each seam's repeated frame dropped."""
    return num_frames + (segments - 1) * (num_frames - 1)


def interpolated_frame_count(frames: int, factor: int) -> int:
    return (frames - 1) * factor + 1


def crossfade_overlap(frames: int) -> int:
    """Frames of the tail that are blended into the head."""
    return frames // 4


def looped_frame_count(frames: int, loop: str) -> int:
    if loop == "pingpong":
        return 2 * frames - 2
    if loop == "crossfade":
        return frames - crossfade_overlap(frames)
    return frames


def output_frame_count(num_frames: int, segments: int, interpolate: int, loop: str) -> int:
    """Frames of the delivered video for these request values."""
    return looped_frame_count(interpolated_frame_count(joined_frame_count(num_frames, segments), interpolate), loop)


def join_segment(video: np.ndarray, clip: np.ndarray) -> np.ndarray:
    """`clip` (generated from `video`'s last frame) appended without its first frame, which repeats it."""
    return np.concatenate([video, clip[1:]])


def match_colors(clip: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """`clip` with each channel's mean and standard deviation moved to `reference`'s.

    The drift mitigation for chained segments: each continuation is pulled back to the first
    segment's colour statistics before its last frame conditions the next one.
    """
    source = clip.astype(np.float32)
    axes = (0, 1, 2)
    mean, std = source.mean(axes), source.std(axes)
    target_mean, target_std = reference.mean(axes, dtype=np.float32), reference.std(axes, dtype=np.float32)
    scale = np.where(std > 1e-3, target_std / np.maximum(std, 1e-3), 1.0)
    return np.clip((source - mean) * scale + target_mean, 0, 255).round().astype(np.uint8)


def interpolate(frames: np.ndarray, factor: int, fps: int) -> np.ndarray:
    """(F−1)×factor+1 frames at fps×factor: ffmpeg's motion-compensated `minterpolate` between each
    pair; the original frames, exactly, at every factor-th position (minterpolate works in YUV, so its
    copies of them would be a rounding off)."""
    if factor == 1:
        return frames

    count, height, width, _ = frames.shape
    wanted = interpolated_frame_count(count, factor)
    # minterpolate stops short of the last input frame; one extra copy of it carries the output to the end.
    padded = np.concatenate([frames, frames[-1:]])
    command = [
        *ffmpeg_reading_frames(width, height, fps),
        "-vf",
        f"format=yuv444p,minterpolate=fps={fps * factor}:mi_mode=mci",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "pipe:1",
    ]
    done = subprocess.run(command, input=np.ascontiguousarray(padded).tobytes(), capture_output=True)
    if done.returncode != 0:
        raise VideoEncodingError(f"ffmpeg minterpolate failed: {done.stderr.decode(errors='replace')[-500:]}")
    result = np.frombuffer(done.stdout, np.uint8).reshape(-1, height, width, 3)
    if len(result) < wanted:
        raise VideoEncodingError(f"ffmpeg minterpolate made {len(result)} frames, expected {wanted}")
    result = result[:wanted].copy()
    result[::factor] = frames
    return result


def loop(frames: np.ndarray, mode: str) -> np.ndarray:
    """pingpong: the clip then its reverse, neither end frame repeated (so it also loops without a
    stutter); crossfade: the last quarter blended into the first, so the last frame leads into the first."""
    if mode == "pingpong":
        return np.concatenate([frames, frames[-2:0:-1]])
    if mode == "crossfade":
        overlap = crossfade_overlap(len(frames))
        head, tail = frames[:overlap].astype(np.float32), frames[len(frames) - overlap :].astype(np.float32)
        weight = (np.arange(1, overlap + 1, dtype=np.float32) / (overlap + 1))[:, None, None, None]
        blended = (weight * head + (1 - weight) * tail).round().astype(np.uint8)
        return np.concatenate([blended, frames[overlap : len(frames) - overlap]])
    return frames


def finish_frames(frames: np.ndarray, interpolate_factor: int, loop_mode: str, fps: int) -> np.ndarray:
    """The joined frames interpolated, then looped: what is encoded and sent as FRAMES."""
    return loop(interpolate(frames, interpolate_factor, fps), loop_mode)
