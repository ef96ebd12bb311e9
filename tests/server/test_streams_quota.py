"""A user's disk quota holds for the data of his files' named streams: a stream is its file's
owner's (the server makes it in its depot and gives it to that user at once), so writing a
stream past the user's hard limit fails with STATUS_DISK_FULL, as writing the file would,
instead of being charged to the server (root, on which no quota is set).

A real quota: an ext4 image made with `mkfs.ext4 -O quota`, loop-mounted with usrquota, the
user's limit set with quotactl(2) (the `quota` package's tools are not needed). Skipped
where the kernel cannot (ext4 quotas need CONFIG_QUOTA and CONFIG_QFMT_V2) or the tools or
root are missing."""
from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "security"))
from raw import RawClient  # noqa: E402
from servers import spawn_for_accounts, stop, unix_accounts  # noqa: E402

from smbring.smb import wire  # noqa: E402

if os.geteuid() != 0 or not all(shutil.which(t) for t in ("useradd", "mkfs.ext4", "mount", "umount")):
    pytest.skip("a loop-mounted file system with quotas needs root, useradd, mkfs.ext4 and mount",
                allow_module_level=True)

PASSWORD = "Streams-q1"
ALICE = f"srqa{os.getpid() % 100000}"
LIMIT_KIB = 1024                    # ALICE's hard limit of blocks
CHUNK = 64 * 1024

Q_SETQUOTA, USRQUOTA, QIF_BLIMITS = 0x800008, 0, 1


class IfDqblk(ctypes.Structure):
    """struct if_dqblk (linux/quota.h): block limits in KiB."""
    _fields_ = [("bhardlimit", ctypes.c_uint64), ("bsoftlimit", ctypes.c_uint64), ("curspace", ctypes.c_uint64),
                ("ihardlimit", ctypes.c_uint64), ("isoftlimit", ctypes.c_uint64), ("curinodes", ctypes.c_uint64),
                ("btime", ctypes.c_uint64), ("itime", ctypes.c_uint64), ("valid", ctypes.c_uint32)]


def set_block_limit(device: str, uid: int, kib: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    limits = IfDqblk(bhardlimit=kib, bsoftlimit=kib, valid=QIF_BLIMITS)
    if libc.quotactl((Q_SETQUOTA << 8) | USRQUOTA, device.encode(), uid, ctypes.byref(limits)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@pytest.fixture(scope="module")
def quota_fs():
    """A 64 MiB ext4 with user quotas, loop-mounted; yields (mount point, its device)."""
    top = Path(tempfile.mkdtemp(prefix="smbring-quota-", dir="/tmp"))
    image, mnt = top / "fs.img", top / "mnt"
    mnt.mkdir()
    with open(image, "wb") as f:
        f.truncate(64 << 20)
    try:
        made = subprocess.run(["mkfs.ext4", "-q", "-F", "-O", "quota", str(image)], capture_output=True, text=True)
        if made.returncode != 0:
            pytest.skip(f"mkfs.ext4 -O quota: {made.stderr.strip()}")
        mounted = subprocess.run(["mount", "-o", "loop,usrquota", str(image), str(mnt)], capture_output=True,
                                 text=True)
        if mounted.returncode != 0:
            pytest.skip("the kernel mounts no ext4 with user quotas here (it needs CONFIG_QUOTA and "
                        f"CONFIG_QFMT_V2): {mounted.stderr.strip()}")
        try:
            device = subprocess.run(["findmnt", "-n", "-o", "SOURCE", str(mnt)], capture_output=True,
                                    text=True, check=True).stdout.strip()
            yield mnt, device
        finally:
            subprocess.run(["umount", str(mnt)], capture_output=True)     # (the loop device goes with it)
    finally:
        shutil.rmtree(top, ignore_errors=True)


@pytest.fixture(scope="module")
def accounts():
    yield from unix_accounts(ALICE)


@pytest.fixture(scope="module")
def server(quota_fs, accounts, tmp_path_factory):
    """share/ (root's 0755) on the quota file system, with shared/ (1777) holding two small
    files of ALICE's; her hard limit LIMIT_KIB."""
    mnt, device = quota_fs
    uid, gid = accounts[ALICE]
    share = mnt / "share"
    (share / "shared").mkdir(parents=True)
    share.chmod(0o755)
    (share / "shared").chmod(0o1777)
    for name in ("stream-base.txt", "plain.txt"):
        (share / "shared" / name).write_text("small")
        os.chown(share / "shared" / name, uid, gid)
    try:
        set_block_limit(device, uid, LIMIT_KIB)
    except OSError as e:
        pytest.skip(f"quotactl(Q_SETQUOTA) on {device}: {e}")
    proc, port, _log = spawn_for_accounts(tmp_path_factory.mktemp("quota"), share, (ALICE,), PASSWORD)
    try:
        yield {"port": port, "share": share, "uid": uid}
    finally:
        stop(proc)


def fill(server, name: str) -> list[int]:
    """Writes twice ALICE's limit to `name` as ALICE; the status of each WRITE."""
    c = RawClient(server["port"])
    try:
        c.negotiate()
        tree = c.tree(c.logon(ALICE, PASSWORD), "share")
        fid = tree.open(name, wire.GENERIC_READ | wire.GENERIC_WRITE, wire.FILE_OVERWRITE_IF)
        statuses = [tree.write(fid, b"q" * CHUNK, i * CHUNK).status
                    for i in range(2 * LIMIT_KIB * 1024 // CHUNK)]
        tree.close(fid)
        return statuses
    finally:
        c.close()


def test_a_file_s_own_data_is_held_to_the_quota(server):
    """(What the stream is measured against: the quota holds for the file's data.)"""
    statuses = fill(server, r"shared\plain.txt")
    assert statuses[0] == wire.STATUS_SUCCESS
    assert statuses[-1] == wire.STATUS_DISK_FULL, [hex(s) for s in statuses]


def test_a_stream_is_held_to_its_file_owner_s_quota(server):
    (server["share"] / "shared" / "plain.txt").unlink()     # (its blocks back to ALICE's quota)
    statuses = fill(server, r"shared\stream-base.txt:big")
    assert statuses[0] == wire.STATUS_SUCCESS
    assert statuses[-1] == wire.STATUS_DISK_FULL, [hex(s) for s in statuses]
    sid = os.getxattr(server["share"] / "shared" / "stream-base.txt", "user.smbring.streams").decode()
    st = (server["share"] / ".smbring-streams" / sid / "big").stat()
    assert st.st_uid == server["uid"]
    assert st.st_blocks * 512 <= LIMIT_KIB * 1024
