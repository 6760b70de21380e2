"""Hostile input: whatever a client sends, the API answers with JSON, never a 500, never a trace,
and never writes part of a command.

One app serves every example of a test (Hypothesis reuses the function's fixtures), so state builds
up across examples; the assertions hold whatever came before.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.http import Api, assert_no_leak, order
from tests.monolith import shop

HOSTILE = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
JSON_TYPES = ("application/json", "application/problem+json")
JSON_HEADERS = {"Content-Type": "application/json"}

NASTY = [
    "'; DROP TABLE products; --",
    '" OR "1"="1',
    "1; DELETE FROM twofold_checkpoints",
    "A-1' --",
    "../../../../etc/passwd",
    "..\\..\\windows\\win.ini",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "/dev/zero",
    "\x00",
    "a\x00b",
    "\u202eevil\u202c",
    "\u200f\u200e\u061c",
    "😀🛒",
    "\ud800",
    "\udfff",
    "x\ud83dy",
    "\ufeff",
    "ＡＢＣ",
    "NEAR(a b) OR *",
    'name:"x"',
    "*",
    '"',
    "\\",
    "${jndi:ldap://example.invalid/a}",
    "{{7*7}}",
    "<script>alert(1)</script>",
    "\r\nX-Injected: 1",
    "",
    " ",
    "x" * 300,
]
strings = st.one_of(st.sampled_from(NASTY), st.text(max_size=40))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | strings,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(strings, children, max_size=4),
    max_leaves=16,
)

VALID: dict[str, dict[str, Any]] = {
    "AddProduct": {"sku": "N-1", "name": "Nut", "price": "0.10"},
    "ReceiveStock": {"sku": "A-1", "quantity": 1},
    "PlaceOrder": order("o-x", "c-1", ("A-1", 1)),
    "CancelOrder": {"order_id": "o-x"},
}
STRING_FIELDS = [
    ("AddProduct", ("sku",)),
    ("AddProduct", ("name",)),
    ("AddProduct", ("price",)),
    ("ReceiveStock", ("sku",)),
    ("PlaceOrder", ("order_id",)),
    ("PlaceOrder", ("customer_id",)),
    ("PlaceOrder", ("lines", 0, "sku")),
    ("CancelOrder", ("order_id",)),
]
QUERY_FIELDS = [(query.type_name, field) for query in shop.queries for field in query.model_fields]


def shaped(type_name: str) -> st.SearchStrategy[dict[str, Any]]:
    """Bodies with the command's own field names (and maybe more), holding arbitrary JSON."""
    fields = dict.fromkeys(VALID[type_name], json_values)
    if type_name == "PlaceOrder":
        line = st.fixed_dictionaries({}, optional={"sku": json_values, "quantity": json_values})
        fields["lines"] = st.lists(line, max_size=3) | json_values
    extra = st.dictionaries(strings, json_values, max_size=2)
    return st.builds(lambda known, more: {**more, **known}, st.fixed_dictionaries({}, optional=fields), extra)


def with_value(body: dict[str, Any], path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    """A deep copy of ``body`` with ``value`` at ``path``."""
    copy: Any = json.loads(json.dumps(body))
    node = copy
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    result: dict[str, Any] = copy
    return result


async def check_answer(api: Api, response: httpx.Response, head_before: int, allowed: set[int]) -> None:
    """The response is JSON with an allowed status, leaks nothing, and wrote all of a command or none."""
    assert response.status_code in allowed, response.text
    assert response.headers["content-type"] in JSON_TYPES, response.headers
    body = response.json()
    if response.status_code != 200:  # a 200 may echo what was sent, and what was sent may be anything
        assert_no_leak(response)
    head = await api.head()
    if response.request.method == "POST" and response.status_code == 200:
        assert head == head_before + len(body["events"])
        assert [e.position for e in await api.events()][head_before:] == [e["position"] for e in body["events"]]
    else:
        assert head == head_before, response.text


async def post_json(api: Api, type_name: str, body: Any) -> httpx.Response:
    # ensure_ascii keeps lone surrogates as \\ud800 escapes: valid JSON text that no UTF-8 can carry.
    content = json.dumps(body, ensure_ascii=True).encode()
    return await api.client.post(f"/commands/{type_name}", content=content, headers=JSON_HEADERS)


# -- Hypothesis ----------------------------------------------------------------------------------


@HOSTILE
@given(type_name=st.sampled_from(sorted(VALID)), value=json_values)
async def test_any_json_value_sent_as_any_command_is_answered_without_a_500(
    stocked: Api, type_name: str, value: Any
) -> None:
    head = await stocked.head()

    response = await post_json(stocked, type_name, value)

    await check_answer(stocked, response, head, {200, 409, 422})


@HOSTILE
@given(data=st.data(), type_name=st.sampled_from(sorted(VALID)))
async def test_arbitrary_values_in_each_commands_own_fields_are_answered_without_a_500(
    stocked: Api, data: st.DataObject, type_name: str
) -> None:
    body = data.draw(shaped(type_name))
    head = await stocked.head()

    response = await post_json(stocked, type_name, body)

    await check_answer(stocked, response, head, {200, 409, 422})


@HOSTILE
@given(target=st.sampled_from(STRING_FIELDS), text=strings)
async def test_hostile_strings_in_every_string_field_of_every_command_are_stored_verbatim_or_refused(
    stocked: Api, target: tuple[str, tuple[str | int, ...]], text: str
) -> None:
    type_name, path = target
    head = await stocked.head()

    response = await post_json(stocked, type_name, with_value(VALID[type_name], path, text))

    await check_answer(stocked, response, head, {200, 409, 422})
    if response.status_code == 200 and path in {("name",), ("customer_id",)}:
        first = response.json()["events"][0]["data"]
        assert first[path[0]] == text  # stored as sent, not interpreted
    if response.status_code == 200 and path == ("name",):
        search = await stocked.query("SearchProducts", response.json()["position"], text=text)
        assert search.status_code == 200, search.text  # the hostile name, indexed, then searched for


@HOSTILE
@given(target=st.sampled_from(QUERY_FIELDS), text=strings)
async def test_hostile_strings_in_every_query_parameter_are_answered_without_a_500(
    stocked: Api, target: tuple[str, str], text: str
) -> None:
    type_name, field = target
    # Lone surrogates cannot be UTF-8: send their surrogatepass bytes, as a broken client would.
    query = urlencode({field: text.encode("utf-8", "surrogatepass")})
    head = await stocked.head()

    response = await stocked.client.get(f"/queries/{type_name}?{query}")

    await check_answer(stocked, response, head, {200, 404, 422})


@HOSTILE
@given(
    lines=st.lists(
        st.tuples(st.sampled_from(["A-1", "B-2", "Z-9"]), st.integers(min_value=1, max_value=12)),
        min_size=1,
        max_size=3,
        unique_by=lambda line: line[0],
    ),
    number=st.integers(min_value=0, max_value=10**6),
)
async def test_an_order_is_written_whole_or_not_at_all_and_stock_never_goes_negative(
    stocked: Api, lines: list[tuple[str, int]], number: int
) -> None:
    head = await stocked.head()

    response = await stocked.command("PlaceOrder", order(f"o-{number}", "c-1", *lines))

    await check_answer(stocked, response, head, {200, 409})
    if response.status_code == 200:
        assert len(response.json()["events"]) == 1 + len(lines)
    position = await stocked.head()
    for sku in ("A-1", "B-2"):
        stock = await stocked.query("StockLevel", position, sku=sku)
        assert stock.json()["available"] >= 0


# -- the extremes, one by one --------------------------------------------------------------------


DEPTH = 100_000
EXTREMES = {
    "100k-nested-lists": b"[" * DEPTH + b"]" * DEPTH,
    "100k-nested-objects": b'{"a":' * DEPTH + b"1" + b"}" * DEPTH,
    "100k-nested-in-a-field": b'{"sku": "A-1", "quantity": ' + b"[" * DEPTH + b"]" * DEPTH + b"}",
    "900-nested-in-a-field": b'{"sku": "A-1", "quantity": ' + b"[" * 900 + b"]" * 900 + b"}",
    "100k-unknown-fields": json.dumps({f"field{i}": i for i in range(100_000)}).encode(),
    "200k-element-list": b'{"sku": "A-1", "quantity": [' + b",".join([b"0"] * 200_000) + b"]}",
    "almost-1-MiB-string": json.dumps({"sku": "A-1", "quantity": "9" * 1_000_000}).encode(),
    "4301-digit-number": b'{"sku": "A-1", "quantity": ' + b"9" * 4301 + b"}",
    "1e400": b'{"sku": "A-1", "quantity": 1e400}',
    "NaN": b'{"sku": "A-1", "quantity": NaN}',
    "1-MiB-of-whitespace": b" " * (1024 * 1024),
    "lone-surrogate-key": b'{"\\ud800": 1, "sku": "A-1", "quantity": 1}',
    "nul-in-key": b'{"\\u0000": 1, "sku": "A-1", "quantity": 1}',
    "duplicate-keys": b'{"sku": "A-1", "sku": "B-2", "quantity": 1, "quantity": "x"}',
}
LENIENT = {  # RFC 8259 lets a parser accept these; json.loads does, and either answer is fine
    "utf-8-bom": b"\xef\xbb\xbf" + b'{"sku": "A-1", "quantity": 1}',
    "utf-16": '{"sku": "A-1", "quantity": 1}'.encode("utf-16"),
}


@pytest.mark.parametrize("body", [*EXTREMES.values(), *LENIENT.values()], ids=[*EXTREMES, *LENIENT])
async def test_huge_deep_or_odd_json_is_refused_cleanly_and_the_app_keeps_serving(stocked: Api, body: bytes) -> None:
    head = await stocked.head()

    response = await stocked.client.post("/commands/ReceiveStock", content=body, headers=JSON_HEADERS)

    await check_answer(stocked, response, head, {400, 413, 422} | ({200} if body in LENIENT.values() else set()))
    after = await stocked.ok("ReceiveStock", {"sku": "A-1", "quantity": 1})
    assert after["position"] == await stocked.head()


async def test_a_body_with_thousands_of_bad_fields_gets_an_answer_smaller_than_itself(stocked: Api) -> None:
    body = json.dumps({"sku": "A-1", "quantity": 1, **{f"field{i}": i for i in range(5_000)}}).encode()

    response = await stocked.client.post("/commands/ReceiveStock", content=body, headers=JSON_HEADERS)

    assert response.status_code == 422
    errors = response.json()["errors"]
    assert [e["field"] for e in errors[:3]] == ["field0", "field1", "field2"]
    assert len(errors) == 101
    assert errors[-1] == {"field": "(more)", "message": "4900 more errors not listed"}
    assert len(response.content) < len(body)


async def test_a_null_character_anywhere_is_422_naming_the_field(api: Api) -> None:
    response = await api.client.post(
        "/commands/PlaceOrder",
        json={"order_id": "o-1", "customer_id": "c\x00", "lines": [{"sku": "A\x00-1", "quantity": 1}]},
    )

    await check_answer(api, response, 0, {422})
    assert [(e["field"], e["message"]) for e in response.json()["errors"]] == [
        ("customer_id", "Null characters are not allowed"),
        ("lines[0].sku", "Null characters are not allowed"),
    ]


async def test_a_field_name_no_utf_8_can_encode_is_quoted_back_escaped_not_answered_with_a_500(api: Api) -> None:
    body = b'{"sku": "A-1", "quantity": 1, "\\ud800\\u0000": 1}'

    response = await api.client.post("/commands/ReceiveStock", content=body, headers=JSON_HEADERS)

    await check_answer(api, response, 0, {422})
    assert response.json()["errors"] == [{"field": "\ud800\x00", "message": "Null characters are not allowed"}]


UNICODE_NAMES = {  # NUL is refused at the boundary (see above): PostgreSQL text cannot hold it
    "rtl-override": "\u202eelppA\u202c",
    "rtl-marks": "\u200fتفاح\u200f",
    "emoji": "Apple 🍎 pie 🥧",
    "zero-width-joiner": "👩‍👩‍👧",
    "combining": "Cafe\u0301",
    "bom": "\ufeffApple",
    "astral": "𝔄𝔭𝔭𝔩𝔢",
}


@pytest.mark.parametrize("name", UNICODE_NAMES.values(), ids=UNICODE_NAMES.keys())
async def test_unicode_edge_cases_in_a_name_are_stored_and_read_back_exactly(api: Api, name: str) -> None:
    added = await api.ok("AddProduct", {"sku": "U-1", "name": name, "price": "1.00"})

    listed = await api.query("SearchProducts", added["position"])

    assert added["events"][0]["data"]["name"] == name
    assert listed.json()["products"] == [{"sku": "U-1", "name": name, "price": "1.00"}]


@pytest.mark.parametrize("escaped", ["\\ud800", "\\udfff", "a\\ud83d", "\\udc00\\ud800"])
async def test_a_lone_surrogate_escaped_in_json_is_422_naming_the_field(api: Api, escaped: str) -> None:
    body = f'{{"sku": "U-1", "name": "{escaped}", "price": "1.00"}}'.encode()

    response = await api.client.post("/commands/AddProduct", content=body, headers=JSON_HEADERS)

    await check_answer(api, response, 0, {422})
    assert [e["field"] for e in response.json()["errors"]] == ["name"]


@pytest.mark.parametrize(
    "path",
    [
        "/commands/..%2F..%2Fetc%2Fpasswd",
        "/commands/%2e%2e",
        "/commands/%00",
        "/commands/Add%00Product",
        "/commands/" + quote("'; DROP TABLE events; --"),
        "/commands/%ED%A0%80",
    ],
)
async def test_hostile_command_paths_are_404_problems(api: Api, path: str) -> None:
    response = await api.client.post(path, json={"sku": "A-1", "name": "Apple", "price": "1"})

    await check_answer(api, response, 0, {404})
    assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    "path",
    [
        "/queries/..%2F..%2Fetc%2Fpasswd",
        "/queries/%00",
        "/queries/" + quote("StockLevel' OR '1'='1"),
        "/queries/%FF%FE",
        "/queries/StockLevel?sku=%ED%A0%80",
        "/queries/StockLevel?sku=%FF",
        "/queries/StockLevel?%00=1",
        "/queries/SearchProducts?text=%00%FF%ED%A0%80",
    ],
)
async def test_hostile_query_paths_and_parameters_are_answered_without_a_500(api: Api, path: str) -> None:
    response = await api.client.get(path)

    await check_answer(api, response, 0, {200, 404, 422})
