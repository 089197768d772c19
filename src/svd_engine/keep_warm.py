"""Keep-warm: an idle engine gives its device memory back, and the next request brings it back.

Hosted endpoints (Forge: "stays warm on its GPU for about 15 minutes, then frees the GPU") and
self-hosted servers sharing one GPU want the same: memory back when idle, never a failed request.
`KeepWarm` wraps an SVDEngine: `serving()` around every generation (it restores a released engine
first and blocks releases while any request runs), a timer thread releasing after `seconds` idle,
and prewarm / pin / release for clients that want to steer it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)
STATES = ("warm", "cold", "starting")
NEVER = -1
TICK_SECONDS = 1.0
"""How often the timer wakes while warm: the release lands at most this late, and the seconds-left
gauge is this fresh."""


class KeepWarm:
    def __init__(self, engine, seconds: float, on_change: Callable[[dict[str, Any]], Any] | None = None):
        """`seconds` idle before release: NEVER (-1) never releases, 0 releases right after each request.
        `on_change` gets `state()` at every transition and timer tick (the model's metrics)."""
        if seconds < 0 and seconds != NEVER:
            raise ValueError(f"keep_warm_seconds={seconds} must be -1 (never release), 0 or more")
        self.engine = engine
        self.seconds = seconds
        self.on_change = on_change
        self.pinned = False
        self.busy = 0
        self.cold_starts = 0
        self.last_cold_start_seconds: float | None = None
        self._status = "cold" if engine.released else "warm"
        self._since = time.time()
        self._idle_since = time.monotonic()
        self._release_asked = False
        self._lock = threading.Condition()
        self._stopped = False
        self._timer = None
        if seconds > 0:
            self._timer = threading.Thread(target=self._run_timer, name="svd-keep-warm", daemon=True)
            self._timer.start()
        self._changed()

    def state(self) -> dict[str, Any]:
        """What clients see: warm / cold / starting, since when, seconds of keep-warm left, last cold start."""
        with self._lock:
            left = None
            if self._status == "warm" and not self.pinned and self.seconds != NEVER:
                left = (
                    0.0
                    if self.busy == 0 and self.seconds == 0
                    else (
                        float(self.seconds)
                        if self.busy
                        else max(0.0, self.seconds - (time.monotonic() - self._idle_since))
                    )
                )
            return {
                "state": self._status,
                "since": round(self._since, 3),
                "keep_warm_seconds": self.seconds,
                "keep_warm_left_seconds": None if left is None else round(left, 3),
                "pinned": self.pinned,
                "busy": self.busy,
                "cold_starts": self.cold_starts,
                "last_cold_start_seconds": self.last_cold_start_seconds,
                "release_mechanism": self.engine.release_mechanism,
                "device": str(self.engine.device),
                "device_name": self.engine.device_name,
                "weight_bytes_on_device": self.engine.weight_bytes_on_device(),
            }

    @contextlib.contextmanager
    def serving(self):
        """Around one execution's generations: warm first (paying the cold start when released), and
        no release until it and every other running one are done. Yields whether it was a cold start."""
        with self._lock:
            self.busy += 1
        try:
            yield self.warm_up() is not None
        finally:
            with self._lock:
                self.busy -= 1
                self._idle_since = time.monotonic()
                self._lock.notify_all()
            if self.seconds == 0 or self._release_asked:
                self._release_if_idle()
            self._changed()

    def warm_up(self) -> float | None:
        """Bring the weights back if released (a prewarm); the cold start's seconds, None when warm already."""
        with self._lock:
            if self._status == "cold":
                self._set("starting")
        seconds = self.engine.restore()
        with self._lock:
            if seconds is not None:
                self.cold_starts += 1
                self.last_cold_start_seconds = round(seconds, 3)
                log.info(
                    "cold start: weights back on %s in %.2f s (%s)",
                    self.engine.device,
                    seconds,
                    self.engine.release_mechanism,
                )
            if self._status != "warm":
                self._set("warm")
            self._idle_since = time.monotonic()
        self._changed()
        return seconds

    def pin(self, pinned: bool = True) -> None:
        """Pinned: warm until released, whatever the keep-warm window (Forge's run_until_stopped)."""
        with self._lock:
            self.pinned = pinned
            self._idle_since = time.monotonic()
        self._changed()

    def release(self) -> None:
        """Unpin and free the device now, or as soon as the requests running now are done."""
        with self._lock:
            self.pinned = False
            self._release_asked = True
        self._release_if_idle()
        self._changed()

    def close(self) -> None:
        with self._lock:
            self._stopped = True
            self._lock.notify_all()
        if self._timer is not None:
            self._timer.join(timeout=5)

    def _release_if_idle(self, min_idle: float = 0.0) -> None:
        with self._lock:  # held while releasing: a request arriving now waits, then restores
            if self.busy or self.pinned or self._status != "warm" or time.monotonic() - self._idle_since < min_idle:
                return
            seconds = self.engine.release()
            self._release_asked = False
            self._set("cold")
            log.info(
                "released the weights on %s after %.0f s idle (%.2f s)",
                self.engine.device,
                time.monotonic() - self._idle_since,
                seconds,
            )

    def _run_timer(self) -> None:
        while True:
            with self._lock:
                if self._stopped:
                    return
                self._lock.wait(TICK_SECONDS)
                due = (
                    self._status == "warm"
                    and not self.busy
                    and not self.pinned
                    and time.monotonic() - self._idle_since >= self.seconds
                )
            if due:
                self._release_if_idle(min_idle=self.seconds)
            self._changed()

    def _set(self, status: str) -> None:
        self._status = status
        self._since = time.time()

    def _changed(self) -> None:
        if self.on_change is not None:
            try:
                self.on_change(self.state())
            except Exception:
                log.exception("keep-warm state hook failed")
