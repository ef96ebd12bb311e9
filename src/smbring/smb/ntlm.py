"""The SMB server's logon: NTLMSSP, raw or inside SPNEGO, and Kerberos where the server offers
it, as an acceptor.

``Acceptor.step(token)`` takes each SESSION_SETUP security buffer and returns the one to send
back, until ``complete`` (``identity`` then says who logged on) or ``LogonFailure``. No I/O:
user names become NT hashes through the ``lookup`` callable the server hands in, and Kerberos
tickets are checked by the ``kerberos`` object it hands in (``kerberos.context()``: one
exchange, see server.kerberos), which this module only frames.

SPNEGO picks the first mechanism of the client's list that the server offers (Kerberos, under
either of its OIDs, only where the server was configured for it; else NTLMSSP), as Samba's
server does. Kerberos as the client's first choice, with its AP-REQ in the NegTokenInit,
completes in one leg: the answer is accept-completed with the AP-REP (mutual authentication).
A bare Kerberos token (the GSS-API krb5 framing without SPNEGO) is accepted too, and answered
with a bare AP-REP.

SPNEGO's mechListMIC (RFC 4178 5) follows Samba's server (auth/gensec/spnego.c):
- a mechListMIC the client sends is verified, and answered with the server's own;
- one is required when the client's NTLM AUTHENTICATE announced an NTLM MIC (Samba's
  "new_spnego"), and when NTLMSSP was not the client's first mechanism (a downgrade, which
  only the MIC protects); if it did not come with the AUTHENTICATE, the server sends its own
  and waits for the client's;
- otherwise (NTLMSSP was the first mechanism, as with impacket or pysmb) the logon completes
  without one, as RFC 4178 allows;
- guests and anonymous users have no keys, so nothing is signed for them. A downgraded user
  logon that cannot sign is refused;
- Kerberos completing in the client's first token needs no mechListMIC (RFC 4178 5: the
  client's first choice, nothing to protect); Kerberos chosen later (a downgrade, or a client
  that sent no optimistic token) is protected as NTLMSSP is, with GSS MICs.
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


def negotiate_token(kerberos: bool = False) -> bytes:
    """The SPNEGO NegTokenInit of the NEGOTIATE response: NTLMSSP, after Kerberos (both its
    OIDs, Windows' first, as Windows and Samba list them) where the server offers it."""
    return spnego.encode_init([*(spnego.KRB5_OIDS if kerberos else ()), spnego.NTLMSSP_OID])


class _Ntlm:
    """NTLMSSP as one mechanism of the exchange (the interface a Kerberos context has too):
    step(token) -> the reply token, `identity` once authenticated, and the MICs."""

    def __init__(self, server: NtlmServer):
        self.server = server
        self.identity: Identity | None = None

    @property
    def user(self) -> str:
        ntlm = self.server
        return f"{ntlm.domain}\\{ntlm.user}" if ntlm.domain and ntlm.user else ntlm.user

    @property
    def mic_present(self) -> bool:
        return self.server.mic_present

    def step(self, token: bytes) -> bytes | None:
        if self.server.state == "negotiate":
            return self.server.challenge(token)
        self.identity = self.server.authenticate(token)
        return None

    def can_sign(self) -> bool:
        return self.server.can_sign()

    def sign(self, data: bytes) -> bytes:
        return self.server.sign(data)

    def verify(self, data: bytes, mic: bytes) -> None:
        self.server.verify(data, mic)


class Acceptor:
    def __init__(self, lookup, *, ntlm_auth: str = "ntlmv2-only", guest_ok: bool = False,
                 bad_user_to_guest: bool | None = None, anonymous_ok: bool | None = None,
                 netbios_name: str = "SMBRING", domain: str = "WORKGROUP", dns_name: str | None = None,
                 dns_domain: str = "", clock=time.monotonic, kerberos=None):
        names = ServerNames(netbios_name=netbios_name, domain=domain,
                            dns_name=dns_name if dns_name is not None else netbios_name.lower(),
                            dns_domain=dns_domain)
        self._ntlm = NtlmServer(lookup, policy=ntlm_auth_policy(ntlm_auth), guest_ok=guest_ok,
                                bad_user_to_guest=guest_ok if bad_user_to_guest is None else bad_user_to_guest,
                                anonymous_ok=guest_ok if anonymous_ok is None else anonymous_ok,
                                names=names, clock=clock)
        # the server's Kerberos (None: not offered): kerberos.context() -> one exchange
        self._kerberos = kerberos
        self._mech = _Ntlm(self._ntlm)    # the mechanism chosen (NTLMSSP until Kerberos is)
        self._oid = spnego.NTLMSSP_OID    # ... as the client named it
        self._framing: str | None = None      # "raw" NTLMSSP or Kerberos, or "spnego", fixed by the first token
        self._sent_mech_list = False
        self._mech_types_der = b""
        self._downgraded = False
        self._pending: Identity | None = None  # logged on, waiting for the client's mechListMIC
        self._over = False
        self.complete = False
        self.identity: Identity | None = None

    @property
    def user(self) -> str:
        """The user name the client's AUTHENTICATE gave, or the Kerberos principal its ticket
        named ("" before it came): the logon audit names it whether or not the logon succeeds."""
        return self._mech.user

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
            out = self._mech.step(token)
            if self._mech.identity is None:
                raise LogonFailure("the mechanism wants more than the exchange allows")
            self._finish(self._mech.identity)
            return out or b""
        if not spnego.is_resp(token):
            raise LogonFailure("expected a SPNEGO NegTokenResp")
        resp = spnego.parse_resp(token)
        if resp.neg_state == spnego.REJECT:
            raise LogonFailure("the client rejected the negotiation")
        if self._pending is not None:
            return self._receive_mech_list_mic(resp)
        if not resp.response_token:
            raise LogonFailure("NegTokenResp without a mechanism token")
        out = self._mech.step(resp.response_token)
        if self._mech.identity is None:     # (NTLMSSP's CHALLENGE, after a downgrade)
            return spnego.encode_resp(spnego.ACCEPT_INCOMPLETE, self._oid, out)
        return self._authenticated(self._mech.identity, resp.mech_list_mic, out)

    def _first(self, token: bytes) -> bytes:
        if not token:
            # a client that skipped the NEGOTIATE response's hint asks for it (once)
            if self._sent_mech_list:
                raise LogonFailure("empty token")
            self._sent_mech_list = True
            return negotiate_token(self._kerberos is not None)
        if token.startswith(SIGNATURE):
            self._framing = "raw"
            return self._mech.step(token)
        framed = spnego.framed_mech(token)
        if framed in spnego.KRB5_OIDS:
            # a bare Kerberos AP-REQ, no SPNEGO around it: answered with a bare AP-REP
            self._kerberos_chosen(framed)
            self._framing = "raw"
            return self._step(token)
        if framed != spnego.SPNEGO_OID:
            raise LogonFailure("neither SPNEGO nor NTLMSSP")
        self._framing = "spnego"
        init = spnego.parse_init(token)
        offered = (*(spnego.KRB5_OIDS if self._kerberos is not None else ()), spnego.NTLMSSP_OID)
        chosen = next((oid for oid in init.mech_types if oid in offered), None)
        if chosen is None:
            raise LogonFailure("the client offers no NTLMSSP" if self._kerberos is None
                               else "the client offers neither Kerberos nor NTLMSSP")
        if chosen in spnego.KRB5_OIDS:
            self._kerberos_chosen(chosen)
        self._mech_types_der = init.mech_types_der
        if chosen != init.mech_types[0]:
            # its optimistic token (if any) was for another mechanism: ask for the chosen one's
            # first token, and for a mechListMIC at the end (RFC 4178 5)
            self._downgraded = True
            return spnego.encode_resp(spnego.REQUEST_MIC, chosen)
        if chosen == spnego.NTLMSSP_OID:
            return spnego.encode_resp(spnego.ACCEPT_INCOMPLETE, chosen, self._mech.step(init.mech_token or b""))
        if not init.mech_token:
            return spnego.encode_resp(spnego.ACCEPT_INCOMPLETE, chosen)   # its AP-REQ comes next
        out = self._mech.step(init.mech_token)
        if self._mech.identity is None:
            raise LogonFailure("Kerberos wants more than one leg")
        # the client's first choice, with its first token: nothing for a mechListMIC to protect
        self._finish(self._mech.identity)
        return spnego.encode_resp(spnego.ACCEPT_COMPLETED, chosen, out)

    def _kerberos_chosen(self, oid: bytes) -> None:
        if self._kerberos is None:
            raise LogonFailure("Kerberos is not offered")
        self._mech, self._oid = self._kerberos.context(), oid

    def _authenticated(self, identity: Identity, client_mic: bytes | None, out: bytes | None) -> bytes:
        mech = self._mech
        if identity.kind != "user" or not mech.can_sign():
            if self._downgraded and identity.kind == "user":
                raise LogonFailure("a downgraded negotiation that cannot be signed")
            self._finish(identity)
            return spnego.encode_resp(spnego.ACCEPT_COMPLETED, response_token=out)
        if client_mic is None and not (mech.mic_present or self._downgraded):
            self._finish(identity)
            return spnego.encode_resp(spnego.ACCEPT_COMPLETED, response_token=out)
        if client_mic is not None:
            mech.verify(self._mech_types_der, client_mic)
        server_mic = mech.sign(self._mech_types_der)
        if client_mic is None:
            self._pending = identity
            return spnego.encode_resp(spnego.ACCEPT_INCOMPLETE, self._oid, out, mech_list_mic=server_mic)
        self._finish(identity)
        return spnego.encode_resp(spnego.ACCEPT_COMPLETED, response_token=out, mech_list_mic=server_mic)

    def _receive_mech_list_mic(self, resp: spnego.NegTokenResp) -> bytes:
        if resp.response_token or resp.mech_list_mic is None:
            raise LogonFailure("expected the client's mechListMIC")
        self._mech.verify(self._mech_types_der, resp.mech_list_mic)
        self._finish(self._pending)
        return spnego.encode_resp(spnego.ACCEPT_COMPLETED)

    def _finish(self, identity: Identity) -> None:
        self.identity, self.complete, self._over = identity, True, True
