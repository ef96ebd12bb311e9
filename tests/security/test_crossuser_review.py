"""State that spans users and connections (leases and their breaks, durable handles, change
notify, byte-range locks, share modes, delete-pending), tried by a user with an account
(BOB) against another user's (ALICE's): a server started as root acting as two Unix accounts
made for the module, raw requests (raw.py), the helpers of test_session_review.

BOB knows what travels in the clear or can be guessed (ALICE's ClientGuid, FileIds), not her
LeaseKeys. Each test shows with ALICE's own requests that what it protects works. The server
tests run against one process and against two workers; a break's routing once its open's
session is gone, which no request is known to reach, is tried on `Connection` objects, and an
anonymous session's lease on the guest share of the `servers` fixture."""
from __future__ import annotations

import os
import shutil
import struct
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from raw import NoAnswer, UserTree
from servers import spawn_for_accounts, stop, unix_accounts
from smbcore import change_notify_body, create_body, create_contexts_of
from test_session_review import (LEASE, PASSWORD, Conn, create_request, dh2q, lease, lease_break_ack,
                                 next_break)

from smbring.server.workers import BREAK_TIMEOUT_VARIABLE
from smbring.smb import oplocks, wire
from smbring.smb.channels import Channel
from smbring.smb.durable import Durable
from smbring.smb.state import Open, Session

sys.path.insert(0, str(Path(__file__).parent.parent / "smb"))
import sansio_client  # noqa: E402

if os.geteuid() != 0 or not shutil.which("useradd"):
    pytest.skip("acting as Unix accounts needs root (and useradd)", allow_module_level=True)

SUFFIX = f"{os.getpid() % 100000}"
ALICE, BOB = f"xura{SUFFIX}", f"xurb{SUFFIX}"
READ_WRITE = 0x0012019F
R, W, H = 1, 4, 2
SHARE_READ = 1
WATCHES = 1000
BREAK_TIMEOUT = 2.0         # the server's (seconds): a CREATE waits at most twice that for breaks


@pytest.fixture(scope="module")
def accounts():
    yield from unix_accounts(ALICE, BOB)


@pytest.fixture(scope="module", params=[1, 2], ids=["one-process", "two-workers"])
def server(accounts, tmp_path_factory, request):
    """share/ (1777, durable handles on): ALICE's alice.txt (0644), and private/ (0700) with
    secret.txt in it."""
    tmp = tmp_path_factory.mktemp("crossuser")
    top = Path(tempfile.mkdtemp(prefix="smbring-crossuser-", dir="/tmp"))
    top.chmod(0o755)
    share = top / "share"
    share.mkdir()
    share.chmod(0o1777)
    private = share / "private"
    private.mkdir()
    (private / "secret.txt").write_text("alice's")
    (share / "alice.txt").write_text("alice's")
    for p in (private, private / "secret.txt", share / "alice.txt"):
        os.chown(p, *accounts[ALICE])
    private.chmod(0o700)
    os.environ[BREAK_TIMEOUT_VARIABLE] = str(BREAK_TIMEOUT)
    try:
        proc, port, log = spawn_for_accounts(tmp, share, (ALICE, BOB), PASSWORD,
                                             share_options="durable handles = yes\n",
                                             more=f"[global]\nsmbring workers = {request.param}\n")
    finally:
        del os.environ[BREAK_TIMEOUT_VARIABLE]
    yield {"port": port, "share": share, "proc": proc, "log": log, "accounts": accounts}
    stop(proc)
    shutil.rmtree(top, ignore_errors=True)


# -- where a lease break goes once the open's session is gone ----------------------------------

def _on_client(conn, client, session_id: int = 0, owner: str = "", guest: bool = False,
               user: str = ""):
    """The connection works on `client`'s tables, with a logged-on session of `owner`."""
    conn.client.connections.remove(conn)
    conn.client = client
    client.connections.append(conn)
    if session_id:
        client.sessions[session_id] = Session(id=session_id, valid=True, owner=owner, guest=guest,
                                              user=user, client=client,
                                              channels={conn: Channel(signing_key=b"k" * 16)})


def _breaks(conn) -> list[bytes]:
    return [body for h, body in sansio_client.sent(conn.outbox_drain()) if h.command == wire.OPLOCK_BREAK]


@pytest.mark.parametrize("durable_owner", ["uid:1", ""])
def test_a_lease_break_whose_session_is_gone_goes_to_its_users_logon_only(tmp_path, durable_owner):
    """No request of a client path is known to leave a leased open attached with its session
    gone (a session's end closes its opens or detaches its durable ones, whose breaks then go
    nowhere), so the rule is tried on the connections themselves: the break of such an open
    goes to a logon of the user its durable record names (as when the session lives), never
    to another user's logon on the same ClientGuid (which would learn her LeaseKey), nor
    anywhere where no record names the user. An anonymous session's lease goes to that
    session only."""
    state_dir = tmp_path / "s"
    state_dir.mkdir()
    origin = sansio_client.connection(state_dir)
    client = origin.client
    bob, alice = (sansio_client.connection(state_dir, origin.state) for _ in range(2))
    _on_client(bob, client, 7, owner="uid:2")           # BOB's logon, oldest: first in line
    _on_client(alice, client, 8, owner="uid:1")
    o = Open(fd=-1, parts=["f"], is_dir=False, access=READ_WRITE, session_id=5)   # (5: gone)
    if durable_owner:
        origin.state.durable.grant(Durable(open=o, persistent=b"p" * 8, user=durable_owner,
                                           client_guid=b"g" * 16, create_guid=b"", timeout=60,
                                           share=("s", str(state_dir))))
    lease = oplocks.Lease(b"g" * 16, b"K" * 16, (1, 2), 1, state=R | W | H)
    origin.send_lease_break(o, lease, R | W | H, R | H, True)
    assert _breaks(bob) == []
    assert len(_breaks(alice)) == (1 if durable_owner else 0)
    # an anonymous session's lease: its own session only, not BOB's logon
    anon = sansio_client.connection(state_dir, origin.state)
    _on_client(anon, client, 9, guest=True, user="anonymous")
    o.session_id = 9
    origin.send_lease_break(o, lease, R | W | H, R | H, True)
    assert _breaks(bob) == [] and _breaks(alice) == []
    assert len(_breaks(anon)) == 1


def test_her_detached_durable_lease_breaks_reach_no_logon_on_her_client_guid(server):
    """ALICE's leased durable open waits detached once she logs off; BOB, logged on under her
    ClientGuid, hears nothing of her lease (its key) when his other connection's write open
    of the file ends it (the detached open is closed first: nobody could answer a break)."""
    key = os.urandom(16)
    alice = Conn(server, ALICE)
    r = alice.create("detached.txt", oplock=LEASE, contexts=[lease(key), dh2q(os.urandom(16))])
    assert r.status == wire.STATUS_SUCCESS and b"DH2Q" in create_contexts_of(r), r
    assert alice.raw.logoff(alice.session).status == wire.STATUS_SUCCESS
    listener = Conn(server, BOB, alice.guid)
    try:
        with UserTree(server["port"], BOB, PASSWORD) as bob:
            msg = bob.tree.message(wire.CREATE, create_request("detached.txt", wire.GENERIC_READ,
                                                               wire.FILE_OPEN, 0, ()))
            bob.raw.send([msg])
            r = bob.raw.response_to(wire.Header.parse(msg).message_id)
            if r.status == wire.STATUS_PENDING:     # (with workers: another worker's open is asked)
                r = bob.raw.response_to(wire.Header.parse(msg).message_id)
            assert r.status == wire.STATUS_SUCCESS, r
            bob.tree.close(r.file_id)
        assert next_break(listener, 1.0) is None
    finally:
        listener.close()
        alice.close()


# -- share modes: what an open holds, not what it asked for --------------------------------------

def test_his_maximum_allowed_open_counts_what_it_was_granted(server):
    """BOB opens ALICE's file (0644: he may read it) with MAXIMUM_ALLOWED, sharing everything:
    his open reads only, so her open that writes and shares reading alone is no sharing
    violation (MS-FSA 2.1.5.1.2 checks share access with the granted access, as Samba
    does). Before, his open counted as one that writes and deletes, and refused hers."""
    with UserTree(server["port"], BOB, PASSWORD) as bob, UserTree(server["port"], ALICE, PASSWORD) as alice:
        his = bob.tree.open("alice.txt", wire.MAXIMUM_ALLOWED, share_access=7)
        r = alice.tree.create("alice.txt", READ_WRITE, share_access=SHARE_READ)
        assert r.status == wire.STATUS_SUCCESS, r
        alice.tree.close(r.file_id)
        bob.tree.close(his)
        # share modes do hold: a reader that does not share writing refuses her writer
        his = bob.tree.open("alice.txt", wire.FILE_READ_DATA, share_access=SHARE_READ)
        r = alice.tree.create("alice.txt", READ_WRITE, share_access=7)
        assert r.status == wire.STATUS_SHARING_VIOLATION, r
        bob.tree.close(his)


# -- change notify -------------------------------------------------------------------------------

def test_a_watch_on_her_private_directory_needs_the_right_to_list_it(server):
    """BOB may open ALICE's 0700 directory for its attributes (its parent is his to list), but
    not watch it: a watch would tell him the names he may not list."""
    with UserTree(server["port"], BOB, PASSWORD) as bob:
        r = bob.tree.create("private", 0x80 | 0x100000, options=wire.FILE_DIRECTORY_FILE)
        if r.status == wire.STATUS_SUCCESS:
            assert bob.tree.change_notify(r.file_id, 0x3, flags=1).status == wire.STATUS_ACCESS_DENIED
        else:
            assert r.status == wire.STATUS_ACCESS_DENIED, r
        assert bob.tree.create("private", 0x1, options=wire.FILE_DIRECTORY_FILE).status == \
            wire.STATUS_ACCESS_DENIED


DEPTH = ["d1", "d2", "d3", "d4", "d5"]


def _cpu_seconds(pid: int) -> float:
    """The CPU time (user and system) the process and its children (workers) have used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return own + sum(_cpu_seconds(int(child)) for child in children)


def _her_changes(alice, pid: int, n: int = 20) -> float:
    """The server's CPU seconds for ALICE's creating and deleting n files deep in the share
    (its CPU time, not the time taken: the machine may be busy with other work)."""
    path = "\\".join(DEPTH)
    start = _cpu_seconds(pid)
    for i in range(n):
        r = alice.tree.create(f"{path}\\f{i}.txt", READ_WRITE | wire.DELETE, wire.FILE_CREATE,
                              options=wire.FILE_DELETE_ON_CLOSE)
        assert r.status == wire.STATUS_SUCCESS, r
        alice.tree.close(r.file_id)
    return _cpu_seconds(pid) - start


def test_many_watches_of_another_user_do_not_stall_her_changes(server):
    """BOB keeps many tree watches of the share (each an open of its root, within `max open
    files`): each change ALICE makes below must not be judged again for every one of them
    (opening each directory on the way as him), which would stall the server for everyone."""
    deep = server["share"]
    for name in DEPTH:
        deep = deep / name
        deep.mkdir(exist_ok=True)
        deep.chmod(0o777)
    with UserTree(server["port"], ALICE, PASSWORD) as alice, UserTree(server["port"], BOB, PASSWORD) as bob:
        before = _her_changes(alice, server["proc"].pid)
        bob.raw.grow_credits(512)
        for _ in range(WATCHES):
            fid = bob.tree.open("", 0x1 | 0x100000, options=wire.FILE_DIRECTORY_FILE)
            msg = bob.tree.message(wire.CHANGE_NOTIFY, change_notify_body(fid, 0x3, 1, 4096))
            bob.raw.send([msg])
            interim = bob.raw.response_to(wire.Header.parse(msg).message_id)
            assert interim.status == wire.STATUS_PENDING, interim
            cancel = bytearray(wire.Header(command=wire.CANCEL, flags=wire.FLAGS_ASYNC,
                                           async_id=interim.header.async_id,
                                           session_id=bob.tree.session.id).pack() + b"\x04\x00\x00\x00")
            bob.raw.send([cancel], sign=True)
            assert bob.raw.response_to(wire.Header.parse(msg).message_id).status == wire.STATUS_CANCELLED
        after = _her_changes(alice, server["proc"].pid)
        # (judged for each watch, 1000 of them took about 5 s of CPU; judged once, under 1 s)
        assert after < before * 5 + 2.0, (before, after)


def _watch(user: UserTree, name: str, completion_filter: int) -> bytearray:
    """A CHANGE_NOTIFY of the directory `name`, sent and waiting: its request."""
    fid = user.tree.open(name, 0x1 | 0x100000, options=wire.FILE_DIRECTORY_FILE)
    msg = user.tree.message(wire.CHANGE_NOTIFY, change_notify_body(fid, completion_filter, 0, 4096))
    user.raw.send([msg])
    assert user.raw.response_to(wire.Header.parse(msg).message_id).status == wire.STATUS_PENDING
    return msg


def _told(user: UserTree, msg) -> bytes:
    r = user.raw.response_to(wire.Header.parse(msg).message_id)
    assert r.status == wire.STATUS_SUCCESS, r
    return r.body


def lease_state(r) -> int:
    """The lease state a CREATE's answer grants (its RqLs context), 0 without one."""
    ctx = create_contexts_of(r).get(b"RqLs")
    return struct.unpack_from("<I", ctx, 16)[0] if ctx else 0


def test_leases_that_answer_each_break_and_take_their_caching_back_hold_her_create_for_a_time(server):
    """BOB holds two read-handle leases on a file (two clients of his), through opens that do
    not share writing, so ALICE's CREATE for writing breaks their HANDLE caching and waits. He
    answers each break at once, and at once takes the HANDLE caching back with an
    attribute-only open naming the lease: each break is answered in time, yet while one of
    his leases is being broken the other has its HANDLE back, and her CREATE would wait for
    ever. It waits at most twice the break timeout, then is answered
    STATUS_SHARING_VIOLATION, as Samba's deferred opens are."""
    name = "contended.txt"
    (server["share"] / name).write_text("x")
    (server["share"] / name).chmod(0o666)
    keys = [os.urandom(16), os.urandom(16)]
    his = [Conn(server, BOB), Conn(server, BOB)]
    alice = Conn(server, ALICE)
    try:
        for conn, key in zip(his, keys):
            r = conn.tree.request(wire.CREATE, create_body(name, wire.GENERIC_READ, wire.FILE_OPEN, 0,
                                                           share_access=SHARE_READ, oplock=LEASE,
                                                           contexts=[lease(key, R | H)]))
            assert r.status == wire.STATUS_SUCCESS and lease_state(r) == R | H, r
        msg = alice.raw.message(wire.CREATE, create_request(name, READ_WRITE, wire.FILE_OPEN, 0, ()),
                                session=alice.session, tree_id=alice.tree.id)
        alice.raw.send([msg])
        mid = wire.Header.parse(msg).message_id
        assert alice.raw.response_to(mid).status == wire.STATUS_PENDING
        answer, start = None, time.monotonic()
        alice.raw.sock.settimeout(0.05)
        while answer is None and time.monotonic() - start < 4 * BREAK_TIMEOUT:
            for conn, key in zip(his, keys):
                brk = next_break(conn, 0.05)
                if brk is None:
                    continue
                assert lease_break_ack(conn, key, R).status == wire.STATUS_SUCCESS
                r = conn.create(name, access=0x80 | 0x100000, disposition=wire.FILE_OPEN, oplock=LEASE,
                                contexts=[lease(key, R | H)])
                assert r.status == wire.STATUS_SUCCESS and lease_state(r) == R | H, r
                conn.tree.close(r.file_id)
            try:
                answer = alice.raw.response_to(mid)
            except NoAnswer:
                pass
        assert answer is not None, "her CREATE still held"
        assert answer.status == wire.STATUS_SHARING_VIOLATION, answer
        assert time.monotonic() - start < 3 * BREAK_TIMEOUT + 1.0
    finally:
        alice.close()
        for conn in his:
            conn.close()


def test_stream_names_of_her_unreadable_file_are_not_told_to_him(server):
    """ALICE adds a named stream to her 0600 file in the share's root, which BOB may list:
    his watch of the root is not told its name (he may not open the file, and a stream's
    name is listed only through an open of its file), hers is; a stream of his own file,
    made next, is told to him (the watch works: with workers, a change another worker makes
    reaches it only through the kernel, which sees no stream). Before, his watch was told
    "mine.txt:merger-plans"."""
    STREAM_NAME = 0x200
    with UserTree(server["port"], ALICE, PASSWORD) as alice, UserTree(server["port"], BOB, PASSWORD) as bob:
        alice.tree.close(alice.tree.open("mine.txt", READ_WRITE, wire.FILE_CREATE))
        (server["share"] / "mine.txt").chmod(0o600)
        assert bob.tree.create("mine.txt", 0x80 | 0x100000).status == wire.STATUS_ACCESS_DENIED
        his, hers = _watch(bob, "", STREAM_NAME), _watch(alice, "", STREAM_NAME)
        alice.tree.close(alice.tree.open("mine.txt:merger-plans", READ_WRITE, wire.FILE_CREATE))
        assert "merger-plans".encode("utf-16-le") in _told(alice, hers)
        # (a stream his watch may be told of; his own: with workers, a change another worker
        # makes reaches his through the kernel, which does not see streams)
        bob.tree.close(bob.tree.open("his.txt:lunch", READ_WRITE, wire.FILE_CREATE))
        told = _told(bob, his)
        assert "merger-plans".encode("utf-16-le") not in told and "lunch".encode("utf-16-le") in told, told


def test_an_anonymous_sessions_lease_break_goes_to_that_session_only(servers):
    """A null session holds a read-handle lease on a guest share's file; a logon of a user
    (who needs no password to know the ClientGuid) connects first under the same ClientGuid.
    A break of that lease (another open sharing nothing) goes to the null session's
    connection, not to his: an anonymous session's lease is nobody's but its own. Before, a
    break for a session of nobody's went to any logon on the client that was not anonymous,
    the oldest first."""
    from servers import PASSWORD as USER_PASSWORD, USER
    from test_anonymous import anonymous_exchange, negotiated
    server = servers(guest=True)
    (server.root / "public" / "shared.txt").write_text("x")
    guid, key = os.urandom(16), os.urandom(16)
    thief = negotiated(server, guid=guid)
    thief.tree(thief.logon(USER, USER_PASSWORD), "public")
    anon = negotiated(server, guid=guid)
    s = anonymous_exchange(anon)
    assert s.status == wire.STATUS_SUCCESS
    tree = anon.tree(s, "public")
    r = tree.request(wire.CREATE, create_body("shared.txt", wire.GENERIC_READ, wire.FILE_OPEN, 0,
                                              oplock=LEASE, contexts=[lease(key, R | H)]))
    assert r.status == wire.STATUS_SUCCESS and lease_state(r) == R | H, r
    other = negotiated(server)
    otree = other.tree(other.logon(USER, USER_PASSWORD), "public")
    msg = otree.message(wire.CREATE, create_body("shared.txt", wire.GENERIC_READ, wire.FILE_OPEN, 0,
                                                 share_access=0))
    other.send([msg])
    assert other.response_to(wire.Header.parse(msg).message_id).status == wire.STATUS_PENDING
    assert next_break(SimpleNamespace(raw=thief), 1.0) is None
    brk = next_break(SimpleNamespace(raw=anon))
    assert brk is not None and brk.body[8:24] == key, brk


def test_his_byte_range_locks_do_not_outlive_his_connection_beside_her_open(server):
    """BOB's durable open of a file ALICE has open too (so his lease caches no writes) holds a
    byte-range lock when his connection is lost: his open is closed, not kept waiting for a
    reconnect, so that her writes there are not refused for the durable timeout (a minute for
    DH2Q, 16 for DHnQ) by the lock of a client that is gone, as Samba's
    vfs_default_durable_disconnect refuses. Before, her write was STATUS_FILE_LOCK_CONFLICT
    until his durable open timed out."""
    name = "locked.txt"
    (server["share"] / name).write_text("0123456789")
    (server["share"] / name).chmod(0o666)
    with UserTree(server["port"], ALICE, PASSWORD) as alice:
        fid = alice.tree.open(name, READ_WRITE)
        bob = Conn(server, BOB)
        r = bob.create(name, oplock=LEASE, contexts=[lease(os.urandom(16), R | H), dh2q(os.urandom(16))])
        assert r.status == wire.STATUS_SUCCESS and lease_state(r) == R | H, r
        assert b"DH2Q" in create_contexts_of(r), r
        assert bob.tree.lock(r.file_id, [(0, 4, wire.LOCK_EXCLUSIVE | wire.LOCK_FAIL_IMMEDIATELY)]).status == \
            wire.STATUS_SUCCESS
        assert alice.tree.write(fid, b"x", 0).status == wire.STATUS_FILE_LOCK_CONFLICT
        bob.close()
        deadline = time.monotonic() + 5.0
        while (status := alice.tree.write(fid, b"x", 0).status) == wire.STATUS_FILE_LOCK_CONFLICT \
                and time.monotonic() < deadline:
            time.sleep(0.1)     # (the server takes his lost connection down)
        assert status == wire.STATUS_SUCCESS, hex(status)
