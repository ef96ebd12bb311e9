"""Where oplock and lease break notifications go, and what happens when one is not delivered
(MS-SMB2 3.3.4.6, 3.3.4.7; Samba's smbXsrv_pending_break).

A break belongs to a client, not to one of its connections: an oplock break may go on any
channel of the open's session, a lease break on any connection of the client (by ClientGuid)
that carries the open's session or another session of the open's account (a ClientGuid is sent
in the clear and is no credential: another user's connection naming it gets nothing of the
user's leases, `acts_for`). It goes on the oldest one that qualifies (Windows and Samba alike). The shell then watches
that the client's TCP stack acknowledges the message's bytes (`Send.delivered`): where it
does not within a few retransmission timeouts, that connection is taken as lost (the shell
closes it) and the break is sent again on the next connection that qualifies, as MS-SMB2
asks and Samba does by default. With `smb2 disable oplock break retry` an oplock break goes
on the newest channel of the session only, and is not sent again (what Windows servers do);
lease breaks are always sent again.

Nothing here waits on its own: a break that reaches no connection is dropped, and the
holder's break timeout (`oplocks`) answers for it. A pending break lives as long as the
shell's watch of one send (a few seconds), and lists at most the client's connections.

A test hook, as in Samba: with `smbd:FSCTL_SMBTORTURE = yes`, FSCTL_SMBTORTURE_FORCE_UNACKED_TIMEOUT
(sent by smbtorture with no session) makes the connection it arrives on count every break as
not acknowledged, so that tests can lose a channel without a firewall. Off by default; it
changes how the server treats only the connection that asks.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from smbring.smb import wire
from smbring.smb.effects import Send
from smbring.smb.wire import Header

if TYPE_CHECKING:
    from smbring.smb.channels import Client
    from smbring.smb.connection import Connection

# FSCTL_SMBTORTURE | FSCTL_ACCESS_WRITE | 0x0000 | FSCTL_METHOD_NEITHER (Samba's smb_constants.h)
FSCTL_SMBTORTURE_FORCE_UNACKED_TIMEOUT = 0x83848003


@dataclass(eq=False)
class PendingBreak:
    client: "Client"
    body: bytes
    session_id: int = 0             # the open's session: where it must go (0: any connection)
    user: tuple | None = None       # its user (`acts_for`): a lease break may go to their other sessions
    channels_of_session: bool = False   # an oplock break: only the session's channels
    seal: bool = False              # the session encrypts: sealed with its keys
    retry: bool = True              # sent again on the next connection when one is lost
    wanted: Callable[[], bool] = lambda: True   # whether the break is still to be told
    failed: list = field(default_factory=list)    # connections it was not delivered on


def send(client: "Client", body: bytes, session, *, oplock: bool, retry: bool,
         wanted: Callable[[], bool], share_encrypts: bool = False, session_id: int = 0,
         owner: str = "") -> bool:
    """Sends a break (its body) for an open of `session` (a Session, or None when it is
    gone: then `session_id` was its id, and `owner` the `Session.owner` its durable record
    names, empty for none); False when no connection can carry it. `wanted()`: whether it is
    still worth sending again (not once the break is answered, timed out, or its open closed:
    a client that has just closed its connections is not sent what no longer matters). Sealed
    where the session encrypts, or the open's share does (`share_encrypts`, MS-SMB2
    3.3.4.6/3.3.4.7)."""
    if session is None:
        # nobody to seal it for, and only the open's own user may hear of its lease
        if share_encrypts or not owner:
            return False
        pb = PendingBreak(client, body, session_id, user=("owner", owner),
                          channels_of_session=oplock, retry=retry or not oplock, wanted=wanted)
        return _submit(pb)
    seal = bool((session.encrypt or share_encrypts) and session.encrypt_key)
    pb = PendingBreak(client, body, session.id, user=acts_for(session),
                      channels_of_session=oplock or seal, seal=seal, retry=retry or not oplock,
                      wanted=wanted)
    return _submit(pb)


def _carries(conn: "Connection", pb: PendingBreak) -> bool:
    if conn.closed or conn in pb.failed:
        return False
    if not pb.channels_of_session:
        # a lease break: a connection of the client that carries the open's session, or a
        # logon of the same user (a connection that only NEGOTIATEd the ClientGuid, which is
        # no secret, or logged on as another user or anonymously, proves nothing of being
        # that client); an anonymous session's lease (user None: nobody's) goes to that
        # session only, and where the open's session is gone, to a logon of its own user
        return any(s.valid and (s.id == pb.session_id or pb.user is not None and acts_for(s) == pb.user)
                   for s in conn.sessions_here())
    s = conn.sessions.get(pb.session_id)
    channel = s.channels.get(conn) if s is not None else None
    # a channel whose logon or binding is complete, a guest's (keyless) too
    return channel is not None and not channel.in_binding and s.valid


def acts_for(session) -> tuple | None:
    """Who a session is, as far as its client's shared state (leases) is concerned: the
    account the server resolved at its logon (`Session.owner`: a Unix account's uid, or the
    password file's account), however the client spelled it (another case, a domain, an
    alias of the username map), or the guest (all guests are one account); None for an
    anonymous logon, which is nobody's, and for a session not yet logged on."""
    if session.guest:
        return None if session.user == "anonymous" else ("guest",)
    return ("owner", session.owner) if session.owner else None


def _submit(pb: PendingBreak) -> bool:
    candidates = [conn for conn in pb.client.connections if _carries(conn, pb)]
    if not candidates or (pb.failed and not pb.retry):
        return False
    conn = candidates[0] if pb.retry else candidates[-1]
    message = bytearray(Header(command=wire.OPLOCK_BREAK, flags=wire.FLAGS_SERVER_TO_REDIR,
                               message_id=0xFFFFFFFFFFFFFFFF, credits=0).pack()) + pb.body
    s = conn.sessions.get(pb.session_id) if pb.seal else None
    send = conn._sealed(s, message) if s is not None else Send(message)
    send.delivered = lambda ok: _delivered(pb, conn, ok)
    conn.outbox.append(send)
    if conn.on_output is not None:
        conn.on_output()
    return True


def _delivered(pb: PendingBreak, conn: "Connection", ok: bool) -> None:
    """The shell's word on one send: acknowledged by the client's TCP stack, or not (the
    shell closes that connection), in which case the break goes on to the next one."""
    if ok or not pb.wanted():
        return
    pb.failed.append(conn)
    _submit(pb)


def force_unacked_timeout(conn: "Connection", hdr: Header, msg) -> tuple[int, bytes] | None:
    """Samba's smbtorture hook (see above) for an IOCTL that may come without a session: the
    status and body to answer it, or None where it is not that control (or the hook is off)."""
    if hdr.command != wire.IOCTL or not conn.policy.smbtorture_fsctl or len(msg) < 64 + 56:
        return None
    ctl = struct.unpack_from("<I", msg, 68)[0]
    if ctl != FSCTL_SMBTORTURE_FORCE_UNACKED_TIMEOUT:
        return None
    if struct.unpack_from("<I", msg, 64 + 28)[0]:      # InputCount: it takes no input
        return wire.STATUS_INVALID_PARAMETER, wire.error_body()
    conn.force_unacked_timeout = True
    # an IOCTL response with no input or output (MS-SMB2 2.2.32)
    return wire.STATUS_SUCCESS, struct.pack("<HHI16sIIIIII", 49, 0, ctl, bytes(msg[72:88]),
                                            112, 0, 112, 0, 0, 0)
