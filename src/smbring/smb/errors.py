"""NTSTATUS errors: what a handler raises, what an OSError means to a client, and the
rule that a request's variable parts lie inside it."""
from __future__ import annotations

import errno

from smbring.smb import wire
from smbring.smb.fs import NotAFile


class SMBError(Exception):
    def __init__(self, status: int):
        super().__init__(hex(status))
        self.status = status


def in_request(msg, offset: int, length: int):
    """The variable part of a request named by its offset (from the SMB2 header) and length;
    one that does not lie inside the request after the header is malformed."""
    if length and (offset < wire.HEADER_SIZE or offset + length > len(msg)):
        raise SMBError(wire.STATUS_INVALID_PARAMETER)
    return msg[offset:offset + length]


def status_for_oserror(e: OSError) -> int:
    if isinstance(e, NotAFile):     # a FIFO, socket or device, never opened: Samba's answer
        return wire.STATUS_IO_REPARSE_TAG_NOT_HANDLED
    return {
        errno.ENOENT: wire.STATUS_OBJECT_NAME_NOT_FOUND,
        errno.EEXIST: wire.STATUS_OBJECT_NAME_COLLISION,
        errno.EACCES: wire.STATUS_ACCESS_DENIED,
        errno.EPERM: wire.STATUS_ACCESS_DENIED,
        errno.EXDEV: wire.STATUS_ACCESS_DENIED,      # RESOLVE_BENEATH refused an escape
        errno.ELOOP: wire.STATUS_ACCESS_DENIED,
        errno.ENOTDIR: wire.STATUS_OBJECT_PATH_NOT_FOUND,
        errno.EISDIR: wire.STATUS_FILE_IS_A_DIRECTORY,
        errno.ENOTEMPTY: wire.STATUS_DIRECTORY_NOT_EMPTY,
        errno.ENOSPC: wire.STATUS_DISK_FULL,
        errno.ENAMETOOLONG: wire.STATUS_OBJECT_NAME_INVALID,
        errno.EROFS: wire.STATUS_MEDIA_WRITE_PROTECTED,
        errno.EMFILE: wire.STATUS_INSUFFICIENT_RESOURCES,     # out of descriptors: refuse
        errno.ENFILE: wire.STATUS_INSUFFICIENT_RESOURCES,     # this request, keep serving
        errno.ENOMEM: wire.STATUS_INSUFFICIENT_RESOURCES,
        errno.EDQUOT: wire.STATUS_DISK_FULL,
        errno.EFBIG: wire.STATUS_DISK_FULL,
    }.get(e.errno, wire.STATUS_ACCESS_DENIED)
