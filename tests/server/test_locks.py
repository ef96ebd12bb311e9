"""Byte-range lock rules (the table the LOCK command and READ/WRITE consult)."""
from smbring.smb import locks
from smbring.smb.locks import Lock

KEY = ("dev", "ino-test")


def teardown_function():
    locks.release_owner(KEY, 1)
    locks.release_owner(KEY, 2)


def test_shared_coexist_exclusive_conflicts_all_or_nothing():
    assert locks.acquire_all(KEY, [Lock(0, 10, False, 1)])
    assert locks.acquire_all(KEY, [Lock(5, 10, False, 2)])          # shared + shared
    assert not locks.acquire_all(KEY, [Lock(20, 5, True, 2), Lock(8, 1, True, 2)])
    assert locks.acquire_all(KEY, [Lock(20, 5, True, 2)])           # the first was rolled back
    assert not locks.acquire_all(KEY, [Lock(22, 1, False, 1)])      # shared over exclusive
    assert locks.acquire_all(KEY, [Lock(30, 0, True, 1)])           # zero length never conflicts


def test_io_against_locks_and_unlock():
    assert locks.acquire_all(KEY, [Lock(100, 10, True, 1), Lock(200, 10, False, 1)])
    assert locks.io_allowed(KEY, 100, 5, 1, write=True)              # own exclusive: read/write
    assert not locks.io_allowed(KEY, 105, 10, 2, write=False)        # other's exclusive: no read
    assert locks.io_allowed(KEY, 200, 5, 2, write=False)             # shared: others may read
    assert not locks.io_allowed(KEY, 200, 5, 2, write=True)          # ... but not write
    assert not locks.io_allowed(KEY, 200, 5, 1, write=True)          # nor the owner
    assert not locks.release(KEY, 100, 9, 1)                          # ranges must match exactly
    assert locks.release(KEY, 100, 10, 1)
    assert locks.io_allowed(KEY, 105, 10, 2, write=True)
    locks.release_owner(KEY, 1)
    assert locks.io_allowed(KEY, 200, 5, 2, write=True)


def test_windows_stacking_zero_length_and_unlock_order():
    assert locks.acquire_all(KEY, [Lock(0, 10, True, 1)])
    assert locks.acquire_all(KEY, [Lock(0, 10, False, 1)])            # shared over own exclusive
    assert not locks.acquire_all(KEY, [Lock(0, 10, True, 1)])         # exclusive over own: no
    assert not locks.acquire_all(KEY, [Lock(5, 0, False, 2)])         # zero length strictly inside
    assert locks.acquire_all(KEY, [Lock(0, 0, True, 2)])              # ... but not at the start
    assert locks.release(KEY, 0, 10, 1)                                # the exclusive one goes first
    assert locks.acquire_all(KEY, [Lock(2, 1, False, 2)])             # shared beside shared
    locks.release_owner(KEY, 2)


def test_waiters_retry_after_each_release():
    woken = []
    assert locks.acquire_all(KEY, [Lock(0, 10, True, 1)])
    locks.wait(KEY, lambda: woken.append(locks.acquire_all(KEY, [Lock(0, 1, True, 2)])))
    assert locks.acquire_all(KEY, [Lock(20, 1, True, 1)])
    locks.release(KEY, 20, 1, 1)                                       # woken, still blocked
    assert woken == [False]
    locks.release(KEY, 0, 10, 1)
    assert woken == [False, True]
    locks.unwait(KEY, locks._waiters[KEY][0])
    assert KEY not in locks._waiters
