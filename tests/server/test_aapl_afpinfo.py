"""macOS's Finder information and resource forks on shares with `vfs objects = fruit`, as
Samba's vfs_fruit and macOS's own server keep them, against `smbring serve --config`: the
AFP_AfpInfo stream only ever holds one whole AfpInfo (a write is checked and stored whole at
0; all zeros remove it; its size cannot grow), an empty AFP_Resource or AFP_AfpInfo is not
listed, and once AAPL is negotiated an empty named stream is not found by FILE_OPEN. On a
share without fruit these streams are ordinary ones."""
import struct

import pytest

from smbconf_server import smbconf  # noqa: F401  (the fixture)
from smbring.smb import wire
from smbring.smb.acl import FILE_READ_ATTRIBUTES
from test_aapl import SHARES, ask, connected, query, read_file, with_plain_view, write_file

INFO = "f.txt:AFP_AfpInfo"


def afp_info(finder: bytes = b"TYPECRTR") -> bytes:
    return b"AFP\0" + struct.pack(">III", 0x100, 0, 0x80000000) + finder.ljust(32, b"\0") + bytes(12)


def streams(tree, name: str = "f.txt") -> dict[str, int]:
    """The file's streams as listed (FileStreamInformation): name -> size."""
    fid = tree.open(name, wire.GENERIC_READ)
    data = tree.query_info(fid, wire.INFO_FILE, 22).buffer(2)
    tree.close(fid)
    out, pos = {}, 0
    while True:
        nxt, length, size = struct.unpack_from("<IIQ", data, pos)
        out[data[pos + 24:pos + 24 + length].decode("utf-16-le")] = size
        if not nxt:
            return out
        pos += nxt


def with_finder_info(tree) -> None:
    """f.txt, its Finder information stream holding afp_info()."""
    write_file(tree, "f.txt", b"data")
    write_file(tree, INFO, afp_info())


def read_all(tree, name: str) -> bytes:
    fid = tree.open(name, wire.GENERIC_READ)
    r = tree.read(fid, 4096)
    tree.close(fid)
    return r.body[16:] if r.status == wire.STATUS_SUCCESS else b""


def test_afpinfo_writes_are_checked_and_stored_whole(smbconf):
    """Fewer than 3 bytes, not an AfpInfo (signature, version), or fewer than 60 bytes
    anywhere but at 0: STATUS_INVALID_PARAMETER, nothing stored. A write ending before
    FinderInfo stores nothing; a whole one at any offset is stored at 0, its first 60 bytes
    only, and the WRITE answers the count sent; an open that may only append may not write
    it."""
    server = smbconf("", SHARES)
    c, tree = connected(server, "mac")
    with c:
        write_file(tree, "f.txt", b"data")
        fid = tree.open(INFO, wire.GENERIC_READ | wire.GENERIC_WRITE, wire.FILE_OPEN_IF)
        for data, offset in ((b"AF", 0), (b"XYZ" + afp_info()[3:], 0), (afp_info()[:59], 1),
                             (afp_info()[:4] + b"\0\1\0\0" + afp_info()[8:], 0), (bytes(60), 0)):
            assert tree.write(fid, data, offset).status == wire.STATUS_INVALID_PARAMETER, (data, offset)
        r = tree.write(fid, afp_info()[:16], 0)
        assert r.status == wire.STATUS_SUCCESS and struct.unpack_from("<I", r.body, 4)[0] == 16
        assert tree.write(fid, afp_info() + b"junk" * 100, 30).status == wire.STATUS_SUCCESS
        tree.close(fid)
        assert read_all(tree, INFO) == afp_info()
        assert streams(tree)[":AFP_AfpInfo:$DATA"] == 60
        # an open that may only append may not rewrite it
        fid = tree.open(INFO, wire.FILE_APPEND_DATA)
        assert tree.write(fid, afp_info(b"OTHERONE"), 0).status == wire.STATUS_ACCESS_DENIED
        tree.close(fid)
        assert read_all(tree, INFO) == afp_info()


def test_all_zero_finder_info_removes_the_stream_and_its_size_holds(smbconf):
    """End of file past 60: STATUS_ALLOTTED_SPACE_EXCEEDED; 60 or less: success, nothing
    changes. Writing an AfpInfo whose FinderInfo is all zeros removes the stream: unlisted at
    once, gone once closed."""
    server = smbconf("", SHARES)
    c, tree = connected(server, "mac")
    with c:
        with_finder_info(tree)
        fid = tree.open(INFO, wire.GENERIC_READ | wire.GENERIC_WRITE)
        for size, status in ((61, wire.STATUS_ALLOTTED_SPACE_EXCEEDED), (1, wire.STATUS_SUCCESS),
                             (0, wire.STATUS_SUCCESS)):
            assert tree.set_info(fid, wire.INFO_FILE, 20, struct.pack("<Q", size)).status == status, size
        assert read_all(tree, INFO) == afp_info()
        assert tree.write(fid, afp_info(b""), 0).status == wire.STATUS_SUCCESS
        assert ":AFP_AfpInfo:$DATA" not in streams(tree)
        tree.close(fid)
        assert tree.create(INFO, wire.GENERIC_READ).status == wire.STATUS_OBJECT_NAME_NOT_FOUND


def test_empty_streams_are_none_for_macos(smbconf):
    """An empty resource fork is not listed; once AAPL is negotiated, no empty named stream
    is listed, and FILE_OPEN of one is STATUS_OBJECT_NAME_NOT_FOUND (FILE_OPEN_IF still opens it), a stream
    with data is found. On a share without fruit, AFP_AfpInfo takes any write and empty
    streams are listed and opened."""
    server = smbconf("", SHARES)
    c, tree = connected(server, "mac")
    with c:
        write_file(tree, "f.txt", b"data")
        write_file(tree, "f.txt:AFP_Resource", b"")
        write_file(tree, "f.txt:empty", b"")
        write_file(tree, "f.txt:full", b"x")
        assert set(streams(tree)) == {"::$DATA", ":empty:$DATA", ":full:$DATA"}
        assert tree.create("f.txt:empty", wire.GENERIC_READ).status == wire.STATUS_SUCCESS
        ask(tree, query())
        assert set(streams(tree)) == {"::$DATA", ":full:$DATA"}       # (as macOS lists them)
        for name in ("f.txt:empty", "f.txt:AFP_Resource"):
            assert tree.create(name, wire.GENERIC_READ).status == wire.STATUS_OBJECT_NAME_NOT_FOUND
            r = tree.create(name, wire.GENERIC_READ, wire.FILE_OPEN_IF)
            assert r.status == wire.STATUS_SUCCESS
            tree.close(r.file_id)
        tree.close(tree.open("f.txt:full", wire.GENERIC_READ))
    c, tree = connected(server, "plain")
    with c:
        write_file(tree, "f.txt", b"data")
        write_file(tree, "f.txt:AFP_Resource", b"")
        write_file(tree, INFO, b"ab")
        assert streams(tree) == {"::$DATA": 4, ":AFP_Resource:$DATA": 0, ":AFP_AfpInfo:$DATA": 2}
        ask(tree, query())
        tree.close(tree.open("f.txt:AFP_Resource", wire.GENERIC_READ))


def test_all_zeros_do_not_pass_another_opens_lock(smbconf):
    """The write that removes the Finder information is a write of its 60 bytes: another
    open's byte-range lock on them refuses it (STATUS_FILE_LOCK_CONFLICT), and the stream
    stays; so is one that stores nothing, as any WRITE of a locked range."""
    server = smbconf("", SHARES)
    c, tree = connected(server, "mac")
    with c:
        with_finder_info(tree)
        locker = tree.open(INFO, wire.GENERIC_READ | wire.GENERIC_WRITE)
        assert tree.lock(locker, [(0, 60, 0x2 | 0x10)]).status == wire.STATUS_SUCCESS   # exclusive, fail at once
        writer = tree.open(INFO, wire.GENERIC_READ | wire.GENERIC_WRITE)
        assert tree.write(writer, afp_info(b""), 0).status == wire.STATUS_FILE_LOCK_CONFLICT
        assert tree.write(writer, afp_info()[:10], 0).status == wire.STATUS_FILE_LOCK_CONFLICT
        tree.close(writer)
        tree.close(locker)
        assert read_all(tree, INFO) == afp_info()


def test_finder_information_reads_whole_from_any_offset_up_to_its_size(smbconf):
    """As macOS (and Samba's vfs_fruit, bug for bug): a READ of AFP_AfpInfo at any offset up
    to 60 reads from its start, at most its 60 bytes; at 61 or past, nothing. Written or not
    yet written alike; another stream of the file reads by its offsets as usual."""
    server = smbconf("", SHARES)
    c, tree = connected(server, "mac")
    with c:
        write_file(tree, "f.txt", b"data")
        info = afp_info(b"SMB,OLE!")
        fid = tree.open(INFO, wire.GENERIC_READ | wire.GENERIC_WRITE, wire.FILE_OPEN_IF)
        for whole in (afp_info(b""), info):
            if whole is info:
                assert tree.write(fid, info, 0).status == wire.STATUS_SUCCESS
            for length, offset, expected in ((60, 0, whole), (61, 0, whole), (8, 16, whole[:8]),
                                             (2, 59, whole[:2]), (1, 60, whole[:1])):
                r = tree.read(fid, length, offset)
                assert r.status == wire.STATUS_SUCCESS and r.body[16:] == expected, (length, offset)
            for offset in (61, 100, 4096):
                assert tree.read(fid, 1, offset).status == wire.STATUS_END_OF_FILE
        tree.close(fid)
        other = tree.open("f.txt:other", wire.GENERIC_READ | wire.GENERIC_WRITE, wire.FILE_OPEN_IF)
        assert tree.write(other, bytes(range(100)), 0).status == wire.STATUS_SUCCESS
        assert tree.read(other, 8, 16).body[16:] == bytes(range(16, 24))
        assert tree.read(other, 1, 100).status == wire.STATUS_END_OF_FILE
        tree.close(other)


def test_finder_information_not_yet_written_reads_as_an_empty_one(smbconf):
    """An AFP_AfpInfo created and not written is, to the opens that have it, a whole AfpInfo
    with no Finder information (60 bytes: signature, version, no backup date); it is not
    listed, FILE_OPEN does not find it, and once written it reads as written."""
    server = smbconf("", SHARES)
    c, tree = connected(server, "mac")
    with c:
        write_file(tree, "f.txt", b"data")
        created = tree.open(INFO, wire.GENERIC_READ | wire.GENERIC_WRITE, wire.FILE_OPEN_IF)
        r = tree.read(created, 4096)
        assert r.status == wire.STATUS_SUCCESS and r.body[16:] == afp_info(b"")
        assert tree.read(created, 10, 61).status == wire.STATUS_END_OF_FILE
        size = struct.unpack_from("<Q", tree.query_info(created, wire.INFO_FILE, 5).buffer(2), 8)[0]
        assert size == 60
        assert ":AFP_AfpInfo:$DATA" not in streams(tree)
        assert tree.create(INFO, wire.GENERIC_READ).status == wire.STATUS_OBJECT_NAME_NOT_FOUND
        other = tree.open(INFO, wire.GENERIC_READ, wire.FILE_OPEN_IF)
        assert tree.read(other, 60).body[16:] == afp_info(b"")
        assert tree.write(created, afp_info(), 0).status == wire.STATUS_SUCCESS
        assert tree.read(other, 60).body[16:] == afp_info()
        tree.close(other)
        tree.close(created)
        assert streams(tree)[":AFP_AfpInfo:$DATA"] == 60


@pytest.mark.parametrize("bad", [b"foo", b"foo" * 40])
def test_finder_information_another_share_wrote_badly_is_none(smbconf, tmp_path, bad):
    """Three bytes, or 120, written to AFP_AfpInfo through a share without fruit: the fruit
    share does not list it, FILE_OPEN does not find it, an open that creates reads an empty
    AfpInfo, and a whole one written through it is stored (the longer one cut to it)."""
    server = smbconf("", with_plain_view(tmp_path))
    c, plain = connected(server, "macplain")
    with c:
        write_file(plain, "f.txt", b"data")
        write_file(plain, INFO, bad)
        c2, tree = connected(server, "mac")
        with c2:
            assert ":AFP_AfpInfo:$DATA" not in streams(tree)
            assert tree.create(INFO, wire.GENERIC_READ).status == wire.STATUS_OBJECT_NAME_NOT_FOUND
            fid = tree.open(INFO, wire.GENERIC_READ | wire.GENERIC_WRITE, wire.FILE_OPEN_IF)
            assert tree.read(fid, 60).body[16:] == afp_info(b"")
            assert tree.write(fid, afp_info(), 0).status == wire.STATUS_SUCCESS
            tree.close(fid)
            assert read_all(tree, INFO) == afp_info()
        assert read_all(plain, INFO) == afp_info()


def test_deleting_a_resource_fork_with_data_is_ignored(smbconf):
    """As macOS's server and Samba's vfs_fruit: delete on close asked of an AFP_Resource
    that holds data, at CREATE or by SET_INFO, is answered success and leaves it; an empty
    one goes; deleting the file takes its resource fork with it. On a share without fruit
    the stream goes."""
    server = smbconf("", SHARES)
    fork = "f.txt:AFP_Resource"
    for share, kept in (("mac", True), ("plain", False)):
        c, tree = connected(server, share)
        with c:
            write_file(tree, "f.txt", b"data")
            write_file(tree, fork, b"1234567890")
            r = tree.create(fork, wire.DELETE | FILE_READ_ATTRIBUTES, wire.FILE_OPEN,
                            options=wire.FILE_DELETE_ON_CLOSE)
            assert r.status == wire.STATUS_SUCCESS
            tree.close(r.file_id)
            assert (":AFP_Resource:$DATA" in streams(tree)) == kept, share
            if kept:
                assert read_file(tree, fork, 10) == b"1234567890"
                fid = tree.open(fork, wire.DELETE | FILE_READ_ATTRIBUTES)
                assert tree.set_info(fid, wire.INFO_FILE, 13, b"\1").status == wire.STATUS_SUCCESS
                tree.close(fid)
                assert read_file(tree, fork, 10) == b"1234567890"
                fid = tree.open(fork, wire.GENERIC_WRITE | wire.DELETE)      # emptied: it goes
                assert tree.set_info(fid, wire.INFO_FILE, 20, struct.pack("<Q", 0)).status == wire.STATUS_SUCCESS
                assert tree.set_info(fid, wire.INFO_FILE, 13, b"\1").status == wire.STATUS_SUCCESS
                tree.close(fid)
                assert ":AFP_Resource:$DATA" not in streams(tree)
                write_file(tree, fork, b"again")
            r = tree.create("f.txt", wire.DELETE, wire.FILE_OPEN, options=wire.FILE_DELETE_ON_CLOSE)
            assert r.status == wire.STATUS_SUCCESS
            tree.close(r.file_id)
            write_file(tree, "f.txt", b"new")
            assert set(streams(tree)) == {"::$DATA"}, share
