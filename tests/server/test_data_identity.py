"""File data is written as the session's Unix account, on every data path (a server started
as root): what the kernel does for a write depends on who writes, not only on the descriptor.

A write by anyone without CAP_FSETID clears a file's setuid bit, and its setgid bit when the
group may execute it (``file_remove_privs``): without that, a user allowed to write to a
group-writable setgid (or a world-writable setuid) program could replace its code and keep
the bit. Disk quotas and ext4's reserved blocks are counted against the writer the same way.
Each test makes such a file as root, makes the same change as a local process of the writing
account would (a forked child with its ids) to learn what the kernel does for it, then makes
the change through the server, logged on as that account, and compares: the same mode, the
bits gone. Every way the server has of writing is tried: small and large WRITEs (the large
ones twice: direct_writes takes the page cache first, then O_DIRECT), through each data
module, with and without io_uring, on both event loops, a truncation (SET_INFO end of file),
zeroing (FSCTL_SET_ZERO_DATA), trimming (FSCTL_FILE_LEVEL_TRIM) and a server-side copy
(FSCTL_SRV_COPYCHUNK_WRITE).

Accounts are made for the module (useradd, unique names, removed after). Skipped where the
tests do not run as root."""
from __future__ import annotations

import ctypes
import grp
import os
import pwd
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from servers import spawn, stop

if os.geteuid() != 0 or not shutil.which("useradd"):
    pytest.skip("acting as Unix accounts needs root (and useradd)", allow_module_level=True)

sys.path.insert(0, str(Path(__file__).parent.parent / "security"))   # raw.py
from raw import RawClient  # noqa: E402

from smbring.smb import wire  # noqa: E402

PASSWORD = "Data-identity-pw1"
SUFFIX = f"{os.getpid() % 100000}"
OWNER, WRITER = f"srdo{SUFFIX}", f"srdw{SUFFIX}"
GROUP = f"srdg{SUFFIX}"
SIZE = 4 << 20                     # each target file's size before the change
LARGE = 2 << 20                    # a large WRITE: direct_writes' size, page-aligned
FSCTL_SRV_REQUEST_RESUME_KEY = 0x00140078
FSCTL_SRV_COPYCHUNK_WRITE = 0x001480F2
FSCTL_SET_ZERO_DATA = 0x000980C8
FSCTL_FILE_LEVEL_TRIM = 0x00098208
FALLOC_FL_PUNCH_HOLE = 0x02
FILE_END_OF_FILE_INFORMATION = 20
FALLOC_FL_KEEP_SIZE, FALLOC_FL_ZERO_RANGE = 0x01, 0x10
PRIVILEGED = stat.S_ISUID | stat.S_ISGID
# setgid, group may write and execute (the writer is in the group); setuid, anyone may write
MODES = {"setgid": 0o2775, "setuid": 0o4777}
# how the server writes file data: (command-line options, what they choose)
PATHS = {
    "default": (),                                         # direct_writes -> io_uring
    "io_uring": ("--vfs-objects", "io_uring"),
    "threadpool": ("--vfs-objects", "threadpool"),
    "posix": ("--vfs-objects", "posix"),
    "no-io-uring": ("--no-io-uring",),                     # direct_writes -> threadpool
    "ring-loop": ("--event-loop", "ring"),                  # the loop waits in the ring
    "asyncio-loop": ("--event-loop", "asyncio"),            # asyncio's loop (the default: uvloop)
}


def run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, text=True)


@pytest.fixture(scope="module")
def accounts():
    """OWNER owns the targets; WRITER, in GROUP (theirs), writes to them: name -> (uid, gid, groups)."""
    made = []
    try:
        run("groupadd", GROUP)
        run("useradd", "--no-create-home", "--user-group", OWNER)
        made.append(OWNER)
        run("useradd", "--no-create-home", "--user-group", "--groups", GROUP, WRITER)
        made.append(WRITER)
        ids = {}
        for name in made:
            pw = pwd.getpwnam(name)
            ids[name] = (pw.pw_uid, pw.pw_gid, tuple(os.getgrouplist(name, pw.pw_gid)))
        yield ids
    finally:
        for name in made:
            subprocess.run(["userdel", name], capture_output=True)
        subprocess.run(["groupdel", GROUP], capture_output=True)


@pytest.fixture(scope="module")
def place(accounts, tmp_path_factory):
    """A share directory the accounts can reach (pytest's own are root's 0700), and where
    the local copies of the targets go."""
    top = Path(tempfile.mkdtemp(prefix="smbring-data-identity-", dir="/tmp"))
    top.chmod(0o755)
    for name in ("share", "local"):
        (top / name).mkdir()
        (top / name).chmod(0o755)
    yield top
    shutil.rmtree(top, ignore_errors=True)


@pytest.fixture(scope="module", params=list(PATHS))
def server(request, accounts, place, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"data-identity-{request.param}")
    env = dict(os.environ, SMBRING_PASSDB=str(tmp / "passdb"))
    subprocess.run([sys.executable, "-m", "smbring.cli", "user", "add", WRITER, "--password-stdin"],
                   input=PASSWORD + "\n", text=True, check=True, env=env, capture_output=True)
    proc, port, log = spawn(tmp, str(place / "share"), "--share", "share", *PATHS[request.param],
                            accounts=True)
    yield {"port": port, "share": place / "share", "local": place / "local", "log": log,
           "path": request.param}
    stop(proc)
    assert "Traceback" not in log.read_text()


def pattern(n: int, seed: int = 1) -> bytes:
    return bytes((i * 13 + seed) % 251 for i in range(n))


def make_target(path: Path, mode: int) -> None:
    """As root: OWNER's file of GROUP, SIZE bytes, with the mode (the set-id bits included:
    chmod after chown, which would clear them)."""
    path.unlink(missing_ok=True)
    path.write_bytes(pattern(SIZE, seed=7))
    os.chown(path, pwd.getpwnam(OWNER).pw_uid, grp.getgrnam(GROUP).gr_gid)
    os.chmod(path, mode)
    assert stat.S_IMODE(path.stat().st_mode) == mode


def make_source(path: Path) -> None:
    path.write_bytes(pattern(SIZE, seed=3))
    path.chmod(0o644)


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.fallocate(fd, mode, ctypes.c_int64(offset), ctypes.c_int64(length)) != 0:
        raise OSError(ctypes.get_errno(), "fallocate")


def locally(ids, change) -> None:
    """change() in a child process with the account's uid, gid and groups: what the kernel
    does when that user makes it."""
    uid, gid, groups = ids
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setgroups(list(groups))
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
            change()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


class Writer:
    """WRITER's connection, session and tree on the server."""

    def __init__(self, server):
        self.raw = RawClient(server["port"])
        assert self.raw.negotiate((wire.SMB311,)).status == wire.STATUS_SUCCESS
        self.raw.logon(WRITER, PASSWORD)
        self.raw.grow_credits(256)
        self.tree = self.raw.tree(self.raw.sessions[max(self.raw.sessions)], "share")

    def open(self, name: str, access=wire.FILE_READ_DATA | wire.FILE_WRITE_DATA) -> bytes:
        return self.tree.open(name, access, wire.FILE_OPEN)

    def close(self):
        self.raw.close()


@pytest.fixture
def writer(server):
    w = Writer(server)
    yield w
    w.close()


def expected_and_target(server, accounts, name: str, mode: int, change_locally) -> tuple[int, Path]:
    """The mode WRITER's own change leaves on a local copy; the target, made afresh."""
    local = server["local"] / name
    make_target(local, mode)
    locally(accounts[WRITER], lambda: change_locally(str(local)))
    expected = mode_of(local)
    assert not expected & PRIVILEGED, f"the kernel kept {oct(expected)} for {WRITER}"
    target = server["share"] / name
    make_target(target, mode)
    return expected, target


def write_locally(offset: int, data: bytes):
    def change(path):
        fd = os.open(path, os.O_WRONLY)
        try:
            assert os.pwrite(fd, data, offset) == len(data)
        finally:
            os.close(fd)
    return change


@pytest.mark.parametrize("kind", list(MODES))
@pytest.mark.parametrize("size", [4096, LARGE], ids=["small", "large"])
def test_write_clears_the_set_id_bits_as_the_writer(server, accounts, writer, kind, size):
    name = f"write-{kind}-{size}"
    data = pattern(size)
    expected, target = expected_and_target(server, accounts, name, MODES[kind], write_locally(0, data))
    fid = writer.open(name)
    # twice: a large write goes through the page cache first and O_DIRECT second (direct_writes
    # measures both ways); the bits are set again between
    for round_ in range(2):
        r = writer.tree.write(fid, data, offset=round_ * size)
        assert r.status == wire.STATUS_SUCCESS, r
        assert mode_of(target) == expected, (server["path"], round_, oct(mode_of(target)))
        os.chmod(target, MODES[kind])
    writer.tree.close(fid)
    assert target.read_bytes()[:2 * size] == data + data


@pytest.mark.parametrize("kind", list(MODES))
def test_end_of_file_clears_the_set_id_bits_as_the_writer(server, accounts, writer, kind):
    name = f"eof-{kind}"

    def change(path):
        fd = os.open(path, os.O_WRONLY)
        try:
            os.ftruncate(fd, 1000)
        finally:
            os.close(fd)
    expected, target = expected_and_target(server, accounts, name, MODES[kind], change)
    fid = writer.open(name)
    r = writer.tree.set_info(fid, 1, FILE_END_OF_FILE_INFORMATION, struct.pack("<Q", 1000))
    assert r.status == wire.STATUS_SUCCESS, r
    writer.tree.close(fid)
    assert target.stat().st_size == 1000
    assert mode_of(target) == expected, (server["path"], oct(mode_of(target)))


# FSCTLs that free or zero a range, with what the kernel is asked for when the writer does it
# by hand: (fallocate mode, FSCTL, its input for bytes 4096 to 12288, its answer's size)
RANGE_CHANGES = {
    "zeroing": (FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, FSCTL_SET_ZERO_DATA,
                struct.pack("<QQ", 4096, 4096 + 8192), 0),
    "trimming": (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, FSCTL_FILE_LEVEL_TRIM,
                 struct.pack("<IIqq", 0, 1, 4096, 8192), 4),
}


@pytest.mark.parametrize("kind", list(MODES))
@pytest.mark.parametrize("operation", list(RANGE_CHANGES))
def test_a_range_zeroed_or_trimmed_clears_the_set_id_bits_as_the_writer(server, accounts, writer,
                                                                         operation, kind):
    mode, fsctl, request, answer_size = RANGE_CHANGES[operation]
    name = f"{operation}-{kind}"

    def change(path):
        fd = os.open(path, os.O_WRONLY)
        try:
            fallocate(fd, mode, 4096, 8192)
        finally:
            os.close(fd)
    expected, target = expected_and_target(server, accounts, name, MODES[kind], change)
    fid = writer.open(name)
    r = writer.tree.ioctl(fid, fsctl, request, max_output=answer_size)
    assert r.status == wire.STATUS_SUCCESS, r
    writer.tree.close(fid)
    assert target.read_bytes()[4096:4096 + 8192] == bytes(8192)
    assert mode_of(target) == expected, (server["path"], oct(mode_of(target)))


@pytest.mark.parametrize("kind", list(MODES))
def test_server_side_copy_clears_the_set_id_bits_as_the_writer(server, accounts, writer, kind):
    name, source = f"copy-{kind}", f"copy-source-{kind}"
    make_source(server["local"] / source)
    make_source(server["share"] / source)

    def change(path):
        src = os.open(str(server["local"] / source), os.O_RDONLY)
        dst = os.open(path, os.O_WRONLY)
        try:
            assert os.copy_file_range(src, dst, 65536, 0, 0) == 65536
        finally:
            os.close(src)
            os.close(dst)
    expected, target = expected_and_target(server, accounts, name, MODES[kind], change)
    src = writer.open(source, wire.FILE_READ_DATA)
    r = writer.tree.ioctl(src, FSCTL_SRV_REQUEST_RESUME_KEY, max_output=32)
    assert r.status == wire.STATUS_SUCCESS, r
    key = r.buffer(32, "<II")[:24]
    dst = writer.open(name)
    chunks = struct.pack("<24sII", key, 1, 0) + struct.pack("<QQII", 0, 0, 65536, 0)
    r = writer.tree.ioctl(dst, FSCTL_SRV_COPYCHUNK_WRITE, chunks, max_output=12)
    assert r.status == wire.STATUS_SUCCESS, r
    writer.tree.close(src)
    writer.tree.close(dst)
    assert target.read_bytes()[:65536] == pattern(SIZE, seed=3)[:65536]
    assert mode_of(target) == expected, (server["path"], oct(mode_of(target)))
