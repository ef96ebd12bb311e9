"""NTLM's cryptographic functions (MS-NLMP 3.3, 3.4.4, 3.4.5 and 6), each checked against the
specification's examples in section 4.2.

Only NT-hash based functions: nothing here computes from an LM hash, which smbring never
stores and never accepts.
"""
from __future__ import annotations

import hashlib
import hmac
import struct
import zlib

from cryptography.hazmat.primitives.ciphers import Cipher, modes

try:  # where cryptography has moved its legacy ciphers
    from cryptography.hazmat.decrepit.ciphers.algorithms import ARC4, TripleDES
except ImportError:  # pragma: no cover - cryptography < 43
    from cryptography.hazmat.primitives.ciphers.algorithms import ARC4, TripleDES

from smbring.smb.md4 import md4

# NegotiateFlags (MS-NLMP 2.2.2.5)
UNICODE = 0x00000001
OEM = 0x00000002
REQUEST_TARGET = 0x00000004
SIGN = 0x00000010
SEAL = 0x00000020
LM_KEY = 0x00000080
NTLM = 0x00000200
ANONYMOUS = 0x00000800
ALWAYS_SIGN = 0x00008000
TARGET_TYPE_SERVER = 0x00020000
EXTENDED_SESSION_SECURITY = 0x00080000
TARGET_INFO = 0x00800000
VERSION = 0x02000000
NEGOTIATE_128 = 0x20000000
KEY_EXCH = 0x40000000
NEGOTIATE_56 = 0x80000000


_CLIENT_SIGN = b"session key to client-to-server signing key magic constant\0"
_CLIENT_SEAL = b"session key to client-to-server sealing key magic constant\0"
_SERVER_SIGN = b"session key to server-to-client signing key magic constant\0"
_SERVER_SEAL = b"session key to server-to-client sealing key magic constant\0"


def hmac_md5(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.md5).digest()


def nt_hash(password: str) -> bytes:
    """NTOWFv1: MD4 of the UTF-16LE password (what the password file stores)."""
    return md4(password.encode("utf-16-le"))


def windows_upper(name: str) -> str:
    """Upper case one character at a time, as Windows does: a character whose Python upper
    case is longer ('ß' -> 'SS') stays as it is."""
    return "".join(u if len(u := ch.upper()) == 1 else ch for ch in name)


def ntowfv2(nt: bytes, user_utf16: bytes, domain_utf16: bytes) -> bytes:
    """NTOWFv2 from the NT hash, the user name already upper-cased, and the domain as sent,
    both in UTF-16LE."""
    return hmac_md5(nt, user_utf16 + domain_utf16)


def ntlmv2_proof(response_key: bytes, server_challenge: bytes, blob: bytes) -> bytes:
    """NTProofStr over the client's blob (the NTLMv2_CLIENT_CHALLENGE) exactly as received."""
    return hmac_md5(response_key, server_challenge + blob)


def ntlmv2_session_base_key(response_key: bytes, proof: bytes) -> bytes:
    return hmac_md5(response_key, proof)


def ntlmv2_client_blob(timestamp: bytes, client_challenge: bytes, av_pairs: bytes) -> bytes:
    """The NTLMv2_CLIENT_CHALLENGE a client sends (MS-NLMP 3.3.2's `temp`): version 1, the
    8-byte FILETIME, its 8-byte challenge, the AV pairs (ending with MsvAvEOL), and four zero
    bytes after them as Windows sends."""
    return b"\x01\x01" + b"\0" * 6 + timestamp + client_challenge + b"\0" * 4 + av_pairs + b"\0" * 4


def lmv2_response(response_key: bytes, server_challenge: bytes, client_challenge: bytes) -> bytes:
    """LMv2 (MS-NLMP 3.3.2): NTLMv2's companion response (from the NTOWFv2, never an LM hash)."""
    return hmac_md5(response_key, server_challenge + client_challenge) + client_challenge


def _des_key(seven: bytes) -> bytes:
    """Spread 56 key bits over 8 bytes, 7 per byte (DES ignores the low, parity bit)."""
    bits = int.from_bytes(seven, "big")
    return bytes(((bits >> (49 - 7 * i)) & 0x7F) << 1 for i in range(8))


def des(key7: bytes, block: bytes) -> bytes:
    """Single DES of one 8-byte block under a 7-byte key (TripleDES with K1 = K2 = K3)."""
    key = _des_key(key7) * 3
    encryptor = Cipher(TripleDES(key), modes.ECB()).encryptor()
    return encryptor.update(block) + encryptor.finalize()


def desl(key16: bytes, data8: bytes) -> bytes:
    """DESL (MS-NLMP 6): the 24-byte NTLMv1 response of a 16-byte key to an 8-byte challenge."""
    padded = key16 + b"\0" * 5
    return b"".join(des(padded[i:i + 7], data8) for i in (0, 7, 14))


def ess_challenge(server_challenge: bytes, client_challenge: bytes) -> bytes:
    """The challenge NTLMv1 answers under extended session security."""
    return hashlib.md5(server_challenge + client_challenge).digest()[:8]


def ntlmv1_session_base_key(nt: bytes) -> bytes:
    return md4(nt)


def ess_key_exchange_key(session_base_key: bytes, server_challenge: bytes, lm_response: bytes) -> bytes:
    """KXKEY for NTLMv1 with extended session security (MS-NLMP 3.4.5.1)."""
    return hmac_md5(session_base_key, server_challenge + lm_response[:8])


def rc4(key: bytes):
    """A stateful RC4 handle: successive update() calls continue one key stream."""
    return Cipher(ARC4(key), mode=None).encryptor()


def exported_session_key(key_exchange_key: bytes, encrypted_random_session_key: bytes | None) -> bytes:
    """With NEGOTIATE_KEY_EXCH the client chose the key and sent it RC4-encrypted."""
    if encrypted_random_session_key is None:
        return key_exchange_key
    return rc4(key_exchange_key).update(encrypted_random_session_key)


def signing_key(exported: bytes, client_to_server: bool) -> bytes:
    """SIGNKEY (MS-NLMP 3.4.5.2), extended session security only."""
    return hashlib.md5(exported + (_CLIENT_SIGN if client_to_server else _SERVER_SIGN)).digest()


def sealing_key(exported: bytes, flags: int, client_to_server: bool) -> bytes:
    """SEALKEY (MS-NLMP 3.4.5.3). Without extended session security one key serves both
    directions; LM_KEY weakening never applies because smbring never negotiates LM_KEY."""
    if not flags & EXTENDED_SESSION_SECURITY:
        return exported
    if flags & NEGOTIATE_128:
        key = exported
    elif flags & NEGOTIATE_56:
        key = exported[:7]
    else:
        key = exported[:5]
    return hashlib.md5(key + (_CLIENT_SEAL if client_to_server else _SERVER_SEAL)).digest()


def ess_signature(sign_key: bytes, seal_handle, seq: int, message: bytes, key_exch: bool) -> bytes:
    """NTLMSSP_MESSAGE_SIGNATURE with extended session security (MS-NLMP 3.4.4.2)."""
    seq_bytes = struct.pack("<I", seq)
    checksum = hmac_md5(sign_key, seq_bytes + message)[:8]
    if key_exch:
        checksum = seal_handle.update(checksum)
    return struct.pack("<I", 1) + checksum + seq_bytes


def legacy_signature(seal_handle, seq: int, message: bytes) -> bytes:
    """NTLMSSP_MESSAGE_SIGNATURE without extended session security (MS-NLMP 3.4.4.1): a zero
    RandomPad, the CRC32 and the sequence number, RC4-encrypted in that order."""
    plain = struct.pack("<III", 0, zlib.crc32(message), seq)
    return struct.pack("<I", 1) + seal_handle.update(plain)
