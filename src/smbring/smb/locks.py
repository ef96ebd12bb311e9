"""Byte-range locks, shared by every connection of the server (MS-SMB2 3.3.5.14).

A lock belongs to an open; locks on one file are found by (device, inode). Shared locks
coexist; an exclusive lock conflicts with any other lock over the same bytes. Reads are refused
over another open's exclusive lock, writes over any lock but the writer's own exclusive one.
Zero-length locks never conflict. Blocking waits are not implemented: a conflicting request
gets STATUS_LOCK_NOT_GRANTED whether or not it asked to fail immediately.
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
        if not self.length or not length:
            return False
        return offset < self.offset + self.length and self.offset < offset + length


_table: dict[tuple[int, int], list[Lock]] = {}


def conflicts(key, offset: int, length: int, exclusive: bool, owner: int) -> bool:
    for lk in _table.get(key, ()):
        if not lk.overlaps(offset, length):
            continue
        if exclusive or lk.exclusive:
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
    for lk in _table.get(key, ()):
        if lk.owner == owner and lk.offset == offset and lk.length == length:
            _table[key].remove(lk)
            return True
    return False


def release_owner(key, owner: int) -> None:
    if key in _table:
        _table[key] = [lk for lk in _table[key] if lk.owner != owner]
        if not _table[key]:
            del _table[key]


def io_allowed(key, offset: int, length: int, owner: int, write: bool) -> bool:
    for lk in _table.get(key, ()):
        if not lk.overlaps(offset, length):
            continue
        if lk.owner != owner and (write or lk.exclusive):
            return False
        if lk.owner == owner and write and not lk.exclusive:
            return False
    return True
