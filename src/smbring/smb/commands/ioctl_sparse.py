"""Sparse files and the other file-system controls of MS-FSCC 2.3 that smbring answers:
FSCTL_SET_SPARSE, FSCTL_SET_ZERO_DATA, FSCTL_QUERY_ALLOCATED_RANGES, FSCTL_GET/SET_COMPRESSION,
FSCTL_GET_REPARSE_POINT and FSCTL_FILE_LEVEL_TRIM.

The sparse flag is a DOS attribute (FILE_ATTRIBUTE_SPARSE_FILE) kept with the others; Unix
files are always sparse-capable, so it only decides what the file says of itself: zeroing a
range of a sparse file frees its blocks (a hole), of another keeps them allocated, and the
allocated ranges of a file that is not sparse are all of it, as NTFS reports them. Holes are
punched and found (SEEK_DATA, SEEK_HOLE) by effects the shell runs off the event loop.
"""
from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from smbring.smb import dirleases, notify, posix_locks, wire
from smbring.smb.effects import AllocatedRanges, TrimRange, ZeroRange
from smbring.smb.errors import SMBError, write_refused
from smbring.smb.fileinfo import ATTR_SPARSE_FILE
from smbring.smb.fs import DosInfo
from smbring.smb.state import Open
from smbring.smb.wire import Header

if TYPE_CHECKING:
    from smbring.smb.connection import Connection

FSCTL_GET_COMPRESSION = 0x0009003C
FSCTL_SET_COMPRESSION = 0x0009C040
FSCTL_GET_REPARSE_POINT = 0x000900A8
FSCTL_SET_SPARSE = 0x000900C4
FSCTL_SET_ZERO_DATA = 0x000980C8
FSCTL_QUERY_ALLOCATED_RANGES = 0x000940CF
FSCTL_FILE_LEVEL_TRIM = 0x00098208

COMPRESSION_FORMAT_NONE = 0
COMPRESSION_FORMAT_DEFAULT = 1
COMPRESSION_FORMAT_LZNT1 = 2
STATUS_NOT_A_REPARSE_POINT = 0xC0000275

RANGE = struct.Struct("<qq")      # FILE_ZERO_DATA_INFORMATION, FILE_ALLOCATED_RANGE_BUFFER
INT64_MAX = (1 << 63) - 1
# the most ranges one answer lists (1 MiB of them), whatever output buffer is offered: a file
# of millions of holes costs no more; the client asks on from the last (BUFFER_OVERFLOW)
MAX_RANGES = 65536


def writable(o: Open, access: int) -> None:
    """A control that changes the file: refused on a read-only share and to an open without
    any of `access` (as a WRITE is: errors.write_refused)."""
    if o.tree.share.read_only or not o.granted & access:
        raise write_refused(o.tree.share)


def is_sparse(o: Open) -> bool:
    dos = o.tree.fs.get_dos(o.fd)
    return bool(dos is not None and dos.attrs & ATTR_SPARSE_FILE)


def set_sparse(c: Connection, hdr: Header, o: Open, request, max_out: int, rhdr: Header) -> bytes:
    """FSCTL_SET_SPARSE: sets the flag, or clears it (FILE_SET_SPARSE_BUFFER's first byte 0; no
    buffer means set). Any of WRITE_DATA, APPEND_DATA and WRITE_ATTRIBUTES allows it (as
    Windows); not on a directory."""
    if o.is_dir:
        raise SMBError(wire.STATUS_INVALID_PARAMETER)
    writable(o, wire.FILE_WRITE_DATA | wire.FILE_APPEND_DATA | wire.FILE_WRITE_ATTRIBUTES)
    sparse = not request or request[0] != 0
    fs = o.tree.fs
    dos = fs.get_dos(o.fd) or DosInfo()
    attrs = dos.attrs or wire.ATTR_ARCHIVE      # (0: none stored, which reads as ARCHIVE)
    attrs = attrs | ATTR_SPARSE_FILE if sparse else attrs & ~ATTR_SPARSE_FILE
    if attrs != (dos.attrs or wire.ATTR_ARCHIVE):
        dos.attrs = attrs
        fs.set_dos(o.fd, dos)
        dirleases.open_changed(c, o)        # (a listing shows the attributes)
        if c.state.watches.active():
            c.state.watches.post_open(o, notify.MODIFIED, notify.ATTRIBUTES)
    return b""


def checked_range(request) -> tuple[int, int]:
    """The two signed 64-bit numbers a range request starts with (a longer buffer is
    accepted, as Windows does); missing or negative ones are INVALID_PARAMETER."""
    if len(request) < RANGE.size:
        raise SMBError(wire.STATUS_INVALID_PARAMETER)
    first, second = RANGE.unpack_from(request, 0)
    if first < 0 or second < 0:
        raise SMBError(wire.STATUS_INVALID_PARAMETER)
    return first, second


def zero_data(c: Connection, hdr: Header, o: Open, request, max_out: int, rhdr: Header):
    """FSCTL_SET_ZERO_DATA (FileOffset, BeyondFinalZero): zeros the range within the file,
    whose size never changes; a sparse file's blocks there are freed. Needs WRITE_DATA; a
    byte-range lock of another open in the way: FILE_LOCK_CONFLICT."""
    start, beyond = checked_range(request)
    if o.is_dir or start > beyond:
        raise SMBError(wire.STATUS_INVALID_PARAMETER)
    writable(o, wire.FILE_WRITE_DATA)
    if not posix_locks.io_allowed(c, o, start, beyond - start, write=True):
        raise SMBError(wire.STATUS_FILE_LOCK_CONFLICT)
    end = min(beyond, o.tree.fs.fstat(o.fd).st_size)
    if start >= end:
        return b""          # nothing of the file there
    return zero_steps(c, o, start, end - start, deallocate=is_sparse(o))


def zero_steps(c: Connection, o: Open, start: int, length: int, deallocate: bool):
    result = yield ZeroRange(o.fd, start, length, deallocate)
    if isinstance(result, BaseException):
        raise result        # (an OSError: its status)
    o.wrote = True          # (as a WRITE: smb.dirleases)
    if c.state.watches.active():
        c.state.watches.post_open(o, notify.MODIFIED, notify.LAST_WRITE)
    return b""


def query_allocated_ranges(c: Connection, hdr: Header, o: Open, request, max_out: int, rhdr: Header):
    """FSCTL_QUERY_ALLOCATED_RANGES (FileOffset, Length): the ranges holding data, within the
    file. More than the output buffer holds: those that fit and BUFFER_OVERFLOW; none fits:
    BUFFER_TOO_SMALL. Needs READ_DATA."""
    start, length = checked_range(request)
    if start + length > INT64_MAX:
        raise SMBError(wire.STATUS_INVALID_PARAMETER)     # the range wraps around
    if o.is_dir:
        raise SMBError(wire.STATUS_INVALID_PARAMETER)
    if not o.granted & wire.FILE_READ_DATA:
        raise SMBError(wire.STATUS_ACCESS_DENIED)
    fits = min(max_out // RANGE.size, MAX_RANGES)
    size = o.tree.fs.fstat(o.fd).st_size
    if not length or start >= size:
        return b""
    if not is_sparse(o):
        return ranges_response(rhdr, [(start, min(start + length, size) - start)], fits)
    return allocated_steps(o, start, length, fits, rhdr)


def allocated_steps(o: Open, start: int, length: int, fits: int, rhdr: Header):
    ranges = yield AllocatedRanges(o.fd, start, length, limit=fits + 1)   # one more: overflow?
    if isinstance(ranges, BaseException):
        raise ranges
    return ranges_response(rhdr, ranges, fits)


def ranges_response(rhdr: Header, ranges: list, fits: int) -> bytes:
    if len(ranges) > fits:
        if not fits:
            raise SMBError(wire.STATUS_BUFFER_TOO_SMALL)
        rhdr.status = wire.STATUS_BUFFER_OVERFLOW       # the first ones, and the client asks on
        ranges = ranges[:fits]
    return b"".join(RANGE.pack(offset, n) for offset, n in ranges)


def get_compression(c: Connection, hdr: Header, o: Open, request, max_out: int, rhdr: Header) -> bytes:
    """FSCTL_GET_COMPRESSION: nothing is compressed (COMPRESSION_FORMAT_NONE), as a file
    system without compression answers (WS2016)."""
    return struct.pack("<H", COMPRESSION_FORMAT_NONE)


def set_compression(c: Connection, hdr: Header, o: Open, request, max_out: int, rhdr: Header) -> bytes:
    """FSCTL_SET_COMPRESSION: NONE is what every file is already; compressing is NOT_SUPPORTED
    (the volume does not say FILE_FILE_COMPRESSION); any other format INVALID_PARAMETER.
    Needs WRITE_DATA, as on Windows."""
    if len(request) < 2:
        raise SMBError(wire.STATUS_INVALID_PARAMETER)
    writable(o, wire.FILE_WRITE_DATA)
    fmt = struct.unpack_from("<H", request, 0)[0]
    if fmt in (COMPRESSION_FORMAT_DEFAULT, COMPRESSION_FORMAT_LZNT1):
        raise SMBError(wire.STATUS_NOT_SUPPORTED)
    if fmt != COMPRESSION_FORMAT_NONE:
        raise SMBError(wire.STATUS_INVALID_PARAMETER)
    return b""


def get_reparse_point(c: Connection, hdr: Header, o: Open, request, max_out: int, rhdr: Header) -> bytes:
    """FSCTL_GET_REPARSE_POINT: a client sees no reparse points (symbolic links inside the
    share are followed, others refused), so every file answers NOT_A_REPARSE_POINT."""
    raise SMBError(STATUS_NOT_A_REPARSE_POINT)


TRIM_HEADER = struct.Struct("<II")      # FILE_LEVEL_TRIM: Key, NumRanges; then (Offset, Length)s
# the unit a trim works in: each range shrinks to the whole pages inside it, as on Windows
TRIM_PAGE = 4096
# ranges one request trims at most (the first ones; NumRangesProcessed says how many): an
# 8 MiB request holds 524,288, whose reading and checking held the event loop 3 to 7 s
TRIM_RANGES_MOST = 4096


def file_level_trim(c: Connection, hdr: Header, o: Open, request, max_out: int, rhdr: Header):
    """FSCTL_FILE_LEVEL_TRIM (MS-FSA 2.1.5.10.6): the client no longer needs the ranges' data,
    whose storage is released (TrimRange: the whole pages inside each range, within the file;
    a sparse file keeps the holes, another stays allocated). What is read there afterwards is
    undefined, zeros here. Checked as a write (WRITE_DATA, no other open's lock in the way);
    no ranges, or no room for the answer: INVALID_PARAMETER. NumRangesProcessed: all, or the
    first TRIM_RANGES_MOST (a trim is advice: the client may send the rest again)."""
    if len(request) < TRIM_HEADER.size or max_out < 4:
        raise SMBError(wire.STATUS_INVALID_PARAMETER)
    _key, count = TRIM_HEADER.unpack_from(request, 0)
    if o.is_dir or not count or len(request) < TRIM_HEADER.size + count * RANGE.size:
        raise SMBError(wire.STATUS_INVALID_PARAMETER)
    writable(o, wire.FILE_WRITE_DATA)
    count = min(count, TRIM_RANGES_MOST)
    ranges = list(RANGE.iter_unpack(request[TRIM_HEADER.size:TRIM_HEADER.size + count * RANGE.size]))
    for offset, length in ranges:
        if offset < 0 or length < 0 or offset + length > INT64_MAX:
            raise SMBError(wire.STATUS_INVALID_PARAMETER)
        if not posix_locks.io_allowed(c, o, offset, length, write=True):
            raise SMBError(wire.STATUS_FILE_LOCK_CONFLICT)
    size = o.tree.fs.fstat(o.fd).st_size
    pages = [(start, end) for start, end in (
        (-(-offset // TRIM_PAGE) * TRIM_PAGE, min(offset + length, size) // TRIM_PAGE * TRIM_PAGE)
        for offset, length in ranges) if start < end]
    return trim_steps(o, pages, count, leave_hole=is_sparse(o))


def trim_steps(o: Open, pages: list, count: int, leave_hole: bool):
    for start, end in pages:
        result = yield TrimRange(o.fd, start, end - start, leave_hole)
        if isinstance(result, BaseException):
            raise result        # (an OSError: its status)
    return struct.pack("<I", count)
