"""The search read store: what every read store promises (checkpoints, fences, rollback, tenants,
scratch stores and swaps, reopening), and what search adds (ranking, prefixes, typos, filters).

Two store objects on one directory stand in for two processes, as in tests/readstore_contract.py.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path

import pytest

import twofold.readmodels._search as search_module
from twofold._tables import TableLayout
from twofold.errors import InvalidMessage, StoreError
from twofold.readmodels import CheckpointConflict, Row
from twofold.readmodels.tantivy import SearchIndex, TantivyReadStore

WAIT = 5.0  # seconds any one wait below may take before the test fails rather than hangs
NAME = "test.items"
FIELDS = {"sku": "keyword", "name": "text", "description": "text", "price": "float", "stock": "int"}
Item = tuple[str, str, float]


def define(index: SearchIndex) -> None:
    index.define("items", fields=FIELDS)


def add(*items: Item, description: str = "") -> Callable[[SearchIndex], None]:
    def work(index: SearchIndex) -> None:
        define(index)
        for sku, name, price in items:
            index.put("items", sku, {"sku": sku, "name": name, "description": description, "price": price})

    return work


async def skus(store: TantivyReadStore, text: str = "", **filters: object) -> list[str]:
    rows = await store.read(lambda index: index.search("items", text, limit=100, filters=filters))
    return [row["id"] for row in rows]


@pytest.fixture
def open_store(tmp_path: Path) -> Callable[[], TantivyReadStore]:
    return lambda: TantivyReadStore(tmp_path / "search")


@pytest.fixture
async def store(open_store: Callable[[], TantivyReadStore]) -> AsyncIterator[TantivyReadStore]:
    store = open_store()
    yield store
    await store.close()


@pytest.fixture
async def other(open_store: Callable[[], TantivyReadStore]) -> AsyncIterator[TantivyReadStore]:
    """A second store on the same directory, as another process would open it."""
    other = open_store()
    yield other
    await other.close()


@pytest.fixture
async def shop(store: TantivyReadStore) -> TantivyReadStore:
    await store.transact(
        NAME,
        add(
            ("A-1", "Blue mug", 12.0),
            ("B-2", "Blue teapot", 30.0),
            ("C-3", "Green tea", 8.5),
            ("D-4", "Bluetooth speaker", 99.0),
            ("E-5", "Mug rack", 25.0),
        ),
        position=5,
    )
    return store


# -- transactions and checkpoints ------------------------------------------------------------------


async def test_transact_commits_the_documents_and_the_checkpoint_together(store: TantivyReadStore) -> None:
    await store.transact(NAME, add(("A-1", "Blue mug", 3.0)), position=7)

    assert await skus(store) == ["A-1"]
    assert await store.checkpoint(NAME) == 7


async def test_a_checkpoint_never_committed_reads_as_zero(store: TantivyReadStore) -> None:
    await store.transact(NAME, define)

    assert await store.checkpoint(NAME) == 0
    assert await store.checkpoint("test.never-ran") == 0


async def test_a_projection_owning_no_index_keeps_its_checkpoint_all_the_same(store: TantivyReadStore) -> None:
    await store.transact("test.nothing", lambda index: None, position=4)
    await store.transact("test.nothing", lambda index: None, expected=4, position=6)

    assert await store.checkpoint("test.nothing") == 6


async def test_work_that_raises_rolls_back_its_documents_and_the_checkpoint(store: TantivyReadStore) -> None:
    await store.transact(NAME, add(("A-1", "Blue mug", 3.0)), position=7)

    def fails_half_way(index: SearchIndex) -> None:
        add(("B-2", "Blue teapot", 1.0))(index)
        index.delete("items", "A-1")
        raise RuntimeError("cannot apply position 8")

    with pytest.raises(RuntimeError, match="cannot apply position 8"):
        await store.transact(NAME, fails_half_way, position=8)

    assert await skus(store) == ["A-1"]
    assert await store.checkpoint(NAME) == 7


async def test_a_transaction_at_the_expected_checkpoint_commits(store: TantivyReadStore) -> None:
    await store.transact(NAME, add(("A-1", "Blue mug", 3.0)), expected=0, position=5)
    await store.transact(NAME, add(("B-2", "Blue teapot", 1.0)), expected=5, position=9)

    assert await skus(store) == ["A-1", "B-2"]
    assert await store.checkpoint(NAME) == 9


async def test_a_checkpoint_elsewhere_than_expected_refuses_the_transaction_untouched(
    store: TantivyReadStore,
) -> None:
    await store.transact(NAME, add(("A-1", "Blue mug", 3.0)), position=5)
    ran: list[bool] = []

    with pytest.raises(CheckpointConflict, match=f"Checkpoint of projection {NAME} moved: expected 2, actual 5") as e:
        await store.transact(NAME, lambda index: ran.append(True), expected=2, position=9)

    assert (e.value.name, e.value.expected, e.value.actual) == (NAME, 2, 5)
    assert ran == []
    assert await store.checkpoint(NAME) == 5


async def test_another_store_on_the_directory_is_fenced_by_the_checkpoint(
    store: TantivyReadStore, other: TantivyReadStore
) -> None:
    await store.transact(NAME, add(("A-1", "Blue mug", 3.0)), expected=0, position=5)

    with pytest.raises(CheckpointConflict, match="expected 0, actual 5"):
        await other.transact(NAME, add(("A-1", "Blue mug", 3.0)), expected=0, position=5)

    assert await other.checkpoint(NAME) == 5
    assert await skus(other) == ["A-1"]


async def test_a_transaction_waiting_for_the_same_checkpoint_is_refused_once_the_first_commits(
    store: TantivyReadStore, other: TantivyReadStore
) -> None:
    await store.transact(NAME, define)
    entered, gate = threading.Event(), threading.Event()

    def slow(index: SearchIndex) -> None:
        add(("A-1", "Blue mug", 3.0))(index)
        entered.set()
        if not gate.wait(WAIT):
            raise TimeoutError("the test never opened the gate")

    first = asyncio.create_task(store.transact(NAME, slow, expected=0, position=5))
    assert await asyncio.to_thread(entered.wait, WAIT)
    second = asyncio.create_task(other.transact(NAME, add(("A-1", "Blue mug", 3.0)), expected=0, position=5))
    await asyncio.sleep(0.2)  # the second waits on the write lock while the first holds it
    gate.set()

    await first
    with pytest.raises(CheckpointConflict, match="expected 0, actual 5"):
        await second


async def test_two_stores_racing_over_the_same_batches_apply_each_batch_exactly_once(
    store: TantivyReadStore, other: TantivyReadStore
) -> None:
    def count(batch: int) -> Callable[[SearchIndex], None]:
        def work(index: SearchIndex) -> None:
            row = index.get("items", "counter")
            index.put("items", "counter", {"stock": (row["stock"] if row else 0) + 1})
            index.put("items", f"batch-{batch:02}", {"stock": 1})

        return work

    await store.transact(NAME, define)
    for batch in range(1, 11):
        outcomes = await asyncio.gather(
            store.transact(NAME, count(batch), expected=batch - 1, position=batch),
            other.transact(NAME, count(batch), expected=batch - 1, position=batch),
            return_exceptions=True,
        )
        assert sorted(type(outcome).__name__ for outcome in outcomes) == ["CheckpointConflict", "NoneType"]

    counter = await store.read(lambda index: index.get("items", "counter"))
    assert counter is not None
    assert counter["stock"] == 10
    assert len(await skus(other)) == 11
    assert await other.checkpoint(NAME) == 10


async def test_get_inside_a_transaction_sees_its_own_writes_and_search_sees_only_commits(
    shop: TantivyReadStore,
) -> None:
    seen: list[object] = []

    def work(index: SearchIndex) -> None:
        index.put("items", "F-6", {"name": "Red mug", "price": 5})
        index.delete("items", "A-1")
        seen.extend([index.get("items", "F-6"), index.get("items", "A-1"), len(index.search("items", "red"))])

    await shop.transact(NAME, work)

    assert seen[0] == {"id": "F-6", "sku": None, "name": "Red mug", "description": None, "price": 5.0, "stock": None}
    assert seen[1:] == [None, 0]
    assert await skus(shop, "red") == ["F-6"]


async def test_a_document_read_with_get_can_be_put_back_changed(shop: TantivyReadStore) -> None:
    def rename(index: SearchIndex) -> None:
        product = index.get("items", "A-1")
        assert product is not None
        index.put("items", "A-1", {**product, "name": "Red mug"})

    await shop.transact(NAME, rename)

    row = await shop.read(lambda index: index.get("items", "A-1"))
    assert row == {"id": "A-1", "sku": "A-1", "name": "Red mug", "description": "", "price": 12.0, "stock": None}


async def test_handlers_are_told_the_dialect_and_a_read_cannot_write(shop: TantivyReadStore) -> None:
    seen: list[str] = []
    await shop.transact(NAME, lambda index: seen.append(index.dialect))
    seen.append(await shop.read(lambda index: index.dialect))

    with pytest.raises(RuntimeError, match="written only in a projection's transaction"):
        await shop.read(lambda index: index.delete("items", "A-1"))
    assert seen == ["tantivy", "tantivy"] == [shop.dialect] * 2


async def test_closing_a_store_twice_is_harmless(open_store: Callable[[], TantivyReadStore]) -> None:
    store = open_store()
    await store.transact(NAME, define, position=1)

    await store.close()
    await store.close()
    with pytest.raises(RuntimeError, match="is closed"):
        await store.checkpoint(NAME)


async def test_documents_definitions_and_checkpoints_outlive_the_store(
    open_store: Callable[[], TantivyReadStore],
) -> None:
    first = open_store()
    await first.transact(NAME, add(("A-1", "Blue mug", 3.0)), position=4)
    await first.close()

    second = open_store()
    try:
        assert await skus(second, "mug") == ["A-1"]
        assert await second.checkpoint(NAME) == 4
        await second.transact(NAME, lambda index: index.put("items", "B-2", {"price": 1}), expected=4, position=5)
        assert await skus(second) == ["A-1", "B-2"]
    finally:
        await second.close()


async def test_a_read_sees_one_commit_throughout(shop: TantivyReadStore) -> None:
    first_read, written = threading.Event(), threading.Event()

    def two_reads(index: SearchIndex) -> tuple[int, int]:
        before = len(index.search("items", ""))
        first_read.set()
        if not written.wait(WAIT):
            raise TimeoutError("the write never committed")
        return before, len(index.search("items", ""))

    async def write_between() -> None:
        assert await asyncio.to_thread(first_read.wait, WAIT)
        await shop.transact(NAME, add(("F-6", "Red mug", 1.0)), position=6)
        written.set()

    counts, _ = await asyncio.gather(shop.read(two_reads), write_between())

    assert counts == (5, 5)
    assert len(await skus(shop)) == 6


# -- definitions and documents -------------------------------------------------------------------------


async def test_put_replaces_the_document_with_that_id(shop: TantivyReadStore) -> None:
    await shop.transact(NAME, add(("A-1", "Red kettle", 40.0)))
    await shop.transact(NAME, add(("A-1", "Red kettle", 40.0)))

    assert await skus(shop, "kettle") == ["A-1"]
    assert await skus(shop, "mug") == ["E-5"]
    row = await shop.read(lambda index: index.get("items", "A-1"))
    assert row is not None
    assert (row["name"], row["price"]) == ("Red kettle", 40.0)


async def test_delete_removes_a_document_and_clear_removes_them_all(shop: TantivyReadStore) -> None:
    await shop.transact(NAME, lambda index: [index.delete("items", "A-1"), index.delete("items", "Z-9")])
    assert await skus(shop) == ["B-2", "C-3", "D-4", "E-5"]

    await shop.transact(NAME, lambda index: index.clear("items"), position=9)

    assert await skus(shop) == []
    assert await shop.checkpoint(NAME) == 9  # the checkpoint is no document: clearing leaves it


async def test_a_definition_that_exists_is_kept(shop: TantivyReadStore) -> None:
    await shop.transact(NAME, lambda index: index.define("items", fields={"title": "text"}))

    layout = await shop.read(lambda index: index.layout_of("items"))
    assert layout.columns == ("description", "id", "name", "price", "sku", "stock")


@pytest.mark.parametrize(
    ("table", "fields", "message"),
    [
        ("Items", {}, "A search index's name is a-z, 0-9 or '_'"),
        ("twofold_checkpoints", {}, "A search index's name is a-z, 0-9 or '_', from a letter, not twofold_"),
        ("items", {"id": "keyword"}, "Field 'id' of index items: a-z"),
        ("items", {"score": "float"}, "Field 'score' of index items"),
        ("items", {"name": "string"}, "Field name of index items is 'string': a field is one of keyword, text"),
    ],
)
async def test_a_bad_definition_is_refused_naming_the_field(
    store: TantivyReadStore, table: str, fields: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        await store.transact(NAME, lambda index: index.define(table, fields=fields))


@pytest.mark.parametrize(
    ("key", "fields", "message"),
    [
        ("", {}, "A document of index items needs an id that is a non-empty string"),
        ("A-1", {"colour": "red"}, "Index items has no field 'colour'; it has: description, name, price"),
        ("A-1", {"id": "B-2"}, "Index items has no field 'id'"),
        ("A-1", {"price": "12"}, "Field price of index items is float: got '12'"),
        ("A-1", {"stock": 1.5}, "Field stock of index items is int: got 1.5"),
        ("A-1", {"name": 7}, "Field name of index items is text: got 7"),
    ],
)
async def test_a_document_that_does_not_fit_is_refused_naming_the_field(
    store: TantivyReadStore, key: str, fields: dict[str, object], message: str
) -> None:
    def work(index: SearchIndex) -> None:
        define(index)
        index.put("items", key, fields)

    with pytest.raises(ValueError, match=message):
        await store.transact(NAME, work)


async def test_an_index_never_defined_is_a_store_error(shop: TantivyReadStore) -> None:
    with pytest.raises(StoreError, match="No search index orders; defined: items"):
        await shop.read(lambda index: index.search("orders", "mug"))


# -- searching --------------------------------------------------------------------------------------


async def test_results_are_ranked_by_bm25_more_occurrences_and_shorter_fields_first(store: TantivyReadStore) -> None:
    await store.transact(NAME, add(("A-1", "Tea", 1.0), ("B-2", "Tea towel with a long name", 1.0)))
    await store.transact(NAME, add(("C-3", "Mug", 1.0), description="tea tea tea"))

    rows = await store.read(lambda index: index.search("items", "tea"))

    assert [row["id"] for row in rows] == ["C-3", "A-1", "B-2"]
    assert rows[0]["score"] > rows[1]["score"] > rows[2]["score"] > 0
    assert rows[1] == {
        "id": "A-1",
        "sku": "A-1",
        "name": "Tea",
        "description": "",
        "price": 1.0,
        "stock": None,
        "score": rows[1]["score"],
    }


async def test_every_word_must_match_and_a_word_as_typed_ranks_above_a_prefix_or_a_typo(
    shop: TantivyReadStore,
) -> None:
    assert await skus(shop, "blue mug") == ["A-1"]
    assert (await skus(shop, "blue"))[-1] == "D-4"  # "blue" is only a prefix of "bluetooth"


async def test_the_last_word_matches_as_a_prefix(shop: TantivyReadStore) -> None:
    assert sorted(await skus(shop, "blu")) == ["A-1", "B-2", "D-4"]
    assert await skus(shop, "blue tea") == ["B-2"]
    assert await skus(shop, "tea blue") == []  # only the last word is being typed


async def test_typos_are_forgiven_by_word_length(shop: TantivyReadStore) -> None:
    assert await skus(shop, "bleu mug") == ["A-1"]  # 4 letters: one typo (a transposition counts one)
    assert await skus(shop, "grean tea") == ["C-3"]
    assert await skus(shop, "mgu") == []  # 3 letters: none
    assert await skus(shop, "bluetoth") == ["D-4"]
    assert await skus(shop, "blutootth speaker") == ["D-4"]  # 8 letters or more: two
    assert await skus(shop, "blutoth speaker") == []  # 7 letters, two typos
    assert await skus(shop, "speakr") == ["D-4"]


async def test_a_keyword_or_an_id_matches_the_whole_text_exactly(shop: TantivyReadStore) -> None:
    assert await skus(shop, "C-3") == ["C-3"]
    assert await skus(shop, " E-5 ") == ["E-5"]


async def test_price_filters_keep_the_documents_in_range(shop: TantivyReadStore) -> None:
    assert sorted(await skus(shop, "blue", price=(10, 50))) == ["A-1", "B-2"]
    assert await skus(shop, "", price=(None, 12)) == ["A-1", "C-3"]
    assert await skus(shop, "", price=(30, None)) == ["B-2", "D-4"]
    assert await skus(shop, "", price=8.5) == ["C-3"]
    assert await skus(shop, "", price=(Decimal("8.50"), Decimal("12.00"))) == ["A-1", "C-3"]
    assert await skus(shop, "", sku="E-5") == ["E-5"]


async def test_blank_text_lists_the_documents_in_id_order_with_score_zero(shop: TantivyReadStore) -> None:
    rows = await shop.read(lambda index: index.search("items", "  ", limit=3))

    assert [(row["id"], row["score"]) for row in rows] == [("A-1", 0.0), ("B-2", 0.0), ("C-3", 0.0)]


@pytest.mark.parametrize(
    "text", ['"blue', "blue AND (", "name:blue", "*", "blue~2", "[a TO z]", "-", "🙂", "x" * 500, "a" * 45 + " mug"]
)
async def test_text_from_users_is_words_never_query_syntax(shop: TantivyReadStore, text: str) -> None:
    rows = await skus(shop, text)

    assert set(rows) <= {"A-1", "B-2", "D-4", "E-5"}


async def test_bad_filters_and_limits_are_refused_naming_them(shop: TantivyReadStore) -> None:
    cases = [
        ({"colour": "red"}, 10, "Index items cannot filter on colour='red'; it filters on: id, price, sku, stock"),
        ({"name": "mug"}, 10, "cannot filter on name='mug'"),
        ({"price": ("1", 2)}, 10, "A bound on float field price of index items must be a finite number"),
        ({"price": (float("nan"), 2)}, 10, "must be a finite number"),
        ({"stock": (1.5, 2)}, 10, "A bound on int field stock"),
        ({}, 0, "A search's limit is 1 to 1000"),
    ]
    for filters, limit, message in cases:
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            await shop.read(lambda index, f=filters, n=limit: index.search("items", "mug", limit=n, filters=f))


# -- tenants ----------------------------------------------------------------------------------------


async def test_a_tenants_documents_and_checkpoints_are_its_own(store: TantivyReadStore) -> None:
    await store.transact(NAME, add(("M-1", "Main mug", 1.0)), position=3)
    acme, globex = store.for_tenant("acme"), store.for_tenant("globex")
    await acme.transact(NAME, add(("A-1", "Acme mug", 1.0)), position=5)
    await globex.transact(NAME, add(("G-1", "Globex mug", 1.0)), position=7)

    assert [await skus(s, "mug") for s in (store, acme, globex)] == [["M-1"], ["A-1"], ["G-1"]]
    assert [await s.checkpoint(NAME) for s in (store, acme, globex)] == [3, 5, 7]
    assert store.for_tenant("acme") is acme
    assert acme.directory.parent.name == "search.tenants"


async def test_an_index_the_tenant_lacks_is_an_error_never_another_stores_documents(store: TantivyReadStore) -> None:
    await store.transact(NAME, add(("M-1", "Main mug", 1.0)))

    with pytest.raises(StoreError):
        await skus(store.for_tenant("initech"))


async def test_tenants_differing_only_in_case_are_kept_apart(store: TantivyReadStore) -> None:
    await store.for_tenant("Acme").transact(NAME, add(("U-1", "Upper", 1.0)))
    await store.for_tenant("acme").transact(NAME, add(("L-1", "Lower", 1.0)))

    assert await skus(store.for_tenant("Acme")) == ["U-1"]
    assert await skus(store.for_tenant("acme")) == ["L-1"]


async def test_a_tenants_checkpoint_fences_two_stores_and_outlives_them(
    store: TantivyReadStore, other: TantivyReadStore
) -> None:
    await store.for_tenant("acme").transact(NAME, add(("A-1", "Acme mug", 1.0)), position=2)

    with pytest.raises(CheckpointConflict):
        await other.for_tenant("acme").transact(NAME, add(("A-2", "Again", 1.0)), expected=0, position=2)
    assert await skus(other.for_tenant("acme")) == ["A-1"]


async def test_a_tenant_id_that_is_no_safe_name_is_refused(store: TantivyReadStore) -> None:
    for bad in ("", "../etc", "a b", "x" * 64, "é"):
        with pytest.raises(InvalidMessage):
            store.for_tenant(bad)


# -- scratch stores and swaps -------------------------------------------------------------------------


async def test_a_scratch_store_is_apart_and_starts_empty_whatever_an_earlier_one_left(
    open_store: Callable[[], TantivyReadStore],
) -> None:
    first = open_store()
    await first.transact(NAME, add(("M-1", "Main mug", 1.0)), position=3)
    await first.scratch("test").transact(NAME, add(("S-1", "Left behind", 1.0)), position=4)
    await first.close()  # as a process that died before discarding it

    second = open_store()
    shadow = second.scratch("test")
    try:
        assert await shadow.checkpoint(NAME) == 0
        with pytest.raises(StoreError):
            await skus(shadow)
        await shadow.transact(NAME, add(("S-2", "Shadow mug", 1.0)), position=9)
        assert [await skus(second), await skus(shadow)] == [["M-1"], ["S-2"]]
        assert [await second.checkpoint(NAME), await shadow.checkpoint(NAME)] == [3, 9]
    finally:
        await shadow.discard()
        await second.close()
    assert not shadow.directory.exists()


async def test_scratch_names_and_discards_are_checked(store: TantivyReadStore) -> None:
    for bad in ("", "Check", "a-b", "x" * 31):
        with pytest.raises(ValueError, match="A scratch store's name is 1 to 30"):
            store.scratch(bad)
    with pytest.raises(ValueError, match="is no scratch store: only a scratch store can be discarded"):
        await store.discard()
    shadow = store.scratch("test")
    with pytest.raises(ValueError, match="A scratch store has no scratch stores"):
        shadow.scratch("again")
    with pytest.raises(ValueError, match="A scratch store has no tenants"):
        shadow.for_tenant("acme")
    await shadow.discard()


async def test_swap_in_replaces_the_indexes_and_the_checkpoint(shop: TantivyReadStore) -> None:
    shadow = shop.scratch("test")
    await shadow.transact(NAME, add(("R-1", "Rebuilt mug", 1.0)), position=8)

    await shop.swap_in(shadow, NAME, ["items"])
    await shadow.discard()

    assert await skus(shop, "mug") == ["R-1"]
    assert await shop.checkpoint(NAME) == 8
    assert sorted(p.name.split(".")[0] for p in shop.directory.iterdir() if p.is_dir()) == ["items"]


async def test_a_query_under_way_finishes_on_the_old_index_and_the_next_reads_the_new(
    shop: TantivyReadStore, other: TantivyReadStore
) -> None:
    shadow = shop.scratch("test")
    await shadow.transact(NAME, add(("R-1", "Rebuilt mug", 1.0)), position=8)
    started, swapped = threading.Event(), threading.Event()

    def long_query(index: SearchIndex) -> tuple[list[str], list[str]]:
        before = [row["id"] for row in index.search("items", "mug")]
        started.set()
        if not swapped.wait(WAIT):
            raise TimeoutError("the swap never happened")
        return before, [row["id"] for row in index.search("items", "mug")]

    async def swap() -> None:
        assert await asyncio.to_thread(started.wait, WAIT)
        await shop.swap_in(shadow, NAME, ["items"])
        swapped.set()

    seen, _ = await asyncio.gather(other.read(long_query), swap())

    assert [sorted(ids) for ids in seen] == [["A-1", "E-5"], ["A-1", "E-5"]]
    assert await skus(other, "mug") == ["R-1"]  # another process re-reads the catalog
    await shadow.discard()


async def test_a_swap_is_refused_while_the_live_index_is_ahead(shop: TantivyReadStore) -> None:
    shadow = shop.scratch("test")
    try:
        await shadow.transact(NAME, add(("R-1", "Rebuilt mug", 1.0)), position=3)
        with pytest.raises(CheckpointConflict, match="expected 3, actual 5"):
            await shop.swap_in(shadow, NAME, ["items"])
        assert sorted(await skus(shop, "mug")) == ["A-1", "E-5"]
    finally:
        await shadow.discard()


async def test_only_a_scratch_store_of_this_store_is_swapped_in(
    shop: TantivyReadStore, other: TantivyReadStore
) -> None:
    shadow = other.scratch("test")
    with pytest.raises(ValueError, match="Only a scratch store of this store can be swapped in"):
        await shop.swap_in(shadow, NAME, ["items"])
    await shadow.discard()


# -- the consistency checker's view -------------------------------------------------------------------


async def test_an_index_reads_as_a_table_keyed_by_id_in_pages_of_id_order(shop: TantivyReadStore) -> None:
    def read(index: SearchIndex) -> tuple[TableLayout, list[list[str]], TableLayout]:
        layout = index.layout_of("items")
        pages = [[row["id"] for row in page] for page in index.rows_in_order(layout, 2)]
        return layout, pages, index.layout_of("orders")

    layout, pages, missing = await shop.read(read)

    assert (layout.columns, layout.key) == (("description", "id", "name", "price", "sku", "stock"), ("id",))
    assert pages == [["A-1", "B-2"], ["C-3", "D-4"], ["E-5"]]
    assert not missing.present


async def test_paging_in_id_order_goes_on_past_each_chunk_of_ids(
    shop: TantivyReadStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(search_module, "ID_CHUNK", 3)

    pages = await shop.read(
        lambda index: [[row["id"] for row in page] for page in index.rows_in_order(index.layout_of("items"), 2)]
    )

    assert pages == [["A-1", "B-2"], ["C-3"], ["D-4", "E-5"]]


# -- crashes ---------------------------------------------------------------------------------------------

CRASH = """
import asyncio, os, sys
import twofold.readmodels.tantivy as search
from twofold.readmodels.tantivy import TantivyReadStore

written = []
real_write = search._write

def write_then_die(*args):
    real_write(*args)
    written.append(args[1].directory)
    if len(written) == 1:
        os._exit(17)  # killed after the first index committed and before the second

async def main():
    store = TantivyReadStore(sys.argv[1])
    search._write = write_then_die
    await store.transact("p", page(2, 3), expected=2, position=4)

def page(*numbers):
    def work(index):
        for n in numbers:
            index.put("alpha", f"d-{n}", {"n": n})
            index.put("beta", f"d-{n}", {"n": n})
    return work

asyncio.run(main())
"""


def two_indexes(*numbers: int) -> Callable[[SearchIndex], None]:
    def work(index: SearchIndex) -> None:
        index.define("alpha", fields={"n": "int"})
        index.define("beta", fields={"n": "int"})
        for number in numbers:
            index.put("alpha", f"d-{number}", {"n": number})
            index.put("beta", f"d-{number}", {"n": number})

    return work


async def documents(store: TantivyReadStore, table: str) -> list[Row]:
    return await store.read(
        lambda index: [row for page in index.rows_in_order(index.layout_of(table), 50) for row in page]
    )


@pytest.mark.parametrize("replayed", [(2, 3), (2, 3, 4)])
async def test_a_process_killed_between_two_indexes_commits_replays_the_page_without_duplicates(
    tmp_path: Path, replayed: tuple[int, ...]
) -> None:
    directory = tmp_path / "search"
    store = TantivyReadStore(directory)
    await store.transact("p", two_indexes(1), position=2)
    await store.close()

    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    command = [sys.executable, "-c", textwrap.dedent(CRASH), str(directory)]
    crashed = await asyncio.to_thread(subprocess.run, command, env=environment, timeout=60, check=False)
    assert crashed.returncode == 17

    store = TantivyReadStore(directory)
    try:
        assert await store.checkpoint("p") == 2  # the index behind holds the projection back
        await store.transact("p", two_indexes(*replayed), expected=2, position=2 + len(replayed))
        alpha, beta = await documents(store, "alpha"), await documents(store, "beta")
        assert alpha == beta == [{"id": f"d-{n}", "n": n} for n in (1, *replayed)]
        assert await store.checkpoint("p") == 2 + len(replayed)
    finally:
        await store.close()


async def test_a_batch_that_fails_half_way_and_is_replayed_leaves_each_document_once(
    store: TantivyReadStore,
) -> None:
    await store.transact("p", two_indexes(1), position=1)

    def half(index: SearchIndex) -> None:
        two_indexes(2)(index)
        raise OSError("the disk filled half way")

    with pytest.raises(OSError, match="half way"):
        await store.transact("p", half, expected=1, position=2)
    await store.transact("p", two_indexes(2), expected=1, position=2)

    assert [row["id"] for row in await documents(store, "beta")] == ["d-1", "d-2"]
