"""The core's effects carried out as the server's EffectRunner carries them out, with plain
system calls (tests/smbcore.py), and checked on the way.

A background WRITE may be held back, as the server lets one run while it reads the next
frames (at most WRITES_IN_FLIGHT): it is written when a Drain asks for it, when too many are
held, or when the connection ends; several are written newest first, as the server does not
promise an order. Every effect that names a file descriptor must name one of the connection's
open files at the moment it is carried out: a descriptor the connection has closed may
already stand for another file.
"""
from __future__ import annotations

import os

from smbcore import outcome, read, write

from smbring.server.effects import NETBIOS_MAX, WRITES_IN_FLIGHT, range_operation
from smbring.smb import effects

from smbfuzz_findings import Finding


class Shell:
    def __init__(self, conn, hold_writes: bool, on_message):
        self.conn = conn
        self.hold_writes = hold_writes
        self.on_message = on_message    # called with every response message sent
        self.held: list[effects.Write] = []
        self.forgotten: list[tuple[int, int]] = []

    def run(self, todo: list) -> None:
        """Carries out effects in order, a continuation's before the rest (ConnectionError
        from a continuation ends the connection, as from handle_frame)."""
        todo = list(todo)
        while todo:
            effect = todo.pop(0)
            if isinstance(effect, effects.Send):
                self.send(effect)
            elif isinstance(effect, effects.ReadInto):
                r = effect.range
                self.check_fd(r.fd, effect)
                if len(effect.into) != r.length:
                    raise Finding(f"ReadInto of {r.length} bytes into a buffer of {len(effect.into)}")
                effect.into[:] = read(r.fd, r.length, r.offset)
                todo[:0] = effect.then(r.length)
            elif isinstance(effect, effects.Write) and effect.background and self.hold_writes:
                self.check_fd(effect.fd, effect)
                if len(self.held) >= WRITES_IN_FLIGHT:
                    self.complete(self.held.pop(0))
                self.held.append(effect)
            elif isinstance(effect, effects.Write):
                self.check_fd(effect.fd, effect)
                todo[:0] = effect.then(outcome(lambda: write(effect.fd, effect.data, effect.offset)))
            elif isinstance(effect, effects.Flush):
                self.check_fd(effect.fd, effect)
                todo[:0] = effect.then(outcome(lambda: os.fsync(effect.fd) or 0))
            elif isinstance(effect, effects.Drain):
                self.drain(effect.fd, effect.start, effect.end)
                todo[:0] = effect.then(None)
            elif isinstance(effect, effects.Forget):
                self.forgotten.append((effect.dev, effect.ino))
            elif isinstance(effect, effects.RANGE_OPERATIONS):
                for fd in {getattr(effect, name) for name in ("fd", "src_fd", "dst_fd") if hasattr(effect, name)}:
                    self.check_fd(fd, effect)
                    if any(w.fd == fd for w in self.held):
                        raise Finding(f"{type(effect).__name__} while a background WRITE of the file runs")
                todo[:0] = effect.then(outcome(lambda: range_operation(effect)))
            else:
                raise Finding(f"an effect the shell does not know: {effect!r}")

    def send(self, effect: effects.Send) -> None:
        payload = effect.payload
        if isinstance(payload, effects.FileRange):
            self.check_fd(payload.fd, effect)
            payload = read(payload.fd, payload.length, payload.offset)
        message = bytes(effect.message) + (bytes(payload) if payload is not None else b"")
        if len(message) > NETBIOS_MAX:
            raise Finding(f"a response of {len(message)} bytes: too long for the 24-bit NetBIOS length")
        self.on_message(message)

    def drain(self, fd: int | None = None, start: int = 0, end: int = 0) -> None:
        """Writes the held WRITEs (with `fd`, those overlapping its bytes start to end)."""
        ahead = [w for w in self.held
                 if fd is None or (w.fd == fd and w.offset < end and start < w.offset + len(w.data))]
        for w in reversed(ahead):
            self.held.remove(w)
            self.complete(w)

    def complete(self, w: effects.Write) -> None:
        self.check_fd(w.fd, w)
        self.run(w.then(outcome(lambda: write(w.fd, w.data, w.offset))))

    def check_fd(self, fd: int, effect) -> None:
        if not any(o.fd == fd for o in self.conn.opens.values()):
            raise Finding(f"{type(effect).__name__} on descriptor {fd}, which is none of the "
                          "connection's open files")
