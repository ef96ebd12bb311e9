"""FSCTL_LMR_REQUEST_RESILIENCY (MS-SMB2 2.2.31.3, 3.3.5.15.9): the client asks that its open
survive the loss of its connection for a while, whatever oplock it holds.

The open becomes a resilient one in the durable table (`smb.durable`, a `Durable` marked
`resilient`): when its session is gone it waits detached for the timeout asked for, under the
same bound (`max disconnected durable handles`) and the same rules as a durable open, and is
reclaimed by a DHnC of the same user through the same share (MS-SMB2 3.3.5.9.7).

Granted on a file (not a directory nor a stream) of a share with `durable handles = yes`
(off, as for the worker processes of `--workers`: STATUS_NOT_SUPPORTED, as a server that does
not support it answers), for a session of a user (a guest could not be told from another
guest when reclaiming: STATUS_NOT_SUPPORTED). SMB 2.0.2 has no such request:
STATUS_INVALID_DEVICE_REQUEST (Windows'). An input shorter than NETWORK_RESILIENCY_REQUEST, or a
timeout above the server's maximum: STATUS_INVALID_PARAMETER."""
from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from smbring.smb import wire
from smbring.smb.commands.create_durable import session_user
from smbring.smb.durable import Durable
from smbring.smb.errors import SMBError
from smbring.smb.state import Open

if TYPE_CHECKING:
    from smbring.smb.connection import Connection
    from smbring.smb.wire import Header

FSCTL_LMR_REQUEST_RESILIENCY = 0x001401D4
RESILIENCY_REQUEST_SIZE = 8         # Timeout (ms), Reserved
MAX_RESILIENCY_TIMEOUT_MS = 300_000     # MaxResiliencyTimeout (as the v2 durable cap)
DEFAULT_RESILIENCY_TIMEOUT = 120.0      # seconds, for a request asking 0 (Windows')


def request_resiliency(c: "Connection", hdr: "Header", o, data, max_out: int, rhdr) -> bytes:
    if c.dialect == wire.SMB202:
        raise SMBError(wire.STATUS_INVALID_DEVICE_REQUEST)
    share = o.tree.share if isinstance(o, Open) and o.tree is not None and o.tree.fs is not None \
        else None
    user = session_user(c, hdr)
    if share is None or not share.durable_handles or not user or o.is_dir or o.stream is not None:
        raise SMBError(wire.STATUS_NOT_SUPPORTED)
    if len(data) < RESILIENCY_REQUEST_SIZE:
        raise SMBError(wire.STATUS_INVALID_PARAMETER)
    (timeout_ms,) = struct.unpack_from("<I", data)
    if timeout_ms > MAX_RESILIENCY_TIMEOUT_MS:
        raise SMBError(wire.STATUS_INVALID_PARAMETER)
    table = c.state.durable
    earlier = table.of(o)       # a durable open made resilient is durable no more (3.3.5.15.9)
    table.grant(Durable(open=o, persistent=o.fid[:8], user=user, client_guid=c.client_guid,
                        create_guid=b"", resilient=True,
                        timeout=timeout_ms / 1000.0 if timeout_ms else DEFAULT_RESILIENCY_TIMEOUT,
                        share=(share.name.lower(), share.path),
                        app_instance=earlier.app_instance if earlier is not None else b""))
    return b""
