"""Every contract parameter, and every other API's name for one, through every API family: each family's
translation ends in the one parameter check (svd_gateway.spec), so the job it stores carries the contract's
names and values alone. A real gateway whose Triton is nowhere (nothing here generates: queued jobs are read
back from the store, synchronous ones fail after they were stored); a real Triton for the user-visible
case, `deep_cache` on the families that once queued it as an unknown parameter."""
from __future__ import annotations

import base64
import json
import sqlite3
import time
import warnings

import openai
import pytest
import replicate
import requests
from replicate.exceptions import ReplicateError

from svd_contract import PARAMETERS
from svd_gateway import Settings
from svd_gateway.spec import DEEP_CACHE_PRESETS, DEEPCACHE_INTERVAL
from tests.support import TOKEN
from tests.support.gateways import Gateway
from svd_triton.launcher import free_port

warnings.filterwarnings("ignore", category=DeprecationWarning)  # the SDK marks client.videos deprecated
AUTH = {"Authorization": f"Bearer {TOKEN}"}
VALUES = {"width": 64, "height": 64, "resize_mode": "pad", "num_frames": 4, "num_inference_steps": 2, "fps": 7,
          "preset": "balanced",
          "schedule": "ays", "motion_bucket_id": 100, "noise_aug_strength": 0.1, "min_guidance_scale": 1.5,
          "max_guidance_scale": 2.5, "conditional_final_steps": 1, "decode_chunk_size": 2, "seed": 5,
          "video_format": "mp4", "video_quality": 30, "segments": 1, "interpolate": 2, "loop": "pingpong",
          "cache_interval": 2, "cache_branch_id": 1}
"""A valid value of every contract parameter."""
ALIASES = {"deep_cache": ("medium", {"cache_interval": DEEP_CACHE_PRESETS["medium"]}),
           "enable_deepcache": (True, {"cache_interval": DEEPCACHE_INTERVAL}),
           "guidance_scale": (2.0, {"max_guidance_scale": 2.0})}
"""Other hosted APIs' names → what the job must carry instead."""


def test_the_values_cover_the_whole_contract():
    assert set(VALUES) == set(PARAMETERS)


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def send(family: str, url: str, png: bytes, fields: dict) -> requests.Response:
    """One request of `family` carrying `fields` beside what the family requires."""
    if family == "predictions":
        return requests.post(f"{url}/v1/predictions", json={"input": {"input_image": data_uri(png), **fields}},
                             headers=AUTH, timeout=60)
    if family == "tir":
        return requests.post(f"{url}/v1/models/svd:predict", json={"image": base64.b64encode(png).decode(), **fields},
                             headers=AUTH, timeout=60)
    if family == "forge":
        return requests.post(f"{url}/v1/inference/stabilityai-stable-video-diffusion",
                             json={"image": data_uri(png), **fields}, headers=AUTH, timeout=60)
    if family == "openai_style":
        return requests.post(f"{url}/v1/video/generations", json={"image": data_uri(png), **fields}, headers=AUTH,
                             timeout=60)
    if family == "videos":
        return requests.post(f"{url}/v1/videos", json={"prompt": "a kite", "input_reference": {"image_url": data_uri(png)},
                                                       **fields}, headers=AUTH, timeout=60)
    if family == "stability":
        form = {name: (None, json.dumps(value) if isinstance(value, bool) else str(value)) for name, value in fields.items()}
        return requests.post(f"{url}/v2beta/image-to-video", files={"image": ("image.png", png, "image/png"), **form},
                             headers=AUTH, timeout=60)
    raise AssertionError(family)


FAMILIES = ("predictions", "tir", "forge", "openai_style", "videos", "stability")
SYNCHRONOUS = {"tir", "forge", "openai_style"}
"""Families whose client waits on the line: with no Triton they answer 503, after the job was stored."""
CATALOGUE = {"forge", "openai_style"}
"""Families whose bodies take `guidance_scale`."""
OWN_NAMES = {"stability": {"seed", "motion_bucket_id", "max_guidance_scale"}}
"""Parameters a family spells its own way (Stability: seed 0 means random, cfg_scale is max_guidance_scale)."""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("parameters")
    settings = Settings(triton_url=f"127.0.0.1:{free_port()}", token=TOKEN, data_dir=data_dir, timeout=5.0)
    with Gateway(settings) as running:
        running.database = data_dir / "gateway.db"
        yield running


def stored_params(gateway) -> dict:
    with sqlite3.connect(gateway.database) as database:
        (params,) = database.execute("SELECT params FROM predictions ORDER BY created_at DESC LIMIT 1").fetchone()
    return json.loads(params)


def accepted(family: str, reply: requests.Response) -> bool:
    return reply.status_code == 503 if family in SYNCHRONOUS else reply.status_code in (200, 201)


@pytest.mark.parametrize("family", FAMILIES)
def test_every_contract_parameter_reaches_the_job_as_the_contract_names_it(gateway, family, sample_png):
    fields = {name: value for name, value in VALUES.items() if name not in OWN_NAMES.get(family, ())}
    reply = send(family, gateway.url, sample_png, fields)
    assert accepted(family, reply), (reply.status_code, reply.text)
    params = stored_params(gateway)
    assert {name: params.get(name) for name in fields} == fields


@pytest.mark.parametrize("alias", ALIASES)
@pytest.mark.parametrize("family", FAMILIES)
def test_every_other_apis_name_reaches_the_job_as_the_contract_names_it(gateway, family, alias, sample_png):
    value, expected = ALIASES[alias]
    reply = send(family, gateway.url, sample_png, {alias: value})
    if alias == "guidance_scale" and family not in CATALOGUE:  # not part of that family's API: refused, named
        assert reply.status_code in (400, 422) and "guidance_scale" in reply.text, reply.text
        return
    assert accepted(family, reply), (reply.status_code, reply.text)
    params = stored_params(gateway)
    assert alias not in params and {name: params.get(name) for name in expected} == expected


@pytest.fixture(scope="module")
def live_gateway(triton_stream, tmp_path_factory):
    settings = Settings(triton_url=triton_stream.grpc_url, token=TOKEN, data_dir=tmp_path_factory.mktemp("deep"))
    with Gateway(settings) as running:
        yield running


SMALL = {"width": 64, "height": 64, "num_frames": 4, "num_inference_steps": 2}


def openai_videos(gateway, png: bytes, folder) -> tuple[openai.OpenAI, object]:
    """The openai SDK on `gateway`, and `png` as the file its users pass as input_reference."""
    photo = folder / "photo.png"
    photo.write_bytes(png)
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=TOKEN, max_retries=0), photo


def test_deep_cache_completes_on_openai_videos_remix_and_stability(live_gateway, sample_png, tmp_path):
    """Once, these queued a job with `deep_cache` and it failed as an unknown parameter."""
    client, photo = openai_videos(live_gateway, sample_png, tmp_path)
    video = client.videos.create_and_poll(prompt="a kite", input_reference=photo, poll_interval_ms=100,
                                          extra_body={**SMALL, "deep_cache": "medium"})
    assert video.status == "completed", video.error
    remixed = client.videos.remix(video.id, prompt="a kite at dusk", extra_body={"deep_cache": "high"})
    remixed = client.videos.poll(remixed.id, poll_interval_ms=100)
    assert remixed.status == "completed", remixed.error
    created = send("stability", live_gateway.url, sample_png, {**SMALL, "deep_cache": "minimum"})
    assert created.status_code == 200, created.text
    deadline = time.monotonic() + 120
    while (result := requests.get(f"{live_gateway.url}/v2beta/image-to-video/result/{created.json()['id']}",
                                  headers=AUTH, timeout=60)).status_code == 202 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert result.status_code == 200 and result.headers["content-type"] == "video/mp4", result.text[:300]


def test_a_preset_runs_through_the_replicate_and_openai_clients_and_a_hostile_one_is_refused_by_name(live_gateway,
                                                                                                  sample_png, tmp_path):
    """Their own clients, end to end (the other families' bodies carry it to the job above; fal's client runs
    fal-ai/fast-svd-lcm's `fast` in tests/integration/test_fal.py)."""
    client = replicate.Client(api_token=TOKEN, base_url=live_gateway.url)
    client.poll_interval = 0.1
    prediction = client.predictions.create(version="any", input={"image": data_uri(sample_png), **SMALL, "preset": "fast"})
    prediction.wait()
    assert prediction.status == "succeeded" and prediction.input["preset"] == "fast", prediction.error
    with pytest.raises(ReplicateError) as refused:
        client.predictions.create(version="any", input={"image": data_uri(sample_png), "preset": "turbo"})
    assert refused.value.status == 422 and "preset" in str(refused.value)
    videos, photo = openai_videos(live_gateway, sample_png, tmp_path)
    video = videos.videos.create_and_poll(prompt="a kite", input_reference=photo, poll_interval_ms=100,
                                          extra_body={**SMALL, "preset": "balanced"})
    assert video.status == "completed", video.error
    with pytest.raises(openai.BadRequestError) as refused_by_openai:
        videos.videos.create(prompt="a kite", input_reference=photo, extra_body={"preset": "turbo"})
    assert "preset" in str(refused_by_openai.value)
