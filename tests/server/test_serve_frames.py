"""The receive buffer in C (smbring._wire.ReceiveBuffer, datapath.Receiver's base): its frames
taken as the Python methods it replaced took them (a model of those, over random buffers),
and `serve_frames`, which answers the frames it holds whole as the server's `begin`, the
effect runner's run_now and the sender's send_small did: over a real socket pair, with the
server's real Sender and the effects the protocol core makes. Wrong arguments raise; they
never crash the interpreter."""
import asyncio
import contextlib
import errno
import functools
import random
import socket
import struct

import pytest

from smbring._wire import ReceiveBuffer
from smbring.datapath import DIRECT_SEND_MAX, Receiver, Sender
from smbring.server.server import SMB1_HEADER_SIZE, check_frame_size
from smbring.smb import effects
from smbring.smb.limits import Limits
from smbring.uring import aio

ECHO, CREATE = 0x0D, 0x05
BURST = ReceiveBuffer.FAIR_BURST


def message(command: int, message_id: int, size: int = 68) -> bytes:
    head = struct.pack("<4sHHIHHIIQIIQ16s", b"\xfeSMB", 64, 0, 0, command, 1, 0, 0, message_id, 0, 0, 0, bytes(16))
    return head + bytes(size - 64)


def frame(command: int, message_id: int, size: int = 68) -> bytes:
    return size.to_bytes(4, "big") + message(command, message_id, size)


class Model:
    """The Python methods the C ones replaced (datapath.Receiver before), on the same state."""

    def __init__(self, buf: bytearray, start: int, end: int, in_a_row: int):
        self._buf, self._start, self._end, self._in_a_row = buf, start, end, in_a_row

    def frame_waiting(self):
        start, buf = self._start, self._buf
        have = self._end - start
        if have < 4 or buf[start]:
            return False
        return have >= 4 + ((buf[start + 1] << 16) | (buf[start + 2] << 8) | buf[start + 3])

    def take_frame(self):
        start = self._start
        have = self._end - start
        if have < 4 or self._in_a_row >= BURST - 2:
            return None
        buf = self._buf
        if buf[start]:
            return None
        begin = start + 4
        end = begin + ((buf[start + 1] << 16) | (buf[start + 2] << 8) | buf[start + 3])
        if end > self._end:
            return None
        self._in_a_row += 2
        out = memoryview(buf[begin:end])
        if end == self._end:
            self._start = self._end = 0
        else:
            self._start = end
        return out

    def take_answered(self, answer, command):
        start = self._start
        if self._end - start < 68 or self._buf[start + 16] != command:
            return None
        most = (BURST - 1 - self._in_a_row) >> 1
        if most <= 0:
            return None
        done = answer(self._buf, start, self._end, most)
        if done is None:
            return None
        end, count, responses = done
        self._in_a_row += count << 1
        if end == self._end:
            self._start = self._end = 0
        else:
            self._start = end
        return responses


def state(rb):
    return rb._start, rb._end, rb._in_a_row


def test_frames_are_taken_as_the_python_methods_took_them():
    rng = random.Random(7)

    class Buffer(ReceiveBuffer):
        pass

    for _ in range(3000):
        frames = b"".join(frame(rng.choice([ECHO, CREATE]), i, rng.choice([68, 70, 100])) for i in range(rng.randint(0, 6)))
        data = bytearray(frames + bytes(rng.randint(0, 8)))
        if data and rng.random() < 0.3:     # a byte changed: a prefix that is not one, a size
            data[rng.randrange(len(data))] = rng.randrange(256)
        end = rng.randint(0, len(data))
        start = rng.randint(0, end)
        in_a_row = rng.randint(0, BURST)
        c = Buffer()
        c._buf, c._start, c._end, c._in_a_row = data, start, end, in_a_row
        m = Model(data, start, end, in_a_row)
        assert c.frame_waiting() == m.frame_waiting()
        assert c.drained() == (start == end)
        kind = rng.choice(["frame", "answered", "refused"])
        if kind == "frame":
            got, want = c.take_frame(), m.take_frame()
            assert (got is None) == (want is None)
            if got is not None:
                assert bytes(got) == bytes(want)
                assert got.obj is not data      # a buffer of its own
        else:
            def answer(buf, s, e, most):
                if kind == "refused":
                    return None
                return s + 4 + int.from_bytes(buf[s + 1:s + 4], "big"), 1, ["answered"]

            if kind == "answered" and m.take_frame() is None:
                continue        # (the answer above is only right where a whole frame is there)
            m = Model(data, start, end, in_a_row)
            assert c.take_answered(answer, ECHO) == m.take_answered(answer, ECHO)
        assert state(c) == (m._start, m._end, m._in_a_row)


def test_wrong_state_and_arguments_raise():
    c = ReceiveBuffer()
    with pytest.raises(TypeError):
        c.take_frame()              # no buffer
    c._buf = b"not a bytearray"
    with pytest.raises(TypeError):
        c.frame_waiting()
    c._buf = bytearray(10)
    c._start, c._end = 4, 20        # past the buffer's end
    with pytest.raises(ValueError):
        c.take_frame()
    c._start, c._end = 5, 4
    with pytest.raises(ValueError):
        c.take_answered(lambda *a: None, ECHO)
    c._start = c._end = 0
    with pytest.raises(TypeError):
        c.take_answered(1)
    with pytest.raises(RuntimeError):
        c.serve_frames()            # no server set
    with pytest.raises(TypeError):
        c.set_server(1, 2, 3)
    c._buf = bytearray(68 + 4)
    c._buf[:] = frame(ECHO, 1)
    c._end = len(c._buf)
    for bad in [lambda *a: 5, lambda *a: (0, 1, []), lambda *a: (c._end, 99, []), lambda *a: (c._end + 1, 1, [])]:
        with pytest.raises((TypeError, ValueError)):
            c.take_answered(bad, ECHO)
        assert state(c) == (0, c._end, 0)       # nothing taken


def test_recv_now_without_a_socket_fails_cleanly():
    c = ReceiveBuffer()
    c._buf = bytearray(100)
    assert c.fd == -1
    with pytest.raises(OSError) as e:
        c.recv_now()
    assert e.value.errno == errno.EBADF
    a, b = socket.socketpair()
    with a, b:
        c.fd = a.fileno()
        with pytest.raises(BlockingIOError):
            c.recv_now()
        b.sendall(b"abc")
        assert c.recv_now() == 3 and state(c)[:2] == (0, 3) and bytes(c._buf[:3]) == b"abc"
        b.close()
        assert c.recv_now() == 0


@contextlib.contextmanager
def connected():
    """A socket pair, the server's end non-blocking (as the server's sockets are)."""
    a, b = socket.socketpair()
    with a, b:
        a.setblocking(False)
        yield a, b


def in_a_loop(test):
    """The test's body run inside an event loop (the Receiver and Sender take its ring)."""
    @functools.wraps(test)
    def run(*args, **kwargs):
        async def body():
            return test(*args, **kwargs)
        return asyncio.run(body())
    return run


class Link:
    busy = False
    last_frame = 0.0


class Runner:
    """The effect runner's side of the contract: what run_now and flush_then were given."""

    def __init__(self):
        self.sending_users = 0
        self.ran, self.flushed = [], []

    def run_now(self, todo):
        self.ran.append(todo)
        return "run_now's awaitable"

    def flush_then(self, todo):
        self.flushed.append(todo)
        return "flush's awaitable"


def answering_ok(frame):
    return [effects.Send(b"ok")]


class Conn:
    limits = Limits()

    def __init__(self, answer):
        self.answer = answer
        self.frames = []

    def frame_limit(self):      # (as a connection not logged on: check_frame_size)
        return self.limits.max_frame_unauthenticated

    def logged_on(self):
        return False

    def handle_frame(self, frame):
        self.frames.append(bytes(frame))
        return self.answer(frame)


def echoes_answered(buf, start, end, most):
    """Connection.answer_echoes' contract: the ECHOs at the head (up to `most`) answered."""
    count, answers = 0, b""
    while count < most and end - start >= 72 and buf[start + 16] == ECHO:
        answers += frame(ECHO, buf[start + 28], 68)
        start += 72
        count += 1
    return (start, count, answers) if count else None


def served(sock, conn, runner=None, on_served=None, answer=None, later=None):
    rx = Receiver(aio.get_ring(), sock)
    tx = Sender(aio.get_ring(), sock, read_path="copy", max_payload=65536)
    tx.more_requests = rx.frame_waiting
    runner = runner or Runner()
    link = Link()

    def send_later(responses, flush_only):
        later.append((bytes(responses), flush_only))
        return "send_later's awaitable"

    rx.set_server(conn.handle_frame, runner.run_now, runner.flush_then, on_served, answer, send_later, runner, tx,
                  link, conn, check_frame_size, effects.Send, SMB1_HEADER_SIZE, DIRECT_SEND_MAX)
    return rx, tx, runner, link


def answers(peer) -> list[bytes]:
    peer.setblocking(False)
    data = b""
    try:
        while True:
            data += peer.recv(1 << 20)
    except BlockingIOError:
        pass
    out = []
    while data:
        size = int.from_bytes(data[1:4], "big")
        out.append(data[4:4 + size])
        data = data[4 + size:]
    return out


@in_a_loop
def test_frames_are_answered_in_order_and_their_answers_leave_together():
    with connected() as (a, b):
        conn = Conn(lambda f: [effects.Send(b"answer to " + bytes(f[24:25]))])
        starts = []
        rx, tx, runner, link = served(a, conn, on_served=starts.append)
        b.sendall(frame(CREATE, 1) + frame(CREATE, 2) + frame(CREATE, 3))
        assert rx.recv_now() == 216
        assert rx.serve_frames() is False          # all answered, nothing held back
        assert [f[24] for f in conn.frames] == [1, 2, 3]
        assert answers(b) == [b"answer to \x01", b"answer to \x02", b"answer to \x03"]
        assert not tx._held and tx._held_bytes == 0 and rx.drained()
        assert link.busy is False and link.last_frame == starts[-1] > 0 and len(starts) == 3
        assert runner.ran == [] and runner.flushed == []


@in_a_loop
def test_a_frame_not_all_received_waits():
    with connected() as (a, b):
        conn = Conn(answering_ok)
        rx, tx, runner, link = served(a, conn)
        b.sendall(frame(CREATE, 1) + frame(CREATE, 2)[:30])
        rx.recv_now()
        assert rx.serve_frames() is True           # the rest: the awaited way
        assert len(conn.frames) == 1 and state(rx)[:2] == (72, 102)
        assert answers(b) == [b"ok"]


@pytest.mark.parametrize("case", ["two effects", "a payload", "a break", "runner busy", "sender busy",
                                  "too large"])
@in_a_loop
def test_any_other_outcome_goes_the_runners_way(case):
    with connected() as (a, b):
        todo = {
            "two effects": [effects.Send(b"ok"), effects.Forget(1, 2)],
            "a payload": [effects.Send(b"ok", b"payload")],
            "a break": [effects.Send(b"ok", delivered=lambda ok: None)],
            "too large": [effects.Send(bytes(DIRECT_SEND_MAX))],
        }.get(case, [effects.Send(b"ok")])
        conn = Conn(lambda f: todo)
        rx, tx, runner, link = served(a, conn)
        if case == "runner busy":
            runner.sending_users = 1
        if case == "sender busy":
            tx._users = 1
        b.sendall(frame(CREATE, 1) + frame(CREATE, 2))
        rx.recv_now()
        pending, started = rx.serve_frames()
        assert pending == "run_now's awaitable" and runner.ran == [todo] and started == link.last_frame
        assert link.busy is True            # (until the task has awaited it: `finish`)
        assert len(conn.frames) == 1 and not rx.drained()       # the next one: after it
        assert answers(b) == [] and not tx._held


@in_a_loop
def test_an_answer_the_socket_does_not_take_whole_is_flushed_before_anything_else():
    with connected() as (a, b):
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        big = bytes(range(256)) * 200       # 51,200 bytes: more than the socket takes now
        conn = Conn(lambda f: [effects.Send(big)])
        rx, tx, runner, link = served(a, conn)
        b.sendall(frame(CREATE, 1))
        rx.recv_now()
        pending, _ = rx.serve_frames()
        assert pending == "flush's awaitable" and runner.flushed == [[]] and runner.ran == []
        assert len(tx._held) == 1 and tx._held_bytes == len(tx._held[0]) > 0
        b.setblocking(True)
        got = b""
        while len(got) < 4 + len(big) - tx._held_bytes:
            got += b.recv(65536)
        assert got + bytes(tx._held[0]) == len(big).to_bytes(4, "big") + big    # nothing lost


@in_a_loop
def test_echoes_at_the_head_are_answered_together_the_rest_as_frames():
    with connected() as (a, b):
        conn = Conn(answering_ok)
        asked = []

        def answer(*args):
            asked.append(args[1:])
            return echoes_answered(*args)

        rx, tx, runner, link = served(a, conn, answer=answer)
        b.sendall(frame(ECHO, 1) + frame(ECHO, 2) + frame(CREATE, 3) + frame(ECHO, 4))
        rx.recv_now()
        assert rx.serve_frames() is False
        assert [f[24] for f in conn.frames] == [3]          # the ECHOs never reach the core
        assert asked == [(0, 288, 15), (216, 288, 12)]      # (FAIR_BURST counted: `most`)
        got = answers(b)
        assert [m if len(m) < 64 else m[24] for m in got] == [1, 2, b"ok", 4]    # in order
        runner.sending_users = 1                            # responses waiting: ECHOs go as frames
        b.sendall(frame(ECHO, 5))
        rx.recv_now()
        pending, started = rx.serve_frames()
        assert pending == "run_now's awaitable" and len(asked) == 2 and conn.frames[-1][24] == 5


@in_a_loop
def test_echo_answers_the_socket_does_not_take_go_the_awaited_way():
    with connected() as (a, b):
        later = []
        rx, tx, runner, link = served(a, Conn(answering_ok), answer=echoes_answered,
                                      later=later)
        tx._users = 1                       # another send under way: after it
        b.sendall(frame(ECHO, 1) + frame(ECHO, 2))
        rx.recv_now()
        pending, started = rx.serve_frames()
        assert pending == "send_later's awaitable" and link.busy is True and link.last_frame == started
        assert later == [(frame(ECHO, 1) + frame(ECHO, 2), False)] and rx.drained()
        assert answers(b) == []


@in_a_loop
def test_frames_beyond_the_bounds_are_refused_as_the_python_way_refuses_them():
    with connected() as (a, b):
        conn = Conn(answering_ok)
        rx, tx, runner, link = served(a, conn)
        b.sendall((20).to_bytes(4, "big") + bytes(20))     # shorter than any SMB header
        rx.recv_now()
        with pytest.raises(ConnectionError):
            rx.serve_frames()
        assert conn.frames == [] and rx.drained()


@in_a_loop
def test_a_failing_core_is_raised_where_the_connection_waits():
    with connected() as (a, b):

        def broken(frame):
            raise ConnectionError("the client broke the protocol")

        rx, tx, runner, link = served(a, Conn(broken))
        b.sendall(frame(CREATE, 1))
        rx.recv_now()
        with pytest.raises(ConnectionError):
            rx.serve_frames()


@in_a_loop
def test_a_pipelining_client_gets_fair_burst_frames_at_a_time():
    with connected() as (a, b):
        conn = Conn(answering_ok)
        rx, tx, runner, link = served(a, conn)
        b.sendall(b"".join(frame(CREATE, i) for i in range(40)))
        rx.recv_now()
        rx._in_a_row = 0
        assert rx.serve_frames() is True           # the loop's turn for the others
        assert len(conn.frames) == BURST // 2 - 1
        assert tx._held                                 # (the next are in: answered with them)


@in_a_loop
def test_a_closed_receiver_lets_go_of_its_server():
    import gc
    import weakref

    a, b = socket.socketpair()
    with a, b:
        conn = Conn(answering_ok)
        rx, tx, runner, link = served(a, conn)
        ref = weakref.ref(conn)
        rx.close()
        del conn
        gc.collect()
        assert ref() is None and rx.fd == -1
        with pytest.raises(RuntimeError):
            rx.serve_frames()


class FakeLoop:
    """Records what the readiness callback asks of its loop (only remove_reader)."""

    def __init__(self):
        self.removed = []

    def remove_reader(self, fd):
        self.removed.append(fd)


def waiting_buffer(sock, serve):
    """A bare receive buffer waiting for `sock`, as Receiver._readable leaves it."""
    c = ReceiveBuffer()
    c._buf = bytearray(256)
    c.fd = sock.fileno()
    c._loop = FakeLoop()
    c._watching = True
    c.serve = serve
    c._waiter = asyncio.get_running_loop().create_future()
    return c


@in_a_loop
def test_the_readiness_callback_serves_and_wakes_as_the_python_one_did():
    """on_readable (the loop's readiness callback, C): nobody waiting stops the watch; what
    arrives is served without waking the waiter while serve says False; True, or an answer
    that waits ((awaitable, started): kept in `answering`), wakes it with True; an error of
    serve, of the receive, a peer's end and an answer that is neither are raised where the
    waiter waits; a waiter that serve forgot is woken all the same."""
    a, b = socket.socketpair()
    with a, b:
        a.setblocking(False)
        outcomes = []
        c = waiting_buffer(a, lambda: outcomes.pop(0))
        waiter = c._waiter
        assert c.on_readable() is None and not waiter.done()     # nothing there: still waiting
        b.sendall(b"x")
        outcomes.append(False)
        c.on_readable()
        assert not waiter.done() and state(c)[:2] == (0, 1) and c._waiter is waiter
        b.sendall(b"y")
        outcomes.append(True)
        c.on_readable()
        assert waiter.result() is True and c._waiter is None and c.answering is None
        c.on_readable()                     # nobody waits: the watch stops
        assert c._loop.removed == [a.fileno()] and not c._watching
        pending = (object(), 1.5)
        for sent, outcome, check in [
                (b"z", pending, lambda w: w.result() is True and c.answering is pending),
                (b"z", ConnectionError("refused"), lambda w: isinstance(w.exception(), ConnectionError)),
                (b"z", "neither", lambda w: isinstance(w.exception(), TypeError)),
                (b"z", "forget", lambda w: w.result() is True and c._waiter is None),
                (b"z", "close", lambda w: w.result() is True and c.serve is None)]:
            c._waiter = w = asyncio.get_running_loop().create_future()

            def made(outcome):
                def serve():
                    if isinstance(outcome, Exception):
                        raise outcome
                    if outcome == "forget":
                        c._waiter = None
                        return True
                    if outcome == "close":
                        c.serve = None      # (its only reference, dropped while it runs)
                        return True
                    return outcome
                return serve
            c.serve = made(outcome)
            b.sendall(sent)
            c.on_readable()
            assert check(w), outcome
            c.answering = None
        c._waiter = w = asyncio.get_running_loop().create_future()
        c.serve = None                      # no serve: woken to receive itself
        c.on_readable()
        assert w.result() is False
        c._waiter = w = asyncio.get_running_loop().create_future()
        c.serve = lambda: False
        b.close()                           # the peer's end
        while not w.done():
            c.on_readable()
        assert isinstance(w.exception(), ConnectionResetError)
        c._waiter = w = asyncio.get_running_loop().create_future()
        c.fd = -1                           # a receive that fails
        c.on_readable()
        assert isinstance(w.exception(), OSError) and w.exception().errno == errno.EBADF


def test_the_readiness_callback_without_its_loop_raises():
    c = ReceiveBuffer()
    with pytest.raises(RuntimeError):
        c.on_readable()                     # nobody waits, no loop to stop watching
    c._buf = bytearray(8)
    c._waiter = 5                           # not a future
    with pytest.raises(AttributeError):
        c.on_readable()
