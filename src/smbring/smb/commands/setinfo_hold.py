"""A SET_INFO that waits for lease breaks (MS-SMB2 3.3.4.7, MS-FSA 2.1.5.14.11 and 2.1.5.14.3,
Samba's delay_for_handle_lease_break): a rename of a file, or a delete on close set through a
handle, first takes HANDLE caching from the file's other leases, whose clients may keep a
handle open under the old name (and close it once told). The request is answered
STATUS_PENDING and tried again, whole, each time a break is answered, a holder closes, or a
break's time is up (the lease is then taken away, and the rename goes on).

A holder that answers and at once takes HANDLE caching again (a new open) could hold the
request for ever: past the break timeout from the request's arrival it is refused
STATUS_ACCESS_DENIED (Samba's answer when its wait times out). A CANCEL ends the wait
(STATUS_CANCELLED, nothing renamed), so does closing the handle the request names."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from smbring.smb import wire
from smbring.smb.errors import SMBError
from smbring.smb.state import AsyncRequest, Chain, GoAsync, Open

if TYPE_CHECKING:
    from smbring.smb.connection import Connection

# where SET_INFO's FileId lies in the message (header 64 + 16)
_FILE_ID = slice(80, 96)


def wait_for_handle_breaks(c: Connection, msg, o: Open, others: list, held_since: float | None,
                           again: Callable) -> None:
    """Raises GoAsync while another lease of the open's file, or of the `others` files (keys:
    the file a rename replaces, the files open below a directory it moves), still holds
    HANDLE caching (its break sent); refuses the request once it has waited past the break
    timeout. `again(hdr, request, rhdr, chain, held_since)` handles the request anew."""
    oplocks = c.state.oplocks
    must_wait = oplocks.break_handles_for_rename(o)
    for key in others:
        must_wait |= oplocks.break_handles(key)
    if not must_wait:
        return
    now = oplocks.clock()
    if held_since is not None and now - held_since >= oplocks.timeout:
        raise SMBError(wire.STATUS_ACCESS_DENIED)
    since = now if held_since is None else held_since
    # tried again with the open itself named (a related compound's FileId -1 has no chain
    # to resolve it then)
    request = bytearray(msg)
    request[_FILE_ID] = o.fid
    raise held(c, o, [o.key, *others], bytes(request), since, again)


def held(c: Connection, o: Open, keys: list, request: bytes, since: float,
         again: Callable) -> GoAsync:
    """Tried again once anything changes on one of the files `keys` (a break answered, an
    open closed, a break's time up)."""
    keys = list(dict.fromkeys(keys))

    def start(areq: AsyncRequest) -> None:
        def retry() -> None:
            stop()
            c.resume(areq, lambda rhdr: again(areq.hdr, request, rhdr, Chain(), since))

        def stop() -> None:
            for key in keys:
                c.state.oplocks.unwait(key, retry)
            if areq in o.waiting:
                o.waiting.remove(areq)

        areq.on_cancel = stop
        o.waiting.append(areq)      # closing the handle ends the wait (STATUS_CANCELLED)
        for key in keys:
            c.state.oplocks.wait(key, retry)

    return GoAsync(start)
