"""SMB2/3 message security: pre-authentication integrity, key derivation, signing.

MS-SMB2 3.1.4.1 (signing), 3.1.4.2 (SP800-108 KDF in counter mode with HMAC-SHA256),
3.3.5.5.3 (keys per dialect), 3.1.4.3 (encryption: AES-CCM/GCM inside a transform header).
"""
from __future__ import annotations

import hashlib
import hmac
import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESCCM, AESGCM

from smbring.smb import wire

HMAC_SHA256, AES_CMAC, AES_GMAC = 0, 1, 2


def kdf(key: bytes, label: bytes, context: bytes, length: int = 16) -> bytes:
    """SP800-108 counter mode, PRF HMAC-SHA256, one iteration (L <= 256 bits). MS-SMB2's
    labels and contexts carry their own NUL terminator; the 0x00 here is SP800-108's separator."""
    data = struct.pack(">I", 1) + label + b"\0" + context + struct.pack(">I", length * 8)
    return hmac.new(key, data, hashlib.sha256).digest()[:length]


def smb_session_key(gss_key: bytes) -> bytes:
    """Session.SessionKey (MS-SMB2 3.3.5.5.3, 3.2.5.3.1): the first 16 bytes of the key the
    authentication gave (Session.FullSessionKey), right-padded with zeros where shorter.
    NTLM's is 16 bytes; Kerberos' (the AES-256 subkey) is 32."""
    return (bytes(gss_key) + b"\0" * 16)[:16]


def signing_key(session_key: bytes, dialect: int, preauth_hash: bytes | None) -> "SigningKey":
    """From the authentication's key: only its first 16 bytes sign (`smb_session_key`)."""
    session_key = smb_session_key(session_key)
    if dialect < wire.SMB300:
        return SigningKey(session_key)
    if dialect == wire.SMB311:
        return SigningKey(kdf(session_key, b"SMBSigningKey\0", preauth_hash))
    return SigningKey(kdf(session_key, b"SMB2AESCMAC\0", b"SmbSign\0"))


class _PreparedKey(bytes):
    """A key (as bytes) that keeps what its algorithms prepare from it (`_prepared`): AES's
    key schedule, CMAC's subkeys. They are worked out at the key's first message, not at
    every message, and live as long as the key (the session's or channel's), nowhere else."""

    def __new__(cls, value):
        key = super().__new__(cls, value)
        key.prepared = {}       # algorithm -> what it prepared
        return key


class SigningKey(_PreparedKey):
    """A session's (or channel's) signing key: its MAC prepared once saves ~1.5 us a message,
    four messages a CREATE + CLOSE pair (two requests verified, two responses signed). The
    CMAC or HMAC object is copied for each message (their public `copy`: nothing of one
    message stays in it for the next); the AESGCM (GMAC) keeps nothing of a message."""


class CipherKey(_PreparedKey):
    """A session's encryption or decryption key: its AEAD prepared once saves ~1 us a small
    message sealed or opened (AES-GCM; opened in one call where small: see `decrypt`)."""


def _prepared(key: bytes, algorithm: int, prepare):
    """What `prepare(algorithm, key)` makes: kept in a prepared key from its first use, made
    anew for plain bytes."""
    if not isinstance(key, _PreparedKey):
        return prepare(algorithm, key)
    ready = key.prepared.get(algorithm)
    if ready is None:
        ready = key.prepared[algorithm] = prepare(algorithm, bytes(key))
    return ready


def _prepare(algorithm: int, key: bytes):
    if algorithm == HMAC_SHA256:
        return hmac.new(key, digestmod=hashlib.sha256)
    if algorithm == AES_GMAC:
        return AESGCM(key)
    return cmac.CMAC(algorithms.AES(key))


def algorithm_for(dialect: int) -> int:
    return HMAC_SHA256 if dialect < wire.SMB300 else AES_CMAC


SIGNING_PREFERENCE = (AES_GMAC, AES_CMAC, HMAC_SHA256)


def _gmac_nonce(header) -> bytes:
    """MessageId, then a bit for responses and one for CANCEL requests (MS-SMB2 3.1.4.1)."""
    role = (1 if header[16] & wire.FLAGS_SERVER_TO_REDIR else 0) | \
        (2 if header[12] == wire.CANCEL and header[13] == 0 else 0)
    return bytes(header[24:32]) + _ROLES[role]


_ROLES = (b"\0\0\0\0", b"\1\0\0\0", b"\2\0\0\0", b"\3\0\0\0")


# Up to this size a message is MACed as one zeroed copy; past it in two parts, its header (64
# bytes, the signature zeroed) then the rest as a view of the caller's buffer: a READ's or
# WRITE's megabytes are not copied (a fresh large copy also costs a page fault per 4 KiB), and
# the two-part MAC's fixed cost (a streaming GCM context: ~4 us more than AESGCM) is repaid.
_ONE_PIECE_MAX = 16 << 10
_NO_SIGNATURE = bytes(16)


def sign(algorithm: int, key: bytes, message: bytes | bytearray | memoryview) -> bytes:
    """The 16-byte signature of one message, computed with its signature field zeroed (the
    message itself is not changed). `key`: a SigningKey (its MAC prepared) or plain bytes."""
    view = message if type(message) is bytearray else memoryview(message).cast("B")
    mac = _prepared(key, algorithm, _prepare)
    if len(view) <= _ONE_PIECE_MAX:
        data = bytearray(view)
        data[48:64] = _NO_SIGNATURE
        if algorithm == AES_GMAC:
            return mac.encrypt(_gmac_nonce(data), b"", data)
        c = mac.copy()
        c.update(data)
        return c.digest()[:16] if algorithm == HMAC_SHA256 else c.finalize()
    header = bytearray(view[:64])
    header[48:64] = _NO_SIGNATURE
    header, rest = bytes(header), memoryview(view)[64:]
    if algorithm == AES_GMAC:     # GMAC: GCM with everything as additional data, no plaintext
        gcm = Cipher(algorithms.AES(bytes(key)), modes.GCM(_gmac_nonce(header))).encryptor()
        gcm.authenticate_additional_data(header)
        gcm.authenticate_additional_data(rest)
        gcm.finalize()
        return gcm.tag
    c = mac.copy()
    c.update(header)
    c.update(rest)
    return c.digest()[:16] if algorithm == HMAC_SHA256 else c.finalize()


def apply_signature(algorithm: int, key: bytes, message: bytearray | memoryview) -> None:
    """Sets SMB2_FLAGS_SIGNED and writes the signature into a packed message (a bytearray or a
    writable view: signed where it lies, the bytes that are then sent)."""
    message[16] |= wire.FLAGS_SIGNED        # (the Flags field's low byte holds the bit)
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


AES_128_CCM, AES_128_GCM, AES_256_CCM, AES_256_GCM = 1, 2, 3, 4
CIPHER_PREFERENCE = (AES_128_GCM, AES_256_GCM, AES_128_CCM, AES_256_CCM)
_TRANSFORM = struct.Struct("<4s16s16sIHHQ")


class DecryptError(Exception):
    pass


def cipher_keys(session_key: bytes, dialect: int, preauth_hash: bytes | None,
                cipher: int) -> tuple["CipherKey", "CipherKey"]:
    """(server->client key, client->server key), from the authentication's whole key: the
    AES-256 ciphers (3.1.1 only) derive theirs from Session.FullSessionKey, the others from
    its first 16 bytes (MS-SMB2 3.1.4.2, 3.3.5.5.3; Kerberos' 32-byte key tells them apart)."""
    length = 32 if cipher in (AES_256_CCM, AES_256_GCM) else 16
    if length == 16:
        session_key = smb_session_key(session_key)
    if dialect == wire.SMB311:
        return (CipherKey(kdf(session_key, b"SMBS2CCipherKey\0", preauth_hash, length)),
                CipherKey(kdf(session_key, b"SMBC2SCipherKey\0", preauth_hash, length)))
    return (CipherKey(kdf(session_key, b"SMB2AESCCM\0", b"ServerOut\0", length)),
            CipherKey(kdf(session_key, b"SMB2AESCCM\0", b"ServerIn \0", length)))


def _aead(cipher: int, key: bytes):
    return AESGCM(key) if cipher in (AES_128_GCM, AES_256_GCM) else AESCCM(key, tag_length=16)


def _nonce_size(cipher: int) -> int:
    return 12 if cipher in (AES_128_GCM, AES_256_GCM) else 11


def encrypt(cipher: int, key: bytes, session_id: int, plaintext, out=None) -> tuple[bytes, memoryview]:
    """(TRANSFORM_HEADER, ciphertext): kept apart so a large message is not copied again to
    join them. The nonce is random (96/88 bits per message). With `out` (a writable buffer of
    at least len(plaintext) + 16 bytes) the ciphertext is written there instead of into a new
    object: no allocation and page faults per 8 MiB message."""
    nonce = os.urandom(_nonce_size(cipher))
    aad = _TRANSFORM.pack(wire.TRANSFORM_ID, b"\0" * 16, nonce.ljust(16, b"\0"), len(plaintext),
                          0, 1, session_id)[20:]
    aead = _prepared(key, cipher, _aead)
    if out is None:
        sealed = memoryview(aead.encrypt(nonce, plaintext, aad))
    else:
        sealed = memoryview(out)[:len(plaintext) + 16]
        aead.encrypt_into(nonce, plaintext, aad, sealed)
    return wire.TRANSFORM_ID + bytes(sealed[-16:]) + aad, sealed[:-16]


def parse_transform(buf) -> tuple[int, int]:
    """(session id, original size) of a transform header."""
    if len(buf) < 52 or bytes(buf[:4]) != wire.TRANSFORM_ID:
        raise DecryptError("not a transform header")
    _p, _sig, _nonce, size, _r, flags, session_id = _TRANSFORM.unpack_from(buf, 0)
    if flags != 1:      # Flags (3.1.1) / EncryptionAlgorithm (3.0): 1, or disconnect (3.3.5.2.1.1)
        raise DecryptError(f"transform header flags {flags:#x}")
    return session_id, size


def decrypt(cipher: int, key: bytes, buf) -> bytearray:
    """The message a transform header and its ciphertext carry, authenticated. A large AES-GCM
    ciphertext is read where it lies, in one pass into the result (the tag, which comes before
    it, checked at the end, before anything is returned). A small one, and AES-CCM's (which
    has no streaming form here), is joined to its tag once and opened by the key's prepared
    AEAD (a copy of a few hundred bytes costs less than a streaming context's set-up)."""
    _p, signature, nonce, size, _r, _flags, _sid = _TRANSFORM.unpack_from(buf, 0)
    view = memoryview(buf).cast("B")
    ciphertext, aad = view[52:], bytes(view[20:52])
    if len(ciphertext) != size:
        raise DecryptError("transform size mismatch")
    plaintext = bytearray(size)
    gcm = cipher in (AES_128_GCM, AES_256_GCM)
    try:
        if gcm and size > _ONE_PIECE_MAX:
            stream = Cipher(algorithms.AES(bytes(key)), modes.GCM(nonce[:12], signature)).decryptor()
            stream.authenticate_additional_data(aad)
            stream.update_into(ciphertext, plaintext)
            stream.finalize()
        else:
            joined = bytearray(size + 16)
            joined[:size] = ciphertext
            joined[size:] = signature
            aead = _prepared(key, cipher, _aead)
            aead.decrypt_into(nonce[:12] if gcm else nonce[:11], joined, aad, plaintext)
    except InvalidTag:
        raise DecryptError("message failed authentication") from None
    return plaintext
