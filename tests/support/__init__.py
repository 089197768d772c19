"""Helpers the test tiers share: the token, free ports, a server from the CPU config, repository copies."""
import io
import shutil
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
REPOSITORY = ROOT / "model_repository"
SUPPORT = Path(__file__).resolve().parent
TOKEN = "test-token-7f3a"
"""The client key: what the test servers require for inference."""
ADMIN_TOKEN = "test-admin-c41d"
"""The operator's key: what the test servers require for load, unload and Triton's other administrative APIs."""


def encode_image(image: Image.Image, fmt: str = "PNG", **save_args) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save_args)
    return buffer.getvalue()


def on_free_ports(**options):
    """ServerOptions for this checkout's model repository with free HTTP, gRPC and metrics ports, so servers in
    one test run never collide. It loads svd_xt alone unless `models` says otherwise (`()`: every model): each
    other model is one more Python stub to start, about 7 CPU-seconds here."""
    from svd_triton.launcher import ServerOptions, free_port

    options.setdefault("model_repository", REPOSITORY)
    options.setdefault("models", ("svd_xt",))
    return ServerOptions(http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(), **options)


def tls_files(folder: Path) -> Path:
    """A CA of the test's own and a certificate it issued for localhost and 127.0.0.1, written into `folder`:
    cert.pem (the chain), key.pem and ca.pem (what a client trusts). Returns `folder`."""
    import trustme

    authority = trustme.CA()
    served = authority.issue_cert("localhost", "127.0.0.1")
    served.cert_chain_pems[0].write_to_path(folder / "cert.pem")
    for pem in served.cert_chain_pems[1:]:
        pem.write_to_path(folder / "cert.pem", append=True)
    served.private_key_pem.write_to_path(folder / "key.pem")
    authority.cert_pem.write_to_path(folder / "ca.pem")
    return folder


def cpu_config_copy(tmp_path: Path) -> Path:
    """A plain copy of the model repository under tmp_path; returns the copy's svd_xt/configs/cpu.pbtxt to edit."""
    shutil.copytree(REPOSITORY, tmp_path / "repo", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path / "repo" / "svd_xt" / "configs" / "cpu.pbtxt"


def start_server(**options):
    """A TritonServer (CPU config, tiny model, TOKEN, ADMIN_TOKEN) on free ports, not yet started: use it in `with`."""
    from svd_triton.launcher import TritonServer

    return TritonServer(on_free_ports(token=TOKEN, admin_token=ADMIN_TOKEN, **options), ready_timeout=240)


@contextmanager
def http_server(handler):
    """A real HTTP server on 127.0.0.1 (a free port) answering with `handler`, in a thread; yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that keeps the test output free of its access log."""

    def log_message(self, *args):
        pass
