"""The shop served on a loopback port after a few checkouts, and a fresh chromium for each test.

Chromium is Debian's (``make install`` puts it at /usr/bin/chromium); Playwright never downloads
one. Without it these tests fail, saying how to install it: they never skip. When a test fails,
its page's screenshot and HTML are kept under the run's temporary folder, whose path is printed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from playwright.sync_api import BrowserContext, Page, sync_playwright

from examples.shop import shop
from twofold.embedded import embedded_runtimes
from twofold.http.gateway import gateway_in_process
from twofold.testing.servers import free_port

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # tests run as root in containers, where chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SETTLE_WITHIN = 15.0  # seconds the checkouts may take to reach their final status
CHECKOUTS = {"o-1": None, "o-2": "tok_declined", "o-3": "tok_unresponsive"}  # order → card (None: a good one)


@pytest.fixture(scope="session")
def console_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The shop's gateway on a free loopback port, its console at ``/console``, after three checkouts."""
    data = tmp_path_factory.mktemp("shop")
    environ = {f"TWOFOLD_{name.upper()}_DATABASE_URL": f"sqlite:///{data / name}.db" for name in shop.names}
    app = gateway_in_process(shop, embedded_runtimes(shop, environ=environ))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, name="console server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive(), "the shop's server stopped while starting"
        assert time.monotonic() < deadline, "the shop's server did not start within 20 s"
        time.sleep(0.01)
    url = f"http://127.0.0.1:{server.config.port}"
    try:
        _checkouts(url)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=20)


def _checkouts(url: str) -> None:
    with httpx.Client(base_url=url, timeout=10) as client:
        for command, body in [
            ("AddProduct", {"sku": "A-1", "name": "Apple", "price": "2.50"}),
            ("ReceiveStock", {"sku": "A-1", "quantity": 10}),
            *[
                (
                    "PlaceOrder",
                    {"order_id": o, "customer_id": "c-1", "lines": [{"sku": "A-1", "quantity": 1}]}
                    | ({"payment": card} if card else {}),
                )
                for o, card in CHECKOUTS.items()
            ],
        ]:
            answer = client.post(f"/commands/{command}", json=body)
            assert answer.status_code == 200, answer.text
        deadline = time.monotonic() + SETTLE_WITHIN
        while not _settled(client, ["o-1", "o-2"]):
            assert time.monotonic() < deadline, "the checkouts did not settle"
            time.sleep(0.05)


def _settled(client: httpx.Client, orders: list[str]) -> bool:
    history = client.get("/queries/OrderHistory", params={"customer_id": "c-1"}).json()
    statuses = {o["order_id"]: o["status"] for o in history["orders"]}
    return all(statuses.get(o) not in (None, "placed") for o in orders)


@pytest.fixture(scope="module")  # module, not session: Playwright's loop is gone before other tests' loops run
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    """Debian's chromium, headless, with a fresh profile; started once per module, each test on a page of its own."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run make install, or apt-get install -y --no-install-recommends chromium")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            tmp_path_factory.mktemp("chromium-profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
        )
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(
    browser: BrowserContext, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Page]:
    """A page of that browser; on failure its screenshot and HTML are saved and their folder printed."""
    opened = browser.new_page()
    opened.set_default_timeout(10_000)
    try:
        yield opened
    finally:
        _keep_if_failed(opened, request, tmp_path_factory)
        opened.close()


def _keep_if_failed(opened: Page, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> None:
    report = getattr(request.node, "call_report", None)
    if report is not None and report.failed:
        folder = tmp_path_factory.getbasetemp() / "browser-failures" / request.node.name
        folder.mkdir(parents=True, exist_ok=True)
        opened.screenshot(path=str(folder / "page.png"), full_page=True)
        (folder / "page.html").write_text(opened.content())
        print(f"\nThe failed page ({opened.url}) is kept in {folder}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Generator[None, Any, None]:
    """Keep each test's call report on it, for :func:`page` to see whether the test failed."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.call_report = report  # type: ignore[attr-defined]
