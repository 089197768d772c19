"""Starting a real tritonserver for this model repository, embedded or in an NGC container.

Uses the `tritonserver` on PATH when there is one (NGC containers), else the server bundled in the
`nvidia-pytriton` wheel, whose Python backend needs a backend folder holding the stub built for this
interpreter. The stub's embedded Python ignores PYTHONPATH and takes its prefix from the first
`python3` on PATH, so this interpreter's bin folder goes first on the server's PATH; and it must load
the libpython of this interpreter (not, say, the distribution's older one of the same minor version,
whose symbols this interpreter's compiled stdlib modules may not find), so this interpreter's LIBDIR
goes first on LD_LIBRARY_PATH.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from svd_contract import is_s3_url

from .client import auth_headers

MODEL_REPOSITORY_ENV = "SVD_MODEL_REPOSITORY"
CPU_CONFIG_NAME = "cpu"
STREAM_CONFIG_NAMES = {True: "cpu_stream", False: "stream"}  # by "no GPU visible"
CPU_ONLY_FLAGS = ("--pinned-memory-pool-byte-size=0", "--cuda-memory-pool-byte-size=0:0", "--allow-gpu-metrics=false")
SHM_FOLDER = Path("/dev/shm")
SHM_PREFIX = "svd_triton_shm"
"""The Python backend's shared-memory regions are named `svd_triton_shm_<launcher pid>_<gRPC port>_...`
(backend-config shm-region-prefix-name), so each launcher can find and remove its own leftovers."""
CLIENT_APIS = "inference,statistics"
"""Triton's API groups a client key opens: inference, and the statistics perf_analyzer reads. Health, metadata
and model config stay open (clients read a model's contract before their first request)."""
ADMIN_APIS = "model-repository,logging,trace,shared-memory"
"""The groups only the operator's admin key opens: load, unload and configure models (a load can carry its
own model.py, which then runs on this host), the repository index, logging and tracing, and shared-memory
registration (which maps host memory into a request)."""
SIGNAL_POLL_SECONDS = 0.5
"""How soon `TritonServer.wait` runs a signal handler whose signal another thread received."""


class ServerStartError(RuntimeError):
    """tritonserver exited or did not become ready in time; the message ends with its log tail."""


@functools.cache
def gpu_visible() -> bool:
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    listing = subprocess.run([smi, "-L"], capture_output=True, text=True)
    return listing.returncode == 0 and "GPU" in listing.stdout


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def find_tritonserver() -> tuple[Path, Path | None]:
    """(server binary, backend folder or None for the server's own) — PATH first, then the wheel."""
    on_path = shutil.which("tritonserver")
    if on_path:
        return Path(on_path), None
    try:
        import pytriton
    except ImportError:
        raise ServerStartError(
            "no tritonserver on PATH and nvidia-pytriton is not installed: "
            "run inside an NGC tritonserver container or `pip install 'svd-triton[server]'`"
        ) from None
    bundle = Path(pytriton.__file__).parent / "tritonserver"
    return bundle / "bin" / "tritonserver", embedded_backend_folder(bundle)


def embedded_backend_folder(bundle: Path) -> Path:
    """A backend folder `<dir>/python/` linking the wheel's backend library and this Python's stub."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = bundle / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise ServerStartError(f"nvidia-pytriton has no Python backend stub for Python {version}")
    root = Path(sys.prefix) / "svd-triton" / "backends"
    python_backend = root / "python"
    python_backend.mkdir(parents=True, exist_ok=True)
    for source in (
        bundle / "backends" / "python" / "libtriton_python.so",
        bundle / "backends" / "python" / "triton_python_backend_utils.py",
        stub,
    ):
        link = python_backend / source.name
        if not (link.is_symlink() and link.resolve() == source.resolve()):
            link.unlink(missing_ok=True)
            link.symlink_to(source)
    return root


KEY_VARIABLES = ("SVD_TRITON_TOKEN", "SVD_TRITON_ADMIN_TOKEN")
"""Keys the launcher passes on tritonserver's command line: the server and its model processes never need them."""


def stub_environment() -> dict[str, str]:
    """os.environ with this interpreter first on PATH and its shared libpython first on LD_LIBRARY_PATH, and
    without the keys (KEY_VARIABLES)."""
    env = {name: value for name, value in os.environ.items() if name not in KEY_VARIABLES}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    libdir = sysconfig.get_config_var("LIBDIR")
    if sysconfig.get_config_var("Py_ENABLE_SHARED") and libdir:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [libdir, env.get("LD_LIBRARY_PATH")]))
    return env


def default_repository() -> Path:
    """$SVD_MODEL_REPOSITORY, else `model_repository` in the current folder (a checkout's, where `make demo` runs).
    A model repository is its own artifact (copied, tarred, put in a bucket): the package does not carry one."""
    return Path(os.environ.get(MODEL_REPOSITORY_ENV) or "model_repository")


@dataclass
class ServerOptions:
    model_repository: Path | str = field(default_factory=default_repository)
    """A folder, or `s3://host:port/bucket/prefix` (Triton reads it with the AWS_* credentials)."""
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    config_name: str | None = "auto"
    """`auto`: the CPU variant when no GPU is visible, else config.pbtxt; None: always config.pbtxt."""
    stream: bool = False
    """With `auto`: the decoupled variant that streams progress over gRPC (stream / cpu_stream)."""
    model_control: str = "explicit"
    """`explicit`: load every model at start and allow load/unload calls (and automatic reloads);
    `none`: Triton's default, models are fixed for the server's life."""
    models: tuple[str, ...] = ()
    """With explicit control: the models to load (`serve --svd-only`: ("svd_xt",)); empty: every model
    in the repository (svd_xt, text_to_image and the text_to_video chain)."""
    auto_reload: bool = True
    """With explicit control: reload a model whose Python-backend stub process died (Triton 2.51
    leaves it reporting ready while every request fails with 'Stub process ... is not healthy')."""
    token: str | None = None
    """The client key: bearer token for inference and statistics (health, metadata and model config stay
    open). None: those are open to anyone who reaches the ports."""
    admin_token: str | None = None
    """The operator's key for the administrative APIs (ADMIN_APIS). None: a random one for this server's
    life, known only to the launcher (its watchdog's reloads), so those APIs are closed to everyone else."""
    log_verbose: int = 0
    extra_args: list[str] = field(default_factory=list)


class TritonServer:
    """A tritonserver child process: `with TritonServer(options) as server: ...` waits until ready."""

    def __init__(self, options: ServerOptions, *, ready_timeout: float = 300.0, log_path: Path | None = None):
        self.options = options
        self.ready_timeout = ready_timeout
        self.log_path = log_path or Path(tempfile.gettempdir()) / f"tritonserver-{os.getpid()}-{options.grpc_port}.log"
        self.shm_prefix = f"{SHM_PREFIX}_{os.getpid()}_{options.grpc_port}_"
        self.admin_token = options.admin_token or secrets.token_urlsafe(24)
        if any(key and not key.isprintable() or key and " " in key for key in (options.token, options.admin_token)):
            raise ServerStartError("a key must be printable and hold no space (--token, --admin-token)")
        if options.token and self.admin_token == options.token:
            raise ServerStartError(
                "the admin token must differ from the client token (--admin-token, "
                "$SVD_TRITON_ADMIN_TOKEN): a client key must never administer Triton"
            )
        self.process: subprocess.Popen[bytes] | None = None
        self._stop_requested = False
        self.watchdog: StubWatchdog | None = None

    @property
    def cpu_only(self) -> bool:
        return not gpu_visible()

    @property
    def http_url(self) -> str:
        return f"localhost:{self.options.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"localhost:{self.options.grpc_port}"

    def command(self) -> tuple[list[str], dict[str, str]]:
        """The command line and environment that start the server (also what `serve --dry-run` prints)."""
        binary, backends = find_tritonserver()
        o = self.options
        repository = (
            str(o.model_repository) if is_s3_url(str(o.model_repository)) else Path(o.model_repository).resolve()
        )
        args = [
            str(binary),
            f"--model-repository={repository}",
            f"--http-port={o.http_port}",
            f"--grpc-port={o.grpc_port}",
            f"--metrics-port={o.metrics_port}",
            f"--log-verbose={o.log_verbose}",
        ]
        if backends is not None:
            args.append(f"--backend-directory={backends}")
        args.append(f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}")
        config_name = self.config_name()
        if config_name:
            args.append(f"--model-config-name={config_name}")
        if o.model_control == "explicit":
            args += ["--model-control-mode=explicit", *(f"--load-model={m}" for m in o.models or ["*"])]
        if self.cpu_only:
            args += CPU_ONLY_FLAGS
        restrictions = [f"{ADMIN_APIS}:authorization=Bearer {self.admin_token}"]
        if o.token:
            restrictions.append(f"{CLIENT_APIS}:authorization=Bearer {o.token}")
        for restriction in restrictions:  # gRPC reads the key from `triton-grpc-protocol-authorization`
            args += [f"--http-restricted-api={restriction}", f"--grpc-restricted-protocol={restriction}"]
        return args + list(o.extra_args), stub_environment()

    def config_name(self) -> str | None:
        """The --model-config-name to pass (None: config.pbtxt)."""
        if self.options.config_name != "auto":
            return self.options.config_name
        if self.options.stream:
            return STREAM_CONFIG_NAMES[self.cpu_only]
        return CPU_CONFIG_NAME if self.cpu_only else None

    def start(self) -> TritonServer:
        repository = self.options.model_repository
        if not is_s3_url(str(repository)) and not Path(repository).is_dir():
            raise ServerStartError(
                f"no model repository at {repository}: pass --model-repository, "
                f"set ${MODEL_REPOSITORY_ENV}, or run from a checkout"
            )
        args, env = self.command()
        remove_shm_leftovers(self.shm_prefix)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                with_parent_death_signal(args), stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        if self._stop_requested:  # a SIGTERM arrived before there was a process to forward it to
            self.process.send_signal(signal.SIGTERM)
        self.wait_ready()
        if self.options.model_control == "explicit" and self.options.auto_reload and not self.stopping:
            self.watchdog = StubWatchdog(self)
            self.watchdog.start()
        return self

    def client(self) -> grpcclient.InferenceServerClient:
        """A gRPC client for health and the model-repository API (thread-safe, unlike the HTTP one), reconnecting
        as fast as the thin client's, so readiness is seen when it comes, not after gRPC's default backoff."""
        from .client import grpc_channel_args

        return grpcclient.InferenceServerClient(self.grpc_url, channel_args=grpc_channel_args())

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        with self.client() as client:
            while time.monotonic() < deadline:
                if self.spawned.poll() is not None:
                    if self.stopping:  # stopped on request while loading (a pod terminated mid-compile): no failure
                        return
                    raise ServerStartError(
                        f"tritonserver exited with code {self.spawned.returncode}\n{self.log_tail()}"
                    )
                if is_ready(client) and all(
                    map(accepts_connections, (self.options.http_port, self.options.metrics_port))
                ):
                    return
                time.sleep(0.25)
        self.stop(grace=5)
        raise ServerStartError(f"tritonserver was not ready after {self.ready_timeout:g} s\n{self.log_tail()}")

    def is_ready(self) -> bool:
        with self.client() as client:
            return is_ready(client)

    def log_tail(self, lines: int = 100) -> str:
        """The end of the server log: long enough to hold the model tables of the three models and the error above
        them."""
        text = self.log_path.read_text(errors="replace").splitlines()
        return "--- tritonserver log (last lines) ---\n" + "\n".join(text[-lines:])

    @property
    def spawned(self) -> subprocess.Popen[bytes]:
        """The tritonserver process, which start() spawns before anything waits on it."""
        assert self.process is not None, "tritonserver has not been started"
        return self.process

    @property
    def stopping(self) -> bool:
        """A stop was requested (request_stop, e.g. from a SIGTERM handler)."""
        return self._stop_requested

    def stopped_on_request(self) -> bool:
        """The server has exited because of request_stop: cleanly, or killed by the SIGTERM while still loading
        (tritonserver handles signals only once its models are loaded)."""
        return self.stopping and self.spawned.poll() in (0, -signal.SIGTERM)

    def request_stop(self) -> None:
        """SIGTERM (Triton unloads models, finalize runs); a second request SIGKILLs the whole group.

        Never waits, so it is safe in a signal handler that interrupted a wait on the same process.
        """
        if self.watchdog is not None:  # stubs exit during a shutdown: not a crash to reload after
            self.watchdog.halt.set()
        if self.process is None:  # not spawned yet: start() passes the stop on once it is
            self._stop_requested = True
            return
        if self.process.returncode is not None:
            return
        if self._stop_requested:
            os.killpg(self.process.pid, signal.SIGKILL)
        else:
            self._stop_requested = True
            self.process.send_signal(signal.SIGTERM)

    def stop(self, grace: float = 30.0) -> None:
        """Request a stop, kill the group if it has not exited after `grace` seconds, then whatever of its group
        is left (a stub that outlived it), and remove this server's shared-memory regions (a killed Python
        backend leaves them behind)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.request_stop()
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.request_stop()
                self.process.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):  # the group's leader is tritonserver
            os.killpg(self.process.pid, signal.SIGKILL)
        remove_shm_leftovers(self.shm_prefix)

    def wait(self) -> int:
        """Wait for tritonserver to exit, in short polls: a signal delivered to another thread of this process
        (the gRPC client's, the watchdog's) runs its Python handler only once the main thread wakes, and a
        blocking waitpid would never wake, leaving a forwarded SIGTERM unforwarded."""
        while True:
            try:
                return self.spawned.wait(timeout=SIGNAL_POLL_SECONDS)
            except subprocess.TimeoutExpired:
                continue

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


PARENT_DEATH_EXEC = (
    "import ctypes, os, signal, sys; "
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM); "  # PR_SET_PDEATHSIG: kept across exec
    "os.getppid() == int(sys.argv[1]) or sys.exit('svd-triton: the launcher is gone'); "
    "os.execvp(sys.argv[2], sys.argv[2:])"
)
"""Run a command that gets SIGTERM when the process that started it dies, however it dies (SIGKILL included)."""


def with_parent_death_signal(args: list[str]) -> list[str]:
    """`args` run so that tritonserver is stopped (SIGTERM: models unloaded, stubs end with it) when the launcher
    dies, even by SIGKILL, instead of running on with its stubs, reparented to init, holding the GPU. Linux's
    prctl(PR_SET_PDEATHSIG), set in a tiny exec wrapper rather than a preexec_fn (unsafe with threads); the
    signal follows the thread that started the server, which is the launcher's main thread."""
    if sys.platform != "linux":
        return args
    return [sys.executable, "-c", PARENT_DEATH_EXEC, str(os.getpid()), *args]


def redacted(args: list[str]) -> list[str]:
    """The command line with every bearer token replaced by `***` (what `serve --dry-run` prints)."""
    return [re.sub(r"(Bearer )\S+", r"\1***", arg) for arg in args]


def is_ready(client: grpcclient.InferenceServerClient) -> bool:
    try:
        return client.is_server_ready()
    except InferenceServerException:
        return False


def accepts_connections(port: int) -> bool:
    """tritonserver opens its HTTP and metrics ports just after gRPC reports ready: ready means all three."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def backend_stub_pids(server_pid: int) -> list[int]:
    """The Python-backend stub processes of this tritonserver that are alive (zombies excluded)."""
    try:
        children = psutil.Process(server_pid).children()
    except psutil.NoSuchProcess:
        return []
    pids = []
    for child in children:
        try:
            if child.name().startswith("triton_python") and child.status() != psutil.STATUS_ZOMBIE:
                pids.append(child.pid)
        except psutil.NoSuchProcess:
            continue
    return pids


def remove_shm_leftovers(own_prefix: str) -> list[Path]:
    """Remove this server's shared-memory regions, and those of launchers that no longer run."""
    removed = []
    for region in SHM_FOLDER.glob(f"{SHM_PREFIX}_*"):
        launcher_pid = region.name[len(SHM_PREFIX) + 1 :].split("_", 1)[0]
        if region.name.startswith(own_prefix) or (launcher_pid.isdigit() and not psutil.pid_exists(int(launcher_pid))):
            region.unlink(missing_ok=True)
            removed.append(region)
    return removed


class StubWatchdog(threading.Thread):
    """Reloads the ready models when a Python-backend stub dies, which Triton 2.51 does not do itself.

    The request that was running fails (the client gets 'Stub process ... is not healthy'); requests
    after the reload are served. Models unloaded on purpose are not READY and are left alone. When the reload
    fails, the model would stay dead behind a health check that still says ready: the watchdog stops the server
    instead (`gave_up`), so `svd-triton serve` exits non-zero and the pod or service manager starts it again.
    """

    def __init__(self, server: TritonServer, interval: float = 1.0):
        super().__init__(daemon=True, name="svd-triton-stub-watchdog")
        self.server, self.interval = server, interval
        self.halt = threading.Event()
        self.reloads = 0
        self.gave_up = False
        # Counted now, before `serve` says ready: a stub that dies while the thread is still starting is seen.
        self.expected = len(backend_stub_pids(server.spawned.pid))

    def run(self) -> None:
        expected = self.expected
        with self.server.client() as client:
            while not self.halt.wait(self.interval) and self.server.spawned.poll() is None:
                alive = len(backend_stub_pids(self.server.spawned.pid))
                if alive < expected and not self.halt.is_set():
                    self.reload_ready_models(client)
                    alive = len(backend_stub_pids(self.server.spawned.pid))
                expected = alive

    def reload_ready_models(self, client: grpcclient.InferenceServerClient) -> None:
        headers = auth_headers("grpc", self.server.admin_token)
        try:
            index = client.get_model_repository_index(headers=headers, as_json=True).get("models", [])
            for model in [m["name"] for m in index if m.get("state") == "READY"]:
                print(f"svd-triton: a Python-backend process died; reloading {model}", file=sys.stderr, flush=True)
                # Unload first: Triton treats a load of an unchanged, loaded model as nothing to do.
                client.unload_model(model, headers=headers)
                client.load_model(model, headers=headers)
                self.reloads += 1
        except InferenceServerException as error:
            print(f"svd-triton: reload failed ({error}); stopping the server", file=sys.stderr, flush=True)
            self.gave_up = True
            self.server.request_stop()
