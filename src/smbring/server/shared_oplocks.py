"""Oplocks and leases across the worker processes of one server (``smbring serve --workers N``).

`smb.oplocks.Oplocks` decides what an open may cache and what a new open breaks; with one
process it keeps its tables in memory. `SharedOplocks` runs the very same decisions over the
shared store (server.shared_store): each public step is one store write transaction that
loads the file's opens (every worker's) and their leases into the in-memory tables, runs
`Oplocks`' own code on them, and writes back what changed. So one lease key used by the same
client through two workers is one lease record, and a decision in one worker sees the
caching the others' opens hold.

What only the open's own worker can do goes there as a hint (server.wakeups): telling the
client of an oplock or a lease that it breaks (through that worker's connection to it), and
letting a waiting CREATE try again. A hint is acted on only where the store agrees (the
break is still under way, the lease is still at most what it breaks to); messages are sent
only once the transaction is committed. A CREATE waiting for another worker's holder is also
retried every POLL seconds, and every worker takes away the breaks not answered by their
deadline (the store records them), so a lost hint delays, it never blocks; a dead worker's
entries are removed by the supervisor, which then wakes every worker.

A durable open whose connection is gone (detached, smb.durable) is marked so in its record.
One process closes a file's detached opens before a CREATE that reads, writes or deletes it
(smb.commands.create_durable.close_detached: nobody could answer their breaks); a CREATE in
another worker does the same through the open's worker: it asks it (CLOSE_DETACHED) and waits
as for a break, asking again at each retry. The open's worker closes it only where its own
table says it is still detached, the store's record says so too, and another worker has a
CREATE waiting on the file; a CREATE asks for one open for the break timeout at most, after
which the open is treated as an attached one whose client does not answer.

Records (added to the store's databases):

- ``oplocks``: file + worker + open -> the open's Holder: attribute-only and detached (flags),
  oplock caching, the break under way (0xFF: none), its deadline, level II allowed, its
  lease (if any);
- ``leases``: ClientGuid + LeaseKey -> the Lease: file, version, epoch, state, break under
  way, what it asked for and what it must reach, deadline, parent key, whether its file is a
  directory;
- ``dleases``: directory + ClientGuid + LeaseKey of each directory's lease (an index of
  ``leases``): a change in a directory made through any worker asks it whether that
  directory has a lease to break, one read where it has none (`break_directory`), and a
  CLOSE whether any directory has one (`directory_leases`);
- ``obreaks``: ``o`` + file + worker + open, or ``l`` + ClientGuid + LeaseKey -> deadline:
  the breaks not yet answered (what `expire` looks at);
- ``owaits``: file + worker: the workers with a CREATE (or rename) waiting on the file;
- ``dchanges``: directory + entry name -> when a worker changed that entry of a leased
  directory (`break_directory`, which broke the directory's leases but the one the change
  was made under): another worker watching the directory for its own leases sees the
  change as another program's, and breaks nothing more (`outside_change`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import struct
import time

from smbring.server import wakeups
from smbring.server.shared_store import FILE, OWNER, WORKER, Store
from smbring.smb.effects import Forget
from smbring.smb.oplocks import (BREAK_TIMEOUT, LEVEL_NONE, Holder, Lease, Oplocks, level_of,
                                 make_holder, stat_only)

log = logging.getLogger("smbring.server")

POLL = 1.0          # seconds between the retries of a CREATE waiting on another worker
# flags, caching, breaking to, level2, deadline, has lease, lease, when the open was made
HOLDER = struct.Struct(">BBBBdB32sQ")
STAT_ONLY, DETACHED = 0x1, 0x2      # a holder's flags: attribute-only; durable, its session gone
GIVING = 0x4        # detached, and offered to another worker's reconnect (server.moves)
KEPT_FLAGS = DETACHED | GIVING      # (what a step keeps of a record's flags as it found them)
MAX_FILES_ASKED = 4096  # files whose detached opens a worker remembers asking to close
# file, version, epoch, state, breaking, requested, required, deadline, has parent, parent, directory
LEASE = struct.Struct(">QQBHBBBBdB16sBd")     # ... its directory flag, when granted
DEADLINE = struct.Struct(">d")
# a worker's change of a leased directory's entry: when (the clock's, CLOCK_MONOTONIC: one
# for every process of the machine)
CHANGE = struct.Struct(">d")
# how long a worker's change is taken for the cause of what the kernel reports of that entry:
# what one process takes its own changes for (smb.notify's epoch or two: 1-2 s)
CHANGE_WINDOW = 2.0
NOT_BREAKING = 0xFF
HAS_LEASE_AT = struct.calcsize(">BBBBd")   # where a HOLDER record has its "has lease" byte


@dataclasses.dataclass(eq=False)
class RemoteOpen:
    """Another worker's open of a file, as the decisions here see it."""

    worker: int
    open_id: int
    key: tuple
    is_dir: bool = False


def _file(key) -> bytes:
    return FILE.pack(*key)


def _encode_holder(h: Holder, since: int, flags: int = 0) -> bytes:
    lease = h.lease
    return HOLDER.pack((STAT_ONLY if h.stat_only else 0) | (flags & KEPT_FLAGS), h.caching & 0x7,
                       NOT_BREAKING if h.breaking_to is None else h.breaking_to & 0x7,
                       h.level2, h.deadline, lease is not None,
                       (lease.client_guid + lease.key) if lease is not None else bytes(32), since)


def _encode_lease(lease: Lease) -> bytes:
    return LEASE.pack(*lease.file, lease.version, lease.epoch & 0xFFFF, lease.state & 0x7,
                      lease.breaking, lease.breaking_to_requested & 0x7,
                      lease.breaking_to_required & 0x7, lease.deadline,
                      lease.parent_key is not None, lease.parent_key or bytes(16), lease.directory,
                      lease.granted)


def _decode_lease(ident: bytes, data) -> Lease:
    dev, ino, version, epoch, state, breaking, requested, required, deadline, has_parent, parent, \
        directory, granted = LEASE.unpack(bytes(data))
    return Lease(ident[:16], ident[16:], (dev, ino), version, epoch=epoch,
                 parent_key=parent if has_parent else None, directory=bool(directory),
                 state=state, breaking=bool(breaking), breaking_to_requested=requested,
                 breaking_to_required=required, deadline=deadline, granted=granted)


class SharedOplocks(Oplocks):
    """`Oplocks` over the shared store, for one worker (see the module's description)."""

    # every worker's change in a directory breaks its leases through the store, wherever
    # they are held (`break_directory`)
    breaks_directories = True
    other_processes = True

    def __init__(self, store: Store, channel: wakeups.Channel, loop_of, *,
                 clock=time.monotonic, timeout: float = BREAK_TIMEOUT):
        super().__init__(clock, timeout)
        self.store = store
        self.channel = channel
        self._loop_of = loop_of              # () -> the running event loop
        self.db = store.db[b"oplocks"]
        self.leases_db = store.db[b"leases"]
        self.directory_leases_db = store.db[b"dleases"]
        self.breaks_db = store.db[b"obreaks"]
        self.waits_db = store.db[b"owaits"]
        self.changes_db = store.db[b"dchanges"]
        self._changes_pruned = 0.0       # when this worker last removed the stale `dchanges`
        self._me = WORKER.pack(store.worker)
        self._mine: dict[int, Holder] = {}           # open id -> this worker's Holder
        self._raw: dict[int, tuple] = {}             # open id -> (send_break, send_lease_break)
        # while a step runs: its transaction, what it loaded, and what to do once committed
        self._txn = None
        self._owner: dict[Holder, bytes] = {}
        self._since: dict[Holder, int] = {}
        self._flags: dict[Holder, int] = {}
        self._loaded: dict[bytes, bytes] = {}        # oplocks key -> record as loaded
        self._leases_loaded: dict[tuple, bytes] = {}
        self._actions: list | None = None
        self._poll_timer = None
        self._listening = False
        # the durable opens of this worker and what to do with the effects of closing one
        # (set by the server: `close_detached_with`)
        self._durable = None
        self._forget_file = None
        self._delete_pending = None     # (set by the server: `delete_pending_with`)
        self._renamed = None            # (set by the server: `renamed_with`)
        # file -> open owner -> when this worker first asked for that detached open's close
        self._closes_asked: dict[bytes, dict[bytes, float]] = {}

    # -- a step: load, decide, save ---------------------------------------------------------
    @contextlib.contextmanager
    def _step(self, *keys):
        if self._txn is not None:       # (a step inside another: same transaction)
            for key in keys:
                self._load(key)
            yield
            return
        outer = self.store._txn is not None      # inside ServerState's atomic step
        actions: list = []
        try:
            with self.store.write() as txn:
                self._txn, self._actions = txn, actions
                for key in keys:
                    self._load(key)
                yield
                self._save()
        finally:
            self._txn, self._actions = None, None
            self._files, self._leases = {}, {}
            self._breaking, self._breaking_leases = set(), set()
            self._owner, self._since, self._loaded, self._leases_loaded = {}, {}, {}, {}
            self._flags = {}
        if actions:
            if outer:       # committed only when the outer step ends: after it
                self._loop_of().call_soon(self._run, actions)
            else:
                self._run(actions)

    @staticmethod
    def _run(actions: list) -> None:
        for action, args in actions:
            try:
                action(*args)
            except Exception:
                log.exception("oplocks: a break or wake-up failed")

    def _later(self, action, *args) -> None:
        """Done once the step's transaction is committed (at once outside a step)."""
        if self._actions is not None:
            self._actions.append((action, args))
        elif self.store._txn is not None:
            self._loop_of().call_soon(self._run, [(action, args)])
        else:
            self._run([(action, args)])

    def _load(self, key) -> None:
        if key in self._files:
            return
        txn, file = self._txn, _file(key)
        holders: dict = {}
        self._files[key] = holders
        cursor = txn.cursor(self.db)
        if not cursor.set_range(file):
            return
        for k, v in cursor:
            if not k.startswith(file):
                break
            k, v = bytes(k), bytes(v)
            owner = k[FILE.size:]
            try:
                stat, caching, breaking_to, level2, deadline, has_lease, ident, since = HOLDER.unpack(v)
                worker, open_id = OWNER.unpack(owner)
            except struct.error:
                log.error("oplocks: a malformed record in the shared store skipped")
                continue
            h = self._mine.get(open_id) if owner[:WORKER.size] == self._me else None
            if h is None:
                o = RemoteOpen(worker, open_id, key)
                h = Holder(o, bool(stat), send_break=self._remote_break(o),
                           send_lease_break=self._remote_lease_break(o))
            else:
                send_break, send_lease_break = self._raw.get(open_id, (None, None))
                h.send_break = self._deferred(send_break)
                h.send_lease_break = self._deferred(send_lease_break)
            h.stat_only, h.caching, h.level2, h.deadline = bool(stat & STAT_ONLY), caching, \
                bool(level2), deadline
            self._flags[h] = stat & KEPT_FLAGS
            h.breaking_to = None if breaking_to == NOT_BREAKING else breaking_to
            h.lease = self._load_lease(ident) if has_lease else None
            if h.lease is not None:
                h.lease.holders.append(h)
            holders[h.open] = h
            self._owner[h] = owner
            self._since[h] = since
            self._loaded[k] = v
            if h.breaking_to is not None:
                self._breaking.add(h)
        # a lease's opens oldest first, in every worker alike: its breaks go through the
        # oldest one's worker (on that client's oldest connection there), as in one process
        for lease in {h.lease for h in holders.values() if h.lease is not None}:
            lease.holders.sort(key=lambda h: self._since.get(h, 0))

    def _load_lease(self, ident: bytes) -> Lease | None:
        ident_t = (ident[:16], ident[16:])
        lease = self._leases.get(ident_t)
        if lease is not None:
            return lease
        v = self._txn.get(ident, db=self.leases_db)
        if v is None:
            return None
        try:
            lease = _decode_lease(ident, v)
        except struct.error:
            log.error("oplocks: a malformed lease in the shared store skipped")
            return None
        self._leases[ident_t] = lease
        self._leases_loaded[ident_t] = bytes(v)
        if lease.breaking:
            self._breaking_leases.add(lease)
        return lease

    def _save(self) -> None:
        txn = self._txn
        for key, holders in self._files.items():
            file = _file(key)
            for h in holders.values():
                owner = self._owner.get(h)
                if owner is None:
                    continue
                k = file + owner
                record = _encode_holder(h, self._since.get(h, 0), self._flags.get(h, 0))
                if record == self._loaded.get(k):
                    continue
                txn.put(k, record, db=self.db)
                if h.breaking_to is not None:
                    txn.put(b"o" + k, DEADLINE.pack(h.deadline), db=self.breaks_db)
                else:
                    txn.delete(b"o" + k, db=self.breaks_db)
        for ident, lease in self._leases.items():
            if getattr(lease, "orphan", False):
                continue
            k = ident[0] + ident[1]
            record = _encode_lease(lease)
            if record == self._leases_loaded.get(ident):
                continue
            txn.put(k, record, db=self.leases_db)
            if lease.directory and ident not in self._leases_loaded:
                txn.put(_file(lease.file) + k, b"", db=self.directory_leases_db)
            if lease.breaking:
                txn.put(b"l" + k, DEADLINE.pack(lease.deadline), db=self.breaks_db)
            else:
                txn.delete(b"l" + k, db=self.breaks_db)
        for ident in self._leases_loaded.keys() - self._leases.keys():     # its last open closed
            k = ident[0] + ident[1]
            txn.delete(k, db=self.leases_db)
            # (a record begins with its file: a directory's lease is indexed under it)
            txn.delete(self._leases_loaded[ident][:FILE.size] + k, db=self.directory_leases_db)
            txn.delete(b"l" + k, db=self.breaks_db)

    # -- the senders: this worker's connections, or another worker by a hint -----------------
    def _deferred(self, send):
        if send is None:
            return None
        return lambda *args: self._later(send, *args)

    def _remote_break(self, o: RemoteOpen):
        def send(_open, level: int) -> None:
            self._later(self.channel.send, o.worker,
                        wakeups.Message(wakeups.OPLOCK_BREAK, file=o.key, open_id=o.open_id, level=level))
        return send

    def _remote_lease_break(self, o: RemoteOpen):
        def send(_open, lease: Lease, old: int, new: int, ack: bool) -> None:
            self._later(self.channel.send, o.worker, wakeups.Message(
                wakeups.LEASE_BREAK, file=o.key, client_guid=lease.client_guid, lease_key=lease.key,
                old=old, new=new, ack=ack, epoch=lease.epoch))
        return send

    def _send_lease_break(self, lease: Lease, old: int, new: int, ack: bool) -> None:
        # through the lease's oldest open (its worker sends it on the client's oldest
        # connection there)
        for h in lease.holders:
            if h.send_lease_break is not None:
                h.send_lease_break(h.open, lease, old, new, ack)
                return

    # -- the opens ---------------------------------------------------------------------------
    def _listen(self) -> None:
        """Hints from the other workers are read from the first open on (before it, this
        worker holds nothing they could be about; its socket keeps what comes meanwhile)."""
        if not self._listening:
            self.channel.start(self._loop_of(), self.on_message)
            self._listening = True

    def add(self, o, access: int) -> None:
        self._listen()
        h = make_holder(open=o, stat_only=stat_only(access))
        self._mine[id(o)] = h
        with self.store.write() as txn:
            txn.put(_file(o.key) + self.store.owner(id(o)), _encode_holder(h, time.monotonic_ns()),
                    db=self.db)

    def remove(self, o) -> None:
        if id(o) not in self._mine:
            return
        if self._txn is not None or not self._removed_alone(o):
            with self._step(o.key):
                super().remove(o)
                k = _file(o.key) + self.store.owner(id(o))
                self._txn.delete(k, db=self.db)
                self._txn.delete(b"o" + k, db=self.breaks_db)
        self._mine.pop(id(o), None)
        self._raw.pop(id(o), None)

    def _removed_alone(self, o) -> bool:
        """An open without a lease closes: Oplocks.remove changes no other open's record
        then (only a lease's), so its own record goes without a step loading and saving the
        file's other opens (with many opens of one file, most of a CLOSE's cost). False (and
        nothing done) for an open with a lease, or a record this cannot read."""
        k = _file(o.key) + self.store.owner(id(o))
        with self.store.write() as txn:
            record = txn.get(k, db=self.db)
            if record is not None and (len(record) != HOLDER.size or record[HAS_LEASE_AT]):
                return False
            txn.delete(k, db=self.db)
            txn.delete(b"o" + k, db=self.breaks_db)
        return True

    def level(self, o) -> int:
        with self._step(o.key):
            return super().level(o)

    def caching(self, o) -> int:
        with self._step(o.key):
            return super().caching(o)

    def lease_of(self, o) -> Lease | None:
        if self._txn is None and id(o) in self._mine and not self.has_lease_record(o):
            return None     # (a read, not a step: every CLOSE asks where directories are leased)
        with self._step(o.key):
            return super().lease_of(o)

    def breaking(self, o) -> bool:
        with self._step(o.key):
            return super().breaking(o)

    def rebind(self, o, send_break, send_lease_break=None) -> None:
        """As `Oplocks.rebind`; the store's record says whether the open is detached (no
        sender: its session is gone) for the other workers' CREATEs."""
        h = self._mine.get(id(o))
        if h is None:
            return
        raw = self._raw.get(id(o), (None, None))
        self._raw[id(o)] = (send_break, send_lease_break if h.lease is not None else raw[1])
        with self._step(o.key):
            h = super()._holder(o)
            if h is not None:
                self._flags[h] = DETACHED if send_break is None else 0      # (GIVING too: attached)

    def _holder(self, o) -> Holder | None:
        if self._txn is None and not isinstance(o, RemoteOpen):
            return None         # (only a step's tables are current)
        return super()._holder(o)

    # -- a new open ----------------------------------------------------------------------------
    def contend(self, key, access: int, sharing_violation: bool, overwrite: bool,
                first_attempt: bool = True, lease=None) -> bool:
        if stat_only(access):
            return False    # (Oplocks.contend's answer for it, without a step's transaction)
        with self._step(key):
            if self._ask_detached_closed(key):
                return True
            return super().contend(key, access, sharing_violation, overwrite, first_attempt, lease)

    def _ask_detached_closed(self, key) -> bool:
        """The other workers' detached durable opens of the file are closed first, as one
        process closes its own before a CREATE that reads, writes or deletes the file (see
        the module's description): their workers are asked (once the step is committed);
        True while one is still there, asked for less than the break timeout (the CREATE
        waits, and asks again when it is retried). After that it goes on as for a holder
        that does not answer a break."""
        file, now = _file(key), self.clock()
        detached = {self._owner[h]: h.open for h in self._files[key].values()
                    if isinstance(h.open, RemoteOpen) and h.open.worker != self.store.worker
                    and self._flags.get(h, 0) & DETACHED}
        asked = self._closes_asked.pop(file, {})
        asked = {owner: asked.get(owner, now) for owner in detached}    # (the gone ones forgotten)
        if not asked:
            return False
        self._closes_asked[file] = asked            # (most recent last)
        while len(self._closes_asked) > MAX_FILES_ASKED:
            del self._closes_asked[next(iter(self._closes_asked))]
        asking = [o for owner, o in detached.items() if now - asked[owner] < self.timeout]
        if not asking:
            return False
        # the CREATE waits on the file: recorded now, for the asked worker to check
        self._txn.put(file + self._me, b"", db=self.waits_db)
        for o in asking:
            self._later(self.channel.send, o.worker, wakeups.Message(
                wakeups.CLOSE_DETACHED, file=tuple(key), open_id=o.open_id))
        return True

    def grant(self, o, requested: int, *, created: bool = False, enabled: bool = True,
              level2: bool = True, locked: bool = False, send_break=None) -> int:
        h = self._mine.get(id(o))
        if h is None or not enabled or o.is_dir or h.stat_only and not created:
            # (Oplocks.grant's answer for these, without loading the file's other opens: a
            # directory's or an attribute-only open's CREATE, most of a client's)
            level = LEVEL_NONE
        else:
            with self._step(o.key):
                level = super().grant(o, requested, created=created, enabled=enabled, level2=level2,
                                      locked=locked, send_break=send_break)
        if id(o) in self._mine:
            self._raw[id(o)] = (send_break, self._raw.get(id(o), (None, None))[1])
        return level

    # -- leases --------------------------------------------------------------------------------
    def _lease_record(self, client_guid: bytes, key: bytes) -> Lease | None:
        with self.store.read() as txn:
            v = txn.get(client_guid + key, db=self.leases_db)
            if v is None:
                return None
            try:
                return _decode_lease(client_guid + key, v)
            except struct.error:
                return None

    def lease(self, client_guid: bytes, key: bytes) -> Lease | None:
        found = self._lease_record(client_guid, key)
        if found is None:
            return None
        with self._step(found.file):
            return self._leases.get((client_guid, key))

    def lease_breaking(self, lease: Lease) -> bool:
        """As the store says (`lease` is a step's copy, which no answer changes later): the
        lease's record is still of that file (it goes with its last open) and breaking."""
        found = self._lease_record(lease.client_guid, lease.key)
        return found is not None and found.file == tuple(lease.file) and found.breaking

    def lease_key_elsewhere(self, client_guid: bytes, key: bytes, file) -> bool:
        found = self._lease_record(client_guid, key)
        return found is not None and found.file != tuple(file or ())

    def grant_lease(self, o, client_guid: bytes, key: bytes, requested: int, *, version: int = 1,
                    epoch: int = 0, parent_key: bytes | None = None, locked: bool = False,
                    send_lease_break=None) -> Lease:
        with self._step(o.key):
            ident = (client_guid, key)
            if ident not in self._leases:
                other = self._load_lease(client_guid + key)
                if other is not None and other.file != o.key:
                    # the key was taken for another file since the CREATE checked: this open
                    # gets no caching, and the other file's lease stays as it is
                    del self._leases[ident]
                    del self._leases_loaded[ident]
                    orphan = Lease(client_guid, key, o.key, version)
                    orphan.orphan = True
                    return orphan
            lease = super().grant_lease(o, client_guid, key, requested, version=version, epoch=epoch,
                                        parent_key=parent_key, locked=locked,
                                        send_lease_break=send_lease_break)
        if id(o) in self._mine:
            self._raw[id(o)] = (self._raw.get(id(o), (None, None))[0], send_lease_break)
        return lease

    def acknowledge_lease(self, lease: Lease, state: int) -> None:
        with self._step(lease.file):
            current = self._leases.get(lease.ident)
            # (checked again here: another worker may have taken the break away meanwhile)
            if current is None or not current.breaking or state & ~current.breaking_to_requested:
                return
            super().acknowledge_lease(current, state)

    def break_handles_for_rename(self, o) -> bool:
        with self._step(o.key):
            return super().break_handles_for_rename(o)

    def break_handles(self, key, own: Lease | None = None) -> bool:
        with self._step(key):
            return super().break_handles(key, own)

    def break_handle_caching(self, o) -> None:
        with self._step(o.key):
            super().break_handle_caching(o)

    # -- directory leases ----------------------------------------------------------------------
    def directory_leases(self) -> bool:
        """Whether any worker's open holds a directory lease (one read of the index)."""
        with self.store.read() as txn:
            return txn.cursor(self.directory_leases_db).first()

    def break_directory(self, key, exempt: tuple[bytes, bytes] | None = None,
                        name: str | None = None, seen_at: float | None = None) -> None:
        """As `Oplocks.break_directory`, over every worker's opens of the directory: a lease
        held through another worker is told by a hint to that worker. A directory without
        a lease (the index says) costs one read, no step. `name`: the entry this worker
        changed, recorded with the time for the other workers (`outside_change`)."""
        file = _file(key)
        with self.store.read() as txn:
            cursor = txn.cursor(self.directory_leases_db)
            if not cursor.set_range(file) or not bytes(cursor.key()).startswith(file):
                return
        with self._step(key):
            super().break_directory(key, exempt, seen_at=seen_at)
            if name is not None:
                now = self.clock()
                self._txn.put(file + os.fsencode(name), CHANGE.pack(now), db=self.changes_db)
                if now - self._changes_pruned > CHANGE_WINDOW:
                    self._prune_changes(now)

    def _prune_changes(self, now: float) -> None:
        """Removes the changes older than CHANGE_WINDOW (whoever recorded them): the table
        holds a few seconds' changes of leased directories."""
        self._changes_pruned = now
        stale = [bytes(k) for k, v in self._txn.cursor(self.changes_db)
                 if CHANGE.unpack_from(v)[0] < now - CHANGE_WINDOW]
        for k in stale:
            self._txn.delete(k, db=self.changes_db)

    def outside_change(self, key, name: str, seen_at: float | None = None) -> None:
        """As `Oplocks.outside_change`; but where a worker changed that entry of the directory
        in the last CHANGE_WINDOW, the change seen is taken for that worker's (as one process
        takes a change of a path it changed itself in the last second or two, smb.notify's
        `made_by_server`), which broke the directory's leases already but the one it spared:
        nothing is broken again (not the spared lease, nor one granted since)."""
        with self.store.read() as txn:
            record = txn.get(_file(key) + os.fsencode(name), db=self.changes_db)
            changed = CHANGE.unpack_from(record)[0] if record is not None else None
        if changed is None or self.clock() - changed > CHANGE_WINDOW:
            self.break_directory(key, seen_at=seen_at)

    def break_all_directories(self) -> None:
        """As `Oplocks.break_all_directories`, for the directory leases of every worker."""
        with self.store.read() as txn:
            files = {FILE.unpack_from(k) for k in txn.cursor(self.directory_leases_db).iternext(values=False)
                     if len(k) > FILE.size}
        for file in files:
            with self._step(file):
                for lease in list(self._leases.values()):
                    if lease.directory and lease.file == file and (lease.state or lease.breaking):
                        self._break_lease(lease, 0)

    def contend_level2(self, key, writer=None) -> None:
        if not self._may_cache(key):        # (every WRITE comes here: a read is enough mostly)
            return
        with self._step(key):
            super().contend_level2(key, writer)

    def _may_cache(self, key) -> bool:
        """Whether an open of the file holds an oplock or a lease (a read transaction)."""
        file = _file(key)
        with self.store.read() as txn:
            cursor = txn.cursor(self.db)
            if not cursor.set_range(file):
                return False
            for k, v in cursor:
                if not bytes(k).startswith(file):
                    return False
                if len(v) == HOLDER.size and (v[1] or v[2] != NOT_BREAKING or v[12]):
                    return True
        return False

    # -- breaks answered, or not -------------------------------------------------------------
    def acknowledge(self, o, level: int) -> int:
        with self._step(o.key):
            if not super().breaking(o):         # (taken away meanwhile by another worker)
                return LEVEL_NONE
            return super().acknowledge(o, level)

    def expire(self) -> int:
        """Takes away every worker's breaks whose deadline has passed (any worker may: the
        holder's own may be gone)."""
        now = self.clock()
        due = []
        with self.store.read() as txn:
            for k, v in txn.cursor(self.breaks_db):
                if len(v) == DEADLINE.size and DEADLINE.unpack(v)[0] <= now:
                    due.append(bytes(k))
        taken = 0
        for k in due:
            try:
                if k[:1] == b"o" and len(k) == 1 + FILE.size + OWNER.size:
                    key = FILE.unpack_from(k, 1)
                    with self._step(key):
                        owner = k[1 + FILE.size:]
                        for h in list(self._files[key].values()):
                            if self._owner.get(h) == owner and h.breaking_to is not None \
                                    and h.deadline <= now:
                                self._settle(h, 0)
                                taken += 1
                        if not any(self._owner.get(h) == owner for h in self._files[key].values()):
                            self._txn.delete(k, db=self.breaks_db)     # (its open is gone)
                elif k[:1] == b"l" and len(k) == 33:
                    found = self._lease_record(k[1:17], k[17:])
                    if found is None:
                        with self.store.write() as txn:
                            txn.delete(k, db=self.breaks_db)
                        continue
                    with self._step(found.file):
                        lease = self._leases.get((k[1:17], k[17:]))
                        if lease is not None and lease.breaking and lease.deadline <= now:
                            lease.state, lease.breaking = 0, False
                            self._breaking_leases.discard(lease)
                            self.wake(lease.file)
                            taken += 1
                else:
                    with self.store.write() as txn:
                        txn.delete(k, db=self.breaks_db)
            except Exception:
                log.exception("oplocks: a break not expired")
        return taken

    # -- requests waiting ------------------------------------------------------------------
    def wait(self, key, retry) -> None:
        self._listen()
        first = key not in self._waiters
        super().wait(key, retry)
        if first:
            with self.store.write() as txn:
                txn.put(_file(key) + self._me, b"", db=self.waits_db)
        if self._poll_timer is None:
            self._poll_timer = self._loop_of().call_later(POLL, self._poll)

    def unwait(self, key, retry) -> None:
        super().unwait(key, retry)
        if key not in self._waiters:
            with self.store.write() as txn:
                txn.delete(_file(key) + self._me, db=self.waits_db)

    def wake(self, key) -> None:
        """The CREATEs waiting on the file try again: this worker's (once the step is
        committed) and, by a hint, the other workers'."""
        retries = list(self._waiters.pop(key, ()))
        file = _file(key)
        others = []
        # (a read where nothing of this worker's waits: most CLOSEs, none waiting anywhere)
        with self.store.write() if retries else self.store.read() as txn:
            if retries:
                txn.delete(file + self._me, db=self.waits_db)
            cursor = txn.cursor(self.waits_db)
            if cursor.set_range(file):
                for k in cursor.iternext(values=False):
                    if not bytes(k).startswith(file):
                        break
                    worker = WORKER.unpack_from(k, FILE.size)[0]
                    if worker != self.store.worker:
                        others.append(worker)
        for worker in others:
            self._later(self.channel.send, worker, wakeups.Message(wakeups.WAKE, file=tuple(key)))
        for retry in retries:
            self._later(retry)

    def _wake_here(self, key) -> None:
        retries = list(self._waiters.pop(key, ()))
        if retries:
            with self.store.write() as txn:
                txn.delete(_file(key) + self._me, db=self.waits_db)
        self._run([(retry, ()) for retry in retries])

    def _poll(self) -> None:
        """The safety net: every request waiting here tries again (a hint may have been lost)."""
        self._poll_timer = None
        for key in list(self._waiters):
            try:
                self._wake_here(key)
            except Exception:
                log.exception("oplocks: waiting requests not retried")
        if self._waiters and self._poll_timer is None:
            self._poll_timer = self._loop_of().call_later(POLL, self._poll)

    # -- hints from the other workers --------------------------------------------------------
    def on_message(self, m: wakeups.Message) -> None:
        if m.kind == wakeups.WAKE:
            self._wake_here(m.file)
        elif m.kind == wakeups.WAKE_ALL:
            for key in list(self._waiters):
                self._wake_here(key)
        elif m.kind == wakeups.OPLOCK_BREAK:
            self._tell_oplock_break(m)
        elif m.kind == wakeups.LEASE_BREAK:
            self._tell_lease_break(m)
        elif m.kind == wakeups.CLOSE_DETACHED:
            self._close_detached(m)
        elif m.kind == wakeups.DELETE_PENDING and self._delete_pending is not None:
            self._delete_pending(m.file)
        elif m.kind == wakeups.RENAMED and self._renamed is not None:
            self._renamed(m.file)

    def renamed_with(self, on_renamed) -> None:
        """on_renamed(key): another worker renamed the file `key`, which this worker has
        open (a hint: the receiver takes the renames from the store)."""
        self._renamed = on_renamed

    def delete_pending_with(self, on_delete_pending) -> None:
        """on_delete_pending(key): another worker says the directory `key` is now to be
        deleted (a hint: the receiver checks the store)."""
        self._delete_pending = on_delete_pending

    def close_detached_with(self, durable, forget_file) -> None:
        """This worker's durable opens (`smb.durable.DurableOpens`): a detached one another
        worker's CREATE asks for is closed there; forget_file(dev, ino) is called for a file
        its close deleted (delete on close), as a connection does with `Forget`."""
        self._durable, self._forget_file = durable, forget_file

    def _close_detached(self, m: wakeups.Message) -> None:
        """Another worker's CREATE asks for this worker's detached open `m.open_id` of the
        file to be closed. Only a hint: closed only where it is this worker's open of that
        file, detached in its own table (never an open with a session), detached in the
        store's record, and another worker has a CREATE waiting on the file."""
        h = self._mine.get(m.open_id)
        durable = self._durable
        if h is None or durable is None or tuple(h.open.key) != m.file:
            return
        d = durable.of(h.open)
        if d is None or not d.detached:
            return
        file = _file(m.file)
        with self.store.read() as txn:
            record = txn.get(file + self.store.owner(m.open_id), db=self.db)
            if record is None or len(record) != HOLDER.size or not record[0] & DETACHED:
                return
            if not self._waiting_elsewhere(txn, file):
                return
        effects: list = []
        durable.close_detached(d, effects)
        log.info("a detached durable handle closed: another worker's open of its file needs it")
        for effect in effects:
            if isinstance(effect, Forget) and self._forget_file is not None:
                self._forget_file(effect.dev, effect.ino)

    def _waiting_elsewhere(self, txn, file: bytes) -> bool:
        """Whether a worker but this one has a request waiting on the file."""
        cursor = txn.cursor(self.waits_db)
        if not cursor.set_range(file):
            return False
        for k in cursor.iternext(values=False):
            k = bytes(k)
            if not k.startswith(file):
                return False
            if len(k) == FILE.size + WORKER.size and k[FILE.size:] != self._me:
                return True
        return False

    def _tell_oplock_break(self, m: wakeups.Message) -> None:
        h = self._mine.get(m.open_id)
        send = self._raw.get(m.open_id, (None, None))[0]
        if h is None or send is None or tuple(h.open.key) != m.file:
            return
        o = h.open
        with self._step(o.key):
            h = super()._holder(o)
            if h is None:
                return
            # told only what the store says: the break under way, or a level II oplock gone
            if h.breaking_to is not None:
                due = level_of(h.breaking_to) == m.level
            else:
                due = m.level == LEVEL_NONE and not h.caching
            if due:
                self._later(send, o, m.level)

    def _tell_lease_break(self, m: wakeups.Message) -> None:
        with self._step(m.file):
            lease = self._leases.get((m.client_guid, m.lease_key))
            if lease is None or lease.file != m.file:
                return
            if m.ack and not (lease.breaking and m.new == lease.breaking_to_requested):
                return
            if not m.ack and lease.state & ~m.new:
                return
            for h in lease.holders:
                if isinstance(h.open, RemoteOpen):
                    continue
                send = self._raw.get(id(h.open), (None, None))[1]
                if send is not None:
                    told = dataclasses.replace(lease, epoch=m.epoch, holders=list(lease.holders))
                    self._later(send, h.open, told, m.old, m.new, m.ack)
                    return

    # -- a detached open moving between workers (server.moves) --------------------------------
    def take_over(self, txn, key, giver: bytes, o) -> bool:
        """In `txn`: the record of the giver's open (`giver`: its owner bytes) of the file
        becomes this worker's open `o`'s, where it is still offered (GIVING); False (nothing
        changed) where it is not."""
        file = _file(key)
        record = txn.get(file + giver, db=self.db)
        if record is None or len(record) != HOLDER.size or not record[0] & GIVING:
            return False
        mine = self.store.owner(id(o))
        txn.delete(file + giver, db=self.db)
        txn.put(file + mine, bytes([record[0] & ~GIVING]) + bytes(record[1:]), db=self.db)
        deadline = txn.get(b"o" + file + giver, db=self.breaks_db)
        if deadline is not None:
            txn.delete(b"o" + file + giver, db=self.breaks_db)
            txn.put(b"o" + file + mine, bytes(deadline), db=self.breaks_db)
        return True

    def taken_over(self, o, stat: bool) -> None:
        """Once `take_over` is committed: the open is this worker's (detached, no sender;
        its lease is read from its record at the reconnect's first step, `lease_of`)."""
        self._listen()
        self._mine[id(o)] = Holder(o, stat)
        self._raw[id(o)] = (None, None)

    def offer(self, o) -> bool:
        """Marks this worker's detached open as offered to another worker (GIVING); False
        where its record does not say detached (or says offered already)."""
        k = _file(o.key) + self.store.owner(id(o))
        with self.store.write() as txn:
            record = txn.get(k, db=self.db)
            if record is None or len(record) != HOLDER.size or not record[0] & DETACHED or record[0] & GIVING:
                return False
            txn.put(k, bytes([record[0] | GIVING]) + bytes(record[1:]), db=self.db)
        return True

    def has_lease_record(self, o) -> bool:
        with self.store.read() as txn:
            record = txn.get(_file(o.key) + self.store.owner(id(o)), db=self.db)
        return record is not None and len(record) == HOLDER.size and bool(record[HAS_LEASE_AT])

    def withdraw(self, o) -> bool:
        """The offer ends: True where the open is still this worker's (its offer withdrawn,
        in one transaction: a later take-over finds none), False where another worker took
        it (this worker then forgets its holder)."""
        k = _file(o.key) + self.store.owner(id(o))
        with self.store.write() as txn:
            record = txn.get(k, db=self.db)
            if record is not None:
                if len(record) == HOLDER.size and record[0] & GIVING:
                    txn.put(k, bytes([record[0] & ~GIVING]) + bytes(record[1:]), db=self.db)
                return True
        self._mine.pop(id(o), None)
        self._raw.pop(id(o), None)
        return False

    def held(self) -> int:
        return len(self._mine) + len(self._waiters)

    def close(self) -> None:
        if self._poll_timer is not None:
            self._poll_timer.cancel()
            self._poll_timer = None
