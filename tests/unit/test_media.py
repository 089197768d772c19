"""Stills for OpenAI's Videos API content variants (svd_gateway.media), on videos made here with the bundled
ffmpeg: each sprite in its place, the sheet held to SHEET_SIDE² pixels whatever the frame count, the memory
that takes (in a fresh process), and a clear error for what ffmpeg cannot read. No server."""
from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image

from svd_gateway import media

SHEET_SIDE = 4096
"""The most pixels along either side of a sheet (media.SHEET_SIDE): 48 MiB as RGB."""
TOLERANCE = 12
"""Levels a flat colour may move through H.264 (yuv420p) and the sheet's JPEG."""


def colour(index: int) -> tuple[int, int, int]:
    """Far from its neighbours' colours in every frame of a test video."""
    return (index * 37) % 256, (255 - index * 53) % 256, (index * 97 + 40) % 256


def write_video(path: Path, count: int, width: int, height: int) -> Path:
    """Frame i is a flat colour(i), as H.264 in an MP4."""
    writer = imageio_ffmpeg.write_frames(str(path), (width, height), fps=7, macro_block_size=8,
                                         output_params=["-crf", "10"])
    writer.send(None)
    for index in range(count):
        writer.send(np.full((height, width, 3), colour(index), np.uint8).tobytes())
    writer.close()
    return path


def sprite(sheet: Image.Image, index: int, columns: int, width: int, height: int) -> np.ndarray:
    """Sprite `index`'s middle half, as mean RGB (the edges blend with the next sprite in the JPEG)."""
    left, top = (index % columns) * width, (index // columns) * height
    middle = sheet.crop((left + width // 4, top + height // 4, left + 3 * width // 4, top + 3 * height // 4))
    return np.asarray(middle, np.float32).mean((0, 1))


def test_each_frame_is_a_sprite_in_its_place_and_the_thumbnail_is_the_first(tmp_path):
    video = write_video(tmp_path / "ten.mp4", 10, 96, 64).read_bytes()
    sheet = Image.open(io.BytesIO(media.spritesheet(video, tmp_path)))
    assert (sheet.format, sheet.size) == ("JPEG", (4 * 96, 3 * 64))  # 10 frames in a 4-column grid
    for index in range(10):
        assert np.abs(sprite(sheet, index, 4, 96, 64) - colour(index)).max() <= TOLERANCE, index
    assert np.abs(sprite(sheet, 11, 4, 96, 64)).max() <= TOLERANCE  # past the last frame: black
    thumbnail = Image.open(io.BytesIO(media.thumbnail(video, tmp_path)))
    assert thumbnail.size == (96, 64)
    assert np.abs(np.asarray(thumbnail, np.float32).mean((0, 1)) - colour(0)).max() <= TOLERANCE
    assert list(tmp_path.iterdir()) == [tmp_path / "ten.mp4"]  # the copies for ffmpeg are gone


@pytest.mark.parametrize("width, height", [(256, 144), (144, 256)])
def test_many_frames_shrink_the_sprites_to_keep_the_sheet_within_its_side(tmp_path, width, height):
    count, columns, rows = 300, 18, 17  # 18 sprites of the usual 256 pixels would be 4608 wide
    video = write_video(tmp_path / "long.mp4", count, width, height).read_bytes()
    sheet = Image.open(io.BytesIO(media.spritesheet(video, tmp_path)))
    sprite_width, sprite_height = sheet.width // columns, sheet.height // rows
    assert max(sheet.size) <= SHEET_SIDE
    assert (sheet.width % columns, sheet.height % rows) == (0, 0)
    assert abs(sprite_width / sprite_height - width / height) < 0.02
    for index in (0, 1, columns, count - 1):
        assert np.abs(sprite(sheet, index, columns, sprite_width, sprite_height) - colour(index)).max() <= TOLERANCE


MEASURE = """
import json, resource, sys
from pathlib import Path
from svd_gateway import media
video = Path(sys.argv[1]).read_bytes()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
media.spritesheet(video, Path(sys.argv[2]))
print(json.dumps({"before": before, "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def test_memory_is_the_sheets_not_the_frames(tmp_path):
    """120 frames of 1024×1024 are 360 MiB decoded; the sheet they make is within the 48 MiB of SHEET_SIDE²."""
    video = write_video(tmp_path / "large.mp4", 120, 1024, 1024)
    done = subprocess.run([sys.executable, "-c", MEASURE, str(video), str(tmp_path)], check=True,
                          capture_output=True, text=True)
    used = json.loads(done.stdout)
    grown_mib = (used["peak"] - used["before"]) / 1024  # ru_maxrss is in KiB on Linux
    assert grown_mib < 2 * SHEET_SIDE ** 2 * 3 / 2 ** 20, f"building the sheet took {grown_mib:.0f} MiB"


@pytest.mark.parametrize("still", [media.spritesheet, media.thumbnail])
def test_what_ffmpeg_cannot_read_is_undecodable_with_its_reason(tmp_path, still):
    with pytest.raises(media.Undecodable, match="Invalid data found"):
        still(b"not a video at all" * 100, tmp_path)
    assert list(tmp_path.iterdir()) == []
