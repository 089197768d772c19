"""Thumbnails and sprite sheets of OpenAI's Videos API on a real gateway + real Triton (streaming variant, tiny
model), through the official `openai` SDK: the gateway's orphan sweep, running while a sprite sheet is being
made, takes nothing from under ffmpeg; a stored video ffmpeg cannot read is a 502 in OpenAI's error shape."""
from __future__ import annotations

import io
import os
import subprocess
import time
import warnings

import imageio_ffmpeg
import openai
import pytest
from PIL import Image

from svd_gateway.blobs import FolderBlobs
from svd_gateway.jobs import SWEEP_GRACE
from svd_gateway.store import Store
from tests.support import TOKEN

warnings.filterwarnings("ignore", category=DeprecationWarning)  # the SDK marks client.videos deprecated
SMALL = {"num_inference_steps": 2, "num_frames": 4}


@pytest.fixture
def client(gateway):
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=TOKEN, max_retries=0)


@pytest.fixture
def store(gateway):
    """The gateway's store, opened a second time, as another replica on the same data_dir would."""
    opened = Store(gateway.settings.database, FolderBlobs(gateway.settings.data_dir))
    yield opened
    opened.close()


@pytest.fixture
def video(client, tmp_path, sample_png):
    photo = tmp_path / "photo.png"
    photo.write_bytes(sample_png)
    made = client.videos.create_and_poll(prompt="stills", input_reference=photo, size="128x64", extra_body=SMALL)
    assert made.status == "completed", made.error
    return made


def test_a_sweep_while_the_sprite_sheet_is_made_takes_nothing_from_ffmpeg(client, gateway, store, video,
                                                                          monkeypatch):
    """Each ffmpeg start is preceded by the runner's sweep, everything on disk aged past its grace (a copy that
    has waited that long, or a clock ahead of the disk's): today's code answered 500, its copy swept away."""
    sweeps, start, ffmpeg = [], subprocess.Popen, imageio_ffmpeg.get_ffmpeg_exe()

    def sweep_then_start(command, *args, **kwargs):
        if command[0] == ffmpeg:
            aged = time.time() - 2 * SWEEP_GRACE
            for path in gateway.settings.data_dir.rglob("*"):
                os.utime(path, (aged, aged))
            sweeps.append(store.sweep_orphans(SWEEP_GRACE))
        return start(command, *args, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", sweep_then_start)
    sheet = Image.open(io.BytesIO(client.videos.download_content(video.id, variant="spritesheet").content))
    assert (sheet.format, sheet.size) == ("JPEG", (2 * 128, 2 * 64))  # 4 frames in a 2-column grid
    assert sweeps and not [name for swept in sweeps for name in swept if name.startswith("files/")]


@pytest.mark.parametrize("variant", ["spritesheet", "thumbnail"])
def test_a_stored_video_ffmpeg_cannot_read_is_a_502_in_openais_shape(client, gateway, store, video, variant):
    output = gateway.settings.data_dir / "outputs" / store.get(video.id).output_key
    output.write_bytes(b"not a video any more" * 100)
    with pytest.raises(openai.InternalServerError) as caught:
        client.videos.download_content(video.id, variant=variant)
    error = caught.value
    assert (error.status_code, error.type, error.code) == (502, "server_error", "server_error")
    assert f"video {video.id} could not be decoded into a {variant}: " in error.message
