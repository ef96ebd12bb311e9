"""The posix VFS module: a share's files through plain syscalls, every path resolved beneath
the share root with openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS), so ``..``, absolute
paths and symlinks leading out of the share cannot escape it, whatever the client sends.

`PosixVFS` implements the file system the SMB core calls (``smbring.smb.fs.FileSystem``)."""
from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import itertools
import logging
import os
import stat
import struct
from typing import NamedTuple

from smbring._dirent import (NEEDS_GENERAL, PRESENT, RECORD, RECORD_SIZE, get_xattr, lstat_at, read_names,
                             set_status_flags, stat_entries)
from smbring._dirent import fstat as _fstat
from smbring._dirent import range_locked as _range_locked
from smbring.uring import RESOLVE_BENEATH, RESOLVE_NO_MAGICLINKS, RESOLVE_NO_SYMLINKS, openat2
from smbring.vfs import extents
from smbring.vfs.case_index import CaseIndex
from smbring.vfs.short_names import may_be_mangled
from smbring.vfs.api import (  # noqa: F401  (the path rules: importable from here too)
    STREAMS_DIR,
    DosInfo,
    NotAFile,
    PathError,
    check_stream_name,
    nameable,
    split_path,
    split_stream,
)

log = logging.getLogger("smbring.vfs")

BENEATH = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS
# a path into the stream depot follows no symlink at all: the server opens streams as itself
# (root), and a link planted there (by a local user, in a depot an older version left to him)
# must not lead to another file of the share
IN_DEPOT = BENEATH | RESOLVE_NO_SYMLINKS
FALLOC_FL_KEEP_SIZE = 0x1
# what a file system that keeps no kernel byte-range locks answers (extents.set_range_locks)
_NO_KERNEL_LOCKS = extents.NO_KERNEL_LOCKS

# Alternate data streams ("file.txt:Zone.Identifier") live as plain files in a directory per
# file, named by an id stored on the file (so they follow renames), under STREAMS_DIR in the
# share root, which clients can neither list nor name (Samba's streams_depot does the same).
# Every path into it is <STREAMS_DIR>/<id>/<stream>, the id 16 hex digits, the stream name one
# plain component: nothing a client names, nor an id someone else stored, leads elsewhere.
# The depot and everything in it belong to the server (0700 directories, 0600 files): a server
# running as root opens streams as itself, after judging the user's rights on the base file
# as the user (smb/commands/create.py), so no local user reaches stream data in the depot.
# Each file's directory records the file it belongs to (its device and inode, STREAM_BASE_XATTR):
# an id copied onto another file (a local user may set user.* xattrs on his own files) reaches
# no stream of the first.
STREAM_ID_XATTR = "user.smbring.streams"
STREAM_BASE_XATTR = "user.smbring.base"
STREAM_ID_DIGITS = frozenset("0123456789abcdef")
# the inode's generation (ext4, btrfs, XFS: a new number whenever an inode number is used
# again), recorded beside the device and inode where the file system has one: a file made on
# the inode number of a deleted one, carrying the deleted file's id (copied by a local user
# who could read it), does not get its streams
FS_IOC_GETVERSION = 0x80087601


class FileMark(NamedTuple):
    """What a stream directory records of its file: device, inode and (where the file system
    keeps one) the inode's generation."""
    st_dev: int
    st_ino: int
    generation: int | None = None

    def record(self) -> bytes:
        gen = "" if self.generation is None else f":{self.generation}"
        return f"{self.st_dev}:{self.st_ino}{gen}".encode("ascii")

    @classmethod
    def parse(cls, recorded: bytes) -> "FileMark | None":
        parts = recorded.decode("ascii", "replace").split(":")
        try:
            numbers = [int(p) for p in parts]
        except ValueError:
            return None
        return cls(*numbers) if len(numbers) in (2, 3) else None

    def is_of(self, file: "FileMark", same_device: bool = True) -> bool:
        """Whether the file `file` is the one this records (in a snapshot, `same_device`
        false: its inode alone, the snapshot's device being another)."""
        if self.st_ino != file.st_ino or same_device and self.st_dev != file.st_dev:
            return False
        return self.generation is None or file.generation is None or self.generation == file.generation


def file_mark(fd: int, st: os.stat_result) -> FileMark:
    """The open file's FileMark (its generation None where the file system keeps none or the
    descriptor cannot ask: an O_PATH one)."""
    try:
        generation = struct.unpack_from("<I", fcntl.ioctl(fd, FS_IOC_GETVERSION, bytes(8)))[0]
    except OSError:
        generation = None
    return FileMark(st.st_dev, st.st_ino, generation)


def _same_but_case(entries: list[str], name: str) -> str | None:
    """The first of a directory's entries that is `name` but for case (casefold() equal),
    if any. The entries are folded and searched as one string, NUL-separated (no name holds
    a NUL), not one by one: a directory of thousands of entries is looked through on every
    new file's CREATE."""
    if "\0" in name or not entries:
        return None
    folded = "\0" + "\0".join(entries).casefold() + "\0"
    at = folded.find("\0" + name.casefold() + "\0")
    if at < 0:
        return None
    match = entries[folded.count("\0", 0, at)]   # (folding keeps the NULs: they count entries)
    # the name as given where it is there too (made since it was looked up): as a lookup finds it
    return name if match != name and name in entries else match


# a stream name's control characters, as its depot file names them: ":" and two hex digits
# (no stream name holds a ":", so no other name is spelled so; no file name gets a control
# character, which a listing of the depot would otherwise print raw)
CONTROL_CHARACTERS = frozenset(chr(c) for c in range(1, 32))


def depot_name(stream: str) -> str:
    """The depot file name of a (checked) stream name."""
    if not CONTROL_CHARACTERS & set(stream):
        return stream
    return "".join(f":{ord(ch):02x}" if ch in CONTROL_CHARACTERS else ch for ch in stream)


def stream_name(entry: str) -> str | None:
    """The stream name a depot file name spells (`depot_name`'s inverse); None for one no
    stream has."""
    if ":" not in entry:
        return entry
    head, *rest = entry.split(":")
    try:
        decoded = [chr(int(piece[:2], 16)) + piece[2:] for piece in rest]
    except ValueError:
        return None
    if any(len(piece) < 2 or chr(int(piece[:2], 16)) not in CONTROL_CHARACTERS for piece in rest):
        return None
    return head + "".join(decoded)


def valid_stream_id(sid: str) -> bool:
    return len(sid) == 16 and set(sid) <= STREAM_ID_DIGITS


def _drop_acls(fd: int) -> None:
    """Removes the POSIX ACLs an inherited default ACL gave a depot entry."""
    for name in ("system.posix_acl_access", "system.posix_acl_default"):
        try:
            os.removexattr(fd, name)
        except OSError:
            pass


def _make_servers(fd: int, mode: int) -> None:
    os.fchown(fd, os.geteuid(), os.getegid())
    os.fchmod(fd, mode)
    _drop_acls(fd)


def _take_over_entry(dir_fd: int, name: str, mode: int, inside=None) -> None:
    """An entry of a depot being taken over: a directory (`inside` then walks it) or a plain
    file with one name becomes the server's with `mode`; anything else (a symlink, a hard link,
    a FIFO a local user left) is removed, never followed."""
    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    wanted = stat.S_ISDIR(st.st_mode) if inside is not None else stat.S_ISREG(st.st_mode) and st.st_nlink == 1
    if not wanted:
        log.warning("stream depot: %s (mode %o, %d links) is no stream: removed", name, st.st_mode, st.st_nlink)
        try:
            os.unlink(name, dir_fd=dir_fd)
        except OSError as e:
            log.warning("stream depot: %s not removed: %s", name, e)
        return
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | (os.O_DIRECTORY if inside is not None else 0)
    fd = os.open(name, flags, dir_fd=dir_fd)
    try:
        _make_servers(fd, mode)
        if inside is not None:
            inside(fd)
    finally:
        os.close(fd)


def stream_id_by_path(fs, parts: list[str], create: bool = False, sole_name: bool = False) -> str | None:
    """`stream_id` made of the file system's own `open`, `stream_id_of` and `close_file`:
    PosixVFS's, and a ShareView's (which opens the file as its user and checks the stream
    directory as the server). None where the file cannot be opened, and for a path into
    the depot (a stream has no streams: nothing there is opened for this); with
    `sole_name`, also for a file with another name (the link count read through the same
    open), and for a name that is a symbolic link: removing or replacing that name removes
    the link (unlink and rename never follow one), never the file it leads to, whose streams
    are still its own (the last component is not followed: O_NOFOLLOW, ELOOP)."""
    if parts and parts[0] == STREAMS_DIR:
        return None
    try:
        fd = fs.open(parts, os.O_RDONLY | (os.O_NOFOLLOW if sole_name else 0))
    except OSError:
        return None
    try:
        if sole_name and not stat.S_ISDIR((st := fs.fstat(fd)).st_mode) and st.st_nlink > 1:
            return None
        return fs.stream_id_of(fd, create)
    finally:
        fs.close_file(fd)


def rename_at(ofd: int, oname: str, nfd: int, nname: str, replace: bool) -> None:
    """rename(2) of `oname` in the directory `ofd` to `nname` in `nfd` (names, never followed);
    without `replace`, an existing `nname` is FileExistsError."""
    if not replace:
        try:
            os.stat(nname, dir_fd=nfd, follow_symlinks=False)
            raise FileExistsError(errno.EEXIST, "exists")
        except FileNotFoundError:
            pass
    os.rename(oname, nname, src_dir_fd=ofd, dst_dir_fd=nfd)


DFS_PREFIX = "msdfs:"        # a symbolic link's target that makes it an MS-DFS link (as Samba's)


def _as_directory(st: os.stat_result) -> os.stat_result:
    """A link's stat made a directory's (mode 0755, size 0), its times and ids kept."""
    fields = list(st[:10])
    fields[0], fields[6] = stat.S_IFDIR | 0o755, 0
    return os.stat_result(fields, {name: getattr(st, name) for name in (
        "st_atime", "st_mtime", "st_ctime", "st_atime_ns", "st_mtime_ns", "st_ctime_ns", "st_blksize",
        "st_blocks", "st_rdev")})


class PosixVFS:
    """A share's files beneath its root directory (one descriptor of it, held until close)."""

    def __init__(self, root: str, follow_symlinks: bool = True, snapshot: bool = False):
        self.root = os.path.realpath(root)
        # a previous version's view (a file-system snapshot of the share, read-only): its files
        # keep their inodes but lie on another device (a btrfs or ZFS snapshot, an LVM one
        # mounted), so a stream directory answers its file by inode (claim_streams)
        self.snapshot = snapshot
        # `follow symlinks = no` (Samba's): no path through a symbolic link is looked up at all
        # (ELOOP, which clients see as STATUS_ACCESS_DENIED); else those that stay beneath the
        # root are followed
        self.follow_symlinks = follow_symlinks
        self.root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.depot = os.path.join(self.root, STREAMS_DIR)
        self.case_index = CaseIndex(_same_but_case, read_names)   # what match_case reads

    def close(self) -> None:
        self.case_index.close()
        os.close(self.root_fd)

    def rel(self, parts: list[str]) -> str:
        return "/".join(parts) if parts else "."

    @staticmethod
    def resolve(parts: list[str]) -> int:
        """openat2's RESOLVE_* flags for a path: no symlink at all into the stream depot."""
        return IN_DEPOT if parts and parts[0] == STREAMS_DIR else BENEATH

    def open(self, parts: list[str], flags: int, mode: int = 0o644) -> int:
        """An fd of the regular file or directory; anything else raises NotAFile, at once. The
        open itself never waits (O_NONBLOCK: a FIFO would wait for a writer) nor takes a
        terminal (O_NOCTTY); the fd then gets back the flags asked for, so a file is blocking
        again (io_uring answers EAGAIN on a non-blocking one). O_PATH opens nothing: as is."""
        if flags & os.O_PATH:
            return self._openat(parts, flags, mode)
        if self._cannot_wait(flags):
            return self._openat(parts, flags | os.O_NOCTTY, mode)
        return self._open_checked(parts, flags, mode)[0]

    def open_stat(self, parts: list[str], flags: int, mode: int = 0o644) -> tuple[int, os.stat_result]:
        """`open`, and the fd's stat (the one its type was checked with, where it was)."""
        if flags & os.O_PATH or self._cannot_wait(flags):
            fd = self.open(parts, flags, mode)
            try:
                return fd, self.fstat(fd)
            except BaseException:
                os.close(fd)
                raise
        return self._open_checked(parts, flags, mode)

    def _openat(self, parts: list[str], flags: int, mode: int = 0, how: int | None = None) -> int:
        """openat2 of the path beneath the root (`how`: its RESOLVE_* flags, else `resolve`'s).
        A path outside the depot is looked up first with no symlink followed (one system
        call, as before, for every path without one); only one that meets a symlink is looked
        up again following those that stay beneath the root, and what it reaches must not lie
        in the stream depot: the depot is refused by name (split_path), and a link a local
        user made to it (or to a directory of it) would otherwise let a session acting as
        root or as the server's own account reach any file's streams without the checks
        made on their file."""
        rel = self.rel(parts)
        how = self.resolve(parts) if how is None else how
        if how == IN_DEPOT:
            return openat2(self.root_fd, rel, flags, mode, how)
        try:
            return openat2(self.root_fd, rel, flags, mode, how | RESOLVE_NO_SYMLINKS)
        except OSError as e:
            if e.errno != errno.ELOOP or not self.follow_symlinks:
                raise
        if flags & os.O_CREAT and parts:
            self._may_create_through_links(parts, how)
        fd = openat2(self.root_fd, rel, flags, mode, how)
        if self._in_depot(fd):
            os.close(fd)
            log.warning("%s: a symbolic link into the stream depot, refused", rel)
            raise PermissionError(errno.EACCES, "a symbolic link into the stream depot", rel)
        return fd

    def _in_depot(self, fd: int) -> bool:
        try:
            real = os.readlink(f"/proc/self/fd/{fd}")    # where the lookup led
        except OSError:
            return True         # (cannot tell: refused)
        return real == self.depot or real.startswith(self.depot + "/")

    def _may_create_through_links(self, parts: list[str], how: int) -> None:
        """Before an O_CREAT lookup that meets a symlink: what it would make a file in, or
        make through a final dangling link, must not be the depot (checked before, as a file
        made there could not be told from a stream afterwards). Raises PermissionError."""
        pfd = openat2(self.root_fd, self.rel(parts[:-1]), os.O_PATH | os.O_DIRECTORY, 0, how)
        try:
            refused = self._in_depot(pfd)
            if not refused:
                try:
                    final = os.stat(parts[-1], dir_fd=pfd, follow_symlinks=False)
                except FileNotFoundError:
                    return
                if stat.S_ISLNK(final.st_mode):
                    try:
                        fd = openat2(self.root_fd, self.rel(parts), os.O_PATH, 0, how)
                    except FileNotFoundError:
                        fd = None       # a dangling link: nothing is made through it
                    refused = fd is None or self._in_depot(fd)
                    if fd is not None:
                        os.close(fd)
        finally:
            os.close(pfd)
        if refused:
            log.warning("%s: a file made through a symbolic link, refused", self.rel(parts))
            raise PermissionError(errno.EACCES, "a file made through a symbolic link", self.rel(parts))

    @staticmethod
    def _cannot_wait(flags: int) -> bool:
        """Whether the open can only give a directory or a new regular file, so that it neither
        waits nor needs the type checked: O_DIRECTORY (without O_CREAT) fails with ENOTDIR
        on anything else before opening it (a FIFO, a device); O_CREAT | O_EXCL makes the
        file or fails (EEXIST: whatever is there, a symlink included, is not opened)."""
        if flags & os.O_DIRECTORY:
            return not flags & os.O_CREAT
        return flags & (os.O_CREAT | os.O_EXCL) == os.O_CREAT | os.O_EXCL

    def _open_checked(self, parts: list[str], flags: int, mode: int) -> tuple[int, os.stat_result]:
        try:
            fd = self._openat(parts, flags | os.O_NONBLOCK | os.O_NOCTTY, mode)
        except OSError as e:
            if e.errno in (errno.ENXIO, errno.ENODEV):     # a socket; a device without a driver
                raise NotAFile(self.rel(parts)) from None
            raise
        try:
            st = self.fstat(fd)
            if stat.S_IFMT(st.st_mode) not in (stat.S_IFREG, stat.S_IFDIR):
                raise NotAFile(self.rel(parts))
            if st.st_nlink > 1 and stat.S_ISREG(st.st_mode) and self.resolve(parts) == IN_DEPOT:
                # a stream has one name: a hard link in the depot (planted where an older
                # version left it to a user) would be another file of the share
                log.error("%s: a hard link in the stream depot, refused", self.rel(parts))
                raise PermissionError(errno.EACCES, "a hard link in the stream depot")
            if not flags & os.O_NONBLOCK:
                set_status_flags(fd, flags)     # (fcntl F_SETFL: sets only the status flags)
        except BaseException:
            os.close(fd)
            raise
        return fd, st

    def parent(self, parts: list[str]) -> tuple[int, str]:
        """An O_PATH fd of the parent directory (beneath the root) and the last component;
        the share root itself has none that may be touched (EACCES)."""
        if not parts:
            raise PermissionError(errno.EACCES, "the share root cannot be removed or renamed")
        fd = self._openat(parts[:-1], os.O_PATH | os.O_DIRECTORY, 0, self.resolve(parts))
        return fd, parts[-1]

    def stat(self, parts: list[str]) -> os.stat_result:
        if len(parts) <= 1:
            # the root itself or one name in it: the lookup resolves nothing but that entry, so
            # fstatat not following it is the very lookup openat2 makes beneath the root (one
            # system call, not three); a symlink there is resolved beneath the root below
            rel = self.rel(parts)
            st = lstat_at(self.root_fd, rel) or os.stat(rel, dir_fd=self.root_fd, follow_symlinks=False)
            if not stat.S_ISLNK(st.st_mode):
                return st
        fd = self._openat(parts, os.O_PATH)
        try:
            return self.fstat(fd)
        finally:
            os.close(fd)

    def match_case(self, parts: list[str], short_names: bool = False) -> list[str]:
        """The path with each component spelled as on disk, where only its case differs:
        SMB names are case-insensitive (Windows clients ask for "FILE.TXT" to open
        "file.txt"), the file system is not. Called after an exact lookup missed; components
        that exist in no spelling are kept as given (a file about to be created). Each
        directory is opened as the user (the permission check a read of it makes) and
        looked up in the share's CaseIndex, which reads it only where it does not keep its
        names (read_names: getdents64 on that descriptor, none of os.listdir's dup, fstat,
        fcntls and rewind)."""
        if len(parts) > 1:
            # mostly only the last name is missing (a new file in a directory named as on
            # disk): one look in that directory, no walk from the root
            try:
                fd = self.open(parts[:-1], os.O_RDONLY | os.O_DIRECTORY)
            except OSError:
                pass
            else:
                try:
                    match = self._look_up(fd, parts[-1], short_names)
                finally:
                    os.close(fd)
                return parts[:-1] + [match if match is not None else parts[-1]]
        found: list[str] = []
        for i, name in enumerate(parts):
            try:
                self.stat(found + [name])
                found.append(name)
                continue
            except FileNotFoundError:
                pass
            except OSError:
                return found + parts[i:]
            try:
                fd = self.open(found, os.O_RDONLY | os.O_DIRECTORY)
            except OSError:
                return found + parts[i:]
            try:
                match = self._look_up(fd, name, short_names)
            finally:
                os.close(fd)
            if match is None:
                return found + parts[i:]
            found.append(match)
        return found

    def dfs_link(self, parts: list[str]) -> tuple[int, str] | None:
        found: list[str] = []
        for i, name in enumerate(parts):
            try:
                fd = self.open(found, os.O_RDONLY | os.O_DIRECTORY)
            except OSError:
                return None
            spelled = name
            try:
                spelled = self._look_up(fd, name, False) or name
                target = os.readlink(spelled, dir_fd=fd)
            except OSError:         # (EINVAL: no link; ENOENT: nothing of that name)
                found.append(spelled)
                continue
            finally:
                os.close(fd)
            return (i + 1, target[len(DFS_PREFIX):]) if target.startswith(DFS_PREFIX) else None
        return None

    def match_case_in(self, dir_fd: int, name: str, short_names: bool = False) -> str | None:
        """The share's CaseIndex's answer for a directory the caller opened (as the user)."""
        return self._look_up(dir_fd, name, short_names)

    def _look_up(self, dir_fd: int, name: str, short_names: bool) -> str | None:
        """`name` in the directory open at dir_fd, in any case; with `short_names`, a name it
        holds in no spelling may be a long name's mangled short name (vfs.short_names)."""
        mangled = short_names and may_be_mangled(name)
        match = self.case_index.find(dir_fd, name, mangled)
        if mangled and match is not None and match.casefold() != name.casefold() and not nameable(match):
            # (a long name found by its short name) a name no client may send (the stream
            # depot, which the server opens as itself; a reserved or unspellable name) is not
            # reached through its short name either
            match = None
        return match

    @staticmethod
    def stream_parts(sid: str, stream: str | None = None) -> list[str]:
        """Where the streams of a file live (its stream id), or one of them."""
        if not valid_stream_id(sid):
            raise PathError("invalid")
        if stream is None:
            return [STREAMS_DIR, sid]
        check_stream_name(stream)
        name = depot_name(stream)
        if len(name.encode("utf-8", "surrogatepass")) > 255:
            raise PathError("invalid")      # (its control characters spelled out: too long)
        return [STREAMS_DIR, sid, name]

    def stream_id(self, parts: list[str], create: bool = False, sole_name: bool = False) -> str | None:
        """The id under which the file's streams are kept (see `stream_id_of`); None also
        when the file cannot be opened (and, with `sole_name`, when it has another name)."""
        return stream_id_by_path(self, parts, create, sole_name)

    def stream_id_of(self, fd: int, create: bool = False) -> str | None:
        """The id under which the open file's streams are kept: `stream_key` (read, or stored,
        with the caller's rights on the file), then `claim_streams` (in the depot)."""
        found = self.stream_key(fd, create)
        if found is None:
            return None
        sid, st = found
        return sid if self.claim_streams(sid, st, create) else None

    @staticmethod
    def stream_key(fd: int, create: bool = False) -> tuple[str, FileMark] | None:
        """The stream id stored on the open file, a random one (so a file that replaces a
        deleted one, even on the same inode, never sees the old file's streams), and the
        file's FileMark; None if it has none and `create` is false. An id that is not one of
        ours (set by someone with local access) counts as none and is replaced."""
        try:
            sid = os.getxattr(fd, STREAM_ID_XATTR).decode("ascii", "replace")
            if valid_stream_id(sid):
                return sid, file_mark(fd, os.fstat(fd))
        except OSError as e:
            if e.errno != errno.ENODATA:
                return None
        if not create:
            return None
        sid = os.urandom(8).hex()
        os.setxattr(fd, STREAM_ID_XATTR, sid.encode("ascii"))
        return sid, file_mark(fd, os.fstat(fd))

    def claim_streams(self, sid: str, mark: FileMark, create: bool) -> bool:
        """Whether the id's stream directory belongs to the file `mark` is of: it records the
        file's device, inode and generation (made now with `create`, recorded now in a
        directory an older version made, the generation added to one recorded without it);
        False for one another file's id named (an id copied from file to file, or onto a
        file on a deleted one's inode number), which reaches nothing. In a snapshot the inode
        alone decides (the snapshot's device is not the live file's; within one file system
        no other file has the inode). Run as the server."""
        base = mark.record()
        self.check_depot()
        try:
            fd = openat2(self.root_fd, self.rel(self.stream_parts(sid)), os.O_RDONLY | os.O_DIRECTORY, 0, IN_DEPOT)
        except FileNotFoundError:
            if not create:
                return True     # no streams: nothing to reach
            self.make_stream_dir(sid)
            fd = openat2(self.root_fd, self.rel(self.stream_parts(sid)), os.O_RDONLY | os.O_DIRECTORY, 0, IN_DEPOT)
        except OSError:
            return False
        try:
            try:
                recorded = os.getxattr(fd, STREAM_BASE_XATTR)
            except OSError as e:
                if e.errno != errno.ENODATA:
                    return False
                if not self.snapshot:       # (a snapshot is not written; unrecorded, as here)
                    os.setxattr(fd, STREAM_BASE_XATTR, base)
                return True
            found = FileMark.parse(recorded)
            if found is None or not found.is_of(mark, same_device=not self.snapshot):
                log.warning("stream id %s stored on a file (inode %d) its streams do not belong to: "
                            "its streams are not reached", sid, mark.st_ino)
                return False
            if found.generation is None and mark.generation is not None and not self.snapshot:
                os.setxattr(fd, STREAM_BASE_XATTR, base)     # (recorded by an older version)
            return True
        finally:
            os.close(fd)

    def streams(self, sid: str | None) -> list[tuple[str, os.stat_result]]:
        return sorted(self._stream_entries(sid, with_stat=True))

    def stream_names(self, sid: str | None) -> list[str]:
        """The names of the file's named streams, in no particular order, without a stat
        each (what a CREATE looks through for a name spelled in another case)."""
        return [name for name, _st in self._stream_entries(sid, with_stat=False)]

    def _stream_entries(self, sid: str | None, with_stat: bool) -> list[tuple]:
        """(name, its stat or None) of each of the file's named streams, in no particular
        order; none where the file has no stream directory."""
        if not sid:
            return []
        try:
            fd = self.open(self.stream_parts(sid), os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            return []
        try:
            named = ((stream_name(n), n) for n in os.listdir(fd))
            return [(name, os.stat(entry, dir_fd=fd, follow_symlinks=False) if with_stat else None)
                    for name, entry in named if name is not None]
        finally:
            os.close(fd)

    def make_stream_dir(self, sid: str) -> None:
        """The depot and the file's directory in it, the server's own (0700: made as the
        server, whatever a directory mask or a default ACL would give)."""
        self.check_depot()
        for i in (1, 2):
            try:
                self.mkdir(self.stream_parts(sid)[:i], 0o700)
            except FileExistsError:
                continue
            fd = openat2(self.root_fd, self.rel(self.stream_parts(sid)[:i]), os.O_RDONLY | os.O_DIRECTORY,
                         0, IN_DEPOT)
            try:
                os.fchmod(fd, 0o700)     # (a default ACL in the share root would have widened it)
                _drop_acls(fd)
            finally:
                os.close(fd)

    def create_stream(self, sid: str, stream: str, owner: tuple[int, int], mode: int = 0o600) -> int:
        """The new stream, made by the server in its depot and given to the file's owner at
        once (before its descriptor is anyone's to write to): its blocks and inode count in
        that user's quota, not the server's (on which none is set). The depot's directories
        stay the server's (0700): the owner cannot reach the stream by its path."""
        parts = self.stream_parts(sid, stream)
        fd = self.open(parts, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        try:
            if os.geteuid() == 0:       # (a server that is not root owns everything it makes)
                os.fchown(fd, *owner)
            os.fchmod(fd, mode)
        except BaseException:
            os.close(fd)
            try:
                self.remove(parts, False)
            except OSError:
                pass
            raise
        return fd

    def rename_stream(self, sid: str, old: str, new: str, replace: bool) -> None:
        """Gives the stream `old` of the file (its id) the name `new`, in the file's own
        stream directory (rename(2) there moves names, never follows one); without `replace`,
        an existing `new` is FileExistsError."""
        self.stream_parts(sid, old), self.stream_parts(sid, new)       # (both checked)
        fd = openat2(self.root_fd, self.rel(self.stream_parts(sid)), os.O_RDONLY | os.O_DIRECTORY, 0, IN_DEPOT)
        try:
            rename_at(fd, old, fd, new, replace)
        finally:
            os.close(fd)

    def own_stream(self, sid: str, stream: str, owner: tuple[int, int]) -> None:
        """(See create_stream.) The stream is opened by its path in the depot (no link
        followed, a hard link refused): what is given away is a stream, never another file
        of the share."""
        if os.geteuid() != 0:
            return
        fd = self.open(self.stream_parts(sid, stream), os.O_RDONLY)
        try:
            st = os.fstat(fd)
            if (st.st_uid, st.st_gid) != tuple(owner):
                os.fchown(fd, *owner)
        finally:
            os.close(fd)

    def check_depot(self) -> None:
        """The depot, where it exists, is the server's (its owner, 0700). One an older version
        left (made by the first user to make a stream, 0755, that user's) is taken over: made
        the server's with everything in it, links in it removed. Where the server cannot (not
        root, and someone else's), PermissionError, and the log says what to do."""
        try:
            st = os.stat(STREAMS_DIR, dir_fd=self.root_fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        uid = os.geteuid()
        if st.st_uid == uid and stat.S_ISDIR(st.st_mode) and not st.st_mode & 0o077:
            return
        if self.snapshot:
            # nothing in a previous version is changed, nor taken over: one not the server's
            # alone (an older version's, or made by a writer of the share's snapshot
            # directory) offers no streams
            raise PermissionError(errno.EACCES, "a snapshot's stream depot is not the server's")
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid and uid != 0:
            log.error("%s/%s is not a directory of the server's (uid %d) that it can take over: "
                      "streams refused; make it the server's (chown, chmod 0700) or remove it",
                      self.root, STREAMS_DIR, uid)
            raise PermissionError(errno.EACCES, "the stream depot is not the server's")
        log.warning("%s/%s: a stream depot of uid %d, mode %o (an older version's): taken over "
                    "by the server (owner uid %d, 0700)", self.root, STREAMS_DIR, st.st_uid,
                    stat.S_IMODE(st.st_mode), uid)
        fd = openat2(self.root_fd, STREAMS_DIR, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, 0, IN_DEPOT)
        try:
            _make_servers(fd, 0o700)    # first: nobody else reaches what is below from now on
            for name in os.listdir(fd):
                _take_over_entry(fd, name, 0o700, lambda d: [_take_over_entry(d, n, 0o600) for n in os.listdir(d)])
        finally:
            os.close(fd)

    def remove_streams(self, sid: str | None, of: FileMark | None = None) -> None:
        """Deletes the streams of a file that is gone; `of`: its FileMark, where the id was
        read from the file but not yet checked to be its own (`claim_streams`)."""
        if not sid or of is not None and not self.claim_streams(sid, of, False):
            return
        for name, _st in self.streams(sid):
            try:
                self.remove(self.stream_parts(sid, name), False)
            except (OSError, PathError):    # PathError: a name no client could have made
                pass
        try:
            self.remove(self.stream_parts(sid), True)
        except OSError:
            pass

    def mkdir(self, parts: list[str], mode: int = 0o755) -> None:
        fd, name = self.parent(parts)
        try:
            os.mkdir(name, mode, dir_fd=fd)
        finally:
            os.close(fd)

    def remove(self, parts: list[str], is_dir: bool, key: tuple | None = None) -> None:
        fd, name = self.parent(parts)
        try:
            self._still_names(fd, name, parts, key)
            if is_dir:
                os.rmdir(name, dir_fd=fd)
            else:
                os.unlink(name, dir_fd=fd)
        finally:
            os.close(fd)

    def remove_tree(self, parts: list[str], most: int, gone: list) -> int:
        fd, name = self.parent(parts)
        left = [most]
        try:
            _remove_tree_at(fd, name, left, gone)
        finally:
            os.close(fd)
        return most - left[0]

    def may_delete(self, parts: list[str]) -> bool:
        """unlink(2)'s own rules, asked before a DELETE is granted: write and search access to
        the directory (faccessat with the effective ids: the calling thread's), and in a sticky
        directory owning the entry or the directory (root may always)."""
        try:
            fd, name = self.parent(parts)
        except OSError:
            return False
        try:
            if not os.access(".", os.W_OK | os.X_OK, dir_fd=fd, effective_ids=True):
                return False
            directory = os.fstat(fd)
            if not directory.st_mode & stat.S_ISVTX:
                return True
            uid = os.geteuid()
            return uid in (0, directory.st_uid) or \
                os.stat(name, dir_fd=fd, follow_symlinks=False).st_uid == uid
        except OSError:
            return False
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _two_parents(self, old: list[str], new: list[str], key: tuple | None):
        """The directories of `old` and `new` (descriptors, closed after) and their last
        names, `old` checked to be the file `key` still (_still_names)."""
        ofd, oname = self.parent(old)
        try:
            nfd, nname = self.parent(new)
        except BaseException:
            os.close(ofd)
            raise
        try:
            self._still_names(ofd, oname, old, key)
            yield ofd, oname, nfd, nname
        finally:
            os.close(ofd)
            os.close(nfd)

    def rename(self, old: list[str], new: list[str], replace: bool, key: tuple | None = None) -> None:
        with self._two_parents(old, new, key) as (ofd, oname, nfd, nname):
            rename_at(ofd, oname, nfd, nname, replace)

    def link(self, old: list[str], new: list[str], replace: bool, key: tuple | None = None) -> None:
        """linkat(2) without following a final symlink (one pointing out of the share would
        otherwise give an outside file a name inside it); replacing links a temporary name
        first and renames it over the old file, so the name is never missing."""
        with self._two_parents(old, new, key) as (ofd, oname, nfd, nname):
            if not replace:
                os.link(oname, nname, src_dir_fd=ofd, dst_dir_fd=nfd, follow_symlinks=False)
                return
            temporary = f".smbring-link-{os.urandom(8).hex()}"
            os.link(oname, temporary, src_dir_fd=ofd, dst_dir_fd=nfd, follow_symlinks=False)
            try:
                os.rename(temporary, nname, src_dir_fd=nfd, dst_dir_fd=nfd)
            except BaseException:
                os.unlink(temporary, dir_fd=nfd)
                raise

    def _still_names(self, dir_fd: int, name: str, parts: list[str], key: tuple | None) -> None:
        """Raises FileNotFoundError unless `name` in the directory `dir_fd` is still the file
        `key` (its device and inode; None: any), itself or through a symlink resolved beneath
        the root. A handle acts on its file by the name it was opened with, and another process
        may have moved the file away and put another file, or a link to one, in its place
        since: deleting, moving or linking that name would reach a file the client never
        opened (Samba checks the file's id before a delete on close for the same reason).
        A symlink that leads to the file counts as its name, as it did when the file was
        opened through it: what goes is the name (unlink and rename never follow a link),
        never the file it leads to. The one check for a delete on close of this process's
        opens and of another worker's (smb.connection Connection._delete_on_close)."""
        if key is None:
            return
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                st = self.stat(parts)
        except OSError:
            st = None
        if st is None or (st.st_dev, st.st_ino) != tuple(key):
            raise FileNotFoundError(errno.ENOENT, "the name no longer names the open file", self.rel(parts))

    def statvfs(self) -> os.statvfs_result:
        return os.statvfs(self.root_fd)

    # -- open files ---------------------------------------------------------------------------
    @staticmethod
    def close_file(fd: int) -> None:
        os.close(fd)

    # (a module's function: a costly change is made in the server's file I/O threads too, the
    # core's SetRangeLocks effect)
    set_range_locks = staticmethod(extents.set_range_locks)

    @staticmethod
    def range_locked(fd: int, start: int, end: int, write: bool) -> bool:
        # (F_OFD_GETLK asked in C: asked on every READ and WRITE of a share that mirrors its
        # locks, struct and fcntl cost several times the call; it checks the range as well)
        try:
            return _range_locked(fd, start, end, write)
        except OSError as e:
            if e.errno not in _NO_KERNEL_LOCKS:
                raise
            return False        # (a file system that keeps none: see set_range_locks)

    @staticmethod
    def fstat(fd: int) -> os.stat_result:
        # (smbring._dirent's stat: os.stat_result's attributes, its fields made only as they
        # are read, a third of os.fstat's cost; os.fstat's where a time is beyond 64-bit ns)
        return _fstat(fd) or os.fstat(fd)

    @staticmethod
    def read_head(fd: int, size: int) -> bytes:
        return os.pread(fd, size, 0)

    @staticmethod
    def write_head(fd: int, data: bytes) -> None:
        view = memoryview(data)
        done = 0
        while done < len(view):
            done += os.pwrite(fd, view[done:], done)

    @staticmethod
    def copy_range(src_fd: int, offset: int, dst_fd: int, length: int) -> None:
        done = 0
        while done < length:
            try:
                n = os.copy_file_range(src_fd, dst_fd, length - done, offset + done, done)
            except OSError as e:
                if e.errno not in (errno.EXDEV, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS):
                    raise
                # (file systems that refuse it: the bytes through memory, a MiB at a time)
                chunk = os.pread(src_fd, min(length - done, 1 << 20), offset + done)
                n = os.pwrite(dst_fd, chunk, done) if chunk else 0
            if not n:
                raise OSError(errno.EIO, "the source ended before the range copied")
            done += n

    @staticmethod
    def size(fd: int) -> int:
        # (lseek to the end: the size as fstat gives it, for a quarter of the cost of building
        # a stat_result; no read or write here depends on the file offset, all give theirs)
        return os.lseek(fd, 0, os.SEEK_END)

    @staticmethod
    def ftruncate(fd: int, size: int) -> None:
        os.ftruncate(fd, size)

    @staticmethod
    def fchmod(fd: int, mode: int) -> None:
        os.fchmod(fd, mode)

    @staticmethod
    def set_write_bits(fd: int, mode: int) -> None:
        current = os.fstat(fd).st_mode & 0o7777
        if (current ^ mode) & ~0o222:
            raise ValueError(f"not a change of write bits only: {current:o} to {mode:o}")
        os.fchmod(fd, mode)

    @staticmethod
    def fchown_group(fd: int, gid: int) -> None:
        os.fchown(fd, -1, gid)

    @staticmethod
    def fchown_user(fd: int, uid: int) -> None:
        os.fchown(fd, uid, -1)

    @staticmethod
    def give_new_file(fd: int, uid: int) -> None:
        os.fchown(fd, uid, -1)

    def opened_parts(self, fd: int) -> list[str] | None:
        try:
            real = os.readlink(f"/proc/self/fd/{fd}")    # (the process's own: allowed as any user)
        except OSError:
            return None
        rel = os.path.relpath(real, self.root)
        if rel == ".":
            return []
        return None if rel.startswith("..") or real.endswith(" (deleted)") else rel.split("/")

    @staticmethod
    def set_times(fd: int, atime_ns: int, mtime_ns: int) -> None:
        os.utime(fd, ns=(atime_ns, mtime_ns))

    @staticmethod
    def set_times_as_writer(fd: int, atime_ns: int, mtime_ns: int) -> None:
        # (a file system not acting for its users has no rights but its own: the kernel's
        # answer stands)
        os.utime(fd, ns=(atime_ns, mtime_ns))

    @staticmethod
    def allocate(fd: int, size: int) -> None:
        """fallocate(FALLOC_FL_KEEP_SIZE): blocks reserved, the size unchanged; a file system
        without it (or a full one) reserves nothing, which only costs the guarantee."""
        if size <= 0:
            return
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.fallocate(fd, FALLOC_FL_KEEP_SIZE, ctypes.c_long(0), ctypes.c_long(size)) != 0:
            log.debug("fallocate(%d): %s", size, os.strerror(ctypes.get_errno()))

    @staticmethod
    def names(fd: int, limit: int | None = None) -> list[str]:
        own = extents.own_directory(fd)     # (a position of its own: see there)
        try:
            if limit is None:
                return os.listdir(own)
            with os.scandir(own) as entries:
                return [entry.name for entry in itertools.islice(entries, limit)]
        finally:
            os.close(own)

    def entry_stat(self, dir_fd: int, dir_parts: list[str], name: str) -> os.stat_result | None:
        """A directory entry's stat; None once it is gone. A symlink shows as its target when
        that lies inside the share, else as the link itself: a listing must not reveal the
        size and times of files outside (opening them is refused anyway). An MS-DFS link
        shows as a directory (as Samba shows one: a client reaches it as one, by referral)."""
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except OSError:
            return None
        if stat.S_ISLNK(st.st_mode):
            try:
                if os.readlink(name, dir_fd=dir_fd).startswith(DFS_PREFIX):
                    return _as_directory(st)
            except OSError:
                pass
            try:
                return self.stat(dir_parts + [name])     # resolved beneath the share root
            except OSError:
                return st
        return st

    def entry_details(self, dir_fd: int, dir_parts: list[str], names: list[str], start: int,
                      count: int) -> bytes:
        """`entry_stat` and `get_dos_at` of names[start:start + count] at once, as records
        (smbring._dirent.RECORD): one fstatat and one getxattrat per entry, made in C (a
        listing's cost is these calls). A symlink is resolved beneath the root here, as
        `entry_stat` does; its DOS information is the link's own (none: a symlink carries no
        user xattrs), as `get_dos_at` reads it."""
        records, symlinks = stat_entries(dir_fd, names, start, count, DOS_XATTR)
        if not symlinks:
            return records
        out = bytearray(records)
        for i in symlinks:
            at = i * RECORD_SIZE
            fields = list(_RECORD.unpack_from(out, at))
            st = self.entry_stat(dir_fd, dir_parts, names[start + i])
            if st is None:
                fields[0] &= ~PRESENT
            else:
                fields[1:8] = [st.st_mode, st.st_ino, st.st_dev, st.st_size, st.st_atime_ns,
                               st.st_mtime_ns, st.st_ctime_ns]
            try:
                _RECORD.pack_into(out, at, *fields)
            except struct.error:        # a time beyond 64-bit ns: the entry's general path
                fields[1:8] = [0] * 7
                fields[0] |= NEEDS_GENERAL
                _RECORD.pack_into(out, at, *fields)
        return bytes(out)

    @staticmethod
    def has_default_acl(fd: int) -> bool:
        """Whether the open directory has a default POSIX ACL (system.posix_acl_default)."""
        try:
            os.getxattr(fd, "system.posix_acl_default")
            return True
        except OSError:
            return False

    @staticmethod
    def may_access(dir_fd: int, name: str, mode: int) -> bool:
        """faccessat with the effective ids (the calling thread's): one system call."""
        try:
            return os.access(name, mode, dir_fd=dir_fd, effective_ids=True)
        except OSError:
            return False

    def may_open(self, parts: list[str], mode: int) -> bool:
        """faccessat beneath the root with the effective ids: one system call. Only EACCES
        and EPERM say no (a name that is gone, or a link the open will refuse, is the open's
        to answer)."""
        path = self.rel(parts)
        try:
            if os.access(path, mode, dir_fd=self.root_fd, effective_ids=True):
                return True
            # refused, or not there to judge (gone, a path it may not search): only a file
            # that is there and refuses says no
            return not os.access(path, os.F_OK, dir_fd=self.root_fd, effective_ids=True,
                                 follow_symlinks=False)
        except OSError:
            return True

    @staticmethod
    def may_access_open(fd: int, mode: int) -> bool:
        """faccessat of the open file itself (its /proc/self/fd link, which leads to the very
        inode) with the effective ids: the rights on the file an open's descriptor pins."""
        try:
            return os.access(f"/proc/self/fd/{fd}", mode, effective_ids=True)
        except OSError:
            return False

    def reachable(self) -> bool:
        try:
            return os.access(self.root, os.X_OK, effective_ids=True)
        except OSError:
            return False

    # -- what Windows keeps and Unix does not: extended attributes ----------------------------
    @staticmethod
    def list_eas(fd: int) -> list[tuple[str, bytes]]:
        try:
            names = os.listxattr(fd)
        except OSError as e:
            if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
                return []
            raise
        return [(n[len(EA_PREFIX):], os.getxattr(fd, n)) for n in sorted(names)
                if n.startswith(EA_PREFIX) and not private_xattr(n)]

    @staticmethod
    def set_ea(fd: int, name: str, value: bytes) -> None:
        """Sets an EA; an empty value removes it, as in NTFS. The server's own metadata, and
        Samba's, is no client's to set, however the name is spelled (EA names are
        case-insensitive): refused as Samba refuses its own, STATUS_ACCESS_DENIED."""
        key = EA_PREFIX + name
        if private_xattr(key):
            raise PermissionError(errno.EACCES, "the server's own extended attribute", name)
        if value:
            os.setxattr(fd, key, value)
        else:
            try:
                os.removexattr(fd, key)
            except OSError as e:
                if e.errno != errno.ENODATA:
                    raise

    @staticmethod
    def get_sd(fd: int) -> bytes | None:
        # (get_xattr: None where none is stored, without os.getxattr's exception)
        try:
            return get_xattr(fd, SD_XATTR)
        except OSError as e:
            if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
                return None
            raise

    @staticmethod
    def set_sd(fd: int, blob: bytes) -> None:
        os.setxattr(fd, SD_XATTR, blob)

    def get_sd_and_dos(self, fd: int, device: int) -> tuple[bytes | None, DosInfo | None]:
        """`get_sd` and `get_dos` at once (a CREATE's first look at an existing file); `device`:
        the file's st_dev. On a local file system (`CaseIndex.local`: the kernel lists its
        xattrs itself) one flistxattr says which of the two are stored, and only those are
        read: a file with neither (most files made outside the server) costs one system call
        instead of two failed reads. Elsewhere (NFS, FUSE, ...: a listing another server or
        a daemon answers, which might leave out a name its getxattr finds), and where the
        listing fails, each is read as `get_sd` and `get_dos` read it: a stored descriptor
        is never missed for a listing's sake."""
        if self.case_index.local(fd, device):
            try:
                names = os.listxattr(fd)
            except OSError:
                names = None
            if names is not None:
                return (self.get_sd(fd) if SD_XATTR in names else None,
                        self.get_dos(fd) if DOS_XATTR in names else None)
        return self.get_sd(fd), self.get_dos(fd)

    @staticmethod
    def get_dos(fd: int) -> DosInfo | None:
        # (get_xattr: None where none is stored, without os.getxattr's exception, which cost
        # several times the system call for every file made outside the server)
        try:
            blob = get_xattr(fd, DOS_XATTR)
        except OSError as e:
            if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF):
                return None
            raise
        return _unpack_dos(blob)

    @staticmethod
    def get_dos_at(dir_fd: int, name: str) -> DosInfo | None:
        """The same for a directory entry (listings): through the directory's /proc fd path."""
        try:
            return _unpack_dos(os.getxattr(f"/proc/self/fd/{dir_fd}/{name}", DOS_XATTR,
                                           follow_symlinks=False))
        except OSError:
            return None

    @staticmethod
    def set_dos(fd: int, info: DosInfo) -> None:
        os.setxattr(fd, DOS_XATTR, _DOS.pack(info.attrs, info.create_time, info.change_time,
                                             info.change_mtime_ns, info.allocation))


# Extended attributes (OS/2 EAs) live in the file's user.* xattrs, as Samba keeps them;
# names under user.smbring. are the server's own metadata and never shown as EAs.
EA_PREFIX = "user."
PRIVATE_PREFIX = "user.smbring."
SD_XATTR = PRIVATE_PREFIX + "sd"     # a security descriptor set by a client (smb.acl)
# Samba's own metadata among the user.* xattrs (its samba_private_attr_name): neither shown
# nor set as EAs either, so that where Samba serves the same directory no client of ours
# forges the DOS attributes, inherited ACL flags or streams Samba keeps there
SAMBA_PRIVATE = ("user.dosattrib", "user.samba_pai", "user.samba_streams")
SAMBA_PRIVATE_PREFIX = "user.dosstream."


def private_xattr(key: str) -> bool:
    """Whether the xattr `key` is the server's own metadata or Samba's (in any case)."""
    folded = key.casefold()
    return folded.startswith((PRIVATE_PREFIX, SAMBA_PRIVATE_PREFIX)) or folded in SAMBA_PRIVATE


# DOS attributes and the times Unix cannot set (creation, change), as Samba keeps them in
# user.DOSATTRIB: attributes, creation time, and a change time that holds while the file's
# mtime is still the one it was set with (the next write moves the real ctime on), and the
# allocation size a client asked for.
DOS_XATTR = PRIVATE_PREFIX + "dos"
_DOS = struct.Struct("<IQQQQ")
_RECORD = struct.Struct(RECORD)      # entry_details' records


def _unpack_dos(blob: bytes | None) -> DosInfo | None:
    if not blob or len(blob) != _DOS.size:
        return None
    return DosInfo(*_DOS.unpack(blob))


def _remove_tree_at(dir_fd: int, name: str, left: list[int], gone: list) -> None:
    """Deletes `name` in the directory `dir_fd` and all below it, every step relative to a
    descriptor of its directory (a name swapped for a symlink meanwhile is never followed:
    O_NOFOLLOW refuses it, and unlink removes a link itself); `left[0]`: entries it may still
    delete; `gone` gets the stream id and stat of each file with streams that went for good
    (`_unlink_file`)."""
    left[0] -= 1
    if left[0] < 0:
        raise OSError(errno.ENOTEMPTY, "too many entries to delete", name)
    try:
        _unlink_file(dir_fd, name, gone)
        return
    except IsADirectoryError:
        pass
    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        for inner in os.listdir(fd):
            _remove_tree_at(fd, inner, left, gone)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=dir_fd)


def _unlink_file(dir_fd: int, name: str, gone: list) -> None:
    """unlink(2) of `name` in `dir_fd` (IsADirectoryError for a directory). A regular file of
    one name with a stream id is held open across its unlink: where that was its last link
    (none left then, whatever a local program linked meanwhile), (id, stat) goes to `gone`,
    its streams to go with it. What cannot be opened (unreadable; a device is never opened)
    is just unlinked."""
    held = None
    try:
        # looked at through an O_PATH descriptor first, opened only as the regular file it
        # is: a name swapped for a device meanwhile is never opened (no device's open runs)
        path_fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        try:
            st = os.fstat(path_fd)
            if stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
                held = os.open(f"/proc/self/fd/{path_fd}", os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        finally:
            os.close(path_fd)
    except OSError:
        pass
    try:
        found = PosixVFS.stream_key(held) if held is not None else None
        os.unlink(name, dir_fd=dir_fd)
        if found is not None and os.fstat(held).st_nlink == 0:
            gone.append(found)
    finally:
        if held is not None:
            os.close(held)
