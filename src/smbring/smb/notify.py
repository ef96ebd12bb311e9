"""Change notification shared by every connection (MS-SMB2 3.3.5.19, MS-FSA 2.1.5.10).

A directory open that has asked for CHANGE_NOTIFY owns a `Watch`, kept in the server's
`ChangeWatches` (in its `ServerState`): from then on, changes below it that match its
completion filter are recorded, and handed to the pending request (or the next one, like
Windows, when none is waiting). Changes are posted by the server itself when it
creates, deletes, renames or modifies a file, so clients see what other clients of the same
server do; a share's files changed by other programs are not reported.
"""
from __future__ import annotations

import struct

from smbring.smb import wire

FILE_NAME, DIR_NAME, ATTRIBUTES, SIZE, LAST_WRITE = 0x1, 0x2, 0x4, 0x8, 0x10
LAST_ACCESS, CREATION, EA, SECURITY = 0x20, 0x40, 0x80, 0x100
ADDED, REMOVED, MODIFIED, RENAMED_OLD_NAME, RENAMED_NEW_NAME = 1, 2, 3, 4, 5
MAX_BUFFERED = 1024     # more unread changes than this: the client must re-read the directory


class Watch:
    def __init__(self, path: str, completion_filter: int, recursive: bool):
        self.path = path.rstrip("/")
        self.filter = completion_filter
        self.recursive = recursive
        self.changes: list[tuple[int, str]] = []
        self.overflowed = False
        # the requests waiting, oldest first: the next change answers the first of them
        self.waiting: list = []

    def take(self, max_len: int) -> tuple[bytes, bool]:
        """The recorded changes as FILE_NOTIFY_INFORMATION entries; False when they do not
        fit (or too many were lost) and the client must enumerate the directory instead."""
        changes, overflowed = self.changes, self.overflowed
        self.changes, self.overflowed = [], False
        out = encode(changes)
        if overflowed or len(out) > max_len:
            return b"", False
        return out, True


def encode(changes: list[tuple[int, str]]) -> bytes:
    """FILE_NOTIFY_INFORMATION entries (MS-FSCC 2.7.1)."""
    def entry(action: int, name: str) -> bytes:
        n = name.encode("utf-16-le")
        return struct.pack("<III", 0, action, len(n)) + n
    return wire.chain(entry(action, name) for action, name in changes)


class ChangeWatches:
    """Every watch of the server: a change one connection makes is seen by the others'."""

    def __init__(self) -> None:
        self._watches: list[Watch] = []

    def add(self, w: Watch) -> None:
        self._watches.append(w)

    def remove(self, w: Watch) -> None:
        if w in self._watches:
            self._watches.remove(w)

    def active(self) -> bool:
        """Whether any watch exists (posting a change is then worth its path)."""
        return bool(self._watches)

    def post(self, path: str, action: int, what: int) -> None:
        """Records a change of `path` (absolute) for every watch it concerns."""
        if not self._watches:
            return
        parent, _, name = path.rpartition("/")
        for w in list(self._watches):
            if not w.filter & what:
                continue
            if parent == w.path:
                rel = name
            elif w.recursive and parent.startswith(w.path + "/"):
                rel = path[len(w.path) + 1:].replace("/", "\\")
            else:
                continue
            if len(w.changes) >= MAX_BUFFERED:
                w.overflowed = True
            else:
                w.changes.append((action, rel))
            if w.waiting:
                w.waiting[0]()
