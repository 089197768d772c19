"""svd_contract is the one table: the engine, config.pbtxt, the CLI and the gateway all read it."""
import json
import re
from dataclasses import fields, replace
from pathlib import Path

import pytest

import svd_contract as contract
from svd_contract import tensors
from svd_engine.video import ENCODERS
from tests.support import REPOSITORY

CONFIGS = sorted(str(p.relative_to(REPOSITORY)) for p in REPOSITORY.glob("*/config*.pbtxt")) + sorted(
    str(p.relative_to(REPOSITORY)) for p in REPOSITORY.glob("*/configs/*.pbtxt"))
DECLARED = re.compile(r'\{ name: "([A-Z_]+)", data_type: (TYPE_[A-Z0-9]+)')
PARAMETER = re.compile(r'\{ key: "(\w+)", value: \{ string_value: "([^"]*)" \} \}')
SVD_CONFIGS = [config for config in CONFIGS if config.startswith(tensors.SVD_MODEL + "/")]


def declared(text: str, block: str) -> dict[str, str]:
    """The tensors a config.pbtxt declares in its `input [...]` or `output [...]` block."""
    start = text.index(f"\n{block} [")
    return dict(DECLARED.findall(text[start:text.index("\n]", start)]))


def test_every_engine_format_is_a_contract_format_and_back():
    assert set(ENCODERS) == set(contract.VIDEO_FORMATS)


def test_every_parameter_has_help_and_a_type():
    for table in (contract.PARAMETERS, contract.TEXT_IMAGE_PARAMETERS, contract.TEXT_TO_VIDEO_IMAGE_PARAMETERS):
        for name, parameter in table.items():
            assert parameter.help, f"{name} has no help text (the CLI and the playground show it)"
            assert parameter.kind in (int, float, str) and (parameter.kind is not str or parameter.choices)


@pytest.mark.parametrize("config", CONFIGS)
def test_each_config_declares_the_contract_tensors_that_are_not_parameters(config):
    """config.pbtxt declares images, control, prompts and outputs; auto_complete_config adds the parameters,
    so the two together are exactly the contract's inputs (drift fails here, not at a model load)."""
    model = Path(config).parts[0]
    text = (REPOSITORY / config).read_text()
    inputs = declared(text, "input")
    assert inputs == tensors.declared_inputs(model), f"{config}: declared inputs differ from svd_contract.tensors"
    assert not set(inputs) & set(tensors.parameter_inputs(model)), f"{config} declares a parameter input itself"
    assert {**inputs, **{name: tensors.triton_type(p) for name, p in tensors.parameter_inputs(model).items()}} == \
        tensors.inputs(model)
    assert declared(text, "output") == tensors.OUTPUTS[model], f"{config}: outputs differ from svd_contract.tensors"
    assert re.search(rf'^name: "{model}"$', text, re.M), f"{config} names another model"


def test_the_cli_flags_come_from_the_contract(capsys):
    from svd_triton.cli import main

    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    shown = capsys.readouterr().out
    for name in (*contract.PARAMETERS, *contract.TEXT_TO_VIDEO_IMAGE_PARAMETERS):
        assert "--" + name.replace("_", "-") in shown


def test_control_is_not_a_generation_parameter():
    """CONTROL (keep-warm) is a request of its own: no CLI flag, no gateway body field, no contract entry."""
    from svd_gateway.families.forge.router import ForgeRequest
    from svd_gateway.families.replicate.schemas import PredictionInput
    from svd_gateway.families.tir.router import PredictRequest

    assert "control" not in contract.PARAMETERS and tensors.CONTROL_INPUT not in tensors.parameter_inputs("svd_xt")
    for body in (PredictRequest, ForgeRequest, PredictionInput):
        assert "control" not in body.model_fields


def test_a_field_is_read_back_from_an_invalid_arg_message():
    error = contract.InvalidRequest("num_frames", "num_frames=99 is out of range; accepted: an integer in 2–16")
    assert contract.split_field(str(error), contract.PARAMETERS) == ("num_frames", error.detail)
    assert contract.split_field("no field here: at all", contract.PARAMETERS) == (None, "no field here: at all")


def test_s3_locations_parse_once_for_weights_and_storage():
    assert contract.S3Location.parse("s3://bucket/a/b/") == contract.S3Location("bucket", "a/b/")
    assert str(contract.S3Location.parse("s3://bucket")) == "s3://bucket/"
    with pytest.raises(ValueError, match="names no bucket"):
        contract.S3Location.parse("s3:///prefix")


def test_every_parameter_input_maps_to_its_field_and_back():
    for model in tensors.OUTPUTS:
        for name, parameter in tensors.parameter_inputs(model).items():
            assert tensors.tensor_name(parameter.name) == name and tensors.parameter_name(name) == parameter.name


def test_a_progress_message_is_the_documented_json_and_reads_back():
    update = contract.Progress("denoising", 3, 25, 1.23456, segment=2, segments=3)
    assert json.loads(update.encode()) == {"phase": "denoising", "step": 3, "total": 25, "elapsed": 1.235,
                                           "segment": 2, "segments": 3}
    assert contract.Progress.decode(update.encode()) == replace(update, elapsed=1.235)
    newer = b'{"phase": "decoding", "step": 1, "total": 1, "elapsed": 0.5, "eta": 4}'  # a field this release lacks
    assert contract.Progress.decode(newer) == contract.Progress("decoding", 1, 1, 0.5)
    for broken in (b'{"step": 1}', b"[1]", b"not json"):
        with pytest.raises(ValueError, match="not a PROGRESS message"):
            contract.Progress.decode(broken)


def test_the_engine_event_goes_on_the_wire_without_its_batch():
    from svd_engine import Progress as EngineEvent

    event = EngineEvent("encoding", 4, 4, 2.0, segment=2, segments=2, batch=(0, 3))
    assert contract.Progress.decode(event.encode()) == contract.Progress("encoding", 4, 4, 2.0, 2, 2)


def test_the_client_progress_update_is_the_contract_message():
    from svd_triton import ProgressUpdate

    assert ProgressUpdate is contract.Progress


def config_parameters(config: str) -> dict[str, str]:
    """config.pbtxt's `parameters` as Triton serves them: {name: string_value}."""
    return dict(PARAMETER.findall((REPOSITORY / config).read_text()))


@pytest.mark.parametrize("config", SVD_CONFIGS)
def test_the_deployment_reads_each_svd_xt_config_as_the_engine_does(config):
    from svd_engine.config import EngineConfig
    from svd_triton_backend.model_config import KEEP_WARM_PARAMETER

    parameters = config_parameters(config)
    deployment = contract.Deployment.from_parameters(parameters)  # the engine's own settings are skipped
    for name in {field.name for field in fields(contract.Deployment)} & set(parameters):
        assert str(getattr(deployment, name)) == parameters[name], name
    engine = EngineConfig.from_parameters({k: v for k, v in parameters.items() if k != KEEP_WARM_PARAMETER})
    assert isinstance(engine, contract.Deployment)
    assert deployment == contract.Deployment(**{f.name: getattr(engine, f.name) for f in fields(contract.Deployment)})


def test_a_parameter_left_out_has_the_engine_default():
    from svd_engine.config import EngineConfig

    assert contract.Deployment.from_parameters({}).max_pixels == EngineConfig().max_pixels == 1024 * 1024


@pytest.mark.parametrize("name,value,message", [
    ("max_pixels", "lots", "parameter max_pixels='lots' is not a valid int"),
    ("max_segments", "0", "max_segments=0 must be at least 1"),
    ("max_cache_interval", "11", "max_cache_interval=11 must be 1–10"),
    ("default_width", "100", "default_width=100 is not a width a request may ask for; accepted: an integer in 64–2048, multiple of 8"),
    ("default_video_format", "mov", "default_video_format='mov' is not a video_format"),
    ("default_num_frames", "30", "default_num_frames=30 is not a num_frames a request may ask for; accepted: an integer "
                                 "in 2–25 or 0 (the model's own)"),
])
def test_a_bad_deployment_parameter_is_refused_by_name(name, value, message):
    from svd_engine.config import EngineConfig

    for reader in (contract.Deployment, EngineConfig):
        with pytest.raises(ValueError, match=re.escape(message)):
            reader.from_parameters({name: value})


def test_only_the_engine_refuses_names_it_does_not_know():
    from svd_engine.config import EngineConfig

    assert contract.Deployment.from_parameters({"fast_path": "on", "max_segments": "2"}).max_segments == 2
    with pytest.raises(ValueError, match=r"unknown engine parameter\(s\) \['max_segment'\]"):
        EngineConfig.from_parameters({"max_segment": "2"})
