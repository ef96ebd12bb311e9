"""``smbring bench smbclient``: Samba's smbclient against smbring and Samba's smbd.

Both servers serve the same 2 GiB file from the same ext4 directory (page cache warm), on
loopback. smbclient runs ``get FILE /dev/null`` and ``put``, alternating servers run by run,
with 1 and 4 parallel clients, plain and encrypted; a loopback TCP ceiling (iperf3) is measured
in the same run. Reported per (server, case): median client-observed GB/s, server CPU seconds
per GiB moved, and (smbring) the read path its data path chose.

smbd runs with ``vfs objects = io_uring`` from a private configuration modelled on
``shared/anchors/samba/smb.conf``; it needs root (a Unix user for its password database).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

USER = "smbbench"
PASSWORD = "BenchPass1"
RETRIES = 2          # a run whose client failed is run again (counted as failed_runs), this often

SMBD_STATE_DIRS = ("private", "lock", "state", "cache", "pid", "ncalrpc", "bind-dns")


def smbd_global(state: str, *, interfaces: str = "127.0.0.1", log_file: str | None = None,
                log_level: int = 0, extra: str = "") -> str:
    """The [global] section of an smbd kept to itself: its state in directories under `state`
    (made here), none of the system's; standalone, no NetBIOS, no printing, SMB 2.0.2-3.1.1;
    listening on `interfaces` only; `extra`: more lines (indented as these)."""
    for sub in SMBD_STATE_DIRS:
        os.makedirs(os.path.join(state, sub), exist_ok=True)
    return f"""[global]
    server role = standalone server
    workgroup = WORKGROUP
    disable netbios = yes
    interfaces = {interfaces}
    bind interfaces only = yes
    private dir = {state}/private
    lock directory = {state}/lock
    state directory = {state}/state
    cache directory = {state}/cache
    pid directory = {state}/pid
    ncalrpc dir = {state}/ncalrpc
    binddns dir = {state}/bind-dns
    passdb backend = tdbsam:{state}/private/passdb.tdb
    log file = {log_file or state + "/log.%m"}
    log level = {log_level}
    load printers = no
    printing = bsd
    printcap name = /dev/null
    disable spoolss = yes
    usershare path =
    map to guest = never
    server min protocol = SMB2_02
    server max protocol = SMB3_11
{extra}"""


# the benchmark's: reads and writes of up to 8 MiB (smbclient asks for them), data through io_uring
BENCH_GLOBAL = """    smb2 max read = 8388608
    smb2 max write = 8388608
    smb2 max trans = 8388608
"""


def bench_smbd_conf(state: str, share: str, *, interfaces: str = "127.0.0.1", extra: str = "") -> str:
    return smbd_global(state, interfaces=interfaces, extra=BENCH_GLOBAL + extra) + f"""
[bench]
    path = {share}
    read only = no
    vfs objects = io_uring
"""


def add_arguments(p) -> None:
    p.add_argument("--dir", default=os.environ.get("SMBRING_BENCH_DIR", "/var/tmp/smbring-bench"),
                   help="ext4 directory for the share (not tmpfs)")
    p.add_argument("--size-mib", type=int, default=2048, help="size of the test file")
    p.add_argument("--runs", type=int, default=5, help="runs per (server, case); medians reported")
    p.add_argument("--servers", default="smbring,smbd", help="comma-separated: smbring, smbd")
    p.add_argument("--cases", default="get,put,get-encrypted,get-4clients",
                   help="comma-separated: get, put, get-encrypted, get-4clients")
    p.add_argument("--port", type=int, default=4460, help="first of the ports used")
    p.add_argument("--read-path", default="auto", choices=["auto", "copy", "mmap", "splice", "zc"],
                   help="smbring's read path (default auto)")
    p.add_argument("--congestion", default=None,
                   help="TCP congestion control for the whole run, both servers and the ceiling "
                        "alike (sets the system default while it runs; root only). Default: the "
                        "machine's own")


# -- helpers --------------------------------------------------------------------------------

def free_port(start: int) -> int:
    for port in range(start, start + 100):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port")


class PortTaken(RuntimeError):
    """The server exited before it listened: its port, free when chosen, taken meanwhile."""


def wait_port(port: int, timeout: float = 15.0, proc: subprocess.Popen | None = None) -> None:
    """Waits until 127.0.0.1:`port` is listened on: by `proc` itself where it is given (a
    port free when chosen may be taken by another program first, a benchmark run beside this
    one: its server then cannot bind it, and the clients would measure the other one)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None:
            if proc.poll() is not None:
                raise PortTaken(f"{proc.args[0]} exited ({proc.returncode}) before it listened "
                                f"on 127.0.0.1:{port} (taken by another program?)")
            if listens(proc.pid, port):
                return
        else:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def listens(pid: int, port: int) -> bool:
    """Whether the process `pid`, or one of its children, holds a TCP socket listening on
    `port` (from /proc): that a connection to the port succeeds does not say whose it is."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    pids = [pid]
    for each in pids:       # (grows as children are found: workers, their helpers)
        try:
            for task in os.listdir(f"/proc/{each}/task"):
                with open(f"/proc/{each}/task/{task}/children") as f:
                    pids.extend(int(child) for child in f.read().split())
            descriptors = os.listdir(f"/proc/{each}/fd")
        except OSError:
            continue
        for fd in descriptors:
            try:
                if os.readlink(f"/proc/{each}/fd/{fd}") in inodes:
                    return True
            except OSError:
                continue
    return False


def wait_smbd_ready(lock_dir: str, timeout: float = 15.0) -> None:
    """Waits until smbd's notify daemon has registered its name (in `lock_dir`/names.tdb). smbd
    listens before the child it forks for change notify has done so, and a tree connect made
    in between fails with NT_STATUS_NO_MEMORY ("notify_init: No notify daemon around"). The
    lock directory must be new to this smbd: a name left by an earlier one would be taken."""
    names = os.path.join(lock_dir, "names.tdb")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(names, "rb") as f:
                if b"notify-daemon\0" in f.read():
                    return
        except FileNotFoundError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"smbd's notify daemon did not register in {names} within {timeout:g} s")


def cpu_seconds(pid: int) -> float:
    """CPU seconds of pid, its reaped children, and its live descendants."""
    return sum(cpu_split(pid))


def cpu_split(pid: int) -> tuple[float, float]:
    """cpu_seconds(pid) as (user, system): the time in the process's own code and the time
    the kernel spent for it (system calls, wake-ups, the network stack)."""
    hz = os.sysconf("SC_CLK_TCK")
    user = system = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ppid, pgrp = int(fields[1]), int(fields[2])
        if int(entry) == pid:       # utime stime cutime cstime
            user += (int(fields[11]) + int(fields[13])) / hz
            system += (int(fields[12]) + int(fields[14])) / hz
        elif pgrp == pid or ppid == pid:
            user += int(fields[11]) / hz
            system += int(fields[12]) / hz
    return user, system


def prepare(directory: str, size_mib: int) -> tuple[str, str]:
    share = os.path.join(directory, "share")
    os.makedirs(share, exist_ok=True)
    os.chmod(share, 0o777)
    big = os.path.join(share, "bigfile")
    if not os.path.exists(big) or os.path.getsize(big) != size_mib << 20:
        chunk = os.urandom(1 << 20)
        with open(big + ".tmp", "wb") as f:
            for i in range(size_mib):
                f.write(chunk[i % 251:] + chunk[:i % 251])
        os.replace(big + ".tmp", big)
    os.chmod(big, 0o644)
    upload = os.path.join(directory, "upload-src")
    if not os.path.exists(upload) or os.path.getsize(upload) != size_mib << 20:
        shutil.copyfile(big, upload)
    for path in (big, upload):
        with open(path, "rb") as f:
            while f.read(16 << 20):
                pass
    return share, upload


class Server:
    name = ""
    read_path = ""

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def cpu_split(self) -> tuple[float, float]:
        return cpu_split(self.proc.pid)


class Smbd(Server):
    name = "smbd"
    read_path = "vfs_io_uring"

    def __init__(self, share: str, port: int, state: str):
        if os.geteuid() != 0:
            raise RuntimeError("smbd needs root for its user database")
        subprocess.run(["id", USER], capture_output=True).returncode == 0 or subprocess.run(
            ["useradd", "-M", "-s", "/usr/sbin/nologin", USER], check=True)
        text = bench_smbd_conf(state, share)        # (makes the state's directories)
        conf = os.path.join(state, "smb.conf")
        with open(conf, "w") as f:
            f.write(text)
        subprocess.run(["smbpasswd", "-c", conf, "-a", "-s", USER],
                       input=f"{PASSWORD}\n{PASSWORD}\n", text=True, check=True, capture_output=True)
        self.port = port
        # smbd makes itself a session and process-group leader (so killpg reaches its children)
        # (its accounts are its passdb's alone: never those of a winbindd this host may run)
        self.proc = subprocess.Popen(["smbd", "--foreground", "-s", conf, "-p", str(port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     env=dict(os.environ, _NO_WINBINDD="1"))
        wait_port(port, proc=self.proc)
        wait_smbd_ready(os.path.join(state, "lock"))


class Smbring(Server):
    name = "smbring"

    def __init__(self, share: str, port: int, state: str, read_path: str = "auto", workers: int = 1,
                 links=None, busy_poll: int = 0):
        """`smbring serve` of `share` on loopback, or with `links` (bench.netlinks.Links) inside
        their server namespace on 0.0.0.0, where it lists every address but loopback, that is
        every link. `busy_poll`: serve --busy-poll (named smbring-busy)."""
        passdb = os.path.join(state, "passdb")
        if workers > 1:
            self.name = f"smbring-w{workers}"
        elif busy_poll:
            self.name = "smbring-busy"
        os.makedirs(os.path.join(state, "run"), mode=0o700, exist_ok=True)
        env = dict(os.environ, SMBRING_PASSDB=passdb)
        smbring = [sys.executable, "-m", "smbring.cli"]
        subprocess.run(smbring + ["user", "add", USER, "--password-stdin"], input=PASSWORD + "\n",
                       text=True, check=True, env=env, capture_output=True)
        self.port = port
        self.log = os.path.join(state, "smbring.log")
        host = "0.0.0.0" if links else "127.0.0.1"
        serve = smbring + ["serve", share, "--share", "bench", "--listen", f"{host}:{port}",
                           "--passdb", passdb, "--log-level", "info", "--read-path", read_path,
                           "--workers", str(workers), "--control-socket", os.path.join(state, "run", "control"),
                           "--busy-poll", str(busy_poll)]
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(links.in_server(serve) if links else serve, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True, env=env)
        try:
            links.wait_listening(port) if links else wait_port(port, proc=self.proc)
        except RuntimeError:
            if links:
                self.stop()
            raise
        self.configured = read_path

    def path_counts(self) -> dict[str, int]:
        """How many file reads took each path so far: the per-connection counts in its log."""
        import re
        counts: dict[str, int] = {}
        with open(self.log) as f:
            for found in re.findall(r"file reads sent by path \{([^}]*)\}", f.read()):
                for key, value in re.findall(r"'(\w+)': (\d+)", found):
                    counts[key] = counts.get(key, 0) + int(value)
        return counts


def smbclient(port: int, command: str, encrypt: bool) -> subprocess.Popen:
    args = ["smbclient", "//127.0.0.1/bench", "-p", str(port), "-U", f"{USER}%{PASSWORD}",
            "-m", "SMB3", "-c", command]
    if encrypt:
        args.append("--client-protection=encrypt")
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def run_case(server: Server, case: str, size: int, upload: str) -> tuple[float, float, dict]:
    """One run: (GB/s seen by the clients, server CPU seconds, file reads per path)."""
    before = server.path_counts() if hasattr(server, "path_counts") else {}
    clients = 4 if case == "get-4clients" else 1
    encrypt = case == "get-encrypted"
    if case == "put":
        command = f"put {upload} upload-{server.name}"
    else:
        command = "get bigfile /dev/null"
    cpu0 = server.cpu()
    start = time.perf_counter()
    procs = [smbclient(server.port, command, encrypt) for _ in range(clients)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    elapsed = time.perf_counter() - start
    for p, out in zip(procs, outputs):
        if "getting file" not in out and "putting file" not in out:
            raise RuntimeError(f"{server.name} {case}: smbclient failed: {out.strip()[-300:]}")
        if "NT_STATUS" in out:  # smbd sometimes fails the close after a complete transfer
            print(f"warning: {server.name} {case}: {out.strip().splitlines()[-1]}", file=sys.stderr)
    time.sleep(0.2)  # let per-connection processes exit and be accounted
    cpu = server.cpu() - cpu0
    after = server.path_counts() if hasattr(server, "path_counts") else {}
    paths = {k: after[k] - before.get(k, 0) for k in after if after[k] - before.get(k, 0)}
    return clients * size / elapsed / 1e9, cpu, paths


def tcp_ceiling(port: int, *extra: str) -> float | None:
    """iperf3 over loopback for 3 s (its defaults: 128 KiB writes; `extra` changes them)."""
    if not shutil.which("iperf3"):
        return None
    srv = subprocess.Popen(["iperf3", "-s", "-B", "127.0.0.1", "-p", str(port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        out = subprocess.run(["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", "3", "-J", *extra],
                             capture_output=True, text=True, timeout=30).stdout
        try:
            return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 8e9
        except (ValueError, KeyError) as e:   # iperf3 failed (it says why in its JSON)
            print(f"iperf3 {' '.join(extra)}: no figure ({e!r}): {out.strip()[-200:]}", file=sys.stderr)
            return None
    finally:
        srv.kill()
        srv.wait()


CONGESTION = "/proc/sys/net/ipv4/tcp_congestion_control"


def set_congestion(name: str | None) -> str | None:
    """Makes `name` the system's TCP congestion control; returns the one it replaced."""
    with open(CONGESTION) as f:
        before = f.read().strip()
    if name and name != before:
        with open(CONGESTION, "w") as f:
            f.write(name)
    return before


def run(args) -> int:
    if not shutil.which("smbclient"):
        print("smbclient is not installed (Debian package smbclient)")
        return 2
    share, upload = prepare(args.dir, args.size_mib)
    size = args.size_mib << 20
    state = tempfile.mkdtemp(prefix="smbring-bench-")
    servers: list[Server] = []
    records = []
    machine_congestion = set_congestion(args.congestion)
    congestion = args.congestion or machine_congestion
    try:
        port = args.port
        for name in args.servers.split(","):
            port = free_port(port + 1)
            try:
                if name == "smbring":
                    servers.append(Smbring(share, port, os.path.join(state, name), args.read_path))
                else:
                    cls = {"smbd": Smbd}[name]
                    servers.append(cls(share, port, os.path.join(state, name)))
            except (RuntimeError, OSError, subprocess.CalledProcessError, KeyError) as e:
                print(f"skipping {name}: {e}", file=sys.stderr)
        iperf_port = free_port(port + 1)
        ceiling = tcp_ceiling(iperf_port)
        # iperf3's default writes are 128 KiB; a file server writes MiBs at a time
        ceiling_1m = tcp_ceiling(free_port(iperf_port + 1), "-l", "1M")
        results = {(s.name, c): [] for s in servers for c in args.cases.split(",")}
        failures = {key: 0 for key in results}
        for _ in range(args.runs):
            for case in args.cases.split(","):
                for server in servers:  # alternate servers inside every run
                    for attempt in range(RETRIES + 1):
                        try:
                            results[(server.name, case)].append(run_case(server, case, size, upload))
                            break
                        except RuntimeError as e:   # a client failed: counted, run again
                            failures[(server.name, case)] += 1
                            if attempt == RETRIES:
                                raise
                            print(f"warning: {e}; running it again", file=sys.stderr)
        for (name, case), runs in results.items():
            server = next(s for s in servers if s.name == name)
            moved_gib = size / (1 << 30) * (4 if case == "get-4clients" else 1)
            paths: dict[str, int] = {}
            for r in runs:
                for k, v in r[2].items():
                    paths[k] = paths.get(k, 0) + v
            if name == "smbring":   # the path smbring's reads really took, most used first
                used = ", ".join(f"{k} {v}" for k, v in sorted(paths.items(), key=lambda kv: -kv[1]))
                read_path = f"{server.configured}: {used}" if used else server.configured
            else:
                read_path = server.read_path
            records.append({
                "server": name, "case": case,
                "gbps": round(statistics.median(r[0] for r in runs), 3),
                "server_cpu_s_per_gib": round(statistics.median(r[1] for r in runs) / moved_gib, 3),
                "read_path": read_path, "runs": len(runs),
                "failed_runs": failures[(name, case)],
            })
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(state, ignore_errors=True)
        set_congestion(machine_congestion)
    summary = {"tcp_congestion": congestion,
               "tcp_ceiling_gbps": round(ceiling, 3) if ceiling else None,
               "tcp_ceiling_1m_writes_gbps": round(ceiling_1m, 3) if ceiling_1m else None,
               "records": records}
    by = {(r["server"], r["case"]): r for r in records}
    ratios = {}
    for case in args.cases.split(","):
        a, b = by.get(("smbring", case)), by.get(("smbd", case))
        if a and b:
            ratios[f"{case}_gbps_vs_smbd"] = round(a["gbps"] / b["gbps"], 3)
            ratios[f"{case}_cpu_vs_smbd"] = round(a["server_cpu_s_per_gib"] / max(b["server_cpu_s_per_gib"], 1e-9), 3)
    get = by.get(("smbring", "get"))
    if get and ceiling:
        ratios["get_gbps_vs_tcp_ceiling"] = round(get["gbps"] / ceiling, 3)
    summary["ratios"] = ratios
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"TCP congestion control: {congestion}")
    print(f"loopback TCP ceiling (iperf3): {summary['tcp_ceiling_gbps']} GB/s "
          f"(with 1 MiB writes: {summary['tcp_ceiling_1m_writes_gbps']} GB/s)")
    for r in records:
        failed = f"  ({r['failed_runs']} failed runs, run again)" if r["failed_runs"] else ""
        print(f"  {r['server']:<8} {r['case']:<14} {r['gbps']:>7.3f} GB/s  "
              f"{r['server_cpu_s_per_gib']:>6.3f} CPU-s/GiB  path={r['read_path']}{failed}")
    for k, v in ratios.items():
        print(f"  {k:<34}{v:>8}x")
    return 0
