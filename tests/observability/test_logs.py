"""A log line written while a command is handled names the command, its conversation and its span."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.monolith.handlers import receive_stock
from tests.monolith.messages import ReceiveStock
from tests.observability.conftest import Spans, span_id
from twofold import Runtime, Service
from twofold.logs import JsonFormatter
from twofold.messages import Envelope
from twofold.store.sqlite import SQLiteEventStore


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """What twofold's loggers write, as the JSON format writes it: formatted when logged, in its context."""
    lines = io.StringIO()
    handler = logging.StreamHandler(lines)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("twofold")
    logger.addHandler(handler)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)


async def test_a_refused_command_logs_one_json_line_with_its_ids_and_its_span(
    tmp_path: Path, spans: Spans, json_lines: io.StringIO
) -> None:
    service = Service("inventory", commands={ReceiveStock: receive_stock})
    envelope = Envelope(
        ReceiveStock(sku="Z-9", quantity=1), message_id="c-9", correlation_id="r-1", causation_id="reaction-1"
    )
    async with Runtime(service, store=SQLiteEventStore(tmp_path / "events.db")) as runtime:
        await runtime.receive(envelope)  # unknown sku: refused, and logged, as a broker's delivery would be

    (line,) = [json.loads(text) for text in json_lines.getvalue().splitlines()]
    assert (line["level"], line["logger"]) == ("WARNING", "twofold.runtime")
    assert "inventory refused ReceiveStock c-9: Unknown sku Z-9" in line["message"]
    (command,) = spans.named("twofold.command ReceiveStock")
    assert command.attributes is not None
    assert command.attributes["twofold.outcome"] == "rejected"
    assert command.context is not None
    assert {k: line[k] for k in ("service", "command_id", "correlation_id", "causation_id")} == {
        "service": "inventory",
        "command_id": "c-9",
        "correlation_id": "r-1",
        "causation_id": "reaction-1",
    }
    assert (line["trace_id"], line["span_id"]) == (f"{command.context.trace_id:032x}", f"{span_id(command):016x}")
