"""The client's data paths, each checked byte for byte on real servers: READ data written with
O_DIRECT from the receive pool, spliced socket -> pipe -> file, or written through the page
cache from the pool; WRITE data sent with sendfile from the local file (unsigned) or from
reused buffers (signed, sealed). Each test checks that the path it names was the one taken."""
import asyncio
import hashlib
import os
import struct

import pytest

import smbring.client as sc
from smbring.client.buffers import FileRange
from smbring.client.errors import LocalFileError
from smbring.smb import wire

MiB = 1024 * 1024
SIZE = 20 * MiB + 4097          # a partial last page and a partial last READ


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 240))


def digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


async def connected(srv, **kw):
    return await sc.connect(srv["host"], srv["port"], srv["user"], srv["password"], srv["name"], **kw)


def set_path(c, path):
    c.direct = path == "direct"
    c.splice = path == "splice"


async def round_trip(c, tmp_path, path):
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(SIZE))
    await c.put(str(src), "big.bin")
    set_path(c, path)
    await c.get("big.bin", str(tmp_path / "back.bin"))
    assert digest(tmp_path / "back.bin") == digest(src)
    assert not [p for p in os.listdir(tmp_path) if ".part" in p]
    return src


def spliced(c):
    return sum(ch.spliced for ch in c.channels)


@pytest.mark.parametrize("path", ["direct", "splice", "pool"])
@pytest.mark.parametrize("options", [{}, {"sign": True}, {"encrypt": True}], ids=["plain", "signed", "sealed"])
def test_each_get_path_is_byte_exact_and_taken(smbring_server, tmp_path, path, options):
    srv = smbring_server()

    async def go():
        async with await connected(srv, **options) as c:
            src = await round_trip(c, tmp_path, path)
            assert digest(srv["share"] / "big.bin") == digest(src)
            protected = bool(options)
            # splicing only where nothing needs checking beyond the header
            assert (spliced(c) > 0) == (path == "splice" and not protected)
            # direct I/O from the pool, where the data lands on a page; after decryption only
            # where the decrypted buffer happens to start on one (so no claim either way)
            if path != "direct":
                assert c.direct_bytes == 0
            elif not options.get("encrypt"):
                assert c.direct_bytes > 0
            # the receive buffers were used again: far fewer made than READs received
            assert c.pool.made <= c.pool.keep
    run(go())


@pytest.mark.parametrize("path", ["direct", "splice"])
@pytest.mark.parametrize("options", [{}, {"sign": True}], ids=["plain", "signed"])
def test_samba_each_get_path(samba_server, tmp_path, path, options):
    srv = samba_server()

    async def go():
        async with await connected(srv, **options) as c:
            src = await round_trip(c, tmp_path, path)
            assert digest(srv["share"] / "big.bin") == digest(src)
            assert (spliced(c) > 0) == (path == "splice" and not options)
            assert (c.direct_bytes > 0) == (path == "direct")
    run(go())


def as_async_final(frame):
    """A successful READ response rewritten as the final response of an async operation (the
    way smbd answers a READ that took longer than half a millisecond): ASYNC flag, AsyncId."""
    if frame[:4] == wire.PROTOCOL_ID and struct.unpack_from("<H", frame, 12)[0] == wire.READ \
            and struct.unpack_from("<I", frame, 8)[0] == wire.STATUS_SUCCESS:
        flags = struct.unpack_from("<I", frame, 16)[0]
        struct.pack_into("<I", frame, 16, flags | wire.FLAGS_ASYNC)
        struct.pack_into("<Q", frame, 32, 0x5EED)
    return frame


def test_reads_answered_asynchronously_are_spliced_too(smbring_server, tampering_proxy, tmp_path):
    """Under load smbd answers READs asynchronously; their data goes the spliced way all the
    same, byte-exact (the splice was once refused for every async response)."""
    srv = smbring_server()
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(SIZE))
    (srv["share"] / "big.bin").write_bytes(src.read_bytes())

    async def go():
        proxy = tampering_proxy(srv["port"], as_async_final)
        async with proxy:
            async with await sc.connect("127.0.0.1", proxy.port, srv["user"], srv["password"],
                                        srv["name"]) as c:
                set_path(c, "splice")
                await c.get("big.bin", str(tmp_path / "back.bin"))
                assert spliced(c) >= 20 * MiB     # all but the short last READ
    run(go())
    assert digest(tmp_path / "back.bin") == digest(src)


def test_unsigned_put_goes_by_sendfile_and_a_shrinking_file_is_refused(smbring_server, tmp_path):
    """A WRITE whose FileRange runs past the end of the local file: the header announced the
    bytes, so the channel cannot go on; the upload fails with LocalFileError (no hang, no
    retry elsewhere), and what was written is not presented under the name."""
    srv = smbring_server()
    local = tmp_path / "short.bin"
    local.write_bytes(os.urandom(MiB))

    async def go():
        async with await connected(srv) as c:
            fd = os.open(local, os.O_RDONLY)
            try:
                async with await c.open("victim.bin", "w") as f:
                    with pytest.raises(LocalFileError, match="ended"):
                        await f.write_from(0, 2 * MiB, lambda off, n: FileRange(fd, off, n))
            finally:
                os.close(fd)
            assert not c.connected
    run(go())


def test_local_file_that_shrinks_before_a_chunk_is_refused_cleanly(smbring_server, tmp_path):
    srv = smbring_server()
    local = tmp_path / "up.bin"
    local.write_bytes(os.urandom(3 * MiB))

    async def go():
        async with await connected(srv) as c:
            async with await c.open("x.bin", "w") as f:
                fd = os.open(local, os.O_RDONLY)
                try:
                    from smbring.client.transfer import FileSource
                    source = FileSource(fd, c.io_size, in_place=True)
                    os.truncate(local, MiB + 10)        # before the second chunk is asked for
                    with pytest.raises(ValueError, match="changed during the transfer"):
                        await f.write_from(0, 3 * MiB, source, source.done)
                finally:
                    os.close(fd)
            assert c.connected                          # refused before anything was announced
    run(go())


def test_write_data_is_read_into_buffers_when_signed(smbring_server, tmp_path):
    srv = smbring_server()

    async def go():
        async with await connected(srv, sign=True, dialects=(wire.SMB311,)) as c:
            src = tmp_path / "src.bin"
            src.write_bytes(os.urandom(5 * MiB + 1))
            await c.put(str(src), "s.bin")
            assert digest(srv["share"] / "s.bin") == digest(src)
    run(go())


def _put_counting(c, src, name):
    """The put, and the requests it took (every one answered on the first channel)."""
    async def go():
        before = c.channels[0].answered
        await c.put(str(src), name)
        return c.channels[0].answered - before
    return go()


@pytest.mark.parametrize("server", ["smbring_server", "samba_server"])
def test_unsigned_put_sends_writes_as_large_as_the_server_takes(request, tmp_path, server):
    """sendfile needs no buffer of the client's, so its WRITEs are write_size (1 MiB set here;
    2 MiB - 64 KiB by default: see DEFAULT_WRITE_SIZE), which may be raised to the server's
    MaxWriteSize (8 MiB for both) whatever io_size is: 3 WRITEs for 20 MiB + 4097 bytes where
    1 MiB WRITEs take 21; byte-exact either way."""
    srv = request.getfixturevalue(server)()
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(SIZE))

    async def go():
        async with await connected(srv) as c:
            assert c.write_size == 2 * MiB - 64 * 1024 and c.io_size == MiB
            c.write_size = MiB
            small = await _put_counting(c, src, "small.bin")
            assert digest(srv["share"] / "small.bin") == digest(src)
            c.write_size = 8 * MiB
            large = await _put_counting(c, src, "large.bin")
            assert digest(srv["share"] / "large.bin") == digest(src)
            assert digest(srv["share"] / "small.bin") == digest(src)
            assert small - large == 21 - 3
            # the sendfile upload asked for its send buffer (0: autotuning reaches further)
            assert c.channels[0].send_buffer is not None
    run(go())


def test_write_size_is_lowered_to_what_the_server_allows(smbring_server, tmp_path):
    """SMB 2.0.2 has no multi-credit requests: 64 KiB per WRITE at most, whatever was asked."""
    srv = smbring_server()
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(MiB + 3))

    async def go():
        async with await connected(srv, dialects=(wire.SMB202,), write_size=32 * MiB) as c:
            assert c.write_size == 65536
            requests = await _put_counting(c, src, "w.bin")
            assert digest(srv["share"] / "w.bin") == digest(src)
            assert requests >= 17                     # 1 MiB + 3 bytes in 64 KiB WRITEs
        async with await connected(srv, write_size=32 * MiB) as c:
            assert c.write_size == 8 * MiB            # smbring's MaxWriteSize
    run(go())


def test_signed_put_keeps_io_size_writes(smbring_server, tmp_path):
    """A signed WRITE is read into a reused buffer of io_size and copied to be signed: those
    stay io_size, whatever write_size is."""
    srv = smbring_server()
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(3 * MiB + 1))

    async def go():
        async with await connected(srv, sign=True) as c:
            c.write_size = 8 * MiB
            requests = await _put_counting(c, src, "signed.bin")
            assert digest(srv["share"] / "signed.bin") == digest(src)
            assert requests >= 4 + 5                  # 4 WRITEs, and the opens around them
            assert c.channels[0].send_buffer is None  # no sendfile: the buffer left as it was
    run(go())
