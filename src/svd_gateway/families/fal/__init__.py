"""fal's queue API for its hosted SVD apps (fal-ai/fast-svd, fal-ai/fast-svd-lcm, fal-ai/stable-video), as the
official `fal-client` calls it: submit, subscribe, status with logs, result and cancel."""

from .. import Family
from .errors import fal_error
from .router import router

FAMILY = Family("fal", (router,), render_error=fal_error, prefixes=("/fal-ai/",))
