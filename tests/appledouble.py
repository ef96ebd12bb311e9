"""AppleDouble files as macOS writes them, for the tests of what reads them."""
import struct


def macos_appledouble(finder: bytes, xattrs: list[tuple[bytes, bytes]], fork: bytes,
                      filler: bytes = b"Mac OS X".ljust(16)) -> bytes:
    """A "._" file as macOS writes one beside a file on a volume without extended attributes:
    header ("Mac OS X" its filler, where netatalk and Samba write "Netatalk"), Finder
    information with an ATTR block of `xattrs` after it, resource fork last."""
    entries_at = 50 + 32 + 2 + 36                 # header 26 + 2 entries, Finder info, pad, ATTR header
    table, at = b"", entries_at
    for name, _ in xattrs:
        at = (at + 3) & ~3
        at += 11 + len(name) + 1
    data_start = (at + 3) & ~3
    offsets, data = [], b""
    for _, value in xattrs:
        offsets.append(data_start + len(data))
        data += value
    at = entries_at
    for (name, value), offset in zip(xattrs, offsets):
        pad = ((at + 3) & ~3) - at
        table += bytes(pad) + struct.pack(">IIHB", offset, len(value), 0, len(name) + 1) + name + b"\0"
        at += pad + 11 + len(name) + 1
    table += bytes(data_start - at)
    total = data_start + len(data)
    attr = struct.pack(">IIIII12sHH", 0x41545452, 0, total, data_start, len(data), bytes(12), 0, len(xattrs))
    info_entry = finder.ljust(32, b"\0") + bytes(2) + attr + table + data
    fork_at = 50 + len(info_entry)
    header = struct.pack(">II16sH", 0x00051607, 0x00020000, filler, 2) + \
        struct.pack(">III", 9, 50, len(info_entry)) + struct.pack(">III", 2, fork_at, len(fork))
    return header + info_entry + fork
