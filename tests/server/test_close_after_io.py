"""A CLOSE (with SMB2_CLOSE_FLAG_POSTQUERY_ATTRIB) arriving on one channel while a WRITE to
the same open is under way on another answers once that WRITE has ended, as Samba's CLOSE
waits for its open's aio requests: the size it reports includes what the WRITE wrote, and a
client that sees the CLOSE answered and opens the file again finds the data there.

The race is made certain as in test_descriptor_lifetime: the server is stopped (SIGSTOP)
while A's WRITE and B's CLOSE are sent, so that one turn of its event loop receives both, the
WRITE's I/O started but not ended when the CLOSE is handled.
"""
from __future__ import annotations

import asyncio
import os
import signal
import struct
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from smbcore import close_body, flush_body, write_body  # noqa: E402
from test_descriptor_lifetime import RW, Attack, server  # noqa: E402,F401

from smbring.server import effects as shell  # noqa: E402
from smbring.server.effects import DescriptorHolds, EffectRunner  # noqa: E402
from smbring.smb import effects, wire  # noqa: E402

SIZE = 8192
ROUNDS = 6


@pytest.fixture
def attack(server):  # noqa: F811
    a = Attack(server[1])
    yield a
    a.close()


def race(proc, attack, write: bytearray, other: bytearray):
    """A's `write` and B's `other` received in one turn of the server's loop; their answers."""
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        attack.a.send([write])
        attack.b.send([other])
        time.sleep(0.2)         # both in the server's socket buffers
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    return (attack.a.response_to(wire.Header.parse(write).message_id),
            attack.b.response_to(wire.Header.parse(other).message_id))


def test_a_close_reports_the_size_a_write_under_way_on_another_channel_leaves(server, attack):
    proc, _port, share = server
    for _ in range(ROUNDS):
        name = f"closed-{os.urandom(4).hex()}"
        fid = attack.tree.open(name, RW, wire.FILE_CREATE)
        write = attack.tree.message(wire.WRITE, write_body(fid, b"W" * SIZE), payload=SIZE)
        close = attack.b.message(wire.CLOSE, close_body(fid, wire.CLOSE_FLAG_POSTQUERY_ATTRIB),
                                 session=attack.channel, tree_id=attack.tree.id)
        written, closed = race(proc, attack, write, close)
        assert closed.status == wire.STATUS_SUCCESS, closed
        assert written.status in (wire.STATUS_SUCCESS, wire.STATUS_FILE_CLOSED), written
        end_of_file = struct.unpack_from("<Q", closed.body, 48)[0]
        if written.status == wire.STATUS_SUCCESS:       # (else the CLOSE came first)
            assert end_of_file == SIZE, "the CLOSE answered before the WRITE under way ended"
        assert (share / name).stat().st_size == end_of_file


def test_a_flush_on_another_channel_follows_a_write_under_way(server, attack):
    """The FLUSH is answered after the WRITE's data is in the file (then made durable)."""
    proc, _port, share = server
    name = f"flushed-{os.urandom(4).hex()}"
    fid = attack.tree.open(name, RW, wire.FILE_CREATE)
    write = attack.tree.message(wire.WRITE, write_body(fid, b"F" * SIZE), payload=SIZE)
    flush = attack.b.message(wire.FLUSH, flush_body(fid), session=attack.channel, tree_id=attack.tree.id)
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        attack.a.send([write])
        attack.b.send([flush])
        time.sleep(0.2)
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    flushed = attack.b.response_to(wire.Header.parse(flush).message_id)
    assert flushed.status == wire.STATUS_SUCCESS, flushed
    assert (share / name).read_bytes() == b"F" * SIZE      # (A's answer not read yet)
    assert attack.a.response_to(wire.Header.parse(write).message_id).status == wire.STATUS_SUCCESS
    attack.tree.close(fid)


def test_a_settle_goes_on_once_the_io_under_way_has_ended():
    """Another connection's Settle waits for a background WRITE under way (from the moment
    it was handed over), without holding up its own connection."""
    events = []

    class Disk:
        def __init__(self):
            self.gate = asyncio.Event()

        async def pwrite_all(self, fd, data, offset):
            await self.gate.wait()
            events.append("written")
            return len(data)

    async def scenario():
        disk, holds = Disk(), DescriptorHolds()
        a = EffectRunner(None, {"rw": disk}, asyncio.Lock(), None, None, holds=holds)
        b = EffectRunner(None, {"rw": disk}, asyncio.Lock(), None, None, holds=holds)
        pending = a.run([effects.Write("rw", 7, 0, memoryview(b"x"), then=lambda n: [])])
        assert holds.working(7)         # under way from the moment it is handed over
        a.release_unstarted()
        pending.close()
        assert not holds.working(7)
        await a.run([effects.Write("rw", 7, 0, memoryview(b"x"), then=lambda n: [], background=True)])
        await b.run([effects.Settle((7,), then=lambda _: events.append("settled") or [])])
        assert events == [] and 7 in holds      # (the Settle holds its descriptor meanwhile)
        disk.gate.set()
        await a.drain()
        for _ in range(3):
            await asyncio.sleep(0)
        assert events == ["written", "settled"] and 7 not in holds

    asyncio.run(scenario())


def test_a_range_operation_cancelled_keeps_its_descriptor_until_its_thread_is_done(monkeypatch):
    """At the loop's end every task is cancelled: a copy a worker thread is carrying out goes on
    (a thread cannot be stopped), so its descriptor stays open until the thread is done."""
    running, finish = threading.Event(), threading.Event()

    def slow(effect):
        running.set()
        finish.wait(10)
        return 0

    monkeypatch.setattr(shell, "range_operation", slow)

    async def scenario():
        holds, closed = DescriptorHolds(), []
        with ThreadPoolExecutor(1) as pool:
            runner = EffectRunner(None, {}, asyncio.Lock(), None, None, pool=pool, holds=holds)
            task = asyncio.ensure_future(runner.run([effects.ZeroRange(7, 0, 1, False, then=lambda r: [])]))
            await asyncio.get_running_loop().run_in_executor(None, running.wait)
            holds.close(7, lambda: closed.append(7))
            task.cancel()
            for _ in range(10):
                await asyncio.sleep(0)
            assert not task.done() and closed == []
            finish.set()
            try:
                await task
            except asyncio.CancelledError:
                pass
            assert closed == [7]

    asyncio.run(scenario())
