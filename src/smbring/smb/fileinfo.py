"""File attributes, times and sizes as SMB reports them, directory entries and 8.3 names
(MS-FSCC 2.4, 2.6)."""
from __future__ import annotations

import os
from contextlib import contextmanager
import stat
import struct
import uuid

from smbring._dirent import network_open_info as _network_open_info
from smbring.smb import wire
from smbring.smb.errors import SMBError
from smbring.smb.fs import DosInfo
from smbring.vfs.short_names import short_name

MAX_FILE_SIZE = 0xFFFFFFF0000   # NTFS's largest file; Windows clients expect the limit


ROOT_UUID = uuid.uuid4().bytes


# DOS attributes kept as set (MS-FSCC 2.6): READONLY HIDDEN SYSTEM ARCHIVE TEMPORARY OFFLINE
# NOT_CONTENT_INDEXED; DIRECTORY follows the file type. A file's READONLY is its lack of write
# bits (what Unix programs see too; the stored bit only tells that the bits were dropped for
# it); a directory's is the stored bit alone (without write bits no file could be added to
# it, which READONLY on a Windows directory does not forbid).
STORED_ATTRIBUTES = 0x1 | 0x2 | 0x4 | 0x20 | 0x100 | 0x1000 | 0x2000
# SPARSE_FILE is stored too, but set by FSCTL_SET_SPARSE only (not by CREATE or SET_INFO)
ATTR_SPARSE_FILE = 0x200


def attributes(st: os.stat_result, dos: DosInfo | None = None, hidden: bool = False) -> int:
    """The file's DOS attributes; `hidden`: the share's rules hide it (hide files)."""
    is_dir = stat.S_ISDIR(st.st_mode)
    if dos is not None and dos.attrs:
        a = dos.attrs & (STORED_ATTRIBUTES | ATTR_SPARSE_FILE) & ~wire.ATTR_READONLY
    else:
        a = 0 if is_dir else wire.ATTR_ARCHIVE
    if is_dir:
        a |= wire.ATTR_DIRECTORY
    if is_read_only(st, dos):
        a |= wire.ATTR_READONLY
    if hidden:
        a |= wire.ATTR_HIDDEN
    return a or wire.ATTR_NORMAL


def is_read_only(st: os.stat_result, dos: DosInfo | None = None) -> bool:
    """Whether the file or directory has the READONLY attribute (see STORED_ATTRIBUTES)."""
    if stat.S_ISDIR(st.st_mode):
        return bool(dos is not None and dos.attrs & wire.ATTR_READONLY)
    return not st.st_mode & 0o222


def writable_for_metadata(fs, fd: int, store) -> None:
    """Runs `store` (an xattr write: DOS information, a security descriptor), which the kernel
    allows only on a file the account may write: on its own read-only file, the owner gets its
    write bit back for the moment (an owner may always chmod its file), as Windows lets the
    owner change the attributes and security of a read-only file. Anyone else's refusal
    stands (PermissionError)."""
    try:
        store()
        return
    except PermissionError:
        mode = fs.fstat(fd).st_mode & 0o7777
        if mode & 0o200:
            raise
    fs.fchmod(fd, mode | 0o200)          # PermissionError unless the account owns the file
    try:
        store()
    finally:
        fs.fchmod(fd, mode)


NT_EPOCH = wire.nt_time(0)      # the Unix epoch in NT time (100 ns ticks since 1601)


def creation_time(st: os.stat_result, dos: DosInfo | None = None) -> int:
    """The creation time (NT time): as stored (set when smbring made the file, or by a
    client), else the birth time where the stat has one, else the older of the modification
    and change times (which a later write or a client setting the write time moves: the
    stored one is pinned before that, see `pin_creation_time`)."""
    if dos is not None and dos.create_time:
        return dos.create_time
    return (getattr(st, "st_birthtime_ns", None) or min(st.st_mtime_ns, st.st_ctime_ns)) // 100 + NT_EPOCH


def stored_ns(ns: int) -> int:
    """A time in ns as the DOS record keeps it: 64 bits unsigned, so a time before 1970
    (negative) or after 2262 (past a signed 64-bit count) still fits and compares equal."""
    return ns & 0xFFFFFFFFFFFFFFFF


def time_fields(st: os.stat_result, dos: DosInfo | None = None,
                write_ns: int | None = None) -> tuple[int, int, int, int]:
    """CreationTime, LastAccessTime, LastWriteTime, ChangeTime (NT times); `write_ns`: the
    write time shown in place of the kernel's while writes are still to show it
    (`smb.write_times`). As numbers, for a response packed in one go (`TIMES` packs them)."""
    # (wire.nt_time written out: these run for every CREATE, CLOSE and information query)
    birth = creation_time(st, dos)
    change = st.st_ctime_ns // 100 + NT_EPOCH
    if dos is not None:
        if dos.change_time and dos.change_mtime_ns == stored_ns(st.st_mtime_ns):
            change = dos.change_time     # as set, until the next write moves the file on
    written = st.st_mtime_ns if write_ns is None else write_ns
    return birth, st.st_atime_ns // 100 + NT_EPOCH, written // 100 + NT_EPOCH, change


TIMES = struct.Struct("<QQQQ")


def times(st: os.stat_result, dos: DosInfo | None = None, write_ns: int | None = None) -> bytes:
    """`time_fields`, packed as every information class and response carries them."""
    return TIMES.pack(*time_fields(st, dos, write_ns))


def pin_creation_time(fs, fd: int) -> None:
    """Stores the file's creation time as reported now, unless one is stored, before its
    times change (setting the write time must never move the creation time). Best effort:
    where the file system stores nothing, the time stays as the stat gives it."""
    try:
        dos = fs.get_dos(fd) or DosInfo()
        if not dos.create_time:
            dos.create_time = creation_time(fs.fstat(fd), dos)
            writable_for_metadata(fs, fd, lambda: fs.set_dos(fd, dos))
    except OSError:
        pass


def set_file_times(share, fs, fd: int, atime_ns: int, mtime_ns: int) -> None:
    """Sets the file's times as the account, or, where POSIX lets only the owner and the
    share's `dos filetimes` lets any writer (as Windows), as a writer (FileSystem
    .set_times_as_writer). PermissionError where neither may."""
    try:
        fs.set_times(fd, atime_ns, mtime_ns)
    except PermissionError:
        if not share.dos_filetimes:
            raise
        fs.set_times_as_writer(fd, atime_ns, mtime_ns)


def keep_write_time(fs, fd: int, mtime_ns: int, share) -> None:
    """Puts the write time back after a handle that set or froze it wrote through itself
    (the kernel moves it on every write; `share`: its `dos filetimes`). Best effort: a file
    that cannot be touched keeps the kernel's time."""
    try:
        set_file_times(share, fs, fd, fs.fstat(fd).st_atime_ns, mtime_ns)
    except OSError:
        pass


def show_on_close(write_times, o) -> None:
    """Gives the file the write time its closing handle owes it (`WriteTimes.closing`):
    before the descriptor goes, and before a CLOSE reports the file's times."""
    when = write_times.closing(o)
    if when is not None:
        keep_file_write_time(o, when)


def keep_file_write_time(o, mtime_ns: int) -> None:
    """`keep_write_time` on the open's file: a stream's writes are its file's (MS-FSA keeps
    the times per file), so the time goes to the file, where its name still reaches it."""
    if o.stream is None:
        keep_write_time(o.tree.fs, o.fd, mtime_ns, o.tree.share)
        return
    try:
        with file_of(o) as fd:
            keep_write_time(o.tree.fs, fd, mtime_ns, o.tree.share)
    except (SMBError, OSError):
        pass


def file_write_ns(o) -> int:
    """The write time the kernel has for the open's file (a stream's: its file's, where its
    name still reaches it; else the stream's own)."""
    if o.stream is not None:
        try:
            with file_of(o) as fd:
                return o.tree.fs.fstat(fd).st_mtime_ns
        except (SMBError, OSError):
            pass
    return o.tree.fs.fstat(o.fd).st_mtime_ns


@contextmanager
def file_of(o):
    """The descriptor of the open's file, which holds what belongs to the file and not to
    one of its streams: its security descriptor, times and DOS attributes (MS-FSA keeps them
    per file; Samba's metadata_fsp). For a stream's open: its file opened by name, as the
    user (read-only: the stream's open needed the file readable), and checked to be the
    very file whose streams the open reaches (its stream id, bound to that file in the
    depot); a file since renamed, or replaced by another, is not reached
    (STATUS_OBJECT_NAME_NOT_FOUND)."""
    if o.stream is None:
        yield o.fd
        return
    fs = o.tree.fs
    try:
        fd = fs.open(o.base_parts, os.O_RDONLY)
    except (FileNotFoundError, NotADirectoryError):
        raise SMBError(wire.STATUS_OBJECT_NAME_NOT_FOUND) from None
    try:
        if fs.stream_id_of(fd) != o.base_key:
            raise SMBError(wire.STATUS_OBJECT_NAME_NOT_FOUND)
        yield fd
    finally:
        fs.close_file(fd)


def streams_going_with(fs, parts: list[str]) -> str | None:
    """The stream id of the file at `parts` where removing (or replacing) that name removes
    the file: its streams are to go with it. None where the file keeps another name (a hard
    link: its streams are still its own, and whoever may remove one name of a file may not
    therefore change the file; Samba's streams_depot keeps them too), where the name is a
    symbolic link (the link goes, the file it leads to stays, with its streams), where it has
    no streams, or where it cannot be opened."""
    return fs.stream_id(parts, sole_name=True)


def alloc_size(st: os.stat_result, dos: DosInfo | None = None) -> int:
    """AllocationSize: the size in whole clusters, or what a client reserved. Not st_blocks:
    ext4 counts a block of extended attributes there, and smbring keeps its metadata in them."""
    if stat.S_ISDIR(st.st_mode):
        return 0
    return max((st.st_size + 4095) & ~4095, dos.allocation if dos is not None else 0)


# an open's four times, AllocationSize, EndofFile and FileAttributes (FileNetworkOpenInformation,
# MS-FSCC 2.4.29, without its Reserved field), as a CREATE response, a CLOSE response with its
# attributes and that information class carry them
NETWORK_OPEN_INFO = struct.Struct("<4QQQI")


def network_open_info(file_st, file_dos, write_ns: int | None, hidden: bool, st, dos, is_dir: bool) -> bytes:
    """`NETWORK_OPEN_INFO` of an open: its file's times (`time_fields`: `write_ns` shown as
    the write time where given) and attributes (`hidden`: the share's rules hide it), its own
    sizes (`st`, `dos`: a stream's own; EndofFile 0 for a directory). Encoded in C
    (smbring._dirent.network_open_info) where the stats are the posix module's and every value
    a 64-bit field; here otherwise, the same way."""
    packed = _network_open_info(file_st, file_dos, write_ns, hidden, st, dos, is_dir)
    if packed is not None:
        return packed
    return NETWORK_OPEN_INFO.pack(*time_fields(file_st, file_dos, write_ns), alloc_size(st, dos),
                                  0 if is_dir else st.st_size, attributes(file_st, file_dos, hidden))


def dir_entry(klass: int, name: str, st: os.stat_result, file_index: int, dos=None,
              hidden: bool = False, write_ns: int | None = None, short_names: bool = True,
              file_id: int | None = None) -> bytes:
    """`file_id`: the FileId shown (37, 38), else the inode number."""
    # a name that is not UTF-8 on disk holds its bytes as lone surrogates (U+DC80-U+DCFF):
    # shown as such, as change notifications show them, rather than failing the listing
    n = name.encode("utf-16-le", "surrogatepass")
    common = struct.pack("<II", 0, file_index) + times(st, dos, write_ns) + struct.pack(
        "<QQI", 0 if stat.S_ISDIR(st.st_mode) else st.st_size, alloc_size(st, dos),
        attributes(st, dos, hidden))
    short = short_name(name).encode("utf-16-le") if short_names and name not in (".", "..") else b""
    if klass == 1:    # FileDirectoryInformation
        return common + struct.pack("<I", len(n)) + n
    if klass == 2:    # FileFullDirectoryInformation
        return common + struct.pack("<II", len(n), 0) + n
    if klass == 3:    # FileBothDirectoryInformation
        return common + struct.pack("<IIBB", len(n), 0, len(short), 0) + short.ljust(24, b"\0") + n
    if klass == 12:   # FileNamesInformation
        return struct.pack("<III", 0, file_index, len(n)) + n
    if klass == 37:   # FileIdBothDirectoryInformation
        return common + struct.pack("<IIBB", len(n), 0, len(short), 0) + short.ljust(24, b"\0") + \
            struct.pack("<HQ", 0, st.st_ino if file_id is None else file_id) + n
    if klass == 38:   # FileIdFullDirectoryInformation
        return common + struct.pack("<IIIQ", len(n), 0, 0, st.st_ino if file_id is None else file_id) + n
    raise SMBError(wire.STATUS_INVALID_INFO_CLASS)


