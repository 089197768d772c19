"""`svd-triton gateway`: serve the REST gateway (the default), migrate its store, or manage its API keys.

`gateway keys create NAME` prints the new key once, alone on the last line of stdout (so `| tail -1` captures
it); the store keeps its digest only. Keys act for an owner (`--owner`, default NAME): rotating one is creating
another for the same owner, moving clients to it, and revoking the old one. Every replica refuses a revoked key
from its next request on.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from datetime import timedelta

RATE_UNIT = "/min"


def per_minute(text: str) -> float:
    """`--rate 600/min` (or a plain number of jobs per minute)."""
    number = text[: -len(RATE_UNIT)] if text.endswith(RATE_UNIT) else text
    try:
        value = float(number)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give jobs per minute, e.g. 600/min") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: give a positive number of jobs per minute")
    return value


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give 1 or more")
    return value


def add_parser(commands) -> None:
    from svd_gateway.settings import STORE_FIELDS  # standard library only: no extra needed
    from svd_gateway.settings import add_arguments as add_settings

    def store_flags(parser: argparse.ArgumentParser) -> None:
        add_settings(parser, only=STORE_FIELDS)

    def serving(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--host", default="127.0.0.1", help="address uvicorn listens on (default 127.0.0.1)")
        parser.add_argument("--port", type=int, default=8080, help="port uvicorn listens on (default 8080)")
        add_settings(parser)  # one flag per field of svd_gateway.Settings (--triton-url, --token, ...)

    gateway = commands.add_parser(
        "gateway",
        help="REST routes of hosted SVD APIs (Replicate predictions, TIR, Forge, OpenAI, Stability, fal) over "
        "Triton, with a durable job store; or migrate its store, or manage its API keys",
    )
    serving(gateway)
    gateway.set_defaults(run=_gateway, action="serve")
    actions = gateway.add_subparsers(dest="action", metavar="{serve,migrate,keys}")
    serving(actions.add_parser("serve", help="serve the gateway (the default)"))
    store_flags(
        actions.add_parser(
            "migrate",
            help="create or upgrade the job store's schema and exit (for a Kubernetes Job before a rollout; "
            "replicas also migrate at start)",
        )
    )
    keys = actions.add_parser("keys", help="API keys in the gateway's store (--database-url): create, list, revoke")
    key_actions = keys.add_subparsers(dest="keys_action", required=True)
    create = key_actions.add_parser("create", help="make a key; it is printed once, alone on the last line")
    create.add_argument("name", help="the key's name, unique (in job records, listings and logs)")
    create.add_argument("--owner", help="the owner (tenant) whose work the key sees and makes (default: NAME)")
    create.add_argument("--admin", action="store_true", help="also the admin scope: Forge start/stop and /metrics")
    create.add_argument(
        "--admin-only", action="store_true", help="the admin scope alone (an operator's key that cannot generate)"
    )
    create.add_argument(
        "--max-active", type=positive_int, metavar="N", help="its jobs queued or running at once at most"
    )
    create.add_argument(
        "--rate", type=per_minute, metavar="N/min", help="jobs it may create per minute (bursts up to N)"
    )
    create.add_argument("--expires-in", type=float, metavar="DAYS", help="refused after this many days")
    store_flags(create)
    listing = key_actions.add_parser("list", help="every key: owner, scopes, limits, last use, revoked or not")
    store_flags(listing)
    revoke = key_actions.add_parser("revoke", help="refuse a key from now on, on every replica")
    revoke.add_argument("name")
    store_flags(revoke)


def _gateway(args) -> int:
    from svd_gateway.settings import from_arguments
    from svd_gateway.store import MissingDriver, migrate, open_engine

    settings = from_arguments(args)
    args.action = args.action or "serve"  # `gateway` alone serves
    if args.action == "serve" and (refusal := settings.refusal(args.host)):
        print(f"svd-triton gateway: not started: {refusal}", file=sys.stderr)
        return 2
    try:
        engine = open_engine(settings.database)  # a missing driver is one line naming the extra, not a traceback
    except MissingDriver as error:
        print(f"svd-triton gateway: {error}", file=sys.stderr)
        return 2
    if args.action == "migrate":
        print(f"svd-triton gateway migrate: {engine.url.render_as_string()} is at schema revision {migrate(engine)}")
        engine.dispose()
        return 0
    engine.dispose()
    if args.action == "keys":
        return _keys(args, settings)
    return _serve(args, settings)


def _serve(args, settings) -> int:
    import uvicorn

    from svd_gateway import create_app, server_options

    # SIGTERM is how Kubernetes stops a pod: the gateway drains (svd_gateway.app), uvicorn stops, and the signal,
    # which uvicorn raises again once it has restored the handler it found, then finds this one: exit status 0.
    signal.signal(signal.SIGTERM, lambda *_: None)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")  # uvicorn's look
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # its INFO lines print whole URLs: webhook tokens included
    if not settings.token:
        logging.getLogger("svd_gateway").warning(
            "NO KEY: every route is open to anyone who reaches %s:%d (%s) until an API key is made "
            "(svd-triton gateway keys create)",
            args.host,
            args.port,
            "--no-auth" if settings.no_auth else "loopback only",
        )
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level="info", **server_options(settings))
    return 0


def _keys(args, settings) -> int:
    from svd_gateway.accounts import key_digest, new_key
    from svd_gateway.blobs import open_blobs
    from svd_gateway.store import ApiKey, Store, utcnow

    store = Store(settings.database, open_blobs(None, settings.data_dir))  # keys are rows alone: no bucket
    try:
        if args.keys_action == "create":
            if args.admin and args.admin_only:
                print("svd-triton gateway keys create: give --admin or --admin-only, not both", file=sys.stderr)
                return 2
            key, now = new_key(), utcnow()
            scopes = ["admin"] if args.admin_only else ["generate", "admin"] if args.admin else ["generate"]
            row = ApiKey(
                name=args.name,
                digest=key_digest(key),
                prefix=key[:12],
                owner=args.owner or args.name,
                scopes=scopes,
                max_active=args.max_active,
                rate_per_minute=args.rate,
                created_at=now,
                expires_at=now + timedelta(days=args.expires_in) if args.expires_in else None,
            )
            try:
                store.add_key(row)
            except ValueError as error:
                print(f"svd-triton gateway keys create: {error}", file=sys.stderr)
                return 1
            print(f"key {row.name} for owner {row.owner}, scopes {', '.join(scopes)}{_limits(row)}")
            print(key)
        elif args.keys_action == "list":
            print("NAME\tOWNER\tSCOPES\tLIMITS\tACTIVE\tCREATED\tLAST USED\tEXPIRES\tREVOKED\tKEY")
            for row, active in store.list_keys():
                cells = (
                    row.name,
                    row.owner,
                    ",".join(row.scopes),
                    _limits(row).strip(", ") or "-",
                    str(active),
                    *(_when(moment) for moment in (row.created_at, row.last_used_at, row.expires_at, row.revoked_at)),
                    row.prefix + "…",
                )
                print("\t".join(cells))
        elif not store.revoke_key(args.name):
            print(f"svd-triton gateway keys revoke: no live key named {args.name!r}", file=sys.stderr)
            return 1
        else:
            print(f"revoked {args.name}: every replica refuses it from its next request on")
        return 0
    finally:
        store.close()


def _limits(row) -> str:
    limits = [f"max-active {row.max_active}"] if row.max_active else []
    limits += [f"rate {row.rate_per_minute:g}{RATE_UNIT}"] if row.rate_per_minute else []
    return "".join(f", {limit}" for limit in limits)


def _when(moment) -> str:
    return moment.isoformat(timespec="seconds") + "Z" if moment else "-"
