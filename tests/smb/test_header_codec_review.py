"""The SMB2 header codec in C (smbring._wire, behind wire.Header.parse and pack), against a
reference reading of MS-SMB2 2.2.1 written here with struct: boundary and random headers read
as the reference reads them and packed back to the same bytes; what is not a header (wrong
types, buffers of every kind, values no field holds, classes not its own) raises, never
crashes. Run under AddressSanitizer by `make test-asan`."""
from __future__ import annotations

import os
import random
import struct
import subprocess
import sys
import textwrap

import pytest

from smbring.smb import wire


def header(command: int, message_id: int, *, credits: int = 1, flags: int = 0, next_command: int = 0,
           protocol: bytes = wire.PROTOCOL_ID, structure_size: int = 64) -> bytes:
    return struct.pack("<4sHHIHHIIQIIQ16s", protocol, structure_size, 0, 0, command, credits, flags,
                       next_command, message_id, 0, 0, 0, bytes(16))


REFERENCE = struct.Struct("<4sHHIHHIIQQQ16s")      # MS-SMB2 2.2.1, as struct reads it


def reference_parse(raw) -> dict:
    """The header at raw's start as MS-SMB2 2.2.1 lays it out (ValueError as Header.parse:
    short, or not SMB2's ProtocolId and StructureSize)."""
    raw = bytes(raw)
    if len(raw) < 64:
        raise ValueError("short")
    (protocol, structure_size, charge, status, command, credits, flags, next_command, message_id,
     word, session_id, signature) = REFERENCE.unpack_from(raw)
    if protocol != wire.PROTOCOL_ID or structure_size != 64:
        raise ValueError("not SMB2")
    is_async = bool(flags & wire.FLAGS_ASYNC)
    return dict(command=command, status=status, flags=flags, credit_charge=charge, credits=credits,
                next_command=next_command, message_id=message_id,
                tree_id=0 if is_async else word >> 32, async_id=word if is_async else 0,
                session_id=session_id, signature=signature, signer=None)


def check_against_reference(raw) -> None:
    try:
        want = reference_parse(raw)
    except ValueError:
        with pytest.raises(ValueError):
            wire.Header.parse(raw)
        return
    got = wire.Header.parse(raw)
    assert {name: getattr(got, name) for name in want} == want, bytes(raw[:64]).hex()
    packed = bytearray(bytes(raw[:64]))
    if not want["flags"] & wire.FLAGS_ASYNC:
        packed[32:36] = bytes(4)            # (Reserved, not kept)
    assert got.pack() == bytes(packed)


# (offset, size) of each field after ProtocolId
FIELDS = [(4, 2), (6, 2), (8, 4), (12, 2), (14, 2), (16, 4), (20, 4), (24, 8), (32, 4), (36, 4),
          (40, 8), (48, 16)]


def boundary_headers():
    base = bytearray(header(wire.ECHO, 7, credits=3))
    for at, size in FIELDS:
        top = (1 << (8 * size)) - 1
        for value in {0, 1, 2, 63, 64, 65, top, top - 1, top >> 1, (top >> 1) + 1,
                      int("55" * size, 16), int("AA" * size, 16)}:
            raw = bytearray(base)
            raw[at:at + size] = value.to_bytes(size, "little")
            yield raw
    for flags in range(1 << 8):                 # every combination of the low flags, and the high ones
        for high in (0, wire.FLAGS_DFS, wire.FLAGS_REPLAY, 0xFFFFFF00):
            raw = bytearray(base)
            raw[16:20] = (flags | high).to_bytes(4, "little")
            raw[32:40] = os.urandom(8)
            yield raw
    for protocol in (b"\xfdSMB", b"\xffSMB", b"\x00SMB", b"\xfeSMb", b"\xfeSM\x00", bytes(4), b"\xff" * 4):
        raw = bytearray(base)
        raw[:4] = protocol
        yield raw
    for length in range(65):
        yield base[:length]


def test_boundary_headers_read_as_the_reference_reads_them():
    for raw in boundary_headers():
        inside = memoryview(b"\0" * 3 + bytes(raw) + b"tail")[3:]
        for buf in (bytes(raw), raw, memoryview(bytes(raw)), inside):
            check_against_reference(buf)


def test_random_headers_read_as_the_reference_reads_them():
    rng = random.Random(2026)
    for _ in range(20000):
        raw = bytearray(rng.randbytes(64 + rng.choice((0, 0, 1, 100))))
        if rng.random() < 0.9:
            raw[:4] = wire.PROTOCOL_ID
        if rng.random() < 0.9:
            raw[4:6] = b"\x40\x00"
        if rng.random() < 0.05:
            raw = raw[:rng.randrange(64)]
        check_against_reference(raw)


@pytest.mark.parametrize("buf, error", [
    (None, TypeError), (64, TypeError), ("\xfeSMB" + "\0" * 60, TypeError), ([0] * 64, TypeError),
    (memoryview(bytes(256))[::2], BufferError),                     # not contiguous
    (memoryview(bytes(128))[::-1], BufferError),                    # backwards
])
def test_what_is_not_a_buffer_of_a_header_is_refused(buf, error):
    with pytest.raises(error):
        wire.Header.parse(buf)


def test_buffers_of_any_kind_are_read_as_their_bytes():
    import array
    import mmap
    raw = header(wire.READ, 99, credits=5)
    want = reference_parse(raw)
    as_words = array.array("I", raw)            # (items of 4 bytes: read as its bytes)
    with mmap.mmap(-1, 4096) as mapped:
        mapped[:64] = raw
        for buf in (raw, bytearray(raw), memoryview(raw), as_words, memoryview(as_words), mapped,
                    memoryview(mapped)[:64], memoryview(bytearray(raw)).toreadonly()):
            got = wire.Header.parse(buf)
            assert {name: getattr(got, name) for name in want} == want
            del got
    released = memoryview(raw)
    released.release()
    with pytest.raises(ValueError):
        wire.Header.parse(released)


@pytest.mark.parametrize("field", ["command", "status", "flags", "credit_charge", "credits",
                                   "next_command", "message_id", "tree_id", "session_id", "async_id"])
@pytest.mark.parametrize("value", [-1, -(1 << 63), -(1 << 64) - 1, 1 << 64, (1 << 64) + 1, 1 << 200,
                                   2.0, "1", None, b"\x01", 10 ** 40])
def test_a_value_no_field_holds_is_refused(field, value):
    h = wire.Header(wire.ECHO, flags=wire.FLAGS_ASYNC if field == "async_id" else 0)
    setattr(h, field, value)
    with pytest.raises(struct.error):
        h.pack()


def test_the_largest_value_of_each_field_is_packed():
    class Big(int):
        pass
    h = wire.Header(command=0xFFFF, status=0xFFFFFFFF, flags=0xFFFFFFFF & ~wire.FLAGS_ASYNC,
                    credit_charge=Big(0xFFFF), credits=True, next_command=0xFFFFFFFF,
                    message_id=(1 << 64) - 1, tree_id=0xFFFFFFFF, session_id=Big((1 << 64) - 1))
    assert h.pack() == REFERENCE.pack(wire.PROTOCOL_ID, 64, 0xFFFF, 0xFFFFFFFF, 0xFFFF, 1,
                                      0xFFFFFFFF & ~wire.FLAGS_ASYNC, 0xFFFFFFFF, (1 << 64) - 1,
                                      0xFFFFFFFF << 32, (1 << 64) - 1, bytes(16))
    h.flags, h.async_id = 0xFFFFFFFF, (1 << 64) - 1
    assert h.pack()[32:40] == b"\xff" * 8


@pytest.mark.parametrize("signature", [memoryview(bytes(16)), [0] * 16, 16, None, "s" * 16])
def test_a_signature_that_is_not_bytes_is_refused(signature):
    with pytest.raises(struct.error):
        wire.Header(wire.ECHO, signature=signature).pack()


def test_the_codec_is_made_only_for_a_class_of_its_own_slots():
    """HeaderCodec writes the fields straight into an instance's slots, at the offsets its
    class's member descriptors give: a class carrying another class's descriptors (set on
    it as attributes) must be refused, or the other class's offsets land on whatever this
    class keeps there (here BaseException's C fields: the interpreter crashed). Run in a
    child process: a crash is seen as one, not as this test run ending."""
    child = textwrap.dedent("""
        import dataclasses
        from smbring._wire import HeaderCodec
        from smbring.smb import wire

        class Foreign(BaseException):
            __slots__ = tuple(f"pad{i}" for i in range(12))

        for f in dataclasses.fields(wire.Header):
            setattr(Foreign, f.name, wire.Header.__dict__[f.name])
        try:
            codec = HeaderCodec(Foreign)
        except TypeError:
            print("refused")
        else:
            h = codec.parse(bytes.fromhex("fe534d42400000000500000007000100090000") + bytes(45))
            try:
                raise h
            except BaseException:
                import traceback
                traceback.format_exc()
            print("accepted")
        for bad in ((), (int,), (wire.Header, wire.Header)):
            try:
                HeaderCodec(*bad)
            except TypeError:
                pass
            else:
                print("accepted", bad)
        try:
            HeaderCodec(wire.Header, cls=wire.Header)
        except TypeError:
            pass
        else:
            print("accepted keywords")
    """)
    run = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, f"the child process died ({run.returncode}): {run.stderr[-2000:]}"
    assert run.stdout.split() == ["refused"], run.stdout
