"""Logons a test forges, at the message level.

SPNEGO (RFC 4178) is wrapped by hand so a test decides what the last leg carries: real clients
such as impacket and pysmb send no mechListMIC there. The NTLMSSP AUTHENTICATE message
(MS-NLMP 2.2.1.3) is built field by field, so its responses can be LM only, NTLMv1 (with and
without extended session security) or empty (anonymous). The NTLMv2 exchange of a proper
logon stays with pyspnego's public client.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import struct

import spnego
from cryptography.hazmat.primitives.ciphers import Cipher, modes

try:   # where cryptography keeps DES since 43
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
except ImportError:  # pragma: no cover
    from cryptography.hazmat.primitives.ciphers.algorithms import TripleDES

from raw import RawClient, Session
from smbring.smb import wire

SPNEGO_OID = bytes.fromhex("06062b0601050502")
NTLMSSP_MECH = bytes.fromhex("060a2b06010401823702020a")

# NTLMSSP negotiate flags (MS-NLMP 2.2.2.5)
UNICODE, REQUEST_TARGET, SIGN, NTLM = 0x1, 0x4, 0x10, 0x200
ANONYMOUS, ALWAYS_SIGN, EXTENDED_SESSIONSECURITY = 0x800, 0x8000, 0x80000
KEY_128, KEY_56 = 0x20000000, 0x80000000
V1_FLAGS = UNICODE | REQUEST_TARGET | NTLM | ALWAYS_SIGN | KEY_128 | KEY_56


# -- SPNEGO ----------------------------------------------------------------------------------

def der(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        return bytes([tag, n]) + body
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + body


def der_children(buf: bytes) -> list[tuple[int, bytes]]:
    """(tag, contents) of each DER element in buf."""
    out, pos = [], 0
    while pos + 2 <= len(buf):
        tag, n = buf[pos], buf[pos + 1]
        pos += 2
        if n & 0x80:
            width = n & 0x7F
            n = int.from_bytes(buf[pos:pos + width], "big")
            pos += width
        out.append((tag, buf[pos:pos + n]))
        pos += n
    return out


def neg_token_init(mech_token: bytes) -> bytes:
    mech_types = der(0xA0, der(0x30, NTLMSSP_MECH))
    return der(0x60, SPNEGO_OID + der(0xA0, der(0x30, mech_types + der(0xA2, der(0x04, mech_token)))))


def neg_token_resp(response_token: bytes, mech_list_mic: bytes | None = None) -> bytes:
    fields = der(0xA2, der(0x04, response_token))
    if mech_list_mic is not None:
        fields += der(0xA3, der(0x04, mech_list_mic))
    return der(0xA1, der(0x30, fields))


def ntlm_token(security_buffer: bytes) -> bytes:
    """The NTLMSSP message a server sent: raw, or the responseToken of a NegTokenResp."""
    if security_buffer.startswith(b"NTLMSSP\0"):
        return security_buffer
    [(tag, resp)] = der_children(security_buffer)
    assert tag == 0xA1, f"not a NegTokenResp: {security_buffer.hex()}"
    [(_seq, fields)] = der_children(resp)
    for tag, value in der_children(fields):
        if tag == 0xA2:
            return der_children(value)[0][1]
    raise AssertionError("a NegTokenResp without a responseToken")


# -- NTLMSSP ---------------------------------------------------------------------------------

def ntlm_negotiate(flags: int) -> bytes:
    return b"NTLMSSP\0" + struct.pack("<II", 1, flags) + b"\0" * 16


def server_challenge(challenge: bytes) -> bytes:
    assert challenge[:12] == b"NTLMSSP\0\x02\0\0\0", "not an NTLM CHALLENGE"
    return challenge[24:32]


def ntlm_authenticate(user: str, lm: bytes, nt: bytes, flags: int, domain: str = "",
                      workstation: str = "CLIENT") -> bytes:
    """AUTHENTICATE_MESSAGE without Version or MIC (the payload starts at 64)."""
    payload, fields = b"", b""
    for value in (lm, nt, wire.utf16(domain), wire.utf16(user), wire.utf16(workstation), b""):
        fields += struct.pack("<HHI", len(value), len(value), 64 + len(payload))
        payload += value
    return b"NTLMSSP\0" + struct.pack("<I", 3) + fields + struct.pack("<I", flags) + payload


def _des(key7: bytes, block: bytes) -> bytes:
    bits = int.from_bytes(key7, "big")
    key = bytes(((bits >> (49 - 7 * i)) & 0x7F) << 1 for i in range(8))   # parity bits left 0
    enc = Cipher(TripleDES(key * 3), modes.ECB()).encryptor()           # K1=K2=K3: single DES
    return enc.update(block) + enc.finalize()


def desl(key16: bytes, data8: bytes) -> bytes:
    """MS-NLMP 6: three DES encryptions under the 16-byte key split in 7-byte pieces."""
    key = key16 + b"\0" * 5
    return b"".join(_des(key[i:i + 7], data8) for i in (0, 7, 14))


def ntlmv1_responses(nt_hash: bytes, challenge: bytes, extended: bool) -> tuple[bytes, bytes]:
    """(LmChallengeResponse, NtChallengeResponse) of NTLMv1 (MS-NLMP 3.3.1)."""
    if extended:    # NTLM2 session response: a client challenge in the LM field
        client_challenge = os.urandom(8)
        digest = hashlib.md5(challenge + client_challenge).digest()[:8]
        return client_challenge + b"\0" * 16, desl(nt_hash, digest)
    nt = desl(nt_hash, challenge)
    return nt, nt


def forged_logon(client: RawClient, user: str, respond, *, flags: int = V1_FLAGS, domain: str = "",
                 wrap: bool = True, session: Session | None = None) -> Session:
    """NTLM with an AUTHENTICATE whose (lm, nt) = respond(server challenge), inside SPNEGO
    (no mechListMIC) or, with wrap=False, raw NTLMSSP tokens (which servers accept too).
    Returns the session; its .status is the final SESSION_SETUP status. No keys are derived."""
    session = client.start_logon(session)
    negotiate = ntlm_negotiate(flags)
    r = client.session_setup(session, neg_token_init(negotiate) if wrap else negotiate)
    if r.status != wire.STATUS_MORE_PROCESSING_REQUIRED:
        return session
    lm, nt = respond(server_challenge(ntlm_token(client.security_buffer(r))))
    authenticate = ntlm_authenticate(user, lm, nt, flags, domain)
    client.session_setup(session, neg_token_resp(authenticate) if wrap else authenticate)
    return session


def logon_without_mech_list_mic(client: RawClient, user: str, password: str) -> Session:
    """NTLMv2 from impacket's NTLM code inside SPNEGO built here: NegTokenInit, then a
    NegTokenResp with the AUTHENTICATE and no mechListMIC, as impacket and pysmb send it (their
    AUTHENTICATE carries no NTLM MIC either; one that does obliges the client to a mechListMIC,
    as Samba holds)."""
    from impacket import ntlm as impacket_ntlm
    negotiate = impacket_ntlm.getNTLMSSPType1(signingRequired=True)
    session = client.start_logon(None)
    r = client.session_setup(session, neg_token_init(negotiate.getData()))
    assert r.status == wire.STATUS_MORE_PROCESSING_REQUIRED, repr(r)
    authenticate, key = impacket_ntlm.getNTLMSSPType3(negotiate, ntlm_token(client.security_buffer(r)),
                                                      user, password, "")
    r = client.session_setup(session, neg_token_resp(authenticate.getData()))
    if r.status == wire.STATUS_SUCCESS:
        client.establish(session, key)
    return session

# -- NTLMv2 responses built by hand ------------------------------------------------------------

def target_info(challenge: bytes) -> bytes:
    """The CHALLENGE message's TargetInfo: the AV pairs an NTLMv2 blob must repeat."""
    length, _max, offset = struct.unpack_from("<HHI", challenge, 40)
    return challenge[offset:offset + length]


def ntlmv2_blob(av_pairs: bytes, client_challenge: bytes = b"\x3f" * 8) -> bytes:
    """NTLMv2_CLIENT_CHALLENGE (MS-NLMP 2.2.2.7): versions, timestamp, client challenge, AV pairs."""
    return struct.pack("<BBHIQ", 1, 1, 0, 0, 0) + client_challenge + b"\0" * 4 + av_pairs + b"\0" * 4


def ntlmv2_response(nt_hash: bytes, user: str, domain: str, challenge: bytes, blob: bytes) -> bytes:
    """NTProofStr followed by the blob (MS-NLMP 3.3.2), for the password whose NT hash is given."""
    key = hmac.new(nt_hash, (user.upper() + domain).encode("utf-16-le"), "md5").digest()
    return hmac.new(key, challenge + blob, "md5").digest() + blob


def forged_v2_logon(client: RawClient, user: str, nt_response_for, *, domain: str = "",
                    wrap: bool = True) -> Session:
    """NTLM whose AUTHENTICATE carries nt_response_for(CHALLENGE message) as its NT response
    (the LM response zeroed, as NTLMv2 clients send it). Returns the session (.status)."""
    flags = V1_FLAGS | EXTENDED_SESSIONSECURITY
    session = client.start_logon(None)
    negotiate = ntlm_negotiate(flags)
    r = client.session_setup(session, neg_token_init(negotiate) if wrap else negotiate)
    if r.status != wire.STATUS_MORE_PROCESSING_REQUIRED:
        return session
    nt = nt_response_for(ntlm_token(client.security_buffer(r)))
    authenticate = ntlm_authenticate(user, b"\0" * 24, nt, flags, domain)
    client.session_setup(session, neg_token_resp(authenticate) if wrap else authenticate)
    return session


def bind_channel(c2: RawClient, s1: Session, user: str, password: str):
    """Binds c2 to the session s1 (SMB2_SESSION_FLAG_BINDING, every leg signed with the
    session's key, MS-SMB2 3.2.5.3.2): (the channel's Session on c2, the last response). The
    channel is added to c2's sessions only where the binding succeeded."""
    from smbcore import session_setup_body
    from smbring.smb import security
    ctx = spnego.client(user, password, hostname="smbring", service="cifs", protocol="negotiate")
    channel = Session(id=s1.id)
    channel.preauth = c2.preauth.copy()
    token = ctx.step()
    while True:
        msg = c2.message(wire.SESSION_SETUP, session_setup_body(token, flags=wire.SESSION_FLAG_BINDING),
                         session=channel.id)
        c2.send([msg], sign=True, signing_key=s1.signing_key)
        r = c2.response_to(wire.Header.parse(msg).message_id)
        channel.preauth.update(msg)
        if r.status != wire.STATUS_MORE_PROCESSING_REQUIRED:
            break
        channel.preauth.update(r.raw)
        token = ctx.step(c2.security_buffer(r))
    if r.status == wire.STATUS_SUCCESS:
        channel.signing_key = security.signing_key(ctx.session_key[:16].ljust(16, b"\0"), c2.dialect,
                                                   channel.preauth.value)
        channel.encrypt_key, channel.decrypt_key = s1.encrypt_key, s1.decrypt_key
        channel.flags, channel.trees = s1.flags, s1.trees
        c2.sessions[channel.id] = channel
    return channel, r
