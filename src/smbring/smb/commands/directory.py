"""QUERY_DIRECTORY (MS-SMB2 3.3.5.18)."""
from __future__ import annotations

import fnmatch
import struct
from typing import TYPE_CHECKING

from smbring.smb import wire
from smbring.smb.errors import SMBError, in_request
from smbring.smb.fileinfo import dir_entry
from smbring.smb.fs import STREAMS_DIR
from smbring.smb.wire import Header

if TYPE_CHECKING:
    from smbring.smb.connection import Connection


def _match(pattern: str, name: str) -> bool:
    if pattern in ("*", "<", "*.*"):
        return True
    return fnmatch.fnmatchcase(name.lower(), pattern.lower().replace("<", "*").replace(">", "?").replace('"', "."))


def h_query_directory(c: Connection, hdr: Header, msg: bytes, rhdr: Header, chain):
    _size, klass, flags, _index = struct.unpack_from("<HBBI", msg, 64)
    o = c.open_for(bytes(msg[72:88]), chain, hdr)
    name_off, name_len, out_len = struct.unpack_from("<HHI", msg, 88)
    pattern = wire.from_utf16(in_request(msg, name_off, name_len)) or "*"
    if not o.is_dir:
        raise SMBError(wire.STATUS_INVALID_PARAMETER)
    fs = o.tree.fs
    fresh = o.dir_entries is None or bool(flags & (0x1 | 0x10))
    if fresh:      # the first query, RESTART_SCANS, REOPEN
        # names now, details as they are returned: what is deleted meanwhile is not listed
        # (vetoed names are never listed, whatever the pattern: `veto files`)
        names = o.tree.names
        o.dir_entries = [n for n in [".", ".."] + sorted(fs.names(o.fd))
                         if _match(pattern, n) and not (n == STREAMS_DIR and not o.parts)
                         and not names.vetoed(n)]
        o.dir_pos = 0
        if not o.dir_entries:
            raise SMBError(wire.STATUS_NO_SUCH_FILE)
    out = bytearray()
    last = None
    while o.dir_pos < len(o.dir_entries):
        name = o.dir_entries[o.dir_pos]
        if name in (".", ".."):
            st, dos = fs.fstat(o.fd), fs.get_dos(o.fd)
        else:
            st, dos = fs.entry_stat(o.fd, o.parts, name), fs.get_dos_at(o.fd, name)
            # deleted since the scan began, or left out of listings (hide unreadable: judged
            # by the tree's file system, as the session's account)
            if st is None or o.tree.names.unlisted(
                    st, lambda mode, name=name: fs.may_access(o.fd, name, mode)):
                o.dir_pos += 1
                continue
        entry = dir_entry(klass, name, st, o.dir_pos, dos, hidden=o.tree.names.hidden(name),
                          write_ns=c.state.write_times.shown((st.st_dev, st.st_ino)))
        start = wire.pad8(len(out))
        if start + len(entry) > out_len:
            if last is None:
                raise SMBError(wire.STATUS_INFO_LENGTH_MISMATCH if not out else wire.STATUS_BUFFER_OVERFLOW)
            break
        out += b"\0" * (start - len(out))
        if last is not None:
            struct.pack_into("<I", out, last, start - last)
        last = start
        out += entry
        o.dir_pos += 1
        if flags & 0x2:  # RETURN_SINGLE_ENTRY
            break
    if last is None:    # (a scan whose every name was left out found nothing)
        raise SMBError(wire.STATUS_NO_SUCH_FILE if fresh else wire.STATUS_NO_MORE_FILES)
    return struct.pack("<HHI", 9, 72, len(out)) + bytes(out), None
