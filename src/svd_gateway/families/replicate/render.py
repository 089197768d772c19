"""Jobs as Replicate's prediction JSON: its statuses and its `logs` text are what the replicate client reads."""

from __future__ import annotations

from typing import Any

from svd_triton import ProgressUpdate

from ...jobs import isoformat, output_url
from ...store import Job

STATUSES = {"queued": "starting", "running": "processing"}
"""Replicate's words for a job not yet finished (the finished ones are the same: succeeded, failed, canceled)."""


def as_prediction(job: Job, link_seconds: float) -> dict[str, Any]:
    """A job as Replicate's prediction JSON (only its owner's keys see it), its output a link good for
    `link_seconds`."""
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
        "output": output_url(job, link_seconds),
        "logs": job.logs or "",
        "error": job.error,
        "metrics": metrics,
        "created_at": isoformat(job.created_at),
        "started_at": isoformat(job.started_at),
        "completed_at": isoformat(job.completed_at),
        "urls": urls,
        "source": "api",
        "data_removed": job.output_removed,
        "webhook": job.webhook,
        "webhook_events_filter": job.webhook_events or None,
    }


def progress_line(update: ProgressUpdate) -> str:
    """tqdm's shape, which the replicate client's `Prediction.progress` parses; chained clips say which one."""
    fraction = update.step / max(update.total, 1)
    bar = "█" * round(10 * fraction) + " " * (10 - round(10 * fraction))
    clip = f" (clip {update.segment}/{update.segments})" if update.segments > 1 else ""
    return (
        f"{round(100 * fraction):3d}%|{bar}| {update.step}/{update.total} {update.phase}{clip} "
        f"[{update.elapsed:.1f}s]\n"
    )
