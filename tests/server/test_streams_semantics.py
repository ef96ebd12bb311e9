"""How a file's named streams and the file itself behave together, as on Windows (MS-FSA)
and smbd: share modes between a stream's opens and its file's for delete (deleting a file
deletes its streams, so an open that may delete the file is refused while one of its streams
is open without FILE_SHARE_DELETE), a file deleted while a stream of it is open (the delete
waits for the stream's close; the stream's handle still reads, names of the file and its
streams answer STATUS_DELETE_PENDING meanwhile), and the stream names Windows refuses or
tells apart ("s:" with no type, a directory's "::$DATA"). Requests through smbprotocol
against a real `smbring serve`."""
from __future__ import annotations

import struct
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))
from servers import PASSWORD, USER, spawn, stop  # noqa: E402

pytest.importorskip("smbprotocol")

from smbprotocol_user import UserClient  # noqa: E402

READ_DATA, WRITE_DATA, DELETE, FILE_ALL = 0x1, 0x2, 0x10000, 0x001F01FF
READ_ATTRIBUTES = 0x80
SHARE_READ, SHARE_WRITE, SHARE_DELETE = 1, 2, 4
SHARE_ALL = 7
OPEN, CREATE, OPEN_IF = 1, 2, 3
DIRECTORY_FILE, DELETE_ON_CLOSE = 0x1, 0x1000
SHARING_VIOLATION = 0xC0000043
DELETE_PENDING = 0xC0000056
NAME_NOT_FOUND = 0xC0000034
NAME_INVALID = 0xC0000033
NOT_A_DIRECTORY = 0xC0000103
FILE_IS_A_DIRECTORY = 0xC00000BA


@pytest.fixture
def server(tmp_path):
    share = tmp_path / "share"
    share.mkdir()
    proc, port, _log = spawn(tmp_path, str(share), "--share", "share")
    try:
        yield {"port": port, "share": share}
    finally:
        stop(proc)


def client(server) -> UserClient:
    return UserClient("127.0.0.1", server["port"], USER, PASSWORD, "share")


def unlink(c: UserClient, name: str) -> int:
    """The NTSTATUS of deleting `name` as clients do: an open for DELETE, delete on close."""
    return c.status(name, DELETE, OPEN, options=DELETE_ON_CLOSE, share=SHARE_ALL)


def test_a_stream_open_without_share_delete_keeps_its_file_from_being_deleted(server):
    """An open of f:s that does not share delete: the file can be neither deleted nor opened
    for DELETE (it would delete the stream), whatever the file's own opens share; an open of
    the file without DELETE still opens."""
    with client(server) as c:
        s = c.open("f:s", READ_DATA | WRITE_DATA, CREATE, share=SHARE_READ | SHARE_WRITE)
        s.write(b"stream data", 0)
        assert unlink(c, "f") == SHARING_VIOLATION
        assert c.status("f", DELETE, OPEN, share=SHARE_ALL) == SHARING_VIOLATION
        assert c.status("f", READ_DATA, OPEN, share=SHARE_ALL) == 0
        s.close()
        assert (server["share"] / "f").exists()
        assert unlink(c, "f") == 0
        assert not (server["share"] / "f").exists()


def test_the_file_s_opens_do_not_keep_a_stream_from_being_opened_for_delete(server):
    """The other way round (as Windows and smbd): the file held open without FILE_SHARE_DELETE
    does not refuse an open of its stream that asks DELETE; the stream is deleted alone."""
    with client(server) as c:
        c.open("f:s", WRITE_DATA, CREATE).close()
        f = c.open("f", READ_DATA, OPEN, share=SHARE_READ)
        assert unlink(c, "f:s") == 0
        assert c.status("f:s", READ_DATA, OPEN) == NAME_NOT_FOUND
        f.close()
        assert (server["share"] / "f").exists()


def test_a_file_deleted_while_its_stream_is_open_waits_for_the_stream(server):
    """f deleted while f:s is open sharing delete: the delete succeeds, the stream's handle
    still reads its data, f and f:s answer DELETE_PENDING (not a new file made in f's
    place), and once the stream closes f and its stream are gone."""
    with client(server) as c:
        s = c.open("f:s", READ_DATA | WRITE_DATA, CREATE, share=SHARE_ALL)
        s.write(b"test data", 0)
        assert unlink(c, "f") == 0
        assert s.read(0, 9) == b"test data"
        assert c.status("f", READ_DATA, OPEN_IF) == DELETE_PENDING
        assert c.status("f:s", READ_DATA, OPEN_IF) == DELETE_PENDING
        assert (server["share"] / "f").exists()
        s.close()
        assert c.status("f", READ_DATA, OPEN) == NAME_NOT_FOUND
        assert not (server["share"] / "f").exists()


def test_a_deleted_file_goes_when_a_stream_that_deletes_itself_closes_last(server):
    """f:s opened with delete on close, then f deleted: the stream's close (here its
    client's disconnect) is f's last, and deletes f with its streams."""
    c = client(server)
    c.open("f:s", FILE_ALL, CREATE, options=DELETE_ON_CLOSE, share=SHARE_DELETE)
    with client(server) as other:
        assert unlink(other, "f") == 0
        c.close()
        assert other.status("f", READ_DATA, OPEN) == NAME_NOT_FOUND
    assert not (server["share"] / "f").exists()


def test_a_stream_is_no_directory(server):
    """A stream opened as a directory: NOT_A_DIRECTORY (Windows and smbd), and nothing made."""
    with client(server) as c:
        assert c.status("f:s", WRITE_DATA, CREATE, options=DIRECTORY_FILE) == NOT_A_DIRECTORY
        assert not (server["share"] / "f").exists()


def test_a_directory_has_no_data_stream(server):
    """d::$DATA names the directory's data stream, which it has not: FILE_IS_A_DIRECTORY, or
    NOT_A_DIRECTORY where a directory is asked for."""
    (server["share"] / "d").mkdir()
    with client(server) as c:
        assert c.status("d::$DATA", WRITE_DATA, OPEN) == FILE_IS_A_DIRECTORY
        assert c.status("d::$DATA", WRITE_DATA, OPEN, options=DIRECTORY_FILE) == NOT_A_DIRECTORY
        assert c.status("d", READ_ATTRIBUTES, OPEN) == 0


def test_a_stream_name_with_an_empty_type_is_invalid(server):
    """f:s: (a type separator and no type) is no name of f:s (Windows: OBJECT_NAME_INVALID),
    so it opens nothing the stream's share mode would have refused."""
    with client(server) as c:
        s = c.open("f:s", WRITE_DATA, CREATE, share=0)
        assert c.status("f:s:", READ_DATA, OPEN) == NAME_INVALID
        assert c.status("f:s:$DATA", READ_DATA, OPEN) == SHARING_VIOLATION
        s.close()
        assert c.status("f:s:$DATA", READ_DATA, OPEN) == 0


RENAME = 10             # FileRenameInformation
INFO_FILE = 1
STREAM_INFORMATION = 22
NAME_COLLISION = 0xC0000035
ACCESS_DENIED = 0xC0000022


def rename_info(new_name: str, replace: bool) -> bytes:
    """FileRenameInformation (SMB2 layout): ReplaceIfExists, RootDirectory 0, the name."""
    encoded = new_name.encode("utf-16-le")
    return struct.pack("<B7xQI", replace, 0, len(encoded)) + encoded


def stream_names(c: UserClient, f) -> list[str]:
    """FileStreamInformation's names, as the server lists them."""
    buf, names, offset = c.query_info(f, INFO_FILE, STREAM_INFORMATION), [], 0
    while True:
        following, length = struct.unpack_from("<II", buf, offset)
        names.append(buf[offset + 24:offset + 24 + length].decode("utf-16-le"))
        if not following:
            return sorted(names)
        offset += following


def test_a_stream_is_renamed_to_another_stream_of_its_file(server):
    """Through the stream's handle, ":new" (or ":new:$DATA") renames it among its file's
    streams; the data and the handle follow it. An existing stream is replaced only with
    ReplaceIfExists, never while it is open; a full name is refused."""
    with client(server) as c:
        s = c.open("f:a", READ_DATA | WRITE_DATA | DELETE, CREATE)
        s.write(b"stream a", 0)
        c.open("f:b", WRITE_DATA, CREATE).close()
        assert c.set_info(s, INFO_FILE, RENAME, rename_info(":b:$DATA", False)) == NAME_COLLISION
        held = c.open("f:b", READ_DATA, OPEN)
        assert c.set_info(s, INFO_FILE, RENAME, rename_info(":b", True)) == ACCESS_DENIED
        held.close()
        assert c.set_info(s, INFO_FILE, RENAME, rename_info(":b", True)) == 0
        assert stream_names(c, s) == ["::$DATA", ":b:$DATA"]
        assert c.set_info(s, INFO_FILE, RENAME, rename_info(":c", False)) == 0
        assert s.read(0, 8) == b"stream a"
        assert c.set_info(s, INFO_FILE, RENAME, rename_info("f:d", False)) == SHARING_VIOLATION
        assert c.set_info(s, INFO_FILE, RENAME, rename_info(":x/y", False)) == NAME_INVALID
        assert c.set_info(s, INFO_FILE, RENAME, rename_info(":..", False)) == NAME_INVALID
        s.close()
        assert c.status("f:b", READ_DATA, OPEN) == NAME_NOT_FOUND
        r = c.open("f:c", READ_DATA, OPEN)
        assert r.read(0, 8) == b"stream a"
        r.close()
    depot = server["share"] / ".smbring-streams"
    assert sorted(p.name for p in depot.glob("*/*")) == ["c"]


INVALID_PARAMETER = 0xC000000D


def test_a_stream_renamed_onto_the_data_stream_becomes_the_file_s_data(server):
    """"::$DATA" through a stream's handle (MS-FSA's stream rename with an empty name, as
    smbtorture's smb2.streams.rename2 ends): the file's data stream always exists, so only
    with ReplaceIfExists, and only while the file itself is not open and holds no data
    (INVALID_PARAMETER); then the stream's data is the file's, the stream is gone and the
    handle reads and writes the file. Another open of the stream could not follow it:
    ACCESS_DENIED meanwhile."""
    with client(server) as c:
        s = c.open("f:a", READ_DATA | WRITE_DATA | DELETE, CREATE, share=SHARE_ALL)
        s.write(b"stream a", 0)
        assert c.set_info(s, INFO_FILE, RENAME, rename_info("::$DATA", False)) == NAME_COLLISION
        f = c.open("f", READ_ATTRIBUTES, OPEN)
        assert c.set_info(s, INFO_FILE, RENAME, rename_info("::$DATA", True)) == INVALID_PARAMETER
        f.close()
        other = c.open("f:a", READ_ATTRIBUTES, OPEN, share=SHARE_ALL)   # (it would be left naming nothing)
        assert c.set_info(s, INFO_FILE, RENAME, rename_info("::$DATA", True)) == ACCESS_DENIED
        other.close()
        assert c.set_info(s, INFO_FILE, RENAME, rename_info("::$DATA", True)) == 0
        assert s.read(0, 8) == b"stream a"
        s.write(b"!", 8)
        assert stream_names(c, s) == ["::$DATA"]
        assert c.status("f:a", READ_DATA, OPEN) == NAME_NOT_FOUND
        assert c.status("f", READ_DATA, OPEN, share=SHARE_ALL) == 0
        s.close()
        assert unlink(c, "f") == 0      # (no open left behind on the file)
    assert not (server["share"] / "f").exists()
    assert not list((server["share"] / ".smbring-streams").glob("*/*"))


def test_a_stream_is_not_renamed_onto_a_data_stream_that_holds_data(server):
    """A file with data, or a directory (which has no data stream): INVALID_PARAMETER, the
    stream and the file as they were."""
    with client(server) as c:
        f = c.open("g", WRITE_DATA, CREATE)
        f.write(b"file data", 0)
        f.close()
        s = c.open("g:t", READ_DATA | WRITE_DATA | DELETE, CREATE)
        s.write(b"stream", 0)
        assert c.set_info(s, INFO_FILE, RENAME, rename_info("::$DATA", True)) == INVALID_PARAMETER
        assert s.read(0, 6) == b"stream"
        s.close()
        c.open("d", READ_DATA, CREATE, options=DIRECTORY_FILE).close()
        d = c.open("d:s", WRITE_DATA | DELETE, CREATE)
        assert c.set_info(d, INFO_FILE, RENAME, rename_info("::$DATA", True)) == INVALID_PARAMETER
        d.close()
    assert (server["share"] / "g").read_bytes() == b"file data"


def test_a_stream_rename_needs_its_other_opens_to_share_delete(server):
    """Another open of the stream that does not share delete (one for its attributes, which
    share modes let in beside a DELETE open): SHARING_VIOLATION, nothing renamed."""
    with client(server) as c:
        s = c.open("f:a", DELETE | WRITE_DATA, CREATE)
        other = c.open("f:a", READ_ATTRIBUTES, OPEN, share=0)
        assert c.set_info(s, INFO_FILE, RENAME, rename_info(":b", False)) == SHARING_VIOLATION
        other.close()
        assert stream_names(c, s) == ["::$DATA", ":a:$DATA"]


NT_2020 = 132223104000000000     # 2020-01-01T00:00:00Z as an NT time


def test_a_write_through_a_stream_moves_its_file_s_write_time(server):
    """MS-FSA keeps LastWriteTime per file: data written through f:s is f's modification.
    f's write time set back to 2020 first; after a write through the stream and its close,
    the file's own handle, its name and the directory listing's time show the write, not
    2020 (the stream's data is in the depot, where the kernel moved only its own mtime)."""
    with client(server) as c:
        c.open("f:s", WRITE_DATA, CREATE).close()
        f = c.open("f", READ_ATTRIBUTES | 0x100, OPEN)      # FILE_WRITE_ATTRIBUTES
        assert c.set_basic(f, times=(0, 0, NT_2020, 0)) == 0
        f.close()
        s = c.open("f:s", WRITE_DATA, OPEN)
        s.write(b"new data", 0)
        s.close()
        f = c.open("f", READ_ATTRIBUTES, OPEN)
        written = c.basic(f)[2]
        f.close()
    assert written > NT_2020 + 10**7 * 3600
    assert (server["share"] / "f").stat().st_mtime > 1577836800 + 3600


def test_a_flush_through_a_stream_shows_its_write_in_the_file_s_time_at_once(server):
    """The delayed update (two seconds, or the handle's close) shown at once by a FLUSH
    through the stream's handle: the file's time, through the file's own handle."""
    with client(server) as c:
        c.open("f:s", WRITE_DATA, CREATE).close()
        f = c.open("f", READ_ATTRIBUTES | 0x100, OPEN)
        assert c.set_basic(f, times=(0, 0, NT_2020, 0)) == 0
        s = c.open("f:s", WRITE_DATA, OPEN)
        s.write(b"new data", 0)
        assert c.basic(f)[2] == NT_2020         # (not yet: the update is delayed)
        s.flush()
        assert c.basic(f)[2] > NT_2020 + 10**7 * 3600
        s.close()
        f.close()


def test_a_file_is_not_renamed_under_its_open_streams(server):
    """f:s open (sharing everything) on one connection: f's rename through another's handle
    is ACCESS_DENIED (Windows, smbd), so the stream's handle still reaches its file's
    metadata by its name; once the stream is closed the rename goes through."""
    with client(server) as c, client(server) as other:
        s = c.open("f:s", FILE_ALL, CREATE, share=SHARE_ALL)
        f = other.open("f", FILE_ALL, OPEN, share=SHARE_ALL)
        assert other.set_info(f, INFO_FILE, RENAME, rename_info("g", False)) == ACCESS_DENIED
        assert c.basic(s)[4] & 0x20          # (the file's attributes: ARCHIVE)
        s.close()
        assert other.set_info(f, INFO_FILE, RENAME, rename_info("g", False)) == 0
        f.close()
    assert (server["share"] / "g").exists()


def test_a_stream_name_may_hold_control_characters(server):
    """"\\x05Stream\\n One" is a stream name on Windows (and smbd: smb2.streams.names): made,
    listed and opened again by that name; its depot file's name holds no control character."""
    name = "\x05Stream\n One"
    with client(server) as c:
        s = c.open(f"f:{name}", READ_DATA | WRITE_DATA, CREATE)
        s.write(b"summary", 0)
        assert stream_names(c, s) == sorted(["::$DATA", f":{name}:$DATA"])
        s.close()
        r = c.open(f"f:{name}:$DATA", READ_DATA, OPEN)
        assert r.read(0, 7) == b"summary"
        r.close()
        assert c.status("f:\x05Stream\x0a\x01One", READ_DATA, OPEN) == NAME_NOT_FOUND
    entries = [p.name for p in (server["share"] / ".smbring-streams").glob("*/*")]
    assert len(entries) == 1 and not set(entries[0]) & {chr(c) for c in range(32)}


OVERWRITE, OVERWRITE_IF, SUPERSEDE = 4, 5, 0


@pytest.mark.parametrize("disposition", [OVERWRITE, OVERWRITE_IF, SUPERSEDE])
def test_an_overwritten_file_has_no_named_stream_left(server, disposition):
    """Overwriting (or superseding) f deletes its named streams, as Windows does (smbd's
    clear_ads: smb2.streams.create-disposition): f::$DATA alone is listed, f:s is not found,
    and a new f:s starts empty. Not while f:s is open: SHARING_VIOLATION, nothing truncated."""
    with client(server) as c:
        s = c.open("f:s", READ_DATA | WRITE_DATA, CREATE)
        s.write(b"zone", 0)
        (server["share"] / "f").write_bytes(b"data")
        assert c.status("f", READ_DATA | WRITE_DATA, disposition) == SHARING_VIOLATION
        assert (server["share"] / "f").read_bytes() == b"data"
        s.close()
        f = c.open("f", READ_DATA | WRITE_DATA, disposition)
        assert stream_names(c, f) == ["::$DATA"]
        f.close()
        assert c.status("f:s", READ_DATA, OPEN) == NAME_NOT_FOUND
        s = c.open("f:s", READ_DATA | WRITE_DATA, OPEN_IF)
        assert struct.unpack_from("<q", c.query_info(s, INFO_FILE, 5), 8)[0] == 0   # its EndOfFile
        s.close()
