"""The data plane between the routers and the job runner (KServe's split: the routers speak each API's
shape, the data plane does the work they share). It turns a request's image reference into bytes, makes
jobs of requests, runs them synchronously or submits them as predictions, cancels them, and sends keep-warm
CONTROL requests to the model one per action at a time. One per process, created in the lifespan."""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import re
import secrets
import time
from typing import Any

from PIL import Image, UnidentifiedImageError
from starlette.concurrency import run_in_threadpool

from svd_contract import Deployment
from svd_contract.parameters import MAX_SEED
from svd_triton.errors import SVDClientError

from . import media, schemas
from .accounts import Principal
from .errors import GatewayError
from .jobs import JobRunner
from .model_client import ModelClient
from .outbound import ImageFetcher
from .settings import Settings
from .spec import JobSpec, check_parameters
from .store import Job, Store
from .webhooks import Webhooks

DATA_URI = re.compile(r"^data:[\w.+/-]*(;[\w=.+-]+)*;base64,", re.I)
UPLOAD_URL = re.compile(schemas.UPLOAD_URL)


def decode_base64(value: str, field: str, status: int = 400) -> bytes:
    """An image given as base64 or a data URI."""
    try:
        return base64.b64decode(DATA_URI.sub("", value.strip()), validate=True)
    except (binascii.Error, ValueError):
        raise GatewayError(
            status, "invalid_request", f"{field}: not valid base64 (or a data:image/...;base64, URI)", field
        ) from None


def check_image(data: bytes, field: str, status: int = 400) -> bytes:
    """`data` if Pillow can read it as an image (checked before a job is stored), else a 4xx naming `field`."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        raise GatewayError(
            status, "invalid_request", f"{field}: not an image (send a PNG, JPEG or WebP)", field
        ) from None
    return data


DEPLOYMENT_SECONDS = 30.0
"""How long the model's configured limits are taken as read: requests between two reads ask Triton nothing."""
STILLS = {"thumbnail": media.thumbnail, "spritesheet": media.spritesheet}
"""Images derived from a finished video, by the name of OpenAI's content variant."""


class DataPlane:
    def __init__(
        self,
        store: Store,
        runner: JobRunner,
        svd: ModelClient,
        webhooks: Webhooks,
        fetcher: ImageFetcher,
        settings: Settings,
    ):
        self.store, self.runner, self.svd, self.webhooks, self.settings = store, runner, svd, webhooks, settings
        self.fetcher = fetcher
        self._deployment: tuple[float, Deployment | None] = (-DEPLOYMENT_SECONDS, None)
        """When the model's configured parameters were last read, and what they were."""
        self.controls: dict[str, asyncio.Task] = {}
        """The CONTROL call in flight for each keep-warm action."""

    async def run(self, spec: JobSpec, base: str, caller: Principal) -> tuple[Job, bytes]:
        """A synchronous generation (the client waits on the line): the finished job and its video."""
        return await self.runner.run_now(await self.new_job(spec, base, caller), spec.image)

    async def queue(self, spec: JobSpec, base: str, caller: Principal) -> Job:
        """A polled job (or one whose client is called back), queued for whichever replica has a free slot."""
        if spec.webhook:
            await self.webhooks.check_target(spec.webhook)
        return await self.runner.submit(await self.new_job(spec, base, caller), spec.image)

    async def new_job(self, spec: JobSpec, base: str, caller: Principal) -> Job:
        """`caller`'s job of `spec`, its parameters through the one check (spec.check_parameters); its key's
        quotas are the store's to check as it is stored."""
        params = check_parameters(spec.params, spec.status)
        params.setdefault("seed", secrets.randbelow(MAX_SEED + 1))  # chosen now: a retry makes the same video
        job = self.runner.new_job(
            spec.origin,
            spec.image,
            params,
            dict(spec.echo),
            base,
            webhook=spec.webhook,
            events=spec.events,
            owner=caller.owner,
            api_key=caller.key,
            keep_input=spec.keep_image and bool(spec.image),
        )
        job.logs = "".join(f"{note}\n" for note in spec.notes)
        job.model, job.version = spec.model or job.model, spec.version or job.version
        return job

    async def image(self, value: str, field: str, caller: Principal, status: int = 400) -> bytes:
        """The bytes of an image reference: base64, a data URI, a file `caller`'s owner uploaded (its /v1/files
        URL), or a URL fetched within the allow-list (outbound.py); else `status` naming `field`. Whether they
        decode is the model's to say (INVALID_ARG naming the image), unless the family checks first (check_image)."""
        if upload := UPLOAD_URL.match(value):
            return await self.upload(upload.group(2), field, caller.owner, status)
        if value.startswith(("http://", "https://")):
            return await self.fetcher.fetch(value, field, status)
        return await run_in_threadpool(decode_base64, value, field, status)

    async def upload(self, file_id: str, field: str, owner: str, status: int = 400) -> bytes:
        """The bytes of a file `owner` uploaded to this gateway (or kept beside a video); `status` naming `field`
        when there is none of theirs by that id (any more)."""
        if await run_in_threadpool(self.store.get_upload, file_id, owner) is None:
            raise GatewayError(
                status,
                "not_found" if status == 404 else "invalid_request",
                f"{field}: no file {file_id[:40]} on this gateway (or it has expired)",
                field,
            )
        return await run_in_threadpool(self.store.read_upload, file_id)

    async def deployment(self) -> Deployment | None:
        """The model's request defaults and limits (svd_contract.Deployment), read from Triton at most once per
        DEPLOYMENT_SECONDS (a reloaded model's new limits are seen within that); None when Triton cannot be asked,
        and the model then judges the request alone."""
        read_at, deployment = self._deployment
        if time.monotonic() - read_at < DEPLOYMENT_SECONDS:
            return deployment
        try:
            deployment = await self.svd.deployment()
        except SVDClientError:
            return None
        self._deployment = (time.monotonic(), deployment)
        return deployment

    async def kept_input(self, job: Job, field: str) -> bytes:
        """The image a finished job started from, kept as long as its video (Job.keep_input): b"" for text-to-video;
        a 400 naming `field` once it is gone. Videos from before keep_input kept it as an uploaded file."""
        if job.mode == "text":
            return b""
        if not job.keep_input and job.input.get("image_file"):
            assert job.owner is not None, "every job has an owner since accounts"
            return await self.upload(job.input["image_file"], field, job.owner)
        try:
            return await run_in_threadpool(self.store.read_input, job.id)
        except FileNotFoundError:
            raise GatewayError(
                400, "invalid_value", f"{field}: the input image of {job.id} has expired", field
            ) from None

    async def still(self, job: Job, variant: str) -> bytes:
        """A JPEG made from the job's video: its first frame (thumbnail) or a sprite sheet of its frames. A video
        ffmpeg cannot read is the model server's output gone bad, nothing the client sent: 502, as a failed model
        call."""
        video = await run_in_threadpool(self.store.read_output, job.output_key)
        try:
            return await run_in_threadpool(STILLS[variant], video, self.store.blobs.scratch)
        except media.Undecodable as error:
            raise GatewayError(
                502, "server_error", f"video {job.id} could not be decoded into a {variant}: {error}"
            ) from None

    async def wait(self, job_id: str, seconds: float) -> Job | None:
        """The job once finished, or as it is after `seconds`."""
        return await self.runner.wait(job_id, seconds)

    async def cancel(self, job_id: str) -> Job | None:
        """A queued job is canceled at once; a running one stops within a denoising step."""
        return await self.runner.cancel(job_id)

    async def control(self, action: str) -> dict[str, Any]:
        """One CONTROL call per action at a time: concurrent starts share it (one load, every caller answered)."""
        task = self.controls.get(action)
        if task is None:
            task = asyncio.ensure_future(self.svd.control(action))
            self.controls[action] = task
            task.add_done_callback(lambda _: self.controls.pop(action, None))
        try:
            return await asyncio.shield(task)
        except SVDClientError as error:
            raise GatewayError(503, "unavailable", f"the model did not answer {action}: {error}") from None
