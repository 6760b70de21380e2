"""What the scenarios share: running async work from a sync check, comparing messages by value,
and rendering expected and actual as lines for a diff."""

from __future__ import annotations

import asyncio
import difflib
import json
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import ValidationError
from pydantic_core import to_jsonable_python

from twofold.messages import Event, Message
from twofold.store import NewEvent

T = TypeVar("T")

# When every event of a scenario is recorded, and the time a saga scenario's clock starts from:
# a fixed time, so that read models and deadlines derived from it are the same on every run.
SCENARIO_START = datetime(2030, 1, 1, tzinfo=UTC)


def run_to_completion(work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to its end from sync code, even when this thread already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        in_event_loop = False
    else:
        in_event_loop = True
    # Run outside the except clause, so that a failure inside is not chained to "no running event loop".
    if not in_event_loop:
        return asyncio.run(work())
    with ThreadPoolExecutor(1, thread_name_prefix="twofold-scenario") as pool:
        return pool.submit(lambda: asyncio.run(work())).result()


def new_event(event: Event, *, principal: str | None = None, tenant: str | None = None) -> NewEvent:
    metadata = {k: v for k, v in {"principal": principal, "tenant": tenant}.items() if v is not None}
    return NewEvent(event.type_name, event.model_dump(mode="json"), metadata, schema_version=event.schema_version)


def same_message(expected: Message, type_name: str, data: Mapping[str, Any]) -> bool:
    """Same type and same values: ``Decimal("19")`` matches a recorded ``"19.00"``."""
    if type_name != expected.type_name:
        return False
    try:
        return type(expected).model_validate(dict(data)) == expected
    except ValidationError:
        return False


def render(type_name: str, data: Any) -> str:
    """One message on one line: ``shop.StockReserved {"sku": "A-1", "quantity": 2}``."""
    return f"{type_name} {json.dumps(data, ensure_ascii=False)}"


def json_lines(value: Any) -> list[str]:
    """A value (a model, a list, a dict…) as indented JSON, one line per field, for a diff."""
    return json.dumps(to_jsonable_python(value), indent=2, ensure_ascii=False).splitlines()


def diff(expected: Iterable[str], actual: Iterable[str]) -> str:
    """ndiff's lines: ``-`` expected only, ``+`` actual only, ``?`` where a line changed."""
    return "\n".join(line.rstrip("\n") for line in difflib.ndiff(list(expected), list(actual)))


def listing(lines: Sequence[str], empty: str) -> str:
    return "\n".join(f"  {line}" for line in lines) if lines else f"  ({empty})"


def describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"
