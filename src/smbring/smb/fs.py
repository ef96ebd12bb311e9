"""The file system as the SMB core calls it (the role of Samba's SMB_VFS table): every file
operation of the core goes through a `FileSystem` it is given, one per share, never through
``os`` directly. ``smbring.vfs.posix.PosixVFS`` implements it.

A path is a list of components relative to the share root, as `split_path` makes them from a
client's name; an implementation resolves it beneath the root and nowhere else (``..``,
absolute paths and symlinks leading out of the share are refused, whatever the client sends).
A file opened through `FileSystem.open` is named by its descriptor from then on.

Errors: an implementation raises `OSError` subclasses with the errno of what went wrong
(FileNotFoundError, NotADirectoryError, FileExistsError, PermissionError, ...: the core maps
them to NTSTATUS with `errors.status_for_oserror`), `NotAFile` for anything that is neither a
regular file nor a directory, and `PathError` for a name it will not store.

The types both sides name (DosInfo, PathError, NotAFile, STREAMS_DIR, split_path,
split_stream) live in ``smbring.vfs.api``, below both the core and the implementations, and
are re-exported here for the core.
"""
from __future__ import annotations

import os
from typing import Protocol, runtime_checkable

from smbring.vfs.api import (
    RANGE_READ,
    RANGE_UNLOCKED,
    RANGE_WRITE,
    STREAMS_DIR,
    DosInfo,
    NotAFile,
    PathError,
    split_path,
    split_stream,
)

__all__ = ["MAX_STREAMS", "MAY_READ", "MAY_SEARCH", "MAY_WRITE", "RANGE_READ", "RANGE_UNLOCKED", "RANGE_WRITE",
           "STREAMS_DIR", "DosInfo", "FileSystem", "NotAFile", "PathError",
           "split_path", "split_stream"]

# what `may_open` and `may_access` ask about (the values of os.R_OK and os.W_OK)
MAY_READ, MAY_WRITE, MAY_SEARCH = 4, 2, 1      # (access(2)'s R_OK, W_OK, X_OK)
# named streams one file may have: a stream's CREATE and the file's stream queries look
# through all of them (a compound of 64 stream CREATEs beside 20,000 streams held the event
# loop 10 s; 128 stream queries of a file of 1,024 streams 1.5 s, of 256 0.4 s). Samba's default
# (streams_xattr) keeps a file's streams in its extended attributes: on ext4, one block.
MAX_STREAMS = 128


@runtime_checkable
class FileSystem(Protocol):
    root: str
    """The share root's absolute path: names changes for CHANGE_NOTIFY and compares opens
    (a directory with an open file below it cannot be renamed); never opened by the core."""

    def close(self) -> None:
        """Releases what the file system holds itself (the root's descriptor); the files
        opened through it are closed with `close_file` first."""

    # -- paths --------------------------------------------------------------------------------
    def open(self, parts: list[str], flags: int, mode: int = 0o644) -> int:
        """Opens the regular file or directory at `parts` with the ``os.O_*`` flags (O_CREAT,
        O_EXCL, O_DIRECTORY, O_PATH, ... as for open(2)) and returns its descriptor; `mode` is
        a new file's permission bits. The open never waits (a FIFO) nor takes a terminal.
        Raises NotAFile for anything else (a FIFO, socket or device), before acting on it;
        OSError (FileNotFoundError, FileExistsError with O_EXCL, PermissionError, ELOOP or
        EXDEV for a path leading out of the share, ...)."""
        ...

    def open_stat(self, parts: list[str], flags: int, mode: int = 0o644) -> tuple[int, os.stat_result]:
        """`open`, and the stat of what it opened (fstat of the descriptor returned), as one
        call: an open that checks what it opened has read it already."""
        ...

    def stat(self, parts: list[str]) -> os.stat_result:
        """The stat of the file or directory at `parts`, symlinks inside the share followed.
        Raises FileNotFoundError, NotADirectoryError, or OSError for a path leading out."""
        ...

    def match_case(self, parts: list[str], short_names: bool = False) -> list[str]:
        """`parts` with each component spelled as on disk where only its case differs (SMB
        names are case-insensitive); components found in no spelling are kept as given, and
        so is the rest of the path after one it cannot look up. With `short_names`, a
        component found in no spelling that is a long name's 8.3 short name
        (vfs.short_names) becomes that long name: the caller checks `veto files` again on
        what it gets. Raises OSError when a directory on the way cannot be listed."""
        ...

    def dfs_link(self, parts: list[str]) -> tuple[int, str] | None:
        """The first component of `parts` that is an MS-DFS link (as Samba keeps one: a
        symbolic link whose target reads "msdfs:server\\share[,server\\share...]"), found in
        any case: (how many components lead to it, what its target says after "msdfs:");
        None where there is none (a component missing or not a directory, or a link of
        another kind, first). Each directory is looked in as the caller acts."""
        ...

    def match_case_in(self, dir_fd: int, name: str, short_names: bool = False) -> str | None:
        """The entry of the directory open as `dir_fd` (freshly: at its start) that is `name`
        but for its case, if any (`name` itself where it is there as spelled), or with
        `short_names` whose short name it is: `match_case`'s look in one directory, for a
        caller that has the directory open already. Raises OSError when the directory cannot
        be listed."""
        ...

    def mkdir(self, parts: list[str], mode: int = 0o755) -> None:
        """Creates the directory with the permission bits `mode` (the share's directory mask
        may narrow them). Raises FileExistsError, FileNotFoundError (no parent), OSError."""
        ...

    def remove(self, parts: list[str], is_dir: bool, key: tuple | None = None) -> None:
        """Deletes the file, or the (empty) directory; with `key` (st_dev, st_ino), only where
        the name still leads to that file (an open's: it may have been replaced since), else
        FileNotFoundError. Raises FileNotFoundError, OSError (ENOTEMPTY for a directory with
        entries)."""
        ...

    def remove_tree(self, parts: list[str], most: int, gone: list) -> int:
        """Deletes the directory and everything below it, at most `most` entries in all
        (OSError ENOTEMPTY past that, what was deleted staying deleted), never following a
        symbolic link below it (each one met is deleted as a name, whatever it leads to; a
        directory swapped for one meanwhile is not entered); how many it deleted. `gone`
        gets (stream id, its file's mark: device, inode, generation) of each file with named
        streams it deleted for good, even where it raises: `remove_streams(id, mark)` deletes
        those. Raises OSError."""
        ...

    def may_delete(self, parts: list[str]) -> bool:
        """Whether the file or directory at `parts` may be removed from its directory by
        whoever the file system acts as: write and search access to the directory, and in a
        sticky directory, owning the entry or the directory. False for the share root, or
        when the directory cannot be reached. Raises nothing."""
        ...

    def rename(self, old: list[str], new: list[str], replace: bool, key: tuple | None = None) -> None:
        """Moves `old` to `new`, within the share; `key` as for `remove`. Raises
        FileExistsError when `new` exists and `replace` is false; OSError."""
        ...

    def link(self, old: list[str], new: list[str], replace: bool, key: tuple | None = None) -> None:
        """Gives the file at `old` a second name `new` (a hard link), within the share (`key`
        as for `remove`); with
        `replace`, a file already named `new` is replaced in one step. A symlink at `old` is
        linked itself, never followed. Raises FileExistsError when `new` exists and `replace`
        is false; OSError (EXDEV across file systems, EPERM for a directory, ...)."""
        ...

    def statvfs(self) -> os.statvfs_result:
        """Sizes and free space of the share's file system (FileFsSizeInformation)."""
        ...

    # -- alternate data streams ---------------------------------------------------------------
    def stream_id(self, parts: list[str], create: bool = False, sole_name: bool = False) -> str | None:
        """The id under which the file's named streams are kept; None when it has none and
        `create` is false, or when the file cannot be opened. With `create`, a new id is
        stored on the file. With `sole_name`, None also for a file that has another name (a
        hard link), as one read with the id, and where `parts` names a symbolic link (its
        last component is never followed: removing or replacing that name removes the link,
        not the file it leads to). Raises OSError only when storing a new id fails."""
        ...

    def stream_id_of(self, fd: int, create: bool = False) -> str | None:
        """The same for an open file: the id is read (or stored) on that very file, with the
        rights of whoever the file system acts as, and is that file's only (an id copied
        onto another file gives None). Raises OSError only when storing a new id fails."""
        ...

    def stream_parts(self, sid: str, stream: str | None = None) -> list[str]:
        """The path of the file's stream directory, or of one stream in it: a path into the
        stream depot, which the file system reaches as itself (the server), never as a user
        (a stream's access is decided by its file, at CREATE). Raises PathError for an id or
        stream name no client could have made."""
        ...

    def streams(self, sid: str | None) -> list[tuple[str, os.stat_result]]:
        """The file's named streams with their stats, by name; [] for none (or no id, or no
        stream directory). Raises OSError (a stream removed while they are listed)."""
        ...

    def stream_names(self, sid: str | None) -> list[str]:
        """The names of the file's named streams, in no particular order (no stat each); []
        for none. Raises OSError."""
        ...

    def make_stream_dir(self, sid: str) -> None:
        """Creates the file's stream directory unless it exists. Raises OSError."""
        ...

    def create_stream(self, sid: str, stream: str, owner: tuple[int, int], mode: int = 0o600) -> int:
        """Creates the named stream in the file's stream directory (which exists: see
        `make_stream_dir`), opened read-write, and returns its descriptor. The new stream
        is owned by `owner`, its file's uid and gid, before anything is written to it: disk
        quotas charge a stream's data to its file's owner, as they do the file's own data
        (a file system acting as a single user keeps its own files its own). `mode`: its
        permission bits. Raises FileExistsError, PathError, OSError (nothing is left behind
        when the stream cannot be given to its owner)."""
        ...

    def own_stream(self, sid: str, stream: str, owner: tuple[int, int]) -> None:
        """Gives an existing stream to `owner`, its file's uid and gid, where it is someone
        else's (made by an older version, which left it the server's; or its file changed
        hands since): from then on its data counts in that user's quota. Raises PathError,
        OSError."""
        ...

    def rename_stream(self, sid: str, old: str, new: str, replace: bool) -> None:
        """Renames one of the file's streams (`old` to `new`, both in the file's stream
        directory); without `replace` an existing `new` raises FileExistsError. Raises
        PathError, OSError."""
        ...

    def remove_streams(self, sid: str | None, of=None) -> None:
        """Deletes the streams of a file that is gone (nothing for None); one it cannot
        delete is left. `of`: the file's mark where the id was read from the file without
        checking that its stream directory is that file's (`remove_tree`'s): nothing is
        deleted unless it is. Raises OSError only as `streams` does."""
        ...

    # -- open files ---------------------------------------------------------------------------
    def close_file(self, fd: int) -> None:
        """Closes a descriptor `open` returned. Raises OSError (EBADF)."""
        ...

    def set_range_locks(self, fd: int, changes: list[tuple[int, int, int]]) -> int:
        """Sets the kernel byte-range locks the open file's description holds (open file
        description locks, which other programs' POSIX locks see), in order: each change
        (start, end, kind) makes [start, end) RANGE_UNLOCKED, RANGE_READ or RANGE_WRITE
        (0 < end <= 2**63 - 1). A write lock on a descriptor not open for writing is taken
        as a read lock (the most it may hold). Stops at a change another program's lock
        refuses; how many were made. Raises OSError otherwise."""
        ...

    def set_times_as_writer(self, fd: int, atime_ns: int, mtime_ns: int) -> None:
        """`set_times` of a file the account may write but does not own, which POSIX lets
        only the owner do and Windows lets any writer (Samba's `dos filetimes`): where the
        account may write the file (asked of the open file, as the account), its times are
        set with the server's rights. PermissionError otherwise, or where the server has no
        other rights than the account's."""
        ...

    def range_locked(self, fd: int, start: int, end: int, write: bool) -> bool:
        """Whether a kernel lock of another open file description (another program's, or
        another open's) stops reading [start, end) of the open file (writing, `write`): a
        write lock over any of it, or for a write any lock (0 <= start < end <= 2**63 - 1).
        Raises OSError."""
        ...

    def fstat(self, fd: int) -> os.stat_result:
        """The open file's stat (os.stat_result's attributes, not necessarily its type).
        Raises OSError."""
        ...

    def size(self, fd: int) -> int:
        """The open regular file's size (its end of file) alone: what a READ asks, without
        the stat's other fields. Raises OSError."""
        ...

    def read_head(self, fd: int, size: int) -> bytes:
        """At most `size` bytes from the start of the open file: the few the protocol core
        reads itself (a Finder information stream's 60, for a listing); file data that a
        client reads goes by FileIO. Raises OSError."""
        ...

    def write_head(self, fd: int, data: bytes) -> None:
        """Writes `data` at the start of the open file: the few bytes the protocol core writes
        itself (a "._" file's Finder information and extended attributes, taken into streams:
        smb.appledouble); file data that a client writes goes by FileIO. Raises OSError."""
        ...

    def copy_range(self, src_fd: int, offset: int, dst_fd: int, length: int) -> None:
        """Copies `length` bytes at `offset` of one open file to the start of another, in the
        kernel, at once (the caller bounds `length`: a "._" file's resource fork taken into its
        stream). Raises OSError, also where the source ends first."""
        ...

    def ftruncate(self, fd: int, size: int) -> None:
        """Sets the file's size (end of file), cutting or extending it with zeros. Raises
        OSError (EFBIG, ENOSPC, EINVAL), OverflowError for a size beyond 64 bits."""
        ...

    def fchmod(self, fd: int, mode: int) -> None:
        """Sets the file's permission bits (READONLY is the absence of the write bits).
        Raises OSError."""
        ...

    def set_write_bits(self, fd: int, mode: int) -> None:
        """Sets the file's mode to `mode`, which differs from its mode in write bits only:
        the READONLY attribute, which Windows lets anyone granted FILE_WRITE_ATTRIBUTES set
        (the caller checked the open holds it), though POSIX lets only the owner chmod; with
        the server's rights. ValueError where other bits would change; PermissionError where
        the server has no other rights than the account's."""
        ...

    def fchown_group(self, fd: int, gid: int) -> None:
        """Gives the file to the Unix group `gid` (its owner unchanged), as the kernel allows
        the caller: its owner to one of its groups, root to any. Raises OSError (EPERM)."""
        ...

    def opened_parts(self, fd: int) -> list[str] | None:
        """The path of the open file beneath the share's root, as the kernel resolved it
        (symbolic links followed): [] for the root itself, None where it cannot say (a file
        removed since, or not beneath the root)."""
        ...

    def fchown_user(self, fd: int, uid: int) -> None:
        """Gives the file to the Unix user `uid` (its group unchanged), which the kernel lets
        root alone do. Raises OSError (EPERM)."""
        ...

    def give_new_file(self, fd: int, uid: int) -> None:
        """Gives a file or directory a CREATE has just made (and nothing else: the caller's
        word) to the Unix user `uid`, with the server's rights (`inherit owner`: its
        directory's owner). Raises OSError (EPERM where the server has no other rights than
        the account's)."""
        ...

    def set_times(self, fd: int, atime_ns: int, mtime_ns: int) -> None:
        """Sets the file's access and modification times (ns since the Unix epoch). Raises
        OSError."""
        ...

    def allocate(self, fd: int, size: int) -> None:
        """Reserves disk space for the first `size` bytes without changing the file's size,
        where the file system can; where it cannot, nothing happens. Raises nothing."""
        ...

    def names(self, fd: int, limit: int | None = None) -> list[str]:
        """The names in the open directory, without "." and "..", in no particular order;
        with `limit`, at most that many, read without reading the rest (whether a directory
        is empty costs one entry, however many it holds). Raises OSError."""
        ...

    def entry_stat(self, dir_fd: int, dir_parts: list[str], name: str) -> os.stat_result | None:
        """The stat of an entry of the open directory at `dir_parts`, None once it is gone. A
        symlink shows as its target when that lies inside the share, else as the link itself
        (a listing reveals nothing of files outside). Raises nothing."""
        ...

    def entry_details(self, dir_fd: int, dir_parts: list[str], names: list[str], start: int,
                      count: int) -> bytes:
        """What `entry_stat` and `get_dos_at` give for names[start:start + count] (entries of
        the open directory at `dir_parts`, at most as many as there are), in one call: a
        record per name, packed as ``smbring._dirent.RECORD`` (flags: PRESENT unless the
        entry is gone, HAS_DOS when DOS information is stored, NEEDS_GENERAL for a value no
        record holds; the mode, inode, device, size, access, modification and change times in
        ns of the stat; the DOS information's fields). A listing's cost is these calls.
        Raises ValueError for a name that is not one component, OSError for a descriptor
        that is no directory."""
        ...

    def has_default_acl(self, fd: int) -> bool:
        """Whether the open directory has a default POSIX ACL: the kernel then makes the mode
        of what is created in it from that ACL and the mode asked for, and the server sets no
        mode over it (the create mask is applied through the mode asked for)."""
        ...

    def may_access(self, dir_fd: int, name: str, mode: int) -> bool:
        """Whether whoever the file system acts as may read (``os.R_OK``) or write
        (``os.W_OK``) an entry of the open directory, as the kernel judges it (mode bits,
        ACLs; root may do both), a symlink by its target (`entry_stat` shows a symlink
        leading out of the share as a link: the caller judges those). False for an entry
        gone. Raises nothing."""
        ...

    def may_open(self, parts: list[str], mode: int) -> bool:
        """Whether whoever the file system acts as may read (MAY_READ) and/or write
        (MAY_WRITE) the file at `parts`, as the kernel judges it (mode bits, ACLs), asked
        before a CREATE starts anything on other clients' behalf (breaks). True where it
        cannot tell (the open that follows decides). Raises nothing."""
        ...

    def may_access_open(self, fd: int, mode: int) -> bool:
        """Whether whoever the file system acts as may read (MAY_READ) and/or write (MAY_WRITE)
        the open file, as the kernel judges it (mode bits, ACLs, groups): a stream's rights
        are its file's. Raises nothing."""
        ...

    def reachable(self) -> bool:
        """Whether whoever the file system acts as may reach the share's directory by its
        path: search permission on it and on every directory above it (what a chdir into it
        needs). Raises nothing."""
        ...

    # -- what Windows keeps and Unix does not -------------------------------------------------
    def get_dos(self, fd: int) -> DosInfo | None:
        """The DOS attributes, creation and change times and allocation size stored for the
        file, None if none are. Raises OSError for a failure other than there being none."""
        ...

    def get_dos_at(self, dir_fd: int, name: str) -> DosInfo | None:
        """The same for an entry of an open directory (listings). Raises nothing."""
        ...

    def set_dos(self, fd: int, info: DosInfo) -> None:
        """Stores the file's DOS information. Raises OSError (ENOTSUP where nothing can be
        stored, ENOSPC, ...)."""
        ...

    def get_sd(self, fd: int) -> bytes | None:
        """The security descriptor a client set on the file (self-relative, as sent), None if
        none was. Raises OSError for a failure other than there being none."""
        ...

    def get_sd_and_dos(self, fd: int, device: int) -> tuple[bytes | None, DosInfo | None]:
        """`get_sd` and `get_dos` of the open file at once (`device`: its st_dev), raising
        what either raises; each None where it is not stored."""
        ...

    def set_sd(self, fd: int, blob: bytes) -> None:
        """Stores the file's security descriptor. Raises OSError."""
        ...

    def list_eas(self, fd: int) -> list[tuple[str, bytes]]:
        """The file's extended attributes (OS/2 EAs) by name, the server's own metadata left
        out; [] where the file system keeps none. Raises OSError."""
        ...

    def set_ea(self, fd: int, name: str, value: bytes) -> None:
        """Sets an extended attribute; an empty value removes it (as NTFS does). Raises
        PathError for a name reserved for the server's own metadata, OSError."""
        ...
