"""The SPNEGO tokens of an SMB logon (RFC 4178), in DER, for both ends.

Only what SMB needs: the client's NegTokenInit (inside the GSS-API framing of RFC 2743 3.1)
and NegTokenResp, and the server's NegTokenResp and its NEGOTIATE-response NegTokenInit; the
server reads and writes them with this module, and so does smbring's client. Every length is checked against the bytes that hold it; anything malformed
raises ``ValueError``.
"""
from __future__ import annotations

from dataclasses import dataclass

SPNEGO_OID = bytes.fromhex("2b0601050502")                 # 1.3.6.1.5.5.2
NTLMSSP_OID = bytes.fromhex("2b06010401823702020a")        # 1.3.6.1.4.1.311.2.2.10
KRB5_OID = bytes.fromhex("2a864886f712010202")             # 1.2.840.113554.1.2.2 (RFC 4121)
# 1.2.840.48018.1.2.2: the Kerberos OID as Windows first got it wrong (a 16-bit truncation),
# which Windows still lists first; the same mechanism
MS_KRB5_OID = bytes.fromhex("2a864882f712010202")
KRB5_OIDS = (MS_KRB5_OID, KRB5_OID)


# NegState (RFC 4178 4.2.2)
ACCEPT_COMPLETED = 0
ACCEPT_INCOMPLETE = 1
REJECT = 2
REQUEST_MIC = 3

_SEQUENCE, _OID, _OCTET_STRING, _ENUMERATED, _BIT_STRING = 0x30, 0x06, 0x04, 0x0A, 0x03
_GSS_FRAME = 0x60     # [APPLICATION 0], the GSS-API initial context token
_NEG_TOKEN_INIT = 0xA0
_NEG_TOKEN_RESP = 0xA1


def der(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        return bytes([tag, n]) + body
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + body


def _element(data: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """The tag, content start and content end of the DER element at pos (ending by end)."""
    if pos + 2 > end:
        raise ValueError("truncated DER element")
    tag, first = data[pos], data[pos + 1]
    if tag & 0x1F == 0x1F:
        raise ValueError("multi-byte DER tags are not used by SPNEGO")
    pos += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or pos + count > end:
            raise ValueError("bad DER length")
        length = int.from_bytes(data[pos:pos + count], "big")
        pos += count
    if pos + length > end:
        raise ValueError("DER element longer than what holds it")
    return tag, pos, pos + length


def _children(data: bytes, start: int, end: int):
    """(tag, content start, content end, element start) of each element in data[start:end]."""
    pos = start
    while pos < end:
        tag, cstart, cend = _element(data, pos, end)
        yield tag, cstart, cend, pos
        pos = cend


def _only(data: bytes, start: int, end: int, tag: int) -> tuple[int, int]:
    """The content of the single element of the expected tag filling data[start:end]."""
    got, cstart, cend = _element(data, start, end)
    if got != tag or cend != end:
        raise ValueError(f"expected one DER element of tag {tag:#x}")
    return cstart, cend


def _fields(data: bytes, start: int, end: int) -> dict[int, tuple[int, int, int]]:
    """A SEQUENCE's context-tagged fields: tag number -> (content start, end, element start)."""
    fields = {}
    for tag, cstart, cend, at in _children(data, start, end):
        if tag & 0xE0 != 0xA0:
            raise ValueError("expected a context-tagged field")
        if tag & 0x1F in fields:
            raise ValueError("repeated SPNEGO field")
        fields[tag & 0x1F] = (cstart, cend, at)
    return fields


def _octets(data: bytes, field: tuple[int, int, int] | None) -> bytes | None:
    if field is None:
        return None
    start, end = _only(data, field[0], field[1], _OCTET_STRING)
    return data[start:end]


@dataclass
class NegTokenInit:
    mech_types: list[bytes]      # OIDs (content octets), in the client's order of preference
    mech_types_der: bytes        # the MechTypeList exactly as received: what mechListMIC covers
    mech_token: bytes | None


@dataclass
class NegTokenResp:
    neg_state: int | None
    supported_mech: bytes | None
    response_token: bytes | None
    mech_list_mic: bytes | None


def parse_init(token: bytes) -> NegTokenInit:
    """The client's first token: GSS-API framing, the SPNEGO OID, then [0] NegTokenInit."""
    token = bytes(token)
    start, end = _only(token, 0, len(token), _GSS_FRAME)
    tag, ostart, oend = _element(token, start, end)
    if tag != _OID or token[ostart:oend] != SPNEGO_OID:
        raise ValueError("not a SPNEGO token")
    istart, iend = _only(token, oend, end, _NEG_TOKEN_INIT)
    sstart, send = _only(token, istart, iend, _SEQUENCE)
    fields = _fields(token, sstart, send)
    if 0 not in fields:
        raise ValueError("NegTokenInit without mechTypes")
    mstart, mend, _ = fields[0]
    lstart, lend = _only(token, mstart, mend, _SEQUENCE)
    mechs = []
    for tag, cstart, cend, _at in _children(token, lstart, lend):
        if tag != _OID:
            raise ValueError("mechTypes holds a non-OID")
        mechs.append(token[cstart:cend])
    return NegTokenInit(mech_types=mechs, mech_types_der=token[mstart:mend],
                        mech_token=_octets(token, fields.get(2)))


def parse_resp(token: bytes) -> NegTokenResp:
    token = bytes(token)
    start, end = _only(token, 0, len(token), _NEG_TOKEN_RESP)
    sstart, send = _only(token, start, end, _SEQUENCE)
    fields = _fields(token, sstart, send)
    state = None
    if 0 in fields:
        estart, eend = _only(token, fields[0][0], fields[0][1], _ENUMERATED)
        if eend - estart != 1:
            raise ValueError("bad negState")
        state = token[estart]
    mech = None
    if 1 in fields:
        ostart, oend = _only(token, fields[1][0], fields[1][1], _OID)
        mech = token[ostart:oend]
    return NegTokenResp(neg_state=state, supported_mech=mech,
                        response_token=_octets(token, fields.get(2)),
                        mech_list_mic=_octets(token, fields.get(3)))


def encode_resp(neg_state: int, supported_mech: bytes | None = None,
                response_token: bytes | None = None, mech_list_mic: bytes | None = None) -> bytes:
    body = der(0xA0, der(_ENUMERATED, bytes([neg_state])))
    if supported_mech is not None:
        body += der(0xA1, der(_OID, supported_mech))
    if response_token is not None:
        body += der(0xA2, der(_OCTET_STRING, response_token))
    if mech_list_mic is not None:
        body += der(0xA3, der(_OCTET_STRING, mech_list_mic))
    return der(_NEG_TOKEN_RESP, der(_SEQUENCE, body))


def encode_mech_types(mech_types: list[bytes]) -> bytes:
    """The DER MechTypeList: what a NegTokenInit carries and a mechListMIC signs."""
    return der(_SEQUENCE, b"".join(der(_OID, oid) for oid in mech_types))


def encode_init(mech_types: list[bytes], mech_token: bytes | None = None) -> bytes:
    """A NegTokenInit in its GSS-API framing: the server's hint in the NEGOTIATE response, or
    a client's first token (with its first mechanism's token)."""
    body = der(0xA0, encode_mech_types(mech_types))
    if mech_token is not None:
        body += der(0xA2, der(_OCTET_STRING, mech_token))
    return der(_GSS_FRAME, der(_OID, SPNEGO_OID) + der(_NEG_TOKEN_INIT, der(_SEQUENCE, body)))


def framed_mech(token: bytes) -> bytes | None:
    """The mechanism OID of a GSS-API initial context token (RFC 2743 3.1: [APPLICATION 0],
    the OID, then the mechanism's own bytes): SPNEGO_OID for a NegTokenInit, KRB5_OID (or
    MS_KRB5_OID) for a bare Kerberos AP-REQ; None for anything else."""
    try:
        start, end = _only(bytes(token), 0, len(token), _GSS_FRAME)
        tag, ostart, oend = _element(token, start, end)
    except ValueError:
        return None
    return bytes(token[ostart:oend]) if tag == _OID else None


def is_init(token: bytes) -> bool:
    return token[:1] == bytes([_GSS_FRAME])


def is_resp(token: bytes) -> bool:
    return token[:1] == bytes([_NEG_TOKEN_RESP])
