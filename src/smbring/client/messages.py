"""The client's side of the SMB2 layouts: request bodies to send, response bodies to read.

Constants and the 64-byte header come from :mod:`smbring.smb.wire` (the server's own); this
module only holds the bodies a client writes and the checks a client makes on what it reads.
No state, no I/O. Every parser checks each offset and length against the message that holds
it and raises :class:`ProtocolError` otherwise: a server's answer is untrusted input.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from smbring.smb import wire
from smbring.client.errors import ProtocolError

# QUERY_DIRECTORY flags, info classes (MS-SMB2 2.2.33, MS-FSCC 2.4)
RESTART_SCANS = 0x1
FILE_ID_BOTH_DIRECTORY_INFORMATION = 37
FILE_BASIC_INFORMATION = 4
FILE_RENAME_INFORMATION = 10
FILE_DISPOSITION_INFORMATION = 13
FILE_END_OF_FILE_INFORMATION = 20
FILE_NETWORK_OPEN_INFORMATION = 34
SHAREFLAG_ENCRYPT_DATA = 0x8000
FILE_SHARE_ALL = 0x7                       # read, write, delete
FILE_SHARE_READ = 0x1                      # others may read meanwhile, not write or delete
FILE_GENERIC_READ = 0x00120089
FILE_GENERIC_WRITE = 0x00120116
FILE_READ_ATTRIBUTES = 0x80
SYNCHRONIZE = 0x00100000
IMPERSONATION = 2


def body_of(msg, structure: int, fixed: int) -> None:
    """A response body must be at least its fixed size and carry the StructureSize it claims."""
    if len(msg) < wire.HEADER_SIZE + fixed:
        raise ProtocolError(f"response body of {len(msg) - wire.HEADER_SIZE} bytes, "
                            f"shorter than its {fixed}-byte fixed part")
    size = struct.unpack_from("<H", msg, wire.HEADER_SIZE)[0]
    if size != structure:
        raise ProtocolError(f"response StructureSize {size}, expected {structure}")


def buffer_in(msg, offset: int, length: int, what: str) -> memoryview:
    """msg[offset:offset+length], an offset counted from the header, or ProtocolError."""
    if length == 0:
        return memoryview(b"")
    if offset < wire.HEADER_SIZE or offset + length > len(msg):
        raise ProtocolError(f"{what}: {length} bytes at offset {offset} run outside the "
                            f"{len(msg)}-byte response")
    return memoryview(msg)[offset:offset + length]


# ---- NEGOTIATE (MS-SMB2 2.2.3, 2.2.4) ----

def negotiate_request(dialects, security_mode: int, capabilities: int, client_guid: bytes,
                      salt: bytes, ciphers, signing_algorithms) -> bytes:
    contexts = []
    if wire.SMB311 in dialects:
        contexts.append(_context(wire.PREAUTH_INTEGRITY_CAPABILITIES,
                                 struct.pack("<HHH", 1, len(salt), wire.SHA512) + salt))
        if ciphers:
            contexts.append(_context(wire.ENCRYPTION_CAPABILITIES,
                                     struct.pack(f"<H{len(ciphers)}H", len(ciphers), *ciphers)))
        contexts.append(_context(wire.SIGNING_CAPABILITIES,
                                 struct.pack(f"<H{len(signing_algorithms)}H", len(signing_algorithms),
                                             *signing_algorithms)))
    fixed = 36 + 2 * len(dialects)
    ctx_offset = wire.pad8(wire.HEADER_SIZE + fixed) if contexts else 0
    body = struct.pack("<HHHHI16sIHH", 36, len(dialects), security_mode, 0, capabilities,
                       client_guid, ctx_offset, len(contexts), 0)
    body += struct.pack(f"<{len(dialects)}H", *dialects)
    if contexts:
        body += b"\0" * (ctx_offset - wire.HEADER_SIZE - len(body))
        for i, ctx in enumerate(contexts):
            body += ctx
            if i < len(contexts) - 1:
                body += b"\0" * (wire.pad8(len(ctx)) - len(ctx))
    return body


def _context(kind: int, data: bytes) -> bytes:
    return struct.pack("<HHI", kind, len(data), 0) + data


class NegotiateResponse:
    # a plain class (as CreateResponse): a dataclass generates and compiles its methods at
    # import time, a share of every run's fixed CPU
    __slots__ = ("security_mode", "dialect", "server_guid", "capabilities", "max_transact",
                 "max_read", "max_write", "security_blob", "contexts")

    def __init__(self, security_mode: int, dialect: int, server_guid: bytes, capabilities: int,
                 max_transact: int, max_read: int, max_write: int, security_blob: bytes,
                 contexts: dict[int, bytes]):
        self.security_mode, self.dialect, self.server_guid = security_mode, dialect, server_guid
        self.capabilities, self.max_transact = capabilities, max_transact
        self.max_read, self.max_write = max_read, max_write
        self.security_blob, self.contexts = security_blob, contexts


def parse_negotiate(msg) -> NegotiateResponse:
    body_of(msg, 65, 64)
    (_size, secmode, dialect, ctx_count, guid, caps, max_trans, max_read, max_write, _now, _start,
     sec_off, sec_len, ctx_off) = struct.unpack_from("<HHHH16sIIIIQQHHI", msg, wire.HEADER_SIZE)
    blob = bytes(buffer_in(msg, sec_off, sec_len, "NEGOTIATE security buffer"))
    contexts: dict[int, bytes] = {}
    if dialect == wire.SMB311:
        pos = ctx_off
        for _ in range(ctx_count):
            head = buffer_in(msg, pos, 8, "negotiate context")
            kind, length = struct.unpack_from("<HH", head, 0)
            if kind in contexts:
                raise ProtocolError(f"negotiate context {kind:#x} given twice")
            contexts[kind] = bytes(buffer_in(msg, pos + 8, length, "negotiate context data"))
            pos = wire.pad8(pos + 8 + length)
    return NegotiateResponse(secmode, dialect, bytes(guid), caps, max_trans, max_read, max_write,
                             blob, contexts)


def one_choice(data: bytes, what: str) -> int:
    """The single algorithm a server's ENCRYPTION/SIGNING_CAPABILITIES context chose."""
    if len(data) < 4 or struct.unpack_from("<H", data, 0)[0] != 1:
        raise ProtocolError(f"the server's {what} context must name exactly one algorithm")
    return struct.unpack_from("<H", data, 2)[0]


# ---- SESSION_SETUP, TREE_CONNECT (2.2.5 - 2.2.10) ----

def session_setup_request(security_mode: int, token: bytes, flags: int = 0) -> bytes:
    """flags: wire.SESSION_FLAG_BINDING to bind this connection to an existing session."""
    return struct.pack("<HBBIIHHQ", 25, flags, security_mode, 0, 0, wire.HEADER_SIZE + 24,
                       len(token), 0) + token


def parse_session_setup(msg) -> tuple[int, bytes]:
    """(SessionFlags, security token)."""
    body_of(msg, 9, 8)
    _size, flags, off, length = struct.unpack_from("<HHHH", msg, wire.HEADER_SIZE)
    return flags, bytes(buffer_in(msg, off, length, "SESSION_SETUP security buffer"))


def tree_connect_request(unc: str) -> bytes:
    path = wire.utf16(unc)
    return struct.pack("<HHHH", 9, 0, wire.HEADER_SIZE + 8, len(path)) + path


def parse_tree_connect(msg) -> tuple[int, int]:
    """(ShareType, ShareFlags)."""
    body_of(msg, 16, 16)
    _size, share_type, _r, flags, _caps, _access = struct.unpack_from("<HBBIII", msg, wire.HEADER_SIZE)
    return share_type, flags


# ---- CREATE, CLOSE (2.2.13 - 2.2.16) ----

def create_request(name: str, access: int, disposition: int, options: int,
                   attributes: int = 0, share: int = FILE_SHARE_ALL) -> bytes:
    raw = wire.utf16(name)
    body = struct.pack("<HBBIQQIIIIIHHII", 57, 0, 0, IMPERSONATION, 0, 0, access, attributes,
                       share, disposition, options, wire.HEADER_SIZE + 56, len(raw), 0, 0)
    return body + (raw or b"\0")   # the buffer is never empty (MS-SMB2 2.2.13)


class CreateResponse:
    __slots__ = ("file_id", "action", "size", "allocation", "attributes", "times")

    def __init__(self, file_id: bytes, action: int, size: int, allocation: int, attributes: int,
                 times: tuple[int, int, int, int]):
        self.file_id, self.action, self.size = file_id, action, size
        self.allocation, self.attributes = allocation, attributes
        self.times = times          # creation, access, write, change (NT time)


def parse_create(msg) -> CreateResponse:
    body_of(msg, 89, 88)
    (_size, _oplock, _flags, action, created, accessed, written, changed, alloc, eof, attrs, _r,
     fid, _co, _cl) = struct.unpack_from("<HBBIQQQQQQII16sII", msg, wire.HEADER_SIZE)
    if eof > 1 << 62:
        raise ProtocolError(f"CREATE response claims a size of {eof} bytes")
    return CreateResponse(bytes(fid), action, eof, alloc, attrs, (created, accessed, written, changed))


def close_request(file_id: bytes, flags: int = 0) -> bytes:
    return struct.pack("<HHI16s", 24, flags, 0, file_id)


_CLOSE_ANSWER = struct.Struct("<HH44xQ")        # StructureSize, Flags, ..., EndofFile


def parse_close_size(msg) -> int | None:
    """The EndofFile a CLOSE answer asked for its attributes (CLOSE_FLAG_POSTQUERY_ATTRIB)
    reports; None where the server left them out (its Flags without the flag)."""
    body_of(msg, 60, 60)
    _structure, flags, size = _CLOSE_ANSWER.unpack_from(msg, wire.HEADER_SIZE)
    return size if flags & wire.CLOSE_FLAG_POSTQUERY_ATTRIB else None


# ---- READ, WRITE (2.2.19 - 2.2.22) ----

def read_request(file_id: bytes, offset: int, length: int) -> bytes:
    return struct.pack("<HBBIQ16sIIIHHB", 49, 0x50, 0, length, offset, file_id, 0, 0, 0, 0, 0, 0)


READ_DATA_MIN = wire.HEADER_SIZE + 16    # a READ's data follows its header and fixed fields


def parse_read(msg, asked: int) -> memoryview:
    """The data of a READ response: never more than asked, always inside the message and
    after the response's own fields (a DataOffset into them would pass the header's or the
    body's bytes off as the file's: Samba's client takes 80 only, where every server puts it)."""
    body_of(msg, 17, 16)
    _size, off, _r, length, _remaining, _r2 = struct.unpack_from("<HBBIII", msg, wire.HEADER_SIZE)
    if length > asked:
        raise ProtocolError(f"READ returned {length} bytes, {asked} were asked for")
    if length and off < READ_DATA_MIN:
        raise ProtocolError(f"READ response with DataOffset {off}: its data would start inside "
                            f"the response's own {READ_DATA_MIN}-byte header and fields")
    return buffer_in(msg, off, length, "READ data")


_WRITE_HEAD = struct.Struct("<HHIQ16s16x")      # (Channel, RemainingBytes... all 0)
_WRITE_ANSWER = struct.Struct("<HxxI")           # StructureSize, Reserved, Count


def write_request_head(file_id: bytes, offset: int, length: int) -> bytes:
    """The WRITE body up to its data (the data follows at wire.WRITE_DATA_OFFSET)."""
    return _WRITE_HEAD.pack(49, wire.WRITE_DATA_OFFSET, length, offset, file_id)


def parse_write(msg) -> int:
    """The Count of a WRITE response (checked as body_of checks a body: once per WRITE)."""
    if len(msg) < wire.HEADER_SIZE + 16:
        body_of(msg, 17, 16)            # (raises, saying why)
    structure, count = _WRITE_ANSWER.unpack_from(msg, wire.HEADER_SIZE)
    if structure != 17:
        body_of(msg, 17, 16)
    return count


# ---- IOCTL: FSCTL_VALIDATE_NEGOTIATE_INFO (2.2.31, 2.2.32.6) ----

FSCTL_VALIDATE_NEGOTIATE_INFO = 0x00140204
IOCTL_IS_FSCTL = 0x1
NO_FILE = b"\xff" * 16     # in a compound's later requests: the file the CREATE before opens

# where a request's FileId lies in its body (MS-SMB2 2.2.13 - 2.2.39): a compound's later
# requests, sent apart, name the file their CREATE opened there
FILE_ID_AT = {wire.CLOSE: 8, wire.FLUSH: 8, wire.READ: 16, wire.WRITE: 16, wire.LOCK: 8,
              wire.IOCTL: 8, wire.QUERY_DIRECTORY: 8, wire.CHANGE_NOTIFY: 8,
              wire.QUERY_INFO: 24, wire.SET_INFO: 16}


def naming_file(command: int, body: bytes, file_id: bytes) -> bytes:
    """A compound's later request `body` (naming NO_FILE) naming `file_id` instead."""
    at = FILE_ID_AT[command]
    return body[:at] + file_id + body[at + 16:]


def ioctl_request(control: int, file_id: bytes, data: bytes = b"", output: int = 0) -> bytes:
    """An IOCTL request of an FSCTL (MS-SMB2 2.2.31): `data` its input, `output` the most it
    may answer (MaxOutputResponse)."""
    return struct.pack("<HHI16sIIIIIIII", 57, 0, control, file_id, wire.HEADER_SIZE + 56, len(data),
                       0, 0, 0, output, IOCTL_IS_FSCTL, 0) + data


def ioctl_output(msg, control: int, limit: int, what: str) -> memoryview:
    """The output of an IOCTL response (MS-SMB2 2.2.32): the control asked, at most `limit`
    bytes, inside the message."""
    body_of(msg, 49, 48)
    _size, _r, ctl, _fid, _in_off, _in_len, out_off, out_len = struct.unpack_from(
        "<HHI16sIIII", msg, wire.HEADER_SIZE)
    if ctl != control:
        raise ProtocolError(f"{what} answered with another control ({ctl:#x})")
    if out_len > limit:
        raise ProtocolError(f"{what}: {out_len} bytes of output, {limit} were allowed")
    return buffer_in(msg, out_off, out_len, f"{what} output")


def validate_negotiate_request(capabilities: int, guid: bytes, security_mode: int, dialects) -> bytes:
    data = struct.pack(f"<I16sHH{len(dialects)}H", capabilities, guid, security_mode, len(dialects),
                       *dialects)
    return ioctl_request(FSCTL_VALIDATE_NEGOTIATE_INFO, NO_FILE, data, 24)


def parse_validate_negotiate(msg) -> tuple[int, bytes, int, int]:
    """(Capabilities, Guid, SecurityMode, Dialect) the server says it sent in NEGOTIATE: 24
    bytes, the most the request let it answer (MaxOutputResponse)."""
    output = ioctl_output(msg, FSCTL_VALIDATE_NEGOTIATE_INFO, 24, "VALIDATE_NEGOTIATE_INFO")
    if len(output) < 24:
        raise ProtocolError(f"VALIDATE_NEGOTIATE_INFO answered with {len(output)} bytes, not 24")
    return struct.unpack_from("<I16sHH", output, 0)


# ---- IOCTL: FSCTL_QUERY_NETWORK_INTERFACE_INFO (2.2.32.5) ----

FSCTL_QUERY_NETWORK_INTERFACE_INFO = 0x001401FC
INTERFACE_ENTRY = 152               # Next, IfIndex, Capability, Reserved, LinkSpeed, SockAddr
MAX_INTERFACES = 256                # entries believed (a server could list a great many)
INTERFACE_OUTPUT = 64 * 1024        # MaxOutputResponse of the query
RSS_CAPABLE = 0x1
AF_INET, AF_INET6 = 0x2, 0x17


class NetworkInterface:
    """An address the server says it can be reached at, with what it says of the link. (A
    plain class: a frozen dataclass compiles six methods at every start-up of the client.)"""
    __slots__ = ("index", "address", "speed", "capability")

    def __init__(self, index: int, address: str, speed: int, capability: int):
        self.index = index
        self.address = address
        self.speed = speed              # bits per second
        self.capability = capability    # RSS_CAPABLE, RDMA_CAPABLE

    def __eq__(self, other):
        if other.__class__ is not self.__class__:
            return NotImplemented
        return (self.index, self.address, self.speed, self.capability) == \
            (other.index, other.address, other.speed, other.capability)

    def __hash__(self) -> int:
        return hash((self.index, self.address, self.speed, self.capability))

    def __repr__(self) -> str:
        return (f"NetworkInterface(index={self.index}, address={self.address!r}, "
                f"speed={self.speed}, capability={self.capability})")


def query_interfaces_request() -> bytes:
    return ioctl_request(FSCTL_QUERY_NETWORK_INTERFACE_INFO, NO_FILE, output=INTERFACE_OUTPUT)


def parse_interfaces(msg) -> list[NetworkInterface]:
    """The NETWORK_INTERFACE_INFO chain: every entry inside the output, each Next moving on
    by at least one entry, at most MAX_INTERFACES believed; an address family other than IPv4
    or IPv6 is skipped (RDMA and the like are of no use here)."""
    import ipaddress
    out = ioctl_output(msg, FSCTL_QUERY_NETWORK_INTERFACE_INFO, INTERFACE_OUTPUT,
                       "QUERY_NETWORK_INTERFACE_INFO")
    found, pos = [], 0
    while len(out):
        if pos + INTERFACE_ENTRY > len(out):
            raise ProtocolError(f"network interface entry at {pos} runs past the {len(out)}-byte list")
        nxt, index, capability, _r, speed = struct.unpack_from("<IIIIQ", out, pos)
        family = struct.unpack_from("<H", out, pos + 24)[0]
        if family == AF_INET:
            found.append(NetworkInterface(index, str(ipaddress.IPv4Address(bytes(out[pos + 28:pos + 32]))),
                                          speed, capability))
        elif family == AF_INET6:
            found.append(NetworkInterface(index, str(ipaddress.IPv6Address(bytes(out[pos + 32:pos + 48]))),
                                          speed, capability))
        if not nxt or len(found) >= MAX_INTERFACES:
            break
        if nxt < INTERFACE_ENTRY:
            raise ProtocolError(f"network interface entry at {pos}: Next {nxt} does not move past it")
        pos += nxt
    return found


# ---- IOCTL: server-side copy (2.2.31.1, 2.2.32.1, 2.2.32.3) ----

RESUME_KEY_OUTPUT = 32              # ResumeKey, ContextLength, Context: what servers answer


def resume_key_request(file_id: bytes) -> bytes:
    return ioctl_request(wire.FSCTL_SRV_REQUEST_RESUME_KEY, file_id, output=RESUME_KEY_OUTPUT)


def parse_resume_key(msg) -> bytes:
    out = ioctl_output(msg, wire.FSCTL_SRV_REQUEST_RESUME_KEY, RESUME_KEY_OUTPUT, "SRV_REQUEST_RESUME_KEY")
    if len(out) < wire.RESUME_KEY_SIZE:
        raise ProtocolError(f"a resume key of {len(out)} bytes, {wire.RESUME_KEY_SIZE} expected")
    return bytes(out[:wire.RESUME_KEY_SIZE])


def copychunk_request(file_id: bytes, key: bytes, chunks) -> bytes:
    """FSCTL_SRV_COPYCHUNK_WRITE into the open `file_id` (which needs write access only):
    `chunks` (source offset, target offset, length) of the file `key` names."""
    data = wire.COPY_HEADER.pack(key, len(chunks), 0) + b"".join(
        wire.CHUNK.pack(source, target, length, 0) for source, target, length in chunks)
    return ioctl_request(wire.FSCTL_SRV_COPYCHUNK_WRITE, file_id, data, wire.COPY_RESPONSE.size)


def parse_copychunk(msg) -> tuple[int, int, int]:
    """SRV_COPYCHUNK_RESPONSE: (ChunksWritten, ChunkBytesWritten, TotalBytesWritten); in an
    answer of STATUS_INVALID_PARAMETER, the server's limits instead (chunks per request,
    bytes per chunk, bytes per request)."""
    out = ioctl_output(msg, wire.FSCTL_SRV_COPYCHUNK_WRITE, wire.COPY_RESPONSE.size, "SRV_COPYCHUNK_WRITE")
    if len(out) < wire.COPY_RESPONSE.size:
        raise ProtocolError(f"SRV_COPYCHUNK_WRITE answered {len(out)} bytes, "
                            f"{wire.COPY_RESPONSE.size} expected")
    return wire.COPY_RESPONSE.unpack_from(out, 0)


# ---- CHANGE_NOTIFY (2.2.35, 2.2.36; MS-FSCC 2.7.1) ----

WATCH_TREE = 0x1
_NOTIFY_ENTRY = struct.Struct("<III")        # NextEntryOffset, Action, FileNameLength


def change_notify_request(file_id: bytes, output: int, changes: int, recursive: bool) -> bytes:
    return struct.pack("<HHI16sII", 32, WATCH_TREE if recursive else 0, output, file_id, changes, 0)


def parse_notifications(buf) -> list[tuple[int, str]]:
    """FILE_NOTIFY_INFORMATION entries: (Action, FileName) each. Each entry and its name must
    lie inside the buffer, each NextEntryOffset move forward and keep the next entry 4-byte
    aligned; names are decoded strictly."""
    found, pos = [], 0
    while len(buf):
        if pos + _NOTIFY_ENTRY.size > len(buf):
            raise ProtocolError(f"change notification at {pos} runs past the {len(buf)}-byte buffer")
        nxt, action, name_len = _NOTIFY_ENTRY.unpack_from(buf, pos)
        start = pos + _NOTIFY_ENTRY.size
        if start + name_len > len(buf) or name_len % 2 or \
                (nxt and (nxt < _NOTIFY_ENTRY.size + name_len or nxt % 4)):
            raise ProtocolError(f"change notification at {pos}: name of {name_len} bytes or next "
                                f"entry offset {nxt} does not fit")
        try:
            found.append((action, wire.from_utf16(buf[start:start + name_len])))
        except UnicodeDecodeError:
            raise ProtocolError("a changed name is not valid UTF-16") from None
        if not nxt:
            break
        pos += nxt
    return found


# ---- QUERY_DIRECTORY, QUERY_INFO, SET_INFO (2.2.33 - 2.2.40) ----

def query_directory_request(file_id: bytes, pattern: str, flags: int, output: int) -> bytes:
    raw = wire.utf16(pattern)
    return struct.pack("<HBBI16sHHI", 33, FILE_ID_BOTH_DIRECTORY_INFORMATION, flags, 0, file_id,
                       wire.HEADER_SIZE + 32, len(raw), output) + raw


def parse_output_buffer(msg, limit: int) -> memoryview:
    """The OutputBuffer of a QUERY_DIRECTORY or QUERY_INFO response (at most `limit` bytes)."""
    body_of(msg, 9, 8)
    _size, off, length = struct.unpack_from("<HHI", msg, wire.HEADER_SIZE)
    if length > limit:
        raise ProtocolError(f"{length}-byte output buffer, {limit} were allowed")
    return buffer_in(msg, off, length, "output buffer")


@dataclass(frozen=True)
class DirEntry:
    """One name in a listing, with what the server said about it (times in Unix ns)."""
    name: str
    size: int
    allocation: int
    attributes: int
    created_ns: int
    accessed_ns: int
    modified_ns: int
    changed_ns: int
    file_id: int

    @property
    def is_dir(self) -> bool:
        return bool(self.attributes & wire.ATTR_DIRECTORY)


_ID_BOTH = struct.Struct("<IIQQQQQQIIIBB24sHQ")      # 104 bytes, then the name


def parse_directory(buf) -> list[DirEntry]:
    """FileIdBothDirectoryInformation entries (MS-FSCC 2.4.17). Each entry and its name must
    lie inside the buffer and each NextEntryOffset must move forward; names are decoded
    strictly (a name that is not UTF-16 is refused, never guessed at)."""
    entries, pos = [], 0
    while True:
        if pos + _ID_BOTH.size > len(buf):
            raise ProtocolError(f"directory entry at {pos} runs past the {len(buf)}-byte buffer")
        (nxt, _index, created, accessed, written, changed, eof, alloc, attrs, name_len, _ea,
         _short_len, _r, _short, _r2, file_id) = _ID_BOTH.unpack_from(buf, pos)
        start = pos + _ID_BOTH.size
        if start + name_len > len(buf) or name_len % 2 or (nxt and nxt < _ID_BOTH.size + name_len):
            raise ProtocolError(f"directory entry at {pos}: name of {name_len} bytes or next "
                                f"entry offset {nxt} does not fit")
        try:
            name = wire.from_utf16(buf[start:start + name_len])
        except UnicodeDecodeError:
            raise ProtocolError("directory entry name is not valid UTF-16") from None
        entries.append(DirEntry(name, eof, alloc, attrs, wire.unix_ns(created), wire.unix_ns(accessed),
                                wire.unix_ns(written), wire.unix_ns(changed), file_id))
        if not nxt:
            return entries
        pos += nxt


def query_info_request(file_id: bytes, info_type: int, klass: int, output: int) -> bytes:
    return struct.pack("<HBBIHHIII16sB", 41, info_type, klass, output, 0, 0, 0, 0, 0, file_id, 0)


def set_info_request(file_id: bytes, info_type: int, klass: int, data: bytes) -> bytes:
    return struct.pack("<HBBIHHI16s", 33, info_type, klass, len(data), wire.HEADER_SIZE + 32, 0, 0,
                       file_id) + data


def rename_information(target: str, replace: bool) -> bytes:
    raw = wire.utf16(target)
    return struct.pack("<B7xQI", 1 if replace else 0, 0, len(raw)) + raw


def basic_information(times: tuple[int, int, int, int], attributes: int = 0) -> bytes:
    """FileBasicInformation: NT times (0: leave as is), attributes (0: leave as is)."""
    return struct.pack("<QQQQII", *times, attributes, 0)


@dataclass(frozen=True)
class RemoteStat:
    """A file's metadata as the server reports it (times in Unix ns)."""
    size: int
    allocation: int
    attributes: int
    created_ns: int
    accessed_ns: int
    modified_ns: int
    changed_ns: int

    @property
    def is_dir(self) -> bool:
        return bool(self.attributes & wire.ATTR_DIRECTORY)


def parse_network_open(buf) -> RemoteStat:
    """FileNetworkOpenInformation (MS-FSCC 2.4.29): 56 bytes."""
    if len(buf) < 56:
        raise ProtocolError(f"FileNetworkOpenInformation of {len(buf)} bytes, 56 expected")
    created, accessed, written, changed, alloc, eof, attrs = struct.unpack_from("<QQQQQQI", buf, 0)
    return RemoteStat(eof, alloc, attrs, wire.unix_ns(created), wire.unix_ns(accessed),
                      wire.unix_ns(written), wire.unix_ns(changed))
