"""Who each session acts as: the Unix account its SMB user maps to.

A server started as root acts for every session as a Unix account (see
``smbring.vfs.identity``): its uid, primary gid and supplementary groups, read from the
system's user and group databases at logon (``pwd``, ``os.getgrouplist``):

- a user acts as the Unix account of the password file's account whose password the logon
  proved: the client's name, or the name Samba's ``username map`` file gives it, found in the
  password file in any case and spelled as the file spells it; the Unix account of that
  name is found as Samba's Get_Pwnam finds it (as written, in lower case, in upper case), so
  "ALICE" logs on as "alice"; a user without an account is refused at logon
  (STATUS_LOGON_FAILURE), as Samba refuses;
- a guest, and an anonymous logon, act as the ``guest account`` (default ``nobody``);
- a share's ``force user`` makes every tree connect to it act as that account (its groups
  too), ``force group`` replaces the primary group (``+group``: only for the group's members).

The ``username map`` file, as Samba reads it: one mapping per line, ``unixname = name1 name2
...``; names are compared without regard to case, a name in double quotes may hold spaces,
``*`` anywhere on the right matches every name, ``@group`` or ``+group`` every member of a
Unix group; lines are tried in order and a later match overrides an earlier one (each tried
with the name as mapped so far), except that a line starting with ``!`` ends the search when
it matches; ``#`` and ``;`` start comments. As in a standalone Samba, the map applies
before authentication: the client's name is mapped first and the mapped account's password is
checked (``map_name``, used by the server's password lookup, which names the account for
``Accounts.logon``); the
file is read again at each logon, so edits apply at once.
"""
from __future__ import annotations

import contextlib
import grp
import logging
import os
import pwd
from dataclasses import dataclass

from smbring.smb.state import Share
from smbring.vfs.identity import Identity, current_identity

log = logging.getLogger("smbring.accounts")

GUEST_ACCOUNT = "nobody"


@dataclass(frozen=True)
class MapLine:
    unix: str
    names: tuple[str, ...]
    stop: bool            # the line began with "!": a match ends the search


def parse_username_map(text: str) -> list[MapLine]:
    """The mappings of a ``username map`` file; lines that are no mapping are skipped."""
    lines = []
    for raw in text.splitlines():
        left, sep, right = raw.partition("=")
        if not sep:
            continue
        unix = left.strip()
        stop = unix.startswith("!")
        if stop:
            unix = unix[1:].strip()
        if not unix or unix[0] in "#;":
            continue
        names = _words(right)
        if names:
            lines.append(MapLine(unix, names, stop))
    return lines


def _words(text: str) -> tuple[str, ...]:
    """Words separated by white space, a double-quoted stretch kept whole (no other escapes:
    a backslash is a character, as in DOMAIN\\user)."""
    words, word, quoted = [], [], False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        elif ch.isspace() and not quoted:
            words.append("".join(word))
            word = []
        else:
            word.append(ch)
    words.append("".join(word))
    return tuple(w for w in words if w)


def user_in_group(user: str, group: str) -> bool:
    """Whether the Unix account `user` belongs to the Unix group `group` (as its primary
    group or a supplementary one)."""
    try:
        g = grp.getgrnam(group)
    except (KeyError, UnicodeEncodeError, ValueError):   # (ValueError: a NUL in the name)
        return False
    if user in g.gr_mem:
        return True
    try:
        return pwd.getpwnam(user).pw_gid == g.gr_gid
    except (KeyError, UnicodeEncodeError, ValueError):
        return False


def map_username(lines: list[MapLine], name: str, in_group=user_in_group, exact_case: bool = False) -> str:
    """The Unix name `name` maps to (itself where no line maps it). Names are compared
    without regard to case, as Samba compares them; with `exact_case` (a Kerberos principal's
    name, which is case-sensitive: `Alice` and `ALICE` are two principals), exactly."""
    for line in lines:
        matched = False
        for entry in line.names:
            if "*" in entry:
                matched = True
            elif entry[:1] in "@+" and len(entry) > 1:
                matched = in_group(name, entry[1:])
            elif exact_case:
                matched = entry == name
            else:
                matched = entry.lower() == name.lower()
            if matched:
                break
        if matched:
            log.debug("username map: %s -> %s", name, line.unix)
            name = line.unix
            if line.stop:
                break
    return name


def account(name: str) -> Identity | None:
    """The Unix account `name`: its uid, primary gid and every group it belongs to. Found as
    Samba's Get_Pwnam finds it: the name as given, else in lower case, else in upper case
    (an account "alice" answers for "ALICE" or "Alice")."""
    pw = None
    for spelling in dict.fromkeys((name, name.lower(), name.upper())):
        try:
            pw = pwd.getpwnam(spelling)
            break
        except (KeyError, UnicodeEncodeError, ValueError):     # (ValueError: a NUL in the name)
            continue
    if pw is None:
        return None
    try:
        groups = os.getgrouplist(pw.pw_name, pw.pw_gid)
    except OSError:
        groups = [pw.pw_gid]
    return Identity(pw.pw_name, pw.pw_uid, pw.pw_gid, tuple(sorted(set(groups))))


def map_name(username_map: str | None, name: str, exact_case: bool = False) -> str:
    """The name `name` maps to through the ``username map`` file (itself without one;
    `exact_case`: see map_username). A file that cannot be read maps nothing, with a
    warning: a name then stays the client's own, whose password is checked (never a looser
    check)."""
    if not username_map:
        return name
    try:
        with open(username_map) as f:
            lines = parse_username_map(f.read())
    except (OSError, UnicodeDecodeError) as e:
        log.warning("username map %s: %s (names not mapped)", username_map, e)
        return name
    return map_username(lines, name, exact_case=exact_case)


class Accounts:
    """The server's identities (the ``identities`` of `smb.connection.Connection`) where it
    runs as root: logon -> the account a session acts as; share -> the account its trees act as.
    A reload sets `username_map` and `guest_account` anew (every connection shares this
    object, so the next logon on any of them sees them)."""

    # share rules (valid users, read list, %u, ...) then name the Unix account a session acts
    # as, the one the username map gave, as Samba's do
    acts_as_each_user = True

    def __init__(self, username_map: str | None = None, guest_account: str = GUEST_ACCOUNT,
                 as_server=contextlib.nullcontext):
        self.username_map = username_map
        self.guest_account = guest_account
        # the look-ups (the username map file, the user and group databases) are the server's
        # work: made as the server, not as the user the event loop's thread acted as last
        self.as_server = as_server

    def check(self, shares: dict[str, Share], guests: bool) -> list[str]:
        """What in the configuration names no account (the server refuses to start)."""
        problems = []
        if guests and account(self.guest_account) is None:
            problems.append(f"guest account {self.guest_account!r} is not a Unix account")
        for share in shares.values():
            if share.force_user and account(share.force_user) is None:
                problems.append(f"share {share.name}: force user {share.force_user!r} is not a Unix account")
            group = (share.force_group or "").lstrip("+")
            if group and _group_id(group) is None:
                problems.append(f"share {share.name}: force group {group!r} is not a Unix group")
        if self.username_map and not os.path.isfile(self.username_map):
            problems.append(f"username map {self.username_map!r} is not a file")
        return problems

    def mapped_name(self, name: str) -> str:
        """The Unix name the username map gives `name` (a share name that may be a Windows
        user's name, for [homes], as Samba's find_service maps it)."""
        with self.as_server():
            return map_name(self.username_map, name)

    def logon(self, user: str, kind: str) -> Identity | None:
        """The account a new session acts as; None: the user has none (refused; the logon
        audit says so). `user`: the account the logon proved the password of (the password
        file's spelling, the username map already applied: `ntlm.Identity.account`)."""
        with self.as_server():
            return self._logon(user, kind)

    def _logon(self, user: str, kind: str) -> Identity | None:
        if kind != "user":
            found = account(self.guest_account)
            if found is None:
                log.error("guest account %r is not a Unix account: guest logon refused", self.guest_account)
            return found
        found = account(user)
        if found is None:
            # (the client's spelling is in the logon audit)
            log.warning("password file account %s (Unix name %s) has no Unix account: logon refused",
                        user, user)
        return found

    def for_share(self, share: Share, who: Identity | None) -> Identity | None:
        """The account the session's trees of `share` act as: `who`, or the share's force
        user, with force group as the primary group."""
        if who is None:
            return None
        with self.as_server():
            return self._for_share(share, who)

    @staticmethod
    def as_admin(who: Identity) -> Identity:
        """The account an `admin users` user acts as on the share: root's uid with the
        user's groups (force group applied), as Samba's smbd sets only the uid for them."""
        return Identity("root", 0, who.gid, who.groups)

    def _for_share(self, share: Share, who: Identity) -> Identity | None:
        if share.force_user:
            forced = account(share.force_user)
            if forced is None:
                log.error("share %s: force user %r is not a Unix account", share.name, share.force_user)
                return None
            who = forced
        if share.force_group:
            members_only = share.force_group.startswith("+")
            name = share.force_group.lstrip("+")
            gid = _group_id(name)
            if gid is None:
                log.error("share %s: force group %r is not a Unix group", share.name, name)
                return None
            if not members_only or gid in who.groups:
                who = Identity(who.name, who.uid, gid, tuple(sorted(set(who.groups) | {gid})))
        return who


def _group_id(name: str) -> int | None:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


class ServerAccount:
    """The identities where the server is not root: every session acts as the server's own
    user (it cannot be anyone else), whatever its SMB user."""

    acts_as_each_user = False      # share rules name the SMB user (`list_name`), not an account

    def __init__(self, username_map: str | None = None) -> None:
        # the name a logon checked the password of is the mapped one (`map_name`); a reload
        # sets this anew, as it does for `Accounts`
        self.username_map = username_map
        try:
            name = pwd.getpwuid(os.geteuid()).pw_name
        except KeyError:
            name = str(os.geteuid())
        self.me = current_identity(name)

    def logon(self, user: str, kind: str) -> Identity:
        return self.me

    def list_name(self, user: str) -> str:
        """The name share rules (valid users, read list, %u, ...) check for the SMB user
        `user`: the one its username map gives, whose password logged the session on, as
        Samba checks the mapped name. The client's own spelling would let an alias get
        around `invalid users` naming the account."""
        return map_name(self.username_map, user.rsplit("\\", 1)[-1]).lower()

    def for_share(self, share: Share, who) -> Identity:
        return self.me

    def as_admin(self, who) -> Identity:
        """(A server that is not root acts as itself for everyone, `admin users` too.)"""
        return self.me



# -- what share rules ask of the system (`smb.share_access.Accounts`): Unix groups for
# @group in user lists, home directories for [homes] and %H, primary groups for %G; looked up
# at each tree connect, so changes apply without a restart
class UnixAccounts:
    def groups(self, user: str) -> frozenset[str]:
        """The groups naming the user as a member, and the primary group of a Unix user of
        that name. A user smbring knows but the system does not is in the groups that list
        them by name."""
        names: set[str] = set()
        try:
            entry = pwd.getpwnam(user)
        except (KeyError, UnicodeEncodeError, ValueError):
            entry = None
        if entry is not None:
            try:
                gids = os.getgrouplist(entry.pw_name, entry.pw_gid)
            except OSError:
                gids = [entry.pw_gid]
            for gid in gids:
                try:
                    names.add(grp.getgrgid(gid).gr_name.lower())
                except KeyError:
                    pass
        else:
            for group in grp.getgrall():
                if any(member.lower() == user.lower() for member in group.gr_mem):
                    names.add(group.gr_name.lower())
        return frozenset(names)

    def primary_group(self, user: str) -> str | None:
        try:
            return grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name
        except KeyError:
            return None

    def home(self, user: str) -> str | None:
        """The home directory of the Unix account `user` (None: no account, or no home of
        its own); `user` may be any share name a client sent (a NUL in it: no account)."""
        try:
            home = pwd.getpwnam(user).pw_dir
        except (KeyError, UnicodeEncodeError, ValueError):
            return None
        return home if home and home != "/" and os.path.isabs(home) else None
