"""Durable handles and CREATE replay against a real server: a durable open survives its
connection (the socket killed) and is reclaimed on a new one by the same user, with its data,
position and byte-range locks; everything else that names it is refused, and it is closed
when it expires, when another open needs its oplock broken, or when too many are detached.

The requests are raw (tests/security/raw.py): the durable create contexts, replays and
channel sequence numbers are set byte by byte. smbprotocol asks for a durable handle once, as
a client library does."""
from __future__ import annotations

import os
import struct
import time
import uuid

import pytest

from servers import PASSWORD, USER
from smbconf_server import OTHER, OTHER_PASSWORD, smbconf  # noqa: F401  (the fixture)
from smbcore import create_body, read_body, write_body
from smbcore import create_contexts_of as contexts_of
from smbcore import oplock_level_of as oplock_of

from smbring.smb import wire

BATCH, NONE_OPLOCK = 0x09, 0x00
READ_WRITE = 0x0012019F
DELETE_ON_CLOSE = 0x00001000
STATUS_DUPLICATE_OBJECTID = 0xC000022A
LOCK_EXCLUSIVE, LOCK_FAIL_IMMEDIATELY = 0x2, 0x10
SHARE_NONE = 0


def start(smbconf, global_options: str = "", shares: dict | None = None):
    return smbconf(global_options, shares or {"share": "read only = no"},
                   users=((OTHER, OTHER_PASSWORD),))


class Conn:
    """One connection with one session and a tree of `share`."""

    def __init__(self, server, user: str = USER, password: str = PASSWORD, share: str = "share",
                 client_guid: bytes | None = None, dialect: int = wire.SMB311):
        self.raw = server.raw()
        r = self.raw.negotiate((dialect,), client_guid=client_guid)
        assert r.status == wire.STATUS_SUCCESS, r
        self.session = self.raw.logon(user, password)
        self.tree = self.raw.tree(self.session, share)

    def create(self, name: str, *, oplock: int = BATCH, contexts=(), access: int = READ_WRITE,
               disposition: int = wire.FILE_OPEN_IF, options: int = 0, share_access: int = 7,
               flags: int = 0):
        return self.tree.request(wire.CREATE, create_body(
            name, access, disposition, options, share_access=share_access, contexts=list(contexts),
            oplock=oplock), flags=flags)

    def kill(self) -> None:
        """The connection is lost (no LOGOFF, no CLOSE)."""
        self.raw.close()


def dhnq() -> tuple[bytes, bytes]:
    return (b"DHnQ", b"\0" * 16)


def dh2q(create_guid: bytes, timeout_ms: int = 0, flags: int = 0) -> tuple[bytes, bytes]:
    return (b"DH2Q", struct.pack("<II8s16s", timeout_ms, flags, b"", create_guid))


def dhnc(fid: bytes) -> tuple[bytes, bytes]:
    return (b"DHnC", fid)


def dh2c(fid: bytes, create_guid: bytes) -> tuple[bytes, bytes]:
    return (b"DH2C", fid + create_guid + b"\0" * 4)


def reconnect(conn: Conn, context, wait: float = 2.0):
    """A DHnC/DH2C CREATE, with garbage in the fields a reconnect ignores; retried briefly
    while the server may still be taking the lost connection down."""
    deadline = time.monotonic() + wait
    while True:
        r = conn.create("__ignored__", oplock=0x78, contexts=[context], access=0x12345678,
                        disposition=0x12345678, options=0x12345678, share_access=0x12345678)
        while r.status == wire.STATUS_PENDING:      # held until the lost connection is taken down
            r = conn.raw.response_to(r.header.message_id)
        if r.status != wire.STATUS_OBJECT_NAME_NOT_FOUND or time.monotonic() > deadline:
            return r
        time.sleep(0.1)


def durable_open(conn: Conn, name: str, **kw):
    r = conn.create(name, contexts=[dhnq()], **kw)
    assert r.status == wire.STATUS_SUCCESS, r
    assert oplock_of(r) == BATCH and b"DHnQ" in contexts_of(r), contexts_of(r)
    return r.file_id


# -- granted ------------------------------------------------------------------------------------

def test_granted_only_with_a_batch_oplock(smbconf):
    server = start(smbconf)
    c = Conn(server)
    for oplock, durable in ((NONE_OPLOCK, False), (0x01, False), (0x08, False), (BATCH, True)):
        r = c.create(f"f{oplock}", oplock=oplock, contexts=[dhnq()])
        assert r.status == wire.STATUS_SUCCESS
        assert (b"DHnQ" in contexts_of(r)) == durable, oplock
        guid = os.urandom(16)
        r2 = c.create(f"g{oplock}", oplock=oplock, contexts=[dh2q(guid, timeout_ms=0xFFFFFFFF, flags=2)])
        assert r2.status == wire.STATUS_SUCCESS
        answer = contexts_of(r2).get(b"DH2Q")
        assert (answer is not None) == durable
        if durable:     # the timeout asked for, at most 300 s; never persistent (flags 0)
            assert struct.unpack("<II", answer) == (300_000, 0)


def test_granted_through_smbprotocol(smbconf):
    """A client library's durable request (smbprotocol's create contexts) is answered."""
    pytest.importorskip("smbprotocol")
    from smbprotocol.connection import Connection
    from smbprotocol.create_contexts import (CreateContextName, SMB2CreateContextRequest,
                                             SMB2CreateDurableHandleRequest,
                                             SMB2CreateDurableHandleResponse)
    from smbprotocol.open import (CreateDisposition, CreateOptions, FileAttributes,
                                  ImpersonationLevel, Open, RequestedOplockLevel)
    from smbprotocol.session import Session
    from smbprotocol.tree import TreeConnect
    server = start(smbconf)
    conn = Connection(uuid.uuid4(), "127.0.0.1", server.port)
    conn.connect()
    try:
        session = Session(conn, USER, PASSWORD, require_encryption=False)
        session.connect()
        tree = TreeConnect(session, r"\\127.0.0.1\share")
        tree.connect()
        request = SMB2CreateContextRequest()
        request["buffer_name"] = CreateContextName.SMB2_CREATE_DURABLE_HANDLE_REQUEST
        request["buffer_data"] = SMB2CreateDurableHandleRequest()
        o = Open(tree, "lib.txt")
        answers = o.create(ImpersonationLevel.Impersonation, READ_WRITE,
                           FileAttributes.FILE_ATTRIBUTE_NORMAL, 7, CreateDisposition.FILE_OPEN_IF,
                           CreateOptions.FILE_NON_DIRECTORY_FILE,
                           oplock_level=RequestedOplockLevel.SMB2_OPLOCK_LEVEL_BATCH,
                           create_contexts=[request])
        assert any(isinstance(a, SMB2CreateDurableHandleResponse) for a in answers), answers
        o.close()
    finally:
        conn.disconnect(True)


def test_not_granted_where_the_share_says_no(smbconf):
    server = start(smbconf, shares={"share": "read only = no\ndurable handles = no"})
    c = Conn(server)
    r = c.create("f", contexts=[dhnq()])
    assert r.status == wire.STATUS_SUCCESS and oplock_of(r) == BATCH
    assert b"DHnQ" not in contexts_of(r)
    fid = r.file_id
    c.kill()
    assert reconnect(Conn(server), dhnc(fid), wait=0.5).status == wire.STATUS_OBJECT_NAME_NOT_FOUND


# -- reconnect ----------------------------------------------------------------------------------

def test_reconnect_after_the_connection_is_lost(smbconf):
    """The data written, the position and the byte-range lock survive; the new FileId keeps
    the persistent half; another client still finds the range locked."""
    server = start(smbconf)
    c = Conn(server)
    fid = durable_open(c, "data.bin")
    assert c.tree.write(fid, b"kept across connections").status == wire.STATUS_SUCCESS
    assert c.tree.lock(fid, [(0, 4, LOCK_EXCLUSIVE | LOCK_FAIL_IMMEDIATELY)]).status == wire.STATUS_SUCCESS
    c.kill()
    c2 = Conn(server, client_guid=os.urandom(16))      # v1: another ClientGuid is fine
    r = reconnect(c2, dhnc(fid))
    assert r.status == wire.STATUS_SUCCESS, r
    assert oplock_of(r) == BATCH and struct.unpack_from("<I", r.raw, 68)[0] == wire.FILE_OPENED
    new = r.file_id
    assert new[:8] == fid[:8]
    rd = c2.tree.read(new, 23)
    assert rd.status == wire.STATUS_SUCCESS and rd.raw[80:103] == b"kept across connections"
    # the lock went with the open: the reclaimed FileId unlocks it, nobody else could
    assert c2.tree.lock(new, [(0, 4, 0x4)]).status == wire.STATUS_SUCCESS    # UNLOCK
    assert c2.tree.close(new).status == wire.STATUS_SUCCESS
    assert (server.root / "share" / "data.bin").read_bytes() == b"kept across connections"


def test_logoff_detaches_and_tree_disconnect_closes(smbconf):
    server = start(smbconf)
    c = Conn(server)
    fid = durable_open(c, "a")
    assert c.raw.logoff(c.session).status == wire.STATUS_SUCCESS
    c.session = c.raw.logon(USER, PASSWORD)
    c.tree = c.raw.tree(c.session, "share")
    r = reconnect(c, dhnc(fid))
    assert r.status == wire.STATUS_SUCCESS, r
    assert c.tree.disconnect().status == wire.STATUS_SUCCESS     # closes it for good
    c.tree = c.raw.tree(c.session, "share")
    assert reconnect(c, dhnc(r.file_id), wait=0).status == wire.STATUS_OBJECT_NAME_NOT_FOUND


def test_v2_reconnect_needs_its_create_guid(smbconf):
    server = start(smbconf)
    c = Conn(server)
    guid = os.urandom(16)
    r = c.create("v2", contexts=[dh2q(guid)])
    assert r.status == wire.STATUS_SUCCESS and struct.unpack("<II", contexts_of(r)[b"DH2Q"]) == (60_000, 0)
    fid = r.file_id
    c.kill()
    c2 = Conn(server)
    assert reconnect(c2, dh2c(fid, os.urandom(16)), wait=0.5).status == wire.STATUS_OBJECT_NAME_NOT_FOUND
    assert reconnect(c2, dh2c(fid, b"\0" * 16), wait=0).status == wire.STATUS_OBJECT_NAME_NOT_FOUND
    r = reconnect(c2, dh2c(fid, guid))
    assert r.status == wire.STATUS_SUCCESS and not contexts_of(r)


def test_v1_open_is_reclaimed_by_dh2c_only_without_a_create_guid(smbconf):
    """A DHnQ open has no CreateGuid (all zero, as smbd keeps it, and Windows alike): a DH2C
    naming any other does not reclaim it; one naming none does."""
    server = start(smbconf)
    c = Conn(server)
    fid = durable_open(c, "v1")
    c.kill()
    c2 = Conn(server)
    assert reconnect(c2, dh2c(fid, os.urandom(16)), wait=0.5).status == wire.STATUS_OBJECT_NAME_NOT_FOUND
    assert reconnect(c2, dh2c(fid, b"\0" * 16)).status == wire.STATUS_SUCCESS


def test_reconnect_while_still_connected_is_refused(smbconf):
    server = start(smbconf)
    c = Conn(server)
    fid = durable_open(c, "busy")
    assert reconnect(c, dhnc(fid), wait=0).status == wire.STATUS_OBJECT_NAME_NOT_FOUND
    assert reconnect(Conn(server), dhnc(fid), wait=0).status == wire.STATUS_OBJECT_NAME_NOT_FOUND
    assert c.tree.flush(fid).status == wire.STATUS_SUCCESS     # still its owner's


def test_another_user_cannot_reclaim_it(smbconf):
    """A FileId learnt (or guessed) by another user names nothing for them; its owner still
    gets it back afterwards."""
    server = start(smbconf)
    c = Conn(server)
    fid = durable_open(c, "mine")
    c.kill()
    thief = Conn(server, OTHER, OTHER_PASSWORD)
    time.sleep(0.5)
    assert reconnect(thief, dhnc(fid), wait=0).status == wire.STATUS_OBJECT_NAME_NOT_FOUND
    forged = fid[:8] + struct.pack("<Q", 1)          # any volatile half: the persistent one counts
    assert reconnect(thief, dhnc(forged), wait=0).status == wire.STATUS_OBJECT_NAME_NOT_FOUND
    guessed = os.urandom(16)
    assert reconnect(thief, dhnc(guessed), wait=0).status == wire.STATUS_OBJECT_NAME_NOT_FOUND
    assert reconnect(Conn(server), dhnc(fid)).status == wire.STATUS_SUCCESS


def test_reconnect_through_another_share_is_refused(smbconf):
    server = start(smbconf, shares={"share": "read only = no", "other": "read only = no"})
    c = Conn(server)
    fid = durable_open(c, "f")
    c.kill()
    time.sleep(0.5)
    assert reconnect(Conn(server, share="other"), dhnc(fid), wait=0).status == \
        wire.STATUS_OBJECT_NAME_NOT_FOUND
    assert reconnect(Conn(server), dhnc(fid)).status == wire.STATUS_SUCCESS


def test_bad_context_combinations(smbconf):
    server = start(smbconf)
    c = Conn(server)
    fid, guid = b"\1" * 16, os.urandom(16)
    for contexts, status in (
            ([dhnc(fid), dh2c(fid, guid)], wire.STATUS_INVALID_PARAMETER),
            ([dhnc(fid), dh2q(guid)], wire.STATUS_INVALID_PARAMETER),
            ([dh2c(fid, guid), dhnq()], wire.STATUS_INVALID_PARAMETER),
            ([dhnq(), dh2q(guid)], wire.STATUS_INVALID_PARAMETER),
            ([(b"DHnC", b"short")], wire.STATUS_INVALID_PARAMETER),
            ([(b"DHnQ", b"\0" * 15)], wire.STATUS_INVALID_PARAMETER),
            ([(b"DH2Q", b"\0" * 31)], wire.STATUS_INVALID_PARAMETER),
            ([dhnc(fid), (b"MxAc", b"")], wire.STATUS_OBJECT_NAME_NOT_FOUND)):
        assert c.create("x", contexts=contexts).status == status, contexts
    assert c.raw.echo().status == wire.STATUS_SUCCESS


# -- closed while detached ----------------------------------------------------------------------

def test_expiry_closes_it_and_honours_delete_on_close(smbconf):
    server = start(smbconf)
    c = Conn(server)
    r = c.create("temp", contexts=[dh2q(os.urandom(16), timeout_ms=1000)], options=DELETE_ON_CLOSE,
                 access=READ_WRITE | 0x10000)
    assert r.status == wire.STATUS_SUCCESS and struct.unpack("<II", contexts_of(r)[b"DH2Q"])[0] == 1000
    c.kill()
    path = server.root / "share" / "temp"
    assert path.exists()
    deadline = time.monotonic() + 10
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not path.exists()
    assert reconnect(Conn(server), dhnc(r.file_id), wait=0).status == wire.STATUS_OBJECT_NAME_NOT_FOUND


def test_a_conflicting_open_closes_the_detached_one(smbconf):
    """Nobody could answer its oplock break: another client's open goes on at once (no 35 s
    wait), gets the batch oplock itself, and the old handle is gone."""
    server = start(smbconf)
    c = Conn(server)
    fid = durable_open(c, "contested", share_access=SHARE_NONE)
    c.kill()
    time.sleep(0.5)
    other = Conn(server)
    started = time.monotonic()
    r = other.create("contested", disposition=wire.FILE_OPEN, share_access=SHARE_NONE)
    assert r.status == wire.STATUS_SUCCESS and oplock_of(r) == BATCH
    assert time.monotonic() - started < 5
    assert reconnect(Conn(server), dhnc(fid), wait=0).status == wire.STATUS_OBJECT_NAME_NOT_FOUND


def test_an_attribute_only_open_leaves_it(smbconf):
    server = start(smbconf)
    c = Conn(server)
    fid = durable_open(c, "quiet")
    c.kill()
    time.sleep(0.5)
    other = Conn(server)
    r = other.create("quiet", oplock=NONE_OPLOCK, access=0x80, disposition=wire.FILE_OPEN)   # READ_ATTRIBUTES
    assert r.status == wire.STATUS_SUCCESS
    assert reconnect(Conn(server), dhnc(fid)).status == wire.STATUS_SUCCESS


def test_detached_handles_are_bounded(smbconf):
    """A flood of durable opens left behind: past `max disconnected durable handles`, the
    oldest are closed (their files and descriptors released)."""
    server = start(smbconf, "max disconnected durable handles = 3")
    c = Conn(server)
    fids = [durable_open(c, f"flood{i}") for i in range(6)]
    c.kill()
    time.sleep(1.0)
    c2 = Conn(server)
    statuses = [reconnect(c2, dhnc(fid), wait=0).status for fid in fids]
    assert statuses[:3] == [wire.STATUS_OBJECT_NAME_NOT_FOUND] * 3
    assert statuses[3:] == [wire.STATUS_SUCCESS] * 3


def test_another_users_flood_closes_only_his_own_detached_handles(smbconf):
    """The bound is no way to take another user's handle away: ALICE's durable open waits
    detached; BOB leaves more than the bound behind. His oldest are closed, hers waits on and
    she reclaims it (before, the oldest of all went: hers)."""
    server = start(smbconf, "max disconnected durable handles = 3")
    alice = Conn(server)
    hers = durable_open(alice, "alice-detached")
    alice.kill()
    time.sleep(0.5)
    bob = Conn(server, user=OTHER, password=OTHER_PASSWORD)
    his = [durable_open(bob, f"bob-flood{i}") for i in range(4)]
    bob.kill()
    time.sleep(1.0)
    assert reconnect(Conn(server), dhnc(hers), wait=0).status == wire.STATUS_SUCCESS
    bob_again = Conn(server, user=OTHER, password=OTHER_PASSWORD)
    statuses = [reconnect(bob_again, dhnc(fid), wait=0).status for fid in his]
    assert statuses == [wire.STATUS_OBJECT_NAME_NOT_FOUND] * 2 + [wire.STATUS_SUCCESS] * 2


def test_a_guest_gets_no_durable_handle(smbconf):
    server = smbconf("map to guest = bad user", {"share": "read only = no\nguest ok = yes"})
    c = Conn(server, user="nobody-known", password="x")
    assert c.session.flags & wire.SESSION_FLAG_IS_GUEST
    r = c.create("g", contexts=[dhnq()])
    assert r.status == wire.STATUS_SUCCESS and b"DHnQ" not in contexts_of(r)


# -- replay and channel sequence ----------------------------------------------------------------

def test_a_replayed_create_gets_the_same_open(smbconf):
    server = start(smbconf)
    c = Conn(server)
    guid = os.urandom(16)
    r = c.create("replayed", contexts=[dh2q(guid)], share_access=SHARE_NONE)
    assert r.status == wire.STATUS_SUCCESS and oplock_of(r) == BATCH
    # a replay asking for no oplock: the same open, the oplock asked for, no DH2Q answer
    again = c.create("replayed", contexts=[dh2q(guid)], share_access=SHARE_NONE, oplock=NONE_OPLOCK,
                     flags=wire.FLAGS_REPLAY)
    assert again.status == wire.STATUS_SUCCESS and again.file_id == r.file_id
    assert oplock_of(again) == NONE_OPLOCK and not contexts_of(again)
    assert c.create("replayed", contexts=[dh2q(guid)]).status == STATUS_DUPLICATE_OBJECTID
    # once the open is used, its CREATE is answered for sure: a replay is a new CREATE (which
    # conflicts with the open)
    assert c.tree.flush(r.file_id).status == wire.STATUS_SUCCESS
    late = c.create("replayed", contexts=[dh2q(guid)], share_access=SHARE_NONE, oplock=NONE_OPLOCK,
                    access=0x80 | 0x1, flags=wire.FLAGS_REPLAY)
    assert late.status in (wire.STATUS_SHARING_VIOLATION, wire.STATUS_PENDING)
    assert late.file_id != r.file_id


def test_a_replay_is_its_user_s_only(smbconf):
    """The same ClientGuid (it is the client's to choose) and CreateGuid from another user
    name nothing of the first user's."""
    server = start(smbconf)
    client_guid, guid = os.urandom(16), os.urandom(16)
    c = Conn(server, client_guid=client_guid)
    r = c.create("private", contexts=[dh2q(guid)], share_access=7)
    assert r.status == wire.STATUS_SUCCESS
    other = Conn(server, OTHER, OTHER_PASSWORD, client_guid=client_guid)
    stolen = other.create("private", contexts=[dh2q(guid)], flags=wire.FLAGS_REPLAY,
                          access=0x80, oplock=NONE_OPLOCK)
    assert stolen.file_id != r.file_id


def test_an_older_channel_sequence_may_not_write(smbconf):
    server = start(smbconf)
    c = Conn(server, dialect=wire.SMB300)
    fid = c.create("seq", contexts=[dh2q(os.urandom(16))]).file_id

    def write(sequence: int):
        msg = c.tree.message(wire.WRITE, write_body(fid, b"x", 0))
        struct.pack_into("<H", msg, 8, sequence)       # ChannelSequence (Status in a request)
        c.raw.send([msg])
        return c.raw.response_to(wire.Header.parse(msg).message_id).status

    assert write(0) == wire.STATUS_SUCCESS
    assert write(5) == wire.STATUS_SUCCESS
    assert write(4) == wire.STATUS_FILE_NOT_AVAILABLE
    assert write(0x8005) == wire.STATUS_FILE_NOT_AVAILABLE     # more than 0x7FFF ahead: behind
    assert write(5) == wire.STATUS_SUCCESS
    rd = c.tree.request(wire.READ, read_body(fid, 1, 0))
    assert rd.status == wire.STATUS_SUCCESS                    # reading is never refused


# -- a reconnect that arrives before the lost connection's end is read --------------------------

def reconnect_request(conn: Conn, fid: bytes):
    """Sends a DHnC for fid; returns the first answer (STATUS_PENDING while it is held)."""
    return conn.create("__ignored__", contexts=[dhnc(fid)])


def test_a_reconnect_waits_for_the_old_connection_to_be_taken_down(smbconf):
    """A client that reconnects before the server has read its old connection's end (the close
    still on its way) is not told the open is gone: the reconnect waits, then succeeds."""
    server = start(smbconf)
    old = Conn(server)
    fid = durable_open(old, "slow-close")
    again = Conn(server)
    first = reconnect_request(again, fid)       # the old connection is still there
    assert first.status == wire.STATUS_PENDING, first
    old.kill()
    final = again.raw.response_to(first.header.message_id)
    assert final.status == wire.STATUS_SUCCESS, final
    assert again.tree.close(final.file_id).status == wire.STATUS_SUCCESS


def test_a_reconnect_to_an_open_still_in_use_is_refused_after_the_wait(smbconf):
    """The old connection stays: after the wait the reconnect is refused as before, and the
    open stays its old connection's."""
    server = start(smbconf)
    old = Conn(server)
    fid = durable_open(old, "in-use")
    again = Conn(server)
    started = time.monotonic()
    r = reconnect(again, dhnc(fid), wait=0)
    assert r.status == wire.STATUS_OBJECT_NAME_NOT_FOUND, r
    assert time.monotonic() - started < 10
    assert old.tree.close(fid).status == wire.STATUS_SUCCESS
