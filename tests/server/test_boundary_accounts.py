"""The share boundary tried by users with accounts (a server started as root, acting as two
Unix accounts made for the module): links, renames and names that would lead out of the
share or onto another user's file, links a local user left in the share, named streams of
files the user may not read or write, and `veto files` on every path that names a file.
Each test tries to get around one check and says which; raw requests (tests/security/raw.py)
so that every field is the test's."""
from __future__ import annotations

import os
import pwd
import shutil
import struct
import sys
import tempfile
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "security"))
from raw import RawClient  # noqa: E402
from servers import stop, unix_accounts, spawn_for_accounts  # noqa: E402

from smbring.smb import wire  # noqa: E402

if os.geteuid() != 0 or not shutil.which("useradd"):
    pytest.skip("acting as Unix accounts needs root (and useradd)", allow_module_level=True)

PASSWORD = "Boundary-pw1"
SUFFIX = f"{os.getpid() % 100000}"
ALICE, BOB = f"srba{SUFFIX}", f"srbb{SUFFIX}"
DENIED = wire.STATUS_ACCESS_DENIED
RENAME, LINK = 10, 11
READ_WRITE = wire.GENERIC_READ | wire.GENERIC_WRITE


@pytest.fixture(scope="module")
def accounts():
    yield from unix_accounts(ALICE, BOB)


@pytest.fixture(scope="module")
def server(accounts, tmp_path_factory):
    """share/: root's 0755 with root600.txt (0600) and pub.txt (0644, a stream `root` made by
    root), shared/ (1777) with ALICE's alice600.txt (0600, a stream) and alice644.txt (0644),
    mine/ (BOB's own directory), link-out -> a directory outside the share, link-root600 ->
    root600.txt; veto files = /*.veto/; a second share `other` beside it."""
    tmp = tmp_path_factory.mktemp("boundary")
    top = Path(tempfile.mkdtemp(prefix="smbring-boundary-", dir="/tmp"))
    top.chmod(0o755)
    share, other, outside = top / "share", top / "other", top / "outside"
    for d in (share, other, outside):
        d.mkdir()
        d.chmod(0o755)
    (outside / "secret.txt").write_text("outside")
    (other / "other.txt").write_text("other share")
    (share / "root600.txt").write_text("root's secret")
    (share / "root600.txt").chmod(0o600)
    (share / "pub.txt").write_text("for everyone")
    (share / "pub.txt").chmod(0o644)
    shared = share / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    mine = share / "mine"
    mine.mkdir()
    os.chown(mine, *accounts[BOB])
    for name, mode in (("alice600.txt", 0o600), ("alice644.txt", 0o644)):
        (shared / name).write_text(f"{name} of alice")
        (shared / name).chmod(mode)
        os.chown(shared / name, *accounts[ALICE])
    # the stream depot, made as root for all (sticky): made by the first user to make a stream,
    # 0755, it would be that user's, and nobody else could make a stream in the share
    (share / ".smbring-streams").mkdir()
    (share / ".smbring-streams").chmod(0o1777)
    (share / "link-out").symlink_to(outside)                # left there by a local user
    (share / "link-root600").symlink_to("root600.txt")
    (share / "link-other").symlink_to(other)
    proc, port, log = spawn_for_accounts(tmp, share, (ALICE, BOB), PASSWORD, share_options="veto files = /*.veto/\n", more=f"[other]\npath = {other}\nread only = no\n")
    srv = {"port": port, "share": share, "other": other, "outside": outside, "proc": proc, "log": log}
    # streams made through the server, as their owners
    with RawClient(port) as c:
        c.negotiate()
        t = c.tree(c.logon(ALICE, PASSWORD), "share")
        t.close(write(t, r"shared\alice600.txt:hers", b"alice's stream", access=READ_WRITE))
    yield srv
    stop(proc)
    shutil.rmtree(top, ignore_errors=True)


def write(tree, name: str, data: bytes, disposition=wire.FILE_OVERWRITE_IF, access=READ_WRITE | wire.DELETE) -> bytes:
    fid = tree.open(name, access, disposition)
    assert tree.write(fid, data).status == wire.STATUS_SUCCESS
    return fid


@pytest.fixture
def bob(server):
    c = RawClient(server["port"])
    c.negotiate()
    tree = c.tree(c.logon(BOB, PASSWORD), "share")
    yield tree
    c.close()


def name_info(name: str, replace: bool = False, root_directory: int = 0) -> bytes:
    """FileRenameInformation / FileLinkInformation (the same layout, MS-FSCC 2.4.42.2)."""
    encoded = name.encode("utf-16-le")
    return struct.pack("<B7xQI", int(replace), root_directory, len(encoded)) + encoded


def rename(tree, fid: bytes, name: str, **kw):
    return tree.set_info(fid, wire.INFO_FILE, RENAME, name_info(name, **kw))


def link(tree, fid: bytes, name: str, **kw):
    return tree.set_info(fid, wire.INFO_FILE, LINK, name_info(name, **kw))


def entries(path: Path) -> set[str]:
    return set(os.listdir(path))


# -- renames and links: never out of the share, never onto what the user may not touch ---------
BAD_TARGETS = {
    r"..\outside\moved.txt": wire.STATUS_OBJECT_PATH_SYNTAX_BAD,
    r"mine\..\..\moved.txt": wire.STATUS_OBJECT_PATH_SYNTAX_BAD,
    r"\\?\C:\moved.txt": wire.STATUS_OBJECT_NAME_INVALID,
    # a '/' separates as a '\\' does (as smbd reads it): a leading one names the share's root,
    # where no directory tmp is; `..` spelled with slashes is refused as with backslashes
    "/tmp/moved.txt": wire.STATUS_OBJECT_PATH_NOT_FOUND,      # (as smbd answers both)
    "mine/../../moved.txt": wire.STATUS_OBJECT_PATH_SYNTAX_BAD,
    "mine\\moved\0.txt": wire.STATUS_OBJECT_NAME_INVALID,
    r"mine\CON": wire.STATUS_OBJECT_NAME_INVALID,
    r"mine\moved.txt:stream": wire.STATUS_OBJECT_NAME_INVALID,
    r"mine\moved.txt::$DATA": wire.STATUS_OBJECT_NAME_INVALID,
    r".smbring-streams\moved.txt": wire.STATUS_OBJECT_NAME_INVALID,
    r".SMBRING-Streams\0123456789abcdef\x": wire.STATUS_OBJECT_NAME_INVALID,
}


@pytest.mark.parametrize("target", sorted(BAD_TARGETS))
@pytest.mark.parametrize("how", [RENAME, LINK])
def test_no_rename_or_link_leaves_the_share(server, bob, target, how):
    """The name of a rename or hard link is relative to the open's share: `..` above it, an
    absolute or device name, NUL, a stream, the stream depot are refused, a '/' path is
    the share's, and nothing appears anywhere."""
    fid = write(bob, r"mine\mover.txt", b"x")
    before = {d: entries(server[d]) for d in ("share", "outside", "other")}
    r = bob.set_info(fid, wire.INFO_FILE, how, name_info(target, replace=True))
    assert r.status == BAD_TARGETS[target], (target, r)
    assert {d: entries(server[d]) for d in before} == before
    assert "moved.txt" not in entries(server["share"] / "mine")
    bob.close(fid)


@pytest.mark.parametrize("how", [RENAME, LINK])
def test_root_directory_names_nothing_else(server, bob, how):
    """RootDirectory (an SMB1 field, MS-SMB2 says 0) is not a way to another tree: a FileId
    of another share's open given there leaves the name relative to this open's share."""
    other = RawClient(server["port"])
    other.negotiate()
    otree = other.tree(other.logon(BOB, PASSWORD), "other")
    ofid = otree.open("", wire.GENERIC_READ, wire.FILE_OPEN, wire.FILE_DIRECTORY_FILE)
    root_directory = struct.unpack_from("<Q", ofid, 8)[0]
    fid = write(bob, r"mine\rooted.txt", b"x")
    r = bob.set_info(fid, wire.INFO_FILE, how, name_info(r"mine\via-root-dir.txt", root_directory=root_directory))
    assert r.status == wire.STATUS_SUCCESS, r
    assert (server["share"] / "mine" / "via-root-dir.txt").exists()
    assert not (server["other"] / "mine").exists() and "via-root-dir.txt" not in entries(server["other"])
    os.unlink(server["share"] / "mine" / "via-root-dir.txt")
    bob.close(fid)
    other.close()


def test_a_hard_link_to_a_file_the_user_may_not_write_is_refused(server, bob):
    """BOB may read root's pub.txt, not write it: a second name for it in a directory of his
    own would let him keep it, move it about, and count it against nobody; the kernel's
    protected_hardlinks (as the user) refuses."""
    if Path("/proc/sys/fs/protected_hardlinks").read_text().strip() != "1":
        pytest.skip("fs.protected_hardlinks is off: the kernel lets anyone link any file")
    fid = bob.open("pub.txt", wire.GENERIC_READ)
    r = link(bob, fid, r"mine\pub-link.txt")
    assert r.status == DENIED, r
    assert not (server["share"] / "mine" / "pub-link.txt").exists()
    bob.close(fid)


def test_renames_and_links_onto_another_users_file_are_refused(server, bob):
    """In the sticky shared/ BOB may not replace ALICE's file, by rename or by link with
    ReplaceIfExists; her file keeps its content and no temporary name is left behind."""
    fid = write(bob, r"shared\bobs.txt", b"bob's")
    for how in (RENAME, LINK):
        for target in (r"shared\alice644.txt", r"shared\alice600.txt"):
            r = bob.set_info(fid, wire.INFO_FILE, how, name_info(target, replace=True))
            assert r.status == DENIED, (how, target, r)
    assert (server["share"] / "shared" / "alice644.txt").read_text() == "alice644.txt of alice"
    assert not [n for n in entries(server["share"] / "shared") if n.startswith(".smbring-link-")]
    bob.close(fid)
    os.unlink(server["share"] / "shared" / "bobs.txt")


# -- links a local user left in the share --------------------------------------------------------
@pytest.mark.parametrize("name", [r"link-out\secret.txt", "link-out", r"link-other\other.txt"])
def test_a_link_out_of_the_share_is_not_followed(bob, name):
    for access, disposition in ((wire.GENERIC_READ, wire.FILE_OPEN), (READ_WRITE, wire.FILE_OVERWRITE_IF)):
        r = bob.create(name, access, disposition)
        assert r.status != wire.STATUS_SUCCESS, (name, r)


def test_a_link_inside_the_share_reaches_only_what_the_user_may(server, bob):
    """link-root600 -> root600.txt, inside the share: followed, and the kernel (as BOB)
    refuses the file; a stream through the link, or a listing, shows nothing of it."""
    assert bob.create("link-root600", wire.GENERIC_READ).status == DENIED
    r = bob.create("link-root600:s", READ_WRITE, wire.FILE_OPEN_IF)
    assert r.status in (DENIED, wire.STATUS_OBJECT_NAME_NOT_FOUND), r
    assert "user.smbring.streams" not in os.listxattr(server["share"] / "root600.txt")


# -- named streams: reached only through their file ---------------------------------------------
def test_streams_of_a_file_the_user_may_not_read_are_not_reached(bob):
    for access, disposition in ((wire.GENERIC_READ, wire.FILE_OPEN), (READ_WRITE, wire.FILE_OPEN_IF),
                                (READ_WRITE, wire.FILE_OVERWRITE_IF)):
        r = bob.create(r"shared\alice600.txt:hers", access, disposition)
        assert r.status in (DENIED, wire.STATUS_OBJECT_NAME_NOT_FOUND), (access, r)
        r = bob.create(r"shared\alice600.txt:new", access, disposition)
        assert r.status in (DENIED, wire.STATUS_OBJECT_NAME_NOT_FOUND), (access, r)


def test_streams_of_a_file_the_user_may_only_read_are_not_written(server, bob):
    """pub.txt is root's 0644: BOB may read it and nothing more, not even through a stream
    (a new one, or the file's data as `::$DATA`)."""
    for name in ("pub.txt:bobs", "pub.txt::$DATA", r"shared\alice644.txt:bobs"):
        for disposition in (wire.FILE_OPEN_IF, wire.FILE_OVERWRITE_IF, wire.FILE_CREATE):
            r = bob.create(name, READ_WRITE, disposition)
            refused = (DENIED, wire.STATUS_OBJECT_NAME_COLLISION) if disposition == wire.FILE_CREATE else (DENIED,)
            assert r.status in refused, (name, disposition, r)
    assert (server["share"] / "pub.txt").read_text() == "for everyone"


@pytest.mark.parametrize("name", ["pub.txt:$I30:$INDEX_ALLOCATION", "mine:$I30:$INDEX_ALLOCATION",
                                  "pub.txt:a:b:$DATA", "pub.txt:..", "pub.txt:a\\b"])
def test_stream_names_that_are_not_data_streams(bob, name):
    r = bob.create(name, READ_WRITE, wire.FILE_OPEN_IF)
    assert r.status == wire.STATUS_OBJECT_NAME_INVALID, (name, r)


# -- veto files on every path that names a file ---------------------------------------------------
def test_no_write_path_makes_a_vetoed_name(server, bob):
    fid = write(bob, r"mine\plain.txt", b"x")
    for how in (RENAME, LINK):
        for target in (r"mine\hidden.veto", r"mine\HIDDEN.VETO"):
            r = bob.set_info(fid, wire.INFO_FILE, how, name_info(target))
            assert r.status == wire.STATUS_OBJECT_NAME_NOT_FOUND, (how, target, r)
    for name in (r"mine\made.veto", r"mine\made.veto:stream", r"mine\made.veto\below.txt"):
        r = bob.create(name, READ_WRITE, wire.FILE_OPEN_IF)
        assert r.status in (wire.STATUS_OBJECT_NAME_NOT_FOUND, wire.STATUS_OBJECT_PATH_NOT_FOUND), (name, r)
    bob.close(fid)
    assert not [n for n in entries(server["share"] / "mine") if n.lower().endswith(".veto")]


# -- a directory swapped for a link out while requests use it ------------------------------------
def test_a_directory_swapped_for_a_link_out_in_a_loop_is_never_followed(server, bob):
    """A local user swaps mine/d between a directory and a link to a directory outside the
    share (whose files BOB could read, were he there) as fast as he can, while BOB opens,
    reads, creates, renames into and lists through mine\\d: not one request reaches outside
    (each lookup is made beneath the share's root, every time)."""
    import threading
    mine, outside = server["share"] / "mine", server["outside"]
    (outside / "only-outside.txt").write_text("outside")
    (outside / "only-outside.txt").chmod(0o644)
    (outside / "outside-marker.txt").write_text("")
    real, swap = mine / "d", mine / "d-swap"
    stop_swapping = threading.Event()

    def swapper():
        while not stop_swapping.is_set():
            try:
                real.mkdir()
                os.chmod(real, 0o777)
                (real / "only-outside.txt").write_text("inside")
                time.sleep(0.002)
                os.symlink(outside, swap)
                shutil.rmtree(real)
                os.rename(swap, real)
                time.sleep(0.002)
                os.unlink(real)
            except OSError:
                pass
    thread = threading.Thread(target=swapper)
    thread.start()
    reached, opened = [], 0
    try:
        fid = write(bob, r"mine\to-move.txt", b"x")
        for i in range(300):
            r = bob.create(r"mine\d\only-outside.txt", wire.GENERIC_READ)
            if r.status == wire.STATUS_SUCCESS:
                opened += 1
                if b"outside" in bob.read(r.file_id, 100).raw:
                    reached.append("read")
                bob.close(r.file_id)
            r = bob.create(rf"mine\d\made-{i}.txt", READ_WRITE, wire.FILE_CREATE)
            if r.status == wire.STATUS_SUCCESS:
                bob.close(r.file_id)
            if rename(bob, fid, rf"mine\d\moved-{i}.txt").status == wire.STATUS_SUCCESS:
                bob.close(fid)
                fid = write(bob, r"mine\to-move.txt", b"x")
            r = bob.create(r"mine\d", wire.GENERIC_READ, wire.FILE_OPEN, wire.FILE_DIRECTORY_FILE)
            if r.status == wire.STATUS_SUCCESS:
                listing = bob.query_directory(r.file_id)
                if "outside-marker".encode("utf-16-le") in listing.raw:
                    reached.append("listed")
                bob.close(r.file_id)
        bob.close(fid)
    finally:
        stop_swapping.set()
        thread.join()
        if real.is_symlink():
            real.unlink()
        shutil.rmtree(real, ignore_errors=True)
    left = [n for n in entries(outside) if n.startswith(("made-", "moved-"))]
    assert not reached and not left, (reached, left)
    assert opened > 0           # the race was run: the directory was there at times


# -- new files in a directory whose default ACL keeps them private -------------------------------
def posix_acl(user: int, group: int, other: int) -> bytes:
    """A minimal POSIX ACL as the kernel stores it (system.posix_acl_*): owner, group, other."""
    entry = struct.Struct("<HHI")
    return struct.pack("<I", 2) + entry.pack(0x01, user, 0xFFFFFFFF) + entry.pack(0x04, group, 0xFFFFFFFF) \
        + entry.pack(0x20, other, 0xFFFFFFFF)


def test_a_default_acl_decides_the_modes_of_new_files(server, bob):
    """A directory whose default ACL gives group and others nothing: what is created in it is
    its owner's alone, as the kernel makes it (Samba sets no mode over a default ACL). The
    server must not widen it afterwards to the create mask's 0644 / 0755, which would let
    every local user read files the directory's ACL keeps private."""
    private = server["share"] / "mine" / "private"
    private.mkdir()
    os.chown(private, *pwd.getpwnam(BOB)[2:4])
    try:
        os.setxattr(private, "system.posix_acl_default", posix_acl(7, 0, 0))
    except OSError as e:
        pytest.skip(f"no POSIX ACLs on this file system: {e}")
    bob.close(write(bob, r"mine\private\secret.txt", b"bob's secret", wire.FILE_CREATE))
    r = bob.create(r"mine\private\sub", wire.GENERIC_READ | wire.GENERIC_WRITE, wire.FILE_CREATE,
                   wire.FILE_DIRECTORY_FILE)
    assert r.status == wire.STATUS_SUCCESS, r
    bob.close(r.file_id)
    for name in ("secret.txt", "sub"):
        mode = os.stat(private / name).st_mode & 0o777
        assert not mode & 0o077, f"{name}: {oct(mode)}"
    # and where the default ACL gives others read, the create mask applies as always
    os.setxattr(private, "system.posix_acl_default", posix_acl(7, 5, 5))
    bob.close(write(bob, r"mine\private\open.txt", b"x", wire.FILE_CREATE))
    assert os.stat(private / "open.txt").st_mode & 0o777 == 0o644
    shutil.rmtree(private)
