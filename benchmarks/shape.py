"""What every system is asked to do: the same streams, events and payload, sized per backend and by ``--quick``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

# About 200 bytes once encoded as JSON, like a small order line.
PAYLOAD: dict[str, Any] = {"sku": "A-0001", "name": "x" * 160, "quantity": 3}
PAYLOAD_BYTES = len(json.dumps(PAYLOAD, separators=(",", ":")))
EVENT_TYPE = "bench.Happened"
WRITERS = (1, 8)  # append_per_command runs with each number of concurrent writers


@dataclass(frozen=True, slots=True)
class Shape:
    """How much each workload writes or reads, and how often it is measured.

    ``command_rounds`` is how many times ``append_per_command`` goes over every stream (one event
    per command); it defaults to ``events_per_stream``. It is set lower than that because a
    durable commit per event is the slowest thing measured, while batches and reads need enough
    events for their time to be more than noise.
    """

    streams: int
    events_per_stream: int
    runs: int
    command_rounds: int | None = None

    @property
    def events(self) -> int:
        """Events written by ``append_batch`` (and read back by the read workloads)."""
        return self.streams * self.events_per_stream

    @property
    def rounds(self) -> int:
        return self.events_per_stream if self.command_rounds is None else self.command_rounds

    @property
    def commands(self) -> int:
        """Commands (one event each) executed by ``append_per_command``, whatever the writers."""
        return self.streams * self.rounds


# SQLite, and the shape handed to the end-to-end workloads.
FULL = Shape(streams=2_000, events_per_stream=10, runs=5, command_rounds=2)
QUICK = Shape(streams=200, events_per_stream=10, runs=3, command_rounds=2)
# PostgreSQL with fsync on commits at a few hundred transactions/s on a small machine: fewer streams.
POSTGRES_FULL = Shape(streams=2_000, events_per_stream=10, runs=5, command_rounds=1)
POSTGRES_QUICK = Shape(streams=100, events_per_stream=10, runs=3, command_rounds=2)


def stream_key(n: int) -> str:
    """The n-th stream's entity id, the same text in every system."""
    return f"c{n:06d}"


def share(streams: int, writers: int, writer: int) -> range:
    """The streams one of ``writers`` concurrent writers works on: every ``writers``-th, from its own index.

    Writers never share a stream, so no system spends time on version conflicts; they do contend
    for the database, which is what is being measured.
    """
    return range(writer, streams, writers)
