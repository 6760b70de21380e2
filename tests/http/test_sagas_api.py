"""Sagas over HTTP: instances listed and shown with their state and deadlines; health covers them."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path

from tests.http import PROBLEM, serve
from tests.integration.test_sagas import PAYMENT_DEADLINE, Restocked, shop
from twofold import Service
from twofold.saga_runner import TIME_FORMAT
from twofold.sagas import Actions, Saga


async def test_instances_are_listed_by_status_and_shown_with_their_deadlines(tmp_path: Path) -> None:
    async with serve(shop, tmp_path) as api:
        await api.ok("Restock", {"sku": "A", "quantity": 1})
        placed = await api.ok("PlaceOrder", {"order_id": "o-1", "sku": "A", "quantity": 1})
        await api.ok("PlaceOrder", {"order_id": "o-2", "sku": "A", "quantity": 5})  # more than there is, ever
        await api.runtime.catch_up()

        listed = (await api.client.get("/sagas/checkout")).json()
        assert [(i["instance"], i["status"]) for i in listed["instances"]] == [("o-1", "active"), ("o-2", "completed")]
        active = (await api.client.get("/sagas/checkout", params={"status": "active"})).json()["instances"]
        assert [i["instance"] for i in active] == ["o-1"]
        page = (await api.client.get("/sagas/checkout", params={"after": "o-1", "limit": 1})).json()["instances"]
        assert [i["instance"] for i in page] == ["o-2"]

        shown = (await api.client.get("/sagas/checkout/o-1")).json()
        due = placed_at(placed) + PAYMENT_DEADLINE
        assert shown["state"] == {"stage": "awaiting_payment", "paid": False}
        assert shown["deadlines"] == {"payment": due.strftime(TIME_FORMAT)}


async def test_unknown_sagas_and_instances_are_404_problems(tmp_path: Path) -> None:
    async with serve(shop, tmp_path) as api:
        for path in ("/sagas/nope", "/sagas/checkout/o-404"):
            response = await api.client.get(path)
            assert response.status_code == 404
            assert response.headers["content-type"] == PROBLEM
        bad = await api.client.get("/sagas/checkout", params={"status": "lost", "limit": 0})
        assert bad.status_code == 422


class Broken(Saga, name="broken", key="sku"):
    def react(self, event: Restocked, do: Actions) -> Broken:
        raise ValueError(f"cannot handle {event.sku}")


async def test_a_failing_saga_turns_ready_red(tmp_path: Path) -> None:
    broken = Service("shop", commands=shop.commands, sagas=[Broken])
    async with serve(broken, tmp_path) as api:
        assert (await api.client.get("/ready")).status_code == 200
        await api.ok("Restock", {"sku": "A", "quantity": 1})
        runner = api.runtime.sagas["broken"]
        for _ in range(200):
            if runner.last_error:
                break
            await asyncio.sleep(0.01)
        response = await api.client.get("/ready")
        assert response.status_code == 503
        assert response.json()["failing"] == {"saga.broken": "ValueError: cannot handle A"}


def placed_at(result: dict[str, object]) -> datetime:
    events = result["events"]
    assert isinstance(events, list)
    return datetime.fromisoformat(events[0]["recorded_at"])
