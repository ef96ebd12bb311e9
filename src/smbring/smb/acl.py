"""Security descriptors a client can set, and the access checks they imply (MS-DTYP 2.4.6,
2.5.3): sans-I/O, bytes in and out.

A tree acts as one Unix account (the session's user's where the server runs as root, else the
server's own), named by Samba's S-1-22 SIDs: its `Token` holds the SIDs ACEs are matched
against (the user, its groups, Everyone, Authenticated Users) and the owner and group a new
file's descriptor names. A file without a stored descriptor keeps the one
derived from its mode bits, and the kernel judges reading and writing it; a stored one (set by
SET_INFO or a CREATE's SecD context, or inherited from a parent directory that has one) is
enforced on every open: its DACL decides, the owner keeps READ_CONTROL and WRITE_DAC unless
an OWNER RIGHTS ACE says otherwise, DELETE is also granted by the parent's FILE_DELETE_CHILD
and FILE_READ_ATTRIBUTES by its FILE_LIST_DIRECTORY. New files inherit from their parent's
stored descriptor as NTFS makes them inherit (MS-DTYP 2.5.3.4).

Who may change a descriptor, as the kernel lets only a file's owner or root chmod and chown
it (and Samba, `dos filemode = no`, maps the mode bits to a DACL in which only the owner has
WRITE_DAC and WRITE_OWNER): the owner, here, is always the file's Unix owner (its uid; root
owns every file; a guest none), never the SID a stored descriptor names, which no client can
make itself by setting it. Without a stored descriptor, WRITE_DAC and WRITE_OWNER are the
owner's alone: anyone else asking for them is refused, and MAXIMUM_ALLOWED leaves them out.
With one, its DACL decides them (an ACE granting WRITE_DAC lets its user change the DACL),
plus the owner's implicit rights. The owner a descriptor names may only be the file's Unix
owner (or stay what it is); root may name anyone (`may_name_owner`). A file this open
creates is its creator's: it gets what it asks for.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass

OWNER, GROUP, DACL, SACL = 0x1, 0x2, 0x4, 0x8          # SECURITY_INFORMATION bits
SE_DACL_PRESENT, SE_SACL_PRESENT, SE_DACL_AUTO_INHERITED = 0x0004, 0x0010, 0x0400
SE_DACL_AUTO_INHERIT_REQ = 0x0100
SE_DACL_PROTECTED, SE_SELF_RELATIVE = 0x1000, 0x8000
ALLOWED, DENIED = 0, 1
OBJECT_INHERIT, CONTAINER_INHERIT, NO_PROPAGATE, INHERIT_ONLY, INHERITED = 0x1, 0x2, 0x4, 0x8, 0x10

READ_CONTROL, WRITE_DAC, WRITE_OWNER, DELETE = 0x20000, 0x40000, 0x80000, 0x10000
FILE_DELETE_CHILD = 0x40
ACCESS_SYSTEM_SECURITY, MAXIMUM_ALLOWED = 0x01000000, 0x02000000
FILE_ALL_ACCESS = 0x001F01FF
GENERIC = ((0x80000000, 0x00120089), (0x40000000, 0x00120116), (0x20000000, 0x001200A0),
           (0x10000000, FILE_ALL_ACCESS))
GENERIC_BITS = 0xF0000000      # GENERIC_READ, _WRITE, _EXECUTE and _ALL: GENERIC's first halves


def sid(authority: int, *subs: int) -> bytes:
    return struct.pack("<BB", 1, len(subs)) + authority.to_bytes(6, "big") + struct.pack(f"<{len(subs)}I", *subs)


EVERYONE, AUTHENTICATED_USERS = sid(1, 0), sid(5, 11)
UNIX_USERS = sid(22, 1, 0)[:-4]     # S-1-22-1-: what every `unix_user` SID starts with
CREATOR_OWNER, CREATOR_GROUP = sid(3, 0), sid(3, 1)
OWNER_RIGHTS = sid(3, 4)        # what the owner gets, in place of its implicit rights
SYSTEM = sid(5, 18)
OWNER_SID, GROUP_SID = sid(22, 1, os.geteuid()), sid(22, 2, os.getegid())   # the server's
ROOT_SID = sid(22, 1, 0)        # root: the owner of every file, as the kernel lets it chmod any
OWNER_ONLY = WRITE_DAC | WRITE_OWNER    # what a file without a stored descriptor gives its owner only


def unix_user(uid: int) -> bytes:
    """Samba's SID of a Unix user (S-1-22-1-uid): a file's Unix owner, as `owner` below.
    (`sid(22, 1, uid)`, its fixed part packed once: asked on every CREATE of a file.)"""
    return UNIX_USERS + uid.to_bytes(4, "little")


# uid_t and gid_t's -1: to fchown "leave it as it is", so never the id of an account
NO_ID = 0xFFFFFFFF


def _unix_id(who: bytes, kind: int) -> int | None:
    if len(who) == 16 and who[:12] == sid(22, kind, 0)[:12]:
        number = struct.unpack_from("<I", who, 12)[0]
        return number if number != NO_ID else None
    return None


def unix_group_id(group: bytes) -> int | None:
    """The gid a group SID names (Samba's S-1-22-2-gid), None for any other SID: smbring maps
    no other SID to a Unix group (as Samba without idmap, whose `unpack_nt_owners` then
    refuses it). S-1-22-2-4294967295 names none: fchown would take it for "keep the group"."""
    return _unix_id(group, 2)


def unix_user_id(user: bytes) -> int | None:
    """The uid a user SID names (Samba's S-1-22-1-uid), None for any other SID (and for
    S-1-22-1-4294967295, fchown's "keep the owner")."""
    return _unix_id(user, 1)


@dataclass(frozen=True)
class Token:
    """Whom a tree acts as, for security descriptors: the SIDs its ACEs are matched against,
    and the owner and group a descriptor made for a new file names."""
    sids: frozenset
    owner: bytes
    group: bytes
    # an `admin users` user acting as root: every descriptor grants it all, as smbd's root
    # override does; what the share itself refuses (read only, a previous version) still
    # holds, checked elsewhere
    overrides: bool = False

    def __contains__(self, who: bytes) -> bool:
        return who in self.sids


def unix_token(uid: int, gid: int, groups=(), guest: bool = False, overrides: bool = False) -> Token:
    """The token of a Unix account: its user and group SIDs, Everyone and Authenticated
    Users. A guest matches Everyone's ACEs only (never an owner's implicit rights, whichever
    account it acts as, and never the root override); its new files name the account as
    their owner. `overrides`: see Token."""
    user, primary = sid(22, 1, uid), sid(22, 2, gid)
    if guest:
        return Token(frozenset({EVERYONE}), user, primary)
    return Token(frozenset({user, primary, EVERYONE, AUTHENTICATED_USERS,
                            *(sid(22, 2, g) for g in groups)}), user, primary, overrides)


USER_TOKEN = unix_token(os.geteuid(), os.getegid())
# a guest where every session acts as the server: only Everyone's ACEs apply to it
GUEST_TOKEN = Token(frozenset({EVERYONE}), OWNER_SID, GROUP_SID)


def owns(token: Token, owner: bytes | None) -> bool:
    """Whether the token holds the owner's rights on a file whose Unix owner is `owner`
    (`unix_user` of its uid): its user is that owner, or root. A guest's token holds
    neither its account's SID nor root's: it owns nothing."""
    sids = token.sids       # (Token.__contains__ without its call: asked for every CREATE)
    return owner is not None and owner in sids or ROOT_SID in sids


def may_name_owner(token: Token, new_owner: bytes, owner: bytes, current: bytes | None = None) -> bool:
    """Whether a descriptor this token sets may name `new_owner` as the file's owner: the
    file's Unix owner (`owner`, who holds the owner's rights), or the owner it names already
    (`current`); root may name anyone, and the file is then given to that user
    (`unix_owner.follow_owner`). Windows wants SeRestorePrivilege to name anyone but oneself,
    and Samba chowns the file (which needs root or a privilege): no one else is named
    (STATUS_INVALID_OWNER)."""
    return ROOT_SID in token or new_owner == owner or current is not None and new_owner == current


class BadDescriptor(ValueError):
    pass


@dataclass
class Ace:
    type: int
    flags: int
    mask: int
    sid: bytes
    body: bytes = b""      # the raw ACE of a type we do not evaluate (kept as it came)

    def pack(self) -> bytes:
        if self.body:
            return self.body
        return struct.pack("<BBHI", self.type, self.flags, 8 + len(self.sid), self.mask) + self.sid


@dataclass
class Descriptor:
    control: int = SE_SELF_RELATIVE
    owner: bytes | None = None
    group: bytes | None = None
    dacl: list[Ace] | None = None       # None with SE_DACL_PRESENT: a NULL DACL (all access)
    sacl_raw: bytes | None = None
    acl_revision: int = 2

    def pack(self, parts: int = OWNER | GROUP | DACL | SACL) -> bytes:
        control = SE_SELF_RELATIVE | (self.control & ~(SE_DACL_PRESENT | SE_SACL_PRESENT))
        body = b""
        offsets = [0, 0, 0, 0]
        pos = 20
        if parts & SACL and self.sacl_raw is not None:
            control |= SE_SACL_PRESENT
            offsets[2], pos, body = pos, pos + len(self.sacl_raw), body + self.sacl_raw
        if parts & DACL and self.control & SE_DACL_PRESENT:
            control |= SE_DACL_PRESENT
            if self.dacl is not None:
                aces = b"".join(a.pack() for a in self.dacl)
                acl = struct.pack("<BBHHH", self.acl_revision, 0, 8 + len(aces), len(self.dacl), 0) + aces
                offsets[3], pos, body = pos, pos + len(acl), body + acl
        else:
            control &= ~(SE_DACL_AUTO_INHERITED | SE_DACL_PROTECTED)
        if parts & OWNER and self.owner:
            offsets[0], pos, body = pos, pos + len(self.owner), body + self.owner
        if parts & GROUP and self.group:
            offsets[1], pos, body = pos, pos + len(self.group), body + self.group
        return struct.pack("<BBHIIII", 1, 0, control, *offsets) + body


def _sid_at(buf: bytes, off: int) -> bytes:
    if off + 8 > len(buf):
        raise BadDescriptor("SID outside the descriptor")
    n = buf[off + 1]
    end = off + 8 + 4 * n
    if buf[off] != 1 or n > 15 or end > len(buf):
        raise BadDescriptor("malformed SID")
    return bytes(buf[off:end])


def _acl_at(buf: bytes, off: int) -> tuple[list[Ace], int]:
    if off + 8 > len(buf):
        raise BadDescriptor("ACL outside the descriptor")
    revision, _z, size, count, _z2 = struct.unpack_from("<BBHHH", buf, off)
    if off + size > len(buf) or size < 8:
        raise BadDescriptor("ACL outside the descriptor")
    aces, pos = [], off + 8
    for _ in range(count):
        if pos + 4 > off + size:
            raise BadDescriptor("ACE outside its ACL")
        atype, aflags, asize = struct.unpack_from("<BBH", buf, pos)
        if asize < 8 or pos + asize > off + size:
            raise BadDescriptor("malformed ACE")
        if atype in (ALLOWED, DENIED):
            mask = struct.unpack_from("<I", buf, pos + 4)[0]
            # the SID must end within its ACE: a view, not a copy of all before it (a copy per
            # ACE of a DACL placed at the end of an 8 MiB descriptor took seconds)
            aces.append(Ace(atype, aflags, mask, _sid_at(memoryview(buf)[:pos + asize], pos + 8)))
        else:
            aces.append(Ace(atype, aflags, 0, b"", bytes(buf[pos:pos + asize])))
        pos += asize
    return aces, revision


def parse(buf) -> Descriptor:
    buf = bytes(buf)
    if len(buf) < 20 or buf[0] != 1:
        raise BadDescriptor("not a self-relative security descriptor")
    _rev, _z, control, o_owner, o_group, o_sacl, o_dacl = struct.unpack_from("<BBHIIII", buf, 0)
    d = Descriptor(control=control)
    d.owner = _sid_at(buf, o_owner) if o_owner else None
    d.group = _sid_at(buf, o_group) if o_group else None
    if control & SE_DACL_PRESENT:
        d.dacl, d.acl_revision = _acl_at(buf, o_dacl) if o_dacl else (None, 2)
    if control & SE_SACL_PRESENT and o_sacl:
        _aces, _r = _acl_at(buf, o_sacl)
        size = struct.unpack_from("<H", buf, o_sacl + 2)[0]
        d.sacl_raw = buf[o_sacl:o_sacl + size]
    return d


def merge(old: Descriptor, new: Descriptor, parts: int, canonical_inherited: bool = True) -> Descriptor:
    """SET_INFO security: the parts named by `parts` come from `new`, the rest stay. A new
    DACL's AUTO_INHERITED flag is kept only where AUTO_INHERIT_REQ asks for it too, as
    Windows keeps it (`canonical_inherited`; else as the setter set it)."""
    out = Descriptor(control=old.control, owner=old.owner, group=old.group, dacl=old.dacl,
                     sacl_raw=old.sacl_raw, acl_revision=old.acl_revision)
    if parts & OWNER and new.owner:
        out.owner = new.owner
    if parts & GROUP and new.group:
        out.group = new.group
    if parts & DACL:
        keep = ~(SE_DACL_PRESENT | SE_DACL_PROTECTED | SE_DACL_AUTO_INHERITED | SE_DACL_AUTO_INHERIT_REQ)
        out.control = (out.control & keep) | (new.control & (SE_DACL_PRESENT | SE_DACL_PROTECTED))
        if new.control & SE_DACL_AUTO_INHERITED and (
                new.control & SE_DACL_AUTO_INHERIT_REQ or not canonical_inherited):
            # (the request flag is never stored itself)
            out.control |= SE_DACL_AUTO_INHERITED
        out.dacl, out.acl_revision = mapped(new.dacl), new.acl_revision
        if not new.control & SE_DACL_PRESENT:   # setting "no DACL" sets a NULL DACL: all access
            out.control |= SE_DACL_PRESENT
            out.dacl = None
    if parts & SACL:
        out.sacl_raw = new.sacl_raw
    return out


def map_generic(mask: int) -> int:
    if not mask & GENERIC_BITS:
        return mask         # (most masks name specific rights only: nothing to map)
    for bit, specific in GENERIC:
        if mask & bit:
            mask = (mask & ~bit) | specific
    return mask


def mapped(dacl: list[Ace] | None) -> list[Ace] | None:
    """A DACL as Windows stores it: generic rights mapped to the file rights in the ACEs that
    apply to the object itself (an inherit-only ACE keeps them, for its children to map)."""
    if dacl is None:
        return None
    return [a if a.body or a.flags & INHERIT_ONLY else Ace(a.type, a.flags, map_generic(a.mask), a.sid)
            for a in dacl]


def granted(d: Descriptor | None, token: Token = USER_TOKEN, owner: bytes | None = None) -> int:
    """The most this token gets from the descriptor (MS-DTYP 2.5.3.2, MAXIMUM_ALLOWED): the
    first ACE naming a right decides it. The owner gets READ_CONTROL and WRITE_DAC whatever
    the DACL says (so it can always put its DACL right), unless an OWNER RIGHTS (S-1-3-4) ACE
    is there: then those ACEs say what the owner gets, in place of the implicit rights.
    `owner`: the file's Unix owner (`unix_user`), who holds the owner's rights (see `owns`);
    without a descriptor, all but WRITE_DAC and WRITE_OWNER unless the token owns the file.
    None: a file this open creates (all, without a descriptor) or a descriptor made for it
    (its owner SID, the creator's, then stands for the Unix owner)."""
    if token.overrides:
        return FILE_ALL_ACCESS
    if d is None:
        return FILE_ALL_ACCESS if owner is None or owns(token, owner) else FILE_ALL_ACCESS & ~OWNER_ONLY
    if not d.control & SE_DACL_PRESENT or d.dacl is None:
        return FILE_ALL_ACCESS          # a NULL DACL: all access to everyone, as it says
    effective = [a for a in d.dacl if not a.body and not a.flags & INHERIT_ONLY]
    is_owner = owns(token, d.owner if owner is None else owner)
    owner_rights = is_owner and any(a.sid == OWNER_RIGHTS for a in effective)
    allowed = READ_CONTROL | WRITE_DAC if is_owner and not owner_rights else 0
    denied = 0
    for ace in effective:
        if not (ace.sid in token or owner_rights and ace.sid == OWNER_RIGHTS):
            continue
        mask = map_generic(ace.mask)
        if ace.type == DENIED:
            denied |= mask & ~allowed
        else:
            allowed |= mask & ~denied
    return allowed & FILE_ALL_ACCESS


FILE_LIST_DIRECTORY, FILE_READ_ATTRIBUTES = 0x1, 0x80


def check(desired: int, d: Descriptor | None, parent: Descriptor | None, token: Token = USER_TOKEN,
          owner: bytes | None = None) -> int:
    """The access to grant for `desired` (MAXIMUM_ALLOWED and generic bits resolved), or -1
    when the descriptor refuses part of it. The parent's descriptor adds what NTFS derives
    from it: DELETE from its FILE_DELETE_CHILD, FILE_READ_ATTRIBUTES from its
    FILE_LIST_DIRECTORY (a parent without a stored descriptor grants what its mode allows).
    `owner`: the file's Unix owner, as `granted` takes it (an existing file's is always
    given)."""
    have = granted(d, token, owner)
    if parent is not None:
        from_parent = granted(parent, token)
        if from_parent & FILE_DELETE_CHILD:
            have |= DELETE
        if from_parent & FILE_LIST_DIRECTORY:
            have |= FILE_READ_ATTRIBUTES
    want = map_generic(desired) & ~(MAXIMUM_ALLOWED | ACCESS_SYSTEM_SECURITY)
    if want & ~have:
        return -1
    return want | (have if desired & MAXIMUM_ALLOWED else 0)


def _identity(a: Ace) -> tuple:
    """What makes two ACEs equal, as a key: duplicates are found in a set, not by comparing
    each ACE with every other (a DACL may hold thousands where xattrs take 64 KiB)."""
    return a.type, a.flags, a.mask, a.sid, a.body


def _inherited_aces(parent: Descriptor, is_dir: bool, token: Token) -> list[Ace]:
    """The ACEs a new child gets from its parent's DACL (MS-DTYP 2.5.3.4.2, as NTFS and
    Samba make them): a file takes the object-inherit ACEs as plain ones; a directory the
    container-inherit ones (still inheritable unless NO_PROPAGATE) and the object-inherit ones
    as inherit-only (for its files). CREATOR OWNER and CREATOR GROUP become the child's owner
    and group; on a directory that passes them on, the CREATOR ACE is also kept inherit-only.
    Generic rights are mapped in the ACEs that apply to the child itself. The ACEs are marked
    INHERITED only where the parent's DACL is AUTO_INHERITED."""
    mark = INHERITED if parent.control & SE_DACL_AUTO_INHERITED else 0
    aces: list[Ace] = []
    for ace in parent.dacl or ():
        flags = ace.flags
        if ace.body:
            continue
        if not is_dir:
            if not flags & OBJECT_INHERIT:
                continue
            new_flags = 0
        else:
            if not (flags & CONTAINER_INHERIT or flags & OBJECT_INHERIT and not flags & NO_PROPAGATE):
                continue
            new_flags = flags & ~(INHERIT_ONLY | INHERITED)
            if not new_flags & CONTAINER_INHERIT:
                new_flags |= INHERIT_ONLY               # only for the files below it
            if new_flags & NO_PROPAGATE:
                new_flags = 0                           # for this directory only
        creator = ace.sid if ace.sid in (CREATOR_OWNER, CREATOR_GROUP) else None
        who = {CREATOR_OWNER: token.owner, CREATOR_GROUP: token.group}.get(ace.sid, ace.sid)
        if creator and is_dir and new_flags & CONTAINER_INHERIT:
            aces.append(Ace(ace.type, mark, map_generic(ace.mask), who))
            aces.append(Ace(ace.type, new_flags | INHERIT_ONLY | mark, ace.mask, creator))
            continue
        if new_flags & INHERIT_ONLY:
            aces.append(Ace(ace.type, new_flags | mark, ace.mask, ace.sid))   # (CREATOR kept)
        else:
            aces.append(Ace(ace.type, new_flags | mark, map_generic(ace.mask), who))
    return list({_identity(a): a for a in aces}.values())      # each once, in order


def default_dacl(token: Token) -> list[Ace]:
    """Windows' DACL for a new file with nothing to inherit: full control for the owner and
    SYSTEM."""
    return [Ace(ALLOWED, 0, FILE_ALL_ACCESS, token.owner), Ace(ALLOWED, 0, FILE_ALL_ACCESS, SYSTEM)]


def inherit(parent: Descriptor | None, is_dir: bool, token: Token = USER_TOKEN) -> Descriptor | None:
    """The descriptor a new file or directory gets from its parent's inheritable ACEs (the
    default DACL when none is inheritable); None when the parent has no stored descriptor
    (the file then has none either: its mode bits speak for it)."""
    if parent is None or parent.dacl is None or not parent.control & SE_DACL_PRESENT:
        return None
    aces = _inherited_aces(parent, is_dir, token)
    control = SE_SELF_RELATIVE | SE_DACL_PRESENT
    if aces and parent.control & SE_DACL_AUTO_INHERITED:
        control |= SE_DACL_AUTO_INHERITED
    return Descriptor(control=control, owner=token.owner, group=token.group,
                      dacl=aces or default_dacl(token))



def complete(d: Descriptor, parent: Descriptor | None, is_dir: bool, token: Token = USER_TOKEN) -> Descriptor:
    """A descriptor given at creation (the SecD context) with its gaps filled as Windows does
    (MS-DTYP 2.5.3.4.1): owner and group from the token; without a DACL the inherited one,
    else the default (owner and SYSTEM: full control); with one, its generic rights mapped
    and, unless it is PROTECTED, the parent's inheritable ACEs added after its own where the
    parent's DACL is AUTO_INHERITED. The request flag is never stored."""
    d.owner = d.owner or token.owner
    d.group = d.group or token.group
    d.control &= ~SE_DACL_AUTO_INHERIT_REQ
    if not d.control & SE_DACL_PRESENT:
        inherited = inherit(parent, is_dir, token)
        d.dacl = inherited.dacl if inherited is not None else default_dacl(token)
        d.control |= SE_DACL_PRESENT | (inherited.control & SE_DACL_AUTO_INHERITED if inherited else 0)
        return d
    d.dacl = mapped(d.dacl)
    if (d.dacl is not None and not d.control & SE_DACL_PROTECTED and parent is not None
            and parent.control & SE_DACL_PRESENT and parent.control & SE_DACL_AUTO_INHERITED):
        explicit = [a for a in d.dacl if a.body or not a.flags & INHERITED]
        given = {_identity(a) for a in explicit}
        d.dacl = explicit + [a for a in _inherited_aces(parent, is_dir, token) if _identity(a) not in given]
        d.control |= SE_DACL_AUTO_INHERITED
    return d


def from_mode(st: os.stat_result, read_only_attribute: bool = False) -> Descriptor:
    """The descriptor of a file without a stored one: owner and group from its uid/gid (Samba's
    S-1-22 Unix SIDs), a DACL granting Everyone what the mode bits allow. Write bits dropped
    for the READONLY attribute (`read_only_attribute`) do not count: as on Windows, the
    attribute leaves the DACL as it was."""
    import stat as stat_module
    writable = st.st_mode & 0o222 or read_only_attribute
    mask = 0x001200A9 | (0x00130116 if writable else 0)
    if stat_module.S_ISDIR(st.st_mode) and writable:
        mask |= FILE_DELETE_CHILD      # a writable Unix directory lets its entries be removed
    return Descriptor(control=SE_SELF_RELATIVE | SE_DACL_PRESENT, owner=sid(22, 1, st.st_uid),
                      group=sid(22, 2, st.st_gid), dacl=[Ace(ALLOWED, 0, mask, EVERYONE)])
