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
"""
from __future__ import annotations

import asyncio
import errno
import logging
import os
from concurrent.futures import ThreadPoolExecutor

from smbring.datapath import IOSQE_ASYNC, PUNT_MIN   # one rule for reads and sends

log = logging.getLogger("smbring.vfs")

MODULES = ("posix", "threadpool", "io_uring")


class Posix:
    name = "posix"

    def __init__(self, below=None):
        self.below = below

    async def pread_into(self, fd: int, view: memoryview, offset: int) -> int:
        return self.pread_into_sync(fd, view, offset)

    async def pwrite_all(self, fd: int, view: memoryview, offset: int) -> int:
        return self.pwrite_all_sync(fd, view, offset)

    async def fsync(self, fd: int) -> None:
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

    def describe(self) -> str:
        return self.name + (f" -> {self.below.describe()}" if self.below else "")


class ThreadPool(Posix):
    name = "threadpool"
    _pool: ThreadPoolExecutor | None = None

    @classmethod
    def pool(cls) -> ThreadPoolExecutor:
        if cls._pool is None:   # one pool for the process, as Samba has one per smbd
            cls._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="smbring-io")
        return cls._pool

    async def pread_into(self, fd, view, offset):
        return await asyncio.get_running_loop().run_in_executor(
            self.pool(), self.pread_into_sync, fd, view, offset)

    async def pwrite_all(self, fd, view, offset):
        return await asyncio.get_running_loop().run_in_executor(
            self.pool(), self.pwrite_all_sync, fd, view, offset)

    async def fsync(self, fd):
        await asyncio.get_running_loop().run_in_executor(self.pool(), os.fsync, fd)


class IoUring(Posix):
    name = "io_uring"

    def __init__(self, below, aring, crowded=None):
        super().__init__(below)
        self.aring = aring
        self._punts: dict[int, bool] = {}    # st_dev -> io_uring would punt buffered I/O
        # A large buffered read is one long copy done inline by io_uring_enter, in the event
        # loop's thread. When other connections are waiting (crowded() is true), it goes to
        # io_uring's worker threads instead (IOSQE_ASYNC): the copy runs on another core while
        # the loop serves them (4 smbclients: 0.88x -> 1.04x of smbd; with large sends punted
        # too, see datapath.Sender, 1.21x). With one client the hand-off only adds latency,
        # so it stays inline.
        self.crowded = crowded or (lambda: False)

    def _inline(self, fd: int) -> bool:
        dev = os.fstat(fd).st_dev
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

    async def pread_into(self, fd, view, offset):
        if self._inline(fd):
            return await self.below.pread_into(fd, view, offset)
        done = 0
        flags = IOSQE_ASYNC if len(view) >= PUNT_MIN and self.crowded() else 0
        while done < len(view):
            n = await self.aring.read(fd, view[done:], offset + done, flags)
            if n == 0:
                break
            done += n
        return done

    async def pwrite_all(self, fd, view, offset):
        if self._inline(fd):
            return await self.below.pwrite_all(fd, view, offset)
        done = 0
        while done < len(view):
            n = await self.aring.write(fd, view[done:], offset + done)
            if n == 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            done += n
        return done

    async def fsync(self, fd):
        await self.aring.fsync(fd)


def build(names: list[str], aring=None, crowded=None) -> Posix:
    """The stack for a share's ``vfs objects`` (top first). Without any data module listed:
    io_uring where the engine is available, else threadpool. Unknown names are skipped (the
    configuration loader has warned about them)."""
    data = [n for n in names if n in MODULES and n != "posix"]
    if not data and "posix" not in names:
        data = ["io_uring" if aring is not None else "threadpool"]
    stack: Posix = Posix()
    for name in reversed(data):
        if name == "threadpool":
            stack = ThreadPool(stack)
        elif name == "io_uring":
            if aring is None:
                log.warning("vfs io_uring: io_uring is unavailable here; threadpool serves instead")
                stack = ThreadPool(stack)
            else:
                stack = IoUring(stack, aring, crowded)
    return stack
