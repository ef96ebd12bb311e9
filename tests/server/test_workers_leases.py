"""Oplocks and leases across the workers of ``smbring serve --workers 2``, with real
smbprotocol clients on different worker processes: a holder on one worker is told to break
when a client of the other worker opens its file, and that client's CREATE waits for the
answer, for the break timeout (shortened here through SMBRING_BREAK_TIMEOUT), or for the
holder's worker to die; one client's lease key used through both workers is one lease; a
directory lease held through one worker is broken by changes made through the other; and
garbage on the workers' wake-up sockets changes nothing.

Placing clients: as in test_workers, the first client's worker is stopped (SIGSTOP) while
the second one connects, so the other worker takes that connection."""
import os
import signal
import socket
import stat
import struct
import time
import uuid

import pytest

pytest.importorskip("smbprotocol")

import test_dir_leases as dirs  # noqa: E402
import test_lease_rename_hold as renames  # noqa: E402
import test_leases as leases  # noqa: E402
import test_oplocks as oplocks  # noqa: E402
from servers import stop  # noqa: E402
from worker_servers import pid_of, status_of, worker_holding  # noqa: E402
from worker_servers import start as start_workers  # noqa: E402
from waiting_calls import Background, status_of as status_of_call  # noqa: E402

from smbring.server import wakeups  # noqa: E402

BREAK_TIMEOUT = 3.0


@pytest.fixture
def server(tmp_path, monkeypatch):
    monkeypatch.setenv("SMBRING_BREAK_TIMEOUT", str(BREAK_TIMEOUT))
    server = start_workers(tmp_path)
    yield server
    stop(server["proc"])


@pytest.fixture
def place(server):
    """place(make_a, make_b): two clients made by these, on different workers; returns
    (a, b, a's worker, b's worker). Each is closed at the end."""
    made = []

    def place(make_a, make_b):
        a = make_a(server["port"])
        made.append(a)
        probe = f"probe-{uuid.uuid4().hex[:8]}"
        a.open(probe)
        wa = worker_holding(server, probe)
        pid = pid_of(server, wa)
        os.kill(pid, signal.SIGSTOP)
        try:
            b = make_b(server["port"])
        finally:
            os.kill(pid, signal.SIGCONT)
        made.append(b)
        probe = f"probe-{uuid.uuid4().hex[:8]}"
        b.open(probe)
        wb = worker_holding(server, probe)
        assert {wa, wb} == {1, 2}
        return a, b, wa, wb
    yield place
    for c in made:
        try:
            c.close()
        except Exception:       # its worker was killed
            pass


def oplock_client(port):
    return oplocks.Client(port)


def lease_client(guid=None):
    return lambda port: leases.Client(port, guid=guid)


# -- (1) a break across workers, answered ------------------------------------------------------
def test_batch_oplock_broken_across_workers(place):
    a, b, _wa, _wb = place(oplock_client, oplock_client)
    held = a.open("f", oplocks.BATCH)
    assert held.oplock_level == oplocks.BATCH
    opener = Background(lambda: b.open("f", oplocks.BATCH))
    level, file_id = a.next_break()
    assert (level, file_id) == (oplocks.II, held.file_id)
    time.sleep(0.5)
    assert not opener.done.is_set()             # held until the holder answers
    assert a.ack(held, oplocks.II) == oplocks.II
    assert opener.wait().oplock_level == oplocks.II
    assert opener.elapsed < 5
    # a level II holder on the other worker loses it to a write, told with no answer expected
    second = opener.result
    second.write(b"x", 0)
    level, _ = a.next_break()
    assert level == oplocks.NONE


def test_rwh_lease_broken_across_workers(place):
    a, b, _wa, _wb = place(lease_client(), lease_client())
    _held, lease = a.open("f", leases.key(1), leases.RWH)
    assert lease[1] == leases.RWH
    opener = Background(lambda: b.open("f", leases.key(2), leases.RWH))
    br = a.next_break()
    assert (br.key, br.old, br.new, br.flags) == (leases.key(1), leases.RWH, leases.RH, leases.ACK_REQUIRED)
    time.sleep(0.5)
    assert not opener.done.is_set()
    assert a.ack(leases.key(1), leases.RH) == leases.RH
    _o, lease = opener.wait()
    assert lease[1] == leases.RH                # beside another reader: no WRITE caching
    assert a.next_break(0.3) is None            # and a's lease stays RH


READ_ATTRIBUTES = 0x80


def test_attribute_only_opens_on_another_worker_leave_a_batch_oplock(place):
    """An attribute-only open breaks no oplock and gets none, whichever worker makes it, and
    its close leaves the holder's record as it was: an open that reads breaks it still."""
    a, b, _wa, _wb = place(oplock_client, oplock_client)
    held = a.open("f", oplocks.BATCH)
    assert held.oplock_level == oplocks.BATCH
    for _ in range(3):
        looker = b.open("f", oplocks.BATCH, access=READ_ATTRIBUTES)
        assert looker.oplock_level == oplocks.NONE
        looker.close()
    assert a.next_break(0.5) is None
    opener = Background(lambda: b.open("f", oplocks.BATCH))
    level, file_id = a.next_break()
    assert (level, file_id) == (oplocks.II, held.file_id)
    assert a.ack(held, oplocks.II) == oplocks.II
    assert opener.wait().oplock_level == oplocks.II


def test_a_closed_leases_key_names_another_file_on_either_worker(place):
    """The last open of a lease closes: its lease record goes from the store with it, so the
    same key may name another file, through either worker (a record left behind would
    refuse that open: a key names one file)."""
    guid = uuid.uuid4()     # (one client, a connection on each worker)
    a, b, _wa, _wb = place(lease_client(guid), lease_client(guid))
    for client, name in ((a, "g"), (b, "h"), (a, "i")):
        o, lease = client.open(name, leases.key(7), leases.RH)
        assert lease[1] == leases.RH
        o.close()
    # (and while one is open, the key names only its file)
    a.open("j", leases.key(7), leases.RH)
    assert status_of_call(lambda: b.open("k", leases.key(7), leases.RH)) == leases.STATUS_INVALID_PARAMETER


def test_one_lease_key_through_both_workers_is_one_lease(place, server):
    guid = uuid.uuid4()
    a, a2, _wa, _wb = place(lease_client(guid), lease_client(guid))
    _o, lease = a.open("f", leases.key(1), leases.RWH)
    assert lease[1] == leases.RWH
    _o, lease = a2.open("f", leases.key(1), leases.RWH)     # the same client's other connection
    assert lease[1] == leases.RWH                            # shares it, breaks nothing
    assert a.next_break(0.3) is None and a2.next_break(0.1) is None
    other = leases.Client(server["port"])
    try:
        opener = Background(lambda: other.open("f", leases.key(9), leases.RWH))
        # one break for the one lease, on one of the client's connections
        told = []
        deadline = time.monotonic() + 2         # (within the shortened break timeout)
        while not told and time.monotonic() < deadline:
            told = [(c, br) for c, br in ((a, a.next_break(0.05)), (a2, a2.next_break(0.05)))
                    if br is not None]
        assert len(told) == 1, told
        time.sleep(0.3)
        assert a.next_break(0.05) is None and a2.next_break(0.05) is None     # told once
        _c, br = told[0]
        assert (br.key, br.old, br.new) == (leases.key(1), leases.RWH, leases.RH)
        # acknowledged through the other connection (a lease is the client's, not a connection's)
        answering = a2 if told[0][0] is a else a
        assert answering.ack(leases.key(1), leases.RH) == leases.RH
        _o, lease = opener.wait()
        assert lease[1] == leases.RH
    finally:
        other.close()


def test_an_answered_break_is_not_told_again_when_its_connection_closes(server):
    """A lease break goes on the client's first connection and is answered on its second;
    the first then closes before the server's look at what it acknowledged (a retransmission
    timeout, at least 0.2 s): the break counts as not delivered there, and it is told again
    on the next connection only while the store says it is still unanswered. (The worker's
    copy of the lease said "breaking" for ever: the answered break reached the second
    connection 0.2 s later, as smbtorture's lease.v2_rename saw after v2_complex2.)"""
    guid = uuid.uuid4()
    first = leases.Client(server["port"], guid=guid)
    second = leases.Client(server["port"], guid=guid)
    other = leases.Client(server["port"])
    try:
        _held, lease = first.open("f", leases.key(1), leases.RWH)
        assert lease[1] == leases.RWH
        opener = Background(lambda: other.open("f", leases.key(2), leases.RWH))
        br = first.next_break()
        assert (br.key, br.old, br.new) == (leases.key(1), leases.RWH, leases.RH)
        assert second.ack(leases.key(1), leases.RH) == leases.RH
        _o, lease = opener.wait()
        assert lease[1] == leases.RH
        # (gone within the first look's 0.2 s, after the opener is answered: its connection's
        # end closes its open, which would otherwise let the opener have WRITE caching too)
        first.conn.transport.close()
        assert second.next_break(1.5) is None
    finally:
        for c in (second, other):
            c.close()


def test_rename_waits_for_a_handle_lease_on_another_worker(place):
    a, b, _wa, _wb = place(lease_client(), lease_client())
    renamer, _ = a.open("f", leases.key(1), leases.RH, access=leases.READ_WRITE | leases.DELETE)
    b.open("f", leases.key(2), leases.RH, access=leases.READ)
    request = renames.set_info(a, renamer, renames.FileInformationClass.FILE_RENAME_INFORMATION,
                               renames.rename_info("g"))
    br = b.next_break()
    assert (br.key, br.old, br.new, br.flags) == (leases.key(2), leases.RH, leases.R, leases.ACK_REQUIRED)
    assert renames.pending(a, request)
    assert b.ack(leases.key(2), leases.R) == leases.R
    assert renames.answer(a, request) == 0
    assert renames.exists(a, "g")


def test_directory_rename_breaks_handle_leases_below_it_on_another_worker(place):
    a, b, _wa, _wb = place(lease_client(), lease_client())
    d, _ = a.open("d", access=leases.READ | leases.DELETE, directory=True)
    below, _ = b.open(r"d\f", leases.key(2), leases.RH, access=leases.READ)
    request = renames.set_info(a, d, renames.FileInformationClass.FILE_RENAME_INFORMATION,
                               renames.rename_info("e"))
    br = b.next_break()
    assert (br.key, br.old, br.new) == (leases.key(2), leases.RH, leases.R)
    assert renames.pending(a, request)
    below.close()
    assert renames.answer(a, request) == 0
    assert renames.exists(a, r"e\f")


# -- directory leases ------------------------------------------------------------------------
def test_both_workers_offer_directory_leasing(place):
    a, b, _wa, _wb = place(lease_client(), lease_client())
    for c in (a, b):
        assert c.conn.server_capabilities.has_flag(leases.CAP_LEASING | leases.CAP_DIRECTORY_LEASING)
        _d, lease = dirs.dir_lease(c, f"d{id(c)}", leases.key(1), leases.RWH)
        assert lease[1] == leases.RH            # (never WRITE caching on a directory)


def test_directory_lease_broken_by_changes_through_another_worker(place):
    """A directory lease held through one worker is broken to none by each change a client of
    the other worker makes in the directory (a file made, data written and closed, the file
    deleted), with its epoch and an answer where it held HANDLE caching; a change below a
    subdirectory breaks nothing, as in one process. Fails where a worker's change reaches
    only its own directory leases."""
    a, b, _wa, _wb = place(lease_client(), lease_client())
    _d, lease = dirs.dir_lease(a, "d", leases.key(1), leases.RH, epoch=5)
    assert lease[1:] == (leases.RH, 0, 6)
    f, _ = b.open("d\\f", leases.key(2), leases.RWH)          # made
    dirs.expect_break(a, leases.key(1), leases.RH, 7)
    assert a.next_break(0.3) is None
    rearm = {"disposition": dirs.CreateDisposition.FILE_OPEN}
    assert dirs.dir_lease(a, "d", leases.key(1), leases.RH, **rearm)[1][1:] == (leases.RH, 0, 8)
    f.write(b"data", 0)
    assert a.next_break(0.5) is None            # (a listing's size and time settle at the close)
    f.close()
    dirs.expect_break(a, leases.key(1), leases.RH, 9)
    dirs.dir_lease(a, "d", leases.key(1), leases.RH, **rearm)
    b.open("d\\sub", None, directory=True, access=dirs.DIR_ACCESS)
    dirs.expect_break(a, leases.key(1), leases.RH, 11)
    dirs.dir_lease(a, "d", leases.key(1), leases.RH, **rearm)
    b.open("d\\sub\\deeper", None)                           # not in d's listing
    assert a.next_break(0.5) is None
    gone, _ = b.open("d\\f", None, access=leases.DELETE | leases.READ, options=dirs.CreateOptions.FILE_DELETE_ON_CLOSE,
                     disposition=dirs.CreateDisposition.FILE_OPEN)
    gone.close()
    dirs.expect_break(a, leases.key(1), leases.RH, 13)


def test_directory_lease_broken_by_another_programs_change_with_workers(place, server):
    """With several workers, the worker a directory lease is held through watches its
    directory: a file another program makes there breaks the lease, and another worker's
    client writing a file there breaks it only at its close, as in one process."""
    a, b, _wa, _wb = place(lease_client(), lease_client())
    d = server["share"] / "d"
    d.mkdir()
    _d, lease = dirs.dir_lease(a, "d", leases.key(1), leases.RH, disposition=dirs.CreateDisposition.FILE_OPEN)
    time.sleep(0.1)         # (the watch is made on the worker's next turn of its loop)
    (d / "theirs").write_bytes(b"x")
    dirs.expect_break(a, leases.key(1), leases.RH, lease[3] + 1)
    _d, lease = dirs.dir_lease(a, "d", leases.key(1), leases.RH, disposition=dirs.CreateDisposition.FILE_OPEN)
    f, _ = b.open("d\\f", None)
    dirs.expect_break(a, leases.key(1), leases.RH, lease[3] + 1)
    _d, lease = dirs.dir_lease(a, "d", leases.key(1), leases.RH, disposition=dirs.CreateDisposition.FILE_OPEN)
    time.sleep(0.1)
    f.write(b"data", 0)
    assert a.next_break(0.5) is None
    f.close()
    dirs.expect_break(a, leases.key(1), leases.RH, lease[3] + 1)


def test_a_directory_renamed_through_another_worker_keeps_its_lease_watched(place, server):
    """A leased directory renamed through another worker than the lease's: the rename takes
    the lease's HANDLE caching and the lease keeps R, as in one process; its worker gives
    its open the new name and watches the directory under it, so a file another program
    makes there later breaks the lease. Fails on a server whose worker took the rename for
    another program's (the lease broken to none at once), or kept watching the directory
    under its old name (the later change unseen)."""
    a, b, _wa, _wb = place(lease_client(), lease_client())
    (server["share"] / "d").mkdir()
    _d, lease = dirs.dir_lease(b, "d", leases.key(2), leases.RH, disposition=dirs.CreateDisposition.FILE_OPEN)
    time.sleep(0.2)         # (the watch is made on the worker's next turn of its loop)
    mover, _ = a.open("d", access=leases.READ | leases.DELETE, directory=True,
                      disposition=dirs.CreateDisposition.FILE_OPEN)
    request = renames.set_info(a, mover, renames.FileInformationClass.FILE_RENAME_INFORMATION,
                               renames.rename_info("e"))
    br = b.next_break()
    assert (br.key, br.old, br.new) == (leases.key(2), leases.RH, leases.R)
    assert b.ack(leases.key(2), leases.R) == leases.R
    assert renames.answer(a, request) == 0
    assert b.next_break(1.0) is None, "the rename was taken for another program's"
    (server["share"] / "e" / "theirs").write_bytes(b"x")
    br = b.next_break()
    assert br is not None, "a change in the renamed directory was not seen"
    assert (br.key, br.old, br.new) == (leases.key(2), leases.R, 0)


def _kernel_watches(pid: int) -> int:
    """The inotify watches the process holds (its inotify descriptors' fdinfo)."""
    held = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:inotify":
                with open(f"/proc/{pid}/fdinfo/{fd}") as info:
                    held += sum(line.startswith("inotify wd:") for line in info)
        except OSError:
            pass
    return held


def test_a_directory_leases_watch_ends_with_its_open_with_workers(server):
    """The worker a directory lease is held through watches the directory while the lease's
    open lasts, and no longer: fails on a server whose workers kept watching every
    directory ever leased through them (the kernel's watches, and the names, held until a
    restart; past half the watch bound every new directory lease was broken at once)."""
    a = leases.Client(server["port"])
    try:
        a.open("probe")
        pid = pid_of(server, worker_holding(server, "probe"))
        before = _kernel_watches(pid)
        for i in range(5):
            (server["share"] / f"d{i}").mkdir()
            d, _lease = dirs.dir_lease(a, f"d{i}", leases.key(i + 1), leases.RH,
                                       disposition=dirs.CreateDisposition.FILE_OPEN)
            time.sleep(0.2)         # (the watch is made on the worker's next turn of its loop)
            assert _kernel_watches(pid) > before        # (watched while leased)
            d.close()
        deadline = time.monotonic() + 5     # (watches no longer needed go at the next tick)
        while _kernel_watches(pid) > before and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _kernel_watches(pid) == before
    finally:
        a.close()


def test_read_only_directory_lease_told_through_another_worker(place):
    a, b, _wa, _wb = place(lease_client(), lease_client())
    dirs.dir_lease(a, "d", leases.key(1), leases.R)
    b.open("d\\f", None)
    assert dirs.expect_break(a, leases.key(1), leases.R, 2).flags == 0


def test_parent_lease_key_spares_only_its_own_clients_changes(place):
    """The holder's own change under a lease naming the directory's as its ParentLeaseKey
    breaks nothing; the other worker's client naming that key breaks it all the same."""
    a, b, _wa, _wb = place(lease_client(), lease_client())
    dirs.dir_lease(a, "d", leases.key(1), leases.RH)
    f, lease = a.open("d\\f", leases.key(2), leases.RWH, v2=True, parent=leases.key(1))
    assert lease[1:3] == (leases.RWH, 0x04)
    f.write(b"data", 0)
    f.close()
    assert a.next_break(0.5) is None
    b.open("d\\g", leases.key(3), leases.RWH, v2=True, parent=leases.key(1))
    dirs.expect_break(a, leases.key(1), leases.RH, 2)


def test_parent_lease_key_spares_its_lease_though_another_worker_watches_the_directory(place):
    """A change made under a lease naming the directory's as its ParentLeaseKey spares that
    lease also where another worker watches the directory for a lease of its own, and so
    sees the change as the kernel reports it: that worker's lease is broken, once, and the
    spared one is not, as in one process. Fails on a server whose other worker takes the
    change for another program's (every lease on the directory broken, the spared one too)."""
    a, b, _wa, _wb = place(lease_client(), lease_client())
    dirs.dir_lease(a, "d", leases.key(1), leases.RH)
    _d, watched = dirs.dir_lease(b, "d", leases.key(5), leases.RH, disposition=dirs.CreateDisposition.FILE_OPEN)
    time.sleep(0.2)         # (b's worker watches the directory from its loop's next turn)
    for name in ("f", "g"):
        f, lease = a.open(f"d\\{name}", leases.key(2), leases.RWH, v2=True, parent=leases.key(1))
        assert lease[1:3] == (leases.RWH, 0x04)
        f.write(b"data", 0)
        f.close()
    dirs.expect_break(b, leases.key(5), leases.RH, watched[3] + 1)
    assert b.next_break(0.5) is None
    assert a.next_break(1.0) is None, "the lease the changes were made under was broken"


def test_directory_lease_of_a_killed_worker_leaves_no_index_entry(tmp_path):
    """A dead worker's leases go from the store with its opens (the supervisor's cleanup),
    and so does its directory leases' index (else every change in any directory would look
    for leases to break for ever)."""
    from smbring.server.shared_store import FILE, OWNER, Store, remove_worker
    directory = str(tmp_path / "store")
    os.mkdir(directory, 0o700)
    store = Store(directory, 2)
    ident = bytes(range(32))
    with store.write() as txn:
        txn.put(FILE.pack(5, 6) + OWNER.pack(2, 9), bytes(12) + b"\x01" + ident + bytes(8),
                db=store.db[b"oplocks"])      # (worker 2's open holding the lease)
        txn.put(ident, b"record", db=store.db[b"leases"])
        txn.put(FILE.pack(5, 6) + ident, b"", db=store.db[b"dleases"])
    store.close()
    remove_worker(directory, 2)
    store = Store(directory, 1)
    with store.read() as txn:
        assert txn.get(ident, db=store.db[b"leases"]) is None
        assert not txn.cursor(store.db[b"dleases"]).first()
    store.close()


# -- (2) a holder that never answers --------------------------------------------------------
def test_silent_holder_on_another_worker_times_out(place):
    a, b, _wa, _wb = place(oplock_client, oplock_client)
    held = a.open("f", oplocks.BATCH)
    opener = Background(lambda: b.open("f", oplocks.BATCH))
    assert a.next_break() is not None           # told, never answers
    assert opener.wait(BREAK_TIMEOUT + 10).oplock_level == oplocks.II
    assert BREAK_TIMEOUT - 0.5 <= opener.elapsed < BREAK_TIMEOUT + 5
    assert oplocks.status_of(lambda: a.ack(held, oplocks.II)) == oplocks.STATUS_INVALID_OPLOCK_PROTOCOL


def test_silent_lease_holder_on_another_worker_times_out(place):
    a, b, _wa, _wb = place(lease_client(), lease_client())
    a.open("f", leases.key(1), leases.RWH)
    opener = Background(lambda: b.open("f", leases.key(2), leases.RWH))
    assert a.next_break() is not None
    _o, lease = opener.wait(BREAK_TIMEOUT + 10)
    assert BREAK_TIMEOUT - 0.5 <= opener.elapsed < BREAK_TIMEOUT + 5
    assert lease[1] == leases.RH
    assert oplocks.status_of(lambda: a.ack(leases.key(1), leases.RH)) == leases.STATUS_UNSUCCESSFUL


# -- (3) the holder's worker dies -------------------------------------------------------------
def test_holder_worker_killed_lets_the_opener_go(place, server):
    a, b, wa, _wb = place(oplock_client, oplock_client)
    a.open("f", oplocks.BATCH)
    opener = Background(lambda: b.open("f", oplocks.BATCH))
    assert a.next_break() is not None
    os.kill(pid_of(server, wa), signal.SIGKILL)
    assert opener.wait(BREAK_TIMEOUT - 0.5).oplock_level == oplocks.BATCH     # alone now
    assert opener.elapsed < BREAK_TIMEOUT - 0.5       # not the timeout: the death let it go


def test_lease_holder_worker_killed_lets_the_opener_go(place, server):
    a, b, wa, _wb = place(lease_client(), lease_client())
    a.open("f", leases.key(1), leases.RWH)
    opener = Background(lambda: b.open("f", leases.key(2), leases.RWH))
    assert a.next_break() is not None
    os.kill(pid_of(server, wa), signal.SIGKILL)
    _o, lease = opener.wait(BREAK_TIMEOUT - 0.5)
    assert lease[1] == leases.RWH


# -- (4) the wake-up sockets ------------------------------------------------------------------
def wake_sockets(server) -> list[str]:
    stores = [p for p in server["run"].iterdir() if p.name.startswith("store-")]
    assert len(stores) == 1
    return sorted(str(p) for p in stores[0].iterdir() if p.name.startswith("wake-"))


def test_a_delete_on_close_after_a_rename_whose_hint_was_lost_removes_the_renamed_file(place, server):
    """A file open through one worker is renamed through the other while the first worker's
    wake-up socket is full, so the hint is dropped: a delete on close through the first
    open still removes the file under its new name (the close catches up with the store's
    renames). Fails on a server that relies on the hint alone (the file stayed)."""
    a, b, wa, _wb = place(lease_client(), lease_client())
    share = server["share"]
    (share / "first.txt").write_bytes(b"x")
    kept, _ = a.open("first.txt", None, access=leases.READ | leases.DELETE,
                     disposition=dirs.CreateDisposition.FILE_OPEN)
    moving, _ = b.open("first.txt", None, access=leases.READ | leases.DELETE,
                       disposition=dirs.CreateDisposition.FILE_OPEN)
    pid = pid_of(server, wa)
    os.kill(pid, signal.SIGSTOP)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.setblocking(False)
            target = [p for p in wake_sockets(server) if p.endswith(f"wake-{wa}")][0]
            for _ in range(100000):         # (its queue full: the rename's hint is dropped)
                try:
                    s.sendto(b"x", target)
                except BlockingIOError:
                    break
            else:
                pytest.fail("the wake-up socket's queue never filled")
        request = renames.set_info(b, moving, renames.FileInformationClass.FILE_RENAME_INFORMATION,
                                   renames.rename_info("second.txt"))
        assert renames.answer(b, request) == 0
    finally:
        os.kill(pid, signal.SIGCONT)
    moving.close()
    assert renames.answer(a, renames.set_info(a, kept, 13, b"\x01")) == 0    # delete on close
    kept.close()
    assert sorted(p.name for p in share.iterdir() if not p.name.startswith("probe")) == []


def test_wake_sockets_are_private(server):
    paths = wake_sockets(server)
    assert [os.path.basename(p) for p in paths] == ["wake-1", "wake-2"]
    for path in paths:
        st = os.lstat(path)
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
        assert st.st_uid == os.geteuid()
        assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700


def test_garbage_on_the_wake_sockets_changes_nothing(place, server):
    a, b, wa, wb = place(oplock_client, oplock_client)
    held = a.open("f", oplocks.BATCH)
    pids = {w["worker"]: w["pid"] for w in status_of(server)["workers"]}
    garbage = [b"", b"x", b"\0" * 4096, os.urandom(wakeups.MAX_MESSAGE), wakeups.MAGIC,
               wakeups.MAGIC + bytes([99]) + bytes(30),
               wakeups.MAGIC + bytes([wakeups.OPLOCK_BREAK]) + bytes(24),         # short
               wakeups.MAGIC + bytes([wakeups.OPLOCK_BREAK]) + bytes(25) + b"\7",  # level 7
               wakeups.MAGIC + bytes([wakeups.LEASE_BREAK]) + bytes(52) + b"\xff" * 1]
    # well-formed but naming nothing true: an open id no worker has, a lease nobody holds,
    # a break the store does not record
    forged = [wakeups.Message(wakeups.OPLOCK_BREAK, file=(1, 2), open_id=12345, level=0),
              wakeups.Message(wakeups.LEASE_BREAK, file=(1, 2), client_guid=bytes(16),
                              lease_key=bytes(16), old=7, new=3, ack=True),
              wakeups.Message(wakeups.WAKE, file=(0, 0)), wakeups.Message(wakeups.WAKE_ALL),
              wakeups.Message(wakeups.DELETE_PENDING, file=(1, 2)),
              wakeups.Message(wakeups.RENAMED, file=(1, 2))]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        for path in wake_sockets(server):
            for _ in range(20):
                for data in garbage:
                    s.sendto(data, path)
            for m in forged:
                s.sendto(wakeups.encode(m), path)
    # nobody was told to break, nothing died, and breaks still work both ways
    assert a.next_break(0.5) is None
    assert {w["worker"]: w["pid"] for w in status_of(server)["workers"]} == pids
    opener = Background(lambda: b.open("f", oplocks.BATCH))
    assert a.next_break()[0] == oplocks.II
    assert a.ack(held, oplocks.II) == oplocks.II
    assert opener.wait().oplock_level == oplocks.II
    assert "malformed messages dropped" in server["log"].read_text()


def test_wake_messages_are_checked():
    assert wakeups.decode(b"") is None
    ok = wakeups.Message(wakeups.LEASE_BREAK, file=(1, 2), client_guid=b"g" * 16, lease_key=b"k" * 16,
                         old=7, new=3, ack=True, epoch=5)
    assert wakeups.decode(wakeups.encode(ok)) == ok
    data = wakeups.encode(ok)
    assert wakeups.decode(data + b"\0") is None and wakeups.decode(data[:-1]) is None
    # a break that raises the state, or unknown bits, or the same state: dropped
    for old, new in ((3, 7), (0x17, 3), (3, 3)):
        bad = bytearray(data)
        bad[-5], bad[-4] = old, new
        assert wakeups.decode(bytes(bad)) is None
    bad = bytearray(data)
    bad[-3] = 2                 # ack is 0 or 1
    assert wakeups.decode(bytes(bad)) is None
    assert struct.unpack(">4sB", data[:5]) == (wakeups.MAGIC, wakeups.LEASE_BREAK)
    pending = wakeups.Message(wakeups.DELETE_PENDING, file=(3, 4))
    assert wakeups.decode(wakeups.encode(pending)) == pending
    assert wakeups.decode(wakeups.encode(pending)[:-1]) is None


@pytest.fixture
def two_oplocks(tmp_path):
    """Two workers' SharedOplocks over one store in this process, on a clock the test moves:
    (worker 1's, worker 2's, the clock's [now])."""
    import asyncio
    import copy

    from smbring.server import shared_store
    from smbring.server.shared_oplocks import SharedOplocks
    from smbring.server.shared_store import Store
    directory = str(tmp_path / "store")
    os.mkdir(directory, 0o700)
    loop = asyncio.new_event_loop()
    now = [1000.0]
    store1 = Store(directory, 1)
    store2 = copy.copy(store1)      # (one environment per process: worker 2's view of it)
    store2.worker, store2._in_progress = 2, shared_store._InProgress(store2)
    channel1, channel2 = wakeups.Channel(directory, 1), wakeups.Channel(directory, 2)
    one = SharedOplocks(store1, channel1, lambda: loop, clock=lambda: now[0])
    two = SharedOplocks(store2, channel2, lambda: loop, clock=lambda: now[0])
    yield one, two, now
    channel1.close()
    channel2.close()
    store1.close()
    loop.close()


def test_every_workers_directory_leases_broken_when_the_directory_is_gone(two_oplocks):
    """A change whose directory cannot be found breaks every directory lease: those held
    through another worker too (told to it by a hint on its wake-up socket), and the index
    says whether any is held, to every worker, until the last one's open closes."""
    from smbring.smb.state import Open
    one, two, _now = two_oplocks
    channel1 = one.channel
    d = Open(fd=-1, parts=["d"], is_dir=True, access=leases.READ, key=(7, 8))
    f = Open(fd=-1, parts=["f"], is_dir=False, access=leases.READ, key=(7, 9))
    assert not two.directory_leases()
    one.add(f, leases.READ)
    one.grant_lease(f, bytes(16), leases.key(2), leases.RH, version=2)
    assert not two.directory_leases()           # (a file's lease is not indexed)
    one.add(d, leases.READ)
    lease = one.grant_lease(d, bytes(16), leases.key(1), leases.RWH, version=2)
    assert lease.directory and lease.state == leases.RH
    assert two.directory_leases()
    told = []
    channel1.sock.setblocking(False)
    two.break_all_directories()
    for _ in range(50):
        try:
            told.append(wakeups.decode(channel1.sock.recv(wakeups.MAX_MESSAGE + 1)))
        except BlockingIOError:
            if told:
                break
            time.sleep(0.02)
    assert [(m.kind, m.lease_key, m.old, m.new, m.ack) for m in told] == \
        [(wakeups.LEASE_BREAK, leases.key(1), leases.RH, 0, True)]
    one.remove(d)
    assert not two.directory_leases() and not one.directory_leases()
    one.remove(f)


def test_a_workers_change_is_recorded_for_the_others_for_a_while(two_oplocks):
    """A worker's change of an entry of a leased directory is recorded in the store: another
    worker that sees it through the kernel breaks nothing for it for CHANGE_WINDOW seconds
    (the changing worker broke what it had to), and after that takes a change of that entry
    for another program's; the records older than the window go as new ones are made, so
    the table holds a few seconds' changes. Fails where a change reaches only one worker's
    memory (the other breaks the lease it was made under), or where records are kept for
    ever."""
    from smbring.server.shared_oplocks import CHANGE_WINDOW
    from smbring.smb.state import Open
    one, two, now = two_oplocks

    def held(lease) -> int:
        return one.lease(lease.client_guid, lease.key).state

    def breaking() -> bool:
        return one.lease(bytes(16), leases.key(1)).breaking

    def records() -> int:
        with one.store.read() as txn:
            return sum(1 for _ in txn.cursor(one.changes_db))
    d = Open(fd=-1, parts=["d"], is_dir=True, access=leases.READ, key=(7, 8))
    one.add(d, leases.READ)
    lease = one.grant_lease(d, bytes(16), leases.key(1), leases.RH, version=2)
    two.break_directory((7, 8), (bytes(16), leases.key(1)), "f")    # made under that lease
    assert held(lease) == leases.RH and records() == 1
    now[0] += CHANGE_WINDOW / 2
    one.outside_change((7, 8), "f")         # the kernel's word of worker 2's change
    assert held(lease) == leases.RH
    one.outside_change((7, 8), "g")         # another name: another program's change
    assert breaking()
    one.remove(d)
    one.add(d, leases.READ)
    lease = one.grant_lease(d, bytes(16), leases.key(1), leases.RH, version=2)
    now[0] += CHANGE_WINDOW
    one.outside_change((7, 8), "f")         # long after: another program's
    assert breaking()
    one.remove(d)
    one.add(d, leases.READ)
    one.grant_lease(d, bytes(16), leases.key(1), leases.RH, version=2)
    for i in range(100):
        two.break_directory((7, 8), (bytes(16), leases.key(1)), f"n{i}")
    assert records() == 100                 # ("f", older than the window, went)
    now[0] += CHANGE_WINDOW * 2
    two.break_directory((7, 8), (bytes(16), leases.key(1)), "last")
    assert records() == 1
    one.remove(d)


def test_a_change_seen_before_a_directory_lease_was_granted_does_not_break_it(two_oplocks):
    """With several workers a change another program made in a leased directory is judged a
    moment after the kernel told of it (it may be another worker's). A lease granted in that
    moment, through either worker, was granted with the change made (what its client lists
    shows it) and is not broken for it; one granted before the change was seen is. The grant
    time travels in the store: worker 2 judges a lease held through worker 1. Fails where
    the judgement breaks every lease of the directory."""
    from smbring.server.change_watcher import LATE
    from smbring.smb.state import Open
    one, two, now = two_oplocks
    d = Open(fd=-1, parts=["d"], is_dir=True, access=leases.READ, key=(7, 8))
    one.add(d, leases.READ)
    seen_before = now[0]
    now[0] += LATE / 2
    lease = one.grant_lease(d, bytes(16), leases.key(1), leases.RH, version=2)
    now[0] += LATE
    two.outside_change((7, 8), "made-before", seen_before)
    assert one.lease(bytes(16), leases.key(1)).state == leases.RH
    assert not one.lease(bytes(16), leases.key(1)).breaking
    two.outside_change((7, 8), "made-after", now[0])
    assert one.lease(bytes(16), leases.key(1)).breaking
    assert lease.directory
    one.remove(d)
