"""The receive pool's buffers, on the real kernel: where a READ's data lands (on a 2 MiB huge
page, so that O_DIRECT pins it in one step), whether the kernel really backs it with huge pages
where it offers them on request, and that a buffer goes back to the pool only once nothing
refers to any part of it."""
import ctypes
import gc

import pytest

from smbring.client.buffers import ALIGN, HUGE, READ_DATA_OFFSET, ReceivePool, aligned

MiB = 1024 * 1024
FRAME = 4 * MiB + 64 * 1024        # a 4 MiB READ's frame limit (FRAME_SLACK on top)


def address(view) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(view))


def huge_pages_offered() -> bool:
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return "[never]" not in f.read()
    except OSError:
        return False


def anon_huge_kib(addr: int) -> int:
    """AnonHugePages of the mapping that holds addr (/proc/self/smaps)."""
    inside = False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                start, end = (int(x, 16) for x in head.split("-"))
                inside = start <= addr < end
            elif inside and head == "AnonHugePages:":
                return int(line.split()[1])
    raise AssertionError(f"no mapping holds {addr:#x}")


def read_data(frame: memoryview) -> memoryview:
    return frame[READ_DATA_OFFSET:]


def test_read_data_starts_a_huge_page_and_is_o_direct_aligned():
    pool = ReceivePool(FRAME, 4)
    frames = [pool.take(4 * MiB + READ_DATA_OFFSET) for _ in range(3)]
    for frame in frames:
        data = read_data(frame)
        assert address(data) % HUGE == 0
        assert aligned(data[:4 * MiB])
        # the whole frame is writable where it lies: no byte of it is shared with another
        frame[:] = b"\xa5" * len(frame)
    assert len({address(f) for f in frames}) == 3
    assert pool.made == 3 and pool.in_use() == 3


def test_smaller_frames_start_where_the_data_does():
    pool = ReceivePool(FRAME, 2)
    frame = pool.take(64 * 1024)
    assert address(read_data(frame)) % ALIGN == 0


@pytest.mark.skipif(not huge_pages_offered(), reason="transparent huge pages are off here")
def test_the_kernel_backs_read_data_with_huge_pages():
    pool = ReceivePool(FRAME, 1)
    data = read_data(pool.take(4 * MiB + READ_DATA_OFFSET))
    # made at take() (MADV_POPULATE_WRITE), not at first use: nothing is written here
    assert anon_huge_kib(address(data)) >= 4 * 1024


def test_a_buffer_returns_only_when_no_slice_of_it_is_left():
    pool = ReceivePool(FRAME, 2)
    frame = pool.take(FRAME)
    first = address(frame)
    data = read_data(frame)[:MiB]        # what travels to the file sink
    del frame
    gc.collect()
    assert pool.in_use() == 1            # the slice still holds the buffer
    other = pool.take(FRAME)
    assert address(other) != first       # so a second one is made, not the first handed out
    del data
    assert pool.in_use() == 1
    again = pool.take(FRAME)
    assert address(again) == first and pool.made == 2
    del other, again
    assert pool.in_use() == 0


def test_beyond_keep_or_size_a_plain_buffer_that_is_not_kept():
    pool = ReceivePool(FRAME, 1)
    held = pool.take(FRAME)
    extra = pool.take(FRAME)             # the kept one is busy: a fresh one, not kept
    too_big = pool.take(FRAME + 1)
    assert pool.made == 3 and len(extra) == FRAME and len(too_big) == FRAME + 1
    del held, extra, too_big
    assert pool.in_use() == 0
