"""A handle's descriptor outlives the work that names it, whatever closes the handle: a durable
open's expiry or its close for another client's open, a PreviousSessionId that ends the old
session, a CREATE with the same AppInstanceId, a named stream renamed onto its file's data
stream. None of them lets a READ still being sent read another client's file.

The READ is kept in flight, not raced: its client reads nothing while the server sends it, so
a large READ spliced from the file (`read path = splice`) waits for socket space with most of
its bytes still to be read from the descriptor. Meanwhile the handle is closed (by a timer,
or over several turns of the loop: no stopped server can put these in one turn) and another
client's CREATE takes the lowest free descriptor number, the closed one were it free. Then
the client reads the whole answer: every byte must be its own file's. (READs of 8 MiB, the
most announced; the client's receive buffer is made small so that the kernel's buffers hold
only part of one.)
"""
from __future__ import annotations

import os
import socket
import struct
import sys
import time
from pathlib import Path

import pytest
import spnego

sys.path.insert(0, str(Path(__file__).parents[1] / "security"))
from raw import RawClient  # noqa: E402
from servers import PASSWORD, USER, free_port, spawn, stop  # noqa: E402
from smbcore import create_body, read_body, session_setup_body, set_info_body  # noqa: E402
from test_sessions_multichannel import bind  # noqa: E402

from smbring.smb import wire  # noqa: E402

RW = wire.GENERIC_READ | wire.GENERIC_WRITE
SIZE = 8 << 20          # the largest READ: far more than the socket buffers between hold
MINE, VICTIM = b"M", b"V"
VICTIM_OPENS = 4
BATCH = 0x09
APP_INSTANCE_ID = bytes.fromhex("45BCA66AEFA7F74A9008FA462E144D74")
FILE_RENAME_INFORMATION = 10
DELETE = 0x00010000


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("fdcloses")
    (root / "rw").mkdir()
    port = free_port()
    (root / "smb.conf").write_text(
        f"[global]\nlisten = 127.0.0.1:{port}\nshutdown timeout = 1\n"
        f"[rw]\npath = {root / 'rw'}\nread only = no\nread path = splice\n")
    proc, port, _log = spawn(root, "--config", str(root / "smb.conf"), port=port)
    yield port, root / "rw"
    stop(proc)


def connect(port: int, guid: bytes | None = None) -> RawClient:
    c = RawClient(port)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)    # (the kernel's own, then)
    assert c.negotiate((wire.SMB311,), client_guid=guid).status == wire.STATUS_SUCCESS
    return c


class Clients:
    """A (whose READ is kept in flight) and B, channels of one session; C, another client of
    the same user with a session of its own."""

    def __init__(self, port: int):
        self.port = port
        guid = os.urandom(16)
        self.a = connect(port, guid)
        self.session = self.a.logon(USER, PASSWORD)
        self.tree = self.a.tree(self.session, "rw")
        self.b = connect(port, guid)
        self.channel, r = bind(self.b, self.session)
        assert r.status == wire.STATUS_SUCCESS, r
        self.c = connect(port)
        self.other = self.c.tree(self.c.logon(USER, PASSWORD), "rw")
        self.more: list[RawClient] = []

    def read_in_flight(self, fid: bytes) -> int:
        """A's READ of SIZE bytes, sent unsigned (a signed one is read into memory first) and
        left unread; its MessageId. Once it returns, the server is sending it."""
        read = self.tree.message(wire.READ, read_body(fid, SIZE), payload=SIZE)
        self.a.send([read], sign=False)
        time.sleep(0.3)
        return wire.Header.parse(read).message_id

    def the_victim(self, share: Path) -> None:
        """C opens a file of its own, a few times: the lowest free descriptor numbers are its
        (a number freed by the server's own work may be lower than the handle's)."""
        name = f"victim-{os.urandom(4).hex()}"
        (share / name).write_bytes(VICTIM * SIZE)
        for _ in range(VICTIM_OPENS):
            self.other.open(name, RW)

    def read_answer(self, message_id: int):
        answer = self.a.response_to(message_id)
        assert answer.status == wire.STATUS_SUCCESS, answer
        data = answer.buffer(2, "<BxI")
        assert len(data) == SIZE
        assert data.count(VICTIM) == 0, f"{data.count(VICTIM)} bytes of another client's file sent"
        assert data == MINE * SIZE

    def logoff_on_b(self) -> None:
        r = self.b.request(wire.LOGOFF, b"\x04\x00\x00\x00", session=self.channel)
        assert r.status == wire.STATUS_SUCCESS, r

    def close(self):
        for c in [self.a, self.b, self.c] + self.more:
            c.close()


@pytest.fixture
def clients(server):
    c = Clients(server[0])
    yield c
    c.close()


def mine(share: Path) -> str:
    name = f"mine-{os.urandom(4).hex()}"
    (share / name).write_bytes(MINE * SIZE)
    return name


def dh2q(timeout_ms: int = 0) -> tuple[bytes, bytes]:
    return (b"DH2Q", struct.pack("<II8s16s", timeout_ms, 0, b"", os.urandom(16)))


def app_instance(instance: bytes) -> tuple[bytes, bytes]:
    return (APP_INSTANCE_ID, struct.pack("<HH16s", 20, 0, instance))


def durable_open(tree, name: str, contexts) -> bytes:
    r = tree.request(wire.CREATE, create_body(name, RW, wire.FILE_OPEN, 0, contexts=list(contexts),
                                              oplock=BATCH))
    assert r.status == wire.STATUS_SUCCESS, r
    assert r.body[2] == BATCH, r      # (a durable open needs its batch oplock)
    return r.file_id


def test_a_durable_open_expiring_detached_keeps_its_descriptor_for_a_read_in_flight(server, clients):
    """Its session ends (B's LOGOFF: A's durable open waits detached), its timeout of 1 ms
    passes and the server's sweep closes it, while A's READ is still being sent."""
    port, share = server
    fid = durable_open(clients.tree, mine(share), [dh2q(timeout_ms=1)])
    read = clients.read_in_flight(fid)
    clients.logoff_on_b()
    time.sleep(2.5)         # (the sweep runs at least once a second)
    clients.the_victim(share)
    clients.read_answer(read)


def test_a_detached_durable_open_closed_for_another_open_keeps_its_descriptor(server, clients):
    """Another open of the file closes the detached open (nobody could answer its oplock's
    break); that open closed, C's next one gets the lowest free number."""
    port, share = server
    name = mine(share)
    fid = durable_open(clients.tree, name, [dh2q()])
    read = clients.read_in_flight(fid)
    clients.logoff_on_b()
    clients.other.close(clients.other.open(name, wire.GENERIC_READ))
    clients.the_victim(share)
    clients.read_answer(read)


def test_a_previous_session_id_ending_the_session_keeps_its_descriptors(server, clients):
    """A new session naming A's as its PreviousSessionId ends it, with its opens."""
    port, share = server
    fid = clients.tree.open(mine(share), wire.GENERIC_READ)
    read = clients.read_in_flight(fid)
    d = connect(port)
    clients.more.append(d)
    ctx = spnego.client(USER, PASSWORD, hostname="smbring", service="cifs", protocol="negotiate")
    s = d.start_logon(None)
    r = d.request(wire.SESSION_SETUP, session_setup_body(ctx.step(), previous=clients.session.id))
    s.id = r.header.session_id
    r = d.request(wire.SESSION_SETUP, session_setup_body(ctx.step(d.security_buffer(r)),
                                                         previous=clients.session.id), session=s.id)
    assert r.status == wire.STATUS_SUCCESS, r
    clients.the_victim(share)
    clients.read_answer(read)


def test_an_app_instance_id_closing_another_open_keeps_its_descriptor(server, clients):
    """C's CREATE with the AppInstanceId of A's open closes A's open (a failed-over
    application's earlier instance) and takes the lowest free number for its own file."""
    port, share = server
    instance = os.urandom(16)
    fid = durable_open(clients.tree, mine(share), [dh2q(), app_instance(instance)])
    read = clients.read_in_flight(fid)
    victim = f"victim-{os.urandom(4).hex()}"
    (share / victim).write_bytes(VICTIM * SIZE)
    durable_open(clients.other, victim, [dh2q(), app_instance(instance)])
    clients.read_answer(read)


def rename_info(new_name: str, replace: bool) -> bytes:
    encoded = new_name.encode("utf-16-le")
    return struct.pack("<B7xQI", replace, 0, len(encoded)) + encoded


def test_a_stream_renamed_onto_its_file_keeps_its_old_descriptor_for_a_read_in_flight(server, clients):
    """B renames A's stream onto its file's data stream ("::$DATA"): the handle takes the
    file's descriptor, and the stream's is closed, while A's READ of the stream is sent."""
    port, share = server
    name = f"streamed-{os.urandom(4).hex()}"
    fid = clients.tree.open(f"{name}:s", RW | DELETE, wire.FILE_CREATE)
    chunk = MINE * (1 << 20)
    for offset in range(0, SIZE, len(chunk)):
        r = clients.tree.write(fid, chunk, offset)
        assert r.status == wire.STATUS_SUCCESS, r
    for data in (share / ".smbring-streams").glob("*/s"):
        data.read_bytes()       # (in the page cache: spliced, not read into memory first)
    read = clients.read_in_flight(fid)
    r = clients.b.request(wire.SET_INFO, set_info_body(fid, 1, FILE_RENAME_INFORMATION,
                                                       rename_info("::$DATA", True)),
                          session=clients.channel, tree_id=clients.tree.id)
    assert r.status == wire.STATUS_SUCCESS, r
    clients.the_victim(share)
    clients.read_answer(read)
    assert (share / name).read_bytes() == MINE * SIZE
