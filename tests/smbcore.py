"""Driving the sans-I/O protocol core in tests: bytes in, effects out, and the effects carried
out here with plain system calls on real files, synchronously, as a shell would."""
from __future__ import annotations

import os

from smbring.smb import effects


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
        elif isinstance(effect, effects.Drain):
            todo[:0] = effect.then(None)
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
