"""The password database, in Samba's smbpasswd format, and ``smbring user``.

One line per account, exactly as Samba's ``smbpasswd`` writes it
(``source3/passdb/pdb_smbpasswd.c``)::

    alice:1000:XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX:8846F7EAEE8FB117AD06BDD830B7586C:[U          ]:LCT-6B0DFF76:

name, Unix uid, LM hash, NT hash (32 hex digits, or 32 X when there is none), the account
flags in brackets padded to 11 letters, and the time of the last password change
(``LCT-`` and 8 hex digits). smbring writes the NT hash only: the LM field is always X
(LM logons are never accepted). Lines starting with ``#``, blank lines, lines smbring cannot
parse and every account it is not asked to change are written back byte for byte, so a file
Samba made keeps whatever smbring does not understand.

Who may log on (what ``PasswordLookup`` hands the logon code):

- a normal user account (flag ``U``) whose NT field holds a hash;
- not one flagged ``D`` (disabled) or ``L`` (locked out by Samba's bad-password count);
- not a trust account (``W`` workstation, ``S`` server, ``I`` interdomain): those log on
  to a domain controller's netlogon, never to a file share (Samba refuses them too);
- an account with no password (``NO PASSWORD`` in the hash fields, flag ``N``) cannot log
  on: smbring has no ``null passwords``; an ``N`` account that has a hash logs on with it;
- ``X`` (password never expires), ``H``, ``T``, ``M`` change nothing: smbring has no
  password expiry.

An account that may not log on is refused as Samba's check_sam_security refuses it, and never
becomes a guest (``map to guest = bad user`` maps only names the file does not hold): a
locked-out account gets STATUS_ACCOUNT_LOCKED_OUT whatever the password (Samba checks the lock
first); an account without a password STATUS_LOGON_FAILURE; any other only once its password
proved right, with its own status (STATUS_ACCOUNT_DISABLED, STATUS_NOLOGON_*_TRUST_ACCOUNT,
STATUS_LOGON_FAILURE for a non-user account), so a wrong password learns STATUS_LOGON_FAILURE
as for any account.
Names are compared without regard to case, as Samba does: a line spelled exactly as asked
comes first, else the first line of that name in any case (a hand-edited file may hold a name
twice in different cases; each spelling then reaches its own line, never another's password).

The server reads the file through a ``PasswordLookup``, which sees changes without a restart.
The file is replaced atomically (a new file renamed over it) while holding the same
``fcntl`` lock Samba's tools take, keeps its owner, and has mode 0600. Default location:
``$SMBRING_PASSDB``, else ``$XDG_CONFIG_HOME/smbring/passdb`` (``~/.config/smbring/passdb``).
"""
from __future__ import annotations

import argparse
import fcntl
import getpass
import logging
import os
import pwd
import re
import sys
import tempfile
import time
from dataclasses import dataclass

from smbring.smb import wire
from smbring.smb.ntlm_crypto import nt_hash
from smbring.smb.ntlmssp import Barred

log = logging.getLogger("smbring.users")

NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
HEX32 = re.compile(r"[0-9A-Fa-f]{32}")
NO_HASH = "X" * 32                          # what Samba writes for a hash it does not have
NO_PASSWORD = "NO PASSWORD" + "X" * 21      # ... and for an account without a password (N)
# Samba's account flags in the order pdb_encode_acct_ctrl writes them, padded to this many
FLAG_ORDER = "NDHTUMWSLXI"
FLAG_WIDTH = 11
TRUST_FLAGS = {"W": "a workstation trust account", "S": "a server trust account",
               "I": "an interdomain trust account"}
# what a logon of a trust account answers once its password proved right (sam_account_ok)
TRUST_STATUS = {"I": wire.STATUS_NOLOGON_INTERDOMAIN_TRUST_ACCOUNT,
                "S": wire.STATUS_NOLOGON_SERVER_TRUST_ACCOUNT,
                "W": wire.STATUS_NOLOGON_WORKSTATION_TRUST_ACCOUNT}


def default_path() -> str:
    if os.environ.get("SMBRING_PASSDB"):
        return os.environ["SMBRING_PASSDB"]
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "smbring", "passdb")


@dataclass
class Account:
    """One account line. `line` is the text as read: written back unchanged unless smbring
    changes the account (then it is formatted as Samba formats it)."""

    name: str
    uid: int
    lm: str                    # the LM field as written (32 characters)
    nt: str                    # the NT field as written ("" in an old file without one)
    flags: str                 # the letters between the brackets, e.g. "U" or "DU"
    last_change: int = 0       # LCT: seconds since 1970 of the last password change
    line: str | None = None

    @property
    def nt_hash(self) -> bytes | None:
        """The NT hash, or None when the field holds none (X, *, NO PASSWORD)."""
        return bytes.fromhex(self.nt) if HEX32.fullmatch(self.nt) else None

    @property
    def disabled(self) -> bool:
        return "D" in self.flags

    def refusal(self) -> str | None:
        """Why this account cannot log on, or None when it can."""
        for flag, what in TRUST_FLAGS.items():
            if flag in self.flags:
                return f"{what} (it cannot log on to a share)"
        if "D" in self.flags:
            return "disabled"
        if "L" in self.flags:
            return "locked out"
        if "U" not in self.flags:
            return "not a user account"
        if self.nt_hash is None:
            return "no password (smbring has no null passwords)"
        return None

    def barred(self) -> Barred | None:
        """How a logon of this account is refused (None: it is not), in Samba's order: the
        lock before the password; no password to check; then, after the password, disabled,
        trust accounts, and an account that is no user's."""
        why = self.refusal()
        if why is None:
            return None
        if "L" in self.flags:
            return Barred("locked out", wire.STATUS_ACCOUNT_LOCKED_OUT, before_password=True)
        if self.nt_hash is None:
            return Barred(why, before_password=True)
        if "D" in self.flags:
            return Barred(why, wire.STATUS_ACCOUNT_DISABLED)
        for flag, status in TRUST_STATUS.items():
            if flag in self.flags:
                return Barred(why, status)
        return Barred(why)

    def format(self) -> str:
        """The line as Samba's format_new_smbpasswd_entry writes it."""
        flags = "".join(f for f in FLAG_ORDER if f in self.flags)
        return (f"{self.name}:{self.uid}:{self.lm}:{self.nt}:[{flags:<{FLAG_WIDTH}}]:"
                f"LCT-{self.last_change & 0xFFFFFFFF:08X}:")

    def text(self) -> str:
        return self.line if self.line is not None else self.format()


def parse_line(line: str) -> Account | None:
    """An account line read as Samba's getsmbfilepwent reads it, or None for a comment, a
    blank line or a line Samba would skip as malformed."""
    if not line or line.startswith("#"):
        return None
    name, colon, rest = line.partition(":")
    uid, colon2, rest = rest.partition(":")
    if not colon or not colon2 or not name or not uid.isdigit() or not uid.isascii():
        return None
    if len(rest) < 33 or rest[32] != ":":
        return None                       # the LM field is 32 characters and a colon
    lm, rest = rest[:32], rest[33:]
    nt = ""
    if len(rest) >= 33 and rest[32] == ":":
        nt, rest = rest[:32], rest[33:]
    if not rest.startswith("["):
        # an old file: no flags; Samba makes names ending in $ workstation trust accounts
        return Account(name, int(uid), lm, nt, "W" if name.endswith("$") else "U", line=line)
    inside, _, rest = rest[1:].partition("]")
    flags = "".join(dict.fromkeys(f for f in inside.upper() if f in FLAG_ORDER)) or "U"
    last_change = 0
    if rest.startswith(":") and rest[1:5].upper() == "LCT-" and re.fullmatch(r"[0-9A-Fa-f]{8}", rest[5:13]):
        last_change = int(rest[5:13], 16)
    return Account(name, int(uid), lm, nt, flags, last_change, line=line)


def unix_uid(name: str) -> int:
    """The uid written for a new account: the Unix account's of that name where there is one
    (what Samba writes), else the uid smbring runs as (whose files it serves)."""
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return os.getuid()


class Names:
    """Which account a name reaches among accounts in file order: the first spelled exactly
    so, else the first spelled so in any case. Deterministic, and one line only: the password
    a logon checks and the account it then acts as are that line's."""

    def __init__(self, accounts: list[Account]):
        self.exact: dict[str, Account] = {}
        self.folded: dict[str, Account] = {}
        for a in accounts:
            self.exact.setdefault(a.name, a)
            self.folded.setdefault(a.name.casefold(), a)

    def find(self, name: str) -> Account | None:
        return self.exact.get(name) or self.folded.get(name.casefold())


def same_name(accounts: list[Account], name: str) -> Account | None:
    """The account `name` reaches among `accounts` (`Names`)."""
    return Names(accounts).find(name)


class AccountHash(bytes):
    """An NT hash, with the name of the password file's account it is the hash of
    (`account`): the spelling the file gives, which a logon then acts as; `barred` where
    the account may not log on (then the hash may be empty: there is none)."""

    account: str
    barred: Barred | None

    def __new__(cls, value: bytes, account: str, barred: Barred | None = None) -> "AccountHash":
        made = super().__new__(cls, value)
        made.account, made.barred = account, barred
        return made


class PasswordDB:
    """The file's lines: `Account`s and, as plain strings, everything else."""

    def __init__(self, path: str | None = None):
        self.path = path or default_path()
        self.lines: list[Account | str] = []
        self.skipped: list[int] = []        # line numbers of lines that are neither

    # -- reading ----------------------------------------------------------------------------
    def load(self) -> "PasswordDB":
        try:
            with open(self.path, encoding="utf-8", errors="surrogateescape", newline="") as f:
                self.parse(f.read())
        except FileNotFoundError:
            self.lines, self.skipped = [], []
        return self

    def parse(self, text: str) -> None:
        self.lines, self.skipped = [], []
        for number, line in enumerate(text.splitlines(), 1):
            account = parse_line(line)
            if account is None and line.strip() and not line.startswith("#"):
                self.skipped.append(number)
            self.lines.append(account if account is not None else line)

    @property
    def accounts(self) -> list[Account]:
        return [a for a in self.lines if isinstance(a, Account)]

    def find(self, name: str) -> Account | None:
        """The account of that name: the line spelled exactly so, else the first of that name
        in any case (a hand-edited file may repeat a name in another case)."""
        return same_name(self.accounts, name)

    @property
    def users(self) -> dict[str, bytes]:
        """Name -> NT hash of every account that may log on."""
        usable: dict[str, bytes] = {}
        seen = set()
        for a in self.accounts:
            if a.name.casefold() not in seen and a.refusal() is None:
                usable[a.name] = a.nt_hash
            seen.add(a.name.casefold())
        return usable

    def exists(self) -> bool:
        return os.path.exists(self.path)

    # -- changing ---------------------------------------------------------------------------
    def set_password(self, name: str, password: str, now: int | None = None) -> str:
        """Adds the account or changes its password; says which. A new account is a normal
        user; an existing one keeps its uid and flags (a disabled account stays disabled,
        as with Samba's smbpasswd), except that having a password now clears N, and D when
        the account was disabled for having none."""
        now = int(time.time()) if now is None else now
        account = self.find(name)
        if account is None:
            if not NAME_RE.match(name):
                raise ValueError("user names are 1-64 letters, digits, '.', '_' or '-'")
            self.lines.append(Account(name, unix_uid(name), NO_HASH, nt_hash(password).hex().upper(), "U", now))
            return f"user {name} added"
        if account.refusal() and any(f in account.flags for f in TRUST_FLAGS):
            raise ValueError(f"{account.name} is {account.refusal()}: smbring does not change it")
        had_password = account.nt_hash is not None or HEX32.fullmatch(account.lm) is not None
        flags = account.flags.replace("N", "")
        if not had_password:
            flags = flags.replace("D", "")
        account.lm, account.nt = NO_HASH, nt_hash(password).hex().upper()
        account.flags, account.last_change, account.line = flags, now, None
        still = " (the account is disabled: `smbring user enable` allows it to log on)" if account.disabled else ""
        return f"password of user {account.name} changed{still}"

    def set_disabled(self, name: str, disabled: bool) -> str:
        account = self.find(name)
        if account is None:
            raise KeyError(name)
        word = "disabled" if disabled else "enabled"
        if account.disabled == disabled:
            return f"user {account.name} was already {word}"
        flags = account.flags + "D" if disabled else account.flags.replace("D", "")
        account.flags, account.line = flags, None
        if not disabled and account.refusal():
            return f"user {account.name} enabled, but cannot log on: {account.refusal()}"
        return f"user {account.name} {word}"

    def remove(self, name: str) -> str:
        account = self.find(name)
        if account is None:
            raise KeyError(name)
        self.lines.remove(account)
        return f"user {account.name} removed"

    def save(self) -> None:
        """Writes every line (the unchanged ones as they were read) to a new file that then
        replaces the old one: a reader sees the old file or the new, never half of one."""
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".passdb-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape", newline="") as f:
                os.fchmod(f.fileno(), 0o600)
                try:          # the file keeps its owner (root editing a service's file)
                    st = os.stat(self.path)
                    if (st.st_uid, st.st_gid) != (os.getuid(), os.getgid()):
                        os.fchown(f.fileno(), st.st_uid, st.st_gid)
                except (FileNotFoundError, PermissionError):
                    pass
                f.write("".join((line.text() if isinstance(line, Account) else line) + "\n"
                                for line in self.lines))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            os.unlink(tmp)
            raise


class Locked:
    """The password file's lock while it is read, changed and replaced: Samba's tools take an
    fcntl write lock on its first byte before they change it, and so does smbring."""

    def __init__(self, path: str):
        self.path = path
        self.fd: int | None = None

    def __enter__(self) -> "Locked":
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return self           # nothing to lock yet: the first write creates it
        fcntl.lockf(self.fd, fcntl.LOCK_EX, 1, 0)
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)     # closing releases the lock


class PasswordLookup:
    """lookup(user name) -> NT hash (an `AccountHash`, naming the account as the file spells
    it, and saying when it may not log on: `Account.barred`), or None for a name the file does
    not hold. Any case reaches an account (`Names`); an account that may not log on is not
    passed over for another line of the name.

    What the server hands the logon code: the file is read again only when its size,
    modification time or inode changed (``smbring user add`` replaces it), so users added or
    removed take effect on a running server. A file that cannot be read keeps the users of
    the last good read; one that does not exist holds none.
    """

    def __init__(self, path: str):
        self.path = path
        self._stamp: tuple | None = None
        self._names = Names([])

    def __call__(self, name: str) -> AccountHash | None:
        try:
            st = os.stat(self.path)
            stamp = (st.st_size, st.st_mtime_ns, st.st_ino)
            if stamp != self._stamp:
                db = PasswordDB(self.path).load()
                if db.skipped:
                    log.warning("password file %s: lines %s are not smbpasswd entries (ignored)",
                                self.path, ", ".join(map(str, db.skipped[:10])))
                self._names, self._stamp = Names(db.accounts), stamp
        except FileNotFoundError:
            self._names, self._stamp = Names([]), None
        except (OSError, ValueError) as e:
            log.warning("password file %s: %s (keeping the users read before)", self.path, e)
        account = self._names.find(name)
        if account is None:
            return None
        return AccountHash(account.nt_hash or b"", account.name, account.barred())


# -- smbring user ---------------------------------------------------------------------------
def register(sub) -> None:
    # --passdb is accepted before and after the action (`smbring user add NAME --passdb F`):
    # SUPPRESS keeps the action's parser from overwriting a value given before it
    passdb = argparse.ArgumentParser(add_help=False)
    passdb.add_argument("--passdb", default=argparse.SUPPRESS,
                        help=f"password file, Samba's smbpasswd format (default {default_path()})")
    p = sub.add_parser("user", help="manage the password file (Samba's smbpasswd format)", parents=[passdb])
    us = p.add_subparsers(dest="action", metavar="ACTION")
    us.required = True
    add = us.add_parser("add", parents=[passdb], help="add a user or change a user's password")
    add.add_argument("name")
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    add.set_defaults(func=_add)
    for action, func, text in (("del", _del, "remove a user"), ("enable", _enable, "let a disabled user log on"),
                               ("disable", _disable, "keep a user from logging on (flag D)")):
        one = us.add_parser(action, parents=[passdb], help=text)
        one.add_argument("name")
        one.set_defaults(func=func)
    us.add_parser("list", parents=[passdb], help="list the accounts and whether each can log on"
                  ).set_defaults(func=_list)


def _path(args) -> str:
    return getattr(args, "passdb", None) or default_path()


def _change(args, change) -> int:
    """Reads the file under its lock, applies change(db) -> message, saves, says what it did."""
    path = _path(args)
    try:
        with Locked(path):
            db = PasswordDB(path).load()
            message = change(db)
            db.save()
    except KeyError:
        print(f"no user {args.name} in {path}", file=sys.stderr)
        return 1
    except (ValueError, OSError) as e:
        print(f"{path}: {e}", file=sys.stderr)
        return 1
    print(f"{message} ({path})")
    return 0


def _add(args) -> int:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("New password: ")
        if getpass.getpass("Again: ") != password:
            print("passwords differ: nothing changed", file=sys.stderr)
            return 1
    if not password:
        print("empty password refused: nothing changed", file=sys.stderr)
        return 1
    return _change(args, lambda db: db.set_password(args.name, password))


def _del(args) -> int:
    return _change(args, lambda db: db.remove(args.name))


def _enable(args) -> int:
    return _change(args, lambda db: db.set_disabled(args.name, False))


def _disable(args) -> int:
    return _change(args, lambda db: db.set_disabled(args.name, True))


def _list(args) -> int:
    db = PasswordDB(_path(args))
    try:
        db.load()
    except OSError as e:
        print(f"{db.path}: {e}", file=sys.stderr)
        return 1
    if not db.accounts:
        print(f"no users in {db.path}" + ("" if db.exists() else " (the file does not exist)"),
              file=sys.stderr)
        return 0
    seen, folded = set(), set()
    for account in db.accounts:
        why = account.refusal()
        if account.name in seen:
            why = "a repeated name (the first line counts)"
        note = ""
        if why is None and account.name.casefold() in folded:
            note = "\tlogs on only when spelled exactly so (an earlier line has the name in another case)"
        seen.add(account.name)
        folded.add(account.name.casefold())
        print(account.name + note if why is None else f"{account.name}\tcannot log on: {why}")
    return 0
