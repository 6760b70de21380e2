"""The console's routes: one per page, plus the fragments its script swaps in (live rows, a state)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from twofold.deadletters import DeadLetter
from twofold.errors import NotFound
from twofold.http.console import _operations, _streams
from twofold.http.console._pages import render, static
from twofold.http.problems import BadRequest
from twofold.inspection import causal_trace
from twofold.messages import utc_now
from twofold.runtime import Runtime
from twofold.store import EventStore

# A category is the text before a stream id's first "-": no dash, no spaces or control characters.
# Empty is allowed and means every category: a form's empty field sends "category=".
CATEGORY = r"^[^-\s\x00-\x1f]{0,100}$"
NAME = r"^[A-Za-z0-9_.-]{1,100}$"  # services and sagas: names from code, never free text
Limit = Annotated[int, Query(ge=1, le=200, description="rows per page")]


def console_router(title: str, runtimes: Mapping[str, Runtime]) -> APIRouter:
    """The console's pages over ``runtimes`` (service name → its runtime): one service's, or a system's."""
    router = APIRouter(prefix="/console", include_in_schema=False)
    pages = _Pages(title, dict(runtimes))

    @router.get("")
    async def home() -> Response:
        return RedirectResponse("/console/streams", status_code=303)

    @router.get("/static/{name}")
    async def asset(name: Annotated[str, Path(max_length=100)]) -> Response:
        found = static(name)
        if found is None:
            raise NotFound(f"The console has no static file {name!r}")
        return found

    @router.get("/streams")
    async def streams(
        service: Annotated[str | None, Query(pattern=NAME)] = None,
        category: Annotated[str | None, Query(pattern=CATEGORY)] = None,
        order: Literal["recent", "id"] = "recent",
        after: Annotated[str | None, Query(min_length=1, max_length=255)] = None,
        before: Annotated[int | None, Query(ge=2)] = None,
        limit: Limit = 50,
    ) -> HTMLResponse:
        name = pages.with_store(service)
        store = pages.store(name)
        category = category or None
        if order == "id":
            page = await _streams.streams_by_id(store, category, after, limit)
        else:
            page = await _streams.streams_by_activity(store, category, before, limit)
        categories = [a.category for a in pages.runtimes[name].service.aggregates]
        return pages.render(
            "streams.html",
            "streams",
            service=name,
            category=category,
            order=order,
            page=page,
            limit=limit,
            categories=categories,
        )

    @router.get("/streams/{service}/{stream_id:path}")
    async def stream(
        service: str,
        stream_id: Annotated[str, Path(max_length=255)],
        after: Annotated[int, Query(ge=0)] = 0,
        limit: Limit = 50,
        version: Annotated[int | None, Query(ge=1)] = None,
    ) -> HTMLResponse:
        store = pages.store(pages.known(service))
        current = await pages.version_of(store, stream_id)
        events = await _streams.events_page(store, stream_id, after, limit)
        aggregate = _streams.aggregate_of(pages.runtimes[service].service, stream_id)
        at = _version(version, current)
        state = (
            None
            if aggregate is None
            else await _streams.state_json(store, pages.runtimes[service].service, aggregate, stream_id, at)
        )
        next_after = events[-1].version if events and events[-1].version < current else None
        return pages.render(
            "stream.html",
            "streams",
            service=service,
            stream_id=stream_id,
            events=events,
            current=current,
            aggregate=aggregate,
            state=state,
            at=at,
            after=after,
            limit=limit,
            next_after=next_after,
        )

    @router.get("/state/{service}/{stream_id:path}")
    async def state(
        service: str,
        stream_id: Annotated[str, Path(max_length=255)],
        version: Annotated[int, Query(ge=1)],
    ) -> HTMLResponse:
        store = pages.store(pages.known(service))
        current = await pages.version_of(store, stream_id)
        aggregate = _streams.aggregate_of(pages.runtimes[service].service, stream_id)
        if aggregate is None:
            raise NotFound(f"No aggregate of {service} is declared for the streams of {stream_id!r}")
        at = _version(version, current)
        shown = await _streams.state_json(store, pages.runtimes[service].service, aggregate, stream_id, at)
        return render("_state.html", state=shown, at=at, current=current)

    @router.get("/projections")
    async def projections() -> HTMLResponse:
        rows = await _operations.worker_rows(pages.runtimes)
        return pages.render("projections.html", "projections", rows=rows, now=utc_now())

    @router.get("/projections/rows")
    async def projection_rows() -> HTMLResponse:
        return render("_workers.html", rows=await _operations.worker_rows(pages.runtimes), now=utc_now())

    @router.get("/sagas")
    async def sagas(
        service: Annotated[str | None, Query(pattern=NAME)] = None,
        saga: Annotated[str | None, Query(pattern=NAME)] = None,
        status: Literal["active", "completed", ""] = "",  # "": any, as the form's first choice sends it
        after: Annotated[str, Query(max_length=255)] = "",
        limit: Limit = 50,
    ) -> HTMLResponse:
        owners = {s.name: name for name, r in pages.runtimes.items() if r.read_store for s in r.service.sagas}
        if saga is not None and saga not in owners:
            raise BadRequest(f"No saga named {saga!r}; the console shows: {', '.join(sorted(owners)) or 'none'}")
        chosen = saga or next(iter(sorted(owners)), None)
        if service is not None and chosen is not None and owners[chosen] != service:
            raise BadRequest(f"Saga {chosen!r} runs in {owners[chosen]}, not in {service}")
        instances: list[dict[str, Any]] = []
        next_after = None
        if chosen is not None:
            runtime = pages.runtimes[owners[chosen]]
            instances, next_after = await _operations.saga_page(runtime, chosen, status or None, after, limit)
        return pages.render(
            "sagas.html",
            "sagas",
            owners=owners,
            saga=chosen,
            status=status,
            instances=instances,
            next_after=next_after,
            limit=limit,
        )

    @router.get("/sagas/{service}/{saga}/{instance}")
    async def saga_instance(service: str, saga: str, instance: Annotated[str, Path(max_length=255)]) -> HTMLResponse:
        runtime = pages.runtimes[pages.known(service)]
        detail = await _operations.saga_detail(runtime, saga, instance)
        if detail is None:
            raise NotFound(f"Saga {saga} of {service} has no instance {instance!r} in its event store")
        return pages.render("saga.html", "sagas", service=service, saga=saga, detail=detail)

    @router.get("/dead-letters")
    async def dead_letters(
        service: Annotated[str | None, Query(pattern=NAME)] = None,
        after_source: Annotated[str | None, Query(max_length=100)] = None,
        after_stream: Annotated[str | None, Query(max_length=255)] = None,
        after_version: Annotated[int | None, Query(ge=0)] = None,
        limit: Limit = 50,
    ) -> HTMLResponse:
        importing = [n for n, r in pages.runtimes.items() if r.service.subscriptions and r.store and r.read_store]
        if service is not None and service not in importing:
            raise BadRequest(f"{service!r} imports no events; these do: {', '.join(importing) or 'none'}")
        after = _letter_key(after_source, after_stream, after_version)
        chosen = service or next(iter(importing), None)
        letters: list[DeadLetter] = []
        next_key = None
        if chosen is not None:
            letters, next_key = await _operations.dead_letter_page(pages.runtimes[chosen], after, limit)
        return pages.render(
            "dead_letters.html",
            "dead-letters",
            importing=importing,
            service=chosen,
            letters=letters,
            next_key=next_key,
            limit=limit,
        )

    @router.get("/trace")
    async def trace(
        correlation_id: Annotated[str | None, Query(min_length=1, max_length=255)] = None,
    ) -> HTMLResponse:
        found = None
        if correlation_id is not None:
            stores = {name: r.store for name, r in pages.runtimes.items() if r.store is not None}
            found = await causal_trace(stores, correlation_id)
        return pages.render("trace.html", "trace", correlation_id=correlation_id, trace=found)

    return router


class _Pages:
    """What every page needs: the title, the services, and how to find one's event store."""

    def __init__(self, title: str, runtimes: dict[str, Runtime]) -> None:
        self.title = title
        self.runtimes = runtimes
        self.with_stores = [name for name, runtime in runtimes.items() if runtime.store is not None]

    def render(self, template: str, section: str, **context: Any) -> HTMLResponse:
        return render(template, title=self.title, section=section, services=self.with_stores, **context)

    def known(self, service: str) -> str:
        if service not in self.runtimes:
            raise NotFound(f"No service {service!r} here; the console shows: {', '.join(self.runtimes)}")
        return service

    def with_store(self, service: str | None) -> str:
        """The service asked for, or the first with an event store; 400 for one that has none here."""
        if service is None:
            if not self.with_stores:
                raise NotFound("No service here has an event store: its streams are served where its commands are")
            return self.with_stores[0]
        if service not in self.with_stores:
            raise BadRequest(f"No event store of {service!r} here; the console has: {', '.join(self.with_stores)}")
        return service

    def store(self, service: str) -> EventStore:
        store = self.runtimes[service].store
        if store is None:
            raise NotFound(f"The event store of {service} is not in this process")
        return store

    async def version_of(self, store: EventStore, stream_id: str) -> int:
        current = await store.stream_version(stream_id)
        if current == 0:
            raise NotFound(f"No stream {stream_id!r}")
        return current


def _version(asked: int | None, current: int) -> int:
    """The version to show a state at: the latest unless asked, never past the stream's end."""
    if asked is None:
        return current
    if asked > current:
        raise BadRequest(f"The stream has {current} events: version {asked} is past its end")
    return asked


def _letter_key(source: str | None, stream_id: str | None, version: int | None) -> tuple[str, str, int] | None:
    """The key a page of dead letters starts after: all three parts, or none (the first page)."""
    if source is not None and stream_id is not None and version is not None:
        return source, stream_id, version
    if source is None and stream_id is None and version is None:
        return None
    raise BadRequest("A page of dead letters starts after a key: give after_source, after_stream and after_version")
