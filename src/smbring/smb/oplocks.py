"""Oplocks: what each open may cache of its file, shared by every connection of the server
(MS-SMB2 3.3.5.9, 3.3.4.6, 3.3.5.22.1; MS-FSA 2.1.5.17, 2.1.4.12): one `Oplocks` per
server, held by its `ServerState`.

An oplock is kept as the caching it allows, in lease terms (Samba does the same): READ (level
II), READ|WRITE (exclusive), READ|WRITE|HANDLE (batch). Files are named by their key
((device, inode)); every open of a file is listed, with or without an oplock, because whether
a new open may have one depends on the others.

A new open of a file (`contend`, Samba's delay_for_oplock) breaks what the others may no
longer cache, and is held while a holder must answer first:

- an open that only reads or writes attributes breaks nothing;
- otherwise a WRITE caching (exclusive, batch) is broken to level II and the open waits; one
  that overwrites the file breaks every oplock to none (it waits for exclusive and batch
  holders, not for level II ones, which are told and need not answer);
- an open refused for its share mode breaks only HANDLE caching (batch, to level II) and
  waits: the holder may close the handle it was keeping, then the open is tried again.

A holder answers by acknowledging (`acknowledge`), by closing, or not at all: after
`BREAK_TIMEOUT` seconds (Windows' 35 s, Samba's OPLOCK_BREAK_TIMEOUT; Samba has no option
for it) its oplock is taken away (`expire`, called by the server's timeout sweep) and the
opens waiting go on. A write, a truncation or a byte-range lock (`contend_level2`) breaks
level II oplocks to none with no answer expected.

Every structure here is bounded by the opens (and each connection's `max pending requests`
for the CREATEs waiting): nothing stays once a file's last open closes.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

READ, HANDLE, WRITE = 0x1, 0x2, 0x4            # caching, as SMB2 lease states name it

# OplockLevel (MS-SMB2 2.2.13)
LEVEL_NONE, LEVEL_II, LEVEL_EXCLUSIVE, LEVEL_BATCH, LEVEL_LEASE = 0x00, 0x01, 0x08, 0x09, 0xFF
CACHING = {LEVEL_NONE: 0, LEVEL_II: READ, LEVEL_EXCLUSIVE: READ | WRITE,
           LEVEL_BATCH: READ | WRITE | HANDLE}

BREAK_TIMEOUT = 35.0            # seconds a holder has to answer a break

# access that only reads or writes attributes: such an open breaks no oplock
_STAT_ACCESS = 0x80 | 0x100 | 0x00100000   # FILE_READ_ATTRIBUTES, FILE_WRITE_ATTRIBUTES, SYNCHRONIZE


def level_of(caching: int) -> int:
    """The oplock level that allows this caching (at most)."""
    if caching == READ | WRITE | HANDLE:
        return LEVEL_BATCH
    if caching == READ | WRITE:
        return LEVEL_EXCLUSIVE
    return LEVEL_II if caching & READ else LEVEL_NONE


def stat_only(access: int) -> bool:
    return not access & ~_STAT_ACCESS


@dataclass(eq=False)
class Holder:
    """One open of a file, as oplocks see it."""

    open: object
    stat_only: bool
    caching: int = 0
    breaking_to: int | None = None     # a break was sent: the caching it asked for
    deadline: float = 0.0              # when an unanswered break is taken as answered
    send_break: Callable | None = None     # (open, oplock level): the holder's connection tells it
    level2: bool = True                # its share allows level II (else breaks go to none)


class Oplocks:
    def __init__(self, clock: Callable[[], float] = time.monotonic, timeout: float = BREAK_TIMEOUT):
        self.clock = clock
        self.timeout = timeout
        self._files: dict[tuple, dict[object, Holder]] = {}     # key -> open -> Holder
        self._breaking: set[Holder] = set()                     # breaks not yet answered
        self._waiters: dict[tuple, dict[Callable, None]] = {}   # key -> CREATEs held, in order

    # -- the opens ---------------------------------------------------------------------------
    def add(self, o, access: int) -> None:
        """A new open of the file `o.key` (no oplock yet)."""
        self._files.setdefault(o.key, {})[o] = Holder(o, stat_only(access))

    def remove(self, o) -> None:
        """The open closes: its oplock goes. (Its connection wakes the CREATEs waiting on
        the file once the close is complete: a delete on close done.)"""
        holders = self._files.get(o.key)
        h = holders.pop(o, None) if holders is not None else None
        if h is None:
            return
        if not holders:
            del self._files[o.key]
        self._breaking.discard(h)

    def level(self, o) -> int:
        h = self._holder(o)
        return level_of(h.caching) if h is not None else LEVEL_NONE

    def caching(self, o) -> int:
        """What the open may cache (READ, WRITE, HANDLE): a durable handle needs HANDLE."""
        h = self._holder(o)
        return h.caching if h is not None else 0

    def rebind(self, o, send_break: Callable | None) -> None:
        """The open's breaks go through another connection from now on (a durable open
        reconnected), or nowhere (None: detached; breaks then wait for their timeout)."""
        h = self._holder(o)
        if h is not None:
            h.send_break = send_break

    def _holder(self, o) -> Holder | None:
        return self._files.get(o.key, {}).get(o)

    # -- a new open ----------------------------------------------------------------------------
    def contend(self, key, access: int, sharing_violation: bool, overwrite: bool,
                first_attempt: bool = True) -> bool:
        """A CREATE of the existing file `key` with this access (not yet an open of it):
        sends the breaks it causes; True when it must wait for a holder's answer (`wait`)."""
        if stat_only(access):
            return False
        delay_mask = HANDLE if sharing_violation else WRITE
        must_wait = False
        for h in list(self._files.get(key, {}).values()):
            if not h.caching:
                continue
            break_to = h.caching & ~delay_mask
            if overwrite and not delay_mask & HANDLE:
                break_to = 0                 # the file's data goes: nothing cached stays valid
            if not h.caching & ~break_to:    # nothing to break
                if h.breaking_to is not None:
                    must_wait = True         # (an earlier break is not answered yet)
                continue
            break_to &= READ                 # an oplock breaks to level II or none
            if h.caching & delay_mask or (h.breaking_to is not None and not first_attempt):
                must_wait = True
            self._break(h, break_to)
        return must_wait

    def grant(self, o, requested: int, *, created: bool = False, enabled: bool = True,
              level2: bool = True, locked: bool = False, send_break: Callable | None = None) -> int:
        """The oplock level a new open (added already) gets (Samba's rules): what it asked
        for, less WRITE caching when the file has other opens that are not attribute-only
        (or hold an oplock), less READ and HANDLE when the file has byte-range locks;
        level II only where the share allows it (`level2 oplocks`). An attribute-only open
        gets one only where it created the file."""
        h = self._holder(o)
        if h is None or not enabled or o.is_dir or h.stat_only and not created:
            return LEVEL_NONE
        granted = CACHING.get(requested, 0)
        if locked:
            granted &= ~(READ | HANDLE)
        if any(other is not h and (not other.stat_only or other.caching)
               for other in self._files[o.key].values()):
            granted &= ~WRITE
        if granted & READ and not granted & WRITE and not level2:
            granted = 0
        level = level_of(granted)
        h.caching, h.send_break, h.level2 = CACHING[level], send_break, level2
        return level

    # -- breaks ------------------------------------------------------------------------------
    def _break(self, h: Holder, break_to: int) -> None:
        if h.breaking_to is not None:
            return          # one break at a time (Samba sends no second one either)
        if not h.level2:
            break_to &= ~READ
        if h.caching == READ:
            h.caching = 0   # level II to none: told, with no answer expected
        else:
            h.breaking_to = break_to
            h.deadline = self.clock() + self.timeout
            self._breaking.add(h)
        if h.send_break is not None:
            h.send_break(h.open, level_of(break_to))

    def contend_level2(self, key) -> None:
        """A write, truncation or byte-range lock of the file: every level II oplock (the
        writer's own too) is broken to none, with no answer expected."""
        for h in list(self._files.get(key, {}).values()):
            if h.caching == READ and h.breaking_to is None:
                self._break(h, 0)

    def breaking(self, o) -> bool:
        """Whether a break was sent to the open and not yet answered."""
        h = self._holder(o)
        return h is not None and h.breaking_to is not None

    def acknowledge(self, o, level: int) -> int:
        """The holder's answer to a break (`breaking(o)` must hold; `level` NONE or II): the
        level it keeps (none when the break asked for none); CREATEs waiting try again."""
        h = self._holder(o)
        keep = READ if level == LEVEL_II and h.breaking_to & READ else 0
        self._settle(h, keep)
        return level_of(keep)

    def expire(self) -> int:
        """Takes away the oplocks whose break went unanswered past the timeout (as Samba:
        to none); how many."""
        now = self.clock()
        late = [h for h in self._breaking if h.deadline <= now]
        for h in late:
            self._settle(h, 0)
        return len(late)

    def _settle(self, h: Holder, caching: int) -> None:
        h.caching, h.breaking_to = caching, None
        self._breaking.discard(h)
        self.wake(h.open.key)

    # -- CREATEs waiting ---------------------------------------------------------------------
    def wait(self, key, retry: Callable[[], None]) -> None:
        """Calls retry() once, when a break on the file is answered (or the holder closes,
        or its time is up); it may wait again."""
        self._waiters.setdefault(key, {})[retry] = None

    def unwait(self, key, retry) -> None:
        waiting = self._waiters.get(key)
        if waiting is not None:
            waiting.pop(retry, None)
            if not waiting:
                del self._waiters[key]

    def wake(self, key) -> None:
        for retry in list(self._waiters.pop(key, ())):
            retry()

    # -- status ------------------------------------------------------------------------------
    def held(self) -> int:
        """How many files have opens listed here (for tests: nothing stays after closes)."""
        return len(self._files) + len(self._waiters)
