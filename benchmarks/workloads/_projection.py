"""The read model every projection workload builds: one row per stream, counting its events.

An upsert per event keeps the read model's size bounded by the number of streams, so what a
replay costs in time and memory is the replay's own, not a table growing with the log.
"""

from __future__ import annotations

from typing import Any

from benchmarks.shape import EVENT_TYPE
from twofold import Database, Event, Projection, Service, StoredEvent

TABLE = "stream_totals"
CREATE = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} ("
    " stream_id TEXT PRIMARY KEY, events INTEGER NOT NULL, quantity INTEGER NOT NULL, last_position BIGINT NOT NULL)"
)
UPSERT = (
    f"INSERT INTO {TABLE} (stream_id, events, quantity, last_position) VALUES (?, 1, ?, ?)"
    f" ON CONFLICT (stream_id) DO UPDATE SET events = {TABLE}.events + 1,"
    f" quantity = {TABLE}.quantity + excluded.quantity, last_position = excluded.last_position"
)
TOTALS = f"SELECT count(*) AS streams, coalesce(sum(events), 0) AS events FROM {TABLE}"


class Happened(Event, name=EVENT_TYPE):
    sku: str
    name: str
    quantity: int


class StreamTotals(Projection, name="bench.stream_totals"):
    """Per stream: how many events, their summed quantity, and the last position applied."""

    tables = (TABLE,)

    def setup(self, db: Database) -> None:
        db.execute(CREATE)

    def apply(self, event: Happened, db: Database, record: StoredEvent) -> None:
        db.execute(UPSERT, (record.stream_id, event.quantity, record.position))


BENCH = Service("bench_projection", projections=[StreamTotals()])


def totals(db: Database) -> dict[str, Any]:
    """How many streams and events the read model holds: what a finished catch-up must show."""
    found = db.fetch_one(TOTALS)
    assert found is not None
    return {"streams": int(found["streams"]), "events": int(found["events"])}
