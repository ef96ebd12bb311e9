"""Sessions, handles and what one client's state shares with another's, tried by a user with
an account (BOB) against another user's (ALICE's) session, opens, leases and durable handles:
a server started as root acting as two Unix accounts made for the module, raw requests
(raw.py) so that every field is the test's.

BOB is assumed to know whatever travels in the clear or can be guessed: ALICE's ClientGuid
(sent in NEGOTIATE, also under encryption), her FileIds, CreateGuids, LeaseKeys,
AppInstanceIds, SessionIds and AsyncIds. A connection that names ALICE's ClientGuid shares
her client's tables (multichannel, smb.channels): each test tries both BOB's own ClientGuid
and hers. Each test says which check it tries to get around, and shows (with ALICE's own
requests) that the thing it protects works, so that a test that passes proves something."""
from __future__ import annotations

import os
import shutil
import struct
import tempfile
import time
from pathlib import Path

import pytest
import spnego
from raw import NoAnswer, RawClient
from servers import stop, unix_accounts, spawn_for_accounts
from smbcore import change_notify_body, create_contexts_of, read_body, session_setup_body, write_body

from smbring.smb import security, wire

if os.geteuid() != 0 or not shutil.which("useradd"):
    pytest.skip("acting as Unix accounts needs root (and useradd)", allow_module_level=True)

PASSWORD = "Session-pw1"
SUFFIX = f"{os.getpid() % 100000}"
ALICE, BOB = f"srsa{SUFFIX}", f"srsb{SUFFIX}"
READ_WRITE = 0x0012019F
BATCH, LEASE = 0x09, 0xFF
R, W, H = 1, 4, 2
APP_INSTANCE_ID = bytes.fromhex("45BCA66AEFA7F74A9008FA462E144D74")
FSCTL_SRV_REQUEST_RESUME_KEY = 0x00140078
FSCTL_SRV_COPYCHUNK_WRITE = 0x001480F2
UNSOLICITED = 0xFFFFFFFFFFFFFFFF


@pytest.fixture(scope="module")
def accounts():
    yield from unix_accounts(ALICE, BOB)


@pytest.fixture(scope="module")
def server(accounts, tmp_path_factory):
    """share/ (1777, durable handles on): ALICE's alice.txt (0644), secret.txt (0600) and
    alice-dir/ (0755)."""
    tmp = tmp_path_factory.mktemp("sessions")
    top = Path(tempfile.mkdtemp(prefix="smbring-sessions-", dir="/tmp"))
    top.chmod(0o755)
    share = top / "share"
    share.mkdir()
    share.chmod(0o1777)
    for name, mode in (("alice.txt", 0o644), ("secret.txt", 0o600)):
        (share / name).write_text(f"{name} of alice")
        (share / name).chmod(mode)
        os.chown(share / name, *accounts[ALICE])
    (share / "alice-dir").mkdir()
    os.chown(share / "alice-dir", *accounts[ALICE])
    proc, port, log = spawn_for_accounts(tmp, share, (ALICE, BOB), PASSWORD, share_options="durable handles = yes\n")
    yield {"port": port, "share": share, "proc": proc, "log": log, "accounts": accounts}
    stop(proc)
    shutil.rmtree(top, ignore_errors=True)


class Conn:
    """One connection, one session of `user`, a tree of the share."""

    def __init__(self, server, user: str, client_guid: bytes | None = None, dialect: int = wire.SMB311):
        self.raw = RawClient(server["port"])
        self.guid = client_guid or os.urandom(16)
        r = self.raw.negotiate((dialect,), client_guid=self.guid)
        assert r.status == wire.STATUS_SUCCESS, r
        self.session = self.raw.logon(user, PASSWORD)
        self.tree = self.raw.tree(self.session, "share")

    def create(self, name: str, *, access: int = READ_WRITE, disposition: int = wire.FILE_OPEN_IF,
               oplock: int = 0, contexts=(), flags: int = 0):
        return self.tree.request(wire.CREATE, create_request(name, access, disposition, oplock, contexts),
                                 flags=flags)

    def close(self) -> None:
        self.raw.close()


def create_request(name: str, access: int, disposition: int, oplock: int, contexts) -> bytes:
    """A CREATE body whose contexts may have names of any length (AppInstanceId's is a GUID)."""
    encoded = wire.utf16(name) or b"\0"
    blob = bytearray()
    for i, (cname, data) in enumerate(contexts):
        data_off = wire.pad8(16 + len(cname))
        entry = bytearray(struct.pack("<IHHHHI", 0, 16, len(cname), 0, data_off if data else 0, len(data)))
        entry += cname + b"\0" * (data_off - 16 - len(cname)) + data
        if i < len(contexts) - 1:
            entry += b"\0" * (wire.pad8(len(entry)) - len(entry))
            struct.pack_into("<I", entry, 0, len(entry))
        blob += entry
    ctx_off = wire.pad8(120 + len(encoded)) if blob else 0
    body = struct.pack("<HBBIQQIIIIIHHII", 57, 0, oplock, 2, 0, 0, access, 0, 7, disposition, 0,
                       120, len(wire.utf16(name)), ctx_off, len(blob)) + encoded
    if blob:
        body += b"\0" * (ctx_off - 64 - len(body)) + bytes(blob)
    return body


def dh2q(create_guid: bytes) -> tuple[bytes, bytes]:
    return b"DH2Q", struct.pack("<II8s16s", 0, 0, b"", create_guid)


def dh2c(fid: bytes, create_guid: bytes) -> tuple[bytes, bytes]:
    return b"DH2C", fid + create_guid + b"\0" * 4


def dhnc(fid: bytes) -> tuple[bytes, bytes]:
    return b"DHnC", fid


def app_instance(guid: bytes) -> tuple[bytes, bytes]:
    return APP_INSTANCE_ID, struct.pack("<HH16s", 20, 0, guid)


def lease(key: bytes, state: int = R | W | H) -> tuple[bytes, bytes]:
    return b"RqLs", struct.pack("<16sIIQ", key, state, 0, 0)


def lease_break_ack(conn: Conn, key: bytes, state: int):
    body = struct.pack("<HHI16sIQ", 36, 0, 0, key, state, 0)
    return conn.tree.request(wire.OPLOCK_BREAK, body)


def next_break(conn: Conn, timeout: float = 5.0):
    """The next unsolicited message (an oplock or lease break) on the connection, or None."""
    for r in list(conn.raw.stray):
        if r.header.message_id == UNSOLICITED:
            conn.raw.stray.remove(r)
            return r
    conn.raw.sock.settimeout(timeout)
    try:
        while True:
            for r in conn.raw.parse(conn.raw.recv_frame()):
                if r.header.message_id == UNSOLICITED:
                    return r
                conn.raw.stray.append(r)
    except NoAnswer:
        return None
    finally:
        conn.raw.sock.settimeout(10.0)


def reads(conn: Conn, fid: bytes) -> int:
    return conn.tree.read(fid, 4).status


def reconnect(conn: Conn, context, wait: float = 3.0):
    """A DHnC/DH2C, retried briefly while the server may still be taking a lost connection down."""
    deadline = time.monotonic() + wait
    while True:
        r = conn.create("ignored", access=0, contexts=[context])
        if r.status != wire.STATUS_OBJECT_NAME_NOT_FOUND or time.monotonic() > deadline:
            return r
        time.sleep(0.1)


# -- AppInstanceId (MS-SMB2 3.3.5.9.13) --------------------------------------------------------

@pytest.mark.parametrize("same_client_guid", [False, True])
def test_another_users_app_instance_id_closes_nothing(server, same_client_guid):
    """An AppInstanceId closes the earlier open of a failed-over application: only the same
    user's. BOB naming ALICE's AppInstanceId (from his own client, or from hers) must leave her
    open alone; ALICE naming it again from another client closes hers (the check is real)."""
    app = os.urandom(16)
    alice = Conn(server, ALICE)
    r = alice.create("alice.txt", oplock=BATCH, contexts=[dh2q(os.urandom(16)), app_instance(app)])
    assert r.status == wire.STATUS_SUCCESS and b"DH2Q" in create_contexts_of(r), r
    fid = r.file_id
    bob = Conn(server, BOB, alice.guid if same_client_guid else None)
    try:
        r = bob.create(f"bob-app-{same_client_guid}.txt", oplock=BATCH,
                       contexts=[dh2q(os.urandom(16)), app_instance(app)])
        assert r.status == wire.STATUS_SUCCESS and b"DH2Q" in create_contexts_of(r), r
        assert reads(alice, fid) == wire.STATUS_SUCCESS         # still hers
        # ALICE's application, failed over to another client, names the same instance
        again = Conn(server, ALICE)
        r = again.create(f"alice-app-{same_client_guid}.txt", oplock=BATCH,
                         contexts=[dh2q(os.urandom(16)), app_instance(app)])
        assert r.status == wire.STATUS_SUCCESS, r
        assert reads(alice, fid) == wire.STATUS_FILE_CLOSED     # her earlier instance's open went
        again.close()
    finally:
        bob.close()
        alice.close()


# -- durable reconnects and replays ------------------------------------------------------------

@pytest.mark.parametrize("same_client_guid", [False, True])
def test_another_user_cannot_reclaim_or_replay_a_durable_open(server, same_client_guid):
    """BOB, knowing ALICE's FileId, CreateGuid and ClientGuid, tries DH2C, DHnC and a replayed
    CREATE, while her open is attached and after her connection is lost; she then gets it back."""
    create_guid = os.urandom(16)
    alice = Conn(server, ALICE)
    r = alice.create("secret.txt", access=wire.GENERIC_READ, disposition=wire.FILE_OPEN, oplock=BATCH,
                     contexts=[dh2q(create_guid)])
    assert r.status == wire.STATUS_SUCCESS and b"DH2Q" in create_contexts_of(r), r
    fid = r.file_id
    bob = Conn(server, BOB, alice.guid if same_client_guid else None)
    try:
        for ctx in (dh2c(fid, create_guid), dhnc(fid)):
            assert reconnect(bob, ctx, wait=0).status == wire.STATUS_OBJECT_NAME_NOT_FOUND
        # a replay of her CREATE (same ClientGuid, CreateGuid): a CREATE of his own at most
        r = bob.create("secret.txt", access=wire.GENERIC_READ, disposition=wire.FILE_OPEN, oplock=BATCH,
                       contexts=[dh2q(create_guid)], flags=wire.FLAGS_REPLAY)
        assert r.status != wire.STATUS_SUCCESS and r.file_id != fid, r
        alice.close()                   # her connection is lost: the open waits, detached
        time.sleep(0.5)
        for ctx in (dh2c(fid, create_guid), dhnc(fid)):
            assert reconnect(bob, ctx, wait=0).status == wire.STATUS_OBJECT_NAME_NOT_FOUND
        r = bob.create("secret.txt", access=wire.GENERIC_READ, disposition=wire.FILE_OPEN,
                       contexts=[dh2q(create_guid)], flags=wire.FLAGS_REPLAY)
        assert r.status == wire.STATUS_ACCESS_DENIED, r        # (0600: the kernel says no)
        back = Conn(server, ALICE, alice.guid)
        r = reconnect(back, dh2c(fid, create_guid))
        assert r.status == wire.STATUS_SUCCESS, r
        assert back.tree.read(r.file_id, 64).body[16:].startswith(b"secret.txt of alice")
        back.close()
    finally:
        bob.close()


# -- leases ------------------------------------------------------------------------------------

def test_another_clients_lease_key_names_another_lease(server):
    """BOB (his own ClientGuid) asks for a lease with ALICE's LeaseKey on another file and on
    hers, and acknowledges with it: her lease is his in nothing."""
    key = os.urandom(16)
    alice, bob = Conn(server, ALICE), Conn(server, BOB)
    try:
        r = alice.create("alice.txt", access=wire.GENERIC_READ, disposition=wire.FILE_OPEN, oplock=LEASE,
                         contexts=[lease(key)])
        assert r.status == wire.STATUS_SUCCESS, r
        r = bob.create("bob-lease.txt", oplock=LEASE, contexts=[lease(key)])
        assert r.status == wire.STATUS_SUCCESS, r
        assert next_break(alice, 0.5) is None                   # nothing of hers moved
        assert lease_break_ack(bob, key, R).status == wire.STATUS_UNSUCCESSFUL     # his own, not breaking
        # the key names his file for his client: not hers
        r = bob.create("alice.txt", access=wire.GENERIC_READ, disposition=wire.FILE_OPEN, oplock=LEASE,
                       contexts=[lease(key)])
        assert r.status == wire.STATUS_INVALID_PARAMETER, r
        assert next_break(alice, 0.5) is None
    finally:
        bob.close()
        alice.close()


def test_a_lease_break_is_acknowledged_by_its_holder_only(server):
    """ALICE's lease (RWH) on her file is being broken by BOB's write open; BOB, on a connection
    that names her ClientGuid (so the lease table's (ClientGuid, LeaseKey) names her lease),
    acknowledges the break with her LeaseKey before she can: refused, and her lease is still
    breaking, so her own acknowledgement is taken and BOB's open waits for it."""
    key = os.urandom(16)
    alice = Conn(server, ALICE)
    r = alice.create("shared-lease.txt", oplock=LEASE, contexts=[lease(key)])
    assert r.status == wire.STATUS_SUCCESS, r
    fid = r.file_id
    opener = Conn(server, BOB)
    thief = Conn(server, BOB, alice.guid)
    try:
        msg = opener.raw.message(wire.CREATE, create_request("shared-lease.txt", wire.GENERIC_READ,
                                                             wire.FILE_OPEN, 0, ()),
                                 session=opener.session, tree_id=opener.tree.id)
        opener.raw.send([msg])
        pending = opener.raw.response_to(wire.Header.parse(msg).message_id)
        assert pending.status == wire.STATUS_PENDING, pending
        brk = next_break(alice)
        assert brk is not None and brk.body[8:24] == key, brk
        assert lease_break_ack(thief, key, R | H).status == wire.STATUS_OBJECT_NAME_NOT_FOUND
        assert lease_break_ack(thief, key, 0).status == wire.STATUS_OBJECT_NAME_NOT_FOUND
        # her acknowledgement is the one that counts
        assert lease_break_ack(alice, key, R | H).status == wire.STATUS_SUCCESS
        done = opener.raw.response_to(wire.Header.parse(msg).message_id)
        assert done.status == wire.STATUS_SUCCESS, done
        assert alice.tree.flush(fid).status == wire.STATUS_SUCCESS
    finally:
        thief.close()
        opener.close()
        alice.close()


def test_another_user_cannot_join_her_lease(server):
    """BOB, on a connection naming ALICE's ClientGuid, opens her file asking for her LeaseKey:
    the lease table's (ClientGuid, LeaseKey) names her lease, but his open must not become one
    of its holders (it would keep its caching without her lease being broken, and let him
    acknowledge its breaks in her place, which the test above refuses). His open gets no lease
    and breaks hers as another client's would; his acknowledgement is refused, hers counts."""
    key = os.urandom(16)
    alice = Conn(server, ALICE)
    r = alice.create("joined-lease.txt", oplock=LEASE, contexts=[lease(key)])
    assert r.status == wire.STATUS_SUCCESS, r
    fid = r.file_id
    thief = Conn(server, BOB, alice.guid)
    try:
        msg = thief.raw.message(wire.CREATE, create_request("joined-lease.txt", wire.GENERIC_READ,
                                                            wire.FILE_OPEN, LEASE, [lease(key)]),
                                session=thief.session, tree_id=thief.tree.id)
        thief.raw.send([msg])
        first = thief.raw.response_to(wire.Header.parse(msg).message_id)
        assert first.status == wire.STATUS_PENDING, first     # her write caching is broken first
        brk = next_break(alice)
        assert brk is not None and brk.body[8:24] == key, brk
        assert lease_break_ack(thief, key, R | H).status == wire.STATUS_OBJECT_NAME_NOT_FOUND
        assert lease_break_ack(alice, key, R | H).status == wire.STATUS_SUCCESS
        done = thief.raw.response_to(wire.Header.parse(msg).message_id)
        assert done.status == wire.STATUS_SUCCESS, done
        assert b"RqLs" not in create_contexts_of(done) and done.body[2] == 0, done
        assert alice.tree.flush(fid).status == wire.STATUS_SUCCESS
    finally:
        thief.close()
        alice.close()


def test_users_of_one_connection_share_its_lease(server):
    """What the check above leaves alone: a multi-user client (one connection, a session per
    user, one cache per file: its LeaseKey) opens ALICE's file as BOB with the key her session
    holds on the same connection: the lease is shared, nobody waits for a break."""
    key = os.urandom(16)
    alice = Conn(server, ALICE)
    try:
        r = alice.create("multiuser-lease.txt", oplock=LEASE, contexts=[lease(key)])
        assert r.status == wire.STATUS_SUCCESS, r
        bob_tree = alice.raw.tree(alice.raw.logon(BOB, PASSWORD), "share")
        r = bob_tree.request(wire.CREATE, create_request("multiuser-lease.txt", wire.GENERIC_READ,
                                                         wire.FILE_OPEN, LEASE, [lease(key)]))
        assert r.status == wire.STATUS_SUCCESS and b"RqLs" in create_contexts_of(r), r
        assert next_break(alice, 0.5) is None
    finally:
        alice.close()


def test_her_new_session_after_a_lost_connection_gets_her_lease_again(server):
    """The check above leaves ALICE's lease key to her: her connection lost (her durable open
    waits detached, its session gone), a new session of hers under the same ClientGuid opens
    the file with the same LeaseKey and gets a lease; BOB, naming her ClientGuid and the key,
    then gets none and breaks hers."""
    key = os.urandom(16)
    alice = Conn(server, ALICE)
    r = alice.create("rejoin-lease.txt", oplock=LEASE, contexts=[lease(key), dh2q(os.urandom(16))])
    assert r.status == wire.STATUS_SUCCESS and b"DH2Q" in create_contexts_of(r), r
    alice.close()
    back = Conn(server, ALICE, alice.guid)
    thief = Conn(server, BOB, alice.guid)
    try:
        time.sleep(0.5)                 # (the server takes her lost connection down)
        r = back.create("rejoin-lease.txt", oplock=LEASE, contexts=[lease(key)])
        assert r.status == wire.STATUS_SUCCESS and b"RqLs" in create_contexts_of(r), r
        msg = thief.raw.message(wire.CREATE, create_request("rejoin-lease.txt", wire.GENERIC_READ,
                                                            wire.FILE_OPEN, LEASE, [lease(key)]),
                                session=thief.session, tree_id=thief.tree.id)
        thief.raw.send([msg])
        assert thief.raw.response_to(wire.Header.parse(msg).message_id).status == wire.STATUS_PENDING
        brk = next_break(back)
        assert brk is not None and brk.body[8:24] == key, brk
        assert lease_break_ack(back, key, R | H).status == wire.STATUS_SUCCESS
        r = thief.raw.response_to(wire.Header.parse(msg).message_id)
        assert r.status == wire.STATUS_SUCCESS and b"RqLs" not in create_contexts_of(r), r
    finally:
        thief.close()
        back.close()


def test_her_detached_lease_is_joined_by_her_only(server):
    """ALICE's leased durable open waits detached (her connection lost). An attribute-only
    open (which leaves a detached open alone) asking for her LeaseKey under her ClientGuid
    joins her lease when it is hers, not when it is BOB's; she then reclaims her open."""
    key, create_guid = os.urandom(16), os.urandom(16)
    alice = Conn(server, ALICE)
    r = alice.create("detached-lease.txt", oplock=LEASE, contexts=[lease(key), dh2q(create_guid)])
    assert r.status == wire.STATUS_SUCCESS and b"DH2Q" in create_contexts_of(r), r
    fid = r.file_id
    alice.close()
    back = Conn(server, ALICE, alice.guid)
    thief = Conn(server, BOB, alice.guid)
    try:
        time.sleep(0.5)                 # (the server takes her lost connection down)
        stat_only = 0x80 | 0x100000     # FILE_READ_ATTRIBUTES | SYNCHRONIZE
        r = thief.create("detached-lease.txt", access=stat_only, disposition=wire.FILE_OPEN, oplock=LEASE,
                         contexts=[lease(key)])
        assert r.status == wire.STATUS_SUCCESS and b"RqLs" not in create_contexts_of(r), r
        r = back.create("detached-lease.txt", access=stat_only, disposition=wire.FILE_OPEN, oplock=LEASE,
                        contexts=[lease(key)])
        assert r.status == wire.STATUS_SUCCESS and b"RqLs" in create_contexts_of(r), r
        r = back.create("detached-lease.txt", oplock=LEASE, contexts=[dh2c(fid, create_guid), lease(key)])
        assert r.status == wire.STATUS_SUCCESS, r
    finally:
        thief.close()
        back.close()


def test_a_lease_key_taken_first_by_another_user_costs_her_only_the_lease(server):
    """BOB, naming ALICE's ClientGuid, takes a LeaseKey first on a file of his (and on her
    file): her CREATE with that key on her file must still open it (without a lease: the key
    names his), not fail with INVALID_PARAMETER (a lease key names one file for one client),
    nor join his lease."""
    key = os.urandom(16)
    alice = Conn(server, ALICE)
    squatter = Conn(server, BOB, alice.guid)
    try:
        r = squatter.create("bob-squat.txt", oplock=LEASE, contexts=[lease(key)])
        assert r.status == wire.STATUS_SUCCESS and b"RqLs" in create_contexts_of(r), r
        r = alice.create("alice.txt", access=wire.GENERIC_READ, disposition=wire.FILE_OPEN, oplock=LEASE,
                         contexts=[lease(key)])
        assert r.status == wire.STATUS_SUCCESS, r
        assert b"RqLs" not in create_contexts_of(r), r
        assert alice.tree.close(r.file_id).status == wire.STATUS_SUCCESS
        # on the same file: his lease is broken as another client's, hers is none of his
        r = squatter.create("alice.txt", access=wire.GENERIC_READ, disposition=wire.FILE_OPEN, oplock=LEASE,
                            contexts=[lease(os.urandom(16))])
        assert r.status == wire.STATUS_SUCCESS, r
    finally:
        squatter.close()
        alice.close()


def test_a_lease_break_goes_to_a_connection_of_its_user(server):
    """BOB connects first, naming ALICE's ClientGuid (stable per machine for many clients, and
    sent in the clear), so his connection is her client's oldest: her lease break must still
    go to her connection, not to his (where it would be acknowledged by his TCP stack, and her
    client would never flush and answer: the opener would wait the whole break timeout)."""
    key, guid = os.urandom(16), os.urandom(16)
    early = Conn(server, BOB, guid)
    alice = Conn(server, ALICE, guid)
    opener = Conn(server, BOB)
    try:
        r = alice.create("early-lease.txt", oplock=LEASE, contexts=[lease(key)])
        assert r.status == wire.STATUS_SUCCESS, r
        msg = opener.raw.message(wire.CREATE, create_request("early-lease.txt", wire.GENERIC_READ, wire.FILE_OPEN,
                                                             0, ()), session=opener.session, tree_id=opener.tree.id)
        opener.raw.send([msg])
        assert opener.raw.response_to(wire.Header.parse(msg).message_id).status == wire.STATUS_PENDING
        brk = next_break(alice)
        assert brk is not None and brk.body[8:24] == key, brk
        assert next_break(early, 0.5) is None
        assert lease_break_ack(alice, key, R | H).status == wire.STATUS_SUCCESS
        assert opener.raw.response_to(wire.Header.parse(msg).message_id).status == wire.STATUS_SUCCESS
    finally:
        opener.close()
        alice.close()
        early.close()


# -- handles, async requests and resume keys of another session ----------------------------------

def test_another_users_connection_with_her_client_guid_reaches_none_of_her_handles(server):
    """BOB's connection names ALICE's ClientGuid, so her opens are in the table his requests
    look in: READ, WRITE, CLOSE, IOCTL, an oplock acknowledgement, a copy with her resume key,
    and a CANCEL of her waiting CHANGE_NOTIFY (by its AsyncId) must reach none of them."""
    alice = Conn(server, ALICE)
    r = alice.create("secret.txt", access=wire.GENERIC_READ, disposition=wire.FILE_OPEN, oplock=BATCH)
    assert r.status == wire.STATUS_SUCCESS, r
    fid = r.file_id
    r = alice.tree.ioctl(fid, FSCTL_SRV_REQUEST_RESUME_KEY, b"", 32)
    assert r.status == wire.STATUS_SUCCESS, r
    resume_key = r.buffer(32, "<II")[:24]
    root = alice.create("alice-dir", access=0x1 | 0x100080, disposition=wire.FILE_OPEN)
    assert root.status == wire.STATUS_SUCCESS, root
    notify = alice.raw.message(wire.CHANGE_NOTIFY, change_notify_body(root.file_id, 0x17, 0, 4096),
                               session=alice.session, tree_id=alice.tree.id)
    alice.raw.send([notify])
    interim = alice.raw.response_to(wire.Header.parse(notify).message_id)
    assert interim.status == wire.STATUS_PENDING
    async_id = interim.header.async_id
    bob = Conn(server, BOB, alice.guid)
    try:
        t = bob.tree
        assert t.read(fid, 16).status == wire.STATUS_FILE_CLOSED
        assert t.write(fid, b"x").status == wire.STATUS_FILE_CLOSED
        assert t.ioctl(fid, FSCTL_SRV_REQUEST_RESUME_KEY, b"", 32).status == wire.STATUS_FILE_CLOSED
        assert t.request(wire.OPLOCK_BREAK, struct.pack("<HBBI", 24, 0, 0, 0) + fid).status == \
            wire.STATUS_FILE_CLOSED
        # the same FileId and TreeId on his session: only the session's own opens
        assert bob.raw.request(wire.READ, read_body(fid, 16), session=bob.session,
                               tree_id=alice.tree.id, payload=16).status in (
            wire.STATUS_NETWORK_NAME_DELETED, wire.STATUS_FILE_CLOSED)
        dst = t.open("bob-copy.txt", READ_WRITE, wire.FILE_OVERWRITE_IF)
        chunk = struct.pack("<24sII", resume_key, 1, 0) + struct.pack("<QQII", 0, 0, 16, 0)
        assert t.ioctl(dst, FSCTL_SRV_COPYCHUNK_WRITE, chunk, 12).status == wire.STATUS_OBJECT_NAME_NOT_FOUND
        # CANCEL of her notify by its AsyncId (and by its MessageId), from his connection
        for flags, message_id in ((wire.FLAGS_ASYNC, 0), (0, wire.Header.parse(notify).message_id)):
            cancel = bytearray(wire.Header(command=wire.CANCEL, flags=flags, message_id=message_id,
                                           async_id=async_id, session_id=bob.session.id).pack() +
                               struct.pack("<HH", 4, 0))
            bob.raw.send([cancel])
        assert bob.raw.echo().status == wire.STATUS_SUCCESS
        assert t.close(fid).status == wire.STATUS_FILE_CLOSED
        assert reads(alice, fid) == wire.STATUS_SUCCESS         # all still hers
        assert (server["share"] / "bob-copy.txt").read_bytes() == b""
        alice.raw.sock.settimeout(1.0)
        with pytest.raises(NoAnswer):           # her notify waits on
            alice.raw.response_to(wire.Header.parse(notify).message_id)
        alice.raw.sock.settimeout(10.0)
        # her own CANCEL does end it (the CANCELs above could have)
        cancel = bytearray(wire.Header(command=wire.CANCEL, flags=wire.FLAGS_ASYNC, async_id=async_id,
                                       session_id=alice.session.id).pack() + struct.pack("<HH", 4, 0))
        alice.raw.send([cancel], sign=True)
        assert alice.raw.response_to(wire.Header.parse(notify).message_id).status == wire.STATUS_CANCELLED
    finally:
        bob.close()
        alice.close()


# -- sessions: LOGOFF, PreviousSessionId, binding ------------------------------------------------

def test_another_user_cannot_end_or_bind_her_session(server):
    """From a connection naming ALICE's ClientGuid, BOB sends LOGOFF and TREE_DISCONNECT with
    her SessionId and TreeId, logs on naming her session as his PreviousSessionId, and tries to
    bind his connection to her session (his own credentials, his key's signature): her session
    and open go on."""
    alice = Conn(server, ALICE)
    fid = alice.tree.open("alice.txt", wire.GENERIC_READ)
    bob = Conn(server, BOB, alice.guid)
    try:
        assert bob.raw.logoff(alice.session.id).status == wire.STATUS_USER_SESSION_DELETED
        assert bob.raw.request(wire.TREE_DISCONNECT, struct.pack("<HH", 4, 0), session=alice.session.id,
                               tree_id=alice.tree.id).status == wire.STATUS_USER_SESSION_DELETED
        # a second logon of BOB's naming her session as the one it replaces
        ctx = spnego.client(BOB, PASSWORD, hostname="smbring", service="cifs")
        s = bob.raw.start_logon(None)
        token = ctx.step()
        while True:
            msg = bob.raw.message(wire.SESSION_SETUP, session_setup_body(token, previous=alice.session.id),
                                  session=s)
            bob.raw.send([msg])
            r = bob.raw.response_to(wire.Header.parse(msg).message_id)
            s.preauth.update(msg)
            if r.status != wire.STATUS_MORE_PROCESSING_REQUIRED:
                break
            s.preauth.update(r.raw)
            s.id = r.header.session_id
            bob.raw.sessions[s.id] = s
            token = ctx.step(bob.raw.security_buffer(r))
        assert r.status == wire.STATUS_SUCCESS, r
        # binding his connection to her session, signed with his own session's key
        msg = bob.raw.message(wire.SESSION_SETUP, session_setup_body(
            spnego.client(BOB, PASSWORD, hostname="smbring", service="cifs").step(),
            flags=wire.SESSION_FLAG_BINDING), session=alice.session.id)
        bob.raw.send([msg], sign=True, signing_key=bob.session.signing_key)
        assert bob.raw.response_to(wire.Header.parse(msg).message_id).status == wire.STATUS_ACCESS_DENIED
        assert reads(alice, fid) == wire.STATUS_SUCCESS
        assert alice.raw.echo().status == wire.STATUS_SUCCESS
    finally:
        bob.close()
        alice.close()


# -- signing in compounds -----------------------------------------------------------------------

def test_an_unsigned_request_in_a_signed_compound_is_refused(server):
    """A session that signs (the client asked for signing): a compound whose first request is
    signed and whose related second one is not (or names another session) is not run past
    the first; the file stays as it was."""
    raw = RawClient(server["port"])
    try:
        r = raw.negotiate((wire.SMB311,), security_mode=wire.SECURITY_SIGNING_ENABLED | wire.SECURITY_SIGNING_REQUIRED)
        assert r.status == wire.STATUS_SUCCESS
        s = raw.logon(ALICE, PASSWORD)
        t = raw.tree(s, "share")
        fid = t.open("compound.txt", READ_WRITE, wire.FILE_OVERWRITE_IF)
        first = t.message(wire.READ, read_body(fid, 1), payload=1)
        second = t.message(wire.WRITE, write_body(fid, b"forged"), flags=wire.FLAGS_RELATED)
        for m in (first, second):
            m[20:24] = b"\0\0\0\0"
        # sign the first only: build the chain by hand
        first += b"\0" * (wire.pad8(len(first)) - len(first))
        struct.pack_into("<I", first, 20, len(first))
        security.apply_signature(raw.sign_algorithm(), s.signing_key, first)
        chained = bytes(first) + bytes(second)
        raw.send_frame(len(chained).to_bytes(4, "big") + chained)
        answers = [raw.response_to(wire.Header.parse(m).message_id) for m in (first, second)]
        # (a related request whose session check fails: INVALID_PARAMETER, MS-SMB2 3.3.5.2.7.2)
        assert answers[1].status == wire.STATUS_INVALID_PARAMETER, answers
        assert (server["share"] / "compound.txt").read_bytes() == b""
    finally:
        raw.close()


def test_server_log_is_clean(server):
    text = server["log"].read_text()
    assert "Traceback" not in text and "failed" not in text.lower().replace("logon failed", ""), text[-3000:]


# -- re-authentication as another user -----------------------------------------------------------

def rename_info(name: str) -> bytes:
    encoded = name.encode("utf-16-le")
    return struct.pack("<B7xQI", 0, 0, len(encoded)) + encoded


def test_handles_opened_before_a_reauthentication_act_as_the_new_user(server):
    """ALICE's session re-authenticates as BOB (as smbd allows): her open keeps the access it
    was granted (it still reads), but what is decided by who acts now (a rename in the sticky
    share of her file, her 0600 file opened anew) is decided as BOB: her identity does not
    stay with the handles for him to use."""
    conn = Conn(server, ALICE)
    try:
        (server["share"] / "reauth.txt").write_text("hers")
        os.chown(server["share"] / "reauth.txt", *server["accounts"][ALICE])
        fid = conn.tree.open("reauth.txt", wire.GENERIC_READ | wire.DELETE)
        raw, s = conn.raw, conn.session
        ctx = spnego.client(BOB, PASSWORD, hostname="smbring", service="cifs")
        r = raw.request(wire.SESSION_SETUP, session_setup_body(ctx.step()), session=s)
        assert r.status == wire.STATUS_MORE_PROCESSING_REQUIRED, r
        r = raw.request(wire.SESSION_SETUP, session_setup_body(ctx.step(raw.security_buffer(r))), session=s)
        assert r.status == wire.STATUS_SUCCESS, r
        assert conn.tree.read(fid, 4).status == wire.STATUS_SUCCESS
        r = conn.tree.set_info(fid, 1, 10, rename_info("moved-by-bob.txt"))
        assert r.status == wire.STATUS_ACCESS_DENIED, r
        assert (server["share"] / "reauth.txt").exists()
        assert conn.create("secret.txt", access=wire.GENERIC_READ, disposition=wire.FILE_OPEN).status == \
            wire.STATUS_ACCESS_DENIED
        # back as ALICE, the same handle renames (the refusal above was BOB's)
        ctx = spnego.client(ALICE, PASSWORD, hostname="smbring", service="cifs")
        r = raw.request(wire.SESSION_SETUP, session_setup_body(ctx.step()), session=s)
        r = raw.request(wire.SESSION_SETUP, session_setup_body(ctx.step(raw.security_buffer(r))), session=s)
        assert r.status == wire.STATUS_SUCCESS, r
        assert conn.tree.set_info(fid, 1, 10, rename_info("moved-by-alice.txt")).status == wire.STATUS_SUCCESS
    finally:
        conn.close()
