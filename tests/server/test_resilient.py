"""Resilient handles (FSCTL_LMR_REQUEST_RESILIENCY, MS-SMB2 3.3.5.15.9) against a real server:
an open made resilient survives the loss of its connection whatever oplock it holds, and is
reclaimed with a DHnC on a new connection by the same user only; it is closed when its
timeout passes; its lock sequences are checked. The request's own checks: SMB 2.0.2, a short
input, a timeout above the maximum, a share without durable handles, a guest, several worker
processes.

The requests are raw (tests/security/raw.py): the IOCTL and the create contexts byte by byte."""
from __future__ import annotations

import os
import struct
import time

from servers import PASSWORD, USER
from smbconf_server import OTHER, OTHER_PASSWORD, smbconf  # noqa: F401  (the fixture)
from smbcore import create_body
from smbcore import create_contexts_of as contexts_of

from smbring.smb import wire

FSCTL_LMR_REQUEST_RESILIENCY = 0x001401D4
NONE_OPLOCK, BATCH = 0x00, 0x09
READ_WRITE = 0x0012019F
DELETE_ON_CLOSE = 0x00001000
EXCLUSIVE_NOW = wire.LOCK_EXCLUSIVE | wire.LOCK_FAIL_IMMEDIATELY


def start(smbconf, global_options: str = "", shares: dict | None = None, *serve_args: str):
    return smbconf(global_options, shares or {"share": "read only = no"}, *serve_args,
                   users=((OTHER, OTHER_PASSWORD),))


class Conn:
    """One connection with one session and a tree of `share`."""

    def __init__(self, server, user: str = USER, password: str = PASSWORD, share: str = "share",
                 dialect: int = wire.SMB311, guid: bytes | None = None):
        self.raw = server.raw()
        assert self.raw.negotiate((dialect,), client_guid=guid).status == wire.STATUS_SUCCESS
        self.session = self.raw.logon(user, password)
        self.tree = self.raw.tree(self.session, share)

    def open(self, name: str, *, oplock: int = NONE_OPLOCK, contexts=(), options: int = 0,
             access: int = READ_WRITE) -> bytes:
        r = self.tree.request(wire.CREATE, create_body(name, access, wire.FILE_OPEN_IF, options,
                                                       contexts=list(contexts), oplock=oplock))
        assert r.status == wire.STATUS_SUCCESS, r
        return r.file_id

    def resiliency(self, fid: bytes, timeout_ms: int = 0, data: bytes | None = None) -> int:
        data = struct.pack("<II", timeout_ms, 0) if data is None else data
        r = self.tree.ioctl(fid, FSCTL_LMR_REQUEST_RESILIENCY, data, max_output=0)
        if r.status == wire.STATUS_SUCCESS:     # no input nor output echoed
            assert struct.unpack_from("<I", r.raw, 64 + 4)[0] == FSCTL_LMR_REQUEST_RESILIENCY
            assert struct.unpack_from("<I", r.raw, 64 + 28)[0] == 0     # InputCount
            assert struct.unpack_from("<I", r.raw, 64 + 36)[0] == 0     # OutputCount
        return r.status

    def lock(self, fid: bytes, offset: int, length: int, flags: int, *, index: int = 0,
             number: int = 0) -> int:
        body = struct.pack("<HHI16sQQII", 48, 1, (index << 4) | number, fid, offset, length, flags, 0)
        return self.tree.request(wire.LOCK, body).status

    def kill(self) -> None:
        """The connection is lost (no LOGOFF, no CLOSE)."""
        self.raw.close()


def reconnect(conn: Conn, fid: bytes, wait: float = 2.0, context: bytes = b"DHnC"):
    """A DHnC CREATE (or `context`), retried briefly while the server may still be taking the
    lost connection down."""
    deadline = time.monotonic() + wait
    data = fid if context == b"DHnC" else fid + b"\0" * 20
    while True:
        r = conn.tree.request(wire.CREATE, create_body("__ignored__", READ_WRITE, wire.FILE_OPEN, 0,
                                                       contexts=[(context, data)], oplock=NONE_OPLOCK))
        if r.status != wire.STATUS_OBJECT_NAME_NOT_FOUND or time.monotonic() > deadline:
            return r
        time.sleep(0.1)


def test_the_request_and_its_checks(smbconf):
    server = start(smbconf)
    c = Conn(server)
    fid = c.open("r")
    assert c.resiliency(fid, data=b"") == wire.STATUS_INVALID_PARAMETER
    assert c.resiliency(fid, data=b"\0" * 7) == wire.STATUS_INVALID_PARAMETER
    assert c.resiliency(fid, 300_001) == wire.STATUS_INVALID_PARAMETER
    assert c.resiliency(fid, 0xFFFFFFFF) == wire.STATUS_INVALID_PARAMETER
    assert c.resiliency(fid, 300_000) == wire.STATUS_SUCCESS
    assert c.resiliency(fid, 0) == wire.STATUS_SUCCESS           # again: the implementation's default
    assert c.resiliency(fid, data=struct.pack("<III", 1000, 7, 9)) == wire.STATUS_SUCCESS  # (longer: fine)
    # a closed or unknown handle
    assert c.resiliency(os.urandom(16)) == wire.STATUS_FILE_CLOSED
    # a directory is not made resilient
    d = c.open("dir", options=wire.FILE_DIRECTORY_FILE)
    assert c.resiliency(d) == wire.STATUS_NOT_SUPPORTED
    assert c.raw.echo().status == wire.STATUS_SUCCESS


def test_smb_2_0_2_has_no_such_request(smbconf):
    server = start(smbconf)
    c = Conn(server, dialect=wire.SMB202)
    assert c.resiliency(c.open("old")) == wire.STATUS_INVALID_DEVICE_REQUEST


def test_refused_without_durable_handles(smbconf):
    server = start(smbconf, shares={"share": "read only = no\ndurable handles = no"})
    c = Conn(server)
    assert c.resiliency(c.open("no")) == wire.STATUS_NOT_SUPPORTED


def test_kept_with_worker_processes(smbconf):
    """With worker processes a client's connections are all served by one worker: the
    client reconnecting with its ClientGuid gets its resilient open back, whichever worker
    accepted the new connection."""
    server = start(smbconf, "", None, "--workers", "2")
    guid = os.urandom(16)
    c = Conn(server, guid=guid)
    fid = c.open("w")
    assert c.resiliency(fid, 30_000) == wire.STATUS_SUCCESS
    assert c.tree.write(fid, b"kept").status == wire.STATUS_SUCCESS
    c.kill()
    for _ in range(4):      # new connections, spread over the workers by the kernel
        c2 = Conn(server, guid=guid)
        r = reconnect(c2, fid)
        assert r.status == wire.STATUS_SUCCESS, r
        assert c2.tree.close(r.file_id).status == wire.STATUS_SUCCESS
        fid = c2.open("w")
        assert c2.resiliency(fid, 30_000) == wire.STATUS_SUCCESS
        c2.kill()


def test_a_guest_gets_none(smbconf):
    server = smbconf("map to guest = bad user", {"share": "read only = no\nguest ok = yes"})
    c = Conn(server, user="nobody-known", password="x")
    assert c.session.flags & wire.SESSION_FLAG_IS_GUEST
    assert c.resiliency(c.open("g")) == wire.STATUS_NOT_SUPPORTED


def test_reconnect_after_the_connection_is_lost(smbconf):
    """Without any oplock: the open waits detached and its user gets it back, with its data
    and its lock; another user, another share or a DH2C do not."""
    server = start(smbconf, shares={"share": "read only = no", "other": "read only = no"})
    c = Conn(server)
    fid = c.open("data.bin")
    assert c.resiliency(fid, 30_000) == wire.STATUS_SUCCESS
    assert c.tree.write(fid, b"kept across connections").status == wire.STATUS_SUCCESS
    assert c.lock(fid, 0, 4, EXCLUSIVE_NOW) == wire.STATUS_SUCCESS
    c.kill()
    time.sleep(0.5)
    thief = Conn(server, OTHER, OTHER_PASSWORD)
    assert reconnect(thief, fid, wait=0).status == wire.STATUS_OBJECT_NAME_NOT_FOUND
    assert reconnect(Conn(server, share="other"), fid, wait=0).status == wire.STATUS_OBJECT_NAME_NOT_FOUND
    c2 = Conn(server)
    assert reconnect(c2, fid, wait=0, context=b"DH2C").status == wire.STATUS_OBJECT_NAME_NOT_FOUND
    r = reconnect(c2, fid)
    assert r.status == wire.STATUS_SUCCESS, r
    assert not contexts_of(r)
    new = r.file_id
    assert new[:8] == fid[:8]
    rd = c2.tree.read(new, 23)
    assert rd.status == wire.STATUS_SUCCESS and rd.raw[80:103] == b"kept across connections"
    assert c2.lock(new, 0, 4, wire.LOCK_UNLOCK) == wire.STATUS_SUCCESS   # the lock went with it
    assert c2.tree.close(new).status == wire.STATUS_SUCCESS
    assert (server.root / "share" / "data.bin").read_bytes() == b"kept across connections"


def test_an_open_not_made_resilient_is_closed(smbconf):
    server = start(smbconf)
    c = Conn(server)
    fid = c.open("plain")
    c.kill()
    time.sleep(0.5)
    assert reconnect(Conn(server), fid, wait=0).status == wire.STATUS_OBJECT_NAME_NOT_FOUND


def test_a_durable_open_made_resilient_keeps_the_resilient_timeout(smbconf):
    """A batch-oplock DH2Q open made resilient is reclaimed by DHnC (not DH2C: no longer
    durable) and is closed when the resiliency timeout passes (1 s, not the durable 60 s)."""
    server = start(smbconf)
    c = Conn(server)
    guid = os.urandom(16)
    r = c.tree.request(wire.CREATE, create_body(
        "both", READ_WRITE | 0x10000, wire.FILE_OPEN_IF, DELETE_ON_CLOSE, oplock=BATCH,
        contexts=[(b"DH2Q", struct.pack("<II8s16s", 0, 0, b"", guid))]))
    assert r.status == wire.STATUS_SUCCESS and b"DH2Q" in contexts_of(r)
    assert c.resiliency(r.file_id, 1000) == wire.STATUS_SUCCESS
    c.kill()
    path = server.root / "share" / "both"
    deadline = time.monotonic() + 10
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not path.exists()        # closed (deleted on close) by the expiry
    assert reconnect(Conn(server), r.file_id, wait=0).status == wire.STATUS_OBJECT_NAME_NOT_FOUND


def test_expiry_closes_it(smbconf):
    server = start(smbconf)
    c = Conn(server)
    fid = c.open("brief", options=DELETE_ON_CLOSE, access=READ_WRITE | 0x10000)
    assert c.resiliency(fid, 1000) == wire.STATUS_SUCCESS
    c.kill()
    path = server.root / "share" / "brief"
    assert path.exists()
    deadline = time.monotonic() + 10
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not path.exists()
    assert reconnect(Conn(server), fid, wait=0).status == wire.STATUS_OBJECT_NAME_NOT_FOUND


def test_detached_resilient_handles_are_bounded(smbconf):
    server = start(smbconf, "max disconnected durable handles = 2")
    c = Conn(server)
    fids = [c.open(f"flood{i}") for i in range(4)]
    for fid in fids:
        assert c.resiliency(fid, 60_000) == wire.STATUS_SUCCESS
    c.kill()
    time.sleep(1.0)
    c2 = Conn(server)
    statuses = [reconnect(c2, fid, wait=0).status for fid in fids]
    assert statuses == [wire.STATUS_OBJECT_NAME_NOT_FOUND] * 2 + [wire.STATUS_SUCCESS] * 2


def test_lock_sequences_are_checked_on_a_resilient_open(smbconf):
    """SMB 2.1 (no multichannel): a plain open does not check lock sequences, a resilient one
    does (MS-SMB2 3.3.5.14: Open.IsResilient)."""
    server = start(smbconf)
    c = Conn(server, dialect=wire.SMB210)
    plain = c.open("plain")
    assert c.lock(plain, 0, 10, EXCLUSIVE_NOW, index=1, number=1) == wire.STATUS_SUCCESS
    assert c.lock(plain, 0, 10, EXCLUSIVE_NOW, index=1, number=1) == wire.STATUS_LOCK_NOT_GRANTED
    fid = c.open("resilient")
    assert c.resiliency(fid) == wire.STATUS_SUCCESS
    assert c.lock(fid, 0, 10, EXCLUSIVE_NOW, index=1, number=1) == wire.STATUS_SUCCESS
    assert c.lock(fid, 0, 10, EXCLUSIVE_NOW, index=1, number=1) == wire.STATUS_SUCCESS     # a replay
    assert c.lock(fid, 0, 10, EXCLUSIVE_NOW, index=1, number=2) == wire.STATUS_LOCK_NOT_GRANTED
    # and across a reconnect: the replay after it is still answered without effect
    c.kill()
    c2 = Conn(server, dialect=wire.SMB210)
    r = reconnect(c2, fid)
    assert r.status == wire.STATUS_SUCCESS, r
    new = r.file_id
    assert c2.lock(new, 20, 10, EXCLUSIVE_NOW, index=2, number=3) == wire.STATUS_SUCCESS
    assert c2.lock(new, 20, 10, EXCLUSIVE_NOW, index=2, number=3) == wire.STATUS_SUCCESS
