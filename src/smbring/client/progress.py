"""A one-line progress bar for long transfers: bytes, percentage, rate and time left.

Drawn on a terminal only (the CLI checks), redrawn at most REDRAW times a second with a
carriage return, and cleared at the end. The total grows as a tree transfer finds its files
(``expect``), so the percentage and ETA are of what is known so far.
"""
from __future__ import annotations

import time

REDRAW = 5          # redraws per second at most
WIDTH = 24          # characters of the bar itself


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class Progress:
    def __init__(self, stream, *, clock=time.monotonic):
        self.stream, self.clock = stream, clock
        self.total = 0
        self.done = 0
        self.started = clock()
        self._drawn_at = 0.0
        self._width = 0

    def expect(self, nbytes: int) -> None:
        self.total += nbytes
        self._draw()

    def advance(self, nbytes: int) -> None:
        self.done += nbytes
        now = self.clock()
        if now - self._drawn_at >= 1 / REDRAW:
            self._draw(now)

    def line(self, now: float | None = None) -> str:
        now = self.clock() if now is None else now
        elapsed = max(now - self.started, 1e-6)
        rate = self.done / elapsed
        fraction = min(1.0, self.done / self.total) if self.total else 0.0
        filled = int(fraction * WIDTH)
        bar = "#" * filled + "-" * (WIDTH - filled)
        eta = "--:--"
        if rate > 0 and self.total > self.done:
            eta = _clock((self.total - self.done) / rate)
        elif self.total and self.done >= self.total:
            eta = "0:00"
        return (f"[{bar}] {fraction * 100:5.1f}% {_size(self.done)} of {_size(self.total)}  "
                f"{_size(rate)}/s  ETA {eta}")

    def _draw(self, now: float | None = None) -> None:
        now = self.clock() if now is None else now
        self._drawn_at = now
        text = self.line(now)
        self.stream.write("\r" + text.ljust(self._width))
        self.stream.flush()
        self._width = len(text)

    def end(self) -> None:
        """Clears the bar's line (what was moved is printed by the caller)."""
        self.stream.write("\r" + " " * self._width + "\r")
        self.stream.flush()
