"""``smbring bench events``: our event backends against tevent's own, side by side.

Workloads (the ones of ``shared/anchors/tevent_pipe_bench.c``, which is built and run for
tevent's C backends in the same run):

- ``samba``: the workload of tevent's testsuite "context" test, whose figures Samba's io_uring report quotes:
  one pipe; a READ handler on fd[0] that sends itself SIGUSR1 and SIGALRM and reads one byte
  (counted), a level-triggered WRITE handler on fd[1] writing one byte, two fd events that
  never fire, signal events for both signals. ``samba-nosig``: the same without signals.
- ``pingpong``: two pipes, one byte in flight, fd events whose handlers read and write.
- ``ring-pingpong`` (uring only): the same ping-pong with no readiness at all: ring read
  completions whose callbacks queue the next ring write and read.

Each figure is events per second, the median of ``--repeat`` rounds in which the
implementations alternate.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import time

from smbring import uring
from smbring.events import READ, WRITE, Context
from smbring.uring import FIXED_FILE

ANCHOR = os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "shared", "anchors",
                      "tevent_pipe_bench.c")
WORKLOADS = ("samba", "samba-nosig", "pingpong", "ring-pingpong")


def add_arguments(p) -> None:
    p.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    p.add_argument("--repeat", type=int, default=5, help="rounds; figures are medians")
    p.add_argument("--anchor", default=os.environ.get("SMBRING_TEVENT_BENCH_SRC", ANCHOR),
                   help="path to tevent_pipe_bench.c")
    p.add_argument("--cpu", type=int, default=None,
                   help="CPU to run every measurement on (default: the last allowed; -1: don't pin)")


# -- our loops ------------------------------------------------------------------------------

def run_samba(backend: str, seconds: float, signals: bool) -> float:
    r, w = os.pipe()
    count = 0
    done = False
    kill, getpid, read, write = os.kill, os.getpid(), os.read, os.write

    def on_read(fde, flags):
        nonlocal count
        if signals:
            kill(getpid, signal.SIGUSR1)
            kill(getpid, signal.SIGALRM)
        read(r, 1)
        count += 1

    def on_write(fde, flags):
        write(w, b"\0")

    def never(fde, flags):
        raise AssertionError("unexpected event on a unidirectional pipe")

    def finished(timer):
        nonlocal done
        done = True

    seen = [0, 0]
    with Context(backend) as ctx:
        ctx.add_fd(r, READ, on_read)
        ctx.add_fd(r, WRITE, never)
        ctx.add_fd(w, WRITE, on_write)
        ctx.add_fd(w, READ, never)
        ctx.add_timer(seconds, finished)
        if signals:
            ctx.add_signal(signal.SIGALRM, lambda se, s, n: seen.__setitem__(0, seen[0] + n))
            ctx.add_signal(signal.SIGALRM, lambda se, s, n: seen.__setitem__(0, seen[0] + n))
            ctx.add_signal(signal.SIGUSR1, lambda se, s, n: seen.__setitem__(1, seen[1] + n))
        steps = ctx.loop_wait  # runs steps in C, as tevent's benchmark loops in C
        start = time.perf_counter()
        while not done:
            steps(256)
        elapsed = time.perf_counter() - start
    os.close(r)
    os.close(w)
    return count / elapsed


def run_steps(ctx: Context, seconds: float) -> tuple[int, float]:
    """Runs loop steps in C, 1024 at a time, for about `seconds`; returns the steps that ran
    a handler and the time taken."""
    steps = ctx.loop_wait
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        count += steps(1024)
        if time.perf_counter() >= deadline:
            return count, time.perf_counter() - start


def run_pingpong(backend: str, seconds: float) -> float:
    a, b = os.pipe(), os.pipe()
    count = 0
    read, write = os.read, os.write

    def side(rfd, wfd):
        def handler(fde, flags):
            nonlocal count
            write(wfd, read(rfd, 1))
            count += 1
        return handler

    with Context(backend) as ctx:
        ctx.add_fd(a[0], READ, side(a[0], b[1]))
        ctx.add_fd(b[0], READ, side(b[0], a[1]))
        write(a[1], b"x")
        _, elapsed = run_steps(ctx, seconds)
    for fd in a + b:
        os.close(fd)
    return count / elapsed


def run_ring_pingpong(seconds: float) -> float:
    """No readiness at all: a multishot ring read stays armed on each pipe; its completion's
    callback queues a ring write of the byte, from the buffer it arrived in, to the other pipe.
    Completions are the events, counted as the loop steps that ran them. The pipes are
    registered files, as a server registers the descriptors it uses all the time."""
    a, b = os.pipe(), os.pipe()
    running = True
    with Context("uring") as ctx:
        ring = ctx.ring
        ring.register_buf_ring(group=7, entries=8, size=64)
        ring.register_files([a[0], b[0], a[1], b[1]])
        a_read, b_read, a_write, b_write = range(4)

        def side(to):
            write = ring.write      # bound once, as a C handler would hold its function

            def completed(req):
                if running:         # not while the ring is closing
                    # the byte goes on from the buffer it arrived in (no copy), which
                    # returns to the kernel when the write is done
                    write(to, req, sqe_flags=FIXED_FILE)
            return completed

        ring.read_multishot(a_read, 7, callback=side(b_write), sqe_flags=FIXED_FILE)
        ring.read_multishot(b_read, 7, callback=side(a_write), sqe_flags=FIXED_FILE)
        os.write(a[1], b"x")
        count, elapsed = run_steps(ctx, seconds)
        running = False
    for fd in a + b:
        os.close(fd)
    return count / elapsed


# -- tevent's C backends ---------------------------------------------------------------------

def build_anchor(src: str) -> str | None:
    """Builds tevent_pipe_bench once into ~/.cache; None (with a message) if it can't."""
    if not os.path.exists(src):
        print(f"tevent anchor not found at {src}: tevent figures skipped")
        return None
    cache = os.path.join(os.path.expanduser("~"), ".cache", "smbring")
    os.makedirs(cache, exist_ok=True)
    binary = os.path.join(cache, "tevent_pipe_bench")
    if os.path.exists(binary) and os.path.getmtime(binary) >= os.path.getmtime(src):
        return binary
    if not shutil.which("pkg-config") or subprocess.run(
            ["pkg-config", "--exists", "tevent", "talloc"]).returncode != 0:
        print("libtevent-dev/libtalloc-dev not installed (make test installs them as root): "
              "tevent figures skipped")
        return None
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "tevent", "talloc"],
                           capture_output=True, text=True, check=True).stdout.split()
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "tevent_pipe_bench")
        res = subprocess.run(["cc", "-O2", "-o", out, src] + flags, capture_output=True, text=True)
        if res.returncode != 0:
            print(f"building the tevent anchor failed: {res.stderr.strip()[:300]}")
            return None
        shutil.move(out, binary)
    return binary


def run_tevent(binary: str, backend: str, seconds: float, mode: str) -> float:
    out = subprocess.run([binary, backend, str(seconds), mode], capture_output=True, text=True,
                         timeout=seconds * 4 + 30)
    for token in out.stdout.split():
        if token.startswith("events_per_sec="):
            return float(token.split("=", 1)[1])
    raise RuntimeError(f"tevent_pipe_bench {backend} {mode}: {out.stdout} {out.stderr}")


# -- the benchmark ---------------------------------------------------------------------------

def pin(cpu: int | None) -> int | None:
    """Keeps this process (and the tevent runs it starts) on one CPU, the last one allowed
    unless told: both sides are single-threaded, and a run that the scheduler moves between
    CPUs halfway loses more to that than the differences being measured. None: not pinned."""
    if cpu is not None and cpu < 0:
        return None
    allowed = sorted(os.sched_getaffinity(0))
    chosen = allowed[-1] if cpu is None else cpu
    os.sched_setaffinity(0, {chosen})
    return chosen


def measure(seconds: float, repeat: int, anchor: str) -> list[dict]:
    ours = ["poll", "epoll"] + (["uring"] if uring.available() else [])
    binary = build_anchor(os.path.abspath(anchor))
    plans = []
    for workload in ("samba", "samba-nosig", "pingpong"):
        for b in ours:
            if workload.startswith("samba"):
                fn = (lambda b=b, s=workload == "samba": run_samba(b, seconds, s))
            else:
                fn = (lambda b=b: run_pingpong(b, seconds))
            plans.append((workload, f"smbring-{b}", fn))
        if binary:
            for tb in ("epoll", "poll"):
                plans.append((workload, f"tevent-{tb}",
                              lambda tb=tb, w=workload: run_tevent(binary, tb, seconds, w)))
    if "uring" in ours:
        plans.append(("ring-pingpong", "smbring-uring", lambda: run_ring_pingpong(seconds)))
        if binary:
            plans.append(("ring-pingpong", "tevent-epoll (fd pingpong)",
                          lambda: run_tevent(binary, "epoll", seconds, "pingpong")))
    results: dict[tuple[str, str], list[float]] = {(w, i): [] for w, i, _ in plans}
    for _ in range(repeat):
        for workload, impl, fn in plans:
            results[(workload, impl)].append(fn())
    return [{"workload": w, "impl": i, "events_per_s": round(statistics.median(v))}
            for (w, i), v in results.items()]


def ratios(records: list[dict]) -> dict:
    by = {(r["workload"], r["impl"]): r["events_per_s"] for r in records}
    out = {}

    def ratio(name, a, b):
        if a in by and b in by:
            out[name] = round(by[a] / by[b], 3)

    ratio("samba: uring / tevent-epoll", ("samba", "smbring-uring"), ("samba", "tevent-epoll"))
    ratio("samba-nosig: uring / epoll (ours)", ("samba-nosig", "smbring-uring"),
          ("samba-nosig", "smbring-epoll"))
    ratio("samba-nosig: uring / tevent-epoll", ("samba-nosig", "smbring-uring"),
          ("samba-nosig", "tevent-epoll"))
    ratio("pingpong: uring / tevent-epoll", ("pingpong", "smbring-uring"), ("pingpong", "tevent-epoll"))
    ratio("ring-pingpong: uring / tevent-epoll pingpong", ("ring-pingpong", "smbring-uring"),
          ("ring-pingpong", "tevent-epoll (fd pingpong)"))
    return out


def run(args) -> int:
    before = os.sched_getaffinity(0)
    cpu = pin(args.cpu)
    try:
        records = measure(args.seconds, args.repeat, args.anchor)
    finally:
        os.sched_setaffinity(0, before)
    summary = ratios(records)
    if args.json:
        print(json.dumps({"records": records, "ratios": summary, "cpu": cpu}, indent=2))
        return 0
    where = f"on CPU {cpu}" if cpu is not None else "not pinned"
    print(f"smbring bench events  (medians of {args.repeat} rounds of {args.seconds}s, {where})")
    for r in records:
        print(f"  {r['workload']:<14} {r['impl']:<28} {r['events_per_s']:>12,} events/s")
    for k, v in summary.items():
        print(f"  {k:<48}{v:>8}x")
    return 0
