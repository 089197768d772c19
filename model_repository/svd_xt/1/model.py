"""Triton Python-backend adapter for svd_engine: tensors in, spec out; results in, tensors out.

Everything about what a request means and how a video is made lives in svd_engine; this file only
checks the model configuration it was given, converts tensors and maps engine errors to Triton ones.
Input names are the engine's parameter names in upper case (NUM_FRAMES → num_frames).
"""
import json
import os
import traceback
from dataclasses import replace

import numpy as np
import triton_python_backend_utils as pb_utils

from svd_engine import PARAMETERS, EngineConfig, InvalidRequest, SVDEngine

IMAGE_INPUTS = {"IMAGE": "TYPE_UINT8", "IMAGE_BYTES": "TYPE_STRING"}
OUTPUTS = {"VIDEO": "TYPE_STRING", "SEED_USED": "TYPE_INT64", "FRAMES": "TYPE_UINT8"}
TYPES_FOR_KIND = {int: ("TYPE_INT32", "TYPE_INT64"), float: ("TYPE_FP32",), str: ("TYPE_STRING",)}
MODEL_SOURCE_ENV = "SVD_MODEL_SOURCE"
BACKEND_PARAMETERS = {"EXECUTION_ENV_PATH"}  # read by the python backend itself, not the engine


class TritonPythonModel:
    def initialize(self, args):
        self.model_name = args["model_name"]
        model_config = json.loads(args["model_config"])
        check_contract(model_config, self.model_name)
        config = engine_config(model_config, args["model_instance_kind"], args["model_instance_device_id"])
        self.logger = pb_utils.Logger
        self.logger.log_info(f"{self.model_name}: loading {config.model_source} on {config.device} ({config.dtype})")
        self.engine = SVDEngine.load(config)

    def execute(self, requests):
        responses = [None] * len(requests)
        accepted = []  # (position, validated request, requested outputs)
        for position, request in enumerate(requests):
            wanted = set(request.requested_output_names())
            try:
                spec = replace(parse(self.engine, request), encode="VIDEO" in wanted)
                accepted.append((position, spec, wanted))
            except InvalidRequest as error:
                responses[position] = error_response(str(error), pb_utils.TritonError.INVALID_ARG)
        if accepted:
            try:
                results = self.engine.generate([spec for _, spec, _ in accepted])
            except Exception:
                self.logger.log_error(f"{self.model_name}: generation failed\n{traceback.format_exc()}")
                results = [None] * len(accepted)
            for (position, _, wanted), result in zip(accepted, results):
                responses[position] = (
                    error_response("generation failed; the server log has the details", pb_utils.TritonError.INTERNAL)
                    if result is None else pb_utils.InferenceResponse(output_tensors=output_tensors(result, wanted))
                )
        return responses

    def finalize(self):
        self.engine.close()


def parse(engine, request):
    """Turn one request's tensors into a validated GenerationRequest (raises InvalidRequest)."""
    images = {name: tensor for name in IMAGE_INPUTS
              if (tensor := pb_utils.get_input_tensor_by_name(request, name)) is not None}
    if len(images) != 1:
        raise InvalidRequest("IMAGE", f"send exactly one of IMAGE or IMAGE_BYTES, got {len(images)}")
    if "IMAGE" in images:
        image = images["IMAGE"].as_numpy()[0]
    else:
        image = images["IMAGE_BYTES"].as_numpy().reshape(-1)[0]
    params = {}
    for name in PARAMETERS:
        tensor = pb_utils.get_input_tensor_by_name(request, name.upper())
        if tensor is not None:
            params[name] = tensor.as_numpy().reshape(-1)[0]
    try:
        return engine.parse(image, **params)
    except InvalidRequest as error:
        input_name = "IMAGE_BYTES" if error.field == "image" and "IMAGE_BYTES" in images else error.field.upper()
        raise InvalidRequest(input_name, str(error).split(": ", 1)[1]) from None


def output_tensors(result, wanted):
    tensors = []
    if "VIDEO" in wanted:
        tensors.append(pb_utils.Tensor("VIDEO", np.array([[result.video]], dtype=np.object_)))
    if "SEED_USED" in wanted:
        tensors.append(pb_utils.Tensor("SEED_USED", np.array([[result.seed]], dtype=np.int64)))
    if "FRAMES" in wanted:
        tensors.append(pb_utils.Tensor("FRAMES", result.frames[np.newaxis]))
    return tensors


def error_response(message, code):
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code))


def check_contract(model_config, model_name):
    """Fail the load, naming the model, when config.pbtxt and this code disagree on the API."""
    expected_inputs = {**IMAGE_INPUTS, **{name.upper(): TYPES_FOR_KIND[p.kind] for name, p in PARAMETERS.items()}}
    declared_inputs = {i["name"]: i["data_type"] for i in model_config.get("input", [])}
    declared_outputs = {o["name"]: o["data_type"] for o in model_config.get("output", [])}
    problems = []
    for name, allowed in expected_inputs.items():
        if name not in declared_inputs:
            problems.append(f"input {name} is not declared")
        elif declared_inputs[name] not in (allowed if isinstance(allowed, tuple) else (allowed,)):
            problems.append(f"input {name} is {declared_inputs[name]}, expected {allowed}")
    problems += [f"input {name} is unknown to the engine" for name in declared_inputs if name not in expected_inputs]
    problems += [f"output {name} must be {kind}" for name, kind in OUTPUTS.items() if declared_outputs.get(name) != kind]
    if model_config.get("max_batch_size", 0) < 1:
        problems.append("max_batch_size must be at least 1 (outputs carry a batch dimension)")
    if problems:
        raise ValueError(f"model '{model_name}': config.pbtxt does not match model.py: " + "; ".join(problems))


def engine_config(model_config, instance_kind, device_id):
    """EngineConfig from config.pbtxt parameters, the instance's device and the environment."""
    parameters = {key: value["string_value"] for key, value in model_config.get("parameters", {}).items()
                  if key not in BACKEND_PARAMETERS}
    if os.environ.get(MODEL_SOURCE_ENV):
        parameters["model_source"] = os.environ[MODEL_SOURCE_ENV]
    parameters["device"] = f"cuda:{device_id}" if instance_kind == "GPU" else "cpu"
    try:
        return EngineConfig.from_parameters(parameters)
    except ValueError as error:
        raise ValueError(f"model '{model_config.get('name')}': {error}") from None
