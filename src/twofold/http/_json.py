"""JSON shapes of what the HTTP APIs return, shared by the command and query routes."""

from __future__ import annotations

import json
import re
from typing import Any

from fastapi import Request

from twofold.commands import CommandResult
from twofold.http.problems import BadRequest, UnsupportedMediaType
from twofold.store import StoredEvent

_POSITION = re.compile(r"^[0-9]{1,18}$")


def event_json(event: StoredEvent) -> dict[str, Any]:
    return {
        "position": event.position,
        "stream_id": event.stream_id,
        "version": event.version,
        "event_id": event.event_id,
        "type": event.type,
        "schema_version": event.schema_version,
        "data": event.data,
        "metadata": event.metadata,
        "recorded_at": event.recorded_at.isoformat(),
    }


def result_json(result: CommandResult) -> dict[str, Any]:
    return {
        "command_id": result.command_id,
        "stream_id": result.stream_id,
        "version": result.version,
        "position": result.position,
        "events": [event_json(e) for e in result.events],
    }


async def json_body(request: Request) -> Any:
    """The request's JSON body: 415 unless it says it is JSON, 400 unless it parses."""
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise UnsupportedMediaType(
            f"Send the command as JSON with Content-Type: application/json (got {media_type or 'none'!r})"
        )
    body = await request.body()
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"Body is not valid JSON: {exc}") from None
    except RecursionError:
        raise BadRequest("Body is nested too deeply") from None
    except ValueError:  # an integer longer than Python converts (sys.get_int_max_str_digits(), 4300)
        raise BadRequest("Body has a number with too many digits") from None


def min_position(request: Request) -> int | None:
    """The ``X-Min-Position`` header as a position, or ``None``; 400 when it is not one."""
    raw = request.headers.get("x-min-position")
    if raw is None:
        return None
    if not _POSITION.match(raw.strip()):
        raise BadRequest("X-Min-Position must be a whole number of at most 18 digits")
    return int(raw)
