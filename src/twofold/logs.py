"""Log lines as JSON objects, one per line, with the ids of what was being handled.

    TWOFOLD_LOG_FORMAT=json twofold serve examples.shop:shop
    {"time": "2026-11-26T15:07:29.123Z", "level": "WARNING", "logger": "twofold.runtime",
     "message": "catalog refused catalog.PriceOrder …", "service": "catalog",
     "command_id": "…", "correlation_id": "…", "causation_id": "…",
     "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7"}

The ids come from :func:`twofold.observability.log_context`, set where a command, a saga
reaction or an import is handled, and from the current span; a field with no value is left out.
Plain text stays the default (``TWOFOLD_LOG_FORMAT=text``).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime

from opentelemetry import trace

from twofold.errors import ConfigurationError
from twofold.observability import log_context

__all__ = ["FORMATS", "JsonFormatter", "configure_logging", "log_format"]

FORMATS = ("text", "json")


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, then the ids of the work at hand."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **log_context(),
        }
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            line["trace_id"], line["span_id"] = f"{span.trace_id:032x}", f"{span.span_id:016x}"
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def log_format(environ: Mapping[str, str]) -> str:
    """``text`` or ``json``, from ``TWOFOLD_LOG_FORMAT``; :class:`ConfigurationError` for anything else."""
    chosen = environ.get("TWOFOLD_LOG_FORMAT", "text").strip().lower() or "text"
    if chosen not in FORMATS:
        raise ConfigurationError(f"TWOFOLD_LOG_FORMAT={chosen!r} is not a log format; set it to text or json")
    return chosen


def configure_logging(environ: Mapping[str, str]) -> str:
    """With ``json``, send every logger's records (uvicorn's too) to stderr as JSON lines at INFO; return the format.

    With ``text`` nothing changes: uvicorn and Python's defaults apply.
    """
    chosen = log_format(environ)
    if chosen == "json":
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        root = logging.getLogger()
        root.handlers[:] = [handler]
        root.setLevel(logging.INFO)
    return chosen
