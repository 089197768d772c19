"""Who is calling: API keys, their owners and scopes, and the principal each request runs as.

A key is `svdk_` + 256 random bits, shown once when it is made; the store keeps its SHA-256 digest (a key that
random needs no slow hash: there is nothing to guess) and its first characters for listings. Every stored thing
belongs to an owner; a key acts for one owner, with scopes: `generate` (make and read that owner's jobs and
files) and `admin` (the operator's routes: Forge start/stop, /metrics). The gateway's own SVD_TRITON_TOKEN is the
bootstrap key: owner `default`, both scopes, no quotas, so a single-user setup changes nothing. With no token and
no key in the store, the gateway is open (loopback, or --no-auth): every caller is the bootstrap owner.

Keys are looked up in the store at every request (one indexed read), so a revoked or expired key is refused by
every replica from its next request on.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Literal, get_args

from starlette.concurrency import run_in_threadpool

BOOTSTRAP_OWNER = "default"
"""The owner of the bootstrap key, of everything made without a key, and of what existed before accounts."""
BOOTSTRAP_KEY = "bootstrap"
"""The bootstrap key's name in jobs' records (it has no row: it is the gateway's configured token)."""
KEY_PREFIX = "svdk_"
Scope = Literal["generate", "admin"]
SCOPES: tuple[Scope, ...] = get_args(Scope)


class QuotaExceeded(Exception):
    """A key's rate or active-job cap refused a new job; `retry_after` seconds is when trying again makes sense."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """The key a request was let in with, as far as the routes care."""

    key: str
    """The key's name (BOOTSTRAP_KEY for the configured token or an open gateway)."""
    owner: str
    scopes: frozenset[str]
    limited: bool = False
    """Whether its row may hold quotas (the bootstrap key has none)."""


BOOTSTRAP = Principal(BOOTSTRAP_KEY, BOOTSTRAP_OWNER, frozenset(SCOPES))


class Keyring:
    """Resolves the key a request presents into its principal; None: refused (401)."""

    def __init__(self, store, bootstrap_token: str | None):
        self.store = store
        self.bootstrap = bootstrap_token.encode() if bootstrap_token else None

    async def principal(self, presented: str | None) -> Principal | None:
        if presented and self.bootstrap and secrets.compare_digest(presented.encode(), self.bootstrap):
            return BOOTSTRAP
        if presented:
            found = await run_in_threadpool(self.store.find_key, key_digest(presented))
            if found is not None:
                return Principal(found.name, found.owner, frozenset(found.scopes), limited=True)
        if self.bootstrap is None and not await run_in_threadpool(self.store.has_keys):
            return BOOTSTRAP  # open: no token configured and no key made (loopback or --no-auth)
        return None
