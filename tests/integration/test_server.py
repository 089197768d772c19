"""The product as users run it: a real tritonserver with the tiny model, called over HTTP and gRPC."""
import concurrent.futures
import json
import time

import numpy as np
import pytest

from svd_contract.tensors import parameter_name
from svd_triton.launcher import ServerStartError
from tests.support import ADMIN_TOKEN, ROOT, TOKEN, cpu_config_copy, start_server
from tests.support.kserve import (auth_headers, client, image_bytes, infer, is_invalid_argument, refused, scalar, small, text,
                    video_bytes)
from tests.support.prometheus import metrics
from tests.support.videos import decode_video, max_abs_diff
from tests.support.waiting import until

PROTOCOLS = ["http", "grpc"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("image_input", ["IMAGE", "IMAGE_BYTES"])
def test_image_inputs_over_both_protocols(triton, protocol, image_input, sample_rgb, sample_png):
    image = sample_rgb[np.newaxis] if image_input == "IMAGE" else image_bytes(sample_png)
    response = infer(triton, protocol, small(**{image_input: image, "WIDTH": scalar(128, np.int32)}))
    video = decode_video(video_bytes(response), "mp4")
    assert (video.num_frames, video.size) == (4, (128, 64))
    assert response.as_numpy("FRAMES") is None  # not requested, not sent


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("video_format", ["mp4", "avi", "webm", "gif", "webp", "frames"])
def test_every_format_decodes_with_requested_frames_size_and_fps(triton, protocol, video_format, sample_png):
    tensors = small(IMAGE_BYTES=image_bytes(sample_png), VIDEO_FORMAT=text(video_format), NUM_FRAMES=scalar(5, np.int32),
                    HEIGHT=scalar(96, np.int32), FPS=scalar(12, np.int32))
    response = infer(triton, protocol, tensors, outputs=("VIDEO", "VIDEO_FORMAT"))
    assert response.as_numpy("VIDEO_FORMAT").reshape(-1)[0] == video_format.encode()  # the output names its format
    video = decode_video(video_bytes(response), video_format)
    assert video.num_frames == 5
    assert video.size == (64, 96)
    if video_format != "frames":
        assert video.fps == pytest.approx(12, abs=0.5)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_seed_is_returned_and_reproduces_the_video(triton, protocol, sample_png):
    first = infer(triton, protocol, small(IMAGE_BYTES=image_bytes(sample_png)))
    seed = first.as_numpy("SEED_USED")
    assert seed.shape == (1, 1) and seed.dtype == np.int64
    again = infer(triton, protocol, small(IMAGE_BYTES=image_bytes(sample_png), SEED=seed.astype(np.int64)))
    assert video_bytes(again) == video_bytes(first)
    other = infer(triton, protocol, small(IMAGE_BYTES=image_bytes(sample_png), SEED=scalar(int(seed[0, 0]) ^ 1, np.int64)))
    assert video_bytes(other) != video_bytes(first)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_frames_output_when_requested(triton, protocol, sample_png):
    response = infer(triton, protocol, small(IMAGE_BYTES=image_bytes(sample_png), SEED=scalar(3, np.int64)),
                     outputs=("FRAMES", "SEED_USED"))
    frames = response.as_numpy("FRAMES")
    assert frames.shape == (1, 4, 64, 64, 3) and frames.dtype == np.uint8
    assert response.as_numpy("VIDEO") is None
    as_npy = infer(triton, protocol, small(IMAGE_BYTES=image_bytes(sample_png), SEED=scalar(3, np.int64),
                                            VIDEO_FORMAT=text("frames")))
    assert np.array_equal(decode_video(video_bytes(as_npy), "frames").frames, frames[0])


BAD_INPUTS = {
    "garbage bytes": (lambda png, rgb: small(IMAGE_BYTES=image_bytes(b"definitely not an image")), "IMAGE_BYTES"),
    "empty bytes": (lambda png, rgb: small(IMAGE_BYTES=image_bytes(b"")), "IMAGE_BYTES"),
    "both images": (lambda png, rgb: small(IMAGE_BYTES=image_bytes(png), IMAGE=rgb[np.newaxis]), "IMAGE"),
    "no image": (lambda png, rgb: small(), "IMAGE"),
    "frames out of range": (lambda png, rgb: small(IMAGE_BYTES=image_bytes(png), NUM_FRAMES=scalar(1, np.int32)), "NUM_FRAMES"),
    "steps out of range": (lambda png, rgb: small(IMAGE_BYTES=image_bytes(png), NUM_INFERENCE_STEPS=scalar(500, np.int32)), "NUM_INFERENCE_STEPS"),
    "width not multiple of 8": (lambda png, rgb: small(IMAGE_BYTES=image_bytes(png), WIDTH=scalar(100, np.int32)), "WIDTH"),
    "nan float": (lambda png, rgb: small(IMAGE_BYTES=image_bytes(png), NOISE_AUG_STRENGTH=scalar(np.nan, np.float32)), "NOISE_AUG_STRENGTH"),
    "unknown format": (lambda png, rgb: small(IMAGE_BYTES=image_bytes(png), VIDEO_FORMAT=text("mkv")), "VIDEO_FORMAT"),
    "wrong dtype": (lambda png, rgb: small(IMAGE_BYTES=image_bytes(png), NUM_FRAMES=scalar(4.0, np.float32)), "NUM_FRAMES"),
}


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_invalid_arg_naming_the_field_and_the_server_carries_on(triton, protocol, case, sample_png, sample_rgb):
    build, field = BAD_INPUTS[case]
    error = refused(lambda: infer(triton, protocol, build(sample_png, sample_rgb)))
    message = error.message()
    assert is_invalid_argument(error), (error.status(), message)
    assert field in message
    assert "Traceback" not in message and ".py" not in message and str(ROOT) not in message
    assert client(triton, protocol).is_server_ready()
    assert video_bytes(infer(triton, protocol, small(IMAGE_BYTES=image_bytes(sample_png))))


def _statistics(triton):
    """Inference and execution counts, once svd_xt is idle: a request another test left running (a client that
    gave up, whose request Triton still finishes) would otherwise land in the counts being compared."""
    until(lambda: not any(metrics(triton).get((name, frozenset()), 0)
                          for name in ("svd_requests_running", "nv_inference_pending_request_count")),
          "svd_xt idle", seconds=120)
    stats = client(triton, "http").get_inference_statistics("svd_xt", headers=auth_headers("http"))
    model = stats["model_stats"][0]
    return model["inference_count"], model["execution_count"]


def _while_busy(triton, sample_png, calls):
    """Run `calls` concurrently while a slow request occupies the model, so they all meet in the queue."""
    slow = {"IMAGE_BYTES": image_bytes(sample_png), "NUM_INFERENCE_STEPS": scalar(20, np.int32)}
    with concurrent.futures.ThreadPoolExecutor(len(calls) + 1) as pool:
        blocker = pool.submit(infer, triton, "grpc", slow, ("SEED_USED",))
        time.sleep(1.0)
        futures = [pool.submit(call) for call in calls]
        assert not blocker.done(), "the blocking request finished too early to hold the queue"
        blocker.result()
        return [future.exception() or future.result() for future in futures]


def test_dynamic_batching_groups_concurrent_requests(triton, sample_png):
    inferences, executions = _statistics(triton)
    tensors = small(IMAGE_BYTES=image_bytes(sample_png))
    outcomes = _while_busy(triton, sample_png, [lambda: infer(triton, "http", tensors)] * 4)
    assert all(video_bytes(o) for o in outcomes)
    after_inferences, after_executions = _statistics(triton)
    assert after_inferences - inferences == 5
    assert after_executions - executions == 2  # the blocker, then all four together


def test_a_bad_request_in_a_batch_does_not_spoil_the_good_ones(triton, sample_png):
    good = small(IMAGE_BYTES=image_bytes(sample_png), SEED=scalar(1, np.int64))
    bad = small(IMAGE_BYTES=image_bytes(sample_png), SEED=scalar(-5, np.int64))  # same inputs, so it can share the batch
    inferences, executions = _statistics(triton)
    outputs = ("VIDEO", "FRAMES")
    outcomes = _while_busy(triton, sample_png, [lambda: infer(triton, "http", good, outputs),
                                                lambda: infer(triton, "http", bad, outputs),
                                                lambda: infer(triton, "http", good, outputs)])
    assert max_abs_diff(outcomes[0].as_numpy("FRAMES"), outcomes[2].as_numpy("FRAMES")) <= 1
    assert decode_video(video_bytes(outcomes[0]), "mp4").num_frames == 4
    assert is_invalid_argument(outcomes[1]) and "SEED" in outcomes[1].message()
    after_inferences, after_executions = _statistics(triton)
    assert after_executions - executions == 2  # the blocker, then the three together


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_token_is_required_for_inference_and_health_stays_open(triton, protocol, sample_png):
    tensors = small(IMAGE_BYTES=image_bytes(sample_png))
    for token in (None, "wrong-token"):
        error = refused(lambda: infer(triton, protocol, tensors, token=token))
        assert "restricted" in error.message()
    assert client(triton, protocol).is_server_ready()  # health needs no token
    assert video_bytes(infer(triton, protocol, tensors))


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_model_repository_api_takes_the_admin_key_alone(triton, protocol):
    for token in (None, TOKEN):
        error = refused(lambda: client(triton, protocol).get_model_repository_index(headers=auth_headers(protocol, token)))
        assert "restricted" in error.message()
    assert client(triton, protocol).get_model_repository_index(headers=auth_headers(protocol, ADMIN_TOKEN))


def test_every_config_variant_declares_the_same_contract():
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as pb

    folder = ROOT / "model_repository/svd_xt"
    configs = {path.stem: text_format.Parse(path.read_text(), pb.ModelConfig())
               for path in [folder / "config.pbtxt", *sorted((folder / "configs").glob("*.pbtxt"))]}
    assert set(configs) == {"config", "cpu", "stream", "cpu_stream"}
    production = configs["config"]
    for name, config in configs.items():
        for part in ("input", "output", "max_batch_size", "name", "backend"):
            assert getattr(config, part) == getattr(production, part), (name, part)
        policy = config.dynamic_batching.default_queue_policy
        assert policy.max_queue_size > 0 and policy.timeout_action == pb.ModelQueuePolicy.REJECT
        assert config.model_transaction_policy.decoupled == name.endswith("stream")
        on_cpu = name.startswith("cpu")
        assert config.instance_group[0].kind == (pb.ModelInstanceGroup.KIND_CPU if on_cpu else pb.ModelInstanceGroup.KIND_GPU)
        expected_source = "tiny" if on_cpu else "stabilityai/stable-video-diffusion-img2vid-xt"
        assert config.parameters["model_source"].string_value == expected_source
    assert configs["stream"].parameters == production.parameters
    assert configs["cpu_stream"].parameters == configs["cpu"].parameters


@pytest.mark.parametrize("name", ["tiny", "preview", "xt"])
def test_perf_analyzer_input_files_are_valid_requests(triton, name):
    """benchmarks/inputs/*.json, decoded the way perf_analyzer reads them, are requests the model accepts."""
    import base64
    import struct

    entry = json.loads((ROOT / f"benchmarks/inputs/{name}.json").read_text())["data"][0]
    serialized = base64.b64decode(entry.pop("IMAGE_BYTES")["b64"])
    (length,) = struct.unpack("<I", serialized[:4])
    assert serialized[4:] == (ROOT / "src/svd_triton/data/sample.png").read_bytes() and length == len(serialized) - 4
    if name != "tiny":  # the GPU sizes are checked against the production limits, not run on CPU
        from svd_engine import EngineConfig
        from svd_engine.request import parse_request

        parse_request(serialized[4:], {parameter_name(k): v[0] for k, v in entry.items()}, EngineConfig(), model_num_frames=25)
        return
    tensors = {name: scalar(values[0], np.int32) for name, values in entry.items()}
    video = decode_video(video_bytes(infer(triton, "grpc", {"IMAGE_BYTES": image_bytes(serialized[4:]), **tensors})), "mp4")
    assert (video.num_frames, video.size) == (entry["NUM_FRAMES"][0], (entry["WIDTH"][0], entry["HEIGHT"][0]))


def test_a_bad_deployment_parameter_fails_the_load_naming_the_model_and_the_parameter(tmp_path):
    config = cpu_config_copy(tmp_path)
    text_before = config.read_text()
    config.write_text(text_before.replace('{ key: "max_segments", value: { string_value: "4" } }',
                                          '{ key: "max_segments", value: { string_value: "none" } }', 1))
    assert config.read_text() != text_before
    with pytest.raises(ServerStartError) as caught:
        start_server(model_repository=tmp_path / "repo").start()
    assert "model 'svd_xt': parameter max_segments='none' is not a valid int" in str(caught.value)
