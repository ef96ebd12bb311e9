"""`busy poll`: the event loop keeps looking for the next request for a while after an answer,
instead of going to sleep at once.

At one request in flight a client's next request follows the server's answer within tens of
microseconds on a fast link, and the server process has gone to sleep in the meantime: its
wake-up (the scheduler, a virtual machine's CPU leaving and re-entering its idle state) costs
about as much as serving a small request. Linux's socket busy polling (`net.core.busy_read`,
SO_BUSY_POLL, io_uring's NAPI polling) does not apply to loopback or to a readiness-driven loop;
this is the same idea in the loop: after a frame is answered the loop is kept turning (each
turn a look at every socket without blocking) for a while, then sleeps as usual.

It spends CPU to save latency, so it is off unless the administrator sets a budget, and it
looks no longer than the clients' pace makes worth it:
- how long: twice the median time from an answer to the next request over the last GAPS
  answers of the same command, at most the budget; a look that long catches the requests
  that follow quickly and gives up soon on those that do not. Counted per command because a
  client's pace depends on what it was answered: copying files, smbclient sends the next
  request within tens of microseconds of a CREATE's, QUERY_INFO's or CLOSE's answer, but
  writes the data of a READ's answer to its disk first (a gap of most of a millisecond):
  after a READ's answer the loop then sleeps at once, where a look would only burn CPU;
- not at all while that median is above the budget (slow clients, a link whose round trip is
  longer than the budget), while requests came over more than one connection (several
  clients keep the loop busy, and a look would take CPU from them and from the clients on the
  same machine), or while more processes are ready to run than there are CPUs: the loop
  sleeps at once, as without busy polling;
- a turn that found nothing to do yields the CPU (sched_yield) to whatever else is ready to
  run on it, a client on the same machine included, so a looking server never holds up the
  process it waits for; a yield that let another process run ends the look, and looks stop
  until the next GAPS answers (the CPUs are busy: looking would take time from others).
"""
from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable

MAX_BUDGET_US = 10_000      # 10 ms: beyond that the loop would rather sleep
GAPS = 16                   # answers over which the look's length is worked out again
GIVEN_AWAY = 20e-6          # a yield that took longer let another process run


def budget_us(value: int) -> int:
    """A budget in microseconds, checked: 0 (off) up to MAX_BUDGET_US."""
    if not 0 <= value <= MAX_BUDGET_US:
        raise ValueError(f"0 (off) to {MAX_BUDGET_US} microseconds, not {value}")
    return value


def look_for(gaps: list[float], budget: float) -> float:
    """How long to look after an answer, given the last gaps from an answer to the next
    request (seconds): twice their median, at most the budget; 0 when the median is longer
    than the budget."""
    median = sorted(gaps)[len(gaps) // 2]
    return 0.0 if median > budget else min(budget, 2 * median)


class BusyPoll:
    """One server process's busy polling (each worker has its own). `served(serve)` wraps the
    function that answers what a connection's readiness callback received (Receiver.serve);
    the budget may change while serving (a reload): 0 turns it off."""

    def __init__(self, budget: int = 0):
        self.set_budget(budget)
        self.deadline = 0.0
        self.turning = False        # a turn is scheduled
        self.answered_at = 0.0      # when the last answer left (0: a request came since)
        self.answered_command = None    # the command of that answer (its gap is counted under it)
        self.served_since_turn = False
        self.last_served = None     # the connection served last (its busy_serve)
        self.turns = 0              # turns of the loop spent looking (for tests)
        self.looking = 0.0          # seconds the loop spent looking, in all (metrics)
        self._last_turn = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._cpus = len(os.sched_getaffinity(0))
        self.unserved_noted = False  # the server said it cannot look (no io_uring transport)

    def set_budget(self, budget: int) -> None:
        self.budget = budget_us(budget) / 1e6     # (seconds)
        # looks at all: not while requests come over several connections or the CPUs are
        # busy (worked out again every GAPS gaps, counting `switches` between connections)
        self.allowed = True
        self.switches = 0
        self.counted = 0            # gaps since `allowed` was worked out
        # per command answered: how long the loop looks after such an answer (the budget
        # until GAPS gaps after it are measured), and those gaps
        self.looks: dict[int | None, float] = {}
        self.gaps: dict[int | None, list[float]] = {}

    def look_after(self, command: int | None) -> float:
        """How long the loop looks after an answer to `command` (0: it sleeps at once)."""
        return self.looks.get(command, self.budget) if self.allowed else 0.0

    def served(self, serve: Callable[[], object],
               answered: Callable[[], int | None] | None = None) -> Callable[[], object]:
        """`serve` (Receiver.serve: what it returns passed on), measuring the gap before it
        and keeping the loop turning after it; `answered()`: the command it answered last
        (None: all answers counted as one)."""
        def busy_serve():
            if self.last_served is not busy_serve:
                self.last_served = busy_serve
                self.switches += 1
            self.request_arrived()
            more = serve()
            self.answered(answered() if answered is not None else None)
            return more
        return busy_serve

    def request_arrived(self) -> None:
        self.served_since_turn = True
        if self.answered_at:
            gap = time.perf_counter() - self.answered_at
            self.answered_at = 0.0
            command = self.answered_command
            gaps = self.gaps.get(command)
            if gaps is None:
                gaps = self.gaps[command] = []
            gaps.append(gap)
            if len(gaps) == GAPS:
                self.looks[command] = look_for(gaps, self.budget)
                gaps.clear()
            self.counted += 1
            if self.counted == GAPS:
                self.allowed = not (self.switches > 1 or self.cpus_busy())
                self.switches = self.counted = 0

    def cpus_busy(self) -> bool:
        """Whether more processes are ready to run than this process has CPUs: the kernel's
        count of runnable tasks (/proc/loadavg's fourth field, this process included).
        Looking would then keep a CPU from the others (the scheduler places them on a CPU
        that goes idle; a looking one never does); a yield reaches only those already
        queued on this CPU."""
        try:
            fd = os.open("/proc/loadavg", os.O_RDONLY | os.O_CLOEXEC)
            try:
                running = os.read(fd, 128).split()[3].split(b"/")[0]
            finally:
                os.close(fd)
            return int(running) > self._cpus
        except (OSError, IndexError, ValueError):
            return False        # (no /proc: the yields' test alone)

    def answered(self, command: int | None = None) -> None:
        """An answer to `command` left: the loop turns until the look's length passes
        without a request."""
        now = self.answered_at = time.perf_counter()
        self.answered_command = command
        look = self.look_after(command)
        if not look:
            return
        self.deadline = now + look
        if not self.turning:
            if self._loop is None:
                self._loop = asyncio.get_running_loop()
            self.turning = True
            self._loop.call_soon(self._turn)

    def _turn(self) -> None:
        # a callback ready to run makes the loop look at its sockets without blocking; while
        # the look lasts the callback schedules itself again
        now = time.perf_counter()
        # (the loop had work since the last turn: that time was serving, not looking; and
        # under load it never sleeps, so a yield would be a system call per request for
        # nothing)
        worked, self.served_since_turn = self.served_since_turn, False
        if not worked and self._last_turn:
            self.looking += now - self._last_turn
        if now >= self.deadline:
            self.turning, self._last_turn = False, 0.0
            return
        self.turns += 1
        if not worked:
            os.sched_yield()
            after = time.perf_counter()
            if after - now > GIVEN_AWAY:
                # another process ran on this CPU meanwhile: the CPUs are busy, and looking
                # would take time from the clients; the loop sleeps after answers until
                # `allowed` is worked out again
                self.allowed = False
                self.turning, self._last_turn = False, 0.0
                return
            now = after
        self._last_turn = now
        self._loop.call_soon(self._turn)
