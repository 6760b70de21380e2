"""Threads and connections shared by the SQLite event store and the SQLite read store.

sqlite3 blocks, so work runs off the event loop: all writes on one thread (SQLite allows one
writer per file anyway), reads on a small pool. Each thread opens its own connection once and keeps it.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class SQLiteThreads:
    """A writer thread and reader threads, each with its own connection to one file.

    Args:
        path: the database file; its folder is created when missing.
        schema: a script run once, at construction.
        synchronous: the ``PRAGMA synchronous`` level for every connection.
        readers: how many reader threads.
        translate: turns a sqlite3 error into the caller's error, inside the worker thread.
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
        with self._translated(), closing(self._connect()) as conn:
            conn.executescript(schema)
        self._writer = ThreadPoolExecutor(1, "twofold-sqlite-writer")
        self._readers = ThreadPoolExecutor(readers, "twofold-sqlite-reader")

    async def write(self, work: Callable[..., T], *args: Any) -> T:
        """Run ``work(connection, *args)`` on the writer thread."""
        return await self._run(self._writer, work, args)

    async def read(self, work: Callable[..., T], *args: Any) -> T:
        """Run ``work(connection, *args)`` on a reader thread."""
        return await self._run(self._readers, work, args)

    def close(self) -> None:
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()

    async def _run(self, executor: ThreadPoolExecutor, work: Callable[..., T], args: tuple[Any, ...]) -> T:
        return await asyncio.get_running_loop().run_in_executor(executor, self._on_thread, work, args)

    def _on_thread(self, work: Callable[..., T], args: tuple[Any, ...]) -> T:
        with self._translated():
            conn = getattr(self._local, "conn", None)
            if conn is None:
                conn = self._local.conn = self._connect()
            return work(conn, *args)

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
