"""`inherit owner` (as Samba's): on such a share a new file or directory is given to the owner
of the directory it is made in (`unix only`: as Unix owner; `windows and unix`: its stored
descriptor names that owner too), not to its creator; a share without it leaves the creator
the owner. Real Unix accounts against a server started as root: BOB makes files in ALICE's
directory, which he may write."""
from __future__ import annotations

import os
import shutil

import pytest
from raw import UserTree
from servers import project_share_server, unix_accounts

from smbring.smb import acl, wire

if os.geteuid() != 0 or not shutil.which("useradd"):
    pytest.skip("acting as Unix accounts needs root (and useradd)", allow_module_level=True)

PASSWORD = "Inherit-pw1"
SUFFIX = f"{os.getpid() % 100000}"
ALICE, BOB = f"inoa{SUFFIX}", f"inob{SUFFIX}"
READ_WRITE = 0x0012019F


@pytest.fixture(scope="module")
def accounts():
    yield from unix_accounts(ALICE, BOB)


def serve(tmp_path_factory, accounts, setting: str):
    return project_share_server(tmp_path_factory.mktemp("inherit"), "smbring-inherit-", (ALICE, BOB), PASSWORD,
                                share_options=f"inherit owner = {setting}\n")


def alices_directory(started, accounts, name: str):
    path = started["share"] / name
    path.mkdir()
    os.chown(path, *accounts[ALICE])
    path.chmod(0o777)
    return path


def made_by_bob(started, directory: str, sd: bytes | None = None):
    with UserTree(started["port"], BOB, PASSWORD) as c:
        contexts = [(b"SecD", sd)] if sd else []
        r = c.tree.create(f"{directory}\\bobs.txt", READ_WRITE, wire.FILE_CREATE, contexts=contexts)
        assert r.status == wire.STATUS_SUCCESS, r
        assert c.tree.write(r.file_id, b"bob's").status == wire.STATUS_SUCCESS   # (his open still writes)
        c.tree.close(r.file_id)
        r = c.tree.create(f"{directory}\\bobsdir", wire.GENERIC_READ, wire.FILE_CREATE,
                          options=wire.FILE_DIRECTORY_FILE)
        assert r.status == wire.STATUS_SUCCESS, r
        c.tree.close(r.file_id)


@pytest.mark.parametrize("setting", ["unix only", "windows and unix"])
def test_new_files_go_to_their_directorys_owner(tmp_path_factory, accounts, setting):
    for started in serve(tmp_path_factory, accounts, setting):
        directory = alices_directory(started, accounts, "alices")
        # a descriptor naming BOB as owner, with a DACL letting everyone do everything
        sd = acl.Descriptor(owner=acl.unix_user(accounts[BOB][0]),
                            dacl=[acl.Ace(0, 0, 0x001F01FF, acl.EVERYONE)]).pack()
        made_by_bob(started, "alices", sd)
        alice = accounts[ALICE][0]
        assert os.stat(directory / "bobs.txt").st_uid == alice
        assert os.stat(directory / "bobsdir").st_uid == alice
        assert (directory / "bobs.txt").read_bytes() == b"bob's"
        stored = acl.parse(os.getxattr(directory / "bobs.txt", "user.smbring.sd"))
        expected = acl.unix_user(alice if setting == "windows and unix" else accounts[BOB][0])
        assert stored.owner == expected


def test_without_it_the_creator_owns_them(tmp_path_factory, accounts):
    for started in serve(tmp_path_factory, accounts, "no"):
        directory = alices_directory(started, accounts, "alices")
        made_by_bob(started, "alices")
        assert os.stat(directory / "bobs.txt").st_uid == accounts[BOB][0]
        assert os.stat(directory / "bobsdir").st_uid == accounts[BOB][0]
