"""Random bytes for the ids a connection hands out (a FileId's persistent half), drawn from
the kernel's generator in batches: os.urandom for each CREATE was a getrandom(2) per file
opened. Every byte handed out is still the kernel's cryptographic randomness, used once; only
the system call is shared by many ids.

One per connection, made in the process that serves it: a batch drawn before a fork would
hand the same ids out in two processes."""
from __future__ import annotations

import os

BATCH = 512     # bytes drawn at once (64 FileIds)


class RandomBytes:
    def __init__(self, batch: int = BATCH) -> None:
        self._batch = batch
        self._pool = b""
        self._at = 0

    def take(self, n: int) -> bytes:
        """n random bytes, never handed out before."""
        if self._at + n > len(self._pool):
            self._pool, self._at = os.urandom(max(self._batch, n)), 0
        out = self._pool[self._at:self._at + n]
        self._at += n
        return out
