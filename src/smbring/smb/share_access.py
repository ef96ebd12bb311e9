"""Who may use a share and what they see of it: smb.conf's per-share rules, applied at TREE_CONNECT
and on every name a client opens or lists.

- Substitutions (``%U``, ``%S``, ...): options whose values depend on the session are kept as
  templates until a tree connect, then substituted (`resolve`). A value that comes from the
  client (a user name, an address) is reduced to safe characters first, so that a substituted
  path can never leave the directory the administrator meant (no ``/``, no ``..``).
- User lists (``valid users``, ``invalid users``, ``read list``, ``write list``): names, and
  Unix groups as ``@group`` or ``+group``; group membership comes from an `Accounts` the
  server hands in (the core does no lookups of its own).
- Name rules (``veto files``, ``hide files``, ``hide dot files``, ``hide unreadable``, ...):
  `NameRules`, built once per tree connect.

Pure: no I/O beyond the callables given (`Accounts`, and a listing's access check).
"""
from __future__ import annotations

import dataclasses
import os
import re
import stat
import time
from dataclasses import dataclass
from typing import Protocol

from smbring.vfs.short_names import is_short_name

# %X, or %$(NAME) for an environment variable (substituted when the file is read)
_VARIABLE = re.compile(r"%(\$\([A-Za-z0-9_]+\)|.)", re.DOTALL)
# what a value from the client may keep when it is substituted (Samba keeps a similar set)
_UNSAFE = re.compile(r"[^A-Za-z0-9._$-]")
# variables whose value is known only once a client has connected and logged on
SESSION_VARIABLES = frozenset("UuGgHSPmIiMRaDT")
# fields of a Share that may hold such templates
TEMPLATE_FIELDS = ("path", "comment", "valid_users", "invalid_users", "read_list", "write_list", "admin_users",
                   "veto_files", "hide_files", "veto_oplock_files", "dont_descend")
# what a tree connect refuses when substitution leaves a path it cannot use
BAD_VALUE = object()
# what a listing asks the file system's may_access (access(2)'s R_OK and W_OK)
MAY_READ, MAY_WRITE = 4, 2


class Accounts(Protocol):
    """The system's accounts, as the server sees them (pwd and grp): given to the core so that
    it never looks anything up itself."""

    def groups(self, user: str) -> frozenset[str]:
        """The Unix groups the user is a member of (lower-case names), primary group too."""
        ...

    def primary_group(self, user: str) -> str | None:
        ...

    def home(self, user: str) -> str | None:
        """The user's home directory, None for a user the system does not know."""
        ...


class NoAccounts:
    """No Unix accounts at all (a core built alone, in tests)."""

    def groups(self, user: str) -> frozenset[str]:
        return frozenset()

    def primary_group(self, user: str) -> str | None:
        return None

    def home(self, user: str) -> str | None:
        return None


def has_session_variables(text: str) -> bool:
    return any(m.group(1) in SESSION_VARIABLES for m in _VARIABLE.finditer(text))


def substitute(text: str, values: dict[str, str]) -> str:
    """`text` with each %X that `values` knows replaced; others are left as written (as Samba
    leaves unknown ones). %% is not special in Samba either."""
    return _VARIABLE.sub(lambda m: values.get(m.group(1), m.group(0)), text)


def safe(value: str) -> str:
    """A value from the client made fit for a path or a list: only letters, digits and
    ``. _ $ -``, never only dots (so never ``.`` or ``..``)."""
    cleaned = _UNSAFE.sub("_", value)
    return "_" if not cleaned.strip(".") else cleaned


def session_values(*, user: str, asked_as: str, domain: str, share: str, client_address: str,
                   server_name: str, dialect: str, accounts: Accounts) -> dict[str, str]:
    """The per-session variables (Samba's talloc_sub_advanced), values from the client made
    safe. `user` is who the session acts as (the guest account for guests), `asked_as` the
    name the client gave."""
    group = accounts.primary_group(user) or ""
    home = accounts.home(user) or ""
    address = client_address
    return {"U": safe(asked_as.lower() or user), "u": safe(user), "G": safe(group) if group else "",
            "g": safe(group) if group else "", "H": home, "S": safe(share),
            "m": safe(address), "I": safe(address), "M": safe(address), "i": "",
            "R": dialect, "a": "UNKNOWN", "D": safe(domain) if domain else "",
            "T": time.strftime("%Y-%m-%d %H:%M:%S"), "L": server_name, "P": ""}


def resolve(share, values: dict[str, str]):
    """The share as this session sees it: every template field substituted (%P, the share's
    directory, once its path is). Its path must stay absolute and free of ``..`` components,
    else BAD_VALUE (the tree connect is refused)."""
    path = substitute(share.path, values) if "%" in share.path else share.path
    if not path.startswith("/") or ".." in path.split("/") or "\0" in path:
        return BAD_VALUE
    values = dict(values, P=path)
    changes = {"path": path} if path != share.path else {}
    for name in TEMPLATE_FIELDS[1:]:
        value = getattr(share, name)
        if isinstance(value, str):
            if "%" in value:
                changes[name] = substitute(value, values)
        elif any("%" in v for v in value):
            changes[name] = [substitute(v, values) for v in value]
    return dataclasses.replace(share, **changes) if changes else share


# -- user lists ----------------------------------------------------------------------------
def split_list(text: str) -> list[str]:
    """A Samba list: separated by commas, spaces or tabs; double quotes keep spaces."""
    out, word, quoted, any_char = [], [], False, False
    for ch in text:
        if ch == '"':
            quoted, any_char = not quoted, True
        elif not quoted and (ch in ", \t\n"):
            if word or any_char:
                out.append("".join(word))
            word, any_char = [], False
        else:
            word.append(ch)
    if word or any_char:
        out.append("".join(word))
    return [w for w in out if w]


def bare(name: str) -> str:
    """A user name without its domain (DOMAIN\\user, user@realm), lower-case."""
    return name.rsplit("\\", 1)[-1].lower()


def group_of(token: str) -> str | None:
    """The Unix group a list token names (@group, +group, +&group, &+group), else None."""
    stripped = token.lstrip("@+&")
    return stripped.lower() if stripped != token else None


def in_list(tokens, user: str, accounts: Accounts) -> bool:
    """Whether `user` is named by the list, directly or through a Unix group."""
    who = bare(user)
    groups = None
    for token in tokens:
        group = group_of(token)
        if group is None:
            if bare(token) == who:
                return True
            continue
        if groups is None:
            groups = accounts.groups(who)
        if group in groups:
            return True
    return False


# -- names: veto files, hide files and the other hide options --------------------------------
def split_names(text: str) -> list[str]:
    """`veto files` / `hide files`: entries between slashes (so they may hold spaces)."""
    return [entry for entry in text.split("/") if entry]


def descend_paths(text: str) -> list[str]:
    """`dont descend`: directories of the share, as Samba's list (separated by commas or
    spaces, double quotes keeping spaces), each a path from the share's root ("proc",
    "/proc", "./proc" and "proc/" are one), "." the root itself."""
    paths = []
    for token in split_list(text):
        parts = [p for p in token.replace("\\", "/").split("/") if p and p != "."]
        paths.append("/".join(parts) if parts else ".")
    return paths


def _pattern(entry: str) -> re.Pattern:
    """A DOS-style wildcard (* and ?) over one name, case-insensitive."""
    parts = ["." if ch == "?" else ".*" if ch == "*" else re.escape(ch) for ch in entry.casefold()]
    return re.compile("".join(parts), re.DOTALL)


def _matches(patterns: tuple, name: str) -> bool:
    """Whether the name matches one of `_pattern`'s patterns, in any case (no patterns, no
    casefold: asked for every CREATE and QUERY_INFO)."""
    if not patterns:
        return False
    folded = name.casefold()
    return any(p.fullmatch(folded) for p in patterns)


@dataclass(frozen=True)
class NameRules:
    veto: tuple = ()
    hide: tuple = ()
    hide_dot_files: bool = False
    hide_unreadable: bool = False
    hide_unwriteable: bool = False
    hide_special_files: bool = False
    hide_new_files_timeout: float = 0.0
    short_names: bool = True        # `mangled names`: long names have 8.3 short names
    # `case sensitive`: a name reaches only the file spelled so (no look through its directory
    # for the same name in another case: a miss in a directory of a million files costs one
    # stat, not a read of the directory), and listings match patterns so
    case_sensitive: bool = False
    preserve_case: bool = True      # `preserve case`: new names keep the case they were given in
    short_preserve_case: bool = True    # `short preserve case`: ... 8.3 names too
    default_case: str = "lower"     # `default case`: the case of new names not preserved
    # `veto oplock files`: files (by their name) granted no oplock and no lease, as on a share
    # with `oplocks = no` (Samba's advice for databases several clients write: *.mdb, *.ldb)
    veto_oplocks: tuple = ()
    # `dont descend`: directories listed as empty (their paths from the share's root, casefolded)
    dont_descend: frozenset = frozenset()

    @classmethod
    def of(cls, share) -> "NameRules":
        return cls(veto=tuple(_pattern(e) for e in share.veto_files),
                   veto_oplocks=tuple(_pattern(e) for e in share.veto_oplock_files),
                   hide=tuple(_pattern(e) for e in share.hide_files),
                   hide_dot_files=share.hide_dot_files, hide_unreadable=share.hide_unreadable,
                   hide_unwriteable=share.hide_unwriteable,
                   hide_special_files=share.hide_special_files,
                   hide_new_files_timeout=share.hide_new_files_timeout,
                   short_names=share.mangled_names, case_sensitive=share.case_sensitive,
                   preserve_case=share.preserve_case, short_preserve_case=share.short_preserve_case,
                   default_case=share.default_case,
                   dont_descend=frozenset(p.casefold() for p in share.dont_descend))

    @property
    def folds_paths(self) -> bool:
        """Whether every name a client sends is put in the default case before it is looked up
        (Samba's normalize_filename_case): case-sensitive names that no new file keeps the
        case of, so that a file made as "Report.TXT" (stored "report.txt") is reached as
        "REPORT.txt" too, with no directory read. Samba's recipe for very large
        directories."""
        return self.case_sensitive and not self.preserve_case and not self.short_preserve_case

    def in_default_case(self, name: str) -> str:
        return name.lower() if self.default_case == "lower" else name.upper()

    def new_name(self, name: str) -> str:
        """The name a new file or directory is made with when a client asks for `name`: in
        the default case unless its case is preserved (`preserve case`, or for an 8.3 name
        `short preserve case`), as Samba's filename_convert_normalize_new."""
        if self.preserve_case and (self.short_preserve_case or not is_short_name(name)):
            return name
        return self.in_default_case(name)

    def vetoed(self, name: str) -> bool:
        """Neither listed nor reachable (`veto files`), in any case."""
        return _matches(self.veto, name)

    def oplocks_vetoed(self, name: str) -> bool:
        """Whether a file of this name is granted no oplock or lease (`veto oplock files`,
        matched against the name as Samba's is_in_path, in any case: on a case sensitive
        share too, where Samba would match the case written, so more names are vetoed, never
        fewer)."""
        return _matches(self.veto_oplocks, name)

    def shows_empty(self, parts) -> bool:
        """Whether the directory at `parts` (from the share's root) is listed with nothing
        in it but "." and ".." (`dont descend`, as Samba: its entries stay reachable by name;
        matched in any case)."""
        return bool(self.dont_descend) and ("/".join(parts) or ".").casefold() in self.dont_descend

    def vetoed_path(self, parts) -> int | None:
        """The index of the first vetoed component of a path, if any."""
        for i, name in enumerate(parts):
            if self.vetoed(name):
                return i
        return None

    def hidden(self, name: str) -> bool:
        """Listed and reachable, with the DOS hidden attribute (`hide files`, `hide dot
        files`)."""
        if name[:1] == ".":
            if name == "." or name == "..":
                return False
            if self.hide_dot_files:
                return True
        return _matches(self.hide, name)

    @property
    def unlists(self) -> bool:
        """Whether any rule may leave an entry out of listings for what it is (`unlisted`
        can say yes): what a change notification must then judge too."""
        return bool(self.hide_unreadable or self.hide_unwriteable or self.hide_special_files
                    or self.hide_new_files_timeout)

    def unlisted(self, st: os.stat_result, may) -> bool:
        """Left out of listings for what the file is (`hide unreadable`, `hide unwriteable
        files`, `hide special files`, `hide new files timeout`); it stays reachable by name.
        `may(mode)` says whether the session's account may read (MAY_READ) or write
        (MAY_WRITE) the entry, as the kernel judges it for that account: the tree's file
        system, acting as it (root is never refused: smbd never hides from root either). It
        is asked once per entry, only where one of the first two options is on. A symlink
        leading out of the share (which `st` shows as a link) may not be read or written."""
        kind = stat.S_IFMT(st.st_mode)
        if self.hide_special_files and kind not in (stat.S_IFREG, stat.S_IFDIR):
            return True
        if self.hide_new_files_timeout and time.time() - st.st_mtime < self.hide_new_files_timeout:
            return True
        # unwriteable directories are listed (as Samba lists them)
        wanted = (MAY_READ if self.hide_unreadable else 0) | \
            (MAY_WRITE if self.hide_unwriteable and kind != stat.S_IFDIR else 0)
        if not wanted:
            return False
        return kind == stat.S_IFLNK or not may(wanted)
