"""CHANGE_NOTIFY (MS-SMB2 3.3.5.19): answered at once when changes wait, else later.

The first request on a directory open sets up its watch (smb.notify): its completion filter,
WATCH_TREE and OutputBufferLength hold for the open's lifetime, as on Windows and in Samba
(a later request with another filter still sees what the first asked for). A request waits
until a change, a CANCEL (STATUS_CANCELLED), the close of its open, its tree connect or
session (STATUS_NOTIFY_CLEANUP), or the directory's deletion (STATUS_DELETE_PENDING).
"""
from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from smbring.smb import notify, wire
from smbring.smb.errors import SMBError
from smbring.smb.state import AsyncRequest, GoAsync
from smbring.smb.wire import Header

if TYPE_CHECKING:
    from smbring.smb.connection import Connection

WATCH_TREE = 0x1
FILE_LIST_DIRECTORY = 0x1


def h_change_notify(c: Connection, hdr: Header, msg: bytes, rhdr: Header, chain):
    _size, flags, out_len = struct.unpack_from("<HHI", msg, 64)
    o = c.open_for(bytes(msg[72:88]), chain, hdr)
    completion_filter = struct.unpack_from("<I", msg, 88)[0]
    if out_len > c.max_io():           # (as Samba: at most MaxTransactSize)
        raise SMBError(wire.STATUS_INVALID_PARAMETER)
    if not o.granted & FILE_LIST_DIRECTORY:
        raise SMBError(wire.STATUS_ACCESS_DENIED)      # (as Samba: a handle that may not list)
    if not o.is_dir:
        raise SMBError(wire.STATUS_INVALID_PARAMETER)
    watches = c.state.watches
    if o.watch is None:
        o.watch = notify.Watch(o.path(), completion_filter, bool(flags & WATCH_TREE), key=o.key,
                               max_output=out_len, names=o.tree.names, owner=c)
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
