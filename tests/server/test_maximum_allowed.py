"""MAXIMUM_ALLOWED against a stored security descriptor, through a real `smbring serve` and a
raw SMB2 client: every access bit asked for beside it (smbtorture's smb2.maximum_allowed
probe) is granted only where the DACL, the owner's implicit rights or the parent directory
give it, and what the handle holds never exceeds that."""
from __future__ import annotations

import struct
import sys
from pathlib import Path

import pytest

from servers import PASSWORD, USER
from smbring.smb import acl, wire

sys.path.insert(0, str(Path(__file__).parent.parent / "security"))   # raw.py
from raw import RawClient  # noqa: E402

FILE_READ = 0x00120089          # FILE_GENERIC_READ: what the DACL grants Authenticated Users
ACCESS_INFORMATION = 8
STATUS_PRIVILEGE_NOT_HELD = 0xC0000061
# what the handle may hold: the DACL's read rights, the owner's READ_CONTROL and WRITE_DAC,
# DELETE from the parent's FILE_DELETE_CHILD, FILE_READ_ATTRIBUTES from its FILE_LIST_DIRECTORY
MOST = FILE_READ | wire.DELETE | acl.READ_CONTROL | acl.WRITE_DAC
GRANTED_WITH_IT = FILE_READ | wire.DELETE | acl.WRITE_DAC | wire.GENERIC_READ | (1 << 25)


@pytest.fixture
def tree(server):
    c = RawClient(server["port"])
    c.negotiate()
    t = c.tree(c.logon(USER, PASSWORD), "share")
    d = acl.Descriptor(control=acl.SE_SELF_RELATIVE | acl.SE_DACL_PRESENT,
                       dacl=[acl.Ace(acl.ALLOWED, 0, FILE_READ, acl.AUTHENTICATED_USERS)])
    r = t.create("max.txt", wire.FILE_ALL_ACCESS, wire.FILE_CREATE, contexts=[(b"SecD", d.pack())])
    assert r.status == wire.STATUS_SUCCESS, r
    t.close(r.file_id)
    yield t
    c.close()


def test_maximum_allowed_grants_no_more_than_the_descriptor_gives(tree):
    for bit in range(32):
        mask = wire.MAXIMUM_ALLOWED | (1 << bit)
        r = tree.create("max.txt", mask, wire.FILE_OPEN)
        if (1 << bit) == acl.ACCESS_SYSTEM_SECURITY:
            assert r.status == STATUS_PRIVILEGE_NOT_HELD, (bit, r)
            continue
        if not (1 << bit) & GRANTED_WITH_IT:
            # writing, WRITE_OWNER, GENERIC_WRITE/ALL/EXECUTE (FILE_EXECUTE is not in the
            # DACL) and the reserved bits
            assert r.status == wire.STATUS_ACCESS_DENIED, (bit, r)
            continue
        assert r.status == wire.STATUS_SUCCESS, (bit, r)
        access = tree.query_info(r.file_id, wire.INFO_FILE, ACCESS_INFORMATION).buffer(2)
        held = struct.unpack("<I", access)[0]
        assert held & ~MOST == 0 and held & FILE_READ == FILE_READ, (bit, hex(held))
        assert tree.write(r.file_id, b"x").status == wire.STATUS_ACCESS_DENIED, bit
        tree.close(r.file_id)


def test_maximal_access_reported_is_what_the_descriptor_gives(tree):
    r = tree.create("max.txt", wire.MAXIMUM_ALLOWED, wire.FILE_OPEN, contexts=[(b"MxAc", b"")])
    assert r.status == wire.STATUS_SUCCESS, r
    offset, length = struct.unpack_from("<II", r.body, 80)
    contexts = r.raw[offset:offset + length]
    data_off = struct.unpack_from("<H", contexts, 10)[0]
    status, maximal = struct.unpack_from("<II", contexts, data_off)
    assert status == 0 and maximal & ~MOST == 0 and maximal & FILE_READ == FILE_READ, hex(maximal)
    tree.close(r.file_id)
