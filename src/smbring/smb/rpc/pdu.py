"""Connection-oriented DCE/RPC PDUs (C706 chapter 12, MS-RPCE 2.2.2): the common header, and
the bodies of BIND, ALTER_CONTEXT and REQUEST (read) and of BIND_ACK, ALTER_CONTEXT_RESP,
BIND_NAK, RESPONSE and FAULT (written). Little-endian data representation only."""
from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass

# packet types
REQUEST, RESPONSE, FAULT = 0, 2, 3
BIND, BIND_ACK, BIND_NAK = 11, 12, 13
ALTER_CONTEXT, ALTER_CONTEXT_RESP = 14, 15
AUTH3, SHUTDOWN, CO_CANCEL, ORPHANED = 16, 17, 18, 19

# pfc_flags
PFC_FIRST_FRAG, PFC_LAST_FRAG = 0x01, 0x02
PFC_PENDING_CANCEL = 0x04           # (in BIND: PFC_SUPPORT_HEADER_SIGN)
PFC_CONC_MPX, PFC_DID_NOT_EXECUTE, PFC_MAYBE, PFC_OBJECT_UUID = 0x10, 0x20, 0x40, 0x80

DREP_LITTLE_ENDIAN = b"\x10\x00\x00\x00"    # little-endian integers, ASCII, IEEE floats

HEADER = struct.Struct("<BBBB4sHHI")
HEADER_SIZE = HEADER.size           # 16
REQUEST_HEADER_SIZE = 24            # with alloc_hint, context id and opnum
RESPONSE_HEADER_SIZE = 24           # with alloc_hint, context id, cancel count

# p_cont_def_result_t and its reasons (the result of each proposed presentation context)
ACCEPTANCE, USER_REJECTION, PROVIDER_REJECTION, NEGOTIATE_ACK = 0, 1, 2, 3
REASON_NOT_SPECIFIED = 0
REASON_ABSTRACT_SYNTAX_NOT_SUPPORTED = 1
REASON_TRANSFER_SYNTAXES_NOT_SUPPORTED = 2

# BIND_NAK reasons (p_reject_reason_t)
NAK_NOT_SPECIFIED = 0
NAK_PROTOCOL_VERSION_NOT_SUPPORTED = 4
NAK_AUTHENTICATION_TYPE_NOT_RECOGNIZED = 8

# fault status codes (MS-RPCE 2.2.2.11, C706 appendix E)
NCA_S_OP_RNG_ERROR = 0x1C010002        # no such operation
NCA_S_UNKNOWN_IF = 0x1C010003          # no such presentation context
NCA_S_PROTO_ERROR = 0x1C01000B
FAULT_ACCESS_DENIED = 0x00000005
FAULT_NDR = 0x000006F7                 # the stub data could not be read (RPC_X_BAD_STUB_DATA)


class PduError(ValueError):
    """A PDU whose layout is broken (the association is dropped after a fault)."""


@dataclass(frozen=True)
class Syntax:
    """A presentation syntax: an interface or transfer syntax's UUID and version."""

    uuid: bytes          # 16 bytes, in wire (little-endian fields) order
    version: int         # major in the low 16 bits, minor in the high 16

    @classmethod
    def of(cls, text: str, major: int, minor: int = 0) -> "Syntax":
        return cls(uuid.UUID(text).bytes_le, major | minor << 16)

    def pack(self) -> bytes:
        return self.uuid + struct.pack("<I", self.version)


NDR = Syntax.of("8a885d04-1ceb-11c9-9fe8-08002b104860", 2)
NO_SYNTAX = Syntax(b"\0" * 16, 0)
# a bind time feature negotiation context (MS-RPCE 3.3.1.5.3): its transfer syntax's UUID is
# 6cb71c2c-9812-4540-XXXX-XXXXXXXXXXXX, the last eight bytes the features asked for
BIND_TIME_FEATURES = uuid.UUID("6cb71c2c-9812-4540-0000-000000000000").bytes_le[:8]


@dataclass
class Header:
    version: int
    minor: int
    ptype: int
    flags: int
    drep: bytes
    frag_length: int
    auth_length: int
    call_id: int

    @classmethod
    def parse(cls, buf) -> "Header":
        if len(buf) < HEADER_SIZE:
            raise PduError("short header")
        return cls(*HEADER.unpack_from(buf, 0))


def header(ptype: int, flags: int, frag_length: int, call_id: int) -> bytes:
    return HEADER.pack(5, 0, ptype, flags, DREP_LITTLE_ENDIAN, frag_length, 0, call_id)


@dataclass
class Context:
    """A presentation context the client proposes: its id, interface and transfer syntaxes."""

    context_id: int
    abstract: Syntax
    transfers: list[Syntax]


@dataclass
class Bind:
    """A BIND or ALTER_CONTEXT body."""

    max_xmit_frag: int
    max_recv_frag: int
    assoc_group: int
    contexts: list[Context]


def parse_bind(pdu) -> Bind:
    """The body of a BIND or ALTER_CONTEXT (any auth trailer ignored by the caller)."""
    try:
        max_xmit, max_recv, assoc, count = struct.unpack_from("<HHIB", pdu, HEADER_SIZE)
        pos = HEADER_SIZE + 12
        contexts = []
        for _ in range(count):
            context_id, n_transfers = struct.unpack_from("<HB", pdu, pos)
            abstract = Syntax(bytes(pdu[pos + 4:pos + 20]), struct.unpack_from("<I", pdu, pos + 20)[0])
            pos += 24
            transfers = []
            for _ in range(n_transfers):
                transfers.append(Syntax(bytes(pdu[pos:pos + 16]), struct.unpack_from("<I", pdu, pos + 16)[0]))
                pos += 20
            if pos > len(pdu):
                raise PduError("presentation context list beyond the PDU")
            contexts.append(Context(context_id, abstract, transfers))
    except struct.error:
        raise PduError("short BIND") from None
    return Bind(max_xmit, max_recv, assoc, contexts)


def bind_ack(ptype: int, call_id: int, max_frag: int, assoc_group: int, secondary_address: str,
             results: list[tuple[int, int, Syntax]]) -> bytes:
    """A BIND_ACK (or ALTER_CONTEXT_RESP): the fragment sizes, the association group, the
    pipe's name, and the result of each proposed context in order."""
    address = secondary_address.encode("ascii") + b"\0" if secondary_address else b""
    body = struct.pack("<HHIH", max_frag, max_frag, assoc_group, len(address)) + address
    body += b"\0" * (-(HEADER_SIZE + len(body)) % 4)
    body += struct.pack("<BBH", len(results), 0, 0)
    for result, reason, syntax in results:
        body += struct.pack("<HH", result, reason) + syntax.pack()
    return header(ptype, PFC_FIRST_FRAG | PFC_LAST_FRAG, HEADER_SIZE + len(body), call_id) + body


def bind_nak(call_id: int, reason: int) -> bytes:
    """A BIND_NAK, offering protocol version 5.0."""
    body = struct.pack("<HBBB", reason, 1, 5, 0) + b"\0" * 3
    return header(BIND_NAK, PFC_FIRST_FRAG | PFC_LAST_FRAG, HEADER_SIZE + len(body), call_id) + body


@dataclass
class Request:
    alloc_hint: int
    context_id: int
    opnum: int
    stub: bytes


def parse_request(hdr: Header, pdu) -> Request:
    alloc_hint, context_id, opnum = struct.unpack_from("<IHH", pdu, HEADER_SIZE)
    start = REQUEST_HEADER_SIZE + (16 if hdr.flags & PFC_OBJECT_UUID else 0)
    end = hdr.frag_length - (hdr.auth_length + 8 if hdr.auth_length else 0)
    if end < start:
        raise PduError("REQUEST shorter than its header")
    return Request(alloc_hint, context_id, opnum, bytes(pdu[start:end]))


def responses(call_id: int, context_id: int, stub: bytes, max_frag: int) -> list[bytes]:
    """A call's result as RESPONSE fragments of at most max_frag bytes each (their stub parts
    a multiple of 8 bytes but the last, as Samba cuts them); alloc_hint says what is left."""
    room = (max_frag - RESPONSE_HEADER_SIZE) & ~7
    fragments = []
    pos = 0
    while True:
        chunk = stub[pos:pos + room]
        flags = (PFC_FIRST_FRAG if pos == 0 else 0) | (PFC_LAST_FRAG if pos + room >= len(stub) else 0)
        body = struct.pack("<IHBB", len(stub) - pos, context_id, 0, 0) + chunk
        fragments.append(header(RESPONSE, flags, HEADER_SIZE + len(body), call_id) + body)
        pos += room
        if pos >= len(stub):
            return fragments


def fault(call_id: int, context_id: int, status: int, flags: int = 0) -> bytes:
    body = struct.pack("<IHBBII", 0, context_id, 0, 0, status, 0)
    return header(FAULT, PFC_FIRST_FRAG | PFC_LAST_FRAG | flags, HEADER_SIZE + len(body), call_id) + body
