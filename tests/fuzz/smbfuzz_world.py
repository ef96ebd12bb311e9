"""Where a fuzz input runs: shares with a few files, one fresh connection, and the checks.

`World` owns a directory with a read-only share, a writable share (copied afresh from a
template for every input), and files outside both that no response may ever show. `run_input`
runs one input on a fresh `Client` (smbfuzz_client, which checks every answer), then checks
what the input left:

- the core logged no error (its catch-all answers STATUS_INTERNAL_ERROR and logs the bug);
- nothing outside the writable share changed (the read-only share, the canary, the template);
- the closed connection left no file descriptor open;
- the input did not grow the process's peak memory by more than MAX_GROWTH.
"""
from __future__ import annotations

import logging
import os
import resource
import shutil
import signal
import sys
import tempfile
from contextlib import contextmanager

from smbring.smb import acl, wire
from smbring.smb.state import Share
from smbring.vfs.posix import PosixVFS
from smbring.vfs.shadow_copy import ShadowCopyOptions

import smbfuzz_input as fi
from smbfuzz_client import Client

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from appledouble import macos_appledouble  # noqa: E402  (tests/appledouble.py)

MAX_GROWTH = 64 << 20          # bytes of peak RSS one input may add
MAX_FILE = 64 << 20            # RLIMIT_FSIZE while fuzzing: a client may not fill the disk here


def scratch_dir() -> str:
    """tmpfs when it keeps user xattrs (fast, and it honours RLIMIT_FSIZE for fallocate with
    KEEP_SIZE, which ext4 does not), else the usual temporary directory."""
    shm = "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK):
        probe = tempfile.NamedTemporaryFile(dir=shm)
        try:
            os.setxattr(probe.fileno(), "user.smbring-probe", b"1")
            return shm
        except OSError:
            pass
        finally:
            probe.close()
    return tempfile.gettempdir()


@contextmanager
def bounded_files(limit: int = MAX_FILE):
    """Files may not grow past `limit` (EFBIG, answered as an NTSTATUS, instead of a full disk)."""
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, old_limit[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)


class ErrorLog(logging.Handler):
    """Collects what smbring logs at ERROR or above: the core's catch-all logs a bug there."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record):
        self.records.append(self.format(record))

    @contextmanager
    def attached(self):
        logger = logging.getLogger("smbring")
        old_level, old_propagate = logger.level, logger.propagate
        logger.addHandler(self)
        logger.setLevel(logging.WARNING)    # no formatting of debug lines per request
        logger.propagate = False            # keep the fuzzer's output readable
        try:
            yield self
        finally:
            logger.removeHandler(self)
            logger.setLevel(old_level)
            logger.propagate = old_propagate


class World:
    """The shares and the files outside them."""

    def __init__(self, parent: str | None = None):
        self.root = os.path.realpath(tempfile.mkdtemp(prefix="smbring-fuzz-", dir=parent or scratch_dir()))
        secret = os.urandom(8).hex()
        self.canary = f"CANARY-{secret}".encode()
        self.secret_name = wire.utf16(f"secret-{secret}.txt")
        self.rw = os.path.join(self.root, "rw")
        self.ro = os.path.join(self.root, "ro")
        self.template = os.path.join(self.root, "rw-template")
        outside = os.path.join(self.root, "outside")
        os.mkdir(outside)
        write(os.path.join(self.root, "canary.txt"), self.canary)
        write(os.path.join(outside, f"secret-{secret}.txt"), self.canary)
        populate(self.template, outside, writable=True)
        populate(self.ro, outside, writable=False)
        # the writable share's one previous version (shadow_copy2): its files writable by their
        # modes, outside the share, so that a write that gets through is a change outside
        self.snapshots = os.path.join(self.root, "snapshots")
        populate(os.path.join(self.snapshots, fi.SNAPSHOT), outside, writable=True)
        self.outside = self.snapshot()

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def reset(self) -> None:
        """The writable share as the template has it."""
        if os.path.lexists(self.rw):
            shutil.rmtree(self.rw)
        shutil.copytree(self.template, self.rw, symlinks=True)

    def shares(self, strict_allocate: bool = False) -> dict[str, Share]:
        """The writable share (with a previous version: shadow_copy2), the read-only one, one
        inside the writable share that is reached encrypted only (`smb encrypt = required`)
        and by the user "fuzz" only, and the writable share again as macOS finds it on a Time
        Machine share (`vfs objects = fruit`)."""
        return {"rw": Share("rw", self.rw, strict_allocate=strict_allocate,
                            shadow_copy=ShadowCopyOptions(snapdir=self.snapshots, mountpoint=self.rw)),
                "ro": Share("ro", self.ro, read_only=True, guest_ok=True),
                "enc": Share("enc", os.path.join(self.rw, "dir"), encrypt=True, valid_users=["fuzz"]),
                "mac": Share("mac", self.rw, fruit=True, time_machine=True, time_machine_max_size=1 << 30)}

    def snapshot(self) -> dict:
        """Everything outside the writable share: names, sizes, times, xattrs, link targets."""
        state = {}
        for top, dirs, files in os.walk(self.root):
            if top == self.root:
                dirs.remove("rw") if "rw" in dirs else None
                state["."] = sorted(set(os.listdir(top)) - {"rw"})
                continue
            for name in dirs + files:
                path = os.path.join(top, name)
                st = os.lstat(path)
                xattrs = {} if os.path.islink(path) else \
                    {x: os.getxattr(path, x) for x in os.listxattr(path)}
                link = os.readlink(path) if os.path.islink(path) else None
                state[os.path.relpath(path, self.root)] = (st.st_mode, st.st_size, st.st_mtime_ns,
                                                          st.st_ctime_ns, xattrs, link)
        return state

    def changed_outside(self) -> list[str]:
        """What changed outside the writable share (and, if anything did, a fresh read-only
        share so that the next input starts from the same state)."""
        now = self.snapshot()
        if now == self.outside:
            return []
        changed = sorted(k for k in set(now) | set(self.outside) if now.get(k) != self.outside.get(k))
        shutil.rmtree(self.ro)
        populate(self.ro, os.path.join(self.root, "outside"), writable=False)
        self.outside = self.snapshot()
        return changed


def write(path: str, data: bytes, mode: int = 0o644) -> None:
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)


def populate(share: str, outside: str, writable: bool) -> None:
    """A file, a directory with entries, a file with a stream, one with an EA, one with a
    stored security descriptor, a read-only file, links that lead out of the share, and (the
    writable share) an AppleDouble file macOS wrote beside f.txt."""
    os.makedirs(os.path.join(share, "dir", "sub"))
    os.mkdir(os.path.join(share, "empty"))
    write(os.path.join(share, "f.txt"), b"hello world\n" * 64)
    for name in ("a", "b", "sub/c"):
        write(os.path.join(share, "dir", name), name.encode() * 10)
    write(os.path.join(share, "s.txt"), b"base data")
    write(os.path.join(share, "ea.txt"), b"ea")
    write(os.path.join(share, "deny.txt"), b"denied")
    write(os.path.join(share, "ro.txt"), b"read only", 0o444)
    os.symlink(outside, os.path.join(share, "link"))
    os.symlink("..", os.path.join(share, "uplink"))
    vfs = PosixVFS(share)
    try:
        sid = vfs.stream_id(["s.txt"], create=True)
        vfs.make_stream_dir(sid)
        fd = vfs.open(vfs.stream_parts(sid, "alt"), os.O_CREAT | os.O_RDWR)
        os.write(fd, b"stream data")
        os.close(fd)
        fd = vfs.open(["ea.txt"], os.O_RDWR)
        vfs.set_ea(fd, "a", b"value")
        os.close(fd)
        fd = vfs.open(["deny.txt"], os.O_RDWR)
        deny_writes = acl.Descriptor(
            control=acl.SE_SELF_RELATIVE | acl.SE_DACL_PRESENT, owner=acl.OWNER_SID, group=acl.GROUP_SID,
            dacl=[acl.Ace(acl.DENIED, 0, wire.FILE_WRITE_DATA | wire.FILE_APPEND_DATA | wire.DELETE, acl.EVERYONE),
                  acl.Ace(acl.ALLOWED, 0, wire.FILE_ALL_ACCESS, acl.EVERYONE)])
        vfs.set_sd(fd, deny_writes.pack())
        os.close(fd)
    finally:
        vfs.close()
    if not writable:
        write(os.path.join(share, "ro-only.txt"), b"only in the read-only share")
    else:       # what macOS left beside f.txt on a disk without streams (the fruit share takes it in)
        write(os.path.join(share, "._f.txt"), macos_appledouble(
            b"TEXTttxt", [(b"com.apple.metadata:_kMDItemUserTags", b"bplist00")], b"fork" * 64))


def open_fds() -> dict[str, str]:
    """The process's descriptors and what they refer to."""
    fds = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            pass            # the descriptor listdir itself used
    return fds


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024



def run_input(world: World, data: bytes, fdp_class, tolerate: frozenset = frozenset(),
              seen: list | None = None) -> Client:
    """One input, start to finish, with every check; raises Finding (or the core's own
    exception) when one fails, but for the known findings named in `tolerate`. `seen`, if
    given, collects the (command, status) of every answer, even when a check fails."""
    world.reset()
    fds_before = open_fds()
    rss_before = peak_rss()
    errors = ErrorLog()
    with errors.attached():
        mode, script = fi.decode(fdp_class(data))
        client = Client(world, mode, tolerate)
        if seen is not None:
            client.statuses = seen
        try:
            if mode.raw:
                client.send_frame(fi.Frame(raw=script))
            else:
                for frame in script:
                    client.send_frame(frame)
            if client.alive:
                client.shell.run(client.conn.outbox_drain())
        finally:
            client.disconnect()
        if errors.records:
            client.found("the core logged an error:\n" + "\n".join(errors.records), "core-error")
    client.check_left_nothing()
    leaked = {fd: target for fd, target in open_fds().items() if fds_before.get(fd) != target}
    for fd in leaked:               # nobody owns them: the next inputs start clean
        os.close(int(fd))
    if leaked:
        client.found(f"file descriptors left open by the connection: {sorted(leaked.values())}", "fd-leak")
    changed = world.changed_outside()
    if changed:
        client.found(f"outside the writable share, changed: {changed}", "outside-changed")
    growth = peak_rss() - rss_before
    if growth > MAX_GROWTH:
        client.found(f"one input grew the peak RSS by {growth >> 20} MiB", "memory-growth")
    return client

