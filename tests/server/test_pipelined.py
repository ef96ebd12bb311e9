"""Requests a client sends without waiting for the answers (several in one TCP segment): each
answered, in order; the answers the server holds back to send together are never lost, not
even when a later request ends the connection."""
import socket
import struct

from test_hostile import frame, header, negotiate

ECHO = 13


def echo(message_id: int) -> bytes:
    return frame(header(ECHO, message_id) + struct.pack("<HH", 4, 0))


def responses(sock: socket.socket) -> list[tuple[int, int, int]]:
    """(command, status, MessageId) of every response until the server closes the connection."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, socket.timeout):
            break
        if not chunk:
            break
        data += chunk
    out = []
    while len(data) >= 4:
        size = int.from_bytes(data[1:4], "big")
        message, data = data[4:4 + size], data[4 + size:]
        _, _, _, status, command = struct.unpack_from("<4sHHIH", message)
        out.append((command, status, struct.unpack_from("<Q", message, 24)[0]))
    return out


def test_pipelined_requests_are_each_answered_in_order(server):
    with socket.create_connection(("127.0.0.1", server["port"]), timeout=10) as s:
        s.sendall(frame(negotiate()) + b"".join(echo(i) for i in range(1, 201)))
        s.shutdown(socket.SHUT_WR)
        got = responses(s)
    assert got == [(0, 0, 0)] + [(ECHO, 0, i) for i in range(1, 201)]


def test_answers_before_a_request_that_ends_the_connection_are_sent(server):
    """MessageId 3 twice: the connection ends there, but the answers to the requests before
    it (held back while the next request was already in) reach the client first."""
    with socket.create_connection(("127.0.0.1", server["port"]), timeout=10) as s:
        s.sendall(frame(negotiate()) + echo(1) + echo(2) + echo(3) + echo(3) + echo(4))
        got = responses(s)      # (no SHUT_WR: the server ends the connection)
    assert got == [(0, 0, 0), (ECHO, 0, 1), (ECHO, 0, 2), (ECHO, 0, 3)]
    assert server["proc"].poll() is None


def test_a_pipelining_client_leaves_the_event_loop_to_others():
    """Requests served out of the receive buffer, without waiting for the socket, still give
    the other connections a turn of the event loop every Receiver.FAIR_BURST pieces."""
    import asyncio

    from smbring.datapath import Receiver
    from smbring.uring import aio

    frames = 200

    async def main():
        a, b = socket.socketpair()
        with a, b:
            a.setblocking(False)
            rx = Receiver(aio.get_ring(), a)
            b.sendall(b"".join(echo(i) for i in range(frames)))
            turns = 0

            async def other_connection():
                nonlocal turns
                while True:
                    turns += 1
                    await asyncio.sleep(0)

            other = asyncio.ensure_future(other_connection())
            await asyncio.sleep(0)
            started = turns
            for i in range(frames):      # the prefix, then the message, as the server reads
                size = int.from_bytes((await rx.recv_small(4))[1:4], "big")
                message = await rx.recv_small(size)
                assert struct.unpack_from("<Q", message, 24)[0] == i
            other.cancel()
            # one ring receive takes in 16 KiB (227 frames of 72 bytes): 400 pieces, a turn
            # at least every FAIR_BURST of them
            assert turns - started >= 2 * frames // Receiver.FAIR_BURST - 2

    asyncio.run(asyncio.wait_for(main(), 10))
