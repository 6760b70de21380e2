"""A twofold process's telemetry, set up from its environment: where traces go, and how logs look.

    configure(os.environ, service="orders", part="commands")   # what `twofold serve` does first

Traces follow OpenTelemetry's own variables, so any collector's instructions apply:

- ``OTEL_TRACES_EXPORTER``: ``none``, ``otlp`` (OTLP over HTTP), ``console``, or several
  comma-separated; by default ``otlp`` when an OTLP endpoint is set, else ``none``.
- ``OTEL_EXPORTER_OTLP_ENDPOINT``: the collector, e.g. ``http://localhost:4318`` (the exporter
  adds ``/v1/traces``); the exporter reads its other ``OTEL_EXPORTER_OTLP_*`` settings itself.
- ``OTEL_SERVICE_NAME``: the ``service.name`` resource attribute (default: the service's name,
  or the system's for a whole system in one process).
- ``OTEL_SDK_DISABLED=true``: export nothing, whatever else is set.

The default differs from OpenTelemetry's (``otlp``): a process nobody pointed at a collector
exports nothing and pays nothing. Every span carries the resource attributes ``service.name``
and ``twofold.part`` (``all``, ``commands``, ``queries``, ``workers``, ``gateway``).
``TWOFOLD_LOG_FORMAT=json`` makes every log line one JSON object (:mod:`twofold.logs`).

This module imports the SDK, which the core never does; it is needed only when traces are exported.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from opentelemetry import trace

from twofold.errors import ConfigurationError
from twofold.logs import configure_logging

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

__all__ = ["EXPORTERS", "configure", "configure_tracing", "tracer_provider", "traces_exporters"]

EXPORTERS = ("otlp", "console")
_ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def configure(environ: Mapping[str, str], *, service: str, part: str) -> None:
    """Set up logs and trace export for this process, once, before it serves anything."""
    configure_logging(environ)
    configure_tracing(environ, service=service, part=part)


def traces_exporters(environ: Mapping[str, str]) -> list[str]:
    """The exporters the environment asks for: ``[]``, ``["otlp"]``, ``["console"]``, or both.

    Raises :class:`ConfigurationError` for a name that is none of them.
    """
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    chosen = environ.get("OTEL_TRACES_EXPORTER")
    if chosen is None:
        return ["otlp"] if any(environ.get(name) for name in _ENDPOINTS) else []
    names = [name.strip().lower() for name in chosen.split(",") if name.strip()]
    unknown = [name for name in names if name not in (*EXPORTERS, "none")]
    if unknown:
        raise ConfigurationError(
            f"OTEL_TRACES_EXPORTER={chosen!r}: {unknown[0]!r} is not an exporter twofold knows;"
            " set it to none, otlp or console (several: otlp,console)"
        )
    return [name for name in dict.fromkeys(names) if name != "none"]


def configure_tracing(environ: Mapping[str, str], *, service: str, part: str) -> TracerProvider | None:
    """Install the provider :func:`tracer_provider` makes as this process's; ``None`` when there is none to install."""
    provider = tracer_provider(environ, service=service, part=part)
    if provider is not None:
        trace.set_tracer_provider(provider)
    return provider


def tracer_provider(environ: Mapping[str, str], *, service: str, part: str) -> TracerProvider | None:
    """A tracer provider exporting in batches to what the environment names; ``None`` if it names nothing."""
    exporters = traces_exporters(environ)
    if not exporters:
        return None
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ModuleNotFoundError as exc:
        raise ConfigurationError(
            f"OTEL_TRACES_EXPORTER asks for {', '.join(exporters)}, which needs the otel extra:"
            " pip install 'twofold[otel]' (or set OTEL_TRACES_EXPORTER=none)"
        ) from exc
    name = environ.get("OTEL_SERVICE_NAME") or service
    provider = TracerProvider(resource=Resource.create({"service.name": name, "twofold.part": part}))
    for exporter in exporters:
        # In batches, off the request path: a slow or absent collector never slows a command down.
        provider.add_span_processor(BatchSpanProcessor(_exporter(exporter)))
    return provider


def _exporter(name: str) -> SpanExporter:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ModuleNotFoundError as exc:
        raise ConfigurationError(
            "OTEL_TRACES_EXPORTER=otlp needs the OTLP exporter: pip install 'twofold[otel]'"
        ) from exc
    return OTLPSpanExporter()  # it reads OTEL_EXPORTER_OTLP_* itself (endpoint, headers, timeout)
