"""`posix locking` (default yes, as Samba's): a client's byte-range locks are kernel locks too,
which local programs see, and a local program's lock stops a client's lock of its range. A
real server, real smbprotocol clients, and the test process as the local program, taking and
testing open file description locks (F_OFD_SETLK, F_OFD_GETLK) on the shared files."""
import errno
import fcntl
import os
import struct
import threading
import time
import uuid

import pytest

pytest.importorskip("smbprotocol")

from smbprotocol.connection import Connection, Dialects  # noqa: E402
from smbprotocol.exceptions import SMBResponseException  # noqa: E402
from smbprotocol.open import (CreateDisposition, CreateOptions, FileAttributes,  # noqa: E402
                              ImpersonationLevel, LockFlags, Open, ShareAccess,
                              SMB2LockElement)
from smbprotocol.session import Session  # noqa: E402
from smbprotocol.tree import TreeConnect  # noqa: E402

from servers import PASSWORD, USER, free_port, spawn, stop  # noqa: E402

from smbring.server.server import sweep_period  # noqa: E402
from smbring.smb.limits import Limits  # noqa: E402
from smbring.smb.posix_locks import KERNEL_STEPS_MAX, KERNEL_STEPS_PER_SECOND, kernel_steps  # noqa: E402

ALL_SHARE = ShareAccess.FILE_SHARE_READ | ShareAccess.FILE_SHARE_WRITE | ShareAccess.FILE_SHARE_DELETE
READ_WRITE, READ_ONLY = 0x0012019F, 0x00120089
EXCLUSIVE = LockFlags.SMB2_LOCKFLAG_EXCLUSIVE_LOCK | LockFlags.SMB2_LOCKFLAG_FAIL_IMMEDIATELY
SHARED = LockFlags.SMB2_LOCKFLAG_SHARED_LOCK | LockFlags.SMB2_LOCKFLAG_FAIL_IMMEDIATELY
UNLOCK = LockFlags.SMB2_LOCKFLAG_UNLOCK
LOCK_NOT_GRANTED, FILE_LOCK_CONFLICT, INSUFFICIENT_RESOURCES = 0xC0000055, 0xC0000054, 0xC000009A
FLOCK = struct.Struct("hh4xqqi4x")      # struct flock
SWEEP = sweep_period(Limits())      # s: the server's sweep, at which the credits grow (KernelLockCredit.tick)
CREDIT_FULL = KERNEL_STEPS_MAX / KERNEL_STEPS_PER_SECOND + SWEEP + 0.1     # s: an empty credit full again


@pytest.fixture(scope="module")
def serve(tmp_path_factory):
    """serve(*[share] lines) -> (port, share directory): a server with one writable share."""
    procs = []

    def run(*options: str):
        root = tmp_path_factory.mktemp("posixlocks")
        (root / "share").mkdir()
        port = free_port()
        lines = ["[global]", f"listen = 127.0.0.1:{port}",
                 "[share]", f"path = {root / 'share'}", "read only = no", *options]
        (root / "smb.conf").write_text("\n".join(lines) + "\n")
        proc, port, _log = spawn(root, "--config", str(root / "smb.conf"), port=port)
        procs.append(proc)
        return port, root / "share"

    yield run
    for proc in procs:
        stop(proc)


@pytest.fixture(scope="module")
def default(serve):
    return serve()


class Client:
    def __init__(self, port: int, signing: bool = True):
        self.conn = Connection(uuid.uuid4(), "127.0.0.1", port, require_signing=signing)
        # (unsigned: SMB 3.1.1 signs a TREE_CONNECT whatever the client asks)
        self.conn.connect() if signing else self.conn.connect(Dialects.SMB_3_0_2)
        self.session = Session(self.conn, USER, PASSWORD, require_encryption=False)
        self.session.connect()
        self.tree = TreeConnect(self.session, r"\\127.0.0.1\share")
        self.tree.connect()

    def open(self, name: str, access: int = READ_WRITE) -> Open:
        o = Open(self.tree, name)
        o.create(ImpersonationLevel.Impersonation, access, FileAttributes.FILE_ATTRIBUTE_NORMAL, ALL_SHARE,
                 CreateDisposition.FILE_OPEN_IF, CreateOptions.FILE_NON_DIRECTORY_FILE)
        return o

    def close(self):
        self.conn.disconnect(True)


@pytest.fixture
def client(default):
    c = Client(default[0])
    yield c
    c.close()


def elements(ranges, flags: int = EXCLUSIVE) -> list:
    """A LOCK's elements: each (offset, length) with `flags`."""
    out = []
    for offset, length in ranges:
        e = SMB2LockElement()
        e["offset"], e["length"], e["flags"] = offset, length, flags
        out.append(e)
    return out


def lock(o: Open, offset: int, length: int, flags: int) -> None:
    o.lock(elements([(offset, length)], flags))


def granted(o: Open, offset: int, length: int, flags: int) -> bool:
    try:
        lock(o, offset, length, flags)
        return True
    except SMBResponseException as e:
        assert e.status == LOCK_NOT_GRANTED
        return False


def local_lock(fd: int, start: int, length: int, kind: int) -> bool:
    """A local program's lock (F_RDLCK, F_WRLCK, F_UNLCK) on its descriptor; False where
    another's lock refuses it."""
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, FLOCK.pack(kind, os.SEEK_SET, start, length, 0))
        return True
    except OSError as e:
        assert e.errno in (errno.EAGAIN, errno.EACCES)
        return False


def locally_free(path, start: int, length: int, kind: int = fcntl.F_WRLCK) -> bool:
    """Whether a local program could take the lock now (asked, not taken: F_OFD_GETLK)."""
    fd = os.open(path, os.O_RDWR)
    try:
        answer = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, FLOCK.pack(kind, os.SEEK_SET, start, length, 0))
        return FLOCK.unpack(answer)[0] == fcntl.F_UNLCK
    finally:
        os.close(fd)


def test_a_clients_locks_are_seen_by_local_programs_until_unlocked(client, default):
    path = default[1] / "seen.dat"
    o = client.open("seen.dat")
    lock(o, 100, 10, EXCLUSIVE)
    lock(o, 200, 10, SHARED)
    assert not locally_free(path, 105, 1, fcntl.F_RDLCK)       # exclusive: nothing else
    assert not locally_free(path, 205, 1, fcntl.F_WRLCK)       # shared: no writer
    assert locally_free(path, 205, 1, fcntl.F_RDLCK)           # ... readers do
    assert locally_free(path, 110, 90)                         # between them: nothing
    lock(o, 100, 10, UNLOCK)
    lock(o, 200, 10, UNLOCK)
    assert locally_free(path, 0, 1000)
    o.close()


def test_a_local_programs_lock_stops_a_clients_lock_of_its_range(client, default):
    path = default[1] / "local.dat"
    o = client.open("local.dat")
    fd = os.open(path, os.O_RDWR)
    try:
        assert local_lock(fd, 0, 10, fcntl.F_WRLCK)
        assert not granted(o, 5, 1, EXCLUSIVE)
        assert not granted(o, 0, 100, SHARED)
        assert granted(o, 10, 10, EXCLUSIVE)      # past it
        assert local_lock(fd, 0, 10, fcntl.F_RDLCK)
        assert granted(o, 0, 5, SHARED)            # a reader beside a reader
        assert not granted(o, 5, 5, EXCLUSIVE)
        # nothing refused stays held: the server's own table agrees with the kernel's
        assert local_lock(fd, 0, 10, fcntl.F_UNLCK)
        assert granted(o, 5, 5, EXCLUSIVE)
    finally:
        os.close(fd)
    o.close()


@pytest.mark.parametrize("ranges", [4, 512])
def test_a_refused_lock_of_several_leaves_no_kernel_lock_behind(client, default, ranges):
    """A LOCK of several ranges, one of which a local program holds: none is taken, in the
    kernel either (the ones taken before the refused one are given back), nor in the
    server's table (another handle may take them). 512 ranges cost the kernel enough for
    the change to be made in the server's file I/O threads."""
    path = default[1] / f"several{ranges}.dat"
    o, other = client.open(path.name), client.open(path.name)
    offsets = [20 * i for i in range(ranges)]
    refused_at = offsets[len(offsets) // 2] + 5
    fd = os.open(path, os.O_RDWR)
    try:
        assert local_lock(fd, refused_at, 1, fcntl.F_RDLCK)
        several = elements((offset, 10) for offset in offsets)
        with pytest.raises(SMBResponseException) as refused:
            o.lock(several)
        assert refused.value.status == LOCK_NOT_GRANTED
        assert local_lock(fd, refused_at, 1, fcntl.F_UNLCK)
        assert locally_free(path, 0, 20 * ranges)
        lock(other, offsets[0], 10, EXCLUSIVE)          # not in the server's table either
        lock(other, offsets[0], 10, UNLOCK)
        o.lock(several)         # all of them, now
        assert not any(locally_free(path, offset, 1) for offset in offsets)
    finally:
        os.close(fd)
    o.close()
    other.close()


def test_unlocking_one_of_a_handles_overlapping_locks_keeps_the_others_in_the_kernel(client, default):
    """POSIX locks of one open merge; Windows' do not. Unlocking one of two overlapping
    shared locks must leave the other's range locked, and an exclusive lock with a shared one
    stacked over it leaves a read lock where it was."""
    path = default[1] / "overlap.dat"
    o = client.open("overlap.dat")
    lock(o, 0, 10, SHARED)
    lock(o, 5, 10, SHARED)
    lock(o, 0, 10, UNLOCK)
    assert locally_free(path, 0, 5)
    assert not locally_free(path, 5, 1) and not locally_free(path, 14, 1)
    lock(o, 5, 10, UNLOCK)
    assert locally_free(path, 0, 100)

    lock(o, 100, 10, EXCLUSIVE)
    lock(o, 102, 4, SHARED)           # stacked over its own exclusive lock
    assert not locally_free(path, 100, 10, fcntl.F_RDLCK)
    lock(o, 100, 10, UNLOCK)
    assert locally_free(path, 100, 2) and locally_free(path, 106, 4)
    assert locally_free(path, 102, 4, fcntl.F_RDLCK) and not locally_free(path, 102, 4, fcntl.F_WRLCK)
    lock(o, 102, 4, UNLOCK)
    assert locally_free(path, 0, 200)
    o.close()


def test_closing_a_handle_ends_its_kernel_locks_though_the_file_was_read_through_a_map(serve):
    """The server keeps maps of files it read (`read path = mmap`) past their opens' closes,
    and a map holds the open's file description, whose locks would outlive the close."""
    port, share = serve("read path = mmap")
    c = Client(port, signing=False)     # (a signed READ's answer is read, not sent from a map)
    try:
        path = share / "mapped.dat"
        path.write_bytes(os.urandom(1 << 20))
        o = c.open("mapped.dat")
        lock(o, 0, 1 << 20, SHARED)
        assert o.read(0, 256 << 10) == path.read_bytes()[:256 << 10]
        assert not locally_free(path, 0, 1)
        o.close()
        assert locally_free(path, 0, 1 << 20)
    finally:
        c.close()


def test_a_read_only_handles_exclusive_lock_still_keeps_local_writers_out(client, default):
    path = default[1] / "readonly.dat"
    path.write_bytes(b"x" * 100)
    o = client.open("readonly.dat", READ_ONLY)
    lock(o, 0, 10, EXCLUSIVE)
    assert not locally_free(path, 0, 10, fcntl.F_WRLCK)
    lock(o, 0, 10, UNLOCK)
    assert locally_free(path, 0, 10)
    o.close()


def test_ranges_past_what_posix_names_are_mirrored_up_to_it_and_zero_lengths_not_at_all(client, default):
    path = default[1] / "far.dat"
    o = client.open("far.dat")
    lock(o, (1 << 63) - 16, 100, EXCLUSIVE)            # reaches past 2^63 - 1
    lock(o, 1 << 63 | 1 << 40, 100, EXCLUSIVE)         # wholly past it: the server's alone
    lock(o, 50, 0, EXCLUSIVE)                          # zero length: the server's alone
    assert not locally_free(path, (1 << 63) - 10, 5)
    assert locally_free(path, 0, 1000)
    for offset, length in (((1 << 63) - 16, 100), (1 << 63 | 1 << 40, 100), (50, 0)):
        lock(o, offset, length, UNLOCK)
    assert locally_free(path, (1 << 63) - 16, 15)
    o.close()


def test_a_blocking_lock_waits_for_a_local_programs_lock_and_then_is_granted(client, default):
    path = default[1] / "waits.dat"
    o = client.open("waits.dat")
    fd = os.open(path, os.O_RDWR)
    assert local_lock(fd, 0, 10, fcntl.F_WRLCK)
    outcome = []
    t = threading.Thread(target=lambda: outcome.append(
        granted(o, 0, 10, LockFlags.SMB2_LOCKFLAG_EXCLUSIVE_LOCK)), daemon=True)
    t.start()
    time.sleep(1.5)
    assert t.is_alive() and not outcome     # waiting: the range is the local program's
    os.close(fd)                              # (its lock goes with its descriptor)
    t.join(10)
    assert outcome == [True]
    assert not locally_free(path, 0, 10)
    o.close()
    assert locally_free(path, 0, 10)


def test_a_lock_that_would_hold_the_kernel_too_long_is_refused_before_any_work(client, default):
    """Linux walks a file's whole list of POSIX locks for each lock change: mirroring 4,096
    ranges beside another handle's 4,096 took 0.45 s of the event loop, and beside 28,672
    (`max locks per connection` lets one connection hold 65,536) 2.75 s, every client of
    the server waiting meanwhile, as often as a client asked. A LOCK whose ranges would cost
    the kernel more than posix_locks.KERNEL_STEPS_MAX is refused (INSUFFICIENT_RESOURCES)
    before anything is locked; one that fits still passes, and ranges released together
    leave the kernel together."""
    time.sleep(CREDIT_FULL)     # (the user's credit full: KernelLockCredit, below)
    path = default[1] / "many.dat"
    first, second = client.open("many.dat"), client.open("many.dat")
    first.lock(elements((2 * i, 1) for i in range(4096)))     # beside none: it fits
    assert not locally_free(path, 2 * 4095, 1)
    with pytest.raises(SMBResponseException) as refused:
        second.lock(elements(((1 << 40) + 2 * i, 1) for i in range(4096)))
    assert refused.value.status == INSUFFICIENT_RESOURCES
    assert locally_free(path, 1 << 40, 8192)           # none of it taken
    second.lock(elements(((1 << 40) + 2 * i, 1) for i in range(16)))      # 16 beside 4,096 fit
    assert not locally_free(path, 1 << 40, 1)
    first.lock(elements(((2 * i, 1) for i in range(4096)), UNLOCK))
    assert locally_free(path, 0, 8192)
    first.close()
    second.close()


def test_a_users_locks_in_a_row_may_not_hold_the_kernel_longer_than_its_credit(client, default):
    """Each LOCK within the bound, many in a row would still hold the event loop for their
    sum: what a user's LOCKs cost the kernel is counted against a credit of
    KERNEL_STEPS_MAX, filling at a quarter of that a second (posix_locks.KernelLockCredit).
    Ten LOCKs of 4,096 ranges on ten fresh files ask for five times the credit: two pass,
    the rest are refused with nothing taken, and once the credit has grown again (two
    seconds, counted at the server's sweep) one passes again."""
    time.sleep(CREDIT_FULL)     # (the user's credit full, whatever earlier tests spent)
    names = [f"credit{i}.dat" for i in range(10)]
    opens = [client.open(name) for name in names]
    outcomes = []
    for o, name in zip(opens, names):
        try:
            o.lock(elements((2 * i, 1) for i in range(4096)))
            outcomes.append(True)
        except SMBResponseException as e:
            assert e.status == INSUFFICIENT_RESOURCES
            assert locally_free(default[1] / name, 0, 8192)         # none of it taken
            outcomes.append(False)
    assert outcomes[:2] == [True, True] and False in outcomes, outcomes
    refused = outcomes.index(False)
    time.sleep(kernel_steps(4096, 0) / KERNEL_STEPS_PER_SECOND + SWEEP + 0.1)
    opens[refused].lock(elements((2 * i, 1) for i in range(4096)))
    assert not locally_free(default[1] / names[refused], 0, 8192)
    for o in opens:
        o.close()


def test_posix_locking_no_keeps_locks_to_the_server(serve):
    port, share = serve("posix locking = no")
    c = Client(port)
    try:
        path = share / "own.dat"
        o = c.open("own.dat")
        fd = os.open(path, os.O_RDWR)
        try:
            assert local_lock(fd, 0, 10, fcntl.F_WRLCK)
            assert granted(o, 0, 10, EXCLUSIVE)       # the local lock is not looked at
            assert locally_free(path, 20, 10) and granted(o, 20, 10, EXCLUSIVE)
            assert locally_free(path, 20, 10)          # and the client's is not shown
        finally:
            os.close(fd)
        o.close()
    finally:
        c.close()


def test_with_two_workers_each_workers_locks_are_kernel_locks_too(serve):
    """Workers share their locks through the store; each one's are kernel locks as well."""
    port, share = serve("smbring workers = 2")
    clients = [Client(port) for _ in range(4)]      # (spread over both workers)
    try:
        path = share / "workers.dat"
        opens = [c.open("workers.dat") for c in clients]
        for i, o in enumerate(opens):
            lock(o, 10 * i, 10, EXCLUSIVE)
        assert not any(locally_free(path, 10 * i + 5, 1) for i in range(len(opens)))
        assert not granted(opens[1], 0, 10, EXCLUSIVE)     # another's, whichever worker
        fd = os.open(path, os.O_RDWR)
        try:
            for i, o in enumerate(opens):
                lock(o, 10 * i, 10, UNLOCK)
            assert local_lock(fd, 0, 40, fcntl.F_RDLCK)
            assert not any(granted(o, 10 * i, 10, EXCLUSIVE) for i, o in enumerate(opens))
            assert all(granted(o, 10 * i, 10, SHARED) for i, o in enumerate(opens))
        finally:
            os.close(fd)
        for o in opens:
            o.close()
        assert locally_free(path, 0, 40)
    finally:
        for c in clients:
            c.close()


def read_refused(o: Open, offset: int, length: int) -> bool:
    try:
        o.read(offset, length)
        return False
    except SMBResponseException as e:
        assert e.status == FILE_LOCK_CONFLICT
        return True


def write_refused(o: Open, offset: int, data: bytes) -> bool:
    try:
        o.write(data, offset)
        return False
    except SMBResponseException as e:
        assert e.status == FILE_LOCK_CONFLICT
        return True


def test_reads_and_writes_are_refused_over_a_local_programs_lock(client, default):
    """`strict locking` (auto, the default): a local program's write lock keeps clients from
    reading and writing its range, its read lock from writing it; nothing beside it."""
    path = default[1] / "strict.dat"
    path.write_bytes(b"x" * 100)
    o = client.open("strict.dat")
    fd = os.open(path, os.O_RDWR)
    try:
        assert local_lock(fd, 10, 10, fcntl.F_WRLCK)
        assert read_refused(o, 15, 10) and write_refused(o, 5, b"y" * 10)
        assert not read_refused(o, 0, 10) and not write_refused(o, 20, b"z" * 10)
        assert local_lock(fd, 10, 10, fcntl.F_RDLCK)
        assert not read_refused(o, 10, 10)
        assert write_refused(o, 19, b"w")
        assert local_lock(fd, 10, 10, fcntl.F_UNLCK)
        assert not write_refused(o, 10, b"v" * 10)
        # the client's own locks never stop it, nor do another client's beyond Windows' rules
        lock(o, 40, 10, EXCLUSIVE)
        assert not write_refused(o, 40, b"u" * 10) and not read_refused(o, 40, 10)
        lock(o, 40, 10, UNLOCK)
    finally:
        os.close(fd)
    o.close()
    assert path.read_bytes() == b"x" * 10 + b"v" * 10 + b"z" * 10 + b"x" * 10 + b"u" * 10 + b"x" * 50


def test_two_clients_shared_locks_let_both_read(default):
    """Other opens' kernel locks are judged by Windows' rules only: two clients' shared locks
    of one range (two read locks in the kernel) keep neither from reading it."""
    a, b = Client(default[0]), Client(default[0])
    try:
        (default[1] / "both.dat").write_bytes(b"s" * 64)
        oa, ob = a.open("both.dat"), b.open("both.dat")
        lock(oa, 0, 64, SHARED)
        lock(ob, 0, 64, SHARED)
        assert oa.read(0, 64) == ob.read(0, 64) == b"s" * 64
        assert write_refused(oa, 0, b"t")       # (Windows' rule: the other's shared lock)
        oa.close()
        ob.close()
    finally:
        a.close()
        b.close()


def test_strict_locking_no_leaves_local_locks_unchecked_but_not_the_servers(serve):
    port, share = serve("strict locking = no")
    a, b = Client(port), Client(port)
    try:
        path = share / "lax.dat"
        path.write_bytes(b"x" * 100)
        oa, ob = a.open("lax.dat"), b.open("lax.dat")
        fd = os.open(path, os.O_RDWR)
        try:
            assert local_lock(fd, 0, 10, fcntl.F_WRLCK)
            assert not read_refused(oa, 0, 10)
            lock(ob, 50, 10, EXCLUSIVE)
            assert read_refused(oa, 50, 10)     # another client's lock: always checked
        finally:
            os.close(fd)
        oa.close()
        ob.close()
    finally:
        a.close()
        b.close()
