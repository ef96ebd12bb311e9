"""Every data path delivers byte-identical payloads over a real TCP connection."""
import asyncio
import hashlib
import os
import socket

import pytest

from smbring import uring

if not uring.available():
    pytest.skip(f"io_uring unavailable: {uring.unavailable_reason()}", allow_module_level=True)

from smbring.datapath import FileRange, SendDescriptor, Sender, choose_path  # noqa: E402
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


async def receive(loop, sock, n):
    out = bytearray()
    while len(out) < n:
        chunk = await loop.sock_recv(sock, 1 << 20)
        assert chunk, "connection closed early"
        out += chunk
    return bytes(out)


@pytest.mark.parametrize("path,crowded", [("copy", False), ("splice", False), ("zc", False),
                                          ("copy", True)])
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
                sends.append(SendDescriptor(header, FileRange(fd, off, ln), splice_safe=True))
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
        for path in ("copy", "splice", "zc"):
            sender = Sender(aio.get_ring(), conn, read_path=path)
            await sender.send(SendDescriptor(b"H", FileRange(fd, 0, 10), splice_safe=True))
            assert await receive(loop, cli, 11) == b"Habc" + bytes(7)
            sender.close()
        os.close(fd)
        cli.close()
        conn.close()

    asyncio.run(asyncio.wait_for(main(), 10))


def test_splice_of_a_range_not_in_the_page_cache_is_copied_instead(tmp_path):
    """splice would read the disk in the event loop's thread; a range that is not all in the
    page cache goes by the ring's read (copy) instead, byte for byte the same."""
    from smbring.datapath import in_page_cache
    data = os.urandom(4 << 20)
    f = tmp_path / "cold"
    f.write_bytes(data)

    async def main():
        loop = asyncio.get_running_loop()
        cli, conn = tcp_pair()
        fd = os.open(f, os.O_RDONLY)
        sender = Sender(aio.get_ring(), conn, read_path="splice")
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)   # clean pages: dropped
            cached = in_page_cache(fd, 0, len(data))
            if cached is None:
                pytest.skip("no cachestat(2) here")
            assert cached is False
            got = asyncio.ensure_future(receive(loop, cli, 2 + len(data)))
            assert await sender.send(SendDescriptor(b"H:", FileRange(fd, 0, len(data)))) == "copy"
            assert await got == b"H:" + data
            assert in_page_cache(fd, 0, len(data))                # the read brought it in
            got = asyncio.ensure_future(receive(loop, cli, 2 + len(data)))
            assert await sender.send(SendDescriptor(b"H:", FileRange(fd, 0, len(data)))) == "splice"
            assert await got == b"H:" + data
        finally:
            sender.close()
            os.close(fd)
            cli.close()
            conn.close()

    asyncio.run(asyncio.wait_for(main(), 10))


def test_path_rules():
    from smbring.cheaper import CheaperOf
    from smbring.datapath import AUTO_SPLICE_MIN
    rng, big = FileRange(3, 0, 10), FileRange(3, 0, AUTO_SPLICE_MIN)
    costs = CheaperOf("copy", "splice")
    # auto measures copy and splice on large payloads of files nobody may write meanwhile
    # (copy first, then splice), then takes the cheaper ...
    safe_big = SendDescriptor(b"", big, splice_safe=True)
    assert choose_path("auto", safe_big, True, costs) == "copy"
    costs.record("copy", 2.0, 1)
    assert choose_path("auto", safe_big, True, costs) == "splice"
    costs.record("splice", 1.0, 1)
    assert choose_path("auto", safe_big, True, costs) == "splice"
    # ... and copies everything else, without measuring
    assert choose_path("auto", SendDescriptor(b"", big, splice_safe=False), True, costs) == "copy"
    assert choose_path("auto", SendDescriptor(b"", rng, splice_safe=True), True, costs) == "copy"
    assert costs.picks == 3
    # a share that opts in (read path = splice) splices even while the file may be written
    assert choose_path("splice", SendDescriptor(b"", rng, splice_safe=False), True) == "splice"
    # the share's own read path wins over the Sender's default
    assert choose_path("splice", SendDescriptor(b"", big, splice_safe=True, read_path="copy"), True) == "copy"
    assert choose_path("zc", SendDescriptor(b"", rng), False) == "copy"
    assert choose_path("zc", SendDescriptor(b"", b"buffer"), True) == "copy"
    with pytest.raises(ValueError):
        Sender(None, socket.socket(), read_path="teleport")


@pytest.mark.parametrize("path", ["copy", "splice"])
def test_receive_paths_write_identical_bytes(tmp_path, path):
    from smbring.datapath import Receiver

    data = os.urandom(2 * (1 << 20) + 777)
    target = tmp_path / "target"
    target.write_bytes(b"\0" * 10)

    async def main():
        loop = asyncio.get_running_loop()
        cli, conn = tcp_pair()
        fd = os.open(target, os.O_RDWR)
        rx = Receiver(aio.get_ring(), conn, write_path=path)
        try:
            sender = asyncio.ensure_future(loop.sock_sendall(cli, data + b"NEXT"))
            assert await rx.to_file(fd, 5, len(data)) == len(data)
            rest = bytearray(4)
            await rx.recv_exact(memoryview(rest))      # the stream stays framed after a payload
            await sender
            assert rest == b"NEXT"
            os.fsync(fd)
        finally:
            rx.close()
            os.close(fd)
            cli.close()
            conn.close()
        disk = target.read_bytes()
        assert disk[:5] == b"\0" * 5 and hashlib.sha256(disk[5:]).digest() == hashlib.sha256(data).digest()

    asyncio.run(asyncio.wait_for(main(), 30))


def test_receive_early_disconnect_is_an_error(tmp_path):
    from smbring.datapath import Receiver

    async def main():
        cli, conn = tcp_pair()
        fd = os.open(tmp_path / "t", os.O_RDWR | os.O_CREAT)
        for path in ("copy", "splice"):
            rx = Receiver(aio.get_ring(), conn, write_path=path)
            if path == "copy":
                cli.send(b"only a little")
                cli.shutdown(socket.SHUT_WR)
            with pytest.raises(ConnectionResetError):
                await rx.to_file(fd, 0, 1 << 20)
            rx.close()
        os.close(fd)
        cli.close()
        conn.close()

    asyncio.run(asyncio.wait_for(main(), 10))
