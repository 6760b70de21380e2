"""The one place where errors become ``application/problem+json`` responses (RFC 9457).

Every error a client can cause maps to a status and a problem document that says what failed, with
the facts as fields (``errors``, ``stream_id``, ``current_position``…). Nothing else reaches a
client: an unexpected error is logged here and answered with a bare 500.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from twofold.errors import (
    AccessDenied,
    BrokerError,
    ConcurrencyError,
    ConfigurationError,
    DomainError,
    FieldError,
    InvalidMessage,
    NotCaughtUp,
    NotFound,
    StoreError,
)
from twofold.messages import field_path

__all__ = [
    "PROBLEM_SCHEMA",
    "BadRequest",
    "Forbidden",
    "KeysUnavailable",
    "PayloadTooLarge",
    "TooManyRequests",
    "Unauthorized",
    "UnsupportedMediaType",
    "forbidden_response",
    "install",
    "keys_unavailable_response",
    "problem",
    "problem_responses",
    "too_many_requests_response",
    "unauthorized_response",
]

log = logging.getLogger("twofold.http")
MEDIA_TYPE = "application/problem+json"


# The shape of every problem document, as OpenAPI components hold it (``#/components/schemas/Problem``).
PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "An RFC 9457 problem: what failed, with the facts as fields (errors, positions…)",
    "type": "object",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["field", "message"],
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
}
_MEANINGS = {
    400: "Malformed: not JSON, or a header with an impossible value",
    404: "No such type, command or instance",
    409: "Rejected by a domain rule, or a concurrency conflict",
    413: "The body is over the limit",
    415: "The body is not JSON",
    422: "Validation failed; every bad field is named in errors",
    429: "Over the caller's command rate limit; Retry-After says when to send again",
    503: "A store or the broker is out of reach; try again",
    504: "The read models did not reach X-Min-Position in time",
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The problem+json answers a route may give, for its OpenAPI ``responses``."""
    content = {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    return {status: {"description": _MEANINGS[status], "content": content} for status in statuses}


class BadRequest(Exception):
    """The request itself is malformed: not JSON, or a header with an impossible value."""


class UnsupportedMediaType(Exception):
    """A command body that does not say it is JSON."""


class PayloadTooLarge(Exception):
    """A body over the limit; raised before any of it is parsed."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"Request body is larger than the limit of {limit} bytes")


class Unauthorized(Exception):
    """No bearer token, or one that does not verify (401); the message never quotes the token."""

    def __init__(self, detail: str, *, invalid_token: bool = False) -> None:
        self.invalid_token = invalid_token
        super().__init__(detail)


class Forbidden(Exception):
    """A valid token without the scope a route needs, or a command its policy refuses (403)."""

    def __init__(self, detail: str, *, scope: str | None = None, command: str | None = None) -> None:
        self.scope = scope
        self.command = command
        super().__init__(detail)


class KeysUnavailable(Exception):
    """The keys that verify tokens cannot be fetched (503): no token can be judged, good or bad.

    ``retry_after`` is whole seconds; the cause is logged, never sent to the client.
    """

    def __init__(self, retry_after: int) -> None:
        self.retry_after = retry_after
        super().__init__("The keys that verify tokens cannot be fetched right now; try again shortly")


def keys_unavailable_response(exc: KeysUnavailable) -> JSONResponse:
    response = problem(503, "Keys unavailable", str(exc), "keys-unavailable")
    response.headers["Retry-After"] = str(exc.retry_after)
    return response


class TooManyRequests(Exception):
    """A caller over the command rate limit (429); ``retry_after`` is whole seconds until it may send again."""

    def __init__(self, limit: str, retry_after: int) -> None:
        self.limit = limit
        self.retry_after = retry_after
        super().__init__(f"This caller has sent more commands than the limit of {limit}; try again in {retry_after} s")


def too_many_requests_response(exc: TooManyRequests) -> JSONResponse:
    response = problem(429, "Too many requests", str(exc), "rate-limited", limit=exc.limit, retry_after=exc.retry_after)
    response.headers["Retry-After"] = str(exc.retry_after)
    return response


def unauthorized_response(exc: Unauthorized) -> JSONResponse:
    challenge = 'Bearer realm="twofold"'
    if exc.invalid_token:
        challenge += ', error="invalid_token"'
    response = problem(401, "Unauthorized", str(exc), "unauthorized")
    response.headers["WWW-Authenticate"] = challenge
    return response


def forbidden_response(exc: Forbidden) -> JSONResponse:
    facts = {k: v for k, v in (("scope", exc.scope), ("command", exc.command)) if v is not None}
    response = problem(403, "Forbidden", str(exc), "forbidden", **facts)
    if exc.scope is not None:  # RFC 6750 §3.1
        challenge = f'Bearer realm="twofold", error="insufficient_scope", scope="{exc.scope}"'
        response.headers["WWW-Authenticate"] = challenge
    return response


def problem(status: int, title: str, detail: str | None = None, kind: str | None = None, **extra: Any) -> JSONResponse:
    """A problem+json response; ``kind`` names the problem type (``urn:twofold:problem:<kind>``)."""
    body: dict[str, Any] = {"type": f"urn:twofold:problem:{kind}" if kind else "about:blank", "title": title}
    body["status"] = status
    if detail is not None:
        body["detail"] = detail
    body.update(extra)
    return ProblemResponse(body, status_code=status)


class ProblemResponse(JSONResponse):
    """problem+json, rendered ASCII-only: a problem may quote what the client sent, and what it
    sent may hold characters UTF-8 cannot encode (a lone surrogate in a field name), which would
    otherwise turn a 422 into a 500."""

    media_type = MEDIA_TYPE

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def _errors(errors: tuple[FieldError, ...] | list[FieldError]) -> list[dict[str, str]]:
    return [{"field": e.field, "message": e.message} for e in errors]


async def _invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InvalidMessage)
    return problem(422, "Validation failed", str(exc), "validation", errors=_errors(exc.errors))


async def _domain(request: Request, exc: Exception) -> JSONResponse:
    return problem(409, "Command rejected", str(exc), "rejected")


async def _concurrency(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ConcurrencyError)
    expected = getattr(exc.expected, "value", exc.expected)
    return problem(
        409,
        "Concurrency conflict",
        str(exc),
        "concurrency",
        stream_id=exc.stream_id,
        expected=expected,
        actual=exc.actual,
    )


async def _not_found(request: Request, exc: Exception) -> JSONResponse:
    return problem(404, "Not found", str(exc), "not-found")


async def _access_denied(request: Request, exc: Exception) -> JSONResponse:
    return problem(403, "Forbidden", str(exc), "forbidden")


async def _not_caught_up(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, NotCaughtUp)
    return problem(
        504,
        "Read model not caught up",
        str(exc),
        "not-caught-up",
        required_position=exc.required,
        current_position=exc.current,
    )


async def _unauthorized(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Unauthorized)
    return unauthorized_response(exc)


async def _keys_unavailable(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, KeysUnavailable)
    return keys_unavailable_response(exc)


async def _forbidden(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Forbidden)
    return forbidden_response(exc)


async def _bad_request(request: Request, exc: Exception) -> JSONResponse:
    return problem(400, "Bad request", str(exc), "bad-request")


async def _unsupported(request: Request, exc: Exception) -> JSONResponse:
    return problem(415, "Unsupported media type", str(exc), "unsupported-media-type")


async def _too_large(request: Request, exc: Exception) -> JSONResponse:
    return problem(413, "Payload too large", str(exc), "too-large")


async def _request_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [FieldError(field_path(tuple(e["loc"])), e["msg"]) for e in exc.errors()]
    return problem(422, "Validation failed", None, "validation", errors=_errors(errors))


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    response = problem(exc.status_code, _TITLES.get(exc.status_code, "HTTP error"), str(exc.detail))
    response.headers.update(exc.headers or {})
    return response


async def _store(request: Request, exc: Exception) -> JSONResponse:
    log.error("store failure on %s %s: %s", request.method, request.url.path, exc)
    return problem(503, "Store unavailable", "The store could not complete the request; try again", "store")


async def _broker(request: Request, exc: Exception) -> JSONResponse:
    log.error("broker failure on %s %s: %s", request.method, request.url.path, exc)
    return problem(503, "Broker unavailable", "The message broker could not take the request; try again", "broker")


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem(500, "Internal server error", None, "internal")


_TITLES = {404: "Not found", 405: "Method not allowed", 406: "Not acceptable"}


def install(app: FastAPI) -> None:
    """Register every mapping on ``app``; most specific first does not matter here, classes do."""
    app.add_exception_handler(InvalidMessage, _invalid)
    app.add_exception_handler(DomainError, _domain)
    app.add_exception_handler(ConcurrencyError, _concurrency)
    app.add_exception_handler(NotFound, _not_found)
    app.add_exception_handler(AccessDenied, _access_denied)
    app.add_exception_handler(NotCaughtUp, _not_caught_up)
    app.add_exception_handler(Unauthorized, _unauthorized)
    app.add_exception_handler(Forbidden, _forbidden)
    app.add_exception_handler(KeysUnavailable, _keys_unavailable)
    app.add_exception_handler(BadRequest, _bad_request)
    app.add_exception_handler(UnsupportedMediaType, _unsupported)
    app.add_exception_handler(PayloadTooLarge, _too_large)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(StoreError, _store)
    app.add_exception_handler(BrokerError, _broker)
    app.add_exception_handler(ConfigurationError, _unexpected)
    app.add_exception_handler(Exception, _unexpected)
