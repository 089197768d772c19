"""The REST gateway in a thread on a free port (uvicorn), for tests against a real Triton."""
import threading
import time

import uvicorn

from conftest import TOKEN
from svd_triton.gateway import Settings, create_app
from svd_triton.launcher import free_port


class Gateway:
    def __init__(self, settings: Settings):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)


def settings_for(triton, **overrides) -> Settings:
    """Gateway settings for a TritonServer from the launcher: its gRPC and metrics ports, the test token."""
    return Settings(triton_url=triton.grpc_url, token=TOKEN,
                    metrics_url=f"http://localhost:{triton.options.metrics_port}/metrics", **overrides)
