"""``smbring orphaned-streams SHARE_DIR``: the named streams no file of a share has any more.

A file's named streams live in the share's stream depot (``.smbring-streams``, see
``smbring.vfs.posix``) under an id stored on the file. The server removes them with the file
whenever it deletes one; a file deleted by a local program (or an NFS client) leaves them there,
where no client can reach them, taking space. This command finds them: it walks the share,
collects the stream id of every file and directory, and lists the depot's directories that no
file names (or whose recorded file is not the one naming them). With ``--remove`` it deletes
those, and only those that are orphaned in two walks one after the other and that nothing has
changed since before the first began: a file a client makes meanwhile (its streams are newer)
or a file renamed from a directory the walk has not reached into one it has passed (the second
walk finds it) keeps its streams. A walk that cannot read every directory removes nothing.

Run it as the server's user (root, where the server runs as root): the depot is the server's
own. It may run while the server serves."""
from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import sys
import time
from dataclasses import dataclass, field

from smbring.vfs.api import STREAMS_DIR
from smbring.vfs.posix import (STREAM_BASE_XATTR, STREAM_ID_XATTR, FileMark, file_mark, stream_name,
                                valid_stream_id)


@dataclass
class Walk:
    """What one walk of a share found: the marks (device, inode, generation) of the files and
    directories holding each stream id, and what it could not read."""
    named: dict = field(default_factory=dict)      # stream id -> [FileMark]
    unread: list = field(default_factory=list)


@dataclass
class Orphan:
    sid: str
    streams: list        # the stream names it holds
    size: int            # their bytes
    changed: float       # the latest change time of the directory and its entries


def walk(root: str) -> Walk:
    """Every stream id stored on an entry below `root` (the depot not entered), without
    following symbolic links."""
    found = Walk()
    pending = [root]
    while pending:
        directory = pending.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError as e:
            if e.errno != errno.ENOENT:         # (gone meanwhile: nothing of it to keep)
                found.unread.append(f"{directory}: {e.strerror}")
            continue
        for entry in entries:
            if directory == root and entry.name == STREAMS_DIR:
                continue
            try:
                if entry.is_symlink():
                    continue
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
                sid = os.getxattr(entry.path, STREAM_ID_XATTR, follow_symlinks=False).decode("ascii", "replace")
            except OSError as e:
                if e.errno not in (errno.ENODATA, errno.ENOENT, errno.ENOTSUP, errno.EOPNOTSUPP):
                    found.unread.append(f"{entry.path}: {e.strerror}")
                continue
            if not valid_stream_id(sid):
                continue
            mark = _mark(entry)
            if mark is not None:
                found.named.setdefault(sid, []).append(mark)
    return found


def _mark(entry: os.DirEntry) -> FileMark | None:
    """The entry's FileMark, read through a descriptor of it (not followed, no device opened);
    without its generation where that cannot be had; None where it is gone."""
    try:
        fd = os.open(entry.path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        fd = None
    try:
        if fd is not None:
            st = os.fstat(fd)
            if stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode):
                return file_mark(fd, st)
        st = entry.stat(follow_symlinks=False)
        return FileMark(st.st_dev, st.st_ino)
    except OSError:
        return None
    finally:
        if fd is not None:
            os.close(fd)


def _belongs(sid: str, base: bytes | None, walked: Walk) -> bool:
    """Whether a file the walk met holds the depot directory `sid`: one naming it that is the
    file recorded there (an older directory records none: any file naming it)."""
    marks = walked.named.get(sid, ())
    recorded = FileMark.parse(base) if base is not None else None
    if recorded is None:
        return bool(marks)
    return any(recorded.is_of(m) for m in marks)


def orphans(root: str, walked: Walk) -> list[Orphan]:
    """The depot's directories no file the walk met holds."""
    depot = os.path.join(root, STREAMS_DIR)
    try:
        entries = list(os.scandir(depot))
    except FileNotFoundError:
        return []
    found = []
    for entry in entries:
        if not valid_stream_id(entry.name) or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            base = os.getxattr(entry.path, STREAM_BASE_XATTR, follow_symlinks=False)
        except OSError:
            base = None
        if _belongs(entry.name, base, walked):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            names, size, changed = [], 0, max(st.st_ctime, st.st_mtime)
            for stream in os.scandir(entry.path):
                sst = stream.stat(follow_symlinks=False)
                names.append(stream_name(stream.name) or stream.name)
                size += sst.st_size
                changed = max(changed, sst.st_ctime, sst.st_mtime)
        except OSError:
            continue        # (removed meanwhile)
        found.append(Orphan(entry.name, sorted(names), size, changed))
    return sorted(found, key=lambda o: o.sid)


def find(root: str, remove: bool) -> tuple[list[Orphan], list[str], list[str]]:
    """(the orphans, those removed, why nothing was removed where that is so)."""
    started = time.time()
    first = walk(root)
    found = orphans(root, first)
    if not remove or not found or first.unread:
        return found, [], first.unread
    second = walk(root)
    if second.unread:
        return found, [], second.unread
    again = {o.sid: o for o in orphans(root, second)}
    removed = []
    depot = os.path.join(root, STREAMS_DIR)
    for o in found:
        now = again.get(o.sid)
        # (changed since the first walk began, a second later at most for coarse clocks: a
        # file made meanwhile, whose id the walk may have passed before it was stored)
        if now is None or now.changed >= started - 1:
            continue
        shutil.rmtree(os.path.join(depot, o.sid), ignore_errors=True)
        if not os.path.lexists(os.path.join(depot, o.sid)):
            removed.append(o.sid)
    return found, removed, []


def run(args) -> int:
    root = os.path.abspath(args.share_dir)
    if not os.path.isdir(root):
        print(f"{root}: not a directory", file=sys.stderr)
        return 2
    found, removed, unread = find(root, args.remove)
    if args.json:
        print(json.dumps({"share": root, "orphans": [o.__dict__ for o in found], "removed": removed,
                          "unread": unread}, indent=2))
    else:
        for o in found:
            state = "removed" if o.sid in removed else "kept" if args.remove and not unread else "orphaned"
            print(f"{state:8}  {o.sid}  {len(o.streams)} stream(s), {o.size} bytes: {', '.join(o.streams)}")
        total = sum(o.size for o in found)
        print(f"{len(found)} stream director{'y' if len(found) == 1 else 'ies'} no file of {root} "
              f"holds ({total} bytes){f'; {len(removed)} removed' if args.remove else ''}")
        if args.remove and not unread and len(removed) < len(found):
            print("kept: changed since a second before the walk began, or held by a file the second "
                  "walk found (run again later)")
        for why in unread:
            print(f"not read: {why}", file=sys.stderr)
        if args.remove and unread:
            print("nothing removed: the walk did not read every directory", file=sys.stderr)
    return 1 if args.remove and unread else 0


def register(sub) -> None:
    p = sub.add_parser("orphaned-streams",
                       help="list (and remove) the named streams no file of a share has any more")
    p.add_argument("share_dir", help="the share's directory")
    p.add_argument("--remove", action="store_true",
                   help="remove them (only those orphaned in two walks and unchanged since)")
    p.add_argument("--json", action="store_true", help="the findings as JSON")
    p.set_defaults(func=run)

