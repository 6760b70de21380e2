"""The operating commands are part of the ``twofold`` command line (examples/shop/tests run them)."""

from __future__ import annotations

from typer.testing import CliRunner

from twofold.cli import app


def test_twofold_offers_projections_dead_letters_and_check() -> None:
    listed = CliRunner().invoke(app, ["--help"]).output
    projections = CliRunner().invoke(app, ["projections", "--help"]).output
    dead_letters = CliRunner().invoke(app, ["dead-letters", "--help"]).output

    assert all(command in listed for command in ("projections", "dead-letters", "check"))
    assert all(command in projections for command in ("status", "rebuild", "reset"))
    assert all(command in dead_letters for command in ("list", "retry"))


def test_check_names_a_projection_the_target_lacks() -> None:
    result = CliRunner().invoke(app, ["check", "tests.monolith:shop", "--projection", "nothing.here"])

    assert result.exit_code == 2
    assert "no projection named nothing.here" in result.output
