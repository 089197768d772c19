"""OpenAI-style video generations (VoltageGPU's sample): POST /v1/video/generations."""

from .. import Family
from .router import router

FAMILY = Family("openai_style", (router,))
