"""Plain ECHOs answered in C (`Connection.answer_echoes`, smbring._wire.answer_echoes) must be
answered exactly as `handle_frame` answers them, credits included, and anything else must be
left to `handle_frame` untouched: two connections in the same state, one given the frames
through answer_echoes and the other through handle_frame, must send the same bytes and end
with the same credit window; a frame answer_echoes refuses changes nothing."""
import random
import struct

import pytest
from sansio_client import connection, message

from smbring._wire import answer_echoes as c_answer_echoes
from smbring.smb import effects, wire
from smbring.smb.limits import Limits
from smbring.smb.state import Session

ECHO_BODY = struct.pack("<HH", 4, 0)
PRIORITY_1 = 0x10       # what Samba's client sets on SMB 3.1.1 requests


def framed(msg: bytes) -> bytes:
    return len(msg).to_bytes(4, "big") + msg


def echo(message_id: int, *, credits: int = 1, charge: int = 1, flags: int = PRIORITY_1, body=ECHO_BODY,
         **header) -> bytes:
    return message(wire.ECHO, body, message_id=message_id, credits=credits, credit_charge=charge,
                   flags=flags, **header)


def window(conn) -> tuple:
    w = conn.credits
    return w.low, w.range, w.granted, set(w._used), w._either_first


@pytest.fixture
def twins(tmp_path):
    """Two connections in the same state: after NEGOTIATE (SMB 3.1.1), holding 64 credits."""
    made = []
    for name in ("c", "python"):
        (tmp_path / name).mkdir()
        conn = connection(tmp_path / name)
        conn.dialect = wire.SMB311
        conn.credits.granted = conn.credits.range = 64
        made.append(conn)
    yield made
    for conn in made:
        conn.close_all()


def by_handle_frame(conn, data: bytes) -> bytes:
    """What the server sends for the NetBIOS messages in `data`, each through handle_frame."""
    out = b""
    while data:
        size = int.from_bytes(data[1:4], "big")
        frame, data = data[4:4 + size], data[4 + size:]
        for effect in conn.handle_frame(memoryview(bytearray(frame))):
            assert isinstance(effect, effects.Send)
            out += framed(bytes(effect.message))
    return out


def test_the_answers_and_the_window_are_handle_frames(twins):
    c, python = twins
    data = b"".join(framed(echo(i, credits=credits)) for i, credits in enumerate([1, 0, 8, 200, 1, 65535]))
    done = c.answer_echoes(bytearray(data), 0, len(data), 16)
    assert done is not None
    end, count, responses = done
    assert (end, count) == (len(data), 6)
    assert responses == by_handle_frame(python, data)
    assert window(c) == window(python)
    assert c.frame_commands == [wire.ECHO]


@pytest.mark.parametrize("flags", [0, 0x10, 0x20, 0x70])
@pytest.mark.parametrize("charge", [0, 1])
def test_priorities_and_the_charges_of_one_credit(twins, flags, charge):
    c, python = twins
    data = framed(echo(0, flags=flags, charge=charge, tree_id=0x1234567, credits=3))
    assert c.answer_echoes(bytearray(data), 0, len(data), 16)[2] == by_handle_frame(python, data)
    assert window(c) == window(python)


def test_dialect_2_0_2_charges_one_credit_whatever_the_charge(twins):
    c, python = twins
    for conn in twins:
        conn.dialect = wire.SMB202
    data = framed(echo(0, charge=7))
    assert c.answer_echoes(bytearray(data), 0, len(data), 16)[2] == by_handle_frame(python, data)
    assert window(c) == window(python)


def test_a_window_near_and_at_its_most(twins):
    """Samba's scaling as the client's credits approach `smb2 max credits`, and a window
    that cannot grow: the answers grant what handle_frame grants (at least one, or none)."""
    c, python = twins
    for conn in twins:
        conn.credits.max = 70
        conn.credits.granted, conn.credits.range = 60, 70
    data = b"".join(framed(echo(i, credits=50)) for i in range(8))
    assert c.answer_echoes(bytearray(data), 0, len(data), 16)[2] == by_handle_frame(python, data)
    assert window(c) == window(python)


def test_frames_after_the_first_refused_are_left(twins):
    """ECHOs, then a frame that is not a plain ECHO, then an ECHO: only the first ones are
    answered; the rest are left where they are, and handle_frame answers them as before."""
    c, python = twins
    head = framed(echo(0)) + framed(echo(1))
    rest = framed(echo(2, flags=wire.FLAGS_SIGNED)) + framed(echo(3))
    buf = bytearray(b"junk" + head + rest)
    end, count, responses = c.answer_echoes(buf, 4, len(buf), 16)
    assert (end, count) == (4 + len(head), 2)
    assert responses == by_handle_frame(python, head)
    assert window(c) == window(python)
    assert c.answer_echoes(buf, end, len(buf), 16) is None
    assert by_handle_frame(c, rest) == by_handle_frame(python, rest)
    assert window(c) == window(python)


def test_at_most_the_frames_asked_for(twins):
    c, _ = twins
    data = b"".join(framed(echo(i)) for i in range(10))
    end, count, _ = c.answer_echoes(bytearray(data), 0, len(data), 3)
    assert (end, count) == (3 * 72, 3)
    assert c.credits.low == 3
    assert c.answer_echoes(bytearray(data), 0, len(data), 0) is None


def test_a_frame_not_all_received_waits(twins):
    c, _ = twins
    data = framed(echo(0)) + framed(echo(1))
    before = window(c)
    for cut in (1, 3, 4, 40, 71):
        assert c.answer_echoes(bytearray(data[:cut]), 0, cut, 16) is None
        assert window(c) == before
    end, count, _ = c.answer_echoes(bytearray(data), 0, len(data) - 1, 16)
    assert (end, count) == (72, 1)


def _refused(conn, data: bytes) -> None:
    before = window(conn)
    assert conn.answer_echoes(bytearray(data), 0, len(data), 16) is None
    assert window(conn) == before


REFUSED_FRAMES = {
    "signed": framed(echo(0, flags=wire.FLAGS_SIGNED)),
    "related": framed(echo(0, flags=wire.FLAGS_RELATED)),
    "async": framed(echo(0, flags=wire.FLAGS_ASYNC)),
    "dfs": framed(echo(0, flags=wire.FLAGS_DFS)),
    "replay": framed(echo(0, flags=wire.FLAGS_REPLAY)),
    "a response's flag": framed(echo(0, flags=wire.FLAGS_SERVER_TO_REDIR)),
    "a session": framed(echo(0, session_id=5)),
    "a compound": framed(echo(0, next_command=72) + echo(1)),
    "another command": framed(message(wire.CANCEL, ECHO_BODY, message_id=0, flags=PRIORITY_1)),
    "a body of StructureSize 5": framed(echo(0, body=struct.pack("<HH", 5, 0))),
    "a short body": framed(echo(0, body=b"\x04\x00")),
    "a MessageId ahead": framed(echo(1)),
    "a MessageId of 2**64 - 1": framed(echo(2 ** 64 - 1)),
    "a charge of two": framed(echo(0, charge=2)),
    "SMB1": framed(b"\xffSMB" + bytes(64)),
    "a transform": framed(wire.TRANSFORM_ID + bytes(100)),
    "a NetBIOS keep-alive": b"\x85\x00\x00\x00" + framed(echo(0)),
    "a NetBIOS message of another type": b"\x81" + framed(echo(0))[1:],
}


@pytest.mark.parametrize("name", list(REFUSED_FRAMES))
def test_what_is_not_a_plain_echo_is_left_to_handle_frame(twins, name):
    _refused(twins[0], REFUSED_FRAMES[name])


def test_a_header_of_another_structure_size(twins):
    msg = bytearray(echo(0))
    msg[4:6] = struct.pack("<H", 65)
    _refused(twins[0], framed(bytes(msg)))


def test_a_frame_the_connection_would_not_take_before_logon(twins, tmp_path):
    """Larger than the frame size taken whatever the logon state: the server's
    check_frame_size decides (here: refuses), not this path."""
    c, _ = twins
    small = Limits(max_frame_unauthenticated=100)
    c.limits = small
    _refused(c, framed(echo(0, body=ECHO_BODY + bytes(40))))
    end, count, _ = c.answer_echoes(bytearray(framed(echo(0, body=ECHO_BODY + bytes(32)))), 0, 104, 16)
    assert count == 1


def test_a_used_message_id_is_refused_and_then_ends_the_connection(twins):
    c, _ = twins
    data = framed(echo(0))
    assert c.answer_echoes(bytearray(data), 0, len(data), 16)[1] == 1
    _refused(c, data)
    with pytest.raises(ConnectionError):
        c.handle_frame(memoryview(bytearray(data[4:])))


def test_a_window_the_usual_way_does_not_take(twins):
    """No credit left, ids used out of order, the first id after an SMB1 NEGOTIATE: the
    credit window's general branch decides, in handle_frame."""
    c, _ = twins
    c.credits.granted = 0
    _refused(c, framed(echo(0)))
    c.credits.granted = 64
    c.credits._used = {3}
    _refused(c, framed(echo(0)))
    c.credits._used = set()
    c.credits.start_after_smb1_negotiate()
    _refused(c, framed(echo(0)))


def test_nothing_may_go_first(twins):
    """A late answer in the outbox, a background write, compounds turned off, a session with
    id 0: handle_frame's way."""
    c, _ = twins
    data = framed(echo(0))
    c.outbox.append(effects.Send(b"late"))
    _refused(c, data)
    c.outbox.clear()
    c._background.add((3, 0, 10))
    _refused(c, data)
    c._background.clear()
    c.limits = Limits(max_compound=0)
    _refused(c, data)
    c.limits = Limits()
    c.sessions[0] = Session(id=0, valid=True)
    _refused(c, data)
    del c.sessions[0]
    assert c.answer_echoes(bytearray(data), 0, len(data), 16)[1] == 1


def test_the_c_function_refuses_what_is_not_its_arguments():
    class Window:
        low, range, granted, max, _used, _either_first = 0, 1, 1, 10, set(), False

    data = bytearray(framed(echo(0)))
    with pytest.raises(TypeError):
        c_answer_echoes(data, 0, len(data), 16, 1000, Window(), True)
    with pytest.raises(TypeError):
        c_answer_echoes(data, 0, len(data), 16, 1000, Window(), True, [])
    for odd in ({"low": -1}, {"low": 2 ** 70}, {"granted": "1"}, {"max": 0}, {"range": 11},
                {"granted": 2, "range": 1}):
        w = Window()
        for k, v in odd.items():
            setattr(w, k, v)
        assert c_answer_echoes(data, 0, len(data), 16, 1000, w, True, {}) is None
    w = Window()
    assert c_answer_echoes(data, 0, len(data) + 1000, 16, 1000, w, True, {})[1] == 1  # (end past the buffer: cut)
    assert (w.low, w.range, w.granted) == (1, 1, 1)
    assert c_answer_echoes(data, 10 ** 6, 10 ** 6 + 80, 16, 1000, Window(), True, {}) is None
    assert c_answer_echoes(data, -1, len(data), 16, 1000, Window(), True, {}) is None
    with pytest.raises(AttributeError):
        c_answer_echoes(data, 0, len(data), 16, 1000, object(), True, {})


def test_mutated_echoes_are_answered_as_handle_frame_answers_them_or_left(tmp_path):
    """Random changes to the bytes of a plain ECHO (its header, body, NetBIOS prefix): each
    frame answer_echoes takes is answered as handle_frame answers it on a twin connection,
    and each it refuses leaves the window as it was."""
    rng = random.Random(20261201)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    taken = 0
    for trial in range(3000):
        if trial % 200 == 0:
            conns = [connection(tmp_path / d) for d in "ab"]
            for conn in conns:
                conn.dialect = wire.SMB311
                conn.credits.granted = conn.credits.range = 64
        c, python = conns
        raw = bytearray(framed(echo(c.credits.low, credits=rng.randrange(0, 70))))
        for _ in range(rng.randrange(0, 3)):
            at = rng.choice([0, 1, 2, 3] + list(range(4, 24)) + [28, 40, 44, 64 + 4, 65 + 4] +
                            [rng.randrange(len(raw))])
            raw[at] = rng.choice([0, 1, 0x10, 0x44, 0xFE, 0xFF, rng.randrange(256)])
        before = window(c)
        done = c.answer_echoes(bytearray(raw), 0, len(raw), 16)
        if done is None:
            assert window(c) == before
            continue
        taken += 1
        end, count, responses = done
        assert (end, count) == (len(raw), 1)
        assert responses == by_handle_frame(python, bytes(raw))
        assert window(c) == window(python)
    assert taken > 300      # (the mutations leave many plain)
