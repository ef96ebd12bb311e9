"""Which entry of a directory a name means but for case, without reading the directory each time.

SMB names are case-insensitive and the file system's are not, so a CREATE of a name that is
not there as spelled must look through its directory for the same name in another case
before it makes a new file (PosixVFS.match_case). Copying many files into one directory
makes that look-through the bulk of the work per file: on ext4, reading a directory of n
entries hashes and sorts all n in the kernel, on every CREATE.

A CaseIndex remembers, for the directories looked through most recently, their names by case
fold, and keeps them current through inotify: each such directory has a kernel watch for
entries made, removed and renamed in it, by anyone. The kernel queues an event before the
system call that caused it returns, so reading the queue dry before every answer brings in
every change finished before the question: the answer is the one a fresh read of the
directory would give. What it does not know it reads, as before:
- a directory on a file system that is not local (NFS, SMB, FUSE, overlays...: changes made
  elsewhere raise no event here) or that cannot be watched (no watch left);
- a directory of fewer than MIN_ENTRIES entries (read at once anyway);
- in a directory of more than MAX_NAMES entries (too many to hold), a name that is there in
  another case: such a directory keeps only a fingerprint of each name's case fold (8 bytes
  a name, `_Fingerprints`), which answers the usual question, a new name's, without a read,
  and sends a name whose fingerprint is there (or an 8.3 name: none is answered there) to a
  read; one of more than MAX_FINGERPRINTS entries is not indexed at all;
- a name with two or more spellings in the directory (the first in the directory's order
  is the answer);
- everything, after the kernel's queue overflowed (the index starts again).

Nobody learns more through it than through a read: the directory is still opened as the
user asking, which is the permission check a read of it makes, and only then looked up.
At most MAX_DIRECTORIES watches, MAX_NAMES names and MAX_FINGERPRINTS fingerprints are held
(the least recently used directory goes first).
"""
from __future__ import annotations

import bisect
import ctypes
import os
from array import array
import struct
import threading
from typing import Callable

from smbring.vfs.short_names import long_name_of, mangled_name

MAX_DIRECTORIES = 128           # kernel watches held at once (max_user_watches bounds them too)
MAX_NAMES = 200_000             # names held, all directories together (some 30 MB)
MAX_FINGERPRINTS = 4_000_000    # fingerprints of larger directories' names, all together (32 MB)
MIN_ENTRIES = 32                # smaller directories are read each time: as cheap as an index

IN_MOVED_FROM, IN_MOVED_TO, IN_CREATE, IN_DELETE = 0x40, 0x80, 0x100, 0x200
IN_DELETE_SELF, IN_UNMOUNT, IN_Q_OVERFLOW, IN_IGNORED = 0x400, 0x2000, 0x4000, 0x8000
IN_ONLYDIR = 0x01000000
MASK = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF | IN_ONLYDIR
EVENT = struct.Struct("iIII")   # wd, mask, cookie, len (then the name, NUL-padded)

# file systems whose every change raises inotify events here (statfs f_type): local ones
LOCAL_FILE_SYSTEMS = frozenset({
    0xEF53,         # ext2, ext3, ext4
    0x58465342,     # xfs
    0x9123683E,     # btrfs
    0x01021994,     # tmpfs
    0xF2F52010,     # f2fs
    0x2FC12FC1,     # zfs
    0x4D44,         # vfat
    0x5346544E,     # ntfs (ntfs3)
    0x2011BAB0,     # exfat
})

Pick = Callable[[list[str], str], "str | None"]


class _Libc:
    """inotify_init1, inotify_add_watch, inotify_rm_watch and fstatfs, through ctypes."""

    def __init__(self):
        # the process's own symbols (libc is loaded already): ctypes.util.find_library would
        # run `ldconfig -p` in a child process, ~1 ms of the event loop per index made
        libc = ctypes.CDLL(None, use_errno=True)
        self.init1, self.add, self.rm = libc.inotify_init1, libc.inotify_add_watch, libc.inotify_rm_watch
        self.add.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        self.fstatfs = libc.fstatfs
        self.fstatfs.argtypes = [ctypes.c_int, ctypes.c_void_p]

    def fs_type(self, fd: int) -> int | None:
        buf = ctypes.create_string_buffer(256)     # struct statfs (120 bytes on 64-bit Linux)
        if self.fstatfs(fd, buf) != 0:
            return None
        return ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF   # f_type: the first field


class _Directory:
    """One directory's names by case fold: each fold with its one spelling, or a list of
    its spellings where there are several (rare: a str each keeps the memory down); and,
    once a short name was looked for in it, its long names by 8.3 short name (the same: a
    list where two long names make one short name, the first answering for it)."""
    __slots__ = ("key", "wd", "folded", "count", "short")
    fingerprints = False

    def __init__(self, key: tuple[int, int], wd: int, names: list[str]):
        self.key, self.wd, self.count = key, wd, 0
        self.folded: dict[str, str | list[str]] = {}
        self.short: dict[str, str | list[str]] | None = None
        for name in names:
            self.add(name)

    def long_name(self, short: str) -> str | None:
        """The long name whose mangled 8.3 name is `short` (vfs.short_names), from a map
        made at the first question (one pass over the names) and kept current after."""
        if self.short is None:
            self.short = {}
            for found in self.folded.values():
                for name in ([found] if isinstance(found, str) else found):
                    self._map_short(name)
        found = self.short.get(short.upper())
        return found if found is None or isinstance(found, str) else found[0]

    def _map_short(self, name: str) -> None:
        mangled = mangled_name(name)
        if mangled is None:
            return
        found = self.short.get(mangled)
        if found is None:
            self.short[mangled] = name
        elif isinstance(found, str):
            if found != name:
                self.short[mangled] = [found, name]
        elif name not in found:
            found.append(name)

    def spellings(self, name: str) -> list[str]:
        found = self.folded.get(name.casefold())
        if found is None:
            return []
        return [found] if isinstance(found, str) else found

    def add(self, name: str) -> None:
        fold = name.casefold()
        found = self.folded.get(fold)
        if found is None:
            self.folded[fold] = name
        elif isinstance(found, str):
            if found == name:
                return
            self.folded[fold] = [found, name]
        elif name in found:
            return
        else:
            found.append(name)
        self.count += 1
        if self.short is not None:
            self._map_short(name)

    def remove(self, name: str) -> None:
        fold = name.casefold()
        found = self.folded.get(fold)
        if found is None:
            return
        if isinstance(found, str):
            if found != name:
                return
            del self.folded[fold]
        else:
            if name not in found:
                return
            found.remove(name)
            if len(found) == 1:
                self.folded[fold] = found[0]
        self.count -= 1
        if self.short is not None:
            mangled = mangled_name(name)
            found = self.short.get(mangled) if mangled is not None else None
            if found == name:
                del self.short[mangled]
            elif isinstance(found, list) and name in found:
                found.remove(name)      # (another long name of the short name answers now)
                if len(found) == 1:
                    self.short[mangled] = found[0]


class _Fingerprints:
    """A directory too large to hold its names: a fingerprint of each name's case fold (the
    process's string hash, 64 bits: its seed is the process's own, so no client can aim at
    a collision), sorted, with the changes since in two small counts. A fingerprint that is
    not there means no name of that fold is (the usual question: a new file's CREATE); one
    that is sends the question to a read of the directory. Counts only ever err upwards:
    a change seen twice (in the read and in the queue, see CaseIndex._first_look) or a
    rename over an existing file (the kernel raises no event for the file replaced) leaves a
    fingerprint that sends its name's questions to a read, never one that hides a name."""

    __slots__ = ("key", "wd", "count", "_sorted", "_added", "_removed")
    fingerprints = True
    MERGE_AT = 4096         # changes kept apart at least (an eighth of the directory's, if more)

    def __init__(self, key: tuple[int, int], wd: int, names: list[str]):
        self.key, self.wd, self.count = key, wd, len(names)
        self._sorted = array("q", sorted(hash(name.casefold()) for name in names))
        self._added: dict[int, int] = {}        # fingerprint -> names added since
        self._removed: dict[int, int] = {}      # fingerprint -> names of _sorted removed since

    def _in_sorted(self, fingerprint: int) -> int:
        held = bisect.bisect_right(self._sorted, fingerprint) - bisect.bisect_left(self._sorted, fingerprint)
        return held - self._removed.get(fingerprint, 0)

    def may_hold(self, name: str) -> bool:
        fingerprint = hash(name.casefold())
        return fingerprint in self._added or self._in_sorted(fingerprint) > 0

    def add(self, name: str) -> None:
        fingerprint = hash(name.casefold())
        self._added[fingerprint] = self._added.get(fingerprint, 0) + 1
        self.count += 1
        self._tidy()

    def remove(self, name: str) -> None:
        fingerprint = hash(name.casefold())
        added = self._added.get(fingerprint, 0)
        if added:
            if added == 1:
                del self._added[fingerprint]
            else:
                self._added[fingerprint] = added - 1
        elif self._in_sorted(fingerprint) > 0:
            self._removed[fingerprint] = self._removed.get(fingerprint, 0) + 1
        else:
            return          # (never counted: a change the read had already)
        self.count -= 1
        self._tidy()

    def _tidy(self) -> None:
        """The changes merged into the sorted fingerprints once they are many (a pass over
        all of them, once in a number of changes that grows with the directory)."""
        if len(self._added) + len(self._removed) < max(self.MERGE_AT, len(self._sorted) // 8):
            return
        merged = self._sorted.tolist()
        for fingerprint, n in self._added.items():
            merged.extend([fingerprint] * n)
        merged.sort()
        if self._removed:
            removed, kept = self._removed, []
            for fingerprint in merged:
                n = removed.get(fingerprint)
                if n:
                    removed[fingerprint] = n - 1
                else:
                    kept.append(fingerprint)
            merged = kept
        self._sorted = array("q", merged)
        self._added, self._removed = {}, {}


class CaseIndex:
    """The directories' names of one share (its PosixVFS), kept current through inotify."""

    def __init__(self, pick: Pick, read_names: Callable[[int], list[str]],
                 max_directories: int = MAX_DIRECTORIES, max_names: int = MAX_NAMES,
                 min_entries: int = MIN_ENTRIES, max_fingerprints: int = MAX_FINGERPRINTS):
        """read_names(dir_fd): the names of the directory open at dir_fd (at its start), in
        its order; pick(names, name): the answer from them."""
        self.pick, self.read_names = pick, read_names
        self.max_directories, self.max_names, self.min_entries = max_directories, max_names, min_entries
        self.max_fingerprints = max_fingerprints
        self._lock = threading.Lock()
        # least recently used first: _Directory, or _Fingerprints for the largest
        self._dirs: dict[tuple[int, int], _Directory | _Fingerprints] = {}
        self._by_wd: dict[int, _Directory | _Fingerprints] = {}
        self._names = 0
        self._fingerprints = 0
        self._local: dict[int, bool] = {}                        # st_dev: local file system?
        # the inotify queue: made with the first directory worth indexing (an index is made per
        # share directory a worker serves, each snapshot directory reached included, and a
        # user has 128 queues by default, fs.inotify.max_user_instances, which other programs
        # of the server's user need too); -1 until then
        self.fd = -1
        self._pid = os.getpid()     # the process the queue belongs to
        try:
            self._libc = _Libc()
            self._can_index = True
        except (OSError, AttributeError):
            self._can_index = False

    def _start(self) -> bool:
        """Makes the queue; where the kernel refuses (no queue left), nothing is indexed."""
        fd = self._libc.init1(os.O_NONBLOCK | os.O_CLOEXEC)
        self.fd = fd if fd >= 0 else -1
        self._can_index = fd >= 0
        # a child process shares the queue's descriptor: what either read, the other would
        # miss, so a child starts an index of its own at its first lookup (`find` compares
        # the pid: an os.register_at_fork hook per index could never be removed, and they
        # would pile up for the process's life)
        self._pid = os.getpid()
        return fd >= 0

    def _own(self) -> None:
        """In a child process (forked since the queue was made): an index of its own."""
        if self.fd >= 0 and self._pid != os.getpid():
            self._forked()

    def _forked(self) -> None:
        os.close(self.fd)
        self.fd = -1            # (a queue of its own with the next directory worth indexing)
        self._pid = os.getpid()
        self._dirs.clear()
        self._by_wd.clear()
        self._names = self._fingerprints = 0
        self._lock = threading.Lock()

    def close(self) -> None:
        self._can_index = False     # (no queue made after this)
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self._dirs.clear()
        self._by_wd.clear()
        self._names = self._fingerprints = 0

    @property
    def directories(self) -> int:
        self._own()
        return len(self._dirs)

    def same_but_case(self, dir_fd: int, name: str) -> str | None:
        """The entry of the directory open at dir_fd (at its start) that is name but for
        case, if any: name itself where it is there as spelled."""
        return self.find(dir_fd, name, mangled=False)

    def find(self, dir_fd: int, name: str, mangled: bool) -> str | None:
        """`same_but_case`; where it finds nothing and `mangled` (the name may be a mangled 8.3
        name: vfs.short_names.may_be_mangled), the entry whose mangled name `name` is: from
        the directory's index where it is indexed (a map of its long names by short name;
        none in a directory that keeps only fingerprints), else from the names the case
        lookup read (looked through only up to MAX_SCANNED names), one read of the directory
        for both."""
        self._own()
        if not self._can_index or "\0" in name:
            return self._in_names(self.read_names(dir_fd), name, mangled)
        st = os.fstat(dir_fd)
        key = (st.st_dev, st.st_ino)
        with self._lock:
            if self.fd >= 0:
                self._read_events()
            directory = self._dirs.pop(key, None)
            if directory is None:
                names = self._first_look(dir_fd, key, st.st_dev)
                directory = self._dirs.get(key)         # (indexed now, where worth it)
                if directory is None:
                    return self._in_names(names, name, mangled)
                match = self.pick(names, name)
                if match is not None or not mangled or directory.fingerprints:
                    return match
                return directory.long_name(name)
            self._dirs[key] = directory         # the most recently used, now
            if directory.fingerprints:
                if not directory.may_hold(name):
                    return None
                spellings = None        # there in some case, perhaps: read (below)
            else:
                spellings = directory.spellings(name)
                if not spellings:
                    return directory.long_name(name) if mangled else None
                if name in spellings:
                    return name
                if len(spellings) == 1:
                    return spellings[0]
        # two spellings or more, neither the one asked for: the first in the directory's
        # order; or a fingerprint that is there
        return self.pick(self.read_names(dir_fd), name)

    def _in_names(self, names: list[str], name: str, mangled: bool) -> str | None:
        """`find`'s answer from a read of a directory that is not indexed."""
        match = self.pick(names, name)
        return match if match is not None or not mangled else long_name_of(names, name)

    def local(self, fd: int, dev: int) -> bool:
        """Whether the file system of `fd` (whose st_dev is `dev`) is a local one
        (LOCAL_FILE_SYSTEMS), asked once per device; False where it cannot be told."""
        local = self._local.get(dev)
        if local is None:
            libc = getattr(self, "_libc", None)     # (none where ctypes could not load libc)
            local = self._local[dev] = libc is not None and libc.fs_type(fd) in LOCAL_FILE_SYSTEMS
        return local

    # -- filling and emptying ---------------------------------------------------------------
    def _first_look(self, dir_fd: int, key: tuple[int, int], dev: int) -> list[str]:
        """The names of a directory not indexed, indexed where it can be: read, and if it is
        worth indexing watched, then read again (a change in between is both in the read
        and in the queue: applying it again changes nothing)."""
        names = self.read_names(dir_fd)
        if not self.min_entries <= len(names) <= max(self.max_names, self.max_fingerprints):
            return names
        if not self.local(dir_fd, dev):
            return names
        if self.fd < 0 and not self._start():
            return names
        wd = self._libc.add(self.fd, f"/proc/self/fd/{dir_fd}".encode(), MASK)
        if wd < 0 or wd in self._by_wd:
            return names
        os.lseek(dir_fd, 0, os.SEEK_SET)
        names = self.read_names(dir_fd)
        kind = _Directory if len(names) <= self.max_names else _Fingerprints
        directory = kind(key, wd, names)
        self._dirs[key] = directory
        self._by_wd[wd] = directory
        self._counted(directory, directory.count)
        while len(self._dirs) > self.max_directories:
            self._forget(next(iter(self._dirs.values())), remove_watch=True)
        # the least recently used of a kind over its bound goes (never the new one: alone, it
        # is within its kind's bound)
        while self._names > self.max_names:
            self._forget(self._least_recent(fingerprints=False), remove_watch=True)
        while self._fingerprints > self.max_fingerprints:
            self._forget(self._least_recent(fingerprints=True), remove_watch=True)
        return names

    def _least_recent(self, fingerprints: bool) -> _Directory | _Fingerprints:
        return next(d for d in self._dirs.values() if d.fingerprints == fingerprints)

    def _counted(self, directory, n: int) -> None:
        if directory.fingerprints:
            self._fingerprints += n
        else:
            self._names += n

    def _forget(self, directory: _Directory | _Fingerprints, remove_watch: bool) -> None:
        self._dirs.pop(directory.key, None)
        if self._by_wd.pop(directory.wd, None) is not None:
            self._counted(directory, -directory.count)
        if remove_watch:
            self._libc.rm(self.fd, directory.wd)

    def _forget_all(self) -> None:
        for directory in list(self._dirs.values()):
            self._forget(directory, remove_watch=True)

    def _read_events(self) -> None:
        """Every change queued so far, into the directories it happened in."""
        while True:
            try:
                data = os.read(self.fd, 65536)
            except (BlockingIOError, InterruptedError):
                return
            at, end = 0, len(data)
            while at + EVENT.size <= end:
                wd, mask, _cookie, length = EVENT.unpack_from(data, at)
                raw = data[at + EVENT.size:at + EVENT.size + length]
                at += EVENT.size + length
                if mask & IN_Q_OVERFLOW:
                    self._forget_all()          # changes were lost: start again
                    continue
                directory = self._by_wd.get(wd)
                if directory is None:
                    continue
                if mask & (IN_IGNORED | IN_DELETE_SELF | IN_UNMOUNT):
                    self._forget(directory, remove_watch=not mask & IN_IGNORED)
                    continue
                name = os.fsdecode(raw.rstrip(b"\0"))
                before = directory.count
                if mask & (IN_CREATE | IN_MOVED_TO):
                    directory.add(name)
                elif mask & (IN_DELETE | IN_MOVED_FROM):
                    directory.remove(name)
                self._counted(directory, directory.count - before)
