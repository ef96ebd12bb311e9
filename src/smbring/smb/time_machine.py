"""Time Machine destinations: shares with `vfs objects = fruit` and `fruit:time machine`, as
Samba's vfs_fruit serves them.

macOS backs up into a sparse bundle at the share's top (`<host>.sparsebundle`): a directory
whose `bands/` hold the disk image in files of one size, which its `Info.plist` names
(`band-size`). The AAPL reply offers FULL_SYNC on such a share (macOS then flushes what it
must keep). With `fruit:time machine max size`, the share tells macOS it holds that much,
of which the bundles use band size x bands (`used_bytes`): Time Machine then thins old
backups before it passes the bound, as it would on a disk of that size. A bundle whose
Info.plist or bands cannot be read yet (macOS is making it) counts for nothing, as Samba
counts it."""
from __future__ import annotations

import logging
import os
import re

from smbring.smb.fs import FileSystem, PathError

log = logging.getLogger("smbring.smb")

SPARSE_BUNDLE = ".sparsebundle"
BAND_SIZE = re.compile(rb"<key>band-size</key>\s*<integer>(\d{1,19})</integer>")
PLIST_MOST = 64 << 10       # an Info.plist is a few hundred bytes: more is not read
UNIT = 1024                 # the allocation unit shown: two 512-byte sectors, as smbd shows
MOST_BANDS = 1 << 21        # bands counted per bundle at most (16 TiB of 8 MiB bands)


def used_bytes(fs: FileSystem, counted: dict) -> int:
    """What the share's sparse bundles take: each one's band size times its bands. A
    bundle's count is taken again only where its bands directory or its Info.plist changed
    since `counted` (bundle name -> (what they were, bytes), kept by the caller): macOS asks
    often during a backup, and a bundle of a few TiB has some 100,000 bands."""
    total, seen = 0, set()
    for name in _names(fs, []):
        if not name.endswith(SPARSE_BUNDLE) or name == SPARSE_BUNDLE:
            continue
        seen.add(name)
        key = _changed(fs, name)
        if key is None:
            continue
        if name not in counted or counted[name][0] != key:
            band_size = _band_size(fs, name)
            counted[name] = key, band_size * len(_names(fs, [name, "bands"], MOST_BANDS)) if band_size else 0
        total += counted[name][1]
    for gone in counted.keys() - seen:
        del counted[gone]
    return total


def sizes(tree, most: int) -> tuple[int, int]:
    """(total units, available units) of the tree's share, which may hold `most` bytes of
    backups."""
    free = max(most - used_bytes(tree.fs, tree.time_machine_counted), 0)
    return most // UNIT, free // UNIT


def _changed(fs: FileSystem, bundle: str) -> tuple | None:
    """What tells a bundle's count changed: its bands directory's and Info.plist's identity
    and modification times (a band made or removed changes the directory's, within the
    kernel's clock tick); None where it has no bands yet."""
    try:
        bands, plist = fs.stat([bundle, "bands"]), fs.stat([bundle, "Info.plist"])
    except (OSError, PathError):
        return None
    return bands.st_ino, bands.st_mtime_ns, plist.st_ino, plist.st_mtime_ns, plist.st_size


def _names(fs: FileSystem, parts: list[str], limit: int | None = None) -> list[str]:
    try:
        fd = fs.open(parts, os.O_RDONLY | os.O_DIRECTORY)
    except (OSError, PathError):
        return []
    try:
        return [n for n in fs.names(fd, limit) if n not in (".", "..")]
    except OSError:
        return []
    finally:
        fs.close_file(fd)


def _band_size(fs: FileSystem, bundle: str) -> int:
    try:
        fd = fs.open([bundle, "Info.plist"], os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except (OSError, PathError):
        return 0
    try:
        found = BAND_SIZE.search(fs.read_head(fd, PLIST_MOST))
    except OSError:
        found = None
    finally:
        fs.close_file(fd)
    if found is None:
        log.debug("%s: no band size in its Info.plist (yet): not counted", bundle)
        return 0
    return int(found.group(1))
