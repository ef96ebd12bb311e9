"""What every connection of one server shares: the one owner of state that is not a single
connection's (Samba keeps it in its locking.tdb, brlock.tdb and notify databases).

The server creates one `ServerState` and hands it to each `Connection`; a connection built
alone (a test) gets its own. Nothing else in the core keeps state beyond a connection.

Its interface, which is all the commands use:

- ``locks`` (`ByteRangeLocks`): byte-range locks by file, and the blocking requests waiting
  for a release (LOCK, READ and WRITE checks);
- ``share_modes`` (`ShareModes`): the access and share mode of every open by file (CREATE,
  rename, whether a file has a writer);
- ``watches`` (`ChangeWatches`): CHANGE_NOTIFY watches, and the changes posted to them;
- ``oplocks`` (`Oplocks`): every open's oplock by file, the breaks sent and the CREATEs held
  until they are answered (CREATE, OPLOCK_BREAK, and WRITE, LOCK, truncation for level II);
- the opens themselves: `register_open` (refused on a sharing violation), `close_open` (what
  the close leaves to do), `has_open_below` (a directory with an open file inside cannot be
  renamed);
- delete on close that other opens see: `is_delete_pending`, `set_delete_pending`;
- tree connects per share, for `max connections`: `connect_tree`, `disconnect_tree`;
- ``sessions`` (`SessionRegistry`): every session by id, the clients by ClientGuid, the
  server's GUID (multichannel: session binding and PreviousSessionId reach across connections);
- ``durable`` (`DurableOpens`): the durable opens, attached or detached from a session that is
  gone, and the CREATE replay cache by CreateGuid (CREATE with DHnQ/DH2Q, DHnC/DH2C, replays;
  connection loss and LOGOFF detach; the sweep expires them);
- ``write_times`` (`WriteTimes`): the write times shown in place of the kernel's while a
  handle's writes are still to show (WRITE, FLUSH, SET_INFO, CLOSE and every report of times);
- ``tunnel`` (`NameTunnel`): long names just deleted or renamed away, by their 8.3 short
  names (CREATE or a rename naming such a short name gets the long name back).

Files are named by their key, (st_dev, st_ino); an open by its `Open` object (its owner id in
the lock and share-mode tables is ``id(open)``).
"""
from __future__ import annotations

import logging
import uuid
from bisect import bisect_left, insort
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from smbring.smb.channels import Client, NetworkInterface
from smbring.smb.durable import DurableOpens
from smbring.smb.listings import Listings
from smbring.smb.locks import ByteRangeLocks
from smbring.smb.posix_locks import KernelLockCredit
from smbring.smb.notify import ChangeWatches
from smbring.smb.oplocks import Oplocks
from smbring.smb.sharemodes import ShareModes
from smbring.smb.tunnel import NameTunnel
from smbring.smb.write_times import WriteTimes
from smbring.vfs.shadow_copy import SnapshotLists

if TYPE_CHECKING:
    from smbring.smb.state import Open, Session

log = logging.getLogger("smbring.smb")


class Closed(NamedTuple):
    """What closing an open leaves to its connection (a tuple: made at every CLOSE)."""

    locks_released: int             # byte-range locks the open still held
    delete: Open | None = None      # the open whose file is now to be deleted (its last close)


class ServerState:
    """The one owner of cross-connection state. The tables that must be seen by every
    process of a server with several workers can be handed in (`backends`: the server's
    shared store, see server.shared_store); by default they are this process's own."""

    def __init__(self, oplocks: Oplocks | None = None, backends: Backends | None = None) -> None:
        backends = backends or Backends()
        self.locks = backends.locks if backends.locks is not None else ByteRangeLocks()
        self.share_modes = backends.share_modes if backends.share_modes is not None else ShareModes()
        self.watches = ChangeWatches()
        self.oplocks = (oplocks if oplocks is not None else backends.oplocks if backends.oplocks
                        is not None else Oplocks())
        self.durable = DurableOpens()
        # blocking LOCKs on shares whose locks are kernel locks too (smb.posix_locks): a lock
        # another program holds may be what they wait for, and its release wakes nothing
        # here, so the server retries them now and then (retry_kernel_lock_waits)
        self.kernel_lock_waits: dict = {}       # retry -> None, in the order they came
        self.write_times = WriteTimes()
        self.tunnel = NameTunnel()      # long names just removed, by their short names
        self.snapshots = SnapshotLists()    # each shadow_copy2 share's snapshots, as last listed
        self._opens = backends.open_paths if backends.open_paths is not None else OpenPaths()
        # files to delete when their last open closes, as delete on close works on Windows
        # (other opens keep the file until they close too)
        self._delete_pending = (backends.delete_pending if backends.delete_pending is not None
                                else DeletePending(self.share_modes))
        self._trees = backends.trees if backends.trees is not None else TreeCounts()
        # one step over several tables: the shared store makes it one transaction (alone,
        # None: the steps are made as they are, with no context entered for every open and close)
        self._atomic = backends.atomic
        # the other workers (see Backends.peers): end_session(worker, session_id, owner, done),
        # close_app_instance(app_instance, owner, done), each calling done(result) once
        # answered or given up on (a bounded wait)
        self.peers = backends.peers
        self.sessions = (backends.sessions if backends.sessions is not None   # (the section at the end)
                         else SessionRegistry())
        # byte-range locks held, by the user they are counted to (Open.lock_owner): `max
        # locks per user` (this process's: each worker counts its own)
        self._user_locks: dict[str, int] = {}
        # what each user's LOCKs may still cost the kernel, where locks are kernel locks too
        self.kernel_lock_credit = KernelLockCredit(self.oplocks.clock)
        # opens and pipes, by the user they are counted to (Open.counted_for): `max open files
        # per user`
        self._user_opens: dict[str, int] = {}
        # every user's together, and the most this process may hold: each open is a descriptor
        # of this one process, and the descriptors that connections, logs and the store need
        # must stay free (the server sets it from its open files limit; 0: no bound)
        self._opens_held = 0
        self.max_opens = 0
        self._warned_full = False
        # the names directory scans keep, per user: `max listed names per user`
        self.listings = Listings()
        # the WRITEs of append-only opens handed to the shell and not yet done, by file: (the
        # end of the last, how many): the next one goes after them, not over one of them
        # still on its way to the file (this process's: each worker's opens append alone)
        self._appends: dict[tuple, tuple[int, int]] = {}

    @property
    def open_paths(self):
        """The opens by path (`OpenPaths`, or the store's: server.moves hands opens over)."""
        return self._opens

    @property
    def pending_deletes(self):
        """The files to delete at their last close (`DeletePending`, or the store's)."""
        return self._delete_pending

    def user_locks(self, owner: str) -> int:
        return self._user_locks.get(owner, 0)

    def count_user_locks(self, owner: str, n: int) -> None:
        _count(self._user_locks, owner, n)

    def user_opens(self, owner: str) -> int:
        return self._user_opens.get(owner, 0)

    def count_user_opens(self, owner: str, n: int) -> None:
        _count(self._user_opens, owner, n)
        self._opens_held += n

    def opens_full(self) -> bool:
        """Whether this process holds as many opens as its descriptors allow (logged once
        each time it fills)."""
        if not self.max_opens or self._opens_held < self.max_opens:
            self._warned_full = False
            return False
        if not self._warned_full:
            self._warned_full = True
            log.warning("%d files open, the most this process's open files limit allows with room "
                        "for its connections: further opens are refused until some close",
                        self._opens_held)
        return True

    def append_offset(self, key, size: int) -> int:
        """Where an append-only open's next WRITE to the file goes: its end (`size`), or past
        the appends still under way on it."""
        return max(size, self._appends.get(key, (0, 0))[0])

    def appending(self, key, end: int) -> None:
        """An append ending at `end` is handed to the shell (until `appended`)."""
        last, n = self._appends.get(key, (0, 0))
        self._appends[key] = (max(last, end), n + 1)

    def appended(self, key) -> None:
        """One of the file's appends is done (written or failed)."""
        last, n = self._appends[key]
        if n == 1:
            del self._appends[key]
        else:
            self._appends[key] = (last, n - 1)

    def connect_tree(self, share: str, limit: int) -> bool:
        """Counts a new tree connect to the share; False (and nothing counted) when `limit`
        (smb.conf's `max connections`; 0: no bound) are connected already."""
        return self._trees.connect(share, limit)

    def disconnect_tree(self, share: str) -> None:
        self._trees.disconnect(share)

    def register_open(self, o: Open, access: int, share: int) -> bool:
        """Adds a new open of the file `o.key` with its access and share mode; False (and
        nothing added) when that is a sharing violation with the file's other opens."""
        if self._atomic is None:
            added = self._add_open(o, access, share)
            if added:
                self.oplocks.add(o, access)
            return added
        with self._atomic():        # (its share mode and its oplock record: one step)
            added = self._add_open(o, access, share)
            if added:
                self.oplocks.add(o, access)
        return added

    def _add_open(self, o: Open, access: int, share: int) -> bool:
        if not self.share_modes.check_and_add(o.key, id(o), access, share):
            return False
        if o.file_key:
            # a stream's open is an open of its file too, one that takes no part in share
            # modes (as Samba's base_fsp): the file is not deleted under it (a delete on
            # close waits for it) and opens of the file see it
            self.share_modes.check_and_add(o.file_key, id(o), 0, 7)
        self._opens.add(o)
        return True

    def close_open(self, o: Open) -> Closed:
        """Forgets a closing open: its watch, its byte-range locks (requests waiting for them
        retry), its share mode. A delete on close it asked for becomes pending for the file;
        when this was the file's last open, `Closed.delete` names what to delete."""
        if self._atomic is None:
            return self._forget(o)
        with self._atomic():
            return self._forget(o)

    def watch_leased_directory(self, o: Open) -> None:
        """`o`, an open of a directory, holds a directory lease: the directory is watched by
        the kernel too (where the shell has a ChangeWatcher), so that a change another
        program makes there breaks the lease, until the open closes."""
        if o.lease_watched is None:
            o.lease_watched = o.path()
            self.watches.lease_held(o.lease_watched, o.key, True)

    def unwatch_leased_directory(self, o: Open) -> None:
        """`watch_leased_directory`'s end, at the open's close."""
        if o.lease_watched is not None:
            self.watches.lease_held(o.lease_watched, o.key, False)
            o.lease_watched = None

    def _forget(self, o: Open) -> Closed:
        if o.delete_on_close:
            # (the name the delete goes by is the file's now: with workers, a rename through
            # another one is caught up with here, should its hint not have come)
            self.catch_up_renames(o.key)
        self._opens.discard(o)
        self.listings.forget(o)
        if o.watch is not None:
            self.watches.remove(o.watch)
        self.unwatch_leased_directory(o)
        released = self.locks.release_owner(o.key, id(o))
        if o.delete_on_close:
            self._delete_pending.mark(o)
            if o.is_dir:
                self.watches.delete_pending(o.key)    # waiting change notifies end
        self.share_modes.remove(o.key, id(o))
        self.oplocks.remove(o)
        self.durable.forget(o)
        victim = self._delete_pending.take(o)
        if o.file_key:      # its file's last open, where the file's delete waited for it
            self.share_modes.remove(o.file_key, id(o))
            # (deleting the file deletes its streams: this one's own delete with them)
            victim = self._delete_pending.take(FileOfStream(o.file_key, o.tree)) or victim
        return Closed(released, victim)

    def retry_kernel_lock_waits(self) -> None:
        """Lets the users' credits for the kernel's lock work grow (KernelLockCredit.tick),
        then every blocking LOCK that another program's lock, or its user's spent credit,
        may hold up try again (the server's sweep, at most a second apart)."""
        self.kernel_lock_credit.tick()
        for retry in list(self.kernel_lock_waits):
            if retry in self.kernel_lock_waits:     # (not ended by an earlier retry meanwhile)
                retry()

    def has_open_below(self, path: str) -> bool:
        """Whether any open (of any connection) names a file below the directory `path`
        (absolute, as `Open.path()` gives it)."""
        return self._opens.any_below(path)

    def renamed(self, o: Open, old_parts: list[str]) -> None:
        """The file open as `o` was renamed from `old_parts` to `o.parts`: its other opens here
        under the same share directory are given the new name too, so that what they do by
        name later (a delete on close, a rename, a change notify) reaches this file, never one
        that took its old name since. With several workers, the other workers' opens are
        given it too, as soon as each is told (`renamed_elsewhere`), and a delete on close
        through one catches up first (`catch_up_renames`)."""
        root = o.tree.fs.root
        old_path = "/".join([root] + old_parts)
        self._opens.moved(o)
        self._follow(o)
        self._give_name(o.key, old_path, root, o.parts, besides=o)
        self._opens.renamed(o, old_path)

    def catch_up_renames(self, key) -> None:
        """This worker's opens of the file `key` take the names other workers gave it
        (`renamed_elsewhere`, in the order they were given; none in one process)."""
        for old_path, new_path in self._opens.take_renames(key):
            self.renamed_elsewhere(key, old_path, new_path)

    def renamed_elsewhere(self, key, old_path: str, new_path: str) -> None:
        """Another worker renamed the file `key` from `old_path` to `new_path` (absolute):
        this worker's opens of it under the old name are given the new one, as `renamed`
        gives them in one process."""
        # (by each share directory its opens are in: one share's may lie inside another's)
        roots = {other.tree.fs.root for other in self._opens.at(old_path)
                 if other.tree is not None and other.tree.fs is not None}
        for root in roots:
            if new_path.startswith(root + "/"):
                self._give_name(key, old_path, root, new_path[len(root) + 1:].split("/"))

    def _give_name(self, key, old_path: str, root: str, parts: list[str], besides=None) -> None:
        """This process's opens of the file `key` at `old_path` in the share directory
        `root` (but `besides`) are at `parts` now."""
        old_parts = old_path[len(root) + 1:].split("/") if old_path != root else []
        for other in self._opens.at(old_path):
            if other is not besides and other.key == key and other.parts == old_parts and \
                    other.tree is not None and other.tree.fs is not None and other.tree.fs.root == root:
                other.parts = other.base_parts = list(parts)
                self._opens.moved(other)
                self._follow(other)

    def _follow(self, o: Open) -> None:
        """The watches of `o`, renamed, follow its file: its change notify's and its
        directory lease's."""
        if o.watch is not None:
            self.watches.moved(o.watch, o.path())
        self._lease_watch_moved(o)

    def _lease_watch_moved(self, o: Open) -> None:
        """A leased directory's open renamed: its lease is watched under the new name (the
        old one no longer leads to it, and a directory made there later is not it). (Other
        workers' opens of it follow through `renamed_elsewhere`.)"""
        if o.lease_watched is not None and o.lease_watched != o.path():
            # (the new name first: with no leased name left between the two calls, the
            # watches would forget the server's recent changes, and take their kernel echo
            # for another program's)
            old, o.lease_watched = o.lease_watched, o.path()
            self.watches.lease_held(o.lease_watched, o.key, True)
            self.watches.lease_held(old, o.key, False)

    def moved(self, o: Open) -> None:
        """`o.parts` changed otherwise (a stream renamed): it is found by its new path."""
        self._opens.moved(o)

    def opens_below(self, path: str) -> list[Open]:
        """This process's opens of files below the directory `path` (their leases are broken
        before it is renamed), and with several workers the other workers' opens there, as
        `OpenedElsewhere` (only their file is known here)."""
        here = list(self._opens.below(path))
        others_below = getattr(self._opens, "others_below", None)
        if others_below is None:
            return here
        return here + [OpenedElsewhere(key) for key in others_below(path)]

    def is_delete_pending(self, key) -> bool:
        """Whether the file will be deleted when its last open closes (new opens are then
        refused with STATUS_DELETE_PENDING)."""
        return self._delete_pending.is_pending(key)

    def set_delete_pending(self, o: Open, pending: bool) -> None:
        """FileDispositionInformation through the open `o`: the delete is pending for every
        open of the file from now on, or withdrawn if `o` had asked for it."""
        if pending:
            self.catch_up_renames(o.key)        # (as `_forget`: the name it goes by is the file's now)
            self._delete_pending.mark(o)
            if o.is_dir:
                self.watches.delete_pending(o.key)    # waiting change notifies end
        else:
            self._delete_pending.withdraw(o)


@dataclass(frozen=True)
class FileOfStream:
    """The file a closing stream's open was an open of too (`DeletePending.take` looks at
    its key; with several workers, at the tree it is reached through)."""

    key: tuple
    tree: object
    stream = None
    is_dir = False


@dataclass(frozen=True)
class OpenedElsewhere:
    """An open of another worker process, known by its file only."""

    key: tuple


@dataclass
class Backends:
    """Tables a ServerState may be given instead of making its own (each with the interface
    of the class named): None makes the in-memory one."""

    share_modes: object = None      # ShareModes
    locks: object = None            # ByteRangeLocks
    delete_pending: object = None   # DeletePending
    trees: object = None            # TreeCounts
    open_paths: object = None       # OpenPaths
    sessions: object = None         # SessionRegistry
    oplocks: object = None          # Oplocks
    # the other workers of a server with several (server.workers): what only they hold is
    # asked of them; None: one process, there are none
    peers: object = None
    atomic: object = None           # () -> a context: the steps inside it are one (a transaction)


class PathIndex:
    """Opens by path: those below a directory, or at a path, in O(log n + those found). An
    open is found under the path it had when added or last `moved` (every change of its
    parts says so). Looking at every open's path instead made each rename of a directory
    cost O(opens of the process), 4 to 5 us each: a compound of 128 renames beside 4,096
    opens of one client held the event loop 2 s."""

    def __init__(self) -> None:
        self._at: dict[Open, str] = {}
        self._by_path: dict[str, dict[Open, None]] = {}
        self._paths: list[str] = []         # those of _by_path, sorted: a directory's below it are together

    def add(self, o: Open) -> None:
        path = self._at[o] = o.path()
        same = self._by_path.get(path)
        if same is None:
            same = self._by_path[path] = {}
            insort(self._paths, path)
        same[o] = None

    def discard(self, o: Open) -> None:
        path = self._at.pop(o, None)
        if path is None:
            return
        same = self._by_path[path]
        del same[o]
        if not same:
            del self._by_path[path]
            del self._paths[bisect_left(self._paths, path)]

    def moved(self, o: Open) -> None:
        if o in self._at:
            self.discard(o)
            self.add(o)

    def below(self, path: str):
        """The opens of files below the directory `path`."""
        prefix = path + "/"
        i = bisect_left(self._paths, prefix)
        while i < len(self._paths) and self._paths[i].startswith(prefix):
            yield from list(self._by_path[self._paths[i]])
            i += 1

    def any_below(self, path: str) -> bool:
        return next(self.below(path), None) is not None

    def at(self, path: str) -> list[Open]:
        return list(self._by_path.get(path, ()))

    def __iter__(self):
        return iter(self._at)


class OpenPaths(PathIndex):
    """Every open of the server, for `has_open_below` (one process: all of them here)."""

    def renamed(self, o: Open, old_path: str) -> None:
        """`o`'s file was renamed from `old_path` (one process: its every open here has its
        new name already: ServerState.renamed)."""

    def take_renames(self, key) -> list[tuple[str, str]]:
        """Renames of the file `key` made by other processes (one process: none)."""
        return []


class DeletePending:
    """Files whose delete on close is pending: key -> the open that asked for it."""

    def __init__(self, share_modes: ShareModes) -> None:
        self._share_modes = share_modes
        self._by_key: dict[tuple, Open] = {}

    def is_pending(self, key) -> bool:
        return key in self._by_key

    def mark(self, o: Open) -> None:
        self._by_key[o.key] = o

    def withdraw(self, o: Open) -> None:
        if self._by_key.get(o.key) is o:
            del self._by_key[o.key]

    def take(self, o: Open) -> Open | None:
        """`o` has closed (its share mode is gone): the open whose file is to be deleted
        now, when a delete is pending and the file has no open left; else None."""
        if o.key in self._by_key and not self._share_modes.count(o.key):
            return self._by_key.pop(o.key)
        return None


class TreeCounts:
    """Tree connects per share, for `max connections`."""

    def __init__(self) -> None:
        self._trees: dict[str, int] = {}      # share -> tree connects to it now

    def connect(self, share: str, limit: int) -> bool:
        held = self._trees.get(share, 0)
        if limit and held >= limit:
            return False
        self._trees[share] = held + 1
        return True

    def disconnect(self, share: str) -> None:
        held = self._trees.get(share, 0) - 1
        if held > 0:
            self._trees[share] = held
        else:
            self._trees.pop(share, None)


# -- Sessions and channels (multichannel) ---------------------------------------------------
# Kept apart from the file state above: every session of the server by id (a binding request
# or a PreviousSessionId may name a session of another connection, MS-SMB2 3.3.5.5), the
# Clients (smb.channels) by ClientGuid, and the server's GUID, which every connection must
# announce alike for a client to bind its channels.

class SessionRegistry:
    """The server's sessions and clients. Session ids are unique across the server (a client
    binding a second connection names the session by the id the first one got)."""

    def __init__(self, server_guid: bytes | None = None, worker: int = 0, generation: int = 0) -> None:
        self.server_guid = server_guid or uuid.uuid4().bytes
        self._sessions: dict[int, Session] = {}
        self._clients: dict[bytes, Client] = {}
        self._next_session_id = 1
        # a server with several workers: a session id names its worker in its low 16 bits
        # and the worker's start (generation) above the counter, so that no two workers,
        # nor a restarted worker and the one before it, give out the same id
        self._worker, self._generation = worker, generation
        # the addresses the server listens on, for FSCTL_QUERY_NETWORK_INTERFACE_INFO (the
        # shell fills it in when it starts listening; empty: the connection's own address)
        self.network_interfaces: list[NetworkInterface] = []

    def new_session_id(self) -> int:
        sid = self._next_session_id
        self._next_session_id += 1
        if self._worker:
            return ((self._generation & 0xFFFF) << 48 | (sid & 0xFFFFFFFF) << 16) | self._worker
        return sid

    def worker_of(self, session_id: int) -> int | None:
        """The other worker whose session `session_id` would be (a server with several
        workers: its low 16 bits); None for this worker's, or with one process."""
        worker = session_id & 0xFFFF
        return worker if self._worker and worker and worker != self._worker else None

    def add(self, session: Session) -> None:
        self._sessions[session.id] = session

    def get(self, session_id: int) -> Session | None:
        return self._sessions.get(session_id)

    def remove(self, session: Session) -> None:
        if self._sessions.get(session.id) is session:
            del self._sessions[session.id]

    def client_for(self, guid: bytes) -> Client:
        """The Client of a ClientGuid (made on its first connection)."""
        client = self._clients.get(guid)
        if client is None:
            client = self._clients[guid] = Client(guid=guid)
        return client

    def forget_client(self, client: Client) -> None:
        """Its last connection ended."""
        if self._clients.get(client.guid) is client:
            del self._clients[client.guid]

    def __len__(self) -> int:
        return len(self._sessions)


def _count(counts: dict[str, int], owner: str, n: int) -> None:
    held = counts.get(owner, 0) + n
    if held > 0:
        counts[owner] = held
    else:
        counts.pop(owner, None)
