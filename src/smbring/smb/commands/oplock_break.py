"""OPLOCK_BREAK from the client: the acknowledgement of an oplock break (MS-SMB2 3.3.5.22.1,
with Samba's answers). Leases are not granted, so a lease acknowledgement (StructureSize 36)
is malformed here: STATUS_INVALID_PARAMETER, as any request of a size it does not have."""
from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from smbring.smb import wire
from smbring.smb.errors import SMBError
from smbring.smb.oplocks import LEVEL_II, LEVEL_NONE
from smbring.smb.wire import Header

if TYPE_CHECKING:
    from smbring.smb.connection import Connection


def h_oplock_break(c: Connection, hdr: Header, msg: bytes, rhdr: Header, chain):
    level = msg[66]
    # an open of this session and tree connect (else FILE_CLOSED), to which a break was sent
    # and not yet answered (else INVALID_OPLOCK_PROTOCOL: a level II break to none expects
    # no answer), acknowledged to none or level II (else INVALID_PARAMETER)
    o = c.open_for(bytes(msg[72:88]), chain, hdr)
    if not c.state.oplocks.breaking(o):
        raise SMBError(wire.STATUS_INVALID_OPLOCK_PROTOCOL)
    if level not in (LEVEL_NONE, LEVEL_II):
        raise SMBError(wire.STATUS_INVALID_PARAMETER)
    kept = c.state.oplocks.acknowledge(o, level)
    return struct.pack("<HBBI", 24, kept, 0, 0) + o.fid, None
