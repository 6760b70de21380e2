"""A token bucket per principal on every command route, so one caller cannot flood the event store.

    limiter = RateLimiter(RateLimit.parse("20/s"))        # TWOFOLD_RATE_LIMIT_COMMANDS=20/s
    app = create_app(runtime, auth=auth, rate_limit=limiter)

    POST /commands/PlaceOrder      (a 21st within a second from one principal)
    429 Retry-After: 1   {"type": "urn:twofold:problem:rate-limited", "limit": "20/s", "retry_after": 1, …}

Each principal (a token's ``sub``; without authentication, the client's address) has a bucket of
``count`` tokens that refills at ``count`` per period; a command takes one, and without one it is
refused before its body is read. Queries, health, metrics and the rest are never limited.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from twofold.config import RateLimit
from twofold.http.auth import local_path, principal_of
from twofold.http.problems import TooManyRequests, too_many_requests_response

__all__ = ["CommandRateLimit", "RateLimiter"]

MAX_CALLERS = 100_000  # buckets kept at most; past it the least recently seen caller starts afresh


class RateLimiter:
    """Token buckets, one per caller, held in bounded memory.

    A bucket left alone for the limit's period is full again, exactly as a new one would be, so it
    is dropped; and past ``max_callers`` the least recently seen bucket is dropped too (that caller
    starts again with a full bucket: a flood of new callers costs memory, never a refusal of others).

    Args:
        limit: how many commands per how many seconds.
        clock: seconds from a monotonic clock (a test passes its own, and never sleeps).
        max_callers: the most buckets kept at once.
    """

    def __init__(
        self, limit: RateLimit, *, clock: Callable[[], float] = time.monotonic, max_callers: int = MAX_CALLERS
    ) -> None:
        self.limit = limit
        self._clock = clock
        self._max_callers = max_callers
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, when; least recent first

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, caller: str) -> float:
        """Take a token from ``caller``'s bucket: ``0.0`` when there was one, else the seconds until there is."""
        now = self._clock()
        self._forget_idle(now)
        tokens, then = self._buckets.pop(caller, (float(self.limit.count), now))
        tokens = min(float(self.limit.count), tokens + (now - then) * self.limit.per_second)
        wait = 0.0 if tokens >= 1 else (1 - tokens) / self.limit.per_second
        self._buckets[caller] = (tokens - 1 if wait == 0.0 else tokens, now)
        return wait

    def _forget_idle(self, now: float) -> None:
        while self._buckets:
            _, then = next(iter(self._buckets.values()))
            if now - then < self.limit.seconds and len(self._buckets) < self._max_callers:
                return
            self._buckets.popitem(last=False)


class CommandRateLimit:
    """ASGI middleware: ``POST /commands/{Type}`` (and ``/services/{name}/commands/{Type}``) takes a token
    from its caller's bucket, or is answered ``429`` with ``Retry-After`` and goes no further.

    It runs after :class:`~twofold.http.auth.Guard`, which names the principal. ``on_limited`` is
    called with the command type of each refusal (the app counts them in its metrics).
    """

    def __init__(
        self, app: ASGIApp, limiter: RateLimiter | None = None, on_limited: Callable[[str], None] | None = None
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.on_limited = on_limited

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        command = _command_of(scope) if scope["type"] == "http" and self.limiter is not None else None
        if command is None or self.limiter is None:
            await self.app(scope, receive, send)
            return
        wait = self.limiter.take(_caller(scope))
        if wait == 0.0:
            await self.app(scope, receive, send)
            return
        if self.on_limited is not None:
            self.on_limited(command)
        refusal = TooManyRequests(str(self.limiter.limit), retry_after=max(1, math.ceil(wait)))
        await too_many_requests_response(refusal)(scope, receive, send)


def _command_of(scope: Scope) -> str | None:
    """The command type a request sends, or ``None`` for anything else (queries, status, health…)."""
    if scope["method"] != "POST":
        return None
    parts = local_path(scope["path"]).strip("/").split("/")
    return parts[1] if len(parts) == 2 and parts[0] == "commands" else None


def _caller(scope: Scope) -> str:
    """Whose bucket: the token's subject; without authentication, the client's address."""
    principal = principal_of(Request(scope))
    if principal.subject is not None:
        return f"sub:{principal.subject}"
    client = scope.get("client")
    return f"address:{client[0] if client else 'unknown'}"
