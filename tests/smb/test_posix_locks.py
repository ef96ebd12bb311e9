"""smb.posix_locks: the kernel lock an open's SMB locks make, checked byte by byte against
the rule (write under an exclusive lock, read under only shared ones, nothing elsewhere)
over random lock sets, and the changes between two lock sets applied to the first."""
import random

from smbring.smb.locks import Lock
from smbring.smb.posix_locks import (KERNEL_STEPS_MAX, LIMIT, NONE, READ, WRITE, KernelLockCredit, changes, hull,
                                      kernel_steps, kinds, mirrored, undo, without)


def by_rule(locks, point: int) -> int:
    covering = [lk for lk in locks if lk.length and lk.offset <= point < lk.offset + lk.length and point < LIMIT]
    return WRITE if any(lk.exclusive for lk in covering) else READ if covering else NONE


def painted(pieces, start: int, end: int, base: dict | None = None) -> dict:
    out = dict(base or {})
    for s, e, kind in pieces:
        assert start <= s < e <= end
        for p in range(s, e):
            out[p] = kind
    return out


def random_locks(rng: random.Random, n: int) -> list[Lock]:
    return [Lock(rng.randrange(60), rng.choice([0, 1, 3, 10, 25]), rng.random() < 0.4, 1) for _ in range(n)]


def test_kinds_follow_the_rule_byte_by_byte():
    rng = random.Random(5)
    for _ in range(500):
        locks = random_locks(rng, rng.randrange(8))
        start = rng.randrange(40)
        end = start + rng.randrange(1, 50)
        pieces = kinds(locks, start, end)
        assert pieces[0][0] == start and pieces[-1][1] == end
        assert all(a[1] == b[0] and a[2] != b[2] for a, b in zip(pieces, pieces[1:]))   # joined
        got = painted(pieces, start, end)
        assert got == {p: by_rule(locks, p) for p in range(start, end)}


def test_changes_take_the_kernel_from_one_lock_set_to_the_other():
    rng = random.Random(7)
    for _ in range(500):
        before = random_locks(rng, rng.randrange(6))
        added = random_locks(rng, rng.randrange(1, 4))
        after = before + added
        for old, new, touched in ((before, after, added), (after, before, added)):
            span = hull(touched)
            todo = changes(old, new, span)
            if span is None:
                assert todo == []
                continue
            start, end = span
            kernel = {p: by_rule(old, p) for p in range(start, end)}
            result = painted(todo, start, end, kernel)
            assert result == {p: by_rule(new, p) for p in range(start, end)}
            # only what differs, but for an unlock that runs on over what held no lock (one
            # change where it would be one per range released); each change begins with one
            assert all(kernel[s] != kind for s, e, kind in todo)
            assert all(kernel[p] != kind or kind == NONE for s, e, kind in todo for p in range(s, e))
            # undoing what was done of it (here: all) gives the old kernel lock back
            assert painted(undo(todo, old), start, end, result) == kernel


def test_ranges_released_together_are_one_unlock():
    """Each kernel lock change walks the file's whole list of POSIX locks: releasing 4,096
    scattered ranges is one change, not 4,096."""
    held = [Lock(2 * i, 1, True, 1) for i in range(4096)]
    assert changes(held, [], hull(held)) == [(0, 8191, NONE)]
    kept = held[::2]        # every other one stays: the unlocks between them stay apart
    assert len(changes(held, kept, hull(held))) == 2048


def test_a_lock_request_is_weighed_by_what_the_kernel_walks():
    """kernel_steps: k ranges beside n locks cost the kernel about k * (n + k / 2) steps;
    the bound lets `max locks per open` ranges pass beside 2,048 locks, not beside 2,049."""
    assert kernel_steps(1, 0) == 0 and kernel_steps(1, 10) == 10
    assert kernel_steps(4096, 2048) <= KERNEL_STEPS_MAX < kernel_steps(4096, 2049)
    assert kernel_steps(1, 1_000_000) <= KERNEL_STEPS_MAX


def test_a_users_credit_for_the_kernels_work_grows_at_each_tick():
    """KernelLockCredit: `most` at once, `per_second` more a second, counted at each tick
    (the server's sweep), never in between; a LOCK it cannot pay for takes nothing; users
    do not share it."""
    now = [100.0]
    credit = KernelLockCredit(lambda: now[0], most=1000, per_second=1000)
    assert credit.spend("alice", 600) and not credit.spend("alice", 600)    # 400 left
    assert credit.spend("bob", 1000)                                        # bob's own
    assert credit.spend("alice", 400) and not credit.spend("alice", 1)
    now[0] += 0.5
    assert not credit.spend("alice", 1)         # no tick yet: a burst's time pays for nothing
    credit.tick()
    assert not credit.spend("alice", 501) and credit.spend("alice", 500)
    now[0] += 10                                                            # full, no more
    credit.tick()
    assert not credit.spend("alice", 1001) and credit.spend("alice", 1000)
    assert not credit.has("alice", 1) and credit.has("erin", 1000) and not credit.has("erin", 1001)
    assert credit.spend("carol", 0) and "carol" not in credit._credit       # (nothing kept)
    assert set(credit._credit) == {"alice"}     # bob's, full again at the tick: forgotten
    now[0] += 1
    credit.tick()
    assert credit.spend("dave", 10) and set(credit._credit) == {"dave"}


def test_a_users_credit_grows_slower_than_it_may_be_spent_at_once():
    """The server's own: KERNEL_STEPS_MAX at once, a quarter of that a second, a second's
    worth at most at a tick however long since the last (a loop slowed down gets no more
    for its slowness), a credit forgotten once full again."""
    now = [0.0]
    credit = KernelLockCredit(lambda: now[0])
    assert credit.spend("alice", KERNEL_STEPS_MAX) and not credit.has("alice", 1)
    now[0] += 5
    credit.tick()
    assert credit.has("alice", KERNEL_STEPS_MAX // 4) and not credit.has("alice", KERNEL_STEPS_MAX // 4 + 1)
    for _ in range(2):
        now[0] += 1
        credit.tick()
    assert not credit.has("alice", KERNEL_STEPS_MAX) and "alice" in credit._credit
    now[0] += 1
    credit.tick()
    assert credit.has("alice", KERNEL_STEPS_MAX) and credit.spend("bob", 1) and set(credit._credit) == {"bob"}


def test_without_leaves_out_one_of_each_lock_taken():
    a, b = Lock(0, 10, True, 1), Lock(0, 10, False, 1)
    assert without([a, b, b, a], [b, a]) == [b, a]
    assert without([a], [Lock(5, 0, True, 1)]) == [a]        # (a zero-length lock is never held over a range)


def test_what_a_posix_lock_cannot_say_is_not_mirrored():
    assert mirrored(5, 0) is None                       # zero length: "to the end" in POSIX
    assert mirrored(LIMIT, 10) is None and mirrored(1 << 63, 1) is None
    assert mirrored(LIMIT - 4, 100) == (LIMIT - 4, LIMIT)
    assert hull([Lock(5, 0, True, 1), Lock(1 << 63, 9, False, 1)]) is None
    assert kinds([Lock(LIMIT - 4, 100, True, 1)], LIMIT - 8, LIMIT) == [(LIMIT - 8, LIMIT - 4, NONE),
                                                                         (LIMIT - 4, LIMIT, WRITE)]
