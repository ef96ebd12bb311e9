"""smbring._wire.check_sizes, the sizes a request states checked before its handler reads
its body, against the Python it replaced (the reference below, as Connection._one checked
them): the same status for every command, dialect, CreditCharge, limit and budget, over
random and boundary messages; and its refusals of wrong arguments."""
import random
import struct

import pytest

from smbring._wire import check_sizes
from smbring.smb import wire
from smbring.smb.credits import CREDIT_SIZE, charge_needed
from smbring.smb.dispatch import COMMANDS
from smbring.smb.limits import MAX_IO_SMB202, Limits

DIALECTS = (wire.SMB202, wire.SMB210, wire.SMB300, wire.SMB302, wire.SMB311)


def reference(msg, entry, command, dialect, charge, limits, budget_left) -> int:
    """Connection._one's checks as they were written in Python."""
    size = entry.size
    if len(msg) < 66:
        return wire.STATUS_INVALID_PARAMETER
    given = msg[64] | msg[65] << 8
    if command == wire.OPLOCK_BREAK and given == wire.LEASE_BREAK_ACK_SIZE:
        size = wire.LEASE_BREAK_ACK_SIZE
    if given != size or len(msg) < 64 + (size & ~1):
        return wire.STATUS_INVALID_PARAMETER
    if entry.sent_at or entry.asked_at:
        sent = struct.unpack_from("<I", msg, entry.sent_at)[0] if entry.sent_at else 0
        asked = struct.unpack_from("<I", msg, entry.asked_at)[0] if entry.asked_at else 0
        most = max(sent, asked)
        max_io = MAX_IO_SMB202 if dialect == wire.SMB202 else (
            limits.max_read if command == wire.READ else limits.max_write if command == wire.WRITE
            else limits.max_trans)
        if most > MAX_IO_SMB202 and most > max_io:
            return wire.STATUS_INVALID_PARAMETER
        if most > CREDIT_SIZE and dialect > wire.SMB202 and charge_needed(most) > (charge or 1):
            return wire.STATUS_INVALID_PARAMETER
    else:
        asked = 0
    if asked > budget_left:
        return wire.STATUS_INSUFFICIENT_RESOURCES
    return 0


def a_size(rng: random.Random) -> int:
    """A size field near the bounds that matter: a credit's payload, the limits, 32 bits."""
    return rng.choice([0, 1, 4096, CREDIT_SIZE - 1, CREDIT_SIZE, CREDIT_SIZE + 1, 2 * CREDIT_SIZE,
                       2 * CREDIT_SIZE + 1, 1 << 20, (1 << 20) + 1, 8 << 20, (8 << 20) + 1,
                       0xFFFFFFFF, rng.randrange(1 << 32)])


def a_message(rng: random.Random, command: int) -> bytearray:
    entry = COMMANDS[command]
    size = entry.size if rng.random() < 0.8 else rng.choice(
        [0, entry.size - 1, entry.size + 1, wire.LEASE_BREAK_ACK_SIZE, rng.randrange(1 << 16)])
    length = rng.choice([64 + (entry.size & ~1), 64 + entry.size, 64 + entry.size + rng.randrange(200),
                         rng.randrange(64 + entry.size + 8), 65, 66])
    msg = bytearray(rng.randbytes(max(length, 0)))
    if len(msg) >= 66:
        msg[64:66] = struct.pack("<H", size)
    for at in (entry.sent_at, entry.asked_at):
        if at and len(msg) >= at + 4:
            msg[at:at + 4] = struct.pack("<I", a_size(rng))
    return msg


def test_check_sizes_answers_as_the_python_it_replaced():
    rng = random.Random(1234)
    limits_choices = [Limits(), Limits(max_read=1 << 20, max_write=256 << 10, max_trans=128 << 10),
                      Limits(max_read=MAX_IO_SMB202, max_write=MAX_IO_SMB202, max_trans=MAX_IO_SMB202)]
    seen = set()
    for _ in range(60000):
        command = rng.choice(list(COMMANDS))
        entry = COMMANDS[command]
        msg = a_message(rng, command)
        dialect = rng.choice(DIALECTS)
        charge = rng.choice([0, 1, 2, 3, 16, 17, 128, 129, 0xFFFF])
        limits = rng.choice(limits_choices)
        budget = rng.choice([0, 1, 4096, CREDIT_SIZE, 1 << 20, 8 << 20, 0xFFFFFFFF, -1])
        want = reference(msg, entry, command, dialect, charge, limits, budget)
        got = check_sizes(rng.choice([bytes, bytearray, memoryview])(msg), entry.layout, command,
                          dialect, charge, limits, budget)
        assert got == want, (command, bytes(msg[:80]).hex(), dialect, charge, limits, budget)
        seen.add(want)
    # every outcome was reached: passed, refused as malformed, refused for want of room
    assert seen == {0, wire.STATUS_INVALID_PARAMETER, wire.STATUS_INSUFFICIENT_RESOURCES}


def test_check_sizes_reads_the_limits_only_for_a_request_over_a_credit():
    """A request of one credit's payload or less is checked without the limits (an object
    without them serves); a larger one reads them, and an object without them fails loudly."""
    entry = COMMANDS[wire.READ]
    msg = bytearray(64 + 49)
    msg[64:66] = struct.pack("<H", 49)
    msg[68:72] = struct.pack("<I", 4096)
    assert check_sizes(msg, entry.layout, wire.READ, wire.SMB311, 1, object(), 1 << 20) == 0
    msg[68:72] = struct.pack("<I", 1 << 20)
    with pytest.raises(AttributeError):
        check_sizes(msg, entry.layout, wire.READ, wire.SMB311, 16, object(), 1 << 24)
    assert check_sizes(msg, entry.layout, wire.READ, wire.SMB311, 16, Limits(), 1 << 24) == 0
    assert check_sizes(msg, entry.layout, wire.READ, wire.SMB311, 15, Limits(), 1 << 24) == \
        wire.STATUS_INVALID_PARAMETER


@pytest.mark.parametrize("args", [
    (),                                                         # no arguments
    (b"", (49, 0, 68), 8, 0x311, 1, Limits()),                  # one short
    ("text", (49, 0, 68), 8, 0x311, 1, Limits(), 0),            # not a buffer
    (b"", [49, 0, 68], 8, 0x311, 1, Limits(), 0),               # a list, not a tuple
    (b"", (49, 0), 8, 0x311, 1, Limits(), 0),                   # a layout of two
    (b"", (49, 0, -1), 8, 0x311, 1, Limits(), 0),               # a negative offset
    (b"", (49, 0, 1 << 16), 8, 0x311, 1, Limits(), 0),          # an offset past 64 KiB
    (b"", (49, 0, 68), -1, 0x311, 1, Limits(), 0),              # a negative command
    (b"", (49, 0, 68), 8, 0x311, 1 << 16, Limits(), 0),         # a charge past 16 bits
    (b"", (49, 0, 68), 8, 0x311, 1, Limits(), "0"),             # a budget that is no number
])
def test_check_sizes_refuses_wrong_arguments(args):
    with pytest.raises((TypeError, ValueError)):
        check_sizes(*args)
