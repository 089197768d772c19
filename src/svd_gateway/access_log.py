"""The access log without secrets: uvicorn logs each request's path, and two kinds of path carry one (a signed
output link, good for up to --link-seconds; fal's `fal_webhook` query, a receiver's URL that may hold a token)."""

from __future__ import annotations

import logging
import re

SECRETS = (
    (re.compile(r"(/v1/outputs/[^_/?]+_\d+_)[^./?]+"), r"\1…"),
    (re.compile(r"([?&]fal_webhook=)[^&]*"), r"\1…"),
)
"""What of a path is blanked: a link's signature (its job id and expiry stay, for reading the log), the webhook."""


class RedactedPaths(logging.Filter):
    """Blanks the secrets of the path in uvicorn's access records (args: client, method, path, version, status)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and len(record.args) == 5 and isinstance(record.args[2], str):
            path = record.args[2]
            for pattern, replacement in SECRETS:
                path = pattern.sub(replacement, path)
            record.args = (*record.args[:2], path, *record.args[3:])
        return True


def redact_access_log() -> None:
    """Install the filter on uvicorn's access logger, once per process."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(existing, RedactedPaths) for existing in access.filters):
        access.addFilter(RedactedPaths())
