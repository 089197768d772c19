"""Triton Python-backend pieces every model of this repository uses (svd_xt, text_to_image, text_to_video).

Imported only inside Triton's stub (it needs triton_python_backend_utils), never by the engine: the
one map from an engine error to a Triton reply, the one-final-reply bookkeeping, the custom metrics,
the config.pbtxt checks and casts, keep-warm settings, and the log and locale set-up of a stub process.
"""
import concurrent.futures
import json
import locale
import logging
import re
import tempfile
import threading
import traceback
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from .errors import GenerationCancelled, InvalidRequest, OutOfMemory
from .keep_warm import STATES

TYPES_FOR_KIND = {int: ("TYPE_INT32", "TYPE_INT64"), float: ("TYPE_FP32",), str: ("TYPE_STRING",)}
BACKEND_PARAMETERS = {"EXECUTION_ENV_PATH"}  # read by the python backend itself, not the engine
KEEP_WARM_PARAMETER = "keep_warm_seconds"  # read here (KeepWarm), not by the engine
DEFAULT_KEEP_WARM_SECONDS = 900
# Triton 2.51's BLS cannot cancel a request it sent (python_backend added the response iterator's
# cancel() in r25.04), so a model that chains others (text_to_video) sends each stage a random token
# as the request parameter `chain_cancel_token` and, once its own client has gone, creates a file of
# that name here: Replies.is_cancelled sees it, and the stage stops at its next step.
CHAIN_CANCEL_FOLDER = Path(tempfile.gettempdir()) / "svd-triton-cancelled"
CHAIN_CANCEL_PARAMETER = "chain_cancel_token"
CHAIN_TOKEN = re.compile(r"[0-9a-f]{32}")

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


def answer_error(model_name, replies, position, error, count=lambda outcome: None):
    """The final reply for a request that ended with `error`, mapped by ERROR_REPLIES; never raises.
    `count` gets the metrics outcome. INTERNAL errors log their traceback; the client gets a generic message."""
    code, outcome, message = error_reply(error)
    try:
        if code == "INTERNAL":
            pb_utils.Logger.log_error(f"{model_name}: request {replies.request_id(position)} failed\n"
                                      + "".join(traceback.format_exception(error)))
        elif code != "INVALID_ARG":
            pb_utils.Logger.log_info(f"{model_name}: request {replies.request_id(position)} {message}")
        count(outcome)
        replies.error(position, message, getattr(pb_utils.TritonError, code))
    except Exception:
        pb_utils.Logger.log_error(f"{model_name}: could not answer request {position}\n{traceback.format_exc()}")


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

    def succeeded(self, timings):
        """Count one successful request and its phase seconds; False (nothing counted) for a warm-up request."""
        if self.is_warmup():
            return False
        self.outcomes["success"].increment(1)
        for phase, seconds in timings.items():
            self.phases[phase].observe(seconds)
        self.request_seconds.observe(sum(timings.values()))
        return True

    def observe(self, spec, result):
        """A generated video: its phases, frames and denoising rate."""
        if not self.succeeded(result.timings):
            return
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
        self.cancel_markers = [chain_cancel_marker(request) for request in requests]
        self.answered = [False] * len(requests)
        self._lock = threading.Lock()

    def request_id(self, position):
        return self.requests[position].request_id() or position

    def is_cancelled(self, position):
        marker = self.cancel_markers[position]
        return ((self.senders[position] if self.decoupled else self.requests[position]).is_cancelled()
                or (marker is not None and marker.exists()))

    def progress(self, positions, event):
        """A PROGRESS response to each listed request that asked for it (decoupled models only)."""
        self.send_progress(positions, json.dumps({"phase": event.phase, "step": event.step, "total": event.total,
                                                  "elapsed": round(event.elapsed, 3), "segment": event.segment,
                                                  "segments": event.segments}).encode())

    def send_progress(self, positions, payload):
        """A PROGRESS response holding `payload` (JSON bytes) to each listed request that asked for it."""
        if not self.decoupled:
            return
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


def chain_cancel_marker(request):
    """The file whose existence cancels `request` when a chaining model sent it with a token; else None."""
    try:
        token = json.loads(request.parameters() or "{}").get(CHAIN_CANCEL_PARAMETER)
    except (ValueError, AttributeError):
        return None
    return CHAIN_CANCEL_FOLDER / token if isinstance(token, str) and CHAIN_TOKEN.fullmatch(token) else None


def check_declared(model_config, model_name, expected_inputs, outputs):
    """Fail the load, naming the model, when config.pbtxt declares other inputs or outputs than the code reads.
    `expected_inputs` maps each input to its allowed data type(s), `outputs` each output to its type."""
    declared_inputs = {i["name"]: i["data_type"] for i in model_config.get("input", [])}
    declared_outputs = {o["name"]: o["data_type"] for o in model_config.get("output", [])}
    problems = []
    for name, allowed in expected_inputs.items():
        if name not in declared_inputs:
            problems.append(f"input {name} is not declared")
        elif declared_inputs[name] not in (allowed if isinstance(allowed, tuple) else (allowed,)):
            problems.append(f"input {name} is {declared_inputs[name]}, expected {allowed}")
    problems += [f"input {name} is unknown to the engine" for name in declared_inputs if name not in expected_inputs]
    problems += [f"output {name} must be {kind}" for name, kind in outputs.items() if declared_outputs.get(name) != kind]
    if model_config.get("max_batch_size", 0) < 1:
        problems.append("max_batch_size must be at least 1 (outputs carry a batch dimension)")
    if problems:
        raise ValueError(f"model '{model_name}': config.pbtxt does not match model.py: " + "; ".join(problems))


def deployment_config(config_class, model_config, instance_kind, device_id, model_source=None):
    """`config_class` (EngineConfig, TextImageConfig) from config.pbtxt parameters and the instance's device;
    `model_source` (the model's environment variable, read by its model.py) overrides the parameter when set."""
    parameters = {key: value["string_value"] for key, value in model_config.get("parameters", {}).items()
                  if key not in BACKEND_PARAMETERS and key != KEEP_WARM_PARAMETER}
    if model_source:
        parameters["model_source"] = model_source
    parameters["device"] = f"cuda:{device_id}" if instance_kind == "GPU" else "cpu"
    try:
        return config_class.from_parameters(parameters)
    except ValueError as error:
        raise ValueError(f"model '{model_config.get('name')}': {error}") from None


def warmup_requests(model_config):
    """How many requests Triton's model_warmup sends before the model is ready."""
    return sum(max(1, int(w.get("batch_size", 1))) * max(1, int(w.get("count", 1)))
               for w in model_config.get("model_warmup", []))


def keep_warm_seconds(model_config, override=None):
    """Idle seconds before release: `override` (the model's environment variable, read by its model.py), else config.pbtxt's keep_warm_seconds, else 900."""
    raw = override or model_config.get("parameters", {}).get(KEEP_WARM_PARAMETER, {}).get(
        "string_value", str(DEFAULT_KEEP_WARM_SECONDS))
    try:
        seconds = float(raw)
    except ValueError:
        seconds = None
    if seconds is None or (seconds < 0 and seconds != -1):
        raise ValueError(f"model '{model_config.get('name')}': {KEEP_WARM_PARAMETER}={raw!r} must be -1 (never "
                         "release), 0 (release after each request) or a number of seconds")
    return int(seconds) if seconds.is_integer() else seconds
