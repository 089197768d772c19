"""svd_contract is the one table: the engine, config.pbtxt, the CLI and the gateway all read it."""
import re
from pathlib import Path

import pytest

import svd_contract as contract
from svd_contract import tensors
from svd_engine.video import ENCODERS
from tests.support import REPOSITORY

CONFIGS = sorted(str(p.relative_to(REPOSITORY)) for p in REPOSITORY.glob("*/config*.pbtxt")) + sorted(
    str(p.relative_to(REPOSITORY)) for p in REPOSITORY.glob("*/configs/*.pbtxt"))
DECLARED = re.compile(r'\{ name: "([A-Z_]+)", data_type: (TYPE_[A-Z0-9]+)')


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
    from svd_gateway.schemas import ForgeRequest, PredictionInput, PredictRequest

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
