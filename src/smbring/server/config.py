"""smb.conf-style configuration: ``[global]`` and one section per share.

Understood: global ``server signing`` (mandatory/required), ``listen`` (HOST:PORT),
``smb ports``, ``passdb``; per share ``path``, ``read only`` / ``writable``, ``guest ok``,
``valid users``, ``comment``, ``vfs objects`` (direct_writes, io_uring, threadpool, posix: see
smbring.vfs.modules), ``read path`` (auto, copy, mmap, splice, zc: see smbring.datapath; also in
[global]), ``smb encrypt`` (``required``: the share is reached over encrypted sessions only).
Anything else is warned about and ignored, as Samba users expect from testparm.
"""
from __future__ import annotations

import configparser
import logging
from dataclasses import dataclass, field

from smbring.smb.connection import Share
from smbring.vfs.modules import MODULES

log = logging.getLogger("smbring.config")

TRUE = {"yes", "true", "1", "on"}
FALSE = {"no", "false", "0", "off"}
GLOBAL_KEYS = {"server signing", "listen", "smb ports", "passdb", "workgroup", "server string",
               "log level", "read path"}
SHARE_KEYS = {"path", "read only", "writable", "writeable", "guest ok", "valid users", "comment",
              "vfs objects", "smb encrypt", "browseable", "browsable", "read path"}
READ_PATHS = ("auto", "copy", "mmap", "splice", "zc")


class ConfigError(ValueError):
    pass


@dataclass
class Config:
    shares: dict[str, Share] = field(default_factory=dict)
    signing_required: bool = False
    listen: str | None = None
    passdb: str | None = None
    read_path: str = "auto"
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
        )
    if not cfg.shares:
        raise ConfigError(f"{path}: no share sections")
    return cfg
