"""The PROGRESS message of a streaming model: written by the models, read by the clients, with one codec."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Progress:
    """Where a request is: one PROGRESS response of a decoupled model, before its final reply."""

    phase: str
    """text-to-image (text_to_video only), then preparing (CLIP + VAE encode), denoising, decoding (VAE) or
    encoding (the video file)."""
    step: int
    """Denoising steps done so far (0 before the first)."""
    total: int
    elapsed: float
    """Seconds since the request's batch started (text_to_video: since the chain started)."""
    segment: int = 1
    """Which chained clip is being generated (1-based), of `segments`."""
    segments: int = 1

    def encode(self) -> bytes:
        """The PROGRESS tensor's payload: JSON of the fields above, `elapsed` to the millisecond."""
        message = {field.name: getattr(self, field.name) for field in fields(Progress)}
        return json.dumps({**message, "elapsed": round(self.elapsed, 3)}).encode()

    @classmethod
    def decode(cls, payload: bytes | str) -> Progress:
        """The message of a PROGRESS payload; names it does not know are skipped, so a server may add some."""
        try:
            message = json.loads(payload)
            return cls(**{field.name: message[field.name] for field in fields(Progress) if field.name in message})
        except (TypeError, ValueError) as error:
            raise ValueError(f"not a PROGRESS message ({error}): {payload[:100]!r}") from None
