"""The control socket and ``smbring status``, smbring's ``smbstatus``.

The server listens on a Unix stream socket (``control socket`` in [global] or
``--control-socket``; default ``/run/smbring/control`` as root, else
``$XDG_RUNTIME_DIR/smbring/control``). The socket has mode 0600 in a directory of mode 0700
owned by the server's user, and every connection is checked with ``SO_PEERCRED``: only root
and the server's own user are answered (anyone else gets one line saying so). What it
tells is who is connected from where, as which SMB user and Unix account (the one each
session's and tree's file-system calls act as), and what they have open: nothing a client
should learn about the others.

The protocol is one request line and one JSON document in answer. ``status`` tells; the
administrator's actions are Samba's smbcontrol messages of the same names (``smbring control
...``): ``close-share NAME`` ends every tree connect to the share (``*``: to every share),
``close-denied-share NAME`` reloads the configuration and ends those the reloaded
configuration would not connect as they are (the share gone, the user refused, another
``read only`` or directory). A session whose tree connect ends keeps its other trees; its
client is answered STATUS_NETWORK_NAME_DELETED on that tree and may connect again, as the
configuration in force allows.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import stat
import struct
import sys
import time
from typing import TYPE_CHECKING, Callable

from smbring.smb import security, sharemodes, wire
from smbring.smb.state import Pipe

if TYPE_CHECKING:
    from smbring.server.server import Server

log = logging.getLogger("smbring.control")

REQUEST_MAX = 256               # bytes of a request line
REQUEST_TIMEOUT = 5.0
DIALECTS = {wire.SMB202: "SMB2_02", wire.SMB210: "SMB2_10", wire.SMB300: "SMB3_00",
            wire.SMB302: "SMB3_02", wire.SMB311: "SMB3_11"}
SIGNING = {security.HMAC_SHA256: "HMAC-SHA256", security.AES_CMAC: "AES-128-CMAC",
           security.AES_GMAC: "AES-128-GMAC"}
CIPHERS = {security.AES_128_CCM: "AES-128-CCM", security.AES_128_GCM: "AES-128-GCM",
           security.AES_256_CCM: "AES-256-CCM", security.AES_256_GCM: "AES-256-GCM"}


def default_path() -> str:
    if os.geteuid() == 0:
        return "/run/smbring/control"
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return os.path.join(runtime, "smbring", "control")
    return f"/tmp/smbring-{os.geteuid()}/control"


# -- what status tells --------------------------------------------------------------------
def _modes(bits: int) -> str:
    """READ|WRITE|DELETE bits as smbstatus letters: R, W, D (- for none)."""
    return "".join(c for b, c in ((sharemodes.READ, "R"), (sharemodes.WRITE, "W"),
                                  (sharemodes.DELETE, "D")) if bits & b) or "-"


OPLOCK_NAMES = {0x00: "NONE", 0x01: "LEVEL_II", 0x08: "EXCLUSIVE", 0x09: "BATCH"}


def _caching(oplocks, o) -> dict:
    """The open's oplock level, or its lease (key and state, as RWH letters) as smbstatus
    shows them."""
    lease = oplocks.lease_of(o)
    if lease is None:
        return {"oplock": OPLOCK_NAMES.get(oplocks.level(o), "?"), "lease": None}
    letters = "".join(c for bit, c in ((0x1, "R"), (0x4, "W"), (0x2, "H")) if lease.state & bit)
    return {"oplock": "LEASE", "lease": {"key": lease.key.hex(), "state": letters or "NONE"}}


def snapshot(server: "Server") -> dict:
    """What the server holds now: its connections, their sessions, tree connects, open
    files (with their share modes) and byte-range locks. Read only."""
    state = server.state
    connections = []
    for link in sorted(server.links, key=lambda lk: lk.connected_at):
        conn = link.conn
        host, port = (link.peer or ("?", 0))[:2]
        sessions = []
        for s in conn.sessions.values():
            if not s.valid:
                continue
            sessions.append({
                "id": s.id, "user": s.user, "guest": s.guest, "unix": _account(s.identity),
                "signing": SIGNING.get(conn.sign_algorithm(), "?") if s.sign else None,
                "encryption": CIPHERS.get(conn.cipher, "?") if s.encrypt or s.client_seals else None,
                "trees": [{"id": tid, "share": t.share.name if t.share else "IPC$",
                           "path": t.share.path if t.share else None,
                           "unix": _account(getattr(t.fs, "identity", None))}
                          for tid, t in s.trees.items()],
            })
        opens = []
        for o in conn.opens.values():
            if isinstance(o, Pipe):
                continue        # a named pipe (srvsvc, lsarpc, ...): no file, as smbstatus lists none
            modes = state.share_modes.of(o.key, id(o))
            opens.append({
                "session": o.session_id, "tree": o.tree_id,
                "share": o.tree.share.name if o.tree and o.tree.share else None,
                "name": o.display_name() or ".", "directory": o.is_dir,
                "access": f"0x{o.granted:08x}",
                "uses": _modes(modes[0]) if modes else "-",
                "shares": _modes(modes[1]) if modes else "RWD",
                **_caching(state.oplocks, o),
                "delete_on_close": o.delete_on_close,
                "locks": [{"offset": lk.offset, "length": lk.length,
                           "type": "exclusive" if lk.exclusive else "shared"}
                          for lk in state.locks.held(o.key, id(o))],
            })
        connections.append({
            "client": f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}",
            "connected": link.connected_at,
            "dialect": DIALECTS.get(conn.dialect, f"0x{conn.dialect:04x}") if conn.dialect else None,
            "sessions": sessions, "opens": opens,
        })
    return {"pid": os.getpid(), "stopping": server.stopping, "shares": sorted(server.shares),
            "connections": connections, "time": time.time()}


def _account(identity) -> dict | None:
    """The Unix account a session or tree acts as (force user may make a tree's another):
    its name, uid and gid; None where there is none (a tree of IPC$)."""
    if identity is None:
        return None
    return {"user": identity.name, "uid": identity.uid, "gid": identity.gid}


def _describe_account(account: dict | None) -> str:
    return f"{account['user']} (uid {account['uid']})" if account else "-"


# -- the server's side ----------------------------------------------------------------------
class ControlError(OSError):
    pass


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end (SO_PEERCRED: pid, uid, gid)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


def _prepare_directory(directory: str) -> None:
    """The socket's directory: made with mode 0700, or one that exists owned by this user
    (or root) and writable by nobody else: another user must not be able to replace the
    socket."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    st = os.lstat(directory)
    if stat.S_ISLNK(st.st_mode):    # (in a shared /tmp, anyone could have planted the link)
        raise ControlError(f"control socket directory {directory}: is a symbolic link: it must be "
                           "a directory of this user's")
    if st.st_uid not in (os.geteuid(), 0) or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ControlError(f"control socket directory {directory}: owned by uid {st.st_uid} with mode "
                           f"{stat.S_IMODE(st.st_mode):o}: it must be this user's, writable only by it")
    if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) != 0o700:
        # (the run directory holds the workers' store and the Kerberos replay cache too)
        log.warning("control socket directory %s: mode %o changed to 700 (only the server may "
                    "enter it; give the socket a directory of its own)", directory, stat.S_IMODE(st.st_mode))
        os.chmod(directory, 0o700)


def _claim(path: str) -> None:
    """Removes a stale socket left by a server that is gone; refuses one that answers."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ControlError(f"control socket {path}: exists and is not a socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        if probe.connect_ex(path) == 0:
            raise ControlError(f"control socket {path}: another smbring serves it "
                               "(give each server its own: --control-socket or `control socket`)")
    os.unlink(path)


class ControlSocket:
    def __init__(self, server: "Server", path: str, reload: Callable[[], str | None] | None = None):
        self.server = server
        self.path = path
        self.reload = reload        # a reload as SIGHUP makes it: why it failed, else None
        self._unix: asyncio.AbstractServer | None = None
        self._ino: int | None = None
        # who may ask besides root: the server's own user, as it starts (the event loop's
        # thread acts as sessions' users at times, so geteuid later may name one of them)
        self.server_uid = os.geteuid()

    async def start(self) -> None:
        _prepare_directory(os.path.dirname(os.path.abspath(self.path)))
        _claim(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old_umask = os.umask(0o177)           # no moment with a wider mode than 0600
        try:
            sock.bind(self.path)
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)
        self._ino = os.stat(self.path).st_ino
        sock.listen(16)
        # each request is the server's work: as the server, whoever the loop acted as last
        self._unix = await asyncio.start_unix_server(
            lambda reader, writer: self.server.server_work(self._serve(reader, writer)), sock=sock)
        log.info("control socket %s (smbring status)", self.path)

    async def close(self) -> None:
        if self._unix is not None:
            self._unix.close()
            await self._unix.wait_closed()
        try:
            if os.stat(self.path).st_ino == self._ino:     # ours, not a newer server's
                os.unlink(self.path)
        except OSError:
            pass

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            uid = peer_uid(writer.get_extra_info("socket"))
            # the request is read (bounded) before anyone is refused, so that the refusal
            # reaches a client still sending rather than a reset
            line = await asyncio.wait_for(reader.readline(), REQUEST_TIMEOUT)
            if uid not in (0, self.server_uid):
                log.warning("control socket: uid %d refused (only root and uid %d may ask)", uid, self.server_uid)
                writer.write(json.dumps({"error": "permission denied"}).encode() + b"\n")
                await writer.drain()
                return
            request = line[:REQUEST_MAX].decode(errors="replace").strip()
            action = parse_action(request)
            among_workers = self._among_workers(request)
            if among_workers is not None:
                answer = among_workers
            elif request == "status":
                answer = snapshot(self.server)
            elif request == "metrics" and self.server.metrics is not None:
                # (a worker's: the supervisor serves them all at its metrics address)
                answer = {"metrics": self.server.metrics.exposition()}
            elif isinstance(action, tuple):
                answer = self._act(*action)
            else:
                answer = {"error": action or f"unknown request {request[:40]!r} (known: {KNOWN})"}
            writer.write(json.dumps(answer).encode() + b"\n")
            await writer.drain()
        except (OSError, asyncio.TimeoutError, asyncio.LimitOverrunError, ValueError) as e:
            log.info("control socket: request dropped: %s", e)
        finally:
            writer.close()


    def _among_workers(self, request: str) -> dict | None:
        """What another worker asks for an administrator's srvsvc call (server.activity):
        this worker's sessions, tree connects and open files; an open file of this worker
        closed; sessions ended. None: not such a request."""
        from smbring.server.activity import activity_record
        verb, _, rest = request.partition(" ")
        administration = self.server.administration
        if verb == "activity":
            return activity_record(administration.activity())
        if verb == "close-file":
            return {"closed": rest.strip().isdigit() and administration.close_file(int(rest))}
        if verb == "end-sessions":
            try:
                who = json.loads(rest)
                client, user = who.get("client"), who.get("user")
            except (ValueError, AttributeError):
                return {"error": "end-sessions: {\"client\": ..., \"user\": ...}"}
            if not all(v is None or isinstance(v, str) for v in (client, user)) or client is None and user is None:
                return {"error": "end-sessions: name a client, a user, or both"}
            return {"ended": administration.end_sessions(client, user, None)}
        return None

    def _act(self, verb: str, share: str) -> dict:
        answer: dict = {}
        if verb == "close-denied-share":
            # judged against the file as it is now, as smbd's close-denied-share reloads first
            failure = self.reload() if self.reload is not None else None
            if failure is not None:
                answer["reload_failed"] = failure   # the configuration in force judges then
        answer["closed"] = self.server.close_share(share, denied_only=verb == "close-denied-share")
        return answer


ACTIONS = ("close-share", "close-denied-share")
KNOWN = "status, " + ", ".join(f"{verb} NAME" for verb in ACTIONS)


def parse_action(request: str) -> tuple[str, str] | str | None:
    """(verb, share) of an action request; a str saying what is wrong with one; None for a
    request that is no action. A share's name is one word of printable characters (`*`: all)."""
    verb, _, share = request.partition(" ")
    if verb not in ACTIONS:
        return None if verb in ("status", "metrics") else f"unknown request {request[:40]!r} (known: {KNOWN})"
    share = share.strip()
    if not share or not share.isprintable() or len(share) > 80:
        return f"{verb}: name the share (or * for every share)"
    return verb, share


# -- smbring status -------------------------------------------------------------------------
def ask(path: str, request: str = "status", timeout: float = 10.0) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(request.encode() + b"\n")
        chunks = []
        while True:
            chunk = sock.recv(1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    return json.loads(b"".join(chunks))


def _table(rows: list[list[str]], head: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    line = lambda r: "  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip()
    return "\n".join([line(head), "-" * (sum(widths) + 2 * (len(widths) - 1))] + [line(r) for r in rows])


def render(status: dict) -> str:
    """The text `smbring status` prints: sessions, tree connects, open files, locks."""
    sessions, trees, opens, locks = [], [], [], []
    for c in status["connections"]:
        users = {s["id"]: s["user"] for s in c["sessions"]}
        if not c["sessions"]:
            sessions.append(["-", "(not logged on)", "-", c["client"], c["dialect"] or "-", "-", "-"])
        for s in c["sessions"]:
            sessions.append([str(s["id"]), s["user"] + (" (guest)" if s["guest"] and s["user"] != "guest" else ""),
                             _describe_account(s.get("unix")), c["client"], c["dialect"] or "-",
                             s["signing"] or "-", s["encryption"] or "-"])
            for t in s["trees"]:
                trees.append([t["share"], str(s["id"]), _describe_account(t.get("unix")), c["client"],
                              t["path"] or "-"])
        for o in c["opens"]:
            opens.append([users.get(o["session"], "?"), o["share"] or "-", o["name"], o["uses"],
                          o["shares"], o["access"],
                          f"LEASE({o['lease']['state']})" if o["lease"] else o["oplock"]])
            for lk in o["locks"]:
                locks.append([o["name"], lk["type"], str(lk["offset"]), str(lk["length"]), c["client"]])
    parts = [f"smbring (pid {status['pid']}){' stopping' if status['stopping'] else ''}: "
             f"shares {', '.join(status['shares'])}"]
    if "workers" in status:         # a supervisor's answer (smbring serve --workers N)
        parts.append(_table([[str(w["worker"]), str(w["pid"] or "-"), str(w.get("connections", "-")),
                              str(w["restarts"]), w.get("error", "")] for w in status["workers"]],
                            ["Worker", "Pid", "Connections", "Restarts", "Problem"]))
        for c in status["connections"]:     # the client column names the worker
            c["client"] = f"{c['client']} (worker {c['worker']})"
    parts.append(_table(sessions, ["Session", "User", "Unix user", "Client", "Dialect", "Signing",
                                   "Encryption"]) if sessions else "No sessions.")
    parts.append(_table(trees, ["Share", "Session", "Unix user", "Client", "Path"])
                 if trees else "No tree connects.")
    parts.append(_table(opens, ["User", "Share", "Name", "Uses", "Shares", "Access", "Oplock/lease"])
                 if opens else "No open files.")
    parts.append(_table(locks, ["Name", "Lock", "Offset", "Length", "Client"])
                 if locks else "No byte-range locks.")
    return "\n\n".join(parts)


def register(sub) -> None:
    p = sub.add_parser("status", help="what a running server holds: sessions, shares, open files, "
                                      "locks (like smbstatus)")
    p.add_argument("--json", action="store_true", help="print the server's answer as JSON")
    _server_arguments(p)
    p.set_defaults(func=run)
    p = sub.add_parser("control", help="act on a running server (like smbcontrol): end the tree "
                                       "connects to a share")
    p.add_argument("action", choices=ACTIONS,
                   help="close-share: end every tree connect to the share; close-denied-share: "
                        "reload the configuration and end those it no longer allows as they are")
    p.add_argument("share", help="the share's name, or * for every share")
    p.add_argument("--json", action="store_true", help="print the server's answer as JSON")
    _server_arguments(p)
    p.set_defaults(func=run_control)


def _server_arguments(p) -> None:
    p.add_argument("--control-socket", help=f"the server's control socket (default {default_path()})")
    p.add_argument("--config", help="smb.conf whose `control socket` to use")


def _ask_server(args, request: str) -> tuple[dict | None, int]:
    """The server's answer to `request`, or None and the exit status (the reason printed)."""
    path = args.control_socket
    if not path and args.config:
        from smbring.server.config import ConfigError, load
        try:
            path = load(args.config).options.get("control socket")
        except (OSError, ConfigError) as e:
            print(f"configuration: {e}", file=sys.stderr)
            return None, 2
    path = path or default_path()
    try:
        answer = ask(path, request)
    except FileNotFoundError:
        print(f"no server at {path} (is smbring serving? see --control-socket)", file=sys.stderr)
        return None, 1
    except ConnectionRefusedError:
        print(f"no server at {path}: the socket is left from one that has stopped", file=sys.stderr)
        return None, 1
    except PermissionError:
        print(f"{path}: permission denied (only root and the server's user may ask)", file=sys.stderr)
        return None, 1
    except (OSError, ValueError) as e:
        print(f"{path}: {e}", file=sys.stderr)
        return None, 1
    if "error" in answer:
        print(f"{path}: {answer['error']}", file=sys.stderr)
        return None, 1
    return answer, 0


def run(args) -> int:
    status, exit_status = _ask_server(args, "status")
    if status is None:
        return exit_status
    print(json.dumps(status, indent=2) if args.json else render(status))
    return 0


def run_control(args) -> int:
    request = f"{args.action} {args.share}"
    problem = parse_action(request)
    if isinstance(problem, str):
        print(problem, file=sys.stderr)
        return 2
    answer, exit_status = _ask_server(args, request)
    if answer is None:
        return exit_status
    if args.json:
        print(json.dumps(answer, indent=2))
    else:
        if "reload_failed" in answer:
            print(f"reload failed, the configuration in force judged: {answer['reload_failed']}")
        for t in answer["closed"]:
            where = f" (worker {t['worker']})" if "worker" in t else ""
            print(f"closed: share {t['share']}, user {t['user']} from {t['client']}{where}: {t['why']}")
        print(f"{len(answer['closed'])} tree connect(s) closed")
        for problem in answer.get("workers_failed", ()):
            print(f"worker {problem['worker']}: {problem['error']}", file=sys.stderr)
    return 1 if answer.get("workers_failed") else 0
