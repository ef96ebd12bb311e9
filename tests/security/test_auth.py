"""Authentication at the message level: which NTLM answers log a user on.

Only NTLMv2 proves the password; LM and NTLMv1 responses can be replayed or cracked (an LM
response from an all-zero LM hash, or a bare client challenge with extended session security,
needs no password at all). Each forged AUTHENTICATE is sent both as raw NTLMSSP and inside
SPNEGO, as real clients do one or the other.
"""
import os

import pytest

from logon import (ANONYMOUS, EXTENDED_SESSIONSECURITY, V1_FLAGS, desl, forged_logon, forged_v2_logon,
                   logon_without_mech_list_mic, ntlmv1_responses, ntlmv2_blob, ntlmv2_response,
                   server_challenge, target_info)
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
def test_anonymous_without_a_guest_share_reaches_ipc_only(plain, wrap):
    """As smbd by default: the null session is admitted whether or not a share admits guests;
    without one it reaches IPC$ and nothing else (more in test_anonymous.py)."""
    c, s = anonymous(plain, wrap)
    assert s.status == wire.STATUS_SUCCESS and s.flags & wire.SESSION_FLAG_IS_NULL
    assert c.tree_connect(s, "IPC$").status == wire.STATUS_SUCCESS
    for share in ("ro", "rw", "enc"):
        assert c.tree_connect(s, share).status == wire.STATUS_ACCESS_DENIED, share


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


# -- NTLMv2 responses whose blob is malformed --------------------------------------------------
# (blob(target info of the CHALLENGE) -> the NTLMv2 blob): with the right password's proof
NTLMV2_BLOBS = {
    "no-eol": lambda info: ntlmv2_blob(info[:-4])[:-4],      # the AV pairs end without MsvAvEOL
    "pairs-not-repeated": lambda _info: ntlmv2_blob(b"\0\0\0\0"),  # just MsvAvEOL
    "first-pair-dropped": lambda info: ntlmv2_blob(info[4 + int.from_bytes(info[2:4], "little"):]),
    "short-blob": lambda _info: b"\x01\x01" + b"\0" * 10,
}
# what smbtorture's smb2.session.ntlmssp_bug14932 sends (a NetApp tool's odd response): its
# "AV pairs" run to the end of the buffer without MsvAvEOL
NETAPP_RESPONSE = bytes.fromhex(
    "abababababababababababababababab" "0101000000000000" "3f3f3f3f3f3f3f3f" "b8823af1b3dd0815"
    "00000000" "11a20881" "503822782b9447fe54947bff17275ab4f418badc2c38fd5bfb0ec1851ecc92bb"
    "9bb1c4d55314ff8c7649f5459019a2")


def v2_logon(server, blob_for, user=None, wrap=True):
    c = negotiated(server)
    user = user or server.user
    return forged_v2_logon(c, user, lambda challenge: ntlmv2_response(
        server.nt_hash(), user, "", server_challenge(challenge), blob_for(target_info(challenge))), wrap=wrap)


@WRAPS
def test_a_hand_built_ntlmv2_response_logs_on(plain, wrap):
    """(The forging below is right: the same response with a well-formed blob logs on.)"""
    assert v2_logon(plain, ntlmv2_blob, wrap=wrap).status == wire.STATUS_SUCCESS


@WRAPS
@pytest.mark.parametrize("case", NTLMV2_BLOBS)
def test_a_malformed_ntlmv2_blob_is_invalid_parameter_even_with_the_right_password(plain, case, wrap):
    """As Samba answers (smb2.session.ntlmssp_bug14932): the blob is checked before the
    password, so the answer is the same for any user, known or not."""
    assert v2_logon(plain, NTLMV2_BLOBS[case], wrap=wrap).status == wire.STATUS_INVALID_PARAMETER
    assert v2_logon(plain, NTLMV2_BLOBS[case], user="nosuchuser", wrap=wrap).status == \
        wire.STATUS_INVALID_PARAMETER


def test_the_netapp_response_is_invalid_parameter(plain):
    c = negotiated(plain)
    s = forged_v2_logon(c, plain.user, lambda _challenge: NETAPP_RESPONSE)
    assert s.status == wire.STATUS_INVALID_PARAMETER
    # the connection goes on: a proper logon works on it
    assert c.logon(plain.user, plain.password).status == wire.STATUS_SUCCESS


def test_a_malformed_ntlmv2_blob_is_not_mapped_to_guest(with_guest):
    """map to guest = bad user turns an unknown user into a guest, never a malformed response."""
    s = v2_logon(with_guest, NTLMV2_BLOBS["no-eol"], user="nosuchuser")
    assert s.status == wire.STATUS_INVALID_PARAMETER


def test_a_well_formed_ntlmv2_blob_with_a_wrong_proof_is_logon_failure(plain):
    c = negotiated(plain)
    s = forged_v2_logon(c, plain.user, lambda challenge: ntlmv2_response(
        os.urandom(16), plain.user, "", server_challenge(challenge), ntlmv2_blob(target_info(challenge))))
    assert s.status == wire.STATUS_LOGON_FAILURE
