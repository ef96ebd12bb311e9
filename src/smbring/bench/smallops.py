"""``smbring bench smallops``: small requests against smbring and Samba's smbd.

What a server costs per request when the requests are small: Samba's own small-request
benchmarks from smbtorture (``smb2.bench.echo``, ``smb2.bench.path-contention-shared``: CREATE
and CLOSE of the share's root) at one and several connections and queue depths, a listing of a
directory of many files with smbclient's ``ls``, and copying many 4 KiB files each way with
smbclient's ``mput`` and ``mget``. Both servers serve the same ext4 directory on loopback, as
``bench smbclient`` starts them (smbd with ``vfs objects = io_uring``); they alternate workload
by workload inside every run.

Per (workload, server): the median over the runs of the operations per second the client saw,
and of the server's CPU time per operation (utime + stime of the server process and of every
process it started, smbd's per-connection children included), with `workers` the number of
requests the client keeps in flight (connections x queue depth), and the client's CPU time
per operation (`client_cpu_us_per_op`: smbtorture or smbclient and the processes they
started). `server_sys_us_per_op` is the part of the server's CPU time the kernel spent for it
(stime): system calls, the network stack and the wake-ups that a server which sleeps between
requests pays for every one; what is left is the server's own code. At one request in flight a round trip is the client's time, the server's and the
wake-ups between them, so the client's figure bounds the rate any server can reach. Ratios are medians of the
per-run ratios smbring / smbd.

An operation is one ECHO; one CREATE + CLOSE pair; one listing of the whole directory; one
file copied. smbtorture's counts come from its own report (operations per second over its time
limit); smbclient's from the wall time of the whole client run (its connection set-up included,
the same for both servers).
"""
from __future__ import annotations

import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

from smbring.bench.ops import fs_type
from smbring.bench.smbclient import PASSWORD, USER, PortTaken, Smbd, Smbring, free_port

FILE_SIZE = 4096
EVENT_LOOP_ENV = "SMBRING_EVENT_LOOP"   # read by `smbring serve` (its --event-loop default)
RETRIES = 2         # a run whose client failed is run again (counted as failed_runs), this often


class SmbringOnLoop(Smbring):
    """smbring serving on another event loop (`serve --event-loop LOOP`: ring, the loop that
    waits in io_uring; uvloop, libuv's), to measure side by side with the standard asyncio
    loop; named smbring-LOOP."""

    def __init__(self, loop: str, share: str, port: int, state: str):
        self.name = f"smbring-{loop}"
        before = os.environ.get(EVENT_LOOP_ENV)
        os.environ[EVENT_LOOP_ENV] = loop        # the server process inherits it
        try:
            super().__init__(share, port, state)
        finally:
            if before is None:
                del os.environ[EVENT_LOOP_ENV]
            else:
                os.environ[EVENT_LOOP_ENV] = before


OTHER_LOOPS = ("ring", "uvloop")

# At one request in flight a round trip is two wake-ups, and what a wake-up costs depends on
# whether the woken process shares the waker's CPU (a switch) or sleeps on another (an
# inter-processor interrupt, on a virtual machine a hypervisor's exit); left to the scheduler,
# a run lands in either regime and stays there, so depth-1 figures move by several times
# between runs. Placing both makes the regime part of the measurement.
PLACEMENTS = ("any", "same", "split")
# what the clients ask of every message (--protection): their option for it, the same for
# smbtorture and smbclient (neither server requires either by default: "none" is the clients'
# default, every message neither signed nor sealed)
PROTECTIONS = {"none": [], "sign": ["--option=client signing=required"],
               "encrypt": ["--option=client smb encrypt=required"]}


def placement_cpus(placement: str) -> tuple[set[int] | None, set[int] | None]:
    """The CPUs (server's, clients') of a placement; None: wherever the scheduler puts them."""
    if placement == "any":
        return None, None
    cpus = sorted(os.sched_getaffinity(0))
    if placement == "same":
        return {cpus[0]}, {cpus[0]}
    if len(cpus) < 2:
        raise ValueError("--placement split needs two CPUs")
    return {cpus[0]}, {cpus[1]}


def pin_processes(leader: int, cpus: set[int]) -> int:
    """Pins every thread of `leader`'s process group (a server and the processes it started,
    which pass the mask on to those they start later); returns how many threads it pinned."""
    pinned = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.getpgid(int(entry)) != leader:
                continue
            for task in os.listdir(f"/proc/{entry}/task"):
                os.sched_setaffinity(int(task), cpus)
                pinned += 1
        except (ProcessLookupError, FileNotFoundError, PermissionError):
            continue            # (gone meanwhile)
    return pinned


@dataclass(frozen=True)
class Workload:
    name: str
    kind: str               # "torture" (smbtorture), "list", "put", "get" (smbclient)
    test: str = ""          # the smbtorture test
    nprocs: int = 1         # connections
    qdepth: int = 1         # requests in flight per connection

    @property
    def workers(self) -> int:
        return self.nprocs * self.qdepth


WORKLOADS = {w.name: w for w in (
    Workload("echo-1x1", "torture", "smb2.bench.echo", 1, 1),
    Workload("echo-4x8", "torture", "smb2.bench.echo", 4, 8),
    Workload("create-close-1x1", "torture", "smb2.bench.path-contention-shared", 1, 1),
    Workload("create-close-4x4", "torture", "smb2.bench.path-contention-shared", 4, 4),
    Workload("list-dir", "list"),
    Workload("copy-put", "put"),
    Workload("copy-get", "get"),
)}

# smbtorture's final report: "echo[num/s=15890,avslat=..." / "open[num/s=4401,avslat=..."
_TORTURE_RATE = {"smb2.bench.echo": re.compile(r"echo\[num/s=(\d+),"),
                 "smb2.bench.path-contention-shared": re.compile(r"open\[num/s=(\d+),")}


def add_arguments(p) -> None:
    p.add_argument("--dir", default=os.environ.get("SMBRING_BENCH_DIR", "/var/tmp/smbring-bench"),
                   help="ext4 directory for the share (not tmpfs)")
    p.add_argument("--client-dir", default=None,
                   help="where the clients' own files go (mget's copies; smbtorture's working "
                        "directory); default: /dev/shm where it is a tmpfs, else the temporary "
                        "directory. The client's local file system is neither server's cost: on "
                        "a disk it adds tens to hundreds of microseconds to every file copied")
    p.add_argument("--runs", type=int, default=3, help="runs per (workload, server); medians reported")
    p.add_argument("--timelimit", type=int, default=5, help="seconds per smbtorture run (at least 1)")
    p.add_argument("--list-files", type=int, default=10000, help="files in the directory listed")
    p.add_argument("--listings", type=int, default=5, help="listings per smbclient run")
    p.add_argument("--copy-files", type=int, default=2000, help="4 KiB files copied each way")
    p.add_argument("--workloads", default=",".join(WORKLOADS),
                   help=f"comma-separated, of: {', '.join(WORKLOADS)}")
    p.add_argument("--servers", default="smbring,smbd",
                   help="comma-separated: smbring, smbring-busy (serve --busy-poll, see "
                        "--busy-poll), smbring-ring (smbring on the event loop that waits in "
                        "io_uring), smbring-uvloop (on uvloop's), smbd; smbring's loop also "
                        "follows SMBRING_EVENT_LOOP")
    p.add_argument("--busy-poll", type=int, default=200, metavar="MICROSECONDS",
                   help="smbring-busy's serve --busy-poll (default 200)")
    p.add_argument("--workers", default="1",
                   help="smbring's worker processes (serve --workers), comma-separated to compare: "
                        "1,2 measures smbring and smbring-w2")
    p.add_argument("--port", type=int, default=4480, help="first of the ports used")
    p.add_argument("--placement", choices=PLACEMENTS, default="any",
                   help="where the server and its clients run: any (the scheduler decides), same "
                        "(both on the first CPU), split (the server on the first, the clients on "
                        "the second); at one request in flight the figures depend on it")
    p.add_argument("--protection", choices=list(PROTECTIONS), default="none",
                   help="what the clients ask of every message: none (their default: neither "
                        "server asks it), sign (signed), encrypt (sealed)")
    p.add_argument("--core", action="store_true",
                   help="no servers: time the protocol core's handling of an ECHO in this process, "
                        "and its parts, and of a CREATE + CLOSE of a share's root")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run of a few seconds (1 run, 1 s per smbtorture run, 200 files "
                        "listed, 20 copied): checks the benchmark, measures nothing")


def parse_torture_rate(test: str, output: str) -> int:
    """Operations per second from smbtorture's final report; ValueError if it has none."""
    found = _TORTURE_RATE[test].findall(output)
    if not found:
        raise ValueError(f"{test}: no result in smbtorture's output: {output.strip()[-300:]}")
    return int(found[-1])      # the last: the whole run's (earlier ones are progress lines)


def parse_workloads(text: str) -> list[Workload]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown or not names:
        raise ValueError(f"unknown workloads {unknown}: choose from {', '.join(WORKLOADS)}")
    return [WORKLOADS[n] for n in names]


# -- the files --------------------------------------------------------------------------------

def fill(directory: str, count: int, size: int) -> None:
    """`count` files of `size` bytes in `directory` (made again if it holds other ones)."""
    names = {f"f{i:05d}" for i in range(count)}
    if os.path.isdir(directory) and set(os.listdir(directory)) == names and all(
            os.path.getsize(os.path.join(directory, n)) == size for n in names):
        return
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory)
    data = os.urandom(size)
    for name in sorted(names):
        with open(os.path.join(directory, name), "wb") as f:
            f.write(data)
        os.chmod(os.path.join(directory, name), 0o644)
    os.chmod(directory, 0o755)


# ext4 without a journal passes over the inodes freed in the last 5 s when it allocates one
# (ialloc.c, recently_deleted): after removing this many copies the benchmark waits that long
RECENTLY_FREED_S = 5
RECENTLY_FREED_MANY = 1000


@dataclass
class Files:
    share: str          # what both servers serve
    list_dir: str       # share/list: the directory listed
    get_dir: str        # share/get: the files copied from the server
    put_src: str        # a local directory: the files copied to the server
    local: str          # scratch for the clients (mget's destination, smbtorture's cwd)
    # the files each copy made, removed only when the benchmark ends: on ext4 without a
    # journal, every new inode is looked for past the inodes freed in the last 5 s (each
    # checked in the inode table), so a run right after 2,000 files were removed paid the
    # kernel 0.5-1 ms per new file, whichever server it measured
    copied: list[str] = field(default_factory=list)


def client_scratch(where: str | None) -> str:
    """A new directory for the clients' own files: under `where`, or /dev/shm where it is a
    tmpfs (the figures measure the servers, not the client's disk), else the temporary
    directory."""
    if where is None and os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK | os.X_OK) \
            and fs_type("/dev/shm") == "tmpfs":
        where = "/dev/shm"
    return tempfile.mkdtemp(prefix="smallops-", dir=where)


def prepare(directory: str, list_files: int, copy_files: int, client_dir: str | None = None) -> Files:
    share = os.path.join(directory, "smallops-share")
    os.makedirs(share, exist_ok=True)
    os.chmod(share, 0o777)
    files = Files(share, os.path.join(share, "list"), os.path.join(share, "get"),
                  os.path.join(directory, "smallops-put-src"), client_scratch(client_dir))
    fill(files.list_dir, list_files, 0)
    fill(files.get_dir, copy_files, FILE_SIZE)
    fill(files.put_src, copy_files, FILE_SIZE)
    return files


# -- one run ----------------------------------------------------------------------------------

def _pinned(cpus: set[int] | None):
    """A preexec_fn that runs a client on `cpus` (None: no function)."""
    return None if cpus is None else (lambda: os.sched_setaffinity(0, cpus))


def smbclient_command(port: int, command: str | None, protection: str = "none") -> list[str]:
    """smbclient running `command` (its -c) on the benchmark's share (None: the commands it
    reads from its standard input)."""
    return ["smbclient", "//127.0.0.1/bench", "-p", str(port), "-U", f"{USER}%{PASSWORD}",
            "-m", "SMB3", *PROTECTIONS[protection], *(["-c", command] if command is not None else [])]


def torture_command(port: int, w: Workload, timelimit: int, protection: str = "none") -> list[str]:
    """smbtorture running the workload `w` (kind "torture") on the benchmark's share."""
    return ["smbtorture", "//127.0.0.1/bench", "-p", str(port), "-U", f"{USER}%{PASSWORD}",
            w.test, f"--option=torture:nprocs={w.nprocs}", f"--option=torture:qdepth={w.qdepth}",
            f"--option=torture:timelimit={timelimit}", "--option=torture:progress=no",
            *PROTECTIONS[protection]]


def _smbclient(port: int, command: str, cwd: str, cpus: set[int] | None = None,
               protection: str = "none") -> str:
    out = subprocess.run(smbclient_command(port, command, protection), cwd=cwd,
                         capture_output=True, text=True,
                         timeout=600, preexec_fn=_pinned(cpus))
    text = out.stdout + out.stderr
    if out.returncode != 0 or "NT_STATUS" in text:
        raise RuntimeError(f"smbclient {command[:40]!r} failed ({out.returncode}): {text.strip()[-300:]}")
    return text


def children_cpu() -> float:
    """CPU seconds of the child processes waited for so far (the clients: the servers are
    waited for only when they stop)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_once(server, w: Workload, files: Files, args, run: int) -> tuple[float, float, float, float]:
    """One run of a workload: (operations per second, server CPU microseconds per operation,
    the client's CPU microseconds per operation, the part of the server's that the kernel
    spent: system time)."""
    user0, system0 = server.cpu_split()
    client0 = children_cpu()
    if w.kind == "torture":
        out = subprocess.run(
            torture_command(server.port, w, args.timelimit, args.protection), cwd=files.local,
            capture_output=True, text=True, timeout=args.timelimit + 120,
            preexec_fn=_pinned(args.client_cpus))
        try:
            rate = parse_torture_rate(w.test, out.stdout + out.stderr)
        except ValueError as e:
            raise RuntimeError(f"{server.name} {w.name}: {e}") from None
        # the operations counted are those of the time limit; the set-up's few are not
        ops = rate * max(args.timelimit, 1)
    else:
        if w.kind == "list":
            ops = args.listings
            command = "cd list; " + "; ".join(["ls"] * ops)
        elif w.kind == "put":
            ops = args.copy_files
            target = f"put-{server.name}-{run}"
            shutil.rmtree(os.path.join(files.share, target), ignore_errors=True)
            command = f"prompt off; mkdir {target}; cd {target}; lcd {files.put_src}; mput *"
        else:
            ops = args.copy_files
            dest = os.path.join(files.local, f"get-{server.name}-{run}")
            os.makedirs(dest, exist_ok=True)     # (a run again: what the failed one left)
            command = f"prompt off; cd get; lcd {dest}; mget *"
        started = time.perf_counter()
        _smbclient(server.port, command, files.local, args.client_cpus, args.protection)
        rate = ops / (time.perf_counter() - started)
        if w.kind == "put":
            copied = os.listdir(os.path.join(files.share, target))
            files.copied.append(os.path.join(files.share, target))
        elif w.kind == "get":
            copied = os.listdir(dest)
            files.copied.append(dest)
        if w.kind in ("put", "get") and len(copied) != ops:
            raise RuntimeError(f"{server.name} {w.name}: {len(copied)} of {ops} files copied")
    client = children_cpu() - client0
    time.sleep(0.3)     # let smbd's per-connection processes exit and be accounted
    user1, system1 = server.cpu_split()
    cpu, system = user1 - user0 + system1 - system0, system1 - system0
    return rate, cpu / max(ops, 1) * 1e6, client / max(ops, 1) * 1e6, system / max(ops, 1) * 1e6


def run_retried(server, w: Workload, files: Files, args, run: int, failures: dict) -> tuple[float, float, float, float]:
    """A run, run again (at most RETRIES times) when its client fails: loopback clients of
    both servers occasionally lose a connection; a server that fails every time fails the
    benchmark. The failures are counted in the results."""
    for attempt in range(RETRIES + 1):
        try:
            return run_once(server, w, files, args, run)
        except RuntimeError as e:
            failures[(w.name, server.name)] = failures.get((w.name, server.name), 0) + 1
            if attempt == RETRIES:
                raise
            print(f"warning: {e}; running it again", file=sys.stderr)
    raise AssertionError("unreachable")


def summarize(results: dict, workloads: list[Workload], servers: list[str],
              failures: dict | None = None) -> dict:
    """Records (medians per workload and server) and ratios (medians of per-run ratios)."""
    records, ratios = [], {}
    for w in workloads:
        for name in servers:
            runs = results.get((w.name, name), [])
            if not runs:
                continue
            record = {"workload": w.name, "server": name,
                      "ops_per_s": round(statistics.median(r[0] for r in runs), 3),
                      "server_cpu_us_per_op": round(statistics.median(r[1] for r in runs), 2),
                      "workers": w.workers, "runs": len(runs),
                      "failed_runs": (failures or {}).get((w.name, name), 0)}
            if all(len(r) > 2 for r in runs):
                record["client_cpu_us_per_op"] = round(statistics.median(r[2] for r in runs), 2)
            if all(len(r) > 3 for r in runs):
                record["server_sys_us_per_op"] = round(statistics.median(r[3] for r in runs), 2)
            records.append(record)
        def compare(ours: str, theirs: str, key: str) -> None:
            # medians of the per-run ratios ours / theirs, ops and CPU, as {w}_ops_{key} ...
            pairs = list(zip(results.get((w.name, ours), []), results.get((w.name, theirs), [])))
            if pairs:
                ratios[f"{w.name}_ops_{key}"] = round(statistics.median(a[0] / b[0] for a, b in pairs), 3)
                ratios[f"{w.name}_cpu_{key}"] = round(
                    statistics.median(a[1] / max(b[1], 1e-9) for a, b in pairs), 3)

        for name in servers:        # smbring with N workers against smbring with one
            if name.startswith("smbring-w"):
                compare(name, "smbring", f"{name[8:]}_vs_w1")
        compare("smbring", "smbd", "vs_smbd")
        compare("smbring-busy", "smbd", "busy_vs_smbd")
        for loop in OTHER_LOOPS:
            compare(f"smbring-{loop}", "smbring", f"{loop}_vs_asyncio")
    return {"records": records, "ratios": ratios}


# -- the protocol core alone --------------------------------------------------------------------

def core_costs(rounds: int = 7, n: int = 20000) -> dict[str, float]:
    """Microseconds per ECHO of the sans-I/O core (`Connection.handle_frame` and the response's
    send descriptor) and of its parts, in this process with no sockets: what the server's own
    code costs per request, apart from the event loop, the ring and the kernel. Minimum over
    `rounds` rounds of `n` requests (the least disturbed by other work on the machine); hot
    caches, so a lower bound of what the same code costs between other processes' work."""
    import timeit

    from smbring.server.effects import descriptor
    from smbring.smb import wire
    from smbring.smb.connection import Connection
    from smbring.smb.credits import CreditWindow

    def connection() -> Connection:
        conn = Connection({}, lookup=lambda name: None, open_fs=lambda path: None)
        conn.dialect = wire.SMB311          # as after NEGOTIATE (ECHO needs no session)
        return conn

    def echo(message_id: int) -> bytes:
        return wire.Header(command=wire.ECHO, message_id=message_id, credits=1,
                           credit_charge=1).pack() + b"\x04\x00\x00\x00"

    frames = [memoryview(echo(i)) for i in range(n * rounds)]
    head = frames[0][:64]
    parsed = wire.Header.parse(head)
    state = {"conn": connection(), "next": 0, "window": CreditWindow(8192)}

    def whole():
        i = state["next"]
        state["next"] = i + n
        conn = state["conn"]
        for f in frames[i:i + n]:
            descriptor(conn.handle_frame(f)[0], {})

    def credits():
        w = state["window"] = CreditWindow(8192)
        for i in range(n):
            w.take(i, 1, 1)         # (a lone request's MessageId taken and its credit granted)

    def best(fn) -> float:
        return round(min(timeit.repeat(fn, number=1, repeat=rounds)) / n * 1e6, 3)

    return {
        "core_total": best(whole),
        "header_decode": best(lambda: [wire.Header.parse(head) for _ in range(n)]),
        "header_encode": best(lambda: [parsed.pack() for _ in range(n)]),
        "credit_accounting": best(credits),
        "frame_limit_check": best(lambda: [state["conn"].frame_limit() for _ in range(n)]),
        "create_close_root": create_close_costs(rounds, n // 4),
        "create_close_root_store": create_close_costs(rounds, n // 4, shared_store=True),
        # (the pair as one related compound, as Windows, macOS and smbring's client send it)
        "create_close_root_compound": create_close_costs(rounds, n // 4, compound=True),
        # (the same after 50 us idle before each pair: a depth-1 server's caches after its wait)
        "create_close_root_after_idle": create_close_costs(rounds, n // 20, idle_us=50),
        **create_close_instructions(),
    }


class InstructionCount:
    """The Python bytecode instructions run and the Python calls made while it is entered (in
    this thread: `sys.settrace` with opcode events). A count of the code's own work that no
    other load on the machine moves, so that a change of a few per cent to the per-request
    path shows at once; of the time it says nothing (a traced run is many times slower)."""

    def __init__(self) -> None:
        self.instructions = self.calls = 0

    def _call(self, frame, event, arg):
        frame.f_trace_opcodes = True
        self.calls += 1
        return self._opcode

    def _opcode(self, frame, event, arg):
        if event == "opcode":
            self.instructions += 1
        return self._opcode

    def __enter__(self) -> "InstructionCount":
        sys.settrace(self._call)
        return self

    def __exit__(self, *exc) -> None:
        sys.settrace(None)


def create_close_instructions(n: int = 500) -> dict[str, float]:
    """Python instructions and calls per CREATE + CLOSE of the share's root, made as
    `create_close_costs` makes the pairs (two frames), counted over `n` pairs after a round
    that warms up; the CLOSE requests' own making is outside the count."""
    counter = InstructionCount()
    create_close_costs(1, n, counter=counter)
    return {"create_close_root_instructions": round(counter.instructions / n, 1),
            "create_close_root_calls": round(counter.calls / n, 1)}


def start_server(name: str, workers: int, share: str, port: int, state: str, args):
    """The server `name` started on `port`, its state under `state`."""
    if name == "smbring":
        return Smbring(share, port, os.path.join(state, f"{name}-w{workers}"), workers=workers)
    if name == "smbring-busy":
        return Smbring(share, port, os.path.join(state, name), busy_poll=args.busy_poll)
    if name.startswith("smbring-") and name[8:] in OTHER_LOOPS:
        return SmbringOnLoop(name[8:], share, port, os.path.join(state, name))
    if name == "smbd":
        return Smbd(share, port, os.path.join(state, name))
    raise KeyError(name)


def chain_statuses(message: bytes) -> list[int]:
    """The statuses of a compounded response's parts, in order."""
    statuses, at = [], 0
    while True:
        statuses.append(int.from_bytes(message[at + 8:at + 12], "little"))
        step = int.from_bytes(message[at + 20:at + 24], "little")
        if not step:
            return statuses
        at += step


def create_close_costs(rounds: int, n: int, shared_store: bool = False, idle_us: int = 0,
                       compound: bool = False, counter: "InstructionCount | None" = None) -> float:
    """Microseconds per CREATE + CLOSE of a share's root (attribute-only, as
    `create-close-*` asks) through `Connection.handle_frame`, on a real directory, with
    the server's own state or (`shared_store`) the workers' store tables. The CREATEs are
    made before the clock starts (each CLOSE, naming the FileId its CREATE answered, after
    it: its header's packing is in the figure, ~1 us); minimum over `rounds` rounds of `n`
    pairs. `idle_us`: the process sleeps that long before each pair, as a server waits for
    the next request at one in flight, and each pair is timed alone (wall clock): what the
    same code costs once its CPU has idled. `compound`: each pair one frame, the CLOSE
    related to the CREATE (its FileId all 0xFF), the frames made before the clock starts.
    `counter`: entered for the last round's pairs (two frames each), which it counts."""
    import asyncio
    import struct
    import tempfile
    import time

    from smbring.server.shared_store import Store
    from smbring.server.users import PasswordLookup
    from smbring.server.workers import WorkerSetup
    from smbring.smb import wire
    from smbring.smb.connection import Connection
    from smbring.smb.server_state import ServerState
    from smbring.smb.state import Session, Share
    from smbring.vfs.posix import PosixVFS

    def request(command: int, message_id: int, tree_id: int, body: bytes, flags: int = 0,
                next_command: int = 0) -> memoryview:
        return memoryview(wire.Header(command=command, message_id=message_id, credits=64, session_id=1,
                                      tree_id=tree_id, flags=flags, next_command=next_command).pack() + body)

    async def measure(share_dir: str, store_dir: str) -> float:
        state = None
        if shared_store:
            setup = WorkerSetup(worker=1, generation=0, store_directory=store_dir, server_guid=bytes(16))
            state = ServerState(backends=setup.backends(Store(store_dir, 1)))
        conn = Connection({"s": Share("s", share_dir)}, lookup=PasswordLookup(share_dir + "/none"),
                          open_fs=PosixVFS, state=state)
        conn.dialect = wire.SMB302          # as after NEGOTIATE and a SESSION_SETUP
        conn.sessions[1] = Session(id=1, valid=True)
        path = wire.utf16("\\\\x\\s")
        [answer] = conn.handle_frame(request(wire.TREE_CONNECT, 0, 0, struct.pack("<HHHH", 9, 0, 72, len(path)) + path))
        tree_id = wire.Header.parse(bytes(answer.message)).tree_id
        # attribute-only (FILE_READ_ATTRIBUTES), FILE_OPEN, sharing everything, no name
        create = struct.pack("<HBBIQQIIIIIHHII", 57, 0, 0, 2, 0, 0, 0x80, 0, 7, wire.FILE_OPEN, 0,
                             120, 0, 0, 0) + b"\0"
        close_head = struct.pack("<HHI", 24, 0, 0)
        next_id = 1
        best = float("inf")
        for round_ in range(rounds + 1):    # (the first round warms up)
            if compound:
                padded = create + bytes(wire.pad8(len(create)) - len(create))
                frames = [memoryview(bytes(request(wire.CREATE, next_id + 2 * i, tree_id, padded,
                                                   next_command=64 + len(padded))) +
                                     bytes(request(wire.CLOSE, next_id + 2 * i + 1, tree_id,
                                                   close_head + b"\xff" * 16, flags=wire.FLAGS_RELATED)))
                          for i in range(n)]
                start = time.thread_time_ns()
                for frame in frames:
                    [answer] = conn.handle_frame(frame)
                best = min(best, (time.thread_time_ns() - start) / n / 1000)
                if chain_statuses(bytes(answer.message)) != [0, 0]:     # (a figure of failures: none)
                    raise RuntimeError(f"a compound CREATE + CLOSE failed: {chain_statuses(bytes(answer.message))}")
                next_id += 2 * n
                continue
            creates = [request(wire.CREATE, next_id + 2 * i, tree_id, create) for i in range(n)]
            start = time.thread_time_ns()
            idle_ns = 0
            for i, frame in enumerate(creates):
                if idle_us:
                    time.sleep(idle_us / 1e6)
                    began = time.perf_counter_ns()
                if counter is not None and round_ == rounds:
                    with counter:
                        [answer] = conn.handle_frame(frame)
                    close = request(wire.CLOSE, next_id + 2 * i + 1, tree_id,
                                    close_head + bytes(answer.message[64 + 64:64 + 80]))
                    with counter:
                        conn.handle_frame(close)
                    continue
                [answer] = conn.handle_frame(frame)
                fid = bytes(answer.message[64 + 64:64 + 80])
                conn.handle_frame(request(wire.CLOSE, next_id + 2 * i + 1, tree_id, close_head + fid))
                if idle_us:
                    idle_ns += time.perf_counter_ns() - began
            spent = idle_ns if idle_us else time.thread_time_ns() - start
            best = min(best, spent / n / 1000)
            next_id += 2 * n
        conn.close_all()
        return round(best, 3)

    with tempfile.TemporaryDirectory() as share_dir, tempfile.TemporaryDirectory() as store_dir:
        return asyncio.run(measure(share_dir, store_dir))


# what --core's figures count, by their names' last word (the others: microseconds)
CORE_UNITS = {"instructions": "instructions", "calls": "calls"}


def run(args) -> int:
    if args.core:
        costs = core_costs()
        print(json.dumps(costs, indent=2) if args.json else
              "\n".join(f"  {k:<32}{v:>8.3f} {CORE_UNITS.get(k.rsplit('_', 1)[-1], 'us')} per "
                        f"{'CREATE + CLOSE' if k.startswith('create') else 'ECHO'}"
                        for k, v in costs.items()))
        return 0
    for tool in ("smbtorture", "smbclient"):
        if not shutil.which(tool):
            print(f"{tool} is not installed (Debian packages samba-testsuite, smbclient)")
            return 2
    if args.quick:
        args.runs, args.timelimit, args.list_files, args.listings, args.copy_files = 1, 1, 200, 1, 20
    try:
        workloads = parse_workloads(args.workloads)
    except ValueError as e:
        print(e, file=sys.stderr)
        return 2
    if args.runs < 1 or args.timelimit < 1 or args.listings < 1 or args.copy_files < 1:
        print("--runs, --timelimit, --listings and --copy-files must be at least 1", file=sys.stderr)
        return 2
    try:
        worker_counts = [int(n) for n in args.workers.split(",")]
    except ValueError:
        print(f"--workers: numbers, comma-separated, not {args.workers!r}", file=sys.stderr)
        return 2
    try:
        server_cpus, args.client_cpus = placement_cpus(args.placement)
    except ValueError as e:
        print(e, file=sys.stderr)
        return 2
    files = prepare(args.dir, args.list_files, args.copy_files, args.client_dir)
    state = tempfile.mkdtemp(prefix="smbring-bench-")
    # smbd's per-connection processes act as the user and reach each other through sockets in
    # its lock directory: a private (0700) parent makes its share-mode locking panic
    os.chmod(state, 0o755)
    servers = []
    results: dict = {}
    failures: dict = {}
    load_before = os.getloadavg()
    try:
        port = args.port
        for name, workers in [(n, w) for n in args.servers.split(",")
                              for w in (worker_counts if n == "smbring" else [1])]:
            try:
                for attempt in range(3):
                    port = free_port(port + 1)
                    try:
                        servers.append(start_server(name, workers, files.share, port, state, args))
                        break
                    except PortTaken:       # (by a program started meanwhile: the next one)
                        if attempt == 2:
                            raise
            except (RuntimeError, OSError, subprocess.CalledProcessError, KeyError) as e:
                print(f"skipping {name}: {e!r}", file=sys.stderr)
        if not servers:
            print("no server to measure", file=sys.stderr)
            return 2
        if server_cpus is not None:
            for server in servers:      # each made itself (smbd) or was made a group leader
                pin_processes(server.proc.pid, server_cpus)
        for i in range(args.runs):
            for w in workloads:
                for server in servers:      # alternate inside every run
                    results.setdefault((w.name, server.name), []).append(
                        run_retried(server, w, files, args, i, failures))
    finally:
        for s in servers:
            s.stop()
        removed = len(files.copied) * args.copy_files
        for path in files.copied:
            shutil.rmtree(path, ignore_errors=True)
        shutil.rmtree(state, ignore_errors=True)
        shutil.rmtree(files.local, ignore_errors=True)
        if removed >= RECENTLY_FREED_MANY:
            # (see Files.copied: a benchmark started at once after this one would pay for
            # these removals in every file its copies make)
            time.sleep(RECENTLY_FREED_S)
    summary = {"runs": args.runs, "timelimit_s": args.timelimit, "placement": args.placement,
               "protection": args.protection, "list_files": args.list_files,
               "copy_files": args.copy_files, "load_average": [round(x, 2) for x in load_before],
               **summarize(results, workloads, [s.name for s in servers], failures)}
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"load average at the start: {summary['load_average']}; medians of {args.runs} runs; "
          f"placement {args.placement}; protection {args.protection}")
    for r in summary["records"]:
        print(f"  {r['workload']:<18} {r['server']:<12} {r['ops_per_s']:>10.1f} ops/s  "
              f"{r['server_cpu_us_per_op']:>9.2f} us CPU/op ({r.get('server_sys_us_per_op', 0):.2f} kernel)  "
              f"client {r.get('client_cpu_us_per_op', 0):>9.2f} us"
              f"  workers={r['workers']}")
    for k, v in summary["ratios"].items():
        print(f"  {k:<34}{v:>8}x")
    return 0
