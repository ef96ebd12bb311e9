"""The ring itself: setup, features, submission queueing, waiting, batches, lifetime."""
import errno
import gc
import os
import subprocess
import sys
import threading
import time

import pytest

from smbring import uring
from smbring.uring import Ring


def test_default_setup_flags_and_probe():
    f = uring.features()
    assert f.available
    with Ring() as r:
        assert r.sq_entries == 256 and r.cq_entries > r.sq_entries
        assert r.ops["nop"] and r.ops["read"]
        assert r.supports("nop") and r.supports(0)
        # the default ring asks for what this kernel accepts, never SQPOLL
        assert not r.setup_flags & uring._uring.SETUP_SQPOLL
        if f.setup_flags["DEFER_TASKRUN"]:
            assert r.setup_flags & uring._uring.SETUP_DEFER_TASKRUN
    with pytest.raises(ValueError):
        Ring().supports("no_such_op")


def test_features_json_cli():
    out = subprocess.run([sys.executable, "-m", "smbring.cli", "features", "--json"],
                         capture_output=True, text=True, check=True).stdout
    import json
    data = json.loads(out)
    assert data["available"] and data["ops"]["send_zc"] in (True, False)
    assert "DEFER_TASKRUN" in data["setup_flags"]


def test_bad_arguments_raise_not_crash(ring, datafile):
    fd, _, _ = datafile
    with pytest.raises(ValueError):
        Ring(0)
    with pytest.raises(ValueError):
        Ring(8, cq_entries=4)
    with pytest.raises(TypeError):
        ring.read(fd, b"immutable bytes")          # kernel would write into it
    with pytest.raises(TypeError):
        ring.read("fd", bytearray(1))
    with pytest.raises(TypeError):
        ring.nop(callback=42)
    with pytest.raises(ValueError):
        ring.nop(sqe_flags=1 << 6)                  # CQE_SKIP_SUCCESS would lose completions
    with pytest.raises(ValueError):
        ring.read_fixed(fd, 0, 0)                   # nothing registered
    with pytest.raises(ValueError):
        ring.async_cancel()
    with pytest.raises(TypeError):
        ring.poll_remove("not a request")
    with pytest.raises(ValueError):
        ring.wait(timeout=-1)
    with pytest.raises(ValueError):
        ring.timeout(-1.0)


def test_callback_receives_request(ring):
    seen = []
    req = ring.nop(callback=seen.append)
    assert not req.done and ring.inflight == 1
    assert ring.wait() == 1
    assert seen == [req] and req.done and req.res == 0 and ring.inflight == 0
    assert req.result() == 0


def test_kernel_error_becomes_oserror_with_errno(ring, complete):
    req = complete(ring.read(987654, bytearray(8), 0))
    assert req.res == -errno.EBADF
    with pytest.raises(OSError) as e:
        req.result()
    assert e.value.errno == errno.EBADF


def test_full_sq_queues_in_user_space_and_keeps_order():
    order = []
    with Ring(4) as r:
        reqs = [r.nop(callback=lambda q, i=i: order.append(i)) for i in range(50)]
        assert r.queued == 46                       # 4 in the SQ, the rest waiting in user space
        r.submit()
        assert r.queued == 0
        while r.inflight:
            r.wait(1)
    assert sorted(order) == list(range(50)) and all(q.done for q in reqs)


def test_wait_never_exceeds_timeout(ring):
    """Seed 001, problem a: a wait with a timeout once took twice as long."""
    ring.timeout(10.0)                              # something in flight that won't finish
    for timeout in (0.05, 0.2):
        start = time.monotonic()
        ring.wait(1, timeout=timeout)
        elapsed = time.monotonic() - start
        assert timeout * 0.9 <= elapsed < timeout * 1.5 + 0.02, elapsed
    start = time.monotonic()
    assert ring.wait(1, timeout=0) == 0
    assert time.monotonic() - start < 0.05


def test_timeout_op_fires(ring, complete):
    start = time.monotonic()
    req = complete(ring.timeout(0.05))
    assert req.res == -errno.ETIME and time.monotonic() - start >= 0.045


def test_callback_exception_propagates_and_ring_stays_usable(ring):
    def boom(req):
        raise RuntimeError("handler failed")

    ring.nop(callback=boom)
    later = ring.nop()
    with pytest.raises(RuntimeError, match="handler failed"):
        ring.wait(2)
    ring.wait(0)
    ring.wait(1, timeout=1)
    assert later.done


def test_read_batch(ring, datafile):
    fd, data, _ = datafile
    buf = bytearray(4 * 4096)
    got = []
    b = ring.read_batch(fd, buf, [0, 8192, 4096, 61440], 4096, callback=got.append)
    while not b.done:
        ring.wait(4)
    assert got == [b] and b.results == [4096] * 4 and b.min_result == 4096
    assert buf == data[0:4096] + data[8192:12288] + data[4096:8192] + data[61440:]
    import array
    b = ring.read_batch(fd, buf, array.array("Q", [65536 - 100, 0]), 4096)
    ring.wait(2)
    assert b.results == [100, 4096] and b.min_result == 100   # the short read shows
    with pytest.raises(TypeError):
        ring.read_batch(fd, buf, array.array("i", [0]))
    with pytest.raises(ValueError):
        ring.read_batch(fd, bytearray(10), [0, 1, 2], 4096)


def test_write_batch(ring, datafile):
    fd, data, path = datafile
    payload = bytes(range(256)) * 32
    b = ring.write_batch(fd, payload, [0, 16384], 4096)
    ring.wait(2)
    assert b.results == [4096, 4096]
    disk = path.read_bytes()
    assert disk[:4096] == payload[:4096] and disk[16384:20480] == payload[4096:]


def test_buffers_pinned_until_completion(ring, sockpair):
    a, b = sockpair
    buf = bytearray(16)
    req = ring.recv(a.fileno(), buf)
    ring.submit()
    with pytest.raises(BufferError):
        buf.extend(b"x" * 100)                      # the kernel holds a pointer into it
    del buf
    gc.collect()
    b.send(b"still valid")
    ring.wait(1, timeout=5)
    assert req.res == 11
    # after completion the buffer is released: resizing works again
    buf2 = bytearray(4)
    r2 = ring.recv(a.fileno(), buf2)
    b.send(b"abcd")
    ring.wait(1, timeout=5)
    assert r2.done
    buf2.extend(b"ok")


def test_close_with_requests_in_flight_cancels_and_reaps(sockpair):
    a, _ = sockpair
    r = Ring(8)
    seen = []
    bufs = [bytearray(8) for _ in range(3)]
    reqs = [r.recv(a.fileno(), buf, callback=seen.append) for buf in bufs]
    r.submit()
    r.close()
    assert r.closed and all(q.done for q in reqs)
    assert {q.res for q in reqs} == {-errno.ECANCELED}
    assert len(seen) == 3
    for buf in bufs:
        buf.extend(b"released")
    with pytest.raises(ValueError):
        r.nop()


def test_dropping_ring_with_requests_in_flight(sockpair):
    a, _ = sockpair
    buf = bytearray(8)
    r = Ring(8)
    req = r.recv(a.fileno(), buf)
    r.submit()
    del r
    gc.collect()
    assert req.done and req.res == -errno.ECANCELED
    buf.extend(b"free again")


def test_forked_child_gets_clear_error(ring):
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            ring.nop()
        except RuntimeError as e:
            code = 0 if "fork" in str(e) else 2
        except BaseException:
            code = 3
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert ring.wait(0) == 0 and ring.nop() is not None   # the parent's ring is unharmed
    ring.wait(1)


def test_other_thread_gets_clear_error(ring):
    errors = []

    def use():
        try:
            ring.nop()
        except RuntimeError as e:
            errors.append(str(e))

    t = threading.Thread(target=use)
    t.start()
    t.join()
    assert errors and "thread" in errors[0]


def test_cancel_request(ring, sockpair):
    a, _ = sockpair
    req = ring.recv(a.fileno(), bytearray(8))
    ring.submit()
    assert req.cancel() is True
    ring.wait(1, timeout=5)
    assert req.done and req.res == -errno.ECANCELED
    assert req.cancel() is False


def test_unsupported_op_error_names_it(monkeypatch):
    assert issubclass(uring.UnsupportedOp, NotImplementedError)
    # every op smbring exposes is named in OP_NAMES so the message can name it
    assert "send_zc" in uring.OP_NAMES and "epoll_wait" in uring.OP_NAMES


def test_unavailable_reason_names_the_cause():
    """With io_uring disabled for unprivileged users (sysctl 1) a non-root child sees EPERM."""
    try:
        with open("/proc/sys/kernel/io_uring_disabled") as f:
            setting = f.read().strip()
    except OSError:
        pytest.skip("no kernel.io_uring_disabled sysctl")
    if os.geteuid() != 0 or setting != "0":
        pytest.skip("needs root and io_uring enabled to flip the sysctl safely")
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # the sysctl is the machine's: while it is flipped, every other test process
        # making a ring would fail. `make test` runs this file alone too (its ASan part).
        pytest.skip("flips a machine-wide sysctl: only where no other test runs meanwhile")
    # Flip the sysctl to 2 (disabled for all) only for the duration of a child's setup.
    code = (
        "import smbring.uring as u, sys\n"
        "r = u.unavailable_reason(); print(r); sys.exit(0 if r and 'EPERM' in r and "
        "'io_uring_disabled = 2' in r else 1)\n"
    )
    with open("/proc/sys/kernel/io_uring_disabled", "w") as f:
        f.write("2")
    try:
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    finally:
        with open("/proc/sys/kernel/io_uring_disabled", "w") as f:
            f.write(setting)
    assert res.returncode == 0, res.stdout + res.stderr


def test_callback_may_close_the_ring():
    r = Ring(8)
    r.nop(callback=lambda q: r.close())
    r.nop()
    r.nop()
    r.wait(3)
    assert r.closed


def test_callback_may_submit_and_wait_again(ring):
    done = []

    def chain(req):
        if len(done) < 5:
            done.append(req.res)
            ring.nop(callback=chain)
            ring.wait(1)

    ring.nop(callback=chain)
    ring.wait(1)
    assert done == [0] * 5


def test_eventfd_signals_work_but_not_our_own_dispatch(ring, sockpair):
    """The eventfd wakes an outside loop when completions are due, and process() does not
    leave it signalled by the CQEs its own dispatch posted (no wake-up for nothing)."""
    import select
    a, b = sockpair
    efd = ring.eventfd()
    ep = select.epoll()
    ep.register(efd, select.EPOLLIN)
    try:
        req = ring.recv(a.fileno(), bytearray(8))
        ring.process()
        assert ep.poll(0) == []
        b.send(b"wake")
        assert ep.poll(5) == [(efd, select.EPOLLIN)]
        os.read(efd, 8)
        ring.process()
        assert req.done and req.res == 4
        if ring.setup_flags & uring._uring.SETUP_TASKRUN_FLAG:
            assert ep.poll(0) == []
    finally:
        ep.close()


def test_hot_ops_parse_alike_on_both_paths(ring, sockpair):
    """read/write/send/recv take a vectorcall fast path for the common spellings; every other
    spelling goes through the general parser and must behave the same."""
    a, b = sockpair
    got = []
    r1 = ring.send(a.fileno(), b"ab", 0, callback=got.append)            # fast path
    r2 = ring.send(fd=a.fileno(), buf=b"cd", callback=got.append)         # general parser
    ring.wait(2)
    assert got == [r1, r2] and r1.res == r2.res == 2
    assert b.recv(4) == b"abcd"
    with pytest.raises(TypeError):
        ring.send("3", b"x")
    with pytest.raises(TypeError):
        ring.send(a.fileno(), b"x", 0, bogus=1)
    with pytest.raises(OverflowError):
        ring.send(1 << 40, b"x")
    with pytest.raises(TypeError):
        ring.recv(a.fileno(), b"read-only bytes")                         # must be writable
    with pytest.raises(OverflowError):
        ring.write(a.fileno(), b"x", sqe_flags=1 << 40)


def test_a_signal_during_the_enter_that_submits_ends_the_wait(ring, sockpair):
    """A signal whose handler raises, arriving while the wait's first io_uring_enter also
    submits an op, ends that enter with the count submitted, not EINTR: the wait still runs
    the handler (its exception ends the wait) instead of waiting out its timeout."""
    import signal

    class Interrupted(Exception):
        pass

    def interrupt(*_):
        raise Interrupted

    a, _b = sockpair
    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        ring.poll_add(a.fileno(), 1, callback=lambda req: None)    # POLLIN: never comes
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        began = time.monotonic()
        with pytest.raises(Interrupted):
            ring.wait(1, 20)
        assert time.monotonic() - began < 10
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_close_with_writes_still_queued_in_user_space(tmp_path):
    """Writes prepared but not yet handed to the kernel (the SQ full, the rest queued in user
    space) when the ring closes are submitted, then cancelled: each ends, written whole or
    with ECANCELED, its callback told; none is dropped unseen, and their buffers are free."""
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
    try:
        r = Ring(4)
        seen = []
        bufs = [bytearray([i + 1]) * 4096 for i in range(40)]
        reqs = [r.write(fd, buf, i * 4096, callback=seen.append) for i, buf in enumerate(bufs)]
        assert r.queued == 36
        r.close()
        assert all(q.done for q in reqs) and len(seen) == 40
        data = os.pread(fd, 40 * 4096, 0)
        for i, q in enumerate(reqs):
            assert q.res in (4096, -errno.ECANCELED), q
            if q.res == 4096:
                assert data[i * 4096:(i + 1) * 4096] == bufs[i]
        for buf in bufs:
            buf.extend(b"released")
    finally:
        os.close(fd)


def test_a_ring_closed_with_a_fixed_read_unfinished_keeps_its_registered_buffer():
    """A ring closed by another thread (which cannot wait for the kernel there) abandons its
    unfinished requests: the registered buffer such a request reads into stays exported (so
    never resized or freed under the kernel), as the requests' own buffers are kept."""
    r = Ring(8)
    buf = bytearray(4096)
    r.register_buffers([buf])
    rfd, wfd = os.pipe()
    try:
        r.read_fixed(rfd, 0, 0, 4096)       # nothing to read: still in the kernel at close
        r.submit()
        closer = threading.Thread(target=r.close)
        with pytest.warns(ResourceWarning, match="did not finish"):
            closer.start()
            closer.join()
        with pytest.raises(BufferError):
            buf.extend(b"x")                # still exported: kept
    finally:
        os.close(rfd)
        os.close(wfd)
