"""Byte-range locks as POSIX locks too (`posix locking`, a share option, default yes as in
Samba): what an open's SMB locks mean for the kernel lock its descriptor holds, so that local
programs and NFS clients of the same files see them, and a lock such a program holds stops a
client's lock of the range.

The server keeps Windows' rules itself (smb.locks); the kernel lock of each open's descriptor
(an open file description lock, F_OFD_SETLK: owned by the open, not the process, as an SMB
lock is) mirrors them. Over each byte, it is a write lock where the open holds an exclusive
SMB lock, a read lock where it holds only shared ones, none elsewhere. Windows' rules make
this never stricter between the server's own opens than they are (a kernel conflict needs a
write lock, which only an exclusive SMB lock makes, and that conflicts in Windows' rules
too), so the kernel refuses a lock only for another program's.

What a POSIX lock cannot say is left to the server alone, as Samba leaves it: a zero-length
lock (POSIX length 0 means "to the end of every file"), and whatever lies past the largest
offset a POSIX lock names (2^63 - 1): a range reaching past it is mirrored up to it.

Here the kernel lock of a range is worked out from the open's locks; the file system applies
it (FileSystem.set_range_locks). A LOCK request changes one range (its elements' hull) and
every kernel lock change it makes goes one way: taking locks only raises the kernel's kind
(which another program may refuse, and is then undone: undoing only lowers, which the kernel
never refuses), unlocking only lowers it. Working it out looks only at the open's locks
reaching into that range (ByteRangeLocks.held's `within`; finding them passes over the
open's locks on the file, at most `max locks per open`, without making or sorting any)."""
from __future__ import annotations

import time
from collections import Counter
from typing import Callable

from smbring.smb.fs import RANGE_READ as READ
from smbring.smb.fs import RANGE_UNLOCKED as NONE
from smbring.smb.fs import RANGE_WRITE as WRITE
from smbring.smb.locks import Lock

LIMIT = (1 << 63) - 1           # a POSIX lock names offsets below it

Change = tuple[int, int, int]   # (start, end, kind): the kernel lock [start, end) is to be


# Linux keeps a file's POSIX locks in one list, which every lock change walks: a LOCK of k
# ranges on a file holding n locks costs the kernel about k * (n + k / 2) steps (10-22 ns each,
# measured), in the event loop's thread where the change is small, in the server's file I/O
# threads where it is not (smb.commands.lock); 4,096 beside 28,672 took 2.75 s. A LOCK that
# would cost more than this (0.2-0.4 s) is refused before any work (STATUS_INSUFFICIENT_RESOURCES):
# `max locks per open` (4,096) ranges at once beside 2,048 locks pass, one range beside millions.
KERNEL_STEPS_MAX = 1 << 24
# ... and what each user's LOCKs may cost it a second (KernelLockCredit), a quarter of that: a
# step cost 10-35 ns alone, and up to some 150 ns on a busy machine, so a user's LOCKs may still
# take a good part of a core's time.
KERNEL_STEPS_PER_SECOND = KERNEL_STEPS_MAX // 4


def kernel_steps(count: int, on_file: int) -> int:
    """What mirroring a LOCK of `count` ranges costs the kernel beside `on_file` locks."""
    return count * (on_file + count // 2)


class KernelLockCredit:
    """What each user's LOCKs may cost the kernel in this process (`kernel_steps`): at most
    `most` at once, and `per_second` a second (a bucket per user). LOCKs in a row, each
    within KERNEL_STEPS_MAX (a compound, a pipelined burst, the retries of blocking locks a
    release lets go), would otherwise take a core for their sum (the event loop's, before
    costly changes were made in the file I/O threads); past its credit a
    user's LOCK is refused, and a blocking lock's retry waits, until the credit has grown
    again. Ranges of files with few locks cost next to nothing: a client locking one range
    at a time never meets it.

    The credits grow at `tick()` (the server's sweep, a second apart), by the time since
    the last, a second's worth at most: never while the loop works through a burst, nor by
    the time a burst took. Growing with the time, a credit paid for the burst's own time:
    the slower the machine went (a step took up to 150 ns where clients shared its two
    cores), the longer the next burst could be (4,096 waiting locks beside 28,672, let go at
    once, held the loop 3.9-12.5 s)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, most: int = KERNEL_STEPS_MAX,
                 per_second: int = KERNEL_STEPS_PER_SECOND):
        self.clock, self.most, self.per_second = clock, most, per_second
        self.full_after = most / per_second      # seconds: an empty credit is full again
        # the credits' own clock: where the last tick left it (each a second on at most)
        self.now = clock()
        # owner -> (credit, tick when counted), the least recently counted first: a credit
        # counted full_after ago or more is full again, and forgotten (kept per user, not per
        # connection: a client that connects again gets no more)
        self._credit: dict[str, tuple[float, float]] = {}

    def tick(self) -> None:
        """Lets every credit grow by the time since the last tick, a second's worth at most
        (full ones are forgotten)."""
        now = self.clock()
        self.now += min(now - self.now, 1.0)
        while self._credit:
            owner = next(iter(self._credit))
            if self.now - self._credit[owner][1] < self.full_after:
                return
            del self._credit[owner]

    def spend(self, owner: str, steps: int) -> bool:
        """Takes `steps` from the user's credit; False (nothing taken) where it has not as many."""
        credit = self._credit_of(owner)
        if steps > credit:
            return False
        if steps:
            self._credit.pop(owner, None)      # (to the end: the most recently counted)
            self._credit[owner] = (credit - steps, self.now)
        return True

    def has(self, owner: str, steps: int) -> bool:
        """Whether the user's credit holds `steps` (nothing taken)."""
        return steps <= self._credit_of(owner)

    def _credit_of(self, owner: str) -> float:
        credit, then = self._credit.get(owner, (self.most, self.now))
        return min(self.most, credit + (self.now - then) * self.per_second)


def mirrors(o) -> bool:
    """Whether the open's (an smb.state.Open's) locks are kernel locks too: its share's
    `posix locking`."""
    return o.tree is not None and o.tree.fs is not None and o.tree.share.posix_locking


def mirrored(offset: int, length: int) -> tuple[int, int] | None:
    """The part [start, end) of an SMB lock's range a POSIX lock mirrors; None: none of it."""
    if not length or offset >= LIMIT:
        return None
    return offset, min(offset + length, LIMIT)


def hull(locks: list[Lock]) -> tuple[int, int] | None:
    """The smallest range holding the mirrored parts of `locks`; None where none is."""
    parts = [r for r in (mirrored(lk.offset, lk.length) for lk in locks) if r is not None]
    if not parts:
        return None
    return min(s for s, _ in parts), max(e for _, e in parts)


def kinds(locks: list[Lock], start: int, end: int) -> list[Change]:
    """The kernel lock an open holding `locks` has over [start, end): consecutive pieces
    covering it exactly, neighbours of one kind joined."""
    steps: dict[int, list[int]] = {}       # offset -> [change of exclusive, of shared] there
    for lk in locks:
        r = mirrored(lk.offset, lk.length)
        if r is None or r[1] <= start or r[0] >= end:
            continue
        which = 0 if lk.exclusive else 1
        steps.setdefault(max(r[0], start), [0, 0])[which] += 1
        steps.setdefault(min(r[1], end), [0, 0])[which] -= 1
    pieces: list[Change] = []
    exclusive = shared = 0
    at = start
    for offset in sorted(steps) + [end]:
        if offset > at:
            kind = WRITE if exclusive else READ if shared else NONE
            if pieces and pieces[-1][2] == kind:
                pieces[-1] = (pieces[-1][0], offset, kind)
            else:
                pieces.append((at, offset, kind))
            at = offset
        if offset in steps:
            exclusive += steps[offset][0]
            shared += steps[offset][1]
    return pieces


def changes(before: list[Lock], after: list[Lock], span: tuple[int, int] | None) -> list[Change]:
    """What the kernel lock must become over `span` (a request's hull) for an open that held
    `before` and now holds `after`: the pieces whose kind differs, in order."""
    if span is None:
        return []
    old, new = kinds(before, *span), kinds(after, *span)
    out: list[Change] = []
    i = j = 0
    at = span[0]
    while at < span[1]:
        while old[i][1] <= at:
            i += 1
        while new[j][1] <= at:
            j += 1
        upto = min(old[i][1], new[j][1])
        if old[i][2] != new[j][2]:
            if out and out[-1][2] == new[j][2] and out[-1][1] == at:
                out[-1] = (out[-1][0], upto, new[j][2])
            else:
                out.append((at, upto, new[j][2]))
        elif new[j][2] == NONE and out and out[-1][2] == NONE and out[-1][1] == at:
            # an unlock goes on over a piece the open held no lock of: one change, not one
            # per range released (each walks the file's whole list: KERNEL_STEPS_MAX)
            out[-1] = (out[-1][0], upto, NONE)
        at = upto
    return out


def without(locks: list[Lock], taken: list[Lock]) -> list[Lock]:
    """`locks` with one of each of `taken` left out (what an open held before it took them)."""
    left = Counter(taken)
    out = []
    for lk in locks:
        if left[lk]:
            left[lk] -= 1
        else:
            out.append(lk)
    return out


def undo(done: list[Change], before: list[Lock]) -> list[Change]:
    """The changes that put the kernel lock back as `before` had it over the pieces of `done`
    (changes that only raised it): each piece lowered again."""
    return [piece for s, e, _ in done for piece in kinds(before, s, e)]


def io_allowed(c, o, offset: int, length: int, write: bool) -> bool:
    """Whether the open (an smb.state.Open of connection `c`) may read (write, `write`) the
    range: no other open's byte-range lock stops it (Windows' rules: smb.locks), and, where
    the share's locks are kernel locks too and `strict locking` is not no, no other program's
    kernel lock either (as Samba's strict locking checks them; one fcntl, F_OFD_GETLK; the
    server's own opens' kernel locks never refuse what its table allows)."""
    if not c.state.locks.io_allowed(o.key, offset, length, id(o), write):
        return False
    part = mirrored(offset, length) if o.tree is not None and o.tree.share.strict_locking and mirrors(o) else None
    return part is None or not o.tree.fs.range_locked(o.fd, part[0], part[1], write)


UNLOCK_ALL = [(0, LIMIT, NONE)]     # an open's every kernel lock (at its close)
