"""The download's file sink on its own, with real files and the real ring: its writes are
submitted on the ring at once and settled by their completion callbacks, so the failure paths
(a write the kernel refuses, a descriptor that takes no direct I/O) must reach finish()."""
import asyncio
import mmap
import os

import pytest

import smbring.uring
from smbring.client.transfer import FileSink

MiB = 1024 * 1024
pytestmark = pytest.mark.skipif(not smbring.uring.available(), reason="no io_uring here: "
                                "the sink writes from a thread instead")


def _chunks(count: int, size: int = MiB) -> list[memoryview]:
    """Page-aligned chunks (as the receive pool hands them out), each filled differently."""
    chunks = []
    for i in range(count):
        buf = mmap.mmap(-1, size)
        buf[:] = bytes([i + 1]) * size
        chunks.append(memoryview(buf))
    return chunks


async def _sink_all(make_sink, chunks) -> FileSink:
    sink = make_sink()          # in the loop: the sink takes the running loop's ring
    offset = 0
    for chunk in chunks:
        waiting = sink(offset, chunk)
        if waiting is not None:
            await waiting
        offset += len(chunk)
    await sink.finish()
    return sink


def test_batches_land_in_order_and_whole(tmp_path):
    path = tmp_path / "out.bin"
    chunks = _chunks(19)                      # several batches, the last one partial
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        asyncio.run(_sink_all(lambda: FileSink(fd), chunks))
    finally:
        os.close(fd)
    assert path.read_bytes() == b"".join(bytes(c) for c in chunks)


def test_a_write_the_kernel_refuses_fails_the_download(tmp_path):
    path = tmp_path / "ro.bin"
    path.write_bytes(b"")
    fd = os.open(path, os.O_RDONLY)         # writev on it: EBADF, from the ring's completion
    try:
        with pytest.raises(OSError) as failure:
            asyncio.run(_sink_all(lambda: FileSink(fd), _chunks(4)))
    finally:
        os.close(fd)
    assert failure.value.errno == 9         # EBADF


def test_a_direct_descriptor_that_refuses_the_write_falls_back_to_the_page_cache(tmp_path):
    """A direct write answered EINVAL (a file system without direct I/O) is written again
    through the plain descriptor, and direct writes stop; no byte is lost. An eventfd stands
    for the refusing descriptor: the kernel answers EINVAL to any write of more than 8 bytes."""
    path = tmp_path / "out.bin"
    chunks = _chunks(6)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    refusing = os.eventfd(0)
    try:
        sink = asyncio.run(_sink_all(lambda: FileSink(fd, direct_fd=refusing), chunks))
    finally:
        os.close(refusing)
        os.close(fd)
    assert sink._ring is not None            # the ring's completion said EINVAL, not a thread's
    assert sink.direct_fd is None and sink.direct_bytes == 0
    assert path.read_bytes() == b"".join(bytes(c) for c in chunks)
