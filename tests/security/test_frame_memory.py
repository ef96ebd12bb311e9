"""Large frames arriving are bounded for the whole server (`max frame memory`): logged-on
clients that send WRITE frames of 8 MiB but their last byte cannot make the server hold
more than the bound; a frame past it waits, unread, and is received once room is made; the
rule is first come, first served. The counting itself (server.frame_budget.ArrivingFrames)
is tested on its own below, with the frame deadline."""
from __future__ import annotations

import asyncio
import socket
import time

import pytest

from raw import Disconnected, NoAnswer, write_body
from smbring.server.frame_budget import ArrivingFrames, frame_time
from smbring.smb import wire

MiB = 1 << 20
PAYLOAD = 8 * MiB - 4096


def write_frame(client, tree, fid: bytes, data: bytes) -> bytes:
    """One WRITE as the client would send it (signed), captured instead of sent."""
    captured = []
    client.send_frame = captured.append
    try:
        client.send([tree.message(wire.WRITE, write_body(fid, data, 0), payload=len(data))])
    finally:
        del client.send_frame
    return captured[0]


def writer(server, name: str):
    c, s = server.logon(timeout=60)
    rw = c.tree(s, "rw")
    fid = rw.open(name, wire.GENERIC_READ | wire.GENERIC_WRITE, wire.FILE_OVERWRITE_IF)
    c.grow_credits(256)
    return c, rw, fid


def taken(client, data: bytes, seconds: float) -> int:
    """How much of `data` the server's side took within `seconds`. The client's send buffer
    is made small first: a server that does not read its socket takes little more than its
    receive window (the kernel grows that only as the server reads), one that reads takes
    all 8 MiB."""
    sock = client.sock
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)
    sock.setblocking(False)
    sent, deadline = 0, time.monotonic() + seconds
    try:
        while sent < len(data) and time.monotonic() < deadline:
            try:
                sent += sock.send(data[sent:sent + 65536])
            except BlockingIOError:
                time.sleep(0.01)
    finally:
        sock.setblocking(True)
    return sent


def answered(client, timeout: float) -> bool:
    client.sock.settimeout(timeout)
    try:
        client.recv_frame()
        return True
    except NoAnswer:
        return False


def test_frames_past_the_bound_wait_unread_and_are_served_once_room_is_made(fresh_servers):
    server = fresh_servers({"max frame memory": "16"})
    held = [writer(server, f"held{i}.bin") for i in range(2)]
    late, late_tree, late_fid = writer(server, "late.bin")
    before = server.proc_status("VmRSS")
    frames = [write_frame(c, rw, fid, bytes([i + 1]) * PAYLOAD) for i, (c, rw, fid) in enumerate(held)]
    for (c, _, _), frame in zip(held, frames):
        c.send_frame(frame[:-1])                # all but the last byte: 16 MiB arriving
    time.sleep(1)
    late_frame = write_frame(late, late_tree, late_fid, b"L" * PAYLOAD)
    sent = taken(late, late_frame, 2)
    assert sent < 2 * MiB, f"{sent} bytes of a WRITE past `max frame memory` were received"
    # the server holds the two frames arriving, not the third's 8 MiB on top
    assert server.proc_status("VmRSS") - before < 24 * 1024
    held[0][0].send_frame(frames[0][-1:])       # the first completes: room for the waiting one
    assert answered(held[0][0], 10)
    late.sock.settimeout(30)
    late.sock.sendall(late_frame[sent:])
    assert answered(late, 30)
    assert (server.path("rw") / "late.bin").read_bytes() == b"L" * PAYLOAD
    held[1][0].send_frame(frames[1][-1:])
    assert answered(held[1][0], 10)


def test_without_a_bound_every_frame_is_received_at_once(fresh_servers):
    """The same three frames with `max frame memory = 0` (no bound): the third is answered
    while the other two wait for their last byte (the test above can fail)."""
    server = fresh_servers({"max frame memory": "0"})
    held = [writer(server, f"held{i}.bin") for i in range(2)]
    late, late_tree, late_fid = writer(server, "late.bin")
    frames = [write_frame(c, rw, fid, bytes([i + 1]) * PAYLOAD) for i, (c, rw, fid) in enumerate(held)]
    for (c, _, _), frame in zip(held, frames):
        c.send_frame(frame[:-1])
    late_frame = write_frame(late, late_tree, late_fid, b"L" * PAYLOAD)
    assert taken(late, late_frame, 10) == len(late_frame)
    assert answered(late, 30)
    for (c, _, _), frame in zip(held, frames):
        c.send_frame(frame[-1:])
        assert answered(c, 10)


def test_a_client_that_leaves_mid_frame_gives_its_room_back(fresh_servers):
    server = fresh_servers({"max frame memory": "8"})
    gone, gone_tree, gone_fid = writer(server, "gone.bin")
    gone.send_frame(write_frame(gone, gone_tree, gone_fid, b"g" * PAYLOAD)[:-1])
    late, late_tree, late_fid = writer(server, "late.bin")
    time.sleep(0.5)
    frame = write_frame(late, late_tree, late_fid, b"L" * PAYLOAD)
    sent = taken(late, frame, 1)
    assert sent < 2 * MiB
    gone.close()
    late.sock.settimeout(30)
    late.sock.sendall(frame[sent:])
    assert answered(late, 30)
    with pytest.raises((Disconnected, NoAnswer, OSError)):
        gone.echo()


# -- the counting on its own ------------------------------------------------------------------
def test_arriving_frames_are_granted_in_order_within_the_limit():
    async def run():
        frames = ArrivingFrames(16)
        await frames.take(8)
        await frames.take(8)
        order = []

        async def wait(name, size):
            await frames.take(size)
            order.append(name)

        tasks = [asyncio.ensure_future(wait(n, s)) for n, s in (("a", 8), ("b", 4), ("c", 4))]
        await asyncio.sleep(0)
        assert order == [] and frames.used == 16
        frames.give_back(8)             # room for a; b waits behind it although it would fit
        await asyncio.sleep(0)
        assert order == ["a"]
        frames.give_back(8)
        await asyncio.gather(*tasks)
        assert order == ["a", "b", "c"] and frames.used == 16
    asyncio.run(run())


def test_a_cancelled_wait_takes_nothing_and_holds_nobody_back():
    async def run():
        frames = ArrivingFrames(10)
        await frames.take(10)
        first = asyncio.ensure_future(frames.take(10))
        second = asyncio.ensure_future(frames.take(5))
        await asyncio.sleep(0)
        first.cancel()
        await asyncio.sleep(0)
        frames.give_back(10)
        await second
        assert frames.used == 5
        # a frame larger than the whole limit passes alone
        frames.give_back(5)
        await frames.take(64)
        assert frames.used == 64
    asyncio.run(run())


def test_a_frame_may_take_a_minute_and_a_second_per_64_kib():
    assert frame_time(0) == 60
    assert frame_time(8 * MiB) == 60 + 128
