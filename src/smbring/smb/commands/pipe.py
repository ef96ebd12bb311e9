"""Named pipes on IPC$: srvsvc, wkssvc and lsarpc, each a DCE/RPC association (`smb.rpc`).

CREATE opens one (the name with or without `\\PIPE\\`, in any case; any other name is
OBJECT_NAME_NOT_FOUND, as Samba answers); WRITE hands the client's bytes to the association,
READ takes what it answered, FSCTL_PIPE_TRANSCEIVE does both; CLOSE ends it. As on Samba, a
pipe is a byte stream: a READ returns what is there up to its length (the rest stays for the
next READ), a READ with nothing there waits (STATUS_PENDING) until an answer is written, in the
order the READs came; a TRANSCEIVE whose answer does not fit says STATUS_BUFFER_OVERFLOW and
leaves the rest to READ. Once the association has ended (a malformed PDU, a bound broken),
writes and reads answer STATUS_PIPE_DISCONNECTED; READs still waiting when the pipe closes end
with STATUS_PIPE_BROKEN.

Bounds: `max open pipes` per connection (STATUS_INSUFFICIENT_RESOURCES), counted among `max
open files` too; the association's own (`rpc.endpoint`); waiting READs count among `max pending
requests`."""
from __future__ import annotations

import os
import struct
from typing import TYPE_CHECKING, Callable

from smbring.smb import share_access, wire
from smbring.smb.commands import tree as tree_command
from smbring.smb.errors import SMBError, in_request
from smbring.smb.rpc import lsarpc, srvsvc, wkssvc
from smbring.smb.rpc.endpoint import Endpoint
from smbring.smb.rpc.services import Caller
from smbring.smb.state import GoAsync, Pipe
from smbring.smb.wire import Header

if TYPE_CHECKING:
    from smbring.smb.connection import Connection

PIPES = {interface.pipe: interface for interface in (srvsvc.INTERFACE, wkssvc.INTERFACE, lsarpc.INTERFACE)}

FSCTL_PIPE_TRANSCEIVE = 0x0011C017
FSCTL_PIPE_WAIT = 0x00110018
STATUS_PIPE_DISCONNECTED = 0xC00000B0
STATUS_PIPE_BROKEN = 0xC000014B

ATTR_NORMAL = 0x80
PIPE_ALLOCATION = 4096                 # what Samba reports for a pipe
FILE_PIPE_MESSAGE_MODE, FILE_PIPE_QUEUE_OPERATION = 1, 0
FILE_PIPE_MESSAGE_TYPE, FILE_PIPE_FULL_DUPLEX, FILE_PIPE_CONNECTED_STATE, FILE_PIPE_CLIENT_END = 1, 2, 3, 0
PIPE_QUOTA = 4096
FILE_STANDARD_INFORMATION, FILE_PIPE_INFORMATION, FILE_PIPE_LOCAL_INFORMATION = 5, 23, 24


def pipe_name(name: str) -> str | None:
    """The service a CREATE names ("srvsvc", "\\PIPE\\srvsvc", "PIPE\\SrvSvc"), if served."""
    if name.startswith("\\"):
        name = name[1:]
    if name[:5].lower() == "pipe\\":
        name = name[5:]
    return name.lower() if name.lower() in PIPES else None


def open_pipe(c: Connection, hdr: Header, name: str):
    """CREATE on IPC$: the CREATE response's body and the pipe's FileId."""
    service = pipe_name(name)
    if service is None:
        raise SMBError(wire.STATUS_OBJECT_NAME_NOT_FOUND)
    # counted over the sessions this connection carries: another connection that merely
    # NEGOTIATEd the same ClientGuid must not use up this one's pipes
    if sum(s.pipes_open for s in c.sessions_here()) >= c.limits.max_open_pipes:
        raise SMBError(wire.STATUS_INSUFFICIENT_RESOURCES)
    session = c.sessions[hdr.session_id]
    caller = Caller(tuple(c.shares.values()), c.server_info, session.user, session.guest,
                    view=_share_view(c, session), unix_names=c.policy.unix_names, session=session,
                    administration=c.administration)
    number = c.next_id
    c.next_id += 1
    fid = os.urandom(8) + struct.pack("<Q", number)
    session.pipes_open += 1
    endpoint = Endpoint(PIPES[service], caller, assoc_group=number)
    p = Pipe(service, endpoint, fid=fid, tree=c.tree(hdr), session_id=hdr.session_id, tree_id=hdr.tree_id)
    # an answer that came later (the other workers asked first): the READs waiting get it
    endpoint.on_output = lambda: c.closed or _serve_readers(c, p)
    c.add_open(p)
    body = struct.pack("<HBBI", 89, 0, 0, wire.FILE_OPENED) + b"\0" * 32 + struct.pack(
        "<QQII", PIPE_ALLOCATION, 0, ATTR_NORMAL, 0) + fid + struct.pack("<II", 0, 0)
    return body, fid


def _share_view(c: Connection, session):
    """The shares as the session's listings show them (srvsvc): with the session's
    substitutions in their comments and paths, and without those marked `access based share
    enum` that the session may not connect to (the tree connect's own rules decide)."""
    def view(share):
        name = share.name.lower()
        seen, user, _guest = tree_command.seen_by(c, session, share, name)
        if seen is share_access.BAD_VALUE:
            return None if share.access_based_share_enum else share
        if share.access_based_share_enum and tree_command.refusal(c, session, seen, user) is not None:
            return None
        return seen
    return view


def h_close(c: Connection, hdr: Header, msg: bytes, rhdr: Header, chain):
    p = c.open_for(bytes(msg[72:88]), chain, hdr, kind=Pipe)
    c.close_open(p)
    return struct.pack("<HHI", 60, 0, 0) + b"\0" * 52, p.fid


def _read_body(data: bytes, _more: bool) -> tuple[int, bytes]:
    return wire.STATUS_SUCCESS, struct.pack("<HBBIII", 17, 80, 0, len(data), 0, 0) + data


def _transceive_body(ctl: int, fid: bytes) -> Callable[[bytes, bool], tuple[int, bytes]]:
    def body(data: bytes, more: bool) -> tuple[int, bytes]:
        status = wire.STATUS_BUFFER_OVERFLOW if more else wire.STATUS_SUCCESS
        return status, struct.pack("<HHI16sIIIIII", 49, 0, ctl, fid, 112, 0, 112, len(data), 0, 0) + data
    return body


def _answer_or_wait(c: Connection, p: Pipe, rhdr: Header, length: int, build):
    """What a READ or TRANSCEIVE answers now, or the wait for it (GoAsync)."""
    ep = p.endpoint
    if ep.pending() and not p.readers:
        data = ep.read(length)
        rhdr.status, body = build(data, ep.message_unread())
        return body, None
    if ep.disconnected and not p.readers:
        raise SMBError(STATUS_PIPE_DISCONNECTED)

    def start(areq) -> None:
        areq.close_status = STATUS_PIPE_BROKEN
        entry = (areq, length, build)
        p.readers.append(entry)
        p.waiting.append(areq)

        def cancelled() -> None:
            if entry in p.readers:
                p.readers.remove(entry)
            if areq in p.waiting:
                p.waiting.remove(areq)
        areq.on_cancel = cancelled
    raise GoAsync(start)


def _serve_readers(c: Connection, p: Pipe) -> None:
    """Answers the READs (and TRANSCEIVEs) waiting, in order, with what the pipe now holds."""
    ep = p.endpoint
    while p.readers and (ep.pending() or ep.disconnected):
        areq, length, build = p.readers.pop(0)
        if areq in p.waiting:
            p.waiting.remove(areq)
        if ep.pending():
            status, body = build(ep.read(length), ep.message_unread())
            c.complete_async(areq, status, body)
        else:
            c.complete_async(areq, STATUS_PIPE_DISCONNECTED)


def h_read(c: Connection, hdr: Header, msg: bytes, rhdr: Header, chain):
    length = struct.unpack_from("<I", msg, 68)[0]
    p = c.open_for(bytes(msg[80:96]), chain, hdr, kind=Pipe)
    if not length:
        return _read_body(b"", False)[1], None      # nothing asked: nothing to wait for
    return _answer_or_wait(c, p, rhdr, length, _read_body)


def h_write(c: Connection, hdr: Header, msg: bytes, rhdr: Header, chain):
    data_off, length = struct.unpack_from("<HI", msg, 66)
    p = c.open_for(bytes(msg[80:96]), chain, hdr, kind=Pipe)
    data = in_request(msg, data_off, length)
    if p.endpoint.disconnected:
        raise SMBError(STATUS_PIPE_DISCONNECTED)
    p.endpoint.write(data)
    _serve_readers(c, p)
    return struct.pack("<HHIIHH", 17, 0, length, 0, 0, 0), None


def h_ioctl(c: Connection, hdr: Header, msg: bytes, rhdr: Header, chain):
    """FSCTL_PIPE_TRANSCEIVE (a WRITE, then a READ of at most MaxOutputResponse) and
    FSCTL_PIPE_WAIT (a pipe served here is always there), on IPC$."""
    ctl = struct.unpack_from("<I", msg, 68)[0]
    fid = bytes(msg[72:88])
    in_off, in_len, _max_in, _out_off, _out_len, max_out = struct.unpack_from("<IIIIII", msg, 88)
    data = in_request(msg, in_off, in_len)
    if ctl == FSCTL_PIPE_WAIT:       # FSCTL_PIPE_WAIT_BUFFER (MS-FSCC 2.3.49): the name at 14
        name_len = struct.unpack_from("<I", data, 8)[0]
        if 14 + name_len > len(data):
            raise SMBError(wire.STATUS_INVALID_PARAMETER)
        if pipe_name(wire.from_utf16(data[14:14 + name_len])) is None:
            raise SMBError(wire.STATUS_OBJECT_NAME_NOT_FOUND)
        return struct.pack("<HHI16sIIIIII", 49, 0, ctl, fid, 112, 0, 112, 0, 0, 0), None
    p = c.open_for(fid, chain, hdr, kind=Pipe)
    if p.endpoint.disconnected:
        raise SMBError(STATUS_PIPE_DISCONNECTED)
    p.endpoint.write(data)
    _serve_readers(c, p)
    return _answer_or_wait(c, p, rhdr, max_out, _transceive_body(ctl, fid))


def h_query_info(c: Connection, hdr: Header, msg: bytes, rhdr: Header, chain):
    """FileStandardInformation as Samba answers it for a pipe (DeletePending set, as NPFS
    says), FilePipeInformation and FilePipeLocalInformation as Windows does; nothing else."""
    _size, info_type, klass, out_len = struct.unpack_from("<HBBI", msg, 64)
    p = c.open_for(bytes(msg[88:104]), chain, hdr, kind=Pipe)
    if info_type != wire.INFO_FILE:
        raise SMBError(wire.STATUS_NOT_SUPPORTED)
    if klass == FILE_STANDARD_INFORMATION:
        data = struct.pack("<QQIBBH", PIPE_ALLOCATION, 0, 1, 1, 0, 0)
    elif klass == FILE_PIPE_INFORMATION:
        data = struct.pack("<II", FILE_PIPE_MESSAGE_MODE, FILE_PIPE_QUEUE_OPERATION)
    elif klass == FILE_PIPE_LOCAL_INFORMATION:
        data = struct.pack("<10I", FILE_PIPE_MESSAGE_TYPE, FILE_PIPE_FULL_DUPLEX, 0xFFFFFFFF, 1, PIPE_QUOTA,
                           p.endpoint.pending(), PIPE_QUOTA, PIPE_QUOTA, FILE_PIPE_CONNECTED_STATE,
                           FILE_PIPE_CLIENT_END)
    else:
        raise SMBError(wire.STATUS_NOT_SUPPORTED)
    if len(data) > out_len:
        raise SMBError(wire.STATUS_INFO_LENGTH_MISMATCH)
    return struct.pack("<HHI", 9, 72, len(data)) + data, None
