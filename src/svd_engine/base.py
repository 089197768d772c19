"""What every engine shares: one pipeline on one device, released when idle and restored on demand.

SVDEngine and TextImageEngine subclass it; svd_engine.keep_warm drives `release`/`restore` after the
deployment's idle time. `offload` moves the weights to host memory and back in place (compiled code
stays valid); `reload` drops the pipeline and loads it again (`_reload`).
"""

from __future__ import annotations

import threading
import time

from . import residency


class ResidentEngine:
    def __init__(self, pipeline, config):
        self.pipeline = pipeline
        self.config = config
        self.device = pipeline.device
        self.released = False
        """True between `release` and `restore`: no weight is on the device."""
        self._device_lock = threading.RLock()
        """Held by pipeline calls and by release/restore, so a release never runs under a request."""

    def describe(self) -> str:
        """How the pipeline runs, for the server log ('' when there is nothing to say)."""
        return ""

    @property
    def device_name(self) -> str:
        """The GPU's model name (`NVIDIA L40S`), or `cpu`."""
        return residency.device_name(self.device)

    @property
    def release_mechanism(self) -> str:
        return residency.release_mechanism(self.config.release_mechanism, self.device)

    def release(self) -> float:
        """Free the device memory the weights and caches hold; waits for a running pipeline call.
        Returns the seconds it took. The next request (or `restore`) brings the weights back."""
        with self._device_lock:
            if self.released:
                return 0.0
            started = time.perf_counter()
            if self.release_mechanism == "offload":
                residency.offload(self.pipeline, self.device)
            else:
                self.pipeline = None
            residency.release_memory(self.device)
            self.released = True
            return time.perf_counter() - started

    def restore(self) -> float | None:
        """Put the weights back on the device after `release`; returns the seconds it took, None when
        they were there already."""
        with self._device_lock:
            if not self.released:
                return None
            started = time.perf_counter()
            if self.release_mechanism == "offload":
                residency.bring_back(self.pipeline, self.device)
                self.released = False
            else:
                self._reload()
            return time.perf_counter() - started

    def _reload(self) -> None:
        """Load the pipeline again from the configured source and mark it restored."""
        raise NotImplementedError

    def weight_bytes_on_device(self) -> int:
        """Bytes of parameters and buffers the pipeline's modules hold on the serving device."""
        return residency.bytes_on(self.pipeline, self.device)

    def close(self) -> None:
        """Drop the pipeline and return its memory (Triton's finalize)."""
        with self._device_lock:
            self.pipeline = None
            residency.release_memory(self.device)
