"""An asyncio event loop that waits in io_uring.

    import asyncio
    from smbring.uring.loop import RingEventLoop

    with asyncio.Runner(loop_factory=RingEventLoop) as runner:   # like uvloop's loop_factory
        runner.run(main())

:class:`RingEventLoop` is asyncio's own :class:`asyncio.SelectorEventLoop` with one part
changed, the selector: :class:`RingSelector` keeps the watched file descriptors in a
level-triggered epoll set, as asyncio's ``EpollSelector`` does, but waits in
``io_uring_enter`` on an ``IORING_OP_EPOLL_WAIT`` request (Linux 6.15+; older kernels get a
``POLL_ADD`` on the epoll fd, re-armed after each wake-up). The loop's ring is also the ring of
:func:`smbring.uring.aio.get_ring`, so file and socket ops issued through
:mod:`smbring.uring.aio` complete in the same wait: no eventfd, no extra turn of the loop to
submit, one system call where the plain loop made three or four.

Why the epoll set, rather than one ``POLL_ADD`` per descriptor: asyncio needs level-triggered
readiness (a reader that leaves data behind must be called again), which a multishot
``POLL_ADD`` does not give and a one-shot one gives only by re-arming it after every event, an
SQE and a Python callback per event (Samba's io_uring experiment measured that slower than
epoll). Letting epoll keep the ready list and moving only the *wait* into the ring costs one
SQE per wake-up, whatever the number of ready descriptors.

The ring is made on first use, in the thread that runs the loop (a ring belongs to one
thread), and closed with the loop; ring requests still pending then are cancelled and their
futures fail with ``ECANCELED``.
"""
from __future__ import annotations

import asyncio
import errno
import os
import select

from smbring.uring import Ring
from smbring.uring.selector import DirectEpollSelector, ready_keys

__all__ = ["RingEventLoop", "RingEventLoopPolicy", "RingSelector", "new_event_loop"]

MAX_EVENTS = 1024                  # ready descriptors fetched per wake-up, at most


class RingSelector(DirectEpollSelector):
    """A selector over a level-triggered epoll set whose wait happens in an io_uring.

    ``select()`` also dispatches every other completion that is ready on :attr:`ring`: ops
    prepared on it since the last call are submitted by the same ``io_uring_enter`` that waits.
    ``use_epoll_wait=False`` forces the ``POLL_ADD`` fallback (for tests on new kernels).
    """

    def __init__(self, ring_entries: int = 256, *, use_epoll_wait: bool | None = None):
        super().__init__()
        self._ring: Ring | None = None
        self._ring_entries = ring_entries
        self._use_epoll_wait = use_epoll_wait
        self._wait = None          # the EPOLL_WAIT or POLL_ADD request in flight, if any
        self._ready: list[tuple[int, int]] = []   # (fd, epoll events) not yet handed out
        self._refetch = False      # the fallback's last epoll.poll() filled its buffer

    # -- the ring ---------------------------------------------------------------------------
    @property
    def ring(self) -> Ring:
        """The ring this selector waits in, made on first use (in the calling thread)."""
        if self._ring is None:
            if self._epoll.closed:
                raise RuntimeError("the selector is closed")
            # (after close_ring() the next use makes a new ring: asyncio's close() still
            # unregisters its self-pipe, which needs none)
            ring = Ring(self._ring_entries)
            if self._use_epoll_wait is None:
                self._use_epoll_wait = ring.supports("epoll_wait")
            self._ring = ring
        return self._ring

    def _arm(self, ring: Ring):
        if self._use_epoll_wait:
            maxevents = min(max(len(self.keys_by_fd), 1), MAX_EVENTS)
            self._wait = ring.epoll_wait(self._epoll.fileno(), maxevents, callback=self._woken)
        else:
            # one-shot: arming checks the epoll fd's readiness as it is now, so a descriptor
            # left ready (level-triggered) wakes the next wait too
            self._wait = ring.poll_add(self._epoll.fileno(), select.POLLIN, callback=self._woken)

    def _woken(self, req) -> None:
        """The wait's completion, dispatched inside whichever call reaped it."""
        if req is not self._wait:
            return
        self._wait = None
        res = req.res
        if res < 0:
            if res in (-errno.ECANCELED, -errno.EINTR, -errno.EAGAIN):
                return             # re-armed by the next select()
            raise OSError(-res, os.strerror(-res), "waiting for the epoll set in io_uring")
        if self._use_epoll_wait:
            self._ready.extend(req.value)
        else:
            self._collect()

    def _collect(self) -> None:
        """The fallback: the epoll fd is readable, fetch its events without blocking."""
        maxevents = min(max(len(self.keys_by_fd), 1), MAX_EVENTS)
        events = self._epoll.poll(0, maxevents)
        self._refetch = len(events) == maxevents
        self._ready.extend(events)

    # -- the selector -----------------------------------------------------------------------
    def unregister(self, fileobj):
        key = super().unregister(fileobj)
        if self._ready:
            # readiness fetched before this call says nothing about a later file of that number
            self._ready = [(fd, ev) for fd, ev in self._ready if fd != key.fd]
        return key

    def select(self, timeout=None):
        ring = self._ring
        if ring is None:
            ring = self.ring
        if self._wait is None and not self._ready and not self._refetch:
            self._arm(ring)
        if self._ready or self._refetch:
            ring.process()         # submit and reap what is ready, without blocking
            if self._refetch:
                self._collect()
        elif timeout is None:
            ring.wait(1)
        elif timeout <= 0:
            ring.process()
        else:
            ring.wait(1, timeout)
        ready, self._ready = self._ready, []
        return ready_keys(self.keys_by_fd, ready)

    def close_ring(self) -> None:
        """Cancel what is in flight on the ring (callbacks see ECANCELED) and close it."""
        ring, self._ring = self._ring, None
        self._wait = None
        if ring is not None and not ring.closed:
            ring.close()

    def close(self):
        self._ready = []
        self.close_ring()
        super().close()


class RingEventLoop(asyncio.SelectorEventLoop):
    """asyncio's selector loop, waiting in an io_uring (see the module's docstring).

    ``loop.uring`` is the loop's :class:`smbring.uring.Ring`: :func:`smbring.uring.aio.get_ring`
    uses it on this loop, and its completions are dispatched inside the loop's wait.
    """

    def __init__(self, *, ring_entries: int = 256, use_epoll_wait: bool | None = None):
        self._ring_selector = RingSelector(ring_entries, use_epoll_wait=use_epoll_wait)
        super().__init__(self._ring_selector)

    @property
    def uring(self) -> Ring:
        if self.is_closed():
            raise RuntimeError("Event loop is closed")
        return self._ring_selector.ring

    def close(self):
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        if self.is_closed():
            return
        # ring requests still pending are cancelled while the loop can still take the
        # callbacks their futures schedule (asyncio drops those when it closes)
        self._ring_selector.close_ring()
        super().close()


def new_event_loop() -> RingEventLoop:
    return RingEventLoop()


class RingEventLoopPolicy(asyncio.DefaultEventLoopPolicy):
    """asyncio's default policy (child watchers included) whose new loops are RingEventLoops."""

    def new_event_loop(self) -> RingEventLoop:
        return RingEventLoop()

