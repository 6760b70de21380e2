"""Parked messages over HTTP: list them, and retry them once a fix is deployed.

    GET  /dead-letters?source=inventory&stream_id=reservation-o-1
    200 {"dead_letters": [{"source": "inventory", "stream_id": "reservation-o-1", "version": 2,
                           "event_id": "…", "error": "ValidationError: …", "attempts": 5,
                           "parked_at": "2026-11-26T17:02:11.120344+00:00"}, …]}
    POST /dead-letters/retry   {"source": "inventory", "stream_id": "reservation-o-1"}
    200 {"retried": {"inventory": {"imported": 2, "parked": 0}}}

Both filters are optional (``source`` and ``stream_id`` as query parameters, or for the retry as
a JSON body). A retry drains each stream in order and stops at its first message that still
fails; it is safe to repeat. An unknown source is 404.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request

from twofold.deadletters import DeadLetter, DeadLetters
from twofold.errors import NotFound
from twofold.http.problems import BadRequest, problem_responses
from twofold.runtime import Runtime
from twofold.subscriptions import Importer

__all__ = ["dead_letter_router"]


def dead_letter_router(runtime: Runtime) -> APIRouter:
    """The routes over ``runtime``'s parked messages (it needs both an event store and a read store)."""
    router = APIRouter(tags=["operations"])
    assert runtime.store is not None
    assert runtime.read_store is not None
    letters = DeadLetters(runtime.read_store)
    sources = [s.source for s in runtime.service.subscriptions]

    @router.get(
        "/dead-letters",
        summary="Messages from other services that could not be imported",
        responses=problem_responses(404, 422, 503),
    )
    async def list_dead_letters(source: str | None = None, stream_id: str | None = None) -> dict[str, Any]:
        _known(sources, source)
        return {"dead_letters": [_row(letter) for letter in await letters.parked(source, stream_id)]}

    @router.post(
        "/dead-letters/retry",
        summary="Import parked messages again, stream by stream, in order",
        responses=problem_responses(400, 404, 413, 422, 503),
    )
    async def retry(request: Request, source: str | None = None, stream_id: str | None = None) -> dict[str, Any]:
        body = await _body(request)
        source = source or body.get("source")
        stream_id = stream_id or body.get("stream_id")
        _known(sources, source)
        retried = {}
        for name in [source] if source else sources:
            result = await _importer(runtime, name).retry(stream_id)
            retried[name] = {"imported": result.imported, "parked": result.parked}
        return {"retried": retried}

    return router


def _importer(runtime: Runtime, source: str) -> Importer:
    """The running consumer's importer (it can read the transport's messages), else a fresh one."""
    for worker in runtime.workers:
        importer = getattr(worker, "importer", None)
        if isinstance(importer, Importer) and importer.source == source:
            return importer
    subscription = next(s for s in runtime.service.subscriptions if s.source == source)
    assert runtime.store is not None
    assert runtime.read_store is not None
    return Importer(runtime.service, runtime.store, runtime.read_store, subscription)


def _known(sources: list[str], source: str | None) -> None:
    if source is not None and source not in sources:
        listed = ", ".join(sources) or "none"
        raise NotFound(f"No subscription to {source!r}; this service subscribes to: {listed}")


async def _body(request: Request) -> dict[str, str]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise BadRequest(f"Request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict) or not all(isinstance(body.get(k), str | None) for k in ("source", "stream_id")):
        raise BadRequest('Request body must be a JSON object like {"source": "inventory", "stream_id": "…"}')
    return body


def _row(letter: DeadLetter) -> dict[str, Any]:
    return {
        "source": letter.source,
        "stream_id": letter.stream_id,
        "version": letter.version,
        "event_id": letter.event_id,
        "error": letter.error,
        "attempts": letter.attempts,
        "parked_at": letter.parked_at.isoformat(),
    }
