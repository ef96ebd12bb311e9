"""lsarpc (MS-LSAD, MS-LSAT), the local security authority: policy handles, what the server
says of its domains, and translations between names and SIDs, as Samba's lsarpc answers them
for a standalone server. What smbcacls, rpcclient and the Windows security dialogs ask to
show the owners and ACEs of files by name, and to set them by name.

- LsarOpenPolicy (opnum 6) and LsarOpenPolicy2 (44) open a policy handle; LsarClose (0)
  closes it. Everyone may have read and execute access (view local information, look up
  names), as Samba's policy descriptor grants Everyone; a handle asked for more is refused
  (STATUS_ACCESS_DENIED), MAXIMUM_ALLOWED gets read and execute. With `restrict anonymous`
  at 1 or more, guests and anonymous callers are refused.
- LsarQueryInformationPolicy (7): the primary domain (level 3: the workgroup, without a
  SID, as a standalone server), the account domain (levels 5: the NetBIOS name and the
  machine SID), the server role (6: primary). Levels 9-11 are STATUS_INVALID_PARAMETER
  (MS-LSAD 3.1.4.4.3), the others STATUS_INVALID_INFO_CLASS (as Samba without an AD
  database); QueryInformationPolicy2 (46) is not served (a fault, as Samba).
- LsarGetUserName (45): who the caller is (its Unix account, the server's name as authority;
  ANONYMOUS LOGON for guests and anonymous callers), as Samba answers it.
- LsarLookupNames (14), 2 (58), 3 (68) and 4 (77), LsarLookupSids (15), 2 (57) and 3 (76):
  see `smb.sids.Directory` for what is known. Every name or SID is answered; one not known
  has type SidTypeUnknown (and, for a SID, its S-1-... form as its name), and the call says
  STATUS_SOME_NOT_MAPPED, or STATUS_NONE_MAPPED when none was. LookupSids3 and LookupNames4
  take no handle; Windows and Samba serve them only over an authenticated secure channel,
  smbring on the pipe like the others (they tell nothing the handle-based calls do not).

Bounds: at most 1000 names or SIDs a call (the IDL's range; more is malformed: the call
faults), every count and string checked against the data sent (itself at most the
endpoint's request size); at most `services.MAX_HANDLES` open handles a pipe
(STATUS_INSUFFICIENT_RESOURCES).
"""
from __future__ import annotations

from smbring.smb import sids
from smbring.smb.rpc.ndr import NdrError, Reader, Writer
from smbring.smb.rpc.pdu import Syntax
from smbring.smb.rpc.services import Caller, Interface

SYNTAX = Syntax.of("12345778-1234-abcd-ef00-0123456789ab", 0)

STATUS_SUCCESS = 0x00000000
STATUS_SOME_NOT_MAPPED = 0x00000107
STATUS_INVALID_INFO_CLASS = 0xC0000003
STATUS_INVALID_HANDLE = 0xC0000008
STATUS_INVALID_PARAMETER = 0xC000000D
STATUS_ACCESS_DENIED = 0xC0000022
STATUS_NONE_MAPPED = 0xC0000073
STATUS_INSUFFICIENT_RESOURCES = 0xC000009A

# access rights of a policy handle (MS-LSAD 2.2.1.1.2) and their generic mapping
VIEW_LOCAL_INFORMATION, VIEW_AUDIT_INFORMATION, GET_PRIVATE_INFORMATION = 0x1, 0x2, 0x4
LOOKUP_NAMES = 0x800
READ_CONTROL, STANDARD_RIGHTS_REQUIRED = 0x00020000, 0x000F0000
POLICY_READ = READ_CONTROL | VIEW_LOCAL_INFORMATION | VIEW_AUDIT_INFORMATION | GET_PRIVATE_INFORMATION
POLICY_EXECUTE = READ_CONTROL | VIEW_LOCAL_INFORMATION | LOOKUP_NAMES
POLICY_WRITE = READ_CONTROL | 0x7F8
POLICY_ALL_ACCESS = STANDARD_RIGHTS_REQUIRED | 0xFFF
GENERIC_MAPPING = ((0x80000000, POLICY_READ), (0x40000000, POLICY_WRITE), (0x20000000, POLICY_EXECUTE),
                   (0x10000000, POLICY_ALL_ACCESS))
MAXIMUM_ALLOWED = 0x02000000
EVERYONE_MAY = POLICY_READ | POLICY_EXECUTE     # what the policy object grants Everyone

# POLICY_INFORMATION_CLASS (MS-LSAD 2.2.4.1)
PRIMARY_DOMAIN, ACCOUNT_DOMAIN, SERVER_ROLE = 3, 5, 6
ROLE_PRIMARY = 3

MAX_LOOKUPS = 1000               # names or SIDs a call (lsa.idl: range(0,1000))
MAX_NAME_CHARS = 32767           # what an RPC_UNICODE_STRING's 16-bit length can hold
REF_DOMAIN_LIST_MAX_SIZE = 32    # the MaxEntries Samba announces (LSA_REF_DOMAIN_LIST_MULTIPLIER)
NO_INDEX = 0xFFFFFFFF            # DomainIndex of a name or SID not translated
DOMAIN_RID = 0xFFFFFFFF          # RelativeId of a domain found by name


def _directory(caller: Caller) -> sids.Directory:
    return sids.Directory(caller.server.name, caller.unix_names)


def _refused(caller: Caller) -> bool:
    """Samba's pipe_access_check: `restrict anonymous` keeps guests out."""
    return caller.is_guest() and caller.server.restrict_anonymous > 0


# -- policy handles -----------------------------------------------------------------------------
def _map_generic(desired: int) -> int:
    for bit, specific in GENERIC_MAPPING:
        if desired & bit:
            desired = (desired & ~bit) | specific
    return desired


def _read_object_attributes(r: Reader) -> None:
    """LSAPR_OBJECT_ATTRIBUTES, read over (the server ignores them, MS-LSAD 3.1.4.4.9); a
    security descriptor in them is not read (the call faults: no client sends one)."""
    r.u32()                                   # Length
    root_dir, object_name = r.pointer(), r.pointer()
    r.u32()                                   # Attributes
    descriptor, qos = r.pointer(), r.pointer()
    if root_dir:
        r.u8()
    if object_name:
        r.string()
    if descriptor:
        raise NdrError("a security descriptor in the object attributes")
    if qos:
        r.u32()
        r.u16()
        r.u8()
        r.u8()


def _open_policy(caller: Caller, r: Reader) -> bytes:
    _read_object_attributes(r)
    desired = r.u32()
    if desired & MAXIMUM_ALLOWED:       # as Samba: what Everyone may have, generic read and execute
        desired = (desired & ~MAXIMUM_ALLOWED) | EVERYONE_MAY
    desired = _map_generic(desired)
    handle = None
    if _refused(caller) or desired & ~EVERYONE_MAY:
        status = STATUS_ACCESS_DENIED
    else:
        handle = caller.handles.open(desired)
        status = STATUS_SUCCESS if handle is not None else STATUS_INSUFFICIENT_RESOURCES
    w = Writer()
    w.handle(handle or bytes(20))
    w.u32(status)
    return w.getvalue()


def open_policy(caller: Caller, stub: bytes) -> bytes:
    r = Reader(stub)
    if r.pointer():                     # SystemName: a unique pointer to one wchar_t (ignored)
        r.u16()
    return _open_policy(caller, r)


def open_policy2(caller: Caller, stub: bytes) -> bytes:
    r = Reader(stub)
    r.unique_string()                   # SystemName: this server, whatever it is called
    return _open_policy(caller, r)


def close(caller: Caller, stub: bytes) -> bytes:
    handle = Reader(stub).handle()
    w = Writer()
    w.handle(bytes(20))
    w.u32(STATUS_SUCCESS if caller.handles.close(handle) else STATUS_INVALID_HANDLE)
    return w.getvalue()


def _check_handle(caller: Caller, handle: bytes, needs: int) -> int:
    granted = caller.handles.granted(handle)
    if granted is None:
        return STATUS_INVALID_HANDLE
    return STATUS_SUCCESS if granted & needs == needs else STATUS_ACCESS_DENIED


# -- LsarQueryInformationPolicy -------------------------------------------------------------------
def query_info_policy(caller: Caller, stub: bytes) -> bytes:
    r = Reader(stub)
    handle = r.handle()
    level = r.u16()
    status = _check_handle(caller, handle, 0)
    if status == STATUS_SUCCESS:
        if level in (9, 10, 11):
            status = STATUS_INVALID_PARAMETER
        elif level not in (PRIMARY_DOMAIN, ACCOUNT_DOMAIN, SERVER_ROLE):
            status = STATUS_INVALID_INFO_CLASS
        else:
            status = _check_handle(caller, handle, VIEW_LOCAL_INFORMATION)
    w = Writer()
    if status != STATUS_SUCCESS:
        w.pointer(False)
        w.u32(status)
        return w.getvalue()
    w.pointer(True)                     # [out] LSAPR_POLICY_INFORMATION *: a union
    w.u16(level)
    w.align(4)
    if level == SERVER_ROLE:
        w.u32(ROLE_PRIMARY)
    else:
        # a standalone server: its primary domain is the workgroup, with no SID; its account
        # domain is the machine
        name, sid = ((caller.server.workgroup, None) if level == PRIMARY_DOMAIN else
                     (caller.server.name.upper(), sids.machine_sid(caller.server.name)))
        w.counted_string(name, terminated_size=True)
        w.pointer(sid is not None)
        w.counted_chars(name, terminated_size=True)
        if sid is not None:
            w.sid(sid)
    w.u32(STATUS_SUCCESS)
    return w.getvalue()


# -- the referenced domains of a translation ------------------------------------------------------
class Domains:
    """LSAPR_REFERENCED_DOMAIN_LIST: each domain a translation names, once, in the order met."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, bytes]] = []

    def index(self, found: sids.Found) -> int:
        entry = (found.domain, found.domain_sid)
        for i, (_name, sid) in enumerate(self.entries):
            if sid == found.domain_sid:
                return i
        self.entries.append(entry)
        return len(self.entries) - 1

    def write(self, w: Writer) -> None:
        w.pointer(True)
        w.u32(len(self.entries))
        w.pointer(bool(self.entries))
        w.u32(REF_DOMAIN_LIST_MAX_SIZE if self.entries else 0)
        if self.entries:
            w.u32(len(self.entries))
            for name, _sid in self.entries:
                w.counted_string(name, terminated_size=True)
                w.pointer(True)
            for name, sid in self.entries:
                w.counted_chars(name, terminated_size=True)
                w.sid(sid)


def _status(mapped: int, count: int) -> int:
    if count == 0 or mapped == count:
        return STATUS_SUCCESS
    return STATUS_NONE_MAPPED if mapped == 0 else STATUS_SOME_NOT_MAPPED


def _array_count(r: Reader) -> int:
    count = r.u32()
    if count > MAX_LOOKUPS:
        raise NdrError(f"{count} entries (at most {MAX_LOOKUPS})")
    return count


def _read_translations(r: Reader, extra_u32: int, kind: str) -> None:
    """An [in,out] translation array as a client sends it in (normally empty), read over: its
    count and pointer, then each entry (Use; a RID, a SID pointer or a name as `kind` says;
    the domain index and `extra_u32` more), then what the entries point to."""
    count = _array_count(r)
    if not r.pointer():
        return
    if r.u32() != count:
        raise NdrError("an array whose size is not its count")
    deferred = []
    for _ in range(count):
        r.u16()                                   # Use
        if kind == "name":
            deferred.append(r.counted_string())
        elif kind == "sid":
            deferred.append(r.pointer())
        else:
            r.u32()                               # RelativeId
        for _ in range(1 + extra_u32):
            r.u32()
    for item in deferred:
        if kind == "name" and item[2]:
            r.counted_chars(item[0], item[1], MAX_NAME_CHARS)
        elif kind == "sid" and item:
            r.sid()


# -- names -> SIDs ------------------------------------------------------------------------------
def _read_names(r: Reader) -> list[str]:
    count = _array_count(r)
    if r.u32() != count:                          # [size_is(Count)] PRPC_UNICODE_STRING Names[]
        raise NdrError("a name array whose size is not its count")
    heads = [r.counted_string() for _ in range(count)]
    return [r.counted_chars(length, maximum, MAX_NAME_CHARS) if referent else ""
            for length, maximum, referent in heads]


def _lookup_names(caller: Caller, stub: bytes, version: int) -> bytes:
    """LsarLookupNames (version 1), 2, 3 and 4 (4: no handle)."""
    r = Reader(stub)
    handle = r.handle() if version != 4 else None
    names = _read_names(r)
    _read_translations(r, 1 if version > 1 else 0, "sid" if version >= 3 else "rid")
    level = r.u16()
    r.u32()                                       # MappedCount
    if version > 1:
        r.u32()                                   # LookupOptions
        r.u32()                                   # ClientRevision

    if handle is not None:
        status = _check_handle(caller, handle, LOOKUP_NAMES)
    else:
        status = STATUS_ACCESS_DENIED if _refused(caller) else STATUS_SUCCESS
    domains, found = Domains(), []
    if status == STATUS_SUCCESS:
        directory = _directory(caller)
        # LSAP_LOOKUP_LEVEL: 1 looks everywhere; 2-7 leave out well-known names and BUILTIN
        # (as Samba); any other finds nothing
        found = [directory.lookup_name(name, everything=level == 1) if 1 <= level <= 7 else None
                 for name in names]
        mapped = sum(f is not None for f in found)
        status = _status(mapped, len(names))
    else:
        mapped = 0

    w = Writer()
    domains_at = [domains.index(f) if f is not None else NO_INDEX for f in found]
    domains.write(w)
    w.u32(len(found))
    w.pointer(bool(found))
    if found:
        w.u32(len(found))
        for f, index in zip(found, domains_at):
            w.u16(f.type if f is not None else sids.UNKNOWN)
            if version >= 3:
                w.pointer(f is not None)
            else:
                w.u32((DOMAIN_RID if f.type == sids.DOMAIN else sids.domain_and_rid(f.sid)[1])
                      if f is not None else 0)
            w.u32(index)
            if version > 1:
                w.u32(0)                          # Flags
        if version >= 3:
            for f in found:
                if f is not None:
                    w.sid(f.sid)
    w.u32(mapped)
    w.u32(status)
    return w.getvalue()


def lookup_names(caller: Caller, stub: bytes) -> bytes:
    return _lookup_names(caller, stub, 1)


def lookup_names2(caller: Caller, stub: bytes) -> bytes:
    return _lookup_names(caller, stub, 2)


def lookup_names3(caller: Caller, stub: bytes) -> bytes:
    return _lookup_names(caller, stub, 3)


def lookup_names4(caller: Caller, stub: bytes) -> bytes:
    return _lookup_names(caller, stub, 4)


# -- SIDs -> names ------------------------------------------------------------------------------
def _read_sids(r: Reader) -> list[bytes]:
    """LSAPR_SID_ENUM_BUFFER: a count and a pointer to that many pointers to SIDs."""
    count = _array_count(r)
    if not r.pointer():
        if count:
            raise NdrError("SIDs counted but not sent")
        return []
    if r.u32() != count:
        raise NdrError("a SID array whose size is not its count")
    referents = [r.pointer() for _ in range(count)]
    if not all(referents):
        raise NdrError("a NULL SID to look up")
    return [r.sid() for _ in referents]


def _lookup_sids(caller: Caller, stub: bytes, version: int) -> bytes:
    """LsarLookupSids (version 1), 2 and 3 (3: no handle)."""
    r = Reader(stub)
    handle = r.handle() if version != 3 else None
    wanted = _read_sids(r)
    _read_translations(r, 1 if version > 1 else 0, "name")
    level = r.u16()
    r.u32()                                       # MappedCount
    if version > 1:
        r.u32()                                   # LookupOptions
        r.u32()                                   # ClientRevision

    if handle is not None:
        status = _check_handle(caller, handle, LOOKUP_NAMES)
    else:
        status = STATUS_ACCESS_DENIED if _refused(caller) else STATUS_SUCCESS
    if status == STATUS_SUCCESS and not 1 <= level <= 6:
        status = STATUS_INVALID_PARAMETER         # (as Samba)
    domains, found = Domains(), []
    mapped = 0
    if status == STATUS_SUCCESS:
        directory = _directory(caller)
        found = [directory.lookup_sid(sid) for sid in wanted]
        mapped = sum(f is not None for f in found)
        status = _status(mapped, len(wanted))

    w = Writer()
    domains_at = [domains.index(f) if f is not None else NO_INDEX for f in found]
    # a SID not translated is named by its S-1-... form (as Samba and Windows)
    names = [f.name if f is not None else sids.text(sid) for f, sid in zip(found, wanted)]
    domains.write(w)
    w.u32(len(found))
    w.pointer(bool(found))
    if found:
        w.u32(len(found))
        for f, name, index in zip(found, names, domains_at):
            w.u16(f.type if f is not None else sids.UNKNOWN)
            w.counted_string(name)
            w.u32(index)
            if version > 1:
                w.u32(0)                          # Flags
        for name in names:
            w.counted_chars(name)
    w.u32(mapped)
    w.u32(status)
    return w.getvalue()


def lookup_sids(caller: Caller, stub: bytes) -> bytes:
    return _lookup_sids(caller, stub, 1)


def lookup_sids2(caller: Caller, stub: bytes) -> bytes:
    return _lookup_sids(caller, stub, 2)


def lookup_sids3(caller: Caller, stub: bytes) -> bytes:
    return _lookup_sids(caller, stub, 3)


# -- LsarGetUserName ------------------------------------------------------------------------------
def _read_given_string(r: Reader) -> bool:
    """An RPC_UNICODE_STRING a unique pointer points to, read over; whether there was one."""
    if not r.pointer():
        return False
    length, maximum, chars = r.counted_string()
    if chars:
        r.counted_chars(length, maximum, MAX_NAME_CHARS)
    return True


def get_user_name(caller: Caller, stub: bytes) -> bytes:
    """LsarGetUserName (opnum 45): who the caller is, as Samba says it: the Unix account its
    session acts as and the server's name as its authority; "ANONYMOUS LOGON" of "NT
    AUTHORITY" for a guest or anonymous caller. A name sent in is STATUS_INVALID_PARAMETER
    (MS-LSAT 3.1.4.4)."""
    r = Reader(stub)
    r.unique_string()                   # SystemName
    sent = _read_given_string(r)        # UserName: [in, out] PRPC_UNICODE_STRING*
    wants_authority = bool(r.pointer())     # DomainName: [in, out, unique] PRPC_UNICODE_STRING*
    if wants_authority and _read_given_string(r):
        sent = True
    if caller.is_guest():
        name, authority = "ANONYMOUS LOGON", "NT AUTHORITY"
    else:
        identity = getattr(caller.session, "identity", None)
        name = identity.name if identity is not None else caller.user.rpartition("\\")[2]
        authority = caller.server.name.upper()
    w = Writer()
    if sent:
        w.pointer(False)
        if wants_authority:
            w.pointer(True)
            w.pointer(False)
        w.u32(STATUS_INVALID_PARAMETER)
        return w.getvalue()
    w.pointer(True)
    w.counted_string(name)
    w.counted_chars(name)
    w.pointer(wants_authority)
    if wants_authority:
        w.pointer(True)
        w.counted_string(authority)
        w.counted_chars(authority)
    w.u32(STATUS_SUCCESS)
    return w.getvalue()


INTERFACE = Interface("lsarpc", SYNTAX, {
    0: close,
    6: open_policy,
    7: query_info_policy,
    14: lookup_names,
    15: lookup_sids,
    44: open_policy2,
    45: get_user_name,
    57: lookup_sids2,
    58: lookup_names2,
    68: lookup_names3,
    76: lookup_sids3,
    77: lookup_names4,
})
