"""`read list` and `write list` with Samba's smbclient and smbcacls and real Unix accounts.

A read-list user on a writable share tries every write-class operation the tools have (put a
new file, put over an existing one, mkdir, rmdir, del, rename, setmode, utimes, hardlink,
deltree, and smbcacls' add, set, modify, delete and chown); the files belong to that user,
so the kernel would have let each through: only the read list refuses them, and the tree is
the same afterwards. A write-list user on a read-only share does the same operations, and
each one takes effect.

smbcacls connects to port 445 only: the server listens on a loopback address of its own."""
from __future__ import annotations

import os
import time

import pytest
from smbconf_fixtures import (
    TAG,
    loopback_on_445,
    need_root_and_samba,
    output,
    refused,
    serve,
    snapshot,
    unix_accounts,
)

need_root_and_samba()

PASSWORD = "Lists-pw1"
READER = f"sclr{TAG}"        # in [rw]'s read list
WRITER = f"sclw{TAG}"        # in [ro]'s write list
EVERYONE_ALL = "ACL:S-1-1-0:ALLOWED/0x0/0x001f01ff"


def fill(root, account) -> None:
    """The tree both tests start from, all of it the account's own (writable by it)."""
    for path in (root, root / "emptydir", root / "tree", root / "tree" / "sub"):
        path.mkdir(exist_ok=True)
    for name, text in (("existing.txt", "old"), ("tree/a.txt", "a"), ("tree/sub/b.txt", "b"),
                       ("acl.txt", "acl")):
        (root / name).write_text(text)
    for path in [root, *root.rglob("*")]:
        os.chown(path, account.uid, account.gid)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with unix_accounts({READER: (), WRITER: ()}) as accounts:
        tmp = tmp_path_factory.mktemp("clients-lists")
        shares = {"rw": f"path = {tmp / 'rw'}\nread only = no\nread list = {READER}",
                  "ro": f"path = {tmp / 'ro'}\nread only = yes\nwrite list = {WRITER}"}
        fill(tmp / "rw", accounts[READER])
        fill(tmp / "ro", accounts[WRITER])
        with serve(tmp / "run", "", shares, {READER: PASSWORD, WRITER: PASSWORD},
                   host=loopback_on_445(), port=445) as served:
            served.accounts = accounts
            served.paths = {"rw": tmp / "rw", "ro": tmp / "ro"}
            yield served


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    path = tmp_path_factory.mktemp("clients-lists-src") / "src.txt"
    path.write_text("new contents")
    return path


def xattrs(path) -> dict[str, bytes]:
    """A file's extended attributes (where the server keeps its security descriptor)."""
    return {name: os.getxattr(path, name) for name in os.listxattr(path)}


def attributes(server, share: str, name: str, user: str) -> str:
    """The DOS attribute letters smbclient's allinfo shows for a file (RHSA...)."""
    r = server.smbclient(share, f"allinfo {name}", user=user)
    return r.stdout.split("attributes: ", 1)[1].split()[0] if "attributes: " in r.stdout else ""


def smbclient_writes(src) -> list[str]:
    """Every write-class operation smbclient has, on the tree `fill` makes."""
    return [f"put {src} new.txt", f"put {src} existing.txt", "mkdir newdir", "rmdir emptydir",
            "del existing.txt", "rename existing.txt renamed.txt", "setmode existing.txt +r",
            "utimes existing.txt -1 -1 2001:02:03-04:05:06 -1", "hardlink existing.txt link.txt",
            "deltree tree"]


def smbcacls_writes(account) -> list[tuple[str, ...]]:
    """smbcacls' changes: add an ACE, modify and set the ACL, give the file to its owner (the
    kernel lets an owner give a file only to itself), and delete the ACE. -M and -D need an ACE
    that is there: -a makes it first (where it may); each step but the last leaves Everyone
    able to change the ACL, so that the next one can open the file."""
    me = f"S-1-22-1-{account.uid}"
    return [("-a", EVERYONE_ALL), ("-M", EVERYONE_ALL),
            ("-S", f"REVISION:1,OWNER:{me},GROUP:S-1-22-2-{account.gid},{EVERYONE_ALL}"),
            ("-C", me), ("-D", EVERYONE_ALL)]


def test_read_list_refuses_every_write_and_changes_nothing(server, src):
    root = server.paths["rw"]
    before = snapshot(root)
    for command in smbclient_writes(src):
        r = server.smbclient("rw", command, user=READER)
        assert refused(r), (command, output(r))
        assert snapshot(root) == before, command
    acl_before = xattrs(root / "acl.txt")
    for args in smbcacls_writes(server.accounts[READER]):
        r = server.smbcacls("rw", "acl.txt", *args, user=READER)
        assert r.returncode != 0 and refused(r), (args, output(r))
        assert snapshot(root) == before and xattrs(root / "acl.txt") == acl_before, args
    # reading is not refused: the list makes the tree read-only, not unreachable
    assert "existing.txt" in server.smbclient("rw", "ls", user=READER).stdout
    r = server.smbcacls("rw", "acl.txt", user=READER)
    assert r.returncode == 0 and "OWNER:S-1-22-1-" in r.stdout, output(r)


def test_write_list_may_write_on_a_read_only_share(server, src):
    root = server.paths["ro"]
    # one operation at a time, each checked on disk (hard links are left out: the server does
    # not make them on any share, FileLinkInformation is answered INVALID_INFO_CLASS)
    expectations = {
        f"put {src} new.txt": lambda: (root / "new.txt").read_text() == "new contents",
        f"put {src} existing.txt": lambda: (root / "existing.txt").read_text() == "new contents",
        "mkdir newdir": lambda: (root / "newdir").is_dir(),
        "rmdir emptydir": lambda: not (root / "emptydir").exists(),
        "setmode existing.txt +h": lambda: "H" in attributes(server, "ro", "existing.txt", WRITER),
        "setmode existing.txt -h": lambda: "H" not in attributes(server, "ro", "existing.txt", WRITER),
        "utimes existing.txt -1 -1 2001:02:03-04:05:06 -1":
            lambda: time.gmtime((root / "existing.txt").stat().st_mtime).tm_year == 2001,
        "rename existing.txt renamed.txt":
            lambda: (root / "renamed.txt").exists() and not (root / "existing.txt").exists(),
        "del renamed.txt": lambda: not (root / "renamed.txt").exists(),
        "deltree tree": lambda: not (root / "tree").exists(),
    }
    for command, took_effect in expectations.items():
        r = server.smbclient("ro", command, user=WRITER)
        assert r.returncode == 0 and "NT_STATUS" not in output(r), (command, output(r))
        assert took_effect(), command
    # and the same operations stay refused to a user not in the list... on this share: READER
    r = server.smbclient("ro", f"put {src} by-reader.txt", user=READER)
    assert refused(r) and not (root / "by-reader.txt").exists(), output(r)
    for args in smbcacls_writes(server.accounts[WRITER]):
        before = xattrs(root / "acl.txt")
        r = server.smbcacls("ro", "acl.txt", *args, user=WRITER)
        assert r.returncode == 0 and "NT_STATUS" not in output(r), (args, output(r))
        if args[0] != "-C":         # giving the file to its owner changes nothing
            assert xattrs(root / "acl.txt") != before, args


def test_the_owner_may_set_and_clear_read_only(server):
    root = server.paths["ro"]
    (root / "ro-attr.txt").write_text("x")
    os.chown(root / "ro-attr.txt", server.accounts[WRITER].uid, server.accounts[WRITER].gid)
    r = server.smbclient("ro", "setmode ro-attr.txt +r", user=WRITER)
    assert r.returncode == 0 and "NT_STATUS" not in output(r), output(r)
    assert "R" in attributes(server, "ro", "ro-attr.txt", WRITER)
    r = server.smbclient("ro", "setmode ro-attr.txt -r", user=WRITER)
    assert r.returncode == 0 and "NT_STATUS" not in output(r), output(r)
    assert "R" not in attributes(server, "ro", "ro-attr.txt", WRITER)



def test_the_owner_may_always_change_its_files_acl(server):
    """Windows and Samba give a file's owner READ_CONTROL and WRITE_DAC whatever its DACL says,
    so an owner can always put its ACL right again; the owner is the account the session acts
    as (S-1-22-1-uid), and another account gets nothing of the kind."""
    import struct
    import uuid

    from smbprotocol.connection import Connection
    from smbprotocol.exceptions import SMBResponseException
    from smbprotocol.open import CreateDisposition, ImpersonationLevel, Open, ShareAccess, SMB2SetInfoRequest
    from smbprotocol.session import Session
    from smbprotocol.tree import TreeConnect

    root = server.paths["ro"]
    (root / "owned.txt").write_text("x")
    os.chown(root / "owned.txt", server.accounts[WRITER].uid, server.accounts[WRITER].gid)
    read_only = "ACL:S-1-1-0:ALLOWED/0x0/0x001200a9"
    r = server.smbcacls("ro", "owned.txt", "-S", f"REVISION:1,OWNER:S-1-22-1-{server.accounts[WRITER].uid},"
                        f"GROUP:S-1-22-2-{server.accounts[WRITER].gid},{read_only}", user=WRITER)
    assert r.returncode == 0, output(r)
    everyone_all = (struct.pack("<BBHIIII", 1, 0, 0x8004, 0, 0, 0, 20) + struct.pack("<BBHHH", 2, 0, 28, 1, 0)
                    + struct.pack("<BBHI", 0, 0, 20, 0x1F01FF) + bytes([1, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]))

    def put_dacl(user: str) -> None:
        conn = Connection(uuid.uuid4(), server.host, server.port)
        conn.connect()
        try:
            session = Session(conn, user, PASSWORD, require_encryption=False)
            session.connect()
            tree = TreeConnect(session, rf"\\{server.host}\ro")
            tree.connect()
            f = Open(tree, "owned.txt")
            f.create(ImpersonationLevel.Impersonation, 0x00060000, 0,     # READ_CONTROL | WRITE_DAC
                     ShareAccess.FILE_SHARE_READ, CreateDisposition.FILE_OPEN, 0)
            req = SMB2SetInfoRequest()
            req["info_type"] = 3                    # SMB2_0_INFO_SECURITY
            req["file_info_class"] = 0
            req["additional_information"] = 4       # DACL_SECURITY_INFORMATION
            req["file_id"] = f.file_id
            req["buffer"] = everyone_all
            conn.receive(conn.send(req, sid=session.session_id, tid=tree.tree_connect_id))
            f.close()
        finally:
            conn.disconnect(True)

    with pytest.raises(SMBResponseException):
        put_dacl(READER)                            # not the owner: the DACL decides, and refuses
    put_dacl(WRITER)                                # the owner
    r = server.smbcacls("ro", "owned.txt", user=WRITER)
    assert "ACL:S-1-1-0:ALLOWED/0x0/FULL" in output(r) or "0x001f01ff" in output(r), output(r)

def test_a_files_acl_is_matched_against_the_sessions_own_account(server, tmp_path):
    """An ACE naming an account (S-1-22-1-uid) applies to sessions acting as that account and
    to no other: the DACL here lets only the reader read; its owner may then read its ACL but
    not its data."""
    root = server.paths["ro"]
    (root / "for-reader.txt").write_text("for the reader")
    writer, reader = server.accounts[WRITER], server.accounts[READER]
    os.chown(root / "for-reader.txt", writer.uid, writer.gid)
    os.chmod(root / "for-reader.txt", 0o644)
    r = server.smbcacls("ro", "for-reader.txt", "-S", f"REVISION:1,OWNER:S-1-22-1-{writer.uid},"
                        f"GROUP:S-1-22-2-{writer.gid},ACL:S-1-22-1-{reader.uid}:ALLOWED/0x0/0x001200a9",
                        user=WRITER)
    assert r.returncode == 0, output(r)
    got = tmp_path / "got"
    r = server.smbclient("ro", f"get for-reader.txt {got}", user=READER)
    assert r.returncode == 0 and got.read_text() == "for the reader", output(r)
    got.unlink()
    r = server.smbclient("ro", f"get for-reader.txt {got}", user=WRITER)
    assert refused(r) and not got.exists(), output(r)
    r = server.smbcacls("ro", "for-reader.txt", user=WRITER)       # READ_CONTROL: the owner's
    assert f"S-1-22-1-{reader.uid}" in output(r), output(r)
