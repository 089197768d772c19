"""A webhook receiver on loopback for tests: records every POST it gets."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver:
    """Records every POST; answers 500 on paths starting with /fail."""

    def __init__(self):
        self.calls: list[tuple[str, dict, str]] = []
        calls = self.calls

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"])).decode()
                calls.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(500 if self.path.startswith("/fail") else 200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def on(self, path: str) -> list[tuple[dict, dict]]:
        return [(headers, json.loads(body)) for p, headers, body in self.calls if p == path]

    def wait_for(self, path: str, count: int, seconds: float = 60) -> list[tuple[dict, dict]]:
        deadline = time.monotonic() + seconds
        while len(self.on(path)) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.on(path)
