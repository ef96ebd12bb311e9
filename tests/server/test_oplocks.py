"""Oplocks across real smbprotocol connections to a real server: granted on CREATE, broken by
another client's conflicting open (which waits for the answer), by writes and locks (level II),
and the acknowledgements a client may or may not send.

smbprotocol requests oplocks but has no handler for the server's break notification (MessageId
-1): `Client` gives it one, a pending request under that MessageId, and sends the
acknowledgement itself (`BreakAck`)."""
import struct
import time
import uuid

import pytest

pytest.importorskip("smbprotocol")

from smbprotocol.connection import Connection, Request  # noqa: E402
from smbprotocol.exceptions import SMBResponseException  # noqa: E402
from smbprotocol.header import Commands, SMB2HeaderRequest  # noqa: E402
from smbprotocol.open import (CreateDisposition, CreateOptions, FileAttributes,  # noqa: E402
                              ImpersonationLevel, LockFlags, Open, RequestedOplockLevel,
                              ShareAccess, SMB2LockElement)
from smbprotocol.session import Session  # noqa: E402
from smbprotocol.tree import TreeConnect  # noqa: E402

from servers import PASSWORD, USER  # noqa: E402
from waiting_calls import Background, status_of  # noqa: E402
from smbconf_server import smbconf  # noqa: E402,F401  (the fixture)

NONE, II, EXCLUSIVE, BATCH = 0x00, 0x01, 0x08, 0x09
ALL_SHARE = ShareAccess.FILE_SHARE_READ | ShareAccess.FILE_SHARE_WRITE | ShareAccess.FILE_SHARE_DELETE
READ_WRITE = 0x0012019F         # FILE_GENERIC_READ | FILE_GENERIC_WRITE
READ = 0x00120089               # FILE_GENERIC_READ
BREAK_ID = 0xFFFFFFFFFFFFFFFF
STATUS_INVALID_OPLOCK_PROTOCOL = 0xC00000E3
STATUS_INVALID_PARAMETER = 0xC000000D
STATUS_FILE_CLOSED = 0xC0000128
STATUS_SHARING_VIOLATION = 0xC0000043


class BreakAck:
    """An OPLOCK_BREAK acknowledgement (MS-SMB2 2.2.24.1), sent through smbprotocol."""

    COMMAND = Commands.SMB2_OPLOCK_BREAK

    def __init__(self, level: int, file_id: bytes):
        self.data = struct.pack("<HBBI", 24, level, 0, 0) + file_id

    def pack(self) -> bytes:
        return self.data

    def __len__(self) -> int:
        return len(self.data)


class Client:
    def __init__(self, port: int, share: str = "share"):
        self.conn = Connection(uuid.uuid4(), "127.0.0.1", port)
        self.conn.connect()
        self.session = Session(self.conn, USER, PASSWORD, require_encryption=False)
        self.session.connect()
        self.tree = TreeConnect(self.session, rf"\\127.0.0.1\{share}")
        self.tree.connect()
        # where the break notifications land (the receiving thread looks requests up by MessageId)
        self.breaks = Request(SMB2HeaderRequest(), None, self.conn, session_id=self.session.session_id)
        self.conn.outstanding_requests[BREAK_ID] = self.breaks

    def open(self, name: str, oplock: int = NONE, access: int = READ_WRITE, share: int = ALL_SHARE,
             disposition: int = CreateDisposition.FILE_OPEN_IF, directory: bool = False) -> Open:
        o = Open(self.tree, name)
        o.create(ImpersonationLevel.Impersonation, access,
                 FileAttributes.FILE_ATTRIBUTE_DIRECTORY if directory else FileAttributes.FILE_ATTRIBUTE_NORMAL,
                 share, disposition,
                 CreateOptions.FILE_DIRECTORY_FILE if directory else CreateOptions.FILE_NON_DIRECTORY_FILE,
                 oplock_level=oplock)
        return o

    def next_break(self, timeout: float = 10.0) -> tuple[int, bytes] | None:
        """The next break notification: (level, FileId), None if none came in time."""
        if not self.breaks.response_event.wait(timeout):
            return None
        with self.breaks.response_event_lock:
            data = self.breaks.response["data"].get_value()
            self.breaks.response_event.clear()
        return data[2], data[8:24]

    def ack(self, o: Open, level: int, file_id: bytes | None = None) -> int:
        """Acknowledges a break; the level the response gives (an error status raises)."""
        req = self.conn.send(BreakAck(level, file_id or o.file_id), sid=self.session.session_id,
                             tid=self.tree.tree_connect_id)
        return self.conn.receive(req)["data"].get_value()[2]

    def close(self):
        self.conn.outstanding_requests.pop(BREAK_ID, None)
        self.conn.disconnect(True)


@pytest.fixture
def clients(server):
    made = []

    def client(share: str = "share") -> Client:
        made.append(Client(server["port"], share))
        return made[-1]
    yield client
    for c in made:
        c.close()


def test_levels_granted_when_alone(clients):
    a = clients()
    assert a.open("batch", BATCH).oplock_level == BATCH
    assert a.open("exclusive", EXCLUSIVE).oplock_level == EXCLUSIVE
    assert a.open("level2", II).oplock_level == II
    assert a.open("none", NONE).oplock_level == NONE
    assert a.open("dir", BATCH, access=READ, directory=True).oplock_level == NONE


def test_second_open_gets_level2_only(clients):
    a, b = clients(), clients()
    first = a.open("f", NONE)
    assert b.open("f", BATCH).oplock_level == II     # another open that reads: no caching of writes
    first.close()
    stat_only = a.open("g", NONE, access=0x80)         # FILE_READ_ATTRIBUTES only
    assert b.open("g", BATCH).oplock_level == BATCH    # an attribute-only open does not count
    stat_only.close()


def test_conflicting_open_waits_for_the_acknowledgement(clients):
    a, b = clients(), clients()
    held = a.open("f", BATCH)
    assert held.oplock_level == BATCH
    opener = Background(lambda: b.open("f", BATCH, access=READ))
    level, fid = a.next_break()
    assert (level, fid) == (II, held.file_id)
    time.sleep(0.3)
    assert not opener.done.is_set()           # held until the holder answers
    assert a.ack(held, II) == II
    assert opener.wait().oplock_level == II  # both read-cache now
    assert a.next_break(0.3) is None


def test_holder_closing_lets_the_opener_go(clients):
    a, b = clients(), clients()
    held = a.open("f", EXCLUSIVE)
    opener = Background(lambda: b.open("f", BATCH))
    assert a.next_break()[0] == II
    held.close()
    assert opener.wait().oplock_level == BATCH     # alone now


def test_overwrite_breaks_to_none(clients):
    a, b = clients(), clients()
    held = a.open("f", BATCH)
    opener = Background(lambda: b.open("f", NONE, disposition=CreateDisposition.FILE_OVERWRITE_IF))
    assert a.next_break()[0] == NONE
    assert a.ack(held, II) == NONE                # asked for none: none, whatever the answer says
    opener.wait()


def test_sharing_violation_breaks_batch_only(clients):
    a, b = clients(), clients()
    exclusive = a.open("e", EXCLUSIVE, share=0)
    assert status_of(lambda: b.open("e", NONE, access=READ)) == STATUS_SHARING_VIOLATION
    assert a.next_break(0.3) is None               # an exclusive oplock is not broken for it
    exclusive.close()
    batch = a.open("b", BATCH, share=0)
    opener = Background(lambda: b.open("b", NONE, access=READ))
    assert a.next_break()[0] == II                # the holder may close the handle it keeps
    a.ack(batch, II)
    with pytest.raises(SMBResponseException) as refused:
        opener.wait()
    assert refused.value.status == STATUS_SHARING_VIOLATION


def test_write_and_lock_break_level2_to_none(clients):
    a, b = clients(), clients()
    first = a.open("f", II)
    second = b.open("f", II)
    assert (first.oplock_level, second.oplock_level) == (II, II)
    second.write(b"x", 0)
    assert a.next_break() == (NONE, first.file_id)
    assert b.next_break() == (NONE, second.file_id)    # the writer's own level II too
    # a level II break to none expects no answer: one is a protocol error
    assert status_of(lambda: a.ack(first, NONE)) == STATUS_INVALID_OPLOCK_PROTOCOL
    third = a.open("g", II)
    b.open("g", II)
    e = SMB2LockElement()
    e["offset"], e["length"], e["flags"] = 0, 1, LockFlags.SMB2_LOCKFLAG_SHARED_LOCK | \
        LockFlags.SMB2_LOCKFLAG_FAIL_IMMEDIATELY
    b.open("g", NONE).lock([e])
    assert a.next_break() == (NONE, third.file_id)


def test_acknowledgements_that_are_wrong(clients):
    a, b = clients(), clients()
    held = a.open("f", BATCH)
    assert status_of(lambda: a.ack(held, II)) == STATUS_INVALID_OPLOCK_PROTOCOL   # no break sent
    opener = Background(lambda: b.open("f", NONE, access=READ))
    a.next_break()
    assert status_of(lambda: a.ack(held, BATCH)) == STATUS_INVALID_PARAMETER      # not II or none
    assert status_of(lambda: a.ack(held, II, file_id=b"\x01" * 16)) == STATUS_FILE_CLOSED
    # another session cannot answer for the holder: to it the FileId names nothing
    assert status_of(lambda: b.ack(held, NONE, file_id=held.file_id)) == STATUS_FILE_CLOSED
    assert not opener.done.is_set()
    assert a.ack(held, NONE) == NONE
    opener.wait()
    assert status_of(lambda: a.ack(held, NONE)) == STATUS_INVALID_OPLOCK_PROTOCOL  # answered once


def test_disconnected_holder_lets_the_opener_go(clients):
    a, b = clients(), clients()
    a.open("f", BATCH)
    opener = Background(lambda: b.open("f", BATCH))
    assert a.next_break() is not None
    a.conn.disconnect(True)
    assert opener.wait().oplock_level == BATCH


def test_silent_holder_times_out_and_stalls_nobody_else(short_break_timeout, clients):
    """A holder that never answers: the opener waits the break timeout (shortened here; 35 s
    by default, see the next test), no longer; other files are opened meanwhile without
    waiting."""
    a, b, c = clients(), clients(), clients()
    a.open("f", BATCH)
    opener = Background(lambda: b.open("f", BATCH, access=READ))
    assert a.next_break() is not None
    started = time.monotonic()
    c.open("other", BATCH).close()
    assert time.monotonic() - started < 2
    opened = opener.wait(short_break_timeout + 10)
    assert short_break_timeout - 0.5 <= opener.elapsed <= short_break_timeout + 5
    assert opened.oplock_level == II               # the silent holder keeps an open, no oplock


@pytest.mark.parametrize("variable", [None, "", "0", "-1", "35.5", "1e9", "nan", "soon"])
def test_the_break_timeout_is_35_seconds_unless_shortened(monkeypatch, variable):
    """A server's break timeout is Windows' and Samba's 35 s; SMBRING_BREAK_TIMEOUT (which the
    tests above use) only shortens it: a value that is not a number of seconds in (0, 35] is
    passed over. (The server's own timeout table is read, not waited for.)"""
    from smbring.server.server import Server
    if variable is None:
        monkeypatch.delenv("SMBRING_BREAK_TIMEOUT", raising=False)
    else:
        monkeypatch.setenv("SMBRING_BREAK_TIMEOUT", variable)
    assert Server({}, passdb_path="/nonexistent").state.oplocks.timeout == 35.0
    monkeypatch.setenv("SMBRING_BREAK_TIMEOUT", "5")
    assert Server({}, passdb_path="/nonexistent").state.oplocks.timeout == 5.0


def test_flood_of_held_opens_is_bounded(clients):
    """Opens held for a break count against `max pending requests`; their end leaves
    nothing behind (a new holder gets a batch oplock and a plain open gets through)."""
    a, b = clients(), clients()
    held = a.open("f", BATCH)
    openers = [Background(lambda: b.open("f", NONE, access=READ)) for _ in range(20)]
    assert a.next_break()[0] == II
    time.sleep(0.5)
    a.ack(held, II)
    for o in openers:
        o.wait().close()
    held.close()
    assert a.open("f", BATCH).oplock_level == BATCH


def test_share_options(smbconf, tmp_path):
    server = smbconf("", {"share": "read only = no", "nooplocks": "read only = no\noplocks = no",
                          "nolevel2": "read only = no\nlevel2 oplocks = no"})
    clients = [Client(server.port, name) for name in ("share", "nooplocks", "nolevel2", "nolevel2")]
    try:
        plain, none, no2, other = clients
        assert plain.open("f", BATCH).oplock_level == BATCH
        assert none.open("f", BATCH).oplock_level == NONE
        held = no2.open("f", BATCH)
        assert held.oplock_level == BATCH
        opener = Background(lambda: other.open("f", II, access=READ))
        assert no2.next_break()[0] == NONE           # no level II to break to
        assert no2.ack(held, II) == NONE
        assert opener.wait().oplock_level == NONE
    finally:
        for c in clients:
            c.close()


def test_veto_oplock_files_get_no_oplock(smbconf):
    """`veto oplock files` (Samba's, for databases several clients write): a matching name in
    any case and any directory gets no oplock, as on a share with `oplocks = no`; other
    names on the share get theirs."""
    server = smbconf("", {"share": "read only = no\nveto oplock files = /*.mdb/lock?.db/"})
    (server.root / "share" / "sub").mkdir()
    c = Client(server.port, "share")
    try:
        for name in ("data.mdb", "sub\\DATA.MDB", "lock1.db"):
            assert c.open(name, BATCH).oplock_level == NONE, name
        for name in ("data.mdb.txt", "lock12.db", "plain.txt"):
            assert c.open(name, BATCH).oplock_level == BATCH, name
    finally:
        c.close()


def test_kernel_oplocks_refused(smbconf, tmp_path):
    from smbring.server.config import ConfigError, load
    conf = tmp_path / "k.conf"
    conf.write_text(f"[global]\n[s]\npath = {tmp_path}\nkernel oplocks = yes\n")
    with pytest.raises(ConfigError, match="kernel oplocks"):
        load(str(conf))
    conf.write_text(f"[global]\n[s]\npath = {tmp_path}\nkernel oplocks = no\n")
    load(str(conf))


def test_held_create_within_a_compound(clients):
    """A CREATE held for a break in the middle of a related compound (its holder on the same
    connection): the chain is split there, and the request after it runs on the new open."""
    a = clients()
    held = a.open("f", BATCH)
    second = Open(a.tree, "f")
    create, create_done = second.create(
        ImpersonationLevel.Impersonation, READ, FileAttributes.FILE_ATTRIBUTE_NORMAL, ALL_SHARE,
        CreateDisposition.FILE_OPEN, CreateOptions.FILE_NON_DIRECTORY_FILE, send=False)
    close, close_done = second.close(send=False)
    requests = a.conn.send_compound([create, close], a.session.session_id, a.tree.tree_connect_id,
                                    related=True)
    level, _fid = a.next_break()
    assert level == II
    assert a.ack(held, II) == II
    answers = Background(lambda: (create_done(requests[0]), close_done(requests[1])))
    answers.wait()              # both answered, without an error
    assert second.oplock_level == NONE
