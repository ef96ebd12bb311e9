"""The client side of an NTLMv2 logon inside SPNEGO (MS-NLMP, RFC 4178): the tokens a client
sends in SESSION_SETUP and the checks of the server's.

``NtlmInitiator.step(token)`` gives the next token to send, as pyspnego's context does:
first a NegTokenInit holding the NTLMSSP NEGOTIATE, then (to the server's CHALLENGE) a
NegTokenResp holding the AUTHENTICATE and the mechListMIC; the server's last token, with its
mechListMIC, makes it ``complete``. ``session_key`` is then the ExportedSessionKey, from
which SMB derives its keys. No I/O; the messages' layouts, AV pairs and cryptography are the
ones the server side uses (ntlmssp, ntlm_crypto, spnego).

What the client insists on, whatever the server offers:
- only NTLMv2 (and its LMv2 companion, or zeros when the server sent a timestamp): never an
  NTLMv1 or LM response, so nothing the server chooses can weaken the proof of the password;
- a CHALLENGE with Unicode, extended session security, 128-bit keys, key exchange and NTLMv2
  target information (well-formed AV pairs ending with MsvAvEOL, small enough to be echoed in
  the AUTHENTICATE); else ``NtlmError``;
- every length and offset inside the message that holds it; else ``NtlmError``;
- the server's mechListMIC, when it sends one, must be right; it may leave it out (RFC 4178
  makes it optional when the chosen mechanism is the initiator's only one, as NTLMSSP is
  here: there is no other to downgrade to).
The client's choices: a fresh random client challenge and ExportedSessionKey (os.urandom)
per logon, the NTLM MIC over the three messages announced in MsvAvFlags, the service's name
(cifs/host) in MsvAvTargetName, and its own mechListMIC.
"""
from __future__ import annotations

import hmac
import os
import struct
import time

from smbring.smb import ntlm_crypto as nc
from smbring.smb import spnego, wire
from smbring.smb.ntlmssp import (
    AUTHENTICATE_MESSAGE,
    AV_EOL,
    AV_FLAG_MIC_PRESENT,
    AV_FLAGS,
    AV_TARGET_NAME,
    AV_TIMESTAMP,
    CHALLENGE_MESSAGE,
    MIC_OFFSET,
    MIC_SIZE,
    NEGOTIATE_MESSAGE,
    SIGNATURE,
    VERSION_FIELD,
    encode_av_pairs,
)

# what the NEGOTIATE asks for: the flags Windows and pyspnego send (never LM_KEY, never OEM)
CLIENT_FLAGS = (nc.UNICODE | nc.REQUEST_TARGET | nc.SIGN | nc.SEAL | nc.NTLM | nc.ALWAYS_SIGN
                | nc.EXTENDED_SESSION_SECURITY | nc.TARGET_INFO | nc.VERSION | nc.NEGOTIATE_128
                | nc.KEY_EXCH | nc.NEGOTIATE_56)
# what the CHALLENGE must grant: key exchange too, so that the session key is always a fresh
# random one of the client's (without it, the NTLMv2 session base key itself; Samba's and
# Windows' clients accept that, every server they meet grants it anyway)
REQUIRED_FLAGS = (nc.UNICODE | nc.EXTENDED_SESSION_SECURITY | nc.TARGET_INFO | nc.NEGOTIATE_128
                  | nc.KEY_EXCH)
CHALLENGE_HEADER = 48       # up to the TargetInfoFields; the Version (8 bytes) may follow
AUTHENTICATE_HEADER = MIC_OFFSET + MIC_SIZE     # 88: Version and MIC included
NEGOTIATE_HEADER = 40       # Version included


class NtlmError(ValueError):
    """The server's token is malformed, refuses what the client requires, or its mechListMIC
    is wrong: the logon must not go on."""


class Challenge:
    """The fields of a CHALLENGE_MESSAGE (MS-NLMP 2.2.1.2) the client uses. (This and
    Authenticated: plain classes, not dataclasses, which compile their methods at every
    start-up of the client.)"""
    __slots__ = ("raw", "flags", "server_challenge", "target_info")

    def __init__(self, raw: bytes, flags: int, server_challenge: bytes,
                 target_info: list[tuple[int, bytes]]):
        self.raw = raw
        self.flags = flags
        self.server_challenge = server_challenge
        self.target_info = target_info      # the AV pairs in order, without MsvAvEOL

    @classmethod
    def parse(cls, msg: bytes) -> "Challenge":
        msg = bytes(msg)
        if len(msg) < CHALLENGE_HEADER:
            raise NtlmError(f"NTLMSSP CHALLENGE of {len(msg)} bytes: too short")
        if msg[:8] != SIGNATURE:
            raise NtlmError("not an NTLMSSP message (no NTLMSSP signature)")
        message_type, = struct.unpack_from("<I", msg, 8)
        if message_type != CHALLENGE_MESSAGE:
            raise NtlmError(f"an NTLMSSP message of type {message_type}, not a CHALLENGE")
        flags, = struct.unpack_from("<I", msg, 20)
        missing = REQUIRED_FLAGS & ~flags
        if missing:
            raise NtlmError(f"the server's CHALLENGE lacks flags {missing:#010x} (Unicode, extended "
                            f"session security, 128-bit keys, key exchange and target information "
                            f"are required)")
        _field(msg, 12, "TargetName")       # unused, but it must lie inside the message
        info = _field(msg, 40, "TargetInfo")
        return cls(raw=msg, flags=flags, server_challenge=msg[24:32], target_info=_av_list(info))


def _field(msg: bytes, offset: int, name: str) -> bytes:
    length, _max, start = struct.unpack_from("<HHI", msg, offset)
    if length and (start < CHALLENGE_HEADER or start + length > len(msg)):
        raise NtlmError(f"the CHALLENGE's {name} ({length} bytes at {start}) lies outside its "
                        f"{len(msg)} bytes")
    return msg[start:start + length]


def _av_list(data: bytes) -> list[tuple[int, bytes]]:
    """AV pairs (MS-NLMP 2.2.2.1) in order, up to MsvAvEOL, which must be there; each inside
    the field."""
    pairs, pos = [], 0
    while pos + 4 <= len(data):
        av_id, length = struct.unpack_from("<HH", data, pos)
        if av_id == AV_EOL:
            return pairs
        if pos + 4 + length > len(data):
            raise NtlmError(f"AV pair {av_id} of {length} bytes runs past the target information")
        pairs.append((av_id, data[pos + 4:pos + 4 + length]))
        pos += 4 + length
    raise NtlmError("the CHALLENGE's target information has no MsvAvEOL")


def _payload_fields(values: list[bytes], start: int) -> tuple[bytes, bytes]:
    """(length, max length, offset) fields for values laid out one after another from start."""
    fields, payload = b"", b""
    for value in values:
        fields += struct.pack("<HHI", len(value), len(value), start + len(payload))
        payload += value
    return fields, payload


def negotiate_message() -> bytes:
    """NEGOTIATE_MESSAGE (MS-NLMP 2.2.1.1): no domain or workstation, the Version as Windows
    always sends it."""
    empty = struct.pack("<HHI", 0, 0, NEGOTIATE_HEADER)
    return SIGNATURE + struct.pack("<II", NEGOTIATE_MESSAGE, CLIENT_FLAGS) + empty + empty + VERSION_FIELD


def mech_list_mic(exported: bytes, flags: int, mech_types_der: bytes, client_to_server: bool) -> bytes:
    """SPNEGO's mechListMIC: the NTLM signature (sequence number 0, a fresh RC4 stream, as
    after Windows' reset) of the DER MechTypeList in one direction."""
    handle = nc.rc4(nc.sealing_key(exported, flags, client_to_server))
    return nc.ess_signature(nc.signing_key(exported, client_to_server), handle, 0, mech_types_der,
                            bool(flags & nc.KEY_EXCH))


class Authenticated:
    __slots__ = ("message", "flags", "exported_session_key")

    def __init__(self, message: bytes, flags: int, exported_session_key: bytes):
        self.message = message          # the AUTHENTICATE_MESSAGE, MIC included
        self.flags = flags              # the negotiated flags it carries
        self.exported_session_key = exported_session_key


def authenticate_message(negotiate: bytes, challenge: Challenge, user: str, domain: str,
                         password: str, target_name: str, *, client_challenge: bytes,
                         random_session_key: bytes, now: bytes | None = None) -> Authenticated:
    """AUTHENTICATE_MESSAGE (MS-NLMP 2.2.1.3, 3.1.5.1.2) with NTLMv2, key exchange and the MIC;
    empty user and password make it anonymous. now: the FILETIME to use when the server sent
    no MsvAvTimestamp."""
    flags = challenge.flags & CLIENT_FLAGS
    anonymous = not user and not password
    sent = dict(challenge.target_info)
    if anonymous:
        flags |= nc.ANONYMOUS
        lm_response, nt_response = b"\0", b""
        key_exchange_key = b"\0" * 16        # anonymous: SessionBaseKey is Z(16)
    else:
        response_key = nc.ntowfv2(nc.nt_hash(password), nc.windows_upper(user).encode("utf-16-le"),
                                  domain.encode("utf-16-le"))
        timestamp = sent.get(AV_TIMESTAMP)
        if timestamp is not None and len(timestamp) != 8:
            raise NtlmError(f"MsvAvTimestamp of {len(timestamp)} bytes")
        pairs = [(i, v) for i, v in challenge.target_info if i not in (AV_FLAGS, AV_TARGET_NAME)]
        av_flags = struct.unpack("<I", sent[AV_FLAGS])[0] if len(sent.get(AV_FLAGS, b"")) == 4 else 0
        pairs += [(AV_FLAGS, struct.pack("<I", av_flags | AV_FLAG_MIC_PRESENT)),
                  (AV_TARGET_NAME, target_name.encode("utf-16-le"))]
        blob = nc.ntlmv2_client_blob(timestamp or now or struct.pack("<Q", wire.nt_time(time.time_ns())),
                                     client_challenge, encode_av_pairs(pairs))
        if 16 + len(blob) > 0xFFFF:     # (the AUTHENTICATE's lengths are 16-bit)
            raise NtlmError(f"the CHALLENGE's target information ({len(challenge.target_info)} AV "
                            f"pairs) is too large to be echoed in the AUTHENTICATE")
        proof = nc.ntlmv2_proof(response_key, challenge.server_challenge, blob)
        nt_response = proof + blob
        # with a server timestamp the LMv2 response is left out: Z(24), as Windows sends
        lm_response = (b"\0" * 24 if timestamp is not None else
                       nc.lmv2_response(response_key, challenge.server_challenge, client_challenge))
        key_exchange_key = nc.ntlmv2_session_base_key(response_key, proof)   # KXKEY for NTLMv2
    if flags & nc.KEY_EXCH:
        exported = random_session_key
        encrypted = nc.rc4(key_exchange_key).update(exported)
    else:
        exported, encrypted = key_exchange_key, b""
    values = [lm_response, nt_response, domain.encode("utf-16-le"), user.encode("utf-16-le"),
              b"", encrypted]
    fields, payload = _payload_fields(values, AUTHENTICATE_HEADER)
    message = (SIGNATURE + struct.pack("<I", AUTHENTICATE_MESSAGE) + fields + struct.pack("<I", flags)
               + VERSION_FIELD + b"\0" * MIC_SIZE + payload)
    if not anonymous:   # the MIC (announced in MsvAvFlags) binds the three messages together
        mic = nc.hmac_md5(exported, negotiate + challenge.raw + message)
        message = message[:MIC_OFFSET] + mic + message[MIC_OFFSET + MIC_SIZE:]
    return Authenticated(message, flags, exported)


class NtlmInitiator:
    """One NTLMv2 logon in SPNEGO, client side: step() as pyspnego's context."""

    def __init__(self, user: str, password: str, domain: str, hostname: str, service: str = "cifs"):
        if not domain and "\\" in user:     # DOMAIN\user spelled in one
            domain, user = user.split("\\", 1)
        self.user, self.password, self.domain = user, password, domain
        self.target_name = f"{service}/{hostname}"
        self._mech_types_der = spnego.encode_mech_types([spnego.NTLMSSP_OID])
        self._negotiate = b""
        self._state = "start"
        self._flags = 0
        self._exported = b""
        self.complete = False

    @property
    def session_key(self) -> bytes:
        """The ExportedSessionKey (b"" before the AUTHENTICATE)."""
        return self._exported

    def step(self, in_token: bytes | None = None) -> bytes | None:
        try:
            return self._step(in_token)
        except (struct.error, ValueError) as e:
            self._state = "failed"
            if isinstance(e, NtlmError):
                raise
            raise NtlmError(f"malformed SPNEGO token from the server: {e}") from e

    def _step(self, in_token: bytes | None) -> bytes | None:
        if self._state == "start":
            self._negotiate = negotiate_message()
            self._state = "negotiate sent"
            return spnego.encode_init([spnego.NTLMSSP_OID], self._negotiate)
        if self._state == "negotiate sent":
            return self._answer_challenge(self._server_resp(in_token))
        if self._state == "authenticate sent":
            self._finish(self._server_resp(in_token))
            return None
        raise NtlmError(f"no further token expected (the logon is {self._state})")

    @staticmethod
    def _server_resp(token: bytes | None) -> spnego.NegTokenResp:
        if not token or not spnego.is_resp(token):
            raise NtlmError("the server's token is not a SPNEGO NegTokenResp")
        resp = spnego.parse_resp(token)
        if resp.neg_state == spnego.REJECT:
            raise NtlmError("the server rejected the negotiation")
        if resp.supported_mech not in (None, spnego.NTLMSSP_OID):
            raise NtlmError("the server chose a mechanism this client did not offer")
        return resp

    def _answer_challenge(self, resp: spnego.NegTokenResp) -> bytes:
        if resp.neg_state not in (spnego.ACCEPT_INCOMPLETE, spnego.REQUEST_MIC) or not resp.response_token:
            raise NtlmError("the server's first answer holds no NTLMSSP CHALLENGE")
        challenge = Challenge.parse(resp.response_token)
        auth = authenticate_message(self._negotiate, challenge, self.user, self.domain, self.password,
                                    self.target_name, client_challenge=os.urandom(8),
                                    random_session_key=os.urandom(16))
        self._flags, self._exported = auth.flags, auth.exported_session_key
        self._state = "authenticate sent"
        mic = None
        if self.user or self.password:
            mic = mech_list_mic(self._exported, self._flags, self._mech_types_der, True)
        return spnego.encode_resp(spnego.ACCEPT_INCOMPLETE, response_token=auth.message, mech_list_mic=mic)

    def _finish(self, resp: spnego.NegTokenResp) -> None:
        if resp.neg_state != spnego.ACCEPT_COMPLETED:
            raise NtlmError("the server's last SPNEGO token does not complete the negotiation")
        if resp.response_token:
            raise NtlmError("an NTLMSSP token after the AUTHENTICATE")
        # an anonymous logon has no keys: nothing to verify, nothing it could protect
        if resp.mech_list_mic is not None and (self.user or self.password):
            expected = mech_list_mic(self._exported, self._flags, self._mech_types_der, False)
            if not hmac.compare_digest(expected, resp.mech_list_mic):
                raise NtlmError("wrong mechListMIC from the server: the negotiation was altered, "
                                "or the server does not hold the session key")
        self._state = "complete"
        self.complete = True
