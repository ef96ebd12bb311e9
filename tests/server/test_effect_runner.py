"""EffectRunner: a background WRITE starts without a coroutine of the connection's, is
answered once written, and leaves the writes in flight when it ends; a signed or sealed
READ's data the page cache holds is read and answered without one too."""
from __future__ import annotations

import asyncio
import errno
import os
import logging

from smbring.server.effects import WRITES_IN_FLIGHT, EffectRunner
from smbring.smb import effects


class Transport:
    """A transport that sends every small response at once, recording it."""

    def __init__(self):
        self.sent: list[bytes] = []

    def send_small(self, parts, size):
        self.sent.append(b"".join(bytes(p) for p in parts))
        return True

    async def send(self, desc):
        self.sent.append(bytes(desc.header) + bytes(desc.payload or b""))


class AwaitedTransport:
    """A transport with the awaited way only (no send_small)."""

    def __init__(self):
        self.sent: list[bytes] = []

    async def send(self, desc):
        self.sent.append(bytes(desc.header) + bytes(desc.payload or b""))


class Module:
    """A VFS module stack whose writes wait for `gate`, recording what they wrote."""

    def __init__(self):
        self.gate = asyncio.Event()
        self.written: list[tuple[int, bytes, int]] = []

    async def pwrite_all(self, fd, view, offset):
        await self.gate.wait()
        self.written.append((fd, bytes(view), offset))
        return len(view)


def make_runner():
    transport, module = Transport(), Module()
    runner = EffectRunner(transport, {"s": module}, asyncio.Lock(), file_maps=None, peer="test")
    return runner, transport, module


def write(fd, offset, data=b"x" * 8):
    return effects.Write("s", fd, offset, memoryview(data), background=True,
                         then=lambda n: [effects.Send(b"answer %d" % n)])


def test_background_write_starts_at_once_and_answers_once_written():
    async def main():
        runner, transport, module = make_runner()
        assert runner.run_now([effects.Send(b"before"), write(3, 0)]) is None
        assert transport.sent == [b"\0\0\0\x06before"]
        assert runner.writes
        for _ in range(3):
            await asyncio.sleep(0)
        assert transport.sent == [b"\0\0\0\x06before"]     # not answered before it is written
        module.gate.set()
        await runner.drain()
        assert module.written == [(3, b"x" * 8, 0)]
        assert transport.sent[1:] == [b"\0\0\0\x08answer 8"]
        assert not runner.writes and not runner.writes.tasks
    asyncio.run(main())


def test_writes_past_the_limit_wait_their_turn():
    async def main():
        runner, transport, module = make_runner()
        for i in range(WRITES_IN_FLIGHT):
            assert runner.run_now([write(3, 8 * i)]) is None
        pending = runner.run_now([write(3, 8 * WRITES_IN_FLIGHT)])
        assert pending is not None                  # no room: the awaited way
        waiting = asyncio.ensure_future(pending)
        await asyncio.sleep(0)
        assert not waiting.done()
        module.gate.set()
        await waiting
        await runner.drain()
        assert len(module.written) == WRITES_IN_FLIGHT + 1
        assert len(transport.sent) == WRITES_IN_FLIGHT + 1
        assert not runner.writes.tasks
    asyncio.run(main())


def test_a_write_cancelled_before_it_ran_is_forgotten():
    async def main():
        runner, transport, module = make_runner()
        assert runner.run_now([write(3, 0)]) is None
        (task,) = runner.writes.tasks
        task.cancel()
        await asyncio.sleep(0)
        assert task.done()
        assert not runner.writes                    # (Link.quiet: nothing in flight)
        await asyncio.wait_for(runner.drain(), 1)
        assert runner.writes.room()
    asyncio.run(main())



def finished(runner) -> list:
    """The tasks of the writes in flight now (to look at their outcome once they end)."""
    return list(runner.writes.tasks)


def test_a_write_that_fails_is_answered_with_its_error():
    async def main():
        runner, transport, module = make_runner()

        async def disk_full(fd, view, offset):
            raise OSError(errno.ENOSPC, "No space left on device")
        module.pwrite_all = disk_full
        effect = effects.Write("s", 3, 0, memoryview(b"x"), background=True,
                               then=lambda e: [effects.Send(b"status %d" % e.errno)])
        assert runner.run_now([effect]) is None
        tasks = finished(runner)
        await runner.drain()
        assert transport.sent == [b"\0\0\0\x09status 28"]
        assert [t.exception() for t in tasks] == [None]
        assert not runner.writes.tasks
    asyncio.run(main())


def test_an_answer_lost_with_the_connection_ends_the_write_quietly(caplog):
    async def main():
        runner, transport, module = make_runner()

        def gone(parts, size):
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")
        transport.send_small = runner._send_small = gone
        module.gate.set()
        assert runner.run_now([write(3, 0)]) is None
        tasks = finished(runner)
        await runner.drain()
        assert [t.exception() for t in tasks] == [None]
        assert not runner.writes.tasks
    with caplog.at_level(logging.INFO, logger="smbring.server"):
        asyncio.run(main())
    assert "answer to a WRITE lost" in caplog.text


def test_a_continuation_that_fails_is_logged_and_the_write_ends(caplog):
    async def main():
        runner, transport, module = make_runner()
        module.gate.set()

        def broken(n):
            raise RuntimeError("the core failed")
        assert runner.run_now([effects.Write("s", 3, 0, memoryview(b"x"), background=True,
                                             then=broken)]) is None
        tasks = finished(runner)
        await runner.drain()
        assert [t.exception() for t in tasks] == [None]
        assert not runner.writes.tasks and transport.sent == []
    asyncio.run(main())
    assert "WRITE failed" in caplog.text


def test_a_write_cancelled_while_writing_leaves_the_writes_in_flight():
    async def main():
        runner, transport, module = make_runner()
        assert runner.run_now([write(3, 0)]) is None
        (task,) = runner.writes.tasks
        await asyncio.sleep(0)                      # (waiting for the gate now)
        task.cancel()
        await asyncio.sleep(0)
        assert task.cancelled()
        assert not runner.writes.tasks              # (taken out as it ended, not pruned)
        assert transport.sent == []
    asyncio.run(main())


def test_without_send_small_a_write_is_started_and_answered_the_awaited_way():
    async def main():
        transport, module = AwaitedTransport(), Module()
        runner = EffectRunner(transport, {"s": module}, asyncio.Lock(), file_maps=None, peer="test")
        module.gate.set()
        pending = runner.run_now([write(3, 0)])
        assert pending is not None
        await pending
        await runner.drain()
        assert module.written == [(3, b"x" * 8, 0)]
        assert transport.sent == [b"\0\0\0\x08answer 8"]
        assert not runner.writes.tasks
    asyncio.run(main())


class ReadingModule:
    """A VFS module stack that reads a real file: `read_now` as the io_uring module's (what the
    page cache holds, RWF_NOWAIT), or None when `cached` is false; `pread_into` the awaited
    way. Records which way each read went."""

    def __init__(self, cached: bool = True):
        self.cached = cached
        self.ways: list[str] = []

    def read_now(self, fd, view, offset):
        self.ways.append("now")
        if not self.cached:
            return None
        return os.preadv(fd, [view], offset, os.RWF_NOWAIT)

    async def pread_into(self, fd, view, offset):
        self.ways.append("awaited")
        return os.preadv(fd, [view], offset)


def read_runner(tmp_path, data: bytes, cached: bool = True):
    path = tmp_path / "f"
    path.write_bytes(data)
    os.read(fd := os.open(path, os.O_RDONLY), len(data))     # (now in the page cache)
    transport, module = Transport(), ReadingModule(cached)
    runner = EffectRunner(transport, {"s": module}, asyncio.Lock(), file_maps=None, peer="test")
    return runner, transport, module, fd


def read_into(fd, length, then):
    return effects.ReadInto(effects.FileRange(fd, 0, length, "s"), memoryview(bytearray(length)), then)


def test_a_cached_read_into_is_read_and_answered_by_run_now_itself(tmp_path):
    """A signed or sealed READ's data (ReadInto) that the page cache holds is read where
    run_now runs, and the response its continuation makes is sent at once, before the
    effects that came after it: no coroutine, no turn of the event loop."""
    async def main():
        runner, transport, module, fd = read_runner(tmp_path, b"0123456789")
        got = []
        effect = read_into(fd, 10, lambda n: got.append(bytes(effect.into[:n])) or [effects.Send(b"answer")])
        assert runner.run_now([effect, effects.Send(b"after")]) is None
        assert got == [b"0123456789"] and module.ways == ["now"]
        assert transport.sent == [b"\0\0\0\x06answer", b"\0\0\0\x05after"]
        assert runner.bytes_read_in_memory == 10
        os.close(fd)
    asyncio.run(main())


def test_a_read_into_past_the_files_end_is_zeros(tmp_path):
    async def main():
        runner, transport, module, fd = read_runner(tmp_path, b"abc")
        got = []
        effect = read_into(fd, 8, lambda n: got.append((n, bytes(effect.into))) or [])
        assert runner.run_now([effect]) is None
        assert got == [(8, b"abc" + bytes(5))] and module.ways == ["now"]
        os.close(fd)
    asyncio.run(main())


def test_a_read_into_the_page_cache_does_not_hold_goes_the_awaited_way(tmp_path):
    async def main():
        runner, transport, module, fd = read_runner(tmp_path, b"0123456789", cached=False)
        effect = read_into(fd, 10, lambda n: [effects.Send(bytes(effect.into[:n]))])
        pending = runner.run_now([effect, effects.Send(b"after")])
        assert pending is not None and transport.sent == []
        await pending
        assert module.ways == ["now", "awaited"]
        assert transport.sent == [b"\0\0\0\n0123456789", b"\0\0\0\x05after"]
        os.close(fd)
    asyncio.run(main())


def test_a_read_now_that_fails_leaves_the_read_to_the_awaited_way(tmp_path):
    """Whatever the quick read raises, the read goes the awaited way, which answers it (an
    OSError as its status) or logs it: the connection is not dropped for it."""
    async def main():
        runner, transport, module, fd = read_runner(tmp_path, b"0123456789")

        def broken(fd, view, offset):
            module.ways.append("now")
            raise ValueError("a bug below")
        module.read_now = broken
        effect = read_into(fd, 10, lambda n: [effects.Send(bytes(effect.into[:n]))])
        pending = runner.run_now([effect])
        assert pending is not None
        await pending
        assert module.ways == ["now", "awaited"] and transport.sent == [b"\0\0\0\n0123456789"]
        os.close(fd)
    asyncio.run(main())
