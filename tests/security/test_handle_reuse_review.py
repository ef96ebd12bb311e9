"""Reusing handles and sessions: durable and resilient reconnects, FileIds and SessionIds taken
to another tree, session or connection, tried by real Unix accounts (ALICE, BOB) and an
anonymous logon against a server started as root, with the raw client (raw.py).

What a reconnect (DHnC, DH2C: MS-SMB2 3.3.5.9.7, 3.3.5.9.12) must check, and what is tried here:
the user (not another user, not a guest or anonymous logon, not the same user while the open
is still attached elsewhere), the share (not another share, even of the same directory), the
CreateGuid of a DH2C; and, as Samba reopens the file as the user, the file's permissions as
they are when the open is reclaimed: an open is never handed back with rights its user no
longer has on the file, and never with more than it was granted.

(tests/security/test_session_review.py tries the same as another user naming ALICE's
ClientGuid, and tests/server/test_sessions_multichannel.py each refusal of a binding.)"""
from __future__ import annotations

import os
import subprocess
import sys
import shutil
import struct
import tempfile
import time
from pathlib import Path

import pytest
from logon import forged_logon, ANONYMOUS, V1_FLAGS
from raw import RawClient
from servers import free_port, spawn, spawn_for_accounts, stop, unix_accounts
from smbcore import create_body, read_body, tree_connect_body, write_body

from smbring.smb import acl, wire

if os.geteuid() != 0 or not shutil.which("useradd"):
    pytest.skip("acting as Unix accounts needs root (and useradd)", allow_module_level=True)

PASSWORD = "Reuse-pw1"
SUFFIX = f"{os.getpid() % 100000}"
ALICE, BOB = f"shra{SUFFIX}", f"shrb{SUFFIX}"
READ_WRITE = 0x0012019F
BATCH = 0x09


@pytest.fixture(scope="module")
def accounts():
    yield from unix_accounts(ALICE, BOB)


@pytest.fixture(scope="module")
def server(accounts, tmp_path_factory):
    """[share] and [twin] (the same directory, both with durable handles), [pub] (the same
    directory, guest ok): the directory is 1777."""
    tmp = tmp_path_factory.mktemp("reuse")
    top = Path(tempfile.mkdtemp(prefix="smbring-reuse-", dir="/tmp"))
    top.chmod(0o755)
    share = top / "share"
    share.mkdir()
    share.chmod(0o1777)
    more = (f"[twin]\npath = {share}\nread only = no\ndurable handles = yes\n"
            f"[pub]\npath = {share}\nread only = no\nguest ok = yes\ndurable handles = yes\n")
    proc, port, log = spawn_for_accounts(tmp, share, (ALICE, BOB), PASSWORD, more=more,
                                         share_options="durable handles = yes\n")
    yield {"port": port, "share": share, "proc": proc, "log": log, "accounts": accounts}
    stop(proc)
    shutil.rmtree(top, ignore_errors=True)


class Conn:
    """One connection, a session of `user` (None: anonymous), a tree of `share`."""

    def __init__(self, server, user: str | None, share: str = "share", guid: bytes | None = None):
        self.raw = RawClient(server["port"])
        self.guid = guid or os.urandom(16)
        assert self.raw.negotiate((wire.SMB311,), client_guid=self.guid).status == wire.STATUS_SUCCESS
        if user is None:
            self.session = forged_logon(self.raw, "", lambda _challenge: (b"", b""), flags=V1_FLAGS | ANONYMOUS)
            assert self.session.status == wire.STATUS_SUCCESS, self.session
        else:
            self.session = self.raw.logon(user, PASSWORD)
        self.tree = self.raw.tree(self.session, share)

    def create(self, name: str, access: int, *, contexts=(), oplock: int = 0):
        return self.tree.request(wire.CREATE, create_body(name, access, wire.FILE_OPEN, 0, contexts=contexts,
                                                          oplock=oplock))

    def close(self) -> None:
        self.raw.close()


def dh2q(create_guid: bytes) -> tuple[bytes, bytes]:
    return b"DH2Q", struct.pack("<II8s16s", 0, 0, b"", create_guid)


def dh2c(fid: bytes, create_guid: bytes) -> tuple[bytes, bytes]:
    return b"DH2C", fid + create_guid + b"\0" * 4


def dhnc(fid: bytes) -> tuple[bytes, bytes]:
    return b"DHnC", fid


def durable_open(conn: Conn, name: str, access: int = READ_WRITE) -> tuple[bytes, bytes]:
    """A durable (DH2Q) batch-oplock open of an existing file: (FileId, CreateGuid)."""
    create_guid = os.urandom(16)
    r = conn.create(name, access, contexts=[dh2q(create_guid)], oplock=BATCH)
    assert r.status == wire.STATUS_SUCCESS, r
    assert r.body[2] == BATCH, "no batch oplock: not durable"
    return r.file_id, create_guid


def reconnect(conn: Conn, context, wait: float = 3.0):
    """A DHnC/DH2C, retried briefly while the server may still be taking a lost connection down."""
    deadline = time.monotonic() + wait
    while True:
        r = conn.create("ignored", 0, contexts=[context])
        while r.status == wire.STATUS_PENDING:      # held while the open is still attached elsewhere
            r = conn.tree.client.response_to(r.header.message_id)
        if r.status != wire.STATUS_OBJECT_NAME_NOT_FOUND or time.monotonic() > deadline:
            return r
        time.sleep(0.1)


def alices_file(server, name: str, mode: int = 0o644) -> Path:
    path = server["share"] / name
    path.write_text(f"{name} of alice")
    os.chown(path, *server["accounts"][ALICE])
    path.chmod(mode)
    return path


def lost(conn: Conn) -> None:
    """The connection drops: its durable opens wait detached."""
    conn.close()
    time.sleep(0.3)


# -- the file's permissions when the open is reclaimed -----------------------------------------

@pytest.mark.parametrize("revoke", ["chmod", "chown", "chown-read"])
def test_a_reclaimed_open_does_not_keep_rights_taken_from_its_user(server, revoke):
    """ALICE's durable open for writing waits detached; meanwhile her file is made read-only
    (chmod 0444) or given to root (0600): she cannot open it for writing any more, so the
    reconnect must not give her back a handle that writes (Samba opens the file anew as the
    user, and the kernel refuses). With `chown-read` the open only reads, and a file she can
    no longer read is not handed back either. On the code before, the chmod case handed the
    open back writing, and the chown cases attached the open to her session (answering
    STATUS_ACCESS_DENIED all the same), so that it could be reclaimed no more."""
    name = f"revoked-{revoke}.txt"
    path = alices_file(server, name)
    access = wire.GENERIC_READ if revoke == "chown-read" else READ_WRITE
    alice = Conn(server, ALICE)
    fid, create_guid = durable_open(alice, name, access)
    lost(alice)
    if revoke == "chmod":
        path.chmod(0o444)
    else:
        os.chown(path, 0, 0)
        path.chmod(0o600)
    back = Conn(server, ALICE)
    try:
        for context in (dh2c(fid, create_guid), dhnc(fid)):
            r = reconnect(back, context)
            assert r.status == wire.STATUS_ACCESS_DENIED, (context[0], r)
        assert path.read_text() == f"{name} of alice"
        # the refusal left the open waiting, detached: her rights back, she reclaims it
        os.chown(path, *server["accounts"][ALICE])
        path.chmod(0o644)
        r = reconnect(back, dh2c(fid, create_guid))
        assert r.status == wire.STATUS_SUCCESS, r
        assert back.tree.read(r.file_id, 64).body[16:].startswith(name.encode())
    finally:
        back.close()


def test_the_open_that_made_its_file_read_only_is_reclaimed_writing(server):
    """ALICE's durable open makes its file with the READONLY attribute (r--r--r--: smbring
    clears the write bits for it) and writes; her connection drops, and her reconnect gets the
    handle back writing, as on Windows and smbd (which keep READONLY in the DOS attributes and
    leave the mode alone): the attribute was set through this very handle, no permission was
    taken from her (smbtorture's durable-open.read-only). Before, her first write failed
    (STATUS_INVALID_HANDLE: the handle held a read-only descriptor) and the reconnect was
    refused (STATUS_ACCESS_DENIED); an administrator's chmod stores no READONLY attribute and
    is still refused (the test above)."""
    create_guid = os.urandom(16)
    alice = Conn(server, ALICE)
    r = alice.tree.request(wire.CREATE, create_body("made-read-only.txt", READ_WRITE, wire.FILE_CREATE, 0,
                                                    contexts=[dh2q(create_guid)], oplock=BATCH,
                                                    attributes=wire.ATTR_READONLY))
    assert r.status == wire.STATUS_SUCCESS and r.body[2] == BATCH, r
    fid = r.file_id
    assert alice.tree.write(fid, b"first").status == wire.STATUS_SUCCESS
    assert (server["share"] / "made-read-only.txt").stat().st_mode & 0o777 == 0o444
    lost(alice)
    back = Conn(server, ALICE)
    try:
        r = reconnect(back, dh2c(fid, create_guid))
        assert r.status == wire.STATUS_SUCCESS, r
        assert back.tree.write(r.file_id, b"-second", 5).status == wire.STATUS_SUCCESS
        assert back.tree.close(r.file_id).status == wire.STATUS_SUCCESS
        assert (server["share"] / "made-read-only.txt").read_bytes() == b"first-second"
    finally:
        back.close()


def test_a_reclaimed_open_has_the_access_it_was_granted_no_more(server):
    """The file's permissions unchanged: the write open comes back writing, the read open
    comes back reading only (a WRITE through it is refused)."""
    alices_file(server, "kept-rw.txt", 0o666)
    alices_file(server, "kept-ro.txt", 0o666)
    alice = Conn(server, ALICE)
    rw, rw_guid = durable_open(alice, "kept-rw.txt")
    ro, ro_guid = durable_open(alice, "kept-ro.txt", wire.GENERIC_READ)
    lost(alice)
    back = Conn(server, ALICE)
    try:
        r = reconnect(back, dh2c(rw, rw_guid))
        assert r.status == wire.STATUS_SUCCESS, r
        assert back.tree.write(r.file_id, b"again").status == wire.STATUS_SUCCESS
        r = reconnect(back, dh2c(ro, ro_guid))
        assert r.status == wire.STATUS_SUCCESS, r
        assert back.tree.read(r.file_id, 4).status == wire.STATUS_SUCCESS
        assert back.tree.write(r.file_id, b"more").status == wire.STATUS_ACCESS_DENIED
    finally:
        back.close()
    assert (server["share"] / "kept-ro.txt").read_text() == "kept-ro.txt of alice"


def test_a_stored_descriptor_that_now_denies_the_user_is_honoured(server):
    """While ALICE's open waits detached, a descriptor denying her writes is stored on the file
    (by root, locally: any SMB open that could store it would close the detached open
    first): the reconnect is refused as a new open would be."""
    path = alices_file(server, "sd-revoked.txt", 0o666)
    alice = Conn(server, ALICE)
    fid, create_guid = durable_open(alice, "sd-revoked.txt")
    lost(alice)
    deny = acl.Descriptor(control=acl.SE_SELF_RELATIVE | acl.SE_DACL_PRESENT, owner=acl.sid(22, 1, 0),
                          group=acl.sid(22, 2, 0), dacl=[
                              acl.Ace(acl.DENIED, 0, wire.FILE_WRITE_DATA | wire.FILE_APPEND_DATA, acl.EVERYONE),
                              acl.Ace(acl.ALLOWED, 0, acl.FILE_ALL_ACCESS, acl.EVERYONE)])
    os.setxattr(path, "user.smbring.sd", deny.pack())
    back = Conn(server, ALICE)
    try:
        assert reconnect(back, dh2c(fid, create_guid)).status == wire.STATUS_ACCESS_DENIED
    finally:
        back.close()


# -- who and where may reclaim -----------------------------------------------------------------

def test_reclaims_by_anyone_else_or_elsewhere_are_refused(server):
    """ALICE's detached open (made through [pub], a guest ok share, so that an anonymous
    logon reaches the same tree): BOB (his own ClientGuid and hers), an anonymous logon, ALICE
    herself with a wrong CreateGuid or through [share] and [twin] (other shares of the same
    directory), and ALICE while it is attached on her first connection, all get
    STATUS_OBJECT_NAME_NOT_FOUND; then ALICE through [pub] gets it back."""
    alices_file(server, "reclaim.txt", 0o666)
    alice = Conn(server, ALICE, "pub")
    fid, create_guid = durable_open(alice, "reclaim.txt")
    try:
        again = Conn(server, ALICE, "pub")      # while attached: not hers to take from herself
        for context in (dh2c(fid, create_guid), dhnc(fid)):
            assert reconnect(again, context, wait=0).status == wire.STATUS_OBJECT_NAME_NOT_FOUND
        again.close()
    finally:
        lost(alice)
    tries = [(Conn(server, BOB, "pub"), dh2c(fid, create_guid)),
             (Conn(server, BOB, "pub", alice.guid), dhnc(fid)),
             (Conn(server, None, "pub"), dh2c(fid, create_guid)),
             (Conn(server, None, "pub", alice.guid), dhnc(fid)),
             (Conn(server, ALICE, "pub"), dh2c(fid, os.urandom(16))),
             (Conn(server, ALICE, "share", alice.guid), dh2c(fid, create_guid)),
             (Conn(server, ALICE, "twin", alice.guid), dhnc(fid))]
    try:
        for conn, context in tries:
            assert reconnect(conn, context, wait=0).status == wire.STATUS_OBJECT_NAME_NOT_FOUND, context[0]
    finally:
        for conn, _context in tries:
            conn.close()
    back = Conn(server, ALICE, "pub", alice.guid)
    try:
        r = reconnect(back, dh2c(fid, create_guid))
        assert r.status == wire.STATUS_SUCCESS, r
        assert back.tree.read(r.file_id, 64).body[16:].startswith(b"reclaim.txt of alice")
    finally:
        back.close()


def test_a_guest_gets_no_durable_handle_to_reclaim(server):
    """An anonymous logon asking for a durable open is granted none (a guest cannot be told
    from another guest), so another anonymous logon has nothing to reclaim."""
    path = server["share"] / "anon.txt"
    path.write_text("anon")
    path.chmod(0o666)
    anon = Conn(server, None, "pub")
    r = anon.create("anon.txt", READ_WRITE, contexts=[dh2q(os.urandom(16))], oplock=BATCH)
    assert r.status == wire.STATUS_SUCCESS, r
    assert b"DH2Q" not in r.raw[64 + 88:], "a guest's open was made durable"
    fid = r.file_id
    lost(anon)
    other = Conn(server, None, "pub")
    try:
        assert reconnect(other, dhnc(fid), wait=0).status == wire.STATUS_OBJECT_NAME_NOT_FOUND
    finally:
        other.close()


# -- FileIds, TreeIds and SessionIds used where they do not belong --------------------------------

def test_a_file_id_reaches_its_own_tree_only(server):
    """ALICE's FileId through her session's other tree ([twin]: the same directory), and
    through her tree once disconnected: STATUS_FILE_CLOSED / STATUS_NETWORK_NAME_DELETED."""
    alices_file(server, "trees.txt", 0o666)
    alice = Conn(server, ALICE)
    try:
        fid = alice.tree.open("trees.txt", READ_WRITE)
        twin = alice.raw.tree(alice.session, "twin")
        assert twin.read(fid, 4).status == wire.STATUS_FILE_CLOSED
        assert twin.write(fid, b"x").status == wire.STATUS_FILE_CLOSED
        assert twin.close(fid).status == wire.STATUS_FILE_CLOSED
        assert twin.query_info(fid, wire.INFO_FILE, 5).status == wire.STATUS_FILE_CLOSED
        assert alice.tree.read(fid, 4).status == wire.STATUS_SUCCESS
        assert alice.tree.disconnect().status == wire.STATUS_SUCCESS
        assert alice.tree.read(fid, 4).status == wire.STATUS_NETWORK_NAME_DELETED
        assert twin.read(fid, 4).status == wire.STATUS_FILE_CLOSED
        assert alice.tree.create("trees.txt", wire.GENERIC_READ).status == wire.STATUS_NETWORK_NAME_DELETED
    finally:
        alice.close()
    assert (server["share"] / "trees.txt").read_text() == "trees.txt of alice"


@pytest.mark.parametrize("same_client_guid", [False, True])
def test_another_connections_session_id_reaches_nothing(server, same_client_guid):
    """ALICE's SessionId and TreeId on BOB's connection (unsigned, and signed with his own
    session's key) and on an anonymous connection: READ, WRITE, CREATE, TREE_CONNECT, CLOSE
    all STATUS_USER_SESSION_DELETED; her open goes on."""
    alices_file(server, "sessions.txt", 0o600)
    alice = Conn(server, ALICE)
    fid = alice.tree.open("sessions.txt", READ_WRITE)
    guid = alice.guid if same_client_guid else None
    others = [Conn(server, BOB, guid=guid), Conn(server, None, "pub", guid=guid)]
    try:
        for other in others:
            raw, her = other.raw, {"session": alice.session.id, "tree_id": alice.tree.id}
            for sign in ((False, True) if other.session.signing_key else (False,)):
                knobs = dict(her, sign=sign, signing_key=other.session.signing_key) if sign else her
                statuses = [raw.request(wire.READ, read_body(fid, 4), payload=4, **knobs).status,
                            raw.request(wire.WRITE, write_body(fid, b"x"), **knobs).status,
                            raw.request(wire.CLOSE, struct.pack("<HHI", 24, 0, 0) + fid, **knobs).status]
                assert statuses == [wire.STATUS_USER_SESSION_DELETED] * 3, (other.session.id, sign, statuses)
            r = raw.request(wire.TREE_CONNECT, tree_connect_body("\\\\127.0.0.1\\share"), session=alice.session.id)
            assert r.status == wire.STATUS_USER_SESSION_DELETED, r
        assert alice.tree.read(fid, 64).body[16:].startswith(b"sessions.txt of alice")
    finally:
        for other in others:
            other.close()
        alice.close()


# -- with several worker processes ------------------------------------------------------------

@pytest.fixture(scope="module")
def workers(accounts, tmp_path_factory):
    """The same [share] served by `--workers 2` (durable state lives in the worker serving the
    client's ClientGuid)."""
    tmp = tmp_path_factory.mktemp("reuse-workers")
    top = Path(tempfile.mkdtemp(prefix="smbring-reuse-w-", dir="/tmp"))
    top.chmod(0o755)
    share = top / "share"
    share.mkdir()
    share.chmod(0o1777)
    port = free_port()
    conf = tmp / "smb.conf"
    conf.write_text(f"[global]\nlisten = 127.0.0.1:{port}\n[share]\npath = {share}\nread only = no\n"
                    "durable handles = yes\n")
    env = dict(os.environ, SMBRING_PASSDB=str(tmp / "passdb"))
    for user in (ALICE, BOB):
        subprocess.run([sys.executable, "-m", "smbring.cli", "user", "add", user, "--password-stdin"],
                       input=PASSWORD + "\n", text=True, check=True, env=env, capture_output=True)
    proc, port, log = spawn(tmp, "--config", str(conf), "--workers", "2", port=port, accounts=True)
    yield {"port": port, "share": share, "proc": proc, "log": log, "accounts": accounts}
    stop(proc)
    shutil.rmtree(top, ignore_errors=True)


def test_with_workers_a_reclaim_is_checked_as_with_one(workers):
    """BOB naming ALICE's ClientGuid lands on the worker holding her detached open, and is
    refused there (DHnC and DH2C); her own reclaim of a file made read-only meanwhile is
    STATUS_ACCESS_DENIED, and succeeds once her rights are back."""
    path = alices_file(workers, "workers.txt", 0o644)
    alice = Conn(workers, ALICE)
    fid, create_guid = durable_open(alice, "workers.txt")
    lost(alice)
    bob = Conn(workers, BOB, guid=alice.guid)
    try:
        for context in (dhnc(fid), dh2c(fid, create_guid)):
            assert reconnect(bob, context, wait=0).status == wire.STATUS_OBJECT_NAME_NOT_FOUND
    finally:
        bob.close()
    path.chmod(0o444)
    back = Conn(workers, ALICE, guid=alice.guid)
    try:
        assert reconnect(back, dh2c(fid, create_guid)).status == wire.STATUS_ACCESS_DENIED
        path.chmod(0o644)
        r = reconnect(back, dh2c(fid, create_guid))
        assert r.status == wire.STATUS_SUCCESS, r
        assert back.tree.write(r.file_id, b"W").status == wire.STATUS_SUCCESS
    finally:
        back.close()


def test_server_log_is_clean(server):
    text = server["log"].read_text()
    assert "Traceback" not in text, text[-3000:]
