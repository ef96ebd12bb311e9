"""The core's contract with its backends: choosing one, a backend that fails to set up, the
step that only waits, and a uring context that outlives its ring."""
import os

import pytest

from smbring import _events, uring
from smbring.events import READ, Context

BACKENDS = ["poll", "epoll"] + (["uring"] if uring.available() else [])


def bare_context() -> _events.Context:
    """A C-level Context whose __init__ has not run (the Python class always runs it)."""
    return _events.Context.__new__(_events.Context)


def test_a_context_never_initialised_polls():
    c = bare_context()
    assert c.backend == "poll" and not c.closed
    fired = []
    c.add_timer(0, fired.append)
    assert c.loop_once(1) is True and len(fired) == 1
    c.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_init_twice_is_refused(backend):
    with Context(backend) as c:
        with pytest.raises(RuntimeError, match="called twice"):
            _events.Context.__init__(c, backend, c.ring)
        r, w = os.pipe()
        try:
            seen = []
            c.add_fd(r, READ, lambda fde, flags: seen.append(os.read(r, 1)))
            os.write(w, b"x")
            assert c.loop_once(1) is True and seen == [b"x"]   # still the first backend's
        finally:
            os.close(r)
            os.close(w)


@pytest.mark.skipif("uring" not in BACKENDS, reason="io_uring unavailable")
def test_a_backend_that_fails_to_set_up_leaves_a_closed_context():
    c = bare_context()
    with pytest.raises(TypeError, match="needs ring"):
        c.__init__("uring", None)
    assert c.closed and c.ring is None
    with pytest.raises(ValueError, match="closed"):
        c.add_timer(0, print)
    with pytest.raises(ValueError, match="closed"):
        c.loop_once(0)
    with pytest.raises(TypeError, match="expected a smbring.uring.Ring"):
        bare_context().__init__("uring", object())


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_step_that_only_waits_runs_one_ready_handler(backend):
    """No immediates, signals or timers, no timeout: the short path straight to the wait."""
    with Context(backend) as c:
        r, w = os.pipe()
        try:
            seen = []
            c.add_fd(r, READ, lambda fde, flags: seen.append(os.read(r, 1)))
            os.write(w, b"ab")
            assert c.loop_once() is True and c.loop_once() is True and seen == [b"a", b"b"]
        finally:
            os.close(r)
            os.close(w)


@pytest.mark.parametrize("backend", ["poll", "epoll"])
def test_waiting_with_nothing_to_wait_for_is_an_error_not_a_hang(backend):
    with Context(backend) as c:
        with pytest.raises(RuntimeError, match="wait forever"):
            c.loop_once()


@pytest.mark.skipif("uring" not in BACKENDS, reason="io_uring unavailable")
def test_uring_context_closed_after_its_ring():
    ring = uring.Ring(8)
    c = Context("uring", ring)
    r, w = os.pipe()
    try:
        c.add_fd(r, READ, lambda fde, flags: None)
        assert c.loop_once(0) is False          # the wait is now armed in the ring
        ring.close()                           # cancels it: the context sees the completion
        c.close()
        assert c.closed and c.ring is None
    finally:
        os.close(r)
        os.close(w)


@pytest.mark.skipif("uring" not in BACKENDS, reason="io_uring unavailable")
def test_uring_context_dropped_with_its_wait_armed():
    ring = uring.Ring(8)
    for _ in range(50):
        c = Context("uring", ring)
        c.add_timer(10, print)
        assert c.loop_once(0) is False
        del c                                  # release cancels the wait and reaps it
    assert ring.inflight == 0
    ring.close()
