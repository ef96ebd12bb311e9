"""A security descriptor's owner and group are the file's Unix owner and group, as in Samba
(source3/smbd/posix_acls.c: `unpack_nt_owners`, `set_nt_acl`, `try_chown`): naming another
owner or group gives the file to it (a chown), so that the descriptor and the file never
disagree about whom the file belongs to.

- SET_INFO(OWNER): anyone may name the file's Unix owner (or the owner its descriptor names
  already: nothing changes); root alone may name another user, which must be a Unix user
  (S-1-22-1-uid; any other SID is STATUS_INVALID_OWNER) and gets the file.
- A CREATE's SecD context naming another owner (root only) or a group (one of the creator's,
  `create.new_descriptor` checked): the new file is given to them, as its creator, so the
  kernel's rules hold (an owner may give a file only to a group he is in).

Every chown is made through the share's view, as the session's account; a refusal of the
kernel is STATUS_ACCESS_DENIED, before anything is stored. A SID that names no Unix account
is STATUS_INVALID_OWNER, as in Samba, unless the share sets `force unknown acl user`
(`unknown_ok`): the descriptor then names it and the file keeps its owner or group (Samba
maps it to the current user's, which the file has)."""
from __future__ import annotations

import os

from smbring.smb import acl, wire
from smbring.smb.errors import SMBError


def follow_owner(fs, fd: int, token: acl.Token, new_owner: bytes, current_owner: bytes | None,
                 unknown_ok: bool = False) -> None:
    """SET_INFO(OWNER) naming `new_owner` for the open file `fd` (whose stored or derived
    descriptor names `current_owner`): refused (STATUS_INVALID_OWNER) where the setter may not
    name it; where root names a user other than the file's Unix owner, the file is given to
    that user first."""
    unix_owner = acl.unix_user(fs.fstat(fd).st_uid)
    uid = acl.unix_user_id(new_owner)
    if uid is None and unknown_ok:
        return          # (no Unix user: named as the file's current owner, Samba's forced one)
    if not acl.may_name_owner(token, new_owner, unix_owner, current_owner):
        raise SMBError(wire.STATUS_INVALID_OWNER)
    if new_owner == unix_owner or new_owner == current_owner:
        return          # (the owner as it is: nothing to give)
    if uid is None:
        raise SMBError(wire.STATUS_INVALID_OWNER)     # no Unix user: Samba's unpack_nt_owners
    try:
        fs.fchown_user(fd, uid)
    except PermissionError:
        raise SMBError(wire.STATUS_ACCESS_DENIED) from None


def follow_group(fs, fd: int, group: bytes, unknown_ok: bool = False) -> None:
    """A descriptor naming `group` for the open file `fd` (SET_INFO(GROUP), or a CREATE's SecD
    context): a SID that names no Unix group is STATUS_INVALID_OWNER; another group is given
    to the file first, as the user, so that the kernel's rule holds (its owner may give it
    only to a group he is in, root to any): a refusal is STATUS_ACCESS_DENIED and nothing is
    stored."""
    gid = acl.unix_group_id(group)
    if gid is None:
        if unknown_ok:
            return      # (the file keeps its group: Samba's forced one)
        raise SMBError(wire.STATUS_INVALID_OWNER)
    if fs.fstat(fd).st_gid != gid:
        try:
            fs.fchown_group(fd, gid)
        except PermissionError:
            raise SMBError(wire.STATUS_ACCESS_DENIED) from None


def give_named_owner_and_group(fs, fd: int, contexts: dict, unknown_ok: bool = False) -> None:
    """A file or directory a CREATE just made (open as `fd`): where its SecD context names an
    owner other than its creator (root alone may: `create.new_descriptor` checked) the file is
    given to that user, which must be a Unix user (else STATUS_INVALID_OWNER, and the CREATE
    undoes the file); where it names a group (checked to be a Unix group of its creator's),
    the file is given to it, as the creator. A context naming neither leaves the kernel's
    choice (the creator, his primary group or a setgid directory's)."""
    secd = contexts.get(b"SecD")
    if secd is None:
        return
    named = acl.parse(secd)     # (parsed and checked already by new_descriptor)
    if named.owner and named.owner != acl.unix_user(fs.fstat(fd).st_uid):
        uid = acl.unix_user_id(named.owner)
        if uid is None:
            if not unknown_ok:
                raise SMBError(wire.STATUS_INVALID_OWNER)
        else:
            try:
                fs.fchown_user(fd, uid)
            except PermissionError:
                raise SMBError(wire.STATUS_ACCESS_DENIED) from None
    if named.group and acl.unix_group_id(named.group) is not None:
        follow_group(fs, fd, named.group)


# `inherit owner` (Samba's values; `yes` is `windows and unix`): a new file or directory is
# given to the owner of the directory it is made in, as Unix owner (`unix only`) or as its
# descriptor's owner too (`windows and unix`)
NO, UNIX_ONLY, WINDOWS_AND_UNIX = "no", "unix only", "windows and unix"


def directory_owner(fs, share, parts: list[str]) -> tuple[int, bytes] | None:
    """Where the share's new files go to their directory's owner (`inherit owner`): that
    owner's uid and SID, for the file or directory a CREATE is making at `parts`; None
    otherwise. The directory's descriptor names its owner where it stores one (its Unix
    owner's SID otherwise)."""
    if share.inherit_owner == NO:
        return None
    directory = parts[:-1]
    uid = fs.stat(directory).st_uid
    owner = acl.unix_user(uid)
    if share.inherit_owner == WINDOWS_AND_UNIX:
        try:
            fd = fs.open(directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                stored = fs.get_sd(fd)
            finally:
                fs.close_file(fd)
            named = acl.parse(stored).owner if stored else None
        except (OSError, acl.BadDescriptor):
            named = None        # (one it cannot read: its Unix owner's SID, which is the same owner)
        if named and acl.unix_user_id(named) == uid:
            owner = named
    return uid, owner

