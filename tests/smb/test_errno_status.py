"""What a client gets when the kernel refuses to store an EA or a security descriptor: a
SET_INFO through the connection on a real directory of a real file system (ext4 and tmpfs
keep extended attributes differently: ext4 in the inode and one 4 KiB block, tmpfs in
memory), and the errno table checked against Samba's (source3/lib/errmap_unix.c,
map_nt_error_from_unix, which smbd uses)."""
import errno
import os
import struct
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import smbcore
from sansio_client import Client

from smbring.smb import acl, wire
from smbring.smb.errors import status_for_oserror

FULL_EA = 15
EVERYONE = acl.sid(1, 0)
ACCESS_ALLOWED = 0


def file_system(path: Path) -> str:
    return subprocess.run(["stat", "-f", "-c", "%T", str(path)], capture_output=True, text=True,
                          check=True).stdout.strip()


def tmpfs_dir() -> Path:
    """A fresh directory on a tmpfs (/dev/shm), or a skip where there is none."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or file_system(shm) != "tmpfs" or not os.access(shm, os.W_OK):
        pytest.skip("no writable tmpfs at /dev/shm")
    return Path(tempfile.mkdtemp(dir=shm, prefix="smbring-errno-"))


@pytest.fixture(params=["ext4", "tmpfs"])
def share(request, tmp_path):
    if request.param == "ext4":
        if file_system(tmp_path) != "ext2/ext3":    # (stat's name for ext4 too)
            pytest.skip(f"{tmp_path} is not on ext4")
        yield request.param, tmp_path
        return
    d = tmpfs_dir()
    try:
        yield request.param, d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def client(share):
    c = Client(share[1], credits=64)
    yield c
    c.conn.close_all()


def ea_entry(name: bytes, value: bytes) -> bytes:
    """One FILE_FULL_EA_INFORMATION (MS-FSCC 2.4.15)."""
    return struct.pack("<IBBH", 0, 0, len(name), len(value)) + name + b"\0" + value


def large_descriptor(aces: int) -> bytes:
    """A self-relative descriptor with only a DACL of `aces` ACEs of 20 bytes (Everyone, all
    access), the first granting what the test goes on to need."""
    d = acl.Descriptor(control=acl.SE_SELF_RELATIVE | acl.SE_DACL_PRESENT,
                       dacl=[acl.Ace(ACCESS_ALLOWED, 0, acl.FILE_ALL_ACCESS - i % 2, EVERYONE)
                             for i in range(aces)])
    return d.pack(acl.DACL)


def set_security(c: Client, fid: bytes, blob: bytes) -> int:
    charge = max(1, -(-len(blob) // 65536))
    return c.request(wire.SET_INFO, smbcore.set_info_body(fid, wire.INFO_SECURITY, 0, blob, acl.DACL),
                     charge=charge)[0]


def test_an_ea_too_large_for_ext4s_xattr_block_is_disk_full_and_tmpfs_keeps_it(client, share):
    # ext4 refuses a value larger than its one xattr block with ENOSPC: STATUS_DISK_FULL, as
    # Samba maps ENOSPC; tmpfs keeps it
    fid = client.open("f")
    status = client.set_info(fid, FULL_EA, ea_entry(b"BIG", b"v" * 5000))
    assert status == (wire.STATUS_DISK_FULL if share[0] == "ext4" else wire.STATUS_SUCCESS)
    assert client.set_info(fid, FULL_EA, ea_entry(b"SMALL", b"v" * 100)) == wire.STATUS_SUCCESS


def test_a_descriptor_over_the_kernels_64_kib_xattr_limit_is_ea_too_large(client):
    # 3276 ACEs of 20 bytes: a DACL of 65528 bytes, the largest an ACL's 16-bit size allows,
    # stored with the file's owner and group: over XATTR_SIZE_MAX (65536), E2BIG on every
    # file system. Samba has no E2BIG in its table; MS-FSA (2.1.5.15.5) fails extended
    # attributes that do not fit with STATUS_EA_TOO_LARGE, and the descriptor is one
    fid = client.open("f")
    blob = large_descriptor(3276)
    assert set_security(client, fid, blob) == wire.STATUS_EA_TOO_LARGE
    # the file keeps its descriptor, and a small one is still stored
    assert set_security(client, fid, large_descriptor(2)) == wire.STATUS_SUCCESS


def test_an_ea_name_the_kernel_finds_too_long_is_samba_s_integer_overflow(client):
    # an EA name of 251..255 bytes is valid on the wire (MS-FSCC: EaNameLength is 8 bits), but
    # the stored xattr name ("user." and it) is over the kernel's 255: ERANGE, which Samba
    # maps to STATUS_INTEGER_OVERFLOW
    fid = client.open("f")
    assert client.set_info(fid, FULL_EA, ea_entry(b"N" * 252, b"v")) == wire.STATUS_INTEGER_OVERFLOW
    assert client.set_info(fid, FULL_EA, ea_entry(b"N" * 250, b"v")) == wire.STATUS_SUCCESS


# errno -> Samba's NTSTATUS (source3/lib/errmap_unix.c), where ours had only the fallback
SAMBAS = {
    errno.E2BIG: wire.STATUS_EA_TOO_LARGE,          # (not Samba's: MS-FSA's, see above)
    errno.EOVERFLOW: wire.STATUS_ALLOTTED_SPACE_EXCEEDED,
    errno.ENXIO: wire.STATUS_ILLEGAL_FUNCTION,
    errno.ENODEV: wire.STATUS_DEVICE_DOES_NOT_EXIST,
    errno.ETIMEDOUT: wire.STATUS_IO_TIMEOUT,
    errno.EINTR: wire.STATUS_RETRY,
    errno.ENODATA: wire.STATUS_NOT_FOUND,           # ENOATTR on Linux
    errno.ERANGE: wire.STATUS_INTEGER_OVERFLOW,
    errno.EOPNOTSUPP: wire.STATUS_NOT_SUPPORTED,
    errno.ENOTSUP: wire.STATUS_NOT_SUPPORTED,
    errno.ECANCELED: wire.STATUS_CANCELLED,
    errno.ENOBUFS: wire.STATUS_INSUFFICIENT_RESOURCES,
}


@pytest.mark.parametrize("code", sorted(SAMBAS), ids=lambda code: errno.errorcode[code])
def test_an_errno_gets_sambas_status(code):
    assert status_for_oserror(OSError(code, os.strerror(code))) == SAMBAS[code]


@pytest.mark.parametrize("code", [errno.ESTALE, errno.ENOLINK])
def test_an_errno_samba_does_not_map_is_unsuccessful_never_access_denied(code):
    # Samba answers STATUS_ACCESS_DENIED for an errno it does not know; a client would look
    # for a permission problem
    assert status_for_oserror(OSError(code, os.strerror(code))) == wire.STATUS_UNSUCCESSFUL
