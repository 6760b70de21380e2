"""Trace context and log context around what twofold handles: a command, a saga reaction, an import, a page.

    with command_span("shop", envelope):     # "twofold.command PlaceOrder"
        ...                                  # events appended here carry its traceparent
    trace_context()                          # {"traceparent": "00-4bf9…-00f0…-01"} or {}

Only OpenTelemetry's API is used here. Until a process installs a tracer provider
(``twofold.telemetry`` does, in ``twofold serve``, from the standard ``OTEL_*`` variables), no
span is made at all, yet a trace context that arrived with a request or a message is made
current all the same and flows on into events, messages and the commands sagas send, so that a
collector further along sees one trace.

Trace context travels as W3C ``traceparent`` and ``tracestate`` strings: in event metadata, in
command envelopes, as CloudEvents extensions and as NATS and HTTP headers. A span that handles a
batch (a projection's page, an import) continues the trace of its first event and links the
others, so that each batch shows up in the trace of what caused it.

The log context is a context variable holding the ids of what is being handled (``service``,
``command_id``, ``correlation_id``, ``causation_id``); the JSON log format writes it on every line.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar, Token
from typing import Any, TypedDict, cast

from opentelemetry import context, trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from twofold.errors import AccessDenied, ConcurrencyError, DomainError, InvalidMessage, NotCaughtUp, NotFound
from twofold.messages import Command, Envelope
from twofold.store import StoredEvent

__all__ = [
    "TRACE_FIELDS",
    "TraceContext",
    "command_span",
    "handling",
    "import_span",
    "log_context",
    "outcome_of",
    "projection_span",
    "reaction_span",
    "remote_context",
    "trace_context",
    "tracing_installed",
]

TRACE_FIELDS = ("traceparent", "tracestate")  # the W3C trace context, as metadata keys and headers
MAX_LINKS = 64  # links per batch span: enough to find the causes, bounded whatever the page size

_TRACER = trace.get_tracer("twofold")
_W3C = TraceContextTextMapPropagator()  # W3C whatever OTEL_PROPAGATORS says: the stored fields are named for it
_NEW_TRACE = trace.set_span_in_context(trace.INVALID_SPAN)  # a parent that starts a trace of its own
_NO_PROVIDER = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)  # what a process without an SDK has
_LOG_CONTEXT: ContextVar[Mapping[str, str]] = ContextVar("twofold_log_context", default={})  # noqa: B039 - never mutated
_OUTCOMES = (
    (asyncio.CancelledError, "cancelled"),
    (DomainError, "rejected"),
    (ConcurrencyError, "conflict"),
    (InvalidMessage, "invalid"),
    (NotFound, "not_found"),
    (AccessDenied, "denied"),
    (NotCaughtUp, "not_caught_up"),
)


class TraceContext(TypedDict, total=False):
    """W3C trace context, as event metadata, envelope fields and headers carry it."""

    traceparent: str
    tracestate: str


def trace_context() -> TraceContext:
    """The current span's context as ``traceparent`` (and ``tracestate``); empty when there is none."""
    if not trace.get_current_span().get_span_context().is_valid:
        return {}
    carrier: dict[str, str] = {}
    _W3C.inject(carrier)
    return cast(TraceContext, carrier)


def remote_context(carrier: Mapping[str, Any]) -> Context | None:
    """The context a ``traceparent`` in ``carrier`` (metadata, an envelope's fields, headers) names, if any."""
    traceparent = carrier.get("traceparent")
    if not isinstance(traceparent, str):
        return None
    fields = {"traceparent": traceparent}
    tracestate = carrier.get("tracestate")
    if isinstance(tracestate, str):
        fields["tracestate"] = tracestate
    return _W3C.extract(fields)


def log_context() -> Mapping[str, str]:
    """The ids of what this task is handling, for log lines."""
    return _LOG_CONTEXT.get()


class _Scope:
    """Log fields and, when given, a remote trace context, current for the duration of a block.

    A class rather than a generator: it is entered on every command, where a generator-based
    context manager's overhead is a measurable share of a command's time.
    """

    __slots__ = ("_fields", "_log_token", "_parent", "_trace_token")

    def __init__(self, fields: Mapping[str, str | None], parent: Context | None = None) -> None:
        self._fields = {k: v for k, v in fields.items() if v is not None}
        self._parent = parent
        self._trace_token: Token[Context] | None = None

    def __enter__(self) -> None:
        self._log_token = _LOG_CONTEXT.set({**_LOG_CONTEXT.get(), **self._fields})
        if self._parent is not None:
            self._trace_token = context.attach(self._parent)

    def __exit__(self, *exc_info: object) -> None:
        if self._trace_token is not None:
            context.detach(self._trace_token)
        _LOG_CONTEXT.reset(self._log_token)


def handling(**fields: str | None) -> AbstractContextManager[None]:
    """Add ``fields`` (those not ``None``) to the log context for the duration of the block."""
    return _Scope(fields)


def outcome_of(exc: BaseException) -> str:
    """What became of a command or reaction that raised ``exc``: ``rejected``, ``conflict``, ``invalid``,
    ``not_found``, ``denied``, ``not_caught_up``, ``cancelled`` or ``error``."""
    return next((label for cls, label in _OUTCOMES if isinstance(exc, cls)), "error")


def tracing_installed() -> bool:
    """Whether this process has a tracer provider of its own (the SDK's, usually).

    Until it has, no span is made at all: a span from the API's no-op tracer records nothing but
    still costs tens of microseconds of context managers. Trace context a message brought is made
    current all the same, so that it flows on into events and the commands sagas send.
    """
    return not isinstance(trace.get_tracer_provider(), _NO_PROVIDER)


def command_span(service: str, envelope: Envelope[Command]) -> AbstractContextManager[object]:
    """``twofold.command <Type>``: a child of the envelope's trace context, else of the current span.

    Its ``twofold.outcome`` is ``ok`` or what :func:`outcome_of` names; only ``error`` marks the
    span failed, since a refusal is an answer, not a fault.
    """
    parent = remote_context({"traceparent": envelope.traceparent, "tracestate": envelope.tracestate})
    fields = {
        "service": service,
        "command_id": envelope.message_id,
        "correlation_id": envelope.correlation_id,
        "causation_id": envelope.causation_id,
    }
    if not tracing_installed():
        return _Scope(fields, parent)
    attributes = {
        "twofold.service": service,
        "twofold.command.id": envelope.message_id,
        "twofold.command.type": envelope.type_name,
        "twofold.correlation_id": envelope.correlation_id,
        "twofold.causation_id": envelope.causation_id or "",
        "twofold.principal": envelope.principal or "",
        "twofold.tenant": envelope.tenant or "",
    }
    return _span(f"twofold.command {envelope.type_name}", parent, SpanKind.INTERNAL, attributes, fields)


def reaction_span(
    saga: str, instance: str, trigger: Mapping[str, Any], trigger_type: str
) -> AbstractContextManager[object]:
    """``twofold.saga <name>``: one reaction, a child of the trigger's context (``trigger``: its metadata).

    A deadline has no trigger event: pass the instance's latest reaction's metadata, so that what
    it sends stays in the same trace.
    """
    parent = remote_context(trigger) or _NEW_TRACE
    fields = {"correlation_id": trigger.get("correlation_id")}
    if not tracing_installed():
        return _Scope(fields, parent)
    attributes = {"twofold.saga": saga, "twofold.saga.instance": instance, "twofold.saga.trigger": trigger_type}
    return _span(f"twofold.saga {saga}", parent, SpanKind.INTERNAL, attributes, fields)


def projection_span(projection: str, records: Sequence[StoredEvent]) -> AbstractContextManager[object]:
    """``twofold.project <name>``: one page a projection applies (``records``: the events it handles)."""
    return _batch_span(f"twofold.project {projection}", records, SpanKind.INTERNAL, {"twofold.projection": projection})


def import_span(source: str, records: Sequence[StoredEvent]) -> AbstractContextManager[object]:
    """``twofold.import <source>``: one batch of another service's events imported into this one's store."""
    return _batch_span(f"twofold.import {source}", records, SpanKind.CONSUMER, {"twofold.source": source})


def _batch_span(
    name: str, records: Sequence[StoredEvent], kind: SpanKind, attributes: dict[str, str]
) -> AbstractContextManager[object]:
    """A span over a batch of events: a child of the first's trace context, linking the others' (up to ``MAX_LINKS``).

    Without trace context on the first, the batch starts a trace of its own: a runner's task
    must never become a child of whatever request happened to start it.
    """
    parent = (remote_context(records[0].metadata) if records else None) or _NEW_TRACE
    if not tracing_installed():
        return _Scope({}, parent)
    span_attributes: dict[str, str | int] = {"twofold.events": len(records), **attributes}
    if records:
        span_attributes["twofold.position.first"] = records[0].position
        span_attributes["twofold.position.last"] = records[-1].position
    return _span(name, parent, kind, span_attributes, {}, records)


@contextmanager
def _span(
    name: str,
    parent: Context | None,
    kind: SpanKind,
    attributes: Mapping[str, str | int],
    fields: Mapping[str, str | None],
    linked: Sequence[StoredEvent] = (),
) -> Iterator[Span]:
    with (
        _TRACER.start_as_current_span(
            name,
            context=parent,
            kind=kind,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span,
        _Scope(fields),
    ):
        if linked and span.is_recording():  # links cost a parse each: only for a span that is kept
            for link in _links(linked, trace.get_current_span(parent).get_span_context() if parent else None):
                span.add_link(link)
        with _outcome(span):
            yield span


def _links(records: Sequence[StoredEvent], parent: SpanContext | None) -> Iterator[SpanContext]:
    seen = {parent.span_id} if parent is not None else set()
    parents = dict.fromkeys(r.metadata.get("traceparent") for r in records)  # one parse per distinct cause
    for traceparent in parents:
        context_of = remote_context({"traceparent": traceparent})
        linked = trace.get_current_span(context_of).get_span_context() if context_of is not None else None
        if linked is not None and linked.is_valid and linked.span_id not in seen:
            seen.add(linked.span_id)
            yield linked
            if len(seen) >= MAX_LINKS:
                return


@contextmanager
def _outcome(span: Span) -> Iterator[None]:
    try:
        yield
    except BaseException as exc:
        outcome = outcome_of(exc)
        span.set_attribute("twofold.outcome", outcome)
        if outcome == "error":
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        raise
    span.set_attribute("twofold.outcome", "ok")
