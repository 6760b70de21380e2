"""Wake-ups for readers waiting on new events within one process."""

from __future__ import annotations

import asyncio
import contextlib


class Notifier:
    """Readers wait for a newer head; writers announce each commit's last position."""

    def __init__(self) -> None:
        self.head = 0
        self._waiters: set[asyncio.Future[None]] = set()

    def announce(self, position: int) -> None:
        self.head = max(self.head, position)
        for waiter in self._waiters:
            if not waiter.done():
                waiter.get_loop().call_soon_threadsafe(_settle, waiter)
        self._waiters.clear()

    async def wait(self, after_position: int, timeout: float) -> bool:
        """Return True once a commit past ``after_position`` was announced, False on timeout."""
        if self.head > after_position:
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.add(waiter)
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
            # arrives as the waiter settles, and the waiting task would then never stop.
            async with asyncio.timeout(timeout):
                await waiter
        except TimeoutError:
            return self.head > after_position
        finally:
            self._waiters.discard(waiter)
        return True


def _settle(waiter: asyncio.Future[None]) -> None:
    with contextlib.suppress(asyncio.InvalidStateError):
        waiter.set_result(None)
