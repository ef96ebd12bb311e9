"""smbring.client against a real `smbring serve`: logon per dialect, signing, encryption per
cipher, credits, file objects, the namespace calls, and 64 MiB byte-exact transfers."""
import asyncio
import hashlib
import os
import stat

import pytest

import smbring.client as sc
from smbring.smb import security, wire

MiB = 1024 * 1024


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 300))


async def connected(srv, **kw):
    return await sc.connect(srv["host"], srv["port"], srv["user"], srv["password"], srv["name"], **kw)


@pytest.mark.parametrize("dialect", [wire.SMB202, wire.SMB210, wire.SMB300, wire.SMB302, wire.SMB311])
def test_each_dialect_logs_on_and_moves_data(smbring_server, dialect):
    srv = smbring_server()

    async def go():
        async with await connected(srv, dialects=(dialect,)) as c:
            assert c.dialect == dialect
            async with await c.open("f.bin", "w") as f:
                await f.write(b"x" * 200_000)
            async with await c.open("f.bin") as f:
                assert await f.read() == b"x" * 200_000
    run(go())
    assert (srv["share"] / "f.bin").read_bytes() == b"x" * 200_000


def test_wrong_password_is_a_logon_failure(smbring_server):
    srv = smbring_server()
    with pytest.raises(PermissionError, match="LOGON_FAILURE"):
        run(sc.connect(srv["host"], srv["port"], srv["user"], "not the password", srv["name"]))


def test_unknown_share(smbring_server):
    srv = smbring_server()
    with pytest.raises(sc.SMBError, match="BAD_NETWORK_NAME"):
        run(sc.connect(srv["host"], srv["port"], srv["user"], srv["password"], "nosuchshare"))


def test_signing_required_by_the_server_is_followed(smbring_server):
    srv = smbring_server("--signing-required")

    async def go():
        async with await connected(srv) as c:
            assert c.signing and not c.encrypting
            await c.mkdir("signed")
            assert [e.name async for e in c.listdir("")] == ["signed"]
    run(go())


@pytest.mark.parametrize("dialect", [wire.SMB210, wire.SMB300, wire.SMB311])
def test_signing_asked_by_the_client(smbring_server, dialect):
    srv = smbring_server()

    async def go():
        async with await connected(srv, sign=True, dialects=(dialect,)) as c:
            assert c.signing
            await c.put(str(_random_file(srv["share"].parent / "up", MiB + 3)), "up")
    run(go())
    assert (srv["share"] / "up").read_bytes() == (srv["share"].parent / "up").read_bytes()


@pytest.mark.parametrize("cipher", [security.AES_128_GCM, security.AES_256_GCM,
                                    security.AES_128_CCM, security.AES_256_CCM])
def test_encryption_with_each_cipher(smbring_server, cipher):
    srv = smbring_server()

    async def go():
        async with await connected(srv, encrypt=True, ciphers=(cipher,)) as c:
            assert c.encrypting and c.keys.cipher == cipher
            async with await c.open("sealed", "w") as f:
                await f.write(os.urandom(3 * MiB))
            return (await c.stat("sealed")).size
    assert run(go()) == 3 * MiB


def test_encryption_required_by_the_server(smbring_server):
    srv = smbring_server("--encrypt")

    async def go():
        async with await connected(srv) as c:
            assert c.encrypting
            await c.mkdir("d")
    run(go())


def test_encryption_on_smb300_uses_aes_128_ccm(smbring_server):
    srv = smbring_server()

    async def go():
        async with await connected(srv, encrypt=True, dialects=(wire.SMB300,)) as c:
            assert c.keys.cipher == security.AES_128_CCM
            await c.mkdir("d")
    run(go())


def test_encrypt_refused_when_the_dialect_has_no_cipher(smbring_server):
    srv = smbring_server()
    with pytest.raises(ConnectionError, match="no cipher"):
        run(connected(srv, encrypt=True, dialects=(wire.SMB210,)))


def _random_file(path, size):
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 4 * MiB)
            f.write(os.urandom(n))
            left -= n
    return path


def _digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 * MiB):
            h.update(chunk)
    return h.hexdigest()


@pytest.mark.parametrize("options", [{}, {"encrypt": True}])
def test_put_and_get_64_mib_byte_exact_with_reads_in_flight(smbring_server, tmp_path, options):
    srv = smbring_server()
    src = _random_file(tmp_path / "src.bin", 64 * MiB + 12345)

    async def go():
        async with await connected(srv, **options) as c:
            assert await c.put(str(src), "big.bin") == "big.bin"
            uploaded_peak = c.peak_in_flight
            await c.get("big.bin", str(tmp_path / "back.bin"))
            return uploaded_peak, c.peak_in_flight
    uploaded_peak, peak = run(go())
    assert _digest(srv["share"] / "big.bin") == _digest(src)
    assert _digest(tmp_path / "back.bin") == _digest(src)
    # pipelined: several 1 MiB requests (16 credits each) were in flight at once
    assert uploaded_peak > 16 and peak > 16
    assert not [p for p in os.listdir(tmp_path) if ".part" in p]
    assert not [p for p in os.listdir(srv["share"]) if ".part" in p]


def test_file_object_calls(smbring_server):
    srv = smbring_server()

    async def go():
        async with await connected(srv) as c:
            async with await c.open("f", "w+") as f:
                assert await f.write(b"0123456789") == 10
                assert await f.seek(2) == 2
                assert await f.read(3) == b"234"
                assert f.tell() == 5
                assert await f.seek(-1, os.SEEK_END) == 9
                assert await f.read() == b"9"
                assert await f.read(5) == b""            # at the end: nothing, no error
                await f.truncate(4)
                assert (await f.stat()).size == 4
                await f.set_times(mtime_ns=1_000_000_000 * 1_600_000_000)
                st = await f.stat()
                assert st.modified_ns == 1_000_000_000 * 1_600_000_000 and not st.is_dir
            async with await c.open("f", "a") as f:
                await f.write(b"END")
            async with await c.open("f", "rb") as f:
                assert await f.read() == b"0123END"
            with pytest.raises(FileExistsError):
                await c.open("f", "x")
            with pytest.raises(FileNotFoundError):
                await c.open("missing", "r")
            with pytest.raises(ValueError):
                await c.open("f", "rt")
            async with await c.open("f", "r+") as f:       # last, so that no write moves it
                await f.set_times(mtime_ns=1_000_000_000 * 1_600_000_000)
    run(go())
    assert (srv["share"] / "f").read_bytes() == b"0123END"
    assert (srv["share"] / "f").stat().st_mtime == 1_600_000_000


def test_namespace_calls(smbring_server, tmp_path):
    srv = smbring_server()

    async def go():
        async with await connected(srv) as c:
            await c.mkdir("dir")
            await c.mkdir("dir/sub")
            async with await c.open("dir/a.txt", "w") as f:
                await f.write(b"hello")
            names = {e.name: e for e in [e async for e in c.listdir("dir")]}
            assert set(names) == {"sub", "a.txt"}
            assert names["sub"].is_dir and names["a.txt"].size == 5
            await c.rename("dir/a.txt", "dir/sub/b.txt")
            assert [e.name async for e in c.listdir("dir/sub")] == ["b.txt"]
            with pytest.raises(OSError, match="DIRECTORY_NOT_EMPTY"):
                await c.rmdir("dir/sub")
            await c.get("dir", str(tmp_path / "copy"))
            await c.remove("dir/sub/b.txt")
            await c.rmdir("dir/sub")
            await c.rmdir("dir")
            assert [e async for e in c.listdir("")] == []
    run(go())
    assert (tmp_path / "copy" / "sub" / "b.txt").read_bytes() == b"hello"


def test_many_files_listed_across_several_responses(smbring_server):
    srv = smbring_server()
    names = {f"file-with-a-longer-name-{i:05d}.dat" for i in range(1500)}
    for n in names:
        (srv["share"] / n).write_bytes(b"")

    async def go():
        async with await connected(srv) as c:
            return {e.name async for e in c.listdir("")}
    assert run(go()) == names


def test_concurrent_requests_share_the_credit_window(smbring_server):
    srv = smbring_server()
    for i in range(40):
        (srv["share"] / f"f{i}").write_bytes(bytes([i]) * 70_000)

    async def go():
        async with await connected(srv) as c:
            async def one(i):
                async with await c.open(f"f{i}") as f:
                    return await f.read()
            results = await asyncio.gather(*(one(i) for i in range(40)))
            return results, c.peak_in_flight
    results, peak = run(go())
    assert all(r == bytes([i]) * 70_000 for i, r in enumerate(results))
    assert peak > 2


def test_client_stays_within_a_small_credit_window(tmp_path):
    """`smb2 max credits = 40`: at most two 1 MiB requests (16 credits each) fit; the server
    drops a connection that uses a MessageId outside its window, so the transfer finishing
    byte-exact shows the client waited for credits."""
    from servers import PASSWORD, USER, free_port, spawn, stop
    share = tmp_path / "share"
    share.mkdir()
    port = free_port()
    conf = tmp_path / "smb.conf"
    conf.write_text(f"[global]\nlisten = 127.0.0.1:{port}\nsmb2 max credits = 40\n"
                    f"[share]\npath = {share}\nread only = no\n")
    proc, port, _log = spawn(tmp_path, "--config", str(conf), port=port)
    data = os.urandom(16 * MiB + 7)
    (tmp_path / "src").write_bytes(data)

    async def go():
        async with await sc.connect("127.0.0.1", port, USER, PASSWORD, "share") as c:
            await c.put(str(tmp_path / "src"), "f")
            await c.get("f", str(tmp_path / "back"))
            return c.peak_in_flight
    try:
        peak = run(go())
    finally:
        stop(proc)
    assert (tmp_path / "back").read_bytes() == data
    assert 16 < peak <= 40


def test_guest_session_refused_unless_allowed(smbring_server):
    """A server that maps an unknown user to guest gives no keys: nothing could be signed or
    sealed, and the credentials were not accepted. Refused unless allow_guest."""
    srv = smbring_server("--guest")

    async def go(**kw):
        async with await sc.connect(srv["host"], srv["port"], "nobody-here", "x", srv["name"], **kw) as c:
            return c.guest
    with pytest.raises(PermissionError, match="guest"):
        run(go())
    assert run(go(allow_guest=True)) is True
    with pytest.raises(ConnectionError, match="guest"):
        run(go(allow_guest=True, sign=True))


def test_a_download_never_replaces_a_device_or_fifo(smbring_server, tmp_path):
    """A get renames a complete file over its destination: given a FIFO (or /dev/null, to
    throw the data away) it would leave a regular file where the special file was. Refused,
    the special file left as it was, nothing staged beside it."""
    srv = smbring_server()
    (srv["share"] / "f.bin").write_bytes(b"x" * 4096)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    async def go():
        async with await connected(srv) as c:
            with pytest.raises(OSError, match="not a regular file"):
                await c.get("f.bin", str(fifo))
    run(go())
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir() if "smbring" in p.name) == []
