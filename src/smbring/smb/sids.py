"""Security identifiers (MS-DTYP 2.4.2): their binary and text forms, and the well-known ones
with the names Samba gives them (its source3/lib/util_wellknown.c and util_builtin.c), and
`Directory`, which translates names and SIDs both ways for the lsarpc pipe.

Names as Samba's LSA answers them, by domain:

- ``""`` (S-1-1, S-1-2, S-1-3): Everyone, Local, Console Logon, Creator Owner, Creator Group,
  Creator Owner Server, Creator Group Server, Owner Rights; well-known groups;
- ``NT Authority`` (S-1-5): SYSTEM, Authenticated Users, Network, ...; well-known groups;
- ``BUILTIN`` (S-1-5-32): Administrators, Users, Guests, ...; aliases;
- ``Unix User`` (S-1-22-1-uid) and ``Unix Group`` (S-1-22-2-gid): the Unix accounts, as
  Samba names the owners and groups of files it has no other SID for (smbring gives every
  file's owner and group these SIDs); users and domain groups.
"""
from __future__ import annotations

import hashlib
import re
import struct
from dataclasses import dataclass
from typing import Protocol

# SID_NAME_USE (MS-LSAT 2.2.13)
USER, DOMAIN_GROUP, DOMAIN, ALIAS, WELL_KNOWN_GROUP, UNKNOWN = 1, 2, 3, 4, 5, 8

MAX_SUB_AUTHORITIES = 15


def make(authority: int, *subs: int) -> bytes:
    """A SID in its binary form (revision 1)."""
    return struct.pack("<BB", 1, len(subs)) + authority.to_bytes(6, "big") + struct.pack(f"<{len(subs)}I", *subs)


def parts(sid: bytes) -> tuple[int, tuple[int, ...]]:
    """(identifier authority, sub-authorities) of a binary SID."""
    count = sid[1]
    return int.from_bytes(sid[2:8], "big"), struct.unpack_from(f"<{count}I", sid, 8)


def text(sid: bytes) -> str:
    """The S-1-... form (an authority of 2^32 or more in hex, as MS-DTYP 2.4.2.1 writes it)."""
    authority, subs = parts(sid)
    head = f"S-{sid[0]}-{authority}" if authority < 1 << 32 else f"S-{sid[0]}-0x{authority:012X}"
    return "-".join([head, *map(str, subs)])


def from_text(value: str) -> bytes:
    """`text`'s inverse for the decimal form (S-1-5-21-1-2-3-1000); ValueError for anything
    else."""
    fields = value.strip().split("-")
    if not 3 <= len(fields) <= 3 + MAX_SUB_AUTHORITIES or fields[0].upper() != "S" or fields[1] != "1":
        raise ValueError(f"not a SID: {value!r}")
    return make(int(fields[2]), *(int(f) for f in fields[3:]))


def domain_and_rid(sid: bytes) -> tuple[bytes, int] | None:
    """The SID without its last sub-authority, and that sub-authority (None without one)."""
    authority, subs = parts(sid)
    if not subs:
        return None
    return make(authority, *subs[:-1]), subs[-1]


def machine_sid(netbios_name: str) -> bytes:
    """The account domain's SID (S-1-5-21-a-b-c), as Windows and Samba give every machine
    one: smbring keeps no SAM, so it is derived from the server's NetBIOS name, stable across
    restarts and different for each name."""
    digest = hashlib.sha256(b"smbring account domain\0" + netbios_name.upper().encode()).digest()
    return make(5, 21, *struct.unpack("<III", digest[:12]))


# -- well-known SIDs: (authority, domain sub-authorities) -> (domain name, {rid: name}) ------
WORLD, LOCAL, CREATOR, NT_AUTHORITY = make(1), make(2), make(3), make(5)
BUILTIN = make(5, 32)
UNIX_USERS, UNIX_GROUPS = make(22, 1), make(22, 2)

WELL_KNOWN_DOMAINS: dict[bytes, tuple[str, dict[int, str]]] = {
    WORLD: ("", {0: "Everyone"}),
    LOCAL: ("", {0: "Local", 1: "Console Logon"}),
    CREATOR: ("", {0: "Creator Owner", 1: "Creator Group", 2: "Creator Owner Server",
                   3: "Creator Group Server", 4: "Owner Rights"}),
    NT_AUTHORITY: ("NT Authority", {
        1: "Dialup", 2: "Network", 3: "Batch", 4: "Interactive", 6: "Service", 7: "Anonymous Logon",
        8: "Proxy", 9: "Enterprise Domain Controllers", 10: "Self", 11: "Authenticated Users",
        12: "Restricted", 13: "Terminal Server User", 14: "Remote Interactive Logon",
        15: "This Organization", 17: "IUSR", 18: "SYSTEM", 19: "Local Service", 20: "Network Service"}),
}
BUILTIN_ALIASES: dict[int, str] = {
    544: "Administrators", 545: "Users", 546: "Guests", 547: "Power Users", 548: "Account Operators",
    549: "Server Operators", 550: "Print Operators", 551: "Backup Operators", 552: "Replicator",
    553: "RAS Servers", 554: "Pre-Windows 2000 Compatible Access", 555: "Remote Desktop Users",
    556: "Network Configuration Operators", 557: "Incoming Forest Trust Builders",
    558: "Performance Monitor Users", 559: "Performance Log Users",
    560: "Windows Authorization Access Group", 561: "Terminal Server License Servers",
    562: "Distributed COM Users", 569: "Cryptographic Operators", 573: "Event Log Readers",
    574: "Certificate Service DCOM Access",
}
BUILTIN_NAME, UNIX_USERS_NAME, UNIX_GROUPS_NAME = "BUILTIN", "Unix User", "Unix Group"



class UnixNames(Protocol):
    """The system's users and groups by name and id (pwd and grp), handed to the core by the
    server so that the core looks nothing up itself."""

    def user_id(self, name: str) -> int | None: ...

    def user_name(self, uid: int) -> str | None: ...

    def group_id(self, name: str) -> int | None: ...

    def group_name(self, gid: int) -> str | None: ...


class NoUnixNames:
    """No Unix accounts at all (a core built alone, in tests)."""

    def user_id(self, name: str) -> int | None:
        return None

    def user_name(self, uid: int) -> str | None:
        return None

    def group_id(self, name: str) -> int | None:
        return None

    def group_name(self, gid: int) -> str | None:
        return None


@dataclass(frozen=True)
class Found:
    """What a name or SID stands for: the SID, its SID_NAME_USE, the domain it belongs to
    (name and SID; for a domain itself, the domain), and its own name."""

    sid: bytes
    type: int
    domain: str
    domain_sid: bytes
    name: str


class Directory:
    """Names and SIDs as this server knows them, both ways, in Samba's order for a name
    without a domain: the well-known names, the BUILTIN domain, the account domain (the
    server's NetBIOS name), the BUILTIN aliases, then Unix users and Unix groups.

    smbring keeps no account database, so the account domain holds no accounts: every user
    and group is named by its Unix SID, which is what smbring's security descriptors hold.
    With `everything` False (lookup levels other than "all"), well-known names and BUILTIN
    are left out, as Samba does."""

    def __init__(self, netbios_name: str, unix: UnixNames):
        self.account_domain = netbios_name.upper()
        self.account_sid = machine_sid(netbios_name)
        self.unix = unix

    # -- names -> SIDs ---------------------------------------------------------------------
    def lookup_name(self, full_name: str, everything: bool = True) -> Found | None:
        if "\\" in full_name:
            domain, name = full_name.split("\\", 1)
            if domain:
                return self._qualified(domain, name, everything)
            full_name = name
        return self._isolated(full_name, everything)

    def _qualified(self, domain: str, name: str, everything: bool) -> Found | None:
        folded = domain.casefold()
        if folded == self.account_domain.casefold():
            # the domain itself; it holds no accounts (see the class)
            return self._domain(self.account_domain, self.account_sid) if not name else None
        if folded == UNIX_USERS_NAME.casefold():
            return self._unix_user(name)
        if folded == UNIX_GROUPS_NAME.casefold():
            return self._unix_group(name)
        if not everything:
            return None
        if folded == BUILTIN_NAME.casefold():
            return self._domain(BUILTIN_NAME, BUILTIN) if not name else self._builtin_alias(name)
        for domain_sid, (domain_name, names) in WELL_KNOWN_DOMAINS.items():
            if domain_name and domain_name.casefold() == folded:
                return self._well_known_in(domain_sid, domain_name, names, name)
        return None

    def _isolated(self, name: str, everything: bool) -> Found | None:
        if not name:
            return None
        if everything:
            for domain_sid, (domain_name, names) in WELL_KNOWN_DOMAINS.items():
                found = self._well_known_in(domain_sid, domain_name, names, name)
                if found is not None:
                    return found
            if name.casefold() == BUILTIN_NAME.casefold():
                return self._domain(BUILTIN_NAME, BUILTIN)
        if name.casefold() == self.account_domain.casefold():
            return self._domain(self.account_domain, self.account_sid)
        if everything:
            alias = self._builtin_alias(name)
            if alias is not None:
                return alias
        return self._unix_user(name) or self._unix_group(name)

    @staticmethod
    def _domain(name: str, sid: bytes) -> Found:
        return Found(sid, DOMAIN, name, sid, name)

    @staticmethod
    def _well_known_in(domain_sid: bytes, domain_name: str, names: dict[int, str], name: str) -> Found | None:
        folded = name.casefold()
        for rid, known in names.items():
            if known.casefold() == folded:
                return Found(_child(domain_sid, rid), WELL_KNOWN_GROUP, domain_name, domain_sid, known)
        return None

    @staticmethod
    def _builtin_alias(name: str) -> Found | None:
        folded = name.casefold()
        for rid, known in BUILTIN_ALIASES.items():
            if known.casefold() == folded:
                return Found(_child(BUILTIN, rid), ALIAS, BUILTIN_NAME, BUILTIN, known)
        return None

    def _unix_user(self, name: str) -> Found | None:
        uid = self.unix.user_id(name) if _plausible(name) else None
        if uid is None:
            return None
        return Found(_child(UNIX_USERS, uid), USER, UNIX_USERS_NAME, UNIX_USERS, self.unix.user_name(uid) or name)

    def _unix_group(self, name: str) -> Found | None:
        gid = self.unix.group_id(name) if _plausible(name) else None
        if gid is None:
            return None
        return Found(_child(UNIX_GROUPS, gid), DOMAIN_GROUP, UNIX_GROUPS_NAME, UNIX_GROUPS,
                     self.unix.group_name(gid) or name)

    # -- SIDs -> names ---------------------------------------------------------------------
    def lookup_sid(self, sid: bytes) -> Found | None:
        for domain_name, domain_sid in ((self.account_domain, self.account_sid), (BUILTIN_NAME, BUILTIN),
                                        (UNIX_USERS_NAME, UNIX_USERS), (UNIX_GROUPS_NAME, UNIX_GROUPS),
                                        (WELL_KNOWN_DOMAINS[NT_AUTHORITY][0], NT_AUTHORITY)):
            if sid == domain_sid:
                return self._domain(domain_name, domain_sid)
        split = domain_and_rid(sid)
        if split is None:
            return None
        domain_sid, rid = split
        if domain_sid in WELL_KNOWN_DOMAINS:
            domain_name, names = WELL_KNOWN_DOMAINS[domain_sid]
            name = names.get(rid)
            return Found(sid, WELL_KNOWN_GROUP, domain_name, domain_sid, name) if name else None
        if domain_sid == BUILTIN:
            name = BUILTIN_ALIASES.get(rid)
            return Found(sid, ALIAS, BUILTIN_NAME, BUILTIN, name) if name else None
        # every id of the Unix domains has a name, its number when the system has no other
        # (as Samba's uidtoname and gidtoname)
        if domain_sid == UNIX_USERS:
            return Found(sid, USER, UNIX_USERS_NAME, UNIX_USERS, self.unix.user_name(rid) or str(rid))
        if domain_sid == UNIX_GROUPS:
            return Found(sid, DOMAIN_GROUP, UNIX_GROUPS_NAME, UNIX_GROUPS, self.unix.group_name(rid) or str(rid))
        return None


def _child(domain_sid: bytes, rid: int) -> bytes:
    authority, subs = parts(domain_sid)
    return make(authority, *subs, rid)


# a Unix account name worth asking the system about: not empty, no control characters or
# separators, not absurdly long (NSS modules other than files may go to the network)
_ACCOUNT_NAME = re.compile(r"[^\x00-\x1f\x7f/\\:]{1,256}")


def _plausible(name: str) -> bool:
    return bool(_ACCOUNT_NAME.fullmatch(name))
