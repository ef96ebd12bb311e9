"""Memory for large frames on their way in, bounded for the whole server.

A frame's size is known from its 4-byte prefix, and a frame larger than the receive buffer
(a WRITE of up to 8 MiB) is received into a buffer of its own. Each connection holds at most
one such frame arriving, but a client with many connections could send every one of them a
frame minus its last byte and leave the memory held: 1,024 connections of 8 MiB are 8 GiB.
So the bytes of large frames arriving are counted server-wide, at most `max frame memory`
MiB: past it, a connection waits before receiving its frame (its client's bytes wait in the
socket; TCP slows the client down) until others have arrived, first come first served. And a
large frame must arrive within `frame_time(size)` of its first byte being taken, else the
server's timeout sweep closes the connection, so a frame trickled in cannot keep its share
for long.
"""
from __future__ import annotations

import asyncio
from collections import deque

FRAME_TIME_BASE = 60.0          # seconds any large frame may take to arrive
FRAME_TIME_RATE = 64 * 1024     # ... plus one second for each of these bytes (8 MiB: 188 s)


def frame_time(size: int) -> float:
    """Seconds a frame of `size` bytes may take to arrive, once its receive has begun: a
    client slower than 64 KiB/s, or one that stops sending mid-frame, is cut off."""
    return FRAME_TIME_BASE + size / FRAME_TIME_RATE


class ArrivingFrames:
    """The bytes of large frames being received now, server-wide (one per server)."""

    def __init__(self, limit: int):
        self.limit = limit              # bytes; 0: no bound
        self.used = 0
        self._waiting: deque[tuple[int, asyncio.Future]] = deque()

    async def take(self, size: int) -> None:
        """Counts `size` bytes in, waiting first while they would pass the limit (a frame
        larger than the whole limit waits until it is the only one)."""
        if not self.limit or (not self._waiting and self._fits(size)):
            self.used += size
            return
        granted = asyncio.get_running_loop().create_future()
        entry = (size, granted)
        self._waiting.append(entry)
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self.give_back(size)        # granted as the wait was cancelled
            else:
                if entry in self._waiting:  # (else already passed over as cancelled)
                    self._waiting.remove(entry)
                self._grant()               # (it may have held back those behind it)
            raise

    def give_back(self, size: int) -> None:
        self.used -= size
        self._grant()

    def _fits(self, size: int) -> bool:
        return self.used + size <= self.limit or self.used == 0

    def _grant(self) -> None:
        while self._waiting and self._fits(self._waiting[0][0]):
            size, granted = self._waiting.popleft()
            if granted.cancelled():
                continue
            self.used += size
            granted.set_result(None)
