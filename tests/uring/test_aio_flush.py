"""FlushingEventLoop: the ops a loop iteration prepares are submitted in the poll that ends it,
with no extra turn of the loop, and never left behind while the loop blocks."""
import asyncio
import os
import socket
import time

import pytest

from smbring.uring import aio


class CountingSelector(aio.RingFlushingSelector):
    """Counts the loop's polls (each is one epoll_wait)."""

    def __init__(self):
        super().__init__()
        self.polls = 0

    def select(self, timeout=None):
        self.polls += 1
        return super().select(timeout)


def run_on(loop, coro, timeout=10):
    try:
        return loop.run_until_complete(asyncio.wait_for(coro, timeout))
    finally:
        loop.close()


def test_the_ring_of_a_flushing_loop_submits_without_call_soon():
    async def main():
        ring = aio.get_ring()
        assert ring._flusher is asyncio.get_running_loop().ring_flusher
        assert await ring.nop() == 0
        results = await asyncio.gather(*(ring.nop() for _ in range(300)))
        assert results == [0] * 300

    run_on(aio.FlushingEventLoop(), main())


def polls_per_sequential_op(loop, selector, count=200):
    async def main():
        ring = aio.get_ring()
        await ring.nop()
        before = selector.polls
        for _ in range(count):
            await ring.nop()
        return (selector.polls - before) / count

    return run_on(loop, main())


def test_an_awaited_op_costs_no_extra_turn_of_the_loop():
    flushing = CountingSelector()
    per_op = polls_per_sequential_op(aio.FlushingEventLoop(flushing), flushing)
    assert per_op <= 1.05
    # the same ops on asyncio's loop with the call_soon flush poll twice each
    plain = CountingSelector()      # (an ordinary selector here: the loop has no ring_flusher)
    per_op_plain = polls_per_sequential_op(asyncio.SelectorEventLoop(plain), plain)
    assert per_op_plain >= 1.9


def test_an_op_prepared_just_before_the_loop_blocks_completes_with_no_other_event():
    """The loop has nothing else to do: only the submission at its poll can finish the read."""
    async def main():
        loop = asyncio.get_running_loop()
        ring = aio.get_ring()
        a, b = socket.socketpair()
        with a, b:
            b.send(b"x")
            done = loop.create_future()

            def prepare():      # a plain callback, the last thing the loop runs before it waits
                buf = bytearray(1)
                ring.ring.recv(a.fileno(), buf, 0, callback=lambda req: done.set_result(req.res))
                ring.kick()

            loop.call_later(0.01, prepare)
            started = time.monotonic()
            assert await asyncio.wait_for(done, 5) == 1
            assert time.monotonic() - started < 1

    run_on(aio.FlushingEventLoop(), main())


def test_ops_prepared_by_completion_callbacks_during_the_flush_go_in_at_once():
    """A completion dispatched inside the poll's flush may prepare the next op: the loop must
    not block with it still unsubmitted."""
    async def main():
        loop = asyncio.get_running_loop()
        ring = aio.get_ring()
        done = loop.create_future()
        left = [100]

        def step(req):
            left[0] -= 1
            if left[0] == 0:
                done.set_result(True)
            else:
                ring.ring.nop(callback=step)
                ring.kick()

        ring.ring.nop(callback=step)
        ring.kick()
        started = time.monotonic()
        assert await asyncio.wait_for(done, 5)
        assert time.monotonic() - started < 1

    run_on(aio.FlushingEventLoop(), main())


def test_completions_that_wait_for_the_kernel_still_wake_the_loop():
    """A receive that has nothing yet is completed later through the ring's eventfd."""
    async def main():
        loop = asyncio.get_running_loop()
        ring = aio.get_ring()
        a, b = socket.socketpair()
        with a, b:
            buf = bytearray(5)
            pending = asyncio.ensure_future(ring.recv(a.fileno(), buf))
            await asyncio.sleep(0.05)
            assert not pending.done()
            loop.call_later(0.05, b.send, b"hello")
            assert await asyncio.wait_for(pending, 5) == 5 and buf == b"hello"

    run_on(aio.FlushingEventLoop(), main())


def test_a_failed_submission_is_reported_and_the_loop_goes_on():
    """A completion callback that raises fails the flush inside the poll: the loop reports it
    through its exception handler, as it would a failing callback, and keeps running."""
    async def main():
        loop = asyncio.get_running_loop()
        reported = []
        loop.set_exception_handler(lambda loop, context: reported.append(context))
        ring = aio.get_ring()

        def explode(req):
            raise RuntimeError("boom")

        ring.ring.nop(callback=explode)
        ring.kick()
        await asyncio.sleep(0.05)
        assert [type(c.get("exception")) for c in reported] == [RuntimeError]
        assert await ring.nop() == 0      # the ring still works

    run_on(aio.FlushingEventLoop(), main())


def test_a_closed_ring_with_prepared_ops_does_not_break_the_poll():
    async def main():
        ring = aio.get_ring()
        ring.ring.nop()
        ring.kick()
        ring.close_ring()
        await asyncio.sleep(0.01)
        assert aio.get_ring() is not ring and await aio.get_ring().nop() == 0

    run_on(aio.FlushingEventLoop(), main())


def test_the_servers_asyncio_loop_is_a_flushing_loop():
    """`--event-loop asyncio` is the flushing loop (plain asyncio's without io_uring); left to
    the default, the server runs on uvloop."""
    from types import SimpleNamespace

    import uvloop

    from smbring.server.cli import event_loop_factory
    args = SimpleNamespace(event_loop="asyncio", no_io_uring=False)
    assert event_loop_factory(args) is aio.FlushingEventLoop
    assert event_loop_factory(SimpleNamespace(event_loop="asyncio", no_io_uring=True)) is None
    env = os.environ.pop("SMBRING_EVENT_LOOP", None)
    try:
        assert event_loop_factory(SimpleNamespace(event_loop=None, no_io_uring=False)) is uvloop.new_event_loop
    finally:
        if env is not None:
            os.environ["SMBRING_EVENT_LOOP"] = env
