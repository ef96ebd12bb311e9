"""asyncio glue: drive a Ring from any running asyncio event loop.

The ring registers an eventfd that the kernel signals whenever completions are ready; the
loop watches it with ``add_reader`` and then lets the ring submit and dispatch. (A ring made
here goes without DEFER_TASKRUN, whose deferred work the eventfd announced late or not at
all: ``smbring.uring.eventfd_setup_flags``.) Ops prepared during one loop
iteration are submitted together, so a burst of awaits costs one syscall: on a
:class:`FlushingEventLoop` (see :func:`flushing_event_loop`) just before the loop polls, which
costs nothing more; on any other loop by one ``call_soon``, which costs the loop one more turn.

Every op of :class:`smbring.uring.Ring` has an awaitable form here that returns the result or
raises ``OSError``. Cancelling the awaiting task cancels the kernel request too; its buffers stay
pinned until the kernel has really let go of them.

    ring = smbring.uring.aio.get_ring()
    n = await ring.read(fd, buf, offset)
"""
from __future__ import annotations

import asyncio
import errno
import os
import time
import weakref

from smbring.uring import Ring, eventfd_setup_flags
from smbring.uring.selector import DirectEpollSelector

__all__ = ["AsyncRing", "FlushingEventLoop", "RingFlushingSelector", "get_ring"]


def _resolver(fut: asyncio.Future, result):
    """A completion callback that settles fut at the request's last completion."""

    def complete(req):
        if not req.done or fut.done():
            return
        res = req.res
        if res < 0:
            fut.set_exception(OSError(-res, os.strerror(-res)))
        else:
            fut.set_result(result(req))

    return complete


def _res(req):
    return req.res


def _value(req):
    return req.value


def _zc(req):
    return req.res, req.zc_copied


class AsyncRing:
    """A Ring bound to an asyncio loop. Create one per loop (see :func:`get_ring`)."""

    def __init__(self, ring: Ring | None = None, *, entries: int = 256,
                 loop: asyncio.AbstractEventLoop | None = None):
        self.loop = loop or asyncio.get_running_loop()
        # a loop that waits in a ring of its own (smbring.uring.loop.RingEventLoop) submits
        # what was prepared and dispatches completions in every wait: no eventfd, no flush
        loop_ring = getattr(self.loop, "uring", None)
        if ring is None:
            # (driven through the eventfd: without DEFER_TASKRUN, see eventfd_setup_flags)
            ring = loop_ring if isinstance(loop_ring, Ring) else Ring(entries, flags=eventfd_setup_flags())
        self.ring = ring
        self._loop_drains = ring is loop_ring
        self._eventfd = -1
        self._flush_pending = False
        # a loop that polls through a RingFlushingSelector submits what was prepared right
        # before it polls; elsewhere one call_soon per iteration does
        flusher = getattr(self.loop, "ring_flusher", None)
        self._flusher = flusher if isinstance(flusher, RingFlushingSelector) else None
        if not self._loop_drains:
            self._eventfd = self.ring.eventfd()
            self.loop.add_reader(self._eventfd, self._on_ready)

    def _on_ready(self) -> None:
        try:
            os.read(self._eventfd, 8)
        except BlockingIOError:
            pass
        self.ring.process()

    def _flush(self) -> int:
        """Submit what was prepared and dispatch what is ready; the number of callbacks run."""
        self._flush_pending = False
        if self.ring.closed:
            return 0
        return self.ring.process()

    def kick(self) -> None:
        """Make sure what was prepared gets submitted before the loop next waits."""
        if self._flush_pending or self._loop_drains:
            return
        self._flush_pending = True
        if self._flusher is not None:
            self._flusher.pending.append(self)
        else:
            self.loop.call_soon(self._flush)

    async def _await(self, prepare, *args, result=_res, personality=0, **kw):
        fut = self.loop.create_future()
        if personality:
            # the op runs with the credentials registered under `personality`; only this op:
            # the stamp goes as soon as it is prepared
            ring = self.ring
            before = ring.personality
            ring.personality = personality
            try:
                req = prepare(*args, callback=_resolver(fut, result), **kw)
            finally:
                ring.personality = before
        else:
            req = prepare(*args, callback=_resolver(fut, result), **kw)
        self.kick()
        try:
            return await fut
        except asyncio.CancelledError:
            if req.cancel():
                self.kick()
            raise

    # -- the awaitable ops ---------------------------------------------------------------
    def nop(self):
        return self._await(self.ring.nop)

    # personality: an id from ring.register_personality(), the op's credentials (0: the
    # submitting thread's when it is submitted)
    def read(self, fd, buf, offset=-1, sqe_flags=0, personality=0):
        return self._await(self.ring.read, fd, buf, offset, sqe_flags=sqe_flags, personality=personality)

    def write(self, fd, buf, offset=-1, personality=0):
        return self._await(self.ring.write, fd, buf, offset, personality=personality)

    def readv(self, fd, buffers, offset=-1):
        return self._await(self.ring.readv, fd, buffers, offset)

    def writev(self, fd, buffers, offset=-1):
        return self._await(self.ring.writev, fd, buffers, offset)

    def read_fixed(self, fd, index, offset, length=-1, buf_offset=0):
        return self._await(self.ring.read_fixed, fd, index, offset, length, buf_offset)

    def write_fixed(self, fd, index, offset, length=-1, buf_offset=0):
        return self._await(self.ring.write_fixed, fd, index, offset, length, buf_offset)

    def fsync(self, fd, datasync=False, personality=0):
        return self._await(self.ring.fsync, fd, datasync, personality=personality)

    def fadvise(self, fd, offset, length, advice):
        return self._await(self.ring.fadvise, fd, offset, length, advice)

    def openat(self, dirfd, path, flags=os.O_RDONLY, mode=0o644):
        return self._await(self.ring.openat, dirfd, path, flags, mode)

    def openat2(self, dirfd, path, flags=os.O_RDONLY, mode=0, resolve=0):
        return self._await(self.ring.openat2, dirfd, path, flags, mode, resolve)

    def close(self, fd):
        return self._await(self.ring.close_async, fd)

    def statx(self, dirfd, path, flags=0, **kw):
        return self._await(self.ring.statx, dirfd, path, flags, result=_value, **kw)

    def unlinkat(self, dirfd, path, flags=0):
        return self._await(self.ring.unlinkat, dirfd, path, flags)

    def renameat(self, olddirfd, oldpath, newdirfd, newpath, flags=0):
        return self._await(self.ring.renameat, olddirfd, oldpath, newdirfd, newpath, flags)

    def mkdirat(self, dirfd, path, mode=0o777):
        return self._await(self.ring.mkdirat, dirfd, path, mode)

    def symlinkat(self, target, newdirfd, linkpath):
        return self._await(self.ring.symlinkat, target, newdirfd, linkpath)

    def linkat(self, olddirfd, oldpath, newdirfd, newpath, flags=0):
        return self._await(self.ring.linkat, olddirfd, oldpath, newdirfd, newpath, flags)

    def getxattr(self, path, name, buf, flags=0):
        return self._await(self.ring.getxattr, path, name, buf, flags)

    def setxattr(self, path, name, value, flags=0):
        return self._await(self.ring.setxattr, path, name, value, flags)

    def fgetxattr(self, fd, name, buf, flags=0):
        return self._await(self.ring.fgetxattr, fd, name, buf, flags)

    def fsetxattr(self, fd, name, value, flags=0):
        return self._await(self.ring.fsetxattr, fd, name, value, flags)

    def send(self, fd, buf, flags=0):
        return self._await(self.ring.send, fd, buf, flags)

    def recv(self, fd, buf, flags=0):
        return self._await(self.ring.recv, fd, buf, flags)

    def sendmsg(self, fd, buffers, flags=0, sqe_flags=0):
        return self._await(self.ring.sendmsg, fd, buffers, flags, sqe_flags=sqe_flags)

    def recvmsg(self, fd, buffers, flags=0):
        return self._await(self.ring.recvmsg, fd, buffers, flags)

    def send_zc(self, fd, buf, flags=0, fixed_index=-1):
        """Returns (bytes sent, zc_copied) once the kernel has released buf."""
        return self._await(self.ring.send_zc, fd, buf, flags, fixed_index, result=_zc)

    def sendmsg_zc(self, fd, buffers, flags=0):
        return self._await(self.ring.sendmsg_zc, fd, buffers, flags, result=_zc)

    def accept(self, fd, flags=None):
        return self._await(self.ring.accept, fd, *(() if flags is None else (flags,)))

    def connect(self, fd, address):
        return self._await(self.ring.connect, fd, address)

    def shutdown(self, fd, how=2):
        return self._await(self.ring.shutdown, fd, how)

    def splice(self, fd_in, off_in, fd_out, off_out, nbytes, flags=0):
        return self._await(self.ring.splice, fd_in, off_in, fd_out, off_out, nbytes, flags)

    def tee(self, fd_in, fd_out, nbytes, flags=0):
        return self._await(self.ring.tee, fd_in, fd_out, nbytes, flags)

    def poll(self, fd, events):
        return self._await(self.ring.poll_add, fd, events)

    def sleep(self, seconds):
        """A kernel timeout; returns normally when it fires."""
        fut = self.loop.create_future()

        def fired(req):
            if not fut.done():
                if req.res in (0, -errno.ETIME):  # the timer expired
                    fut.set_result(None)
                else:
                    fut.set_exception(OSError(-req.res, os.strerror(-req.res)))

        self.ring.timeout(seconds, callback=fired)
        self.kick()
        return fut

    def epoll_wait(self, epfd, maxevents=64):
        return self._await(self.ring.epoll_wait, epfd, maxevents, result=_value)

    def close_fd(self, fd: int) -> None:
        """Cancel everything pending on fd, then close it (see Ring.close_fd)."""
        self.ring.close_fd(fd)

    def close_ring(self) -> None:
        """Close the ring; one the loop waits in is the loop's, closed with it instead."""
        if self.ring.closed or self._loop_drains:
            return
        self.loop.remove_reader(self._eventfd)
        self.ring.close()


class RingFlushingSelector(DirectEpollSelector):
    """An epoll selector (smbring.uring.selector: io_uring means Linux), except that every
    select() first submits the ops that the AsyncRings of its loop prepared since the last
    one (see :class:`FlushingEventLoop`).

    asyncio polls once per iteration, after the iteration's callbacks have run, so nothing
    prepared can be left unsubmitted while the loop blocks, and the submission needs no extra
    iteration (a ``call_soon`` makes the loop poll once more, with a timeout of 0, before it can
    block)."""

    def __init__(self):
        super().__init__()
        self.pending: list[AsyncRing] = []    # the rings with ops prepared since the last select
        self.loop: asyncio.AbstractEventLoop | None = None   # for reporting a failed flush

    def flush(self) -> bool:
        """Submit every pending ring's ops. True when that ran callbacks (which may have
        scheduled work) or left a ring pending again: the loop must not block then."""
        rings, self.pending = self.pending, []
        busy = False        # (C completion handlers of smbring._events run no asyncio code)
        failure = None
        for aring in rings:
            try:
                busy = aring._flush() > 0 or busy
            except Exception as e:      # reported as a failing call_soon callback would be
                busy = True
                if self.loop is None:
                    failure = failure or e
                else:
                    self.loop.call_exception_handler({
                        "message": "io_uring submission failed", "exception": e})
        if failure is not None:
            raise failure
        # a completion callback that prepared more ops kicked its ring again: those go in
        # the next select, which then comes at once
        return busy or bool(self.pending)

    def select(self, timeout=None):
        if self.pending and self.flush():
            timeout = 0
        return super().select(timeout)


class FlushingEventLoop(asyncio.SelectorEventLoop):
    """asyncio's own selector loop, whose AsyncRings submit just before it polls."""

    # (BaseEventLoop.time returns time.monotonic(): the clock itself, without a Python call
    # around it, read twice a turn)
    time = staticmethod(time.monotonic)

    def __init__(self, selector: RingFlushingSelector | None = None):
        self.ring_flusher = selector if selector is not None else RingFlushingSelector()
        super().__init__(selector=self.ring_flusher)
        self.ring_flusher.loop = self


def flushing_event_loop() -> FlushingEventLoop:
    """A loop factory for ``asyncio.Runner(loop_factory=...)`` or ``asyncio.run``."""
    return FlushingEventLoop()


_rings: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncRing]" = weakref.WeakKeyDictionary()


def get_ring(entries: int = 256) -> AsyncRing:
    """The running loop's AsyncRing, created on first use. Raises UringUnavailable if
    io_uring cannot be used (callers fall back to plain asyncio/os calls)."""
    loop = asyncio.get_running_loop()
    ring = _rings.get(loop)
    if ring is None or ring.ring.closed:
        ring = AsyncRing(entries=entries, loop=loop)
        _rings[loop] = ring
    return ring
