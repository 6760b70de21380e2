"""Parked messages read a page at a time, after the key of the last one shown."""

from __future__ import annotations

from pathlib import Path

from twofold.deadletters import DeadLetter, DeadLetters
from twofold.readmodels.sqlite import SQLiteReadStore


async def test_pages_after_a_key_cover_every_parked_message_once_in_key_order(tmp_path: Path) -> None:
    read_store = SQLiteReadStore(tmp_path / "read.db")
    letters = DeadLetters(read_store)
    keys = [
        ("catalog", "pricing-o-1", 1),
        ("inventory", "reservation-o-1", 2),
        ("inventory", "reservation-o-1", 10),
        ("inventory", "reservation-o-2", 1),
        ("inventory", "", 7),
    ]
    for source, stream_id, version in keys:
        await letters.park(DeadLetter(source, stream_id, version, "{}", "KeyError: 'sku'"))
    shown, after = [], None
    while page := await letters.page(after, limit=2):
        shown += [(d.source, d.stream_id, d.version) for d in page]
        after = shown[-1]
    await read_store.close()
    assert shown == sorted(keys)
