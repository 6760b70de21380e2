"""Sagas, inspectable: ``GET /sagas/{Name}`` lists instances, ``GET /sagas/{Name}/{instance}`` shows one.

    GET /sagas/checkout?status=active&limit=50&after=o-17
    200 {"saga": "checkout", "instances": [{"instance", "version", "status", "state", "deadlines", "updated_at"}]}

Served by the query side from the read store, where each saga runner keeps its instances' latest
state and pending deadlines; the full history of an instance is its stream, ``saga.<name>-<instance>``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from twofold.errors import NotFound
from twofold.http.problems import problem_responses
from twofold.readmodels import Database, ReadStore
from twofold.runtime import Runtime
from twofold.saga_runner import ensure_saga_tables, saga_instance, saga_instances


def saga_router(runtime: Runtime, read_store: ReadStore[Database]) -> APIRouter:
    router = APIRouter(tags=["sagas"])
    names = {saga.name for saga in runtime.service.sagas}
    ready: list[bool] = []

    async def checked(name: str) -> None:
        if name not in names:
            raise NotFound(f"No saga named {name!r}; this service runs: {', '.join(sorted(names)) or 'none'}")
        if not ready:
            await ensure_saga_tables(read_store)
            ready.append(True)

    @router.get(
        "/sagas/{name}",
        summary="A page of a saga's instances, in key order",
        responses=problem_responses(404, 422, 503),
    )
    async def instances(
        name: str,
        status: Literal["active", "completed"] | None = None,
        after: Annotated[str, Query(max_length=255)] = "",
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        await checked(name)
        found = await saga_instances(read_store, name, status=status, after=after, limit=limit)
        return {"saga": name, "instances": found}

    @router.get(
        "/sagas/{name}/{instance}",
        summary="One saga instance: its state and pending deadlines",
        responses=problem_responses(404, 422, 503),
    )
    async def instance(name: str, instance: str) -> dict[str, Any]:
        await checked(name)
        found = await saga_instance(read_store, name, instance)
        if found is None:
            raise NotFound(f"Saga {name} has no instance {instance!r}")
        return {"saga": name, **found}

    return router
