"""Bearer tokens on the HTTP APIs: who gets in (401), who may do what (403), and who is recorded."""

from __future__ import annotations

import asyncio
import base64
import http.server
import json
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.http import Api, assert_problem, order, serve
from tests.integration.test_sagas import shop as saga_shop
from tests.monolith import shop
from tests.monolith.messages import CancelOrder
from twofold import Service
from twofold.config import AuthSettings
from twofold.errors import ConfigurationError
from twofold.http.auth import Authenticator, scopes_for
from twofold.http.problems import Unauthorized

SECRET = "a-development-secret-of-at-least-32-bytes"
AUDIENCE, ISSUER = "shop-api", "https://id.example"
SETTINGS = AuthSettings(hs256_secret=SECRET, audience=AUDIENCE, issuer=ISSUER)
EVERY_COMMAND = {
    "AddProduct": {"sku": "Z-9", "name": "Zither", "price": "9.00"},
    "ReceiveStock": {"sku": "A-1", "quantity": 1},
    "PlaceOrder": order("o-9", "c-9", ("A-1", 1)),
    "CancelOrder": {"order_id": "o-1"},
}


LIFETIME = 6 * 3600  # seconds: tokens made as tests are collected must outlive the slowest whole run


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"sub": "ada", "aud": AUDIENCE, "iss": ISSUER, "iat": now, "exp": now + LIFETIME, "scope": "commands:*"}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def token(key: Any = SECRET, algorithm: str = "HS256", headers: dict[str, Any] | None = None, **overrides: Any) -> str:
    return jwt.encode(claims(**overrides), key, algorithm=algorithm, headers=headers)


def bearer(signed: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {signed}"}


def unsigned(**overrides: Any) -> str:
    """A token with ``alg: none`` and no signature, as an attacker would send it."""

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims(**overrides))}."


@pytest.fixture
async def guarded(tmp_path: Path) -> AsyncIterator[Api]:
    """The shop behind HS256 tokens, with A-1 in stock and order o-1 placed by a full-rights token."""
    async with serve(shop, tmp_path, auth=Authenticator(SETTINGS)) as api:
        writer = bearer(token(scope="commands:* queries:*"))
        for type_name, body in [
            ("AddProduct", {"sku": "A-1", "name": "Apple", "price": "1.50"}),
            ("ReceiveStock", {"sku": "A-1", "quantity": 5}),
            ("PlaceOrder", order("o-1", "c-1", ("A-1", 1))),
        ]:
            assert (await api.command(type_name, body, **writer)).status_code == 200
        yield api


# -- 401 -----------------------------------------------------------------------------------------


async def test_a_request_without_a_token_is_401_with_a_bearer_challenge(guarded: Api) -> None:
    for response in (
        await guarded.command("AddProduct", EVERY_COMMAND["AddProduct"]),
        await guarded.query("StockLevel", sku="A-1"),
        await guarded.client.get("/metrics"),
    ):
        body = assert_problem(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == 'Bearer realm="twofold"'
        assert "Authorization: Bearer" in body["detail"]


@pytest.mark.parametrize(
    ("signed", "why"),
    [
        (token(exp=int(time.time()) - 3600), "expired"),
        (token(aud="another-api"), "audience"),
        (token(aud=None), "'aud' claim"),
        (token(iss="https://evil.example"), "issuer"),
        (token(exp=None), "'exp' claim"),
        (token(sub=None), "'sub' claim"),
        (token(key="another-secret-that-is-also-32-bytes-long"), "signature"),
        (unsigned(), "algorithm"),
        ("not.a.jwt", "well-formed"),
        ("garbage", "well-formed"),
        (token(scope=42), "scope"),
    ],
    ids=[
        "expired",
        "wrong-audience",
        "no-audience",
        "wrong-issuer",
        "no-exp",
        "no-sub",
        "wrong-signature",
        "alg-none",
        "three-garbage-parts",
        "garbage",
        "scope-not-text",
    ],
)
async def test_a_bad_token_is_401_invalid_token_saying_why_without_quoting_it(
    guarded: Api, signed: str, why: str
) -> None:
    before = await guarded.head()
    response = await guarded.command("AddProduct", EVERY_COMMAND["AddProduct"], **bearer(signed))

    body = assert_problem(response, 401, "unauthorized")
    assert why in body["detail"]
    assert response.headers["www-authenticate"] == 'Bearer realm="twofold", error="invalid_token"'
    assert signed not in response.text
    assert await guarded.head() == before


async def test_a_scheme_other_than_bearer_is_401(guarded: Api) -> None:
    response = await guarded.client.get(
        "/queries/StockLevel", params={"sku": "A-1"}, headers={"Authorization": "Basic YTpi"}
    )
    assert_problem(response, 401, "unauthorized")


async def test_health_and_docs_stay_open(guarded: Api) -> None:
    assert (await guarded.client.get("/health")).status_code == 200
    assert (await guarded.client.get("/docs")).status_code == 200


@pytest.mark.parametrize(
    "tenant",
    ["", "../etc", "t 1", "t1\n", "-t1", ".hidden", "t" * 64, "t1;drop", "a/b", "é", 42, ["t1"]],
    ids=repr,
)
async def test_a_tenant_claim_that_is_not_a_plain_name_is_401_naming_the_claim(guarded: Api, tenant: object) -> None:
    before = await guarded.head()
    response = await guarded.command("AddProduct", EVERY_COMMAND["AddProduct"], **bearer(token(tenant=tenant)))

    assert "tenant claim" in assert_problem(response, 401, "unauthorized")["detail"]
    assert await guarded.head() == before


@pytest.mark.parametrize("tenant", ["t1", "Acme.eu-west_1", "7", "t" * 63])
async def test_a_plain_tenant_name_is_recorded(guarded: Api, tenant: str) -> None:
    result = await guarded.ok("AddProduct", EVERY_COMMAND["AddProduct"], **bearer(token(tenant=tenant)))
    assert result["events"][0]["metadata"]["tenant"] == tenant


# -- 403 and 200, route by route -----------------------------------------------------------------


async def test_a_command_needs_its_own_scope_or_commands_star(guarded: Api) -> None:
    body = EVERY_COMMAND["AddProduct"]
    refused = await guarded.command("AddProduct", body, **bearer(token(scope="commands:ReceiveStock queries:*")))
    problem = assert_problem(refused, 403, "forbidden")
    assert problem["scope"] == "commands:AddProduct"
    assert "commands:AddProduct or commands:*" in problem["detail"]
    assert 'error="insufficient_scope"' in refused.headers["www-authenticate"]

    assert (await guarded.command("AddProduct", body, **bearer(token(scope="commands:AddProduct")))).status_code == 200
    other = {**body, "sku": "Y-8"}
    assert (await guarded.command("AddProduct", other, **bearer(token(scopes=["commands:*"])))).status_code == 200


async def test_a_query_needs_its_own_scope_or_queries_star(guarded: Api) -> None:
    refused = await guarded.query("StockLevel", sku="A-1")
    assert refused.status_code == 401
    writer_only = await guarded.client.get("/queries/StockLevel", params={"sku": "A-1"}, headers=bearer(token()))
    assert assert_problem(writer_only, 403, "forbidden")["scope"] == "queries:StockLevel"
    for scope in ("queries:StockLevel", "queries:*"):
        answer = await guarded.client.get(
            "/queries/StockLevel", params={"sku": "A-1"}, headers=bearer(token(scope=scope))
        )
        assert answer.status_code == 200, answer.text


async def test_a_command_s_status_needs_some_commands_scope(guarded: Api) -> None:
    queued = await guarded.command(
        "ReceiveStock", {"sku": "A-1", "quantity": 1}, Prefer="respond-async", **bearer(token())
    )
    url = queued.json()["status_url"]
    assert (await guarded.client.get(url, headers=bearer(token(scope="queries:*")))).status_code == 403
    assert (await guarded.client.get(url, headers=bearer(token(scope="commands:ReceiveStock")))).status_code == 200


async def test_operations_routes_need_operations_read(guarded: Api) -> None:
    for path in ("/ready", "/metrics", "/openapi.json"):
        refused = await guarded.client.get(path, headers=bearer(token(scope="commands:* queries:*")))
        assert assert_problem(refused, 403, "forbidden")["scope"] == "operations:read"
        allowed = await guarded.client.get(path, headers=bearer(token(scope="operations:read")))
        assert allowed.status_code == 200, (path, allowed.text)


async def test_sagas_need_queries_star_or_sagas_read(tmp_path: Path) -> None:
    async with serve(saga_shop, tmp_path, auth=Authenticator(SETTINGS)) as api:
        assert (await api.client.get("/sagas/checkout", headers=bearer(token(scope="queries:Nope")))).status_code == 403
        assert (await api.client.get("/sagas/checkout", headers=bearer(token(scope="commands:*")))).status_code == 403
        for scope in ("sagas:read", "queries:*"):
            assert (await api.client.get("/sagas/checkout", headers=bearer(token(scope=scope)))).status_code == 200


async def test_views_across_every_tenant_refuse_a_tenant_s_token_whatever_its_scopes(tmp_path: Path) -> None:
    async with serve(saga_shop, tmp_path, auth=Authenticator(SETTINGS)) as api:
        everything = "sagas:read queries:* operations:*"
        for path in ("/sagas/checkout", "/dead-letters", "/services/shop/sagas/checkout"):
            refused = await api.client.get(path, headers=bearer(token(scope=everything, tenant="acme")))
            assert "every tenant" in assert_problem(refused, 403, "forbidden")["detail"]
            allowed = await api.client.get(path, headers=bearer(token(scope=everything)))
            assert allowed.status_code != 403  # 200, or 404 where this service has no such route


def test_the_scope_table_reads_apart_from_writes() -> None:
    assert scopes_for("POST", "/commands/PlaceOrder") == ("commands:PlaceOrder", "commands:*")
    assert scopes_for("GET", "/commands/abc") == ("commands:", "operations:read", "operations:*")
    assert scopes_for("GET", "/queries/StockLevel") == ("queries:StockLevel", "queries:*")
    assert scopes_for("GET", "/dead-letters") == ("operations:read", "operations:*")
    assert scopes_for("POST", "/dead-letters/retry") == ("operations:*",)
    assert scopes_for("POST", "/services/orders/dead-letters/retry") == ("operations:*",)
    assert scopes_for("POST", "/services/orders/commands/PlaceOrder") == ("commands:PlaceOrder", "commands:*")
    assert scopes_for("GET", "/health") is None
    assert scopes_for("GET", "/elsewhere") == ()


# -- a read-only token never writes --------------------------------------------------------------


@pytest.mark.parametrize("asynchronously", [False, True], ids=["sync", "respond-async"])
async def test_a_read_only_token_is_refused_on_every_command_route_and_writes_nothing(
    guarded: Api, asynchronously: bool
) -> None:
    reader = bearer(token(scope="queries:* sagas:read operations:read"))
    prefer = {"Prefer": "respond-async"} if asynchronously else {}
    before = [e.event_id for e in await guarded.events()]
    for type_name in (c.type_name for c in shop.commands):
        response = await guarded.command(type_name, EVERY_COMMAND[type_name], **reader, **prefer)
        assert assert_problem(response, 403, "forbidden")["scope"] == f"commands:{type_name}"
    retry = await guarded.client.post("/dead-letters/retry", headers=reader)
    assert retry.status_code == 403
    await guarded.runtime.catch_up()
    assert [e.event_id for e in await guarded.events()] == before


# -- who is recorded -----------------------------------------------------------------------------


@pytest.mark.parametrize("asynchronously", [False, True], ids=["sync", "respond-async"])
async def test_every_event_records_the_token_s_subject_and_tenant(guarded: Api, asynchronously: bool) -> None:
    prefer = {"Prefer": "respond-async"} if asynchronously else {}
    owner = bearer(token(sub="olga", tenant="t1", scope="commands:*"))
    for type_name, body in [
        ("AddProduct", {"sku": "T-1", "name": "Tenant's apple", "price": "1.50"}),
        ("ReceiveStock", {"sku": "T-1", "quantity": 5}),
    ]:
        assert (await guarded.command(type_name, body, **owner)).status_code == 200
    signed = token(sub="grace", tenant="t1", scope="commands:PlaceOrder")
    response = await guarded.command("PlaceOrder", order("o-2", "c-2", ("T-1", 2)), **bearer(signed), **prefer)
    assert response.status_code == (202 if asynchronously else 200), response.text
    command_id = response.json()["command_id"]
    for _ in range(500):  # a background command: a bounded wait for it to finish
        if await guarded.store.command_result(command_id) is not None:
            break
        await asyncio.sleep(0.01)
    placed = [e for e in await guarded.events() if e.metadata["command_id"] == command_id]
    assert {e.stream_id for e in placed} == {"order-o-2", "product-T-1"}
    for event in placed:
        assert (event.metadata["principal"], event.metadata["tenant"]) == ("grace", "t1")
    earlier = [e for e in await guarded.events() if e.stream_id == "order-o-1"]
    assert earlier[0].metadata["principal"] == "ada"


async def test_with_auth_off_every_route_is_open_and_no_principal_is_recorded(tmp_path: Path) -> None:
    async with serve(shop, tmp_path) as api:
        result = await api.ok("AddProduct", EVERY_COMMAND["AddProduct"])
        assert result["events"][0]["metadata"]["principal"] is None
        assert (await api.client.get("/metrics")).status_code == 200


# -- a per-command policy ------------------------------------------------------------------------


def only_customers_cancel(principal: str | None, command: CancelOrder) -> bool:
    return principal is not None and command.order_id.startswith(f"{principal}-")


async def test_a_command_s_policy_refuses_a_principal_with_403_naming_the_command(tmp_path: Path) -> None:
    policed = Service(
        "shop",
        commands=shop.commands,
        queries=shop.queries,
        projections=shop.projections,
        policies={CancelOrder: only_customers_cancel},
    )
    async with serve(policed, tmp_path, auth=Authenticator(SETTINGS)) as api:
        writer = bearer(token(sub="ada"))
        await api.command("AddProduct", {"sku": "A-1", "name": "Apple", "price": "1.50"}, **writer)
        await api.command("ReceiveStock", {"sku": "A-1", "quantity": 5}, **writer)
        for order_id in ("ada-1", "bob-1"):
            assert (await api.command("PlaceOrder", order(order_id, "c", ("A-1", 1)), **writer)).status_code == 200
        before = await api.head()

        for prefer in ({}, {"Prefer": "respond-async"}):
            refused = await api.command("CancelOrder", {"order_id": "bob-1"}, **writer, **prefer)
            problem = assert_problem(refused, 403, "forbidden")
            assert problem["command"] == "CancelOrder"
            assert "CancelOrder" in problem["detail"]
            assert "ada" in problem["detail"]
        assert await api.head() == before
        assert (await api.command("CancelOrder", {"order_id": "ada-1"}, **writer)).status_code == 200


def test_a_policy_for_a_command_the_service_lacks_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="not one of its commands"):
        Service("empty", policies={CancelOrder: only_customers_cancel})


# -- asymmetric keys from a JWK set --------------------------------------------------------------


def jwks_file(tmp_path: Path, *public_keys: tuple[str, Any]) -> Path:
    keys = []
    for kid, key in public_keys:
        jwk = json.loads(
            jwt.algorithms.RSAAlgorithm.to_jwk(key)
            if isinstance(key, rsa.RSAPublicKey)
            else jwt.algorithms.ECAlgorithm.to_jwk(key)
        )
        keys.append({**jwk, "kid": kid})
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": keys}))
    return path


async def test_rs256_and_es256_tokens_verify_against_a_jwks_file_and_hs256_ones_do_not(tmp_path: Path) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    path = jwks_file(tmp_path, ("r1", rsa_key.public_key()), ("e1", ec_key.public_key()))
    auth = Authenticator(AuthSettings(jwks_file=path, audience=AUDIENCE, issuer=ISSUER))
    async with serve(shop, tmp_path, auth=auth) as api:
        body = EVERY_COMMAND["AddProduct"]
        by_rsa = token(rsa_key, "RS256", {"kid": "r1"}, sub="rita")
        result = await api.ok("AddProduct", body, **bearer(by_rsa))
        assert result["events"][0]["metadata"]["principal"] == "rita"
        by_ec = token(ec_key, "ES256", {"kid": "e1"}, sub="eve")
        assert (await api.command("AddProduct", {**body, "sku": "Y-8"}, **bearer(by_ec))).status_code == 200

        for signed, why in [
            (token(SECRET, "HS256"), "algorithm"),  # a symmetric token where keys are asymmetric
            (token(rsa_key, "RS256", {"kid": "e1"}), "algorithm"),  # an RS256 token naming the EC key
            (token(rsa.generate_private_key(65537, 2048), "RS256", {"kid": "r1"}), "signature"),
            (token(rsa_key, "RS256", {"kid": "unknown"}), "key id"),
            (token(rsa_key, "RS256"), "key id"),  # two keys, and no kid to choose
        ]:
            response = await api.command("AddProduct", body, **bearer(signed))
            assert why in assert_problem(response, 401, "unauthorized")["detail"]


async def test_an_asymmetric_token_is_refused_where_the_key_is_a_shared_secret(guarded: Api) -> None:
    signed = token(ec.generate_private_key(ec.SECP256R1()), "ES256")
    response = await guarded.command("AddProduct", EVERY_COMMAND["AddProduct"], **bearer(signed))
    assert "algorithm" in assert_problem(response, 401, "unauthorized")["detail"]


# -- settings ------------------------------------------------------------------------------------


def test_auth_is_off_when_no_key_is_set_and_on_with_one() -> None:
    assert AuthSettings.from_env({}) is None
    on = AuthSettings.from_env({"TWOFOLD_AUTH_HS256_SECRET": SECRET, "TWOFOLD_AUTH_AUDIENCE": "a"})
    assert on == AuthSettings(hs256_secret=SECRET, audience="a")


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"TWOFOLD_AUTH_HS256_SECRET": "short"}, "at least 32 bytes"),
        ({"TWOFOLD_AUTH_HS256_SECRET": SECRET, "TWOFOLD_AUTH_JWKS_FILE": "k.json"}, "exactly one of"),
        ({"TWOFOLD_AUTH_JWKS_URL": "http://id.example/keys"}, "https://"),
    ],
)
def test_bad_auth_settings_say_how_to_fix_them(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        AuthSettings.from_env(environ)


def test_an_unreadable_jwks_file_is_a_configuration_error(tmp_path: Path) -> None:
    (tmp_path / "keys.json").write_text("{not json")
    with pytest.raises(ConfigurationError, match="TWOFOLD_AUTH_JWKS_FILE"):
        Authenticator(AuthSettings(jwks_file=tmp_path / "keys.json"))


async def test_the_development_token_carries_sub_scopes_tenant_audience_and_issuer() -> None:
    auth = Authenticator(SETTINGS)
    principal = await auth.authenticate(f"Bearer {auth.token('ada', ['commands:*', 'queries:*'], tenant='t1')}")
    assert (principal.subject, principal.scopes, principal.tenant) == ("ada", {"commands:*", "queries:*"}, "t1")


async def test_a_client_of_the_gateway_is_checked_there_and_its_token_reaches_the_services(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from examples.shop import shop as system
    from twofold.embedded import embedded_runtimes
    from twofold.http.gateway import gateway_in_process

    monkeypatch.chdir(tmp_path)
    app = gateway_in_process(system, embedded_runtimes(system, environ={}), auth=Authenticator(SETTINGS))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
            body = {"sku": "A-1", "name": "Mug", "price": "1.00"}
            assert (await client.post("/commands/AddProduct", json=body)).status_code == 401
            reader = bearer(token(scope="queries:*"))
            assert (await client.post("/commands/AddProduct", json=body, headers=reader)).status_code == 403
            through = await client.post("/services/catalog/commands/AddProduct", json=body, headers=reader)
            assert through.status_code == 403
            added = await client.post("/commands/AddProduct", json=body, headers=bearer(token(sub="gia")))
            assert added.status_code == 200, added.text
            assert added.json()["events"][0]["metadata"]["principal"] == "gia"
            ready = await client.get("/ready", headers=bearer(token(scope="operations:read")))
            assert ready.status_code == 200, ready.text


async def test_keys_are_fetched_from_a_jwks_url_and_an_unknown_key_id_is_refused(tmp_path: Path) -> None:
    first, second = (ec.generate_private_key(ec.SECP256R1()) for _ in range(2))
    served = {"keys": [json.loads(jwt.algorithms.ECAlgorithm.to_jwk(first.public_key())) | {"kid": "k1"}]}

    class Keys(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(served).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Keys)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
        auth = Authenticator(AuthSettings(jwks_url=url, audience=AUDIENCE, issuer=ISSUER))
        principal = await auth.authenticate(f"Bearer {token(first, 'ES256', {'kid': 'k1'}, sub='kim')}")
        assert principal.subject == "kim"

        with pytest.raises(Unauthorized, match="key id"):
            await auth.authenticate(f"Bearer {token(second, 'ES256', {'kid': 'k2'}, sub='lee')}")
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
