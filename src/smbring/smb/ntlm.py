"""The SMB server's logon: NTLMSSP, raw or inside SPNEGO, as an acceptor.

``Acceptor.step(token)`` takes each SESSION_SETUP security buffer and returns the one to send
back, until ``complete`` (``identity`` then says who logged on) or ``LogonFailure``. No I/O:
user names become NT hashes through the ``lookup`` callable the server hands in.

SPNEGO's mechListMIC (RFC 4178 5) follows Samba's server (auth/gensec/spnego.c):
- a mechListMIC the client sends is verified, and answered with the server's own;
- one is required when the client's NTLM AUTHENTICATE announced an NTLM MIC (Samba's
  "new_spnego"), and when NTLMSSP was not the client's first mechanism (a downgrade, which
  only the MIC protects); if it did not come with the AUTHENTICATE, the server sends its own
  and waits for the client's;
- otherwise (NTLMSSP was the first mechanism, as with impacket or pysmb) the logon completes
  without one, as RFC 4178 allows;
- guests and anonymous users have no keys, so nothing is signed for them. A downgraded user
  logon that cannot sign is refused.
"""
from __future__ import annotations

import struct
import time

from smbring.smb import spnego
from smbring.smb.ntlmssp import (
    SIGNATURE,
    AccountRefused,
    Barred,
    Identity,
    InvalidResponse,
    LogonFailure,
    NtlmServer,
    ServerNames,
)

__all__ = ["AccountRefused", "Acceptor", "Barred", "Identity", "InvalidResponse", "LogonFailure",
           "negotiate_token", "ntlm_auth_policy"]


MAX_TOKEN = 0xFFFF   # as Samba: no SPNEGO or NTLMSSP token of a logon is larger


# Samba's spellings of `ntlm auth`; mschapv2-and-ntlmv2-only allows NTLMv1 for MSCHAPv2 only,
# which SMB never is
_POLICY_NAMES = {
    "ntlmv2-only": "ntlmv2-only", "no": "ntlmv2-only", "false": "ntlmv2-only", "off": "ntlmv2-only",
    "0": "ntlmv2-only", "mschapv2-and-ntlmv2-only": "ntlmv2-only",
    "ntlmv1-permitted": "ntlmv1-permitted", "yes": "ntlmv1-permitted", "true": "ntlmv1-permitted",
    "on": "ntlmv1-permitted", "1": "ntlmv1-permitted",
    "disabled": "disabled",
}


def ntlm_auth_policy(value: str) -> str:
    """The policy an ``ntlm auth`` value means: ntlmv2-only, ntlmv1-permitted or disabled."""
    policy = _POLICY_NAMES.get(value.strip().lower())
    if policy is None:
        raise ValueError(f"ntlm auth: one of {', '.join(_POLICY_NAMES)}, not {value!r}")
    return policy


def negotiate_token() -> bytes:
    """The SPNEGO NegTokenInit of the NEGOTIATE response: NTLMSSP is the one mechanism."""
    return spnego.encode_init([spnego.NTLMSSP_OID])


class Acceptor:
    def __init__(self, lookup, *, ntlm_auth: str = "ntlmv2-only", guest_ok: bool = False,
                 bad_user_to_guest: bool | None = None, anonymous_ok: bool | None = None,
                 netbios_name: str = "SMBRING", domain: str = "WORKGROUP", dns_name: str | None = None,
                 dns_domain: str = "", clock=time.monotonic):
        names = ServerNames(netbios_name=netbios_name, domain=domain,
                            dns_name=dns_name if dns_name is not None else netbios_name.lower(),
                            dns_domain=dns_domain)
        self._ntlm = NtlmServer(lookup, policy=ntlm_auth_policy(ntlm_auth), guest_ok=guest_ok,
                                bad_user_to_guest=guest_ok if bad_user_to_guest is None else bad_user_to_guest,
                                anonymous_ok=guest_ok if anonymous_ok is None else anonymous_ok,
                                names=names, clock=clock)
        self._framing: str | None = None      # "raw" NTLMSSP or "spnego", fixed by the first token
        self._sent_mech_list = False
        self._mech_types_der = b""
        self._downgraded = False
        self._pending: Identity | None = None  # logged on, waiting for the client's mechListMIC
        self._over = False
        self.complete = False
        self.identity: Identity | None = None

    @property
    def user(self) -> str:
        """The user name the client's AUTHENTICATE gave ("" before it came): the logon audit
        names it whether or not the logon succeeds."""
        ntlm = self._ntlm
        return f"{ntlm.domain}\\{ntlm.user}" if ntlm.domain and ntlm.user else ntlm.user

    def step(self, token: bytes) -> bytes:
        """The reply to one token; raises LogonFailure (after which every step does)."""
        if self._over:
            raise LogonFailure("this logon exchange is over")
        try:
            return self._step(bytes(token))
        except (ValueError, struct.error) as e:   # a parser's complaint about malformed input
            self._over = True
            raise LogonFailure(f"malformed token: {e}") from e
        except LogonFailure:
            self._over = True
            raise

    def _step(self, token: bytes) -> bytes:
        if len(token) > MAX_TOKEN:
            raise LogonFailure("token too large")
        if self._framing is None:
            return self._first(token)
        if self._framing == "raw":
            self._finish(self._ntlm.authenticate(token))
            return b""
        if not spnego.is_resp(token):
            raise LogonFailure("expected a SPNEGO NegTokenResp")
        resp = spnego.parse_resp(token)
        if resp.neg_state == spnego.REJECT:
            raise LogonFailure("the client rejected the negotiation")
        if self._pending is not None:
            return self._receive_mech_list_mic(resp)
        if not resp.response_token:
            raise LogonFailure("NegTokenResp without an NTLMSSP token")
        if self._ntlm.state == "negotiate":    # after a downgrade the client starts NTLMSSP now
            return spnego.encode_resp(spnego.ACCEPT_INCOMPLETE, spnego.NTLMSSP_OID,
                                      self._ntlm.challenge(resp.response_token))
        return self._authenticated(self._ntlm.authenticate(resp.response_token), resp.mech_list_mic)

    def _first(self, token: bytes) -> bytes:
        if not token:
            # a client that skipped the NEGOTIATE response's hint asks for it (once)
            if self._sent_mech_list:
                raise LogonFailure("empty token")
            self._sent_mech_list = True
            return negotiate_token()
        if token.startswith(SIGNATURE):
            self._framing = "raw"
            return self._ntlm.challenge(token)
        if not spnego.is_init(token):
            raise LogonFailure("neither SPNEGO nor NTLMSSP")
        self._framing = "spnego"
        init = spnego.parse_init(token)
        if spnego.NTLMSSP_OID not in init.mech_types:
            raise LogonFailure("the client offers no NTLMSSP")
        self._mech_types_der = init.mech_types_der
        if init.mech_types[0] != spnego.NTLMSSP_OID:
            # its optimistic token (if any) was for another mechanism: ask for NTLMSSP's first
            # token, and for a mechListMIC at the end (RFC 4178 5)
            self._downgraded = True
            return spnego.encode_resp(spnego.REQUEST_MIC, spnego.NTLMSSP_OID)
        return spnego.encode_resp(spnego.ACCEPT_INCOMPLETE, spnego.NTLMSSP_OID,
                                  self._ntlm.challenge(init.mech_token or b""))

    def _authenticated(self, identity: Identity, client_mic: bytes | None) -> bytes:
        if identity.kind != "user" or not self._ntlm.can_sign():
            if self._downgraded and identity.kind == "user":
                raise LogonFailure("a downgraded negotiation that cannot be signed")
            self._finish(identity)
            return spnego.encode_resp(spnego.ACCEPT_COMPLETED)
        if client_mic is None and not (self._ntlm.mic_present or self._downgraded):
            self._finish(identity)
            return spnego.encode_resp(spnego.ACCEPT_COMPLETED)
        if client_mic is not None:
            self._ntlm.verify(self._mech_types_der, client_mic)
        server_mic = self._ntlm.sign(self._mech_types_der)
        if client_mic is None:
            self._pending = identity
            return spnego.encode_resp(spnego.ACCEPT_INCOMPLETE, spnego.NTLMSSP_OID, mech_list_mic=server_mic)
        self._finish(identity)
        return spnego.encode_resp(spnego.ACCEPT_COMPLETED, mech_list_mic=server_mic)

    def _receive_mech_list_mic(self, resp: spnego.NegTokenResp) -> bytes:
        if resp.response_token or resp.mech_list_mic is None:
            raise LogonFailure("expected the client's mechListMIC")
        self._ntlm.verify(self._mech_types_der, resp.mech_list_mic)
        self._finish(self._pending)
        return spnego.encode_resp(spnego.ACCEPT_COMPLETED)

    def _finish(self, identity: Identity) -> None:
        self.identity, self.complete, self._over = identity, True, True
