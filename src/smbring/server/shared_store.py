"""The state the worker processes of one server share (``smbring serve --workers N``), in LMDB.

With one worker, `ServerState` keeps every table in Python dictionaries. With several, the
tables a correct answer needs across workers live in one LMDB environment in a fresh
directory of the server's run directory (see server.workers.store_directory):
memory-mapped, read without locks, one writer at a time across processes, each change a
transaction. Like Samba's locking.tdb it is volatile: it describes live processes, is
opened without fsync and is removed when the server stops (or, left by a server that was
killed, when the next one starts).

Records, all keyed by the file (st_dev, st_ino) first, each entry naming its owner as
(worker id, open id) so that the supervisor can remove a dead worker's entries:

- ``opens``: file + worker + open -> (READ|WRITE|DELETE wanted, shared): share modes;
- ``pending``: file -> worker + open that asked, flags, the name it asked through: delete on
  close pending for every open;
- ``locks``: file + worker + open + offset + length + exclusive -> how many such locks;
- ``lockhead``, ``locklog``: file -> (next number, oldest kept, locks held); file + number
  -> a change to the file's locks (worker, how many added or removed, range): what each
  worker's mirror of the other workers' locks on the file catches up from;
- ``paths``: path + NUL + worker + open -> file (+ the whole path where the key holds only
  its first PATH_IN_KEY bytes): which opens name a file below a directory;
- ``trees``: share + NUL + worker -> tree connects (smb.conf's `max connections`);
- ``conns``: client address (empty: all) + NUL + worker -> connections (`max smbd processes`,
  `max connections per client`);
- ``clients``: ClientGuid + worker: the worker serving that client (server.handoff);
- ``renames``: file + worker + number -> old path + NUL + new path: a rename through
  another worker of a file that worker has open under the old name (renames in a row:
  the first name and the last), until it gives its opens the new one
  (`SharedOpenPaths.renamed`, `take_renames`).

Each class here has the interface of the in-memory one it replaces (`ShareModes`,
`ByteRangeLocks`, and server_state's `DeletePending`, `TreeCounts`, `OpenPaths`) and is
handed to `ServerState` by the server: the protocol core stays free of I/O.

Costs: a CREATE and its CLOSE are a few write transactions of a few dozen bytes (~10 us
each); a READ or WRITE on a file without locks is one read transaction and one lookup. A
check against the other workers' byte-range locks on a file is O(log n) in their locks
there, plus O(log n) for each change to them since this worker last looked (its mirror of
them catches up from the file's log; one that fell more changes behind than a quarter of
the file's locks is read again whole, O(n log n)).
"""
from __future__ import annotations

import logging
import os
import struct
import time

import lmdb

from smbring.smb import wire
from smbring.smb.errors import SMBError
from smbring.smb.locks import ByteRangeLocks, CountedRanges, Lock
from smbring.smb.server_state import PathIndex
from smbring.smb.sharemodes import DELETE, READ, WRITE, blocks_rename_in, categories

log = logging.getLogger("smbring.server")

FILE = struct.Struct(">QQ")                 # st_dev, st_ino
OWNER = struct.Struct(">HQ")                # worker id, open id
RANGE = struct.Struct(">QQB")               # offset, length, exclusive
COUNT = struct.Struct(">I")
WORKER = struct.Struct(">H")
MAP_SIZE = 1 << 30      # address space reserved; the file grows only as far as it is used
MAP_SIZE_VARIABLE = "SMBRING_STORE_MAP_SIZE"     # another size, in bytes (for tests)
# new entries are refused once this share of the map is used: what is left is headroom for
# the removals that closes, unlocks and disconnects make (LMDB copies pages to change them,
# and keeps the pages of the last transactions): at least RESERVE_PAGES
FULL_AT = 0.9
RESERVE_PAGES = 64
# while the file's high-water mark is ROOMY_PAGES or more below that bound, a growing write
# looks at the map's use once in ROOMY_CHECK_EVERY (env.info() costs about a microsecond, and
# every CREATE makes two growing writes): fewer writes than that, of a few pages each, cannot
# cross the distance; closer to the bound (and with a map as small as the tests'), every time
ROOMY_PAGES = 4096
ROOMY_CHECK_EVERY = 16
DATABASES = (b"opens", b"pending", b"locks", b"paths", b"trees", b"conns",
             # oplocks and leases (server.shared_oplocks)
             b"oplocks", b"leases", b"obreaks", b"owaits", b"dleases",
             # which worker serves which ClientGuid (server.handoff)
             b"clients",
             # each file's log of byte-range lock changes (SharedByteRangeLocks)
             b"lockhead", b"locklog",
             # workers' recent changes of leased directories (server.shared_oplocks)
             b"dchanges",
             # renames another worker's opens are to learn (SharedOpenPaths)
             b"renames")
MAX_WORKERS = 1024
# where each database's keys name their worker (an offset from the end when negative)
WORKER_AT = {b"opens": FILE.size, b"locks": FILE.size, b"paths": -OWNER.size,
             b"trees": -WORKER.size, b"conns": -WORKER.size, b"oplocks": FILE.size,
             b"owaits": FILE.size, b"clients": -WORKER.size, b"renames": FILE.size}
OPLOCK_BREAK_ENTRY = 1 + FILE.size + OWNER.size     # b"o" + file + owner (server.shared_oplocks)
# a file's log of byte-range lock changes (SharedByteRangeLocks): head -> next number, oldest
# kept, locks held; file + number -> worker, how many, offset, length, exclusive
LOG_HEAD = struct.Struct(">QQQ")
LOG_SEQ = struct.Struct(">Q")
LOG_ENTRY = struct.Struct(">HiQQB")
# a log keeps at least this many changes, and one per this many locks on the file: a mirror
# read again whole (O(locks)) was that many changes behind (O(1) each), and the log adds a
# quarter at most to the store's use by locks
LOG_KEPT_LEAST, LOG_KEPT_PER_LOCK = 64, 4
RENAME_NUMBER = struct.Struct(">Q")     # a rename's record: in the order they were made
# a file's rename records for one worker at most (more only where the file, renamed through
# several of its names, has hard links): past it that worker's opens keep their names, and
# a delete on close through one removes the file only where that name still leads to it
MAX_RENAMES_KEPT = 16


def remove_store(directory: str) -> None:
    """Removes a store directory (the server that made it has stopped, or is gone)."""
    try:
        wake_sockets = [name for name in os.listdir(directory) if name.startswith(("wake-", "handoff-"))]
    except OSError:
        wake_sockets = []
    for name in ("data.mdb", "lock.mdb", "owner", *wake_sockets):
        try:
            os.unlink(os.path.join(directory, name))
        except FileNotFoundError:
            pass
    try:
        os.rmdir(directory)
    except OSError as e:
        log.warning("shared store %s not removed: %s", directory, e)


def open_environment(directory: str) -> lmdb.Environment:
    # no fsync (volatile, as above); writemap: a commit writes into the shared map instead of
    # making write system calls (a write transaction costs ~1 us instead of ~5)
    return lmdb.open(directory, map_size=int(os.environ.get(MAP_SIZE_VARIABLE) or MAP_SIZE), max_dbs=len(DATABASES), sync=False,
                     metasync=False, writemap=True, readahead=False, max_readers=512, create=True,
                     mode=0o600)


class StoreFull(SMBError):
    """The shared store has no room for a new entry: the open, lock, tree connect or
    connection that needed it is refused (STATUS_INSUFFICIENT_RESOURCES); closes go on."""

    def __init__(self):
        super().__init__(wire.STATUS_INSUFFICIENT_RESOURCES)


_new = object.__new__


class _Writing:
    """`Store.write`'s new transaction, as a context manager: committed at the end, undone
    where the body raised; a full map refuses it (StoreFull). (A class, not a generator:
    every CREATE and CLOSE of a worker enters a few, and a generator-based context manager
    costs several Python calls more each time.)"""

    __slots__ = ("store", "txn")

    def __enter__(self):
        store = self.store
        txn = self.txn = store.env.begin(write=True)
        store._txn = txn
        return txn

    def __exit__(self, kind, value, traceback) -> bool:
        store = self.store
        store._txn = None
        try:
            if kind is None:
                self.txn.commit()
            else:
                self.txn.abort()
        except lmdb.MapFullError:
            kind = lmdb.MapFullError
        if kind is not None and issubclass(kind, lmdb.MapFullError):
            log.warning("shared store %s: its map is full; a change was refused", store.directory)
            raise StoreFull() from None
        return False


class _InProgress:
    """The write transaction in progress, entered again (`Store.write` or `read` inside
    ServerState's atomic step): it ends with the step, not here."""

    __slots__ = ("store",)

    def __init__(self, store):
        self.store = store

    def __enter__(self):
        return self.store._txn

    def __exit__(self, kind, value, traceback) -> bool:
        return False


class Store:
    """One process's handle on the shared store: opened in that process (LMDB environments
    do not survive fork), in the directory server.workers made for it."""

    def __init__(self, directory: str, worker: int):
        if not 0 < worker < MAX_WORKERS:
            raise ValueError(f"worker id {worker}: from 1 to {MAX_WORKERS - 1}")
        self.directory = directory
        self.worker = worker
        self.env = open_environment(directory)
        self.db = {name: self.env.open_db(name) for name in DATABASES}
        self._txn = None            # the write transaction `write` made, while it lasts
        self._in_progress = _InProgress(self)
        self._page_size = self.env.stat()["psize"]
        self._unchecked = 0         # growing writes left before the map's use is looked at

    def write(self, grows: bool = False):
        """A write transaction: the one in progress in this process (a step of ServerState
        that changes several tables is one transaction: `atomic`), else a new one. One that
        `grows` (adds an entry) is refused with StoreFull once the map is FULL_AT used; any
        that finds the map full is undone and refused alike."""
        if grows and self._nearly_full():
            log.warning("shared store %s: over %d%% of its map used; new entries refused",
                        self.directory, FULL_AT * 100)
            raise StoreFull()
        if self._txn is not None:
            return self._in_progress
        writing = _new(_Writing)
        writing.store = self
        return writing

    def _nearly_full(self) -> bool:
        if self._unchecked:
            self._unchecked -= 1
            return False
        info = self.env.info()
        pages = info["map_size"] // self._page_size
        bound = min(pages * FULL_AT, pages - RESERVE_PAGES)
        if info["last_pgno"] + 1 < bound:       # the file's high-water mark: nowhere near
            if info["last_pgno"] + 1 < bound - ROOMY_PAGES:
                self._unchecked = ROOMY_CHECK_EVERY - 1
            return False
        # past it once: the pages the databases use now (freed ones are used again)
        with self.env.begin() as txn:
            stats = [txn.stat()] + [txn.stat(db) for db in self.db.values()]
        used = sum(st["branch_pages"] + st["leaf_pages"] + st["overflow_pages"] for st in stats)
        return used + 2 >= bound                # (+ the two meta pages)

    def read(self):
        """A read transaction, or the write transaction in progress (which sees its own
        changes)."""
        if self._txn is not None:
            return self._in_progress
        return self.env.begin()

    def atomic(self):
        """What ServerState makes one step of: registering an open, closing one."""
        return self.write()

    def owner(self, open_id: int) -> bytes:
        return OWNER.pack(self.worker, open_id & 0xFFFFFFFFFFFFFFFF)

    def close(self) -> None:
        self.env.close()


def remove_worker(directory: str, worker: int) -> int:
    """The supervisor's cleanup after a worker died: every entry it owned goes (its opens,
    locks, tree connects, connections); a delete it had asked for stays pending for the
    opens of the other workers, or is dropped where no open is left (nobody is left to
    delete the file, and new opens must not be refused for it). Returns how many entries
    went."""
    env = open_environment(directory)
    try:
        env.reader_check()          # reader slots of the dead process
        dbs = {name: env.open_db(name) for name in DATABASES}
        mine = WORKER.pack(worker)
        removed = 0
        with env.begin(write=True) as txn:
            for name, at in WORKER_AT.items():
                doomed = []
                for key in txn.cursor(dbs[name]).iternext(values=False):
                    field = key[at:(at + WORKER.size) or None]
                    if field == mine:
                        doomed.append(key)
                if name == b"locks":        # the others' mirrors of them learn it
                    _log_removed_locks(txn, dbs, worker, doomed)
                for key in doomed:
                    txn.delete(key, db=dbs[name])
                removed += len(doomed)
            pending = dbs[b"pending"]
            for file, setter in list(txn.cursor(pending)):
                if not _has_prefix(txn, dbs[b"opens"], file):
                    txn.delete(file, db=pending)
                elif setter[:WORKER.size] == mine:     # its open is gone, its name stays
                    txn.put(file, OWNER.pack(worker, 0) + bytes(setter[OWNER.size:]), db=pending)
            removed += _remove_worker_breaks(txn, dbs, mine)
        return removed
    finally:
        env.close()


def _log_removed_locks(txn, dbs, worker: int, keys: list) -> None:
    changes: dict = {}
    for key in keys:
        offset, length, exclusive = RANGE.unpack_from(key, FILE.size + OWNER.size)
        count = COUNT.unpack(txn.get(key, db=dbs[b"locks"]))[0]
        changes.setdefault(bytes(key[:FILE.size]), []).append((worker, -count, offset, length, exclusive))
    for file, gone in changes.items():
        _log_locks(txn, dbs, file, gone)


def _remove_worker_breaks(txn, dbs, mine: bytes) -> int:
    """The dead worker's oplock breaks under way go with its opens, and so do the leases
    that no open holds any more (a lease another worker's open still holds stays)."""
    breaks, leases, oplocks = dbs[b"obreaks"], dbs[b"leases"], dbs[b"oplocks"]
    directory_leases = dbs[b"dleases"]
    doomed = [bytes(k) for k in txn.cursor(breaks).iternext(values=False)
              if k[:1] == b"o" and len(k) == OPLOCK_BREAK_ENTRY and k[1 + FILE.size:1 + FILE.size + WORKER.size] == mine]
    held: set = set()       # the lease records any open still names
    for v in txn.cursor(oplocks).iternext(keys=False):
        if len(v) >= 45 and v[12]:
            held.add(bytes(v[13:45]))
    orphans = [bytes(k) for k in txn.cursor(leases).iternext(values=False) if bytes(k) not in held]
    for k in doomed:
        txn.delete(k, db=breaks)
    for k in orphans:
        txn.delete(k, db=leases)
        txn.delete(b"l" + k, db=breaks)
    # (the index of directory leases, directory + lease: what is left names a lease still held)
    for k in [bytes(k) for k in txn.cursor(directory_leases).iternext(values=False)]:
        if txn.get(k[FILE.size:], db=leases) is None:
            txn.delete(k, db=directory_leases)
    return len(doomed) + len(orphans)


def _has_prefix(txn, db, prefix: bytes) -> bool:
    cursor = txn.cursor(db)
    return cursor.set_range(prefix) and cursor.key().startswith(prefix)


def _file(key) -> bytes:
    return FILE.pack(*key)


def _renames(txn, db, prefix: bytes) -> list[tuple[bytes, bytes, bytes]]:
    """The rename records (`renames`) whose keys start with `prefix`: (key, first name,
    last name)."""
    found = []
    cursor = txn.cursor(db)
    if cursor.set_range(prefix):
        for k, v in cursor:
            if not bytes(k).startswith(prefix):
                break
            first, _, last = bytes(v).partition(b"\0")
            found.append((bytes(k), first, last))
    return found


# -- share modes ----------------------------------------------------------------------------
class SharedShareModes:
    """`smb.sharemodes.ShareModes` over the store: every worker's opens of a file."""

    def __init__(self, store: Store):
        self.store = store
        self.db = store.db[b"opens"]
        self._here = WORKER.pack(store.worker)

    def _modes(self, txn, key):
        """(owner bytes, wants, shares) of every open of the file."""
        prefix = _file(key)
        cursor = txn.cursor(self.db)
        if not cursor.set_range(prefix):
            return
        for k, v in cursor:
            if not k.startswith(prefix):
                return
            yield k[FILE.size:], v[0], v[1]

    def _read(self, key) -> list:
        with self.store.read() as txn:
            return list(self._modes(txn, key))

    @staticmethod
    def _allowed(modes, access: int, share: int) -> bool:
        wants = categories(access)
        share &= READ | WRITE | DELETE
        if not wants:
            return True
        return not any(wants & ~other_share or other_wants & ~share
                       for _owner, other_wants, other_share in modes if other_wants)

    def allowed(self, key, access: int, share: int) -> bool:
        return self._allowed(self._read(key), access, share)

    def check_and_add(self, key, owner: int, access: int, share: int) -> bool:
        with self.store.write(grows=True) as txn:      # the check and the add: one step
            if not self._allowed(self._modes(txn, key), access, share):
                return False
            txn.put(_file(key) + self.store.owner(owner),
                    bytes([categories(access), share & (READ | WRITE | DELETE)]), db=self.db)
        return True

    def remove(self, key, owner: int) -> None:
        with self.store.write() as txn:
            txn.delete(_file(key) + self.store.owner(owner), db=self.db)

    def others_share(self, key, owner: int, what: int) -> bool:
        me = self.store.owner(owner)
        return all(share & what for who, _wants, share in self._read(key) if who != me)

    def blocks_child_rename(self, key) -> bool:
        return any(blocks_rename_in(wants, share) for _who, wants, share in self._read(key))

    def has_writer(self, key) -> bool:
        return any(wants & WRITE for _who, wants, _share in self._read(key))

    def has_writer_here(self, key) -> bool:
        """Whether an open of this worker may write the file (its writes are the server's
        own changes for change notify; another worker's are not)."""
        return any(wants & WRITE for who, wants, _share in self._read(key)
                   if who.startswith(self._here))

    def take_over(self, txn, key, giver: bytes, owner: int) -> bool:
        """In `txn`: another worker's open's share mode (`giver`: its owner bytes) becomes
        this worker's open `owner`'s. False where it has none."""
        value = txn.get(_file(key) + giver, db=self.db)
        if value is None:
            return False
        txn.delete(_file(key) + giver, db=self.db)
        txn.put(_file(key) + self.store.owner(owner), bytes(value), db=self.db)
        return True

    def of(self, key, owner: int):
        with self.store.read() as txn:
            v = txn.get(_file(key) + self.store.owner(owner), db=self.db)
        return (v[0], v[1]) if v is not None else None

    def count(self, key) -> int:
        return len(self._read(key))


# -- delete pending -------------------------------------------------------------------------
IS_DIR, IS_STREAM = 1, 2        # flags of a pending record, after its owner


def _pending_record(owner: bytes, o) -> bytes:
    """What a pending delete records: who asked, and the name it asked through (absolute, as
    that open knew it then), which is what the last close deletes, on whichever worker."""
    flags = (IS_DIR if o.is_dir else 0) | (IS_STREAM if o.stream is not None else 0)
    return owner + bytes([flags]) + os.fsencode(o.path())


class RecordedDelete:
    """The delete on close another worker's open asked for, done by the file's last close in
    this worker: the name that open had, reached through the closing open's share (its tree
    and identity), and deleted only where it still leads to the file (`key`), as an open of
    this worker's is (Connection._delete_on_close, FileSystem.remove)."""

    stream = None                   # (a stream's depot file: no streams of its own to remove)
    base_parts = None

    def __init__(self, closer, parts: list[str], is_dir: bool, is_stream: bool, key):
        self.tree = closer.tree
        self.parts = parts
        self.is_dir = is_dir
        self.is_stream = is_stream
        self.key = key

    def path(self) -> str:
        return "/".join([self.tree.fs.root] + self.parts)


class SharedDeletePending:
    """server_state's `DeletePending` over the store. The file is deleted by whichever
    worker closes its last open: through the open that asked for it where that is still open
    in this worker, else under the name that open recorded (`RecordedDelete`: the delete is
    then done as the closing open's user, in its share, if the name still names the file)."""

    def __init__(self, store: Store, share_modes: SharedShareModes, tell=None):
        self.store = store
        self.db = store.db[b"pending"]
        self.opens = share_modes.db
        self._share_modes = share_modes
        self._setters: dict = {}        # key -> this worker's open that asked, while it is open
        # tell(worker, key): a directory's delete is pending, for the change notifies waiting
        # on the other workers' opens of it (their watches are theirs alone)
        self._tell = tell

    def take_over(self, txn, key, giver: bytes, owner: int) -> None:
        """In `txn`: a delete on close another worker's open (`giver`) set on the file is this
        worker's open `owner`'s from now on."""
        record = txn.get(_file(key), db=self.db)
        if record is not None and bytes(record[:OWNER.size]) == giver:
            txn.put(_file(key), self.store.owner(owner) + bytes(record[OWNER.size:]), db=self.db)

    def is_pending(self, key) -> bool:
        with self.store.read() as txn:
            return txn.get(_file(key), db=self.db) is not None

    def mark(self, o) -> None:
        # not refused when nearly full: a close marks too, and one per file is bounded by opens
        others = set()
        with self.store.write() as txn:
            txn.put(_file(o.key), _pending_record(self.store.owner(id(o)), o), db=self.db)
            if o.is_dir and self._tell is not None:     # the workers with opens of it
                others = {WORKER.unpack_from(who)[0]
                          for who, _wants, _share in self._share_modes._modes(txn, o.key)}
        self._setters[o.key] = o
        others.discard(self.store.worker)
        for worker in sorted(others):
            self._tell(worker, tuple(o.key))

    def withdraw(self, o) -> None:
        with self.store.write() as txn:
            record = txn.get(_file(o.key), db=self.db)
            if record is not None and record[:OWNER.size] == self.store.owner(id(o)):
                txn.delete(_file(o.key), db=self.db)
        if self._setters.get(o.key) is o:
            del self._setters[o.key]

    def take(self, o):
        """`o` has closed (its share mode is gone): what is to be deleted now (the open that
        asked for it, or a `RecordedDelete`), when a delete is pending and no open of any
        worker is left; else None."""
        file = _file(o.key)
        with self.store.write() as txn:
            record = txn.get(file, db=self.db)
            if record is None:
                last = False
            else:
                record = bytes(record)
                last = not _has_prefix(txn, self.opens, file)
                if last:
                    txn.delete(file, db=self.db)
                elif record[:OWNER.size] == self.store.owner(id(o)):
                    # its id may be reused: the record names no open now, only the name
                    txn.put(file, self.store.owner(0) + record[OWNER.size:], db=self.db)
        setter_open = self._setters.get(o.key)
        if setter_open is o or last:
            self._setters.pop(o.key, None)
        if not last:
            return None
        if setter_open is not None:
            return setter_open
        return self._recorded(o, record)

    @staticmethod
    def _recorded(closer, record: bytes):
        flags = record[OWNER.size] if len(record) > OWNER.size else 0
        path = os.fsdecode(record[OWNER.size + 1:])
        root = closer.tree.fs.root if closer.tree is not None and closer.tree.fs is not None else None
        if root is None or not path.startswith(root.rstrip("/") + "/"):
            log.warning("delete on close of %s not done: it was asked for in another share "
                        "than the last open's", path or "a file")
            return None
        parts = path[len(root.rstrip("/")) + 1:].split("/")
        if any(p in ("", ".", "..") for p in parts):
            log.warning("delete on close of %s not done: not a plain name", path)
            return None
        return RecordedDelete(closer, parts, bool(flags & IS_DIR), bool(flags & IS_STREAM), closer.key)


# -- opens by path --------------------------------------------------------------------------
class SharedOpenPaths:
    """server_state's `OpenPaths` over the store: whether any open of any worker names a
    file below a directory, by the path it has now (a rename changes it: through this
    worker, at once; through another, once this worker is told). `tell(worker, key)`: a
    rename of the file `key` is recorded for `worker` (sent once committed)."""

    def __init__(self, store: Store, tell=None):
        self.store = store
        self.db = store.db[b"paths"]
        self.renames_db = store.db[b"renames"]
        self._tell = tell
        self._mine: dict = {}           # open -> the entry it added
        self._index = PathIndex()       # the same opens, by their paths now
        self._taking = None             # the entry `take_over` made, until `taken_over`
        self._here = WORKER.pack(store.worker)
        # a key holds this much of the path at most (LMDB's keys are at most 511 bytes: a
        # longer one was refused, and with it every open more than 500 bytes below /)
        self._in_key = store.env.max_key_size() - 1 - OWNER.size

    def add(self, o) -> None:
        path = os.fsencode(o.path())
        entry = path[:self._in_key] + b"\0" + OWNER.pack(self.store.worker, id(o) & 0xFFFFFFFFFFFFFFFF)
        # (the file: its leases, `others_below`; and the whole path where the key cut it)
        value = _file(o.key) + (path if len(path) > self._in_key else b"")
        with self.store.write(grows=True) as txn:
            txn.put(entry, value, db=self.db)
        self._mine[o] = entry
        self._index.add(o)

    def moved(self, o) -> None:
        self._index.moved(o)
        entry = self._mine.get(o)
        if entry is None:
            return
        path = os.fsencode(o.path())
        moved = path[:self._in_key] + b"\0" + entry[-OWNER.size:]
        cut = len(path) > self._in_key      # (then the value holds the whole path)
        if moved == entry and not cut:
            return                          # (its entry says its path already)
        with self.store.write() as txn:
            txn.delete(entry, db=self.db)
            txn.put(moved, _file(o.key) + (path if cut else b""), db=self.db)
        self._mine[o] = moved

    def renamed(self, o, old_path: str) -> None:
        """`o`'s file was renamed from `old_path` through this worker: each other worker with
        an open of it under that name is told (a record, then a hint: `take_renames`). A
        worker not yet caught up with an earlier rename of the file to that name has that
        record carried on to the new name instead (its opens, and its entries here, still
        bear the name before it): a file renamed again and again leaves one record per
        worker, however far behind the worker is."""
        old = os.fsencode(old_path)
        new = os.fsencode(o.path())
        file = _file(o.key)
        told, kept = set(), {}
        # (not refused when the store is nearly full, as new opens are: the rename is made,
        # and its records are bounded by the opens already there)
        with self.store.write() as txn:
            for k, first, last in _renames(txn, self.renames_db, file):
                worker = WORKER.unpack_from(k, FILE.size)[0]
                kept[worker] = kept.get(worker, 0) + 1
                if last == old:
                    txn.put(k, first + b"\0" + new, db=self.renames_db)
                    told.add(worker)
            others = {worker for worker in self._workers_with(txn, file, old)
                      if worker not in told and kept.get(worker, 0) < MAX_RENAMES_KEPT}
            for worker in others:
                number = RENAME_NUMBER.pack(time.monotonic_ns())
                txn.put(file + WORKER.pack(worker) + number, old + b"\0" + new, db=self.renames_db)
        if self._tell is not None:
            for worker in told | others:
                self._tell(worker, o.key)

    def _workers_with(self, txn, file: bytes, path: bytes) -> set[int]:
        """The other workers with an open of `file` entered under `path`."""
        scan = path[:self._in_key] + b"\0"
        found = set()
        cursor = txn.cursor(self.db)
        if cursor.set_range(scan):
            for k, v in cursor:
                if not k.startswith(scan) or len(k) != len(scan) + OWNER.size:
                    break
                worker = WORKER.unpack_from(k, len(scan))[0]
                if worker != self.store.worker and bytes(v[:FILE.size]) == file and \
                        (len(path) <= self._in_key or bytes(v[FILE.size:]) == path):
                    found.add(worker)
        return found

    def take_renames(self, key) -> list[tuple[str, str]]:
        """The renames of the file `key` recorded for this worker (`renamed`), oldest first,
        as (old path, new path); taken out of the store."""
        prefix = _file(key) + self._here
        with self.store.read() as txn:      # (the usual answer, without the writers' lock)
            if not _has_prefix(txn, self.renames_db, prefix):
                return []
        with self.store.write() as txn:
            taken = _renames(txn, self.renames_db, prefix)
            for k, _old, _new in taken:
                txn.delete(k, db=self.renames_db)
        return [(os.fsdecode(old), os.fsdecode(new)) for _k, old, new in taken]

    def entry_of(self, o) -> bytes | None:
        """The store's key of this worker's open (another worker taking it over renames it)."""
        return self._mine.get(o)

    def take_over(self, txn, entry: bytes, o) -> bool:
        """In `txn`: another worker's entry (its key `entry`) becomes this worker's open
        `o`'s; `taken_over` once committed. False where there is no such entry."""
        value = txn.get(entry, db=self.db) if len(entry) > OWNER.size else None
        if value is None:
            return False
        txn.delete(entry, db=self.db)
        mine = entry[:-OWNER.size] + OWNER.pack(self.store.worker, id(o) & 0xFFFFFFFFFFFFFFFF)
        txn.put(mine, bytes(value), db=self.db)
        self._taking = mine
        return True

    def taken_over(self, o) -> None:
        self._mine[o] = self._taking
        self._index.add(o)

    def let_go(self, o) -> None:
        """Another worker took the open over (and its entry): forgotten here."""
        self._index.discard(o)
        self._mine.pop(o, None)

    def below(self, path: str):
        return self._index.below(path)

    def at(self, path: str) -> list:
        return self._index.at(path)

    def discard(self, o) -> None:
        self._index.discard(o)
        entry = self._mine.pop(o, None)
        if entry is not None:
            with self.store.write() as txn:
                txn.delete(entry, db=self.db)

    def any_below(self, path: str) -> bool:
        if self._index.any_below(path):
            return True
        return any(True for _file_key in self._others_below(os.fsencode(path + "/")))

    def others_below(self, path: str) -> list[tuple]:
        """The files (keys) the other workers' opens below the directory `path` name: their
        leases lose HANDLE caching before it is renamed."""
        return list(self._others_below(os.fsencode(path + "/")))

    def _others_below(self, prefix: bytes):
        """The files of the other workers' opens whose paths start with `prefix`."""
        scan = prefix[:self._in_key]
        with self.store.read() as txn:
            cursor = txn.cursor(self.db)
            if not cursor.set_range(scan):
                return
            for k, v in cursor:
                if not k.startswith(scan):
                    return
                if k[-OWNER.size:-OWNER.size + WORKER.size] == self._here or len(v) < FILE.size:
                    continue
                if len(prefix) > len(scan) and not bytes(v[FILE.size:]).startswith(prefix):
                    continue        # (the key holds only the start of both: the path says)
                yield FILE.unpack_from(v)

    def __iter__(self):
        return iter(self._mine)


# -- tree connects and connections ----------------------------------------------------------
class _Counts:
    """Counts per name, one entry per worker; a limit bounds the sum over the workers."""

    def __init__(self, store: Store, db: bytes):
        self.store = store
        self.db = store.db[db]

    def _total(self, txn, name: bytes) -> int:
        prefix = name + b"\0"
        cursor = txn.cursor(self.db)
        total = 0
        if cursor.set_range(prefix):
            for k, v in cursor:
                if not k.startswith(prefix) or len(k) != len(prefix) + WORKER.size:
                    break
                total += COUNT.unpack(v)[0]
        return total

    def _add(self, txn, name: bytes, by: int) -> None:
        key = name + b"\0" + WORKER.pack(self.store.worker)
        v = txn.get(key, db=self.db)
        n = (COUNT.unpack(v)[0] if v is not None else 0) + by
        if n > 0:
            txn.put(key, COUNT.pack(n), db=self.db)
        else:
            txn.delete(key, db=self.db)


class SharedTreeCounts(_Counts):
    """server_state's `TreeCounts` over the store: `max connections` counts every worker's
    tree connects to the share."""

    def __init__(self, store: Store):
        super().__init__(store, b"trees")

    def connect(self, share: str, limit: int) -> bool:
        name = share.encode()
        with self.store.write(grows=True) as txn:
            if limit and self._total(txn, name) >= limit:
                return False
            self._add(txn, name, 1)
        return True

    def disconnect(self, share: str) -> None:
        with self.store.write() as txn:
            self._add(txn, share.encode(), -1)


class SharedConnections(_Counts):
    """The server's connection bounds over every worker: `max smbd processes` (all
    connections) and `max connections per client` (per client address)."""

    def __init__(self, store: Store):
        super().__init__(store, b"conns")

    def admit(self, address: str, most: int, most_per_address: int) -> str | None:
        """Counts a new connection from `address`, or says why it is refused (nothing
        counted then)."""
        name = address.encode()
        try:
            with self.store.write(grows=True) as txn:
                return self._admit(txn, name, most, most_per_address)
        except StoreFull:
            return "the shared store is full"

    def _admit(self, txn, name: bytes, most: int, most_per_address: int) -> str | None:
        total = self._total(txn, b"")
        if most and total >= most:
            return f"{total} connections in all, all workers (max smbd processes = {most})"
        held = self._total(txn, name)
        if most_per_address and held >= most_per_address:
            return (f"{held} connections from it, all workers "
                    f"(max connections per client = {most_per_address})")
        self._add(txn, b"", 1)
        self._add(txn, name, 1)
        return None

    def adopt(self, address: str) -> None:
        """Counts a connection another worker counted until now and hands over (it goes
        from that worker's count when it forgets the connection): not checked again, it
        was admitted once."""
        with self.store.write() as txn:
            self._add(txn, b"", 1)
            self._add(txn, address.encode(), 1)

    def leave(self, address: str) -> None:
        with self.store.write() as txn:
            self._add(txn, b"", -1)
            self._add(txn, address.encode(), -1)


# -- byte-range locks -----------------------------------------------------------------------
def _log_locks(txn, dbs, file: bytes, changes) -> int | None:
    """Appends lock changes ((worker, how many added or (negative) removed, offset, length,
    exclusive) each) to the file's log in ``lockhead``/``locklog``, where each worker's
    mirror of the others' locks on the file catches up. The log keeps a change per
    LOG_KEPT_PER_LOCK locks of the file: a mirror that fell further behind is read again
    from ``locks`` (O(locks)), paid for by those changes. Its numbering starts at random, so a
    log made again after one that ended never continues an old mirror. Returns the number
    of the first change appended, or None where the log ended (no lock left)."""
    heads, log = dbs[b"lockhead"], dbs[b"locklog"]
    head = txn.get(file, db=heads)
    if head is None:
        seq = first = int.from_bytes(os.urandom(6), "big")
        count = 0
    else:
        seq, first, count = LOG_HEAD.unpack(head)
    appended = seq
    for change in changes:
        txn.put(file + LOG_SEQ.pack(seq), LOG_ENTRY.pack(*change), db=log)
        seq += 1
        count += change[1]
    if count <= 0:              # no lock left on the file: nor its log
        cursor = txn.cursor(log)
        if cursor.set_range(file):
            while cursor.key()[:FILE.size] == file:
                if not cursor.delete():
                    break
        txn.delete(file, db=heads)
        return None
    while seq - first > max(LOG_KEPT_LEAST, count // LOG_KEPT_PER_LOCK):
        txn.delete(file + LOG_SEQ.pack(first), db=log)
        first += 1
    txn.put(file, LOG_HEAD.pack(seq, first, count), db=heads)
    return appended


class _Mirror:
    """The other workers' locks on one file as of the change numbered `seq` of its log:
    counted ranges (smb.locks.CountedRanges) of all of them and of the exclusive ones, so that a
    check is O(log n) whatever they hold."""

    def __init__(self, seq: int, others=()):
        """`others`: (offset, length, exclusive, how many) each."""
        self.seq = seq
        every = [(offset, length) for offset, length, _x, count in others for _ in range(count)]
        exclusive = [(offset, length) for offset, length, x, count in others if x for _ in range(count)]
        self.every, self.exclusive = CountedRanges.of(every), CountedRanges.of(exclusive)

    def size(self) -> int:
        return self.every.starts.size + self.every.points.size

    def apply(self, delta: int, offset: int, length: int, exclusive: bool) -> None:
        for _ in range(abs(delta)):
            for ranges in ((self.every, self.exclusive) if exclusive else (self.every,)):
                (ranges.add if delta > 0 else ranges.remove)(offset, length)

    def conflicts(self, offset: int, length: int, exclusive: bool) -> bool:
        # an exclusive request conflicts with every overlapping lock, a shared one with an
        # exclusive one (another worker's lock is always another open's)
        return bool((self.every if exclusive else self.exclusive).overlapping(offset, length))

    def block_io(self, offset: int, length: int, write: bool) -> bool:
        """Whether they refuse a READ (exclusive ones) or a WRITE (any) of the range;
        zero-length locks never do."""
        return bool((self.every if write else self.exclusive).overlapping(offset, length, points=False))


class SharedByteRangeLocks:
    """`smb.locks.ByteRangeLocks` across workers: this worker's locks are kept as they are
    with one worker (an in-memory `ByteRangeLocks`, which has all of Windows' rules between
    opens), and every lock is also recorded in the store, where the other workers check
    theirs against it; a lock of another worker is always another open's.

    Each worker checks against a mirror of the other workers' locks on a file, brought up to
    date from the file's log of changes (`_log_locks`) before each check: O(log n) per
    check and per change seen, where reading every lock of the file at each check (as the
    first version did) let one client's 16,384 locks through one worker make another
    worker's 128 READs or LOCKs of one compound take 3 to 6 s, and one LOCK of 4,096
    elements 45 s, inside the store's write transaction that every worker's CREATEs wait
    for. At most MIRRORS files and MIRRORED locks are mirrored at once (the least recently
    checked go first; a mirror is read again whole when next needed). A mirror never
    counts the changes this worker appended in a write transaction not yet committed (they
    are its own, and the numbers go to other changes if it is undone).

    A blocking lock waiting for a lock of another worker is retried every RETRY seconds
    (a release in this worker retries it at once, as with one worker)."""

    RETRY = 0.1
    MIRRORS, MIRRORED = 1024, 1 << 18

    def __init__(self, store: Store, call_later):
        self.store = store
        self.db = store.db[b"locks"]
        self.local = ByteRangeLocks()
        self._call_later = call_later        # (delay, callback) -> a handle with cancel()
        self._waiting: dict = {}             # key -> {retry: None}
        self._mirrors: dict = {}             # file -> _Mirror, the least recently used first
        # the write transaction this worker last logged changes in, and for each file the
        # number of the first change it appended there
        self._logging_in, self._logged = None, {}
        self._timer = None

    def _key(self, key, owner: int, offset: int, length: int, exclusive: bool) -> bytes:
        return _file(key) + self.store.owner(owner) + RANGE.pack(offset, length, exclusive)

    def _others(self, txn, key):
        """The locks other workers hold on the file: (offset, length, exclusive, count)."""
        prefix = _file(key)
        here = prefix + WORKER.pack(self.store.worker)
        cursor = txn.cursor(self.db)
        if not cursor.set_range(prefix):
            return
        while True:
            k = cursor.key()
            if not k.startswith(prefix):
                return
            if k.startswith(here):           # this worker's own: skip past them
                if not cursor.set_range(_file(key) + WORKER.pack(self.store.worker + 1)):
                    return
                continue
            offset, length, exclusive = RANGE.unpack_from(k, FILE.size + OWNER.size)
            yield offset, length, bool(exclusive), COUNT.unpack(cursor.value())[0]
            if not cursor.next():
                return

    def _mirror(self, txn, key) -> _Mirror | None:
        """The other workers' locks on the file, up to date in `txn`; None: nobody's."""
        file = _file(key)
        head = txn.get(file, db=self.store.db[b"lockhead"])
        mirror = self._mirrors.pop(file, None)
        if head is None:
            return None
        seq, first, _count = LOG_HEAD.unpack(head)
        if txn is self._logging_in:         # up to this worker's changes not committed yet
            seq = self._logged.get(file, seq)
        if mirror is None or not first <= mirror.seq <= seq or not self._caught_up(txn, file, mirror, seq):
            mirror = _Mirror(seq, list(self._others(txn, key)))
            self._evict(mirror.size())
        self._mirrors[file] = mirror
        return mirror

    def _evict(self, coming: int) -> None:
        """Room for a mirror of `coming` locks: the least recently used go while the
        mirrors hold more than MIRRORED locks in all, or number more than MIRRORS."""
        total = coming + sum(m.size() for m in self._mirrors.values())
        while self._mirrors and (total > self.MIRRORED or len(self._mirrors) >= self.MIRRORS):
            total -= self._mirrors.pop(next(iter(self._mirrors))).size()

    def _caught_up(self, txn, file: bytes, mirror: _Mirror, seq: int) -> bool:
        if mirror.seq == seq:
            return True
        cursor = txn.cursor(self.store.db[b"locklog"])
        if cursor.set_key(file + LOG_SEQ.pack(mirror.seq)):
            for value in cursor.iternext(keys=False):
                worker, delta, offset, length, exclusive = LOG_ENTRY.unpack(value)
                if worker != self.store.worker:
                    mirror.apply(delta, offset, length, bool(exclusive))
                mirror.seq += 1
                if mirror.seq == seq:
                    break
        return mirror.seq == seq        # (else the mirror is read again whole)

    def _log(self, txn, key, changes) -> None:
        if txn is not self._logging_in:
            self._logging_in, self._logged = txn, {}
        file = _file(key)
        appended = _log_locks(txn, self.store.db, file, changes)
        if appended is None:
            self._logged.pop(file, None)    # (a log made again in this transaction is all ours)
        else:
            self._logged.setdefault(file, appended)

    def conflicts(self, key, offset: int, length: int, exclusive: bool, owner: int) -> bool:
        if self.local.conflicts(key, offset, length, exclusive, owner):
            return True
        with self.store.read() as txn:
            others = self._mirror(txn, key)
            return others is not None and others.conflicts(offset, length, exclusive)

    def on_file(self, key) -> int:
        """How many locks the file has: this worker's and the other workers'."""
        with self.store.read() as txn:
            others = self._mirror(txn, key)
        return self.local.on_file(key) + (others.size() if others is not None else 0)

    def acquire_all(self, key, wanted: list[Lock], confirm=None) -> bool:
        with self.store.write(grows=True) as txn:      # other workers wait meanwhile
            others = self._mirror(txn, key)
            if others is not None and any(others.conflicts(lk.offset, lk.length, lk.exclusive)
                                          for lk in wanted):
                return False
            if not self.local.acquire_all(key, wanted, confirm):
                return False
            try:
                for lk in wanted:
                    k = self._key(key, lk.owner, lk.offset, lk.length, lk.exclusive)
                    v = txn.get(k, db=self.db)
                    txn.put(k, COUNT.pack((COUNT.unpack(v)[0] if v else 0) + 1), db=self.db)
                self._log(txn, key, [(self.store.worker, 1, lk.offset, lk.length, lk.exclusive)
                                     for lk in wanted])
            except BaseException:
                for lk in wanted:      # not recorded: not held
                    self.local.release(key, lk.offset, lk.length, lk.owner, wake_waiters=False)
                raise
        return True

    def release(self, key, offset: int, length: int, owner: int, wake_waiters: bool = True) -> bool:
        if not self.local.release(key, offset, length, owner, wake_waiters=False):
            return False
        with self.store.write() as txn:
            for exclusive in (True, False):          # the exclusive one first, as locally
                if self._unrecord(txn, key, owner, offset, length, exclusive):
                    self._log(txn, key, [(self.store.worker, -1, offset, length, exclusive)])
                    break
        if wake_waiters:
            self.wake(key)
        return True

    def give_back(self, key, taken: list[Lock]) -> int:
        back = [lk for lk in taken if self.local.give_back(key, [lk])]
        if back:
            with self.store.write() as txn:
                gone = [(self.store.worker, -1, lk.offset, lk.length, lk.exclusive) for lk in back
                        if self._unrecord(txn, key, lk.owner, lk.offset, lk.length, lk.exclusive)]
                if gone:
                    self._log(txn, key, gone)
        return len(back)

    def _unrecord(self, txn, key, owner: int, offset: int, length: int, exclusive: bool) -> bool:
        """In `txn`: one lock of the open with exactly this range and kind less in the store
        (not logged); False where it records none."""
        k = self._key(key, owner, offset, length, exclusive)
        v = txn.get(k, db=self.db)
        if v is None:
            return False
        n = COUNT.unpack(v)[0] - 1
        if n:
            txn.put(k, COUNT.pack(n), db=self.db)
        else:
            txn.delete(k, db=self.db)
        return True

    def held(self, key, owner: int, within: tuple[int, int] | None = None) -> list[Lock]:
        return self.local.held(key, owner, within)

    def take_over(self, txn, key, giver: bytes, owner: int) -> list[tuple]:
        """In `txn`: the locks another worker's open (`giver`: its owner bytes) holds on the
        file become this worker's open `owner`'s (logged as released there and taken here);
        (offset, length, exclusive, how many) each, for `taken_over` once committed."""
        prefix = _file(key) + giver
        moved = []
        cursor = txn.cursor(self.db)
        if cursor.set_range(prefix):
            while cursor.key().startswith(prefix):
                offset, length, exclusive = RANGE.unpack_from(cursor.key(), len(prefix))
                moved.append((offset, length, bool(exclusive), COUNT.unpack(cursor.value())[0]))
                if not cursor.delete():
                    break
        for offset, length, exclusive, n in moved:
            txn.put(self._key(key, owner, offset, length, exclusive), COUNT.pack(n), db=self.db)
        if moved:
            worker = WORKER.unpack_from(giver)[0]
            self._log(txn, key, [(worker, -n, offset, length, exclusive) for offset, length, exclusive, n in moved]
                      + [(self.store.worker, n, offset, length, exclusive) for offset, length, exclusive, n in moved])
        return moved

    def taken_over(self, key, owner: int, moved: list[tuple]) -> None:
        for offset, length, exclusive, n in moved:
            for _ in range(n):
                if not self.local.acquire_all(key, [Lock(offset, length, exclusive, owner)]):
                    log.error("byte-range locks: a lock handed over conflicts here; not kept locally")

    def let_go(self, key, owner: int) -> int:
        """Another worker took the open's locks over (the store's records): forgotten here."""
        return self.local.release_owner(key, owner)

    def release_owner(self, key, owner: int) -> int:
        if self.local.count(key, owner):
            prefix = _file(key) + self.store.owner(owner)
            with self.store.write() as txn:
                cursor = txn.cursor(self.db)
                gone = []
                if cursor.set_range(prefix):
                    while cursor.key().startswith(prefix):
                        offset, length, exclusive = RANGE.unpack_from(cursor.key(), len(prefix))
                        gone.append((self.store.worker, -COUNT.unpack(cursor.value())[0], offset,
                                     length, exclusive))
                        if not cursor.delete():
                            break
                if gone:
                    self._log(txn, key, gone)
        return self.local.release_owner(key, owner)

    def count(self, key, owner: int) -> int:
        return self.local.count(key, owner)

    def io_allowed(self, key, offset: int, length: int, owner: int, write: bool) -> bool:
        if not length:
            return True
        if not self.local.io_allowed(key, offset, length, owner, write):
            return False
        with self.store.read() as txn:
            others = self._mirror(txn, key)
            return others is None or not others.block_io(offset, length, write)

    def wait(self, key, retry) -> None:
        self.local.wait(key, retry)
        self._waiting.setdefault(key, {})[retry] = None
        if self._timer is None:
            self._timer = self._call_later(self.RETRY, self._poll)

    def unwait(self, key, retry) -> None:
        self.local.unwait(key, retry)
        waiting = self._waiting.get(key)
        if waiting is not None:
            waiting.pop(retry, None)
            if not waiting:
                del self._waiting[key]

    def wake(self, key) -> None:
        self.local.wake(key)

    def idle(self, key) -> bool:
        if not self.local.idle(key):
            return False
        with self.store.read() as txn:
            return not _has_prefix(txn, self.db, _file(key))

    def _poll(self) -> None:
        """Lets every waiting request retry: a release in another worker wakes nobody here."""
        self._timer = None
        for key in list(self._waiting):
            try:
                self.local.wake(key)
            except Exception:       # one request's fault must not stop the others' retries
                log.exception("blocking lock retry failed")
        if self._waiting and self._timer is None:
            self._timer = self._call_later(self.RETRY, self._poll)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
