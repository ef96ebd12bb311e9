"""smb.conf's options: Samba's names and synonyms, how each value is read, and which options
are honoured (`OPTIONS`), refused unless harmless (`REFUSED`) or ignored without a word
(`QUIET`); every other option is ignored and listed once. `smbring.server.config` applies
them; docs/ADMIN.md is the table for administrators."""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from importlib import resources
from types import MappingProxyType

from smbring.server import kerberos
from smbring.server.busy_poll import budget_us
from smbring.smb import hosts, share_access
from smbring.smb.limits import OPTIONS as LIMIT_OPTIONS
from smbring.smb import unix_owner
from smbring.smb.ntlm import ntlm_auth_policy
from smbring.smb.policy import CIPHER_NAMES, PROTOCOLS, SIGNING_NAMES


class ConfigError(ValueError):
    pass


READ_PATHS = ("auto", "copy", "mmap", "splice", "zc")
WHOLE = re.compile(r"[0-9]+")
DECIMAL = re.compile(r"[0-9]+(\.[0-9]+)?|\.[0-9]+")
OCTAL = re.compile(r"0?[0-7]{1,4}")
# -- values ---------------------------------------------------------------------------------
def boolean(value: str, where: str) -> bool:
    v = value.strip().lower()
    if v in ("yes", "true", "1", "on"):
        return True
    if v in ("no", "false", "0", "off"):
        return False
    raise ConfigError(f"{where}: expected yes or no, not {value!r}")


def octal(value: str, where: str) -> int:
    if not OCTAL.fullmatch(value.strip()):
        raise ConfigError(f"{where}: expected octal mode bits (0744), not {value!r}")
    return int(value.strip(), 8)


def whole(value: str, where: str) -> int:
    if not WHOLE.fullmatch(value.strip()):
        raise ConfigError(f"{where}: expected a whole number, not {value!r}")
    return int(value.strip())


SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def size(value: str, where: str) -> int:
    """Bytes, as Samba's conv_str_size reads them: a whole number, then K, M, G, T or P."""
    v = value.strip()
    digits = v.rstrip("kKmMgGtTpP")
    if not digits.isdigit() or len(v) - len(digits) > 1:
        raise ConfigError(f"{where}: expected a size (a whole number, then K, M, G, T or P), not {value!r}")
    return int(digits) * SIZE_UNITS[v[len(digits):].lower()]


def one_of(table: dict, what: str):
    def parse(value: str, where: str):
        v = " ".join(value.lower().split())
        if v not in table:
            raise ConfigError(f"{where}: {what} is one of {', '.join(sorted(set(table)))}, not {value!r}")
        return table[v]
    return parse


SIGNING = {**dict.fromkeys(("required", "mandatory", "force", "forced", "enforced"), True),
           **dict.fromkeys(("default", "auto", "if_required", "yes", "true", "1", "on", "enabled",
                            "desired", "no", "false", "0", "off", "disabled"), False)}
ENCRYPTION = {**dict.fromkeys(("no", "false", "0", "off", "disabled"), "off"),
              **dict.fromkeys(("default", "if_required", "yes", "true", "1", "on", "enabled", "auto"),
                              "if_required"),
              "desired": "desired",
              **dict.fromkeys(("required", "mandatory", "force", "forced", "enforced"), "required")}
# `mangled names`: whether long names get 8.3 short names (listed, and reaching them). Samba's
# "illegal" gives them only to names no Windows client could use, which smbring refuses to
# serve anyway: there, as "no", none
MANGLED_NAMES = {**dict.fromkeys(("yes", "true", "1", "on"), True),
                 **dict.fromkeys(("no", "false", "0", "off", "illegal"), False)}
# `case sensitive`: Samba's "auto" is case-sensitive only for SMB1 clients with the UNIX
# extensions, which smbring does not serve: for every client it reaches, "no"
CASE_SENSITIVE = {**dict.fromkeys(("yes", "true", "1", "on"), True),
                  **dict.fromkeys(("no", "false", "0", "off", "auto", "default"), False)}
DEFAULT_CASE = {"lower": "lower", "upper": "upper"}
# `strict locking`: whether reads and writes are checked against other programs' kernel
# locks too (auto, the default, and yes: always; no: never). The server's own locks are always
# checked, whatever it says (Samba's `no` would leave them unchecked: never weaker here)
STRICT_LOCKING = {**dict.fromkeys(("auto", "yes", "true", "1", "on"), True),
                  **dict.fromkeys(("no", "false", "0", "off"), False)}
# `inherit owner`: Samba's values (`yes` is `windows and unix`), as smb.unix_owner names them
INHERIT_OWNER = {**dict.fromkeys(("no", "false", "0", "off"), unix_owner.NO), "unix only": unix_owner.UNIX_ONLY,
                 **dict.fromkeys(("windows and unix", "yes", "true", "1", "on"), unix_owner.WINDOWS_AND_UNIX)}
# `csc policy`: what clients may keep of the share's files offline (TREE_CONNECT's ShareFlags
# caching bits, MS-SMB2 2.2.10): manual 0, documents AUTO_CACHING, programs VDO_CACHING,
# disable NO_CACHING, as Samba sends them
CSC_POLICY = {"manual": 0x00, "documents": 0x10, "programs": 0x20, "disable": 0x30}
MAP_TO_GUEST = {"never": "never", "bad user": "bad user", "bad password": "bad password",
                "bad uid": "bad uid"}
PROTOCOL_VALUES = {**PROTOCOLS, "default": None}


def listen_address(value: str, where: str) -> tuple[str, int]:
    host, _, port = value.strip().rpartition(":")
    if not WHOLE.fullmatch(port) or not 0 < int(port) < 65536:
        raise ConfigError(f"{where}: expected HOST:PORT, not {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _ports(value: str, where: str) -> list[int]:
    ports = [whole(p, where) for p in share_access.split_list(value)]
    if not ports or not all(0 < p < 65536 for p in ports):
        raise ConfigError(f"{where}: expected port numbers, not {value!r}")
    return ports


def _hosts(value: str, where: str) -> tuple[str, ...]:
    try:
        return hosts.parse_list(value)
    except hosts.HostsError as e:
        raise ConfigError(f"{where}: {e}") from None


def _users(value: str, where: str) -> list[str]:
    tokens = share_access.split_list(value)
    for token in tokens:
        if token.lstrip("+@") != token.lstrip("+@&"):       # &group: NIS netgroups only
            raise ConfigError(f"{where}: {token}: NIS netgroups are not supported (use @group "
                              "or +group for Unix groups)")
    return tokens


def _algorithms(table: dict):
    def parse(value: str, where: str) -> tuple:
        names = [n.lower() for n in share_access.split_list(value)]
        unknown = [n for n in names if n not in table]
        if unknown or not names:
            raise ConfigError(f"{where}: one or more of {', '.join(table)}, not {value!r}")
        return tuple(dict.fromkeys(table[n] for n in names))
    return parse


def _text(value: str, where: str) -> str:
    return value


def _seconds(value: str, where: str) -> float:
    if not DECIMAL.fullmatch(value.strip()):
        raise ConfigError(f"{where}: expected a number of seconds, not {value!r}")
    return float(value)


def _read_path(value: str, where: str) -> str:
    v = value.strip().lower()
    if v not in READ_PATHS:
        raise ConfigError(f"{where}: one of {', '.join(READ_PATHS)}, not {value!r}")
    return v


def busy_poll_us(value: str, where: str) -> int:
    """`busy poll` (and --busy-poll): microseconds, 0 (off) up to busy_poll's bound."""
    n = whole(value, where)
    try:
        return budget_us(n)
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None


def _restrict_anonymous(value: str, where: str) -> int:
    n = whole(value, where)
    if n > 2:
        raise ConfigError(f"{where}: 0, 1 or 2, not {value!r}")
    return n


# -- the options ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Spec:
    scope: str          # "global", or "share" (a share option in [global] is every share's default)
    parse: object       # (value, where) -> the value
    templates: bool = False   # may hold session variables (%U, %S, ...)


S, G = "share", "global"
# honoured: Samba's canonical name (or smbring's own) -> how it is read
OPTIONS: dict[str, Spec] = {
    # shares
    "path": Spec(S, _text, True), "comment": Spec(S, _text, True),
    "read only": Spec(S, boolean), "guest ok": Spec(S, boolean), "guest only": Spec(S, boolean),
    "valid users": Spec(S, _users, True), "invalid users": Spec(S, _users, True),
    "read list": Spec(S, _users, True), "write list": Spec(S, _users, True),
    "admin users": Spec(S, _users, True),
    "hosts allow": Spec(S, _hosts), "hosts deny": Spec(S, _hosts),
    "server smb encrypt": Spec(S, one_of(ENCRYPTION, "smb encrypt")),
    "max connections": Spec(S, whole),
    "veto files": Spec(S, _text, True), "hide files": Spec(S, _text, True),
    "veto oplock files": Spec(S, _text, True), "dont descend": Spec(S, _text, True),
    "hide dot files": Spec(S, boolean), "hide unreadable": Spec(S, boolean),
    "force unknown acl user": Spec(S, boolean),
    "hide unwriteable files": Spec(S, boolean), "hide special files": Spec(S, boolean),
    "hide new files timeout": Spec(S, _seconds),
    "mangled names": Spec(S, one_of(MANGLED_NAMES, "mangled names")),
    "case sensitive": Spec(S, one_of(CASE_SENSITIVE, "case sensitive")),
    "sync always": Spec(S, boolean), "csc policy": Spec(S, one_of(CSC_POLICY, "csc policy")),
    # `strict sync = no` would answer FLUSH without flushing: a FLUSH and a write-through WRITE
    # always reach stable storage here, whatever it says (read, and checked, only)
    "strict sync": Spec(S, boolean),
    "preserve case": Spec(S, boolean), "short preserve case": Spec(S, boolean),
    "default case": Spec(S, one_of(DEFAULT_CASE, "default case")),
    "create mask": Spec(S, octal), "directory mask": Spec(S, octal),
    "force create mode": Spec(S, octal), "force directory mode": Spec(S, octal),
    "browseable": Spec(S, boolean), "access based share enum": Spec(S, boolean),
    "available": Spec(S, boolean), "printable": Spec(S, boolean), "copy": Spec(S, _text),
    "vfs objects": Spec(S, _text), "read path": Spec(S, _read_path),
    "strict allocate": Spec(S, boolean),
    "oplocks": Spec(S, boolean), "level2 oplocks": Spec(S, boolean), "durable handles": Spec(S, boolean),
    "posix locking": Spec(S, boolean), "strict locking": Spec(S, one_of(STRICT_LOCKING, "strict locking")),
    "volume": Spec(S, _text), "fstype": Spec(S, _text), "ea support": Spec(S, boolean),
    "nt acl support": Spec(S, boolean), "inherit permissions": Spec(S, boolean),
    "acl flag inherited canonicalization": Spec(S, boolean),
    "dos filetimes": Spec(S, boolean), "delete veto files": Spec(S, boolean),
    "follow symlinks": Spec(S, boolean),
    "inherit owner": Spec(S, one_of(INHERIT_OWNER, "inherit owner")),
    "max disk size": Spec(G, whole),
    "change notify": Spec(G, boolean), "kernel change notify": Spec(G, boolean),
    # the server
    "server signing": Spec(G, one_of(SIGNING, "server signing")),
    "server multi channel support": Spec(G, boolean),
    "smb2 leases": Spec(G, boolean), "host msdfs": Spec(G, boolean), "msdfs root": Spec(S, boolean),
    # (Samba's enum_bool_auto: auto is on where Samba is not clustered, as smbring never is)
    "smb3 directory leases": Spec(G, one_of({**dict.fromkeys(("yes", "true", "1", "on", "auto"), True),
                                             **dict.fromkeys(("no", "false", "0", "off"), False)},
                                            "smb3 directory leases")),
    "smb2 disable oplock break retry": Spec(G, boolean),
    "server min protocol": Spec(G, one_of(PROTOCOL_VALUES, "a protocol")),
    "server max protocol": Spec(G, one_of(PROTOCOL_VALUES, "a protocol")),
    "server smb3 encryption algorithms": Spec(G, _algorithms(CIPHER_NAMES)),
    "server smb3 signing algorithms": Spec(G, _algorithms(SIGNING_NAMES)),
    "ntlm auth": Spec(G, lambda v, w: _ntlm_auth(v, w)),
    "map to guest": Spec(G, one_of(MAP_TO_GUEST, "map to guest")),
    "guest account": Spec(G, _text), "restrict anonymous": Spec(G, _restrict_anonymous),
    "username map": Spec(G, _text),
    # Kerberos (server.kerberos): offered where the method names a keytab and `realm` is set
    "kerberos method": Spec(G, lambda v, w: _kerberos_method(v, w)),
    "dedicated keytab file": Spec(G, _text), "realm": Spec(G, _text),
    "min domain uid": Spec(G, lambda v, w: whole(v, w)),
    "force user": Spec(S, _text), "force group": Spec(S, _text),
    "interfaces": Spec(G, lambda v, w: share_access.split_list(v)),
    "bind interfaces only": Spec(G, boolean), "smb ports": Spec(G, _ports),
    "netbios name": Spec(G, _text),
    "security": Spec(G, one_of({"auto": "user", "user": "user", "ads": "ads", "domain": "domain"},
                               "security")),
    "server role": Spec(G, one_of({"auto": "standalone", "standalone": "standalone",
                                   "standalone server": "standalone",
                                   "member server": "member", "member": "member",
                                   "classic primary domain controller": "dc",
                                   "classic backup domain controller": "dc",
                                   "active directory domain controller": "dc", "dc": "dc",
                                   "pdc": "dc", "bdc": "dc"}, "server role")),
    "listen": Spec(G, listen_address),     # smbring's own
    "busy poll": Spec(G, busy_poll_us),      # smbring's own (server.busy_poll)
    "smb passwd file": Spec(G, _text), "passdb backend": Spec(G, lambda v, w: _passdb_backend(v, w)),
    **{name: Spec(G, _text) for name in LIMIT_OPTIONS},
}
# Samba's synonyms: name -> (canonical, inverted boolean)
SYNONYMS = {
    "writable": ("read only", True), "writeable": ("read only", True), "write ok": ("read only", True),
    "public": ("guest ok", False), "only guest": ("guest only", False),
    "browsable": ("browseable", False), "allow hosts": ("hosts allow", False),
    "deny hosts": ("hosts deny", False), "smb encrypt": ("server smb encrypt", False),
    "directory": ("path", False), "casesignames": ("case sensitive", False),
    "create mode": ("create mask", False),
    "directory mode": ("directory mask", False), "print ok": ("printable", False),
    "vfs object": ("vfs objects", False), "min protocol": ("server min protocol", False),
    "max protocol": ("server max protocol", False), "protocol": ("server max protocol", False),
    "group": ("force group", False), "exec": ("preexec", False), "root": ("root directory", False),
    "root dir": ("root directory", False), "debug level": ("log level", False),
    "passdb": ("smb passwd file", False),     # smbring's older name for the password file
}
# refused unless harmless: name -> (is the value harmless?, why it cannot be enforced)
REFUSED: dict[str, tuple] = {
    "username map script": (lambda v: not v.strip(), "maps logon names to other users; not supported"),
    "config file": (lambda v: not v.strip(), "reading another file in place of this one is not supported"),
    "root directory": (lambda v: v.strip() in ("", "/"), "chroot is not supported"),
    "kernel oplocks": (lambda v: v.strip().lower() in ("no", "false", "0", "off"),
                       "= yes is not supported (oplocks are kept by the server alone: a local "
                       "process opening a file breaks none)"),
    "preexec close": (lambda v: v.strip().lower() in ("no", "false", "0", "off"),
                      "= yes would make a script decide who connects; scripts are not run"),
    "root preexec close": (lambda v: v.strip().lower() in ("no", "false", "0", "off"),
                           "= yes would make a script decide who connects; scripts are not run"),
}
# ignored without being listed: names, logging, printing, browsing, AD and password-change
# settings that change nothing smbring does
QUIET = {
    "workgroup", "server string", "log file", "max log size", "logging", "log level", "panic action",
    "syslog", "syslog only", "debug timestamp", "debug pid", "debug uid", "debug hires timestamp",
    "timestamp logs", "load printers", "printing", "printcap name", "disable spoolss",
    "show add printer wizard", "dns proxy", "wins support", "wins server", "wins proxy",
    "os level", "local master", "preferred master", "domain master", "unix password sync",
    "passwd program", "passwd chat", "pam password change", "usershare allow guests",
    "usershare max shares", "usershare path", "usershare owner only", "template shell",
    "template homedir", "dos charset", "unix charset", "display charset", "server services",
    "lock directory", "state directory", "cache directory", "pid directory", "private dir",
    "ncalrpc dir", "max xmit", "keepalive", "socket options", "disable netbios", "mangling method",
    "fake oplocks",
    "map archive", "map hidden", "map system", "map readonly", "store dos attributes",
    "aio read size", "aio write size", "use sendfile",
    "dos filemode",
    "printer name", "print command", "lpq command", "lprm command", "min print space",
    # a directory's default POSIX ACL always decides new files' modes (the mode asked for is
    # the create mask's, with no chmod after): Samba's `inherit acls = yes`, stricter than its
    # `no`, which chmods over the ACL
    "inherit acls",
    # smbring's service options (read by smbring.server.cli, logs, control, metrics)
    "control socket", "metrics port", "shutdown timeout", "smbring workers",
}
SKIPPED_SECTIONS = {"printers"}
# [global] options a reload (SIGHUP) cannot change: the listening sockets and the service's
# own control socket, metrics endpoint and stop timeout are set up once, at start. Every other
# option applies on reload (see Server.reconfigure); a change of these is logged as taking
# effect at restart.
RESTART_ONLY = ("listen", "smb ports", "interfaces", "bind interfaces only", "control socket",
                "metrics port", "shutdown timeout", "smbring workers")


def _kerberos_method(value: str, where: str) -> str | None:
    try:
        return kerberos.method_of(value)
    except ValueError as e:
        raise ConfigError(f"{where}: kerberos method: {e}") from None


def _ntlm_auth(value: str, where: str) -> str:
    try:
        return ntlm_auth_policy(value)
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None


# Samba's `smb passwd file` default (Debian's build), for `passdb backend = smbpasswd` without
# a path and without `smb passwd file`
SAMBA_SMB_PASSWD_FILE = "/etc/samba/smbpasswd"


def _passdb_backend(value: str, where: str) -> str | None:
    """`passdb backend = smbpasswd[:PATH]`: the smbpasswd file (None: `smb passwd file`'s).
    Every other backend is refused: smbring reads no other user database."""
    kind, _, location = value.strip().partition(":")
    kind = kind.strip().lower()
    location = location.strip().strip('"')
    if kind == "smbpasswd":
        return location or None
    if kind == "tdbsam":
        tdb = location or "passdb.tdb in the private dir"
        raise ConfigError(f"{where} = {value.strip()}: smbring reads smbpasswd files only, not "
                          f"tdbsam; export the users with `pdbedit -i tdbsam:{location or 'PATH'} "
                          f"-e smbpasswd:FILE` (from {tdb}) and set passdb backend = smbpasswd:FILE")
    raise ConfigError(f"{where} = {value.strip()}: only the smbpasswd backend is supported "
                      "(passdb backend = smbpasswd:FILE)")


# -- names ------------------------------------------------------------------------------------
def _samba_parameters() -> MappingProxyType:
    """Samba's parameter names (samba_parameters.txt), by their key (no case, no whitespace):
    key -> (the name as Samba spells it, the parameter a synonym names or None)."""
    text = resources.files(__package__).joinpath("samba_parameters.txt").read_text(encoding="utf-8")
    names = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, _scope, *target = line.split("\t")
        names[_key(name)] = (name, target[0] if target else None)
    return MappingProxyType(names)


def _key(name: str) -> str:
    return "".join(name.lower().split())      # as smbring.server.smbconf.key compares names


SAMBA_PARAMETERS = _samba_parameters()
# smbring's own options, which Samba does not have
OWN = frozenset(_key(n) for n in (*OPTIONS, *QUIET, *SYNONYMS)) - SAMBA_PARAMETERS.keys()


# the parametric options (`module:option`) that have an effect here; the others are ignored
PARAMETRIC = {
    "smbd:fsctl_smbtorture": Spec(G, boolean),      # Samba's test controls (smb.breaks)
    # vfs_fruit's, for the AAPL negotiation and copyfile on shares with `vfs objects = fruit`
    "fruit:aapl": Spec(G, boolean), "fruit:copyfile": Spec(G, boolean), "fruit:model": Spec(G, _text),
    "fruit:nfs_aces": Spec(G, boolean), "fruit:ignore_zero_aces": Spec(S, boolean),
    "fruit:veto_appledouble": Spec(S, boolean), "fruit:zero_file_id": Spec(S, boolean),
    "fruit:convert_adouble": Spec(S, boolean), "fruit:wipe_intentionally_left_blank_rfork": Spec(S, boolean),
    "fruit:delete_empty_adfiles": Spec(S, boolean),
    # (keys without spaces, as parametric names are compared: `fruit:time machine`, ...)
    "fruit:timemachine": Spec(S, boolean), "fruit:timemachinemaxsize": Spec(S, size),
    # shadow_copy2's, where previous versions are found (vfs.shadow_copy)
    "shadow:snapdir": Spec(S, _text), "shadow:basedir": Spec(S, _text), "shadow:mountpoint": Spec(S, _text),
    "shadow:format": Spec(S, _text), "shadow:localtime": Spec(S, boolean), "shadow:sort": Spec(S, _text),
    # what macOS's enriched listings (READ_DIR_ATTR) work out for each entry
    "readdir_attr:aapl_rsize": Spec(S, boolean), "readdir_attr:aapl_finder_info": Spec(S, boolean),
    "readdir_attr:aapl_max_access": Spec(S, boolean),
}


def is_parametric(name: str) -> bool:
    """`module:option` (Samba's parametric options, which modules read)."""
    return ":" in name


def known(name: str) -> bool:
    """Whether name is a Samba parameter (or synonym), or one of smbring's own options."""
    return _key(name) in SAMBA_PARAMETERS or _key(name) in OWN


def suggestion(name: str) -> str | None:
    """The known name closest to a misspelt one (difflib), or None when none is close."""
    spelled = " ".join(name.lower().split())
    candidates = {" ".join(spelling.lower().split()) for spelling, _ in SAMBA_PARAMETERS.values()}
    candidates |= {n for n in (*OPTIONS, *QUIET, *SYNONYMS)}
    close = difflib.get_close_matches(spelled, sorted(candidates), n=1, cutoff=0.75)
    return close[0] if close else None
