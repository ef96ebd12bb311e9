"""File semantics of Windows (MS-FSA) through a real `smbring serve` and a raw SMB2 client:
a missing parent is a path not found, a name already taken collides whatever it is, a
directory has one name, the creation time stays put when the write time is set, hard links
(FileLinkInformation), and paths with repeated separators."""
from __future__ import annotations

import os
import struct
import sys
from pathlib import Path

import pytest

from servers import PASSWORD, USER, spawn, stop
from smbring.smb import wire

sys.path.insert(0, str(Path(__file__).parent.parent / "security"))   # raw.py
from raw import RawClient  # noqa: E402

BASIC, STANDARD, ALL, LINK, DISPOSITION = 4, 5, 18, 11, 13
RW = wire.GENERIC_READ | wire.GENERIC_WRITE | wire.DELETE
STATUS_OBJECT_NAME_INVALID = 0xC0000033
STATUS_OBJECT_NAME_NOT_FOUND = 0xC0000034


@pytest.fixture
def tree(server):
    c = RawClient(server["port"])
    c.negotiate()
    t = c.tree(c.logon(USER, PASSWORD), "share")
    yield t
    c.close()


def standard(tree, fid) -> tuple:
    """(AllocationSize, EndOfFile, NumberOfLinks, DeletePending, Directory)."""
    r = tree.query_info(fid, wire.INFO_FILE, STANDARD)
    assert r.status == wire.STATUS_SUCCESS
    return struct.unpack_from("<QQIBB", r.buffer(2))


def creation_and_write_time(tree, fid) -> tuple[int, int]:
    r = tree.query_info(fid, wire.INFO_FILE, BASIC)
    created, _accessed, written, _changed = struct.unpack_from("<QQQQ", r.buffer(2))
    return created, written


def set_basic(tree, fid, created=0, written=0) -> int:
    return tree.set_info(fid, wire.INFO_FILE, BASIC, struct.pack("<QQQQII", created, 0, written, 0, 0, 0)).status


def link_info(name: str, replace: bool = False) -> bytes:
    encoded = wire.utf16(name)
    return struct.pack("<B7xQI", int(replace), 0, len(encoded)) + encoded


# -- a missing parent ------------------------------------------------------------------------
FILE_DISPOSITIONS = [wire.FILE_OPEN, wire.FILE_CREATE, wire.FILE_OPEN_IF, wire.FILE_OVERWRITE,
                     wire.FILE_OVERWRITE_IF, wire.FILE_SUPERSEDE]
DIRECTORY_DISPOSITIONS = [wire.FILE_OPEN, wire.FILE_CREATE, wire.FILE_OPEN_IF]   # never overwritten


@pytest.mark.parametrize("options, disposition", [(0, d) for d in FILE_DISPOSITIONS] +
                         [(wire.FILE_DIRECTORY_FILE, d) for d in DIRECTORY_DISPOSITIONS])
def test_a_missing_parent_is_a_path_not_found(tree, server, disposition, options):
    r = tree.create("nowhere\\thing", RW, disposition, options)
    assert r.status == wire.STATUS_OBJECT_PATH_NOT_FOUND
    assert os.listdir(server["share"]) == []


def test_a_parent_that_is_a_file_is_a_path_not_found(tree, server):
    (server["share"] / "plain.txt").write_bytes(b"x")
    for disposition in (wire.FILE_OPEN, wire.FILE_CREATE):
        assert tree.create("plain.txt\\inside", RW, disposition).status == wire.STATUS_OBJECT_PATH_NOT_FOUND
        assert tree.create("plain.txt\\in\\side", RW, disposition).status == wire.STATUS_OBJECT_PATH_NOT_FOUND


def test_a_stream_of_a_file_in_a_missing_directory_is_a_path_not_found(tree, server):
    r = tree.create("nowhere\\f.txt:stream", RW, wire.FILE_OPEN_IF)
    assert r.status == wire.STATUS_OBJECT_PATH_NOT_FOUND
    assert os.listdir(server["share"]) == []


def test_a_missing_file_in_an_existing_directory_is_a_name_not_found(tree, server):
    (server["share"] / "d").mkdir()
    assert tree.create("d\\missing", RW, wire.FILE_OPEN).status == STATUS_OBJECT_NAME_NOT_FOUND
    assert tree.create("D\\missing", RW, wire.FILE_OPEN).status == STATUS_OBJECT_NAME_NOT_FOUND  # any case
    fid = tree.open("D\\new", RW, wire.FILE_CREATE)               # the parent found in any case
    tree.close(fid)
    assert (server["share"] / "d" / "new").exists()


# -- names already taken ---------------------------------------------------------------------
def test_a_directory_made_over_a_file_collides(tree, server):
    (server["share"] / "taken").write_bytes(b"x")
    r = tree.create("taken", RW, wire.FILE_CREATE, wire.FILE_DIRECTORY_FILE)
    assert r.status == wire.STATUS_OBJECT_NAME_COLLISION
    assert (server["share"] / "taken").is_file()
    # opening it as a directory is still "not a directory"
    assert tree.create("taken", RW, wire.FILE_OPEN, wire.FILE_DIRECTORY_FILE).status == wire.STATUS_NOT_A_DIRECTORY


def test_a_file_made_over_a_directory_collides(tree, server):
    (server["share"] / "dir").mkdir()
    r = tree.create("dir", RW, wire.FILE_CREATE, wire.FILE_NON_DIRECTORY_FILE)
    assert r.status == wire.STATUS_OBJECT_NAME_COLLISION
    assert tree.create("DIR", RW, wire.FILE_CREATE, wire.FILE_DIRECTORY_FILE).status == \
        wire.STATUS_OBJECT_NAME_COLLISION                          # in any case
    r = tree.create("dir", RW, wire.FILE_OPEN, wire.FILE_NON_DIRECTORY_FILE)
    assert r.status == wire.STATUS_FILE_IS_A_DIRECTORY


# -- a directory's links ---------------------------------------------------------------------
def test_a_directory_has_one_name(tree, server):
    for sub in ("a", "b", "c"):
        (server["share"] / "d" / sub).mkdir(parents=True)
    assert os.stat(server["share"] / "d").st_nlink == 5             # what Unix counts
    fid = tree.open("d", wire.GENERIC_READ | wire.DELETE, options=wire.FILE_DIRECTORY_FILE)
    assert standard(tree, fid)[2:] == (1, 0, 1)
    r = tree.query_info(fid, wire.INFO_FILE, ALL)
    assert struct.unpack_from("<I", r.buffer(2), 40 + 16)[0] == 1
    root = tree.open("", wire.GENERIC_READ, options=wire.FILE_DIRECTORY_FILE)
    assert standard(tree, root)[2] == 1


def test_an_empty_directory_about_to_go_has_no_name(tree, server):
    (server["share"] / "empty").mkdir()
    fid = tree.open("empty", wire.GENERIC_READ | wire.DELETE, options=wire.FILE_DIRECTORY_FILE)
    assert tree.set_info(fid, wire.INFO_FILE, DISPOSITION, b"\1").status == wire.STATUS_SUCCESS
    assert standard(tree, fid)[2:] == (0, 1, 1)


# -- the creation time -----------------------------------------------------------------------
YEAR_1990 = wire.nt_time(631152000 * 10**9)


@pytest.mark.parametrize("made_by", ["client", "server's own files"])
def test_setting_the_write_time_never_moves_the_creation_time(tree, server, made_by):
    if made_by == "client":
        fid = tree.open("t.txt", RW, wire.FILE_CREATE)
    else:
        (server["share"] / "t.txt").write_bytes(b"made on the server")
        fid = tree.open("t.txt", RW)
    created, _written = creation_and_write_time(tree, fid)
    assert set_basic(tree, fid, written=YEAR_1990) == wire.STATUS_SUCCESS
    assert creation_and_write_time(tree, fid) == (created, YEAR_1990)
    assert tree.write(fid, b"more").status == wire.STATUS_SUCCESS   # a write moves only the write time
    tree.close(fid)
    fid = tree.open("t.txt", RW)
    assert creation_and_write_time(tree, fid)[0] == created


def test_a_creation_time_set_explicitly_is_kept_and_a_write_time_with_it(tree):
    fid = tree.open("t.txt", RW, wire.FILE_CREATE)
    assert set_basic(tree, fid, created=YEAR_1990, written=YEAR_1990 + 10**7) == wire.STATUS_SUCCESS
    assert creation_and_write_time(tree, fid) == (YEAR_1990, YEAR_1990 + 10**7)


def test_a_new_file_keeps_its_creation_time_through_writes(tree):
    fid = tree.open("w.txt", RW, wire.FILE_CREATE)
    created, _ = creation_and_write_time(tree, fid)
    tree.write(fid, b"x" * 10)
    tree.close(fid)
    fid = tree.open("w.txt", RW, wire.FILE_OVERWRITE)
    assert creation_and_write_time(tree, fid)[0] == created


# -- hard links ------------------------------------------------------------------------------
def test_a_hard_link_is_a_second_name_of_the_same_file(tree, server):
    share = server["share"]
    (share / "d").mkdir()
    fid = tree.open("a.txt", RW, wire.FILE_CREATE)
    tree.write(fid, b"linked")
    assert tree.set_info(fid, wire.INFO_FILE, LINK, link_info("d\\b.txt")).status == wire.STATUS_SUCCESS
    assert (share / "d" / "b.txt").read_bytes() == b"linked"
    assert os.stat(share / "a.txt").st_ino == os.stat(share / "d" / "b.txt").st_ino
    assert standard(tree, fid)[2] == 2
    # the same name again: taken; linking a file to a name it already has: nothing to do
    assert tree.set_info(fid, wire.INFO_FILE, LINK, link_info("D\\B.TXT")).status == wire.STATUS_SUCCESS
    other = tree.open("c.txt", RW, wire.FILE_CREATE)
    assert tree.set_info(other, wire.INFO_FILE, LINK, link_info("d\\b.txt")).status == \
        wire.STATUS_OBJECT_NAME_COLLISION
    assert (share / "d" / "b.txt").read_bytes() == b"linked"


def test_replace_if_exists_replaces_a_closed_file(tree, server):
    share = server["share"]
    (share / "old.txt").write_bytes(b"old")
    fid = tree.open("new.txt", RW, wire.FILE_CREATE)
    assert tree.set_info(fid, wire.INFO_FILE, LINK, link_info("OLD.txt", replace=True)).status == \
        wire.STATUS_SUCCESS
    assert sorted(os.listdir(share)) == ["new.txt", "old.txt"]
    assert os.stat(share / "old.txt").st_ino == os.stat(share / "new.txt").st_ino


def test_replace_if_exists_never_replaces_an_open_file_a_directory_or_a_read_only_file(tree, server):
    share = server["share"]
    (share / "open.txt").write_bytes(b"open")
    (share / "dir").mkdir()
    (share / "ro.txt").write_bytes(b"ro")
    os.chmod(share / "ro.txt", 0o444)
    held = tree.open("open.txt", wire.GENERIC_READ)
    fid = tree.open("new.txt", RW, wire.FILE_CREATE)
    for target in ("open.txt", "dir", "ro.txt"):
        r = tree.set_info(fid, wire.INFO_FILE, LINK, link_info(target, replace=True))
        assert r.status == wire.STATUS_ACCESS_DENIED, target
    assert (share / "open.txt").read_bytes() == b"open" and (share / "ro.txt").read_bytes() == b"ro"
    assert (share / "dir").is_dir()
    tree.close(held)


def test_what_cannot_be_linked(tree, server):
    share = server["share"]
    (share / "d").mkdir()
    directory = tree.open("d", RW, options=wire.FILE_DIRECTORY_FILE)
    assert tree.set_info(directory, wire.INFO_FILE, LINK, link_info("d2")).status == wire.STATUS_FILE_IS_A_DIRECTORY
    fid = tree.open("f.txt", RW, wire.FILE_CREATE)
    stream = tree.open("f.txt:s", RW, wire.FILE_CREATE)
    assert tree.set_info(stream, wire.INFO_FILE, LINK, link_info("g.txt")).status == wire.STATUS_INVALID_PARAMETER
    refused = {
        "..\\outside.txt": wire.STATUS_OBJECT_PATH_SYNTAX_BAD,      # no way out of the share
        "d\\..\\..\\outside.txt": wire.STATUS_OBJECT_PATH_SYNTAX_BAD,
        "nowhere\\g.txt": wire.STATUS_OBJECT_PATH_NOT_FOUND,
        "f.txt\\g.txt": wire.STATUS_OBJECT_PATH_NOT_FOUND,
        "g.txt:stream": STATUS_OBJECT_NAME_INVALID,
        "": STATUS_OBJECT_NAME_INVALID,
        ".smbring-streams\\x": STATUS_OBJECT_NAME_INVALID,           # the stream depot
    }
    for name, expected in refused.items():
        assert tree.set_info(fid, wire.INFO_FILE, LINK, link_info(name)).status == expected, name
    # a name longer than the buffer it is in
    lying = struct.pack("<B7xQI", 0, 0, 4000) + wire.utf16("g.txt")
    assert tree.set_info(fid, wire.INFO_FILE, LINK, lying).status == wire.STATUS_INVALID_PARAMETER
    assert not (share.parent / "outside.txt").exists()
    assert sorted(os.listdir(share)) == [".smbring-streams", "d", "f.txt"]


def test_a_link_needs_a_writable_share(tmp_path):
    share = tmp_path / "share"
    share.mkdir()
    (share / "f.txt").write_bytes(b"x")
    proc, port, _log = spawn(tmp_path, str(share), "--share", "share", "--read-only")
    try:
        with RawClient(port) as c:
            c.negotiate()
            t = c.tree(c.logon(USER, PASSWORD), "share")
            fid = t.open("f.txt", wire.GENERIC_READ)
            assert t.set_info(fid, wire.INFO_FILE, LINK, link_info("g.txt")).status == wire.STATUS_ACCESS_DENIED
        assert os.listdir(share) == ["f.txt"]
    finally:
        stop(proc)


def test_a_link_through_a_symlink_never_names_a_file_outside(tree, server, tmp_path):
    """A symlink in the share pointing out of it cannot be opened; one pointing inside is
    followed to open, and the link made is of the name opened, never of a file outside."""
    outside = tmp_path / "secret.txt"
    outside.write_bytes(b"secret")
    os.symlink(outside, server["share"] / "escape")
    assert tree.create("escape", RW).status != wire.STATUS_SUCCESS
    (server["share"] / "real.txt").write_bytes(b"inside")
    os.symlink("real.txt", server["share"] / "alias")
    fid = tree.open("alias", RW)
    assert tree.set_info(fid, wire.INFO_FILE, LINK, link_info("second")).status == wire.STATUS_SUCCESS
    assert (server["share"] / "second").read_bytes() == b"inside"
    assert os.stat(outside).st_nlink == 1


# -- repeated separators ---------------------------------------------------------------------
def test_repeated_separators_are_one(tree, server):
    (server["share"] / "d" / "e").mkdir(parents=True)
    fid = tree.open("d\\\\e\\\\\\f.txt", RW, wire.FILE_CREATE)
    tree.close(fid)
    assert (server["share"] / "d" / "e" / "f.txt").exists()
    tree.close(tree.open("d\\e\\\\", options=wire.FILE_DIRECTORY_FILE))     # trailing ones too
    # still no way around the other rules
    assert tree.create("d\\\\..\\\\..\\x", RW, wire.FILE_CREATE).status == wire.STATUS_OBJECT_PATH_SYNTAX_BAD
    assert tree.create("\\\\d\\f.txt", RW, wire.FILE_CREATE).status == wire.STATUS_INVALID_PARAMETER
