"""What every system is asked to do: the same streams, events and payload, sized by ``--quick``."""

from __future__ import annotations

import json
from dataclasses import dataclass

# About 200 bytes once encoded as JSON, like a small order line.
PAYLOAD = {"sku": "A-0001", "name": "x" * 160, "quantity": 3}
PAYLOAD_BYTES = len(json.dumps(PAYLOAD, separators=(",", ":")))
EVENT_TYPE = "bench.Happened"


@dataclass(frozen=True, slots=True)
class Shape:
    """How much each workload writes or reads, and how often it is measured."""

    streams: int
    events_per_stream: int
    runs: int

    @property
    def events(self) -> int:
        return self.streams * self.events_per_stream


FULL = Shape(streams=2_000, events_per_stream=10, runs=5)
QUICK = Shape(streams=200, events_per_stream=10, runs=3)


def stream_key(n: int) -> str:
    """The n-th stream's entity id, the same text in every system."""
    return f"c{n:06d}"
