"""Key derivation, signing and encryption cross-checked against an independent
implementation: cryptography's SP800-108 KBKDF (what smbprotocol uses) and AES-GCM/CCM."""
import os
import struct

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.kbkdf import KBKDFHMAC, CounterLocation, Mode

from smbring.smb import security, wire


def reference_kdf(key, label, context, length):
    return KBKDFHMAC(algorithm=hashes.SHA256(), mode=Mode.CounterMode, length=length, rlen=4,
                     llen=4, location=CounterLocation.BeforeFixed, label=label, context=context,
                     fixed=None).derive(key)


@pytest.mark.parametrize("length", [16, 32])
def test_kdf_matches_sp800_108(length):
    key, ctx = os.urandom(16), os.urandom(64)
    assert security.kdf(key, b"SMBSigningKey\0", ctx, length) == \
        reference_kdf(key, b"SMBSigningKey\0", ctx, length)


def test_sign_verify_every_algorithm_and_tamper():
    msg = bytearray(wire.Header(command=wire.READ, message_id=7, session_id=3).pack() + os.urandom(40))
    for alg in (security.HMAC_SHA256, security.AES_CMAC, security.AES_GMAC):
        key = os.urandom(16)
        m = bytearray(msg)
        security.apply_signature(alg, key, m)
        assert struct.unpack_from("<I", m, 16)[0] & wire.FLAGS_SIGNED
        assert security.verify(alg, key, m)
        m[70] ^= 1
        assert not security.verify(alg, key, m)


def test_a_signing_key_keeps_no_message_in_its_prepared_mac():
    """A SigningKey's prepared MAC is copied for each message: a message's signature does
    not depend on the messages signed before it, nor on another algorithm used with the same
    key (a binding verifies the session's key with another connection's algorithm)."""
    raw = os.urandom(16)
    key = security.SigningKey(raw)
    assert key == raw and security.signing_key(raw, wire.SMB202, None) == raw
    assert type(security.signing_key(raw, wire.SMB311, bytes(64))) is security.SigningKey
    messages = [bytearray(wire.Header(command=wire.CREATE, message_id=i, session_id=3).pack() +
                          os.urandom(i * 7)) for i in range(1, 6)]
    for _round in range(2):
        for alg in (security.AES_GMAC, security.AES_CMAC, security.HMAC_SHA256):
            for m in messages:
                assert security.sign(alg, key, m) == _reference_sign(alg, raw, m)
                signed = bytearray(m)
                security.apply_signature(alg, key, signed)
                assert security.verify(alg, key, signed) and security.verify(alg, raw, signed)
                signed[64] ^= 1
                assert not security.verify(alg, key, signed)


def _reference_open(cipher, key, frame) -> bytes:
    """MS-SMB2 3.1.4.3 as written: the AEAD over the ciphertext with the transform header's
    Signature as its tag and its bytes from Nonce on as the additional data."""
    from cryptography.hazmat.primitives.ciphers.aead import AESCCM, AESGCM
    gcm = cipher in (security.AES_128_GCM, security.AES_256_GCM)
    aead = AESGCM(bytes(key)) if gcm else AESCCM(bytes(key), tag_length=16)
    nonce = bytes(frame[20:32] if gcm else frame[20:31])
    return aead.decrypt(nonce, bytes(frame[52:]) + bytes(frame[4:20]), bytes(frame[20:52]))


@pytest.mark.parametrize("cipher", [security.AES_128_CCM, security.AES_128_GCM,
                                    security.AES_256_CCM, security.AES_256_GCM])
@pytest.mark.parametrize("size", [1000, 16 << 10, (16 << 10) + 1, 1 << 20])
@pytest.mark.parametrize("key_kind", [bytes, security.CipherKey])
def test_encrypt_decrypt_and_reject_tampering(cipher, size, key_kind):
    """Sealed as the spec says, opened again, and refused when any part is changed: with a
    plain key and with a CipherKey (its AEAD prepared once, used again for each message), a
    small message (opened in one piece) and a large one (GCM's: streamed where it lies)."""
    raw = os.urandom(32 if cipher in (security.AES_256_CCM, security.AES_256_GCM) else 16)
    key = key_kind(raw)
    for _message in range(2):
        plain = os.urandom(size)
        header, body = security.encrypt(cipher, key, 42, plain)
        frame = bytearray(header + bytes(body))
        assert security.parse_transform(frame) == (42, size)
        assert _reference_open(cipher, raw, frame) == plain
        assert security.decrypt(cipher, key, frame) == plain
        assert security.decrypt(cipher, raw, frame) == plain
        for at in (4, 19, 20, 40, 52, 60, len(frame) - 1):
            bad = bytearray(frame)
            bad[at] ^= 1
            with pytest.raises(security.DecryptError):
                security.decrypt(cipher, key, bad)
    assert type(security.cipher_keys(raw, wire.SMB311, bytes(64), cipher)[0]) is security.CipherKey


def _reference_sign(alg, key, message):
    """MS-SMB2 3.1.4.1 as written: the MAC of a copy with its signature field zeroed."""
    import hashlib
    import hmac

    from cryptography.hazmat.primitives import cmac
    from cryptography.hazmat.primitives.ciphers import algorithms
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    data = bytearray(message)
    data[48:64] = bytes(16)
    if alg == security.HMAC_SHA256:
        return hmac.new(key, bytes(data), hashlib.sha256).digest()[:16]
    if alg == security.AES_CMAC:
        c = cmac.CMAC(algorithms.AES(key))
        c.update(bytes(data))
        return c.finalize()
    flags, command = struct.unpack_from("<I", data, 16)[0], struct.unpack_from("<H", data, 12)[0]
    role = (1 if flags & wire.FLAGS_SERVER_TO_REDIR else 0) | (2 if command == wire.CANCEL else 0)
    return AESGCM(key).encrypt(bytes(data[24:32]) + struct.pack("<I", role), b"", bytes(data))


@pytest.mark.parametrize("alg", [security.HMAC_SHA256, security.AES_CMAC, security.AES_GMAC])
@pytest.mark.parametrize("size", [64, 100, (16 << 10) - 1, 16 << 10, (16 << 10) + 1, 1 << 20])
@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
@pytest.mark.parametrize("key_kind", [bytes, security.SigningKey])
def test_sign_small_and_large_matches_the_spec_and_leaves_the_message_alone(alg, size, kind, key_kind):
    """Small messages are MACed as one zeroed copy, large ones in two pieces (header, rest):
    either way the signature is the spec's, and the message is not changed; with a plain key
    and with a SigningKey (its MAC prepared once, used again for each message here)."""
    key = key_kind(os.urandom(16))
    for flags, command in ((wire.FLAGS_SERVER_TO_REDIR, wire.READ), (0, wire.CANCEL), (0, wire.WRITE)):
        raw = bytearray(wire.Header(command=command, message_id=0x0102030405060708, flags=flags,
                                    session_id=3).pack() + os.urandom(size - 64))
        raw[48:64] = os.urandom(16)        # a stale signature: not part of the MAC
        before = bytes(raw)
        message = kind(raw) if kind is not memoryview else memoryview(raw)
        assert security.sign(alg, key, message) == _reference_sign(alg, key, before)
        assert bytes(raw) == before


@pytest.mark.parametrize("alg", [security.HMAC_SHA256, security.AES_CMAC, security.AES_GMAC])
@pytest.mark.parametrize("key_kind", [bytes, security.SigningKey])
def test_verify_large_message_catches_a_change_anywhere(alg, key_kind):
    key = key_kind(os.urandom(16))
    m = bytearray(wire.Header(command=wire.WRITE, message_id=9).pack() + os.urandom(1 << 20))
    security.apply_signature(alg, key, memoryview(m))      # a writable view: signed in place
    assert security.verify(alg, key, m) and security.verify(alg, key, bytes(m))
    for at in (0, 30, 47, 64, 65, len(m) // 2, len(m) - 1):
        bad = bytearray(m)
        bad[at] ^= 0x80
        assert not security.verify(alg, key, bad), at
    assert not security.verify(alg, key, m[:-1])
    assert not security.verify(alg, key, m + b"\0")


@pytest.mark.parametrize("cipher", [security.AES_128_CCM, security.AES_128_GCM,
                                    security.AES_256_CCM, security.AES_256_GCM])
def test_large_decrypt_reads_in_place_and_rejects_every_kind_of_tampering(cipher):
    from cryptography.hazmat.primitives.ciphers.aead import AESCCM, AESGCM
    key = os.urandom(32 if cipher in (security.AES_256_CCM, security.AES_256_GCM) else 16)
    plain = os.urandom((8 << 20) + 3)
    header, body = security.encrypt(cipher, key, 42, plain)
    frame = bytearray(header + bytes(body))
    # the frame is the spec's: an independent AEAD opens it
    aead = AESGCM(key) if cipher in (security.AES_128_GCM, security.AES_256_GCM) else \
        AESCCM(key, tag_length=16)
    nonce = bytes(frame[20:32 if isinstance(aead, AESGCM) else 31])
    assert aead.decrypt(nonce, bytes(frame[52:] + frame[4:20]), bytes(frame[20:52])) == plain
    assert security.decrypt(cipher, key, memoryview(frame)) == plain
    assert security.decrypt(cipher, key, bytes(frame)) == plain
    for at in (4, 19, 20, 40, 51, 52, len(frame) - 1):     # tag, nonce, size/flags/session, data
        bad = bytearray(frame)
        bad[at] ^= 1
        with pytest.raises(security.DecryptError):
            security.decrypt(cipher, key, bad)
    with pytest.raises(security.DecryptError):
        security.decrypt(cipher, key, frame[:-1])       # shorter than its OriginalMessageSize
    with pytest.raises(security.DecryptError):
        security.decrypt(cipher, os.urandom(len(key)), frame)
