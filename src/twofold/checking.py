"""Are the read models right? Each one rebuilt aside from its events and compared row by row.

    report = await check_consistency(inventory, store, read_store)
    report.consistent     # False
    print(report.render())
    ✗ inventory.stock at position 9: 2 rows compared, 1 difference (0.04 s)
        stock_levels changed sku='A-1': available live 99, rebuilt 3
          from #2 inventory.StockReceived (stock-A-1 v1), #7 inventory.StockAllocated (stock-A-1 v2)

For each projection, and each tenant's copy of it, the checker takes the live tables and their
checkpoint P in one read snapshot, replays the events up to exactly P into a scratch store of the
same database, and walks both copies of every table in ``projection.tables`` side by side in
primary-key order (a table without one is compared as a multiset of rows). Each row missing from
the live copy, extra in it or changed is reported with the events that produced it: those the
projection handles whose data mentions the row's key values, a few per row.

The live service goes on undisturbed: the checker only reads its tables, holding nothing beyond
a read snapshot per store while it works, and the scratch store is dropped at the end, whatever
happens. Memory stays bounded: events and rows go through a page at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Collection, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from twofold._tables import Handover, TableLayout, checkpoint_in, layout_of, rows_in_order, sort_key
from twofold.readmodels import SQL_DIALECTS, ReadStore, Row
from twofold.rebuilds import OnProgress, Replay
from twofold.service import Service
from twofold.store import EventStore, StoredEvent
from twofold.tenancy import known_tenants

__all__ = ["ConsistencyReport", "Difference", "EventRef", "ProjectionCheck", "check_consistency"]

MAX_DIFFERENCES = 100  # per projection and store: reported in full; any more are only counted
MAX_EVENTS = 3  # events named per difference
PAGE_SIZE = 500  # rows per page, and events per page of the replay

Kind = Literal["missing", "extra", "changed", "definition"]


@dataclass(frozen=True, slots=True)
class EventRef:
    """Where an event is: enough to find it in the store, or in the console's stream view."""

    position: int
    stream_id: str
    version: int
    type: str

    def __str__(self) -> str:
        return f"#{self.position} {self.type} ({self.stream_id} v{self.version})"


@dataclass(frozen=True, slots=True)
class Difference:
    """One way the live table differs from the rebuilt one.

    Attributes:
        table: the table.
        kind: ``missing`` (rebuilt, not live), ``extra`` (live, not rebuilt), ``changed`` (both,
            with other values) or ``definition`` (the tables' columns or keys differ; rows not compared).
        key: the row's primary-key values (every value, for a table without a primary key).
        live: the live row, if any; for ``definition``, the live columns and key.
        rebuilt: the rebuilt row, if any; for ``definition``, the rebuilt columns and key.
        events: events that mention the key, oldest first, at most a few.
    """

    table: str
    kind: Kind
    key: dict[str, Any]
    live: Row | None = None
    rebuilt: Row | None = None
    events: tuple[EventRef, ...] = ()

    @property
    def columns(self) -> tuple[str, ...]:
        """For ``changed``, the columns whose values differ."""
        if self.kind != "changed" or self.live is None or self.rebuilt is None:
            return ()
        return tuple(c for c in self.live if self.live[c] != self.rebuilt.get(c))

    def describe(self) -> str:
        """One line: ``stock_levels changed sku='A-1': available live 99, rebuilt 3``."""
        key = ", ".join(f"{name}={value!r}" for name, value in self.key.items())
        if self.kind == "definition":
            return f"{self.table} definition differs: live {self.live}, rebuilt {self.rebuilt}"
        if self.kind == "changed":
            assert self.live is not None
            assert self.rebuilt is not None
            changes = "; ".join(f"{c} live {self.live[c]!r}, rebuilt {self.rebuilt.get(c)!r}" for c in self.columns)
            return f"{self.table} changed {key}: {changes}"
        where = "rebuilt, not live" if self.kind == "missing" else "live, not rebuilt"
        return f"{self.table} {self.kind} {key} ({where})"


@dataclass(slots=True)
class ProjectionCheck:
    """The outcome for one projection in one store (the main one, or a tenant's)."""

    projection: str
    tenant: str | None
    position: int  # the checkpoint the live tables were read at, and the rebuild went up to
    rows_compared: int = 0
    differences: list[Difference] = field(default_factory=list)
    unreported: int = 0  # differences found beyond MAX_DIFFERENCES
    elapsed: float = 0.0  # seconds

    @property
    def consistent(self) -> bool:
        return not self.differences

    @property
    def label(self) -> str:
        return self.projection if self.tenant is None else f"{self.projection}@{self.tenant}"

    @property
    def found(self) -> int:
        """Every difference found, reported or not."""
        return len(self.differences) + self.unreported

    def as_json(self) -> dict[str, Any]:
        """The check as plain values for JSON (a row's values as the database gave them)."""
        data = asdict(self)
        data["consistent"] = self.consistent
        data["elapsed"] = round(self.elapsed, 3)
        for difference, plain in zip(self.differences, data["differences"], strict=True):
            plain["columns"] = list(difference.columns)
        return data

    def add(self, difference: Difference) -> None:
        if len(self.differences) < MAX_DIFFERENCES:
            self.differences.append(difference)
        else:
            self.unreported += 1

    def render(self) -> Iterator[str]:
        count = self.found
        found = f"{count} difference{'s' if count != 1 else ''}" if count else "no difference"
        yield (
            f"{'✓' if self.consistent else '✗'} {self.label} at position {self.position}:"
            f" {self.rows_compared} rows compared, {found} ({self.elapsed:.2f} s)"
        )
        for difference in self.differences:
            yield f"    {difference.describe()}"
            if difference.kind != "definition":
                events = ", ".join(map(str, difference.events)) or "no event mentions its key"
                yield f"      from {events}"
        if self.unreported:
            yield f"    … and {self.unreported} more"


@dataclass(slots=True)
class ConsistencyReport:
    """Every projection's check, in the order they ran."""

    checks: list[ProjectionCheck]

    @property
    def consistent(self) -> bool:
        return all(check.consistent for check in self.checks)

    @property
    def differences(self) -> int:
        return sum(check.found for check in self.checks)

    def render(self) -> str:
        """A readable report, a line per projection and per difference."""
        return "\n".join(line for check in self.checks for line in check.render())


async def check_consistency(
    service: Service,
    store: EventStore,
    read_store: ReadStore[Any],
    *,
    projections: Collection[str] | None = None,
    batch_size: int = PAGE_SIZE,
    progress: OnProgress | None = None,
    targets: Mapping[str, ReadStore[Any]] | None = None,
) -> ConsistencyReport:
    """Check ``service``'s projections (only those named in ``projections``, if given), every tenant's copy too.

    ``read_store`` holds the ``"sql"`` projections; ``targets`` the stores of the others
    (``{"warehouse": …}``). Without ``projections``, a projection whose target store is not given
    is left out. Raises ``ValueError`` for a name that is no projection of the service, or one
    whose store is not given, and :class:`~twofold.errors.StoreError` if a store fails (no scratch
    store is left behind).
    """
    stores: dict[str, ReadStore[Any]] = {**(targets or {}), "sql": read_store}
    chosen = [p for p in service.projections if projections is None or p.name in projections]
    unknown = sorted(set(projections or ()) - {p.name for p in service.projections})
    if unknown:
        names = ", ".join(p.name for p in service.projections) or "none"
        raise ValueError(f"{service.name} has no projection {', '.join(unknown)}; it has: {names}")
    missing = sorted(p.name for p in chosen if p.target not in stores)
    if missing and projections is not None:
        raise ValueError(f"No store is open for the target of {', '.join(missing)}")
    checks = []
    for projection in (p for p in chosen if p.target in stores):
        main = stores[projection.target]
        registry = main if main.dialect in SQL_DIALECTS else read_store
        for tenant in [None, *await known_tenants(registry)]:
            live = main if tenant is None else main.for_tenant(tenant)
            replay = Replay(projection, store, tenant, service.upcasters, batch_size)
            checks.append(await _check_store(replay, live, progress))
    return ConsistencyReport(checks)


async def _check_store(replay: Replay, live: ReadStore[Any], progress: OnProgress | None) -> ProjectionCheck:
    started = time.monotonic()
    projection, size = replay.projection, replay.batch_size
    handover = Handover()
    producer = asyncio.ensure_future(
        live.read(lambda db: _hand_over_live(db, projection.name, projection.tables, handover, size))
    )
    try:
        check = ProjectionCheck(projection.name, replay.tenant, await handover.get(producer))
        shadow = live.scratch("check_" + secrets.token_hex(6))
        try:
            await shadow.transact(projection.name, projection.setup)
            await replay.into(shadow, 0, check.position, progress)
            for table in projection.tables:
                await _compare_table(table, (handover, producer), shadow, check, size)
        finally:
            await shadow.discard()
    finally:
        handover.abandon()
        await asyncio.gather(producer, return_exceptions=True)  # its error, if any, was raised by get()
    await _name_events(check, replay)
    check.elapsed = time.monotonic() - started
    return check


def _hand_over_live(db: Any, name: str, tables: tuple[str, ...], handover: Handover, size: int) -> None:
    """The checkpoint, then each table's layout and rows, all from this one read's snapshot."""
    handover.put(checkpoint_in(db, name))
    for table in tables:
        _hand_over_table(db, table, handover, size)


def _hand_over_table(db: Any, table: str, handover: Handover, size: int) -> None:
    layout = layout_of(db, table)
    handover.put(layout)
    for page in rows_in_order(db, layout, size):
        handover.put(page)
    handover.put(None)


Feed = tuple[Handover, "asyncio.Future[None]"]  # a table's rows, and the read producing them


async def _compare_table(table: str, live: Feed, shadow: ReadStore[Any], check: ProjectionCheck, size: int) -> None:
    handover = Handover()
    rebuilt: Feed = (
        handover,
        asyncio.ensure_future(shadow.read(lambda db: _hand_over_table(db, table, handover, size))),
    )
    try:
        live_layout: TableLayout = await live[0].get(live[1])
        rebuilt_layout: TableLayout = await rebuilt[0].get(rebuilt[1])
        live_rows, rebuilt_rows = _rows(live), _rows(rebuilt)
        if live_layout.present and rebuilt_layout.present and live_layout != rebuilt_layout:
            check.add(Difference(table, "definition", {}, _definition(live_layout), _definition(rebuilt_layout)))
            async for _ in live_rows:  # the live feed goes on to the next table: skip this one's rows
                pass
            return
        # A table one side lacks (a projection never started) has no rows: the other side's are
        # each missing or extra, and an empty table matches its absence.
        await _merge(live_layout if live_layout.present else rebuilt_layout, live_rows, rebuilt_rows, check)
    finally:
        handover.abandon()
        await asyncio.gather(rebuilt[1], return_exceptions=True)


async def _rows(feed: Feed) -> AsyncIterator[Row]:
    handover, producer = feed
    while (page := await handover.get(producer)) is not None:
        for row in page:
            yield row


async def _merge(
    layout: TableLayout, live_rows: AsyncIterator[Row], rebuilt_rows: AsyncIterator[Row], check: ProjectionCheck
) -> None:
    """Walk both copies in key order: a key on one side only is a missing or extra row."""
    order = layout.order
    live, rebuilt = await anext(live_rows, None), await anext(rebuilt_rows, None)
    while live is not None or rebuilt is not None:
        check.rows_compared += 1
        if rebuilt is None or (live is not None and sort_key(live, order) < sort_key(rebuilt, order)):
            assert live is not None
            check.add(Difference(layout.table, "extra", _key(live, order), live=live))
            live = await anext(live_rows, None)
        elif live is None or sort_key(rebuilt, order) < sort_key(live, order):
            check.add(Difference(layout.table, "missing", _key(rebuilt, order), rebuilt=rebuilt))
            rebuilt = await anext(rebuilt_rows, None)
        else:
            if live != rebuilt:
                check.add(Difference(layout.table, "changed", _key(live, order), live, rebuilt))
            live, rebuilt = await anext(live_rows, None), await anext(rebuilt_rows, None)


def _key(row: Row, columns: tuple[str, ...]) -> dict[str, Any]:
    return {column: row[column] for column in columns}


def _definition(layout: TableLayout) -> Row:
    return {"columns": list(layout.columns), "key": list(layout.key)}


async def _name_events(check: ProjectionCheck, replay: Replay) -> None:
    """Give each difference the first few events whose data mentions every value of its key (one pass)."""
    wanted = {
        index: {str(v) for v in difference.key.values() if v is not None}
        for index, difference in enumerate(check.differences)
        if difference.kind != "definition"
    }
    if not wanted:
        return
    found: dict[int, list[EventRef]] = {index: [] for index in wanted}
    async with contextlib.aclosing(replay.events(check.position)) as events:
        async for record in events:
            values = set(_scalars(record.data))
            for index, key in wanted.items():
                if len(found[index]) < MAX_EVENTS and key <= values:
                    found[index].append(_ref(record))
            if all(len(refs) == MAX_EVENTS for refs in found.values()):
                break
    check.differences = [
        replace(d, events=tuple(found[i])) if i in found else d for i, d in enumerate(check.differences)
    ]


def _scalars(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for item in value.values():
            yield from _scalars(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _scalars(item)
    elif value is not None:
        yield str(value)


def _ref(record: StoredEvent) -> EventRef:
    return EventRef(record.position, record.stream_id, record.version, record.type)
