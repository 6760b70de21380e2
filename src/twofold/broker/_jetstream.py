"""What the command sender, queue and worker share: one lazy connection, the work-queue stream, the outcomes bucket.

A service's asynchronous commands live in two JetStream places, both created on first use by
whoever gets there first (creating them again with the same configuration changes nothing):

- the work queue ``TWOFOLD_<SERVICE>_COMMANDS`` (subjects ``twofold.<service>.commands.>``, file
  storage, work-queue retention: a message is gone once a worker acknowledges it);
- the key-value bucket ``twofold_<service>_commands``: each command's outcome while it waits and
  after it failed, kept for a day, readable from any process of the service.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
from typing import Any

try:
    import nats
    from nats.aio.client import Client
    from nats.js import JetStreamContext, api
    from nats.js.errors import BadRequestError, KeyNotFoundError, KeyWrongLastSequenceError
    from nats.js.kv import KeyValue
except ModuleNotFoundError as exc:  # pragma: no cover - depends on what is installed
    raise ModuleNotFoundError("Asynchronous commands on NATS need the nats extra: pip install 'twofold[nats]'") from exc

from twofold.broker.subjects import commands_filter, commands_stream
from twofold.command_queue import CommandOutcome
from twofold.errors import BrokerError

log = logging.getLogger("twofold.broker.commands")

DUPLICATE_WINDOW = 120.0  # seconds JetStream drops a second message with the same Nats-Msg-Id
OUTCOME_TTL = 24 * 3600.0  # seconds an outcome stays readable
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")


def outcomes_bucket(service: str) -> str:
    """``twofold_<service>_commands``: the key-value bucket of a service's command outcomes."""
    return f"twofold_{re.sub(r'[^A-Za-z0-9_-]', '_', service)}_commands"


def outcome_key(command_id: str) -> str:
    """A command id as a key: itself when plain, else ``=`` and its base64url (keys refuse ``:`` and ``~``)."""
    if _PLAIN_KEY.fullmatch(command_id):
        return command_id
    return "=" + base64.urlsafe_b64encode(command_id.encode()).decode().rstrip("=")


class Connection:
    """One NATS connection, made on first use and made again after it was closed.

    ``connect_within``: seconds to wait for a first connection before raising ``TimeoutError``
    (a request should fail rather than hang while NATS is down); ``None`` waits as long as it takes.
    """

    def __init__(self, url: str, name: str, timeout: float, connect_within: float | None = None) -> None:
        self.url, self.name, self.timeout, self.connect_within = url, name, timeout, connect_within
        self.client: Client | None = None
        self.last_error: str | None = None
        self._lock = asyncio.Lock()

    async def jetstream(self) -> JetStreamContext:
        async with self._lock:  # two first calls at once must not open two connections
            if self.client is None or self.client.is_closed:
                connecting = nats.connect(
                    self.url,
                    name=self.name,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,  # once connected, the client waits for NATS to come back
                    reconnect_time_wait=0.25,
                    connect_timeout=2.0,
                    error_cb=self._on_error,
                )
                self.client = await asyncio.wait_for(connecting, self.connect_within)
            return self.client.jetstream(timeout=self.timeout)

    async def _on_error(self, exc: Exception) -> None:
        self.last_error = f"NATS connection: {type(exc).__name__}: {exc}"
        log.debug("%s: %s", self.name, self.last_error)

    async def close(self) -> None:
        client, self.client = self.client, None
        if client is not None and not client.is_closed:
            await client.close()


async def ensure_commands_stream(js: JetStreamContext, service: str, duplicate_window: float) -> None:
    """Create ``service``'s work queue, unless it exists and takes the service's command subjects."""
    name, subjects = commands_stream(service), commands_filter(service)
    config = api.StreamConfig(
        name=name,
        description=f"twofold: asynchronous commands for service {service}, each handled by one worker",
        subjects=[subjects],
        storage=api.StorageType.FILE,
        retention=api.RetentionPolicy.WORK_QUEUE,
        duplicate_window=duplicate_window,
    )
    try:
        await js.add_stream(config)
    except BadRequestError:  # it exists with another configuration (an operator's: keep it)
        info = await js.stream_info(name)
        if subjects not in (info.config.subjects or []):
            raise BrokerError(
                f"JetStream stream {name} exists but does not take subjects {subjects} "
                f"(it takes {info.config.subjects}); add them, or delete the stream"
            ) from None


class Outcomes:
    """Command outcomes in the service's key-value bucket: ``pending`` and ``failed`` (and ``succeeded``)."""

    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    @classmethod
    async def open(cls, js: JetStreamContext, service: str, ttl: float) -> Outcomes:
        bucket = outcomes_bucket(service)
        config = api.KeyValueConfig(
            bucket=bucket,
            description=f"twofold: outcomes of service {service}'s asynchronous commands",
            ttl=ttl,
            storage=api.StorageType.FILE,
            history=1,
        )
        try:
            return cls(await js.create_key_value(config))
        except BadRequestError:  # it exists with another configuration: use it as it is
            return cls(await js.key_value(bucket))

    async def read(self, command_id: str) -> tuple[CommandOutcome | None, int]:
        """The recorded outcome and its revision (``None`` and 0 when there is none)."""
        try:
            entry = await self._kv.get(outcome_key(command_id))
        except KeyNotFoundError:
            return None, 0
        return _decode(entry.value or b""), entry.revision or 0

    async def write(self, command_id: str, outcome: CommandOutcome) -> None:
        await self._kv.put(outcome_key(command_id), _encode(outcome))

    async def replace(self, command_id: str, outcome: CommandOutcome, revision: int) -> bool:
        """Write ``outcome`` only if the record is still at ``revision`` (0: only if there is none)."""
        try:
            if revision:
                await self._kv.update(outcome_key(command_id), _encode(outcome), last=revision)
            else:
                await self._kv.create(outcome_key(command_id), _encode(outcome))
        except KeyWrongLastSequenceError:
            return False
        return True


def _encode(outcome: CommandOutcome) -> bytes:
    fields = {
        "status": outcome.status,
        "error": outcome.error,
        "detail": outcome.detail,
        "result": outcome.result,
        "principal": outcome.principal,
    }
    return json.dumps({k: v for k, v in fields.items() if v is not None}, separators=(",", ":")).encode()


def _decode(value: bytes) -> CommandOutcome | None:
    try:
        fields: Any = json.loads(value)
    except ValueError:
        return None
    if not isinstance(fields, dict) or fields.get("status") not in ("pending", "failed", "succeeded"):
        return None
    result, principal = fields.get("result"), fields.get("principal")
    return CommandOutcome(
        fields["status"],
        error=fields.get("error"),
        detail=fields.get("detail"),
        result=result if isinstance(result, dict) else None,
        principal=principal if isinstance(principal, str) else None,
    )
