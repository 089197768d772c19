"""The job runner: claims jobs from the queue every replica shares (the store), runs up to `concurrency` of
them under leases its heartbeat renews, streams their progress into logs, honours cancellation (by cancelling
the gRPC stream, which stops Triton within a denoising step) wherever it was asked, stores the output, and
tells webhooks. Every state change goes through the store first, fenced by the lease, so a crash loses
nothing and a replica that lost its lease changes nothing. On SIGTERM it drains: no new claims, running jobs
get `drain_seconds`, the rest go back to the queue at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import logging
import math
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any, overload

from starlette.concurrency import run_in_threadpool

from svd_contract import VIDEO_FORMATS, Progress
from svd_triton.client import ProgressUpdate, VideoResult
from svd_triton.errors import MODEL_PROCESS_DIED, RequestCancelledError, SVDClientError, is_transient, never_ran

from .errors import CODE_STATUS, GatewayError, client_error_code
from .metrics import GatewayMetrics
from .model_client import ModelClient
from .settings import Settings
from .store import TERMINAL, Deferred, Job, LeaseLost, Store, new_id, sha256, utcnow
from .webhooks import Webhooks

LOG_INTERVAL = 0.5
"""Seconds between writes of progress lines to the store (and `logs` webhooks)."""
SWEEP_GRACE = 600.0
"""Stored bytes no row refers to are removed once this old: younger ones may be another replica's,
written just before its row is committed."""
SHUTTING_DOWN = "this gateway replica is shutting down; send the request again"
"""Why a synchronous request not yet started fails when its replica drains."""
NOT_READY = "Triton is down, restarting or loading it"
WAITING_FOR_MODEL = f"waiting for the model: {NOT_READY}\n"
"""The line a queued job's logs end with while the model is not ready (Replicate's logs, fal's status logs)."""
READY_RECHECK = 0.25
"""Seconds between readiness checks while the model is not ready: a restarted Triton is used as soon as it is."""
MAX_UNCOUNTED = 20
"""Requeues of a job whose request never reached the model that do not count as attempts, at most."""
READY_TIMEOUT = 5.0
"""Seconds Triton's readiness answer may take before the model is taken as not ready."""
RETRY_BACKOFF_CAP = 30.0
"""Seconds a retry waits at most (the backoff doubles per attempt from --retry-backoff)."""
MODEL = "stability-ai/stable-video-diffusion"
VERSION = "svd-triton"
log = logging.getLogger("svd_gateway.jobs")


def counted_failures(job: Job) -> list[dict]:
    """The job's lost attempts that counted (not the requests no model took)."""
    return [failure for failure in job.failures or [] if failure.get("counted", True)]


def progress_line(update: ProgressUpdate) -> str:
    """A job's progress as a log line, for the families that render no line of their own."""
    clip = f" (clip {update.segment}/{update.segments})" if update.segments > 1 else ""
    return f"{update.phase} {update.step}/{update.total}{clip} [{update.elapsed:.1f}s]\n"


BEFORE_DENOISING = ("image", "preparing")
"""Phases of a clip that come before its denoising steps (text-to-video's first frame, the conditioning)."""


def progress_percent(job: Job) -> int:
    """0–100 from the denoising steps done so far, across chained clips (from the job's recorded progress);
    100 only once the job has finished."""
    if job.status in TERMINAL:
        return 100 if job.status == "succeeded" else 0
    if not job.progress:
        return 0
    now = Progress(**job.progress)
    done = now.step / max(now.total, 1) if now.phase == "denoising" else 0.0 if now.phase in BEFORE_DENOISING else 1.0
    return min(99, int(100 * (now.segment - 1 + done) / max(now.segments, 1)))


@overload
def isoformat(moment: datetime) -> str: ...


@overload
def isoformat(moment: datetime | None) -> str | None: ...


def isoformat(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="microseconds") + "Z" if moment else None


LINK_GRAIN = 60
"""Seconds an output link's expiry is rounded up to, so a client polling a job sees one link, not a new one each
time."""


def output_url(job: Job, seconds: float) -> str | None:
    """A link to the job's video that anyone holding it may fetch for `seconds` (at most LINK_GRAIN more), as a
    presigned bucket URL: signed with the job's own secret output key, so it names no secret, cannot be extended
    or turned into another job's link, and a fresh one comes with every read of the job."""
    if not job.output_key or job.output_removed:
        return None
    assert job.output_format is not None, "stored with its output_key"
    expires = math.ceil((time.time() + seconds) / LINK_GRAIN) * LINK_GRAIN
    extension = VIDEO_FORMATS[job.output_format].extension
    return f"{job.base_url}/v1/outputs/{job.id}_{expires}_{output_signature(job, expires)}{extension}"


def output_signature(job: Job, expires: int) -> str:
    """128 bits of HMAC-SHA256 over (id, expiry), keyed with the job's output key, in hex."""
    assert job.output_key is not None, "a job with a video"
    return hmac.new(job.output_key.encode(), f"{job.id}.{expires}".encode(), hashlib.sha256).hexdigest()[:32]


def read_link(name: str) -> tuple[str, int, str] | None:
    """(job id, expiry, signature) of an output link's last segment `{id}_{expires}_{signature}.{ext}`."""
    parts = name.split(".", 1)[0].split("_")
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    return parts[0], int(parts[1]), parts[2]


def link_holds(job: Job, expires: int, signature: str) -> bool:
    """Whether `signature` is the job's for `expires` (expired or not: the caller tells those apart)."""
    return bool(job.output_key) and hmac.compare_digest(output_signature(job, expires), signature)


class JobRunner:
    def __init__(
        self,
        store: Store,
        svd: ModelClient,
        webhooks: Webhooks,
        settings: Settings,
        metrics: GatewayMetrics,
        *,
        webhook_payloads: dict[str, Callable[[Job, float], dict[str, Any]]] | None = None,
        progress_lines: dict[str, Callable[[ProgressUpdate], str]] | None = None,
    ):
        self.store, self.svd, self.webhooks, self.settings, self.metrics = store, svd, webhooks, settings, metrics
        self.webhook_payloads = webhook_payloads or {}
        self.progress_lines = progress_lines or {}
        """A job's progress as log lines, by origin (Replicate's tqdm lines); progress_line for the others."""
        """A job as its webhook deliveries carry it, by origin (the family that took the webhook renders it)."""
        self.holder = f"{settings.replica_id[:40]}-{secrets.token_hex(8)}"
        """This process's lease-holder name: unique per start, so two processes never share leases."""
        self.slots = asyncio.Semaphore(settings.concurrency)
        self.running: dict[str, Job] = {}
        """Jobs this process holds and runs, as claimed (their attempt and holder fence every write)."""
        self.reserved: dict[str, Job] = {}
        """Synchronous routes' jobs this process holds for the client on the line, not yet running."""
        self.generations: dict[str, asyncio.Task] = {}
        self.releasing: dict[str, str] = {}
        """Running jobs being given back to the queue (drain, shutdown) rather than canceled: id → log line."""
        self.done: dict[str, asyncio.Event] = {}
        self.tasks: set[asyncio.Task] = set()
        self.executions: set[asyncio.Task] = set()
        self.wake = asyncio.Event()
        self.draining = False
        self.drained: asyncio.Task | None = None
        self.listening = threading.Event()
        """Set to stop the LISTEN thread."""
        self.model_was_ready = True
        self.waiting_noted = 0.0
        """When queued jobs were last told, in their logs, that they wait for the model (time.monotonic)."""

    async def start(self) -> None:
        """Claim from the queue, keep leases alive, and (PostgreSQL, wake=notify) listen for new jobs."""
        await run_in_threadpool(self.store.sweep_orphans, SWEEP_GRACE)
        if self.settings.wake == "notify" and self.store.can_listen:
            loop = asyncio.get_running_loop()
            threading.Thread(
                target=self.store.listen,
                args=(lambda: loop.call_soon_threadsafe(self.wake.set), self.listening),
                daemon=True,
            ).start()
        for loop_body in (self._claim_loop(), self._heartbeat(), self._expire_periodically()):
            self._spawn(loop_body)
        log.info("replica %s claims jobs as %s", self.settings.replica_id, self.holder)

    def begin_drain(self) -> None:
        """SIGTERM: stop claiming now; running jobs get drain_seconds, then are released (stop() awaits this)."""
        if self.drained is None:
            self.drained = asyncio.create_task(self._drain())

    async def stop(self) -> None:
        """Shutdown: after a drain (if one began), what still runs goes back to the queue at once."""
        if self.drained is not None:
            await self.drained
        self.draining = True
        await self._release_running("the gateway replica running it stopped; the job is queued again")
        self.listening.set()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _drain(self) -> None:
        self.draining = True
        self.wake.set()
        log.info("draining: %d jobs running, up to %.0f s to finish", len(self.running), self.settings.drain_seconds)
        for job in list(self.reserved.values()):  # not started: its client is told at once, and may retry elsewhere
            await self._finish(job, "failed", error_code="unavailable", error=SHUTTING_DOWN)
        if self.executions:
            await asyncio.wait(set(self.executions), timeout=self.settings.drain_seconds)
        await self._release_running(
            "the gateway replica running it was shut down before the job could finish; the job is queued again"
        )

    async def _release_running(self, note: str) -> None:
        """Stop this process's running jobs and give them back to the queue (a synchronous route's job fails:
        its client is on this replica's line), and wait until that is written."""
        for job_id in list(self.running):
            self.releasing[job_id] = note
            generation = self.generations.get(job_id)
            if generation is not None:
                generation.cancel()
        if self.executions:
            await asyncio.gather(*self.executions, return_exceptions=True)

    def new_job(
        self,
        origin: str,
        image: bytes,
        params: dict[str, Any],
        given: dict[str, Any],
        base_url: str,
        *,
        webhook: str | None = None,
        events: list[str] | None = None,
        owner: str,
        api_key: str,
        keep_input: bool = False,
    ) -> Job:
        return Job(
            id=new_id(),
            origin=origin,
            model=MODEL,
            version=VERSION,
            status="queued",
            input=given,
            owner=owner,
            api_key=api_key,
            polled=True,
            mode="text" if "prompt" in params else "image",
            keep_input=keep_input,
            params=params,
            image_sha256=sha256(image),
            base_url=base_url,
            logs="",
            webhook=webhook,
            webhook_events=events or [],
            attempts=0,
            cancel_requested=False,
            output_removed=False,
            created_at=utcnow(),
        )

    async def submit(self, job: Job, image: bytes) -> Job:
        """Queue a job for whichever replica has a free slot first (this one is woken too)."""
        await run_in_threadpool(self.store.create, job, image)
        self.wake.set()
        return job

    async def run_now(self, job: Job, image: bytes) -> tuple[Job, bytes]:
        """For the synchronous routes: run `job` on this replica (its client waits on this line), wait for it,
        and return it with its video (or raise)."""
        if self.draining:
            raise GatewayError(503, "unavailable", SHUTTING_DOWN)
        if self.settings.concurrency == 0:
            raise GatewayError(
                503,
                "unavailable",
                "this gateway replica only queues jobs (--concurrency 0); send "
                "synchronous requests to one that runs them",
            )
        job.lease_holder, job.polled = self.holder, False
        job.lease_expires_at = utcnow() + timedelta(seconds=self.settings.lease_seconds)
        await run_in_threadpool(self.store.create, job, image)
        self.reserved[job.id] = job
        self._spawn(self._run_reserved(job))
        waited = await self.wait(job.id, self.settings.timeout + 60)
        assert waited is not None, f"job {job.id} was deleted while its client waited"  # as before: no answer
        job = waited
        if job.status == "failed":
            raise GatewayError(
                CODE_STATUS.get(job.error_code, 502),
                job.error_code or "server_error",
                job.error or "the job failed",
                job.error_field,
            )
        if job.status != "succeeded":
            raise GatewayError(504, "deadline_exceeded", f"the job is still {job.status}")
        try:
            return job, await run_in_threadpool(self.store.read_output, job.output_key)
        except FileNotFoundError:  # retention dropped it already: more concurrent jobs than max_outputs
            raise GatewayError(
                503,
                "unavailable",
                "the video was dropped by the store's retention before it could be "
                "sent (max_outputs is smaller than the number of concurrent requests)",
            ) from None

    async def wait(self, job_id: str, seconds: float) -> Job | None:
        """The job once terminal, or as it is after `seconds`."""
        deadline = time.monotonic() + seconds
        while True:
            job = await run_in_threadpool(self.store.get, job_id)
            left = deadline - time.monotonic()
            if job is None or job.status in TERMINAL or left <= 0:
                return job
            event = self.done.setdefault(job_id, asyncio.Event())
            with contextlib.suppress(asyncio.TimeoutError):  # a job run by another replica is seen by polling
                await asyncio.wait_for(event.wait(), min(left, 0.5))

    async def cancel(self, job_id: str) -> Job | None:
        """A queued job is canceled at once; a running one here within a denoising step; one running on another
        replica when that replica next writes progress or renews its lease."""
        job = await run_in_threadpool(self.store.request_cancel, job_id)
        generation = self.generations.get(job_id)
        if generation is not None:
            generation.cancel()
            return await self.wait(job_id, 10)
        if job is not None and job.status == "canceled":
            self._notify(job, "completed")
        return job

    def _spawn(self, coroutine) -> asyncio.Task:
        task = asyncio.create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def _claim_loop(self) -> None:
        """Take the oldest queued job whenever a slot is free; idle, wait for a NOTIFY, a local submit or the
        poll interval. A database error is logged and retried at the next poll."""
        while not self.draining:
            await self.slots.acquire()
            if not await self._model_ready():  # jobs wait queued, rather than be claimed and fail (asked once a
                self.slots.release()  # slot is free: a slot freed by a call Triton's death failed must ask too)
                await asyncio.sleep(READY_RECHECK)
                continue
            self.wake.clear()
            job = None
            if not self.draining:
                try:
                    job = await run_in_threadpool(
                        self.store.claim_next, self.holder, self.settings.replica_id, self.settings.lease_seconds
                    )
                except Exception:
                    log.exception("claiming from the queue failed; retrying in %.1f s", self.settings.poll_seconds)
            if job is None:
                self.slots.release()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), self.settings.poll_seconds)
                continue
            self._start(job)

    async def _run_reserved(self, job: Job, delay: float = 0.0) -> None:
        """Run a job this process holds for its client on the line, once the model is ready and no job that runs
        alone holds the queue (both within the job's deadline) and, for a retry, after its backoff."""
        await asyncio.sleep(delay)
        deadline = time.monotonic() + self.settings.timeout - (utcnow() - job.created_at).total_seconds()
        while True:
            if not await self._until_model_ready(deadline - time.monotonic()):
                why = "the model was not ready within this request's deadline"
                return await self._fail_reserved(job, f"{why} ({self.settings.timeout:g} s): {NOT_READY}")
            await self.slots.acquire()
            claimed = None
            try:
                if not self.draining:
                    claimed = await run_in_threadpool(
                        self.store.claim, job.id, self.holder, self.settings.replica_id, self.settings.lease_seconds
                    )
            except Exception as error:  # a job that runs alone holds the queue (Deferred), or the store failed
                self.slots.release()
                if not isinstance(error, Deferred):
                    log.exception("job %s: claiming it failed; retrying in %.1f s", job.id, self.settings.poll_seconds)
                if time.monotonic() >= deadline:
                    why = (
                        "a request that had crashed the model held"
                        if isinstance(error, Deferred)
                        else "the store failed"
                    )
                    return await self._fail_reserved(
                        job, f"{why} until this request's deadline ({self.settings.timeout:g} s)"
                    )
                await asyncio.sleep(self.settings.poll_seconds)
                continue
            except BaseException:
                self.reserved.pop(job.id, None)
                self.slots.release()
                raise
            self.reserved.pop(job.id, None)
            if claimed is not None:
                self._start(claimed)
                return
            self.slots.release()  # canceled while queued, or failed by a drain
            if self.draining:  # reserved after the drain looked (its row was written as the drain began): failed here
                await self._finish(job, "failed", error_code="unavailable", error=SHUTTING_DOWN)
            self._signal_done(job.id)
            return

    async def _fail_reserved(self, job: Job, error: str) -> None:
        self.reserved.pop(job.id, None)
        await self._finish(job, "failed", error_code="unavailable", error=error)
        self._signal_done(job.id)

    async def _model_ready(self) -> bool:
        """Whether Triton says the model is ready (one cheap call before each claim; the one log line per outage)."""
        try:
            ready = await asyncio.wait_for(self.svd.ready(), READY_TIMEOUT)
        except TimeoutError:
            ready = False
        was_ready, self.model_was_ready = self.model_was_ready, ready
        if not ready and was_ready:
            log.warning("the model is not ready (Triton down, restarting or loading it): jobs wait in the queue")
        if not ready and (was_ready or time.monotonic() - self.waiting_noted >= self.settings.poll_seconds):
            self.waiting_noted = time.monotonic()
            try:
                await run_in_threadpool(self.store.note_waiting, WAITING_FOR_MODEL)
            except Exception:
                log.exception("noting in queued jobs' logs that they wait for the model failed")
        return ready

    async def _until_model_ready(self, seconds: float) -> bool:
        """Wait up to `seconds` for the model to be ready; whether it is (a drain ends the wait: the claim that
        follows then refuses the job)."""
        deadline = time.monotonic() + seconds
        while not await self._model_ready():
            if self.draining:
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(min(READY_RECHECK, max(0.0, deadline - time.monotonic())))
        return True

    def _start(self, job: Job) -> None:
        """Run a claimed job; the slot it holds is released when it ends."""
        self.running[job.id] = job
        execution = self._spawn(self._execute(job))
        self.executions.add(execution)
        execution.add_done_callback(self.executions.discard)

    async def _execute(self, job: Job) -> None:
        self.metrics.running.inc()
        started = time.perf_counter()
        try:
            self._notify(job, "start")
            finished = await self._generate(job)
        finally:
            self.running.pop(job.id, None)
            self.releasing.pop(job.id, None)
            self.metrics.running.dec()
            self.slots.release()
        if finished is not None:
            self.metrics.duration.labels(finished.status).observe(time.perf_counter() - started)
            self._notify(finished, "completed")
            if finished.output_key:
                await self._expire(finished.owner)
        self._signal_done(job.id)

    def _signal_done(self, job_id: str) -> None:
        event = self.done.pop(job_id, None)
        if event is not None:
            event.set()

    async def _heartbeat(self) -> None:
        """Renew this process's leases, stop jobs canceled elsewhere or taken over, and take over jobs whose
        replica stopped renewing."""
        while True:
            try:
                # Its answer judges only jobs claimed before the renewal began: one claimed while it ran is
                # missing from it without having been taken over.
                claimed_before = set(self.running)
                held = await run_in_threadpool(
                    self.store.renew, self.holder, self.settings.lease_seconds, [*self.running, *self.reserved]
                )
                for job_id in [job_id for job_id in self.running if job_id in claimed_before]:
                    generation = self.generations.get(job_id)
                    if job_id not in held:
                        log.warning("job %s: lease lost (another replica took it over); stopping it", job_id)
                    if generation is not None and held.get(job_id, True):  # canceled elsewhere, or lost
                        generation.cancel()
                taken, ended = await run_in_threadpool(self.store.reclaim_expired, self.settings.max_attempts)
                if taken:
                    log.warning("took over %d jobs whose replica stopped renewing its lease", taken)
                    self.metrics.takeovers.inc(taken)
                    self.wake.set()
                for job in ended:
                    self._notify(job, "completed")
            except Exception:
                log.exception("heartbeat failed; retrying")
            await asyncio.sleep(self.settings.heartbeat_seconds)

    async def _finish(self, job: Job, status: str, **values) -> Job | None:
        return await run_in_threadpool(self.store.finish, job, status, **values)

    async def _generate(self, job: Job) -> Job | None:
        updates: list[ProgressUpdate] = []
        started = time.perf_counter()
        try:
            # A job with a prompt in its params has no image: text-to-video (AsyncSVDClient.generate(prompt=...)).
            image = None if job.mode == "text" else await run_in_threadpool(self.store.read_input, job.id)
            generation = asyncio.create_task(self.svd.generate(image, on_progress=updates.append, **job.params))
            self.generations[job.id] = generation
            if job.id in self.releasing:  # released while its input was being read
                generation.cancel()
            while not generation.done():
                await asyncio.wait({generation}, timeout=LOG_INTERVAL)
                if updates and (await self._flush(job, updates)).cancel_requested:
                    generation.cancel()
            result: VideoResult = generation.result()
        except LeaseLost:
            self.generations[job.id].cancel()
            log.warning("job %s: lease lost (another replica took it over); its result is not kept", job.id)
            return None
        except (asyncio.CancelledError, RequestCancelledError):
            if job.id in self.generations:
                self.generations[job.id].cancel()
            if job.id in self.releasing:
                return await self._give_back(job)
            return await self._finish(job, "canceled", predict_time=time.perf_counter() - started)
        except SVDClientError as error:  # the client read the field the message names: error.field
            if is_transient(error):
                return await self._retry(job, error)
            return await self._finish(
                job,
                "failed",
                error=str(error),
                error_code=client_error_code(error),
                error_field=error.field,
                predict_time=time.perf_counter() - started,
            )
        except Exception:  # a bug or a lost input file must not leave the job `running`
            log.exception("job %s failed in the gateway", job.id)
            return await self._finish(
                job,
                "failed",
                error_code="server_error",
                error="the gateway failed while running this job; its log has the details",
            )
        finally:
            self.generations.pop(job.id, None)
        try:
            if updates:
                await self._flush(job, updates)
            # cog's line: the seed is otherwise not in a prediction (its output is only the video's URL)
            await run_in_threadpool(self.store.append_logs, job, f"Using seed: {result.seed}\n")
        except LeaseLost:
            log.warning("job %s: lease lost before its result was stored; the result is dropped", job.id)
            return None
        try:
            key = await run_in_threadpool(self.store.save_output, result.video)
        except Exception:  # storage down or full: the job fails, and says where to look
            log.exception("job %s: storing its video failed", job.id)
            return await self._finish(
                job,
                "failed",
                error_code="server_error",
                error="the video was made but could not be stored; the gateway's log has the details",
            )
        finished = await self._finish(
            job,
            "succeeded",
            output_key=key,
            output_format=result.video_format,
            output_bytes=len(result.video),
            seed=result.seed,
            predict_time=time.perf_counter() - started,
        )
        if finished is None:  # canceled at the very end, or taken over: this output is not the job's
            log.warning("job %s: finish refused (canceled or taken over); its video is dropped", job.id)
            await run_in_threadpool(self.store.delete_output, key)
        else:
            self._notify(finished, "output")
        return finished

    async def _retry(self, job: Job, error: SVDClientError) -> Job | None:
        """An attempt lost to a fault of the transport or the model's process: queued again with backoff, from the
        start with the same inputs and seed, until --max-attempts; then failed, saying how often and why."""
        attempts, most = job.attempts, self.settings.max_attempts
        self.metrics.retries.labels("model_process" if MODEL_PROCESS_DIED in str(error) else "unavailable").inc()
        counted = counted_failures(job)
        if never_ran(error) and len(job.failures or []) - len(counted) < MAX_UNCOUNTED:
            spends, delay = False, READY_RECHECK  # no model took it (reloading): no attempt spent
            note = f"the model could not take attempt {attempts} ({error}); it is sent again once the model is ready"
        else:
            if attempts >= most:
                died = [*(failure["error"] for failure in counted), str(error)]
                cause = (
                    "the model process died while running this request"
                    if all(MODEL_PROCESS_DIED in reason for reason in died)
                    else "the model server failed (unreachable or its model process died) while running this request"
                )
                return await self._finish(
                    job,
                    "failed",
                    error_code="unavailable",
                    error=f"{cause} {attempts} times; the last time: {error}",
                    failures=[*(job.failures or []), {"attempt": attempts, "error": str(error)}],
                )
            spends, delay = True, min(RETRY_BACKOFF_CAP, self.settings.retry_backoff * 2 ** (attempts - 1))
            note = f"attempt {attempts} of {most} was lost ({error}); attempt {attempts + 1} starts in {delay:g} s"
            log.warning("job %s: %s", job.id, note)
        if self.draining and not job.polled:  # its client is on this replica's line, which is closing
            return await self._finish(job, "failed", error_code="unavailable", error=SHUTTING_DOWN)
        # Lost with the model's process, it may be what kills it (or one of the batch it killed): it runs alone
        # from now on.
        alone = job.alone or (spends and MODEL_PROCESS_DIED in str(error))
        requeued = await run_in_threadpool(self.store.requeue, job, note, str(error), delay, spends, alone)
        if requeued is not None and not requeued.polled:  # its client waits on this replica: it runs here again
            self.reserved[job.id] = requeued
            self._spawn(self._run_reserved(requeued, delay))
        return None

    async def _give_back(self, job: Job) -> Job | None:
        """A running job this replica cannot finish (drain, shutdown): a polled job goes back to the queue for
        another replica; a synchronous one fails cleanly, its client being on this replica's line."""
        if job.polled:
            if await run_in_threadpool(self.store.release, job, self.releasing[job.id]):
                log.info("job %s released to the queue", job.id)
            return None
        return await self._finish(
            job,
            "failed",
            error_code="unavailable",
            error="this gateway replica was shut down before the job could finish; send the request again",
        )

    async def _flush(self, job: Job, updates: list[ProgressUpdate]) -> Job:
        render = self.progress_lines.get(job.origin, progress_line)
        lines, latest = "".join(render(update) for update in updates), asdict(updates[-1])
        updates.clear()
        current = await run_in_threadpool(self.store.append_logs, job, lines, latest)
        self._notify(current, "logs")
        return current

    def _notify(self, job: Job, event: str) -> None:
        render = self.webhook_payloads.get(job.origin)
        if job.webhook and render is not None:
            assert job.owner is not None, "every job made since accounts has an owner"
            self.webhooks.send(
                job.id, job.owner, job.webhook, job.webhook_events, event, render(job, self.settings.link_seconds)
            )

    async def _expire(self, owner: str | None = None) -> None:
        """Retention: after a job, its owner's outputs beyond their limits; every minute, everything."""
        await run_in_threadpool(
            functools.partial(
                self.store.expire,
                max_outputs=self.settings.max_outputs,
                output_seconds=self.settings.output_seconds,
                max_output_bytes=self.settings.max_output_bytes,
                owner=owner,
            )
        )

    async def _expire_periodically(self) -> None:
        while True:
            await self._expire()
            await asyncio.sleep(60)
            await run_in_threadpool(self.store.sweep_orphans, SWEEP_GRACE)
