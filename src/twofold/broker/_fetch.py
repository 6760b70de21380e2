"""Fetching from a pull consumer without waiting for a batch to fill.

nats-py's ``fetch(n, timeout)`` keeps one pull request open until ``n`` messages arrived or the
request expired: a message that arrives alone on an idle consumer waits out the rest of the
window (up to a second, measured: a quarter of a second per hop on average through the shop's
checkout). Here the first message is awaited alone, and what else is already there is taken
with a short second request, so a lone message is handled at once and a backlog still comes in
batches.
"""

from __future__ import annotations

from nats.aio.msg import Msg
from nats.errors import TimeoutError as FetchTimeout
from nats.js.client import JetStreamContext

__all__ = ["GATHER", "fetch_promptly"]

GATHER = 0.01  # seconds the second request may wait for the batch to fill, once one message came


async def fetch_promptly(pull: JetStreamContext.PullSubscription, batch: int, wait: float) -> list[Msg]:
    """Up to ``batch`` messages: the first within ``wait`` seconds (else ``TimeoutError``), the rest at once."""
    first = await pull.fetch(1, timeout=wait)
    if batch <= 1:
        return list(first)
    try:
        more = await pull.fetch(batch - 1, timeout=GATHER)
    except (FetchTimeout, TimeoutError):
        more = []
    return [*first, *more]
