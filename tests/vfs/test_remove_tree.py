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
    assert fs.remove_tree([".AppleDouble"], 100, []) == 7
    assert not tree.exists()
    assert (kept / "precious").read_bytes() == b"keep me"


def test_past_its_bound_it_stops(fs, tmp_path):
    tree = tmp_path / "share" / "many"
    tree.mkdir()
    for i in range(10):
        (tree / str(i)).write_bytes(b"")
    with pytest.raises(OSError) as refused:
        fs.remove_tree(["many"], 5, [])
    assert refused.value.errno == errno.ENOTEMPTY
    assert tree.exists()


def with_stream(fs, parts: list[str]) -> str:
    """Gives the file at `parts` a named stream; its stream id."""
    sid = fs.stream_id(parts, create=True)
    os.close(fs.create_stream(sid, "s1", (os.getuid(), os.getgid())))
    return sid


def test_the_named_streams_of_the_files_removed_go_with_them(fs, tmp_path):
    """Each file deleted for good is reported with its stream id, and its streams go; a file
    that keeps another name (a hard link outside the tree) keeps its streams; a file given
    another file's stream id (as a local user could copy it) takes none of that file's."""
    share = tmp_path / "share"
    (share / "tree" / "sub").mkdir(parents=True)
    (share / "tree" / "sub" / "file").write_bytes(b"data")
    (share / "tree" / "linked").write_bytes(b"data")
    (share / "victim").write_bytes(b"data")
    (share / "tree" / "copied").write_bytes(b"data")
    own = with_stream(fs, ["tree", "sub", "file"])
    linked = with_stream(fs, ["tree", "linked"])
    os.link(share / "tree" / "linked", share / "linked-elsewhere")
    victim = with_stream(fs, ["victim"])
    os.setxattr(share / "tree" / "copied", "user.smbring.streams", victim.encode())
    gone: list = []
    assert fs.remove_tree(["tree"], 100, gone) == 5
    assert sorted(sid for sid, _st in gone) == sorted([own, victim])    # (the copy reports its id)
    for found in gone:
        fs.remove_streams(*found)
    assert fs.streams(own) == []
    assert [name for name, _st in fs.streams(linked)] == ["s1"]
    assert [name for name, _st in fs.streams(victim)] == ["s1"]     # not the copy's to take
    assert fs.stream_id(["victim"]) == victim
