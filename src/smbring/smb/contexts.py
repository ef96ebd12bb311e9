"""CREATE contexts (MS-SMB2 2.2.13.2) and EA lists (MS-FSCC 2.4.15)."""
from __future__ import annotations

import struct

from smbring.smb import wire
from smbring.smb.errors import SMBError


# CREATE contexts one request may carry: MS-SMB2 defines about twenty, and a client sends a few.
# Eight MiB of 16-byte contexts (half a million) took a second of the event loop to read.
MAX_CREATE_CONTEXTS = 128


def parse_create_contexts(msg, off: int, length: int) -> dict[bytes, bytes]:
    """CREATE contexts by name (MS-SMB2 2.2.13.2); unknown ones are ignored by the caller.
    Each must be laid out as Samba's smb2_create_blob_parse takes it: its name at offset 16
    (at least four bytes), its data 8-byte aligned after the name, its Next 8-byte aligned,
    all of it inside the buffer; else STATUS_INVALID_PARAMETER, as more than
    MAX_CREATE_CONTEXTS is. Of two contexts with one name the first counts, as in Samba
    (smb2_create_blob_find): a request means one thing to smbring and to Samba, and to a
    filter in front of either that reads it as Samba does."""
    out: dict[bytes, bytes] = {}
    pos, remaining = off, length
    count = 0
    while remaining > 0:
        count += 1
        if count > MAX_CREATE_CONTEXTS or remaining < 16:
            raise SMBError(wire.STATUS_INVALID_PARAMETER)
        nxt, name_off, name_len, _r, data_off, data_len = struct.unpack_from("<IHHHHI", msg, pos)
        if (nxt & 7 or nxt > remaining or name_off != 16 or name_len < 4
                or name_off + name_len > remaining or data_off & 7
                or (data_off and data_off < name_off + name_len)
                or data_off > remaining or data_off + data_len > remaining):
            raise SMBError(wire.STATUS_INVALID_PARAMETER)
        name = bytes(msg[pos + name_off:pos + name_off + name_len])
        if name not in out:
            out[name] = bytes(msg[pos + data_off:pos + data_off + data_len]) if data_len else b""
        if not nxt:
            break
        pos += nxt
        remaining -= nxt
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


# the EAs one request may set (SET_INFO FileFullEaInformation, CREATE's ExtA): NTFS keeps at
# most 64 KiB of EAs per file. A frame of 8 MiB held 700,000 EA entries, and setting them one
# by one stalled the event loop, for every client, for seconds.
MAX_EA_LIST = 65536
STATUS_EA_TOO_LARGE = 0xC0000050


def parse_eas(buf) -> list[tuple[str, bytes]]:
    """FILE_FULL_EA_INFORMATION entries (MS-FSCC 2.4.15), at most MAX_EA_LIST bytes of them
    (else STATUS_EA_TOO_LARGE)."""
    if len(buf) > MAX_EA_LIST:
        raise SMBError(STATUS_EA_TOO_LARGE)
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
