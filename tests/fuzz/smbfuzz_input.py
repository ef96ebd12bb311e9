"""What a fuzz input means: a script of SMB2 requests for one connection.

An input is read front to back through atheris' FuzzedDataProvider (little-endian integers,
so the seed corpus can be written by hand: see make_corpus.py). Its first byte picks the mode
(see `Mode`); in raw mode the rest is one frame, sent as it is. Otherwise the rest is a list of
records, each one frame (or a wrapper around the next record):

    MSG       a message with a literal body
    GEN       a message whose body is generated field by field (plausible StructureSize,
              offsets and lengths, values chosen among the interesting ones)
    COMPOUND  2 to 6 MSG/GEN messages chained in one frame
    RAW       a frame of literal bytes
    MUTATE    byte patches applied to the next record's frame
    SEALED    the next record's frame encrypted with the sealed session's key
    CANCEL    a CANCEL for a request still waiting (by AsyncId or MessageId)

A message starts with a fixed 9-byte `Spec` of symbolic header fields: which session, tree and
FileId to use are slots that the client (smbfuzz_client) resolves when the frame is sent, so the
ids the server handed out earlier in the same input (FileIds of CREATE responses) are reused.
Nothing here knows about the server's state: decoding an input never depends on running it.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

from smbring.smb import acl, wire

MAX_RECORDS = 40          # frames per input
SNAPSHOT = "@GMT-2026.01.01-00.00.00"      # the writable share's previous version (smbfuzz_world)
SNAPSHOT_FILETIME = 1767225600 * 10_000_000 + 116444736000000000     # its time, as a TWrp gives it: enough for a create-use-close story, yet fast
MSG, GEN, COMPOUND, RAW, MUTATE, SEALED, CANCEL = range(7)
RECORD_KINDS = 7

# Spec.flags bits -> header flags (bit 6: a flag the server must refuse)
FLAG_BITS = ((0x01, wire.FLAGS_RELATED), (0x02, wire.FLAGS_SIGNED), (0x04, wire.FLAGS_ASYNC),
             (0x08, wire.FLAGS_DFS), (0x10, wire.FLAGS_REPLAY), (0x20, 0x10), (0x40, 0x100))

# session slots (Spec.session); anything else is used as the SessionId itself
USER, GUEST, SIGNED, SEALED_SESSION, NO_SESSION, ALL_ONES, SEALED_PLAIN = range(7)
# tree slots (Spec.tree): the chosen session's trees, another session's tree, or raw values
TREE_RW, TREE_RO, TREE_IPC, TREE_OTHER_SESSION, TREE_LAST, TREE_ZERO, TREE_ALL_ONES = range(7)
# MessageId modes (Spec.mid): below MID_REUSE the next valid id, as a client sends it
MID_REUSE, MID_SKIP, MID_RANDOM = 200, 220, 240
# FileId slots (Spec.fid): NO_FID leaves the body's FileId as written
FID_ANY_SLOT, FID_ZERO_SLOT, NO_FID = 0, 1, 0xFF
# where each command's FileId sits in its request body (MS-SMB2 2.2)
FID_OFFSET = {wire.CLOSE: 8, wire.FLUSH: 8, wire.READ: 16, wire.WRITE: 16, wire.LOCK: 8,
              wire.IOCTL: 8, wire.QUERY_DIRECTORY: 8, wire.CHANGE_NOTIFY: 8,
              wire.QUERY_INFO: 24, wire.SET_INFO: 16, wire.OPLOCK_BREAK: 8}


class Mode:
    """The first byte: bits 0-2 the dialect (or no NEGOTIATE at all, or raw mode), bit 3
    WRITEs in the background (the shell holds back the WRITEs the core lets run while it reads
    on, until a Drain asks for them: smbfuzz_shell), bit 4 the other offer: for 3.1.1
    AES-256-GCM and AES-GMAC signing, for 3.0 and 3.0.2 no encryption (then no session must
    encrypt), bit 5 `strict allocate` on the writable share (allocation reserves disk)."""
    DIALECTS = (wire.SMB202, wire.SMB210, wire.SMB300, wire.SMB302, wire.SMB311)
    FRESH = 5        # a connection that has not negotiated: NEGOTIATE and SESSION_SETUP first
    RAW = 6          # the rest of the input is one frame, on a logged-on 3.0.2 connection
    RAW_FRESH = 7    # the same on a connection that has not negotiated

    def __init__(self, byte: int):
        self.kind = byte & 7
        self.held_writes = bool(byte & 8)
        self.other_offer = bool(byte & 16)
        self.strict_allocate = bool(byte & 32)

    @property
    def dialect(self) -> int:
        if self.kind < len(self.DIALECTS):
            return self.DIALECTS[self.kind]
        return wire.SMB302 if self.kind == self.RAW else 0

    @property
    def raw(self) -> bool:
        return self.kind in (self.RAW, self.RAW_FRESH)


@dataclass
class Spec:
    """A request header with symbolic ids; 9 bytes in the input."""
    command: int
    flags: int = 0               # FLAG_BITS
    session: int = USER
    tree: int = TREE_RW
    mid: int = 0                 # MessageId mode
    credit_charge: int = 1
    credits: int = 32
    fid: int = NO_FID

    FORMAT = struct.Struct("<BBBBBBHB")

    def encode(self) -> bytes:
        return self.FORMAT.pack(self.command, self.flags, self.session, self.tree, self.mid,
                                self.credit_charge, self.credits, self.fid)

    def header_flags(self) -> int:
        return sum(flag for bit, flag in FLAG_BITS if self.flags & bit)


@dataclass
class Message:
    spec: Spec
    body: bytes


@dataclass
class Frame:
    """One frame to send: messages to chain, or literal bytes, and what to do to them."""
    messages: list[Message] = field(default_factory=list)
    raw: bytes | None = None
    patches: list[tuple[int, int]] = field(default_factory=list)   # after sealing, if sealed
    sealed: bool = False
    cancel: int | None = None       # CANCEL record: its choice byte


# -- reading ---------------------------------------------------------------------------------

class Reader:
    """Little-endian fields from the front of the input (what make_corpus writes)."""

    def __init__(self, fdp):
        self.fdp = fdp

    def left(self) -> int:
        return self.fdp.remaining_bytes()

    def u8(self) -> int:
        return self.fdp.ConsumeUInt(1)

    def u16(self) -> int:
        return self.fdp.ConsumeUInt(2)

    def u32(self) -> int:
        return self.fdp.ConsumeUInt(4)

    def u64(self) -> int:
        return self.fdp.ConsumeUInt(8)

    def bytes(self, n: int) -> bytes:
        return self.fdp.ConsumeBytes(n)

    def blob(self) -> bytes:
        """A length byte, then that many bytes."""
        return self.bytes(self.u8())

    def pick(self, choices):
        """One of `choices` (a byte); past the list, the raw value of the field instead."""
        i = self.u8()
        return choices[i] if i < len(choices) else None

    def spec(self) -> Spec:
        return Spec(*Spec.FORMAT.unpack(self.bytes(Spec.FORMAT.size).ljust(Spec.FORMAT.size, b"\0")))


def decode(fdp) -> tuple[Mode, list[Frame] | bytes]:
    """The mode, and the frames to send (or, in raw mode, the one frame's bytes)."""
    r = Reader(fdp)
    mode = Mode(r.u8())
    if mode.raw:
        return mode, r.bytes(r.left())
    frames = []
    while r.left() and len(frames) < MAX_RECORDS:
        frames.append(record(r))
    return mode, frames


def record(r: Reader, depth: int = 0) -> Frame:
    kind = r.u8() % RECORD_KINDS
    if kind in (MUTATE, SEALED) and depth < 3:
        if kind == MUTATE:
            patches = [(r.u16(), r.u8()) for _ in range(1 + r.u8() % 8)]
            inner = record(r, depth + 1)
            inner.patches = patches + inner.patches
        else:
            inner = record(r, depth + 1)
            inner.sealed = True
        return inner
    if kind == RAW:
        return Frame(raw=r.bytes(r.u16()))
    if kind == CANCEL:
        return Frame(cancel=r.u8())
    if kind == COMPOUND:
        return Frame(messages=[message(r, r.u8() % 2 == 1) for _ in range(2 + r.u8() % 5)])
    return Frame(messages=[message(r, kind == GEN)])


def message(r: Reader, generated: bool) -> Message:
    spec = r.spec()
    if not generated:
        return Message(spec, r.bytes(r.u16()))
    body, fields = GENERATORS.get(spec.command, gen_random)(r)
    return Message(spec, skew(r, body, fields))


def skew(r: Reader, body: bytes, fields: list[tuple[int, str]]) -> bytes:
    """Now and then one offset or length field of a generated body is set off by a little or
    a lot: what a sloppy or hostile client sends."""
    choice = r.u8()
    if choice < 0xC0 or not fields:
        return body
    pos, fmt = fields[choice % len(fields)]
    if pos + struct.calcsize(fmt) > len(body):
        return body
    delta = (-8, -1, 1, 2, 8, 64, 0x7FFF, 0x10000)[(choice >> 3) % 8]
    size = struct.calcsize(fmt)
    value = (struct.unpack_from(fmt, body, pos)[0] + delta) % (1 << (8 * size))
    out = bytearray(body)
    struct.pack_into(fmt, out, pos, value)
    return bytes(out)


# -- generated bodies: (body, [(offset, struct format) of its offset and length fields]) ------
# Offsets in the body are from the start of the message: the header's 64 bytes come first.

NAMES = ("f.txt", "dir", "dir\\a", "dir\\sub\\c", "s.txt", "s.txt:alt", "s.txt:alt:$DATA",
         "s.txt::$DATA", "new", "dir\\new", "NEW:str", "F.TXT", "dir\\..\\f.txt", "..\\outside",
         "link", "link\\x", "uplink\\canary.txt", ".smbring-streams", "CON", "a:b:c", "", "*",
         "new\\", "dir\\sub", "deny.txt", "ea.txt", "x" * 300, "na\u00efve", "trail. ",
         ":alt", "f.txt:", "\\f.txt", "dir\\\\a", "ro.txt", "nul.txt", "f.txt:x:$INDEX_ALLOCATION",
         # what macOS opens on a fruit share ("mac"): Finder information, resource forks
         "f.txt:AFP_AfpInfo", "f.txt:AFP_Resource", "dir:AFP_AfpInfo", "new:AFP_AfpInfo:$DATA",
         "s.txt:AFP_Resource", "._f.txt")
ACCESS = (wire.GENERIC_READ, wire.GENERIC_WRITE, wire.GENERIC_ALL, wire.MAXIMUM_ALLOWED,
          wire.FILE_ALL_ACCESS, wire.FILE_READ_DATA, wire.FILE_WRITE_DATA, wire.DELETE,
          0x80 | 0x100, 0x20000, 0x40000 | 0x80000, 0x01000000, 0x00100000, 0, 0x12019F)
ATTRIBUTES = (0, wire.ATTR_NORMAL, wire.ATTR_READONLY, wire.ATTR_HIDDEN | wire.ATTR_ARCHIVE,
              wire.ATTR_DIRECTORY, wire.ATTR_TEMPORARY, 0x40)
CREATE_OPTIONS = (0, wire.FILE_DIRECTORY_FILE, wire.FILE_NON_DIRECTORY_FILE,
                  wire.FILE_DELETE_ON_CLOSE | wire.FILE_NON_DIRECTORY_FILE,
                  wire.FILE_DELETE_ON_CLOSE | wire.FILE_DIRECTORY_FILE, wire.FILE_WRITE_THROUGH,
                  0x00002000, 0x00100000, 0x01000000)
SIZES = (0, 1, 8, 24, 104, 4096, 65536, 1 << 20, 8 << 20, (8 << 20) + 1, 0xFFFFFFFF)
OFFSETS = (0, 1, 4095, 4096, 1 << 32, 0xFFFFFFF0000, 0x7FFFFFFFFFFFFFFF, 0xFFFFFFFFFFFFFFFF)
TIMES = (0, 0xFFFFFFFFFFFFFFFF, 0xFFFFFFFFFFFFFFFE, 116444736000000000, 132000000000000000, 1)
INFO_CLASSES = (4, 5, 6, 7, 8, 14, 15, 16, 17, 18, 21, 22, 28, 34, 35, 48, 10, 13, 19, 20, 0, 99)
FS_CLASSES = (1, 3, 4, 5, 6, 7, 8, 11, 2, 0)
DIR_CLASSES = (1, 2, 3, 12, 37, 38, 60, 0)
PATTERNS = ("*", "<", "*.*", "f*", "*.txt", "?", "a", "", "\\", "nomatch", "[", "**", '"')
IOCTLS = (0x00140204, 0x001401FC, 0x00060194, 0x000900C0, 0x001440F2, 0x00140078, 0x000900C4,
          0x0011C017, 0x00098208, 0)


def pick(r: Reader, choices, raw):
    """A choice from the list, or the raw value `raw(r)` reads."""
    value = r.pick(choices)
    return raw(r) if value is None else value


def name_bytes(r: Reader) -> bytes:
    name = r.pick(NAMES)
    return wire.utf16(name) if name is not None else r.blob()


def gen_random(r: Reader):
    return r.blob(), []


def gen_simple(r: Reader):
    """LOGOFF, TREE_DISCONNECT, ECHO, CANCEL: StructureSize 4 (now and then not)."""
    return struct.pack("<HH", pick(r, (4,), Reader.u16), 0), []


def gen_negotiate(r: Reader):
    dialects = pick(r, ((0x0202, 0x0210, 0x0300, 0x0302, 0x0311), (0x0311,), (0x0302,), (0x0202,),
                        (0x02FF,), (), (0x0311, 0x0311), (0x0400, 0x0100)), lambda r: (r.u16(),))
    contexts = []
    mask = r.u8()
    if mask & 1:
        contexts.append(struct.pack("<HHIHH", wire.PREAUTH_INTEGRITY_CAPABILITIES, 38, 0, 1, 32) +
                        struct.pack("<H", pick(r, (wire.SHA512,), Reader.u16)) + b"\x5a" * 32)
    if mask & 2:
        ciphers = pick(r, ((1, 2, 3, 4), (2,), (), (9,)), lambda r: (r.u16(),))
        data = struct.pack(f"<H{len(ciphers)}H", len(ciphers), *ciphers)
        contexts.append(struct.pack("<HHI", wire.ENCRYPTION_CAPABILITIES, len(data), 0) + data)
    if mask & 4:
        algs = pick(r, ((0, 1, 2), (2,), (1,), ()), lambda r: (r.u16(),))
        data = struct.pack(f"<H{len(algs)}H", len(algs), *algs)
        contexts.append(struct.pack("<HHI", wire.SIGNING_CAPABILITIES, len(data), 0) + data)
    if mask & 8:
        data = r.blob()
        contexts.append(struct.pack("<HHI", r.u16(), len(data), 0) + data)
    fixed = 64 + 36 + 2 * len(dialects)
    ctx_off = wire.pad8(fixed) if contexts else 0
    body = struct.pack("<HHHHI16sIHH", 36, len(dialects), r.u8() & 3, 0, r.u32(), b"\x11" * 16,
                       ctx_off, len(contexts), 0) + struct.pack(f"<{len(dialects)}H", *dialects)
    if contexts:
        body += b"\0" * (ctx_off - 64 - len(body))
        body += b"".join(c + b"\0" * (wire.pad8(len(c)) - len(c)) for c in contexts)
    return body, [(2, "<H"), (28, "<I"), (32, "<H")]


NTLM_NEGOTIATE = b"NTLMSSP\0\x01\0\0\0" + struct.pack("<I", 0xE2088297) + b"\0" * 16
SPNEGO_NTLM = bytes.fromhex("604806062b0601050502a03e303ca00e300c060a2b06010401823702020aa22a0428") + NTLM_NEGOTIATE


def gen_session_setup(r: Reader):
    token = pick(r, (b"", NTLM_NEGOTIATE, SPNEGO_NTLM, b"NTLMSSP\0\x03\0\0\0" + b"\0" * 80,
                     b"\x60\x82\xff\xff", b"\xa1\x03\x30\x01\x00"), Reader.blob)
    body = struct.pack("<HBBIIHHQ", 25, r.u8() & 1, r.u8() & 3, r.u32() & 0xFF, 0, 88, len(token),
                       pick(r, (0,), Reader.u64)) + token
    return body, [(12, "<H"), (14, "<H")]


TREE_PATHS = ("\\\\srv\\rw", "\\\\srv\\ro", "\\\\srv\\IPC$", "\\\\srv\\nosuch", "rw", "",
              "\\\\srv\\RW", "\\\\srv\\rw\\..", "\\\\srv\\..\\rw", "\\\\srv\\ro\\",
              "\\\\srv\\enc", "\\\\srv\\mac")


def gen_tree_connect(r: Reader):
    path = r.pick(TREE_PATHS)
    path = wire.utf16(path) if path is not None else r.blob()
    return struct.pack("<HHHH", 9, r.u16() & 0x7, 72, len(path)) + path, [(4, "<H"), (6, "<H")]


def gen_create(r: Reader):
    imp = pick(r, (0, 1, 2, 3), Reader.u32)
    access = pick(r, ACCESS, Reader.u32)
    attrs = pick(r, ATTRIBUTES, Reader.u32)
    share_access = r.u8() & 7
    disposition = r.u8() % 7
    options = pick(r, CREATE_OPTIONS, Reader.u32)
    name = name_bytes(r)
    contexts = create_contexts(r, r.u8())
    ctx_off = wire.pad8(120 + len(name)) if contexts else 0
    body = struct.pack("<HBBIQQIIIIIHHII", 57, 0, r.u8() % 10, imp, 0, 0, access, attrs,
                       share_access, disposition, options, 120, len(name), ctx_off, len(contexts))
    body += name
    if contexts:
        body += b"\0" * (ctx_off - 64 - len(body)) + contexts
    return body, [(44, "<H"), (46, "<H"), (48, "<I"), (52, "<I")]


def create_contexts(r: Reader, mask: int) -> bytes:
    """CREATE contexts chosen by the bits of `mask` (MS-SMB2 2.2.13.2)."""
    contexts = []
    if mask & 1:
        contexts.append((b"ExtA", ea_list(r)))
    if mask & 2:
        contexts.append((b"SecD", security_descriptor(r)))
    if mask & 4:
        contexts.append((b"MxAc", b"" if r.u8() & 1 else struct.pack("<Q", 0)))
    if mask & 8:
        contexts.append((b"QFid", b""))
    if mask & 16:
        contexts.append((b"AlSi", struct.pack("<Q", pick(r, (0, 1, 4096, 1 << 20, 1 << 40), Reader.u64))))
    if mask & 32:
        contexts.append((b"TWrp", struct.pack("<Q", 132000000000000000)))
    if mask & 64:
        contexts.append((b"DHnQ", b"\0" * 16))
    if mask & 128:
        contexts.append((b"AAPL", aapl_query(r)) if r.u8() & 1 else (r.blob(), r.blob()))
    return context_chain(contexts)


def aapl_query(r: Reader) -> bytes:
    """Apple's AAPL server query, as macOS sends it on a fruit share, or not quite."""
    body = struct.pack("<IIQQ", pick(r, (1,), Reader.u32), 0, pick(r, (7, 1, 4, 0), Reader.u64),
                       pick(r, (0x17, 0x1, 0x7, 0), Reader.u64))
    return pick(r, (body,), lambda r: body[:r.u8() % len(body)] + r.blob())


def context_chain(contexts: list[tuple[bytes, bytes]]) -> bytes:
    """CREATE contexts laid out as a client lays them out: name at 16, data 8-aligned after it."""
    out = bytearray()
    for i, (name, data) in enumerate(contexts):
        data_off = wire.pad8(16 + len(name)) if data else 0
        entry = struct.pack("<IHHHHI", 0, 16, len(name), 0, data_off, len(data)) + name
        entry += b"\0" * (data_off - len(entry)) + data if data else b""
        if i < len(contexts) - 1:
            entry += b"\0" * (wire.pad8(len(entry)) - len(entry))
            entry = struct.pack("<I", len(entry)) + entry[4:]
        out += entry
    return bytes(out)


def ea_list(r: Reader) -> bytes:
    """FILE_FULL_EA_INFORMATION entries (MS-FSCC 2.4.15)."""
    entries = []
    for _ in range(r.u8() % 4):
        name = r.pick((b"user.a", b"A", b"DOSATTRIB", b"security.x", b"a" * 255, b""))
        name = name if name is not None else r.blob()
        value = r.blob()
        entries.append(struct.pack("<IBBH", 0, 0, len(name) & 0xFF, len(value)) + name + b"\0" + value)
    return wire.chain(entries)


SIDS = (acl.EVERYONE, acl.AUTHENTICATED_USERS, acl.OWNER_SID, acl.GROUP_SID, acl.CREATOR_OWNER,
        acl.sid(5, 18), acl.sid(5, 32, 544), b"\x01\x0f" + b"\0" * 6)


def security_descriptor(r: Reader) -> bytes:
    """A self-relative descriptor built from chosen parts, or raw bytes."""
    shape = r.u8()
    if shape >= 0xF0:
        return r.blob()
    aces = [acl.Ace(r.u8() % 3, r.u8() & 0x1F, pick(r, ACCESS, Reader.u32), pick(r, SIDS, Reader.blob))
            for _ in range(r.u8() % 5)]
    control = acl.SE_SELF_RELATIVE | (acl.SE_DACL_PRESENT if shape & 1 else 0) | \
        (acl.SE_DACL_PROTECTED if shape & 2 else 0)
    sd = acl.Descriptor(control=control, owner=pick(r, SIDS, Reader.blob) if shape & 4 else None,
                        group=acl.GROUP_SID if shape & 8 else None,
                        dacl=aces if shape & 16 else None)
    return sd.pack()


def gen_close(r: Reader):
    return struct.pack("<HHI", 24, r.u8() & 1, 0) + b"\0" * 16, []


def gen_flush(r: Reader):
    return struct.pack("<HHI", 24, 0, 0) + b"\0" * 16, []


def gen_read(r: Reader):
    length = pick(r, SIZES, Reader.u32)
    offset = pick(r, OFFSETS, Reader.u64)
    body = struct.pack("<HBBIQ16sIIIHH", 49, pick(r, (0x50,), Reader.u8), r.u8() & 1, length, offset,
                       b"\0" * 16, pick(r, (0, 1), Reader.u32), r.u32() & 3, 0, 0, 0) + b"\0"
    return body, [(2, "<B"), (4, "<I"), (8, "<Q"), (44, "<H"), (46, "<H")]


def gen_write(r: Reader):
    data = pick(r, (b"hello", b"", b"\0" * 4096, b"CANARY?"), Reader.blob)
    offset = pick(r, OFFSETS, Reader.u64)
    body = struct.pack("<HHIQ16sIIHHI", 49, 112, len(data), offset, b"\0" * 16, 0, 0, 0, 0,
                       r.u8() & 3) + data
    return body, [(2, "<H"), (4, "<I"), (8, "<Q")]


LOCK_FLAGS = (wire.LOCK_SHARED | wire.LOCK_FAIL_IMMEDIATELY, wire.LOCK_EXCLUSIVE | wire.LOCK_FAIL_IMMEDIATELY,
              wire.LOCK_SHARED, wire.LOCK_EXCLUSIVE, wire.LOCK_UNLOCK, 0, 3, wire.LOCK_UNLOCK | 1)


def gen_lock(r: Reader):
    count = r.u8() % 70
    elements = b"".join(struct.pack("<QQII", pick(r, OFFSETS, Reader.u64), pick(r, SIZES, Reader.u64),
                                    pick(r, LOCK_FLAGS, Reader.u32), 0) for _ in range(count))
    announced = pick(r, (count,), Reader.u16)
    return struct.pack("<HHI", 48, announced, r.u32()) + b"\0" * 16 + elements, [(2, "<H")]


def gen_ioctl(r: Reader):
    ctl = pick(r, IOCTLS, Reader.u32)
    if ctl == 0x00140204:   # VALIDATE_NEGOTIATE_INFO: what the client negotiated
        dialects = pick(r, ((0x0302,), (0x0202, 0x0210, 0x0300, 0x0302), ()), lambda r: (r.u16(),))
        data = struct.pack("<I16sHH", r.u32(), b"\x11" * 16, r.u8() & 3, len(dialects)) + \
            struct.pack(f"<{len(dialects)}H", *dialects)
    else:
        data = r.blob()
    max_out = pick(r, (65536, 0, 24, 8 << 20), Reader.u32)
    body = struct.pack("<HHI16sIIIIIIII", 57, 0, ctl, b"\0" * 16, 120 if data else 0, len(data), 0, 0, 0,
                       max_out, pick(r, (1, 0), Reader.u32), 0) + data
    return body, [(24, "<I"), (28, "<I"), (36, "<I"), (40, "<I")]


def gen_query_directory(r: Reader):
    klass = pick(r, DIR_CLASSES, Reader.u8)
    flags = pick(r, (0, 1, 2, 4, 0x10, 0x12), Reader.u8)
    pattern = r.pick(PATTERNS)
    pattern = wire.utf16(pattern) if pattern is not None else r.blob()
    out_len = pick(r, SIZES, Reader.u32)
    body = struct.pack("<HBBI16sHHI", 33, klass, flags, r.u32(), b"\0" * 16, 96 if pattern else 0,
                       len(pattern), out_len) + pattern
    return body, [(24, "<H"), (26, "<H"), (28, "<I")]


def gen_change_notify(r: Reader):
    body = struct.pack("<HHI16sII", 32, r.u8() & 1, pick(r, SIZES, Reader.u32), b"\0" * 16,
                       pick(r, (0x17F, 0x1, 0x2, 0x10), Reader.u32), 0)
    return body, [(4, "<I")]


def gen_query_info(r: Reader):
    info_type = pick(r, (1, 2, 3, 4), Reader.u8)
    klass = pick(r, FS_CLASSES if info_type == 2 else INFO_CLASSES, Reader.u8)
    data = r.blob() if r.u8() >= 0xE0 else b""
    body = struct.pack("<HBBIHHIII16s", 41, info_type, klass, pick(r, SIZES, Reader.u32),
                       104 if data else 0, 0, len(data), pick(r, (0, 7, 0xF, 1, 4), Reader.u32),
                       r.u8() & 7, b"\0" * 16) + data
    return body, [(4, "<I"), (8, "<H"), (12, "<I")]


def set_info_buffer(r: Reader, info_type: int, klass: int) -> bytes:
    if info_type == wire.INFO_SECURITY:
        return security_descriptor(r)
    if klass == 4:    # Basic
        return struct.pack("<QQQQII", *(pick(r, TIMES, Reader.u64) for _ in range(4)),
                           pick(r, ATTRIBUTES, Reader.u32), 0)
    if klass == 10:   # Rename
        name = name_bytes(r)
        return struct.pack("<B7sQI", r.u8() & 1, b"\0" * 7, 0, len(name)) + name
    if klass == 13:   # Disposition
        return bytes([r.u8() & 1])
    if klass == 15:   # FullEa
        return ea_list(r)
    if klass in (14, 19, 20):   # Position, Allocation, EndOfFile
        return struct.pack("<Q", pick(r, OFFSETS[:5] + (65536, 100), Reader.u64))
    if klass == 16:   # Mode
        return struct.pack("<I", pick(r, (0, 2, 4, 0x10, 0x20, 0x8, 0x1000), Reader.u32))
    return r.blob()


def gen_set_info(r: Reader):
    info_type = pick(r, (1, 3, 2, 4), Reader.u8)
    klass = pick(r, (4, 10, 13, 14, 15, 16, 19, 20, 0, 11, 64), Reader.u8)
    data = set_info_buffer(r, info_type, klass)
    body = struct.pack("<HBBIHHI16s", 33, info_type, klass, len(data), 96, 0,
                       pick(r, (0, 7, 4, 1, 8), Reader.u32), b"\0" * 16) + data
    return body, [(4, "<I"), (8, "<H")]


def gen_oplock_break(r: Reader):
    return struct.pack("<HBBI16s", 24, r.u8(), 0, 0, b"\0" * 16), []


GENERATORS = {
    wire.NEGOTIATE: gen_negotiate, wire.SESSION_SETUP: gen_session_setup, wire.LOGOFF: gen_simple,
    wire.TREE_CONNECT: gen_tree_connect, wire.TREE_DISCONNECT: gen_simple, wire.CREATE: gen_create,
    wire.CLOSE: gen_close, wire.FLUSH: gen_flush, wire.READ: gen_read, wire.WRITE: gen_write,
    wire.LOCK: gen_lock, wire.IOCTL: gen_ioctl, wire.CANCEL: gen_simple, wire.ECHO: gen_simple,
    wire.QUERY_DIRECTORY: gen_query_directory, wire.CHANGE_NOTIFY: gen_change_notify,
    wire.QUERY_INFO: gen_query_info, wire.SET_INFO: gen_set_info, wire.OPLOCK_BREAK: gen_oplock_break,
}


# -- writing (the seed corpus) ---------------------------------------------------------------

def encode_mode(kind: int, held_writes: bool = False, other_offer: bool = False,
                strict_allocate: bool = False) -> bytes:
    return bytes([kind | (8 if held_writes else 0) | (16 if other_offer else 0) | (32 if strict_allocate else 0)])


def encode_msg(spec: Spec, body: bytes) -> bytes:
    return bytes([MSG]) + spec.encode() + struct.pack("<H", len(body)) + body


def encode_gen(spec: Spec, choices: bytes) -> bytes:
    """A generated message: the generator reads `choices` (and zeros when they run out)."""
    return bytes([GEN]) + spec.encode() + choices


def encode_compound(elements: list[tuple[Spec, bytes]]) -> bytes:
    """Literal messages in one frame (2 to 6)."""
    assert 2 <= len(elements) <= 6
    out = bytes([COMPOUND, len(elements) - 2])
    for spec, body in elements:
        out += b"\0" + spec.encode() + struct.pack("<H", len(body)) + body   # 0: literal
    return out


def encode_raw(frame: bytes) -> bytes:
    return bytes([RAW]) + struct.pack("<H", len(frame)) + frame


def encode_mutate(patches: list[tuple[int, int]], inner: bytes) -> bytes:
    """Byte patches (position modulo the frame's length, value) for the next record."""
    assert 1 <= len(patches) <= 8
    return bytes([MUTATE, len(patches) - 1]) + b"".join(struct.pack("<HB", p, v) for p, v in patches) + inner


def encode_sealed(inner: bytes) -> bytes:
    return bytes([SEALED]) + inner


def encode_cancel(choice: int) -> bytes:
    return bytes([CANCEL, choice])
