"""Every data path delivers byte-identical payloads over a real TCP connection."""
import asyncio
import contextlib
import hashlib
import os
import socket

import pytest

from smbring import uring

if not uring.available():
    pytest.skip(f"io_uring unavailable: {uring.unavailable_reason()}", allow_module_level=True)

from smbring.datapath import FileRange, SendDescriptor, Sender, choose_path  # noqa: E402
from smbring.vfs.modules import Posix  # noqa: E402

POSIX = Posix()    # reads what must be read into memory
from smbring.uring import aio  # noqa: E402


def tcp_pair():
    srv = socket.create_server(("127.0.0.1", 0))
    cli = socket.create_connection(srv.getsockname())
    conn, _ = srv.accept()
    srv.close()
    for s in (cli, conn):
        s.setblocking(False)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return cli, conn


@contextlib.asynccontextmanager
async def sender_of(path, read_path, flags=os.O_RDONLY):
    """(client socket, the file's fd, a Sender on the server end) over a fresh TCP pair."""
    cli, conn = tcp_pair()
    fd = os.open(path, flags)
    sender = Sender(aio.get_ring(), conn, read_path=read_path)
    try:
        yield cli, fd, sender
    finally:
        sender.close()
        os.close(fd)
        cli.close()
        conn.close()


async def receive(loop, sock, n):
    out = bytearray()
    while len(out) < n:
        chunk = await loop.sock_recv(sock, 1 << 20)
        assert chunk, "connection closed early"
        out += chunk
    return bytes(out)


@pytest.mark.parametrize("path,crowded", [("copy", False), ("mmap", False), ("splice", False),
                                          ("zc", False), ("copy", True), ("mmap", True)])
def test_paths_deliver_identical_bytes(tmp_path, path, crowded):
    """Every path, and large copies handed to io-wq workers when other clients wait."""
    data = os.urandom(3 * (1 << 20) + 12345)
    f = tmp_path / "payload"
    f.write_bytes(data)

    async def main():
        loop = asyncio.get_running_loop()
        ring = aio.get_ring()
        cli, conn = tcp_pair()
        fd = os.open(f, os.O_RDONLY)
        sender = Sender(ring, conn, read_path=path, crowded=lambda: crowded)
        try:
            ranges = [(0, 100), (5, 1 << 20), (len(data) - 7000, 7000), (123, len(data) - 123)]
            expected = b""
            sends = []
            for i, (off, ln) in enumerate(ranges):
                header = b"HDR%d:" % i
                expected += header + data[off:off + ln]
                sends.append(SendDescriptor(header, FileRange(fd, off, ln, POSIX), splice_safe=True))
            sends.append(SendDescriptor(b"plain-buffer", b"-payload"))
            expected += b"plain-buffer-payload"
            # concurrent sends still produce whole, ordered frames
            recv = asyncio.ensure_future(receive(loop, cli, len(expected)))
            used = await asyncio.gather(*(sender.send(d) for d in sends))
            got = await recv
            assert hashlib.sha256(got).digest() == hashlib.sha256(expected).digest()
            assert used[:4] == [path] * 4 and used[4] == "copy"
            if path == "zc":
                assert sender.stats.zc_sends >= 4
                assert sender.stats.zc_copied == sender.stats.zc_sends  # loopback always copies
        finally:
            sender.close()
            os.close(fd)
            cli.close()
            conn.close()

    asyncio.run(asyncio.wait_for(main(), 30))


def test_file_shorter_than_promised_is_zero_padded(tmp_path):
    f = tmp_path / "short"
    f.write_bytes(b"abc")

    async def main():
        loop = asyncio.get_running_loop()
        cli, conn = tcp_pair()
        fd = os.open(f, os.O_RDONLY)
        for path in ("copy", "mmap", "splice", "zc"):
            sender = Sender(aio.get_ring(), conn, read_path=path)
            await sender.send(SendDescriptor(b"H", FileRange(fd, 0, 10, POSIX), splice_safe=True))
            assert await receive(loop, cli, 11) == b"Habc" + bytes(7)
            sender.close()
        os.close(fd)
        cli.close()
        conn.close()

    asyncio.run(asyncio.wait_for(main(), 10))


@pytest.mark.parametrize("path", ["splice", "mmap"])
def test_a_range_not_in_the_page_cache_is_copied_instead(tmp_path, path):
    """splice and a send from a map would read the disk in the event loop's thread; a range
    that is not all in the page cache goes by the ring's read (copy) instead, byte for byte
    the same."""
    from smbring.datapath import in_page_cache
    data = os.urandom(4 << 20)
    f = tmp_path / "cold"
    f.write_bytes(data)

    async def main():
        loop = asyncio.get_running_loop()
        async with sender_of(f, path) as (cli, fd, sender):
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)   # clean pages: dropped
            cached = in_page_cache(fd, 0, len(data))
            if cached is None:
                pytest.skip("no cachestat(2) here")
            assert cached is False
            got = asyncio.ensure_future(receive(loop, cli, 2 + len(data)))
            assert await sender.send(SendDescriptor(b"H:", FileRange(fd, 0, len(data), POSIX))) == "copy"
            assert await got == b"H:" + data
            assert in_page_cache(fd, 0, len(data))                # the read brought it in
            got = asyncio.ensure_future(receive(loop, cli, 2 + len(data)))
            assert await sender.send(SendDescriptor(b"H:", FileRange(fd, 0, len(data), POSIX))) == path
            assert await got == b"H:" + data

    asyncio.run(asyncio.wait_for(main(), 10))


def test_a_range_the_kernel_will_not_tell_about_counts_as_not_cached(tmp_path):
    """cachestat(2) refuses a file its caller neither owns nor may write (EPERM: a server
    not run as root serving another's readable file): not known to be cached, so the range
    goes by the ring's read (False), never spliced or mapped on a guess."""
    from smbring.datapath import in_page_cache
    if os.geteuid() != 0:
        pytest.skip("needs root: reads a root-owned file as another user")
    f = tmp_path / "theirs"
    f.write_bytes(b"x" * 8192)
    os.chmod(f, 0o444)
    with open(f, "rb") as own:
        if in_page_cache(own.fileno(), 0, 8192) is None:
            pytest.skip("no cachestat(2) here")
    fd = os.open(f, os.O_RDONLY)        # (read-only: the kernel asks who calls)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:            # the child: as nobody, asks about a file it may only read
        answer = b"?"
        try:
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            answer = repr(in_page_cache(fd, 0, 8192)).encode()
        finally:
            os.write(write, answer)
            os._exit(0)
    os.close(write)
    try:
        answer = os.read(read, 64)
    finally:
        os.close(read)
        os.close(fd)
        os.waitpid(pid, 0)
    assert answer == b"False"


def test_path_rules():
    from smbring.cheaper import CheaperOf
    from smbring.datapath import AUTO_LARGE
    rng, big = FileRange(3, 0, 10, POSIX), FileRange(3, 0, AUTO_LARGE, POSIX)
    costs = CheaperOf("mmap", "splice")
    # auto measures mmap and splice on large payloads of files nobody may write meanwhile
    # (mmap first, then splice), then takes the cheaper ...
    safe_big = SendDescriptor(b"", big, splice_safe=True)
    assert choose_path("auto", safe_big, True, costs) == "mmap"
    costs.record("mmap", 2.0, 1)
    assert choose_path("auto", safe_big, True, costs) == "splice"
    costs.record("splice", 1.0, 1)
    assert choose_path("auto", safe_big, True, costs) == "splice"
    # ... sends other large payloads from a map (safe while written: copied as it is sent)
    # and copies small ones, without measuring
    assert choose_path("auto", SendDescriptor(b"", big, splice_safe=False), True, costs) == "mmap"
    assert choose_path("auto", SendDescriptor(b"", rng, splice_safe=True), True, costs) == "copy"
    assert costs.picks == 3
    assert choose_path("mmap", SendDescriptor(b"", rng), True) == "mmap"
    # a connection that paces (BBR) takes mmap without measuring: see choose_path
    assert choose_path("auto", safe_big, True, costs, paced=True) == "mmap"
    assert costs.picks == 3
    # a share that opts in (read path = splice) splices even while the file may be written
    assert choose_path("splice", SendDescriptor(b"", rng, splice_safe=False), True) == "splice"
    # the share's own read path wins over the Sender's default
    assert choose_path("splice", SendDescriptor(b"", big, splice_safe=True, read_path="copy"), True) == "copy"
    assert choose_path("zc", SendDescriptor(b"", rng), False) == "copy"
    assert choose_path("zc", SendDescriptor(b"", b"buffer"), True) == "copy"
    with pytest.raises(ValueError):
        Sender(None, socket.socket(), read_path="teleport")


def test_paces_reads_the_connections_congestion_control():
    from smbring.datapath import paces
    cli, conn = tcp_pair()
    try:
        for name, paced in ((b"cubic", False), (b"bbr", True)):
            try:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, name)
            except OSError:
                continue        # not available to this user or kernel
            assert paces(conn) is paced
    finally:
        cli.close()
        conn.close()


def test_file_maps_follow_the_file_behind_the_fd(tmp_path):
    """Maps are kept per file, not per fd: reused by the next open (warm), never for another
    file that gets the same fd number, never past the end of the file, remade when the file grows, and
    dropped beyond the byte limit, when idle, and when the file is deleted."""
    from smbring.datapath import FileMaps
    maps = FileMaps(window=1 << 20, limit=5 << 20, idle=0.2)
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"A" * (3 << 20))
    b.write_bytes(b"B" * (1 << 20))

    async def main():
        fd = os.open(a, os.O_RDONLY)
        try:
            view, warm = maps.view(fd, (2 << 20) + 5, 10)
            assert bytes(view) == b"A" * 10 and not warm        # first sent: cold
            assert len(maps) == 1
            os.close(fd)
            fd = os.open(a, os.O_RDONLY)                      # the next open: the same map
            view, warm = maps.view(fd, (2 << 20) + 100, 10)
            assert bytes(view) == b"A" * 10 and warm            # sent before: warm
            assert len(maps) == 1
            assert maps.view(fd, (3 << 20) - 5, 10) is None    # past the end
            with open(a, "ab") as f:
                f.write(b"C" * 10)
            assert bytes(maps.view(fd, (3 << 20) - 5, 10)[0]) == b"AAAAACCCCC"   # grown: remapped
            assert len(maps) == 1
            os.dup2(os.open(b, os.O_RDONLY), fd)               # same number, other file
            assert bytes(maps.view(fd, 0, 4)[0]) == b"BBBB"
            assert len(maps) == 2
            other = os.open(a, os.O_RDONLY)
            maps.view(other, 0, 1)                             # a's first window: 3 MiB more
            assert maps.mapped <= 5 << 20 and len(maps) == 2   # a's later one, least recent, went
            assert bytes(maps.view(fd, 0, 4)[0]) == b"BBBB" and len(maps) == 2
            st = os.fstat(other)
            maps.forget_file(st.st_dev, st.st_ino)
            assert len(maps) == 1 and maps.mapped == 1 << 20   # b's stays
            maps.view(other, 0, 1)
            os.close(other)
            await asyncio.sleep(0.5)                            # unused for longer than idle
            assert len(maps) == 0 and maps.mapped == 0
            few = FileMaps(keep=2)                              # each map holds an fd: counted
            for name in ("a", "b", "a"):
                with open(tmp_path / name, "rb") as f:
                    few.view(f.fileno(), 0, 1)
            assert len(few) == 2
            c = tmp_path / "c"
            c.write_bytes(b"C")
            with open(c, "rb") as f:
                few.view(f.fileno(), 0, 1)
            assert len(few) == 2 and few.mapped == 1 + (3 << 20) + 10   # b, least recent, went
        finally:
            os.close(fd)

    asyncio.run(asyncio.wait_for(main(), 10))


def test_file_shrinking_under_its_map_sends_zeros_not_sigbus(tmp_path):
    """The kernel's copy from a map past the (new) end of the file fails with EFAULT (a
    SIGBUS only in user space); what the file still holds is read, the rest of the promised
    length goes out as zeros, and the frame stays whole."""
    data = os.urandom(3 << 20)
    f = tmp_path / "shrinks"
    f.write_bytes(data)

    async def main():
        loop = asyncio.get_running_loop()
        async with sender_of(f, "mmap", os.O_RDWR) as (cli, fd, sender):
            st = os.fstat(fd)
            try:
                view, _ = sender.maps.view(fd, 0, len(data))
                os.ftruncate(fd, 1 << 20)
                got = asyncio.ensure_future(receive(loop, cli, 2 + len(data) + 4))
                await sender._send_mapped(b"H:", view, FileRange(fd, 0, len(data), POSIX))
                await sender.send(SendDescriptor(b"NEXT", None))
                assert await got == b"H:" + data[:1 << 20] + bytes(len(data) - (1 << 20)) + b"NEXT"
            finally:
                sender.maps.forget_file(st.st_dev, st.st_ino)

    asyncio.run(asyncio.wait_for(main(), 10))


def test_receive_early_disconnect_is_an_error():
    from smbring.datapath import Receiver

    async def main():
        cli, conn = tcp_pair()
        rx = Receiver(aio.get_ring(), conn)
        cli.send(b"only a little")
        cli.shutdown(socket.SHUT_WR)
        with pytest.raises(ConnectionResetError):
            await rx.recv_exact(memoryview(bytearray(1 << 20)))
        cli.close()
        conn.close()

    asyncio.run(asyncio.wait_for(main(), 10))


def test_a_small_send_the_socket_takes_in_part_keeps_the_rest_first_in_line():
    """Sender.send_small: what a full socket does not take is held back, and goes before
    anything sent after it (frames never interleave); a flush delivers it."""
    async def main():
        loop = asyncio.get_running_loop()
        cli, conn = tcp_pair()
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        sender = Sender(aio.get_ring(), conn, read_path="copy")
        try:
            sent, partial = bytearray(), None
            for i in range(10000):      # the client reads nothing: the socket fills
                part = bytes([i % 251]) * 1000
                done = sender.send_small([b"H%05d:" % i, part], 7 + len(part))
                assert done is not None
                sent += b"H%05d:" % i + part
                if done is False:
                    partial = i
                    break
            assert partial is not None, "the socket never filled"
            # a later response goes behind the rest (the socket is still full: held too)
            later, last = bytes(100), b"LAST"
            assert sender.send_small([later], len(later)) is False
            got = asyncio.ensure_future(receive(loop, cli, len(sent) + len(later) + len(last)))
            await sender.flush()
            await sender.send(SendDescriptor(last))
            assert await got == bytes(sent) + later + last
        finally:
            sender.close()
            cli.close()
            conn.close()

    asyncio.run(asyncio.wait_for(main(), 20))


def test_a_small_send_waits_while_another_send_is_on_its_way(tmp_path):
    """While a send is in progress (a file's data going through the ring), send_small does
    nothing and says so: the response goes the awaited way, after it."""
    data = os.urandom(4 << 20)
    path = tmp_path / "f"
    path.write_bytes(data)

    async def main():
        loop = asyncio.get_running_loop()
        async with sender_of(path, "copy") as (cli, fd, sender):
            got = asyncio.ensure_future(receive(loop, cli, 2 + len(data) + 4))
            sending = asyncio.ensure_future(
                sender.send(SendDescriptor(b"H:", FileRange(fd, 0, len(data), POSIX))))
            await asyncio.sleep(0)      # the file's send has started and waits on the ring
            assert sender.send_small([b"NEXT"], 4) is None
            await sending
            assert sender.send_small([b"NEXT"], 4) is True
            assert await got == b"H:" + data + b"NEXT"

    asyncio.run(asyncio.wait_for(main(), 20))


def test_a_frame_taken_without_waiting_is_the_frame_received():
    """Receiver.take_frame hands out exactly what recv_small would: whole frames only, each
    in a buffer of its own; a partial frame or a missing NetBIOS prefix is left for the
    awaited way."""
    from smbring.datapath import Receiver

    async def main():
        cli, conn = tcp_pair()
        rx = Receiver(aio.get_ring(), conn)
        try:
            assert rx.take_frame() is None and rx.drained()
            first, second = b"\xfeSMB" + bytes(60), b"\xfeSMB" + os.urandom(100)
            cli.send(b"\0\0\0\x40" + first + b"\0\0\0\x68" + second[:50])
            await rx.receive_more()
            while rx._end < 4 + 64 + 4 + 50:        # (loopback may split the segment)
                await rx.recv_small(0)
            taken = rx.take_frame()
            assert bytes(taken) == first
            assert rx.take_frame() is None and not rx.drained()     # half of the second
            cli.send(second[50:])
            size = int.from_bytes((await rx.recv_small(4))[1:4], "big")
            assert bytes(await rx.recv_small(size)) == second
            assert bytes(taken) == first        # its own buffer: not overwritten
            cli.send(b"\x85\0\0\0")             # a keep-alive, not a session message
            await rx.receive_more()
            assert rx.take_frame() is None and not rx.drained()
        finally:
            cli.close()
            conn.close()

    asyncio.run(asyncio.wait_for(main(), 10))


def test_frames_received_while_waiting_are_served_in_the_loop_callback():
    """Receiver.serve: what arrives while receive_more waits is received and answered in the
    event loop's readiness callback, the waiting task left asleep, until serve says the rest
    goes the task's way (then receive_more returns, the rest in the buffer); an error serve
    raises (a refused frame) is raised where the task waits."""
    from smbring.datapath import Receiver

    def framed(word: bytes) -> bytes:
        return len(word).to_bytes(4, "big") + word

    async def main():
        a, b = socket.socketpair()
        with a, b:
            a.setblocking(False)
            rx = Receiver(aio.get_ring(), a)
            served = []

            def serve():
                while (message := rx.take_frame()) is not None:
                    served.append(bytes(message))
                    if message == b"stop":
                        return True
                    if message == b"boom":
                        raise ConnectionError("refused")
                return False

            rx.serve = serve
            waiting = asyncio.ensure_future(rx.receive_more())
            for word in (b"one", b"two"):
                b.sendall(framed(word))
                for _ in range(500):
                    if served[-1:] == [word]:
                        break
                    await asyncio.sleep(0.002)
            assert served == [b"one", b"two"] and not waiting.done()
            b.sendall(framed(b"stop") + framed(b"next"))
            await waiting
            assert served[-1] == b"stop" and bytes(rx.take_frame()) == b"next" and rx.drained()
            b.sendall(framed(b"boom"))
            with pytest.raises(ConnectionError, match="refused"):
                await rx.receive_more()
            rx.close()

    asyncio.run(asyncio.wait_for(main(), 10))


def io_uring_stack():
    """The module stack a share reads through by default: direct_writes over io_uring."""
    from smbring.vfs.modules import DirectWrites, IoUring
    return DirectWrites(IoUring(Posix(), aio.get_ring()))


def test_a_small_cached_read_is_sent_at_once_and_a_short_file_padded(tmp_path):
    """Sender.send_file_now: a small READ whose bytes are in the page cache is read and sent
    without a coroutine; a file shorter than the range promised is padded with zeros; the
    send counts as a copy."""
    data = os.urandom(4096)
    (tmp_path / "f").write_bytes(data)
    (tmp_path / "short").write_bytes(b"abc")

    async def main():
        loop = asyncio.get_running_loop()
        async with sender_of(tmp_path / "f", "auto") as (cli, fd, sender):
            short = os.open(tmp_path / "short", os.O_RDONLY)
            try:
                stack = io_uring_stack()
                assert sender.send_file_now(b"H:", FileRange(fd, 0, len(data), stack), None) is True
                assert sender.send_file_now(b"S:", FileRange(short, 0, 10, stack), None) is True
                assert await receive(loop, cli, 2 + len(data) + 12) == b"H:" + data + b"S:abc" + bytes(7)
                assert sender.stats.by_path["copy"] == 2
            finally:
                os.close(short)

    asyncio.run(asyncio.wait_for(main(), 10))


def test_a_read_that_might_wait_goes_the_awaited_way(tmp_path):
    """send_file_now does nothing (None) where the read or its path is not one to make in
    the event loop: a module stack without a read that never waits (a plain or thread-pool
    read), a read path other than copy, a large range, responses held back or another
    send on its way; the awaited send then delivers it."""
    data = os.urandom(8192)
    (tmp_path / "f").write_bytes(data)

    async def main():
        loop = asyncio.get_running_loop()
        async with sender_of(tmp_path / "f", "copy") as (cli, fd, sender):
            stack = io_uring_stack()
            rng = FileRange(fd, 0, len(data), stack)
            assert sender.send_file_now(b"H:", FileRange(fd, 0, len(data), POSIX), None) is None
            for read_path in ("mmap", "splice", "zc"):
                assert sender.send_file_now(b"H:", rng, read_path) is None
            assert sender.send_file_now(b"H:", FileRange(fd, 0, 1 << 20, stack), None) is None
            sender._held, sender._held_bytes = [b"HELD"], 4
            assert sender.send_file_now(b"H:", rng, None) is None
            await sender.flush()
            sender._users += 1
            assert sender.send_file_now(b"H:", rng, None) is None
            sender._users -= 1
            assert sender.stats.by_path["copy"] == 0
            await sender.send(SendDescriptor(b"H:", rng))
            assert await receive(loop, cli, 4 + 2 + len(data)) == b"HELD" + b"H:" + data

    asyncio.run(asyncio.wait_for(main(), 10))


def test_a_read_not_in_the_page_cache_is_not_made_in_the_loop(tmp_path):
    """io_uring's read_now reads only what the page cache holds (RWF_NOWAIT): a range
    dropped from the cache is left to the ring (None), never waited for in the loop."""
    data = os.urandom(16384)
    path = tmp_path / "cold"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        view = memoryview(bytearray(len(data)))

        async def main():
            stack = io_uring_stack()
            if stack.read_now(fd, view, 0) is not None:
                pytest.skip("the page cache kept the file (fadvise is a hint)")
            assert await stack.pread_into(fd, view, 0) == len(data)
            assert bytes(view) == data
            assert stack.read_now(fd, view, 0) == len(data)   # cached now

        asyncio.run(asyncio.wait_for(main(), 10))
    finally:
        os.close(fd)
