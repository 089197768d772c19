"""Replicate's predictions API, as the official `replicate` client uses it: asynchronous predictions with logs,
webhooks and cancellation (its file uploads are the files family's)."""

from .. import Family
from .render import as_prediction, progress_line
from .router import router

FAMILY = Family(
    "replicate",
    (router,),
    prefixes=("/v1/predictions", "/v1/webhooks"),
    webhook_payloads={"predictions": as_prediction},
    progress_lines={"predictions": progress_line},
)
