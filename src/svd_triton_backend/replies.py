"""Responses for one execute(): exactly one final reply per request, progress before it when decoupled."""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from svd_contract import INTERNAL_MESSAGE, Progress

from .compat import chain_cancel_marker


class Replies:
    """Responses for one execute(): returned as a list, or sent one by one when decoupled.

    Decoupled models may send PROGRESS responses first. Every request gets exactly one final reply:
    a second one is refused, and `finish` answers any request still without one with INTERNAL.
    """

    def __init__(self, requests: Sequence[pb_utils.InferenceRequest], decoupled: bool) -> None:
        self.requests = requests
        self.decoupled = decoupled
        self.wanted: list[set[str]] = [set(request.requested_output_names()) for request in requests]
        self.senders: list[pb_utils.InferenceResponseSender] | None = (
            [request.get_response_sender() for request in requests] if decoupled else None
        )
        """One response sender per request when decoupled, else None."""
        self.responses: list[pb_utils.InferenceResponse | None] = [None] * len(requests)
        self.cancel_markers: list[Path | None] = [chain_cancel_marker(request) for request in requests]
        self.answered = [False] * len(requests)
        self._lock = threading.Lock()

    def request_id(self, position: int) -> str | int:
        return self.requests[position].request_id() or position

    def is_cancelled(self, position: int) -> bool:
        marker = self.cancel_markers[position]
        return (self._sender(position) if self.decoupled else self.requests[position]).is_cancelled() or (
            marker is not None and marker.exists()
        )

    def progress(self, positions: Sequence[int], update: Progress) -> None:
        """A PROGRESS response with `update` (an svd_contract Progress) to each listed request that asked for it."""
        self.send_progress(positions, update.encode())

    def send_progress(self, positions: Sequence[int], payload: bytes) -> None:
        """A PROGRESS response holding `payload` (an encoded Progress, as a stage sent it) to each listed
        request that asked for it (decoupled models only)."""
        if not self.decoupled:
            return
        tensor = pb_utils.Tensor("PROGRESS", np.array([[payload]], dtype=np.object_))
        for position in positions:
            with self._lock:
                if "PROGRESS" in self.wanted[position] and not self.answered[position]:
                    self._sender(position).send(pb_utils.InferenceResponse(output_tensors=[tensor]))

    def send(self, position: int, tensors: list[pb_utils.Tensor]) -> None:
        self._reply(position, pb_utils.InferenceResponse(output_tensors=tensors))

    def error(self, position: int, message: str, code: Any) -> None:
        """An error reply; `code` is a pb_utils.TritonError code (TritonError.INVALID_ARG, ...)."""
        self._reply(position, pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code)))

    def _sender(self, position: int) -> pb_utils.InferenceResponseSender:
        """The response sender of a decoupled model's request."""
        assert self.senders is not None, "a decoupled model's Replies has senders"
        return self.senders[position]

    def _reply(self, position: int, response: pb_utils.InferenceResponse) -> None:
        with self._lock:
            if self.answered[position]:
                raise RuntimeError(f"request {position} already has its final response")
            if self.decoupled:
                self._sender(position).send(response, flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            else:
                self.responses[position] = response
            self.answered[position] = True

    def finish(self) -> list[pb_utils.InferenceResponse | None] | None:
        """The responses to return from execute(): None when decoupled (all were sent)."""
        if self.decoupled:
            return None
        for position, answered in enumerate(self.answered):
            if not answered:
                self.error(position, INTERNAL_MESSAGE, pb_utils.TritonError.INTERNAL)
        return self.responses


def done(outcome: Any) -> concurrent.futures.Future[Any]:
    """A Future already holding `outcome`: a result, or the exception a request ended with."""
    future: concurrent.futures.Future[Any] = concurrent.futures.Future()
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
    return future
