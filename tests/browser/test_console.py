"""The console as an operator uses it: streams, an order back in time, its trace, the operations pages."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect


def test_streams_lead_to_an_order_whose_state_follows_the_version_picker(page: Page, console_url: str) -> None:
    page.goto(f"{console_url}/console")
    page.get_by_role("link", name="Streams", exact=True).click()
    page.get_by_label("Service").select_option("orders")
    page.get_by_label("Category").fill("order")
    page.get_by_role("button", name="Show").click()
    page.get_by_role("link", name="order-o-1", exact=True).click()

    expect(page.locator("h1")).to_have_text("order-o-1")
    expect(page.locator(".events .type")).to_have_text(["orders.OrderPlaced", "orders.OrderConfirmed"])
    state = page.locator("#state .state")
    expect(state).to_contain_text('"status": "confirmed"')

    picker = page.get_by_label("version", exact=True)
    picker.focus()
    page.keyboard.press("ArrowLeft")  # as a person moves the slider: one version back
    expect(page.locator("#picked")).to_have_text("1")
    expect(state).to_contain_text('"status": "placed"')
    page.keyboard.press("End")
    expect(state).to_contain_text('"status": "confirmed"')


def test_a_checkout_s_trace_shows_the_commands_of_every_service_it_crossed(page: Page, console_url: str) -> None:
    page.goto(f"{console_url}/console/streams/orders/order-o-1")
    page.locator(".events li").first.locator("a.correlation").click()

    expect(page.locator("h1")).to_have_text("Trace")
    commands = page.locator(".tree li.command > .service")
    expect(commands.first).to_be_visible()
    assert {"orders", "catalog", "inventory", "payments"} <= set(commands.all_inner_texts())
    root = page.locator(".tree > li").first
    expect(root.locator("> .type")).to_have_text("PlaceOrder")
    expect(root.locator("li.event > .type", has_text="orders.OrderConfirmed")).to_have_count(1)


def test_the_projections_page_shows_each_worker_s_lag_and_refreshes_itself(page: Page, console_url: str) -> None:
    page.goto(f"{console_url}/console/projections")
    history = page.locator("tr", has=page.locator("td.name", has_text="orders.history"))
    expect(history.locator("td.lag")).to_have_text(re.compile(r"^\d+$"))
    expect(history.locator("td.lag-seconds")).to_have_text(re.compile(r"^\d+\.\d$"))
    expect(page.get_by_role("columnheader", name="Lag (events)")).to_be_visible()

    shown = page.locator(".refreshed time").get_attribute("datetime")
    expect(page.locator(".refreshed time")).not_to_have_attribute("datetime", shown or "", timeout=6_000)


def test_the_sagas_page_lists_checkouts_and_shows_one_with_its_compensations(page: Page, console_url: str) -> None:
    page.goto(f"{console_url}/console/sagas")
    rows = page.locator("table.sagas tbody tr")
    expect(rows).to_have_count(3)
    page.get_by_label("Status").select_option("completed")
    page.get_by_role("button", name="Show").click()
    expect(rows).to_have_count(2)
    page.get_by_role("link", name="o-1", exact=True).click()

    expect(page.locator("h1")).to_have_text("checkout o-1")
    expect(page.get_by_role("heading", name="Compensations")).to_be_visible()
    expect(page.get_by_role("heading", name="Deadlines")).to_be_visible()


def test_the_dead_letters_page_renders_its_table(page: Page, console_url: str) -> None:
    page.goto(f"{console_url}/console/dead-letters")
    expect(page.locator("h1")).to_have_text("Dead letters")
    expect(page.get_by_role("columnheader", name="Error")).to_be_visible()
    expect(page.locator("table.dead-letters tbody td.empty")).to_contain_text("Nothing parked")
