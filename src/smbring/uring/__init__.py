"""The io_uring engine: one ring, every op the server needs, and feature probing.

A :class:`Ring` is a thin object over the kernel's submission and completion queues. Each op
method (``ring.read(fd, buf, offset, callback=cb)``, ``ring.send_zc(...)``, ...) pins its
buffers, queues an SQE and returns a :class:`Request`; ``ring.submit()`` hands queued SQEs to
the kernel and ``ring.wait()`` dispatches completions to the callbacks, each called with the
Request (``req.res`` is the result or ``-errno``). Nothing blocks except ``wait``, and ``wait``
never waits longer than its timeout.

Layers above ask :func:`features` what the kernel can do, never which version it is.
For asyncio, see :mod:`smbring.uring.aio`.
"""
from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from functools import lru_cache

from smbring._uring import (  # noqa: F401  (re-exported API)
    ASYNC,
    AT_EMPTY_PATH,
    AT_FDCWD,
    AT_REMOVEDIR,
    AT_SYMLINK_NOFOLLOW,
    DRAIN,
    FIXED_FILE,
    HARDLINK,
    LINK,
    OP_NAMES,
    RESOLVE_BENEATH,
    RESOLVE_CACHED,
    RESOLVE_IN_ROOT,
    RESOLVE_NO_MAGICLINKS,
    RESOLVE_NO_SYMLINKS,
    RESOLVE_NO_XDEV,
    Batch,
    BufRing,
    Request,
    Ring,
    Statx,
    UnsupportedOp,
    UringUnavailable,
    openat2,
    set_thread_credentials,
)
from smbring import _uring

__all__ = [
    "Ring", "Request", "Batch", "BufRing", "Statx", "UringUnavailable", "UnsupportedOp",
    "available", "unavailable_reason", "features", "Features", "openat2", "punts_buffered_io",
    "set_thread_credentials",
    "LINK", "HARDLINK", "DRAIN", "ASYNC", "FIXED_FILE",
    "RESOLVE_BENEATH", "RESOLVE_NO_SYMLINKS", "RESOLVE_NO_MAGICLINKS", "RESOLVE_NO_XDEV",
    "RESOLVE_IN_ROOT", "RESOLVE_CACHED", "AT_FDCWD", "AT_EMPTY_PATH", "AT_REMOVEDIR",
    "AT_SYMLINK_NOFOLLOW",
]

# The setup flags smbring cares about, by name (SQPOLL is listed, never used by default).
SETUP_FLAGS = {
    "SINGLE_ISSUER": _uring.SETUP_SINGLE_ISSUER,
    "DEFER_TASKRUN": _uring.SETUP_SINGLE_ISSUER | _uring.SETUP_DEFER_TASKRUN,
    "COOP_TASKRUN": _uring.SETUP_COOP_TASKRUN,
    "TASKRUN_FLAG": _uring.SETUP_COOP_TASKRUN | _uring.SETUP_TASKRUN_FLAG,
    "SUBMIT_ALL": _uring.SETUP_SUBMIT_ALL,
    "CQSIZE": _uring.SETUP_CQSIZE,
    "SQPOLL": _uring.SETUP_SQPOLL,
}

KERNEL_FEATURES = [
    "SINGLE_MMAP", "NODROP", "SUBMIT_STABLE", "RW_CUR_POS", "CUR_PERSONALITY", "FAST_POLL",
    "POLL_32BITS", "SQPOLL_NONFIXED", "EXT_ARG", "NATIVE_WORKERS", "RSRC_TAGS", "CQE_SKIP",
    "LINKED_FILE", "REG_REG_RING", "RECVSEND_BUNDLE", "MIN_TIMEOUT", "RW_ATTR", "NO_IOWAIT",
]


@dataclass(frozen=True)
class Features:
    """What the running kernel's io_uring offers, found by probing."""

    kernel: str
    available: bool
    reason: str | None = None
    ops: dict[str, bool] = field(default_factory=dict)
    setup_flags: dict[str, bool] = field(default_factory=dict)
    kernel_features: list[str] = field(default_factory=list)
    default_setup_flags: list[str] = field(default_factory=list)

    def supports(self, op: str) -> bool:
        return self.ops.get(op, False)

    def as_dict(self) -> dict:
        return {
            "kernel": self.kernel,
            "available": self.available,
            "reason": self.reason,
            "setup_flags": self.setup_flags,
            "default_setup_flags": self.default_setup_flags,
            "kernel_features": self.kernel_features,
            "ops": self.ops,
        }


def _disabled_sysctl() -> str | None:
    try:
        with open("/proc/sys/kernel/io_uring_disabled") as f:
            return f.read().strip()
    except OSError:
        return None


@lru_cache(maxsize=1)
def unavailable_reason() -> str | None:
    """None if io_uring works here, else why not (ENOSYS, EPERM, the sysctl, ...)."""
    try:
        Ring(entries=2).close()
        return None
    except UringUnavailable as e:
        reason = e.args[1] if len(e.args) > 1 else str(e)
        sysctl = _disabled_sysctl()
        if sysctl and sysctl != "0":
            reason += f"; kernel.io_uring_disabled = {sysctl}"
        return reason


@lru_cache(maxsize=1)
def eventfd_setup_flags() -> int:
    """The setup flags a ring gets by default here, without DEFER_TASKRUN: for a ring that
    an outside event loop drives through its eventfd (uring.aio.AsyncRing), not by waiting in
    io_uring_enter. With DEFER_TASKRUN a request's retries (a send on a full socket, once the
    socket has room) are work that runs only inside io_uring_enter, and the eventfd woke such
    a loop for them late or not at all: an 8 MiB send on loopback TCP took 17-23 ms (0.4
    GB/s) against 3-3.6 GB/s for the same ring with COOP_TASKRUN alone (Linux 6.18).
    UringUnavailable where io_uring cannot be used."""
    with Ring(entries=2) as probe:
        return probe.setup_flags & ~_uring.SETUP_DEFER_TASKRUN


def available() -> bool:
    """True when this process can create io_uring rings."""
    return unavailable_reason() is None


@lru_cache(maxsize=1)
def features() -> Features:
    """Probe the kernel once: ops (IORING_REGISTER_PROBE), setup flags, IORING_FEAT_* bits."""
    import platform     # here only: a client that just writes through the ring does without it
    kernel = platform.release()
    reason = unavailable_reason()
    if reason is not None:
        return Features(kernel=kernel, available=False, reason=reason)
    with Ring(entries=8) as ring:
        ops = {name: ok for name, ok in ring.ops.items()}
        feats = [n for i, n in enumerate(KERNEL_FEATURES) if ring.kernel_features & (1 << i)]
        default = [n for n, bit in SETUP_FLAGS.items()
                   if n in ("SINGLE_ISSUER", "DEFER_TASKRUN", "TASKRUN_FLAG", "COOP_TASKRUN", "SUBMIT_ALL",
                            "CQSIZE")
                   and ring.setup_flags & bit == bit]
    flags = {name: _uring.try_setup(bits) == 0 for name, bits in SETUP_FLAGS.items()}
    return Features(kernel=kernel, available=True, ops=ops, setup_flags=flags,
                    kernel_features=feats, default_setup_flags=default)


def punts_buffered_io(fd: int) -> bool:
    """True when io_uring would hand buffered I/O on this file to kernel worker threads.

    io_uring first tries a buffered read without blocking (IOCB_NOWAIT) and punts to its
    io-wq workers when the file system cannot do that; tmpfs is such a file system, and a
    4 KiB read at queue depth 1 fell from 658k/s (pread) to 24.5k/s through the ring. The
    same capability decides whether preadv2(RWF_NOWAIT) is refused with EOPNOTSUPP, which is
    what this asks. Layers above serve such files with plain syscalls instead.
    """
    try:
        os.preadv(fd, [bytearray(1)], 0, os.RWF_NOWAIT)
    except OSError as e:
        if e.errno == errno.EOPNOTSUPP:
            return True
        if e.errno in (errno.EISDIR, errno.EINVAL, errno.EBADF):
            raise
    return False


def check(res: int, what: str | None = None) -> int:
    """Turn a CQE result into a value or the OSError it stands for."""
    if res < 0:
        raise OSError(-res, os.strerror(-res), what) if what else OSError(-res, os.strerror(-res))
    return res


# Errno values callers commonly test for, re-exported for readability.
ECANCELED = errno.ECANCELED
ETIME = errno.ETIME
