"""ECHO (MS-SMB2 3.3.5.17)."""
from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from smbring.smb.wire import Header

if TYPE_CHECKING:
    from smbring.smb.connection import Connection


def h_echo(c: Connection, hdr: Header, msg: bytes, rhdr: Header, _):
    return struct.pack("<HH", 4, 0), None
