"""ServerState: what the connections of one server share (opens, delete on close, share
modes, byte-range locks, change watches), seen through SMB requests on two connections that
share one state, against real files (sans-I/O: frames in, answers out, no sockets)."""
import os
import struct

import pytest
from sansio_client import FILE_DIRECTORY_FILE, Client

from smbring.smb import wire
from smbring.smb.server_state import ServerState


@pytest.fixture
def share(tmp_path):
    d = tmp_path / "share"
    d.mkdir()
    return d


@pytest.fixture
def two(share):
    """Two connections of one server."""
    state = ServerState()
    a, b = Client(share, state), Client(share, state)
    yield a, b
    a.conn.close_all()
    b.conn.close_all()


@pytest.fixture
def pending(share, two):
    """A file open on both connections, marked for deletion through b's open."""
    a, b = two
    (share / "doomed.txt").write_bytes(b"x")
    keeper, deleter = a.open("doomed.txt"), b.open("doomed.txt")
    assert b.delete_on_close(deleter) == 0
    return a, b, keeper, deleter, share / "doomed.txt"


def test_delete_pending_is_seen_by_another_connection(pending):
    a, b, keeper, deleter, path = pending
    # a delete pending through b's open refuses new opens on a's connection too
    assert a.create("doomed.txt")[0] == wire.STATUS_DELETE_PENDING
    assert b.close(deleter) == 0
    assert path.exists()                # a still has it open
    assert a.close(keeper) == 0
    assert not path.exists()            # the last close, on the other connection


def test_delete_pending_withdrawn_by_its_open(pending):
    a, b, keeper, deleter, path = pending
    assert b.delete_on_close(deleter, False) == 0
    assert a.close(a.open("doomed.txt")) == 0
    assert b.close(deleter) == 0 and a.close(keeper) == 0
    assert path.exists()


def test_share_modes_across_connections(share, two):
    a, b = two
    (share / "f").write_bytes(b"x")
    fid = a.open("f", access=wire.GENERIC_READ, share=0)     # shares nothing
    assert b.create("f", access=wire.GENERIC_READ)[0] == wire.STATUS_SHARING_VIOLATION
    assert b.create("f", access=0x80)[0] == 0                 # attributes only: takes no part
    assert a.close(fid) == 0
    assert b.create("f", access=wire.GENERIC_READ)[0] == 0    # the open is gone from the table


def test_connections_of_different_servers_share_nothing(share):
    """Each ServerState is a server of its own: no table is global."""
    (share / "f").write_bytes(b"x")
    a, b = Client(share, None), Client(share, None)      # each gets its own state
    try:
        a.open("f", access=wire.GENERIC_READ, share=0)
        assert b.create("f", access=wire.GENERIC_READ)[0] == 0
    finally:
        a.conn.close_all()
        b.conn.close_all()


def test_rename_refused_while_a_file_below_is_open(share, two):
    a, b = two
    (share / "dir" / "sub").mkdir(parents=True)
    (share / "dir" / "sub" / "f").write_bytes(b"x")
    inside = a.open("dir\\sub\\f")
    d = b.open("dir", options=FILE_DIRECTORY_FILE)
    assert b.rename(d, "moved") == wire.STATUS_ACCESS_DENIED
    assert (share / "dir").is_dir()
    assert a.close(inside) == 0
    assert b.rename(d, "moved") == 0
    assert (share / "moved" / "sub" / "f").exists()


def test_rename_of_a_sibling_with_a_similar_name_is_allowed(share, two):
    """"dir2/f" is not below "dir": only paths under "dir/" count."""
    a, b = two
    (share / "dir").mkdir()
    (share / "dir2").mkdir()
    (share / "dir2" / "f").write_bytes(b"x")
    a.open("dir2\\f")
    d = b.open("dir", options=FILE_DIRECTORY_FILE)
    assert b.rename(d, "moved") == 0


def test_byte_range_locks_across_connections(share, two):
    a, b = two
    (share / "f").write_bytes(b"0123456789")
    fa, fb = a.open("f"), b.open("f")
    [(status, _)] = a.lock(fa, 0, 10, wire.LOCK_EXCLUSIVE | wire.LOCK_FAIL_IMMEDIATELY)
    assert status == 0
    assert b.read(fb, 0, 5) == wire.STATUS_FILE_LOCK_CONFLICT
    [(status, _)] = b.lock(fb, 0, 1, wire.LOCK_EXCLUSIVE)     # blocking: waits for a
    assert status == wire.STATUS_PENDING
    assert a.lock(fa, 0, 10, wire.LOCK_UNLOCK)[0][0] == 0
    assert [s for s, _ in b.outbox()] == [0]                   # granted on b's connection
    assert a.read(fa, 5, 5) == 0
    assert a.read(fa, 0, 1) == wire.STATUS_FILE_LOCK_CONFLICT


def test_closing_a_connection_releases_its_locks_for_the_other(share, two):
    a, b = two
    (share / "f").write_bytes(b"0123456789")
    fa, fb = a.open("f"), b.open("f")
    assert a.lock(fa, 0, 10, wire.LOCK_EXCLUSIVE | wire.LOCK_FAIL_IMMEDIATELY)[0][0] == 0
    assert b.lock(fb, 0, 1, wire.LOCK_EXCLUSIVE)[0][0] == wire.STATUS_PENDING
    a.conn.close_all()                                          # a's client went away
    assert [s for s, _ in b.outbox()] == [0]
    assert b.conn.locks_here() == 1 and a.conn.locks_here() == 0


def test_change_made_on_one_connection_is_reported_on_the_other(share, two):
    a, b = two
    (share / "watched").mkdir()
    d = b.open("watched", options=FILE_DIRECTORY_FILE)
    [(status, _)] = b.notify(d)
    assert status == wire.STATUS_PENDING
    a.open("watched\\new.txt", disposition=wire.FILE_CREATE)
    [(status, body)] = b.outbox()
    assert status == 0
    _size, offset, length = struct.unpack_from("<HHI", body)
    action, name_len = struct.unpack_from("<II", body, offset - 64 + 4)
    name = body[offset - 64 + 12:offset - 64 + 12 + name_len].decode("utf-16-le")
    assert (action, name) == (1, "new.txt")                     # FILE_ACTION_ADDED


def test_close_open_reports_locks_and_the_delete(share, two):
    """The narrow interface itself: a close says how many locks went and what to delete."""
    a, _b = two
    (share / "f").write_bytes(b"x")
    fid = a.open("f")
    assert a.lock(fid, 0, 1, wire.LOCK_SHARED | wire.LOCK_FAIL_IMMEDIATELY)[0][0] == 0
    o = a.conn.opens[fid]
    state = a.conn.state
    assert not state.is_delete_pending(o.key)
    state.set_delete_pending(o, True)
    assert state.is_delete_pending(o.key)
    closed = state.close_open(o)
    assert closed.locks_released == 1 and closed.delete is o
    assert not state.is_delete_pending(o.key) and not state.has_open_below(str(share))
    assert state.locks.count(o.key, id(o)) == 0 and state.share_modes.count(o.key) == 0
    a.conn.opens.pop(fid)
    os.close(o.fd)


def test_another_workers_rename_reaches_the_files_opens_in_every_share(tmp_path):
    """A file open through two shares, one's directory inside the other's, renamed through
    another worker (its word: `renamed_elsewhere`): the opens of both shares take the new
    name, each in its share's terms. Fails where only the opens of the first share found
    are renamed."""
    outer = tmp_path / "outer"
    (outer / "sub").mkdir(parents=True)
    (outer / "sub" / "f").write_bytes(b"x")
    state = ServerState()
    through_outer, through_inner = Client(outer, state), Client(outer / "sub", state)
    fids = through_outer.open("sub\\f"), through_inner.open("f")
    opens = [c.conn.client.opens[fid] for c, fid in zip((through_outer, through_inner), fids)]
    os.rename(outer / "sub" / "f", outer / "sub" / "g")
    state.renamed_elsewhere(opens[0].key, str(outer / "sub" / "f"), str(outer / "sub" / "g"))
    assert [o.parts for o in opens] == [["sub", "g"], ["g"]]
    assert [o.path() for o in opens] == [str(outer / "sub" / "g")] * 2
    for c in (through_outer, through_inner):
        c.conn.close_all()
