"""The query API against its stable contract: answers, read-your-writes, and every error status."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.http import QUERY_TIMEOUT, Api, assert_problem, order, serve
from tests.monolith import shop

FAR_AHEAD = 10**15


# -- 200 and read-your-writes --------------------------------------------------------------------


async def test_a_query_answers_200_with_json_from_its_read_model(stocked: Api) -> None:
    response = await stocked.query("StockLevel", await stocked.head(), sku="A-1")

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"sku": "A-1", "available": 3}


async def test_stock_level_with_x_min_position_sees_the_order_just_placed(stocked: Api) -> None:
    placed = await stocked.ok("PlaceOrder", order("o-1", "c-1", ("A-1", 2), ("B-2", 3)))

    a1 = await stocked.query("StockLevel", placed["position"], sku="A-1")
    b2 = await stocked.query("StockLevel", placed["position"], sku="B-2")

    assert (a1.json()["available"], b2.json()["available"]) == (1, 7)


async def test_order_history_with_x_min_position_sees_the_order_just_placed(stocked: Api) -> None:
    first = await stocked.ok("PlaceOrder", order("o-1", "c-1", ("A-1", 1)))
    second = await stocked.ok("PlaceOrder", order("o-2", "c-1", ("B-2", 2)))

    response = await stocked.query("OrderHistory", second["position"], customer_id="c-1")

    assert response.status_code == 200
    orders = response.json()["orders"]
    assert [(o["order_id"], o["status"], o["total"]) for o in orders] == [
        ("o-2", "placed", "4.50"),
        ("o-1", "placed", "1.50"),
    ]
    assert orders[0]["lines"] == [{"sku": "B-2", "quantity": 2, "price": "2.25"}]
    assert first["position"] < second["position"]


async def test_order_history_with_x_min_position_sees_a_cancellation(stocked: Api) -> None:
    await stocked.ok("PlaceOrder", order("o-1", "c-1", ("A-1", 3)))
    cancelled = await stocked.ok("CancelOrder", {"order_id": "o-1"})

    history = await stocked.query("OrderHistory", cancelled["position"], customer_id="c-1")
    stock = await stocked.query("StockLevel", cancelled["position"], sku="A-1")

    assert [o["status"] for o in history.json()["orders"]] == ["cancelled"]
    assert stock.json()["available"] == 3


async def test_search_products_with_x_min_position_finds_the_product_just_added(api: Api) -> None:
    added = await api.add_product("K-1", "Kiwi from Otago", "0.80")

    response = await api.query("SearchProducts", added["position"], text="otago kiw")

    assert response.json() == {"products": [{"sku": "K-1", "name": "Kiwi from Otago", "price": "0.80"}]}


async def test_x_min_position_zero_or_already_reached_answers_at_once(stocked: Api) -> None:
    for position in (0, 1):
        response = await stocked.query("SearchProducts", position)
        assert response.status_code == 200


# -- 504 -----------------------------------------------------------------------------------------


async def test_x_min_position_beyond_the_head_is_504_with_the_required_and_current_positions(stocked: Api) -> None:
    head = await stocked.head()
    await stocked.query("StockLevel", head, sku="A-1")  # the read models have caught up to the head

    response = await stocked.query("StockLevel", FAR_AHEAD, sku="A-1")

    body = assert_problem(response, 504, "not-caught-up")
    assert body["title"] == "Read model not caught up"
    assert body["required_position"] == FAR_AHEAD
    assert body["current_position"] == head
    assert body["detail"] == (
        f"Read model not caught up: required position {FAR_AHEAD}, current {head} after {QUERY_TIMEOUT:g}s"
    )


# -- 400 -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["abc", "-1", "1e9", "9" * 30, "1.5", "0x10", "", "+5", "1 2", "9" * 19],
    ids=["letters", "negative", "exponent", "30-digits", "fraction", "hex", "empty", "plus", "two", "19-digits"],
)
async def test_a_malformed_x_min_position_is_400(stocked: Api, value: str) -> None:
    response = await stocked.client.get("/queries/StockLevel", params={"sku": "A-1"}, headers={"X-Min-Position": value})

    body = assert_problem(response, 400, "bad-request")
    assert body["detail"] == "X-Min-Position must be a whole number of at most 18 digits"


# -- 404, 405 ------------------------------------------------------------------------------------


async def test_an_unknown_query_type_is_404_with_a_problem_naming_it(api: Api) -> None:
    response = await api.query("BestSellers", limit="10")

    body = assert_problem(response, 404, "not-found")
    assert body["detail"] == (
        "No query type 'BestSellers'; this service answers: SearchProducts, StockLevel, OrderHistory"
    )


async def test_a_query_for_something_that_does_not_exist_is_404_with_the_handlers_message(stocked: Api) -> None:
    response = await stocked.query("StockLevel", await stocked.head(), sku="Z-9")

    body = assert_problem(response, 404, "not-found")
    assert body["detail"] == "Unknown sku Z-9"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
async def test_a_query_sent_with_the_wrong_method_is_405(api: Api, method: str) -> None:
    response = await api.client.request(method, "/queries/StockLevel", params={"sku": "A-1"})

    body = assert_problem(response, 405)
    assert body["title"] == "Method not allowed"
    assert "GET" in response.headers["allow"]


# -- 422 -----------------------------------------------------------------------------------------


async def test_query_validation_names_every_bad_and_unknown_parameter(api: Api) -> None:
    response = await api.query("StockLevel", sku="../etc/passwd", colour="red")

    body = assert_problem(response, 422, "validation")
    assert {e["field"]: e["message"] for e in body["errors"]} == {
        "sku": "String should match pattern '^[A-Za-z0-9][A-Za-z0-9_.-]*$'",
        "colour": "Extra inputs are not permitted",
    }


async def test_a_missing_query_parameter_is_422_naming_it(api: Api) -> None:
    response = await api.query("OrderHistory")

    body = assert_problem(response, 422, "validation")
    assert body["errors"] == [{"field": "customer_id", "message": "Field required"}]


async def test_a_repeated_single_valued_parameter_is_422_not_a_guess(api: Api) -> None:
    response = await api.client.get("/queries/StockLevel?sku=A-1&sku=B-2")

    body = assert_problem(response, 422, "validation")
    assert body["errors"] == [{"field": "sku", "message": "Input should be a valid string"}]


# -- apps for one side only ----------------------------------------------------------------------


async def test_a_query_only_app_serves_no_command_routes(tmp_path: Path) -> None:
    async with serve(shop, tmp_path, commands=False) as api:
        response = await api.command("AddProduct", {"sku": "A-1", "name": "Apple", "price": "1"})

        assert_problem(response, 404)
        assert (await api.query("SearchProducts")).status_code == 200
        assert await api.head() == 0


async def test_a_command_only_app_serves_no_query_routes(tmp_path: Path) -> None:
    async with serve(shop, tmp_path, queries=False) as api:
        await api.add_product("A-1", "Apple")

        response = await api.query("StockLevel", sku="A-1")

        assert_problem(response, 404)
