"""MD4 (RFC 1320), for the NT password hash only.

NTLM's NT hash is MD4 of the UTF-16LE password. `cryptography` has no MD4 and hashlib has it
only where the OpenSSL build still offers the legacy provider, so it is written out here. It is
broken as a general hash: use it for nothing else.
"""
from __future__ import annotations

import struct

_MASK = 0xFFFFFFFF
_INITIAL = (0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476)
# message word order and left-rotation amounts of the 16 steps of each round (RFC 1320 3.4)
_ROUND2_ORDER = (0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15)
_ROUND3_ORDER = (0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15)
_SHIFTS = ((3, 7, 11, 19), (3, 5, 9, 13), (3, 9, 11, 15))


def _rotl(x: int, n: int) -> int:
    return ((x << n) | (x >> (32 - n))) & _MASK


def _compress(state: tuple[int, int, int, int], block: bytes) -> tuple[int, int, int, int]:
    x = struct.unpack("<16I", block)
    a, b, c, d = state
    rounds = (
        (range(16), lambda b, c, d: (b & c) | (~b & d), 0),
        (_ROUND2_ORDER, lambda b, c, d: (b & c) | (b & d) | (c & d), 0x5A827999),
        (_ROUND3_ORDER, lambda b, c, d: b ^ c ^ d, 0x6ED9EBA1),
    )
    for (order, f, constant), shifts in zip(rounds, _SHIFTS):
        for i, k in enumerate(order):
            a = _rotl((a + f(b, c, d) + x[k] + constant) & _MASK, shifts[i % 4])
            a, b, c, d = d, a, b, c   # the next step updates the next register
    return tuple((s + v) & _MASK for s, v in zip(state, (a, b, c, d)))


def md4(data: bytes) -> bytes:
    """The 16-byte MD4 digest of data."""
    data = bytes(data)
    padded = data + b"\x80" + b"\0" * ((55 - len(data)) % 64) + struct.pack("<Q", (len(data) * 8) & (2**64 - 1))
    state = _INITIAL
    for offset in range(0, len(padded), 64):
        state = _compress(state, padded[offset:offset + 64])
    return struct.pack("<4I", *state)
