"""The server side of one NTLMSSP exchange (MS-NLMP): NEGOTIATE in, CHALLENGE out,
AUTHENTICATE in, an Identity (or LogonFailure) out; then the message signatures SPNEGO's
mechListMIC is made of.

What it accepts, as Samba's ``ntlm auth`` option says:
- NTLMv2, checked over the client's blob exactly as received, the NTOWFv2 tried with the
  client's domain as sent, upper-cased, then empty (as Samba does);
- NTLMv1, with or without extended session security, only under ``ntlmv1-permitted``;
- never a response computed from an LM hash: an AUTHENTICATE without an NT response is only
  ever an anonymous logon.
The blob must echo the CHALLENGE's target information (names and timestamp), the challenge
expires after 30 minutes, and when the blob announces an NTLM MIC the MIC must be right.
"""
from __future__ import annotations

import hmac
import os
import struct
import time
from dataclasses import dataclass

from smbring.smb import ntlm_crypto as nc
from smbring.smb import wire

SIGNATURE = b"NTLMSSP\0"
NEGOTIATE_MESSAGE, CHALLENGE_MESSAGE, AUTHENTICATE_MESSAGE = 1, 2, 3
CHALLENGE_LIFETIME = 30 * 60   # seconds, as Samba: the AUTHENTICATE normally follows at once
MIC_OFFSET, MIC_SIZE = 72, 16
OEM_CODEC = "cp850"            # Samba's default DOS code page, for clients without Unicode


# AV pair ids (MS-NLMP 2.2.2.1)
AV_EOL, AV_NB_COMPUTER, AV_NB_DOMAIN, AV_DNS_COMPUTER, AV_DNS_DOMAIN = 0, 1, 2, 3, 4
AV_FLAGS, AV_TIMESTAMP, AV_TARGET_NAME = 6, 7, 9
AV_FLAG_MIC_PRESENT = 0x2


# the flags a server mirrors when the client offers them (Samba's ntlmssp_handle_neg_flags)
MIRRORED = (nc.SIGN | nc.SEAL | nc.ALWAYS_SIGN | nc.EXTENDED_SESSION_SECURITY | nc.NEGOTIATE_128
            | nc.NEGOTIATE_56 | nc.KEY_EXCH)
# what an empty NEGOTIATE (a SPNEGO NegTokenInit without a mechToken) stands for
DEFAULT_CLIENT_FLAGS = nc.UNICODE | nc.REQUEST_TARGET | MIRRORED
# ProductMajor 6, ProductMinor 1, build 0, NTLMSSP_REVISION_W2K3, as Samba sends
VERSION_FIELD = struct.pack("<BBH3xB", 6, 1, 0, 15)


POLICIES = ("ntlmv2-only", "ntlmv1-permitted", "disabled")


class LogonFailure(Exception):
    """Wrong password, malformed token, or refused by policy: STATUS_LOGON_FAILURE."""


class AccountRefused(LogonFailure):
    """A known account that may not log on (disabled, locked out, a trust account): answered
    with its own status, as Samba's check_sam_security answers, and never made a guest."""

    def __init__(self, why: str, status: int):
        super().__init__(why)
        self.status = status


@dataclass(frozen=True)
class Barred:
    """What a lookup says of an account it holds that may not log on: `status` is the logon's
    answer, `why` the audit's; `before_password`: refused whatever the password (a locked-out
    account, as Samba checks ACB_AUTOLOCK first; an account without a password to check),
    else only once the password proved right, so a wrong one learns nothing more than for
    any account (Samba's sam_account_ok runs after the password check)."""

    why: str
    status: int = wire.STATUS_LOGON_FAILURE
    before_password: bool = False


class InvalidResponse(LogonFailure):
    """An NTLMv2 response whose blob is malformed (too short, AV pairs without MsvAvEOL), does
    not repeat the AV pairs the CHALLENGE sent, or announces a MIC the AUTHENTICATE lacks:
    STATUS_INVALID_PARAMETER, as Samba answers (it checks the blob before the password, so
    the answer says nothing about the user or the password)."""


@dataclass
class Identity:
    user: str          # as the client spelled it ("" for anonymous)
    domain: str
    kind: str          # "user" | "guest" | "anonymous"
    session_key: bytes  # ExportedSessionKey (16 bytes) for "user"; b"" for guest/anonymous
    # the account whose password the logon proved, as the lookup names it (the server's: the
    # password file's spelling, after the username map); "" where the lookup names none
    account: str = ""
    # a Kerberos logon's: the seconds its ticket has left, when the session expires (MS-SMB2
    # Session.ExpirationTime); None: the logon does not expire (NTLM)
    expires_in: float | None = None


@dataclass
class ServerNames:
    netbios_name: str
    domain: str
    dns_name: str
    dns_domain: str


def _u32(data: bytes, offset: int) -> int:
    return struct.unpack_from("<I", data, offset)[0]


def _check_header(msg: bytes, message_type: int, minimum: int) -> None:
    if len(msg) < minimum or msg[:8] != SIGNATURE or _u32(msg, 8) != message_type:
        raise LogonFailure(f"not an NTLMSSP message of type {message_type}")


def _field(msg: bytes, offset: int) -> bytes:
    """A (length, max length, offset) field's bytes, which must lie inside msg."""
    length, _max, start = struct.unpack_from("<HHI", msg, offset)
    if start + length > len(msg):
        raise LogonFailure("NTLMSSP field out of the message")
    return msg[start:start + length]


def av_pairs(data: bytes) -> dict[int, bytes]:
    """The AV pairs up to MsvAvEOL (which must be there); a repeated id keeps the first."""
    pairs: dict[int, bytes] = {}
    pos = 0
    while pos + 4 <= len(data):
        av_id, length = struct.unpack_from("<HH", data, pos)
        if av_id == AV_EOL:
            return pairs
        if pos + 4 + length > len(data):
            break
        pairs.setdefault(av_id, data[pos + 4:pos + 4 + length])
        pos += 4 + length
    raise InvalidResponse("AV pairs without MsvAvEOL")


def encode_av_pairs(pairs: list[tuple[int, bytes]]) -> bytes:
    return b"".join(struct.pack("<HH", av_id, len(v)) + v for av_id, v in pairs) + struct.pack("<HH", AV_EOL, 0)


@dataclass
class Authenticate:
    """The fields of an AUTHENTICATE_MESSAGE (MS-NLMP 2.2.1.3)."""

    raw: bytes
    lm_response: bytes
    nt_response: bytes
    domain: bytes
    user: bytes
    encrypted_session_key: bytes
    flags: int

    @classmethod
    def parse(cls, msg: bytes) -> "Authenticate":
        _check_header(msg, AUTHENTICATE_MESSAGE, 64)
        _field(msg, 44)     # the workstation: unused, but inside the message too (as Samba parses it)
        return cls(raw=msg, lm_response=_field(msg, 12), nt_response=_field(msg, 20),
                   domain=_field(msg, 28), user=_field(msg, 36),
                   encrypted_session_key=_field(msg, 52), flags=_u32(msg, 60))


class NtlmServer:
    """One NTLMSSP exchange on the server side. lookup(user) gives the NT hash, or None for a
    name it does not hold (the only one `bad_user_to_guest` makes a guest); the hash may carry
    `account` (the name the lookup gives the account) and `barred` (a `Barred`: the account
    may not log on)."""

    def __init__(self, lookup, *, policy: str, guest_ok: bool, names: ServerNames, clock=time.monotonic,
                 bad_user_to_guest: bool | None = None, anonymous_ok: bool | None = None):
        # anonymous_ok: anonymous logons (no user name, no password) are accepted (by default
        # with guest_ok); bad_user_to_guest: so are users the password file does not know, as
        # guests (Samba's `map to guest = bad user`; by default with guest_ok)
        self.bad_user_to_guest = guest_ok if bad_user_to_guest is None else bad_user_to_guest
        self.anonymous_ok = guest_ok if anonymous_ok is None else anonymous_ok
        if policy not in POLICIES:
            raise ValueError(f"ntlm auth policy: one of {', '.join(POLICIES)}, not {policy!r}")
        self.lookup, self.policy, self.guest_ok, self.names, self.clock = lookup, policy, guest_ok, names, clock
        self.server_challenge = os.urandom(8)
        self.state = "negotiate"
        self.flags = 0
        self.mic_present = False     # the client's blob announced an NTLM MIC (Samba's new_spnego)
        self.user = self.domain = ""  # the names the AUTHENTICATE gave (for the logon audit)
        self._negotiate = self._challenge = b""
        self._sent_pairs: dict[int, bytes] = {}
        self._challenged_at = 0.0
        self._exported = b""
        self._handles: dict[str, object] = {}   # RC4 states, per direction
        self._seq = {"client": 0, "server": 0}

    # -- NEGOTIATE -> CHALLENGE ---------------------------------------------------------
    def challenge(self, negotiate: bytes) -> bytes:
        if self.state != "negotiate":
            raise LogonFailure("unexpected NTLMSSP NEGOTIATE")
        if negotiate:
            _check_header(negotiate, NEGOTIATE_MESSAGE, 16)
            client_flags = _u32(negotiate, 12)
        else:
            client_flags = DEFAULT_CLIENT_FLAGS
        flags = (nc.NTLM | nc.REQUEST_TARGET | nc.TARGET_TYPE_SERVER | nc.TARGET_INFO | nc.VERSION
                 | (client_flags & MIRRORED) | (nc.UNICODE if client_flags & nc.UNICODE else nc.OEM))
        now = wire.nt_time(time.time_ns())
        pairs = [(AV_NB_DOMAIN, self.names.domain.encode("utf-16-le")),
                 (AV_NB_COMPUTER, self.names.netbios_name.encode("utf-16-le")),
                 (AV_DNS_DOMAIN, self.names.dns_domain.encode("utf-16-le")),
                 (AV_DNS_COMPUTER, self.names.dns_name.encode("utf-16-le")),
                 (AV_TIMESTAMP, struct.pack("<Q", now))]
        target_info = encode_av_pairs(pairs)
        target_name = self._encode(self.names.netbios_name, flags)
        header = 56
        msg = (SIGNATURE + struct.pack("<I", CHALLENGE_MESSAGE)
               + struct.pack("<HHI", len(target_name), len(target_name), header)
               + struct.pack("<I", flags) + self.server_challenge + b"\0" * 8
               + struct.pack("<HHI", len(target_info), len(target_info), header + len(target_name))
               + VERSION_FIELD + target_name + target_info)
        self.flags, self._negotiate, self._challenge = flags, bytes(negotiate), msg
        self._sent_pairs = dict(pairs)
        self._challenged_at = self.clock()
        self.state = "authenticate"
        return msg

    @staticmethod
    def _encode(text: str, flags: int) -> bytes:
        return text.encode("utf-16-le" if flags & nc.UNICODE else OEM_CODEC)

    @staticmethod
    def _decode(raw: bytes, flags: int) -> str:
        try:
            return raw.decode("utf-16-le" if flags & nc.UNICODE else OEM_CODEC)
        except UnicodeDecodeError as e:
            raise LogonFailure("undecodable name") from e

    # -- AUTHENTICATE -> Identity -------------------------------------------------------
    def authenticate(self, msg: bytes) -> Identity:
        if self.state != "authenticate":
            raise LogonFailure("unexpected NTLMSSP AUTHENTICATE")
        self.state = "done"
        if self.clock() - self._challenged_at > CHALLENGE_LIFETIME:
            raise LogonFailure("the challenge expired")
        auth = Authenticate.parse(msg)
        self._settle_flags(auth.flags)
        user, domain = self._decode(auth.user, self.flags), self._decode(auth.domain, self.flags)
        self.user, self.domain = user, domain
        if not user and not auth.nt_response and auth.lm_response in (b"", b"\0"):
            if not self.anonymous_ok:
                raise LogonFailure("anonymous logon refused")
            return Identity(user, domain, "anonymous", b"")
        if self.policy == "disabled":
            raise LogonFailure("NTLM logons are disabled (ntlm auth = disabled)")
        if not user:
            raise LogonFailure("a response without a user name")
        if len(auth.nt_response) > 24:
            self._check_v2_blob(auth)       # before the user is looked up, as Samba does
        nt = self.lookup(user)
        if nt is None:
            if self.bad_user_to_guest:   # Samba's "map to guest = bad user": unknown names only
                return Identity(user, domain, "guest", b"")
            self._verify(auth, user, domain, os.urandom(16))   # the same work as for a known user
            raise LogonFailure(f"unknown user {user!r}")
        barred = getattr(nt, "barred", None)
        if barred is not None and barred.before_password:
            try:
                self._verify(auth, user, domain, os.urandom(16))   # the work of a password check
            except LogonFailure:
                pass
            raise AccountRefused(f"{user!r}: {barred.why}", barred.status)
        key_exchange_key = self._verify(auth, user, domain, nt)
        if key_exchange_key is None:
            raise LogonFailure(f"wrong password for {user!r}")
        if barred is not None:
            raise AccountRefused(f"{user!r}: {barred.why} (the password was right)", barred.status)
        self._exported = self._exported_key(auth, key_exchange_key)
        if self.mic_present:
            self._check_mic(auth.raw)
        return Identity(user, domain, "user", self._exported, getattr(nt, "account", ""))

    def _settle_flags(self, auth_flags: int) -> None:
        """The AUTHENTICATE's flags may drop what the CHALLENGE offered (never add to it)."""
        if not auth_flags:
            return
        flags = self.flags & (~MIRRORED | auth_flags)
        if auth_flags & nc.UNICODE:
            flags = (flags | nc.UNICODE) & ~nc.OEM
        else:
            flags = (flags | nc.OEM) & ~nc.UNICODE
        self.flags = flags

    def _verify(self, auth: Authenticate, user: str, domain: str, nt: bytes) -> bytes | None:
        """The KeyExchangeKey if the NT response proves the password, else None."""
        if len(auth.nt_response) > 24:
            return self._verify_v2(auth.nt_response, user, domain, nt)
        if len(auth.nt_response) == 24:
            if self.policy != "ntlmv1-permitted":
                raise LogonFailure("NTLMv1 refused (ntlm auth = ntlmv2-only)")
            return self._verify_v1(auth, nt)
        raise LogonFailure("no NT response (LM responses are never accepted)")

    def _check_v2_blob(self, auth: Authenticate) -> None:
        """The NTLMv2 response's blob is well formed and repeats the names and timestamp this
        CHALLENGE sent (which binds the response to this server and this challenge); a MIC
        it announces is in the AUTHENTICATE. Else InvalidResponse."""
        blob = auth.nt_response[16:]
        if len(blob) < 28:
            raise InvalidResponse("NTLMv2 blob too short")
        pairs = av_pairs(blob[28:])
        for av_id, value in self._sent_pairs.items():
            if pairs.get(av_id) != value:
                raise InvalidResponse(f"the NTLMv2 blob does not repeat AV pair {av_id}")
        av_flags = pairs.get(AV_FLAGS, b"\0\0\0\0")
        self.mic_present = len(av_flags) == 4 and bool(_u32(av_flags, 0) & AV_FLAG_MIC_PRESENT)
        if self.mic_present and len(auth.raw) < MIC_OFFSET + MIC_SIZE:
            raise InvalidResponse("the blob announces a MIC the AUTHENTICATE does not hold")

    def _verify_v2(self, nt_response: bytes, user: str, domain: str, nt: bytes) -> bytes | None:
        """(The blob was checked by `_check_v2_blob`.)"""
        proof, blob = nt_response[:16], nt_response[16:]
        user_utf16 = nc.windows_upper(user).encode("utf-16-le")
        for candidate in dict.fromkeys((domain, nc.windows_upper(domain), "")):
            response_key = nc.ntowfv2(nt, user_utf16, candidate.encode("utf-16-le"))
            if hmac.compare_digest(nc.ntlmv2_proof(response_key, self.server_challenge, blob), proof):
                return nc.ntlmv2_session_base_key(response_key, proof)   # KXKEY is SessionBaseKey
        return None

    def _verify_v1(self, auth: Authenticate, nt: bytes) -> bytes | None:
        ess = bool(self.flags & nc.EXTENDED_SESSION_SECURITY) and len(auth.lm_response) == 24
        challenge = (nc.ess_challenge(self.server_challenge, auth.lm_response[:8]) if ess
                     else self.server_challenge)
        if not hmac.compare_digest(nc.desl(nt, challenge), auth.nt_response):
            return None
        session_base_key = nc.ntlmv1_session_base_key(nt)
        if ess:
            return nc.ess_key_exchange_key(session_base_key, self.server_challenge, auth.lm_response)
        self.flags &= ~nc.EXTENDED_SESSION_SECURITY   # signatures then follow the legacy scheme
        return session_base_key

    def _exported_key(self, auth: Authenticate, key_exchange_key: bytes) -> bytes:
        if not self.flags & nc.KEY_EXCH:
            return key_exchange_key
        if len(auth.encrypted_session_key) != 16:
            raise LogonFailure("key exchange without a 16-byte encrypted session key")
        return nc.exported_session_key(key_exchange_key, auth.encrypted_session_key)

    def _check_mic(self, raw: bytes) -> None:
        zeroed = raw[:MIC_OFFSET] + b"\0" * MIC_SIZE + raw[MIC_OFFSET + MIC_SIZE:]
        expected = nc.hmac_md5(self._exported, self._negotiate + self._challenge + zeroed)
        if not hmac.compare_digest(expected, raw[MIC_OFFSET:MIC_OFFSET + MIC_SIZE]):
            raise LogonFailure("wrong NTLM MIC")

    # -- signatures (SPNEGO's mechListMIC) ----------------------------------------------
    def can_sign(self) -> bool:
        return bool(self._exported) and bool(self.flags & nc.SIGN)

    def _signature(self, message: bytes, client_to_server: bool) -> bytes:
        """The next signature in one direction. Without extended session security both
        directions share one RC4 stream and one sequence counter (MS-NLMP 3.4.4.1)."""
        if self.flags & nc.EXTENDED_SESSION_SECURITY:
            direction = "client" if client_to_server else "server"
            handle = self._handles.setdefault(direction, nc.rc4(
                nc.sealing_key(self._exported, self.flags, client_to_server)))
            seq = self._seq[direction]
            self._seq[direction] += 1
            return nc.ess_signature(nc.signing_key(self._exported, client_to_server), handle, seq,
                                    message, bool(self.flags & nc.KEY_EXCH))
        handle = self._handles.setdefault("shared", nc.rc4(nc.sealing_key(self._exported, self.flags, True)))
        seq = self._seq["client"]
        self._seq["client"] += 1
        return nc.legacy_signature(handle, seq, message)

    def verify(self, message: bytes, signature: bytes) -> None:
        expected = self._signature(message, client_to_server=True)
        if not self.flags & nc.EXTENDED_SESSION_SECURITY:
            # the legacy RandomPad is whatever the client chose: compare checksum and counter
            expected, signature = expected[8:], signature[8:] if len(signature) == 16 else b""
        if not hmac.compare_digest(expected, signature):
            raise LogonFailure("wrong mechListMIC")

    def sign(self, message: bytes) -> bytes:
        return self._signature(message, client_to_server=False)
