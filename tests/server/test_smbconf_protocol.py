"""smb.conf's protocol options against a real server: server min/max protocol, server signing,
smb encrypt ([global] and per share: off, if_required, desired, required) and the SMB3
algorithm lists, with smbclient and a raw client that offers what a weaker client would."""
from __future__ import annotations

import pytest
from smbconf_server import refused, smbconf  # noqa: F401

from servers import PASSWORD, USER
from smbring.smb import security, wire

SHAREFLAG_ENCRYPT_DATA = 0x8000


def negotiate(server, dialects, **knobs):
    c = server.raw()
    return c, c.negotiate(dialects, **knobs)


@pytest.mark.parametrize("options, offered, expected", [
    ("server min protocol = SMB3", (wire.SMB202, wire.SMB210), None),
    ("server min protocol = SMB3_00", (wire.SMB210, wire.SMB300), wire.SMB300),
    ("min protocol = SMB2_10", (wire.SMB202,), None),                  # a synonym
    ("server min protocol = NT1", (wire.SMB202,), wire.SMB202),        # SMB1 means SMB2_02 here
    ("server max protocol = SMB2", wire.DIALECTS, wire.SMB210),        # SMB2 is SMB2_10
    ("server max protocol = SMB3_02", wire.DIALECTS, wire.SMB302),
    ("server min protocol = SMB3_11\nserver max protocol = SMB3", (wire.SMB302,), None),
    ("", wire.DIALECTS, wire.SMB311),
])
def test_server_min_and_max_protocol(smbconf, options, offered, expected):
    server = smbconf(options)
    c, r = negotiate(server, offered)
    if expected is None:
        assert r.status == wire.STATUS_NOT_SUPPORTED
    else:
        assert r.status == wire.STATUS_SUCCESS and c.dialect == expected


def test_min_protocol_with_smbclient_and_an_smb1_opening(smbconf):
    server = smbconf("server min protocol = SMB3")
    assert server.smbclient("share", "ls", "-m", "SMB3").returncode == 0
    r = server.smbclient("share", "ls", "-m", "SMB2")
    assert r.returncode != 0, r.stdout
    # an SMB1 NEGOTIATE offering only 2.002 (pysmb, old clients) is dropped, not answered 2.0.2
    from raw import Disconnected
    from smbcore import smb1_negotiate_message
    c = server.raw()
    smb1 = smb1_negotiate_message((b"NT LM 0.12", b"SMB 2.002"))
    c.send_frame(len(smb1).to_bytes(4, "big") + smb1)
    with pytest.raises((Disconnected, OSError)):
        c.response_to(0)


@pytest.mark.parametrize("value, required", [("mandatory", True), ("required", True), ("forced", True),
                                             ("auto", False), ("disabled", False), ("yes", False)])
def test_server_signing(smbconf, value, required):
    server = smbconf(f"server signing = {value}")
    c, r = negotiate(server, (wire.SMB311,))
    assert bool(c.server["security_mode"] & wire.SECURITY_SIGNING_REQUIRED) is required
    if required:       # an unsigned request of the session is refused
        s = c.logon(USER, PASSWORD)
        r = c.tree_connect(s, "share", sign=False)
        assert r.status in (wire.STATUS_ACCESS_DENIED, wire.STATUS_USER_SESSION_DELETED)


def test_global_encryption_required(smbconf):
    server = smbconf("smb encrypt = required", {"share": "", "pub": "guest ok = yes"})
    assert server.smbclient("share", "ls", "-m", "SMB3").returncode == 0
    r = server.smbclient("share", "ls", "-m", "SMB2")        # cannot encrypt: no session at all
    assert refused(r), r.stdout + r.stderr
    c, _ = negotiate(server, (wire.SMB210,))
    s = c.logon(USER, PASSWORD, check=False)
    assert s.status == wire.STATUS_ACCESS_DENIED
    c, _ = negotiate(server, (wire.SMB311,))
    s = c.logon(USER, PASSWORD)
    assert s.flags & wire.SESSION_FLAG_ENCRYPT_DATA
    # the session's plaintext requests are refused
    assert c.tree_connect(s, "share", encrypt=False, sign=True).status == wire.STATUS_ACCESS_DENIED
    assert c.tree_connect(s, "share").status == wire.STATUS_SUCCESS        # sealed: fine
    # guests have no keys: refused
    assert refused(server.smbclient("pub", "ls", "-m", "SMB3", user=None))


def test_global_encryption_off_and_a_share_that_requires_it(smbconf):
    server = smbconf("server smb encrypt = off", {"share": "", "enc": "smb encrypt = required"})
    c, _ = negotiate(server, (wire.SMB311,))
    assert c.cipher == 0                                     # not negotiated at all
    assert server.smbclient("share", "ls", "-m", "SMB3").returncode == 0
    assert refused(server.smbclient("enc", "ls", "-m", "SMB3"))   # so this share is out of reach


def test_share_encryption_desired_and_required(smbconf):
    server = smbconf("", {"des": "smb encrypt = desired", "req": "smb encrypt = required",
                          "opt": "smb encrypt = if_required"})
    c, _ = negotiate(server, (wire.SMB311,))
    s = c.logon(USER, PASSWORD)
    for share, flagged in (("des", True), ("req", True), ("opt", False)):
        r = c.tree_connect(s, share)
        assert r.status == wire.STATUS_SUCCESS
        assert bool(s.trees[r.header.tree_id] & SHAREFLAG_ENCRYPT_DATA) is flagged, share
    # a client that cannot encrypt: desired lets it in, required does not
    c, _ = negotiate(server, (wire.SMB210,))
    s = c.logon(USER, PASSWORD)
    assert c.tree_connect(s, "des").status == wire.STATUS_SUCCESS
    assert c.tree_connect(s, "req").status == wire.STATUS_ACCESS_DENIED
    for share in ("des", "req"):
        assert server.smbclient(share, "ls", "-m", "SMB3").returncode == 0


def test_encryption_and_signing_algorithm_lists(smbconf):
    server = smbconf("server smb3 encryption algorithms = AES-256-GCM\n"
                     "server smb3 signing algorithms = AES-128-CMAC, HMAC-SHA256")
    c, _ = negotiate(server, (wire.SMB311,))
    assert c.cipher == security.AES_256_GCM and c.signing_algorithm == security.AES_CMAC
    c, _ = negotiate(server, (wire.SMB311,), ciphers=(security.AES_128_GCM, security.AES_128_CCM))
    assert c.cipher == 0                       # nothing in common: no encryption
    c, _ = negotiate(server, (wire.SMB302,))   # 3.0.x has only AES-128-CCM, not allowed here
    assert c.cipher == 0 and not c.server["capabilities"] & wire.CAP_ENCRYPTION
    assert server.smbclient("share", "ls", "-m", "SMB3", "--option=clientsmbencrypt=required").returncode == 0
