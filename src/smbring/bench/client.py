"""``smbring bench client``: SMB clients side by side, against smbring and Samba's smbd.

The clients: smbring's own (``smbring.client``, with 1 channel and with ``--channels N``),
Samba's smbclient (``smbclient-sync``: its get followed by a ``sync`` of the download, timed,
so that the file is on disk when the clock stops, as smbring's get leaves it), and
smbprotocol's high-level API (``smbclient.open_file``, read and written
in io_size chunks). Each transfer runs in a process of its own so that its CPU time (user +
system, from wait4) is the client's alone. Both servers serve the same file from the same
directory (page cache warm); each get writes a local file in the bench directory (every client
alike), each put reads one. Records: {client, server, case, channels, gbps,
client_cpu_s_per_gib, server_cpu_s_per_gib}, medians over the runs (the server's CPU: its
process, its children and those it reaped, over each transfer); a transfer whose result is not byte-exact (checked
after the clock stopped) is reported and left out. smbd runs with ``server multi channel
support = yes`` (it binds channels on loopback too). ``--baseline-src DIR`` also runs the client
of another checkout (its built ``src``), interleaved with this one: before and after from the
same run, under the same load. The Python clients run with their modules' bytecode cached (in
a directory of the run's own, written by an untimed import before the first transfer), as an
installed package has it: otherwise a checkout run with PYTHONDONTWRITEBYTECODE would compile
smbring's sources in every timed run.

``--cases tree-get,tree-put`` move a tree of ``--tree-files`` small files (``--tree-file-kib``
each) instead of one large file: smbring's client gets the share's ``tree`` and puts a local
copy of it; smbclient does the same with ``recurse on`` and ``mget`` or ``mput``
(``smbclient-sync`` then syncs the tree's file system, ``sync -f``, timed, as smbring's get of a
tree does). Their records also carry ``files_per_s``, and their ratios compare files per second.

On loopback (the default) there is one path with no rate of its own, so channels have nothing
to add up. ``--links N --link-rate RATE`` instead runs the servers in a network namespace of
their own and the clients in another, joined by N emulated links of RATE each way
(``smbring.bench.netlinks``: veth pairs with a token-bucket limit). The servers list every
link's address in FSCTL_QUERY_NETWORK_INTERFACE_INFO (smbd through ``interfaces =
"ADDR;speed=RATE,capability=RSS"``, ``smbring serve`` listening on 0.0.0.0 lists the
namespace's addresses); the clients connect to the first link, and smbring's binds its further
channels to the others. Each record then also says which link carried how many bytes (the
server ends' counters) and which addresses the client's channels were connected to. The
namespaces and their links are removed afterwards, on an error or Ctrl-C too.
"""
from __future__ import annotations

import filecmp
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from smbring.bench import netlinks
from smbring.bench.smbclient import (PASSWORD, USER, bench_smbd_conf, Server, Smbd, Smbring, free_port,
                                     prepare, wait_port, wait_smbd_ready)

CASES = ("get", "put", "tree-get", "tree-put")
# a client that differs from another in one case only runs that one; smbprotocol's high-level
# API copies no trees
CASES_OF = {"smbclient-sync": ("get", "tree-get"), "smbprotocol": ("get", "put"),
            "smbprotocol-large": ("get", "put")}
TREE = "tree"           # the share's tree of small files (tree-get); a tree-put uploads a copy

SMBRING_CLIENT = """
import asyncio, sys
import smbring.client as sc
async def main(host, port, case, local, channels, sign):
    async with await sc.connect(host, int(port), {user!r}, {password!r}, "bench",
                                channels=int(channels), sign=sign == "signed") as c:
        if c.open_channels != int(channels):
            sys.exit(f"{{c.open_channels}} channels: {{c.multichannel_note}}")
        if case == "get":
            await c.get("bigfile", local)
        elif case == "put":
            await c.put(local, "upload-smbring")
        elif case == "tree-get":
            await c.get("tree", local + "/tree")
        else:
            await c.put(local, "upload-tree-smbring")
        print("channel addresses:", " ".join(ch.address or host for ch in c.channels))
        print(f"negotiated: dialect {{c.dialect:#x}}, signed {{c.keys.sign}}, "
              f"sealed {{c.keys.encrypt}}, read {{c.io_size}}, write {{c.write_size}}, "
              f"in flight {{c.depth}} per channel")
asyncio.run(main(*sys.argv[1:]))
"""

SMBPROTOCOL_CLIENT = """
import sys, smbclient
host, port, case, local, tuned = sys.argv[1:6]
tuned = tuned == "large"
# its defaults: every message signed (require_signing=True), through a 64 KiB BufferedReader/
# Writer, here in 1 MiB calls; large: unbuffered, each call (so each READ or WRITE) as large as
# the server allows. Signed either way: with require_signing=False smbprotocol 1.17 leaves its
# SMB 3.1.1 TREE_CONNECT unsigned, which smbd and smbring refuse (ACCESS_DENIED). One request
# at a time either way: smbprotocol waits for each answer before it sends the next request.
session = smbclient.register_session(host, username={user!r}, password={password!r}, port=int(port))
conn = session.connection
remote = f"//{{host}}/bench/" + ("bigfile" if case == "get" else "upload-smbprotocol")
if case == "get":
    with smbclient.open_file(remote, "rb", port=int(port), buffering=0 if tuned else -1) as src, \
            open(local, "wb") as dst:
        chunk = conn.max_read_size if tuned else 1 << 20
        while data := src.read(chunk):
            dst.write(data)
else:
    with open(local, "rb") as src, \
            smbclient.open_file(remote, "wb", port=int(port), buffering=0 if tuned else -1) as dst:
        chunk = conn.max_write_size if tuned else 1 << 20
        while data := src.read(chunk):
            view = memoryview(data)
            while view:
                view = view[dst.write(view):]
print(f"negotiated: dialect {{conn.dialect:#x}}, signed {{bool(session.signing_required)}}, "
      f"sealed {{bool(session.encrypt_data)}}, read {{conn.max_read_size}}, "
      f"write {{conn.max_write_size}}, chunk {{chunk}}, in flight 1")
"""


def add_arguments(p) -> None:
    p.add_argument("--dir", default=os.environ.get("SMBRING_BENCH_DIR", "/var/tmp/smbring-bench"),
                   help="ext4 directory for the share and the local files (not tmpfs)")
    p.add_argument("--size-mib", type=int, default=512, help="size of the file moved")
    p.add_argument("--cases", default="get,put",
                   help="comma-separated: get, put (the file of --size-mib), tree-get, tree-put "
                        "(a tree of --tree-files files of --tree-file-kib KiB, smbclient with "
                        "recurse and mget or mput)")
    p.add_argument("--tree-files", type=int, default=2000, help="files in the tree cases' tree")
    p.add_argument("--tree-file-kib", type=int, default=4, help="KiB per file of that tree")
    p.add_argument("--runs", type=int, default=3, help="runs per record; medians reported")
    p.add_argument("--put-over-existing", action="store_true",
                   help="put over the previous run's upload (smbclient then overwrites in place, "
                        "smbring's client writes a new file and renames it); default: each put "
                        "writes a new file")
    p.add_argument("--servers", default="smbring,smbd", help="comma-separated: smbring, smbd")
    p.add_argument("--clients", default="smbring,smbclient,smbprotocol",
                   help="comma-separated: smbring, smbring-signed (every message signed), "
                        "smbclient, smbclient-sync (get only: smbclient's get and then the "
                        "download synced to disk, timed, as durable as smbring's get), "
                        "smbprotocol (its defaults: signed, 64 KiB buffered, in 1 MiB "
                        "calls), smbprotocol-large (signed, unbuffered, requests as large as the "
                        "server allows)")
    p.add_argument("--channels", type=int, default=4, help="channels for smbring's multichannel runs")
    p.add_argument("--port", type=int, default=4560, help="first of the ports used")
    p.add_argument("--links", type=int, default=0, metavar="N",
                   help="run over N emulated links (veth pairs between two network namespaces "
                        "of the run's own, root only) instead of loopback; the servers list every "
                        "link, smbring's client binds its channels to them")
    p.add_argument("--link-rate", default="2gbit", metavar="RATE",
                   help="with --links: each link's rate, each way (tc units: 500mbit, 2gbit)")
    p.add_argument("--baseline-src", default=None, metavar="DIR",
                   help="also run the smbring client found in DIR (the src directory of another "
                        "checkout, built) as client 'smbring-baseline', interleaved with this "
                        "one: before and after figures from the same run")


class MultichannelSmbd(Smbd):
    """smbd as bench.smbclient runs it, with multichannel on; with `links`, inside their
    server namespace, listening on and listing every link's address."""

    def __init__(self, share: str, port: int, state: str, links: netlinks.Links | None = None):
        conf = os.path.join(state, "smb.conf")
        # the quotes keep each address's ";speed=...,capability=..." together (smb.conf(5))
        listed = (" ".join(f'"{a};speed={links.rate},capability=RSS"' for a in links.server_addresses)
                  if links else "127.0.0.1")
        text = bench_smbd_conf(state, share, interfaces=listed, extra="    server multi channel support = yes\n")
        with open(conf, "w") as f:
            f.write(text)
        if os.geteuid() != 0:
            raise RuntimeError("smbd needs root for its user database")
        if subprocess.run(["id", USER], capture_output=True).returncode:
            subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", USER], check=True)
        subprocess.run(["smbpasswd", "-c", conf, "-a", "-s", USER],
                       input=f"{PASSWORD}\n{PASSWORD}\n", text=True, check=True, capture_output=True)
        self.port = port
        command = ["smbd", "--foreground", "-s", conf, "-p", str(port)]
        self.proc = subprocess.Popen(links.in_server(command) if links else command,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        links.wait_listening(port) if links else wait_port(port, proc=self.proc)
        wait_smbd_ready(os.path.join(state, "lock"))


def start_server(name: str, share: str, port: int, state: str, links: netlinks.Links | None) -> Server:
    if name == "smbd":
        return MultichannelSmbd(share, port, state, links)
    if name == "smbring":
        return Smbring(share, port, state, links=links)
    raise KeyError(f"no server {name!r} (smbring, smbd)")


def _command(client: str, host: str, port: int, case: str, local: str, channels: int) -> list[str]:
    if client in ("smbring", "smbring-baseline", "smbring-signed"):
        code = SMBRING_CLIENT.format(user=USER, password=PASSWORD)
        return [sys.executable, "-c", code, host, str(port), case, local, str(channels),
                "signed" if client == "smbring-signed" else "as-the-server-asks"]
    if client in ("smbprotocol", "smbprotocol-large"):
        code = SMBPROTOCOL_CLIENT.format(user=USER, password=PASSWORD)
        return [sys.executable, "-c", code, host, str(port), case, local,
                "large" if client == "smbprotocol-large" else "default"]
    upload = _upload_name(case, client)
    command = {"get": f"get bigfile {local}", "put": f"put {local} {upload}",
               "tree-get": f"lcd {local}; prompt off; recurse on; mget {TREE}",
               "tree-put": f"mkdir {upload}; cd {upload}; lcd {local}; prompt off; recurse on; mput *"}[case]
    smbclient = ["smbclient", f"//{host}/bench", "-p", str(port), "-U", f"{USER}%{PASSWORD}",
                 "-m", "SMB3", "-c", command]
    if client == "smbclient-sync" and case == "get":
        # the download made durable (fsync, as smbring's get does before its rename), timed
        return ["sh", "-c", '"$@" && sync -- "$0"', local, *smbclient]
    if client == "smbclient-sync" and case == "tree-get":
        # the tree's file system synced (syncfs, as smbring's get of a tree does), timed
        return ["sh", "-c", '"$@" && sync -f -- "$0"', local, *smbclient]
    return smbclient


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
    # each module on its own: a baseline checkout may lack some of them (spnego: the logon of
    # older clients, and `--kerberos`)
    modules = {"smbring": ["asyncio", "spnego", "smbring.client", "smbring.client.transfer",
                           "smbring.client.multichannel", "smbring.client.logon",
                           "smbring.smb.ntlm_initiator", "smbring.uring.aio"],
               "smbprotocol": ["smbclient"]}
    imports = {name: "import importlib\n" + "".join(
        f"try:\n    importlib.import_module({m!r})\nexcept ImportError:\n    pass\n" for m in ms)
        for name, ms in modules.items()}
    for client in clients:
        code = imports.get(client.split("-")[0])
        if code:
            subprocess.run([sys.executable, "-c", code], env=_environment(client, baseline_src, pycache),
                           capture_output=True)


def run_once(client: str, port: int, case: str, local: str, channels: int,
             baseline_src: str | None = None, pycache: str | None = None,
             links: netlinks.Links | None = None) -> tuple[float, float, str]:
    """(seconds, client CPU seconds, output) of one transfer in a process of its own (in the
    links' client namespace with `links`: `ip netns exec` execs the client in its own place,
    so wait4 still sees the client's CPU time)."""
    if case == "get" and os.path.exists(local):
        os.unlink(local)
    env = _environment(client, baseline_src, pycache)
    host = links.server_addresses[0] if links else "127.0.0.1"
    command = _command(client, host, port, case, local, channels)
    start = time.perf_counter()
    proc = subprocess.Popen(links.in_client(command) if links else command,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    try:
        output = proc.stdout.read()
        _pid, status, usage = os.wait4(proc.pid, 0)
    except BaseException:        # Ctrl-C, SIGTERM: the client goes too (it may hold a namespace)
        proc.kill()
        proc.wait()
        raise
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode or b"NT_STATUS" in output:
        raise RuntimeError(f"{client} {case}: {output.decode(errors='replace').strip()[-300:]}")
    return elapsed, usage.ru_utime + usage.ru_stime, output.decode(errors="replace")


def _reported(output: str, what: str) -> str:
    """The rest of the line the client printed starting with `what:`, else ''."""
    for line in output.splitlines():
        if line.startswith(what + ":"):
            return line.split(":", 1)[1].strip()
    return ""


def _terminate_as_interrupt(signum, frame):
    """SIGTERM ends the run as Ctrl-C does: through the `finally`s that stop the servers and
    remove the links."""
    raise KeyboardInterrupt(f"signal {signum}")


def run(args) -> int:
    links = None
    if args.links:
        why = netlinks.available()
        if why:
            print(f"--links: {why}", file=sys.stderr)
            return 2
        try:
            links = netlinks.Links(args.links, netlinks.rate_bits(args.link_rate))
        except ValueError as e:
            print(e, file=sys.stderr)
            return 2
    cases = [c for c in args.cases.split(",") if c]
    unknown = sorted(set(cases) - set(CASES))
    if unknown or not cases:
        print(f"--cases: unknown {', '.join(unknown)} (one or more of {', '.join(CASES)})", file=sys.stderr)
        return 2
    trees = any(c.startswith("tree") for c in cases)
    if trees and (args.tree_files < 1 or args.tree_file_kib < 0):
        print("--tree-files must be 1 or more, --tree-file-kib 0 or more", file=sys.stderr)
        return 2
    share, upload = prepare(args.dir, args.size_mib)
    size = args.size_mib << 20
    tree_source = prepare_tree(args.dir, share, args.tree_files, args.tree_file_kib) if trees else None
    download = os.path.join(args.dir, "client-download")
    state = tempfile.mkdtemp(prefix="smbring-bench-client-")
    servers = []
    records = []
    previous_sigterm = signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        with contextlib.ExitStack() as cleanup:
            # the links are removed after the servers in them are stopped (exits run in reverse)
            cleanup.callback(shutil.rmtree, state, ignore_errors=True)
            if links:
                cleanup.enter_context(links)
            cleanup.callback(lambda: [s.stop() for s in servers])
            port = args.port
            for name in args.servers.split(","):
                port = free_port(port + 1)
                try:
                    servers.append(start_server(name, share, port, os.path.join(state, name), links))
                except (RuntimeError, OSError, subprocess.CalledProcessError, KeyError) as e:
                    print(f"skipping server {name}: {e}", file=sys.stderr)
            records = _measure(args, cases, servers, share, upload, download, size, tree_source, links)
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)
        _remove_download(download, sync=False)
    where = (f"{args.links} emulated links of {args.link_rate} each way" if links else "loopback")
    ratios = _ratios(records)
    if args.json:
        print(json.dumps({"size_mib": args.size_mib, "tree_files": args.tree_files,
                          "tree_file_kib": args.tree_file_kib, "network": where, "records": records,
                          "ratios": ratios}, indent=2))
        return 0
    print(f"network: {where}")
    for r in records:
        extra = ""
        if r.get("link_gib"):
            extra = "  per link GiB " + "/".join(f"{g:.2f}" for g in r["link_gib"])
        if "files_per_s" in r:
            extra = f"  {r['files_per_s']:>8.1f} files/s" + extra
        print(f"  {r['client']:<19} {r['server']:<8} {r['case']:<8} channels={r['channels']:<2} "
              f"{r['gbps']:>7.3f} GB/s  {r['client_cpu_s_per_gib']:>6.3f} client CPU-s/GiB  "
              f"{r['server_cpu_s_per_gib']:>6.3f} server{extra}")
    seen = set()
    for r in records:
        if r.get("negotiated") and (r["client"], r["server"]) not in seen:
            seen.add((r["client"], r["server"]))
            print(f"  {r['client']} with {r['server']}: {r['negotiated']}")
    for name, value in ratios.items():
        print(f"  {name:<48}{value:>8}x")
    return 0


def _ratios(records: list[dict]) -> dict:
    """smbring's N channels against its one, and its one against each other client, by
    server and case (throughput)."""
    # (a tree's rate by its files: its bytes are few, and their GB/s rounded to 3 places)
    by = {(r["client"], r["server"], r["case"], r["channels"]): r.get("files_per_s", r["gbps"])
          for r in records}
    out = {}
    for (client, server, case, channels), gbps in sorted(by.items()):
        one = by.get(("smbring", server, case, 1))
        if not one or not gbps:
            continue
        if client == "smbring" and channels > 1:
            out[f"{server} {case}: smbring {channels} channels / 1"] = round(gbps / one, 2)
        elif not client.startswith("smbring"):
            out[f"{server} {case}: smbring 1 channel / {client}"] = round(one / gbps, 2)
        signed = by.get(("smbring-signed", server, case, 1))
        if client.startswith("smbprotocol") and signed:   # both signing every message
            out[f"{server} {case}: smbring-signed / {client}"] = round(signed / gbps, 2)
    return out


def prepare_tree(directory: str, share: str, files: int, kib: int) -> str:
    """The share's tree of `files` files of `kib` KiB (kept between runs where it is the same),
    and a local copy of it, the tree-put's source; returns the source's path."""
    tree, source = os.path.join(share, TREE), os.path.join(directory, "tree-source")
    marker = os.path.join(directory, f".tree-{files}x{kib}")
    if not os.path.exists(marker):
        for path in (tree, source):
            shutil.rmtree(path, ignore_errors=True)
            os.makedirs(path)
        for i in range(files):
            data = os.urandom(kib * 1024)
            for path in (tree, source):
                with open(os.path.join(path, f"f{i:05d}"), "wb") as f:
                    f.write(data)
        for old in os.listdir(directory):
            if old.startswith(".tree-"):
                os.unlink(os.path.join(directory, old))
        open(marker, "w").close()
    os.chmod(tree, 0o777)
    return source


def _same_tree(a: str, b: str) -> bool:
    """Whether the directories hold the same names, and the same bytes under each."""
    names_a, names_b = sorted(os.listdir(a)), sorted(os.listdir(b))
    return names_a == names_b and all(
        filecmp.cmp(os.path.join(a, n), os.path.join(b, n), shallow=False) for n in names_a)


def _upload_name(case: str, client: str) -> str:
    return ("upload-tree-" if case == "tree-put" else "upload-") + client.split("-")[0]


def _remove_upload(share: str, client: str, case: str = "put") -> None:
    """The client's previous upload removed, untimed, so every put writes a new file, as a
    first upload does: smbclient overwrites an existing file in place, where smbring's client
    writes a new file and renames it over the old one (a put is complete or absent), and on
    a virtual machine writing into pages just freed by the overwritten file costs far less
    than into fresh ones, which compared the two page-cache cases rather than the clients."""
    target = os.path.join(share, _upload_name(case, client))
    if os.path.isdir(target):
        shutil.rmtree(target)
        os.sync()
    elif os.path.exists(target):
        os.unlink(target)
        os.sync()


def _remove_download(download: str, sync: bool = True) -> None:
    """The previous download removed and everything written so far flushed, untimed, before
    every get: a get writes the whole file into the local page cache, and with the gigabytes
    the puts before it left dirty (2 GiB each) the kernel may throttle that writer to the
    disk's writeback rate (past half-way between vm.dirty_background_ratio and
    vm.dirty_ratio), which would time the disk rather than the client."""
    if os.path.isdir(download):
        shutil.rmtree(download)
    elif os.path.exists(download):
        os.unlink(download)
    if sync:
        os.sync()


def _same_memory_for_each_transfer(warm: list[str]) -> None:
    """Every transfer starts with the page cache in the same state (as root): clean pages
    dropped, then the files the transfer reads (the upload's source, the share's big file)
    read back in. Otherwise a put right after one that wrote (and then removed) a large file
    finds its pages freed and ready, while the first put of a round must first reclaim
    memory, which made the second of two identical clients up to twice as fast."""
    if os.geteuid() != 0:
        return
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("1")
    for path in warm:
        with open(path, "rb", buffering=0) as f:
            while f.read(1 << 24):
                pass


def _measure(args, cases, servers, share: str, upload: str, download: str, size: int,
             tree_source: str | None, links: netlinks.Links | None) -> list[dict]:
    variants = []
    clients = args.clients.split(",")
    if args.baseline_src and "smbring" in clients:
        clients.insert(clients.index("smbring"), "smbring-baseline")
    for client in clients:
        if client.startswith("smbclient") and not shutil.which("smbclient"):
            print("skipping smbclient: not installed", file=sys.stderr)
            continue
        variants.append((client, 1))
        if client in ("smbring", "smbring-baseline") and args.channels > 1:
            variants.append((client, args.channels))
    pycache = tempfile.mkdtemp(prefix="smbring-bench-pycache-")
    try:
        warm_bytecode([c for c, _ in variants], args.baseline_src, pycache)
        results: dict[tuple, list] = {}
        for run_index in range(args.runs):
            # each run starts with the next client: the second of two identical clients in a
            # round measured faster gets (0.07 CPU-s/GiB) and up to 2.5x slower puts against
            # smbd than the first, so a fixed order favoured whichever came second; with as
            # many runs as clients (or a multiple), each has each place once
            turn = run_index % len(variants) if variants else 0
            order = variants[turn:] + variants[:turn]
            for case in cases:
                for server in servers:
                    for client, channels in order:
                        if case not in CASES_OF.get(client, CASES):
                            continue
                        local = {"get": download, "put": upload, "tree-get": download,
                                 "tree-put": tree_source}[case]
                        if case == "put" and not args.put_over_existing:
                            _remove_upload(share, client)
                            _same_memory_for_each_transfer([upload, os.path.join(share, "bigfile")])
                        if case == "get":
                            _remove_download(download)
                            _same_memory_for_each_transfer([os.path.join(share, "bigfile")])
                        if case == "tree-put":
                            _remove_upload(share, client, case)
                        if case == "tree-get":
                            _remove_download(download)
                            os.mkdir(download)      # (smbclient's mget writes into it)
                        before = links.server_bytes() if links else []
                        server_cpu = server.cpu()
                        try:
                            elapsed, cpu, output = run_once(client, server.port, case, local, channels,
                                                            args.baseline_src, pycache, links)
                        except RuntimeError as e:
                            print(f"warning: {e}", file=sys.stderr)
                            continue
                        server_cpu = server.cpu() - server_cpu     # (smbd's children too, reaped)
                        carried = [b - a for a, b in zip(before, links.server_bytes())] if links else []
                        # every transfer is checked byte for byte (after the clock stopped)
                        if case == "get":
                            exact = filecmp.cmp(download, os.path.join(share, "bigfile"), shallow=False)
                        elif case == "put":
                            exact = filecmp.cmp(upload, os.path.join(share, _upload_name(case, client)),
                                                shallow=False)
                        elif case == "tree-get":
                            exact = _same_tree(os.path.join(download, TREE), os.path.join(share, TREE))
                        else:
                            exact = _same_tree(tree_source, os.path.join(share, _upload_name(case, client)))
                        if not exact:
                            print(f"warning: {client} {case} from {server.name}: not byte-exact",
                                  file=sys.stderr)
                            continue
                        results.setdefault((client, server.name, case, channels), []).append(
                            (elapsed, cpu, carried, _reported(output, "channel addresses").split(),
                             _reported(output, "negotiated"), server_cpu))
    finally:
        shutil.rmtree(pycache, ignore_errors=True)
    records = []
    for (client, server, case, channels), runs in results.items():
        moved = size if case in ("get", "put") else args.tree_files * args.tree_file_kib * 1024
        gib = max(moved, 1) / (1 << 30)
        record = {"client": client, "server": server, "case": case, "channels": channels,
                  "gbps": round(statistics.median(moved / r[0] / 1e9 for r in runs), 3),
                  "client_cpu_s_per_gib": round(statistics.median(r[1] for r in runs) / gib, 3),
                  # the server's CPU for the same transfers: with the client's, what one GiB
                  # costs the machine (client and server share its cores here)
                  "server_cpu_s_per_gib": round(statistics.median(r[5] for r in runs) / gib, 3),
                  "runs": len(runs),
                  # every run, in order: with --baseline-src the two trees ran in turn, so
                  # pairs can be compared run by run (the load moves between runs)
                  "each_gbps": [round(moved / r[0] / 1e9, 3) for r in runs],
                  "each_cpu_s_per_gib": [round(r[1] / gib, 3) for r in runs]}
        if case.startswith("tree"):
            record["files_per_s"] = round(statistics.median(args.tree_files / r[0] for r in runs), 1)
        if links:
            # the bytes each link carried (both ways, headers included), median over the runs
            record["link_gib"] = [round(statistics.median(r[2][i] for r in runs) / (1 << 30), 3)
                                  for i in range(links.count)]
        if runs[-1][3]:
            record["channel_addresses"] = runs[-1][3]
        if runs[-1][4]:
            record["negotiated"] = runs[-1][4]
        records.append(record)
    return records
