"""smb.conf-style configuration: ``[global]`` and one section per share.

Understood: global ``server signing`` (mandatory/required), ``listen`` (HOST:PORT),
``smb ports``, ``passdb``; per share ``path``, ``read only`` / ``writable``, ``guest ok``,
``valid users``, ``comment``, ``vfs objects`` (direct_writes, io_uring, threadpool, posix: see
smbring.vfs.modules), ``read path`` (auto, copy, mmap, splice, zc: see smbring.datapath; also in
[global]), ``smb encrypt`` (``required``: the share is reached over encrypted sessions only).
In [global] also the bounds of smbring.smb.limits.OPTIONS (``max smbd processes``, ``max
connections per client``, ``handshake timeout``, ``deadtime``, ``smb2 max credits``, ...) and
``ntlm auth`` (ntlmv2-only, ntlmv1-permitted, mschapv2-and-ntlmv2-only, disabled).
Anything else is warned about and ignored, as Samba users expect from testparm.
"""
from __future__ import annotations

import configparser
import logging
import re
from dataclasses import dataclass, field

from smbring.smb.limits import OPTIONS, Limits
from smbring.smb.ntlm import ntlm_auth_policy
from smbring.smb.state import Share
from smbring.vfs.modules import MODULES

log = logging.getLogger("smbring.config")

TRUE = {"yes", "true", "1", "on"}
FALSE = {"no", "false", "0", "off"}
GLOBAL_KEYS = {"server signing", "listen", "smb ports", "passdb", "workgroup", "server string",
               "log level", "read path", "ntlm auth", *OPTIONS,
               "username map", "guest account"}
SHARE_KEYS = {"path", "read only", "writable", "writeable", "guest ok", "valid users", "comment",
              "vfs objects", "smb encrypt", "browseable", "browsable", "read path", "strict allocate"}
READ_PATHS = ("auto", "copy", "mmap", "splice", "zc")
WHOLE = re.compile(r"[0-9]+")
DECIMAL = re.compile(r"[0-9]+(\.[0-9]+)?|\.[0-9]+")
# 0 means no bound for these, as for Samba's `max smbd processes`
ZERO_IS_UNLIMITED = {"max_connections", "max_connections_per_address"}


class ConfigError(ValueError):
    pass


@dataclass
class Config:
    shares: dict[str, Share] = field(default_factory=dict)
    signing_required: bool = False
    listen: str | None = None
    passdb: str | None = None
    read_path: str = "auto"
    limits: Limits = field(default_factory=Limits)
    ntlm_auth: str = "ntlmv2-only"
    username_map: str | None = None     # Samba's username map file (SMB name -> Unix account)
    guest_account: str | None = None    # the Unix account guests act as (None: nobody)
    warnings: list[str] = field(default_factory=list)


def _bool(value: str, where: str) -> bool:
    v = value.strip().lower()
    if v in TRUE:
        return True
    if v in FALSE:
        return False
    raise ConfigError(f"{where}: expected yes or no, not {value!r}")


def _read_path(value: str, where: str) -> str:
    v = value.strip().lower()
    if v not in READ_PATHS:
        raise ConfigError(f"{where} read path: one of {', '.join(READ_PATHS)}, not {value!r}")
    return v


def _limits(opts) -> Limits:
    """The [global] bounds. Counts are whole numbers of at least 1, except that 0 connections
    means no bound (as for Samba's `max smbd processes`); the timeouts, in seconds (handshake
    timeout) or minutes (deadtime), may have decimals, and 0 means never (as for Samba's
    deadtime)."""
    limits = Limits()
    for option, name in OPTIONS.items():
        if option not in opts:
            continue
        text = opts[option].strip()
        timeout = isinstance(getattr(limits, name), float)
        if timeout and not DECIMAL.fullmatch(text):
            unit = "minutes" if name == "deadtime" else "seconds"
            raise ConfigError(f"[global] {option}: expected a number of {unit}, not {opts[option]!r}")
        if not timeout and not WHOLE.fullmatch(text):
            raise ConfigError(f"[global] {option}: expected a whole number, not {opts[option]!r}")
        value = float(text) if timeout else int(text)
        if value == 0 and not timeout and name not in ZERO_IS_UNLIMITED:
            raise ConfigError(f"[global] {option}: must be at least 1")
        setattr(limits, name, value)
    return limits


def _ntlm_auth(value: str) -> str:
    try:
        return ntlm_auth_policy(value)
    except ValueError as e:
        raise ConfigError(f"[global] {e}") from None


def load(path: str) -> Config:
    parser = configparser.ConfigParser(interpolation=None, strict=False, delimiters=("=",),
                                       comment_prefixes=("#", ";"), inline_comment_prefixes=None)
    parser.optionxform = lambda option: " ".join(option.lower().split())
    with open(path) as f:
        parser.read_file(f)
    cfg = Config()

    def warn(msg: str) -> None:
        cfg.warnings.append(msg)
        log.warning("%s: %s", path, msg)

    for section in parser.sections():
        opts = parser[section]
        if section.lower() == "global":
            for key, value in opts.items():
                if key not in GLOBAL_KEYS:
                    warn(f"[global] {key}: unknown option ignored")
            signing = opts.get("server signing", "auto").strip().lower()
            cfg.signing_required = signing in ("mandatory", "required")
            if "smb ports" in opts:
                cfg.listen = f"127.0.0.1:{opts['smb ports'].split()[0]}"
            cfg.listen = opts.get("listen", cfg.listen)
            cfg.passdb = opts.get("passdb")
            cfg.read_path = _read_path(opts.get("read path", "auto"), "[global]")
            cfg.limits = _limits(opts)
            cfg.ntlm_auth = _ntlm_auth(opts.get("ntlm auth", "ntlmv2-only"))
            cfg.username_map = opts.get("username map", "").strip() or None
            cfg.guest_account = opts.get("guest account", "").strip() or None
            continue
        where = f"[{section}]"
        for key in opts:
            if key not in SHARE_KEYS:
                warn(f"{where} {key}: unknown option ignored")
        if "path" not in opts:
            raise ConfigError(f"{where}: a share needs a path")
        read_only = _bool(opts.get("read only", "yes"), f"{where} read only")
        for alias in ("writable", "writeable"):
            if alias in opts:
                read_only = not _bool(opts[alias], f"{where} {alias}")
        vfs = opts.get("vfs objects", "").replace(",", " ").split()
        for module in vfs:
            if module not in MODULES:
                warn(f"{where} vfs objects: module {module!r} is not available here (skipped)")
        encrypt = opts.get("smb encrypt", "off").strip().lower()
        if encrypt not in ("off", "no", "disabled", "default", "desired", "if_required",
                           "required", "mandatory", "yes"):
            raise ConfigError(f"{where} smb encrypt: unknown value {encrypt!r}")
        cfg.shares[section] = Share(
            name=section, path=opts["path"], read_only=read_only,
            guest_ok=_bool(opts.get("guest ok", "no"), f"{where} guest ok"),
            valid_users=[u.strip().lower() for u in opts.get("valid users", "").replace(",", " ").split()],
            encrypt=encrypt in ("required", "mandatory", "yes"),
            vfs_objects=[m for m in vfs if m in MODULES],
            read_path=_read_path(opts["read path"], where) if "read path" in opts else None,
            strict_allocate=_bool(opts.get("strict allocate", "no"), f"{where} strict allocate"),
        )
    if not cfg.shares:
        raise ConfigError(f"{path}: no share sections")
    return cfg
