"""`dos filetimes` (default yes, as Samba): an account that may write a file may set its
times, as on Windows, though POSIX lets only its owner set them; `no` leaves that to the
owner. Real Unix accounts against a server started as root: BOB sets the times of ALICE's
file, which he may write (0666), and of one he may only read (0644), where he is refused."""
from __future__ import annotations

import os
import shutil
import struct

import pytest
from raw import UserTree
from servers import project_share_server, unix_accounts

from smbring.smb import wire

if os.geteuid() != 0 or not shutil.which("useradd"):
    pytest.skip("acting as Unix accounts needs root (and useradd)", allow_module_level=True)

PASSWORD = "Filetimes-pw1"
SUFFIX = f"{os.getpid() % 100000}"
ALICE, BOB = f"dfta{SUFFIX}", f"dftb{SUFFIX}"
BASIC = 4
WHEN = 132_000_000_000_000_000          # 2019-04-15, as NT time
UNIX_WHEN = (WHEN - 116_444_736_000_000_000) * 100


@pytest.fixture(scope="module")
def accounts():
    yield from unix_accounts(ALICE, BOB)


@pytest.fixture(scope="module")
def server(accounts, tmp_path_factory):
    for started in project_share_server(tmp_path_factory.mktemp("filetimes"), "smbring-filetimes-",
                                        (ALICE, BOB), PASSWORD):
        yield dict(started, accounts=accounts)


@pytest.fixture(scope="module")
def posix_server(accounts, tmp_path_factory):
    for started in project_share_server(tmp_path_factory.mktemp("filetimes-no"), "smbring-filetimes-",
                                        (ALICE, BOB), PASSWORD, share_options="dos filetimes = no\n"):
        yield dict(started, accounts=accounts)


def alices(server, name: str, mode: int):
    path = server["share"] / "shared" / name
    path.write_bytes(b"alice's data")
    os.chown(path, *server["accounts"][ALICE])
    path.chmod(mode)
    return path


def set_times_as_bob(server, name: str, access: int) -> int:
    with UserTree(server["port"], BOB, PASSWORD) as c:
        r = c.tree.create(f"shared\\{name}", access)
        if r.status != wire.STATUS_SUCCESS:
            return r.status
        basic = struct.pack("<QQQQII", 0, WHEN, WHEN, 0, 0, 0)
        status = c.tree.set_info(r.file_id, wire.INFO_FILE, BASIC, basic).status
        c.tree.close(r.file_id)
        return status


def test_an_account_that_may_write_a_file_sets_its_times(server):
    path = alices(server, "writable.txt", 0o666)
    assert set_times_as_bob(server, "writable.txt", 0x0012019F) == wire.STATUS_SUCCESS
    assert os.stat(path).st_mtime_ns == UNIX_WHEN
    assert os.stat(path).st_uid == server["accounts"][ALICE][0]        # still hers


def test_an_account_that_may_only_read_a_file_does_not(server):
    path = alices(server, "readable.txt", 0o644)
    before = os.stat(path).st_mtime_ns
    status = set_times_as_bob(server, "readable.txt", 0x00120089 | 0x100)   # + WRITE_ATTRIBUTES
    assert status == wire.STATUS_ACCESS_DENIED
    assert os.stat(path).st_mtime_ns == before


def test_dos_filetimes_no_leaves_times_to_the_owner(posix_server):
    path = alices(posix_server, "writable.txt", 0o666)
    before = os.stat(path).st_mtime_ns
    assert set_times_as_bob(posix_server, "writable.txt", 0x0012019F) == wire.STATUS_ACCESS_DENIED
    assert os.stat(path).st_mtime_ns == before


def set_attributes_as_bob(server, name: str, attributes: int) -> int:
    with UserTree(server["port"], BOB, PASSWORD) as c:
        r = c.tree.create(f"shared\\{name}", 0x0012019F)
        if r.status != wire.STATUS_SUCCESS:
            return r.status
        basic = struct.pack("<QQQQII", 0, 0, 0, 0, attributes, 0)
        status = c.tree.set_info(r.file_id, wire.INFO_FILE, BASIC, basic).status
        c.tree.close(r.file_id)
        return status


def test_an_account_granted_write_attributes_sets_read_only(server):
    """READONLY is the file's write bits here; Windows lets anyone granted
    FILE_WRITE_ATTRIBUTES set it (Samba stores it with its own rights), POSIX only the owner:
    the server drops the write bits for him, and changes nothing else."""
    path = alices(server, "attributes.txt", 0o666)
    assert set_attributes_as_bob(server, "attributes.txt", wire.ATTR_READONLY) == wire.STATUS_SUCCESS
    st = os.stat(path)
    assert st.st_mode & 0o7777 == 0o444 and st.st_uid == server["accounts"][ALICE][0]
