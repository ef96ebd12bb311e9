"""OPLOCK_BREAK from the client: the acknowledgement of an oplock break (MS-SMB2 3.3.5.22.1)
or of a lease break (3.3.5.22.2), told apart by their StructureSize (24, 36), with Samba's
answers."""
from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from smbring.smb import leasing, wire
from smbring.smb.breaks import acts_for
from smbring.smb.errors import SMBError
from smbring.smb.oplocks import LEVEL_II, LEVEL_NONE
from smbring.smb.wire import Header

if TYPE_CHECKING:
    from smbring.smb.connection import Connection


def h_oplock_break(c: Connection, hdr: Header, msg: bytes, rhdr: Header, chain):
    if struct.unpack_from("<H", msg, 64)[0] == leasing.ACK_SIZE:
        return lease_break_ack(c, hdr, msg)
    level = msg[66]
    # an open of this session and tree connect (else FILE_CLOSED), to which a break was sent
    # and not yet answered (else INVALID_OPLOCK_PROTOCOL: a level II break to none expects
    # no answer), acknowledged to none or level II (else INVALID_PARAMETER)
    o = c.open_for(bytes(msg[72:88]), chain, hdr)
    if not c.state.oplocks.breaking(o):
        raise SMBError(wire.STATUS_INVALID_OPLOCK_PROTOCOL)
    if level not in (LEVEL_NONE, LEVEL_II):
        raise SMBError(wire.STATUS_INVALID_PARAMETER)
    kept = c.state.oplocks.acknowledge(o, level)
    return struct.pack("<HBBI", 24, kept, 0, 0) + o.fid, None


def lease_break_ack(c: Connection, hdr: Header, msg: bytes):
    """A lease break acknowledgement: a lease of this client (by ClientGuid: any of its
    connections may answer) acknowledged by a session of one of its opens' users (else
    OBJECT_NAME_NOT_FOUND, whoever else knows the key: a ClientGuid is sent in the clear, so
    another user's connection may name it), being broken (else UNSUCCESSFUL: nothing to
    answer, or answered already, or too late), to the state asked for or less (else
    REQUEST_NOT_ACCEPTED)."""
    if c.dialect < wire.SMB210 or len(msg) < 64 + leasing.ACK_SIZE:
        raise SMBError(wire.STATUS_INVALID_PARAMETER)     # no leases before SMB 2.1
    key = bytes(msg[72:88])
    state = struct.unpack_from("<I", msg, 88)[0]
    oplocks = c.state.oplocks
    lease = oplocks.lease(c.client_guid, key)
    if lease is None or not held_by_user_of(c, lease, hdr.session_id):
        raise SMBError(wire.STATUS_OBJECT_NAME_NOT_FOUND)
    if not lease.breaking:
        raise SMBError(wire.STATUS_UNSUCCESSFUL)
    if state & ~lease.breaking_to_requested:
        raise SMBError(wire.STATUS_REQUEST_NOT_ACCEPTED)
    oplocks.acknowledge_lease(lease, state)
    return leasing.ack_response(key, state), None


def held_by_user_of(c: Connection, lease, session_id: int) -> bool:
    """Whether the session (valid on this connection: checked before the handler) is one of
    the lease's opens' sessions, or of the same user as one of them (`breaks.acts_for`). With
    several workers, the opens of the lease held in other workers (whose sessions are not
    known here) vouch for nobody: the client's connections are served by one worker."""
    sessions = c.state.sessions
    acker = c.sessions.get(session_id)
    who = acts_for(acker) if acker is not None else None
    for h in lease.holders:
        sid = getattr(h.open, "session_id", None)
        if sid is None:
            continue
        if sid == session_id:
            return True
        holder = sessions.get(sid)
        if who is not None and holder is not None and acts_for(holder) == who:
            return True
    return False


def may_join_lease(c: Connection, key: bytes, session_id: int) -> bool:
    """Whether a CREATE of the session may hold the client's lease `key` (MS-SMB2 3.3.5.9.8):
    one whose opens include one of its user's (live, or detached waiting for a reconnect) or
    one of a session on this very connection (a client machine whose users' sessions share
    its connection, as a multi-user mount does, keeps one cache per file). A ClientGuid is
    sent in the clear: another user's connection that names it and the key must not share
    the lease (his open would keep its caching beside hers unbroken, and vouch for his
    acknowledgements of its breaks), so his open gets no lease, and breaks hers as another
    client's open would. The opens of other workers (whose sessions are not known here) are
    not judged: a lease held only there is joined, as before."""
    lease = c.state.oplocks.lease(c.client_guid, key)
    if lease is None:
        return True
    acker = c.sessions.get(session_id)
    who = acts_for(acker) if acker is not None else None
    sessions, durable = c.state.sessions, c.state.durable
    judged = False
    for h in lease.holders:
        sid = getattr(h.open, "session_id", None)
        if sid is None:
            continue            # another worker's open
        judged = True
        if sid == session_id:
            return True
        holder = sessions.get(sid)
        if holder is not None:
            if c.reaches(holder) or (who is not None and acts_for(holder) == who):
                return True
            continue
        d = durable.of(h.open)          # detached: its user is the durable open's
        if who is not None and d is not None and d.user and ("owner", d.user) == who:
            return True
    return not judged
