"""Connection.handle_frame, the usual request's way through the core in one C call
(smbring._wire.FrameHandler): admitted, its handler called, a failure answered as
`_answer_failure` answers it, an answer in memory sent as one Send after the outbox's effects,
anything else left to the Python methods it names. Each branch with stand-ins that record
what they were given, and with a real connection; wrong calls and wrong answers raise, never
crash, and no reference is kept (run under AddressSanitizer by `make test-asan`)."""
import sys
from types import SimpleNamespace

import pytest
from smbcore import close_body, create_body

from smbring._wire import FrameHandler
from smbring.smb import connection, wire
from smbring.smb.effects import Send
from smbring.smb.errors import SMBError
from smbring.smb.state import Chain


class Conn:
    """What handle_frame reads of a connection, recording the Python methods' calls."""

    def __init__(self):
        self.outbox = []
        self.calls = []

    def _frame_not_admitted(self, frame, sealed_by):
        self.calls.append(("not admitted", frame, sealed_by))
        return ["not admitted"]

    def _answer_failure(self, e, hdr, rhdr, chain):
        self.calls.append(("failure", e, hdr, rhdr, chain))
        return SimpleNamespace(signer=None, failed=True), b"failed"

    def _answered(self, hdr, rhdr, body, signed, sealed_by, lone_write):
        self.calls.append(("answered", hdr, rhdr, body, signed, sealed_by, lone_write))
        return ["answered"]


def handler_of(answer_of, message=b"message"):
    """(the descriptor, the record of admit's and answer's calls): admit admits every frame
    but b"no", with the request (hdr, rhdr, chain) and the handler `answer_of(...)`."""
    record = []

    def admit(conn, frame):
        record.append(("admit", frame))
        if frame == b"no":
            return None
        return (SimpleNamespace(command=wire.READ), SimpleNamespace(signer=None), Chain(), answer_of)

    def answer(hdr, rhdr, body):
        record.append(("answer", body))
        return message
    return FrameHandler(admit, answer, Send, object.__new__), record


def sends(effects):
    return [(type(e), e.message, e.payload) for e in effects]


def test_an_answer_in_memory_is_one_send():
    handle, record = handler_of(lambda *args: (b"body", b"F" * 16))
    conn = Conn()
    effects = handle(conn, b"frame")
    assert sends(effects) == [(Send, b"message", None)]
    assert record == [("admit", b"frame"), ("answer", b"body")] and conn.calls == []
    # each body kind the answer packs; a fid of None leaves the chain's
    for body in (bytearray(b"b"), memoryview(b"b")):
        handle, record = handler_of(lambda *args, body=body: (body, None))
        assert sends(handle(Conn(), b"frame")) == [(Send, b"message", None)]


def test_the_handler_gets_the_request_and_its_fid_goes_to_the_chain():
    seen = []

    def answer_of(conn, hdr, frame, rhdr, chain):
        seen.append((conn, hdr, frame, rhdr, chain))
        return b"body", b"F" * 16
    handle, _ = handler_of(answer_of)
    conn = Conn()
    handle(conn, b"frame")
    [(got_conn, hdr, frame, rhdr, chain)] = seen
    assert got_conn is conn and frame == b"frame" and hdr.command == wire.READ
    assert chain.fid == b"F" * 16


def test_the_outbox_s_effects_go_first_and_it_is_emptied():
    handle, _ = handler_of(lambda *args: (b"body", None))
    conn = Conn()
    waiting = conn.outbox = ["a break"]
    effects = handle(conn, b"frame")
    assert effects is waiting and effects[0] == "a break" and sends(effects[1:]) == [(Send, b"message", None)]
    assert conn.outbox == [] and conn.outbox is not waiting
    conn.outbox = ("not", "a list")
    with pytest.raises(TypeError):
        handle(conn, b"frame")


def test_a_frame_not_admitted_and_a_sealed_one_go_the_python_way():
    handle, record = handler_of(lambda *args: (b"body", None))
    conn = Conn()
    assert handle(conn, b"no") == ["not admitted"]
    assert conn.calls == [("not admitted", b"no", None)]
    session = object()
    for call in (lambda: handle(conn, b"frame", session), lambda: handle(conn, b"frame", sealed_by=session)):
        conn.calls.clear()
        record.clear()
        assert call() == ["not admitted"]
        assert conn.calls == [("not admitted", b"frame", session)] and record == []    # (not admitted)


@pytest.mark.parametrize("kind", ["not bytes", "signed", "not packed", "a write"])
def test_any_other_answer_is_left_to_answered(kind):
    body = object() if kind == "not bytes" else b"body"
    handle, record = handler_of(lambda *args: (body, None), message=None if kind == "not packed" else b"m")
    conn = Conn()

    def admit_signed(c, frame):
        hdr = SimpleNamespace(command=wire.WRITE if kind == "a write" else wire.READ)
        rhdr = SimpleNamespace(signer=object() if kind == "signed" else None)
        return hdr, rhdr, Chain(), lambda *args: (body, None)
    if kind in ("signed", "a write"):
        answer = (lambda *a: None) if kind == "a write" else (lambda *a: b"m")
        handle = FrameHandler(admit_signed, answer, Send, object.__new__)
    assert handle(conn, b"frame") == ["answered"]
    [(what, hdr, rhdr, got, signed, sealed_by, lone_write)] = conn.calls
    assert what == "answered" and got is body and signed is False and sealed_by is None
    assert lone_write is (kind == "a write")


@pytest.mark.parametrize("failure", ["raised", "a setattr", "not two", "not a sequence", "a list"])
def test_a_failing_handler_is_answered_by_answer_failure(failure):
    chain_class = Chain

    def answer_of(conn, hdr, frame, rhdr, chain):
        if failure == "raised":
            raise SMBError(wire.STATUS_ACCESS_DENIED)
        if failure == "a setattr":
            return b"body", b"F" * 16
        if failure == "not two":
            return b"body", None, None
        if failure == "a list":
            return [b"body", None]      # (unpacked as Python unpacks it)
        return 5
    if failure == "a setattr":
        class Frozen:
            def __setattr__(self, name, value):
                raise AttributeError(name)
        chain_class = Frozen

    def admit(conn, frame):
        return SimpleNamespace(command=wire.READ), SimpleNamespace(signer=None), chain_class(), answer_of
    handle = FrameHandler(admit, lambda *a: b"m", Send, object.__new__)
    conn = Conn()
    effects = handle(conn, b"frame")
    assert sends(effects) == [(Send, b"m", None)]
    if failure == "a list":
        assert conn.calls == []
        return
    [(what, e, hdr, rhdr, chain)] = conn.calls
    expected = {"raised": SMBError, "a setattr": AttributeError, "not two": ValueError,
                "not a sequence": TypeError}[failure]
    assert what == "failure" and type(e) is expected
    if failure == "raised":     # (with its traceback, as `except ... as e` has it)
        assert e.__traceback__ is not None and e.__traceback__.tb_frame.f_code is answer_of.__code__


@pytest.mark.parametrize("error", [ConnectionResetError, KeyboardInterrupt, SystemExit])
def test_a_connection_error_and_what_is_no_exception_pass_through(error):
    def answer_of(*args):
        raise error("out")
    handle, _ = handler_of(answer_of)
    conn = Conn()
    with pytest.raises(error):
        handle(conn, b"frame")
    assert conn.calls == []


def test_answer_failure_s_own_failures_raise():
    class Broken(Conn):
        def _answer_failure(self, e, hdr, rhdr, chain):
            return "not two"

    handle, _ = handler_of(lambda *args: 1 / 0)
    with pytest.raises(ValueError):
        handle(Broken(), b"frame")


def test_wrong_calls_and_answers_raise():
    handle, _ = handler_of(lambda *args: (b"body", None))
    for call in (lambda: handle(), lambda: handle(Conn()), lambda: handle(Conn(), b"f", None, None),
                 lambda: handle(Conn(), b"f", sealed=None), lambda: handle(Conn(), b"f", None, sealed_by=None),
                 lambda: handle(Conn(), frame=b"f")):
        with pytest.raises(TypeError):
            call()
    bad_admit = FrameHandler(lambda c, f: ("not", "four"), lambda *a: b"m", Send, object.__new__)
    with pytest.raises(TypeError):
        bad_admit(Conn(), b"frame")

    def refusing(c, f):
        raise OSError("admit failed")
    with pytest.raises(OSError):
        FrameHandler(refusing, lambda *a: b"m", Send, object.__new__)(Conn(), b"frame")
    with pytest.raises(AttributeError):         # a connection without the methods it names
        handle(object(), b"no")
    for args in ((1, lambda: 0, Send, object.__new__), (len, len, "Send", object.__new__),
                 (len, len, Send, None), (len, len, Send)):
        with pytest.raises(TypeError):
            FrameHandler(*args)
    with pytest.raises(TypeError):
        FrameHandler(len, len, Send, object.__new__, extra=1)
    made = FrameHandler(len, len, Send, object.__new__)
    with pytest.raises(TypeError):
        made.__init__(len, len, Send, object.__new__)      # (once only)
    with pytest.raises(RuntimeError):
        FrameHandler.__new__(FrameHandler)(Conn(), b"frame")


def test_no_reference_is_kept():
    body, fid = b"body" * 3, b"F" * 16
    failure = SMBError(wire.STATUS_ACCESS_DENIED)

    def answer_of(conn, hdr, frame, rhdr, chain):
        if frame == b"fail":
            raise failure
        return body, fid
    handle, record = handler_of(answer_of)
    conn = Conn()
    handle(conn, b"frame")
    record.clear()
    before = sys.getrefcount(body), sys.getrefcount(fid), sys.getrefcount(conn)
    for _ in range(1000):
        handle(conn, b"frame")
        handle(conn, b"no")
        record.clear()
    conn.calls.clear()
    # (a reference kept per call would show a thousand times over)
    after = sys.getrefcount(body), sys.getrefcount(fid), sys.getrefcount(conn)
    assert all(a <= b for a, b in zip(after, before)), (after, before)
    handle(conn, b"fail")
    conn.calls.clear()
    failure.__traceback__ = None
    baseline = sys.getrefcount(failure)
    for _ in range(1000):
        handle(conn, b"fail")
        conn.calls.clear()
    failure.__traceback__ = None
    assert sys.getrefcount(failure) <= baseline


def test_bound_to_the_real_connection(client):
    assert type(connection.Connection.__dict__["handle_frame"]) is FrameHandler
    status, body = client.request(wire.CREATE, create_body("f", 0x001F01FF, wire.FILE_OPEN_IF, 0))
    assert status == 0
    fid = bytes(body[64:80])
    # a CLOSE of the open, then of the same FileId: the second the handler's failure, answered
    for expected in (wire.STATUS_SUCCESS, wire.STATUS_FILE_CLOSED):
        status, _ = client.request(wire.CLOSE, close_body(fid, 0))
        assert status == expected
