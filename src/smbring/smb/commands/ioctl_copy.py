"""Server-side copy (MS-SMB2 3.3.5.15.5-6, MS-FSCC 2.3.8): FSCTL_SRV_REQUEST_RESUME_KEY names
an open as a copy's source, FSCTL_SRV_COPYCHUNK(_WRITE) copies ranges of it into another open
without the data crossing the network, FSCTL_DUPLICATE_EXTENTS_TO_FILE makes a range share the
source's blocks (reflink) where the file system can.

The data moves in the kernel (copy_file_range, FICLONERANGE) through effects the shell runs
in its worker threads (`effects.CopyRange`, `effects.CloneRange`); the checks are the core's:
Windows' limits (at most 256 chunks of at most 1 MiB, 16 MiB in all), read access to the
source, write access to the destination (and read access too for FSCTL_SRV_COPYCHUNK), the
byte-range locks of other opens, a read-only share.
"""
from __future__ import annotations

import errno
import hmac
import os
import secrets
import struct
from typing import TYPE_CHECKING

from smbring.smb import notify, posix_locks, wire
from smbring.smb.effects import CloneRange, CopyRange
from smbring.smb.errors import SMBError, status_for_oserror, write_refused
from smbring.smb.fileinfo import MAX_FILE_SIZE
from smbring.smb.state import Chain, Open
from smbring.smb.wire import CHUNK, COPY_HEADER, COPY_RESPONSE, FSCTL_SRV_COPYCHUNK, Header

if TYPE_CHECKING:
    from smbring.smb.connection import Connection

FSCTL_DUPLICATE_EXTENTS_TO_FILE = 0x00098344

# what Windows Server answers for ServerSideCopyMaxNumberofChunks, ...MaxChunkSize and
# ...MaxDataSize (MS-SMB2 3.3.3): a request beyond them gets them back
MAX_CHUNKS = 256
MAX_CHUNK_SIZE = 1 << 20
MAX_COPY_SIZE = 16 << 20

STATUS_INVALID_VIEW_SIZE = 0xC000001F      # a chunk reads past the source's end

DUPLICATE_EXTENTS = struct.Struct("<16sqqq")   # SourceFileId, SourceFileOffset, TargetFileOffset, ByteCount

# a clone the file system cannot make: the client is told it is not supported (and copies)
NO_CLONE_ERRNOS = {errno.EOPNOTSUPP, errno.EXDEV, errno.EINVAL, errno.ENOTTY, errno.ENOSYS}


def request_resume_key(c: Connection, hdr: Header, o: Open, request, max_out: int, rhdr: Header) -> bytes:
    """SRV_REQUEST_RESUME_KEY: a key naming the open as a copy's source. It holds the FileId
    (to find the open) and 8 random bytes (so that no other key does); it serves the session
    that opened the file only, on any of its tree connects."""
    if o.is_dir:
        raise SMBError(wire.STATUS_INVALID_PARAMETER)
    if not o.resume_key:
        o.resume_key = o.fid + secrets.token_bytes(8)
    # ResumeKey, ContextLength 0, and the 4 bytes of zeros Windows sends as Context (which
    # Samba's client expects: 32 bytes)
    return o.resume_key + struct.pack("<I4x", 0)


def source_of(c: Connection, hdr: Header, key: bytes) -> Open:
    """The open a resume key names, if this session opened it and it is still open; else
    OBJECT_NAME_NOT_FOUND, as Windows answers (a key of another session, a closed file and a
    made-up key all look alike)."""
    o = c.opens.get(bytes(key[:16]))
    if (not isinstance(o, Open) or o.session_id != hdr.session_id or not o.resume_key
            or not hmac.compare_digest(o.resume_key, bytes(key))):
        raise SMBError(wire.STATUS_OBJECT_NAME_NOT_FOUND)
    return o


def copy_response(rhdr: Header, status: int, chunks: int = 0, total: int = 0) -> bytes:
    """SRV_COPYCHUNK_RESPONSE sent with `status` (a failure says how far the copy got, as
    smbd and Windows do; ChunkBytesWritten stays 0: no chunk is ever half copied and
    answered)."""
    rhdr.status = status
    return COPY_RESPONSE.pack(chunks, 0, total)


def limits_response(rhdr: Header) -> bytes:
    """A copy beyond the limits: INVALID_PARAMETER, with the limits where a copy's progress
    goes (MS-SMB2 3.3.5.15.6), so that the client can ask again within them."""
    rhdr.status = wire.STATUS_INVALID_PARAMETER
    return COPY_RESPONSE.pack(MAX_CHUNKS, MAX_CHUNK_SIZE, MAX_COPY_SIZE)


def copychunk(c: Connection, hdr: Header, dst: Open, request, max_out: int, rhdr: Header, ctl: int):
    """FSCTL_SRV_COPYCHUNK / _WRITE on the destination open: bytes, or the steps that copy."""
    if dst.is_dir:
        raise SMBError(wire.STATUS_INVALID_DEVICE_REQUEST)
    if max_out < COPY_RESPONSE.size or len(request) < COPY_HEADER.size:
        raise SMBError(wire.STATUS_INVALID_PARAMETER)
    key, count, _reserved = COPY_HEADER.unpack_from(request, 0)
    if count > MAX_CHUNKS:      # (checked before the chunks are read: a count is not a size)
        return limits_response(rhdr)
    if len(request) < COPY_HEADER.size + count * CHUNK.size:
        raise SMBError(wire.STATUS_INVALID_PARAMETER)
    chunks = [CHUNK.unpack_from(request, COPY_HEADER.size + i * CHUNK.size)[:3] for i in range(count)]
    if (any(length == 0 or length > MAX_CHUNK_SIZE for _s, _t, length in chunks)
            or sum(length for _s, _t, length in chunks) > MAX_COPY_SIZE):
        return limits_response(rhdr)
    src = source_of(c, hdr, key)
    if not src.granted & (wire.FILE_READ_DATA | wire.FILE_EXECUTE):
        raise SMBError(wire.STATUS_ACCESS_DENIED)
    if dst.tree.share.read_only or not dst.granted & wire.FILE_WRITE_DATA:
        raise write_refused(dst.tree.share)
    if ctl == FSCTL_SRV_COPYCHUNK and not dst.granted & wire.FILE_READ_DATA:
        raise SMBError(wire.STATUS_ACCESS_DENIED)     # _WRITE is the variant without it
    if not chunks and dst.tree.aapl and dst.tree.aapl.copyfile:
        return copyfile_steps(c, src, dst, rhdr)
    return copy_steps(c, src, dst, chunks, rhdr)


def copy_steps(c: Connection, src: Open, dst: Open, chunks: list, rhdr: Header):
    """Copies the chunks in order, each checked first: its source range inside the source
    file (else INVALID_VIEW_SIZE), its target inside the largest file, no other open's
    byte-range lock in the way (else FILE_LOCK_CONFLICT, as a READ and a WRITE would get).
    Returns the response: how many chunks and bytes were copied."""
    done = total = 0
    for src_off, dst_off, length in chunks:
        if src_off + length > src.tree.fs.fstat(src.fd).st_size:
            return copy_response(rhdr, STATUS_INVALID_VIEW_SIZE, done, total)
        if dst_off + length >= MAX_FILE_SIZE:
            return copy_response(rhdr, wire.STATUS_DISK_FULL, done, total)
        if (not posix_locks.io_allowed(c, src, src_off, length, write=False)
                or not posix_locks.io_allowed(c, dst, dst_off, length, write=True)):
            return copy_response(rhdr, wire.STATUS_FILE_LOCK_CONFLICT, done, total)
        copied = yield CopyRange(src.fd, src_off, dst.fd, dst_off, length)
        if isinstance(copied, OSError):
            return copy_response(rhdr, status_for_oserror(copied), done, total)
        if isinstance(copied, BaseException):
            raise copied
        total += copied
        if copied < length:         # the source was cut meanwhile
            return copy_response(rhdr, STATUS_INVALID_VIEW_SIZE, done, total)
        done += 1
    dst.wrote = dst.wrote or bool(done)     # (as a WRITE: smb.dirleases)
    if done and c.state.watches.active():
        c.state.watches.post_open(dst, notify.MODIFIED, notify.SIZE | notify.LAST_WRITE)
    return copy_response(rhdr, wire.STATUS_SUCCESS, done, total)


def copyfile_steps(c: Connection, src: Open, dst: Open, rhdr: Header):
    """macOS copyfile (smb.aapl, where the tree connect negotiated it): a COPYCHUNK of no
    chunks copies the whole source into the destination from offset 0, its data and then,
    between two files, every named stream of the source (Finder information, resource fork,
    extended attributes), over the destination's stream of the same name, as Samba's
    vfs_fruit. TotalBytesWritten is the source's size. The rights are the chunked copy's
    (read the source, write the destination), which cover a file's streams too; the data
    moves in pieces of MAX_COPY_SIZE, in the shell's threads, and other opens' byte-range
    locks on the ranges copied are heeded."""
    if src.key == dst.key:
        raise SMBError(wire.STATUS_INVALID_PARAMETER)
    size = src.tree.fs.fstat(src.fd).st_size
    if size >= MAX_FILE_SIZE:
        return copy_response(rhdr, wire.STATUS_DISK_FULL)
    if (not posix_locks.io_allowed(c, src, 0, size, write=False)
            or not posix_locks.io_allowed(c, dst, 0, size, write=True)):
        return copy_response(rhdr, wire.STATUS_FILE_LOCK_CONFLICT)
    total = yield from _copy_whole(src.fd, dst.fd, size)
    if isinstance(total, OSError):
        return copy_response(rhdr, status_for_oserror(total))
    if src.stream is None and dst.stream is None:
        failed = yield from _copy_streams(src, dst)
        if failed is not None:
            return copy_response(rhdr, status_for_oserror(failed), 0, total)
    dst.wrote = True        # (as a WRITE: smb.dirleases)
    if c.state.watches.active():
        c.state.watches.post_open(dst, notify.MODIFIED, notify.SIZE | notify.LAST_WRITE)
    return copy_response(rhdr, wire.STATUS_SUCCESS, 0, total)


def _copy_whole(src_fd: int, dst_fd: int, size: int):
    """Copies bytes 0 to `size` (or the source's end, if it was cut meanwhile): how many, or
    the OSError that stopped it."""
    total = 0
    while total < size:
        length = min(MAX_COPY_SIZE, size - total)
        copied = yield CopyRange(src_fd, total, dst_fd, total, length)
        if isinstance(copied, OSError):
            return copied
        if isinstance(copied, BaseException):
            raise copied
        total += copied
        if copied < length:
            break
    return total


def _copy_streams(src: Open, dst: Open):
    """The source file's named streams, copied over the destination's: None, or the OSError
    that stopped it (the streams copied before it stay)."""
    sfs, dfs = src.tree.fs, dst.tree.fs
    try:
        sid = sfs.stream_id_of(src.fd)
        names = sfs.stream_names(sid) if sid else []
        if not names:
            return None
        dsid = dfs.stream_id_of(dst.fd, create=True)
        dfs.make_stream_dir(dsid)
        dst_st = dfs.fstat(dst.fd)
    except OSError as e:
        return e
    for name in names:
        try:
            sfd = sfs.open(sfs.stream_parts(sid, name), os.O_RDONLY)
        except FileNotFoundError:
            continue        # (removed since it was listed)
        except OSError as e:
            return e
        try:
            try:
                dfd = dfs.create_stream(dsid, name, (dst_st.st_uid, dst_st.st_gid))
            except FileExistsError:
                dfd = dfs.open(dfs.stream_parts(dsid, name), os.O_RDWR | os.O_TRUNC)
            try:
                copied = yield from _copy_whole(sfd, dfd, sfs.fstat(sfd).st_size)
            finally:
                dfs.close_file(dfd)
        except OSError as e:
            return e
        finally:
            sfs.close_file(sfd)
        if isinstance(copied, OSError):
            return copied
    return None


def duplicate_extents(c: Connection, hdr: Header, dst: Open, request, max_out: int, rhdr: Header):
    """FSCTL_DUPLICATE_EXTENTS_TO_FILE: the target range shares the source's blocks. Both
    ranges must lie inside their files (a clone never changes a size: NOT_SUPPORTED, as
    MS-FSCC says); a file system without reflinks answers NOT_SUPPORTED too. Byte-range
    locks do not apply (Windows clones under them)."""
    if len(request) < DUPLICATE_EXTENTS.size:
        raise SMBError(wire.STATUS_INVALID_PARAMETER)
    src_fid, src_off, dst_off, count = DUPLICATE_EXTENTS.unpack_from(request, 0)
    src = c.open_for(src_fid, Chain(), hdr)       # an open of this session and tree connect
    if src.is_dir or dst.is_dir or min(src_off, dst_off, count) < 0:
        raise SMBError(wire.STATUS_INVALID_PARAMETER)
    if not src.granted & wire.FILE_READ_DATA:
        raise SMBError(wire.STATUS_ACCESS_DENIED)
    if dst.tree.share.read_only or not dst.granted & wire.FILE_WRITE_DATA:
        raise write_refused(dst.tree.share)
    if not count:
        return b""
    if (src_off + count > src.tree.fs.fstat(src.fd).st_size
            or dst_off + count > dst.tree.fs.fstat(dst.fd).st_size):
        raise SMBError(wire.STATUS_NOT_SUPPORTED)
    return clone_steps(c, src, dst, src_off, dst_off, count)


def clone_steps(c: Connection, src: Open, dst: Open, src_off: int, dst_off: int, count: int):
    result = yield CloneRange(src.fd, src_off, dst.fd, dst_off, count)
    if isinstance(result, OSError):
        raise SMBError(wire.STATUS_NOT_SUPPORTED if result.errno in NO_CLONE_ERRNOS
                       else status_for_oserror(result))
    if isinstance(result, BaseException):
        raise result
    dst.wrote = True        # (as a WRITE: smb.dirleases)
    if c.state.watches.active():
        c.state.watches.post_open(dst, notify.MODIFIED, notify.LAST_WRITE)
    return b""
