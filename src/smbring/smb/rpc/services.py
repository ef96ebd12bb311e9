"""What an RPC interface is, and what its operations know of the server and the caller."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from smbring.smb.rpc.pdu import Syntax

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


@dataclass(frozen=True)
class Caller:
    """What an operation knows of the call: the server's shares (in configuration order), the
    server's description, and who calls (a guest or anonymous session, or a user)."""

    shares: tuple
    server: ServerInfo
    user: str = ""
    guest: bool = False


@dataclass(frozen=True)
class Interface:
    """An RPC interface served on a pipe: its syntax and its operations by opnum. An operation
    takes the caller and the request's stub data and returns the response's; it raises
    ndr.NdrError when the stub cannot be read (the call faults)."""

    pipe: str                                  # e.g. "srvsvc" (the endpoint \PIPE\srvsvc)
    syntax: Syntax
    operations: dict[int, Callable[[Caller, bytes], bytes]]
