"""Metadata operations (hard links, renames, streams) tried by real Unix accounts against a
server started as root: what one account may do to another's file through a name it may
remove, but not through the file itself.

A file's named streams belong to the file (its inode), not to one of its names: they are kept
in the server's stream depot under an id stored on the file, and the server, as root, deletes
them when the file goes. A name removed while the file keeps another (a hard link) must not
take them along: BOB, who may remove a name from a directory he may write but may not write
ALICE's file, would otherwise destroy data of a file that is not his to change (Samba's
streams_depot removes a file's stream directory only when its last link goes)."""
from __future__ import annotations

import os
import shutil
import struct

import pytest
from raw import UserTree
from servers import project_share_server, unix_accounts

from smbring.smb import acl, wire

if os.geteuid() != 0 or not shutil.which("useradd"):
    pytest.skip("acting as Unix accounts needs root (and useradd)", allow_module_level=True)

PASSWORD = "Metadata-pw1"
SUFFIX = f"{os.getpid() % 100000}"
ALICE, BOB = f"mdra{SUFFIX}", f"mdrb{SUFFIX}"
READ_WRITE = 0x0012019F
READ_ATTRIBUTES = 0x80
DELETE = wire.DELETE
SECRET = b"alice's notes"


@pytest.fixture(scope="module")
def accounts():
    yield from unix_accounts(ALICE, BOB)


@pytest.fixture(scope="module")
def server(accounts, tmp_path_factory):
    for started in project_share_server(tmp_path_factory.mktemp("metadata"), "smbring-metadata-",
                                        (ALICE, BOB), PASSWORD):
        yield dict(started, accounts=accounts)


class Conn(UserTree):
    def __init__(self, server, user: str):
        super().__init__(server["port"], user, PASSWORD)


def alices_file_with_a_stream(server, name: str, *links: str):
    """ALICE's file (0644: everyone may read it, only she may write it) with a named stream
    she wrote, and hard links to it at `links` (as she, or a tool of hers, made them)."""
    path = server["share"] / name
    path.write_bytes(b"alice's data")
    os.chown(path, *server["accounts"][ALICE])
    path.chmod(0o644)
    with Conn(server, ALICE) as c:
        fid = c.tree.open(f"{name}:notes", READ_WRITE, wire.FILE_CREATE)
        assert c.tree.write(fid, SECRET).status == wire.STATUS_SUCCESS
        c.tree.close(fid)
    for link in links:
        os.link(path, server["share"] / link)


def stream_of(server, name: str) -> bytes | None:
    """The stream's data as ALICE reads it, None where it is gone."""
    with Conn(server, ALICE) as c:
        r = c.tree.create(f"{name}:notes", wire.GENERIC_READ)
        if r.status == wire.STATUS_OBJECT_NAME_NOT_FOUND:
            return None
        assert r.status == wire.STATUS_SUCCESS, r
        data = c.tree.read(r.file_id, 100)
        c.tree.close(r.file_id)
        return data.buffer(2, "<BxI") if data.status == wire.STATUS_SUCCESS else None


def rename_body(name: str, replace: bool) -> bytes:
    encoded = name.encode("utf-16-le")
    return struct.pack("<B7xQI", int(replace), 0, len(encoded)) + encoded


def test_bob_deleting_a_link_leaves_alices_streams(server):
    """BOB may remove the name shared/del-link.txt (he may write shared/), not write the file:
    the file lives on as ALICE's del.txt, with its stream."""
    alices_file_with_a_stream(server, "del.txt", "shared/del-link.txt")
    with Conn(server, BOB) as c:
        r = c.tree.create("shared\\del-link.txt", DELETE | READ_ATTRIBUTES, options=wire.FILE_DELETE_ON_CLOSE)
        assert r.status == wire.STATUS_SUCCESS, r
        assert c.tree.close(r.file_id).status == wire.STATUS_SUCCESS
    assert not (server["share"] / "shared/del-link.txt").exists()
    assert (server["share"] / "del.txt").read_bytes() == b"alice's data"
    assert stream_of(server, "del.txt") == SECRET


def test_bob_replacing_a_link_leaves_alices_streams(server):
    """BOB renames his own file over the name shared/rep-link.txt (ReplaceIfExists): that name
    is his to replace, the file behind it (ALICE's rep.txt) and its stream are not."""
    alices_file_with_a_stream(server, "rep.txt", "shared/rep-link.txt")
    with Conn(server, BOB) as c:
        fid = c.tree.open("shared\\bobs.txt", READ_WRITE | DELETE, wire.FILE_CREATE)
        r = c.tree.set_info(fid, wire.INFO_FILE, 10, rename_body("shared\\rep-link.txt", True))
        assert r.status == wire.STATUS_SUCCESS, r
        c.tree.close(fid)
    assert stream_of(server, "rep.txt") == SECRET


def test_bob_linking_over_a_link_leaves_alices_streams(server):
    """FileLinkInformation with ReplaceIfExists over the name shared/lnk-link.txt: as a rename
    over it, the name goes, ALICE's file lnk.txt and its stream stay."""
    alices_file_with_a_stream(server, "lnk.txt", "shared/lnk-link.txt")
    with Conn(server, BOB) as c:
        fid = c.tree.open("shared\\bobs-link-source.txt", READ_WRITE, wire.FILE_CREATE)
        r = c.tree.set_info(fid, wire.INFO_FILE, 11, rename_body("shared\\lnk-link.txt", True))
        assert r.status == wire.STATUS_SUCCESS, r
        c.tree.close(fid)
    assert (server["share"] / "shared/lnk-link.txt").stat().st_uid == server["accounts"][BOB][0]
    assert stream_of(server, "lnk.txt") == SECRET


def test_renaming_a_link_onto_another_name_of_its_file_leaves_the_streams(server):
    """shared/same-a.txt and shared/same-b.txt are two names of ALICE's same.txt: renaming one
    onto the other (ReplaceIfExists) changes no file (rename(2) of a file onto itself does
    nothing), and its stream stays."""
    alices_file_with_a_stream(server, "same.txt", "shared/same-a.txt", "shared/same-b.txt")
    with Conn(server, BOB) as c:
        fid = c.tree.open("shared\\same-a.txt", DELETE | READ_ATTRIBUTES)
        r = c.tree.set_info(fid, wire.INFO_FILE, 10, rename_body("shared\\same-b.txt", True))
        assert r.status == wire.STATUS_SUCCESS, r
        c.tree.close(fid)
    assert stream_of(server, "same.txt") == SECRET


def test_server_log_is_clean(server):
    text = server["log"].read_text()
    assert "Traceback" not in text, text[-3000:]


def alices_closed_directory(server, name: str):
    """ALICE's directory, mode 0777 (the kernel lets anyone add to it), whose descriptor she
    set through SMB grants her all and everyone else reading and listing only: no
    FILE_ADD_FILE, no FILE_ADD_SUBDIRECTORY. The server, which keeps the descriptor, is what
    enforces it."""
    path = server["share"] / name
    path.mkdir()
    os.chown(path, *server["accounts"][ALICE])
    path.chmod(0o777)
    alice = acl.sid(22, 1, server["accounts"][ALICE][0])
    sd = acl.Descriptor(control=acl.SE_SELF_RELATIVE | acl.SE_DACL_PRESENT, dacl=[
        acl.Ace(acl.ALLOWED, 0, acl.FILE_ALL_ACCESS, alice),
        acl.Ace(acl.ALLOWED, 0, wire.READ_ONLY_ACCESS, acl.EVERYONE)])
    with Conn(server, ALICE) as c:
        r = c.tree.create(name, acl.READ_CONTROL | acl.WRITE_DAC, options=wire.FILE_DIRECTORY_FILE)
        assert r.status == wire.STATUS_SUCCESS, r
        r = c.tree.set_info(r.file_id, wire.INFO_SECURITY, 0, sd.pack(acl.DACL), acl.DACL)
        assert r.status == wire.STATUS_SUCCESS, r
    return path


@pytest.mark.parametrize("klass", [10, 11], ids=["rename", "link"])
def test_a_directory_whose_descriptor_refuses_adding_files_gets_none_by_rename_or_link(server, klass):
    """BOB may not CREATE a file in ALICE's closed directory (its DACL grants him no
    FILE_ADD_FILE); moving or linking one of his files into it adds a name all the same
    unless the directory's descriptor is asked too (Samba's rename_internals_fsp and
    hardlink_internals check the new parent for SEC_DIR_ADD_FILE)."""
    name = f"closed-{klass}"
    path = alices_closed_directory(server, name)
    with Conn(server, BOB) as c:
        assert c.tree.create(f"{name}\\\\made.txt", READ_WRITE, wire.FILE_CREATE).status == wire.STATUS_ACCESS_DENIED
        fid = c.tree.open(f"shared\\\\bob-{klass}.txt", READ_WRITE | DELETE, wire.FILE_CREATE)
        r = c.tree.set_info(fid, wire.INFO_FILE, klass, rename_body(f"{name}\\\\moved.txt", False))
        c.tree.close(fid)
    assert r.status == wire.STATUS_ACCESS_DENIED, r
    assert os.listdir(path) == []


def guarded(server, directory: str, name: str, data: bytes):
    """ALICE's file `directory/name` (mode 0666 in a 0777 directory: the kernel lets anyone
    replace it) whose descriptors she set grant everyone else all but DELETE: the file's
    refuses DELETE, the directory's FILE_DELETE_CHILD. The server keeps and enforces them."""
    path = server["share"] / directory
    path.mkdir()
    os.chown(path, *server["accounts"][ALICE])
    path.chmod(0o777)
    alice = acl.sid(22, 1, server["accounts"][ALICE][0])
    withheld = acl.DELETE | acl.FILE_DELETE_CHILD | acl.WRITE_DAC | acl.WRITE_OWNER
    sd = acl.Descriptor(control=acl.SE_SELF_RELATIVE | acl.SE_DACL_PRESENT, dacl=[
        acl.Ace(acl.ALLOWED, 0, acl.FILE_ALL_ACCESS, alice),
        acl.Ace(acl.ALLOWED, 0, acl.FILE_ALL_ACCESS & ~withheld, acl.EVERYONE)]).pack(acl.DACL)
    with Conn(server, ALICE) as c:
        r = c.tree.create(directory, acl.READ_CONTROL | acl.WRITE_DAC, options=wire.FILE_DIRECTORY_FILE)
        assert r.status == wire.STATUS_SUCCESS, r
        assert c.tree.set_info(r.file_id, wire.INFO_SECURITY, 0, sd, acl.DACL).status == wire.STATUS_SUCCESS
        c.tree.close(r.file_id)
        fid = c.tree.open(f"{directory}\\{name}", READ_WRITE | acl.WRITE_DAC, wire.FILE_CREATE)
        assert c.tree.write(fid, data, 0).status == wire.STATUS_SUCCESS
        assert c.tree.set_info(fid, wire.INFO_SECURITY, 0, sd, acl.DACL).status == wire.STATUS_SUCCESS
        c.tree.close(fid)
    (path / name).chmod(0o666)
    return path / name


@pytest.mark.parametrize("klass", [10, 11], ids=["rename", "link"])
def test_a_file_whose_descriptor_refuses_delete_is_not_replaced(server, klass):
    """BOB may not open ALICE's guarded file for DELETE (her descriptors refuse it); a rename
    or link of his own file over it with ReplaceIfExists would delete it all the same unless
    its descriptor is asked too (NTFS opens the target for DELETE)."""
    directory = f"guarded-{klass}"
    victim = guarded(server, directory, "victim.txt", SECRET)
    with Conn(server, BOB) as c:
        assert c.tree.create(f"{directory}\\victim.txt", DELETE).status == wire.STATUS_ACCESS_DENIED
        fid = c.tree.open(f"{directory}\\bob.txt", READ_WRITE | DELETE, wire.FILE_CREATE)
        r = c.tree.set_info(fid, wire.INFO_FILE, klass, rename_body(f"{directory}\\victim.txt", True))
        c.tree.close(fid)
    assert r.status == wire.STATUS_ACCESS_DENIED, r
    assert victim.read_bytes() == SECRET


def bobs_symlink_to(server, name: str, target: str):
    """A symbolic link shared/`name` -> ../`target` that BOB made (from a shell, or any tool
    of his: smbring makes none), leading to ALICE's file inside the share."""
    link = server["share"] / "shared" / name
    os.symlink(f"../{target}", link)
    os.lchown(link, *server["accounts"][BOB])
    return link


def test_bob_deleting_his_symlink_to_alices_file_leaves_her_streams(server):
    """BOB opens his own link shared/sym-del-link (leading to ALICE's sym-del.txt) for delete
    on close: the link is the name that goes (unlink never follows it); her file, which still
    has its one name, keeps its stream. Before, the server (as root) removed the streams of
    the file the link led to."""
    alices_file_with_a_stream(server, "sym-del.txt")
    link = bobs_symlink_to(server, "sym-del-link", "sym-del.txt")
    with Conn(server, BOB) as c:
        r = c.tree.create("shared\\sym-del-link", DELETE | READ_ATTRIBUTES, options=wire.FILE_DELETE_ON_CLOSE)
        assert r.status == wire.STATUS_SUCCESS, r
        assert c.tree.close(r.file_id).status == wire.STATUS_SUCCESS
    assert not os.path.lexists(link)
    assert (server["share"] / "sym-del.txt").read_bytes() == b"alice's data"
    assert stream_of(server, "sym-del.txt") == SECRET


@pytest.mark.parametrize("klass", [10, 11], ids=["rename", "link"])
def test_bob_replacing_his_symlink_to_alices_file_leaves_her_streams(server, klass):
    """BOB renames (or links) his own file over his link shared/sym-rep-link-N, which leads to
    ALICE's file (ReplaceIfExists): the link is the name replaced, her file and its stream
    stay. Before, the server removed the streams of the file the link led to."""
    alices_file_with_a_stream(server, f"sym-rep-{klass}.txt")
    link = bobs_symlink_to(server, f"sym-rep-link-{klass}", f"sym-rep-{klass}.txt")
    with Conn(server, BOB) as c:
        fid = c.tree.open(f"shared\\bobs-sym-{klass}.txt", READ_WRITE | DELETE, wire.FILE_CREATE)
        r = c.tree.set_info(fid, wire.INFO_FILE, klass, rename_body(f"shared\\sym-rep-link-{klass}", True))
        assert r.status == wire.STATUS_SUCCESS, r
        c.tree.close(fid)
    assert not link.is_symlink()
    assert (server["share"] / f"sym-rep-{klass}.txt").read_bytes() == b"alice's data"
    assert stream_of(server, f"sym-rep-{klass}.txt") == SECRET
