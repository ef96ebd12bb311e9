"""Data paths: how a payload travels between a file and a socket, on the engine.

A response is a *send descriptor*: header bytes plus a payload that is either a buffer or a
:class:`FileRange`. The protocol layer builds descriptors without doing I/O; this module carries
them out, choosing per response how a file range reaches the socket:

``copy``
    read the range into a page-aligned buffer, then one ``sendmsg`` of header + payload.
``mmap``
    one ``sendmsg`` of header + payload straight from a read-only shared map of the file
    (:class:`FileMaps`): one copy, page cache -> socket, instead of copy's two. The copy is
    made while the send runs, so a later write cannot change what was sent: safe while the
    file is written, like copy. A file that shrinks under its map makes the kernel's copy fail
    (EFAULT, never SIGBUS: only the kernel touches the map); what is missing goes as zeros.
``splice``
    send the header with ``MSG_MORE``, then move the payload file -> pipe -> socket with
    ``splice(2)``, never through user space. Splice shares page-cache pages with **no
    copy-on-write**: a write to the file while the pages sit in the pipe or socket changes what
    the client receives. So the caller may choose it only when nothing can write to the file
    meanwhile (see :func:`choose_path`), and never for signed or encrypted payloads.
``zc``
    read into a registered buffer with the header placed just before the payload, then
    ``SEND_ZC``; the buffer is reused only after the kernel's notification that it let go.
    How often the kernel copied after all is counted (always, on loopback).

Frames arrive through :class:`Receiver`, straight into the buffer the server gives (a WRITE's
payload lands page-aligned there and goes to the file through the share's VFS modules).

The splice itself runs inline with non-blocking ``splice(2)`` and waits for socket space on the
ring: the ring's SPLICE op always goes to a kernel worker thread, which measured 4x slower.
Inline, reading the file must not wait for a disk: only ranges all in the page cache
(``cachestat(2)``) are spliced or sent from a map, the rest is copied through the ring's read.
Only one send (or one chain) is in flight per connection, so frames never interleave; callers
serialise through :class:`Sender`. Sends and receives pass ``MSG_WAITALL``: io_uring then
finishes the whole buffer in the kernel instead of completing every partial transfer (one
completion instead of ~24 for 64 MiB on loopback, 2.4x the throughput).
"""
from __future__ import annotations

import asyncio
import ctypes
import errno
import fcntl
import mmap
import os
import select
import socket
import time
from dataclasses import dataclass, field
from typing import NamedTuple, Union

from smbring._wire import ReceiveBuffer
from smbring.cheaper import CheaperOf

PATHS = ("copy", "mmap", "splice", "zc")
F_SETPIPE_SZ = 1031
PIPE_SIZE = 1 << 20
PUNT_MIN = 1 << 20            # copies this large may go to io-wq workers while others wait
DIRECT_SEND_MAX = 1 << 16     # responses up to this size are sent directly, not through the ring
DIRECT_SEND_FLAGS = int(socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
IOSQE_ASYNC = 0x10            # (the SQE flag; kept here so this module needs no ring to import)
AUTO_LARGE = 256 << 10        # read path auto: payloads this large are mapped or spliced
# read path auto, on connections that do not pace, where splice is safe: which of mmap and
# splice costs this process less CPU per byte, measured as responses are sent (see
# choose_path); the other way is tried 4 sends in a row every 128, the first of them not
# counted (it pays for the way before), and as a send's cost varies by a third around its
# mean here, only a 20% difference changes the way
MAP_WINDOW = 256 << 20        # FileMaps: where a file's maps start (multiples of this) ...
MAX_SPAN = 8 << 20            # ... and how far past the next start each reaches (the largest READ)
MAPS_LIMIT = 4 << 30          # FileMaps: bytes mapped at most (page tables: 8 MiB when all used)
MAPS_KEPT = 64                # FileMaps: maps at most (each holds a file descriptor)
MAP_IDLE = 60.0               # FileMaps: seconds a map is kept unused
COLD_UNMEASURED = 512         # read path auto: cold mmap sends not measured while none was warm
YOUNG_SENDS = 16              # read path auto: a connection's first file sends are not measured


class FileRange(NamedTuple):
    """`length` bytes of the open file `fd` from `offset`; `io` is the VFS module stack that
    reads them when they must be read into memory (see smbring.vfs.modules)."""

    fd: int
    offset: int
    length: int
    io: object


Payload = Union[bytes, bytearray, memoryview, FileRange, None]


@dataclass
class SendDescriptor:
    """One response: `header` (an SMB2 header and body, or a transform header) and a payload."""

    header: bytes | bytearray | memoryview
    payload: Payload = None
    # a FileRange payload is never signed or encrypted (those are built in memory); the layer
    # above says whether any open of the file may write to it meanwhile (splice has no
    # copy-on-write), and which read path the share asks for (None: the Sender's default)
    splice_safe: bool = False
    read_path: str | None = None


def splice_pipe() -> tuple[int, int]:
    """A pipe for splicing, enlarged to PIPE_SIZE where the system allows."""
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        fcntl.fcntl(w, F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:
        pass  # the default 64 KiB pipe still works, in smaller steps
    return r, w


def read_costs() -> CheaperOf:
    """What read path auto measures (one per server: every connection's sends count)."""
    return CheaperOf("mmap", "splice", explore=128, run=4, settle=1, margin=0.2)


def choose_path(configured: str, desc: SendDescriptor, supports_zc: bool,
                costs: CheaperOf | None = None, measuring: bool = True, paced: bool = False) -> str:
    """The path for one response. `configured` is the share's ``read path`` (auto, copy,
    mmap, splice, zc): ``splice`` is the share opting in (splice even while the file may be
    written); ``auto`` sends large payloads from a map of the file, or, on a connection that
    is not `paced` and for files nobody may write meanwhile, by whichever of mmap and splice
    `costs` has measured cheaper (trying the other now and then only while `measuring`);
    small ones are copied. zc needs the kernel op. (mmap and splice fall back to copy at send
    time for ranges not in the page cache.)"""
    if not isinstance(desc.payload, FileRange):
        return "copy"
    configured = desc.read_path or configured
    if configured in ("copy", "mmap", "splice"):
        return configured
    if configured == "zc":
        return "zc" if supports_zc else "copy"
    # auto. Which is cheaper depends on the transport and the machine (docs/BENCHMARKS.md).
    # Splice moves no bytes, but it hands the socket a MiB in microseconds: on a connection
    # that paces (BBR) most segments then leave from pacing timers, and the smooth traffic
    # keeps the pacing rate at the delivery rate. A send from a map copies as it goes and
    # comes in bursts (BBR measures a higher rate). On the EPYC VM of 2026-11-30, paced: mmap
    # 0.24-0.28 CPU-s/GiB, splice 0.34-0.39; unpaced (CUBIC): splice 0.07, mmap 0.17. Paced,
    # the costs cannot be told apart by trying the other way now and then: each way shapes
    # the pacing the connection settles into and the other, tried for a while, inherits it
    # (tries of 4 sends made splice look cheaper, tries of 32 made mmap look dearer, both
    # wrongly). So paced connections take mmap; unpaced ones measure both as they are used.
    # SEND_ZC is copied on loopback anyway and stays opt-in.
    if auto_measured(configured, desc, paced) and costs is not None:   # (none: nothing measured)
        return costs.pick(explore=measuring)
    return "mmap" if desc.payload.length >= AUTO_LARGE else "copy"


def auto_measured(configured: str, desc: SendDescriptor, paced: bool = False) -> bool:
    """Whether auto chooses this response's path by measurement (mmap or splice)."""
    return ((desc.read_path or configured) == "auto" and desc.splice_safe and not paced
            and isinstance(desc.payload, FileRange) and desc.payload.length >= AUTO_LARGE)


def paces(sock: socket.socket) -> bool:
    """Whether the connection's congestion control paces every send (BBR: from a timer, when
    no fq qdisc does it), which is what makes splice dear (see choose_path)."""
    try:
        name = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16)
    except OSError:
        return False
    return name.split(b"\0", 1)[0].startswith(b"bbr")


_CACHESTAT = 451          # cachestat(2), Linux 6.5: the same number on x86-64 and arm64
_PAGE = mmap.PAGESIZE
_LIBC = ctypes.CDLL(None, use_errno=True)


def in_page_cache(fd: int, offset: int, length: int) -> bool | None:
    """Whether every page of the range is in the page cache (cachestat(2)); None where the
    kernel cannot say (before 6.5: one failed system call each time). Splice reads the file in
    the calling thread and would stall the whole event loop on a disk read; the ring's read
    does not (io_uring finishes it on a worker). A kernel that has cachestat but refuses it
    for this file (EPERM: a server not run as root, reading a file it neither owns nor may
    write) answers False: not known to be cached, so read on the ring."""
    rng = (ctypes.c_uint64 * 2)(offset, length)
    stat = (ctypes.c_uint64 * 5)()
    if _LIBC.syscall(_CACHESTAT, fd, ctypes.byref(rng), ctypes.byref(stat), 0) != 0:
        return None if ctypes.get_errno() == errno.ENOSYS else False
    pages = (offset + length - 1) // _PAGE - offset // _PAGE + 1
    return stat[0] >= pages


class FileMaps:
    """Read-only shared maps of files, for the mmap read path, kept between READs and opens.

    Mapping costs more than it seems: every page of a new map is entered into the page table
    at its first use, and unmapping removes them again; for a 2 GiB file that was a fifth of
    the server's CPU per get (0.30 against 0.24 CPU-s/GiB with maps kept). So maps are kept
    per file (device and inode, not fd: the next open of a hot file finds its pages mapped)
    in windows of MAP_WINDOW bytes (each reaching MAX_SPAN further, so a READ that starts in a
    window ends in it), at most MAPS_LIMIT bytes and MAPS_KEPT maps in all (Python's mmap
    holds a duplicate of the file descriptor) and the least recently used go first.

    A range is *warm* when it was sent from its map before (its pages are in the page table):
    the steady cost of this path, which is what read path auto compares (see Sender.send).

    Every use checks with fstat which file the fd names and that the range lies within it.
    A map keeps its file's blocks allocated after a delete, so maps unused for MAP_IDLE
    seconds are dropped (a sweep on the running event loop), and `forget_file` drops a file's
    maps at once when the server deletes it. A map dropped while a send still uses it lives
    until that send ends: the send holds a view of it."""

    class _Map:
        __slots__ = ("map", "used", "touched")

        def __init__(self, m: mmap.mmap):
            self.map, self.used, self.touched = m, 0.0, set()   # touched: MAX_SPAN chunks sent

    def __init__(self, window: int = MAP_WINDOW, limit: int = MAPS_LIMIT, keep: int = MAPS_KEPT,
                 idle: float = MAP_IDLE):
        self.window, self.limit, self.keep, self.idle = window, limit, keep, idle
        # (dev, ino, window start): map; insertion order is the LRU order
        self._maps: dict[tuple[int, int, int], FileMaps._Map] = {}
        self.mapped = 0
        self.sends = {False: 0, True: 0}        # ranges handed out cold and warm
        self._sweep = self._sweep_loop = None

    def view(self, fd: int, offset: int, length: int) -> tuple[memoryview, bool] | None:
        """The range as a view of a map, and whether it is warm; None where it cannot be
        mapped (not all of it in the file, a file that cannot be mapped): the caller reads
        it instead."""
        try:
            st = os.fstat(fd)
        except OSError:
            return None
        if length <= 0 or offset < 0 or offset + length > st.st_size:
            return None
        base = offset - offset % self.window
        key = (st.st_dev, st.st_ino, base)
        entry = self._maps.pop(key, None)       # popped and put back: most recently used
        if entry is not None and offset + length > base + len(entry.map):
            self.mapped -= len(entry.map)       # the file grew past the map: map it anew
            entry = None
        if entry is None:
            size = min(st.st_size, max(base + self.window + MAX_SPAN, offset + length)) - base
            try:
                entry = self._Map(mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ, offset=base))
            except (OSError, ValueError):
                return None
            self.mapped += size
        entry.used = time.monotonic()
        self._maps[key] = entry
        while (self.mapped > self.limit or len(self._maps) > self.keep) and len(self._maps) > 1:
            self._drop(next(iter(self._maps)))
        self._sweep_later()
        start = offset - base
        chunks = set(range(start // MAX_SPAN, (start + length - 1) // MAX_SPAN + 1))
        warm = chunks <= entry.touched
        entry.touched |= chunks
        self.sends[warm] += 1
        return memoryview(entry.map)[start:start + length], warm

    def forget_file(self, dev: int, ino: int) -> None:
        """The file is gone (deleted): free its blocks now rather than after MAP_IDLE."""
        for key in [k for k in self._maps if k[:2] == (dev, ino)]:
            self._drop(key)

    def _drop(self, key) -> None:
        self.mapped -= len(self._maps.pop(key).map)

    def _sweep_later(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return      # no event loop: maps go by the limits only
        if self._sweep is None or self._sweep_loop is not loop:   # (a loop that ended: anew)
            self._sweep, self._sweep_loop = loop.call_later(self.idle, self._expire), loop

    def _expire(self) -> None:
        self._sweep = None
        stale = time.monotonic() - self.idle
        for key in [k for k, m in self._maps.items() if m.used <= stale]:
            self._drop(key)
        if self._maps:
            self._sweep_later()

    def __len__(self) -> int:
        return len(self._maps)

    def cold_is_a_bound(self) -> bool:
        """Whether a send from a cold map may only lower read path auto's mmap estimate.
        auto compares steady costs; a cold range pays once more, for entering its pages into
        the page table, and counting that would keep mmap from ever being chosen where files
        are read again and again (each try of it, made while splice serves, finds cold
        ranges). Only where nothing is read twice (no warm range after COLD_UNMEASURED) is
        the cold cost the cost."""
        return self.sends[True] > 0 or self.sends[False] < COLD_UNMEASURED


class BufferPool:
    """Page-aligned buffers of one size, reused. Page alignment is not cosmetic: a kernel copy
    into a destination 16 bytes off alignment (where bytearray data sits) ran 6x slower here."""

    def __init__(self, size: int, keep: int = 8):
        self.size = size
        self.keep = keep        # buffers kept for reuse at most (made when first needed)
        self._free: list[mmap.mmap] = []

    def get(self) -> mmap.mmap:
        return self._free.pop() if self._free else mmap.mmap(-1, self.size)

    def put(self, buf: mmap.mmap) -> None:
        if len(self._free) < self.keep:
            self._free.append(buf)
        else:
            buf.close()


@dataclass
class Stats:
    by_path: dict = field(default_factory=lambda: {p: 0 for p in PATHS})
    bytes_by_path: dict = field(default_factory=lambda: {p: 0 for p in PATHS})
    zc_sends: int = 0
    zc_copied: int = 0


class Sender:
    """Sends descriptors on one connected socket, one at a time, in order."""

    def __init__(self, aring, sock: socket.socket, *, read_path: str = "auto",
                 max_payload: int = 8 << 20, crowded=None, maps: FileMaps | None = None,
                 costs: CheaperOf | None = None):
        """`maps` and `costs` are the server's (one each for all its connections: the maps of
        a file serve every client, and auto learns from every send)."""
        if read_path not in ("auto",) + PATHS:
            raise ValueError(f"read path must be auto, copy, mmap, splice or zc, not {read_path!r}")
        self.aring = aring
        self.sock = sock
        self.fd = sock.fileno()
        self.read_path = read_path
        self.stats = Stats()
        self._lock = asyncio.Lock()
        self._pool = BufferPool(max_payload + 4096, keep=2)
        self._pipe: tuple[int, int] | None = None
        self.maps = maps if maps is not None else FileMaps()
        self.costs = costs if costs is not None else read_costs()
        self._zc_ok = aring.ring.supports("send_zc")
        # like the io_uring VFS module's large reads: while other connections wait, a large
        # send's copy into the socket runs on an io-wq worker instead of the loop's thread
        self.crowded = crowded or (lambda: False)
        # the send being measured: (path, CPU time at its start, bytes, counts only if lower)
        self._measuring: tuple[str, float, int, bool] | None = None
        self._file_sends = 0
        self.paced = paces(sock)
        # small responses held back while the client's next request has already arrived
        # (see `send`): they leave together, with the response that finds none waiting
        self.more_requests = lambda: False
        self._held: list = []
        self._held_bytes = 0
        self._users = 0     # sends and flushes in progress or waiting for the lock

    def send_small(self, parts: list, size: int) -> bool | None:
        """A small response sent (or held back, as `send` would) at once, without a coroutine
        or a future: the way of most responses. `parts` are its buffers, `size` their bytes.
        True: done. None: nothing done, it goes the awaited way (`send`): another send or
        flush is on its way, or it is too large to go directly. False: the socket did not take
        all of it; the rest (a copy) is held back and goes before anything else, and the
        caller awaits `flush` before going on (the client is slow to read: nothing more is
        piled up for it meanwhile)."""
        if self._users or size > DIRECT_SEND_MAX:
            return None
        held = self._held
        if held:
            size += self._held_bytes
            if size > DIRECT_SEND_MAX:
                return None
            if self.more_requests():
                held.append(b"".join(parts))    # a copy: see send
                self._held_bytes = size
                return True
            parts = held + parts
            self._held, self._held_bytes = [], 0
        elif self.more_requests():
            self._held.append(b"".join(parts))
            self._held_bytes = size
            return True
        try:
            sent = self.sock.sendmsg(parts, (), DIRECT_SEND_FLAGS)
        except (BlockingIOError, InterruptedError):
            sent = 0
        if sent == size:
            return True
        rest = b"".join(parts)[sent:]       # (its buffers may be reused once this returns)
        self._held, self._held_bytes = [rest], len(rest)
        return False

    def send_file_now(self, header, rng: FileRange, read_path: str | None) -> bool | None:
        """A small file READ's response sent at once, as `send` would send it by copy, without
        a coroutine or a future where its bytes are in the page cache (the module stack's
        `read_now`): the way of a small file's one READ. True: sent. None: nothing done,
        it goes the awaited way (another send on its way or responses held back, a path
        other than copy, a read that might wait). False: as `send_small`'s (the rest held
        back; the caller awaits `flush`)."""
        size = len(header) + rng.length
        if self._users or self._held or self._measuring is not None or size > DIRECT_SEND_MAX:
            return None
        configured = read_path or self.read_path
        if configured != "copy" and (configured != "auto" or rng.length >= AUTO_LARGE):
            return None
        read_now = getattr(rng.io, "read_now", None)
        if read_now is None:
            return None
        pool = self._pool
        if rng.length > pool.size:
            return None
        # (what _buffer and _release do for a range the pool's buffers hold, without their calls)
        buf = pool.get()
        try:
            view = memoryview(buf)[:rng.length]
            done = read_now(rng.fd, view, rng.offset)
            if done is None:
                return None
            if done < rng.length:       # the file is shorter now: zeros, as promised
                view[done:] = bytes(rng.length - done)
            self._file_sends += 1
            self.stats.by_path["copy"] += 1
            self.stats.bytes_by_path["copy"] += size
            try:
                sent = self.sock.sendmsg([header, view], (), DIRECT_SEND_FLAGS)
            except (BlockingIOError, InterruptedError):
                sent = 0
            if sent == size:
                return True
            rest = (bytes(header) + bytes(view))[sent:]     # (the buffer goes back to the pool)
            self._held, self._held_bytes = [rest], len(rest)
            return False
        finally:
            pool.put(buf)

    def holding(self) -> bool:
        """Whether responses are held back (see `send`)."""
        return bool(self._held)

    def flushing(self):
        """What a receiver awaits before waiting for the client: a flush of the responses
        held back, or None when none are (no coroutine made for nothing)."""
        return self.flush() if self._held else None

    async def send(self, desc: SendDescriptor) -> str:
        """Send one response; returns the path used. A small response is held back while
        `more_requests()` says the next request is received already (a client keeping several
        in flight): the responses to a burst of requests go out in one send, and the client
        is woken once, not once per response. Whoever waits for the client to send more
        calls `flush` first."""
        self._users += 1
        try:
            async with self._lock:
                if not isinstance(desc.payload, FileRange):   # not a file read: not counted
                    parts = [desc.header] if desc.payload is None else [desc.header, desc.payload]
                    views = [memoryview(p).cast("B") for p in parts if len(p)]
                    size = sum(len(v) for v in views)
                    if self._held_bytes + size <= DIRECT_SEND_MAX and self.more_requests():
                        # a copy: a response may sit in a buffer the connection reuses for its
                        # next one (a sealed READ's)
                        self._held.append(memoryview(b"".join(views)))
                        self._held_bytes += size
                        return "copy"
                    if self._held:
                        views, self._held, self._held_bytes = self._held + views, [], 0
                    await self._send_all(self._send_now(views))
                    return "copy"
                await self._flush_held()
                # the process's CPU time is the cost, measured only while no other connection
                # can run in between (their work would be counted too)
                crowded = self.crowded()
                path = choose_path(self.read_path, desc, self._zc_ok, self.costs, measuring=not crowded,
                                   paced=self.paced)
                # a young connection's TCP is still finding its rate (slow start): its first
                # sends are typical of neither way
                self._file_sends += 1
                measure = (auto_measured(self.read_path, desc, self.paced) and not crowded
                           and self._file_sends > YOUNG_SENDS)
                rng = desc.payload
                mapped, bound_only = None, False
                if path in ("mmap", "splice") and in_page_cache(rng.fd, rng.offset,
                                                                rng.length) is False:
                    path, measure = "copy", False   # a disk read: on the ring, not in the loop
                elif path == "mmap":
                    found = self.maps.view(rng.fd, rng.offset, rng.length)
                    if found is None:
                        path, measure = "copy", False
                    else:
                        mapped, bound_only = found[0], not found[1] and self.maps.cold_is_a_bound()
                now = time.process_time() if measure or self._measuring else 0.0
                self._record_previous(now, crowded)
                if mapped is not None:
                    nbytes = await self._send_mapped(desc.header, mapped, rng)
                elif path == "splice":
                    nbytes = await self._send_splice(desc.header, desc.payload)
                elif path == "zc":
                    nbytes = await self._send_zc(desc.header, desc.payload)
                else:
                    nbytes = await self._send_copy(desc.header, desc.payload)
                if measure:
                    self._measuring = (path, now, nbytes, bound_only)
                self.stats.by_path[path] += 1
                self.stats.bytes_by_path[path] += nbytes
                return path
        finally:
            self._users -= 1

    def _record_previous(self, now: float, crowded: bool) -> None:
        """The cost of a measured send is the process's CPU from its start to the next
        send's (`now`): that takes in what it left for later (pacing timers, ACKs taken on
        the way). Not while other connections ran in between: their work would be in it."""
        if self._measuring is not None and not crowded:
            way, started, nbytes, bound_only = self._measuring
            known = self.costs.cost[way]
            if not bound_only or (known is not None and (now - started) / nbytes < known):
                self.costs.record(way, now - started, nbytes)
        self._measuring = None

    def close(self) -> None:
        if self._pipe:
            for fd in self._pipe:
                os.close(fd)
            self._pipe = None

    async def flush(self) -> None:
        """Sends the responses held back (before waiting for the client's next request)."""
        if self._held:
            self._users += 1
            try:
                async with self._lock:
                    await self._flush_held()
            finally:
                self._users -= 1

    def flush_nowait(self) -> None:
        """Sends what the socket takes now of the responses held back (the connection is
        ending: nothing waits for room on it any more)."""
        if self._held:
            views, self._held, self._held_bytes = self._held, [], 0
            self._send_now(views)

    async def _flush_held(self) -> None:
        if self._held:
            views, self._held, self._held_bytes = self._held, [], 0
            await self._send_all(self._send_now(views))

    def _send_now(self, parts) -> list:
        """A small response goes out with one direct non-blocking send: a ring send would cost
        two turns of the event loop (submission, completion) for what the socket takes at once.
        Returns what is left for the ring (all of it when the socket is full, or the
        response is large)."""
        views = [memoryview(p).cast("B") for p in parts]
        if sum(len(v) for v in views) > DIRECT_SEND_MAX:
            return views
        try:
            sent = self.sock.sendmsg(views, (), DIRECT_SEND_FLAGS)
        except (BlockingIOError, InterruptedError):
            return views
        left = []
        for p in views:
            if sent >= len(p):
                sent -= len(p)
            else:
                left.append(p[sent:])
                sent = 0
        return left

    # -- the paths ---------------------------------------------------------------------
    async def _send_all(self, parts, refill=None) -> None:
        """Sends all of parts. `refill(n)`, where given, supplies the last n bytes again when
        the kernel cannot copy them (EFAULT: a map whose file shrank)."""
        views = [memoryview(p).cast("B") for p in parts if len(p)]
        punt = IOSQE_ASYNC if sum(len(v) for v in views) >= PUNT_MIN and self.crowded() else 0
        while views:
            try:
                n = await self.aring.sendmsg(self.fd, views, socket.MSG_WAITALL, punt)
            except OSError as e:
                if refill is None or e.errno != errno.EFAULT:
                    raise
                views = [memoryview(refill(sum(len(v) for v in views)))]
                refill = None
                continue
            if n <= 0:
                raise ConnectionResetError(errno.EPIPE, "peer stopped reading")
            while views and n >= len(views[0]):
                n -= len(views[0])
                views.pop(0)
            if n:
                views[0] = views[0][n:]

    async def _read_range(self, buf, start: int, rng: FileRange) -> int:
        """Reads rng into buf[start:]; a short file is padded with zeros (the length was
        promised in the header already). Returns rng.length."""
        view = memoryview(buf)[start:start + rng.length]
        done = await rng.io.pread_into(rng.fd, view, rng.offset)
        if done < rng.length:
            view[done:] = bytes(rng.length - done)
        return rng.length

    async def _send_copy(self, header, rng: FileRange) -> int:
        buf = self._buffer(rng.length)
        try:
            await self._read_range(buf, 0, rng)
            # a small response goes out with one direct send, as other small ones do (_send_now);
            # the ring sends what the socket does not take at once
            left = self._send_now([header, memoryview(buf)[:rng.length]])
            if left:
                await self._send_all(left)
        finally:
            self._release(buf)
        return len(header) + rng.length

    async def _send_mapped(self, header, view: memoryview, rng: FileRange) -> int:
        def refill(left: int) -> bytes:
            # the file shrank under its map (the kernel copies in whole chunks, so some bytes
            # before the new end may be left too): read what is still there, zeros for the rest
            # (the length was promised in the header)
            tail = min(left, rng.length)
            try:
                data = os.pread(rng.fd, tail, rng.offset + rng.length - tail)
            except OSError:
                data = b""
            head = bytes(memoryview(header)[len(header) - (left - tail):]) if left > tail else b""
            return head + data + bytes(tail - len(data))
        await self._send_all([header, view], refill)
        return len(header) + rng.length

    async def _send_zc(self, header, rng: FileRange) -> int:
        # header and payload contiguous in one buffer: one SEND_ZC, no iovec
        hlen = len(header)
        buf = self._buffer(hlen + rng.length)
        try:
            buf[:hlen] = header
            await self._read_range(buf, hlen, rng)
            view = memoryview(buf)[:hlen + rng.length]
            sent = 0
            while sent < len(view):
                n, copied = await self.aring.send_zc(self.fd, view[sent:], socket.MSG_WAITALL)
                self.stats.zc_sends += 1
                self.stats.zc_copied += copied
                if n <= 0:
                    raise ConnectionResetError(errno.EPIPE, "peer stopped reading")
                sent += n
        finally:
            self._release(buf)  # only after every notification: the awaits above ensure it
        return hlen + rng.length

    async def _send_splice(self, header, rng: FileRange) -> int:
        rpipe, wpipe = self._splice_pipe()
        await self._send_all_flags(header, socket.MSG_MORE | socket.MSG_WAITALL)
        left, offset = rng.length, rng.offset
        while left:
            chunk = min(left, PIPE_SIZE)
            try:
                moved = os.splice(rng.fd, wpipe, chunk, offset_src=offset)
            except BlockingIOError:
                moved = -1
            if moved <= 0:
                # EOF (file shrank) or nothing movable: send zeros for what was promised
                await self._send_all([bytes(left)])
                return len(header) + rng.length
            offset += moved
            left -= moved
            while moved:
                try:
                    flags = os.SPLICE_F_NONBLOCK | (os.SPLICE_F_MORE if left else 0)
                    moved -= os.splice(rpipe, self.fd, moved, flags=flags)
                except BlockingIOError:
                    await self.aring.poll(self.fd, select.POLLOUT)
        return len(header) + rng.length

    async def _send_all_flags(self, data, flags: int) -> None:
        view = memoryview(data).cast("B")
        while view:
            n = await self.aring.send(self.fd, view, flags)
            if n <= 0:
                raise ConnectionResetError(errno.EPIPE, "peer stopped reading")
            view = view[n:]

    # -- resources ---------------------------------------------------------------------
    def _buffer(self, size: int):
        if size <= self._pool.size:
            return self._pool.get()
        return mmap.mmap(-1, size)

    def _release(self, buf) -> None:
        if len(buf) == self._pool.size:
            self._pool.put(buf)
        else:
            buf.close()

    def _splice_pipe(self) -> tuple[int, int]:
        if self._pipe is None:
            self._pipe = splice_pipe()
        return self._pipe


class Receiver(ReceiveBuffer):
    """Receives frames from one connected socket.

    Small messages come out of a receive buffer that each receive fills with whatever has
    arrived: a request's 4-byte NetBIOS prefix and its message in one, and pipelined
    requests (a client keeping several in flight) in one for all of them. With the buffer
    empty, that receive is a plain non-blocking recv: at once when the client has sent
    already (`receive_now`), else once the event loop sees the socket readable
    (`receive_more`), where the frames may be answered in the loop's callback (`serve`).
    The rest of a frame begun in the buffer, and large frames, come through the ring,
    large ones straight into the buffer the server gives (a WRITE's payload page-aligned
    there), after what the receive buffer already holds of them.

    The buffer's state and the ways every small request takes (frame_waiting, take_frame,
    take_answered, drained, recv_now, serve_frames, which answers the requests it holds
    whole, and on_readable, the event loop's readiness callback while receive_more waits)
    are C: smbring._wire.ReceiveBuffer (src/smbring/_wire/receive.c)."""

    BUFFER = 16384          # the most taken into the receive buffer at once
    # (FAIR_BURST, ReceiveBuffer's: pieces handed out of the buffer in a row without waiting
    # for the socket, after which the other connections get a turn of the event loop: a
    # client that pipelines many requests must not hold the loop for all of them)
    DIRECT_BACKOFF = 3      # receives that wait without trying first after a recv found nothing

    def __init__(self, aring, sock: socket.socket):
        super().__init__()
        self.aring = aring
        self._sock = sock
        self.fd = sock.fileno()
        self._buf = bytearray(self.BUFFER)
        self._view = memoryview(self._buf)
        self._start = self._end = 0     # the bytes received and not yet handed out
        # called before waiting for the client: what it returns, unless None, is awaited
        # first (a Sender's flush of the responses it holds back: Sender.flushing)
        self.before_wait = None
        self._in_a_row = 0              # pieces handed out since the last wait (FAIR_BURST)
        # waiting for small frames: readiness (see _readable), not a ring receive
        self._loop = None
        self._waiter = None
        self._watching = False
        self._skip_direct = 0           # (see receive_now)
        # serve() -> bool | (awaitable, started), where given: answers the frames that the
        # readiness callback (on_readable, C) received while receive_more waits, and says
        # whether the rest goes the awaited way (True, or what waits: kept in `answering`
        # for the woken task) or all is answered and the wait goes on (False); see
        # Server.handle
        self.serve = None
        self.answering = None
        # whether responses are held back (Sender.holding): receive_now leaves them to
        # receive_more, which sends them before it waits
        self.holding = lambda: False

    def receive_now(self) -> bool:
        """Takes what the client has sent already with one non-blocking recv, with nothing
        received left to hand out: no future, coroutine or turn of the event loop (on a busy
        machine the client's next request is usually in by the time the answer to its last
        has been sent). False when that is not the way now, and the caller awaits
        `receive_more`: nothing has arrived (then the next DIRECT_BACKOFF receives wait
        without trying first: a recv that finds nothing costs a system call), responses are
        held back (they go first), or the connection's FAIR_BURST pieces in a row are up (a
        direct recv counts as one: the wait gives the other connections their turn).
        ConnectionResetError if the peer has gone."""
        if self._in_a_row >= self.FAIR_BURST - 2 or self.holding():
            return False
        if self._skip_direct:
            self._skip_direct -= 1
            return False
        try:
            got = self.recv_now()
        except (BlockingIOError, InterruptedError):
            self._skip_direct = self.DIRECT_BACKOFF
            return False
        if got == 0:
            raise ConnectionResetError(errno.ECONNRESET, "peer closed mid-payload")
        self._in_a_row += 1
        return True

    async def receive_more(self) -> None:
        """Waits for the client's next bytes, with nothing received left to hand out (what is
        held back goes out first); ConnectionResetError if the peer goes away. The wait is
        for the socket's readiness (see _readable), then one recv into the receive buffer:
        the ring's receive, for a few bytes on an idle connection, cost a submission, the
        eventfd's wake-up and the reaping of a completion besides."""
        self._in_a_row = 0
        self._start = self._end = 0
        if self.before_wait is not None:
            flushing = self.before_wait()
            if flushing is not None:
                await flushing
        while True:
            if await self._readable():
                return              # received (and perhaps served: see `serve`) by on_readable
            try:
                got = self.recv_now()
            except (BlockingIOError, InterruptedError):
                continue            # (woken for nothing)
            if got == 0:
                raise ConnectionResetError(errno.ECONNRESET, "peer closed mid-payload")
            return

    def _readable(self):
        """A future that is done once the socket has something to read. The loop keeps
        watching the socket between waits (no epoll_ctl per wait); when it finds the socket
        readable while nobody waits (the connection busy with what it received), it stops
        watching until the next wait, as a level-triggered watch would fire every turn."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        if not self._watching:
            loop.add_reader(self.fd, self.on_readable)
            self._watching = True
        return waiter

    def revive_wait(self) -> None:
        """Ends a wait for readiness that nothing would end any more. uvloop (libuv) runs a
        descriptor's readiness callback once when the socket reports an error (a reset) and
        then stops watching it for good; where that callback received requests that need no
        answer now (a CANCEL, WRITEs answered later) the wait went on, and the connection held
        its socket, its files and its place under `max connections per client` for ever.
        Asked once per timeout sweep (a system call per waiting connection): a socket that
        has data, its end or an error for a recv while the wait goes on wakes the waiter,
        which receives them (the end or the error then ends the connection), and is watched
        anew at its next wait."""
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        try:
            self._sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return              # nothing to read: nothing missed
        except OSError:
            pass                # an error: the waiter's recv meets it
        self._waiter = None
        if self._watching:      # (uvloop: forgets the watch it stopped, too)
            self._loop.remove_reader(self.fd)
            self._watching = False
        waiter.set_result(False)

    def close(self) -> None:
        """Stops watching the socket (before it is closed: its descriptor may be reused)."""
        if self._watching:
            self._loop.remove_reader(self.fd)
            self._watching = False
        self._waiter = None
        self.serve = self.answering = None
        self.fd = -1                # (a recv_now from now on fails, whatever the number becomes)
        self.forget_server()

    async def recv_small(self, n: int) -> memoryview:
        """The next n (at most BUFFER) bytes, in a buffer of their own (the caller may keep
        it: a background WRITE holds its frame); ConnectionResetError if the peer goes away
        first."""
        if self._end - self._start >= n:
            self._in_a_row += 1
            if self._in_a_row >= self.FAIR_BURST:
                self._in_a_row = 0
                await asyncio.sleep(0)
        else:
            self._in_a_row = 0
            if self._start:         # what is left moves to the front: room for the rest
                left = self._end - self._start
                self._buf[:left] = self._view[self._start:self._end]
                self._start, self._end = 0, left
            while self._end < n:
                if self.before_wait is not None:
                    flushing = self.before_wait()   # what was held back goes out first
                    if flushing is not None:
                        await flushing
                got = await self.aring.recv(self.fd, self._view[self._end:], 0)
                if got == 0:
                    raise ConnectionResetError(errno.ECONNRESET, "peer closed mid-payload")
                self._end += got
        out = memoryview(self._buf[self._start:self._start + n])
        self._start += n
        if self._start == self._end:
            self._start = self._end = 0
        return out

    async def recv_exact(self, view: memoryview) -> None:
        """Fills view from the socket (what the receive buffer holds first); ConnectionResetError
        if the peer goes away first."""
        got = min(self._end - self._start, len(view))
        if got:
            view[:got] = self._view[self._start:self._start + got]
            self._start += got
            if self._start == self._end:
                self._start = self._end = 0
        while got < len(view):
            if self.before_wait is not None:
                flushing = self.before_wait()
                if flushing is not None:
                    await flushing
            n = await self.aring.recv(self.fd, view[got:], socket.MSG_WAITALL)
            if n == 0:
                raise ConnectionResetError(errno.ECONNRESET, "peer closed mid-payload")
            got += n
