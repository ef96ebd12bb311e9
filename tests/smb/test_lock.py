"""LOCK through the sans-I/O connection (MS-SMB2 3.3.5.14): byte-range locks and unlocks,
conflicts, malformed requests, blocking locks that wait (on this connection or another of the
same server) and are answered later through the outbox, CANCEL, and the bounds on locks."""
import fcntl
import gc
import os
import struct

import pytest
from sansio_client import sent
from smbcore import SHORT_BODY, compound, lock_body

from smbring.smb import effects, posix_locks, wire
from smbring.smb.commands.lock import OFF_LOOP_STEPS
from smbring.smb.limits import Limits
from smbring.server.effects import DescriptorHolds, named_descriptors, range_operation
from smbring.smb.posix_locks import KernelLockCredit
from smbring.smb.server_state import ServerState

X, S, U, NOW = wire.LOCK_EXCLUSIVE, wire.LOCK_SHARED, wire.LOCK_UNLOCK, wire.LOCK_FAIL_IMMEDIATELY


@pytest.fixture
def share(share):
    """The share with the files these tests use."""
    (share / "f").write_bytes(b"x" * 100)
    return share


@pytest.fixture
def two(clients):
    """Two connections of one server, each with the file open."""
    state = ServerState()
    a, b = clients(state=state), clients(state=state)
    yield (a, a.open("f")), (b, b.open("f"))


def lock(client, fid, *elements, **header):
    """The answers to a LOCK: (header, body) each."""
    return client.exchange(client.message(wire.LOCK, lock_body(fid, list(elements)), **header))


def status(client, fid, *elements):
    [(header, _body)] = lock(client, fid, *elements)
    return header.status


def test_lock_and_unlock(client):
    fid = client.open("f")
    assert status(client, fid, (0, 10, X)) == 0
    assert status(client, fid, (0, 10, U)) == 0
    assert status(client, fid, (0, 10, U)) == wire.STATUS_RANGE_NOT_LOCKED


def test_unlock_needs_the_exact_range(client):
    fid = client.open("f")
    assert status(client, fid, (0, 10, X)) == 0
    assert status(client, fid, (0, 5, U)) == wire.STATUS_RANGE_NOT_LOCKED
    assert status(client, fid, (0, 11, U)) == wire.STATUS_RANGE_NOT_LOCKED


@pytest.mark.parametrize("held, asked, granted", [
    (X, X, False), (X, S, False), (S, X, False), (S, S, True),
])
def test_conflicts_between_opens(client, held, asked, granted):
    a, b = client.open("f"), client.open("f")
    assert status(client, a, (10, 10, held)) == 0
    assert status(client, b, (15, 10, asked | NOW)) == (0 if granted else wire.STATUS_LOCK_NOT_GRANTED)
    assert status(client, b, (20, 10, asked | NOW)) == 0        # beside it: no conflict
    assert status(client, b, (0, 10, asked | NOW)) == 0


def test_a_lock_of_another_open_is_not_unlocked(client):
    a, b = client.open("f"), client.open("f")
    assert status(client, a, (0, 10, X)) == 0
    assert status(client, b, (0, 10, U)) == wire.STATUS_RANGE_NOT_LOCKED
    assert status(client, b, (0, 10, X | NOW)) == wire.STATUS_LOCK_NOT_GRANTED


def test_a_request_of_several_locks_takes_all_or_none(client):
    a, b = client.open("f"), client.open("f")
    assert status(client, a, (50, 10, X)) == 0
    assert status(client, b, (0, 10, X | NOW), (50, 10, X | NOW)) == wire.STATUS_LOCK_NOT_GRANTED
    assert status(client, a, (0, 10, X | NOW)) == 0         # the first was not kept


def test_several_unlocks_stop_at_the_first_not_locked(client):
    fid = client.open("f")
    assert status(client, fid, (0, 10, X | NOW), (20, 10, X | NOW)) == 0
    assert status(client, fid, (0, 10, U), (40, 10, U), (20, 10, U)) == wire.STATUS_RANGE_NOT_LOCKED
    assert status(client, fid, (20, 10, U)) == 0             # the third was not reached
    assert status(client, fid, (0, 10, U)) == wire.STATUS_RANGE_NOT_LOCKED


@pytest.mark.parametrize("elements, expected", [
    ([], wire.STATUS_INVALID_PARAMETER),                            # LockCount 0
    ([(0, 10, 0)], wire.STATUS_INVALID_PARAMETER),                  # no flag
    ([(0, 10, X | S)], wire.STATUS_INVALID_PARAMETER),
    ([(0, 10, U | NOW)], wire.STATUS_INVALID_PARAMETER),
    ([(0, 10, X | NOW), (20, 10, U)], wire.STATUS_INVALID_PARAMETER),   # locks and unlocks mixed
    ([(0, 10, X), (20, 10, X)], wire.STATUS_INVALID_PARAMETER),     # several: each must fail at once
    ([(2 ** 64 - 1, 2, X)], wire.STATUS_INVALID_LOCK_RANGE),         # past the last byte
    ([(2 ** 64 - 1, 1, X)], 0),                                      # the last byte
    ([(5, 0, X)], 0),                                                # zero length
])
def test_malformed_requests(client, elements, expected):
    fid = client.open("f")
    assert status(client, fid, *elements) == expected


def test_an_unlock_request_stops_at_an_element_that_is_no_unlock(client):
    fid = client.open("f")
    assert status(client, fid, (0, 10, X | NOW), (20, 10, X | NOW)) == 0
    assert status(client, fid, (0, 10, U), (20, 10, X), (20, 10, U)) == wire.STATUS_INVALID_PARAMETER
    assert status(client, fid, (0, 10, U)) == wire.STATUS_RANGE_NOT_LOCKED   # the first was unlocked
    assert status(client, fid, (20, 10, U)) == 0                             # the third was not


def test_a_lock_count_past_the_message(client):
    fid = client.open("f")
    body = bytearray(lock_body(fid, [(0, 10, X)]))
    body[2] = 3                                                      # LockCount 3, one element sent
    assert client.request(wire.LOCK, bytes(body))[0] == wire.STATUS_INVALID_PARAMETER


def test_a_closed_open_drops_its_locks(client):
    a, b = client.open("f"), client.open("f")
    assert status(client, a, (0, 10, X)) == 0
    assert client.close(a) == 0
    assert status(client, b, (0, 10, X | NOW)) == 0


# -- blocking locks -------------------------------------------------------------------------------

def pending(client, fid, offset=0, length=10, flags=X):
    """A blocking lock that waits: its interim response's header."""
    [(interim, _)] = lock(client, fid, (offset, length, flags))
    assert interim.status == wire.STATUS_PENDING and interim.flags & wire.FLAGS_ASYNC and interim.async_id
    return interim


def test_a_blocking_lock_waits_and_is_granted_after_an_unlock_on_another_connection(two):
    (a, fa), (b, fb) = two
    assert status(a, fa, (0, 10, X)) == 0
    woken = []
    b.conn.on_output = lambda: woken.append(True)
    interim = pending(b, fb)
    assert b.outbox() == []
    assert status(a, fa, (0, 10, U)) == 0                   # on the other connection
    assert woken == [True]
    [(final, _body)] = sent(b.conn.outbox_drain())
    assert final.status == wire.STATUS_SUCCESS and final.async_id == interim.async_id
    assert final.message_id == interim.message_id and final.flags & wire.FLAGS_ASYNC
    assert status(a, fa, (0, 10, X | NOW)) == wire.STATUS_LOCK_NOT_GRANTED   # b holds it now


def test_a_blocking_lock_is_granted_when_the_holder_closes(two):
    (a, fa), (b, fb) = two
    assert status(a, fa, (0, 10, S)) == 0
    pending(b, fb)
    assert a.close(fa) == 0
    assert [s for s, _ in b.outbox()] == [wire.STATUS_SUCCESS]


def test_a_blocking_lock_waits_past_an_unlock_of_something_else(two):
    (a, fa), (b, fb) = two
    assert status(a, fa, (0, 10, X)) == 0
    assert status(a, fa, (50, 10, X)) == 0
    pending(b, fb)
    assert status(a, fa, (50, 10, U)) == 0
    assert b.outbox() == []                                  # retried, still in conflict
    assert status(a, fa, (0, 10, U)) == 0
    assert [s for s, _ in b.outbox()] == [wire.STATUS_SUCCESS]


def kernel_locked(path, offset, length) -> bool:
    """Whether any descriptor holds a kernel lock over the range (F_OFD_GETLK)."""
    fd = os.open(path, os.O_RDWR)
    try:
        answer = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, struct.pack("hh4xqqi4x", fcntl.F_WRLCK, os.SEEK_SET,
                                                                    offset, length, 0))
        return struct.unpack("hh4xqqi4x", answer)[0] != fcntl.F_UNLCK
    finally:
        os.close(fd)


def test_a_blocking_locks_retry_pays_the_kernels_work_from_its_users_credit(two, share):
    """Each retry of a waiting lock costs the kernel a walk of the file's locks: a release
    letting many waiters retry at once would hold the event loop for all of it. A retry is
    paid from its user's credit (posix_locks.KernelLockCredit) as a LOCK is; where that is
    spent the lock takes nothing and waits on, and the server's sweep grants it once the
    credit has grown again."""
    (a, fa), (b, fb) = two
    state = a.conn.state
    now = [0.0]
    state.kernel_lock_credit = credit = KernelLockCredit(lambda: now[0], most=1000, per_second=1000)
    assert status(a, fa, (0, 10, X)) == 0
    assert status(a, fa, *((100 + 2 * i, 1, X | NOW) for i in range(20))) == 0    # a retry costs 20
    pending(b, fb)
    owner = b.conn.sessions[1].owner
    while credit.spend(owner, 1):       # the user's credit spent
        pass
    assert status(a, fa, (0, 10, U)) == 0
    assert b.outbox() == [] and not kernel_locked(share / "f", 0, 10)      # free, but not taken
    state.retry_kernel_lock_waits()
    assert b.outbox() == []
    now[0] += 1                         # a second on: the credit full again
    state.retry_kernel_lock_waits()     # (the server's sweep)
    assert [s for s, _ in b.outbox()] == [wire.STATUS_SUCCESS] and kernel_locked(share / "f", 0, 10)
    assert credit.has(owner, 980) and not credit.has(owner, 981)       # the retry paid its 20
    assert status(a, fa, (0, 10, X | NOW)) == wire.STATUS_LOCK_NOT_GRANTED


# -- kernel changes made off the event loop -------------------------------------------------------

MANY = [(2 * i, 1) for i in range(512)]     # a LOCK of these costs the kernel more than OFF_LOOP_STEPS


def test_a_costly_lock_is_made_in_the_kernel_off_the_event_loop(client, share):
    """A LOCK whose kernel change costs more than OFF_LOOP_STEPS (thousands of walks of the
    file's lock list) is answered once the shell has made it in its threads (SetRangeLocks):
    the locks are in the table at once, in the kernel once it is done."""
    assert posix_locks.kernel_steps(len(MANY), 0) > OFF_LOOP_STEPS
    fid = client.open("f")
    todo = client.conn.handle_frame(client.message(wire.LOCK, lock_body(fid, [(o, n, X | NOW) for o, n in MANY])))
    [change] = [e for e in todo if isinstance(e, effects.SetRangeLocks)]
    assert len(change.changes) == len(MANY) and not kernel_locked(share / "f", 0, 1)
    assert client.conn.state.locks.count(*held_by(client, fid)) == len(MANY)
    assert [h.status for h, _ in sent(todo)] == [wire.STATUS_SUCCESS]
    assert kernel_locked(share / "f", 0, 1) and kernel_locked(share / "f", 2 * 511, 1)
    assert not kernel_locked(share / "f", 1, 1)
    assert status(client, fid, *((o, n, U) for o, n in MANY)) == 0       # (off the loop too)
    assert not kernel_locked(share / "f", 0, 1024)


def test_a_costly_lock_another_program_refuses_in_part_is_given_back_everywhere(client, share):
    """Refused in the kernel at its 300th range (a local program's lock), the LOCK takes
    nothing: the kernel's first 299 are given back in the same thread, the table's and the
    user's count afterwards."""
    fid = client.open("f")
    local = os.open(share / "f", os.O_RDWR)
    try:
        fcntl.fcntl(local, fcntl.F_OFD_SETLK, struct.pack("hh4xqqi4x", fcntl.F_RDLCK, os.SEEK_SET, 600, 1, 0))
        assert status(client, fid, *((o, n, X | NOW) for o, n in MANY)) == wire.STATUS_LOCK_NOT_GRANTED
        assert client.conn.state.locks.count(*held_by(client, fid)) == 0
        assert client.conn.state.user_locks(client.conn.sessions[1].owner) == 0
        fcntl.fcntl(local, fcntl.F_OFD_SETLK, struct.pack("hh4xqqi4x", fcntl.F_UNLCK, os.SEEK_SET, 600, 1, 0))
        assert not kernel_locked(share / "f", 0, 1024)
    finally:
        os.close(local)
    assert status(client, fid, *((o, n, X | NOW) for o, n in MANY)) == 0


def test_requests_on_an_open_wait_for_its_kernel_change_under_way(two, share):
    """While an open's costly kernel change is made (here: not carried out yet), a request
    of another channel on its locks waits for it (Wait), then runs as it would have after
    it: an unlock of the same ranges leaves neither the table nor the kernel holding any;
    a blocking lock waits, not retried by another open's release meanwhile (its kernel
    change would run beside the one under way), and is granted once the change is over."""
    (client, fid), (other, other_fid) = two
    taking = client.conn.handle_frame(client.message(wire.LOCK, lock_body(fid, [(o, n, X | NOW) for o, n in MANY])))
    unlocking = client.conn.handle_frame(client.message(wire.LOCK, lock_body(fid, [(o, n, U) for o, n in MANY])))
    assert any(isinstance(e, effects.Wait) for e in unlocking)
    assert client.conn.state.locks.count(*held_by(client, fid)) == len(MANY)       # not yet
    [(interim, _)] = lock(client, fid, (5000, 1, X))          # a blocking one
    assert interim.status == wire.STATUS_PENDING
    assert status(other, other_fid, (9000, 1, X)) == 0 and status(other, other_fid, (9000, 1, U)) == 0
    assert client.outbox() == [] and not kernel_locked(share / "f", 5000, 1)
    answers = sent(taking) + sent(client.conn.outbox_drain())
    assert sorted((h.status, h.async_id) for h, _ in answers) == [(0, 0), (0, interim.async_id)]   # and the blocking one
    assert kernel_locked(share / "f", 0, 1) and kernel_locked(share / "f", 5000, 1)
    assert [h.status for h, _ in sent(unlocking)] == [wire.STATUS_SUCCESS]
    assert client.conn.state.locks.count(*held_by(client, fid)) == 1
    assert not kernel_locked(share / "f", 0, 1024)


def test_an_open_closed_while_its_kernel_change_is_made_leaves_no_kernel_lock(clients, share):
    """Its connection lost while the change is under way, the open's locks go at once; the
    kernel locks the change made after that go once it is over (its descriptor, held for
    the change as the shell holds it, is closed only then: a kept map of the file would keep
    its description, and its locks, longer still)."""
    holds = DescriptorHolds()
    client = clients(close_descriptor=holds.close)
    fid = client.open("f")
    taking = client.conn.handle_frame(client.message(wire.LOCK, lock_body(fid, [(o, n, X | NOW) for o, n in MANY])))
    held = named_descriptors(taking)
    holds.hold(held)
    key = held_by(client, fid)[0]
    client.conn.close_all()
    assert client.conn.state.locks.on_file(key) == 0
    sent(taking)                # (the answer goes nowhere)
    assert not kernel_locked(share / "f", 0, 1024)
    holds.release(held)


def test_a_kernel_change_whose_outcome_is_never_told_is_undone(client, share):
    """The shell drops a change it was given (its connection gone while the change ran on
    another channel's open): where the open lives on, its locks leave the table and the
    kernel, and its next LOCK does not wait for the change."""
    fid = client.open("f")
    taking = client.conn.handle_frame(client.message(wire.LOCK, lock_body(fid, [(o, n, X | NOW) for o, n in MANY])))
    [change] = [e for e in taking if isinstance(e, effects.SetRangeLocks)]
    range_operation(change)       # made in the kernel, and the outcome lost
    assert kernel_locked(share / "f", 0, 1)
    del taking, change
    gc.collect()
    assert client.conn.state.locks.count(*held_by(client, fid)) == 0
    assert client.conn.state.user_locks(client.conn.sessions[1].owner) == 0
    assert not kernel_locked(share / "f", 0, 1024)
    assert status(client, fid, (0, 1, X | NOW)) == 0


def test_a_blocking_locks_costly_retry_is_made_off_the_event_loop(two, share):
    """A release lets a waiting lock retry; beside a file's thousands of locks its kernel
    change goes to the shell through the outbox (a release may let a thousand retries go at
    once), the lock answered once it is made. Refused there by a local program's lock, it
    is given back and waits on, until the sweep's retry takes it."""
    (a, fa), (b, fb) = two
    b.conn.on_output = lambda: None         # (a shell: it carries out the outbox)
    many = a.open("f")
    assert status(a, many, *((1000 + 2 * i, 1, X | NOW) for i in range(4096))) == 0
    assert status(a, fa, (0, 10, S)) == 0 and status(a, fa, (20, 1, X)) == 0
    assert posix_locks.kernel_steps(1, 4097) > OFF_LOOP_STEPS
    pending(b, fb)
    local = os.open(share / "f", os.O_RDWR)
    try:
        fcntl.fcntl(local, fcntl.F_OFD_SETLK, struct.pack("hh4xqqi4x", fcntl.F_RDLCK, os.SEEK_SET, 5, 1, 0))
        assert status(a, fa, (0, 10, U)) == 0       # (a shared lock, beside the local reader's)
        todo = b.conn.outbox_drain()
        assert [type(e) for e in todo] == [effects.SetRangeLocks]
        assert sent(todo) == [] and b.conn.outbox_drain() == []       # refused: waits on
        assert b.conn.state.locks.count(*held_by(b, fb)) == 0 and not kernel_locked(share / "f", 0, 5)
        fcntl.fcntl(local, fcntl.F_OFD_SETLK, struct.pack("hh4xqqi4x", fcntl.F_UNLCK, os.SEEK_SET, 5, 1, 0))
    finally:
        os.close(local)
    b.conn.state.retry_kernel_lock_waits()        # (the server's sweep)
    todo = b.conn.outbox_drain()
    assert [type(e) for e in todo] == [effects.SetRangeLocks] and not kernel_locked(share / "f", 0, 10)
    assert sent(todo) == [] and [s for s, _ in b.outbox()] == [wire.STATUS_SUCCESS]
    assert kernel_locked(share / "f", 0, 10)
    assert status(a, fa, (0, 10, X | NOW)) == wire.STATUS_LOCK_NOT_GRANTED


def held_by(client, fid) -> tuple:
    """(the file's key, the open's owner id) in the lock table."""
    o = client.conn.client.opens[fid]
    return o.key, id(o)


def test_a_blocking_lock_on_the_same_connection_is_answered_with_the_unlock(client):
    a, b = client.open("f"), client.open("f")
    assert status(client, a, (0, 10, X)) == 0
    interim = pending(client, b)
    unlock_id = client.next_message_id
    answers = lock(client, a, (0, 10, U))
    assert {(h.message_id, h.status) for h, _ in answers} == {(interim.message_id, 0), (unlock_id, 0)}


@pytest.mark.parametrize("by", ["async_id", "message_id"])
def test_cancel_ends_a_blocking_lock(two, by):
    (a, fa), (b, fb) = two
    assert status(a, fa, (0, 10, X)) == 0
    interim = pending(b, fb)
    fields = dict(flags=wire.FLAGS_ASYNC, async_id=interim.async_id) if by == "async_id" else \
        dict(message_id=interim.message_id)
    [(cancelled, _)] = b.exchange(b.message(wire.CANCEL, SHORT_BODY, **fields))
    assert cancelled.status == wire.STATUS_CANCELLED and cancelled.message_id == interim.message_id
    assert b.conn.async_requests == {}
    assert status(a, fa, (0, 10, U)) == 0
    assert b.outbox() == []                                  # nothing granted after a cancel
    assert status(a, fa, (0, 10, X | NOW)) == 0


def test_cancel_of_nothing_is_silent(client):
    assert client.exchange(client.message(wire.CANCEL, SHORT_BODY, flags=wire.FLAGS_ASYNC, async_id=99)) == []


def test_closing_the_waiting_open_answers_range_not_locked(two):
    (a, fa), (b, fb) = two
    assert status(a, fa, (0, 10, X)) == 0
    pending(b, fb)
    answers = b.send(wire.CLOSE, b"\x18\0\0\0\0\0\0\0" + fb)
    assert sorted(s for s, _ in answers) == [0, wire.STATUS_RANGE_NOT_LOCKED]
    assert status(a, fa, (0, 10, U)) == 0
    assert b.outbox() == []


def test_a_connection_gone_ends_its_waits(two):
    (a, fa), (b, fb) = two
    assert status(a, fa, (0, 10, X)) == 0
    pending(b, fb)
    b.conn.close_all()
    assert status(a, fa, (0, 10, U)) == 0
    assert status(a, fa, (0, 10, X | NOW)) == 0


def test_only_the_last_request_of_a_compound_may_wait(client):
    a, b = client.open("f"), client.open("f")
    assert status(client, a, (0, 10, X)) == 0
    frame = compound([client.message(wire.LOCK, lock_body(b, [(0, 10, X)])), client.message(wire.ECHO, SHORT_BODY)])
    [(first, _), (second, _)] = client.exchange(frame)
    assert first.status == wire.STATUS_INTERNAL_ERROR and second.status == 0
    assert client.conn.async_requests == {}


# -- bounds ---------------------------------------------------------------------------------------

def test_max_locks_per_open(clients):
    c = clients(limits=Limits(max_locks=4))
    fid, other = c.open("f"), c.open("f")
    assert status(c, fid, *[(i, 1, X | NOW) for i in range(3)]) == 0
    assert status(c, fid, (10, 1, X | NOW), (11, 1, X | NOW)) == wire.STATUS_INSUFFICIENT_RESOURCES
    assert status(c, fid, (10, 1, X)) == 0
    assert status(c, fid, (11, 1, X)) == wire.STATUS_INSUFFICIENT_RESOURCES
    assert status(c, other, (11, 1, X)) == 0                  # per open
    assert status(c, fid, (0, 1, U)) == 0
    assert status(c, fid, (11, 1, X | NOW)) == wire.STATUS_LOCK_NOT_GRANTED   # counted again, then refused
    assert status(c, fid, (12, 1, X)) == 0


def test_max_locks_per_connection(clients):
    c = clients(limits=Limits(max_locks_per_connection=3))
    fids = [c.open("f") for _ in range(3)]
    assert [status(c, fid, (i, 1, X)) for i, fid in enumerate(fids)] == [0, 0, 0]
    assert status(c, fids[0], (10, 1, X)) == wire.STATUS_INSUFFICIENT_RESOURCES
    assert c.close(fids[2]) == 0                              # its lock is released with it
    assert status(c, fids[0], (10, 1, X)) == 0
    assert status(c, fids[0], (11, 1, X)) == wire.STATUS_INSUFFICIENT_RESOURCES


def test_max_pending_requests(clients):
    c = clients(limits=Limits(max_pending_requests=2))
    holder = c.open("f")
    assert status(c, holder, (0, 100, X)) == 0
    for i in range(2):
        pending(c, c.open("f"), offset=i)
    assert status(c, c.open("f"), (5, 1, X)) == wire.STATUS_INSUFFICIENT_RESOURCES
