"""Driving the protocol core in tests: SMB2 requests built by hand (the message bodies both
the sans-I/O client and the raw socket client send), and the core's effects carried out here
with plain system calls on real files, synchronously, as a shell would."""
from __future__ import annotations

import os
import struct

from smbring.server.effects import range_operation
from smbring.smb import effects, wire


def carry_out(todo: list) -> list[bytes]:
    """Carries out the core's effects in order (a continuation's effects before the rest);
    returns the responses sent, each an SMB2 message (or a transform header and its
    ciphertext), file data included."""
    sent: list[bytes] = []
    todo = list(todo)
    while todo:
        effect = todo.pop(0)
        if isinstance(effect, effects.Send):
            payload = effect.payload
            if isinstance(payload, effects.FileRange):
                payload = read(payload.fd, payload.length, payload.offset)
            sent.append(bytes(effect.message) + (bytes(payload) if payload is not None else b""))
        elif isinstance(effect, effects.ReadInto):
            r = effect.range
            effect.into[:] = read(r.fd, r.length, r.offset)
            todo[:0] = effect.then(r.length)
        elif isinstance(effect, effects.Write):
            todo[:0] = effect.then(outcome(lambda: write(effect.fd, effect.data, effect.offset)))
        elif isinstance(effect, effects.Flush):
            todo[:0] = effect.then(outcome(lambda: os.fsync(effect.fd) or 0))
        elif isinstance(effect, (effects.Drain, effects.Settle)):
            todo[:0] = effect.then(None)
        elif isinstance(effect, effects.RANGE_OPERATIONS):
            todo[:0] = effect.then(outcome(lambda: range_operation(effect)))
        elif isinstance(effect, effects.Wait):
            ended = []
            effect.start(lambda result=None: ended.append(result))
            assert ended, f"waits for what nothing here ends: {effect!r}"
            todo[:0] = effect.then(ended[0])
        elif not isinstance(effect, effects.Forget):
            raise AssertionError(f"unknown effect {effect!r}")
    return sent


def read(fd: int, length: int, offset: int) -> bytes:
    """What a READ sends: the file's bytes, zeros past its end."""
    return os.pread(fd, length, offset).ljust(length, b"\0")


def write(fd: int, data, offset: int) -> int:
    done = 0
    while done < len(data):
        done += os.pwrite(fd, data[done:], offset + done)
    return done


def outcome(call):
    """call()'s result, or the OSError it raised (the core answers it as an NTSTATUS)."""
    try:
        return call()
    except OSError as e:
        return e


def status(message: bytes) -> int:
    """The NTSTATUS of a response message."""
    return int.from_bytes(message[8:12], "little")


# -- message bodies (MS-SMB2 2.2): bytes after the 64-byte header --------------------------

def negotiate_body(dialects, security_mode, capabilities, client_guid, contexts=()) -> bytes:
    fixed = 36 + 2 * len(dialects)
    ctx_off = wire.pad8(64 + fixed) if contexts else 0
    body = struct.pack("<HHHHI16sIHH", 36, len(dialects), security_mode, 0, capabilities,
                       client_guid, ctx_off, len(contexts), 0) + struct.pack(f"<{len(dialects)}H", *dialects)
    if contexts:
        body += b"\0" * (ctx_off - 64 - len(body))
        body += b"".join(contexts)        # negotiate_contexts() padded all but the last
    return body


def negotiate_contexts(ciphers, signing_algorithms) -> list[bytes]:
    def context(ctype: int, data: bytes) -> bytes:
        return struct.pack("<HHI", ctype, len(data), 0) + data
    out = [context(wire.PREAUTH_INTEGRITY_CAPABILITIES,
                   struct.pack("<HHH", 1, 32, wire.SHA512) + os.urandom(32))]
    if ciphers:
        out.append(context(wire.ENCRYPTION_CAPABILITIES, struct.pack(f"<H{len(ciphers)}H", len(ciphers), *ciphers)))
    if signing_algorithms:
        out.append(context(wire.SIGNING_CAPABILITIES,
                           struct.pack(f"<H{len(signing_algorithms)}H", len(signing_algorithms), *signing_algorithms)))
    return [c + b"\0" * (wire.pad8(len(c)) - len(c)) if i < len(out) - 1 else c for i, c in enumerate(out)]


def session_setup_body(token: bytes, security_mode=wire.SECURITY_SIGNING_ENABLED, flags=0, previous=0) -> bytes:
    return struct.pack("<HBBIIHHQ", 25, flags, security_mode, 0, 0, 88, len(token), previous) + token


def tree_connect_body(path: str) -> bytes:
    name = wire.utf16(path)
    return struct.pack("<HHHH", 9, 0, 72, len(name)) + name


def create_body(name: str, access: int, disposition: int, options: int, *, share_access: int = 7,
                attributes: int = 0, contexts: list[tuple[bytes, bytes]] = (), name_offset: int | None = None,
                name_length: int | None = None, impersonation: int = 2, oplock: int = 0) -> bytes:
    """NameOffset/NameLength default to the name as sent; given, they are sent as they are."""
    encoded = wire.utf16(name)
    # MS-SMB2 2.2.13.2: the name at 16, the data 8-byte aligned after it (a GUID's 16 bytes too)
    ctx = wire.chain((struct.pack("<IHHHHI", 0, 16, len(cname), 0, 16 + wire.pad8(len(cname)) if data else 0,
                                  len(data)) +
                      cname.ljust(wire.pad8(len(cname)), b"\0") + data for cname, data in contexts), 8)
    name_part = encoded or b"\0"          # the buffer holds at least one byte
    ctx_off = wire.pad8(120 + len(name_part)) if ctx else 0
    body = struct.pack("<HBBIQQIIIIIHHII", 57, 0, oplock, impersonation, 0, 0, access, attributes,
                       share_access, disposition, options,
                       120 if name_offset is None else name_offset,
                       len(encoded) if name_length is None else name_length,
                       ctx_off, len(ctx)) + name_part
    if ctx:
        body += b"\0" * (ctx_off - 64 - len(body)) + ctx
    return body


def full_ea_list(eas) -> bytes:
    """FILE_FULL_EA_INFORMATION entries (MS-FSCC 2.4.15) of (name, value) pairs, a name str or
    bytes, each entry on a 4-byte boundary: an ExtA context's or a SET_INFO's EA list."""
    return wire.chain(struct.pack("<IBBH", 0, 0, len(n), len(v)) + n + b"\0" + v
                      for n, v in ((n if isinstance(n, bytes) else n.encode(), v) for n, v in eas))


def close_body(fid: bytes, flags: int = 0) -> bytes:
    return struct.pack("<HHI", 24, flags, 0) + fid


def flush_body(fid: bytes) -> bytes:
    return struct.pack("<HHI", 24, 0, 0) + fid


def read_body(fid: bytes, length: int, offset: int = 0) -> bytes:
    return struct.pack("<HBBIQ16sIIIHH", 49, 80, 0, length, offset, fid, 0, 0, 0, 0, 0) + b"\0"


def write_body(fid: bytes, data: bytes, offset: int = 0, flags: int = 0) -> bytes:
    """flags: 1 is SMB2_WRITEFLAG_WRITE_THROUGH."""
    return struct.pack("<HHIQ16sIIHHI", 49, 112, len(data), offset, fid, 0, 0, 0, 0, flags) + data


def lock_body(fid: bytes, elements: list[tuple[int, int, int]]) -> bytes:
    return struct.pack("<HHI16s", 48, len(elements), 0, fid) + \
        b"".join(struct.pack("<QQII", off, length, flags, 0) for off, length, flags in elements)


def query_info_body(fid: bytes, info_type: int, klass: int, output_length: int = 65536,
                    additional: int = 0) -> bytes:
    return struct.pack("<HBBIHHIII16s", 41, info_type, klass, output_length, 0, 0, 0, additional, 0, fid)


def set_info_body(fid: bytes, info_type: int, klass: int, data: bytes, additional: int = 0) -> bytes:
    return struct.pack("<HBBIHHI16s", 33, info_type, klass, len(data), 96, 0, additional, fid) + data


def query_directory_body(fid: bytes, pattern: str = "*", klass: int = 37, flags: int = 0,
                         output_length: int = 65536) -> bytes:
    name = wire.utf16(pattern)
    return struct.pack("<HBBI16sHHI", 33, klass, flags, 0, fid, 96, len(name), output_length) + name


def ioctl_body(fid: bytes, ctl: int, data: bytes = b"", max_output: int = 65536) -> bytes:
    return struct.pack("<HHI16sIIIIIIII", 57, 0, ctl, fid, 120 if data else 0, len(data), 0, 0, 0,
                       max_output, 1, 0) + data          # Flags: SMB2_0_IOCTL_IS_FSCTL


def change_notify_body(fid: bytes, completion_filter: int = 0x17, flags: int = 0,
                       output_length: int = 4096) -> bytes:
    return struct.pack("<HHI16sII", 32, flags, output_length, fid, completion_filter, 0)


def validate_negotiate_body(capabilities: int, guid: bytes, security_mode: int, dialects) -> bytes:
    return struct.pack(f"<I16sHH{len(dialects)}H", capabilities, guid, security_mode, len(dialects), *dialects)


SHORT_BODY = struct.pack("<HH", 4, 0)       # ECHO, LOGOFF, TREE_DISCONNECT


def smb1_negotiate_message(dialects=(b"NT LM 0.12", b"SMB 2.002", b"SMB 2.???")) -> bytes:
    """An SMB1 NEGOTIATE (what old clients open with), without its NetBIOS prefix."""
    names = b"".join(b"\x02" + d + b"\0" for d in dialects)
    return struct.pack("<4sBIBHH8sHHHHHB", b"\xffSMB", 0x72, 0, 0x18, 0xC853, 0, b"\0" * 8, 0,
                       0xFFFF, 1, 0, 0, 0) + struct.pack("<H", len(names)) + names


def compound(messages: list[bytes], related: bool = False) -> bytes:
    """Messages chained into one frame: each but the last padded to 8 bytes and pointing to
    the next by NextCommand; `related`: every one after the first has FLAGS_RELATED."""
    out = bytearray()
    for i, m in enumerate(messages):
        m = bytearray(m)
        if related and i:
            struct.pack_into("<I", m, 16, struct.unpack_from("<I", m, 16)[0] | wire.FLAGS_RELATED)
        if i < len(messages) - 1:
            m += b"\0" * (wire.pad8(len(m)) - len(m))
            struct.pack_into("<I", m, 20, len(m))
        out += m
    return bytes(out)


# -- reading responses ----------------------------------------------------------------------------
def create_contexts_of(response) -> dict[bytes, bytes]:
    """The create contexts of a CREATE response (a raw client's, with `.raw`): name -> data."""
    raw = response.raw
    off, length = struct.unpack_from("<II", raw, 64 + 80)
    out, pos = {}, off
    while length and pos < off + length:
        nxt, name_off, name_len, _r, data_off, data_len = struct.unpack_from("<IHHHHI", raw, pos)
        out[raw[pos + name_off:pos + name_off + name_len]] = raw[pos + data_off:pos + data_off + data_len]
        if not nxt:
            break
        pos += nxt
    return out


def oplock_level_of(response) -> int:
    """The OplockLevel of a CREATE response."""
    return response.raw[66]
