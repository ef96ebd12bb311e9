"""Byte-range locks (smb.locks.ByteRangeLocks): every rule of the module's docstring, a randomised comparison
with a direct transcription of those rules, and costs that stay near linear when a client takes
tens of thousands of locks in one request."""
import random
import signal
import time
from contextlib import contextmanager

import pytest

from smbring.smb.locks import ByteRangeLocks, Lock, SortedInts

A, B, C = 1, 2, 3       # three opens


@pytest.fixture
def locks():
    return ByteRangeLocks()     # a server's locks: each test its own


@pytest.fixture
def key(locks):
    k = ("dev", object())       # a file
    yield k
    for owner in (A, B, C):
        locks.release_owner(k, owner)
    assert k not in locks._files      # nothing is left behind once every open has closed


@pytest.fixture
def take(locks):
    def take(key, *wanted):
        return locks.acquire_all(key, list(wanted))
    return take


def ex(offset, length, owner):
    return Lock(offset, length, True, owner)


def sh(offset, length, owner):
    return Lock(offset, length, False, owner)


# -- an exclusive request conflicts with every overlapping lock, the requester's own included

@pytest.mark.parametrize("held", [ex(0, 10, A), sh(0, 10, A), ex(0, 10, B), sh(0, 10, B)])
@pytest.mark.parametrize("offset, length", [(0, 10), (9, 1), (5, 100), (0, 1), (3, 4)])
def test_exclusive_conflicts_with_any_overlapping_lock(key, held, offset, length, locks, take):
    assert take(key, held)
    assert not take(key, ex(offset, length, A))
    assert locks.count(key, A) == (1 if held.owner == A else 0)


@pytest.mark.parametrize("held", [ex(10, 10, A), sh(10, 10, B)])
def test_exclusive_beside_a_lock_does_not_conflict(key, held, take):
    assert take(key, held)
    assert take(key, ex(0, 10, A), ex(20, 5, A))     # ends where it starts, starts where it ends


# -- a shared request conflicts only with another open's overlapping exclusive lock

def test_shared_conflicts_with_another_opens_exclusive_lock(key, take):
    assert take(key, ex(0, 10, B))
    assert not take(key, sh(9, 5, A))
    assert take(key, sh(10, 5, A))


def test_shared_stacks_over_shared_and_over_own_exclusive(key, locks, take):
    assert take(key, sh(0, 10, B), sh(0, 10, B))
    assert take(key, sh(0, 10, A), sh(5, 10, A))
    assert take(key, ex(100, 10, A))
    assert take(key, sh(100, 10, A), sh(100, 10, A), sh(105, 2, A))
    assert not take(key, sh(100, 1, B))
    assert locks.count(key, A) == 6 and locks.count(key, B) == 2


def test_an_open_cannot_put_exclusive_over_its_own_shared(key, locks, take):
    """Order inside one request matters: exclusive then shared is granted, not the reverse."""
    assert take(key, ex(0, 10, A), sh(0, 10, A))
    assert not take(key, sh(20, 10, A), ex(20, 10, A))
    assert locks.count(key, A) == 2                   # the failed request left nothing


# -- a zero-length lock at X overlaps a range only when X lies strictly inside it

@pytest.mark.parametrize("x, inside", [(0, False), (1, True), (5, True), (9, True), (10, False), (11, False)])
@pytest.mark.parametrize("held_is_zero_length", [False, True])
def test_zero_length_lock_against_a_range(key, x, inside, held_is_zero_length, locks, take):
    """Whichever of the two is held, they overlap only when x lies strictly inside [0, 10)."""
    def point(kind, owner):
        return kind(x, 0, owner)

    def span(kind, owner):
        return kind(0, 10, owner)
    held, asked = (point, span) if held_is_zero_length else (span, point)
    assert take(key, held(sh, B))
    assert take(key, asked(ex, A)) is not inside      # exclusive: any lock counts
    locks.release_owner(key, A)
    locks.release_owner(key, B)
    assert take(key, held(ex, B))
    assert take(key, asked(sh, A)) is not inside      # shared: another's exclusive counts
    assert take(key, asked(sh, B))                    # the holder's own exclusive: no conflict


def test_zero_length_locks_never_overlap_each_other(key, locks, take):
    assert take(key, ex(5, 0, A), ex(5, 0, A), ex(5, 0, B), sh(5, 0, C))
    assert locks.count(key, A) == 2


def test_own_exclusive_range_conflicts_with_own_zero_length_inside(key, take):
    assert take(key, ex(5, 0, A))
    assert not take(key, ex(0, 10, A))
    assert take(key, sh(0, 10, A))


# -- unlocking takes the exclusive one of several identical locks first

def test_unlock_takes_the_exclusive_lock_first(key, locks, take):
    assert take(key, ex(0, 10, A), sh(0, 10, A))
    assert not take(key, sh(0, 10, B))
    assert locks.release(key, 0, 10, A)
    assert take(key, sh(0, 10, B))                    # only the shared one is left
    assert locks.release(key, 0, 10, A)
    assert not locks.release(key, 0, 10, A)
    assert locks.count(key, A) == 0


def test_unlock_of_zero_length_locks_exclusive_first(key, locks, take):
    assert take(key, ex(5, 0, A), sh(5, 0, A))
    assert not take(key, sh(0, 10, B))
    assert locks.release(key, 5, 0, A)
    assert take(key, sh(0, 10, B))


def test_unlock_needs_the_exact_range_and_the_same_open(key, locks, take):
    assert take(key, ex(100, 10, A))
    for offset, length in [(100, 9), (100, 11), (101, 9), (99, 10), (100, 0)]:
        assert not locks.release(key, offset, length, A)
    assert not locks.release(key, 100, 10, B)
    assert locks.release(key, 100, 10, A)
    assert not locks.release(key, 100, 10, A)


# -- reads are refused over another open's exclusive lock

def test_reads(key, locks, take):
    assert take(key, ex(0, 10, A), sh(20, 10, A), sh(40, 10, B))
    assert locks.io_allowed(key, 0, 10, A, write=False)
    assert not locks.io_allowed(key, 9, 1, B, write=False)
    assert not locks.io_allowed(key, 5, 100, B, write=False)
    assert locks.io_allowed(key, 10, 10, B, write=False)          # beside it
    assert locks.io_allowed(key, 20, 30, B, write=False)          # shared locks, either owner
    assert locks.io_allowed(key, 20, 30, A, write=False)


# -- writes are refused over any lock but the writer's own exclusive one

def test_writes(key, locks, take):
    assert take(key, ex(0, 10, A), sh(20, 10, A), sh(40, 10, B), ex(60, 10, A), sh(60, 10, A))
    assert locks.io_allowed(key, 0, 10, A, write=True)            # own exclusive
    assert not locks.io_allowed(key, 0, 10, B, write=True)
    assert not locks.io_allowed(key, 25, 1, A, write=True)        # own shared
    assert not locks.io_allowed(key, 25, 1, B, write=True)
    assert not locks.io_allowed(key, 45, 1, A, write=True)        # another's shared
    assert not locks.io_allowed(key, 65, 1, A, write=True)        # own exclusive under own shared
    assert locks.io_allowed(key, 10, 10, B, write=True)           # between the locks
    assert not locks.io_allowed(key, 0, 1 << 64, A, write=True)


# -- zero-length locks never block I/O

def test_zero_length_locks_never_block_io(key, locks, take):
    assert take(key, ex(5, 0, B), sh(6, 0, B))
    assert locks.io_allowed(key, 0, 10, A, write=True)
    assert locks.io_allowed(key, 0, 10, A, write=False)


def test_zero_length_io_is_always_allowed(key, locks, take):
    assert take(key, ex(0, 10, B))
    assert locks.io_allowed(key, 5, 0, A, write=True)


# -- all or nothing, counts, closing, the far end of the file

def test_a_request_takes_every_lock_or_none(key, locks, take):
    assert take(key, ex(50, 1, B))
    assert not take(key, ex(0, 10, A), sh(20, 5, A), ex(30, 0, A), ex(50, 1, A))
    assert locks.count(key, A) == 0
    assert take(key, ex(0, 10, A), sh(20, 5, A), ex(30, 0, A))
    assert locks.count(key, A) == 3


def test_held_within_a_range_names_only_the_locks_reaching_into_it(key, locks, take):
    """What an open's kernel lock over a range is made of (smb.posix_locks): its locks of
    nonzero length reaching into the range, each as often as it is held, by offset."""
    assert take(key, ex(0, 10, A), sh(10, 10, A), sh(10, 10, A), ex(25, 0, A), sh(30, 5, A), ex(40, 1, B))
    assert locks.held(key, A, (10, 30)) == [sh(10, 10, A), sh(10, 10, A)]
    assert locks.held(key, A, (9, 31)) == [ex(0, 10, A), sh(10, 10, A), sh(10, 10, A), sh(30, 5, A)]
    assert locks.held(key, A, (20, 30)) == [] and locks.held(key, C, (0, 100)) == []
    assert len(locks.held(key, A)) == 5         # (without a range: all, the zero-length one too)


def test_release_owner_drops_every_lock_of_the_open_only(key, locks, take):
    assert take(key, ex(0, 10, A), sh(0, 10, A), sh(0, 10, A), ex(17, 0, A), sh(20, 5, B))
    locks.release_owner(key, A)
    assert locks.count(key, A) == 0 and locks.count(key, B) == 1
    assert take(key, ex(0, 10, C))
    assert not take(key, ex(20, 1, C))


def test_offsets_up_to_the_last_byte(key, locks, take):
    top = 1 << 64
    assert take(key, ex(top - 10, 10, A))
    assert not take(key, sh(top - 1, 1, B))
    assert take(key, sh(top - 11, 1, B))
    assert not locks.io_allowed(key, 0, top, B, write=False)
    assert take(key, ex(top, 0, B))                       # at the very end: not inside


# -- waiters

def test_waiters_retry_after_each_release(key, locks, take):
    woken = []
    assert take(key, ex(0, 10, A), ex(20, 1, A))

    def retry():
        woken.append(take(key, ex(0, 1, B)))
    locks.wait(key, retry)
    assert not locks.release(key, 30, 1, A)           # nothing released: nobody woken
    assert woken == []
    assert locks.release(key, 20, 1, A)               # woken, still blocked
    assert woken == [False]
    assert locks.release(key, 0, 10, A)
    assert woken == [False, True]
    locks.unwait(key, retry)
    locks.release_owner(key, B)
    assert woken == [False, True]
    assert locks.idle(key)


def test_closing_an_open_wakes_the_waiters(key, locks, take):
    woken = []
    assert take(key, ex(0, 10, A))
    locks.wait(key, lambda: woken.append(True))
    locks.release_owner(key, C)                        # held nothing
    assert woken == []
    locks.release_owner(key, A)
    assert woken == [True]


def test_many_releases_wake_once(key, locks, take):
    woken = []
    assert take(key, *[ex(i, 1, A) for i in range(100)])
    locks.wait(key, lambda: woken.append(True))
    for i in range(100):
        assert locks.release(key, i, 1, A, wake_waiters=False)
    assert woken == []
    locks.wake(key)
    assert woken == [True]


def test_a_waiter_withdrawn_by_another_is_not_called(key, locks):
    called = []

    def first():
        called.append("first")
        locks.unwait(key, second)

    def second():
        called.append("second")
    locks.wait(key, first)
    locks.wait(key, second)
    locks.wake(key)
    assert called == ["first"]
    locks.unwait(key, first)


# -- the rules written out plainly, against the implementation, on random requests

class Reference:
    """The docstring's rules applied to a plain list: slow, obviously right."""

    def __init__(self):
        self.held: list[Lock] = []

    def conflicts(self, lk):
        return any(h.overlaps(lk.offset, lk.length) and (lk.exclusive or h.exclusive and h.owner != lk.owner)
                   for h in self.held)

    def acquire_all(self, wanted):
        taken = []
        for lk in wanted:
            if self.conflicts(lk):
                for t in taken:
                    self.held.remove(t)
                return False
            self.held.append(lk)
            taken.append(lk)
        return True

    def release(self, offset, length, owner):
        mine = [h for h in self.held if (h.owner, h.offset, h.length) == (owner, offset, length)]
        if not mine:
            return False
        self.held.remove(next((h for h in mine if h.exclusive), mine[0]))
        return True

    def release_owner(self, owner):
        self.held = [h for h in self.held if h.owner != owner]

    def io_allowed(self, offset, length, owner, write):
        return not length or not any(
            h.length and h.overlaps(offset, length) and
            (h.owner != owner and (write or h.exclusive) or h.owner == owner and write and not h.exclusive)
            for h in self.held)


@pytest.mark.parametrize("block", [None, 2])     # tiny blocks: split and dropped all the time
@pytest.mark.parametrize("seed", range(6))
def test_matches_the_rules_on_random_requests(key, seed, block, monkeypatch, locks):
    if block:
        monkeypatch.setattr(SortedInts, "BLOCK", block)
    rnd = random.Random(seed)
    ref = Reference()

    def some_lock(owner):
        offset = rnd.randrange(40)
        return Lock(offset, rnd.choice([0, 0, 1, 2, 3, 5, 8, 13, 40]), rnd.random() < 0.4, owner)

    for _ in range(3000):
        owner = rnd.choice((A, B, C))
        op = rnd.random()
        if op < 0.45:
            wanted = [some_lock(owner) for _ in range(rnd.choice([1, 1, 2, 3, 6]))]
            assert locks.acquire_all(key, wanted) == ref.acquire_all(wanted), wanted
        elif op < 0.7:
            lk = rnd.choice(ref.held) if ref.held and rnd.random() < 0.8 else some_lock(owner)
            assert locks.release(key, lk.offset, lk.length, lk.owner) == \
                ref.release(lk.offset, lk.length, lk.owner)
        elif op < 0.73:
            locks.release_owner(key, owner)
            ref.release_owner(owner)
        else:
            offset, length, write = rnd.randrange(45), rnd.choice([0, 1, 2, 7, 30]), rnd.random() < 0.5
            assert locks.io_allowed(key, offset, length, owner, write) == \
                ref.io_allowed(offset, length, owner, write), (offset, length, owner, write)
        assert locks.count(key, owner) == sum(h.owner == owner for h in ref.held)
        assert locks.on_file(key) == len(ref.held)      # (every owner's: what the kernel walks)


# -- costs: near linear in the number of locks, whatever their layout

class Expired(Exception):
    pass


@contextmanager
def at_most(seconds):
    """Fails the test (instead of letting it run for minutes) once it has used `seconds` of
    CPU: the process's own time, which other jobs on a loaded machine do not stretch."""
    def expire(*_):
        raise Expired
    previous = signal.signal(signal.SIGPROF, expire)
    signal.setitimer(signal.ITIMER_PROF, seconds)
    try:
        yield
    except Expired:
        pytest.fail(f"still running after {seconds} s of CPU", pytrace=False)
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)


N = 65535           # the most elements one LOCK request can carry
BOUND = 20.0        # CPU seconds: under two on a quiet machine, five seen under heavy load; a scan per lock takes minutes


def test_65535_locks_in_one_request_then_io_and_unlock(key, locks, take):
    offsets = list(range(0, 2 * N, 2))
    random.Random(1).shuffle(offsets)                   # out of order: inserted all over the table
    assert take(key, sh(4 * N, 1, B))                 # another open holds a lock on the file too
    start = time.process_time()
    with at_most(BOUND):
        assert locks.acquire_all(key, [ex(off, 1, A) for off in offsets])
        assert all(locks.io_allowed(key, off, 1, A, write=True) for off in offsets)
        assert not any(locks.io_allowed(key, off, 1, B, write=False) for off in offsets)
        assert all(locks.release(key, off, 1, A) for off in offsets)
    assert time.process_time() - start < BOUND
    assert locks.count(key, A) == 0


def test_many_overlapping_shared_locks_and_one_huge_one(key, locks):
    """Shared locks nest and overlap freely; one lock over the whole file overlaps them all:
    neither makes each later check look at every lock."""
    start = time.process_time()
    with at_most(BOUND):
        assert locks.acquire_all(key, [sh(0, 1 << 64, C)] +
                                 [sh(i, 2 * N - 2 * i, A if i % 2 else B) for i in range(N // 2)])
        assert not any(locks.acquire_all(key, [ex(i, 1, A)]) for i in range(0, N, 4))
        assert not any(locks.io_allowed(key, i, 1, A, write=True) for i in range(0, N, 4))
        assert all(locks.io_allowed(key, i, 1, A, write=False) for i in range(0, N, 4))
        assert locks.acquire_all(key, [ex(i, 0, B) for i in range(0, 2 * N, 4)]) is False
        locks.release_owner(key, A)
        locks.release_owner(key, B)
        locks.release_owner(key, C)
    assert time.process_time() - start < BOUND


def test_many_own_exclusive_locks_under_shared_requests(key, locks):
    """An open's own exclusive locks do not count against its shared requests; there being
    thousands of them under each request costs nothing more."""
    start = time.process_time()
    with at_most(BOUND):
        assert locks.acquire_all(key, [ex(i, 1, A) for i in range(0, 2 * N, 2)])
        assert locks.acquire_all(key, [sh(0, 2 * N, A) for _ in range(N)])
        assert not locks.acquire_all(key, [sh(0, 2 * N, B)])
        assert all(locks.io_allowed(key, 0, 2 * N, A, write=False) for _ in range(N))
        assert locks.count(key, A) == 2 * N
        locks.release_owner(key, A)
    assert time.process_time() - start < BOUND
