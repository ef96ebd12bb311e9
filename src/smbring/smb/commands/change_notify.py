"""CHANGE_NOTIFY (MS-SMB2 3.3.5.19): answered at once when changes wait, else later.

The first request on a directory open sets up its watch (smb.notify): its completion filter,
WATCH_TREE and OutputBufferLength hold for the open's lifetime, as on Windows and in Samba
(a later request with another filter still sees what the first asked for). A request waits
until a change, a CANCEL (STATUS_CANCELLED), the close of its open, its tree connect or
session (STATUS_NOTIFY_CLEANUP), or the directory's deletion (STATUS_DELETE_PENDING).

With WATCH_TREE, a change below the directory is reported only if the session's account may
list every directory from the watched one down to the changed name's (`may_list_down`): the
kernel judges, the tree's file system acting as that account, as it judges a listing.

A change of a file's named stream tells the stream's name: it is reported only where the
session's account may read the file (`may_read_file`), whose streams it could otherwise list.

On a share whose rules leave entries out of listings for what they are (hide unreadable, hide
unwriteable files, hide special files, hide new files timeout: `NameRules.unlisted`), a change
is reported only if a listing made as the session's account would show its name, and each
directory on the way to it (`shown_in_listings`).
"""
from __future__ import annotations

import os
import struct
from typing import TYPE_CHECKING

from smbring.smb import notify, wire
from smbring.smb.fs import MAY_READ, MAY_SEARCH
from smbring.smb.errors import SMBError
from smbring.smb.state import AsyncRequest, GoAsync
from smbring.smb.wire import Header

if TYPE_CHECKING:
    from smbring.smb.connection import Connection

WATCH_TREE = 0x1
FILE_LIST_DIRECTORY = 0x1
# a directory as it is, opened for nothing but its identity and as a base: never a link
DIRECTORY_ONLY = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW


def h_change_notify(c: Connection, hdr: Header, msg: bytes, rhdr: Header, chain):
    _size, flags, out_len = struct.unpack_from("<HHI", msg, 64)
    o = c.open_for(bytes(msg[72:88]), chain, hdr)
    completion_filter = struct.unpack_from("<I", msg, 88)[0]
    if out_len > c.max_io(wire.CHANGE_NOTIFY):           # (as Samba: at most MaxTransactSize)
        raise SMBError(wire.STATUS_INVALID_PARAMETER)
    if not o.granted & FILE_LIST_DIRECTORY:
        raise SMBError(wire.STATUS_ACCESS_DENIED)      # (as Samba: a handle that may not list)
    if not o.is_dir:
        raise SMBError(wire.STATUS_INVALID_PARAMETER)
    if not c.policy.change_notify:
        raise SMBError(wire.STATUS_NOT_IMPLEMENTED)    # (`change notify = no`, as smbd)
    watches = c.state.watches
    if o.watch is None:
        o.watch = notify.Watch(o.path(), completion_filter, bool(flags & WATCH_TREE), key=o.key,
                               max_output=out_len, names=o.tree.names, owner=c,
                               lists=may_list_down(o) if flags & WATCH_TREE else None,
                               shows=shown_in_listings(o) if o.tree.names.unlists else None,
                               reads=may_read_file(o),
                               # (the judges' inputs: the tree's file system, which acts as its
                               # account, the watched directory, and the share's rules, by value:
                               # each tree connect has its own)
                               alike=(id(o.tree.fs), o.key, tuple(o.parts), o.tree.names))
        watches.add(o.watch)
    watch = o.watch

    def answer(status: int | None = None) -> tuple[int, bytes | None]:
        if status is not None:
            return status, None
        data, fits = watches.take(watch, out_len)
        if not fits:
            return wire.STATUS_NOTIFY_ENUM_DIR, struct.pack("<HHI", 9, 0, 0) + b"\0"
        return wire.STATUS_SUCCESS, struct.pack("<HHI", 9, 72, len(data)) + data

    if watch.changes or watch.overflowed:
        rhdr.status, body = answer()
        return body, None

    def start(areq: AsyncRequest) -> None:   # wait for the next change
        def deliver(status: int | None = None):
            stop()
            status, body = answer(status)
            c.complete_async(areq, status, body)

        def stop():
            if deliver in watch.waiting:
                watch.waiting.remove(deliver)
            if areq in o.waiting:
                o.waiting.remove(areq)

        areq.on_cancel, areq.close_status = stop, wire.STATUS_NOTIFY_CLEANUP
        o.waiting.append(areq)
        watch.waiting.append(deliver)     # after any other request already waiting on it

    raise GoAsync(start)


def may_list_down(o):
    """The judge of a watch on the directory open `o` (`notify.Watch.lists`): whether the
    tree's account may list (read and search) each directory dirs[:1], dirs[:2], ... below
    it, the last of them being `directory` ((st_dev, st_ino)) when that is known. Names
    are what a notification tells: `sub\\deeper\\name` tells `sub`, `deeper` and `name`,
    each of which the account could otherwise learn only by listing its directory.

    Each directory is opened (as the account, beneath the share's root, no link as the last
    name) and judged by that descriptor; then the chain is checked as it stands: each
    directory's parent is the one judged before it (the first's, the watched directory), and
    the last is the directory the change was seen in. A directory renamed away and another
    put in its place while the change waited (the kernel's events are read a moment later)
    so judges nothing but the directories the name really is in. Anything that cannot be
    judged (gone, refused, moved) says no: the change is not reported."""
    fs, top_key = o.tree.fs, o.key

    def lists(dirs: list[str], directory: tuple | None) -> bool:
        top = list(o.parts)     # (the open's name now: a rename through the server moves it)
        fds: list[int] = []
        try:
            for depth in range(1, len(dirs) + 1):
                fds.append(fs.open(top + dirs[:depth], DIRECTORY_ONLY))
                if not fs.may_access(fds[-1], ".", MAY_READ | MAY_SEARCH):
                    return False
            parent = top_key
            for fd in fds:
                up = fs.entry_stat(fd, [], "..")
                if up is None or (up.st_dev, up.st_ino) != parent:
                    return False
                st = fs.fstat(fd)
                parent = (st.st_dev, st.st_ino)
            return directory is None or parent == directory
        except OSError:
            return False
        finally:
            for fd in fds:
                fs.close_file(fd)
    return lists


def may_read_file(o):
    """The judge of a watch on the directory open `o` for a change of a file's named stream
    (`notify.Watch.reads`): whether the tree's account may read the file `name` in dirs
    (below the watched directory), as the kernel judges it. A stream's name is listed only
    through an open of its file (FileStreamInformation), which the account could not make on
    a file it may not read; the directories on the way are `lists`' to judge. The directory
    is opened as the account beneath the share's root, no link as the last name."""
    fs = o.tree.fs

    def reads(dirs: list[str], name: str) -> bool:
        try:
            fd = fs.open(list(o.parts) + dirs, DIRECTORY_ONLY)
        except OSError:
            return False
        try:
            return fs.may_access(fd, name, MAY_READ)
        finally:
            fs.close_file(fd)
    return reads


def shown_in_listings(o):
    """The judge of a watch on the directory open `o`, on a share whose rules leave entries out
    of listings for what they are (`notify.Watch.shows`): whether a listing made as the tree's
    account would show each of dirs[0] (in the watched directory), dirs[1] (in dirs[0]), ...
    and at last `name` (in the last of them): the very predicate QUERY_DIRECTORY applies
    (`NameRules.unlisted`), the kernel judging the account's rights.

    True: every one is shown. False: one of them is left out (the change must not be told).
    None: it cannot be judged: `name` is None (the name is gone: a removal), a name is gone
    by now, or the directories are no longer those the change happened in (the watched one
    is not `o`'s, or the last is not `directory`, (st_dev, st_ino), when that is known).
    The directories are opened as the account beneath the share's root, no link as the last
    name, and each is checked to be the entry judged in the one before it."""
    fs, top_key, rules = o.tree.fs, o.key, o.tree.names

    def judge(fd: int, parts: list[str], entry: str):
        """The entry's stat when a listing of the open directory `fd` would show it; False
        when it would leave it out; None when it is gone."""
        st = fs.entry_stat(fd, parts, entry)
        if st is None:
            return None
        return False if rules.unlisted(st, lambda mode: fs.may_access(fd, entry, mode)) else st

    def shows(dirs: list[str], name: str | None, directory: tuple | None) -> bool | None:
        top = list(o.parts)     # (as `lists`)
        fds: list[int] = []
        try:
            fds.append(fs.open(top, DIRECTORY_ONLY))
            here = fs.fstat(fds[-1])
            if (here.st_dev, here.st_ino) != top_key:
                return None
            for depth, entry in enumerate(dirs):
                st = judge(fds[-1], top + dirs[:depth], entry)
                if st is None or st is False:
                    return st
                fds.append(fs.open(top + dirs[:depth + 1], DIRECTORY_ONLY))
                here = fs.fstat(fds[-1])
                if (here.st_dev, here.st_ino) != (st.st_dev, st.st_ino):
                    return None
            if directory is not None and (here.st_dev, here.st_ino) != directory:
                return None
            if name is None:
                return None
            st = judge(fds[-1], top + dirs, name)
            return None if st is None else st is not False
        except OSError:
            return None
        finally:
            for fd in fds:
                fs.close_file(fd)
    return shows
