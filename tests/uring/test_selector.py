"""smbring.uring.selector.DirectEpollSelector (the event loop's selector) against CPython's
own tests of its EpollSelector (test.test_selectors, from the interpreter's standard test
package; absent there, this module is skipped), unchanged, and with the default loop's ring
flushing on top, and the ring loop's selector built on it. (CPython's test_modify_unregister patches the standard class's internals, so it skips
itself here; the behaviour it checks is tested below on a real descriptor.)"""
import os
import selectors
import socket
import unittest

import pytest

from smbring.uring.aio import RingFlushingSelector, flushing_event_loop
from smbring.uring.loop import RingSelector
from smbring.uring.selector import DirectEpollSelector

test_selectors = pytest.importorskip("test.test_selectors", reason="CPython's test package is not installed")


class TestDirectEpollSelector(test_selectors.EpollSelectorTestCase):
    SELECTOR = DirectEpollSelector


class TestRingFlushingSelector(test_selectors.EpollSelectorTestCase):
    SELECTOR = RingFlushingSelector


class TestRingSelector(test_selectors.EpollSelectorTestCase):
    """The ring loop's selector (smbring.uring.loop), which waits in io_uring."""
    SELECTOR = RingSelector

    def test_above_fd_setsize(self):
        pytest.skip("by design it hands out at most loop.MAX_EVENTS ready files per select() "
                    "(the rest in the next), where CPython's test wants all 10,000 at once")


def test_cpythons_tests_are_collected():
    names = unittest.TestLoader().getTestCaseNames(TestDirectEpollSelector)
    assert {"test_select", "test_modify", "test_unregister_after_fd_close"} <= set(names)


def test_a_modify_the_kernel_refuses_leaves_the_file_unregistered():
    """As the standard selectors (bpo-30014): a failed modify() unregisters the file, so that
    a later register() of its descriptor is not refused as a duplicate."""
    selector = DirectEpollSelector()
    a, b = socket.socketpair()
    try:
        fd = os.dup(a.fileno())
        selector.register(fd, selectors.EVENT_READ)
        os.close(fd)                    # epoll drops a closed descriptor: modify finds none
        with pytest.raises(OSError):
            selector.modify(fd, selectors.EVENT_READ | selectors.EVENT_WRITE)
        assert len(selector.get_map()) == 0
        key = selector.register(a, selectors.EVENT_WRITE)
        assert selector.select(1) == [(key, selectors.EVENT_WRITE)]
    finally:
        selector.close()
        a.close()
        b.close()


test_events = pytest.importorskip("test.test_asyncio.test_events",
                                  reason="CPython's test package is not installed")


class TestAsyncioEventsOnTheFlushingLoop(test_events.EPollEventLoopTests):
    """CPython's event-loop tests for its epoll loop, unchanged, on smbring's default loop
    (asyncio's selector loop over RingFlushingSelector, smbring.uring.aio)."""

    def create_event_loop(self):
        return flushing_event_loop()
