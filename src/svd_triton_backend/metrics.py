"""Custom Prometheus metrics, served by Triton on its metrics port beside its own nv_* ones."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import triton_python_backend_utils as pb_utils

from svd_engine.keep_warm import STATES

if TYPE_CHECKING:  # annotations only: the engine's modules import torch
    from svd_engine.engine import GenerationResult
    from svd_engine.request import GenerationRequest


class Metrics:
    """Custom Prometheus metrics, served by Triton on its metrics port beside its own nv_* ones."""

    PHASES = ("image", "preparing", "denoising", "decoding", "encoding")
    OUTCOMES = ("success", "invalid", "cancelled", "failed")
    BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160]

    def __init__(self, model_name: str, warmup: int = 0) -> None:
        """The first `warmup` requests are Triton's model_warmup, run before the model is ready: not
        user traffic, so not counted (Forge's reliability route must say "no traffic" until there is)."""
        self.warmup = warmup
        labels = {"model": model_name}
        family = pb_utils.MetricFamily
        # The families must outlive their metrics: they are kept as attributes.
        self.families = [
            family("svd_request_phase_seconds", "Seconds each request spent in a phase", family.HISTOGRAM),
            family("svd_requests_total", "Requests by outcome", family.COUNTER),
            family("svd_frames_generated_total", "Video frames generated", family.COUNTER),
            family("svd_denoising_steps_per_second", "Denoising steps per second of the last request", family.GAUGE),
            family("svd_requests_running", "Requests the model is computing now (its current batch)", family.GAUGE),
        ]
        phases, outcomes, frames, step_rate, running = self.families
        self.phases = {p: phases.Metric({**labels, "phase": p}, buckets=self.BUCKETS) for p in self.PHASES}
        self.outcomes = {o: outcomes.Metric({**labels, "outcome": o}) for o in self.OUTCOMES}
        self.frames = frames.Metric(labels)
        self.step_rate = step_rate.Metric(labels)
        self.running = running.Metric(labels)
        state_families = [
            family("svd_model_state", "1 for the keep-warm state the model is in (warm, cold, starting)", family.GAUGE),
            family("svd_model_state_since_seconds", "Unix time the model entered its keep-warm state", family.GAUGE),
            family(
                "svd_keep_warm_remaining_seconds",
                "Idle seconds left before the weights leave the device; "
                "-1 when they never do (keep_warm_seconds -1, or pinned); 0 when cold",
                family.GAUGE,
            ),
            family(
                "svd_last_cold_start_seconds",
                "Seconds the last cold start took to bring the weights back",
                family.GAUGE,
            ),
            family("svd_cold_starts_total", "Requests and prewarms that brought released weights back", family.COUNTER),
            family("svd_model_pinned", "1 while pinned warm (prewarm with pin, until released)", family.GAUGE),
            family("svd_weight_bytes_on_device", "Bytes of weights held on the serving device", family.GAUGE),
            family(
                "svd_cold_start_seconds", "Seconds each cold start took to bring the weights back", family.HISTOGRAM
            ),
            family(
                "svd_request_seconds", "Seconds from a request's image decode to its encoded video", family.HISTOGRAM
            ),
            family("svd_device_info", "The serving device (label name: the GPU model, or cpu)", family.GAUGE),
        ]
        self.families += state_families
        (
            state,
            since,
            remaining,
            cold_start,
            cold_starts,
            pinned,
            weight_bytes,
            cold_start_seconds,
            request_seconds,
            self.device_family,
        ) = state_families
        self.cold_start_seconds = cold_start_seconds.Metric(labels, buckets=self.BUCKETS)
        self.request_seconds = request_seconds.Metric(labels, buckets=self.BUCKETS)
        self.labels = labels
        self.device_info: pb_utils.Metric | None = None
        self.state = {s: state.Metric({**labels, "state": s}) for s in STATES}
        self.since, self.remaining, self.cold_start = (
            since.Metric(labels),
            remaining.Metric(labels),
            cold_start.Metric(labels),
        )
        self.cold_starts, self.pinned, self.weight_bytes = (
            cold_starts.Metric(labels),
            pinned.Metric(labels),
            weight_bytes.Metric(labels),
        )
        self.cold_starts_counted = 0

    def keep_warm(self, state: Mapping[str, Any]) -> None:
        """Mirror KeepWarm.state() into the gauges (called at each transition and timer tick)."""
        for name, metric in self.state.items():
            metric.set(1 if state["state"] == name else 0)
        self.since.set(state["since"])
        left = state["keep_warm_left_seconds"]
        self.remaining.set(0 if state["state"] != "warm" else -1 if left is None else left)
        self.cold_start.set(state["last_cold_start_seconds"] or 0)
        if state["cold_starts"] > self.cold_starts_counted:
            self.cold_starts.increment(state["cold_starts"] - self.cold_starts_counted)
            self.cold_start_seconds.observe(state["last_cold_start_seconds"])
            self.cold_starts_counted = state["cold_starts"]
        if self.device_info is None:
            self.device_info = self.device_family.Metric(
                {**self.labels, "device": state["device"], "name": state["device_name"]}
            )
            self.device_info.set(1)
        self.pinned.set(1 if state["pinned"] else 0)
        self.weight_bytes.set(state["weight_bytes_on_device"])

    def is_warmup(self) -> bool:
        if self.warmup > 0:
            self.warmup -= 1
            return True
        return False

    def count(self, outcome: str) -> None:
        if not self.is_warmup():
            self.outcomes[outcome].increment(1)

    def succeeded(self, timings: Mapping[str, float]) -> bool:
        """Count one successful request and its phase seconds; False (nothing counted) for a warm-up request."""
        if self.is_warmup():
            return False
        self.outcomes["success"].increment(1)
        for phase, seconds in timings.items():
            self.phases[phase].observe(seconds)
        self.request_seconds.observe(sum(timings.values()))
        return True

    def observe(self, spec: GenerationRequest, result: GenerationResult) -> None:
        """A generated video: its phases, frames and denoising rate."""
        if not self.succeeded(result.timings):
            return
        self.frames.increment(spec.num_frames * spec.segments)
        if result.timings["denoising"] > 0:
            self.step_rate.set(spec.num_inference_steps * spec.segments / result.timings["denoising"])
