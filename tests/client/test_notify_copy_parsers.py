"""The parsers of the client's change notify and server-side copy answers, fed what a hostile
server could send: well-formed answers come back as sent, and every mutation of them and every
random buffer gives either a result or ProtocolError, never another exception, and a name only
from inside the buffer."""
import random
import struct

import pytest

from smbring.client import messages as m
from smbring.client.errors import ProtocolError
from smbring.smb import wire


def notifications(entries) -> bytes:
    return wire.chain(struct.pack("<III", 0, action, len(wire.utf16(name))) + wire.utf16(name)
                      for action, name in entries)


def ioctl_answer(control: int, output: bytes) -> bytes:
    header = bytes(wire.HEADER_SIZE)
    return header + struct.pack("<HHI16sIIIIII", 49, 0, control, b"\xff" * 16, 0, 0,
                                wire.HEADER_SIZE + 48, len(output), 0, 0) + output


def test_notifications_come_back_as_sent():
    entries = [(1, "a.txt"), (4, "sub\\old"), (5, "sub\\new"), (6, "f:stream"), (2, "é" * 40)]
    assert m.parse_notifications(notifications(entries)) == entries
    assert m.parse_notifications(b"") == []


def test_mutated_and_random_notifications_are_refused_or_parsed_within_the_buffer():
    rng = random.Random(20261206)
    good = notifications([(1, "a.txt"), (3, "dir\\b"), (5, "ccc")])
    for i in range(20000):
        if i % 2:
            buf = bytearray(good)
            for _ in range(rng.randint(1, 4)):
                buf[rng.randrange(len(buf))] = rng.randrange(256)
            buf = bytes(buf[:rng.randint(0, len(buf))]) if i % 3 == 0 else bytes(buf)
        else:
            buf = rng.randbytes(rng.randint(0, 64))
        try:
            found = m.parse_notifications(buf)
        except ProtocolError:
            continue
        assert all(len(wire.utf16(name)) <= len(buf) for _action, name in found)


def test_copy_answers():
    key = bytes(range(24))
    assert m.parse_resume_key(ioctl_answer(wire.FSCTL_SRV_REQUEST_RESUME_KEY, key + bytes(8))) == key
    with pytest.raises(ProtocolError, match="resume key of 20 bytes"):
        m.parse_resume_key(ioctl_answer(wire.FSCTL_SRV_REQUEST_RESUME_KEY, key[:20]))
    with pytest.raises(ProtocolError, match="another control"):
        m.parse_resume_key(ioctl_answer(wire.FSCTL_SRV_COPYCHUNK_WRITE, key + bytes(8)))
    assert m.parse_copychunk(ioctl_answer(wire.FSCTL_SRV_COPYCHUNK_WRITE, struct.pack("<III", 3, 0, 99))) == \
        (3, 0, 99)
    for output in (b"", bytes(8), bytes(16)):       # too short, or more than asked for
        with pytest.raises(ProtocolError):
            m.parse_copychunk(ioctl_answer(wire.FSCTL_SRV_COPYCHUNK_WRITE, output))
    answer = bytearray(ioctl_answer(wire.FSCTL_SRV_COPYCHUNK_WRITE, struct.pack("<III", 3, 0, 99)))
    struct.pack_into("<I", answer, wire.HEADER_SIZE + 32, 1 << 20)      # OutputOffset past the end
    with pytest.raises(ProtocolError):
        m.parse_copychunk(bytes(answer))


def test_a_copy_request_carries_its_chunks():
    request = m.copychunk_request(b"F" * 16, b"K" * 24, [(0, 0, 1 << 20), (1 << 20, 1 << 20, 5)])
    size, _r, control, fid, in_off, in_len = struct.unpack_from("<HHI16sII", request, 0)
    assert (size, control, fid) == (57, wire.FSCTL_SRV_COPYCHUNK_WRITE, b"F" * 16)
    data = request[in_off - wire.HEADER_SIZE:]
    assert len(data) == in_len == wire.COPY_HEADER.size + 2 * wire.CHUNK.size
    assert wire.COPY_HEADER.unpack_from(data) == (b"K" * 24, 2, 0)
    assert wire.CHUNK.unpack_from(data, wire.COPY_HEADER.size + wire.CHUNK.size) == (1 << 20, 1 << 20, 5, 0)


def test_validate_negotiate_answers():
    """The server's 24 bytes come back as sent; another control, fewer bytes, more than the
    24 the request allowed, or an output outside the message is ProtocolError."""
    guid = bytes(range(16))
    good = struct.pack("<I16sHH", 0x7F, guid, 1, wire.SMB302)
    assert m.parse_validate_negotiate(ioctl_answer(m.FSCTL_VALIDATE_NEGOTIATE_INFO, good)) == \
        (0x7F, guid, 1, wire.SMB302)
    for bad in (ioctl_answer(m.FSCTL_VALIDATE_NEGOTIATE_INFO, good[:12]),
                ioctl_answer(m.FSCTL_VALIDATE_NEGOTIATE_INFO, good + bytes(8)),
                ioctl_answer(m.FSCTL_QUERY_NETWORK_INTERFACE_INFO, good),
                ioctl_answer(m.FSCTL_VALIDATE_NEGOTIATE_INFO, good)[:-4]):
        with pytest.raises(ProtocolError):
            m.parse_validate_negotiate(bad)
