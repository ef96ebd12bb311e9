"""macOS's enriched directory listings (AAPL READ_DIR_ATTR) on shares with `vfs objects =
fruit`, against `smbring serve --config`: a raw client negotiates them with the AAPL server
query, as macOS does, and reads FileIdBothDirectoryInformation entries field by field, as
Samba's smbtorture vfs.fruit AAPL test reads Samba's: the maximal access in EaSize, the
resource fork's size and the compressed Finder information in the short name, the Unix
mode in Reserved2. What one account may not read of another's file shows as nothing."""
import os
import struct

from smbconf_server import OTHER, OTHER_PASSWORD, smbconf  # noqa: F401  (the fixture)
from smbring.smb import aapl, wire
from test_aapl import ALL, ASKED, SHARES, ask, connected, query, write_file
from test_file_times_ids import on_disk_id

WRITE_DAC = 0x00040000
TYPE_CREATOR = b"TYPECRTR"
FLAGS, EXT_FLAGS = b"\x01\x02", b"\x03\x04"


def afp_info(type_creator: bytes = TYPE_CREATOR) -> bytes:
    """An AFP_AfpInfo stream's 60 bytes: signature, version, reserved, backup time, then
    FinderInfo (type and creator, Finder flags; the extended flags at 24 of its 32 bytes)."""
    finder = type_creator + FLAGS + bytes(14) + EXT_FLAGS + bytes(6)
    return b"AFP\0" + struct.pack(">III", 0x100, 0, 0x80000000) + finder + bytes(12)


def answers(tree, directory: str = "", klass: int = 37, output_length: int = 65536):
    """The directory's listing, one answer at a time: each a list of (name, entry), for
    FileIdBothDirectoryInformation (37) or FileIdFullDirectoryInformation (38), whose name
    starts at 80."""
    name_at = 80 if klass == 38 else 104
    fid = tree.open(directory, wire.GENERIC_READ, options=wire.FILE_DIRECTORY_FILE)
    r = tree.query_directory(fid, klass=klass, output_length=output_length)
    while r.status == wire.STATUS_SUCCESS:
        data, pos, answer = r.buffer(2), 0, []
        while True:
            nxt, = struct.unpack_from("<I", data, pos)
            length, = struct.unpack_from("<I", data, pos + 60)
            entry = data[pos:pos + nxt] if nxt else data[pos:]
            answer.append((entry[name_at:name_at + length].decode("utf-16-le"), entry))
            if not nxt:
                break
            pos += nxt
        yield answer
        r = tree.query_directory(fid, klass=klass, output_length=output_length)
    assert r.status == wire.STATUS_NO_MORE_FILES, r
    tree.close(fid)


def entries(tree, directory: str = "", klass: int = 37) -> dict[str, bytes]:
    """Every entry of the directory's listing, by name (see `answers`)."""
    return {name: entry for answer in answers(tree, directory, klass) for name, entry in answer}


def apple_fields(entry: bytes) -> tuple[int, int, int, bytes, int]:
    """(max access, short name length, resource fork size, Finder information, mode)."""
    max_access, short_len, _reserved1, rfork = struct.unpack_from("<IBBQ", entry, 64)
    return max_access, short_len, rfork, entry[78:94], struct.unpack_from("<H", entry, 94)[0]


def made(tree, name: str) -> None:
    write_file(tree, name, b"data")
    write_file(tree, f"{name}:AFP_AfpInfo", afp_info())
    write_file(tree, f"{name}:AFP_Resource", b"foo")


def test_a_negotiated_listing_carries_what_finder_needs(smbconf):
    """Before the query (and for a client that does not ask for READ_DIR_ATTR) the entries
    are the plain ones; after it, the file's: its maximal access (the owner's WRITE_DAC
    among it), short name length 24, a 3-byte resource fork, its type and creator, flags,
    extended flags and date added (its creation time, from 2000, big-endian), its mode. A
    file without streams: no fork, no type, and Samba's "no date"; a directory: its mode."""
    server = smbconf("", SHARES)
    c, tree = connected(server, "mac")
    with c:
        made(tree, "test_aapl")
        tree.close(tree.open("dir", wire.GENERIC_READ, wire.FILE_CREATE, wire.FILE_DIRECTORY_FILE))
        write_file(tree, "plain.txt", b"x")
        plain = entries(tree)["test_aapl"]
        assert (apple_fields(plain)[0], apple_fields(plain)[4]) == (0, 0)     # no EAs, Reserved2
        ask(tree, query(ALL, aapl.UNIX_BASED))          # not asked for: nothing changes
        after = entries(tree)["test_aapl"]              # (but the FileId: 0, fruit:zero_file_id)
        assert after[60:96] + after[104:] == plain[60:96] + plain[104:] and after[96:104] == bytes(8)
        ask(tree, query(ALL, ASKED))
        listed = entries(tree)
        st = os.stat(server.root / "mac" / "test_aapl")
        most, short_len, rfork, finder, mode = apple_fields(listed["test_aapl"])
        assert most & (WRITE_DAC | wire.FILE_READ_DATA | wire.FILE_WRITE_DATA) == \
            WRITE_DAC | wire.FILE_READ_DATA | wire.FILE_WRITE_DATA, hex(most)
        assert (short_len, rfork, mode) == (24, 3, st.st_mode & 0xFFFF)
        assert finder[:12] == TYPE_CREATOR + FLAGS + EXT_FLAGS
        created, = struct.unpack_from("<Q", listed["test_aapl"], 8)      # CreationTime (NT)
        added = (created - wire.nt_time(0)) // 10_000_000 - aapl.AD_DATE_DELTA
        assert int.from_bytes(finder[12:], "big") == added
        assert apple_fields(listed["plain.txt"])[1:4] == (24, 0, bytes(12) + b"\x80\0\0\0")
        dir_fields = apple_fields(listed["dir"])
        assert dir_fields[4] == os.stat(server.root / "mac" / "dir").st_mode & 0xFFFF
        assert apple_fields(listed["."])[4] & 0o170000 == 0o040000
        # execute as the mode allows it (no x bit: no one)
        os.chmod(server.root / "mac" / "plain.txt", 0o644)
        os.chmod(server.root / "mac" / "test_aapl", 0o755)
        listed = entries(tree)
        assert not apple_fields(listed["plain.txt"])[0] & wire.FILE_EXECUTE
        assert apple_fields(listed["test_aapl"])[0] & wire.FILE_EXECUTE
        # the other listing classes keep their layout
        assert entries(tree, klass=38)["test_aapl"][64:68] == bytes(4)


def test_the_readdir_attr_options_leave_out_what_they_turn_off(smbconf):
    """readdir_attr:aapl_max_access = no: GENERIC_ALL, as Samba shows; aapl_rsize = no: no
    fork size; aapl_finder_info = no: no Finder information (the date too: "no date")."""
    shares = dict(SHARES, mac=SHARES["mac"] + "\nreaddir_attr:aapl_max_access = no\n"
                  "readdir_attr:aapl_rsize = no\nreaddir_attr:aapl_finder_info = no")
    server = smbconf("", shares)
    c, tree = connected(server, "mac")
    with c:
        made(tree, "test_aapl")
        ask(tree, query())
        most, short_len, rfork, finder, _mode = apple_fields(entries(tree)["test_aapl"])
        assert (most, short_len, rfork, finder) == (aapl.GENERIC_ALL, 24, 0, bytes(12) + b"\x80\0\0\0")


def test_another_accounts_unreadable_file_shows_nothing_of_its_streams(smbconf):
    """A file its owner made readable by nobody else: another account's enriched listing
    still lists it, with no resource fork, no Finder information and none of the owner's
    rights (WRITE_DAC); its owner's listing shows them. A read-only share's maximal access
    never holds more than reading."""
    server = smbconf("", {**SHARES, "ro": "read only = yes\nvfs objects = fruit"},
                     users=((OTHER, OTHER_PASSWORD),))
    c, tree = connected(server, "mac")
    with c:
        made(tree, "secret")
    os.chmod(server.root / "mac" / "secret", 0o600)
    os.chown(server.root / "mac" / "secret", 0, 0)
    other = server.raw()
    with other:
        other.negotiate()
        otree = other.tree(other.logon(OTHER, OTHER_PASSWORD), "mac")
        ask(otree, query(), "other-probe")
        most, short_len, rfork, finder, _mode = apple_fields(entries(otree)["secret"])
        assert (short_len, rfork, finder) == (24, 0, bytes(12) + b"\x80\0\0\0")
        assert not most & (WRITE_DAC | wire.FILE_WRITE_DATA), hex(most)
    c, tree = connected(server, "mac")
    with c:
        ask(tree, query())
        assert apple_fields(entries(tree)["secret"])[2] == 3
    (server.root / "ro").mkdir(exist_ok=True)
    (server.root / "ro" / "f").write_bytes(b"x")
    c, tree = connected(server, "ro")
    with c:
        r = tree.create("", wire.GENERIC_READ, wire.FILE_OPEN, wire.FILE_DIRECTORY_FILE,
                        contexts=[(b"AAPL", query())])
        tree.close(r.file_id)
        most = apple_fields(entries(tree)["f"])[0]
        assert most and not most & ~wire.READ_ONLY_ACCESS, hex(most)


def test_an_enriched_listing_answers_in_bounded_pieces(smbconf):
    """Each entry of an enriched listing costs a few system calls: one answer makes at most
    MAX_SLOW_ENTRIES of them, however large the client's buffer (8 MiB here would hold all
    3,000), and the client's next queries get the rest, every name once."""
    from smbring.smb.commands.directory import MAX_SLOW_ENTRIES
    server = smbconf("", SHARES)
    many = server.root / "mac" / "many"
    many.mkdir()
    for i in range(3000):
        (many / f"f{i:05d}").write_bytes(b"")
    c, tree = connected(server, "mac")
    with c:
        c.grow_credits(512)
        ask(tree, query())
        counts, names = [], []
        for answer in answers(tree, "many", output_length=8 << 20):
            counts.append(len(answer))
            for name, entry in answer:
                names.append(name)
                assert apple_fields(entry)[1] == 24          # (enriched)
    assert max(counts) <= MAX_SLOW_ENTRIES and len(counts) >= 2, counts
    assert sorted(names) == sorted([".", ".."] + [f"f{i:05d}" for i in range(3000)])


def file_ids(tree, klass: int) -> dict[str, int]:
    """Each entry's FileId in the share root's listing (37 or 38)."""
    at = 96 if klass == 37 else 72
    return {name: struct.unpack_from("<Q", entry, at)[0] for name, entry in entries(tree, "", klass).items()}


def test_file_ids_are_zero_once_aapl_is_negotiated(smbconf):
    """As Samba's vfs_fruit (fruit:zero_file_id, default yes): once the tree negotiated AAPL,
    every file id it is shown is 0 (listings with FileIds, batched or with enriched entries,
    FileInternalInformation, FileAllInformation, FileIdInformation, QFid): macOS takes them
    for HFS+ catalog ids, never reused, which inode numbers are not. Before, on a share with
    fruit:zero_file_id = no, and on a share without fruit, they are inode numbers."""
    server = smbconf("", dict(SHARES, kept="read only = no\nvfs objects = fruit\nfruit:zero_file_id = no"))
    for share, zeroed in (("mac", True), ("kept", False), ("plain", False)):
        c, tree = connected(server, share)
        with c:
            for name in ("a.txt", "b.txt", "c.txt"):
                write_file(tree, name, b"x")
            inode = os.stat(server.root / share / "a.txt").st_ino
            assert file_ids(tree, 37)["a.txt"] == inode
            ask(tree, query(aapl.SERVER_CAPS, 0))             # AAPL without READ_DIR_ATTR: batched
            for klass in (37, 38):
                ids = file_ids(tree, klass)
                assert (set(ids.values()) == {0}) == zeroed and ids["a.txt"] in (0, inode), (share, klass, ids)
            r = tree.create("a.txt", wire.GENERIC_READ, contexts=[(b"QFid", b"")])
            shown = 0 if zeroed else inode
            assert on_disk_id(r) == shown, share
            internal = struct.unpack_from("<Q", tree.query_info(r.file_id, wire.INFO_FILE, 6).buffer(2))[0]
            every = tree.query_info(r.file_id, wire.INFO_FILE, 18).buffer(2)
            ident = tree.query_info(r.file_id, wire.INFO_FILE, 59).buffer(2)
            assert internal == struct.unpack_from("<Q", every, 64)[0] == shown, share
            assert struct.unpack_from("<Q", ident, 8)[0] == shown, share
            tree.close(r.file_id)
            if share != "plain":
                ask(tree, query())                             # with READ_DIR_ATTR: enriched entries
                assert (set(file_ids(tree, 37).values()) == {0}) == zeroed, share
