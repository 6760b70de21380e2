"""Progress of background workers, for health checks: a worker that is behind is not stuck.

A projection runner (and every other worker that follows the event stream) reports how far it has
come and since when its oldest unapplied event has been waiting. It is *stuck* when work has been
waiting longer than a limit without the worker advancing: a long backlog that moves is healthy,
an idle worker is healthy, a frozen loop with events waiting is not.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from twofold.store._follow import Followable

__all__ = ["Progress", "Total", "progress_of"]


@dataclass(frozen=True, slots=True)
class Progress:
    """Where a worker stands.

    Attributes:
        worker: the worker's name, e.g. the projection's.
        position: the last position it has finished with.
        head: the last position committed to the store when this was read.
        last_progress: when it last finished a batch (or started).
        waiting_since: when the oldest event it has not finished with was recorded; ``None``
            when it has caught up.
    """

    worker: str
    position: int
    head: int
    last_progress: datetime
    waiting_since: datetime | None

    @property
    def lag(self) -> int:
        """Events committed that the worker has not finished with."""
        return max(self.head - self.position, 0)

    def stalled_for(self, now: datetime) -> float:
        """Seconds that work has been waiting without the worker advancing (0 when caught up)."""
        if self.lag == 0 or self.waiting_since is None:
            return 0.0
        return max((now - max(self.last_progress, self.waiting_since)).total_seconds(), 0.0)


@dataclass(frozen=True, slots=True)
class Total:
    """A running count a worker keeps since its process started: ``/metrics`` shows it as ``twofold_<name>_total``."""

    name: str
    labels: Mapping[str, str]
    value: int


async def progress_of(
    worker: str,
    store: Followable,
    position: int,
    last_progress: datetime,
    categories: Collection[str] | None = None,
) -> Progress:
    """Where a worker that follows ``store`` stands: the store's head, and since when the oldest
    event past ``position`` (of ``categories``, when it follows only some) has been waiting."""
    head = await store.head_position()
    waiting_since = None
    if head > position:
        pending = [e async for e in store.read_all(position + 1, 1, categories)]
        if pending:
            waiting_since = pending[0].recorded_at
        elif categories is not None:
            head = position  # only events it does not follow lie ahead: nothing waits on it
    return Progress(worker, position, head, last_progress, waiting_since)
