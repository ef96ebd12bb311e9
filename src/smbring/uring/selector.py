"""An epoll selector written on the public APIs of `select.epoll` and `selectors.BaseSelector`.

The event loop polls once per turn, and a server's turn usually brings one ready socket. The
standard library's EpollSelector makes a Python call per ready descriptor to find its key, and
the loop's selector (aio.RingFlushingSelector) one more to reach it; this one finds each key
in the poll's own loop. It behaves as the standard one: the same SelectorKey records, the same
errors for an unknown or twice-registered file, the same rounding of the timeout (up to
epoll's millisecond, so that a wait is never shorter than asked).
"""
from __future__ import annotations

import math
import select
import selectors
from collections.abc import Mapping

EVENT_READ = selectors.EVENT_READ
EVENT_WRITE = selectors.EVENT_WRITE


def _descriptor(fileobj) -> int:
    """The file descriptor of an int or of an object with fileno()."""
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


def epoll_events(events: int) -> int:
    return (select.EPOLLIN if events & EVENT_READ else 0) | (select.EPOLLOUT if events & EVENT_WRITE else 0)


def ready_keys(keys: dict[int, selectors.SelectorKey], polled) -> list[tuple[selectors.SelectorKey, int]]:
    """select()'s answer for epoll's (fd, events) pairs: each registered file's key and the
    events of those it asked for that came (as the standard EpollSelector, an error or hang-up
    wakes both sides); files no longer registered, or with none of their events, left out."""
    ready = []
    for fd, event in polled:
        key = keys.get(fd)
        if key is not None:
            events = ((EVENT_WRITE if event & ~select.EPOLLIN else 0)
                      | (EVENT_READ if event & ~select.EPOLLOUT else 0)) & key.events
            if events:
                ready.append((key, events))
    return ready


class _KeysByFile(Mapping):
    """get_map()'s view: file object (or descriptor) -> SelectorKey."""

    def __init__(self, selector: "DirectEpollSelector"):
        self._selector = selector

    def __len__(self) -> int:
        return len(self._selector.keys_by_fd)

    def __getitem__(self, fileobj) -> selectors.SelectorKey:
        fd = self._selector.registered_descriptor(fileobj)
        return self._selector.keys_by_fd[fd]

    def __iter__(self):
        return iter(self._selector.keys_by_fd)


class DirectEpollSelector(selectors.BaseSelector):
    """selectors.EpollSelector's behaviour, with one Python call per select() however many
    descriptors are ready."""

    def __init__(self):
        self._epoll = select.epoll()
        self.keys_by_fd: dict[int, selectors.SelectorKey] = {}
        self._map: _KeysByFile | None = _KeysByFile(self)

    def fileno(self) -> int:
        return self._epoll.fileno()

    def registered_descriptor(self, fileobj) -> int:
        """The descriptor `fileobj` was registered under; a file object closed since is
        found by identity (as the standard selectors find it); KeyError: not registered."""
        try:
            fd = _descriptor(fileobj)
        except ValueError:
            for key in self.keys_by_fd.values():
                if key.fileobj is fileobj:
                    return key.fd
            raise
        if fd not in self.keys_by_fd:
            raise KeyError(f"{fileobj!r} is not registered")
        return fd

    def register(self, fileobj, events, data=None) -> selectors.SelectorKey:
        if not events or events & ~(EVENT_READ | EVENT_WRITE):
            raise ValueError(f"Invalid events: {events!r}")
        fd = _descriptor(fileobj)
        if fd in self.keys_by_fd:
            raise KeyError(f"{fileobj!r} (FD {fd}) is already registered")
        key = selectors.SelectorKey(fileobj, fd, events, data)
        self._epoll.register(fd, epoll_events(events))
        self.keys_by_fd[fd] = key
        return key

    def unregister(self, fileobj) -> selectors.SelectorKey:
        key = self.keys_by_fd.pop(self.registered_descriptor(fileobj))
        try:
            self._epoll.unregister(key.fd)
        except OSError:
            pass        # closed before it was unregistered: the kernel dropped it already
        return key

    def modify(self, fileobj, events, data=None) -> selectors.SelectorKey:
        if not events or events & ~(EVENT_READ | EVENT_WRITE):
            raise ValueError(f"Invalid events: {events!r}")
        key = self.keys_by_fd[self.registered_descriptor(fileobj)]
        if events != key.events:
            try:
                self._epoll.modify(key.fd, epoll_events(events))
            except BaseException:
                self.keys_by_fd.pop(key.fd)     # as the standard selectors: no longer watched
                raise
        if events != key.events or data != key.data:
            key = key._replace(events=events, data=data)
            self.keys_by_fd[key.fd] = key
        return key

    def select(self, timeout=None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:
            timeout = -1
        elif timeout <= 0:
            timeout = 0
        else:
            timeout = math.ceil(timeout * 1e3) * 1e-3
        try:
            polled = self._epoll.poll(timeout, len(self.keys_by_fd) or 1)
        except InterruptedError:
            return []
        return ready_keys(self.keys_by_fd, polled)

    def close(self) -> None:
        self._epoll.close()
        self.keys_by_fd.clear()
        self._map = None

    def get_map(self) -> Mapping | None:
        return self._map
