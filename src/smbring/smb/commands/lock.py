"""LOCK (MS-SMB2 3.3.5.14): byte-range locks, blocking ones answered later."""
from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from smbring.smb import wire
from smbring.smb.errors import SMBError
from smbring.smb.locks import Lock
from smbring.smb.state import AsyncRequest, GoAsync
from smbring.smb.wire import Header

if TYPE_CHECKING:
    from smbring.smb.connection import Connection


LOCK_REQUESTS = (wire.LOCK_SHARED, wire.LOCK_EXCLUSIVE, wire.LOCK_SHARED | wire.LOCK_FAIL_IMMEDIATELY,
                 wire.LOCK_EXCLUSIVE | wire.LOCK_FAIL_IMMEDIATELY)


def h_lock(c: Connection, hdr: Header, msg: bytes, rhdr: Header, chain):
    _size, count, _seq = struct.unpack_from("<HHI", msg, 64)
    o = c.open_for(bytes(msg[72:88]), chain, hdr)
    if count == 0 or 88 + 24 * count > len(msg):
        raise SMBError(wire.STATUS_INVALID_PARAMETER)
    elements = [struct.unpack_from("<QQII", msg, 88 + 24 * i)[:3] for i in range(count)]
    body = struct.pack("<HH", 4, 0)
    if elements[0][2] & wire.LOCK_UNLOCK:   # an unlock request: element by element (3.3.5.14.1)
        released = 0
        try:
            for offset, length, flags in elements:
                if flags != wire.LOCK_UNLOCK:
                    raise SMBError(wire.STATUS_INVALID_PARAMETER)
                if not c.state.locks.release(o.key, offset, length, id(o), wake_waiters=False):
                    raise SMBError(wire.STATUS_RANGE_NOT_LOCKED)
                released += 1
        finally:
            c.locks_held -= released
            if released:
                c.state.locks.wake(o.key)       # once: each waiter retries once, not once per element
        return body, None
    for offset, length, flags in elements:
        if flags not in LOCK_REQUESTS or (count > 1 and not flags & wire.LOCK_FAIL_IMMEDIATELY):
            raise SMBError(wire.STATUS_INVALID_PARAMETER)
        if length and offset + length - 1 > 0xFFFFFFFFFFFFFFFF:
            raise SMBError(wire.STATUS_INVALID_LOCK_RANGE)
    if c.state.locks.count(o.key, id(o)) + count > c.limits.max_locks or \
            c.locks_held + count > c.limits.max_locks_per_connection:
        raise SMBError(wire.STATUS_INSUFFICIENT_RESOURCES)     # before any work
    c.state.oplocks.contend_level2(o.key, o)     # (Samba's LEVEL2_CONTEND_WINDOWS_BRL)
    wanted = [Lock(off, ln, bool(fl & wire.LOCK_EXCLUSIVE), id(o)) for off, ln, fl in elements]
    if c.state.locks.acquire_all(o.key, wanted):
        c.locks_held += count
        return body, None
    if elements[0][2] & wire.LOCK_FAIL_IMMEDIATELY:
        raise SMBError(wire.STATUS_LOCK_NOT_GRANTED)

    def start(areq: AsyncRequest) -> None:   # a blocking lock waits for a release
        def retry():
            if c.state.locks.acquire_all(o.key, wanted):
                c.locks_held += count
                stop()
                c.complete_async(areq, wire.STATUS_SUCCESS, body)

        def stop():
            c.state.locks.unwait(o.key, retry)
            if areq in o.waiting:
                o.waiting.remove(areq)

        areq.on_cancel, areq.close_status = stop, wire.STATUS_RANGE_NOT_LOCKED
        o.waiting.append(areq)
        c.state.locks.wait(o.key, retry)

    raise GoAsync(start)
