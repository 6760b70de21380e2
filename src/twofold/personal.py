"""Personal data: event fields stored encrypted under a key per subject, forgotten by destroying the key.

    class UserRegistered(Event, name="social.UserRegistered"):
        user_id: str
        email: Annotated[str, Personal(subject="user_id")]

    async def forget_user(command: ForgetUser, uow: UnitOfWork) -> None:
        uow.forget(command.user_id)             # the key of subject "u-1" is destroyed
        uow.emit(user, UserForgotten(user_id=command.user_id))

When a command's events are appended, each personal field is encrypted (AES-GCM) under the key
of its subject — the value of the field ``subject`` names — and stored as text:
``personal:v1:<nonce and ciphertext, base64>``. The key is made on first use and kept by the event
store, in its own database (a :class:`KeyStore`). Wherever events are decoded (an aggregate's
load, projections, sagas) the field is decrypted again; once the key is forgotten, or when the
key in hand is not the one it was sealed with, it reads as :data:`FORGOTTEN`. The subject's id
is bound to each ciphertext, so a value copied under another subject never decrypts.

Personal fields hold text (``str``, or ``str | None``; ``None`` is stored as it is). What
forgetting guarantees, and what it does not, is in docs/personal-data.md.
"""

from __future__ import annotations

import base64
import binascii
import functools
import os
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import BaseModel

from twofold.errors import ConfigurationError

if TYPE_CHECKING:
    from twofold.messages import Event, EventTypes
    from twofold.store import StoredEvent

__all__ = [
    "FORGOTTEN",
    "KEY_BYTES",
    "KeyStore",
    "Personal",
    "PersonalData",
    "new_key",
    "open_text",
    "personal_fields",
    "seal_text",
]

FORGOTTEN = "[forgotten]"  # what a personal field reads as once its subject's key is gone
KEY_BYTES = 32  # AES-256
_PREFIX = "personal:v1:"
_NONCE_BYTES = 12  # GCM's standard nonce; random, so never reused under one key in practice


@dataclass(frozen=True, slots=True)
class Personal:
    """Marks an event field as personal to the subject whose id is in the field named ``subject``."""

    subject: str


@runtime_checkable
class KeyStore(Protocol):
    """One secret key per subject, kept where the events are; an event store that has a keys table.

    Error outcomes: ``StoreError`` (the backend failed; no key made or destroyed).
    """

    async def subject_keys(self, subjects: Collection[str], *, create: bool = False) -> Mapping[str, bytes]:
        """The keys of ``subjects`` that exist; with ``create=True``, a new key for each that has none."""
        ...

    async def forget_subject(self, subject: str) -> None:
        """Destroy the subject's key, so that what was sealed with it never reads again."""
        ...


def new_key() -> bytes:
    """A fresh random key for one subject."""
    return os.urandom(KEY_BYTES)


@functools.cache
def personal_fields(cls: type[BaseModel]) -> Mapping[str, str]:
    """``{"email": "user_id"}``: each personal field of ``cls`` and the field that holds its subject.

    Raises ``TypeError`` when a field names a subject field the class does not have.
    """
    found: dict[str, str] = {}
    for name, info in cls.model_fields.items():
        marks = [m for m in info.metadata if isinstance(m, Personal)]
        if not marks:
            continue
        subject = marks[0].subject
        if subject not in cls.model_fields or subject == name:
            raise TypeError(
                f"{cls.__qualname__}.{name} is personal to the subject in field {subject!r}, which"
                f" {cls.__qualname__} does not have; name one of its other fields"
            )
        found[name] = subject
    return found


class PersonalData:
    """Seals and opens the personal fields of events with the keys of one :class:`KeyStore`.

    Keys are looked up once per instance and subject: make one per command attempt, or per page
    of events, so that a key forgotten meanwhile is missed from the next one on.

    Args:
        keys: where the subjects' keys are; ``None`` where the store keeps none, which refuses to
            seal and reads every personal field as :data:`FORGOTTEN`.
    """

    def __init__(self, keys: KeyStore | None) -> None:
        self._keys = keys
        self._cache: dict[str, bytes | None] = {}

    async def seal(self, events: Iterable[Event]) -> dict[int, dict[str, Any]]:
        """The stored form of each event (by ``id()``), personal fields encrypted; keys made as needed."""
        dumped = [(e, e.model_dump(mode="json")) for e in events]
        subjects = {s for e, data in dumped for s in _subjects(type(e), data).values()}
        if subjects and self._keys is None:
            raise ConfigurationError(
                "Events with personal fields need an event store that keeps keys (SQLite, PostgreSQL or memory)"
            )
        if subjects and self._keys is not None:
            self._cache.update(await self._keys.subject_keys(subjects, create=True))
        return {id(e): self._sealed(type(e), data) for e, data in dumped}

    async def open(self, records: Iterable[StoredEvent], types: EventTypes) -> list[StoredEvent]:
        """``records`` with their personal fields decrypted, or :data:`FORGOTTEN` where no key opens them."""
        records = list(records)
        personal = [(r, cls) for r in records if (cls := types.class_of(r.type)) is not None and personal_fields(cls)]
        if not personal:
            return records
        await self._fetch({s for r, cls in personal for s in _subjects(cls, r.data).values()})
        opened = {id(r): replace(r, data=self._opened(cls, r.data)) for r, cls in personal}
        return [opened.get(id(r), r) for r in records]

    async def _fetch(self, subjects: set[str]) -> None:
        missing = subjects - self._cache.keys()
        if not missing:
            return
        found = await self._keys.subject_keys(missing) if self._keys is not None else {}
        self._cache.update({s: found.get(s) for s in missing})

    def _sealed(self, cls: type[BaseModel], data: dict[str, Any]) -> dict[str, Any]:
        for name, subject in _subjects(cls, data).items():
            value = data[name]
            if not isinstance(value, str):
                raise TypeError(f"{cls.__qualname__}.{name} is personal, so it must hold text (got {value!r})")
            key = self._cache[subject]
            assert key is not None  # seal made every subject's key
            data[name] = seal_text(key, subject, value)
        return data

    def _opened(self, cls: type[BaseModel], data: Mapping[str, Any]) -> dict[str, Any]:
        opened = dict(data)
        for name, subject in _subjects(cls, data).items():
            opened[name] = open_text(self._cache.get(subject), subject, data[name])
        return opened


def _subjects(cls: type[BaseModel], data: Mapping[str, Any]) -> dict[str, str]:
    """Each personal field present with a value in ``data``, and the id of its subject."""
    found: dict[str, str] = {}
    for name, subject_field in personal_fields(cls).items():
        if data.get(name) is None:
            continue
        subject = data.get(subject_field)
        if not isinstance(subject, str) or not subject:
            raise TypeError(f"{cls.__qualname__}.{name} is personal, but its subject {subject_field!r} is {subject!r}")
        found[name] = subject
    return found


def seal_text(key: bytes, subject: str, text: str) -> str:
    """``text`` encrypted under ``key``, bound to ``subject``: ``personal:v1:…``."""
    nonce = os.urandom(_NONCE_BYTES)
    sealed = AESGCM(key).encrypt(nonce, text.encode(), subject.encode())
    return _PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()


def open_text(key: bytes | None, subject: str, stored: Any) -> Any:
    """The text ``seal_text`` sealed, or :data:`FORGOTTEN` when ``key`` is missing or is not the one.

    A value that is not sealed (written before its field was marked personal) is returned as it is.
    """
    if not isinstance(stored, str) or not stored.startswith(_PREFIX):
        return stored
    if key is None:
        return FORGOTTEN
    try:
        raw = base64.urlsafe_b64decode(stored.removeprefix(_PREFIX))
        return AESGCM(key).decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], subject.encode()).decode()
    except (InvalidTag, binascii.Error, ValueError):  # another key, another subject, or damaged text
        return FORGOTTEN
