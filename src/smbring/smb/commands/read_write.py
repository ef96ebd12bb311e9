"""READ, WRITE and FLUSH (MS-SMB2 3.3.5.11-13): a READ's data stays in the file for the shell
to move; a WRITE's and a FLUSH's file I/O is done by the shell, with the share's VFS modules.

An open granted FILE_APPEND_DATA without FILE_WRITE_DATA may only add to the file: its WRITEs
go to the end of the file whatever Offset they name, as Windows' NtWriteFile places them
(FILE_WRITE_TO_END_OF_FILE), never over the bytes already there. A FLUSH needs write access
(WRITE_DATA or APPEND_DATA; of a directory, ADD_FILE or ADD_SUBDIRECTORY, the same bits), as
Samba's smbd_smb2_flush_send and Windows answer: a reader cannot make the server fsync."""
from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from smbring.smb import aapl, notify, posix_locks, wire
from smbring.smb.commands import pipe
from smbring.smb.effects import FileIO, FilePayload, FileRange
from smbring.smb.errors import SMBError, write_refused
from smbring.smb.fileinfo import MAX_FILE_SIZE, file_write_ns, keep_file_write_time, keep_write_time
from smbring.smb.wire import Header

if TYPE_CHECKING:
    from smbring.smb.connection import Connection


# the rights that let an open change a file's data (a directory's: ADD_FILE, ADD_SUBDIRECTORY)
WRITE_RIGHTS = wire.FILE_WRITE_DATA | wire.FILE_APPEND_DATA


def h_flush(c: Connection, hdr: Header, msg: bytes, rhdr: Header, chain):
    o = c.open_for(bytes(msg[72:88]), chain, hdr)
    if not o.granted & WRITE_RIGHTS:
        raise write_refused(o.tree.share)
    shown = c.state.write_times.show_now(o)      # its writes show in the write time now
    if shown is not None:
        keep_file_write_time(o, shown)     # (a stream's: its file's)
    return FileIO("flush", o.tree.share.name, o.fd, done=lambda _: struct.pack("<HH", 4, 0)), None


def h_read(c: Connection, hdr: Header, msg: bytes, rhdr: Header, chain):
    if (chain.tree or c.tree(hdr)).fs is None:      # (Chain.tree: found by the checks already)
        return pipe.h_read(c, hdr, msg, rhdr, chain)
    _size, _pad, _flags, length, offset = struct.unpack_from("<HBBIQ", msg, 64)
    o = c.open_for(bytes(msg[80:96]), chain, hdr)
    if o.is_dir:
        raise SMBError(wire.STATUS_INVALID_DEVICE_REQUEST)
    if length > c.max_io(wire.READ) or offset + length > 0x7FFFFFFFFFFFFFFF:
        raise SMBError(wire.STATUS_INVALID_PARAMETER)
    if not o.granted & (wire.FILE_READ_DATA | wire.FILE_EXECUTE):
        raise SMBError(wire.STATUS_ACCESS_DENIED)
    if not posix_locks.io_allowed(c, o, offset, length, write=False):
        raise SMBError(wire.STATUS_FILE_LOCK_CONFLICT)
    min_count = struct.unpack_from("<I", msg, 96)[0]
    size = o.tree.fs.size(o.fd)
    shown = False
    read_from = offset
    if o.tree.share.fruit and aapl.is_afp_info(o.stream):
        # Finder information reads whole, as macOS reads it: any offset up to its size reads
        # from its start, one past it reads nothing (Samba's fruit_pread_meta, bug for bug
        # with macOS's off-by-one)
        shown = aapl.shown_afp_info(o.stream, size)
        read_from, size = 0, (aapl.AFP_INFO_SIZE if offset <= aapl.AFP_INFO_SIZE else 0)
    available = max(0, min(length, size - read_from))
    if (not available and length) or available < min_count:
        raise SMBError(wire.STATUS_END_OF_FILE)
    o.position = offset + available
    prefix = struct.pack("<HBBIII", 17, 80, 0, available, 0, 0)
    if shown:
        return prefix + aapl.NO_AFP_INFO[:available], None
    return FilePayload(prefix, FileRange(o.fd, read_from, available, o.tree.share.name),
                       splice_safe=not c.state.share_modes.has_writer(o.key),
                       read_path=o.tree.share.read_path), None


WRITE_THROUGH_FLAGS = 0x1 | 0x2     # SMB2_WRITEFLAG_WRITE_THROUGH, SMB2_WRITEFLAG_WRITE_UNBUFFERED


def h_write(c: Connection, hdr: Header, msg: bytes, rhdr: Header, chain):
    tree = chain.tree or c.tree(hdr)
    if tree.fs is None:
        return pipe.h_write(c, hdr, msg, rhdr, chain)
    _size, data_off, length, offset = struct.unpack_from("<HHIQ", msg, 64)
    o = c.open_for(bytes(msg[80:96]), chain, hdr)
    if tree.share.read_only:
        raise SMBError(wire.STATUS_ACCESS_DENIED)
    # (data inside the header or the fixed part would be the request's own fields: Samba
    # refuses it too)
    if (length and data_off < wire.WRITE_DATA_OFFSET) or data_off + length > len(msg) or length > c.max_io(wire.WRITE):
        raise SMBError(wire.STATUS_INVALID_PARAMETER)
    if not o.granted & WRITE_RIGHTS:
        raise write_refused(o.tree.share)
    data, asked = memoryview(msg)[data_off:data_off + length], length
    if tree.share.fruit and aapl.is_afp_info(o.stream):
        # macOS's Finder information: a whole AfpInfo, checked, or nothing, or none at all;
        # it is rewritten from 0, which an open that may only append may not do
        if not o.granted & wire.FILE_WRITE_DATA:
            raise SMBError(wire.STATUS_ACCESS_DENIED)
        check_write_range(c, o, offset, length)     # (the range asked, as for any WRITE)
        info = aapl.afp_info_written(data, offset)
        if not info:
            if info is not None:        # (all zeros: the stream goes, as on macOS)
                check_write_range(c, o, 0, aapl.AFP_INFO_SIZE)     # as the write it stands for
                c.state.oplocks.contend_level2(o.key, o)
                tree.fs.ftruncate(o.fd, 0)
                o.delete_on_close = True
                c.state.set_delete_pending(o, True)
            return struct.pack("<HHIIHH", 17, 0, asked, 0, 0, 0), None
        data, offset, length = memoryview(info), 0, len(info)
        size = tree.fs.size(o.fd)
        if size > aapl.AFP_INFO_SIZE:
            # (longer than one, as another share may have written it: the rest goes, so
            # that the stream is the whole AfpInfo written)
            check_write_range(c, o, 0, size)
            tree.fs.ftruncate(o.fd, aapl.AFP_INFO_SIZE)
    append_only = not o.granted & wire.FILE_WRITE_DATA
    if not append_only:
        check_write_range(c, o, offset, length)
    c.state.oplocks.contend_level2(o.key, o)     # level II holders' cached data goes stale
    # on stable storage before it is answered: asked of this WRITE (WRITEFLAG_WRITE_THROUGH, or
    # WRITEFLAG_WRITE_UNBUFFERED, as Samba takes it), of its handle (FILE_WRITE_THROUGH) or of
    # every WRITE on the share (`sync always`)
    write_through = bool(struct.unpack_from("<I", msg, 64 + 44)[0] & WRITE_THROUGH_FLAGS) or \
        o.write_through or tree.share.sync_always
    c.state.write_times.writing(o, lambda: file_write_ns(o))    # (a stream's: its file's)
    where = [offset]

    def at_end() -> int:
        """Where an append-only open's WRITE goes: the file's end, past the other appends
        on their way to it."""
        where[0] = end = c.state.append_offset(o.key, o.tree.fs.size(o.fd))
        check_write_range(c, o, end, length)
        c.state.appending(o.key, end + length)
        return end

    def written(n: int) -> bytes:
        o.position = where[0] + n
        o.wrote = True          # (its directory's leases break at its close: smb.dirleases)
        if o.kept_write_ns is not None:
            keep_write_time(o.tree.fs, o.fd, o.kept_write_ns, o.tree.share)
        if c.state.watches.active():
            c.state.watches.post_open(o, notify.MODIFIED, notify.SIZE | notify.LAST_WRITE)
        # (an AfpInfo written whole answers the count the client sent)
        return struct.pack("<HHIIHH", 17, 0, n if length == asked else asked, 0, 0, 0)

    return FileIO("write", o.tree.share.name, o.fd, offset, data,
                  written, then_flush=write_through, at_end=at_end if append_only else None,
                  ended=(lambda: c.state.appended(o.key)) if append_only else None), None


def check_write_range(c: Connection, o, offset: int, length: int) -> None:
    """A WRITE of `length` bytes at `offset`: inside the largest file (MS-FSA 2.1.5.4), clear of
    other opens' byte-range locks."""
    if offset + length > 0x7FFFFFFFFFFFFFFF:
        raise SMBError(wire.STATUS_INVALID_PARAMETER)
    if length and offset >= MAX_FILE_SIZE:
        raise SMBError(wire.STATUS_INVALID_PARAMETER)
    if offset + length >= MAX_FILE_SIZE and length:
        raise SMBError(wire.STATUS_DISK_FULL)      # what NTFS answers at its size limit
    if not posix_locks.io_allowed(c, o, offset, length, write=True):
        raise SMBError(wire.STATUS_FILE_LOCK_CONFLICT)
