"""A new file or directory is never left behind with only its mode bits speaking for it: when
what a CREATE must store on it (its inherited or SecD security descriptor, its DOS attributes,
the ExtA context's EAs) cannot be stored once it exists, the client gets the error (ENOSPC:
STATUS_DISK_FULL) and the file or directory is gone again, on a server started as root acting
as real Unix accounts, through smbprotocol.

The stores fail for real, without mocks: ext4 keeps a file's extended attributes in its inode
and one block (about 4 KiB), and refuses more with ENOSPC. A directory whose descriptor fits
that space but passes on CREATOR OWNER ACEs, each of which becomes a longer ACE naming the
new file's owner (two on a new directory), gives a child a descriptor that does not fit; so
do a SecD context just over that size and EAs that together exceed it. On a file system that
takes larger extended attributes (where such a store succeeds) the tests are skipped."""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))
from servers import spawn_for_accounts, stop, unix_accounts  # noqa: E402

if os.geteuid() != 0 or not shutil.which("useradd"):
    pytest.skip("acting as Unix accounts needs root (and useradd)", allow_module_level=True)
pytest.importorskip("smbprotocol")

from smbprotocol.create_contexts import CreateContextName  # noqa: E402
from smbprotocol_user import UserClient, create_context  # noqa: E402
from smbcore import full_ea_list  # noqa: E402

from smbring.smb import acl  # noqa: E402

PASSWORD = "Create-fails1"
SUFFIX = f"{os.getpid() % 100000}"
ALICE, BOB = f"scfa{SUFFIX}", f"scfb{SUFFIX}"
SD_XATTR = "user.smbring.sd"

READ_DATA, WRITE_DATA, SYNCHRONIZE = 0x1, 0x2, 0x00100000
FILE_ALL = 0x001F01FF
OPEN, CREATE = 1, 2
DIRECTORY_FILE, NON_DIRECTORY_FILE = 0x1, 0x40
DISK_FULL, NAME_NOT_FOUND = 0xC000007F, 0xC0000034
INHERIT_ALL = acl.OBJECT_INHERIT | acl.CONTAINER_INHERIT
CREATOR_ACES = 185      # the parent's descriptor (~3.8 KB) fits ext4's block; its child's does not
SECD_ACES = 200         # ~4.8 KB of ACEs naming a user


def xattr_space_is_small(where: Path) -> bool:
    """Whether the file system at `where` refuses a 6000-byte extended attribute (ext4 does,
    ENOSPC: its xattrs share one block), the limit these tests make the server meet."""
    probe = where / "xattr-probe"
    probe.write_bytes(b"")
    try:
        os.setxattr(probe, "user.probe", b"x" * 6000)
    except OSError:
        return True
    finally:
        probe.unlink()
    return False


@pytest.fixture(scope="module")
def accounts():
    yield from unix_accounts(ALICE, BOB)


@pytest.fixture(scope="module")
def server(accounts, tmp_path_factory):
    """share/ (root's 0755) with shared/ (1777), where each test makes the directory it needs."""
    tmp = tmp_path_factory.mktemp("create-fails")
    top = Path(tempfile.mkdtemp(prefix="smbring-create-fails-", dir="/tmp"))
    top.chmod(0o755)
    share = top / "share"
    shared = share / "shared"
    shared.mkdir(parents=True)
    share.chmod(0o755)
    shared.chmod(0o1777)
    if not xattr_space_is_small(shared):
        shutil.rmtree(top, ignore_errors=True)
        pytest.skip("this file system stores large extended attributes: nothing here fails to store")
    proc, port, log = spawn_for_accounts(tmp, share, (ALICE, BOB), PASSWORD)
    try:
        yield {"port": port, "share": share, "shared": shared, "accounts": accounts, "log": log}
    finally:
        stop(proc)
        shutil.rmtree(top, ignore_errors=True)


def client(server, user: str) -> UserClient:
    return UserClient("127.0.0.1", server["port"], user, PASSWORD, "share")


def user_sid(server, who: str) -> bytes:
    return acl.sid(22, 1, server["accounts"][who][0])


def directory(server, name: str, descriptor: bytes | None = None) -> Path:
    """shared/name, 0777 (the kernel lets anyone add to it), with `descriptor` stored on it."""
    path = server["shared"] / name
    path.mkdir()
    path.chmod(0o777)
    if descriptor is not None:
        os.setxattr(path, SD_XATTR, descriptor)
    return path


def bob_denied_inheriting_creator_aces(server) -> bytes:
    """A DACL that denies BOB everything, here and in all it passes on, allows Everyone all,
    and passes on CREATOR OWNER ACEs (inherit-only, distinct masks so none merges): small
    here, each a longer ACE naming the owner in a new file (and two in a new directory)."""
    creator = [acl.Ace(acl.ALLOWED, INHERIT_ALL | acl.INHERIT_ONLY, SYNCHRONIZE | i, acl.CREATOR_OWNER)
               for i in range(1, CREATOR_ACES + 1)]
    return acl.Descriptor(control=acl.SE_SELF_RELATIVE | acl.SE_DACL_PRESENT,
                          dacl=[acl.Ace(acl.DENIED, INHERIT_ALL, FILE_ALL, user_sid(server, BOB)),
                                acl.Ace(acl.ALLOWED, INHERIT_ALL, FILE_ALL, acl.EVERYONE)] + creator).pack()


def large_secd(server) -> bytes:
    """A SecD descriptor denying BOB, with more ACEs allowing ALICE than ext4 stores."""
    aces = [acl.Ace(acl.ALLOWED, 0, SYNCHRONIZE | i, user_sid(server, ALICE)) for i in range(1, SECD_ACES + 1)]
    return acl.Descriptor(control=acl.SE_SELF_RELATIVE | acl.SE_DACL_PRESENT,
                          dacl=[acl.Ace(acl.DENIED, 0, FILE_ALL, user_sid(server, BOB))] + aces).pack()


def refused_and_gone(server, where: Path, name: str, is_dir: bool, contexts=None) -> None:
    """ALICE's CREATE of where/name is answered STATUS_DISK_FULL, nothing is left under that
    name, and BOB (whom the descriptor would have denied) finds nothing there."""
    rel = rf"{where.relative_to(server['share'])}\{name}".replace("/", "\\")
    with client(server, ALICE) as c:
        status = c.status(rel, READ_DATA | WRITE_DATA if not is_dir else READ_DATA, CREATE,
                          options=DIRECTORY_FILE if is_dir else NON_DIRECTORY_FILE, contexts=contexts)
    assert status == DISK_FULL, hex(status)
    assert not os.path.lexists(where / name), sorted(os.listdir(where))
    with client(server, BOB) as c:
        assert c.status(rel, READ_DATA) == NAME_NOT_FOUND


@pytest.mark.parametrize("is_dir", [False, True], ids=["file", "directory"])
def test_an_inherited_descriptor_that_cannot_be_stored_leaves_nothing(server, is_dir):
    parent = directory(server, f"inheriting-{is_dir:d}", bob_denied_inheriting_creator_aces(server))
    refused_and_gone(server, parent, "child", is_dir)


@pytest.mark.parametrize("is_dir", [False, True], ids=["file", "directory"])
def test_a_secd_descriptor_that_cannot_be_stored_leaves_nothing(server, is_dir):
    parent = directory(server, f"secd-{is_dir:d}")
    secd = create_context(CreateContextName.SMB2_CREATE_SD_BUFFER, large_secd(server))
    refused_and_gone(server, parent, "child", is_dir, contexts=[secd])


def test_a_file_made_with_its_first_stream_is_undone_alike(server):
    """`child:s`, where child does not exist, makes child as a plain CREATE would: with the
    same descriptor, refused the same way, nothing left (no file, no stream)."""
    parent = directory(server, "stream-secd")
    secd = create_context(CreateContextName.SMB2_CREATE_SD_BUFFER, large_secd(server))
    with client(server, ALICE) as c:
        assert c.status(r"shared\stream-secd\child:s", READ_DATA | WRITE_DATA, CREATE, contexts=[secd]) == DISK_FULL
    assert os.listdir(parent) == []
    inheriting = directory(server, "stream-inheriting", bob_denied_inheriting_creator_aces(server))
    with client(server, ALICE) as c:
        assert c.status(r"shared\stream-inheriting\child:s", READ_DATA | WRITE_DATA, CREATE) == DISK_FULL
    assert os.listdir(inheriting) == []


@pytest.mark.parametrize("is_dir", [False, True], ids=["file", "directory"])
def test_eas_that_cannot_be_stored_leave_nothing(server, is_dir):
    parent = directory(server, f"eas-{is_dir:d}")
    exta = create_context(CreateContextName.SMB2_CREATE_EA_BUFFER,
                          full_ea_list([("FIRST", b"a" * 2500), ("SECOND", b"b" * 2500)]))
    refused_and_gone(server, parent, "child", is_dir, contexts=[exta])


def test_a_descriptor_that_fits_is_stored_as_before(server):
    """The same directory with fewer CREATOR OWNER ACEs: its child is made, with the
    inherited descriptor (BOB denied) and nothing else changed."""
    creator = [acl.Ace(acl.ALLOWED, INHERIT_ALL | acl.INHERIT_ONLY, SYNCHRONIZE | i, acl.CREATOR_OWNER)
               for i in range(1, 11)]
    parent = directory(server, "fits", acl.Descriptor(
        control=acl.SE_SELF_RELATIVE | acl.SE_DACL_PRESENT,
        dacl=[acl.Ace(acl.DENIED, INHERIT_ALL, FILE_ALL, user_sid(server, BOB)),
              acl.Ace(acl.ALLOWED, INHERIT_ALL, FILE_ALL, acl.EVERYONE)] + creator).pack())
    exta = create_context(CreateContextName.SMB2_CREATE_EA_BUFFER, full_ea_list([("SMALL", b"v" * 100)]))
    with client(server, ALICE) as c:
        assert c.status(r"shared\fits\child", READ_DATA | WRITE_DATA, CREATE, contexts=[exta]) == 0
        assert c.status(r"shared\fits\sub", READ_DATA, CREATE, options=DIRECTORY_FILE, contexts=[exta]) == 0
    for name in ("child", "sub"):
        stored = acl.parse(os.getxattr(parent / name, SD_XATTR))
        assert stored.dacl[0].type == acl.DENIED and stored.dacl[0].sid == user_sid(server, BOB)
        assert os.getxattr(parent / name, "user.SMALL") == b"v" * 100
    with client(server, BOB) as c:
        assert c.status(r"shared\fits\child", READ_DATA) == 0xC0000022
