"""``smbring bench identity``: what acting as each user costs a file-system call.

A server running as root acts for each session as that session's Unix account. Two ways
are measured on the calls a share's file system makes (`vfs.posix.PosixVFS`), in the event
loop's thread, on a real file system:

- **thread credentials**: the thread's effective uid, gid and groups switched with the raw
  system calls (``smbring._uring.set_thread_credentials``: setresuid to 0, setgroups,
  setresgid, setresuid; glibc's wrappers would change every thread). Measured three ways:
  switched to the user before the call and back to root after it (``around``); kept between
  calls and switched only when the user differs from the last one (``cached``, the same user
  every call: no switch at all); and cached but with two users alternating (every call
  switches). ``ctypes`` is the same ``around`` switch made through ``ctypes``'s
  ``syscall()`` instead of the engine's helper (x86_64 only).
- **io_uring personalities**: each user's credentials registered once with the ring
  (``IORING_REGISTER_PERSONALITY``) and named in every SQE (``ring.personality``), the call
  submitted and waited for synchronously (the core's file-system calls are synchronous). Only
  the ops the ring has can go this way.

The calls: ``stat`` (openat2 O_PATH beneath the root, fstat, close: what ``PosixVFS.stat``
does), ``open`` (openat2 O_RDONLY beneath the root, close) and ``mkdir`` (mkdirat then
unlinkat AT_REMOVEDIR: a name created and removed). Figures are nanoseconds per call, the
median of ``--repeat`` rounds, the ways alternating inside each round.
"""
from __future__ import annotations

import ctypes
import json
import os
import platform
import statistics
import tempfile
import time

from smbring import _uring
from smbring.uring import AT_EMPTY_PATH, AT_REMOVEDIR, RESOLVE_BENEATH, RESOLVE_NO_MAGICLINKS, Ring, openat2

BENEATH = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS
USERS = ((61001, 61001, (61001, 61100)), (61002, 61002, (61002, 61100)))   # ids only: no accounts
ROOT = (0, 0, ())
# x86_64 system call numbers, for the ctypes variant only
SYS_X86_64 = {"setresuid": 117, "setresgid": 119, "setgroups": 116}


def add_arguments(p) -> None:
    p.add_argument("--dir", default=os.environ.get("SMBRING_BENCH_DIR", "/var/tmp"),
                   help="where the test tree is made (a real file system)")
    p.add_argument("--repeat", type=int, default=5, help="rounds; figures are medians")
    p.add_argument("--calls", type=int, default=20000, help="calls per figure per round")


class Tree:
    """A share-like directory: root (fd), a subdirectory and a file readable by everyone."""

    def __init__(self, parent: str):
        self.path = tempfile.mkdtemp(prefix="smbring-identity-", dir=parent)
        os.chmod(self.path, 0o777)
        os.mkdir(os.path.join(self.path, "dir"), 0o777)
        os.chmod(os.path.join(self.path, "dir"), 0o777)
        with open(os.path.join(self.path, "dir", "file"), "w") as f:
            f.write("x")
        os.chmod(os.path.join(self.path, "dir", "file"), 0o644)
        self.fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)

    def close(self) -> None:
        os.close(self.fd)
        for name in ("dir/file", "dir"):
            p = os.path.join(self.path, name)
            (os.rmdir if name == "dir" else os.unlink)(p)
        os.rmdir(self.path)


# -- the calls, made directly (as the thread is) ------------------------------------------------
def call_stat(t: Tree) -> None:
    fd = openat2(t.fd, "dir/file", os.O_PATH, 0, BENEATH)
    os.fstat(fd)
    os.close(fd)


def call_open(t: Tree) -> None:
    os.close(openat2(t.fd, "dir/file", os.O_RDONLY, 0, BENEATH))


def call_mkdir(t: Tree) -> None:
    os.mkdir("dir/new", 0o755, dir_fd=t.fd)
    os.rmdir("dir/new", dir_fd=t.fd)


DIRECT = {"stat": call_stat, "open": call_open, "mkdir": call_mkdir}


# -- the same calls through a ring, synchronously -------------------------------------------------
def _done(ring: Ring, req) -> int:
    ring.wait(1)
    if req.res < 0:
        raise OSError(-req.res, os.strerror(-req.res))
    return req.res


def ring_calls(ring: Ring) -> dict:
    def stat(t: Tree) -> None:
        fd = _done(ring, ring.openat2(t.fd, "dir/file", os.O_PATH, 0, BENEATH))
        _done(ring, ring.statx(fd, "", AT_EMPTY_PATH))
        os.close(fd)

    def open_(t: Tree) -> None:
        os.close(_done(ring, ring.openat2(t.fd, "dir/file", os.O_RDONLY, 0, BENEATH)))

    def mkdir(t: Tree) -> None:
        _done(ring, ring.mkdirat(t.fd, "dir/new", 0o755))
        _done(ring, ring.unlinkat(t.fd, "dir/new", AT_REMOVEDIR))

    return {"stat": stat, "open": open_, "mkdir": mkdir}


# -- the ways -------------------------------------------------------------------------------------
def become(who) -> None:
    _uring.set_thread_credentials(*who)


def way_root(call):
    return lambda t, i: call(t)


def way_around(call):
    def run(t, i):
        become(USERS[0])
        try:
            call(t)
        finally:
            become(ROOT)
    return run


class Cached:
    """Switches only when the identity differs from the thread's current one."""

    def __init__(self):
        self.current = ROOT

    def become(self, who) -> None:
        if who is not self.current:
            become(who)
            self.current = who


def way_cached(call, alternate: bool):
    cache = Cached()

    def run(t, i):
        cache.become(USERS[i & 1] if alternate else USERS[0])
        call(t)
    run.cache = cache
    return run


def ctypes_switch():
    """The `around` switch through ctypes (three or four ctypes calls a switch)."""
    if platform.machine() != "x86_64":
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    sysc = libc.syscall

    def switch(uid, gid, groups):
        arr = (ctypes.c_uint * max(len(groups), 1))(*groups)
        if sysc(SYS_X86_64["setresuid"], -1, 0, -1) or \
                sysc(SYS_X86_64["setgroups"], len(groups), arr) or \
                sysc(SYS_X86_64["setresgid"], -1, gid, -1) or \
                (uid and sysc(SYS_X86_64["setresuid"], -1, uid, -1)):
            raise OSError(ctypes.get_errno(), "credential switch failed")
    return switch


def way_ctypes(call, switch):
    def run(t, i):
        switch(*USERS[0])
        try:
            call(t)
        finally:
            switch(*ROOT)
    return run


def way_personality(call, ring: Ring, pid: int):
    def run(t, i):
        ring.personality = pid
        try:
            call(t)
        finally:
            ring.personality = 0
    return run


def timed(run, t: Tree, calls: int) -> float:
    """Nanoseconds per call."""
    start = time.perf_counter_ns()
    for i in range(calls):
        run(t, i)
    return (time.perf_counter_ns() - start) / calls


def measure(parent: str, repeat: int, calls: int) -> dict:
    t = Tree(parent)
    ring = Ring(64)
    try:
        become(USERS[0])
        try:
            pid = ring.register_personality()
        finally:
            become(ROOT)
        switch = ctypes_switch()
        on_ring = ring_calls(ring)
        ways = {}
        for name, call in DIRECT.items():
            ways[f"{name} root"] = way_root(call)
            ways[f"{name} around"] = way_around(call)
            ways[f"{name} cached"] = way_cached(call, alternate=False)
            ways[f"{name} alternating"] = way_cached(call, alternate=True)
            if switch is not None:
                ways[f"{name} ctypes"] = way_ctypes(call, switch)
            ways[f"{name} ring root"] = way_root(on_ring[name])
            ways[f"{name} personality"] = way_personality(on_ring[name], ring, pid)
        rounds: dict[str, list[float]] = {k: [] for k in ways}
        for _ in range(repeat):
            for key, run in ways.items():
                rounds[key].append(timed(run, t, calls))
                cache = getattr(run, "cache", None)
                if cache is not None:
                    cache.become(ROOT)
        ring.unregister_personality(pid)
        # a switch alone: root -> user -> root
        switch_ns = []
        for _ in range(repeat):
            start = time.perf_counter_ns()
            for _ in range(calls):
                become(USERS[0])
                become(ROOT)
            switch_ns.append((time.perf_counter_ns() - start) / calls / 2)
        result = {k: round(statistics.median(v)) for k, v in rounds.items()}
        result["one switch"] = round(statistics.median(switch_ns))
        return result
    finally:
        become(ROOT)
        ring.close()
        t.close()


def run(args) -> int:
    if os.geteuid() != 0:
        print("smbring bench identity needs root (it switches to other users' ids)")
        return 2
    result = measure(args.dir, args.repeat, args.calls)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"smbring bench identity  (ns per call, medians of {args.repeat} rounds of {args.calls})")
    for key, value in result.items():
        base = result.get(key.split()[0] + " root")
        extra = f"   +{value - base:,} ns" if base and key.endswith(("around", "cached", "alternating", "ctypes")) else ""
        if key.endswith("personality"):
            extra = f"   +{value - result[key.split()[0] + ' ring root']:,} ns over the ring as root"
        print(f"  {key:<24}{value:>10,}{extra}")
    return 0
