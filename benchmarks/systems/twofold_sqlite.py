"""twofold on SQLiteEventStore(durability="full"): WAL, and every commit synced."""

from __future__ import annotations

from pathlib import Path
from typing import Final

from benchmarks.systems.twofold import Twofold
from twofold.store.sqlite import SQLiteEventStore

__all__ = ["DURABILITY", "TwofoldSQLite"]

DURABILITY: Final = "full"


class TwofoldSQLite(Twofold):
    def __init__(self) -> None:
        super().__init__(
            lambda path: SQLiteEventStore(Path(path), durability=DURABILITY),
            {"durability": DURABILITY, "synchronous": "FULL (twofold sets it)", "journal_mode": "wal"},
        )
