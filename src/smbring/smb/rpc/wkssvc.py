"""wkssvc (MS-WKST), the workstation service: NetrWkstaGetInfo (opnum 0), which Windows and
GNOME ask a server they browse. As in Samba: level 100 for anyone, 101 for users who logged on
(not guests or anonymous), 102 refused to everyone (Samba tells administrators who is logged on
at the server's own console, which smbring does not say), 502 refused; the names in upper
case."""
from __future__ import annotations

from smbring.smb.rpc.ndr import STR, U32, Reader, Writer
from smbring.smb.rpc.pdu import Syntax
from smbring.smb.rpc.services import WERR_ACCESS_DENIED, WERR_INVALID_LEVEL, WERR_OK, Caller, Interface
from smbring.smb.rpc.srvsvc import PLATFORM_ID_NT, VERSION_MAJOR, VERSION_MINOR

SYNTAX = Syntax.of("6bffd098-a112-3610-9833-46c3f87e345a", 1)

# WKSTA_INFO_100, 101, 102 (MS-WKST 2.2.5.1-3)
WKSTA_INFO_FIELDS = {
    100: (U32, STR, STR, U32, U32),
    101: (U32, STR, STR, U32, U32, STR),
    102: (U32, STR, STR, U32, U32, STR, U32),
}
# the levels the union has an arm for (Samba's wkssvc.idl)
WKSTA_ARMS = frozenset({100, 101, 102, 502, 1010, 1011, 1012, 1013, 1018, 1023, 1027, 1028, 1032, 1033,
                        *range(1041, 1063)})


def net_wksta_get_info(caller: Caller, stub: bytes) -> bytes:
    r = Reader(stub)
    r.unique_string()                  # ServerName
    level = r.u32()
    if level == 102 or level == 502 or level == 101 and caller.is_guest():
        status = WERR_ACCESS_DENIED
    elif level not in WKSTA_INFO_FIELDS:
        status = WERR_INVALID_LEVEL
    else:
        status = WERR_OK
    server = caller.server
    info = (PLATFORM_ID_NT, server.name.upper(), server.workgroup.upper(), VERSION_MAJOR, VERSION_MINOR, "", 0)
    kinds = WKSTA_INFO_FIELDS.get(level)
    w = Writer()
    w.info_answer(level, WKSTA_ARMS, kinds, info[:len(kinds)] if status == WERR_OK else None, status)
    return w.getvalue()


INTERFACE = Interface("wkssvc", SYNTAX, {0: net_wksta_get_info})
