"""What the client raises.

Two kinds of failure, kept apart on purpose:

- the server answered a request with an NTSTATUS error: an :class:`SMBError` (an ``OSError``;
  the common ones are also ``FileNotFoundError``, ``PermissionError`` ... so that callers can
  catch them as they would for local files). The connection stays usable.
- the server (or the network) broke the protocol: a bad signature, a reply that does not fit
  its request, a short read, a name that would escape the destination. That is a
  :class:`ProtocolError` (a ``ConnectionError``); the connection is closed, because nothing
  it carries can be trusted any more.
"""
from __future__ import annotations

import errno
import functools

from smbring.smb import wire


def status_name(status: int) -> str:
    """STATUS_OBJECT_NAME_NOT_FOUND for 0xC0000034, the hex value for codes wire.py lacks."""
    for name, value in vars(wire).items():
        if name.startswith("STATUS_") and value == status:
            return name
    return f"NTSTATUS {status:#010x}"


class SMBError(OSError):
    """The server refused a request; ``status`` is its NTSTATUS."""

    def __init__(self, status: int, what: str = ""):
        self.status = status
        code = _ERRNO.get(status, errno.EIO)
        super().__init__(code, f"{what}: {status_name(status)}" if what else status_name(status))


class ProtocolError(ConnectionError):
    """The server's answer cannot be trusted (or makes no sense); the connection is closed."""


class LimitExceeded(ProtocolError):
    """A server's listing went past one of the client's limits (limits.Limits): more entries
    in one directory, or more files, directories or levels in one tree, than the client
    takes. `limit` names it (the Limits attribute: "entries", "files", "directories",
    "depth"), `value` is its value. What was under way is abandoned (a get leaves nothing),
    never presented as complete. A large share is no lie: the connection stays open."""

    def __init__(self, what: str, limit: str, value: int):
        self.limit, self.value = limit, value
        super().__init__(f"{what} (the limit Limits.{limit} is {value:,}): stopped")


def closing_on_lie(method):
    """For an async method of the Client (or of an object with its `_client`): a ProtocolError
    found in what the server answered closes the session's connections with it (Client.refuse),
    as one the channel itself finds does; nothing they carry is trusted any more."""
    @functools.wraps(method)
    async def checked(self, *args, **kw):
        try:
            return await method(self, *args, **kw)
        except ProtocolError as e:
            getattr(self, "_client", self).refuse(e)
            raise
    return checked


class ChannelTimeout(ProtocolError):
    """No answer came in time; the connection is closed. With several channels, a transfer's
    READs and WRITEs that were waiting on it go to the others (as for a lost connection)."""


class LocalFileError(ConnectionError):
    """A local file failed in the middle of a message: an upload's file ended (or failed to
    read) in a WRITE already announced on the wire, or a download's file refused data spliced
    into it (a full disk). That connection cannot go on and is closed. Not a lost connection:
    the request is not sent again elsewhere."""


def channel_lost(error: BaseException) -> bool:
    """Whether a failed request failed because its connection went (closed, reset, silent),
    not because an answer was refused: only then may it be sent again on another channel."""
    return isinstance(error, ChannelTimeout) or (
        isinstance(error, ConnectionError) and not isinstance(error, (ProtocolError, LocalFileError)))


class _NotFound(SMBError, FileNotFoundError):
    pass


class _Exists(SMBError, FileExistsError):
    pass


class _Denied(SMBError, PermissionError):
    pass


class _IsDir(SMBError, IsADirectoryError):
    pass


class _NotDir(SMBError, NotADirectoryError):
    pass


_ERRNO = {
    wire.STATUS_OBJECT_NAME_NOT_FOUND: errno.ENOENT,
    wire.STATUS_OBJECT_PATH_NOT_FOUND: errno.ENOENT,
    wire.STATUS_NO_SUCH_FILE: errno.ENOENT,
    wire.STATUS_OBJECT_NAME_COLLISION: errno.EEXIST,
    wire.STATUS_ACCESS_DENIED: errno.EACCES,
    wire.STATUS_LOGON_FAILURE: errno.EACCES,
    wire.STATUS_CANNOT_DELETE: errno.EACCES,
    wire.STATUS_MEDIA_WRITE_PROTECTED: errno.EROFS,
    wire.STATUS_FILE_IS_A_DIRECTORY: errno.EISDIR,
    wire.STATUS_NOT_A_DIRECTORY: errno.ENOTDIR,
    wire.STATUS_DIRECTORY_NOT_EMPTY: errno.ENOTEMPTY,
    wire.STATUS_SHARING_VIOLATION: errno.EBUSY,
    wire.STATUS_DELETE_PENDING: errno.EBUSY,
    wire.STATUS_DISK_FULL: errno.ENOSPC,
    wire.STATUS_BAD_NETWORK_NAME: errno.ENOENT,
    wire.STATUS_OBJECT_NAME_INVALID: errno.EINVAL,
    wire.STATUS_INVALID_PARAMETER: errno.EINVAL,
    wire.STATUS_NOT_SUPPORTED: errno.EOPNOTSUPP,
}
_CLASSES = {errno.ENOENT: _NotFound, errno.EEXIST: _Exists, errno.EACCES: _Denied,
            errno.EISDIR: _IsDir, errno.ENOTDIR: _NotDir}


def error_for(status: int, what: str = "") -> SMBError:
    """The exception for a refused request, as the matching OSError subclass where there is one."""
    return _CLASSES.get(_ERRNO.get(status, errno.EIO), SMBError)(status, what)
