"""Stored events as CloudEvents 1.0 (structured JSON) and their NATS subjects: pure functions, no server."""

from __future__ import annotations

import ast
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twofold.broker.cloudevents import InvalidCloudEvent, decode, encode, to_message
from twofold.broker.subjects import events_filter, events_stream, events_subject, subject_token
from twofold.errors import BrokerError
from twofold.store import StoredEvent

BROKER = Path(__file__).resolve().parents[2] / "src" / "twofold" / "broker"
RECORDED = datetime(2026, 11, 26, 15, 7, 29, 123456, tzinfo=UTC)


def stored(**changes: Any) -> StoredEvent:
    fields: dict[str, Any] = {
        "position": 42,
        "stream_id": "order-7f3c",
        "version": 3,
        "event_id": "0c6a6e1e-0000-4000-8000-000000000001",
        "type": "shop.OrderPlaced",
        "schema_version": 2,
        "data": {"order_id": "7f3c", "lines": [{"sku": "A-1", "quantity": 2}]},
        "metadata": {
            "command_id": "cmd-1",
            "command_type": "shop.PlaceOrder",
            "correlation_id": "corr-1",
            "causation_id": "cmd-1",
            "principal": "alice",
            "tenant": None,
        },
        "recorded_at": RECORDED,
    }
    return StoredEvent(**{**fields, **changes})


def test_a_stored_event_becomes_a_structured_cloudevent_with_named_extensions() -> None:
    message = json.loads(encode(stored(), "shop"))
    assert message == {
        "specversion": "1.0",
        "id": "0c6a6e1e-0000-4000-8000-000000000001",
        "source": "shop",
        "type": "shop.OrderPlaced",
        "subject": "order-7f3c",
        "time": "2026-11-26T15:07:29.123456Z",
        "datacontenttype": "application/json",
        "data": {"order_id": "7f3c", "lines": [{"sku": "A-1", "quantity": 2}]},
        "position": 42,
        "streamversion": 3,
        "schemaversion": 2,
        "commandid": "cmd-1",
        "commandtype": "shop.PlaceOrder",
        "correlationid": "corr-1",
        "causationid": "cmd-1",
        "principal": "alice",
    }


def test_extension_names_are_lowercase_letters_and_digits_of_at_most_20_characters() -> None:
    message = to_message(stored(metadata={"command_id": "c", "custom": 1, "traceparent": "00-ab-cd-01"}), "shop")
    core = {"specversion", "id", "source", "type", "subject", "time", "datacontenttype", "data"}
    for name in set(message) - core:
        assert name.isalnum(), name
        assert name.islower(), name
        assert len(name) <= 20, name


def test_a_decoded_message_is_the_stored_event_without_its_null_metadata() -> None:
    decoded = decode(encode(stored(), "shop"))
    assert decoded.source == "shop"
    metadata = {k: v for k, v in stored().metadata.items() if v is not None}
    assert decoded.event == stored(metadata=metadata)


def test_metadata_without_an_attribute_of_its_own_travels_in_twofoldmetadata() -> None:
    metadata = {"command_id": 7, "retries": 2, "trace": {"span": "x"}}
    message = to_message(stored(metadata=metadata), "shop")
    assert json.loads(message["twofoldmetadata"]) == metadata
    assert "commandid" not in message
    assert decode(message).event.metadata == metadata


def test_time_in_another_zone_is_written_in_utc() -> None:
    local = RECORDED.astimezone(timezone(timedelta(hours=-5)))
    assert to_message(stored(recorded_at=local), "shop")["time"] == "2026-11-26T15:07:29.123456Z"


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"specversion": "0.3"}, r"attribute 'specversion' must be '1.0' \(got '0.3'\)"),
        ({"id": ""}, r"attribute 'id' must be a non-empty string \(got '' that is a str\)"),
        ({"source": None}, r"attribute 'source' must be a non-empty string \(got nothing\)"),
        ({"subject": 7}, r"attribute 'subject' must be a non-empty string \(got 7 that is a int\)"),
        ({"time": "yesterday"}, r"attribute 'time' must be an RFC 3339 timestamp \(got 'yesterday'\)"),
        ({"time": "2026-11-26T15:07:29"}, r"attribute 'time' must have a time zone offset or Z"),
        ({"datacontenttype": "text/plain"}, r"attribute 'datacontenttype' must be 'application/json'"),
        ({"data": [1, 2]}, r"attribute 'data' must be a JSON object \(got \[1, 2\] that is a list\)"),
        ({"position": "42"}, r"attribute 'position' must be an integer of 1 or more \(got '42' that is a str\)"),
        ({"streamversion": 0}, r"attribute 'streamversion' must be an integer of 1 or more \(got 0 that is a int\)"),
        ({"schemaversion": True}, r"attribute 'schemaversion' must be an integer of 1 or more"),
        ({"commandid": 5}, r"attribute 'commandid' must be a string \(got 5 that is a int\)"),
        ({"twofoldmetadata": "[1]"}, r"attribute 'twofoldmetadata' must be a JSON object in a string"),
        ({"twofoldmetadata": "{no"}, r"attribute 'twofoldmetadata' must be a JSON object in a string"),
    ],
)
def test_decoding_names_the_attribute_that_is_wrong(change: dict[str, Any], error: str) -> None:
    message = {**to_message(stored(), "shop"), **change}
    with pytest.raises(InvalidCloudEvent, match=error) as raised:
        decode(json.dumps(message).encode())
    assert isinstance(raised.value, BrokerError)
    assert raised.value.attribute == next(iter(change))


def test_decoding_what_is_not_a_json_object_says_so() -> None:
    with pytest.raises(InvalidCloudEvent, match=r"attribute '\(message\)' is not JSON"):
        decode(b"\xff not json")
    with pytest.raises(InvalidCloudEvent, match=r"attribute '\(message\)' must be a JSON object"):
        decode(b"[1]")


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    # any text: JSON and CloudEvents carry every code point but lone surrogates
    | st.text(st.characters(exclude_categories=["Cs"]), max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
texts = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=30)
metadata_values = st.one_of(texts, st.integers(), st.booleans(), st.lists(st.integers(), max_size=3))
metadata_keys = st.sampled_from(["command_id", "command_type", "correlation_id", "causation_id", "principal"])
stored_events = st.builds(
    StoredEvent,
    position=st.integers(1, 2**62),
    stream_id=texts,
    version=st.integers(1, 2**31),
    event_id=texts,
    type=texts,
    schema_version=st.integers(1, 1000),
    data=st.dictionaries(st.text(max_size=10), json_values, max_size=5),
    metadata=st.dictionaries(metadata_keys | st.text(max_size=10), metadata_values, max_size=6),
    recorded_at=st.datetimes(timezones=st.just(UTC)),
)


@settings(max_examples=300, deadline=None)
@given(event=stored_events, source=texts)
def test_any_stored_event_survives_the_round_trip_through_a_cloudevent(event: StoredEvent, source: str) -> None:
    decoded = decode(encode(event, source))
    assert decoded.source == source
    assert decoded.event == event


@settings(max_examples=300, deadline=None)
@given(service=texts, category=st.text(max_size=20), event_type=st.text(max_size=40))
def test_every_subject_is_valid_and_within_the_service_s_filter(service: str, category: str, event_type: str) -> None:
    subject = events_subject(service, category, event_type)
    tokens = subject.split(".")
    assert all(tokens), subject  # no empty token
    assert all(t.isascii() and t.isprintable() and " " not in t and t not in ("*", ">") for t in tokens)
    assert subject.startswith(events_filter(service)[:-1])
    assert len(tokens) == 4 + len(event_type.split("."))


@given(first=st.text(max_size=12), second=st.text(max_size=12))
def test_different_names_never_share_a_token(first: str, second: str) -> None:
    assert (subject_token(first) == subject_token(second)) == (first == second)


def test_subjects_and_stream_names_read_as_documented() -> None:
    assert events_subject("shop", "order", "shop.OrderPlaced") == "twofold.shop.events.order.shop.OrderPlaced"
    assert events_subject("shop", "order", "Order placed!") == "twofold.shop.events.order.Order%20placed%21"
    assert events_subject("shop", "a.b", "T") == "twofold.shop.events.a%2Eb.T"
    assert events_subject("shop", "", "x..y") == "twofold.shop.events.%.x.%.y"
    assert events_filter("my shop") == "twofold.my%20shop.events.>"
    assert events_stream("shop") == "TWOFOLD_SHOP_EVENTS"
    assert events_stream("my.shop v2") == "TWOFOLD_MY_SHOP_V2_EVENTS"


def imports_of(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_the_wire_format_imports_no_broker_client_and_the_broker_no_backend() -> None:
    for path in sorted(BROKER.glob("*.py")):
        imported = imports_of(path)
        backends = {m for m in imported if m.startswith(("twofold.store.", "twofold.readmodels."))}
        assert backends <= {"twofold.store._follow"}, f"{path.name} imports {backends}"
        wire_format = ("__init__.py", "cloudevents.py", "command_messages.py", "subjects.py", "inprocess.py")
        if path.name in wire_format:  # the wire format, and the in-process transport
            assert not {m for m in imported if m.split(".")[0] == "nats"}, f"{path.name} imports nats"
