"""The command API: ``POST /commands/{Type}``, and ``GET /commands/{id}`` for asynchronous ones.

    POST /commands/PlaceOrder          {"order_id": "o-1", ...}
    200 {"command_id", "stream_id", "version", "position", "events": [...]}

``Idempotency-Key`` becomes the command id, so a retried request is applied once and answered with
the first result. ``Prefer: respond-async`` answers 202 at once and hands the command to a
:class:`~twofold.command_queue.CommandQueue`: :class:`AsyncCommands` runs it in a task of this
process; ``twofold.broker.commands.JetStreamCommands`` queues it for the service's command workers.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from twofold.command_queue import CommandOutcome, CommandQueue
from twofold.commands import CommandResult
from twofold.errors import BrokerError, NotFound, TwofoldError
from twofold.http._json import json_body, result_json
from twofold.http.auth import ANONYMOUS, OPERATIONS_READ, Principal, check_policy, principal_of
from twofold.http.metrics import Metrics
from twofold.http.problems import BadRequest, problem_responses
from twofold.messages import Command, Envelope, new_id, parse
from twofold.observability import trace_context
from twofold.runtime import Runtime

log = logging.getLogger("twofold.http")
_KEY = re.compile(r"^[A-Za-z0-9._:~-]{1,128}$")
INTERNAL_NOTE = (
    "**Internal**: sent by other services' sagas. Over HTTP it needs the scope `commands:{name}` "
    "or `commands:internal`; `commands:*` does not cover it."
)
STATUS_READERS = ("commands:*", *OPERATIONS_READ)  # who may read any command's status, not only their own
FAILURES_KEPT = 10_000  # outcomes of failed asynchronous commands remembered for GET /commands/{id}


class CommandAccepted(BaseModel):
    command_id: str
    stream_id: str | None
    version: int | None
    position: int | None
    events: list[dict[str, Any]]


class CommandQueued(BaseModel):
    command_id: str
    status_url: str


class AsyncCommands:
    """Commands running in tasks of this process, and the failures of recent ones (successes are in the store).

    The embedded :class:`~twofold.command_queue.CommandQueue`: outcomes are kept in memory only.
    """

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._running: dict[str, asyncio.Task[Any]] = {}
        self._senders: dict[str, str | None] = {}  # the principal of each running command
        self._failed: OrderedDict[str, CommandOutcome] = OrderedDict()

    async def submit(self, envelope: Envelope[Command]) -> None:
        command_id = envelope.message_id
        if command_id in self._running:
            return
        self._failed.pop(command_id, None)  # a retry under the same id: its own outcome, not the last one's
        task = asyncio.create_task(self._run(envelope), name=f"command {command_id}")
        self._running[command_id] = task
        self._senders[command_id] = envelope.principal

    async def _run(self, envelope: Envelope[Command]) -> None:
        command_id, command = envelope.message_id, envelope.message
        try:
            await self._runtime.execute(
                command,
                command_id=command_id,
                correlation_id=envelope.correlation_id,
                causation_id=envelope.causation_id,
                principal=envelope.principal,
                tenant=envelope.tenant,
                traceparent=envelope.traceparent,
                tracestate=envelope.tracestate,
            )
        except TwofoldError as exc:
            self._fail(command_id, CommandOutcome("failed", type(exc).__name__, str(exc), principal=envelope.principal))
        except Exception:
            # Nobody awaits this task: re-raising would only surface as "Task exception was never
            # retrieved" whenever the task happens to be collected, so log it here, like a 500.
            log.exception("background command %s (%s) failed unexpectedly", command_id, command.type_name)
            unexpected = "The command failed unexpectedly"
            self._fail(command_id, CommandOutcome("failed", "InternalError", unexpected, principal=envelope.principal))
        finally:
            self._running.pop(command_id, None)
            self._senders.pop(command_id, None)

    def _fail(self, command_id: str, outcome: CommandOutcome) -> None:
        self._failed[command_id] = outcome
        while len(self._failed) > FAILURES_KEPT:
            self._failed.popitem(last=False)

    async def outcome(self, command_id: str) -> CommandOutcome | None:
        if command_id in self._running:
            return CommandOutcome("pending", principal=self._senders.get(command_id))
        return self._failed.get(command_id)

    async def drain(self, timeout: float) -> None:
        """Let running commands finish, for at most ``timeout`` seconds, then cancel the rest."""
        tasks = list(self._running.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)


async def status_of(
    runtime: Runtime, background: CommandQueue, command_id: str, caller: Principal = ANONYMOUS
) -> dict[str, Any]:
    """``pending``, ``failed`` (with error and detail) or ``succeeded`` (with the result, as a 200 gives it).

    Only the principal who sent the command may read it, or one holding ``commands:*`` or
    ``operations:read``; anyone else gets the 404 of an unknown id, which says nothing of whether it exists.
    """
    assert runtime.store is not None
    try:
        outcome = await background.outcome(command_id)  # asked first: one that ends meanwhile is in the store
    except BrokerError:  # the queue is out of reach, but a success can still be read from the store
        if await runtime.store.command_result(command_id) is None:
            raise
        outcome = None
    appended = await runtime.store.command_result(command_id)  # the last word: an id is applied once
    sender = _sender(appended.events[0].metadata if appended and appended.events else None, outcome)
    if (appended is not None or outcome is not None) and not _may_read(caller, sender):
        raise NotFound(f"No command with id {command_id}")
    if appended is not None:
        result = result_json(CommandResult.of(command_id, appended, None))
        return {"command_id": command_id, "status": "succeeded", "result": result}
    if outcome is None:
        raise NotFound(f"No command with id {command_id}")
    if outcome.status == "failed":
        return {"command_id": command_id, "status": "failed", "error": outcome.error, "detail": outcome.detail}
    if outcome.status == "succeeded" and outcome.result is not None:  # it appended nothing
        return {"command_id": command_id, "status": "succeeded", "result": {**outcome.result, "events": []}}
    return {"command_id": command_id, "status": "pending"}


def _sender(metadata: Mapping[str, Any] | None, outcome: CommandOutcome | None) -> str | None:
    """Who sent a command: the events it appended record it, and so does the queue's outcome."""
    if metadata is not None:
        principal = metadata.get("principal")
        return principal if isinstance(principal, str) else None
    return outcome.principal if outcome is not None else None


def _may_read(caller: Principal, sender: str | None) -> bool:
    if caller.allows(*STATUS_READERS):
        return True
    return caller.subject is not None and caller.subject == sender


def command_router(runtime: Runtime, background: CommandQueue, metrics: Metrics) -> APIRouter:
    router = APIRouter(tags=["commands"])
    for command_type in runtime.service.commands:
        _add_route(router, runtime, background, metrics, command_type)

    @router.get(
        "/commands/{command_id}", summary="Status and result of a command", responses=problem_responses(400, 404, 503)
    )
    async def command_status(command_id: str, request: Request) -> dict[str, Any]:
        return await status_of(runtime, background, _checked_key(command_id, "command id"), principal_of(request))

    known = ", ".join(c.type_name for c in runtime.service.commands)

    # Without this, POST to an unknown type would match GET /commands/{command_id} and answer 405.
    @router.post("/commands/{command_type}", include_in_schema=False)
    async def unknown_command(command_type: str) -> None:
        raise NotFound(f"No command type {command_type!r}; this service accepts: {known}")

    return router


def _add_route(
    router: APIRouter, runtime: Runtime, background: CommandQueue, metrics: Metrics, command_type: type[Command]
) -> None:
    name = command_type.type_name

    async def handle(request: Request) -> Any:
        with metrics.command(name):
            return await _handle(request)

    async def _handle(request: Request) -> Any:
        command = parse(command_type, await json_body(request))
        principal = principal_of(request)
        check_policy(runtime.service.policies, principal, command)
        key = request.headers.get("idempotency-key")
        envelope = {
            "command_id": _checked_key(key, "Idempotency-Key") if key is not None else None,
            "correlation_id": _optional_key(request.headers.get("x-correlation-id"), "X-Correlation-Id"),
            "principal": principal.subject,
            "tenant": principal.tenant,
        }
        if "respond-async" in request.headers.get("prefer", "").lower():
            command_id = envelope["command_id"] or new_id()  # the status URL needs it now
            await background.submit(
                Envelope(
                    command,
                    message_id=command_id,
                    correlation_id=envelope["correlation_id"] or "",
                    principal=principal.subject,
                    tenant=principal.tenant,
                    **trace_context(),  # the request's span: wherever the command runs, it continues this trace
                )
            )
            status_url = str(request.url_for("command_status", command_id=command_id).path)
            return JSONResponse(
                CommandQueued(command_id=command_id, status_url=status_url).model_dump(),
                status_code=202,
                headers={"Location": status_url, "Preference-Applied": "respond-async"},
            )
        result = await runtime.execute(command, **envelope)
        metrics.events_appended.inc(len(result.events))
        # A response, not a dict: the shape is CommandAccepted by construction, and FastAPI would
        # otherwise validate and re-encode every event of it once more.
        return JSONResponse(result_json(result))

    router.add_api_route(
        f"/commands/{name}",
        handle,
        methods=["POST"],
        name=f"command {name}",
        summary=(command_type.__doc__ or name).strip().splitlines()[0],
        description=INTERNAL_NOTE.format(name=name) if command_type.internal else None,
        response_model=CommandAccepted,
        responses={
            202: {"model": CommandQueued, "description": "Accepted to run in the background"},
            **problem_responses(400, 404, 409, 413, 415, 422, 429, 503),
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}},
            },
            "x-twofold-internal": command_type.internal,
        },
    )


def _checked_key(key: str, what: str) -> str:
    if not _KEY.match(key):
        raise BadRequest(f"{what} must be 1 to 128 letters, digits or . _ : ~ -")
    return key


def _optional_key(key: str | None, what: str) -> str | None:
    return None if key is None else _checked_key(key, what)
