"""Weights from an S3-compatible bucket and `svd-triton weights validate/pull`, against a real S3 API server.

The server is moto's standalone server with authentication on (tests/s3.py); its request log shows what
was downloaded.
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.support import ADMIN_TOKEN, TOKEN, start_server
from tests.support.s3 import S3Server
from svd_engine import ModelLoadError, SVDEngine
from svd_engine.testing import build_tiny_pipeline
from svd_triton import SVDClient
from tests.support.videos import decode_video, max_abs_diff

CLI = [sys.executable, "-m", "svd_triton", "weights"]
WEIGHTS = "unet/diffusion_pytorch_model.safetensors"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    server = S3Server(tmp_path_factory.mktemp("s3"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("weights") / "svd-tiny"
    build_tiny_pipeline().save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="module")
def sources(s3, tiny_folder) -> dict[str, str]:
    """The tiny pipeline at a bucket's root, and one folder below the prefix (TIR's model path rule)."""
    nested = s3.upload(tiny_folder, "svd-weights", "models/svd-tiny/").rsplit("/", 1)[0]
    s3.client.put_object(Bucket="svd-weights", Key="models/", Body=b"")  # a folder marker, as consoles create
    return {"root": s3.upload(tiny_folder, "svd-root"), "nested": nested}


@pytest.fixture
def aws_env(s3, monkeypatch, tmp_path):
    """The standard AWS variables pointing at the test server, and a fresh weights cache."""
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in s3.environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SVD_WEIGHTS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def weights_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + list(args), capture_output=True, text=True, timeout=120)


def _frames(engine, image):
    [result] = engine.generate([engine.parse(image, seed=4, width=64, height=64, num_frames=4, num_inference_steps=2)])
    return result.frames


def test_validate_passes_at_the_bucket_root_and_one_level_down(sources, aws_env):
    assert sources["nested"] == "s3://svd-weights/models"
    for source in sources.values():
        done = weights_cli("validate", source)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "ok       unet: UNetSpatioTemporalConditionModel, config.json, diffusion_pytorch_model.safetensors" in done.stdout
        assert "shapes: unet in_channels 8 = 2 × vae latent_channels 4, 25 frames" in done.stdout
        assert "loadable: a load reads 9 files" in done.stdout
    assert not aws_env.exists()  # validating downloads nothing into the cache


def test_missing_unet_fails_validation_and_the_load_with_the_same_message(s3, tiny_folder, aws_env, tmp_path):
    source = s3.upload(tiny_folder, "svd-broken", "no-unet/")
    s3.client.delete_objects(Bucket="svd-broken", Delete={"Objects": [
        {"Key": "no-unet/unet/config.json"}, {"Key": "no-unet/" + WEIGHTS}]})
    done = weights_cli("validate", source)
    assert done.returncode == 1
    assert "PROBLEM  unet: folder missing (UNetSpatioTemporalConditionModel; expected unet/config.json" in done.stdout
    with pytest.raises(ModelLoadError) as caught:
        SVDEngine.load(model_source=source, device="cpu")
    assert str(caught.value) == done.stdout.strip().splitlines()[-1]
    assert str(caught.value).startswith("s3://svd-broken/no-unet is not a loadable SVD pipeline: unet: folder missing")


def test_pickle_weights_are_refused_and_never_downloaded(s3, aws_env, tmp_path):
    pickled = tmp_path / "pickled"
    build_tiny_pipeline().save_pretrained(pickled, safe_serialization=False)
    source = s3.upload(pickled, "svd-pickled")
    since = len(s3.requests())
    done = weights_cli("validate", source)
    assert done.returncode == 1
    assert "unet: no safetensors weights; it holds config.json, diffusion_pytorch_model.bin (pickle weights" in done.stdout
    with pytest.raises(ModelLoadError, match="unet: no safetensors weights") as caught:
        SVDEngine.load(model_source=source, device="cpu")
    assert str(caught.value) == done.stdout.strip().splitlines()[-1]
    assert not [path for method, path, _ in s3.requests()[since:] if path.endswith(".bin") and method == "GET"]


def test_wrong_credentials_give_a_clear_error_without_the_secret(sources, aws_env, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-4f9c2e")
    with pytest.raises(ModelLoadError) as caught:
        SVDEngine.load(model_source=sources["nested"], device="cpu")
    message = str(caught.value)
    assert message.startswith("s3://svd-weights/models/: SignatureDoesNotMatch:")
    assert "AWS_SECRET_ACCESS_KEY" in message  # says where credentials come from
    done = weights_cli("validate", sources["nested"])
    assert done.returncode == 1 and message in done.stderr and "Traceback" not in done.stderr
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAUNKNOWN0000")
    done = weights_cli("validate", sources["nested"])
    assert done.returncode == 1 and "InvalidAccessKeyId" in done.stderr
    for text in (message, done.stdout + done.stderr):
        assert "wrong-secret-4f9c2e" not in text


def test_pull_fills_a_folder_that_loads_like_the_original(sources, aws_env, tmp_path, sample_png):
    target = tmp_path / "pulled"
    done = weights_cli("pull", sources["nested"], str(target))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "9 of 9 files" in done.stderr  # progress
    pulled = sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file())
    assert len(pulled) == 9 and WEIGHTS in pulled and "model_index.json" in pulled
    reference = _frames(SVDEngine.load(model_source="tiny", device="cpu"), sample_png)
    assert max_abs_diff(_frames(SVDEngine.load(model_source=str(target), device="cpu"), sample_png), reference) <= 1


def test_the_cache_is_reused_and_a_changed_object_is_fetched_again(s3, tiny_folder, aws_env, sample_png):
    source = s3.upload(tiny_folder, "svd-cache")
    since = len(s3.requests())
    first = _frames(SVDEngine.load(model_source=source, device="cpu"), sample_png)
    fetched = s3.downloads(since)
    assert sorted(fetched) == sorted(f"/svd-cache/{p.relative_to(tiny_folder).as_posix()}"
                                     for p in tiny_folder.rglob("*") if p.is_file())
    since = len(s3.requests())
    assert np.array_equal(_frames(SVDEngine.load(model_source=source, device="cpu"), sample_png), first)
    assert s3.downloads(since) == []
    assert [path for _, path, _ in s3.requests()[since:]] == ["/svd-cache?list-type=2&prefix=&encoding-type=url"]

    config = json.loads((tiny_folder / "scheduler/scheduler_config.json").read_text())
    s3.client.put_object(Bucket="svd-cache", Key="scheduler/scheduler_config.json",
                         Body=json.dumps({**config, "steps_offset": 0}).encode())
    since = len(s3.requests())
    engine = SVDEngine.load(model_source=source, device="cpu")
    assert engine.pipeline.scheduler.config.steps_offset == 0
    fetched = s3.downloads(since)
    assert "/svd-cache/scheduler/scheduler_config.json" in fetched  # the configs are checked again,
    assert not [path for path in fetched if path.endswith(".safetensors")]  # unchanged weights are reused
    assert len(list(aws_env.glob("svd-cache/*/*/.complete.json"))) == 1  # the older copy is gone


def test_the_model_serves_from_a_bucket_through_tritonserver(s3, sources, aws_env, monkeypatch, sample_png):
    monkeypatch.setenv("SVD_MODEL_SOURCE", sources["nested"])
    since = len(s3.requests())
    with start_server(model_control="explicit") as server:
        with SVDClient(server.http_url, token=TOKEN, admin_token=ADMIN_TOKEN) as svd:
            video = decode_video(svd.generate(sample_png, width=64, height=64, num_frames=4,
                                              num_inference_steps=2).video, "mp4")
            assert video.num_frames == 4 and video.size == (64, 64)
            assert s3.downloads(since).count("/svd-weights/models/svd-tiny/" + WEIGHTS) == 1
            since = len(s3.requests())
            svd.unload()
            svd.load()  # a new backend process: loads from the cache
            assert decode_video(svd.generate(sample_png, width=64, height=64, num_frames=4,
                                             num_inference_steps=2).video, "mp4").num_frames == 4
        assert s3.downloads(since) == []
        log = server.log_path.read_text()
    assert "svd_engine.weights: s3://svd-weights/models/svd-tiny: copying 9 files" in log
    assert "svd_engine.weights_bucket: s3://svd-weights/models/svd-tiny: using the cached copy" in log
    assert s3.secret not in log


def test_an_interrupted_download_is_never_trusted(s3, tiny_folder, aws_env, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    big = tmp_path / "big"
    build_tiny_pipeline().save_pretrained(big, safe_serialization=True)
    weights = load_file(big / WEIGHTS)
    save_file({**weights, "padding": torch.zeros(40_000_000)}, big / WEIGHTS)  # 160 MB: slow enough to interrupt
    source = s3.upload(big, "svd-big")
    fetch = f"from svd_engine.weights_bucket import fetch; fetch({source!r}, half=False)"
    process = subprocess.Popen([sys.executable, "-c", fetch], env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    deadline = time.monotonic() + 120
    while not any(p.stat().st_size for p in aws_env.glob("svd-big/*/*/unet/diffusion_pytorch_model.safetensors.*")):
        assert process.poll() is None and time.monotonic() < deadline, "the download ended before it was interrupted"
        time.sleep(0.02)
    process.kill()
    process.wait()
    [snapshot] = [p for p in aws_env.glob("svd-big/*/*") if p.is_dir()]
    assert not (snapshot / ".complete.json").exists() and not (snapshot / WEIGHTS).exists()

    from svd_engine.weights_bucket import fetch as fetch_again

    assert fetch_again(source, half=False) == snapshot
    assert (snapshot / WEIGHTS).read_bytes() == (big / WEIGHTS).read_bytes()
    assert (snapshot / ".complete.json").is_file()
    assert len([p for p in snapshot.rglob("*") if p.is_file()]) == 10  # 9 files and the marker: no leftovers


def test_the_check_needs_no_torch_and_reads_the_hub_cache(tiny_folder, tmp_path):
    snapshot = tmp_path / "hub" / "models--acme--svd-tiny" / "snapshots" / "0123abcd"
    snapshot.parent.parent.joinpath("refs").mkdir(parents=True)
    snapshot.parent.parent.joinpath("refs", "main").write_text("0123abcd")
    import shutil

    shutil.copytree(tiny_folder, snapshot)
    blocked = "import sys; sys.modules.update(torch=None, diffusers=None, transformers=None); "
    run = blocked + "from svd_triton.cli import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run([sys.executable, "-c", run, "weights", "validate", "acme/svd-tiny"], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith(f"{snapshot}: EnginePipeline") and "loadable" in done.stdout
    done = subprocess.run([sys.executable, "-c", run, "weights", "validate", "acme/not-cached"], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 1 and "not in the local Hugging Face cache" in done.stderr


def test_the_kubernetes_deployment_reads_bucket_credentials_from_the_example_secret():
    import yaml

    from tests.support import ROOT

    secret = yaml.safe_load((ROOT / "docker/kubernetes/secret-s3.example.yaml").read_text())
    deployment = yaml.safe_load((ROOT / "docker/kubernetes/deployment.yaml").read_text())
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert {"secretRef": {"name": secret["metadata"]["name"], "optional": True}} in container["envFrom"]
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"} <= set(secret["stringData"])


def test_the_check_names_wrong_shapes_classes_and_truncated_files(tiny_folder, tmp_path):
    import shutil

    from svd_engine.weights import FolderTree, check_weights

    broken = tmp_path / "broken"
    shutil.copytree(tiny_folder, broken)
    unet_config = json.loads((broken / "unet/config.json").read_text())
    (broken / "unet/config.json").write_text(json.dumps({**unet_config, "in_channels": 4}))
    index = json.loads((broken / "model_index.json").read_text())
    (broken / "model_index.json").write_text(json.dumps({**index, "_class_name": "StableDiffusionPipeline"}))
    vae = broken / "vae/diffusion_pytorch_model.safetensors"
    vae.write_bytes(vae.read_bytes()[:-1000])
    problems = check_weights(FolderTree(broken), half=False).problems
    assert "pipeline class 'StableDiffusionPipeline' is not one this model serves" in problems[0]
    assert any("vae/diffusion_pytorch_model.safetensors is not a readable safetensors file (truncated" in p for p in problems)
    (broken / "model_index.json").write_text(json.dumps(index))
    problems = check_weights(FolderTree(broken), half=False).problems
    assert "unet: in_channels is 4, SVD needs 8 (twice the VAE's 4 latent channels)" in problems
    assert "unet: conv_in.weight takes 8 channels but config.json says in_channels 4" in problems


def test_half_precision_reads_the_fp16_variant_where_there_is_one(tiny_folder, tmp_path):
    import shutil

    import torch

    from svd_engine.weights import FolderTree, check_weights

    both = tmp_path / "both"
    shutil.copytree(tiny_folder, both)
    build_tiny_pipeline().unet.to(torch.float16).save_pretrained(both / "unet", variant="fp16")
    half = check_weights(FolderTree(both), half=True)
    full = check_weights(FolderTree(both), half=False)
    assert half.ok and half.variant == "fp16" and "unet/diffusion_pytorch_model.fp16.safetensors" in half.files
    assert WEIGHTS not in half.files and "vae/diffusion_pytorch_model.safetensors" in half.files  # no fp16 VAE: plain
    assert full.ok and full.variant is None and WEIGHTS in full.files
    assert "unet/diffusion_pytorch_model.fp16.safetensors" not in full.files


def test_instances_loading_at_once_download_once(s3, sources, aws_env):
    fetch = f"from svd_engine.weights_bucket import fetch; print(fetch({sources['root']!r}, half=False))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    since = len(s3.requests())
    instances = [subprocess.Popen([sys.executable, "-c", fetch], env=env, stdout=subprocess.PIPE, text=True)
                 for _ in range(2)]
    folders = {instance.communicate(timeout=120)[0].strip() for instance in instances}
    assert all(instance.returncode == 0 for instance in instances) and len(folders) == 1
    assert s3.downloads(since).count("/svd-root/" + WEIGHTS) == 1


def test_pull_over_an_older_copy_replaces_files_of_the_same_size(s3, tiny_folder, aws_env, tmp_path):
    import shutil

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    tuned = tmp_path / "tuned"
    shutil.copytree(tiny_folder, tuned)
    with safe_open(tuned / WEIGHTS, "pt") as original:
        metadata = original.metadata()
    weights = load_file(tuned / WEIGHTS)  # a fine-tune: the same tensors with new values, so the same size
    save_file({name: tensor + 1 for name, tensor in weights.items()}, tuned / WEIGHTS, metadata=metadata)
    assert (tuned / WEIGHTS).stat().st_size == (tiny_folder / WEIGHTS).stat().st_size
    target = tmp_path / "serving"
    shutil.copytree(tiny_folder, target)
    done = weights_cli("pull", s3.upload(tuned, "svd-tuned"), str(target))
    assert done.returncode == 0, done.stdout + done.stderr
    assert (target / WEIGHTS).read_bytes() == (tuned / WEIGHTS).read_bytes()
