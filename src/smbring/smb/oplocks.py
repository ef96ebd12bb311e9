"""Oplocks and leases: what each open may cache of its file, shared by every connection of
the server (MS-SMB2 3.3.5.9, 3.3.4.6, 3.3.4.7, 3.3.5.22; MS-FSA 2.1.5.17, 2.1.4.12): one
`Oplocks` per server, held by its `ServerState`.

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

A lease (`Lease`) is caching the client names itself: a LeaseKey of its choosing, shared by
every open of one file that client makes with it (on any of its connections, by ClientGuid),
in any of the states R, RH, RW, RWH (or none). The same rules decide what a lease is granted
and what a new open breaks, with these differences (Samba's and Windows' behaviour):

- opens of the lease never conflict with one another (a CREATE with the key of a lease that
  is being broken is not held, and is answered the lease's state with BREAK_IN_PROGRESS);
- a lease is broken only as far as needed (RWH to RH for an open, to RW for a sharing
  violation), and one that holds WRITE or HANDLE caching must acknowledge (to the state
  asked for or less); while it does not, further breaks only lower what it must reach, and
  once it answers it is broken on in steps (to R, then to none);
- an open of a lease asks for more by asking for a strict superset of its state that can be
  granted whole (else the state stays as it is);
- a write or lock does not break the writer's own lease; a rename (or a delete on close set
  through a handle) breaks the HANDLE caching of the file's other leases, and waits for their
  answers (`break_handles_for_rename`);
- an oplock is not granted beside a lease with HANDLE caching, nor HANDLE caching to a lease
  beside an oplock;
- a version 2 lease counts its changes (Epoch): once when granted, again on each upgrade and
  each break.

A directory lease (SMB 3, `smb3 directory leases`) is a lease on an open of a directory: R or
RH, never WRITE caching (a client does not write a directory). Its client caches the
directory's listing and its entries' metadata; every change a listing would show (an entry
made, removed, renamed in or out, overwritten, its size, times or attributes set) breaks it
to none (`break_directory`, Samba's contend_dirleases), with an answer expected where it held
HANDLE caching. The one lease left alone is the one the change was made under: the changing
open's lease names the directory's lease as its ParentLeaseKey (MS-SMB2 2.2.13.2.10), and
belongs to the same client (`break_directory`'s `exempt`). Opens of the directory itself
break it as they break a file's lease (a sharing violation, a rename or delete of it: its
HANDLE caching).

Every structure here is bounded by the opens (and each connection's `max pending requests`
for the CREATEs waiting): nothing stays once a file's last open closes.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from smbring.smb.slots import slot_maker

READ, HANDLE, WRITE = 0x1, 0x2, 0x4            # caching, as SMB2 lease states name it

# OplockLevel (MS-SMB2 2.2.13)
LEVEL_NONE, LEVEL_II, LEVEL_EXCLUSIVE, LEVEL_BATCH, LEVEL_LEASE = 0x00, 0x01, 0x08, 0x09, 0xFF
CACHING = {LEVEL_NONE: 0, LEVEL_II: READ, LEVEL_EXCLUSIVE: READ | WRITE,
           LEVEL_BATCH: READ | WRITE | HANDLE}

BREAK_TIMEOUT = 35.0            # seconds a holder has to answer a break

# access that only reads or writes attributes: such an open breaks no oplock
_STAT_ACCESS = 0x80 | 0x100 | 0x00100000   # FILE_READ_ATTRIBUTES, FILE_WRITE_ATTRIBUTES, SYNCHRONIZE
READ_CONTROL = 0x00020000                  # an open that only reads these and the ACL breaks no lease


def level_of(caching: int) -> int:
    """The oplock level that allows this caching (at most)."""
    if caching == READ | WRITE | HANDLE:
        return LEVEL_BATCH
    if caching == READ | WRITE:
        return LEVEL_EXCLUSIVE
    return LEVEL_II if caching & READ else LEVEL_NONE


def stat_only(access: int) -> bool:
    return not access & ~_STAT_ACCESS


def valid_lease_state(state: int) -> int:
    """What a lease asked for can be: R, RH, RW or RWH; anything else (H or W alone, HW,
    unknown bits) is granted as none."""
    state &= READ | WRITE | HANDLE
    return state if state & READ else 0


@dataclass(eq=False)
class Lease:
    """One lease (MS-SMB2 3.3.1.13): a client's key for the opens of one file."""

    client_guid: bytes
    key: bytes                          # LeaseKey, 16 bytes
    file: tuple                         # the file's key (device, inode)
    version: int                        # 1 or 2, as the CREATE that made it asked
    epoch: int = 0                      # version 2: counts the changes of state
    parent_key: bytes | None = None     # version 2: the directory's lease key, if given
    directory: bool = False             # a lease on a directory (R or RH only)
    state: int = 0
    breaking: bool = False
    breaking_to_requested: int = 0      # what a break asked for (an answer may give less)
    breaking_to_required: int = 0       # what it must come down to (later breaks lower it)
    deadline: float = 0.0
    # a directory's: when its caching last grew (the clock's), so that a change seen before
    # then, whose breaks are judged late (several workers), breaks nothing the client was
    # granted after it: what it lists under the lease shows the change already
    granted: float = 0.0
    holders: list = field(default_factory=list)    # its opens' Holders, oldest first

    @property
    def ident(self) -> tuple[bytes, bytes]:
        return self.client_guid, self.key


@dataclass(eq=False, slots=True)
class Holder:
    """One open of a file, as oplocks see it."""

    open: object
    stat_only: bool
    caching: int = 0
    breaking_to: int | None = None     # a break was sent: the caching it asked for
    deadline: float = 0.0              # when an unanswered break is taken as answered
    send_break: Callable | None = None     # (open, oplock level): the holder's connection tells it
    level2: bool = True                # its share allows level II (else breaks go to none)
    lease: Lease | None = None         # the lease the open holds (then `caching` is unused)
    # (open, lease, from state, to state, acknowledgement required): the lease holder's
    # connection tells its client
    send_lease_break: Callable | None = None

    def cached(self) -> int:
        return self.lease.state if self.lease is not None else self.caching


make_holder = slot_maker(Holder)     # (one for each open made)


class Oplocks:
    # whether every change in a directory reaches `break_directory` here (one process: yes;
    # a table shared by several processes must see theirs too: server.shared_oplocks does)
    breaks_directories = True
    # whether other processes (a server's other workers) change the files too: the kernel
    # reports their changes as another program's (server.shared_oplocks records them)
    other_processes = False

    def __init__(self, clock: Callable[[], float] = time.monotonic, timeout: float = BREAK_TIMEOUT):
        self.clock = clock
        self.timeout = timeout
        self._files: dict[tuple, dict[object, Holder]] = {}     # key -> open -> Holder
        self._breaking: set[Holder] = set()                     # breaks not yet answered
        self._waiters: dict[tuple, dict[Callable, None]] = {}   # key -> CREATEs held, in order
        self._leases: dict[tuple[bytes, bytes], Lease] = {}     # (ClientGuid, LeaseKey) -> Lease
        self._breaking_leases: set[Lease] = set()
        self._directory_leases = 0      # how many of them are on directories

    # -- the opens ---------------------------------------------------------------------------
    def add(self, o, access: int) -> None:
        """A new open of the file `o.key` (no oplock yet)."""
        self._files.setdefault(o.key, {})[o] = make_holder(open=o, stat_only=stat_only(access))

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
        lease = h.lease
        if lease is not None:
            lease.holders.remove(h)
            if not lease.holders:           # a lease lives as long as one of its opens
                del self._leases[lease.ident]
                self._breaking_leases.discard(lease)
                if lease.directory:
                    self._directory_leases -= 1

    def level(self, o) -> int:
        h = self._holder(o)
        return level_of(h.caching) if h is not None else LEVEL_NONE

    def caching(self, o) -> int:
        """What the open may cache (READ, WRITE, HANDLE), by its oplock or its lease: a
        durable handle needs HANDLE."""
        h = self._holder(o)
        return h.cached() if h is not None else 0

    def lease_of(self, o) -> Lease | None:
        """The lease the open holds, if any."""
        h = self._holder(o)
        return h.lease if h is not None else None

    def rebind(self, o, send_break: Callable | None, send_lease_break: Callable | None = None) -> None:
        """The open's breaks go through another connection from now on (a durable open
        reconnected), or nowhere (None: detached; breaks then wait for their timeout)."""
        h = self._holder(o)
        if h is not None:
            h.send_break = send_break
            if h.lease is not None:
                h.send_lease_break = send_lease_break

    def _holder(self, o) -> Holder | None:
        return self._files.get(o.key, {}).get(o)

    # -- a new open ----------------------------------------------------------------------------
    def contend(self, key, access: int, sharing_violation: bool, overwrite: bool,
                first_attempt: bool = True, lease: tuple[bytes, bytes] | None = None) -> bool:
        """A CREATE of the existing file `key` with this access (not yet an open of it; with
        the lease (ClientGuid, LeaseKey) it names, if any): sends the breaks it causes; True
        when it must wait for a holder's answer (`wait`)."""
        if stat_only(access):
            return False
        delay_mask = HANDLE if sharing_violation else WRITE
        must_wait = False
        seen = set()
        lease_stat = stat_only(access & ~READ_CONTROL)     # (Samba's is_lease_stat_open)
        for h in list(self._files.get(key, {}).values()):
            if h.lease is not None:
                if lease_stat or h.lease in seen or h.lease.ident == lease:
                    continue        # a lease is broken once, and never by its own opens
                seen.add(h.lease)
                must_wait |= self._contend_lease(h.lease, delay_mask, overwrite, first_attempt)
                continue
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

    def _contend_lease(self, lease: Lease, delay_mask: int, overwrite: bool,
                       first_attempt: bool) -> bool:
        state = lease.state
        break_to = state & ~delay_mask
        if overwrite and not delay_mask & HANDLE:
            break_to = 0
        if not state & ~break_to:
            return lease.breaking            # nothing to break: wait only for a break under way
        self._break_lease(lease, break_to)
        return bool(state & delay_mask) or (lease.breaking and not first_attempt)

    def grant(self, o, requested: int, *, created: bool = False, enabled: bool = True,
              level2: bool = True, locked: bool = False, send_break: Callable | None = None) -> int:
        """The oplock level a new open (added already) gets (Samba's rules): what it asked
        for, less WRITE caching when the file has other opens that are not attribute-only
        (or hold an oplock), less READ and HANDLE when the file has byte-range locks;
        level II only where the share allows it (`level2 oplocks`), none beside a lease with
        HANDLE caching. An attribute-only open gets one only where it created the file."""
        h = self._holder(o)
        if h is None or not enabled or o.is_dir or h.stat_only and not created:
            return LEVEL_NONE
        granted = CACHING.get(requested, 0)
        if granted:     # (the usual CREATE asks for none: nothing to weigh)
            if locked:
                granted &= ~(READ | HANDLE)
            holders = self._files[o.key]
            if len(holders) > 1:        # (the file's only open: no other to keep anything from it)
                others = [other for other in holders.values() if other is not h]
                if any(not other.stat_only or other.cached() for other in others):
                    granted &= ~WRITE
                if any(other.lease is not None and other.lease.state & HANDLE for other in others):
                    granted = 0
            if granted & READ and not granted & WRITE and not level2:
                granted = 0
        level = level_of(granted)
        h.caching, h.send_break, h.level2 = CACHING[level], send_break, level2
        return level

    # -- leases --------------------------------------------------------------------------------
    def lease(self, client_guid: bytes, key: bytes) -> Lease | None:
        return self._leases.get((client_guid, key))

    def lease_key_elsewhere(self, client_guid: bytes, key: bytes, file) -> bool:
        """Whether the client holds this lease key for another file than `file` (None: a
        file not made yet), which a CREATE may not ask for (STATUS_INVALID_PARAMETER)."""
        lease = self._leases.get((client_guid, key))
        return lease is not None and lease.file != file

    def grant_lease(self, o, client_guid: bytes, key: bytes, requested: int, *, version: int = 1,
                    epoch: int = 0, parent_key: bytes | None = None, locked: bool = False,
                    send_lease_break: Callable | None = None) -> Lease:
        """The lease a new open (added already) holds: the client's lease with this key on
        the file, upgraded where it asks for a strict superset of its state that can be
        granted whole (and no break is under way), or a new one with what can be granted of
        what it asks for. On a directory, never WRITE caching (RWH asked: RH granted, RW: R,
        as Samba and Windows); the caller grants one only where `breaks_directories`."""
        h = self._holder(o)
        lease = self._leases.get((client_guid, key))
        wanted = valid_lease_state(requested)
        if o.is_dir:
            wanted &= ~WRITE
        if lease is None:
            lease = Lease(client_guid, key, o.key, version, parent_key=parent_key, directory=o.is_dir)
            self._leases[lease.ident] = lease
            if lease.directory:
                self._directory_leases += 1
            lease.state = self._grantable(h, lease, wanted, locked)
            if version == 2:
                lease.epoch = (epoch + 1) & 0xFFFF
            if lease.directory:
                lease.granted = self.clock()
        elif not lease.breaking and wanted != lease.state and wanted & lease.state == lease.state \
                and self._grantable(h, lease, wanted, locked) == wanted:
            lease.state = wanted
            if lease.version == 2:
                lease.epoch = (lease.epoch + 1) & 0xFFFF
            if lease.directory:
                lease.granted = self.clock()
        h.lease, h.send_lease_break = lease, send_lease_break
        lease.holders.append(h)
        return lease

    def _grantable(self, h: Holder, lease: Lease, wanted: int, locked: bool) -> int:
        """What of `wanted` the lease may hold beside the file's other opens: no WRITE
        caching where another open (not of the lease) reads or writes, no HANDLE caching
        beside an oplock, nothing where the file has byte-range locks."""
        if locked:
            return 0
        granted = wanted
        for other in self._files[h.open.key].values():
            if other is h or other.lease is lease:
                continue
            if not other.stat_only or other.cached():
                granted &= ~WRITE
            if other.lease is None and other.caching:
                granted &= ~HANDLE
        return granted

    def _break_lease(self, lease: Lease, break_to: int) -> None:
        """Breaks a lease to `break_to` (at most): told to its client, with an answer expected
        where it loses WRITE or HANDLE caching. A lease being broken already is not told
        again; what it must come down to is lowered."""
        if lease.breaking:
            lease.breaking_to_required &= break_to
            return
        old, new = lease.state, lease.state & break_to
        if old == new:
            return
        if lease.version == 2:
            lease.epoch = (lease.epoch + 1) & 0xFFFF
        ack = bool(old & (WRITE | HANDLE))
        if ack:
            lease.breaking = True
            lease.breaking_to_requested = lease.breaking_to_required = new
            lease.deadline = self.clock() + self.timeout
            self._breaking_leases.add(lease)
        else:
            lease.state = new
        self._send_lease_break(lease, old, new, ack)

    @staticmethod
    def _send_lease_break(lease: Lease, old: int, new: int, ack: bool) -> None:
        # to the connection of the lease's oldest open (as Samba: any of them would do)
        for h in lease.holders:
            if h.send_lease_break is not None:
                h.send_lease_break(h.open, lease, old, new, ack)
                return

    def lease_breaking(self, lease: Lease) -> bool:
        """Whether the break told of `lease` is still unanswered and the lease still has
        opens: worth telling again on another connection where it was not delivered."""
        return lease.breaking and bool(lease.holders)

    def acknowledge_lease(self, lease: Lease, state: int) -> None:
        """The client's answer to a lease break (`lease.breaking` holds, and `state` is a
        subset of `lease.breaking_to_requested`): the lease keeps `state`; where that is
        more than it must come down to, it is broken on, a step at a time (to R, then to
        none, as Windows does); else CREATEs waiting try again."""
        lease.state = state
        lease.breaking = False
        self._breaking_leases.discard(lease)
        required = lease.breaking_to_required
        if state & ~required:
            step = (required | (READ if state & (WRITE | HANDLE) else 0)) & state
            if state & (WRITE | HANDLE):
                lease.breaking = True
                lease.breaking_to_requested = step
                lease.deadline = self.clock() + self.timeout
                self._breaking_leases.add(lease)
            else:
                lease.state = step
            self._send_lease_break(lease, state, step, lease.breaking)
        if not lease.breaking:
            self.wake(lease.file)

    def break_handles_for_rename(self, o) -> bool:
        """A rename of the open's file, or a delete on close set through it (MS-SMB2 3.3.4.7,
        Samba's delay_for_handle_lease_break): the file's other leases (not the open's own,
        which its client breaks itself) lose their HANDLE caching, and the request waits
        while one of them still holds it (True): until its client answers, closes, or its
        time is up (`expire` takes the lease away). Oplocks are left alone (a rename breaks
        no oplock; a batch holder's share mode answers for it, as on Windows)."""
        h = self._holder(o)
        return self.break_handles(o.key, h.lease if h is not None else None)

    def break_handles(self, key, own: Lease | None = None) -> bool:
        """Every lease of the file `key` but `own` loses its HANDLE caching (a rename that
        replaces the file, or moves the directory it is in); True while one still holds it."""
        must_wait = False
        seen = set()
        for other in list(self._files.get(key, {}).values()):
            lease = other.lease
            if lease is None or lease is own or lease in seen:
                continue
            seen.add(lease)
            if lease.state & HANDLE:        # (being broken already: what it must reach drops H)
                self._break_lease(lease, lease.state & ~HANDLE)
                must_wait = True
        return must_wait

    def break_handle_caching(self, o) -> None:
        """A rename of the open's file (or a delete): the file's other leases lose their
        HANDLE caching (their clients keep no handle to a name that changed)."""
        h = self._holder(o)
        own = h.lease if h is not None else None
        seen = set()
        for other in list(self._files.get(o.key, {}).values()):
            lease = other.lease
            if lease is None or lease is own or lease in seen:
                continue
            seen.add(lease)
            if lease.state & HANDLE or lease.breaking:
                self._break_lease(lease, lease.state & ~HANDLE)

    # -- directory leases ----------------------------------------------------------------------
    def directory_leases(self) -> bool:
        """Whether any directory lease is held (else a change need not look for its directory)."""
        return self._directory_leases > 0

    def break_directory(self, key, exempt: tuple[bytes, bytes] | None = None,
                        name: str | None = None, seen_at: float | None = None) -> None:
        """A change that a listing of the directory `key` shows: its leases are broken to none
        (those holding HANDLE caching must answer; while one is being broken already, what it
        must come down to becomes none), but the lease `exempt` (ClientGuid, LeaseKey), the
        one the change was made under, and (`seen_at`: when the change was seen, where that
        was before now) any granted since. `name`: the entry changed, where the server changed
        it (of use where `other_processes` see the change)."""
        seen = set()
        for h in list(self._files.get(key, {}).values()):
            lease = h.lease
            if lease is None or lease in seen or lease.ident == exempt:
                continue
            seen.add(lease)
            if seen_at is not None and lease.granted > seen_at:
                continue
            if lease.state or lease.breaking:
                self._break_lease(lease, 0)

    def outside_change(self, key, name: str, seen_at: float | None = None) -> None:
        """The kernel saw the entry `name` of the directory `key` change, not by this
        process's doing (seen `seen_at`, by the clock): another program's change, whose
        directory leases are broken, none spared but those granted after it was seen."""
        self.break_directory(key, seen_at=seen_at)

    def break_all_directories(self) -> None:
        """A change whose directory could not be found (its name gone meanwhile): every
        directory lease is broken, rather than one left caching what changed."""
        for lease in [lease for lease in self._leases.values() if lease.directory]:
            if lease.state or lease.breaking:
                self._break_lease(lease, 0)

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

    def contend_level2(self, key, writer=None) -> None:
        """A write, truncation or byte-range lock of the file (through the open `writer`):
        every level II oplock (the writer's own too) is broken to none, with no answer
        expected; so is every lease with READ caching but the writer's own (one that has
        HANDLE caching too must answer)."""
        own = None
        if writer is not None:
            h = self._holder(writer)
            own = h.lease if h is not None else None
        seen = set()
        for h in list(self._files.get(key, {}).values()):
            if h.lease is not None:
                if h.lease is own or h.lease in seen:
                    continue
                seen.add(h.lease)
                if h.lease.state & READ or h.lease.breaking:
                    self._break_lease(h.lease, 0)
            elif h.caching == READ and h.breaking_to is None:
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
        """Takes away the oplocks and leases whose break went unanswered past the timeout
        (as Samba: to none); how many."""
        now = self.clock()
        late = [h for h in self._breaking if h.deadline <= now]
        for h in late:
            self._settle(h, 0)
        late_leases = [lease for lease in self._breaking_leases if lease.deadline <= now]
        for lease in late_leases:
            lease.state, lease.breaking = 0, False
            self._breaking_leases.discard(lease)
            self.wake(lease.file)
        return len(late) + len(late_leases)

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
        """How many files, leases and waiting CREATEs are listed here (for tests: nothing
        stays after closes)."""
        return len(self._files) + len(self._waiters) + len(self._leases)
