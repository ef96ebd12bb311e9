"""Named streams on a server started as root acting as two Unix accounts: the stream depot
belongs to the server, every user can make streams on the files he may write, and access to
a stream is decided by its base file, judged as the user (mode bits, groups), never by the
stream file in the depot. A local user cannot read stream data in the depot; a depot an older
version left (a user's, 0755), with links a local user planted in it, is taken over.
Raw requests (tests/security/raw.py), so that every field is the test's."""
from __future__ import annotations

import os
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "security"))
from raw import RawClient  # noqa: E402
from servers import spawn_for_accounts, stop, unix_accounts  # noqa: E402

from smbring.smb import wire  # noqa: E402

if os.geteuid() != 0 or not shutil.which("useradd"):
    pytest.skip("acting as Unix accounts needs root (and useradd)", allow_module_level=True)

PASSWORD = "Streams-pw1"
SUFFIX = f"{os.getpid() % 100000}"
ALICE, BOB = f"srsa{SUFFIX}", f"srsb{SUFFIX}"
DENIED = wire.STATUS_ACCESS_DENIED
READ_WRITE = wire.GENERIC_READ | wire.GENERIC_WRITE
DEPOT = ".smbring-streams"
LEGACY_ID = "0123456789abcdef"      # bob's b-legacy.txt's streams, as an older version kept them


@pytest.fixture(scope="module")
def accounts():
    yield from unix_accounts(ALICE, BOB)


@pytest.fixture(scope="module")
def server(accounts, tmp_path_factory):
    """share/ (root's 0755: no user may make anything in the share root) with shared/ (1777)
    holding ALICE's a600.txt, a644.txt and group664.txt (group: BOB's group) and BOB's
    b.txt and b-legacy.txt. A depot as an older version left it: made by BOB (0755), with
    b-legacy.txt's streams: `old` (0644, BOB's), `evil` (a symlink to a600.txt) and `hard`
    (a hard link to a600.txt, as a local user could make where links are not protected)."""
    tmp = tmp_path_factory.mktemp("streams")
    top = Path(tempfile.mkdtemp(prefix="smbring-streams-", dir="/tmp"))
    top.chmod(0o755)
    share = top / "share"
    share.mkdir()
    share.chmod(0o755)
    shared = share / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    alice, bob = accounts[ALICE], accounts[BOB]
    for name, mode, owner in (("a600.txt", 0o600, alice), ("a644.txt", 0o644, alice),
                              ("group664.txt", 0o664, (alice[0], bob[1])),
                              ("b.txt", 0o644, bob), ("b-legacy.txt", 0o644, bob)):
        (shared / name).write_text(f"{name} data")
        (shared / name).chmod(mode)
        os.chown(shared / name, *owner)
    os.setxattr(shared / "b-legacy.txt", "user.smbring.streams", LEGACY_ID.encode())
    depot = share / DEPOT
    depot.mkdir()
    (depot / LEGACY_ID).mkdir()
    (depot / LEGACY_ID / "old").write_text("bob's old stream")
    (depot / LEGACY_ID / "old").chmod(0o644)
    (depot / LEGACY_ID / "evil").symlink_to("../../shared/a600.txt")
    os.link(shared / "a600.txt", depot / LEGACY_ID / "hard")
    for path in (depot, depot / LEGACY_ID, depot / LEGACY_ID / "old"):
        os.chown(path, *bob)
    for path in (depot, depot / LEGACY_ID):
        path.chmod(0o755)
    proc, port, log = spawn_for_accounts(tmp, share, (ALICE, BOB), PASSWORD, more=f"[ro]\npath = {share}\nread only = yes\n")
    srv = {"port": port, "share": share, "shared": shared, "proc": proc, "log": log, "accounts": accounts}
    yield srv
    stop(proc)
    shutil.rmtree(top, ignore_errors=True)


def connect(server, user: str, share: str = "share"):
    c = RawClient(server["port"])
    c.negotiate()
    return c, c.tree(c.logon(user, PASSWORD), share)


@pytest.fixture
def alice(server):
    c, tree = connect(server, ALICE)
    yield tree
    c.close()


@pytest.fixture
def bob(server):
    c, tree = connect(server, BOB)
    yield tree
    c.close()


def put(tree, name: str, data: bytes) -> None:
    fid = tree.open(name, READ_WRITE, wire.FILE_OVERWRITE_IF)
    try:
        assert tree.write(fid, data).status == wire.STATUS_SUCCESS
    finally:
        tree.close(fid)


def get(tree, name: str) -> bytes:
    fid = tree.open(name, wire.GENERIC_READ, wire.FILE_OPEN)
    try:
        r = tree.read(fid, 4096)
        assert r.status == wire.STATUS_SUCCESS, r
        return r.buffer(2, "<BxI")
    finally:
        tree.close(fid)


def stream_file(server, name: str, stream: str) -> Path:
    sid = os.getxattr(server["shared"] / name, "user.smbring.streams").decode()
    return server["share"] / DEPOT / sid / stream


# -- every user makes streams on his own files ------------------------------------------------------
def test_each_user_makes_streams_on_his_own_files(server, alice, bob):
    """The first user to make a stream does not lock everybody else out (and a share root
    the users may not write does not lock them all out)."""
    put(alice, r"shared\a644.txt:Zone.Identifier", b"[ZoneTransfer]\r\nZoneId=3\r\n")
    put(alice, r"shared\a600.txt:hers", b"alice's private stream")
    put(bob, r"shared\b.txt:his", b"bob's stream")
    assert get(alice, r"shared\a600.txt:hers") == b"alice's private stream"
    assert get(bob, r"shared\b.txt:his") == b"bob's stream"
    assert (server["shared"] / "a600.txt").read_bytes() == b"a600.txt data"


def test_the_depot_belongs_to_the_server(server, alice):
    put(alice, r"shared\a644.txt:owned", b"x")
    depot = server["share"] / DEPOT
    for path in (depot, stream_file(server, "a644.txt", "owned").parent):
        st = path.lstat()
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o700), path
    st = stream_file(server, "a644.txt", "owned").lstat()
    assert not stat.S_IMODE(st.st_mode) & 0o077


# -- a stream is its file's owner's (disk quotas charge its data to that user) ---------------------
def test_a_user_s_stream_on_his_file_is_his(server, alice):
    """Made by the server in its depot, the stream is given to ALICE at once: its blocks count
    in her quota, not in root's (on which there is none)."""
    put(alice, r"shared\a644.txt:hers-owned", b"counted as alice's")
    st = stream_file(server, "a644.txt", "hers-owned").lstat()
    assert (st.st_uid, st.st_gid) == server["accounts"][ALICE]
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600


def test_a_stream_another_user_makes_on_a_file_is_the_file_owner_s(server, alice, bob):
    """BOB may write group664.txt (ALICE's, BOB's group): the stream he makes on it is hers,
    with the file's group, as the file's own data would be (NTFS charges a file's streams to
    its owner); data BOB writes to it later does not change that."""
    put(bob, r"shared\group664.txt:bobs-on-hers", b"bob writes, alice pays")
    path = stream_file(server, "group664.txt", "bobs-on-hers")
    base = (server["shared"] / "group664.txt").stat()
    st = path.lstat()
    assert (st.st_uid, st.st_gid) == (base.st_uid, base.st_gid) == (server["accounts"][ALICE][0],
                                                                    server["accounts"][BOB][1])
    put(bob, r"shared\group664.txt:bobs-on-hers", b"again, longer: " + b"x" * 65536)
    assert path.lstat().st_uid == server["accounts"][ALICE][0]
    assert get(alice, r"shared\group664.txt:bobs-on-hers").startswith(b"again, longer")


def test_a_stream_someone_else_owns_is_given_to_the_file_s_owner_when_it_may_be_written(server, alice, bob):
    """A stream an older version left the server's (root's), or one whose file changed hands
    since, is given to the file's owner at its next open by someone who may write it: its
    data counts in that user's quota from then on. Read by someone who may not write the
    file, it is left as it is."""
    put(alice, r"shared\a644.txt:was-roots", b"made by an older version")
    path = stream_file(server, "a644.txt", "was-roots")
    os.chown(path, 0, 0)
    assert get(bob, r"shared\a644.txt:was-roots") == b"made by an older version"
    assert path.lstat().st_uid == 0
    assert get(alice, r"shared\a644.txt:was-roots") == b"made by an older version"
    assert (path.lstat().st_uid, path.lstat().st_gid) == server["accounts"][ALICE]
    base = server["shared"] / "group664.txt"
    put(alice, r"shared\group664.txt:changes-hands", b"alice's, then bob's")
    os.chown(base, *server["accounts"][BOB])
    try:
        put(bob, r"shared\group664.txt:changes-hands", b"bob's now")
        path = stream_file(server, "group664.txt", "changes-hands")
        assert (path.lstat().st_uid, path.lstat().st_gid) == server["accounts"][BOB]
    finally:
        os.chown(base, server["accounts"][ALICE][0], server["accounts"][BOB][1])


def test_a_stream_owner_is_still_kept_out_of_the_depot(server, alice):
    """ALICE owns her stream's file, but the directories leading to it are the server's (0700):
    logged on to the machine she neither reads nor replaces it by its path."""
    put(alice, r"shared\a600.txt:kept-in", b"reached through the server only")
    path = stream_file(server, "a600.txt", "kept-in")
    assert path.lstat().st_uid == server["accounts"][ALICE][0]
    uid, gid = server["accounts"][ALICE]
    code = (f"import errno\n"
            f"for act in (lambda: open({str(path)!r}, 'rb').read(), lambda: open({str(path)!r}, 'ab'),\n"
            f"            lambda: os.unlink({str(path)!r}), lambda: os.chmod({str(path)!r}, 0o666)):\n"
            f"    try:\n        act()\n        print('reached')\n"
            f"    except PermissionError:\n        print('refused')\n")
    r = as_user(uid, gid, code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["refused"] * 4
    assert get(alice, r"shared\a600.txt:kept-in") == b"reached through the server only"


def as_user(uid: int, gid: int, code: str) -> subprocess.CompletedProcess:
    """`code` run by a local user: a process with only that user's ids."""
    # (modules first: the interpreter's own files need not be readable by the user)
    prelude = f"import os, pathlib\nos.setgroups([])\nos.setresgid({gid}, {gid}, {gid})\nos.setresuid({uid}, {uid}, {uid})\n"
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, timeout=60)


def test_a_local_user_cannot_read_streams_in_the_depot(server, alice):
    """BOB, logged on to the machine, walks the depot for the streams of ALICE's private file."""
    put(alice, r"shared\a600.txt:hers", b"alice's private stream")
    path = stream_file(server, "a600.txt", "hers")
    uid, gid = server["accounts"][BOB]
    walk = (f"found = []\n"
            f"try:\n    found.append(pathlib.Path({str(path)!r}).read_bytes())\nexcept OSError:\n    pass\n"
            f"for dirpath, dirs, files in os.walk({str(server['share'] / DEPOT)!r}):\n"
            f"    for f in files:\n"
            f"        try:\n            found.append(open(os.path.join(dirpath, f), 'rb').read())\n"
            f"        except OSError:\n            pass\n"
            f"print(b'private' in b''.join(found))\n")
    r = as_user(uid, gid, walk)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


# -- a stream's access is its base file's, judged as the user ---------------------------------------
def test_a_private_file_s_streams_are_not_opened_by_another_user(alice, bob):
    put(alice, r"shared\a600.txt:hers", b"alice's private stream")
    for access, disposition in ((wire.GENERIC_READ, wire.FILE_OPEN), (wire.GENERIC_WRITE, wire.FILE_OPEN),
                                (READ_WRITE, wire.FILE_OPEN_IF), (READ_WRITE, wire.FILE_OVERWRITE_IF),
                                (wire.MAXIMUM_ALLOWED, wire.FILE_OPEN)):
        for name in (r"shared\a600.txt:hers", r"shared\a600.txt:new"):
            r = bob.create(name, access, disposition)
            assert r.status in (DENIED, wire.STATUS_OBJECT_NAME_NOT_FOUND), (name, access, r)


def test_a_readable_file_s_stream_is_read_not_written(server, alice, bob):
    put(alice, r"shared\a644.txt:Zone.Identifier", b"zone of alice")
    assert get(bob, r"shared\a644.txt:Zone.Identifier") == b"zone of alice"
    for access, disposition in ((wire.GENERIC_WRITE, wire.FILE_OPEN), (READ_WRITE, wire.FILE_OPEN_IF),
                                (wire.GENERIC_READ, wire.FILE_OVERWRITE), (READ_WRITE, wire.FILE_CREATE),
                                (wire.GENERIC_READ | wire.DELETE, wire.FILE_OPEN)):
        for name in (r"shared\a644.txt:Zone.Identifier", r"shared\a644.txt:bobs"):
            r = bob.create(name, access, disposition)
            assert r.status in (DENIED, wire.STATUS_OBJECT_NAME_NOT_FOUND, wire.STATUS_OBJECT_NAME_COLLISION), \
                (name, access, disposition, r)
    # MAXIMUM_ALLOWED opens it for reading only: a WRITE on it is refused
    r = bob.create(r"shared\a644.txt:Zone.Identifier", wire.MAXIMUM_ALLOWED, wire.FILE_OPEN)
    assert r.status == wire.STATUS_SUCCESS, r
    assert bob.write(r.file_id, b"bob was here").status == DENIED
    bob.close(r.file_id)
    assert get(alice, r"shared\a644.txt:Zone.Identifier") == b"zone of alice"


def test_a_group_writable_file_s_streams_are_written_by_the_group(alice, bob):
    put(alice, r"shared\group664.txt:shared", b"alice's")
    put(bob, r"shared\group664.txt:shared", b"bob's now")
    put(bob, r"shared\group664.txt:bobs", b"a new one of bob's")
    assert get(alice, r"shared\group664.txt:shared") == b"bob's now"
    assert get(alice, r"shared\group664.txt:bobs") == b"a new one of bob's"


def test_a_read_only_share_writes_no_stream(server, alice):
    put(alice, r"shared\a600.txt:hers", b"alice's private stream")
    c, ro = connect(server, ALICE, "ro")
    try:
        assert get(ro, r"shared\a600.txt:hers") == b"alice's private stream"
        for access, disposition in ((READ_WRITE, wire.FILE_OPEN), (READ_WRITE, wire.FILE_OPEN_IF)):
            assert ro.create(r"shared\a600.txt:hers", access, disposition).status == DENIED
    finally:
        c.close()


def test_a_file_the_owner_made_read_only_keeps_its_streams_read_only(server, alice):
    put(alice, r"shared\a644.txt:frozen", b"as it was")
    os.chmod(server["shared"] / "a644.txt", 0o444)
    try:
        assert get(alice, r"shared\a644.txt:frozen") == b"as it was"
        r = alice.create(r"shared\a644.txt:frozen", READ_WRITE, wire.FILE_OPEN)
        assert r.status == DENIED, r
    finally:
        os.chmod(server["shared"] / "a644.txt", 0o644)


def test_deleting_the_file_takes_its_streams(server, bob):
    put(bob, r"shared\b-gone.txt:s", b"to go")
    path = stream_file(server, "b-gone.txt", "s")
    assert path.exists()
    fid = bob.open(r"shared\b-gone.txt", wire.DELETE, wire.FILE_OPEN, wire.FILE_DELETE_ON_CLOSE)
    assert bob.close(fid).status == wire.STATUS_SUCCESS
    assert not (server["shared"] / "b-gone.txt").exists()
    assert not path.exists() and not path.parent.exists()


def test_a_stream_renamed_onto_its_empty_file_is_the_file_s_data(server, bob):
    """FileRenameInformation "::$DATA" as the user: the data is written into his file (the
    same file: inode and owner kept), the stream is removed from the server's depot."""
    bob.close(bob.open(r"shared\b-default.txt", READ_WRITE, wire.FILE_CREATE))
    before = os.stat(server["shared"] / "b-default.txt")
    fid = bob.open(r"shared\b-default.txt:s", READ_WRITE | wire.DELETE, wire.FILE_CREATE)
    assert bob.write(fid, b"stream data").status == wire.STATUS_SUCCESS
    path = stream_file(server, "b-default.txt", "s")
    name = "::$DATA".encode("utf-16-le")
    rename = struct.pack("<B7xQI", 1, 0, len(name)) + name
    assert bob.set_info(fid, wire.INFO_FILE, 10, rename).status == wire.STATUS_SUCCESS
    assert bob.close(fid).status == wire.STATUS_SUCCESS
    after = os.stat(server["shared"] / "b-default.txt")
    assert (after.st_ino, after.st_uid) == (before.st_ino, before.st_uid)
    assert (server["shared"] / "b-default.txt").read_bytes() == b"stream data"
    assert not path.exists()

# -- a depot an older version left ------------------------------------------------------------------
def test_an_old_depot_is_taken_over_and_its_links_are_not_followed(server, bob):
    """b-legacy.txt's streams in BOB's old depot: his own `old` is still his to read; `evil`
    (a symlink) and `hard` (a hard link) lead to ALICE's private file and give nothing."""
    assert get(bob, r"shared\b-legacy.txt:old") == b"bob's old stream"
    depot = (server["share"] / DEPOT).lstat()
    assert (depot.st_uid, stat.S_IMODE(depot.st_mode)) == (0, 0o700)
    for name in ("evil", "hard"):
        r = bob.create(rf"shared\b-legacy.txt:{name}", wire.GENERIC_READ, wire.FILE_OPEN)
        if r.status == wire.STATUS_SUCCESS:
            data = bob.read(r.file_id, 4096)
            bob.close(r.file_id)
            assert b"a600" not in data.raw, name
        else:
            assert r.status in (DENIED, wire.STATUS_OBJECT_NAME_NOT_FOUND, wire.STATUS_IO_REPARSE_TAG_NOT_HANDLED), r
    assert (server["shared"] / "a600.txt").read_text() == "a600.txt data"
