"""svd-triton: serve the model, generate a video, or run the one-command demo."""

from __future__ import annotations

import argparse
import functools
import logging
import os
import signal
import sys
import threading
import time
from importlib import resources
from pathlib import Path

from PIL import Image

from svd_contract import EXTENSION_FORMATS, PARAMETERS, TEXT_TO_VIDEO_IMAGE_PARAMETERS

from . import gateway_cli, jobs_cli
from .client import DEFAULT_TIMEOUT, ProgressUpdate, SVDClient
from .errors import SVDClientError
from .launcher import (
    MODEL_REPOSITORY_ENV,
    ServerOptions,
    ServerStartError,
    TritonServer,
    default_repository,
    free_port,
    redacted,
)
from .video_info import video_info

TOKEN_ENV = "SVD_TRITON_TOKEN"
ADMIN_TOKEN_ENV = "SVD_TRITON_ADMIN_TOKEN"
TEXT_FLAGS = {"negative_prompt": str, **{name: p.kind for name, p in TEXT_TO_VIDEO_IMAGE_PARAMETERS.items()}}
"""text_to_video's own inputs, for `generate --prompt` (the first frame's negative prompt, steps and guidance)."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="svd-triton", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="start tritonserver for the model repository and wait")
    _server_arguments(serve)
    serve.add_argument("--stream", action="store_true", help="the decoupled variant: progress over gRPC streams")
    serve.add_argument(
        "--svd-only",
        action="store_true",
        help="load svd_xt alone (default: svd_xt, text_to_image and the text_to_video chain)",
    )
    serve.add_argument("--dry-run", action="store_true", help="print the command and environment, start nothing")
    serve.add_argument(
        "--doctor",
        action="store_true",
        help="run `svd-triton doctor --strict` first and start nothing unless every check passes",
    )
    serve.set_defaults(run=_serve)

    generate = commands.add_parser(
        "generate", help="turn an image, or a prompt alone, into a video on a running server"
    )
    generate.add_argument(
        "image", type=Path, nargs="?", help="the first frame; leave out and give --prompt for text-to-video"
    )
    generate.add_argument("--prompt", help="text-to-video through the server's text_to_video model (no image)")
    generate.add_argument("--first-frame", type=Path, help="with --prompt: also save the generated first frame (PNG)")
    generate.add_argument(
        "-o", "--output", type=Path, required=True, help="the extension picks the format unless --video-format is given"
    )
    _connection_arguments(generate)
    generate.add_argument(
        "--stream",
        action="store_true",
        help="use gRPC and show step progress when the deployment streams (svd-triton serve --stream)",
    )
    generate.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds before giving up")
    generate.add_argument(
        "--retries",
        type=int,
        default=0,
        metavar="N",
        help="send the request again up to N times when the server was unreachable, restarting or its model "
        "process died (with backoff; give --seed for the same video)",
    )
    for name, parameter in PARAMETERS.items():  # the model's optional inputs: --num-frames → NUM_FRAMES
        generate.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            type=parameter.kind,
            metavar=parameter.kind.__name__.upper(),
            help=parameter.help,
        )
    for name, kind in TEXT_FLAGS.items():
        generate.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            type=kind,
            metavar=kind.__name__.upper(),
            help="with --prompt: text_to_video's " + name.upper(),
        )
    generate.set_defaults(run=_generate)

    for name, summary in (
        ("status", "is the server up, is the model loaded (warm) or not (cold)"),
        ("load", "load and warm up the model (server started with --model-control explicit)"),
        ("unload", "unload the model and free its memory (--model-control explicit)"),
    ):
        control = commands.add_parser(name, help=summary)
        _connection_arguments(control)
        if name != "status":
            _admin_argument(control, "the operator's admin key that load and unload need")
        control.set_defaults(run=_control)

    warm = commands.add_parser(
        "warm",
        help="prewarm: weights onto the device without generating (keep-warm window "
        "restarts); --pin keeps them there until --release",
    )
    _connection_arguments(warm)
    choice = warm.add_mutually_exclusive_group()
    choice.add_argument("--pin", action="store_const", dest="action", const="pin", help="stay warm until released")
    choice.add_argument(
        "--release",
        action="store_const",
        dest="action",
        const="release",
        help="unpin and free the device now (the next request pays a cold start)",
    )
    warm.set_defaults(run=_warm, action="prewarm")

    gateway_cli.add_parser(commands)

    jobs_cli.add_parser(commands, TOKEN_ENV)

    weights = commands.add_parser(
        "weights", help="check or copy pipeline weights: a folder, s3://bucket/prefix or a cached hub id"
    )
    weights_commands = weights.add_subparsers(dest="weights_command", required=True)
    validate = weights_commands.add_parser(
        "validate",
        help="is SOURCE a loadable SVD pipeline? prints what is there "
        "and what is missing; exit 0 when loadable, 1 when not",
    )
    pull = weights_commands.add_parser(
        "pull", help="copy what the model loads from SOURCE into DIR (air-gapped boxes, init containers)"
    )
    for command in (validate, pull):
        command.add_argument(
            "source", help="s3://bucket/prefix (AWS_* variables: endpoint, keys, profile), a folder, or a hub id"
        )
        command.add_argument(
            "--precision",
            choices=("half", "full"),
            default="half",
            help="half (GPU, default): the fp16 variant where there is one; full: the float32 files (CPU)",
        )
    pull.add_argument("dir", type=Path, help="the folder to fill (created when missing)")
    weights.set_defaults(run=_weights)

    demo = commands.add_parser("demo", help="start the embedded server, make a video from the sample image, stop")
    demo.add_argument("-o", "--output", type=Path, default=Path("out/demo.mp4"))
    demo.add_argument("--ready-timeout", type=float, default=300.0)
    demo.set_defaults(run=_demo)

    doctor = commands.add_parser(
        "doctor",
        help="will this machine serve SVD-XT? driver, CUDA, GPU memory and precision, "
        "/dev/shm, weights, Triton and Python; exit 0 ready, 1 a check failed, "
        "2 warnings only with --strict",
    )
    doctor.add_argument(
        "--model-repository",
        default=None,
        help="the repository whose svd_xt config names the weights "
        f"(default ${MODEL_REPOSITORY_ENV}, else ./model_repository)",
    )
    doctor.add_argument(
        "--config", default="auto", help="as for serve: auto (cpu when no GPU is visible), cpu, or default"
    )
    doctor.add_argument("--json", action="store_true", help="the checks as JSON on stdout")
    doctor.add_argument("--strict", action="store_true", help="warnings fail too (exit 2): for CI and init containers")
    doctor.set_defaults(run=_doctor)

    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (SVDClientError, ServerStartError, OSError) as error:
        print(f"svd-triton {args.command}: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\nsvd-triton {args.command}: interrupted; the request was cancelled", file=sys.stderr)
        return 130


def _connection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="server address (default localhost:8000, or localhost:8001 with --grpc)")
    parser.add_argument("--grpc", action="store_true", help="use gRPC instead of HTTP (needed for cancellation)")
    parser.add_argument("--token", default=os.environ.get(TOKEN_ENV), help=f"bearer token (default ${TOKEN_ENV})")


def _admin_argument(parser: argparse.ArgumentParser, purpose: str) -> None:
    parser.add_argument(
        "--admin-token", default=os.environ.get(ADMIN_TOKEN_ENV), help=f"{purpose} (default ${ADMIN_TOKEN_ENV})"
    )


def _server_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model-repository",
        default=None,
        help="the model repository to serve: a folder or s3://HOST:PORT/BUCKET/PREFIX "
        f"(default ${MODEL_REPOSITORY_ENV}, else ./model_repository)",
    )
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument(
        "--config", default="auto", help="auto (cpu when no GPU is visible), cpu, or default (config.pbtxt)"
    )
    parser.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV),
        help=f"the client key: require this bearer token for inference (default ${TOKEN_ENV})",
    )
    _admin_argument(
        parser,
        "the operator's key for Triton's administrative APIs (load, unload, repository index, "
        "logging, trace, shared memory); without it a random key known only to this process",
    )
    parser.add_argument(
        "--model-control",
        choices=("explicit", "none"),
        default="explicit",
        help="explicit (default): svd-triton load/unload work and a model whose backend process "
        "died is reloaded; none: models fixed for the server's life",
    )
    parser.add_argument("--log-verbose", type=int, default=0)
    parser.add_argument("--ready-timeout", type=float, default=600.0)


def _serve(args) -> int:
    options = ServerOptions(
        model_repository=args.model_repository or default_repository(),
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        config_name=None if args.config == "default" else args.config,
        token=args.token,
        admin_token=args.admin_token,
        log_verbose=args.log_verbose,
        stream=args.stream,
        model_control=args.model_control,
        models=("svd_xt",) if args.svd_only else (),
    )
    server = TritonServer(options, ready_timeout=args.ready_timeout)
    if args.dry_run:
        command, env = server.command()
        print(f"PATH={env['PATH']}")
        if "LD_LIBRARY_PATH" in env:
            print(f"LD_LIBRARY_PATH={env['LD_LIBRARY_PATH']}")
        print(" ".join(redacted(command)))  # tokens never printed: this output lands in CI logs and tickets
        return 0
    if args.doctor:
        code = _diagnose(Path(options.model_repository), args.config, strict=True, as_json=False, out=sys.stderr)
        if code:
            print(f"svd-triton serve: not started: doctor exit code {code}", file=sys.stderr)
            return code
    for signum in (signal.SIGINT, signal.SIGTERM):  # forwarded: Triton unloads the model and exits; twice kills
        signal.signal(signum, lambda *_: server.request_stop())
    print(f"starting tritonserver (log: {server.log_path}) ...", file=sys.stderr)
    server.start()
    if not server.stopping:
        print(
            f"ready: HTTP {server.http_url}, gRPC {server.grpc_url}, metrics :{options.metrics_port}", file=sys.stderr
        )
        admin = f"need ${ADMIN_TOKEN_ENV}" if args.admin_token else f"closed (no --admin-token or ${ADMIN_TOKEN_ENV})"
        print(
            f"inference: {'needs the client key' if args.token else 'open to anyone who reaches the ports'}; "
            f"load, unload, logging, trace, shared memory: {admin}",
            file=sys.stderr,
        )
    code = server.wait()
    if server.watchdog is not None and server.watchdog.gave_up:
        print("svd-triton serve: a model's process died and it could not be reloaded", file=sys.stderr)
        return 3
    if server.stopped_on_request():
        print("svd-triton serve: stopped", file=sys.stderr)
        return 0
    return code


def _generate(args) -> int:
    if (args.image is None) == (args.prompt is None):
        raise SVDClientError("give an image (image-to-video) or --prompt (text-to-video), exactly one")
    text_flags = {name: getattr(args, name) for name in TEXT_FLAGS if getattr(args, name) is not None}
    if text_flags and args.prompt is None:
        raise SVDClientError(f"--{next(iter(text_flags)).replace('_', '-')} needs --prompt")
    if args.first_frame and args.prompt is None:
        raise SVDClientError("--first-frame needs --prompt (the first frame of an image-to-video call is your image)")
    params = {name: getattr(args, name) for name in PARAMETERS} | text_flags
    params["video_format"] = params["video_format"] or EXTENSION_FORMATS.get(args.output.suffix.lower())
    protocol = "grpc" if args.grpc or args.stream else "http"
    with SVDClient(args.url, protocol=protocol, token=args.token, timeout=args.timeout, retries=args.retries) as client:
        call = functools.partial(client.generate, args.image, prompt=args.prompt, **params)
        if client.streams:
            bar = ProgressBar(sys.stderr)
            result = call(on_progress=bar.update)
            bar.close()
        else:
            result = _with_elapsed_indicator(call)
    _save_and_summarise(result, args.output)
    if args.first_frame:
        assert result.image is not None, "text_to_video answers with its first frame (IMAGE)"
        Image.fromarray(result.image).save(args.first_frame, format="PNG")
        print(f"{args.first_frame}: the generated first frame, {result.image.shape[1]}×{result.image.shape[0]}")
    return 0


def _control(args) -> int:
    with SVDClient(
        args.url,
        protocol="grpc" if args.grpc else "http",
        token=args.token,
        admin_token=getattr(args, "admin_token", None),
    ) as client:
        if args.command != "status":
            getattr(client, args.command)()
        status = client.status()
        keep_warm = None
        if status["model_ready"]:
            try:
                keep_warm = client.control("state")
            except SVDClientError:  # a model from before keep-warm (no CONTROL input)
                pass
    state = "ready (warm)" if status["model_ready"] else "not loaded (cold)"
    if keep_warm is not None:
        state = f"ready; weights {describe_keep_warm(keep_warm)}"
    streams = ", streams progress" if status["streams"] else ""
    print(
        f"server {'ready' if status['server_ready'] else 'live, not ready'}; model {status['model']}: {state}{streams}"
    )
    return 0


def _warm(args) -> int:
    with SVDClient(args.url, protocol="grpc" if args.grpc else "http", token=args.token) as client:
        state = client.control(args.action)
    started = f"cold start {state['startup_seconds']} s" if state["was_cold_start"] else "already warm"
    print(f"{args.action}: {started}; weights {describe_keep_warm(state)}")
    return 0


def describe_keep_warm(state: dict) -> str:
    """One line for a model's keep-warm state: `warm (pinned)`, `warm, released in 812 s`, `cold since ...`."""
    since = time.strftime("%H:%M:%S", time.localtime(state["since"]))
    if state["state"] != "warm":
        return f"{state['state']} since {since}" + (
            f" (last cold start {state['last_cold_start_seconds']} s)" if state["last_cold_start_seconds"] else ""
        )
    if state["pinned"]:
        return f"warm since {since}, pinned until released"
    if state["keep_warm_left_seconds"] is None:
        return f"warm since {since}, never released (keep_warm_seconds -1)"
    return f"warm since {since}, released after {state['keep_warm_left_seconds']:.0f} s more idle"


def _weights(args) -> int:
    # Imported here: the checks need no torch, so the thin client runs them (with boto3 for s3://).
    from svd_engine.errors import ModelLoadError
    from svd_engine.sources import open_tree
    from svd_engine.weights import check_weights, copy_files, log

    try:
        tree = open_tree(args.source)
        inspection = check_weights(tree, half=args.precision == "half")
        print(inspection.report())
        if inspection.ok and args.weights_command == "pull":
            log.addHandler(logging.StreamHandler(sys.stderr))  # progress
            log.setLevel(logging.INFO)
            copy_files(tree, inspection.files, args.dir)
            print(f"{args.dir}: {len(inspection.files)} files; serve them with SVD_MODEL_SOURCE={args.dir.resolve()}")
    except ModelLoadError as error:
        print(f"svd-triton weights {args.weights_command}: {error}", file=sys.stderr)
        return 1
    return 0 if inspection.ok else 1


def _doctor(args) -> int:
    return _diagnose(
        Path(args.model_repository or default_repository()),
        args.config,
        strict=args.strict,
        as_json=args.json,
        out=sys.stdout,
    )


def _diagnose(model_repository: Path, config: str, *, strict: bool, as_json: bool, out) -> int:
    from . import doctor

    checks = doctor.diagnose(doctor.gather(model_repository, config))
    code = doctor.exit_code(checks, strict)
    print(doctor.as_json(checks, code) if as_json else doctor.report(checks), file=out)
    return code


def _demo(args) -> int:
    sample = resources.files("svd_triton") / "data" / "sample.png"
    # The demo animates the sample image: svd_xt alone starts faster than all three models.
    options = ServerOptions(http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(), models=("svd_xt",))
    print("starting the embedded tritonserver with the tiny model ...", file=sys.stderr)
    with TritonServer(options, ready_timeout=args.ready_timeout) as server:
        with SVDClient(server.http_url) as client:
            result = _with_elapsed_indicator(lambda: client.generate(sample.read_bytes(), seed=7))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    _save_and_summarise(result, args.output)
    print("(the built-in tiny model has random weights: its videos are noise-like by design)", file=sys.stderr)
    return 0


def _with_elapsed_indicator(call):
    """Run `call`, showing the elapsed time on a terminal while it waits."""
    done = threading.Event()
    started = time.monotonic()

    def tick():
        while not done.wait(0.1):
            print(f"\rgenerating ... {time.monotonic() - started:5.1f} s", end="", file=sys.stderr, flush=True)
        print("\r" + " " * 30 + "\r", end="", file=sys.stderr, flush=True)

    ticker = threading.Thread(target=tick, daemon=True) if sys.stderr.isatty() else None
    if ticker:
        ticker.start()
    try:
        return call()
    finally:
        done.set()
        if ticker:
            ticker.join()


class ProgressBar:
    """Step progress with an ETA on a terminal; one line per phase elsewhere (logs, pipes)."""

    WIDTH = 24

    def __init__(self, stream):
        self.stream = stream
        self.tty = stream.isatty()
        self.phase = None

    @staticmethod
    def segment(update: ProgressUpdate) -> str:
        return f"segment {update.segment}/{update.segments} " if update.segments > 1 else ""

    def update(self, update: ProgressUpdate) -> None:
        if self.tty:
            print("\r" + self.render(update), end="", file=self.stream, flush=True)
        elif (update.phase, update.segment) != self.phase:
            print(
                f"{self.segment(update)}{update.phase} (step {update.step}/{update.total}, {update.elapsed:.1f} s)",
                file=self.stream,
                flush=True,
            )
        self.phase = (update.phase, update.segment)

    def render(self, update: ProgressUpdate) -> str:
        filled = round(self.WIDTH * update.step / max(update.total, 1))
        eta = ""
        if update.phase == "denoising" and 0 < update.step < update.total and update.segment == 1:
            eta = f", ETA {update.elapsed / update.step * (update.total - update.step):.1f} s"
        return (
            f"{self.segment(update)}{update.phase:<10} {update.step:>3}/{update.total:<3} "
            f"▕{'█' * filled}{' ' * (self.WIDTH - filled)}▏ "
            f"{update.elapsed:5.1f} s{eta}      "
        )

    def close(self) -> None:
        if self.tty:
            print(file=self.stream)


def _save_and_summarise(result, output: Path) -> None:
    path = result.save(output)
    frames, width, height = video_info(path, result.video_format)
    print(
        f"{path}: {frames} frames, {width}×{height}, {result.video_format}, {len(result.video) / 1024:.1f} KiB, "
        f"seed {result.seed}, {result.seconds:.1f} s"
    )


if __name__ == "__main__":
    sys.exit(main())
