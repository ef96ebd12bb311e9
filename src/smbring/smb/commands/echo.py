"""ECHO (MS-SMB2 3.3.5.17)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from smbring.smb.wire import Header

if TYPE_CHECKING:
    from smbring.smb.connection import Connection


ECHO_RESPONSE = b"\x04\x00\x00\x00"   # StructureSize 4, Reserved


def h_echo(c: Connection, hdr: Header, msg: bytes, rhdr: Header, _):
    return ECHO_RESPONSE, None
