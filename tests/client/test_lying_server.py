"""Servers that lie: a proxy of our own in front of a real `smbring serve` tampers with chosen
responses (short reads, wrong lengths, altered signed data, names in listings that are paths),
and fake servers that answer badly from the first frame. Each lie is refused with a clear
ConnectionError, and nothing is written outside the destination (nor a partial file presented
as complete)."""
import asyncio
import os
import struct
import subprocess
import sys

import pytest

import smbring.client as sc
from smbring.smb import wire

MiB = 1024 * 1024


def tree_files(root):
    """Every path under root (relative), for checking that nothing appeared elsewhere."""
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            out.add(os.path.relpath(os.path.join(dirpath, name), root))
    return out


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 120))


def command(frame) -> int:
    return struct.unpack_from("<H", frame, 12)[0] if frame[:4] == wire.PROTOCOL_ID else -1


def status(frame) -> int:
    return struct.unpack_from("<I", frame, 8)[0]


def first_only(change, which):
    """A tamper function that changes only the first frame `which` matches."""
    done = []

    def tamper(frame):
        if not done and which(frame):
            done.append(True)
            return change(frame)
        return frame
    return tamper


async def through(proxy_cls, srv, tamper, **kw):
    """Connects through a tampering proxy; returns (proxy, client)."""
    proxy = proxy_cls(srv["port"], tamper)
    await proxy.__aenter__()
    try:
        client = await sc.connect("127.0.0.1", proxy.port, srv["user"], srv["password"], srv["name"], **kw)
    except BaseException:
        await proxy.__aexit__(None, None, None)
        raise
    return proxy, client


def responses_in(frame):
    """(start, end) of each response in a frame: one, or a compound's, one after another."""
    start = 0
    while True:
        step = struct.unpack_from("<I", frame, start + 20)[0]
        yield start, start + step if step else len(frame)
        if not step:
            return
        start += step


def short_read(frame):
    """A READ response that says (and carries) 1000 bytes fewer than the server read."""
    length = struct.unpack_from("<I", frame, 64 + 4)[0]
    struct.pack_into("<I", frame, 64 + 4, length - 1000)
    return frame[:-1000]


def is_read_ok(frame):
    return command(frame) == wire.READ and status(frame) == 0


def get_fails_as_short_read(srv, tampering_proxy, tmp_path, change) -> None:
    """A get of a 3 MiB file through a proxy that changes the server's answers with `change`
    fails as a short read, and leaves neither the file nor its temporary."""
    (srv["share"] / "big").write_bytes(os.urandom(3 * MiB))
    dest = tmp_path / "dest"
    dest.mkdir()

    async def go():
        proxy, c = await through(tampering_proxy, srv, change)
        try:
            with pytest.raises(ConnectionError, match="short read"):
                await c.get("big", str(dest / "big"))
        finally:
            await c.close()
            await proxy.__aexit__(None, None, None)
    run(go())
    assert os.listdir(dest) == []


def test_short_read_during_get_is_refused_and_nothing_is_left(smbring_server, tampering_proxy, tmp_path):
    get_fails_as_short_read(smbring_server(), tampering_proxy, tmp_path, first_only(short_read, is_read_ok))


def announcing(size):
    """A successful CREATE response whose EndofFile says `size`."""
    def change(frame):
        if command(frame) == wire.CREATE and status(frame) == 0:
            struct.pack_into("<Q", frame, 64 + 48, size)
        return frame
    return change


@pytest.mark.parametrize("announced", [64 * MiB, 1 << 50], ids=["room-for-it", "more-than-any-disk"])
def test_a_size_the_server_never_sends_fails_the_get_and_frees_the_space(
        smbring_server, tampering_proxy, tmp_path, announced):
    """get allocates blocks before the data comes (fallocate, for O_DIRECT writes side by
    side): a server that announces more than it has fails the download as a short
    read, whether the disk could hold that much or not, and leaves nothing behind."""
    get_fails_as_short_read(smbring_server(), tampering_proxy, tmp_path, announcing(announced))


FILE_SYSTEM_BLOCKS = 64 * 1024      # a file's own metadata blocks, counted in st_blocks


def test_a_size_announced_is_not_taken_from_the_disk_before_its_data_comes(
        smbring_server, tampering_proxy, tmp_path):
    """A server announces 2 GiB and then sends nothing (its READ answers never come): the
    download's blocks are allocated ahead of the data only so far (PREALLOCATE_AHEAD), never
    the whole announced size at once (a hostile server could otherwise take a disk's free
    space for as long as it keeps the transfer going); the get then ends with the timeout
    and leaves nothing."""
    from smbring.client.transfer import PREALLOCATE_AHEAD
    srv = smbring_server()
    (srv["share"] / "big").write_bytes(os.urandom(MiB))
    dest = tmp_path / "dest"
    dest.mkdir()
    announced = 2 << 30

    def tamper(frame):
        if command(frame) == wire.READ:
            return None
        return announcing(announced)(frame)

    async def go():
        proxy, c = await through(tampering_proxy, srv, tamper, timeout=3)
        allocated = 0
        try:
            assert c.direct
            get = asyncio.ensure_future(c.get("big", str(dest / "big")))
            for _ in range(20):
                await asyncio.sleep(0.05)
                for name in os.listdir(dest):
                    allocated = max(allocated, os.lstat(dest / name).st_blocks * 512)
            with pytest.raises(sc.ProtocolError, match="no answer to READ"):
                await get
        finally:
            await c.close()
            await proxy.__aexit__(None, None, None)
        return allocated
    allocated = run(go())
    # (st_blocks counts the file system's own blocks of the file too: an ext4 extent tree's
    # index block made the 256 MiB reserved read 256 MiB and 4 KiB once)
    assert 0 < allocated <= PREALLOCATE_AHEAD + FILE_SYSTEM_BLOCKS < announced
    assert os.listdir(dest) == []


def test_short_read_in_the_middle_of_a_read_is_refused(smbring_server, tampering_proxy):
    srv = smbring_server()
    (srv["share"] / "big").write_bytes(os.urandom(3 * MiB))

    async def go():
        proxy, c = await through(tampering_proxy, srv, first_only(short_read, is_read_ok))
        try:
            async with await c.open("big") as f:
                with pytest.raises(ConnectionError, match="after the file ended"):
                    await f.read(3 * MiB)
        finally:
            await c.close()
            await proxy.__aexit__(None, None, None)
    run(go())


def test_read_longer_than_asked_is_refused(smbring_server, tampering_proxy):
    srv = smbring_server()
    (srv["share"] / "f").write_bytes(b"z" * 100_000)

    def longer(frame):
        struct.pack_into("<I", frame, 64 + 4, struct.unpack_from("<I", frame, 64 + 4)[0] + 10)
        return frame + b"\0" * 10

    async def go():
        proxy, c = await through(tampering_proxy, srv, first_only(longer, is_read_ok))
        try:
            async with await c.open("f") as f:
                with pytest.raises(ConnectionError, match="bytes were asked for|asked for"):
                    await f.read(100_000)
            # found after the channel delivered the answer, the lie closes the connection all
            # the same: nothing more is asked of that server
            assert not c.connected
            with pytest.raises(sc.ProtocolError, match="asked for"):
                await c.stat("f")
        finally:
            await c.close()
            await proxy.__aexit__(None, None, None)
    run(go())


def test_read_data_that_starts_inside_the_response_s_own_fields_is_refused(smbring_server, tampering_proxy):
    """DataOffset 64 (still inside the message, but where the READ response's own fixed
    fields lie): those 16 bytes would be taken for the file's first bytes. Refused, as Samba's
    client refuses any DataOffset but 80."""
    srv = smbring_server()
    (srv["share"] / "f").write_bytes(b"z" * 100_000)

    def into_the_header(frame):
        frame[64 + 2] = 64
        return frame

    async def go():
        proxy, c = await through(tampering_proxy, srv, first_only(into_the_header, is_read_ok))
        try:
            async with await c.open("f") as f:
                with pytest.raises(sc.ProtocolError, match="DataOffset 64"):
                    await f.read(100_000)
        finally:
            await c.close()
            await proxy.__aexit__(None, None, None)
    run(go())


def _longer(frame):
    """DataLength 10 bytes more than the server read (the frame carries them)."""
    struct.pack_into("<I", frame, 64 + 4, struct.unpack_from("<I", frame, 64 + 4)[0] + 10)
    return frame + b"\0" * 10


def _past_the_frame(frame):
    """DataLength as the server said, DataOffset moved so that the data runs past the frame."""
    frame[64 + 2] = 0x60
    return frame


def _short_on_the_socket(frame):
    """Fewer bytes of data than asked, announced as such (a short read)."""
    return short_read(frame)


@pytest.mark.parametrize("read_size", [MiB, 4 * MiB], ids=["1MiB-reads", "4MiB-reads"])
@pytest.mark.parametrize("path", ["direct", "splice", "pool"])
@pytest.mark.parametrize("lie, error", [(_longer, "asked for"), (_past_the_frame, "outside"),
                                        (_short_on_the_socket, "short read")],
                         ids=["longer-than-asked", "data-past-the-frame", "short"])
def test_lying_read_on_each_data_path_writes_nothing(smbring_server, tampering_proxy, tmp_path,
                                                     path, lie, error, read_size):
    """The READs of a get (1 MiB, and the larger ones a get asks for by default), on each path
    their data may take (O_DIRECT from the receive pool, spliced to the file, through the
    page cache): a READ response that lies about its data is refused before any of it is
    written under a name, and no temporary is left."""
    srv = smbring_server()
    (srv["share"] / "big").write_bytes(os.urandom(5 * read_size))
    dest = tmp_path / "dest"
    dest.mkdir()

    def third_read(frame):
        return is_read_ok(frame) and len(frame) > read_size

    seen = []

    def tamper(frame):
        if third_read(frame):
            seen.append(True)
            if len(seen) == 3:
                return lie(frame)
        return frame

    async def go():
        proxy, c = await through(tampering_proxy, srv, tamper, read_size=read_size)
        c.direct, c.splice = path == "direct", path == "splice"
        try:
            assert c.read_size == read_size
            with pytest.raises(sc.ProtocolError, match=error):
                await c.get("big", str(dest / "big"))
            if path == "splice":
                # the READs before the lie did go the spliced way
                assert c.channels[0].spliced >= 2 * read_size
        finally:
            await c.close()
            await proxy.__aexit__(None, None, None)
    run(go())
    assert os.listdir(dest) == []


def test_wrong_write_count_fails_the_upload_and_the_name_stays_absent(smbring_server, tampering_proxy, tmp_path):
    srv = smbring_server()
    src = tmp_path / "src"
    src.write_bytes(os.urandom(2 * MiB))

    def fewer(frame):
        struct.pack_into("<I", frame, 64 + 4, struct.unpack_from("<I", frame, 64 + 4)[0] - 1)
        return frame

    async def go():
        proxy, c = await through(tampering_proxy, srv, first_only(
            fewer, lambda f: command(f) == wire.WRITE and status(f) == 0))
        try:
            with pytest.raises(ConnectionError, match="says it wrote"):
                await c.put(str(src), "uploaded")
        finally:
            await c.close()
            await proxy.__aexit__(None, None, None)
    run(go())
    assert not (srv["share"] / "uploaded").exists()


@pytest.mark.parametrize("alteration", ["data", "unsigned"])
def test_altered_signed_response_is_refused(smbring_server, tampering_proxy, tmp_path, alteration):
    srv = smbring_server()
    (srv["share"] / "f").write_bytes(os.urandom(MiB))

    def alter(frame):
        if alteration == "data":
            frame[-1] ^= 0x01                   # one bit of the file's data
        else:
            flags = struct.unpack_from("<I", frame, 16)[0] & ~wire.FLAGS_SIGNED
            struct.pack_into("<I", frame, 16, flags)
        return frame

    async def go():
        proxy, c = await through(tampering_proxy, srv, first_only(alter, is_read_ok), sign=True)
        try:
            with pytest.raises(ConnectionError, match="bad signature" if alteration == "data"
                               else "unsigned READ response"):
                await c.get("f", str(tmp_path / "f"))
            # the connection is closed: nothing it would carry could be trusted
            with pytest.raises(ConnectionError):
                await c.stat("f")
        finally:
            await c.close()
            await proxy.__aexit__(None, None, None)
    run(go())
    assert not (tmp_path / "f").exists()
    assert [p for p in os.listdir(tmp_path) if p.startswith(".f.")] == []


@pytest.mark.parametrize("lie", ["echoed", "other-signature", "echoed-success"])
def test_an_answer_carrying_its_requests_own_signature_is_taken_only_as_such_a_failure(
        smbring_server, tampering_proxy, lie):
    """smbd and Windows answer some failures they meet before any key can sign (a related
    request after a failed one, a session, tree or file they do not know) with the request's
    own SIGNED flag and signature. The client takes such an answer (INVALID_PARAMETER,
    FILE_CLOSED, NETWORK_NAME_DELETED, USER_SESSION_DELETED) as the failure it is, and only
    with that very signature: with another one it is a forgery that ends the connection, and
    a success never comes so."""
    srv = smbring_server()
    (srv["share"] / "f").write_bytes(b"data")
    signatures = {}         # MessageId -> the signature its request went out with

    def note(frame):
        for start, end in responses_in(frame):
            if frame[:4] == wire.PROTOCOL_ID and struct.unpack_from("<I", frame, start + 16)[0] & wire.FLAGS_SIGNED:
                signatures[struct.unpack_from("<Q", frame, start + 24)[0]] = bytes(frame[start + 48:start + 64])
        return frame

    def forge(frame):
        message_id = struct.unpack_from("<Q", frame, 24)[0]
        forged = bytearray(frame[:64]) + struct.pack("<HBBI", 9, 0, 0, 0) + b"\0"
        struct.pack_into("<I", forged, 8, 0 if lie == "echoed-success" else wire.STATUS_INVALID_PARAMETER)
        forged[48:64] = signatures[message_id] if lie != "other-signature" else os.urandom(16)
        return forged

    async def go():
        proxy = tampering_proxy(srv["port"], first_only(forge, lambda f: command(f) == wire.QUERY_INFO),
                                intercept=note)
        await proxy.__aenter__()
        c = await sc.connect("127.0.0.1", proxy.port, srv["user"], srv["password"], srv["name"], sign=True)
        try:
            async with await c.open("f") as f:
                if lie == "echoed":
                    with pytest.raises(sc.SMBError, match="INVALID_PARAMETER"):
                        await f.stat()
                    assert (await f.stat()).size == 4       # the connection goes on
                else:
                    with pytest.raises(ConnectionError, match="bad signature"):
                        await f.stat()
                    assert not c.connected
        finally:
            await c.close()
            await proxy.__aexit__(None, None, None)
    run(go())


def test_an_ntlm_session_said_to_have_expired_sends_no_logon_again(smbring_server, tampering_proxy):
    """NTLM sessions do not expire: an answer STATUS_NETWORK_SESSION_EXPIRED (which anyone on
    the path of an unsigned session can forge) fails the operation, and the client sends no
    SESSION_SETUP (no NTLM logon to relay); a Kerberos session's is renewed (the Kerberos
    tests)."""
    srv = smbring_server()
    (srv["share"] / "f").write_bytes(b"data")
    setups = []

    def note(frame):
        if command(frame) == wire.SESSION_SETUP:
            setups.append(frame)
        return frame

    def expired(frame):
        struct.pack_into("<I", frame, 8, wire.STATUS_NETWORK_SESSION_EXPIRED)
        return frame[:64] + struct.pack("<HBBI", 9, 0, 0, 0) + b"\0"

    async def go():
        proxy = tampering_proxy(srv["port"], first_only(expired, lambda f: command(f) == wire.QUERY_INFO),
                                intercept=note)
        await proxy.__aenter__()
        c = await sc.connect("127.0.0.1", proxy.port, srv["user"], srv["password"], srv["name"])
        logon = len(setups)
        try:
            async with await c.open("f") as f:
                with pytest.raises(sc.SMBError, match="NETWORK_SESSION_EXPIRED"):
                    await f.stat()
                assert (await f.stat()).size == 4
            assert len(setups) == logon and c.renewals == 0
        finally:
            await c.close()
            await proxy.__aexit__(None, None, None)
    run(go())


def test_altered_sealed_response_is_refused(smbring_server, tampering_proxy):
    srv = smbring_server()
    (srv["share"] / "f").write_bytes(os.urandom(MiB))

    def alter(frame):
        frame[-5] ^= 0x80
        return frame

    async def go():
        proxy, c = await through(tampering_proxy, srv, first_only(
            alter, lambda f: f[:4] == wire.TRANSFORM_ID and len(f) > MiB), encrypt=True)
        try:
            async with await c.open("f") as f:
                with pytest.raises(ConnectionError, match="failed to decrypt"):
                    await f.read()
        finally:
            await c.close()
            await proxy.__aexit__(None, None, None)
    run(go())


def test_forged_final_session_setup_signature_is_refused(smbring_server, tampering_proxy):
    srv = smbring_server()

    def alter(frame):
        frame[50] ^= 0xFF
        return frame

    with pytest.raises(ConnectionError, match="SESSION_SETUP"):
        run(through(tampering_proxy, srv, first_only(
            alter, lambda f: command(f) == wire.SESSION_SETUP and status(f) == 0)))


HOSTILE_NAMES = ["..\\AAAAA", "../AAAAA", "/tmp/pwn", "C:\\Windo", "C:AAAAAA", "AAAA\\..\\",
                 "AAA\0AAAA"]


@pytest.mark.parametrize("lie", HOSTILE_NAMES)
def test_listing_with_a_path_for_a_name_writes_nothing(smbring_server, tampering_proxy, tmp_path, lie):
    srv = smbring_server()
    (srv["share"] / "dir").mkdir()
    (srv["share"] / "dir" / "AAAAAAAA").write_bytes(b"payload")
    (srv["share"] / "dir" / "other").write_bytes(b"x")
    real, fake = wire.utf16("AAAAAAAA"), wire.utf16(lie)
    assert len(real) == len(fake)

    def rename_entry(frame):
        if command(frame) == wire.QUERY_DIRECTORY and status(frame) == 0:
            return bytearray(bytes(frame).replace(real, fake))
        return frame
    work = tmp_path / "work"
    work.mkdir()
    before = tree_files(tmp_path)

    async def go():
        proxy, c = await through(tampering_proxy, srv, rename_entry)
        try:
            with pytest.raises(ConnectionError, match="not a plain file name"):
                await c.get("dir", str(work / "dest"))
            with pytest.raises(ConnectionError):
                [e async for e in c.listdir("dir")]
        finally:
            await c.close()
            await proxy.__aexit__(None, None, None)
    run(go())
    after = tree_files(tmp_path) - {p for p in tree_files(tmp_path) if p.startswith("share")}
    assert after - before <= {"server.log"}     # nothing new outside the share
    assert os.listdir(work) == []
    if lie.startswith("/") and os.path.exists(lie):
        os.unlink(lie)
        pytest.fail(f"{lie} was written")


def test_a_file_named_dot_dot_is_refused(smbring_server, tampering_proxy, tmp_path):
    srv = smbring_server()
    (srv["share"] / "dir").mkdir()
    (srv["share"] / "dir" / "XY").write_bytes(b"payload")

    def rename_entry(frame):
        if command(frame) == wire.QUERY_DIRECTORY and status(frame) == 0:
            return bytearray(bytes(frame).replace(wire.utf16("XY"), wire.utf16("..")))
        return frame

    async def go():
        proxy, c = await through(tampering_proxy, srv, rename_entry)
        try:
            with pytest.raises(ConnectionError, match="'\\.\\.'"):
                await c.get("dir", str(tmp_path / "dest"))
        finally:
            await c.close()
            await proxy.__aexit__(None, None, None)
    run(go())
    assert not (tmp_path / "dest").exists()
    assert not (tmp_path / "XY").exists()


@pytest.mark.parametrize("dialect", [wire.SMB300, wire.SMB302])
def test_negotiate_altered_in_transit_is_detected_on_smb30(smbring_server, tampering_proxy, dialect):
    """Someone in between hides the server's CAP_ENCRYPTION (a downgrade): the signed
    VALIDATE_NEGOTIATE_INFO exchange shows it."""
    srv = smbring_server()

    def hide_encryption(frame):
        caps = struct.unpack_from("<I", frame, 64 + 24)[0]
        struct.pack_into("<I", frame, 64 + 24, caps & ~wire.CAP_ENCRYPTION)
        return frame

    async def go():
        proxy, c = await through(tampering_proxy, srv, first_only(
            hide_encryption, lambda f: command(f) == wire.NEGOTIATE), dialects=(dialect,))
        await c.close()
        await proxy.__aexit__(None, None, None)
    with pytest.raises(ConnectionError, match="VALIDATE_NEGOTIATE_INFO"):
        run(go())


def test_server_granting_no_credits_is_refused(smbring_server, tampering_proxy):
    srv = smbring_server()

    def no_credits(frame):
        struct.pack_into("<H", frame, 14, 0)
        return frame
    with pytest.raises(ConnectionError, match="too few credits"):
        run(through(tampering_proxy, srv, first_only(no_credits, lambda f: command(f) == wire.NEGOTIATE)))


# ---- fake servers: our own asyncio socket servers, lying from the first answer ----

async def fake_server(answer):
    """A server whose answer(frame) -> bytes (sent as is) or None (nothing sent) is called per frame."""
    async def serve(reader, writer):
        try:
            while True:
                head = await reader.readexactly(4)
                frame = await reader.readexactly(struct.unpack(">I", head)[0])
                out = answer(frame)
                if out is not None:
                    writer.write(out)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def negotiate_response(request, dialect: int, contexts: bytes = b"", count: int = 0) -> bytes:
    req = wire.Header.parse(request)
    h = wire.Header(command=wire.NEGOTIATE, flags=wire.FLAGS_SERVER_TO_REDIR, credits=10,
                    message_id=req.message_id)
    body = struct.pack("<HHHH16sIIIIQQHHI", 65, 1, dialect, count, b"s" * 16, wire.CAP_LARGE_MTU,
                       MiB, MiB, MiB, 0, 0, 0, 0, 128 if count else 0) + contexts
    msg = h.pack() + body
    return struct.pack(">I", len(msg)) + msg


@pytest.mark.parametrize("lie, message", [
    ("huge frame", "frame of"),
    ("dialect not offered", "not offered"),
    ("no preauth", "preauthentication"),
    ("not a response", "SERVER_TO_REDIR"),
    ("closes", "closed the connection"),
    ("silent", "no answer"),
    ("garbage", "not an SMB2 header|bad response header"),
])
def test_fake_server_lies_in_negotiate(lie, message):
    def answer(frame):
        if lie == "huge frame":
            return struct.pack(">I", 0xFFFFFF) + b"\0" * 100
        if lie == "dialect not offered":
            return negotiate_response(frame, wire.SMB210)
        if lie == "no preauth":
            return negotiate_response(frame, wire.SMB311)
        if lie == "not a response":
            out = bytearray(negotiate_response(frame, wire.SMB311))
            struct.pack_into("<I", out, 4 + 16, 0)
            return bytes(out)
        if lie == "closes":
            raise ConnectionError
        if lie == "silent":
            return None
        return struct.pack(">I", 70) + b"\xfeSMB" + b"\xff" * 66

    async def go():
        server, port = await fake_server(answer)
        try:
            await sc.connect("127.0.0.1", port, "u", "p", "s", timeout=2,
                             dialects=(wire.SMB311,) if lie == "dialect not offered" else wire.DIALECTS)
        finally:
            server.close()
    with pytest.raises(ConnectionError, match=message):
        run(go())


@pytest.mark.parametrize("then, message", [("closes", "closed the connection"),
                                           ("stalls", "no answer")])
def test_a_frame_that_stops_halfway_ends_the_wait(then, message):
    """In the middle of a frame the client asks the kernel to wake it only once the rest is
    there (SO_RCVLOWAT): a server that sends half of a large frame and then closes the
    connection, or goes silent, still ends the wait (closed; the request's timeout)."""
    size = 512 * 1024

    async def serve(reader, writer):
        try:
            head = await reader.readexactly(4)
            await reader.readexactly(struct.unpack(">I", head)[0])
            writer.write(struct.pack(">I", size) + b"\xfeSMB" + bytes(size // 2))
            await writer.drain()
            if then == "stalls":
                await asyncio.sleep(30)
        finally:
            writer.close()

    async def go():
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        try:
            await sc.connect("127.0.0.1", server.sockets[0].getsockname()[1], "u", "p", "s",
                             timeout=2)
        finally:
            server.close()
    with pytest.raises(ConnectionError, match=message):
        run(go())


def test_cli_reports_a_hostile_listing(smbring_server, tampering_proxy, tmp_path):
    """The CLI exits 3 with the reason when it refuses the server's answer."""
    srv = smbring_server()
    (srv["share"] / "AAAAAAAA").write_bytes(b"")

    def rename_entry(frame):
        if command(frame) == wire.QUERY_DIRECTORY and status(frame) == 0:
            return bytearray(bytes(frame).replace(wire.utf16("AAAAAAAA"), wire.utf16("../AAAAA")))
        return frame

    async def go():
        async with tampering_proxy(srv["port"], rename_entry) as proxy:
            p = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "smbring.cli", "ls", f"smb://{srv['user']}@127.0.0.1:{proxy.port}/share",
                env=dict(os.environ, SMBRING_PASSWORD=srv["password"]),
                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            out, err = await p.communicate()
            return p.returncode, out.decode(), err.decode()
    code, out, err = run(go())
    assert code == 3, (out, err)
    assert "'../AAAAA'" in err and "refused" in err


@pytest.mark.parametrize("pieces, message", [
    # the length of a frame too large for the client, in two halves: refused once it is whole
    ([struct.pack(">I", 0xFFFFFF)[:2], struct.pack(">I", 0xFFFFFF)[2:]], "frame of"),
    # a frame of garbage and, in the same segment, the start of another: the first is refused
    ([struct.pack(">I", 70) + b"\xfeSMB" + b"\xff" * 66 + struct.pack(">I", 70) + b"\xfeS"],
     "not an SMB2 header|bad response header"),
    # a whole answer to nothing asked, glued to the next frame's length
    ([struct.pack(">I", 64) + bytes(wire.Header(command=wire.NEGOTIATE, flags=wire.FLAGS_SERVER_TO_REDIR,
                                                 message_id=7).pack()) + b"\0\0"],
     "MessageId 7"),
])
def test_answers_received_several_at_a_time_are_each_checked(pieces, message):
    """Between frames, while no READ is waiting, the client takes whatever the socket holds in
    one recv and delivers each whole frame in it, continuing a frame that goes on past it the
    ordinary way: a length split across segments, a bad frame followed by more, and an
    answer to nothing asked are each refused as they would be one frame at a time."""
    async def serve(reader, writer):
        try:
            head = await reader.readexactly(4)
            await reader.readexactly(struct.unpack(">I", head)[0])
            for piece in pieces:
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(0.05)
            await asyncio.sleep(30)
        finally:
            writer.close()

    async def go():
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        try:
            await sc.connect("127.0.0.1", server.sockets[0].getsockname()[1], "u", "p", "s",
                             timeout=2)
        finally:
            server.close()
    with pytest.raises(ConnectionError, match=message):
        run(go())


# ---- listings that go round, names listed twice, times no calendar holds ----

def is_listing(frame, wanted=0) -> bool:
    return command(frame) == wire.QUERY_DIRECTORY and status(frame) == wanted


def listing_forever():
    """A tamper function that answers every end of a listing (STATUS_NO_MORE_FILES) with the
    batches of entries it gave, one after the other, round and round: a listing that never
    ends, and never gives the same batch twice in a row."""
    given, turn = [], []

    def tamper(frame):
        if is_listing(frame):
            given.append(bytes(frame))
        elif is_listing(frame, wire.STATUS_NO_MORE_FILES) and given:
            again = bytearray(given[len(turn) % len(given)])
            turn.append(True)
            again[24:32] = frame[24:32]          # the MessageId of the request answered
            return again
        return frame
    return tamper


@pytest.mark.parametrize("files", [2, 2000], ids=["one-batch", "batches"])
def test_a_listing_that_never_ends_is_refused(smbring_server, tampering_proxy, files):
    """A server that gives entries it gave before instead of the end of the listing would
    keep listdir (and ls, which collects every name) going for ever."""
    srv = smbring_server()
    (srv["share"] / "dir").mkdir()
    for i in range(files):
        (srv["share"] / "dir" / f"file-{i:04}").write_bytes(b"")

    async def go():
        proxy, c = await through(tampering_proxy, srv, listing_forever())
        try:
            names = []
            with pytest.raises(sc.ProtocolError, match="goes round"):
                async for entry in c.listdir("dir"):
                    names.append(entry.name)
            assert sorted(names) == [f"file-{i:04}" for i in range(files)]
        finally:
            await c.close()
            await proxy.__aexit__(None, None, None)
    run(go())


def listing_twice(real: str, fake: str):
    """Every listing names `fake` where the server said `real` (a name it also lists)."""
    def tamper(frame):
        if is_listing(frame):
            return bytearray(bytes(frame).replace(wire.utf16(real), wire.utf16(fake)))
        return frame
    return tamper


@pytest.mark.parametrize("kind", ["file", "dir"])
def test_a_name_listed_twice_fails_the_get_as_a_lie(smbring_server, tampering_proxy, tmp_path, kind):
    """get refuses a directory that lists one name twice as the server's lie (not as a local
    file that happened to exist), and leaves nothing behind."""
    srv = smbring_server()
    (srv["share"] / "dir").mkdir()
    (srv["share"] / "dir" / "aa").write_bytes(b"x")
    if kind == "dir":
        (srv["share"] / "dir" / "bb").mkdir()
    else:
        (srv["share"] / "dir" / "bb").write_bytes(b"y")
    work = tmp_path / "work"
    work.mkdir()

    async def go():
        proxy, c = await through(tampering_proxy, srv, listing_twice("bb", "aa"))
        try:
            with pytest.raises(sc.ProtocolError, match="'aa' twice"):
                await c.get("dir", str(work / "dest"))
        finally:
            await c.close()
            await proxy.__aexit__(None, None, None)
    run(go())
    assert os.listdir(work) == []


async def cli_ls(srv, tampering_proxy, tamper, *options):
    async with tampering_proxy(srv["port"], tamper) as proxy:
        p = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "smbring.cli", "ls",
            f"smb://{srv['user']}@127.0.0.1:{proxy.port}/share/dir", *options,
            env=dict(os.environ, SMBRING_PASSWORD=srv["password"]),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = await p.communicate()
        return p.returncode, out.decode(), err.decode()


def test_cli_ls_refuses_a_name_listed_twice(smbring_server, tampering_proxy):
    srv = smbring_server()
    (srv["share"] / "dir").mkdir()
    for name in ("aa", "bb"):
        (srv["share"] / "dir" / name).write_bytes(b"x")
    code, out, err = run(cli_ls(srv, tampering_proxy, listing_twice("bb", "aa")))
    assert code == 3, (out, err)
    assert "'aa' twice" in err


def listed_times(nt_time: int):
    """Every entry of a listing is said to have been created and written at `nt_time`."""
    def tamper(frame):
        if is_listing(frame):
            pos = struct.unpack_from("<H", frame, 64 + 2)[0]
            while True:
                struct.pack_into("<Q", frame, pos + 8, nt_time)       # CreationTime
                struct.pack_into("<Q", frame, pos + 24, nt_time)      # LastWriteTime
                step = struct.unpack_from("<I", frame, pos)[0]
                if not step:
                    break
                pos += step
        return frame
    return tamper


@pytest.mark.parametrize("nt_time", [0xFFFFFFFFFFFFFFFF, 0x7FFFFFFFFFFFFFFF], ids=["max", "signed-max"])
@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_cli_ls_shows_times_no_calendar_holds(smbring_server, tampering_proxy, nt_time, as_json):
    """A time past the year 9999 (any 64-bit value may come) is shown as unknown; the rest of
    the listing is still shown."""
    srv = smbring_server()
    (srv["share"] / "dir").mkdir()
    (srv["share"] / "dir" / "f").write_bytes(b"x")
    code, out, err = run(cli_ls(srv, tampering_proxy, listed_times(nt_time),
                                *(["--json"] if as_json else [])))
    assert code == 0, (out, err)
    if as_json:
        import json
        [entry] = json.loads(out)
        assert entry["name"] == "f" and entry["modified"] is None and entry["created"] is None
    else:
        assert out.split()[-1] == "f" and "????-??-??" in out


@pytest.mark.parametrize("lie, message", [
    ("interim, then nothing", "no answer to CREATE"),
    ("another command", "CLOSE response to a CREATE request"),
    ("compounded", "compounded response"),
])
def test_an_answer_that_is_not_the_one_awaited_ends_the_wait(smbring_server, tampering_proxy, lie, message):
    """An interim STATUS_PENDING whose final answer never comes ends with the request's
    timeout (started again by the interim, once); an answer of another command, or one that
    claims a next answer in the same frame (NextCommand: the client never compounds), is
    refused."""
    srv = smbring_server()
    (srv["share"] / "f").write_bytes(b"x")

    def change(frame):
        if lie == "another command":
            struct.pack_into("<H", frame, 12, wire.CLOSE)
            return frame
        if lie == "compounded":
            struct.pack_into("<I", frame, 20, 8)          # NextCommand: back into the header
            return frame
        struct.pack_into("<I", frame, 8, wire.STATUS_PENDING)
        struct.pack_into("<I", frame, 16, struct.unpack_from("<I", frame, 16)[0] | wire.FLAGS_ASYNC)
        return frame[:64 + 9]

    async def go():
        proxy, c = await through(tampering_proxy, srv, first_only(change, lambda f: command(f) == wire.CREATE))
        for channel in c.channels:      # short only now: a loaded machine may take 2 s to log on
            channel.timeout = 2
        try:
            with pytest.raises(sc.ProtocolError, match=message):
                await c.open("f")           # (a CREATE alone: stat sends its CLOSE with it)
        finally:
            await c.close()
            await proxy.__aexit__(None, None, None)
    run(go())


def interim_to(request) -> bytes:
    """An interim answer (STATUS_PENDING, async, no credits) to `request`."""
    header = bytearray(request[:64])
    struct.pack_into("<I", header, 8, wire.STATUS_PENDING)
    struct.pack_into("<H", header, 14, 0)
    flags = struct.unpack_from("<I", header, 16)[0] & ~(wire.FLAGS_SIGNED | wire.FLAGS_RELATED)
    struct.pack_into("<I", header, 16, flags | wire.FLAGS_SERVER_TO_REDIR | wire.FLAGS_ASYNC)
    struct.pack_into("<I", header, 20, 0)                     # (alone in its frame)
    struct.pack_into("<Q", header, 32, 0x51)                  # AsyncId, where the tree id was
    header[48:64] = bytes(16)
    return bytes(header) + wire.error_body()


def interims_on_create(srv, tampering_proxy, before: float, then: tuple[float, ...], between: float):
    """Stats "f" through a proxy that holds the CREATE `before` seconds, answers it with
    an interim STATUS_PENDING after each of `then`'s waits, then hands it to the server
    `between` seconds after the last; the client's timeout is 2 s. The stat's result. (The
    stat's CLOSE goes with its CREATE, in one compound: its timer starts again too.)"""
    async def intercept(frame):
        if command(frame) == wire.CREATE:
            await asyncio.sleep(before)
            for wait in then:
                await asyncio.sleep(wait)
                proxy.answer(interim_to(frame))
            await asyncio.sleep(between)
        return frame

    async def go():
        nonlocal proxy
        proxy = tampering_proxy(srv["port"], lambda f: f, intercept)
        async with proxy:
            c = await sc.connect("127.0.0.1", proxy.port, srv["user"], srv["password"], srv["name"])
            for channel in c.channels:      # short only now: a loaded machine may take 2 s to log on
                channel.timeout = 2
            try:
                return await c.stat("f")
            finally:
                await c.close()
    proxy = None
    return run(go())


def test_an_interim_answer_starts_the_request_s_timer_again(smbring_server, tampering_proxy):
    """MS-SMB2 3.2.5.1.5: a client SHOULD extend a request's timer once the server says it is
    at work on it. The CREATE's interim answer comes 1.4 s after it was sent and its result
    1.4 s after that, 2.8 s in all against a timeout of 2 s: the stat succeeds. (Before, the
    timer ran from the request on: ChannelTimeout at 2 s.)"""
    srv = smbring_server()
    (srv["share"] / "f").write_bytes(b"x" * 5)
    assert interims_on_create(srv, tampering_proxy, 0, (1.4,), 1.4).size == 5


def test_a_second_interim_answer_to_one_request_is_refused(smbring_server, tampering_proxy):
    """One STATUS_PENDING a request, as Samba's client holds servers to: a second would
    start its timer again and again (a server keeping a request waiting for ever)."""
    srv = smbring_server()
    (srv["share"] / "f").write_bytes(b"x")
    with pytest.raises(sc.ProtocolError, match="second interim answer to CREATE"):
        interims_on_create(srv, tampering_proxy, 0, (0.1, 0.1), 0)


def test_a_server_granting_every_credit_it_can_is_believed_only_so_far(smbring_server, tampering_proxy,
                                                                       tmp_path):
    """Every answer grants 65535 credits: the client holds at most CREDIT_CAP of them, and a
    download goes on as usual (within its depth)."""
    from smbring.client.channel import CREDIT_CAP
    srv = smbring_server()
    (srv["share"] / "big").write_bytes(os.urandom(3 * MiB))

    def lavish(frame):
        # after the logon (its answers are hashed into the keys and signed) and but for
        # signed answers (the 3.1.1 TREE_CONNECT)
        if command(frame) > wire.SESSION_SETUP and \
                not struct.unpack_from("<I", frame, 16)[0] & wire.FLAGS_SIGNED:
            struct.pack_into("<H", frame, 14, 0xFFFF)
        return frame

    async def go():
        proxy, c = await through(tampering_proxy, srv, lavish)
        try:
            await c.get("big", str(tmp_path / "big"))
            assert c.channels[0].credits_held <= CREDIT_CAP
            assert c.peak_in_flight <= 2 * c.read_depth * 64
        finally:
            await c.close()
            await proxy.__aexit__(None, None, None)
    run(go())
    assert (tmp_path / "big").read_bytes() == (srv["share"] / "big").read_bytes()


def test_a_tree_deeper_than_the_client_follows_is_refused(smbring_server, tmp_path):
    """A server could nest directories without end (a new one in every listing): get follows
    MAX_DEPTH levels, then refuses the tree and leaves nothing behind."""
    from smbring.client.transfer import MAX_DEPTH
    srv = smbring_server()
    deep = srv["share"] / "top"
    for _ in range(MAX_DEPTH + 1):
        deep = deep / "d"
    deep.mkdir(parents=True)
    work = tmp_path / "work"
    work.mkdir()

    async def go():
        c = await sc.connect("127.0.0.1", srv["port"], srv["user"], srv["password"], srv["name"])
        try:
            with pytest.raises(sc.ProtocolError, match="deeper than"):
                await c.get("top", str(work / "dest"))
        finally:
            await c.close()
    run(go())
    assert os.listdir(work) == []


@pytest.mark.parametrize("dialect", [wire.SMB210, wire.SMB311])
def test_a_logon_accepted_before_the_password_was_sent_is_refused(smbring_server, tampering_proxy, dialect):
    """A server (or someone in between) that answers the first SESSION_SETUP, the one that only
    asks for a challenge, with STATUS_SUCCESS has proved nothing: the client refuses it, on a
    dialect with no signed SESSION_SETUP as well."""
    srv = smbring_server()

    def success(frame):
        struct.pack_into("<I", frame, 8, wire.STATUS_SUCCESS)
        return frame

    with pytest.raises(sc.ProtocolError, match="before the mechanism completed"):
        run(through(tampering_proxy, srv, first_only(
            success, lambda f: command(f) == wire.SESSION_SETUP and
            status(f) == wire.STATUS_MORE_PROCESSING_REQUIRED), dialects=(dialect,)))


def test_a_server_that_stops_granting_credits_fails_an_upload_clearly(smbring_server, tampering_proxy,
                                                                       tmp_path):
    """WRITE answers that grant no credits: the upload's pump spends what it holds, then,
    with none of its WRITEs in flight, sends the next one the ordinary way, which finds the
    credits short with nothing in flight and refuses the server, rather than waiting forever."""
    srv = smbring_server()
    local = tmp_path / "big"
    local.write_bytes(os.urandom(48 * MiB))

    def stingy(frame):
        if command(frame) == wire.WRITE:
            struct.pack_into("<H", frame, 14, 0)
        return frame

    async def go():
        proxy, c = await through(tampering_proxy, srv, stingy)
        try:
            # (a WRITE of io_size, 1 MiB, refused for want of its 16 credits: not the CLOSE
            # after it, which needs one)
            with pytest.raises(sc.ProtocolError, match="granted too few credits: 0 held, 16 needed"):
                await c.put(str(local), "big")
        finally:
            await c.close()
            await proxy.__aexit__(None, None, None)
    run(go())
    assert not (srv["share"] / "big").exists()


def test_credits_that_never_come_back_end_the_wait_with_the_timeout(smbring_server, tampering_proxy):
    """The server grants no more credits and leaves a request unanswered whose caller gave up
    waiting for it (cancelled): its credit stays in flight, so the next request, with none
    at hand, has something to wait for that never comes. It ends with the channel's timeout
    and a clear error instead of waiting for ever."""
    srv = smbring_server()
    (srv["share"] / "f").write_bytes(b"x")
    mode = {"grant": True, "drop": False}

    def tamper(frame):
        if command(frame) > wire.TREE_CONNECT and \
                not struct.unpack_from("<I", frame, 16)[0] & wire.FLAGS_SIGNED:
            if mode["drop"]:
                return None
            if not mode["grant"]:
                struct.pack_into("<H", frame, 14, 0)
        return frame

    async def go():
        proxy, c = await through(tampering_proxy, srv, tamper)
        channel = c.channels[0]
        try:
            async with await c.open("f") as f:
                mode["grant"] = False
                while channel.credits_held > 1:     # spend what was granted, one at a time
                    await f.stat()
                mode["drop"] = True
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(f.stat(), 0.3)   # given up: its credit stays out
                channel.timeout = 1
                with pytest.raises(sc.ProtocolError, match="no credits came back within 1 s"):
                    await asyncio.wait_for(f.stat(), 10)
                assert not c.connected
        finally:
            await c.close()
            await proxy.__aexit__(None, None, None)
    run(go())


# names a terminal would act on: colours and screen clearing (CSI, also as the one C1 byte),
# a bell, a line of its own, a right-to-left override that shows "txt.exe" as "exe.txt",
# an OSC sequence (a window title, a hyperlink) ended by BEL
TERMINAL_NAMES = ["\x1b[2J\x1b[31mred", "\x9b31mred", "bell\x07", "new\nline", "a\u202etxt.exe",
                  "\x1b]0;pwned\x07"]
RAW = ("\x1b", "\x9b", "\x07", "\u202e")


def terminal_listing(names):
    """Every listing names each of `names` where the server said name-NN (the same length)."""
    def tamper(frame):
        if is_listing(frame):
            for i, name in enumerate(names):
                frame = bytearray(bytes(frame).replace(wire.utf16(f"{i:02}".ljust(len(name), "-")),
                                                       wire.utf16(name)))
        return frame
    return tamper


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_cli_ls_never_hands_the_terminal_a_control_character(smbring_server, tampering_proxy, as_json):
    """Names the server lists are printed with their control characters, C1 bytes and bidi
    overrides escaped (a terminal would act on them); --json stays valid JSON that gives the
    names back exactly."""
    srv = smbring_server()
    (srv["share"] / "dir").mkdir()
    for i, name in enumerate(TERMINAL_NAMES):
        (srv["share"] / "dir" / f"{i:02}".ljust(len(name), "-")).write_bytes(b"x")
    code, out, err = run(cli_ls(srv, tampering_proxy, terminal_listing(TERMINAL_NAMES),
                                *(["--json"] if as_json else [])))
    assert code == 0, (out, err)
    assert not any(c in out + err for c in RAW)
    if as_json:
        import json
        assert sorted(e["name"] for e in json.loads(out)) == sorted(TERMINAL_NAMES)
    else:
        assert len(out.splitlines()) == len(TERMINAL_NAMES)      # a name never starts a line
        assert "\\x1b[2J\\x1b[31mred" in out and "a\\u202etxt.exe" in out


def test_cli_errors_never_hand_the_terminal_a_control_character(smbring_server, tampering_proxy):
    """A hostile name in the reason the CLI gives for refusing a listing is escaped too."""
    srv = smbring_server()
    (srv["share"] / "dir").mkdir()
    for name in ("aaaaaa", "bbbbbb"):
        (srv["share"] / "dir" / name).write_bytes(b"x")
    first, second = listing_twice("aaaaaa", "\x1b[2J\x07!"), listing_twice("bbbbbb", "\x1b[2J\x07!")
    code, out, err = run(cli_ls(srv, tampering_proxy, lambda f: second(first(f))))
    assert code == 3, (out, err)
    assert "twice" in err and not any(c in out + err for c in RAW)


def test_get_never_writes_through_a_link_already_in_the_destination(smbring_server, tmp_path):
    """A destination that is a symbolic link, to a directory or a file outside: a tree is
    refused (it is never merged into what the link leads to), a file replaces the link itself
    and leaves its target as it was. (A tree is assembled in a new staging directory, so no
    link can be inside it.)"""
    srv = smbring_server()
    (srv["share"] / "dir").mkdir()
    (srv["share"] / "dir" / "passwd").write_bytes(b"from the server")
    (srv["share"] / "f").write_bytes(b"from the server")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_bytes(b"mine")
    work = tmp_path / "work"
    work.mkdir()
    (work / "tree").symlink_to(outside)
    (work / "file").symlink_to(outside / "victim")

    async def go():
        c = await sc.connect("127.0.0.1", srv["port"], srv["user"], srv["password"], srv["name"])
        try:
            with pytest.raises(FileExistsError):
                await c.get("dir", str(work / "tree"))
            await c.get("f", str(work / "file"))
        finally:
            await c.close()
    run(go())
    assert sorted(os.listdir(outside)) == ["victim"] and (outside / "victim").read_bytes() == b"mine"
    assert not (work / "file").is_symlink() and (work / "file").read_bytes() == b"from the server"
    assert sorted(os.listdir(work)) == ["file", "tree"]


def test_a_name_too_long_for_the_local_file_system_fails_the_get_and_leaves_nothing(
        smbring_server, tampering_proxy, tmp_path):
    """200 characters are 200 UTF-16 units for the share, but 600 bytes of UTF-8 here, past
    the local file system's 255: the get fails (a local error, not the server's lie) and its
    staging directory is removed."""
    srv = smbring_server()
    (srv["share"] / "dir").mkdir()
    (srv["share"] / "dir" / ("x" * 200)).write_bytes(b"x")
    rename = listing_twice("x" * 200, "\u20ac" * 200)
    work = tmp_path / "work"
    work.mkdir()

    async def go():
        proxy, c = await through(tampering_proxy, srv, rename)
        try:
            with pytest.raises(OSError) as raised:
                await c.get("dir", str(work / "dest"))
            assert not isinstance(raised.value, ConnectionError) and c.connected
        finally:
            await c.close()
            await proxy.__aexit__(None, None, None)
    run(go())
    assert os.listdir(work) == []


def test_a_lie_in_one_of_a_trees_small_files_ends_every_download_and_leaves_nothing(
        smbring_server, tampering_proxy, tmp_path):
    """A tree of 200 small files, downloaded several at a time, through a proxy that cuts the
    50th READ answer short: the get fails as a short read, no download goes on writing
    after it (the staging directory is gone and stays gone), and nothing is presented."""
    srv = smbring_server()
    (srv["share"] / "tree").mkdir()
    for i in range(200):
        (srv["share"] / "tree" / f"f{i:03d}").write_bytes(os.urandom(5000))
    dest = tmp_path / "dest"
    dest.mkdir()
    reads = []

    def tamper(frame):
        # (each small file's READ comes in a compound answer, after its CREATE)
        for start, _end in responses_in(frame):
            if is_read_ok(frame[start:]):
                reads.append(1)
                if len(reads) == 50:        # says 1000 bytes fewer than the file's size
                    length = struct.unpack_from("<I", frame, start + 64 + 4)[0]
                    struct.pack_into("<I", frame, start + 64 + 4, length - 1000)
        return frame

    async def go():
        proxy, c = await through(tampering_proxy, srv, tamper)
        try:
            with pytest.raises(ConnectionError, match="short read"):
                await c.get("tree", str(dest / "tree"))
            await asyncio.sleep(0.5)        # (a download still running would write now)
        finally:
            await c.close()
            await proxy.__aexit__(None, None, None)
    run(go())
    assert os.listdir(dest) == []
