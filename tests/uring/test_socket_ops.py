"""Socket, pipe, zero-copy, poll, cancellation and epoll ops over real sockets and pipes."""
import errno
import os
import select
import socket
import time

import pytest

from smbring import uring


@pytest.fixture
def tcp_pair():
    """A connected loopback TCP pair (zero-copy and splice need a real TCP socket)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    cli = socket.create_connection(srv.getsockname())
    conn, _ = srv.accept()
    srv.close()
    yield cli, conn
    cli.close()
    conn.close()


def test_send_recv(ring, complete, sockpair):
    a, b = sockpair
    assert complete(ring.send(a.fileno(), b"ping")).res == 4
    buf = bytearray(16)
    assert complete(ring.recv(b.fileno(), buf)).res == 4 and buf[:4] == b"ping"
    assert complete(ring.recv(b.fileno(), bytearray(4), socket.MSG_DONTWAIT)).res == -errno.EAGAIN
    assert complete(ring.send(-1, b"x")).res == -errno.EBADF


def test_sendmsg_recvmsg(ring, complete, sockpair):
    a, b = sockpair
    assert complete(ring.sendmsg(a.fileno(), [b"head", b"-", memoryview(b"payload")])).res == 12
    h, rest = bytearray(4), bytearray(20)
    req = complete(ring.recvmsg(b.fileno(), [h, rest]))
    assert req.res == 12 and h == b"head" and rest[:8] == b"-payload" and req.value == 0
    assert complete(ring.recvmsg(b.fileno(), [bytearray(1)], socket.MSG_DONTWAIT)).res == -errno.EAGAIN


def test_accept_connect_and_multishot_accept(ring, complete):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    host, port = srv.getsockname()
    try:
        cli = socket.socket()
        acc = ring.accept(srv.fileno())
        conn = ring.connect(cli.fileno(), (host, port))
        complete(conn)
        complete(acc)
        assert conn.res == 0 and acc.res >= 0
        os.close(acc.res)
        cli.close()
        fds = []
        multi = ring.accept(srv.fileno(), multishot=True, callback=lambda q: fds.append(q.res))
        ring.submit()
        clients = [socket.create_connection((host, port)) for _ in range(3)]
        while len(fds) < 3:
            ring.wait(1, timeout=5)
        assert all(fd >= 0 for fd in fds) and multi.more and not multi.done
        multi.cancel()
        complete(multi)
        for fd in fds[:3]:
            os.close(fd)
        for c in clients:
            c.close()
        bad = socket.socket()
        refused = complete(ring.connect(bad.fileno(), ("127.0.0.1", 1)))
        assert refused.res == -errno.ECONNREFUSED
        bad.close()
        with pytest.raises(ValueError):
            ring.connect(bad.fileno(), ("not-an-ip", 80))
    finally:
        srv.close()


def test_splice_file_to_socket_and_tee(ring, complete, datafile, tcp_pair):
    fd, data, _ = datafile
    cli, conn = tcp_pair
    r, w = os.pipe()
    try:
        assert complete(ring.splice(fd, 100, w, -1, 1000)).res == 1000
        r2, w2 = os.pipe()
        assert complete(ring.tee(r, w2, 1000)).res == 1000          # duplicate without consuming
        assert os.read(r2, 2000) == data[100:1100]
        os.close(r2)
        os.close(w2)
        assert complete(ring.splice(r, -1, conn.fileno(), -1, 1000)).res == 1000
        got = b""
        while len(got) < 1000:
            got += cli.recv(2000)
        assert got == data[100:1100]
        assert complete(ring.splice(fd, 0, fd, 0, 10)).res == -errno.EINVAL   # no pipe involved
    finally:
        os.close(r)
        os.close(w)


def test_send_zc_two_completions(ring, tcp_pair):
    cli, conn = tcp_pair
    if not ring.supports("send_zc"):
        pytest.skip("kernel lacks SEND_ZC")
    payload = bytearray(os.urandom(200_000))
    events = []
    req = ring.send_zc(conn.fileno(), payload, callback=lambda q: events.append((q.notif, q.more, q.res)))
    ring.submit()
    got = b""
    while len(got) < len(payload):
        ring.wait(0)
        got += cli.recv(1 << 20)
    while not req.done:
        ring.wait(1, timeout=5)
    assert got == payload
    assert events[0] == (False, True, len(payload))        # the send result, a notification follows
    assert events[-1][0] is True and req.done              # then the buffer-released notification
    assert req.zc_copied is True                           # loopback always copies, and says so
    payload.extend(b"released")                            # unpinned only after the notification


def test_send_zc_failure_still_notifies(ring):
    a = socket.socket()            # not connected
    req = ring.send_zc(a.fileno(), b"x" * 100)
    while not req.done:
        ring.wait(1, timeout=5)
    assert req.res < 0
    a.close()


def test_sendmsg_zc_fixed_buffer(ring, tcp_pair):
    cli, conn = tcp_pair
    reg = bytearray(65536)
    reg[:5] = b"fixed"
    ring.register_buffers([reg])
    req = ring.send_zc(conn.fileno(), memoryview(reg)[:5], fixed_index=0)
    while not req.done:
        ring.wait(1, timeout=5)
    assert req.res == 5 and cli.recv(10) == b"fixed"
    with pytest.raises(ValueError):
        ring.send_zc(conn.fileno(), b"elsewhere", fixed_index=0)
    m = ring.sendmsg_zc(conn.fileno(), [b"a", b"bc"])
    while not m.done:
        ring.wait(1, timeout=5)
    assert m.res == 3 and cli.recv(10) == b"abc"
    ring.unregister_buffers()


def test_poll_add_oneshot_multishot_and_remove(ring, complete, sockpair):
    a, b = sockpair
    req = ring.poll_add(a.fileno(), select.POLLIN)
    ring.submit()
    assert ring.wait(1, timeout=0.05) == 0 and not req.done
    b.send(b"x")
    complete(req)
    assert req.res & select.POLLIN
    hits = []
    multi = ring.poll_add(a.fileno(), select.POLLIN, multishot=True, callback=hits.append)
    ring.wait(1, timeout=5)
    assert hits and multi.more
    removal = complete(ring.poll_remove(multi))
    complete(multi)
    assert removal.res == 0 and multi.res == -errno.ECANCELED
    assert complete(ring.poll_remove(multi)).res == -errno.ENOENT


def test_async_cancel_by_request_fd_and_all(ring, complete, sockpair):
    a, b = sockpair
    r1 = ring.recv(a.fileno(), bytearray(1))
    c1 = complete(ring.async_cancel(r1))
    complete(r1)
    assert c1.res == 0 and r1.res == -errno.ECANCELED
    rs = [ring.recv(a.fileno(), bytearray(1)) for _ in range(3)]
    c2 = complete(ring.async_cancel(fd=a.fileno()))
    for q in rs:
        complete(q)
    assert c2.res == 3 and all(q.res == -errno.ECANCELED for q in rs)
    rs = [ring.recv(b.fileno(), bytearray(1)), ring.timeout(30)]
    c3 = complete(ring.async_cancel(all=True))
    for q in rs:
        complete(q)
    assert c3.res >= 2 and all(q.res == -errno.ECANCELED for q in rs)
    assert complete(ring.async_cancel(fd=a.fileno())).res == 0        # nothing left: none cancelled
    assert complete(ring.async_cancel(r1)).res == -errno.ENOENT       # already finished


def test_close_fd_really_closes(ring, tcp_pair):
    """Seed 001, problem b: a pending recv holds the file, so close() alone does not shut the
    socket down; close_fd cancels, reaps, closes, and the peer reads EOF."""
    cli, conn = tcp_pair
    fd = os.dup(conn.fileno())
    conn.close()
    pending = ring.recv(fd, bytearray(8))
    poll = ring.poll_add(fd, select.POLLIN)
    ring.submit()
    ring.close_fd(fd)
    assert pending.done and poll.done and pending.res == -errno.ECANCELED
    cli.settimeout(5)
    assert cli.recv(10) == b""                              # EOF: the socket really closed
    with pytest.raises(OSError):
        os.fstat(fd)
    with pytest.raises(OSError):
        ring.close_fd(fd)                                   # already gone: EBADF


def test_epoll_wait(ring, complete, sockpair):
    if not ring.supports("epoll_wait"):
        pytest.skip("kernel lacks IORING_OP_EPOLL_WAIT (6.15+)")
    a, b = sockpair
    ep = select.epoll()
    ep.register(a.fileno(), select.EPOLLIN)
    try:
        req = ring.epoll_wait(ep.fileno(), 8)
        ring.submit()
        assert ring.wait(1, timeout=0.05) == 0
        b.send(b"x")
        complete(req)
        assert req.value == [(a.fileno(), select.EPOLLIN)]
        # level-triggered: still ready until consumed
        again = complete(ring.epoll_wait(ep.fileno(), 8))
        assert again.res == 1
        assert complete(ring.epoll_wait(a.fileno(), 8)).res == -errno.EINVAL   # not an epoll fd
    finally:
        ep.close()


def test_buffer_ring_multishot_recv(ring, sockpair):
    a, b = sockpair
    br = ring.register_buf_ring(group=3, entries=4, size=64)
    got = []

    def on_data(req):
        if req.res > 0:
            got.append(br.take(req.buffer_id, req.res))

    req = ring.recv_multishot(a.fileno(), 3, callback=on_data)
    ring.submit()
    for msg in (b"one", b"two", b"three", b"four", b"five", b"six"):
        b.send(msg)
        while len(got) < 1 or got[-1] != msg:
            ring.wait(1, timeout=5)
    assert got == [b"one", b"two", b"three", b"four", b"five", b"six"] and req.more
    b.close()                                              # EOF ends the multishot
    while not req.done:
        ring.wait(1, timeout=5)
    assert req.res == 0
    with pytest.raises(ValueError):
        br.take(99, 1)
    br.unregister()


def test_take_a_completion(ring, sockpair):
    """take(req): the data a completion names, b"" at end of file, OSError for a failed one;
    its buffer goes back once, so a second take of the same completion is refused."""
    a, b = sockpair
    br = ring.register_buf_ring(group=4, entries=4, size=64)
    other = ring.register_buf_ring(group=6, entries=2, size=64)
    seen = []

    def on_data(req):
        seen.append(br.take(req))
        if req.res > 0:
            with pytest.raises(ValueError, match="already taken"):
                br.take(req)
            with pytest.raises(ValueError, match="does not read into this buffer ring"):
                other.take(req)

    req = ring.recv_multishot(a.fileno(), 4, callback=on_data)
    for i in range(10):                      # more messages than buffers: each one came back
        b.send(b"m%d" % i)
        while len(seen) <= i:
            ring.wait(1, timeout=5)
    b.close()
    while not req.done:
        ring.wait(1, timeout=5)
    assert seen == [b"m%d" % i for i in range(10)] + [b""]
    with pytest.raises(TypeError):
        br.take(req, 1, 2)

    failed = ring.recv_multishot(12345, 4)   # not a descriptor: the completion carries -EBADF
    while not failed.done:
        ring.wait(1, timeout=5)
    with pytest.raises(OSError) as err:
        br.take(failed)
    assert err.value.errno == errno.EBADF
    with pytest.raises(ValueError, match="does not read into"):
        br.take(ring.nop())


def test_forward_a_completion_without_copying(ring):
    """send(fd, req) / write(fd, req) send the data a multishot completion left in a provided
    buffer straight from that buffer; the buffer goes back to the kernel when the send is
    done (more messages than buffers get through), and the completion cannot be taken or
    forwarded again."""
    a, b = socket.socketpair()
    c, d = socket.socketpair()
    br = ring.register_buf_ring(group=8, entries=2, size=64)
    forwarded = []

    def relay(req):
        if req.res > 0:
            forwarded.append(ring.send(c.fileno(), req))
            with pytest.raises(ValueError, match="already taken"):
                br.take(req)
            with pytest.raises(ValueError, match="already taken"):
                ring.send(c.fileno(), req)

    try:
        req = ring.recv_multishot(a.fileno(), 8, callback=relay)
        got = b""
        deadline = time.monotonic() + 10
        for i in range(12):                      # 12 messages through 2 buffers
            msg = b"message %02d;" % i           # 11 bytes
            b.send(msg)
            while len(got) < 11 * (i + 1) and time.monotonic() < deadline:
                ring.wait(1, timeout=1)
                try:
                    got += d.recv(4096, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    pass
        assert got == b"".join(b"message %02d;" % i for i in range(12))
        while any(not f.done for f in forwarded):
            ring.wait(1, timeout=5)
        assert len(forwarded) == 12 and all(f.res == 11 for f in forwarded) and req.more
        b.close()                                # EOF: nothing to forward
        while not req.done:
            ring.wait(1, timeout=5)
        with pytest.raises(ValueError, match="no data"):
            ring.send(c.fileno(), req)
        with pytest.raises(ValueError, match="buffer ring"):
            ring.write(c.fileno(), ring.nop())
        failed = ring.recv_multishot(12345, 8)   # not a descriptor: -EBADF
        while not failed.done:
            ring.wait(1, timeout=5)
        with pytest.raises(OSError):
            ring.send(c.fileno(), failed)
    finally:
        for s in (a, b, c, d):
            s.close()


def test_ring_closed_with_a_forwarded_send_in_flight(sockpair):
    a, b = sockpair
    c, d = socket.socketpair()
    r = uring.Ring(8)
    br = r.register_buf_ring(group=1, entries=2, size=64)
    try:
        r.recv_multishot(a.fileno(), 1, callback=lambda q: q.res > 0 and r.send(c.fileno(), q))
        b.send(b"x" * 64)
        r.wait(1, timeout=5)
        r.close()                                # the forwarded send is reaped or cancelled
        assert r.closed and br is not None
    finally:
        c.close()
        d.close()


def test_registered_files(ring, complete, datafile):
    fd, data, _ = datafile
    ring.register_files(4)                                 # a sparse table
    assert ring.update_files(2, [fd]) == 1
    buf = bytearray(8)
    assert complete(ring.read(2, buf, 0, sqe_flags=uring.FIXED_FILE)).res == 8
    assert buf == data[:8]
    assert complete(ring.read(1, buf, 0, sqe_flags=uring.FIXED_FILE)).res == -errno.EBADF
    ring.unregister_files()
    ring.register_files([fd])
    assert complete(ring.read(0, buf, 8, sqe_flags=uring.FIXED_FILE)).res == 8


def test_read_multishot_from_a_pipe(ring):
    if not ring.supports("read_multishot"):
        pytest.skip("kernel lacks IORING_OP_READ_MULTISHOT (6.7+)")
    r, w = os.pipe()
    br = ring.register_buf_ring(group=5, entries=4, size=16)
    got = []
    req = ring.read_multishot(r, 5, callback=lambda q: q.res > 0 and got.append(br.take(q.buffer_id, q.res)))
    ring.submit()
    for msg in (b"a", b"bc", b"def"):
        os.write(w, msg)
        while not got or got[-1] != msg:
            ring.wait(1, timeout=5)
    assert got == [b"a", b"bc", b"def"] and req.more
    os.close(w)                                     # EOF ends it
    while not req.done:
        ring.wait(1, timeout=5)
    assert req.res == 0
    os.close(r)
    with pytest.raises(ValueError):
        ring.read_multishot(r, 70000)


def test_callbacks_cannot_start_new_requests_while_closing(sockpair):
    a, b = sockpair
    r = uring.Ring(8)
    attempts = []

    def again(req):
        attempts.append(req.res)
        r.recv(a.fileno(), bytearray(1))           # raises: the ring is closing

    r.recv(a.fileno(), bytearray(1), callback=again)
    r.submit()
    with pytest.raises(ValueError, match="closing"):
        r.close()
    assert r.closed and attempts == [-errno.ECANCELED]
