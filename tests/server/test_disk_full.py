"""A full file system, for real: the share is a small tmpfs or ext4, written past its size through
each way file data goes (the ring with direct writes, threads, the ring event loop), many
WRITEs in flight at once. Every WRITE is answered either STATUS_SUCCESS, all its bytes
written and on the file, or STATUS_DISK_FULL: none is acknowledged without its data. The
server goes on serving, and once space is free again the same client writes again."""
from __future__ import annotations

import os
import pathlib
import struct
import sys

import pytest
from servers import PASSWORD, USER, small_file_system, spawn, stop

sys.path.insert(0, str(pathlib.Path(__file__).parents[1] / "security"))
from raw import RawClient  # noqa: E402
from smbcore import write_body  # noqa: E402

from smbring.smb import wire  # noqa: E402

FS_SIZE = 4 << 20           # the share's file system
CHUNK = 192 << 10           # bytes per WRITE: not a divisor of FS_SIZE (a WRITE straddles the end)
IN_FLIGHT = 16
WRITTEN = 2 * FS_SIZE       # what the client tries to write: twice what fits

PATHS = {
    "ring-direct": [],
    "threads": ["--vfs-objects", "threadpool"],
    "ring-loop": ["--event-loop", "ring"],
    "asyncio-loop": ["--event-loop", "asyncio"],
}


@pytest.fixture(params=["tmpfs", "ext4"])
def small_share(request, tmp_path):
    """The share: a file system of FS_SIZE bytes (servers.small_file_system)."""
    with small_file_system(tmp_path / "share", request.param, FS_SIZE) as share:
        yield share


def payload(i: int) -> bytes:
    return (struct.pack("<I", i) * (CHUNK // 4 + 1))[:CHUNK]


def write_all(client: RawClient, tree, fid: bytes) -> dict[int, tuple[int, int]]:
    """WRITEs of CHUNK bytes from offset 0 to WRITTEN, IN_FLIGHT at a time: offset ->
    (status, count written as answered)."""
    answers, pending, offset, i = {}, {}, 0, 0
    while offset < WRITTEN or pending:
        while offset < WRITTEN and len(pending) < IN_FLIGHT:
            msg = tree.message(wire.WRITE, write_body(fid, payload(i), offset), payload=CHUNK)
            pending[wire.Header.parse(msg).message_id] = offset
            client.send([msg])
            offset += CHUNK
            i += 1
        for r in client.parse(client.recv_frame()):
            if r.status == wire.STATUS_PENDING:
                continue
            count = struct.unpack_from("<I", r.raw, 64 + 4)[0] if r.status == wire.STATUS_SUCCESS else 0
            answers[pending.pop(r.header.message_id)] = (r.status, count)
    return answers


@pytest.mark.parametrize("path", list(PATHS))
def test_a_full_file_system_acknowledges_only_what_it_holds(tmp_path, small_share, path):
    proc, port, log = spawn(tmp_path, str(small_share), "--share", "share", *PATHS[path])
    try:
        client = RawClient(port, timeout=30)
        assert client.negotiate((wire.SMB311,)).status == wire.STATUS_SUCCESS
        tree = client.tree(client.logon(USER, PASSWORD), "share")
        client.grow_credits(512)
        fid = tree.open("big.bin", wire.GENERIC_READ | wire.GENERIC_WRITE, wire.FILE_OVERWRITE_IF)
        answers = write_all(client, tree, fid)
        statuses = {status for status, _ in answers.values()}
        assert statuses <= {wire.STATUS_SUCCESS, wire.STATUS_DISK_FULL}, \
            sorted(hex(s) for s in statuses)
        assert wire.STATUS_DISK_FULL in statuses and wire.STATUS_SUCCESS in statuses, answers
        assert tree.flush(fid).status in (wire.STATUS_SUCCESS, wire.STATUS_DISK_FULL)
        with open(small_share / "big.bin", "rb") as f:
            for n, offset in enumerate(range(0, WRITTEN, CHUNK)):
                status, count = answers[offset]
                if status != wire.STATUS_SUCCESS:
                    continue
                assert count == CHUNK, (offset, count)      # never a short count called success
                f.seek(offset)
                assert f.read(CHUNK) == payload(n), f"acknowledged WRITE at {offset} not on the file"
        # space again: the file goes, and the same session writes a new one
        assert tree.close(fid).status == wire.STATUS_SUCCESS
        os.unlink(small_share / "big.bin")
        again = tree.open("again.bin", wire.GENERIC_READ | wire.GENERIC_WRITE, wire.FILE_OVERWRITE_IF)
        r = tree.write(again, payload(0), 0)
        assert r.status == wire.STATUS_SUCCESS, r
        assert tree.close(again).status == wire.STATUS_SUCCESS
        assert (small_share / "again.bin").read_bytes() == payload(0)
        client.close()
    finally:
        stop(proc)
    text = log.read_text()
    assert "Traceback" not in text, text[-4000:]
