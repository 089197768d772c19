"""Real gateways for tests: in a thread of the test process, or as a `svd-triton gateway` process that a
test can SIGKILL and start again on the same store."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import replicate
import requests
import uvicorn

from tests.support import TOKEN
from svd_gateway import Settings, create_app, server_options
from svd_triton.launcher import free_port


class Gateway:
    """create_app(settings) served by uvicorn in a thread, on a free port."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=self.port,
                                                    log_level="warning", **server_options(settings)))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.server.started, "the gateway did not start"
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=15)


def settings_for(triton, data_dir: Path, **overrides) -> Settings:
    """Gateway settings for a TritonServer from the launcher: its gRPC and metrics ports, the test token."""
    return Settings(triton_url=triton.grpc_url, token=TOKEN, data_dir=data_dir,
                    metrics_url=f"http://localhost:{triton.options.metrics_port}/metrics", **overrides)


class GatewayProcess:
    """`python -m svd_triton gateway ...` on a free port; `kill()` is SIGKILL, `start()` starts it again.
    `launch()` and `wait_ready()` split `start()`, so that several can start at the same instant."""

    def __init__(self, *args: str, log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [sys.executable, "-m", "svd_triton", "gateway", "--port", str(self.port), *args]
        self.log = log
        self.process: subprocess.Popen | None = None

    def start(self) -> "GatewayProcess":
        return self.launch().wait_ready()

    def launch(self) -> "GatewayProcess":
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
        return self

    def wait_ready(self, seconds: float = 60) -> "GatewayProcess":
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            try:
                requests.get(f"{self.url}/openapi.json", timeout=10)
                return self
            except (requests.ConnectionError, requests.Timeout):  # not listening yet, or busy building its schema
                time.sleep(0.1)
        raise AssertionError("the gateway process did not start: " + self.log.read_text()[-3000:])

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def pause(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def terminate(self, seconds: float = 120) -> int:
        """SIGTERM, as Kubernetes stops a pod; the exit status once it has drained and exited."""
        self.process.terminate()
        return self.process.wait(timeout=seconds)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


def replicate_client(gateway) -> replicate.Client:
    """The official `replicate` client pointed at `gateway`, polling fast enough for the tiny model."""
    client = replicate.Client(api_token=TOKEN, base_url=gateway.url)
    client.poll_interval = 0.1
    return client
