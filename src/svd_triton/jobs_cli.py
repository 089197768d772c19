"""`svd-triton jobs`: submit, watch, cancel and list predictions on a gateway (its Replicate-style API).

Any Replicate client works against the gateway too; this is the shell's way in, with the model's own
parameter names as flags (from the contract) and the video saved where you say.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from svd_contract import EXTENSION_FORMATS, PARAMETERS

from .errors import SVDClientError

GATEWAY_ENV = "SVD_GATEWAY_URL"
TERMINAL = ("succeeded", "failed", "canceled")


def add_parser(commands, token_env: str) -> None:
    jobs = commands.add_parser("jobs", help="asynchronous jobs on a gateway: submit, status, wait, cancel, list")
    actions = jobs.add_subparsers(dest="action", required=True)

    def connection(parser):
        parser.add_argument(
            "--gateway",
            default=os.environ.get(GATEWAY_ENV, "http://localhost:8080"),
            help=f"the gateway's base URL (default ${GATEWAY_ENV} or http://localhost:8080)",
        )
        parser.add_argument("--token", default=os.environ.get(token_env), help=f"bearer token (default ${token_env})")

    submit = actions.add_parser("submit", help="upload an image and queue a job; prints its id")
    submit.add_argument("image", type=Path)
    submit.add_argument("--webhook", help="URL the gateway calls with the job on each event")
    submit.add_argument("--wait", action="store_true", help="wait for the result (with -o, save the video)")
    submit.add_argument("-o", "--output", type=Path, help="where to save the video (its extension picks the format)")
    for name, parameter in PARAMETERS.items():
        submit.add_argument(
            "--" + name.replace("_", "-"), dest=name, type=parameter.kind, metavar=parameter.kind.__name__.upper()
        )
    for name, summary in (
        ("status", "show a job"),
        ("wait", "wait for a job to finish (with -o, save the video)"),
        ("cancel", "cancel a job (a running one stops within a denoising step)"),
    ):
        action = actions.add_parser(name, help=summary)
        action.add_argument("id")
        if name == "wait":
            action.add_argument("-o", "--output", type=Path)
        connection(action)
    listing = actions.add_parser("list", help="the newest jobs")
    listing.add_argument("--limit", type=int, default=20)
    connection(listing)
    connection(submit)
    jobs.set_defaults(run=run)


def run(args) -> int:
    import httpx

    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    with httpx.Client(base_url=args.gateway.rstrip("/"), headers=headers, timeout=60) as http:
        try:
            return ACTIONS[args.action](http, args)
        except httpx.HTTPStatusError as error:
            raise SVDClientError(_problem(error.response)) from None
        except httpx.HTTPError as error:
            raise SVDClientError(f"gateway not reachable at {args.gateway}: {error}") from None


def _submit(http, args) -> int:
    with open(args.image, "rb") as image:
        upload = _ok(http.post("/v1/files", files={"content": (args.image.name, image)}))
    inputs = {name: getattr(args, name) for name in PARAMETERS if getattr(args, name) is not None}
    if args.output and "video_format" not in inputs and args.output.suffix.lower() in EXTENSION_FORMATS:
        inputs["video_format"] = EXTENSION_FORMATS[args.output.suffix.lower()]
    body = {"input": {"input_image": upload["urls"]["get"], **inputs}}
    if args.webhook:
        body["webhook"] = args.webhook
    job = _ok(http.post("/v1/predictions", json=body))
    print(job["id"])
    return _finish(http, job, args.output) if args.wait else 0


def _status(http, args) -> int:
    _show(_ok(http.get(f"/v1/predictions/{args.id}")))
    return 0


def _wait(http, args) -> int:
    return _finish(http, _ok(http.get(f"/v1/predictions/{args.id}")), args.output)


def _cancel(http, args) -> int:
    _show(_ok(http.post(f"/v1/predictions/{args.id}/cancel")))
    return 0


def _list(http, args) -> int:
    for job in _ok(http.get("/v1/predictions", params={"page_size": args.limit}))["results"]:
        print(f"{job['id']}  {job['status']:<10} {job['created_at']}  {job['output'] or job['error'] or ''}")
    return 0


def _finish(http, job: dict, output: Path | None) -> int:
    """Poll until the job ends, showing its progress lines as they come; save the video if asked."""
    shown = 0
    while True:
        lines = (job["logs"] or "").splitlines()
        for line in lines[shown:]:
            print(line, file=sys.stderr)
        shown = len(lines)
        if job["status"] in TERMINAL:
            break
        time.sleep(0.5)
        job = _ok(http.get(f"/v1/predictions/{job['id']}"))
    _show(job)
    if job["status"] == "succeeded" and output:
        output.write_bytes(_ok(http.get(job["output"]), raw=True))
        print(f"saved {output}")
    return 0 if job["status"] == "succeeded" else 1


def _show(job: dict) -> None:
    time_taken = job["metrics"].get("predict_time")
    print(
        f"{job['id']}: {job['status']}"
        + (f" in {time_taken:.1f} s" if time_taken else "")
        + (f"; output {job['output']}" if job["output"] else "")
        + (f"; error: {job['error']}" if job["error"] else "")
    )


def _ok(reply, raw: bool = False):
    reply.raise_for_status()
    return reply.content if raw else reply.json()


def _problem(reply) -> str:
    try:
        return f"HTTP {reply.status_code}: {reply.json()['detail']}"
    except (ValueError, KeyError):
        return f"HTTP {reply.status_code}"


ACTIONS = {"submit": _submit, "status": _status, "wait": _wait, "cancel": _cancel, "list": _list}
