"""The hostile-input matrix: each case is the inputs a client sends and the input the answer must name.

Shared by tests/integration/test_hostile.py (every case over HTTP and gRPC against the real server) and
benchmarks/reliability.py (which writes docs/reliability.md).
"""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

SAMPLE_RGB = np.random.default_rng(3).integers(0, 255, (96, 128, 3), dtype=np.uint8)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


GOOD_PNG = _png(Image.fromarray(SAMPLE_RGB))


def scalar(value, dtype):
    return np.array([[value]], dtype=dtype)


def text(value: bytes | str):
    return np.array([[value.encode() if isinstance(value, str) else value]], dtype=np.object_)


def png(data: bytes = GOOD_PNG, **extra):
    return {"IMAGE_BYTES": text(data), **extra}


# name → (inputs, the input the error must name)
CASES: dict[str, tuple[dict, str]] = {
    "garbage image bytes": (png(b"\x00\x01garbage" * 50), "IMAGE_BYTES"),
    "truncated PNG": (png(GOOD_PNG[: len(GOOD_PNG) // 2]), "IMAGE_BYTES"),
    "zero-length image bytes": (png(b""), "IMAGE_BYTES"),
    "polyglot GIF header + script": (png(b"GIF89a/*\x00\x00*/=1;alert(document.domain)//" + b"A" * 64), "IMAGE_BYTES"),
    "decompression bomb (30000x30000 header)": (png(_png_header_only(30000, 30000)), "IMAGE_BYTES"),
    "100-megapixel image": (png(_png(Image.new("L", (10000, 10000)))), "IMAGE_BYTES"),
    "1x1 image": (png(_png(Image.new("RGB", (1, 1)))), "IMAGE_BYTES"),
    "oversized upload (21 MB)": (png(GOOD_PNG + b"\x00" * (21 * 1024 * 1024)), "IMAGE_BYTES"),
    "both IMAGE and IMAGE_BYTES": (png(IMAGE=SAMPLE_RGB[np.newaxis]), "IMAGE"),
    "neither image input": ({"FPS": scalar(7, np.int32)}, "IMAGE"),
    "IMAGE as float32": ({"IMAGE": SAMPLE_RGB[np.newaxis].astype(np.float32)}, "IMAGE"),
    "IMAGE with 4 channels": ({"IMAGE": np.zeros((1, 64, 64, 4), np.uint8)}, "IMAGE"),
    "IMAGE_BYTES as INT32": ({"IMAGE_BYTES": scalar(5, np.int32)}, "IMAGE_BYTES"),
    "NUM_FRAMES as FP32": (png(NUM_FRAMES=scalar(4.0, np.float32)), "NUM_FRAMES"),
    "SEED as INT32": (png(SEED=scalar(3, np.int32)), "SEED"),
    "FPS with two values": (png(FPS=np.array([[7, 8]], np.int32)), "FPS"),
    "NaN noise augmentation": (png(NOISE_AUG_STRENGTH=scalar(np.nan, np.float32)), "NOISE_AUG_STRENGTH"),
    "inf guidance": (png(MAX_GUIDANCE_SCALE=scalar(np.inf, np.float32)), "MAX_GUIDANCE_SCALE"),
    "negative noise augmentation": (png(NOISE_AUG_STRENGTH=scalar(-0.5, np.float32)), "NOISE_AUG_STRENGTH"),
    "huge steps (2^31-1)": (png(NUM_INFERENCE_STEPS=scalar(2**31 - 1, np.int32)), "NUM_INFERENCE_STEPS"),
    "negative seed": (png(SEED=scalar(-1, np.int64)), "SEED"),
    "huge width": (png(WIDTH=scalar(2**30, np.int32)), "WIDTH"),
    "zero height": (png(HEIGHT=scalar(0, np.int32)), "HEIGHT"),
    "width not a multiple of 8": (png(WIDTH=scalar(100, np.int32)), "WIDTH"),
    "one frame (crashes diffusers)": (png(NUM_FRAMES=scalar(1, np.int32)), "NUM_FRAMES"),
    "fps zero": (png(FPS=scalar(0, np.int32)), "FPS"),
    "motion bucket 256": (png(MOTION_BUCKET_ID=scalar(256, np.int32)), "MOTION_BUCKET_ID"),
    "min guidance above max": (png(MIN_GUIDANCE_SCALE=scalar(5.0, np.float32), MAX_GUIDANCE_SCALE=scalar(2.0, np.float32)), "MIN_GUIDANCE_SCALE"),
    "decode chunk zero": (png(DECODE_CHUNK_SIZE=scalar(0, np.int32)), "DECODE_CHUNK_SIZE"),
    "unknown VIDEO_FORMAT": (png(VIDEO_FORMAT=text("mkv")), "VIDEO_FORMAT"),
    "unknown RESIZE_MODE": (png(RESIZE_MODE=text("zoom")), "RESIZE_MODE"),
    "non-UTF-8 VIDEO_FORMAT": (png(VIDEO_FORMAT=text(b"\xff\xfe\x00mp4")), "VIDEO_FORMAT"),
    "video quality out of range": (png(VIDEO_QUALITY=scalar(99, np.int32)), "VIDEO_QUALITY"),
    "frames x pixels x steps over budget": (png(WIDTH=scalar(512, np.int32), HEIGHT=scalar(512, np.int32), NUM_FRAMES=scalar(16, np.int32), NUM_INFERENCE_STEPS=scalar(10, np.int32)), "NUM_FRAMES"),
    "segments zero": (png(SEGMENTS=scalar(0, np.int32)), "SEGMENTS"),
    "segments over max_segments": (png(SEGMENTS=scalar(5, np.int32)), "SEGMENTS"),
    "SEGMENTS as FP32": (png(SEGMENTS=scalar(2.0, np.float32)), "SEGMENTS"),
    "segments over the work budget": (png(WIDTH=scalar(256, np.int32), HEIGHT=scalar(256, np.int32), NUM_FRAMES=scalar(16, np.int32), NUM_INFERENCE_STEPS=scalar(5, np.int32), SEGMENTS=scalar(4, np.int32)), "SEGMENTS"),
    "interpolate 5": (png(INTERPOLATE=scalar(5, np.int32)), "INTERPOLATE"),
    "INTERPOLATE as FP32": (png(INTERPOLATE=scalar(2.0, np.float32)), "INTERPOLATE"),
    "unknown LOOP": (png(LOOP=text("bounce")), "LOOP"),
    "LOOP as INT32": (png(LOOP=scalar(1, np.int32)), "LOOP"),
    "output frames over max_output_frames": (png(NUM_FRAMES=scalar(16, np.int32), SEGMENTS=scalar(4, np.int32), INTERPOLATE=scalar(4, np.int32), LOOP=text("pingpong")), "INTERPOLATE"),
    "cache interval 0": (png(CACHE_INTERVAL=scalar(0, np.int32)), "CACHE_INTERVAL"),
    "cache interval 11": (png(CACHE_INTERVAL=scalar(11, np.int32)), "CACHE_INTERVAL"),
    "CACHE_INTERVAL as FP32": (png(CACHE_INTERVAL=scalar(2.0, np.float32)), "CACHE_INTERVAL"),
    "cache branch 4": (png(CACHE_BRANCH_ID=scalar(4, np.int32)), "CACHE_BRANCH_ID"),
    "cache branch deeper than the model's blocks": (png(CACHE_BRANCH_ID=scalar(2, np.int32)), "CACHE_BRANCH_ID"),  # tiny: 2 blocks
    "input that picks the model source": (png(MODEL_SOURCE=text("/etc/passwd")), "MODEL_SOURCE"),
}

VALID = png(WIDTH=scalar(64, np.int32), HEIGHT=scalar(64, np.int32), NUM_FRAMES=scalar(2, np.int32),
            NUM_INFERENCE_STEPS=scalar(1, np.int32))
LEAKS = ("Traceback", ".py", "/work", "/tmp", "/opt", "site-packages", "tiny", "stabilityai")


def leaks(message: str) -> list[str]:
    """Anything in an error message that belongs in the server log, not in a client's hands."""
    return [marker for marker in LEAKS if marker in message]
