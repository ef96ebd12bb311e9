"""Listings in batches (smbring._dirent): the entries a batch writes are byte for byte those
the general path (entry by entry, smb.fileinfo.dir_entry) writes, for every class and for
entries of every kind (DOS information stored or not, read-only, hidden, directories,
symlinks in and out of the share, non-ASCII and astral names, short names too long for their
field); a listing of thousands of files resumed across small buffers names each exactly once
with the stat's sizes and FileIds; the C functions refuse what a caller must not give them."""
import os
import struct
import time

import pytest
from sansio_client import FILE_DIRECTORY_FILE
from test_directory import NAME_AT, entries

from smbring import _dirent
from smbring.smb import wire
from smbring.smb.fileinfo import short_name

RESTART_SCANS, RETURN_SINGLE_ENTRY = 0x1, 0x2
DOS = struct.Struct("<IQQQQ")
DOS_XATTR = "user.smbring.dos"
MTIME_NS = 1_000_000_000_123_456_700        # 2001, a time set on every entry


def make_entries(d):
    """A directory with one entry of each kind a listing must get right."""
    d.mkdir()
    (d / "plain.txt").write_bytes(b"x" * 10)
    (d / "readonly").write_bytes(b"")
    os.chmod(d / "readonly", 0o444)
    (d / ".dotfile").write_bytes(b"")
    (d / "sub").mkdir()
    (d / "rosub").mkdir()
    os.setxattr(d / "rosub", DOS_XATTR, DOS.pack(wire.ATTR_READONLY, 0, 0, 0, 0))
    for name in ("with-dos", "stale-change", "bad-dos", "UPPER.TXT", "a.b.c", "..dots", "x~y",
                 "ends.", "long name of a file.text", "Ünïcödé name.txt", "emoji 😀.txt",
                 "big"):
        (d / name).write_bytes(b"")
    os.truncate(d / "big", 10**9 + 1)
    os.utime(d / "with-dos", ns=(MTIME_NS, MTIME_NS))
    os.setxattr(d / "with-dos", DOS_XATTR, DOS.pack(
        wire.ATTR_HIDDEN | 0x4 | wire.ATTR_READONLY | 0x200, 130_000_000_000_000_000,
        131_000_000_000_000_000, MTIME_NS, 1 << 20))
    os.setxattr(d / "stale-change", DOS_XATTR, DOS.pack(0, 0, 131_000_000_000_000_000, 5, 0))
    os.setxattr(d / "bad-dos", DOS_XATTR, b"short")
    os.symlink("plain.txt", d / "link-in")
    os.symlink("/etc/passwd", d / "link-out")
    os.symlink("nowhere", d / "dangling")
    os.mkfifo(d / "fifo")
    # (an access time ahead of the change time: relatime leaves it be when a listing reads a
    # symlink, so two listings see the same)
    later = time.time_ns() + 3600 * 10**9
    for p in d.iterdir():
        os.utime(p, ns=(later, MTIME_NS), follow_symlinks=False)


@pytest.fixture
def share(share):
    make_entries(share / "dir")
    return share


def listing(client, klass, flags=0, out_len=65536):
    fid = client.open("dir", options=FILE_DIRECTORY_FILE)
    found, status = [], 0
    while True:
        status, buf = client.query_directory(fid, "*", klass, flags, out_len)
        if status:
            break
        found += [(name, entry[4:]) for name, entry in entries(buf, klass)]   # no NextEntryOffset
        flags &= ~RESTART_SCANS
    assert status == wire.STATUS_NO_MORE_FILES
    return found


@pytest.mark.parametrize("klass", sorted(NAME_AT))
def test_a_batch_writes_what_the_general_path_writes(clients, share, klass):
    """`hide files` with a pattern that matches nothing sends the listing down the general
    path, entry by entry: both listings must be the same bytes."""
    batched = listing(clients(), klass)
    general = listing(clients(share={"hide_files": ["no such name"]}), klass)
    assert [n for n, _ in batched] == [n for n, _ in general]
    assert len(batched) == len(os.listdir(share / "dir")) + 2
    for (name, ours), (_name, theirs) in zip(batched, general):
        assert ours == theirs, name


@pytest.mark.parametrize("out_len", [200, 1000])
def test_small_buffers_and_single_entries_give_the_same_entries(clients, share, out_len):
    whole = listing(clients(), 37)
    assert listing(clients(), 37, out_len=out_len) == whole
    assert listing(clients(), 37, flags=RETURN_SINGLE_ENTRY) == whole


def test_attributes_of_what_the_batch_sees(client, share):
    by_name = {name: entry for name, entry in listing(client, 37)}

    def field(name, fmt, at):
        return struct.unpack_from(fmt, by_name[name], at - 4)[0]
    attrs = {name: field(name, "<I", 56) for name in by_name}
    assert attrs["plain.txt"] == wire.ATTR_ARCHIVE
    assert attrs["readonly"] == wire.ATTR_ARCHIVE | wire.ATTR_READONLY
    assert attrs[".dotfile"] == wire.ATTR_ARCHIVE | wire.ATTR_HIDDEN
    assert attrs["sub"] == wire.ATTR_DIRECTORY
    assert attrs["rosub"] == wire.ATTR_DIRECTORY | wire.ATTR_READONLY
    # stored: hidden, system, sparse; READONLY of a file is its write bits (it has them)
    assert attrs["with-dos"] == wire.ATTR_HIDDEN | 0x4 | 0x200
    assert field("with-dos", "<Q", 8) == 130_000_000_000_000_000      # creation, as stored
    assert field("with-dos", "<Q", 32) == 131_000_000_000_000_000     # change, as stored
    assert field("with-dos", "<Q", 48) == 1 << 20                     # allocation, as reserved
    assert field("stale-change", "<Q", 32) != 131_000_000_000_000_000  # the file moved on since
    assert field("big", "<Q", 40) == 10**9 + 1
    assert field("plain.txt", "<Q", 24) == wire.nt_time(MTIME_NS)
    assert field("link-in", "<Q", 40) == 10                          # the target's size
    assert field("plain.txt", "<Q", 96) == (share / "dir" / "plain.txt").stat().st_ino
    short = by_name["long name of a file.text"]
    mangled = short[70 - 4:94 - 4].decode("utf-16-le")
    assert short[68 - 4] == 24 and mangled == short_name("long name of a file.text")
    assert mangled.startswith("LONGN~") and mangled.endswith(".TEX")


def test_a_pending_write_time_shows_in_the_listing(client, share):
    """While a handle's write is still to show (smb.write_times), the listing shows the time
    from before the write, not the kernel's."""
    fid = client.open("dir\\plain.txt", access=0x12019F)
    assert client.write(fid, b"more") == 0
    assert os.stat(share / "dir" / "plain.txt").st_mtime_ns != MTIME_NS
    by_name = {name: entry for name, entry in listing(client, 37)}
    assert struct.unpack_from("<Q", by_name["plain.txt"], 24 - 4)[0] == wire.nt_time(MTIME_NS)


def test_thousands_of_files_each_once_with_their_stat(client, share):
    big = share / "many"
    big.mkdir()
    for i in range(3000):
        (big / f"file {i:04d} with a longer name.dat").write_bytes(b"x" * (i % 7))
    fid = client.open("many", options=FILE_DIRECTORY_FILE)
    seen = []
    while True:
        status, buf = client.query_directory(fid, "*", 37, 0, 4096)
        if status:
            assert status == wire.STATUS_NO_MORE_FILES
            break
        for name, entry in entries(buf, 37):
            if name in (".", ".."):
                continue
            st = os.stat(big / name)
            size, alloc, _attrs = struct.unpack_from("<QQI", entry, 40)
            assert (size, struct.unpack_from("<Q", entry, 96)[0]) == (st.st_size, st.st_ino)
            assert alloc == (st.st_size + 4095) & ~4095
            seen.append(name)
    assert sorted(seen) == sorted(os.listdir(big)) and len(seen) == len(set(seen)) == 3000


def test_files_deleted_after_the_scan_began_are_not_listed(client, share):
    fid = client.open("dir", options=FILE_DIRECTORY_FILE)
    status, _buf = client.query_directory(fid, "*", 37, RETURN_SINGLE_ENTRY)
    assert status == 0
    os.unlink(share / "dir" / "plain.txt")
    os.unlink(share / "dir" / "big")
    status, buf = client.query_directory(fid, "*", 37)
    names = [n for n, _ in entries(buf, 37)]
    assert status == 0 and "plain.txt" not in names and "big" not in names and "with-dos" in names


# -- the C functions refuse what they must not be given ----------------------------------------

@pytest.mark.parametrize("name", ["..", ".", "", "a/b", "../etc", "x\0y", "n" * 256, b"bytes"])
def test_stat_entries_takes_one_component_only(share, name):
    fd = os.open(share / "dir", os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises((ValueError, TypeError)):
            _dirent.stat_entries(fd, ["plain.txt", name], 0, 2, DOS_XATTR)
    finally:
        os.close(fd)


def test_stat_entries_checks_its_descriptor_and_range(share):
    fd = os.open(share / "dir" / "plain.txt", os.O_RDONLY)
    try:
        with pytest.raises(OSError):
            _dirent.stat_entries(fd, ["plain.txt"], 0, 1, DOS_XATTR)
    finally:
        os.close(fd)
    for args in ((-1, ["a"], 0, 1), (0, ["a"], 2, 1), (0, ["a"], -1, 1), (0, ["a"], 0, -1)):
        with pytest.raises(ValueError):
            _dirent.stat_entries(*args, DOS_XATTR)
    dfd = os.open(share / "dir", os.O_RDONLY | os.O_DIRECTORY)
    try:
        records, _links = _dirent.stat_entries(dfd, ["plain.txt", "gone"], 0, 99, DOS_XATTR)
    finally:
        os.close(dfd)
    assert len(records) == 2 * _dirent.RECORD_SIZE          # the count is capped to the names
    assert struct.unpack_from(_dirent.RECORD, records, _dirent.RECORD_SIZE)[0] == 0   # gone


def test_encode_entries_checks_its_arguments(share):
    record = bytes(_dirent.RECORD_SIZE)

    def encode(records=record, names=("a",), start=0, klass=37, out=None, room=1000, last=-1):
        return _dirent.encode_entries(records, list(names), start, klass,
                                      bytearray() if out is None else out, room, last, False,
                                      True, lambda key: None, lambda name: name)
    assert encode() == (1, -1, _dirent.DONE)          # a gone entry: skipped
    for bad in (dict(records=record[:-1]), dict(start=1), dict(start=-1), dict(klass=4),
                dict(room=-1), dict(last=0), dict(out=bytearray(10), last=8),
                dict(out=bytearray(2000)), dict(names=())):
        with pytest.raises(ValueError):
            encode(**bad)
    with pytest.raises(TypeError):
        _dirent.encode_entries(record, ["a"], 0, 37, bytearray(), 100, -1, False, True, None, None)
    with pytest.raises(ValueError):
        _dirent.count_fitting(["a"], 0, 2, 37, 100, 0)
