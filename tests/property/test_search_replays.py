"""However pages of a search projection fail and come round again, its indexes end as if each was applied once.

A page may fail half way through its work (nothing is written), or after its first index committed
and before its second did (the page comes round again, as it is or longer): either way both
indexes end holding each document once, as the events left it, at the last event's checkpoint.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

import twofold.readmodels.tantivy as search
from twofold.errors import StoreError
from twofold.readmodels.tantivy import SearchIndex, TantivyReadStore

NAME = "test.replays"
IDS = ("a", "b", "c", "d")
Event = tuple[str, int | None]  # (document id, its new number, or None for a delete)
COMMIT, FAIL_IN_WORK, STOP_BETWEEN_INDEXES, STOP_THEN_LONGER_PAGE = range(4)

events = st.lists(st.tuples(st.sampled_from(IDS), st.none() | st.integers(0, 99)), min_size=1, max_size=10)


@st.composite
def pages(draw: st.DrawFn) -> tuple[list[list[Event]], list[int]]:
    history = draw(events)
    cuts = sorted(draw(st.lists(st.integers(1, len(history)), max_size=4, unique=True)))
    paged = [history[start:end] for start, end in zip([0, *cuts], [*cuts, len(history)], strict=False)]
    paged = [page for page in paged if page]
    return paged, draw(st.lists(st.integers(COMMIT, STOP_THEN_LONGER_PAGE), min_size=len(paged), max_size=len(paged)))


def applying(page: list[Event], fail_after: int | None = None) -> Callable[[SearchIndex], None]:
    def work(index: SearchIndex) -> None:
        index.define("alpha", fields={"n": "int"})
        index.define("beta", fields={"n": "int"})
        for done, (key, number) in enumerate(page):
            if done == fail_after:
                raise RuntimeError("the projection failed half way through the page")
            for table in ("alpha", "beta"):
                if number is None:
                    index.delete(table, key)
                else:
                    index.put(table, key, {"n": number})

    return work


@contextmanager
def second_commit_fails() -> Iterator[None]:
    """The first index of the next transaction commits; the second's commit fails, as if the process died."""
    real, calls = search._write, []

    def write(*args: Any) -> None:
        calls.append(args)
        if len(calls) == 2:
            raise StoreError("stopped between two indexes' commits")
        real(*args)

    search._write = write
    try:
        yield
    finally:
        search._write = real


async def scenario(folder: Path, paged: list[list[Event]], fates: list[int]) -> None:
    store = TantivyReadStore(folder / "search")
    try:
        position, number = 0, 0
        while number < len(paged):
            page, fate = paged[number], fates[number]
            if fate == FAIL_IN_WORK:
                with suppress(RuntimeError):
                    failing = applying(page, len(page) // 2)
                    await store.transact(NAME, failing, expected=position, position=position + len(page))
            elif fate in (STOP_BETWEEN_INDEXES, STOP_THEN_LONGER_PAGE):
                try:
                    with second_commit_fails():
                        await store.transact(NAME, applying(page), expected=position, position=position + len(page))
                except StoreError:
                    pass
                assert await store.checkpoint(NAME) == position  # the index behind holds it back
                if fate == STOP_THEN_LONGER_PAGE and number + 1 < len(paged):
                    number += 1
                    page = page + paged[number]
            await store.transact(NAME, applying(page), expected=position, position=position + len(page))
            position += len(page)
            number += 1

        expected: dict[str, int] = {}
        for page in paged:
            for key, value in page:
                if value is None:
                    expected.pop(key, None)
                else:
                    expected[key] = value
        wanted = [{"id": key, "n": value} for key, value in sorted(expected.items())]
        for table in ("alpha", "beta"):
            rows = await store.read(
                lambda index, t=table: [r for p in index.rows_in_order(index.layout_of(t), 3) for r in p]
            )
            assert rows == wanted, table
        assert await store.checkpoint(NAME) == position == sum(len(page) for page in paged)
    finally:
        await store.close()


@settings(max_examples=10, deadline=None)
@given(pages())
def test_pages_failing_and_replayed_leave_each_document_once_as_the_events_left_it(
    case: tuple[list[list[Event]], list[int]],
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(scenario(Path(folder), *case))
