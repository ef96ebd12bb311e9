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
import selectors
from collections.abc import Mapping

from smbring.uring import Ring

__all__ = ["RingEventLoop", "RingEventLoopPolicy", "RingSelector", "new_event_loop"]

MAX_EVENTS = 1024                  # ready descriptors fetched per wake-up, at most


def _fileobj_to_fd(fileobj) -> int:
    """The descriptor of an int or of an object with fileno(), as selectors accepts them."""
    if isinstance(fileobj, int):
        fd = fileobj
    else:
        try:
            fd = int(fileobj.fileno())
        except (AttributeError, TypeError, ValueError):
            raise ValueError(f"Invalid file object: {fileobj!r}") from None
    if fd < 0:
        raise ValueError(f"Invalid file descriptor: {fd}")
    return fd


class _KeyMap(Mapping):
    """The read-only file object -> SelectorKey view that get_map() returns."""

    def __init__(self, selector: "RingSelector"):
        self._selector = selector

    def __len__(self):
        return len(self._selector._keys)

    def __getitem__(self, fileobj):
        try:
            return self._selector._keys[self._selector._fd_of(fileobj)]
        except KeyError:
            raise KeyError(f"{fileobj!r} is not registered") from None

    def __iter__(self):
        return iter(self._selector._keys)


class RingSelector(selectors.BaseSelector):
    """A selector over a level-triggered epoll set whose wait happens in an io_uring.

    ``select()`` also dispatches every other completion that is ready on :attr:`ring`: ops
    prepared on it since the last call are submitted by the same ``io_uring_enter`` that waits.
    ``use_epoll_wait=False`` forces the ``POLL_ADD`` fallback (for tests on new kernels).
    """

    def __init__(self, ring_entries: int = 256, *, use_epoll_wait: bool | None = None):
        self._epoll = select.epoll()
        self._keys: dict[int, selectors.SelectorKey] = {}
        self._map = _KeyMap(self)
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
            maxevents = min(max(len(self._keys), 1), MAX_EVENTS)
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
        maxevents = min(max(len(self._keys), 1), MAX_EVENTS)
        events = self._epoll.poll(0, maxevents)
        self._refetch = len(events) == maxevents
        self._ready.extend(events)

    # -- BaseSelector -----------------------------------------------------------------------
    def _fd_of(self, fileobj) -> int:
        try:
            return _fileobj_to_fd(fileobj)
        except ValueError:
            # a file object already closed: find it by identity, as selectors does
            for key in self._keys.values():
                if key.fileobj is fileobj:
                    return key.fd
            raise

    def register(self, fileobj, events, data=None):
        if not events or events & ~(selectors.EVENT_READ | selectors.EVENT_WRITE):
            raise ValueError(f"Invalid events: {events!r}")
        fd = self._fd_of(fileobj)
        if fd in self._keys:
            raise KeyError(f"{fileobj!r} (FD {fd}) is already registered")
        key = selectors.SelectorKey(fileobj, fd, events, data)
        self._keys[fd] = key
        try:
            self._epoll.register(fd, self._epoll_mask(events))
        except BaseException:
            del self._keys[fd]
            raise
        return key

    def unregister(self, fileobj):
        try:
            key = self._keys.pop(self._fd_of(fileobj))
        except KeyError:
            raise KeyError(f"{fileobj!r} is not registered") from None
        try:
            self._epoll.unregister(key.fd)
        except OSError:
            pass               # already closed: the kernel dropped it from the set
        if self._ready:
            # readiness fetched before this call says nothing about a later file of that number
            self._ready = [(fd, ev) for fd, ev in self._ready if fd != key.fd]
        return key

    def modify(self, fileobj, events, data=None):
        fd = self._fd_of(fileobj)
        try:
            key = self._keys[fd]
        except KeyError:
            raise KeyError(f"{fileobj!r} is not registered") from None
        if events != key.events:
            if not events or events & ~(selectors.EVENT_READ | selectors.EVENT_WRITE):
                raise ValueError(f"Invalid events: {events!r}")
            self._epoll.modify(fd, self._epoll_mask(events))
        if events != key.events or data is not key.data:
            key = self._keys[fd] = key._replace(events=events, data=data)
        return key

    def get_map(self):
        return self._map

    @staticmethod
    def _epoll_mask(events: int) -> int:
        mask = 0
        if events & selectors.EVENT_READ:
            mask |= select.EPOLLIN
        if events & selectors.EVENT_WRITE:
            mask |= select.EPOLLOUT
        return mask

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
        result = []
        keys = self._keys
        for fd, event in ready:
            key = keys.get(fd)
            if key is None:
                continue
            events = 0
            if event & ~select.EPOLLIN:    # as asyncio's EpollSelector: errors wake both sides
                events |= selectors.EVENT_WRITE
            if event & ~select.EPOLLOUT:
                events |= selectors.EVENT_READ
            events &= key.events
            if events:
                result.append((key, events))
        return result

    def close_ring(self) -> None:
        """Cancel what is in flight on the ring (callbacks see ECANCELED) and close it."""
        ring, self._ring = self._ring, None
        self._wait = None
        if ring is not None and not ring.closed:
            ring.close()

    def close(self):
        self._keys.clear()
        self._ready = []
        self.close_ring()
        self._epoll.close()


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

