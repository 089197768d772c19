"""Nebius Forge's model catalogue: POST /v1/inference/{slug}, and the runtime routes its scripts call
(inference-routes, run-estimate, reliability, model-family status, start and stop)."""

from .. import Family
from .router import router

FAMILY = Family("forge", (router,))
