"""Webhook deliveries: signed like Replicate's (Standard Webhooks, with its own `standardwebhooks` package), each
owner's with that owner's secret, in order per job, retried with backoff a bounded number of times, and only to
targets the allow-list permits (checked as each connection opens). One attempt reads at most REPLY_CAP bytes of
the reply and ends within the webhook timeout, so a slow or endless reply cannot hold a sender. Logs show a
webhook URL without its query, fragment or userinfo, which often carry the receiver's token.

Signature: `webhook-signature: v1,<base64 HMAC-SHA256 of "{webhook-id}.{webhook-timestamp}.{body}">`
keyed with the bytes of the owner's `whsec_<base64>` secret (replicate's `Webhooks.validate` checks it).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, get_args
from urllib.parse import urlsplit, urlunsplit

import httpx
from prometheus_client import Counter
from standardwebhooks import Webhook
from starlette.concurrency import run_in_threadpool

from .accounts import BOOTSTRAP_OWNER
from .errors import GatewayError
from .outbound import AllowList, Refused

Event = Literal["start", "output", "logs", "completed"]
EVENTS: tuple[Event, ...] = get_args(Event)
REPLY_CAP = 64 * 1024
"""Bytes of a receiver's reply read at most: only its status matters; reading a short reply to its end lets the
connection be used again."""
log = logging.getLogger("svd_gateway.webhooks")


def without_secrets(url: str) -> str:
    """`url` without userinfo, query or fragment: as logs show it, and as other keys than its creator's see it."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def bootstrap_secret(data_dir: Path) -> str:
    """The bootstrap owner's first secret: the one a gateway from before accounts generated into data_dir (its
    receivers know it), else a new one."""
    path = Path(data_dir) / "webhook_secret"
    return path.read_text().strip() if path.exists() else new_secret()


class Webhooks:
    def __init__(
        self,
        store,
        *,
        configured: str | None,
        data_dir: Path,
        allow: AllowList,
        attempts: int,
        backoff: float,
        timeout: float,
        outcomes: Counter,
    ):
        self.store, self.allow = store, allow
        self.secrets: dict[str, str] = {}
        """Owners' secrets as read from the store (they never change), and the configured one."""
        if configured:
            if not configured.startswith("whsec_"):
                raise ValueError("the webhook secret must look like whsec_<base64>")
            self.secrets[BOOTSTRAP_OWNER] = configured
        self.data_dir = data_dir
        self.outcomes = outcomes
        """Counts events by result: delivered, or failed after every attempt."""
        self.attempts, self.backoff, self.timeout = attempts, backoff, timeout
        self.http = httpx.AsyncClient(
            transport=allow.transport(), timeout=timeout, follow_redirects=False, trust_env=False
        )
        self.queues: dict[str, asyncio.Queue] = {}
        self.senders: set[asyncio.Task] = set()

    async def close(self) -> None:
        for task in list(self.senders):
            task.cancel()
        await asyncio.gather(*self.senders, return_exceptions=True)
        await self.http.aclose()

    async def secret(self, owner: str) -> str:
        """`owner`'s signing secret (replicate's `webhooks.default.secret()`), made at its first need; the bootstrap
        owner's is --webhook-secret when one is configured."""
        if owner not in self.secrets:
            make = (lambda: bootstrap_secret(self.data_dir)) if owner == BOOTSTRAP_OWNER else new_secret
            self.secrets[owner] = await run_in_threadpool(self.store.webhook_secret, owner, make)
        return self.secrets[owner]

    async def check_target(self, url: str) -> None:
        """Refuse (422) a webhook URL that is not http(s) or resolves to an address not permitted."""
        reason = await self.allow.refusal(url)
        if reason:
            raise GatewayError(422, "invalid_input", f"webhook: {reason}", "webhook")

    def send(self, job_id: str, owner: str, url: str, events: list[str], event: str, payload: dict) -> None:
        """Queue `payload` for `url` if `event` passes the job's filter, to be signed with `owner`'s secret;
        deliveries of one job go in order."""
        wanted = event in (events or EVENTS)
        if not wanted and event != "completed":  # `completed` always passes through: it ends the job's queue
            return
        queue = self.queues.get(job_id)
        if queue is None:
            queue = self.queues[job_id] = asyncio.Queue()
            task = asyncio.create_task(self._drain(job_id, owner, queue))
            self.senders.add(task)
            task.add_done_callback(self.senders.discard)
        queue.put_nowait((url, event, json.dumps(payload) if wanted else None))

    async def _drain(self, job_id: str, owner: str, queue: asyncio.Queue) -> None:
        while True:
            url, event, body = await queue.get()
            if body is not None:
                delivered = await self._deliver(Webhook(await self.secret(owner)), url, event, body)
                self.outcomes.labels("delivered" if delivered else "failed").inc()
            if event == "completed":
                del self.queues[job_id]
                return

    async def _deliver(self, signer: Webhook, url: str, event: str, body: str) -> bool:
        message_id = "msg_" + secrets.token_hex(12)
        shown = without_secrets(url)
        for attempt in range(1, self.attempts + 1):
            timestamp = datetime.now(UTC).replace(microsecond=0)
            headers = {
                "content-type": "application/json",
                "webhook-id": message_id,
                "webhook-timestamp": str(int(timestamp.timestamp())),
                "webhook-signature": signer.sign(message_id, timestamp, body),
                "user-agent": "svd-triton-gateway",
            }
            try:
                status = await asyncio.wait_for(self._post(url, body, headers), self.timeout)
                if 200 <= status < 300:
                    return True
                problem = f"HTTP {status}"
            except Refused as refused:  # the allow-list, checked as the connection opened: DNS may have changed
                log.warning("webhook %s to %s not sent: %s", event, shown, refused)
                return False
            except httpx.HTTPError as error:
                problem = f"{type(error).__name__}: {error}"
            except TimeoutError:
                problem = f"no complete reply within {self.timeout:g} s"
            if attempt < self.attempts:
                delay = min(60.0, self.backoff * 2 ** (attempt - 1))
                log.info("webhook %s to %s failed (%s); retry %d in %.1f s", event, shown, problem, attempt, delay)
                await asyncio.sleep(delay)
        log.warning("webhook %s to %s given up after %d attempts (%s)", event, shown, self.attempts, problem)
        return False

    async def _post(self, url: str, body: str, headers: dict[str, str]) -> int:
        """POST one attempt; the reply's status, after reading at most REPLY_CAP bytes of its body."""
        async with self.http.stream("POST", url, content=body, headers=headers) as reply:
            read = 0
            async for chunk in reply.aiter_raw():
                read += len(chunk)
                if read >= REPLY_CAP:
                    break
            return reply.status_code
