"""The per-principal command rate limit: 429 with Retry-After over it, a bucket per principal, refilled with time,
never on queries; bounded memory; and the one environment variable that sets it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from examples.shop import shop as shop_system
from tests.http import Api, assert_problem, serve
from tests.http.test_auth import SETTINGS, bearer, token
from tests.monolith import shop
from twofold.config import RateLimit
from twofold.embedded import embedded_runtimes
from twofold.errors import ConfigurationError
from twofold.http.auth import Authenticator
from twofold.http.gateway import gateway_in_process
from twofold.http.ratelimit import RateLimiter

ADA = bearer(token(sub="ada", scope="commands:* queries:* operations:read"))
BOB = bearer(token(sub="bob", scope="commands:*"))


class Clock:
    """A monotonic clock that moves only when a test moves it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def limited(tmp_path: Path, clock: Clock) -> AsyncIterator[Api]:
    """The shop behind tokens, three commands a second for each principal."""
    limiter = RateLimiter(RateLimit(3, 1.0), clock=clock)
    async with serve(shop, tmp_path, auth=Authenticator(SETTINGS), rate_limit=limiter) as api:
        yield api


def product(sku: str) -> dict[str, Any]:
    return {"sku": sku, "name": "Mug", "price": "1.00"}


async def test_a_burst_over_the_limit_is_429_with_retry_after_and_writes_only_what_was_allowed(
    limited: Api,
) -> None:
    answers = [await limited.command("AddProduct", product(f"A-{i}"), **ADA) for i in range(5)]

    assert [a.status_code for a in answers] == [200, 200, 200, 429, 429]
    for refused in answers[3:]:
        body = assert_problem(refused, 429, "rate-limited")
        assert refused.headers["retry-after"] == "1"
        assert (body["limit"], body["retry_after"]) == ("3/s", 1)
        assert "limit of 3/s" in body["detail"]
    allowed = {a.json()["command_id"] for a in answers[:3]}
    events = await limited.events()
    assert {e.metadata["command_id"] for e in events} == allowed
    assert sorted(e.data["sku"] for e in events) == ["A-0", "A-1", "A-2"]


async def test_asynchronous_commands_share_the_limit_and_nothing_is_queued_over_it(limited: Api) -> None:
    async_ = {"Prefer": "respond-async", **ADA}
    answers = [
        await limited.command("AddProduct", product(f"A-{i}"), **async_, **{"Idempotency-Key": f"k-{i}"})
        for i in range(4)
    ]

    assert [a.status_code for a in answers] == [202, 202, 202, 429]
    assert answers[3].headers["retry-after"] == "1"
    assert (await limited.client.get("/commands/k-0", headers=ADA)).status_code == 200
    assert (await limited.client.get("/commands/k-3", headers=ADA)).status_code == 404  # never queued
    await limited.runtime.catch_up()
    assert all(e.metadata["command_id"] != "k-3" for e in await limited.events())


async def test_two_principals_have_buckets_of_their_own(limited: Api) -> None:
    for i in range(3):
        assert (await limited.command("AddProduct", product(f"A-{i}"), **ADA)).status_code == 200
    assert (await limited.command("AddProduct", product("A-3"), **ADA)).status_code == 429

    assert (await limited.command("AddProduct", product("B-1"), **BOB)).status_code == 200


async def test_the_bucket_refills_as_the_clock_advances(limited: Api, clock: Clock) -> None:
    for i in range(3):
        await limited.command("AddProduct", product(f"A-{i}"), **ADA)
    assert (await limited.command("AddProduct", product("A-3"), **ADA)).status_code == 429

    clock.advance(1 / 3)  # one token back, at three a second
    assert (await limited.command("AddProduct", product("A-4"), **ADA)).status_code == 200
    assert (await limited.command("AddProduct", product("A-5"), **ADA)).status_code == 429

    clock.advance(1.0)  # full again, and never fuller
    assert [(await limited.command("AddProduct", product(f"C-{i}"), **ADA)).status_code for i in range(4)] == [
        200,
        200,
        200,
        429,
    ]


async def test_retry_after_says_when_a_token_is_back_in_whole_seconds(tmp_path: Path, clock: Clock) -> None:
    limiter = RateLimiter(RateLimit.parse("2/min"), clock=clock)
    async with serve(shop, tmp_path, rate_limit=limiter) as api:
        for i in range(2):
            await api.ok("AddProduct", product(f"A-{i}"))
        clock.advance(10.5)
        refused = await api.command("AddProduct", product("A-2"))
        assert refused.headers["retry-after"] == "20"  # a token every 30 s: 19.5 s to go, rounded up
        assert assert_problem(refused, 429, "rate-limited")["limit"] == "2/min"


async def test_queries_status_health_and_metrics_are_never_limited(limited: Api) -> None:
    sent = [await limited.command("AddProduct", product(f"A-{i}"), **ADA) for i in range(4)]
    assert sent[-1].status_code == 429

    caught_up = {**ADA, "X-Min-Position": str(sent[2].json()["position"])}
    for _ in range(10):
        level = await limited.client.get("/queries/StockLevel", params={"sku": "A-1"}, headers=caught_up)
        assert level.status_code == 200, level.text
        status = await limited.client.get(f"/commands/{sent[0].json()['command_id']}", headers=ADA)
        assert status.status_code == 200
        assert (await limited.client.get("/health")).status_code == 200
        assert (await limited.client.get("/metrics", headers=ADA)).status_code == 200


async def test_refusals_are_counted_in_metrics(limited: Api) -> None:
    for i in range(5):
        await limited.command("AddProduct", product(f"A-{i}"), **ADA)

    metrics = (await limited.client.get("/metrics", headers=ADA)).text
    family = next(f for f in text_string_to_metric_families(metrics) if f.name == "twofold_commands_rate_limited")
    assert [(s.name, s.labels, s.value) for s in family.samples if s.name.endswith("_total")] == [
        ("twofold_commands_rate_limited_total", {"service": "shop"}, 2.0)
    ]


async def test_without_authentication_callers_are_told_apart_by_address(tmp_path: Path, clock: Clock) -> None:
    async with serve(shop, tmp_path, rate_limit=RateLimiter(RateLimit(1, 1.0), clock=clock)) as api:
        assert (await api.command("AddProduct", product("A-1"))).status_code == 200
        assert (await api.command("AddProduct", product("A-2"))).status_code == 429
        elsewhere = httpx.ASGITransport(api.app, client=("192.0.2.7", 4000))
        async with httpx.AsyncClient(transport=elsewhere, base_url="http://shop.test") as other:
            assert (await other.post("/commands/AddProduct", json=product("B-1"))).status_code == 200


async def test_the_gateway_applies_the_limit_once_across_routes_and_counts_refusals(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: Clock
) -> None:
    monkeypatch.chdir(tmp_path)
    limiter = RateLimiter(RateLimit(2, 1.0), clock=clock)
    app = gateway_in_process(
        shop_system, embedded_runtimes(shop_system, environ={}), auth=Authenticator(SETTINGS), rate_limit=limiter
    )
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://g") as client:
        first = await client.post("/commands/AddProduct", json=product("A-1"), headers=ADA)
        second = await client.post("/services/catalog/commands/AddProduct", json=product("A-2"), headers=ADA)
        assert (first.status_code, second.status_code) == (200, 200)  # once each: not again at the service
        refused = await client.post("/commands/ReceiveStock", json={"sku": "A-1", "quantity": 1}, headers=ADA)
        assert_problem(refused, 429, "rate-limited")
        assert refused.headers["retry-after"] == "1"
        assert (await client.get("/queries/SearchProducts", params={"text": "mug"}, headers=ADA)).status_code == 200
        assert (await client.post("/commands/AddProduct", json=product("B-1"), headers=BOB)).status_code == 200

        metrics = (await client.get("/metrics", headers=ADA)).text
    family = next(f for f in text_string_to_metric_families(metrics) if f.name == "twofold_commands_rate_limited")
    counted = {(s.labels["service"], s.labels["part"]): s.value for s in family.samples if s.name.endswith("_total")}
    assert counted == {("inventory", "gateway"): 1.0}


def test_idle_buckets_are_forgotten_and_the_table_is_capped(clock: Clock) -> None:
    limiter = RateLimiter(RateLimit(5, 1.0), clock=clock, max_callers=100)
    for i in range(100):
        assert limiter.take(f"sub:{i}") == 0.0
    assert len(limiter) == 100
    for i in range(1000):  # a flood of new callers never holds more than the cap
        limiter.take(f"sub:flood-{i}")
    assert len(limiter) == 100

    clock.advance(1.0)  # every bucket full again: the same as none at all
    assert limiter.take("sub:ada") == 0.0
    assert len(limiter) == 1


def test_a_caller_waits_for_the_fraction_of_a_token_it_lacks(clock: Clock) -> None:
    limiter = RateLimiter(RateLimit(2, 1.0), clock=clock)
    assert [limiter.take("sub:ada") for _ in range(2)] == [0.0, 0.0]
    assert limiter.take("sub:ada") == pytest.approx(0.5)
    clock.advance(0.25)
    assert limiter.take("sub:ada") == pytest.approx(0.25)


# -- the environment variable ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "limit"),
    [("20/s", RateLimit(20, 1.0)), ("600/min", RateLimit(600, 60.0)), ("10000/h", RateLimit(10000, 3600.0))],
)
def test_the_rate_limit_is_read_from_the_environment(text: str, limit: RateLimit) -> None:
    assert RateLimit.from_env({"TWOFOLD_RATE_LIMIT_COMMANDS": text}) == limit
    assert str(limit) == text


def test_no_variable_is_no_limit() -> None:
    assert RateLimit.from_env({}) is None
    assert RateLimit.from_env({"TWOFOLD_RATE_LIMIT_COMMANDS": ""}) is None


@pytest.mark.parametrize("text", ["20", "20/sec", "20/S", "0/s", "-1/s", "1.5/s", "x/s", "20/s/s", "٣/s", "20 / s"])
def test_a_bad_rate_limit_is_refused_naming_the_variable_and_the_accepted_forms(text: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        RateLimit.from_env({"TWOFOLD_RATE_LIMIT_COMMANDS": text})
    message = str(refused.value)
    assert message.startswith("TWOFOLD_RATE_LIMIT_COMMANDS must be")
    assert "20/s, 600/min or 10000/h" in message
    assert repr(text) in message
