"""Changes made by other programs, seen through inotify and fed into the core's watches.

The protocol core (`smb.notify.ChangeWatches`) knows which directories clients watch
(`directories()`: each with whether its subdirectories count, WATCH_TREE) and tells the
server when that set changes (`on_change`); this module keeps one inotify watch per such
directory, and per subdirectory of a recursive one (added as directories appear, dropped as
they go), and turns what the kernel reports into `observed` changes. Kernel watches exist
while a watch on the directory exists, and are removed when none remains. A directory a
directory lease is held on is watched the same way (the core lists it among `directories()`
while the lease lasts): a change there that the server did not make breaks the directory's
leases (`_outside_change`; smb.dirleases), and one that cannot be watched has them broken at
once (`_unwatched`).

Safety:
- a directory is watched, and listed for its subdirectories, through a descriptor of its
  path opened with no symbolic link followed anywhere in it (RESOLVE_NO_SYMLINKS: the paths
  are the shares' real paths and names beneath them, so a link there was put in since,
  a directory above renamed away, perhaps, and a link out of the share in its place), and
  inotify is asked not to follow symbolic links: a link inside the share leads nowhere
  outside it;
- at most MAX_KERNEL_WATCHES directories are watched in all (the kernel's own
  max_user_watches bounds it too): a tree larger than that, or a directory that cannot be
  watched, makes the watches covering it answer STATUS_NOTIFY_ENUM_DIR, as Windows answers
  when it cannot keep track; a directory watched for its leases alone is watched only while
  fewer than half that many are, else its leases are broken (clients' CHANGE_NOTIFY watches
  keep the other half, however many directories a client leases);
- a kernel queue overflow does the same for every watch;
- every change is fed with the (st_dev, st_ino) of the directory the kernel saw it in: the
  core reports a change below a watched directory only to watches whose account may list
  the directories down to it (`smb.notify`), and judges that directory, not whatever bears
  its name by the time the event is read.

The server's own changes are reported by the core when it makes them; the core drops their
kernel echo (`ChangeWatches.tick` ages what it remembers). Writes through the server run
in the background, so a modification of a file some client has open for writing is taken
as the server's own.
"""
from __future__ import annotations

import ctypes
import errno
import logging
import os
import struct

from smbring.smb import notify
from smbring.uring import AT_FDCWD, RESOLVE_NO_SYMLINKS, openat2
from smbring.vfs.posix import STREAMS_DIR

log = logging.getLogger("smbring.server")

MAX_KERNEL_WATCHES = 8192       # directories watched in the kernel, all watches together
TICK = 1.0                      # seconds between epochs of the core's memory of its own changes
# seconds an entry's change waits before it breaks its directory's leases where other
# workers change files too: one of theirs reaches the kernel before they record it
# (SharedOplocks.outside_change); a worker is seldom held that long between the two
LATE = 0.05

IN_MODIFY, IN_ATTRIB = 0x2, 0x4
IN_MOVED_FROM, IN_MOVED_TO, IN_CREATE, IN_DELETE = 0x40, 0x80, 0x100, 0x200
IN_DELETE_SELF, IN_MOVE_SELF = 0x400, 0x800
IN_Q_OVERFLOW, IN_IGNORED, IN_ISDIR = 0x4000, 0x8000, 0x40000000
IN_ONLYDIR, IN_DONT_FOLLOW, IN_EXCL_UNLINK = 0x01000000, 0x02000000, 0x04000000
IN_NONBLOCK, IN_CLOEXEC = os.O_NONBLOCK, os.O_CLOEXEC
MASK = (IN_MODIFY | IN_ATTRIB | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
        | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR | IN_DONT_FOLLOW | IN_EXCL_UNLINK)
EVENT = struct.Struct("iIII")       # wd, mask, cookie, len (then the name, NUL-padded)
ATTRIBUTE_CHANGES = (notify.ATTRIBUTES | notify.LAST_WRITE | notify.LAST_ACCESS | notify.CREATION
                     | notify.EA | notify.SECURITY)


class Inotify:
    """The three inotify system calls (glibc's wrappers, through ctypes)."""

    def __init__(self):
        # (the process's own symbols: ctypes.util.find_library would run `ldconfig -p` in a
        # child process)
        libc = ctypes.CDLL(None, use_errno=True)
        self._init1, self._add, self._rm = libc.inotify_init1, libc.inotify_add_watch, libc.inotify_rm_watch
        self._add.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        fd = self._init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self.fd = fd

    def add(self, path: bytes, mask: int) -> int:
        wd = self._add(self.fd, path, mask)
        if wd < 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))
        return wd

    def remove(self, wd: int) -> None:
        self._rm(self.fd, wd)          # (gone already: the kernel dropped it, nothing to do)

    def close(self) -> None:
        os.close(self.fd)


class ChangeWatcher:
    """The kernel watches of one server (its `ServerState.watches`)."""

    def __init__(self, state, loop, limit: int = MAX_KERNEL_WATCHES, as_server=None):
        self.state = state
        self.watches = state.watches
        self.loop = loop
        self.limit = limit
        self.as_server = as_server          # a context making the thread the server's (root)
        self.inotify = Inotify()
        self._path: dict[int, str] = {}     # wd -> the directory's path
        self._wd: dict[str, int] = {}       # path -> wd
        self._key: dict[int, tuple] = {}    # wd -> the directory's (st_dev, st_ino)
        self._roots: dict[str, bool] = {}   # what the core wants watched (see directories())
        # the directories whose whole subtree is watched (walked, and kept as directories
        # come and go): each recursive root, or a directory above it that was one
        self._walked: set[str] = set()
        self._prune_due = False
        self._sync_due = False
        # wd -> (its path, its (st_dev, st_ino)): directories another program moved (the
        # kernel's IN_MOVE_SELF, or a move seen in a watched directory), looked at again by
        # the next sync (`_check_moved`); a removed one's watch ends with it (IN_IGNORED)
        self._moved: dict[int, tuple[str, tuple | None]] = {}
        self._vanished: set[str] = set()    # such names, left unwatched: watched once there
        # entries of leased directories another program changed, where other workers change
        # files too: (the directory's (st_dev, st_ino), the name) -> when the change was seen
        # (the oplocks' clock), judged LATE seconds on
        self._late: dict[tuple[tuple, str], float] = {}
        self._late_handle = None
        self._late_sync = None      # the sync that looks at moved directories LATE seconds on
        loop.add_reader(self.inotify.fd, self.read)
        self.watches.on_change = self.request_sync
        self.watches.before_add = self.read_queued
        self._ticker = loop.call_later(TICK, self._tick)

    def close(self) -> None:
        self.watches.on_change = None
        self.watches.before_add = None
        self._ticker.cancel()
        for handle in (self._late_handle, self._late_sync):
            if handle is not None:
                handle.cancel()
        self.loop.remove_reader(self.inotify.fd)
        self.inotify.close()

    def watched(self) -> int:
        return len(self._wd)

    # -- what to watch -------------------------------------------------------------------------
    def request_sync(self) -> None:
        if not self._sync_due:
            self._sync_due = True
            self.loop.call_soon(self.sync)

    def sync(self) -> None:
        """Brings the kernel watches in line with the core's watched directories. What it
        costs depends on the roots that changed, not on all the watches there are: a client
        that makes and cancels watches, in one loop turn after another, must not make each
        turn look through every kernel watch or walk a large tree again. So the kernel watches
        no root needs any more are dropped at the next tick (`_prune`), and a recursive root
        inside a tree whose walk is kept is not walked again."""
        self._sync_due = False
        wanted = self.watches.directories()
        old, self._roots = self._roots, wanted
        for path, recursive in old.items():
            if wanted.get(path) != recursive and not wanted.get(path):
                self._prune_due = True          # gone, or no longer recursive
        self._vanished.intersection_update(wanted)
        for path, recursive in wanted.items():
            # (a name whose directory another program moved away is tried again: another
            # directory may bear it now, and be leased)
            if old.get(path) != recursive or path in self._vanished and path not in self._wd:
                self._watch_root(path, recursive)
        if self._moved:
            self._check_moved()

    def _watch_root(self, path: str, recursive: bool) -> None:
        """A kernel watch for a directory the core watches (and its tree, `recursive`); the
        leases of one that cannot be watched are broken."""
        if not recursive:
            if path in self._wd:
                pass
            elif self.watches.leased_only(path) and len(self._wd) >= self.limit // 2:
                # directory leases take at most half the watches: however many directories
                # a client leases, the watches clients ask for keep the other half (its
                # lease is broken below; it goes on without caching the listing)
                log.debug("change notify: %s leased, not watched: the leases' half is taken", path)
            else:
                self._add(path)
        elif self._walked_below(path):
            self._walked.add(path)          # its tree is watched already
        else:
            self._watch(path, True)
            self._walked.add(path)
        if path not in self._wd:
            self._unwatched(path)

    def _check_moved(self) -> None:
        """The watched directories another program moved: a watch follows its directory, not
        its path, so where the path it was made for no longer names that directory (it was
        renamed, or something else bears its name now), the moved directory's leases are
        broken (nothing watches it under its new name: a listing cached through them would
        go stale unseen), as are those of the directories that moved with it, and the
        watches at and below the path are dropped and made again for whatever the path
        names now (none: its leases are broken, `_unwatched`). The server's own renames are
        not looked at: a lease on a directory renamed through it is watched under its new
        name (ServerState.renamed). Each name that went costs one look and one pass over
        the watched roots, whatever number of directories below it moved with it."""
        moved, self._moved = self._moved, {}
        gone: list[str] = []        # names no longer naming their directory (parents first)
        for wd, (path, key) in sorted(moved.items(), key=lambda item: item[1][0]):
            now = self._path.get(wd, path)
            if key is None:
                continue
            if any(now.startswith(top + "/") for top in gone):
                self._outside_change(key)       # moved with the directory above it
                continue
            if self._identity(now, os.O_DIRECTORY) == key or self._followed(key):
                continue
            self._outside_change(key)
            gone.append(now)
            self._drop_below(now)
            self._walked = {p for p in self._walked if not _at_or_below(p, now)}
            for root, recursive in self._roots.items():
                if _at_or_below(root, now):
                    self._watch_root(root, recursive)
                    if root not in self._wd:
                        self._vanished.add(root)

    def _followed(self, key: tuple) -> bool:
        """Whether the directory `key` was renamed by another worker of the server, and this
        worker's opens of it (and its leases' watches) have its new name now
        (ServerState.catch_up_renames): then the move is no other program's."""
        if not self.state.oplocks.other_processes:
            return False
        self.state.catch_up_renames(key)
        return any(self._identity(path, os.O_DIRECTORY) == key for path in self.watches.paths_leased(key))

    def _identity(self, path: str, flags: int = 0) -> tuple | None:
        """The (st_dev, st_ino) of what `path` names, reached through no symbolic link, as
        the server; None where nothing is reached so."""
        try:
            with self._as_server():
                fd = _open_without_links(path, os.O_PATH | flags)
            try:
                st = os.fstat(fd)
            finally:
                os.close(fd)
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def _unwatched(self, path: str) -> None:
        """`path` could not be watched (gone, renamed, or past the bound): a directory lease on
        it would go on caching what another program changes there unseen, so it is broken
        now (its client may ask again: it is then tried again)."""
        for key in self.watches.leased(path):
            self.state.oplocks.break_directory(key)

    def _outside_change(self, directory: tuple | None, name: str | None = None) -> None:
        """Another program changed the entry `name` of `directory` (its (st_dev, st_ino);
        None: not known), or the directory itself (`name` None): its directory leases are
        broken, none spared (every one where the directory is not known). Where the server's
        other workers change files too, an entry's change may be one of theirs: it is judged
        a moment later (`_late_changes`)."""
        oplocks = self.state.oplocks
        if not oplocks.directory_leases():
            return
        if directory is None:
            oplocks.break_all_directories()
        elif name is None or not oplocks.other_processes:
            oplocks.break_directory(directory)
        else:
            # (seen now: a lease granted before the judgement, after this, was granted with
            # the change made, and is not broken for it)
            self._late[directory, name] = oplocks.clock()
            if self._late_handle is None:
                self._late_handle = self.loop.call_later(LATE, self._late_changes)

    def _late_changes(self) -> None:
        late, self._late, self._late_handle = self._late, {}, None
        for (directory, name), seen_at in late.items():
            try:
                self.state.oplocks.outside_change(directory, name, seen_at)
            except Exception:       # one must not stop the others
                log.exception("change notify: directory lease break failed")

    def _walked_below(self, path: str) -> bool:
        """Whether `path` is, or is below, a directory whose whole subtree is watched."""
        while path:
            if path in self._walked:
                return True
            path, sep, _ = path.rpartition("/")
            if not sep:
                return False
        return False

    def _prune(self) -> None:
        """Drops the kernel watches that no root needs (one pass, once a tick at most)."""
        self._prune_due = False
        self._walked = {p for p, recursive in self._roots.items() if recursive}
        for path in list(self._wd):
            if path not in self._roots and not self._walked_below(path):
                self._unwatch(path)

    def _recursive_below(self, path: str) -> bool:
        """Whether the subdirectories of `path` are watched: a new one is watched too."""
        return self._walked_below(path)

    def _watch(self, path: str, recursive: bool) -> None:
        """Watches `path` (and with `recursive` every directory below it)."""
        todo = [path]
        while todo:
            here = todo.pop()
            if here not in self._wd and not self._add(here):
                continue
            if recursive:
                todo.extend(self._subdirectories(here))

    def _add(self, path: str) -> bool:
        if len(self._wd) >= self.limit:
            log.warning("change notify: %d directories watched already: changes below %s are "
                        "answered with an enumeration request", self.limit, path)
            self.watches.overflow(path)
            return False
        try:
            with self._as_server():
                wd, key = self._add_beneath(path)
        except OSError as e:
            if e.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                log.warning("change notify: cannot watch %s: %s", path, e)
                self.watches.overflow(path)
            return False
        old = self._path.get(wd)
        if old is not None and old != path:     # the same directory under another name
            self._wd.pop(old, None)
        self._path[wd] = path
        self._wd[path] = wd
        self._key[wd] = key
        return True

    def _add_beneath(self, path: str) -> tuple[int, tuple]:
        """The watch of the directory `path`, reached through no symbolic link at all: the
        path is the core's (the share's real path, then names resolved beneath it), but a
        directory above it may have been renamed and a link put in its place since, and the
        server, as root, must never watch (nor report) a directory outside the share.
        Returns the watch and the directory's (st_dev, st_ino)."""
        fd = _open_without_links(path, os.O_PATH | os.O_DIRECTORY)
        try:
            st = os.fstat(fd)
            return self.inotify.add(f"/proc/self/fd/{fd}".encode(), MASK & ~IN_DONT_FOLLOW), \
                (st.st_dev, st.st_ino)
        finally:
            os.close(fd)

    def _subdirectories(self, path: str) -> list[str]:
        try:
            with self._as_server():
                fd = _open_without_links(path, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            return []
        try:
            with os.scandir(fd) as it:      # (a descriptor: scandir closes none)
                return [f"{path}/{e.name}" for e in it
                        if e.name != STREAMS_DIR and e.is_dir(follow_symlinks=False)]
        except OSError:
            return []
        finally:
            os.close(fd)

    def _unwatch(self, path: str) -> None:
        wd = self._wd.pop(path, None)
        if wd is not None:
            self._path.pop(wd, None)
            self._key.pop(wd, None)
            self.inotify.remove(wd)

    def _as_server(self):
        import contextlib
        return self.as_server() if self.as_server is not None else contextlib.nullcontext()

    # -- what the kernel reports ---------------------------------------------------------------
    def _tick(self) -> None:
        self.read()                   # what is queued is the server's own or not: decide first
        self.watches.tick()
        if self._prune_due:
            self._prune()
        self._ticker = self.loop.call_later(TICK, self._tick)

    def read_queued(self) -> None:
        """What the kernel queued so far, read before a watch is added: a change made before
        it (while a kernel watch lingered, or was kept for another watch) is then told to the
        watches there were, not to the new one. The server's own changes are known as such
        only while a watch exists (`ChangeWatches.mark_own`), and another worker's never."""
        if self._wd:
            self.read()

    def read(self) -> None:
        # cookie -> (old path, is a directory, the old directory's (st_dev, st_ino))
        moves: dict[int, tuple[str, bool, tuple | None]] = {}
        while True:
            try:
                data = os.read(self.inotify.fd, 65536)
            except BlockingIOError:
                break
            except OSError as e:
                log.warning("change notify: reading inotify failed: %s", e)
                break
            if not data:
                break
            pos = 0
            while pos + EVENT.size <= len(data):
                wd, mask, cookie, length = EVENT.unpack_from(data, pos)
                raw = data[pos + EVENT.size:pos + EVENT.size + length].split(b"\0", 1)[0]
                pos += EVENT.size + length
                try:
                    self._event(wd, mask, cookie, os.fsdecode(raw), moves)
                except Exception:           # one odd event must not stop the others
                    log.exception("change notify: inotify event skipped")
        for old, is_dir, directory in moves.values():   # moved out of every watched directory
            self._removed(old, is_dir, directory)

    def _event(self, wd: int, mask: int, cookie: int, name: str, moves: dict) -> None:
        if mask & IN_Q_OVERFLOW:
            log.warning("change notify: the kernel's event queue overflowed")
            self.watches.overflow(None)
            return
        here = self._path.get(wd)
        if mask & IN_MOVE_SELF and here is not None:
            # (seen in its directory too where that is watched: then forgotten already)
            if not self.watches.made_by_server(here):
                self._note_moved(wd, here)
            return
        if mask & IN_IGNORED:
            if here is not None and self._wd.get(here) == wd:
                del self._wd[here]
            self._path.pop(wd, None)
            self._key.pop(wd, None)
            return
        if here is None or not name or name == STREAMS_DIR or mask & IN_DELETE_SELF:
            return
        path = f"{here}/{name}"
        directory = self._key.get(wd)       # the directory the kernel saw the change in
        is_dir = bool(mask & IN_ISDIR)
        what = notify.DIR_NAME if is_dir else notify.FILE_NAME
        outside = False         # another program's change (not the server's own echo)
        if mask & IN_CREATE:
            outside = self.watches.observed(path, notify.ADDED, what, directory)
            if is_dir and self._recursive_below(here):
                self._watch(path, True)
        elif mask & IN_DELETE:
            outside = self.watches.observed(path, notify.REMOVED, what, directory)
        elif mask & IN_MOVED_FROM:
            moves[cookie] = (path, is_dir, directory)
        elif mask & IN_MOVED_TO:
            old = moves.pop(cookie, None)
            if old is not None:
                if self.watches.observed_rename(old[0], path, is_dir, old[2], directory):
                    self._outside_change(old[2], _name_of(old[0]))
                    outside = True
                if is_dir:
                    self._forget_below(old[0], outside)
            else:
                outside = self.watches.observed(path, notify.ADDED, what, directory)
            if is_dir and self._recursive_below(here):
                self._watch(path, True)
        elif mask & IN_MODIFY:
            here, anywhere = self._written_by_server(path)
            if not here:
                # (another worker's writes are reported here; their directory leases break at
                # the writer's close, through the shared tables, as this worker's own do)
                outside = self.watches.observed(path, notify.MODIFIED, notify.SIZE | notify.LAST_WRITE,
                                                directory) and not anywhere
        elif mask & IN_ATTRIB:
            outside = self.watches.observed(path, notify.MODIFIED, ATTRIBUTE_CHANGES, directory)
        if outside:
            self._outside_change(directory, name)

    def _removed(self, path: str, is_dir: bool, directory: tuple | None = None) -> None:
        outside = self.watches.observed(path, notify.REMOVED, notify.DIR_NAME if is_dir else notify.FILE_NAME,
                                        directory)
        if outside:
            self._outside_change(directory, _name_of(path))
        if is_dir:
            self._forget_below(path, outside)

    def _forget_below(self, path: str, outside: bool) -> None:
        """A directory moved away (seen in its directory): its watches (and those below it)
        no longer name it. Where another program moved it, the next sync looks at what
        `path` names now (`_check_moved`)."""
        if outside:
            for p in self._below(path):
                self._note_moved(self._wd[p], p)
        self._drop_below(path)

    def _note_moved(self, wd: int, path: str) -> None:
        """The directory watched as `wd` under `path` was moved by another program: the
        next sync looks at it (`_check_moved`)."""
        self._moved[wd] = (path, self._key.get(wd))
        if self.state.oplocks.other_processes:
            # (another worker's rename reaches here before that worker records it for this
            # one's opens: `_followed` looks a moment later)
            if self._late_sync is None:
                self._late_sync = self.loop.call_later(LATE, self._sync_late)
        else:
            self.request_sync()

    def _sync_late(self) -> None:
        self._late_sync = None
        self.request_sync()

    def _drop_below(self, path: str) -> None:
        for p in self._below(path):
            self._unwatch(p)

    def _below(self, path: str) -> list[str]:
        """The watched paths at and below `path`."""
        return [p for p in self._wd if _at_or_below(p, path)]

    def _written_by_server(self, path: str) -> tuple[bool, bool]:
        """Whether an SMB client has the file open for writing: (through this process,
        through any worker's)."""
        key, share_modes = self._identity(path), self.state.share_modes
        if key is None:
            return False, False
        if share_modes.has_writer_here(key):
            return True, True
        return False, share_modes.has_writer(key)


def _name_of(path: str) -> str:
    """The last component of `path`."""
    return path.rpartition("/")[2]


def _at_or_below(path: str, top: str) -> bool:
    """Whether `path` is the directory `top` or lies beneath it."""
    return path == top or path.startswith(top + "/")


def _open_without_links(path: str, flags: int) -> int:
    """A descriptor of `path` (absolute) if no component of it is a symbolic link (ELOOP
    otherwise): the paths watched are the shares' real paths and names beneath them, so a
    link anywhere in one was put there since, and may lead out of the share."""
    return openat2(AT_FDCWD, path, flags | os.O_CLOEXEC, 0, RESOLVE_NO_SYMLINKS)
