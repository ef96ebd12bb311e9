"""Multichannel (MS-SMB2 3.2.5.3.2, 3.3.5.5): a session reached through several connections.

Samba keeps what a client's connections share in one `smbXsrv_client` per ClientGuid: the
session table and the open table. smbring does the same with `Client`: every SMB 3.x
connection that negotiates with the same ClientGuid (where `server multi channel support` is
on) works on one `Client`, so an open made through one channel is reachable through any other
channel of its session. A connection of SMB 2.x, or with multichannel off, has a `Client` of
its own, and nothing changes for it.

A session is usable on a connection only where it has a `Channel` there: the connection that
logged it on, and each connection that bound to it since (SESSION_SETUP with
SMB2_SESSION_FLAG_BINDING). Each channel signs with its own key (SMB 3.1.1 derives it from that
connection's preauthentication hash; 3.0 and 3.0.2 derive the same key as the first channel's);
the encryption keys are the session's. When a connection ends, its channels go; a session
whose last channel went is logged off, with what it opened.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from smbring.smb import security, wire
from smbring.smb.errors import SMBError

if TYPE_CHECKING:
    from smbring.smb.connection import Connection
    from smbring.smb.state import Session


@dataclass(eq=False)
class Channel:
    """A session as one connection reaches it."""

    signing_key: bytes = b""            # empty until the channel's logon or binding completes
    auth: object = None                 # the binding's acceptor while it is in progress
    preauth: security.PreauthIntegrity | None = None    # the binding's hash (SMB 3.1.1)

    @property
    def bound(self) -> bool:
        return bool(self.signing_key)

    @property
    def in_binding(self) -> bool:
        """A binding is under way: until it completes, the connection reaches nothing of the
        session (its requests, sealed frames and breaks), since the binding's first leg is
        signed with the session's key and proves nothing about who sent it."""
        return self.auth is not None


@dataclass(eq=False)
class Client:
    """What the connections of one client share (Samba's smbXsrv_client): sessions by id,
    opens by FileId, the FileSystems their trees use, and the counters the per-client limits
    are checked against."""

    guid: bytes = b""
    connections: list = field(default_factory=list)     # the Connections working on it
    sessions: dict = field(default_factory=dict)        # session id -> Session
    opens: dict = field(default_factory=dict)           # FileId -> Open or Pipe
    fs: dict = field(default_factory=dict)              # (share path, identity) -> FileSystem
    next_id: int = 1                                    # tree, FileId and AsyncId numbers
    # sessions that a failed re-authentication ended: id -> {id(Connection): (algorithm, key)}
    ended: dict = field(default_factory=dict)

    def remember_ended(self, session: "Session") -> None:
        """A session of this client ends because its re-authentication failed, while the
        client may still be using it on its channels: its keys are kept a while (the last
        ENDED_SESSIONS_KEPT such sessions), so that a request still naming it, signed with its
        key, is answered USER_SESSION_DELETED signed, as smbd answers it (a client that signs
        takes an unsigned answer for an attack: smbXcli reports ACCESS_DENIED and drops the
        connection). Call it before the session's channels are cleared."""
        keys = {id(conn): signer_on(session, conn) for conn in session.channels}
        keys = {conn: signer for conn, signer in keys.items() if signer[1]}
        if not keys:
            return
        self.ended[session.id] = keys
        while len(self.ended) > ENDED_SESSIONS_KEPT:
            del self.ended[next(iter(self.ended))]

    def deleted(self, conn: "Connection", hdr, msg) -> SMBError:
        """USER_SESSION_DELETED for a request naming a session that `conn` does not carry:
        signed where the session ended under this client and the request's signature is its
        key's on `conn` (`remember_ended`), never otherwise."""
        keys = self.ended.get(hdr.session_id) if hdr.flags & wire.FLAGS_SIGNED else None
        signer = keys.get(id(conn)) if keys else None
        if signer is not None and not security.verify(*signer, msg):
            signer = None
        return SessionDeleted(signer)

    def connection_of(self, areq) -> "Connection | None":
        """The connection an asynchronous request waits on (its answer goes there)."""
        return next((c for c in self.connections if c.async_requests.get(areq.async_id) is areq), None)


ENDED_SESSIONS_KEPT = 16


class SessionDeleted(SMBError):
    """USER_SESSION_DELETED, with the (algorithm, key) that signs the answer, if any."""

    def __init__(self, signer: tuple | None = None):
        super().__init__(wire.STATUS_USER_SESSION_DELETED)
        self.signer = signer


def signing_key_on(session: "Session", conn: "Connection") -> bytes:
    """The key that signs and verifies the session's messages on `conn`: its channel's there,
    else the session's (a binding request is signed with the session's key, MS-SMB2 3.3.5.5)."""
    channel = session.channels.get(conn)
    if channel is not None and channel.signing_key:
        return channel.signing_key
    return session.signing_key


def signer_on(session: "Session", conn: "Connection") -> tuple[int, bytes]:
    """The signing algorithm and key of the session's messages on `conn`: its channel's key
    there, with the connection's algorithm; where the connection has no bound channel (a
    binding under way, or a request on the wrong connection), the session's own key with the
    algorithm of the connection that logged it on, which a client signs a binding with
    (MS-SMB2 3.2.4.1.1, 3.3.5.5; smbd verifies it so)."""
    channel = session.channels.get(conn)
    if channel is not None and channel.signing_key:
        return conn.sign_algorithm(), channel.signing_key
    if session.client is None:      # a Session put straight into a table (tests): this one's
        return conn.sign_algorithm(), session.signing_key
    return session.signing_algorithm, session.signing_key


RSS_CAPABLE = 0x1


@dataclass(frozen=True)
class NetworkInterface:
    """An address the server listens on, as FSCTL_QUERY_NETWORK_INTERFACE_INFO lists it
    (MS-SMB2 2.2.32.5): a client opens further channels to these. The shell finds them."""

    index: int                  # the interface's index (if_nametoindex)
    address: str                # IPv4 or IPv6, without a scope
    speed: int = 1_000_000_000  # bits per second (Samba's default when the link says nothing)
    capability: int = 0         # RSS_CAPABLE where the interface has several receive queues
