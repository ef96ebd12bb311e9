"""The asyncio glue: awaitable ops on a ring driven by a running asyncio loop."""
import asyncio
import errno
import os
import socket

import pytest

from smbring.uring import aio


def arun(coro):
    return asyncio.run(asyncio.wait_for(coro, 10))


def test_awaitable_file_ops(tmp_path):
    async def main():
        ring = aio.get_ring()
        assert aio.get_ring() is ring
        d = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
        fd = await ring.openat2(d, "f", os.O_CREAT | os.O_RDWR, 0o644)
        assert await ring.write(fd, b"hello world", 0) == 11
        await ring.fsync(fd)
        buf = bytearray(5)
        assert await ring.read(fd, buf, 6) == 5 and buf == b"world"
        st = await ring.statx(d, "f")
        assert st.size == 11
        await ring.close(fd)
        with pytest.raises(OSError) as e:
            await ring.openat2(d, "missing")
        assert e.value.errno == errno.ENOENT
        # many concurrent ops, one submission per loop iteration
        results = await asyncio.gather(*(ring.nop() for _ in range(500)))
        assert results == [0] * 500
        os.close(d)

    arun(main())


def test_awaitable_socket_ops_and_cancellation():
    async def main():
        ring = aio.get_ring()
        a, b = socket.socketpair()
        try:
            buf = bytearray(16)
            recv = asyncio.ensure_future(ring.recv(a.fileno(), buf))
            await asyncio.sleep(0.01)
            assert not recv.done()
            assert await ring.send(b.fileno(), b"abc") == 3
            assert await recv == 3 and buf[:3] == b"abc"
            # cancelling the awaiting task cancels the kernel request
            pending = asyncio.ensure_future(ring.recv(a.fileno(), bytearray(4)))
            await asyncio.sleep(0.01)
            pending.cancel()
            with pytest.raises(asyncio.CancelledError):
                await pending
            for _ in range(10):
                await asyncio.sleep(0)
            assert ring.ring.inflight == 0
            # other coroutines keep running while a recv waits in the kernel
            ticks = 0

            async def ticker():
                nonlocal ticks
                while True:
                    ticks += 1
                    await asyncio.sleep(0.001)

            t = asyncio.ensure_future(ticker())
            later = asyncio.ensure_future(ring.recv(a.fileno(), bytearray(4)))
            await asyncio.sleep(0.05)
            await ring.send(b.fileno(), b"late")
            assert await later == 4 and ticks > 5
            t.cancel()
            srv = socket.create_server(("127.0.0.1", 0))
            cli = socket.create_connection(srv.getsockname())
            conn, _ = srv.accept()
            sent, copied = await ring.send_zc(conn.fileno(), b"zero-copy")
            assert sent == 9 and copied is True and cli.recv(20) == b"zero-copy"
            for s in (srv, cli, conn):
                s.close()
            await ring.sleep(0.01)
        finally:
            a.close()
            b.close()

    arun(main())


def test_a_ring_an_outside_loop_drives_goes_without_defer_taskrun():
    """An AsyncRing's own ring is made with the default setup flags less DEFER_TASKRUN, whose
    deferred work (a send's retries once its socket has room) the eventfd announced late:
    with it, an 8 MiB send on loopback TCP took ~20 ms. A ring its own loop waits in keeps
    the default flags (Ring())."""
    from smbring._uring import SETUP_DEFER_TASKRUN
    from smbring.uring import Ring, eventfd_setup_flags

    with Ring(8) as default:
        if not default.setup_flags & SETUP_DEFER_TASKRUN:
            pytest.skip("the kernel refuses DEFER_TASKRUN: nothing to leave out")
        default_flags = default.setup_flags

    async def main():
        ring = aio.get_ring()
        assert ring.ring.setup_flags == eventfd_setup_flags() == default_flags & ~SETUP_DEFER_TASKRUN
        # and a send larger than the socket takes at once completes whole, byte-exact
        a, b = socket.socketpair()
        with a, b:
            a.setblocking(False)
            data = bytes(range(256)) * (32 << 12)       # 32 MiB
            got = bytearray()

            def read_all():
                while len(got) < len(data):
                    got.extend(b.recv(1 << 20))

            reader = asyncio.get_running_loop().run_in_executor(None, read_all)
            sent = 0
            while sent < len(data):
                sent += await ring.send(a.fileno(), memoryview(data)[sent:], 0)
            await reader
            assert bytes(got) == data

    asyncio.run(main())
