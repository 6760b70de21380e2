"""Search read models in tantivy indexes: ranked by relevance, matched by prefix and despite typos.

    class ProductSearch(Projection, name="shop.product-search"):
        target = "search"
        tables = ("products",)

        def setup(self, index: SearchIndex) -> None:
            index.define("products", fields={"sku": "keyword", "name": "text", "price": "float"})

        def apply(self, event: ProductAdded, index: SearchIndex, record: StoredEvent) -> None:
            index.put("products", event.sku, {"sku": event.sku, "name": event.name, "price": event.price})

    await store.read(lambda index: index.search("products", "blu mgu", filters={"price": (None, 20)}))
    → [{"id": "A-1", "sku": "A-1", "name": "Blue mug", "price": 12.0, "score": 1.9}]

A store is a directory holding one tantivy index per name, and ``catalog.json``, which says which
subdirectory holds each index, its fields and the projection that owns it. The catalog is the
pointer that makes a swap atomic: it is only ever replaced whole (``os.replace``), and every read
re-reads it when it changed, so a query sees the old index or the new one, never half of one.

Exactly once. A transaction buffers its writes in memory, so work that raises leaves nothing
behind. At commit, each index it wrote gets its documents and the projection's checkpoint — a
document of its own in that index — in one ``IndexWriter.commit()``: an index never holds a page's
documents without the checkpoint saying so. A projection's checkpoint is the lowest of those in
the indexes it owns (or, owning none, the one in an index kept for checkpoints alone). A crash
between two indexes' commits leaves one ahead of the other; the page then comes round again and
goes only into the indexes behind, while an index whose checkpoint is already at the page's end
is left as it is. Should the page come round longer than it was (more events arrived meanwhile),
the index ahead gets the part it had again; ``put`` replaces a document by id, so that repeats no
document, and a projection that keeps each document's fields as the events set them (rather than
adding to them) ends the same either way.

One writer at a time, across processes: a transaction holds the store's ``write.lock`` (``flock``)
from reading the checkpoint to the last commit, and opens tantivy's writers only meanwhile, so two
processes on one directory are fenced by the checkpoint as two on one SQL database are. Queries
run on reader threads, each from a searcher reloaded to the latest commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import os
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from twofold.errors import StoreError
from twofold.readmodels import CheckpointConflict, check_scratch_name
from twofold.readmodels._search import (
    CHECKPOINT_FIELD,
    CHECKPOINTS,
    INSTALL,
    POSITION_FIELD,
    Catalog,
    Entry,
    SearchIndex,
    Writes,
    document,
    load_catalog,
    open_index,
    save_catalog,
    schema_of,
)
from twofold.tenancy import tenant_location

try:
    import tantivy
except ImportError as exc:  # pragma: no cover - the extra is part of the dev install
    raise ImportError(INSTALL) from exc

__all__ = ["SearchIndex", "TantivyReadStore"]

T = TypeVar("T")
TENANT_READERS = 2  # reader threads per tenant's directory: a directory per tenant should not cost a pool each
WRITE_LOCK = "write.lock"
LOCK_WAIT = 30.0  # seconds a transaction waits for another process's before it fails
WRITER_HEAP = 15_000_000  # tantivy's least per writer thread: a page of documents is small


class _Files:
    """A store's directory: its catalog, re-read when replaced, and its indexes, each opened once."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._guard = threading.Lock()  # the cached catalog and opened indexes, shared by all threads
        self._stamp: tuple[int, int, int] | None = None
        self._catalog: Catalog = {}
        self._opened: dict[str, tantivy.Index] = {}

    def catalog(self) -> Catalog:
        try:
            status = (self.directory / "catalog.json").stat()
            stamp: tuple[int, int, int] | None = (status.st_ino, status.st_mtime_ns, status.st_size)
        except FileNotFoundError:
            stamp = None
        with self._guard:
            if stamp != self._stamp:
                self._catalog = load_catalog(self.directory) if stamp else {}
                self._stamp = stamp
                # Indexes a swap replaced: a read still on one keeps its own reference to it.
                live = {entry.directory for entry in self._catalog.values()}
                self._opened = {name: index for name, index in self._opened.items() if name in live}
            return self._catalog

    def save(self, catalog: Catalog) -> None:
        save_catalog(self.directory, catalog)
        with self._guard:
            self._stamp = None  # re-read at next use: the stamp is the file's own
        self.catalog()

    def index(self, entry: Entry) -> tantivy.Index:
        with self._guard:
            index = self._opened.get(entry.directory)
            if index is None:
                index = self._opened[entry.directory] = open_index(self.directory / entry.directory)
            return index

    def forget(self, directory: str) -> None:
        with self._guard:
            self._opened.pop(directory, None)

    def forget_all(self) -> None:
        with self._guard:
            self._opened.clear()


class TantivyReadStore:
    """A read store of search indexes (tantivy), one directory per store.

    Projections write through a :class:`~twofold.readmodels._search.SearchIndex` (``define``,
    ``put``, ``delete``, ``clear``) and queries read through one (``search``, ``get``).

    Args:
        directory: the store's directory; created when missing.
        readers: threads serving queries.
    """

    dialect = "tantivy"

    def __init__(self, directory: str | Path, *, readers: int = 4) -> None:
        self.directory = Path(directory)
        self._files = _Files(self.directory)
        self._writer = ThreadPoolExecutor(1, "twofold-search-writer")
        self._readers = ThreadPoolExecutor(readers, "twofold-search-reader")
        self._tenants: dict[str, TantivyReadStore] = {}
        self._scratch_of: TantivyReadStore | None = None  # the store this one is a scratch store of
        self._closed = False

    async def transact(
        self,
        name: str,
        work: Callable[[SearchIndex], None],
        *,
        expected: int | None = None,
        position: int | None = None,
    ) -> None:
        await self._run(self._writer, _transact, self._files, name, work, expected, position)

    async def read(self, work: Callable[[SearchIndex], T]) -> T:
        return await self._run(self._readers, _read, self._files, work)

    async def checkpoint(self, name: str) -> int:
        return await self.read(lambda index: index.checkpoint(name))

    def for_tenant(self, tenant: str) -> TantivyReadStore:
        """The tenant's indexes in a directory of their own: ``search`` → ``search.tenants/tenant_acme_…``."""
        if self._scratch_of is not None:
            raise ValueError("A scratch store has no tenants of its own")
        store = self._tenants.get(tenant)
        if store is None:
            folder = self.directory.with_name(f"{self.directory.name}.tenants")
            store = self._tenants[tenant] = TantivyReadStore(folder / tenant_location(tenant), readers=TENANT_READERS)
        return store

    def scratch(self, name: str) -> TantivyReadStore:
        """A fresh directory beside this store's, that no query reads: ``search`` → ``search.scratch-<name>``."""
        if self._scratch_of is not None:
            raise ValueError("A scratch store has no scratch stores of its own")
        directory = self.directory.with_name(f"{self.directory.name}.scratch-{check_scratch_name(name)}")
        shutil.rmtree(directory, ignore_errors=True)
        store = TantivyReadStore(directory, readers=TENANT_READERS)
        store._scratch_of = self
        return store

    async def discard(self) -> None:
        if self._scratch_of is None:
            raise ValueError(f"{self.directory} is no scratch store: only a scratch store can be discarded")
        await self.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    async def swap_in(self, shadow: Any, name: str, tables: Sequence[str]) -> None:
        """Move the shadow's indexes into this directory and point the catalog at them in one replace.

        Queries that began before the catalog is replaced finish on the old indexes (their files stay
        readable until the last searcher lets go); any read after it opens the new ones.
        """
        if not isinstance(shadow, TantivyReadStore) or shadow._scratch_of is not self:
            raise ValueError("Only a scratch store of this store can be swapped in")
        await self._run(self._writer, _swap_in, self._files, shadow._files, name, list(tables))

    async def close(self) -> None:
        for store in self._tenants.values():
            await store.close()
        self._tenants.clear()
        if self._closed:
            return
        self._closed = True
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        self._files.forget_all()

    async def _run(self, executor: ThreadPoolExecutor, work: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise RuntimeError(f"{self.directory} is closed")
        return await asyncio.get_running_loop().run_in_executor(executor, functools.partial(work, *args))


@contextlib.contextmanager
def _write_lock(directory: Path) -> Iterator[None]:
    """Hold the store's write lock: one transaction at a time, in this process and every other."""
    descriptor = os.open(directory / WRITE_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise StoreError(f"Search read store {directory} stayed locked by another writer") from None
                time.sleep(0.005)
        yield
    finally:
        os.close(descriptor)  # which lets the lock go


def _read(files: _Files, work: Callable[[SearchIndex], T]) -> T:
    return work(SearchIndex(files.catalog(), files.index, None))


def _transact(
    files: _Files, name: str, work: Callable[[SearchIndex], None], expected: int | None, position: int | None
) -> None:
    with _write_lock(files.directory):
        catalog = files.catalog()
        actual = SearchIndex(catalog, files.index, None).checkpoint(name)
        if expected is not None and actual != expected:
            raise CheckpointConflict(name, expected, actual)
        writes = Writes()
        work(SearchIndex(catalog, files.index, writes))
        _commit(files, name, writes, actual, position)


def _commit(files: _Files, name: str, writes: Writes, actual: int, position: int | None) -> None:
    """Write the buffered changes index by index, each with ``name``'s checkpoint in its own commit."""
    catalog = dict(files.catalog())
    created = [table for table in writes.defined if table not in catalog]
    for table in created:  # a new index starts empty at the checkpoint, as a new SQL table would
        catalog[table] = _create(files, table, writes.defined[table], owner=name)
    holders = _holders(catalog, name)
    if position is not None and holders == [CHECKPOINTS] and CHECKPOINTS not in catalog:
        catalog[CHECKPOINTS] = _create(files, CHECKPOINTS, {}, owner="")
        created.append(CHECKPOINTS)
    if created:
        files.save(catalog)
    moved = set(holders) if position is not None else set()
    for table in sorted(set(writes.changes) | writes.cleared | set(created) | moved):
        if table not in catalog:
            continue  # a put into an index never defined was refused when it was made
        checkpoint = None
        if table in moved:
            assert position is not None
            if actual < position <= _checkpoint_in(files, catalog[table], name):
                continue  # this index has the page already: the last commit stopped between two indexes
            checkpoint = (name, position)
        elif table in created and table in holders:
            checkpoint = (name, actual)
        _write(files, catalog[table], writes.changes.get(table, {}), table in writes.cleared, checkpoint)


def _holders(catalog: Catalog, name: str) -> list[str]:
    """The indexes keeping ``name``'s checkpoint: those it owns, or the checkpoints' own index."""
    return sorted(table for table, entry in catalog.items() if entry.owner == name) or [CHECKPOINTS]


def _create(files: _Files, table: str, fields: Mapping[str, str], owner: str) -> Entry:
    directory = f"{table}.{secrets.token_hex(4)}"
    (files.directory / directory).mkdir()
    tantivy.Index(schema_of(fields), path=str(files.directory / directory), reuse=False)
    return Entry(directory, dict(fields), owner)


def _checkpoint_in(files: _Files, entry: Entry, name: str) -> int:
    index = files.index(entry)
    index.reload()
    return SearchIndex.checkpoint_in(index, index.searcher(), name) or 0


def _write(
    files: _Files,
    entry: Entry,
    changes: Mapping[str, dict[str, Any] | None],
    cleared: bool,
    checkpoint: tuple[str, int] | None,
) -> None:
    index = files.index(entry)
    try:
        writer = index.writer(WRITER_HEAP, 1)
    except ValueError as exc:
        raise StoreError(f"Search read store failed: {exc}") from exc
    try:
        if cleared:
            writer.delete_documents_by_query(tantivy.Query.exists_query("id"))
        for key, fields in changes.items():
            writer.delete_documents_by_term("id", key)  # a put replaces: a replayed page repeats nothing
            if fields is not None:
                writer.add_document(document(entry.fields, key, fields))
        if checkpoint is not None:
            writer.delete_documents_by_term(CHECKPOINT_FIELD, checkpoint[0])
            mark = tantivy.Document()
            mark.add_text(CHECKPOINT_FIELD, checkpoint[0])
            mark.add_integer(POSITION_FIELD, checkpoint[1])
            writer.add_document(mark)
        writer.commit()
    except (ValueError, OSError, RuntimeError) as exc:
        writer.rollback()
        raise StoreError(f"Search read store failed: {exc}") from exc
    finally:
        writer.wait_merging_threads()  # and let tantivy's lock on the directory go
    index.reload()


def _swap_in(live: _Files, shadow: _Files, name: str, tables: list[str]) -> None:
    with _write_lock(live.directory), _write_lock(shadow.directory):
        rebuilt = SearchIndex(shadow.catalog(), shadow.index, None).checkpoint(name)
        current = SearchIndex(live.catalog(), live.index, None).checkpoint(name)
        if current > rebuilt:
            raise CheckpointConflict(name, rebuilt, current)
        catalog, theirs, replaced = dict(live.catalog()), shadow.catalog(), []
        shadow.forget_all()
        for table in tables:
            if table in catalog:
                replaced.append(catalog.pop(table).directory)
            entry = theirs.get(table)
            if entry is not None:
                moved = f"{table}.{secrets.token_hex(4)}"
                (shadow.directory / entry.directory).rename(live.directory / moved)
                catalog[table] = Entry(moved, entry.fields, entry.owner)
        rest = [table for table in _holders(catalog, name) if table not in tables]
        if CHECKPOINTS in rest and CHECKPOINTS not in catalog:
            catalog[CHECKPOINTS] = _create(live, CHECKPOINTS, {}, owner="")
        live.save(catalog)  # the switch: from here every read opens the new indexes
        for table in rest:  # the checkpoint's other holders follow; behind, they would only replay
            _write(live, catalog[table], {}, False, (name, rebuilt))
        for directory in replaced:
            live.forget(directory)
            shutil.rmtree(live.directory / directory, ignore_errors=True)
