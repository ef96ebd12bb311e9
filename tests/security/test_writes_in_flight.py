"""WRITEs written in the background (a lone WRITE in a plain frame) whose write or answer
fails: a write the file system refuses is answered with its status, a client that leaves
while its WRITEs are on their way to the disk takes nothing down, and neither leaves the
server a task that failed unseen or was dropped while pending."""
from __future__ import annotations

import resource
import socket
import struct
import time

from raw import write_body
from smbring.smb import wire

CHUNK = 64 * 1024
# what asyncio logs of a task whose failure nobody looked at, or that was dropped unfinished
UNSEEN = ("Task exception was never retrieved", "Task was destroyed but it is pending",
          "WRITE failed", "Traceback")


def writer(server, name: str):
    c, s = server.logon()
    rw = c.tree(s, "rw")
    fid = rw.open(name, wire.GENERIC_READ | wire.GENERIC_WRITE, wire.FILE_OVERWRITE_IF)
    c.grow_credits(256)
    return c, rw, fid


def pipelined(client, tree, fid: bytes, count: int, offset: int = 0) -> list[int]:
    """Sends `count` WRITEs of CHUNK bytes, one after another without waiting; their
    MessageIds."""
    ids = []
    for i in range(count):
        msg = tree.message(wire.WRITE, write_body(fid, bytes([i % 251 + 1]) * CHUNK, offset + i * CHUNK),
                           payload=CHUNK)
        ids.append(wire.Header.parse(msg).message_id)
        client.send([msg])
    return ids


def clean(server) -> str:
    text = server.log.read_text()
    assert not [line for line in text.splitlines() if any(u in line for u in UNSEEN)], text[-3000:]
    return text


def test_writes_past_the_file_size_limit_are_answered_disk_full(fresh_servers):
    server = fresh_servers()
    c, rw, fid = writer(server, "limited.bin")
    limit = 1 << 20
    resource.prlimit(server.pid, resource.RLIMIT_FSIZE, (limit, limit))   # (EFBIG past it)
    ids = pipelined(c, rw, fid, 24)             # the last eight past the limit
    statuses = [c.response_to(i).status for i in ids]
    assert statuses == [wire.STATUS_SUCCESS] * 16 + [wire.STATUS_DISK_FULL] * 8, [hex(s) for s in statuses]
    assert rw.write(fid, b"x" * 10, 0).status == wire.STATUS_SUCCESS     # the connection goes on
    assert rw.close(fid).status == wire.STATUS_SUCCESS
    assert (server.path("rw") / "limited.bin").stat().st_size == limit
    clean(server)


def test_a_client_that_leaves_with_writes_in_flight_takes_nothing_down(fresh_servers):
    server = fresh_servers()
    for n in range(3):
        c, rw, fid = writer(server, f"left{n}.bin")
        pipelined(c, rw, fid, 64)
        # a reset, not a goodbye: the answers have nowhere to go
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()
    deadline = time.monotonic() + 10
    while server.log.read_text().count(" closed") < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    c, rw, fid = writer(server, "after.bin")
    assert rw.write(fid, b"y" * CHUNK, 0).status == wire.STATUS_SUCCESS
    assert rw.close(fid).status == wire.STATUS_SUCCESS
    assert server.alive()
    clean(server)
