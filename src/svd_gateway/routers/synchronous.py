"""The synchronous shapes of hosted SVD endpoints: E2E TIR and OpenAI-style (Nebius Forge's: forge.py). Each
request is a job in the same durable store as predictions; the client waits on the line for its result."""
from __future__ import annotations

import base64
import time
from typing import Any

from fastapi import APIRouter, Path
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from ..deps import BaseURL, RunnerDep, StoreDep, image_bytes
from ..errors import GatewayError
from ..jobs import output_url
from ..schemas import PredictRequest, VideoGenerationRequest, model_parameters

tir = APIRouter(tags=["E2E TIR"])
openai = APIRouter(tags=["OpenAI-style"])


async def generate(origin: str, body: BaseModel, defaults: dict[str, Any], runner: RunnerDep, store: StoreDep,
                   base: str):
    if body.image is None and getattr(body, "prompt", None) is None:
        raise GatewayError(400, "invalid_request", "image: Field required (or send a prompt alone for text-to-video)",
                           "image")
    # No image: text-to-video from the prompt (JobRunner sends a job whose params hold a prompt to text_to_video).
    image = b"" if body.image is None else await run_in_threadpool(image_bytes, body.image, store, "image")
    params, warnings = model_parameters(body, defaults)
    given = body.model_dump(exclude_none=True, exclude={"image"})
    job, video = await runner.run_now(runner.new_job(origin, image, params, given, base), image)
    return job, video, warnings


@tir.post("/v1/models/{model}:predict", summary="Predict (a named model)")
async def predict_model(body: PredictRequest, runner: RunnerDep, store: StoreDep, base: BaseURL,
                        model: str = Path(description="The endpoint's model name; this gateway serves one model.")):
    _, video, _ = await generate("tir", body, {"video_format": "avi"}, runner, store, base)
    return {"predictions": base64.b64encode(video).decode()}


@tir.post("/predict", summary="Predict")
async def predict(body: PredictRequest, runner: RunnerDep, store: StoreDep, base: BaseURL):
    _, video, _ = await generate("tir", body, {"video_format": "avi"}, runner, store, base)
    return {"predictions": base64.b64encode(video).decode()}


@openai.post("/v1/video/generations")
async def video_generations(body: VideoGenerationRequest, runner: RunnerDep, store: StoreDep, base: BaseURL):
    job, video, warnings = await generate("openai", body, {}, runner, store, base)
    entry: dict[str, Any] = {"revised_prompt": None}
    if body.response_format in (None, "url"):
        entry["url"] = output_url(job)
    if body.response_format in (None, "b64_json"):
        entry["b64_json"] = base64.b64encode(video).decode()
    return {"created": int(time.time()), "data": [entry], "warnings": warnings}
