"""RingEventLoop: what CPython's own tests (test_loop_cpython.py) do not look at — the shared
ring, where the loop waits, readiness fetched before a change, modify(), closing with ring
requests in flight — each on a real kernel, real sockets and pipes, in both wait modes."""
from __future__ import annotations

import asyncio
import errno
import os
import platform
import selectors
import socket
import threading
import time

import pytest

from smbring.uring import aio
from smbring.uring.loop import RingEventLoop, RingEventLoopPolicy, RingSelector

MODES = {"epoll_wait": None, "poll_add": False}
IO_URING_ENTER = {"x86_64": 426, "aarch64": 426}        # the syscall numbers of the waits
EPOLL_WAITS = {"x86_64": {232, 281, 441}, "aarch64": {22, 441}}


@pytest.fixture(params=list(MODES))
def loop(request):
    loop = RingEventLoop(use_epoll_wait=MODES[request.param])
    yield loop
    loop.close()


def run(loop, coro, timeout=10):
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


def test_aio_shares_the_loops_ring_without_an_eventfd(loop):
    async def main():
        aring = aio.get_ring()
        assert aring.ring is loop.uring
        assert aring._eventfd == -1           # nothing for the loop to watch
        a, b = socket.socketpair()
        with a, b:
            buf = bytearray(16)
            receiving = asyncio.ensure_future(aring.recv(b.fileno(), buf))
            await asyncio.sleep(0.02)
            assert not receiving.done()
            assert await aring.send(a.fileno(), b"through the ring") == 16
            assert await receiving == 16
            assert bytes(buf) == b"through the ring"
        fd = os.open(os.path.realpath(__file__), os.O_RDONLY)
        try:
            head = bytearray(64)
            assert await aring.read(fd, head, 0) == 64
            with open(__file__, "rb") as f:
                assert bytes(head) == f.read(64)
        finally:
            os.close(fd)
        with pytest.raises(OSError) as e:
            await aring.read(12345, bytearray(1), 0)      # no such descriptor
        assert e.value.errno == errno.EBADF
    run(loop, main())


def test_a_ring_completion_wakes_the_blocked_loop(loop):
    """No eventfd and no timer: only the recv's completion, in the same wait, can wake it."""
    a, b = socket.socketpair()

    async def main():
        buf = bytearray(5)
        threading.Timer(0.2, a.send, (b"wake!",)).start()
        started = time.monotonic()
        assert await aio.get_ring().recv(b.fileno(), buf) == 5
        return time.monotonic() - started
    with a, b:
        waited = run(loop, main())
    assert 0.15 < waited < 5


@pytest.mark.skipif(platform.machine() not in IO_URING_ENTER, reason="syscall numbers known for x86_64, aarch64")
def test_the_idle_loop_waits_in_io_uring_enter():
    """Read from /proc which system call the loop's thread is blocked in while it is idle."""
    seen = {}
    started = threading.Event()

    def loop_thread():
        loop = RingEventLoop()
        seen["tid"] = threading.get_native_id()
        started.set()
        try:
            loop.run_until_complete(asyncio.sleep(2.0))
        finally:
            loop.close()
    t = threading.Thread(target=loop_thread)
    t.start()
    try:
        assert started.wait(10)
        for _ in range(30):             # until the thread has settled into its wait
            with open(f"/proc/self/task/{seen['tid']}/syscall") as f:
                number = f.read().split()[0]        # a number, or "running"
            if number == str(IO_URING_ENTER[platform.machine()]):
                break
            time.sleep(0.05)
    finally:
        t.join()
    assert number == str(IO_URING_ENTER[platform.machine()])
    assert number not in map(str, EPOLL_WAITS[platform.machine()])


def test_a_reader_that_leaves_data_is_called_again(loop):
    """Level-triggered: one byte per call, the reader is called until the pipe is empty."""
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.write(w, b"abcde")
    got = []
    done = loop.create_future()

    def one_byte():
        got.append(os.read(r, 1))
        if len(got) == 5:
            loop.remove_reader(r)
            done.set_result(None)
    loop.add_reader(r, one_byte)
    try:
        run(loop, done)
    finally:
        os.close(r)
        os.close(w)
    assert b"".join(got) == b"abcde"


def test_modify_adds_and_drops_the_writer(loop):
    """add_writer on an fd that has a reader is selector.modify(): the writer must be called
    (the fd is writable); after remove_writer it must not be called again."""
    a, b = socket.socketpair()
    a.setblocking(False)
    calls = {"read": 0, "write": 0}
    written = loop.create_future()

    def on_read():
        calls["read"] += 1
        a.recv(100)

    def on_write():
        calls["write"] += 1
        loop.remove_writer(a)
        written.set_result(None)

    async def main():
        loop.add_reader(a, on_read)
        await asyncio.sleep(0.01)
        loop.add_writer(a, on_write)           # modify(READ -> READ|WRITE)
        await written
        await asyncio.sleep(0.05)              # writable all along: a stale writer would run
        b.send(b"x")
        for _ in range(100):
            if calls["read"]:
                break
            await asyncio.sleep(0.01)
    with a, b:
        run(loop, main())
        loop.remove_reader(a)
    assert calls == {"read": 1, "write": 1}


def test_readiness_fetched_before_unregister_is_not_handed_to_a_new_file(loop):
    """The wait completes inside any call that reaps the ring (here a process() from a
    callback) and its events are handed out at the next select(). An fd removed and reused
    for a new, empty pipe meanwhile must not be reported readable from the old events."""
    r1, w1 = os.pipe()
    called = []

    async def main():
        loop.add_reader(r1, called.append, "old")
        await asyncio.sleep(0)                 # the wait is armed and submitted, nothing ready
        os.write(w1, b"old data")
        loop.uring.process()                   # its completion reaped now, outside select()
        loop.remove_reader(r1)
        os.close(r1)
        os.close(w1)
        r2, w2 = os.pipe()                     # most likely the same numbers again
        try:
            loop.add_reader(r2, called.append, "new (empty)")
            await asyncio.sleep(0.1)
            loop.remove_reader(r2)
            return r2
        finally:
            os.close(r2)
            os.close(w2)
    reused = run(loop, main())
    assert called == [], (called, reused == r1)


def test_pending_ring_ops_are_cancelled_when_the_loop_closes():
    loop = RingEventLoop()
    a, b = socket.socketpair()
    results = []
    with a, b:
        async def start():
            aio.get_ring()
            loop.uring.recv(b.fileno(), bytearray(8), 0, callback=lambda req: results.append(req.res))
        loop.run_until_complete(start())
        loop.run_until_complete(asyncio.sleep(0.01))
        assert results == []                    # submitted, pending
        loop.close()                            # must not raise
        assert results == [-errno.ECANCELED]
        a.send(b"late")                         # nothing reads it any more
        assert b.recv(8) == b"late"
    with pytest.raises(RuntimeError):
        loop.uring


def test_timeouts_are_kept(loop):
    async def main():
        started = time.monotonic()
        await asyncio.sleep(0.05)
        slept = time.monotonic() - started
        started = time.monotonic()
        loop.call_later(0.03, lambda: None)
        await asyncio.sleep(0)
        return slept, time.monotonic() - started
    slept, turn = run(loop, main())
    assert 0.05 <= slept < 1.0
    assert turn < 0.03                          # a ready task does not wait for the timer


def test_a_loop_made_in_one_thread_runs_in_another():
    """The ring belongs to the thread that first uses it, which is the one running the loop."""
    loop = RingEventLoop()
    result = {}

    def runner():
        async def main():
            return await aio.get_ring().nop()
        result["nop"] = loop.run_until_complete(main())
        loop.close()
    t = threading.Thread(target=runner)
    t.start()
    t.join(10)
    assert result == {"nop": 0}


def test_policy_and_runner():
    with asyncio.Runner(loop_factory=RingEventLoop) as runner:
        assert isinstance(runner.get_loop(), RingEventLoop)
        assert runner.run(asyncio.sleep(0, "ok")) == "ok"
    assert isinstance(RingEventLoopPolicy().new_event_loop(), RingEventLoop)


def test_selector_rejects_what_selectors_reject():
    sel = RingSelector()
    r, w = os.pipe()
    try:
        with pytest.raises(ValueError):
            sel.register(r, 0)
        with pytest.raises(ValueError):
            sel.register(r, 4)
        with pytest.raises(ValueError):
            sel.register(-1, selectors.EVENT_READ)
        key = sel.register(r, selectors.EVENT_READ, "data")
        with pytest.raises(KeyError):
            sel.register(r, selectors.EVENT_READ)
        assert sel.get_key(r) == key and len(sel.get_map()) == 1
        assert sel.select(0) == []
        os.write(w, b"x")
        assert sel.select(1) == [(key, selectors.EVENT_READ)]
        assert sel.select(0) == [(key, selectors.EVENT_READ)]       # still unread
        sel.unregister(r)
        with pytest.raises(KeyError):
            sel.unregister(r)
        with pytest.raises(KeyError):
            sel.modify(r, selectors.EVENT_READ)
        assert sel.select(0) == []
    finally:
        sel.close()
        os.close(r)
        os.close(w)


def test_waits_submit_what_was_prepared_even_without_time_left():
    """The loop's select() relies on every wait submitting first: a blocking wait submits in
    its one enter, and one whose time is up before it could block still submits."""
    from smbring.uring import Ring
    with Ring(8) as ring:
        done = []
        for timeout in (1e-9, 1e-6, 0.5):
            ring.nop(callback=done.append)
            ring.wait(1, timeout)
            assert len(done) == 1, timeout
            done.clear()
        a, b = socket.socketpair()
        with a, b:
            buf = bytearray(4)
            ring.recv(b.fileno(), buf, 0, callback=done.append)
            threading.Timer(0.1, a.send, (b"late",)).start()
            ring.wait(1, 5.0)            # submits the recv and blocks until it completes
            assert [req.res for req in done] == [4] and bytes(buf) == b"late"
