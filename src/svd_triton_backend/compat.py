"""Workarounds for defects of the Triton releases we run, each naming the release it is for.

The tests run Triton 2.51 (the nvidia-pytriton 0.7.0 wheel); the image runs NGC 26.08 (Triton 2.72,
python_backend r26.08). Each workaround below is needed by 2.51 and kept while the tests' Triton needs
it; what a newer release fixes is said beside it, so it can go once the tests move on.

- Final replies are sent from the execute thread (svd_triton_backend.skeleton, chain): in 2.51, final
  responses sent from other threads aborted tritonserver under concurrent load (std::bad_alloc in
  default mode; boost::interprocess::lock_exception or SIGSEGV in libtriton_python.so with decoupled
  batching; tests/integration/test_streaming.py sends that burst). Still needed on 26.08: no release
  note says it is fixed, and triton-inference-server/server#8882 (the same lock_exception on 2.55,
  reproduced on 25.02 in September 2026) is open.
- BLS cannot cancel a request it sent before python_backend r25.04 (the response iterator's cancel(),
  python_backend#398): the chain sends each stage a token and creates a marker file once its own client
  has gone; the stage's Replies.is_cancelled sees it (`chain_cancel_marker`, `cancel_stage`). On 26.08
  `iterator.cancel()` would do, once the tests' Triton has it.
- BLS hands every stage error back with code INTERNAL before python_backend r25.04: the code is read
  back from the message the stage wrote (`stage_error_code`). From r25.04 a stage's reply keeps its
  code (used first, below); an error raised while the BLS request is submitted (a full queue) still
  arrives as text only, so `QUEUE_REJECTIONS` stays on 26.08 too.
"""

from __future__ import annotations

import json
import re
import tempfile
import threading
from collections.abc import Container
from pathlib import Path

import triton_python_backend_utils as pb_utils

from svd_contract import ERROR_CODES

CHAIN_CANCEL_FOLDER = Path(tempfile.gettempdir()) / "svd-triton-cancelled"
CHAIN_CANCEL_PARAMETER = "chain_cancel_token"
CHAIN_TOKEN = re.compile(r"[0-9a-f]{32}")
MARKER_SECONDS = 600
"""A cancelled stage's marker is removed this long after: by then the stage has long seen it (it checks
at every step), and markers do not pile up in the temporary folder."""
QUEUE_REJECTIONS = ("maximum queue size", "timeout expired")
"""Triton's own UNAVAILABLE messages (a full queue, a queue deadline)."""


def chain_cancel_marker(request: pb_utils.InferenceRequest) -> Path | None:
    """The file whose existence cancels `request` when a chaining model sent it with a token; else None."""
    try:
        token = json.loads(request.parameters() or "{}").get(CHAIN_CANCEL_PARAMETER)
    except (ValueError, AttributeError):
        return None
    return CHAIN_CANCEL_FOLDER / token if isinstance(token, str) and CHAIN_TOKEN.fullmatch(token) else None


def cancel_stage(marker: Path) -> None:
    """Create the stage's marker (it stops at its next step) and remove it MARKER_SECONDS later."""
    CHAIN_CANCEL_FOLDER.mkdir(exist_ok=True)
    marker.touch()
    cleanup = threading.Timer(MARKER_SECONDS, marker.unlink, kwargs={"missing_ok": True})
    cleanup.daemon = True
    cleanup.start()


def stage_error_code(error: pb_utils.TritonError, input_names: Container[str]) -> str:
    """The TritonError code name of a stage's error reply: its own where the release keeps it, else read
    back from the message svd_triton_backend.errors wrote (INVALID_ARG messages start with an input's
    name, the others with their code's prefix); Triton's queue rejections are UNAVAILABLE."""
    codes = {
        getattr(pb_utils.TritonError, name): name
        for name in ("INVALID_ARG", "CANCELLED", "UNAVAILABLE", "NOT_FOUND", "UNSUPPORTED", "UNKNOWN")
    }
    if error.code() in codes:
        return codes[error.code()]
    message = error.message()
    if message.split(":", 1)[0] in input_names:
        return "INVALID_ARG"
    for code in ERROR_CODES.values():
        if code.prefix and message.startswith(code.prefix):
            return code.name
    if any(text in message for text in QUEUE_REJECTIONS):
        return "UNAVAILABLE"
    return "INTERNAL"
