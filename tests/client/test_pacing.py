"""A loopback connection is not paced: where the system's congestion control is BBR, the
client's socket to a server on this host is switched to reno (BBR's pacing timer per packet
cost an upload most of its system time, for a path with no link or queue to protect). Real
sockets, the real kernel's congestion controls."""
import asyncio
import socket

import pytest

from smbring.client.channel import Channel, is_loopback, unpace

CONGESTION = "/proc/sys/net/ipv4/tcp_congestion_control"


def congestion_of(sock: socket.socket) -> str:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16).rstrip(b"\0").decode()


@pytest.fixture
def listener():
    """A TCP listener on 127.0.0.1 (the kernel completes the connections; nothing is said)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    yield sock
    sock.close()


def connected(listener, congestion: str | None = None) -> socket.socket:
    sock = socket.socket()
    if congestion is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, congestion.encode())
        except OSError:
            sock.close()
            pytest.skip(f"the kernel offers no {congestion} here")
    sock.connect(listener.getsockname())
    return sock


@pytest.mark.parametrize("address", ["127.0.0.1", "127.255.3.4", "::1", "::ffff:127.0.0.1",
                                     "::1%lo"])
def test_loopback_addresses(address):
    assert is_loopback(address)


@pytest.mark.parametrize("address", ["10.0.0.1", "128.0.0.1", "::2", "::ffff:10.0.0.1",
                                     "fe80::1%eth0", "::127.0.0.1", "localhost",
                                     "127.0.0.1.example.com", "", "0.0.0.0"])
def test_other_addresses_are_not_loopback(address):
    # names are never resolved here (a name leading to 127.0.0.1 is judged by the address
    # the socket connected to, which is what Channel.open passes)
    assert not is_loopback(address)


def test_a_bbr_socket_is_switched_to_reno(listener):
    sock = connected(listener, "bbr")
    try:
        assert congestion_of(sock) == "bbr"
        assert unpace(sock) == "reno"
        assert congestion_of(sock) == "reno"
    finally:
        sock.close()


@pytest.mark.parametrize("congestion", ["reno", "cubic"])
def test_an_unpaced_socket_is_left_as_it_is(listener, congestion):
    sock = connected(listener, congestion)
    try:
        assert unpace(sock) == congestion
        assert congestion_of(sock) == congestion
    finally:
        sock.close()


def test_a_loopback_channel_is_not_paced(listener):
    """Channel.open itself: the connection it makes to 127.0.0.1 runs no BBR, whatever the
    system's default (on a system whose default is BBR this fails without the switch)."""
    with open(CONGESTION) as f:
        default = f.read().strip()

    async def main():
        channel = await Channel.open("127.0.0.1", listener.getsockname()[1], timeout=5)
        try:
            return congestion_of(channel._sock)
        finally:
            await channel.close()
    got = asyncio.run(main())
    assert not got.startswith("bbr")
    assert got == ("reno" if default.startswith("bbr") else default)
