"""Triton Python-backend adapter for svd_engine.text_image: a prompt in, an RGB image out.

The first stage of text_to_video, also usable alone. Inputs are the engine's fields in upper case
(PROMPT, NEGATIVE_PROMPT, WIDTH, HEIGHT, NUM_INFERENCE_STEPS, GUIDANCE_SCALE, SEED); outputs IMAGE
(uint8, height × width × 3) and SEED_USED. Requests with the same size, steps and guidance share one
pipeline call (dynamic batching). Replies, errors, metrics and keep-warm are svd_xt's
(svd_engine.triton_backend, svd_engine.keep_warm): an idle model gives its device memory back after
`keep_warm_seconds` ($TEXT_IMAGE_KEEP_WARM_SECONDS overrides), the first thing to free on a shared GPU.
"""
import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils

from svd_engine import InvalidRequest
from svd_engine.keep_warm import KeepWarm
from svd_engine.text_image import PARAMETERS, PROMPTS, TextImageConfig, TextImageEngine
from svd_engine.triton_backend import (TYPES_FOR_KIND, Metrics, Replies, answer_error, check_declared,
                                       deployment_config, forward_engine_logs, keep_warm_seconds, utf8_text_files,
                                       warmup_requests)

OUTPUTS = {"IMAGE": "TYPE_UINT8", "SEED_USED": "TYPE_INT64"}
MODEL_SOURCE_ENV = "TEXT_IMAGE_MODEL_SOURCE"
KEEP_WARM_ENV = "TEXT_IMAGE_KEEP_WARM_SECONDS"


class TritonPythonModel:
    def initialize(self, args):
        self.model_name = args["model_name"]
        utf8_text_files()
        forward_engine_logs()
        model_config = json.loads(args["model_config"])
        expected = {**{name.upper(): "TYPE_STRING" for name in PROMPTS},
                    **{name.upper(): TYPES_FOR_KIND[p.kind] for name, p in PARAMETERS.items()}}
        check_declared(model_config, self.model_name, expected, OUTPUTS)
        config = deployment_config(TextImageConfig, model_config, args["model_instance_kind"],
                                   args["model_instance_device_id"], os.environ.get(MODEL_SOURCE_ENV))
        pb_utils.Logger.log_info(f"{self.model_name}: loading {config.model_source} on {config.device} ({config.dtype})")
        self.engine = TextImageEngine.load(config)
        self.metrics = Metrics(self.model_name, warmup_requests(model_config))
        seconds = keep_warm_seconds(model_config, os.environ.get(KEEP_WARM_ENV))
        self.keep_warm = KeepWarm(self.engine, seconds, on_change=self.metrics.keep_warm)
        pb_utils.Logger.log_info(f"{self.model_name}: keep-warm {seconds} s, then release by "
                                 f"{self.engine.release_mechanism}")

    def execute(self, requests):
        replies = Replies(requests, decoupled=False)
        accepted = []  # (position, validated request)
        for position, request in enumerate(requests):
            try:
                accepted.append((position, parse(self.engine, request)))
            except Exception as error:
                self.fail(replies, position, error)
        if accepted:
            try:
                with self.keep_warm.serving():
                    results = self.engine.generate([spec for _, spec in accepted],
                                                   cancelled=lambda index: replies.is_cancelled(accepted[index][0]))
            except Exception as error:
                results = [error] * len(accepted)
            for (position, _), result in zip(accepted, results):
                try:
                    if isinstance(result, Exception):
                        raise result
                    replies.send(position, [tensor for tensor in (
                        pb_utils.Tensor("IMAGE", result.image[np.newaxis]),
                        pb_utils.Tensor("SEED_USED", np.array([[result.seed]], dtype=np.int64)))
                        if tensor.name() in replies.wanted[position]])
                    self.metrics.succeeded(result.timings)
                except Exception as error:
                    self.fail(replies, position, error)
        return replies.finish()

    def fail(self, replies, position, error):
        answer_error(self.model_name, replies, position, error, self.metrics.count)

    def finalize(self):
        self.keep_warm.close()
        self.engine.close()


def parse(engine, request):
    """One request's tensors as a validated TextImageRequest (raises InvalidRequest naming the input)."""
    values = {}
    for name in (*PROMPTS, *PARAMETERS):
        tensor = pb_utils.get_input_tensor_by_name(request, name.upper())
        if tensor is not None:
            array = tensor.as_numpy()
            if array.size != 1:
                raise InvalidRequest(name.upper(), f"send one value, got {array.size}")
            values[name] = array.reshape(-1)[0]
    try:
        return engine.parse(values.pop("prompt", None), **values)
    except InvalidRequest as error:
        raise InvalidRequest(error.field.upper(), error.detail) from None
