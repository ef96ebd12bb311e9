"""How the client's socket is set for uploads. A loopback connection is not paced: where the
system's congestion control is BBR, the client's socket to a server on this host is switched
to reno (BBR's pacing timer per packet cost an upload most of its system time, for a path with
no link or queue to protect). A sendfile upload raises the send buffer to the largest the
system allows, only where that is more than autotuning reaches. Real sockets, the real
kernel's congestion controls and limits."""
import asyncio
import os
import socket
import struct

import pytest

from smbring.client.buffers import FileRange
from smbring.client.channel import Channel, is_loopback, raise_send_buffer, unpace
from smbring.client.errors import ChannelTimeout
from smbring.smb import wire

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


# ---- what a WRITE costs the channel: descriptors, timers ----

def test_a_file_range_the_socket_takes_at_once_is_sent_from_the_callers_descriptor(
        listener, tmp_path, monkeypatch):
    """A WRITE's file range that the socket takes at once is sent from the caller's descriptor
    (a dup and a close per WRITE cost an upload two system calls each); one the socket cannot
    take whole gets a descriptor of its own, so it is still sent whole after the caller has
    closed its file (a transfer that ended while its last WRITE was queued)."""
    small = tmp_path / "small.bin"
    small.write_bytes(os.urandom(4096))
    large = tmp_path / "large.bin"
    large.write_bytes(os.urandom(1 << 20) * 48)      # more than the socket buffers hold
    dups = []
    real_dup = os.dup

    def counting_dup(fd):
        dups.append(real_dup(fd))
        return dups[-1]
    monkeypatch.setattr(os, "dup", counting_dup)

    async def receive(peer, n: int) -> bytes:
        loop = asyncio.get_running_loop()
        got = bytearray()
        while len(got) < n:
            chunk = await loop.sock_recv(peer, min(1 << 20, n - len(got)))
            assert chunk
            got += chunk
        return bytes(got)

    async def go():
        sock = connected(listener)
        peer, _ = listener.accept()
        peer.setblocking(False)
        channel = Channel(sock)
        try:
            fd = os.open(small, os.O_RDONLY)
            try:
                channel._send([b"head", FileRange(fd, 0, 4096)])
            finally:
                os.close(fd)
            assert dups == []
            assert await receive(peer, 4100) == b"head" + small.read_bytes()

            fd = os.open(large, os.O_RDONLY)
            channel._send([b"head", FileRange(fd, 0, large.stat().st_size)])
            os.close(fd)                     # the transfer is over; the range is not
            assert len(dups) == 1
            got = await receive(peer, 4 + large.stat().st_size)
            assert got == b"head" + large.read_bytes()
            with pytest.raises(OSError):     # the channel's own descriptor, closed once sent
                os.fstat(dups[0])
        finally:
            await channel.close()
            peer.close()
    asyncio.run(go())


def test_one_timer_per_channel_and_requests_still_time_out(listener):
    """Each request has a deadline, and the channel one timer at the earliest (a timer per
    request cost each WRITE of an upload a TimerHandle, its place in the loop's heap and its
    cancellation). A request unanswered past its deadline still gives the connection up; one
    whose waiter was cancelled is not waited for."""
    async def go():
        loop = asyncio.get_running_loop()
        sock = connected(listener)
        peer, _ = listener.accept()
        channel = Channel(sock, timeout=0.3)
        channel._balance = 100
        try:
            before = len(loop._scheduled)
            abandoned = channel.start_request(wire.ECHO, b"\x04\x00\x00\x00")
            abandoned.cancel()
            await asyncio.sleep(0.5)
            assert not channel.closed        # nobody waits for it: no timeout
            futures = [channel.start_request(wire.ECHO, b"\x04\x00\x00\x00") for _ in range(50)]
            assert len(loop._scheduled) <= before + 1
            with pytest.raises(ChannelTimeout):
                await futures[-1]
            assert channel.closed
            assert all(isinstance(f.exception(), ChannelTimeout) for f in futures)
        finally:
            await channel.close()
            peer.close()
    asyncio.run(go())


# ---- WRITE answers: two to a wake-up ----

def _answer(message_id: int, status: int = 0, interim: bool = False) -> bytes:
    """A WRITE response frame: an interim STATUS_PENDING (async) or the final, 10 bytes written."""
    flags = wire.FLAGS_SERVER_TO_REDIR | (wire.FLAGS_ASYNC if interim else 0)
    header = wire.Header(command=wire.WRITE, status=wire.STATUS_PENDING if interim else status,
                         flags=flags, credits=1, message_id=message_id, async_id=7).pack()
    body = struct.pack("<HBBI", 9, 0, 0, 0) + b"\0" if interim else \
        struct.pack("<HHIII", 17, 0, 10, 0, 0)
    return struct.pack(">I", len(header) + len(body)) + header + body


def test_two_writes_waiting_are_woken_for_two_answers_not_one(listener):
    """While two WRITEs or more wait, the socket wakes the channel once two answers' worth is
    there (SO_RCVLOWAT): smbd's interim STATUS_PENDING, which only grants credits, no longer
    costs a wake-up (an epoll_wait, a turn of the event loop, a recv) of its own. With one
    WRITE left, its lone answer wakes the channel as before (no wait that never ends)."""
    async def go():
        sock = connected(listener)
        peer, _ = listener.accept()
        channel = Channel(sock)
        channel._balance = 100
        wakes = []
        receive = channel._receive_small_frames

        def counting():
            wakes.append(1)
            return receive()
        channel._receive_small_frames = counting
        try:
            body = b"\x31" + bytes(47)
            first, second = (channel.start_request(wire.WRITE, body, data=b"x" * 10, payload=10)
                             for _ in range(2))
            peer.sendall(_answer(0, interim=True))
            await asyncio.sleep(0.2)
            assert wakes == [] and not first.done()     # an interim alone: not worth waking for
            peer.sendall(_answer(0))
            await asyncio.wait_for(asyncio.shield(first), 5)
            assert len(wakes) == 1                      # the interim and the final together
            peer.sendall(_answer(1, interim=True))      # one WRITE left: any answer wakes
            await asyncio.sleep(0.2)
            assert len(wakes) == 2 and not second.done()
            peer.sendall(_answer(1))
            assert (await asyncio.wait_for(second, 5)).status == 0
        finally:
            await channel.close()
            peer.close()
    asyncio.run(go())


def test_an_unsigned_request_goes_out_as_its_header_packs(listener):
    """The unsigned short path packs the header itself (no Header object per WRITE): the frame
    it sends is the one Header.pack and the length prefix make, field for field."""
    from smbring.client.channel import SessionKeys

    async def go():
        sock = connected(listener)
        peer, _ = listener.accept()
        peer.setblocking(False)
        channel = Channel(sock)
        channel.multi_credit = True
        channel._balance = 100
        future = None
        try:
            body, data = b"B" * 48, b"D" * 70000
            keys = SessionKeys(session_id=0x1122334455667788)
            expected = wire.Header(command=wire.WRITE, credit_charge=2,
                                   credits=channel._credits_to_ask(2), message_id=0,
                                   tree_id=0xAABBCCDD, session_id=keys.session_id).pack()
            future = channel.start_request(wire.WRITE, body, keys=keys, tree_id=0xAABBCCDD,
                                           payload=len(data), data=data)
            assert future is not None
            size = 4 + 64 + len(body) + len(data)
            got = bytearray()
            while len(got) < size:
                got += await asyncio.get_running_loop().sock_recv(peer, size - len(got))
            assert got[:4] == struct.pack(">I", size - 4)
            assert wire.Header.parse(got[4:68]) == wire.Header.parse(expected)
            assert got[4:68] == expected
            assert got[68:] == body + data
        finally:
            await channel.close()
            peer.close()
            if future is not None:
                assert isinstance(future.exception(), ConnectionError)   # (never answered)
    asyncio.run(go())


@pytest.mark.parametrize("body, error", [(b"\x11\x00", "shorter than its 16-byte"),
                                         (struct.pack("<HHIIHH", 16, 0, 5, 0, 0, 0),
                                          "StructureSize 16")])
def test_a_malformed_write_answer_is_refused(body, error):
    from smbring.client import messages as m
    from smbring.client.errors import ProtocolError
    with pytest.raises(ProtocolError, match=error):
        m.parse_write(bytes(64) + body)
    assert m.parse_write(bytes(64) + struct.pack("<HHIIHH", 17, 0, 5, 0, 0, 0)) == 5
