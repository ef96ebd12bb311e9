"""Adversarial review of a share's rules on every path that changes a file: a read-only share
tried with each SET_INFO class, each write-class FSCTL, create contexts that would store
something on an existing file, and named streams; each check shown by the file on disk being
unchanged, not only by the status."""
from __future__ import annotations

import os
import struct

import pytest

from smbring.smb import wire

RENAME, LINK, DISPOSITION, DISPOSITION_EX = 10, 11, 13, 64
BASIC, EOF_, ALLOCATION, FULL_EA, MODE, VALID_DATA, SHORT_NAME = 4, 20, 19, 15, 16, 39, 40


def ea_list(*pairs: tuple[bytes, bytes]) -> bytes:
    """FILE_FULL_EA_INFORMATION entries (MS-FSCC 2.4.15), each 4-byte aligned."""
    out = b""
    for i, (name, value) in enumerate(pairs):
        entry = struct.pack("<IBBH", 0, 0, len(name), len(value)) + name + b"\0" + value
        if i < len(pairs) - 1:
            entry += b"\0" * (-len(entry) % 4)
            entry = struct.pack("<I", len(entry)) + entry[4:]
        out += entry
    return out


def name_info(name: str, replace: bool = False) -> bytes:
    encoded = name.encode("utf-16-le")
    return struct.pack("<B7xQI", int(replace), 0, len(encoded)) + encoded


def snapshot(path) -> tuple:
    """What a mutation would change: the names, and each file's size, mode, mtime and xattrs."""
    out = []
    for top, dirs, files in os.walk(path):
        for name in sorted(dirs + files):
            p = os.path.join(top, name)
            st = os.lstat(p)
            out.append((p, st.st_size, st.st_mode, st.st_mtime_ns,
                        sorted((x, os.getxattr(p, x, follow_symlinks=False))
                               for x in os.listxattr(p, follow_symlinks=False))))
    return tuple(sorted(out))


@pytest.fixture(scope="module")
def ro(servers):
    server = servers()
    root = server.path("ro")
    (root / "file.txt").write_bytes(b"x" * 8192)
    (root / "dir").mkdir()
    (root / "dir" / "inner.txt").write_text("inner")
    c, s = server.logon()
    yield c.tree(s, "ro"), root


SET_INFOS = {
    "basic": (wire.INFO_FILE, BASIC, struct.pack("<qqqqI4x", 0, 0, 116444736000000000, 0, wire.ATTR_READONLY)),
    "rename": (wire.INFO_FILE, RENAME, name_info("moved.txt")),
    "rename-replace": (wire.INFO_FILE, RENAME, name_info(r"dir\inner.txt", True)),
    "link": (wire.INFO_FILE, LINK, name_info("linked.txt")),
    "disposition": (wire.INFO_FILE, DISPOSITION, b"\1"),
    "disposition-ex": (wire.INFO_FILE, DISPOSITION_EX, struct.pack("<I", 0x3)),
    "eof": (wire.INFO_FILE, EOF_, struct.pack("<q", 1)),
    "allocation": (wire.INFO_FILE, ALLOCATION, struct.pack("<q", 1 << 20)),
    "ea": (wire.INFO_FILE, FULL_EA, ea_list((b"planted", b"value"))),
    "valid-data": (wire.INFO_FILE, VALID_DATA, struct.pack("<q", 1)),
    "short-name": (wire.INFO_FILE, SHORT_NAME, struct.pack("<I", 8) + "SHORT~1".encode("utf-16-le")[:8]),
}


@pytest.mark.parametrize("case", sorted(SET_INFOS))
@pytest.mark.parametrize("access", [wire.MAXIMUM_ALLOWED, wire.GENERIC_READ])
def test_no_set_info_changes_a_read_only_share(ro, case, access):
    tree, root = ro
    before = snapshot(root)
    info_type, klass, data = SET_INFOS[case]
    fid = tree.open("file.txt", access)
    try:
        r = tree.set_info(fid, info_type, klass, data)
        assert r.status != wire.STATUS_SUCCESS, case
    finally:
        tree.close(fid)
    assert snapshot(root) == before


FSCTLS = {
    "set-sparse": (0x000900C4, b""),
    "zero-data": (0x000980C8, struct.pack("<qq", 0, 4096)),
    "trim": (0x00098208, struct.pack("<II", 0, 1) + struct.pack("<qq", 0, 4096)),
    "set-compression": (0x0009C040, struct.pack("<H", 1)),
    "set-reparse": (0x000900A4, struct.pack("<IHH", 0xA000000C, 0, 0)),
    "delete-reparse": (0x000900AC, struct.pack("<IHH", 0xA000000C, 0, 0)),
    "set-object-id": (0x00090098, b"\1" * 64),
    "set-integrity": (0x0009C280, struct.pack("<HHI", 0, 0, 0)),
}


@pytest.mark.parametrize("case", sorted(FSCTLS))
def test_no_fsctl_changes_a_read_only_share(ro, case):
    tree, root = ro
    before = snapshot(root)
    ctl, data = FSCTLS[case]
    fid = tree.open("file.txt", wire.MAXIMUM_ALLOWED)
    try:
        r = tree.ioctl(fid, ctl, data)
        assert r.status != wire.STATUS_SUCCESS, case
    finally:
        tree.close(fid)
    assert snapshot(root) == before


CREATES = {
    "stream-open-if": ("file.txt:new", wire.GENERIC_READ, wire.FILE_OPEN_IF, ()),
    "stream-create": ("file.txt:new", wire.GENERIC_READ, wire.FILE_CREATE, ()),
    "dir-stream-open-if": ("dir:new", wire.GENERIC_READ, wire.FILE_OPEN_IF, ()),
    "root-stream-open-if": (":new", wire.GENERIC_READ, wire.FILE_OPEN_IF, ()),
    "ea-on-open": ("file.txt", wire.GENERIC_READ, wire.FILE_OPEN, ((b"ExtA", ea_list((b"planted", b"v"))),)),
    "ea-on-open-if": ("file.txt", wire.GENERIC_READ, wire.FILE_OPEN_IF, ((b"ExtA", ea_list((b"planted", b"v"))),)),
    "alloc-on-open-if": ("file.txt", wire.GENERIC_READ, wire.FILE_OPEN_IF, ((b"AlSi", struct.pack("<q", 1 << 20)),)),
    "supersede-read": ("file.txt", wire.GENERIC_READ, wire.FILE_SUPERSEDE, ()),
    "overwrite-read": ("file.txt", wire.GENERIC_READ, wire.FILE_OVERWRITE, ()),
    "overwrite-if-max": ("file.txt", wire.MAXIMUM_ALLOWED, wire.FILE_OVERWRITE_IF, ()),
    "new-max": ("new.txt", wire.MAXIMUM_ALLOWED, wire.FILE_OPEN_IF, ()),
    "new-dir": ("newdir", wire.GENERIC_READ, wire.FILE_OPEN_IF, ()),
}


@pytest.mark.parametrize("case", sorted(CREATES))
def test_no_create_changes_a_read_only_share(ro, case):
    tree, root = ro
    before = snapshot(root)
    name, access, disposition, contexts = CREATES[case]
    options = wire.FILE_DIRECTORY_FILE if case == "new-dir" else 0
    r = tree.create(name, access, disposition, options, contexts=contexts)
    if r.status == wire.STATUS_SUCCESS:
        tree.close(r.file_id)
    assert snapshot(root) == before, (case, hex(r.status))


# -- what a handle does by name reaches only the file it opened ---------------------------------
# A delete on close, a rename and a hard link name the file by the path it was opened with.
# Another process (a local user, another share over the same directory) may since have moved
# the file away and put another file, or a symbolic link to one, in its place: the name then
# leads elsewhere, and acting on it would delete, move or link a file the client never opened
# (Samba checks the file's id before a delete on close for the same reason).
@pytest.fixture(scope="module")
def rw(servers):
    server = servers()
    c, s = server.logon()
    yield c.tree(s, "rw"), server.path("rw")


def swap_under(path, swap: str, other) -> None:
    """Moves `path` away (to path.moved) and puts a file, or a link to `other`, in its place."""
    os.rename(path, str(path) + ".moved")
    if swap == "file":
        path.write_text("put in its place")
    else:
        path.symlink_to(other.name)


@pytest.mark.parametrize("swap", ["file", "symlink"])
@pytest.mark.parametrize("how", ["option", "disposition"])
def test_a_delete_on_close_deletes_only_the_file_it_opened(rw, how, swap):
    tree, root = rw
    victim, other = root / f"doc-{how}-{swap}.txt", root / f"doc-{how}-{swap}-other.txt"
    victim.write_text("opened")
    other.write_text("another file")
    options = wire.FILE_DELETE_ON_CLOSE if how == "option" else 0
    fid = tree.open(victim.name, wire.GENERIC_READ | wire.DELETE, wire.FILE_OPEN, options)
    if how == "disposition":
        assert tree.set_info(fid, wire.INFO_FILE, DISPOSITION, b"\1").status == wire.STATUS_SUCCESS
    swap_under(victim, swap, other)
    tree.close(fid)
    assert os.path.lexists(victim) and other.read_text() == "another file"


@pytest.mark.parametrize("swap", ["file", "symlink"])
@pytest.mark.parametrize("klass", [RENAME, LINK])
def test_a_rename_or_link_moves_only_the_file_it_opened(rw, klass, swap):
    tree, root = rw
    victim, other = root / f"mv-{klass}-{swap}.txt", root / f"mv-{klass}-{swap}-other.txt"
    victim.write_text("opened")
    other.write_text("another file")
    fid = tree.open(victim.name, wire.GENERIC_READ | wire.DELETE)
    swap_under(victim, swap, other)
    target = root / f"mv-{klass}-{swap}-new.txt"
    r = tree.set_info(fid, wire.INFO_FILE, klass, name_info(target.name))
    tree.close(fid)
    assert r.status != wire.STATUS_SUCCESS
    assert os.path.lexists(victim) and not os.path.lexists(target)


# -- a link a local user left pointing out of the share ------------------------------------------
def entries_37(raw: bytes) -> dict[str, tuple[int, int]]:
    """FileIdBothDirectoryInformation entries (MS-FSCC 2.4.17): name -> (LastWriteTime, EndOfFile)."""
    body = raw[64 + 8:]
    out, at = {}, 0
    while True:
        nxt, = struct.unpack_from("<I", body, at)
        written, size = struct.unpack_from("<q", body, at + 24)[0], struct.unpack_from("<q", body, at + 40)[0]
        length, = struct.unpack_from("<I", body, at + 60)
        out[body[at + 104:at + 104 + length].decode("utf-16-le")] = (written, size)
        if not nxt:
            return out
        at += nxt


def test_a_listing_shows_nothing_of_what_a_link_out_of_the_share_leads_to(servers):
    """A listing shows a symlink by what it leads to where that lies inside the share; one
    leading out shows as the link itself, never the outside file's size or times."""
    server = servers()
    share = server.path("rw")
    outside = share.parent / "outside"
    outside.mkdir()
    (outside / "big.bin").write_bytes(b"o" * 123457)
    os.utime(outside / "big.bin", ns=(10**18, 10**18))
    (share / "out-abs").symlink_to(outside / "big.bin")
    (share / "out-rel").symlink_to("../outside/big.bin")
    (share / "out-dir").symlink_to(outside)
    c, s = server.logon()
    tree = c.tree(s, "rw")
    fid = tree.open("", wire.GENERIC_READ, wire.FILE_OPEN, wire.FILE_DIRECTORY_FILE)
    listed = entries_37(tree.query_directory(fid, "*", 37).raw)
    tree.close(fid)
    leaked = {n: v for n, v in listed.items() if n.startswith("out-") and (v[1] == 123457 or
              v[0] == 10**18 // 100 + 116444736000000000)}
    assert {"out-abs", "out-rel", "out-dir"} <= set(listed) and not leaked


def test_a_link_into_the_stream_depot_reaches_nothing(servers):
    """The depot is refused by name; a link a local user made to it, to one of its
    directories, or to the share's root, must not lead there either: USER acts as root here,
    whom the depot's 0700 does not stop, and would read and write any file's streams
    without the checks made on their file. Links elsewhere in the share still work."""
    server = servers()
    share = server.path("rw")
    c, s = server.logon()
    tree = c.tree(s, "rw")
    rw = wire.GENERIC_READ | wire.GENERIC_WRITE
    fid = tree.open("base.txt:secret", rw, wire.FILE_OPEN_IF)
    assert tree.write(fid, b"stream data").status == wire.STATUS_SUCCESS
    tree.close(fid)
    depot = share / ".smbring-streams"
    sid = os.listdir(depot)[0]
    (share / "depot-link").symlink_to(".smbring-streams")
    (share / "id-link").symlink_to(f".smbring-streams/{sid}")
    (share / "root-link").symlink_to(".")
    (share / "plain-link").symlink_to("base.txt")
    (share / "dangling-link").symlink_to(f".smbring-streams/{sid}/made")
    for name in (rf"depot-link\{sid}\secret", r"id-link\secret", "depot-link", "id-link", r"id-link\made",
                 rf"depot-link\{sid}\made", "dangling-link", r"root-link\dangling-link"):
        for access, disposition in ((wire.GENERIC_READ, wire.FILE_OPEN), (rw, wire.FILE_OPEN_IF)):
            r = tree.create(name, access, disposition)
            assert r.status != wire.STATUS_SUCCESS, (name, access)
    fid = tree.open("mover.txt", rw | wire.DELETE, wire.FILE_OVERWRITE_IF)
    for target in (r"id-link\moved", rf"depot-link\{sid}\moved"):
        assert tree.set_info(fid, wire.INFO_FILE, RENAME, name_info(target)).status != wire.STATUS_SUCCESS
        assert tree.set_info(fid, wire.INFO_FILE, LINK, name_info(target)).status != wire.STATUS_SUCCESS
    tree.close(fid)
    assert sorted(os.listdir(depot / sid)) == ["secret"]
    fid = tree.open("root-link", wire.GENERIC_READ, wire.FILE_OPEN, wire.FILE_DIRECTORY_FILE)
    listing = tree.query_directory(fid).raw
    tree.close(fid)
    assert "base.txt".encode("utf-16-le") in listing and ".smbring-streams".encode("utf-16-le") not in listing
    fid = tree.open("plain-link:secret")          # a link inside the share: followed as before
    assert tree.read(fid, 100).raw.endswith(b"stream data")
    tree.close(fid)
