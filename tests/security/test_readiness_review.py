"""Adversarial review of the receive and send path that serves small frames by readiness:
frames taken out of the connection's receive buffer (datapath.Receiver.take_frame,
receive_now, and the event loop's readiness callback, Receiver.serve), answers held back and
sent together while more requests are in (Sender.send_small, Sender.holding), and the SMB2
header codec in C (smbring._wire) that every frame goes through.

Each attack runs with raw sockets against a real `smbring serve`:
- a client that pipelines requests and never reads its answers: the server stops reading
  it (TCP pushes back), its memory stays flat, other clients are served meanwhile;
- frames dribbled a byte at a time, split at every offset, NetBIOS lengths that cannot be a
  message or are never completed: answered exactly, or a clean disconnect (at once for an
  impossible length; by the handshake timeout or deadtime, like an idle connection, for a
  frame that never ends);
- bursts: 10,000 ECHOs in one send while another client measures its round trips, the
  largest compound and one past it, frames around the receive buffer's size (a WRITE that
  straddles the small and the large way in): every answer, in MessageId order, the data
  exact;
- the header codec against a reference reading of MS-SMB2 2.2.1 written here with struct,
  and given what is not a header (wrong types, buffers, classes): an exception, never a
  crash;
- clients that leave at every stage: nothing left behind (descriptors counted in /proc).

Timings are generous correctness bounds (a stall of a second), not performance claims.
"""
from __future__ import annotations

import os
import random
import select
import socket
import struct
import subprocess
import sys
import textwrap
import time

import pytest

from raw import read_body, write_body
from test_resource_review import EchoWatch
from smbring.datapath import Receiver
from smbring.smb import wire

ECHO_BODY = struct.pack("<HH", 4, 0)
ECHO_FRAME_SIZE = 4 + 64 + len(ECHO_BODY)
MiB = 1 << 20


# -- raw frames ---------------------------------------------------------------------------------
def header(command: int, message_id: int, *, credits: int = 1, flags: int = 0, next_command: int = 0,
           protocol: bytes = wire.PROTOCOL_ID, structure_size: int = 64) -> bytes:
    return struct.pack("<4sHHIHHIIQIIQ16s", protocol, structure_size, 0, 0, command, credits, flags,
                       next_command, message_id, 0, 0, 0, bytes(16))


def frame(message: bytes) -> bytes:
    return len(message).to_bytes(4, "big") + message


def echo(message_id: int) -> bytes:
    return frame(header(wire.ECHO, message_id) + ECHO_BODY)


def echoes(first: int, count: int) -> bytes:
    return b"".join(echo(i) for i in range(first, first + count))


def negotiate() -> bytes:
    dialects = [0x0202, 0x0210, 0x0300, 0x0302]
    body = struct.pack("<HHHHI16sIHH", 36, len(dialects), 1, 0, 0, b"\1" * 16, 0, 0, 0)
    return frame(header(wire.NEGOTIATE, 0) + body + struct.pack(f"<{len(dialects)}H", *dialects))


def answers(data: bytes) -> list[tuple[int, int, int]]:
    """(command, status, MessageId) of every response in a stream of frames, compounds split."""
    out, offset = [], 0
    while offset + 4 <= len(data):
        size = int.from_bytes(data[offset + 1:offset + 4], "big")
        message = data[offset + 4:offset + 4 + size]
        at = 0
        while True:
            _, _, _, status, command = struct.unpack_from("<4sHHIH", message, at)
            next_command = struct.unpack_from("<I", message, at + 20)[0]
            out.append((command, status, struct.unpack_from("<Q", message, at + 24)[0]))
            if not next_command:
                break
            at += next_command
        offset += 4 + size
    return out


def connect(server, rcvbuf: int | None = None, timeout: float = 10.0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:      # (before connecting: the window is scaled for it then)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(timeout)
    sock.connect(("127.0.0.1", server.port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_frames(sock: socket.socket, count: int, timeout: float = 20.0) -> bytes:
    """Exactly `count` whole frames (fewer if the server closes first)."""
    data, frames, offset = bytearray(), 0, 0
    deadline = time.monotonic() + timeout
    while frames < count:
        while offset + 4 <= len(data) and offset + 4 + int.from_bytes(data[offset + 1:offset + 4], "big") <= len(data):
            offset += 4 + int.from_bytes(data[offset + 1:offset + 4], "big")
            frames += 1
            if frames == count:
                return bytes(data[:offset])
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(1 << 20)
        except (socket.timeout, ConnectionResetError):
            break
        if not chunk:
            break
        data += chunk
    return bytes(data[:offset])


def negotiated(server, rcvbuf: int | None = None) -> socket.socket:
    sock = connect(server, rcvbuf)
    sock.sendall(negotiate())
    assert answers(read_frames(sock, 1))[0][:2] == (wire.NEGOTIATE, wire.STATUS_SUCCESS)
    return sock


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """Whether the server ends the connection within `within` seconds (what it sends first
    is read and dropped)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            if not sock.recv(65536):
                return True
        except socket.timeout:
            return False
        except ConnectionResetError:
            return True
    return False


def settled(server, baseline: int, within: float = 5.0) -> int:
    """The server's descriptor count once it is back to `baseline` (or the last one seen)."""
    deadline = time.monotonic() + within
    while True:
        count = server.fd_count()
        if count <= baseline or time.monotonic() > deadline:
            return count
        time.sleep(0.05)


def tcp_queues(sock: socket.socket) -> dict[tuple[int, int], tuple[int, int]]:
    """(bytes not yet acknowledged by the peer, bytes received and not read) of both ends of
    the connection, by (local port, remote port), as the kernel counts them (/proc/net/tcp)."""
    ends = {(sock.getsockname()[1], sock.getpeername()[1]), (sock.getpeername()[1], sock.getsockname()[1])}
    out = {}
    for line in open("/proc/net/tcp").read().splitlines()[1:]:
        fields = line.split()
        key = (int(fields[1].split(":")[1], 16), int(fields[2].split(":")[1], 16))
        if key in ends:
            tx, rx = fields[4].split(":")
            out[key] = (int(tx, 16), int(rx, 16))
    assert len(out) == 2, "the connection is not in /proc/net/tcp"
    return out


def read_by_server(client: socket.socket, sent: int) -> int:
    """Of the `sent` bytes the client's socket took, how many the server has read: not
    those still in the client's send queue, nor those waiting in the server's socket."""
    queues = tcp_queues(client)
    in_client = queues[(client.getsockname()[1], client.getpeername()[1])][0]
    in_server = queues[(client.getpeername()[1], client.getsockname()[1])][1]
    return sent - in_client - in_server


@pytest.fixture(scope="module")
def default(servers):
    return servers()


# -- 1. a client that never reads its answers -----------------------------------------------------
def flood(sock: socket.socket, chunks, seconds: float) -> list[int]:
    """Sends the byte strings of the iterator `chunks`, non-blocking, never reading, for
    `seconds`; the bytes the server had taken at each quarter of the time."""
    sock.setblocking(False)
    taken, pending, marks = 0, b"", []
    start = time.monotonic()
    for quarter in range(1, 5):
        until = start + seconds * quarter / 4
        while time.monotonic() < until:
            if not pending:
                pending = next(chunks, b"")
                if not pending:             # all sent: only the time passes
                    time.sleep(max(0.0, until - time.monotonic()))
                    continue
            try:
                n = sock.send(pending)
            except BlockingIOError:
                select.select([], [sock], [], max(0.0, until - time.monotonic()))
                continue
            taken += n
            pending = pending[n:]
        marks.append(taken)
    return marks


def test_a_client_that_never_reads_its_echo_answers_stops_being_read(default):
    """Pipelined ECHOs, none of the answers read: the server sends what its socket takes,
    then waits for room before it reads the next request; the client's sends stop (TCP
    pushes back), the server's memory does not grow with them, and another client's ECHOs
    are answered throughout."""
    server = default
    sock = negotiated(server, rcvbuf=4096)
    batches = (echoes(first, 500) for first in range(1, 1 << 30, 500))
    before = server.proc_status("VmRSS")
    with EchoWatch(server) as watch:
        marks = flood(sock, batches, 4.0)
        assert watch.slowest < 1.0, f"another client's ECHO waited {watch.slowest:.2f} s"
    grown = server.proc_status("VmRSS") - before
    read = read_by_server(sock, marks[-1]) // ECHO_FRAME_SIZE
    sock.close()
    # the server stopped reading: nothing taken in the last second (socket buffers full),
    # no more requests read than answers its socket holds (4 MiB of 72 bytes each: 58,000)
    # and its receive buffer
    assert marks[-1] == marks[-2], f"still reading a client that does not read: {marks}"
    assert read < 70000, f"the server read {read} ECHOs of a client that reads none of the answers"
    assert grown < 16 * 1024, f"the server grew by {grown} kB for a client that does not read"
    assert server.alive()


def test_a_client_that_never_reads_its_read_answers_stops_being_read(default):
    """As above with READs of 64 KiB after logon (2,000 of them would be 128 MiB of answers):
    the answers the server cannot send are not piled up in its memory."""
    server = default
    (server.path("rw") / "sixty-four.bin").write_bytes(os.urandom(65536))
    c, s = server.logon(timeout=30)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)     # (no autotuning)
    rw = c.tree(s, "rw")
    fid = rw.open("sixty-four.bin")
    c.grow_credits(2048)
    count = min(c.credits - 1, 2000)
    captured = []
    c.send_frame = captured.append
    for _ in range(count):
        c.send([rw.message(wire.READ, read_body(fid, 65536, 0), payload=65536)])
    del c.send_frame
    before = server.proc_status("VmRSS")
    with EchoWatch(server) as watch:
        marks = flood(c.sock, iter(captured), 4.0)
        assert watch.slowest < 1.0, f"another client's ECHO waited {watch.slowest:.2f} s"
    grown = server.proc_status("VmRSS") - before
    read = read_by_server(c.sock, marks[-1]) // len(captured[0])
    c.sock.close()
    # it stopped reading once its answers filled its socket (4 MiB: some 64 answers of
    # 64 KiB), with the next requests in its receive buffer (16 KiB: some 140 more)
    assert read < 400, f"the server read {read} READs of a client that reads none of the answers"
    assert grown < 32 * 1024, f"the server grew by {grown} kB for a client that does not read"
    assert server.alive()
