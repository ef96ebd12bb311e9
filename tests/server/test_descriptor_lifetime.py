"""A handle's descriptor outlives the work that names it: a CLOSE on another channel of the
session never lets a WRITE, READ or server-side copy in flight reach another open's file.

The server hands descriptor numbers to work carried out later (a WRITE's io_uring op submitted
at the loop's next turn, a READ's payload sent from the file after the answer was decided, a
copy in a worker thread). If a CLOSE arriving on another channel closed the descriptor first,
and another client's CREATE got the same number (the kernel hands out the lowest free one),
that work would write into, or read from, the other client's file.

The race is made certain, not hoped for: the server is stopped (SIGSTOP) while channel A's
request, channel B's CLOSE of the same handle and another client's CREATE of its own file are
sent, then let go, so that one turn of its event loop receives all three in that order.
"""
from __future__ import annotations

import os
import signal
import struct
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "security"))
from raw import RawClient  # noqa: E402
from servers import PASSWORD, USER, free_port, spawn, stop  # noqa: E402
from smbcore import close_body, create_body, ioctl_body, read_body, write_body  # noqa: E402
from test_sessions_multichannel import bind  # noqa: E402

from smbring.server.effects import DescriptorHolds, EffectRunner  # noqa: E402
from smbring.smb import effects, wire  # noqa: E402

RW = wire.GENERIC_READ | wire.GENERIC_WRITE
SIZE = 1 << 20          # a READ this large is sent the awaited way (not answered inline)
VICTIM = b"V" * SIZE
ROUNDS = 4              # each round reuses the number the last one freed
FSCTL_SRV_REQUEST_RESUME_KEY = 0x00140078
FSCTL_SRV_COPYCHUNK_WRITE = 0x001480F2


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("fdlife")
    (root / "rw").mkdir()
    port = free_port()
    (root / "smb.conf").write_text(
        f"[global]\nlisten = 127.0.0.1:{port}\nshutdown timeout = 1\n"
        f"[rw]\npath = {root / 'rw'}\nread only = no\n")
    proc, port, _log = spawn(root, "--config", str(root / "smb.conf"), port=port)
    yield proc, port, root / "rw"
    stop(proc)


class Attack:
    """Channels A and B of one session, and another client C with a session of its own."""

    def __init__(self, port: int):
        guid = os.urandom(16)
        self.a = RawClient(port)
        assert self.a.negotiate((wire.SMB311,), client_guid=guid).status == wire.STATUS_SUCCESS
        self.session = self.a.logon(USER, PASSWORD)
        self.tree = self.a.tree(self.session, "rw")
        self.b = RawClient(port)
        assert self.b.negotiate((wire.SMB311,), client_guid=guid).status == wire.STATUS_SUCCESS
        self.channel, r = bind(self.b, self.session)
        assert r.status == wire.STATUS_SUCCESS, r
        self.c = RawClient(port)
        assert self.c.negotiate((wire.SMB311,)).status == wire.STATUS_SUCCESS
        self.other = self.c.logon(USER, PASSWORD)    # (its own session)
        self.other_tree = self.c.tree(self.other, "rw")

    def ending(self, how: str, fid: bytes) -> bytearray:
        """B's request that closes the open `fid`: its CLOSE, or the end of its tree or session."""
        if how == "close":
            return self.b.message(wire.CLOSE, close_body(fid), session=self.channel, tree_id=self.tree.id)
        if how == "tree_disconnect":
            return self.b.message(wire.TREE_DISCONNECT, b"\x04\x00\x00\x00", session=self.channel,
                                  tree_id=self.tree.id)
        return self.b.message(wire.LOGOFF, b"\x04\x00\x00\x00", session=self.channel)

    def race(self, proc, request: bytearray, fid: bytes, victim: str, how: str = "close"):
        """Sends `request` on A, B's request that closes `fid` (`ending`) and C's CREATE of
        `victim` while the server is stopped; A's response once it runs again."""
        close = self.ending(how, fid)
        create = self.other_tree.message(wire.CREATE, create_body(victim, RW, wire.FILE_OPEN, 0))
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            self.a.send([request])
            self.b.send([close])
            self.c.send([create])
            time.sleep(0.2)         # all three in the server's socket buffers
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        answer = self.a.response_to(wire.Header.parse(request).message_id)
        closed = self.b.response_to(wire.Header.parse(close).message_id)
        created = self.c.response_to(wire.Header.parse(create).message_id)
        assert closed.status == wire.STATUS_SUCCESS, closed
        assert created.status == wire.STATUS_SUCCESS, created
        self.other_tree.close(created.file_id)
        return answer

    def close(self):
        for c in (self.a, self.b, self.c):
            c.close()


@pytest.fixture
def attack(server):
    a = Attack(server[1])
    yield a
    a.close()


def victims(share: Path, n: int) -> list[str]:
    names = [f"victim-{os.urandom(4).hex()}-{i}" for i in range(n)]
    for name in names:
        (share / name).write_bytes(VICTIM)
    return names


def test_a_write_in_flight_never_lands_in_another_clients_file(server, attack):
    proc, _port, share = server
    for victim in victims(share, ROUNDS):
        name = f"mine-{os.urandom(4).hex()}"
        fid = attack.tree.open(name, RW, wire.FILE_CREATE)
        write = attack.tree.message(wire.WRITE, write_body(fid, b"A" * 4096), payload=4096)
        answer = attack.race(proc, write, fid, victim)
        assert answer.status in (wire.STATUS_SUCCESS, wire.STATUS_FILE_CLOSED), answer
        assert (share / victim).read_bytes() == VICTIM, "channel A's WRITE landed in C's file"
        if answer.status == wire.STATUS_SUCCESS:
            assert (share / name).read_bytes() == b"A" * 4096


@pytest.mark.parametrize("how", ["tree_disconnect", "logoff"])
def test_a_write_in_flight_outlives_the_end_of_its_tree_or_session(server, attack, how):
    proc, _port, share = server
    victim, = victims(share, 1)
    name = f"mine-{os.urandom(4).hex()}"
    fid = attack.tree.open(name, RW, wire.FILE_CREATE)
    write = attack.tree.message(wire.WRITE, write_body(fid, b"A" * 4096), payload=4096)
    answer = attack.race(proc, write, fid, victim, how)
    assert answer.status in (wire.STATUS_SUCCESS, wire.STATUS_FILE_CLOSED, wire.STATUS_NETWORK_NAME_DELETED,
                             wire.STATUS_USER_SESSION_DELETED), answer
    assert (share / victim).read_bytes() == VICTIM, "channel A's WRITE landed in C's file"


def test_a_read_in_flight_never_sends_another_clients_file(server, attack):
    proc, _port, share = server
    for victim in victims(share, ROUNDS):
        name = f"mine-{os.urandom(4).hex()}"
        (share / name).write_bytes(b"M" * SIZE)
        fid = attack.tree.open(name, wire.GENERIC_READ)
        read = attack.tree.message(wire.READ, read_body(fid, SIZE), payload=SIZE)
        answer = attack.race(proc, read, fid, victim)
        assert answer.status in (wire.STATUS_SUCCESS, wire.STATUS_FILE_CLOSED), answer
        if answer.status == wire.STATUS_SUCCESS:
            data = answer.buffer(2, "<BxI")
            assert data == b"M" * SIZE, "channel A's READ sent C's file"


def test_a_copy_in_flight_never_writes_another_clients_file(server, attack):
    proc, _port, share = server
    for victim in victims(share, ROUNDS):
        src, dst = f"src-{os.urandom(4).hex()}", f"dst-{os.urandom(4).hex()}"
        (share / src).write_bytes(b"S" * SIZE)
        src_fid = attack.tree.open(src, wire.GENERIC_READ)
        dst_fid = attack.tree.open(dst, RW, wire.FILE_CREATE)
        r = attack.tree.request(wire.IOCTL, ioctl_body(src_fid, FSCTL_SRV_REQUEST_RESUME_KEY, b"", 32),
                                payload=32)
        assert r.status == wire.STATUS_SUCCESS, r
        key = r.buffer(32, "<II")[:24]
        chunks = struct.pack("<24sII", key, 1, 0) + struct.pack("<QQII", 0, 0, SIZE, 0)
        copy = attack.tree.message(wire.IOCTL, ioctl_body(dst_fid, FSCTL_SRV_COPYCHUNK_WRITE, chunks, 12),
                                   payload=len(chunks))
        answer = attack.race(proc, copy, dst_fid, victim)
        assert answer.status in (wire.STATUS_SUCCESS, wire.STATUS_FILE_CLOSED), answer
        assert (share / victim).read_bytes() == VICTIM, "channel A's copy wrote into C's file"
        attack.tree.close(src_fid)


def test_a_close_waits_for_the_last_hold_on_its_descriptor():
    holds, closed = DescriptorHolds(), []
    holds.hold((5, 5))
    holds.close(5, lambda: closed.append(5))
    holds.release((5,))
    assert closed == []
    holds.release((5,))
    assert closed == [5] and 5 not in holds
    holds.close(6, lambda: closed.append(6))     # held by nothing: closed at once
    assert closed == [5, 6]


def test_the_runner_holds_what_it_is_handed_before_it_is_awaited():
    """A frame served in the loop's callback is carried out by the task at a later turn: its
    descriptors are held from the moment the effects are handed over, and a run never
    awaited (the connection lost meanwhile) lets go at the connection's end."""
    runner = EffectRunner(None, {}, None, None, None)
    write = effects.Write("rw", 7, 0, memoryview(b"x"), then=lambda outcome: [])
    copy = effects.CopyRange(8, 0, 9, 0, 1, then=lambda outcome: [])
    pending = runner.run([write, copy])
    assert all(fd in runner.holds for fd in (7, 8, 9))
    runner.release_unstarted()
    pending.close()
    assert not any(fd in runner.holds for fd in (7, 8, 9))


def test_a_write_waiting_for_the_writes_before_it_keeps_its_descriptor():
    """A lone WRITE overlapping a background WRITE still running waits for it (a Drain) with
    its descriptor chosen already. A CLOSE on another channel meanwhile waits for the running
    WRITE's hold; were the number not held through the wait as well, it would be closed the
    moment that WRITE ends, turns of the loop before the waiting one goes on, and another
    client's CREATE could take it: the waiting WRITE would land in that client's file."""
    import asyncio

    events = []

    class Disk:
        def __init__(self):
            self.gate = asyncio.Event()

        async def pwrite_all(self, fd, data, offset):
            if data == b"first":
                await self.gate.wait()
            events.append(f"write {bytes(data).decode()} to {fd}")
            return len(data)

    async def scenario():
        disk, holds = Disk(), DescriptorHolds()
        runner = EffectRunner(None, {"rw": disk}, asyncio.Lock(), None, None, holds=holds)
        first = effects.Write("rw", 7, 0, memoryview(b"first"), then=lambda outcome: [], background=True)
        await runner.run([first])           # (running in the background)
        second = effects.Write("rw", 7, 0, memoryview(b"second"), then=lambda outcome: [])
        waiting = asyncio.ensure_future(runner.run([effects.Drain(fd=7, start=0, end=6,
                                                                  then=lambda _: [second])]))
        await asyncio.sleep(0)
        holds.close(7, lambda: events.append("close 7"))
        disk.gate.set()
        await waiting
        await runner.drain()

    asyncio.run(scenario())
    assert events == ["write first to 7", "write second to 7", "close 7"]
