"""config.pbtxt as the models read it: the contract's inputs declared, the engine's parameters, keep-warm."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from svd_contract import tensors
from svd_contract.deployment import config_parameters

if TYPE_CHECKING:  # annotations only: this module runs without Triton's stub too (the unit tests read it)
    import triton_python_backend_utils as pb_utils

    from svd_engine.config import PipelineConfig

BACKEND_PARAMETERS = {"EXECUTION_ENV_PATH"}  # read by the python backend itself, not the engine
KEEP_WARM_PARAMETER = "keep_warm_seconds"  # read by KeepWarm, not by the engine
DEFAULT_KEEP_WARM_SECONDS = 900
INTEGER_TYPES = ("TYPE_INT32", "TYPE_INT64")
C = TypeVar("C", bound="PipelineConfig")


def add_parameter_inputs(auto_complete_model_config: pb_utils.ModelConfig, model: str) -> pb_utils.ModelConfig:
    """Declare the contract's parameter inputs of `model` (optional scalars): auto_complete_config's body,
    so config.pbtxt lists only the image, control and prompt inputs and the outputs."""
    config = auto_complete_model_config.as_dict()
    declared = {i["name"]: i.get("data_type") for i in config.get("input", [])}
    for name, parameter in tensors.parameter_inputs(model).items():
        data_type = tensors.triton_type(parameter)
        if declared.get(name, data_type) != data_type:
            raise ValueError(
                f"model '{config.get('name')}': config.pbtxt declares {name} as {declared[name]}, the "
                f"contract makes it {data_type}; leave it out: auto_complete_config declares every "
                "parameter input from svd_contract"
            )
        auto_complete_model_config.add_input({"name": name, "data_type": data_type, "dims": [1], "optional": True})
    return auto_complete_model_config


def check_declared(
    model_config: Mapping[str, Any], model_name: str, expected_inputs: Mapping[str, str], outputs: Mapping[str, str]
) -> None:
    """Fail the load, naming the model, when config.pbtxt declares other inputs or outputs than the code reads.
    `expected_inputs` maps each input to its allowed data type(s), `outputs` each output to its type."""
    declared_inputs = {i["name"]: i["data_type"] for i in model_config.get("input", [])}
    declared_outputs = {o["name"]: o["data_type"] for o in model_config.get("output", [])}
    problems = []
    for name, allowed in expected_inputs.items():
        if name not in declared_inputs:
            problems.append(f"input {name} is not declared")
        elif declared_inputs[name] != allowed:
            problems.append(f"input {name} is {declared_inputs[name]}, expected {allowed}")
    problems += [f"input {name} is unknown to the engine" for name in declared_inputs if name not in expected_inputs]
    problems += [
        f"output {name} must be {kind}" for name, kind in outputs.items() if declared_outputs.get(name) != kind
    ]
    if model_config.get("max_batch_size", 0) < 1:
        problems.append("max_batch_size must be at least 1 (outputs carry a batch dimension)")
    if problems:
        raise ValueError(f"model '{model_name}': config.pbtxt does not match model.py: " + "; ".join(problems))


def deployment_config(
    config_class: type[C],
    model_config: Mapping[str, Any],
    instance_kind: str,
    device_id: str | int,
    model_source: str | None = None,
) -> C:
    """`config_class` (EngineConfig, TextImageConfig) from config.pbtxt parameters and the instance's device;
    `model_source` (the model's environment variable, read by its model.py) overrides the parameter when set."""
    parameters = {
        key: value
        for key, value in config_parameters(model_config).items()
        if key not in BACKEND_PARAMETERS and key != KEEP_WARM_PARAMETER
    }
    if model_source:
        parameters["model_source"] = model_source
    parameters["device"] = f"cuda:{device_id}" if instance_kind == "GPU" else "cpu"
    try:
        return config_class.from_parameters(parameters)
    except ValueError as error:
        raise ValueError(f"model '{model_config.get('name')}': {error}") from None


def warmup_requests(model_config: Mapping[str, Any]) -> int:
    """How many requests Triton's model_warmup sends before the model is ready."""
    return sum(
        max(1, int(w.get("batch_size", 1))) * max(1, int(w.get("count", 1)))
        for w in model_config.get("model_warmup", [])
    )


def keep_warm_seconds(model_config: Mapping[str, Any], override: str | None = None) -> int | float:
    """Idle seconds before release: `override` (the model's environment variable, read by its model.py), else
    config.pbtxt's keep_warm_seconds, else 900."""
    raw = override or config_parameters(model_config).get(KEEP_WARM_PARAMETER, str(DEFAULT_KEEP_WARM_SECONDS))
    try:
        seconds = float(raw)
    except ValueError:
        seconds = None
    if seconds is None or (seconds < 0 and seconds != -1):
        raise ValueError(
            f"model '{model_config.get('name')}': {KEEP_WARM_PARAMETER}={raw!r} must be -1 (never "
            "release), 0 (release after each request) or a number of seconds"
        )
    return int(seconds) if seconds.is_integer() else seconds
