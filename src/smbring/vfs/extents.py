"""File-range operations on open descriptors: server-side copy, block cloning, zeroing,
trimming, the allocated ranges of sparse files and kernel byte-range locks (what the protocol
core's effects ``CopyRange``, ``CloneRange``, ``ZeroRange``, ``TrimRange``,
``AllocatedRanges`` and ``SetRangeLocks`` ask for). They block (a copy of 16 MiB, a hole
punched in a large file, thousands of lock changes beside a file's many locks), so the shell
runs them in its thread pool, never in the event loop's thread.

Only descriptors are used, never paths: what a thread of the pool acts as does not matter
to them (the kernel checked access when the files were opened, and each operation also
checks the descriptor's own open mode).
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import os
import struct

from smbring.vfs.api import RANGE_READ, RANGE_UNLOCKED, RANGE_WRITE

log = logging.getLogger("smbring.vfs")

# a read-and-write copy moves this much at a time (the largest chunk SMB asks for)
COPY_BUFFER = 1 << 20

FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10
# _IOW(0x94, 13, struct file_clone_range): src_fd (s64), src_offset, src_length, dest_offset
FICLONERANGE = 0x4020940D

# errors that mean "not this way here" (another file system, no such call), not a failure of
# the file: copy_file_range then falls back to reading and writing
_NO_KERNEL_COPY = {errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP}


def _same_file(a: int, b: int) -> bool:
    sa, sb = os.fstat(a), os.fstat(b)
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def copy_range(src: int, src_off: int, dst: int, dst_off: int, length: int) -> int:
    """Copies up to `length` bytes; the count copied (short only where the source ends)."""
    if src == dst or _same_file(src, dst):
        if src_off < dst_off + length and dst_off < src_off + length:
            # overlapping ranges of one file: read all of it before writing any (SMB's copy
            # is a read then a write; the kernel refuses such a copy_file_range)
            return _copy_buffered(src, src_off, dst, dst_off, length, buffer=length)
    done = 0
    while done < length:
        try:
            n = os.copy_file_range(src, dst, length - done, src_off + done, dst_off + done)
        except OSError as e:
            if e.errno not in _NO_KERNEL_COPY:
                raise
            return done + _copy_buffered(src, src_off + done, dst, dst_off + done, length - done)
        if n == 0:
            break               # the source ends here
        done += n
    return done


def _copy_buffered(src: int, src_off: int, dst: int, dst_off: int, length: int,
                   buffer: int = COPY_BUFFER) -> int:
    """The same with pread and pwrite, `buffer` bytes at a time."""
    done = 0
    while done < length:
        data = os.pread(src, min(buffer, length - done), src_off + done)
        if not data:
            break
        view = memoryview(data)
        while view:
            n = os.pwrite(dst, view, dst_off + done)
            if n == 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            view = view[n:]
            done += n
    return done


def clone_range(src: int, src_off: int, dst: int, dst_off: int, length: int) -> int:
    """The destination range shares the source's blocks (reflink); 0."""
    if length:
        fcntl.ioctl(dst, FICLONERANGE, struct.pack("<qQQQ", src, src_off, length, dst_off))
    return 0


def _fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.fallocate(fd, mode, ctypes.c_int64(offset), ctypes.c_int64(length)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def trim_range(fd: int, offset: int, length: int, leave_hole: bool) -> int:
    """Releases the range's blocks, its size kept: a hole punched (the file system frees the
    blocks, and discards them where it is mounted so), then reserved again unless
    `leave_hole`, so that a file that was not sparse stays fully allocated, as a trimmed
    file on NTFS does. Where holes cannot be punched the data stays: trim is only a hint.
    0."""
    if not length:
        return 0
    keep = FALLOC_FL_KEEP_SIZE
    try:
        _fallocate(fd, FALLOC_FL_PUNCH_HOLE | keep, offset, length)
    except OSError as e:
        if e.errno in (errno.EOPNOTSUPP, errno.ENOTSUP):
            return 0
        raise
    if not leave_hole:
        try:
            _fallocate(fd, keep, offset, length)
        except OSError:
            pass                # trimmed all the same, only not reserved
    return 0


def zero_range(fd: int, offset: int, length: int, deallocate: bool) -> int:
    """Zeros the range, its size kept: a hole where `deallocate`, else allocated zeros (a
    file system without ZERO_RANGE punches and allocates again; one without either gets
    zeros written). 0."""
    if not length:
        return 0
    keep = FALLOC_FL_KEEP_SIZE
    try:
        if deallocate:
            _fallocate(fd, FALLOC_FL_PUNCH_HOLE | keep, offset, length)
            return 0
        try:
            _fallocate(fd, FALLOC_FL_ZERO_RANGE | keep, offset, length)
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL):
                raise
            _fallocate(fd, FALLOC_FL_PUNCH_HOLE | keep, offset, length)
            try:
                _fallocate(fd, keep, offset, length)
            except OSError:
                pass            # zeros all the same, only not reserved
        return 0
    except OSError as e:
        if e.errno not in (errno.EOPNOTSUPP, errno.ENOTSUP):
            raise
    _write_zeros(fd, offset, length)
    return 0


def _write_zeros(fd: int, offset: int, length: int) -> None:
    zeros = bytes(min(COPY_BUFFER, length))
    done = 0
    while done < length:
        done += os.pwrite(fd, memoryview(zeros)[:min(len(zeros), length - done)], offset + done)


def allocated_ranges(fd: int, offset: int, length: int, limit: int) -> list[tuple[int, int]]:
    """The data ranges (offset, length) within [offset, offset + length) and the file's size,
    at most `limit` of them. The descriptor's file position moves (smbring reads and writes
    at explicit offsets only)."""
    end = min(offset + length, os.fstat(fd).st_size)
    ranges: list[tuple[int, int]] = []
    pos = offset
    while pos < end and len(ranges) < limit:
        try:
            data = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:
                break           # no data after pos
            raise
        if data >= end:
            break
        hole = os.lseek(fd, data, os.SEEK_HOLE)
        ranges.append((data, min(hole, end) - data))
        pos = hole
    return ranges


def own_directory(fd: int) -> int:
    """A descriptor of the open directory `fd` with a position of its own, for one listing:
    listings run in worker threads, two of one open may run at once, and a duplicate shares
    its position (each listing's reads moved the other's: names missing or twice). Opened
    again through /proc, which asks read permission as the open did; a duplicate only where
    that fails."""
    try:
        return os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return os.dup(fd)


def list_names(fd: int, keep) -> list[str]:
    """The names `keep` passes in the open directory `fd`, sorted."""
    own = own_directory(fd)
    try:
        names = os.listdir(own)
    finally:
        os.close(own)
    return [n for n in sorted(names) if keep(n)]


# kernel byte-range locks (set_range_locks): struct flock (l_type, l_whence, l_start, l_len,
# l_pid; 0 for an open file description lock), the kinds' lock types, the last offset a lock names
_FLOCK = struct.Struct("hh4xqqi4x")
_LOCK_TYPES = {RANGE_UNLOCKED: fcntl.F_UNLCK, RANGE_READ: fcntl.F_RDLCK, RANGE_WRITE: fcntl.F_WRLCK}
POSIX_LOCK_LIMIT = (1 << 63) - 1
# what a file system that keeps no kernel byte-range locks answers (Samba's posix_fcntl_lock
# takes the same for "not supported here")
NO_KERNEL_LOCKS = (errno.ENOLCK, errno.EINVAL, errno.EFBIG, errno.EOPNOTSUPP)


def set_range_locks(fd: int, changes: list[tuple[int, int, int]]) -> int:
    """smb.fs.FileSystem.set_range_locks: the kernel locks of fd's open file description
    (F_OFD_SETLK) changed as `changes` say, in order; how many were made before another
    program's lock refused one (all of them: len(changes))."""
    writable = None
    for done, (start, end, kind) in enumerate(changes):
        if not 0 <= start < end <= POSIX_LOCK_LIMIT or kind not in _LOCK_TYPES:
            raise ValueError(f"not a byte-range lock change: {(start, end, kind)}")
        if kind == RANGE_WRITE:
            if writable is None:
                writable = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE != os.O_RDONLY
            if not writable:
                kind = RANGE_READ
        try:
            fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _FLOCK.pack(_LOCK_TYPES[kind], os.SEEK_SET, start, end - start, 0))
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EACCES):     # another's lock is there
                return done
            if e.errno not in NO_KERNEL_LOCKS:
                raise
            # a file system that keeps no such locks (NFS without its lock service, some
            # FUSE ones): the server's own stand alone, as Samba lets them
            log.debug("kernel byte-range locks not kept here: %s", os.strerror(e.errno))
    return len(changes)


def set_range_locks_or_none(fd: int, changes: list[tuple[int, int, int]], undo) -> int:
    """set_range_locks, and where another program's lock refused a change, the ones made
    given back (`undo(made)`: only lowering, which the kernel never refuses): all or none.
    How many were made before the refusal (len(changes): all)."""
    made = set_range_locks(fd, changes)
    if made < len(changes):
        set_range_locks(fd, undo(made))
    return made
