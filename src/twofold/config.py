"""Settings from the environment, and the stores they name.

    TWOFOLD_DATABASE_URL       the event store: sqlite:///data/shop.db (default) or postgresql://…
    TWOFOLD_READ_DATABASE_URL  the read models; defaults beside the event store
    TWOFOLD_QUERY_DATABASE_URL where the queries role reads them: a read replica of the read
                               database (postgresql://…); defaults to TWOFOLD_READ_DATABASE_URL
    TWOFOLD_WAREHOUSE_URL      the "warehouse" target's store, opened only when a projection names it:
                               duckdb:///data/shop-warehouse.duckdb (default: beside the event store)
    TWOFOLD_SEARCH_URL         the "search" target's index directory, likewise:
                               tantivy:///data/shop-search (default: beside the event store)
    TWOFOLD_NATS_URL           NATS JetStream (nats://127.0.0.1:4222): the relay publishes events there,
                               consumers import the subscribed ones, sagas send their commands and
                               asynchronous commands wait there for command workers; unset, nothing
                               is published and 202 commands run in the API process
    HOST, PORT                 where HTTP listens (127.0.0.1:8000)
    TWOFOLD_AUTH_HS256_SECRET  bearer tokens signed with this shared secret (development)
    TWOFOLD_AUTH_JWKS_URL      … or with the RS256/ES256 keys published at this https:// URL
    TWOFOLD_AUTH_JWKS_FILE     … or with the keys of this JWK set file (production)
    TWOFOLD_AUTH_AUDIENCE      the ``aud`` a token must carry, when set
    TWOFOLD_AUTH_ISSUER        the ``iss`` a token must carry, when set
    TWOFOLD_RATE_LIMIT_COMMANDS  commands each principal may send, e.g. 20/s or 600/min; unset, no limit

``sqlite:///relative/path.db`` is relative to the working directory, ``sqlite:////abs/path.db`` absolute;
``duckdb:///`` and ``tantivy:///`` paths likewise.
"""

from __future__ import annotations

import os
import re
import typing
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from twofold.bus import CommandSender
from twofold.command_queue import CommandQueue
from twofold.errors import ConfigurationError
from twofold.readmodels import TARGETS, Database, ReadStore
from twofold.readmodels.sqlite import SQLiteReadStore
from twofold.runtime import Runtime, Worker
from twofold.service import Service
from twofold.store import EventStore
from twofold.store.sqlite import SQLiteEventStore

__all__ = ["AuthSettings", "RateLimit", "Role", "Settings", "async_commands_for", "check_exposure", "runtime_for"]

Role = Literal["all", "commands", "queries", "projections", "relay", "consumers", "command-worker", "workers"]
ROLES: tuple[Role, ...] = typing.get_args(Role)
NATS_ROLES = ("relay", "consumers", "command-worker", "workers")  # nothing to do without NATS


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str
    read_database_url: str
    host: str = "127.0.0.1"
    port: int = 8000
    nats_url: str | None = None
    query_database_url: str | None = None  # where the queries role reads; None: read_database_url
    warehouse_url: str | None = None  # None: beside the event store, named after the service
    search_url: str | None = None

    def target_url(self, target: str, service: str) -> str:
        """Where ``service``'s store of ``target`` is: the read database for ``"sql"``; the embedded
        targets' default is beside a SQLite event store (``data/`` otherwise)."""
        folder = _folder_of(self.database_url)
        chosen = {"sql": self.read_database_url, "warehouse": self.warehouse_url, "search": self.search_url}[target]
        defaults = {
            "warehouse": f"duckdb:///{folder / service}-warehouse.duckdb",
            "search": f"tantivy:///{folder / service}-search",
        }
        return chosen or defaults[target]

    @classmethod
    def from_env(cls, service: Service, environ: Mapping[str, str] = os.environ) -> Settings:
        """Read settings, defaulting to SQLite files under ``./data`` named after the service."""
        database_url = environ.get("TWOFOLD_DATABASE_URL") or f"sqlite:///data/{service.name}.db"
        read_url = environ.get("TWOFOLD_READ_DATABASE_URL") or _beside(database_url)
        port = environ.get("PORT", "8000")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigurationError(f"PORT must be a TCP port number from 1 to 65535 (got {port!r})")
        nats_url = environ.get("TWOFOLD_NATS_URL") or None
        if nats_url is not None and not nats_url.startswith(("nats://", "tls://")):
            raise ConfigurationError(f"TWOFOLD_NATS_URL must be nats://host:port or tls://host:port (got {nats_url!r})")
        warehouse_url = environ.get("TWOFOLD_WAREHOUSE_URL") or None
        search_url = environ.get("TWOFOLD_SEARCH_URL") or None
        host = environ.get("HOST") or "127.0.0.1"
        query_url = environ.get("TWOFOLD_QUERY_DATABASE_URL") or None
        return cls(database_url, read_url, host, int(port), nats_url, query_url, warehouse_url, search_url)


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """How bearer tokens are checked (docs/security.md): one source of keys, and the claims required.

    Exactly one of ``hs256_secret``, ``jwks_url`` and ``jwks_file`` is set.
    """

    hs256_secret: str | None = None
    jwks_url: str | None = None
    jwks_file: Path | None = None
    audience: str | None = None
    issuer: str | None = None
    leeway_seconds: float = 30.0  # clock skew tolerated on exp, nbf and iat
    jwks_cache_seconds: float = 300.0  # how long a key set fetched from jwks_url is used before it is fetched again

    def __post_init__(self) -> None:
        given = [name for name in AUTH_KEY_VARIABLES if getattr(self, _FIELD[name]) is not None]
        if len(given) != 1:
            raise ConfigurationError(
                f"Set exactly one of {', '.join(AUTH_KEY_VARIABLES)} to turn authentication on (got {given or 'none'})"
            )
        if self.hs256_secret is not None and len(self.hs256_secret.encode()) < MIN_SECRET_BYTES:
            raise ConfigurationError(
                f"TWOFOLD_AUTH_HS256_SECRET must be at least {MIN_SECRET_BYTES} bytes; make one with: "
                "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        if self.jwks_url is not None and not (self.jwks_url.startswith("https://") or _is_loopback_url(self.jwks_url)):
            raise ConfigurationError(f"TWOFOLD_AUTH_JWKS_URL must be an https:// URL (got {self.jwks_url!r})")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> AuthSettings | None:
        """The settings the environment asks for, or ``None`` when it turns authentication off."""
        if not any(environ.get(name) for name in AUTH_KEY_VARIABLES):
            return None
        jwks_file = environ.get("TWOFOLD_AUTH_JWKS_FILE") or None
        return cls(
            hs256_secret=environ.get("TWOFOLD_AUTH_HS256_SECRET") or None,
            jwks_url=environ.get("TWOFOLD_AUTH_JWKS_URL") or None,
            jwks_file=Path(jwks_file) if jwks_file else None,
            audience=environ.get("TWOFOLD_AUTH_AUDIENCE") or None,
            issuer=environ.get("TWOFOLD_AUTH_ISSUER") or None,
        )


@dataclass(frozen=True, slots=True)
class RateLimit:
    """How many commands one principal may send: ``count`` per ``seconds``, in a burst or spread out.

    RateLimit.parse("20/s")     # RateLimit(count=20, seconds=1.0): 20 at once, then one every 50 ms
    RateLimit.parse("600/min")  # RateLimit(count=600, seconds=60.0)
    """

    count: int
    seconds: float

    def __post_init__(self) -> None:
        if self.count < 1 or not self.seconds > 0:
            raise ConfigurationError(f"A rate limit needs a count of 1 or more per a positive time (got {self})")

    @property
    def per_second(self) -> float:
        return self.count / self.seconds

    def __str__(self) -> str:
        unit = next((u for u, s in _RATE_UNITS.items() if s == self.seconds), None)
        return f"{self.count}/{unit}" if unit else f"{self.count} per {self.seconds:g} s"

    @classmethod
    def parse(cls, text: str, variable: str = "TWOFOLD_RATE_LIMIT_COMMANDS") -> RateLimit:
        """``<count>/s``, ``<count>/min`` or ``<count>/h``; anything else is a :class:`ConfigurationError`."""
        found = _RATE.fullmatch(text.strip())
        if found is None or int(found["count"]) < 1:
            raise ConfigurationError(
                f"{variable} must be a whole number of commands per s, min or h, such as 20/s, 600/min or "
                f"10000/h (got {text!r})"
            )
        return cls(int(found["count"]), _RATE_UNITS[found["unit"]])

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> RateLimit | None:
        """The limit ``TWOFOLD_RATE_LIMIT_COMMANDS`` sets, or ``None`` (no limit) when it is unset or empty."""
        text = environ.get("TWOFOLD_RATE_LIMIT_COMMANDS") or None
        return None if text is None else cls.parse(text)


_RATE_UNITS = {"s": 1.0, "min": 60.0, "h": 3600.0}
_RATE = re.compile(r"(?P<count>[0-9]{1,9})/(?P<unit>s|min|h)")


AUTH_KEY_VARIABLES = ("TWOFOLD_AUTH_HS256_SECRET", "TWOFOLD_AUTH_JWKS_URL", "TWOFOLD_AUTH_JWKS_FILE")
_FIELD = dict(zip(AUTH_KEY_VARIABLES, ("hs256_secret", "jwks_url", "jwks_file"), strict=True))
MIN_SECRET_BYTES = 32  # RFC 7518 §3.2: an HS256 key at least as long as the hash
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "[::1]", "localhost"})


def _is_loopback_url(url: str) -> bool:
    host = url.removeprefix("http://").split("/", 1)[0].rsplit(":", 1)[0]
    return url.startswith("http://") and host in LOOPBACK_HOSTS


def check_exposure(host: str, auth: AuthSettings | None) -> None:
    """Refuse to listen beyond loopback without authentication: secure by default."""
    if auth is None and host not in LOOPBACK_HOSTS:
        raise ConfigurationError(
            f"Refusing to listen on {host} without authentication: anyone who reaches it could read and write. "
            "Set TWOFOLD_AUTH_JWKS_URL or TWOFOLD_AUTH_JWKS_FILE (production) or TWOFOLD_AUTH_HS256_SECRET "
            "(development), or listen on 127.0.0.1 (docs/security.md)"
        )


def _beside(database_url: str) -> str:
    """SQLite read models go in a file of their own, so projecting never waits on the append lock."""
    if database_url.startswith("sqlite:///"):
        path = Path(database_url.removeprefix("sqlite:///"))
        return "sqlite:///" + str(path.with_name(f"{path.stem}-read{path.suffix or '.db'}"))
    return database_url


def _folder_of(database_url: str) -> Path:
    """The folder of a SQLite event store, where the embedded targets go by default; ``data`` otherwise."""
    if database_url.startswith("sqlite:///") and database_url != "sqlite:///":
        return Path(database_url.removeprefix("sqlite:///")).parent
    return Path("data")


def open_event_store(url: str, variable: str = "TWOFOLD_DATABASE_URL") -> EventStore:
    """The event store at ``url``; a URL no store can open is refused naming ``variable``, where it came from."""
    if _is_postgres(url):
        from twofold.store.postgres import PostgresEventStore

        return PostgresEventStore(url)
    return SQLiteEventStore(_sqlite_path(url, variable))


def open_read_store(url: str, variable: str = "TWOFOLD_READ_DATABASE_URL") -> ReadStore[Database]:
    if _is_postgres(url):
        from twofold.readmodels.postgres import PostgresReadStore

        return PostgresReadStore(url)
    return SQLiteReadStore(_sqlite_path(url, variable))


TARGET_VARIABLES = {"warehouse": "TWOFOLD_WAREHOUSE_URL", "search": "TWOFOLD_SEARCH_URL"}


def open_target_store(target: str, url: str) -> ReadStore[Any]:
    """The store of a projection target other than ``"sql"``, by its URL's scheme.

    ``duckdb:///path.duckdb`` opens a :class:`~twofold.readmodels.duckdb.DuckDBReadStore`,
    ``tantivy:///path/dir`` a ``twofold.readmodels.tantivy.TantivyReadStore``; anything else is
    refused naming the variable it came from.
    """
    variable = TARGET_VARIABLES.get(target, f"the {target} URL")
    if url.startswith("duckdb:///") and url != "duckdb:///":
        from twofold.readmodels.duckdb import DuckDBReadStore

        return DuckDBReadStore(url.removeprefix("duckdb:///"))
    if url.startswith("tantivy:///") and url != "tantivy:///":
        try:  # tantivy is an optional extra (twofold[search])
            from twofold.readmodels.tantivy import TantivyReadStore
        except ImportError as exc:
            raise ConfigurationError(f"{variable}={url!r} needs the search store: {exc}") from exc
        return TantivyReadStore(url.removeprefix("tantivy:///"))
    raise ConfigurationError(
        f"{variable}={url!r} is not a store this installation can open; use duckdb:///path/to/file.duckdb"
        " or tantivy:///path/to/directory"
    )


def open_targets(
    service: Service, settings: Settings, targets: Collection[str] | None = None
) -> dict[str, ReadStore[Any]]:
    """The stores of the other targets than ``"sql"`` that ``service``'s projections name (or only ``targets``).

    A target no projection names is not opened: a service without reports has no warehouse file.
    """
    named = [t for t in TARGETS if t != "sql" and any(p.target == t for p in service.projections)]
    return {
        t: open_target_store(t, settings.target_url(t, service.name)) for t in named if targets is None or t in targets
    }


def _is_postgres(url: str) -> bool:
    if not url.startswith(("postgresql://", "postgres://")):
        return False
    try:
        import asyncpg  # noqa: F401
        import psycopg  # noqa: F401
    except ModuleNotFoundError as exc:
        raise ConfigurationError(
            "A postgresql:// URL needs the PostgreSQL drivers: pip install 'twofold[postgres]'"
        ) from exc
    return True


def _sqlite_path(url: str, variable: str) -> str:
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        if path:
            return path
    raise ConfigurationError(
        f"{variable}={url!r} is not a database this installation can open; use sqlite:///path/to/file.db "
        "(relative), sqlite:////absolute/path.db or postgresql://user@host:port/database"
    )


def runtime_for(service: Service, settings: Settings, role: Role = "all") -> Runtime:
    """A runtime for one role of a service.

    ``commands`` and ``queries`` serve one API each; ``projections`` runs projections and sagas;
    ``relay``, ``consumers`` and ``command-worker`` run one kind of NATS worker each; ``workers``
    runs every background part (projections, sagas, relay, consumers, command worker) in one
    process, as the cluster mode does; ``all`` runs everything, and the NATS workers when
    ``TWOFOLD_NATS_URL`` is set.

    Projections of the embedded targets (``warehouse``, ``search``) run where their queries are
    answered: in ``all`` and in each ``queries`` process, which then opens the event store to
    follow it. ``projections`` and ``workers`` run the ``"sql"`` projections only.
    """
    nats_url = settings.nats_url
    if role in NATS_ROLES and nats_url is None:
        raise ConfigurationError(f"--role {role} {_NATS_WORK[role]}: set TWOFOLD_NATS_URL, e.g. nats://127.0.0.1:4222")
    parts = _PARTS[role] | (_NATS_PARTS if role == "all" and nats_url is not None else set())
    targets = open_targets(service, settings) if "queries" in parts else {}
    project: bool | set[str] = False
    if "project" in parts:
        project = True if "queries" in parts else {"sql"}
    elif targets:
        project = set(targets)
    store = open_event_store(settings.database_url) if parts & _NEEDS_STORE or targets else None
    # The command API of a service that imports serves its dead letters: listing and retrying them
    # needs the read store they are parked in.
    dead_letters = "commands" in parts and bool(service.subscriptions)
    read_store = _read_store_for(settings, role) if parts & _NEEDS_READ_STORE or dead_letters else None
    workers: list[Worker] = []
    bus: CommandSender | None = None
    if nats_url is not None and store is not None and read_store is not None:
        if "relay" in parts:
            workers.append(_relay(service.name, store, read_store, nats_url))
        if "consumers" in parts:
            workers.extend(_consumers(service, store, read_store, nats_url))
        if "project" in parts and service.sagas:
            bus = _sender(service.name, nats_url)
    runtime = Runtime(
        service, store=store, read_store=read_store, targets=targets, project=project, workers=workers, bus=bus
    )
    if "command-worker" in parts and nats_url is not None:
        runtime.workers.append(_command_worker(runtime, nats_url))
    return runtime


def _read_store_for(settings: Settings, role: Role) -> ReadStore[Database]:
    """A query-only process reads where TWOFOLD_QUERY_DATABASE_URL says (a replica); the rest write to the primary."""
    if role == "queries" and settings.query_database_url:
        return open_read_store(settings.query_database_url, "TWOFOLD_QUERY_DATABASE_URL")
    return open_read_store(settings.read_database_url)


_PARTS: dict[str, set[str]] = {
    "all": {"commands", "queries", "project"},
    "commands": {"commands"},
    "queries": {"queries"},
    "projections": {"project"},
    "relay": {"relay"},
    "consumers": {"consumers"},
    "command-worker": {"command-worker"},
    "workers": {"project", "relay", "consumers", "command-worker"},
}
_NATS_PARTS = {"relay", "consumers", "command-worker"}
_NATS_WORK = {
    "relay": "publishes to NATS",
    "consumers": "imports from NATS",
    "command-worker": "takes commands from NATS",
    "workers": "relays, imports and takes commands through NATS",
}
_NEEDS_STORE = {"commands", "project", "relay", "consumers", "command-worker"}
_NEEDS_READ_STORE = {"queries", "project", "relay", "consumers"}


def _relay(service_name: str, store: EventStore, read_store: ReadStore[Database], nats_url: str) -> Worker:
    try:
        from twofold.broker.nats import JetStreamRelay
    except ModuleNotFoundError as exc:
        raise ConfigurationError(f"TWOFOLD_NATS_URL is set, but {exc}") from exc
    return JetStreamRelay(service_name, store, read_store, nats_url)


def _consumers(service: Service, store: EventStore, read_store: ReadStore[Database], nats_url: str) -> list[Worker]:
    if not service.subscriptions:
        return []
    try:
        from twofold.broker.consumer import JetStreamConsumer
    except ModuleNotFoundError as exc:
        raise ConfigurationError(f"TWOFOLD_NATS_URL is set, but {exc}") from exc
    return [JetStreamConsumer(service, store, read_store, s, nats_url) for s in service.subscriptions]


def _sender(service_name: str, nats_url: str) -> CommandSender:
    try:
        from twofold.broker.commands import JetStreamCommandSender
    except ModuleNotFoundError as exc:
        raise ConfigurationError(f"TWOFOLD_NATS_URL is set, but {exc}") from exc
    return JetStreamCommandSender(nats_url, source=service_name)


def async_commands_for(runtime: Runtime, settings: Settings) -> CommandQueue | None:
    """Where the command API queues ``Prefer: respond-async`` commands: NATS when it is set, else
    ``None`` (a task of the API process each, as :func:`twofold.http.create_app` does by default)."""
    if settings.nats_url is None or runtime.store is None:
        return None
    try:
        from twofold.broker.commands import JetStreamCommands
    except ModuleNotFoundError as exc:
        raise ConfigurationError(f"TWOFOLD_NATS_URL is set, but {exc}") from exc
    return JetStreamCommands(runtime, settings.nats_url)


def _command_worker(runtime: Runtime, nats_url: str) -> Worker:
    try:
        from twofold.broker.commands import CommandWorker
    except ModuleNotFoundError as exc:
        raise ConfigurationError(f"TWOFOLD_NATS_URL is set, but {exc}") from exc
    return CommandWorker(runtime, nats_url)
