"""What an RPC interface is, and what its operations know of the server and the caller."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Protocol

from smbring.smb.rpc.pdu import Syntax
from smbring.smb.sids import NoUnixNames, UnixNames

# Windows error codes (WERROR) the operations return
WERR_OK = 0
WERR_ACCESS_DENIED = 5
WERR_INVALID_NAME = 123
WERR_INVALID_LEVEL = 124


@dataclass(frozen=True)
class ServerInfo:
    """The server as NetrServerGetInfo and NetrWkstaGetInfo describe it (smb.conf's `netbios
    name`, `server string`, `workgroup`), and `restrict anonymous`: at 1 or more, guests and
    anonymous callers may not list shares or read the server's information (as in Samba)."""

    name: str = "SMBRING"
    comment: str = "smbring"
    workgroup: str = "WORKGROUP"
    restrict_anonymous: int = 0


def listed_path(path: str) -> str:
    """A server path as srvsvc gives paths, as Samba does: on drive C:, with backslashes
    ("/srv/data" -> "C:\\srv\\data")."""
    return "C:" + path.replace("/", "\\")


@dataclass(frozen=True)
class SessionSeen:
    """A logged-on session as srvsvc's NetrSessionEnum lists it."""

    client: str                 # the client's address
    user: str
    guest: bool
    encrypted: bool
    seconds: int                # since its connection was made
    idle: int                   # seconds since its connection's last request
    opens: int
    dialect: str                # "SMB 3.1.1"


@dataclass(frozen=True)
class TreeSeen:
    """A tree connect as NetrConnectionEnum lists it."""

    id: int                     # unique among those listed
    session: SessionSeen
    share: str                  # its share's name ("IPC$" for the pipes')
    is_ipc: bool
    opens: int


@dataclass(frozen=True)
class FileSeen:
    """An open file or directory as NetrFileEnum lists it."""

    id: int                     # unique among the process's open files (a FileId is its client's)
    path: str                   # as srvsvc shows paths: "C:\\srv\\share\\dir\\file"
    user: str
    readable: bool
    writable: bool
    locks: int


@dataclass(frozen=True)
class Activity:
    """What the server holds now (this process's: with several workers, the caller's
    worker's), for the administrators' srvsvc calls."""

    sessions: tuple = ()
    trees: tuple = ()
    files: tuple = ()


class Administration(Protocol):
    """What the server lets an administrator's srvsvc calls see and do (the shell's:
    server.activity): this process's sessions, tree connects and open files; closing one
    open file (by FileSeen.id); ending sessions (of a client, of a user, or both), never
    `spare` (the caller's own).

    With several workers the other workers' are reached through the `*_everywhere` calls:
    each starts the asking and calls `done` once with the outcome over every worker (this
    one's included, those that did not answer in time left out), or returns None where
    this process is the whole server (the plain calls then say it all)."""

    def activity(self) -> Activity: ...

    def close_file(self, file_id: int) -> bool: ...

    def end_sessions(self, client: str | None, user: str | None, spare: object) -> int: ...

    def activity_everywhere(self, done: Callable[[Activity], None]) -> bool | None: ...

    def close_file_everywhere(self, file_id: int, done: Callable[[bool], None]) -> bool | None: ...

    def end_sessions_everywhere(self, client: str | None, user: str | None, spare: object,
                                done: Callable[[int], None]) -> bool | None: ...


@dataclass(frozen=True)
class Later:
    """An operation's answer that comes later (the other workers are asked first): `start`
    is called with `done`, which it calls once, on the event loop's thread, with the stub
    data of the answer. The pipe holds the call's answer, and takes no further PDU, until
    then (rpc.endpoint)."""

    start: Callable[[Callable[[bytes], None]], None]


MAX_HANDLES = 256      # context handles one pipe may hold open at once


class Handles:
    """The context handles (policy handles) open on one pipe: 20 bytes each, a zero type and
    16 random bytes, so that a client cannot guess another's (and a pipe knows only its
    own), each with what it grants. At most MAX_HANDLES at once."""

    def __init__(self, limit: int = MAX_HANDLES) -> None:
        self.limit = limit
        self._open: dict[bytes, int] = {}

    def open(self, granted: int) -> bytes | None:
        """A new handle, None when the pipe holds as many as it may."""
        if len(self._open) >= self.limit:
            return None
        handle = bytes(4) + os.urandom(16)
        self._open[handle] = granted
        return handle

    def granted(self, handle: bytes) -> int | None:
        """What the handle grants, None for a handle this pipe did not open (or closed)."""
        return self._open.get(handle)

    def close(self, handle: bytes) -> bool:
        return self._open.pop(handle, None) is not None


def _as_configured(share):
    return share


@dataclass(frozen=True)
class Caller:
    """What an operation knows of the call: the server's shares (in configuration order), the
    server's description, and who calls (a guest or anonymous session, or a user). One per
    pipe: `handles` are that pipe's.

    `view` gives a share as the caller sees it (its comment and path with the session's
    substitutions, %U and the like), or None for a share the caller may not see (`access
    based share enum`, where the caller may not connect to it). `unix_names` are the
    system's users and groups, for name lookups."""

    shares: tuple
    server: ServerInfo
    user: str = ""
    guest: bool = False
    view: Callable = _as_configured
    unix_names: UnixNames = field(default_factory=NoUnixNames)
    handles: Handles = field(default_factory=Handles)
    # the SMB session the pipe belongs to: where given, who calls is who it is *now* (a
    # re-authentication as someone else changes it for the pipes it has open, as for its
    # other requests), not who opened the pipe
    session: object = None
    # what the server holds and may do (Administration), for the calls only administrators
    # may make; None where the shell offers none (a connection on its own)
    administration: Administration | None = None

    def is_guest(self) -> bool:
        """Whether a guest or an anonymous logon calls (`restrict anonymous` refuses them)."""
        return self.session.guest if self.session is not None else self.guest

    def is_administrator(self) -> bool:
        """Whether the caller may list the server's sessions, tree connects and open files:
        a session acting as root, as Samba grants it to the holders of BUILTIN\\Administrators
        (root's token holds it). Never a guest."""
        session = self.session
        return (session is not None and not session.guest
                and getattr(session.identity, "uid", None) == 0)


@dataclass(frozen=True)
class Interface:
    """An RPC interface served on a pipe: its syntax and its operations by opnum. An operation
    takes the caller and the request's stub data and returns the response's; it raises
    ndr.NdrError when the stub cannot be read (the call faults)."""

    pipe: str                                  # e.g. "srvsvc" (the endpoint \PIPE\srvsvc)
    syntax: Syntax
    operations: dict[int, Callable[[Caller, bytes], bytes]]
