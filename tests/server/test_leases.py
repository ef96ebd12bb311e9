"""Leases across real smbprotocol connections to a real server: the states granted, one lease
shared by the opens of one client's key, breaks (with their acknowledgements, epochs and
timeouts) caused by other clients' opens, writes, locks and renames, leases beside oplocks,
and `smb2 leases = no`.

smbprotocol sends lease create contexts but has no handler for the server's break
notifications (MessageId -1): `Client` collects them in a queue (`BreakInbox`), and sends the
acknowledgements itself (`LeaseBreakAck`)."""
import queue
import struct
import time
import uuid

import pytest

pytest.importorskip("smbprotocol")

from smbprotocol.connection import Connection, Dialects, Request  # noqa: E402
from smbprotocol.create_contexts import (CreateContextName,  # noqa: E402
                                         SMB2CreateContextRequest)
from smbprotocol.exceptions import SMBResponseException  # noqa: E402
from smbprotocol.header import Commands, SMB2HeaderRequest  # noqa: E402
from smbprotocol.open import (CreateDisposition, CreateOptions, FileAttributes,  # noqa: E402
                              FileInformationClass, ImpersonationLevel, LockFlags, Open,
                              ShareAccess, SMB2LockElement, SMB2SetInfoRequest)
from smbprotocol.session import Session  # noqa: E402
from smbprotocol.tree import TreeConnect  # noqa: E402

from servers import PASSWORD, USER  # noqa: E402
from waiting_calls import Background, status_of  # noqa: E402
from smbconf_server import smbconf  # noqa: E402,F401  (the fixture)

R, H, W = 0x1, 0x2, 0x4
RH, RW, RWH = R | H, R | W, R | W | H
LEASE, NONE, II, BATCH = 0xFF, 0x00, 0x01, 0x09
ALL_SHARE = ShareAccess.FILE_SHARE_READ | ShareAccess.FILE_SHARE_WRITE | ShareAccess.FILE_SHARE_DELETE
READ_WRITE = 0x0012019F         # FILE_GENERIC_READ | FILE_GENERIC_WRITE
READ = 0x00120089               # FILE_GENERIC_READ
DELETE = 0x00010000
BREAK_ID = 0xFFFFFFFFFFFFFFFF
ACK_REQUIRED, BREAK_IN_PROGRESS, PARENT_KEY_SET = 0x01, 0x02, 0x04
CAP_LEASING, CAP_DIRECTORY_LEASING = 0x02, 0x20
STATUS_INVALID_PARAMETER = 0xC000000D
STATUS_OBJECT_NAME_NOT_FOUND = 0xC0000034
STATUS_REQUEST_NOT_ACCEPTED = 0xC00000D0
STATUS_UNSUCCESSFUL = 0xC0000001
STATUS_SHARING_VIOLATION = 0xC0000043


def key(n: int) -> bytes:
    return struct.pack("<QQ", n, ~n & 0xFFFFFFFFFFFFFFFF)


class Raw:
    """A request body smbprotocol sends as it is."""

    def __init__(self, command, data: bytes):
        self.COMMAND, self.data = command, data

    def pack(self) -> bytes:
        return self.data

    def __len__(self) -> int:
        return len(self.data)


class BreakInbox(Request):
    """Where the server's break notifications land (the receiving thread looks requests up by
    MessageId, and sets `response`): each one is queued."""

    def __init__(self, conn, session_id):
        self.breaks = queue.Queue()
        super().__init__(SMB2HeaderRequest(), None, conn, session_id=session_id)

    @property
    def response(self):
        return None

    @response.setter
    def response(self, header):
        if header is not None:
            self.breaks.put(header["data"].get_value())


class Break:
    def __init__(self, data: bytes):
        (_size, self.epoch, self.flags, self.key, self.old,
         self.new) = struct.unpack_from("<HHI16sII", data)


class Client:
    def __init__(self, port: int, guid: uuid.UUID | None = None, dialect=None, share: str = "share",
                 user: str = USER, password: str = PASSWORD, directory_leasing: bool = True):
        self.conn = Connection(guid or uuid.uuid4(), "127.0.0.1", port)
        if directory_leasing:       # (announced as Windows announces it; smbprotocol does not)
            self.conn.client_capabilities |= CAP_DIRECTORY_LEASING
        self.conn.connect(dialect)
        self.session = Session(self.conn, user, password, require_encryption=False)
        self.session.connect()
        self.tree = TreeConnect(self.session, rf"\\127.0.0.1\{share}")
        self.tree.connect()
        self.inbox = BreakInbox(self.conn, self.session.session_id)
        self.conn.outstanding_requests[BREAK_ID] = self.inbox

    def open(self, name: str, lease_key: bytes | None = None, state: int = RWH, *, v2: bool = False,
             epoch: int = 0, oplock: int | None = None, access: int = READ_WRITE, share: int = ALL_SHARE,
             disposition: int = CreateDisposition.FILE_OPEN_IF, directory: bool = False,
             raw_lease: bytes | None = None, parent: bytes | None = None, options: int = 0):
        """Opens; returns (Open, the lease context answered as (key, state, flags, epoch) or
        None). `parent`: a version 2 lease's ParentLeaseKey; `options`: more CreateOptions."""
        o = Open(self.tree, name)
        contexts = []
        if lease_key is not None or raw_lease is not None:
            ctx = SMB2CreateContextRequest()
            ctx["buffer_name"] = CreateContextName.SMB2_CREATE_REQUEST_LEASE
            ctx["buffer_data"] = raw_lease if raw_lease is not None else (
                struct.pack("<16sIIQ16sHH", lease_key, state, PARENT_KEY_SET if parent else 0, 0,
                            parent or bytes(16), epoch, 0) if v2 or parent
                else struct.pack("<16sIIQ", lease_key, state, 0, 0))
            contexts.append(ctx)
        answered = o.create(
            ImpersonationLevel.Impersonation, access,
            FileAttributes.FILE_ATTRIBUTE_DIRECTORY if directory else FileAttributes.FILE_ATTRIBUTE_NORMAL,
            share, disposition,
            (CreateOptions.FILE_DIRECTORY_FILE if directory else CreateOptions.FILE_NON_DIRECTORY_FILE) | options,
            create_contexts=contexts or None,
            oplock_level=oplock if oplock is not None else (LEASE if contexts else NONE))
        lease = None
        for ctx in answered or []:
            if "lease_key" in ctx.fields:
                flags = ctx["flags" if "flags" in ctx.fields else "lease_flags"].get_value()
                epoch_out = ctx["epoch"].get_value() if "epoch" in ctx.fields else None
                lease = (ctx["lease_key"].get_value(), ctx["lease_state"].get_value(), flags, epoch_out)
        return o, lease

    def next_break(self, timeout: float = 10.0) -> Break | None:
        try:
            return Break(self.inbox.breaks.get(timeout=timeout))
        except queue.Empty:
            return None

    def ack(self, lease_key: bytes, state: int) -> int:
        """Acknowledges a lease break; the state the answer gives (an error status raises)."""
        body = struct.pack("<HHI16sIQ", 36, 0, 0, lease_key, state, 0)
        req = self.conn.send(Raw(Commands.SMB2_OPLOCK_BREAK, body), sid=self.session.session_id,
                             tid=self.tree.tree_connect_id)
        data = self.conn.receive(req)["data"].get_value()
        assert struct.unpack_from("<H", data)[0] == 36 and data[8:24] == lease_key
        return struct.unpack_from("<I", data, 24)[0]

    def close(self):
        self.conn.outstanding_requests.pop(BREAK_ID, None)
        self.conn.disconnect(True)


@pytest.fixture
def clients(server):
    made = []

    def client(**kw) -> Client:
        made.append(Client(server["port"], **kw))
        return made[-1]
    yield client
    for c in made:
        c.close()


def test_states_granted_when_alone(clients):
    a = clients()
    assert a.conn.server_capabilities.has_flag(CAP_LEASING)
    assert a.conn.server_capabilities.has_flag(CAP_DIRECTORY_LEASING)     # (test_dir_leases)
    asked = {0: 0, R: R, H: 0, W: 0, RH: RH, RW: RW, H | W: 0, RWH: RWH}
    for n, (state, granted) in enumerate(asked.items()):
        o, lease = a.open(f"f{n}", key(n), state)
        assert o.oplock_level == LEASE
        assert lease == (key(n), granted, 0, None)
    d, lease = a.open("dir", key(99), RWH, access=READ, directory=True)
    assert d.oplock_level == NONE and lease is None      # a directory: only with a version 2 context
    # a stream is a file of its own: its own lease
    _o, lease = a.open("f0:stream", key(100), RWH)
    assert lease[1] == RWH


def test_a_key_names_one_file(clients):
    a, b = clients(), clients()
    a.open("f", key(1), RWH)
    assert status_of(lambda: a.open("g", key(1), RWH)) == STATUS_INVALID_PARAMETER
    assert status_of(lambda: a.open("d", key(1), RWH, directory=True, access=READ)) == \
        STATUS_INVALID_PARAMETER
    # another client's keys are its own
    _o, lease = b.open("g", key(1), RWH)
    assert lease[1] == RWH
    # a malformed lease context
    assert status_of(lambda: a.open("h", raw_lease=b"\0" * 31)) == STATUS_INVALID_PARAMETER


def test_opens_of_one_key_share_the_lease(clients):
    a = clients()
    first, lease = a.open("f", key(1), RH)
    assert lease[1] == RH
    _o, lease = a.open("f", key(1), RW)          # not a superset: unchanged
    assert lease[1] == RH
    _o, lease = a.open("f", key(1), RWH)         # a strict superset: upgraded
    assert lease[1] == RWH
    _o, lease = a.open("f", key(1), R)           # never downgraded by asking
    assert lease[1] == RWH
    # another connection of the same client (ClientGuid) shares it too, and breaks nothing
    same = clients(guid=a.conn.client_guid)
    _o, lease = same.open("f", key(1), 0)
    assert lease[1] == RWH
    assert a.next_break(0.3) is None


def test_conflicting_open_breaks_write_and_waits_for_the_ack(clients):
    a, b = clients(), clients()
    held, _ = a.open("f", key(1), RWH)
    opener = Background(lambda: b.open("f", key(2), RWH))
    br = a.next_break()
    assert (br.key, br.old, br.new, br.flags, br.epoch) == (key(1), RWH, RH, ACK_REQUIRED, 0)
    time.sleep(0.3)
    assert not opener.done.is_set()              # held until the holder answers
    # meanwhile an open of the lease being broken is not held, and says so
    _o, lease = a.open("f", key(1), 0)
    assert lease[1:3] == (RWH, BREAK_IN_PROGRESS)
    assert a.ack(key(1), RH) == RH
    _o, lease = opener.wait()
    assert lease[1] == RH                        # both cache reads and handles
    assert a.next_break(0.3) is None


def test_v2_epochs(clients):
    a, b = clients(), clients()
    _o, lease = a.open("f", key(1), R, v2=True, epoch=0x4711)
    assert lease == (key(1), R, 0, 0x4712)       # the client's epoch, plus one
    _o, lease = a.open("f", key(1), RWH, v2=True)    # upgraded: one more
    assert lease[1] == RWH and lease[3] == 0x4713
    _o, lease = a.open("f", key(1), RWH)         # a version 1 request: answered as the lease is
    assert lease[3] == 0x4713
    opener = Background(lambda: b.open("f", key(2), R, v2=True, epoch=7))
    br = a.next_break()
    assert (br.old, br.new, br.epoch) == (RWH, RH, 0x4714)
    a.ack(key(1), RH)
    assert opener.wait()[1] == (key(2), R, 0, 8)


def test_v2_on_smb21_is_read_as_v1(clients):
    a = clients(dialect=Dialects.SMB_2_1_0)
    assert a.conn.server_capabilities.has_flag(CAP_LEASING)
    _o, lease = a.open("f", key(1), RWH, v2=True, epoch=5)
    assert lease == (key(1), RWH, 0, None)


def test_acknowledgements_that_are_wrong(clients):
    a, b = clients(), clients()
    a.open("f", key(1), RWH)
    assert status_of(lambda: a.ack(key(1), RH)) == STATUS_UNSUCCESSFUL           # no break sent
    assert status_of(lambda: a.ack(key(9), 0)) == STATUS_OBJECT_NAME_NOT_FOUND   # never granted
    opener = Background(lambda: b.open("f", None, disposition=CreateDisposition.FILE_OVERWRITE_IF))
    br = a.next_break()
    assert (br.old, br.new) == (RWH, 0)
    for more in (RWH, RW, RH, R, W, H):                                        # more than offered
        assert status_of(lambda: a.ack(key(1), more)) == STATUS_REQUEST_NOT_ACCEPTED
    # another client cannot answer for the holder: to it the key names nothing
    assert status_of(lambda: b.ack(key(1), 0)) == STATUS_OBJECT_NAME_NOT_FOUND
    assert not opener.done.is_set()
    assert a.ack(key(1), 0) == 0
    opener.wait()
    assert status_of(lambda: a.ack(key(1), 0)) == STATUS_UNSUCCESSFUL           # answered once


def test_breaks_go_in_steps_once_answered(clients):
    """A break under way is not sent again; a later open lowers what it must reach, and the
    holder's answer is followed by the next step (as Windows and Samba do)."""
    a, b, c = clients(), clients(), clients()
    a.open("f", key(1), RWH)
    plain = Background(lambda: b.open("f"))
    assert (a.next_break().new) == RH
    overwrite = Background(lambda: c.open("f", disposition=CreateDisposition.FILE_OVERWRITE))
    assert a.next_break(0.3) is None
    a.ack(key(1), RH)
    br = a.next_break()
    assert (br.old, br.new, br.flags) == (RH, R, ACK_REQUIRED)
    assert not plain.done.is_set() and not overwrite.done.is_set()
    a.ack(key(1), R)
    br = a.next_break()
    assert (br.old, br.new, br.flags) == (R, 0, 0)      # no answer expected
    plain.wait()
    overwrite.wait()


def test_writes_and_locks_break_others_read_caching(clients):
    a, b = clients(), clients()
    mine, _ = a.open("f", key(1), R)
    theirs, _ = b.open("f", key(2), RH)
    mine.write(b"x", 0)
    br = b.next_break()
    assert (br.key, br.old, br.new, br.flags) == (key(2), RH, 0, ACK_REQUIRED)
    assert a.next_break(0.3) is None             # the writer's own lease is not broken
    b.ack(key(2), 0)
    _o, lease = a.open("f", key(1), 0)
    assert lease[1] == R
    b.open("f", key(2), R)                       # (R again: asked for, granted)
    e = SMB2LockElement()
    e["offset"], e["length"], e["flags"] = 0, 1, LockFlags.SMB2_LOCKFLAG_EXCLUSIVE_LOCK | \
        LockFlags.SMB2_LOCKFLAG_FAIL_IMMEDIATELY
    theirs.lock([e])
    br = a.next_break()
    assert (br.key, br.old, br.new, br.flags) == (key(1), R, 0, 0)
    assert b.next_break(0.3) is None


def test_sharing_violation_breaks_handle_caching(clients):
    a, b = clients(), clients()
    a.open("f", key(1), RWH, share=ShareAccess.FILE_SHARE_READ)
    opener = Background(lambda: b.open("f", key(2), RWH))
    br = a.next_break()
    assert (br.old, br.new) == (RWH, RW)         # the holder may close the handle it keeps
    a.ack(key(1), RW)
    with pytest.raises(SMBResponseException) as refused:
        opener.wait()
    assert refused.value.status == STATUS_SHARING_VIOLATION
    _o, lease = a.open("f", key(1), 0, access=0x80)    # (attributes only: no share mode)
    assert lease[1] == RW


def test_rename_breaks_others_handle_caching(clients):
    a, b = clients(), clients()
    renamer, _ = a.open("f", key(1), RH, access=READ_WRITE | DELETE)
    b.open("f", key(2), RH)
    name = "g".encode("utf-16-le")     # FILE_RENAME_INFORMATION (MS-FSCC 2.4.37)
    req = SMB2SetInfoRequest()
    req["info_type"] = 1                # SMB2_0_INFO_FILE
    req["file_info_class"] = FileInformationClass.FILE_RENAME_INFORMATION
    req["file_id"] = renamer.file_id
    req["buffer"] = struct.pack("<B7xQI", 0, 0, len(name)) + name
    sent = a.conn.send(req, sid=a.session.session_id, tid=a.tree.tree_connect_id)
    br = b.next_break()
    assert (br.key, br.old, br.new) == (key(2), RH, R)
    assert b.ack(key(2), R) == R            # (the rename waits for it)
    a.conn.receive(sent)
    assert a.next_break(0.3) is None


def test_leases_beside_oplocks(clients):
    a, b = clients(), clients()
    a.open("f", key(1), RH)
    o, _ = b.open("f", None, oplock=BATCH)
    assert o.oplock_level == NONE                # no oplock beside HANDLE caching
    a.open("g", key(2), R)
    o, _ = b.open("g", None, oplock=BATCH)
    assert o.oplock_level == II
    held, _ = b.open("h", None, oplock=BATCH)
    assert held.oplock_level == BATCH
    opener = Background(lambda: a.open("h", key(3), RWH))
    data = b.inbox.breaks.get(timeout=10)       # an oplock break (24 bytes) for the batch holder
    assert struct.unpack_from("<H", data)[0] == 24 and data[2] == II
    req = b.conn.send(Raw(Commands.SMB2_OPLOCK_BREAK, struct.pack("<HBBI", 24, II, 0, 0) + held.file_id),
                      sid=b.session.session_id, tid=b.tree.tree_connect_id)
    b.conn.receive(req)
    assert opener.wait()[1][1] == R              # no WRITE (another open), no HANDLE (an oplock)


def test_disconnected_holder_lets_the_opener_go(clients):
    a, b = clients(), clients()
    a.open("f", key(1), RWH)
    opener = Background(lambda: b.open("f", key(2), RWH))
    assert a.next_break() is not None
    a.conn.disconnect(True)
    assert opener.wait()[1][1] == RWH            # alone now


def test_flood_of_lease_keys_is_bounded(clients):
    """Leases live as long as their opens: a client that opens and closes files under ever
    new keys leaves nothing behind (the same keys then name other files freely)."""
    a = clients()
    for n in range(300):
        o, lease = a.open(f"f{n % 7}", key(n), RWH)
        assert lease[1] == RWH
        o.close()
    for n in range(300):
        o, _ = a.open(f"g{n % 5}", key(n), RWH)      # each key free for another file again
        o.close()


def test_lease_table_empties_with_the_opens():
    """(The server's own table, driven directly: every lease, holder and waiting CREATE goes
    with the last open.)"""
    from smbring.smb.oplocks import Oplocks

    class FakeOpen:      # (the table keys opens by identity; a file key is all it reads)
        def __init__(self, n):
            self.key, self.is_dir = (1, n % 3), False

    table = Oplocks()
    opens = [FakeOpen(n) for n in range(500)]
    for n, o in enumerate(opens):
        table.add(o, READ_WRITE)
        table.grant_lease(o, b"g" * 16, key(n), RWH)
    assert table.held() == 3 + 500
    for o in opens:
        table.remove(o)
    assert table.held() == 0


def test_silent_holder_times_out_and_stalls_nobody_else(short_break_timeout, clients):
    """A holder that never answers: the opener waits the break timeout (shortened here; 35 s
    by default, see test_oplocks), no longer; other files are opened meanwhile without
    waiting; the late answer is refused."""
    a, b, c = clients(), clients(), clients()
    a.open("f", key(1), RWH)
    opener = Background(lambda: b.open("f", key(2), RWH))
    assert a.next_break() is not None
    started = time.monotonic()
    _o, lease = c.open("other", key(3), RWH)
    assert lease[1] == RWH and time.monotonic() - started < 2
    _o, lease = opener.wait(short_break_timeout + 10)
    assert short_break_timeout - 0.5 <= opener.elapsed <= short_break_timeout + 5
    assert lease[1] == RH
    assert status_of(lambda: a.ack(key(1), RH)) == STATUS_UNSUCCESSFUL
    _o, lease = a.open("f", key(1), 0)
    assert lease[1] == 0                         # taken away: to none


def test_leases_off(smbconf):
    server = smbconf("smb2 leases = no", {"share": "read only = no"})
    a = Client(server.port)
    try:
        assert not a.conn.server_capabilities.has_flag(CAP_LEASING)
        o, lease = a.open("f", key(1), RWH)
        assert o.oplock_level == NONE and lease is None      # the context is ignored
        assert status_of(lambda: a.ack(key(1), 0)) == STATUS_OBJECT_NAME_NOT_FOUND
    finally:
        a.close()


def test_oplocks_off_share_grants_no_lease(smbconf):
    server = smbconf("", {"share": "read only = no", "nooplocks": "read only = no\noplocks = no"})
    a = Client(server.port, share="nooplocks")
    try:
        o, lease = a.open("f", key(1), RWH)
        assert o.oplock_level == NONE and lease is None
    finally:
        a.close()


def test_veto_oplock_files_get_no_lease(smbconf):
    server = smbconf("", {"share": "read only = no\nveto oplock files = /*.mdb/"})
    a = Client(server.port, share="share")
    try:
        o, lease = a.open("db.MDB", key(1), RWH)
        assert o.oplock_level == NONE and lease is None
        o, lease = a.open("other.txt", key(2), RWH)
        assert lease is not None and lease[1] == RWH
    finally:
        a.close()


def test_delete_on_close_breaks_others_handle_caching(clients):
    a, b = clients(), clients()
    a.open("f", key(1), RH)
    deleter, _ = b.open("f", access=DELETE, disposition=CreateDisposition.FILE_OPEN)
    assert a.next_break(0.3) is None
    gone = Open(b.tree, "f")
    gone.create(ImpersonationLevel.Impersonation, DELETE, FileAttributes.FILE_ATTRIBUTE_NORMAL, ALL_SHARE,
                CreateDisposition.FILE_OPEN, CreateOptions.FILE_NON_DIRECTORY_FILE |
                CreateOptions.FILE_DELETE_ON_CLOSE)
    br = a.next_break()
    assert (br.key, br.old, br.new, br.flags) == (key(1), RH, R, ACK_REQUIRED)
    assert a.ack(key(1), R) == R
    deleter.close()
