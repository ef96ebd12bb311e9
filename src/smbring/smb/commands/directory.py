"""QUERY_DIRECTORY (MS-SMB2 3.3.5.18)."""
from __future__ import annotations

import bisect
import fnmatch
import re
import struct
from typing import TYPE_CHECKING

from smbring._dirent import DONE, FULL, SINGLE, count_fitting, encode_entries
from smbring.smb import wire
from smbring.smb.commands import directory_aapl
from smbring.smb.effects import FileSteps, ListNames
from smbring.smb.errors import SMBError, in_request
from smbring.smb.fileinfo import dir_entry, short_name
from smbring.smb.fs import STREAMS_DIR
from smbring.smb.wire import Header

if TYPE_CHECKING:
    from smbring.smb.connection import Connection


# a pattern is one name component, wildcards allowed (MS-FSA 2.1.5.6.3, MS-FSCC 2.1.5): at
# most 255 characters. Longer ones cost the event loop seconds to compile (a compound of them
# stalled every client) and can match no name.
MAX_PATTERN = 255


def _matcher(pattern: str, short_names: bool = True, case_sensitive: bool = False):
    """The test a name passes to be listed, compiled once per scan: a DOS wildcard, `[` a
    plain character; in any case unless the share is `case sensitive`. Not through
    fnmatch.fnmatchcase, whose process-wide cache keeps up to 32,768 compiled patterns, each
    new one a client sends (re's own cache keeps 512)."""
    if pattern in ("*", "<", "*.*"):
        return lambda name: True
    if len(pattern) > MAX_PATTERN:
        raise SMBError(wire.STATUS_OBJECT_NAME_INVALID)
    fold = (lambda name: name) if case_sensitive else str.lower
    dos = fold(pattern).replace("[", "[[]").replace("<", "*").replace(">", "?").replace('"', ".")
    match = re.compile(fnmatch.translate(dos)).match
    if short_names and "~" in pattern:
        # a pattern naming a mangled 8.3 name matches the long name it stands for too, as
        # Windows matches both names (MS-FSA 2.1.5.6.3): what `del SHORT~1.TXT` lists first
        return lambda name: match(fold(name)) is not None or match(fold(short_name(name))) is not None
    return lambda name: match(fold(name)) is not None


def h_query_directory(c: Connection, hdr: Header, msg: bytes, rhdr: Header, chain):
    _size, klass, flags, _index = struct.unpack_from("<HBBI", msg, 64)
    o = c.open_for(bytes(msg[72:88]), chain, hdr)
    name_off, name_len, out_len = struct.unpack_from("<HHI", msg, 88)
    pattern = wire.from_utf16(in_request(msg, name_off, name_len)) or "*"
    if not o.is_dir:
        raise SMBError(wire.STATUS_INVALID_PARAMETER)
    restart = flags & (0x1 | 0x10)      # RESTART_SCANS, REOPEN
    if o.dir_entries is None or restart:
        # the first query, a new scan, or a scan whose listing was dropped (smb.listings),
        # which goes on with its own pattern
        resume = o.dir_resume and not restart
        if not resume:
            o.dir_pattern = pattern
        keep = _keeper(o.dir_pattern, o.tree.names)
        return FileSteps(_listed(c, o, klass, flags, out_len, keep, resume)), None
    c.state.listings.used(o)
    return _answer(c, o, klass, flags, out_len, fresh=False), None


def _keeper(pattern: str, names):
    """Whether a name of the directory is listed: it matches the pattern, is not vetoed (`veto
    files`, whatever the pattern) and is not the stream depot, which no client can name,
    wherever a listing meets it (the root's, also through a link)."""
    if names.folds_paths and not any(ch in pattern for ch in "*?<>\""):
        pattern = names.in_default_case(pattern)    # (a name, not a wildcard: as Samba's)
    matches = _matcher(pattern, names.short_names, names.case_sensitive)
    return lambda n: matches(n) and n != STREAMS_DIR and not names.vetoed(n)


def _listed(c: Connection, o, klass: int, flags: int, out_len: int, keep, resume: bool = False):
    """A scan from the start: the names now (listed and sorted off the event loop), details as
    they are returned: what is deleted meanwhile is not listed. `resume`: the open's listing
    was dropped (smb.listings), its scan goes on after the last name it returned. The listing
    is counted to the open's user, within `max listed names per user`."""
    # (`dont descend`: nothing of the directory is read; "." and ".." only)
    names = [] if o.tree.names.shows_empty(o.parts) else (yield ListNames(o.fd, keep))
    if isinstance(names, BaseException):
        raise names         # (an OSError: its status)
    entries = [n for n in (".", "..") if keep(n)] + names
    o.dir_pos = _resumed_at(entries, o.dir_after) if resume else 0
    o.dir_entries, o.dir_resume, o.dir_after = entries, False, None
    if o.counted_for is not None and c.opens.get(o.fid) is o:      # (not closed meanwhile)
        c.state.listings.kept(o, o.counted_for, c.limits.max_listed_names_per_user)
    if not entries and not resume:
        raise SMBError(wire.STATUS_NO_SUCH_FILE)
    return _answer(c, o, klass, flags, out_len, fresh=not resume)


def _resumed_at(entries: list[str], after: str | None) -> int:
    """Where a scan goes on in `entries` (".", ".." if listed, then the names sorted) after
    the name it returned last (None: none yet): past it, or where it would be."""
    if after is None:
        return 0
    dots = 2 if entries[1:2] == [".."] else 1 if entries[:1] in (["."], [".."]) else 0
    if after in (".", ".."):
        return entries.index(after) + 1 if after in entries[:dots] else dots
    return bisect.bisect_right(entries, after, dots)


# entries one answer makes the per-entry way at most (each a few system calls, an enriched
# macOS one about ten: a client's 8 MiB buffer would hold some 70,000, seconds of the event
# loop); the client asks again for the rest, as it does for what did not fit
MAX_SLOW_ENTRIES = 2048


def _answer(c: Connection, o, klass: int, flags: int, out_len: int, fresh: bool) -> bytes:
    out = bytearray()
    last = -1           # where the last entry written starts (its NextEntryOffset is set next)
    slow = 0            # entries made the per-entry way
    rules = o.tree.names
    # per-name rules beyond hide dot files (hide files, hide unreadable, ...) take the general
    # path, entry by entry
    # (so do macOS's enriched listings: directory_aapl)
    batched = klass in BATCHED_CLASSES and not (
        rules.hide or rules.hide_unreadable or rules.hide_unwriteable or rules.hide_special_files
        or rules.hide_new_files_timeout or klass == 37 and o.tree.aapl and o.tree.aapl.readdir_attr)
    while o.dir_pos < len(o.dir_entries):
        if batched and o.dir_entries[o.dir_pos] not in (".", ".."):
            status, last = _batch(c, o, klass, flags, out, out_len, last)
            if status in (FULL, SINGLE):
                break
            if status == DONE:
                continue
        # ".", "..", a share with per-name rules, or an entry the batch leaves to this code
        if slow >= MAX_SLOW_ENTRIES and last >= 0:
            break
        slow += 1
        entry = _entry(c, o, klass)
        if entry is None:       # gone, or left out of listings
            o.dir_pos += 1
            continue
        start = wire.pad8(len(out))
        if start + len(entry) > out_len:
            break
        out += b"\0" * (start - len(out))
        if last >= 0:
            struct.pack_into("<I", out, last, start - last)
        last = start
        out += entry
        o.dir_pos += 1
        if flags & 0x2:  # RETURN_SINGLE_ENTRY
            break
    if last < 0:
        if o.dir_pos < len(o.dir_entries):      # the next entry alone does not fit
            raise SMBError(wire.STATUS_INFO_LENGTH_MISMATCH)
        # (a scan whose every name was left out found nothing)
        raise SMBError(wire.STATUS_NO_SUCH_FILE if fresh else wire.STATUS_NO_MORE_FILES)
    return struct.pack("<HHI", 9, 72, len(out)) + bytes(out)


# the classes `encode_entries` writes (the others go to dir_entry, which refuses them)
BATCHED_CLASSES = frozenset({1, 2, 3, 12, 37, 38})


def _batch(c: Connection, o, klass: int, flags: int, out: bytearray, out_len: int,
           last: int) -> tuple[int, int]:
    """Entries from o.dir_pos on, as many as fit, in one call to the file system (the stats
    and DOS information of the names that may fit: `FileSystem.entry_details`) and one to
    the encoder; returns (status, last). Status DONE: the names stat'ed are all consumed (some
    may be gone: more may fit); FULL: the next entry does not fit; SINGLE: one entry written,
    as asked; SLOW: the entry at o.dir_pos is `_entry`'s."""
    names = o.dir_entries
    single = bool(flags & 0x2)
    # ("." and "..", the directory itself, come first: never in a batch)
    count = 1 if single else count_fitting(names, o.dir_pos, len(names), klass, out_len, len(out))
    if count == 0:
        return FULL, last
    fs = o.tree.fs
    records = fs.entry_details(o.fd, o.parts, names, o.dir_pos, count)
    first = last
    index, last, status = encode_entries(
        records, names, o.dir_pos, klass, out, out_len, last, single,
        o.tree.names.hide_dot_files, c.state.write_times.shown,
        short_name if o.tree.names.short_names else None)
    o.dir_pos = index
    if klass in FILE_ID_AT and last != first and o.tree.zero_file_ids:
        _zero_file_ids(out, first, klass)
    return status, last


# where FileIdBothDirectoryInformation's and FileIdFullDirectoryInformation's FileId lies
FILE_ID_AT = {37: 96, 38: 72}


def _zero_file_ids(out: bytearray, before: int, klass: int) -> None:
    """The FileIds of the entries a batch wrote after the one at `before` (-1: from the
    start) made 0 (fruit:zero_file_id), following their NextEntryOffsets."""
    pos = 0 if before < 0 else before + struct.unpack_from("<I", out, before)[0]
    while True:
        struct.pack_into("<Q", out, pos + FILE_ID_AT[klass], 0)
        step = struct.unpack_from("<I", out, pos)[0]
        if not step:
            return
        pos += step


def _entry(c: Connection, o, klass: int) -> bytes | None:
    """The entry at o.dir_pos, None when it is gone or left out of listings."""
    fs = o.tree.fs
    name = o.dir_entries[o.dir_pos]
    if name in (".", ".."):
        st, dos = fs.fstat(o.fd), fs.get_dos(o.fd)
    else:
        st, dos = fs.entry_stat(o.fd, o.parts, name), fs.get_dos_at(o.fd, name)
        # deleted since the scan began, or left out of listings (hide unreadable: judged
        # by the tree's file system, as the session's account)
        if st is None or o.tree.names.unlisted(
                st, lambda mode, name=name: fs.may_access(o.fd, name, mode)):
            return None
    entry = dir_entry(klass, name, st, o.dir_pos, dos, hidden=o.tree.names.hidden(name),
                      write_ns=c.state.write_times.shown((st.st_dev, st.st_ino)),
                      file_id=o.tree.file_id(st.st_ino),
                      short_names=o.tree.names.short_names)
    if klass == 37 and o.tree.aapl and o.tree.aapl.readdir_attr:
        # ("." and ".." show the directory itself, as their stat above)
        dots = name in (".", "..")
        entry = directory_aapl.enriched(c, o.tree, o.parts if dots else [*o.parts, name], st, dos, entry,
                                        lambda mode: fs.may_access(o.fd, "." if dots else name, mode))
    return entry
