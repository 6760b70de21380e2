"""The one hierarchy of errors twofold raises, each carrying its facts as fields.

    TwofoldError
     ├── DomainError          a business rule refused the command         (HTTP 409)
     ├── ConcurrencyError     a stream moved on since it was read          (HTTP 409)
     ├── InvalidMessage       a message failed validation; names each field (HTTP 422)
     ├── NotFound             no such command, query or stream             (HTTP 404)
     ├── AccessDenied         a stream belongs to another tenant           (HTTP 403)
     ├── NotCaughtUp          a read model did not reach a position in time (HTTP 504)
     ├── ConfigurationError   a setting is missing or wrong; says how to fix it
     ├── StoreError           the event store or a read store failed
     └── BrokerError          the message broker failed

HTTP, the CLI and retries read the fields, never the text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "AccessDenied",
    "BrokerError",
    "ConcurrencyError",
    "ConfigurationError",
    "DomainError",
    "FieldError",
    "InvalidMessage",
    "NotCaughtUp",
    "NotFound",
    "StoreError",
    "TwofoldError",
]


class TwofoldError(Exception):
    """Base of every error twofold raises on purpose."""


class DomainError(TwofoldError):
    """A business rule refused a command; the message is meant for a person.

    Raise it from an aggregate's decision: ``raise DomainError("Not enough stock for sku A-1")``.
    """


class ConcurrencyError(TwofoldError):
    """A stream's version was not the one the writer expected."""

    def __init__(self, stream_id: str, expected: object, actual: int) -> None:
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"Wrong expected version for stream {stream_id}: expected {_describe(expected)}, actual {actual}"
        )


def _describe(expected: object) -> str:
    return getattr(expected, "description", str(expected))


@dataclass(frozen=True, slots=True)
class FieldError:
    """One bad field: where it is (``lines[0].quantity``) and what is wrong with it."""

    field: str
    message: str


class InvalidMessage(TwofoldError):
    """A command or query failed validation. ``errors`` names every bad field."""

    def __init__(self, message_type: str, errors: Sequence[FieldError]) -> None:
        self.message_type = message_type
        self.errors = tuple(errors)
        listed = "; ".join(f"{e.field}: {e.message}" for e in self.errors)
        super().__init__(f"Invalid {message_type}: {listed}")


class NotFound(TwofoldError):
    """Something asked for by name does not exist."""


class AccessDenied(TwofoldError):
    """A command reached for something its sender may not touch, such as another tenant's stream."""


class NotCaughtUp(TwofoldError):
    """A read model had not reached a position when the wait ran out."""

    def __init__(self, required: int, current: int, timeout: float) -> None:
        self.required = required
        self.current = current
        self.timeout = timeout
        super().__init__(
            f"Read model not caught up: required position {required}, current {current} after {timeout:g}s"
        )


class ConfigurationError(TwofoldError):
    """A setting is missing or wrong. The message says what to set."""


class StoreError(TwofoldError):
    """An event store or read store failed for a reason other than the rules above."""


class BrokerError(TwofoldError):
    """The message broker failed."""
