"""``twofold new``: the package it writes passes its own tests at once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from twofold.cli import app

ROOT = Path(__file__).resolve().parents[2]
WITHIN = 120  # seconds for the generated tests to run


def test_a_new_service_passes_its_own_tests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["new", "library"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "created library/: __init__.py domain.py service.py tests/__init__.py tests/test_service.py" in result.stdout
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    # The generated tests need no pytest plugin; pytest-asyncio, installed here for twofold's own
    # tests, only warns about its configuration, which -W error would turn into a failure.
    strict = ["-W", "error", "-p", "no:asyncio", "-p", "no:cacheprovider"]
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", *strict, "library"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=WITHIN,
        check=False,
    )
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "3 passed" in tests.stdout


def test_new_refuses_a_name_python_cannot_import_or_a_folder_that_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    bad = CliRunner().invoke(app, ["new", "My-Service"])
    assert bad.exit_code == 1
    assert "'My-Service' cannot name a Python package" in bad.stderr
    (tmp_path / "library").mkdir()
    taken = CliRunner().invoke(app, ["new", "library"])
    assert taken.exit_code == 1
    assert f"{tmp_path / 'library'} already exists" in taken.stderr
