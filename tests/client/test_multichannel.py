"""Multichannel against real servers: channels bound to the session on `smbring serve` (each
3.x dialect, signed, sealed) and on Samba's smbd; a channel lost mid-transfer (its socket reset
by the client, or the server's end killed by the kernel with `ss -K`) with the transfer
completing byte-exact on the others and the channel opened and bound again; attempts to reopen
that end after a bound; a server with multichannel off, and a server that refuses every
binding, leave one working channel."""
import asyncio
import os
import shutil
import struct
import subprocess

import pytest

import smbring.client as sc
from smbring.client import messages as m
from smbring.smb import wire
from servers import spawn, stop, free_port
from tampering import TamperingProxy

MiB = 1024 * 1024


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 300))


async def connected(srv, **kw):
    return await sc.connect(srv["host"], srv["port"], srv["user"], srv["password"], srv["name"], **kw)


def random_file(path, size):
    path.write_bytes(os.urandom(size))
    return path


async def round_trip(c, tmp_path, size):
    """put then get of `size` random bytes through the client; both byte-exact."""
    up = random_file(tmp_path / "up.bin", size)
    await c.put(str(up), "big.bin")
    down = tmp_path / "down.bin"
    await c.get("big.bin", str(down))
    assert down.read_bytes() == up.read_bytes()


@pytest.mark.parametrize("dialect", [wire.SMB300, wire.SMB302, wire.SMB311])
def test_channels_bind_and_share_a_transfer(smbring_server, tmp_path, dialect):
    srv = smbring_server()

    async def go():
        async with await connected(srv, channels=3, dialects=(dialect,)) as c:
            assert c.open_channels == 3, c.multichannel_note
            await round_trip(c, tmp_path, 24 * MiB + 5)
            # every channel carried 1 MiB READs or WRITEs (16 credits each), not just the first
            assert all(ch.peak_in_flight >= 16 for ch in c.channels)
            assert (srv["share"] / "big.bin").read_bytes() == (tmp_path / "up.bin").read_bytes()
    run(go())
    assert srv["log"].read_text().count("channel bound") == 2


def test_signed_and_sealed_channels(smbring_server, tmp_path):
    srv = smbring_server()

    async def go():
        async with await connected(srv, channels=2, sign=True) as c:
            assert c.open_channels == 2 and c.signing
            # each channel signs with its own key (3.1.1: from its own preauthentication hash)
            assert c.channels[0].keys.signing_key != c.channels[1].keys.signing_key
            await round_trip(c, tmp_path, 5 * MiB)
        async with await connected(srv, channels=2, encrypt=True) as c:
            assert c.open_channels == 2 and c.encrypting
            assert c.channels[1].keys.encrypt
            await round_trip(c, tmp_path, 5 * MiB)
    run(go())


async def lose_channel(client, index, answers):
    """Shuts down one channel's socket (as a failing network would) once it has answered
    `answers` more requests, at a moment when requests are waiting on it."""
    channel = client.channels[index]
    start = channel.answered
    while channel.answered < start + answers or not channel.load:
        await asyncio.sleep(0)      # every turn of the loop: a fast transfer's channel may
                                    # be loaded for only a few milliseconds
    channel.abort()


def kill_server_end(server_port, channel):
    """The kernel destroys the server's end of this channel's TCP connection (`ss -K`, as a
    failing middlebox or a server that drops the connection would): the client sees a reset."""
    local_port = channel.sockname[1]
    r = subprocess.run(["ss", "-K", "-t", "src", "127.0.0.1", "sport", "=", str(server_port),
                        "dport", "=", str(local_port)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return f":{local_port}" in r.stdout


async def kill_channel(client, server_port, index, answers):
    channel = client.channels[index]
    start = channel.answered
    while channel.answered < start + answers or not channel.load:
        await asyncio.sleep(0)      # every turn of the loop: a fast transfer's channel may
                                    # be loaded for only a few milliseconds
    assert kill_server_end(server_port, channel)


async def while_losing(client, index, answers, transfer, how=None):
    loser = asyncio.ensure_future(how or lose_channel(client, index, answers))
    try:
        await transfer
    finally:
        fired = loser.done()
        loser.cancel()
    assert fired, "the transfer ended before the channel could be lost"


@pytest.mark.parametrize("lost", [1, 0], ids=["another-channel", "the-first-channel"])
def test_a_lost_channel_s_requests_finish_on_the_others(smbring_server, tmp_path, lost):
    srv = smbring_server()
    size = 48 * MiB + 7
    up = random_file(tmp_path / "up.bin", size)

    async def go():
        # 1 MiB WRITEs and READs (not 8 and 4 MiB): many in flight on each channel when it is lost
        async with await connected(srv, channels=3, write_size=MiB, read_size=MiB) as c:
            assert c.open_channels == 3
            first = c.channels[lost]
            await while_losing(c, lost, 4, c.put(str(up), "big.bin"))
            assert first.closed
            assert c.retried >= 1          # WRITEs were in flight there and went again
            await c.wait_reopened()
            # opened and bound again, in the lost one's place
            assert c.open_channels == 3 and c.reopened == 1, c.multichannel_note
            assert c.channels[lost] is not first and not c.channels[lost].closed
            retried = c.retried
            # (lost after its first answer: a download of 48 MiB is over quickly, and the
            # channel must still have READs waiting when it goes)
            await while_losing(c, 2, 1, c.get("big.bin", str(tmp_path / "down.bin")))
            assert c.retried > retried
            await c.wait_reopened()
            assert c.open_channels == 3 and c.reopened == 2
            assert [e.name async for e in c.listdir("")] == ["big.bin"]   # still usable
            # the reopened channels carry transfers too
            await c.get("big.bin", str(tmp_path / "again.bin"))
            assert c.channels[lost].answered > 0
    run(go())
    assert (tmp_path / "again.bin").read_bytes() == up.read_bytes()
    assert (srv["share"] / "big.bin").read_bytes() == up.read_bytes()
    assert (tmp_path / "down.bin").read_bytes() == up.read_bytes()


needs_ss = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ss"),
                              reason="ss -K (root) kills a connection's server end")


@needs_ss
def test_a_channel_killed_by_the_kernel_is_reopened(smbring_server, tmp_path):
    srv = smbring_server()
    size = 64 * MiB + 9
    up = random_file(tmp_path / "up.bin", size)

    async def go():
        # 1 MiB WRITEs and READs (not 8 and 4 MiB): many in flight on each channel when it is killed
        async with await connected(srv, channels=4, write_size=MiB, read_size=MiB) as c:
            assert c.open_channels == 4
            await while_losing(c, 1, 3, c.put(str(up), "big.bin"),
                               kill_channel(c, srv["port"], 1, 3))
            # (killed after its first answer: the download is over quickly)
            await while_losing(c, 3, 1, c.get("big.bin", str(tmp_path / "down.bin")),
                               kill_channel(c, srv["port"], 3, 1))
            await c.wait_reopened()
            assert c.open_channels == 4 and c.reopened == 2, c.multichannel_note
            assert c.retried >= 2
    run(go())
    assert (srv["share"] / "big.bin").read_bytes() == up.read_bytes()
    assert (tmp_path / "down.bin").read_bytes() == up.read_bytes()
    assert srv["log"].read_text().count("channel bound") == 3 + 2


def test_reopening_gives_up_after_a_bounded_number_of_attempts(smbring_server, tmp_path):
    """Where the server no longer answers (here: the port the client dials again is closed),
    the client tries REOPEN_ATTEMPTS times with growing pauses, says why in
    multichannel_note, and goes on with the channels it has."""
    srv = smbring_server()
    up = random_file(tmp_path / "up.bin", 24 * MiB)

    async def go():
        # 1 MiB WRITEs: 24 of them, so that the lost channel has some in flight after 2 answers
        async with await connected(srv, channels=3, write_size=MiB, read_size=MiB) as c:
            c.rebinder.pause = 0.01
            c.port = free_port()                  # nothing listens there
            await while_losing(c, 2, 2, c.put(str(up), "big.bin"))
            await c.wait_reopened()
            assert c.open_channels == 2 and c.reopened == 0
            assert "not reopened after 4 attempts" in c.multichannel_note
            await c.get("big.bin", str(tmp_path / "down.bin"))
    run(go())
    assert (tmp_path / "down.bin").read_bytes() == up.read_bytes()


def test_a_channel_closed_for_a_broken_answer_is_not_reopened(smbring_server, tampering_proxy, tmp_path):
    """Only a lost connection is reopened: one closed because its answer was refused (an
    altered READ on a signed session: someone in between is suspected) stays closed."""
    srv = smbring_server()
    (srv["share"] / "big").write_bytes(os.urandom(8 * MiB))
    altered = []

    def tamper(frame):
        if not altered and frame[:4] == wire.PROTOCOL_ID and \
                struct.unpack_from("<H", frame, 12)[0] == wire.READ and len(frame) > 1000:
            altered.append(True)
            frame[500] ^= 1
        return frame

    async def go():
        async with tampering_proxy(srv["port"], tamper) as proxy:
            async with await sc.connect("127.0.0.1", proxy.port, srv["user"], srv["password"],
                                        srv["name"], channels=3, sign=True) as c:
                assert c.open_channels == 3
                with pytest.raises(sc.ProtocolError, match="bad signature"):
                    await c.get("big", str(tmp_path / "big"))
                await c.wait_reopened()
                assert c.open_channels == 2 and c.reopened == 0
    run(go())
    assert altered and "big" not in os.listdir(tmp_path)


def test_a_server_without_multichannel_leaves_one_channel(tmp_path):
    share = tmp_path / "share"
    share.mkdir()
    port = free_port()
    (tmp_path / "smb.conf").write_text(
        f"[global]\nlisten = 127.0.0.1:{port}\nserver multi channel support = no\n"
        f"[share]\npath = {share}\nread only = no\n")
    proc, port, _log = spawn(tmp_path, "--config", str(tmp_path / "smb.conf"), port=port)
    srv = {"host": "127.0.0.1", "port": port, "name": "share", "user": "alice", "password": "Secret-pw1"}
    from servers import USER, PASSWORD
    srv.update(user=USER, password=PASSWORD)
    try:
        async def go():
            async with await connected(srv, channels=4) as c:
                assert c.open_channels == 1
                assert "CAP_MULTI_CHANNEL" in c.multichannel_note
                await round_trip(c, tmp_path, 3 * MiB)
        run(go())
    finally:
        stop(proc)


class BindingRefuser(TamperingProxy):
    """A server in front of `smbring serve` that passes everything through except a binding
    SESSION_SETUP, which it answers itself with STATUS_REQUEST_NOT_ACCEPTED (as a server
    does that will not bind this session), never forwarding it."""

    def __init__(self, upstream_port):
        super().__init__(upstream_port, tamper=lambda frame: frame, intercept=self._refuse_binding)
        self.refused = 0

    def _refuse_binding(self, frame):
        hdr = wire.Header.parse(frame)
        if not (hdr.command == wire.SESSION_SETUP and frame[66] & wire.SESSION_FLAG_BINDING):
            return frame
        self.refused += 1
        self.answer(wire.Header(command=wire.SESSION_SETUP, status=wire.STATUS_REQUEST_NOT_ACCEPTED,
                                flags=wire.FLAGS_SERVER_TO_REDIR, credits=1, message_id=hdr.message_id,
                                session_id=hdr.session_id).pack() + struct.pack("<HBBIB", 9, 0, 0, 0, 0))
        return None


def test_a_refused_binding_falls_back_to_one_channel(smbring_server, tmp_path):
    srv = smbring_server()

    async def go():
        async with BindingRefuser(srv["port"]) as refuser:
            async with await connected(dict(srv, port=refuser.port), channels=3) as c:
                assert refuser.refused == 1          # the first refusal ends the attempts
                assert c.open_channels == 1
                assert "REQUEST_NOT_ACCEPTED" in c.multichannel_note
                await round_trip(c, tmp_path, 3 * MiB)
    run(go())


def _context_data(frame, kind: int) -> int:
    """Where the data of negotiate context `kind` starts in a NEGOTIATE response."""
    count = struct.unpack_from("<H", frame, 64 + 6)[0]
    pos = struct.unpack_from("<I", frame, 64 + 60)[0]
    for _ in range(count):
        this, length = struct.unpack_from("<HH", frame, pos)
        if this == kind:
            return pos + 8
        pos = wire.pad8(pos + 8 + length)
    raise AssertionError(f"no negotiate context {kind}")


def _other_dialect(frame):
    struct.pack_into("<H", frame, 64 + 4, wire.SMB300)
    return frame


def _other_signing(frame):
    from smbring.smb import security
    at = _context_data(frame, wire.SIGNING_CAPABILITIES)
    chosen = struct.unpack_from("<H", frame, at + 2)[0]
    struct.pack_into("<H", frame, at + 2,
                     security.AES_CMAC if chosen == security.AES_GMAC else security.AES_GMAC)
    return frame


def _other_preauth_hash(frame):
    struct.pack_into("<H", frame, _context_data(frame, wire.PREAUTH_INTEGRITY_CAPABILITIES) + 4, 2)
    return frame


def _bad_signature(frame):
    frame[50] ^= 0xFF
    return frame


def _unsigned(frame):
    struct.pack_into("<I", frame, 16, struct.unpack_from("<I", frame, 16)[0] & ~wire.FLAGS_SIGNED)
    return frame


def _second(change, command, status=wire.STATUS_SUCCESS):
    """A tamper function that changes the second answer of `command` with `status`: the
    first is the first connection's, the second the extra channel's."""
    seen = []

    def tamper(frame):
        if frame[:4] == wire.PROTOCOL_ID and struct.unpack_from("<H", frame, 12)[0] == command \
                and struct.unpack_from("<I", frame, 8)[0] == status:
            seen.append(True)
            if len(seen) == 2:
                return change(frame)
        return frame
    return tamper


@pytest.mark.parametrize("change, command, note", [
    (_bad_signature, wire.SESSION_SETUP, "bad signature on the final binding"),
    (_unsigned, wire.SESSION_SETUP, "bad signature on the final binding"),
    (_other_dialect, wire.NEGOTIATE, "dialect 0x300, which was not offered"),
    (_other_signing, wire.NEGOTIATE, "other algorithms"),
    (_other_preauth_hash, wire.NEGOTIATE, "SHA-512 preauthentication"),
], ids=["bad-signature", "unsigned", "other-dialect", "other-signing", "other-preauth-hash"])
def test_a_binding_that_lies_is_dropped_and_the_first_channel_goes_on(
        smbring_server, tampering_proxy, tmp_path, change, command, note):
    """The extra channel's NEGOTIATE switches the dialect, the signing algorithm or the
    preauthentication hash, or its final binding answer comes unsigned or with a bad
    signature: that connection is closed before it carries anything, nothing more is bound,
    and the session goes on over the first channel, whose own answers are verified as ever
    (a lie on a path to another address is no lie on this one)."""
    srv = smbring_server()

    async def go():
        async with tampering_proxy(srv["port"], _second(change, command)) as proxy:
            async with await sc.connect("127.0.0.1", proxy.port, srv["user"], srv["password"],
                                        srv["name"], channels=3, sign=True,
                                        dialects=(wire.SMB311,)) as c:
                assert c.open_channels == 1 and len(c.channels) == 1
                assert note in c.multichannel_note and "channel 2" in c.multichannel_note
                assert c.rebinder is None           # and nothing is bound later either
                await round_trip(c, tmp_path, 3 * MiB)
    run(go())


def test_samba_binds_channels_on_loopback(samba_server, tmp_path):
    srv = samba_server("    server multi channel support = yes\n")

    async def go():
        async with await connected(srv, channels=3) as c:
            assert c.open_channels == 3, c.multichannel_note
            await round_trip(c, tmp_path, 24 * MiB + 3)
            assert all(ch.peak_in_flight >= 16 for ch in c.channels)
            await c.put(str(random_file(tmp_path / "bigger.bin", 96 * MiB)), "bigger.bin")
            await while_losing(c, 1, 2, c.get("bigger.bin", str(tmp_path / "again.bin")))
            assert c.retried >= 1
            await c.wait_reopened()
            assert c.open_channels == 3 and c.reopened == 1, c.multichannel_note
            await while_losing(c, 2, 2, c.put(str(tmp_path / "bigger.bin"), "third.bin"),
                               kill_channel(c, srv["port"], 2, 2))
            await c.wait_reopened()
            assert c.open_channels == 3 and c.reopened == 2, c.multichannel_note
    run(go())
    assert (srv["share"] / "big.bin").read_bytes() == (tmp_path / "up.bin").read_bytes()
    assert (tmp_path / "again.bin").read_bytes() == (tmp_path / "bigger.bin").read_bytes()
    assert (srv["share"] / "third.bin").read_bytes() == (tmp_path / "bigger.bin").read_bytes()


def _ioctl_response(output: bytes) -> bytes:
    return (wire.Header(command=wire.IOCTL, flags=wire.FLAGS_SERVER_TO_REDIR).pack() +
            struct.pack("<HHI16sIIIIII", 49, 0, m.FSCTL_QUERY_NETWORK_INTERFACE_INFO, m.NO_FILE,
                        0, 0, wire.HEADER_SIZE + 48, len(output), 0, 0) + output)


def _entry(nxt: int, address: bytes) -> bytes:
    return (struct.pack("<IIIIQ", nxt, 1, 0, 0, 10**9) +
            struct.pack("<HH", m.AF_INET, 0) + address).ljust(m.INTERFACE_ENTRY, b"\0")


def test_interface_lists_that_lie_are_refused():
    good = m.parse_interfaces(_ioctl_response(_entry(m.INTERFACE_ENTRY, b"\x0a\0\0\x01") +
                                              _entry(0, b"\x7f\0\0\x01")))
    assert [i.address for i in good] == ["10.0.0.1", "127.0.0.1"]
    with pytest.raises(sc.ProtocolError, match="does not move past"):
        m.parse_interfaces(_ioctl_response(_entry(8, b"\x7f\0\0\x01") + _entry(0, b"\x7f\0\0\x01")))
    with pytest.raises(sc.ProtocolError, match="runs past"):
        m.parse_interfaces(_ioctl_response(_entry(m.INTERFACE_ENTRY, b"\x7f\0\0\x01")))
    with pytest.raises(sc.ProtocolError, match="outside"):
        m.parse_interfaces(_ioctl_response(_entry(0, b"\x7f\0\0\x01"))[:-10])
    # a chain that loops forever is cut at MAX_INTERFACES
    many = b"".join(_entry(m.INTERFACE_ENTRY, b"\x7f\0\0\x01") for _ in range(300)) + _entry(0, b"\x7f\0\0\x01")
    assert len(m.parse_interfaces(_ioctl_response(many[:60000]))) == m.MAX_INTERFACES


def test_unusable_addresses_are_never_dialled():
    from smbring.client.multichannel import usable_addresses
    listed = [m.NetworkInterface(1, a, 10**9, 0) for a in
              ("0.0.0.0", "224.0.0.1", "fe80::1", "255.255.255.255", "::", "192.0.2.7")]
    listed.append(m.NetworkInterface(2, "192.0.2.8", 10**10, 0))
    assert usable_addresses(listed) == ["192.0.2.8", "192.0.2.7"]


def test_addresses_that_lead_elsewhere_are_never_dialled():
    """An IPv4 address written as IPv6 is judged as itself (::ffff:0.0.0.0 would reach this
    host); 0.0.0.0/8 and 240/4 are not addresses of a server; loopback is dialled only when
    the first connection went there (a server elsewhere is not on this host's loopback)."""
    from smbring.client.multichannel import usable_addresses
    listed = [m.NetworkInterface(1, a, 10**9, 0) for a in
              ("::ffff:0.0.0.0", "::ffff:224.0.0.1", "::ffff:169.254.1.1", "::ffff:255.255.255.255",
               "0.1.2.3", "240.0.0.1", "127.0.0.1", "::1", "::ffff:127.0.0.2", "192.0.2.7")]
    assert usable_addresses(listed, from_loopback=False) == ["192.0.2.7"]
    assert usable_addresses(listed) == ["127.0.0.1", "::1", "127.0.0.2", "192.0.2.7"]


def test_a_long_list_of_silent_addresses_is_not_dialled_to_its_end(smbring_server, monkeypatch):
    """A server may list 256 addresses (the most believed) that never answer: each costs
    CONNECT_TIMEOUT, so only the fastest MAX_ADDRESSES are tried before the channel goes to
    the first connection's address (256 of 5 s would hold the connect up for 21 minutes)."""
    from smbring.client import multichannel
    from smbring.client.channel import Channel
    srv = smbring_server()
    silent = [f"192.0.2.{i}" if i < 256 else f"198.51.100.{i - 256}" for i in range(1, 257)]
    monkeypatch.setattr(m, "parse_interfaces",
                        lambda _msg: [m.NetworkInterface(i, a, 10**10, 0) for i, a in enumerate(silent)]
                        + [m.NetworkInterface(999, "127.0.0.1", 10**9, 0)])
    monkeypatch.setattr(multichannel, "CONNECT_TIMEOUT", 0.05)
    dialled = []
    real_open = Channel.open.__func__

    async def open_or_stall(cls, host, port, **kw):
        dialled.append(host)
        if host != "127.0.0.1":
            await asyncio.sleep(30)           # a SYN nobody answers
        return await real_open(cls, host, port, **kw)
    monkeypatch.setattr(Channel, "open", classmethod(open_or_stall))

    async def go():
        async with await connected(srv, channels=2) as c:
            assert c.open_channels == 2
    run(go())
    assert len([a for a in dialled if a != "127.0.0.1"]) == multichannel.MAX_ADDRESSES


def test_an_address_listed_again_in_another_spelling_counts_once():
    """The same address listed as IPv4, as IPv4-mapped IPv6 and with other speeds and indexes
    (a server may repeat itself): one address to dial, so channels spread over the addresses
    that really differ."""
    from smbring.client.multichannel import usable_addresses
    listed = [m.NetworkInterface(1, "192.0.2.7", 10**9, 0),
              m.NetworkInterface(2, "::ffff:192.0.2.7", 2**64 - 1, 0),
              m.NetworkInterface(3, "::ffff:c000:207", 10**10, 0),
              m.NetworkInterface(4, "2001:db8::1", 10**9, 0),
              m.NetworkInterface(5, "2001:0db8:0::1", 10**9, 0)]
    assert usable_addresses(listed) == ["192.0.2.7", "2001:db8::1"]
