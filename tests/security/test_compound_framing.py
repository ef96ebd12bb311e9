"""How a real server splits a frame into its requests at NextCommand (MS-SMB2 2.2.1, 3.3.5.2.7),
answered as Samba's smbd answers it (source3/smbd/smb2_server.c,
smbd_smb2_inbuf_parse_compound): a part must hold the 64-byte header and the body's
StructureSize (66 bytes at least) and end inside the frame, or the connection is dropped;
a NextCommand that is not a multiple of 8 is followed as it is, and the last part may be
padded or not. The frames are raw bytes sent through a socket, each request an ECHO (no
session needed), so each layout is exactly the one named.
"""
import struct

import pytest
from raw import Disconnected
from smbcore import SHORT_BODY as ECHO

from smbring.smb import wire

NEXT_COMMAND_AT = 20


@pytest.fixture(scope="module")
def server(servers):
    return servers()


@pytest.fixture
def client(server):
    c = server.client(timeout=5.0)
    assert c.negotiate((wire.SMB311,)).status == wire.STATUS_SUCCESS
    return c


def echo(c, body: bytes = ECHO, tail: bytes = b"") -> bytearray:
    """One ECHO request (the next MessageId), its body followed by `tail`."""
    return c.message(wire.ECHO, body) + tail


def chained(parts: list[bytearray], next_commands: list[int]) -> bytes:
    """The parts one after the other, each but the last pointing at the next with the
    NextCommand given (whatever the parts' sizes)."""
    frame = bytearray()
    for part, next_command in zip(parts, next_commands + [0]):
        struct.pack_into("<I", part, NEXT_COMMAND_AT, next_command)
        frame += part
    return bytes(frame)


def send(c, frame: bytes) -> None:
    c.send_frame(len(frame).to_bytes(4, "big") + frame)


def answered(c, parts) -> list[int]:
    """The status of each part's answer."""
    return [c.response_to(wire.Header.parse(p).message_id).status for p in parts]


def dropped(c) -> bool:
    try:
        c.recv_frame()
    except Disconnected:
        return True
    return False


def test_an_aligned_compound_is_answered(client):
    first, second = echo(client, tail=bytes(4)), echo(client)
    send(client, chained([first, second], [72]))
    assert answered(client, [first, second]) == [wire.STATUS_SUCCESS] * 2


@pytest.mark.parametrize("padding", [0, 1, 3])
def test_a_next_command_that_is_no_multiple_of_8_is_followed_as_samba_follows_it(client, padding):
    # 68, 69, 71: Samba has no alignment check on a request (MS-SMB2 3.3.5.2.7 has a server
    # SHOULD disconnect; smbd answers each request)
    first = echo(client, tail=bytes(padding))
    second, third = echo(client), echo(client)
    send(client, chained([first, second, third], [len(first), len(second)]))
    assert len(first) % 8
    assert answered(client, [first, second, third]) == [wire.STATUS_SUCCESS] * 3


@pytest.mark.parametrize("padding", [0, 4, 5])
def test_the_last_part_padded_or_not_is_answered(client, padding):
    first, second = echo(client, tail=bytes(4)), echo(client, tail=bytes(padding))
    send(client, chained([first, second], [len(first)]))
    assert answered(client, [first, second]) == [wire.STATUS_SUCCESS] * 2


@pytest.mark.parametrize("beyond", [1, 8, 4096, 0xFFFFFFFF])
def test_a_next_command_past_the_frame_drops_the_connection(client, beyond):
    first, second = echo(client, tail=bytes(4)), echo(client)
    next_command = min(len(first) + len(second) + beyond, 0xFFFFFFFF)
    send(client, chained([first, second], [next_command]))
    assert dropped(client)


@pytest.mark.parametrize("next_command", [1, 8, 32, 63])
def test_a_next_command_inside_the_header_drops_the_connection(client, next_command):
    first, second = echo(client, tail=bytes(4)), echo(client)
    send(client, chained([first, second], [next_command]))
    assert dropped(client)


@pytest.mark.parametrize("body", [b"", b"\x04"], ids=["header-only", "one-byte-body"])
def test_a_part_without_its_structure_size_drops_the_connection(client, body):
    # NextCommand 64 or 65, a whole header and then the next request: Samba wants the header
    # and the body's two-byte StructureSize (SMB2_HDR_BODY + 2) before it looks at a request
    first, second = echo(client, body=body), echo(client)
    send(client, chained([first, second], [len(first)]))
    assert len(first) in (64, 65)
    assert dropped(client)


@pytest.mark.parametrize("body", [b"", b"\x04"], ids=["header-only", "one-byte-body"])
def test_a_last_part_without_its_structure_size_drops_the_connection(client, body):
    first, last = echo(client, tail=bytes(4)), echo(client, body=body)
    send(client, chained([first, last], [len(first)]))
    assert dropped(client)


@pytest.mark.parametrize("body", [b"", b"\x04"], ids=["header-only", "one-byte-body"])
def test_a_lone_request_without_its_structure_size_drops_the_connection(client, body):
    send(client, bytes(echo(client, body=body)))
    assert dropped(client)


def test_the_server_answers_others_after_a_dropped_connection(server, client):
    send(client, chained([echo(client), echo(client)], [64]))
    assert dropped(client)
    other = server.client(timeout=5.0)
    assert other.negotiate((wire.SMB311,)).status == wire.STATUS_SUCCESS
    assert other.echo().status == wire.STATUS_SUCCESS


def test_a_request_without_its_structure_size_behind_another_in_one_send_drops_the_connection(client):
    # two frames in one send: the first is answered, the second drops the connection
    first, short = echo(client), echo(client, body=b"")
    client.send_frame(len(first).to_bytes(4, "big") + bytes(first) +
                      len(short).to_bytes(4, "big") + bytes(short))
    assert answered(client, [first]) == [wire.STATUS_SUCCESS]
    assert dropped(client)
