"""SET_INFO of a security descriptor's group (GROUP_SECURITY_INFORMATION), tried by real Unix
accounts against a server started as root.

As in Samba (source3/smbd/posix_acls.c: `unpack_nt_owners`, `set_nt_acl`, `try_chown`), the
group a descriptor names is the file's Unix group: naming it changes the file's group (a
chown, made as the user, so the kernel's rule applies: the file's owner may give it only to a
group he is a member of, root to any), and a SID that is no Unix group is refused
(STATUS_INVALID_OWNER). A chown the kernel refuses is STATUS_ACCESS_DENIED and nothing is
stored. WRITE_OWNER on the handle is needed first.

Before, any group SID was stored as sent and the file's group never changed: ALICE could make
her file's descriptor claim it belonged to a group she is no member of (a group an
administrator reading the descriptor would trust), and naming one of her own groups changed
nothing on the file."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from raw import UserTree
from servers import sticky_share_server, unix_accounts_with_group

from smbring.smb import acl, wire

if os.geteuid() != 0 or not shutil.which("useradd") or not shutil.which("groupadd"):
    pytest.skip("acting as Unix accounts needs root (and useradd, groupadd)", allow_module_level=True)

PASSWORD = "Group-pw1"
SUFFIX = f"{os.getpid() % 100000}"
ALICE, BOB = f"sgra{SUFFIX}", f"sgrb{SUFFIX}"
EXTRA = f"sgrx{SUFFIX}"             # a group ALICE is a member of (not her primary one)
READ_WRITE = 0x0012019F
READ_CONTROL, WRITE_DAC, WRITE_OWNER = acl.READ_CONTROL, acl.WRITE_DAC, acl.WRITE_OWNER
STATUS_INVALID_OWNER = 0xC000005A


@pytest.fixture(scope="module")
def accounts():
    yield from unix_accounts_with_group((ALICE, BOB), EXTRA, ALICE)


@pytest.fixture(scope="module")
def server(accounts, tmp_path_factory):
    for started in sticky_share_server(tmp_path_factory.mktemp("group"), "smbring-group-", (ALICE, BOB), PASSWORD):
        yield dict(started, accounts=accounts)


def group_sid(gid: int) -> bytes:
    return acl.sid(22, 2, gid)


def group_only(sid: bytes) -> bytes:
    return acl.Descriptor(group=sid).pack(acl.GROUP)


class Conn(UserTree):
    def __init__(self, server, user: str):
        super().__init__(server["port"], user, PASSWORD)

    def set_group(self, fid: bytes, sid: bytes) -> int:
        return self.tree.set_info(fid, wire.INFO_SECURITY, 0, group_only(sid), acl.GROUP).status

    def group_of(self, fid: bytes) -> bytes:
        r = self.tree.query_info(fid, wire.INFO_SECURITY, 0, additional=acl.GROUP)
        assert r.status == wire.STATUS_SUCCESS, r
        return acl.parse(r.buffer(2, "<HI")).group


def alices_file(server, name: str, mode: int = 0o664) -> Path:
    path = server["share"] / name
    path.write_text("alice's")
    uid, gid = server["accounts"][ALICE]
    os.chown(path, uid, gid)
    path.chmod(mode)
    return path


def test_the_owner_cannot_give_her_file_to_a_group_she_is_not_in(server):
    """ALICE owns the file and holds WRITE_OWNER: BOB's group is refused (the kernel would
    refuse her chgrp too), and neither the file nor its descriptor names it after."""
    path = alices_file(server, "not-mine.txt")
    alice_gid = server["accounts"][ALICE][1]
    with Conn(server, ALICE) as c:
        fid = c.tree.open("not-mine.txt", READ_CONTROL | WRITE_OWNER)
        assert c.set_group(fid, group_sid(server["accounts"][BOB][1])) == wire.STATUS_ACCESS_DENIED
        assert c.set_group(fid, group_sid(0)) == wire.STATUS_ACCESS_DENIED         # root's group
        assert c.group_of(fid) == group_sid(alice_gid)
    assert path.stat().st_gid == alice_gid


def test_the_owner_gives_her_file_to_a_group_she_is_in(server):
    """Her supplementary group: the file's Unix group changes, and the descriptor says so."""
    path = alices_file(server, "to-extra.txt")
    extra = server["accounts"]["extra"]
    with Conn(server, ALICE) as c:
        fid = c.tree.open("to-extra.txt", READ_CONTROL | WRITE_OWNER)
        assert c.set_group(fid, group_sid(extra)) == wire.STATUS_SUCCESS
        assert path.stat().st_gid == extra
        assert c.group_of(fid) == group_sid(extra)
        # and back to her primary group
        assert c.set_group(fid, group_sid(server["accounts"][ALICE][1])) == wire.STATUS_SUCCESS
    assert path.stat().st_gid == server["accounts"][ALICE][1]


def test_a_sid_that_is_no_unix_group_is_an_invalid_owner(server):
    """A domain SID, BUILTIN\\Administrators, a Unix user's SID, Everyone: no Unix group,
    STATUS_INVALID_OWNER (Samba's unpack_nt_owners)."""
    path = alices_file(server, "odd-sids.txt")
    with Conn(server, ALICE) as c:
        fid = c.tree.open("odd-sids.txt", READ_CONTROL | WRITE_OWNER)
        for sid in (acl.sid(5, 21, 1, 2, 3, 513), acl.sid(5, 32, 544), acl.sid(22, 1, 0), acl.EVERYONE):
            assert c.set_group(fid, sid) == STATUS_INVALID_OWNER, sid.hex()
        assert c.group_of(fid) == group_sid(server["accounts"][ALICE][1])
    assert path.stat().st_gid == server["accounts"][ALICE][1]


def test_setting_the_group_needs_write_owner(server):
    alices_file(server, "no-write-owner.txt")
    with Conn(server, ALICE) as c:
        fid = c.tree.open("no-write-owner.txt", READ_CONTROL | WRITE_DAC)
        assert c.set_group(fid, group_sid(server["accounts"]["extra"])) == wire.STATUS_ACCESS_DENIED
        assert c.set_group(fid, group_sid(server["accounts"][ALICE][1])) == wire.STATUS_ACCESS_DENIED


def test_a_non_owner_with_write_owner_cannot_change_the_group(server):
    """ALICE's descriptor grants BOB full control (WRITE_OWNER included): he may name the
    file's group as it is, but not give the file to his own group, which only its owner
    (being a member) or root may (the kernel refuses his chown). The file is 0666: BOB may
    write it, so the kernel lets him store a descriptor at all."""
    path = alices_file(server, "bob-full.txt", 0o666)
    alice_gid, bob_gid = server["accounts"][ALICE][1], server["accounts"][BOB][1]
    with Conn(server, ALICE) as c:
        fid = c.tree.open("bob-full.txt", READ_CONTROL | WRITE_DAC)
        dacl = acl.Descriptor(control=acl.SE_SELF_RELATIVE | acl.SE_DACL_PRESENT, dacl=[
            acl.Ace(acl.ALLOWED, 0, acl.FILE_ALL_ACCESS, acl.sid(22, 1, server["accounts"][ALICE][0])),
            acl.Ace(acl.ALLOWED, 0, acl.FILE_ALL_ACCESS, acl.sid(22, 1, server["accounts"][BOB][0]))])
        r = c.tree.set_info(fid, wire.INFO_SECURITY, 0, dacl.pack(acl.DACL), acl.DACL)
        assert r.status == wire.STATUS_SUCCESS, r
    with Conn(server, BOB) as c:
        fid = c.tree.open("bob-full.txt", READ_CONTROL | WRITE_OWNER)
        assert c.set_group(fid, group_sid(bob_gid)) == wire.STATUS_ACCESS_DENIED
        assert c.set_group(fid, group_sid(alice_gid)) == wire.STATUS_SUCCESS       # as it is
        assert c.group_of(fid) == group_sid(alice_gid)
    assert path.stat().st_gid == alice_gid


def test_a_directory_follows_the_same_rule(server):
    path = server["share"] / "alice-dir"
    path.mkdir()
    os.chown(path, *server["accounts"][ALICE])
    with Conn(server, ALICE) as c:
        r = c.tree.create("alice-dir", READ_CONTROL | WRITE_OWNER, wire.FILE_OPEN, options=wire.FILE_DIRECTORY_FILE)
        assert r.status == wire.STATUS_SUCCESS, r
        assert c.set_group(r.file_id, group_sid(server["accounts"][BOB][1])) == wire.STATUS_ACCESS_DENIED
        assert c.set_group(r.file_id, group_sid(server["accounts"]["extra"])) == wire.STATUS_SUCCESS
    assert path.stat().st_gid == server["accounts"]["extra"]


def test_a_create_cannot_name_a_group_its_creator_is_not_in(server):
    """A CREATE's SecD context is checked as SET_INFO checks a group: another user's group
    STATUS_ACCESS_DENIED, a SID that is no Unix group STATUS_INVALID_OWNER; nothing is made.
    One of the creator's own groups is taken."""
    with Conn(server, ALICE) as c:
        for name, sid, status in (("secd-bob.txt", group_sid(server["accounts"][BOB][1]), wire.STATUS_ACCESS_DENIED),
                                  ("secd-admins.txt", acl.sid(5, 32, 544), STATUS_INVALID_OWNER),
                                  ("secd-extra.txt", group_sid(server["accounts"]["extra"]), wire.STATUS_SUCCESS)):
            r = c.tree.create(name, READ_WRITE, wire.FILE_CREATE, contexts=[(b"SecD", group_only(sid))])
            assert r.status == status, (name, r)
            assert (server["share"] / name).exists() == (status == wire.STATUS_SUCCESS)


def test_server_log_is_clean(server):
    text = server["log"].read_text()
    assert "Traceback" not in text, text[-3000:]
