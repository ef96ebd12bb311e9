"""VFS modules for file data, chosen per share with ``vfs objects`` and stacked like Samba's.

A share's data I/O (the payload of READ and WRITE, and FLUSH) goes through a stack of modules.
A module implements the calls it is about and hands the rest to the module below it; ``posix``
is always at the bottom. Listed top first, as in smb.conf::

    vfs objects = io_uring          # io_uring -> posix
    vfs objects = threadpool        # threadpool -> posix

``posix``
    ``pread``/``pwrite``/``fsync`` in the event loop's thread: the fastest when the page cache
    has the data, but a slow disk stalls every connection meanwhile.
``threadpool``
    the same calls in a pool of threads (what Samba's pthreadpool does): the default when
    io_uring is unavailable.
``direct_writes``
    large block-aligned writes (1 MiB and more) bypass the page cache (``O_DIRECT``, through a
    second descriptor of the same file) on file systems where that is measured to be faster:
    it keeps timing both ways per file system (a write in 64 goes the other way) and uses the
    cheaper. Buffered writes cost a page-cache page per 4 KiB, written back later; where
    fresh pages are dear (a VM whose host takes freed memory back: 2 s per GiB here, against
    0.5 s per GiB to the disk), direct wins; where memory is cheap and the disk slow, the page
    cache does. Data reaches the device before the write is answered; a FLUSH still makes it
    durable (the device's cache, and the file's size). Everything else passes through.
``io_uring``
    reads, writes and fsync submitted to the engine's ring and awaited (Samba's vfs_io_uring).
    A short read resubmits the rest, a read of 0 is end of file, a write of 0 becomes ENOSPC.
    Smarter than Samba's module: a file system that cannot do a buffered read without
    blocking (tmpfs) makes io_uring hand every request to a kernel worker thread, 25x slower at
    queue depth 1; such files are detected once per file system and served by the module below.
    While other clients wait, reads of 1 MiB and more run on io_uring's worker threads
    (IOSQE_ASYNC), so their copies use another core instead of the event loop's.

Every module fills the whole buffer of a read unless the file ends first, and writes all of a
buffer or raises OSError.

Where the server acts as each session's Unix account, every module runs a descriptor's data
I/O as the identity that opened it (`data`, a ``vfs.data_identity.DataCredentials``): ops on
the ring name that identity's registered personality, the pool's threads switch their own
credentials, inline I/O makes the loop's thread act as it (what the kernel does on a write
depends on who writes: see vfs.data_identity). Without `data` (a server that acts as itself)
nothing is switched.
"""
from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import fcntl
import functools
import logging
import mmap
import os
import time
from concurrent.futures import ThreadPoolExecutor

from smbring.cheaper import CheaperOf
from smbring.datapath import IOSQE_ASYNC, PUNT_MIN   # one rule for reads and sends

log = logging.getLogger("smbring.vfs")

MODULES = ("posix", "threadpool", "io_uring", "direct_writes")


class Posix:
    name = "posix"

    def __init__(self, below=None, data=None):
        self.below = below
        self.data = data        # who each descriptor's I/O runs as (None: as the thread is)

    async def pread_into(self, fd: int, view: memoryview, offset: int) -> int:
        if self.data is not None:
            self.data.act_here(fd)
        return self.pread_into_sync(fd, view, offset)

    def read_now(self, fd: int, view: memoryview, offset: int) -> int | None:
        """The read `pread_into` makes, made here and now where it is sure not to wait (the
        bytes read: all of them, or up to the file's end); None where it might wait, or
        was not finished (then `pread_into` reads it all again). A module that adds no
        such way says None: the event loop must never wait for a disk."""
        return None

    async def pwrite_all(self, fd: int, view: memoryview, offset: int) -> int:
        if self.data is not None:
            self.data.act_here(fd)
        return self.pwrite_all_sync(fd, view, offset)

    async def fsync(self, fd: int) -> None:
        if self.data is not None:
            self.data.act_here(fd)
        os.fsync(fd)

    @staticmethod
    def pread_into_sync(fd: int, view: memoryview, offset: int) -> int:
        done = 0
        while done < len(view):
            n = os.preadv(fd, [view[done:]], offset + done)
            if n == 0:
                break
            done += n
        return done

    @staticmethod
    def pwrite_all_sync(fd: int, view: memoryview, offset: int) -> int:
        done = 0
        while done < len(view):
            n = os.pwrite(fd, view[done:], offset + done)
            if n == 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            done += n
        return done

    def closed(self, fd: int) -> None:
        """fd is about to be closed: forget what was kept for it."""
        if self.below:
            self.below.closed(fd)

    def describe(self) -> str:
        return self.name + (f" -> {self.below.describe()}" if self.below else "")


def thread_pool(initializer=None) -> ThreadPoolExecutor:
    """The threads the threadpool module runs file I/O in: one pool for all the stacks `build`
    makes at once (as Samba has one per smbd), made when a stack needs it. A new thread takes
    the credentials of the thread that starts it (the event loop's, acting as some user):
    `initializer` runs first in each (the server's gives it back the server's identity)."""
    return ThreadPoolExecutor(max_workers=8, thread_name_prefix="smbring-io", initializer=initializer)


async def in_thread(pool: ThreadPoolExecutor, work):
    """work()'s result, run in a thread of `pool`. Cancelled meanwhile (the loop's end), it
    still waits for work a thread has begun before it raises CancelledError: a thread cannot
    be stopped, and the descriptor it reads or writes must stay open, its number unused, until
    it is done (its caller's hold ends when this does; work not begun is simply dropped)."""
    running = pool.submit(work)
    try:
        return await asyncio.wrap_future(running)
    except asyncio.CancelledError:
        while not running.done():
            try:
                await asyncio.wrap_future(running)
            except (asyncio.CancelledError, Exception):
                pass        # (cancelled again, or its outcome, which nobody awaits now)
        raise


class ThreadPool(Posix):
    name = "threadpool"

    def __init__(self, below=None, pool: ThreadPoolExecutor | None = None, data=None):
        super().__init__(below, data)
        self._pool = pool

    def pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = thread_pool()
        return self._pool

    def _in_pool(self, fd, call, *args):
        """call(*args) in a thread of the pool, acting as fd's owner there (a thread has
        credentials of its own)."""
        work = self.data.in_worker(fd, call, *args) if self.data is not None else functools.partial(call, *args)
        return in_thread(self.pool(), work)

    async def pread_into(self, fd, view, offset):
        return await self._in_pool(fd, self.pread_into_sync, fd, view, offset)

    async def pwrite_all(self, fd, view, offset):
        return await self._in_pool(fd, self.pwrite_all_sync, fd, view, offset)

    async def fsync(self, fd):
        await self._in_pool(fd, os.fsync, fd)


class IoUring(Posix):
    name = "io_uring"
    CACHED_READ_MAX = 1 << 16   # reads this small are first tried from the page cache at once

    def __init__(self, below, aring, crowded=None, data=None):
        super().__init__(below, data)
        self.aring = aring
        self._punts: dict[int, bool] = {}    # st_dev -> io_uring would punt buffered I/O
        self._device_of: dict[int, int] = {}  # fd -> its st_dev (one fstat per open, not per op)
        # A large buffered read is one long copy done inline by io_uring_enter, in the event
        # loop's thread. When other connections are waiting (crowded() is true), it goes to
        # io_uring's worker threads instead (IOSQE_ASYNC): the copy runs on another core while
        # the loop serves them (4 smbclients: 0.88x -> 1.04x of smbd; with large sends punted
        # too, see datapath.Sender, 1.21x). With one client the hand-off only adds latency,
        # so it stays inline.
        self.crowded = crowded or (lambda: False)

    def _read_cached(self, fd: int, view: memoryview, offset: int) -> tuple[int, bool]:
        """What a small read finds in the page cache, read here and now: a read on the ring
        costs a submission, a completion and a turn of the event loop for the same copy
        (which io_uring makes inline too when the pages are cached). RWF_NOWAIT: never a
        wait for the disk, the ring reads what is not cached. Returns the bytes read and
        whether the read is finished (all read, or the file ended)."""
        if self.data is not None:
            self.data.act_here(fd)
        done = 0
        while done < len(view):
            try:
                n = os.preadv(fd, [view[done:]], offset + done, os.RWF_NOWAIT)
            except (BlockingIOError, InterruptedError):
                return done, False
            except OSError as e:
                if e.errno == errno.EOPNOTSUPP:
                    return done, False  # (no such reads here: io_uring would punt, see _inline)
                raise
            if n == 0:
                return done, True
            done += n
        return done, True

    def _inline(self, fd: int) -> bool:
        dev = self._device_of.get(fd)
        if dev is None:
            # (forgotten at `closed`; a number reused unseen could only pick the other way to
            # run the same op as the same owner). Its open may have read it already.
            dev = self.data.device(fd) if self.data is not None else None
            if dev is None:
                dev = os.fstat(fd).st_dev
            self._device_of[fd] = dev
        punts = self._punts.get(dev)
        if punts is None:
            from smbring.uring import punts_buffered_io
            try:
                punts = punts_buffered_io(fd)
            except OSError:
                punts = False
            self._punts[dev] = punts
            if punts:
                log.info("device %#x punts buffered io_uring I/O to workers: served by %s",
                         dev, self.below.name)
        return punts

    def read_now(self, fd, view, offset):
        """What the page cache holds of a small read (see _read_cached), where that is all
        of it."""
        if len(view) > self.CACHED_READ_MAX or self._inline(fd):
            return None
        done, finished = self._read_cached(fd, view, offset)
        return done if finished else None

    async def pread_into(self, fd, view, offset):
        if self._inline(fd):
            return await self.below.pread_into(fd, view, offset)
        done = 0
        if len(view) <= self.CACHED_READ_MAX:
            done, finished = self._read_cached(fd, view, offset)
            if finished:                # (all read, or the file ended)
                return done
        flags = IOSQE_ASYNC if len(view) >= PUNT_MIN and self.crowded() else 0
        while done < len(view):
            n = await self._on_ring(fd, self.aring.read, fd, view[done:], offset + done, flags)
            if n == 0:
                break
            done += n
        return done

    async def pwrite_all(self, fd, view, offset):
        if self._inline(fd):
            return await self.below.pwrite_all(fd, view, offset)
        done = 0
        while done < len(view):
            n = await self._on_ring(fd, self.aring.write, fd, view[done:], offset + done)
            if n == 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            done += n
        return done

    async def fsync(self, fd):
        await self._on_ring(fd, self.aring.fsync, fd)

    def closed(self, fd: int) -> None:
        self._device_of.pop(fd, None)
        super().closed(fd)

    async def _on_ring(self, fd, op, *args):
        """op(*args) on the ring, run with fd's owner's credentials (its personality named in
        the SQE: whoever the thread acts as when the ring submits it)."""
        if self.data is None:
            return await op(*args)
        p = self.data.personality(self.aring.ring, fd)
        try:
            return await op(*args, personality=p.id)
        finally:
            self.data.done(p)


class DirectWrites(Posix):
    name = "direct_writes"
    MIN = 1 << 20          # smaller writes gain little and would pay the device's latency
    ALIGN = 4096           # offsets, lengths and memory: what O_DIRECT asks on any device
    BOUNCE_KEPT = 4        # idle aligned buffers kept for reuse (8 MiB each, usually)

    def __init__(self, below, as_server=None, data=None):
        super().__init__(below, data)
        # the context in which the twin is opened: as the server (the thread may be acting as
        # another user than the file's opener), on a descriptor the opener may write through
        self.as_server = as_server or contextlib.nullcontext
        self._direct: dict[int, int] = {}           # fd -> its O_DIRECT twin (-1: none)
        self._device_of: dict[int, int] = {}        # fd -> st_dev
        self.devices: dict[int, CheaperOf] = {}     # st_dev -> buffered or direct
        self._bounce: list[mmap.mmap] = []          # page-aligned copies of unaligned payloads

    async def pread_into(self, fd, view, offset):
        return await self.below.pread_into(fd, view, offset)

    def read_now(self, fd, view, offset):
        return self.below.read_now(fd, view, offset)     # (reads go below as they are)

    async def fsync(self, fd):
        await self.below.fsync(fd)   # the same file: covers what the twin wrote

    async def pwrite_all(self, fd, view, offset):
        n = len(view)
        if n < self.MIN or offset % self.ALIGN or n % self.ALIGN:
            return await self.below.pwrite_all(fd, view, offset)
        costs = self._costs(fd)
        how = costs.pick()
        twin = self._twin(fd, costs) if how == "direct" else -1
        if twin < 0:
            how = "buffered"   # (direct is ruled out for the device if it cannot be opened)
        start = time.monotonic()
        if how == "direct":
            try:
                done = await self._write_direct(twin, view, offset)
            except OSError as e:
                if e.errno != errno.EINVAL:
                    raise
                # the device wants more alignment than 4 KiB, or a short direct write left
                # an unaligned rest: the page cache takes this range and the next ones
                costs.rule_out("direct")
                log.info("direct_writes: O_DIRECT refused (%s): page cache only on device %#x",
                         e, self._device_of.get(fd, 0))
                how = "buffered"
        if how == "buffered":
            done = await self.below.pwrite_all(fd, view, offset)
        before = costs.best()
        costs.record(how, time.monotonic() - start, n)
        if costs.best() != before:
            log.info("direct_writes: device %#x: %s writes are the cheaper now (%r)",
                     self._device_of.get(fd, 0), costs.best(), costs)
        return done

    async def _write_direct(self, twin: int, view: memoryview, offset: int) -> int:
        if _address(view) % self.ALIGN == 0:
            return await self.below.pwrite_all(twin, view, offset)
        bounce = self._take_bounce(len(view))
        try:
            aligned = memoryview(bounce)[:len(view)]
            aligned[:] = view
            try:
                return await self.below.pwrite_all(twin, aligned, offset)
            finally:
                aligned.release()
        finally:
            if len(self._bounce) < self.BOUNCE_KEPT:
                self._bounce.append(bounce)
            else:
                try:
                    bounce.close()
                except BufferError:
                    pass        # still viewed somewhere: the collector closes it later

    def _take_bounce(self, size: int) -> mmap.mmap:
        for i, buf in enumerate(self._bounce):
            if len(buf) >= size:
                return self._bounce.pop(i)
        return mmap.mmap(-1, max(size, 8 << 20))   # mmap memory is page-aligned

    def _costs(self, fd: int) -> CheaperOf:
        dev = self._device_of.get(fd)
        if dev is None:
            dev = self._device_of[fd] = os.fstat(fd).st_dev
        costs = self.devices.get(dev)
        if costs is None:
            costs = self.devices[dev] = CheaperOf("buffered", "direct")
        return costs

    def _twin(self, fd: int, costs: CheaperOf) -> int:
        twin = self._direct.get(fd)
        if twin is None:
            try:
                # a new open of the same file (not a dup: O_DIRECT belongs to the open), made
                # only for a descriptor open for writing: opened as the server, it must never
                # let anyone write through it what their own descriptor could not
                if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE not in (os.O_WRONLY, os.O_RDWR):
                    raise OSError(errno.EBADF, "not open for writing")
                with self.as_server():
                    twin = os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_DIRECT | os.O_CLOEXEC)
                if self.data is not None:
                    self.data.twin(twin, fd)    # written as fd's owner, whoever opened it
            except OSError as e:
                twin = -1
                if e.errno == errno.EINVAL:        # the file system has no direct I/O
                    costs.rule_out("direct")
                    log.info("direct_writes: no O_DIRECT on device %#x: page cache only",
                             self._device_of.get(fd, 0))
            self._direct[fd] = twin
        return twin

    def closed(self, fd: int) -> None:
        twin = self._direct.pop(fd, -1)
        self._device_of.pop(fd, None)
        if twin >= 0:
            if self.data is not None:
                self.data.forget_twin(twin)
            os.close(twin)
        super().closed(fd)


def _address(view: memoryview) -> int:
    """Where a buffer's bytes start, for the alignment O_DIRECT needs."""
    if view.readonly:
        return -1       # cannot be asked without a copy: treated as unaligned
    return ctypes.addressof(ctypes.c_char.from_buffer(view))


def build(names: list[str], aring=None, crowded=None, pool: ThreadPoolExecutor | None = None,
          as_server=None, owners=None) -> Posix:
    """The stack for a share's ``vfs objects`` (top first). Without any data module listed:
    direct_writes over io_uring where the engine is available, else over threadpool (in
    `pool`, shared by the stacks of a server). Unknown names are skipped (the configuration
    loader has warned about them). `owners`: who each descriptor's I/O runs as (a server
    acting as each user's account, see vfs.data_identity), None where it acts as itself."""
    data = [n for n in names if n in MODULES and n != "posix"]
    if not data and "posix" not in names:
        data = ["direct_writes", "io_uring" if aring is not None else "threadpool"]
    stack: Posix = Posix(data=owners)
    for name in reversed(data):
        if name == "direct_writes":
            stack = DirectWrites(stack, as_server, owners)
        elif name == "threadpool":
            stack = ThreadPool(stack, pool, owners)
        elif name == "io_uring":
            if aring is None:
                log.warning("vfs io_uring: io_uring is unavailable here; threadpool serves instead")
                stack = ThreadPool(stack, pool, owners)
            else:
                stack = IoUring(stack, aring, crowded, owners)
    return stack
