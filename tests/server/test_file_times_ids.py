"""When writes show in LastWriteTime, FileIds that agree across every query, and the server's
own extended attributes, through a real `smbring serve` and a raw SMB2 client.

Write times follow Windows Server 2016 and Samba's smbd (`smb.write_times`): a handle's
first write shows two seconds later, later ones when it closes (as the time of the close);
FLUSH, the end of file and FileBasicInformation show a pending write at once; a write time a
client set stays. These tests wait for the two seconds: each sleeps about three."""
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
DELAY = 2.0                     # smb.write_times.DELAY_NS
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
def test_a_first_write_shows_two_seconds_later_everywhere_and_on_disk_at_close(tree, server):
    fid, created = new_file(tree, "w.txt")
    assert tree.write(fid, b"data").status == wire.STATUS_SUCCESS
    # not yet: not through the handle, nor the name, nor the directory listing
    assert write_time(tree, fid) == created
    assert write_time_by_name(tree, "w.txt") == created
    assert listed(tree, "w.txt")[0] == created
    time.sleep(DELAY + 0.5)
    shown = write_time(tree, fid)
    assert shown > created
    assert write_time_by_name(tree, "w.txt") == shown
    assert listed(tree, "w.txt")[0] == shown
    # the close owes nothing more: the time stays, and the disk gets it
    assert close_times(tree, fid)[0] == shown
    assert nt_of_unix_ns(os.stat(server["share"] / "w.txt").st_mtime_ns) == shown
    assert write_time_by_name(tree, "w.txt") == shown


def test_later_writes_of_a_handle_show_only_at_its_close_as_the_time_of_the_close(tree, server):
    fid, created = new_file(tree, "w2.txt")
    tree.write(fid, b"one")
    time.sleep(DELAY + 0.5)
    first = write_time(tree, fid)
    assert first > created
    assert tree.write(fid, b"two", 3).status == wire.STATUS_SUCCESS
    time.sleep(DELAY + 0.5)
    assert write_time(tree, fid) == first            # a second write does not show by itself
    before_close = nt_of_unix_ns(time.time_ns())
    closed, size = close_times(tree, fid)
    assert size == 6
    assert closed >= before_close                    # the close showed it, as its own time
    assert nt_of_unix_ns(os.stat(server["share"] / "w2.txt").st_mtime_ns) == closed


def test_flush_end_of_file_and_basic_information_show_a_pending_write_at_once(tree):
    def pending() -> tuple[bytes, int]:
        fid, created = new_file(tree, f"p{time.monotonic_ns()}.txt")
        time.sleep(0.02)
        tree.write(fid, b"x")
        assert write_time(tree, fid) == created
        return fid, created

    fid, created = pending()
    assert tree.flush(fid).status == wire.STATUS_SUCCESS
    flushed = write_time(tree, fid)
    assert flushed > created
    assert close_times(tree, fid)[0] == flushed     # nothing left for the close

    fid, created = pending()
    assert tree.set_info(fid, wire.INFO_FILE, EOF, struct.pack("<Q", 1)).status == 0   # the same size
    assert write_time(tree, fid) > created
    tree.close(fid)

    fid, created = pending()
    assert set_basic(tree, fid) == wire.STATUS_SUCCESS      # every time 0: sets nothing, shows it
    assert write_time(tree, fid) > created
    tree.close(fid)


def test_a_write_time_set_by_another_handle_outlasts_the_writer_close(tree, server):
    """The writer's update showed (end of file); another handle then sets the write time; the
    writer's close leaves it (smbtorture's delayed-write-vs-seteof)."""
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
    tree.flush(fid)
    time.sleep(DELAY + 0.5)
    assert write_time(tree, fid) == chosen
    assert close_times(tree, fid)[0] == chosen


def test_a_handle_gone_with_its_connection_still_gives_the_file_its_write_time(server):
    """No CLOSE: the connection drops; the write still reaches the file's time."""
    c = RawClient(server["port"])
    c.negotiate()
    t = c.tree(c.logon(USER, PASSWORD), "share")
    fid, created = new_file(t, "dropped.txt")
    t.write(fid, b"x")
    c.close()
    path = server["share"] / "dropped.txt"
    deadline = time.monotonic() + 10
    while nt_of_unix_ns(path.stat().st_mtime_ns) <= created and time.monotonic() < deadline:
        time.sleep(0.05)
    assert nt_of_unix_ns(path.stat().st_mtime_ns) > created


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


@pytest.mark.parametrize("name", ["DOSATTRIB", "dosattrib", "SAMBA_PAI", "SAMBA_STREAMS", "DosStream.x:$DATA",
                                  "dosstream.anything"])
def test_sambas_metadata_is_never_an_ea_a_client_sets_or_sees(tree, server, name):
    """Samba keeps a file's DOS attributes, inherited-ACL flags and streams in user.* xattrs
    of its own (user.DOSATTRIB, user.SAMBA_PAI, user.DosStream.*): where Samba serves the same
    directory, a client of this server must not forge them as EAs, nor read them as EAs; as
    Samba refuses and hides them (its samba_private_attr_name)."""
    fid, _ = new_file(tree, "samba-ea.txt")
    path = server["share"] / "samba-ea.txt"
    kept = b"what samba stored"
    os.setxattr(path, "user." + name, kept)
    assert tree.set_info(fid, wire.INFO_FILE, FULL_EA, full_ea(name, b"forged")).status == \
        wire.STATUS_ACCESS_DENIED
    eas = tree.query_info(fid, wire.INFO_FILE, FULL_EA).buffer(2)
    assert kept not in eas and name.encode().lower() not in eas.lower()
    tree.close(fid)
    assert os.getxattr(path, "user." + name) == kept
