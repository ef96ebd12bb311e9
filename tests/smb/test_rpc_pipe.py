"""Named pipes on IPC$ through the sans-I/O connection: CREATE by name, a pipe's FileId bound
to its session and tree, WRITE/READ and FSCTL_PIPE_TRANSCEIVE carrying DCE/RPC PDUs, a READ
waiting for data (as Samba: STATUS_PENDING until an answer is written), QUERY_INFO as Windows
and Samba answer for pipes, the commands a pipe does not serve, and the bounds."""
import struct

import pytest
from rpc_client import (
    FSCTL_PIPE_TRANSCEIVE,
    PipeClient,
    bind_pdu,
    fault_status,
    ptype,
    request_pdu,
    rpcrt,
    server_get_info,
    split_pdus,
)
from sansio_client import buffer
from smbcore import (
    SHORT_BODY,
    change_notify_body,
    close_body,
    compound,
    create_body,
    flush_body,
    ioctl_body,
    lock_body,
    query_directory_body,
    query_info_body,
    read_body,
    set_info_body,
    write_body,
)

from smbring.smb import wire
from smbring.smb.commands.ioctl import FSCTL_CREATE_OR_GET_OBJECT_ID
from smbring.smb.commands.pipe import FSCTL_PIPE_WAIT, STATUS_PIPE_BROKEN, STATUS_PIPE_DISCONNECTED
from smbring.smb.limits import Limits
from smbring.smb.rpc import pdu
from smbring.smb.state import Session

STATUS_NOT_IMPLEMENTED = wire.STATUS_NOT_IMPLEMENTED


@pytest.fixture
def client(share):
    (share / "f").write_bytes(b"file")
    c = PipeClient(share)
    yield c
    c.conn.close_all()


@pytest.mark.parametrize("name", ["srvsvc", "SRVSVC", "\\PIPE\\srvsvc", "PIPE\\srvsvc", "\\pipe\\SrvSvc",
                                  "\\srvsvc", "wkssvc", "\\PIPE\\WKSSVC"])
def test_a_served_pipe_opens_by_name(client, name):
    status, out = client.request(wire.CREATE, create_body(name, 0x0012019F, wire.FILE_OPEN, 0), tree_id=client.ipc)
    assert status == 0
    action, alloc, eof, attrs = struct.unpack_from("<I", out, 4)[0], *struct.unpack_from("<QQI", out, 40)
    assert (action, alloc, eof, attrs) == (wire.FILE_OPENED, 4096, 0, 0x80)     # as Samba answers


@pytest.mark.parametrize("name", ["netlogon", "samr", "spoolss", "srvsvc\\x", "\\PIPE\\", "", "PIPE\\..\\srvsvc",
                                  "..\\srvsvc", "srvsvc:stream", "\\PIPE\\PIPE\\srvsvc", "srvsvc ", "f"])
def test_other_names_are_not_found(client, name):
    assert client.open_pipe(name)[0] == wire.STATUS_OBJECT_NAME_NOT_FOUND


def test_a_pipe_name_on_a_disk_share_is_a_file(client):
    assert client.create("srvsvc", disposition=wire.FILE_OPEN)[0] == wire.STATUS_OBJECT_NAME_NOT_FOUND


def test_a_pipe_is_reached_only_through_its_session_and_tree(client):
    fid = client.pipe()
    assert client.pipe_write(fid, bind_pdu()) == 0
    # the disk share's tree, another IPC$ tree, another session: closed, as far as they can tell
    assert client.request(wire.READ, read_body(fid, 100))[0] == wire.STATUS_FILE_CLOSED
    status, other_ipc, _ = client.tree_connect("\\\\x\\IPC$")
    assert client.request(wire.READ, read_body(fid, 100), tree_id=other_ipc)[0] == wire.STATUS_FILE_CLOSED
    client.conn.sessions[2] = Session(id=2, valid=True)
    status, ipc2, _ = client.tree_connect("\\\\x\\IPC$", session_id=2)
    assert status == 0
    assert client.request(wire.READ, read_body(fid, 100), session_id=2, tree_id=ipc2)[0] == wire.STATUS_FILE_CLOSED
    assert client.request(wire.IOCTL, ioctl_body(fid, FSCTL_PIPE_TRANSCEIVE, bind_pdu()), session_id=2,
                          tree_id=ipc2)[0] == wire.STATUS_FILE_CLOSED
    # and its own still answers
    status, data = client.pipe_read(fid)
    assert status == 0 and ptype(data) == rpcrt.MSRPC_BINDACK


def test_a_file_is_not_reached_through_ipc(client):
    fid = client.open("f")
    assert client.request(wire.READ, read_body(fid, 4), tree_id=client.ipc)[0] == wire.STATUS_FILE_CLOSED
    assert client.request(wire.WRITE, write_body(fid, b"x"), tree_id=client.ipc)[0] == wire.STATUS_FILE_CLOSED


def test_write_then_read_carries_the_bind(client):
    fid = client.pipe()
    assert client.pipe_write(fid, bind_pdu()) == 0
    status, data = client.pipe_read(fid)
    assert status == 0 and ptype(data) == rpcrt.MSRPC_BINDACK


def test_a_short_read_leaves_the_rest_for_the_next(client):
    fid = client.pipe()
    client.pipe_write(fid, bind_pdu())
    first = client.pipe_read(fid, 10)
    rest = client.pipe_read(fid, 1000)
    assert first[0] == rest[0] == 0 and len(first[1]) == 10
    assert ptype(first[1] + rest[1]) == rpcrt.MSRPC_BINDACK and len(split_pdus(first[1] + rest[1])) == 1


def test_a_zero_length_read_answers_at_once(client):
    fid = client.pipe()
    assert client.pipe_read(fid, 0) == (0, b"")


def pending_read(client, fid, length=65536):
    [(header, _)] = client.exchange(client.message(wire.READ, read_body(fid, length), tree_id=client.ipc))
    assert header.status == wire.STATUS_PENDING and header.flags & wire.FLAGS_ASYNC
    return header


def late(answers, interim):
    """(status, data) of the late answer to `interim` among answers, or None."""
    found = [(h, b) for h, b in answers if h.message_id == interim.message_id]
    if not found:
        return None
    [(header, body)] = found
    assert header.async_id == interim.async_id and header.flags & wire.FLAGS_ASYNC
    return header.status, (buffer(body, 2, "<BxI") if header.status == 0 else b"")


def test_a_read_with_nothing_to_read_waits_for_the_answer(client):
    fid = client.pipe()
    interim = pending_read(client, fid)
    answers = client.exchange(client.message(wire.WRITE, write_body(fid, bind_pdu()), tree_id=client.ipc))
    status, data = late(answers, interim)
    assert status == 0 and ptype(data) == rpcrt.MSRPC_BINDACK
    assert [h.status for h, _ in answers if h.command == wire.WRITE] == [0]


def test_waiting_reads_are_answered_in_order(client):
    fid = client.pipe()
    first, second = pending_read(client, fid, 10), pending_read(client, fid)
    answers = client.exchange(client.message(wire.WRITE, write_body(fid, bind_pdu()), tree_id=client.ipc))
    (s1, d1), (s2, d2) = late(answers, first), late(answers, second)
    assert s1 == s2 == 0 and len(d1) == 10 and ptype(d1 + d2) == rpcrt.MSRPC_BINDACK


def test_a_write_that_answers_nothing_leaves_the_read_waiting(client):
    fid = client.pipe()
    interim = pending_read(client, fid)
    answers = client.exchange(client.message(wire.WRITE, write_body(fid, bind_pdu()[:10]), tree_id=client.ipc))
    assert late(answers, interim) is None
    answers = client.exchange(client.message(wire.WRITE, write_body(fid, bind_pdu()[10:]), tree_id=client.ipc))
    assert late(answers, interim)[0] == 0


def test_cancel_ends_a_waiting_read(client):
    fid = client.pipe()
    interim = pending_read(client, fid)
    answers = client.exchange(client.message(wire.CANCEL, SHORT_BODY, flags=wire.FLAGS_ASYNC,
                                             async_id=interim.async_id))
    assert late(answers, interim) == (wire.STATUS_CANCELLED, b"")
    assert client.pipe_write(fid, bind_pdu()) == 0
    assert ptype(client.pipe_read(fid)[1]) == rpcrt.MSRPC_BINDACK      # the answer is still there


@pytest.mark.parametrize("how", ["close", "tree disconnect", "logoff"])
def test_closing_the_pipe_ends_a_waiting_read_with_pipe_broken(client, how):
    fid = client.pipe()
    interim = pending_read(client, fid)
    if how == "close":
        answers = client.exchange(client.message(wire.CLOSE, close_body(fid), tree_id=client.ipc))
    elif how == "tree disconnect":
        answers = client.exchange(client.message(wire.TREE_DISCONNECT, SHORT_BODY, tree_id=client.ipc))
    else:
        answers = client.exchange(client.message(wire.LOGOFF, SHORT_BODY))
    assert late(answers, interim) == (STATUS_PIPE_BROKEN, b"")
    assert fid not in client.conn.opens
    assert all(s.pipes_open == 0 for s in client.conn.sessions.values())


def test_waiting_reads_are_bounded_by_max_pending_requests(share):
    c = PipeClient(share, limits=Limits(max_pending_requests=1))
    fid = c.pipe()
    pending_read(c, fid)
    assert c.request(wire.READ, read_body(fid, 100), tree_id=c.ipc)[0] == wire.STATUS_INSUFFICIENT_RESOURCES
    c.conn.close_all()


def test_a_disconnect_with_a_waiting_read_ends_cleanly(client):
    fid = client.pipe()
    pending_read(client, fid)
    client.conn.close_all()
    assert not client.conn.opens


def test_transceive_writes_and_reads(client):
    fid = client.pipe()
    status, out = client.transceive(fid, bind_pdu())
    assert status == 0 and ptype(out) == rpcrt.MSRPC_BINDACK


def test_a_transceive_answer_larger_than_its_buffer_overflows_and_the_rest_is_read(client):
    fid = client.pipe()
    status, out = client.transceive(fid, bind_pdu(), max_output=20)
    assert status == wire.STATUS_BUFFER_OVERFLOW and len(out) == 20
    status, rest = client.pipe_read(fid)
    assert status == 0 and len(split_pdus(out + rest)) == 1 and ptype(out) == rpcrt.MSRPC_BINDACK


def test_a_transceive_without_an_answer_waits(client):
    fid = client.pipe()
    half = ioctl_body(fid, FSCTL_PIPE_TRANSCEIVE, bind_pdu()[:20])
    [(interim, _)] = client.exchange(client.message(wire.IOCTL, half, tree_id=client.ipc))
    assert interim.status == wire.STATUS_PENDING
    answers = client.exchange(client.message(wire.WRITE, write_body(fid, bind_pdu()[20:]), tree_id=client.ipc))
    [(header, body)] = [(h, b) for h, b in answers if h.message_id == interim.message_id]
    assert header.status == 0 and ptype(buffer(body, 32, "<II")) == rpcrt.MSRPC_BINDACK


def test_a_related_compound_create_transceive_close(client):
    previous = b"\xff" * 16
    frame = compound([
        client.message(wire.CREATE, create_body("srvsvc", 0x0012019F, wire.FILE_OPEN, 0), tree_id=client.ipc),
        client.message(wire.IOCTL, ioctl_body(previous, FSCTL_PIPE_TRANSCEIVE, bind_pdu()), tree_id=client.ipc),
        client.message(wire.CLOSE, close_body(previous), tree_id=client.ipc),
    ], related=True)
    answers = client.exchange(frame)
    assert [h.status for h, _ in answers] == [0, 0, 0]
    assert ptype(buffer(answers[1][1], 32, "<II")) == rpcrt.MSRPC_BINDACK
    assert not client.conn.opens


def test_after_the_association_ends_the_pipe_is_disconnected(client):
    fid = client.pipe()
    assert client.pipe_write(fid, request_pdu(21, server_get_info(100))) == 0    # no BIND first
    status, data = client.pipe_read(fid)
    assert status == 0 and ptype(data) == rpcrt.MSRPC_BINDNAK                     # what it answered
    assert client.pipe_write(fid, bind_pdu()) == STATUS_PIPE_DISCONNECTED
    assert client.pipe_read(fid)[0] == STATUS_PIPE_DISCONNECTED
    assert client.transceive(fid, bind_pdu())[0] == STATUS_PIPE_DISCONNECTED
    assert client.request(wire.CLOSE, close_body(fid), tree_id=client.ipc)[0] == 0


def test_a_waiting_read_sees_the_fault_that_ends_the_association(client):
    fid = client.bound()
    interim = pending_read(client, fid)
    bad = bytearray(request_pdu(21, server_get_info(100), call_id=3))
    struct.pack_into("<H", bad, 8, 5000)                         # a fragment over the 4280 negotiated
    bad += b"\0" * (5000 - len(bad))
    answers = client.exchange(client.message(wire.WRITE, write_body(fid, bytes(bad)), tree_id=client.ipc))
    status, data = late(answers, interim)
    assert status == 0 and fault_status(data) == pdu.NCA_S_PROTO_ERROR
    assert client.pipe_read(fid)[0] == STATUS_PIPE_DISCONNECTED


def bind_ack_of(client) -> bytes:
    """A BIND_ACK as another pipe answers the same BIND."""
    return client.transceive(client.pipe(), bind_pdu())[1]


def test_query_info_on_a_pipe(client):
    fid = client.pipe()

    def query(klass, out_len=4096):
        body = query_info_body(fid, wire.INFO_FILE, klass, out_len)
        return client.request(wire.QUERY_INFO, body, tree_id=client.ipc)
    status, body = query(5)
    assert status == 0
    assert struct.unpack("<QQIBB", buffer(body)[:22]) == (4096, 0, 1, 1, 0)       # as Samba answers
    status, body = query(23)
    assert status == 0 and struct.unpack("<II", buffer(body)) == (1, 0)           # message mode, queued
    client.pipe_write(fid, bind_pdu())
    status, body = query(24)
    pipe_type, _config, _max, _current, _in_quota, available = struct.unpack("<10I", buffer(body))[:6]
    assert status == 0 and pipe_type == 1 and available == len(bind_ack_of(client))      # message type
    assert query(4)[0] == wire.STATUS_NOT_SUPPORTED                                # basic: as Samba
    assert query(5, out_len=8)[0] == wire.STATUS_INFO_LENGTH_MISMATCH
    for info_type in (wire.INFO_FILESYSTEM, wire.INFO_SECURITY):
        assert client.request(wire.QUERY_INFO, query_info_body(fid, info_type, 1), tree_id=client.ipc)[0] == \
            wire.STATUS_NOT_SUPPORTED


def test_what_a_pipe_does_not_serve(client):
    fid = client.pipe()
    ipc = dict(tree_id=client.ipc)
    assert client.request(wire.SET_INFO, set_info_body(fid, wire.INFO_FILE, 23, struct.pack("<II", 1, 0)),
                          **ipc)[0] == wire.STATUS_NOT_SUPPORTED          # as Samba on IPC$
    assert client.request(wire.FLUSH, flush_body(fid), **ipc)[0] == STATUS_NOT_IMPLEMENTED
    assert client.request(wire.QUERY_DIRECTORY, query_directory_body(fid, "*", 37, 0, 4096),
                          **ipc)[0] == wire.STATUS_NOT_SUPPORTED
    for command, body in ((wire.LOCK, lock_body(fid, [(0, 1, 2)])), (wire.CHANGE_NOTIFY, change_notify_body(fid))):
        assert client.request(command, body, **ipc)[0] == wire.STATUS_INVALID_DEVICE_REQUEST
    for ctl in (FSCTL_CREATE_OR_GET_OBJECT_ID, 0x0011400C):        # FSCTL_PIPE_PEEK: as Samba, neither
        assert client.request(wire.IOCTL, ioctl_body(fid, ctl), **ipc)[0] == wire.STATUS_FS_DRIVER_REQUIRED
    assert client.transceive(fid, bind_pdu())[0] == 0                      # and it still works


def test_transceive_on_a_file_is_not_supported(client):
    fid = client.open("f")
    assert client.ioctl(FSCTL_PIPE_TRANSCEIVE, fid, bind_pdu())[0] == wire.STATUS_NOT_SUPPORTED


def pipe_wait(name: str, declared=None) -> bytes:
    encoded = wire.utf16(name)
    return struct.pack("<qIBB", 0, len(encoded) if declared is None else declared, 0, 0) + encoded


def test_pipe_wait(client):
    def wait(data):
        return client.request(wire.IOCTL, ioctl_body(b"\xff" * 16, FSCTL_PIPE_WAIT, data), tree_id=client.ipc)[0]
    assert wait(pipe_wait("srvsvc")) == 0
    assert wait(pipe_wait("netlogon")) == wire.STATUS_OBJECT_NAME_NOT_FOUND
    assert wait(pipe_wait("srvsvc", declared=200)) == wire.STATUS_INVALID_PARAMETER
    assert wait(b"\0" * 6) == wire.STATUS_INVALID_PARAMETER


def test_open_pipes_are_bounded(share):
    c = PipeClient(share, limits=Limits(max_open_pipes=2))
    first = c.pipe()
    c.pipe("wkssvc")
    assert c.open_pipe()[0] == wire.STATUS_INSUFFICIENT_RESOURCES
    assert c.request(wire.CLOSE, close_body(first), tree_id=c.ipc)[0] == 0
    assert c.open_pipe()[0] == 0
    c.conn.close_all()


def test_pipes_count_among_open_files(share):
    c = PipeClient(share, limits=Limits(max_open_files=2))
    c.pipe()
    c.pipe()
    assert c.open_pipe()[0] == wire.STATUS_TOO_MANY_OPENED_FILES
    assert c.create("f")[0] == wire.STATUS_TOO_MANY_OPENED_FILES
    c.conn.close_all()


def test_a_guest_opens_the_pipes(client):
    client.conn.sessions[1].guest = True
    fid = client.pipe()
    assert ptype(client.transceive(fid, bind_pdu())[1]) == rpcrt.MSRPC_BINDACK
