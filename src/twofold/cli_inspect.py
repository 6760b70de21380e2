"""Commands that look inside event stores: ``streams``, ``stream``, ``events tail`` and ``trace``.

twofold streams --category order                        # the store at TWOFOLD_DATABASE_URL
twofold stream order-o-1 --at 2 --target examples.shop:shop   # events, and the Order as of version 2
twofold events tail --type shop.OrderPlaced --json     # new events, one JSON object a line, until Ctrl-C
twofold trace examples.shop:shop 5f0c…                  # one checkout across every service's store

A store is found by ``--url``; else by ``--target``: a Service's (``TWOFOLD_DATABASE_URL`` or its
default file), or each service's of a System (``TWOFOLD_<SERVICE>_DATABASE_URL``, as ``twofold
serve`` uses them); else by ``TWOFOLD_DATABASE_URL``. Every command takes ``--json`` for scripts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import typer
from rich.console import Console

from twofold import inspection
from twofold.cli_render import event_json, event_line, streams_table, summary_json, trace_tree
from twofold.config import Settings, open_event_store
from twofold.errors import ConfigurationError, TwofoldError
from twofold.service import Service
from twofold.store import EventStore, category_of
from twofold.system import System

__all__ = ["register"]

Url = Annotated[str | None, typer.Option("--url", help="The event store [default: env TWOFOLD_DATABASE_URL]")]
Target = Annotated[
    str | None, typer.Option("--target", help="A Service or System (module:attribute) whose stores to open")
]
ServiceName = Annotated[str | None, typer.Option("--service", help="Of a System: this service's store")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables")]

_URL = "TWOFOLD_DATABASE_URL"

events_app = typer.Typer(help="Follow events as they are recorded.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add the inspection commands to the ``twofold`` command line."""
    app.command()(streams)
    app.command()(stream)
    app.command()(trace)
    app.add_typer(events_app, name="events")


@dataclass(frozen=True, slots=True)
class _Source:
    """Where one service's events are: its URL, the setting the URL came from, and its declaration."""

    name: str
    url: str
    variable: str
    service: Service | None = None
    by_default: bool = False  # the variable is unset: the URL is the service's default file


class _Refused(Exception):
    """What the user asked for cannot be done; the message says why, the code is the exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def streams(
    category: Annotated[str | None, typer.Option(help="Only streams of this category (order)")] = None,
    after: Annotated[str | None, typer.Option(help="Start after this stream id (the last of the page before)")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="How many streams")] = 100,
    url: Url = None,
    target: Target = None,
    service: ServiceName = None,
    as_json: AsJson = False,
) -> None:
    """List streams in id order, a page at a time: version, last position, last event's time."""

    async def run(store: EventStore, _: _Source) -> None:
        page = await store.streams(category=category, after=after, limit=limit)
        if as_json:
            next_after = page[-1].stream_id if len(page) == limit else None
            _print_json({"streams": [summary_json(s) for s in page], "next_after": next_after})
            return
        _console().print(streams_table(page))
        if len(page) == limit:
            _console().print(f"next page: --after {page[-1].stream_id}")

    _run(lambda: _one_store(url, target, service), run)


def stream(
    stream_id: Annotated[str, typer.Argument(help="The stream, e.g. order-o-1")],
    at: Annotated[int | None, typer.Option("--at", min=1, help="Stop at this version (time travel)")] = None,
    url: Url = None,
    target: Target = None,
    service: ServiceName = None,
    as_json: AsJson = False,
) -> None:
    """Show a stream's events, and its aggregate's state at that version when --target declares it."""

    async def run(store: EventStore, source: _Source) -> None:
        version = await store.stream_version(stream_id)
        if version == 0:
            raise _Refused(f"No stream {stream_id} in {source.url}")
        if at is not None and at > version:
            raise _Refused(f"Stream {stream_id} is at version {version}; --at {at} is past its end")
        events = [e async for e in store.read_stream(stream_id, to_version=at)]
        state = await _state(store, stream_id, source.service, at)
        if as_json:
            _print_json({"stream_id": stream_id, "events": [event_json(e) for e in events], "state": state})
            return
        console = _console()
        for event in events:
            console.print(event_line(event), highlight=False, soft_wrap=True)
        if state is not None:
            console.print(f"state at version {events[-1].version}:")
            console.print_json(data=state)

    _run(lambda: _stream_source(stream_id, url, target, service), run)


async def _state(store: EventStore, stream_id: str, service: Service | None, at: int | None) -> Any:
    """The stream's aggregate at version ``at`` as JSON, when the service declares its class."""
    aggregate_type = service.aggregate_type(category_of(stream_id)) if service is not None else None
    if service is None or aggregate_type is None or "-" not in stream_id:
        return None
    aggregate_id = stream_id.split("-", 1)[1]
    state = await inspection.state_at(store, aggregate_type, aggregate_id, at, upcasters=service.upcasters)
    return state.model_dump(mode="json")


@events_app.command("tail")
def tail(
    event_type: Annotated[list[str] | None, typer.Option("--type", help="Only this type (repeatable)")] = None,
    stream_id: Annotated[str | None, typer.Option("--stream", help="Only this stream's events")] = None,
    from_position: Annotated[
        int | None, typer.Option("--from", min=1, help="Start at this position [default: new events only]")
    ] = None,
    count: Annotated[int | None, typer.Option(min=1, help="Stop after this many events")] = None,
    url: Url = None,
    target: Target = None,
    service: ServiceName = None,
    as_json: AsJson = False,
) -> None:
    """Print events as they are recorded, until Ctrl-C (or --count of them)."""

    async def run(store: EventStore, _: _Source) -> None:
        start = from_position or await store.head_position() + 1
        categories = None if stream_id is None else [category_of(stream_id)]
        shown = 0
        events = store.subscribe(start, categories=categories, types=event_type)
        try:
            async for event in events:
                if stream_id is not None and event.stream_id != stream_id:
                    continue
                if as_json:
                    typer.echo(json.dumps(event_json(event)))
                else:
                    _console().print(event_line(event), highlight=False, soft_wrap=True)
                shown += 1
                if count is not None and shown >= count:
                    return
        finally:
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how a tail ends
        _run(lambda: _one_store(url, target, service), run)


def trace(
    arguments: Annotated[
        list[str], typer.Argument(metavar="[TARGET] CORRELATION_ID", help="A System or Service, then the id")
    ],
    url: Url = None,
    as_json: AsJson = False,
) -> None:
    """Show one correlation's causal tree: commands, their events, what sagas did, across services."""
    if len(arguments) > 2:
        raise typer.BadParameter("Give a correlation id, optionally after a TARGET (examples.shop:shop)")
    target, correlation_id = (None, arguments[0]) if len(arguments) == 1 else (arguments[0], arguments[1])

    async def run(stores: dict[str, EventStore]) -> None:
        found = await inspection.causal_trace(stores, correlation_id)
        if not found.roots:
            raise _Refused(f"No events with correlation id {correlation_id} in {', '.join(sorted(stores))}")
        if as_json:
            _print_json(found.to_json())
        else:
            _console().print(trace_tree(found))

    _run_all(lambda: _sources(url, target, None), lambda opened: run({s.name: store for store, s in opened}))


# -- finding and opening stores -----------------------------------------------------------------------


def _sources(url: str | None, target: str | None, service_name: str | None) -> list[_Source]:
    found = _load(target) if target is not None else None
    if url is not None:
        single = found.service(service_name) if isinstance(found, System) and service_name else found
        service = single if isinstance(single, Service) else None
        return [_Source(service.name if service else _name_of(url), url, "--url", service)]
    if isinstance(found, System):
        chosen = [found.service(service_name)] if service_name else list(found.services)
        return [_of_system(s) for s in chosen]
    if isinstance(found, Service):
        url = Settings.from_env(found).database_url
        return [_Source(found.name, url, "TWOFOLD_DATABASE_URL", found, by_default=not os.environ.get(_URL))]
    from_env = os.environ.get(_URL)
    if not from_env:
        raise _Refused(f"No event store named: pass --url, set {_URL} or name a --target", 2)
    return [_Source(_name_of(from_env), from_env, _URL)]


def _name_of(url: str) -> str:
    """What to call a store no service names: its file's or database's name (``data/orders.db`` → orders)."""
    return Path(urlsplit(url).path).stem or "store"


def _of_system(service: Service) -> _Source:
    from twofold.embedded import database_url_variable, service_environ

    variable = database_url_variable(service.name)
    url = Settings.from_env(service, service_environ(os.environ, service.name)).database_url
    return _Source(service.name, url, variable, service, by_default=not os.environ.get(variable))


def _one_store(url: str | None, target: str | None, service_name: str | None) -> _Source:
    sources = _sources(url, target, service_name)
    if len(sources) > 1:
        names = ", ".join(s.name for s in sources)
        raise _Refused(f"{target} has several stores ({names}): pick one with --service", 2)
    return sources[0]


def _stream_source(stream_id: str, url: str | None, target: str | None, service_name: str | None) -> _Source:
    """A System's store for a stream: the service named, or the one declaring the stream's aggregate."""
    found = _load(target) if target is not None and url is None and service_name is None else None
    if isinstance(found, System):
        owner = inspection.aggregate_for(found.services, stream_id)
        if owner is None:
            raise _Refused(f"No service of {target} declares the aggregate of {stream_id}: pick one with --service", 2)
        return _of_system(owner[0])
    return _one_store(url, target, service_name)


def _load(target: str) -> Service | System:
    from twofold.cli import load_target

    return load_target(target)


def _open(source: _Source) -> EventStore:
    """The source's store; a SQLite file that is not there is refused, not created empty."""
    path = Path(source.url.removeprefix("sqlite:///"))
    if source.url.startswith("sqlite:///") and not path.is_file():
        if source.by_default:
            raise _Refused(f"No database file {path}, {source.name}'s default: set {source.variable} to its store", 2)
        raise _Refused(f"{source.variable}={source.url}: no such database file", 2)
    return open_event_store(source.url, source.variable)


Opened = list[tuple[EventStore, _Source]]


def _run(resolve: Callable[[], _Source], work: Callable[[EventStore, _Source], Awaitable[None]]) -> None:
    _run_all(lambda: [resolve()], lambda opened: work(*opened[0]))


def _run_all(resolve: Callable[[], list[_Source]], work: Callable[[Opened], Awaitable[None]]) -> None:
    """Open the stores, run ``work`` on them, close them; a refusal or a store's error ends the command."""

    async def main() -> None:
        opened: Opened = []
        try:
            for source in resolve():
                opened.append((_open(source), source))
            await work(opened)
        finally:
            for store, _ in opened:
                await store.close()

    try:
        asyncio.run(main())
    except _Refused as exc:
        _fail(str(exc), exc.code)
    except ConfigurationError as exc:
        _fail(str(exc), 2)
    except TwofoldError as exc:
        _fail(str(exc), 1)


def _fail(message: str, code: int) -> Any:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(code)


def _console() -> Console:
    return Console(soft_wrap=False)


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2))
