"""CREATE contexts (MS-SMB2 2.2.13.2) and EA lists (MS-FSCC 2.4.15)."""
from __future__ import annotations

import struct

from smbring.smb import wire
from smbring.smb.errors import SMBError


def parse_create_contexts(msg, off: int, length: int) -> dict[bytes, bytes]:
    """CREATE contexts by name (MS-SMB2 2.2.13.2); unknown ones are ignored by the caller."""
    out = {}
    pos, end = off, off + length
    while length and pos + 16 <= end:
        nxt, name_off, name_len, _r, data_off, data_len = struct.unpack_from("<IHHHHI", msg, pos)
        name = bytes(msg[pos + name_off:pos + name_off + name_len])
        data = bytes(msg[pos + data_off:pos + data_off + data_len]) if data_len else b""
        if pos + name_off + name_len > end or (data_len and pos + data_off + data_len > end) or \
                name_len < 4:       # context names are at least four bytes (Windows checks)
            raise SMBError(wire.STATUS_INVALID_PARAMETER)
        out[name] = data
        if not nxt:
            break
        pos += nxt
    return out


def encode_create_contexts(contexts: list[tuple[bytes, bytes]]) -> bytes:
    out = bytearray()
    for i, (name, data) in enumerate(contexts):
        entry = struct.pack("<IHHHHI", 0, 16, len(name), 0, 24 if data else 0, len(data)) + \
            name.ljust(8, b"\0") + data
        if i < len(contexts) - 1:
            entry += b"\0" * (wire.pad8(len(entry)) - len(entry))
            entry = struct.pack("<I", len(entry)) + entry[4:]
        out += entry
    return bytes(out)


def parse_eas(buf) -> list[tuple[str, bytes]]:
    """FILE_FULL_EA_INFORMATION entries (MS-FSCC 2.4.15)."""
    eas, pos = [], 0
    while pos + 8 <= len(buf):
        nxt, _flags, name_len, value_len = struct.unpack_from("<IBBH", buf, pos)
        name = bytes(buf[pos + 8:pos + 8 + name_len]).decode("ascii")
        value = bytes(buf[pos + 9 + name_len:pos + 9 + name_len + value_len])
        if not name or pos + 9 + name_len + value_len > len(buf):
            raise SMBError(wire.STATUS_INVALID_PARAMETER)
        eas.append((name, value))
        if not nxt:
            break
        pos += nxt
    return eas


def encode_eas(eas: list[tuple[str, bytes]]) -> bytes:
    def entry(name: str, value: bytes) -> bytes:
        n = name.encode("ascii", "replace")
        return struct.pack("<IBBH", 0, 0, len(n), len(value)) + n + b"\0" + value
    return wire.chain(entry(name, value) for name, value in eas)
