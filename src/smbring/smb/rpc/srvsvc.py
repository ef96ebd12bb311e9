"""srvsvc (MS-SRVS), the server service: the shares a client may list and the server's own
description, as Samba's srvsvc answers them.

- NetrShareEnum (opnum 15; Samba's NetShareEnumAll) lists every browseable share, then IPC$,
  at levels 0, 1, 2, 501, 502, 1004 and 1005; names ending in `$` are listed (they are hidden
  by their name: clients leave them out); NetrShareEnumSticky (opnum 36; Samba's NetShareEnum)
  leaves them out itself. As in Samba (with `access based share enum` off, its default), a share
  the caller may not connect to (`valid users`, `guest ok`) is listed all the same: the list
  says what exists, the tree connect decides who enters. A share with `access based share
  enum = yes` is listed only to callers the tree connect would admit (its `hosts allow`/`hosts
  deny`, `guest ok`, `valid users`/`invalid users`; Samba's own check leaves out the hosts).
  Level 503 (MS-SRVS; not in Samba) is served too, for Windows' tools.
- NetrShareGetInfo (opnum 16) describes one share by name, browseable or not (the same levels);
  a share hidden from the caller by `access based share enum` is WERR_INVALID_NAME, as if it did
  not exist (Samba describes it all the same).

Comments and paths are given as the caller sees them, with the session's substitutions (%U,
%u, %G, %H, %S, %P, %m, %I, %L, ...), as Samba substitutes a share's comment.
- NetrServerGetInfo (opnum 21), levels 100, 101 and 102.

Levels 2, 502 and 503 carry the share's path as Samba gives it to any caller, "C:" and the path
with backslashes (a path the Windows share dialogs accept); levels 502 and 503 also the share's
security descriptor (Everyone: the access the share grants). With `restrict anonymous` at 1 or
more, guests and anonymous callers are refused (WERR_ACCESS_DENIED) every one of these calls.
"""
from __future__ import annotations

from dataclasses import dataclass

from smbring.smb import acl, wire
from smbring.smb.rpc.ndr import BYTES, STR, U32, NdrError, Reader, Writer
from smbring.smb.rpc.pdu import Syntax
from smbring.smb.rpc.services import (
    WERR_ACCESS_DENIED,
    WERR_INVALID_LEVEL,
    WERR_INVALID_NAME,
    WERR_OK,
    Caller,
    Interface,
)

SYNTAX = Syntax.of("4b324fc8-1670-01d3-1278-5a47bf6ee188", 3)

STYPE_DISKTREE, STYPE_IPC, STYPE_SPECIAL = 0, 3, 0x80000000
PLATFORM_ID_NT = 500
VERSION_MAJOR, VERSION_MINOR = 6, 1      # what Samba announces (SAMBA_*_NBT_ANNOUNCE_VERSION)
# SV_TYPE_WORKSTATION | SERVER | SERVER_UNIX | SERVER_NT | NT: Samba's announcement without
# a print server (smbring shares no printers)
SERVER_TYPE = 0x1 | 0x2 | 0x800 | 0x1000 | 0x8000
MAX_USES_UNLIMITED = 0xFFFFFFFF
BUILTIN_ADMINISTRATORS = acl.sid(5, 32, 544)

# the fields of SHARE_INFO_<level> (MS-SRVS 2.2.4.22-2.2.4.30)
SHARE_INFO_FIELDS = {
    0: (STR,),
    1: (STR, U32, STR),
    2: (STR, U32, STR, U32, U32, U32, STR, STR),
    501: (STR, U32, STR, U32),
    502: (STR, U32, STR, U32, U32, U32, STR, STR, U32, BYTES),
    503: (STR, U32, STR, U32, U32, U32, STR, STR, STR, U32, BYTES),
    1004: (STR,),
    1005: (U32,),
}
# the levels the unions have an arm (a pointer) for, served or not (MS-SRVS's and Samba's
# srvsvc.idl): a level without one is answered with no arm at all, as its NDR says
SHARE_ARMS = frozenset({0, 1, 2, 501, 502, 503, 1004, 1005, 1006, 1007, 1501})
SERVER_INFO_FIELDS = {
    100: (U32, STR),
    101: (U32, STR, U32, U32, U32, STR),
    102: (U32, STR, U32, U32, U32, STR, U32, U32, U32, U32, U32, U32, STR),
}
SERVER_ARMS = frozenset({100, 101, 102, 103, 402, 403, 502, 503, 599, 1005, 1010, 1016, 1017, 1018, 1107,
                         1501, 1502, 1503, 1506, *range(1509, 1517), 1518, *range(1520, 1526),
                         *range(1528, 1531), *range(1533, 1551), *range(1552, 1557)})


@dataclass(frozen=True)
class Listed:
    """A share as srvsvc describes it."""

    name: str
    type: int
    comment: str
    path: str                  # as the client sees it ("C:\\srv\\data"), "" for IPC$
    access: int                # what its security descriptor grants Everyone


def _shares(caller: Caller) -> list[Listed]:
    """Every share the configuration names that the caller may see, as the caller sees it,
    then IPC$ (as Samba lists it)."""
    out = []
    for configured in caller.shares:
        share = caller.view(configured)
        if share is None:           # hidden from this caller (access based share enum)
            continue
        out.append(Listed(share.name, STYPE_DISKTREE, share.comment, "C:" + share.path.replace("/", "\\"),
                          wire.READ_ONLY_ACCESS if share.read_only else wire.FILE_ALL_ACCESS))
    out.append(Listed("IPC$", STYPE_IPC | STYPE_SPECIAL, f"IPC Service ({caller.server.comment})", "",
                      wire.FILE_ALL_ACCESS))
    return out


def _browseable(caller: Caller, hidden_too: bool) -> list[Listed]:
    browseable = {s.name for s in caller.shares if s.browseable} | {"IPC$"}
    return [s for s in _shares(caller) if s.name in browseable and (hidden_too or not s.name.endswith("$"))]


def _security_descriptor(share: Listed) -> bytes:
    """The share's own security descriptor (not its files'): owned by Administrators, Everyone
    granted what the share grants (as Samba's default share descriptor)."""
    return acl.Descriptor(control=acl.SE_SELF_RELATIVE | acl.SE_DACL_PRESENT, owner=BUILTIN_ADMINISTRATORS,
                          group=BUILTIN_ADMINISTRATORS,
                          dacl=[acl.Ace(acl.ALLOWED, 0, share.access, acl.EVERYONE)]).pack()


def _share_info(level: int, s: Listed) -> tuple:
    if level == 0:
        return (s.name,)
    if level == 1:
        return s.name, s.type, s.comment
    if level == 2:
        return s.name, s.type, s.comment, 0, MAX_USES_UNLIMITED, 0, s.path, ""
    if level == 501:
        return s.name, s.type, s.comment, 0           # client-side caching: manual (0)
    if level == 502:
        sd = _security_descriptor(s)
        return s.name, s.type, s.comment, 0, MAX_USES_UNLIMITED, 0, s.path, "", len(sd), sd
    if level == 503:           # the name the share is reached by: any ("*")
        sd = _security_descriptor(s)
        return s.name, s.type, s.comment, 0, MAX_USES_UNLIMITED, 0, s.path, "", "*", len(sd), sd
    if level == 1004:
        return (s.comment,)
    return (0,)                                        # 1005: no DFS, manual caching


def _refused(caller: Caller) -> bool:
    """Samba's pipe_access_check: `restrict anonymous` keeps guests out."""
    return caller.is_guest() and caller.server.restrict_anonymous > 0


def _enum(caller: Caller, stub: bytes, hidden_too: bool) -> bytes:
    r = Reader(stub)
    r.unique_string()                  # ServerName: this server, whatever it is called
    level = r.u32()
    if r.u32() != level:
        raise NdrError("the union's switch is not the level")
    if level in SHARE_ARMS and r.pointer():
        count = r.u32()
        if r.pointer():                # entries sent in: read over them
            if level not in SHARE_INFO_FIELDS or r.count() != count:
                raise NdrError("an entry list that cannot be read")
            r.structs(SHARE_INFO_FIELDS[level], count)
    r.u32()                            # PreferedMaximumLength: everything is returned at once
    has_resume = bool(r.pointer())
    resume = r.u32() if has_resume else 0

    w = Writer()
    w.u32(level)
    w.u32(level)
    status, total = WERR_OK, 0
    shares = _browseable(caller, hidden_too)
    if _refused(caller):
        status = WERR_ACCESS_DENIED
    elif level not in SHARE_INFO_FIELDS:
        status = WERR_INVALID_LEVEL
    if status != WERR_OK:
        if level in SHARE_ARMS:
            w.pointer(False)
    else:
        entries = shares[resume:]
        w.pointer(True)
        w.u32(len(entries))
        w.pointer(bool(entries))
        if entries:
            w.u32(len(entries))
            w.structs(SHARE_INFO_FIELDS[level], [_share_info(level, s) for s in entries])
        total = len(entries)
        if entries:   # as Samba: NetShareEnumAll restarts at 0, NetShareEnum goes on after
            resume = 0 if hidden_too else len(shares)
    w.u32(total)
    w.pointer(has_resume)
    if has_resume:
        w.u32(resume)
    w.u32(status)
    return w.getvalue()


def net_share_enum_all(caller: Caller, stub: bytes) -> bytes:
    return _enum(caller, stub, hidden_too=True)


def net_share_enum_sticky(caller: Caller, stub: bytes) -> bytes:
    return _enum(caller, stub, hidden_too=False)


def net_share_get_info(caller: Caller, stub: bytes) -> bytes:
    r = Reader(stub)
    r.unique_string()                  # ServerName
    name = r.string()                  # NetName ([in, string] wchar_t*: a reference pointer)
    level = r.u32()
    found = next((s for s in _shares(caller) if s.name.lower() == name.lower()), None)
    status = (WERR_ACCESS_DENIED if _refused(caller) else WERR_INVALID_NAME if found is None
              else WERR_INVALID_LEVEL if level not in SHARE_INFO_FIELDS else WERR_OK)
    w = Writer()
    w.info_answer(level, SHARE_ARMS, SHARE_INFO_FIELDS.get(level),
                  _share_info(level, found) if status == WERR_OK else None, status)
    return w.getvalue()


def net_server_get_info(caller: Caller, stub: bytes) -> bytes:
    r = Reader(stub)
    r.unique_string()                  # ServerName
    level = r.u32()
    server = caller.server
    status = (WERR_ACCESS_DENIED if _refused(caller) else
              WERR_INVALID_LEVEL if level not in SERVER_INFO_FIELDS else WERR_OK)
    info = (PLATFORM_ID_NT, server.name, VERSION_MAJOR, VERSION_MINOR, SERVER_TYPE, server.comment,
            # users, disc, hidden, announce, anndelta, licenses, userpath: Samba's values
            0xFFFFFFFF, 0xF, 0, 240, 3000, 100000, "C:\\")
    kinds = SERVER_INFO_FIELDS.get(level)
    w = Writer()
    w.info_answer(level, SERVER_ARMS, kinds, info[:len(kinds)] if status == WERR_OK else None, status)
    return w.getvalue()


INTERFACE = Interface("srvsvc", SYNTAX, {
    15: net_share_enum_all,
    16: net_share_get_info,
    21: net_server_get_info,
    36: net_share_enum_sticky,
})
