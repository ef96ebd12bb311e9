"""Python bytecode instructions and calls per operation of a served small-request workload:
figures the machine's load does not move, so that a change of a few per cent to what a
request runs shows at once, where timed figures on a small machine move by more.

    sudo .venv/bin/python scripts/count_served.py                       # CREATE + CLOSE pairs
    sudo .venv/bin/python scripts/count_served.py --workload mget       # 4 KiB files, smbclient
    sudo .venv/bin/python scripts/count_served.py --top 40              # the costliest functions

Runs this checkout's `smbring serve` on a fresh share in a temporary directory, on loopback,
with a tracer (`sys.settrace`, opcode events) in every thread that counts only between two
signals: SIGUSR2 starts it, SIGUSR1 writes the counts. `create-close` counts `smbtorture
smb2.bench.path-contention-shared` at 1 connection x 1 in flight for `--seconds` after a run
of one second that warms the server up (per pair: the CLOSE handler's calls are the pairs);
`mget` counts a second smbclient `mget` of
`--files` files of 4 KiB (the first warms the server up), per file (CREATE, QUERY_INFO,
READ, CLOSE). Each figure includes its share of the logon. The instructions are given by
the command handler they ran under (`h_create`, `h_read`, ...: everything the handler
called), the rest being the framing's, the shell's and the event loop's, then by function.
A traced server runs many times slower: the counts say nothing of time. Needs smbtorture or smbclient, and root (the server
acts as the benchmark's user, as `smbring bench smallops` runs it)."""
from __future__ import annotations

import argparse
import collections
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

USER, PASSWORD = "smbbench", "BenchPass1"


def serve_traced(out: str, argv: list[str]) -> int:
    """The server, traced in every thread between SIGUSR2 and SIGUSR1 (then written to `out`)."""
    import threading

    own: collections.Counter = collections.Counter()
    calls: collections.Counter = collections.Counter()
    by_handler: collections.Counter = collections.Counter()   # handler name -> instructions under it
    handler_of: dict = {}       # a live frame -> the command handler it runs under (None: none)
    counting = [False]

    def where(code) -> str:
        return f"{code.co_filename.rpartition('/src/')[2]}:{code.co_firstlineno} {code.co_name}"

    def on_opcode(frame, event, arg):
        if event == "opcode" and counting[0]:
            own[frame.f_code] += 1
            by_handler[handler_of.get(frame)] += 1
        elif event == "return":
            handler_of.pop(frame, None)
        return on_opcode

    def on_call(frame, event, arg):
        if not counting[0]:
            return None
        frame.f_trace_opcodes = True
        code = frame.f_code
        calls[code] += 1
        # (the outermost handler: a handler another calls, an IPC$ pipe's, counts under it)
        handler = handler_of.get(frame.f_back)
        if handler is None and code.co_name.startswith("h_") and "/smb/commands/" in code.co_filename:
            handler = code.co_name
        handler_of[frame] = handler
        return on_opcode

    def start(*_):
        own.clear()
        calls.clear()
        by_handler.clear()
        counting[0] = True

    def write(*_):
        counting[0] = False
        with open(out, "w") as f:
            f.write(f"{sum(own.values())} {sum(calls.values())} total\n")
            for handler, n in by_handler.most_common():
                f.write(f"{n} handler {handler or '-'}\n")
            for code in sorted(set(own) | set(calls), key=lambda c: -own[c]):
                f.write(f"{own[code]} {calls[code]} {where(code)}\n")

    signal.signal(signal.SIGUSR2, start)
    signal.signal(signal.SIGUSR1, write)
    sys.settrace(on_call)
    threading.settrace(on_call)
    from smbring.cli import main
    sys.argv = ["smbring", *argv]
    return main()


def wait_listening(port: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server stopped (exit {proc.returncode})")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("the server did not listen within 60 s")


def smbclient(port: int, local: str, command: str) -> None:
    subprocess.run(["smbclient", "//127.0.0.1/bench", "-p", str(port), "-U", f"{USER}%{PASSWORD}", "-m", "SMB3",
                    "-c", f"prompt off; lcd {local}; {command}"], check=True, capture_output=True)


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--serve-traced":
        return serve_traced(sys.argv[2], sys.argv[3:])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workload", choices=("create-close", "mget"), default="create-close")
    p.add_argument("--seconds", type=int, default=4, help="smbtorture's time limit (create-close)")
    p.add_argument("--files", type=int, default=200, help="files of 4 KiB copied (mget)")
    p.add_argument("--port", type=int, default=4455)
    p.add_argument("--top", type=int, default=25, help="functions listed, costliest own instructions first")
    args = p.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the server acts as the benchmark's user")
    tool = "smbtorture" if args.workload == "create-close" else "smbclient"
    if shutil.which(tool) is None:
        raise SystemExit(f"{tool} is not installed")
    work = tempfile.mkdtemp(prefix="smbring-count-")
    try:
        # (world-writable: the server writes the counts, and serves the share, as the user)
        share, state, out = (os.path.join(work, d) for d in ("share", "state", "out"))
        for d in (share, out):
            os.mkdir(d)
            os.chmod(d, 0o1777)
        os.makedirs(os.path.join(state, "run"), mode=0o700)
        os.chmod(work, 0o755)
        env = dict(os.environ, SMBRING_PASSDB=os.path.join(state, "passdb"))
        smbring = [sys.executable, "-m", "smbring.cli"]
        subprocess.run(smbring + ["user", "add", USER, "--password-stdin"], input=PASSWORD + "\n", text=True,
                       check=True, env=env, capture_output=True)
        if args.workload == "mget":
            os.mkdir(os.path.join(share, "d"), 0o777)
            for i in range(args.files):
                with open(os.path.join(share, "d", f"f{i}"), "wb") as f:
                    f.write(os.urandom(4096))
            for name in os.listdir(os.path.join(share, "d")):
                os.chmod(os.path.join(share, "d", name), 0o666)
            os.chmod(os.path.join(share, "d"), 0o777)
        counts = os.path.join(out, "counts")
        with open(os.path.join(state, "log"), "w") as log:
            server = subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), "--serve-traced", counts, "serve", share,
                 "--share", "bench", "--listen", f"127.0.0.1:{args.port}", "--passdb", env["SMBRING_PASSDB"],
                 "--log-level", "warning", "--workers", "1",
                 "--control-socket", os.path.join(state, "run", "control")],
                stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            wait_listening(args.port, server)
            if args.workload == "mget":
                for i in (1, 2):
                    local = os.path.join(work, f"copy{i}")
                    os.mkdir(local)
                    if i == 2:
                        server.send_signal(signal.SIGUSR2)
                        time.sleep(0.3)
                    smbclient(args.port, local, "cd d; mget *")
            else:
                for seconds in (1, args.seconds):
                    if seconds == args.seconds:
                        server.send_signal(signal.SIGUSR2)
                        time.sleep(0.3)
                    subprocess.run(["smbtorture", "//127.0.0.1/bench", "-p", str(args.port),
                                    "-U", f"{USER}%{PASSWORD}", "smb2.bench.path-contention-shared",
                                    "--option=torture:nprocs=1", "--option=torture:qdepth=1",
                                    f"--option=torture:timelimit={seconds}", "--option=torture:progress=no"],
                                   check=True, capture_output=True)
            server.send_signal(signal.SIGUSR1)
            deadline = time.monotonic() + 30
            while not os.path.exists(counts) and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(0.5)     # (written whole)
        finally:
            server.terminate()
            server.wait(30)
        with open(counts) as f:
            total_instructions, total_calls, _ = f.readline().split(" ", 2)
            rows = [line.rstrip("\n").split(" ", 2) for line in f]
        handlers = [(int(n), name) for n, kind, name in rows if kind == "handler"]
        rows = [row for row in rows if row[1] != "handler"]
        if args.workload == "mget":
            ops, what = args.files, "file"
        else:
            ops = sum(int(calls) for _, calls, name in rows if name.endswith(" h_close") and "/create.py:" in name)
            what = "CREATE + CLOSE pair"
        if not ops:
            raise SystemExit("no operation was counted")
        print(f"{args.workload}: {ops} operations counted")
        print(f"{int(total_instructions) / ops:10.1f} instructions per {what}")
        print(f"{int(total_calls) / ops:10.1f} calls per {what}")
        print(f"instructions per {what} by the command handler they ran under (-: none, the"
              f" framing, the shell, the event loop):")
        for n, name in handlers:
            print(f"{n / ops:10.1f}  {name}")
        print(f"the {args.top} costliest functions, own instructions and calls per {what}:")
        for own, calls, name in rows[:args.top]:
            print(f"{int(own) / ops:10.1f} {int(calls) / ops:7.2f}  {name}")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
