"""Threads and connections shared by the SQLite event store and the SQLite read store.

sqlite3 blocks, so writes run off the event loop, all on one thread: SQLite allows one writer per
file anyway, and a commit waits for the disk. Writes that can share a transaction are grouped:
whatever queued up while the previous commit was syncing goes into the next transaction, each in
its own savepoint, and one ``COMMIT`` (one sync) makes them all durable at once. That is group
commit: concurrent writers share the cost of the sync instead of queueing for one each.

Reads run on a small pool of threads, or, with ``readers=0``, on the caller's own thread. The
second is for short, indexed reads, which take less time than handing them to a thread and back.
Every thread opens its own connection once and keeps it.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

T = TypeVar("T")

MAX_GROUP = 64  # writes per shared transaction: bounds how long the first of them waits for the commit


@dataclass(slots=True)
class _Job(Generic[T]):
    work: Callable[..., T]
    args: tuple[Any, ...]
    grouped: bool
    future: asyncio.Future[T]
    outcome: tuple[bool, Any] = field(default=(False, None))  # (succeeded, result or exception)


class SQLiteThreads:
    """The writer thread and the readers, each with its own connection to one file.

    Args:
        path: the database file; its folder is created when missing.
        schema: a script run once, at construction.
        synchronous: the ``PRAGMA synchronous`` level for every connection.
        readers: reader threads; 0 runs reads on the calling thread.
        translate: turns a sqlite3 error into the caller's error.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        schema: str,
        synchronous: str,
        readers: int,
        translate: Callable[[sqlite3.Error], Exception],
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._synchronous = synchronous
        self._translate = translate
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._local = threading.local()
        self._closed = False
        with self._translated(), closing(self._connect()) as conn:
            conn.executescript(schema)
        self._queue: queue.SimpleQueue[_Job[Any] | None] = queue.SimpleQueue()
        self._writer = threading.Thread(target=self._write_loop, name="twofold-sqlite-writer", daemon=True)
        self._writer.start()
        self._readers = ThreadPoolExecutor(readers, "twofold-sqlite-reader") if readers else None

    async def write(self, work: Callable[..., T], *args: Any) -> T:
        """Run ``work(connection, *args)`` alone on the writer thread; it manages its own transaction."""
        return await self._submit(work, args, grouped=False)

    async def write_grouped(self, work: Callable[..., T], *args: Any) -> T:
        """Run ``work(connection, *args)`` inside a write transaction, possibly shared with others.

        ``work`` runs in its own savepoint: if it raises, its changes are undone and the others in
        the transaction go on. It returns once the shared ``COMMIT`` has made its changes durable.
        """
        return await self._submit(work, args, grouped=True)

    async def read(self, work: Callable[..., T], *args: Any) -> T:
        """Run ``work(connection, *args)`` on a reader thread, or right here with ``readers=0``."""
        if self._closed:
            raise RuntimeError(f"{self.path} is closed")
        if self._readers is None:
            return self._on_thread(work, args)
        return await asyncio.get_running_loop().run_in_executor(self._readers, self._on_thread, work, args)

    def close(self) -> None:
        """Finish the writes already queued, then close every connection."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._writer.join()
        if self._readers is not None:
            self._readers.shutdown(wait=True)
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()

    # -- the writer thread ------------------------------------------------------------------------

    async def _submit(self, work: Callable[..., T], args: tuple[Any, ...], *, grouped: bool) -> T:
        if self._closed:
            raise RuntimeError(f"{self.path} is closed")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put(_Job(work, args, grouped, future))
        return await future

    def _write_loop(self) -> None:
        carried: _Job[Any] | None = None
        while True:
            job = carried or self._queue.get()
            carried = None
            if job is None:
                return
            group = [job]
            while job.grouped and len(group) < MAX_GROUP:
                try:
                    following = self._queue.get_nowait()
                except queue.Empty:
                    break
                if following is None:
                    self._queue.put(None)  # stop once this group is done
                    break
                if not following.grouped:
                    carried = following  # runs alone, next
                    break
                group.append(following)
            if job.grouped:
                self._run_group(group)
            else:
                self._run_alone(job)
            _deliver(group)

    def _run_alone(self, job: _Job[Any]) -> None:
        try:
            job.outcome = (True, self._on_thread(job.work, job.args))
        except Exception as exc:
            job.outcome = (False, exc)

    def _run_group(self, group: list[_Job[Any]]) -> None:
        try:
            with self._translated():
                conn = self._connection()
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for job in group:
                        self._run_in_savepoint(conn, job)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
        except Exception as exc:  # no transaction or no commit: nothing in the group was written
            for job in group:
                job.outcome = (False, exc)

    def _run_in_savepoint(self, conn: sqlite3.Connection, job: _Job[Any]) -> None:
        conn.execute("SAVEPOINT twofold_write")
        try:
            with self._translated():
                result = job.work(conn, *job.args)
        except Exception as exc:
            if not conn.in_transaction:
                # SQLite rolled the whole transaction back (a full disk, an I/O error): every
                # write in the group is gone, and this error is what the group fails with.
                raise
            conn.execute("ROLLBACK TO twofold_write")
            job.outcome = (False, exc)
        else:
            job.outcome = (True, result)
        conn.execute("RELEASE twofold_write")

    # -- connections -------------------------------------------------------------------------------

    def _on_thread(self, work: Callable[..., T], args: tuple[Any, ...]) -> T:
        with self._translated():
            return work(self._connection(), *args)

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    @contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise self._translate(exc) from exc

    def _connect(self) -> sqlite3.Connection:
        # check_same_thread is off only so that close() may close every connection; each one is
        # used by the one thread that opened it.
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
            conn.execute("PRAGMA busy_timeout=10000")
        except BaseException:
            conn.close()  # e.g. "file is not a database": nobody else holds this connection
            raise
        with self._lock:
            self._connections.append(conn)
        return conn


def _deliver(jobs: list[_Job[Any]]) -> None:
    """Hand each outcome to its waiting task, one wake-up per event loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Job[Any]]] = {}
    for job in jobs:
        by_loop.setdefault(job.future.get_loop(), []).append(job)
    for loop, settled in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is waiting any more
            loop.call_soon_threadsafe(_settle, settled)


def _settle(jobs: list[_Job[Any]]) -> None:
    for job in jobs:
        if job.future.done():  # the waiting task was cancelled; the write stands regardless
            continue
        succeeded, value = job.outcome
        if succeeded:
            job.future.set_result(value)
        else:
            job.future.set_exception(value)


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` … ``COMMIT``, rolled back on any error.

    IMMEDIATE takes the write lock at the start, so whatever the transaction reads before writing
    (a stream's version, a checkpoint) cannot change under it, even from another process.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
