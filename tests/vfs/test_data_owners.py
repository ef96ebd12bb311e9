"""File data I/O runs as the identity that opened the file (vfs.data_identity), whatever the
event loop's thread acts as when the ring submits it, in the pool's threads, and through
direct_writes' twin; personalities are registered one per identity (never shared by
credentials that differ, supplementary groups included), kept after the identity's last file
is closed, bounded, and unregistered when it is the least recently used or the server stops,
never while an op prepared with it has not completed; a descriptor no view opened is refused.

A write by a user (no CAP_FSETID) clears a setgid file's bit when the group may execute it: a
file of OWNER's, group 61399 (ALICE's), mode 02775, shows who the kernel took the writer for.
What switches a thread's credentials runs in a thread of its own (tests/threads.py)."""
import asyncio
import errno
import os
import stat

import pytest
from threads import in_thread

from smbring.uring import aio
from smbring.vfs import modules
from smbring.vfs.data_identity import DataCredentials
from smbring.vfs.identity import Identity, ShareView, ThreadCredentials
from smbring.vfs.posix import PosixVFS

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="acting as other ids needs root")
OWNER = 61300
ALICE = Identity("alice", 61301, 61301, (61301, 61399))
ALICE_FEWER_GROUPS = Identity("alice", 61301, 61301, (61301,))
BOB = Identity("bob", 61302, 61302, (61302,))
SETGID = 0o2775


@pytest.fixture
def share(tmp_path):
    root = tmp_path / "share"
    root.mkdir()
    root.chmod(0o755)
    tmp_path.chmod(0o755)
    base = PosixVFS(str(root))
    yield root, base
    base.close()


def setgid_file(root, name: str):
    path = root / name
    path.write_bytes(b"x" * 65536)
    os.chown(path, OWNER, 61399)
    os.chmod(path, SETGID)
    return path


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- the bookkeeping, without a ring --------------------------------------------------------------
class FakeCreds:
    """Only what DataCredentials asks of ThreadCredentials for the descriptors' owners."""
    server = Identity("server", 0, 0, ())


def test_owners_follow_opens_and_closes():
    data = DataCredentials(FakeCreds())
    data.opened(40, ALICE)
    data.opened(41, ALICE)
    data.twin(90, of=40)
    assert data.owner(40) == ALICE and data.owner(90) == ALICE
    data.closed(40)
    with pytest.raises(PermissionError) as e:      # no owner: refused, never the server's
        data.owner(40)
    assert e.value.errno == errno.EACCES
    with pytest.raises(PermissionError):
        data.owner(90)                               # a twin of a closed fd has no owner either
    data.forget_twin(90)
    data.opened(41, BOB)        # 41 closed unseen and its number reused: BOB's now
    assert data.owner(41) == BOB
    data.closed(41)
    for fd in (40, 41, 90):      # nobody has a file open: no descriptor has an owner
        with pytest.raises(PermissionError):
            data.owner(fd)


@ROOT_ONLY
def test_a_descriptors_device_is_the_one_its_open_read_and_goes_with_it(share, tmp_path):
    """The device a CREATE's open read (open_stat) is recorded with its owner, so that
    io_uring's first READ of it need not ask fstat: it is fstat's answer, for exactly as long
    as the descriptor is open; a descriptor opened without its stat, or reused by another
    open, has none recorded (the module asks fstat then, and gets the same)."""
    root, base = share
    (root / "f").write_bytes(b"data")
    (root / "g").write_bytes(b"data")

    def run():
        creds = ThreadCredentials()
        view = ShareView(base, ALICE, creds)
        try:
            fd, st = view.open_stat(["f"], os.O_RDONLY)
            assert creds.data.device(fd) == st.st_dev == os.fstat(fd).st_dev
            io = modules.IoUring(modules.Posix(), aring=None, data=creds.data)
            io._inline(fd)          # whether the device punts: asked of the recorded device
            assert io._device_of[fd] == os.fstat(fd).st_dev
            io.closed(fd)
            view.close_file(fd)
            assert creds.data.device(fd) is None
            again = view.open(["g"], os.O_RDONLY)       # (the number reused, no stat read)
            assert creds.data.device(again) is None
            view.close_file(again)
        finally:
            creds.to_server()
    in_thread(run)


@ROOT_ONLY
def test_a_new_files_device_is_the_one_its_first_fstat_read(share, tmp_path):
    """A file made by O_CREAT (whose open reads no stat) has its device recorded by the first
    fstat of it through the view (a CREATE's, before the file's first WRITE), so that the data
    modules need not ask fstat again; a descriptor no view opened gets none recorded."""
    root, base = share

    def run():
        creds = ThreadCredentials()
        view = ShareView(base, ALICE, creds)
        try:
            os.chmod(root, 0o777)
            fd = view.open(["new"], os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
            assert creds.data.device(fd) is None
            assert view.fstat(fd).st_dev == creds.data.device(fd) == os.fstat(fd).st_dev
            view.close_file(fd)
            assert creds.data.device(fd) is None
            creds.to_server()           # (the share's parents are root's only)
            other = os.open(root / "new", os.O_RDONLY)      # (not a view's)
            try:
                view.fstat(other)
                assert creds.data.device(other) is None
            finally:
                os.close(other)
        finally:
            creds.to_server()
    in_thread(run)


# -- on a real ring ----------------------------------------------------------------------------
def ring_loop(fn):
    """fn(creds, aring) on an event loop with a ring, in a thread of its own (its credentials
    switch); the thread acts as root again at the end."""
    def run():
        async def main():
            creds = ThreadCredentials()
            try:
                return await fn(creds, aio.get_ring())
            finally:
                creds.to_server()
        return asyncio.run(main())
    return in_thread(run, timeout=60)


@ROOT_ONLY
@pytest.mark.parametrize("stack", [["io_uring"], ["direct_writes", "io_uring"], ["threadpool"],
                                   ["posix"]])
def test_a_write_runs_as_the_opener_whoever_the_thread_is_at_submission(share, stack):
    root, base = share
    path = setgid_file(root, "prog")
    data = b"y" * (1 << 20)        # direct_writes' size: its first goes through the page cache

    async def run(creds, aring):
        io = modules.build(stack, aring, as_server=creds.as_server, owners=creds.data)
        view = ShareView(base, ALICE, creds)
        fd = view.open(["prog"], os.O_RDWR)
        try:
            for round_ in range(2):         # direct_writes: the page cache, then O_DIRECT
                creds.to_server()           # what the server's own work leaves behind
                assert await io.pwrite_all(fd, memoryview(data), round_ << 20) == len(data)
                creds.to_server()           # (the test looks as root)
                assert mode(path) == SETGID & ~stat.S_ISGID, (stack, round_)
                os.chmod(path, SETGID)
                assert aring.ring.personality == 0      # no other op inherits the stamp
            creds.to_server()
            await io.fsync(fd)
        finally:
            io.closed(fd)
            view.close_file(fd)
        # its last file closed: kept for the next (one at most), gone once released
        kept = creds.data.registered - creds.data.unregistered
        assert kept == creds.data.kept_now <= 1
        creds.data.release()        # (in the ring's thread)
        return creds.data
    data_creds = ring_loop(run)
    assert data_creds.registered == data_creds.unregistered and data_creds.kept_now == 0
    assert path.read_bytes()[:2 << 20] == data + data


@ROOT_ONLY
def test_the_ring_runs_each_op_as_its_owner_in_one_batch(share):
    """ALICE's write and BOB's write prepared together and submitted by one io_uring_enter,
    the thread acting as root: each runs as its opener (BOB is not in the group: his write
    to a file he may write to, a setuid one, clears that bit; ALICE's clears the setgid)."""
    root, base = share
    a = setgid_file(root, "a")
    b = root / "b"
    b.write_bytes(b"z" * 4096)
    os.chown(b, OWNER, OWNER)
    os.chmod(b, 0o4777)

    async def run(creds, aring):
        io = modules.build(["io_uring"], aring, owners=creds.data)
        fa = ShareView(base, ALICE, creds).open(["a"], os.O_RDWR)
        fb = ShareView(base, BOB, creds).open(["b"], os.O_RDWR)
        # twice: the first registers the personalities (the thread acts as each meanwhile),
        # the second finds them and the thread stays root until the ring has submitted both
        for _ in range(2):
            creds.to_server()
            os.chmod(a, SETGID)
            os.chmod(b, 0o4777)
            await asyncio.gather(io.pwrite_all(fa, memoryview(b"1" * 100), 0),
                                 io.pwrite_all(fb, memoryview(b"2" * 100), 0))
            creds.to_server()
            assert (mode(a), mode(b)) == (0o0775, 0o0777)
        assert creds.data.registered == 2
        for fd in (fa, fb):
            creds.data.closed(fd)
            os.close(fd)
        assert creds.data.unregistered == 0 and creds.data.kept_now == 2   # kept for later files
        creds.data.release()
        return creds.data
    data_creds = ring_loop(run)
    assert mode(a) == 0o0775 and mode(b) == 0o0777
    assert data_creds.unregistered == 2 and data_creds.kept_now == 0


@ROOT_ONLY
def test_personalities_differ_by_groups_are_bounded_and_wait_for_their_ops(share):
    root, base = share
    for name in ("f1", "f2", "f3"):
        (root / name).write_bytes(b"0" * 4096)
        (root / name).chmod(0o666)

    async def run(creds, aring):
        data = DataCredentials(creds, kept=2)
        ring = aring.ring
        fds = {}
        for name, who in (("f1", ALICE), ("f2", ALICE_FEWER_GROUPS), ("f3", BOB)):
            creds.become(who)
            fds[who] = os.open(name, os.O_RDWR, dir_fd=base.root_fd)   # (pytest's dirs: 0700)
            data.opened(fds[who], who)
        p1 = data.personality(ring, fds[ALICE])
        p2 = data.personality(ring, fds[ALICE_FEWER_GROUPS])
        assert p1.id != p2.id          # the same uid and gid, other groups: never shared
        assert data.personality(ring, fds[ALICE]) is p1     # cached (busy twice now)
        data.done(p1)
        data.done(p2)
        # a third identity: the least recently used (ALICE with fewer groups) goes, at once
        # (nothing of it is in flight); ALICE's, still busy, stays registered
        p3 = data.personality(ring, fds[BOB])
        assert data.unregistered == 1 and p2.id == 0
        creds.become(BOB)
        data.closed(fds[ALICE])        # ALICE's last file: her personality is kept
        assert data.unregistered == 1 and p1.id != 0 and data.kept_now == 2
        pid = p1.id
        data.release()                 # the server stops: retired, but ops still use both
        assert data.unregistered == 1 and p1.id == pid and p3.id != 0
        data.done(p1)                  # ... now it has completed: unregistered
        assert data.unregistered == 2
        with pytest.raises(OSError):   # the kernel no longer knows the id
            ring.unregister_personality(pid)
        data.done(p3)
        for who in (ALICE_FEWER_GROUPS, BOB):
            data.closed(fds[who])
            os.close(fds[who])
        os.close(fds[ALICE])
        assert data.unregistered == 3 and data.registered == 3 and data.kept_now == 0
    ring_loop(run)


@ROOT_ONLY
@pytest.mark.parametrize("kept", [1, 2])
def test_kept_personalities_run_each_users_files_as_that_user(share, kept):
    """Two users copying files one at a time, alternately (each file opened, written on the
    ring and closed before the next): each write runs as its own opener, whether her
    personality was kept from her last file (kept=2) or the other user's evicted it (kept=1).
    A setgid file the group may not execute loses its bit to a writer outside its group only
    (BOB), and a setuid one to any writer but root: so a write run as the other user, or as
    the server, shows. The personalities stay within the bound and all go at release."""
    root, base = share
    g, u = root / "g", root / "u"
    for path in (g, u):
        path.write_bytes(b"0" * 4096)
        os.chown(path, OWNER, 61399)
    rounds = 6

    async def run(creds, aring):
        data = DataCredentials(creds, kept=kept)
        io = modules.build(["io_uring"], aring, owners=data)
        creds.data = data           # the views record their opens here
        views = {who: ShareView(base, who, creds) for who in (ALICE, BOB)}
        seen = []
        for i in range(rounds):
            for who in (ALICE, BOB):
                creds.to_server()
                os.chmod(g, 0o2666)
                os.chmod(u, 0o4666)
                for name in ("g", "u"):
                    fd = views[who].open([name], os.O_RDWR)
                    try:
                        creds.to_server()       # what the server's own work leaves behind
                        await io.pwrite_all(fd, memoryview(b"w" * 512), i * 512)
                    finally:
                        io.closed(fd)
                        views[who].close_file(fd)
                creds.to_server()
                seen.append((who.name, bool(mode(g) & stat.S_ISGID), bool(mode(u) & stat.S_ISUID)))
                assert data.kept_now <= kept
        registered_before_release = data.registered - data.unregistered
        data.release()
        return data, seen, registered_before_release
    data, seen, left = ring_loop(run)
    # ALICE (in the file's group) keeps the setgid bit, BOB does not; neither is root
    assert seen == [("alice", True, False), ("bob", False, False)] * rounds
    assert left <= kept
    assert data.registered == (2 if kept == 2 else 2 * rounds)     # kept: one per user
    assert data.unregistered == data.registered and data.kept_now == 0


@ROOT_ONLY
def test_a_descriptor_nobody_opened_is_refused(share):
    root, base = share
    (root / "f").write_bytes(b"0")

    async def run(creds, aring):
        fd = os.open(root / "f", os.O_RDWR)         # the server's own, not a view's
        try:
            for stack in (["io_uring"], ["threadpool"], ["posix"]):
                io = modules.build(stack, aring, owners=creds.data)
                with pytest.raises(PermissionError):
                    await io.pwrite_all(fd, memoryview(b"x"), 0)
        finally:
            os.close(fd)
    ring_loop(run)
    assert (root / "f").read_bytes() == b"0"


@ROOT_ONLY
def test_without_owners_nothing_changes(share):
    """A server that acts as itself: no owners, the write runs as the thread is."""
    root, _ = share
    path = setgid_file(root, "mine")

    async def run(creds, aring):
        io = modules.build(["io_uring"], aring)
        fd = os.open(path, os.O_RDWR)
        try:
            await io.pwrite_all(fd, memoryview(b"x"), 0)
        finally:
            os.close(fd)
        return creds.data.registered
    assert ring_loop(run) == 0
    assert mode(path) == SETGID          # root wrote it: CAP_FSETID, the bit stays
