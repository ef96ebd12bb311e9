"""SMB2/3 message security: pre-authentication integrity, key derivation, signing.

MS-SMB2 3.1.4.1 (signing), 3.1.4.2 (SP800-108 KDF in counter mode with HMAC-SHA256),
3.3.5.5.3 (keys per dialect). Encryption is not offered yet (no CAP_ENCRYPTION, no cipher
context), so clients never send transform headers.
"""
from __future__ import annotations

import hashlib
import hmac
import struct

from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import algorithms

from smbring.smb import wire

HMAC_SHA256, AES_CMAC, AES_GMAC = 0, 1, 2


def kdf(key: bytes, label: bytes, context: bytes, length: int = 16) -> bytes:
    """SP800-108 counter mode, PRF HMAC-SHA256, one iteration (L <= 256 bits). MS-SMB2's
    labels and contexts carry their own NUL terminator; the 0x00 here is SP800-108's separator."""
    data = struct.pack(">I", 1) + label + b"\0" + context + struct.pack(">I", length * 8)
    return hmac.new(key, data, hashlib.sha256).digest()[:length]


def signing_key(session_key: bytes, dialect: int, preauth_hash: bytes | None) -> bytes:
    if dialect < wire.SMB300:
        return session_key
    if dialect == wire.SMB311:
        return kdf(session_key, b"SMBSigningKey\0", preauth_hash)
    return kdf(session_key, b"SMB2AESCMAC\0", b"SmbSign\0")


def algorithm_for(dialect: int) -> int:
    return HMAC_SHA256 if dialect < wire.SMB300 else AES_CMAC


def sign(algorithm: int, key: bytes, message: bytes | bytearray | memoryview) -> bytes:
    """The 16-byte signature of one message, computed with its signature field zeroed."""
    data = bytearray(message)
    data[48:64] = b"\0" * 16
    if algorithm == HMAC_SHA256:
        return hmac.new(key, bytes(data), hashlib.sha256).digest()[:16]
    c = cmac.CMAC(algorithms.AES(key))
    c.update(bytes(data))
    return c.finalize()


def apply_signature(algorithm: int, key: bytes, message: bytearray) -> None:
    """Sets SMB2_FLAGS_SIGNED and writes the signature into a packed message."""
    flags = struct.unpack_from("<I", message, 16)[0] | wire.FLAGS_SIGNED
    struct.pack_into("<I", message, 16, flags)
    message[48:64] = sign(algorithm, key, message)


def verify(algorithm: int, key: bytes, message) -> bool:
    return hmac.compare_digest(bytes(message[48:64]), sign(algorithm, key, message))


class PreauthIntegrity:
    """SHA-512 chain over NEGOTIATE and SESSION_SETUP messages (SMB 3.1.1)."""

    def __init__(self, value: bytes = b"\0" * 64):
        self.value = value

    def update(self, message) -> None:
        self.value = hashlib.sha512(self.value + bytes(message)).digest()

    def copy(self) -> "PreauthIntegrity":
        return PreauthIntegrity(self.value)
