"""Nebius Forge's model catalogue: the inference route and the runtime routes, answered from what this
deployment measured.

Forge's page for SVD-XT hands its users scripts that call, besides the inference route:
inference-routes (verify the target), run-estimate, reliability, the model family's status and
start (prewarm, `run_until_stopped` to pin). This router answers them for one deployment: its
slug and version, its own GPU (or `cpu`) and the configured region. Numbers come from the model's
Prometheus metrics (svd_* families: request and cold-start histograms, outcome counters, the
keep-warm state gauges), read with the lifespan's HTTP client; keep-warm actions are CONTROL requests
through the data plane (service.DataPlane.control: one call per action at a time). With no traffic
yet the routes say so instead of inventing numbers. A client pinning another GPU, region or version is
answered with a warning, not refused, so moving a Forge client here needs only a new base URL and token.
The guard middleware checks the token.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass
from typing import Annotated, Any

import httpx
from fastapi import Depends, Path, Query
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from svd_contract import MIME_TYPES
from svd_triton.client import MODEL_NAME

from ...catalogue import CatalogueBody, catalogue_spec
from ...deps import BaseURL, Caller, DataPlaneDep, HTTPDep, Operator, SettingsDep
from ...errors import GENERATION, GUARDED, GatewayError, HouseError, error_responses, family_router
from ...schemas import NAME_PATTERN
from ...settings import Settings

SLUG = "stabilityai-stable-video-diffusion"
# The schema names the one slug served; any other gets a 404 naming it (check_slug), not a validation error.
Slug = Annotated[str, Path(description="the model's catalogue slug", json_schema_extra={"enum": [SLUG]})]
MODEL_VERSION = "img2vid-xt-diffusers"
SERVER_FAULTS = ("failed",)
"""Outcomes that count against success; invalid and cancelled requests are the client's doing."""

router = family_router(tags=["Nebius Forge"], responses=error_responses(HouseError, 400, *GUARDED, 404, *GENERATION))
FORGE_PINS = ("model_version", "gpu_type", "region")
"""Body fields naming a target: never sent to the model; a mismatch is a warning (`target`)."""


class ForgeRequest(CatalogueBody):
    """Nebius Forge model catalogue: a data-URI image; prompt fields accepted and reported as ignored,
    target pins (model_version, gpu_type, region) that this deployment does not match reported as warnings."""

    negative_prompt: str | None = None
    model_version: str | None = Field(None, pattern=NAME_PATTERN)
    gpu_type: str | None = Field(None, pattern=NAME_PATTERN)
    region: str | None = Field(None, pattern=NAME_PATTERN)


class StartRequest(BaseModel):
    """The body Forge's runtime warmup script posts."""

    model_config = ConfigDict(extra="forbid", strict=True)
    version: str | None = Field(default=None, pattern=NAME_PATTERN)  # default= by name: StartRequest() type-checks
    gpu_type: str | None = Field(default=None, pattern=NAME_PATTERN)
    region: str | None = Field(default=None, pattern=NAME_PATTERN)
    run_until_stopped: StrictBool = False


class StopRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    version: str | None = Field(None, pattern=NAME_PATTERN)


def gpu_type_of(device_name: str) -> str:
    """Forge's short GPU names from CUDA's: `NVIDIA L40S` → L40S, `NVIDIA H100 80GB HBM3` → H100; `cpu` stays."""
    words = device_name.replace("NVIDIA", "").split()
    return words[0] if words else device_name


@dataclass
class Measured:
    """What the model's metrics say about this deployment right now."""

    state: str | None
    since: float | None
    keep_warm_left_seconds: float | None
    pinned: bool
    last_cold_start_seconds: float | None
    gpu_type: str | None
    outcomes: dict[str, int]
    request_p50: float | None
    request_samples: int
    cold_start_p50: float | None
    cold_start_samples: int

    @property
    def served(self) -> int:
        return self.outcomes.get("success", 0) + sum(self.outcomes.get(o, 0) for o in SERVER_FAULTS)


def histogram_quantile(quantile: float, buckets: list[tuple[float, float]]) -> float | None:
    """Prometheus' histogram_quantile over cumulative (upper bound, count) buckets: linear within the bucket."""
    buckets = sorted(buckets)
    total = buckets[-1][1] if buckets else 0
    if total == 0:
        return None
    rank = quantile * total
    lower, below = 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if math.isinf(upper):
                return lower  # beyond the last finite bucket: its bound is all that is known
            return lower + (upper - lower) * (rank - below) / max(count - below, 1e-12)
        lower, below = upper, count
    return lower


def read_metrics(text: str, model: str) -> Measured:
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("model") == model:
                samples.setdefault(sample.name, []).append(sample)

    def single(name):
        found = samples.get(name)
        return found[0].value if found else None

    def histogram(name):
        buckets = [(float(s.labels["le"]), s.value) for s in samples.get(name + "_bucket", [])]
        count = int(single(name + "_count") or 0)
        return (histogram_quantile(0.5, buckets) if count else None), count

    state = next((s.labels["state"] for s in samples.get("svd_model_state", []) if s.value == 1), None)
    left = single("svd_keep_warm_remaining_seconds")
    device = samples.get("svd_device_info")
    request_p50, request_samples = histogram("svd_request_seconds")
    cold_p50, cold_samples = histogram("svd_cold_start_seconds")
    last_cold = single("svd_last_cold_start_seconds")
    return Measured(
        state=state,
        since=single("svd_model_state_since_seconds"),
        keep_warm_left_seconds=left if state == "warm" and left is not None and left >= 0 else None,
        pinned=single("svd_model_pinned") == 1,
        last_cold_start_seconds=last_cold or None,
        gpu_type=gpu_type_of(device[0].labels["name"]) if device else None,
        outcomes={s.labels["outcome"]: int(s.value) for s in samples.get("svd_requests_total", [])},
        request_p50=request_p50,
        request_samples=request_samples,
        cold_start_p50=cold_p50,
        cold_start_samples=cold_samples,
    )


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def check_slug(slug: str) -> None:
    if slug != SLUG:
        raise GatewayError(404, "not_found", f"unknown model {slug!r}; this deployment serves {SLUG!r}", "slug")


async def measured(http: httpx.AsyncClient, settings: Settings) -> Measured:
    """The model's svd_* metrics now; 503 when Triton's metrics are unreachable or the model is not loaded."""
    try:
        reply = await http.get(settings.metrics, timeout=10)
        reply.raise_for_status()
    except httpx.HTTPError:
        raise GatewayError(503, "unavailable", "the model's metrics are not reachable") from None
    found = read_metrics(reply.text, MODEL_NAME)
    if found.state is None:
        raise GatewayError(503, "unavailable", f"model {MODEL_NAME!r} is not loaded (no keep-warm metrics)")
    return found


def target(settings: Settings, own_gpu: str | None, version, gpu_type, region) -> tuple[dict[str, Any], list[str]]:
    """This deployment as a Forge target, and warnings for pins it does not match."""
    own = {"model_version": MODEL_VERSION, "gpu_type": own_gpu, "region": settings.region}
    warnings = [
        f"{name} {asked!r} was asked; this deployment is {own[name]!r}"
        for name, asked in (("model_version", version), ("gpu_type", gpu_type), ("region", region))
        if asked is not None and asked != own[name]
    ]
    return own, warnings


def costs(settings: Settings, seconds: float | None) -> float | None:
    if seconds is None or settings.gpu_hour_price is None:
        return None
    return float(f"{seconds / 3600 * settings.gpu_hour_price:.6g}")  # six significant digits: cents are tiny here


Version = Query(None, pattern=NAME_PATTERN, description="model_version; another version is a warning")
Gpu = Query(None, pattern=NAME_PATTERN, description="a pinned GPU; another GPU is a warning")
Region = Query(None, pattern=NAME_PATTERN, description="a pinned region; another region is a warning")


@dataclass
class Pinned:
    """What a catalogue route starts from: the model's metrics, this deployment as a Forge target, warnings
    for the pins it does not match, and the pins given."""

    found: Measured
    own: dict[str, Any]
    warnings: list[str]
    filters: dict[str, str]


async def pinned_target(
    slug: Slug,
    http: HTTPDep,
    settings: SettingsDep,
    model_version: str | None = Version,
    gpu_type: str | None = Gpu,
    region: str | None = Region,
) -> Pinned:
    check_slug(slug)
    found = await measured(http, settings)
    own, warnings = target(settings, found.gpu_type, model_version, gpu_type, region)
    filters = {k: v for k, v in (("model_version", model_version), ("gpu_type", gpu_type), ("region", region)) if v}
    return Pinned(found, own, warnings, filters)


PinnedTarget = Annotated[Pinned, Depends(pinned_target)]


@router.post("/v1/inference/{slug}", summary="Inference")
async def inference(
    slug: Slug,
    body: ForgeRequest,
    plane: DataPlaneDep,
    base: BaseURL,
    http: HTTPDep,
    settings: SettingsDep,
    caller: Caller,
):
    """A video from a data-URI image (prompt fields are then reported as ignored), or from a prompt alone
    (text-to-video); target pins that do not match this deployment are reported as warnings."""
    check_slug(slug)
    spec, warnings = await catalogue_spec("forge", body, plane, caller, own=set(FORGE_PINS))
    job, video = await plane.run(spec, base, caller)
    pins = body.model_dump(include=set(FORGE_PINS))
    own_gpu = None
    if pins["gpu_type"] is not None:
        try:
            own_gpu = (await measured(http, settings)).gpu_type
        except GatewayError:
            pass  # the video is made; an unknown own GPU only words the warning
    warnings += target(settings, own_gpu, pins["model_version"], pins["gpu_type"], pins["region"])[1]
    assert job.completed_at is not None, "run() answers a finished job"
    return {
        "model": slug,
        "video": base64.b64encode(video).decode(),
        "format": job.output_format,
        "mime_type": MIME_TYPES.get(job.output_format) if job.output_format is not None else None,
        "seed": job.seed,
        "seconds": round((job.completed_at - job.created_at).total_seconds(), 3),
        "warnings": warnings,
    }


@router.get("/v1/models/{slug}/inference-routes")
async def inference_routes(pinned: PinnedTarget):
    """The route this deployment serves for the model (Forge's "Verify target")."""
    route = {
        "route": f"/v1/inference/{SLUG}",
        "method": "POST",
        "model": SLUG,
        **pinned.own,
        "status": pinned.found.state,
    }
    return {"slug": SLUG, "routes": [route], "warnings": pinned.warnings}


@router.get("/v1/models/{slug}/run-estimate")
async def run_estimate(pinned: PinnedTarget, settings: SettingsDep):
    """Warm and first-cold request time from measured p50s; cost only with a configured GPU-hour price."""
    found, own, warnings = pinned.found, pinned.own, pinned.warnings
    warm = found.request_p50
    cold_start = found.cold_start_p50
    cold = None if warm is None or cold_start is None else warm + cold_start
    if warm is None:
        warnings.append("no request measured yet: estimates appear after the first generated video")
    elif cold_start is None:
        warnings.append("no cold start measured yet: the first-cold estimate appears after one")
    return {
        "slug": SLUG,
        **own,
        "status": found.state,
        "warm_request_ms_p50": ms(warm),
        "cold_start_ms_p50": ms(cold_start),
        "cold_request_ms": ms(cold),
        "request_samples": found.request_samples,
        "cold_start_samples": found.cold_start_samples,
        "cost_per_gpu_hour_usd": settings.gpu_hour_price,
        "estimated_warm_request_cost_usd": costs(settings, warm),
        "estimated_cold_request_cost_usd": costs(settings, cold),
        "warnings": warnings,
    }


@router.get("/v1/models/{slug}/reliability")
async def reliability(pinned: PinnedTarget, settings: SettingsDep):
    """The payload Forge's reliability script reads, from this deployment's observed outcomes."""
    found, own, warnings, filters = pinned.found, pinned.own, pinned.warnings, pinned.filters
    successes = found.outcomes.get("success", 0)
    rate = successes / found.served if found.served else None
    status = "no_traffic" if rate is None else "works" if rate == 1 else "degraded" if successes else "failing"
    row = {
        **own,
        "status": status,
        "request_ms_p50": ms(found.request_p50),
        "request_samples": found.request_samples,
        "cold_start_ms_p50": ms(found.cold_start_p50),
        "observed_success_rate": rate,
        "cost_per_gpu_hour_usd": settings.gpu_hour_price,
        "estimated_warm_request_cost_usd": costs(settings, found.request_p50),
    }
    supported = status in ("works", "degraded")
    if not supported:
        warnings.append(
            "no request served yet: nothing observed to report"
            if status == "no_traffic"
            else "every observed request failed"
        )
    return {
        "slug": SLUG,
        "reliability_status": status,
        "supported_rows": int(supported),
        "total_rows": 1,
        "filters": filters,
        "rows": [row],
        "fastest_supported_target": row if supported else None,
        "lowest_cost_supported_target": row if supported else None,
        "status_counts": {status: 1},
        "failure_reason_counts": {o: n for o, n in found.outcomes.items() if o != "success" and n},
        "warnings": warnings,
    }


@router.get("/v1/model-families/{slug}/status")
async def family_status(slug: Slug, http: HTTPDep, settings: SettingsDep, version: str | None = Version):
    """cold / starting / warm, from the model's keep-warm gauges (answers at once, even mid-request)."""
    check_slug(slug)
    found = await measured(http, settings)
    own, warnings = target(settings, found.gpu_type, version, None, None)
    return {
        "slug": SLUG,
        "version": MODEL_VERSION,
        "status": found.state,
        "since": found.since,
        "keep_warm": found.pinned,
        "keep_warm_left_seconds": found.keep_warm_left_seconds,
        "last_cold_start_ms": ms(found.last_cold_start_seconds),
        "gpu_type": own["gpu_type"],
        "region": own["region"],
        "warnings": warnings,
    }


@router.post("/v1/model-families/{slug}/start")
async def start(
    slug: Slug, plane: DataPlaneDep, settings: SettingsDep, operator: Operator, body: StartRequest | None = None
):
    """Prewarm (weights onto the device, no video); run_until_stopped pins them until /stop. Admin scope: it acts
    on the deployment every owner shares."""
    check_slug(slug)
    body = body or StartRequest()
    state = await plane.control("pin" if body.run_until_stopped else "prewarm")
    own, warnings = target(settings, gpu_type_of(state["device_name"]), body.version, body.gpu_type, body.region)
    return {
        "slug": SLUG,
        "version": MODEL_VERSION,
        "gpu_type": own["gpu_type"],
        "region": own["region"],
        "startup_ms": ms(state["startup_seconds"]) if state["was_cold_start"] else 0,
        "was_cold_start": state["was_cold_start"],
        "keep_warm": state["pinned"],
        "status": state["state"],
        "keep_warm_left_seconds": state["keep_warm_left_seconds"],
        "warnings": warnings,
    }


@router.post("/v1/model-families/{slug}/stop")
async def stop(slug: Slug, plane: DataPlaneDep, operator: Operator, body: StopRequest | None = None):
    """Unpin and free the device now; the next request or start pays a cold start. Admin scope, as start."""
    check_slug(slug)
    state = await plane.control("release")
    return {"slug": SLUG, "version": MODEL_VERSION, "status": state["state"], "keep_warm": state["pinned"]}
