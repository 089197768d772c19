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
from typing import Any

from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from svd_triton.client import AsyncSVDClient
from svd_triton.errors import SVDClientError
from . import media, schemas
from .errors import GatewayError
from .jobs import JobRunner
from .outbound import ImageFetcher
from .schemas import PredictionInput, model_parameters, prediction_parameters
from .settings import Settings
from .spec import check_parameters
from .store import Job, Store, sha256
from .webhooks import Webhooks

DATA_URI = re.compile(r"^data:[\w.+/-]*(;[\w=.+-]+)*;base64,", re.I)
UPLOAD_URL = re.compile(schemas.UPLOAD_URL)


def is_remote(value: str) -> bool:
    """Whether an image reference is a URL to fetch (not base64, a data URI or an upload's URL on this gateway)."""
    return value.startswith(("http://", "https://")) and not UPLOAD_URL.match(value)


def image_bytes(value: str, store: Store, field: str, status: int = 400) -> bytes:
    """An image given as base64, a data URI, or the URL of a file uploaded to this gateway (`/v1/files/{id}`)."""
    upload = UPLOAD_URL.match(value)
    if upload:
        found = store.get_upload(upload.group(2))
        if not found:
            raise GatewayError(status, "invalid_request", f"{field}: no uploaded file {upload.group(2)[:40]} on this "
                               "gateway (or it has expired)", field)
        return store.read_upload(found.id)
    try:
        return base64.b64decode(DATA_URI.sub("", value.strip()), validate=True)
    except (binascii.Error, ValueError):
        raise GatewayError(status, "invalid_request",
                           f"{field}: not valid base64 (or a data:image/...;base64, URI)", field) from None


def check_image(data: bytes, field: str, status: int = 400) -> bytes:
    """`data` if Pillow can read it as an image (checked before a job is stored), else a 4xx naming `field`."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        raise GatewayError(status, "invalid_request", f"{field}: not an image (send a PNG, JPEG or WebP)", field) from None
    return data


STILLS = {"thumbnail": media.thumbnail, "spritesheet": media.spritesheet}
"""Images derived from a finished video, by the name of OpenAI's content variant."""


class DataPlane:
    def __init__(self, store: Store, runner: JobRunner, svd: AsyncSVDClient, webhooks: Webhooks,
                 fetcher: ImageFetcher, settings: Settings):
        self.store, self.runner, self.svd, self.webhooks, self.settings = store, runner, svd, webhooks, settings
        self.fetcher = fetcher
        self.controls: dict[str, asyncio.Task] = {}
        """The CONTROL call in flight for each keep-warm action."""

    async def generate(self, origin: str, body: BaseModel, defaults: dict[str, Any],
                       base: str) -> tuple[Job, bytes, list[str]]:
        """A synchronous generation (TIR, Forge, OpenAI-style): the finished job, its video, and warnings for
        request fields the model ignores."""
        if body.image is None and getattr(body, "prompt", None) is None:
            raise GatewayError(400, "invalid_request",
                               "image: Field required (or send a prompt alone for text-to-video)", "image")
        # No image: text-to-video from the prompt (JobRunner sends a job whose params hold a prompt to text_to_video).
        image = b"" if body.image is None else await self.image(body.image, "image")
        params, warnings = model_parameters(body, defaults)
        given = body.model_dump(exclude_none=True, exclude={"image"})
        job, video = await self.runner.run_now(self.new_job(origin, image, params, given, base), image)
        return job, video, warnings

    async def create_prediction(self, request: PredictionInput, base: str, *, version: str, model: str | None,
                                webhook: str | None, events: list[str], owner: str | None) -> Job:
        """A Replicate prediction, queued."""
        image_ref, params, notes = prediction_parameters(request)
        # No image: text-to-video from the prompt (the runner sends a job whose params hold a prompt to text_to_video).
        image = b"" if image_ref is None else await self.image(image_ref, "input.input_image", 422)
        if webhook:
            await self.webhooks.check_target(webhook)
        given = request.model_dump(exclude_none=True)
        for name in ("input_image", "image"):  # inline images are not echoed back: their digest is
            if name in given and not given[name].startswith(("http://", "https://")):
                given[name] = f"sha256:{sha256(image)}"
        job = self.new_job("predictions", image, params, given, base, status=422, webhook=webhook, events=events,
                           owner=owner)
        job.logs = "".join(f"{note}\n" for note in notes)
        job.version = version
        if model:
            job.model = model
        return await self.runner.submit(job, image)

    def new_job(self, origin: str, image: bytes, params: dict[str, Any], given: dict[str, Any], base: str,
                status: int = 400, **record: Any) -> Job:
        """A job of `params` as every family's translation leaves them, through the one parameter check."""
        return self.runner.new_job(origin, image, check_parameters(params, status), given, base, **record)

    async def image(self, value: str, field: str, status: int = 400) -> bytes:
        """The bytes of an image reference: base64, a data URI, an upload of this gateway, or a URL fetched within
        the allow-list (outbound.py)."""
        if is_remote(value):
            return await self.fetcher.fetch(value, field, status)
        return await run_in_threadpool(image_bytes, value, self.store, field, status)

    async def submit(self, origin: str, image: bytes, params: dict[str, Any], given: dict[str, Any], base: str) -> Job:
        """A polled job (OpenAI's Videos API, Stability), queued; no image: text-to-video from params' prompt."""
        return await self.runner.submit(self.new_job(origin, image, params, given, base), image)

    async def deployment(self) -> dict[str, str]:
        """The model's configured parameters (default_width, max_pixels, max_segments, ...); empty when Triton
        cannot be asked, and the model then judges the request alone."""
        try:
            config = await self.svd.model_config()
        except SVDClientError:
            return {}
        return {name: value["string_value"] for name, value in config.get("parameters", {}).items()}

    async def keep_image(self, image: bytes, name: str) -> str:
        """Keep a job's image as long as its video (a file like /v1/files' uploads), so that later jobs (an
        extension, a remix) can start from it; returns the file's id."""
        upload = await run_in_threadpool(self.store.add_upload, name, "application/octet-stream", image, sha256(image),
                                         len(image), self.settings.output_seconds)
        return upload.id

    async def still(self, job: Job, variant: str) -> bytes:
        """A JPEG made from the job's video: its first frame (thumbnail) or a sprite sheet of its frames. A video
        ffmpeg cannot read is the model server's output gone bad, nothing the client sent: 502, as a failed model call."""
        video = await run_in_threadpool(self.store.read_output, job.output_key)
        try:
            return await run_in_threadpool(STILLS[variant], video, self.store.blobs.scratch)
        except media.Undecodable as error:
            raise GatewayError(502, "server_error", f"video {job.id} could not be decoded into a {variant}: "
                                                    f"{error}") from None

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
