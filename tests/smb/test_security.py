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


@pytest.mark.parametrize("cipher", [security.AES_128_CCM, security.AES_128_GCM,
                                    security.AES_256_CCM, security.AES_256_GCM])
def test_encrypt_decrypt_and_reject_tampering(cipher):
    key = os.urandom(32 if cipher in (security.AES_256_CCM, security.AES_256_GCM) else 16)
    plain = os.urandom(1000)
    header, body = security.encrypt(cipher, key, 42, plain)
    frame = bytearray(header + bytes(body))
    assert security.parse_transform(frame) == (42, 1000)
    assert security.decrypt(cipher, key, frame) == plain
    frame[60] ^= 1
    with pytest.raises(security.DecryptError):
        security.decrypt(cipher, key, frame)
