"""A server span per HTTP request, continuing the caller's W3C ``traceparent`` (or starting a trace).

    app.add_middleware(RequestSpans)

The span is named after the route's template once routing has found it (``POST /commands/PlaceOrder``,
``GET /commands/{command_id}``), so that names stay few whatever the ids in the path; a request
no route takes keeps the bare method. Everything the request causes (the command's span, the
events' ``traceparent``, a gateway's forwarded request) is inside it.
"""

from __future__ import annotations

import inspect
from typing import Any

from fastapi import FastAPI
from opentelemetry import context, trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from twofold.observability import remote_context, tracing_installed

__all__ = ["RequestSpans", "without_native_spans"]

_TRACER = trace.get_tracer("twofold.http")
_TRACE_HEADERS = {b"traceparent", b"tracestate"}


def without_native_spans() -> dict[str, Any]:
    """``FastAPI(...)`` keyword arguments that turn off the server spans recent FastAPI makes by itself.

    Those appear only once an SDK is installed; :class:`RequestSpans` makes one span per request
    whatever FastAPI's version, and passes a caller's trace context on even without an SDK. With
    both, every request would have two server spans.
    """
    if "telemetry" in inspect.signature(FastAPI).parameters:
        return {"telemetry": {"tracing": False, "operation_spans": False}}
    return {}


class RequestSpans:
    """Pure ASGI middleware: with no tracer provider installed, a request pays for a header lookup only."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"] if k in _TRACE_HEADERS}
        if not tracing_installed():  # no span to make, but the caller's trace context still flows on
            await self._without_span(scope, receive, send, remote_context(carrier))
            return
        method = scope["method"]
        attributes = {"http.request.method": method, "url.path": scope["path"]}
        with _TRACER.start_as_current_span(
            method, context=remote_context(carrier), kind=SpanKind.SERVER, attributes=attributes
        ) as span:

            async def send_status(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status = message["status"]
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_status(Status(StatusCode.ERROR))
                await send(message)

            try:
                await self.app(scope, receive, send_status)
            finally:
                route = getattr(scope.get("route"), "path", None)  # FastAPI records the route it matched
                if route is not None and span.is_recording():
                    span.update_name(f"{method} {route}")
                    span.set_attribute("http.route", route)

    async def _without_span(self, scope: Scope, receive: Receive, send: Send, parent: Context | None) -> None:
        token = context.attach(parent) if parent is not None else None
        try:
            await self.app(scope, receive, send)
        finally:
            if token is not None:
                context.detach(token)
