"""The query API: ``GET /queries/{Type}?field=value``, with read-your-writes via ``X-Min-Position``.

    GET /queries/StockLevel?sku=A-1        X-Min-Position: 42
    200 {"sku": "A-1", "available": 3}

A repeated parameter (``?tag=a&tag=b``) arrives as a list; anything the query does not declare is
refused with 422, naming it.
"""

from __future__ import annotations

import typing
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

from twofold.errors import NotFound
from twofold.http._json import min_position
from twofold.http.auth import principal_of
from twofold.http.metrics import Metrics
from twofold.http.problems import problem_responses
from twofold.messages import Query, parse
from twofold.queries import result_type_of
from twofold.runtime import Runtime


def query_router(runtime: Runtime, timeout: float, metrics: Metrics) -> APIRouter:
    router = APIRouter(tags=["queries"])
    for query_type, handler in runtime.service.queries.items():
        _add_route(router, runtime, metrics, query_type, result_type_of(handler), timeout)
    known = ", ".join(q.type_name for q in runtime.service.queries)

    @router.get("/queries/{query_type}", include_in_schema=False)
    async def unknown_query(query_type: str) -> None:
        raise NotFound(f"No query type {query_type!r}; this service answers: {known}")

    return router


def _add_route(
    router: APIRouter, runtime: Runtime, metrics: Metrics, query_type: type[Query], result: Any, timeout: float
) -> None:
    name = query_type.type_name

    async def handle(request: Request) -> Any:
        with metrics.query(name):
            query = parse(query_type, _params(request, query_type))
            tenant = principal_of(request).tenant
            answer = await runtime.query(query, min_position=min_position(request), timeout=timeout, tenant=tenant)
        if type(answer) is result:
            # Already the declared model: pydantic encodes it in one step, where FastAPI would
            # validate it again against the same model first.
            return Response(answer.model_dump_json(by_alias=True), media_type="application/json")
        return answer

    router.add_api_route(
        f"/queries/{name}",
        handle,
        methods=["GET"],
        name=f"query {name}",
        summary=(query_type.__doc__ or name).strip().splitlines()[0],
        response_model=result if isinstance(result, type) and issubclass(result, BaseModel) else None,
        responses=problem_responses(400, 404, 413, 422, 503, 504),
        openapi_extra={"parameters": _parameters(query_type)},
    )


def _params(request: Request, query_type: type[Query]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for key in request.query_params:
        values = request.query_params.getlist(key)
        # A repeated scalar stays a list, so that validation refuses it instead of picking one.
        params[key] = values if len(values) > 1 or _is_sequence(query_type, key) else values[0]
    return params


def _is_sequence(query_type: type[Query], field: str) -> bool:
    info = query_type.model_fields.get(field)
    return info is not None and typing.get_origin(info.annotation) in (list, tuple, set, frozenset)


def _parameters(query_type: type[Query]) -> list[dict[str, Any]]:
    schema = query_type.model_json_schema()
    required = set(schema.get("required", ()))
    return [
        {"name": field, "in": "query", "required": field in required, "schema": spec}
        for field, spec in schema.get("properties", {}).items()
    ] + [
        {
            "name": "X-Min-Position",
            "in": "header",
            "required": False,
            "description": "Wait until the read models this query uses have applied this position",
            "schema": {"type": "integer", "minimum": 0},
        }
    ]
