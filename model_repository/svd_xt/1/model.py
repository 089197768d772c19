"""svd_xt: an image in, a video out (svd_engine.SVDEngine), one model of Triton's Python backend.

Inputs are the contract's parameters (svd_contract.tensors.tensor_name: num_frames → NUM_FRAMES; declared
by auto_complete_config) beside exactly one of IMAGE (raw RGB) or IMAGE_BYTES (an encoded file); VIDEO
comes with VIDEO_FORMAT, its format's name. With a decoupled configuration (configs/stream.pbtxt,
configs/cpu_stream.pbtxt) each request gets PROGRESS responses (svd_contract.Progress) before its final
one; a request whose client has gone stops at the next phase change or denoising step. A request with
CONTROL (prewarm, pin, release, state) and no image steers keep-warm and answers STATE (JSON) instead
of a video.
"""
import json
from dataclasses import replace

import numpy as np
import triton_python_backend_utils as pb_utils

from svd_contract import InvalidRequest
from svd_contract.tensors import (CONTROL_ACTIONS, CONTROL_INPUT, IMAGE_INPUTS, SVD_MODEL, parameter_inputs,
                                  parameter_name)
from svd_triton_backend.skeleton import GenerationModel, scalar_inputs


class TritonPythonModel(GenerationModel):
    MODEL = SVD_MODEL
    ENGINE = "svd_engine.engine:SVDEngine"
    ENVIRONMENT = ("SVD_MODEL_SOURCE", "SVD_KEEP_WARM_SECONDS")

    def accept(self, replies, position, request):
        if (action := control_action(request)) is None:
            return replace(super().accept(replies, position, request), encode="VIDEO" in replies.wanted[position])
        replies.send(position, [tensor("STATE", json.dumps(self.control(action)).encode())])
        return None

    def parse(self, request):
        images = [name for name in IMAGE_INPUTS if pb_utils.get_input_tensor_by_name(request, name) is not None]
        if len(images) != 1:
            raise InvalidRequest("IMAGE", f"send exactly one of IMAGE or IMAGE_BYTES, got {len(images)}")
        image = pb_utils.get_input_tensor_by_name(request, images[0]).as_numpy()
        image = image[0] if images[0] == "IMAGE" else image.reshape(-1)[0]
        values = scalar_inputs(request, parameter_inputs(SVD_MODEL))
        return self.engine.parse(image, **{parameter_name(name): value for name, value in values.items()})

    def input_name(self, request, field):
        if field == "image" and pb_utils.get_input_tensor_by_name(request, "IMAGE_BYTES") is not None:
            return "IMAGE_BYTES"
        return super().input_name(request, field)

    def run(self, replies, accepted):
        positions = [position for position, _ in accepted]  # engine index → request position
        return self.engine.submit([spec for _, spec in accepted],
                                  on_progress=lambda event: replies.progress([positions[i] for i in event.batch], event),
                                  cancelled=lambda index: replies.is_cancelled(positions[index]))

    def outputs(self, result, wanted):
        values = {"VIDEO": lambda: np.array([[result.video]], dtype=np.object_),
                  "VIDEO_FORMAT": lambda: np.array([[result.video_format.encode()]], dtype=np.object_),
                  "SEED_USED": lambda: np.array([[result.seed]], dtype=np.int64),
                  "FRAMES": lambda: result.frames[np.newaxis]}
        return [pb_utils.Tensor(name, value()) for name, value in values.items() if name in wanted]

    def observe(self, spec, result):
        self.metrics.observe(spec, result)

    def executed(self, count, results):
        self.logger.log_info(f"{self.model_name}: executed {count} request(s), {len(results)} video(s)"
                             + (f", {max(sum(r.timings.values()) for r in results):.2f} s" if results else ""))

    def control(self, action):
        """Carry out one CONTROL action; the keep-warm state after it, with the cold start it paid."""
        startup = self.keep_warm.warm_up() if action in ("prewarm", "pin") else None
        if action == "pin":
            self.keep_warm.pin()
        elif action == "release":
            self.keep_warm.release()
        self.logger.log_info(f"{self.model_name}: control {action}")
        return {**self.keep_warm.state(), "action": action, "was_cold_start": startup is not None,
                "startup_seconds": None if startup is None else round(startup, 3)}


def control_action(request):
    """The CONTROL action a request asks for, None for a generation request (raises InvalidRequest)."""
    values = scalar_inputs(request, [CONTROL_INPUT])
    if not values:
        return None
    value = values[CONTROL_INPUT]
    action = (value.decode(errors="replace") if isinstance(value, bytes) else str(value)).strip().lower()
    if action not in CONTROL_ACTIONS:
        raise InvalidRequest("CONTROL", f"{action!r} is not one of {', '.join(CONTROL_ACTIONS)}")
    if any(pb_utils.get_input_tensor_by_name(request, name) is not None for name in IMAGE_INPUTS):
        raise InvalidRequest("CONTROL", "a control request carries no image; send it alone")
    return action


def tensor(name, payload):
    return pb_utils.Tensor(name, np.array([[payload]], dtype=np.object_))
