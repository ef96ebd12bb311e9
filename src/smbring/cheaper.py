"""Choosing between two ways of doing the same thing by measuring them as they are used.

Which is cheaper often depends on the machine, not the code: a page-cache write against a
direct one (what a fresh page costs: in a VM whose host takes freed memory back, more than the
disk), a read copied through memory against one spliced from the page cache (what a syscall
and a page reference cost against a copy). Benchmarks on one machine cannot settle it for the
next, so the I/O layer measures both on the machine it runs on and keeps doing so.
"""
from __future__ import annotations


class CheaperOf:
    """Moving averages of the cost per unit (seconds per byte, say) of two ways `first` and
    `second`. Each is tried once (first, then second); after that the cheaper is picked, and
    every `explore`-th pick starts a run of `run` picks the other way so that a change (the
    page cache filling up, the disk getting busy) is noticed. A way that turned out impossible
    can be ruled out.

    Some costs depend on what was done before: a send that leaves data queued behind the
    socket's pacing is paid for by timers that fire during the sends after it, and how a TCP
    connection paces depends on the traffic it has seen for a while. Where that happens,
    `settle` ignores that many samples after each change of way (they pay for the other way,
    or run in its conditions), and `run` must be longer than `settle` to leave samples to
    keep. Where samples are noisy, `margin` keeps the way in use until the other measures
    that much cheaper (0.2: 20%), so that a few lucky samples do not send every pick the
    dearer way until it has been measured up again."""

    def __init__(self, first: str, second: str, explore: int = 64, run: int = 1,
                 settle: int = 0, margin: float = 0.0):
        self.cost: dict[str, float | None] = {first: None, second: None}
        self.first, self.second = first, second
        self.explore, self.run, self.settle, self.margin = explore, run, settle, margin
        self._best = first
        self.possible = {first: True, second: True}
        self.picks = 0
        self._run_left = 0            # picks left in the current run the other way
        self._last_recorded: str | None = None
        self._settling = 0            # samples still to ignore after the last change of way

    def pick(self, explore: bool = True) -> str:
        """The way to take now. explore=False: never the other way for the sake of measuring
        it (for a caller that could not measure this pick anyway)."""
        self.picks += 1
        if not self.possible[self.second]:
            return self.first
        if not self.possible[self.first]:
            return self.second
        if self.cost[self.first] is None:
            return self.first
        if self.cost[self.second] is None:
            return self.second
        best = self.best()
        other = self.first if best == self.second else self.second
        if explore and self._run_left:
            self._run_left -= 1
            return other
        if explore and self.picks % self.explore == 0:
            self._run_left = self.run - 1
            return other
        return best

    def record(self, way: str, cost: float, units: int) -> None:
        if way != self._last_recorded:
            self._last_recorded, self._settling = way, self.settle
        if self._settling:
            self._settling -= 1
            return
        sample = cost / units
        old = self.cost[way]
        self.cost[way] = sample if old is None else 0.75 * old + 0.25 * sample

    def best(self) -> str | None:
        """The way measured cheaper so far (None until both are measured)."""
        a, b = self.cost[self.first], self.cost[self.second]
        if a is None or b is None:
            return None
        if self._best == self.first and b < a * (1 - self.margin):
            self._best = self.second
        elif self._best == self.second and a < b * (1 - self.margin):
            self._best = self.first
        return self._best

    def rule_out(self, way: str) -> None:
        self.possible[way] = False

    def __repr__(self) -> str:
        costs = ", ".join(f"{w} {c * 1e9:.2f} ns/unit" if c is not None else f"{w} unmeasured"
                          for w, c in self.cost.items())
        return f"<CheaperOf {costs}>"
