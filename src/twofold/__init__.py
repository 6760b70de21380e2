"""twofold: CQRS and event sourcing for Python services.

    from twofold import Aggregate, Command, DomainError, Event, Projection, Query, Saga, Service, UnitOfWork

The names here are the public API; backends live in ``twofold.store.sqlite``,
``twofold.readmodels.sqlite`` and friends, the HTTP apps in ``twofold.http``.
"""

from twofold.aggregate import Aggregate
from twofold.commands import CommandResult, UnitOfWork
from twofold.errors import (
    AccessDenied,
    BrokerError,
    ConcurrencyError,
    ConfigurationError,
    DomainError,
    FieldError,
    InvalidMessage,
    NotCaughtUp,
    NotFound,
    StoreError,
    TwofoldError,
)
from twofold.messages import Command, Envelope, Event, Query, Upcaster
from twofold.personal import FORGOTTEN, KeyStore, Personal
from twofold.projections import Projection
from twofold.readmodels import Database
from twofold.runtime import Runtime
from twofold.sagas import Actions, Saga, Timeout
from twofold.service import Service
from twofold.store import ANY, NO_STREAM, EventStore, NewEvent, StoredEvent
from twofold.subscriptions import Subscription
from twofold.system import System

__all__ = [
    "ANY",
    "FORGOTTEN",
    "NO_STREAM",
    "AccessDenied",
    "Actions",
    "Aggregate",
    "BrokerError",
    "Command",
    "CommandResult",
    "ConcurrencyError",
    "ConfigurationError",
    "Database",
    "DomainError",
    "Envelope",
    "Event",
    "EventStore",
    "FieldError",
    "InvalidMessage",
    "KeyStore",
    "NewEvent",
    "NotCaughtUp",
    "NotFound",
    "Personal",
    "Projection",
    "Query",
    "Runtime",
    "Saga",
    "Service",
    "StoreError",
    "StoredEvent",
    "Subscription",
    "System",
    "Timeout",
    "TwofoldError",
    "UnitOfWork",
    "Upcaster",
]
