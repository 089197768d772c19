"""Triton Python-backend adapter for svd_engine: tensors in, spec out; results in, tensors out.

Everything about what a request means and how a video is made lives in svd_engine; this file only
checks the model configuration it was given, converts tensors and maps engine errors to Triton ones.
Input names are the engine's parameter names in upper case (NUM_FRAMES → num_frames).

With a decoupled configuration (configs/stream.pbtxt, configs/cpu_stream.pbtxt) each request gets
PROGRESS responses (JSON: phase, step, total, elapsed, segment, segments) while it runs, then one final response.
Either way a request whose client has gone (cancelled, timed out, disconnected stream) stops
being worked on at the next phase change or denoising step.

Keep-warm (svd_engine.keep_warm): after `keep_warm_seconds` idle the weights leave the device and
the next request brings them back. A request with a CONTROL input (prewarm, pin, release, state)
and no image steers that and answers STATE (JSON) instead of a video.
"""
import concurrent.futures
import json
import os
from dataclasses import replace

import numpy as np
import triton_python_backend_utils as pb_utils

from svd_engine import PARAMETERS, EngineConfig, InvalidRequest, SVDEngine
from svd_engine.keep_warm import KeepWarm
from svd_engine.triton_backend import (TYPES_FOR_KIND, Metrics, Replies, answer_error, check_declared,
                                       deployment_config, failed, forward_engine_logs, keep_warm_seconds,
                                       utf8_text_files, warmup_requests)

IMAGE_INPUTS = {"IMAGE": "TYPE_UINT8", "IMAGE_BYTES": "TYPE_STRING"}
CONTROL_INPUT = {"CONTROL": "TYPE_STRING"}
CONTROL_ACTIONS = ("state", "prewarm", "pin", "release")
OUTPUTS = {"VIDEO": "TYPE_STRING", "SEED_USED": "TYPE_INT64", "FRAMES": "TYPE_UINT8", "PROGRESS": "TYPE_STRING",
           "STATE": "TYPE_STRING"}
MODEL_SOURCE_ENV = "SVD_MODEL_SOURCE"
KEEP_WARM_ENV = "SVD_KEEP_WARM_SECONDS"


class TritonPythonModel:
    def initialize(self, args):
        self.model_name = args["model_name"]
        utf8_text_files()
        forward_engine_logs()
        model_config = json.loads(args["model_config"])
        check_contract(model_config, self.model_name)
        self.decoupled = pb_utils.using_decoupled_model_transaction_policy(model_config)
        config = engine_config(model_config, args["model_instance_kind"], args["model_instance_device_id"])
        self.logger = pb_utils.Logger
        self.logger.log_info(f"{self.model_name}: loading {config.model_source} on {config.device} ({config.dtype})"
                             + (", streaming progress" if self.decoupled else ""))
        self.engine = SVDEngine.load(config)
        self.logger.log_info(f"{self.model_name}: {self.engine.fast_path.describe()}")
        self.metrics = Metrics(self.model_name, warmup_requests(model_config))
        seconds = keep_warm_seconds(model_config, os.environ.get(KEEP_WARM_ENV))
        self.keep_warm = KeepWarm(self.engine, seconds, on_change=self.metrics.keep_warm)
        self.logger.log_info(f"{self.model_name}: keep-warm {seconds} s, then release by {self.engine.release_mechanism}")

    def execute(self, requests):
        replies = Replies(requests, self.decoupled)
        accepted = []  # (position, validated request)
        for position, request in enumerate(requests):
            try:
                if (action := control_action(request)) is not None:
                    replies.send(position, [state_tensor(self.control(action))])
                else:
                    accepted.append((position, replace(parse(self.engine, request), encode="VIDEO" in replies.wanted[position])))
            except Exception as error:
                self.fail(replies, position, error)
        if not accepted:
            return replies.finish()
        positions = [position for position, _ in accepted]  # engine index → request position
        try:
            with self.keep_warm.serving():
                futures = self.engine.submit(
                    [spec for _, spec in accepted],
                    on_progress=lambda event: replies.progress([positions[i] for i in event.batch], event),
                    cancelled=lambda index: replies.is_cancelled(positions[index]))
        except Exception as error:
            futures = [failed(error) for _ in accepted]
        # Every final reply is sent (decoupled) or returned from this thread, once the whole batch is done;
        # encoding overlaps only the next pipeline call of this same execution. In Triton 2.51, final
        # responses sent from other threads aborted tritonserver under concurrent load: std::bad_alloc in
        # default mode, and in decoupled mode with batching boost::interprocess::lock_exception or
        # SIGSEGV in libtriton_python.so within seconds of 8 concurrent streams
        # (tests/test_streaming.py::test_a_burst_of_concurrent_streams_is_served_and_the_server_survives).
        concurrent.futures.wait(futures)
        videos = [result for (position, spec), future in zip(accepted, futures)
                  if (result := self.deliver(replies, position, spec, future)) is not None]
        self.logger.log_info(f"{self.model_name}: executed {len(requests)} request(s), {len(videos)} video(s)"
                             + (f", {max(sum(r.timings.values()) for r in videos):.2f} s" if videos else ""))
        return replies.finish()

    def control(self, action):
        """Carry out one CONTROL action; the keep-warm state after it, with the cold start it paid."""
        startup = None
        if action in ("prewarm", "pin"):
            startup = self.keep_warm.warm_up()
            if action == "pin":
                self.keep_warm.pin()
        elif action == "release":
            self.keep_warm.release()
        self.logger.log_info(f"{self.model_name}: control {action}")
        return {**self.keep_warm.state(), "action": action, "was_cold_start": startup is not None,
                "startup_seconds": None if startup is None else round(startup, 3)}

    def deliver(self, replies, position, spec, future):
        """Send one request's final reply: its outputs, or the error it ended with. Never raises: a
        failure while sending one reply must not cost the other requests of the batch theirs.

        Returns the GenerationResult when its outputs were sent, else None."""
        try:
            result = future.result()
            replies.send(position, output_tensors(result, replies.wanted[position]))
            self.metrics.observe(spec, result)
        except Exception as error:
            self.fail(replies, position, error)  # after a sent reply, logs the error and sends nothing more
            return None
        return result

    def fail(self, replies, position, error):
        """The final reply for a request that ended with `error`, mapped by ERROR_REPLIES; never raises."""
        answer_error(self.model_name, replies, position, error, self.metrics.count)

    def finalize(self):
        self.keep_warm.close()
        self.engine.close()


def control_action(request):
    """The CONTROL action a request asks for, None for a generation request (raises InvalidRequest)."""
    tensor = pb_utils.get_input_tensor_by_name(request, "CONTROL")
    if tensor is None:
        return None
    value = tensor.as_numpy().reshape(-1)[0]
    action = (value.decode(errors="replace") if isinstance(value, bytes) else str(value)).strip().lower()
    if action not in CONTROL_ACTIONS:
        raise InvalidRequest("CONTROL", f"{action!r} is not one of {', '.join(CONTROL_ACTIONS)}")
    if any(pb_utils.get_input_tensor_by_name(request, name) is not None for name in IMAGE_INPUTS):
        raise InvalidRequest("CONTROL", "a control request carries no image; send it alone")
    return action


def state_tensor(state):
    return pb_utils.Tensor("STATE", np.array([[json.dumps(state).encode()]], dtype=np.object_))


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
        raise InvalidRequest(input_name, error.detail) from None


def output_tensors(result, wanted):
    tensors = []
    if "VIDEO" in wanted:
        tensors.append(pb_utils.Tensor("VIDEO", np.array([[result.video]], dtype=np.object_)))
    if "SEED_USED" in wanted:
        tensors.append(pb_utils.Tensor("SEED_USED", np.array([[result.seed]], dtype=np.int64)))
    if "FRAMES" in wanted:
        tensors.append(pb_utils.Tensor("FRAMES", result.frames[np.newaxis]))
    return tensors


def check_contract(model_config, model_name):
    """Fail the load, naming the model, when config.pbtxt and this code disagree on the API."""
    check_declared(model_config, model_name, {**IMAGE_INPUTS, **CONTROL_INPUT, **{
        name.upper(): TYPES_FOR_KIND[p.kind] for name, p in PARAMETERS.items()}}, OUTPUTS)


def engine_config(model_config, instance_kind, device_id):
    """EngineConfig from config.pbtxt parameters, the instance's device and the environment."""
    return deployment_config(EngineConfig, model_config, instance_kind, device_id, os.environ.get(MODEL_SOURCE_ENV))
