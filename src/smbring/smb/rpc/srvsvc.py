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

import time
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
    Later,
    listed_path,
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
        out.append(Listed(share.name, STYPE_DISKTREE, share.comment, listed_path(share.path),
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


# -- what the server holds: administrators only ------------------------------------------------

SESSION_INFO_FIELDS = {
    0: (STR,),                                      # client
    1: (STR, STR, U32, U32, U32, U32),              # client, user, opens, time, idle, flags
    2: (STR, STR, U32, U32, U32, U32, STR),         # ..., client type
    10: (STR, STR, U32, U32),                       # client, user, time, idle
    502: (STR, STR, U32, U32, U32, U32, STR, STR),  # ..., client type, transport
}
CONNECTION_INFO_FIELDS = {
    0: (U32,),                                      # id
    1: (U32, U32, U32, U32, U32, STR, STR),         # id, type, opens, users, time, user, netname
}
FILE_INFO_FIELDS = {
    2: (U32,),                                      # id
    3: (U32, U32, U32, STR, STR),                   # id, permissions, locks, path, user
}
SESS_GUEST, SESS_NOENCRYPTION = 0x1, 0x2
PERM_FILE_READ, PERM_FILE_WRITE = 0x1, 0x2
TRANSPORT = "\\Device\\NetbiosSmb"               # what Windows names its SMB-over-TCP transport
WERR_INVALID_PARAMETER = 87
NERR_NET_NAME_NOT_FOUND = 2310
NERR_DEVICE_NOT_SHARED = 2311
NERR_CLIENT_NAME_NOT_FOUND = 2312
NERR_FILE_ID_NOT_FOUND = 2314
NERR_USER_NOT_FOUND = 2221


def _read_enum_struct(r: Reader, fields: dict) -> int:
    """An *_ENUM_STRUCT a client sent (its level, the union's arm: a unique pointer to a
    container of a count and a unique pointer to entries, read over), then
    PreferedMaximumLength; the level."""
    level = r.u32()
    if r.u32() != level:
        raise NdrError("the union's switch is not the level")
    if level in fields and r.pointer():
        count = r.u32()
        if r.pointer():
            if r.count() != count:
                raise NdrError("an entry list that cannot be read")
            r.structs(fields[level], count)
    r.u32()                            # PreferedMaximumLength: everything is returned at once
    return level


def _enum_request(stub: bytes, strings: int, fields: dict) -> tuple[Reader, list, int]:
    """An administrators' enumeration's request: ServerName, then `strings` unique strings
    (what to list: a client, a user, a path), then its *_ENUM_STRUCT; the reader (at the
    resume handle), the strings, the level."""
    r = Reader(stub)
    r.unique_string()                  # ServerName
    given = [r.unique_string() for _ in range(strings)]
    return r, given, _read_enum_struct(r, fields)


def _enum_answer(r: Reader, level: int, fields: dict, rows: list[tuple] | None, status: int) -> bytes:
    """The answer to an enumeration: the level's container (`rows`, all of them at once; none
    where `status` refuses), TotalEntries, the resume handle (0: nothing more) and the status."""
    has_resume = bool(r.pointer())
    if has_resume:
        r.u32()
    w = Writer()
    w.u32(level)
    w.u32(level)
    if rows is None:
        if level in fields:
            w.pointer(False)
    else:
        w.pointer(True)
        w.u32(len(rows))
        w.pointer(bool(rows))
        if rows:
            w.u32(len(rows))
            w.structs(fields[level], rows)
    w.u32(len(rows) if rows else 0)
    w.pointer(has_resume)
    if has_resume:
        w.u32(0)
    w.u32(status)
    return w.getvalue()


def _with_activity(caller: Caller, level: int, fields: dict, answer, here_only: bool = False):
    """answer(what the server holds, WERR_OK) for an administrator asking for a level there
    is, else answer(None, the status refusing the call: WERR_ACCESS_DENIED first, as Samba);
    its stub data now, or (several workers: each is asked, unless `here_only`) a
    services.Later giving it."""
    if not caller.is_administrator() or caller.administration is None:
        return answer(None, WERR_ACCESS_DENIED)
    if level not in fields:
        return answer(None, WERR_INVALID_LEVEL)
    admin = caller.administration
    return _now_or_later((lambda done: None) if here_only else admin.activity_everywhere,
                         admin.activity, lambda held: answer(held, WERR_OK))


def _now_or_later(everywhere, here, answer):
    """answer(outcome) over every worker where the server has several: `everywhere(done)`
    starts the asking (None: this process is the whole server), and the answer comes later
    (a services.Later); else answer(here()) now."""
    outcome = _Outcome()
    if everywhere(outcome.arrived) is None:
        return answer(here())
    return Later(lambda done: outcome.then(lambda value: done(answer(value))))


class _Outcome:
    """An outcome that may arrive before or after its taker asks for it (`then`)."""

    def __init__(self) -> None:
        self._arrived = False
        self._value = None
        self._taker = None

    def arrived(self, value) -> None:
        self._arrived, self._value = True, value
        if self._taker is not None:
            self._taker(value)

    def then(self, taker) -> None:
        if self._arrived:
            taker(self._value)
        else:
            self._taker = taker


def _client_of(name: str | None) -> str | None:
    """A client named as MS-SRVS names one ("\\\\host" or "host"), as the lists give it."""
    return name[2:] if name is not None and name.startswith("\\\\") else name


def net_session_enum(caller: Caller, stub: bytes) -> bytes:
    """NetrSessionEnum (opnum 12): the logged-on sessions, of one client or one user where
    asked, at levels 0, 1, 2, 10 and 502."""
    r, (client, user), level = _enum_request(stub, 2, SESSION_INFO_FIELDS)
    client = _client_of(client)

    def answer(held, status) -> bytes:
        rows = None
        if held is not None:
            rows = []
            for s in held.sessions:
                if client and s.client.lower() != client.lower() or user and s.user.lower() != user.lower():
                    continue
                flags = (SESS_GUEST if s.guest else 0) | (0 if s.encrypted else SESS_NOENCRYPTION)
                rows.append({0: (s.client,), 1: (s.client, s.user, s.opens, s.seconds, s.idle, flags),
                             2: (s.client, s.user, s.opens, s.seconds, s.idle, flags, s.dialect),
                             10: (s.client, s.user, s.seconds, s.idle),
                             502: (s.client, s.user, s.opens, s.seconds, s.idle, flags, s.dialect,
                                   TRANSPORT)}[level])
        return _enum_answer(r, level, SESSION_INFO_FIELDS, rows, status)
    return _with_activity(caller, level, SESSION_INFO_FIELDS, answer)


def net_connection_enum(caller: Caller, stub: bytes) -> bytes:
    """NetrConnectionEnum (opnum 8): the tree connects to a share (Qualifier: its name; each
    names its client) or from a client (Qualifier: "\\\\host"; each names its share), at
    levels 0 and 1."""
    r, (qualifier,), level = _enum_request(stub, 1, CONNECTION_INFO_FIELDS)
    by_client = bool(qualifier) and qualifier.startswith("\\\\")
    wanted = _client_of(qualifier).lower() if qualifier else ""
    shares = {s.name.lower() for s in caller.shares} | {"ipc$"}

    def answer(held, status) -> bytes:
        rows = None
        if held is not None and not qualifier:
            status = WERR_INVALID_PARAMETER
        elif held is not None:
            if not by_client and wanted not in shares:
                status = NERR_NET_NAME_NOT_FOUND
            else:
                rows = []
                for t in held.trees:
                    if (t.session.client if by_client else t.share).lower() != wanted:
                        continue
                    kind = STYPE_IPC if t.is_ipc else STYPE_DISKTREE
                    rows.append((t.id,) if level == 0 else
                                (t.id, kind, t.opens, 1, t.session.seconds, t.session.user,
                                 t.share if by_client else t.session.client))
        return _enum_answer(r, level, CONNECTION_INFO_FIELDS, rows, status)
    # (a qualifier that names nothing is refused without asking the other workers)
    return _with_activity(caller, level, CONNECTION_INFO_FIELDS, answer,
                          here_only=not qualifier or not by_client and wanted not in shares)


def net_file_enum(caller: Caller, stub: bytes) -> bytes:
    """NetrFileEnum (opnum 9): the open files and directories, below a path or of one user
    where asked, at levels 2 and 3."""
    r, (base, user), level = _enum_request(stub, 2, FILE_INFO_FIELDS)

    def answer(held, status) -> bytes:
        rows = None
        if held is not None:
            rows = []
            for f in held.files:
                if base and not f.path.lower().startswith(base.lower()) or user and f.user.lower() != user.lower():
                    continue
                permissions = (PERM_FILE_READ if f.readable else 0) | (PERM_FILE_WRITE if f.writable else 0)
                rows.append((f.id,) if level == 2 else (f.id, permissions, f.locks, f.path, f.user))
        return _enum_answer(r, level, FILE_INFO_FIELDS, rows, status)
    return _with_activity(caller, level, FILE_INFO_FIELDS, answer)


def net_file_close(caller: Caller, stub: bytes) -> bytes:
    """NetrFileClose (opnum 11): an administrator closes an open file by its id (NetrFileEnum's);
    its client's next request naming it is answered STATUS_FILE_CLOSED."""
    r = Reader(stub)
    r.unique_string()                  # ServerName
    file_id = r.u32()
    if not caller.is_administrator() or caller.administration is None:
        return _status(WERR_ACCESS_DENIED)
    admin = caller.administration
    return _now_or_later(lambda done: admin.close_file_everywhere(file_id, done),
                         lambda: admin.close_file(file_id),
                         lambda closed: _status(WERR_OK if closed else NERR_FILE_ID_NOT_FOUND))


def _status(status: int) -> bytes:
    """The stub data of an answer that is its status alone."""
    w = Writer()
    w.u32(status)
    return w.getvalue()


def net_session_del(caller: Caller, stub: bytes) -> bytes:
    """NetrSessionDel (opnum 13): an administrator ends the sessions of a client ("\\\\host"
    or "host"), of a user, or of that user from that client (never the caller's own); their
    clients log on again at their next request."""
    r = Reader(stub)
    r.unique_string()                  # ServerName
    client = _client_of(r.unique_string()) or None
    user = r.unique_string() or None
    if not caller.is_administrator() or caller.administration is None:
        return _status(WERR_ACCESS_DENIED)
    if client is None and user is None:
        return _status(WERR_INVALID_PARAMETER)
    admin = caller.administration
    return _now_or_later(lambda done: admin.end_sessions_everywhere(client, user, caller.session, done),
                         lambda: admin.end_sessions(client, user, caller.session),
                         lambda ended: _status(WERR_OK if ended else NERR_CLIENT_NAME_NOT_FOUND if client
                                               else NERR_USER_NOT_FOUND))


def net_share_check(caller: Caller, stub: bytes) -> bytes:
    """NetrShareCheck (opnum 20): whether a path ("C:\\srv\\data", as share listings give
    it; IPC$'s is empty) is shared, and as what (MS-SRVS 3.1.4.9; Samba has none)."""
    r = Reader(stub)
    r.unique_string()                  # ServerName
    device = r.string()
    found = None if _refused(caller) else next(
        (s for s in _shares(caller) if s.path.lower() == device.rstrip("\\").lower()), None)
    w = Writer()
    w.u32(found.type if found is not None else 0)
    w.u32(WERR_ACCESS_DENIED if _refused(caller) else WERR_OK if found is not None else NERR_DEVICE_NOT_SHARED)
    return w.getvalue()


def net_server_disk_enum(caller: Caller, stub: bytes) -> bytes:
    """NetrServerDiskEnum (opnum 23): the server's disks, as Samba names them: "C:" (the
    drive every share's path is given on), then the empty name that ends the list."""
    r = Reader(stub)
    r.unique_string()                  # ServerName
    level = r.u32()
    count = r.u32()
    if r.pointer():                    # entries sent in: read over them
        maximum, offset, actual = r.u32(), r.u32(), r.count()
        if offset or actual > maximum or maximum != count:
            raise NdrError("a disk list that cannot be read")
        for _ in range(actual):
            if r.u32() != 0:
                raise NdrError("a disk name with an offset")
            length = r.u32()
            if length > 3:
                raise NdrError("a disk name of more than 3 characters")
            r.skip(2 * length)
    r.u32()                            # PreferedMaximumLength
    has_resume = bool(r.pointer())
    if has_resume:
        r.u32()
    status = (WERR_ACCESS_DENIED if _refused(caller) else WERR_INVALID_LEVEL if level != 0 else WERR_OK)
    disks = ["C:", ""] if status == WERR_OK else []
    w = Writer()
    w.u32(len(disks))
    w.pointer(bool(disks))
    if disks:
        w.u32(len(disks))              # (size_is and length_is: the count)
        w.u32(0)
        w.u32(len(disks))
        for disk in disks:             # [string] WCHAR Disk[3]: offset, length, the characters
            chars = disk.encode("utf-16-le") + b"\0\0"
            w.u32(0)
            w.u32(len(chars) // 2)
            w.buf += chars
            w.align(4)
    w.u32(1 if disks else 0)           # TotalEntries: the disks, not the ending name
    w.pointer(has_resume)
    if has_resume:
        w.u32(0)
    w.u32(status)
    return w.getvalue()


def net_remote_tod(caller: Caller, stub: bytes) -> bytes:
    """NetrRemoteTOD (opnum 28): the server's time of day (`net time`), in UTC with the
    local zone's offset."""
    r = Reader(stub)
    r.unique_string()                  # ServerName
    w = Writer()
    if _refused(caller):
        w.pointer(False)
        w.u32(WERR_ACCESS_DENIED)
        return w.getvalue()
    now = time.time()
    t = time.gmtime(now)
    local = time.localtime(now)
    west = -local.tm_gmtoff // 60       # minutes west of UTC
    w.pointer(True)
    # elapsed seconds, msecs, hours, mins, secs, hundredths, zone, interval (in 0.1 ms:
    # the clock's tick as Windows and Samba give it), day, month, year, weekday (0: Sunday)
    for value in (int(now), int(now * 1000) & 0xFFFFFFFF, t.tm_hour, t.tm_min, t.tm_sec,
                  int(now * 100) % 100, west, 310, t.tm_mday, t.tm_mon, t.tm_year, (t.tm_wday + 1) % 7):
        w.u32(value)
    w.u32(WERR_OK)
    return w.getvalue()


INTERFACE = Interface("srvsvc", SYNTAX, {
    8: net_connection_enum,
    9: net_file_enum,
    11: net_file_close,
    12: net_session_enum,
    13: net_session_del,
    15: net_share_enum_all,
    16: net_share_get_info,
    20: net_share_check,
    21: net_server_get_info,
    23: net_server_disk_enum,
    28: net_remote_tod,
    36: net_share_enum_sticky,
})
