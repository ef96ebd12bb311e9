"""QUERY_DIRECTORY through the sans-I/O connection (MS-SMB2 3.3.5.18, MS-FSCC 2.4) on a real
directory: the information classes, patterns, continuing and restarting an enumeration, single
entries, output buffers too small, and the stream store a listing never shows."""
import os
import struct

import pytest
from sansio_client import FILE_DIRECTORY_FILE
from smbcore import query_directory_body

from smbring.smb import wire
from smbring.smb.fs import STREAMS_DIR

RESTART_SCANS, RETURN_SINGLE_ENTRY, REOPEN = 0x1, 0x2, 0x10
# class -> where FileNameLength is and where the name starts in an entry
NAME_AT = {1: (60, 64), 2: (60, 68), 3: (60, 94), 12: (8, 12), 37: (60, 104), 38: (60, 80)}
FILES = {"a.txt": b"a" * 10, "abc": b"", "B.TXT": b"b" * 5000, "long name of a file.text": b"x"}


@pytest.fixture
def share(share):
    """The share with the files these tests use."""
    (share / "dir").mkdir()
    for name, data in FILES.items():
        (share / "dir" / name).write_bytes(data)
    (share / "dir" / "sub").mkdir()
    return share


@pytest.fixture
def dirfid(client):
    return client.open("dir", options=FILE_DIRECTORY_FILE)


def entries(buf: bytes, klass: int = 37) -> list[tuple[str, bytes]]:
    """(name, the entry's bytes) of each entry, following NextEntryOffset."""
    length_at, name_at = NAME_AT[klass]
    out, pos = [], 0
    while True:
        next_offset = struct.unpack_from("<I", buf, pos)[0]
        assert pos % 8 == 0
        length = struct.unpack_from("<I", buf, pos + length_at)[0]
        out.append((buf[pos + name_at:pos + name_at + length].decode("utf-16-le"), buf[pos:pos + name_at + length]))
        if not next_offset:
            assert pos + name_at + length == len(buf)
            return out
        pos += next_offset


def names(buf: bytes, klass: int = 37) -> list[str]:
    return [name for name, _ in entries(buf, klass)]


def listing(client, fid, pattern="*", klass=37, flags=0, out_len=65536) -> tuple[int, list[str]]:
    status, buf = client.query_directory(fid, pattern, klass, flags, out_len)
    return status, (names(buf, klass) if status == 0 else [])


ALL = sorted([".", ".."] + list(FILES) + ["sub"])


@pytest.mark.parametrize("klass", sorted(NAME_AT))
def test_every_class_lists_every_name(client, dirfid, klass):
    status, found = listing(client, dirfid, klass=klass)
    assert status == 0 and sorted(found) == ALL
    assert listing(client, dirfid, klass=klass)[0] == wire.STATUS_NO_MORE_FILES


@pytest.mark.parametrize("klass", [37, 38])
def test_id_classes_carry_the_inode(client, dirfid, share, klass):
    _status, buf = client.query_directory(dirfid, "abc", klass)
    [(_name, entry)] = entries(buf, klass)
    file_id_at = 96 if klass == 37 else 72
    assert struct.unpack_from("<Q", entry, file_id_at)[0] == (share / "dir" / "abc").stat().st_ino


def test_an_entry_tells_size_and_attributes(client, dirfid):
    _status, buf = client.query_directory(dirfid, "*", 1)
    by_name = dict(entries(buf, 1))
    size, _alloc, attrs = struct.unpack_from("<QQI", by_name["B.TXT"], 40)
    assert (size, attrs) == (5000, wire.ATTR_ARCHIVE)
    size, alloc, attrs = struct.unpack_from("<QQI", by_name["sub"], 40)
    assert (size, alloc, attrs) == (0, 0, wire.ATTR_DIRECTORY)


def test_both_classes_carry_an_8_3_name(client, dirfid):
    _status, buf = client.query_directory(dirfid, "long*", 3)
    [(_name, entry)] = entries(buf, 3)
    short_length = entry[68]
    short = entry[70:70 + short_length].decode("utf-16-le")
    assert "~" in short and len(short) <= 12


@pytest.mark.parametrize("klass", [0, 4, 39, 255])
def test_an_unknown_class(client, dirfid, klass):
    assert client.query_directory(dirfid, klass=klass)[0] == wire.STATUS_INVALID_INFO_CLASS


@pytest.mark.parametrize("pattern, expected", [
    ("*", ALL),
    ("*.*", ALL),
    ("<", ALL),
    ("*.txt", ["B.TXT", "a.txt"]),             # case-insensitive
    ("A.TXT", ["a.txt"]),
    ("a?c", ["abc"]),
    ("a>c", ["abc"]),                           # DOS_QM
    ('a"txt', ["a.txt"]),                       # DOS_DOT
    ("<.text", ["long name of a file.text"]),   # DOS_STAR
    ("s*", ["sub"]),
])
def test_patterns(client, dirfid, pattern, expected):
    status, found = listing(client, dirfid, pattern)
    assert status == 0 and sorted(found) == sorted(expected)


def test_a_pattern_matching_nothing_is_no_such_file(client, dirfid):
    assert listing(client, dirfid, "nothing*")[0] == wire.STATUS_NO_SUCH_FILE


def test_an_enumeration_continues_until_no_more_files_then_restarts(client, dirfid):
    first = listing(client, dirfid, flags=RETURN_SINGLE_ENTRY)[1]
    rest = [listing(client, dirfid, flags=RETURN_SINGLE_ENTRY)[1] for _ in range(len(ALL) - 1)]
    assert all(len(one) == 1 for one in [first] + rest)
    assert sorted(first + sum(rest, [])) == ALL
    assert listing(client, dirfid, flags=RETURN_SINGLE_ENTRY)[0] == wire.STATUS_NO_MORE_FILES
    status, again = listing(client, dirfid, flags=RESTART_SCANS)
    assert status == 0 and sorted(again) == ALL


def test_a_new_pattern_takes_effect_only_on_restart_or_reopen(client, dirfid):
    assert listing(client, dirfid, "a*", flags=RETURN_SINGLE_ENTRY)[1] == ["a.txt"]
    assert listing(client, dirfid, "zzz")[1] == ["abc"]           # the enumeration goes on
    assert listing(client, dirfid, "B*", flags=RESTART_SCANS)[1] == ["B.TXT"]
    assert listing(client, dirfid, "s*", flags=REOPEN)[1] == ["sub"]


def test_an_output_buffer_too_small_for_one_entry(client, dirfid):
    assert client.query_directory(dirfid, "a.txt", 37, out_len=50)[0] == wire.STATUS_INFO_LENGTH_MISMATCH
    status, found = listing(client, dirfid, "a.txt")
    assert status == 0 and found == ["a.txt"]      # nothing was lost


def test_an_output_buffer_with_room_for_some_entries(client, dirfid):
    room = 2 * 112                                 # two entries with short names (".", "..")
    status, found = listing(client, dirfid, out_len=room)
    assert status == 0 and found == [".", ".."]
    status, rest = listing(client, dirfid)
    assert sorted(found + rest) == ALL


def test_a_file_is_no_directory_to_list(client):
    fid = client.open("dir\\abc")
    assert client.query_directory(fid)[0] == wire.STATUS_INVALID_PARAMETER


def test_a_pattern_outside_the_message(client, dirfid):
    body = bytearray(query_directory_body(dirfid, "*"))
    struct.pack_into("<HH", body, 24, 96, 100)
    assert client.request(wire.QUERY_DIRECTORY, bytes(body))[0] == wire.STATUS_INVALID_PARAMETER


def test_an_output_buffer_over_max_transact_size(clients):
    c = clients(credits=300)                    # enough for the CreditCharge
    fid = c.open("dir", options=FILE_DIRECTORY_FILE)
    status, _ = c.request(wire.QUERY_DIRECTORY, query_directory_body(fid, output_length=(8 << 20) + 1), charge=129)
    assert status == wire.STATUS_INVALID_PARAMETER
    status, _ = c.request(wire.QUERY_DIRECTORY, query_directory_body(fid, output_length=8 << 20), charge=128)
    assert status == wire.STATUS_SUCCESS


def test_names_deleted_after_the_scan_began_are_skipped(client, dirfid, share):
    assert len(listing(client, dirfid, flags=RETURN_SINGLE_ENTRY)[1]) == 1
    os.remove(share / "dir" / "abc")
    rest = listing(client, dirfid)[1]
    assert "abc" not in rest and len(rest) == len(ALL) - 2


def test_the_stream_store_is_never_listed_at_the_root(client, share):
    assert client.create("dir\\abc:stream")[0] == 0
    assert (share / STREAMS_DIR).is_dir()
    root = client.open("", options=FILE_DIRECTORY_FILE)
    status, found = listing(client, root)
    assert status == 0 and sorted(found) == [".", "..", "dir"]
    assert listing(client, root, STREAMS_DIR, flags=RESTART_SCANS)[0] == wire.STATUS_NO_SUCH_FILE
    assert listing(client, root, ".smbring*", flags=RESTART_SCANS)[0] == wire.STATUS_NO_SUCH_FILE


def test_a_name_that_is_not_utf8_is_listed_not_fatal(client, share):
    """A name made on the server that is not UTF-8 (a byte 0xFF): the listing goes on, and the
    entry shows with the byte as a lone surrogate (U+DCFF), as change notifications show it,
    instead of failing the whole listing for everyone."""
    os.close(os.open(os.fsencode(share / "dir") + b"/bad\xff", os.O_CREAT | os.O_WRONLY, 0o644))
    fid = client.open("dir", options=FILE_DIRECTORY_FILE)
    for klass in NAME_AT:
        status, buf = client.query_directory(fid, "*", klass, RESTART_SCANS)
        assert status == 0
        length_at, name_at = NAME_AT[klass]
        found = [e for _, e in entries_raw(buf, klass) if e == "bad\udcff".encode("utf-16-le", "surrogatepass")]
        assert len(found) == 1, klass


def entries_raw(buf: bytes, klass: int):
    """(offset, the name's UTF-16 bytes) of each entry, without decoding the names."""
    length_at, name_at = NAME_AT[klass]
    out, pos = [], 0
    while True:
        next_offset = struct.unpack_from("<I", buf, pos)[0]
        length = struct.unpack_from("<I", buf, pos + length_at)[0]
        out.append((pos, bytes(buf[pos + name_at:pos + name_at + length])))
        if not next_offset:
            assert pos + name_at + length == len(buf)
            return out
        pos += next_offset


def test_a_short_name_fits_its_field_whatever_upper_case_makes_of_the_name(client, share):
    """Eight "ffi" ligatures are an 8-character name whose upper case has 24 characters: its
    short name must still be an 8.3 name of at most 12 characters (24 bytes, the field's size),
    or the entry's layout breaks."""
    name = "\ufb03" * 8
    (share / "dir" / name).write_bytes(b"")
    fid = client.open("dir", options=FILE_DIRECTORY_FILE)
    for klass in (3, 37):
        status, buf = client.query_directory(fid, "*", klass, RESTART_SCANS)
        assert status == 0
        by_name = dict(entries(buf, klass))
        entry = by_name[name]
        short_len = entry[68]
        assert 0 < short_len <= 24
        short = entry[70:70 + short_len].decode("utf-16-le")
        assert "~" in short and short.isascii()
