"""A file's extended attributes together fit in 64 KiB, as NTFS keeps them (MS-FSA
2.1.5.15.5): a SET_INFO FileFullEaInformation or a CREATE's ExtA context that would push the
file past it is STATUS_EA_TOO_LARGE, though each of its EAs is small, and nothing of that
request is stored; a request the file system refuses part-way is undone too. The share is on
tmpfs, whose xattrs hold that much (ext4 keeps about 4 KiB of them per file)."""
from __future__ import annotations

import os
import shutil
import struct
import tempfile

import pytest

from servers import PASSWORD, USER
from smbcore import full_ea_list
from smbconf_server import smbconf  # noqa: F401  (the fixture)

from smbring.smb import wire

FULL_EA, FILE_INFO = 15, 1
READ_WRITE = 0x0012019F
EA_SIZE = 15000


def names_of(r) -> dict[str, int]:
    """EA name -> value length, from a FileFullEaInformation answer."""
    if r.status == wire.STATUS_NO_EAS_ON_FILE:
        return {}
    assert r.status == wire.STATUS_SUCCESS, r
    buf, pos, found = r.buffer(2, "<HI"), 0, {}
    while True:
        nxt, _flags, name_len, value_len = struct.unpack_from("<IBBH", buf, pos)
        found[buf[pos + 8:pos + 8 + name_len].decode()] = value_len
        if not nxt:
            return found
        pos += nxt


@pytest.fixture
def tmpfs_share():
    if not os.path.isdir("/dev/shm"):
        pytest.skip("no tmpfs at /dev/shm")
    path = tempfile.mkdtemp(prefix="smbring-ea-", dir="/dev/shm")
    os.chmod(path, 0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def tree_of(smbconf, path):
    server = smbconf("", {"share": f"path = {path}\nread only = no\nea support = yes"})
    c = server.raw()
    assert c.negotiate((wire.SMB311,)).status == wire.STATUS_SUCCESS
    return c.tree(c.logon(USER, PASSWORD), "share")


def big(names) -> list[tuple[str, bytes]]:
    return [(n, n.encode() * (EA_SIZE // len(n))) for n in names]


def test_eas_that_together_pass_64_kib_are_refused_whole(smbconf, tmpfs_share):
    tree = tree_of(smbconf, tmpfs_share)
    fid = tree.open("f", READ_WRITE, wire.FILE_OPEN_IF)
    r = tree.set_info(fid, FILE_INFO, FULL_EA, full_ea_list(big(["a1", "a2", "a3", "a4", "a5"])))
    assert r.status == wire.STATUS_EA_TOO_LARGE, r
    assert names_of(tree.query_info(fid, FILE_INFO, FULL_EA)) == {}
    # three fit; two more would not: refused, the three kept as they were
    assert tree.set_info(fid, FILE_INFO, FULL_EA, full_ea_list(big(["b1", "b2", "b3"]))).status == wire.STATUS_SUCCESS
    kept = names_of(tree.query_info(fid, FILE_INFO, FULL_EA))
    assert set(kept) == {"B1", "B2", "B3"} or set(kept) == {"b1", "b2", "b3"}, kept
    r = tree.set_info(fid, FILE_INFO, FULL_EA, full_ea_list([("b1", b"")] + big(["c1", "c2", "c3"])))
    assert r.status == wire.STATUS_EA_TOO_LARGE, r
    assert names_of(tree.query_info(fid, FILE_INFO, FULL_EA)) == kept
    # what the request removes counts: one out, one in, fits
    r = tree.set_info(fid, FILE_INFO, FULL_EA, full_ea_list([("b1", b"")] + big(["c1"])))
    assert r.status == wire.STATUS_SUCCESS, r
    assert len(names_of(tree.query_info(fid, FILE_INFO, FULL_EA))) == 3


def test_an_overwriting_create_s_eas_count_the_file_s(smbconf, tmpfs_share):
    tree = tree_of(smbconf, tmpfs_share)
    fid = tree.open("g", READ_WRITE, wire.FILE_OPEN_IF)
    assert tree.set_info(fid, FILE_INFO, FULL_EA, full_ea_list(big(["d1", "d2", "d3"]))).status == wire.STATUS_SUCCESS
    tree.close(fid)
    fid = tree.open("g", READ_WRITE)
    before = names_of(tree.query_info(fid, FILE_INFO, FULL_EA))
    tree.close(fid)
    r = tree.create("g", READ_WRITE, wire.FILE_OVERWRITE_IF, contexts=[(b"ExtA", full_ea_list(big(["e1", "e2"])))])
    if r.status == wire.STATUS_SUCCESS:     # an overwrite that drops the file's EAs first
        fid = r.file_id
        assert set(k.lower() for k in names_of(tree.query_info(fid, FILE_INFO, FULL_EA))) == {"e1", "e2"}
        return
    assert r.status == wire.STATUS_EA_TOO_LARGE, r
    fid = tree.open("g", READ_WRITE)
    assert names_of(tree.query_info(fid, FILE_INFO, FULL_EA)) == before


def test_a_request_the_file_system_refuses_part_way_is_undone(smbconf, tmp_path):
    """On ext4 a file's xattrs fit in about 4 KiB: the second EA finds no room (the kernel's
    ENOSPC); the first, stored already, is taken back."""
    (tmp_path / "ext").mkdir(mode=0o777)
    (tmp_path / "ext").chmod(0o777)
    tree = tree_of(smbconf, tmp_path / "ext")
    fid = tree.open("h", READ_WRITE, wire.FILE_OPEN_IF)
    r = tree.set_info(fid, FILE_INFO, FULL_EA, full_ea_list([("x1", b"x" * 2000), ("x2", b"y" * 3000)]))
    if r.status == wire.STATUS_SUCCESS:
        pytest.skip("this file system holds both")
    assert names_of(tree.query_info(fid, FILE_INFO, FULL_EA)) == {}


def test_ea_support_no_shows_and_sets_none(smbconf, tmp_path):
    """`ea support = no` (as smbd): SET_INFO FileFullEaInformation and a CREATE's ExtA context
    are STATUS_EAS_NOT_SUPPORTED, and a file's EAs are not shown (one set on disk neither)."""
    share = tmp_path / "noea"
    share.mkdir(mode=0o777)
    share.chmod(0o777)
    (share / "has").write_bytes(b"x")
    os.setxattr(share / "has", "user.kept", b"value")
    server = smbconf("", {"share": f"path = {share}\nread only = no\nea support = no"})
    c = server.raw()
    assert c.negotiate((wire.SMB311,)).status == wire.STATUS_SUCCESS
    tree = c.tree(c.logon(USER, PASSWORD), "share")
    fid = tree.open("f", READ_WRITE, wire.FILE_OPEN_IF)
    r = tree.set_info(fid, FILE_INFO, FULL_EA, full_ea_list([("a", b"1")]))
    assert r.status == wire.STATUS_EAS_NOT_SUPPORTED, r
    r = tree.create("g", READ_WRITE, wire.FILE_OPEN_IF, contexts=[(b"ExtA", full_ea_list([("b", b"2")]))])
    assert r.status == wire.STATUS_EAS_NOT_SUPPORTED, r
    assert tree.create("g", READ_WRITE, wire.FILE_OPEN).status == wire.STATUS_OBJECT_NAME_NOT_FOUND
    kept = tree.open("has", READ_WRITE)
    assert names_of(tree.query_info(kept, FILE_INFO, FULL_EA)) == {}
    assert struct.unpack("<I", tree.query_info(kept, FILE_INFO, 7).buffer(2))[0] == 0     # FileEaInformation
    assert os.getxattr(share / "has", "user.kept") == b"value"      # (left as it was)
