"""LOCK (MS-SMB2 3.3.5.14): byte-range locks, blocking ones answered later.

Lock sequences (MS-SMB2 3.3.5.14, Samba's smbd alike): a client that may resend a LOCK it got
no answer to (on another channel, or after a reconnect) numbers it: LockSequence holds a
LockSequenceIndex (bits 4-31, a bucket 1-64) and a LockSequenceNumber (bits 0-3). The open
remembers, per bucket, the number of the last request that succeeded; a request naming that
bucket and that number again is a replay of it and is answered STATUS_SUCCESS without doing
anything (neither locking nor unlocking: what the first did stays done). A request naming the
bucket with another number clears the bucket first and records its number only if it
succeeds. Index 0 or above 64 names no bucket: nothing is checked. The check applies where
the specification asks for it: on a connection that announced SMB2_GLOBAL_CAP_MULTI_CHANNEL
(SMB 3.x with `server multi channel support`), and for a durable or resilient open (both
are in the durable table, `smb.durable`) on SMB 2.1 and later (in SMB 2.0.2 the field is
reserved). The buckets are the open's own: no other open, client
or session can match them, and a replay never grants a lock it does not already hold.

Locks are taken through an open of a file's data only (READ_DATA, WRITE_DATA, APPEND_DATA or
EXECUTE granted, the opens Samba gives a descriptor and lets lock): an exclusive lock stops
every other open's reads and writes of the range, and an open that may only read a file's
attributes must not stop its owner's I/O (ACCESS_DENIED, as Windows' NtLockFile answers an
open without data access). A directory has no byte ranges: INVALID_DEVICE_REQUEST, as
smbd answers (and a READ of one).

On a share with `posix locking` (the default) the locks are kernel locks too (smb.posix_locks):
a local program's lock refuses a lock of its range, and a blocking lock that may wait for one
is retried by the server's sweep (ServerState.kernel_lock_waits), as nothing here hears of
its release. The kernel's work a LOCK costs is paid from its user's credit
(posix_locks.KernelLockCredit), a blocking lock's retries' too."""
from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from smbring.smb import posix_locks, wire
from smbring.smb.commands.negotiate import capabilities
from smbring.smb.errors import SMBError
from smbring.smb.locks import Lock
from smbring.smb.state import AsyncRequest, GoAsync
from smbring.smb.wire import Header

if TYPE_CHECKING:
    from smbring.smb.connection import Connection
    from smbring.smb.state import Open


LOCK_REQUESTS = (wire.LOCK_SHARED, wire.LOCK_EXCLUSIVE, wire.LOCK_SHARED | wire.LOCK_FAIL_IMMEDIATELY,
                 wire.LOCK_EXCLUSIVE | wire.LOCK_FAIL_IMMEDIATELY)


# the rights of an open of the file's data, which may lock ranges of it
DATA_RIGHTS = wire.FILE_READ_DATA | wire.FILE_WRITE_DATA | wire.FILE_APPEND_DATA | wire.FILE_EXECUTE

LOCK_SEQUENCE_BUCKETS = 64
NO_SEQUENCE = 0xFF          # a bucket with no valid number (a number is 0-15)


def sequence_bucket(c: Connection, o: Open, lock_sequence: int) -> int | None:
    """The bucket (0-63) of the open's LockSequenceArray the request names, where lock
    sequences are checked for it; None otherwise."""
    index = lock_sequence >> 4
    if not 1 <= index <= LOCK_SEQUENCE_BUCKETS or c.dialect < wire.SMB210:
        return None
    if not (capabilities(c, c.dialect) & wire.CAP_MULTI_CHANNEL or c.state.durable.of(o) is not None):
        return None
    if o.lock_sequences is None:
        o.lock_sequences = bytearray([NO_SEQUENCE]) * LOCK_SEQUENCE_BUCKETS
    return index - 1


def h_lock(c: Connection, hdr: Header, msg: bytes, rhdr: Header, chain):
    _size, count, lock_sequence = struct.unpack_from("<HHI", msg, 64)
    o = c.open_for(bytes(msg[72:88]), chain, hdr)
    if count == 0 or 88 + 24 * count > len(msg):
        raise SMBError(wire.STATUS_INVALID_PARAMETER)
    if o.is_dir:
        raise SMBError(wire.STATUS_INVALID_DEVICE_REQUEST)
    body = struct.pack("<HH", 4, 0)
    bucket = sequence_bucket(c, o, lock_sequence)
    number = lock_sequence & 0xF
    if bucket is not None:
        if o.lock_sequences[bucket] == number:
            return body, None           # a replay of the request that succeeded: done already
        o.lock_sequences[bucket] = NO_SEQUENCE     # valid again only if this one succeeds

    def succeeded() -> None:
        if bucket is not None:
            o.lock_sequences[bucket] = number

    lock(c, o, msg, count, body, succeeded)     # (GoAsync: a blocking lock waits)
    succeeded()
    return body, None


def lock(c: Connection, o: Open, msg, count: int, body: bytes, granted) -> None:
    """Does the LOCK, or raises GoAsync for a blocking lock that must wait (`granted()` is
    called once it is taken, before it is answered)."""
    elements = [struct.unpack_from("<QQII", msg, 88 + 24 * i)[:3] for i in range(count)]
    if elements[0][2] & wire.LOCK_UNLOCK:   # an unlock request: element by element (3.3.5.14.1)
        window = posix_locks.hull([Lock(offset, length, False, 0) for offset, length, _ in elements]) \
            if posix_locks.mirrors(o) else None
        before = c.state.locks.held(o.key, id(o), window) if window else []
        released: list[Lock] = []
        try:
            for offset, length, flags in elements:
                if flags != wire.LOCK_UNLOCK:
                    raise SMBError(wire.STATUS_INVALID_PARAMETER)
                if not c.state.locks.release(o.key, offset, length, id(o), wake_waiters=False):
                    raise SMBError(wire.STATUS_RANGE_NOT_LOCKED)
                released.append(Lock(offset, length, False, id(o)))
        finally:
            c.count_locks(o, -len(released))
            if released:
                if window:          # (lowering the kernel's lock: never refused)
                    o.tree.fs.set_range_locks(o.fd, posix_locks.changes(
                        before, c.state.locks.held(o.key, id(o), window), posix_locks.hull(released)))
                c.state.locks.wake(o.key)       # once: each waiter retries once, not once per element
        return
    for offset, length, flags in elements:
        if flags not in LOCK_REQUESTS or (count > 1 and not flags & wire.LOCK_FAIL_IMMEDIATELY):
            raise SMBError(wire.STATUS_INVALID_PARAMETER)
        if length and offset + length - 1 > 0xFFFFFFFFFFFFFFFF:
            raise SMBError(wire.STATUS_INVALID_LOCK_RANGE)
    if not o.granted & DATA_RIGHTS:
        raise SMBError(wire.STATUS_ACCESS_DENIED)
    if o.lock_owner is None:        # (the open's session made this request)
        o.lock_owner = c.sessions[o.session_id].owner
    if c.state.locks.count(o.key, id(o)) + count > c.limits.max_locks or \
            c.locks_here() + count > c.limits.max_locks_per_connection or \
            c.state.user_locks(o.lock_owner) + count > c.limits.max_locks_per_user:
        raise SMBError(wire.STATUS_INSUFFICIENT_RESOURCES)     # before any work
    if posix_locks.mirrors(o):      # the kernel's time, in the event loop: one LOCK's, a user's
        steps = posix_locks.kernel_steps(count, c.state.locks.on_file(o.key))
        if steps > posix_locks.KERNEL_STEPS_MAX or not c.state.kernel_lock_credit.spend(o.lock_owner, steps):
            raise SMBError(wire.STATUS_INSUFFICIENT_RESOURCES)
    c.state.oplocks.contend_level2(o.key, o)     # (Samba's LEVEL2_CONTEND_WINDOWS_BRL)
    wanted = [Lock(off, ln, bool(fl & wire.LOCK_EXCLUSIVE), id(o)) for off, ln, fl in elements]
    if c.state.locks.acquire_all(o.key, wanted, kernel_locks(c, o, wanted)):
        c.count_locks(o, count)
        return
    if elements[0][2] & wire.LOCK_FAIL_IMMEDIATELY:
        raise SMBError(wire.STATUS_LOCK_NOT_GRANTED)
    raise GoAsync(lambda areq: wait(c, o, areq, wanted, count, body, granted))


def wait(c: Connection, o: Open, areq: AsyncRequest, wanted: list[Lock], count: int, body: bytes,
         granted) -> None:
    """A blocking lock waits for a release; answered once all its locks are taken."""
    def retry():
        steps = posix_locks.kernel_steps(count, c.state.locks.on_file(o.key)) if mirrored else 0
        if steps and not c.state.kernel_lock_credit.has(o.lock_owner, steps):
            return      # its user's credit is spent (kernel_locks' `charge`): the sweep tries again
        if c.state.locks.acquire_all(o.key, wanted, kernel_locks(c, o, wanted, charge=steps)):
            c.count_locks(o, count)
            stop()
            granted()
            c.complete_async(areq, wire.STATUS_SUCCESS, body)

    def stop():
        c.state.locks.unwait(o.key, retry)
        c.state.kernel_lock_waits.pop(retry, None)
        if areq in o.waiting:
            o.waiting.remove(areq)

    mirrored = posix_locks.mirrors(o)
    areq.on_cancel, areq.close_status = stop, wire.STATUS_RANGE_NOT_LOCKED
    o.waiting.append(areq)
    c.state.locks.wait(o.key, retry)
    if mirrored:      # another program's lock, or its user's spent credit, may be what
        # it waits for: nothing here wakes it
        c.state.kernel_lock_waits[retry] = None


def kernel_locks(c: Connection, o: Open, wanted: list[Lock], charge: int = 0):
    """For ByteRangeLocks.acquire_all, where the open's locks are kernel locks too: takes
    the kernel's locks `wanted` adds to what the open holds, or (another program holding
    one of them) none of them (False). None where nothing is mirrored.

    `charge`: the kernel's work (`kernel_steps`) a blocking lock's retry, which the
    request's own check did not pay for, pays from its user's credit; where that is spent
    it takes nothing (False): it waits on, and the server's sweep
    (ServerState.retry_kernel_lock_waits) tries it again.
    Otherwise a release (or a sweep) letting a thousand waiters beside a file's many locks
    retry at once would hold the event loop for all of their kernel work together. The
    open's other locks are looked at only once the table has let `wanted` in and the credit
    is paid: a retry that goes on waiting costs next to nothing."""
    span = posix_locks.hull(wanted) if posix_locks.mirrors(o) else None
    if span is None:
        return None
    fs = o.tree.fs

    def confirm() -> bool:      # (called with `wanted` in the table already)
        if charge and not c.state.kernel_lock_credit.spend(o.lock_owner, charge):
            return False
        after = c.state.locks.held(o.key, id(o), span)
        before = posix_locks.without(after, wanted)
        todo = posix_locks.changes(before, after, span)
        done = fs.set_range_locks(o.fd, todo)
        if done == len(todo):
            return True
        fs.set_range_locks(o.fd, posix_locks.undo(todo[:done], before))
        return False
    return confirm
