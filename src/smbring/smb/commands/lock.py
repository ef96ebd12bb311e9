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
(posix_locks.KernelLockCredit), a blocking lock's retries' too, and where it is more than a
little (OFF_LOOP_STEPS) it is done in the server's file I/O threads, not the event loop's
(`changed_off_loop`): the locks are in the table from the start and leave it again where the
kernel refuses them; the open's other lock changes wait for it (`o.kernel_locking`)."""
from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from smbring.smb import posix_locks, wire
from smbring.smb.commands.negotiate import capabilities
from smbring.smb.effects import FileSteps, SetRangeLocks, Wait
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
    return locked(c, o, msg, count, lock_sequence), None


def locked(c: Connection, o: Open, msg, count: int, lock_sequence: int):
    """The LOCK's response body, or FileSteps answering it once the kernel's change of the
    open's locks is made off the event loop (`changed_off_loop`), or one under way is over;
    GoAsync: a blocking lock waits."""
    body = struct.pack("<HH", 4, 0)
    if o.kernel_locking is not None and not blocking(msg, count):
        # a change of the open's kernel locks is under way (asked on another channel): this
        # request after it, as it came after it (a blocking lock waits as any: `lock`)
        return FileSteps(after_kernel_change(o, lambda: locked(c, o, msg, count, lock_sequence)))
    bucket = sequence_bucket(c, o, lock_sequence)
    number = lock_sequence & 0xF
    if bucket is not None:
        if o.lock_sequences[bucket] == number:
            return body             # a replay of the request that succeeded: done already
        o.lock_sequences[bucket] = NO_SEQUENCE     # valid again only if this one succeeds

    def succeeded() -> None:
        if bucket is not None:
            o.lock_sequences[bucket] = number

    steps = lock(c, o, msg, count, body, succeeded)     # (GoAsync: a blocking lock waits)
    if steps is not None:
        return steps
    succeeded()
    return body


def blocking(msg, count: int) -> bool:
    """Whether the LOCK asks for one lock that may wait (neither FAIL_IMMEDIATELY nor an unlock)."""
    return count == 1 and struct.unpack_from("<I", msg, 88 + 16)[0] in (wire.LOCK_SHARED, wire.LOCK_EXCLUSIVE)


# A LOCK, unlock or blocking lock's retry whose kernel change costs more than this
# (posix_locks.kernel_steps: some 0.1 ms on an idle machine, up to 0.6 on a busy one, against
# a thread's hand-over of some 50 us) is made off the event loop, in the server's file I/O
# threads, while other clients are served (`changed_off_loop`); a blocking lock's first try
# stays in the loop (one range, whose cost the file's locks bound; its retries do not: a
# release may let a thousand go at once).
OFF_LOOP_STEPS = 1 << 12


def lock(c: Connection, o: Open, msg, count: int, body: bytes, granted):
    """Does the LOCK: None once done, FileSteps where its kernel change is made off the event
    loop; raises GoAsync for a blocking lock that must wait (`granted()` is called once it is
    taken, before it is answered, by the steps or the wait; the caller calls it otherwise)."""
    elements = [struct.unpack_from("<QQII", msg, 88 + 24 * i)[:3] for i in range(count)]
    if elements[0][2] & wire.LOCK_UNLOCK:   # an unlock request: element by element (3.3.5.14.1)
        return unlock(c, o, elements, body, granted)
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
    wanted = [Lock(off, ln, bool(fl & wire.LOCK_EXCLUSIVE), id(o)) for off, ln, fl in elements]
    if o.kernel_locking is not None:
        # a blocking lock while a change of the open's kernel locks is under way (the other
        # requests wait for it in `locked`): tried once it is over (`wait`)
        c.state.oplocks.contend_level2(o.key, o)
        raise GoAsync(lambda areq: wait(c, o, areq, wanted, count, body, granted))
    steps = 0
    if posix_locks.mirrors(o):      # the kernel's time: one LOCK's, a user's
        steps = posix_locks.kernel_steps(count, c.state.locks.on_file(o.key))
        if steps > posix_locks.KERNEL_STEPS_MAX or not c.state.kernel_lock_credit.spend(o.lock_owner, steps):
            raise SMBError(wire.STATUS_INSUFFICIENT_RESOURCES)
    c.state.oplocks.contend_level2(o.key, o)     # (Samba's LEVEL2_CONTEND_WINDOWS_BRL)
    if steps > OFF_LOOP_STEPS and elements[0][2] & wire.LOCK_FAIL_IMMEDIATELY and posix_locks.hull(wanted):
        return taken_off_loop(c, o, wanted, count, body, granted)
    if c.state.locks.acquire_all(o.key, wanted, kernel_locks(c, o, wanted)):
        c.count_locks(o, count)
        return None
    if elements[0][2] & wire.LOCK_FAIL_IMMEDIATELY:
        raise SMBError(wire.STATUS_LOCK_NOT_GRANTED)
    raise GoAsync(lambda areq: wait(c, o, areq, wanted, count, body, granted))


def unlock(c: Connection, o: Open, elements: list, body: bytes, granted):
    """An unlock request, element by element up to the first refused (3.3.5.14.1): None,
    or FileSteps where the kernel's change is made off the event loop."""
    window = posix_locks.hull([Lock(offset, length, False, 0) for offset, length, _ in elements]) \
        if posix_locks.mirrors(o) else None
    before = c.state.locks.held(o.key, id(o), window) if window else []
    released: list[Lock] = []
    refused = 0
    try:
        for offset, length, flags in elements:
            if flags != wire.LOCK_UNLOCK:
                refused = wire.STATUS_INVALID_PARAMETER
                break
            if not c.state.locks.release(o.key, offset, length, id(o), wake_waiters=False):
                refused = wire.STATUS_RANGE_NOT_LOCKED
                break
            released.append(Lock(offset, length, False, id(o)))
    except BaseException:       # (what was released leaves the kernel all the same)
        c.count_locks(o, -len(released))
        if released:
            unlocked_now(c, o, unlocked_in_kernel(c, o, before, window, released))
        raise
    c.count_locks(o, -len(released))
    if released:
        todo = unlocked_in_kernel(c, o, before, window, released)
        if len(todo) > 1 and posix_locks.kernel_steps(len(todo), c.state.locks.on_file(o.key)) > OFF_LOOP_STEPS:
            o.kernel_locking = {}
            return FileSteps(unlocked_off_loop(c, o, todo, refused, body, granted))
        unlocked_now(c, o, todo)
    if refused:
        raise SMBError(refused)
    return None


def unlocked_in_kernel(c: Connection, o: Open, before: list[Lock], window, released: list[Lock]) -> list:
    """The kernel's changes for the locks `released` (none where nothing is mirrored)."""
    if not window:
        return []
    return posix_locks.changes(before, c.state.locks.held(o.key, id(o), window), posix_locks.hull(released))


def unlocked_now(c: Connection, o: Open, todo: list) -> None:
    if todo:        # (lowering the kernel's lock: never refused)
        o.tree.fs.set_range_locks(o.fd, todo)
    c.state.locks.wake(o.key)       # once: each waiter retries once, not once per element


def taken_off_loop(c: Connection, o: Open, wanted: list[Lock], count: int, body: bytes, granted):
    """The locks `wanted` taken in the table now and in the kernel off the event loop
    (FileSteps), given back where another program's lock refuses one; None where the
    kernel needs no change (done)."""
    planned = planned_take(c, o, wanted)
    if planned is None:
        raise SMBError(wire.STATUS_LOCK_NOT_GRANTED)    # (only a lock that fails at once comes here)
    c.count_locks(o, count)
    todo, before = planned
    if not todo:
        return None
    o.kernel_locking = {}

    def steps():
        made = yield from changed_off_loop(o, todo, before, lambda: give_back(c, o, wanted))
        try:
            if made == len(todo):
                granted()
                return body
            give_back(c, o, wanted)     # (refused: given back in the kernel already)
            c.state.locks.wake(o.key)       # (what its locks stopped meanwhile)
            if isinstance(made, BaseException):
                raise made
            raise SMBError(wire.STATUS_LOCK_NOT_GRANTED)
        finally:
            kernel_change_over(o)
    return FileSteps(steps())


def give_back(c: Connection, o: Open, wanted: list[Lock]) -> None:
    """The locks `wanted`, taken in the table for a kernel change that did not keep them,
    given back there (where a close has not) and no longer counted."""
    c.count_locks(o, -c.state.locks.give_back(o.key, wanted))


def planned_take(c: Connection, o: Open, wanted: list[Lock], pay: int = 0):
    """Takes `wanted` in the table, the kernel's change left to be made: (the changes, the
    open's locks over their range before), or None where the table refuses (or, paying
    `pay` kernel steps from the user's credit, the credit)."""
    span, planned = posix_locks.hull(wanted), []

    def plan() -> bool:     # (called with `wanted` in the table)
        change = kernel_change(c, o, wanted, span, pay)
        if change is not None:
            planned.append(change)
        return change is not None
    return planned[0] if c.state.locks.acquire_all(o.key, wanted, plan) else None


def kernel_change(c: Connection, o: Open, wanted: list[Lock], span: tuple[int, int], pay: int):
    """With `wanted` in the table: the kernel's changes taking them (over `span`, their
    hull) and the open's locks there before them, once `pay` kernel steps are paid from
    its user's credit (None where it has not as many)."""
    if pay and not c.state.kernel_lock_credit.spend(o.lock_owner, pay):
        return None
    after = c.state.locks.held(o.key, id(o), span)
    before = posix_locks.without(after, wanted)
    return posix_locks.changes(before, after, span), before


def unlocked_off_loop(c: Connection, o: Open, todo: list, refused: int, body: bytes, granted):
    """Steps: an unlock's kernel change, made off the event loop; its answer."""
    made = yield from changed_off_loop(o, todo, None, lambda: c.state.locks.wake(o.key))
    kernel_change_over(o)
    c.state.locks.wake(o.key)       # once the kernel has let the ranges go too
    if isinstance(made, BaseException):
        raise made
    if refused:
        raise SMBError(refused)
    granted()
    return body


def changed_off_loop(o: Open, todo: list, before: list[Lock] | None, abandoned):
    """Steps: the open's kernel locks changed as `todo` says, in the server's file I/O
    threads (SetRangeLocks), all or none (`before`: the open's locks over the range before,
    to which a refused change goes back; None: an unlock, never refused); how many changes
    were made (len(todo): all), or the OSError. The caller, its table work done, calls
    `kernel_change_over`: until then `o.kernel_locking` holds what would change them too,
    to go on after it in the order it came. The open's descriptor stays open meanwhile (a
    CLOSE waits for it as for file I/O). Never told the outcome (GeneratorExit), it calls
    `abandoned()` and leaves the kernel as the table then says."""
    undo = (lambda made: posix_locks.undo(todo[:made], before)) if before is not None else (lambda made: [])
    try:
        made = yield SetRangeLocks(o.fd, todo, undo)
    except GeneratorExit:
        # its outcome never told (its connection gone, the shell's work dropped, after the
        # thread's end if it had begun): where the open lives on (its descriptor still its
        # own: else closed with it) the kernel is made what the table will say, a lock's
        # change undone (`abandoned()` takes it out of the table), an unlock's made
        try:
            if not o.released:
                o.tree.fs.set_range_locks(o.fd, posix_locks.undo(todo, before) if before is not None else todo)
            abandoned()
        finally:
            kernel_change_over(o)
        raise
    if o.released:
        # closed meanwhile (its connection lost), its kernel locks taken away before this
        # change ended: what it made goes too (a kept map of the file keeps its description)
        o.tree.fs.set_range_locks(o.fd, posix_locks.UNLOCK_ALL)
    return made


def kernel_change_over(o: Open) -> None:
    """The change of o's kernel locks under way is over: what waited for it goes on."""
    waiting, o.kernel_locking = o.kernel_locking, None
    for go_on in waiting or ():
        go_on(None)


def after_kernel_change(o: Open, again):
    """Steps: what again() answers (a body, or steps of its own), once no change of the
    open's kernel locks is under way."""
    while o.kernel_locking is not None:
        yield Wait(lambda done: done(None) if o.kernel_locking is None else o.kernel_locking.setdefault(done))
    answer = again()
    if isinstance(answer, FileSteps):
        return (yield from answer.steps)
    return answer


def wait(c: Connection, o: Open, areq: AsyncRequest, wanted: list[Lock], count: int, body: bytes,
         granted) -> None:
    """A blocking lock waits for a release; answered once all its locks are taken."""
    waiting = [True]        # until granted, cancelled or closed (`stop`)

    def retry(_=None):
        if not waiting[0]:
            return      # (called by the end of a kernel change it queued for)
        if o.kernel_locking is not None:
            o.kernel_locking.setdefault(retry)      # after the change under way
            return
        steps = posix_locks.kernel_steps(count, c.state.locks.on_file(o.key)) if mirrored else 0
        if steps and not c.state.kernel_lock_credit.has(o.lock_owner, steps):
            return      # its user's credit is spent (kernel_locks' `charge`): the sweep tries again
        if steps > OFF_LOOP_STEPS and c.on_output is not None and not c.closed:
            # off the event loop, through the outbox (a release may let a thousand such
            # retries go at once)
            retry_off_loop(steps)
        elif c.state.locks.acquire_all(o.key, wanted, kernel_locks(c, o, wanted, charge=steps)):
            c.count_locks(o, count)
            taken()

    def taken():
        stop()
        granted()
        c.complete_async(areq, wire.STATUS_SUCCESS, body)

    def retry_off_loop(steps: int) -> None:
        planned = planned_take(c, o, wanted, pay=steps)
        if planned is None:
            return
        c.count_locks(o, count)
        todo, before = planned
        if not todo:
            taken()
            return
        o.kernel_locking = {}
        change_steps = changed_off_loop(o, todo, before, lambda: give_back(c, o, wanted))
        change = next(change_steps)
        change.then = lambda made: changed(change_steps, made, todo, before)
        c.outbox.append(change)
        c.flush_outbox()

    def changed(change_steps, made, todo: list, before: list) -> list:
        try:
            change_steps.send(made)
        except StopIteration as done:
            made = done.value
        try:
            if made == len(todo) and waiting[0]:
                taken()
                return []
            if made == len(todo) and not o.released:       # (cancelled meanwhile: none of it kept)
                o.tree.fs.set_range_locks(o.fd, posix_locks.undo(todo, before))
            # not woken: this retry would be back at once where another program's lock
            # refused it (the sweep tries again)
            give_back(c, o, wanted)
            return []
        finally:
            kernel_change_over(o)

    def stop():
        waiting[0] = False
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
    if o.kernel_locking is not None:    # (a lock of the open asked meanwhile: `lock`)
        o.kernel_locking.setdefault(retry)


def kernel_locks(c: Connection, o: Open, wanted: list[Lock], charge: int = 0):
    """For ByteRangeLocks.acquire_all, where the open's locks are kernel locks too: takes
    the kernel's locks `wanted` adds to what the open holds, or (another program holding
    one of them) none of them (False). None where nothing is mirrored.

    `charge`: the kernel's work (`kernel_steps`) a blocking lock's retry, which the
    request's own check did not pay for, pays from its user's credit; where that is spent
    it takes nothing (False): it waits on, and the server's sweep
    (ServerState.retry_kernel_lock_waits) tries it again.
    Otherwise a release (or a sweep) letting a thousand waiters beside a file's many locks
    retry at once would take all of their kernel work together (a retry costing more than
    OFF_LOOP_STEPS makes its change in the file I/O threads: `wait`). The
    open's other locks are looked at only once the table has let `wanted` in and the credit
    is paid: a retry that goes on waiting costs next to nothing."""
    span = posix_locks.hull(wanted) if posix_locks.mirrors(o) else None
    if span is None:
        return None
    fs = o.tree.fs

    def confirm() -> bool:      # (called with `wanted` in the table already)
        change = kernel_change(c, o, wanted, span, charge)
        if change is None:
            return False
        todo, before = change
        done = fs.set_range_locks(o.fd, todo)
        if done == len(todo):
            return True
        fs.set_range_locks(o.fd, posix_locks.undo(todo[:done], before))
        return False
    return confirm
