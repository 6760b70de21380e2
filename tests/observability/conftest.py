"""Spans recorded in memory, for the tests that ask for them; every other test runs with tracing off.

OpenTelemetry lets a process set its tracer provider once, so this sets, once, a provider that
switches: to the SDK with an in-memory exporter while a test holds ``spans``, and to the API's
no-op provider otherwise, which is what a process without ``OTEL_TRACES_EXPORTER`` runs with.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


class _Switch(trace.TracerProvider):
    def __init__(self) -> None:
        self.target: trace.TracerProvider = trace.NoOpTracerProvider()

    def get_tracer(self, name: str, *args: Any, **kwargs: Any) -> trace.Tracer:
        return _SwitchedTracer(self, name)


class _SwitchedTracer(trace.Tracer):
    def __init__(self, switch: _Switch, name: str) -> None:
        self._switch, self._name = switch, name

    def start_span(self, *args: Any, **kwargs: Any) -> trace.Span:
        return self._switch.target.get_tracer(self._name).start_span(*args, **kwargs)

    @contextmanager  # type: ignore[override]
    def start_as_current_span(self, *args: Any, **kwargs: Any) -> Iterator[trace.Span]:
        with self._switch.target.get_tracer(self._name).start_as_current_span(*args, **kwargs) as span:
            yield span


_SWITCH = _Switch()


class Spans:
    """What the test's spans were, finished ones only."""

    def __init__(self, exporter: InMemorySpanExporter) -> None:
        self._exporter = exporter

    def all(self) -> list[ReadableSpan]:
        return list(self._exporter.get_finished_spans())

    def in_trace(self, trace_id: int) -> list[ReadableSpan]:
        return [s for s in self.all() if s.context is not None and s.context.trace_id == trace_id]

    def named(self, prefix: str, trace_id: int | None = None) -> list[ReadableSpan]:
        found = self.all() if trace_id is None else self.in_trace(trace_id)
        return [s for s in found if s.name.startswith(prefix)]


@pytest.fixture
def spans() -> Iterator[Spans]:
    if trace.get_tracer_provider() is not _SWITCH:
        trace.set_tracer_provider(_SWITCH)
        assert trace.get_tracer_provider() is _SWITCH, "another tracer provider was set first"
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _SWITCH.target = provider
    try:
        yield Spans(exporter)
    finally:
        _SWITCH.target = trace.NoOpTracerProvider()
        provider.shutdown()


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id
