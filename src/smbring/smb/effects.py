"""What the protocol core asks of the shell around it, which does all the I/O.

The core is sans-I/O in h11's sense: bytes go in (`Connection.handle_frame`), effects come out.
A response is a `Send`; a READ's data may stay in the file (`FileRange`), passed through to the
shell untouched, so the shell may copy, map, splice or zero-copy it. Where the core needs the
outcome of file I/O (a WRITE's count, a READ it must sign or encrypt, a FLUSH), the effect
carries `then`, which the shell calls with the result (or the OSError) and which returns the
effects that follow. Effects are carried out in the order given. File-range operations
(`CopyRange`, `CloneRange`, `ZeroRange`, `TrimRange`, `AllocatedRanges`: server-side copy,
sparse files, trim; `SetRangeLocks`: costly changes of kernel byte-range locks) are carried
out off the event loop, in the shell's file I/O threads (``smbring.vfs.extents``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Generator, NamedTuple, Union


class FileRange(NamedTuple):
    """`length` bytes of the open file `fd` from `offset`, read through the VFS modules of
    `share` (its name)."""

    fd: int
    offset: int
    length: int
    share: str


@dataclass
class Send:
    """One response frame: `message` (an SMB2 message or chain, or a transform header) and a
    payload that follows it on the wire. A FileRange payload is never signed or encrypted
    (those are built in memory); `splice_safe` says no open of the file may write to it
    meanwhile (splice has no copy-on-write), `read_path` what the share asks for."""

    message: bytes | bytearray | memoryview
    payload: Union[bytes, bytearray, memoryview, FileRange, None] = None
    splice_safe: bool = False
    read_path: str | None = None
    # a break notification (smb.breaks): the shell watches that the client's TCP stack
    # acknowledges the message, and calls delivered(True), or delivered(False) after closing
    # the connection, when it does not in time
    delivered: Callable[[bool], None] | None = None


@dataclass
class ReadInto:
    """Read `range` into `into` (as long as the range; what the file no longer holds is zeros),
    then call `then(len(into))`, or `then(error)`."""

    range: FileRange
    into: memoryview
    then: Callable = None


@dataclass
class Write:
    """Write all of `data` at `offset` (ENOSPC rather than a short write), then call
    `then(count)` or `then(error)`. A `background` write may run while the shell receives the
    next frames: the core asks with `Drain` where a later request must see it done."""

    share: str
    fd: int
    offset: int
    data: memoryview
    then: Callable = None
    background: bool = False


@dataclass
class Flush:
    """Make the file's data and metadata durable (fsync), then call `then(0)` or `then(error)`."""

    share: str
    fd: int
    then: Callable = None


@dataclass
class Drain:
    """Wait until no background Write is running (with `fd`: none overlapping fd's bytes
    `start` to `end`), then call `then(None)`."""

    then: Callable = None
    fd: int | None = None
    start: int = 0
    end: int = 0


@dataclass
class Settle:
    """Wait until the file I/O the shell has under way on `fds` (on any connection: a READ,
    WRITE, FLUSH or range operation it has started) has ended, then call `then(None)`. Only
    work already started is waited for, which ends on its own; the shell goes on with the
    connection's next frames meanwhile (the response is simply later)."""

    fds: tuple
    then: Callable = None


@dataclass
class Forget:
    """A file is deleted: drop whatever the shell keeps of it (maps of its data)."""

    dev: int
    ino: int


@dataclass
class CopyRange:
    """Copy `length` bytes of `src_fd` from `src_offset` to `dst_fd` at `dst_offset` without
    bringing them to user space where the file system can (copy_file_range), as if read whole
    and then written (a source and target overlapping in one file copy as they were before),
    then call `then(count)` (less than `length` where the source ends first) or `then(error)`."""

    src_fd: int
    src_offset: int
    dst_fd: int
    dst_offset: int
    length: int
    then: Callable = None


@dataclass
class CloneRange:
    """Make `length` bytes of `dst_fd` at `dst_offset` share the blocks of `src_fd` at
    `src_offset` (FICLONERANGE), then call `then(0)`, or `then(error)` where the file system
    cannot (EOPNOTSUPP, EXDEV, EINVAL for unaligned ranges)."""

    src_fd: int
    src_offset: int
    dst_fd: int
    dst_offset: int
    length: int
    then: Callable = None


@dataclass
class ZeroRange:
    """Zero `length` bytes of `fd` from `offset` without changing its size: the blocks freed
    (a hole) when `deallocate`, else kept allocated; then call `then(0)` or `then(error)`."""

    fd: int
    offset: int
    length: int
    deallocate: bool
    then: Callable = None


@dataclass
class TrimRange:
    """Release the storage of `length` bytes of `fd` from `offset`, its size kept (a hole
    punched, reserved again unless `leave_hole`); the data there is undefined afterwards,
    and left as it was where the file system cannot punch holes. Then `then(0)` or
    `then(error)`."""

    fd: int
    offset: int
    length: int
    leave_hole: bool
    then: Callable = None


@dataclass
class AllocatedRanges:
    """The ranges of `fd` holding data (SEEK_DATA/SEEK_HOLE) between `offset` and
    `offset + length`, at most `limit` of them: `then([(offset, length), ...])` or
    `then(error)`."""

    fd: int
    offset: int
    length: int
    limit: int
    then: Callable = None


@dataclass
class ListNames:
    """The names in the open directory `fd` (without "." and ".."), sorted, those `keep`
    passes (a pure function of the name): `then([name, ...])` or `then(error)`. Off the event
    loop: a directory of tens of thousands of names takes tens of milliseconds, and every
    request of a compound may list it again (RESTART_SCANS)."""

    fd: int
    keep: Callable
    then: Callable = None


@dataclass
class SetRangeLocks:
    """Make the kernel byte-range locks of `fd`'s open file description as `changes` say,
    in order ((start, end, kind) each: smb.fs.FileSystem.set_range_locks); where another
    program's lock refuses one, set `undo(made)` (the changes giving back the `made` first
    ones: only lowering, which the kernel never refuses). `then(made)`: how many of
    `changes` were made (all of them, or the refused one's index), or `then(error)`. Off
    the event loop: beside a file's many locks the kernel walks its whole list for each
    change (smb.posix_locks)."""

    fd: int
    changes: list
    undo: Callable[[int], list]
    then: Callable = None


@dataclass
class Busy:
    """`fd` is busy for `seconds`, as file I/O under way on it (a CLOSE of it waits): Samba's
    test hook FSCTL_SMBTORTURE_FSP_ASYNC_SLEEP (smb.commands.ioctl). `then(0)`."""

    fd: int
    seconds: float
    then: Callable = None


@dataclass
class Wait:
    """Wait until `start(done)` has called done(result) (another worker answering a request
    through the server's `peers`: server.handoff), then call `then(result)`."""

    start: Callable
    then: Callable = None


RANGE_OPERATIONS = (CopyRange, CloneRange, ZeroRange, TrimRange, AllocatedRanges, ListNames, SetRangeLocks, Busy)

Effect = Union[Send, ReadInto, Write, Flush, Drain, Settle, Forget, CopyRange, CloneRange, ZeroRange,
               TrimRange, AllocatedRanges, ListNames, SetRangeLocks, Busy, Wait]


@dataclass
class FilePayload:
    """A READ's response body whose data is still in the file (a handler's result)."""

    prefix: bytes
    range: FileRange
    splice_safe: bool = False
    read_path: str | None = None


@dataclass
class FileIO:
    """The file I/O a WRITE or FLUSH response waits for (a handler's result); `done(result)`
    builds the response body once it is done. `then_flush`: a write-through WRITE is made
    durable before it is answered."""

    op: str                      # "write" | "flush"
    share: str
    fd: int
    offset: int = 0
    data: memoryview | None = None
    done: Callable = None        # result -> response body
    then_flush: bool = False
    # a WRITE that goes to the end of the file (an append-only open's): called once the
    # file I/O under way before it has ended, it returns the offset (or raises SMBError);
    # `ended` is called once its write is over, whatever came of it
    at_end: Callable[[], int] | None = None
    ended: Callable[[], None] | None = None


@dataclass
class FileSteps:
    """A response that waits for file-range operations (a handler's result): `steps`, a
    generator, yields them one at a time, is sent each one's result (or the OSError) and
    returns the response body. It may raise SMBError (an error response) and may set the
    response header's status for a body sent with a failure (a server-side copy says how far
    it got)."""

    steps: Generator
