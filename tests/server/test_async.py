"""Requests that wait: blocking byte-range locks and CHANGE_NOTIFY, answered STATUS_PENDING
first and completed later (or cancelled), across two real smbprotocol connections."""
import threading
import time
import uuid

import pytest

pytest.importorskip("smbprotocol")

from smbprotocol.change_notify import CompletionFilter, FileAction, FileSystemWatcher  # noqa: E402
from smbprotocol.connection import Connection  # noqa: E402
from smbprotocol.exceptions import SMBResponseException  # noqa: E402
from smbprotocol.open import (CreateDisposition, CreateOptions, FileAttributes,  # noqa: E402
                              ImpersonationLevel, LockFlags, Open, ShareAccess,
                              SMB2LockElement)
from smbprotocol.session import Session  # noqa: E402
from smbprotocol.tree import TreeConnect  # noqa: E402

from servers import PASSWORD, USER  # noqa: E402

ALL_SHARE = ShareAccess.FILE_SHARE_READ | ShareAccess.FILE_SHARE_WRITE | ShareAccess.FILE_SHARE_DELETE


class Client:
    def __init__(self, port: int):
        self.conn = Connection(uuid.uuid4(), "127.0.0.1", port)
        self.conn.connect()
        self.session = Session(self.conn, USER, PASSWORD, require_encryption=False)
        self.session.connect()
        self.tree = TreeConnect(self.session, r"\\127.0.0.1\share")
        self.tree.connect()

    def open(self, name: str, directory: bool = False) -> Open:
        o = Open(self.tree, name)
        o.create(ImpersonationLevel.Impersonation, 0x001F01FF,
                 FileAttributes.FILE_ATTRIBUTE_DIRECTORY if directory else FileAttributes.FILE_ATTRIBUTE_NORMAL,
                 ALL_SHARE, CreateDisposition.FILE_OPEN_IF,
                 CreateOptions.FILE_DIRECTORY_FILE if directory else CreateOptions.FILE_NON_DIRECTORY_FILE)
        return o

    def close(self):
        self.conn.disconnect(True)


def element(offset: int, length: int, flags: int) -> SMB2LockElement:
    e = SMB2LockElement()
    e["offset"], e["length"], e["flags"] = offset, length, flags
    return e


@pytest.fixture
def clients(server):
    a, b = Client(server["port"]), Client(server["port"])
    yield a, b
    a.close()
    b.close()


def in_thread(fn):
    result = {}

    def run():
        try:
            result["value"] = fn()
        except Exception as e:  # handed to the test
            result["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, result


def test_blocking_lock_waits_until_the_other_connection_unlocks(clients):
    a, b = clients
    fa, fb = a.open("locked.bin"), b.open("locked.bin")
    fa.lock([element(100, 10, LockFlags.SMB2_LOCKFLAG_EXCLUSIVE_LOCK | LockFlags.SMB2_LOCKFLAG_FAIL_IMMEDIATELY)])
    with pytest.raises(SMBResponseException, match="0xc0000055"):  # LOCK_NOT_GRANTED
        fb.lock([element(105, 1, LockFlags.SMB2_LOCKFLAG_SHARED_LOCK | LockFlags.SMB2_LOCKFLAG_FAIL_IMMEDIATELY)])
    t, result = in_thread(lambda: fb.lock([element(105, 1, LockFlags.SMB2_LOCKFLAG_SHARED_LOCK)]))
    time.sleep(0.5)
    assert t.is_alive(), result            # pending, not refused
    fa.lock([element(100, 10, LockFlags.SMB2_LOCKFLAG_UNLOCK)])
    t.join(10)
    assert not t.is_alive() and "error" not in result, result
    # now b holds a shared lock: a's exclusive attempt fails at once
    with pytest.raises(SMBResponseException, match="0xc0000055"):
        fa.lock([element(100, 10, LockFlags.SMB2_LOCKFLAG_EXCLUSIVE_LOCK | LockFlags.SMB2_LOCKFLAG_FAIL_IMMEDIATELY)])


def test_pending_lock_ends_when_its_handle_closes(clients):
    a, b = clients
    fa, fb = a.open("closing.bin"), b.open("closing.bin")
    fa.lock([element(0, 1, LockFlags.SMB2_LOCKFLAG_EXCLUSIVE_LOCK | LockFlags.SMB2_LOCKFLAG_FAIL_IMMEDIATELY)])
    t, result = in_thread(lambda: fb.lock([element(0, 1, LockFlags.SMB2_LOCKFLAG_EXCLUSIVE_LOCK)]))
    time.sleep(0.3)
    assert t.is_alive()
    fb.close()
    t.join(10)
    assert not t.is_alive()
    assert getattr(result.get("error"), "status", None) == 0xC000007E, result   # RANGE_NOT_LOCKED


def test_change_notify_reports_another_clients_create_and_can_be_cancelled(clients):
    a, b = clients
    d = a.open("watched", directory=True)
    watcher = FileSystemWatcher(d)
    watcher.start(CompletionFilter.FILE_NOTIFY_CHANGE_FILE_NAME)
    time.sleep(0.3)
    assert not watcher.response_event.is_set()          # pending
    b.open(r"watched\new.txt").close()
    assert watcher.response_event.wait(10)
    actions = [(r["action"].get_value(), r["file_name"].get_value()) for r in watcher.result]
    assert actions == [(FileAction.FILE_ACTION_ADDED, "new.txt")]
    # a second watch on the same open waits again, until cancelled
    again = FileSystemWatcher(d)
    again.start(CompletionFilter.FILE_NOTIFY_CHANGE_FILE_NAME)
    time.sleep(0.3)
    assert not again.response_event.is_set()
    again.cancel()
    assert again.cancelled


def test_writes_sent_ahead_land_in_order_and_later_requests_see_them(clients, server):
    """A client may send WRITEs without waiting for their answers; the server writes while it
    reads on, yet overlapping WRITEs land in the order sent, and a READ or FLUSH sent right
    behind them sees every one (1 MiB writes go through the page-cache bypass, smaller ones
    not)."""
    a, _ = clients
    f = a.open("ahead.bin")
    mb = 1 << 20
    first, second = bytes([1]) * (2 * mb), bytes([2]) * mb
    tail = b"tail" * 1000
    def send(message_and_answer):
        message, answer = message_and_answer
        return answer, a.conn.send(message, a.session.session_id, a.tree.tree_connect_id)

    pending = [send(f.write(first, 0, send=False)),              # 0..2 MiB of ones
               send(f.write(second, mb // 2, send=False)),       # overlaps: twos from 0.5 MiB
               send(f.write(tail, 3 * mb, send=False)),          # small, past a hole
               send(f.write(second, 0, send=False))]             # overlaps the first again
    read = send(f.read(0, 3 * mb + len(tail), send=False))
    for answer, request in pending:
        answer(request)
    data = read[0](read[1])
    expect = bytearray(first + bytes(mb)) + tail
    expect[mb // 2:mb // 2 + mb] = second
    expect[0:mb] = second
    assert data == bytes(expect)
    f.flush()
    f.close()
    assert (server["share"] / "ahead.bin").read_bytes() == bytes(expect)
