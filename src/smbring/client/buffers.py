"""Receive buffers used again instead of a fresh one per frame, and file ranges sent without
passing through Python.

A large frame (a READ response) used to get a fresh ``bytearray`` of its own: for 1 MiB that
is a new anonymous mapping, 256 page faults, a zero fill, and an unmapping once the data is on
disk, which cost more CPU than receiving the data itself. A :class:`ReceivePool` hands out the
same few buffers again instead.

A buffer is free again when nothing refers to it any more: the READ's data is a memoryview of
it that travels to the file sink, through the io_uring write (which pins it) and is dropped when
the write has completed, or when a transfer fails anywhere on the way. Counting references
(CPython's ``sys.getrefcount``) finds that moment whatever path the data took, so a failure or
a cancellation can never return a buffer that is still being written from, nor leak one.
"""
from __future__ import annotations

import mmap
import os
import sys

POOLED_MIN = 128 * 1024   # frames from this size on come from the pool (READ data); the rest
                          # are small allocations that Python's allocator serves cheaply
ALIGN = 4096              # what O_DIRECT asks of buffers, offsets and lengths (a page)
READ_DATA_OFFSET = 80     # where servers put a READ's data: right after the 64 + 16 byte head
HUGE = 2 * 1024 * 1024    # a transparent huge page (x86-64, arm64 with 4 KiB pages)
# private anonymous memory: a shared map (mmap's default) is shmem, whose page faults cost
# about twice as much
_PRIVATE_MAP = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
_MADV_POPULATE_WRITE = 23  # Linux 5.14: fault every page of a range in at once, writable


def _receive_buffer(length: int, data_at: int) -> tuple[mmap.mmap, int]:
    """`length` bytes of private memory, every page made, arranged so that byte `data_at`
    (where a READ's data lands) starts a 2 MiB huge page, and the whole huge pages after it
    asked for as such (MADV_HUGEPAGE: transparent huge pages are often enabled on request
    only). A huge page is pinned for an O_DIRECT write in one step instead of 512, copying
    into it misses the TLB less, and making it costs one fault: on a 2-core VM this took
    about a tenth off a download's CPU. Where huge pages are not to be had, small pages do
    the same job. Returns the map and where in it the buffer starts."""
    import ctypes           # (here and in aligned(): only a download needs it, ls and put do not)
    whole = mmap.mmap(-1, length + HUGE, flags=_PRIVATE_MAP)
    holder = ctypes.c_char.from_buffer(whole)
    address = ctypes.addressof(holder)
    del holder                  # the export ends here: the map can be handed on
    start = -(address + data_at) % HUGE              # the data begins on a huge page
    huge_from = start + data_at
    huge_to = huge_from + (length - data_at) // HUGE * HUGE
    try:
        if huge_to > huge_from:
            whole.madvise(mmap.MADV_HUGEPAGE, huge_from, huge_to - huge_from)
    except (AttributeError, OSError):
        pass
    first = start // ALIGN * ALIGN
    try:        # all pages made now, in one call, rather than one fault at a time later
        whole.madvise(_MADV_POPULATE_WRITE, first, -(-(start + length) // ALIGN) * ALIGN - first)
    except (AttributeError, OSError):
        pass                    # an older kernel: the pages are made as they are first used
    return whole, start


class ReceivePool:
    """Up to `keep` buffers of `size` bytes, each handed out again once nothing refers to it.
    When all are in use (a slow disk holds many), a fresh buffer is made that is not kept.

    The buffers are page-aligned maps, and a frame starts READ_DATA_OFFSET bytes before a page
    boundary: a READ's data then begins on a page, so the file sink can write it with O_DIRECT
    (disk DMA from here, no copy into the page cache)."""

    def __init__(self, size: int, keep: int):
        self.size, self.keep = size, keep
        self._buffers: list[tuple[mmap.mmap, int]] = []     # (map, where the buffer starts)
        self.made = 0            # buffers allocated (pooled or not): diagnostics and tests
        # what the count is for a buffer nobody else holds, seen the way take() looks at one
        # (held by a tuple in a list, and a loop variable); each buffer handed out holds one
        # more (a memoryview of its own of the map) until the last slice of it is dropped
        for buf, _start in [(mmap.mmap(-1, 1), 0)]:
            self._idle = self._references(buf)

    @staticmethod
    def _references(buf: bytearray) -> int:
        return sys.getrefcount(buf)

    def take(self, n: int) -> memoryview:
        """A buffer of exactly n bytes (its contents are whatever was there before)."""
        lead = ALIGN - READ_DATA_OFFSET
        if n <= self.size:
            for buf, start in self._buffers:
                if self._references(buf) == self._idle:
                    return memoryview(buf)[start + lead:start + lead + n]
        self.made += 1
        if n > self.size or len(self._buffers) >= self.keep:
            return memoryview(bytearray(n))
        buf, start = _receive_buffer(lead + self.size, ALIGN)
        self._buffers.append((buf, start))
        return memoryview(buf)[start + lead:start + lead + n]

    def in_use(self) -> int:
        count = 0
        for buf, _start in self._buffers:
            count += self._references(buf) != self._idle
        return count

    def clear(self) -> None:
        self._buffers.clear()


class FileRange:
    """`length` bytes of a local file from `offset`, as a WRITE's data: the channel sends them
    with sendfile(2), page cache -> socket, never through a Python buffer. Only for messages
    that are neither signed nor sealed (those need the bytes: Channel.request reads them).

    (Here and below: plain classes, not dataclasses, which generate and compile their methods
    at import time, a share of every run's fixed CPU.)"""
    __slots__ = ("fd", "offset", "length")

    def __init__(self, fd: int, offset: int, length: int):
        self.fd, self.offset, self.length = fd, offset, length

    def __eq__(self, other):
        if other.__class__ is not self.__class__:
            return NotImplemented
        return (self.fd, self.offset, self.length) == (other.fd, other.offset, other.length)

    def __repr__(self) -> str:
        return f"FileRange(fd={self.fd}, offset={self.offset}, length={self.length})"

    def __len__(self) -> int:
        return self.length

    def read(self) -> bytes:
        """The bytes themselves (for a message that must be signed or sealed)."""
        out = bytearray()
        while len(out) < self.length:
            got = os.pread(self.fd, self.length - len(out), self.offset + len(out))
            if not got:
                break
            out += got
        return bytes(out)


class FileTarget:
    """Where a READ's data may go straight from the socket: `fd` (the download's file, open
    for writing) at `offset`, at most `asked` bytes. The channel duplicates the descriptor
    while the READ is waiting, so that a transfer that ends early (and closes its file) can
    never have data spliced into whatever file takes the number next."""
    __slots__ = ("fd", "offset", "asked")

    def __init__(self, fd: int, offset: int, asked: int):
        self.fd, self.offset, self.asked = fd, offset, asked


class Spliced:
    """A READ's data that went socket -> pipe -> file without entering user space: only how
    many bytes (the sink has nothing left to write)."""
    __slots__ = ("length",)

    def __init__(self, length: int):
        self.length = length

    def __eq__(self, other):
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self.length == other.length

    def __repr__(self) -> str:
        return f"Spliced({self.length})"

    def __len__(self) -> int:
        return self.length


F_SETPIPE_SZ = 1031
PIPE_SIZE = 1 << 20


def splice_pipe() -> tuple[int, int]:
    """A non-blocking pipe, as large as the system lets it be (1 MiB: a whole READ)."""
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        import fcntl
        fcntl.fcntl(w, F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:
        pass                     # the default (64 KiB) works too, in more steps
    return r, w


def aligned(view: memoryview) -> bool:
    """Whether a (writable) buffer starts on a page and is a whole number of pages long."""
    if not len(view) or len(view) % ALIGN or view.readonly or not view.c_contiguous:
        return False
    import ctypes
    return ctypes.addressof(ctypes.c_char.from_buffer(view)) % ALIGN == 0
