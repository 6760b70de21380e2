"""Hostile connections against a real ``twofold serve`` process: lying lengths, raw sockets, a thousand at once.

What an in-process client cannot send (a Content-Length that lies, a body that stops short, a
thousand sockets open together) is sent here over loopback, to the shop served by one process.
"""

from __future__ import annotations

import asyncio
import json
import select
import socket
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from tests.integration.test_processes import Server, running

pytestmark = pytest.mark.slow

LIMIT = 1024 * 1024  # the default body limit
CONCURRENT = 1_000
ANSWER_SECONDS = 60.0  # for all of them to be answered; a hang fails the test rather than the run


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running(tmp_path_factory.mktemp("hostile"), "all") as (served,):
        yield served


def exchange(server: Server, request: bytes, *, timeout: float = 10.0) -> bytes:
    """Send raw bytes, half-close, and read until the server closes (or the timeout): everything it said."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as connection:
        try:
            for start in range(0, len(request), 65536):
                if select.select([connection], [], [], 0)[0]:
                    break  # it has answered already: stop sending, so that no reset drops the answer
                connection.sendall(request[start : start + 65536])
            connection.shutdown(socket.SHUT_WR)
        except OSError:  # it answered and closed before reading it all (EPIPE, ECONNRESET, ENOTCONN)
            pass
        received = b""
        try:
            while chunk := connection.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
    return received


def statuses(raw: bytes) -> list[int]:
    """The status of every response in a raw HTTP/1.1 exchange, in order."""
    return [int(line.split(b" ")[1]) for line in raw.split(b"\r\n") if line.startswith(b"HTTP/1.1 ")]


def post(path: str, body: bytes, *headers: str) -> bytes:
    head = [f"POST {path} HTTP/1.1", "Host: shop", "Content-Type: application/json", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def head(server: Server) -> int:
    ready: int = httpx.get(f"{server.url}/ready", timeout=10.0).json()["head"]
    return ready


def test_a_declared_length_over_the_limit_is_413_before_the_body_is_sent(server: Server) -> None:
    before = head(server)

    raw = exchange(server, post("/commands/ReceiveStock", b"{", f"Content-Length: {LIMIT * 64}"))

    assert statuses(raw)[:1] == [413]
    assert b"urn:twofold:problem:too-large" in raw
    assert head(server) == before


def test_a_length_that_understates_the_body_parses_only_what_it_declared(server: Server) -> None:
    body = json.dumps({"sku": "A-1", "quantity": 1}).encode() + b" " * 65536
    before = head(server)

    raw = exchange(server, post("/commands/ReceiveStock", body, "Content-Length: 10"))

    # The first 10 bytes are not JSON (400); the rest is no HTTP request, refused by the server or dropped.
    assert statuses(raw)[:1] == [400]
    assert set(statuses(raw)) == {400}
    assert b"Traceback" not in raw
    assert head(server) == before


def test_a_length_that_overstates_the_body_is_never_applied(server: Server) -> None:
    body = json.dumps({"sku": "A-1", "name": "Apple", "price": "1.00"}).encode()
    before = head(server)

    raw = exchange(server, post("/commands/AddProduct", body, f"Content-Length: {len(body) + 100}"), timeout=5.0)

    assert set(statuses(raw)) <= {400}  # nothing, or a 400 for the body cut short
    assert head(server) == before


@pytest.mark.parametrize("length", ["-1", "abc", "1e3", "0x10", "1 2", str(10**30)])
def test_a_content_length_that_is_no_length_is_refused_without_a_500(server: Server, length: str) -> None:
    body = b'{"sku": "A-1", "quantity": 1}'

    raw = exchange(server, post("/commands/ReceiveStock", body, f"Content-Length: {length}"))

    assert statuses(raw)
    assert all(400 <= status < 500 for status in statuses(raw)), raw[:500]


def test_a_body_without_a_length_or_chunks_is_read_as_empty_and_refused(server: Server) -> None:
    before = head(server)

    raw = exchange(server, post("/commands/ReceiveStock", b'{"sku": "A-1", "quantity": 1}'))

    assert statuses(raw)[0] == 400
    assert head(server) == before


def test_a_chunked_body_growing_past_the_limit_is_413(server: Server) -> None:
    chunk = b"[" * 65536
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(LIMIT // len(chunk) + 2)) + b"0\r\n\r\n"
    before = head(server)

    raw = exchange(server, post("/commands/ReceiveStock", chunks, "Transfer-Encoding: chunked"))

    assert statuses(raw)[0] == 413
    assert head(server) == before


def test_header_injection_with_raw_cr_or_lf_never_reaches_the_app(server: Server) -> None:
    before = head(server)

    raw = exchange(
        server,
        post("/commands/ReceiveStock", b'{"sku": "A-1", "quantity": 1}', "Content-Length: 29", "Idempotency-Key: a\rb"),
    )

    assert all(400 <= status < 500 for status in statuses(raw)), raw[:500]
    assert head(server) == before


async def test_a_thousand_concurrent_requests_are_each_answered_and_none_with_a_server_error(server: Server) -> None:
    limits = httpx.Limits(max_connections=CONCURRENT, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=ANSWER_SECONDS) as client:
        await client.post("/commands/AddProduct", json={"sku": "C-1", "name": "Cherry", "price": "0.50"})

        async def one(i: int) -> tuple[str, int]:
            if i % 4 == 0:
                body = {"sku": "C-1", "quantity": 1}
                answer = await client.post("/commands/ReceiveStock", json=body, headers={"Idempotency-Key": f"k-{i}"})
                return "received", answer.status_code
            if i % 4 == 1:
                answer = await client.post("/commands/ReceiveStock", json={"sku": "C-1'; --", "quantity": "x"})
            elif i % 4 == 2:
                answer = await client.get("/queries/StockLevel", params={"sku": "C-1"})
            else:
                answer = await client.get(f"/commands/..%2F{i}")
            return "other", answer.status_code

        answered = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(CONCURRENT))), ANSWER_SECONDS)
        position = (await client.get("/ready")).json()["head"]
        wait = {"X-Min-Position": str(position)}
        level = await client.get("/queries/StockLevel", params={"sku": "C-1"}, headers=wait)

    counts = Counter(status for _, status in answered)
    assert len(answered) == CONCURRENT
    # 409: receipts for one product racing each other past their retries, refused whole.
    assert set(counts) <= {200, 404, 409, 422}, counts
    assert level.json()["available"] == sum(1 for kind, status in answered if (kind, status) == ("received", 200))
