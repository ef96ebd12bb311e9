"""A CREATE's first look at an existing file reads its stored security descriptor and DOS
information at once (`get_sd_and_dos`): on a local file system one flistxattr says which of
the two are there. Real files, the real kernel: whatever is stored is what each read alone
gives, whichever way it is read, and a stored descriptor still refuses an open."""
import os

import pytest

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
