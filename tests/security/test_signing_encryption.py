"""Signing and negotiation integrity: a signature that is there is checked, SMB 3.1.1 signs what
it must, a signed session is not re-authenticated by an unsigned request, a connection
negotiates once, and FSCTL_VALIDATE_NEGOTIATE_INFO catches a tampered NEGOTIATE."""
import os
import struct

import pytest

from logon import neg_token_init, ntlm_negotiate, V1_FLAGS
from raw import FID_ANY, FSCTL_VALIDATE_NEGOTIATE_INFO, Disconnected, answer_or_drop, validate_negotiate_body
from smbring.smb import security, wire

ORIGINAL = b"content before the forged request"


@pytest.fixture(scope="module")
def server(servers):
    return servers()


FORGERIES = {"wrong-key": {"signing_key": os.urandom(16)}, "bit-flipped-after-signing": {"flip_bit": True}}


@pytest.mark.parametrize("dialect", [wire.SMB311, wire.SMB302, wire.SMB210], ids=hex)
@pytest.mark.parametrize("forgery", FORGERIES)
def test_bad_signature_is_refused_on_a_session_that_does_not_require_signing(server, forgery, dialect):
    path = server.path("rw") / f"bad-signature-{forgery}-{dialect:x}.txt"
    path.write_bytes(ORIGINAL)
    c, s = server.logon((dialect,))        # signing enabled, required by neither side
    rw = c.tree(s, "rw")
    fid = rw.open(path.name, wire.GENERIC_READ | wire.GENERIC_WRITE)
    r = answer_or_drop(lambda: rw.write(fid, b"FORGED", sign=True, **FORGERIES[forgery]))
    assert r is None or r.status == wire.STATUS_ACCESS_DENIED, r
    assert path.read_bytes() == ORIGINAL


SEALS = {"3.1.1-AES-128-GCM": (wire.SMB311, security.AES_128_GCM),
         "3.1.1-AES-128-CCM": (wire.SMB311, security.AES_128_CCM),
         "3.1.1-AES-256-GCM": (wire.SMB311, security.AES_256_GCM),
         "3.1.1-AES-256-CCM": (wire.SMB311, security.AES_256_CCM),
         "3.0.2-AES-128-CCM": (wire.SMB302, security.AES_128_CCM)}


@pytest.mark.parametrize("seal", SEALS)
def test_sealed_request_runs_and_a_tampered_one_drops_the_connection(server, seal):
    dialect, cipher = SEALS[seal]
    path = server.path("enc") / f"sealed-{seal}.txt"
    path.write_bytes(ORIGINAL)
    c = server.client()
    c.negotiate((dialect,), ciphers=(cipher,))
    assert c.cipher == cipher
    enc = c.tree(c.logon(server.user, server.password), "enc")
    fid = enc.open(path.name, wire.GENERIC_READ | wire.GENERIC_WRITE)
    r = enc.read(fid, 64)
    assert r.encrypted and ORIGINAL in r.raw, r
    with pytest.raises(Disconnected):
        enc.write(fid, b"TAMPERED", flip_bit=True)
    assert path.read_bytes() == ORIGINAL


def test_unsigned_tree_connect_is_refused_on_an_authenticated_311_session(server):
    c, s = server.logon((wire.SMB311,))
    r = answer_or_drop(lambda: c.tree_connect(s, "rw", sign=False))
    assert r is None or r.status == wire.STATUS_ACCESS_DENIED, r
    if r is not None:
        assert c.tree_connect(s, "rw").status == wire.STATUS_SUCCESS, "a signed one still connects"


REAUTH_TOKENS = {"ntlm-negotiate": neg_token_init(ntlm_negotiate(V1_FLAGS)), "garbage": b"\x60\x03junk"}


@pytest.mark.parametrize("dialect", [wire.SMB311, wire.SMB302], ids=hex)
@pytest.mark.parametrize("token", REAUTH_TOKENS)
def test_unsigned_reauthentication_of_a_signed_session_is_refused_and_the_session_lives_on(server, token, dialect):
    c, s = server.logon((dialect,), security_mode=wire.SECURITY_SIGNING_ENABLED | wire.SECURITY_SIGNING_REQUIRED)
    r = c.session_setup(s, REAUTH_TOKENS[token], sign=False)
    assert r.status not in (wire.STATUS_SUCCESS, wire.STATUS_MORE_PROCESSING_REQUIRED), r
    assert c.tree_connect(s, "rw").status == wire.STATUS_SUCCESS, "the session was lost"


@pytest.mark.parametrize("dialect", [wire.SMB311, wire.SMB302], ids=hex)
def test_a_refused_reauthentication_is_answered_signed_and_a_forged_one_ends_nothing(server, dialect):
    """A re-authentication whose signature verified is refused (a token that is none) with an
    answer signed with the session's key, as smbd signs it, and the session ends. One signed
    with a key that is not the session's is refused ACCESS_DENIED before its token is read,
    and the session lives on; its answer, of that fixed content, is signed too, as smbd signs
    it on the session's own channel (Samba's client checks it with the session's key: the
    smbtorture smb2.session bind_negative_smb3sign tests)."""
    c, s = server.logon((dialect,))
    r = c.session_setup(s, REAUTH_TOKENS["garbage"], signing_key=os.urandom(16))
    assert r.status == wire.STATUS_ACCESS_DENIED, r
    assert r.header.flags & wire.FLAGS_SIGNED and security.verify(c.sign_algorithm(), s.signing_key, r.raw), r
    assert c.tree_connect(s, "rw").status == wire.STATUS_SUCCESS, "the session was lost"
    r = c.session_setup(s, REAUTH_TOKENS["garbage"])
    assert r.status not in (wire.STATUS_SUCCESS, wire.STATUS_MORE_PROCESSING_REQUIRED), r
    assert r.header.flags & wire.FLAGS_SIGNED and security.verify(c.sign_algorithm(), s.signing_key, r.raw), r
    assert c.tree_connect(s, "rw").status == wire.STATUS_USER_SESSION_DELETED


def test_second_smb2_negotiate_disconnects(server):
    c = server.client()
    assert c.negotiate().status == wire.STATUS_SUCCESS
    with pytest.raises(Disconnected):
        c.negotiate()


def test_smb1_negotiate_after_smb2_negotiate_disconnects(server):
    c = server.client()
    assert c.negotiate().status == wire.STATUS_SUCCESS
    c.smb1_negotiate()
    with pytest.raises(Disconnected):
        c.recv_frame()


# VALIDATE_NEGOTIATE_INFO input: what the client's NEGOTIATE said, one field changed
TAMPERED = {
    "capabilities": lambda sent, _dialect: dict(sent, capabilities=sent["capabilities"] ^ wire.CAP_DFS),
    "guid": lambda sent, _dialect: dict(sent, guid=bytes(b ^ 0xFF for b in sent["guid"])),
    "security-mode": lambda sent, _dialect: dict(
        sent, security_mode=sent["security_mode"] ^ wire.SECURITY_SIGNING_REQUIRED),
    # without the dialect the connection runs, whichever way the server compares the lists
    "dialects": lambda sent, dialect: dict(sent, dialects=[d for d in sent["dialects"] if d != dialect]),
}
VNI_DIALECTS = pytest.mark.parametrize("dialect", [wire.SMB300, wire.SMB302], ids=hex)


def validate_negotiate(server, dialect, tamper=None):
    """A signed session of `dialect` and an IPC$ tree, and the VALIDATE_NEGOTIATE_INFO input
    for it: what our NEGOTIATE sent, tampered with or not."""
    offered = [d for d in (wire.SMB202, wire.SMB210, wire.SMB300, wire.SMB302) if d <= dialect]
    c, s = server.logon(offered)
    assert c.dialect == dialect
    sent = tamper(c.offered, dialect) if tamper else c.offered
    body = validate_negotiate_body(sent["capabilities"], sent["guid"], sent["security_mode"], sent["dialects"])
    return c, c.tree(s, "IPC$"), body


@VNI_DIALECTS
@pytest.mark.parametrize("field", TAMPERED)
def test_validate_negotiate_info_that_differs_from_negotiate_disconnects(server, dialect, field):
    _c, ipc, body = validate_negotiate(server, dialect, TAMPERED[field])
    with pytest.raises(Disconnected):
        ipc.ioctl(FID_ANY, FSCTL_VALIDATE_NEGOTIATE_INFO, body, max_output=24)


@VNI_DIALECTS
def test_validate_negotiate_info_that_matches_gets_the_servers_values_signed(server, dialect):
    c, ipc, body = validate_negotiate(server, dialect)
    r = ipc.ioctl(FID_ANY, FSCTL_VALIDATE_NEGOTIATE_INFO, body, max_output=24)
    assert r.status == wire.STATUS_SUCCESS and r.signature_ok, r
    assert struct.unpack("<I16sHH", r.buffer(32, "<II")) == (
        c.server["capabilities"], c.server["guid"], c.server["security_mode"], dialect)
