"""How a service sends commands to another service, whatever carries them.

A saga in the ``orders`` service that reserves stock sends ``ReserveStock`` to ``inventory``:

    await sender.send("inventory", Envelope(ReserveStock(...), message_id=command_id, ...))

Sending is at-least-once and the receiver applies a command at most once per ``message_id``
(its event store records command ids), so a sender that crashes and sends again has no second
effect. The outcome comes back as events, never as a return value: a command sent this way
should record a refusal as an event (``StockShortage``) rather than only raise.

``InProcessBus`` carries commands between services running in one process (the embedded mode);
``twofold.broker.commands`` carries them over NATS JetStream.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

from twofold.errors import ConfigurationError
from twofold.messages import Command, Envelope

if TYPE_CHECKING:
    from twofold.runtime import Runtime

__all__ = ["CommandSender", "InProcessBus"]

log = logging.getLogger("twofold.bus")


class CommandSender(Protocol):
    """Delivers a command to the service that owns it, at least once."""

    async def send(self, service: str, envelope: Envelope[Command]) -> None:
        """Deliver ``envelope`` to ``service``; return once it is durably on its way (or handled)."""
        ...


class InProcessBus:
    """Commands between runtimes in one process: sending one is handling it, at once.

    The receiving runtime checks the command against its own class, as it would a message from a
    broker; a refusal is logged and ends there: the sender learns outcomes from events.
    """

    def __init__(self) -> None:
        self._runtimes: dict[str, Runtime] = {}

    def register(self, runtime: Runtime) -> None:
        """Make ``runtime``'s service reachable by its name."""
        self._runtimes[runtime.service.name] = runtime

    @property
    def runtimes(self) -> dict[str, Runtime]:
        return dict(self._runtimes)

    async def send(self, service: str, envelope: Envelope[Command]) -> None:
        runtime = self._runtimes.get(service)
        if runtime is None:
            known = ", ".join(sorted(self._runtimes)) or "none"
            raise ConfigurationError(f"No service named {service!r} runs in this process (known: {known})")
        await runtime.receive(envelope)
