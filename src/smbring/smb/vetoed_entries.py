"""Deleting a directory that holds only names clients cannot see (`delete veto files`, as
Samba's rmdir_internals): a directory whose every entry is vetoed (`veto files`: macOS's
`.DS_Store` and `._*` files are the usual ones) counts as empty, and its delete on close
removes them first, whatever they hold; one entry a client could see keeps it (STATUS_
DIRECTORY_NOT_EMPTY). Without the option a vetoed entry is an entry like any other, as in
Samba.

All of it as the tree's account, through the share's FileSystem: what the account may not
remove stays, and so does the directory. Bounded: a directory of more than MOST_ENTRIES
entries, or a vetoed tree deeper than MOST_DEPTH or of more than MOST_ENTRIES entries in
all, is not emptied (the delete fails as on a directory that is not empty), so that no
delete holds the event loop for long."""
from __future__ import annotations

import errno
import os
import stat

from smbring.smb.fileinfo import streams_going_with

MOST_ENTRIES = 4096
MOST_DEPTH = 32


def counts_as_empty(fs, names, fd: int, delete_veto_files: bool) -> bool:
    """Whether the open directory `fd` is empty as a delete on close sees it: no entry, or
    (`delete_veto_files`) only vetoed ones (`names`: the tree's NameRules)."""
    if not delete_veto_files:
        return not fs.names(fd, limit=1)
    entries = fs.names(fd, limit=MOST_ENTRIES + 1)
    return len(entries) <= MOST_ENTRIES and all(names.vetoed(n) for n in entries)


def remove_vetoed(fs, names, parts: list[str]) -> None:
    """Removes the directory's entries before its delete on close, where all of them are
    vetoed; leaves everything where one is not (or past the bounds). Raises OSError for what
    the account may not remove (what was removed before it stays removed, as in Samba)."""
    fd = fs.open(parts, os.O_RDONLY | os.O_DIRECTORY)
    try:
        entries = fs.names(fd, limit=MOST_ENTRIES + 1)
    finally:
        fs.close_file(fd)
    if len(entries) > MOST_ENTRIES or not all(names.vetoed(n) for n in entries):
        return
    budget = [MOST_ENTRIES]
    for name in entries:
        _remove_tree(fs, parts + [name], 0, budget)


def _remove_tree(fs, parts: list[str], depth: int, budget: list[int]) -> None:
    budget[0] -= 1
    if budget[0] < 0 or depth > MOST_DEPTH:
        raise OSError(errno.ENOTEMPTY, "too many vetoed entries to remove", "/".join(parts))
    sid = streams_going_with(fs, parts)     # (its named streams go with it)
    try:
        fs.remove(parts, False)
    except (IsADirectoryError, PermissionError) as e:
        # (unlink(2) of a directory: EISDIR on Linux, EPERM by POSIX)
        if not isinstance(e, IsADirectoryError) and not _is_directory(fs, parts):
            raise
        fd = fs.open(parts, os.O_RDONLY | os.O_DIRECTORY)
        try:
            inside = fs.names(fd, limit=MOST_ENTRIES + 1)
        finally:
            fs.close_file(fd)
        for name in inside:
            _remove_tree(fs, parts + [name], depth + 1, budget)
        fs.remove(parts, True)
    fs.remove_streams(sid)


def _is_directory(fs, parts: list[str]) -> bool:
    try:
        return stat.S_ISDIR(fs.stat(parts).st_mode)
    except OSError:
        return False
