"""File name tunneling, as NTFS does it: a program that saves a file by deleting (or renaming
away) the old one and creating the new one under the old one's 8.3 short name, as programs
that know only short names do, gets the old long name back instead of a new file named by
the short name. Without it such a save turns "quarterly report.docx" into "QUART~4Q.DOC".

NTFS keeps what it removed for 15 seconds (`MaximumTunnelEntryAgeInSeconds`), at most 1,024
names (`MaximumTunnelEntries`); so does this cache. Samba's mangled-name cache gives the same
answer (smbtorture's smb2.mangle counts on it, as Windows passes it by tunneling). An entry is
the removing user's: another user creating the short name gets a file of that name, never a
name he may not have been able to list. It is this process's (each worker keeps its own, as
each smbd process keeps its cache). The short name is tunneled, not the creation time."""
from __future__ import annotations

import time
from collections import OrderedDict
from typing import TYPE_CHECKING

from smbring.vfs.short_names import mangled_name, may_be_mangled

if TYPE_CHECKING:
    from smbring.smb.fs import FileSystem

TUNNEL_SECONDS = 15.0       # how long a removed name is kept (NTFS's default)
MAX_TUNNELED = 1024         # removed names kept at most, the oldest dropped first (NTFS's)


class NameTunnel:
    """Removed long names by (directory, short name, user), for a while: `removed` records
    one, `long_name` takes it back once."""

    __slots__ = ("_entries", "_clock")

    def __init__(self, clock=time.monotonic) -> None:
        # (directory's (st_dev, st_ino), SHORT NAME, user SID) -> (long name, when removed);
        # in the order of their removals
        self._entries: OrderedDict[tuple, tuple[str, float]] = OrderedDict()
        self._clock = clock

    def removed(self, directory: tuple, name: str, user: bytes) -> None:
        """`name` of `directory` was deleted or renamed away by `user`: kept where it has a
        mangled short name (an 8.3 name is its own short name: nothing to give back)."""
        short = mangled_name(name)
        if short is None:
            return
        key = (directory, short, user)
        self._entries.pop(key, None)
        self._entries[key] = (name, self._clock())
        while len(self._entries) > MAX_TUNNELED:
            self._entries.popitem(last=False)

    def lost(self, fs: FileSystem, parts: list[str], user: bytes) -> None:
        """`removed` for the name `parts` of the share `fs`, its directory's id read only
        where the name has a short name other than itself."""
        if not parts or mangled_name(parts[-1]) is None:
            return
        try:
            st = fs.stat(parts[:-1])
        except OSError:
            return
        self.removed((st.st_dev, st.st_ino), parts[-1], user)

    def found(self, fs: FileSystem, parts: list[str], user: bytes) -> str | None:
        """`long_name` for the new name `parts` of the share `fs`, its directory's id read
        only where the name could be a short one and anything is kept."""
        if not parts or not self._entries or not may_be_mangled(parts[-1]):
            return None
        try:
            st = fs.stat(parts[:-1])
        except OSError:
            return None
        return self.long_name((st.st_dev, st.st_ino), parts[-1], user)

    def long_name(self, directory: tuple, short: str, user: bytes) -> str | None:
        """The long name `user` removed from `directory` in the last TUNNEL_SECONDS whose
        short name `short` is (any case), taken out of the cache; None if none."""
        if not self._entries or not may_be_mangled(short):
            return None
        now = self._clock()
        while self._entries:        # (the oldest first: drop what has expired)
            _key, (_name, when) = next(iter(self._entries.items()))
            if now - when <= TUNNEL_SECONDS:
                break
            self._entries.popitem(last=False)
        entry = self._entries.pop((directory, short.upper(), user), None)
        return entry[0] if entry is not None else None

    def __len__(self) -> int:
        return len(self._entries)
