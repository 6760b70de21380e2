"""``GET /commands/{id}`` answers the principal who sent the command, and operators; anyone else gets the 404 of an
unknown id, so a command id says nothing of whether it exists or what it did."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.http import Api, assert_problem, order, serve
from tests.http.test_auth import SETTINGS, bearer, token
from tests.monolith import shop
from tests.monolith.messages import CancelOrder
from twofold.broker._jetstream import _decode, _encode
from twofold.command_queue import CommandOutcome
from twofold.embedded import embedded_runtimes
from twofold.http.auth import Authenticator
from twofold.http.commands import AsyncCommands
from twofold.http.gateway import gateway_in_process
from twofold.messages import Envelope

ADA = bearer(token(sub="ada", scope="commands:PlaceOrder commands:ReceiveStock"))
BOB = bearer(token(sub="bob", scope="commands:PlaceOrder commands:ReceiveStock"))
OPERATORS = [bearer(token(sub="root", scope="commands:*")), bearer(token(sub="ops", scope="operations:read"))]


@pytest.fixture
async def guarded(tmp_path: Path) -> AsyncIterator[Api]:
    async with serve(shop, tmp_path, auth=Authenticator(SETTINGS)) as api:
        writer = bearer(token(scope="commands:*"))
        assert (await api.command("AddProduct", {"sku": "A-1", "name": "Apple", "price": "1.50"}, **writer)).is_success
        assert (await api.command("ReceiveStock", {"sku": "A-1", "quantity": 5}, **writer)).is_success
        yield api


async def status(client: httpx.AsyncClient, command_id: str, headers: dict[str, str]) -> httpx.Response:
    return await client.get(f"/commands/{command_id}", headers=headers)


async def settled(client: httpx.AsyncClient, command_id: str, headers: dict[str, str]) -> dict[str, Any]:
    for _ in range(500):  # a background command: a bounded wait for it to finish
        answer = await status(client, command_id, headers)
        assert answer.status_code == 200, answer.text
        if answer.json()["status"] != "pending":
            return dict(answer.json())
        await asyncio.sleep(0.01)
    raise AssertionError(f"command {command_id} still pending")


async def assert_unknown(client: httpx.AsyncClient, command_id: str, headers: dict[str, str]) -> None:
    """The very answer an id never sent gets, but for the id it names."""
    hidden = await status(client, command_id, headers)
    never = await status(client, "never-sent", headers)
    assert assert_problem(hidden, 404, "not-found") == {
        **assert_problem(never, 404, "not-found"),
        "detail": f"No command with id {command_id}",
    }


async def test_a_synchronous_command_s_status_answers_its_sender_and_operators_only(guarded: Api) -> None:
    sent = await guarded.command("PlaceOrder", order("o-1", "c-1", ("A-1", 1)), **ADA, **{"Idempotency-Key": "ada-1"})
    assert sent.status_code == 200, sent.text

    mine = await status(guarded.client, "ada-1", ADA)
    assert (mine.status_code, mine.json()["status"]) == (200, "succeeded")
    await assert_unknown(guarded.client, "ada-1", BOB)
    for operator in OPERATORS:
        assert (await status(guarded.client, "ada-1", operator)).json()["status"] == "succeeded"


@pytest.mark.parametrize(
    ("body", "outcome"),
    [({"sku": "A-1", "quantity": 2}, "succeeded"), ({"sku": "Z-404", "quantity": 2}, "failed")],
    ids=["succeeded", "failed"],
)
async def test_an_asynchronous_command_s_status_answers_its_sender_and_operators_only(
    guarded: Api, body: dict[str, Any], outcome: str
) -> None:
    queued = await guarded.command("ReceiveStock", body, Prefer="respond-async", **ADA)
    assert queued.status_code == 202, queued.text
    command_id = queued.json()["command_id"]

    assert (await settled(guarded.client, command_id, ADA))["status"] == outcome
    await assert_unknown(guarded.client, command_id, BOB)
    for operator in OPERATORS:
        assert (await status(guarded.client, command_id, operator)).json()["status"] == outcome


async def test_a_pending_command_is_shown_to_its_sender_only() -> None:
    started, release = asyncio.Event(), asyncio.Event()

    class Slow:
        async def execute(self, command: object, **envelope: object) -> None:
            started.set()
            await release.wait()

    queue = AsyncCommands(Slow())  # type: ignore[arg-type]
    await queue.submit(Envelope(CancelOrder(order_id="o-1"), message_id="c-1", principal="ada"))
    await started.wait()
    assert await queue.outcome("c-1") == CommandOutcome("pending", principal="ada")
    release.set()
    await queue.drain(1.0)


def test_the_jetstream_outcome_record_keeps_who_sent_the_command() -> None:
    for outcome in (
        CommandOutcome("pending", principal="ada"),
        CommandOutcome("failed", "DomainError", "no", principal="ada"),
        CommandOutcome("failed", "DomainError", "no"),
    ):
        assert _decode(_encode(outcome)) == outcome


async def test_through_the_gateway_a_status_answers_its_sender_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from examples.shop import shop as system

    monkeypatch.chdir(tmp_path)
    app = gateway_in_process(system, embedded_runtimes(system, environ={}), auth=Authenticator(SETTINGS))
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://g") as client:
        queued = await client.post(
            "/commands/ReceiveStock", json={"sku": "A-1", "quantity": 2}, headers={**ADA, "Prefer": "respond-async"}
        )
        assert queued.status_code == 202, queued.text
        command_id = queued.json()["command_id"]
        assert (await settled(client, command_id, ADA))["status"] == "succeeded"
        hidden = await status(client, command_id, BOB)
        assert assert_problem(hidden, 404, "not-found")["detail"] == f"No command with id {command_id}"
        assert (await status(client, command_id, OPERATORS[1])).status_code == 200
