"""Requests a client sends again against a real server (MS-SMB2 3.3.5.14, 3.3.5.9.7,
3.3.5.9.10, 3.3.5.9.12), with the raw client (tests/security/raw.py), which sets
LockSequence, SMB2_FLAGS_REPLAY_OPERATION and the create contexts byte by byte:

- lock sequences: a LOCK numbered like the last one that succeeded in its bucket is a replay,
  answered success without effect; never for another open, never granting what the open does
  not hold, and only where the specification asks for the check;
- durable opens with a lease: reclaimed only by their client, with their lease key and under
  their name, and answered with the lease;
- CREATE replays with leases, and a CREATE held for a break that outlives its lost channel.
"""
from __future__ import annotations

import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "security"))
from logon import bind_channel  # noqa: E402
from raw import RawClient, Session  # noqa: E402
from servers import PASSWORD, USER, free_port, spawn, stop  # noqa: E402
from smbcore import create_body  # noqa: E402
from smbcore import create_contexts_of as contexts_of  # noqa: E402
from smbcore import oplock_level_of as oplock_of  # noqa: E402

from smbring.smb import wire  # noqa: E402

OTHER, OTHER_PASSWORD = "otheruser", "Other-pass1"
BATCH, NONE_OPLOCK, LEASE = 0x09, 0x00, 0xFF
READ_WRITE = 0x0012019F
R, H, W = 0x1, 0x2, 0x4
EXCLUSIVE_NOW = wire.LOCK_EXCLUSIVE | wire.LOCK_FAIL_IMMEDIATELY
STATUS_ACCESS_DENIED = 0xC0000022
STATUS_DUPLICATE_OBJECTID = 0xC000022A


@pytest.fixture(scope="module")
def start(tmp_path_factory):
    """start(**global options) -> port: a server with one writable share `rw`, and the users
    USER and OTHER."""
    procs = []

    def run(**options):
        root = tmp_path_factory.mktemp("replay")
        (root / "rw").mkdir()
        port = free_port()
        # clients are often still connected when the module's servers stop: they need not
        # wait the default shutdown timeout (10 s each) for them
        options = {"shutdown_timeout": 1, **options}
        lines = ["[global]", f"listen = 127.0.0.1:{port}"]
        lines += [f"{k.replace('_', ' ')} = {v}" for k, v in options.items()]
        lines += ["[rw]", f"path = {root / 'rw'}", "read only = no"]
        (root / "smb.conf").write_text("\n".join(lines) + "\n")
        proc, port, _log = spawn(root, "--config", str(root / "smb.conf"), port=port)
        procs.append(proc)
        env = dict(os.environ, SMBRING_PASSDB=str(root / "passdb"))
        subprocess.run([sys.executable, "-m", "smbring.cli", "user", "add", OTHER, "--password-stdin"],
                       input=OTHER_PASSWORD + "\n", text=True, env=env, check=True, capture_output=True)
        return port

    yield run
    for proc in procs:
        stop(proc)


@pytest.fixture(scope="module")
def port(start):
    return start()


class Conn:
    """One connection with one session and a tree of `rw`."""

    def __init__(self, port: int, *, client_guid: bytes | None = None, dialect: int = wire.SMB311,
                 user: str = USER, password: str = PASSWORD):
        self.client_guid = client_guid or os.urandom(16)
        self.raw = RawClient(port)
        assert self.raw.negotiate((dialect,), client_guid=self.client_guid).status == wire.STATUS_SUCCESS
        self.session = self.raw.logon(user, password)
        self.tree = self.raw.tree(self.session, "rw")

    def create(self, name: str, *, oplock: int = NONE_OPLOCK, contexts=(), access: int = READ_WRITE,
               share_access: int = 7, flags: int = 0, disposition: int = wire.FILE_OPEN_IF, tree=None):
        return (tree or self.tree).request(wire.CREATE, create_body(
            name, access, disposition, 0, share_access=share_access, contexts=list(contexts),
            oplock=oplock), flags=flags)

    def lock(self, fid: bytes, offset: int, length: int, flags: int, *, index: int = 0, number: int = 0):
        """One LOCK element, numbered LockSequenceIndex `index`, LockSequenceNumber `number`."""
        body = struct.pack("<HHI16s", 48, 1, (index << 4) | number, fid) + \
            struct.pack("<QQII", offset, length, flags, 0)
        return self.tree.request(wire.LOCK, body)


def action_of(r) -> int:
    return struct.unpack_from("<I", r.raw, 64 + 4)[0]


def lease(key: bytes, state: int) -> tuple[bytes, bytes]:
    return (b"RqLs", struct.pack("<16sIIQ", key, state, 0, 0))


def lease_state(r) -> tuple[bytes, int]:
    key, state = struct.unpack_from("<16sI", contexts_of(r)[b"RqLs"])
    return key, state


def dhnq() -> tuple[bytes, bytes]:
    return (b"DHnQ", b"\0" * 16)


def dh2q(create_guid: bytes) -> tuple[bytes, bytes]:
    return (b"DH2Q", struct.pack("<II8s16s", 0, 0, b"", create_guid))


def dhnc(fid: bytes) -> tuple[bytes, bytes]:
    return (b"DHnC", fid)


def name() -> str:
    return f"f-{os.urandom(4).hex()}"


# -- lock sequences -------------------------------------------------------------------------

def test_a_lock_sequence_replay_is_answered_without_effect(port):
    a, b = Conn(port), Conn(port)
    f = name()
    fid = a.create(f).file_id
    other = b.create(f).file_id
    assert a.lock(fid, 100, 100, EXCLUSIVE_NOW, index=1, number=1).status == wire.STATUS_SUCCESS
    # the same request again: a replay, answered success (it would conflict with itself)
    assert a.lock(fid, 100, 100, EXCLUSIVE_NOW, index=1, number=1).status == wire.STATUS_SUCCESS
    # an unlock numbered like it is a replay too: nothing is unlocked
    assert a.lock(fid, 100, 100, wire.LOCK_UNLOCK, index=1, number=1).status == wire.STATUS_SUCCESS
    assert b.lock(other, 100, 100, EXCLUSIVE_NOW).status == wire.STATUS_LOCK_NOT_GRANTED
    # a new number unlocks, once: its replay is answered success, without unlocking again
    assert a.lock(fid, 100, 100, wire.LOCK_UNLOCK, index=1, number=2).status == wire.STATUS_SUCCESS
    assert a.lock(fid, 100, 100, wire.LOCK_UNLOCK, index=1, number=2).status == wire.STATUS_SUCCESS
    assert a.lock(fid, 100, 100, wire.LOCK_UNLOCK, index=1, number=3).status == wire.STATUS_RANGE_NOT_LOCKED


@pytest.mark.parametrize("index", [0, 65, 0xFFFFFFF])
def test_a_lock_sequence_index_outside_1_to_64_is_not_checked(port, index):
    a = Conn(port)
    fid = a.create(name()).file_id
    assert a.lock(fid, 0, 10, EXCLUSIVE_NOW, index=index, number=1).status == wire.STATUS_SUCCESS
    assert a.lock(fid, 0, 10, EXCLUSIVE_NOW, index=index, number=1).status == wire.STATUS_LOCK_NOT_GRANTED


def test_bucket_64_is_the_last(port):
    a = Conn(port)
    fid = a.create(name()).file_id
    assert a.lock(fid, 0, 10, EXCLUSIVE_NOW, index=64, number=15).status == wire.STATUS_SUCCESS
    assert a.lock(fid, 0, 10, EXCLUSIVE_NOW, index=64, number=15).status == wire.STATUS_SUCCESS


def test_a_lock_sequence_replay_grants_nothing(port):
    """The buckets are the open's own: another open numbering its request alike gets no lock,
    and a replay after the lock was released takes nothing back."""
    a, b = Conn(port), Conn(port)
    f = name()
    fid = a.create(f).file_id
    other = b.create(f).file_id
    assert a.lock(fid, 0, 50, EXCLUSIVE_NOW, index=1, number=1).status == wire.STATUS_SUCCESS
    assert b.lock(other, 0, 50, EXCLUSIVE_NOW, index=1, number=1).status == wire.STATUS_LOCK_NOT_GRANTED
    assert a.lock(fid, 0, 50, wire.LOCK_UNLOCK, index=2, number=1).status == wire.STATUS_SUCCESS
    assert b.lock(other, 0, 50, EXCLUSIVE_NOW, index=1, number=1).status == wire.STATUS_SUCCESS
    # a's replay of its first lock is answered success, and a holds nothing
    assert a.lock(fid, 0, 50, EXCLUSIVE_NOW, index=1, number=1).status == wire.STATUS_SUCCESS
    assert a.lock(fid, 0, 50, wire.LOCK_UNLOCK, index=3, number=1).status == wire.STATUS_RANGE_NOT_LOCKED
    assert a.tree.write(fid, b"x", 10).status == wire.STATUS_FILE_LOCK_CONFLICT     # b's lock stands


def test_a_failed_lock_clears_its_bucket(port):
    a = Conn(port)
    fid = a.create(name()).file_id
    assert a.lock(fid, 0, 10, EXCLUSIVE_NOW, index=5, number=1).status == wire.STATUS_SUCCESS
    assert a.lock(fid, 0, 10, EXCLUSIVE_NOW, index=5, number=2).status == wire.STATUS_LOCK_NOT_GRANTED
    # number 1 is no longer the bucket's: the request is done again (and conflicts)
    assert a.lock(fid, 0, 10, EXCLUSIVE_NOW, index=5, number=1).status == wire.STATUS_LOCK_NOT_GRANTED


def test_lock_sequences_are_checked_only_where_the_specification_asks(port, start):
    def replayed(conn: Conn, fid: bytes) -> int:
        assert conn.lock(fid, 0, 10, EXCLUSIVE_NOW, index=1, number=1).status == wire.STATUS_SUCCESS
        return conn.lock(fid, 0, 10, EXCLUSIVE_NOW, index=1, number=1).status

    # SMB 2.1: no multichannel; only a durable open checks
    old = Conn(port, dialect=wire.SMB210)
    assert replayed(old, old.create(name()).file_id) == wire.STATUS_LOCK_NOT_GRANTED
    r = old.create(name(), oplock=BATCH, contexts=[dhnq()])
    assert b"DHnQ" in contexts_of(r)
    assert replayed(old, r.file_id) == wire.STATUS_SUCCESS
    # SMB 3.1.1 without `server multi channel support`: only a durable open checks
    single = Conn(start(server_multi_channel_support="no"))
    assert replayed(single, single.create(name()).file_id) == wire.STATUS_LOCK_NOT_GRANTED
    r = single.create(name(), oplock=BATCH, contexts=[dhnq()])
    assert replayed(single, r.file_id) == wire.STATUS_SUCCESS


# -- durable opens with a lease -------------------------------------------------------------

def reclaim(conn: Conn, fname: str, fid: bytes, *contexts, wait: float = 0.0):
    """A DHnC (with `contexts`), retried briefly while the server may still be taking the lost
    connection down."""
    deadline = time.monotonic() + wait
    while True:
        r = conn.create(fname, oplock=LEASE, contexts=[dhnc(fid), *contexts])
        if r.status != wire.STATUS_OBJECT_NAME_NOT_FOUND or time.monotonic() > deadline:
            return r
        time.sleep(0.1)


def test_a_leased_durable_open_is_reclaimed_only_with_its_lease(port):
    guid, key, f = os.urandom(16), os.urandom(16), name()
    c = Conn(port, client_guid=guid)
    r = c.create(f, oplock=LEASE, contexts=[dhnq(), lease(key, R | W | H)])
    assert r.status == wire.STATUS_SUCCESS and b"DHnQ" in contexts_of(r)
    assert lease_state(r) == (key, R | W | H)
    fid = r.file_id
    c.raw.close()
    c2 = Conn(port, client_guid=guid)
    # the right lease, the wrong name (once the server has detached the open)
    assert reclaim(c2, "elsewhere", fid, lease(key, 0), wait=2).status == wire.STATUS_INVALID_PARAMETER
    # another client's lease of the same key is not this one
    other = Conn(port)
    assert reclaim(other, f, fid, lease(key, 0)).status == wire.STATUS_OBJECT_NAME_NOT_FOUND
    assert reclaim(c2, f, fid).status == wire.STATUS_OBJECT_NAME_NOT_FOUND          # no lease
    assert reclaim(c2, f, fid, lease(os.urandom(16), 0)).status == wire.STATUS_OBJECT_NAME_NOT_FOUND
    back = reclaim(c2, f, fid, lease(key, 0))        # (the state asked for is the lease's)
    assert back.status == wire.STATUS_SUCCESS, back
    assert oplock_of(back) == LEASE and lease_state(back) == (key, R | W | H)
    assert c2.tree.write(back.file_id, b"back").status == wire.STATUS_SUCCESS


def test_an_unleased_durable_open_is_not_reclaimed_with_a_lease(port):
    guid, f = os.urandom(16), name()
    c = Conn(port, client_guid=guid)
    r = c.create(f, oplock=BATCH, contexts=[dhnq()])
    assert b"DHnQ" in contexts_of(r)
    c.raw.close()
    c2 = Conn(port, client_guid=guid)
    time.sleep(0.5)
    assert reclaim(c2, f, r.file_id, lease(os.urandom(16), R)).status == wire.STATUS_OBJECT_NAME_NOT_FOUND
    back = reclaim(c2, f, r.file_id, wait=2)
    assert back.status == wire.STATUS_SUCCESS and oplock_of(back) == BATCH


# -- CREATE replays -------------------------------------------------------------------------

def test_a_replay_answers_the_open_s_lease_and_refuses_another(port):
    c = Conn(port)
    guid, key, f = os.urandom(16), os.urandom(16), name()
    r = c.create(f, oplock=LEASE, contexts=[dh2q(guid), lease(key, R | H)])
    assert r.status == wire.STATUS_SUCCESS and lease_state(r) == (key, R | H)
    # a replay asking for less gets the open and its lease as it is
    again = c.create(f, oplock=LEASE, contexts=[dh2q(guid), lease(key, R)], flags=wire.FLAGS_REPLAY)
    assert again.status == wire.STATUS_SUCCESS and again.file_id == r.file_id
    assert oplock_of(again) == LEASE and lease_state(again) == (key, R | H)
    assert b"DH2Q" in contexts_of(again)
    # naming another lease: refused
    other_key = c.create(f, oplock=LEASE, contexts=[dh2q(guid), lease(os.urandom(16), R | H)],
                         flags=wire.FLAGS_REPLAY)
    assert other_key.status == STATUS_ACCESS_DENIED
    # an open with an oplock replayed with a lease: refused
    guid2 = os.urandom(16)
    b = c.create(name(), oplock=BATCH, contexts=[dh2q(guid2)])
    assert b.status == wire.STATUS_SUCCESS
    assert c.create(name(), oplock=LEASE, contexts=[dh2q(guid2), lease(key, R)],
                    flags=wire.FLAGS_REPLAY).status == STATUS_ACCESS_DENIED


def test_a_replay_from_another_client_gets_nothing_of_this_one(port):
    """The same user and CreateGuid, another ClientGuid: a new CREATE, not the open."""
    c = Conn(port)
    guid, f = os.urandom(16), name()
    r = c.create(f, contexts=[dh2q(guid)], access=0x120089)
    assert r.status == wire.STATUS_SUCCESS
    thief = Conn(port)
    stolen = thief.create(f, contexts=[dh2q(guid)], access=0x120089, flags=wire.FLAGS_REPLAY)
    assert stolen.status == wire.STATUS_SUCCESS and stolen.file_id != r.file_id
    assert thief.tree.read(r.file_id, 1).status == wire.STATUS_FILE_CLOSED


def bind(c2: RawClient, s1: Session) -> Session:
    """Binds c2 to the session s1 (MS-SMB2 3.2.5.3.2): the channel's Session on c2."""
    channel, r = bind_channel(c2, s1, USER, PASSWORD)
    assert r.status == wire.STATUS_SUCCESS, r
    return channel


def held_create(conn: Conn, f: str, guid: bytes, **kw):
    """A CREATE with DH2Q sent on `conn`; its first answer (STATUS_PENDING where it is held)."""
    msg = conn.tree.message(wire.CREATE, create_body(f, READ_WRITE, wire.FILE_OPEN_IF, 0,
                                                     contexts=[dh2q(guid)], **kw))
    conn.raw.send([msg])
    return conn.raw.response_to(wire.Header.parse(msg).message_id)


def test_a_held_create_outlives_its_lost_channel(port):
    """A CREATE held for an oplock break whose channel is lost while its session goes on
    through another: a replay there is told it is still under way, and once the break is
    answered the replay gets the open it made (MS-SMB2 3.3.5.9.10, as smbd)."""
    f, guid, client_guid = name(), os.urandom(16), os.urandom(16)
    holder = Conn(port)
    h = holder.create(f, oplock=BATCH, disposition=wire.FILE_CREATE)
    assert h.status == wire.STATUS_SUCCESS and oplock_of(h) == BATCH
    first = Conn(port, client_guid=client_guid)
    second = RawClient(port)
    assert second.negotiate((wire.SMB311,), client_guid=client_guid).status == wire.STATUS_SUCCESS
    channel = bind(second, first.session)
    tree2 = type(first.tree)(second, channel, first.tree.id)
    assert held_create(first, f, guid, oplock=BATCH).status == wire.STATUS_PENDING
    first.raw.close()
    replay = dict(oplock=BATCH, contexts=[dh2q(guid)], flags=wire.FLAGS_REPLAY, tree=tree2)
    assert first.create(f, **replay).status == wire.STATUS_FILE_NOT_AVAILABLE
    time.sleep(0.3)         # (the lost connection is surely taken down now)
    assert first.create(f, **replay).status == wire.STATUS_FILE_NOT_AVAILABLE
    assert holder.tree.close(h.file_id).status == wire.STATUS_SUCCESS
    got = first.create(f, **replay)
    assert got.status == wire.STATUS_SUCCESS, got
    assert action_of(got) == wire.FILE_OPENED and oplock_of(got) == BATCH
    assert first.create(f, contexts=[dh2q(guid)], tree=tree2).status == STATUS_DUPLICATE_OBJECTID
    assert tree2.write(got.file_id, b"made while nobody listened").status == wire.STATUS_SUCCESS


def test_a_held_create_ends_with_its_client_s_last_channel(port):
    """With no channel left the held CREATE is cancelled: nothing is opened behind the
    client's back, and its CreateGuid names nothing."""
    f, guid, client_guid = name(), os.urandom(16), os.urandom(16)
    holder = Conn(port)
    h = holder.create(f, oplock=BATCH, disposition=wire.FILE_CREATE)
    first = Conn(port, client_guid=client_guid)
    assert held_create(first, f, guid, oplock=BATCH, share_access=0).status == wire.STATUS_PENDING
    first.raw.close()
    time.sleep(0.3)
    assert holder.tree.close(h.file_id).status == wire.STATUS_SUCCESS
    # no open of the lost CREATE holds the file (share none would refuse this one)
    alone = holder.create(f, share_access=0)
    assert alone.status == wire.STATUS_SUCCESS, alone
    holder.tree.close(alone.file_id)
    later = Conn(port, client_guid=client_guid)
    again = later.create(f, oplock=BATCH, contexts=[dh2q(guid)], flags=wire.FLAGS_REPLAY)
    assert again.status == wire.STATUS_SUCCESS and action_of(again) == wire.FILE_OPENED
