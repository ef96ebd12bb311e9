"""The client's own NTLMv2 logon (smbring.smb.ntlm_initiator) against real servers, `smbring
serve` and Samba's smbd: logons, signed, sealed and multichannel sessions (the binding logon),
wrong passwords, anonymous logons; a server whose CHALLENGE or mechListMIC lies (through a
tampering proxy) is refused; pyspnego is imported only for auth="negotiate"."""
import asyncio
import os
import struct
import subprocess
import sys

import pytest

import smbring.client as sc
from smbring.smb import ntlm_crypto as nc
from smbring.smb import wire

MiB = 1024 * 1024


@pytest.fixture(autouse=True)
def no_kerberos_realm(monkeypatch):
    """No Kerberos configuration: a token damaged into naming Kerberos makes pyspnego get a
    ticket with the password (kinit), which with the system's krb5.conf asks its default
    realm's KDCs on the network (a wait of minutes where DNS does not answer); with none it
    fails at once. (Kerberos logons are tested against a real KDC elsewhere.)"""
    monkeypatch.setenv("KRB5_CONFIG", os.devnull)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 300))


async def connected(srv, port=None, **kw):
    return await sc.connect(srv["host"], port or srv["port"], srv["user"], srv["password"], srv["name"], **kw)


async def round_trip(c, size=3 * MiB + 7) -> bool:
    data = os.urandom(size)
    async with await c.open("rt.bin", "w") as f:
        await f.write(data)
    async with await c.open("rt.bin") as f:
        return await f.read() == data


SERVERS = ["smbring_server", "samba_server"]


@pytest.fixture(params=SERVERS)
def server(request):
    """Each real server in turn: make(extra) starts one (extra: smbd [global] lines, or
    `smbring serve` options)."""
    return request.param, request.getfixturevalue(request.param)


def start(server, smbring_options=(), samba_extra=""):
    kind, make = server
    return make(*smbring_options) if kind == "smbring_server" else make(samba_extra)


@pytest.mark.parametrize("dialect", [wire.SMB210, wire.SMB302, wire.SMB311])
def test_logon_signed_and_sealed(server, dialect):
    srv = start(server)

    async def go():
        async with await connected(srv, dialects=(dialect,), sign=True) as c:
            assert c.signing and not c.guest
            signed = await round_trip(c)
        if dialect == wire.SMB210:
            return signed, True
        async with await connected(srv, dialects=(dialect,), encrypt=True) as c:
            assert c.encrypting
            return signed, await round_trip(c)
    assert run(go()) == (True, True)


def test_wrong_password_is_a_logon_failure(server):
    srv = start(server)
    with pytest.raises(PermissionError, match="LOGON_FAILURE"):
        run(sc.connect(srv["host"], srv["port"], srv["user"], "wrong-" + srv["password"], srv["name"]))


def test_a_domain_spelled_in_the_user_name(server):
    """DOMAIN\\user, and the domain= argument: NTOWFv2 takes the domain as given."""
    srv = start(server)

    async def go():
        async with await sc.connect(srv["host"], srv["port"], "WORKGROUP\\" + srv["user"], srv["password"],
                                    srv["name"]) as c:
            assert not c.guest
        async with await sc.connect(srv["host"], srv["port"], srv["user"].upper(), srv["password"],
                                    srv["name"], domain="workgroup") as c:
            return await round_trip(c, 4096)
    assert run(go())


def test_multichannel_binding_logons(server, tmp_path):
    """Each bound channel logs on again (SESSION_FLAG_BINDING): its key comes from that
    logon's ExportedSessionKey, and the final answer is signed with it."""
    srv = start(server, samba_extra="    server multi channel support = yes\n")

    async def go():
        async with await connected(srv, channels=3, encrypt=True) as c:
            assert c.open_channels == 3, c.multichannel_note
            data = os.urandom(12 * MiB + 1)
            (tmp_path / "up").write_bytes(data)
            await c.put(str(tmp_path / "up"), "mc.bin")
            await c.get("mc.bin", str(tmp_path / "down"))
            return (tmp_path / "down").read_bytes() == data
    assert run(go())


def test_anonymous_logon(server):
    """Empty user and password: an anonymous NTLM logon (no NT response); the server makes it
    a null session, accepted only with allow_guest, and never signed."""
    kind, _make = server
    srv = start(server, smbring_options=("--guest",))
    share = srv["name"] if kind == "smbring_server" else "IPC$"

    async def go(**kw):
        async with await sc.connect(srv["host"], srv["port"], "", "", share, **kw) as c:
            return c.guest
    with pytest.raises(PermissionError):
        run(go())
    assert run(go(allow_guest=True)) is True


def test_negotiate_is_still_pyspnego(server):
    """auth="negotiate" (the CLI's --kerberos) logs on through pyspnego, as before."""
    srv = start(server)

    async def go():
        async with await connected(srv, auth="negotiate", sign=True) as c:
            return await round_trip(c, 4096)
    assert run(go())
    with pytest.raises(ValueError, match="auth"):
        run(connected(srv, auth="kerberos"))


IMPORTS_PROBE = """
import asyncio, sys
import smbring.client as sc
async def go():
    async with await sc.connect("127.0.0.1", {port}, {user!r}, {password!r}, "share",
                                auth={auth!r}) as c:
        await c.stat("")
asyncio.run(go())
print("spnego" in sys.modules)
"""


@pytest.mark.parametrize("auth, imported", [("ntlm", "False"), ("negotiate", "True")])
def test_the_default_logon_never_imports_pyspnego(smbring_server, auth, imported):
    srv = smbring_server()
    r = subprocess.run([sys.executable, "-c", IMPORTS_PROBE.format(port=srv["port"], user=srv["user"],
                                                                    password=srv["password"], auth=auth)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == imported


def test_the_cli_never_imports_pyspnego(smbring_server):
    srv = smbring_server()
    env = dict(os.environ, SMBRING_PASSWORD=srv["password"])
    url = f"smb://{srv['user']}@127.0.0.1:{srv['port']}/share/"
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "smbring.cli", "ls", url],
                       capture_output=True, text=True, env=env, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    imported = {line.split("|")[-1].strip() for line in r.stderr.splitlines() if "|" in line}
    assert "smbring.smb.ntlm_initiator" in imported
    assert not {name for name in imported if name.split(".")[0] == "spnego"}
    r = subprocess.run([sys.executable, "-m", "smbring.cli", "ls", url, "--kerberos"],
                       capture_output=True, text=True, env=env, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr


# -- a server that lies: a proxy of our own rewrites the server's logon tokens ---------------

def session_setup(frame, status) -> bool:
    return (frame[:4] == wire.PROTOCOL_ID and struct.unpack_from("<H", frame, 12)[0] == wire.SESSION_SETUP
            and struct.unpack_from("<I", frame, 8)[0] == status)


def in_challenge(change):
    """A tamper function: change(frame, offset of the NTLMSSP CHALLENGE) on the first
    MORE_PROCESSING_REQUIRED SESSION_SETUP answer."""
    done = []

    def tamper(frame):
        if not done and session_setup(frame, wire.STATUS_MORE_PROCESSING_REQUIRED):
            at = bytes(frame).find(b"NTLMSSP\0\x02\0\0\0")
            if at > 0:
                done.append(True)
                return change(frame, at)
        return frame
    return tamper


def clear_flag(flag):
    def change(frame, at):
        flags = struct.unpack_from("<I", frame, at + 20)[0]
        struct.pack_into("<I", frame, at + 20, flags & ~flag)
        return frame
    return change


def target_info_beyond(frame, at):
    struct.pack_into("<H", frame, at + 40, 0xFFF0)      # TargetInfo length past the message
    return frame


def no_message_type(frame, at):
    frame[at + 8] = 3                                   # an AUTHENTICATE, not a CHALLENGE
    return frame


@pytest.mark.parametrize("change, message", [
    (clear_flag(nc.EXTENDED_SESSION_SECURITY), "lacks flags"),
    (clear_flag(nc.TARGET_INFO), "lacks flags"),
    (clear_flag(nc.NEGOTIATE_128), "lacks flags"),
    (clear_flag(nc.KEY_EXCH), "lacks flags"),
    (target_info_beyond, "outside"),
    (no_message_type, "not a CHALLENGE"),
])
def test_a_hostile_challenge_is_refused(server, tampering_proxy, change, message):
    srv = start(server)

    async def go():
        async with tampering_proxy(srv["port"], in_challenge(change)) as proxy:
            await connected(srv, port=proxy.port)
    with pytest.raises(sc.ProtocolError, match=message):
        run(go())


def test_a_wrong_server_mech_list_mic_is_refused(server, tampering_proxy):
    """The server's mechListMIC is the last 16 bytes of its final SESSION_SETUP answer's
    security buffer: one bit changed there is refused before anything else is trusted."""
    srv = start(server)
    done = []

    def tamper(frame):
        if not done and session_setup(frame, wire.STATUS_SUCCESS):
            done.append(True)
            frame[-1] ^= 0x01
        return frame

    async def go():
        async with tampering_proxy(srv["port"], tamper) as proxy:
            await connected(srv, port=proxy.port)
    with pytest.raises(sc.ProtocolError, match="mechListMIC"):
        run(go())


def truncated_challenge(frame, at):
    """The CHALLENGE cut short inside its SPNEGO wrapping (whose lengths still claim it whole;
    the SESSION_SETUP's security buffer says the shorter length)."""
    offset = struct.unpack_from("<H", frame, 64 + 4)[0]
    struct.pack_into("<H", frame, 64 + 6, at + 20 - offset)
    return frame[:at + 20]


@pytest.mark.parametrize("change", [no_message_type, truncated_challenge],
                         ids=["not-a-challenge", "truncated"])
def test_a_hostile_challenge_is_refused_by_pyspnego_too(smbring_server, tampering_proxy, change):
    """auth="negotiate" hands the server's tokens to pyspnego, whose parsers refuse a bad one
    with whatever they raise (KeyError, struct.error, its SpnegoError...): the logon ends
    with a ProtocolError all the same (the CLI's exit status 3, never a traceback)."""
    pytest.importorskip("spnego")
    srv = smbring_server()

    async def go():
        async with tampering_proxy(srv["port"], in_challenge(change)) as proxy:
            await connected(srv, port=proxy.port, auth="negotiate")
    with pytest.raises(sc.ProtocolError, match="logon"):
        run(go())


def test_every_damaged_token_is_a_protocol_error_for_pyspnego():
    """Bytes of a CHALLENGE (in its SPNEGO answer) changed at random: pyspnego's every refusal
    becomes a ProtocolError."""
    pytest.importorskip("spnego")
    import random
    from smbring.client.logon import logon_context, step
    from smbring.smb import spnego
    info = struct.pack("<HH", 2, 8) + "DOM!".encode("utf-16-le") + struct.pack("<HH", 0, 0)
    name = "SRV".encode("utf-16-le")
    challenge = (b"NTLMSSP\0" + struct.pack("<IHHII", 2, len(name), len(name), 56, 0xE2898235) +
                 os.urandom(8) + bytes(8) + struct.pack("<HHI", len(info), len(info), 56 + len(name)) +
                 bytes(8) + name + info)
    token = spnego.encode_resp(spnego.ACCEPT_INCOMPLETE, supported_mech=spnego.NTLMSSP_OID,
                               response_token=challenge)
    rng = random.Random(7)
    refused = 0
    for _ in range(400):
        damaged = bytearray(token)
        for _ in range(rng.randint(1, 3)):
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        context = logon_context("negotiate", "u", "p", "", "host")
        step(context)
        try:
            step(context, bytes(damaged))
        except sc.ProtocolError:
            refused += 1
    assert refused > 100
