"""The systems measured side by side; each runs every workload against a fresh SQLite file.

A workload method prepares what it needs untimed (for reads, the events it reads), then returns
the seconds its measured part took.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from benchmarks.shape import Shape

WORKLOADS = ("append_per_command", "append_batch", "load_aggregate", "read_all")


class System(Protocol):
    name: str

    def settings(self) -> dict[str, str]:
        """Durability and other settings, as read back from the database where possible."""
        ...

    async def append_per_command(self, path: Path, shape: Shape) -> float: ...

    async def append_batch(self, path: Path, shape: Shape) -> float: ...

    async def load_aggregate(self, path: Path, shape: Shape) -> float: ...

    async def read_all(self, path: Path, shape: Shape) -> float: ...
