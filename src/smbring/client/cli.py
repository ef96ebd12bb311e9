"""``smbring get|put|ls|mkdir|rm|mv|cp|watch smb://[domain;]user@host[:port]/share/path [local]``.

The password is never taken from the command line: ``--credentials FILE`` (smbclient's
format: ``username =``, ``password =``, ``domain =`` lines), else the environment variable
SMBRING_PASSWORD, else a prompt. Exit status: 0, 1 when the server refused (an NTSTATUS) or a
local file failed, 2 for a usage error, 3 when the server's answers were refused as broken or
hostile, 4 when a listing went past a limit (--max-entries, and for get --max-files,
--max-dirs, --max-depth: the message names the one to raise).
"""
from __future__ import annotations

import asyncio
import os
import sys
from urllib.parse import unquote, urlsplit

from smbring.client.errors import LimitExceeded, ProtocolError
from smbring.client.limits import (DEFAULT_MAX_DEPTH, DEFAULT_MAX_DIRECTORIES, DEFAULT_MAX_ENTRIES,
                                   DEFAULT_MAX_FILES, Limits)
from smbring.client.session import connect

PASSWORD_ENV = "SMBRING_PASSWORD"
# the option that raises each limit (limits.Limits attribute -> option)
LIMIT_OPTIONS = {"entries": "--max-entries", "files": "--max-files",
                 "directories": "--max-dirs", "depth": "--max-depth"}
COMMANDS = ("get", "put", "ls", "mkdir", "rm", "mv", "cp", "watch")


class UsageError(Exception):
    pass


class Target:
    """What an smb:// URL names. (A plain class: a dataclass generates and compiles its methods
    at import time, a share of every run's fixed CPU.)"""
    __slots__ = ("host", "port", "user", "domain", "share", "path")

    def __init__(self, host: str, port: int, user: str, domain: str, share: str, path: str):
        self.host, self.port, self.user, self.domain = host, port, user, domain
        self.share = share
        self.path = path    # inside the share, "/"-separated, no leading "/"

    def __eq__(self, other):
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in self.__slots__)

    def __repr__(self) -> str:
        return "Target(" + ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__) + ")"


def parse_url(url: str) -> Target:
    parts = urlsplit(url)
    if parts.scheme != "smb" or not parts.hostname:
        raise UsageError(f"{url!r} is not an smb://[domain;]user@host[:port]/share/path URL")
    if parts.password is not None:
        raise UsageError("a password does not belong in the URL (it would show in the process "
                         "list): use --credentials, $SMBRING_PASSWORD or the prompt")
    user = unquote(parts.username or "")
    domain = ""
    if ";" in user:
        domain, user = user.split(";", 1)
    segments = [unquote(s) for s in parts.path.split("/") if s]
    if not segments:
        raise UsageError(f"{url!r} names no share")
    try:
        port = parts.port or 445
    except ValueError as e:
        raise UsageError(str(e)) from None
    return Target(parts.hostname, port, user, domain, segments[0], "/".join(segments[1:]))


def read_credentials(path: str) -> dict[str, str]:
    """smbclient's authentication file: `key = value` lines (username, password, domain)."""
    values = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            key, sep, value = line.partition("=")
            if sep and key.strip() in ("username", "password", "domain"):
                values[key.strip()] = value.strip()
    return values


def credentials(args, target: Target) -> tuple[str, str, str]:
    """(user, password, domain) from the credentials file, the URL, the environment, a prompt;
    with --kerberos and no password, none: the credentials cache's ticket logs on."""
    values = read_credentials(args.credentials) if args.credentials else {}
    user = values.get("username") or target.user or _login_name()
    domain = values.get("domain") or target.domain
    if "/" in user or "\\" in user:
        domain, user = user.replace("/", "\\").split("\\", 1)
    password = values.get("password")
    if password is None:
        password = os.environ.get(PASSWORD_ENV)
    if password is None and getattr(args, "kerberos", False):
        # the Kerberos ticket of the credentials cache (KRB5CCNAME): no password, and the
        # cache's own principal unless a user was named
        explicit = values.get("username") or target.user
        return (user if explicit else ""), "", domain
    if password is None:
        if not sys.stdin.isatty():      # getpass would read it from stdin, echoed
            raise UsageError(f"no password: give --credentials FILE or ${PASSWORD_ENV}, or run "
                             f"on a terminal to be asked")
        import getpass      # only for the prompt (it imports termios & co.)
        try:
            password = getpass.getpass(f"Password for {user}@{target.host}: ")
        except EOFError:
            raise UsageError("no password given") from None
    return user, password, domain


def add_common_arguments(p) -> None:
    """The options every client command takes (added to each: an argparse parent parser
    would be one more parser to build on every command)."""
    p.add_argument("--credentials", metavar="FILE",
                   help="smbclient-style file with username=, password=, domain= lines")
    p.add_argument("--encrypt", action="store_true", help="encrypt every message (refused "
                   "if the server cannot)")
    p.add_argument("--sign", action="store_true", help="sign every message even where the "
                   "server does not ask")
    p.add_argument("--kerberos", action="store_true",
                   help="log on through pyspnego's Negotiate (Kerberos when a ticket can be "
                        "had, else its NTLM) instead of smbring's own NTLMv2")
    p.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                   help="how long to wait for each answer (default 60)")
    p.add_argument("--channels", type=int, default=1, metavar="N",
                   help="connections to stripe transfers over (multichannel, SMB 3.x; "
                        "fewer when the server does not offer it)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (there is one only on a terminal anyway)")


def add_tree_limits(p) -> None:
    """get's limits on a tree (a server could list new files and directories for ever)."""
    p.add_argument("--max-files", type=int, default=DEFAULT_MAX_FILES, metavar="N",
                   help=f"files a tree may have (default {DEFAULT_MAX_FILES:,})")
    p.add_argument("--max-dirs", type=int, default=DEFAULT_MAX_DIRECTORIES, metavar="N",
                   help=f"directories a tree may have (default {DEFAULT_MAX_DIRECTORIES:,})")
    p.add_argument("--max-depth", type=int, default=DEFAULT_MAX_DEPTH, metavar="N",
                   help=f"directory levels a tree may have (default {DEFAULT_MAX_DEPTH})")


def limits_of(args) -> Limits:
    """The limits the options give (the defaults for those a command does not take)."""
    try:
        return Limits(entries=getattr(args, "max_entries", DEFAULT_MAX_ENTRIES),
                      files=getattr(args, "max_files", DEFAULT_MAX_FILES),
                      directories=getattr(args, "max_dirs", DEFAULT_MAX_DIRECTORIES),
                      depth=getattr(args, "max_depth", DEFAULT_MAX_DEPTH))
    except ValueError as e:
        raise UsageError(str(e)) from None


def _login_name() -> str:
    import getpass
    return getpass.getuser()


def register(subparsers) -> None:
    for name in COMMANDS:
        register_command(subparsers, name)


def register_command(subparsers, name: str) -> None:
    """Adds the parser of one client command: a run builds only its own (each parser with
    the common options is some 25 add_argument calls, about 0.15 ms of CPU)."""
    url_help = "smb://[domain;]user@host[:port]/share/path"
    if name == "get":
        p = subparsers.add_parser("get", help="download a file or directory tree")
        p.add_argument("url", help=url_help)
        p.add_argument("local", nargs="?", help="where to write (default: the name, here)")
        add_tree_limits(p)
    elif name == "put":
        p = subparsers.add_parser("put", help="upload a file or a directory tree")
        p.add_argument("url", help=url_help + " (a directory: into it)")
        p.add_argument("local", help="the local file or directory")
    elif name == "ls":
        p = subparsers.add_parser("ls", help="list a directory")
        p.add_argument("url", help=url_help)
        p.add_argument("--json", action="store_true", help="one JSON array of entries")
    elif name == "mkdir":
        p = subparsers.add_parser("mkdir", help="make a directory")
        p.add_argument("url", help=url_help)
    elif name == "rm":
        p = subparsers.add_parser("rm", help="remove a file or an empty directory")
        p.add_argument("url", help=url_help)
    elif name in ("mv", "cp"):
        p = subparsers.add_parser(name, help="rename within the share" if name == "mv" else
                                  "copy a file within the share, in the server (its data does "
                                  "not cross the network)")
        p.add_argument("url", help=url_help)
        p.add_argument("new", help="the new path in the same share (or its smb:// URL)")
        p.add_argument("--replace", action="store_true", help="replace an existing file")
    elif name == "watch":
        p = subparsers.add_parser("watch", help="print the changes in a directory as the server "
                                                "reports them, until interrupted")
        p.add_argument("url", help=url_help)
        p.add_argument("--recursive", action="store_true", help="below the directory too")
        p.add_argument("--json", action="store_true", help="one JSON object a line")
    else:
        raise ValueError(f"not a client command: {name!r}")
    if name in ("get", "ls"):
        held = "; ls holds them all, some 500 bytes each" if name == "ls" else ""
        p.add_argument("--max-entries", type=int, default=DEFAULT_MAX_ENTRIES, metavar="N",
                       help=f"entries one directory listing may have (default "
                            f"{DEFAULT_MAX_ENTRIES:,}{held})")
    add_common_arguments(p)
    p.set_defaults(func=main)


def main(args) -> int:
    try:
        if args.command == "put" and args.url and not args.url.startswith("smb://") and \
                args.local.startswith("smb://"):
            args.url, args.local = args.local, args.url      # `put LOCAL URL` reads as well
        target = parse_url(args.url)
        limits = limits_of(args)
        user, password, domain = credentials(args, target)
        return asyncio.run(_run(args, target, user, password, domain, limits))
    except UsageError as e:
        print(f"smbring {args.command}: {_printable(str(e))}", file=sys.stderr)
        return 2
    except LimitExceeded as e:
        print(f"smbring {args.command}: {_printable(str(e))}; nothing was "
              f"{'listed' if args.command == 'ls' else 'written'}"
              f" (raise it with {LIMIT_OPTIONS.get(e.limit, 'its option')} N)", file=sys.stderr)
        return 4
    except ProtocolError as e:
        print(f"smbring {args.command}: refused the server's answer: {_printable(str(e))}",
              file=sys.stderr)
        return 3
    except KeyboardInterrupt:       # (how a watch ends)
        return 130
    except (OSError, ConnectionError, ValueError, RuntimeError) as e:
        print(f"smbring {args.command}: {_printable(str(e))}", file=sys.stderr)
        return 1


async def _run(args, target: Target, user: str, password: str, domain: str,
               limits: Limits) -> int:
    if args.channels < 1 or args.channels > 32:
        raise UsageError("--channels takes 1 to 32")
    async with await connect(target.host, target.port, user, password, target.share, domain=domain,
                             sign=args.sign, encrypt=args.encrypt, timeout=args.timeout,
                             channels=args.channels, limits=limits,
                             auth="negotiate" if args.kerberos else "ntlm") as c:
        if c.multichannel_note:
            print(f"smbring {args.command}: {c.open_channels} channel(s): "
                  f"{_printable(c.multichannel_note)}", file=sys.stderr)
        progress = None
        if args.command in ("get", "put") and not args.no_progress and sys.stderr.isatty():
            from smbring.client.progress import Progress    # a terminal's run only
            progress = Progress(sys.stderr)
        written = None
        try:
            if args.command == "get":
                local = args.local or os.path.basename(target.path.rstrip("/")) or target.share
                written = await c.get(target.path, local, progress)
            elif args.command == "put":
                remote = target.path + ("/" if args.url.endswith("/") else "")
                written = await c.put(args.local, remote, progress)
        finally:
            if progress is not None:
                progress.end()     # the bar's line is cleared before anything else is printed
        if written is not None:
            print(_printable(written))
        elif args.command == "ls":
            await _ls(c, target.path, args.json)
        elif args.command == "mkdir":
            await c.mkdir(target.path)
        elif args.command == "rm":
            if (await c.stat(target.path)).is_dir:
                await c.rmdir(target.path)
            else:
                await c.remove(target.path)
        elif args.command == "mv":
            await c.rename(target.path, _in_same_share(target, args.new, "mv renames"),
                           replace=args.replace)
        elif args.command == "cp":
            await c.copy(target.path, _in_same_share(target, args.new, "cp copies"), replace=args.replace)
        elif args.command == "watch":
            await _watch(c, target.path, args.recursive, args.json)
    return 0


def _in_same_share(target: Target, new: str, what: str) -> str:
    """The path `new` names: a path in the target's share, or an smb:// URL of that share."""
    if not new.startswith("smb://"):
        return new
    other = parse_url(new)
    if (other.host, other.port, other.share) != (target.host, target.port, target.share):
        raise UsageError(f"{what} within one share")
    return other.path


async def _watch(client, path: str, recursive: bool, as_json: bool) -> None:
    """Each change on a line of its own, printed as it comes: `ACTION NAME` (the name
    escaped as ls escapes it), or a JSON object."""
    if as_json:
        import json
    async for change in client.watch(path, recursive=recursive):
        if as_json:
            print(json.dumps({"action": change.action, "name": change.name}), flush=True)
        else:
            print(f"{change.action} {_printable(change.name)}", flush=True)


def _datetime(ns: int, utc: bool):
    """The time as a datetime (UTC, or local); None for one a datetime cannot hold (the server
    says what it likes: the year 60056, say)."""
    import datetime     # ls only: get and put do without it (and json)
    try:
        return datetime.datetime.fromtimestamp(ns / 1e9, datetime.timezone.utc if utc else None)
    except (ValueError, OverflowError, OSError):
        return None


def _iso(ns: int) -> str | None:
    """The time in ISO 8601 (UTC); None where a datetime cannot hold it."""
    when = _datetime(ns, utc=True)
    return when.isoformat() if when is not None else None


def _local_time(ns: int) -> str:
    """The time as ls shows it (local time, to the minute); question marks where a datetime
    cannot hold it."""
    when = _datetime(ns, utc=False)
    return when.strftime("%Y-%m-%d %H:%M") if when is not None else "????-??-?? ??:??"


async def _listing(client, path: str) -> list:
    """The entries of a directory by name (at most the client's limits.entries: listdir ends
    a longer or endless listing); a name listed twice is refused, found beside itself once
    sorted (no set of the names seen on top of the entries)."""
    entries = [e async for e in client.listdir(path)]
    entries.sort(key=lambda e: e.name)
    for before, after in zip(entries, entries[1:]):
        if before.name == after.name:
            raise ProtocolError(f"the server listed the name {after.name!r} twice in {path!r}")
    return entries


async def _ls(client, path: str, as_json: bool) -> None:
    entries = await _listing(client, path)
    if as_json:
        import json
        json.dump([{"name": e.name, "is_dir": e.is_dir, "size": e.size, "attributes": e.attributes,
                    "modified": _iso(e.modified_ns), "created": _iso(e.created_ns)}
                   for e in entries], sys.stdout, indent=1)
        print()
        return
    for e in entries:
        kind = "D" if e.is_dir else "-"
        when = _local_time(e.modified_ns)
        # a name is printed with its control characters escaped: it came from the server
        print(f"{kind} {e.size:>14} {when}  {_printable(e.name)}")


def _printable(name: str) -> str:
    """The name with control characters escaped: it came from the server, and a terminal
    would act on them (control characters, C1 bytes, bidi overrides: whatever str.isprintable
    refuses). Error messages go through it too: those that quote the server's names already
    quote them with repr, and whatever one day does not is still escaped here."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in name)
