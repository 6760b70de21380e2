"""NATS names for a service's events: the JetStream stream and each event's subject.

    >>> events_subject("shop", "order", "shop.OrderPlaced")
    'twofold.shop.events.order.shop.OrderPlaced'
    >>> events_subject("shop", "order", "Order placed!")
    'twofold.shop.events.order.Order%20placed%21'
    >>> events_stream("shop")
    'TWOFOLD_SHOP_EVENTS'
    >>> commands_subject("shop", "shop.PlaceOrder")
    'twofold.shop.commands.shop.PlaceOrder'
    >>> commands_stream("shop")
    'TWOFOLD_SHOP_COMMANDS'

Event subjects are ``twofold.<service>.events.<category>.<type>``; asynchronous commands go to
``twofold.<service>.commands.<type>``, on a work-queue stream of their own. The service and the category are
one token each; a type's dots stay token separators, so that ``twofold.shop.events.order.shop.>``
selects the ``shop.*`` types of the ``order`` category. Within a token, every character outside
``A-Z a-z 0-9 _ -`` (a dot in a service or category, a space, ``*``, ``>``, ``%``, non-ASCII)
is written ``%XX`` per UTF-8 byte, and an empty token is ``%``: every subject is valid and no
two names share one. The subject is for routing and filtering; the message's body holds the
exact type and stream id.
"""

from __future__ import annotations

import functools
import re

__all__ = [
    "commands_filter",
    "commands_stream",
    "commands_subject",
    "events_filter",
    "events_stream",
    "events_subject",
    "subject_token",
]

_SAFE = re.compile(r"[A-Za-z0-9_-]+")


def subject_token(text: str) -> str:
    """``"a.b c"`` → ``"a%2Eb%20c"``: one valid subject token (``%`` for the empty string)."""
    if _SAFE.fullmatch(text):
        return text
    if not text:
        return "%"
    return "".join(ch if _SAFE.fullmatch(ch) else "".join(f"%{b:02X}" for b in ch.encode()) for ch in text)


@functools.lru_cache(maxsize=4096)  # a service has few (category, type) pairs; the relay asks per event
def events_subject(service: str, category: str, event_type: str) -> str:
    """The subject an event of ``event_type`` in ``category`` is published on."""
    type_tokens = ".".join(subject_token(part) for part in event_type.split("."))
    return f"{events_filter(service)[:-1]}{subject_token(category)}.{type_tokens}"


def events_filter(service: str) -> str:
    """``twofold.<service>.events.>``: every event subject of one service (the stream's subjects)."""
    return f"twofold.{subject_token(service)}.events.>"


def events_stream(service: str) -> str:
    """The JetStream stream holding a service's events: ``TWOFOLD_<SERVICE>_EVENTS``.

    Stream names may not hold ``.``, ``*``, ``>``, spaces or path separators: anything outside
    letters, digits, ``_`` and ``-`` becomes ``_``.
    """
    return f"TWOFOLD_{_stream_token(service)}_EVENTS"


@functools.lru_cache(maxsize=1024)
def commands_subject(service: str, command_type: str) -> str:
    """The subject a command of ``command_type`` for ``service`` is queued on."""
    type_tokens = ".".join(subject_token(part) for part in command_type.split("."))
    return f"{commands_filter(service)[:-1]}{type_tokens}"


def commands_filter(service: str) -> str:
    """``twofold.<service>.commands.>``: every command subject of one service (its work queue's subjects)."""
    return f"twofold.{subject_token(service)}.commands.>"


def commands_stream(service: str) -> str:
    """The JetStream work-queue stream of a service's asynchronous commands: ``TWOFOLD_<SERVICE>_COMMANDS``."""
    return f"TWOFOLD_{_stream_token(service)}_COMMANDS"


def _stream_token(service: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", service).upper()
