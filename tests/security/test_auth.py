"""Authentication at the message level: which NTLM answers log a user on.

Only NTLMv2 proves the password; LM and NTLMv1 responses can be replayed or cracked (an LM
response from an all-zero LM hash, or a bare client challenge with extended session security,
needs no password at all). Each forged AUTHENTICATE is sent both as raw NTLMSSP and inside
SPNEGO, as real clients do one or the other.
"""
import os

import pytest

from logon import (ANONYMOUS, EXTENDED_SESSIONSECURITY, V1_FLAGS, desl, forged_logon,
                   logon_without_mech_list_mic, ntlmv1_responses)
from smbring.smb import wire

WRAPS = pytest.mark.parametrize("wrap", [False, True], ids=["raw-ntlmssp", "spnego"])


@pytest.fixture(scope="module")
def plain(servers):
    """No guest share, `ntlm auth` left at its default."""
    return servers()


@pytest.fixture(scope="module")
def with_guest(servers):
    return servers(guest=True)


@pytest.fixture(scope="module")
def v1_permitted(servers):
    return servers({"ntlm auth": "ntlmv1-permitted"})


def negotiated(server, dialect=wire.SMB311):
    c = server.client()
    assert c.negotiate((dialect,)).status == wire.STATUS_SUCCESS
    return c


# (NTLMSSP flags, responses(nt_hash, server challenge) -> (LM, NT)): no NT response at all
LM_ONLY = {
    "lm-from-zero-lm-hash": (V1_FLAGS, lambda _h, challenge: (desl(b"\0" * 16, challenge), b"")),
    "lm-any-bytes-ess": (V1_FLAGS | EXTENDED_SESSIONSECURITY,
                         lambda _h, _challenge: (os.urandom(8) + b"\0" * 16, b"")),
    "lm-random": (V1_FLAGS, lambda _h, _challenge: (os.urandom(24), b"")),
}


@WRAPS
@pytest.mark.parametrize("case", LM_ONLY)
def test_lm_only_response_is_refused(plain, case, wrap):
    c = negotiated(plain)
    flags, respond = LM_ONLY[case]
    nt_hash = plain.nt_hash()
    s = forged_logon(c, plain.user, lambda challenge: respond(nt_hash, challenge), flags=flags, wrap=wrap)
    assert s.status == wire.STATUS_LOGON_FAILURE, s.last
    assert c.tree_connect(s, "ro").status != wire.STATUS_SUCCESS


def ntlmv1(server, extended: bool, wrap: bool, nt_hash: bytes | None = None):
    c = negotiated(server, wire.SMB210)     # no signing key is derived for a forged logon
    nt_hash = nt_hash or server.nt_hash()
    flags = V1_FLAGS | (EXTENDED_SESSIONSECURITY if extended else 0)
    return forged_logon(c, server.user, lambda challenge: ntlmv1_responses(nt_hash, challenge, extended),
                        flags=flags, wrap=wrap)


V1_KINDS = pytest.mark.parametrize("extended", [False, True], ids=["ntlmv1", "ntlmv1-ess"])


@WRAPS
@V1_KINDS
def test_ntlmv1_with_the_right_password_is_refused_by_default(plain, extended, wrap):
    s = ntlmv1(plain, extended, wrap)
    assert s.status == wire.STATUS_LOGON_FAILURE, s.last


@WRAPS
@V1_KINDS
def test_ntlmv1_is_accepted_when_permitted(v1_permitted, extended, wrap):
    s = ntlmv1(v1_permitted, extended, wrap)
    assert s.status == wire.STATUS_SUCCESS, s.last


@V1_KINDS
def test_ntlmv1_with_a_wrong_password_is_refused_even_when_permitted(v1_permitted, extended):
    wrong = bytes(b ^ 0x55 for b in v1_permitted.nt_hash())
    s = ntlmv1(v1_permitted, extended, False, wrong)
    assert s.status == wire.STATUS_LOGON_FAILURE, s.last


def anonymous(server, wrap: bool):
    c = negotiated(server)
    return c, forged_logon(c, "", lambda _challenge: (b"", b""), flags=V1_FLAGS | ANONYMOUS, wrap=wrap)


@WRAPS
def test_anonymous_is_refused_without_a_guest_share(plain, wrap):
    _c, s = anonymous(plain, wrap)
    assert s.status == wire.STATUS_LOGON_FAILURE


@WRAPS
def test_anonymous_gets_a_null_session_that_reaches_guest_shares_only(with_guest, wrap):
    c, s = anonymous(with_guest, wrap)
    assert s.status == wire.STATUS_SUCCESS
    assert s.flags & wire.SESSION_FLAG_IS_NULL
    assert c.tree_connect(s, "public").status == wire.STATUS_SUCCESS
    for share in ("ro", "rw", "enc"):
        assert c.tree_connect(s, share).status == wire.STATUS_ACCESS_DENIED, share


def test_spnego_logon_without_mech_list_mic_completes(plain):
    """What impacket and pysmb send: the last leg has the AUTHENTICATE and no mechListMIC."""
    c = negotiated(plain)
    s = logon_without_mech_list_mic(c, plain.user, plain.password)
    assert s.status == wire.STATUS_SUCCESS, s.last
    assert s.last.signature_ok, "the final SESSION_SETUP is signed with the session's key"
    assert c.tree_connect(s, "rw").status == wire.STATUS_SUCCESS


def test_spnego_logon_without_mech_list_mic_still_checks_the_password(plain):
    c = negotiated(plain)
    s = logon_without_mech_list_mic(c, plain.user, "not-the-password")
    assert s.status == wire.STATUS_LOGON_FAILURE
