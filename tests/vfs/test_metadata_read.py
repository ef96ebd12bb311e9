"""A CREATE's first look at an existing file reads its stored security descriptor and DOS
information at once (`get_sd_and_dos`): on a local file system one flistxattr says which of
the two are there. Real files, the real kernel: whatever is stored is what each read alone
gives, whichever way it is read, and a stored descriptor still refuses an open."""
import errno
import os
import sys

import pytest

from smbring._dirent import get_xattr
from smbring.smb.fs import DosInfo
from smbring.vfs.posix import DOS_XATTR, SD_XATTR, PosixVFS

SD_BLOB = b"\x01\x00\x04\x80" + b"\0" * 16       # (not parsed here: the bytes as stored)


@pytest.fixture
def vfs(tmp_path):
    share = tmp_path / "share"
    share.mkdir()
    v = PosixVFS(str(share))
    yield v
    v.close()


def stored(vfs, name: str, sd: bool, dos: bool) -> int:
    vfs_path = os.path.join(vfs.root, name)
    with open(vfs_path, "wb") as f:
        f.write(b"data")
    fd = os.open(vfs_path, os.O_RDONLY)
    if sd:
        vfs.set_sd(fd, SD_BLOB)
    if dos:
        vfs.set_dos(fd, DosInfo(attrs=0x21, create_time=123))
    return fd


@pytest.mark.parametrize("sd,dos", [(False, False), (True, False), (False, True), (True, True)])
def test_the_combined_read_gives_what_each_read_gives(vfs, sd, dos):
    fd = stored(vfs, "f", sd, dos)
    try:
        device = os.fstat(fd).st_dev
        assert vfs.case_index.local(fd, device)     # (tmp_path: a local file system here)
        got_sd, got_dos = vfs.get_sd_and_dos(fd, device)
        assert got_sd == vfs.get_sd(fd) == (SD_BLOB if sd else None)
        assert got_dos == vfs.get_dos(fd)
        assert (got_dos is not None) == dos
        if dos:
            assert (got_dos.attrs, got_dos.create_time) == (0x21, 123)
    finally:
        os.close(fd)


def test_other_xattrs_do_not_hide_the_servers_own(vfs):
    """A file with many user xattrs (EAs a client stored) lists them all: ours are found."""
    fd = stored(vfs, "f", True, True)
    try:
        for i in range(20):
            os.setxattr(fd, f"user.ea{i:02d}", b"x" * 100)
        got_sd, got_dos = vfs.get_sd_and_dos(fd, os.fstat(fd).st_dev)
        assert got_sd == SD_BLOB and got_dos is not None
    finally:
        os.close(fd)


def test_a_file_system_not_known_as_local_is_read_each_way(vfs):
    """A device that is not a local file system's (no listing trusted): each is read alone,
    and a stored descriptor is found all the same."""
    fd = stored(vfs, "f", True, True)
    try:
        assert not vfs.case_index.local(-1, -12345)    # (a device never seen: fstatfs fails)
        got_sd, got_dos = vfs.get_sd_and_dos(fd, -12345)
        assert got_sd == SD_BLOB and got_dos is not None
    finally:
        os.close(fd)


def test_removed_xattrs_read_as_none(vfs):
    """What was stored and removed again is not there for the combined read either."""
    fd = stored(vfs, "f", True, True)
    try:
        os.removexattr(fd, SD_XATTR)
        os.removexattr(fd, DOS_XATTR)
        assert vfs.get_sd_and_dos(fd, os.fstat(fd).st_dev) == (None, None)
    finally:
        os.close(fd)


def c_exceptions(call) -> list[str]:
    """The C functions that raised while `call()` ran (a caught exception counts too)."""
    raised = []

    def watch(frame, event, arg):
        if event == "c_exception":
            raised.append(getattr(arg, "__qualname__", repr(arg)))
    sys.setprofile(watch)
    try:
        call()
    finally:
        sys.setprofile(None)
    return raised


def test_nothing_stored_is_read_without_an_exception(vfs):
    """A file made outside the server has no DOS information or descriptor stored: each
    read of them answers None without an OSError raised and caught on the way (which cost
    several times the system call, on every QUERY_INFO of such a file)."""
    fd = stored(vfs, "f", False, False)
    try:
        got = []
        assert c_exceptions(lambda: got.extend([vfs.get_dos(fd), vfs.get_sd(fd)])) == []
        assert got == [None, None]
    finally:
        os.close(fd)


@pytest.mark.parametrize("size", [0, 1, 255, 256, 257, 3000])
def test_get_xattr_gives_what_os_getxattr_gives(vfs, size):
    fd = stored(vfs, "f", False, False)
    try:
        value = os.urandom(size)
        os.setxattr(fd, "user.test", value)
        assert get_xattr(fd, "user.test") == os.getxattr(fd, "user.test") == value
        assert get_xattr(fd, "user.other") is None
    finally:
        os.close(fd)


def test_get_xattr_raises_other_failures_as_os_getxattr(vfs):
    """EBADF (a closed descriptor, an O_PATH one) is raised, not taken for "none stored";
    get_dos answers None for an O_PATH descriptor as before."""
    path = os.path.join(vfs.root, "f")
    os.close(stored(vfs, "f", False, True))
    fd = os.open(path, os.O_PATH)
    try:
        with pytest.raises(OSError) as raised:
            get_xattr(fd, DOS_XATTR)
        assert raised.value.errno == errno.EBADF
        assert vfs.get_dos(fd) is None
    finally:
        os.close(fd)


def test_size_is_the_stats(vfs):
    """`size` (what a READ asks) is the fstat's st_size as the file grows and shrinks, and
    leaves what positional reads give alone."""
    fd = stored(vfs, "f", False, False)
    try:
        for length in (4, 0, 4096, 70000, 1):
            os.truncate(os.path.join(vfs.root, "f"), length)
            assert vfs.size(fd) == os.fstat(fd).st_size == length
        with open(os.path.join(vfs.root, "f"), "r+b") as f:
            f.write(b"data")
        assert vfs.size(fd) == 4 and os.pread(fd, 4, 0) == b"data"
    finally:
        os.close(fd)
