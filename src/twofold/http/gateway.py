"""One API in front of a system's services: each request goes to the service that owns it.

    POST /commands/{Type}            → the service whose command it is
    GET  /commands/{command_id}      → each service in turn, until one knows the id
    GET  /queries/{Type}             → the service whose query it is (replicas taken in turn)
    GET  /sagas/{name}[/{instance}]  → the service that runs the saga
    ANY  /services/{service}/{path}  → that service, as is (dead letters, its own /metrics…)
    GET  /health, /ready, /metrics, /openapi.json: the gateway's, from every service's
    GET  /console/…                  the web console over every service (given their stores)

Embedded, the services' apps run in the gateway's process and requests reach them through
httpx's ASGI transport, with no socket; in cluster mode they reach each service's processes over
HTTP. A client cannot tell the two apart, so the same client and the same README tour work
against ``make run`` and ``make run-cluster``.

With ``auth``, the gateway checks each request's token and scope as a service would, then forwards
``Authorization`` untouched, and every service checks it again: a service never trusts the gateway.
With ``rate_limit``, it limits each principal's commands as a service would, before forwarding them.
Each request has a span of the gateway's, and its ``traceparent`` goes to the service in place of
the client's, so that the service's span is a child of the gateway's in the client's trace.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import re
import ssl
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
from fastapi import FastAPI, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from prometheus_client import Counter, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector, CollectorRegistry

from twofold.errors import NotFound
from twofold.http.app import create_app
from twofold.http.auth import Authenticator, Guard
from twofold.http.console import console_router
from twofold.http.limits import DEFAULT_BODY_LIMIT, BodyLimit
from twofold.http.metrics import CONTENT_TYPE
from twofold.http.problems import install, problem
from twofold.http.ratelimit import CommandRateLimit, RateLimiter
from twofold.http.tracing import RequestSpans, without_native_spans
from twofold.observability import TRACE_FIELDS, trace_context
from twofold.runtime import Runtime
from twofold.system import System

__all__ = ["Upstream", "create_gateway", "gateway_in_process"]

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host", "content-length"}
FORWARDED_APART = HOP_BY_HOP | set(TRACE_FIELDS)
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # control characters but HTAB, which a header may hold
TIMEOUT = httpx.Timeout(30.0, connect=2.0)  # above the longest read-your-writes wait a query may ask for


@dataclass
class Upstream:
    """How the gateway reaches one service: its command API, its query API replicas, and the
    processes that serve only health and metrics (its workers)."""

    commands: httpx.AsyncClient
    queries: Sequence[httpx.AsyncClient]
    apps: Sequence[FastAPI] = ()  # in-process apps whose lifespans the gateway runs
    workers: Sequence[httpx.AsyncClient] = ()
    _turn: Iterator[int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._turn = itertools.cycle(range(len(self.queries)))

    def query_client(self) -> httpx.AsyncClient:
        """The next query replica, in turn."""
        return self.queries[next(self._turn)]

    @classmethod
    def in_process(cls, app: FastAPI) -> Upstream:
        """A service whose app serves both APIs in this process."""
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://service", timeout=TIMEOUT)
        return cls(client, [client], [app])

    @classmethod
    def over_http(cls, commands_url: str, query_urls: Sequence[str], worker_urls: Sequence[str] = ()) -> Upstream:
        """A service running in other processes: one command API, query API replicas, workers."""
        # One TLS context for every client: httpx would load the CA bundle again for each (70 ms apiece).
        tls = _tls_context()
        return cls(
            httpx.AsyncClient(base_url=commands_url, timeout=TIMEOUT, verify=tls),
            [httpx.AsyncClient(base_url=url, timeout=TIMEOUT, verify=tls) for url in query_urls],
            workers=[httpx.AsyncClient(base_url=url, timeout=TIMEOUT, verify=tls) for url in worker_urls],
        )

    def parts(self) -> dict[str, httpx.AsyncClient]:
        """Every process of the service by a name of its part (``commands``, ``queries1``, ``workers``…)."""
        named = {"commands": self.commands}
        named.update({f"queries{i}": c for i, c in enumerate(self.queries) if c is not self.commands})
        named.update({f"workers{i}" if i else "workers": c for i, c in enumerate(self.workers)})
        return named

    async def close(self) -> None:
        for client in {id(c): c for c in [self.commands, *self.queries, *self.workers]}.values():
            await client.aclose()


@functools.cache
def _tls_context() -> ssl.SSLContext:
    return httpx.create_ssl_context()  # what httpx makes for each client by default: verified, its CA bundle


def create_gateway(
    system: System,
    upstreams: Mapping[str, Upstream],
    *,
    body_limit: int = DEFAULT_BODY_LIMIT,
    auth: Authenticator | None = None,
    rate_limit: RateLimiter | None = None,
    console: Mapping[str, Runtime] | None = None,
    close_console: bool = False,
) -> FastAPI:
    """Build the gateway app for ``system``; ``upstreams`` maps each service name to how to reach it.

    ``auth`` checks tokens at the gateway too (the services check them whatever the gateway does).
    ``rate_limit`` limits each principal's commands here, before they reach a service; the
    refusals are counted in the gateway's ``/metrics`` as the services count theirs.
    ``console`` (service name → runtime in this process) serves ``/console`` over every service at
    once: streams per service, a trace across them. Each service's own console stays at
    ``/services/{name}/console``. With ``close_console`` the gateway stops those runtimes, closing
    their stores, when it shuts down: they are its own (a cluster's gateway opens every service's
    stores for its console); without it, whoever runs them stops them (embedded, the services' apps).
    """
    missing = sorted(set(system.names) - set(upstreams))
    if missing:
        raise ValueError(f"No upstream for services {missing}")
    saga_owners = {saga.name: service.name for service in system.services for saga in service.sagas}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            for runtime in console.values() if console is not None and close_console else ():
                stack.push_async_callback(runtime.stop)
            for upstream in upstreams.values():
                stack.push_async_callback(upstream.close)
                for service_app in upstream.apps:
                    await stack.enter_async_context(service_app.router.lifespan_context(service_app))
            yield

    # The OpenAPI document and its docs page are the gateway's own routes, merged from the services'.
    app = FastAPI(
        title=f"{system.name} API",
        description=system.description,
        lifespan=lifespan,
        openapi_url=None,
        docs_url=None,
        **without_native_spans(),
    )
    install(app)
    app.add_middleware(BodyLimit, limit=body_limit)
    own_metrics = CollectorRegistry()
    rate_limited = Counter(
        "twofold_commands_rate_limited",
        "Commands refused (429) because their caller was over the rate limit",
        ["service"],
        registry=own_metrics,
    )

    def count_refusal(type_name: str) -> None:
        owner = system.owner_of_command(type_name)
        rate_limited.labels(owner.name if owner is not None else "unknown").inc()

    app.add_middleware(CommandRateLimit, limiter=rate_limit, on_limited=count_refusal)
    internal = [c.type_name for service in system.services for c in service.commands if c.internal]
    app.add_middleware(Guard, auth=auth, internal=internal)
    app.add_middleware(RequestSpans)

    @app.post("/commands/{type_name}", include_in_schema=False)
    async def command(type_name: str, request: Request) -> Response:
        owner = system.owner_of_command(type_name)
        if owner is None:
            raise NotFound(f"No command type {type_name!r} in {system.name}")
        return await _forward(request, upstreams[owner.name].commands, owner.name)

    @app.get("/commands/{command_id}", include_in_schema=False)
    async def command_status(command_id: str, request: Request) -> Response:
        answer: Response | None = None
        for name in system.names:
            answer = await _forward(request, upstreams[name].commands, name)
            if answer.status_code != 404:
                return answer
        assert answer is not None
        return answer

    @app.get("/queries/{type_name}", include_in_schema=False)
    async def query(type_name: str, request: Request) -> Response:
        owner = system.owner_of_query(type_name)
        if owner is None:
            raise NotFound(f"No query type {type_name!r} in {system.name}")
        return await _forward(request, upstreams[owner.name].query_client(), owner.name)

    @app.get("/sagas/{name}", include_in_schema=False)
    @app.get("/sagas/{name}/{instance}", include_in_schema=False)
    async def saga(name: str, request: Request) -> Response:
        owner = saga_owners.get(name)
        if owner is None:
            raise NotFound(f"No saga named {name!r} in {system.name}")
        return await _forward(request, upstreams[owner].query_client(), owner)

    @app.api_route("/services/{service}/{path:path}", methods=["GET", "POST", "PUT", "DELETE"], include_in_schema=False)
    async def passthrough(service: str, path: str, request: Request) -> Response:
        upstream = upstreams.get(service)
        if upstream is None:
            raise NotFound(f"No service {service!r} in {system.name}; it has {', '.join(system.names)}")
        client = (
            upstream.query_client() if request.method == "GET" and path.startswith("queries/") else upstream.commands
        )
        return await _forward(request, client, service, path="/" + path)

    if console is not None:
        app.include_router(
            console_router(system.name, {name: console[name] for name in system.names if name in console})
        )

    @app.get("/health", tags=["operations"], summary="The gateway is up")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", tags=["operations"], summary="Every process of every service is ready")
    async def ready(request: Request) -> Any:
        checks = {
            f"{name}/{part}": client
            for name, upstream in upstreams.items()
            for part, client in upstream.parts().items()
        }
        credentials = _credentials(request)
        answers = await asyncio.gather(*(_status(client, "/ready", credentials) for client in checks.values()))
        statuses = dict(zip(checks, answers, strict=True))
        if any(code != 200 for code in statuses.values()):
            return problem(503, "Not ready", "A service is not ready", "not-ready", services=statuses)
        return {"status": "ready", "services": statuses}

    @app.get("/metrics", tags=["operations"], summary="Every process's metrics, labelled by service and part")
    async def metrics(request: Request) -> Response:
        texts = {
            (name, part): await _text(client, "/metrics", _credentials(request))
            for name, upstream in upstreams.items()
            for part, client in upstream.parts().items()
        }
        texts["gateway", "gateway"] = generate_latest(own_metrics).decode()  # its samples name their service
        registry = CollectorRegistry()
        registry.register(_Labelled(texts))
        return Response(generate_latest(registry), media_type=CONTENT_TYPE)

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi(request: Request) -> dict[str, Any]:
        merged: dict[str, Any] = {
            "openapi": "3.1.0",
            "info": {"title": f"{system.name} API", "description": system.description, "version": "1"},
            "paths": {},
            "components": {"schemas": {}},
        }
        for upstream in upstreams.values():
            document = (await upstream.commands.get("/openapi.json", headers=_credentials(request))).json()
            for path, operations in document.get("paths", {}).items():
                if path.startswith(("/commands/", "/queries/", "/sagas/")):
                    merged["paths"].setdefault(path, {}).update(operations)
            merged["components"]["schemas"].update(document.get("components", {}).get("schemas", {}))
        return merged

    @app.get("/docs", include_in_schema=False)
    async def docs() -> Response:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{system.name} API")

    return app


async def _forward(request: Request, client: httpx.AsyncClient, service: str, *, path: str | None = None) -> Response:
    # The bytes the client sent, not text: a non-ASCII value reaches the service as it was, to be judged there.
    # The trace context is the gateway's own span's, so that the service's span is a child of it.
    headers = [(k, v) for k, v in request.headers.raw if k.decode("latin-1").lower() not in FORWARDED_APART]
    headers += [(k.encode(), str(v).encode()) for k, v in trace_context().items()]
    injected = next((k.decode("latin-1") for k, v in headers if _CONTROL.search(v)), None)
    if injected is not None:  # a CR or LF would start a header of its own on the wire to the service
        return problem(400, "Bad request", f"The {injected} header holds a control character", "bad-request")
    # The path as decoded by the router, encoded again: a client's %1F must not reach httpx as a raw control character.
    target = quote(path or request.url.path)
    if request.url.query:
        target += "?" + request.url.query  # as the client wrote it: repeated parameters stay repeated
    try:
        answer = await client.request(
            request.method,
            target,
            headers=headers,
            content=await request.body(),
        )
    except httpx.InvalidURL as exc:  # a query string holding what no URL may (a raw control character)
        return problem(400, "Bad request", f"The request's URL cannot be forwarded: {exc}", "bad-request")
    except httpx.LocalProtocolError:  # whatever else the HTTP client refuses to put on the wire
        return problem(400, "Bad request", "The request's headers cannot be forwarded", "bad-request")
    except httpx.TimeoutException:
        return problem(504, "Service timed out", f"The {service} service did not answer in time", "upstream-timeout")
    except httpx.TransportError:
        return problem(502, "Service unavailable", f"The {service} service cannot be reached", "upstream-unavailable")
    kept = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP | {"content-encoding"}}
    kept["x-twofold-service"] = service
    base = str(client.base_url).rstrip("/")
    if kept.get("location", "").startswith(base + "/"):  # a service's redirect names its own address, not ours
        kept["location"] = kept["location"].removeprefix(base)
    return Response(answer.content, status_code=answer.status_code, headers=kept)


def _credentials(request: Request) -> dict[str, str]:
    """The caller's ``Authorization``, for the services the gateway asks on its behalf."""
    authorization = request.headers.get("authorization")
    return {} if authorization is None else {"Authorization": authorization}


async def _status(client: httpx.AsyncClient, path: str, headers: Mapping[str, str]) -> int:
    try:
        return (await client.get(path, headers=headers)).status_code
    except httpx.TransportError:
        return 502


async def _text(client: httpx.AsyncClient, path: str, headers: Mapping[str, str]) -> str:
    try:
        answer = await client.get(path, headers=headers)
    except httpx.TransportError:
        return ""
    return answer.text if answer.status_code == 200 else ""


class _Labelled(Collector):
    """Several processes' expositions as one, each sample labelled with its service and part."""

    def __init__(self, texts: Mapping[tuple[str, str], str]) -> None:
        self._texts = texts

    def collect(self) -> Iterator[Any]:
        families: dict[str, Any] = {}
        for (service, part), text in self._texts.items():
            for family in text_string_to_metric_families(text):
                merged = families.setdefault(family.name, family)
                if merged is not family:
                    merged.samples.extend(_labelled(family.samples, service, part))
                else:
                    family.samples[:] = _labelled(family.samples, service, part)
        yield from families.values()


def _labelled(samples: Sequence[Any], service: str, part: str) -> list[Any]:
    # A sample's own service label stays: the gateway counts refusals for the service each command was for.
    return [s._replace(labels={"service": service, **s.labels, "part": part}) for s in samples]


def gateway_in_process(system: System, runtimes: Mapping[str, Runtime], **options: Any) -> FastAPI:
    """The gateway over ``runtimes`` running in this process: each served by its own app, reached without a socket.

    ``options`` go to each service's :func:`~twofold.http.create_app`; ``auth`` to the gateway too.
    ``rate_limit`` goes to the gateway alone: the services are reached only through it, and a
    limit applied at both would count each command twice.
    """
    rate_limit = options.pop("rate_limit", None)
    upstreams = {name: Upstream.in_process(create_app(runtime, **options)) for name, runtime in runtimes.items()}
    return create_gateway(system, upstreams, auth=options.get("auth"), rate_limit=rate_limit, console=runtimes)
