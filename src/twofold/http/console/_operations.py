"""What the operations pages read: workers' progress, saga instances, parked messages.

Projections, sagas and feeds that run in this process report their progress themselves (position,
head, since when work has waited, last error). A projection that runs elsewhere (a query replica
with ``project=False``) is still shown, from the checkpoint its read store holds. Each projection
row names its target store (``sql``, ``warehouse``, ``search``); sagas and feeds have none.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from twofold.deadletters import DeadLetter, DeadLetters
from twofold.health import Progress
from twofold.messages import utc_now
from twofold.runtime import Runtime, Worker
from twofold.saga_runner import REACTED, ensure_saga_tables, saga_instances
from twofold.sagas import stream_of


@dataclass(frozen=True, slots=True)
class WorkerRow:
    """One projection, saga or feed, as the projections page shows it."""

    service: str
    name: str
    position: int
    head: int | None
    lag: int | None
    lag_seconds: float | None  # how long the oldest event it has not applied has waited
    running: bool | None  # None: it runs in another process
    last_error: str | None
    target: str | None = None  # a projection's target store; None for sagas and feeds


async def worker_rows(runtimes: dict[str, Runtime]) -> list[WorkerRow]:
    """Every worker of every runtime, by service, then name."""
    now = utc_now()
    rows: list[WorkerRow] = []
    for service, runtime in runtimes.items():
        here: list[WorkerRow] = []
        workers: list[Worker] = [*runtime.runners.values(), *runtime.sagas.values(), *runtime.workers]
        for worker in workers:
            running, error = getattr(worker, "running", None), getattr(worker, "last_error", None)
            here.append(_row(service, await worker.progress(), now, running, error))
        rows += here + await _elsewhere(service, runtime, {row.name for row in here})
    targets = {(service, p.name): p.target for service, r in runtimes.items() for p in r.service.projections}
    rows = [replace(row, target=targets.get((row.service, row.name))) for row in rows]
    return sorted(rows, key=lambda r: (r.service, r.name))


def _row(service: str, progress: Progress, now: datetime, running: bool | None, error: str | None) -> WorkerRow:
    waited = 0.0 if progress.waiting_since is None else max((now - progress.waiting_since).total_seconds(), 0.0)
    return WorkerRow(service, progress.worker, progress.position, progress.head, progress.lag, waited, running, error)


async def _elsewhere(service: str, runtime: Runtime, here: set[str]) -> list[WorkerRow]:
    """Projections this process does not run: their checkpoints, against the head when a store is at hand."""
    head = await runtime.store.head_position() if runtime.store is not None else None
    rows = []
    for name, position in (await runtime.positions()).items():
        if name not in here:
            lag = None if head is None else max(head - position, 0)
            rows.append(WorkerRow(service, name, position, head, lag, None, None, None))
    return rows


@dataclass(frozen=True, slots=True)
class SagaDetail:
    """One saga instance as its latest reaction recorded it, compensations included."""

    instance: str
    version: int
    status: str
    state: dict[str, Any]
    deadlines: dict[str, str]
    compensations: list[dict[str, Any]]
    updated_at: str


async def saga_page(
    runtime: Runtime, saga: str, status: str | None, after: str, limit: int
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of ``saga``'s instances in key order, and the key the next page starts after."""
    assert runtime.read_store is not None
    await ensure_saga_tables(runtime.read_store)
    found = await saga_instances(runtime.read_store, saga, status=status, after=after, limit=limit + 1)
    shown = found[:limit]
    return shown, shown[-1]["instance"] if len(found) > limit else None


async def saga_detail(runtime: Runtime, saga: str, instance: str) -> SagaDetail | None:
    """An instance from its stream's latest reaction (``None`` when it never reacted, or no store is here)."""
    saga_type = next((s for s in runtime.service.sagas if s.name == saga), None)
    if saga_type is None or runtime.store is None:
        return None
    stream_id = stream_of(saga_type, instance)
    version = await runtime.store.stream_version(stream_id)
    latest = [e async for e in runtime.store.read_stream(stream_id, version, version)] if version else []
    if not latest or latest[0].type != REACTED:
        return None
    data = latest[0].data
    return SagaDetail(
        instance,
        version,
        "completed" if data.get("completed") else "active",
        dict(data.get("state", {})),
        dict(data.get("deadlines", {})),
        list(data.get("compensations", [])),
        latest[0].recorded_at.isoformat(),
    )


async def dead_letter_page(
    runtime: Runtime, after: tuple[str, str, int] | None, limit: int
) -> tuple[list[DeadLetter], tuple[str, str, int] | None]:
    """A page of the service's parked messages in key order, and the key the next page starts after."""
    assert runtime.read_store is not None
    found = await DeadLetters(runtime.read_store).page(after, limit + 1)
    shown = found[:limit]
    last = shown[-1] if len(found) > limit else None
    return shown, None if last is None else (last.source, last.stream_id, last.version)
