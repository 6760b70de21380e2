"""``twofold projections``, ``twofold dead-letters`` and ``twofold check``: operating read models.

twofold projections status examples.shop:shop               # each projection: position, head, lag, failing
twofold projections rebuild examples.shop:shop orders.history   # aside, then swapped in: no downtime
twofold projections reset examples.shop:shop orders.history --yes   # dropped, replayed in place
twofold dead-letters list examples.shop:shop --service orders
twofold dead-letters retry examples.shop:shop --service orders --source inventory
twofold check examples.shop:shop --projection inventory.stock   # exit code 1 on any difference

``TARGET`` is a Service, or a System (every service, or the one named by ``--service``), as
``module:attribute``. The databases are those ``twofold serve`` would use: ``TWOFOLD_DATABASE_URL``
and ``TWOFOLD_READ_DATABASE_URL``, ``TWOFOLD_WAREHOUSE_URL`` and ``TWOFOLD_SEARCH_URL`` for the
projections that name those targets, or a system's ``TWOFOLD_<SERVICE>_…``. Each takes ``--json``.
An embedded target (a DuckDB file) is written by one process at a time: rebuild or reset a
warehouse projection while the process that projects it is stopped.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from twofold.checking import ConsistencyReport, check_consistency
from twofold.config import Settings, open_event_store, open_read_store, open_targets
from twofold.deadletters import DeadLetters
from twofold.embedded import service_environ
from twofold.errors import TwofoldError
from twofold.projections import Projection, ProjectionFailure, ProjectionRunner, projection_failures
from twofold.readmodels import SQL_DIALECTS, Database, ReadStore
from twofold.rebuilds import rebuild_projection
from twofold.service import Service
from twofold.store import EventStore
from twofold.subscriptions import Importer
from twofold.tenancy import Tenancy, known_tenants

__all__ = ["register"]

T = TypeVar("T")


def _console() -> Console:
    """Progress and tables go to stderr (``--json`` output alone to stdout). Made for each use: the
    terminal's width (``COLUMNS``) is read when a console is made, and may differ between commands."""
    return Console(stderr=True)


Target = Annotated[str, typer.Argument(help="A Service or a System, as module:attribute (examples.shop:shop)")]
ServiceName = Annotated[str | None, typer.Option("--service", help="Of a System: this service only")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON on stdout instead of tables")]
ProjectionName = Annotated[str, typer.Argument(help="The projection's name (orders.history)")]

projections = typer.Typer(help="See, rebuild and reset projections' read models.", no_args_is_help=True)
dead_letters = typer.Typer(help="Messages from other services that could not be imported.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add these commands to the ``twofold`` command line."""
    app.add_typer(projections, name="projections")
    app.add_typer(dead_letters, name="dead-letters")
    app.command("check")(check)


# -- stores ----------------------------------------------------------------------------------------


@dataclass
class Stores:
    service: Service
    store: EventStore
    read_store: ReadStore[Database]
    targets: dict[str, ReadStore[Any]]

    def of(self, projection: Projection) -> ReadStore[Any]:
        """The store of ``projection``'s target."""
        return self.read_store if projection.target == "sql" else self.targets[projection.target]

    def registry(self, projection: Projection) -> ReadStore[Database] | None:
        """Where the tenants of ``projection``'s store are registered, when not in that store itself."""
        return self.read_store if self.of(projection).dialect not in SQL_DIALECTS else None


def _services(target: str, service_name: str | None) -> list[tuple[Service, dict[str, str]]]:
    """Each service the command is about, with the environment ``twofold serve`` would give it."""
    from twofold.cli import load_target

    found = load_target(target)
    if isinstance(found, Service):
        return [(found, dict(os.environ))]
    chosen = [found.service(service_name)] if service_name else list(found.services)
    return [(service, service_environ(os.environ, service.name)) for service in chosen]


@asynccontextmanager
async def _opened(service: Service, environ: dict[str, str]) -> AsyncIterator[Stores]:
    settings = Settings.from_env(service, environ)
    store = open_event_store(settings.database_url)
    opened: list[ReadStore[Any]] = []
    try:
        read_store = open_read_store(settings.read_database_url)
        opened.append(read_store)
        targets = open_targets(service, settings)
        opened.extend(targets.values())
        yield Stores(service, store, read_store, targets)
    finally:
        for each in reversed(opened):
            await each.close()
        await store.close()


def _run(work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``work``; a twofold error (a store down, a bad URL) ends the command with its message, exit code 2."""
    try:
        return asyncio.run(work())
    except (TwofoldError, ValueError) as exc:
        _console().print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


def _owner(target: str, service_name: str | None, name: str) -> tuple[Service, dict[str, str], Projection]:
    for service, environ in _services(target, service_name):
        for projection in service.projections:
            if projection.name == name:
                return service, environ, projection
    raise typer.BadParameter(f"no projection named {name!r} in {target}")


@contextmanager
def _progress_bars(quiet: bool) -> Iterator[Callable[[str, int, int], None]]:
    """A callback drawing a bar per projection (and tenant) as it goes; silent with ``--json`` or off a terminal."""
    if quiet or not _console().is_terminal:
        yield lambda label, position, head: None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=_console(), transient=True) as bars:
        tasks: dict[str, Any] = {}

        def advance(label: str, position: int, head: int) -> None:
            if label not in tasks:
                tasks[label] = bars.add_task(label, total=head)
            bars.update(tasks[label], completed=position, total=head)

        yield advance


# -- projections -----------------------------------------------------------------------------------


@projections.command("status")
def status(target: Target, service_name: ServiceName = None, as_json: AsJson = False) -> None:
    """Each projection's position, the store's head, and how far behind it is (each tenant's copy too)."""

    async def gather() -> list[dict[str, Any]]:
        rows = []
        for service, environ in _services(target, service_name):
            async with _opened(service, environ) as opened:
                head = await opened.store.head_position()
                checkpoints = {p.name: await opened.of(p).checkpoint(p.name) for p in service.projections}
                failing = await projection_failures(opened.read_store, checkpoints)
                for projection in service.projections:
                    live = opened.of(projection)
                    tenants = await known_tenants(opened.registry(projection) or live)
                    main = checkpoints[projection.name]
                    failure = failing.get(projection.name)
                    for tenant in [None, *tenants]:
                        where = live if tenant is None else live.for_tenant(tenant)
                        position = main if tenant is None else await where.checkpoint(projection.name)
                        # One runner applies every tenant's events: a tenant's copy is as far on as it.
                        row = {
                            "service": service.name,
                            "projection": projection.name,
                            "target": projection.target,
                            "tenant": tenant,
                        }
                        failed = _failure_json(failure) if tenant is None else None  # the runner's
                        rows.append(
                            {**row, "position": position, "head": head, "lag": max(head - main, 0), "failing": failed}
                        )
        return rows

    rows = _run(gather)
    if as_json:
        _print_json({"projections": rows})
        return
    table = Table("service", "projection", "target", "tenant", "position", "head", "lag", "failing")
    for row in rows:
        lag = str(row["lag"]) if row["lag"] == 0 else f"[yellow]{row['lag']}[/yellow]"
        failing = row["failing"]
        shown = "" if failing is None else _failing_cell(failing)
        table.add_row(
            row["service"],
            row["projection"],
            row["target"],
            row["tenant"] or "",
            str(row["position"]),
            str(row["head"]),
            lag,
            shown,
        )
    _console().print(table)
    _console().print("A tenant's position is the last of its own events applied; its lag is the projection's.")
    if any(row["failing"] for row in rows):
        _console().print(
            "failing: the position of the batch its runner keeps retrying, how often it failed, the error."
        )


def _failing_cell(failing: dict[str, Any]) -> str:
    # The error's own text is escaped: "[x]" in a message is not markup.
    return f"[red]at {failing['position']}, {failing['failures']}× in a row:[/red] {escape(failing['error'])}"


def _failure_json(failure: ProjectionFailure | None) -> dict[str, Any] | None:
    if failure is None:
        return None
    return {
        "position": failure.position,
        "error": failure.error,
        "failures": failure.failures,
        "failed_at": failure.failed_at,
    }


@projections.command("rebuild")
def rebuild(target: Target, name: ProjectionName, service_name: ServiceName = None, as_json: AsJson = False) -> None:
    """Rebuild a read model aside and swap it in at once: queries keep answering from the old one until then."""
    service, environ, projection = _owner(target, service_name, name)

    async def work() -> dict[str, Any]:
        started = time.monotonic()
        async with _opened(service, environ) as opened:
            with _progress_bars(as_json) as progress:
                await rebuild_projection(
                    projection,
                    opened.store,
                    opened.of(projection),
                    upcasters=service.upcasters,
                    progress=progress,
                    registry=opened.registry(projection),
                )
            position = await opened.of(projection).checkpoint(name)
        return {"rebuilt": name, "service": service.name, "position": position, "elapsed": time.monotonic() - started}

    outcome = _run(work)
    if as_json:
        _print_json(outcome)
    else:
        _console().print(f"[green]{name}[/green] rebuilt up to position {outcome['position']} and swapped in")


@projections.command("reset")
def reset(
    target: Target,
    name: ProjectionName,
    service_name: ServiceName = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation")] = False,
    as_json: AsJson = False,
) -> None:
    """Drop a read model and replay it from the first event in place; queries see it empty, then filling up."""
    service, environ, projection = _owner(target, service_name, name)
    if not yes:
        typer.confirm(
            f"Drop {name}'s tables, every tenant's too, and replay them while queries see them fill?", abort=True
        )

    async def work() -> dict[str, Any]:
        async with _opened(service, environ) as opened:
            live = opened.of(projection)
            tenancy = Tenancy(live, [projection], registry=opened.registry(projection))
            runner = ProjectionRunner(projection, opened.store, live, upcasters=service.upcasters, tenancy=tenancy)
            with _progress_bars(as_json) as progress:
                await runner.rebuild()
                try:
                    head = await opened.store.head_position()
                    catching_up = asyncio.ensure_future(runner.catch_up())
                    while not catching_up.done():
                        progress(name, runner.position, head)
                        await asyncio.wait({catching_up}, timeout=0.1)
                    await catching_up
                    progress(name, runner.position, head)
                finally:
                    await runner.stop()
        return {"reset": name, "service": service.name, "position": runner.position}

    outcome = _run(work)
    if as_json:
        _print_json(outcome)
    else:
        _console().print(f"[green]{name}[/green] reset and replayed up to position {outcome['position']}")


# -- dead letters ----------------------------------------------------------------------------------

Source = Annotated[str | None, typer.Option(help="Only messages from this service")]
StreamId = Annotated[str | None, typer.Option("--stream", help="Only messages of this stream")]


@dead_letters.command("list")
def list_dead_letters(
    target: Target,
    service_name: ServiceName = None,
    source: Source = None,
    stream: StreamId = None,
    as_json: AsJson = False,
) -> None:
    """Parked messages, by service, source, stream and version."""

    async def gather() -> list[dict[str, Any]]:
        rows = []
        for service, environ in _services(target, service_name):
            if not service.subscriptions:
                continue
            async with _opened(service, environ) as opened:
                for letter in await DeadLetters(opened.read_store).parked(source, stream):
                    rows.append(
                        {
                            "service": service.name,
                            "source": letter.source,
                            "stream_id": letter.stream_id,
                            "version": letter.version,
                            "event_id": letter.event_id,
                            "error": letter.error,
                            "attempts": letter.attempts,
                            "parked_at": letter.parked_at.isoformat(),
                        }
                    )
        return rows

    rows = _run(gather)
    if as_json:
        _print_json({"dead_letters": rows})
        return
    table = Table("service", "source", "stream", "version", "attempts", "parked at", "error")
    for row in rows:
        table.add_row(
            row["service"],
            row["source"],
            row["stream_id"],
            str(row["version"]),
            str(row["attempts"]),
            row["parked_at"],
            row["error"],
        )
    _console().print(table if rows else "No parked messages.")


@dead_letters.command("retry")
def retry_dead_letters(
    target: Target,
    service_name: ServiceName = None,
    source: Source = None,
    stream: StreamId = None,
    as_json: AsJson = False,
) -> None:
    """Import parked messages again with the code deployed now, each stream in order until one still fails."""

    async def work() -> list[dict[str, Any]]:
        retried = []
        for service, environ in _services(target, service_name):
            subscriptions = [s for s in service.subscriptions if source in (None, s.source)]
            if not subscriptions:
                continue
            async with _opened(service, environ) as opened:
                for subscription in subscriptions:
                    importer = Importer(service, opened.store, opened.read_store, subscription)
                    result = await importer.retry(stream)
                    retried.append(
                        {
                            "service": service.name,
                            "source": subscription.source,
                            "imported": result.imported,
                            "parked": result.parked,
                        }
                    )
        return retried

    retried = _run(work)
    if as_json:
        _print_json({"retried": retried})
        return
    table = Table("service", "source", "imported", "still parked")
    for row in retried:
        table.add_row(row["service"], row["source"], str(row["imported"]), str(row["parked"]))
    _console().print(table if retried else "No service here imports from another.")


# -- check -----------------------------------------------------------------------------------------


def check(
    target: Target,
    service_name: ServiceName = None,
    projection: Annotated[list[str] | None, typer.Option(help="Only this projection (repeatable)")] = None,
    as_json: AsJson = False,
) -> None:
    """Rebuild each read model aside and compare it with the live one, row by row; exit code 1 on any difference."""

    async def work() -> list[tuple[str, ConsistencyReport]]:
        reports = []
        for service, environ in _services(target, service_name):
            names = [p.name for p in service.projections if not projection or p.name in projection]
            if not names:
                continue
            async with _opened(service, environ) as opened:
                with _progress_bars(as_json) as progress:
                    report = await check_consistency(
                        service,
                        opened.store,
                        opened.read_store,
                        projections=names,
                        progress=progress,
                        targets=opened.targets,
                    )
            reports.append((service.name, report))
        return reports

    reports = _run(work)
    if projection and not reports:
        raise typer.BadParameter(f"no projection named {', '.join(projection)} in {target}")
    consistent = all(report.consistent for _, report in reports)
    if as_json:
        _print_json(
            {"consistent": consistent, "services": {name: [c.as_json() for c in r.checks] for name, r in reports}}
        )
    else:
        _print_report(reports)
    if not consistent:
        raise typer.Exit(1)


def _print_report(reports: list[tuple[str, ConsistencyReport]]) -> None:
    table = Table("service", "projection", "position", "rows", "differences", "seconds")
    for service, report in reports:
        for c in report.checks:
            found = c.found
            table.add_row(
                service,
                c.label,
                str(c.position),
                str(c.rows_compared),
                "[green]0[/green]" if not found else f"[red]{found}[/red]",
                f"{c.elapsed:.2f}",
            )
    out = _console()
    out.print(table)
    for _, report in reports:
        for c in report.checks:
            for d in c.differences:
                out.print(f"[red]✗[/red] {c.label}: {d.describe()}", highlight=False)
                if d.kind != "definition":
                    out.print(
                        f"    from {', '.join(map(str, d.events)) or 'no event mentions its key'}", highlight=False
                    )
            if c.unreported:
                out.print(f"    … and {c.unreported} more in {c.label}")
