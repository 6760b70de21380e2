"""JSON for stored events: compact text going in, and a short path back out for that text.

``json.dumps`` with options builds a new encoder on every call, and ``json.loads`` checks its
input's type and skips whitespace before it parses; a store reading back the compact text it
wrote needs neither, and reads and writes are where a store spends its time.
"""

from __future__ import annotations

import json
from typing import Any

_ENCODER = json.JSONEncoder(separators=(",", ":"))
_DECODER = json.JSONDecoder()


def dumps(value: Any) -> str:
    """``json.dumps(value, separators=(",", ":"))``, without building an encoder each time."""
    return _ENCODER.encode(value)


def loads(text: str) -> Any:
    """``json.loads(text)``; any text other than one compact JSON value takes json.loads's own path."""
    try:
        value, end = _DECODER.raw_decode(text)
    except json.JSONDecodeError:
        return json.loads(text)  # leading whitespace, or not JSON at all: its own error
    return value if end == len(text) else json.loads(text)
