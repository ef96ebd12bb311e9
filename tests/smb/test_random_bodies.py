"""Random request bodies for every command against the connection state machine (sans-I/O):
each gets an NTSTATUS or ends the connection, nothing else escapes, no file leaves the share."""
import os
import random
import struct

from smbcore import carry_out, status

from smbring.server.users import PasswordLookup
from smbring.smb import wire
from smbring.smb.connection import Connection
from smbring.smb.state import Session, Share
from smbring.vfs.posix import PosixVFS


def message(conn, command, body, session_id=1, tree_id=0, flags=0, message_id=None):
    """A request with the next MessageId the connection's credit window expects."""
    hdr = wire.Header(command=command, session_id=session_id, tree_id=tree_id, flags=flags,
                      message_id=conn.credits.low if message_id is None else message_id, credits=1)
    return hdr.pack() + body


def connected(tmp_path):
    """A connection with a logged-on session (no NTLM: sans-I/O) and a tree on tmp_path/share."""
    share = tmp_path / "share"
    share.mkdir()
    conn = Connection({"s": Share("s", str(share))}, lookup=PasswordLookup(str(tmp_path / "none")),
                      open_fs=PosixVFS)
    conn.dialect = wire.SMB302
    conn.sessions[1] = Session(id=1, valid=True)
    tree = carry_out(conn.handle_frame(message(conn, wire.TREE_CONNECT, struct.pack("<HHHH", 9, 0, 72, 10) +
                                     wire.utf16("\\\\x\\s"))))
    assert status(tree[0]) == 0, "tree connect failed"
    return conn, struct.unpack_from("<I", tree[0], 36)[0], share


def test_random_bodies_for_every_command(tmp_path):
    conn, tid, share = connected(tmp_path)
    (share / "f").write_bytes(b"data")
    (tmp_path / "outside").write_bytes(b"secret")
    rnd = random.Random(1234)
    statuses = set()
    for i in range(3000):
        command = rnd.randrange(19)
        if command in (wire.NEGOTIATE, wire.SESSION_SETUP, wire.LOGOFF, wire.TREE_DISCONNECT):
            continue
        body = bytes(rnd.randrange(256) for _ in range(rnd.randrange(0, 120)))
        if rnd.random() < 0.5 and len(body) >= 2:
            body = struct.pack("<H", rnd.choice([9, 24, 33, 41, 48, 49, 57])) + body[2:]
        try:
            out = carry_out(conn.handle_frame(message(conn, command, body, tree_id=tid)))
        except ConnectionError:
            continue
        for desc in out:
            statuses.add(status(desc))
    assert statuses and 0xC00000E5 not in statuses  # no STATUS_INTERNAL_ERROR: no bug was hit
    assert (tmp_path / "outside").read_bytes() == b"secret"
    assert sorted(os.listdir(tmp_path)) == ["outside", "share"]
    conn.close_all()


def test_pending_requests_are_bounded_and_cancellable(tmp_path):
    """Blocking locks park requests on the connection: CANCEL answers them, and no client may
    park more than `max pending requests` (sans-I/O: frames in, answers out, no sockets)."""
    conn, tid, _share = connected(tmp_path)

    def create():
        name = wire.utf16("f")
        body = struct.pack("<HBBIQQIIIIIHHII", 57, 0, 0, 2, 0, 0, 0x001F01FF, 0, 7, wire.FILE_OPEN_IF,
                           0, 120, len(name), 0, 0) + name
        out = carry_out(conn.handle_frame(message(conn, wire.CREATE, body, tree_id=tid)))
        assert status(out[0]) == 0
        return bytes(out[0][64 + 64:64 + 80])

    def lock(fid, flags):
        body = struct.pack("<HHI", 48, 1, 0) + fid + struct.pack("<QQII", 0, 10, flags, 0)
        return carry_out(conn.handle_frame(message(conn, wire.LOCK, body, tree_id=tid)))

    a, b = create(), create()
    assert status(lock(a, wire.LOCK_EXCLUSIVE | wire.LOCK_FAIL_IMMEDIATELY)[0]) == 0
    mid = conn.credits.low
    waiting = lock(b, wire.LOCK_EXCLUSIVE)
    assert status(waiting[0]) == wire.STATUS_PENDING
    cancel = wire.Header(command=wire.CANCEL, session_id=1, tree_id=tid, message_id=mid)
    answers = carry_out(conn.handle_frame(cancel.pack() + struct.pack("<HH", 4, 0)))
    assert [status(d) for d in answers] == [wire.STATUS_CANCELLED]      # the late answer only
    for _ in range(conn.limits.max_pending_requests):
        assert status(lock(b, wire.LOCK_EXCLUSIVE)[0]) == wire.STATUS_PENDING
    assert status(lock(b, wire.LOCK_EXCLUSIVE)[0]) == wire.STATUS_INSUFFICIENT_RESOURCES
    conn.close_all()
    assert not conn.async_requests
