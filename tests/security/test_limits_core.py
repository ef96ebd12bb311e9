"""What one client may make the protocol core hold (smbring.smb.limits): compounds, trees,
sessions, pending logons, opens, locks, and a CREATE whose name lies outside its message.
Each bound answers the request over it with an NTSTATUS (or drops a connection that cannot be
answered sensibly), keeps the server up, and frees its slot when the client lets one go.
Timings are generous correctness bounds (a server stuck for minutes), not performance claims.
"""
import os
import threading
import time

import pytest

from raw import SHORT_BODY, STATUS_TOO_MANY_OPENED_FILES, Disconnected, FrameTooLarge, read_body, tree_connect_body
from servers import PASSWORD, USER
from smbring.smb import wire

MiB = 1 << 20
LIMITED = {"max trees per session": 4, "max sessions per connection": 4, "max pending sessions": 2,
           "max open files": 16, "max compound requests": 16}


@pytest.fixture(scope="module")
def limited(servers):
    return servers(LIMITED)


@pytest.fixture(scope="module")
def default(servers):
    return servers()


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_compound_of_large_reads_keeps_memory_and_frames_bounded(fresh_servers, signed):
    server = fresh_servers()
    path = server.path("rw") / "large.bin"
    with open(path, "wb") as f:
        f.truncate(8 * MiB)
    c, s = server.logon()
    rw = c.tree(s, "rw")
    fid = rw.open(path.name)
    c.grow_credits(64 * 128)
    before = server.proc_status("VmHWM")
    reads = [rw.message(wire.READ, read_body(fid, 8 * MiB), payload=8 * MiB) for _ in range(64)]
    c.send(reads, sign=signed)                 # one frame of 7.7 KB asking for 512 MiB
    sizes, answered = [], 0
    try:
        while answered < len(reads):
            frame = c.recv_frame(max_size=16 * MiB)
            sizes.append(len(frame))
            answered += sum(r.status != wire.STATUS_PENDING for r in c.parse(frame))
    except FrameTooLarge as e:
        sizes.append(e.size)
    grew = (server.proc_status("VmHWM") - before) // 1024
    assert max(sizes) < 16 * MiB and grew < 64, f"response frames {sizes}; peak RSS grew by {grew} MiB"


def echoes(c, s, n):
    return [c.message(wire.ECHO, SHORT_BODY, session=s) for _ in range(n)]


def test_compound_over_max_compound_requests_disconnects(limited):
    c, s = limited.logon()
    assert all(r.status == wire.STATUS_SUCCESS for r in c.compound(echoes(c, s, 16)))
    with pytest.raises(Disconnected):
        c.compound(echoes(c, s, 17))


def test_frame_of_100000_echoes_disconnects_quickly_and_others_are_served(default):
    c, s = default.logon()
    other, other_session = default.logon()
    flood = echoes(c, s, 100_000)
    start = time.monotonic()
    with pytest.raises(Disconnected):
        c.send(flood, sign=False)              # 7.2 MB: one frame, a session's largest
        c.response_to(wire.Header.parse(flood[0]).message_id)
    assert time.monotonic() - start < 5
    assert other.echo(session=other_session).status == wire.STATUS_SUCCESS


def test_trees_per_session_are_bounded_and_freed(limited):
    c, s = limited.logon()
    trees = [c.tree(s, "rw") for _ in range(4)]
    over = c.tree_connect(s, "ro")
    assert over.status == wire.STATUS_INSUFFICIENT_RESOURCES, over
    assert trees[0].disconnect().status == wire.STATUS_SUCCESS
    assert c.tree_connect(s, "ro").status == wire.STATUS_SUCCESS
    assert limited.alive()


def test_sessions_per_connection_are_bounded_and_freed(limited):
    c, first = limited.logon()
    for _ in range(3):
        c.logon(limited.user, limited.password)
    over = c.logon(limited.user, limited.password, check=False)
    assert over.status == wire.STATUS_INSUFFICIENT_RESOURCES, over.last
    assert c.logoff(first).status == wire.STATUS_SUCCESS
    assert c.logon(limited.user, limited.password, check=False).status == wire.STATUS_SUCCESS
    assert limited.alive()


def test_pending_logons_are_bounded_and_freed(limited):
    c = limited.client()
    c.negotiate()
    pending = [c.begin_logon(limited.user, limited.password) for _ in range(2)]
    assert all(r.status == wire.STATUS_MORE_PROCESSING_REQUIRED for _ctx, _s, r in pending)
    _ctx, _s, over = c.begin_logon(limited.user, limited.password)
    assert over.status == wire.STATUS_INSUFFICIENT_RESOURCES, over
    c.finish_logon(*pending[0])                # complete: no longer pending
    _ctx, _s, again = c.begin_logon(limited.user, limited.password)
    assert again.status == wire.STATUS_MORE_PROCESSING_REQUIRED, again
    assert limited.alive()


def test_open_files_per_connection_are_bounded_and_freed(limited):
    (limited.path("rw") / "many-opens.txt").write_bytes(b"x")
    c, s = limited.logon()
    rw = c.tree(s, "rw")
    fids = [rw.open("many-opens.txt") for _ in range(16)]
    over = rw.create("many-opens.txt")
    assert over.status == STATUS_TOO_MANY_OPENED_FILES, over
    other, other_session = limited.logon()      # the bound is per connection
    assert other.tree(other_session, "rw").create("many-opens.txt").status == wire.STATUS_SUCCESS
    assert rw.close(fids[0]).status == wire.STATUS_SUCCESS
    assert rw.create("many-opens.txt").status == wire.STATUS_SUCCESS
    assert limited.alive()


def test_open_files_are_bounded_per_connection_when_connections_share_a_client(limited):
    """Two connections of one client (one ClientGuid, as a multichannel client's: the server
    keeps their opens in one table, and places both on one worker): each connection's
    `max open files` counts the opens of its own sessions, whatever the table holds."""
    (limited.path("rw") / "one-client.txt").write_bytes(b"x")
    guid = os.urandom(16)
    trees = []
    for _ in range(2):
        c = limited.client()
        assert c.negotiate((wire.SMB311,), client_guid=guid).status == wire.STATUS_SUCCESS
        trees.append(c.tree(c.logon(USER, PASSWORD), "rw"))
    first, second = trees
    fids = [first.open("one-client.txt") for _ in range(16)]
    assert first.create("one-client.txt").status == STATUS_TOO_MANY_OPENED_FILES
    # the client's table holds the first's 16: the second's own count decides
    more = [second.open("one-client.txt") for _ in range(16)]
    assert second.create("one-client.txt").status == STATUS_TOO_MANY_OPENED_FILES
    assert first.create("one-client.txt").status == STATUS_TOO_MANY_OPENED_FILES
    assert second.close(more[0]).status == wire.STATUS_SUCCESS
    assert first.create("one-client.txt").status == STATUS_TOO_MANY_OPENED_FILES
    assert second.create("one-client.txt").status == wire.STATUS_SUCCESS
    assert first.close(fids[0]).status == wire.STATUS_SUCCESS
    assert first.create("one-client.txt").status == wire.STATUS_SUCCESS
    assert limited.alive()


def test_21000_tree_connects_keep_file_descriptors_bounded(fresh_servers):
    default = fresh_servers()
    c, s = default.logon()
    fds_before = default.fd_count()
    c.grow_credits(1100)
    statuses = {}
    for _ in range(21):                        # 21 batches of 1000, each pipelined
        batch = [c.message(wire.TREE_CONNECT, tree_connect_body("\\\\127.0.0.1\\rw"), session=s)
                 for _ in range(1000)]
        for msg in batch:
            c.send([msg])
        for msg in batch:
            r = c.response_to(wire.Header.parse(msg).message_id)
            statuses[r.status] = statuses.get(r.status, 0) + 1
    grew = default.fd_count() - fds_before
    newcomer, session = default.logon()
    assert newcomer.echo(session=session).status == wire.STATUS_SUCCESS
    assert statuses.get(wire.STATUS_SUCCESS, 0) <= 256, statuses
    assert grew <= 256 + 16, f"{grew} more file descriptors after 21,000 TREE_CONNECTs ({statuses})"


def lock_ranges(n, flags):
    return [(2 * i, 1, flags) for i in range(n)]


def open_for_locks(server, timeout):
    (server.path("rw") / "locks.bin").write_bytes(b"\0" * 1024)
    c, s = server.logon(timeout=timeout)
    rw = c.tree(s, "rw")
    return rw, rw.open("locks.bin", wire.GENERIC_READ | wire.GENERIC_WRITE)


def test_lock_with_65535_elements_is_answered_while_others_are_served(fresh_servers):
    server = fresh_servers()
    rw, fid = open_for_locks(server, timeout=15)
    other, other_session = server.logon(timeout=30)
    answer = {}

    def lock():
        try:
            answer["r"] = rw.lock(fid, lock_ranges(65535, wire.LOCK_EXCLUSIVE | wire.LOCK_FAIL_IMMEDIATELY))
        except Exception as e:      # NoAnswer or Disconnected: reported below
            answer["r"] = e

    start = time.monotonic()
    waiting = threading.Thread(target=lock, daemon=True)
    waiting.start()
    # the other client's longest ECHO, in the server's CPU seconds: a loaded machine
    # stretches wall time alone (a stalled loop's ECHO still ends in NoAnswer after 30 s)
    slowest = 0.0
    while waiting.is_alive() and time.monotonic() - start < 15:
        cpu = server.cpu_seconds()
        assert other.echo(session=other_session).status == wire.STATUS_SUCCESS
        slowest = max(slowest, server.cpu_seconds() - cpu)
        time.sleep(0.05)
    waiting.join(20)
    assert answer["r"].status == wire.STATUS_INSUFFICIENT_RESOURCES, answer["r"]
    assert time.monotonic() - start < 10 and slowest < 1.0, (time.monotonic() - start, slowest)


def test_lock_with_4096_elements_then_unlock_all(fresh_servers):
    rw, fid = open_for_locks(fresh_servers(), timeout=30)
    start = time.monotonic()
    r = rw.lock(fid, lock_ranges(4096, wire.LOCK_EXCLUSIVE | wire.LOCK_FAIL_IMMEDIATELY))
    locked = time.monotonic() - start
    assert r.status == wire.STATUS_SUCCESS, r
    start = time.monotonic()
    r = rw.lock(fid, lock_ranges(4096, wire.LOCK_UNLOCK))
    unlocked = time.monotonic() - start
    assert r.status == wire.STATUS_SUCCESS, r
    assert locked < 3 and unlocked < 3, f"lock {locked:.1f} s, unlock {unlocked:.1f} s"


@pytest.mark.parametrize("offset, length", [(0xFFF0, 20), (120, 0xFFFE), (0xFFFF, 0xFFFF)],
                         ids=["offset-past-the-end", "length-past-the-end", "both"])
def test_create_name_outside_the_message_is_invalid(default, offset, length):
    c, s = default.logon()
    ro = c.tree(s, "ro")
    r = ro.create("x", name_offset=offset, name_length=length)
    assert r.status == wire.STATUS_INVALID_PARAMETER, r


def test_locks_per_user_are_bounded_across_connections_and_freed(servers):
    """`max locks per connection` alone let one user hold that many locks on every
    connection it opened (about 300 bytes each: 128 connections at 65,536 held 2.6 GB);
    `max locks per user` bounds them together. Another user (here the guests') is not
    held to this user's count, and a lock released anywhere frees a slot."""
    from smbcore import lock_body
    from test_anonymous import anonymous_exchange, negotiated
    server = servers({"max locks per user": "4", "max locks per connection": "3"}, guest=True)
    (server.root / "public" / "f.txt").write_text("x" * 100)
    shared_now = wire.LOCK_SHARED | wire.LOCK_FAIL_IMMEDIATELY

    def locker(c, s):
        tree = c.tree(s, "public")
        fid = tree.open("f.txt", wire.GENERIC_READ, wire.FILE_OPEN)
        return tree, fid, lambda offset: tree.request(wire.LOCK, lock_body(fid, [(offset, 1, shared_now)])).status

    a_tree, a_fid, lock_a = locker(*server.logon())
    _b_tree, _b_fid, lock_b = locker(*server.logon())
    assert [lock_a(i) for i in range(4)] == [wire.STATUS_SUCCESS] * 3 + [wire.STATUS_INSUFFICIENT_RESOURCES]
    assert lock_b(10) == wire.STATUS_SUCCESS                                # the user's fourth
    assert lock_b(11) == wire.STATUS_INSUFFICIENT_RESOURCES                 # no fifth, anywhere
    guest = negotiated(server)
    _g_tree, _g_fid, lock_g = locker(guest, anonymous_exchange(guest))
    assert [lock_g(20 + i) for i in range(3)] == [wire.STATUS_SUCCESS] * 3  # another's count
    assert a_tree.close(a_fid).status == wire.STATUS_SUCCESS               # three released
    assert [lock_b(11 + i) for i in range(3)] == [wire.STATUS_SUCCESS] * 2 + [wire.STATUS_INSUFFICIENT_RESOURCES]


def test_open_files_per_user_are_bounded_across_connections_and_freed(servers):
    """Every open holds a descriptor of the one server process: with `max open files` per
    connection alone, four connections of one user took the 65,536 descriptors the service
    unit allows, and nobody else could open a file or connect. `max open files per user`
    bounds a user's opens together; the guests' are counted apart; a close frees a slot."""
    from test_anonymous import anonymous_exchange, negotiated
    server = servers({"max open files per user": "4", "max open files": "3"}, guest=True)
    (server.root / "public" / "f.txt").write_text("x")

    def opener(c, s):
        tree = c.tree(s, "public")
        return tree, lambda: tree.create("f.txt", wire.GENERIC_READ, wire.FILE_OPEN)

    a_tree, open_a = opener(*server.logon())
    _b_tree, open_b = opener(*server.logon())
    a = [open_a() for _ in range(4)]
    assert [r.status for r in a] == [wire.STATUS_SUCCESS] * 3 + [STATUS_TOO_MANY_OPENED_FILES]
    assert [open_b().status for _ in range(2)] == [wire.STATUS_SUCCESS, STATUS_TOO_MANY_OPENED_FILES]
    guest = negotiated(server)
    _g_tree, open_g = opener(guest, anonymous_exchange(guest))
    assert [open_g().status for _ in range(3)] == [wire.STATUS_SUCCESS] * 3
    assert a_tree.close(a[0].file_id).status == wire.STATUS_SUCCESS
    assert [open_b().status for _ in range(2)] == [wire.STATUS_SUCCESS, STATUS_TOO_MANY_OPENED_FILES]


def test_opens_of_all_users_leave_descriptors_to_connect_and_log_on(fresh_servers):
    """Every open holds a descriptor of the one server process. Before, opens took
    descriptors until the process had none: the next open failed with
    STATUS_INSUFFICIENT_RESOURCES, and no connection was accepted any more, so nobody else
    could even log on. Opens now stop short of the open files limit by what connections need
    (here 600 - 16 connections - 16 durable handles - 128 of the server's own = 440), a new
    connection still logs on and is told STATUS_TOO_MANY_OPENED_FILES, and a close frees a slot."""
    import resource
    from test_anonymous import anonymous_exchange, negotiated

    def few_descriptors():
        resource.setrlimit(resource.RLIMIT_NOFILE, (600, 600))

    server = fresh_servers({"max smbd processes": "16", "max disconnected durable handles": "16"},
                           guest=True, preexec_fn=few_descriptors)
    (server.root / "public" / "f.txt").write_text("x")
    c, s = server.logon()
    tree = c.tree(s, "public")
    opened, refused = [], None
    while refused is None and len(opened) < 700:
        r = tree.create("f.txt", wire.GENERIC_READ, wire.FILE_OPEN)
        if r.status == wire.STATUS_SUCCESS:
            opened.append(r.file_id)
        else:
            refused = r.status
    assert (len(opened), refused) == (440, STATUS_TOO_MANY_OPENED_FILES)
    guest = negotiated(server)                  # accepted, and logs on
    g_tree = guest.tree(anonymous_exchange(guest), "public")
    assert guest.echo().status == wire.STATUS_SUCCESS
    assert g_tree.create("f.txt", wire.GENERIC_READ, wire.FILE_OPEN).status == STATUS_TOO_MANY_OPENED_FILES
    assert tree.close(opened.pop()).status == wire.STATUS_SUCCESS
    assert g_tree.create("f.txt", wire.GENERIC_READ, wire.FILE_OPEN).status == wire.STATUS_SUCCESS
    assert server.fd_count() < 600 - 100
    assert server.log.read_text().count("files open, the most this process") == 1
