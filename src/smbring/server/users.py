"""The password database and ``smbring user add|del|list``.

One line per user in Samba's smbpasswd layout, ``NAME:UID:LMHASH:NTHASH:[U]:LCT-0``, holding
only the NT hash (the LM hash is zeroed): never a password. The server reads it through a
``PasswordLookup``, which sees changes without a restart. Written atomically, mode 0600.
Default location: ``$SMBRING_PASSDB``, else ``$XDG_CONFIG_HOME/smbring/passdb``
(``~/.config/smbring/passdb``).
"""
from __future__ import annotations

import getpass
import logging
import os
import re
import sys
import tempfile

from smbring.smb.ntlm_crypto import nt_hash

log = logging.getLogger("smbring.users")

NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def default_path() -> str:
    if os.environ.get("SMBRING_PASSDB"):
        return os.environ["SMBRING_PASSDB"]
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "smbring", "passdb")


class PasswordDB:
    def __init__(self, path: str | None = None):
        self.path = path or default_path()
        self.users: dict[str, bytes] = {}

    def load(self) -> "PasswordDB":
        self.users = {}
        try:
            with open(self.path) as f:
                for line in f:
                    parts = line.strip().split(":")
                    if len(parts) == 6:
                        self.users[parts[0]] = bytes.fromhex(parts[3])
        except FileNotFoundError:
            pass
        return self

    def exists(self) -> bool:
        return os.path.exists(self.path)

    def add(self, name: str, password: str) -> None:
        if not NAME_RE.match(name):
            raise ValueError("user names are 1-64 letters, digits, '.', '_' or '-'")
        self.users[name] = nt_hash(password)
        self.save()

    def remove(self, name: str) -> None:
        if name not in self.users:
            raise KeyError(name)
        del self.users[name]
        self.save()

    def nt_hash(self, name: str) -> bytes | None:
        for user, h in self.users.items():
            if user.lower() == name.lower():
                return h
        return None

    def save(self) -> None:
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".passdb-")
        try:
            with os.fdopen(fd, "w") as f:
                os.fchmod(f.fileno(), 0o600)
                for i, (name, h) in enumerate(sorted(self.users.items())):
                    f.write(f"{name}:{1000 + i}:{'0' * 32}:{h.hex().upper()}:[U]:LCT-00000000\n")
            os.replace(tmp, self.path)
        except BaseException:
            os.unlink(tmp)
            raise


class PasswordLookup:
    """lookup(user name) -> NT hash, or None for a user the file does not hold (any case).

    What the server hands the logon code: the file is read again only when its size,
    modification time or inode changed (``smbring user add`` replaces it), so users added or
    removed take effect on a running server. A file that cannot be read keeps the users of
    the last good read; one that does not exist holds none.
    """

    def __init__(self, path: str):
        self.path = path
        self._stamp: tuple | None = None
        self._hashes: dict[str, bytes] = {}

    def __call__(self, name: str) -> bytes | None:
        try:
            st = os.stat(self.path)
            stamp = (st.st_size, st.st_mtime_ns, st.st_ino)
            if stamp != self._stamp:
                users = PasswordDB(self.path).load().users
                self._hashes = {user.lower(): h for user, h in users.items()}
                self._stamp = stamp
        except FileNotFoundError:
            self._hashes, self._stamp = {}, None
        except (OSError, ValueError) as e:
            log.warning("password file %s: %s (keeping the users read before)", self.path, e)
        return self._hashes.get(name.lower())


def register(sub) -> None:
    p = sub.add_parser("user", help="manage the password database")
    p.add_argument("--passdb", help=f"password file (default {default_path()})")
    us = p.add_subparsers(dest="action", metavar="ACTION")
    us.required = True
    add = us.add_parser("add", help="add a user or change a password")
    add.add_argument("name")
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    add.set_defaults(func=_add)
    rm = us.add_parser("del", help="remove a user")
    rm.add_argument("name")
    rm.set_defaults(func=_del)
    us.add_parser("list", help="list users").set_defaults(func=_list)


def _db(args) -> PasswordDB:
    return PasswordDB(args.passdb).load()


def _add(args) -> int:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("New password: ")
        if getpass.getpass("Again: ") != password:
            print("passwords differ", file=sys.stderr)
            return 1
    if not password:
        print("empty password refused", file=sys.stderr)
        return 1
    db = _db(args)
    try:
        db.add(args.name, password)
    except ValueError as e:
        print(e, file=sys.stderr)
        return 1
    print(f"user {args.name} saved in {db.path}")
    return 0


def _del(args) -> int:
    try:
        _db(args).remove(args.name)
    except KeyError:
        print(f"no user {args.name}", file=sys.stderr)
        return 1
    return 0


def _list(args) -> int:
    for name in sorted(_db(args).users):
        print(name)
    return 0
