"""When writes show in LastWriteTime, FileIds that agree across every query, and the server's
own extended attributes, through a real `smbring serve` and a raw SMB2 client.

Write times follow MS-FSA 2.1.4.17 as Windows Server 2022 and Samba 4.23 do: every
write, and a change of the end of file, shows at once, through every handle, the name and the
directory listing; FLUSH, CLOSE and a FileBasicInformation that sets no time move nothing; a
write time a client set on a handle stays through that handle's own writes."""
from __future__ import annotations

import os
import struct
import sys
import time
from pathlib import Path

import pytest

from servers import PASSWORD, USER
from smbring.smb import wire

sys.path.insert(0, str(Path(__file__).parent.parent / "security"))   # raw.py
from raw import RawClient  # noqa: E402

BASIC, INTERNAL, EOF, ALL, FULL_EA, ID_INFO = 4, 6, 20, 18, 15, 59
LIST_DIRECTORY, READ_ATTRIBUTES = 0x1, 0x80
RW = wire.GENERIC_READ | wire.GENERIC_WRITE | wire.DELETE
GRANULE = 0.02                  # past the file system's timestamp granularity
UNIX_EPOCH_NT = 116_444_736_000_000_000


@pytest.fixture
def tree(server):
    c = RawClient(server["port"])
    c.negotiate()
    t = c.tree(c.logon(USER, PASSWORD), "share")
    yield t
    c.close()


def write_time(tree, fid) -> int:
    r = tree.query_info(fid, wire.INFO_FILE, BASIC)
    assert r.status == wire.STATUS_SUCCESS, r
    return struct.unpack_from("<Q", r.buffer(2), 16)[0]


def write_time_by_name(tree, name: str) -> int:
    """Through a handle of its own (the file's name), as Explorer's properties look."""
    fid = tree.open(name, READ_ATTRIBUTES)
    try:
        return write_time(tree, fid)
    finally:
        tree.close(fid)


def listed(tree, name: str) -> tuple[int, int]:
    """(LastWriteTime, FileId) of the file's FileIdBothDirectoryInformation entry."""
    d = tree.open("", LIST_DIRECTORY | READ_ATTRIBUTES, options=wire.FILE_DIRECTORY_FILE)
    try:
        r = tree.query_directory(d, name, klass=37)
        assert r.status == wire.STATUS_SUCCESS, r
        entry = r.buffer(2)
        return struct.unpack_from("<Q", entry, 24)[0], struct.unpack_from("<Q", entry, 96)[0]
    finally:
        tree.close(d)


def set_basic(tree, fid, written: int = 0, accessed: int = 0) -> int:
    return tree.set_info(fid, wire.INFO_FILE, BASIC, struct.pack("<QQQQII", 0, accessed, written, 0, 0, 0)).status


def close_times(tree, fid) -> tuple[int, int]:
    """CLOSE with POSTQUERY_ATTRIB: (LastWriteTime, EndOfFile) it reports."""
    r = tree.request(wire.CLOSE, struct.pack("<HHI", 24, wire.CLOSE_FLAG_POSTQUERY_ATTRIB, 0) + fid)
    assert r.status == wire.STATUS_SUCCESS, r
    return struct.unpack_from("<Q", r.body, 24)[0], struct.unpack_from("<Q", r.body, 48)[0]


def nt_of_unix_ns(ns: int) -> int:
    return ns // 100 + UNIX_EPOCH_NT


def new_file(tree, name: str) -> tuple[bytes, int]:
    """A new file, open for writing, and its write time as created."""
    r = tree.create(name, RW, wire.FILE_CREATE)
    assert r.status == wire.STATUS_SUCCESS, r
    return r.file_id, struct.unpack_from("<Q", r.body, 24)[0]


# -- when a write shows ----------------------------------------------------------------------
def test_every_write_shows_at_once_everywhere_and_a_close_or_flush_moves_nothing(tree, server):
    fid, created = new_file(tree, "w.txt")
    time.sleep(GRANULE)
    assert tree.write(fid, b"data").status == wire.STATUS_SUCCESS
    first = write_time(tree, fid)
    assert first > created
    assert write_time_by_name(tree, "w.txt") == first
    assert listed(tree, "w.txt")[0] == first
    time.sleep(GRANULE)
    tree.write(fid, b"more", 4)                 # a second write through the handle shows too
    second = write_time(tree, fid)
    assert second > first
    time.sleep(GRANULE)
    assert tree.flush(fid).status == wire.STATUS_SUCCESS
    assert set_basic(tree, fid) == wire.STATUS_SUCCESS     # every time 0: changes nothing
    assert write_time(tree, fid) == second
    time.sleep(GRANULE)
    assert close_times(tree, fid) == (second, 8)            # nothing was left for the close
    assert nt_of_unix_ns(os.stat(server["share"] / "w.txt").st_mtime_ns) == second


def test_setting_the_end_of_file_shows_even_at_the_same_size(tree):
    fid, created = new_file(tree, "eof.txt")
    time.sleep(GRANULE)
    assert tree.set_info(fid, wire.INFO_FILE, EOF, struct.pack("<Q", 0)).status == 0
    assert write_time(tree, fid) > created
    tree.close(fid)


def test_a_write_time_set_by_another_handle_outlasts_the_writer_close(tree, server):
    """smbtorture's delayed-write-vs-seteof as Windows Server 2022 answers it."""
    fid, created = new_file(tree, "set.txt")
    tree.write(fid, b"s")
    tree.set_info(fid, wire.INFO_FILE, EOF, struct.pack("<Q", 1))
    other = tree.open("set.txt", wire.FILE_WRITE_ATTRIBUTES)
    chosen = nt_of_unix_ns(time.time_ns()) + 86400 * 10**7
    assert set_basic(tree, other, written=chosen) == wire.STATUS_SUCCESS
    tree.close(other)
    assert write_time(tree, fid) == chosen
    assert close_times(tree, fid)[0] == chosen
    assert nt_of_unix_ns(os.stat(server["share"] / "set.txt").st_mtime_ns) == chosen


def test_a_handle_that_set_the_write_time_never_moves_it_with_its_writes(tree):
    fid, _created = new_file(tree, "sticky.txt")
    chosen = 130_000_000_000_000_000
    assert set_basic(tree, fid, written=chosen) == wire.STATUS_SUCCESS
    tree.write(fid, b"more")
    tree.set_info(fid, wire.INFO_FILE, EOF, struct.pack("<Q", 2))
    tree.flush(fid)
    assert write_time(tree, fid) == chosen
    assert close_times(tree, fid)[0] == chosen


# -- FileIds ---------------------------------------------------------------------------------
def on_disk_id(r) -> int:
    """The QFid answer of a CREATE response (its first 8 bytes: the file's id)."""
    offset, length = struct.unpack_from("<II", r.body, 80)
    contexts = r.raw[offset:offset + length]
    while contexts:
        nxt, name_off, name_len, _r, data_off, data_len = struct.unpack_from("<IHHHHI", contexts, 0)
        if contexts[name_off:name_off + name_len] == b"QFid":
            return struct.unpack_from("<Q", contexts, data_off)[0]
        if not nxt:
            break
        contexts = contexts[nxt:]
    raise AssertionError("no QFid answer")


def ids_of(tree, fid) -> set[int]:
    internal = struct.unpack_from("<Q", tree.query_info(fid, wire.INFO_FILE, INTERNAL).buffer(2))[0]
    every = struct.unpack_from("<Q", tree.query_info(fid, wire.INFO_FILE, ALL).buffer(2), 64)[0]
    volume, low, high = struct.unpack_from("<QQQ", tree.query_info(fid, wire.INFO_FILE, ID_INFO).buffer(2))
    assert high == 0 and volume
    return {internal, every, low}


@pytest.mark.parametrize("directory", [False, True])
def test_a_file_and_its_streams_have_one_file_id_in_every_query(tree, server, directory):
    options = wire.FILE_DIRECTORY_FILE if directory else 0
    r = tree.create("base", RW, wire.FILE_CREATE, options, contexts=[(b"QFid", b"")])
    assert r.status == wire.STATUS_SUCCESS, r
    expected = on_disk_id(r)
    assert expected == os.stat(server["share"] / "base").st_ino
    assert ids_of(tree, r.file_id) == {expected}
    tree.close(r.file_id)
    assert listed(tree, "base")[1] == expected
    for disposition in (wire.FILE_CREATE, wire.FILE_OPEN):      # a new stream, then again
        s = tree.create("base:extra", RW, disposition, contexts=[(b"QFid", b"")])
        assert s.status == wire.STATUS_SUCCESS, s
        assert on_disk_id(s) == expected
        assert ids_of(tree, s.file_id) == {expected}
        tree.close(s.file_id)


# -- the server's own extended attributes ----------------------------------------------------
def full_ea(name: str, value: bytes) -> bytes:
    encoded = name.encode("ascii")
    return struct.pack("<IBBH", 0, 0, len(encoded), len(value)) + encoded + b"\0" + value


@pytest.mark.parametrize("name", ["smbring.sd", "SMBRING.SD", "Smbring.Dos", "smbring.streams"])
def test_the_server_metadata_is_never_an_ea_a_client_sets_or_sees(tree, server, name):
    """The security descriptor and DOS information live in user.smbring.* xattrs: a client
    that names one as an EA (any spelling: EA names are case-insensitive) is refused, and
    none is ever listed."""
    fid, _ = new_file(tree, "ea.txt")
    assert tree.set_info(fid, wire.INFO_FILE, FULL_EA, full_ea("void", b"testme")).status == 0
    assert set_basic(tree, fid, accessed=nt_of_unix_ns(time.time_ns())) == 0    # a user.smbring.dos
    assert tree.set_info(fid, wire.INFO_FILE, FULL_EA, full_ea(name, b"evil")).status == \
        wire.STATUS_ACCESS_DENIED
    eas = tree.query_info(fid, wire.INFO_FILE, FULL_EA).buffer(2)
    assert b"void" in eas and b"smbring" not in eas.lower()
    tree.close(fid)
    path = server["share"] / "ea.txt"
    assert all(os.getxattr(path, x) != b"evil" for x in os.listxattr(path))
