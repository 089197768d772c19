"""What the gateway needs of the model server: the seam between the job runner and data plane above and Triton
below. `svd_triton.AsyncSVDClient` (gRPC) is the one the lifespan creates; tests hand `create_app` a fake with the
same methods (tests/support/fake_model.py) to run the gateway without Triton."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from svd_contract import Deployment
from svd_triton.client import ProgressUpdate, VideoResult


class ModelClient(Protocol):
    async def generate(
        self,
        image: Any = None,
        *,
        prompt: str | None = None,
        frames: bool = False,
        on_progress: Callable[[ProgressUpdate], Any] | None = None,
        **params: Any,
    ) -> VideoResult:
        """A video from an image (or from a prompt, text-to-video), progress passed to `on_progress` as it
        comes; cancelling the awaiting task cancels the generation."""
        ...

    async def control(self, action: str) -> dict[str, Any]:
        """Keep-warm: prewarm, pin, release or state; the model's keep-warm state."""
        ...

    async def deployment(self) -> Deployment:
        """The model's request defaults and limits, read from its configuration."""
        ...

    async def model_config(self) -> dict[str, Any]:
        """The model's configuration as Triton reports it (its `parameters` hold the deployment's limits)."""
        ...

    async def ready(self) -> bool: ...

    async def close(self) -> None: ...
