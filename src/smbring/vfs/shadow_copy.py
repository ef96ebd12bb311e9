"""Previous versions of a share's files from file-system snapshots, as Samba's shadow_copy2
finds them (`vfs objects = shadow_copy2`): Windows' "Previous Versions" tab, and any client
that sends a timewarp token (a TWrp create context; smbclient turns an "@GMT-..." path
component into one).

The snapshots are directories named by their time (`shadow:format`, default
"@GMT-%Y.%m.%d-%H.%M.%S", in UTC unless `shadow:localtime`) in a snapshot directory
(`shadow:snapdir`, default ".snapshots", relative to the share's mount point unless it is
absolute: `.zfs/snapshot` for a ZFS dataset, `.snapshots` for Snapper's btrfs), each holding
the file system as it was, in which the share's directory lies at its path below
`shadow:basedir` (default: the mount point). What they hold is served read-only.

Only the snapshot directory's names are read by the server itself; what a snapshot holds is
reached as the session's account, below the share's directory in that snapshot, as the live
share is.
"""
from __future__ import annotations

import calendar
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import MappingProxyType

DEFAULT_FORMAT = "@GMT-%Y.%m.%d-%H.%M.%S"
TOKEN_FORMAT = "@GMT-%Y.%m.%d-%H.%M.%S"      # how SMB names a previous version (MS-SMB2 2.2.13.2.7)
MAX_SNAPSHOTS = 4096       # names of the snapshot directory looked at, at most


@dataclass(frozen=True)
class ShadowCopyOptions:
    """A share's shadow:* options (smb.conf), as Samba names them."""

    snapdir: str = ".snapshots"
    basedir: str = ""           # "": the mount point
    mountpoint: str = ""        # "": the share directory's mount point, found
    format: str = DEFAULT_FORMAT
    localtime: bool = False
    descending: bool = True     # shadow:sort = desc (Samba's default), else asc


def mount_point(path: str) -> str:
    """The mount point of the file system `path` lies on: the highest directory above it
    on the same device."""
    path = os.path.realpath(path)
    device = os.stat(path).st_dev
    while path != "/":
        parent = os.path.dirname(path)
        if os.stat(parent).st_dev != device:
            break
        path = parent
    return path


def _layout(options: ShadowCopyOptions, share_path: str) -> tuple[str, str]:
    """(the snapshot directory, the share's directory relative to a snapshot's root)."""
    share_path = os.path.realpath(share_path)
    mount = options.mountpoint or mount_point(share_path)
    base = options.basedir or mount
    relative = os.path.relpath(share_path, base)
    if relative == ".":
        relative = ""
    elif relative.startswith(".."):
        raise ValueError(f"{share_path} is not below shadow:basedir {base}")
    snapdir = options.snapdir if options.snapdir.startswith("/") else os.path.join(mount, options.snapdir)
    return snapdir, relative


def snapshots(options: ShadowCopyOptions, share_path: str, layout: tuple[str, str] | None = None
              ) -> list[tuple[int, str]]:
    """The share's snapshots: (their time in seconds since 1970, UTC; the share's directory in
    them), newest first unless shadow:sort says asc; only those that hold the share's
    directory. None readable: none. `layout`: `_layout`'s answer, where the caller has it."""
    try:
        snapdir, relative = layout or _layout(options, share_path)
        names = []
        with os.scandir(snapdir) as entries:
            for entry in entries:
                names.append(entry.name)
                if len(names) >= MAX_SNAPSHOTS:
                    break
    except (OSError, ValueError):
        return []
    found = []
    for name in names:
        try:
            parsed = time.strptime(name, options.format)
        except ValueError:
            continue        # (not a snapshot: another name in the directory)
        seconds = int(time.mktime(parsed)) if options.localtime else calendar.timegm(parsed)
        directory = os.path.join(snapdir, name, relative) if relative else os.path.join(snapdir, name)
        if os.path.isdir(directory):
            found.append((seconds, directory))
    found.sort(reverse=options.descending)
    return found


class SnapshotLists:
    """Each share's snapshots (`snapshots`), listed again only when its snapshot directory has
    changed (another inode, another modification time: a snapshot made or removed) or the
    list is `fresh_for` seconds old (a snapshot directory whose time does not move: ZFS's
    `.zfs/snapshot`): a CREATE naming a previous version costs one stat of the directory,
    not a listing with every name parsed (~10 us each) and a look into each snapshot. Where
    the snapshot directory is (the share's real path, its mount point: a stat of every
    directory above it) is found again with each listing, so within `fresh_for` seconds of
    an admin moving the share or its mount. At most `most` shares' lists are kept."""

    def __init__(self, fresh_for: float = 10.0, most: int = 256):
        self.fresh_for = fresh_for
        self.most = most
        # (options, share path) -> (stamp, when listed, list, snapshot directory, {time: directory})
        self._lists: dict = {}

    def __len__(self) -> int:
        """How many shares' lists are kept."""
        return len(self._lists)

    def of(self, options: ShadowCopyOptions, share_path: str) -> Sequence[tuple[int, str]]:
        """The share's snapshots, as `snapshots` lists them (not to be changed: kept)."""
        return self._kept(options, share_path)[2]

    def at(self, options: ShadowCopyOptions, share_path: str, seconds: int) -> str | None:
        """The share's directory in the snapshot taken at `seconds` (as a token names it),
        if any (of two taken at one time, the first listed)."""
        return self._kept(options, share_path)[4].get(seconds)

    def _kept(self, options: ShadowCopyOptions, share_path: str) -> tuple:
        """(stamp, when listed, list, snapshot directory, {time: directory}), listed again
        where it must be."""
        key = (options, share_path)
        now = time.monotonic()
        kept = self._lists.get(key)
        if kept is not None and now - kept[1] < self.fresh_for:
            try:
                st = os.stat(kept[3])
            except OSError:
                st = None
            if st is not None and (st.st_dev, st.st_ino, st.st_mtime_ns) == kept[0]:
                return kept
        try:
            layout = _layout(options, share_path)
            st = os.stat(layout[0])
        except (OSError, ValueError):
            self._lists.pop(key, None)
            return NO_SNAPSHOTS
        # (listed after the stat: a change meanwhile lists again)
        found = snapshots(options, share_path, layout)
        by_time: dict[int, str] = {}
        for when, directory in found:
            by_time.setdefault(when, directory)
        if key not in self._lists and len(self._lists) >= self.most:
            del self._lists[next(iter(self._lists))]
        kept = self._lists[key] = ((st.st_dev, st.st_ino, st.st_mtime_ns), now, found, layout[0], by_time)
        return kept


# SnapshotLists._kept's answer where none are reachable (read only: it is shared)
NO_SNAPSHOTS = (None, 0.0, (), "", MappingProxyType({}))


def token(seconds: int) -> str:
    """The @GMT token of a time: "@GMT-2026.12.04-22.30.00"."""
    return time.strftime(TOKEN_FORMAT, time.gmtime(seconds))
