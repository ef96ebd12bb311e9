"""A rename held for handle lease breaks, on the sans-I/O connection with the server's clock in
the test's hands: holders that take HANDLE caching back one after the other cannot hold it for
ever (past the break timeout it is refused STATUS_ACCESS_DENIED); one that answers in time lets
it go on."""
import struct

import smbcore
from sansio_client import Client

from smbring.smb import wire
from smbring.smb.oplocks import BREAK_TIMEOUT, Oplocks
from smbring.smb.server_state import ServerState

R, H = 0x1, 0x2
LEASE = 0xFF
READ_ATTRIBUTES = 0x80
STATUS_ACCESS_DENIED = 0xC0000022


def key(n: int) -> bytes:
    return bytes([n]) * 16


def lease(n: int, state: int):
    return [(b"RqLs", struct.pack("<16sIIQ", key(n), state, 0, 0))]


def ack(client: Client, n: int, state: int) -> int:
    return client.request(wire.OPLOCK_BREAK, struct.pack("<HHI16sIQ", 36, 0, 0, key(n), state, 0))[0]


def rename(client: Client, fid: bytes, name: str):
    n = wire.utf16(name)
    body = smbcore.set_info_body(fid, wire.INFO_FILE, 10, struct.pack("<B7xQI", 0, 0, len(n)) + n)
    return [status for status, _ in client.send(wire.SET_INFO, body)]


def setup(tmp_path):
    now = [0.0]
    state = ServerState(oplocks=Oplocks(clock=lambda: now[0]))
    a, b, c = (Client(tmp_path, state) for _ in range(3))
    renamer = a.open("f", contexts=lease(1, R | H), oplock=LEASE)
    b.open("f", contexts=lease(2, R | H), oplock=LEASE)
    c.open("f", contexts=lease(3, R | H), oplock=LEASE)
    assert rename(a, renamer, "g") == [wire.STATUS_PENDING]
    return now, a, b, c


def test_holders_taking_handle_caching_back_cannot_hold_a_rename_for_ever(tmp_path):
    now, a, b, c = setup(tmp_path)
    assert ack(b, 2, R) == 0
    assert a.outbox() == []                   # c's lease still has HANDLE caching
    # b takes HANDLE caching back at once, through an open that reads attributes only (such
    # an open waits for no break)
    b.open("f", access=READ_ATTRIBUTES, contexts=lease(4, R | H), oplock=LEASE)
    now[0] = BREAK_TIMEOUT + 1
    assert ack(c, 3, R) == 0
    assert [status for status, _ in a.outbox()] == [STATUS_ACCESS_DENIED]
    assert (tmp_path / "f").exists() and not (tmp_path / "g").exists()


def test_holders_answering_in_time_let_the_rename_go(tmp_path):
    now, a, b, c = setup(tmp_path)
    assert ack(b, 2, R) == 0
    now[0] = BREAK_TIMEOUT - 1
    assert ack(c, 3, R) == 0
    assert [status for status, _ in a.outbox()] == [0]
    assert (tmp_path / "g").exists() and not (tmp_path / "f").exists()


def test_a_silent_holder_loses_its_lease_and_the_rename_goes_on(tmp_path):
    now, a, b, c = setup(tmp_path)
    assert ack(b, 2, R) == 0
    now[0] = BREAK_TIMEOUT + 1
    c.conn.state.oplocks.expire()             # (the server's timeout sweep)
    assert [status for status, _ in a.outbox()] == [0]
    assert (tmp_path / "g").exists()
