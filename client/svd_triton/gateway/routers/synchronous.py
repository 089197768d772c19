"""The synchronous shapes of hosted SVD endpoints: E2E TIR, Nebius Forge and OpenAI-style. Each request
is a job in the same durable store as predictions; the client waits on the line for its result."""
from __future__ import annotations

import base64
import time
from typing import Any

import httpx
from fastapi import APIRouter, Path
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from ...client import MODEL_NAME
from ...contract import MIME_TYPES
from ..deps import BaseURL, HTTPDep, RunnerDep, SettingsDep, StoreDep, SVDDep, image_bytes
from ..errors import GatewayError
from ..jobs import output_url
from ..schemas import ForgeRequest, PredictRequest, VideoGenerationRequest, model_parameters

tir = APIRouter(tags=["E2E TIR"])
forge = APIRouter(tags=["Nebius Forge"])
openai = APIRouter(tags=["OpenAI-style"])
ESTIMATE_COUNTERS = ("nv_inference_request_duration_us", "nv_inference_request_success")


async def _generate(origin: str, body: BaseModel, defaults: dict[str, Any], runner: RunnerDep, store: StoreDep,
                    base: str):
    image = await run_in_threadpool(image_bytes, body.image, store, "image")
    params, warnings = model_parameters(body, defaults)
    given = body.model_dump(exclude_none=True, exclude={"image"})
    job, video = await runner.run_now(runner.new_job(origin, image, params, given, base), image)
    return job, video, warnings


@tir.post("/v1/models/{model}:predict", summary="Predict (a named model)")
async def predict_model(body: PredictRequest, runner: RunnerDep, store: StoreDep, base: BaseURL,
                        model: str = Path(description="The endpoint's model name; this gateway serves one model.")):
    _, video, _ = await _generate("tir", body, {"video_format": "avi"}, runner, store, base)
    return {"predictions": base64.b64encode(video).decode()}


@tir.post("/predict", summary="Predict")
async def predict(body: PredictRequest, runner: RunnerDep, store: StoreDep, base: BaseURL):
    _, video, _ = await _generate("tir", body, {"video_format": "avi"}, runner, store, base)
    return {"predictions": base64.b64encode(video).decode()}


@forge.post("/v1/inference/{slug}")
async def forge_inference(slug: str, body: ForgeRequest, runner: RunnerDep, store: StoreDep, base: BaseURL):
    job, video, warnings = await _generate("forge", body, {}, runner, store, base)
    return {"model": slug, "video": base64.b64encode(video).decode(), "format": job.output_format,
            "mime_type": MIME_TYPES.get(job.output_format), "seed": job.seed,
            "seconds": round((job.completed_at - job.created_at).total_seconds(), 3), "warnings": warnings}


@openai.post("/v1/video/generations")
async def video_generations(body: VideoGenerationRequest, runner: RunnerDep, store: StoreDep, base: BaseURL):
    job, video, warnings = await _generate("openai", body, {}, runner, store, base)
    entry: dict[str, Any] = {"revised_prompt": None}
    if body.response_format in (None, "url"):
        entry["url"] = output_url(job)
    if body.response_format in (None, "b64_json"):
        entry["b64_json"] = base64.b64encode(video).decode()
    return {"created": int(time.time()), "data": [entry], "warnings": warnings}


@forge.get("/v1/inference/{slug}/status")
async def runtime_status(slug: str, svd: SVDDep):
    warm = await svd.ready()
    return {"model": slug, "status": "warm" if warm else "cold", "ready": warm}


@forge.get("/v1/inference/{slug}/estimate")
async def run_estimate(slug: str, http: HTTPDep, settings: SettingsDep):
    """Mean seconds per successful request so far, from Triton's own counters."""
    try:
        reply = await http.get(settings.metrics, timeout=5)
        reply.raise_for_status()
    except httpx.HTTPError:
        raise GatewayError(503, "unavailable", "Triton's metrics endpoint is not reachable") from None
    totals = {name: 0.0 for name in ESTIMATE_COUNTERS}
    for family in text_string_to_metric_families(reply.text):
        if family.name in totals:  # counters: the parser names their samples <family>_total
            totals[family.name] += sum(s.value for s in family.samples if s.labels.get("model") == MODEL_NAME)
    count = totals["nv_inference_request_success"]
    if not count:
        return {"model": slug, "estimated_seconds": None, "based_on_requests": 0}
    return {"model": slug, "estimated_seconds": round(totals["nv_inference_request_duration_us"] / count / 1e6, 3),
            "based_on_requests": int(count)}
