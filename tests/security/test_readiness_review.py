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
import signal
import socket
import struct
import time

import pytest

from raw import read_body, write_body
from test_resource_review import EchoWatch
from smbring.datapath import Receiver
from smbring.smb import wire

ECHO_BODY = struct.pack("<HH", 4, 0)
ECHO_FRAME_SIZE = 4 + 64 + len(ECHO_BODY)


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
        while offset + 4 <= len(data):
            end = offset + 4 + int.from_bytes(data[offset + 1:offset + 4], "big")
            if end > len(data):
                break
            offset = end
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


@pytest.mark.parametrize("length", [4000, 65536])
def test_a_client_that_never_reads_its_read_answers_stops_being_read(default, length):
    """As above with 2,000 signed READs after logon: of 4,000 bytes (answers built in
    memory, held back while the next READ is in, sent together: 8 MiB in all) and of
    64 KiB (sent on their own: 128 MiB). The server reads no more requests than the
    answers its socket and the client's hold, and what its receive buffer takes; what it
    cannot send is not piled up in its memory."""
    server = default
    (server.path("rw") / "reads.bin").write_bytes(os.urandom(length))
    c, s = server.logon(timeout=30)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)     # (no autotuning)
    rw = c.tree(s, "rw")
    fid = rw.open("reads.bin")
    c.grow_credits(2048)
    count = min(c.credits - 1, 2000)
    captured = []
    c.send_frame = captured.append
    for _ in range(count):
        c.send([rw.message(wire.READ, read_body(fid, length, 0), payload=length)])
    del c.send_frame
    before = server.proc_status("VmRSS")
    with EchoWatch(server) as watch:
        marks = flood(c.sock, iter(captured), 4.0)
        assert watch.slowest < 1.0, f"another client's ECHO waited {watch.slowest:.2f} s"
    grown = server.proc_status("VmRSS") - before
    read = read_by_server(c.sock, marks[-1]) // len(captured[0])
    queues = tcp_queues(c.sock)
    in_flight = (queues[(c.sock.getpeername()[1], c.sock.getsockname()[1])][0]
                 + queues[(c.sock.getsockname()[1], c.sock.getpeername()[1])][1])
    c.sock.close()
    answer = 4 + 64 + 16 + length
    # answers in the sockets, plus the requests in the server's receive buffer (16 KiB:
    # some 140) and the answers held back (64 KiB)
    bound = in_flight // answer + Receiver.BUFFER // len(captured[0]) + 65536 // answer + 16
    assert read < count, "every READ was read: the sockets held all the answers, nothing was tested"
    assert read <= bound, f"the server read {read} READs of a client that reads no answer (bound {bound})"
    assert grown < 32 * 1024, f"the server grew by {grown} kB for a client that does not read"
    assert server.alive()


# -- 2. frames in pieces, and lengths that cannot be ---------------------------------------------
def test_frames_dribbled_a_byte_at_a_time_are_answered(default):
    """NEGOTIATE and three ECHOs, one byte per send with a pause between: every piece is
    taken as it comes (the receive buffer holds part of a prefix, part of a message), the
    frames are answered in order."""
    with connect(default) as sock:
        data = negotiate() + echoes(1, 3)
        for i in range(len(data)):
            sock.send(data[i:i + 1])
            time.sleep(0.001)
        got = answers(read_frames(sock, 4))
    assert got == [(wire.NEGOTIATE, 0, 0)] + [(wire.ECHO, 0, i) for i in (1, 2, 3)]


def test_a_frame_split_at_every_offset_is_answered(default):
    """An ECHO cut in two at every offset of its prefix and header, the first part sent
    alone (on its own behind an answered request, or behind a whole one in the same send),
    the rest after a pause: each answered once, in order."""
    with negotiated(default) as sock:
        message_id = 1
        for cut in range(1, ECHO_FRAME_SIZE):
            for behind_a_whole_one in (False, True):
                ids = [message_id, message_id + 1] if behind_a_whole_one else [message_id]
                data = b"".join(echo(i) for i in ids)
                split = len(data) - ECHO_FRAME_SIZE + cut
                sock.sendall(data[:split])
                time.sleep(0.002)
                sock.sendall(data[split:])
                got = answers(read_frames(sock, len(ids)))
                assert got == [(wire.ECHO, 0, i) for i in ids], f"cut at {cut}"
                message_id += len(ids)


@pytest.mark.parametrize("length", [0, 1, 4, 57, 58, 63, 65537, 0xFFFFFF, 0x7FFFFFFF])
@pytest.mark.parametrize("behind", ["alone", "after an answered echo"])
def test_a_netbios_length_that_cannot_be_a_request_ends_the_connection_at_once(default, length, behind):
    """A length under the shortest message (58 bytes: SMB1's NEGOTIATE), a message shorter
    than an SMB2 header, or one over the frame limit (64 KiB before logon): the connection
    ends at once (not after a timeout), the requests before it answered. (0x7FFFFFFF: a
    first byte that is not a session message's.)"""
    server = default
    with negotiated(server) as sock:
        head = b"" if behind == "alone" else echo(1)
        body = (header(wire.ECHO, 2) + ECHO_BODY)[:length] if length <= 0xFFFF else b"\xfeSMB"
        sock.sendall(head + (length & 0xFFFFFFFF).to_bytes(4, "big") + body)
        started = time.monotonic()
        data = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
        assert time.monotonic() - started < 5
    assert answers(data) == ([] if behind == "alone" else [(wire.ECHO, 0, 1)])
    assert server.alive()
    assert "Traceback" not in server.log.read_text()


@pytest.mark.parametrize("length", [67])
def test_a_request_shorter_than_its_body_is_answered_with_a_status(default, length):
    """A whole header and part of an ECHO's body: the request is answered with an error
    status, taken the fast way (behind another request) or alone, and the connection goes
    on. (One without its StructureSize, 64 or 65 bytes, drops the connection as Samba drops
    it: test_compound_framing.py.)"""
    with negotiated(default) as sock:
        short = frame((header(wire.ECHO, 2) + ECHO_BODY)[:length])
        sock.sendall(echo(1) + short)
        time.sleep(0.05)
        sock.sendall(frame((header(wire.ECHO, 3) + ECHO_BODY)[:length]))
        sock.sendall(echo(4))
        got = answers(read_frames(sock, 4))
    assert [(c, m) for c, _, m in got] == [(wire.ECHO, i) for i in (1, 2, 3, 4)]
    assert got[0][1] == got[3][1] == 0
    assert got[1][1] == got[2][1] == wire.STATUS_INVALID_PARAMETER


def test_a_frame_never_finished_holds_its_connection_no_longer_than_idleness(fresh_servers):
    """Slowloris on a small frame: a prefix that promises 100 bytes and 10 of them, then
    nothing. Small frames have no deadline of their own (a large one must arrive within
    60 s + 1 s per 64 KiB, server.frame_budget): the connection is what an idle one is,
    its bytes in the receive buffer every connection has (16 KiB), and it ends as an
    idle one does: by the handshake timeout before logon, by deadtime after (no open
    file). Each ends with its idle twin, not later. (The handshake timeout leaves the two
    logons below time to finish on a loaded machine: at 2 s, and at 4 s, one was cut off
    once in CI.)"""
    server = fresh_servers({"handshake timeout": "6", "deadtime": "0.05"})     # (3 s)
    half = (100).to_bytes(4, "big") + (header(wire.ECHO, 1) + ECHO_BODY)[:10]
    idle_before = negotiated(server)
    half_before = negotiated(server)
    half_before.sendall(half)
    idle_after, session = server.logon()
    half_after, _ = server.logon()
    half_after.sock.sendall(half)
    start = time.monotonic()
    ends = {}
    pending = {"idle before logon": idle_before, "half before logon": half_before,
               "idle after logon": idle_after.sock, "half after logon": half_after.sock}
    while pending and time.monotonic() - start < 16:
        readable, _, _ = select.select(list(pending.values()), [], [], 0.1)
        for name, sock in list(pending.items()):
            if sock in readable and closed_by_server(sock, 0.01):
                ends[name] = time.monotonic() - start
                del pending[name]
    assert not pending, f"not closed within 16 s: {sorted(pending)} (closed: {ends})"
    assert ends["half before logon"] < 9 and ends["half after logon"] < 10, ends
    assert abs(ends["half before logon"] - ends["idle before logon"]) < 1.5, ends
    assert abs(ends["half after logon"] - ends["idle after logon"]) < 1.5, ends
    assert server.alive()


# -- 3. bursts ------------------------------------------------------------------------------------
def test_ten_thousand_echoes_in_one_send_leave_the_loop_to_others(default):
    """10,000 ECHOs in one send, each taken out of the receive buffer (Receiver.FAIR_BURST
    pieces in a row at most, then a turn of the event loop): all answered, in order, while
    another client's ECHOs wait no more than a second."""
    import threading

    count = 10000
    got = {}
    with negotiated(default) as sock, EchoWatch(default) as watch:
        reader = threading.Thread(target=lambda: got.update(data=read_frames(sock, count, timeout=30)))
        reader.start()
        sock.sendall(echoes(1, count))
        reader.join(40)
        assert watch.slowest < 1.0, f"another client's ECHO waited {watch.slowest:.2f} s"
    assert answers(got["data"]) == [(wire.ECHO, 0, i) for i in range(1, count + 1)]


def test_the_largest_compound_is_answered_whole_and_one_more_request_ends_the_connection(default):
    from raw import Disconnected, NoAnswer

    c, s = default.logon()
    c.grow_credits(512)
    limit = 128                                 # max compound requests
    responses = c.compound([c.message(wire.ECHO, ECHO_BODY, session=s) for _ in range(limit)])
    assert [r.status for r in responses] == [wire.STATUS_SUCCESS] * limit
    assert [r.header.message_id for r in responses] == sorted(r.header.message_id for r in responses)
    c.send([c.message(wire.ECHO, ECHO_BODY, session=s) for _ in range(limit + 1)])
    with pytest.raises(Disconnected):
        c.sock.settimeout(5)
        try:
            c.recv_frame()
        except NoAnswer:
            pytest.fail("a compound over the limit was neither answered nor refused")
    assert default.alive()


def pipelined(client, messages: list[bytearray]) -> bytes:
    """The frames of `messages` (one request each, signed as the client signs), to send
    together."""
    captured = []
    client.send_frame = captured.append
    try:
        for message in messages:
            client.send([message])
    finally:
        del client.send_frame
    return b"".join(captured)


def test_frames_around_the_receive_buffers_size_land_exactly(default):
    """WRITE frames of the receive buffer's size give or take a few bytes (Receiver.BUFFER:
    up to it a frame is taken from the buffer, above it received into a buffer of its own),
    behind runs of ECHOs that place them anywhere in the buffer, all in one send: every
    answer, in MessageId order, and the file holds exactly what was written."""
    server = default
    buffer = Receiver.BUFFER
    c, s = server.logon(timeout=30)
    rw = c.tree(s, "rw")
    fid = rw.open("straddle.bin", wire.GENERIC_READ | wire.GENERIC_WRITE, wire.FILE_OVERWRITE_IF)
    c.grow_credits(1024)
    rng = random.Random(11)
    expected, offset, messages = bytearray(), 0, []
    overhead = 64 + 48                      # a WRITE's header and fixed body
    for size in (buffer - 5, buffer - 4, buffer - 3, buffer - 1, buffer, buffer + 1, buffer + 4,
                 2 * buffer - 4, 2 * buffer, 200, buffer - 4):
        for _ in range(rng.choice((0, 1, 3, 37, 150))):
            messages.append(c.message(wire.ECHO, ECHO_BODY, session=s))
        data = rng.randbytes(size - overhead)
        messages.append(rw.message(wire.WRITE, write_body(fid, data, offset), payload=len(data)))
        expected += data
        offset += len(data)
    ids = [wire.Header.parse(m).message_id for m in messages]
    c.sock.sendall(pipelined(c, messages))
    got = [r for _ in messages for r in c.parse(c.recv_frame())]
    assert [r.header.message_id for r in got] == ids
    assert all(r.status == wire.STATUS_SUCCESS for r in got), [r for r in got if r.status]
    rw.close(fid)
    assert (server.path("rw") / "straddle.bin").read_bytes() == bytes(expected)


def test_signed_read_answers_held_back_together_are_each_exact(default):
    """Pipelined READs whose signed answers are built in one buffer the connection reuses:
    an answer held back while the next READ is in must be a copy, not the buffer the next
    answer is built in. Sizes around the most sent at once (64 KiB with its prefix)."""
    server = default
    content = os.urandom(300000)
    (server.path("rw") / "reads.bin").write_bytes(content)
    c, s = server.logon(timeout=30)
    rw = c.tree(s, "rw")
    fid = rw.open("reads.bin")
    c.grow_credits(1024)
    rng = random.Random(5)
    wanted, messages = [], []
    for length in (1, 4000, 16300, 65452, 65453, 65536, 70000, 200000, 3, 65452) * 3:
        offset = rng.randrange(0, len(content) - length)
        wanted.append(content[offset:offset + length])
        messages.append(rw.message(wire.READ, read_body(fid, length, offset), payload=length))
    ids = [wire.Header.parse(m).message_id for m in messages]
    c.sock.sendall(pipelined(c, messages))
    got = [r for _ in messages for r in c.parse(c.recv_frame())]
    assert [r.header.message_id for r in got] == ids
    for r, data in zip(got, wanted):
        assert r.status == wire.STATUS_SUCCESS and r.signature_ok, r
        assert r.buffer(2, "<BxI") == data, f"{r!r}: not the bytes read"


# (the header codec in C: tests/smb/test_header_codec_review.py, run under AddressSanitizer too)

@pytest.mark.parametrize("case", ["past the end", "inside the header", "one", "huge", "top bit",
                                  "second not SMB2", "second structure size", "second short"])
def test_a_compound_whose_next_command_breaks_the_framing_ends_the_connection(default, case):
    """The second request of a compound placed outside the frame, inside the first's header,
    or at something that is not a header: the frame is refused whole (nothing answered) and
    the connection ends; the server goes on."""
    first_size = 72                             # an ECHO, padded to 8
    next_command = {"past the end": 2 * first_size + 8, "inside the header": 8, "one": 1,
                    "huge": 0xFFFFFFF8, "top bit": 0x80000000}.get(case, first_size)
    second = header(wire.ECHO, 3)
    if case == "second not SMB2":
        second = header(wire.ECHO, 3, protocol=b"\xfdSMB")
    elif case == "second structure size":
        second = header(wire.ECHO, 3, structure_size=65)
    first = header(wire.ECHO, 2, next_command=next_command) + ECHO_BODY + bytes(4)
    message = first + second + ECHO_BODY
    if case == "second short":
        message = first + second[:40]
    with negotiated(default) as sock:
        sock.sendall(frame(header(wire.ECHO, 1, credits=16) + ECHO_BODY))
        assert answers(read_frames(sock, 1)) == [(wire.ECHO, 0, 1)]
        sock.sendall(frame(message))
        assert closed_by_server(sock, 5)
    assert default.alive()


def test_a_compound_with_an_unaligned_next_command_is_answered(default):
    """NextCommand should be a multiple of 8 (MS-SMB2 2.2.1); the server takes an unaligned
    one as it points (a second request right after the first's 68 bytes): both answered,
    the framing kept."""
    with negotiated(default) as sock:
        sock.sendall(frame(header(wire.ECHO, 1, credits=16) + ECHO_BODY))
        assert answers(read_frames(sock, 1)) == [(wire.ECHO, 0, 1)]
        first = header(wire.ECHO, 2, next_command=68) + ECHO_BODY
        sock.sendall(frame(first + header(wire.ECHO, 3) + ECHO_BODY))
        got = answers(read_frames(sock, 1, timeout=5))
    assert [(c, m) for c, _, m in got] == [(wire.ECHO, 2), (wire.ECHO, 3)]
    assert default.alive()


# -- 5. clients that leave at every stage ---------------------------------------------------------
def reset(sock: socket.socket) -> None:
    """Closes with a reset (SO_LINGER 0): the server's next send or receive fails."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def leave_mid_prefix(server, close):
    sock = connect(server)
    sock.sendall(b"\0\0")
    close(sock)


def leave_mid_frame(server, close):
    sock = negotiated(server)
    sock.sendall(echo(1)[:30])
    close(sock)


def leave_before_the_answer(server, close):
    sock = connect(server)
    sock.sendall(negotiate() + echo(1))
    close(sock)


def leave_while_answers_are_held_back(server, close):
    """Many requests in one send: the answers are held back while more are in, and the
    client is gone before they are sent."""
    sock = negotiated(server, rcvbuf=4096)
    sock.sendall(echoes(1, 3000))
    close(sock)


def leave_while_the_server_waits_to_send(server, close):
    """A client that reads none of its answers until the server's socket is full (the
    server waits for room before reading on), then goes."""
    sock = negotiated(server, rcvbuf=4096)
    flood(sock, (echoes(first, 500) for first in range(1, 1 << 30, 500)), 0.6)
    close(sock)


def leave_mid_large_frame(server, close):
    c, s = server.logon()
    rw = c.tree(s, "rw")
    fid = rw.open("leaving.bin", wire.GENERIC_READ | wire.GENERIC_WRITE, wire.FILE_OPEN_IF)
    data = bytes(1 << 20)
    whole = pipelined(c, [rw.message(wire.WRITE, write_body(fid, data, 0), payload=len(data))])
    c.sock.sendall(whole[:len(whole) // 2])
    close(c.sock)


def leave_behind_a_request_without_an_answer(server, close):
    """A CANCEL (answered by nothing) with the connection's end right behind it, both in
    before the server looks (it is stopped meanwhile): one readiness brings the request and,
    for a reset, the socket's error. uvloop runs the readiness callback once for an error and
    then drops the descriptor's watch; the request received, nothing to answer, the
    connection waited for a readiness that could no longer come, and held its socket (and
    its files, and its place under `max connections per client`) for good."""
    sock = negotiated(server)
    os.kill(server.pid, signal.SIGSTOP)
    try:
        sock.sendall(frame(header(wire.CANCEL, 1) + ECHO_BODY))
        close(sock)
        time.sleep(0.05)
    finally:
        os.kill(server.pid, signal.SIGCONT)


@pytest.mark.parametrize("leave, rounds", [
    (leave_mid_prefix, 25), (leave_mid_frame, 25), (leave_before_the_answer, 25),
    (leave_while_answers_are_held_back, 25), (leave_while_the_server_waits_to_send, 3),
    (leave_mid_large_frame, 4), (leave_behind_a_request_without_an_answer, 20)])
def test_a_client_that_leaves_at_any_stage_leaves_nothing_behind(fresh_servers, leave, rounds):
    """Many clients leaving at one stage, each closing or resetting its connection: the
    server's descriptors come back to what they were (each connection's socket, and any
    file it opened, is closed by its task's end), its memory does not grow, and it serves
    the next client."""
    server = fresh_servers()
    with negotiated(server):        # (serving: it listens before its engine and loop are made)
        pass
    for warm_up in (socket.socket.close, reset):    # (the server's lazily made descriptors)
        leave(server, warm_up)
    time.sleep(0.3)
    fds, rss = server.fd_count(), server.proc_status("VmRSS")
    for _ in range(rounds):
        for close in (socket.socket.close, reset):
            leave(server, close)
    left = settled(server, fds)
    assert left <= fds, f"{left - fds} descriptors left behind ({fds} before)"
    assert server.proc_status("VmRSS") - rss < 16 * 1024
    with negotiated(server) as sock:
        sock.sendall(echo(1))
        assert answers(read_frames(sock, 1)) == [(wire.ECHO, 0, 1)]
    assert "Traceback" not in server.log.read_text()
