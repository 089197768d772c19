"""The job runner: schedules stored jobs on this replica, streams their progress into logs, honours
cancellation (by cancelling the gRPC stream, which stops Triton within a denoising step), stores the
output, and tells webhooks. Every state change goes through the store first, so a crash loses nothing.
"""
from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any

from starlette.concurrency import run_in_threadpool

from svd_triton.client import AsyncSVDClient, ProgressUpdate, VideoResult
from svd_contract import VIDEO_FORMATS
from svd_triton.errors import RequestCancelledError, SVDClientError
from .errors import CODE_STATUS, GatewayError, client_error_code
from .settings import Settings
from .store import TERMINAL, Job, Store, new_id, sha256, utcnow
from .webhooks import Webhooks

LOG_INTERVAL = 0.5
"""Seconds between writes of progress lines to the store (and `logs` webhooks)."""
SWEEP_GRACE = 600.0
"""Stored bytes no row refers to are removed once this old: younger ones may be another replica's,
written just before its row is committed."""
MODEL = "stability-ai/stable-video-diffusion"
VERSION = "svd-triton"
log = logging.getLogger("svd_gateway.jobs")


def progress_line(update: ProgressUpdate) -> str:
    """tqdm's shape, which the replicate client's `Prediction.progress` parses; chained clips say which one."""
    fraction = update.step / max(update.total, 1)
    bar = "█" * round(10 * fraction) + " " * (10 - round(10 * fraction))
    clip = f" (clip {update.segment}/{update.segments})" if update.segments > 1 else ""
    return (f"{round(100 * fraction):3d}%|{bar}| {update.step}/{update.total} {update.phase}{clip} "
            f"[{update.elapsed:.1f}s]\n")


DENOISING = re.compile(r"\| (\d+)/(\d+) denoising(?: \(clip (\d+)/(\d+)\))? ")


def progress_percent(job: Job) -> int:
    """0–100 from the denoising steps done so far, across chained clips (read from the job's progress lines);
    100 only once the job has finished."""
    if job.status in TERMINAL:
        return 100 if job.status == "succeeded" else 0
    found = DENOISING.findall(job.logs or "")
    if not found:
        return 0
    step, total, clip, clips = (int(value or 1) for value in found[-1])
    return min(99, int(100 * (clip - 1 + step / max(total, 1)) / clips))


def isoformat(moment) -> str | None:
    return moment.isoformat(timespec="microseconds") + "Z" if moment else None


def output_url(job: Job) -> str | None:
    if not job.output_key or job.output_removed:
        return None
    return f"{job.base_url}/v1/outputs/{job.output_key}{VIDEO_FORMATS[job.output_format].extension}"


def as_prediction(job: Job) -> dict[str, Any]:
    """A job as Replicate's prediction JSON."""
    urls = {"get": f"{job.base_url}/v1/predictions/{job.id}", "cancel": f"{job.base_url}/v1/predictions/{job.id}/cancel"}
    metrics = {"predict_time": job.predict_time} if job.predict_time is not None else {}
    if job.completed_at:
        metrics["total_time"] = (job.completed_at - job.created_at).total_seconds()
    return {"id": job.id, "model": job.model, "version": job.version, "status": job.status, "input": job.input,
            "output": output_url(job), "logs": job.logs or "", "error": job.error, "metrics": metrics,
            "created_at": isoformat(job.created_at), "started_at": isoformat(job.started_at),
            "completed_at": isoformat(job.completed_at), "urls": urls, "source": "api",
            "data_removed": job.output_removed, "webhook": job.webhook,
            "webhook_events_filter": job.webhook_events or None}


class JobRunner:
    def __init__(self, store: Store, svd: AsyncSVDClient, webhooks: Webhooks, settings: Settings):
        self.store, self.svd, self.webhooks, self.settings = store, svd, webhooks, settings
        self.slots = asyncio.Semaphore(settings.concurrency)
        self.generations: dict[str, asyncio.Task] = {}
        self.done: dict[str, asyncio.Event] = {}
        self.tasks: set[asyncio.Task] = set()
        self.stopping = False

    async def start(self) -> None:
        """Recover what a crash left behind, then schedule every queued job."""
        queued = await run_in_threadpool(self.store.recover, self.settings.replica_id, self.settings.max_attempts)
        await run_in_threadpool(self.store.sweep_orphans, SWEEP_GRACE)
        for job_id in queued:
            self._schedule(job_id)
        self._spawn(self._expire_periodically())

    async def stop(self) -> None:
        """Interrupted jobs go back to the queue, for this replica's next start (or another replica)."""
        self.stopping = True
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def new_job(self, origin: str, image: bytes, params: dict[str, Any], given: dict[str, Any], base_url: str,
                *, webhook: str | None = None, events: list[str] | None = None) -> Job:
        return Job(id=new_id(), origin=origin, model=MODEL, version=VERSION, status="starting", input=given,
                   params=params, image_sha256=sha256(image), base_url=base_url, logs="", webhook=webhook,
                   webhook_events=events or [], attempts=0, cancel_requested=False, output_removed=False,
                   created_at=utcnow())

    async def submit(self, job: Job, image: bytes) -> Job:
        await run_in_threadpool(self.store.create, job, image)
        self._schedule(job.id)
        return job

    async def run_now(self, job: Job, image: bytes) -> tuple[Job, bytes]:
        """For the synchronous routes: run `job`, wait for it, and return it with its video (or raise)."""
        await self.submit(job, image)
        job = await self.wait(job.id, self.settings.timeout + 60)
        if job.status == "failed":
            raise GatewayError(CODE_STATUS.get(job.error_code, 502), job.error_code or "server_error", job.error,
                               job.error_field)
        if job.status != "succeeded":
            raise GatewayError(504, "deadline_exceeded", f"the job is still {job.status}")
        try:
            return job, await run_in_threadpool(self.store.read_output, job.output_key)
        except FileNotFoundError:  # retention dropped it already: more concurrent jobs than max_outputs
            raise GatewayError(503, "unavailable", "the video was dropped by the store's retention before it could be "
                               "sent (max_outputs is smaller than the number of concurrent requests)") from None

    async def wait(self, job_id: str, seconds: float) -> Job | None:
        """The job once terminal, or as it is after `seconds`."""
        deadline = time.monotonic() + seconds
        while True:
            job = await run_in_threadpool(self.store.get, job_id)
            left = deadline - time.monotonic()
            if job is None or job.status in TERMINAL or left <= 0:
                return job
            event = self.done.get(job_id)
            try:  # a job run by another replica is seen by polling
                await asyncio.wait_for(event.wait() if event else asyncio.sleep(left), min(left, 0.5))
            except asyncio.TimeoutError:
                pass

    async def cancel(self, job_id: str) -> Job | None:
        job = await run_in_threadpool(self.store.request_cancel, job_id)
        generation = self.generations.get(job_id)
        if generation is not None:
            generation.cancel()
            return await self.wait(job_id, 10)
        if job is not None and job.status == "canceled":
            self._notify(job, "completed")
        return job

    def _schedule(self, job_id: str) -> None:
        self.done.setdefault(job_id, asyncio.Event())
        self._spawn(self._run(job_id))

    def _spawn(self, coroutine) -> None:
        task = asyncio.create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, job_id: str) -> None:
        async with self.slots:
            job = await run_in_threadpool(self.store.claim, job_id, self.settings.replica_id)
            if job is None:  # canceled while queued, or claimed by another replica
                self.done.pop(job_id, asyncio.Event()).set()
                return
            self._notify(job, "start")
            finished = await self._generate(job)
        if finished is not None:
            self._notify(finished, "completed")
            if finished.output_key:
                await self._expire()
        self.done.pop(job_id, asyncio.Event()).set()

    async def _generate(self, job: Job) -> Job | None:
        updates: list[ProgressUpdate] = []
        started = time.perf_counter()
        try:
            # A job with a prompt in its params has no image: text-to-video (AsyncSVDClient.generate(prompt=...)).
            image = None if "prompt" in job.params else await run_in_threadpool(self.store.read_input, job.id)
            generation = asyncio.create_task(self.svd.generate(image, on_progress=updates.append, **job.params))
            self.generations[job.id] = generation
            while not generation.done():
                await asyncio.wait({generation}, timeout=LOG_INTERVAL)
                if updates:
                    job = await self._flush(job.id, updates)
                    if job.cancel_requested:
                        generation.cancel()
            result: VideoResult = generation.result()
        except (asyncio.CancelledError, RequestCancelledError):
            if self.stopping:
                if job.id in self.generations:
                    self.generations[job.id].cancel()
                await run_in_threadpool(self.store.requeue, job.id, "gateway stopped; the job is queued again")
                raise
            return await run_in_threadpool(self.store.finish, job.id, "canceled",
                                           predict_time=time.perf_counter() - started)
        except SVDClientError as error:  # the client read the field the message names: error.field
            return await run_in_threadpool(self.store.finish, job.id, "failed", error=str(error),
                                           error_code=client_error_code(error), error_field=error.field,
                                           predict_time=time.perf_counter() - started)
        except Exception:  # a bug or a lost input file must not leave the job `processing`
            log.exception("job %s failed in the gateway", job.id)
            return await run_in_threadpool(self.store.finish, job.id, "failed", error_code="server_error",
                                           error="the gateway failed while running this job; its log has the details")
        finally:
            self.generations.pop(job.id, None)
        if updates:
            await self._flush(job.id, updates)
        # cog's line: the seed is otherwise not in a prediction (its output is only the video's URL)
        await run_in_threadpool(self.store.append_logs, job.id, f"Using seed: {result.seed}\n")
        try:
            key = await run_in_threadpool(self.store.save_output, result.video)
        except Exception:  # storage down or full: the job fails, and says where to look
            log.exception("job %s: storing its video failed", job.id)
            return await run_in_threadpool(self.store.finish, job.id, "failed", error_code="server_error",
                                           error="the video was made but could not be stored; the gateway's log "
                                                 "has the details")
        finished = await run_in_threadpool(self.store.finish, job.id, "succeeded", output_key=key,
                                           output_format=result.video_format, output_bytes=len(result.video),
                                           seed=result.seed, predict_time=time.perf_counter() - started)
        if finished is None:  # canceled at the very end: the output is not kept
            await run_in_threadpool(self.store.delete_output, key)
        else:
            self._notify(finished, "output")
        return finished

    async def _flush(self, job_id: str, updates: list[ProgressUpdate]) -> Job:
        lines = "".join(progress_line(update) for update in updates)
        updates.clear()
        job = await run_in_threadpool(self.store.append_logs, job_id, lines)
        self._notify(job, "logs")
        return job

    def _notify(self, job: Job, event: str) -> None:
        if job.webhook:
            self.webhooks.send(job.id, job.webhook, job.webhook_events, event, as_prediction(job))

    async def _expire(self) -> None:
        await run_in_threadpool(self.store.expire, max_outputs=self.settings.max_outputs,
                                output_seconds=self.settings.output_seconds, max_output_bytes=self.settings.max_output_bytes)

    async def _expire_periodically(self) -> None:
        while True:
            await self._expire()
            await asyncio.sleep(60)
            await run_in_threadpool(self.store.sweep_orphans, SWEEP_GRACE)
