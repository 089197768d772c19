"""Stability AI's image-to-video API (v2beta): POST /v2beta/image-to-video, then poll its result."""

from .. import Family
from .errors import stability_error
from .router import router

FAMILY = Family("stability", (router,), render_error=stability_error, prefixes=("/v2beta/",))
