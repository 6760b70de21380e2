"""An identity provider whose key set cannot be fetched: 503 with Retry-After, never 500 or 401, logged once."""

from __future__ import annotations

import http.server
import json
import logging
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.http import assert_problem, serve
from tests.http.test_auth import AUDIENCE, EVERY_COMMAND, ISSUER, bearer, token
from tests.monolith import shop
from twofold.config import AuthSettings
from twofold.http.auth import Authenticator
from twofold.testing.servers import free_port

KEY = ec.generate_private_key(ec.SECP256R1())


@contextmanager
def key_server(body: bytes) -> Iterator[str]:
    """A JWK set URL on loopback serving ``body``, stopped on the way out."""

    class Keys(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
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
        yield f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def settings(url: str) -> AuthSettings:
    # A key set trusted for a millisecond: every request that needs it fetches it again.
    return AuthSettings(jwks_url=url, audience=AUDIENCE, issuer=ISSUER, jwks_cache_seconds=0.001)


def signed(kid: str, **claims: Any) -> dict[str, str]:
    return bearer(token(KEY, "ES256", {"kid": kid}, **claims))


def assert_unavailable(response: Any) -> None:
    body = assert_problem(response, 503, "keys-unavailable")
    assert int(response.headers["retry-after"]) >= 1
    assert "try again" in body["detail"]
    assert "127.0.0.1" not in response.text  # the cause is logged, not told


async def test_a_jwks_url_on_a_closed_port_is_503_with_retry_after_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    auth = Authenticator(settings(f"http://127.0.0.1:{free_port()}/jwks.json"))
    async with serve(shop, tmp_path, auth=auth) as api:
        with caplog.at_level(logging.ERROR, logger="twofold.http"):
            for _ in range(3):
                assert_unavailable(await api.command("AddProduct", EVERY_COMMAND["AddProduct"], **signed("k1")))
            query = await api.client.get("/queries/StockLevel", params={"sku": "A-1"}, headers=signed("k1"))
            assert_unavailable(query)
        assert await api.head() == 0
    outage = [r for r in caplog.records if "JWK set" in r.getMessage()]
    assert len(outage) == 1
    assert "cannot fetch" in outage[0].getMessage()


async def test_a_jwks_url_that_works_then_stops_answers_503_only_once_it_is_gone(tmp_path: Path) -> None:
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(KEY.public_key())) | {"kid": "k1"}
    with ExitStack() as keys:
        auth = Authenticator(settings(keys.enter_context(key_server(json.dumps({"keys": [jwk]}).encode()))))
        async with serve(shop, tmp_path, auth=auth) as api:
            assert (await api.command("AddProduct", EVERY_COMMAND["AddProduct"], **signed("k1"))).status_code == 200
            unknown = await api.command("AddProduct", EVERY_COMMAND["AddProduct"], **signed("k2"))
            assert "key id" in assert_problem(unknown, 401, "unauthorized")["detail"]

            keys.close()  # the identity provider goes away

            # A key seen already is remembered; one never seen cannot be judged while the set is out of reach.
            body = {**EVERY_COMMAND["AddProduct"], "sku": "K-1"}
            assert (await api.command("AddProduct", body, **signed("k1"))).status_code == 200
            assert_unavailable(await api.command("AddProduct", body, **signed("k3")))


@pytest.mark.parametrize(
    "body", [b"<html>down for maintenance</html>", b"[]", b'{"keys": []}'], ids=["html", "not-an-object", "no-keys"]
)
async def test_a_jwks_url_serving_no_usable_key_set_is_503_not_500(tmp_path: Path, body: bytes) -> None:
    with key_server(body) as url:
        async with serve(shop, tmp_path, auth=Authenticator(settings(url))) as api:
            assert_unavailable(await api.command("AddProduct", EVERY_COMMAND["AddProduct"], **signed("k1")))
