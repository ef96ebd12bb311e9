"""A detached durable open and a conflicting CREATE on another worker of ``smbring serve
--workers 2``, compared with the same sequence in one process.

One process closes a file's detached durable opens (their connection lost, kept for a
reconnect) before a CREATE that reads, writes or deletes the file: nobody could answer their
break. With workers, the CREATE may be served by another worker than the open's: it asks that
worker to close the open (server.shared_oplocks) and goes on within a second or so, not after
the 35 s break timeout; the client's reconnect then finds nothing (OBJECT_NAME_NOT_FOUND),
as in one process. An attribute-only open leaves it, an attached durable open is broken (not
closed) as usual, and a forged request to close an open is only a hint: the open's worker
closes nothing that is attached or that no CREATE of another worker waits for.

Placing the second client on the other worker: the first client's worker is stopped (SIGSTOP)
while it connects (test_workers_handoff.connect_while_stopped)."""
from __future__ import annotations

import os
import signal
import socket
import struct
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "security"))
import test_workers_handoff as workers  # noqa: E402
from servers import stop  # noqa: E402
from worker_servers import pid_of  # noqa: E402
from worker_servers import start as start_workers  # noqa: E402
from smbcore import create_body, read_body  # noqa: E402
from smbcore import create_contexts_of as contexts_of  # noqa: E402
from smbcore import oplock_level_of as oplock_of  # noqa: E402

from smbring.server import wakeups  # noqa: E402
from smbring.smb import wire  # noqa: E402

BATCH, LEVEL_II, LEASE, NO_OPLOCK = 0x09, 0x01, 0xFF, 0x00
R, H, W = 0x1, 0x2, 0x4
READ_WRITE = 0x0012019F
READ = 0x00120089
READ_ATTRIBUTES = 0x80
SHARE_ALL, SHARE_NONE = 7, 0
BREAK_ID = 0xFFFFFFFFFFFFFFFF
PROMPTLY = 3.0          # seconds: well under the break timeout (35 s)


@pytest.fixture(params=[1, 2], ids=["one-process", "two-workers"])
def server(request, tmp_path):
    server = start_workers(tmp_path, request.param)
    yield server
    stop(server["proc"])


def two_workers(server) -> bool:
    return server["workers"] == 2


class Client:
    """A raw client with its own ClientGuid, one session and a tree of the share."""

    def __init__(self, server, guid: bytes | None = None, avoid: int | None = None):
        """`avoid`: a worker this client's connection must not be served by."""
        self.guid = guid or os.urandom(16)
        port = server["port"]
        if avoid is not None and two_workers(server):
            self.raw = workers.connect_while_stopped(server, avoid,
                                                     lambda: workers.connect(port, self.guid))
        else:
            self.raw = workers.connect(port, self.guid)
        self.tree = workers.logged_on(self.raw)
        self.worker = workers.worker_of(server, self.raw) if two_workers(server) else None
        if avoid is not None and two_workers(server):
            assert self.worker != avoid

    def create(self, name: str, *, access: int = READ_WRITE, share_access: int = SHARE_ALL,
               oplock: int = NO_OPLOCK, contexts=(), disposition: int = wire.FILE_OPEN_IF):
        """The CREATE's final answer (after STATUS_PENDING, where it was held)."""
        r = self.tree.request(wire.CREATE, create_body(name, access, disposition, 0,
                                                       share_access=share_access,
                                                       contexts=list(contexts), oplock=oplock))
        self.raw.sock.settimeout(60)        # (a CREATE held for the 35 s break timeout too)
        try:
            while r.status == wire.STATUS_PENDING:
                r = self.raw.response_to(r.header.message_id)
        finally:
            self.raw.sock.settimeout(10)
        return r

    def next_break(self, wait: float) -> bytes | None:
        """The body of the next break notification within `wait` seconds."""
        deadline = time.monotonic() + wait
        for i, r in enumerate(self.raw.stray):
            if r.header.message_id == BREAK_ID:
                return self.raw.stray.pop(i).body
        try:
            while time.monotonic() < deadline:
                self.raw.sock.settimeout(max(deadline - time.monotonic(), 0.05))
                try:
                    frame = self.raw.recv_frame()
                except Exception:
                    return None
                for r in self.raw.parse(frame):
                    if r.header.message_id == BREAK_ID and r.header.command == wire.OPLOCK_BREAK:
                        return r.body
                    self.raw.stray.append(r)
            return None
        finally:
            self.raw.sock.settimeout(10)

    def close(self) -> None:
        self.raw.close()


def dhnq():
    return (b"DHnQ", b"\0" * 16)


def dhnc(fid: bytes):
    return (b"DHnC", fid)


def lease(key: bytes, state: int):
    return (b"RqLs", struct.pack("<16sIIQ", key, state, 0, 0))


def durable_open(client: Client, name: str, kind: str, share_access: int = SHARE_ALL,
                 access: int = READ_WRITE):
    """A durable open: "dh2q-lease" (DH2Q with a lease, RWH or RH by access), or "dhnq-batch"
    (DHnQ with a batch oplock). Returns (FileId, the CREATE that reclaims it: name, oplock,
    contexts; a lease's reconnect names the file and the lease)."""
    if kind == "dhnq-batch":
        r = client.create(name, oplock=BATCH, contexts=[dhnq()], share_access=share_access,
                          access=access)
        assert r.status == wire.STATUS_SUCCESS and oplock_of(r) == BATCH and b"DHnQ" in contexts_of(r), r
        return r.file_id, ("__ignored__", BATCH, [dhnc(r.file_id)])
    create_guid, key = os.urandom(16), os.urandom(16)
    state = R | W | H if access != READ else R | H
    r = client.create(name, oplock=LEASE, contexts=[workers.dh2q(create_guid), lease(key, state)],
                      share_access=share_access, access=access)
    assert r.status == wire.STATUS_SUCCESS and oplock_of(r) == LEASE and b"DH2Q" in contexts_of(r), r
    return r.file_id, (name, LEASE, [workers.dh2c(r.file_id, create_guid), lease(key, state)])


def reclaim(server, guid: bytes, reclaimer, wait: float = 3.0):
    """A reconnect of the client `guid` (a new connection: served by the open's worker) naming
    the durable open; retried briefly where it may not be detached yet. Its connection is
    closed once answered: a reclaimed open is detached again at once (see `reclaim_on` to
    look at it while reclaimed)."""
    c = Client(server, guid=guid)
    try:
        return reclaim_on(c, reclaimer, wait)
    finally:
        c.close()


def reclaim_on(c: Client, reclaimer, wait: float = 3.0):
    """The reconnect of `reclaim`, through the client `c`, whose connection stays."""
    name, oplock, contexts = reclaimer
    deadline = time.monotonic() + wait
    while True:
        r = c.create(name, oplock=oplock, contexts=contexts, disposition=wire.FILE_OPEN)
        if r.status != wire.STATUS_OBJECT_NAME_NOT_FOUND or time.monotonic() > deadline:
            return r
        time.sleep(0.1)


def handle_works(client: Client, fid: bytes) -> bool:
    """A READ through the handle is served (the file is empty: the end of file)."""
    return client.tree.request(wire.READ, read_body(fid, 10)).status == wire.STATUS_END_OF_FILE


def lose(client: Client) -> None:
    """The client's connection is lost (no CLOSE, no LOGOFF): its durable open is detached."""
    client.close()
    time.sleep(0.5)


# -- a conflicting open ---------------------------------------------------------------------------
@pytest.mark.parametrize("kind,share_access", [("dh2q-lease", SHARE_ALL), ("dh2q-lease", SHARE_NONE),
                                               ("dhnq-batch", SHARE_ALL), ("dhnq-batch", SHARE_NONE)])
def test_a_conflicting_open_closes_the_detached_open_at_once(server, kind, share_access):
    holder = Client(server)
    _fid, reclaimer = durable_open(holder, "contested", kind, share_access)
    lose(holder)
    other = Client(server, avoid=holder.worker)
    started = time.monotonic()
    r = other.create("contested", share_access=SHARE_NONE, oplock=BATCH, disposition=wire.FILE_OPEN)
    elapsed = time.monotonic() - started
    assert r.status == wire.STATUS_SUCCESS, r
    assert oplock_of(r) == BATCH            # alone on the file: the detached open is gone
    assert elapsed < PROMPTLY, elapsed
    assert reclaim(server, holder.guid, reclaimer, wait=0).status == wire.STATUS_OBJECT_NAME_NOT_FOUND
    other.close()


def test_a_reader_closes_a_detached_open_it_breaks_nothing_of(server):
    """An RH lease and a reader sharing everything: no break is due, and still one process
    closes the detached open (any open that reads, writes or deletes does); so do workers."""
    holder = Client(server)
    _fid, reclaimer = durable_open(holder, "shared", "dh2q-lease", SHARE_ALL, access=READ)
    lose(holder)
    other = Client(server, avoid=holder.worker)
    started = time.monotonic()
    r = other.create("shared", access=READ, disposition=wire.FILE_OPEN)
    assert r.status == wire.STATUS_SUCCESS, r
    assert time.monotonic() - started < PROMPTLY
    assert reclaim(server, holder.guid, reclaimer, wait=0).status == wire.STATUS_OBJECT_NAME_NOT_FOUND
    other.close()


@pytest.mark.parametrize("kind", ["dh2q-lease", "dhnq-batch"])
def test_an_attribute_only_open_leaves_it(server, kind):
    """(And the reconnects the other tests make find the open where nothing closed it.)"""
    holder = Client(server)
    _fid, reclaimer = durable_open(holder, "quiet", kind, SHARE_NONE)
    lose(holder)
    other = Client(server, avoid=holder.worker)
    r = other.create("quiet", access=READ_ATTRIBUTES, disposition=wire.FILE_OPEN)
    assert r.status == wire.STATUS_SUCCESS, r
    assert reclaim(server, holder.guid, reclaimer).status == wire.STATUS_SUCCESS
    other.close()


def test_an_attached_durable_open_is_broken_not_closed(server):
    """Its client is there: it is told to break, answers, and keeps its open; the other
    CREATE then meets its share mode."""
    holder = Client(server)
    fid, _ = durable_open(holder, "attached", "dhnq-batch", SHARE_NONE)
    other = Client(server, avoid=holder.worker)
    r = other.tree.request(wire.CREATE, create_body("attached", READ_WRITE, wire.FILE_OPEN, 0,
                                                    share_access=SHARE_ALL, oplock=BATCH))
    assert r.status == wire.STATUS_PENDING, r
    body = holder.next_break(5)
    assert body is not None
    level, broken_fid = body[2], body[8:24]
    assert (level, broken_fid) == (LEVEL_II, fid)
    ack = holder.tree.request(wire.OPLOCK_BREAK, struct.pack("<HBBI16s", 24, LEVEL_II, 0, 0, fid))
    assert ack.status == wire.STATUS_SUCCESS, ack
    r = other.raw.response_to(r.header.message_id)
    assert r.status == wire.STATUS_SHARING_VIOLATION, r
    assert handle_works(holder, fid)
    holder.close()
    other.close()


# -- a reconnect that overtakes the end of its old connection ------------------------------------
def test_a_reconnect_that_overtakes_the_old_connections_end_waits_for_it(server):
    """A client's new connection reconnects (a new ClientGuid: on the other worker) while its
    old one is still open, and the old one then ends (as when the client closed it just
    before: two processes see the two events in no set order). The reconnect waits for the
    end and gets its open, as one process lets it (it holds the reconnect for up to 2 s):
    smbtorture's smb2.durable-open.reopen2 reconnects so. Before, another worker answered
    OBJECT_NAME_NOT_FOUND at once and the open was lost to its client."""
    import threading
    holder = Client(server)
    fid, (name, oplock, contexts) = durable_open(holder, "overtaken", "dhnq-batch")
    again = Client(server, avoid=holder.worker)
    ending = threading.Timer(0.4, holder.close)
    ending.start()
    started = time.monotonic()
    r = again.create(name, oplock=oplock, contexts=contexts, disposition=wire.FILE_OPEN)
    waited = time.monotonic() - started
    ending.join()
    assert r.status == wire.STATUS_SUCCESS, r
    assert r.file_id[:8] == fid[:8]                 # the same open (its persistent FileId)
    assert 0.3 < waited < PROMPTLY, waited
    assert handle_works(again, r.file_id)
    again.close()


def test_a_reconnect_beside_a_live_connection_finds_nothing_in_bounded_time(server):
    """The old connection stays: the reconnect is answered OBJECT_NAME_NOT_FOUND after the
    wait (at most a few seconds), and the open stays with its connection, working."""
    holder = Client(server)
    fid, reclaimer = durable_open(holder, "still-held", "dhnq-batch")
    again = Client(server, avoid=holder.worker)
    started = time.monotonic()
    r = reclaim_on(again, reclaimer, wait=0)
    assert r.status == wire.STATUS_OBJECT_NAME_NOT_FOUND, r
    assert time.monotonic() - started < PROMPTLY
    assert handle_works(holder, fid)
    again.close()
    holder.close()


def test_reconnects_repeated_at_a_held_open_keep_nobody_elses_from_their_open(server):
    """A client sends reconnect after reconnect (20 at once) naming its own durable open that
    is still attached on the other worker: one waits there for the open to be let go, the
    others find nothing at once, so they hold none of the hand-off slots every user shares,
    and another client's reconnect of its detached open on that worker still gets it."""
    if not two_workers(server):
        pytest.skip("the hand-off slots are between workers")
    holder = Client(server)
    fid, reclaimer = durable_open(holder, "held", "dhnq-batch")
    victim = Client(server, avoid=None if holder.worker is None else 3 - holder.worker)
    assert victim.worker == holder.worker
    _fid, victims_reclaimer = durable_open(victim, "lost", "dhnq-batch")
    lose(victim)
    flooder = Client(server, avoid=holder.worker)
    flooder.raw.grow_credits(64)
    _name, oplock, contexts = reclaimer
    sent = []
    for _ in range(20):
        msg = flooder.tree.message(wire.CREATE, create_body("__ignored__", READ_WRITE, wire.FILE_OPEN, 0,
                                                             share_access=SHARE_ALL, contexts=list(contexts),
                                                             oplock=oplock))
        flooder.raw.send([msg])
        sent.append(wire.Header.parse(msg).message_id)
    time.sleep(0.2)         # (the reconnects reach the holder's worker)
    started = time.monotonic()
    again = Client(server, avoid=holder.worker)     # (a new ClientGuid, as after a client restart)
    r = reclaim_on(again, victims_reclaimer, wait=0)
    assert r.status == wire.STATUS_SUCCESS, r
    assert time.monotonic() - started < PROMPTLY
    flooder.raw.sock.settimeout(10)
    for mid in sent:
        answer = flooder.raw.response_to(mid)
        while answer.status == wire.STATUS_PENDING:
            answer = flooder.raw.response_to(mid)
        assert answer.status == wire.STATUS_OBJECT_NAME_NOT_FOUND, answer
    assert handle_works(holder, fid)
    for c in (again, flooder, holder):
        c.close()


# -- hints are only hints ---------------------------------------------------------------------------
def holder_records(server, key) -> list[tuple[int, int, int]]:
    """The store's records of the file `key`'s opens: (worker, open id, flags)."""
    import lmdb
    from smbring.server.shared_store import DATABASES
    env = lmdb.open(workers.store_directory(server), readonly=True, max_dbs=len(DATABASES),
                    create=False)
    try:
        db = env.open_db(b"oplocks", create=False)
        file = struct.pack(">QQ", *key)
        with env.begin() as txn:
            return [(*struct.unpack(">HQ", bytes(k[16:])), bytes(v)[0])
                    for k, v in txn.cursor(db) if bytes(k).startswith(file)]
    finally:
        env.close()


def detached_in_store(server, key, wait: float = 5.0) -> bool:
    """Whether the store's record of the file's one open comes to say detached within `wait`
    seconds (its worker marks it once it has read the end of the lost connection: not at a
    known moment after the client closed it)."""
    deadline = time.monotonic() + wait
    while True:
        ((_w, _id, flags),) = holder_records(server, key)
        if flags & 0x2:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


def forge_close(server, worker: int, key, open_id: int) -> None:
    path = wakeups.socket_path(workers.store_directory(server), worker)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(wakeups.encode(wakeups.Message(wakeups.CLOSE_DETACHED, file=tuple(key),
                                                open_id=open_id)), path)


def test_a_forged_close_request_closes_nothing(server):
    """The right file and open id, sent to the open's worker: while the open is attached,
    and while it is detached with no CREATE of another worker waiting, nothing is closed."""
    if not two_workers(server):
        pytest.skip("hints go between workers")
    holder = Client(server)
    fid, reclaimer = durable_open(holder, "forged", "dhnq-batch", SHARE_NONE)
    st = os.stat(server["share"] / "forged")
    key = (st.st_dev, st.st_ino)
    ((worker, open_id, flags),) = holder_records(server, key)
    assert worker == holder.worker and not flags & 0x2          # attached
    forge_close(server, worker, key, open_id)
    time.sleep(0.3)
    assert handle_works(holder, fid)
    holder.close()
    assert detached_in_store(server, key)                        # its connection lost
    for _ in range(3):
        forge_close(server, worker, key, open_id)
    forge_close(server, worker, key, open_id + 1)                # an open id nobody has
    forge_close(server, worker, (key[0], key[1] + 1), open_id)   # another file
    time.sleep(0.3)
    reclaimer_client = Client(server, guid=holder.guid)
    assert reclaim_on(reclaimer_client, reclaimer).status == wire.STATUS_SUCCESS
    # reclaimed: attached again, in the store too (looked at while its connection is there:
    # once that is closed too, the open is detached again)
    ((_w, _id, flags),) = holder_records(server, key)
    assert not flags & 0x2
    reclaimer_client.close()
    assert detached_in_store(server, key)


def test_the_store_says_attached_once_a_reconnect_is_answered(server):
    """Another worker decides from the store's record whether an open is detached (and may
    be closed for its CREATE): the record says attached before the reconnect's answer leaves,
    never after. Looked at right after each answer, many times over."""
    if not two_workers(server):
        pytest.skip("the store is what the workers share")
    holder = Client(server)
    _fid, reclaimer = durable_open(holder, "reclaimed", "dhnq-batch", SHARE_NONE)
    st = os.stat(server["share"] / "reclaimed")
    key = (st.st_dev, st.st_ino)
    guid = holder.guid
    holder.close()
    for attempt in range(20):
        assert detached_in_store(server, key), attempt
        c = Client(server, guid=guid)
        assert reclaim_on(c, reclaimer).status == wire.STATUS_SUCCESS, attempt
        ((_w, _id, flags),) = holder_records(server, key)
        assert not flags & 0x2, attempt
        c.close()


def test_close_requests_are_checked():
    m = wakeups.Message(wakeups.CLOSE_DETACHED, file=(1, 2), open_id=3)
    data = wakeups.encode(m)
    assert wakeups.decode(data) == m
    assert wakeups.decode(data + b"\0") is None and wakeups.decode(data[:-1]) is None


def test_a_stopped_worker_delays_the_create_it_does_not_block_it(tmp_path, monkeypatch):
    """The open's worker is stopped and cannot act on the request: the CREATE waits the break
    timeout (shortened here), then as for a holder that does not answer its break, and gets
    its answer (the share mode); the requests read late, once that worker goes on, close
    nothing (no CREATE waits any more): the client still reclaims its open."""
    timeout = 2.0
    monkeypatch.setenv("SMBRING_BREAK_TIMEOUT", str(timeout))
    server = start_workers(tmp_path)
    proc = server["proc"]
    try:
        holder = Client(server)
        _fid, reclaimer = durable_open(holder, "stopped", "dhnq-batch", SHARE_NONE)
        lose(holder)
        pid = pid_of(server, holder.worker)
        os.kill(pid, signal.SIGSTOP)
        try:
            other = Client(server)
            assert other.worker != holder.worker
            started = time.monotonic()
            r = other.create("stopped", share_access=SHARE_NONE, oplock=BATCH, disposition=wire.FILE_OPEN)
            elapsed = time.monotonic() - started
        finally:
            os.kill(pid, signal.SIGCONT)
        assert r.status == wire.STATUS_SHARING_VIOLATION, r
        assert timeout - 0.5 <= elapsed < 3 * timeout + 3, elapsed
        time.sleep(0.5)
        assert reclaim(server, holder.guid, reclaimer).status == wire.STATUS_SUCCESS
        other.close()
    finally:
        stop(proc)
