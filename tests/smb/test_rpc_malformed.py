"""The RPC association against what a client should not send (sans-I/O): fragments and their
reassembly, responses cut to the negotiated fragment size, each bound (a fragment's size, a
request's, the answers left unread), broken PDUs and stub data, and random bytes: a FAULT or
BIND_NAK and, where Samba drops the association, a disconnected pipe; never an exception."""
import random
import struct
from types import SimpleNamespace

import pytest
from rpc_client import (
    FIRST,
    LAST,
    PipeClient,
    bind_pdu,
    fault_status,
    ptype,
    request_pdu,
    response_stub,
    rpcrt,
    server_get_info,
    share_enum,
    share_get_info,
    split_pdus,
    srvs,
    text,
    wksta_get_info,
)
from smbcore import create_body, ioctl_body, query_info_body, read_body, write_body

from smbring.smb import wire
from smbring.smb.commands.pipe import FSCTL_PIPE_TRANSCEIVE, FSCTL_PIPE_WAIT, STATUS_PIPE_DISCONNECTED
from smbring.smb.rpc import lsarpc, pdu, srvsvc, wkssvc
from smbring.smb.rpc.endpoint import MAX_PENDING_OUTPUT, MAX_REQUEST, Endpoint
from smbring.smb.rpc.ndr import NdrError, Writer
from smbring.smb.rpc.services import Activity, Caller, FileSeen, ServerInfo, SessionSeen, TreeSeen
from smbring.smb.state import Session, Share

MANY_SHARES = tuple(Share(f"share{i:03}", f"/srv/{'deep/' * 10}{i}", comment="a comment " * 5) for i in range(60))


def endpoint(shares=MANY_SHARES, interface=srvsvc.INTERFACE) -> Endpoint:
    return Endpoint(interface, Caller(shares, ServerInfo()), assoc_group=1)


def bound(max_frag=4280, **kw) -> Endpoint:
    ep = endpoint(**kw)
    ep.write(bind_pdu(max_xmit=max_frag, max_recv=max_frag))
    assert ptype(ep.read(1 << 20)) == rpcrt.MSRPC_BINDACK
    return ep


def read_all(ep: Endpoint) -> bytes:
    """Everything the pipe holds (one READ returns one PDU at most)."""
    out = b""
    while ep.pending():
        out += ep.read(1 << 24)
    return out


def answer(ep: Endpoint, data: bytes) -> list[bytes]:
    ep.write(data)
    return split_pdus(read_all(ep))


def test_a_read_returns_one_pdu_at_most_and_a_short_one_says_so(share=None):
    ep = bound(2048)
    ep.write(request_pdu(15, share_enum(502)))
    first = ep.read(1 << 24)
    assert len(split_pdus(first)) == 1 and ep.pending() and not ep.message_unread()
    part = ep.read(10)
    assert len(part) == 10 and ep.message_unread()      # a READ shorter than the PDU
    rest = ep.read(1 << 24)
    assert len(split_pdus(part + rest)) == 1 and not ep.message_unread()


def fragments(opnum: int, stub: bytes, size: int, call_id=2) -> bytes:
    """A request cut in fragments of `size` stub bytes."""
    parts = [stub[i:i + size] for i in range(0, len(stub), size)] or [b""]
    return b"".join(request_pdu(opnum, part, call_id, alloc_hint=len(stub) - i * size,
                                flags=(FIRST if i == 0 else 0) | (LAST if i == len(parts) - 1 else 0))
                    for i, part in enumerate(parts))


# -- fragmentation ------------------------------------------------------------------------------
def test_a_request_in_fragments_is_reassembled():
    ep = bound()
    stub = share_get_info("share007", 1)
    pdus = answer(ep, fragments(16, stub, 8))
    info = srvs.NetrShareGetInfoResponse(response_stub(pdus))["InfoStruct"]["ShareInfo1"]
    assert text(info["shi1_netname"]) == "share007"


def test_fragments_written_a_byte_at_a_time_make_the_same_call():
    ep = bound()
    data = fragments(16, share_get_info("share007", 0), 5)
    for i in range(len(data)):
        ep.write(data[i:i + 1])
    assert srvs.NetrShareGetInfoResponse(response_stub(split_pdus(read_all(ep))))["ErrorCode"] == 0


@pytest.mark.parametrize("max_frag", [2048, 3000, 4280])
def test_a_large_answer_is_cut_to_the_negotiated_fragment_size(max_frag):
    ep = bound(max_frag)
    granted = max_frag & ~7
    pdus = answer(ep, request_pdu(15, share_enum(502)))
    assert len(pdus) > 3
    stub = response_stub(pdus)
    left = len(stub)
    for fragment in pdus:
        assert len(fragment) <= granted
        alloc_hint = struct.unpack_from("<I", fragment, 16)[0]
        assert alloc_hint == left
        left -= len(fragment) - 24
        assert fragment is pdus[-1] or (len(fragment) - 24) % 8 == 0
    resp = srvs.NetrShareEnumResponse(stub)
    assert resp["TotalEntries"] == 61 and resp["ErrorCode"] == 0


def test_the_answer_fragments_go_through_the_pipe_as_the_client_reads_them(share):
    c = PipeClient(share)
    c.conn.shares = {s.name: s for s in MANY_SHARES}
    fid = c.bound(max_xmit=2048, max_recv=2048)
    resp = srvs.NetrShareEnumResponse(c.call(fid, 15, share_enum(2)))
    assert [text(e["shi2_netname"]) for e in resp["InfoStruct"]["ShareInfo"]["Level2"]["Buffer"]][-2:] == \
        ["share059", "IPC$"]
    c.conn.close_all()


# -- bounds -------------------------------------------------------------------------------------
def test_a_request_fragment_over_the_negotiated_size_ends_the_association():
    ep = bound(2048)
    big = request_pdu(15, b"\0" * 2100)
    [fault] = answer(ep, big)
    assert fault_status(fault) == pdu.NCA_S_PROTO_ERROR and ep.disconnected


def test_a_request_announcing_more_than_the_bound_ends_the_association():
    ep = bound()
    [fault] = answer(ep, request_pdu(15, b"\0" * 100, flags=FIRST, alloc_hint=MAX_REQUEST + 1))
    assert fault_status(fault) == pdu.FAULT_ACCESS_DENIED and ep.disconnected


def test_fragments_adding_up_to_more_than_the_bound_end_the_association():
    ep = bound()
    chunk = b"\0" * 4000
    ep.write(request_pdu(15, chunk, flags=FIRST, alloc_hint=0))
    sent = len(chunk)
    while not ep.disconnected:
        assert sent <= MAX_REQUEST + len(chunk)
        ep.write(request_pdu(15, chunk, flags=0, alloc_hint=0))
        sent += len(chunk)
    [fault] = split_pdus(ep.read(1 << 20))
    assert fault_status(fault) == pdu.FAULT_ACCESS_DENIED and sent > MAX_REQUEST


def test_a_client_that_does_not_read_its_answers_is_cut_off():
    ep = bound()
    call = request_pdu(15, share_enum(2))
    ep.write(call * 200)                   # 200 calls in one write, nothing read
    assert ep.disconnected
    assert MAX_PENDING_OUTPUT < ep.pending() < MAX_PENDING_OUTPUT + 16 * 4280


def test_many_small_calls_in_one_write_are_all_answered_when_read():
    ep = bound()
    pdus = answer(ep, b"".join(request_pdu(21, server_get_info(100), call_id=i) for i in range(3, 50)))
    assert [struct.unpack_from("<I", p, 12)[0] for p in pdus] == list(range(3, 50))
    assert not ep.disconnected


# -- broken PDUs ----------------------------------------------------------------------------------
def test_a_fragment_length_below_a_header_ends_the_association():
    ep = bound()
    bad = bytearray(request_pdu(21, server_get_info(100)))
    struct.pack_into("<H", bad, 8, 8)
    [fault] = answer(ep, bytes(bad))
    assert fault_status(fault) == pdu.NCA_S_PROTO_ERROR and ep.disconnected


def test_a_later_fragment_without_its_first_ends_the_association():
    ep = bound()
    [fault] = answer(ep, request_pdu(21, server_get_info(100), flags=LAST))
    assert fault_status(fault) == pdu.NCA_S_PROTO_ERROR and ep.disconnected


def test_a_new_call_while_another_arrives_in_fragments_ends_the_association():
    ep = bound()
    ep.write(request_pdu(21, server_get_info(100)[:4], call_id=7, flags=FIRST))
    [fault] = answer(ep, request_pdu(21, server_get_info(100), call_id=8))
    assert fault_status(fault) == pdu.NCA_S_PROTO_ERROR and ep.disconnected
    assert struct.unpack_from("<I", fault, 12)[0] == 7           # on the call already under way


def test_an_unknown_opnum_faults_and_the_association_goes_on():
    ep = bound()
    [fault] = answer(ep, request_pdu(0, b""))
    assert fault_status(fault) == pdu.NCA_S_OP_RNG_ERROR and fault[3] & pdu.PFC_DID_NOT_EXECUTE
    [fault] = answer(ep, request_pdu(999, b"", call_id=3))
    assert fault_status(fault) == pdu.NCA_S_OP_RNG_ERROR
    assert ptype(answer(ep, request_pdu(21, server_get_info(100), call_id=4))[0]) == rpcrt.MSRPC_RESPONSE


def test_an_unknown_context_faults_and_the_association_goes_on():
    ep = bound()
    [fault] = answer(ep, request_pdu(21, server_get_info(100), context_id=5))
    assert fault_status(fault) == pdu.NCA_S_UNKNOWN_IF and not ep.disconnected


def test_a_request_with_an_object_uuid_is_served():
    ep = bound()
    stub = server_get_info(100)
    req = bytearray(request_pdu(21, b"\x11" * 16 + stub))
    req[3] |= pdu.PFC_OBJECT_UUID
    assert srvs.NetrServerGetInfoResponse(response_stub(answer(ep, bytes(req))))["ErrorCode"] == 0


BAD_STUBS = {
    "empty": b"",
    "cut": share_enum(1)[:10],
    "switch differs from level": struct.pack("<IIIIII", 0, 1, 2, 0, 0xFFFFFFFF, 0),
    "string bounds": struct.pack("<IIII", 0x20000, 5, 0, 6) + b"x" * 12,
    "string offset": struct.pack("<IIII", 0x20000, 5, 1, 5) + b"x" * 12,
    "huge array": struct.pack("<IIIIII", 0, 1, 1, 0x20000, 3, 0x20004) + struct.pack("<I", 0x7FFFFFFF),
    "array count differs": struct.pack("<IIIIIII", 0, 0, 0, 0x20000, 2, 0x20004, 1) + struct.pack("<I", 0),
    "lone surrogate": struct.pack("<IIII", 0x20000, 2, 0, 2) + b"\x00\xd8a\x00",
}


@pytest.mark.parametrize("name", BAD_STUBS)
def test_stub_data_that_cannot_be_read_faults_and_the_association_goes_on(name):
    ep = bound()
    [fault] = answer(ep, request_pdu(15, BAD_STUBS[name]))
    assert fault_status(fault) == pdu.FAULT_NDR and not ep.disconnected
    assert ptype(answer(ep, request_pdu(21, server_get_info(100), call_id=3))[0]) == rpcrt.MSRPC_RESPONSE


def test_entries_sent_in_an_enum_request_are_read_over():
    """A client may send a container with entries (MS-SRVS says they are ignored)."""
    req = srvs.NetrShareEnum()
    req["ServerName"] = "x\x00"
    req["InfoStruct"]["Level"] = 1
    req["InfoStruct"]["ShareInfo"]["tag"] = 1
    entry = srvs.SHARE_INFO_1()
    entry["shi1_netname"], entry["shi1_type"], entry["shi1_remark"] = "a\x00", 0, "b\x00"
    req["InfoStruct"]["ShareInfo"]["Level1"]["EntriesRead"] = 1
    req["InfoStruct"]["ShareInfo"]["Level1"]["Buffer"].append(entry)
    req["PreferedMaximumLength"] = 100
    req["ResumeHandle"] = 0
    resp = srvs.NetrShareEnumResponse(response_stub(answer(bound(), request_pdu(15, req.getData()))))
    assert resp["ErrorCode"] == 0 and resp["TotalEntries"] == 61


# -- random bytes ---------------------------------------------------------------------------------
def test_random_bytes_into_a_fresh_association():
    rng = random.Random(1)
    for _ in range(500):
        ep = endpoint()
        ep.write(rng.randbytes(rng.randrange(1, 300)))
        assert ep.pending() < 4096


def valid_conversation() -> list[bytes]:
    return [bind_pdu(), request_pdu(15, share_enum(1)), request_pdu(16, share_get_info("share001", 502), 3),
            request_pdu(21, server_get_info(102), 4), fragments(15, share_enum(2), 16, call_id=5)]


def mutate(rng: random.Random, data: bytes) -> bytes:
    data = bytearray(data)
    for _ in range(rng.randrange(1, 6)):
        what = rng.randrange(4)
        if what == 0 and data:
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif what == 1 and len(data) >= 12:         # a length field
            struct.pack_into("<H", data, rng.choice([8, 10]), rng.randrange(65536))
        elif what == 2:
            del data[rng.randrange(len(data) + 1):]
        else:
            data[rng.randrange(len(data) + 1):0] = rng.randbytes(rng.randrange(1, 40))
    return bytes(data)


def test_mutated_conversations_never_escape():
    rng = random.Random(2)
    for _ in range(1500):
        ep = endpoint(MANY_SHARES[:3])
        for message in valid_conversation():
            ep.write(mutate(rng, message) if rng.random() < 0.5 else message)
            ep.read(rng.randrange(1, 1 << 16))
        assert ep.pending() <= MAX_PENDING_OUTPUT + 64 * 1024


def enum_stub(level: int, strings: tuple = (None, None)) -> bytes:
    """An administrators' enumeration's request (NetrSessionEnum's shape: ServerName, then
    `strings`, then the level's empty container, PreferedMaximumLength, a resume handle)."""
    w = Writer()
    for name in ("\\\\host",) + strings:
        w.pointer(name is not None)
        if name is not None:
            w.string(name)
    w.u32(level)
    w.u32(level)
    w.pointer(True)
    w.u32(0)
    w.pointer(False)
    w.u32(0xFFFFFFFF)
    w.pointer(True)
    w.u32(0)
    return w.getvalue()


def get_user_name_stub() -> bytes:
    """LsarGetUserName's request as rpcclient sends it: no names in, the authority asked for."""
    w = Writer()
    w.pointer(True)
    w.string("\\\\host")
    w.pointer(False)        # UserName: none sent
    w.pointer(True)         # DomainName: asked for,
    w.pointer(False)        # none sent
    return w.getvalue()


def administrator() -> Caller:
    """A caller acting as root, and a server holding a session, a tree connect and a file."""
    session = SessionSeen("10.0.0.1", "alice", False, False, 5, 1, 1, "SMB 3.1.1")
    held = Activity((session,), (TreeSeen(1, session, "share000", False, 1),),
                    (FileSeen(7, "C:\\srv\\f", "alice", True, False, 0),))
    administration = SimpleNamespace(activity=lambda: held, close_file=lambda file_id: file_id == 7,
                                     end_sessions=lambda client, user, spare: 1,
                                     # (one process: no other worker to ask)
                                     activity_everywhere=lambda done: None,
                                     close_file_everywhere=lambda file_id, done: None,
                                     end_sessions_everywhere=lambda client, user, spare, done: None)
    return Caller(MANY_SHARES[:2], ServerInfo(), session=Session(id=1, valid=True, identity=SimpleNamespace(uid=0, name="root")),
                  administration=administration)


@pytest.mark.parametrize("operation", [srvsvc.net_share_enum_all, srvsvc.net_share_enum_sticky,
                                       srvsvc.net_share_get_info, srvsvc.net_server_get_info,
                                       srvsvc.net_session_enum, srvsvc.net_connection_enum,
                                       srvsvc.net_file_enum, srvsvc.net_share_check, srvsvc.net_remote_tod,
                                       srvsvc.net_server_disk_enum, srvsvc.net_file_close,
                                       srvsvc.net_session_del, wkssvc.net_wksta_get_info,
                                       lsarpc.get_user_name])
def test_random_stub_data_is_read_or_refused(operation):
    rng = random.Random(operation.__name__)
    caller = administrator()
    seeds = [share_enum(1), share_get_info("share000", 2), server_get_info(101), wksta_get_info(100),
             enum_stub(1), enum_stub(502, ("\\\\10.0.0.1", "alice")), enum_stub(1, ("share000",)),
             enum_stub(3, ("C:\\srv", None)), get_user_name_stub()]
    for _ in range(2000):
        stub = mutate(rng, rng.choice(seeds)) if rng.random() < 0.7 else rng.randbytes(rng.randrange(64))
        try:
            assert isinstance(operation(caller, stub), bytes)
        except NdrError:
            pass


def test_random_bytes_through_the_pipe_get_a_status(share):
    c = PipeClient(share)
    rng = random.Random(3)
    for _ in range(40):
        fid = c.pipe()
        for message in valid_conversation():
            status = c.pipe_write(fid, mutate(rng, message) if rng.random() < 0.5 else message)
            assert status in (0, STATUS_PIPE_DISCONNECTED)
            if rng.random() < 0.5:
                status = c.pipe_read(fid, rng.randrange(1, 5000))[0]
                assert status in (0, STATUS_PIPE_DISCONNECTED, wire.STATUS_PENDING)
        assert c.request(wire.CLOSE, struct.pack("<HHI", 24, 0, 0) + fid, tree_id=c.ipc)[0] == 0
    c.conn.close_all()



def pipe_request(rng: random.Random, fid: bytes):
    """A request on IPC$ naming the pipe, its parameters random (within what the credit window
    and MaxTransactSize let reach the handler), its bytes now and then corrupted."""
    command = rng.choice([wire.READ, wire.WRITE, wire.IOCTL, wire.QUERY_INFO, wire.CLOSE, wire.CREATE,
                          wire.FLUSH, wire.LOCK, wire.SET_INFO, wire.QUERY_DIRECTORY, wire.CHANGE_NOTIFY])
    length = rng.choice([0, 1, 16, 100, 4280, 65536])
    if command == wire.READ:
        body = read_body(fid, length, rng.randrange(1 << 64))
    elif command == wire.WRITE:
        body = write_body(fid, mutate(rng, rng.choice(valid_conversation())))
    elif command == wire.IOCTL:
        ctl = rng.choice([FSCTL_PIPE_TRANSCEIVE, FSCTL_PIPE_WAIT, 0x0011400C, rng.randrange(1 << 32)])
        body = ioctl_body(fid, ctl, mutate(rng, rng.choice(valid_conversation())), length)
    elif command == wire.QUERY_INFO:
        klass = rng.choice([5, 23, 24, rng.randrange(256)])
        body = query_info_body(fid, rng.choice([1, 1, 1, 2, 3, 4]), klass, length)
    elif command == wire.CREATE:
        body = create_body(rng.choice(["srvsvc", "\\PIPE\\wkssvc", "x", rng.randbytes(8).hex()]),
                           rng.randrange(1 << 32), rng.randrange(6), rng.randrange(1 << 24))
    else:
        body = struct.pack("<H", wire.REQUEST_SIZES[command]) + rng.randbytes(6) + fid + rng.randbytes(24)
    if rng.random() < 0.3:
        body = mutate(rng, body)
    return command, body


def test_random_requests_naming_a_pipe_get_a_status(share):
    """READ, WRITE, IOCTL, QUERY_INFO, CLOSE, CREATE and the commands a pipe does not serve,
    random, on IPC$ with a live pipe's FileId: an NTSTATUS each, never STATUS_INTERNAL_ERROR
    (an exception in the core)."""
    c = PipeClient(share)
    rng = random.Random(4)
    fid = c.bound()
    seen = set()
    for _ in range(3000):
        command, body = pipe_request(rng, fid)
        if len(body) < 2:   # no StructureSize: the connection is dropped (test_short_requests.py)
            continue
        for status, _ in c.send(command, body, tree_id=c.ipc, charge=1):
            assert status != wire.STATUS_INTERNAL_ERROR, (command, body.hex())
            seen.add((command, status))
        if fid not in c.conn.opens or rng.random() < 0.01:
            fid = c.bound()
    # the handlers were reached, not only the checks before them
    assert {(wire.READ, 0), (wire.WRITE, 0), (wire.IOCTL, 0), (wire.QUERY_INFO, 0), (wire.CLOSE, 0),
            (wire.READ, STATUS_PIPE_DISCONNECTED)} <= seen
    c.conn.close_all()
