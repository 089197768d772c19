"""The model repository is plain Triton: no symlinks, no code of its own beyond thin model.py files, served
from a plain copy and from an S3 bucket; the inputs Triton serves are the contract's."""
import shutil

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from svd_contract import tensors
from tests.support import REPOSITORY, ROOT, TOKEN, start_server
from tests.support.kserve import auth_headers, image_bytes, infer, scalar, small, video_bytes
from tests.support.s3 import S3Server
from tests.support.videos import decode_video

MODELS = (tensors.SVD_MODEL, tensors.TEXT_TO_IMAGE_MODEL, tensors.TEXT_TO_VIDEO_MODEL)
MODEL_PY_LINES = 100
SAMPLE = ROOT / "src" / "svd_triton" / "data" / "sample.png"


def test_the_repository_has_no_symlinks_and_only_thin_adapters():
    assert not [p for p in REPOSITORY.rglob("*") if p.is_symlink()]
    for model in MODELS:
        code = [p.relative_to(REPOSITORY) for p in (REPOSITORY / model).rglob("*.py")]
        assert code == [REPOSITORY.joinpath(model, "1", "model.py").relative_to(REPOSITORY)], code
        lines = (REPOSITORY / model / "1" / "model.py").read_text().count("\n")
        assert lines < MODEL_PY_LINES, f"{model}/1/model.py has {lines} lines: the shared part belongs in svd_triton_backend"


@pytest.mark.parametrize("model", MODELS)
def test_the_served_inputs_and_outputs_are_the_contracts(triton, model):
    """auto_complete_config declares the parameter inputs: what Triton serves is svd_contract.tensors exactly."""
    with grpcclient.InferenceServerClient(triton.grpc_url) as client:
        config = client.get_model_config(model, as_json=True, headers=auth_headers("grpc", TOKEN))["config"]
    served = {i["name"]: i["data_type"] for i in config["input"]}
    assert served == tensors.inputs(model)
    assert all(i.get("optional") for i in config["input"] if i["name"] in tensors.parameter_inputs(model))
    assert {o["name"]: o["data_type"] for o in config["output"]} == tensors.OUTPUTS[model]
    if model == tensors.SVD_MODEL:
        assert next(i for i in config["input"] if i["name"] == "IMAGE").get("allow_ragged_batch")


def one_video(server):
    response = infer(server, "grpc", small(IMAGE_BYTES=image_bytes(SAMPLE.read_bytes()), NUM_FRAMES=scalar(2, np.int32)))
    return decode_video(video_bytes(response), "mp4")


def test_a_plain_copy_of_the_repository_serves(tmp_path):
    copy = tmp_path / "elsewhere" / "repository"
    shutil.copytree(REPOSITORY, copy, ignore=shutil.ignore_patterns("__pycache__"))
    with start_server(model_repository=copy, models=("svd_xt",)) as server:
        video = one_video(server)
    assert (video.num_frames, video.size) == (2, (64, 64))


def test_the_repository_serves_from_an_s3_bucket(tmp_path, monkeypatch):
    """tritonserver --model-repository=s3://HOST:PORT/BUCKET/PREFIX, credentials from the AWS_* variables."""
    (tmp_path / "s3").mkdir()
    s3 = S3Server(tmp_path / "s3")
    try:
        s3.upload(REPOSITORY, "triton-models", "repository/")
        for name, value in s3.environment().items():
            monkeypatch.setenv(name, value)
        url = f"s3://{s3.endpoint.removeprefix('http://')}/triton-models/repository"
        with start_server(model_repository=url, models=("svd_xt",)) as server:
            video = one_video(server)
        assert (video.num_frames, video.size) == (2, (64, 64))
        assert any(path.endswith("/svd_xt/1/model.py") for path in s3.downloads())
    finally:
        s3.stop()
