"""smbring.client against Samba's smbd: logon, signing, encryption, 64 MiB byte-exact
transfers, listing, rename, remove."""
import asyncio
import hashlib
import os

import pytest

import smbring.client as sc
from smbring.smb import security, wire

MiB = 1024 * 1024


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 300))


async def connected(srv, **kw):
    return await sc.connect(srv["host"], srv["port"], srv["user"], srv["password"], srv["name"], **kw)


def _digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 * MiB):
            h.update(chunk)
    return h.hexdigest()


@pytest.mark.parametrize("dialect", [wire.SMB202, wire.SMB210, wire.SMB300, wire.SMB302, wire.SMB311])
def test_connect_each_dialect(samba_server, dialect):
    srv = samba_server()

    async def go():
        async with await connected(srv, dialects=(dialect,)) as c:
            assert c.dialect == dialect
            await c.mkdir("d")
            async with await c.open("d/f", "w") as f:
                await f.write(b"abc" * 50_000)
            async with await c.open("d/f") as f:
                return await f.read()
    assert run(go()) == b"abc" * 50_000


def test_wrong_password(samba_server):
    srv = samba_server()
    with pytest.raises(PermissionError):
        run(sc.connect(srv["host"], srv["port"], srv["user"], "wrong", srv["name"]))


def test_signing_mandatory(samba_server):
    srv = samba_server("    server signing = mandatory")

    async def go():
        async with await connected(srv) as c:
            assert c.signing
            async with await c.open("s", "w") as f:
                await f.write(os.urandom(2 * MiB))
            return (await c.stat("s")).size
    assert run(go()) == 2 * MiB


@pytest.mark.parametrize("cipher", [security.AES_128_GCM, security.AES_256_GCM,
                                    security.AES_128_CCM, security.AES_256_CCM])
def test_client_encryption_each_cipher(samba_server, cipher):
    srv = samba_server()

    async def go():
        async with await connected(srv, encrypt=True, ciphers=(cipher,)) as c:
            assert c.encrypting and c.keys.cipher == cipher
            data = os.urandom(3 * MiB + 1)
            async with await c.open("e", "w") as f:
                await f.write(data)
            async with await c.open("e") as f:
                return data == await f.read()
    assert run(go())


def test_encryption_required_by_samba(samba_server):
    srv = samba_server("    server smb encrypt = required")

    async def go():
        async with await connected(srv) as c:
            assert c.encrypting
            await c.mkdir("d")
            return [e.name async for e in c.listdir("")]
    assert run(go()) == ["d"]


@pytest.mark.parametrize("options", [{}, {"sign": True}])
def test_put_get_64_mib_byte_exact(samba_server, tmp_path, options):
    srv = samba_server()
    src = tmp_path / "src.bin"
    with open(src, "wb") as f:
        for _ in range(16):
            f.write(os.urandom(4 * MiB))
        f.write(b"tail")

    async def go():
        async with await connected(srv, **options) as c:
            await c.put(str(src), "big.bin")
            await c.get("big.bin", str(tmp_path / "back.bin"))
            return c.peak_in_flight
    peak = run(go())
    assert _digest(srv["share"] / "big.bin") == _digest(src) == _digest(tmp_path / "back.bin")
    assert peak > 16


def test_listing_rename_remove(samba_server, tmp_path):
    srv = samba_server()

    async def go():
        async with await connected(srv) as c:
            await c.mkdir("dir")
            for i in range(300):
                async with await c.open(f"dir/name-{i:04d}.txt", "w") as f:
                    await f.write(str(i).encode())
            listed = {e.name: e.size async for e in c.listdir("dir")}
            assert listed == {f"name-{i:04d}.txt": len(str(i)) for i in range(300)}
            await c.rename("dir/name-0000.txt", "renamed.txt")
            with pytest.raises(FileExistsError):
                await c.rename("dir/name-0001.txt", "renamed.txt")
            await c.rename("dir/name-0001.txt", "renamed.txt", replace=True)
            await c.remove("renamed.txt")
            with pytest.raises(FileNotFoundError):
                await c.stat("renamed.txt")
            with pytest.raises(OSError, match="DIRECTORY_NOT_EMPTY"):
                await c.rmdir("dir")
            await c.get("dir", str(tmp_path / "copy"))
            async for e in c.listdir("dir"):
                await c.remove(f"dir/{e.name}")
            await c.rmdir("dir")
            return [e.name async for e in c.listdir("")]
    assert run(go()) == []
    assert len(os.listdir(tmp_path / "copy")) == 298
    assert (tmp_path / "copy" / "name-0299.txt").read_text() == "299"


def test_few_credits_limit_what_is_in_flight(samba_server, tmp_path):
    """With `smb2 max credits = 40` Samba grants fewer credits than 8 x 1 MiB READs need (16
    each): the client waits for credits instead of going beyond what was granted (Samba drops
    a connection that does)."""
    srv = samba_server("    smb2 max credits = 40")
    data = os.urandom(16 * MiB + 7)
    (tmp_path / "src").write_bytes(data)

    async def go():
        async with await connected(srv) as c:
            await c.put(str(tmp_path / "src"), "f")
            await c.get("f", str(tmp_path / "back"))
            return c.peak_in_flight
    peak = run(go())
    assert (tmp_path / "back").read_bytes() == data
    assert peak > 16
