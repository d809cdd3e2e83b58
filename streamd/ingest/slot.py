"""A bounded, latest-wins hand-off from a decoder thread to the event loop.

A camera produces frames in real time whatever the analyser does; holding more than one would
only grow memory and latency, so a new frame replaces an unread one and the drop is counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Generic, TypeVar

T = TypeVar("T")


class LatestSlot(Generic[T]):
    """One-item mailbox: `put` from any thread never blocks; `get` awaits on the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._item: T | None = None
        self._ready = asyncio.Event()
        self.put_count = 0
        self.dropped = 0

    def put(self, item: T) -> None:
        """Store `item`, replacing (and counting) an unread one. Thread-safe."""
        with self._lock:
            if self._item is not None:
                self.dropped += 1
            self._item = item
            self.put_count += 1
        # RuntimeError: loop closed during shutdown; nobody will read this frame anyway
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._ready.set)

    def take_nowait(self) -> T | None:
        with self._lock:
            item, self._item = self._item, None
            self._ready.clear()
            return item

    async def get(self) -> T:
        while True:
            item = self.take_nowait()
            if item is not None:
                return item
            await self._ready.wait()
