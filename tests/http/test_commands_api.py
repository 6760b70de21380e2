"""The command API against its stable contract: every status, each with its problem+json body."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.http import Api, assert_no_leak, assert_problem, order, serve
from twofold import ANY, Aggregate, Command, Event, NewEvent, Service, UnitOfWork
from twofold.store import EventStore
from twofold.store.sqlite import SQLiteEventStore

RESULT_FIELDS = {"command_id", "stream_id", "version", "position", "events"}
EVENT_FIELDS = {
    "position",
    "stream_id",
    "version",
    "event_id",
    "type",
    "schema_version",
    "data",
    "metadata",
    "recorded_at",
}
ONE_MIB = 1024 * 1024
WAIT_SECONDS = 5.0


# -- a tiny service for what the shop cannot be made to do -----------------------------------------


class Ticked(Event, name="test.Ticked"):
    count: int


class Counter(Aggregate, category="counter"):
    count: int = 0

    def evolve(self, event: Ticked) -> Counter:
        return self.model_copy(update={"count": event.count})


class Tick(Command):
    counter_id: str


def always_conflicting(store: EventStore) -> Service:
    """A service whose handler appends to its own stream behind the unit of work's back, every time."""

    async def tick(command: Tick, uow: UnitOfWork) -> None:
        counter = await uow.load(Counter, command.counter_id)
        sneaked = NewEvent(Ticked.type_name, {"count": counter.count + 1})
        await store.append(counter.stream_id, [sneaked], ANY)
        uow.emit(counter, Ticked(count=counter.count + 1))

    return Service("conflicts", commands={Tick: tick})


def exploding() -> Service:
    """A service whose handler fails in a way nobody planned for, with secrets in the message."""

    async def tick(command: Tick, uow: UnitOfWork) -> None:
        raise RuntimeError("password=hunter2 in /etc/twofold/secrets.toml")

    return Service("exploding", commands={Tick: tick})


def gated(gate: asyncio.Event) -> Service:
    """A service whose handler waits until the test opens ``gate``."""

    async def tick(command: Tick, uow: UnitOfWork) -> None:
        counter = await uow.load(Counter, command.counter_id)
        await asyncio.wait_for(gate.wait(), WAIT_SECONDS)
        uow.emit(counter, Ticked(count=counter.count + 1))

    return Service("gated", commands={Tick: tick})


async def status_until(api: Api, url: str, wanted: str) -> dict[str, Any]:
    """Poll a command's status URL until it reports ``wanted`` (bounded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_SECONDS
    while True:
        response = await api.client.get(url)
        assert response.status_code == 200, response.text
        status: dict[str, Any] = response.json()
        if status["status"] == wanted or loop.time() > deadline:
            assert status["status"] == wanted, status
            return status
        await asyncio.sleep(0.01)


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


# -- 200 -----------------------------------------------------------------------------------------


async def test_a_command_answers_200_with_its_result_and_the_stored_events(api: Api) -> None:
    response = await api.command("AddProduct", {"sku": "A-1", "name": "Apple", "price": "1.50"})

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    result = response.json()
    assert set(result) == RESULT_FIELDS
    assert result["stream_id"] == "product-A-1"
    assert result["version"] == 1
    assert result["position"] == await api.head() == 1
    [event] = result["events"]
    assert set(event) == EVENT_FIELDS
    assert event["position"] == 1
    assert event["stream_id"] == "product-A-1"
    assert event["version"] == 1
    assert event["type"] == "shop.ProductAdded"
    assert event["schema_version"] == 1
    assert event["data"] == {"sku": "A-1", "name": "Apple", "price": "1.50"}
    assert event["metadata"]["command_id"] == result["command_id"]
    recorded_at = datetime.fromisoformat(event["recorded_at"])
    assert recorded_at.utcoffset() == timedelta(0)
    [stored] = await api.events()
    assert stored.event_id == event["event_id"]


async def test_place_order_answers_with_the_order_stream_and_includes_the_reservations(stocked: Api) -> None:
    result = await stocked.ok("PlaceOrder", order("o-1", "c-1", ("A-1", 2), ("B-2", 1)))

    assert result["stream_id"] == "order-o-1"
    assert result["version"] == 1
    events = result["events"]
    assert [(e["type"], e["stream_id"]) for e in events] == [
        ("shop.OrderPlaced", "order-o-1"),
        ("shop.StockReserved", "product-A-1"),
        ("shop.StockReserved", "product-B-2"),
    ]
    assert events[0]["data"]["total"] == "5.25"
    assert [e["data"]["quantity"] for e in events[1:]] == [2, 1]
    positions = [e["position"] for e in events]
    assert positions == sorted(positions) == list(range(positions[0], positions[0] + 3))
    assert result["position"] == positions[-1] == await stocked.head()
    assert {e["metadata"]["command_id"] for e in events} == {result["command_id"]}


# -- Idempotency-Key -----------------------------------------------------------------------------


async def test_the_same_idempotency_key_twice_gives_the_same_result_and_one_set_of_events(stocked: Api) -> None:
    body = order("o-1", "c-1", ("A-1", 1))
    head = await stocked.head()

    first = await stocked.ok("PlaceOrder", body, **{"Idempotency-Key": "order-o-1.attempt:1"})
    second = await stocked.ok("PlaceOrder", body, **{"Idempotency-Key": "order-o-1.attempt:1"})

    assert first == second
    assert first["command_id"] == "order-o-1.attempt:1"
    events = await stocked.events()
    assert [e.position for e in events][head:] == [e["position"] for e in first["events"]]
    assert len(events) == head + 2  # OrderPlaced and one StockReserved, once


async def test_a_reused_idempotency_key_answers_with_the_first_result_whatever_the_body(stocked: Api) -> None:
    first = await stocked.ok("ReceiveStock", {"sku": "A-1", "quantity": 1}, **{"Idempotency-Key": "k-1"})
    again = await stocked.ok("ReceiveStock", {"sku": "A-1", "quantity": 5}, **{"Idempotency-Key": "k-1"})

    assert again == first
    stock = await stocked.query("StockLevel", again["position"], sku="A-1")
    assert stock.json() == {"sku": "A-1", "available": 4}


@pytest.mark.parametrize(
    "key",
    [
        "has spaces",
        "a\r\nSet-Cookie: session=stolen",
        "line\nfeed",
        "k" * 200,
        "semi;colon",
        "../../etc/passwd",
        "",
    ],
    ids=["spaces", "crlf-injection", "lf", "200-chars", "semicolon", "path", "empty"],
)
async def test_an_invalid_idempotency_key_is_refused_with_400_and_nothing_written(stocked: Api, key: str) -> None:
    head = await stocked.head()

    response = await stocked.command("ReceiveStock", {"sku": "A-1", "quantity": 1}, **{"Idempotency-Key": key})

    body = assert_problem(response, 400, "bad-request")
    assert body["detail"] == "Idempotency-Key must be 1 to 128 letters, digits or . _ : ~ -"
    assert "set-cookie" not in response.headers
    assert await stocked.head() == head


# -- 202 Prefer: respond-async -------------------------------------------------------------------


async def test_prefer_respond_async_answers_202_with_a_status_url_that_gives_the_result(stocked: Api) -> None:
    response = await stocked.command(
        "PlaceOrder", order("o-1", "c-1", ("A-1", 1)), Prefer="respond-async", **{"Idempotency-Key": "async-1"}
    )

    assert response.status_code == 202
    accepted = response.json()
    assert accepted == {"command_id": "async-1", "status_url": "/commands/async-1"}
    assert response.headers["location"] == accepted["status_url"]
    assert response.headers["preference-applied"] == "respond-async"
    status = await status_until(stocked, accepted["status_url"], "succeeded")
    assert status["command_id"] == "async-1"
    result = status["result"]
    assert set(result) == RESULT_FIELDS
    assert result["command_id"] == "async-1"
    assert result["position"] == await stocked.head()
    assert [e["type"] for e in result["events"]] == ["shop.OrderPlaced", "shop.StockReserved"]
    assert all(set(e) == EVENT_FIELDS for e in result["events"])


async def test_the_status_url_also_answers_for_a_command_that_ran_synchronously(stocked: Api) -> None:
    result = await stocked.ok("ReceiveStock", {"sku": "A-1", "quantity": 1}, **{"Idempotency-Key": "sync-1"})

    response = await stocked.client.get("/commands/sync-1")

    assert response.json() == {"command_id": "sync-1", "status": "succeeded", "result": result}


async def test_an_async_command_is_pending_until_its_handler_finishes(tmp_path: Path) -> None:
    gate = asyncio.Event()
    async with serve(gated(gate), tmp_path, read_models=False) as api:
        try:
            response = await api.command("Tick", {"counter_id": "c-1"}, Prefer="respond-async")
            assert response.status_code == 202
            url = response.json()["status_url"]

            pending = await api.client.get(url)
            assert pending.json() == {"command_id": response.json()["command_id"], "status": "pending"}
            assert await api.head() == 0
        finally:
            gate.set()
        done = await status_until(api, url, "succeeded")
        assert done["result"]["stream_id"] == "counter-c-1"
        assert await api.head() == 1


async def test_a_rejected_async_command_reports_failed_with_the_rule_that_refused_it(stocked: Api) -> None:
    head = await stocked.head()

    response = await stocked.command("PlaceOrder", order("o-1", "c-1", ("A-1", 9)), Prefer="respond-async")

    assert response.status_code == 202
    status = await status_until(stocked, response.json()["status_url"], "failed")
    assert status == {
        "command_id": response.json()["command_id"],
        "status": "failed",
        "error": "DomainError",
        "detail": "Not enough stock for A-1: ordered 9, available 3",
    }
    assert await stocked.head() == head


async def test_an_invalid_async_command_is_refused_at_once_with_422(stocked: Api) -> None:
    response = await stocked.command("PlaceOrder", {"order_id": "o-1"}, Prefer="respond-async")

    body = assert_problem(response, 422, "validation")
    assert {e["field"] for e in body["errors"]} == {"customer_id", "lines"}


async def test_the_status_of_an_unknown_command_id_is_404(api: Api) -> None:
    response = await api.client.get("/commands/7b1e5d0c-0000-4000-8000-000000000000")

    body = assert_problem(response, 404, "not-found")
    assert body["detail"] == "No command with id 7b1e5d0c-0000-4000-8000-000000000000"


# -- 400, 415 ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [b"{", b"", b"{'sku': 'A-1'}", b'{"sku": "A-1",}', b"\xff\xfe{}", b'{"quantity": ' + b"9" * 5000 + b"}"],
    ids=["unclosed", "empty", "single-quotes", "trailing-comma", "not-utf8", "5000-digit-number"],
)
async def test_a_malformed_json_body_is_400(stocked: Api, body: bytes) -> None:
    head = await stocked.head()

    response = await stocked.client.post(
        "/commands/ReceiveStock", content=body, headers={"Content-Type": "application/json"}
    )

    problem = assert_problem(response, 400, "bad-request")
    assert problem["detail"].startswith("Body ")
    assert await stocked.head() == head


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml", None])
async def test_a_body_that_is_not_declared_json_is_415(stocked: Api, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}

    response = await stocked.client.post(
        "/commands/ReceiveStock", content=b'{"sku": "A-1", "quantity": 1}', headers=headers
    )

    body = assert_problem(response, 415, "unsupported-media-type")
    assert body["detail"] == (
        f"Send the command as JSON with Content-Type: application/json (got {content_type or 'none'!r})"
    )


async def test_a_json_body_with_a_charset_or_a_json_suffix_is_accepted(stocked: Api) -> None:
    for content_type in ["application/json; charset=utf-8", "application/vnd.shop+json"]:
        response = await stocked.client.post(
            "/commands/ReceiveStock", content=b'{"sku": "A-1", "quantity": 1}', headers={"Content-Type": content_type}
        )
        assert response.status_code == 200, response.text


# -- 404, 405 ------------------------------------------------------------------------------------


async def test_an_unknown_command_type_is_404_with_a_problem_naming_it(api: Api) -> None:
    response = await api.command("RefundOrder", {"order_id": "o-1"})

    body = assert_problem(response, 404, "not-found")
    assert body["detail"] == (
        "No command type 'RefundOrder'; this service accepts: AddProduct, ReceiveStock, PlaceOrder, CancelOrder"
    )


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
async def test_a_command_sent_with_the_wrong_method_is_405(api: Api, method: str) -> None:
    response = await api.client.request(method, "/commands/PlaceOrder", json=order("o-1", "c-1", ("A-1", 1)))

    body = assert_problem(response, 405)
    assert body["title"] == "Method not allowed"
    assert "POST" in response.headers["allow"]
    assert await api.head() == 0


# -- 409 -----------------------------------------------------------------------------------------


async def test_an_order_for_more_than_the_stock_is_409_with_the_rules_message(stocked: Api) -> None:
    head = await stocked.head()

    response = await stocked.command("PlaceOrder", order("o-1", "c-1", ("B-2", 1), ("A-1", 9)))

    body = assert_problem(response, 409, "rejected")
    assert body["title"] == "Command rejected"
    assert body["detail"] == "Not enough stock for A-1: ordered 9, available 3"
    assert await stocked.head() == head  # not even B-2's reservation or the order


async def test_a_command_whose_stream_keeps_moving_is_409_with_the_conflict_facts(tmp_path: Path) -> None:
    sneaky_store = SQLiteEventStore(tmp_path / "events.db")  # a second connection to the app's file
    try:
        async with serve(always_conflicting(sneaky_store), tmp_path, read_models=False, max_attempts=2) as api:
            response = await api.command("Tick", {"counter_id": "c-1"})

            body = assert_problem(response, 409, "concurrency")
            assert body["title"] == "Concurrency conflict"
            assert body["stream_id"] == "counter-c-1"
            assert (body["expected"], body["actual"]) == (1, 2)
            assert body["detail"] == "Wrong expected version for stream counter-c-1: expected 1, actual 2"
            assert await api.store.stream_version("counter-c-1") == 2  # only the two sneaked events
    finally:
        await sneaky_store.close()


# -- 413 -----------------------------------------------------------------------------------------


async def test_a_body_over_one_mib_with_content_length_is_413_and_nothing_is_written(stocked: Api) -> None:
    head = await stocked.head()
    body = json.dumps({"sku": "A-9", "name": "x" * ONE_MIB, "price": "1"}).encode()

    response = await stocked.client.post(
        "/commands/AddProduct", content=body, headers={"Content-Type": "application/json"}
    )

    assert "content-length" in response.request.headers
    problem = assert_problem(response, 413, "too-large")
    assert problem["detail"] == "Request body is larger than the limit of 1048576 bytes"
    assert await stocked.head() == head


async def test_a_chunked_body_over_one_mib_is_413_and_nothing_is_written(stocked: Api) -> None:
    head = await stocked.head()
    parts = [b'{"sku": "A-9", "name": "', *[b"x" * 65536] * 17, b'", "price": "1"}']

    response = await stocked.client.post(
        "/commands/AddProduct", content=chunks(*parts), headers={"Content-Type": "application/json"}
    )

    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    problem = assert_problem(response, 413, "too-large")
    assert problem["detail"] == "Request body is larger than the limit of 1048576 bytes"
    assert await stocked.head() == head


async def test_a_body_just_under_the_limit_is_read_and_validated(stocked: Api) -> None:
    body = b'{"sku": "A-1", "quantity": 1}'
    padded = body + b" " * (ONE_MIB - len(body))

    response = await stocked.client.post(
        "/commands/ReceiveStock", content=chunks(padded), headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 200, response.text


# -- 422 -----------------------------------------------------------------------------------------


async def test_validation_names_every_bad_field_at_once(stocked: Api) -> None:
    head = await stocked.head()
    body = {"order_id": "o-1", "lines": [{"sku": "A-1", "quantity": 0}, {"sku": "", "quantity": 1}]}

    response = await stocked.command("PlaceOrder", body)

    problem = assert_problem(response, 422, "validation")
    assert problem["title"] == "Validation failed"
    assert {e["field"]: e["message"] for e in problem["errors"]} == {
        "customer_id": "Field required",
        "lines[0].quantity": "Input should be greater than or equal to 1",
        "lines[1].sku": "String should have at least 1 character",
    }
    for field in ("customer_id", "lines[0].quantity", "lines[1].sku"):
        assert field in problem["detail"]
    assert await stocked.head() == head


async def test_unknown_fields_are_refused_and_named_wherever_they_are(stocked: Api) -> None:
    body = {**order("o-1", "c-1", ("A-1", 1)), "discount": 100}
    body["lines"][0]["colour"] = "red"

    response = await stocked.command("PlaceOrder", body)

    problem = assert_problem(response, 422, "validation")
    assert problem["errors"] == [
        {"field": "lines[0].colour", "message": "Extra inputs are not permitted"},
        {"field": "discount", "message": "Extra inputs are not permitted"},
    ]


async def test_an_order_naming_a_sku_twice_is_422_by_the_one_line_per_sku_rule(stocked: Api) -> None:
    response = await stocked.command("PlaceOrder", order("o-1", "c-1", ("A-1", 1), ("B-2", 1), ("A-1", 2)))

    problem = assert_problem(response, 422, "validation")
    [error] = problem["errors"]
    assert error["message"] == "Value error, each sku may appear in one line only; repeated: A-1"


async def test_a_json_value_that_is_not_an_object_is_422(api: Api) -> None:
    response = await api.command("AddProduct", ["sku", "A-1"])

    problem = assert_problem(response, 422, "validation")
    assert problem["errors"] == [
        {"field": "(body)", "message": "Input should be a valid dictionary or instance of AddProduct"}
    ]


# -- 500 -----------------------------------------------------------------------------------------


async def test_an_unexpected_handler_error_is_a_bare_500_without_trace_or_message(tmp_path: Path) -> None:
    async with serve(exploding(), tmp_path, read_models=False, raise_app_exceptions=False) as api:
        response = await api.command("Tick", {"counter_id": "c-1"})

        body = assert_problem(response, 500, "internal")
        assert body == {"type": "urn:twofold:problem:internal", "title": "Internal server error", "status": 500}
        for secret in ("hunter2", "secrets.toml", "RuntimeError"):
            assert secret not in response.text
        assert_no_leak(response)
        assert await api.head() == 0


async def test_an_async_command_that_fails_unexpectedly_reports_an_internal_error_and_logs_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with serve(exploding(), tmp_path, read_models=False) as api:
        response = await api.command("Tick", {"counter_id": "c-1"}, Prefer="respond-async")

        status = await status_until(api, response.json()["status_url"], "failed")
        assert status == {
            "command_id": response.json()["command_id"],
            "status": "failed",
            "error": "InternalError",
            "detail": "The command failed unexpectedly",
        }
        assert await api.head() == 0
    [logged] = [r for r in caplog.records if r.name == "twofold.http"]
    assert logged.getMessage().endswith("(Tick) failed unexpectedly")
    assert logged.exc_info is not None
    assert isinstance(logged.exc_info[1], RuntimeError)


async def test_an_async_retry_under_the_same_key_reports_its_own_outcome_not_the_earlier_failure(
    stocked: Api,
) -> None:
    body, key = order("o-1", "c-1", ("A-1", 5)), {"Idempotency-Key": "order-o-1"}
    refused = await stocked.command("PlaceOrder", body, Prefer="respond-async", **key)
    await status_until(stocked, refused.json()["status_url"], "failed")
    await stocked.ok("ReceiveStock", {"sku": "A-1", "quantity": 2})

    retried = await stocked.command("PlaceOrder", body, Prefer="respond-async", **key)

    status = await status_until(stocked, retried.json()["status_url"], "succeeded")
    assert status["result"]["command_id"] == "order-o-1"
    assert status["result"]["stream_id"] == "order-o-1"
