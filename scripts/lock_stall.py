"""How long one user's byte-range locks hold every other client of the server: the longest an
ECHO of another client (its own process) waits while

1. one client takes `--locks` one-byte locks on one file, 256 a LOCK, asking again a moment
   later where the server refuses one (STATUS_INSUFFICIENT_RESOURCES: the user's credit for
   the kernel's work is spent), and then
2. `--waiting` connections of the same user each send 1,024 blocking LOCKs (one range each)
   that wait behind one lock of the first client, which it then releases at once.

    .venv/bin/python scripts/lock_stall.py                         # 28,672 locks, 4 connections
    .venv/bin/python scripts/lock_stall.py --locks 8192 --waiting 2

With `posix locking` (the default) every lock is a kernel lock too, and Linux walks a file's
whole list of them for each lock change: in the server's event loop for a cheap change, in
its file I/O threads for a costly one (smb.commands.lock's OFF_LOOP_STEPS). Runs this checkout's
`smbring serve` (one worker) on loopback, with smbprotocol clients; a run takes a few
minutes, most of it waiting for the credit. As root or not."""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
import uuid

HERE = pathlib.Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "src"), str(HERE.parent / "tests")]
# (the server too: this checkout's, whichever an installed package names)
os.environ["PYTHONPATH"] = os.pathsep.join([str(HERE.parent / "src")] + os.environ.get("PYTHONPATH", "").split(os.pathsep))

from smbprotocol.connection import Connection  # noqa: E402
from smbprotocol.exceptions import SMBResponseException  # noqa: E402
from smbprotocol.open import (CreateDisposition, CreateOptions, FileAttributes, ImpersonationLevel,  # noqa: E402
                              LockFlags, Open, ShareAccess, SMB2LockElement)
from smbprotocol.session import Session  # noqa: E402
from smbprotocol.tree import TreeConnect  # noqa: E402
from servers import PASSWORD, USER, free_port, spawn, stop  # noqa: E402

EXCLUSIVE_NOW = LockFlags.SMB2_LOCKFLAG_EXCLUSIVE_LOCK | LockFlags.SMB2_LOCKFLAG_FAIL_IMMEDIATELY
STATUS_PENDING, INSUFFICIENT_RESOURCES = 0x103, 0xC000009A
WAITING_PER_CONNECTION = 1024       # `max pending requests`


def element(offset: int, length: int, flags: int) -> SMB2LockElement:
    e = SMB2LockElement()
    e["offset"], e["length"], e["flags"] = offset, length, flags
    return e


class Client:
    def __init__(self, port: int):
        self.conn = Connection(uuid.uuid4(), "127.0.0.1", port, require_signing=True)
        self.conn.connect(timeout=30)
        self.session = Session(self.conn, USER, PASSWORD, require_encryption=False)
        self.session.connect()
        self.tree = TreeConnect(self.session, r"\\127.0.0.1\share")
        self.tree.connect()

    def open(self, name: str) -> Open:
        o = Open(self.tree, name)
        o.create(ImpersonationLevel.Impersonation, 0x0012019F, FileAttributes.FILE_ATTRIBUTE_NORMAL,
                 ShareAccess.FILE_SHARE_READ | ShareAccess.FILE_SHARE_WRITE | ShareAccess.FILE_SHARE_DELETE,
                 CreateDisposition.FILE_OPEN_IF, CreateOptions.FILE_NON_DIRECTORY_FILE)
        return o

    def send_lock(self, o: Open, offset: int):
        """A blocking LOCK of one byte, answered STATUS_PENDING (or raises): its request."""
        message, _ = o.lock([element(offset, 1, LockFlags.SMB2_LOCKFLAG_EXCLUSIVE_LOCK)], send=False)
        request = self.conn.send(message, self.session.session_id, self.tree.tree_connect_id)
        request.response_event.wait(60)
        if request.response["status"].get_value() != STATUS_PENDING:
            self.conn.receive(request)      # (raises its status)
        return request


def until_granted(ask):
    """ask() again, a moment later, while the server refuses it for the user's spent credit."""
    while True:
        try:
            return ask()
        except SMBResponseException as e:
            if e.status != INSUFFICIENT_RESOURCES:
                raise
            time.sleep(0.2)


class Probe:
    """ECHOs of another client, in a process of its own (the clients here hold the GIL)."""

    def __init__(self, port: int):
        self.proc = subprocess.Popen([sys.executable, __file__, "--probe", str(port)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "ready"

    def stop(self) -> tuple[float, int]:
        """The longest ECHO (s), and how many there were."""
        self.proc.stdin.close()
        waits = json.loads(self.proc.stdout.readline())
        self.proc.wait()
        return max(waits), len(waits)


def probe(port: int) -> None:
    conn = Connection(uuid.uuid4(), "127.0.0.1", port, require_signing=True)
    conn.connect(timeout=30)
    session = Session(conn, USER, PASSWORD, require_encryption=False)
    session.connect()
    conn.echo(sid=session.session_id)
    print("ready", flush=True)
    import select
    waits = []
    while not select.select([sys.stdin], [], [], 0.005)[0]:
        start = time.monotonic()
        conn.echo(sid=session.session_id)
        waits.append(time.monotonic() - start)
    print(json.dumps(waits), flush=True)


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--probe":
        probe(int(sys.argv[2]))
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--locks", type=int, default=28672, help="locks on the file (a multiple of 256)")
    p.add_argument("--waiting", type=int, default=4, help="connections of 1,024 blocking LOCKs each")
    args = p.parse_args()
    root = pathlib.Path(tempfile.mkdtemp(prefix="smbring-lockstall-"))
    (root / "share").mkdir()
    port = free_port()
    conf = root / "smb.conf"
    conf.write_text(f"[global]\nlisten = 127.0.0.1:{port}\n[share]\npath = {root / 'share'}\nread only = no\n")
    proc, port, _log = spawn(root, "--config", str(conf), "--workers", "1", port=port)
    try:
        owner = Client(port)
        watch = Probe(port)
        started = time.monotonic()
        opens = [owner.open("f.dat") for _ in range((args.locks + 4095) // 4096)]
        for first in range(0, args.locks, 256):
            o = opens[first // 4096]
            until_granted(lambda: o.lock([element(2 * (first + i), 1, EXCLUSIVE_NOW) for i in range(256)]))
        longest, echoes = watch.stop()
        print(f"{args.locks} locks taken in {time.monotonic() - started:.1f} s; "
              f"another client's longest ECHO meanwhile {longest:.2f} s (of {echoes})", flush=True)

        far = 1 << 40       # beyond the locks above
        holder = owner.open("f.dat")
        until_granted(lambda: holder.lock([element(far, far, EXCLUSIVE_NOW)]))
        waiting = []
        for client in [Client(port) for _ in range(args.waiting)]:
            o = client.open("f.dat")
            for _ in range(WAITING_PER_CONNECTION):
                offset = far + 2 * len(waiting)
                waiting.append((client, until_granted(lambda: client.send_lock(o, offset))))
        time.sleep(5.5)     # (the user's credit full again: 4 s, counted at the sweep, every second)
        watch = Probe(port)
        started = time.monotonic()
        holder.lock([element(far, far, LockFlags.SMB2_LOCKFLAG_UNLOCK)])
        unlocked = time.monotonic() - started
        for client, request in waiting:
            client.conn.receive(request, timeout=600)
        granted = time.monotonic() - started
        longest, echoes = watch.stop()
        print(f"{len(waiting)} blocking LOCKs let go by one unlock (answered in {unlocked:.2f} s), all granted "
              f"in {granted:.1f} s; another client's longest ECHO meanwhile {longest:.2f} s (of {echoes})")
    finally:
        stop(proc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
