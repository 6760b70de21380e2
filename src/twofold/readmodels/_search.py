"""The handle search projections write through and search queries read through, and its files.

User text never meets a query parser: it is cut into words by the same analyzer that indexed the
documents, and the query is built from those words, so no input can be a syntax error.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from twofold._tables import TableLayout
from twofold.errors import StoreError
from twofold.readmodels import Row

INSTALL = "The search read store needs tantivy: pip install 'twofold[search]'"
try:
    import tantivy
except ImportError as exc:  # pragma: no cover - the extra is part of the dev install
    raise ImportError(INSTALL) from exc

__all__ = ["SearchIndex"]

FIELD_KINDS = ("keyword", "text", "float", "int")
NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}\Z")
RESERVED = frozenset({"id", "score"})
CHECKPOINTS = "twofold_checkpoints"  # the index holding the checkpoints of projections that own none
CHECKPOINT_FIELD, POSITION_FIELD = "_checkpoint", "_position"  # a checkpoint document's two fields
TOKENIZER = "twofold"  # words split at anything not a letter or digit, lower-cased, accents folded
MAX_WORDS = 16  # of a search text: more adds nothing to ranking and costs a query each
MAX_LIMIT = 1000
ID_CHUNK = 10_000  # ids read at once when paging through an index in id order
EXACT, PREFIX, TYPO, WHOLE = 1.0, 0.4, 0.2, 2.0  # boosts: a word as typed ranks above a prefix, above a typo
CATALOG = "catalog.json"

Catalog = dict[str, "Entry"]
Opener = Callable[["Entry"], "tantivy.Index"]


@dataclass(frozen=True, slots=True)
class Entry:
    """An index as the catalog has it: its subdirectory, its fields and the projection that owns it."""

    directory: str
    fields: dict[str, str]
    owner: str


@dataclass(slots=True)
class Writes:
    """A transaction's changes, held until it commits: work that raises leaves nothing written."""

    defined: dict[str, dict[str, str]] = field(default_factory=dict)
    changes: dict[str, dict[str, dict[str, Any] | None]] = field(default_factory=dict)  # index → id → fields
    cleared: set[str] = field(default_factory=set)


def load_catalog(directory: Path) -> Catalog:
    raw = json.loads((directory / CATALOG).read_text())
    return {name: Entry(e["directory"], dict(e["fields"]), e["owner"]) for name, e in raw["indexes"].items()}


def save_catalog(directory: Path, catalog: Catalog) -> None:
    """Replace the catalog whole, durably: a reader finds the old one or the new one."""
    indexes = {n: {"directory": e.directory, "fields": e.fields, "owner": e.owner} for n, e in catalog.items()}
    temporary = directory / f"{CATALOG}.{os.getpid()}.{threading.get_ident()}"
    with temporary.open("w") as file:
        json.dump({"indexes": indexes}, file, indent=1, sort_keys=True)
        file.flush()
        os.fsync(file.fileno())
    temporary.replace(directory / CATALOG)
    folder = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(folder)  # the rename itself
    finally:
        os.close(folder)


_local = threading.local()


def analyzer() -> tantivy.TextAnalyzer:
    """This thread's analyzer, the one text fields are indexed with (tantivy's are not shared between threads)."""
    found: tantivy.TextAnalyzer | None = getattr(_local, "analyzer", None)
    if found is None:
        builder = tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple()).filter(tantivy.Filter.remove_long(40))
        found = _local.analyzer = builder.filter(tantivy.Filter.lowercase()).filter(tantivy.Filter.ascii_fold()).build()
    return found


def schema_of(fields: Mapping[str, str]) -> tantivy.Schema:
    builder = tantivy.SchemaBuilder()
    builder.add_text_field("id", stored=True, fast=True, tokenizer_name="raw")  # fast: listed and paged in id order
    builder.add_text_field(CHECKPOINT_FIELD, stored=True, tokenizer_name="raw")
    builder.add_integer_field(POSITION_FIELD, stored=True)
    for name, kind in sorted(fields.items()):
        if kind == "keyword":
            builder.add_text_field(name, stored=True, tokenizer_name="raw")
        elif kind == "text":
            builder.add_text_field(name, stored=True, tokenizer_name=TOKENIZER)
        elif kind == "float":
            builder.add_float_field(name, stored=True, indexed=True, fast=True)
        else:
            builder.add_integer_field(name, stored=True, indexed=True, fast=True)
    return builder.build()


def open_index(path: Path) -> tantivy.Index:
    index = tantivy.Index.open(str(path))
    index.register_tokenizer(TOKENIZER, analyzer())
    return index


def check_definition(table: str, fields: Mapping[str, str]) -> dict[str, str]:
    if not NAME.match(table) or table.startswith("twofold_"):
        raise ValueError(f"A search index's name is a-z, 0-9 or '_', from a letter, not twofold_… (got {table!r})")
    for name, kind in fields.items():
        if not NAME.match(name) or name in RESERVED:
            raise ValueError(
                f"Field {name!r} of index {table}: a-z, 0-9 or '_', starting with a letter, not id or score"
            )
        if kind not in FIELD_KINDS:
            raise ValueError(f"Field {name} of index {table} is {kind!r}: a field is one of {', '.join(FIELD_KINDS)}")
    return dict(fields)


def checked_fields(table: str, kinds: Mapping[str, str], key: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """``fields`` with numbers as their field's type; ``ValueError`` naming the field that does not fit."""
    if not isinstance(key, str) or not key:
        raise ValueError(f"A document of index {table} needs an id that is a non-empty string (got {key!r})")
    checked: dict[str, Any] = {}
    for name, value in fields.items():
        if name == "id" and value == key:
            continue  # a document read with get() goes back whole
        kind = kinds.get(name)
        if kind is None:
            raise ValueError(f"Index {table} has no field {name!r}; it has: {', '.join(sorted(kinds)) or 'none'}")
        if value is None:
            continue
        if kind in ("keyword", "text") and isinstance(value, str):
            checked[name] = value
        elif kind == "float" and isinstance(value, int | float) and not isinstance(value, bool):
            checked[name] = float(value)
        elif kind == "int" and isinstance(value, int) and not isinstance(value, bool):
            checked[name] = value
        else:
            raise ValueError(f"Field {name} of index {table} is {kind}: got {value!r}")
    return checked


def document(kinds: Mapping[str, str], key: str, fields: Mapping[str, Any]) -> tantivy.Document:
    doc = tantivy.Document()
    doc.add_text("id", key)
    for name, value in fields.items():
        kind = kinds[name]
        if kind == "float":
            doc.add_float(name, value)
        elif kind == "int":
            doc.add_integer(name, value)
        else:
            doc.add_text(name, value)
    return doc


class SearchIndex:
    """A store's search indexes, as a projection's transaction or a query's read sees them.

    ``dialect`` is ``"tantivy"``. Writes (``define``, ``put``, ``delete``, ``clear``) are held
    until the transaction commits; ``get`` inside one sees them, ``search`` sees what was committed.
    """

    dialect = "tantivy"

    def __init__(self, catalog: Catalog, opener: Opener, writes: Writes | None) -> None:
        self._catalog, self._open, self._writes = catalog, opener, writes
        self._searchers: dict[str, tuple[tantivy.Index, tantivy.Searcher]] = {}

    # -- writing ---------------------------------------------------------------------------------

    def define(self, table: str, fields: Mapping[str, str]) -> None:
        """Make index ``table`` with ``fields`` (each ``keyword``, ``text``, ``float`` or ``int``) unless it exists.

        As ``CREATE TABLE IF NOT EXISTS``: an index defined before keeps its fields, and a changed
        definition takes effect when the projection is rebuilt. Every index also has ``id``.
        """
        checked = check_definition(table, fields)
        if table not in self._catalog:
            self._writing().defined.setdefault(table, checked)

    def put(self, table: str, key: str, fields: Mapping[str, Any]) -> None:
        """Store the document ``key`` with ``fields``, replacing any document with that id."""
        kinds = self._fields(table)
        self._writing().changes.setdefault(table, {})[key] = checked_fields(table, kinds, key, fields)

    def delete(self, table: str, key: str) -> None:
        """Remove the document ``key``, if there is one."""
        self._fields(table)
        self._writing().changes.setdefault(table, {})[key] = None

    def clear(self, table: str) -> None:
        """Remove every document of ``table`` (a projection's ``reset``); its definition stays."""
        if table in self._catalog or self._writing().defined.get(table) is not None:
            writes = self._writing()
            writes.cleared.add(table)
            writes.changes[table] = {}

    # -- reading ---------------------------------------------------------------------------------

    def get(self, table: str, key: str) -> Row | None:
        """The document ``key`` as a dict of its fields (``id`` included), or ``None``."""
        kinds = self._fields(table)
        if self._writes is not None:
            if key in self._writes.changes.get(table, {}):
                pending = self._writes.changes[table][key]
                return None if pending is None else _row(kinds, key, pending)
            if table in self._writes.cleared or table not in self._catalog:
                return None
        index, searcher = self._searcher(table)
        hits = searcher.search(tantivy.Query.term_query(index.schema, "id", key), 1, count=False).hits
        return _stored(kinds, searcher.doc(hits[0][1])) if hits else None

    def search(self, table: str, text: str, *, limit: int = 20, filters: Mapping[str, Any] | None = None) -> list[Row]:
        """The documents best matching ``text``, best first, each with its ``score``.

        Every word must match some text field: as typed, as a prefix (the last word, being typed),
        or with a typo (one for words of 4 letters or more, two from 8). A keyword field matches
        the whole text exactly. ``filters`` maps a number field to ``(least, most)`` (either may
        be ``None``) or a value, and a keyword field to a value. Blank text lists the documents
        that pass the filters in id order, with score 0.
        """
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"A search's limit is 1 to {MAX_LIMIT} (got {limit})")
        kinds = self._fields(table)
        if table not in self._catalog:
            return []
        index, searcher = self._searcher(table)
        schema = index.schema
        conditions = [(tantivy.Occur.Must, q) for q in _filters(schema, table, kinds, filters or {})]
        if not text.strip():
            query = tantivy.Query.boolean_query([(tantivy.Occur.Must, tantivy.Query.exists_query("id")), *conditions])
            hits = searcher.search(query, limit, count=False, order_by_field="id", order=tantivy.Order.Asc).hits
            return [{**_stored(kinds, searcher.doc(address)), "score": 0.0} for _, address in hits]
        matching = _matching(schema, kinds, text)
        if matching is None:
            return []
        scored = tantivy.Query.boolean_query([(tantivy.Occur.Must, matching), *conditions])
        hits = searcher.search(scored, limit, count=False).hits
        return [{**_stored(kinds, searcher.doc(address)), "score": float(score)} for score, address in hits]

    def checkpoint(self, name: str) -> int:
        """The last position projection ``name`` committed here (0 if none), from this read's snapshot."""
        owned = sorted(table for table, entry in self._catalog.items() if entry.owner == name) or [CHECKPOINTS]
        if owned == [CHECKPOINTS] and CHECKPOINTS not in self._catalog:
            return 0
        return min(self.checkpoint_in(*self._searcher(table), name) or 0 for table in owned)

    @staticmethod
    def checkpoint_in(index: tantivy.Index, searcher: tantivy.Searcher, name: str) -> int | None:
        """The position of ``name``'s checkpoint document in ``index``, if it has one."""
        hits = searcher.search(tantivy.Query.term_query(index.schema, CHECKPOINT_FIELD, name), 1, count=False).hits
        if not hits:
            return None
        position = searcher.doc(hits[0][1]).get_first(POSITION_FIELD)
        return int(position) if position is not None else None

    # -- for the consistency checker ---------------------------------------------------------------

    def layout_of(self, table: str) -> TableLayout:
        """Index ``table`` as a table: its fields and ``id`` as columns (sorted), keyed by ``id``."""
        entry = self._catalog.get(table)
        if entry is None:
            return TableLayout(table, (), ())
        return TableLayout(table, tuple(sorted(["id", *entry.fields])), ("id",))

    def rows_in_order(self, layout: TableLayout, size: int) -> Iterator[list[Row]]:
        """The documents in id order, ``size`` at a time, each page read as it is consumed.

        tantivy has no range over text, so the ids come from a composite aggregation, which walks
        every document each time it is asked: it is asked for a chunk of many pages' ids at once.
        """
        if not layout.present:
            return
        kinds = self._fields(layout.table)
        index, searcher = self._searcher(layout.table)
        chunk = max(size, ID_CHUNK)
        after: dict[str, Any] | None = None
        while True:
            composite: dict[str, Any] = {"size": chunk, "sources": [{"id": {"terms": {"field": "id", "order": "asc"}}}]}
            if after is not None:
                composite["after"] = after
            found = searcher.aggregate(tantivy.Query.all_query(), {"ids": {"composite": composite}})["ids"]
            keys = [bucket["key"]["id"] for bucket in found["buckets"]]
            for start in range(0, len(keys), size):
                page = keys[start : start + size]
                query = tantivy.Query.term_set_query(index.schema, "id", page)
                hits = searcher.search(query, len(page), count=False).hits  # sorting by a text field costs more here
                yield sorted((_stored(kinds, searcher.doc(address)) for _, address in hits), key=_by_id)
            if len(keys) < chunk:
                return
            after = found["after_key"]

    # -- helpers ---------------------------------------------------------------------------------

    def _writing(self) -> Writes:
        if self._writes is None:
            raise RuntimeError("Search indexes are written only in a projection's transaction, not in a read")
        return self._writes

    def _fields(self, table: str) -> dict[str, str]:
        entry = self._catalog.get(table)
        if entry is not None:
            return entry.fields
        if self._writes is not None and table in self._writes.defined:
            return self._writes.defined[table]
        raise StoreError(f"No search index {table}; defined: {', '.join(sorted(self._catalog)) or 'none'}")

    def _searcher(self, table: str) -> tuple[tantivy.Index, tantivy.Searcher]:
        """One searcher per index for the whole read: every search of it sees one commit."""
        found = self._searchers.get(table)
        if found is None:
            index = self._open(self._catalog[table])
            found = self._searchers[table] = (index, _fresh(index))
        return found


def _fresh(index: tantivy.Index) -> tantivy.Searcher:
    index.reload()  # the latest commit, this process's or another's
    return index.searcher()


def _row(kinds: Mapping[str, str], key: str, fields: Mapping[str, Any]) -> Row:
    return {"id": key, **{name: fields.get(name) for name in kinds}}


def _stored(kinds: Mapping[str, str], doc: tantivy.Document) -> Row:
    return _row(kinds, str(doc.get_first("id")), {name: doc.get_first(name) for name in kinds})


def _by_id(row: Row) -> str:
    return str(row["id"])


def _distance(word: str) -> int:
    return 2 if len(word) >= 8 else 1 if len(word) >= 4 else 0


def _matching(schema: tantivy.Schema, kinds: Mapping[str, str], text: str) -> tantivy.Query | None:
    """Every word in some text field (as typed, the last as a prefix, or with a typo), or a keyword as a whole."""
    q, should = tantivy.Query, tantivy.Occur.Should
    texts = [name for name, kind in kinds.items() if kind == "text"]
    words = analyzer().analyze(text)[:MAX_WORDS]
    alternatives = [q.boost_query(q.term_query(schema, "id", text.strip()), WHOLE)]
    alternatives += [
        q.boost_query(q.term_query(schema, name, text.strip()), WHOLE)
        for name, kind in kinds.items()
        if kind == "keyword"
    ]
    if words and texts:
        every_word = []
        for place, word in enumerate(words):
            options = []
            for name in texts:
                options.append(q.boost_query(q.term_query(schema, name, word), EXACT))  # BM25
                if place == len(words) - 1:
                    prefix = q.fuzzy_term_query(schema, name, word, distance=_distance(word), prefix=True)
                    options.append(q.boost_query(prefix, PREFIX))
                elif _distance(word):
                    options.append(q.boost_query(q.fuzzy_term_query(schema, name, word, _distance(word)), TYPO))
            every_word.append((tantivy.Occur.Must, q.boolean_query([(should, option) for option in options])))
        alternatives.append(q.boolean_query(every_word))
    return q.boolean_query([(should, alternative) for alternative in alternatives])


def _filters(schema: tantivy.Schema, table: str, kinds: Mapping[str, str], filters: Mapping[str, Any]) -> list[Any]:
    queries = []
    for name, wanted in filters.items():
        kind = "keyword" if name == "id" else kinds.get(name)
        if kind in ("float", "int"):
            low, high = wanted if isinstance(wanted, tuple | list) and len(wanted) == 2 else (wanted, wanted)
            bounds = [_bound(table, name, kind, value) for value in (low, high)]
            if bounds != [None, None]:
                number = tantivy.FieldType.Float if kind == "float" else tantivy.FieldType.Integer
                found = tantivy.Query.range_query(schema, name, number, bounds[0], bounds[1])
                queries.append(tantivy.Query.const_score_query(found, 0.0))
        elif kind == "keyword" and isinstance(wanted, str):
            queries.append(tantivy.Query.const_score_query(tantivy.Query.term_query(schema, name, wanted), 0.0))
        else:
            usable = ", ".join(n for n, k in sorted(kinds.items()) if k != "text")
            raise ValueError(f"Index {table} cannot filter on {name}={wanted!r}; it filters on: id, {usable}")
    return queries


def _bound(table: str, name: str, kind: str, value: Any) -> Any:
    if value is None:
        return None
    if kind == "int" and isinstance(value, int) and not isinstance(value, bool):
        return value
    number = isinstance(value, int | float | Decimal) and not isinstance(value, bool)
    if kind == "float" and number and math.isfinite(value):
        return float(value)  # a Decimal bound (a price) too
    raise ValueError(f"A bound on {kind} field {name} of index {table} must be a finite number (got {value!r})")
