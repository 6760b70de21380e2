"""Commands as CloudEvents 1.0 in structured JSON mode: what goes on a service's command work queue.

    >>> encode_command(Envelope(PlaceOrder(order_id="o-1", ...), message_id="c-1"), source="shop")
    b'{"specversion":"1.0","id":"c-1","source":"shop","type":"PlaceOrder",
       "time":"2026-11-26T15:07:29.123456Z","datacontenttype":"application/json",
       "data":{"order_id":"o-1",…},"correlationid":"c-1"}'
    >>> decode_command(payload)
    QueuedCommand(command_id='c-1', type='PlaceOrder', data={'order_id': 'o-1', …}, correlation_id='c-1', …)

``id`` is the command id (also the message's ``Nats-Msg-Id``), ``type`` the command's type name,
``source`` who sent it (the command API's or a saga's service) and ``data`` the command's fields.
The envelope's other fields travel as the same extension attributes events use: ``correlationid``,
``causationid``, ``principal``, ``tenant``, and ``traceparent`` and ``tracestate`` (the W3C trace
context of the sender's span, CloudEvents' Distributed Tracing extension), left out when unset.
Only the receiving service turns ``data`` into its command class, so a sender needs nothing but
the type name and the JSON.
Pure Python: no broker client is imported here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from twofold.broker.cloudevents import (
    DATA_CONTENT_TYPE,
    SPEC_VERSION,
    InvalidCloudEvent,
    _describe,
    _format_time,
    _parse,
    _parse_time,
)
from twofold.messages import Command, Envelope

__all__ = ["QueuedCommand", "decode_command", "encode_command"]

_ENVELOPE_ATTRIBUTES = {
    "correlation_id": "correlationid",
    "causation_id": "causationid",
    "principal": "principal",
    "tenant": "tenant",
    "traceparent": "traceparent",
    "tracestate": "tracestate",
}


@dataclass(frozen=True, slots=True)
class QueuedCommand:
    """A command read off the queue, before its service turns ``data`` into the command's class."""

    command_id: str
    type: str
    data: dict[str, Any]
    source: str
    time: datetime
    correlation_id: str | None = None
    causation_id: str | None = None
    principal: str | None = None
    tenant: str | None = None
    traceparent: str | None = None
    tracestate: str | None = None

    def envelope_fields(self) -> dict[str, str | None]:
        """The keyword arguments of :meth:`twofold.Runtime.execute` other than the command."""
        return {
            "command_id": self.command_id,
            "correlation_id": self.correlation_id,
            "causation_id": self.causation_id,
            "principal": self.principal,
            "tenant": self.tenant,
            "traceparent": self.traceparent,
            "tracestate": self.tracestate,
        }


def encode_command(envelope: Envelope[Command], source: str) -> bytes:
    """The CloudEvent for a command in its envelope, as compact UTF-8 JSON."""
    message: dict[str, Any] = {
        "specversion": SPEC_VERSION,
        "id": envelope.message_id,
        "source": source,
        "type": envelope.type_name,
        "time": _format_time(envelope.time),
        "datacontenttype": DATA_CONTENT_TYPE,
        "data": envelope.message.model_dump(mode="json"),
    }
    for field, attribute in _ENVELOPE_ATTRIBUTES.items():
        value = getattr(envelope, field)
        if value is not None:
            message[attribute] = value
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def decode_command(payload: bytes | str | Mapping[str, Any]) -> QueuedCommand:
    """Read a queued command back; :class:`InvalidCloudEvent`, naming the attribute, for anything else."""
    message = _parse(payload)
    if message.get("specversion") != SPEC_VERSION:
        raise InvalidCloudEvent("specversion", f"must be {SPEC_VERSION!r} (got {message.get('specversion')!r})")
    for name in ("id", "source", "type", "time"):
        value = message.get(name)
        if not isinstance(value, str) or not value:
            raise InvalidCloudEvent(name, f"must be a non-empty string (got {_describe(value)})")
    content_type = message.get("datacontenttype", DATA_CONTENT_TYPE)
    if content_type != DATA_CONTENT_TYPE:
        raise InvalidCloudEvent("datacontenttype", f"must be {DATA_CONTENT_TYPE!r} (got {content_type!r})")
    data = message.get("data")
    if not isinstance(data, dict):
        raise InvalidCloudEvent("data", f"must be a JSON object (got {_describe(data)})")
    envelope: dict[str, str | None] = {}
    for field, attribute in _ENVELOPE_ATTRIBUTES.items():
        value = message.get(attribute)
        if value is not None and not isinstance(value, str):
            raise InvalidCloudEvent(attribute, f"must be a string (got {_describe(value)})")
        envelope[field] = value
    return QueuedCommand(
        command_id=message["id"],
        type=message["type"],
        data=data,
        source=message["source"],
        time=_parse_time(message["time"]),
        **envelope,
    )
