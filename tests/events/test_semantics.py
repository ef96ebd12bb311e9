"""tevent semantics, each checked on every backend against real pipes, sockets and signals."""
import os
import signal
import socket
import time

import pytest

from smbring import uring
from smbring.events import ERROR, READ, WRITE, Context, best_backend

BACKENDS = ["poll", "epoll"] + (["uring"] if uring.available() else [])


@pytest.fixture(params=BACKENDS)
def ctx(request):
    c = Context(request.param)
    assert c.backend == request.param
    yield c
    c.close()


@pytest.fixture
def pipe():
    r, w = os.pipe()
    yield r, w
    for fd in (r, w):
        try:
            os.close(fd)
        except OSError:
            pass


def test_auto_picks_and_says_which():
    with Context() as c:
        assert c.backend == best_backend()
        if uring.available() and uring.features().ops.get("epoll_wait"):
            assert c.backend == "uring" and c.ring is not None


def test_one_handler_per_loop_once(ctx, pipe):
    r, w = pipe
    calls = []
    os.write(w, b"abc")
    ctx.add_fd(r, READ, lambda fde, fl: calls.append("fd"))
    ctx.add_immediate(lambda im: calls.append("im1"))
    ctx.add_immediate(lambda im: calls.append("im2"))
    ctx.add_timer(0, lambda t: calls.append("timer"))
    for expected in (["im1"], ["im1", "im2"], ["im1", "im2", "timer"], ["im1", "im2", "timer", "fd"]):
        assert ctx.loop_once() is True
        assert calls == expected


def test_timers_fire_in_order_and_never_early(ctx):
    fired = []
    start = time.monotonic()
    for delay in (0.06, 0.02, 0.04):
        ctx.add_timer(delay, lambda t, d=delay: fired.append((d, time.monotonic() - start)))
    while len(fired) < 3:
        ctx.loop_once()
    assert [d for d, _ in fired] == [0.02, 0.04, 0.06]
    assert all(elapsed >= d for d, elapsed in fired)


def test_next_timer_bounds_the_fd_wait(ctx, pipe):
    r, _ = pipe
    ctx.add_fd(r, READ, lambda fde, fl: pytest.fail("nothing to read"))
    fired = []
    ctx.add_timer(0.05, lambda t: fired.append(time.monotonic()))
    start = time.monotonic()
    # A signal to the process (a child of another test ending) may end the wait early:
    # loop_once then returns False having run nothing, and the next one waits out the rest.
    ran = False
    while not ran and time.monotonic() - start < 1.0:
        ran = ctx.loop_once()
    assert ran is True
    assert fired and 0.05 <= fired[0] - start < 1.0


def test_level_triggered(ctx, pipe):
    r, w = pipe
    os.write(w, b"x")
    calls = []
    ctx.add_fd(r, READ, lambda fde, fl: calls.append(fl))     # never consumes
    for _ in range(3):
        ctx.loop_once()
    assert calls == [READ] * 3
    os.read(r, 1)
    assert ctx.loop_once(0.05) is False                         # consumed: nothing ready


def test_fair_rotation_among_ready_fds(ctx):
    pipes = [os.pipe() for _ in range(3)]
    order = []
    try:
        for i, (r, w) in enumerate(pipes):
            os.write(w, b"x")
            ctx.add_fd(r, READ, lambda fde, fl, i=i: order.append(i))
        for _ in range(9):
            ctx.loop_once()
        # every ready fd is served before any is served twice, again and again
        for k in range(0, 9, 3):
            assert sorted(order[k:k + 3]) == [0, 1, 2], order
    finally:
        for r, w in pipes:
            os.close(r)
            os.close(w)


def test_separate_read_and_write_handlers_on_one_fd(ctx):
    a, b = socket.socketpair()
    try:
        b.send(b"x")
        seen = []
        ctx.add_fd(a.fileno(), READ, lambda fde, fl: seen.append(("read", fl)))
        ctx.add_fd(a.fileno(), WRITE, lambda fde, fl: seen.append(("write", fl)))
        ctx.loop_once()
        ctx.loop_once()
        assert sorted(seen) == [("read", READ), ("write", WRITE)]
    finally:
        a.close()
        b.close()


def test_flags_change_on_live_event(ctx, pipe):
    r, w = pipe
    seen = []
    fde = ctx.add_fd(w, 0, lambda fde, fl: seen.append(fl))
    assert fde.flags == 0 and ctx.loop_once(0.02) is False
    fde.flags = WRITE
    assert ctx.loop_once() is True and seen == [WRITE]
    fde.flags = 0
    assert ctx.loop_once(0.02) is False and seen == [WRITE]
    with pytest.raises(ValueError):
        fde.flags = 64


def test_error_flag_reports_hangup_without_reading(ctx):
    a, b = socket.socketpair()
    try:
        seen = []
        ctx.add_fd(a.fileno(), ERROR, lambda fde, fl: seen.append(fl))
        b.send(b"data")                              # readable, but ERROR does not care
        assert ctx.loop_once(0.05) is False
        b.close()
        assert ctx.loop_once(1) is True and seen == [ERROR]
    finally:
        a.close()


def test_closing_through_the_library_stops_and_releases(ctx):
    srv = socket.create_server(("127.0.0.1", 0))
    peer = socket.create_connection(srv.getsockname())
    conn, _ = srv.accept()
    srv.close()
    fd = conn.detach()
    try:
        fde = ctx.add_fd(fd, READ, lambda fde, fl: pytest.fail("closed event ran"))
        pending = None
        if ctx.backend == "uring":
            pending = ctx.ring.recv(fd, bytearray(8))     # a ring op holding the file
            ctx.ring.submit()
        fde.close()
        assert not fde.active
        if pending is not None:
            assert pending.done
        peer.settimeout(5)
        assert peer.recv(8) == b""                         # the peer sees EOF: really closed
        with pytest.raises(OSError):
            os.fstat(fd)
    finally:
        peer.close()


def test_several_contexts_on_one_fd_and_an_idle_context(pipe):
    r, w = pipe
    os.write(w, b"x")
    idle = Context(BACKENDS[-1])
    idle.add_timer(3600, lambda t: None)
    contexts = [Context(b) for b in BACKENDS]
    try:
        hits = {c.backend: 0 for c in contexts}
        for c in contexts:
            c.add_fd(r, READ, lambda fde, fl, c=c: hits.__setitem__(c.backend, hits[c.backend] + 1))
        for c in contexts:
            assert c.loop_once(1) is True
        assert all(v == 1 for v in hits.values())
    finally:
        for c in contexts + [idle]:
            c.close()


def test_handler_exception_propagates_and_context_stays_usable(ctx, pipe):
    r, w = pipe

    def boom(im):
        raise KeyError("from handler")

    ctx.add_immediate(boom)
    with pytest.raises(KeyError):
        ctx.loop_once()
    os.write(w, b"x")
    ctx.add_fd(r, READ, lambda fde, fl: os.read(r, 1))
    assert ctx.loop_once() is True


def test_signals_run_in_loop_context(ctx):
    seen = []
    in_handler = {"now": False}
    se = ctx.add_signal(signal.SIGUSR1, lambda se, signum, count: seen.append((signum, count, in_handler["now"])))
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGUSR1)
        assert seen == []                                  # nothing runs inside the signal
        assert ctx.loop_once(1) is True
        assert seen and seen[0][0] == signal.SIGUSR1 and sum(c for _, c, _ in seen) == 2
        # a signal ends a wait for fds
        r, w = os.pipe()
        ctx.add_fd(r, READ, lambda fde, fl: None)
        start = time.monotonic()
        import threading
        threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGUSR1)).start()
        assert ctx.loop_once(5) is True and time.monotonic() - start < 2
        os.close(r)
        os.close(w)
    finally:
        se.cancel()


def test_cancel_every_kind(ctx, pipe):
    r, w = pipe
    os.write(w, b"x")
    events = [ctx.add_fd(r, READ, lambda *a: pytest.fail("cancelled fd ran")),
              ctx.add_timer(0, lambda *a: pytest.fail("cancelled timer ran")),
              ctx.add_immediate(lambda *a: pytest.fail("cancelled immediate ran")),
              ctx.add_signal(signal.SIGUSR2, lambda *a: pytest.fail("cancelled signal ran"))]
    assert all(e.cancel() for e in events)
    assert not any(e.cancel() for e in events)
    assert ctx.loop_wait() == 0


def test_bad_arguments(ctx):
    with pytest.raises(ValueError):
        ctx.add_fd(-1, READ, print)
    with pytest.raises(ValueError):
        ctx.add_fd(0, 64, print)
    with pytest.raises(TypeError):
        ctx.add_immediate(42)
    with pytest.raises(ValueError):
        ctx.add_timer(-1, print)
    with pytest.raises(ValueError):
        ctx.add_signal(signal.SIGKILL, print)
    with pytest.raises(ValueError):
        Context("kqueue")


@pytest.mark.skipif("uring" not in BACKENDS, reason="io_uring unavailable")
def test_uring_mixes_fd_events_with_ring_completions(pipe):
    r, w = pipe
    with Context("uring") as c:
        ring = c.ring
        done = []
        buf = bytearray(5)
        ring.read(r, buf, callback=lambda req: done.append(("ring read", req.res)))
        other_r, other_w = os.pipe()
        c.add_fd(other_r, READ, lambda fde, fl: done.append(("fd", os.read(other_r, 1))))
        os.write(w, b"hello")
        os.write(other_w, b"z")
        assert c.loop_once(1) and c.loop_once(1)
        assert sorted(done) == [("fd", b"z"), ("ring read", 5)] and buf == b"hello"
        os.close(other_r)
        os.close(other_w)
