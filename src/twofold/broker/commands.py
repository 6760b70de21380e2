"""Asynchronous commands on NATS JetStream: a work queue per service, and workers that take from it.

    sender = JetStreamCommandSender("nats://127.0.0.1:4222", source="orders")
    await sender.send("inventory", Envelope(ReserveStock(...), message_id=command_id))  # durably queued

    worker = CommandWorker(runtime, "nats://127.0.0.1:4222")   # a Runtime worker: handles inventory's queue
    queue = JetStreamCommands(runtime, "nats://127.0.0.1:4222")  # what the command API submits 202s to

A command goes to ``twofold.<service>.commands.<type>`` in the work-queue stream
``TWOFOLD_<SERVICE>_COMMANDS`` as a CloudEvent (:mod:`twofold.broker.command_messages`) with
``Nats-Msg-Id`` = the command id (and ``traceparent``/``tracestate`` when the envelope has them),
so a sender that sends again within the duplicate window (2 minutes) queues it once. Each message
goes to one worker of a durable pull consumer; the worker runs it with
:meth:`twofold.Runtime.execute` under its command id, records the outcome and only then
acknowledges it. A worker that dies before acknowledging leaves the message to be delivered
again; the event store records command ids, so running it again has no second effect.

Outcomes are readable from every process of the service: a success is in the event store, and the
bucket ``twofold_<service>_commands`` keeps ``pending`` (from the command API) and ``failed``
(from a worker) for a day (see :mod:`twofold.broker._jetstream`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

try:
    import nats
    from nats.js import api
except ModuleNotFoundError as exc:  # pragma: no cover - depends on what is installed
    raise ModuleNotFoundError("Asynchronous commands on NATS need the nats extra: pip install 'twofold[nats]'") from exc

from twofold.broker._jetstream import DUPLICATE_WINDOW, OUTCOME_TTL, Connection, Outcomes, ensure_commands_stream
from twofold.broker.command_messages import encode_command
from twofold.broker.command_worker import CommandWorker
from twofold.broker.subjects import commands_subject
from twofold.command_queue import CommandOutcome
from twofold.errors import BrokerError
from twofold.messages import Command, Envelope

if TYPE_CHECKING:
    from twofold.bus import CommandSender
    from twofold.command_queue import CommandQueue
    from twofold.runtime import Runtime

__all__ = ["CommandWorker", "JetStreamCommandSender", "JetStreamCommands"]

CONTENT_TYPE = "application/cloudevents+json"
_SUBMIT_TRIES = 5  # a command's record changing under a submit this often means a bug, not a race


class JetStreamCommandSender:
    """Queues commands for any service on its JetStream work queue (a :class:`twofold.bus.CommandSender`).

    Args:
        nats_url: the NATS server(s), e.g. ``nats://127.0.0.1:4222`` (comma-separated for several).
        source: who sends, the ``source`` of the CloudEvents (the sending service's name).
        ack_timeout: seconds to wait for JetStream to acknowledge a message before failing.
        duplicate_window: seconds JetStream remembers command ids, for a stream this sender creates.
    """

    def __init__(
        self,
        nats_url: str,
        *,
        source: str = "twofold",
        ack_timeout: float = 5.0,
        duplicate_window: float = DUPLICATE_WINDOW,
    ) -> None:
        self.source = source
        self.connection = Connection(nats_url, f"twofold command sender {source}", ack_timeout, ack_timeout)
        self._duplicate_window = duplicate_window
        self._streams: set[str] = set()  # services whose work queue this sender has made sure of

    async def send(self, service: str, envelope: Envelope[Command]) -> None:
        """Queue ``envelope`` for ``service``; return once JetStream has stored it (or had it already)."""
        await self.publish(service, envelope, message_id=envelope.message_id)

    async def publish(self, service: str, envelope: Envelope[Command], *, message_id: str) -> api.PubAck:
        """Queue ``envelope`` with ``Nats-Msg-Id: message_id``; raises :class:`BrokerError` when it is not stored."""
        subject = commands_subject(service, envelope.type_name)
        headers = {"Nats-Msg-Id": message_id, "Content-Type": CONTENT_TYPE, **trace_headers(envelope)}
        try:
            js = await self.connection.jetstream()
            if service not in self._streams:
                await ensure_commands_stream(js, service, self._duplicate_window)
                self._streams.add(service)
            return await js.publish(subject, encode_command(envelope, self.source), headers=headers)
        except (nats.errors.Error, TimeoutError, OSError) as exc:
            self._streams.discard(service)  # the stream may have gone: make sure of it next time
            raise BrokerError(
                f"Could not queue {envelope.type_name} {envelope.message_id} on {subject}: {_why(exc)}"
            ) from exc

    async def close(self) -> None:
        await self.connection.close()


class JetStreamCommands:
    """The command API's side of the work queue: queue a command, say where it stands (a ``CommandQueue``).

    A submit records the command ``pending`` before queuing it. Submitting an id again queues
    nothing new while it is pending (JetStream drops the duplicate) or once it succeeded; after it
    failed, it queues a new attempt that reports its own outcome, as the embedded mode does.

    Args:
        runtime: the service, and its event store, where successes are looked up.
        nats_url: the NATS server(s).
        outcome_ttl: seconds an outcome stays readable, for a bucket this creates.
        timeout: seconds to wait for NATS (to connect, to store a message, to read an outcome)
            before the request fails with :class:`~twofold.errors.BrokerError`.
    """

    def __init__(
        self, runtime: Runtime, nats_url: str, *, outcome_ttl: float = OUTCOME_TTL, timeout: float = 5.0
    ) -> None:
        self.service_name = runtime.service.name
        self._store = runtime.store
        self._sender = JetStreamCommandSender(nats_url, source=self.service_name, ack_timeout=timeout)
        self._outcome_ttl = outcome_ttl
        self._outcomes: Outcomes | None = None

    async def submit(self, envelope: Envelope[Command]) -> None:
        command_id = envelope.message_id
        if self._store is not None and await self._store.command_result(command_id) is not None:
            return  # applied already: the status URL gives its result
        try:
            outcomes = await self._open()
            for _ in range(_SUBMIT_TRIES):
                outcome, revision = await outcomes.read(command_id)
                if outcome is not None and outcome.status == "succeeded":
                    return
                retry = outcome is not None and outcome.status == "failed"
                # Conditional: a worker recording an outcome meanwhile must not be overwritten.
                pending = CommandOutcome("pending", principal=envelope.principal)  # who may read its status
                if (outcome is None or retry) and not await outcomes.replace(command_id, pending, revision):
                    continue
                # A new attempt after a failure gets a message id of its own, or JetStream would drop it.
                message_id = f"{command_id}.{revision}" if retry else command_id
                await self._sender.publish(self.service_name, envelope, message_id=message_id)
                return
        except (nats.errors.Error, TimeoutError, OSError) as exc:
            raise BrokerError(f"Could not record command {command_id} as pending: {_why(exc)}") from exc
        raise BrokerError(f"The record of command {command_id} kept changing while it was submitted")

    async def outcome(self, command_id: str) -> CommandOutcome | None:
        try:
            outcome, _ = await (await self._open()).read(command_id)
        except (nats.errors.Error, TimeoutError, OSError) as exc:
            raise BrokerError(f"Could not read the outcome of command {command_id}: {_why(exc)}") from exc
        return outcome

    async def drain(self, timeout: float) -> None:
        """Nothing runs here (workers do): close the connection."""
        await self._sender.close()

    async def _open(self) -> Outcomes:
        if self._outcomes is None:
            js = await self._sender.connection.jetstream()
            self._outcomes = await Outcomes.open(js, self.service_name, self._outcome_ttl)
        return self._outcomes


def trace_headers(envelope: Envelope[Command]) -> dict[str, str]:
    """The envelope's W3C trace context as headers, for tools that read headers rather than the CloudEvent."""
    fields = {"traceparent": envelope.traceparent, "tracestate": envelope.tracestate}
    return {name: value for name, value in fields.items() if value}


def _why(exc: BaseException) -> str:
    """``TimeoutError`` says nothing by itself: name it then."""
    return str(exc) or type(exc).__name__


if TYPE_CHECKING:  # mypy checks that each one keeps to the protocol it stands in for

    def _conforms(sender: JetStreamCommandSender, queue: JetStreamCommands) -> tuple[CommandSender, CommandQueue]:
        return sender, queue
