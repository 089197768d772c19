"""text_to_video: a prompt in, a video out, by chaining two models of this repository with BLS.

text_to_image makes the first frame from PROMPT (and NEGATIVE_PROMPT, IMAGE_NUM_INFERENCE_STEPS,
IMAGE_GUIDANCE_SCALE, WIDTH, HEIGHT), then svd_xt animates it with every other input passed through
unchanged. The input list is svd_engine's PARAMETERS, read at load and checked against config.pbtxt,
so an input added to svd_xt must be declared here too (the load fails naming it until it is).

One SEED reproduces the whole video: both stages get the same seed (picked at random when absent
and returned in SEED_USED). IMAGE returns the generated first frame. With a decoupled configuration
(stream, cpu_stream) the stream gets `text-to-image` PROGRESS responses, then svd_xt's own, then
the final one. A request whose client has gone is cancelled in the stage it is in and the next stage
is never started: Triton 2.51's BLS cannot cancel a request it sent, so each stage gets a token and
the chain creates its marker file (svd_engine.triton_backend.CHAIN_CANCEL_FOLDER), which the stage's
Replies.is_cancelled sees at its next step. Errors of either stage keep their status and name this
model's input (2.51's BLS hands every stage error back as INTERNAL: the status is read back from the
message, which ERROR_REPLIES wrote).
"""
import concurrent.futures
import json
import queue
import secrets
import threading
import time

import numpy as np
import triton_python_backend_utils as pb_utils

from svd_engine import PARAMETERS, GenerationCancelled
from svd_engine.text_image import PARAMETERS as IMAGE_PARAMETERS
from svd_engine.triton_backend import (CHAIN_CANCEL_FOLDER, CHAIN_CANCEL_PARAMETER, ERROR_REPLIES, TYPES_FOR_KIND,
                                       Replies, answer_error, check_declared, forward_engine_logs, utf8_text_files)

IMAGE_MODEL, VIDEO_MODEL = "text_to_image", "svd_xt"
PROMPT_INPUTS = ("PROMPT", "NEGATIVE_PROMPT")
IMAGE_ONLY = {"IMAGE_NUM_INFERENCE_STEPS": "NUM_INFERENCE_STEPS", "IMAGE_GUIDANCE_SCALE": "GUIDANCE_SCALE"}
"""This model's inputs for text_to_image alone → their name there."""
SHARED = ("WIDTH", "HEIGHT")
"""svd_xt inputs that text_to_image gets too, so the first frame has the video's size (SEED is set apart)."""
OUTPUTS = {"VIDEO": "TYPE_STRING", "SEED_USED": "TYPE_INT64", "IMAGE": "TYPE_UINT8", "PROGRESS": "TYPE_STRING"}
CANCEL_POLL_SECONDS = 0.1
MARKER_SECONDS = 600
"""A cancelled stage's marker is removed this long after: by then the stage has long seen it (it checks
at every step), and markers do not pile up in the temporary folder."""
STAGE_INPUTS = {"IMAGE", "IMAGE_BYTES", *PROMPT_INPUTS, *(name.upper() for name in (*PARAMETERS, *IMAGE_PARAMETERS))}
"""Every input name of text_to_image and svd_xt: an error message that starts with one is INVALID_ARG."""


def expected_inputs():
    """Every input and its allowed types: the prompts, the text-to-image knobs, and svd_xt's inputs but the image."""
    video = {name.upper(): TYPES_FOR_KIND[p.kind] for name, p in PARAMETERS.items()}
    image = {name: TYPES_FOR_KIND[IMAGE_PARAMETERS[target.lower()].kind] for name, target in IMAGE_ONLY.items()}
    return {**{name: "TYPE_STRING" for name in PROMPT_INPUTS}, **image, **video}


class StageFailed(Exception):
    """A stage answered with an error: its Triton code and its message, renamed to this model's inputs."""

    def __init__(self, message, code):
        super().__init__(message)
        self.code = code


class TritonPythonModel:
    def initialize(self, args):
        self.model_name = args["model_name"]
        utf8_text_files()
        forward_engine_logs()
        model_config = json.loads(args["model_config"])
        check_declared(model_config, self.model_name, expected_inputs(), OUTPUTS)
        self.decoupled = pb_utils.using_decoupled_model_transaction_policy(model_config)
        # Each request's chain waits on other models: run them side by side so text_to_image and
        # svd_xt can batch concurrent requests.
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=2 * model_config.get("max_batch_size", 1),
                                                          thread_name_prefix="text_to_video")

    def execute(self, requests):
        """Each request's chain runs on its own pool thread (so the stages can batch them); every final
        reply is sent (decoupled) or returned from this thread once all are done: in Triton 2.51, final
        responses sent from other threads aborted tritonserver under concurrent load (svd_xt's model.py)."""
        replies = Replies(requests, self.decoupled)
        chains = [self.pool.submit(self.chain, replies, position) for position in range(len(requests))]
        concurrent.futures.wait(chains)
        for position, chain in enumerate(chains):
            self.answer(replies, position, chain)
        return replies.finish()

    def answer(self, replies, position, chain):
        """Send one request's final reply: its outputs, or the error its chain ended with; never raises."""
        try:
            replies.send(position, chain.result())
        except StageFailed as error:
            try:
                replies.error(position, str(error), error.code)
            except Exception as late:
                answer_error(self.model_name, replies, position, late)
        except Exception as error:
            answer_error(self.model_name, replies, position, error)

    def chain(self, replies, position):
        request = replies.requests[position]
        started = time.monotonic()
        inputs = {name: tensor.as_numpy() for name in expected_inputs()
                  if (tensor := pb_utils.get_input_tensor_by_name(request, name)) is not None}
        seed = int(inputs["SEED"].reshape(-1)[0]) if "SEED" in inputs else secrets.randbits(63)
        seed_tensor = np.array([[seed]], dtype=np.int64)

        def progress(phase, step, total):
            replies.send_progress([position], json.dumps({"phase": phase, "step": step, "total": total,
                                                          "elapsed": round(time.monotonic() - started, 3),
                                                          "segment": 1, "segments": 1}).encode())

        image_inputs = {**{name: inputs[name] for name in (*PROMPT_INPUTS, *SHARED) if name in inputs},
                        **{target: inputs[name] for name, target in IMAGE_ONLY.items() if name in inputs},
                        "SEED": seed_tensor}
        progress("text-to-image", 0, 1)
        images = []
        self.call(replies, position, IMAGE_MODEL, image_inputs, ["IMAGE"], renamed=IMAGE_ONLY,
                  on_response=lambda response: images.append(pb_utils.get_output_tensor_by_name(response, "IMAGE")))
        image = images[0].as_numpy()
        progress("text-to-image", 1, 1)

        video_inputs = {**{name: inputs[name] for name in (p.upper() for p in PARAMETERS) if name in inputs},
                        "SEED": seed_tensor, "IMAGE": image}
        wanted = ["VIDEO", "SEED_USED"] + (["PROGRESS"] if self.decoupled else [])
        final = None

        def forward(response):
            nonlocal final
            if (tensor := pb_utils.get_output_tensor_by_name(response, "VIDEO")) is not None:
                final = tensor.as_numpy()
            elif (tensor := pb_utils.get_output_tensor_by_name(response, "PROGRESS")) is not None:
                replies.send_progress([position], tensor.as_numpy().reshape(-1)[0])

        self.call(replies, position, VIDEO_MODEL, video_inputs, wanted, on_response=forward)
        if final is None:
            raise RuntimeError(f"{VIDEO_MODEL} answered without a VIDEO")
        return [pb_utils.Tensor(name, array) for name, array in
                (("VIDEO", final), ("SEED_USED", seed_tensor), ("IMAGE", image)) if name in replies.wanted[position]]

    def call(self, replies, position, model, inputs, outputs, on_response, renamed=None):
        """Send `inputs` to `model` and give each response that carries outputs to `on_response` as it
        arrives; an error response raises StageFailed with this model's input names.

        The stage's responses are read on a helper thread while this one watches for this request's
        cancellation. Once the client has gone, the stage's chain-cancel marker is created (it stops at
        its next step) and GenerationCancelled is raised at once: with Triton 2.51 the stage's last
        response never reached this iterator once this model's own request was cancelled (seen in
        tests/test_text_to_video.py), so the chain does not wait for it."""
        if replies.is_cancelled(position):
            raise GenerationCancelled(f"the client cancelled the request before {model}")
        token = secrets.token_hex(16)
        marker = CHAIN_CANCEL_FOLDER / token
        request = pb_utils.InferenceRequest(
            model_name=model, inputs=[pb_utils.Tensor(name, value) for name, value in inputs.items()],
            requested_output_names=outputs, parameters={CHAIN_CANCEL_PARAMETER: token})
        arrived = queue.Queue()
        threading.Thread(target=read_responses, args=(request, arrived), daemon=True,
                         name=f"text_to_video-{model}").start()
        while True:
            try:
                response = arrived.get(timeout=CANCEL_POLL_SECONDS)
            except queue.Empty:
                if replies.is_cancelled(position):
                    cancel_stage(marker)
                    raise GenerationCancelled(f"the client cancelled the request during {model}") from None
                continue
            if response is None:
                return
            if isinstance(response, Exception):
                raise response
            if response.has_error():
                raise stage_error(response.error(), renamed or {})
            if response.output_tensors():
                on_response(response)

    def finalize(self):
        self.pool.shutdown(wait=True, cancel_futures=True)


def cancel_stage(marker):
    """Create the stage's marker (it stops at its next step) and remove it MARKER_SECONDS later."""
    CHAIN_CANCEL_FOLDER.mkdir(exist_ok=True)
    marker.touch()
    cleanup = threading.Timer(MARKER_SECONDS, marker.unlink, kwargs={"missing_ok": True})
    cleanup.daemon = True
    cleanup.start()


def read_responses(request, arrived):
    """Put each response of `request` (a BLS call) on `arrived`, then None; an exception instead when it fails."""
    try:
        for response in request.exec(decoupled=True):
            arrived.put(response)
        arrived.put(None)
    except Exception as error:
        arrived.put(error)


def reply_code(error, input_names):
    """The TritonError code name of a stage's error reply.

    Triton 2.51's BLS hands every stage error back with code INTERNAL (python_backend keeps the code
    from r25.04 on; then it is used as is), so the code is read back from the message that
    ERROR_REPLIES made: INVALID_ARG messages start with the input's name, the others with their
    prefix; Triton's own queue rejections are UNAVAILABLE."""
    codes = {getattr(pb_utils.TritonError, name): name for name in ("INVALID_ARG", "CANCELLED", "UNAVAILABLE",
                                                                    "NOT_FOUND", "UNSUPPORTED", "UNKNOWN")}
    if error.code() in codes:
        return codes[error.code()]
    message = error.message()
    if message.split(":", 1)[0] in input_names:
        return "INVALID_ARG"
    for _, name, _, prefix in ERROR_REPLIES:
        if prefix and message.startswith(prefix):
            return name
    if "maximum queue size" in message or "timeout expired" in message:
        return "UNAVAILABLE"
    return "INTERNAL"


def stage_error(error, renamed):
    """A stage's error as this model's: its code (reply_code), its input names mapped back to ours."""
    message = error.message()
    field, _, detail = message.partition(":")
    code = reply_code(error, STAGE_INPUTS)
    theirs_to_ours = {theirs: ours for ours, theirs in renamed.items()}
    if code == "INVALID_ARG" and field in theirs_to_ours:
        ours = theirs_to_ours[field]
        message = f"{ours}:{detail.replace(field.lower(), ours.lower())}"
    return StageFailed(message, getattr(pb_utils.TritonError, code))
