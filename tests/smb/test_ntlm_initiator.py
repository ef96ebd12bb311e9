"""The client's NTLMv2 initiator (smbring.smb.ntlm_initiator) without sockets: MS-NLMP 4.2.4's
NTLMv2 example values, logons accepted by smbring's acceptor and by pyspnego's, the server's
mechListMIC checked, and hostile CHALLENGEs and SPNEGO tokens refused with NtlmError (never an
IndexError or struct.error)."""
import random
import struct

import pytest
import spnego as pyspnego

from smbring.smb import ntlm_crypto as nc
from smbring.smb import spnego
from smbring.smb.ntlm import Acceptor, LogonFailure
from smbring.smb.ntlm_initiator import (
    CLIENT_FLAGS,
    Challenge,
    NtlmError,
    NtlmInitiator,
    authenticate_message,
    negotiate_message,
)
from smbring.smb.ntlmssp import AV_FLAG_MIC_PRESENT, AV_FLAGS, AV_TARGET_NAME, AV_TIMESTAMP, Authenticate, av_pairs

USER, PASSWORD = "alice", "Secret-pw1"
HASHES = {USER: nc.nt_hash(PASSWORD)}


def lookup(name):
    return HASHES.get(name.lower())


# -- MS-NLMP 4.2.4: user "User", domain "Domain", password "Password", ServerChallenge
# 0123456789abcdef, ClientChallenge 0xaa * 8, Time 0, RandomSessionKey 0x55 * 16, target
# information MsvAvNbDomainName "Domain", MsvAvNbComputerName "Server" -----------------------
SERVER_CHALLENGE = bytes.fromhex("0123456789abcdef")
CLIENT_CHALLENGE = b"\xaa" * 8
RANDOM_SESSION_KEY = b"\x55" * 16
SPEC_PAIRS = [(2, "Domain".encode("utf-16-le")), (1, "Server".encode("utf-16-le"))]
SPEC_TARGET_INFO = b"".join(struct.pack("<HH", i, len(v)) + v for i, v in SPEC_PAIRS) + b"\0" * 4
SPEC_FLAGS = 0xE28A8233   # 4.2.4: 128-bit, key exchange, extended session security, target info


def challenge_message(flags=SPEC_FLAGS, target_info=SPEC_TARGET_INFO, server_challenge=SERVER_CHALLENGE,
                      target_name="Server".encode("utf-16-le")) -> bytes:
    header = 56
    return (b"NTLMSSP\0" + struct.pack("<I", 2) + struct.pack("<HHI", len(target_name), len(target_name), header)
            + struct.pack("<I", flags) + server_challenge + b"\0" * 8
            + struct.pack("<HHI", len(target_info), len(target_info), header + len(target_name))
            + bytes.fromhex("0601000000000f00") + target_name + target_info)


def test_nlmp_4_2_4_blob_proof_and_keys():
    response_key = nc.ntowfv2(nc.nt_hash("Password"), "USER".encode("utf-16-le"), "Domain".encode("utf-16-le"))
    blob = nc.ntlmv2_client_blob(b"\0" * 8, CLIENT_CHALLENGE, SPEC_TARGET_INFO)
    assert blob.hex() == ("0101000000000000" "0000000000000000" "aaaaaaaaaaaaaaaa" "00000000"
                          + SPEC_TARGET_INFO.hex() + "00000000")     # 4.2.4.1.3's `temp`
    proof = nc.ntlmv2_proof(response_key, SERVER_CHALLENGE, blob)
    assert proof.hex() == "68cd0ab851e51c96aabc927bebef6a1c"
    session_base_key = nc.ntlmv2_session_base_key(response_key, proof)
    assert session_base_key.hex() == "8de40ccadbc14a82f15cb0ad0de95ca3"
    assert nc.rc4(session_base_key).update(RANDOM_SESSION_KEY).hex() == "c5dad2544fc9799094ce1ce90bc9d03e"
    assert nc.lmv2_response(response_key, SERVER_CHALLENGE, CLIENT_CHALLENGE).hex() == \
        "86c35097ac9cec102554764a57cccc19aaaaaaaaaaaaaaaa"


def test_nlmp_4_2_4_authenticate_message():
    """The initiator's AUTHENTICATE for the example's inputs: the example's LMv2 response; an
    NTLMv2 response over the server's AV pairs (plus MsvAvFlags with the MIC bit and the
    target name); the random session key RC4-encrypted with the session base key; the MIC."""
    negotiate, challenge = negotiate_message(), Challenge.parse(challenge_message())
    auth = authenticate_message(negotiate, challenge, "User", "Domain", "Password", "cifs/server",
                                client_challenge=CLIENT_CHALLENGE, random_session_key=RANDOM_SESSION_KEY,
                                now=b"\0" * 8)
    parsed = Authenticate.parse(auth.message)
    assert parsed.lm_response.hex() == "86c35097ac9cec102554764a57cccc19aaaaaaaaaaaaaaaa"
    assert (parsed.user, parsed.domain) == ("User".encode("utf-16-le"), "Domain".encode("utf-16-le"))
    assert parsed.flags == SPEC_FLAGS & CLIENT_FLAGS
    proof, blob = parsed.nt_response[:16], parsed.nt_response[16:]
    assert blob[:28] == bytes.fromhex("0101000000000000" "0000000000000000") + CLIENT_CHALLENGE + b"\0" * 4
    pairs = av_pairs(blob[28:])
    assert {i: pairs[i] for i, _ in SPEC_PAIRS} == dict(SPEC_PAIRS)
    assert struct.unpack("<I", pairs[AV_FLAGS])[0] & AV_FLAG_MIC_PRESENT
    assert pairs[AV_TARGET_NAME] == "cifs/server".encode("utf-16-le")
    response_key = nc.ntowfv2(nc.nt_hash("Password"), "USER".encode("utf-16-le"), "Domain".encode("utf-16-le"))
    assert proof == nc.ntlmv2_proof(response_key, SERVER_CHALLENGE, blob)
    session_base_key = nc.ntlmv2_session_base_key(response_key, proof)
    assert nc.exported_session_key(session_base_key, parsed.encrypted_session_key) == RANDOM_SESSION_KEY
    assert auth.exported_session_key == RANDOM_SESSION_KEY
    zeroed = auth.message[:72] + b"\0" * 16 + auth.message[88:]
    assert auth.message[72:88] == nc.hmac_md5(RANDOM_SESSION_KEY, negotiate + challenge.raw + zeroed)


def test_with_a_server_timestamp_the_lm_response_is_zero_and_the_timestamp_is_echoed():
    stamp = struct.pack("<Q", 0x01D9_0000_1234_5678)
    info = struct.pack("<HH", AV_TIMESTAMP, 8) + stamp + SPEC_TARGET_INFO
    auth = authenticate_message(negotiate_message(), Challenge.parse(challenge_message(target_info=info)),
                                "User", "Domain", "Password", "cifs/server", client_challenge=CLIENT_CHALLENGE,
                                random_session_key=RANDOM_SESSION_KEY)
    parsed = Authenticate.parse(auth.message)
    assert parsed.lm_response == b"\0" * 24
    assert parsed.nt_response[16 + 8:16 + 16] == stamp
    assert av_pairs(parsed.nt_response[16 + 28:])[AV_TIMESTAMP] == stamp


def test_without_a_server_timestamp_the_lm_response_is_lmv2_and_the_nt_response_ntlmv2():
    """No MsvAvTimestamp (MS-NLMP 3.1.5.1.2): the LMv2 response goes beside the NTLMv2 one, as
    Windows sends it; both are keyed with NTOWFv2 (the same strength); never an NTLMv1 or LM
    response (24 bytes of DES), whatever the server leaves out."""
    auth = authenticate_message(negotiate_message(), Challenge.parse(challenge_message()),
                                "User", "Domain", "Password", "cifs/server",
                                client_challenge=CLIENT_CHALLENGE, random_session_key=RANDOM_SESSION_KEY)
    parsed = Authenticate.parse(auth.message)
    response_key = nc.ntowfv2(nc.nt_hash("Password"), "USER".encode("utf-16-le"), "Domain".encode("utf-16-le"))
    assert parsed.lm_response == nc.lmv2_response(response_key, SERVER_CHALLENGE, CLIENT_CHALLENGE)
    assert len(parsed.nt_response) > 24 and parsed.nt_response[16:18] == b"\x01\x01"    # NTLMv2 blob
    assert auth.flags & nc.KEY_EXCH and auth.exported_session_key == RANDOM_SESSION_KEY


def test_the_negotiate_message():
    msg = negotiate_message()
    assert msg[:12] == b"NTLMSSP\0\1\0\0\0" and len(msg) == 40
    flags = struct.unpack_from("<I", msg, 12)[0]
    assert flags == CLIENT_FLAGS
    assert not flags & (nc.LM_KEY | nc.OEM)     # never an LM key, never OEM names


# -- logons accepted by real acceptors ---------------------------------------------------------

def logon(acceptor, client, *, tamper_final=None):
    """Drives the initiator and an acceptor (step() of each) to the end."""
    token = client.step()
    while True:
        reply = acceptor.step(token)
        if acceptor.complete:
            if reply:
                client.step(tamper_final(reply) if tamper_final else reply)
            return acceptor.identity
        token = client.step(reply)


@pytest.mark.parametrize("user, domain", [(USER, ""), ("ALICE", "WORKGROUP"), ("WORKGROUP\\Alice", "")])
def test_smbring_acceptor_logs_the_initiator_on(user, domain):
    client = NtlmInitiator(user, PASSWORD, domain, "server")
    identity = logon(Acceptor(lookup), client)
    assert identity.kind == "user" and identity.user.lower() == USER
    # the acceptor verified the NTLM MIC and the client's mechListMIC; the client the server's
    assert client.complete and identity.session_key == client.session_key and len(client.session_key) == 16


def test_a_wrong_password_is_refused_by_the_acceptor():
    with pytest.raises(LogonFailure, match="wrong password"):
        logon(Acceptor(lookup), NtlmInitiator(USER, "not-" + PASSWORD, "", "server"))


def test_anonymous():
    client = NtlmInitiator("", "", "", "server")
    identity = logon(Acceptor(lookup, guest_ok=True), client)
    assert identity.kind == "anonymous" and client.complete
    with pytest.raises(LogonFailure, match="anonymous"):
        logon(Acceptor(lookup), NtlmInitiator("", "", "", "server"))


def test_pyspnego_acceptor_logs_the_initiator_on(tmp_path, monkeypatch):
    """An acceptor written by others checks the NTProofStr, the NTLM MIC and the client's
    mechListMIC, and sends its own, which the initiator checks."""
    users = tmp_path / "ntlm-users"
    users.write_text(f"WORKGROUP:{USER}:{PASSWORD}\n")
    monkeypatch.setenv("NTLM_USER_FILE", str(users))
    server = pyspnego.server(protocol="negotiate")
    client = NtlmInitiator(USER, PASSWORD, "WORKGROUP", "server")
    token = client.step()
    reply = server.step(token)
    reply = server.step(client.step(reply))
    assert server.complete and reply
    assert client.step(reply) is None and client.complete
    assert server.session_key == client.session_key


def test_a_missing_server_mech_list_mic_is_accepted():
    """RFC 4178 5: optional when the chosen mechanism is the initiator's only one."""
    client = NtlmInitiator(USER, PASSWORD, "", "server")
    logon(Acceptor(lookup), client, tamper_final=lambda r: spnego.encode_resp(spnego.ACCEPT_COMPLETED))
    assert client.complete


@pytest.mark.parametrize("final, message", [
    (lambda r: r[:-1] + bytes([r[-1] ^ 1]), "wrong mechListMIC"),
    (lambda r: spnego.encode_resp(spnego.ACCEPT_COMPLETED, mech_list_mic=b"\1" + b"\0" * 15), "wrong mechListMIC"),
    (lambda r: spnego.encode_resp(spnego.REJECT), "rejected"),
    (lambda r: spnego.encode_resp(spnego.ACCEPT_INCOMPLETE), "does not complete"),
    (lambda r: spnego.encode_resp(spnego.ACCEPT_COMPLETED, response_token=b"NTLMSSP\0"), "after the AUTHENTICATE"),
    (lambda r: b"", "not a SPNEGO NegTokenResp"),
    (lambda r: b"\xa1\x05\x30\x03\xa0\x01", "malformed"),
])
def test_a_bad_final_server_token_is_refused(final, message):
    client = NtlmInitiator(USER, PASSWORD, "", "server")
    with pytest.raises(NtlmError, match=message):
        logon(Acceptor(lookup), client, tamper_final=final)
    assert not client.complete


# -- hostile CHALLENGEs -------------------------------------------------------------------------

def first_answer(challenge: bytes, mech=spnego.NTLMSSP_OID, state=spnego.ACCEPT_INCOMPLETE) -> bytes:
    return spnego.encode_resp(state, mech, challenge)


def answer(token: bytes):
    client = NtlmInitiator(USER, PASSWORD, "", "server")
    client.step()
    return client.step(token)


def patched(offset: int, fmt: str, value: int, msg: bytes | None = None) -> bytes:
    msg = bytearray(msg or challenge_message())
    struct.pack_into(fmt, msg, offset, value)
    return bytes(msg)


GOOD = challenge_message()
HOSTILE_CHALLENGES = {
    "empty": b"",
    "signature only": b"NTLMSSP\0",
    "header cut before the target info": GOOD[:47],
    "not NTLMSSP": b"NTLMSSX\0" + GOOD[8:],
    "a NEGOTIATE": patched(8, "<I", 1),
    "an AUTHENTICATE": patched(8, "<I", 3),
    "target info past the end": patched(40, "<H", len(SPEC_TARGET_INFO) + 1),
    "target info of 65535 bytes": patched(40, "<H", 0xFFFF),
    "target info offset past the end": patched(44, "<I", 0xFFFFFFF0),
    "target info offset inside the header": patched(44, "<I", 8),
    "target name past the end": patched(12, "<H", 0xFFFF),
    "target name offset past the end": patched(16, "<I", 0x7FFFFFFF),
    "message cut inside the target info": GOOD[:-3],
    "target info without MsvAvEOL": challenge_message(target_info=SPEC_TARGET_INFO[:-4]),
    "an AV pair longer than the target info": challenge_message(target_info=struct.pack("<HH", 2, 200) + b"ab"),
    "no target info at all": challenge_message(target_info=b""),
    "a 4-byte MsvAvTimestamp": challenge_message(target_info=struct.pack("<HH", AV_TIMESTAMP, 4) + b"abcd"
                                                 + SPEC_TARGET_INFO),
    "no extended session security": challenge_message(flags=SPEC_FLAGS & ~nc.EXTENDED_SESSION_SECURITY),
    "no target info flag": challenge_message(flags=SPEC_FLAGS & ~nc.TARGET_INFO),
    "no 128-bit keys": challenge_message(flags=SPEC_FLAGS & ~nc.NEGOTIATE_128),
    "OEM only": challenge_message(flags=(SPEC_FLAGS & ~nc.UNICODE) | nc.OEM),
    "no key exchange": challenge_message(flags=SPEC_FLAGS & ~nc.KEY_EXCH),
    # one AV pair of 65,500 bytes: well-formed, but the client's blob echoes it, and with the
    # pairs the client adds it would not fit the AUTHENTICATE's 16-bit lengths
    "target info too large to echo": challenge_message(
        target_info=struct.pack("<HH", 3, 65500) + b"x" * 65500 + b"\0" * 4),
}


@pytest.mark.parametrize("name", HOSTILE_CHALLENGES)
def test_a_hostile_challenge_is_refused(name):
    with pytest.raises(NtlmError):
        answer(first_answer(HOSTILE_CHALLENGES[name]))


def test_target_information_too_large_to_echo_is_refused_as_such():
    with pytest.raises(NtlmError, match="too large to be echoed"):
        answer(first_answer(HOSTILE_CHALLENGES["target info too large to echo"]))


@pytest.mark.parametrize("token", [
    b"",
    b"\x00",
    b"NTLMSSP\0" + GOOD[8:],                                       # raw NTLMSSP, not SPNEGO
    first_answer(GOOD, mech=bytes.fromhex("2a864886f712010202")),  # Kerberos, never offered
    first_answer(GOOD, state=spnego.REJECT),
    first_answer(GOOD, state=spnego.ACCEPT_COMPLETED),
    spnego.encode_resp(spnego.ACCEPT_INCOMPLETE, spnego.NTLMSSP_OID),   # no CHALLENGE
    first_answer(GOOD)[:-5],                                       # DER cut short
    b"\xa1\x84\xff\xff\xff\xff",                                  # a DER length of 4 GiB
])
def test_a_hostile_first_spnego_answer_is_refused(token):
    with pytest.raises(NtlmError):
        answer(token)


def test_random_damage_to_a_challenge_never_escapes_as_another_error():
    """Each byte of a real CHALLENGE (from smbring's acceptor) overwritten, and random cuts:
    the initiator answers, or raises NtlmError, nothing else."""
    acceptor = Acceptor(lookup)
    real = spnego.parse_resp(acceptor.step(NtlmInitiator(USER, PASSWORD, "", "s").step())).response_token
    rng = random.Random(4)
    variants = [real[:n] for n in range(len(real))]
    for _ in range(3000):
        damaged = bytearray(real)
        for _ in range(rng.randint(1, 4)):
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        variants.append(bytes(damaged))
    for variant in variants:
        try:
            answer(first_answer(variant))
        except NtlmError:
            pass


def test_after_the_logon_no_token_is_taken():
    client = NtlmInitiator(USER, PASSWORD, "", "server")
    logon(Acceptor(lookup), client)
    with pytest.raises(NtlmError, match="no further token"):
        client.step(spnego.encode_resp(spnego.ACCEPT_COMPLETED))
