"""io_uring personalities (credentials registered with the ring, named by each SQE) and the
per-thread credential switch (`set_thread_credentials`), on real files. What switches a
thread's credentials runs in a thread of its own, which ends with the test: the test runner's
thread never acts as anyone else."""
import errno
import os

import pytest
from threads import in_thread

from smbring import uring

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="acting as other ids needs root")
UID, GID, GROUPS = 61201, 61201, (61201, 61299)


def complete(ring, req):
    ring.submit()
    while not req.done:
        ring.wait(1, timeout=5)
    return req


def test_personality_of_ones_own_credentials(tmp_path):
    path = tmp_path / "f"
    path.write_text("x")

    def run():
        with uring.Ring(8) as ring:
            pid = ring.register_personality()
            assert pid >= 1 and ring.personality == 0
            ring.personality = pid
            req = complete(ring, ring.openat(uring.AT_FDCWD, str(path), os.O_RDONLY))
            assert req.res >= 0
            os.close(req.res)
            ring.unregister_personality(pid)
            assert ring.personality == 0               # what named it is forgotten
            with pytest.raises(OSError) as e:
                ring.unregister_personality(pid)
            assert e.value.errno == errno.EINVAL
            for bad in (-1, 65536):
                with pytest.raises(ValueError):
                    ring.personality = bad
            with pytest.raises(ValueError):
                ring.unregister_personality(0)
            with pytest.raises(AttributeError):
                del ring.personality
            ring.personality = 4242                    # never registered: the kernel refuses
            assert complete(ring, ring.nop()).res == -errno.EINVAL
            fd = os.open(path, os.O_RDONLY)
            try:                                       # a batch's SQEs carry it too
                batch = complete(ring, ring.read_batch(fd, bytearray(8), [0, 4], 4))
                assert batch.results == [-errno.EINVAL] * 2
            finally:
                os.close(fd)
    in_thread(run)


@ROOT_ONLY
def test_ops_run_with_the_personality_named(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("root only")
    secret.chmod(0o600)
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    tmp_path.chmod(0o755)
    # paths relative to a descriptor of tmp_path: its ancestors are not for other users
    dfd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)

    def run():
        with uring.Ring(8) as ring:
            uring.set_thread_credentials(UID, GID, GROUPS)
            try:
                pid = ring.register_personality()
            finally:
                uring.set_thread_credentials(0, 0, ())
            ring.personality = pid
            assert complete(ring, ring.openat(dfd, "secret")).res == -errno.EACCES
            assert complete(ring, ring.openat(dfd, "open")).res >= 0     # what the user may
            assert complete(ring, ring.mkdirat(dfd, "open/d", 0o755)).res == 0
            ring.personality = 0
            req = complete(ring, ring.openat(dfd, "secret"))
            assert req.res >= 0            # the thread's own (root's) credentials again
            os.close(req.res)
            ring.unregister_personality(pid)
    try:
        in_thread(run)
    finally:
        os.close(dfd)
    st = (open_dir / "d").stat()
    assert (st.st_uid, st.st_gid) == (UID, GID)


@ROOT_ONLY
def test_thread_credentials_change_one_thread_only(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("root only")
    secret.chmod(0o600)
    seen = {}

    def run():
        uring.set_thread_credentials(UID, GID, GROUPS)
        seen["ids"] = (os.getresuid(), os.getresgid(), sorted(os.getgroups()))
        with pytest.raises(PermissionError):
            os.open("secret", os.O_RDONLY, dir_fd=dfd)
        os.mkdir("made", dir_fd=dfd)
        uring.set_thread_credentials(0, 0, ())
        seen["back"] = (os.getresuid(), os.getresgid())
        return secret.read_text()

    os.chmod(tmp_path, 0o777)
    dfd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert in_thread(run) == "root only"
    finally:
        os.close(dfd)
    # the real and saved uid stay 0 (so the thread can come back, and users cannot signal it)
    assert seen["ids"] == ((0, UID, 0), (0, GID, 0), sorted(GROUPS))
    assert seen["back"] == ((0, 0, 0), (0, 0, 0))
    assert os.geteuid() == 0 and os.getegid() == 0      # this thread never changed
    st = (tmp_path / "made").stat()
    assert (st.st_uid, st.st_gid) == (UID, GID)


@ROOT_ONLY
def test_thread_credentials_refuse_bad_ids():
    def run():
        for args in ((-1, 0, ()), (0, -1, ()), (0, 0, (-5,)), (0, 0, ("x",)), (0, 0, 5),
                     (2 ** 32, 0, ())):
            with pytest.raises((ValueError, TypeError, OverflowError)):
                uring.set_thread_credentials(*args)
            assert os.geteuid() == 0
        with pytest.raises(ValueError):
            uring.set_thread_credentials(0, 0, range(70000))
        uring.set_thread_credentials(0, 0, range(100))     # more groups than the stack list holds
        assert len(os.getgroups()) == 100
        uring.set_thread_credentials(0, 0, ())
    in_thread(run)
