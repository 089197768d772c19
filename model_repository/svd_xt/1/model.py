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
import locale
import logging
import os
import threading
import traceback
from dataclasses import replace

import numpy as np
import triton_python_backend_utils as pb_utils

from svd_engine import PARAMETERS, EngineConfig, GenerationCancelled, InvalidRequest, OutOfMemory, SVDEngine
from svd_engine.keep_warm import STATES, KeepWarm

IMAGE_INPUTS = {"IMAGE": "TYPE_UINT8", "IMAGE_BYTES": "TYPE_STRING"}
CONTROL_INPUT = {"CONTROL": "TYPE_STRING"}
CONTROL_ACTIONS = ("state", "prewarm", "pin", "release")
OUTPUTS = {"VIDEO": "TYPE_STRING", "SEED_USED": "TYPE_INT64", "FRAMES": "TYPE_UINT8", "PROGRESS": "TYPE_STRING",
           "STATE": "TYPE_STRING"}
TYPES_FOR_KIND = {int: ("TYPE_INT32", "TYPE_INT64"), float: ("TYPE_FP32",), str: ("TYPE_STRING",)}
MODEL_SOURCE_ENV = "SVD_MODEL_SOURCE"
BACKEND_PARAMETERS = {"EXECUTION_ENV_PATH"}  # read by the python backend itself, not the engine
KEEP_WARM_PARAMETER = "keep_warm_seconds"  # read here (KeepWarm), not by the engine
KEEP_WARM_ENV = "SVD_KEEP_WARM_SECONDS"
DEFAULT_KEEP_WARM_SECONDS = 900
# The one map from a request's failure to its reply: (exception class, TritonError code name, metrics
# outcome, message prefix), first isinstance match wins. Names, because pb_utils.TritonError only
# exists once the stub runs the model. Anything else is INTERNAL with a generic message, the
# traceback going to the server log only.
ERROR_REPLIES = (
    (InvalidRequest, "INVALID_ARG", "invalid", ""),
    (GenerationCancelled, "CANCELLED", "cancelled", "request cancelled: "),
    (OutOfMemory, "UNAVAILABLE", "failed", "not enough memory: "),
)
INTERNAL_MESSAGE = "generation failed; the server log has the details"


def error_reply(error):
    """(TritonError code name, metrics outcome, client message) for a request that ended with `error`."""
    for kind, code, outcome, prefix in ERROR_REPLIES:
        if isinstance(error, kind):
            return code, outcome, f"{prefix}{error}"
    return "INTERNAL", "failed", INTERNAL_MESSAGE


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
        seconds = keep_warm_seconds(model_config)
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
        code, outcome, message = error_reply(error)
        try:
            if code == "INTERNAL":
                self.logger.log_error(f"{self.model_name}: request {replies.request_id(position)} failed\n"
                                      + "".join(traceback.format_exception(error)))
            elif code != "INVALID_ARG":
                self.logger.log_info(f"{self.model_name}: request {replies.request_id(position)} {message}")
            self.metrics.count(outcome)
            replies.error(position, message, getattr(pb_utils.TritonError, code))
        except Exception:
            self.logger.log_error(f"{self.model_name}: could not answer request {position}\n{traceback.format_exc()}")

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


class Metrics:
    """Custom Prometheus metrics, served by Triton on its metrics port beside its own nv_* ones."""

    PHASES = ("image", "preparing", "denoising", "decoding", "encoding")
    OUTCOMES = ("success", "invalid", "cancelled", "failed")
    BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160]

    def __init__(self, model_name, warmup=0):
        """The first `warmup` requests are Triton's model_warmup, run before the model is ready: not
        user traffic, so not counted (Forge's reliability route must say "no traffic" until there is)."""
        self.warmup = warmup
        labels = {"model": model_name}
        family = pb_utils.MetricFamily
        # The families must outlive their metrics: they are kept as attributes.
        self.families = [
            family("svd_request_phase_seconds", "Seconds each request spent in a phase", family.HISTOGRAM),
            family("svd_requests_total", "Requests by outcome", family.COUNTER),
            family("svd_frames_generated_total", "Video frames generated", family.COUNTER),
            family("svd_denoising_steps_per_second", "Denoising steps per second of the last request", family.GAUGE),
        ]
        phases, outcomes, frames, step_rate = self.families
        self.phases = {p: phases.Metric({**labels, "phase": p}, buckets=self.BUCKETS) for p in self.PHASES}
        self.outcomes = {o: outcomes.Metric({**labels, "outcome": o}) for o in self.OUTCOMES}
        self.frames = frames.Metric(labels)
        self.step_rate = step_rate.Metric(labels)
        state_families = [
            family("svd_model_state", "1 for the keep-warm state the model is in (warm, cold, starting)", family.GAUGE),
            family("svd_model_state_since_seconds", "Unix time the model entered its keep-warm state", family.GAUGE),
            family("svd_keep_warm_remaining_seconds", "Idle seconds left before the weights leave the device; "
                   "-1 when they never do (keep_warm_seconds -1, or pinned); 0 when cold", family.GAUGE),
            family("svd_last_cold_start_seconds", "Seconds the last cold start took to bring the weights back", family.GAUGE),
            family("svd_cold_starts_total", "Requests and prewarms that brought released weights back", family.COUNTER),
            family("svd_model_pinned", "1 while pinned warm (prewarm with pin, until released)", family.GAUGE),
            family("svd_weight_bytes_on_device", "Bytes of weights held on the serving device", family.GAUGE),
            family("svd_cold_start_seconds", "Seconds each cold start took to bring the weights back", family.HISTOGRAM),
            family("svd_request_seconds", "Seconds from a request's image decode to its encoded video", family.HISTOGRAM),
            family("svd_device_info", "The serving device (label name: the GPU model, or cpu)", family.GAUGE),
        ]
        self.families += state_families
        (state, since, remaining, cold_start, cold_starts, pinned, weight_bytes, cold_start_seconds, request_seconds,
         self.device_family) = state_families
        self.cold_start_seconds = cold_start_seconds.Metric(labels, buckets=self.BUCKETS)
        self.request_seconds = request_seconds.Metric(labels, buckets=self.BUCKETS)
        self.labels, self.device_info = labels, None
        self.state = {s: state.Metric({**labels, "state": s}) for s in STATES}
        self.since, self.remaining, self.cold_start = since.Metric(labels), remaining.Metric(labels), cold_start.Metric(labels)
        self.cold_starts, self.pinned, self.weight_bytes = cold_starts.Metric(labels), pinned.Metric(labels), weight_bytes.Metric(labels)
        self.cold_starts_counted = 0

    def keep_warm(self, state):
        """Mirror KeepWarm.state() into the gauges (called at each transition and timer tick)."""
        for name, metric in self.state.items():
            metric.set(1 if state["state"] == name else 0)
        self.since.set(state["since"])
        left = state["keep_warm_left_seconds"]
        self.remaining.set(0 if state["state"] != "warm" else -1 if left is None else left)
        self.cold_start.set(state["last_cold_start_seconds"] or 0)
        if state["cold_starts"] > self.cold_starts_counted:
            self.cold_starts.increment(state["cold_starts"] - self.cold_starts_counted)
            self.cold_start_seconds.observe(state["last_cold_start_seconds"])
            self.cold_starts_counted = state["cold_starts"]
        if self.device_info is None:
            self.device_info = self.device_family.Metric({**self.labels, "device": state["device"],
                                                          "name": state["device_name"]})
            self.device_info.set(1)
        self.pinned.set(1 if state["pinned"] else 0)
        self.weight_bytes.set(state["weight_bytes_on_device"])

    def is_warmup(self):
        if self.warmup > 0:
            self.warmup -= 1
            return True
        return False

    def count(self, outcome):
        if not self.is_warmup():
            self.outcomes[outcome].increment(1)

    def observe(self, spec, result):
        if self.is_warmup():
            return
        self.outcomes["success"].increment(1)
        for phase, seconds in result.timings.items():
            self.phases[phase].observe(seconds)
        self.request_seconds.observe(sum(result.timings.values()))
        self.frames.increment(spec.num_frames * spec.segments)
        if result.timings["denoising"] > 0:
            self.step_rate.set(spec.num_inference_steps * spec.segments / result.timings["denoising"])


class Replies:
    """Responses for one execute(): returned as a list, or sent one by one when decoupled.

    Decoupled models may send PROGRESS responses first. Every request gets exactly one final reply:
    a second one is refused, and `finish` answers any request still without one with INTERNAL.
    """

    def __init__(self, requests, decoupled):
        self.requests = requests
        self.decoupled = decoupled
        self.wanted = [set(request.requested_output_names()) for request in requests]
        self.senders = [request.get_response_sender() for request in requests] if decoupled else None
        self.responses = [None] * len(requests)
        self.answered = [False] * len(requests)
        self._lock = threading.Lock()

    def request_id(self, position):
        return self.requests[position].request_id() or position

    def is_cancelled(self, position):
        return (self.senders[position] if self.decoupled else self.requests[position]).is_cancelled()

    def progress(self, positions, event):
        """A PROGRESS response to each listed request that asked for it (decoupled models only)."""
        if not self.decoupled:
            return
        payload = json.dumps({"phase": event.phase, "step": event.step, "total": event.total,
                              "elapsed": round(event.elapsed, 3), "segment": event.segment,
                              "segments": event.segments}).encode()
        tensor = pb_utils.Tensor("PROGRESS", np.array([[payload]], dtype=np.object_))
        for position in positions:
            with self._lock:
                if "PROGRESS" in self.wanted[position] and not self.answered[position]:
                    self.senders[position].send(pb_utils.InferenceResponse(output_tensors=[tensor]))

    def send(self, position, tensors):
        self._reply(position, pb_utils.InferenceResponse(output_tensors=tensors))

    def error(self, position, message, code):
        self._reply(position, pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code)))

    def _reply(self, position, response):
        with self._lock:
            if self.answered[position]:
                raise RuntimeError(f"request {position} already has its final response")
            if self.decoupled:
                self.senders[position].send(response, flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            else:
                self.responses[position] = response
            self.answered[position] = True

    def finish(self):
        """The responses to return from execute(): None when decoupled (all were sent)."""
        if self.decoupled:
            return None
        for position, answered in enumerate(self.answered):
            if not answered:
                self.error(position, INTERNAL_MESSAGE, pb_utils.TritonError.INTERNAL)
        return self.responses


def failed(error):
    """A Future already holding `error`, for requests the engine never got to."""
    future = concurrent.futures.Future()
    future.set_exception(error)
    return future


def utf8_text_files() -> None:
    """Make open() read UTF-8 in this process, whatever LANG says.

    The stub embeds Python with an isolated configuration, which never sets the locale from the
    environment: open() without an encoding reads ASCII, and torch.compile's inductor then fails
    the model load on its own UTF-8 templates ("'ascii' codec can't decode byte 0xe2").
    """
    if locale.getpreferredencoding(False).upper().replace("-", "") != "UTF8":
        locale.setlocale(locale.LC_CTYPE, "C.UTF-8")


class TritonLogHandler(logging.Handler):
    def emit(self, record):
        write = (pb_utils.Logger.log_error if record.levelno >= logging.ERROR else
                 pb_utils.Logger.log_warn if record.levelno >= logging.WARNING else pb_utils.Logger.log_info)
        write(f"{record.name}: {record.getMessage()}")


def forward_engine_logs() -> None:
    """Send svd_engine's log records (weight download progress, compile times) to Triton's log (once per stub process)."""
    engine_log = logging.getLogger("svd_engine")
    engine_log.addHandler(TritonLogHandler())
    engine_log.setLevel(logging.INFO)


def check_contract(model_config, model_name):
    """Fail the load, naming the model, when config.pbtxt and this code disagree on the API."""
    expected_inputs = {**IMAGE_INPUTS, **CONTROL_INPUT, **{name.upper(): TYPES_FOR_KIND[p.kind] for name, p in PARAMETERS.items()}}
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
                  if key not in BACKEND_PARAMETERS and key != KEEP_WARM_PARAMETER}
    if os.environ.get(MODEL_SOURCE_ENV):
        parameters["model_source"] = os.environ[MODEL_SOURCE_ENV]
    parameters["device"] = f"cuda:{device_id}" if instance_kind == "GPU" else "cpu"
    try:
        return EngineConfig.from_parameters(parameters)
    except ValueError as error:
        raise ValueError(f"model '{model_config.get('name')}': {error}") from None


def warmup_requests(model_config):
    """How many requests Triton's model_warmup sends before the model is ready."""
    return sum(max(1, int(w.get("batch_size", 1))) * max(1, int(w.get("count", 1)))
               for w in model_config.get("model_warmup", []))


def keep_warm_seconds(model_config):
    """Idle seconds before release: $SVD_KEEP_WARM_SECONDS, else config.pbtxt's keep_warm_seconds, else 900."""
    raw = os.environ.get(KEEP_WARM_ENV) or model_config.get("parameters", {}).get(KEEP_WARM_PARAMETER, {}).get(
        "string_value", str(DEFAULT_KEEP_WARM_SECONDS))
    try:
        seconds = float(raw)
    except ValueError:
        seconds = None
    if seconds is None or (seconds < 0 and seconds != -1):
        raise ValueError(f"model '{model_config.get('name')}': {KEEP_WARM_PARAMETER}={raw!r} must be -1 (never "
                         "release), 0 (release after each request) or a number of seconds")
    return int(seconds) if seconds.is_integer() else seconds
