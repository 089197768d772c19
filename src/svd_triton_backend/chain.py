"""Models that chain other models of the repository with BLS (text_to_video), no engine of their own.

Each request's chain runs on its own pool thread, so the stages can batch concurrent requests; every
final reply is sent (decoupled) or returned from the execute thread once all chains are done
(svd_triton_backend.compat). A stage call watches the request's own cancellation while it waits and
stops the stage through its chain-cancel marker.
"""

from __future__ import annotations

import concurrent.futures
import queue
import secrets
import threading
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import triton_python_backend_utils as pb_utils

from svd_contract import tensors
from svd_engine.errors import GenerationCancelled

from .compat import CHAIN_CANCEL_FOLDER, CHAIN_CANCEL_PARAMETER, cancel_stage, stage_error_code
from .errors import answer_error
from .model_config import add_parameter_inputs
from .replies import Replies
from .skeleton import open_model

CANCEL_POLL_SECONDS = 0.1
STAGE_INPUTS = {
    "IMAGE",
    "IMAGE_BYTES",
    *(name for model in (tensors.SVD_MODEL, tensors.TEXT_TO_IMAGE_MODEL) for name in tensors.inputs(model)),
}
"""Every input name of the stages: an error message that starts with one is INVALID_ARG."""


class StageFailed(Exception):
    """A stage answered with an error: its Triton code and its message, renamed to this model's inputs."""

    def __init__(self, message: str, code: Any) -> None:
        """`code`: a pb_utils.TritonError code."""
        super().__init__(message)
        self.code = code


class ChainModel:
    """Subclasses set MODEL and implement `chain(replies, position)` → the request's output tensors."""

    MODEL: ClassVar[str | None] = None
    model_name: str
    decoupled: bool

    @classmethod
    def auto_complete_config(cls, auto_complete_model_config: pb_utils.ModelConfig) -> pb_utils.ModelConfig:
        assert cls.MODEL is not None, f"{cls.__name__} names its MODEL"
        return add_parameter_inputs(auto_complete_model_config, cls.MODEL)

    def initialize(self, args: Mapping[str, str]) -> None:
        model_config = open_model(self, args)
        self.pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=2 * model_config.get("max_batch_size", 1), thread_name_prefix=self.model_name
        )

    def execute(self, requests: list[pb_utils.InferenceRequest]) -> list[pb_utils.InferenceResponse | None] | None:
        replies = Replies(requests, self.decoupled)
        chains = [self.pool.submit(self.chain, replies, position) for position in range(len(requests))]
        concurrent.futures.wait(chains)
        for position, chain in enumerate(chains):
            self.answer(replies, position, chain)
        return replies.finish()

    def chain(self, replies: Replies, position: int) -> list[pb_utils.Tensor]:
        raise NotImplementedError

    def answer(self, replies: Replies, position: int, chain: concurrent.futures.Future[list[pb_utils.Tensor]]) -> None:
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

    def call(
        self,
        replies: Replies,
        position: int,
        model: str,
        inputs: Mapping[str, Any],
        outputs: list[str],
        on_response: Callable[[pb_utils.InferenceResponse], object],
        renamed: Mapping[str, str] | None = None,
    ) -> None:
        """Send `inputs` to `model` and give each response that carries outputs to `on_response` as it
        arrives; an error response raises StageFailed with this model's input names (`renamed`: ours → theirs).

        The stage's responses are read on a helper thread while this one watches for this request's
        cancellation. Once the client has gone, the stage's chain-cancel marker is created (it stops at
        its next step) and GenerationCancelled is raised at once: with Triton 2.51 the stage's last
        response never reached this iterator once this model's own request was cancelled, so the chain
        does not wait for it."""
        if replies.is_cancelled(position):
            raise GenerationCancelled(f"the client cancelled the request before {model}")
        token = secrets.token_hex(16)
        request = pb_utils.InferenceRequest(
            model_name=model,
            inputs=[pb_utils.Tensor(name, value) for name, value in inputs.items()],
            requested_output_names=outputs,
            parameters={CHAIN_CANCEL_PARAMETER: token},
        )
        arrived: queue.Queue[pb_utils.InferenceResponse | Exception | None] = queue.Queue()
        threading.Thread(
            target=read_responses, args=(request, arrived), daemon=True, name=f"{self.model_name}-{model}"
        ).start()
        while True:
            try:
                response = arrived.get(timeout=CANCEL_POLL_SECONDS)
            except queue.Empty:
                if replies.is_cancelled(position):
                    cancel_stage(CHAIN_CANCEL_FOLDER / token)
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

    def finalize(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def read_responses(
    request: pb_utils.InferenceRequest, arrived: queue.Queue[pb_utils.InferenceResponse | Exception | None]
) -> None:
    """Put each response of `request` (a BLS call) on `arrived`, then None; an exception instead when it fails."""
    try:
        for response in request.exec(decoupled=True):
            arrived.put(response)
        arrived.put(None)
    except Exception as error:
        arrived.put(error)


def stage_error(error: pb_utils.TritonError, renamed: Mapping[str, str]) -> StageFailed:
    """A stage's error as this model's: its code (compat.stage_error_code), its input names mapped back to ours."""
    message = error.message()
    field, _, detail = message.partition(":")
    code = stage_error_code(error, STAGE_INPUTS)
    theirs_to_ours = {theirs: ours for ours, theirs in renamed.items()}
    if code == "INVALID_ARG" and field in theirs_to_ours:
        ours = theirs_to_ours[field]
        message = f"{ours}:{detail.replace(tensors.parameter_name(field), tensors.parameter_name(ours))}"
    return StageFailed(message, getattr(pb_utils.TritonError, code))
