"""twofold serve refuses a telemetry setting it cannot follow, before it opens any store."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.http.test_auth_cli import OFF
from twofold.cli import app


@pytest.mark.parametrize("target", ["tests.monolith:shop", "examples.shop:shop"], ids=["service", "system"])
@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("TWOFOLD_LOG_FORMAT", "yaml", "TWOFOLD_LOG_FORMAT='yaml' is not a log format; set it to text or json"),
        (
            "OTEL_TRACES_EXPORTER",
            "zipkin",
            "'zipkin' is not an exporter twofold knows; set it to none, otlp or console",
        ),
    ],
)
def test_serve_refuses_a_bad_telemetry_setting_before_it_starts(
    target: str, variable: str, value: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["serve", target], env={**OFF, variable: value})

    assert result.exit_code == 2
    assert message in " ".join(result.output.split())  # the terminal's width may wrap it
    assert not (tmp_path / "data").exists()
