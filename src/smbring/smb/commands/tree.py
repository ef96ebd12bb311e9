"""TREE_CONNECT and TREE_DISCONNECT (MS-SMB2 3.3.5.7, 3.3.5.8), and the share's rules a tree
connect is checked against, in Samba's order (make_connection_snum): the client's address
(`hosts allow`/`hosts deny`), guests, the user lists, encryption, then `max connections`."""
from __future__ import annotations

import dataclasses
import errno
import logging
import struct
from typing import TYPE_CHECKING

from smbring.smb import acl, hosts, share_access, wire
from smbring.smb.effects import FileSteps
from smbring.smb.errors import SMBError, in_request
from smbring.smb.fs import FileSystem
from smbring.smb.policy import DIALECT_NAMES
from smbring.smb.share_access import NameRules
from smbring.smb.state import Session, Share, Tree
from smbring.smb.wire import Header

if TYPE_CHECKING:
    from smbring.smb.connection import Connection

log = logging.getLogger("smbring.smb")
SHAREFLAG_DFS, SHAREFLAG_DFS_ROOT = 0x1, 0x2
SHARE_CAP_DFS = 0x8
SHAREFLAG_ACCESS_BASED_DIRECTORY_ENUM = 0x800
SHAREFLAG_ENCRYPT_DATA = 0x8000
ANONYMOUS_LOGON = acl.sid(5, 7)      # S-1-5-7


def is_anonymous(s: Session) -> bool:
    """The session acts for an anonymous logon (no user name, no password): a guest session
    whose user is the kind `anonymous` (commands.session), not a user of that name."""
    return s.guest and s.user == "anonymous"


def h_tree_connect(c: Connection, hdr: Header, msg: bytes, rhdr: Header, _):
    _size, flags, off, length = struct.unpack_from("<HHHH", msg, 64)
    path = wire.from_utf16(in_request(msg, off, length))
    name = path.rsplit("\\", 1)[-1].lower()
    s = c.sessions[hdr.session_id]
    if len(s.trees) >= c.limits.max_trees:
        raise SMBError(wire.STATUS_INSUFFICIENT_RESOURCES)
    if name == "ipc$":
        if s.guest and c.policy.restrict_anonymous >= 2:
            # restrict anonymous = 2: IPC$ is no guest share (Samba's lp_add_ipc), so neither
            # anonymous nor a guest reaches it
            log.info("tree connect to IPC$ refused: %s, restrict anonymous = 2", s.user)
            raise SMBError(wire.STATUS_ACCESS_DENIED)
        tree, share_type, access = Tree(None, None), wire.SHARE_TYPE_PIPE, 0x001F01FF
    else:
        tree = _connect_share(c, s, name)
        share_type = wire.SHARE_TYPE_DISK
        access = wire.READ_ONLY_ACCESS if tree.share.read_only else wire.FILE_ALL_ACCESS
    tid = c.next_id
    c.next_id += 1
    s.trees[tid] = tree
    rhdr.tree_id = tid
    share = tree.share
    encrypted = share is not None and (share.encrypt or share.encrypt_desired and c.cipher and not s.guest)
    share_flags = (SHAREFLAG_ENCRYPT_DATA if encrypted else 0) | \
        (share.csc_policy if share is not None else 0)      # (`csc policy`: caching bits)
    capabilities = 0
    if share is not None and share.msdfs_root and c.policy.host_msdfs:
        share_flags |= SHAREFLAG_DFS | SHAREFLAG_DFS_ROOT      # (smb.dfs)
        capabilities |= SHARE_CAP_DFS
    if share is not None and (share.hide_unreadable or share.hide_unwriteable):
        # listings show only what the user may open (MS-SMB2 3.3.5.7: the share does
        # access-based directory enumeration), as Samba says for the same two options
        share_flags |= SHAREFLAG_ACCESS_BASED_DIRECTORY_ENUM
    return struct.pack("<HBBIII", 16, share_type, 0, share_flags, capabilities, access), None


def _connect_share(c: Connection, s: Session, name: str) -> Tree:
    tree = _share_view(c, s, name)
    # counted under the share's own name: a home reached as "homes", by its owner's name or
    # by a username-map alias is one share (as one smbd service)
    if not c.state.connect_tree(tree.name, tree.share.max_connections):
        log.info("tree connect to %s refused: max connections = %d reached", tree.name, tree.share.max_connections)
        raise SMBError(wire.STATUS_INSUFFICIENT_RESOURCES)
    tree.counted = tree.name
    return tree


def reachable(c: Connection, s: Session, name: str) -> Tree | None:
    """The share `name` as the session would reach it by a tree connect (every check of one
    made, nothing counted or kept), or None where it may not: what a DFS referral looks in
    (smb.dfs), asked on IPC$ before any tree connect to the share."""
    try:
        return _share_view(c, s, name.lower())
    except SMBError:
        return None


def _share_view(c: Connection, s: Session, name: str, kept: bool = False) -> Tree:
    """The share `name` as the session's user reaches it (not yet counted against `max
    connections`); SMBError where the user may not. `kept`: a tree connect of the session
    checked again after a re-authentication (`reauthorize`), not a new one."""
    share = c.shares.get(name)
    if share is None or share.homes:
        share, name = _home_share(c, s, name)
    if share is None:
        raise SMBError(wire.STATUS_BAD_NETWORK_NAME)
    why = refusal(c, s, share, None, kept)
    if why is None:
        share, user, as_guest = seen_by(c, s, share, name)
        if share is share_access.BAD_VALUE:
            raise SMBError(wire.STATUS_BAD_NETWORK_NAME)
        why = refusal(c, s, share, user, kept)
    if why is not None:
        log.info("tree connect to %s refused: %s", name, why)
        raise SMBError(wire.STATUS_ACCESS_DENIED)
    accounts = c.policy.accounts
    read_only = share.read_only
    if share.read_list and share_access.in_list(share.read_list, user, accounts):
        read_only = True
    if share.write_list and share_access.in_list(share.write_list, user, accounts):
        read_only = False
    if read_only != share.read_only:
        share = dataclasses.replace(share, read_only=read_only)
    if share.encrypt and (not c.cipher or s.guest and not s.encrypt_key):
        # the client cannot encrypt, or the session has no keys (a guest's, anonymous'; one
        # re-authenticated as them keeps its first logon's keys, and goes on encrypting)
        raise SMBError(wire.STATUS_ACCESS_DENIED)
    identity, admin = None, False
    if c.identities is not None:     # the account the tree acts as (force user, force group)
        who = s.identity
        if as_guest and not s.guest:
            # guest only: a user's session acts on the share as the guest account, with its
            # rights, not with the user's own (as smbd does), as the user lists saw it
            who = c.identities.logon("", "guest")
        identity = c.identities.for_share(share, who)
        if identity is None:
            raise SMBError(wire.STATUS_ACCESS_DENIED)
        if share.admin_users and not as_guest and share_access.in_list(share.admin_users, user, accounts):
            # `admin users`: root on this share, whoever else force user names (as Samba)
            identity, admin = c.identities.as_admin(identity), True
    try:
        fs = tree_files(c, share, identity)
    except OSError as e:
        log.info("tree connect to %s: its directory %s: %s", name, share.path, e)
        raise SMBError(wire.STATUS_BAD_NETWORK_NAME) from None
    if getattr(identity, "uid", None) is not None:     # a Unix account (identities are opaque here)
        # an admin user acting as root passes every descriptor, as smbd's root override;
        # other sessions acting as root (force user, a username map) still meet their deny
        # ACEs (smbd would let them through: stricter, never looser)
        token = acl.unix_token(identity.uid, identity.gid, identity.groups, guest=as_guest,
                               overrides=admin and identity.uid == 0)
    else:
        token = acl.GUEST_TOKEN if as_guest else acl.USER_TOKEN
    if is_anonymous(s):
        # Anonymous Logon (S-1-5-7) besides Everyone, as in Samba's anonymous token: an ACE
        # naming it applies to the session, a deny ACE too
        token = dataclasses.replace(token, sids=token.sids | {ANONYMOUS_LOGON})
    return Tree(share, fs, names=NameRules.of(share), guest=as_guest and not s.guest, token=token, name=name)


def reauthorize(c: Connection, s: Session) -> str | None:
    """After a re-authentication as another user (or as the guest, or anonymous): each tree
    connect of the session is checked again as the new user and acts as it from now on, as
    smbd checks a tree again at its next request (check_user_share_access: the client's
    address, valid users and invalid users, read list and write list, the guest account for
    a guest or anonymous). As in smbd, `guest ok` is not asked again: it decides which
    shares a guest or anonymous session may connect to, and a user's session that
    re-authenticates as one keeps the tree connects it made as the user, acting there as the
    guest account from now on (smb2.session.reauth2-4 expect this). The opens stay, with
    the access they were granted when opened (smbd keeps them too); what is checked against
    the user anew (security descriptors, the Unix permissions of the account acted as, the
    share's rules) sees the new one. Returns why a tree connect may not be kept (then the
    caller ends the session), None when all are."""
    for t in s.trees.values():
        if t.share is None:     # IPC$
            if s.guest and c.policy.restrict_anonymous >= 2:
                return "IPC$: restrict anonymous = 2"
            continue
        try:
            view = _share_view(c, s, t.name, kept=True)
        except SMBError as e:
            return f"share {t.name}: status {e.status:#x}"
        t.share, t.fs, t.names, t.guest, t.token = view.share, view.fs, view.names, view.guest, view.token
    return None


def tree_files(c: Connection, share: Share, identity) -> FileSystem:
    """The share's files as a tree acting as `identity` reaches them. Where that account
    cannot reach the share's directory (a directory above it it may not search), the tree
    connects but every request on it is refused with STATUS_ACCESS_DENIED, as smbd refuses
    them (its chdir into the share, as the user, fails before each); asked at each tree
    connect. Raises OSError where the directory cannot be opened at all."""
    fs = c.share_fs(share, identity)
    if fs.reachable():
        return fs
    log.info("share %s: its directory %s cannot be reached as %s (a directory on the way is not "
             "searchable): every request on the tree is refused", share.name, share.path,
             getattr(identity, "name", "the server"))
    return Unreachable(fs.root, identity)


class Unreachable:
    """A share's files for an account that cannot reach its directory: every call refused
    (EACCES, which the core answers with STATUS_ACCESS_DENIED); the calls that raise nothing
    answer that there is nothing to be had."""

    def __init__(self, root: str, identity=None):
        self.root = root
        self.identity = identity        # (for status)

    def close(self) -> None:
        pass

    def may_delete(self, parts) -> bool:
        return False

    def entry_stat(self, dir_fd, dir_parts, name):
        return None

    def may_access(self, dir_fd, name, mode) -> bool:
        return False

    def reachable(self) -> bool:
        return False

    def get_dos_at(self, dir_fd, name):
        return None

    def allocate(self, fd, size) -> None:
        pass

    def __getattr__(self, name: str):
        if name.startswith("_") or not hasattr(FileSystem, name):
            raise AttributeError(name)

        def refuse(*args, **kw):
            raise PermissionError(errno.EACCES, "the share's directory cannot be reached by this account")
        return refuse


def seen_by(c: Connection, s: Session, share: Share, name: str):
    """The share as the session sees it, its templates substituted (share_access.BAD_VALUE
    for a path that cannot be used), the account the session acts as there, and whether as
    the guest."""
    as_guest = s.guest or (share.guest_only and share.guest_ok)
    user = c.policy.guest_account if as_guest else list_name(c, s)
    # %D is the domain the account belongs to as the server authenticated it, never the one the
    # client typed: every account is the server's own, so (as Samba's local SAM) its name
    values = share_access.session_values(
        user=user, asked_as=s.asked_as, domain=c.policy.server_name.upper(), share=name,
        client_address=c.client_address, server_name=c.policy.server_name,
        dialect=DIALECT_NAMES.get(c.dialect, ""), accounts=c.policy.accounts)
    return share_access.resolve(share, values), user, as_guest


def list_name(c: Connection, s: Session) -> str:
    """The name a user's session has in share rules (user lists, %u): the account
    the client's name maps to (`username map`), as Samba checks, never the client's own
    spelling of it: an alias gets no further than its account."""
    if s.identity is not None and getattr(c.identities, "acts_as_each_user", False):
        return s.identity.name      # the Unix account (username map applied)
    if s.account:
        # the password file's account the logon proved (username map applied): the file
        # finds a name in any case, Unicode-folded, so "ſteve" reaches steve's line, and
        # the client's spelling would get past `invalid users = steve`
        return s.account.lower()
    mapped = getattr(c.identities, "list_name", None)
    return mapped(s.user) if mapped is not None else share_access.bare(s.user)


def refusal(c: Connection, s: Session, share: Share, user: str | None, kept: bool = False) -> str | None:
    """Why the session may not connect to the share, None when it may: the client's address
    (`hosts allow`/`hosts deny`), guests and anonymous (`guest ok`; not asked of a tree
    connect `kept` through a re-authentication, see `reauthorize`), then, given the account
    the session acts as (`seen_by`; None to leave them out), the user lists of the
    substituted share."""
    for address in addresses_of(c, s):
        if not hosts.allowed(share.hosts_allow, share.hosts_deny, address):
            return f"{address} is not allowed (hosts allow/deny)"
    if s.guest and not share.guest_ok and not kept:
        return "guests are not admitted (guest ok = no)"
    if user is None:
        return None
    accounts = c.policy.accounts
    if share_access.in_list(share.invalid_users, user, accounts) or \
            share.valid_users and not share_access.in_list(share.valid_users, user, accounts):
        return f"user {user} (valid/invalid users)"
    return None


def addresses_of(c: Connection, s: Session) -> list:
    """The addresses a session is reached from: this connection's, then its other channels'
    (multichannel). A share's hosts lists must admit each, or a channel bound from a refused
    address would carry the session's tree connects to the share there."""
    others = [getattr(conn, "client_address", None) for conn in s.channels if conn is not c]
    return [c.client_address] + [a for a in others if a != c.client_address]


def binding_refusal(c: Connection, s: Session) -> str | None:
    """Why this connection may not become a channel of the session, for the shares it has
    tree connects to: their hosts lists refuse the connection's address."""
    for t in s.trees.values():
        if t.share is not None and not hosts.allowed(t.share.hosts_allow, t.share.hosts_deny, c.client_address):
            return f"{c.client_address} is not allowed on share {t.name} (hosts allow/deny)"
    return None


def _home_share(c: Connection, s: Session, name: str) -> tuple[Share | None, str]:
    """[homes] as smbd finds a home (smbd_smb2_tree_connect, find_service): "homes", or the
    name of the account the session's logon proved (`list_name`: never the client's spelling
    of it), is the session's own home (a guest has none); any other name is the home of the
    Unix account of that name (or of the one the username map gives it) where the system
    has one with a home directory, for whoever the share's rules admit: `valid users = %S`
    keeps each home to its owner. That last only where each session acts as its own Unix
    account (a server started as root: `acts_as_each_user`), whose rights then guard the
    home; where every session acts as the server's one account, another's home would be
    reached with its owner's rights, so a session reaches its own home only. Returns the
    share (None: no such share) and its name, the account's (%S). Its directory is the
    section's path (%S substituted), else the account's home directory; the session's own
    home needs no Unix account where the path is given."""
    homes = c.shares.get("homes")
    if homes is None or not homes.homes:
        return None, name
    own = None if s.guest else list_name(c, s).lower()
    if name in ("homes", own):
        return (_home_of(c, homes, own) if own else None), own or name
    if not getattr(c.identities, "acts_as_each_user", False):
        return None, name
    home = c.policy.accounts.home(name)
    if home is None:
        name = c.identities.mapped_name(name).lower()
        home = c.policy.accounts.home(name)
    return (None if home is None else _home_in(homes, home)), name


def _home_of(c: Connection, homes: Share, owner: str) -> Share | None:
    """The session's own home (`owner`, its account): needs no Unix account where the
    section gives its path."""
    if homes.path:
        return homes
    home = c.policy.accounts.home(owner)
    return None if home is None else _home_in(homes, home)


def _home_in(homes: Share, home: str) -> Share:
    """[homes] for one home: the section's path (%S substituted later), else `home`."""
    return homes if homes.path else dataclasses.replace(homes, path=home)


def h_tree_disconnect(c: Connection, hdr: Header, msg: bytes, rhdr: Header, _):
    t = c.sessions[hdr.session_id].trees.pop(hdr.tree_id, None)
    if t is None:
        raise SMBError(wire.STATUS_NETWORK_NAME_DELETED)
    # (no request reaches the tree now) the I/O under way on its opens ends before they close
    busy = c.busy_opens(hdr.session_id, hdr.tree_id)
    if busy:
        return FileSteps(c.after_io(busy, lambda: disconnected(c, hdr.session_id, hdr.tree_id, t))), None
    return disconnected(c, hdr.session_id, hdr.tree_id, t), None


def disconnected(c: Connection, session_id: int, tree_id: int, t: Tree) -> bytes:
    """Closes the tree connect's opens; the TREE_DISCONNECT response's body."""
    c.close_opens(session_id, tree_id)
    c.drop_tree(t)
    return struct.pack("<HH", 4, 0)


# -- an administrator's close-share and close-denied-share (Samba's smbcontrol messages) ------
def denied_now(c: Connection, s: Session, t: Tree) -> str | None:
    """Why the tree connect would not be made as it stands under the shares now in force,
    None when it would: the share is gone, the session's user (or address) is refused, or
    the user would get another `read only` or another directory. As smbd's
    close-denied-share judges a tree (force_tdis_denied_check: check_user_share_access, and
    its read_only compared), with `guest ok` not asked again (as `reauthorize` does)."""
    if t.share is None:         # IPC$
        if s.guest and c.policy.restrict_anonymous >= 2:
            return "IPC$: restrict anonymous = 2"
        return None
    try:
        view = _share_view(c, s, t.name, kept=True)
    except SMBError as e:
        return "share gone" if e.status == wire.STATUS_BAD_NETWORK_NAME else f"refused now (status {e.status:#x})"
    if view.share.read_only != t.share.read_only:
        return f"read only is now {'yes' if view.share.read_only else 'no'}"
    if view.share.path != t.share.path:
        return f"its directory is now {view.share.path}"
    return None


def force_disconnect(c: Connection, s: Session, tree_id: int) -> Tree | None:
    """The tree connect ends as its TREE_DISCONNECT would end it, its opens closed (a durable
    one too), with no answer to send: the client's next request naming it is answered
    STATUS_NETWORK_NAME_DELETED (MS-SMB2 3.3.5.2.11), and a client connects the share again.
    (A descriptor that I/O under way still names is closed when it ends, as at a LOGOFF.)"""
    t = s.trees.pop(tree_id, None)
    if t is not None:
        c.close_opens(s.id, tree_id)
        c.drop_tree(t)
    return t
