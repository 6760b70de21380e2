"""Bearer tokens (JWT) in, a principal and its scopes out; each route asks for the scope it needs.

    auth = Authenticator(AuthSettings(jwks_file=Path("keys.json"), audience="shop", issuer="https://id.example"))
    app = create_app(runtime, auth=auth)

    POST /commands/PlaceOrder   Authorization: Bearer eyJ…   (scope "commands:PlaceOrder" or "commands:*")
    GET  /queries/StockLevel    Authorization: Bearer eyJ…   (scope "queries:StockLevel" or "queries:*")

Reads and writes are apart: no ``queries:`` scope lets a token write. :class:`Guard`, an ASGI
middleware, checks every request before any route runs, and hands the route the caller's
:class:`Principal` (``sub`` and ``tenant`` claims), which every event the command appends records.
Which route needs which scope is :func:`scopes_for`'s table (docs/security.md); an internal
command (``Command`` declared ``internal=True``) needs its own scope or ``commands:internal``,
never ``commands:*``. When the JWK set URL cannot be fetched no token can be judged: 503, not 401.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

try:
    import jwt
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
except ModuleNotFoundError as exc:  # pragma: no cover - depends on what is installed
    raise ModuleNotFoundError("Authentication needs the http extra: pip install 'twofold[http]'") from exc
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from twofold.config import AuthSettings
from twofold.errors import ConfigurationError
from twofold.http.problems import (
    Forbidden,
    KeysUnavailable,
    Unauthorized,
    forbidden_response,
    keys_unavailable_response,
    unauthorized_response,
)
from twofold.messages import Command
from twofold.service import Policy
from twofold.tenancy import TENANT_PATTERN, TENANT_RULE

__all__ = ["ANONYMOUS", "Authenticator", "Guard", "Principal", "check_policy", "principal_of", "scopes_for"]

log = logging.getLogger("twofold.http")
HMAC = ("HS256",)
ASYMMETRIC = ("RS256", "ES256")
OPEN = ("/health", "/docs")  # no token asked: liveness, and the page that asks /openapi.json (which needs one)
OPERATIONS_READ = ("operations:read", "operations:*")
CONSOLE_READ = ("console:read", "queries:*")  # the console only reads, as queries do
EVERY_TENANT = ("/sagas", "/dead-letters", "/console")  # operators' views, across tenants: never for a tenant's token
INTERNAL = "commands:internal"  # every internal command, which commands:* does not cover
# Tenant ids become schema and file names downstream: a short, plain name, never a path or a quote.
# \Z, not $: $ would let a trailing newline through.
_STATE_KEY = "twofold.principal"
JWKS_TIMEOUT = 5.0  # seconds to wait for the key set: each request that needs it waits this long at worst
JWKS_RETRY_AFTER = 5  # seconds a client is told to wait when the key set cannot be fetched


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling (the token's ``sub``), for which tenant, and with which scopes."""

    subject: str | None
    scopes: frozenset[str]
    tenant: str | None = None
    anonymous: bool = False  # authentication is off: every route is open, as on loopback

    def allows(self, *any_of: str) -> bool:
        """True when the principal holds one of ``any_of``; ``"commands:"`` (a prefix) matches any commands scope."""
        if self.anonymous:
            return True
        return any(s in self.scopes or (s.endswith(":") and _has_prefix(self.scopes, s)) for s in any_of)


def _has_prefix(scopes: frozenset[str], prefix: str) -> bool:
    return any(scope.startswith(prefix) for scope in scopes)


ANONYMOUS = Principal(None, frozenset(), None, anonymous=True)


class Authenticator:
    """Checks a bearer token against :class:`~twofold.config.AuthSettings` and returns its :class:`Principal`.

    Only the configured family of algorithms is accepted: HS256 with a shared secret, RS256/ES256
    with a JWK set; ``none`` never. ``exp`` and ``sub`` are required, ``aud`` and ``iss`` too when set.
    """

    def __init__(self, settings: AuthSettings) -> None:
        self.settings = settings
        self._jwks_client = _KeySource(settings) if settings.jwks_url else None
        self._keys_down = False  # the key set could not be fetched last time: logged once, not per request
        self._jwks = _read_jwks(settings) if settings.jwks_file is not None else None
        self.algorithms = HMAC if settings.hs256_secret is not None else ASYMMETRIC

    async def authenticate(self, authorization: str | None) -> Principal:
        """The principal of an ``Authorization`` header; :class:`Unauthorized` when it has none or a bad one."""
        token = _bearer(authorization)
        try:
            header = jwt.get_unverified_header(token)
            key, algorithms = await self._key(header)
            claims = jwt.decode(
                token,
                key,
                algorithms=list(algorithms),
                audience=self.settings.audience,
                issuer=self.settings.issuer,
                leeway=self.settings.leeway_seconds,
                options={"require": self._required()},
            )
        except jwt.PyJWTError as exc:
            raise Unauthorized(_why(exc, self.algorithms), invalid_token=True) from None
        return _principal(claims)

    def _required(self) -> list[str]:
        required = ["exp", "sub"]
        required += ["aud"] if self.settings.audience is not None else []
        return required + (["iss"] if self.settings.issuer is not None else [])

    async def _key(self, header: dict[str, Any]) -> tuple[Any, Sequence[str]]:
        algorithm = header.get("alg")
        if algorithm not in self.algorithms:
            raise jwt.InvalidAlgorithmError(str(algorithm))
        if self.settings.hs256_secret is not None:
            return self.settings.hs256_secret, HMAC
        kid = header.get("kid")
        if self._jwks_client is not None:
            # PyJWKClient fetches with urllib, which blocks: off the event loop (keys are cached).
            # An unknown kid makes it fetch the set again (at most every 30 s): keys rotate without a restart.
            found = await self._fetched_key(self._jwks_client, kid)
        else:
            assert self._jwks is not None
            found = _pick(self._jwks, kid)
        return found.key, _family(found.key)

    async def _fetched_key(self, client: jwt.PyJWKClient, kid: object) -> jwt.PyJWK:
        """The key ``kid`` names, from the key set URL; :class:`KeysUnavailable` when it cannot be fetched."""
        try:
            found = await asyncio.to_thread(
                lambda: client.get_signing_key(kid) if isinstance(kid, str) else _pick(client.get_jwk_set(), kid)
            )
        except jwt.PyJWKClientConnectionError as exc:
            if not self._keys_down:
                log.error("cannot fetch the JWK set at %s (%s); answering 503 until it can", client.uri, exc)
            self._keys_down = True
            raise KeysUnavailable(JWKS_RETRY_AFTER) from None
        if self._keys_down:
            log.warning("the JWK set at %s can be fetched again", client.uri)
            self._keys_down = False
        return found

    def token(self, subject: str, scopes: Sequence[str], *, tenant: str | None = None, seconds: int = 3600) -> str:
        """A development token signed with the HS256 secret (``twofold token``, ``make token``)."""
        if self.settings.hs256_secret is None:
            raise ConfigurationError("Only an HS256 secret can sign tokens here: set TWOFOLD_AUTH_HS256_SECRET")
        now = int(time.time())
        claims: dict[str, Any] = {"sub": subject, "scope": " ".join(scopes), "iat": now, "exp": now + seconds}
        if tenant is not None:
            claims["tenant"] = tenant
        if self.settings.audience is not None:
            claims["aud"] = self.settings.audience
        if self.settings.issuer is not None:
            claims["iss"] = self.settings.issuer
        return jwt.encode(claims, self.settings.hs256_secret, algorithm="HS256")


class _KeySource(jwt.PyJWKClient):
    """A :class:`jwt.PyJWKClient` for which any fetch that yields no usable key set is a connection error.

    PyJWT raises a connection error for a refused connection or an HTTP error, but a ``ValueError``
    for a body that is not JSON and a ``PyJWKSetError`` for a set without usable keys: all three
    mean the identity provider is not serving keys, which is not the token's fault (503, not 401).
    """

    def __init__(self, settings: AuthSettings) -> None:
        assert settings.jwks_url is not None
        super().__init__(settings.jwks_url, cache_keys=True, lifespan=settings.jwks_cache_seconds, timeout=JWKS_TIMEOUT)

    def fetch_data(self) -> Any:
        try:
            data = super().fetch_data()
            jwt.PyJWKSet.from_dict(data)
        except jwt.PyJWKClientConnectionError:
            raise
        except (ValueError, jwt.PyJWKClientError, jwt.PyJWKSetError) as exc:
            raise jwt.PyJWKClientConnectionError(f"The JWK set URL served no usable key set: {exc}") from exc
        return data


def _read_jwks(settings: AuthSettings) -> jwt.PyJWKSet:
    assert settings.jwks_file is not None
    try:
        return jwt.PyJWKSet.from_dict(json.loads(settings.jwks_file.read_text()))
    except (OSError, ValueError, jwt.PyJWTError) as exc:
        raise ConfigurationError(
            f'TWOFOLD_AUTH_JWKS_FILE={str(settings.jwks_file)!r} is not a readable JWK set ({{"keys": [...]}}): {exc}'
        ) from exc


class _NoKey(jwt.InvalidTokenError):
    """No key of the set matches the token's ``kid``."""


def _pick(keys: jwt.PyJWKSet, kid: object) -> jwt.PyJWK:
    """The key named by ``kid``; a token without one is checked against the set's only key."""
    if kid is None and len(keys.keys) == 1:
        return keys.keys[0]
    for key in keys.keys:
        if isinstance(kid, str) and key.key_id == kid:
            return key
    raise _NoKey()


def _family(key: Any) -> Sequence[str]:
    """The one algorithm a public key may verify: an RSA key never checks an ES256 token, nor the reverse."""
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        return ("RS256",)
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        return ("ES256",)
    raise jwt.InvalidKeyError("Only RSA and EC keys are accepted")


def _bearer(authorization: str | None) -> str:
    if authorization is None:
        raise Unauthorized("This route needs a bearer token: send Authorization: Bearer <token>")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Send the token as Authorization: Bearer <token>", invalid_token=True)
    return token.strip()


def _why(exc: jwt.PyJWTError, algorithms: Sequence[str]) -> str:
    """What was wrong with a token, in words that never quote it."""
    if isinstance(exc, jwt.ExpiredSignatureError):
        return "The token has expired"
    if isinstance(exc, jwt.InvalidAudienceError):
        return "The token is not meant for this audience"
    if isinstance(exc, jwt.InvalidIssuerError):
        return "The token's issuer is not the one trusted here"
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"The token lacks the required {exc.claim!r} claim"
    if isinstance(exc, jwt.InvalidSignatureError):
        return "The token's signature does not verify"
    if isinstance(exc, jwt.InvalidAlgorithmError):
        return f"The token's algorithm is not accepted here (accepted: {', '.join(algorithms)})"
    if isinstance(exc, jwt.ImmatureSignatureError):
        return "The token is not valid yet"
    if isinstance(exc, _NoKey | jwt.PyJWKClientError | jwt.PyJWKSetError):
        return "No signing key is known for the token's key id (kid)"
    if isinstance(exc, jwt.DecodeError):
        return "The token is not a well-formed JWT"
    return "The token is not valid"


def _principal(claims: dict[str, Any]) -> Principal:
    subject, tenant = claims.get("sub"), claims.get("tenant")
    raw = claims.get("scope", claims.get("scopes", []))
    scopes = raw.split() if isinstance(raw, str) else raw
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        raise Unauthorized("The token's scope must be a space-separated string, or scopes a list", invalid_token=True)
    if not isinstance(subject, str):
        raise Unauthorized("The token's sub claim must be a string", invalid_token=True)
    if tenant is not None and not (isinstance(tenant, str) and TENANT_PATTERN.match(tenant)):
        raise Unauthorized(f"The token's tenant claim is invalid: {TENANT_RULE}", invalid_token=True)
    return Principal(subject, frozenset(scopes), tenant)


def local_path(path: str) -> str:
    """The path a service serves for one the gateway forwards: ``/services/orders/commands/X`` → ``/commands/X``."""
    if path.startswith("/services/"):
        return "/" + path.removeprefix("/services/").partition("/")[2]
    return path


def scopes_for(method: str, path: str, internal: Collection[str] = ()) -> tuple[str, ...] | None:
    """The scopes of which a request needs one; ``()`` for any valid token, ``None`` for no token at all.

    ``/services/{name}/…`` (the gateway's way through to one service) needs what ``/…`` needs.
    A command named in ``internal`` needs its own scope or ``commands:internal``: ``commands:*``
    is what a client is given, and internal commands are for other services.
    """
    path = local_path(path)
    parts = path.strip("/").split("/")
    if path in OPEN:
        return None
    if parts[0] == "commands" and len(parts) == 2:
        if method != "POST":
            return ("commands:", *OPERATIONS_READ)  # which command's status a caller may read: http.commands
        return (f"commands:{parts[1]}", INTERNAL if parts[1] in internal else "commands:*")
    if parts[0] == "queries" and len(parts) == 2:
        return (f"queries:{parts[1]}", "queries:*")
    if parts[0] == "sagas":
        return ("sagas:read", "queries:*")
    if parts[0] == "console":
        return CONSOLE_READ
    if parts[0] == "dead-letters":
        return ("operations:*",) if method != "GET" else OPERATIONS_READ
    if path in ("/ready", "/metrics", "/openapi.json"):
        return OPERATIONS_READ
    return ()  # anything else (a 404 to be): a valid token, no scope


class Guard:
    """ASGI middleware: authenticate every request and check its scope before any route runs.

    With ``auth=None`` every request passes as :data:`ANONYMOUS` (principal ``None``), which
    ``twofold serve`` allows on loopback only. ``internal`` names the internal commands
    (:attr:`twofold.Command.internal`), which ``commands:*`` does not cover.
    """

    def __init__(self, app: ASGIApp, auth: Authenticator | None = None, internal: Collection[str] = ()) -> None:
        self.app = app
        self.auth = auth
        self.internal = frozenset(internal)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.auth is None:
            if scope["type"] == "http":
                scope.setdefault("state", {})[_STATE_KEY] = ANONYMOUS
            await self.app(scope, receive, send)
            return
        needed = scopes_for(scope["method"], scope["path"], self.internal)
        if needed is not None:
            request = Request(scope)
            try:
                principal = await self.auth.authenticate(request.headers.get("authorization"))
            except Unauthorized as exc:
                await unauthorized_response(exc)(scope, receive, send)
                return
            except KeysUnavailable as exc:
                await keys_unavailable_response(exc)(scope, receive, send)
                return
            if needed and not principal.allows(*needed):
                refusal = Forbidden(_needs(needed), scope=needed[0])
                await forbidden_response(refusal)(scope, receive, send)
                return
            if principal.tenant is not None and local_path(scope["path"]).startswith(EVERY_TENANT):
                refusal = Forbidden("This route shows every tenant's data: it takes a token without a tenant")
                await forbidden_response(refusal)(scope, receive, send)
                return
            scope.setdefault("state", {})[_STATE_KEY] = principal
        await self.app(scope, receive, send)


def _needs(needed: tuple[str, ...]) -> str:
    wanted = " or ".join(s + "…" if s.endswith(":") else s for s in needed)
    if INTERNAL in needed:
        command = needed[0].removeprefix("commands:")
        return f"This route needs the scope {wanted}: {command} is internal, and commands:* does not cover it"
    return f"This route needs the scope {wanted}"


def principal_of(request: Request) -> Principal:
    """The principal :class:`Guard` found for this request (:data:`ANONYMOUS` where none ran)."""
    found = request.scope.get("state", {}).get(_STATE_KEY, ANONYMOUS)
    assert isinstance(found, Principal)
    return found


def check_policy(policies: Mapping[type[Command], Policy], principal: Principal, command: Command) -> None:
    """Raise :class:`Forbidden` when the service's policy for this command refuses this principal."""
    policy = policies.get(type(command))
    if policy is not None and not policy(principal.subject, command):
        who = principal.subject or "an anonymous caller"
        raise Forbidden(f"The policy for {command.type_name} refuses it to {who}", command=command.type_name)
