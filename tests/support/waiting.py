"""Waiting on a condition with a bound that only catches a hung run (never a fixed sleep)."""
from __future__ import annotations

import time


def until(condition, what: str, seconds: float = 180, interval: float = 0.1):
    """Poll `condition` until it returns something truthy, and return that; fail naming `what` if it never does."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")
