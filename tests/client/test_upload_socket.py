"""How the client's socket is set for uploads. A loopback connection is not paced: where the
system's congestion control is BBR, the client's socket to a server on this host is switched
to reno (BBR's pacing timer per packet cost an upload most of its system time, for a path with
no link or queue to protect). A sendfile upload raises the send buffer to the largest the
system allows, only where that is more than autotuning reaches. Real sockets, the real
kernel's congestion controls and limits."""
import asyncio
import os
import socket

import pytest

from smbring.client.channel import Channel, is_loopback, raise_send_buffer, unpace

CONGESTION = "/proc/sys/net/ipv4/tcp_congestion_control"
SO_SNDBUFFORCE = 32          # (Linux; the socket module does not name it)
WMEM_MAX = "/proc/sys/net/core/wmem_max"
TCP_WMEM = "/proc/sys/net/ipv4/tcp_wmem"


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


def send_buffer_of(sock: socket.socket) -> int:
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)


def test_send_buffer_is_raised_only_beyond_autotuning(listener):
    with open(WMEM_MAX) as f:
        largest = int(f.read())
    with open(TCP_WMEM) as f:
        autotuned = int(f.read().split()[2])
    sock = connected(listener)
    try:
        before = send_buffer_of(sock)
        got = raise_send_buffer(sock)
        if 2 * largest > max(autotuned, before):
            assert got == send_buffer_of(sock) == 2 * largest
        else:
            # asking would have locked the buffer below what autotuning reaches: not asked
            assert got == 0 and send_buffer_of(sock) == before
    finally:
        sock.close()


def test_send_buffer_already_larger_is_left_alone(listener):
    """A buffer the caller made larger than what raise_send_buffer would ask for (root may
    force one) is never lowered."""
    if os.geteuid() != 0:
        pytest.skip("SO_SNDBUFFORCE needs CAP_NET_ADMIN")
    with open(WMEM_MAX) as f:
        largest = int(f.read())
    sock = connected(listener)
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, 4 * largest)
        assert raise_send_buffer(sock) == 0
        assert send_buffer_of(sock) == 8 * largest
    finally:
        sock.close()


def test_a_closed_socket_is_no_error():
    sock = socket.socket()
    sock.close()
    assert raise_send_buffer(sock) == 0
    assert unpace(sock) is None
