"""macOS's enriched directory listings (AAPL READ_DIR_ATTR, smb.aapl), as Samba's vfs_fruit
makes them (fruit_freaddir_attr): on a tree connect that negotiated them, each
FileIdBothDirectoryInformation entry carries what Finder would otherwise open every file for:

- the most the session may be granted on the entry (as MxAc reports it for a CREATE), in
  place of the EA size; GENERIC_ALL where `readdir_attr:aapl_max_access = no`;
- the size of its resource fork (its AFP_Resource stream), where `readdir_attr:aapl_rsize`;
- its Finder information, compressed (type and creator, flags, date added: from its
  AFP_AfpInfo stream and its creation time), where `readdir_attr:aapl_finder_info`;
- its Unix mode, where the tree connect negotiated NFS ACEs too (`fruit:nfs_aces`).

Each is read as the session's account, as any open of the file is: what it may not read
shows as none (no resource fork, no Finder information), and an entry is never left out for
it. Only the names that go into the answer are looked at."""
from __future__ import annotations

import os
import stat

from smbring.smb import aapl, acl, wire
from smbring.smb.commands.create import parent_descriptor, sd_of, take_appledouble
from smbring.smb.fileinfo import NT_EPOCH, creation_time
from smbring.smb.fs import MAY_READ, MAY_SEARCH, MAY_WRITE, PathError

FILE_READ_EA = 0x8


def enriched(c, tree, parts: list[str], st: os.stat_result, dos, entry: bytes, may) -> bytes:
    """The listing entry `entry` (fileinfo.dir_entry's, class 37) of the file at `parts`
    (`st`, `dos`: its stat and DOS information), with the fields of aapl.entry_fields.
    `may(mode)`: whether the session's account may access the file so (MAY_READ, ...). A
    "._" file beside it is taken into its streams first (smb.appledouble, as Samba's
    fruit_freaddir_attr converts it)."""
    fs = tree.fs
    take_appledouble(c, tree, parts, st)
    rsize, finder_info, max_access = tree.share.readdir_attr
    most, sid = aapl.GENERIC_ALL, None
    try:
        fd = fs.open(parts, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except (OSError, PathError):
        fd = None           # (not readable by this account: shows nothing more)
        if max_access:
            most = _most_allowed(tree, parts, st, None, lambda mode: mode != MAY_READ and may(mode))
    if fd is not None:
        try:
            if max_access:
                # (opened to read as the account: reading it, the kernel has allowed)
                most = _most_allowed(tree, parts, st, sd_of(fs, fd, parts),
                                     lambda mode: mode == MAY_READ or may(mode))
            if rsize or finder_info:
                sid = fs.stream_id_of(fd)
        except OSError:
            sid = None
        finally:
            fs.close_file(fd)
    streams = _streams(fs, sid) if sid else {}
    fork = streams.get(aapl.RESOURCE_FORK_STREAM)
    info = _read_finder_info(fs, sid, streams) if finder_info else None
    birth_s = (creation_time(st, dos) - NT_EPOCH) // 10_000_000
    return aapl.entry_fields(entry, most, fork[1].st_size if rsize and fork else 0,
                             aapl.compressed_finder_info(info, stat.S_ISREG(st.st_mode), birth_s),
                             st.st_mode if tree.aapl.nfs_aces else 0)


# the rights the kernel decides for a file without a stored descriptor, by access mode
KERNEL_DECIDES = ((MAY_READ, wire.FILE_READ_DATA | FILE_READ_EA),
                  (MAY_WRITE, wire.FILE_WRITE_DATA | wire.FILE_APPEND_DATA | wire.FILE_WRITE_EA
                   | wire.FILE_WRITE_ATTRIBUTES),
                  (MAY_SEARCH, wire.FILE_EXECUTE))


def _most_allowed(tree, parts: list[str], st: os.stat_result, sd, may) -> int:
    """The most the session may be granted on the file: what its stored descriptor grants
    (create.most_allowed, as an open would judge it); without one, what the owner's rights
    and the kernel (its mode, as the session's account) allow."""
    parent = parent_descriptor(tree.fs, parts) if sd is not None and parts else None
    most = max(acl.check(acl.MAXIMUM_ALLOWED, sd, parent, tree.token, acl.unix_user(st.st_uid)), 0)
    if sd is None:
        # (a regular file without an execute bit is executed by no one, root included: no
        # system call needed to say so)
        no_exec = stat.S_ISREG(st.st_mode) and not st.st_mode & 0o111
        for mode, rights in KERNEL_DECIDES:
            if most & rights and (mode == MAY_SEARCH and no_exec or not may(mode)):
                most &= ~rights
    if tree.share.read_only:
        most &= wire.READ_ONLY_ACCESS
    return most


def _streams(fs, sid: str) -> dict:
    """The file's named streams by case-folded name: (name as kept, stat)."""
    try:
        return {name.casefold(): (name, st) for name, st in fs.streams(sid)}
    except OSError:
        return {}


def _read_finder_info(fs, sid: str | None, streams: dict) -> bytes | None:
    """The AFP_AfpInfo stream's bytes where it holds exactly what one holds, else None."""
    found = streams.get(aapl.AFP_INFO_STREAM)
    if found is None or found[1].st_size != aapl.AFP_INFO_SIZE:
        return None
    try:
        fd = fs.open(fs.stream_parts(sid, found[0]), os.O_RDONLY)
    except (OSError, PathError):
        return None
    try:
        return fs.read_head(fd, aapl.AFP_INFO_SIZE)
    except OSError:
        return None
    finally:
        fs.close_file(fd)
