"""Commands accepted now and handled later: what a command API needs from whatever runs them.

    await queue.submit(Envelope(PlaceOrder(...), message_id="c-1"))   # 202 as soon as this returns
    await queue.outcome("c-1")    # CommandOutcome(status='pending') … then 'failed' or 'succeeded'

Two implementations follow :class:`CommandQueue`: ``twofold.http.commands.AsyncCommands`` runs each
command in a task of the same process (embedded), and ``twofold.broker.commands.JetStreamCommands``
puts it on the service's NATS JetStream work queue, where any ``CommandWorker`` takes it.

A success is always in the event store (it records command ids), so a queue only has to know
about commands still waiting and those that failed; ``outcome`` may return ``None`` for a command
that succeeded, and the caller then reads its result from the store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from twofold.messages import Command, Envelope

__all__ = ["CommandOutcome", "CommandQueue"]


@dataclass(frozen=True, slots=True)
class CommandOutcome:
    """Where an accepted command stands.

    Attributes:
        status: ``pending`` (queued or running), ``failed`` or ``succeeded``.
        error: for a failure, the error's kind: ``DomainError``, ``InvalidMessage``, ``InternalError``…
        detail: for a failure, the message meant for a person.
        result: for a success that appended nothing, the result (the store has no record of it).
        principal: who sent the command (a token's ``sub``), so that only they may read where it stands.
    """

    status: Literal["pending", "failed", "succeeded"]
    error: str | None = None
    detail: str | None = None
    result: dict[str, Any] | None = field(default=None)
    principal: str | None = None


class CommandQueue(Protocol):
    """Accepts commands to handle later and says how each one went."""

    async def submit(self, envelope: Envelope[Command]) -> None:
        """Accept ``envelope`` to be handled once per ``message_id``; return once it is safely queued."""
        ...

    async def outcome(self, command_id: str) -> CommandOutcome | None:
        """What became of a command this queue accepted; ``None`` when it knows nothing of it."""
        ...

    async def drain(self, timeout: float) -> None:
        """Shut down: let what runs here finish for at most ``timeout`` seconds, release connections."""
        ...
