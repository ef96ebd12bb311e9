"""What a stop does to data: every WRITE the server answered with success is in the file
afterwards, byte for byte, however the server stops gracefully (SIGTERM or SIGINT, one
process or workers, file data on the ring or in threads, either event loop) and however a
client leaves (an abrupt reset while its WRITEs are in flight); the server exits within its
stop timeout without a traceback, and a client that leaves takes no descriptor with it.

The writers keep many WRITEs in flight (pipelined, sizes from 1 byte to 1 MiB, each range
written once with its own bytes) until the server cuts them, and note which were answered
with success: only those are promised."""
from __future__ import annotations

import os
import pathlib
import signal
import socket
import struct
import sys
import threading
import time

import pytest
from servers import PASSWORD, USER, spawn, stop

sys.path.insert(0, str(pathlib.Path(__file__).parents[1] / "security"))
from raw import Disconnected, NoAnswer, RawClient  # noqa: E402
from smbcore import flush_body, write_body  # noqa: E402

from smbring.smb import wire  # noqa: E402

# payload sizes the writers cycle through: a byte, unaligned, a page, a credit's worth,
# several credits, and 1 MiB block-aligned (direct_writes' O_DIRECT candidates)
SIZES = (1, 4096, 65536, 12345, 1 << 20, 300000, 65537, 8192)
IN_FLIGHT = 24                  # WRITEs each writer keeps unanswered at most
MOST_BYTES = 256 << 20          # what a writer writes at most (a test that goes wrong stops too)
STOP_TIMEOUT = 2                # --shutdown-timeout of the servers below
UNSEEN = ("Traceback", "Task exception was never retrieved", "Task was destroyed but it is pending",
          "ResourceWarning", "WRITE failed")


class Writer:
    """One connection writing one file: WRITEs pipelined until the server stops answering
    (or `until` is set and it has written `least` bytes); `answered` holds the (offset,
    index) of every WRITE answered with success: its bytes are `_payload(index)`, made again
    to check them rather than kept (a run writes hundreds of MB)."""

    def __init__(self, port: int, name: str, seed: int):
        self.name, self.seed = name, seed
        self.client = c = RawClient(port, timeout=20)
        assert c.negotiate((wire.SMB311,)).status == wire.STATUS_SUCCESS
        self.session = c.logon(USER, PASSWORD)
        self.tree = c.tree(self.session, "share")
        self.fid = self.tree.open(name, wire.GENERIC_READ | wire.GENERIC_WRITE, wire.FILE_OVERWRITE_IF)
        c.grow_credits(512)
        self.answered: list[tuple[int, int]] = []
        self.failed: list[tuple[int, int]] = []     # (offset, status) answered with an error
        self.ended: BaseException | None = None
        self.offset = 0

    def _payload(self, i: int) -> bytes:
        size = SIZES[(i + self.seed) % len(SIZES)]
        return (struct.pack("<II", self.seed, i) * (size // 8 + 1))[:size]

    def run(self, until: threading.Event | None = None, least: int = 0, reset_after: int = 0) -> None:
        """reset_after: once that many are answered, and IN_FLIGHT more sent, the connection
        is reset (SO_LINGER 0, then closed: no goodbye) and the run ends."""
        c, pending, i = self.client, {}, 0
        try:
            while True:
                enough = (until is not None and until.is_set() and self.offset >= least) or \
                    self.offset >= MOST_BYTES
                while not enough and len(pending) < IN_FLIGHT and c.credits >= 16:
                    data = self._payload(i)
                    msg = self.tree.message(wire.WRITE, write_body(self.fid, data, self.offset),
                                            payload=len(data))
                    pending[wire.Header.parse(msg).message_id] = (self.offset, i, len(data))
                    c.send([msg])
                    self.offset += len(data)
                    i += 1
                if reset_after and len(self.answered) >= reset_after:
                    assert len(pending) >= IN_FLIGHT // 2, len(pending)
                    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    c.close()
                    return
                if not pending:
                    return
                for r in c.parse(c.recv_frame()):
                    if r.status == wire.STATUS_PENDING:
                        continue
                    offset, index, size = pending.pop(r.header.message_id)
                    if r.status == wire.STATUS_SUCCESS:
                        assert struct.unpack_from("<I", r.raw, 64 + 4)[0] == size, r
                        self.answered.append((offset, index))
                    else:
                        self.failed.append((offset, r.status))
        except (Disconnected, NoAnswer, ConnectionError) as e:
            self.ended = e

    def flush(self) -> int:
        return self.tree.request(wire.FLUSH, flush_body(self.fid)).status

    def burst_then_flush(self, count: int) -> tuple[list[int], int]:
        """`count` WRITEs and a FLUSH sent in a row, none waiting for an answer; the
        MessageIds in the order their answers arrived (the FLUSH's last, when it waits)."""
        c, ids = self.client, {}
        for i in range(count):
            data = self._payload(i)
            msg = self.tree.message(wire.WRITE, write_body(self.fid, data, self.offset), payload=len(data))
            ids[wire.Header.parse(msg).message_id] = (self.offset, i)
            c.send([msg])
            self.offset += len(data)
        flush = self.tree.message(wire.FLUSH, flush_body(self.fid))
        c.send([flush])
        flush_id, order = wire.Header.parse(flush).message_id, []
        while len(order) < count + 1:
            for r in c.parse(c.recv_frame()):
                assert r.status == wire.STATUS_SUCCESS, r
                order.append(r.header.message_id)
                if r.header.message_id in ids:
                    self.answered.append(ids[r.header.message_id])
        return order, flush_id

    def check(self, share: pathlib.Path) -> int:
        """Every answered WRITE's bytes are in the file; the bytes checked."""
        assert self.answered, f"{self.name}: no WRITE was answered ({self.ended!r})"
        checked = 0
        with open(share / self.name, "rb") as f:
            for offset, index in self.answered:
                data = self._payload(index)
                checked += len(data)
                f.seek(offset)
                on_disk = f.read(len(data))
                assert on_disk == data, (f"{self.name}: the WRITE of {len(data)} bytes at {offset} was "
                                         f"answered, the file holds {len(on_disk)} bytes there, "
                                         f"{sum(a != b for a, b in zip(on_disk, data))} of them different")
        return checked


def clean(log: pathlib.Path) -> str:
    text = log.read_text()
    assert not [line for line in text.splitlines() if any(u in line for u in UNSEEN)], text[-4000:]
    return text


@pytest.fixture
def warnings_shown(monkeypatch):
    """The servers started after this show every ResourceWarning (an unclosed file or socket,
    a ring closed with requests the kernel had not finished) in their log."""
    monkeypatch.setenv("PYTHONWARNINGS", "always::ResourceWarning")


STOPS = {
    "sigterm-ring": (signal.SIGTERM, []),
    "sigint-ring": (signal.SIGINT, []),
    "sigterm-threads": (signal.SIGTERM, ["--vfs-objects", "threadpool"]),
    "sigterm-ring-loop": (signal.SIGTERM, ["--event-loop", "ring"]),
    "sigterm-asyncio-loop": (signal.SIGTERM, ["--event-loop", "asyncio"]),
    "sigterm-workers": (signal.SIGTERM, ["--workers", "2"]),
}


@pytest.mark.parametrize("how", list(STOPS))
def test_a_graceful_stop_keeps_every_answered_write(tmp_path, warnings_shown, how):
    sig, args = STOPS[how]
    share = tmp_path / "share"
    share.mkdir()
    proc, port, log = spawn(tmp_path, str(share), "--share", "share",
                            "--shutdown-timeout", str(STOP_TIMEOUT), *args)
    writers = []
    try:
        writers = [Writer(port, f"w{n}.bin", n) for n in range(3)]
        threads = [threading.Thread(target=w.run) for w in writers]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while min(len(w.answered) for w in writers) < 40 and time.monotonic() < deadline:
            time.sleep(0.05)            # every writer well under way
        began = time.monotonic()
        proc.send_signal(sig)
        assert proc.wait(STOP_TIMEOUT + 10) == 0, log.read_text()[-4000:]
        took = time.monotonic() - began
        for t in threads:
            t.join(30)
        assert not any(t.is_alive() for t in threads)
    finally:
        for w in writers:
            w.client.close()
        stop(proc)
    # the writers never pause: the server cuts them at the timeout (plus its cleanup)
    assert took < STOP_TIMEOUT + 6, took
    # (cut, or done: a machine fast enough to write MOST_BYTES first)
    assert all(isinstance(w.ended, (Disconnected, ConnectionError)) or w.offset >= MOST_BYTES
               for w in writers), [w.ended for w in writers]
    assert not [f for w in writers for f in w.failed], [w.failed for w in writers]
    checked = sum(w.check(share) for w in writers)
    for w in writers:
        (share / w.name).unlink()       # (hundreds of MB, checked)
    assert checked > 3 << 20, checked
    text = clean(log)
    assert "closed with work in flight" in text or "every connection finished" in text, text[-2000:]


def test_a_client_that_resets_mid_burst_loses_no_answered_write(tmp_path, warnings_shown):
    """An abrupt reset while WRITEs are in flight: the answered ones are in the file, the
    server goes on serving the others (a writer beside it, then a new connection), and the
    connection's descriptors (its socket, the file) are all closed."""
    share = tmp_path / "share"
    share.mkdir()
    proc, port, log = spawn(tmp_path, str(share), "--share", "share", "--shutdown-timeout", str(STOP_TIMEOUT))
    fds = lambda: len(os.listdir(f"/proc/{proc.pid}/fd"))     # noqa: E731
    try:
        warm = Writer(port, "warm.bin", 9)          # what the server opens once (its ring, pools)
        warm_done = threading.Event()
        warm_done.set()
        warm.run(warm_done, least=4 << 20)
        assert warm.tree.close(warm.fid).status == wire.STATUS_SUCCESS
        warm.client.close()
        time.sleep(0.5)
        before = fds()
        steady = Writer(port, "steady.bin", 7)
        stop_steady = threading.Event()
        beside = threading.Thread(target=steady.run, args=(stop_steady, 8 << 20))
        beside.start()
        for n in range(3):
            leaver = Writer(port, f"left{n}.bin", n)
            leaver.run(reset_after=30 + 20 * n)
            assert leaver.check(share)
        stop_steady.set()
        beside.join(60)
        assert steady.ended is None and not steady.failed, (steady.ended, steady.failed)
        assert steady.flush() == wire.STATUS_SUCCESS
        assert steady.tree.close(steady.fid).status == wire.STATUS_SUCCESS
        steady.client.close()
        steady.check(share)
        deadline = time.monotonic() + 10
        while fds() > before and time.monotonic() < deadline:
            time.sleep(0.1)
        assert fds() <= before, os.listdir(f"/proc/{proc.pid}/fd")
        after = Writer(port, "after.bin", 3)
        assert after.tree.write(after.fid, b"z" * 100, 0).status == wire.STATUS_SUCCESS
        after.client.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(STOP_TIMEOUT + 10) == 0
    finally:
        stop(proc)
    clean(log)


def dirty_pages(path: pathlib.Path) -> tuple[int, int]:
    """(dirty, under writeback) pages of the file in the page cache: cachestat(2), Linux 6.5."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    rng = (ctypes.c_uint64 * 2)(0, 0)            # (0, 0): the whole file
    stat = (ctypes.c_uint64 * 5)()
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.syscall(451, fd, ctypes.byref(rng), ctypes.byref(stat), 0) != 0:
            pytest.skip(f"no cachestat(2) here: {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(fd)
    return stat[1], stat[2]


@pytest.mark.parametrize("vfs", ["default", "threadpool"])
def test_a_flush_sent_behind_writes_in_flight_syncs_them_all(tmp_path, vfs):
    """A FLUSH that arrives while WRITEs of the same open are still being written (on the
    ring, or in the pool's threads) is answered after them, and once it is answered not a
    page of the file is left dirty: the sync came after the last of them."""
    share = tmp_path / "share"
    share.mkdir()
    args = [] if vfs == "default" else ["--vfs-objects", vfs]
    proc, port, log = spawn(tmp_path, str(share), "--share", "share", *args)
    try:
        w = Writer(port, "flushed.bin", 5)
        for _ in range(4):
            order, flush_id = w.burst_then_flush(IN_FLIGHT)
            assert order[-1] == flush_id, "the FLUSH was answered before WRITEs sent ahead of it"
            assert dirty_pages(share / "flushed.bin") == (0, 0)
        w.check(share)
        w.client.close()
    finally:
        stop(proc)
    clean(log)
