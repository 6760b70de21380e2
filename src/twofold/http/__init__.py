"""HTTP APIs for a twofold service (needs ``pip install 'twofold[http]'``)."""

try:
    import fastapi  # noqa: F401
except ModuleNotFoundError as exc:  # pragma: no cover - depends on what is installed
    raise ModuleNotFoundError("twofold.http needs the http extra: pip install 'twofold[http]'") from exc

from twofold.http.app import create_app
from twofold.http.auth import Authenticator, Principal
from twofold.http.ratelimit import RateLimiter

__all__ = ["Authenticator", "Principal", "RateLimiter", "create_app"]
