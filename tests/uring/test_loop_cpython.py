"""CPython's own asyncio tests, run against smbring.uring.loop.RingEventLoop.

The test classes are CPython's (``test.test_asyncio``, from the interpreter's standard test
package, Debian's libpython3.X-testsuite; absent there, this module is skipped): each one
parametrised by its event loop is subclassed here with ``create_event_loop`` returning the
ring loop, once waiting through ``IORING_OP_EPOLL_WAIT`` and once through the ``POLL_ADD``
fallback that older kernels get. Nothing of them is changed; the tests skipped on purpose are
listed in SKIPPED with the reason.

The modules whose tests make their loops with ``asyncio.new_event_loop()`` (streams, SSL,
tasks, locks, ...) run whole with the event loop policy's loops being ring loops
(POLICY_MODULES), each in a process of its own (cpython_module_on_ring.py): what a module
does to its process cannot end or slow down the test run, and a hang ends only that process,
with its stacks in the test's report. What they skip is CPython's own doing: Windows-only
tests, and test_tasks' reference-leak test, which needs a debug build of Python.
"""
from __future__ import annotations

import asyncio
import faulthandler
import json
import os
import subprocess
import sys

import pytest

from smbring.uring.loop import RingEventLoop

cpython = pytest.importorskip("test.test_asyncio.utils", reason="CPython's test package is not installed")
from test.test_asyncio import test_events, test_sendfile, test_sock_lowlevel, test_subprocess  # noqa: E402
from test.test_asyncio import utils as test_utils  # noqa: E402
from asyncio import unix_events  # noqa: E402

# test name -> why it is not run against this loop (none so far; keep reasons precise)
SKIPPED: dict[str, str] = {}


@pytest.fixture(autouse=True)
def _no_hang(request, capfd):
    """CPython's tests have no time limit of their own: a wake-up the loop loses would hang
    the run, so a test run here still running after two minutes ends it with every thread's
    stack. The stacks go to the run's own stderr: the test's captured output dies with the
    process (it would end with exit status 1 and not a word of why). (The modules run in
    processes of their own have their own limits.)"""
    if request.node.originalname == "test_cpython_module_with_ring_loops":
        yield
        return
    with capfd.disabled():
        run_stderr = os.dup(2)
    faulthandler.dump_traceback_later(120, exit=True, file=run_stderr)
    yield
    faulthandler.cancel_dump_traceback_later()
    os.close(run_stderr)


def _skip_listed(cls):
    for name, reason in SKIPPED.items():
        if hasattr(cls, name):
            setattr(cls, name, pytest.mark.skip(reason=reason)(getattr(cls, name)))
    return cls


def _ring(self):
    return RingEventLoop()


def _ring_poll_add(self):
    return RingEventLoop(use_epoll_wait=False)


# -- test_events: the loop's whole public API (callbacks, timers, fds, sockets, pipes, ptys,
#    servers, datagrams, unix sockets, subprocesses with a SafeChildWatcher) ------------------
@_skip_listed
class TestRingLoopEvents(test_events.UnixEventLoopTestsMixin, test_events.SubprocessTestsMixin,
                         test_utils.TestCase):
    create_event_loop = _ring


@_skip_listed
class TestRingLoopEventsPollAdd(TestRingLoopEvents):
    create_event_loop = _ring_poll_add


# -- test_sock_lowlevel: loop.sock_* ------------------------------------------------------------
@_skip_listed
class TestRingLoopSockets(test_sock_lowlevel.BaseSockTestsMixin, test_utils.TestCase):
    create_event_loop = _ring


@_skip_listed
class TestRingLoopSocketsPollAdd(TestRingLoopSockets):
    create_event_loop = _ring_poll_add


# -- test_sendfile: loop.sendfile and loop.sock_sendfile -------------------------------------------
@_skip_listed
class TestRingLoopSendfile(test_sendfile.SendfileTestsBase, test_utils.TestCase):
    create_event_loop = _ring


# -- test_subprocess: asyncio.subprocess with each child watcher -----------------------------------
class _RingSubprocess(test_subprocess.SubprocessWatcherMixin):
    """CPython's mixin makes its loop with the policy's new_event_loop(): make that ours."""

    def setUp(self):
        self._saved_policy = asyncio.get_event_loop_policy()
        policy = asyncio.DefaultEventLoopPolicy()
        policy.new_event_loop = RingEventLoop
        asyncio.set_event_loop_policy(policy)
        super().setUp()
        assert isinstance(self.loop, RingEventLoop)

    def tearDown(self):
        try:
            super().tearDown()
        finally:
            asyncio.set_event_loop_policy(self._saved_policy)


@_skip_listed
class TestRingLoopSubprocessThreaded(_RingSubprocess, test_utils.TestCase):
    Watcher = unix_events.ThreadedChildWatcher


@_skip_listed
class TestRingLoopSubprocessPidfd(_RingSubprocess, test_utils.TestCase):
    Watcher = unix_events.PidfdChildWatcher


# -- modules whose loops come from the policy: all of their tests, on ring loops -------------------
POLICY_MODULES = ["test_streams", "test_ssl", "test_sslproto", "test_taskgroups", "test_tasks",
                  "test_timeouts", "test_waitfor", "test_threads", "test_queues", "test_locks",
                  "test_unix_events"]


RUNNER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cpython_module_on_ring.py")
MODULE_TIMEOUT = 300    # seconds for a whole module (test_tasks, the longest, takes about 30)


def _summary(stdout: str) -> dict:
    """The runner's JSON summary (its last line of output), or {} if it ended before it."""
    lines = stdout.splitlines()
    try:
        return json.loads(lines[-1]) if lines else {}
    except ValueError:
        return {}


@pytest.mark.parametrize("name", POLICY_MODULES)
def test_cpython_module_with_ring_loops(name, tmp_path):
    try:
        run = subprocess.run([sys.executable, RUNNER, name], cwd=tmp_path, capture_output=True,
                             text=True, timeout=MODULE_TIMEOUT)
    except subprocess.TimeoutExpired as e:
        said = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else e.stderr or ""
        pytest.fail(f"{name} still running after {MODULE_TIMEOUT} s:\n{said[-5000:]}")
    report = run.stderr[-8000:]
    summary = _summary(run.stdout)
    failed = "\n".join(summary.get("failed", ()))
    assert run.returncode == 0, f"{name} failed (exit status {run.returncode}):\n{failed}\n...\n{report}"
    assert summary["passed"] and summary["run"] > 0, report
    expected_skips = {"Windows only", "object <module 'sys' (built-in)> has no attribute 'gettotalrefcount'"}
    assert set(summary["skipped"]) <= expected_skips, summary["skipped"]
    assert summary["ring_loops"], "no ring loop was made: the module did not run on the ring"
