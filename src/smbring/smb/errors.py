"""NTSTATUS errors: what a handler raises, what an OSError means to a client, and the
rule that a request's variable parts lie inside it."""
from __future__ import annotations

import errno
import logging

from smbring.smb import wire
from smbring.smb.fs import NotAFile

log = logging.getLogger("smbring.smb")


class SMBError(Exception):
    def __init__(self, status: int):
        super().__init__(hex(status))
        self.status = status


class Unverified(SMBError):
    """ACCESS_DENIED for a request its session's key did not protect where it had to (unsigned
    or badly signed where the session signs, plain where it encrypts). Its answer is neither
    signed nor sealed (`signer` () names no key): a signature or seal from the session over an
    answer to a request anyone could have made would let someone on the path pass it off as
    the answer to one of the client's own requests (its MessageId and command chosen)."""

    signer = ()

    def __init__(self):
        super().__init__(wire.STATUS_ACCESS_DENIED)


def write_refused(share) -> SMBError:
    """What refuses a change through an open of `share` that holds no right to make it:
    STATUS_MEDIA_WRITE_PROTECTED in a previous version (Share.snapshot: Windows, and Samba's
    shadow_copy2, open a snapshot's file for writing and refuse each change), else
    STATUS_ACCESS_DENIED."""
    return SMBError(wire.STATUS_MEDIA_WRITE_PROTECTED if share.snapshot else wire.STATUS_ACCESS_DENIED)


def in_request(msg, offset: int, length: int):
    """The variable part of a request named by its offset (from the SMB2 header) and length;
    one that does not lie inside the request after the header is malformed."""
    if length and (offset < wire.HEADER_SIZE or offset + length > len(msg)):
        raise SMBError(wire.STATUS_INVALID_PARAMETER)
    return msg[offset:offset + length]


# what a system call's failure means to a client (after Samba's unix_nt_errmap, in
# source3/lib/errmap_unix.c); ours where a check of ours raised it (EXDEV, ELOOP:
# RESOLVE_BENEATH refused an escape). (ENOTSUP is EOPNOTSUPP on Linux.)
ERRNO_STATUS = {
    errno.ENOENT: wire.STATUS_OBJECT_NAME_NOT_FOUND,
    errno.EEXIST: wire.STATUS_OBJECT_NAME_COLLISION,
    errno.EACCES: wire.STATUS_ACCESS_DENIED,
    errno.EPERM: wire.STATUS_ACCESS_DENIED,
    errno.EXDEV: wire.STATUS_ACCESS_DENIED,
    errno.ELOOP: wire.STATUS_ACCESS_DENIED,
    errno.ENOTDIR: wire.STATUS_OBJECT_PATH_NOT_FOUND,
    errno.EISDIR: wire.STATUS_FILE_IS_A_DIRECTORY,
    errno.ENOTEMPTY: wire.STATUS_DIRECTORY_NOT_EMPTY,
    errno.ENOSPC: wire.STATUS_DISK_FULL,
    errno.EDQUOT: wire.STATUS_DISK_FULL,
    errno.EFBIG: wire.STATUS_DISK_FULL,
    errno.ENAMETOOLONG: wire.STATUS_OBJECT_NAME_INVALID,
    errno.EROFS: wire.STATUS_MEDIA_WRITE_PROTECTED,
    errno.EMFILE: wire.STATUS_INSUFFICIENT_RESOURCES,     # out of descriptors: refuse this
    errno.ENFILE: wire.STATUS_INSUFFICIENT_RESOURCES,     # request, keep serving
    errno.ENOMEM: wire.STATUS_INSUFFICIENT_RESOURCES,
    errno.EINVAL: wire.STATUS_INVALID_PARAMETER,
    errno.EBADF: wire.STATUS_INVALID_HANDLE,
    errno.EBUSY: wire.STATUS_SHARING_VIOLATION,
    errno.ETXTBSY: wire.STATUS_SHARING_VIOLATION,
    errno.EAGAIN: wire.STATUS_SHARING_VIOLATION,          # a local lease holds it (non-blocking open)
    errno.EIO: wire.STATUS_UNEXPECTED_IO_ERROR,
    errno.ENOTSUP: wire.STATUS_NOT_SUPPORTED,
    errno.ENOSYS: wire.STATUS_NOT_SUPPORTED,
    errno.EMLINK: wire.STATUS_TOO_MANY_LINKS,
    errno.ECANCELED: wire.STATUS_CANCELLED,
    errno.ENOBUFS: wire.STATUS_INSUFFICIENT_RESOURCES,
    errno.EOVERFLOW: wire.STATUS_ALLOTTED_SPACE_EXCEEDED,
    errno.ENXIO: wire.STATUS_ILLEGAL_FUNCTION,
    errno.ENODEV: wire.STATUS_DEVICE_DOES_NOT_EXIST,
    errno.ETIMEDOUT: wire.STATUS_IO_TIMEOUT,              # (a network file system's)
    errno.EINTR: wire.STATUS_RETRY,
    errno.ENODATA: wire.STATUS_NOT_FOUND,                 # (Samba's ENOATTR: no such xattr)
    errno.ERANGE: wire.STATUS_INTEGER_OVERFLOW,           # (an xattr name over 255 bytes)
    # a value or list over the kernel's 64 KiB for extended attributes (XATTR_SIZE_MAX): an
    # EA or a security descriptor too large to store. Samba has no entry (its fallback is
    # ACCESS_DENIED); MS-FSA 2.1.5.15.5 fails EAs that do not fit with STATUS_EA_TOO_LARGE
    errno.E2BIG: wire.STATUS_EA_TOO_LARGE,
}


def status_for_oserror(e: OSError) -> int:
    """The NTSTATUS for a failed system call; one not in the table is STATUS_UNSUCCESSFUL and
    logged (never silently ACCESS_DENIED: the client would look for a permission problem)."""
    if isinstance(e, NotAFile):     # a FIFO, socket or device, never opened: Samba's answer
        return wire.STATUS_IO_REPARSE_TAG_NOT_HANDLED
    status = ERRNO_STATUS.get(e.errno)
    if status is None:
        log.warning("no NTSTATUS for %s: answered STATUS_UNSUCCESSFUL", e)
        return wire.STATUS_UNSUCCESSFUL
    return status
