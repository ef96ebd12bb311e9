"""CHANGE_NOTIFY (MS-SMB2 3.3.5.19): answered at once when changes wait, else later."""
from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from smbring.smb import notify, wire
from smbring.smb.errors import SMBError
from smbring.smb.limits import MAX_IO
from smbring.smb.state import AsyncRequest, GoAsync
from smbring.smb.wire import Header

if TYPE_CHECKING:
    from smbring.smb.connection import Connection


def h_change_notify(c: Connection, hdr: Header, msg: bytes, rhdr: Header, chain):
    _size, flags, out_len = struct.unpack_from("<HHI", msg, 64)
    o = c.open_for(bytes(msg[72:88]), chain, hdr)
    completion_filter = struct.unpack_from("<I", msg, 88)[0]
    if not o.is_dir or out_len > MAX_IO:
        raise SMBError(wire.STATUS_INVALID_PARAMETER)
    if o.watch is None:
        o.watch = notify.Watch(o.path(), completion_filter, bool(flags & 0x1))  # WATCH_TREE
        c.state.watches.add(o.watch)
    watch = o.watch

    def answer() -> tuple[int, bytes]:
        data, fits = watch.take(out_len)
        if not fits:
            return wire.STATUS_NOTIFY_ENUM_DIR, struct.pack("<HHI", 9, 0, 0) + b"\0"
        return wire.STATUS_SUCCESS, struct.pack("<HHI", 9, 72, len(data)) + data

    if watch.changes or watch.overflowed:
        rhdr.status, body = answer()
        return body, None

    def start(areq: AsyncRequest) -> None:   # wait for the next change
        def deliver():
            stop()
            status, body = answer()
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
