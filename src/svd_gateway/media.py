"""Stills made from a stored video, for the content variants of OpenAI's Videos API: the first frame
(`thumbnail`) and every frame side by side (`spritesheet`). Decoded by the bundled ffmpeg (imageio-ffmpeg,
a base dependency), drawn with Pillow. Blocking: async code calls these through `run_in_threadpool`.

ffmpeg scales the frames down to sprites as it decodes them, and each is pasted into the sheet as it
arrives: what is held is one sheet of at most SHEET_SIDE² pixels, not the video's frames, whatever their
number. ffmpeg runs as a plain subprocess (as the engine runs it) rather than through imageio-ffmpeg's
`read_frames`: the sprites' size is chosen before decoding, so there is no header to wait for (read_frames
gives up after 10 seconds without one, "Could not load meta information") and none to parse (it warns on
every call whose output size differs from the source's)."""

from __future__ import annotations

import io
import math
import re
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import imageio_ffmpeg
from PIL import Image

SPRITE_WIDTH = 256
"""Width of one frame in a sprite sheet, in pixels (smaller videos keep their own)."""
SHEET_SIDE = 4096
"""Most pixels along either side of a sprite sheet: sprites shrink to fit, so a sheet holds at most
48 MiB (RGB) however many frames the video has."""
STREAM_SIZE = re.compile(r"Stream #\d+:\d+.*?: Video: .*? (\d+)x(\d+)[ ,]")
FRAME_COUNT = re.compile(r"frame=\s*(\d+)")


class Undecodable(Exception):
    """ffmpeg could not read the video; the message is its last word on why."""


@contextmanager
def stored(video: bytes, scratch: Path) -> Iterator[Path]:
    """`video` as a file for ffmpeg (an MP4's index may be at its end, beyond what a pipe would let it seek to)."""
    with tempfile.NamedTemporaryFile(dir=scratch, suffix=".video") as source:
        source.write(video)
        source.flush()
        yield Path(source.name)


def failure(log: str) -> Undecodable:
    return Undecodable(next((line for line in reversed(log.splitlines()) if line.strip()), "no output").strip())


LOCAL_ONLY = ("-protocol_whitelist", "file")
"""ffmpeg reads the stored video's file and nothing it names: a playlist-like file (HLS, concat) cannot make it
open other paths or URLs."""


def probe(path: Path) -> tuple[int, int, int]:
    """Frames, width and height of the first video stream, from a stream copy to nowhere: its packets are
    counted (one per frame), none is decoded, so this costs milliseconds where counting decoded frames
    (imageio_ffmpeg.count_frames_and_secs) would cost a second decode of the whole video."""
    done = subprocess.run(
        [
            imageio_ffmpeg.get_ffmpeg_exe(),
            "-hide_banner",
            "-nostdin",
            *LOCAL_ONLY,
            "-i",
            str(path),
            "-map",
            "0:v:0",
            "-c",
            "copy",
            "-f",
            "null",
            "-",
        ],
        capture_output=True,
    )
    log = done.stderr.decode(errors="replace")
    size, counts = STREAM_SIZE.search(log), FRAME_COUNT.findall(log)
    if done.returncode or not size or not counts:
        raise failure(log)
    count, width, height = int(counts[-1]), int(size[1]), int(size[2])
    if not count * width * height:
        raise Undecodable(f"the video stream has {count} frames of {width}×{height}")
    return count, width, height


def frames(path: Path, width: int, height: int, most: int) -> Iterator[Image.Image]:
    """The first `most` frames of the first video stream, scaled by ffmpeg to width×height, one at a time."""
    command = [
        imageio_ffmpeg.get_ffmpeg_exe(),
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        *LOCAL_ONLY,
        "-i",
        str(path),
        "-map",
        "0:v:0",
        "-vf",
        f"scale={width}:{height}:flags=area",
        "-fps_mode",
        "passthrough",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "pipe:1",
    ]
    size, count = width * height * 3, 0
    # ffmpeg's complaints go to a file: a pipe read only at the end could fill up and stall it
    with tempfile.TemporaryFile() as log, subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log) as process:
        stdout = process.stdout
        assert stdout is not None, "stdout=PIPE"
        try:
            while count < most and len(raw := stdout.read(size)) == size:
                count += 1
                yield Image.frombytes("RGB", (width, height), raw)
        finally:
            stdout.close()  # ffmpeg stops at its next frame (broken pipe) if the video goes on
        if not count:
            process.wait()
            log.seek(0)
            raise failure(log.read().decode(errors="replace"))


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def thumbnail(video: bytes, scratch: Path) -> bytes:
    """The first frame as a JPEG."""
    with stored(video, scratch) as path:
        _, width, height = probe(path)
        [first] = frames(path, width, height, most=1)
    return jpeg(first)


def spritesheet(video: bytes, scratch: Path) -> bytes:
    """Every frame, left to right then top to bottom in a near-square grid, as one JPEG of at most
    SHEET_SIDE×SHEET_SIDE. The frames are counted first, so the sprites' size is known before one is decoded."""
    with stored(video, scratch) as path:
        count, width, height = probe(path)
        columns = math.ceil(math.sqrt(count))
        rows = math.ceil(count / columns)
        sprite_width = max(1, min(SPRITE_WIDTH, width, SHEET_SIDE // columns, SHEET_SIDE * width // (rows * height)))
        sprite_height = max(1, height * sprite_width // width)
        sheet = Image.new("RGB", (columns * sprite_width, rows * sprite_height))
        for index, frame in enumerate(frames(path, sprite_width, sprite_height, most=count)):
            sheet.paste(frame, ((index % columns) * sprite_width, (index // columns) * sprite_height))
    return jpeg(sheet)
