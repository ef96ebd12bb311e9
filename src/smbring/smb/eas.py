"""Storing a request's extended attributes (SET_INFO FileFullEaInformation, CREATE's ExtA
context) on a file, as NTFS takes them (MS-FSA 2.1.5.15.5):

- a file's EAs together, as FILE_FULL_EA_INFORMATION would list them, fit in 64 KiB: a
  request that would push the file past it is STATUS_EA_TOO_LARGE, whatever each of its EAs
  weighs alone, and nothing of it is stored;
- the request is all or nothing: where the file system refuses one of its EAs (no space
  left for xattrs, a name reserved for the server's own metadata), the ones stored before it
  are put back as they were, and the refusal is the client's answer.
"""
from __future__ import annotations

from smbring.smb import wire
from smbring.smb.contexts import MAX_EA_LIST, encode_eas
from smbring.smb.errors import SMBError
from smbring.smb.fileinfo import writable_for_metadata


def after(existing: list[tuple[str, bytes]], changes: list[tuple[str, bytes]]) -> dict[str, bytes]:
    """The file's EAs once `changes` are made (an empty value removes one), by name."""
    eas = dict(existing)
    for name, value in changes:
        if value:
            eas[name] = value
        else:
            eas.pop(name, None)
    return eas


def store_eas(fs, fd: int, changes: list[tuple[str, bytes]]) -> None:
    """Sets (or, with an empty value, removes) the EAs `changes` on the file `fd`, all or
    none; STATUS_EA_TOO_LARGE where the file's EAs would then exceed 64 KiB."""
    if not changes:
        return
    now = dict(fs.list_eas(fd))
    if len(encode_eas(list(after(now.items(), changes).items()))) > MAX_EA_LIST:
        raise SMBError(wire.STATUS_EA_TOO_LARGE)
    done: list[tuple[str, bytes]] = []          # (name, its value before) of each change made
    try:
        for name, value in changes:
            writable_for_metadata(fs, fd, lambda: fs.set_ea(fd, name, value))
            done.append((name, now.get(name, b"")))
            now = after(now.items(), [(name, value)])
    except BaseException:
        for name, before in reversed(done):
            try:
                writable_for_metadata(fs, fd, lambda: fs.set_ea(fd, name, before))
            except OSError:
                pass            # (the refusal being answered is the one the client sees)
        raise
