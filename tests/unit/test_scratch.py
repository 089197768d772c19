"""Temporary files (an upload being received, the copy of a video ffmpeg decodes into stills) live in a scratch
folder of their own, which the orphan sweep never lists: a sweep running while a sprite sheet is made takes
nothing from under ffmpeg. No server: the job store on SQLite with FolderBlobs, as a gateway keeps them."""
from __future__ import annotations

import os
import subprocess
import time

import imageio_ffmpeg
import numpy as np

from svd_gateway import media
from svd_gateway.blobs import FOLDERS, SCRATCH_GRACE, FolderBlobs
from svd_gateway.jobs import SWEEP_GRACE
from svd_gateway.store import Store


def test_scratch_is_beside_the_swept_folders_on_their_filesystem(tmp_path):
    blobs = FolderBlobs(tmp_path)
    assert blobs.scratch.parent == tmp_path and blobs.scratch.name not in FOLDERS
    assert blobs.scratch.stat().st_dev == (tmp_path / "files").stat().st_dev  # an upload's rename stays atomic


def test_a_sweep_while_a_sprite_sheet_is_made_takes_nothing_from_ffmpeg(tmp_path, monkeypatch):
    """Each ffmpeg start is preceded by the gateway's sweep, everything on disk aged past its grace (a copy
    that has waited that long for ffmpeg, or a clock ahead of the disk's): the sweep finds no orphan."""
    store = Store(f"sqlite:///{tmp_path / 'jobs.db'}", FolderBlobs(tmp_path))
    writer = imageio_ffmpeg.write_frames(str(tmp_path / "clip.mp4"), (64, 48), fps=7, macro_block_size=8)
    writer.send(None)
    for shade in range(0, 250, 50):
        writer.send(np.full((48, 64, 3), shade, np.uint8).tobytes())
    writer.close()
    video = (tmp_path / "clip.mp4").read_bytes()
    (tmp_path / "clip.mp4").unlink()
    swept, start, ffmpeg = [], subprocess.Popen, imageio_ffmpeg.get_ffmpeg_exe()

    def sweep_then_start(command, *args, **kwargs):
        if command[0] == ffmpeg:
            aged = time.time() - 2 * SWEEP_GRACE
            for path in tmp_path.rglob("*"):
                os.utime(path, (aged, aged))
            swept.extend(store.sweep_orphans(SWEEP_GRACE))
        return start(command, *args, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", sweep_then_start)
    assert media.spritesheet(video, store.blobs.scratch).startswith(b"\xff\xd8")  # a JPEG
    assert swept == []
    store.close()


def test_what_a_stopped_process_left_in_scratch_is_removed_at_start(tmp_path):
    scratch = FolderBlobs(tmp_path).scratch
    (scratch / "left.partial").write_bytes(b"half an upload")
    (scratch / "another.video").write_bytes(b"another replica's, in use")
    long_ago = time.time() - 2 * SCRATCH_GRACE
    os.utime(scratch / "left.partial", (long_ago, long_ago))
    assert [path.name for path in FolderBlobs(tmp_path).scratch.iterdir()] == ["another.video"]


def test_listing_skips_a_file_deleted_while_the_folder_is_read(tmp_path):
    """The sweep lists names, then asks each one's age: a name gone in between (a job deleted) is not an error."""
    blobs = FolderBlobs(tmp_path)
    for name in ("outputs/a", "outputs/b"):
        blobs.write(name, b"video")
    listed = blobs.listing("outputs")
    first, _ = next(listed)
    blobs.delete("outputs/b" if first == "outputs/a" else "outputs/a")
    assert list(listed) == []
