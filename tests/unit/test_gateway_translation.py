"""Each API family's translation, checked at the model seam: a request in the family's own shape → the image,
prompt and parameters the model received (tests/support/fake_model.py), and the family's answer built from
what the model returned. In-process, without Triton or a server."""
from __future__ import annotations

import base64

import pytest

from tests.support.fake_model import DEFAULTS, solid_video
from tests.support.videos import decode_video
from tests.support.waiting import until

SLUG = "stabilityai-stable-video-diffusion"
DEFAULT_VIDEO = solid_video(**DEFAULTS)
"""The fake's video when a request names no format, size, frames or fps."""


def asked(params: dict) -> dict:
    """What a family translated, without the seed the gateway draws for a request that gave none (so that a
    retry makes the same video)."""
    return {name: value for name, value in params.items() if name != "seed"}


@pytest.fixture(scope="module")
def image_uri(sample_png):
    return "data:image/png;base64," + base64.b64encode(sample_png).decode()


def received(fake, send):
    """What the model received for the request `send()` makes (queued ones are waited for), and the reply."""
    before = len(fake.calls)
    reply = send()
    assert reply.status_code in (200, 201), reply.text
    until(lambda: len(fake.calls) > before, "the model receiving the generation", seconds=30, interval=0.01)
    return fake.calls[before], reply


def predict(client, given: dict, **headers):
    return client.post("/v1/predictions", json={"input": given}, headers=headers)


def test_replicate_cog_svd_names_become_the_model_s(client, fake, image_uri, sample_png):
    call, reply = received(fake, lambda: predict(client, {
        "input_image": image_uri, "video_length": "25_frames_with_svd_xt", "sizing_strategy": "use_image_dimensions",
        "frames_per_second": 8, "cond_aug": 0.05, "decoding_t": 7, "motion_bucket_id": 100, "seed": 3}))
    assert call.image == sample_png and call.prompt is None
    assert call.params == {"num_frames": 25, "resize_mode": "keep", "fps": 8, "noise_aug_strength": 0.05,
                           "decode_chunk_size": 7, "motion_bucket_id": 100, "seed": 3}
    assert reply.json()["input"]["input_image"].startswith("sha256:")  # an inline image is echoed as its digest


def test_replicate_fills_cog_svd_s_defaults_only_for_a_cog_svd_request(client, fake, image_uri):
    cog, _ = received(fake, lambda: predict(client, {"input_image": image_uri, "sizing_strategy": "crop_to_16_9"}))
    own, _ = received(fake, lambda: predict(client, {"image": image_uri, "num_frames": 6}))
    assert asked(cog.params) == {"num_frames": 14, "fps": 6, "resize_mode": "crop"}
    assert asked(own.params) == {"num_frames": 6}


def test_replicate_prompt_beside_an_image_is_logged_as_ignored_and_alone_is_text_to_video(client, fake, image_uri):
    with_image, reply = received(fake, lambda: predict(client, {"image": image_uri, "prompt": "a kite"}, Prefer="wait"))
    assert "prompt" not in with_image.params and with_image.prompt is None
    assert reply.json()["logs"].startswith("input.prompt: an image-to-video model takes no prompt; it was ignored\n")
    alone, _ = received(fake, lambda: predict(client, {"prompt": "a kite", "negative_prompt": "rain", "num_frames": 4}))
    assert (alone.image, alone.prompt, asked(alone.params)) == (None, "a kite", {"negative_prompt": "rain", "num_frames": 4})


def test_replicate_takes_an_upload_of_this_gateway_by_its_url(client, fake, sample_png):
    upload = client.post("/v1/files", files={"content": ("photo.png", sample_png, "image/png")})
    assert upload.status_code == 201, upload.text
    call, _ = received(fake, lambda: predict(client, {"input_image": upload.json()["urls"]["get"], "video_length":
                                                      "14_frames_with_svd"}))
    assert call.image == sample_png and call.params["num_frames"] == 14


@pytest.mark.parametrize("switches,params", [
    ({"enable_deepcache": True}, {"cache_interval": 3}),
    ({"enable_deepcache": True, "cache_interval": 2, "cache_branch_id": 1},
     {"cache_interval": 2, "cache_branch_id": 1}),
    ({"enable_deepcache": False}, {"cache_interval": 1}),
    ({"deep_cache": "medium"}, {"cache_interval": 3}),
])
def test_replicate_caching_switches_become_cache_interval(client, fake, image_uri, switches, params):
    call, _ = received(fake, lambda: predict(client, {"image": image_uri, **switches}))
    assert asked(call.params) == params


@pytest.mark.parametrize("preset,interval", [("none", 1), ("minimum", 2), ("medium", 3), ("high", 5)])
def test_deep_cache_presets_are_cache_intervals(client, fake, image_uri, preset, interval):
    call, _ = received(fake, lambda: client.post("/predict", json={"image": image_uri, "deep_cache": preset}))
    assert asked(call.params) == {"video_format": "avi", "cache_interval": interval}


@pytest.mark.parametrize("app, given, preset", [
    ("fast-svd-lcm", {}, "fast"),  # fal's few-step app: the preset made for few steps
    ("fast-svd-lcm", {"preset": "quality"}, "quality"),  # the request's own wins
    ("fast-svd", {}, None),
    ("fast-svd", {"preset": "balanced"}, "balanced"),
])
def test_fal_s_few_step_app_runs_the_fast_preset_unless_the_request_names_one(client, fake, image_uri, app, given,
                                                                              preset):
    call, _ = received(fake, lambda: client.post(f"/fal-ai/{app}", json={"image_url": image_uri, **given}))
    assert call.params.get("preset") == preset
    assert call.params["num_inference_steps"] == (4 if app == "fast-svd-lcm" else 20)  # fal's steps stay fal's


@pytest.mark.parametrize("video_format", ["mp4", "webm", "avi", "gif", "webp", "frames"])
def test_replicate_output_is_the_model_s_video_in_the_format_asked(client, fake, image_uri, video_format):
    call, reply = received(fake, lambda: predict(client, {"image": image_uri, "video_format": video_format,
                                                          "width": 80, "height": 64}, Prefer="wait"))
    assert asked(call.params) == {"video_format": video_format, "width": 80, "height": 64}
    prediction = reply.json()
    assert prediction["status"] == "succeeded" and prediction["output"].endswith(
        {"frames": ".npy"}.get(video_format, f".{video_format}"))
    video = client.get(prediction["output"]).content
    assert video == solid_video(video_format, 80, 64, 4, 6)
    assert decode_video(video, video_format).size == (80, 64)


def test_openai_seconds_and_size_become_segments_width_and_height(client, fake, image_uri, sample_png):
    call, reply = received(fake, lambda: client.post("/v1/videos", json={
        "prompt": "the square drifts", "model": "sora-2", "seconds": "8", "size": "128x64",
        "input_reference": {"image_url": image_uri}, "num_frames": 6, "fps": 6}))
    assert call.image == sample_png and call.prompt is None
    assert asked(call.params) == {"segments": 2, "width": 128, "height": 64, "num_frames": 6, "fps": 6}
    video = reply.json()
    assert (video["object"], video["status"], video["model"], video["seconds"], video["size"], video["prompt"]) == \
        ("video", "queued", "sora-2", "8", "128x64", "the square drifts")


def test_openai_multipart_upload_with_integer_seconds(client, fake, sample_png):
    """The SDK's form: input_reference as a file part, every other field as text."""
    call, reply = received(fake, lambda: client.post(
        "/v1/videos", data={"prompt": "drift", "seconds": "12", "num_frames": "6"},
        files={"input_reference": ("photo.png", sample_png, "image/png")}))
    assert call.image == sample_png and asked(call.params) == {"segments": 3, "num_frames": 6}
    assert reply.json()["seconds"] == "12"


def test_openai_prompt_alone_is_text_to_video_at_the_deployment_s_default_size(client, fake):
    call, reply = received(fake, lambda: client.post("/v1/videos", json={"prompt": "a red kite",
                                                                         "negative_prompt": "rain"}))
    assert (call.image, call.prompt, asked(call.params)) == (None, "a red kite", {"negative_prompt": "rain"})
    assert (reply.json()["size"], reply.json()["seconds"]) == ("64x64", "4")  # the fake's model_config defaults


@pytest.mark.parametrize("body,param,accepted", [
    ({"seconds": "20"}, "seconds", "accepted: 4, 8, 12, 16 "),  # the deployment's max_segments is 4
    ({"size": "1024x576"}, "size", "width×height ≤ 262144"),  # over its max_pixels
])
def test_openai_refuses_what_the_deployment_s_limits_do_not_allow(client, fake, body, param, accepted):
    before = len(fake.calls)
    reply = client.post("/v1/videos", json={"prompt": "too much", **body})
    error = reply.json()["error"]
    assert (reply.status_code, error["param"], error["code"]) == (400, param, "invalid_value")
    assert accepted in error["message"] and len(fake.calls) == before


def test_openai_style_guidance_scale_is_max_guidance_scale_and_the_answer_carries_the_video(client, fake, image_uri):
    call, reply = received(fake, lambda: client.post("/v1/video/generations", json={
        "image": image_uri, "prompt": "ignored", "guidance_scale": 2.5, "deep_cache": "high",
        "response_format": "b64_json", "model": "svd-xt"}))
    assert asked(call.params) == {"max_guidance_scale": 2.5, "cache_interval": 5}
    answer = reply.json()
    [entry] = answer["data"]
    assert "url" not in entry and base64.b64decode(entry["b64_json"]) == DEFAULT_VIDEO
    assert answer["warnings"] == ["an image-to-video model takes no prompt; it was ignored"]


def test_openai_style_url_answer_points_at_the_stored_video(client, fake, image_uri):
    _, reply = received(fake, lambda: client.post("/v1/video/generations", json={"image": image_uri,
                                                                                 "response_format": "url"}))
    [entry] = reply.json()["data"]
    assert "b64_json" not in entry and client.get(entry["url"]).content == DEFAULT_VIDEO


@pytest.mark.parametrize("path,given,video_format", [
    ("/predict", {}, "avi"),  # TIR's samples save .avi: the format unless the request names one
    ("/v1/models/svd-xt:predict", {"video_format": "webm", "num_frames": 5}, "webm"),
])
def test_tir_answers_the_video_in_base64_as_avi_unless_asked(client, fake, image_uri, path, given, video_format):
    call, reply = received(fake, lambda: client.post(path, json={"image": image_uri, "fps": 8, **given}))
    assert asked(call.params) == {"video_format": video_format, "fps": 8, **given}
    video = base64.b64decode(reply.json()["predictions"])
    assert decode_video(video, video_format).num_frames == given.get("num_frames", 4)


def test_forge_inference_sends_the_parameters_and_warns_of_ignored_fields_and_other_pins(client, fake, image_uri):
    call, reply = received(fake, lambda: client.post(f"/v1/inference/{SLUG}", json={
        "image": image_uri, "prompt": "a cat", "negative_prompt": "dogs", "guidance_scale": 2.0,
        "num_inference_steps": 3, "seed": 11, "model_version": "img2vid-xt-1-1", "region": "local"}))
    assert call.params == {"max_guidance_scale": 2.0, "num_inference_steps": 3, "seed": 11}
    answer = reply.json()
    assert (answer["model"], answer["format"], answer["mime_type"], answer["seed"]) == (SLUG, "mp4", "video/mp4", 11)
    assert base64.b64decode(answer["video"]) == DEFAULT_VIDEO
    assert answer["warnings"] == ["an image-to-video model takes no prompt; it was ignored"] * 2 + [
        "model_version 'img2vid-xt-1-1' was asked; this deployment is 'img2vid-xt-diffusers'"]


def test_forge_start_and_stop_are_keep_warm_controls(client, fake):
    fake.controls.clear()
    pinned = client.post(f"/v1/model-families/{SLUG}/start", json={"run_until_stopped": True}).json()
    stopped = client.post(f"/v1/model-families/{SLUG}/stop").json()
    warmed = client.post(f"/v1/model-families/{SLUG}/start", json={"region": "eu-north1"}).json()
    assert fake.controls == ["pin", "release", "prewarm"]
    assert (pinned["status"], pinned["keep_warm"], pinned["was_cold_start"], pinned["startup_ms"]) == \
        ("warm", True, True, 250.0)
    assert pinned["gpu_type"] == "cpu" and pinned["keep_warm_left_seconds"] is None
    assert (stopped["status"], stopped["keep_warm"]) == ("cold", False)
    assert (warmed["status"], warmed["keep_warm"], warmed["keep_warm_left_seconds"]) == ("warm", False, 300.0)
    assert warmed["warnings"] == ["region 'eu-north1' was asked; this deployment is 'local'"]


def stability_start(client, image: bytes, **fields):
    return client.post("/v2beta/image-to-video", files={"image": ("image.png", image, "image/png")},
                       data={name: str(value) for name, value in fields.items()})


def test_stability_cfg_scale_is_max_guidance_scale_and_the_image_keeps_its_size(client, fake, sample_png):
    call, reply = received(fake, lambda: stability_start(client, sample_png, cfg_scale=2.5, seed=42,
                                                         motion_bucket_id=90, num_frames=5))
    assert call.image == sample_png
    assert call.params == {"max_guidance_scale": 2.5, "seed": 42, "motion_bucket_id": 90, "num_frames": 5,
                           "resize_mode": "keep"}
    assert set(reply.json()) == {"id"}


def test_stability_defaults_and_seed_zero_is_the_model_s_choice(client, fake, sample_png):
    call, reply = received(fake, lambda: stability_start(client, sample_png, seed=0, width=64, height=64))
    assert asked(call.params) == {"max_guidance_scale": 1.8, "motion_bucket_id": 127, "width": 64, "height": 64}
    result = f"/v2beta/image-to-video/result/{reply.json()['id']}"
    finished = until(lambda: (r := client.get(result)).status_code == 200 and r, "the result", seconds=30,
                     interval=0.01)
    drawn = call.params["seed"]  # seed 0 is Stability's "random": the gateway draws it, so a retry makes the same video
    assert finished.headers["content-type"] == "video/mp4" and finished.headers["seed"] == str(drawn)
    assert finished.headers["finish-reason"] == "SUCCESS" and finished.content == DEFAULT_VIDEO
    as_json = client.get(result, headers={"Accept": "application/json"}).json()
    assert as_json == {"video": base64.b64encode(finished.content).decode(), "finish_reason": "SUCCESS",
                       "seed": drawn}
