"""The checks before a handler are made for the usual request in one C call
(smbring._wire.Admission, `smb.connection._admit`); every other request is checked as any
(`Connection._one`). These tests say which requests that call admits, that it takes and changes
nothing of a request it does not admit, and that either way the answer is the general path's:
the same request sent to two connections in the same state, one through `handle_frame` and the
other through the general path's steps, gets the same status, flags, credits and body."""
import dataclasses
import struct
import time

import pytest
from sansio_client import parse
from smbcore import SHORT_BODY, carry_out, close_body, create_body, query_info_body, read_body, write_body

from smbring import _wire
from smbring.smb import connection, wire
from smbring.smb.channels import Channel
from smbring.smb.dispatch import COMMANDS
from smbring.smb.effects import Send
from test_frame_paths import ALL_ACCESS, exchange_both, general_path

CREATE = (wire.CREATE, create_body("f", ALL_ACCESS, wire.FILE_OPEN_IF, 0, share_access=7))


def window(conn) -> tuple:
    return conn.credits.low, conn.credits.range, conn.credits.granted


@pytest.mark.parametrize("channel", ["none (the tests' session)", "bound"])
def test_the_usual_request_is_admitted_its_credits_taken(twins, channel):
    c = twins[0]
    s = c.conn.sessions[1]
    if channel == "bound":
        s.channels[c.conn] = Channel(signing_key=b"k" * 16)
    frame = c.message(*CREATE)
    low, range_, granted = window(c.conn)
    c.conn.frame_commands = None
    hdr, rhdr, chain, handler = connection._admit(c.conn, memoryview(frame))
    assert hdr == wire.Header.parse(frame)
    expected = wire.Header.response_to(hdr)
    expected.credits = rhdr.credits
    assert rhdr == expected and rhdr.credits == 4
    assert handler is COMMANDS[wire.CREATE].handler
    assert chain.tree is s.trees[c.tid] and (chain.session_id, chain.tree_id) == (1, c.tid)
    assert not chain.related and chain.last and chain.fid is None and chain.create_error == 0
    assert c.conn.frame_commands == [wire.CREATE] and c.conn._sealed_by is None
    # its MessageId consumed, the 4 credits it asked for granted
    assert window(c.conn) == (low + 1, range_ - 1 + 4, granted - 1 + 4)


def mutate(case, c):
    """The state or the request of case `case` on client `c`: the request's header fields."""
    conn, s = c.conn, c.conn.sessions[1]
    match case:
        case "invalid session":
            s.valid = False
        case "session encrypts":
            s.encrypt = True
        case "session signs":
            s.sign = True
        case "session expires":
            s.expires = time.monotonic() + 3600
        case "session expired":
            s.expires = time.monotonic() - 1
        case "channel in binding":
            s.channels[conn] = Channel(auth=object())
        case "another connection's session":
            s.channels[object()] = Channel(signing_key=b"k" * 16)
        case "share requires encryption":
            s.trees[c.tid].share.encrypt = True
        case "background write":
            conn._background.add((-1, 0, 1))
        case "no compounds":
            conn.limits = dataclasses.replace(conn.limits, max_compound=0)
        case "unknown session":
            return {"session_id": 99}
        case "unknown tree":
            return {"tree_id": 99}
        case "signed":
            return {"flags": wire.FLAGS_SIGNED}
        case "related":
            return {"flags": wire.FLAGS_RELATED}
        case "flag not defined":
            return {"flags": 0x100}
        case "async":
            return {"flags": wire.FLAGS_ASYNC}
        case "charge beyond the window":
            return {"credit_charge": 60}
    return {}


STATE_CASES = ["invalid session", "session encrypts", "session signs", "session expires",
               "session expired", "channel in binding", "another connection's session",
               "share requires encryption", "no compounds", "unknown session", "unknown tree",
               "signed", "related", "flag not defined", "async"]


@pytest.mark.parametrize("case", STATE_CASES)
def test_a_request_out_of_the_usual_is_not_admitted_and_answered_as_the_general_path(twins, case):
    for c in twins:
        header = mutate(case, c)
    frame = twins[0].message(*CREATE, **header)
    twins[0].next_message_id -= 1
    before = window(twins[0].conn)
    assert connection._admit(twins[0].conn, memoryview(frame)) is None
    assert window(twins[0].conn) == before
    if case == "signed":
        return      # (a signed request without a key: test_frame_paths compares the signed ones)
    if case == "no compounds":      # (a frame of even one request is too many: dropped)
        for c, handle in zip(twins, (lambda conn, f: conn.handle_frame(memoryview(f)), general_path)):
            with pytest.raises(ConnectionError, match="more than 0 requests"):
                handle(c.conn, c.message(*CREATE))
        return
    exchange_both(twins, *CREATE, **header)


@pytest.mark.parametrize("command, body", [
    (wire.ECHO, SHORT_BODY), (wire.NEGOTIATE, SHORT_BODY), (wire.SESSION_SETUP, SHORT_BODY),
    (wire.CANCEL, SHORT_BODY), (wire.IOCTL, SHORT_BODY), (wire.TREE_CONNECT, SHORT_BODY),
    (0x55, SHORT_BODY),
    # sizes check_sizes refuses: a StructureSize, a READ beyond MaxReadSize
    (wire.CLOSE, b"\x05\x00\x00\x00"), (wire.READ, read_body(b"\xff" * 16, 16 << 20, 0)),
])
def test_commands_with_checks_of_their_own_are_not_admitted(twins, command, body):
    c = twins[0]
    frame = c.message(command, body)
    c.next_message_id -= 1
    before = window(c.conn)
    assert connection._admit(c.conn, memoryview(frame)) is None
    assert window(c.conn) == before
    exchange_both(twins, command, body)


def test_a_frame_that_is_not_one_plain_request_is_not_admitted(twins):
    c = twins[0]
    frame = c.message(*CREATE)
    before = window(c.conn)
    for bad in (frame[:65],                                  # no StructureSize
                b"\xfdSMB" + frame[4:],                      # not SMB2
                frame[:4] + b"\x40\x01" + frame[6:],         # a header of another size
                frame[:20] + b"\x08\x00\x00\x00" + frame[24:],   # NextCommand
                c.message(*CREATE, message_id=c.next_message_id + 100)):   # outside the window
        assert connection._admit(c.conn, memoryview(bad)) is None
        assert window(c.conn) == before


@pytest.fixture
def admissions(monkeypatch):
    """What handle_frame's calls of the real admission answered: True where it admitted."""
    seen = []
    admit = connection._admit

    def recorded(conn, frame):
        result = admit(conn, frame)
        seen.append(result is not None)
        return result
    # (handle_frame, _wire/frames.c, holds the admission it was made with: one made with this)
    monkeypatch.setattr(connection.Connection, "handle_frame",
                        _wire.FrameHandler(recorded, connection._answer, Send, object.__new__))
    return seen


def test_create_read_write_and_close_are_admitted_and_answered_alike(twins, admissions):
    [created] = exchange_both(twins, *CREATE)
    assert created[1] == wire.STATUS_SUCCESS
    fids = [next(iter(c.conn.opens)) for c in twins]
    for command, body_of in ((wire.WRITE, lambda fid: write_body(fid, b"data")),
                             (wire.READ, lambda fid: read_body(fid, 4096, 0)),
                             (wire.QUERY_INFO, lambda fid: query_info_body(fid, wire.INFO_FILE, 5, 4096, 0)),
                             (wire.CLOSE, lambda fid: close_body(fid, 0))):
        frames = [c.message(command, body_of(fid)) for c, fid in zip(twins, fids)]
        short = carry_out(twins[0].conn.handle_frame(memoryview(frames[0])))
        general = carry_out(general_path(twins[1].conn, frames[1]))
        # (the same bytes but for the FileId each CREATE made, and CLOSE's times)
        assert [m.replace(fids[0], fids[1]) for m in short] == general or command == wire.CLOSE
        assert [parse(m)[0] for m in short] == [parse(m)[0] for m in general]
        assert window(twins[0].conn) == window(twins[1].conn)
    assert admissions == [True] * 5
    assert not twins[0].conn.opens and not twins[1].conn.opens


def test_a_failing_handler_is_answered_as_the_general_path_answers_it(twins, admissions):
    """A request admitted whose handler fails (no such open; a name the share refuses) gets
    the status the checks' failures get."""
    exchange_both(twins, wire.CLOSE, close_body(b"\xff" * 16, 0))
    exchange_both(twins, wire.CREATE, create_body("a\\..\\..\\b", ALL_ACCESS, wire.FILE_OPEN_IF, 0))
    assert admissions == [True, True]


def test_admission_refuses_wrong_arguments():
    with pytest.raises(TypeError):
        connection._admit(None)
    with pytest.raises(TypeError):
        connection._admit(None, 5)      # not a buffer
    from smbring import _wire
    with pytest.raises(TypeError):
        _wire.Admission(wire.HEADER_CODEC, [], object, object.__new__, 0)
    with pytest.raises(ValueError):
        _wire.Admission(wire.HEADER_CODEC, {}, object, object.__new__, 1 << 33)
    with pytest.raises(RuntimeError):
        _wire.Admission.__new__(_wire.Admission).admit(None, bytes(80))



def test_an_admission_with_a_codec_that_is_not_one_raises(twins):
    from smbring import _wire
    bad = _wire.Admission(object(), COMMANDS, connection.Chain, object.__new__, 0)
    before = window(twins[0].conn)
    with pytest.raises(TypeError, match="HeaderCodec"):
        bad.admit(twins[0].conn, memoryview(twins[0].message(*CREATE)))
    # (the checks passed and the credits were taken, as a handler that raised would leave them)
    assert window(twins[0].conn) != before


@pytest.mark.parametrize("keyed", [False, True])
def test_a_logoff_is_admitted_and_answered_as_the_general_path_answers_it(twins, admissions, keyed):
    for c in twins:
        s = c.conn.sessions[1]
        if keyed:
            s.signing_key = bytes(range(16))
            s.channels[c.conn] = Channel(signing_key=s.signing_key)
    [answer] = exchange_both(twins, wire.LOGOFF, SHORT_BODY)
    assert answer[1] == wire.STATUS_SUCCESS and not answer[2] & wire.FLAGS_SIGNED
    assert admissions == [True]


def test_an_admitted_request_whose_handler_names_a_signer_is_answered_signed(twins, admissions, monkeypatch):
    """A handler may name the key its answer is signed with (a LOGOFF's, where the session
    signs): the answer then goes the general way's signing, not the unsigned one."""
    flush = COMMANDS[wire.FLUSH]

    def signing_flush(c, hdr, msg, rhdr, chain):
        rhdr.signer = (c.sign_algorithm(), bytes(range(16)))
        return flush.handler(c, hdr, msg, rhdr, chain)
    monkeypatch.setitem(COMMANDS, wire.FLUSH, dataclasses.replace(flush, handler=signing_flush))
    [answer] = exchange_both(twins, wire.FLUSH, struct.pack("<HHI16s", 24, 0, 0, b"\xff" * 16))
    assert answer[1] == wire.STATUS_FILE_CLOSED and answer[2] & wire.FLAGS_SIGNED
    assert admissions == [True]


def random_header(rng) -> wire.Header:
    return wire.Header(command=rng.randrange(0x13), status=rng.getrandbits(32), flags=rng.getrandbits(32),
                       credit_charge=rng.getrandbits(16), credits=rng.getrandbits(16),
                       next_command=rng.getrandbits(32), message_id=rng.getrandbits(64),
                       tree_id=rng.getrandbits(32), session_id=rng.getrandbits(64),
                       async_id=rng.getrandbits(64), signature=rng.randbytes(rng.randrange(20)))


def test_an_answer_is_the_header_as_the_python_path_packs_it_then_the_body():
    import random
    rng = random.Random(7)
    for _ in range(2000):
        req, rhdr = random_header(rng), random_header(rng)
        body = rng.randbytes(rng.randrange(100))
        kept = dataclasses.replace(rhdr)
        expected = dataclasses.replace(rhdr, message_id=req.message_id, credit_charge=req.credit_charge,
                                       flags=rhdr.flags | wire.FLAGS_SERVER_TO_REDIR | (req.flags & wire.FLAGS_RELATED))
        for kind in (bytes, bytearray, memoryview):
            assert connection._answer(req, rhdr, kind(body)) == expected.pack() + body
        assert rhdr == kept


def test_an_answer_too_long_to_frame_or_of_no_header_is_refused():
    req = wire.Header(command=wire.READ)
    assert connection._answer(req, wire.Header.response_to(req), bytes(0xFFFFFF - 64)) is not None
    assert connection._answer(req, wire.Header.response_to(req), bytes(0xFFFFFF - 63)) is None
    with pytest.raises(TypeError):
        connection._answer(req, object(), b"")
    with pytest.raises(TypeError):
        connection._answer(req, req)
    with pytest.raises(TypeError):
        connection._answer(req, req, 5)
    with pytest.raises(struct.error):
        connection._answer(dataclasses.replace(req, message_id=1 << 64), req, b"")


class Bare:
    """A connection-like object with only the attributes a test gives it."""

    def __init__(self, **attrs):
        self.__dict__.update(attrs)


def test_a_connection_missing_what_admission_reads_raises_not_crashes(twins):
    """Every lookup's failure is an exception (AttributeError here), none a crash; a table
    that is not a dict is not looked into (not admitted)."""
    c = twins[0]
    frame = memoryview(c.message(*CREATE))
    with pytest.raises(AttributeError):
        connection._admit(object(), frame)
    conn = c.conn
    limits = conn.limits
    with pytest.raises(AttributeError):
        connection._admit(Bare(_background=set()), frame)
    with pytest.raises(AttributeError):
        connection._admit(Bare(_background=set(), limits=limits), frame)
    # sessions not a dict: nothing found
    sessions_list = Bare(sessions=list(conn.client.sessions.values()))
    assert connection._admit(Bare(_background=set(), limits=limits, client=sessions_list), frame) is None
    # a session, its channels or its tree connect without what is read of them
    for session in (object(), Bare(valid=True, encrypt=False, sign=False, expires=0),
                    Bare(valid=True, encrypt=False, sign=False, expires=0, channels={}, client=None),
                    Bare(valid=True, encrypt=False, sign=False, expires=0, channels={}, client=None,
                         trees={c.tid: object()})):
        client = Bare(sessions={1: session})
        with pytest.raises(AttributeError):
            connection._admit(Bare(_background=set(), limits=limits, client=client), frame)
    before = window(conn)
    assert connection._admit(conn, frame) is not None       # (the real one still admits it)
    assert window(conn) != before
