"""Deleting a directory that holds only names clients cannot see (`delete veto files`, as
Samba's rmdir_internals): a directory whose every entry is vetoed (`veto files`: macOS's
`.DS_Store` and `._*` files are the usual ones) counts as empty, and its delete on close
removes them first, whatever they hold; one entry a client could see keeps it (STATUS_
DIRECTORY_NOT_EMPTY). Without the option a vetoed entry is an entry like any other, as in
Samba.

All of it as the tree's account, through the share's FileSystem: what the account may not
remove stays, and so does the directory. Bounded: a directory of more than MOST_ENTRIES
entries is not emptied, and a vetoed directory of more than MOST_ENTRIES entries is emptied
no further (the delete fails as on a directory that is not empty), so that no delete holds
the event loop for long."""
from __future__ import annotations

import os

from smbring.smb.fileinfo import streams_going_with

MOST_ENTRIES = 4096


def only_vetoed(fs, names, fd: int) -> list[str] | None:
    """The entries of the open directory `fd` where every one is vetoed (`names`: the tree's
    NameRules) and there are at most MOST_ENTRIES; None otherwise."""
    entries = fs.names(fd, limit=MOST_ENTRIES + 1)
    return entries if len(entries) <= MOST_ENTRIES and all(names.vetoed(n) for n in entries) else None


def counts_as_empty(fs, names, fd: int, delete_veto_files: bool) -> bool:
    """Whether the open directory `fd` is empty as a delete on close sees it: no entry, or
    (`delete_veto_files`) only vetoed ones."""
    if not delete_veto_files:
        return not fs.names(fd, limit=1)
    return only_vetoed(fs, names, fd) is not None


def remove_vetoed(fs, names, parts: list[str]) -> None:
    """Removes the directory's entries before its delete on close, where all of them are
    vetoed; leaves everything where one is not (or past the bounds). Raises OSError for what
    the account may not remove (what was removed before it stays removed, as in Samba)."""
    fd = fs.open(parts, os.O_RDONLY | os.O_DIRECTORY)
    try:
        entries = only_vetoed(fs, names, fd)
    finally:
        fs.close_file(fd)
    if entries is None:
        return
    left = MOST_ENTRIES
    for name in entries:
        sid = streams_going_with(fs, parts + [name])    # (a vetoed file's named streams go with it)
        try:
            fs.remove(parts + [name], False)
            left -= 1
        except IsADirectoryError:
            # everything below it, never through a symlink (one swapped in meanwhile by a
            # local program is deleted as a name, not followed: FileSystem.remove_tree), and
            # the named streams of the files in it with them
            gone: list = []
            try:
                left -= fs.remove_tree(parts + [name], left, gone)
            finally:
                for found in gone:
                    fs.remove_streams(*found)
        fs.remove_streams(sid)
