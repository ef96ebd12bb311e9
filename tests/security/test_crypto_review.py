"""Adversarial review of signing and encryption: requests that try to get past `server signing
= mandatory` or `smb encrypt = required` (global and per share) unsigned, plain, with another
session's key or algorithm, or inside a forged, replayed or mislabelled transform header; and
negotiations that try to get a weaker protocol than the server allows."""
import os
import struct

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESCCM, AESGCM

from raw import Disconnected, NoAnswer, answer_or_drop
from smbcore import (create_body, negotiate_body, negotiate_contexts, read_body,
                     tree_connect_body)
from smbring.smb import security, wire

CONTENT = b"the bytes only a sealed or signed answer may carry"
FSCTL_GET_OBJECT_ID = 0x0009009C


@pytest.fixture(scope="module")
def signing(servers):
    return servers({"server signing": "mandatory"})


@pytest.fixture(scope="module")
def sealing(servers):
    return servers({"server smb encrypt": "required"})


@pytest.fixture(scope="module")
def plain(servers):
    return servers()


def _file(server, share: str, name: str) -> str:
    (server.path(share) / name).write_bytes(CONTENT)
    return name


# (the answer to a request the session's key did not protect is neither signed nor sealed with
# it: someone on the path who sent the request could pass the answer off as the server's answer
# to one of the client's own requests, its MessageId and command chosen)
NOT_SIGNED = "the session's key signed the answer to a request it did not protect"

# -- server signing = mandatory --------------------------------------------------------------

UNSIGNED = {
    "read": lambda t, fid: t.read(fid, 64, sign=False),
    "write": lambda t, fid: t.write(fid, b"FORGED", sign=False),
    "create": lambda t, fid: t.create("other.txt", wire.GENERIC_WRITE, wire.FILE_OVERWRITE_IF, sign=False),
    "query_directory": lambda t, fid: t.query_directory(fid, sign=False),
    "ioctl": lambda t, fid: t.ioctl(fid, FSCTL_GET_OBJECT_ID, sign=False),
    "set_info-eof": lambda t, fid: t.set_info(fid, 1, 20, struct.pack("<Q", 0), sign=False),
    "flush": lambda t, fid: t.flush(fid, sign=False),
    "close": lambda t, fid: t.close(fid, sign=False),
    "lock": lambda t, fid: t.lock(fid, [(0, 1, 2)], sign=False),
    "tree_disconnect": lambda t, fid: t.disconnect(sign=False),
    "logoff": lambda t, fid: t.client.logoff(t.session, sign=False),
}


@pytest.mark.parametrize("dialect", [wire.SMB311, wire.SMB302, wire.SMB210], ids=hex)
@pytest.mark.parametrize("command", UNSIGNED)
def test_every_unsigned_request_is_refused_under_mandatory_signing(signing, command, dialect):
    name = _file(signing, "rw", f"unsigned-{command}-{dialect:x}.txt")
    c, s = signing.logon((dialect,))
    rw = c.tree(s, "rw")
    fid = rw.open(name, wire.GENERIC_READ | wire.GENERIC_WRITE)
    r = answer_or_drop(lambda: UNSIGNED[command](rw, fid))
    assert r is None or r.status == wire.STATUS_ACCESS_DENIED, r
    assert r is None or not r.header.flags & wire.FLAGS_SIGNED, NOT_SIGNED
    assert CONTENT not in (r.raw if r is not None else b"")
    if r is not None:   # nothing was done: the handle, tree and session are as they were
        assert rw.read(fid, 64).raw.endswith(CONTENT)
    assert (signing.path("rw") / name).read_bytes() == CONTENT
    assert not (signing.path("rw") / "other.txt").exists()


def test_a_signed_first_part_does_not_cover_an_unsigned_related_second(signing):
    """The second part reuses the first's SessionId and TreeId (related) but has no signature."""
    name = _file(signing, "rw", "related-unsigned.txt")
    c, s = signing.logon()
    rw = c.tree(s, "rw")
    first = rw.message(wire.CREATE, create_body(name, wire.GENERIC_READ, wire.FILE_OPEN, 0))
    second = rw.message(wire.READ, read_body(b"\xff" * 16, 64), flags=wire.FLAGS_RELATED, payload=64)
    first += b"\0" * (wire.pad8(len(first)) - len(first))
    struct.pack_into("<I", first, 20, len(first))
    security.apply_signature(c.sign_algorithm(), s.signing_key, first)     # the first part only
    c.send_frame(len(first + second).to_bytes(4, "big") + bytes(first + second))
    c.response_to(wire.Header.parse(first).message_id)
    r = c.response_to(wire.Header.parse(second).message_id)
    # (a related request whose session check fails: INVALID_PARAMETER, MS-SMB2 3.3.5.2.7.2)
    assert r.status in (wire.STATUS_ACCESS_DENIED, wire.STATUS_INVALID_PARAMETER), r
    assert CONTENT not in r.raw


def test_a_signature_with_another_sessions_key_is_refused(signing):
    name = _file(signing, "rw", "other-session-key.txt")
    c, s = signing.logon()
    other = c.logon(signing.user, signing.password)         # the same user's second session
    rw = c.tree(s, "rw")
    fid = rw.open(name, wire.GENERIC_READ | wire.GENERIC_WRITE)
    r = answer_or_drop(lambda: rw.read(fid, 64, signing_key=other.signing_key))
    assert r is None or r.status == wire.STATUS_ACCESS_DENIED and CONTENT not in r.raw, r
    assert r is None or not r.header.flags & wire.FLAGS_SIGNED, NOT_SIGNED


@pytest.mark.parametrize("wrong", [security.AES_CMAC, security.HMAC_SHA256])
def test_a_gmac_session_signed_with_another_algorithm_is_refused(signing, wrong):
    name = _file(signing, "rw", f"wrong-algorithm-{wrong}.txt")
    c, s = signing.logon()
    assert c.signing_algorithm == security.AES_GMAC
    rw = c.tree(s, "rw")
    fid = rw.open(name)
    r = answer_or_drop(lambda: rw.read(fid, 64, algorithm=wrong))
    assert r is None or r.status == wire.STATUS_ACCESS_DENIED and CONTENT not in r.raw, r
    assert r is None or not r.header.flags & wire.FLAGS_SIGNED, NOT_SIGNED


def test_a_logoff_answer_is_signed(signing):
    """The session ends with the LOGOFF; its answer is still signed with the session's key
    (MS-SMB2 3.3.4.1.1), so a forged LOGOFF success cannot be told from the server's."""
    c, s = signing.logon()
    r = c.logoff(s)
    assert r.status == wire.STATUS_SUCCESS
    assert r.header.flags & wire.FLAGS_SIGNED, "the LOGOFF answer was sent unsigned"
    assert r.signature_ok


def test_a_forged_signed_echo_gets_no_answer_signed_with_the_sessions_key(signing):
    """An ECHO needs no session; one naming a session, SIGNED flag set, with a signature that
    does not verify must not have its answer signed with that session's key (a signing oracle)."""
    c, s = signing.logon()
    r = answer_or_drop(lambda: c.echo(session=s, signing_key=os.urandom(16)))
    assert r is None or r.status == wire.STATUS_ACCESS_DENIED, r
    assert r is None or not r.header.flags & wire.FLAGS_SIGNED, NOT_SIGNED
    assert c.echo(session=s).header.flags & wire.FLAGS_SIGNED, "a signed ECHO's answer is signed"


# -- smb encrypt = required -------------------------------------------------------------------

def _plain_requests(t, fid):
    return {
        "read": lambda: t.read(fid, 64, encrypt=False),
        "read-signed": lambda: t.read(fid, 64, encrypt=False, sign=True),
        "ioctl": lambda: t.ioctl(fid, FSCTL_GET_OBJECT_ID, encrypt=False, sign=True),
        "query_directory": lambda: t.query_directory(fid, encrypt=False, sign=True),
        "create": lambda: t.create("x.txt", encrypt=False, sign=True),
        "write": lambda: t.write(fid, b"FORGED", encrypt=False, sign=True),
        "tree_connect": lambda: t.client.tree_connect(t.session, "rw", encrypt=False, sign=True),
    }


PLAIN = list(_plain_requests(None, None))


@pytest.mark.parametrize("request_kind", PLAIN)
@pytest.mark.parametrize("where", ["global", "share"])
def test_a_plain_request_on_an_encrypted_session_or_share_is_refused(sealing, plain, where, request_kind):
    server, share = (sealing, "rw") if where == "global" else (plain, "enc")
    name = _file(server, share, f"plain-{where}-{request_kind}.txt")
    c, s = server.logon()
    t = c.tree(s, share)
    fid = t.open(name, wire.GENERIC_READ | wire.GENERIC_WRITE)
    if request_kind == "query_directory":
        fid = t.open("", wire.GENERIC_READ, options=1)
    if request_kind == "tree_connect" and where == "share":
        pytest.skip("the session is not encrypted: its other trees are reached in plain")
    r = answer_or_drop(_plain_requests(t, fid)[request_kind])
    assert r is None or r.status == wire.STATUS_ACCESS_DENIED, r
    assert r is None or CONTENT not in r.raw and name.encode("utf-16-le") not in r.raw
    if where == "global":   # (a plain share's session: its answers are signed where asked)
        assert r is None or not r.encrypted and not r.header.flags & wire.FLAGS_SIGNED, NOT_SIGNED
    assert (server.path(share) / name).read_bytes() == CONTENT


def test_a_plain_compound_cannot_reach_an_encrypted_tree_behind_a_plain_tree_connect(plain):
    name = _file(plain, "enc", "behind-tree-connect.txt")
    c, s = plain.logon()
    enc = c.tree(s, "enc")
    fid = enc.open(name)
    connect = c.message(wire.TREE_CONNECT, tree_connect_body("\\\\127.0.0.1\\rw"), session=s)
    read = c.message(wire.READ, read_body(fid, 64), session=s, tree_id=enc.id, payload=64)
    connected, r = c.compound([connect, read], encrypt=False, sign=True)
    assert connected.status == wire.STATUS_SUCCESS
    assert r.status == wire.STATUS_ACCESS_DENIED and CONTENT not in r.raw, r


def _seal(cipher: int, key: bytes, session_id: int, plaintext: bytes, *, flags: int = 1,
          size: int | None = None, nonce: bytes | None = None) -> bytes:
    """A transform header and ciphertext built field by field (what security.encrypt makes,
    with any of them forged), authenticated over the forged fields."""
    gcm = cipher in (security.AES_128_GCM, security.AES_256_GCM)
    nonce = nonce or os.urandom(12 if gcm else 11)
    size = len(plaintext) if size is None else size
    aad = nonce.ljust(16, b"\0") + struct.pack("<IHHQ", size, 0, flags, session_id)
    sealed = (AESGCM(key) if gcm else AESCCM(key, tag_length=16)).encrypt(nonce, plaintext, aad)
    return wire.TRANSFORM_ID + sealed[-16:] + aad + sealed[:-16]


def _sealed_read(c, s, enc, fid, **forge) -> bytes:
    msg = enc.message(wire.READ, read_body(fid, 64), payload=64)
    sealer = forge.pop("sealer", s)
    return _seal(forge.pop("cipher", c.cipher), sealer.encrypt_key, forge.pop("session_id", sealer.id),
                 bytes(msg), **forge)


def _dropped(c, frame: bytes) -> bool:
    c.send_frame(len(frame).to_bytes(4, "big") + frame)
    try:
        while True:
            c.recv_frame()
    except Disconnected:
        return True
    except NoAnswer:
        return False


FORGED_TRANSFORMS = {
    "flags-0": {"flags": 0},
    "flags-2": {"flags": 2},
    "size-larger": {"size_delta": 1},
    "size-smaller": {"size_delta": -1},
    "other-sessions-id-own-key": {"other": "id"},
    "other-sessions-key-own-id": {"other": "key"},
    "ccm-on-gcm": {"cipher": security.AES_128_CCM},
}


def _two_sessions(plain, name: str):
    """A client of 3.1.1 sealing with AES-128-GCM, two sessions of it, the first's tree of the
    encrypted share and an open of `name` there: (client, session, other session, tree, FileId)."""
    c = plain.client()
    c.negotiate((wire.SMB311,), ciphers=(security.AES_128_GCM,))
    s = c.logon(plain.user, plain.password)
    other = c.logon(plain.user, plain.password)
    enc = c.tree(s, "enc")
    return c, s, other, enc, enc.open(name)


@pytest.mark.parametrize("forgery", FORGED_TRANSFORMS)
def test_a_forged_transform_header_drops_the_connection(plain, forgery):
    c, s, other, enc, fid = _two_sessions(plain, _file(plain, "enc", f"transform-{forgery}.txt"))
    forge = dict(FORGED_TRANSFORMS[forgery])
    if "size_delta" in forge:
        msg = bytes(enc.message(wire.READ, read_body(fid, 64), payload=64))
        frame = _seal(c.cipher, s.encrypt_key, s.id, msg, size=len(msg) + forge.pop("size_delta"))
    else:
        which = forge.pop("other", None)
        if which == "key":      # the other session's key, this one's SessionId
            forge["sealer"], forge["session_id"] = other, s.id
        if which == "id":       # this session's key, the other's SessionId
            forge["session_id"] = other.id
        frame = _sealed_read(c, s, enc, fid, **forge)
    c.sock.settimeout(3)        # for the forged frame alone: the logons above may take longer
    assert _dropped(c, frame)


def test_a_request_sealed_with_another_sessions_key_and_id_reaches_nothing(plain):
    """A READ of session A's file sealed with session B's key under B's SessionId (two sessions
    of one client): the frame is B's, which may not act for A. It is answered ACCESS_DENIED,
    sealed with B's key, as smbd answers it, and nothing of the file is read; the connection
    and A's open go on."""
    c, s, other, enc, fid = _two_sessions(plain, _file(plain, "enc", "transform-other-session.txt"))
    frame = _sealed_read(c, s, enc, fid, sealer=other)
    c.send_frame(len(frame).to_bytes(4, "big") + frame)
    [r] = c.parse(c.recv_frame())
    assert r.status == wire.STATUS_ACCESS_DENIED and r.encrypted, r
    assert CONTENT not in r.raw
    read = enc.read(fid, 64)
    assert read.status == wire.STATUS_SUCCESS and CONTENT in read.raw, read


def test_a_replayed_transform_drops_the_connection_and_is_not_done_again(plain):
    c, s = plain.logon()
    enc = c.tree(s, "enc")
    fid = enc.open("replayed.txt", wire.GENERIC_WRITE | wire.GENERIC_READ, wire.FILE_OVERWRITE_IF)
    frame = c.send([enc.message(wire.WRITE, struct.pack("<HHIQ16sIIHHI", 49, 112, 4, 0, fid, 0, 0, 0, 0, 0)
                                + b"once", payload=4)])
    assert c.parse(c.recv_frame())[0].status == wire.STATUS_SUCCESS
    c.sock.settimeout(3)
    assert _dropped(c, frame[4:])     # the same nonce, the same MessageId
    assert (plain.path("enc") / "replayed.txt").read_bytes() == b"once"


def test_an_encrypted_negotiate_or_session_setup_drops_the_connection(plain):
    c, s = plain.logon()
    c.sock.settimeout(3)
    negotiate = c.message(wire.NEGOTIATE, negotiate_body((wire.SMB311,), 1, 0, os.urandom(16),
                                                         negotiate_contexts((2,), ())))
    assert _dropped(c, _seal(c.cipher, s.encrypt_key, s.id, bytes(negotiate)))
    c2 = plain.client(timeout=3)
    c2.negotiate((wire.SMB311,))
    assert _dropped(c2, _seal(c.cipher, s.encrypt_key, s.id, bytes(c2.message(wire.SESSION_SETUP, b"\0" * 32))))


def test_a_pending_notify_on_an_encrypted_session_ends_encrypted_at_logoff(sealing):
    """What the server sends after a LOGOFF, for requests still pending, is sealed too."""
    c, s = sealing.logon()
    rw = c.tree(s, "rw")
    d = rw.open("", wire.GENERIC_READ, options=1)
    pending = rw.change_notify(d)
    assert pending.status == wire.STATUS_PENDING and pending.encrypted
    msg = c.message(wire.LOGOFF, struct.pack("<HH", 4, 0), session=s)
    c.send([msg])
    c.sock.settimeout(3)
    frames = []
    try:
        while True:
            frame = c.recv_frame()
            frames.append(frame)
    except (NoAnswer, Disconnected):
        pass
    assert frames and all(f[:4] == wire.TRANSFORM_ID for f in frames), [f[:8] for f in frames]


# -- negotiation --------------------------------------------------------------------------------

def test_311_without_a_preauth_integrity_context_is_refused(plain):
    """MS-SMB2 3.3.5.4: exactly one PREAUTH_INTEGRITY_CAPABILITIES, else INVALID_PARAMETER."""
    c = plain.client(timeout=3)
    contexts = negotiate_contexts((security.AES_128_GCM,), (security.AES_GMAC,))[1:]
    msg = c.message(wire.NEGOTIATE, negotiate_body((wire.SMB311,), 1, 0, os.urandom(16), contexts))
    r = answer_or_drop(lambda: (c.send([msg]), c.response_to(0))[1])
    assert r is None or r.status == wire.STATUS_INVALID_PARAMETER, r


def test_311_preauth_context_without_sha512_is_refused(plain):
    c = plain.client(timeout=3)
    ctx = struct.pack("<HHI", wire.PREAUTH_INTEGRITY_CAPABILITIES, 38, 0) + \
        struct.pack("<HHH", 1, 32, 0x0002) + os.urandom(32)
    msg = c.message(wire.NEGOTIATE, negotiate_body((wire.SMB311,), 1, 0, os.urandom(16), [ctx]))
    r = answer_or_drop(lambda: (c.send([msg]), c.response_to(0))[1])
    assert r is None or r.status == wire.STATUS_SMB_NO_PREAUTH_INTEGRITY_HASH_OVERLAP, r


@pytest.mark.parametrize("twice", ["encryption", "signing"])
def test_311_with_a_context_twice_is_refused(plain, twice):
    c = plain.client(timeout=3)
    contexts = negotiate_contexts((security.AES_128_GCM,), (security.AES_GMAC,))
    extra = contexts[1] if twice == "encryption" else contexts[2]
    contexts = contexts[:-1] + [contexts[-1] + b"\0" * (wire.pad8(len(contexts[-1])) - len(contexts[-1])), extra]
    msg = c.message(wire.NEGOTIATE, negotiate_body((wire.SMB311,), 1, 0, os.urandom(16), contexts))
    r = answer_or_drop(lambda: (c.send([msg]), c.response_to(0))[1])
    assert r is None or r.status == wire.STATUS_INVALID_PARAMETER, r


@pytest.mark.parametrize("dialect", [wire.SMB311, wire.SMB302], ids=hex)
def test_no_common_cipher_under_required_encryption_gets_no_session(sealing, dialect):
    c = sealing.client()
    r = c.negotiate((dialect,), ciphers=(), capabilities=wire.CAP_LARGE_MTU)
    assert r.status == wire.STATUS_SUCCESS and not c.cipher
    ctx, s, r = c.begin_logon(sealing.user, sealing.password)
    s = c.finish_logon(ctx, s, r, check=False)
    assert s.status == wire.STATUS_ACCESS_DENIED, s.last


def test_a_dialect_below_server_min_protocol_is_refused(servers):
    server = servers({"server min protocol": "SMB3"})
    c = server.client()
    assert c.negotiate((wire.SMB210, wire.SMB202)).status == wire.STATUS_NOT_SUPPORTED
    c2 = server.client(timeout=3)
    c2.smb1_negotiate()
    with pytest.raises((Disconnected, NoAnswer)):
        c2.recv_frame() and c2.negotiate((wire.SMB210,)) and c2.recv_frame()


def test_a_create_held_for_a_break_ends_encrypted_after_its_logoff(sealing):
    """A CREATE waits for another client's oplock break; its session logs off meanwhile. What
    the server then sends for it (if anything) is sealed, as everything of that session."""
    name = _file(sealing, "rw", "held-create.txt")
    holder, hs = sealing.logon()
    ht = holder.tree(hs, "rw")
    r = ht.request(wire.CREATE, create_body(name, wire.GENERIC_READ | wire.GENERIC_WRITE, wire.FILE_OPEN, 0,
                                            oplock=9))      # a batch oplock
    assert r.status == wire.STATUS_SUCCESS
    c, s = sealing.logon()
    t = c.tree(s, "rw")
    msg = t.message(wire.CREATE, create_body(name, wire.GENERIC_READ | wire.GENERIC_WRITE, wire.FILE_OPEN, 0))
    c.send([msg])
    pending = c.response_to(wire.Header.parse(msg).message_id)
    assert pending.status == wire.STATUS_PENDING and pending.encrypted, pending
    c.send([c.message(wire.LOGOFF, struct.pack("<HH", 4, 0), session=s)])
    frames = [c.recv_frame()]           # the LOGOFF's answer (and whatever comes with it)
    holder.sock.settimeout(3)
    holder.parse(holder.recv_frame())   # the break
    ht.close(r.file_id)
    c.sock.settimeout(3)
    try:
        while True:
            frames.append(c.recv_frame())
    except (NoAnswer, Disconnected):
        pass
    assert all(f[:4] == wire.TRANSFORM_ID for f in frames), [f[:8] for f in frames]


LEASE = (b"RqLs", struct.pack("<16sIIQ", os.urandom(16), 7, 0, 0))     # read, handle, write


@pytest.mark.parametrize("kind", ["oplock", "lease"])
@pytest.mark.parametrize("where", ["global", "share"])
def test_a_break_for_an_open_of_an_encrypted_session_or_share_is_sealed(sealing, plain, where, kind):
    server, share = (sealing, "rw") if where == "global" else (plain, "enc")
    name = _file(server, share, f"break-{where}-{kind}.txt")
    holder, hs = server.logon()
    ht = holder.tree(hs, share)
    asked = dict(oplock=9) if kind == "oplock" else dict(oplock=0xFF, contexts=[LEASE])
    r = ht.request(wire.CREATE, create_body(name, wire.GENERIC_READ | wire.GENERIC_WRITE, wire.FILE_OPEN, 0,
                                            **asked))
    assert r.status == wire.STATUS_SUCCESS and r.raw[66] == asked["oplock"], r
    c, s = server.logon()
    t = c.tree(s, share)
    c.send([t.message(wire.CREATE, create_body(name, wire.GENERIC_READ, wire.FILE_OPEN, 0))])
    holder.sock.settimeout(3)
    frame = holder.recv_frame()
    assert frame[:4] == wire.TRANSFORM_ID, "the oplock break went out in clear"
