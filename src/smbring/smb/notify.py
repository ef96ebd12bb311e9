"""Change notification shared by every connection (MS-SMB2 3.3.5.19, MS-FSA 2.1.5.10).

A directory open that has asked for CHANGE_NOTIFY owns a `Watch`, kept in the server's
`ChangeWatches` (in its `ServerState`): from then on, changes below it that match its
completion filter are recorded, and handed to the pending request (or the next one, like
Windows, when none is waiting).

Changes come from two sides:

- the server itself posts what its clients do (`post`, `post_open`, `post_rename`) as it
  creates, deletes, renames or modifies a file, so clients see what other clients of the
  same server do;
- the shell watches the watched directories in the kernel (inotify, see
  `smbring.server.change_watcher`) and feeds what other programs do through `observed`. The
  core does no I/O of its own (a watch's `lists`, given by CHANGE_NOTIFY, asks the tree's
  file system): it only says which directories it wants watched (`directories`, with
  `on_change` called when that set changes), and drops what the kernel reports of the
  server's own changes (those were posted already).

Bounds: a watch keeps at most what its first request's OutputBufferLength can carry (as
Windows and Samba, which fix the buffer on the first request), and at most WATCH_BYTES;
a connection's watches at most OWNER_BYTES together. Beyond that the watch overflows: its
changes are dropped and the next answer is STATUS_NOTIFY_ENUM_DIR (the client re-reads the
directory), so a client that never reads its notifications cannot make the server grow.
Names that `veto files` hides are never reported.

Below the watched directory (WATCH_TREE), a change is reported only where the watch's account
could have learnt the name by listing: it may list (read and search) every directory from the
watched one down to the changed name's (`Watch.lists`, judged by the kernel acting as that
account; the server watches every subdirectory as itself). Otherwise the change is dropped
for that watch, with no trace of it (not even STATUS_NOTIFY_ENUM_DIR); other watches of the
same tree see what their own accounts may list. Samba reports changes made through SMB only,
and checks nothing; this server also reports what other programs do, so it must not tell a
user the names in a directory the user could not list.

On a share whose rules leave entries out of listings for what they are (`hide unreadable`,
`hide unwriteable files`, `hide special files`, `hide new files timeout`), a change is reported
only if a listing made as the watch's account would show its name, and each directory on the
way to it (`Watch.shows`, the listing's own predicate, judged when the change is recorded);
otherwise it is dropped with no trace. A name that is gone (a removal, a rename's old name)
cannot be judged: the watch answers STATUS_NOTIFY_ENUM_DIR instead (the client lists the
directory again, and learns only what a listing shows), except a rename within one directory,
whose old name is judged by the file under its new name (the same file, in the same directory:
what the rules look at is the same). `hide files` and `hide dot files` only mark names hidden in
listings (they stay listed): they do not filter notifications.
"""
from __future__ import annotations

import logging
import struct

from smbring.smb import wire
from smbring.smb.limits import MAX_IO

FILE_NAME, DIR_NAME, ATTRIBUTES, SIZE, LAST_WRITE = 0x1, 0x2, 0x4, 0x8, 0x10
LAST_ACCESS, CREATION, EA, SECURITY = 0x20, 0x40, 0x80, 0x100
STREAM_NAME, STREAM_SIZE, STREAM_WRITE = 0x200, 0x400, 0x800
ADDED, REMOVED, MODIFIED, RENAMED_OLD_NAME, RENAMED_NEW_NAME = 1, 2, 3, 4, 5
ADDED_STREAM, REMOVED_STREAM, MODIFIED_STREAM = 6, 7, 8

log = logging.getLogger("smbring.smb")

MAX_OUTPUT = MAX_IO         # the largest OutputBufferLength a CHANGE_NOTIFY may ask for
WATCH_BYTES = 0x10000       # what one watch buffers at most (encoded), whatever it asked for
OWNER_BYTES = 4 << 20       # what one connection's watches buffer at most together

# an action on a file -> the same on one of its named streams; and the filter bits likewise
STREAM_ACTIONS = {ADDED: ADDED_STREAM, REMOVED: REMOVED_STREAM, MODIFIED: MODIFIED_STREAM}


def stream_filter(what: int) -> int:
    return ((STREAM_NAME if what & FILE_NAME else 0) | (STREAM_SIZE if what & SIZE else 0)
            | (STREAM_WRITE if what & LAST_WRITE else 0))


def entry_size(name: str) -> int:
    """The bytes a FILE_NOTIFY_INFORMATION entry for `name` takes, aligned."""
    return (12 + 2 * len(name) + 3) & ~3       # (a bound: UTF-16 of non-BMP names is 4 bytes)


class Watch:
    """The watch of one directory open: `path` (absolute, as `Open.path()` gives it), `key`
    (st_dev, st_ino) of the directory, the completion filter and WATCH_TREE of its first
    request, and its first request's OutputBufferLength (`max_output`: MS-FSA keeps the
    first request's parameters for the open's lifetime). `names` are the tree's veto rules
    (`share_access.NameRules`); `owner` is whose budget its buffered bytes count against.
    `lists(dirs, directory)` says whether the watch's account may list each directory
    dirs[:1], dirs[:2], ... below the watched one, the last of them being `directory`
    ((st_dev, st_ino), None when unknown); None: no such check (every name is reported).
    `shows(dirs, name, directory)` says whether a listing made as the watch's account shows
    `name` in dirs (and each of dirs on the way): True, False, or None when it cannot be
    judged (`name` None: a name that is gone); None: the share hides no entry for what it is
    (every name is reported: no cost). `reads(dirs, name)` says whether the watch's account
    may read the file `name` in dirs (below the watched directory): a change of one of its
    named streams tells the stream's name, which only an open of the file lists; None: no
    such check. `alike`: what the answers of `lists`, `shows` and `reads` depend on (the
    account's file system, the watched directory, the share's rules), so that the watches of
    one account on one directory are judged once per change, however many there are (each
    is an open: a user keeping thousands must not make every change cost thousands of
    judgements, each opening directories); None: judged on its own."""

    def __init__(self, path: str, completion_filter: int, recursive: bool, *, key: tuple = (),
                 max_output: int = MAX_OUTPUT, names=None, owner: object = None, lists=None,
                 shows=None, reads=None, alike=None):
        self.path = path.rstrip("/") or "/"
        self.key = key
        self.filter = completion_filter
        self.recursive = recursive
        self.max_output = max_output
        self.names = names
        self.owner = owner
        self.lists = lists
        self.shows = shows
        self.reads = reads
        self.alike = alike
        self.changes: list[tuple[int, str]] = []
        self.size = 0               # the encoded size of `changes`
        self.overflowed = False
        # the requests waiting, oldest first: deliver(status or None) answers one (None: with
        # the changes recorded); the next change answers the first of them
        self.waiting: list = []

    def capacity(self) -> int:
        return min(self.max_output, WATCH_BYTES)

    def relative(self, path: str) -> str | None:
        """`path` as this watch reports it ("sub\\name"), or None when it is not watched: the
        directory's own entries, and with WATCH_TREE the entries below them."""
        parent, _, name = path.rpartition("/")
        if parent == self.path:
            return name
        if self.recursive and parent.startswith(self.path.rstrip("/") + "/"):
            return path[len(self.path.rstrip("/")) + 1:]
        return None

    def vetoed(self, rel: str) -> bool:
        return self.names is not None and any(self.names.vetoed(n) for n in rel.split("/"))

    def take(self, max_len: int) -> tuple[bytes, bool]:
        """The recorded changes as FILE_NOTIFY_INFORMATION entries; False when they do not fit
        (in the request's buffer or in the first request's) or were lost: the client must
        enumerate the directory instead."""
        changes, overflowed = self.changes, self.overflowed
        self.changes, self.size, self.overflowed = [], 0, False
        out = encode(changes)
        if overflowed or not changes or len(out) > min(max_len, self.max_output):
            return b"", False
        return out, True


def encode(changes: list[tuple[int, str]]) -> bytes:
    """FILE_NOTIFY_INFORMATION entries (MS-FSCC 2.7.1)."""
    def entry(action: int, name: str) -> bytes:
        n = name.encode("utf-16-le", "surrogatepass")
        return struct.pack("<III", 0, action, len(n)) + n
    return wire.chain(entry(action, name) for action, name in changes)


def _judged(judged: dict, key, judge, unjudged, failure: str, rel: str):
    """`judge()`'s answer, asked once per change for the watches alike (`judged`, keyed by
    `key`); `unjudged` where it fails: a failure to judge must neither tell the name nor fail
    the request of whoever made the change."""
    if key not in judged:
        try:
            judged[key] = judge()
        except Exception:
            log.exception(failure, rel)
            judged[key] = unjudged
    return judged[key]


def _forget(index: dict, key, w: Watch) -> None:
    same = index.get(key)
    if same is not None:
        same.pop(w, None)
        if not same:
            del index[key]


def _alike(w: Watch):
    """What names the watches whose judges answer alike (`Watch.alike`), for one change."""
    return id(w) if w.alike is None else w.alike


class ChangeWatches:
    """Every watch of the server: a change one connection makes is seen by the others', and
    what the kernel reports (`observed`) by all."""

    def __init__(self) -> None:
        self._watches: dict[Watch, None] = {}       # every watch, in the order added
        # the same by the directory watched, and by its (st_dev, st_ino): a change, or a
        # directory to be deleted, looks at the watches it can concern only, not at all of
        # them (a client may keep thousands, each an open: every change by anyone would cost
        # that many)
        self._at: dict[str, dict[Watch, None]] = {}
        self._of_key: dict[tuple, dict[Watch, None]] = {}
        self._recursive_at: dict[str, int] = {}     # how many of a directory's are recursive
        self._owner_bytes: dict[object, int] = {}
        # the server's own changes by path -> the epoch they were posted in: the kernel reports
        # them too, and they must not be reported twice (see `observed`, `tick`)
        self._own: dict[str, int] = {}
        self._epoch = 0
        # the directories a directory lease is held on: the shell keeps kernel watches on them
        # too, and a change another program makes in one breaks its leases (the shell's
        # ChangeWatcher); path -> {the directory's (st_dev, st_ino): leases held}
        self._leased: dict[str, dict[tuple, int]] = {}
        # called (without arguments) when the set of watched directories changes: the shell
        # then updates its kernel watches
        self.on_change = None
        # called (without arguments) before a watch is added or a directory lease granted
        # (`catch_up`): the shell reads what the kernel has queued, so that a change made
        # before is not reported to the new watch, nor breaks the new lease
        self.before_add = None

    # -- the watches -----------------------------------------------------------------------
    def catch_up(self) -> None:
        """Has the shell read the kernel's queued events (`before_add`) now, before a watch or
        a directory lease begins: a change made before it is not the new one's."""
        if self.before_add is not None:
            self.before_add()

    def add(self, w: Watch) -> None:
        self.catch_up()
        self._watches[w] = None
        self._of_key.setdefault(w.key, {})[w] = None
        self._place(w)
        self._changed()

    def remove(self, w: Watch) -> None:
        if w in self._watches:
            del self._watches[w]
            _forget(self._of_key, w.key, w)
            self._displace(w)
            self._release(w)
            w.changes, w.size = [], 0
            if not self.active():
                self._own.clear()      # no kernel watch is left to echo them
            self._changed()

    def moved(self, w: Watch, path: str) -> None:
        """The directory `w` watches was renamed through the server to `path` (absolute):
        the watch follows it, as a handle's watch does on Windows (Samba's stays on the old
        name)."""
        if w not in self._watches:
            return
        self._displace(w)
        w.path = path.rstrip("/") or "/"
        self._place(w)
        self._changed()

    def _place(self, w: Watch) -> None:
        """`w` in the indexes by path."""
        self._at.setdefault(w.path, {})[w] = None
        if w.recursive:
            self._recursive_at[w.path] = self._recursive_at.get(w.path, 0) + 1

    def _displace(self, w: Watch) -> None:
        _forget(self._at, w.path, w)
        if w.recursive:
            left = self._recursive_at.pop(w.path) - 1
            if left:
                self._recursive_at[w.path] = left

    def lease_held(self, path: str, key: tuple, held: bool) -> None:
        """A directory lease on `path` (the directory's (st_dev, st_ino) `key`) began (`held`)
        or ended (one open's: ServerState.watch_leased_directory)."""
        keys = self._leased.setdefault(path, {})
        left = keys.get(key, 0) + (1 if held else -1)
        if left > 0:
            keys[key] = left
        else:
            keys.pop(key, None)
        if not keys:
            del self._leased[path]
            if not self.active():
                self._own.clear()      # (as `remove`)
        if (held and left == 1) or not keys:
            # a directory to watch (another directory under a leased name too: the one
            # leased before may have been moved away by another program, its name left
            # unwatched), or one no longer to
            self._changed()

    def paths_leased(self, key: tuple) -> list[str]:
        """The paths the directory `key` is watched under for its leases."""
        return [path for path, keys in self._leased.items() if key in keys]

    def leased_only(self, path: str) -> bool:
        """Whether `path` is watched for its directory leases alone (no watch of a client's)."""
        return path in self._leased and path not in self._at

    def leased(self, path: str) -> tuple:
        """The keys of the directories leased under `path` (mostly one; none: not leased)."""
        return tuple(self._leased.get(path, ()))

    def mark_own(self, path: str) -> None:
        """The server changed `path` (absolute), in a way a directory lease takes account of
        (smb.dirleases), whether or not a watch is told: its kernel echo is not taken for
        another program's change."""
        if self.active():
            self._own[path] = self._epoch

    def active(self) -> bool:
        """Whether any watch exists, or a leased directory is watched (posting a change is
        then worth its path: one the server made is not taken for another program's)."""
        return bool(self._watches) or bool(self._leased)

    def directories(self) -> dict[str, bool]:
        """The directories watched, each with whether its subdirectories are watched too:
        what the shell keeps kernel watches on (the leased directories too)."""
        # (per directory, not per watch: asked whenever a watch comes or goes)
        recursive = self._recursive_at
        found = {path: path in recursive for path in self._at}
        for path in self._leased:
            found.setdefault(path, False)
        return found

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    # -- changes the server makes ------------------------------------------------------------
    def post(self, path: str, action: int, what: int, *, own: bool = True,
             directory: tuple | None = None) -> None:
        """Records a change of `path` (absolute) for every watch it concerns; `directory`:
        the (st_dev, st_ino) of the directory it happened in, when known."""
        if own:
            self.mark_own(path)
        if not self._watches:
            return
        for w in self._concerned(path, what, directory, gone=action in (REMOVED, RENAMED_OLD_NAME)):
            self._record(w, action, w.relative(path))
            self._wake(w)

    def post_open(self, o, action: int, what: int) -> None:
        """A change of the file an open names: a named stream's is reported as the stream's
        own action on "file:stream" (ADDED_STREAM, ...) with the stream filter bits."""
        if o.stream is None:
            self.post(o.path(), action, what)
            return
        if not self.active():
            return
        base = "/".join([o.tree.fs.root] + list(o.base_parts or []))
        self.mark_own(base)
        if not self._watches or action not in STREAM_ACTIONS:
            return
        judged: dict = {}
        for w in self._concerned(base, stream_filter(what), judged=judged):
            rel = w.relative(base)
            if not self._may_read(w, rel, judged):
                continue        # its streams are not the account's to list: not told
            self._record(w, STREAM_ACTIONS[action], f"{rel}:{o.stream}")
            self._wake(w)

    def post_rename(self, old: str, new: str, is_dir: bool, *, own: bool = True,
                    old_directory: tuple | None = None, new_directory: tuple | None = None) -> None:
        """A rename: within one directory the OLD_NAME and NEW_NAME pair, answered together;
        across directories a removal and an addition. A file renamed also reports its
        attributes and creation time modified under the new name, as Windows does.
        `old_directory`, `new_directory`: the directories' (st_dev, st_ino), when known."""
        if own:
            self.mark_own(old)
            self.mark_own(new)
        if not self._watches:
            return
        what = DIR_NAME if is_dir else FILE_NAME
        same_dir = old.rpartition("/")[0] == new.rpartition("/")[0]
        woken = []
        judged: dict = {}
        # (the old name is gone: within one directory, the file under its new name stands for it)
        for w in self._concerned(old, what, old_directory, judged, gone=True,
                                 judged_as=new if same_dir else None):
            self._record(w, RENAMED_OLD_NAME if same_dir else REMOVED, w.relative(old))
            woken.append(w)
        for w in self._concerned(new, what, new_directory, judged):
            self._record(w, RENAMED_NEW_NAME if same_dir else ADDED, w.relative(new))
            woken.append(w)
        if not is_dir:
            for w in self._concerned(new, ATTRIBUTES | CREATION, new_directory, judged):
                self._record(w, MODIFIED, w.relative(new))
                woken.append(w)
        for w in dict.fromkeys(woken):
            self._wake(w)

    def delete_pending(self, key: tuple) -> None:
        """The directory `key` is to be deleted: the requests waiting on its watches end with
        STATUS_DELETE_PENDING (MS-FSA 2.1.5.4: a watched directory being deleted)."""
        for w in list(self._of_key.get(key, ())):
            if w.key == key:
                for deliver in list(w.waiting):
                    deliver(wire.STATUS_DELETE_PENDING)

    # -- changes the kernel reports (fed by the shell) -----------------------------------------
    def observed(self, path: str, action: int, what: int, directory: tuple | None = None) -> bool:
        """A change the kernel reported: recorded like the server's own, unless the server
        made it itself in the last epoch or two (then it was posted already). `directory`:
        the (st_dev, st_ino) of the directory the kernel saw it in (what bears the name
        now may be another directory: the kernel's events are read a moment later). True:
        another program's change (its directory's leases are the shell's to break)."""
        if self.made_by_server(path):
            return False
        self.post(path, action, what, own=False, directory=directory)
        return True

    def made_by_server(self, path: str) -> bool:
        """Whether the server changed `path` itself in the last epoch or two (`mark_own`)."""
        return self._own.get(path, -2) >= self._epoch - 1

    def observed_rename(self, old: str, new: str, is_dir: bool, old_directory: tuple | None = None,
                        new_directory: tuple | None = None) -> bool:
        if self.made_by_server(old) or self.made_by_server(new):
            return False
        self.post_rename(old, new, is_dir, own=False, old_directory=old_directory,
                         new_directory=new_directory)
        return True

    def overflow(self, path: str | None = None) -> None:
        """Changes below `path` (None: anywhere) were lost (the kernel's queue overflowed, or a
        directory could not be watched): the watches covering it answer
        STATUS_NOTIFY_ENUM_DIR next, those whose account may list `path` (what was lost in
        a directory it may not list would not have been reported to it anyway)."""
        judged: dict = {}
        for w in list(self._watches):
            below = w.recursive and path is not None and path.startswith(w.path.rstrip("/") + "/")
            if below and not self._may_list(w, w.relative(path + "/-"), None, judged):
                continue
            if path is None or path == w.path or below:
                self._overflow(w)
                self._wake(w)

    def tick(self) -> None:
        """A new epoch (the shell calls this about every second, after reading what the kernel
        has queued): the server's own changes older than the last epoch are forgotten."""
        self._epoch += 1
        self._own = {p: e for p, e in self._own.items() if e >= self._epoch - 1}

    # -- recording -------------------------------------------------------------------------------
    def _watching(self, path: str) -> list[Watch]:
        """The watches a change of `path` may concern (`Watch.relative` decides): those of its
        directory, and the recursive ones of the directories above it."""
        parent = path.rpartition("/")[0]
        found = list(self._at.get(parent, ()))
        while parent not in ("", "/"):
            parent = parent.rpartition("/")[0] or "/"
            found += [w for w in self._at.get(parent, ()) if w.recursive]
        return found

    def _concerned(self, path: str, what: int, directory: tuple | None = None,
                   judged: dict | None = None, *, gone: bool = False,
                   judged_as: str | None = None) -> list[Watch]:
        """The watches a change of `path` is reported to. `judged` keeps, for one change (a
        rename's names), what `_may_list` and `_shown` answered per watch and name. `gone`:
        the name no longer exists (where the share hides entries for what they are, the
        watches that cannot judge it overflow: STATUS_NOTIFY_ENUM_DIR); `judged_as`: the
        path of the same file in the same directory, judged instead."""
        out = []
        judged = {} if judged is None else judged
        for w in self._watching(path):
            if not w.filter & what:
                continue
            rel = w.relative(path)
            if rel is None or w.vetoed(rel) or not self._may_list(w, rel, directory, judged):
                continue
            if w.shows is not None:
                name = None if gone and judged_as is None else (judged_as or path).rpartition("/")[2]
                shown = self._shown(w, rel, name, directory, judged)
                if shown is False:
                    continue            # left out of the account's listings: not told
                if shown is None:
                    self._overflow(w)   # cannot be judged: the client lists the directory again
            out.append(w)
        return out

    @staticmethod
    def _shown(w: Watch, rel: str, name: str | None, directory: tuple | None,
               judged: dict) -> bool | None:
        """Whether a listing made as the watch's account shows the directories of `rel` and
        `name` in the last of them (`Watch.shows`); None: it cannot be judged."""
        dirs = rel.split("/")[:-1]
        key = (_alike(w), "shown", tuple(dirs), name, directory)
        # (unjudged: None, the client lists the directory instead)
        return _judged(judged, key, lambda: w.shows(dirs, name, directory), None,
                       "change notify: cannot judge whether %s is listed", rel)

    @staticmethod
    def _may_list(w: Watch, rel: str, directory: tuple | None, judged: dict) -> bool:
        """Whether the watch's account could learn the name `rel` by listing: a name in the
        watched directory itself, yes (its open was granted FILE_LIST_DIRECTORY); one below
        it only where `w.lists` says the account may list every directory down to it."""
        dirs = rel.split("/")[:-1]
        if not dirs or w.lists is None:
            return True
        key = (_alike(w), tuple(dirs), directory)
        return _judged(judged, key, lambda: bool(w.lists(dirs, directory)), False,
                       "change notify: cannot judge whether %s may be reported", rel)

    @staticmethod
    def _may_read(w: Watch, rel: str, judged: dict) -> bool:
        """Whether the watch's account may read the file `rel` (`Watch.reads`): a failure to
        judge says no."""
        if w.reads is None:
            return True
        *dirs, name = rel.split("/")
        key = (_alike(w), "reads", tuple(dirs), name)
        return _judged(judged, key, lambda: bool(w.reads(dirs, name)), False,
                       "change notify: cannot judge whether %s may be read", rel)

    def _record(self, w: Watch, action: int, rel: str) -> None:
        if w.overflowed:
            return              # lost already: the client re-reads the directory anyway
        name = rel.replace("/", "\\")
        if action == MODIFIED and w.changes and w.changes[-1] == (action, name):
            return              # the same change again (a write after a write): once is enough
        size = entry_size(name)
        held = self._owner_bytes.get(w.owner, 0)
        if w.size + size > w.capacity() or held + size > OWNER_BYTES:
            self._overflow(w)
            return
        w.changes.append((action, name))
        w.size += size
        self._owner_bytes[w.owner] = held + size

    def _overflow(self, w: Watch) -> None:
        self._release(w)
        w.changes, w.size, w.overflowed = [], 0, True

    def _release(self, w: Watch) -> None:
        left = self._owner_bytes.get(w.owner, 0) - w.size
        if left > 0:
            self._owner_bytes[w.owner] = left
        else:
            self._owner_bytes.pop(w.owner, None)

    def take(self, w: Watch, max_len: int) -> tuple[bytes, bool]:
        """A watch's changes for an answer (`Watch.take`); their bytes no longer count."""
        self._release(w)
        return w.take(max_len)

    def _wake(self, w: Watch) -> None:
        if w.waiting and (w.changes or w.overflowed):
            w.waiting[0](None)
