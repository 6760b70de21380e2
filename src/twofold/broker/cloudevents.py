"""Stored events as CloudEvents 1.0 in structured JSON mode: what the relay puts on the wire.

    >>> encode(event, source="shop")
    b'{"specversion":"1.0","id":"0c6a…","source":"shop","type":"shop.OrderPlaced",
       "subject":"order-7f3c","time":"2026-11-26T15:07:29.123456Z",
       "datacontenttype":"application/json","data":{"order_id":"7f3c",…},
       "position":42,"streamversion":1,"schemaversion":1,"commandid":"…","correlationid":"…",…}'
    >>> decode(payload)
    DecodedEvent(source='shop', event=StoredEvent(position=42, stream_id='order-7f3c', …))

Any CloudEvents client reads these messages; ``decode`` gives back the very ``StoredEvent``.
twofold's fields that CloudEvents has no attribute for travel as extension attributes (lowercase
letters and digits, at most 20 characters, as the specification asks):

| attribute | holds | type |
| --- | --- | --- |
| ``position`` | the event's global position in its service's store | Integer |
| ``streamversion`` | its version within its stream (``subject``) | Integer |
| ``schemaversion`` | the schema version of ``type`` it was written at | Integer |
| ``commandid``, ``commandtype`` | the command that appended it | String |
| ``correlationid``, ``causationid`` | the conversation it belongs to, and what caused it | String |
| ``principal``, ``tenant`` | who sent the command, and for which tenant | String |
| ``traceparent``, ``tracestate`` | W3C trace context (the Distributed Tracing extension) | String |
| ``twofoldmetadata`` | any other metadata, as a JSON object in a string | String |

A metadata value of ``None`` is left out, since CloudEvents treats a null attribute as absent.
CloudEvents' Integer is 32-bit; positions past 2³¹ − 1 are still written as JSON integers.
Pure Python: no broker client is imported here.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from twofold.errors import BrokerError
from twofold.store import StoredEvent

__all__ = ["CONTENT_TYPE", "METADATA_ATTRIBUTES", "DecodedEvent", "InvalidCloudEvent", "decode", "encode", "to_message"]

SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/cloudevents+json"  # the content type of a structured-mode message
DATA_CONTENT_TYPE = "application/json"

# metadata key → extension attribute; string values only (anything else goes in ``twofoldmetadata``)
METADATA_ATTRIBUTES: Mapping[str, str] = {
    "command_id": "commandid",
    "command_type": "commandtype",
    "correlation_id": "correlationid",
    "causation_id": "causationid",
    "principal": "principal",
    "tenant": "tenant",
    "traceparent": "traceparent",
    "tracestate": "tracestate",
}
OTHER_METADATA = "twofoldmetadata"
_REQUIRED_STRINGS = ("id", "source", "type", "subject", "time")
_POSITIVE_INTEGERS = {"position": "position", "streamversion": "version", "schemaversion": "schema_version"}


class InvalidCloudEvent(BrokerError):
    """A message is not a CloudEvent that twofold can read back as a stored event."""

    def __init__(self, attribute: str, reason: str) -> None:
        self.attribute, self.reason = attribute, reason
        super().__init__(f"Invalid CloudEvent: attribute {attribute!r} {reason}")


@dataclass(frozen=True, slots=True)
class DecodedEvent:
    """A message read back: the service it came from (``source``) and the event as it was stored."""

    source: str
    event: StoredEvent


def to_message(event: StoredEvent, source: str) -> dict[str, Any]:
    """The CloudEvent for ``event``, as a JSON-ready dict, ``source`` being the service's name."""
    message: dict[str, Any] = {
        "specversion": SPEC_VERSION,
        "id": event.event_id,
        "source": source,
        "type": event.type,
        "subject": event.stream_id,
        "time": _format_time(event.recorded_at),
        "datacontenttype": DATA_CONTENT_TYPE,
        "data": event.data,
        "position": event.position,
        "streamversion": event.version,
        "schemaversion": event.schema_version,
    }
    other: dict[str, Any] = {}
    for key, value in event.metadata.items():
        if value is None:
            continue
        attribute = METADATA_ATTRIBUTES.get(key)
        if attribute is not None and isinstance(value, str):
            message[attribute] = value
        else:
            other[key] = value
    if other:
        message[OTHER_METADATA] = json.dumps(other, separators=(",", ":"), allow_nan=False)
    return message


def encode(event: StoredEvent, source: str) -> bytes:
    """The CloudEvent for ``event`` as compact UTF-8 JSON, ready to publish."""
    return json.dumps(to_message(event, source), separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def decode(payload: bytes | str | Mapping[str, Any]) -> DecodedEvent:
    """Read a structured-mode CloudEvent back into the event it was made from.

    Raises :class:`InvalidCloudEvent`, naming the attribute, for anything that is not such a message.
    """
    message = _parse(payload)
    if message.get("specversion") != SPEC_VERSION:
        raise InvalidCloudEvent("specversion", f"must be {SPEC_VERSION!r} (got {message.get('specversion')!r})")
    for name in _REQUIRED_STRINGS:
        value = message.get(name)
        if not isinstance(value, str) or not value:
            raise InvalidCloudEvent(name, f"must be a non-empty string (got {_describe(value)})")
    content_type = message.get("datacontenttype", DATA_CONTENT_TYPE)
    if content_type != DATA_CONTENT_TYPE:
        raise InvalidCloudEvent("datacontenttype", f"must be {DATA_CONTENT_TYPE!r} (got {content_type!r})")
    data = message.get("data")
    if not isinstance(data, dict):
        raise InvalidCloudEvent("data", f"must be a JSON object (got {_describe(data)})")
    numbers = {field: _positive_integer(message, name) for name, field in _POSITIVE_INTEGERS.items()}
    event = StoredEvent(
        stream_id=message["subject"],
        event_id=message["id"],
        type=message["type"],
        data=data,
        metadata=_metadata(message),
        recorded_at=_parse_time(message["time"]),
        **numbers,
    )
    return DecodedEvent(message["source"], event)


def _parse(payload: bytes | str | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(payload, Mapping):
        return payload
    try:
        message = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidCloudEvent("(message)", f"is not JSON: {exc}") from exc
    if not isinstance(message, dict):
        raise InvalidCloudEvent("(message)", f"must be a JSON object (got {_describe(message)})")
    return message


def _positive_integer(message: Mapping[str, Any], name: str) -> int:
    value = message.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidCloudEvent(name, f"must be an integer of 1 or more (got {_describe(value)})")
    return value


def _metadata(message: Mapping[str, Any]) -> dict[str, Any]:
    metadata: dict[str, Any] = {}
    raw = message.get(OTHER_METADATA)
    if raw is not None:
        other = None
        if isinstance(raw, str):
            with contextlib.suppress(ValueError):
                other = json.loads(raw)
        if not isinstance(other, dict):
            raise InvalidCloudEvent(OTHER_METADATA, f"must be a JSON object in a string (got {_describe(raw)})")
        metadata.update(other)
    for key, attribute in METADATA_ATTRIBUTES.items():
        value = message.get(attribute)
        if value is None:
            continue
        if not isinstance(value, str):
            raise InvalidCloudEvent(attribute, f"must be a string (got {_describe(value)})")
        metadata[key] = value
    return metadata


def _format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with microseconds: ``2026-11-26T15:07:29.123456Z``."""
    utc = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return utc.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _parse_time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise InvalidCloudEvent("time", f"must be an RFC 3339 timestamp (got {text!r})") from exc
    if moment.tzinfo is None:
        raise InvalidCloudEvent("time", f"must have a time zone offset or Z (got {text!r})")
    return moment.astimezone(UTC)


def _describe(value: object) -> str:
    return "nothing" if value is None else f"{value!r} that is a {type(value).__name__}"
