"""Where the server's log goes, from Samba's options.

- ``log level``: Samba's number (``log level = 2``; a class such as ``auth:3`` sets the logon
  audit's level, the other classes are ignored): 0 errors, 1-2 warnings, 3-9 information
  (connections, logons, startup), 10 and more debugging. ``--log-level`` overrides it and
  also takes a name (debug, info, warning, error). Default: information.
- ``logging``: Samba's list of backends, each with an optional ``@level``: ``file``,
  ``syslog`` (``/dev/log``, facility daemon), ``systemd`` (stderr lines with a
  ``<priority>`` prefix, which the journal reads). Without it: ``file`` when ``log file``
  is set, ``systemd`` when stderr is the journal, else plain lines on stderr.
- ``log file``: Samba's per-client macros (``%m``, ``%I``, ...) have no meaning in one
  process and become ``smbring`` (``/var/log/samba/log.%m`` -> ``log.smbring``).
- ``max log size``: in KiB (default 5000, 0: no limit); past it the file is renamed to
  ``<file>.old`` and a new one begun, as Samba does.

``configure`` may be called again (a reload): it replaces the handlers it installed before.

Where the server acts as its users (started as root), a record may be written while the
event loop's thread acts as a user: the file and syslog handlers write each record as the
server (``server_moment``), so that rotating the file, reopening it or reconnecting to
syslog never runs as the user, and the user's call goes on as the user afterwards.
"""
from __future__ import annotations

import contextlib
import logging
import logging.handlers
import os
import re
import sys
from dataclasses import dataclass, field

from smbring.server import systemd

NAMES = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
BACKENDS = ("file", "syslog", "systemd", "stderr")
MAX_LOG_SIZE_KIB = 5000       # Samba's default
JOURNAL_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6,
                    logging.DEBUG: 7}
MARK = "_smbring_handler"     # set on the handlers configure() installs


class LogError(ValueError):
    pass


def samba_level(number: int) -> int:
    """A Samba debug level as a logging level."""
    if number <= 0:
        return logging.ERROR
    if number <= 2:
        return logging.WARNING
    if number < 10:
        return logging.INFO
    return logging.DEBUG


def parse_level(text: str, where: str = "log level") -> tuple[int, int | None]:
    """`log level` or --log-level: (the level, the audit's level or None)."""
    words = text.replace(",", " ").split()
    if not words:
        raise LogError(f"{where}: empty")
    level, audit = None, None
    for word in words:
        name, colon, value = word.partition(":")
        if word.lower() in NAMES:
            level = NAMES[word.lower()]
        elif not colon and word.isdigit():
            level = samba_level(int(word))
        elif colon and value.isdigit():
            if name.lower() == "auth":
                audit = samba_level(int(value))
        else:
            raise LogError(f"{where}: expected a number (Samba's) or debug, info, warning, "
                           f"error, not {word!r}")
    return (logging.INFO if level is None else level), audit


def expand_macros(path: str) -> str:
    """A `log file` path with Samba's macros: %% is %, every other %X smbring."""
    return re.sub(r"%(.)", lambda m: "%" if m.group(1) == "%" else "smbring", path)


@dataclass
class LogSettings:
    level: int = logging.INFO
    audit_level: int | None = None
    backends: list[tuple[str, int | None]] = field(default_factory=list)   # (name, own level)
    file: str | None = None
    max_size_kib: int = MAX_LOG_SIZE_KIB


def settings(options: dict, cli_level: str | None = None) -> LogSettings:
    """The settings from [global] options (lower-case names) and --log-level."""
    out = LogSettings()
    if "log level" in options:
        out.level, out.audit_level = parse_level(options["log level"])
    if cli_level:
        out.level, audit = parse_level(cli_level, "--log-level")
        out.audit_level = audit if audit is not None else out.audit_level
    if options.get("log file"):
        out.file = expand_macros(options["log file"].strip())
    if "max log size" in options:
        text = options["max log size"].strip()
        if not text.isdigit():
            raise LogError(f"max log size: expected a number of KiB, not {text!r}")
        out.max_size_kib = int(text)
    for word in options.get("logging", "").replace(",", " ").split():
        name, _, level = word.partition("@")
        if name.lower() not in BACKENDS:
            raise LogError(f"logging: backend {name!r} is not available (one of {', '.join(BACKENDS)})")
        if level and not level.isdigit():
            raise LogError(f"logging: {word!r}: the level after @ is a number")
        out.backends.append((name.lower(), samba_level(int(level)) if level else None))
    if not out.backends:
        out.backends = [("file" if out.file else "systemd" if systemd.under_journal() else "stderr", None)]
    if any(name == "file" for name, _ in out.backends) and not out.file:
        raise LogError("logging = file needs a log file")
    return out


class JournalFormatter(logging.Formatter):
    """`<priority>logger: message`: the journal stamps the time and reads the priority."""

    def format(self, record: logging.LogRecord) -> str:
        priority = JOURNAL_PRIORITY.get(record.levelno, 6 if record.levelno < logging.WARNING else 3)
        text = super().format(record)
        return "\n".join(f"<{priority}>{line}" for line in text.splitlines())


class AsServer:
    """A handler that handles each record inside `server_moment()`: as the server."""

    server_moment = staticmethod(contextlib.nullcontext)

    def handle(self, record: logging.LogRecord):
        with self.server_moment():
            return super().handle(record)


class ServerFile(AsServer, logging.handlers.RotatingFileHandler):
    pass


class ServerSyslog(AsServer, logging.handlers.SysLogHandler):
    pass


def _handler(name: str, s: LogSettings) -> logging.Handler:
    if name == "file":
        os.makedirs(os.path.dirname(os.path.abspath(s.file)), exist_ok=True)
        handler = ServerFile(s.file, maxBytes=s.max_size_kib * 1024, backupCount=1)
        handler.namer = lambda default: default[:-len(".1")] + ".old"      # Samba's log.smbd.old
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    elif name == "syslog":
        if not os.path.exists("/dev/log"):
            raise LogError("logging = syslog: there is no /dev/log (no syslog daemon or journal)")
        handler = ServerSyslog("/dev/log", logging.handlers.SysLogHandler.LOG_DAEMON)
        handler.setFormatter(logging.Formatter("smbring[%(process)d]: %(name)s: %(message)s"))
    elif name == "systemd":
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JournalFormatter("%(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    return handler


def configure(s: LogSettings, server_moment=None) -> None:
    """Installs the handlers (replacing those of an earlier call). Raises LogError or
    OSError (a log file that cannot be opened) and then changes nothing. server_moment: the
    server's context for writing a record as the server (see `act_as_server`)."""
    handlers = []
    for name, level in s.backends:
        handler = _handler(name, s)
        if server_moment is not None and isinstance(handler, AsServer):
            handler.server_moment = server_moment
        handler.setLevel(level if level is not None else logging.NOTSET)
        setattr(handler, MARK, True)
        handlers.append(handler)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, MARK, False)]:
        root.removeHandler(old)
        old.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(s.level if s.audit_level is None else min(s.level, s.audit_level))
    logging.getLogger("smbring").setLevel(s.level)
    logging.getLogger("smbring.audit").setLevel(s.audit_level if s.audit_level is not None else s.level)


def act_as_server(server_moment) -> None:
    """Makes the handlers installed already write their records in `server_moment()` (a
    server that acts as its users, made after the log was configured)."""
    for handler in logging.getLogger().handlers:
        if getattr(handler, MARK, False) and isinstance(handler, AsServer):
            handler.server_moment = server_moment
