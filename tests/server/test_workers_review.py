"""Adversarial review of `smbring serve --workers 2`: what one client does through one worker
must not stall or break the clients of the others, nor the shared store.

Clients are raw (tests/security/raw.py); one is put on the other worker by stopping the
first client's worker (SIGSTOP) while it connects and negotiates (test_workers_handoff)."""
from __future__ import annotations

import os
import signal
import socket
import struct
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "security"))
from raw import NoAnswer, RawClient  # noqa: E402
from servers import PASSWORD, USER, stop  # noqa: E402
from worker_servers import pid_of, status_of, worker_of  # noqa: E402
from worker_servers import start as start_workers  # noqa: E402

from smbcore import create_body, lock_body, negotiate_body, read_body, set_info_body  # noqa: E402

from smbring.smb import wire  # noqa: E402

READ_WRITE = 0x0012019F
EXCLUSIVE_NOW = 0x2 | 0x10          # SMB2_LOCKFLAG_EXCLUSIVE_LOCK | FAIL_IMMEDIATELY
SHARED_NOW = 0x1 | 0x10
MAX_LOCKS = 4096                    # `max locks per open`'s default


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = start_workers(tmp_path_factory.mktemp("workers-review"))
    yield server
    stop(server["proc"])


def logged_on(port: int, guid: bytes | None = None):
    c = RawClient(port)
    assert c.negotiate((wire.SMB311,), client_guid=guid or os.urandom(16)).status == wire.STATUS_SUCCESS
    return c, c.tree(c.logon(USER, PASSWORD), "share")


def on_other_worker(server, worker: int):
    """A logged-on raw client that the worker other than `worker` serves."""
    pid = pid_of(server, worker)
    os.kill(pid, signal.SIGSTOP)
    try:
        c = RawClient(server["port"])
        assert c.negotiate((wire.SMB311,)).status == wire.STATUS_SUCCESS
    finally:
        os.kill(pid, signal.SIGCONT)
    return c, c.tree(c.logon(USER, PASSWORD), "share")


@pytest.fixture(scope="module")
def two(server):
    """(client, tree, worker) on each worker."""
    a, ta = logged_on(server["port"])
    wa = worker_of(server, a)
    b, tb = on_other_worker(server, wa)
    wb = worker_of(server, b)
    assert {wa, wb} == {1, 2}
    yield (a, ta, wa), (b, tb, wb)
    a.close()
    b.close()


def slowest_answer(action, during, every: float = 0.05) -> float:
    """The longest time `action()` took while `during()` ran in another thread (at least once)."""
    done = threading.Event()
    result: dict = {}

    def run():
        try:
            result["value"] = during()
        finally:
            done.set()
    t = threading.Thread(target=run)
    t.start()
    slowest = 0.0
    try:
        while True:
            start = time.monotonic()
            try:
                action()
            except NoAnswer:
                slowest = float("inf")
                break
            slowest = max(slowest, time.monotonic() - start)
            if done.wait(every):
                break
    finally:
        t.join()
    return slowest, result.get("value")


# -- byte-range locks: another worker's many locks cost a LOCK O(log n) each --------------------
def kernel_lock_time(path: Path, n: int, beside: int) -> float:
    """How long the kernel takes to add `n` one-byte OFD locks to a file beside another
    descriptor's `beside`: its list of a file's POSIX locks is walked for each, so this is
    O(n * (beside + n)), and the LOCK below (its locks are kernel locks too: `posix
    locking`) pays it."""
    import fcntl
    path.write_bytes(b"x")
    first, second = os.open(path, os.O_RDWR), os.open(path, os.O_RDWR)
    try:
        def lock(fd: int, start: int) -> None:      # (a struct flock)
            fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack("hh4xqqi4x", fcntl.F_WRLCK, os.SEEK_SET, start, 1, 0))
        for i in range(beside):
            lock(first, 2 * i)
        t0 = time.monotonic()
        for i in range(n):
            lock(second, (1 << 40) + 2 * i)
        return time.monotonic() - t0
    finally:
        os.close(first)
        os.close(second)
        path.unlink()


def test_a_lock_request_against_another_workers_many_locks_stalls_nobody(server, two, tmp_path):
    """One client holds half `max locks per open` locks on a file through one worker; its
    connection on the other worker asks for `max locks per open` more there (none
    conflicting). Each element was checked against every lock of the other worker (4096 x 4096 Lock objects,
    some 10 s of one worker's event loop, inside the store's write transaction, which every
    CREATE of every worker waits for): a third client's opens on the first worker, and its
    ECHOs on the second, wait no longer than a second more than the kernel itself takes to
    add the LOCK's kernel locks beside the other open's (`kernel_lock_time`: ~0.25 s on an
    idle 2-vCPU machine, more under load; the LOCK makes them in its worker's event loop,
    inside the store's write transaction)."""
    (a, ta, wa), (b, tb, wb) = two
    fa = ta.open("many-locks.bin", READ_WRITE, wire.FILE_OPEN_IF)
    fb = tb.open("many-locks.bin", READ_WRITE, wire.FILE_OPEN_IF)
    # (half as many: `max locks per open` ranges at once beside more than half as many locks
    # would cost the kernel more than a LOCK may, smb.posix_locks.KERNEL_STEPS_MAX)
    r = ta.lock(fa, [(2 * i, 1, EXCLUSIVE_NOW) for i in range(MAX_LOCKS // 2)])
    assert r.status == wire.STATUS_SUCCESS, r
    c, tc = logged_on(server["port"], a.offered["guid"])       # with a: on its worker
    d, _td = logged_on(server["port"], b.offered["guid"])      # with b
    try:
        assert worker_of(server, c) == wa and worker_of(server, d) == wb

        def probe():        # an open on a's worker (the store's write lock), an ECHO on b's
            tc.close(tc.open("elsewhere.txt", READ_WRITE, wire.FILE_OPEN_IF))
            d.echo()
        b.sock.settimeout(300)          # (the LOCK itself took minutes)
        kernel = kernel_lock_time(tmp_path / "kernel-locks.bin", MAX_LOCKS, MAX_LOCKS // 2)
        t0 = time.monotonic()
        slowest, r = slowest_answer(probe, lambda: tb.lock(
            fb, [((1 << 40) + 2 * i, 1, EXCLUSIVE_NOW) for i in range(MAX_LOCKS)]))
        print(f"the LOCK took {time.monotonic() - t0:.2f} s; the slowest probe {slowest:.2f} s; "
              f"the kernel's own part {kernel:.2f} s")
        b.sock.settimeout(10)
        assert r.status == wire.STATUS_SUCCESS, r
        assert slowest < 1.0 + kernel, \
            f"an open on worker {wa} and an ECHO on worker {wb} waited {slowest:.1f} s (the kernel's part {kernel:.1f} s)"
        # the check still refuses what conflicts, and allows what does not (once the
        # user's credit, which that LOCK spent, has grown at the worker's next sweep)
        time.sleep(1.1)
        tb.close(fb)
        fb = tb.open("many-locks.bin", READ_WRITE, wire.FILE_OPEN_IF)
        assert tb.lock(fb, [(1, 1, EXCLUSIVE_NOW), (4, 1, SHARED_NOW)]).status == wire.STATUS_LOCK_NOT_GRANTED
        assert tb.lock(fb, [(3, 1, EXCLUSIVE_NOW), (5, 0, EXCLUSIVE_NOW)]).status == wire.STATUS_SUCCESS
        assert tb.lock(fb, [(4093, 4, SHARED_NOW)]).status == wire.STATUS_LOCK_NOT_GRANTED
    finally:
        c.close()
        d.close()
        ta.close(fa)
        tb.close(fb)


@pytest.fixture(scope="module")
def many_locked(two) -> str:
    """A file four opens of the first worker's client hold `max locks per open` exclusive
    locks of one byte each on, none overlapping: its name (made once: the tests below leave
    those locks as they found them). Taken 256 at a time (a LOCK of `max locks per open`
    ranges beside thousands would cost the kernel more than a LOCK may,
    smb.posix_locks.KERNEL_STEPS_MAX), and asked again a moment later where the user's credit
    for the kernel's work is spent (KernelLockCredit: the 16,384 cost the kernel some 30 s
    of it)."""
    (_a, ta, _wa), _ = two
    name = "held-locks.bin"
    held = [ta.open(name, READ_WRITE, wire.FILE_OPEN_IF) for _ in range(4)]
    for n, fid in enumerate(held):
        for first in range(0, MAX_LOCKS, 256):
            ranges = [((n * MAX_LOCKS + i) * 2, 1, EXCLUSIVE_NOW) for i in range(first, first + 256)]
            r = ta.lock(fid, ranges)
            while r.status == wire.STATUS_INSUFFICIENT_RESOURCES:
                time.sleep(0.2)
                r = ta.lock(fid, ranges)
            assert r.status == wire.STATUS_SUCCESS, r
    yield name
    for fid in held:
        ta.close(fid)


def test_reads_against_another_workers_many_locks_stall_nobody(server, two, many_locked):
    """One client holds 4 x `max locks per open` locks on a file through one worker and sends
    compounds of 128 READs of it through the other: each READ's check looked at every lock
    of the first worker; an ECHO of another client of the second worker is answered within
    a second throughout."""
    (a, ta, wa), (b, tb, wb) = two
    fb = tb.open(many_locked, READ_WRITE, wire.FILE_OPEN_IF)
    d, _td = logged_on(server["port"], b.offered["guid"])      # with b
    try:
        assert worker_of(server, d) == wb

        def reads():
            for _ in range(4):
                rs = b.compound([tb.message(wire.READ, read_body(fb, 1, 1 << 40)) for _ in range(128)])
                assert {r.status for r in rs} == {wire.STATUS_END_OF_FILE}, rs[:2]
        t0 = time.monotonic()
        slowest, _ = slowest_answer(d.echo, reads)
        print(f"the READs took {time.monotonic() - t0:.2f} s; the slowest ECHO {slowest:.2f} s")
        assert slowest < 1.0, f"an ECHO on worker {wb} waited {slowest:.1f} s"
    finally:
        d.close()
        tb.close(fb)


def test_lock_requests_against_another_workers_many_locks_stall_nobody(server, two, many_locked):
    """As above with compounds of 128 LOCKs of one element each (and their UNLOCKs): each
    read every lock of the other worker inside the store's write transaction; an ECHO of
    another client of the second worker, and an open on the first, are answered within a
    second throughout."""
    (a, ta, wa), (b, tb, wb) = two
    fb = tb.open(many_locked, READ_WRITE, wire.FILE_OPEN_IF)
    c, tc = logged_on(server["port"], a.offered["guid"])       # with a: on its worker
    d, _td = logged_on(server["port"], b.offered["guid"])      # with b
    try:
        assert worker_of(server, c) == wa and worker_of(server, d) == wb

        def probe():
            tc.close(tc.open("elsewhere.txt", READ_WRITE, wire.FILE_OPEN_IF))
            d.echo()

        def locks():
            for flags in (EXCLUSIVE_NOW, 0x4):        # then SMB2_LOCKFLAG_UNLOCK
                rs = b.compound([tb.message(wire.LOCK, lock_body(fb, [((1 << 40) + i, 1, flags)]))
                                 for i in range(128)])
                assert {r.status for r in rs} == {wire.STATUS_SUCCESS}, rs[:2]
        t0 = time.monotonic()
        slowest, _ = slowest_answer(probe, locks)
        print(f"the LOCKs took {time.monotonic() - t0:.2f} s; the slowest probe {slowest:.2f} s")
        assert slowest < 1.0, f"an open on worker {wa} and an ECHO on worker {wb} waited {slowest:.1f} s"
    finally:
        c.close()
        d.close()
        tb.close(fb)


def test_the_mirror_of_another_workers_locks_follows_every_change(tmp_path, monkeypatch):
    """Two workers' lock tables over one store (in one process): after random locks,
    unlocks and closes in one, and the other's checks at random moments (its mirror caught
    up from the log, or read again whole where the log was cut short), every check the
    other makes agrees with Lock.overlaps over the first one's locks, also after a step of
    its own that was undone; a dead worker's removal empties the mirror."""
    import copy
    import random

    from smbring.server import shared_store
    from smbring.server.shared_store import SharedByteRangeLocks, Store, remove_worker
    from smbring.smb.locks import Lock
    monkeypatch.setattr(shared_store, "LOG_KEPT_LEAST", 4)     # the log cut short often
    directory = str(tmp_path / "store")
    os.mkdir(directory, 0o700)
    store_a = Store(directory, 1)
    store_b = copy.copy(store_a)            # (one environment per process: worker 2's view)
    store_b.worker, store_b._in_progress = 2, shared_store._InProgress(store_b)
    a, b = SharedByteRangeLocks(store_a, None), SharedByteRangeLocks(store_b, None)
    rnd = random.Random(7)
    key, owners = (5, 6), [11, 12, 13]

    def some_range():
        return rnd.randrange(40), rnd.choice([0, 1, 2, 5, 20])

    def agree():
        held = [lk for o in owners for lk in a.held(key, o)]
        for _ in range(30):
            offset, length = some_range()
            for exclusive in (True, False):
                expected = any(lk.overlaps(offset, length) for lk in held if exclusive or lk.exclusive)
                assert b.conflicts(key, offset, length, exclusive, 99) == expected, (offset, length, held)
            if length:
                for write in (True, False):
                    expected = any(lk.length and lk.overlaps(offset, length) for lk in held
                                   if write or lk.exclusive)
                    assert b.io_allowed(key, offset, length, 99, write) != expected
    for step in range(600):
        what = rnd.random()
        owner = rnd.choice(owners)
        if what < 0.5:
            a.acquire_all(key, [Lock(*some_range(), rnd.random() < 0.5, owner)
                                for _ in range(rnd.randint(1, 3))])
        elif what < 0.9:
            held = a.held(key, owner)
            if held:
                lk = rnd.choice(held)
                assert a.release(key, lk.offset, lk.length, owner)
        elif what < 0.95:
            a.release_owner(key, owner)
        else:       # b locks and checks in a step that is undone: its mirror counts none of it
            with pytest.raises(ZeroDivisionError):
                with store_b.atomic():
                    b.acquire_all(key, [Lock(100, 1, True, 98), Lock(101, 1, True, 98)])
                    b.io_allowed(key, 0, 1, 98, write=True)
                    b.acquire_all(key, [Lock(102, 1, True, 98)])
                    b.io_allowed(key, 0, 1, 98, write=True)
                    1 / 0
            b.local.release_owner(key, 98)
        if rnd.random() < 0.3:
            agree()
    agree()
    assert any(a.held(key, o) for o in owners)
    store_a.close()
    assert remove_worker(directory, 1) > 0
    store_b = Store(directory, 2)
    after = SharedByteRangeLocks(store_b, None)
    after._mirrors = b._mirrors             # (b's mirror, read in the new environment)
    assert after._mirrors and not after.conflicts(key, 0, 1 << 20, True, 99)
    store_b.close()


# -- hand-offs: clients that leave during one leave no descriptor behind -------------------------
def descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_clients_leaving_during_their_hand_off_leave_no_descriptor(server, two):
    """Connections of a client another worker serves, each sending its NEGOTIATE and leaving
    at once (closed, or reset), half of them accepted by the other worker and handed over
    (or not: the client is gone): afterwards the supervisor and both workers hold as many
    descriptors as before, and both workers still serve."""
    (a, _ta, _wa), (b, _tb, _wb) = two
    pids = [status_of(server)["pid"], pid_of(server, 1), pid_of(server, 2)]
    time.sleep(0.5)
    before = [descriptors(pid) for pid in pids]
    handed_before = server["log"].read_text().count("handed to worker")
    for i in range(120):
        c = RawClient(server["port"])
        guid = (a if i % 2 else b).offered["guid"]
        message = c.message(wire.NEGOTIATE, negotiate_body((wire.SMB311,), wire.SECURITY_SIGNING_ENABLED, 0, guid))
        if i % 3 == 0:
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
        if i % 3 != 2:
            c.send([message])
        c.close()
    deadline = time.monotonic() + 15
    while True:
        after = [descriptors(pid) for pid in pids]
        if after == before or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    print("descriptors before", before, "after", after,
          "hand-offs", server["log"].read_text().count("handed to worker") - handed_before)
    assert after == before
    for client in (a, b):
        assert client.echo().status == wire.STATUS_SUCCESS


def test_requests_sent_behind_a_handed_negotiate_are_answered(server, two):
    """A client of the worker that is stopped for a moment sends its NEGOTIATE and an ECHO
    in one segment to the other worker, which hands the connection over (the NEGOTIATE
    read exactly, the ECHO left in the socket): both are answered, by the client's worker."""
    (a, _ta, wa), _b = two
    pid = pid_of(server, wa)
    os.kill(pid, signal.SIGSTOP)
    timer = threading.Timer(0.5, os.kill, (pid, signal.SIGCONT))
    timer.start()
    try:
        c = RawClient(server["port"])
        negotiate = c.message(wire.NEGOTIATE, negotiate_body(
            (wire.SMB311,), wire.SECURITY_SIGNING_ENABLED, 0, a.offered["guid"]))
        echo = c.message(wire.ECHO, b"\x04\0\0\0")
        frames = b"".join(len(m).to_bytes(4, "big") + bytes(m) for m in (negotiate, echo))
        c.sock.sendall(frames)
        first, second = c.recv_frame(), c.recv_frame()
    finally:
        timer.join()
        os.kill(pid, signal.SIGCONT)
    assert {wire.Header.parse(f).command for f in (first, second)} == {wire.NEGOTIATE, wire.ECHO}
    assert worker_of(server, c) == wa
    c.close()


# -- the store's keys: a long path is a path like any other -----------------------------------
def rename_info(name: str) -> bytes:
    encoded = name.encode("utf-16-le")
    return struct.pack("<B7xQI", 0, 0, len(encoded)) + encoded


def test_a_long_path_opens_and_holds_its_directories_on_every_worker(server, two):
    """A file more than 511 bytes below the share (LMDB's longest key): its open was recorded
    in the store under its path, which LMDB refused (MDB_BAD_VALSIZE): every such CREATE
    failed with STATUS_INTERNAL_ERROR and a logged traceback. It opens now, and the other
    worker's client may not rename a directory above it (an open file inside) until it is
    closed."""
    (a, ta, _wa), (b, tb, _wb) = two
    parts = [f"deep{i}-" + "x" * 90 for i in range(6)]
    for n in range(1, len(parts) + 1):
        ta.close(ta.open("\\".join(parts[:n]), wire.GENERIC_READ, wire.FILE_OPEN_IF, 0x1))
    deep = "\\".join(parts) + "\\file.txt"
    assert len(str(server["share"]).encode()) + len(deep) > 511
    fid = ta.open(deep, READ_WRITE, wire.FILE_OPEN_IF)
    for top in (parts[0], "\\".join(parts[:5])):       # a short name above it, and a long one
        dir_fid = tb.open(top, 0x00110080, wire.FILE_OPEN, 0x1)     # DELETE | SYNCHRONIZE | READ_ATTRIBUTES
        r = tb.set_info(dir_fid, wire.INFO_FILE, 10, rename_info(top + "-moved"))
        assert r.status == wire.STATUS_ACCESS_DENIED, r
        tb.close(dir_fid)
    ta.close(fid)
    dir_fid = tb.open(parts[0], 0x00110080, wire.FILE_OPEN, 0x1)
    assert tb.set_info(dir_fid, wire.INFO_FILE, 10, rename_info("moved")).status == wire.STATUS_SUCCESS
    tb.close(dir_fid)


# -- renames beside many opens --------------------------------------------------------------------
def test_renames_beside_many_opens_stall_nobody(server, two):
    """One client holds 4,096 opens and sends compounds of 128 renames of a directory (and
    of a file): each rename looked at every open of the process, by its path (whether one is
    below the directory; which have its old name): 2 s per compound of a directory's. Another client of
    the same worker has its ECHOs answered within a second throughout."""
    (a, _ta, wa), _b = two
    c, tc = logged_on(server["port"], a.offered["guid"])       # with a: on its worker
    try:
        assert worker_of(server, c) == wa
        c.grow_credits(2048)
        tc.close(tc.open("many", wire.GENERIC_READ, wire.FILE_OPEN_IF, 0x1))
        for first in range(0, 4096, 128):
            rs = c.compound([tc.message(wire.CREATE, create_body(
                f"many\\f{i}", wire.GENERIC_READ, wire.FILE_OPEN_IF, 0)) for i in range(first, first + 128)])
            assert {r.status for r in rs} == {wire.STATUS_SUCCESS}, rs[:1]
        tc.close(tc.open("dir-a", wire.GENERIC_READ, wire.FILE_OPEN_IF, 0x1))
        directory = tc.open("dir-a", 0x00110080, wire.FILE_OPEN, 0x1)
        file = tc.open("file-a", 0x00110080 | 0x2, wire.FILE_OPEN_IF, 0)

        def renames():
            for fid, names in ((directory, ("dir-b", "dir-a")), (directory, ("dir-b", "dir-a")),
                               (file, ("file-b", "file-a"))):
                rs = c.compound([tc.message(wire.SET_INFO, set_info_body(
                    fid, wire.INFO_FILE, 10, rename_info(names[i % 2]))) for i in range(128)])
                assert {r.status for r in rs} == {wire.STATUS_SUCCESS}, rs[:1]
        t0 = time.monotonic()
        slowest, _ = slowest_answer(a.echo, renames)
        print(f"the renames took {time.monotonic() - t0:.2f} s; the slowest ECHO {slowest:.2f} s")
        assert slowest < 1.0, f"an ECHO on worker {wa} waited {slowest:.1f} s"
        # the index follows them: a directory with an open inside is still not renamed
        many = tc.open("many", 0x00110080, wire.FILE_OPEN, 0x1)
        r = tc.set_info(many, wire.INFO_FILE, 10, rename_info("many-moved"))
        assert r.status == wire.STATUS_ACCESS_DENIED, r
    finally:
        c.close()


def test_the_path_index_finds_what_a_look_at_every_open_finds():
    """PathIndex (opens by path) against every open's path looked at, after random opens,
    closes and moves, including names that sort between a directory and its contents."""
    import random

    from smbring.smb.server_state import PathIndex

    class FakeOpen:
        def __init__(self, path):
            self.p = path

        def path(self):
            return self.p
    rnd = random.Random(3)
    names = ["/s/a", "/s/a/b", "/s/a/b/c", "/s/a-b", "/s/a.b", "/s/a/b-c", "/s/ab", "/s/b", "/s/a/", "/t/a/b"]
    index, opens = PathIndex(), []
    for _ in range(2000):
        what = rnd.random()
        if what < 0.4 or not opens:
            o = FakeOpen(rnd.choice(names))
            opens.append(o)
            index.add(o)
        elif what < 0.7:
            o = opens.pop(rnd.randrange(len(opens)))
            index.discard(o)
        else:
            o = rnd.choice(opens)
            o.p = rnd.choice(names)
            index.moved(o)
        for directory in ("/s/a", "/s/a/b", "/s", "/t", "/s/b"):
            expected = {id(o) for o in opens if o.path().startswith(directory + "/")}
            assert {id(o) for o in index.below(directory)} == expected
            assert index.any_below(directory) == bool(expected)
        at = rnd.choice(names)
        assert {id(o) for o in index.at(at)} == {id(o) for o in opens if o.path() == at}
    assert sorted(map(id, index)) == sorted(map(id, opens))


# -- a trim of half a million ranges ---------------------------------------------------------------
def test_a_trim_of_half_a_million_ranges_stalls_nobody(server, two):
    """FSCTL_FILE_LEVEL_TRIM of 500,000 ranges (an 8 MiB request), with another open's lock
    on the file: each range was read and checked against the locks (of every worker), 3.5 s
    of the event loop in one process and 7 s in a worker. The first 4,096 are trimmed and
    NumRangesProcessed says so; another client of the same worker has its ECHOs answered
    within a second throughout."""
    (a, _ta, wa), _b = two
    c, tc = logged_on(server["port"], a.offered["guid"])       # with a: on its worker
    try:
        assert worker_of(server, c) == wa
        c.grow_credits(512)
        fid = tc.open("trim.bin", READ_WRITE, wire.FILE_OPEN_IF)
        other = tc.open("trim.bin", READ_WRITE, wire.FILE_OPEN)
        assert tc.lock(other, [(1 << 50, 1, EXCLUSIVE_NOW)]).status == wire.STATUS_SUCCESS
        count = 500_000
        request = struct.pack("<II", 0, count) + b"".join(struct.pack("<qq", i * 8192, 4096) for i in range(count))
        answer = {}

        def trim():
            answer["r"] = tc.ioctl(fid, 0x00098208, request, max_output=8)
        t0 = time.monotonic()
        slowest, _ = slowest_answer(a.echo, trim)
        print(f"the trim took {time.monotonic() - t0:.2f} s; the slowest ECHO {slowest:.2f} s")
        r = answer["r"]
        assert r.status == wire.STATUS_SUCCESS, r
        assert struct.unpack_from("<I", r.raw, 64 + 48)[0] == 4096      # NumRangesProcessed
        assert slowest < 1.0, f"an ECHO on worker {wa} waited {slowest:.1f} s"
    finally:
        c.close()


# -- a full store --------------------------------------------------------------------------------
def test_locks_filling_the_store_are_refused_and_every_unlock_goes_on(tmp_path, monkeypatch):
    """One client takes byte-range locks until the store (a 512 KiB map here) refuses more
    (STATUS_INSUFFICIENT_RESOURCES; each lock is recorded with its change in the file's log),
    then unlocks them one element at a time and closes: every unlock succeeds, the other
    worker's client meets the locks while they are held and none after, and takes them."""
    monkeypatch.setenv("SMBRING_STORE_MAP_SIZE", str(512 * 1024))
    server = start_workers(tmp_path)
    try:
        a, ta = logged_on(server["port"])
        wa = worker_of(server, a)
        b, tb = on_other_worker(server, wa)
        fids = [ta.open("full.bin", READ_WRITE, wire.FILE_OPEN_IF) for _ in range(4)]
        fb = tb.open("full.bin", READ_WRITE, wire.FILE_OPEN)
        taken, refused = [], None
        for n, fid in enumerate(fids):
            for first in range(0, MAX_LOCKS, 256):
                ranges = [((n * MAX_LOCKS + first + i) * 2, 1) for i in range(256)]
                r = ta.lock(fid, [(o, length, EXCLUSIVE_NOW) for o, length in ranges])
                if r.status != wire.STATUS_SUCCESS:
                    refused = r.status
                    break
                taken += [(fid, o, length) for o, length in ranges]
            if refused:
                break
        assert refused == wire.STATUS_INSUFFICIENT_RESOURCES and len(taken) > 1000, (refused, len(taken))
        last = taken[-1][1]
        assert tb.read(fb, 1, last).status == wire.STATUS_FILE_LOCK_CONFLICT
        for fid, offset, length in taken:
            assert ta.lock(fid, [(offset, length, 0x4)]).status == wire.STATUS_SUCCESS
        for fid in fids:
            assert ta.close(fid).status == wire.STATUS_SUCCESS
        assert tb.read(fb, 1, last).status == wire.STATUS_END_OF_FILE
        assert tb.lock(fb, [(0, last + 1, EXCLUSIVE_NOW)]).status == wire.STATUS_SUCCESS
        a.close()
        b.close()
        assert server["proc"].poll() is None
    finally:
        stop(server["proc"])


# -- metrics: what a client sends names no series ------------------------------------------------
def test_unknown_commands_add_no_metric_series(tmp_path):
    """Before logging on, a client sends requests of 1,500 command codes that do not exist:
    each was counted under a label of its own (a counter and a histogram of 15 buckets per
    code: 1.3 KB of exposition each, in every worker's memory, and the supervisor's scrape
    of them past the 1 MiB it sends at once was dropped, for every scraper). They are
    counted as "other" now, and the scrape answers."""
    import urllib.request

    from servers import free_port
    mport = free_port()
    server = start_workers(tmp_path, 2, "--metrics", f"127.0.0.1:{mport}")
    try:
        c = RawClient(server["port"])
        assert c.negotiate((wire.SMB311,)).status == wire.STATUS_SUCCESS
        for command in range(0x13, 0x13 + 1500):
            assert c.request(command, b"\x02\0\0\0" * 4).status != wire.STATUS_SUCCESS
        c.close()
        body = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=20).read().decode()
        assert 'smbring_requests_total{command="other",worker="' in body
        assert 'command="100"' not in body and len(body) < 200_000, len(body)
    finally:
        stop(server["proc"])


# -- a worker killed with everything held (last: its own server) --------------------------------
def store_entries(server) -> dict[bytes, list[bytes]]:
    import glob

    import lmdb

    from smbring.server.shared_store import DATABASES
    (directory,) = glob.glob(str(server["run"] / "store-*"))
    env = lmdb.open(directory, readonly=True, max_dbs=len(DATABASES), create=False)
    try:
        with env.begin() as txn:
            return {name: [bytes(k) for k in txn.cursor(env.open_db(name, txn=txn, create=False))
                           .iternext(values=False)] for name in DATABASES}
    finally:
        env.close()


def test_a_worker_killed_holding_everything_leaves_nothing_behind(tmp_path):
    """A client's worker is killed while it holds a file shared with nobody, a durable
    (detached) open shared with nobody, a byte-range lock another worker's client has
    already met, and a delete pending: the other worker's client opens, locks and keeps
    what was pending deleted, and the store holds no entry of the dead worker, nor the
    log of a file without locks."""
    from smbring.server.shared_store import WORKER_AT, WORKER
    server = start_workers(tmp_path)
    try:
        a, ta = logged_on(server["port"])
        wa = worker_of(server, a)
        b, tb = on_other_worker(server, wa)
        ta.open("alone.txt", READ_WRITE, wire.FILE_OPEN_IF, share_access=0)
        r = ta.request(wire.CREATE, create_body(
            "durable.txt", READ_WRITE, wire.FILE_OPEN_IF, 0, share_access=0, oplock=0x09,
            contexts=[(b"DH2Q", struct.pack("<II8s16s", 0, 0, b"", os.urandom(16)))]))
        assert r.status == wire.STATUS_SUCCESS, r
        locked = ta.open("locked.bin", READ_WRITE, wire.FILE_OPEN_IF)
        assert ta.lock(locked, [(0, 10, EXCLUSIVE_NOW)]).status == wire.STATUS_SUCCESS
        doomed = ta.open("doomed.txt", READ_WRITE | 0x10000, wire.FILE_OPEN_IF)
        assert ta.set_info(doomed, wire.INFO_FILE, 13, b"\1").status == wire.STATUS_SUCCESS
        fb = tb.open("locked.bin", READ_WRITE, wire.FILE_OPEN)
        assert tb.lock(fb, [(5, 1, SHARED_NOW)]).status == wire.STATUS_LOCK_NOT_GRANTED
        assert tb.create("doomed.txt").status == wire.STATUS_DELETE_PENDING
        assert tb.create("alone.txt").status == wire.STATUS_SHARING_VIOLATION
        assert tb.read(fb, 1, 5).status == wire.STATUS_FILE_LOCK_CONFLICT
        pid = pid_of(server, wa)
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while pid_of(server, wa) in (None, pid):
            assert time.monotonic() < deadline, "not restarted"
            time.sleep(0.1)
        assert tb.lock(fb, [(5, 1, SHARED_NOW)]).status == wire.STATUS_SUCCESS
        assert tb.read(fb, 1, 5).status == wire.STATUS_END_OF_FILE
        for name in ("alone.txt", "durable.txt", "doomed.txt"):
            tb.close(tb.open(name, READ_WRITE, wire.FILE_OPEN, share_access=0))
        assert tb.lock(fb, [(5, 1, 0x4)]).status == wire.STATUS_SUCCESS     # unlocked
        entries = store_entries(server)
        mine = WORKER.pack(wa)
        for name, at in WORKER_AT.items():
            assert not [k for k in entries[name] if k[at:(at + 2) or None] == mine], name
        assert entries[b"pending"] == [] and entries[b"lockhead"] == [] and entries[b"locklog"] == []
        b.close()
    finally:
        stop(server["proc"])
