"""Responses for one execute(): exactly one final reply per request, progress before it when decoupled."""

import concurrent.futures
import threading

import numpy as np
import triton_python_backend_utils as pb_utils

from svd_contract import INTERNAL_MESSAGE

from .compat import chain_cancel_marker


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
        return (self.senders[position] if self.decoupled else self.requests[position]).is_cancelled() or (
            marker is not None and marker.exists()
        )

    def progress(self, positions, update):
        """A PROGRESS response with `update` (an svd_contract Progress) to each listed request that asked for it."""
        self.send_progress(positions, update.encode())

    def send_progress(self, positions, payload):
        """A PROGRESS response holding `payload` (an encoded Progress, as a stage sent it) to each listed
        request that asked for it (decoupled models only)."""
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


def done(outcome):
    """A Future already holding `outcome`: a result, or the exception a request ended with."""
    future = concurrent.futures.Future()
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
    return future
