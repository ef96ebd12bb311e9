"""Signed and sealed READs and WRITEs of megabytes, against a real server.

Every READ response is checked here with primitives taken straight from `cryptography` and
`hmac`, following MS-SMB2 3.1.4.1 (the signature over the message as received, its signature
field zeroed) and 3.1.4.3 (the transform header's AEAD), not with smbring's own code: the
data is byte-exact and signed over exactly the bytes sent, through every read path and VFS
module stack. A large request altered in its last byte (the part of a message a MAC computed
in pieces reads last) is refused.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import struct

import pytest
from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.ciphers.aead import AESCCM, AESGCM

from raw import Disconnected
from smbcore import read_body
from smbring.smb import security, wire

MAX_IO = 8 << 20
SIZE = MAX_IO + 123457
DATA = hashlib.shake_256(b"signed reads").digest(SIZE)


def reference_signature(algorithm: int, key: bytes, message: bytes, zeroed: bool = True) -> bytes:
    """The signature MS-SMB2 3.1.4.1 defines (`zeroed` False: a wrong one, computed over the
    signature field as it is)."""
    data = bytearray(message)
    if zeroed:
        data[48:64] = bytes(16)
    if algorithm == security.HMAC_SHA256:
        return hmac.new(key, bytes(data), hashlib.sha256).digest()[:16]
    if algorithm == security.AES_CMAC:
        c = cmac.CMAC(algorithms.AES(key))
        c.update(bytes(data))
        return c.finalize()
    flags, command = struct.unpack_from("<IH", data, 16)[0], struct.unpack_from("<H", data, 12)[0]
    role = (1 if flags & wire.FLAGS_SERVER_TO_REDIR else 0) | (2 if command == wire.CANCEL else 0)
    return AESGCM(key).encrypt(bytes(data[24:32]) + struct.pack("<I", role), b"", bytes(data))


def reference_unseal(cipher: int, key: bytes, frame: bytes) -> bytes:
    assert frame[:4] == wire.TRANSFORM_ID
    tag, nonce, size = frame[4:20], frame[20:36], struct.unpack_from("<I", frame, 36)[0]
    assert size == len(frame) - 52
    if cipher in (security.AES_128_GCM, security.AES_256_GCM):
        return AESGCM(key).decrypt(nonce[:12], frame[52:] + tag, frame[20:52])
    return AESCCM(key, tag_length=16).decrypt(nonce[:11], frame[52:] + tag, frame[20:52])


def logged_on(server, dialects, **negotiate):
    c = server.client(timeout=30)
    assert c.negotiate(dialects, **negotiate).status == wire.STATUS_SUCCESS
    session = c.logon(server.user, server.password)
    c.grow_credits(2 * (MAX_IO >> 16))
    return c, session


def read_raw(c, tree, fid: bytes, length: int, offset: int) -> bytes:
    """Sends a READ and returns its response frame as received (the client's accounting kept)."""
    msg = tree.message(wire.READ, read_body(fid, length, offset), payload=length)
    c.send([msg])
    frame = c.recv_frame()
    c.parse(frame)
    return frame


def check_signed_read(c, session, tree, fid, length: int, offset: int) -> None:
    frame = read_raw(c, tree, fid, length, offset)
    hdr = wire.Header.parse(frame[:64])
    assert hdr.status == wire.STATUS_SUCCESS and hdr.flags & wire.FLAGS_SIGNED
    assert frame[48:64] == reference_signature(c.sign_algorithm(), session.signing_key, frame)
    data_offset, _r, count = struct.unpack_from("<BBI", frame, 66)
    assert count == min(length, SIZE - offset)
    assert frame[data_offset:data_offset + count] == DATA[offset:offset + count]
    assert len(frame) == data_offset + count


@pytest.mark.parametrize("read_path,vfs", [
    ("copy", ""), ("mmap", ""), ("splice", ""), ("zc", ""), ("auto", ""),
    ("splice", "threadpool"), ("copy", "posix"),
])
def test_signed_reads_are_byte_exact_and_signed_over_the_bytes_sent(servers, read_path, vfs):
    options = {"read path": read_path} | ({"vfs objects": vfs} if vfs else {})
    server = servers(options)
    (server.path("rw") / "big.bin").write_bytes(DATA)
    c, session = logged_on(server, (wire.SMB311,))
    assert c.sign_algorithm() == security.AES_GMAC
    tree = c.tree(session, "rw")
    fid = tree.open("big.bin")
    for length, offset in ((MAX_IO, 777), (MAX_IO, SIZE - 5000), (1 << 20, 0), (4096, 3), (100, 0)):
        check_signed_read(c, session, tree, fid, length, offset)


@pytest.mark.parametrize("dialect,offered,expected", [
    (wire.SMB311, (security.AES_GMAC, security.AES_CMAC), security.AES_GMAC),
    (wire.SMB311, (security.AES_CMAC,), security.AES_CMAC),
    (wire.SMB311, (security.HMAC_SHA256,), security.HMAC_SHA256),
    (wire.SMB302, (), security.AES_CMAC),
    (wire.SMB210, (), security.HMAC_SHA256),
])
def test_every_signing_algorithm_signs_large_reads_and_checks_large_writes(servers, dialect, offered,
                                                                           expected):
    server = servers()
    (server.path("rw") / "big.bin").write_bytes(DATA)
    negotiate = {"signing_algorithms": offered} if dialect == wire.SMB311 else {}
    c, session = logged_on(server, (dialect,), **negotiate)
    assert c.sign_algorithm() == expected
    tree = c.tree(session, "rw")
    fid = tree.open("big.bin", wire.GENERIC_READ | wire.GENERIC_WRITE)
    check_signed_read(c, session, tree, fid, MAX_IO, 1)
    check_signed_read(c, session, tree, fid, 2000, 5)
    # a large signed WRITE lands; the same altered in its last byte after signing is refused
    new = os.urandom(MAX_IO)
    assert tree.request(wire.WRITE, write_request(fid, new, 0), payload=MAX_IO).status == \
        wire.STATUS_SUCCESS
    tampered = tree.request(wire.WRITE, write_request(fid, bytes(MAX_IO), 0), payload=MAX_IO,
                            flip_bit=True)
    assert tampered.status == wire.STATUS_ACCESS_DENIED
    assert (server.path("rw") / "big.bin").read_bytes()[:MAX_IO] == new
    # so is one signed over its signature field as it was, not zeroed; signed here, accepted
    for zeroed, status in ((False, wire.STATUS_ACCESS_DENIED), (True, wire.STATUS_SUCCESS)):
        msg = tree.message(wire.WRITE, write_request(fid, bytes(MAX_IO), 0), payload=MAX_IO)
        struct.pack_into("<I", msg, 16, struct.unpack_from("<I", msg, 16)[0] | wire.FLAGS_SIGNED)
        msg[48:64] = b"\x55" * 16
        msg[48:64] = reference_signature(expected, session.signing_key, msg, zeroed)
        c.send([msg], sign=False)
        assert c.response_to(wire.Header.parse(msg).message_id).status == status
    assert (server.path("rw") / "big.bin").read_bytes()[:MAX_IO] == bytes(MAX_IO)


def write_request(fid: bytes, data: bytes, offset: int) -> bytes:
    return struct.pack("<HHIQ16sIIHHI", 49, 112, len(data), offset, fid, 0, 0, 0, 0, 0) + data


@pytest.mark.parametrize("cipher", [security.AES_128_GCM, security.AES_256_GCM,
                                    security.AES_128_CCM, security.AES_256_CCM])
def test_sealed_large_reads_and_writes(servers, cipher):
    server = servers()
    (server.path("enc") / "big.bin").write_bytes(DATA)
    c, session = logged_on(server, (wire.SMB311,), ciphers=(cipher,))
    assert c.cipher == cipher
    tree = c.tree(session, "enc")
    fid = tree.open("big.bin", wire.GENERIC_READ | wire.GENERIC_WRITE)
    for length, offset in ((MAX_IO, 999), (3000, 1)):
        frame = read_raw(c, tree, fid, length, offset)
        plain = reference_unseal(cipher, session.decrypt_key, frame)
        assert wire.Header.parse(plain[:64]).status == wire.STATUS_SUCCESS
        data_offset, _r, count = struct.unpack_from("<BBI", plain, 66)
        assert plain[data_offset:data_offset + count] == DATA[offset:offset + length]
    new = os.urandom(MAX_IO)
    assert tree.request(wire.WRITE, write_request(fid, new, 1), payload=MAX_IO).status == \
        wire.STATUS_SUCCESS
    assert (server.path("enc") / "big.bin").read_bytes()[1:MAX_IO + 1] == new
    # a sealed WRITE altered in its last byte: the connection is dropped, nothing written
    with pytest.raises(Disconnected):
        tree.request(wire.WRITE, write_request(fid, bytes(MAX_IO), 1), payload=MAX_IO, flip_bit=True)
    assert (server.path("enc") / "big.bin").read_bytes()[1:MAX_IO + 1] == new
