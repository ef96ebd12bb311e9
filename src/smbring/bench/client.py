"""``smbring bench client``: SMB clients side by side, against smbring and Samba's smbd.

The clients: smbring's own (``smbring.client``, with 1 channel and with ``--channels N``),
Samba's smbclient, and smbprotocol's high-level API (``smbclient.open_file``, read and written
in io_size chunks). Each transfer runs in a process of its own so that its CPU time (user +
system, from wait4) is the client's alone. Both servers serve the same file from the same
directory (page cache warm); each get writes a local file in the bench directory (every client
alike), each put reads one. Records: {client, server, case, channels, gbps,
client_cpu_s_per_gib}, medians over the runs; a transfer whose result is not byte-exact (checked
after the clock stopped) is reported and left out. smbd runs with ``server multi channel
support = yes`` (it binds channels on loopback too). ``--baseline-src DIR`` also runs the client
of another checkout (its built ``src``), interleaved with this one: before and after from the
same run, under the same load. The Python clients run with their modules' bytecode cached (in
a directory of the run's own, written by an untimed import before the first transfer), as an
installed package has it: otherwise a checkout run with PYTHONDONTWRITEBYTECODE would compile
smbring's sources in every timed run.
"""
from __future__ import annotations

import filecmp
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from smbring.bench.smbclient import PASSWORD, SMBD_CONF, USER, Smbd, Smbring, free_port, prepare, wait_port

CASES = ("get", "put")

SMBRING_CLIENT = """
import asyncio, sys
import smbring.client as sc
async def main(port, case, local, channels):
    async with await sc.connect("127.0.0.1", int(port), {user!r}, {password!r}, "bench",
                                channels=int(channels)) as c:
        if c.open_channels != int(channels):
            sys.exit(f"{{c.open_channels}} channels: {{c.multichannel_note}}")
        if case == "get":
            await c.get("bigfile", local)
        else:
            await c.put(local, "upload-smbring")
asyncio.run(main(*sys.argv[1:]))
"""

SMBPROTOCOL_CLIENT = """
import sys, smbclient
port, case, local = sys.argv[1:4]
smbclient.register_session("127.0.0.1", username={user!r}, password={password!r}, port=int(port))
remote = "//127.0.0.1/bench/" + ("bigfile" if case == "get" else "upload-smbprotocol")
chunk = 1 << 20
if case == "get":
    with smbclient.open_file(remote, "rb", port=int(port)) as src, open(local, "wb") as dst:
        while data := src.read(chunk):
            dst.write(data)
else:
    with open(local, "rb") as src, smbclient.open_file(remote, "wb", port=int(port)) as dst:
        while data := src.read(chunk):
            dst.write(data)
"""


def add_arguments(p) -> None:
    p.add_argument("--dir", default=os.environ.get("SMBRING_BENCH_DIR", "/var/tmp/smbring-bench"),
                   help="ext4 directory for the share and the local files (not tmpfs)")
    p.add_argument("--size-mib", type=int, default=512, help="size of the file moved")
    p.add_argument("--runs", type=int, default=3, help="runs per record; medians reported")
    p.add_argument("--servers", default="smbring,smbd", help="comma-separated: smbring, smbd")
    p.add_argument("--clients", default="smbring,smbclient,smbprotocol",
                   help="comma-separated: smbring, smbclient, smbprotocol")
    p.add_argument("--channels", type=int, default=4, help="channels for smbring's multichannel runs")
    p.add_argument("--port", type=int, default=4560, help="first of the ports used")
    p.add_argument("--baseline-src", default=None, metavar="DIR",
                   help="also run the smbring client found in DIR (the src directory of another "
                        "checkout, built) as client 'smbring-baseline', interleaved with this "
                        "one: before and after figures from the same run")


class MultichannelSmbd(Smbd):
    """smbd as bench.smbclient runs it, with multichannel on."""

    def __init__(self, share: str, port: int, state: str):
        for sub in ("private", "lock", "state", "cache", "pid", "ncalrpc", "bind-dns"):
            os.makedirs(os.path.join(state, sub), exist_ok=True)
        conf = os.path.join(state, "smb.conf")
        with open(conf, "w") as f:
            f.write(SMBD_CONF.format(state=state, share=share).replace(
                "[bench]", "    server multi channel support = yes\n\n[bench]"))
        if os.geteuid() != 0:
            raise RuntimeError("smbd needs root for its user database")
        if subprocess.run(["id", USER], capture_output=True).returncode:
            subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", USER], check=True)
        subprocess.run(["smbpasswd", "-c", conf, "-a", "-s", USER],
                       input=f"{PASSWORD}\n{PASSWORD}\n", text=True, check=True, capture_output=True)
        self.port = port
        self.proc = subprocess.Popen(["smbd", "--foreground", "-s", conf, "-p", str(port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(port)


def _command(client: str, port: int, case: str, local: str, channels: int) -> list[str]:
    if client in ("smbring", "smbring-baseline"):
        code = SMBRING_CLIENT.format(user=USER, password=PASSWORD)
        return [sys.executable, "-c", code, str(port), case, local, str(channels)]
    if client == "smbprotocol":
        code = SMBPROTOCOL_CLIENT.format(user=USER, password=PASSWORD)
        return [sys.executable, "-c", code, str(port), case, local]
    command = "get bigfile " + local if case == "get" else f"put {local} upload-smbclient"
    return ["smbclient", "//127.0.0.1/bench", "-p", str(port), "-U", f"{USER}%{PASSWORD}",
            "-m", "SMB3", "-c", command]


def _environment(client: str, baseline_src: str | None, pycache: str | None) -> dict:
    env = dict(os.environ)
    if pycache:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = pycache
    if client == "smbring-baseline":
        env["PYTHONPATH"] = os.path.abspath(baseline_src)
    return env


def warm_bytecode(clients, baseline_src: str | None, pycache: str) -> None:
    """Compiles what each Python client imports into `pycache`, untimed."""
    imports = {"smbring": "import asyncio, spnego, smbring.client, smbring.client.transfer, "
                          "smbring.client.multichannel",
               "smbprotocol": "import smbclient"}
    for client in clients:
        code = imports.get(client.split("-")[0])
        if code:
            subprocess.run([sys.executable, "-c", code], env=_environment(client, baseline_src, pycache),
                           capture_output=True)


def run_once(client: str, port: int, case: str, local: str, channels: int,
             baseline_src: str | None = None, pycache: str | None = None) -> tuple[float, float]:
    """(seconds, client CPU seconds) of one transfer in a process of its own."""
    if case == "get" and os.path.exists(local):
        os.unlink(local)
    env = _environment(client, baseline_src, pycache)
    start = time.perf_counter()
    proc = subprocess.Popen(_command(client, port, case, local, channels),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    output = proc.stdout.read()
    _pid, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode or b"NT_STATUS" in output:
        raise RuntimeError(f"{client} {case}: {output.decode(errors='replace').strip()[-300:]}")
    return elapsed, usage.ru_utime + usage.ru_stime


def run(args) -> int:
    share, upload = prepare(args.dir, args.size_mib)
    size = args.size_mib << 20
    download = os.path.join(args.dir, "client-download")
    state = tempfile.mkdtemp(prefix="smbring-bench-client-")
    servers = []
    records = []
    try:
        port = args.port
        for name in args.servers.split(","):
            port = free_port(port + 1)
            try:
                cls = {"smbring": Smbring, "smbd": MultichannelSmbd}[name]
                servers.append(cls(share, port, os.path.join(state, name)))
            except (RuntimeError, OSError, subprocess.CalledProcessError, KeyError) as e:
                print(f"skipping server {name}: {e}", file=sys.stderr)
        variants = []
        clients = args.clients.split(",")
        if args.baseline_src and "smbring" in clients:
            clients.insert(clients.index("smbring"), "smbring-baseline")
        for client in clients:
            if client == "smbclient" and not shutil.which("smbclient"):
                print("skipping smbclient: not installed", file=sys.stderr)
                continue
            variants.append((client, 1))
            if client.startswith("smbring") and args.channels > 1:
                variants.append((client, args.channels))
        pycache = os.path.join(state, "pycache")
        warm_bytecode([c for c, _ in variants], args.baseline_src, pycache)
        results: dict[tuple, list] = {}
        for _ in range(args.runs):
            for case in CASES:
                for server in servers:
                    for client, channels in variants:
                        local = download if case == "get" else upload
                        try:
                            elapsed, cpu = run_once(client, server.port, case, local, channels,
                                                    args.baseline_src, pycache)
                        except RuntimeError as e:
                            print(f"warning: {e}", file=sys.stderr)
                            continue
                        # every transfer is checked byte for byte (after the clock stopped)
                        moved = (download, os.path.join(share, "bigfile")) if case == "get" else \
                            (upload, os.path.join(share, "upload-" + client.split("-")[0]))
                        if not filecmp.cmp(*moved, shallow=False):
                            print(f"warning: {client} {case} from {server.name}: not byte-exact",
                                  file=sys.stderr)
                            continue
                        results.setdefault((client, server.name, case, channels), []).append((elapsed, cpu))
        gib = size / (1 << 30)
        for (client, server, case, channels), runs in results.items():
            records.append({"client": client, "server": server, "case": case, "channels": channels,
                            "gbps": round(statistics.median(size / e / 1e9 for e, _ in runs), 3),
                            "client_cpu_s_per_gib": round(statistics.median(c for _, c in runs) / gib, 3),
                            "runs": len(runs)})
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(state, ignore_errors=True)
        if os.path.exists(download):
            os.unlink(download)
    if args.json:
        print(json.dumps({"size_mib": args.size_mib, "records": records}, indent=2))
        return 0
    for r in records:
        print(f"  {r['client']:<12} {r['server']:<8} {r['case']:<4} channels={r['channels']:<2} "
              f"{r['gbps']:>7.3f} GB/s  {r['client_cpu_s_per_gib']:>6.3f} client CPU-s/GiB")
    return 0
