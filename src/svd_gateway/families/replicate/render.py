"""Jobs as Replicate's prediction JSON: its statuses and its `logs` text are what the replicate client reads."""

from __future__ import annotations

from typing import Any

from svd_triton import ProgressUpdate

from ...jobs import isoformat, output_url
from ...store import Job
from ...webhooks import without_secrets

STATUSES = {"queued": "starting", "running": "processing"}
"""Replicate's words for a job not yet finished (the finished ones are the same: succeeded, failed, canceled)."""


def webhook_seen_by(job: Job, viewer: str | None) -> str | None:
    """The job's webhook URL as `viewer` (a key's fingerprint) may see it: whole for the key that created the job,
    else without userinfo, query string and fragment, which often carry the receiver's own token."""
    if job.webhook is None or (viewer is not None and viewer == job.owner):
        return job.webhook
    return without_secrets(job.webhook)


def as_prediction(job: Job, viewer: str | None) -> dict[str, Any]:
    """A job as Replicate's prediction JSON, as the key whose fingerprint is `viewer` may see it."""
    urls = {
        "get": f"{job.base_url}/v1/predictions/{job.id}",
        "cancel": f"{job.base_url}/v1/predictions/{job.id}/cancel",
    }
    metrics = {"predict_time": job.predict_time} if job.predict_time is not None else {}
    if job.completed_at:
        metrics["total_time"] = (job.completed_at - job.created_at).total_seconds()
    return {
        "id": job.id,
        "model": job.model,
        "version": job.version,
        "status": STATUSES.get(job.status, job.status),
        "input": job.input,
        "output": output_url(job),
        "logs": job.logs or "",
        "error": job.error,
        "metrics": metrics,
        "created_at": isoformat(job.created_at),
        "started_at": isoformat(job.started_at),
        "completed_at": isoformat(job.completed_at),
        "urls": urls,
        "source": "api",
        "data_removed": job.output_removed,
        "webhook": webhook_seen_by(job, viewer),
        "webhook_events_filter": job.webhook_events or None,
    }


def as_webhook_payload(job: Job) -> dict[str, Any]:
    """A prediction as its own webhook delivers it: to the URL its creator gave, whole."""
    return as_prediction(job, job.owner)


def progress_line(update: ProgressUpdate) -> str:
    """tqdm's shape, which the replicate client's `Prediction.progress` parses; chained clips say which one."""
    fraction = update.step / max(update.total, 1)
    bar = "█" * round(10 * fraction) + " " * (10 - round(10 * fraction))
    clip = f" (clip {update.segment}/{update.segments})" if update.segments > 1 else ""
    return (
        f"{round(100 * fraction):3d}%|{bar}| {update.step}/{update.total} {update.phase}{clip} "
        f"[{update.elapsed:.1f}s]\n"
    )
