"""PosixVFS.copy_range and write_head, the few bytes the protocol core moves itself (a "._"
file's resource fork and Finder information taken into streams): whole copies, at the right
offsets, through memory where the kernel will not copy, and an error where the source ends
first."""
import errno
import os

import pytest

from smbring.vfs.posix import PosixVFS


@pytest.fixture
def files(tmp_path):
    src = tmp_path / "src"
    src.write_bytes(bytes(range(256)) * 8192)          # 2 MiB
    fds = os.open(src, os.O_RDONLY), os.open(tmp_path / "dst", os.O_RDWR | os.O_CREAT, 0o600)
    yield fds
    for fd in fds:
        os.close(fd)


def test_a_range_is_copied_to_the_start_of_the_other_file(files):
    src, dst = files
    PosixVFS.copy_range(src, 1000, dst, (1 << 20) + 7)
    assert os.pread(dst, 2 << 20, 0) == (bytes(range(256)) * 8192)[1000:1000 + (1 << 20) + 7]


def test_the_copy_goes_through_memory_where_the_kernel_refuses(files, monkeypatch):
    src, dst = files

    def refused(*_args):
        raise OSError(errno.EXDEV, "cross-device")
    monkeypatch.setattr(os, "copy_file_range", refused)
    PosixVFS.copy_range(src, 3, dst, (1 << 20) + 5)
    assert os.pread(dst, 2 << 20, 0) == (bytes(range(256)) * 8192)[3:3 + (1 << 20) + 5]


def test_a_source_that_ends_first_is_an_error(files):
    src, dst = files
    with pytest.raises(OSError) as e:
        PosixVFS.copy_range(src, (2 << 20) - 10, dst, 100)
    assert e.value.errno == errno.EIO


def test_write_head_writes_all_at_the_start(files):
    _src, dst = files
    os.pwrite(dst, b"x" * 100, 0)
    PosixVFS.write_head(dst, b"AFP\0" * 15)
    assert os.pread(dst, 200, 0) == b"AFP\0" * 15 + b"x" * 40
