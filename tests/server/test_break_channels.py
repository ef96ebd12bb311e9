"""Where breaks go among a client's channels, against a real server with the raw client: the
oldest channel first; a channel whose TCP stack does not acknowledge a break is closed and the
break goes on the next one (MS-SMB2 3.3.4.6/3.3.4.7, as Samba does), or with
`smb2 disable oplock break retry` only on the newest channel, once (as Windows does); a client
whose last channel is lost this way lets the other clients go on at once.

A channel is made to look lost with Samba's test control FSCTL_SMBTORTURE_FORCE_UNACKED_TIMEOUT
(`smbd:FSCTL_SMBTORTURE = yes`, off by default): no firewall is needed. A healthy connection
on loopback is checked too: its breaks are acknowledged by the kernel, and nothing is resent."""
from __future__ import annotations

import os
import socket
import struct
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "security"))
from raw import FID_ANY, NoAnswer, RawClient  # noqa: E402
from servers import PASSWORD, USER, free_port, spawn, stop  # noqa: E402
from smbcore import close_body, create_body, ioctl_body  # noqa: E402
from test_sessions_multichannel import bind, connect  # noqa: E402

from smbring.smb import wire  # noqa: E402

FORCE_UNACKED = 0x83848003          # FSCTL_SMBTORTURE_FORCE_UNACKED_TIMEOUT
ASYNC_SLEEP = 0x83848043            # FSCTL_SMBTORTURE_FSP_ASYNC_SLEEP
BATCH, LEVEL_II, LEASE = 0x09, 0x01, 0xFF
R, H, W = 0x1, 0x2, 0x4
BREAK_ID = 0xFFFFFFFFFFFFFFFF
READ_WRITE = wire.GENERIC_READ | wire.GENERIC_WRITE


@pytest.fixture(scope="module")
def serve(tmp_path_factory):
    """serve(*[global] lines) -> port: a server with one writable share `rw`."""
    procs = []

    def run(*options: str) -> int:
        root = tmp_path_factory.mktemp("breaks")
        (root / "rw").mkdir()
        port = free_port()
        lines = ["[global]", f"listen = 127.0.0.1:{port}", *options,
                 "[rw]", f"path = {root / 'rw'}", "read only = no"]
        (root / "smb.conf").write_text("\n".join(lines) + "\n")
        proc, port, _log = spawn(root, "--config", str(root / "smb.conf"), port=port)
        procs.append(proc)
        return port

    yield run
    for proc in procs:
        stop(proc)


@pytest.fixture(scope="module")
def hooked(serve):
    return serve("smbd:FSCTL_SMBTORTURE = yes")


@pytest.fixture(scope="module")
def windows_like(serve):
    return serve("smbd:FSCTL_SMBTORTURE = yes", "smb2 disable oplock break retry = yes")


@pytest.fixture(scope="module")
def plain(serve):
    return serve()


class Client:
    """One client (one ClientGuid) with `channels` connections bound to one session."""

    def __init__(self, port: int, channels: int = 1):
        guid = os.urandom(16)
        self.conns = [connect(port, guid=guid)]
        self.session = self.conns[0].logon(USER, PASSWORD)
        self.tree = self.conns[0].tree(self.session, "rw")
        self.channel_sessions = [self.session]
        for _ in range(channels - 1):
            c = connect(port, guid=guid)
            channel, r = bind(c, self.session)
            assert r.status == wire.STATUS_SUCCESS
            self.conns.append(c)
            self.channel_sessions.append(channel)

    def open(self, name: str, oplock: int = 0, lease: bytes | None = None, state: int = 0):
        contexts = [(b"RqLs", struct.pack("<16sIIQ", lease, state, 0, 0))] if lease else []
        r = self.tree.request(wire.CREATE, create_body(name, READ_WRITE, wire.FILE_OPEN_IF, 0,
                                                       contexts=contexts, oplock=oplock))
        assert r.status == wire.STATUS_SUCCESS, r
        return r

    def ack_oplock(self, n: int, fid: bytes, level: int):
        return self.conns[n].request(wire.OPLOCK_BREAK, struct.pack("<HBBI16s", 24, level, 0, 0, fid),
                                     session=self.channel_sessions[n], tree_id=self.tree.id)

    def ack_lease(self, n: int, key: bytes, state: int):
        return self.conns[n].request(wire.OPLOCK_BREAK, struct.pack("<HHI16sIQ", 36, 0, 0, key, state, 0),
                                     session=self.channel_sessions[n], tree_id=self.tree.id)

    def close(self):
        for c in self.conns:
            c.close()


def force_unacked(c: RawClient):
    """Samba's test control, sent as smbtorture sends it: with no session."""
    return c.request(wire.IOCTL, ioctl_body(FID_ANY, FORCE_UNACKED, max_output=0))


def next_break(c: RawClient, wait: float) -> bytes | None:
    """The body of the next break notification on the connection within `wait` seconds
    (None: none came); raises Disconnected where the server closed the connection."""
    deadline = time.monotonic() + wait
    try:
        while time.monotonic() < deadline:
            c.sock.settimeout(max(deadline - time.monotonic(), 0.05))
            try:
                frame = c.recv_frame()
            except NoAnswer:
                return None
            for r in c.parse(frame):
                if r.header.message_id == BREAK_ID and r.header.command == wire.OPLOCK_BREAK:
                    return r.body
                c.stray.append(r)
        return None
    finally:
        c.sock.settimeout(30)


def disconnected_within(c: RawClient, wait: float) -> bool:
    deadline = time.monotonic() + wait
    c.sock.settimeout(0.2)
    try:
        while time.monotonic() < deadline:
            try:
                if not c.sock.recv(65536):
                    return True
            except socket.timeout:
                continue
            except OSError:
                return True
        return False
    finally:
        c.sock.settimeout(30)


def start_open(port: int, name: str):
    """Another client's CREATE of the file, which waits for a break: (client, MessageId)."""
    other = Client(port)
    msg = other.tree.message(wire.CREATE, create_body(name, wire.GENERIC_READ, wire.FILE_OPEN, 0))
    other.conns[0].send([msg])
    mid = wire.Header.parse(msg).message_id
    assert other.conns[0].response_to(mid).status == wire.STATUS_PENDING
    return other, mid


def test_an_undelivered_oplock_break_goes_on_the_sessions_next_channel(hooked):
    a = Client(hooked, channels=2)
    fid = a.open("f1", oplock=BATCH).file_id
    assert force_unacked(a.conns[0]).status == wire.STATUS_SUCCESS
    b, mid = start_open(hooked, "f1")
    started = time.monotonic()
    first = next_break(a.conns[0], 5)
    assert first is not None and first[2] == LEVEL_II        # on the oldest channel first
    assert next_break(a.conns[1], 10) == first                # then, unacknowledged, on the next
    assert 1 <= time.monotonic() - started < 10
    assert disconnected_within(a.conns[0], 5)                 # the lost channel is closed
    assert a.ack_oplock(1, fid, LEVEL_II).status == wire.STATUS_SUCCESS
    assert b.conns[0].response_to(mid).status == wire.STATUS_SUCCESS
    a.close()
    b.close()


def test_an_undelivered_lease_break_goes_on_the_clients_next_connection(hooked):
    a = Client(hooked, channels=2)
    key = os.urandom(16)
    a.open("f2", oplock=LEASE, lease=key, state=R | W | H)
    assert force_unacked(a.conns[0]).status == wire.STATUS_SUCCESS
    b, mid = start_open(hooked, "f2")
    first = next_break(a.conns[0], 5)
    assert first is not None and first[8:24] == key
    assert next_break(a.conns[1], 10) == first
    new_state = struct.unpack_from("<I", first, 28)[0]
    assert a.ack_lease(1, key, new_state).status == wire.STATUS_SUCCESS
    assert b.conns[0].response_to(mid).status == wire.STATUS_SUCCESS
    a.close()
    b.close()


def test_a_client_whose_last_channel_is_lost_lets_the_opener_go_at_once(hooked):
    """(smbtorture's smb2.oplock.batch22b) The holder's only channel does not acknowledge the
    break: it is closed, its session ends with its open, and the other client's CREATE is
    answered within seconds, not after the 35 s break timeout, with the batch oplock."""
    a = Client(hooked)
    a.open("f3", oplock=BATCH)
    assert force_unacked(a.conns[0]).status == wire.STATUS_SUCCESS
    b = Client(hooked)
    msg = b.tree.message(wire.CREATE, create_body("f3", READ_WRITE, wire.FILE_OPEN, 0, oplock=BATCH))
    b.conns[0].send([msg])
    mid = wire.Header.parse(msg).message_id
    started = time.monotonic()
    assert next_break(a.conns[0], 5) is not None
    r = b.conns[0].response_to(mid)
    if r.status == wire.STATUS_PENDING:
        r = b.conns[0].response_to(mid)
    assert r.status == wire.STATUS_SUCCESS and r.body[2] == BATCH
    assert time.monotonic() - started < 15
    assert disconnected_within(a.conns[0], 2)
    a.close()
    b.close()


def test_without_retry_an_oplock_break_goes_on_the_newest_channel_once(windows_like):
    a = Client(windows_like, channels=2)
    a.open("f4", oplock=BATCH)
    assert force_unacked(a.conns[1]).status == wire.STATUS_SUCCESS
    b, _mid = start_open(windows_like, "f4")
    assert next_break(a.conns[1], 5) is not None              # the newest channel
    assert disconnected_within(a.conns[1], 10)                # lost ...
    assert next_break(a.conns[0], 3) is None                  # ... and not sent again
    a.close()
    b.close()


def test_a_healthy_connections_break_is_delivered_and_not_sent_again(hooked):
    """Without the test control: loopback's TCP acknowledges the break, the channel stays,
    the other channel hears nothing (the delivery check waits at most 6 s)."""
    a = Client(hooked, channels=2)
    fid = a.open("f5", oplock=BATCH).file_id
    b, mid = start_open(hooked, "f5")
    assert next_break(a.conns[0], 5) is not None
    assert next_break(a.conns[1], 8) is None
    assert a.conns[0].echo().status == wire.STATUS_SUCCESS
    assert a.ack_oplock(0, fid, LEVEL_II).status == wire.STATUS_SUCCESS
    assert b.conns[0].response_to(mid).status == wire.STATUS_SUCCESS
    a.close()
    b.close()


def test_the_test_control_is_off_by_default(plain):
    c = connect(plain)
    r = force_unacked(c)
    assert r.status != wire.STATUS_SUCCESS           # (no session: refused as any IOCTL is)
    c.close()
    a = Client(plain)
    r = a.tree.request(wire.IOCTL, ioctl_body(FID_ANY, FORCE_UNACKED, max_output=0))
    assert r.status == wire.STATUS_NOT_SUPPORTED
    a.close()


def test_the_test_control_takes_no_input(hooked):
    c = connect(hooked)
    r = c.request(wire.IOCTL, ioctl_body(FID_ANY, FORCE_UNACKED, b"x", max_output=0))
    assert r.status == wire.STATUS_INVALID_PARAMETER
    c.close()


def test_a_lost_holder_breaks_nothing_on_its_way_out(hooked):
    """All of a client's channels close while a break is on its way: nothing is sent to
    another client, and the opener goes on."""
    a = Client(hooked, channels=3)
    a.open("f6", oplock=BATCH)
    b, mid = start_open(hooked, "f6")
    assert next_break(a.conns[0], 5) is not None
    a.close()
    assert b.conns[0].response_to(mid).status == wire.STATUS_SUCCESS
    assert next_break(b.conns[0], 2) is None
    b.close()


def test_the_test_control_changes_only_the_connection_that_asks(hooked):
    """Another client's connection asks for the control: this client's breaks are still
    delivered, and its connection stays."""
    other = Client(hooked)
    assert force_unacked(other.conns[0]).status == wire.STATUS_SUCCESS
    a = Client(hooked)
    fid = a.open("f7", oplock=BATCH).file_id
    b, mid = start_open(hooked, "f7")
    assert next_break(a.conns[0], 5) is not None
    assert not disconnected_within(a.conns[0], 7)
    assert a.ack_oplock(0, fid, LEVEL_II).status == wire.STATUS_SUCCESS
    assert b.conns[0].response_to(mid).status == wire.STATUS_SUCCESS
    for client in (other, a, b):
        client.close()


@pytest.fixture(scope="module")
def guests(tmp_path_factory):
    """A server admitting guests (`--guest`) to its one writable share `rw`."""
    root = tmp_path_factory.mktemp("guest-breaks")
    (root / "rw").mkdir()
    proc, port, _log = spawn(root, str(root / "rw"), "--share", "rw", "--guest")
    yield port
    stop(proc)


def test_a_guests_oplock_is_broken_like_anyone_elses(guests):
    """A guest's session has no key, and so no signing key on its channel: its channel must
    carry breaks all the same, or every conflicting open waits 35 s while the guest, never
    told, keeps writing from its cache."""
    guest = connect(guests)
    gs = guest.logon("no-such-user", "whatever")
    assert gs.flags & wire.SESSION_FLAG_IS_GUEST
    gtree = guest.tree(gs, "rw")
    r = gtree.request(wire.CREATE, create_body("cached.txt", READ_WRITE, wire.FILE_OPEN_IF, 0, oplock=BATCH))
    assert r.status == wire.STATUS_SUCCESS and r.raw[66] == BATCH
    fid = r.raw[64 + 64:64 + 80]
    user = connect(guests)
    us = user.logon(USER, PASSWORD)
    utree = user.tree(us, "rw")
    msg = utree.message(wire.CREATE, create_body("cached.txt", READ_WRITE, wire.FILE_OPEN_IF, 0))
    user.send([msg])
    started = time.monotonic()
    body = next_break(guest, 5)
    assert body is not None, "the guest was never sent the break"
    assert body[2] == LEVEL_II or body[2] == 0
    ack = guest.request(wire.OPLOCK_BREAK, struct.pack("<HBBI16s", 24, body[2], 0, 0, fid),
                        session=gs, tree_id=gtree.id)
    assert ack.status == wire.STATUS_SUCCESS
    answer = user.response_to(wire.Header.parse(msg).message_id)
    if answer.status == wire.STATUS_PENDING:          # (the interim answer, then the final one)
        answer = user.response_to(wire.Header.parse(msg).message_id)
    assert answer.status == wire.STATUS_SUCCESS
    assert time.monotonic() - started < 10
    guest.close()
    user.close()


def test_a_lease_break_never_goes_to_a_connection_that_only_borrowed_the_clients_guid(plain):
    """A connection that NEGOTIATEs another client's ClientGuid (no secret) and logs on
    anonymously, before that client connects, is the client's oldest connection: a lease
    break sent there would never reach the client, whose cache would go stale. Lease breaks
    go only where the open's session, or a logon other than an anonymous one, is."""
    guid = os.urandom(16)
    intruder = connect(plain, guid=guid)
    sys.path.insert(0, str(Path(__file__).parents[1] / "security"))
    from test_anonymous import anonymous_exchange
    assert anonymous_exchange(intruder).status == wire.STATUS_SUCCESS
    victim = connect(plain, guid=guid)
    vs = victim.logon(USER, PASSWORD)
    vtree = victim.tree(vs, "rw")
    key = os.urandom(16)
    r = vtree.request(wire.CREATE, create_body("leased.txt", READ_WRITE, wire.FILE_OPEN_IF, 0, oplock=LEASE,
                                               contexts=[(b"RqLs", struct.pack("<16sIIQ", key, R | W | H, 0, 0))]))
    assert r.status == wire.STATUS_SUCCESS
    b, mid = start_open(plain, "leased.txt")
    assert next_break(intruder, 2) is None
    got = next_break(victim, 5)
    assert got is not None and got[8:24] == key
    new_state = struct.unpack_from("<I", got, 28)[0]
    ack = victim.request(wire.OPLOCK_BREAK, struct.pack("<HHI16sIQ", 36, 0, 0, key, new_state, 0),
                         session=vs, tree_id=vtree.id)
    assert ack.status == wire.STATUS_SUCCESS
    answer = b.conns[0].response_to(mid)
    if answer.status == wire.STATUS_PENDING:
        answer = b.conns[0].response_to(mid)
    assert answer.status == wire.STATUS_SUCCESS
    for c in (intruder, victim):
        c.close()
    b.close()


@pytest.fixture(scope="module")
def sealed_share(tmp_path_factory):
    """A server with `rw` (plain) and `sealed` (smb encrypt = required on the share only)."""
    root = tmp_path_factory.mktemp("sealed")
    (root / "rw").mkdir()
    port = free_port()
    (root / "smb.conf").write_text("\n".join([
        "[global]", f"listen = 127.0.0.1:{port}",
        "[rw]", f"path = {root / 'rw'}", "read only = no",
        "[sealed]", f"path = {root / 'rw'}", "read only = no", "smb encrypt = required"]) + "\n")
    proc, port, _log = spawn(root, "--config", str(root / "smb.conf"), port=port)
    yield port
    stop(proc)


def test_a_held_create_on_an_encrypted_share_goes_on_after_an_unsealed_request(sealed_share):
    """Only the share asks for encryption, so the waiting client's requests on other trees
    (IPC$ here) arrive unsealed. The held CREATE was sealed: when the break is answered it goes
    on as the sealed request it was, whatever frame the connection handled last."""
    holder = connect(sealed_share)
    hs = holder.logon(USER, PASSWORD)
    htree = holder.tree(hs, "sealed")
    r = htree.request(wire.CREATE, create_body("held.txt", READ_WRITE, wire.FILE_OPEN_IF, 0, oplock=BATCH))
    assert r.status == wire.STATUS_SUCCESS and r.encrypted and r.raw[66] == BATCH
    fid = r.raw[64 + 64:64 + 80]
    opener = connect(sealed_share)
    us = opener.logon(USER, PASSWORD)
    sealed, ipc = opener.tree(us, "sealed"), opener.tree(us, "IPC$")
    msg = sealed.message(wire.CREATE, create_body("held.txt", READ_WRITE, wire.FILE_OPEN_IF, 0))
    opener.send([msg])
    mid = wire.Header.parse(msg).message_id
    assert opener.response_to(mid).status == wire.STATUS_PENDING
    body = next_break(holder, 5)
    assert body is not None, "the holder was never sent the break"
    unsealed = ipc.request(wire.CREATE, create_body("srvsvc", READ_WRITE, wire.FILE_OPEN, 0))
    assert unsealed.status == wire.STATUS_SUCCESS and not unsealed.encrypted
    ack = holder.request(wire.OPLOCK_BREAK, struct.pack("<HBBI16s", 24, body[2], 0, 0, fid),
                         session=hs, tree_id=htree.id)
    assert ack.status == wire.STATUS_SUCCESS
    answer = opener.response_to(mid)
    assert answer.status == wire.STATUS_SUCCESS and answer.encrypted
    holder.close()
    opener.close()


def test_a_close_waits_for_the_test_controls_busy_open(hooked):
    """FSCTL_SMBTORTURE_FSP_ASYNC_SLEEP keeps the open busy (as file I/O under way on it) for
    the milliseconds its byte says: a CLOSE of it sent on another channel meanwhile is
    answered after that, and the control is answered SUCCESS, not FILE_CLOSED (Samba bug
    14769)."""
    a = Client(hooked, channels=2)
    fid = a.open("busy").file_id
    sleep = a.tree.message(wire.IOCTL, ioctl_body(fid, ASYNC_SLEEP, bytes([200]), max_output=0))
    close = a.conns[1].message(wire.CLOSE, close_body(fid), session=a.channel_sessions[1],
                               tree_id=a.tree.id)
    a.conns[0].send([sleep])
    time.sleep(0.05)                                     # (the control under way)
    started = time.monotonic()
    a.conns[1].send([close])
    closed = a.conns[1].response_to(wire.Header.parse(close).message_id)
    assert time.monotonic() - started >= 0.1             # (answered at once, it took ~1 ms)
    slept = a.conns[0].response_to(wire.Header.parse(sleep).message_id)
    assert (slept.status, closed.status) == (wire.STATUS_SUCCESS, wire.STATUS_SUCCESS)
    a.close()


def test_the_busy_control_is_off_by_default_and_takes_one_byte(plain, hooked):
    a = Client(plain)
    fid = a.open("busy-plain").file_id
    r = a.tree.request(wire.IOCTL, ioctl_body(fid, ASYNC_SLEEP, bytes([1]), max_output=0))
    assert r.status == wire.STATUS_NOT_SUPPORTED
    a.close()
    a = Client(hooked)
    fid = a.open("busy-hooked").file_id
    for given in (b"", b"\x01\x01"):
        r = a.tree.request(wire.IOCTL, ioctl_body(fid, ASYNC_SLEEP, given, max_output=0))
        assert r.status == wire.STATUS_INVALID_PARAMETER
    a.close()
