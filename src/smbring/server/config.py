"""What smb.conf's options mean here: each is honoured, refused (the server does not start,
with one line naming the option and why), or ignored (listed once when the server starts).
docs/ADMIN.md has the table; `OPTIONS` and `REFUSED` are its source.

The syntax is Samba's (`smbring.server.smbconf`); names are compared as Samba compares them
(no case, no whitespace) and Samba's synonyms are understood (`writable` is `read only`
inverted, `browsable` is `browseable`, ...). Share options in [global] are the default of
every share. Values that depend on the session (%U, %S, ...) are kept as templates in the
fields that take them (see smb.share_access) and substituted at tree connect; load-time ones
(%L, %h, %v, %$(VAR)) are substituted now.
"""
from __future__ import annotations

import logging
import os
import re
import socket
import time
from dataclasses import dataclass, field

from smbring.server import interfaces, smbconf
from smbring.server.kerberos import MIN_DOMAIN_UID, KerberosSettings
from smbring.server.kerberos import settings as kerberos_settings
from smbring.server.smbconf_options import (
    DECIMAL,
    OPTIONS,
    PARAMETRIC,
    QUIET,
    REFUSED,
    RESTART_ONLY,
    SAMBA_PARAMETERS,
    SAMBA_SMB_PASSWD_FILE,
    SKIPPED_SECTIONS,
    SYNONYMS,
    WHOLE,
    ConfigError,
    G,
    S,
    is_parametric,
    known,
    listen_address,
    suggestion,
)
from smbring.smb import share_access
from smbring.smb.limits import MAX_IO, MAX_IO_SMB202
from smbring.smb.limits import OPTIONS as LIMIT_OPTIONS
from smbring.smb.limits import Limits
from smbring.smb.policy import PROTOCOLS, Policy
from smbring.smb.rpc.services import ServerInfo
from smbring.smb.state import Share
from smbring.vfs.modules import MODULES
from smbring.vfs.shadow_copy import DEFAULT_FORMAT as DEFAULT_SNAPSHOT_FORMAT
from smbring.vfs.shadow_copy import ShadowCopyOptions

__all__ = ["Config", "ConfigError", "load", "override", "restart_only_changes", "testparm_text"]

log = logging.getLogger("smbring.config")

DEFAULT_LISTEN = ("127.0.0.1", 4445)
# 0 means no bound for these, as for Samba's `max smbd processes`
ZERO_IS_UNLIMITED = {"max_connections", "max_connections_per_address", "max_frame_memory"}


@dataclass
class Config:
    shares: dict[str, Share] = field(default_factory=dict)
    signing_required: bool = False
    listen: list = field(default_factory=lambda: [DEFAULT_LISTEN])   # (host, port) to bind
    listen_set: bool = False           # the file chose the addresses or ports
    passdb: str | None = None
    read_path: str = "auto"
    busy_poll: int = 0          # microseconds (server.busy_poll); 0: off
    limits: Limits = field(default_factory=Limits)
    ntlm_auth: str = "ntlmv2-only"
    policy: Policy = field(default_factory=lambda: Policy(map_to_guest="never"))
    hosts_allow: tuple = ()            # [global]: checked when a connection is accepted
    hosts_deny: tuple = ()
    notices: list[str] = field(default_factory=list)   # what is skipped or ignored, once each
    sections: list = field(default_factory=list)       # (name, [(option, value)]) as set
    server_info: ServerInfo | None = None   # what share listings say of the server
    username_map: str | None = None     # Samba's username map file (SMB name -> Unix account)
    guest_account: str = "nobody"       # the Unix account guests act as (as root)
    # Kerberos logons (server.kerberos): None, Kerberos not offered (`kerberos method`'s
    # default, secrets only)
    kerberos: KerberosSettings | None = None

    @property
    def warnings(self) -> list[str]:
        return self.notices

    @property
    def options(self) -> dict[str, str]:
        """[global] as set (Samba's names, values as written): the service's own options
        (log file, control socket, metrics port, ...) are read from here."""
        return next((dict(opts) for name, opts in self.sections if name.lower() == "global"), {})


def default_netbios_name() -> str:
    """The host's name, as Samba's `netbios name` defaults to it: its first label, in upper
    case, at most 15 characters."""
    return (socket.gethostname().split(".")[0].upper() or "SMBRING")[:15]


def server_info(options: dict[str, str]) -> ServerInfo:
    """What share listings say of the server: [global]'s netbios name, server string,
    workgroup and restrict anonymous."""
    default = ServerInfo()
    name = options.get("netbios name", "").strip().upper()
    if len(name) > 15:
        raise ConfigError(f"[global] netbios name: at most 15 characters, not {name!r}")
    restrict = options.get("restrict anonymous", "0").strip()
    return ServerInfo(name=name or default_netbios_name(),
                      comment=options.get("server string", default.comment).strip(),
                      workgroup=options.get("workgroup", default.workgroup).strip().upper() or default.workgroup,
                      restrict_anonymous=int(restrict) if restrict in ("0", "1", "2") else 0)


# -- reading --------------------------------------------------------------------------------
def canonical(name: str) -> tuple[str, bool]:
    """Samba's name for an option as written, and whether its boolean is inverted."""
    k = smbconf.key(name)
    for table in (OPTIONS, REFUSED, QUIET):
        for option in table:
            if smbconf.key(option) == k:
                return option, False
    for synonym, (target, inverted) in SYNONYMS.items():
        if smbconf.key(synonym) == k:
            return target, inverted
    spelling, target = SAMBA_PARAMETERS.get(k, (None, None))
    if spelling is not None:          # a Samba parameter smbring does not implement
        return (target or spelling).lower(), False
    return " ".join(name.lower().split()), False


def load_time_values(netbios_name: str) -> dict[str, str]:
    host = socket.gethostname()
    return {"L": netbios_name, "N": netbios_name, "h": host, "v": "smbring",
            "d": str(os.getpid())}


def expand(value: str, values: dict[str, str], where: str, templates: bool) -> str:
    """Load-time substitutions; session variables stay where the option takes templates and
    are refused elsewhere."""
    value = re.sub(r"%\$\(([A-Za-z0-9_]+)\)", lambda m: os.environ.get(m.group(1), ""), value)
    value = share_access.substitute(value, values)
    if not templates and share_access.has_session_variables(value):
        raise ConfigError(f"{where}: session variables (%U, %m, ...) are substituted only in "
                          "path, comment, the user lists and veto/hide files")
    return value


def _apply(out: dict, shown: dict, opt: smbconf.Option, scope: str, section: str, values,
           ignored: set, sections: dict, parametric: set) -> None:
    """One option of a section onto its settings: canonical name -> (value, where, text)
    (the last setting wins); `copy` takes what an earlier section has set so far. `shown`
    gets every option set, ignored ones too (for testparm). A name neither Samba nor smbring
    knows stops the server (a misspelt security option must not pass for an ignored one);
    parametric options (`module:option`) are ignored."""
    if is_parametric(opt.name):
        shown[" ".join(opt.name.split())] = opt.value
        name = "".join(opt.name.lower().split())
        spec = PARAMETRIC.get(name)
        if spec is None or (spec.scope == G and scope == S):
            parametric.add(" ".join(opt.name.lower().split()))
        else:
            out[name] = (spec.parse(opt.value, f"{opt.where}: [{section}] {opt.name}"),
                         opt.where, opt.value)
        return
    if not known(opt.name):
        close = suggestion(opt.name)
        raise ConfigError(f"{opt.where}: unknown parameter '{opt.name}'"
                          + (f" (did you mean '{close}'?)" if close else ""))
    name, inverted = canonical(opt.name)
    where = f"{opt.where}: [{section}] {name}"
    if name == "copy":
        source = sections.get(opt.value.lower())
        if source is None or source is out:
            raise ConfigError(f"{where} = {opt.value}: no such section before this one")
        out.update(source)
        return
    shown[name] = opt.value if not inverted else _invert_text(opt.value)
    if name in REFUSED:
        harmless, why = REFUSED[name]
        if not harmless(opt.value):
            raise ConfigError(f"{where} = {opt.value}: {why}")
        return
    spec = OPTIONS.get(name)
    if spec is None:
        if name not in QUIET:
            ignored.add(name)
        return
    if spec.scope == G and scope == S:
        ignored.add(f"{name} (a [global] option, in [{section}])")
        return
    value = spec.parse(expand(opt.value, values, where, spec.templates), where)
    if inverted:
        value = not value
    out[name] = (value, where, opt.value if not inverted else ("no" if value else "yes"))


def _invert_text(value: str) -> str:
    v = value.strip().lower()
    return "no" if v in ("yes", "true", "1", "on") else "yes" if v in ("no", "false", "0", "off") else value


def load(path: str) -> Config:
    """The configuration a file describes; ConfigError (one line: where, which option, why)
    for anything that would make the server less strict than the file says."""
    # the netbios name is needed for %L before the rest is read
    try:
        doc = smbconf.parse(path, expand=lambda v: _include_path(v))
    except smbconf.SmbConfError as e:
        raise ConfigError(str(e)) from None
    cfg = Config()
    ignored: set[str] = set()
    parametric: set[str] = set()
    global_section = doc.sections["global"]
    netbios = next((o.value for o in global_section.options
                    if canonical(o.name)[0] == "netbios name"), socket.gethostname().split(".")[0])
    values = load_time_values(netbios.upper())
    values["L"] = values["N"] = netbios.upper()
    # the options in the files' order, as Samba applies them: a share starts from the share
    # options [global] has set by the time the share's section first appears
    settings: dict[str, dict] = {"global": {}}
    shown: dict[str, dict] = {"global": {}}
    for key, opt in doc.events:
        if key not in settings:
            settings[key] = {k: v for k, v in settings["global"].items()
                             if (OPTIONS.get(k) or PARAMETRIC[k]).scope == S}
            shown[key] = {}
        if opt is not None:
            scope = G if key == "global" else S
            _apply(settings[key], shown[key], opt, scope, doc.sections[key].name, values, ignored,
                   settings, parametric)
    _apply_global(cfg, settings["global"], netbios.upper())
    for key, section in doc.sections.items():
        cfg.sections.append((section.name, list(shown[key].items())))
        if key == "global":
            continue
        share = _share(section.name, settings[key], cfg)
        if share is not None:
            cfg.shares[section.name] = share
    _check_guests(cfg)
    _check_homes(cfg)
    cfg.server_info = server_info(cfg.options)
    if ignored:
        cfg.notices.append("options with no effect here (ignored): " + ", ".join(sorted(ignored)))
    if parametric:
        cfg.notices.append("parametric options (module:option) with no effect here (ignored): "
                           + ", ".join(sorted(parametric)))
    if not cfg.shares:
        raise ConfigError(f"{path}: no share to serve")
    for notice in cfg.notices:
        log.warning("%s: %s", path, notice)
    return cfg


def _include_path(value: str) -> str:
    if share_access.has_session_variables(value):
        raise ValueError("per-connection includes (%m, %U, %I, ...) are not supported")
    return share_access.substitute(value, load_time_values(socket.gethostname().upper()))


def _get(settings: dict, name: str, default=None):
    return settings[name][0] if name in settings else default


def _shadow_copy_options(s: dict, name: str) -> ShadowCopyOptions:
    """A shadow_copy2 share's shadow:* options (vfs.shadow_copy); ConfigError for a sort
    that is neither asc nor desc, or a format no date reads back from."""
    sort = _get(s, "shadow:sort", "desc").lower()
    if sort not in ("asc", "desc"):
        raise ConfigError(f"{s['shadow:sort'][1]}: shadow:sort is asc or desc, not {sort!r}")
    options = ShadowCopyOptions(snapdir=_get(s, "shadow:snapdir", ".snapshots"),
                                basedir=_get(s, "shadow:basedir", ""), mountpoint=_get(s, "shadow:mountpoint", ""),
                                format=_get(s, "shadow:format", DEFAULT_SNAPSHOT_FORMAT),
                                localtime=_get(s, "shadow:localtime", False), descending=sort == "desc")
    sample = time.gmtime(1_700_000_000)
    try:
        readable = time.strptime(time.strftime(options.format, sample), options.format)[:3] == sample[:3]
    except ValueError:
        readable = False
    if not readable:
        raise ConfigError(f"{s['shadow:format'][1]}: shadow:format {options.format!r} does not name a "
                          "snapshot's date")
    return options


def _apply_global(cfg: Config, g: dict, netbios: str) -> None:
    where = lambda name: g[name][1]      # noqa: E731
    if _get(g, "security", "user") != "user":
        raise ConfigError(f"{where('security')}: only user security (smbring's password file) "
                          "is supported")
    if _get(g, "server role", "standalone") != "standalone":
        raise ConfigError(f"{where('server role')}: only a standalone server is supported")
    cfg.signing_required = _get(g, "server signing", False)
    encryption = _get(g, "server smb encrypt", "if_required")
    low = _get(g, "server min protocol") or PROTOCOLS["smb2_02"]
    high = _get(g, "server max protocol") or PROTOCOLS["smb3_11"]
    if low > high:
        raise ConfigError(f"{where('server min protocol')}: above server max protocol")
    map_to_guest = _get(g, "map to guest", "never")
    if map_to_guest in ("bad password", "bad uid"):
        raise ConfigError(f"{where('map to guest')} = {map_to_guest}: not supported (a known "
                          "user's wrong password is always refused); use Never or Bad User")
    policy = Policy(min_dialect=low, max_dialect=high, encryption=encryption,
                    map_to_guest=map_to_guest,
                    guest_account=_get(g, "guest account", "nobody").strip() or "nobody",
                    restrict_anonymous=_get(g, "restrict anonymous", 0), server_name=netbios,
                    multi_channel=_get(g, "server multi channel support", True),
                    host_msdfs=_get(g, "host msdfs", True),
                    change_notify=_get(g, "change notify", True), max_disk_size=_get(g, "max disk size", 0),
                    kernel_change_notify=_get(g, "kernel change notify", True),
                    smb2_leases=_get(g, "smb2 leases", True),
                    directory_leases=_get(g, "smb3 directory leases", True) and _get(g, "smb2 leases", True),
                    oplock_break_retry=not _get(g, "smb2 disable oplock break retry", False),
                    smbtorture_fsctl=_get(g, "smbd:fsctl_smbtorture", False),
                    fruit_aapl=_get(g, "fruit:aapl", True), fruit_copyfile=_get(g, "fruit:copyfile", False),
                    fruit_model=_get(g, "fruit:model", "MacSamba"), fruit_nfs_aces=_get(g, "fruit:nfs_aces", True))
    if "server smb3 encryption algorithms" in g:
        policy.ciphers = g["server smb3 encryption algorithms"][0]
    if "server smb3 signing algorithms" in g:
        policy.signing_algorithms = g["server smb3 signing algorithms"][0]
    cfg.policy = policy
    cfg.username_map = _get(g, "username map", "").strip() or None
    cfg.guest_account = policy.guest_account
    cfg.ntlm_auth = _get(g, "ntlm auth", "ntlmv2-only")
    try:
        cfg.kerberos = kerberos_settings(_get(g, "kerberos method"), _get(g, "dedicated keytab file", ""),
                                         _get(g, "realm", ""), _get(g, "min domain uid", MIN_DOMAIN_UID))
    except ValueError as e:
        raise ConfigError(f"{where('kerberos method')}: {e}") from None
    cfg.passdb = _passdb(g)
    cfg.read_path = _get(g, "read path", "auto")
    cfg.busy_poll = _get(g, "busy poll", 0)
    cfg.limits = _limits(g)
    cfg.hosts_allow, cfg.hosts_deny = _get(g, "hosts allow", ()), _get(g, "hosts deny", ())
    _addresses(cfg, g)


def _passdb(g: dict) -> str | None:
    """The password file (an smbpasswd file): `passdb backend = smbpasswd:PATH`, else
    `smb passwd file` (`passdb`), else with `passdb backend = smbpasswd` Samba's default
    smbpasswd file; None: smbring's default. (Other backends are refused as they are read.)"""
    backend = "passdb backend" in g
    path = _get(g, "passdb backend") or _get(g, "smb passwd file", "").strip()
    if not path and backend:
        path = SAMBA_SMB_PASSWD_FILE
    return path or None


def _addresses(cfg: Config, g: dict) -> None:
    """Where to listen: `listen` (smbring's HOST:PORT); else `smb ports` on the addresses of
    `interfaces` with `bind interfaces only = yes`, or on 127.0.0.1."""
    if "listen" in g:
        cfg.listen, cfg.listen_set = [g["listen"][0]], True
        return
    ports = [DEFAULT_LISTEN[1]]
    if "smb ports" in g:
        ports = [p for p in g["smb ports"][0] if p != 139]
        if len(ports) < len(g["smb ports"][0]):
            cfg.notices.append("smb ports: 139 (NetBIOS session service) is not served")
        if not ports:
            raise ConfigError(f"{g['smb ports'][1]}: no port left to serve (139 is not served)")
        cfg.listen_set = True
    addresses = [DEFAULT_LISTEN[0]]
    if _get(g, "bind interfaces only", False):
        if "interfaces" not in g:
            raise ConfigError(f"{g['bind interfaces only'][1]}: needs `interfaces`")
        try:
            addresses = interfaces.addresses(g["interfaces"][0])
        except interfaces.InterfaceError as e:
            raise ConfigError(f"{g['interfaces'][1]}: {e}") from None
        cfg.listen_set = True
    elif "interfaces" in g:
        cfg.notices.append("interfaces: used only with bind interfaces only = yes (without "
                           "it, smbring listens on 127.0.0.1 or `listen`)")
    cfg.listen = [(a, p) for a in addresses for p in ports]


def _limits(g: dict) -> Limits:
    """The [global] bounds. Counts are whole numbers of at least 1, except that 0 connections
    means no bound (as for Samba's `max smbd processes`); the timeouts, in seconds (handshake
    timeout) or minutes (deadtime), may have decimals, and 0 means never (as for Samba's
    deadtime)."""
    limits = Limits()
    for option, name in LIMIT_OPTIONS.items():
        if option not in g:
            continue
        text, where = g[option][0].strip(), g[option][1]
        timeout = isinstance(getattr(limits, name), float)
        if timeout and not DECIMAL.fullmatch(text):
            unit = "minutes" if name == "deadtime" else "seconds"
            raise ConfigError(f"{where}: expected a number of {unit}, not {g[option][2]!r}")
        if not timeout and not WHOLE.fullmatch(text):
            raise ConfigError(f"{where}: expected a whole number, not {g[option][2]!r}")
        value = float(text) if timeout else int(text)
        if value == 0 and not timeout and name not in ZERO_IS_UNLIMITED:
            raise ConfigError(f"{where}: must be at least 1")
        if name in ("max_read", "max_write", "max_trans") and not MAX_IO_SMB202 <= value <= MAX_IO:
            raise ConfigError(f"{where}: {option} is between {MAX_IO_SMB202} (64 KiB) and {MAX_IO} "
                              f"(8 MiB), not {value}")
        setattr(limits, name, value)
    return limits


# Samba's VFS modules that keep in xattrs what smbring keeps itself (NT ACLs, streams), which
# `smbring import-samba` takes over
SAMBA_METADATA_MODULES = ("acl_xattr", "streams_xattr")


def _share(name: str, s: dict, cfg: Config) -> Share | None:
    """The share a section describes, None (with a notice) for one that is not served."""
    homes = name.lower() == "homes"
    if name.lower() in SKIPPED_SECTIONS or _get(s, "printable", False):
        cfg.notices.append(f"[{name}]: printing is not supported; share skipped")
        return None
    if not _get(s, "available", True):
        cfg.notices.append(f"[{name}]: available = no; share skipped")
        return None
    path = _get(s, "path", "")
    if not path and not homes:
        cfg.notices.append(f"[{name}]: no path; share skipped (as Samba does)")
        return None
    if path and not path.startswith("/") and not path.startswith("%"):
        raise ConfigError(f"{s['path'][1]}: the path must be absolute, not {path!r}")
    vfs = _get(s, "vfs objects", "").replace(",", " ").split()
    fruit = "fruit" in vfs
    shadow_copy = _shadow_copy_options(s, name) if "shadow_copy2" in vfs else None
    missing = [m for m in vfs if m not in MODULES and m not in ("fruit", "shadow_copy2")]
    if fruit:
        cfg.notices.append(f"[{name}] vfs objects: fruit: Apple's AAPL negotiation, enriched listings, "
                           "NFS ACEs, Time Machine and fruit:copyfile; resource forks and Finder information "
                           "are named streams (as fruit:resource = stream, fruit:metadata = stream); macOS's "
                           "AppleDouble ('._') files are taken into those streams as clients reach them "
                           "(fruit:convert_adouble), netatalk metadata Samba kept by `smbring import-samba`")
    if shadow_copy is not None:
        cfg.notices.append(f"[{name}] vfs objects: shadow_copy2: previous versions from the snapshots in "
                           f"{shadow_copy.snapdir} (shadow:format {shadow_copy.format}), read-only")
    # Samba's modules for what smbring keeps in its own way: said so, with where Samba's went
    built_in = [m for m in missing if m in SAMBA_METADATA_MODULES]
    if built_in:
        cfg.notices.append(f"[{name}] vfs objects: {', '.join(built_in)}: smbring keeps NT ACLs and streams "
                           "itself; what Samba kept in this directory is taken over once by `smbring import-samba`")
    missing = [m for m in missing if m not in SAMBA_METADATA_MODULES]
    if missing:
        cfg.notices.append(f"[{name}] vfs objects: {', '.join(missing)} not available here (skipped)")
    # Time Machine reconnects to its open backup files: durable handles, as Samba turns them on
    time_machine = fruit and _get(s, "fruit:timemachine", False)
    if time_machine and not _get(s, "durable handles", True):
        cfg.notices.append(f"[{name}] fruit:time machine: durable handles turned on (Time Machine "
                           "needs them), as Samba does")
    # browseable = no: srvsvc's share listings leave the share out (smb.rpc.srvsvc); it is
    # still reached by name
    if path and not share_access.has_session_variables(path) and not os.path.isdir(path):
        cfg.notices.append(f"[{name}]: {path} is not a directory (tree connects will fail)")
    encrypt = _get(s, "server smb encrypt", "if_required")
    if encrypt in ("required", "desired") and cfg.policy.encryption == "off":
        cfg.notices.append(f"[{name}] smb encrypt = {encrypt}: encryption is off in [global], "
                           "so this share cannot be reached" if encrypt == "required" else
                           f"[{name}] smb encrypt = desired: encryption is off in [global]")
    return Share(
        name=name, path=path, section=name, homes=homes,
        read_only=_get(s, "read only", True), guest_ok=_get(s, "guest ok", False),
        guest_only=_get(s, "guest only", False), comment=_get(s, "comment", ""),
        valid_users=_get(s, "valid users", []), invalid_users=_get(s, "invalid users", []),
        read_list=_get(s, "read list", []), write_list=_get(s, "write list", []),
        admin_users=_get(s, "admin users", []),
        hosts_allow=_get(s, "hosts allow", ()), hosts_deny=_get(s, "hosts deny", ()),
        encrypt=encrypt == "required" or encrypt == "desired" and cfg.policy.encryption == "required",
        encrypt_desired=encrypt == "desired",
        max_connections=_get(s, "max connections", 0),
        # (fruit:veto_appledouble: AppleDouble files, "._name", are vetoed on a fruit share,
        # as Samba's vfs_fruit adds them to `veto files`: macOS keeps that data in streams there)
        veto_files=share_access.split_names(_get(s, "veto files", "")) +
        (["._*"] if fruit and _get(s, "fruit:veto_appledouble", True) else []),
        veto_oplock_files=share_access.split_names(_get(s, "veto oplock files", "")),
        hide_files=share_access.split_names(_get(s, "hide files", "")),
        dont_descend=share_access.descend_paths(_get(s, "dont descend", "")),
        hide_dot_files=_get(s, "hide dot files", True),
        hide_unreadable=_get(s, "hide unreadable", False),
        force_unknown_acl_user=_get(s, "force unknown acl user", False),
        hide_unwriteable=_get(s, "hide unwriteable files", False),
        hide_special_files=_get(s, "hide special files", False),
        hide_new_files_timeout=_get(s, "hide new files timeout", 0.0),
        mangled_names=_get(s, "mangled names", True),
        case_sensitive=_get(s, "case sensitive", False), preserve_case=_get(s, "preserve case", True),
        short_preserve_case=_get(s, "short preserve case", True),
        default_case=_get(s, "default case", "lower"),
        create_mask=_get(s, "create mask", 0o744), directory_mask=_get(s, "directory mask", 0o755),
        force_create_mode=_get(s, "force create mode", 0),
        force_directory_mode=_get(s, "force directory mode", 0),
        browseable=_get(s, "browseable", True),
        access_based_share_enum=_get(s, "access based share enum", False),
        vfs_objects=[m for m in vfs if m in MODULES], fruit=fruit,
        fruit_ignore_zero_aces=_get(s, "fruit:ignore_zero_aces", True),
        fruit_zero_file_id=_get(s, "fruit:zero_file_id", True),
        fruit_convert_adouble=_get(s, "fruit:convert_adouble", True),
        fruit_wipe_blank_rfork=_get(s, "fruit:wipe_intentionally_left_blank_rfork", False),
        fruit_delete_empty_adfiles=_get(s, "fruit:delete_empty_adfiles", False),
        shadow_copy=shadow_copy,
        msdfs_root=_get(s, "msdfs root", False),
        time_machine=time_machine,
        time_machine_max_size=_get(s, "fruit:timemachinemaxsize", 0),
        readdir_attr=(_get(s, "readdir_attr:aapl_rsize", True), _get(s, "readdir_attr:aapl_finder_info", True),
                      _get(s, "readdir_attr:aapl_max_access", True)),
        sync_always=_get(s, "sync always", False), csc_policy=_get(s, "csc policy", 0),
        read_path=_get(s, "read path"), strict_allocate=_get(s, "strict allocate", False),
        force_user=_get(s, "force user", "").strip() or None,
        force_group=_get(s, "force group", "").strip() or None,
        oplocks=_get(s, "oplocks", True), level2_oplocks=_get(s, "level2 oplocks", True),
        durable_handles=_get(s, "durable handles", True) or time_machine,
        posix_locking=_get(s, "posix locking", True), strict_locking=_get(s, "strict locking", True),
        ea_support=_get(s, "ea support", True), nt_acl_support=_get(s, "nt acl support", True),
        acl_flag_inherited_canonicalization=_get(s, "acl flag inherited canonicalization", True),
        inherit_permissions=_get(s, "inherit permissions", False), dos_filetimes=_get(s, "dos filetimes", True),
        delete_veto_files=_get(s, "delete veto files", False), follow_symlinks=_get(s, "follow symlinks", True),
        inherit_owner=_get(s, "inherit owner", "no"),
        volume=_get(s, "volume", "").strip() or None, fstype=_get(s, "fstype", "NTFS").strip() or "NTFS")


def _check_guests(cfg: Config) -> None:
    """`map to guest = bad user` makes guests only where a share admits them: say so when none
    does."""
    if cfg.policy.map_to_guest == "bad user" and not any(s.guest_ok for s in cfg.shares.values()):
        cfg.notices.append("map to guest = bad user: no share has guest ok, so unknown users "
                           "are refused")


def _check_homes(cfg: Config) -> None:
    """[homes] without `valid users` lets any user (a guest too, with guest ok) connect to
    another user's home by naming it, as in Samba: say so."""
    homes = next((s for s in cfg.shares.values() if s.homes), None)
    if homes is not None and not homes.valid_users:
        cfg.notices.append("[homes] has no valid users: a user may connect to another user's "
                           "home by its name, acting there as their own account (as in Samba; a "
                           "server not started as root gives each user their own home only); "
                           "valid users = %S keeps each to its owner")


# -- the command line over the file ------------------------------------------------------------
def override(cfg: Config, *, path: str | None = None, share: str = "share", listen: str | None = None,
             passdb: str | None = None, read_path: str | None = None, signing_required: bool = False,
             read_only: bool = False, guest: bool = False, encrypt: bool = False,
             vfs_objects: str = "", busy_poll: int | None = None) -> Config:
    """The command line's flags over the file's settings (flags win): PATH adds (or replaces)
    the share --share; --listen, --passdb, --read-path, --busy-poll and --signing-required replace [global]'s
    settings; --read-only, --encrypt, --guest and --vfs-objects apply to every share (--guest
    also maps unknown users to guests, as map to guest = bad user)."""
    if path is not None:
        cfg.shares[share] = Share(name=share, path=os.path.abspath(path), section=share)
        cfg.sections.append((share, [("path", cfg.shares[share].path)]))
    if listen is not None:
        cfg.listen, cfg.listen_set = [listen_address(listen, "--listen")], True
    cfg.passdb = passdb or cfg.passdb
    cfg.read_path = read_path or cfg.read_path
    if busy_poll is not None:
        cfg.busy_poll = busy_poll
    cfg.signing_required = cfg.signing_required or signing_required
    if guest:
        cfg.policy.map_to_guest = "bad user"
    modules = vfs_objects.replace(",", " ").split()
    for name, s in cfg.shares.items():
        s.read_only = s.read_only or read_only
        s.guest_ok = s.guest_ok or guest
        s.encrypt = s.encrypt or encrypt
        if modules:
            s.vfs_objects = modules
    return cfg


def restart_only_changes(running: dict[str, str], new: dict[str, str]) -> list[str]:
    """The [global] options (RESTART_ONLY) whose new value a reload cannot apply: `running`
    and `new` are Config.options of the configuration in force and of the one read."""
    return [name for name in RESTART_ONLY if running.get(name) != new.get(name)]


def testparm_text(cfg: Config) -> str:
    """The settings as `testparm -s` prints them: [global] first, then each section with
    the options it sets (Samba's names)."""
    out = ["# Global parameters"]
    for name, options in cfg.sections:
        out.append(f"[{name}]")
        out.extend(f"\t{option} = {value}" for option, value in options)
        out.append("")
    return "\n".join(out)
