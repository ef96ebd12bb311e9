"""PosixVFS.remove_tree (what deleting a directory of vetoed names takes with it): everything
below the directory goes, a symbolic link below it goes as a name and what it leads to stays,
and past its bound it stops with ENOTEMPTY."""
import errno
import os

import pytest

from smbring.vfs.posix import PosixVFS


@pytest.fixture
def fs(tmp_path):
    (tmp_path / "share").mkdir()
    vfs = PosixVFS(str(tmp_path / "share"))
    yield vfs
    vfs.close()


def test_everything_below_goes_and_no_link_is_followed(fs, tmp_path):
    kept = tmp_path / "share" / "kept"
    kept.mkdir()
    (kept / "precious").write_bytes(b"keep me")
    tree = tmp_path / "share" / ".AppleDouble"
    (tree / "deeper" / "deepest").mkdir(parents=True)
    (tree / "a").write_bytes(b"a")
    (tree / "deeper" / "b").write_bytes(b"b")
    os.symlink("../../kept", tree / "deeper" / "link")      # a directory's link
    os.symlink("/etc/passwd", tree / "outside")
    assert fs.remove_tree([".AppleDouble"], 100) == 7
    assert not tree.exists()
    assert (kept / "precious").read_bytes() == b"keep me"


def test_past_its_bound_it_stops(fs, tmp_path):
    tree = tmp_path / "share" / "many"
    tree.mkdir()
    for i in range(10):
        (tree / str(i)).write_bytes(b"")
    with pytest.raises(OSError) as refused:
        fs.remove_tree(["many"], 5)
    assert refused.value.errno == errno.ENOTEMPTY
    assert tree.exists()
