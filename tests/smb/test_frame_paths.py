"""A frame of one plain request is handled on a short path (no generator, chain loop or
response budget); a compound, a sealed frame, or a frame behind a background write on the
general one. Both must answer alike: the same request sent to two identical connections, one
through `handle_frame` and the other through the general path's steps, gets the same status,
flags, credits and body, and moves the credit window the same way."""
import struct
from pathlib import Path

import pytest
import smbcore
from sansio_client import Client, parse, split
from smbcore import SHORT_BODY, close_body, create_body, query_info_body, read_body, write_body

from smbring.smb import security, wire
from smbring.smb.channels import Channel
from smbring.smb.state import Session

ALL_ACCESS = 0x001F01FF


def general_path(conn, frame, sealed_by=None) -> list:
    """The effects of a frame (its plaintext, and the session that sealed it) as the general
    path (`_frame`'s steps) makes them."""
    return conn._drive(conn._frame(memoryview(frame), sealed_by), None)


def answers(effects) -> list[tuple]:
    """What a client sees of the responses: each header's fields and its body (a FileId and
    times differ between two connections: CREATE's and CLOSE's bodies are compared by size)."""
    seen = []
    for e in effects:
        header, body = parse(bytes(e.message))
        if header.command in (wire.CREATE, wire.CLOSE) and header.status == 0:
            body = len(body)
        seen.append((header.command, header.status, header.flags, header.message_id, header.credits,
                     header.credit_charge, header.session_id, header.tree_id, header.next_command, body))
    return seen


def exchange_both(twins, command, body, **header):
    """The request sent to both connections (the same MessageId): their answers, compared."""
    short, general = twins
    frames = [c.message(command, body, **header) for c in twins]
    assert frames[0] == frames[1]
    got = answers(short.conn.handle_frame(memoryview(frames[0])))
    expected = answers(general_path(general.conn, frames[1]))
    assert got == expected
    assert (short.conn.credits.low, short.conn.credits.range, short.conn.credits.granted) == \
        (general.conn.credits.low, general.conn.credits.range, general.conn.credits.granted)
    return got


@pytest.mark.parametrize("command, body, header, status", [
    (wire.ECHO, SHORT_BODY, {}, wire.STATUS_SUCCESS),
    (wire.ECHO, b"\x05\x00\x00\x00", {}, wire.STATUS_INVALID_PARAMETER),      # StructureSize
    (wire.ECHO, SHORT_BODY, {"flags": 0x100}, wire.STATUS_INVALID_PARAMETER),  # a flag not defined
    (0x55, SHORT_BODY, {}, wire.STATUS_INVALID_PARAMETER),                    # no such command
    # related to no request before it: nothing to inherit, an invalid session
    (wire.ECHO, SHORT_BODY, {"flags": wire.FLAGS_RELATED}, wire.STATUS_SUCCESS),
    (wire.TREE_DISCONNECT, SHORT_BODY, {"flags": wire.FLAGS_RELATED}, wire.STATUS_INVALID_PARAMETER),
    (wire.TREE_DISCONNECT, SHORT_BODY, {"session_id": 99}, wire.STATUS_USER_SESSION_DELETED),
    (wire.TREE_DISCONNECT, SHORT_BODY, {"tree_id": 99}, wire.STATUS_NETWORK_NAME_DELETED),
    (wire.READ, read_body(b"\xff" * 16, 16 << 20, 0), {}, wire.STATUS_INVALID_PARAMETER),  # > MaxReadSize
    (wire.READ, read_body(b"\xff" * 16, 1 << 20, 0), {"charge": 1}, wire.STATUS_INVALID_PARAMETER),
    (wire.READ, read_body(b"\xff" * 16, 4096, 0), {}, wire.STATUS_FILE_CLOSED),
    (wire.QUERY_INFO, query_info_body(b"\xff" * 16, wire.INFO_FILE, 5, 4096, 0), {"credits": 9},
     wire.STATUS_FILE_CLOSED),
])
def test_a_lone_request_is_answered_as_the_general_path_answers_it(twins, command, body, header, status):
    [answer] = exchange_both(twins, command, body, **header)
    assert answer[1] == status


def test_a_lone_cancel_takes_no_id_and_gets_no_answer_on_either_path(twins):
    assert exchange_both(twins, wire.CANCEL, SHORT_BODY) == []


def test_create_and_close_are_answered_alike(twins):
    [created] = exchange_both(twins, wire.CREATE, create_body("f", ALL_ACCESS, wire.FILE_OPEN_IF, 0,
                                                             share_access=7))
    assert created[1] == wire.STATUS_SUCCESS
    # each connection closes the FileId its own CREATE answered with
    fids = [c.conn.opens and next(iter(c.conn.opens)) for c in twins]
    short, general = twins
    frames = [c.message(wire.CLOSE, close_body(fid, 0)) for c, fid in zip(twins, fids)]
    got = answers(short.conn.handle_frame(memoryview(frames[0])))
    assert got == answers(general_path(general.conn, frames[1]))
    assert got[0][1] == wire.STATUS_SUCCESS and not short.conn.opens and not general.conn.opens


def test_a_message_id_outside_the_window_drops_the_connection_on_either_path(twins):
    for c, handle in zip(twins, (lambda conn, f: conn.handle_frame(memoryview(f)), general_path)):
        frame = c.message(wire.ECHO, SHORT_BODY, message_id=c.next_message_id + 100)
        with pytest.raises(ConnectionError, match="outside the credit window"):
            handle(c.conn, frame)


def test_a_short_header_drops_the_connection(twins):
    with pytest.raises(ConnectionError, match="malformed SMB2 header"):
        twins[0].conn.handle_frame(memoryview(wire.PROTOCOL_ID + struct.pack("<H", 64) + bytes(20)))


# -- signed and sealed ---------------------------------------------------------------------------

SIGNING_KEY = bytes(range(16))
TO_SERVER, TO_CLIENT = b"c" * 16, b"s" * 16


def signed(conn, frame: bytes) -> bytes:
    request = bytearray(frame)
    struct.pack_into("<I", request, 16, wire.FLAGS_SIGNED)
    security.apply_signature(conn.sign_algorithm(), SIGNING_KEY, request)
    return bytes(request)


@pytest.mark.parametrize("command, body, status", [
    (wire.ECHO, SHORT_BODY, wire.STATUS_SUCCESS),
    (wire.TREE_DISCONNECT, b"\x05\x00\x00\x00", wire.STATUS_INVALID_PARAMETER),
    (wire.READ, read_body(b"\xff" * 16, 4096, 0), wire.STATUS_FILE_CLOSED),
])
def test_a_signed_request_is_verified_and_its_answer_signed_alike(twins, command, body, status):
    for c in twins:
        c.conn.sessions[1].signing_key = SIGNING_KEY
    short, general = twins
    frames = [signed(c.conn, c.message(command, body)) for c in twins]
    [got] = short.conn.handle_frame(memoryview(frames[0]))
    [expected] = general_path(general.conn, frames[1])
    assert bytes(got.message) == bytes(expected.message)
    assert security.verify(short.conn.sign_algorithm(), SIGNING_KEY, bytes(got.message))
    assert parse(bytes(got.message))[0].status == status


def test_a_request_whose_signature_fails_is_refused_alike(twins):
    for c in twins:
        c.conn.sessions[1].signing_key = SIGNING_KEY
    frames = [bytearray(signed(c.conn, c.message(wire.ECHO, SHORT_BODY))) for c in twins]
    for f in frames:
        f[-1] ^= 1          # the body changed after it was signed
    [answer] = exchange_frames(twins, frames)
    assert answer[1] == wire.STATUS_ACCESS_DENIED   # ECHO needs no session, but a signed one is verified
    frames = [bytearray(signed(c.conn, c.message(wire.TREE_DISCONNECT, SHORT_BODY))) for c in twins]
    for f in frames:
        f[-1] ^= 1
    [answer] = exchange_frames(twins, frames)
    assert answer[1] == wire.STATUS_ACCESS_DENIED


def exchange_frames(twins, frames):
    short, general = twins
    got = answers(short.conn.handle_frame(memoryview(bytes(frames[0]))))
    assert got == answers(general_path(general.conn, bytes(frames[1])))
    return got


def seal_sessions(twins):
    for c in twins:
        s = c.conn.sessions[1]
        c.conn.cipher = security.AES_128_GCM
        s.decrypt_key, s.encrypt_key, s.encrypt = TO_SERVER, TO_CLIENT, True
    return [c.conn.sessions[1] for c in twins]


def opened(effects) -> list[bytes]:
    """The plaintext of each sealed response."""
    return [security.decrypt(security.AES_128_GCM, TO_CLIENT, bytes(e.message) + bytes(e.payload))
            for e in effects]


@pytest.mark.parametrize("command, body, header, status", [
    (wire.ECHO, SHORT_BODY, {}, wire.STATUS_SUCCESS),
    (wire.TREE_DISCONNECT, SHORT_BODY, {"tree_id": 99}, wire.STATUS_NETWORK_NAME_DELETED),
    (wire.READ, read_body(b"\xff" * 16, 4096, 0), {}, wire.STATUS_FILE_CLOSED),
    (wire.TREE_DISCONNECT, SHORT_BODY, {"flags": wire.FLAGS_RELATED}, wire.STATUS_INVALID_PARAMETER),
])
def test_a_sealed_request_is_answered_sealed_alike(twins, command, body, header, status):
    sessions = seal_sessions(twins)
    short, general = twins
    plaintexts = [c.message(command, body, **header) for c in twins]
    transform, ciphertext = security.encrypt(security.AES_128_GCM, TO_SERVER, 1, plaintexts[0])
    got = opened(short.conn.handle_frame(memoryview(transform + bytes(ciphertext))))
    expected = opened(general_path(general.conn, plaintexts[1], sessions[1]))
    assert got == expected and parse(got[0])[0].status == status


@pytest.mark.parametrize("command", [wire.ECHO, wire.CANCEL, wire.SESSION_SETUP, wire.NEGOTIATE])
def test_a_sealed_frame_carrying_another_sessions_request_drops_the_connection(twins, command):
    """A request that needs no session (whose session check would not refuse it), naming
    another session in a frame sealed with session 1's key: the connection ends. (A CANCEL's
    own check takes a sealed request for its session's: it must not reach it.)"""
    seal_sessions(twins)
    client = twins[0]
    plaintext = client.message(command, SHORT_BODY, session_id=2)
    transform, ciphertext = security.encrypt(security.AES_128_GCM, TO_SERVER, 1, plaintext)
    with pytest.raises(ConnectionError, match="another session"):
        client.conn.handle_frame(memoryview(transform + bytes(ciphertext)))


def test_a_sealed_frame_carrying_another_sessions_requests_reaches_nothing_of_that_session(twins):
    """A frame sealed with session 1's key whose parts name session 2 (of this client) and a
    session that does not exist: each such part is answered, sealed, ACCESS_DENIED and
    USER_SESSION_DELETED (a related part after it INVALID_PARAMETER), as smbd answers them, and
    session 2's file is not written; session 1's own part of the frame runs."""
    client = twins[0]
    conn = client.conn
    conn.sessions[2] = Session(id=2, valid=True)
    status, tid2, _ = client.tree_connect(session_id=2)
    assert status == 0
    [(h, body)] = client.exchange(client.message(
        wire.CREATE, create_body("theirs", ALL_ACCESS, wire.FILE_CREATE, 0), session_id=2, tree_id=tid2))
    assert h.status == 0
    fid2 = body[64:80]
    status, fid1 = client.create("mine")
    assert status == 0
    seal_sessions(twins)
    theirs = dict(session_id=2, tree_id=tid2)
    parts = [(write_body(fid2, b"forged"), theirs),
             (write_body(fid2, b"forged"), dict(theirs, flags=wire.FLAGS_RELATED)),
             (write_body(fid2, b"forged"), dict(theirs, session_id=(1 << 64) - 1)),
             (write_body(fid1, b"mine"), {})]
    frame = b""
    for i, (body, header) in enumerate(parts):
        size = 64 + len(body)
        pad = 0 if i == len(parts) - 1 else -size % 8
        last = i == len(parts) - 1
        frame += client.message(wire.WRITE, body, next_command=0 if last else size + pad, **header) + b"\0" * pad
    transform, ciphertext = security.encrypt(security.AES_128_GCM, TO_SERVER, 1, frame)
    [sealed] = smbcore.carry_out(conn.handle_frame(memoryview(transform + bytes(ciphertext))))
    plaintext = security.decrypt(security.AES_128_GCM, TO_CLIENT, sealed)
    statuses = [parse(part)[0].status for part in split(plaintext)]
    assert statuses == [wire.STATUS_ACCESS_DENIED, wire.STATUS_INVALID_PARAMETER,
                        wire.STATUS_USER_SESSION_DELETED, wire.STATUS_SUCCESS]
    share = Path(conn.shares["s"].path)
    assert (share / "theirs").read_bytes() == b""
    assert (share / "mine").read_bytes() == b"mine"


@pytest.mark.parametrize("max_frame, unauthenticated", [(8 << 20, 65536), (4096, 65536), (65536, 65536)])
def test_the_frame_size_check_without_a_look_at_the_sessions_decides_as_the_full_one(
        tmp_path, max_frame, unauthenticated):
    """server.check_frame_size takes a frame within both limits without asking whether a
    session is established: for every size around the limits, before and after logon (and
    with a `max_frame` below the limit before logon, however odd), it takes and refuses
    exactly the frames the full check (size against `frame_limit()`) does."""
    from smbring.server.server import SMB1_HEADER_SIZE, check_frame_size
    from smbring.smb.limits import Limits

    client = Client(tmp_path, tree=False, limits=Limits(max_frame=max_frame,
                                                        max_frame_unauthenticated=unauthenticated))
    conn = client.conn
    edges = {0, 1, SMB1_HEADER_SIZE, max_frame, unauthenticated, 0xFFFFFF}
    sizes = sorted({max(0, e + d) for e in edges for d in (-1, 0, 1)})
    for logged_on in (True, False):
        conn.sessions[1].valid = logged_on
        assert conn.logged_on() is logged_on
        for size in sizes:
            expected = SMB1_HEADER_SIZE <= size <= conn.frame_limit()
            try:
                check_frame_size(conn, size)
                taken = True
            except ConnectionError:
                taken = False
            assert taken is expected, (logged_on, size)


# -- the short path's cheaper objects ----------------------------------------------------------
# (the header is read and written in C, smbring._wire: checked here against struct's layout)

LAYOUT = struct.Struct("<4sHHIHHIIQQQ16s")


def laid_out(h: wire.Header) -> bytes:
    """The header's 64 bytes as MS-SMB2 2.2.1 lays them out (struct's reading of it)."""
    word = h.async_id if h.flags & wire.FLAGS_ASYNC else h.tree_id << 32
    return LAYOUT.pack(wire.PROTOCOL_ID, 64, h.credit_charge, h.status, h.command, h.credits, h.flags,
                       h.next_command, h.message_id, word, h.session_id, h.signature)


@pytest.mark.parametrize("flags", [0, wire.FLAGS_ASYNC, wire.FLAGS_ASYNC | wire.FLAGS_SIGNED, wire.FLAGS_RELATED])
def test_a_parsed_header_is_the_header_packed(flags):
    """Header.parse fills a new instance's slots: every field as the dataclass makes it, the
    8-byte word a TreeId (its high half) or an AsyncId (all of it) as the flags say."""
    fields = dict(command=wire.READ, status=0x1234, flags=flags, credit_charge=3, credits=17,
                  next_command=0x58, message_id=(1 << 63) + 5, session_id=(1 << 64) - 2,
                  signature=bytes(range(16)))
    if flags & wire.FLAGS_ASYNC:
        fields["async_id"] = 0xFEDCBA9876543210
    else:
        fields["tree_id"] = 0xFFFFFFFE
    header = wire.Header(**fields)
    assert header.pack() == laid_out(header)
    for buf in (header.pack() + b"body", bytearray(header.pack()), memoryview(b"xx" + header.pack())[2:]):
        parsed = wire.Header.parse(buf)
        assert parsed == header and parsed.signer is None
    # a synchronous header's Reserved (ProcessId) half is ignored, not taken for the TreeId
    raw = bytearray(header.pack())
    raw[32:36] = b"\x01\x02\x03\x04"
    reparsed = wire.Header.parse(raw)
    if flags & wire.FLAGS_ASYNC:
        assert reparsed.async_id == (header.async_id & ~0xFFFFFFFF) | 0x04030201
    else:
        assert reparsed == header


def test_random_headers_read_and_write_as_struct_lays_them_out():
    import random
    rng = random.Random(7)
    for _ in range(3000):
        raw = bytearray(rng.randbytes(64))
        raw[:6] = wire.PROTOCOL_ID + b"\x40\x00"
        if rng.random() < 0.2:
            raw[48:64] = bytes(16)          # (an unsigned request's: one shared object)
        h = wire.Header.parse(raw)
        (_, _, charge, status, command, credits, flags, next_command, message_id, word, session_id,
         signature) = LAYOUT.unpack(raw)
        assert (h.command, h.status, h.flags, h.credit_charge, h.credits, h.next_command, h.message_id,
                h.session_id, h.signature) == (command, status, flags, charge, credits, next_command,
                                               message_id, session_id, signature)
        assert (h.async_id, h.tree_id) == ((word, 0) if flags & wire.FLAGS_ASYNC else (0, word >> 32))
        assert h.pack() == laid_out(h)
        if not flags & wire.FLAGS_ASYNC:
            raw[32:36] = bytes(4)           # (Reserved is not kept)
        assert h.pack() == bytes(raw)


@pytest.mark.parametrize("field, value", [("command", 1 << 16), ("status", 1 << 32), ("flags", -1),
                                          ("credit_charge", 1 << 16), ("credits", -1),
                                          ("next_command", 1 << 32), ("message_id", 1 << 64),
                                          ("tree_id", 1 << 32), ("session_id", -1), ("command", 1.0),
                                          ("signature", "text")])
def test_a_header_value_that_does_not_fit_is_refused_as_struct_refuses_it(field, value):
    h = wire.Header(wire.ECHO)
    setattr(h, field, value)
    with pytest.raises(struct.error):
        laid_out(h)
    with pytest.raises(struct.error):
        h.pack()


def test_an_async_headers_tree_id_and_a_synchronous_ones_async_id_are_not_written():
    assert wire.Header(wire.ECHO, tree_id=1 << 40, flags=wire.FLAGS_ASYNC, async_id=5).pack() == \
        laid_out(wire.Header(wire.ECHO, flags=wire.FLAGS_ASYNC, async_id=5))
    assert wire.Header(wire.ECHO, tree_id=3, async_id=1 << 70).pack() == laid_out(wire.Header(wire.ECHO, tree_id=3))


@pytest.mark.parametrize("signature", [b"", b"short", bytes(range(20)), bytearray(b"s" * 16)])
def test_a_signature_is_cut_or_padded_to_16_bytes_as_struct_does(signature):
    h = wire.Header(wire.ECHO, signature=signature)
    assert h.pack() == laid_out(h)


def test_only_a_whole_header_is_packed_or_answered():
    from smbring._wire import HeaderCodec
    with pytest.raises(TypeError):
        wire.HEADER_CODEC.pack(object())
    with pytest.raises(TypeError):
        wire.HEADER_CODEC.response_to(b"\xfeSMB" + bytes(60))
    bare = object.__new__(wire.Header)        # (no slot set)
    with pytest.raises(AttributeError):
        bare.pack()
    with pytest.raises(AttributeError):
        wire.Header.response_to(bare)
    with pytest.raises(TypeError):
        HeaderCodec(type("NoSlots", (), {}))
    with pytest.raises(RuntimeError):
        HeaderCodec.__new__(HeaderCodec).parse(bytes(64))


@pytest.mark.parametrize("raw", [b"", b"\xfe", wire.PROTOCOL_ID + bytes(59), bytes(64),
                                 b"\xfeSMX" + struct.pack("<H", 64) + bytes(58),
                                 wire.PROTOCOL_ID + struct.pack("<H", 65) + bytes(58)])
def test_a_header_that_is_not_one_is_refused(raw):
    with pytest.raises(ValueError):
        wire.Header.parse(raw)


def test_a_header_only_from_bytes():
    with pytest.raises(TypeError):
        wire.Header.parse("\xfeSMB" + "\0" * 60)
    with pytest.raises(BufferError):
        wire.Header.parse(memoryview(bytes(256))[::2])     # (not contiguous, as struct refuses it)


def test_a_response_header_starts_as_the_dataclass_would_make_it():
    req = wire.Header(command=wire.ECHO, status=5, flags=wire.FLAGS_SIGNED, credit_charge=2,
                      credits=9, message_id=7, tree_id=3, session_id=11, signature=b"x" * 16)
    assert wire.Header.response_to(req) == wire.Header(wire.ECHO, tree_id=3, session_id=11)


def test_a_bare_chain_reads_as_a_new_one():
    """The short path takes a Chain without calling its __init__ (connection._new_chain): every
    field must have a plain default (no default_factory), which the class then keeps."""
    import dataclasses

    from smbring.smb.connection import _new_chain
    from smbring.smb.state import Chain

    bare, made = _new_chain(Chain), Chain()
    for f in dataclasses.fields(Chain):
        assert f.default is not dataclasses.MISSING, f.name
        assert getattr(bare, f.name) == getattr(made, f.name), f.name
    bare.fid = b"f" * 16
    assert Chain().fid is None and _new_chain(Chain).fid is None    # (set on the instance only)


def test_a_bare_send_with_its_message_is_send_of_it():
    """The short path makes a response's Send without its __init__ (connection._new_send),
    setting only `message`: every other field must have a plain default, which the class
    keeps, and the result must be what Send(message) makes."""
    import dataclasses

    from smbring.smb.connection import _new_send
    from smbring.smb.effects import Send

    bare = _new_send(Send)
    bare.message = b"m"
    for f in dataclasses.fields(Send):
        if f.name != "message":
            assert f.default is not dataclasses.MISSING, f.name
    assert bare == Send(b"m")
    assert dataclasses.asdict(bare) == dataclasses.asdict(Send(b"m"))


@pytest.mark.parametrize("frame", [b"", b"\xfe", b"\xfeSMX" + bytes(70), b"\xfe" + bytes(3),
                                   b"\xfdSM", b"\x00SMB" + bytes(64)])
def test_a_frame_that_is_no_smb2_message_drops_the_connection(twins, frame):
    with pytest.raises(ConnectionError):
        twins[0].conn.handle_frame(memoryview(frame))


def test_the_dispatch_table_checks_each_commands_structure_size():
    from smbring.smb.dispatch import COMMANDS
    assert {c: e.size for c, e in COMMANDS.items()} == {
        c: s for c, s in wire.REQUEST_SIZES.items() if c != wire.CANCEL}


# -- the usual requests' shortcuts (reads left in the file, sessions reached through a channel) -----

def read_effects(effects) -> list[tuple]:
    """What the shell is asked to do for a READ: each effect's kind, its message (a READ's
    header and body prefix, or nothing before the data is read) and the file range (the
    descriptors differ between two connections)."""
    seen = []
    for e in effects:
        rng = getattr(e, "payload", None) if type(e).__name__ == "Send" else e.range
        seen.append((type(e).__name__, bytes(e.message) if hasattr(e, "message") else None,
                     None if rng is None else (rng.offset, rng.length)))
    return seen


@pytest.mark.parametrize("signing", ["none", "request signed", "session signs all"])
def test_a_read_of_a_files_data_is_answered_as_the_general_path_answers_it(twins, signing):
    """A READ whose data stays in the file is answered without the steps where nothing seals
    or signs it; signed (the request, or everything of its session) it still goes the steps'
    way: its data read into memory and signed there (a ReadInto), or, unsigned where the
    session requires signing, refused."""
    for c in twins:
        (Path(c.conn.shares["s"].path) / "f").write_bytes(b"data" * 1024)
    exchange_both(twins, wire.CREATE, create_body("f", ALL_ACCESS, wire.FILE_OPEN, 0, share_access=7))
    fids = [next(iter(c.conn.opens)) for c in twins]
    for c in twins:
        c.conn.sessions[1].signing_key = SIGNING_KEY
        c.conn.sessions[1].sign = signing == "session signs all"
    frames = [c.message(wire.READ, read_body(fid, 1000, 96)) for c, fid in zip(twins, fids)]
    if signing == "request signed":
        frames = [signed(c.conn, f) for c, f in zip(twins, frames)]
    short, general = twins
    got = read_effects(short.conn.handle_frame(memoryview(frames[0])))
    expected = read_effects(general_path(general.conn, frames[1]))
    assert got == expected
    kinds = {"none": "Send", "request signed": "ReadInto", "session signs all": "Send"}
    assert got[0][0] == kinds[signing]
    if signing == "none":
        assert got[0][2] == (96, 1000)      # the data left in the file, where the shell takes it
        assert parse(got[0][1][:64])[0].status == wire.STATUS_SUCCESS
    elif signing == "session signs all":
        assert parse(got[0][1])[0].status == wire.STATUS_ACCESS_DENIED    # an unsigned request


@pytest.mark.parametrize("binding", [False, True])
def test_a_session_reached_through_a_channel_is_checked_alike(twins, binding):
    """A session with a channel on the connection is reached unless that channel's binding is
    under way (then USER_SESSION_DELETED), on the short path as on the general one; a tree
    connect of a share reached encrypted only is refused to a plain request."""
    for c in twins:
        c.conn.sessions[1].channels[c.conn] = Channel(signing_key=SIGNING_KEY,
                                                      auth=object() if binding else None)
    [answer] = exchange_both(twins, wire.TREE_DISCONNECT, SHORT_BODY, tree_id=99)
    assert answer[1] == (wire.STATUS_USER_SESSION_DELETED if binding else wire.STATUS_NETWORK_NAME_DELETED)
    if binding:
        return
    for c in twins:
        c.conn.sessions[1].trees[c.tid].share.encrypt = True
    [answer] = exchange_both(twins, wire.TREE_DISCONNECT, SHORT_BODY)
    assert answer[1] == wire.STATUS_ACCESS_DENIED


def test_the_dispatch_table_refuses_a_command_needing_a_tree_but_no_session():
    """The connection looks up a request's tree connect in the session it checked first."""
    from smbring.smb.dispatch import Command
    with pytest.raises(ValueError, match="needs a session"):
        Command(lambda *a: None, needs_session=False)


def test_a_bare_durable_request_is_one_made_with_its_defaults():
    """A CREATE without create contexts gets its DurableRequest without the dataclass's
    __init__ (create_durable._new_request): every field must have a plain default, which the
    class keeps, and the result must be what DurableRequest() makes."""
    import dataclasses

    from smbring.smb.commands.create_durable import DurableRequest, _new_request

    bare = _new_request(DurableRequest)
    for f in dataclasses.fields(DurableRequest):
        assert f.default is not dataclasses.MISSING, f.name
    assert bare == DurableRequest()
    assert dataclasses.asdict(bare) == dataclasses.asdict(DurableRequest())


@pytest.mark.parametrize("pipe_first", [True, False])
def test_each_request_of_a_compound_creates_on_its_own_tree(tmp_path, pipe_first):
    """A handler takes the tree connect its request's checks found (Chain.tree), set anew for
    every request of a compound: a named pipe's CREATE on IPC$ and a file's CREATE on the
    disk share, in one frame, each in its own place."""
    from smbcore import compound

    client = Client(tmp_path, credits=8)
    status, ipc, _ = client.tree_connect("\\\\x\\IPC$")
    assert status == wire.STATUS_SUCCESS
    requests = [client.message(wire.CREATE, create_body("srvsvc", ALL_ACCESS, wire.FILE_OPEN, 0,
                                                        share_access=7), tree_id=ipc),
                client.message(wire.CREATE, create_body("f", ALL_ACCESS, wire.FILE_OPEN_IF, 0,
                                                        share_access=7))]
    if not pipe_first:
        requests.reverse()
    answered = client.exchange(compound(requests))
    assert [h.status for h, _ in answered] == [wire.STATUS_SUCCESS] * 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]     # no file named srvsvc
    client.conn.close_all()
