"""FastAPI apps built from a running service: the command API, the query API, or both in one.

    app = create_app(runtime)                      # embedded: commands and queries together
    app = create_app(runtime, queries=False)       # a command API process
    app = create_app(runtime, commands=False)      # a query API replica
    app = create_app(runtime, async_commands=JetStreamCommands(runtime, nats_url))  # 202s to NATS workers
    app = create_app(runtime, auth=Authenticator(AuthSettings.from_env()))  # bearer tokens, scopes
    app = create_app(runtime, rate_limit=RateLimiter(RateLimit.parse("20/s")))  # per principal, on commands

Every app also serves ``/health`` (the process is up), ``/ready`` (its stores answer and its
projections run), ``/metrics`` (Prometheus) and ``/openapi.json``; one with both stores and
subscriptions also serves ``/dead-letters`` (see :mod:`twofold.http.deadletters`); the query side
serves the web console at ``/console`` (:mod:`twofold.http.console`). With ``auth``,
every route but ``/health`` and ``/docs`` needs a bearer token with the right scope
(:mod:`twofold.http.auth`, docs/security.md).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Response
from pydantic.json_schema import models_json_schema

from twofold.command_queue import CommandQueue
from twofold.http.auth import Authenticator, Guard
from twofold.http.commands import AsyncCommands, command_router
from twofold.http.console import console_router
from twofold.http.deadletters import dead_letter_router
from twofold.http.limits import DEFAULT_BODY_LIMIT, BodyLimit
from twofold.http.metrics import CONTENT_TYPE, DEFAULT_STALL_AFTER, Metrics, stuck_workers
from twofold.http.problems import PROBLEM_SCHEMA, install, problem
from twofold.http.queries import query_router
from twofold.http.ratelimit import CommandRateLimit, RateLimiter
from twofold.http.sagas import saga_router
from twofold.http.tracing import RequestSpans, without_native_spans
from twofold.messages import Command
from twofold.projections import ProjectionRunner
from twofold.runtime import Runtime
from twofold.saga_runner import SagaRunner

__all__ = ["create_app"]

DRAIN_SECONDS = 10.0  # how long shutdown waits for background commands


def create_app(
    runtime: Runtime,
    *,
    commands: bool = True,
    queries: bool = True,
    body_limit: int = DEFAULT_BODY_LIMIT,
    query_timeout: float = 5.0,
    stall_after: float = DEFAULT_STALL_AFTER,
    async_commands: CommandQueue | None = None,
    auth: Authenticator | None = None,
    rate_limit: RateLimiter | None = None,
) -> FastAPI:
    """Build the HTTP app for ``runtime``; starting the app starts the runtime, stopping it stops it.

    Args:
        runtime: the running service.
        commands: serve ``POST /commands/...`` (needs an event store).
        queries: serve ``GET /queries/...`` (needs a read store).
        body_limit: the largest request body, in bytes, before 413.
        query_timeout: the longest a read-your-writes query waits, in seconds, before 504.
        stall_after: seconds a projection may leave events waiting without advancing before
            ``/ready`` calls it stuck (a backlog that moves is not stuck).
        async_commands: where ``Prefer: respond-async`` commands go; by default a task of this
            process each (:class:`~twofold.http.commands.AsyncCommands`).
        auth: checks bearer tokens and scopes on every request; ``None`` leaves every route open
            and records no principal (``twofold serve`` allows that on loopback only).
        rate_limit: a token bucket per principal on every command route (429 over it); ``None``
            for no limit. Give each app its own: one shared by two apps counts a command twice.
    """
    service = runtime.service
    metrics = Metrics(stall_after)
    background = async_commands if async_commands is not None else AsyncCommands(runtime)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await background.drain(DRAIN_SECONDS)
            await runtime.stop()

    app = FastAPI(
        title=f"{service.name} API",
        description=service.description,
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
        **without_native_spans(),
    )
    install(app)
    app.add_middleware(BodyLimit, limit=body_limit)
    app.add_middleware(
        CommandRateLimit, limiter=rate_limit, on_limited=lambda _: metrics.rate_limited.labels(service.name).inc()
    )
    internal = [c.type_name for c in service.commands if c.internal]
    app.add_middleware(Guard, auth=auth, internal=internal)  # added late, so it runs early: no body is read before it
    app.add_middleware(RequestSpans)  # outermost: a refused request has its span too
    if commands and runtime.store is not None:
        app.include_router(command_router(runtime, background, metrics))
    if queries and runtime.read_store is not None:
        app.include_router(query_router(runtime, query_timeout, metrics))
        if service.sagas:
            app.include_router(saga_router(runtime, runtime.read_store))
        app.include_router(console_router(service.name, {service.name: runtime}))
    if service.subscriptions and runtime.store is not None and runtime.read_store is not None:
        app.include_router(dead_letter_router(runtime))

    @app.get("/health", tags=["operations"], summary="The process is up")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", tags=["operations"], summary="The stores answer and the projections run and advance")
    async def ready() -> Any:
        runners: list[ProjectionRunner | SagaRunner] = [*runtime.runners.values(), *runtime.sagas.values()]
        stopped = sorted(runner.name for runner in runners if not runner.running)
        failing = {r.name: r.last_error for r in runners if r.last_error is not None}
        stuck = await stuck_workers(runtime, stall_after)
        positions = dict(await runtime.positions())
        head = await runtime.store.head_position() if runtime.store is not None else None
        body = {"head": head, "projections": positions}
        if stopped or failing or stuck:
            return problem(
                503,
                "Not ready",
                "A projection or saga is stopped, failing, or stuck with events waiting",
                "not-ready",
                stopped=stopped,
                failing=failing,
                stuck=stuck,
                **body,
            )
        return {"status": "ready", **body}

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics", response_class=Response)
    async def prometheus() -> Response:
        return Response(await metrics.render(runtime), media_type=CONTENT_TYPE)

    _describe_messages(app, [*service.commands])
    return app


def _describe_messages(app: FastAPI, models: list[type[Command]]) -> None:
    """Put each command's JSON schema and the problem document's into OpenAPI's components, for routes to refer to."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = original()
        _, definitions = models_json_schema(
            [(m, "validation") for m in models], ref_template="#/components/schemas/{model}"
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(definitions.get("$defs", {}))
        components["Problem"] = PROBLEM_SCHEMA
        for model in models:
            own = model.model_json_schema(ref_template="#/components/schemas/{model}")
            own.pop("$defs", None)
            components[model.type_name] = own
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
