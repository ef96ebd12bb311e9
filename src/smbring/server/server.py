"""The asyncio SMB server: one task per connection, NetBIOS session framing, bounded frames.

Socket I/O goes through the io_uring engine's asyncio glue (``smbring.uring.aio``) and the
data paths of ``smbring.datapath``: requests are received with the ring, responses are sent as
send descriptors, so a READ's data can travel file -> socket without Python copying it. Where
io_uring is unavailable, the same loop runs on plain asyncio sockets.

Malformed framing or a protocol violation closes the connection; an error inside a command
becomes an NTSTATUS (see ``smb.connection``).
"""
from __future__ import annotations

import asyncio
import logging
import mmap
import os
import socket
import sys

from smbring.datapath import READ_COSTS, FileRange, Receiver, Sender
from smbring.smb.connection import MAX_IO, Connection, Deferred, Share
from smbring.vfs import modules

log = logging.getLogger("smbring.server")
MAX_FRAME = MAX_IO + 65536
# Lone WRITEs whose file I/O may run while the next requests are received: the next payload
# arrives while the last one goes to the disk (each holds its frame: up to 4 x 8 MiB).
WRITES_IN_FLIGHT = 4


def lone_write(frame: memoryview) -> bool:
    """A plain SMB2 WRITE, not encrypted and not part of a compound."""
    return (len(frame) >= 64 and frame[:4] == b"\xfeSMB" and frame[12] == 0x09 and frame[13] == 0
            and frame[20:24] == b"\0\0\0\0")


class WritesInFlight:
    """The lone WRITEs of one connection whose file I/O is still running, with the byte
    ranges they write. A request that is not a lone WRITE waits for all of them first, and a
    WRITE waits for those it overlaps, so every request sees the effect of the WRITEs before
    it, as if they had been done one by one; only their answers may overtake each other."""

    def __init__(self):
        self.tasks: dict[asyncio.Task, tuple[int, int, int]] = {}

    def __bool__(self) -> bool:
        return bool(self.tasks)

    async def drain(self) -> None:
        while self.tasks:
            await asyncio.wait(list(self.tasks))

    async def start(self, fd: int, offset: int, length: int, work) -> None:
        """Runs work() as a task once no WRITE in flight overlaps it and there is room."""
        end = offset + length
        while True:
            ahead = [t for t, (f, o, e) in self.tasks.items() if f == fd and o < end and offset < e]
            if not ahead and len(self.tasks) < WRITES_IN_FLIGHT:
                break
            await asyncio.wait(ahead or list(self.tasks), return_when=asyncio.FIRST_COMPLETED)
        task = asyncio.ensure_future(work())
        self.tasks[task] = (fd, offset, end)
        task.add_done_callback(lambda t: self.tasks.pop(t, None))


class FrameBuffers:
    """Page-aligned buffers for large frames (WRITEs, mostly), reused once nothing views them.
    A fresh 8 MiB bytearray per WRITE is zero-filled, and on a VM whose host takes freed
    memory back its pages fault in again; a reused buffer is warm. A frame is placed so that
    a WRITE's payload (at 0x70, after the SMB2 header and the WRITE request) starts on a page:
    `direct_writes` can then hand it to O_DIRECT as it is."""

    LARGE = 1 << 20
    SKEW = (mmap.PAGESIZE - 0x70) % mmap.PAGESIZE
    KEPT = WRITES_IN_FLIGHT + 2     # the frames in flight, the one arriving, one spare

    def __init__(self):
        self._bufs: list[mmap.mmap] = []

    def frame(self, n: int) -> memoryview:
        if n < self.LARGE or n + self.SKEW > MAX_FRAME + mmap.PAGESIZE:
            return memoryview(bytearray(n))
        for buf in self._bufs:
            # free when only this list (and getrefcount's argument) refers to it: every view
            # of an mmap, slices included, holds a reference to it through its export
            if sys.getrefcount(buf) == 3:      # the list, `buf`, getrefcount's argument
                return memoryview(buf)[self.SKEW:self.SKEW + n]
        if len(self._bufs) >= self.KEPT:
            return memoryview(bytearray(n))
        buf = mmap.mmap(-1, MAX_FRAME + mmap.PAGESIZE)
        self._bufs.append(buf)
        return memoryview(buf)[self.SKEW:self.SKEW + n]


class RingTransport:
    """Receives and sends on one socket through the engine."""

    def __init__(self, aring, sock: socket.socket, read_path: str, crowded=None):
        self.rx = Receiver(aring, sock)
        self.tx = Sender(aring, sock, read_path=read_path, max_payload=MAX_IO, crowded=crowded)
        self.frames = FrameBuffers()

    async def recv_exact(self, n: int) -> memoryview:
        view = self.frames.frame(n)
        await self.rx.recv_exact(view)
        return view

    async def send(self, desc) -> None:
        await self.tx.send(desc)

    def close(self) -> None:
        self.rx.close()
        self.tx.close()


class PlainTransport:
    """The fallback: asyncio's own socket calls, file data read into memory."""

    def __init__(self, sock: socket.socket):
        self.loop = asyncio.get_running_loop()
        self.sock = sock

    async def recv_exact(self, n: int) -> memoryview:
        buf = bytearray(n)
        view, got = memoryview(buf), 0
        while got < n:
            k = await self.loop.sock_recv_into(self.sock, view[got:])
            if not k:
                raise ConnectionResetError("peer closed")
            got += k
        return view

    async def send(self, desc) -> None:
        data = bytes(desc.header)
        if isinstance(desc.payload, FileRange):
            r = desc.payload
            data += os.pread(r.fd, r.length, r.offset).ljust(r.length, b"\0")
        elif desc.payload is not None:
            data += bytes(desc.payload)
        await self.loop.sock_sendall(self.sock, data)

    def close(self) -> None:
        pass


class Server:
    def __init__(self, shares: dict[str, Share], *, passdb_path: str, allow_guest: bool = False,
                 signing_required: bool = False, read_path: str = "auto", use_uring: bool = True,
                 max_connections: int = 1024):
        self.shares = shares
        self.passdb_path = passdb_path
        self.allow_guest = allow_guest
        self.signing_required = signing_required
        self.read_path = read_path
        self.use_uring = use_uring
        self.max_connections = max_connections
        self.connections = 0
        self._modules = None

    def _io_modules(self) -> dict:
        """Each share's VFS module stack for file data (built once, on the running loop)."""
        if self._modules is None:
            aring = None
            if self.use_uring:
                try:
                    from smbring.uring import aio
                    aring = aio.get_ring()
                except (ImportError, OSError):
                    aring = None
            self._modules = {name: modules.build(share.vfs_objects, aring,
                                                 crowded=lambda: self.connections > 1)
                             for name, share in self.shares.items()}
            for name, stack in self._modules.items():
                log.info("share %s: file data through %s", name, stack.describe())
        return self._modules

    def _transport(self, sock: socket.socket):
        if self.use_uring:
            try:
                from smbring.uring import aio

                return RingTransport(aio.get_ring(), sock, self.read_path,
                                     crowded=lambda: self.connections > 1)
            except (ImportError, OSError) as e:
                log.warning("io_uring unavailable (%s): serving with plain asyncio sockets", e)
                self.use_uring = False
        return PlainTransport(sock)

    async def handle(self, sock: socket.socket, peer) -> None:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = Connection(self.shares, passdb_path=self.passdb_path, allow_guest=self.allow_guest,
                          signing_required=self.signing_required, local_address=sock.getsockname()[0],
                          io_modules=self._io_modules())
        transport = self._transport(sock)
        self.connections += 1
        log.info("connection from %s", peer)
        # one frame on the wire at a time: responses and late answers to pending requests
        # (a lock granted because another connection unlocked) take turns
        sending = asyncio.Lock()
        flushes = set()

        async def flush_outbox():
            async with sending:
                try:
                    for desc in conn.outbox_drain():
                        await transport.send(desc)
                except OSError as e:
                    log.info("connection from %s: late answer lost: %s", peer, e)

        def on_output():
            task = asyncio.ensure_future(flush_outbox())
            flushes.add(task)
            task.add_done_callback(flushes.discard)

        conn.on_output = on_output
        writes = WritesInFlight()

        async def file_io(desc: Deferred):
            try:
                return await desc.io.run()
            except Exception as e:  # answered as an NTSTATUS, not a dropped link
                if not isinstance(e, OSError):
                    log.exception("file I/O for %s failed", peer)
                return e

        async def answer_later(desc: Deferred) -> None:
            """A lone WRITE's I/O and answer, while the connection reads on."""
            result = await file_io(desc)
            try:
                async with sending:
                    for reply in desc.finish(result):
                        await transport.send(reply)
            except OSError as e:
                log.info("connection from %s: answer to a WRITE lost: %s", peer, e)
            except Exception:
                log.exception("connection from %s: WRITE failed", peer)

        try:
            while True:
                head = await transport.recv_exact(4)
                if head[0] != 0:
                    raise ConnectionError("not a NetBIOS session message")
                size = int.from_bytes(head[1:], "big")
                if size < 64 or size > MAX_FRAME:
                    raise ConnectionError(f"frame of {size} bytes refused")
                frame = await transport.recv_exact(size)  # a view: WRITE data is not copied
                lone = lone_write(frame)
                if writes and not lone:
                    await writes.drain()
                descs = conn.handle_frame(frame)
                if lone and len(descs) == 1 and isinstance(descs[0], Deferred):
                    io, desc = descs[0].io, descs[0]
                    await writes.start(io.fd, io.offset, len(io.data), lambda: answer_later(desc))
                    continue
                async with sending:
                    for desc in descs:
                        if isinstance(desc, Deferred):   # a WRITE or FLUSH: the file I/O first
                            for reply in desc.finish(await file_io(desc)):
                                await transport.send(reply)
                        else:
                            await transport.send(desc)
        except (ConnectionError, OSError) as e:
            log.info("connection from %s closed: %s", peer, e or "eof")
        except Exception:
            log.exception("connection from %s failed", peer)
        finally:
            await writes.drain()     # their files stay open until their data is written
            conn.close_all()
            stats = getattr(getattr(transport, "tx", None), "stats", None)
            if stats is not None and any(stats.by_path.values()):
                log.info("connection from %s: file reads sent by path %s (zero-copy sends the kernel "
                         "copied: %d of %d; read path auto: %r)", peer, stats.by_path, stats.zc_copied,
                         stats.zc_sends, READ_COSTS)
            transport.close()
            self.connections -= 1
            sock.close()

    async def serve(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        listener = socket.create_server((host, port), reuse_port=False, backlog=128)
        listener.setblocking(False)
        log.warning("smbring serving %s on %s:%d", ", ".join(self.shares), host, port)
        tasks = set()
        try:
            while True:
                sock, peer = await loop.sock_accept(listener)
                if self.connections >= self.max_connections:
                    log.warning("refusing %s: %d connections already", peer, self.connections)
                    sock.close()
                    continue
                task = asyncio.ensure_future(self.handle(sock, peer))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        finally:
            listener.close()
