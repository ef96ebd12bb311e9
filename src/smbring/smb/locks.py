"""Byte-range locks, shared by every connection of the server (MS-SMB2 3.3.5.14, MS-FSA 2.1.5.7).

A lock belongs to an open; locks on one file are found by (device, inode). Windows' rules, which
clients and smbtorture expect:

- an exclusive request conflicts with every overlapping lock, the requester's own included;
- a shared request conflicts only with another open's overlapping exclusive lock (an open may
  stack shared locks over its own exclusive one);
- a zero-length lock at X overlaps a range only when X lies strictly inside it; two zero-length
  locks never overlap;
- unlocking takes the exclusive one of several identical locks first.

Reads are refused over another open's exclusive lock, writes over any lock but the writer's own
exclusive one; zero-length locks never block I/O. A blocking request that conflicts waits:
`wait(key, retry)` calls `retry()` whenever a lock on the file is released.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Lock:
    offset: int
    length: int
    exclusive: bool
    owner: int          # id() of the open

    def overlaps(self, offset: int, length: int) -> bool:
        if not self.length and not length:
            return False
        if not length:
            return self.offset < offset < self.offset + self.length
        if not self.length:
            return offset < self.offset < offset + length
        return offset < self.offset + self.length and self.offset < offset + length


_table: dict[tuple[int, int], list[Lock]] = {}
_waiters: dict[tuple[int, int], list] = {}


def conflicts(key, offset: int, length: int, exclusive: bool, owner: int) -> bool:
    for lk in _table.get(key, ()):
        if not lk.overlaps(offset, length):
            continue
        if exclusive or (lk.exclusive and lk.owner != owner):
            return True
    return False


def acquire_all(key, wanted: list[Lock]) -> bool:
    """Takes every lock or none."""
    taken: list[Lock] = []
    for lk in wanted:
        if conflicts(key, lk.offset, lk.length, lk.exclusive, lk.owner):
            for t in taken:
                _table[key].remove(t)
            return False
        _table.setdefault(key, []).append(lk)
        taken.append(lk)
    return True


def release(key, offset: int, length: int, owner: int) -> bool:
    mine = [lk for lk in _table.get(key, ())
            if lk.owner == owner and lk.offset == offset and lk.length == length]
    if not mine:
        return False
    _table[key].remove(next((lk for lk in mine if lk.exclusive), mine[0]))
    _wake(key)
    return True


def release_owner(key, owner: int) -> None:
    if key in _table:
        _table[key] = [lk for lk in _table[key] if lk.owner != owner]
        if not _table[key]:
            del _table[key]
        _wake(key)


def wait(key, retry) -> None:
    """Calls retry() after each release on the file, until unwait(key, retry)."""
    _waiters.setdefault(key, []).append(retry)


def unwait(key, retry) -> None:
    waiting = _waiters.get(key)
    if waiting and retry in waiting:
        waiting.remove(retry)
        if not waiting:
            del _waiters[key]


def _wake(key) -> None:
    for retry in list(_waiters.get(key, ())):
        retry()


def io_allowed(key, offset: int, length: int, owner: int, write: bool) -> bool:
    if not length:
        return True
    for lk in _table.get(key, ()):
        if not lk.length or not lk.overlaps(offset, length):
            continue
        if lk.owner != owner and (write or lk.exclusive):
            return False
        if lk.owner == owner and write and not lk.exclusive:
            return False
    return True
