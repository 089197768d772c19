"""OpenAI's Videos API (/v1/videos), as the official `openai` SDK calls it."""

from .. import Family
from .errors import openai_error
from .router import router

FAMILY = Family("openai_videos", (router,), render_error=openai_error, prefixes=("/v1/videos",))
