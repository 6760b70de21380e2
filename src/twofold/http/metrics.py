"""Prometheus metrics for one app: command and query outcomes and latency, store and projection positions,
worker lag in events and in seconds, saga instances and reactions, imports, asynchronous command
outcomes, and messages from other services parked as dead letters (docs/observability.md lists them)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from twofold.deadletters import DeadLetters
from twofold.errors import ConcurrencyError, DomainError, InvalidMessage, NotCaughtUp, NotFound
from twofold.health import Progress, Total
from twofold.messages import utc_now
from twofold.runtime import Runtime, Worker
from twofold.saga_runner import saga_status_counts

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DEFAULT_STALL_AFTER = 30.0  # seconds with events waiting and no progress before a worker counts as stuck
TOTALS_HELP = {  # the running counts workers keep (twofold.health.Total), by name
    "saga_reactions": "Triggers and deadlines each saga has handled since the process started",
    "imported_events": "Events imported from another service since the process started, by consumer or feed",
    "async_commands": "Asynchronous commands a worker took off the queue, by outcome (retried: handed back for later)",
}
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """The app's own registry, so that several apps in one process never share counters."""

    def __init__(self, stall_after: float = DEFAULT_STALL_AFTER) -> None:
        self.stall_after = stall_after
        self._letters: DeadLetters | None = None
        self.registry = CollectorRegistry()
        self.commands = Counter(
            "twofold_commands", "Commands handled, by type and outcome", ["command", "outcome"], registry=self.registry
        )
        self.command_seconds = Histogram(
            "twofold_command_seconds",
            "Time to handle a command",
            ["command"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queries = Counter(
            "twofold_queries", "Queries answered, by type and outcome", ["query", "outcome"], registry=self.registry
        )
        self.query_seconds = Histogram(
            "twofold_query_seconds",
            "Time to answer a query, read-your-writes wait included",
            ["query"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "twofold_commands_rate_limited",
            "Commands refused (429) because their caller was over the rate limit",
            ["service"],
            registry=self.registry,
        )
        self.events_appended = Counter(
            "twofold_events_appended", "Events appended by commands of this process", registry=self.registry
        )
        self.head = Gauge("twofold_store_head_position", "Position of the last committed event", registry=self.registry)
        self.checkpoint = Gauge(
            "twofold_projection_position",
            "Last position each projection committed",
            ["projection"],
            registry=self.registry,
        )
        self.lag = Gauge(
            "twofold_projection_lag_events",
            "Events committed but not yet applied, per projection",
            ["projection"],
            registry=self.registry,
        )
        self.stalled = Gauge(
            "twofold_worker_stalled_seconds",
            "Seconds events have waited for a worker that has not advanced (0 when caught up or moving)",
            ["worker"],
            registry=self.registry,
        )
        self.worker_lag = Gauge(
            "twofold_worker_lag_events",
            "Events (for a consumer: messages) waiting for each worker: projections, relay, consumers, feeds",
            ["worker"],
            registry=self.registry,
        )
        self.dead_letters = Gauge(
            "twofold_dead_letters",
            "Messages from another service parked because they could not be imported",
            ["source"],
            registry=self.registry,
        )
        self.lag_seconds = Gauge(
            "twofold_projection_lag_seconds",
            "Age of the oldest event committed but not yet applied, per projection (0 when caught up)",
            ["projection"],
            registry=self.registry,
        )
        self.worker_lag_seconds = Gauge(
            "twofold_worker_lag_seconds",
            "Age of the oldest event (for a consumer or command worker: message) waiting for each worker",
            ["worker"],
            registry=self.registry,
        )
        self.saga_instances = Gauge(
            "twofold_saga_instances",
            "Saga instances by status (active, completed), as the read store lists them",
            ["saga", "status"],
            registry=self.registry,
        )
        self._totals = _Totals()
        self.registry.register(self._totals)
        self.stuck = Gauge(
            "twofold_worker_stuck",
            "1 when a worker has left events waiting longer than the stall limit without advancing",
            ["worker"],
            registry=self.registry,
        )

    async def render(self, runtime: Runtime) -> bytes:
        """Refresh the position and progress gauges from the stores, then render every metric."""
        head = await runtime.store.head_position() if runtime.store is not None else None
        if head is not None:
            self.head.set(head)
        for name, position in (await runtime.positions()).items():
            self.checkpoint.labels(name).set(position)
            if head is not None:
                self.lag.labels(name).set(max(head - position, 0))
        now = utc_now()
        for progress in await worker_progress(runtime):
            stalled = progress.stalled_for(now)
            waited = _waited(progress, now)
            self.stalled.labels(progress.worker).set(stalled)
            self.stuck.labels(progress.worker).set(1 if stalled > self.stall_after else 0)
            self.worker_lag.labels(progress.worker).set(progress.lag)
            self.worker_lag_seconds.labels(progress.worker).set(waited)
            if progress.worker in runtime.runners:
                self.lag_seconds.labels(progress.worker).set(waited)
        await self._sagas(runtime)
        self._totals.totals = worker_totals(runtime)
        await self._dead_letters(runtime)
        return generate_latest(self.registry)

    async def _sagas(self, runtime: Runtime) -> None:
        # Only where the sagas run: their runners made the table, which a query replica may not have.
        if runtime.read_store is None or not runtime.sagas:
            return
        counts = await saga_status_counts(runtime.read_store)
        for runner in runtime.sagas.values():
            for status in ("active", "completed"):
                self.saga_instances.labels(runner.saga.name, status).set(counts.get((runner.saga.name, status), 0))

    async def _dead_letters(self, runtime: Runtime) -> None:
        # Only where subscriptions import (an event store beside the read store): a query replica's
        # read store may be read-only, and the table is made on first use.
        if runtime.store is None or runtime.read_store is None or not runtime.service.subscriptions:
            return
        if self._letters is None:
            self._letters = DeadLetters(runtime.read_store)
        counts = await self._letters.counts()
        for subscription in runtime.service.subscriptions:
            self.dead_letters.labels(subscription.source).set(counts.get(subscription.source, 0))

    @contextmanager
    def command(self, name: str) -> Iterator[None]:
        """Count one command's outcome and time it."""
        with self._observed(self.commands, self.command_seconds, name):
            yield

    @contextmanager
    def query(self, name: str) -> Iterator[None]:
        """Count one query's outcome and time it."""
        with self._observed(self.queries, self.query_seconds, name):
            yield

    @staticmethod
    @contextmanager
    def _observed(counter: Counter, seconds: Histogram, name: str) -> Iterator[None]:
        started, outcome = time.perf_counter(), "error"
        try:
            yield
            outcome = "ok"
        except BaseException as exc:
            # isinstance, not type(): an application's own DomainError subclass is still a rejection.
            outcome = next((label for cls, label in _OUTCOMES.items() if isinstance(exc, cls)), "error")
            raise
        finally:
            counter.labels(name, outcome).inc()
            seconds.labels(name).observe(time.perf_counter() - started)


_OUTCOMES = {
    DomainError: "rejected",
    ConcurrencyError: "conflict",
    InvalidMessage: "invalid",
    NotFound: "not_found",
    NotCaughtUp: "not_caught_up",
}


def _waited(progress: Progress, now: datetime) -> float:
    """Seconds the oldest unfinished event has waited for a worker (0 when it has caught up)."""
    if progress.lag == 0 or progress.waiting_since is None:
        return 0.0
    return max((now - progress.waiting_since).total_seconds(), 0.0)


def worker_totals(runtime: Runtime) -> list[Total]:
    """The running counts of the saga runners and of every other worker that keeps some (``totals()``)."""
    found: list[Total] = []
    for source in [*runtime.sagas.values(), *runtime.workers]:
        totals = getattr(source, "totals", None)  # optional: not every worker counts anything
        if totals is not None:
            found.extend(totals())
    return found


class _Totals(Collector):
    """The workers' running counts as Prometheus counters, as they stood at the last render."""

    def __init__(self) -> None:
        self.totals: Sequence[Total] = ()

    def collect(self) -> Iterator[CounterMetricFamily]:
        families: dict[str, CounterMetricFamily] = {}
        for total in self.totals:
            family = families.get(total.name)
            if family is None:
                help_text = TOTALS_HELP.get(total.name, total.name.replace("_", " "))
                family = families[total.name] = CounterMetricFamily(
                    f"twofold_{total.name}", help_text, labels=sorted(total.labels)
                )
            family.add_metric([total.labels[k] for k in sorted(total.labels)], total.value)
        yield from families.values()


async def worker_progress(runtime: Runtime) -> list[Progress]:
    """Where every projection runner, saga runner and other worker (the relay) of this process stands."""
    runners: list[Worker] = [*runtime.runners.values(), *runtime.sagas.values(), *runtime.workers]
    return [await runner.progress() for runner in runners]


async def stuck_workers(runtime: Runtime, stall_after: float) -> dict[str, float]:
    """Workers that have left events waiting longer than ``stall_after`` seconds, with how long."""
    now = utc_now()
    stalled = {p.worker: p.stalled_for(now) for p in await worker_progress(runtime)}
    return {worker: round(seconds, 1) for worker, seconds in sorted(stalled.items()) if seconds > stall_after}
