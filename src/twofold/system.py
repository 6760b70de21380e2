"""Services that work together, declared as one system.

    shop = System("shop", [catalog, inventory, orders, payments])

A system is what ``twofold serve`` and the gateway run: embedded, every service in one process,
each with its own stores, commands carried between them by an in-process bus and events by
in-process feeds; in cluster mode, every service in its own processes, with NATS between them.
Either way a client sees one API: each command and query type belongs to exactly one service,
so ``/commands/{Type}`` and ``/queries/{Type}`` route without ambiguity.
"""

from __future__ import annotations

from collections.abc import Sequence

from twofold.errors import ConfigurationError
from twofold.service import Service

__all__ = ["System"]


class System:
    """Services that integrate through events and commands, and the one API they share.

    Args:
        name: the system's name (data folders, the gateway's title).
        services: its services; their names, command types and query types must be unique.
        description: shown at the top of the gateway's OpenAPI document.
    """

    def __init__(self, name: str, services: Sequence[Service], *, description: str = "") -> None:
        self.name = name
        self.services = tuple(services)
        self.description = description
        self._check()

    def service(self, name: str) -> Service:
        """The service named ``name``."""
        for service in self.services:
            if service.name == name:
                return service
        raise ConfigurationError(f"System {self.name} has no service {name!r}; it has {', '.join(self.names)}")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.services)

    def owner_of_command(self, type_name: str) -> Service | None:
        return next((s for s in self.services if s.command_type(type_name) is not None), None)

    def owner_of_query(self, type_name: str) -> Service | None:
        return next((s for s in self.services if s.query_type(type_name) is not None), None)

    def _check(self) -> None:
        if not self.services:
            raise ConfigurationError(f"System {self.name} needs at least one service")
        _unique(self.name, "service", list(self.names))
        _unique(self.name, "command type", [c.type_name for s in self.services for c in s.commands])
        _unique(self.name, "query type", [q.type_name for s in self.services for q in s.queries])
        for service in self.services:
            for subscription in service.subscriptions:
                if subscription.source == service.name or subscription.source not in self.names:
                    raise ConfigurationError(
                        f"Service {service.name} subscribes to {subscription.source!r}, which is not another"
                        f" service of {self.name} ({', '.join(self.names)})"
                    )


def _unique(system: str, kind: str, names: list[str]) -> None:
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigurationError(f"System {system}: two services share the {kind} {repeated[0]!r}")
