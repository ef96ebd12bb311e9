"""What the fuzzer found in the core, each fixed and held here (sans-I/O, real files)."""
import os
import struct

import pytest

from sansio_client import Client, open_descriptors
from smbring.smb import security, wire
from smbring.vfs.posix import PosixVFS

GENERIC_READ = 0x80000000
DELETE = 0x10000


def test_a_create_that_fails_after_the_open_leaks_no_descriptor(tmp_path):
    share = tmp_path / "share"
    share.mkdir()
    (share / "ro.txt").write_bytes(b"data")
    os.chmod(share / "ro.txt", 0o444)           # opened read-only: truncating it fails
    client = Client(share)
    before = open_descriptors()
    for _ in range(20):
        status, _fid = client.create("ro.txt", access=GENERIC_READ, disposition=wire.FILE_OVERWRITE)
        assert status != 0
    assert open_descriptors() == before
    assert not client.conn.opens and (share / "ro.txt").read_bytes() == b"data"


def test_the_share_root_is_never_deleted(tmp_path):
    share = tmp_path / "share"
    share.mkdir()
    client = Client(share)
    status, _ = client.create("", access=DELETE, options=wire.FILE_DELETE_ON_CLOSE | 0x1,
                              disposition=wire.FILE_OPEN)
    assert status == wire.STATUS_ACCESS_DENIED
    root = client.open("", options=0x1, disposition=wire.FILE_OPEN)
    assert client.delete_on_close(root) == wire.STATUS_ACCESS_DENIED
    assert client.close(root) == 0
    assert share.is_dir()


def test_the_root_has_no_parent_and_a_failed_rename_leaks_nothing(tmp_path):
    (tmp_path / "f").write_bytes(b"x")
    fs = PosixVFS(str(tmp_path))
    try:
        before = open_descriptors()
        with pytest.raises(PermissionError):
            fs.parent([])
        with pytest.raises(PermissionError):
            fs.rename(["f"], [], replace=True)
        assert open_descriptors() == before
    finally:
        fs.close()


def test_a_failed_reauthentication_closes_what_the_session_opened(tmp_path):
    share = tmp_path / "share"
    share.mkdir()
    client = Client(share)
    client.open("held.txt")
    assert client.conn.opens
    client.conn.end_session(1)
    assert not client.conn.opens and 1 not in client.conn.sessions


def test_a_transform_header_whose_flags_are_not_1_is_refused():
    key = os.urandom(16)
    header, body = security.encrypt(security.AES_128_GCM, key, 7, b"x" * 80)
    frame = bytearray(header + bytes(body))
    assert security.parse_transform(frame) == (7, 80)
    struct.pack_into("<H", frame, 42, 2)
    with pytest.raises(security.DecryptError):
        security.parse_transform(frame)


@pytest.mark.parametrize("strict", [False, True])
def test_allocation_reserves_disk_only_under_strict_allocate(tmp_path, strict):
    share = tmp_path / "share"
    share.mkdir()
    client = Client(share, share={"strict_allocate": strict})
    fid = client.open("alloc.bin")
    assert client.set_info(fid, 19, struct.pack("<Q", 64 << 20)) == 0      # FileAllocationInformation
    status, standard = client.query_info(fid, 5)                              # FileStandardInformation
    assert status == 0 and struct.unpack_from("<Q", standard, 0)[0] == 64 << 20   # reported as set
    reserved = os.stat(share / "alloc.bin").st_blocks * 512
    assert (reserved >= 64 << 20) == strict
