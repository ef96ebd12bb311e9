"""The data VFS modules on real files: each reads whole buffers (short only at end of file),
writes everything or raises, and io_uring serves file systems that punt to worker threads
(tmpfs) through the module below it."""
import asyncio
import errno
import os
from pathlib import Path

import pytest

from smbring import uring
from smbring.vfs import modules

needs_uring = pytest.mark.skipif(not uring.available(), reason="io_uring unavailable")


def stack(name):
    if name == "io_uring":
        from smbring.uring import aio
        return modules.build(["io_uring"], aio.get_ring())
    return modules.build([name])


@pytest.mark.parametrize("name", ["posix", "threadpool", pytest.param("io_uring", marks=needs_uring)])
def test_write_read_fsync_and_errors(tmp_path, name):
    payload = os.urandom(3 * 1024 * 1024 + 123)

    async def main():
        io = stack(name)
        assert io.name == name
        fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
        try:
            assert await io.pwrite_all(fd, memoryview(payload), 4096) == len(payload)
            await io.fsync(fd)
            buf = bytearray(len(payload) + 5000)
            n = await io.pread_into(fd, memoryview(buf), 4096)      # past the end: short
            assert n == len(payload) and bytes(buf[:n]) == payload
            assert await io.pread_into(fd, memoryview(bytearray(10)), 10 << 20) == 0   # EOF
        finally:
            os.close(fd)
        full = os.open("/dev/full", os.O_WRONLY)
        try:
            with pytest.raises(OSError) as e:
                await io.pwrite_all(full, memoryview(b"x" * 10), 0)
            assert e.value.errno == errno.ENOSPC
        finally:
            os.close(full)
        with pytest.raises(OSError) as e:
            await io.pread_into(12345, memoryview(bytearray(1)), 0)
        assert e.value.errno == errno.EBADF

    asyncio.run(main())


def test_default_stack_and_unknown_names():
    assert modules.build([]).describe() == "direct_writes -> threadpool -> posix"   # no ring
    assert modules.build(["posix"]).describe() == "posix"
    assert modules.build(["threadpool", "acl_xattr"]).describe() == "threadpool -> posix"


@needs_uring
def test_io_uring_serves_tmpfs_inline(tmp_path):
    """tmpfs cannot read without blocking, so io_uring would punt every request to a kernel
    worker; the module notices once per file system and uses the module below instead."""
    if not os.path.isdir("/dev/shm"):
        pytest.skip("no /dev/shm")
    path = f"/dev/shm/smbring-test-{os.getpid()}"

    async def main():
        io = stack("io_uring")
        fd = os.open(path, os.O_RDWR | os.O_CREAT)
        try:
            await io.pwrite_all(fd, memoryview(b"tmpfs data"), 0)
            buf = bytearray(10)
            assert await io.pread_into(fd, memoryview(buf), 0) == 10 and buf == b"tmpfs data"
            assert io._punts == {os.fstat(fd).st_dev: True}
            from smbring.bench.ops import fs_type
            where = tmp_path if fs_type(str(tmp_path)) not in ("tmpfs", "ramfs") else Path(__file__).parent
            disk = os.open(where / "disk-file.tmp", os.O_RDWR | os.O_CREAT)
            try:
                await io.pwrite_all(disk, memoryview(b"disk"), 0)
                assert io._punts[os.fstat(disk).st_dev] is False    # real file systems: the ring
            finally:
                os.close(disk)
                os.unlink(where / "disk-file.tmp")
        finally:
            os.close(fd)
            os.unlink(path)

    asyncio.run(main())


@needs_uring
def test_io_uring_punts_large_reads_when_crowded(tmp_path):
    """With other clients waiting, reads of 1 MiB and more go to io_uring's worker threads
    (IOSQE_ASYNC); the bytes are the same either way."""
    from smbring.uring import aio
    payload = os.urandom(3 << 20)
    (tmp_path / "f").write_bytes(payload)

    async def main():
        crowded = modules.build(["io_uring"], aio.get_ring(), crowded=lambda: True)
        fd = os.open(tmp_path / "f", os.O_RDONLY)
        try:
            buf = bytearray(len(payload))
            assert await crowded.pread_into(fd, memoryview(buf), 0) == len(payload)
            assert buf == payload
        finally:
            os.close(fd)

    asyncio.run(main())


def test_cheaper_of_picks_the_cheaper_and_keeps_looking():
    from smbring.cheaper import CheaperOf
    costs = CheaperOf("buffered", "direct")
    assert costs.pick() == "buffered"                      # each way measured once first
    costs.record("buffered", 0.020, 8 << 20)
    assert costs.pick() == "direct"
    costs.record("direct", 0.006, 8 << 20)
    picks = [costs.pick() for _ in range(2 * costs.explore)]
    assert picks.count("buffered") == 2 and picks.count("direct") == len(picks) - 2
    assert all(costs.pick(explore=False) == "direct" for _ in range(2 * costs.explore))
    for _ in range(20):                                    # the page cache got cheap again
        costs.record("buffered", 0.001, 8 << 20)
    assert costs.pick() == "buffered"
    costs.rule_out("buffered")
    assert all(costs.pick() == "direct" for _ in range(100))
    costs.rule_out("direct")                               # neither: the first it is
    assert costs.pick() == "buffered"
    assert "ns/unit" in repr(costs)


def test_cheaper_of_explores_in_runs_and_settles_after_a_switch():
    from smbring.cheaper import CheaperOf
    costs = CheaperOf("mmap", "splice", explore=8, run=3, settle=1)
    assert costs.pick() == "mmap"
    costs.record("mmap", 9.0, 1)         # the first sample of a way: ignored (settling)
    assert costs.cost["mmap"] is None and costs.pick() == "mmap"
    costs.record("mmap", 1.0, 1)
    assert costs.pick() == "splice"      # until it has a kept sample, the second way
    costs.record("splice", 0.1, 1)       # ignored: right after the change of way
    assert costs.pick() == "splice"
    costs.record("splice", 2.0, 1)
    picks = [costs.pick() for _ in range(16)]
    assert picks.count("splice") == 6
    assert ",".join(picks).count("splice,splice,splice") == 2
    costs.record("mmap", 9.0, 1)         # the first sample after a switch: ignored
    assert costs.cost["mmap"] == 1.0
    costs.record("mmap", 5.0, 1)
    assert costs.cost["mmap"] == 2.0     # 0.75 * 1 + 0.25 * 5
    assert costs.best() == "mmap"        # splice's 2.0 is not cheaper


def test_cheaper_of_with_a_margin_changes_way_only_for_a_clear_difference():
    from smbring.cheaper import CheaperOf
    costs = CheaperOf("mmap", "splice", margin=0.1)
    costs.record("mmap", 1.0, 1)
    costs.record("splice", 0.95, 1)
    assert costs.best() == "mmap"        # 5% cheaper: not enough
    costs.record("splice", 0.6, 1)       # 0.8625: more than 10% cheaper
    assert costs.best() == "splice"
    costs.record("mmap", 0.85, 1)        # 0.9625: dearer than splice by less than the margin
    costs.record("splice", 0.92, 1)
    assert costs.best() == "splice"


@pytest.mark.parametrize("name", ["threadpool", pytest.param("io_uring", marks=needs_uring)])
def test_direct_writes_round_trip(tmp_path, name):
    """Large aligned writes through O_DIRECT (page-aligned memory as is, other memory through a
    bounce buffer) and small or unaligned ones through the page cache land byte for byte; the
    twin descriptor is closed with its file."""
    mb = 1 << 20
    payload = os.urandom(8 * mb + 3000)

    async def main():
        from smbring.uring import aio
        below = modules.build([name], aio.get_ring() if name == "io_uring" else None)
        io = modules.DirectWrites(below)
        fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
        costs = io._costs(fd)
        costs.cost.update(buffered=1.0, direct=1e-12)       # direct measured far cheaper
        import mmap
        aligned = mmap.mmap(-1, 2 * mb)
        aligned[:] = payload[:2 * mb]
        unaligned = memoryview(bytearray(payload))[1:1 + 2 * mb + 4096]
        writes = [
            (memoryview(aligned), 0),                        # direct, as is
            (unaligned[:2 * mb], 2 * mb),                    # direct, through the bounce buffer
            (memoryview(payload)[4 * mb:6 * mb], 4 * mb),    # read-only bytes: bounce too
            (memoryview(payload)[6 * mb:8 * mb + 3000], 6 * mb),   # length not aligned: buffered
            (memoryview(payload)[100:200], 8 * mb + 5000),   # small: buffered
        ]
        expect = bytearray(8 * mb + 5100)
        expect[:2 * mb] = payload[:2 * mb]
        expect[2 * mb:4 * mb] = payload[1:1 + 2 * mb]
        expect[4 * mb:8 * mb + 3000] = payload[4 * mb:8 * mb + 3000]
        expect[8 * mb + 5000:] = payload[100:200]
        for view, offset in writes:
            assert await io.pwrite_all(fd, view, offset) == len(view)
        twin = io._direct[fd]
        assert twin >= 0 and os.fstat(twin).st_ino == os.fstat(fd).st_ino
        await io.fsync(fd)
        with open(tmp_path / "f", "rb") as f:
            assert f.read() == bytes(expect)
        io.closed(fd)
        os.close(fd)
        with pytest.raises(OSError):
            os.fstat(twin)
        assert fd not in io._direct

    asyncio.run(main())


def test_direct_writes_fall_back_to_the_page_cache_when_o_direct_is_refused(tmp_path):
    """A device that wants more than 4 KiB alignment answers EINVAL: the write is done through
    the page cache instead, and direct writes are not tried on that device again."""
    class RefusesTwins(modules.Posix):       # the real posix calls, except on the twin
        twins: set = set()

        async def pwrite_all(self, fd, view, offset):
            if fd in self.twins:
                raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
            return await super().pwrite_all(fd, view, offset)

    async def main():
        below = RefusesTwins()
        io = modules.DirectWrites(below)
        fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
        try:
            io._costs(fd).cost.update(buffered=1.0, direct=1e-12)
            RefusesTwins.twins.add(io._twin(fd, io._costs(fd)))
            data = os.urandom(1 << 20)
            assert await io.pwrite_all(fd, memoryview(data), 0) == len(data)
            assert os.pread(fd, len(data) + 1, 0) == data
            assert io._costs(fd).pick() == "buffered" and not io._costs(fd).possible["direct"]
        finally:
            io.closed(fd)
            os.close(fd)

    asyncio.run(main())


class CountingRing:
    """The engine's ring, counting the reads submitted to it."""

    def __init__(self, ring):
        self.ring_ = ring
        self.reads = 0

    def __getattr__(self, name):
        return getattr(self.ring_, name)

    async def read(self, *args, **kwargs):
        self.reads += 1
        return await self.ring_.read(*args, **kwargs)


def evicted(fd: int) -> bool:
    """Drops the file's pages from the page cache; whether they are gone. (Asked of its last
    byte: a RWF_NOWAIT read that misses still starts the kernel's readahead around it, which
    would bring back the pages a test reads next if it asked at the start.)"""
    os.fsync(fd)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    try:
        os.preadv(fd, [bytearray(1)], os.fstat(fd).st_size - 1, os.RWF_NOWAIT)
    except BlockingIOError:
        return True
    return False


@needs_uring
def test_io_uring_reads_small_cached_ranges_at_once_and_the_rest_on_the_ring(tmp_path):
    """A small read the page cache holds is made at once (RWF_NOWAIT), with no ring read;
    an uncached one, a large one and the end of the file come out the same either way."""
    from smbring.uring import aio
    payload = os.urandom(200_000)
    (tmp_path / "f").write_bytes(payload)

    async def main():
        ring = CountingRing(aio.get_ring())
        io = modules.build(["io_uring"], ring)
        fd = os.open(tmp_path / "f", os.O_RDONLY)
        try:
            buf = bytearray(4096)
            assert await io.pread_into(fd, memoryview(buf), 8192) == 4096 and buf == payload[8192:12288]
            tail = bytearray(8192)          # a short read: the file ends
            assert await io.pread_into(fd, memoryview(tail), len(payload) - 100) == 100
            assert tail[:100] == payload[-100:]
            assert await io.pread_into(fd, memoryview(bytearray(10)), len(payload) + 5) == 0
            assert ring.reads == 0
            big = bytearray(150_000)        # larger than CACHED_READ_MAX: on the ring
            assert await io.pread_into(fd, memoryview(big), 1) == 150_000 and big == payload[1:150_001]
            assert ring.reads >= 1
            if evicted(fd):                 # not in the cache: the ring reads it from the disk
                before = ring.reads
                buf = bytearray(4096)
                assert await io.pread_into(fd, memoryview(buf), 4096) == 4096 and buf == payload[4096:8192]
                assert ring.reads > before
        finally:
            os.close(fd)

    asyncio.run(main())
