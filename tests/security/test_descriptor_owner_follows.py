"""A security descriptor's owner and group are the file's Unix owner and group, as in Samba
(source3/smbd/posix_acls.c: `unpack_nt_owners`, `set_nt_acl`, `try_chown`), tried by real Unix
accounts against a server started as root.

- SET_INFO(OWNER) by root (a share with `force user = root`) naming a Unix user
  (S-1-22-1-uid) gives the file to that user (a chown); a SID that names no Unix user
  (BUILTIN\\Administrators, Everyone, a domain SID, a group's SID, uid 4294967295, which
  fchown takes for "leave as it is") is STATUS_INVALID_OWNER and nothing changes.
  Before, root's new owner was stored in the descriptor and the file kept its Unix owner:
  the descriptor said the file was CAROL's while ALICE kept the owner's rights over it.
- A CREATE whose SecD context names one of the creator's other groups makes a file (or a
  directory) of that Unix group (a chown made as the creator, so the kernel's membership
  rule applies); root's naming another owner makes the file that user's. Before, the
  descriptor named them and the file kept its creator and the creator's primary group.
- A group SID of gid 4294967295 is no group (it would be fchown's "leave as it is": the
  descriptor would name a group the file does not have)."""
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

PASSWORD = "Owner-pw1"
SUFFIX = f"{os.getpid() % 100000}"
ALICE, BOB, CAROL = f"dofa{SUFFIX}", f"dofb{SUFFIX}", f"dofc{SUFFIX}"
EXTRA = f"dofx{SUFFIX}"             # a group ALICE is a member of (not her primary one)
READ_WRITE = 0x0012019F
READ_CONTROL, WRITE_DAC, WRITE_OWNER = acl.READ_CONTROL, acl.WRITE_DAC, acl.WRITE_OWNER
STATUS_INVALID_OWNER = 0xC000005A
NO_ID = 0xFFFFFFFF


@pytest.fixture(scope="module")
def accounts():
    yield from unix_accounts_with_group((ALICE, BOB, CAROL), EXTRA, ALICE)


@pytest.fixture(scope="module")
def server(accounts, tmp_path_factory):
    """`share` (1777) as each user, `asroot` on the same directory with `force user = root`."""
    for started in sticky_share_server(tmp_path_factory.mktemp("owner"), "smbring-owner-", (ALICE, BOB, CAROL),
                                       PASSWORD, more="[asroot]\npath = {share}\nread only = no\nforce user = root\n"):
        yield dict(started, accounts=accounts)


def user_sid(uid: int) -> bytes:
    return acl.sid(22, 1, uid)


def group_sid(gid: int) -> bytes:
    return acl.sid(22, 2, gid)


class Conn(UserTree):
    def __init__(self, server, user: str, share: str = "share"):
        super().__init__(server["port"], user, PASSWORD, share)

    def set_owner(self, fid: bytes, sid: bytes) -> int:
        return self.tree.set_info(fid, wire.INFO_SECURITY, 0, acl.Descriptor(owner=sid).pack(acl.OWNER),
                                  acl.OWNER).status

    def set_group(self, fid: bytes, sid: bytes) -> int:
        return self.tree.set_info(fid, wire.INFO_SECURITY, 0, acl.Descriptor(group=sid).pack(acl.GROUP),
                                  acl.GROUP).status

    def descriptor(self, fid: bytes) -> acl.Descriptor:
        r = self.tree.query_info(fid, wire.INFO_SECURITY, 0, additional=acl.OWNER | acl.GROUP)
        assert r.status == wire.STATUS_SUCCESS, r
        return acl.parse(r.buffer(2, "<HI"))


def alices_file(server, name: str, mode: int = 0o644) -> Path:
    path = server["share"] / name
    path.write_text("alice's")
    os.chown(path, *server["accounts"][ALICE])
    path.chmod(mode)
    return path


# -- (a) root names another owner: the file follows ----------------------------------------------

def test_root_giving_a_file_to_another_user_chowns_it(server):
    """Root (force user) names CAROL the owner of ALICE's file: the file becomes CAROL's, and
    the descriptor and the file agree. ALICE, no longer the owner, loses the owner's rights
    (she may no longer change its descriptor); CAROL has them."""
    path = alices_file(server, "to-carol.txt")
    carol_uid = server["accounts"][CAROL][0]
    with Conn(server, BOB, "asroot") as c:
        fid = c.tree.open("to-carol.txt", READ_CONTROL | WRITE_OWNER)
        assert c.set_owner(fid, user_sid(carol_uid)) == wire.STATUS_SUCCESS
        assert c.descriptor(fid).owner == user_sid(carol_uid)
    assert path.stat().st_uid == carol_uid
    with Conn(server, ALICE) as c:
        assert c.tree.create("to-carol.txt", WRITE_DAC).status == wire.STATUS_ACCESS_DENIED
    with Conn(server, CAROL) as c:
        assert c.tree.create("to-carol.txt", READ_CONTROL | WRITE_DAC).status == wire.STATUS_SUCCESS


def test_root_may_name_only_unix_users(server):
    """SIDs that name no Unix user: STATUS_INVALID_OWNER, the file and its descriptor as
    they were (Samba: unpack_nt_owners fails without a uid)."""
    path = alices_file(server, "odd-owners.txt")
    alice_uid = server["accounts"][ALICE][0]
    with Conn(server, BOB, "asroot") as c:
        fid = c.tree.open("odd-owners.txt", READ_CONTROL | WRITE_OWNER)
        for sid in (acl.sid(5, 32, 544), acl.EVERYONE, acl.sid(5, 21, 1, 2, 3, 1000),
                    group_sid(server["accounts"][CAROL][1]), user_sid(NO_ID), acl.sid(22, 1, 5, 6)):
            assert c.set_owner(fid, sid) == STATUS_INVALID_OWNER, sid.hex()
        assert c.descriptor(fid).owner == user_sid(alice_uid)
    assert path.stat().st_uid == alice_uid


def test_root_giving_a_directory_away_chowns_it(server):
    path = server["share"] / "alice-dir"
    path.mkdir()
    os.chown(path, *server["accounts"][ALICE])
    carol_uid = server["accounts"][CAROL][0]
    with Conn(server, BOB, "asroot") as c:
        r = c.tree.create("alice-dir", READ_CONTROL | WRITE_OWNER, wire.FILE_OPEN,
                          options=wire.FILE_DIRECTORY_FILE)
        assert r.status == wire.STATUS_SUCCESS, r
        assert c.set_owner(r.file_id, user_sid(carol_uid)) == wire.STATUS_SUCCESS
    assert path.stat().st_uid == carol_uid


def test_a_user_still_cannot_give_his_file_away(server):
    """The rule for everyone else is unchanged: only the file's Unix owner may be named."""
    path = alices_file(server, "alice-keeps.txt")
    with Conn(server, ALICE) as c:
        fid = c.tree.open("alice-keeps.txt", READ_CONTROL | WRITE_OWNER)
        assert c.set_owner(fid, user_sid(server["accounts"][CAROL][0])) == STATUS_INVALID_OWNER
        assert c.set_owner(fid, user_sid(server["accounts"][ALICE][0])) == wire.STATUS_SUCCESS
    assert path.stat().st_uid == server["accounts"][ALICE][0]


def test_a_group_sid_of_the_no_id_gid_is_no_group(server):
    """gid 4294967295 is fchown's "leave the group": naming it would store a group the file
    does not have. Root and the owner alike get STATUS_INVALID_OWNER."""
    path = alices_file(server, "no-id-group.txt")
    alice_gid = server["accounts"][ALICE][1]
    for user, share in ((ALICE, "share"), (BOB, "asroot")):
        with Conn(server, user, share) as c:
            fid = c.tree.open("no-id-group.txt", READ_CONTROL | WRITE_OWNER)
            assert c.set_group(fid, group_sid(NO_ID)) == STATUS_INVALID_OWNER
            assert c.descriptor(fid).group == group_sid(alice_gid)
    assert path.stat().st_gid == alice_gid


# -- (b) a CREATE's SecD context naming another of the creator's groups ---------------------------

def secd_group(sid: bytes) -> list:
    return [(b"SecD", acl.Descriptor(group=sid).pack(acl.GROUP))]


def test_a_create_naming_another_of_the_creators_groups_makes_a_file_of_that_group(server):
    extra = server["accounts"]["extra"]
    with Conn(server, ALICE) as c:
        r = c.tree.create("secd-extra.txt", READ_WRITE | READ_CONTROL, wire.FILE_CREATE,
                          contexts=secd_group(group_sid(extra)))
        assert r.status == wire.STATUS_SUCCESS, r
        assert c.descriptor(r.file_id).group == group_sid(extra)
        r = c.tree.create("secd-extra-dir", READ_CONTROL, wire.FILE_CREATE, options=wire.FILE_DIRECTORY_FILE,
                          contexts=secd_group(group_sid(extra)))
        assert r.status == wire.STATUS_SUCCESS, r
        # and a file made with its first stream
        r = c.tree.create("secd-extra-streamed.txt:s", READ_WRITE, wire.FILE_CREATE,
                          contexts=secd_group(group_sid(extra)))
        assert r.status == wire.STATUS_SUCCESS, r
    for name in ("secd-extra.txt", "secd-extra-dir", "secd-extra-streamed.txt"):
        st = (server["share"] / name).stat()
        assert (st.st_uid, st.st_gid) == (server["accounts"][ALICE][0], extra), name


def test_a_create_naming_the_primary_group_or_none_keeps_it(server):
    alice = server["accounts"][ALICE]
    with Conn(server, ALICE) as c:
        for name, contexts in (("secd-primary.txt", secd_group(group_sid(alice[1]))), ("no-secd.txt", [])):
            r = c.tree.create(name, READ_WRITE, wire.FILE_CREATE, contexts=contexts)
            assert r.status == wire.STATUS_SUCCESS, r
            assert (server["share"] / name).stat().st_gid == alice[1]


def test_a_create_naming_a_group_the_creator_is_not_in_makes_nothing(server):
    with Conn(server, ALICE) as c:
        for name, sid, status in (("secd-bobs.txt", group_sid(server["accounts"][BOB][1]), wire.STATUS_ACCESS_DENIED),
                                  ("secd-noid.txt", group_sid(NO_ID), STATUS_INVALID_OWNER)):
            r = c.tree.create(name, READ_WRITE, wire.FILE_CREATE, contexts=secd_group(sid))
            assert r.status == status, (name, r)
            assert not (server["share"] / name).exists()


def test_a_create_by_root_naming_another_owner_gives_the_file_to_that_user(server):
    """Root's SecD context names CAROL: the new file is CAROL's (Samba chowns it); a SID that
    is no Unix user is STATUS_INVALID_OWNER and nothing is left behind."""
    carol_uid = server["accounts"][CAROL][0]
    secd = acl.Descriptor(owner=user_sid(carol_uid)).pack(acl.OWNER)
    with Conn(server, BOB, "asroot") as c:
        r = c.tree.create("root-for-carol.txt", READ_WRITE | READ_CONTROL, wire.FILE_CREATE,
                          contexts=[(b"SecD", secd)])
        assert r.status == wire.STATUS_SUCCESS, r
        assert c.descriptor(r.file_id).owner == user_sid(carol_uid)
        for sid in (acl.EVERYONE, acl.sid(5, 32, 544), user_sid(NO_ID)):
            r = c.tree.create("root-for-nobody.txt", READ_WRITE, wire.FILE_CREATE,
                              contexts=[(b"SecD", acl.Descriptor(owner=sid).pack(acl.OWNER))])
            assert r.status == STATUS_INVALID_OWNER, (sid.hex(), r)
            assert not (server["share"] / "root-for-nobody.txt").exists()
    assert (server["share"] / "root-for-carol.txt").stat().st_uid == carol_uid


def test_server_log_is_clean(server):
    text = server["log"].read_text()
    assert "Traceback" not in text
