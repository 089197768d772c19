"""The gateway's own Prometheus metrics, served on /metrics to a key with the admin scope.

The store's numbers (unfinished jobs by status, queue depth, the oldest queued job's age) are read from the
database at each scrape, so every replica reports the same cluster-wide values (aggregate them with max, not sum);
finished jobs are this process's counters (job durations by outcome), so a scrape costs the same however many
jobs the store keeps;
the others are this process's counters (running jobs, lease takeovers, job durations, webhook deliveries,
HTTP requests), labelled with its replica id where one series per replica is the point. Each app has its
own registry: several gateways in one process (the tests) do not collide.
"""

from __future__ import annotations

from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, start_http_server
from prometheus_client.core import GaugeMetricFamily
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .store import ACTIVE, Store

DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600)
"""Seconds: from a tiny test model to SVD-XT's long multi-clip jobs."""


class StoreCollector:
    """Cluster-wide job counts, read from the shared store at scrape time."""

    def __init__(self, store: Store):
        self.store = store

    def collect(self):
        by_status, oldest = self.store.counts()
        jobs = GaugeMetricFamily(
            "svd_gateway_jobs", "Unfinished jobs in the shared store by status (all replicas)", labels=["status"]
        )
        for status in ACTIVE:
            jobs.add_metric([status], by_status.get(status, 0))
        yield jobs
        yield GaugeMetricFamily(
            "svd_gateway_queue_depth",
            "Jobs waiting to be run (status starting), all replicas",
            value=by_status.get("queued", 0),
        )
        yield GaugeMetricFamily(
            "svd_gateway_oldest_queued_seconds", "Age of the oldest waiting job (0: none waits)", value=oldest or 0.0
        )


class GatewayMetrics:
    def __init__(self, replica: str):
        self.registry = CollectorRegistry()
        self.running = Gauge(
            "svd_gateway_running_jobs", "Jobs this replica is running", ["replica"], registry=self.registry
        ).labels(replica)
        self.takeovers = Counter(
            "svd_gateway_lease_takeovers",
            "Jobs whose expired lease this replica took over (their replica was lost)",
            registry=self.registry,
        )
        self.duration = Histogram(
            "svd_gateway_job_duration_seconds",
            "Time jobs ran on this replica, by outcome",
            ["status"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.retries = Counter(
            "svd_gateway_job_retries",
            "Job attempts lost to a fault of Triton and queued again, by cause (model_process, unavailable)",
            ["cause"],
            registry=self.registry,
        )
        self.webhooks = Counter(
            "svd_gateway_webhook_deliveries",
            "Webhook events sent by this replica: delivered, or failed after every retry",
            ["result"],
            registry=self.registry,
        )
        self.requests = Counter(
            "svd_gateway_http_requests",
            "HTTP requests by route template and status code",
            ["route", "code"],
            registry=self.registry,
        )

    def watch(self, store: Store) -> None:
        self.registry.register(StoreCollector(store))

    def serve(self, address: str) -> WSGIServer:
        """Serve these metrics at HOST:PORT without a key (prometheus_client's own server, in a thread), for a
        Prometheus that reaches the pod directly; stop it with `.shutdown()`."""
        host, _, port = address.rpartition(":")
        server, _ = start_http_server(int(port), addr=host or "0.0.0.0", registry=self.registry)
        return server

    def render(self) -> bytes:
        """The text exposition format (blocking: it queries the store)."""
        return generate_latest(self.registry)


class RequestCounter:
    """Pure ASGI middleware counting requests by route template (`/v1/predictions/{prediction_id}`, never the
    raw path, so ids do not multiply the series) and status code."""

    def __init__(self, app: ASGIApp, *, counter: Counter):
        self.app, self.counter = app, counter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = 500

        async def counting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            self.counter.labels(getattr(scope.get("route"), "path", "unmatched"), str(status)).inc()
