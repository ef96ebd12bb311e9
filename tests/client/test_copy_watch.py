"""smbring.client's server-side copy (Client.copy) and change notify (Client.watch), against
`smbring serve` and Samba's smbd: copies byte-exact in several requests, within limits a
server answers, all or nothing; changes made by another client reported in order, a watch
that waits longer than the client's timeout, a watch closed while its request waits; and
servers that lie (a copy said to be longer than asked, a changed name that is a path out of
the directory) refused with ProtocolError."""
import asyncio
import contextlib
import os
import struct

import pytest

import smbring.client as sc
from smbring.client.errors import ProtocolError
from smbring.smb import wire

MiB = 1024 * 1024


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 120))


@pytest.fixture(params=["smbring", "smbd"])
def srv(request):
    if request.param == "smbring":
        return request.getfixturevalue("smbring_server")()
    return request.getfixturevalue("samba_server")()


async def connected(srv, port=None, **kw):
    return await sc.connect(srv["host"], port or srv["port"], srv["user"], srv["password"], srv["name"], **kw)


def command(frame) -> int:
    return struct.unpack_from("<H", frame, 12)[0] if frame[:4] == wire.PROTOCOL_ID else -1


def control(frame) -> int:
    return struct.unpack_from("<I", frame, 64 + 4)[0]


# -- server-side copy ---------------------------------------------------------------------------
def test_copies_are_byte_exact_and_all_or_nothing(srv):
    share = srv["share"]
    big = os.urandom(40 * MiB + 12345)          # three requests of at most 16 MiB
    (share / "big.bin").write_bytes(big)
    (share / "empty.bin").write_bytes(b"")
    (share / "small.bin").write_bytes(b"s" * 5000)
    os.mkdir(share / "dir")

    async def go():
        async with await connected(srv) as c:
            assert await c.copy("big.bin", "dir/big-copy.bin") == len(big)
            assert await c.copy("empty.bin", "empty-copy.bin") == 0
            assert await c.copy("small.bin", "small-copy.bin") == 5000
            with pytest.raises(FileExistsError):
                await c.copy("small.bin", "empty-copy.bin")
            assert await c.copy("small.bin", "empty-copy.bin", replace=True) == 5000
            with pytest.raises(FileNotFoundError):
                await c.copy("missing.bin", "nothing.bin")
            with pytest.raises(IsADirectoryError):
                await c.copy("dir", "dir-copy")
            return sorted([e.name async for e in c.listdir("")])
    names = run(go())
    assert (share / "dir" / "big-copy.bin").read_bytes() == big
    assert (share / "empty-copy.bin").read_bytes() == b"s" * 5000
    assert (share / "small-copy.bin").read_bytes() == b"s" * 5000
    assert "nothing.bin" not in names and "dir-copy" not in names


def test_a_copy_goes_on_within_the_limits_a_server_answers(smbring_server, tampering_proxy):
    """A server whose limits are smaller (4 chunks of 64 KiB, 128 KiB a request) answers the
    first request with them; every later request keeps within them, and the copy is whole."""
    srv = smbring_server()
    data = os.urandom(MiB + 777)
    (srv["share"] / "src.bin").write_bytes(data)
    asked = []

    def intercept(frame):
        if command(frame) == wire.IOCTL and control(frame) == wire.FSCTL_SRV_COPYCHUNK_WRITE:
            count = struct.unpack_from("<I", frame, 64 + 56 + 24)[0]
            lengths = [struct.unpack_from("<I", frame, 64 + 56 + 32 + 24 * i + 16)[0] for i in range(count)]
            asked.append(lengths)
            if len(asked) == 1:     # the limits, in an IOCTL answer of INVALID_PARAMETER
                proxy.answer(limits_answer(frame, 4, 64 * 1024, 128 * 1024))
                return None
        return frame

    async def go():
        nonlocal proxy
        proxy = tampering_proxy(srv["port"], lambda f: f, intercept)
        async with proxy:
            async with await connected(srv, proxy.port) as c:
                return await c.copy("src.bin", "dst.bin")
    proxy = None
    assert run(go()) == len(data)
    assert (srv["share"] / "dst.bin").read_bytes() == data
    assert len(asked[0]) == 2 and len(asked) == 1 + -(-len(data) // (128 * 1024))
    assert all(len(lengths) <= 4 and max(lengths) <= 64 * 1024 and sum(lengths) <= 128 * 1024
               for lengths in asked[1:])


def limits_answer(request, chunks: int, chunk: int, total: int) -> bytes:
    """An IOCTL response of STATUS_INVALID_PARAMETER carrying copy limits, to `request`."""
    header = bytearray(request[:64])
    struct.pack_into("<I", header, 8, wire.STATUS_INVALID_PARAMETER)
    struct.pack_into("<H", header, 14, 1)                          # a credit back
    struct.pack_into("<I", header, 16, struct.unpack_from("<I", header, 16)[0] | wire.FLAGS_SERVER_TO_REDIR)
    body = struct.pack("<HHI16sIIIIII", 49, 0, wire.FSCTL_SRV_COPYCHUNK_WRITE, request[64 + 8:64 + 24],
                       64 + 48, 0, 64 + 48, 12, 0, 0)
    return bytes(header) + body + struct.pack("<III", chunks, chunk, total)


def test_a_copy_said_to_be_longer_than_asked_is_refused(smbring_server, tampering_proxy):
    srv = smbring_server()
    (srv["share"] / "src.bin").write_bytes(os.urandom(100_000))

    def tamper(frame):
        if command(frame) == wire.IOCTL and struct.unpack_from("<I", frame, 8)[0] == 0 and \
                control(frame) == wire.FSCTL_SRV_COPYCHUNK_WRITE:
            out = struct.unpack_from("<I", frame, 64 + 32)[0]
            struct.pack_into("<I", frame, out + 8, 200_000)     # TotalBytesWritten
        return frame

    async def go():
        async with tampering_proxy(srv["port"], tamper) as proxy:
            c = await connected(srv, proxy.port)
            with pytest.raises(ProtocolError, match="copied 200000 bytes of the 100000"):
                await c.copy("src.bin", "dst.bin")
            assert not c.connected
            await c.close()
    run(go())


@pytest.mark.parametrize("options", [{"sign": True}, {"encrypt": True}])
def test_a_copy_and_a_watch_on_a_signed_or_sealed_session(srv, options):
    (srv["share"] / "src.bin").write_bytes(b"p" * 70_000)
    os.mkdir(srv["share"] / "w")

    async def go():
        async with await connected(srv, **options) as c, await connected(srv) as other:
            assert await c.copy("src.bin", "dst.bin") == 70_000
            async with contextlib.aclosing(c.watch("w")) as watcher:
                waiting = asyncio.ensure_future(changes_until(watcher, ("added", "x")))
                await asyncio.sleep(0.5)
                await other.mkdir("w/x")
                return await asyncio.wait_for(waiting, 20)
    assert run(go())[-1] == ("added", "x")
    assert (srv["share"] / "dst.bin").read_bytes() == b"p" * 70_000


# -- change notify ------------------------------------------------------------------------------
async def changes_until(watcher, last) -> list:
    """The changes the watcher gives, up to and with `last` (action, name)."""
    got = []
    async for change in watcher:
        got.append((change.action, change.name))
        if got[-1] == last:
            break
    return got


def test_changes_another_client_makes_are_reported(srv):
    os.mkdir(srv["share"] / "watched")

    async def go():
        async with await connected(srv, timeout=2) as c, await connected(srv) as other:
            async with contextlib.aclosing(c.watch("watched", recursive=True)) as watcher:
                waiting = asyncio.ensure_future(changes_until(watcher, ("added", "sub")))
                await asyncio.sleep(3)          # longer than the watcher's timeout: no deadline
                assert not waiting.done()
                async with await other.open("watched/a.txt", "w") as f:
                    await f.write(b"x")
                await asyncio.sleep(0.3)        # (each change its own answer, or one together)
                await other.rename("watched/a.txt", "watched/b.txt")
                await asyncio.sleep(0.3)
                await other.remove("watched/b.txt")
                await asyncio.sleep(0.3)
                await other.mkdir("watched/sub")
                got = await asyncio.wait_for(waiting, 20)
            assert (await c.stat("watched")).is_dir     # the closed watch left the connection usable
            return got
    got = run(go())
    assert ("added", "a.txt") in got
    assert got.index(("renamed_from", "a.txt")) + 1 == got.index(("renamed_to", "b.txt"))
    assert ("removed", "b.txt") in got and ("added", "sub") in got
    assert all(action != "overflow" for action, _ in got)


def test_a_watch_closed_while_its_request_waits_ends_cleanly(srv):
    os.mkdir(srv["share"] / "quiet")

    async def go():
        async with await connected(srv) as c:
            watcher = c.watch("quiet")
            waiting = asyncio.ensure_future(watcher.__anext__())
            await asyncio.sleep(0.5)
            waiting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiting
            await watcher.aclose()
            await asyncio.sleep(0.5)            # the server's NOTIFY_CLEANUP answer comes and goes
            async with await c.open("quiet/after.txt", "w") as f:
                await f.write(b"still connected")
            return [e.name async for e in c.listdir("quiet")]
    assert run(go()) == ["after.txt"]


def test_a_changed_name_that_leaves_the_directory_is_refused(smbring_server, tampering_proxy):
    srv = smbring_server()
    os.mkdir(srv["share"] / "watched")

    def tamper(frame):
        if command(frame) == wire.CHANGE_NOTIFY and struct.unpack_from("<I", frame, 8)[0] == 0:
            offset, length = struct.unpack_from("<HI", frame, 64 + 2)
            evil = "..\\..\\etc\\x".encode("utf-16-le")
            entry = struct.pack("<III", 0, 1, len(evil)) + evil
            struct.pack_into("<I", frame, 64 + 4, len(entry))
            return frame[:offset] + entry
        return frame

    async def go():
        async with tampering_proxy(srv["port"], tamper) as proxy:
            c = await connected(srv, proxy.port)
            other = await connected(srv)
            watcher = c.watch("watched")
            waiting = asyncio.ensure_future(watcher.__anext__())
            await asyncio.sleep(0.3)
            async with await other.open("watched/a.txt", "w") as f:
                await f.write(b"x")
            with pytest.raises(ProtocolError, match="not a name below the watched directory"):
                await asyncio.wait_for(waiting, 20)
            assert not c.connected
            await watcher.aclose()
            await c.close()
            await other.close()
    run(go())


def test_unknown_changes_are_refused_before_anything_is_sent(smbring_server):
    srv = smbring_server()

    async def go():
        async with await connected(srv) as c:
            with pytest.raises(ValueError, match="unknown change 'colour'"):
                await c.watch("", changes=("file_name", "colour")).__anext__()
    run(go())
