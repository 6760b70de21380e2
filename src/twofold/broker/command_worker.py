"""The command worker: takes a service's asynchronous commands off its work queue and runs them.

    worker = CommandWorker(runtime, "nats://127.0.0.1:4222")
    runtime.workers.append(worker)     # started and stopped with the runtime
    print(await worker.progress())     # Progress(worker='twofold.commands.shop', position=…, head=…, …)

Every worker of a service pulls from one durable consumer, so each message goes to one of them.
For each message the worker records an outcome and then acknowledges it:

- **succeeded**: :meth:`~twofold.Runtime.execute` returned; the result is in the event store.
- **refused**: the domain or validation refused it (a :class:`~twofold.errors.TwofoldError` other
  than the three below). Recorded ``failed`` with the error and its message; not retried.
- **malformed**: not JSON, not a command CloudEvent, a type this service does not have, or fields
  that fail validation. Recorded ``failed`` (under its ``Nats-Msg-Id`` when it has no readable id).
- **infrastructure**: a ``StoreError``, ``BrokerError``, a ``ConcurrencyError`` that outlived the
  dispatcher's own retries, or anything unexpected. Handed back (``nak``) to be delivered again
  after 0.5 s, 1 s, 2 s, 5 s…; on the last of ``max_attempts`` deliveries recorded ``failed``.

A command still running is reported to JetStream as in progress every third of ``ack_wait``, so
only a worker that died has its messages handed to another. Running a command again after such a
death has no second effect: the event store applies a command id once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

try:
    from nats.aio.msg import Msg
    from nats.js import api
except ModuleNotFoundError as exc:  # pragma: no cover - depends on what is installed
    raise ModuleNotFoundError("Asynchronous commands on NATS need the nats extra: pip install 'twofold[nats]'") from exc

from twofold.broker._fetch import fetch_promptly
from twofold.broker._jetstream import DUPLICATE_WINDOW, OUTCOME_TTL, Connection, Outcomes, ensure_commands_stream
from twofold.broker.command_messages import QueuedCommand, decode_command
from twofold.broker.subjects import commands_filter, commands_stream
from twofold.command_queue import CommandOutcome
from twofold.errors import (
    BrokerError,
    ConcurrencyError,
    ConfigurationError,
    InvalidMessage,
    StoreError,
    TwofoldError,
)
from twofold.health import Progress, Total
from twofold.messages import Command, parse, utc_now

if TYPE_CHECKING:
    from twofold.runtime import Runtime

__all__ = ["CommandWorker"]

log = logging.getLogger("twofold.broker.commands")

RETRY_DELAYS = (0.5, 1.0, 2.0, 5.0, 10.0)  # seconds before a command that failed on infrastructure comes back
RESTART_DELAYS = (0.1, 0.5, 1.0, 2.0, 5.0)  # seconds before the worker tries again after losing its consumer
CONSUMER = "twofold_command_worker"  # the durable consumer every worker of a service shares
RETRIED = (StoreError, BrokerError, ConcurrencyError)  # failures of the moment, not of the command


class _Malformed(Exception):
    def __init__(self, command_id: str | None, error: str, detail: str, principal: str | None = None) -> None:
        self.command_id, self.error, self.detail, self.principal = command_id, error, detail, principal
        super().__init__(detail)


class CommandWorker:
    """Runs the commands queued for ``runtime``'s service (a :class:`twofold.runtime.Worker`).

    Args:
        runtime: the service and the event store the commands run against.
        nats_url: the NATS server(s), e.g. ``nats://127.0.0.1:4222``.
        concurrency: the most commands this worker runs at once.
        max_attempts: deliveries of a command that fails on infrastructure before it is recorded failed.
        ack_wait: seconds without word from a worker before JetStream hands its message to another
            (for a consumer this creates).
        outcome_ttl: seconds an outcome stays readable, for a bucket this creates.
        duplicate_window: seconds JetStream remembers command ids, for a stream this creates.
    """

    def __init__(
        self,
        runtime: Runtime,
        nats_url: str,
        *,
        concurrency: int = 16,
        max_attempts: int = 5,
        ack_wait: float = 10.0,
        outcome_ttl: float = OUTCOME_TTL,
        duplicate_window: float = DUPLICATE_WINDOW,
        fetch_timeout: float = 1.0,
    ) -> None:
        if runtime.store is None:
            raise ConfigurationError("A command worker runs commands: give its Runtime(store=...)")
        self.service_name = runtime.service.name
        self.name = f"twofold.commands.{self.service_name}"
        self.stream = commands_stream(self.service_name)
        self._runtime = runtime
        self._connection = Connection(nats_url, f"twofold command worker {self.service_name}", 5.0)
        self._concurrency, self._max_attempts, self._ack_wait = concurrency, max_attempts, ack_wait
        self._outcome_ttl, self._duplicate_window, self._fetch_timeout = outcome_ttl, duplicate_window, fetch_timeout
        self._outcomes: Outcomes | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._busy = False  # commands in hand
        self.handled = 0  # messages this worker finished with (acknowledged), whatever their outcome
        self.outcomes: collections.Counter[str] = collections.Counter()  # succeeded, failed, retried: for /metrics
        self.position = 0  # the stream sequence before which every message is done with
        self.head = 0  # the stream's last sequence
        self.last_progress = utc_now()
        self.waiting_since: datetime | None = None
        self.failures = 0
        self.last_error: str | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Start pulling commands in a task; calling it again does nothing."""
        if self.running:
            return
        self._stopping = False
        self.last_progress = utc_now()
        self._task = asyncio.create_task(self._run(), name=f"command worker {self.service_name}")

    async def stop(self, timeout: float = 5.0) -> None:
        """Finish the commands in hand (for at most ``timeout`` s), then close the connection."""
        if self._task is not None:
            self._stopping = True
            if self._busy:  # else it waits for NATS or for messages: nothing to finish
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self._task), timeout)
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self._outcomes = None
        await self._connection.close()

    async def progress(self) -> Progress:
        """The queue against this worker: ``head`` is the last message queued, ``position`` the one
        before the oldest not yet done with; ``waiting_since`` is when that oldest one was queued."""
        with contextlib.suppress(Exception):  # unreachable NATS: the last known state, ageing
            await asyncio.wait_for(self._read_queue(), 2.0)
        if self.head <= self.position and self.running:
            self.last_progress = utc_now()  # nothing waiting is progress too: idle is not stuck
        return Progress(self.name, self.position, self.head, self.last_progress, self.waiting_since)

    def totals(self) -> list[Total]:
        """Commands taken off the queue since the process started, by outcome (``retried``: handed back for later)."""
        return [
            Total("async_commands", {"worker": self.name, "outcome": outcome}, self.outcomes[outcome])
            for outcome in ("succeeded", "failed", "retried")
        ]

    async def _read_queue(self) -> None:
        if self._connection.client is None or self._connection.client.is_closed:
            return
        js = await self._connection.jetstream()
        state = (await js.stream_info(self.stream)).state
        self.head = state.last_seq
        self.position = state.first_seq - 1 if state.messages else state.last_seq
        self.waiting_since = (await js.get_msg(self.stream, state.first_seq)).time if state.messages else None

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await self._work()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # losing NATS must not kill the worker: connect again, never skipping
                delay = RESTART_DELAYS[min(self.failures, len(RESTART_DELAYS) - 1)]
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("command worker %s failed (%s); retrying in %ss", self.service_name, self.last_error, delay)
                await asyncio.sleep(delay)

    async def _work(self) -> None:
        js = await self._connection.jetstream()
        await ensure_commands_stream(js, self.service_name, self._duplicate_window)
        self._outcomes = await Outcomes.open(js, self.service_name, self._outcome_ttl)
        config = api.ConsumerConfig(
            durable_name=CONSUMER,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=self._ack_wait,
            max_deliver=-1,  # the worker counts attempts itself, so that the last one is recorded
            max_ack_pending=-1,
        )
        subscription = await js.pull_subscribe(
            commands_filter(self.service_name), durable=CONSUMER, stream=self.stream, config=config
        )
        try:
            while not self._stopping:
                try:
                    messages = await fetch_promptly(subscription, self._concurrency, self._fetch_timeout)
                except TimeoutError:  # nothing queued, or NATS out of reach: only the first is progress
                    client = self._connection.client
                    if client is not None and client.is_connected:
                        self.last_progress = utc_now()
                    continue
                self._busy = True
                try:
                    await self._handle_all(messages)
                finally:
                    self._busy = False
                self.failures, self.last_error = 0, None
        finally:
            with contextlib.suppress(Exception):  # the next try subscribes afresh
                await subscription.unsubscribe()

    async def _handle_all(self, messages: Sequence[Msg]) -> None:
        tasks = {asyncio.create_task(self._handle(message)): message for message in messages}
        pending = set(tasks)
        try:
            while pending:
                _, pending = await asyncio.wait(pending, timeout=self._ack_wait / 3)
                for task in pending:  # still running: JetStream must not hand it to another worker
                    with contextlib.suppress(Exception):
                        await tasks[task].in_progress()
        finally:
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _handle(self, message: Msg) -> None:
        try:
            done = await self._process(message)
        except Exception as exc:  # the outcome could not be recorded (or acknowledged): try again later
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("command worker %s: a message failed and comes back (%s)", self.service_name, self.last_error)
            with contextlib.suppress(Exception):
                await message.nak(delay=self._retry_delay(message))
            return
        if done:
            self.handled += 1
            self.last_progress = utc_now()

    async def _process(self, message: Msg) -> bool:
        """Record the message's outcome and acknowledge it (``True``), or hand it back for later."""
        try:
            queued, command = self._read(message)
        except _Malformed as bad:
            log.warning("command worker %s: %s", self.service_name, bad.detail)
            if bad.command_id is not None:
                await self._record(bad.command_id, CommandOutcome("failed", bad.error, bad.detail), bad.principal)
            await message.ack()
            self.outcomes["failed"] += 1
            return True
        outcome = await self._execute(message, queued, command)
        if outcome is None:
            await message.nak(delay=self._retry_delay(message))
            self.outcomes["retried"] += 1
            return False
        await self._record(queued.command_id, outcome, queued.principal)
        await message.ack()
        self.outcomes[outcome.status] += 1
        return True

    def _read(self, message: Msg) -> tuple[QueuedCommand, Command]:
        header_id = (message.headers or {}).get("Nats-Msg-Id")
        try:
            queued = decode_command(message.data)
        except BrokerError as exc:
            detail = f"The message on {message.subject} is not a command: {exc}"
            raise _Malformed(header_id, "InvalidMessage", detail) from None
        command_type = self._runtime.service.command_type(queued.type)
        if command_type is None:
            known = ", ".join(c.type_name for c in self._runtime.service.commands)
            detail = f"No command type {queued.type!r}; service {self.service_name} accepts: {known}"
            raise _Malformed(queued.command_id, "NotFound", detail, queued.principal)
        try:
            return queued, parse(command_type, queued.data)
        except InvalidMessage as exc:
            raise _Malformed(queued.command_id, "InvalidMessage", str(exc), queued.principal) from None

    async def _execute(self, message: Msg, queued: QueuedCommand, command: Command) -> CommandOutcome | None:
        """The outcome to record, or ``None`` to have the command delivered again later."""
        try:
            result = await self._runtime.execute(command, **queued.envelope_fields())
        except Exception as exc:
            refused = isinstance(exc, TwofoldError) and not isinstance(exc, RETRIED)
            if refused:
                return CommandOutcome("failed", type(exc).__name__, str(exc))
            attempt = message.metadata.num_delivered
            last = attempt >= self._max_attempts
            log.warning(
                "command %s (%s) failed on attempt %d of %d%s",
                queued.command_id,
                queued.type,
                attempt,
                self._max_attempts,
                "; giving up" if last else "; it comes back",
                exc_info=not isinstance(exc, TwofoldError),
            )
            if not last:
                return None
            if isinstance(exc, TwofoldError):
                return CommandOutcome("failed", type(exc).__name__, str(exc))
            return CommandOutcome("failed", "InternalError", "The command failed unexpectedly")
        if result.position is not None:
            return CommandOutcome("succeeded")  # the event store has it, with its command id
        summary = {k: getattr(result, k) for k in ("command_id", "stream_id", "version", "position")}
        return CommandOutcome("succeeded", result=summary)  # it appended nothing: only the bucket can say

    async def _record(self, command_id: str, outcome: CommandOutcome, principal: str | None) -> None:
        if outcome.status == "succeeded" and outcome.result is None:
            return  # the store is read before the bucket, so a "pending" left there is never seen
        assert self._outcomes is not None  # opened by _work before any message is fetched
        # The sender is kept with the outcome: only they (or an operator) may read it.
        await self._outcomes.write(command_id, dataclasses.replace(outcome, principal=principal))

    def _retry_delay(self, message: Msg) -> float:
        attempt = message.metadata.num_delivered
        return RETRY_DELAYS[min(max(attempt, 1) - 1, len(RETRY_DELAYS) - 1)]
