"""An upload's WRITE answers are taken by Channel._write_answer, a shorter way than _deliver's.
It must take only what _deliver would take as it stands, and with the same effect: every
answer here, a good one and each of its headers altered byte by byte, goes both ways, on two
channels in the same state, and whatever the short way takes, _deliver takes too, leaving
the same credits, the same requests waiting and the same result; whatever _deliver refuses,
the short way leaves to it. The upload's pump (files._WritePump) with a count the server
lies about: see test_lying_server (test_wrong_write_count_fails_the_upload...)."""
import asyncio
import socket
import struct

import pytest

from smbring.client.channel import Channel, SessionKeys
from smbring.client.errors import ProtocolError
from smbring.smb import wire

SESSION = 0x1234_0000_0001
MESSAGE_ID = 7
OTHER_ID = 9            # a READ waiting on the same channel
_HEADER = struct.Struct("<4sHHIHHIIQIIQ16s")


class Waiter:
    """Stands for a request's future (what a _WritePump's WRITE gives the channel)."""

    def __init__(self):
        self.result = None

    def done(self) -> bool:
        return self.result is not None

    def set_result(self, response) -> None:
        self.result = ("answer", response.status, bytes(response.message))

    def set_exception(self, error) -> None:
        self.result = ("error", type(error).__name__)


def answer(status=wire.STATUS_SUCCESS, flags=wire.FLAGS_SERVER_TO_REDIR, credits=5,
           message_id=MESSAGE_ID, session_id=SESSION) -> bytes:
    header = _HEADER.pack(wire.PROTOCOL_ID, wire.HEADER_SIZE, 1, status, wire.WRITE, credits,
                          flags, 0, message_id, 0, 0xAB, session_id, b"\0" * 16)
    return header + struct.pack("<HHIIHH", 17, 0, 65536, 0, 0, 0)


def interim() -> bytes:
    return answer(status=wire.STATUS_PENDING, flags=wire.FLAGS_SERVER_TO_REDIR | wire.FLAGS_ASYNC)


def alterations(frame: bytes):
    """The frame itself, then each header byte changed in a few ways."""
    yield frame
    for at in range(wire.HEADER_SIZE):
        for value in {frame[at] ^ 0x01, frame[at] ^ 0x02, frame[at] ^ 0x80, 0x00, 0xFF,
                      wire.READ if at == 12 else 0x00}:
            if value != frame[at]:
                yield frame[:at] + bytes([value]) + frame[at + 1:]


def channel(sock: socket.socket, keys: SessionKeys | None) -> tuple[Channel, Waiter]:
    ch = Channel(sock)
    ch.keys = keys
    if keys is not None:
        ch.register(keys)
    ch._balance, ch._in_flight, ch._next_id = 10, 2, 11
    waiter = Waiter()
    ch._register(MESSAGE_ID, 1, wire.WRITE, keys, False, None, waiter)
    ch._register(OTHER_ID, 1, wire.READ, keys, False, None, Waiter())
    return ch, waiter


def state(ch: Channel, waiter: Waiter):
    return ch._balance, ch._in_flight, sorted(ch._pending), ch.answered, waiter.result


async def both_ways(frame: bytes, keys: SessionKeys | None, signed: bool = False):
    """(taken by the short way, refused by _deliver, the two channels' states after)."""
    pairs = [socket.socketpair() for _ in range(2)]
    try:
        short, short_waiter = channel(pairs[0][0], keys)
        full, full_waiter = channel(pairs[1][0], keys)
        short._pending[MESSAGE_ID].signed = full._pending[MESSAGE_ID].signed = signed
        before = state(short, short_waiter)
        taken = short._write_answer(memoryview(frame), 0, len(frame))
        if not taken:
            assert state(short, short_waiter) == before, "not taken, yet something changed"
        try:
            full._deliver(bytearray(frame))
            refused = False
        except ProtocolError:
            refused = True
        return taken, refused, state(short, short_waiter), state(full, full_waiter)
    finally:
        for a, b in pairs:
            a.close()
            b.close()


@pytest.mark.parametrize("keys", [SessionKeys(session_id=SESSION), None],
                         ids=["session", "no keys"])
@pytest.mark.parametrize("base", [answer(), interim(), answer(status=0xC000007F)],
                         ids=["final", "interim", "disk full"])
def test_the_short_way_takes_only_what_deliver_takes(base, keys):
    async def main():
        taken_any = refused_any = 0
        for frame in alterations(base):
            taken, refused, short, full = await both_ways(frame, keys)
            if taken:
                assert not refused, f"taken, but _deliver refuses {frame[:64].hex()}"
                assert short == full, frame[:64].hex()
            taken_any += taken
            refused_any += refused
        assert taken_any and refused_any     # both kinds were seen
    asyncio.run(main())


@pytest.mark.parametrize("keys, signed", [
    (SessionKeys(session_id=SESSION, signing_key=b"k" * 16, sign=True), True),
    (SessionKeys(session_id=SESSION, encrypt=True, cipher=1, encrypt_key=b"k" * 16,
                 decrypt_key=b"k" * 16), False),
], ids=["signed", "sealed"])
def test_answers_of_a_session_that_signs_or_seals_are_left_to_deliver(keys, signed):
    async def main():
        for frame in (answer(), interim()):
            taken, refused, _short, _full = await both_ways(frame, keys, signed)
            assert not taken
        # an unsigned final answer on a signed session, an unsealed one on a sealed session
        assert (await both_ways(answer(), keys, signed))[1]
    asyncio.run(main())
