"""File ops against real files on the test's file system, each with an error case."""
import errno
import os
import stat

import pytest

from smbring import uring


def test_nop(ring, complete):
    assert complete(ring.nop()).res == 0


def test_read_write(ring, complete, datafile):
    fd, data, path = datafile
    buf = bytearray(100)
    assert complete(ring.read(fd, buf, 1000)).res == 100 and buf == data[1000:1100]
    assert complete(ring.read(fd, bytearray(10), 65536)).res == 0          # EOF
    assert complete(ring.write(fd, b"hello", 5)).res == 5
    assert path.read_bytes()[5:10] == b"hello"
    ro = os.open(path, os.O_RDONLY)
    try:
        assert complete(ring.write(ro, b"x", 0)).res == -errno.EBADF
    finally:
        os.close(ro)


def test_readv_writev(ring, complete, datafile):
    fd, data, path = datafile
    a, b = bytearray(3), bytearray(5)
    assert complete(ring.readv(fd, [a, b], 10)).res == 8
    assert a + b == data[10:18]
    assert complete(ring.writev(fd, [b"ab", memoryview(b"cdef")], 0)).res == 6
    assert path.read_bytes()[:6] == b"abcdef"
    with pytest.raises(ValueError):
        ring.readv(fd, [], 0)
    assert complete(ring.readv(-1, [bytearray(1)], 0)).res == -errno.EBADF


def test_fixed_buffers(ring, complete, datafile):
    fd, data, path = datafile
    reg = bytearray(8192)
    ring.register_buffers([reg])
    with pytest.raises(BufferError):
        reg.append(1)                               # pinned while registered
    assert complete(ring.read_fixed(fd, 0, 4096, 4096)).res == 4096
    assert reg[:4096] == data[4096:8192]
    reg[4096:4101] = b"fixed"
    assert complete(ring.write_fixed(fd, 0, 0, 5, 4096)).res == 5
    assert path.read_bytes()[:5] == b"fixed"
    with pytest.raises(ValueError):
        ring.read_fixed(fd, 1, 0)                   # no such index
    with pytest.raises(ValueError):
        ring.read_fixed(fd, 0, 0, 8193)             # beyond the buffer
    ring.unregister_buffers()
    reg.append(1)


def test_fsync_fdatasync(ring, complete, datafile):
    fd, _, _ = datafile
    assert complete(ring.fsync(fd)).res == 0
    assert complete(ring.fsync(fd, datasync=True)).res == 0
    assert complete(ring.fsync(-1)).res == -errno.EBADF


def test_fadvise(ring, complete, datafile):
    fd, _, _ = datafile
    assert complete(ring.fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)).res == 0
    assert complete(ring.fadvise(fd, 0, 0, 12345)).res == -errno.EINVAL


def test_openat2_resolve_beneath(ring, complete, tmp_path):
    root = tmp_path / "share"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "f").write_text("inside")
    (tmp_path / "secret").write_text("outside")
    os.symlink("../../secret", root / "sub" / "escape")
    os.symlink("f", root / "sub" / "link")
    dirfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        beneath = uring.RESOLVE_BENEATH | uring.RESOLVE_NO_MAGICLINKS
        req = complete(ring.openat2(dirfd, "sub/f", os.O_RDONLY, 0, beneath))
        assert req.res >= 0
        assert os.read(req.res, 100) == b"inside"
        assert complete(ring.close_async(req.res)).res == 0
        assert complete(ring.openat2(dirfd, "../secret", os.O_RDONLY, 0, beneath)).res == -errno.EXDEV
        assert complete(ring.openat2(dirfd, "/etc/passwd", os.O_RDONLY, 0, beneath)).res == -errno.EXDEV
        assert complete(ring.openat2(dirfd, "sub/escape", os.O_RDONLY, 0, beneath)).res == -errno.EXDEV
        nosym = beneath | uring.RESOLVE_NO_SYMLINKS
        assert complete(ring.openat2(dirfd, "sub/link", os.O_RDONLY, 0, nosym)).res == -errno.ELOOP
        created = complete(ring.openat2(dirfd, "new", os.O_CREAT | os.O_WRONLY, 0o600, beneath))
        assert created.res >= 0 and stat.S_IMODE(os.fstat(created.res).st_mode) == 0o600
        os.close(created.res)
        # the synchronous fallback behaves the same
        with pytest.raises(OSError) as e:
            uring.openat2(dirfd, "../secret", resolve=beneath)
        assert e.value.errno == errno.EXDEV
        os.close(uring.openat2(dirfd, "sub/f", resolve=beneath))
    finally:
        os.close(dirfd)


def test_openat2_through_dotdot_beside_renames_elsewhere_succeeds(tmp_path):
    """With RESOLVE_BENEATH the kernel refuses (EAGAIN) a resolution through ".." during which
    any rename happened anywhere, unable to tell that it stayed beneath; the synchronous
    openat2 tries again, so such a path (a link to "../f") opens while another thread renames
    a file in another directory all the time (before, about one open in a hundred failed, and
    the server answered a CREATE of it STATUS_SHARING_VIOLATION)."""
    import threading
    import time
    root = tmp_path / "share"
    (root / "sub").mkdir(parents=True)
    (root / "f").write_text("x")
    os.symlink("../f", root / "sub" / "link")
    (tmp_path / "elsewhere").mkdir()
    a, b = tmp_path / "elsewhere" / "a", tmp_path / "elsewhere" / "b"
    a.write_text("")
    stop = threading.Event()

    def rename_all_the_time():
        while not stop.is_set():
            os.rename(a, b)
            os.rename(b, a)
    renamer = threading.Thread(target=rename_all_the_time, daemon=True)
    renamer.start()
    dirfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    failed, opened, end = [], 0, time.monotonic() + 2
    try:
        beneath = uring.RESOLVE_BENEATH | uring.RESOLVE_NO_MAGICLINKS
        while time.monotonic() < end and len(failed) < 10:
            try:
                os.close(uring.openat2(dirfd, "sub/link", resolve=beneath))
                opened += 1
            except OSError as e:
                failed.append(e)
    finally:
        stop.set()
        renamer.join()
        os.close(dirfd)
    assert not failed and opened > 1000, (opened, failed)


def test_close(ring, complete, datafile):
    fd, _, path = datafile
    fd2 = os.open(path, os.O_RDONLY)
    assert complete(ring.close_async(fd2)).res == 0
    with pytest.raises(OSError):
        os.fstat(fd2)
    assert complete(ring.close_async(fd2)).res == -errno.EBADF


def test_statx(ring, complete, datafile, tmp_path):
    fd, data, path = datafile
    req = complete(ring.statx(uring.AT_FDCWD, str(path)))
    st = req.value
    assert st.size == len(data) and stat.S_ISREG(st.mode)
    assert st.mtime_ns == os.stat(path).st_mtime_ns and st.ino == os.stat(path).st_ino
    assert complete(ring.statx(fd, "", uring.AT_EMPTY_PATH)).value.size == len(data)
    missing = complete(ring.statx(uring.AT_FDCWD, str(tmp_path / "missing")))
    assert missing.res == -errno.ENOENT and missing.value is None


def test_directory_ops(ring, complete, tmp_path):
    d = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert complete(ring.mkdirat(d, "dir", 0o755)).res == 0
        assert (tmp_path / "dir").is_dir()
        assert complete(ring.mkdirat(d, "dir")).res == -errno.EEXIST
        (tmp_path / "a").write_text("A")
        assert complete(ring.renameat(d, "a", d, "b")).res == 0
        assert (tmp_path / "b").read_text() == "A" and not (tmp_path / "a").exists()
        assert complete(ring.renameat(d, "a", d, "c")).res == -errno.ENOENT
        assert complete(ring.linkat(d, "b", d, "hard")).res == 0
        assert os.stat(tmp_path / "hard").st_nlink == 2
        assert complete(ring.symlinkat("b", d, "soft")).res == 0
        assert os.readlink(tmp_path / "soft") == "b"
        assert complete(ring.symlinkat("b", d, "soft")).res == -errno.EEXIST
        assert complete(ring.unlinkat(d, "soft")).res == 0
        assert complete(ring.unlinkat(d, "dir", uring.AT_REMOVEDIR)).res == 0
        assert complete(ring.unlinkat(d, "nope")).res == -errno.ENOENT
        (tmp_path / "x").write_text("1")
        (tmp_path / "y").write_text("2")
        RENAME_NOREPLACE = 1
        assert complete(ring.renameat(d, "x", d, "y", RENAME_NOREPLACE)).res == -errno.EEXIST
    finally:
        os.close(d)


def test_xattrs(ring, complete, datafile):
    fd, _, path = datafile
    req = complete(ring.fsetxattr(fd, "user.smbring", b"dos-attrib"))
    if req.res == -errno.EOPNOTSUPP:
        pytest.skip("file system without user xattrs")
    assert req.res == 0
    buf = bytearray(64)
    assert complete(ring.fgetxattr(fd, "user.smbring", buf)).res == 10 and buf[:10] == b"dos-attrib"
    assert complete(ring.setxattr(str(path), "user.other", b"v")).res == 0
    buf = bytearray(8)
    assert complete(ring.getxattr(str(path), "user.other", buf)).res == 1 and buf[:1] == b"v"
    assert complete(ring.getxattr(str(path), "user.missing", buf)).res == -errno.ENODATA
    assert complete(ring.fgetxattr(fd, "user.smbring", bytearray(2))).res == -errno.ERANGE


def test_link_chain_and_link_timeout(ring, complete, datafile, sockpair):
    fd, data, _ = datafile
    buf = bytearray(4)
    first = ring.write(fd, b"LINK", 0, sqe_flags=uring.LINK)
    second = ring.read(fd, buf, 0)
    complete(second)
    assert first.res == 4 and second.res == 4 and buf == b"LINK"
    # a recv that never completes, bounded by a linked timeout
    a, _ = sockpair
    recv = ring.recv(a.fileno(), bytearray(4), sqe_flags=uring.LINK)
    limit = ring.link_timeout(0.05)
    complete(recv)
    complete(limit)
    assert recv.res == -errno.ECANCELED and limit.res == -errno.ETIME


def test_punting_file_systems_are_detected(tmp_path):
    """tmpfs hands io_uring buffered reads to worker threads; ext4's page cache does not."""
    fd = os.open(tmp_path / "probe", os.O_RDWR | os.O_CREAT)
    try:
        os.write(fd, b"x" * 4096)
        on_tmp = uring.punts_buffered_io(fd)
    finally:
        os.close(fd)
    if os.path.isdir("/dev/shm"):
        path = f"/dev/shm/smbring-probe-{os.getpid()}"
        fd = os.open(path, os.O_RDWR | os.O_CREAT)
        try:
            os.write(fd, b"x")
            assert uring.punts_buffered_io(fd) is True
        finally:
            os.close(fd)
            os.unlink(path)
    with open("/proc/self/mountinfo") as f:
        tmp_is_tmpfs = any(line.split()[4] == "/tmp" and " - tmpfs " in line for line in f)
    assert on_tmp is tmp_is_tmpfs


def test_openat2_directory_with_mode_argument(ring, complete, tmp_path):
    """O_DIRECTORY shares a bit with O_TMPFILE: a mode must not be passed on for it."""
    d = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fd = uring.openat2(d, ".", os.O_RDONLY | os.O_DIRECTORY, 0o644, uring.RESOLVE_BENEATH)
        os.close(fd)
        req = complete(ring.openat2(d, ".", os.O_RDONLY | os.O_DIRECTORY, 0o644, uring.RESOLVE_BENEATH))
        assert req.res >= 0
        os.close(req.res)
    finally:
        os.close(d)
