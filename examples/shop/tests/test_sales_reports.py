"""The sales reports: what the warehouse answers equals a plain Python sum over the stored events.

The reference reads the event log itself (``store.read_all``): a sale is each line of an order
priced and then confirmed, dated the day it was confirmed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from examples.shop import shop as system
from examples.shop.catalog import OrderPriced
from examples.shop.common import PricedLine
from examples.shop.orders import (
    OrderCancelled,
    OrderConfirmed,
    OrderRejected,
    SalesFacts,
    SalesReport,
    TopProducts,
    sales,
)
from twofold import Database, Event, Service, StoredEvent
from twofold.embedded import embedded_runtimes, settle
from twofold.http.gateway import gateway_in_process
from twofold.readmodels.duckdb import DuckDBReadStore
from twofold.readmodels.sqlite import SQLiteReadStore
from twofold.runtime import Runtime
from twofold.store import EventStore
from twofold.store.memory import MemoryEventStore
from twofold.testing._checks import new_event

START = datetime(2026, 1, 1, 12, tzinfo=UTC)  # a Thursday
SKUS = ("A-1", "B-2", "C-3", "D-4")
Key = date | str


# -- the reference: a straight sum over the events ---------------------------------------------------


@dataclass
class Sale:
    order_id: str
    sku: str
    day: date
    quantity: int
    revenue: Decimal


async def sales_in(store: EventStore) -> list[Sale]:
    priced: dict[str, list[PricedLine]] = {}
    found: list[Sale] = []
    async for record in store.read_all(1, 100_000):
        data = record.data
        if record.type == OrderPriced.type_name:
            priced[data["order_id"]] = [PricedLine.model_validate(line) for line in data["lines"]]
        elif record.type == OrderConfirmed.type_name:
            day = record.recorded_at.astimezone(UTC).date()
            for line in priced.pop(data["order_id"], []):
                found.append(Sale(data["order_id"], line.sku, day, line.quantity, line.price * line.quantity))
    return found


def period_start(day: date, group_by: str) -> date:
    if group_by == "week":
        return day - timedelta(days=day.weekday())
    if group_by == "month":
        return day.replace(day=1)
    return day


def expected_report(found: list[Sale], first: date, last: date, group_by: str) -> list[dict[str, Any]]:
    groups: dict[Key, list[Sale]] = defaultdict(list)
    for sale in found:
        if first <= sale.day <= last:
            groups[sale.sku if group_by == "sku" else period_start(sale.day, group_by)].append(sale)
    return [
        {
            "key": key,
            "revenue": sum((s.revenue for s in group), Decimal(0)),
            "units": sum(s.quantity for s in group),
            "orders": len({s.order_id for s in group}),
        }
        for key, group in sorted(groups.items(), key=lambda item: str(item[0]))
    ]


def expected_top(found: list[Sale], first: date, last: date, by: str, limit: int) -> list[dict[str, Any]]:
    rows = expected_report(found, first, last, "sku")
    other = "units" if by == "revenue" else "revenue"
    rows.sort(key=lambda row: (-row[by], -row[other], row["key"]))
    return [{"rank": rank, "sku": row.pop("key"), **row} for rank, row in enumerate(rows[:limit], start=1)]


def answered(rows: list[Any], key: str) -> list[dict[str, Any]]:
    return [{"key": getattr(r, key), "revenue": r.revenue, "units": r.units, "orders": r.orders} for r in rows]


# -- the projection over a generated history -------------------------------------------------------

line = st.tuples(
    st.sampled_from(SKUS),
    st.integers(1, 5),
    st.decimals(min_value=Decimal("0.01"), max_value=Decimal("250"), places=2, allow_nan=False, allow_infinity=False),
)
order = st.tuples(
    st.lists(line, min_size=1, max_size=3, unique_by=lambda item: item[0]),
    st.sampled_from(["confirmed", "confirmed", "rejected", "cancelled", "open"]),
    st.integers(0, 75),  # days after START it settles
)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


async def record(store: MemoryEventStore, clock: Clock, orders: list[Any]) -> None:
    """Append each order's pricing, then its outcome on its own day, days in order as they happened."""
    outcomes: list[tuple[int, str, Event]] = []
    for n, (lines, outcome, days) in enumerate(orders):
        order_id = f"o-{n}"
        priced = [PricedLine(sku=s, quantity=q, price=p) for s, q, p in lines]
        total = sum((p.price * p.quantity for p in priced), Decimal(0))
        await store.append(
            f"pricing-{order_id}", [new_event(OrderPriced(order_id=order_id, lines=priced, total=total))]
        )
        settled: dict[str, Event] = {
            "confirmed": OrderConfirmed(order_id=order_id, total=total),
            "rejected": OrderRejected(order_id=order_id, reason="out of stock"),
            "cancelled": OrderCancelled(order_id=order_id, reason="not paid in time"),
        }
        if outcome in settled:
            outcomes.append((days, order_id, settled[outcome]))
    for days, order_id, event in sorted(outcomes, key=lambda item: item[0]):
        clock.now = START + timedelta(days=days)
        await store.append(f"order-{order_id}", [new_event(event)])


def reports_service(projection: SalesFacts = sales) -> Service:
    return Service(
        "reports",
        projections=[projection],
        queries={SalesReport: projection.report, TopProducts: projection.top},
    )


def runtime_on(folder: Path, store: EventStore, projection: SalesFacts = sales, batch_size: int = 500) -> Runtime:
    return Runtime(
        reports_service(projection),
        store=store,
        read_store=SQLiteReadStore(folder / "read.db"),
        targets={"warehouse": DuckDBReadStore(folder / "warehouse.duckdb")},
        batch_size=batch_size,
    )


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    orders=st.lists(order, min_size=1, max_size=25),
    group_by=st.sampled_from(["day", "week", "month", "sku"]),
    window=st.tuples(st.integers(-3, 80), st.integers(0, 80)),
    top=st.tuples(st.sampled_from(["day", "week", "month", "year", "all"]), st.sampled_from(["revenue", "units"])),
)
async def test_the_reports_equal_a_sum_over_the_events(
    tmp_path_factory: pytest.TempPathFactory,
    orders: list[Any],
    group_by: str,
    window: tuple[int, int],
    top: tuple[str, str],
) -> None:
    clock, folder = Clock(), tmp_path_factory.mktemp("warehouse")
    store = MemoryEventStore(clock=clock)
    await record(store, clock, orders)
    first = (START + timedelta(days=window[0])).date()
    last = first + timedelta(days=window[1])
    period, by = top
    as_of = (START + timedelta(days=window[0] % 76)).date()

    async with runtime_on(folder, store) as runtime:
        await runtime.catch_up()
        report = await runtime.query(SalesReport(from_=first, to=last, group_by=group_by))  # type: ignore[arg-type]
        best = await runtime.query(TopProducts(period=period, as_of=as_of, by=by, limit=3))  # type: ignore[arg-type]

    found = await sales_in(store)
    assert answered(report.rows, "sku" if group_by == "sku" else "day") == expected_report(found, first, last, group_by)
    if period == "all":
        bounds = (date.min, date.max)
    else:
        start = (
            as_of.replace(month=1, day=1)
            if period == "year"
            else period_start(as_of, "day" if period == "day" else period)
        )
        end = {
            "day": start,
            "week": start + timedelta(days=6),
            "month": (start.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1),
            "year": start.replace(month=12, day=31),
        }[period]
        bounds = (start, end)
        assert (best.first_day, best.last_day) == bounds
    assert [p.model_dump() for p in best.products] == expected_top(found, *bounds, by, 3)


# -- a crash inside a batch ----------------------------------------------------------------------------


class Crash(Exception):
    """Stands for the process dying halfway through a batch: nothing after it runs."""


class CrashingOnce(SalesFacts, name="orders.sales"):
    """The sales projection, dying once as it applies the ``at``-th confirmation it meets."""

    def __init__(self, at: int) -> None:
        self.at, self.seen, self.crashed = at, 0, False

    def apply(
        self, event: OrderPriced | OrderConfirmed | OrderRejected | OrderCancelled, db: Database, record: StoredEvent
    ) -> None:
        super().apply(event, db, record)  # the rows go in first: the crash must take them back out
        if isinstance(event, OrderConfirmed):
            self.seen += 1
            if self.seen == self.at and not self.crashed:
                self.crashed = True
                raise Crash(f"died applying #{record.position}")


async def test_a_batch_that_dies_halfway_is_applied_again_whole_and_counted_once(tmp_path: Path) -> None:
    clock = Clock()
    store = MemoryEventStore(clock=clock)
    orders = [([("A-1", 2, Decimal("9.50")), ("B-2", 1, Decimal("4.25"))], "confirmed", n % 4) for n in range(30)]
    await record(store, clock, orders)
    crashing = CrashingOnce(at=17)
    everything = SalesReport(from_=START.date(), to=START.date() + timedelta(days=10), group_by="sku")  # type: ignore[call-arg]

    first = runtime_on(tmp_path, store, crashing, batch_size=10)
    await first.targets["warehouse"].transact(crashing.name, crashing.setup)
    with pytest.raises(Crash):
        await first.catch_up()  # the runner's own task is not started: the crash reaches us, as it would kill a process
    committed = await first.targets["warehouse"].checkpoint("orders.sales")
    await first.stop()

    async with runtime_on(tmp_path, store, batch_size=10) as second:
        await second.catch_up()
        report = await second.query(everything)

    assert crashing.crashed
    assert 0 < committed < await store.head_position()
    found = await sales_in(store)
    assert answered(report.rows, "sku") == expected_report(found, everything.from_, everything.to, "sku")
    assert [row.orders for row in report.rows] == [30, 30]


# -- through the HTTP API ------------------------------------------------------------------------------


@pytest.fixture
async def client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[httpx.AsyncClient, Callable[[], Any]]]:
    monkeypatch.chdir(tmp_path)  # data/<service>.db, data/orders-warehouse.duckdb under the working directory
    runtimes = embedded_runtimes(system, environ={})
    app = gateway_in_process(system, runtimes)
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://shop") as c:
        yield c, lambda: settle(runtimes)


async def test_the_reports_over_http_match_the_orders_placed(
    client: tuple[httpx.AsyncClient, Callable[[], Any]], tmp_path: Path
) -> None:
    http, settled = client
    for sku, name, price in (("A-1", "Blue mug", "9.50"), ("B-2", "Green tea", "4.25")):
        await ok(http, "/commands/AddProduct", {"sku": sku, "name": name, "price": price})
        await ok(http, "/commands/ReceiveStock", {"sku": sku, "quantity": 100})
    baskets = [[("A-1", 2)], [("A-1", 1), ("B-2", 3)], [("B-2", 200)]]  # the last is short of stock: rejected
    for n, basket in enumerate(baskets):
        lines = [{"sku": sku, "quantity": quantity} for sku, quantity in basket]
        await ok(http, "/commands/PlaceOrder", {"order_id": f"o-{n}", "customer_id": "c-1", "lines": lines})
    await settled()
    today = datetime.now(UTC).date()

    by_sku = await http.get("/queries/SalesReport", params={"from": str(today), "to": str(today), "group_by": "sku"})
    best = await http.get("/queries/TopProducts", params={"period": "all", "by": "units"})

    assert by_sku.status_code == 200, by_sku.text
    assert best.status_code == 200, best.text
    rows = [{**row, "revenue": Decimal(row["revenue"])} for row in by_sku.json()["rows"]]
    assert rows == [
        {"day": None, "sku": "A-1", "revenue": Decimal("28.50"), "units": 3, "orders": 2},
        {"day": None, "sku": "B-2", "revenue": Decimal("12.75"), "units": 3, "orders": 1},
    ]
    assert [(p["rank"], p["sku"], p["units"]) for p in best.json()["products"]] == [(1, "A-1", 3), (2, "B-2", 3)]


BAD_QUERIES = [
    ("SalesReport", {"from": "2026-02-01", "to": "2026-01-01"}, "to", "on or after from"),
    ("SalesReport", {"from": "yesterday", "to": "2026-01-01"}, "from", "date"),
    ("SalesReport", {"from": "2026-01-01", "to": "2026-01-02", "group_by": "hour"}, "group_by", "day"),
    ("TopProducts", {"period": "fortnight"}, "period", "week"),
    ("TopProducts", {"limit": "0"}, "limit", "1"),
]


async def test_a_bad_report_query_is_refused_with_422_naming_the_field(
    client: tuple[httpx.AsyncClient, Callable[[], Any]],
) -> None:
    http, _ = client

    for query, params, field, rule in BAD_QUERIES:
        response = await http.get(f"/queries/{query}", params=params)

        assert response.status_code == 422, response.text
        errors = response.json()["errors"]
        assert [e["field"] for e in errors] == [field], errors
        assert rule in errors[0]["message"], errors


async def ok(http: httpx.AsyncClient, path: str, body: dict[str, Any]) -> None:
    response = await http.post(path, json=body)
    assert response.status_code < 300, response.text
