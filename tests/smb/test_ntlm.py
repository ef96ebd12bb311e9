"""The logon acceptor (NTLMSSP, raw and in SPNEGO) without sockets: MS-NLMP 4.2 test vectors for
its primitives, pyspnego's client logging on, and hand-made tokens that must not."""
import os
import random
import struct

import pytest
import spnego as pyspnego
from smbcore import carry_out

from smbring.server.users import PasswordLookup
from smbring.smb import ntlm_crypto as nc
from smbring.smb import spnego, wire
from smbring.smb.commands import session
from smbring.smb.connection import Connection
from smbring.smb.md4 import md4
from smbring.smb.ntlm import Acceptor, LogonFailure, negotiate_token, ntlm_auth_policy
from smbring.smb.state import Share
from smbring.vfs.posix import PosixVFS

USER, PASSWORD = "alice", "Secret-pw1"
HASHES = {USER: nc.nt_hash(PASSWORD)}
KRB5_OID = bytes.fromhex("2a864886f712010202")   # 1.2.840.113554.1.2.2


def lookup(name):
    return HASHES.get(name.lower())


# -- MD4 (RFC 1320 A.5) -------------------------------------------------------------------

@pytest.mark.parametrize("message, digest", [
    (b"", "31d6cfe0d16ae931b73c59d7e0c089c0"),
    (b"a", "bde52cb31de33e46245e05fbdbd6fb24"),
    (b"abc", "a448017aaf21d8525fc10ae87aa6729d"),
    (b"message digest", "d9130a8164549fe818874806e1c7014b"),
    (b"abcdefghijklmnopqrstuvwxyz", "d79e1c308aa5bbcdeea8ed63df412da9"),
    (b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", "043f8582f241db351ce627e153e7f0e4"),
    (b"1234567890" * 8, "e33b4ddc9c38f2199c3e7b164fcc0536"),
])
def test_md4_rfc1320_vectors(message, digest):
    assert md4(message).hex() == digest


# -- MS-NLMP 4.2 test vectors ---------------------------------------------------------------
# 4.2.1: user "User", domain "Domain", password "Password", RandomSessionKey 0x55 * 16,
# ServerChallenge 0123456789abcdef, ClientChallenge 0xaa * 8, Time 0
SPEC_NT = nc.nt_hash("Password")
SERVER_CHALLENGE = bytes.fromhex("0123456789abcdef")
CLIENT_CHALLENGE = b"\xaa" * 8
RANDOM_SESSION_KEY = b"\x55" * 16
PLAINTEXT = "Plaintext".encode("utf-16-le")


def check_wrap_example(exported, flags, seal_key, sign_key, sealed, signature):
    """A GSS_WrapEx example with extended session security: the client's keys, "Plaintext"
    sealed, then its signature from the same RC4 stream."""
    assert nc.sealing_key(exported, flags, True).hex() == seal_key
    assert nc.signing_key(exported, True).hex() == sign_key
    handle = nc.rc4(bytes.fromhex(seal_key))
    assert handle.update(PLAINTEXT).hex() == sealed
    key_exch = bool(flags & nc.KEY_EXCH)
    assert nc.ess_signature(bytes.fromhex(sign_key), handle, 0, PLAINTEXT, key_exch).hex() == signature


def test_nlmp_4_2_2_ntlmv1():
    assert SPEC_NT.hex() == "a4f49c406510bdcab6824ee7c30fd852"
    assert nc.desl(SPEC_NT, SERVER_CHALLENGE).hex() == "67c43011f30298a2ad35ece64f16331c44bdbed927841f94"
    session_base_key = nc.ntlmv1_session_base_key(SPEC_NT)
    assert session_base_key.hex() == "d87262b0cde4b1cb7499becccdf10784"
    encrypted = bytes.fromhex("518822b1b3f350c8958682ecbb3e3cb7")   # 4.2.2.2.3
    assert nc.exported_session_key(session_base_key, encrypted) == RANDOM_SESSION_KEY
    # 4.2.2.4: flags 0xe2028233 (no extended session security); sealing then signing
    handle = nc.rc4(nc.sealing_key(RANDOM_SESSION_KEY, 0xE2028233, True))
    assert handle.update(PLAINTEXT).hex() == "56fe04d861f9319af0d7238a2e3b4d457fb8"
    assert nc.legacy_signature(handle, 0, PLAINTEXT).hex() == "0100000045c844e509dcd1df2e459d36"


def test_nlmp_4_2_3_ntlmv1_with_client_challenge():
    challenge = nc.ess_challenge(SERVER_CHALLENGE, CLIENT_CHALLENGE)
    assert nc.desl(SPEC_NT, challenge).hex() == "7537f803ae367128ca458204bde7caf81e97ed2683267232"
    lm_response = CLIENT_CHALLENGE + b"\0" * 16
    key_exchange_key = nc.ess_key_exchange_key(nc.ntlmv1_session_base_key(SPEC_NT), SERVER_CHALLENGE, lm_response)
    assert key_exchange_key.hex() == "eb93429a8bd952f8b89c55b87f475edc"
    # 4.2.3.4: flags 0x820a8233 (56-bit, no key exchange)
    check_wrap_example(key_exchange_key, 0x820A8233, "04dd7f014d8504d265a25cc86a3a7c06",
                       "60e799be5c72fc92922ae8ebe961fb8d", "a02372f6530273f3aa1eb90190ce5200c99d",
                       "01000000ff2aeb52f681793a00000000")


def test_nlmp_4_2_4_ntlmv2():
    response_key = nc.ntowfv2(SPEC_NT, nc.windows_upper("User").encode("utf-16-le"), "Domain".encode("utf-16-le"))
    assert response_key.hex() == "0c868a403bfd7a93a3001ef22ef02e3f"
    target_info = (struct.pack("<HH", 2, 12) + "Domain".encode("utf-16-le")
                   + struct.pack("<HH", 1, 12) + "Server".encode("utf-16-le") + b"\0" * 4)
    blob = b"\x01\x01" + b"\0" * 6 + b"\0" * 8 + CLIENT_CHALLENGE + b"\0" * 4 + target_info + b"\0" * 4
    proof = nc.ntlmv2_proof(response_key, SERVER_CHALLENGE, blob)
    assert proof.hex() == "68cd0ab851e51c96aabc927bebef6a1c"
    session_base_key = nc.ntlmv2_session_base_key(response_key, proof)
    assert session_base_key.hex() == "8de40ccadbc14a82f15cb0ad0de95ca3"
    encrypted = bytes.fromhex("c5dad2544fc9799094ce1ce90bc9d03e")   # 4.2.4.2.3
    assert nc.exported_session_key(session_base_key, encrypted) == RANDOM_SESSION_KEY
    # 4.2.4.4: flags 0xe28a8233 (128-bit, key exchange)
    check_wrap_example(RANDOM_SESSION_KEY, 0xE28A8233, "59f600973cc4960a25480a7c196e4c58",
                       "4788dc861b4782f35d43fd98fe1a2d39", "54e50165bf1936dc996020c1811b0f06fb5f",
                       "010000007fb38ec5c55d497600000000")


def test_windows_upper_keeps_characters_whose_upper_case_is_longer():
    assert nc.windows_upper("straße-ǆ") == "STRAßE-Ǆ"


# -- pyspnego's client logs on ----------------------------------------------------------------

def run(acceptor, client, *, tamper=None):
    """Drives client and acceptor to the end; tamper(token) may rewrite the client's tokens."""
    token = client.step()
    while True:
        reply = acceptor.step(tamper(token) if tamper else token)
        if acceptor.complete:
            if reply:
                client.step(reply)
            return acceptor.identity
        token = client.step(reply)


@pytest.mark.parametrize("protocol", ["ntlm", "negotiate"])
def test_pyspnego_logs_on_with_ntlmv2(protocol):
    client = pyspnego.client("ALICE", PASSWORD, hostname="server", protocol=protocol)
    identity = run(Acceptor(lookup), client)
    assert (identity.kind, identity.user) == ("user", "ALICE")
    assert identity.session_key == client.session_key and len(identity.session_key) == 16
    assert client.complete   # with negotiate: the client verified the server's mechListMIC


@pytest.mark.parametrize("protocol", ["ntlm", "negotiate"])
@pytest.mark.parametrize("policy", ["ntlmv2-only", "ntlmv1-permitted", "disabled"])
def test_a_wrong_password_fails_whatever_the_policy(protocol, policy):
    client = pyspnego.client(USER, "wrong", hostname="server", protocol=protocol)
    with pytest.raises(LogonFailure):
        run(Acceptor(lookup, ntlm_auth=policy, guest_ok=True), client)


@pytest.mark.parametrize("lm_compat_level, protocol", [
    ("2", "ntlm"), ("2", "negotiate"),
    ("0", "ntlm"),   # 0: no extended session security (in SPNEGO see the legacy mechListMIC test)
])
def test_ntlmv1_only_when_permitted(monkeypatch, lm_compat_level, protocol):
    monkeypatch.setenv("LM_COMPAT_LEVEL", lm_compat_level)   # pyspnego's client then sends NTLMv1
    with pytest.raises(LogonFailure, match="NTLMv1"):
        run(Acceptor(lookup), pyspnego.client(USER, PASSWORD, hostname="s", protocol=protocol))
    client = pyspnego.client(USER, PASSWORD, hostname="s", protocol=protocol)
    identity = run(Acceptor(lookup, ntlm_auth="ntlmv1-permitted"), client)
    assert identity.kind == "user" and identity.session_key == client.session_key
    with pytest.raises(LogonFailure):
        run(Acceptor(lookup, ntlm_auth="ntlmv1-permitted"), pyspnego.client(USER, "wrong", hostname="s",
                                                                               protocol=protocol))


def test_disabled_refuses_every_user():
    with pytest.raises(LogonFailure, match="disabled"):
        run(Acceptor(lookup, ntlm_auth="disabled", guest_ok=True),
            pyspnego.client(USER, PASSWORD, hostname="s", protocol="ntlm"))


def test_an_unknown_user_is_a_guest_only_when_guests_are_allowed():
    identity = run(Acceptor(lookup, guest_ok=True), pyspnego.client("bob", "x", hostname="s", protocol="ntlm"))
    assert (identity.kind, identity.user, identity.session_key) == ("guest", "bob", b"")
    with pytest.raises(LogonFailure, match="unknown user"):
        run(Acceptor(lookup), pyspnego.client("bob", "x", hostname="s", protocol="ntlm"))


@pytest.mark.parametrize("flags, right, wrong", [
    ("DU", wire.STATUS_ACCOUNT_DISABLED, wire.STATUS_LOGON_FAILURE),
    ("UL", wire.STATUS_ACCOUNT_LOCKED_OUT, wire.STATUS_ACCOUNT_LOCKED_OUT),
    ("S", wire.STATUS_NOLOGON_SERVER_TRUST_ACCOUNT, wire.STATUS_LOGON_FAILURE),
    ("I", wire.STATUS_NOLOGON_INTERDOMAIN_TRUST_ACCOUNT, wire.STATUS_LOGON_FAILURE),
])
def test_a_barred_account_is_refused_in_samba_order_never_a_guest(tmp_path, flags, right, wrong):
    """Guests allowed (map to guest = bad user): still no guest for an account the file holds."""
    (tmp_path / "passdb").write_text(
        f"carol:1:{'X' * 32}:{nc.nt_hash('pw').hex()}:[{flags:<11}]:LCT-00000000:\n")
    lookup = PasswordLookup(str(tmp_path / "passdb"))
    for password, status in (("pw", right), ("wrong", wrong)):
        with pytest.raises(LogonFailure) as failed:
            run(Acceptor(lookup, guest_ok=True), pyspnego.client("carol", password, hostname="s", protocol="ntlm"))
        assert session.logon_failure_status(failed.value) == status, (flags, password)


def test_the_password_file_lookup_is_asked_at_each_logon():
    hashes = {}
    acceptor = Acceptor(lambda name: hashes.get(name.lower()))
    with pytest.raises(LogonFailure):
        run(acceptor, pyspnego.client("carol", "pw-carol", hostname="s", protocol="ntlm"))
    hashes["carol"] = nc.nt_hash("pw-carol")
    assert run(Acceptor(lambda name: hashes.get(name.lower())),
               pyspnego.client("carol", "pw-carol", hostname="s", protocol="ntlm")).kind == "user"


@pytest.mark.parametrize("value, policy", [
    ("ntlmv2-only", "ntlmv2-only"), ("no", "ntlmv2-only"), ("False", "ntlmv2-only"),
    ("mschapv2-and-ntlmv2-only", "ntlmv2-only"), ("ntlmv1-permitted", "ntlmv1-permitted"),
    ("yes", "ntlmv1-permitted"), ("true", "ntlmv1-permitted"), (" disabled ", "disabled"),
])
def test_ntlm_auth_spellings(value, policy):
    assert ntlm_auth_policy(value) == policy


def test_an_unknown_ntlm_auth_value_is_refused():
    with pytest.raises(ValueError):
        Acceptor(lookup, ntlm_auth="lanman")


def test_negotiate_token_offers_ntlmssp_only():
    assert spnego.parse_init(negotiate_token()).mech_types == [spnego.NTLMSSP_OID]


# -- a hand-made client: the tokens an attacker can send -------------------------------------

CLIENT_FLAGS = (nc.UNICODE | nc.REQUEST_TARGET | nc.SIGN | nc.SEAL | nc.NTLM | nc.ALWAYS_SIGN
                | nc.EXTENDED_SESSION_SECURITY | nc.VERSION | nc.NEGOTIATE_128 | nc.KEY_EXCH | nc.NEGOTIATE_56)


def negotiate_message(flags=CLIENT_FLAGS) -> bytes:
    return b"NTLMSSP\0" + struct.pack("<II", 1, flags) + b"\0" * 16


def field(msg: bytes, offset: int) -> bytes:
    length, _max, start = struct.unpack_from("<HHI", msg, offset)
    return msg[start:start + length]


def authenticate_message(*, user="", domain="", lm=b"", nt=b"", key=b"", flags=CLIENT_FLAGS) -> bytes:
    """An AUTHENTICATE with room for a MIC (88-byte header), MIC zero."""
    payload, fields, offset = b"", b"", 88
    for value in (lm, nt, domain.encode("utf-16-le"), user.encode("utf-16-le"), b"", key):
        fields += struct.pack("<HHI", len(value), len(value), offset + len(payload))
        payload += value
    return b"NTLMSSP\0" + struct.pack("<I", 3) + fields + struct.pack("<I", flags) + b"\0" * 8 + b"\0" * 16 + payload


def ntlmv2(challenge: bytes, password=PASSWORD, user=USER, domain="", *, target_info=None, mic=False):
    """An NTLMv2 NT response to a CHALLENGE, and its SessionBaseKey."""
    info = field(challenge, 40) if target_info is None else target_info
    if mic:   # MsvAvFlags with the MIC bit, before MsvAvEOL
        info = info[:-4] + struct.pack("<HHI", 6, 4, 2) + info[-4:]
    blob = b"\x01\x01" + b"\0" * 6 + b"\0" * 8 + os.urandom(8) + b"\0" * 4 + info + b"\0" * 4
    key = nc.ntowfv2(nc.nt_hash(password), nc.windows_upper(user).encode("utf-16-le"), domain.encode("utf-16-le"))
    proof = nc.ntlmv2_proof(key, challenge[24:32], blob)
    return proof + blob, nc.ntlmv2_session_base_key(key, proof)


def with_key_exchange(session_base_key: bytes) -> tuple[bytes, bytes]:
    """(EncryptedRandomSessionKey, ExportedSessionKey) the client chooses."""
    exported = os.urandom(16)
    return nc.rc4(session_base_key).update(exported), exported


def with_mic(auth: bytes, exported: bytes, negotiate: bytes, challenge: bytes) -> bytes:
    mic = nc.hmac_md5(exported, negotiate + challenge + auth)
    return auth[:72] + mic + auth[88:]


def raw_exchange(acceptor, build):
    """NEGOTIATE, then build(challenge) -> AUTHENTICATE, raw NTLMSSP."""
    challenge = acceptor.step(negotiate_message())
    acceptor.step(build(challenge))
    return acceptor.identity


def lm_response_of(lm_hash: bytes, challenge: bytes) -> bytes:
    return nc.desl(lm_hash, challenge[24:32])


@pytest.mark.parametrize("policy", ["ntlmv2-only", "ntlmv1-permitted"])
@pytest.mark.parametrize("lm", [
    lambda c: os.urandom(24),                              # any LM bytes
    lambda c: os.urandom(8) + b"\0" * 16,                  # the ESS shape: no password in it at all
    lambda c: lm_response_of(b"\0" * 16, c),               # computed from a zero LM hash
    lambda c: nc.desl(HASHES[USER], c[24:32]),             # a valid NTLMv1 response, in the LM field
    lambda c: b"\0",                                       # what an anonymous logon sends
], ids=["random", "ess-shape", "zero-lm-hash", "nt-in-lm-field", "one-zero-byte"])
def test_an_lm_only_response_never_logs_on(policy, lm):
    for guest_ok in (False, True):
        with pytest.raises(LogonFailure):
            raw_exchange(Acceptor(lookup, ntlm_auth=policy, guest_ok=guest_ok),
                         lambda c: authenticate_message(user=USER, lm=lm(c)))


def test_ntlmv1_is_refused_by_default_and_checked_when_permitted():
    def v1(password):
        return lambda c: authenticate_message(user=USER, nt=nc.desl(nc.nt_hash(password), c[24:32]),
                                              flags=CLIENT_FLAGS & ~nc.KEY_EXCH)
    with pytest.raises(LogonFailure, match="NTLMv1"):
        raw_exchange(Acceptor(lookup), v1(PASSWORD))
    with pytest.raises(LogonFailure, match="wrong password"):
        raw_exchange(Acceptor(lookup, ntlm_auth="ntlmv1-permitted"), v1("wrong"))
    identity = raw_exchange(Acceptor(lookup, ntlm_auth="ntlmv1-permitted"), v1(PASSWORD))
    assert identity.session_key == md4(HASHES[USER])   # no ESS nor key exchange: SessionBaseKey


def test_ntlmv1_with_extended_session_security_keys():
    client_challenge = os.urandom(8)

    def v1_ess(challenge):
        ess = nc.ess_challenge(challenge[24:32], client_challenge)
        return authenticate_message(user=USER, lm=client_challenge + b"\0" * 16, nt=nc.desl(HASHES[USER], ess),
                                    flags=CLIENT_FLAGS & ~nc.KEY_EXCH)
    acceptor = Acceptor(lookup, ntlm_auth="ntlmv1-permitted")
    identity = raw_exchange(acceptor, v1_ess)
    expected = nc.ess_key_exchange_key(md4(HASHES[USER]), acceptor._ntlm.server_challenge, client_challenge)
    assert identity.session_key == expected


def test_anonymous_only_when_guests_are_allowed():
    for lm in (b"", b"\0"):
        identity = raw_exchange(Acceptor(lookup, guest_ok=True), lambda c: authenticate_message(lm=lm))
        assert (identity.kind, identity.user, identity.session_key) == ("anonymous", "", b"")
        with pytest.raises(LogonFailure, match="anonymous"):
            raw_exchange(Acceptor(lookup), lambda c: authenticate_message(lm=lm))
    with pytest.raises(LogonFailure):   # no user name, but a response: not anonymous
        raw_exchange(Acceptor(lookup, guest_ok=True), lambda c: authenticate_message(nt=ntlmv2(c)[0]))


def test_a_known_user_with_a_wrong_password_is_never_a_guest():
    with pytest.raises(LogonFailure, match="wrong password"):
        raw_exchange(Acceptor(lookup, guest_ok=True),
                     lambda c: authenticate_message(user=USER, nt=ntlmv2(c, "wrong")[0]))


@pytest.mark.parametrize("domain", ["workgroup", "WORKGROUP", ""])
def test_ntlmv2_with_the_domain_as_sent_upper_cased_or_empty(domain):
    # the client computed its key with domain; it sends "workgroup"
    identity = raw_exchange(Acceptor(lookup), lambda c: authenticate_message(
        user="Alice", domain="workgroup", nt=ntlmv2(c, user="Alice", domain=domain)[0],
        flags=CLIENT_FLAGS & ~nc.KEY_EXCH))
    assert (identity.user, identity.domain) == ("Alice", "workgroup")
    with pytest.raises(LogonFailure):   # any other domain is a wrong response
        raw_exchange(Acceptor(lookup), lambda c: authenticate_message(
            user="Alice", domain="workgroup", nt=ntlmv2(c, user="Alice", domain="OTHER")[0]))


def forge_pair(info: bytes, av_id: int, value: bytes | None) -> bytes:
    """Target info with one AV pair's value replaced (None: the pair removed)."""
    pos, out = 0, b""
    while True:
        pair_id, length = struct.unpack_from("<HH", info, pos)
        pair = info[pos:pos + 4 + length]
        if pair_id == av_id:
            pair = b"" if value is None else struct.pack("<HH", av_id, len(value)) + value
        out += pair
        pos += 4 + length
        if pair_id == 0:
            return out


@pytest.mark.parametrize("av_id, value", [(7, b"\1" * 8), (7, None), (1, "OTHER".encode("utf-16-le")), (1, None)])
def test_the_blob_must_repeat_the_challenge_target_info(av_id, value):
    """A correct proof over target info that is not this CHALLENGE's (another timestamp,
    another server) is refused, as Samba refuses it."""
    def forged(c):
        info = forge_pair(field(c, 40), av_id, value)
        return authenticate_message(user=USER, nt=ntlmv2(c, target_info=info)[0], flags=CLIENT_FLAGS & ~nc.KEY_EXCH)
    with pytest.raises(LogonFailure, match=f"AV pair {av_id}"):
        raw_exchange(Acceptor(lookup), forged)


def test_the_challenge_expires_after_30_minutes():
    now = [1000.0]
    acceptor = Acceptor(lookup, clock=lambda: now[0])
    challenge = acceptor.step(negotiate_message(CLIENT_FLAGS & ~nc.KEY_EXCH))
    now[0] += 30 * 60 + 1
    with pytest.raises(LogonFailure, match="expired"):
        acceptor.step(authenticate_message(user=USER, nt=ntlmv2(challenge)[0], flags=CLIENT_FLAGS & ~nc.KEY_EXCH))


def test_key_exchange_needs_the_encrypted_session_key():
    with pytest.raises(LogonFailure, match="key exchange"):
        raw_exchange(Acceptor(lookup), lambda c: authenticate_message(user=USER, nt=ntlmv2(c)[0]))


def test_ntlm_mic_checked_when_the_blob_announces_it():
    def build(tamper):
        def authenticate(challenge):
            nt, base = ntlmv2(challenge, mic=True)
            encrypted, exported = with_key_exchange(base)
            auth = with_mic(authenticate_message(user=USER, nt=nt, key=encrypted), exported, negotiate_message(), challenge)
            return tamper(auth)
        return authenticate

    assert raw_exchange(Acceptor(lookup), build(lambda a: a)).kind == "user"
    flip = lambda a: a[:80] + bytes([a[80] ^ 1]) + a[81:]                            # noqa: E731
    zero = lambda a: a[:72] + b"\0" * 16 + a[88:]                                     # noqa: E731
    flag_bit = lambda a: a[:60] + struct.pack("<I", CLIENT_FLAGS & ~nc.SEAL) + a[64:]  # noqa: E731
    for tamper in (flip, zero, flag_bit):
        with pytest.raises(LogonFailure, match="MIC"):
            raw_exchange(Acceptor(lookup), build(tamper))


def test_an_announced_mic_in_a_message_too_short_to_hold_it():
    def short(challenge):
        nt, base = ntlmv2(challenge, mic=True)
        auth = authenticate_message(user=USER, nt=nt, flags=CLIENT_FLAGS & ~nc.KEY_EXCH)
        # the same fields moved 24 bytes up: no Version, no MIC
        body = bytearray(auth[:64] + auth[88:])
        for offset in range(12, 60, 8):
            struct.pack_into("<I", body, offset + 4, struct.unpack_from("<I", body, offset + 4)[0] - 24)
        return bytes(body)
    with pytest.raises(LogonFailure, match="MIC"):
        raw_exchange(Acceptor(lookup), short)


def test_pyspnego_with_a_tampered_ntlm_mic():
    def tamper(token):
        at = token.find(b"NTLMSSP\0")
        if token[at + 8] != 3:
            return token
        return token[:at + 75] + bytes([token[at + 75] ^ 0x40]) + token[at + 76:]
    for protocol in ("ntlm", "negotiate"):
        with pytest.raises(LogonFailure, match="MIC"):
            run(Acceptor(lookup), pyspnego.client(USER, PASSWORD, hostname="s", protocol=protocol), tamper=tamper)


# -- SPNEGO's mechListMIC -----------------------------------------------------------------------

def spnego_final(token: bytes, *, mic="keep") -> bytes:
    """pyspnego's last NegTokenResp with its mechListMIC kept, dropped, or replaced."""
    resp = spnego.parse_resp(token)
    new_mic = resp.mech_list_mic if mic == "keep" else (None if mic == "drop" else mic)
    return spnego.encode_resp(spnego.ACCEPT_INCOMPLETE, response_token=resp.response_token, mech_list_mic=new_mic)


def test_a_tampered_mech_list_mic_fails():
    def tamper(token):
        resp = spnego.parse_resp(token) if spnego.is_resp(token) else None
        if resp is None or resp.mech_list_mic is None:
            return token
        mic = bytearray(resp.mech_list_mic)
        mic[6] ^= 1
        return spnego_final(token, mic=bytes(mic))
    with pytest.raises(LogonFailure, match="mechListMIC"):
        run(Acceptor(lookup), pyspnego.client(USER, PASSWORD, hostname="s", protocol="negotiate"), tamper=tamper)


def test_an_ntlm_mic_without_a_mech_list_mic_makes_the_server_ask_for_it():
    """Samba's new_spnego: the server sends its mechListMIC and waits for the client's."""
    client = pyspnego.client(USER, PASSWORD, hostname="s", protocol="negotiate")
    acceptor = Acceptor(lookup)
    token = client.step()
    final = client.step(acceptor.step(token))
    reply = spnego.parse_resp(acceptor.step(spnego_final(final, mic="drop")))
    assert not acceptor.complete and reply.neg_state == spnego.ACCEPT_INCOMPLETE and reply.mech_list_mic
    with pytest.raises(LogonFailure, match="mechListMIC"):
        acceptor.step(spnego.encode_resp(spnego.ACCEPT_INCOMPLETE))
    # the same with the client's mechListMIC in the next leg completes
    client = pyspnego.client(USER, PASSWORD, hostname="s", protocol="negotiate")
    acceptor = Acceptor(lookup)
    final = client.step(acceptor.step(client.step()))
    acceptor.step(spnego_final(final, mic="drop"))
    done = spnego.parse_resp(acceptor.step(spnego.encode_resp(
        spnego.ACCEPT_INCOMPLETE, mech_list_mic=spnego.parse_resp(final).mech_list_mic)))
    assert acceptor.complete and done.neg_state == spnego.ACCEPT_COMPLETED


class DowngradedClient:
    """A SPNEGO client that offers Kerberos first, then does NTLMv2 by hand."""

    def __init__(self, flags=CLIENT_FLAGS):
        self.flags = flags
        self.mech_types = spnego.parse_init(spnego.encode_init([KRB5_OID, spnego.NTLMSSP_OID])).mech_types_der

    def logon(self, acceptor, send_mic: bool):
        first = spnego.parse_resp(acceptor.step(spnego.encode_init([KRB5_OID, spnego.NTLMSSP_OID], b"krb5-ap-req")))
        assert first.neg_state == spnego.REQUEST_MIC and first.response_token is None
        negotiate = negotiate_message(self.flags)
        challenge = spnego.parse_resp(acceptor.step(spnego.encode_resp(
            spnego.ACCEPT_INCOMPLETE, response_token=negotiate))).response_token
        nt, base = ntlmv2(challenge)
        encrypted, self.exported = with_key_exchange(base)
        auth = authenticate_message(user=USER, nt=nt, key=encrypted, flags=self.flags)
        mic = self.mech_list_mic() if send_mic else None
        return spnego.parse_resp(acceptor.step(spnego.encode_resp(spnego.ACCEPT_INCOMPLETE, response_token=auth,
                                                                  mech_list_mic=mic)))

    def mech_list_mic(self) -> bytes:
        handle = nc.rc4(nc.sealing_key(self.exported, self.flags, True))
        return nc.ess_signature(nc.signing_key(self.exported, True), handle, 0, self.mech_types, key_exch=True)


def test_a_downgrade_needs_the_mech_list_mic():
    client, acceptor = DowngradedClient(), Acceptor(lookup)
    reply = client.logon(acceptor, send_mic=False)
    assert not acceptor.complete and reply.mech_list_mic
    with pytest.raises(LogonFailure, match="mechListMIC"):
        acceptor.step(spnego.encode_resp(spnego.ACCEPT_INCOMPLETE))
    client, acceptor = DowngradedClient(), Acceptor(lookup)
    reply = client.logon(acceptor, send_mic=True)
    assert acceptor.complete and reply.neg_state == spnego.ACCEPT_COMPLETED
    server_handle = nc.rc4(nc.sealing_key(client.exported, client.flags, False))
    assert reply.mech_list_mic == nc.ess_signature(nc.signing_key(client.exported, False), server_handle, 0,
                                                   client.mech_types, key_exch=True)


def test_a_downgrade_that_cannot_sign_is_refused():
    with pytest.raises(LogonFailure, match="downgraded"):
        DowngradedClient(CLIENT_FLAGS & ~(nc.SIGN | nc.SEAL)).logon(Acceptor(lookup), send_mic=False)


def test_legacy_mech_list_mic_without_extended_session_security():
    """NTLMv1 without ESS: one RC4 stream and one counter for both directions, as Samba keeps
    them (MS-NLMP 3.4: "only one key is used for sealing ... half-duplex"). pyspnego's client
    keeps one per direction, so it cannot check this server's (or Samba's) mechListMIC there."""
    flags = (CLIENT_FLAGS | nc.SIGN) & ~(nc.EXTENDED_SESSION_SECURITY | nc.KEY_EXCH)
    mech_types = spnego.parse_init(spnego.encode_init([spnego.NTLMSSP_OID])).mech_types_der
    acceptor = Acceptor(lookup, ntlm_auth="ntlmv1-permitted")
    negotiate = negotiate_message(flags)
    challenge = spnego.parse_resp(acceptor.step(spnego.encode_init([spnego.NTLMSSP_OID], negotiate))).response_token
    auth = authenticate_message(user=USER, nt=nc.desl(HASHES[USER], challenge[24:32]), flags=flags)
    stream = nc.rc4(md4(HASHES[USER]))   # SealKey = ExportedSessionKey = SessionBaseKey
    client_mic = nc.legacy_signature(stream, 0, mech_types)
    reply = spnego.parse_resp(acceptor.step(spnego.encode_resp(spnego.ACCEPT_INCOMPLETE, response_token=auth,
                                                               mech_list_mic=client_mic)))
    assert acceptor.complete
    assert reply.mech_list_mic[8:] == nc.legacy_signature(stream, 1, mech_types)[8:]


def test_no_ntlmssp_offered():
    with pytest.raises(LogonFailure, match="no NTLMSSP"):
        Acceptor(lookup).step(spnego.encode_init([KRB5_OID], b"ticket"))


# -- malformed tokens: LogonFailure, never another exception ---------------------------------

def authenticate_with(offset: int, value: bytes) -> bytes:
    auth = bytearray(authenticate_message(user=USER, nt=b"\0\xd8" + b"\1" * 38))
    auth[offset:offset + len(value)] = value
    return bytes(auth)


def init_holding(fields: bytes) -> bytes:
    """A GSS-API framed NegTokenInit SEQUENCE holding these fields."""
    return spnego.der(0x60, spnego.der(0x06, spnego.SPNEGO_OID) + spnego.der(0xA0, spnego.der(0x30, fields)))


MALFORMED_FIRST = [
    b"\0" * 10, b"NTLMSSP\0", b"NTLMSSP\0\3\0\0\0", b"\x60", b"\x60\x80", b"\x60\x85\xff\xff\xff\xff\xff",
    b"\x60\x84\x7f\xff\xff\xff" + b"\0" * 8, b"\x60\x02\x06\x00", b"\xa1\x03\x30\x01\x00",
    spnego.encode_init([spnego.NTLMSSP_OID], b"not ntlmssp"),
    spnego.encode_init([spnego.NTLMSSP_OID], negotiate_message()[:15]),
    spnego.encode_init([spnego.NTLMSSP_OID], negotiate_message())[:-1],
    spnego.encode_init([spnego.NTLMSSP_OID], negotiate_message()) + b"\0",
    init_holding(b""),                                                          # no mechTypes
    init_holding(spnego.der(0xA0, spnego.der(0x30, spnego.der(0x04, b"x")))),  # a non-OID mech
    init_holding(spnego.der(0xA0, spnego.der(0x30, b"")) * 2),                 # a repeated field
    init_holding(spnego.der(0xA0, spnego.der(0x30, b""))),                     # an empty mech list
    b"\x60" + b"\xff" * 100,
    negotiate_token() + os.urandom(70000),
    os.urandom(0x10000),
]

MALFORMED_AUTHENTICATE = [
    b"", b"NTLMSSP\0\3\0\0\0" + b"\0" * 40,                              # truncated header
    authenticate_with(20, struct.pack("<HHI", 40, 40, 0xFFFFFFF0)),      # NT response past the end
    authenticate_with(20, struct.pack("<HHI", 0xFFFF, 0xFFFF, 88)),      # huge length
    authenticate_with(36, struct.pack("<HHI", 3, 3, 88)),                # odd UTF-16 user name
    authenticate_with(36, struct.pack("<HHI", 2, 2, 88)),                # a lone UTF-16 surrogate
    authenticate_message(user=USER, nt=b"\1" * 17),                      # NT response neither v1 nor v2
    authenticate_message(user=USER, nt=b"\1" * 43),                      # blob shorter than its header
    authenticate_message(user=USER, nt=b"\1" * 16 + b"\0" * 28 + b"\2\0\xff\0"),   # AV pair past the end
    negotiate_message(),                                                 # a second NEGOTIATE
]


@pytest.mark.parametrize("token", MALFORMED_FIRST, ids=range(len(MALFORMED_FIRST)))
def test_malformed_first_tokens(token):
    with pytest.raises(LogonFailure):
        Acceptor(lookup, guest_ok=True).step(token)


@pytest.mark.parametrize("token", MALFORMED_AUTHENTICATE, ids=range(len(MALFORMED_AUTHENTICATE)))
def test_malformed_authenticate(token):
    acceptor = Acceptor(lookup, guest_ok=True)
    acceptor.step(negotiate_message())
    with pytest.raises(LogonFailure):
        acceptor.step(token)
    with pytest.raises(LogonFailure, match="over"):   # and the exchange stays failed
        acceptor.step(token)


def test_an_empty_first_token_gets_the_mechanism_list_once():
    acceptor = Acceptor(lookup)
    assert acceptor.step(b"") == negotiate_token()
    with pytest.raises(LogonFailure):
        acceptor.step(b"")


def test_a_completed_exchange_takes_no_more_tokens():
    acceptor = Acceptor(lookup)
    run(acceptor, pyspnego.client(USER, PASSWORD, hostname="s", protocol="ntlm"))
    with pytest.raises(LogonFailure):
        acceptor.step(negotiate_message())


def test_random_corruption_of_real_tokens():
    """Bit flips, truncations and extensions of pyspnego's tokens: a reply or LogonFailure."""
    rng = random.Random(1320)
    for _ in range(300):
        protocol = rng.choice(["ntlm", "negotiate"])
        client = pyspnego.client(USER, PASSWORD, hostname="s", protocol=protocol)
        acceptor, token, leg = Acceptor(lookup, guest_ok=True), client.step(), rng.randrange(2)
        try:
            for i in range(2):
                if i == leg:
                    token = bytearray(token)
                    how = rng.randrange(3)
                    if how == 0:
                        token[rng.randrange(len(token))] ^= 1 << rng.randrange(8)
                    elif how == 1:
                        del token[rng.randrange(len(token)):]
                    else:
                        token += os.urandom(rng.randrange(1, 40))
                reply = acceptor.step(bytes(token))
                if acceptor.complete:
                    break
                try:
                    token = client.step(reply)
                except Exception:   # the client's trouble with the reply to a corrupted token
                    break
        except LogonFailure:
            continue
        assert acceptor.identity is None or acceptor.identity.kind in ("user", "guest", "anonymous")


# -- through the protocol core: the status a client sees ---------------------------------------

def smb2(command: int, body: bytes, message_id: int, session_id: int = 0) -> bytes:
    return struct.pack("<4sHHIHHIIQIIQ16s", b"\xfeSMB", 64, 0, 0, command, 1, 0, 0, message_id,
                       0, 0, session_id, b"\0" * 16) + body


def session_setup(token: bytes, message_id: int, session_id: int = 0) -> bytes:
    body = struct.pack("<HBBIIHHQ", 25, 0, 1, 0, 0, 64 + 24, len(token), 0) + token
    return smb2(wire.SESSION_SETUP, body, message_id, session_id)


def answer(conn, frame: bytes) -> tuple[int, int, bytes]:
    """(status, session id, security buffer) of the response to one frame."""
    data = b"".join(carry_out(conn.handle_frame(frame)))
    status, = struct.unpack_from("<I", data, 8)
    session_id, = struct.unpack_from("<Q", data, 40)
    if len(data) < 72:
        return status, session_id, b""
    off, length = struct.unpack_from("<HH", data, 68)
    return status, session_id, data[off:off + length]


@pytest.fixture
def conn(tmp_path):
    """A Connection past NEGOTIATE (SMB 2.0.2) whose password file holds USER."""
    passdb = tmp_path / "passdb"
    passdb.write_text(f"{USER}:1000:{'0' * 32}:{HASHES[USER].hex().upper()}:[U]:LCT-00000000\n")
    conn = Connection({"s": Share("s", str(tmp_path))}, lookup=PasswordLookup(str(passdb)), open_fs=PosixVFS)
    conn.handle_frame(smb2(wire.NEGOTIATE, struct.pack("<HHHHI16sIHH", 36, 1, 1, 0, 0, b"\1" * 16, 0, 0, 0)
                           + struct.pack("<H", wire.SMB202), 0))
    return conn


@pytest.mark.parametrize("password, status", [(PASSWORD, wire.STATUS_SUCCESS), ("wrong", wire.STATUS_LOGON_FAILURE)])
def test_connection_reports_logon_failure_and_drops_the_half_made_session(conn, password, status):
    client = pyspnego.client(USER, password, hostname="s", protocol="negotiate")
    got, session_id, reply = answer(conn, session_setup(client.step(), 1))
    assert got == wire.STATUS_MORE_PROCESSING_REQUIRED and session_id in conn.sessions
    got, _, reply = answer(conn, session_setup(client.step(reply), 2, session_id))
    assert got == status
    assert (session_id in conn.sessions) == (status == wire.STATUS_SUCCESS)
    if status == wire.STATUS_SUCCESS:
        client.step(reply)   # pyspnego checks the server's mechListMIC
        assert conn.sessions[session_id].user == USER


def test_connection_refuses_an_lm_only_raw_ntlmssp_logon(conn):
    """The hole this acceptor closes: raw NTLMSSP, extended session security, an LM response of
    8 random bytes and 16 zeros, no NT response (the old acceptor logged that on as the user)."""
    got, session_id, challenge = answer(conn, session_setup(negotiate_message(), 1))
    assert got == wire.STATUS_MORE_PROCESSING_REQUIRED
    auth = authenticate_message(user=USER, lm=os.urandom(8) + b"\0" * 16, flags=CLIENT_FLAGS & ~nc.KEY_EXCH)
    got, _, _ = answer(conn, session_setup(auth, 2, session_id))
    assert got == wire.STATUS_LOGON_FAILURE and session_id not in conn.sessions


@pytest.mark.parametrize("guest_ok", [False, True])
def test_anonymous_ok_admits_the_null_session_apart_from_guests(guest_ok):
    """anonymous_ok decides the anonymous logon on its own (the server admits it always, as
    smbd), guest_ok still decides unknown users; a keyless identity either way."""
    identity = raw_exchange(Acceptor(lookup, guest_ok=guest_ok, anonymous_ok=True),
                            lambda c: authenticate_message(user="", lm=b""))
    assert (identity.kind, identity.user, identity.session_key) == ("anonymous", "", b"")
    with pytest.raises(LogonFailure, match="anonymous logon refused"):
        raw_exchange(Acceptor(lookup, guest_ok=guest_ok, anonymous_ok=False),
                     lambda c: authenticate_message(user="", lm=b""))
    if not guest_ok:
        with pytest.raises(LogonFailure, match="unknown user"):
            raw_exchange(Acceptor(lookup, ntlm_auth="ntlmv1-permitted", guest_ok=False, anonymous_ok=True),
                         lambda c: authenticate_message(user="stranger", nt=os.urandom(24)))
