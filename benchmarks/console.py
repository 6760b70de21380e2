"""How long the console takes to render its pages over a SQLite store of a million events.

    python -m benchmarks.console                    # seeds /tmp/twofold-console-bench.db once, then measures
    python -m benchmarks.console --events 100000    # a smaller store
    python -m benchmarks.console --fresh            # seed again

The store holds 100,000 ``tally`` streams of ten events each, written round robin as commands
arrive, each event with a correlation id of its own, and one ``rare`` event every 10,000
positions: a sparse category, the worst case for the newest-first listing, which reads back
through the log. Each page is requested through the app (routing, validation, Jinja) over
httpx's ASGI transport; the figure is the median of ``--runs`` requests, after one to warm up.
Numbers are in docs/console.md.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sqlite3
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from twofold import Aggregate, Event, Runtime, Service
from twofold.http import create_app
from twofold.readmodels.sqlite import SQLiteReadStore
from twofold.store.sqlite import SQLiteEventStore

STREAM_EVENTS = 10
RARE_EVERY = 10_000  # one event of the sparse category per this many positions
DEFAULT_PATH = Path("/tmp/twofold-console-bench.db")
INSERT = (
    "INSERT INTO events (position, stream_id, version, event_id, type, schema_version, data, metadata,"
    " recorded_at, category) VALUES (?, ?, ?, ?, ?, 1, ?, ?, ?, ?)"
)


class Counted(Event, name="bench.Counted"):
    amount: int


class Tally(Aggregate, category="tally"):
    total: int = 0

    def evolve(self, event: Counted) -> Tally:
        return self.model_copy(update={"total": self.total + event.amount})


bench = Service("bench", aggregates=[Tally])


def _rows(events: int) -> Iterator[tuple[Any, ...]]:
    streams = events // STREAM_EVENTS
    at = datetime.now(UTC).isoformat()
    positions = itertools.count(1)
    rare = itertools.count(1)
    for version in range(1, STREAM_EVENTS + 1):
        for n in range(streams):
            position = next(positions)
            if position % RARE_EVERY == 0:
                yield (position, f"rare-{next(rare):06d}", 1, f"r{position:031d}", "bench.Rare", "{}", "{}", at, "rare")
                position = next(positions)
            stream, correlation = f"tally-{n:06d}", f"c-{n:06d}-{version}"
            metadata = json.dumps({"correlation_id": correlation, "command_id": correlation, "principal": "bench"})
            data = json.dumps({"amount": version})
            yield (position, stream, version, f"{position:032d}", "bench.Counted", data, metadata, at, "tally")


async def seed(path: Path, events: int) -> None:
    """A fresh store of about ``events`` events, in twofold's own schema (the store makes the tables)."""
    await asyncio.to_thread(path.unlink, missing_ok=True)
    await SQLiteEventStore(path).close()

    def fill() -> None:
        with closing(sqlite3.connect(path, isolation_level=None)) as conn:
            conn.execute("PRAGMA synchronous=OFF")  # setup, untimed
            conn.execute("BEGIN")
            rows = _rows(events)
            while chunk := list(itertools.islice(rows, 50_000)):
                conn.executemany(INSERT, chunk)
            conn.execute("COMMIT")  # no ANALYZE: twofold never runs it, so the planner works without statistics

    await asyncio.to_thread(fill)


def pages(events: int) -> dict[str, str]:
    middle = f"tally-{events // STREAM_EVENTS // 2:06d}"
    return {
        "streams, newest first": "/console/streams?service=bench",
        "streams by id, mid-store": f"/console/streams?service=bench&order=id&category=tally&after={middle}",
        "streams, newest first, mid-log": f"/console/streams?service=bench&before={events // 2}",
        "sparse category, newest first": "/console/streams?service=bench&category=rare",
        "sparse category, mid-log": f"/console/streams?service=bench&category=rare&before={events // 2}",
        "a stream, state at its end": f"/console/streams/bench/{middle}",
        "state at version 3": f"/console/state/bench/{middle}?version=3",
        "trace of one correlation": f"/console/trace?correlation_id=c-{middle.removeprefix('tally-')}-4",
        "projections": "/console/projections",
    }


async def measure(path: Path, events: int, runs: int) -> dict[str, float]:
    runtime = Runtime(bench, store=SQLiteEventStore(path), read_store=SQLiteReadStore(path.with_suffix(".read.db")))
    app = create_app(runtime)
    found: dict[str, float] = {}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench") as client,
    ):
        for label, url in pages(events).items():
            answer = await client.get(url)  # warm up, and check it is a page
            assert answer.status_code == 200, (url, answer.status_code, answer.text[:300])
            times = []
            for _ in range(runs):
                started = time.perf_counter()
                await client.get(url)
                times.append(time.perf_counter() - started)
            found[label] = statistics.median(times) * 1000
    return found


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--path", type=Path, default=DEFAULT_PATH)
    parser.add_argument("--fresh", action="store_true", help="seed the store again even if it exists")
    options = parser.parse_args()
    if options.fresh or not options.path.exists():
        started = time.perf_counter()
        await seed(options.path, options.events)
        print(f"seeded {options.path} in {time.perf_counter() - started:.0f} s")
    head = await _head(options.path)
    print(f"{head:,} events; median of {options.runs} requests per page")
    for label, milliseconds in (await measure(options.path, options.events, options.runs)).items():
        print(f"  {label:34} {milliseconds:8.1f} ms")


async def _head(path: Path) -> int:
    store = SQLiteEventStore(path)
    try:
        return await store.head_position()
    finally:
        await store.close()


if __name__ == "__main__":
    asyncio.run(main())
