"""SMB2 wire format: constants, the 64-byte header, and helpers to pack bodies.

Only layouts live here (MS-SMB2 section 2.2); no state and no I/O.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from smbring._wire import HeaderCodec

PROTOCOL_ID = b"\xfeSMB"
TRANSFORM_ID = b"\xfdSMB"
HEADER_SIZE = 64


# dialects
SMB202, SMB210, SMB300, SMB302, SMB311 = 0x0202, 0x0210, 0x0300, 0x0302, 0x0311
DIALECTS = (SMB311, SMB302, SMB300, SMB210, SMB202)
WILDCARD_DIALECT = 0x02FF


# commands
(NEGOTIATE, SESSION_SETUP, LOGOFF, TREE_CONNECT, TREE_DISCONNECT, CREATE, CLOSE, FLUSH, READ,
 WRITE, LOCK, IOCTL, CANCEL, ECHO, QUERY_DIRECTORY, CHANGE_NOTIFY, QUERY_INFO, SET_INFO,
 OPLOCK_BREAK) = range(19)


# header flags
FLAGS_SERVER_TO_REDIR = 0x1
FLAGS_ASYNC = 0x2
FLAGS_RELATED = 0x4
FLAGS_SIGNED = 0x8
FLAGS_PRIORITY_MASK = 0x70
FLAGS_DFS = 0x10000000
FLAGS_REPLAY = 0x20000000


# NTSTATUS
STATUS_SUCCESS = 0x00000000
STATUS_PENDING = 0x00000103
STATUS_NO_MORE_FILES = 0x80000006
STATUS_MORE_PROCESSING_REQUIRED = 0xC0000016
STATUS_INVALID_PARAMETER = 0xC000000D
STATUS_NO_SUCH_FILE = 0xC000000F
STATUS_END_OF_FILE = 0xC0000011
STATUS_ACCESS_DENIED = 0xC0000022
STATUS_SMB_NO_PREAUTH_INTEGRITY_HASH_OVERLAP = 0xC05D0000
STATUS_INVALID_OWNER = 0xC000005A       # an owner the setter may not name (MS-ERREF)
STATUS_OBJECT_NAME_INVALID = 0xC0000033
STATUS_OBJECT_NAME_NOT_FOUND = 0xC0000034
STATUS_OBJECT_NAME_COLLISION = 0xC0000035
STATUS_OBJECT_PATH_NOT_FOUND = 0xC000003A
STATUS_SHARING_VIOLATION = 0xC0000043
STATUS_IO_REPARSE_TAG_NOT_HANDLED = 0xC0000279
STATUS_DELETE_PENDING = 0xC0000056
STATUS_LOGON_FAILURE = 0xC000006D
# a known account the password file bars from logging on (Samba's sam_account_ok)
STATUS_ACCOUNT_DISABLED = 0xC0000072
STATUS_ACCOUNT_LOCKED_OUT = 0xC0000234
STATUS_NOLOGON_INTERDOMAIN_TRUST_ACCOUNT = 0xC0000198
STATUS_NOLOGON_WORKSTATION_TRUST_ACCOUNT = 0xC0000199
STATUS_NOLOGON_SERVER_TRUST_ACCOUNT = 0xC000019A
STATUS_DISK_FULL = 0xC000007F
STATUS_INSUFFICIENT_RESOURCES = 0xC000009A
STATUS_FILE_IS_A_DIRECTORY = 0xC00000BA
STATUS_NOT_SUPPORTED = 0xC00000BB
STATUS_BAD_NETWORK_NAME = 0xC00000CC
STATUS_INVALID_INFO_CLASS = 0xC0000003
STATUS_INFO_LENGTH_MISMATCH = 0xC0000004
STATUS_BUFFER_OVERFLOW = 0x80000005
STATUS_DIRECTORY_NOT_EMPTY = 0xC0000101
STATUS_NOT_A_DIRECTORY = 0xC0000103
STATUS_CANCELLED = 0xC0000120
STATUS_FILE_CLOSED = 0xC0000128
STATUS_INVALID_DEVICE_REQUEST = 0xC0000010
STATUS_USER_SESSION_DELETED = 0xC0000203
STATUS_NETWORK_SESSION_EXPIRED = 0xC000035C
STATUS_NETWORK_NAME_DELETED = 0xC00000C9
STATUS_MEDIA_WRITE_PROTECTED = 0xC00000A2
STATUS_REQUEST_NOT_ACCEPTED = 0xC00000D0
STATUS_REQUEST_OUT_OF_SEQUENCE = 0xC000042A
STATUS_NOT_IMPLEMENTED = 0xC0000002
STATUS_EAS_NOT_SUPPORTED = 0xC000004F
STATUS_INVALID_HANDLE = 0xC0000008
STATUS_FS_DRIVER_REQUIRED = 0xC000019C
STATUS_FILE_NOT_AVAILABLE = 0xC0000467
STATUS_DUPLICATE_OBJECTID = 0xC000022A
STATUS_OBJECT_PATH_SYNTAX_BAD = 0xC000003B
STATUS_FILE_LOCK_CONFLICT = 0xC0000054
STATUS_LOCK_NOT_GRANTED = 0xC0000055
STATUS_RANGE_NOT_LOCKED = 0xC000007E
STATUS_INVALID_LOCK_RANGE = 0xC00001A1
STATUS_INTERNAL_ERROR = 0xC00000E5
STATUS_NOTIFY_CLEANUP = 0x0000010B
STATUS_NO_EAS_ON_FILE = 0xC0000052
STATUS_NOTIFY_ENUM_DIR = 0x0000010C
STATUS_BAD_IMPERSONATION_LEVEL = 0xC00000A5
STATUS_CANNOT_DELETE = 0xC0000121
STATUS_BUFFER_TOO_SMALL = 0xC0000023
# failures smbd and Windows answer, to a signed request, with its own SIGNED flag and
# signature (they build the answer from the request's header, and meet these before any key
# can sign: a related request after a failed one, a session, tree or file not known): the
# server answers them so (smb.connection), the client takes them so (client.channel)
ECHOED_FAILURES = frozenset({STATUS_INVALID_PARAMETER, STATUS_FILE_CLOSED,
                             STATUS_NETWORK_NAME_DELETED, STATUS_USER_SESSION_DELETED})
STATUS_PRIVILEGE_NOT_HELD = 0xC0000061
STATUS_TOO_MANY_OPENED_FILES = 0xC000011F
STATUS_UNSUCCESSFUL = 0xC0000001
STATUS_UNEXPECTED_IO_ERROR = 0xC00000E9
STATUS_INVALID_OPLOCK_PROTOCOL = 0xC00000E3
STATUS_TOO_MANY_LINKS = 0xC0000265
# (what errors.ERRNO_STATUS answers for the errnos Samba maps to them)
STATUS_EA_TOO_LARGE = 0xC0000050
STATUS_INTEGER_OVERFLOW = 0xC0000095
STATUS_ALLOTTED_SPACE_EXCEEDED = 0xC0000099
STATUS_ILLEGAL_FUNCTION = 0xC00000AF
STATUS_IO_TIMEOUT = 0xC00000B5
STATUS_DEVICE_DOES_NOT_EXIST = 0xC00000C0
STATUS_NOT_FOUND = 0xC0000225
STATUS_RETRY = 0xC000022D


# StructureSize of each request (MS-SMB2 2.2): the fixed part, plus one when a variable part
# follows; a request whose field differs is malformed
REQUEST_SIZES = {
    NEGOTIATE: 36, SESSION_SETUP: 25, LOGOFF: 4, TREE_CONNECT: 9, TREE_DISCONNECT: 4, CREATE: 57,
    CLOSE: 24, FLUSH: 24, READ: 49, WRITE: 49, LOCK: 48, IOCTL: 57, CANCEL: 4, ECHO: 4,
    QUERY_DIRECTORY: 33, CHANGE_NOTIFY: 32, QUERY_INFO: 41, SET_INFO: 33, OPLOCK_BREAK: 24,
}
LEASE_BREAK_ACK_SIZE = 36      # OPLOCK_BREAK's other form: a lease break acknowledgement


# lock element flags
LOCK_SHARED, LOCK_EXCLUSIVE, LOCK_UNLOCK, LOCK_FAIL_IMMEDIATELY = 0x1, 0x2, 0x4, 0x10


# negotiate
SECURITY_SIGNING_ENABLED = 0x1
SECURITY_SIGNING_REQUIRED = 0x2
CAP_DFS, CAP_LEASING, CAP_LARGE_MTU, CAP_MULTI_CHANNEL = 0x1, 0x2, 0x4, 0x8
CAP_PERSISTENT_HANDLES, CAP_DIRECTORY_LEASING, CAP_ENCRYPTION = 0x10, 0x20, 0x40
PREAUTH_INTEGRITY_CAPABILITIES = 0x1
ENCRYPTION_CAPABILITIES = 0x2
SIGNING_CAPABILITIES = 0x8
SHA512 = 0x1


# session flags
SESSION_FLAG_BINDING = 0x1          # in a SESSION_SETUP request: bind a channel (3.x)
SESSION_FLAG_IS_GUEST = 0x1
SESSION_FLAG_IS_NULL = 0x2
SESSION_FLAG_ENCRYPT_DATA = 0x4


# tree connect
SHARE_TYPE_DISK, SHARE_TYPE_PIPE = 0x1, 0x2


# create
FILE_SUPERSEDE, FILE_OPEN, FILE_CREATE, FILE_OPEN_IF, FILE_OVERWRITE, FILE_OVERWRITE_IF = range(6)
FILE_DIRECTORY_FILE = 0x1
FILE_WRITE_THROUGH = 0x2
FILE_NON_DIRECTORY_FILE = 0x40
FILE_DELETE_ON_CLOSE = 0x1000
FILE_SUPERSEDED, FILE_OPENED, FILE_CREATED, FILE_OVERWRITTEN = 0, 1, 2, 3


# access mask bits that imply writing
FILE_READ_DATA = 0x1
FILE_WRITE_DATA = 0x2
FILE_APPEND_DATA = 0x4
FILE_WRITE_EA = 0x10
FILE_EXECUTE = 0x20
FILE_WRITE_ATTRIBUTES = 0x100
DELETE = 0x10000
GENERIC_ALL = 0x10000000
GENERIC_READ = 0x80000000
GENERIC_WRITE = 0x40000000
MAXIMUM_ALLOWED = 0x02000000
WRITE_ACCESS = FILE_WRITE_DATA | FILE_APPEND_DATA | GENERIC_WRITE | GENERIC_ALL
FILE_ALL_ACCESS = 0x001F01FF
FILE_DELETE_CHILD = 0x40
READ_ONLY_ACCESS = 0x001200A9   # FILE_GENERIC_READ | FILE_EXECUTE: all a read-only share grants
WRITE_DAC = 0x40000
WRITE_OWNER = 0x80000
# every right that changes a file or directory (a read-only share grants none of them)
WRITE_CLASS = (FILE_WRITE_DATA | FILE_APPEND_DATA | FILE_WRITE_EA | FILE_WRITE_ATTRIBUTES |
               FILE_DELETE_CHILD | DELETE | WRITE_DAC | WRITE_OWNER)


# file attributes
ATTR_READONLY = 0x1
ATTR_HIDDEN = 0x2
ATTR_DIRECTORY = 0x10
ATTR_ARCHIVE = 0x20
ATTR_TEMPORARY = 0x100
ATTR_NORMAL = 0x80


# close
CLOSE_FLAG_POSTQUERY_ATTRIB = 0x1


# info types and classes
INFO_FILE, INFO_FILESYSTEM, INFO_SECURITY, INFO_QUOTA = 1, 2, 3, 4


@dataclass(slots=True)
class Header:
    command: int
    status: int = 0
    flags: int = 0
    credit_charge: int = 0
    credits: int = 0
    next_command: int = 0
    message_id: int = 0
    tree_id: int = 0
    session_id: int = 0
    async_id: int = 0
    signature: bytes = b"\0" * 16
    # a response's (algorithm, key) where it is not what its session signs with on the
    # connection: a SESSION_SETUP answering for a session the connection does not carry, or
    # USER_SESSION_DELETED for a session a failed re-authentication ended (smb.channels)
    signer: tuple | None = None

    # (in C, smbring._wire: a header is read and a response's made and written for every
    # request, and in Python filling a new Header's twelve slots alone costs more than
    # struct's reading of the 64 bytes; the connection's short path calls HEADER_CODEC's
    # methods directly)
    @classmethod
    def parse(cls, buf) -> "Header":
        """The header at the start of `buf`; ValueError if it is short or not SMB2's. The
        8-byte word is the AsyncId where the flags say ASYNC, else Reserved (ProcessId, not
        kept) then the TreeId."""
        return HEADER_CODEC.parse(buf)

    @classmethod
    def response_to(cls, req: "Header") -> "Header":
        """A response's header as it starts: the request's command, tree and session, the
        rest zero (the handler and the framing fill them in)."""
        return HEADER_CODEC.response_to(req)

    def pack(self) -> bytes:
        """The 64 bytes, as struct.pack("<4sHHIHHIIQQQ16s") lays them out (struct.error for
        a value too large for its field)."""
        return HEADER_CODEC.pack(self)


HEADER_CODEC = HeaderCodec(Header)


# where the data of a WRITE alone in its frame starts (the header, then the WRITE request's
# 48 bytes: its DataOffset, 0x70); the shell places frames so that it lands on a page
WRITE_DATA_OFFSET = HEADER_SIZE + 48


def is_lone_write(frame) -> bool:
    """A plain SMB2 WRITE alone in its frame (not encrypted, not part of a compound)."""
    return (len(frame) >= HEADER_SIZE and frame[:4] == PROTOCOL_ID and frame[12] == WRITE
            and frame[13] == 0 and frame[20:24] == b"\0\0\0\0")


def utf16(s: str) -> bytes:
    return s.encode("utf-16-le")


def from_utf16(b) -> str:
    return bytes(b).decode("utf-16-le", errors="strict")


def nt_time(ns: int) -> int:
    """Unix time in ns -> Windows FILETIME (100 ns ticks since 1601)."""
    return ns // 100 + 116444736000000000


def unix_ns(filetime: int) -> int:
    return (filetime - 116444736000000000) * 100


def error_body() -> bytes:
    """The ERROR response body (StructureSize 9, no error data)."""
    return struct.pack("<HBBI", 9, 0, 0, 0) + b"\0"


# server-side copy (MS-SMB2 2.2.31.1, 2.2.32.1, 2.2.32.3): the controls and their layouts,
# read by the server (smb.commands.ioctl_copy) and written by the client (client.copy)
FSCTL_SRV_REQUEST_RESUME_KEY = 0x00140078
FSCTL_SRV_COPYCHUNK = 0x001440F2
FSCTL_SRV_COPYCHUNK_WRITE = 0x001480F2
RESUME_KEY_SIZE = 24
COPY_HEADER = struct.Struct("<24sII")       # SRV_COPYCHUNK_COPY: SourceKey, ChunkCount, Reserved
CHUNK = struct.Struct("<QQII")             # SRV_COPYCHUNK: SourceOffset, TargetOffset, Length, Reserved
COPY_RESPONSE = struct.Struct("<III")       # ChunksWritten, ChunkBytesWritten, TotalBytesWritten


def pad8(n: int) -> int:
    return (n + 7) & ~7


def chain(entries, align: int = 4) -> bytes:
    """Entries that each begin with a 4-byte NextEntryOffset (EA lists, change notifications):
    each starts on an `align` boundary, and each offset but the last points to the next."""
    out = bytearray()
    last = None
    for entry in entries:
        start = (len(out) + align - 1) & ~(align - 1)
        out += b"\0" * (start - len(out))
        if last is not None:
            struct.pack_into("<I", out, last, start - last)
        last = start
        out += entry
    return bytes(out)
