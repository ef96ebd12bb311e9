"""FileRenameInformation through a named stream's handle onto its file's own data stream
("::$DATA"): MS-FSA's stream rename (2.1.5.14.11.1; 2.1.5.15.11.1 in later editions) with an
empty StreamName. The default data stream always exists, so it is the TargetStream:

- a directory has none: STATUS_INVALID_PARAMETER;
- without ReplaceIfExists: STATUS_OBJECT_NAME_COLLISION;
- while the file itself is open (an open of the file, not of one of its streams), or holds
  data: STATUS_INVALID_PARAMETER;
- else the stream's data becomes the file's, the stream is gone, and the handle is the
  file's from then on (as Windows answers smbtorture's smb2.streams.rename2; smbd refuses it,
  STATUS_NOT_SUPPORTED).

A stream is a file of its own here (in the share's stream depot), the file keeps its identity
(its FileId, security, attributes, links): the data is copied into it (in the kernel, off the
event loop), with no other open of the file let in meanwhile, and the handle's share mode
moves to the file. What a handle cannot take along is refused STATUS_ACCESS_DENIED: other
opens of the stream (their descriptors would name a stream that is gone), byte-range locks,
an oplock or a lease (its holder would go on caching what nobody breaks), a delete on close,
and a file the user may not write (the kernel's answer for its data)."""
from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING

from smbring.smb import dirleases, notify, sharemodes, wire
from smbring.smb.effects import CopyRange, FileSteps, Forget
from smbring.smb.errors import SMBError, status_for_oserror

if TYPE_CHECKING:
    from smbring.smb.connection import Connection
    from smbring.smb.state import Open

# an access that `sharemodes.categories` reads as each of its categories
ALL_SHARED = sharemodes.READ | sharemodes.WRITE | sharemodes.DELETE
_ACCESS_OF = {sharemodes.READ: 0x1, sharemodes.WRITE: 0x2, sharemodes.DELETE: 0x10000}


def rename_to_default(c: "Connection", o: "Open", replace: bool) -> FileSteps:
    """The stream `o` renamed onto its file's data stream (the module's rules): the steps
    that copy its data and make the handle the file's; SMBError where refused."""
    st = o.tree.fs.stat(o.base_parts)
    if stat.S_ISDIR(st.st_mode):
        raise SMBError(wire.STATUS_INVALID_PARAMETER)   # a directory has no data stream
    if not replace:
        raise SMBError(wire.STATUS_OBJECT_NAME_COLLISION)
    if file_itself_open(c, o) or st.st_size:
        raise SMBError(wire.STATUS_INVALID_PARAMETER)
    if not movable(c, o):
        raise SMBError(wire.STATUS_ACCESS_DENIED)
    taken = c.state.share_modes.of(o.key, id(o)) or (0, ALL_SHARED)
    return FileSteps(moved(c, o, file_to_write(c, o), o.tree.fs.fstat(o.fd).st_size, taken))


def file_to_write(c: "Connection", o: "Open") -> int:
    """The stream's file opened to take its data (as the user: one who may not write it is
    refused), held as its sole open meanwhile: a new open of it is a sharing violation."""
    fs = o.tree.fs
    try:
        fd, st = fs.open_stat(o.base_parts, os.O_RDWR)
    except PermissionError:
        raise SMBError(wire.STATUS_ACCESS_DENIED) from None
    if (st.st_dev, st.st_ino) != o.file_key or st.st_size or \
            not c.state.share_modes.check_and_add(o.file_key, id(o), _ACCESS_OF[sharemodes.WRITE], 0):
        fs.close_file(fd)       # (changed since it was looked at, or opened meanwhile)
        raise SMBError(wire.STATUS_INVALID_PARAMETER)
    return fd


def file_itself_open(c: "Connection", o: "Open") -> bool:
    """Whether the stream's file has opens of its own: each open of a stream counts once on its
    stream and once on its file (`ServerState.register_open`), so the file's count beyond its
    streams' is its own opens (attribute-only ones too)."""
    modes = c.state.share_modes
    of_streams = sum(modes.count((st.st_dev, st.st_ino)) for _name, st in o.tree.fs.streams(o.base_key))
    return modes.count(o.file_key) > of_streams


def movable(c: "Connection", o: "Open") -> bool:
    """Whether nothing the open holds on the stream is lost in becoming the file's open."""
    state = c.state
    return (state.share_modes.count(o.key) == 1 and not state.locks.count(o.key, id(o))
            and not state.oplocks.caching(o) and state.oplocks.lease_of(o) is None
            and not o.delete_on_close and not state.is_delete_pending(o.key))


def moved(c: "Connection", o: "Open", fd: int, size: int, taken: tuple[int, int]):
    """The stream's `size` bytes copied into the file (`fd`); then the stream is removed and
    the handle made the file's, with the share mode it had (`taken`: what it wants, what it
    shares). A failed copy leaves the file empty and the stream as it was."""
    copied = (yield CopyRange(o.fd, 0, fd, 0, size)) if size else 0
    if isinstance(copied, BaseException) or copied != size or c.opens.get(o.fid) is not o:
        undo(c, o, fd)
        if isinstance(copied, OSError):
            raise SMBError(status_for_oserror(copied))
        if isinstance(copied, BaseException):
            raise copied
        raise SMBError(wire.STATUS_FILE_CLOSED if c.opens.get(o.fid) is not o
                       else wire.STATUS_INVALID_PARAMETER)      # (the stream was cut meanwhile)
    fs, modes = o.tree.fs, c.state.share_modes
    fs.remove(o.parts, False)
    c.state.watches.post_open(o, notify.REMOVED, notify.FILE_NAME)     # (as the old stream's)
    old_fd, old_key = o.fd, o.key
    modes.remove(old_key, id(o))
    modes.remove(o.file_key, id(o))         # (the copy's sole open)
    c.state.oplocks.remove(o)
    o.fd, o.key, o.file_key = fd, o.file_key, ()
    o.parts, o.stream, o.base_key = list(o.base_parts), None, None
    wants, shares = taken
    modes.check_and_add(o.key, id(o), sum(a for bit, a in _ACCESS_OF.items() if wants & bit), shares)
    c.state.oplocks.add(o, o.access)
    c.state.write_times.modified_now(o)
    c.state.watches.post_open(o, notify.MODIFIED, notify.SIZE | notify.LAST_WRITE)
    dirleases.open_changed(c, o)        # (the file's size and write time a listing shows)
    c.close_open_descriptor(o.tree, old_fd)     # (once work in flight that names it is done)
    c.outbox.append(Forget(*old_key))       # a kept map of the stream's data goes with it
    return b"\x02\x00"


def undo(c: "Connection", o: "Open", fd: int) -> None:
    """A copy that failed (or whose handle was closed meanwhile): the file is emptied again,
    and the handle, where still open, takes part in the file's share modes as a stream's
    open does (none)."""
    fs = o.tree.fs
    try:
        fs.ftruncate(fd, 0)
    finally:
        # (closed at once: the copy that named it is done, and no other work knows it)
        fs.close_file(fd)
        if c.opens.get(o.fid) is o:
            c.state.share_modes.check_and_add(o.file_key, id(o), 0, ALL_SHARED)
