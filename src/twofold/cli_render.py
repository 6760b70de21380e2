"""How the inspection commands show events and traces: rich tables and trees, and JSON for scripts."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

from twofold.inspection import Trace, TracedCommand, TracedEvent
from twofold.saga_runner import REACTED
from twofold.store import StoredEvent, StreamSummary

__all__ = ["event_json", "event_line", "moment", "streams_table", "summary_json", "trace_tree"]


def event_json(event: StoredEvent) -> dict[str, Any]:
    """A stored event as plain JSON, every field included."""
    return {
        "position": event.position,
        "stream_id": event.stream_id,
        "version": event.version,
        "event_id": event.event_id,
        "type": event.type,
        "schema_version": event.schema_version,
        "data": dict(event.data),
        "metadata": dict(event.metadata),
        "recorded_at": event.recorded_at.isoformat(),
    }


def summary_json(summary: StreamSummary) -> dict[str, Any]:
    """A stream's summary as plain JSON, its category included."""
    return {
        "stream_id": summary.stream_id,
        "category": summary.category,
        "version": summary.version,
        "first_position": summary.first_position,
        "last_position": summary.last_position,
        "last_recorded_at": summary.last_recorded_at.isoformat(),
    }


def moment(at: datetime) -> str:
    """``2026-11-26 19:47:27.391``: a recorded time to the millisecond, in UTC as stored."""
    return at.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def streams_table(page: Sequence[StreamSummary]) -> Table:
    table = Table("stream", "version", "last position", "last event at")
    for summary in page:
        table.add_row(
            escape(summary.stream_id),
            str(summary.version),
            str(summary.last_position),
            moment(summary.last_recorded_at),
        )
    return table


def event_line(event: StoredEvent) -> str:
    """One line of ``events tail``: position, stream@version, type, time and data."""
    return (
        f"[bold]{event.position}[/]  {escape(event.stream_id)}@{event.version}  [cyan]{escape(event.type)}[/]"
        f"  {moment(event.recorded_at)}  {escape(json.dumps(dict(event.data)))}"
    )


def trace_tree(trace: Trace) -> Tree:
    """``correlation …`` with a branch per command and event, each under what caused it."""
    tree = Tree(f"correlation [bold]{escape(trace.correlation_id)}[/]")
    for root in trace.roots:
        _add(tree, root)
    return tree


def _add(branch: Tree, node: TracedEvent | TracedCommand) -> None:
    child = branch.add(_command_label(node) if isinstance(node, TracedCommand) else _event_label(node))
    for grandchild in node.children:
        _add(child, grandchild)


def _command_label(command: TracedCommand) -> str:
    by = f" by {escape(command.principal)}" if command.principal else ""
    ran = "" if command.children else " [red](recorded no events)[/]"
    service = escape(command.service or "?")
    return f"[bold yellow]{escape(command.type)}[/] [dim]{command.command_id[:8]}[/] → [bold]{service}[/]{by}{ran}"


def _event_label(node: TracedEvent) -> str:
    """An event's type, stream@version, position and time; its service is its command's, shown above it,
    except for a saga's reaction, which names the service it ran in."""
    event = node.event
    where = f" in [bold]{escape(node.service)}[/]" if event.type == REACTED else ""
    imported = f" [dim](imported into {', '.join(node.imported_into)})[/]" if node.imported_into else ""
    time = event.recorded_at.strftime("%H:%M:%S.%f")[:-3]
    stream = f"{escape(event.stream_id)}@{event.version}"
    return f"[cyan]{escape(event.type)}[/] {stream}{where} [dim]#{event.position} {time}[/]{imported}"
