"""``twofold serve`` is secure by default, and ``twofold token`` signs development tokens."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.http.test_auth import SECRET
from twofold.cli import app
from twofold.config import AuthSettings, check_exposure
from twofold.errors import ConfigurationError
from twofold.http.auth import Authenticator

OFF = {"TWOFOLD_AUTH_HS256_SECRET": "", "TWOFOLD_AUTH_JWKS_URL": "", "TWOFOLD_AUTH_JWKS_FILE": "", "HOST": ""}


@pytest.mark.parametrize("target", ["tests.monolith:shop", "examples.shop:shop"], ids=["service", "system"])
def test_serve_refuses_to_listen_beyond_loopback_without_authentication(target: str) -> None:
    result = CliRunner().invoke(app, ["serve", target, "--host", "0.0.0.0"], env=OFF)

    assert result.exit_code == 2
    assert "Refusing to listen on 0.0.0.0 without authentication" in result.output
    assert "TWOFOLD_AUTH_JWKS_URL" in result.output
    assert "TWOFOLD_AUTH_HS256_SECRET" in result.output


def test_the_host_variable_is_held_to_the_same_rule() -> None:
    result = CliRunner().invoke(app, ["serve", "tests.monolith:shop"], env={**OFF, "HOST": "10.0.0.7"})
    assert result.exit_code == 2
    assert "Refusing to listen on 10.0.0.7" in result.output


@pytest.mark.parametrize("target", ["tests.monolith:shop", "examples.shop:shop"], ids=["service", "system"])
def test_serve_refuses_a_bad_rate_limit_before_it_starts(
    target: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["serve", target], env={**OFF, "TWOFOLD_RATE_LIMIT_COMMANDS": "lots"})

    assert result.exit_code == 2
    assert "TWOFOLD_RATE_LIMIT_COMMANDS must be" in result.output
    assert "20/s, 600/min or 10000/h (got 'lots')" in result.output
    assert not (tmp_path / "data").exists()  # refused before any store was opened


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
def test_auth_may_be_off_on_loopback(host: str) -> None:
    check_exposure(host, None)


def test_any_host_may_be_listened_on_with_authentication() -> None:
    check_exposure("0.0.0.0", AuthSettings(hs256_secret=SECRET))
    with pytest.raises(ConfigurationError, match="Refusing to listen on ::"):
        check_exposure("::", None)


async def test_twofold_token_prints_a_token_the_services_accept() -> None:
    env = {**OFF, "TWOFOLD_AUTH_HS256_SECRET": SECRET, "TWOFOLD_AUTH_AUDIENCE": "shop-api"}
    result = CliRunner().invoke(
        app, ["token", "--scopes", "commands:* queries:*", "--sub", "ada", "--tenant", "t1"], env=env
    )

    assert result.exit_code == 0, result.output
    auth = Authenticator(AuthSettings(hs256_secret=SECRET, audience="shop-api"))
    principal = await auth.authenticate(f"Bearer {result.stdout.strip()}")
    assert (principal.subject, principal.tenant, principal.scopes) == ("ada", "t1", {"commands:*", "queries:*"})


def test_twofold_token_refuses_without_a_secret() -> None:
    result = CliRunner().invoke(app, ["token", "--scopes", "queries:*"], env=OFF)
    assert result.exit_code == 2
    assert "set it" in result.output
    assert "TWOFOLD_AUTH_HS256_SECRET" in result.output
