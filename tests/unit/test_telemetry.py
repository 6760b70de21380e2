"""Trace export and the log format, as the environment sets them for a twofold process."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator

import pytest

from twofold.errors import ConfigurationError
from twofold.logs import JsonFormatter, configure_logging, log_format
from twofold.observability import handling
from twofold.telemetry import tracer_provider, traces_exporters


@pytest.mark.parametrize(
    ("environ", "exporters"),
    [
        ({}, []),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://localhost:4318"}, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://localhost:4318/v1/traces"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://localhost:4318"}, []),
        ({"OTEL_TRACES_EXPORTER": "console"}, ["console"]),
        ({"OTEL_TRACES_EXPORTER": " OTLP , console,otlp"}, ["otlp", "console"]),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, []),
    ],
)
def test_traces_are_exported_only_where_the_environment_names_an_exporter_or_an_endpoint(
    environ: dict[str, str], exporters: list[str]
) -> None:
    assert traces_exporters(environ) == exporters


def test_an_unknown_exporter_is_refused_with_the_ones_there_are() -> None:
    with pytest.raises(ConfigurationError, match=r"'zipkin' is not an exporter twofold knows; set it to none, otlp or"):
        traces_exporters({"OTEL_TRACES_EXPORTER": "zipkin"})


def test_no_provider_is_made_when_nothing_is_exported() -> None:
    assert tracer_provider({}, service="orders", part="commands") is None


@pytest.mark.parametrize(("environ", "name"), [({}, "orders"), ({"OTEL_SERVICE_NAME": "orders-eu"}, "orders-eu")])
def test_spans_name_the_service_and_the_part_of_it_the_process_plays(environ: dict[str, str], name: str) -> None:
    provider = tracer_provider({"OTEL_TRACES_EXPORTER": "console", **environ}, service="orders", part="workers")
    assert provider is not None
    try:
        attributes = provider.resource.attributes
        assert (attributes["service.name"], attributes["twofold.part"]) == (name, "workers")
    finally:
        provider.shutdown()


def test_the_log_format_is_text_unless_json_is_asked_for() -> None:
    assert log_format({}) == "text"
    assert log_format({"TWOFOLD_LOG_FORMAT": "JSON"}) == "json"
    with pytest.raises(
        ConfigurationError, match="TWOFOLD_LOG_FORMAT='yaml' is not a log format; set it to text or json"
    ):
        log_format({"TWOFOLD_LOG_FORMAT": "yaml"})


@pytest.fixture
def root_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("root_logging")
def test_a_json_log_line_is_one_object_with_the_ids_of_what_is_being_handled(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging({"TWOFOLD_LOG_FORMAT": "json"})
    with handling(service="orders", command_id="c-1", correlation_id="r-1", causation_id=None):
        logging.getLogger("twofold.runtime").warning("orders refused %s", "PlaceOrder")
    logging.getLogger("examples.shop").info("Started")  # any logger's lines, outside any work

    handled, outside = (json.loads(line) for line in capsys.readouterr().err.splitlines())
    assert handled.pop("time").endswith("Z")
    assert handled == {
        "level": "WARNING",
        "logger": "twofold.runtime",
        "message": "orders refused PlaceOrder",
        "service": "orders",
        "command_id": "c-1",
        "correlation_id": "r-1",
    }
    assert set(outside) == {"time", "level", "logger", "message"}


def test_a_json_log_line_carries_the_exception() -> None:
    try:
        raise ValueError("bad")
    except ValueError:
        record = logging.LogRecord("twofold", logging.ERROR, __file__, 1, "failed", None, exc_info=sys.exc_info())
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "failed"
    assert "ValueError: bad" in line["exception"]
