"""A remote file as an async file object, and the pipelined READs and WRITEs under it.

Large transfers keep up to ``depth`` READs or WRITEs of ``io_size`` bytes in flight per channel
(within the credits the server granted: a request that finds none waits for responses to bring
more), each on the channel with the fewest requests waiting; a READ or WRITE whose channel is
lost goes again on another (session.Client.data_request). Neither takes a task per request
(``pipelined_requests``).
Data goes through *sinks* and *sources*: ``read_to(offset, length, sink)`` hands each chunk to
``sink(offset, data)`` as soon as it and every chunk before it have arrived, and
``write_from(offset, length, source)`` asks ``source(offset, length)`` for each chunk. That is
the seam where data could later be received into registered buffers and spliced to a file
without passing through Python objects (docs/CLIENT.md).
"""
from __future__ import annotations

import asyncio
import functools
import inspect
import os
import struct
from collections import deque
from collections.abc import Callable

from smbring.smb import wire
from smbring.client import messages as m
from smbring.client.buffers import FileTarget, Spliced
from smbring.client.errors import ProtocolError, closing_on_lie, error_for

Sink = Callable[[int, memoryview | Spliced], object]     # may return an awaitable: waited for
Source = Callable[[int, int], bytes | memoryview]

_MODES = {
    # mode: (needs read, needs write, create disposition, start at the end)
    "r": (True, False, wire.FILE_OPEN, False),
    "w": (False, True, wire.FILE_OVERWRITE_IF, False),
    "x": (False, True, wire.FILE_CREATE, False),
    "a": (False, True, wire.FILE_OPEN_IF, True),
}


def parse_mode(mode: str) -> tuple[int, int, bool]:
    """(DesiredAccess, CreateDisposition, append) for an open() mode (binary only)."""
    plain = mode.replace("b", "")
    plus = "+" in plain
    base = plain.replace("+", "")
    if len(base) != 1 or base not in _MODES or len(plain) - len(base) > 1 or "t" in mode:
        raise ValueError(f"invalid mode {mode!r} (binary modes only: r, w, x, a, with an optional +)")
    reads, writes, disposition, append = _MODES[base]
    access = m.SYNCHRONIZE | m.FILE_READ_ATTRIBUTES
    if reads or plus:
        access |= m.FILE_GENERIC_READ
    if writes or plus:
        access |= m.FILE_GENERIC_WRITE
    return access, disposition, append


async def pipelined_requests(starts, depth: int, finish, on_result=None, abandon=None) -> None:
    """Runs requests begun with Client.start_data_request, at most `depth` at a time; the
    first failure cancels the rest. `starts` yields (start, finish_args): start() begins a
    request (sent there and then when its channel has the credits), finish(started,
    *finish_args) awaits and checks its answer; the results go to on_result in the order the
    requests were made (what on_result returns, if awaitable, is awaited: a sink waiting for
    its disk). Neither the requests nor their answers take a task of their own: the waiting
    is done here, so an answer costs the event loop one turn (this task woken by it) instead
    of three. When the pipeline fails, abandon(*finish_args) is called for each request it
    had begun and not finished."""
    running: deque = deque()

    async def take(started, args) -> None:
        result = await finish(started, *args)
        if on_result:
            after = on_result(result)
            if after is not None and inspect.isawaitable(after):
                await after
    try:
        for start, args in starts:
            try:
                started = start()
            except BaseException:
                if abandon is not None:
                    abandon(*args)
                raise
            running.append((started, args))
            if len(running) >= depth:
                await take(*running.popleft())
        while running:
            await take(*running.popleft())
    finally:
        tasks = []
        for started, args in running:
            started[1].cancel()     # a request on the wire: its answer is dropped when it comes
            if started[0] is None:
                tasks.append(started[1])
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if abandon is not None:
            for _started, args in running:
                abandon(*args)


def _write_size(client, chunk_size: int | None) -> int:
    """The bytes of a WRITE: large ones only as far as the server's credit window lets them
    through."""
    return client.io_size if chunk_size is None else client.fitting(chunk_size)


def _source_chunk(source: Source, offset: int, n: int):
    """source(offset, n), which must give all n bytes."""
    chunk = source(offset, n)
    if len(chunk) != n:
        raise ValueError(f"the source gave {len(chunk)} bytes at {offset}, {n} were due "
                         f"(the local file changed during the transfer?)")
    return chunk


class _SessionExpired(Exception):
    """A _WritePump's WRITE was refused STATUS_NETWORK_SESSION_EXPIRED: once the session is
    renewed, the writing goes on from `offset` (that WRITE's, or an earlier one's whose answer
    the pump stopped waiting for: WRITEs may be sent again, the same bytes at the same place)."""

    def __init__(self, offset: int):
        super().__init__(f"the session expired (writing from {offset})")
        self.offset = offset


class _Write:
    """One WRITE of a _WritePump, standing for its future on the channel (done, set_result,
    set_exception): its answer goes straight to the pump."""
    __slots__ = ("pump", "offset", "chunk", "over")

    def __init__(self, pump: "_WritePump", offset: int, chunk):
        self.pump, self.offset, self.chunk, self.over = pump, offset, chunk, False

    def done(self) -> bool:
        return self.over

    def set_result(self, response) -> None:
        self.pump.answered(self, response, None)

    def set_exception(self, error: BaseException) -> None:
        self.pump.answered(self, None, error)


class _WritePump:
    """write_from's WRITEs over a session's only channel, driven by their answers: each final
    answer is checked, and the next WRITE sent, from the code that receives it, with no future,
    task or coroutine step per WRITE (pipelined_requests took four coroutine frames, a future
    and a turn of the event loop per WRITE). The task that runs the pump waits once, for the
    end, and otherwise only where the channel is short of credits with none of the pump's
    WRITEs in flight (the next one then goes the ordinary way, waiting for its credits)."""

    def __init__(self, f: "RemoteFile", channel, offset: int, length: int, source: Source,
                 done, chunk_size: int | None, depth: int, what: str):
        self.f, self.channel, self.source, self.done = f, channel, source, done
        self.next, self.end = offset, offset + length
        self.chunk_size, self.depth, self.what = chunk_size, depth, what
        self.flying: set[_Write] = set()
        self.error: BaseException | None = None
        self.wake: asyncio.Future | None = None

    async def run(self) -> None:
        try:
            while True:
                self.fill()
                if self.error is not None:
                    raise self.error
                if not self.flying:
                    if self.next >= self.end:
                        return
                    await self.one_waiting()        # credits short, nothing of ours in flight
                    continue
                self.wake = asyncio.get_running_loop().create_future()
                await self.wake                     # until the last answer, or a failure
        finally:
            self.wake = None
            if self.flying:                         # failed or cancelled: never waited for now
                self.stop(None)

    def size(self) -> int:
        """The bytes of the next WRITE (at most: the end may come first)."""
        return _write_size(self.f._client, self.chunk_size)

    def chunk(self, n: int):
        return _source_chunk(self.source, self.next, n)

    def fill(self) -> None:
        """WRITEs sent while fewer than `depth` are in flight and the channel has the credits."""
        channel, flying = self.channel, self.flying
        size = self.size()      # (the same for every WRITE sent here: credits only move)
        while self.next < self.end and len(flying) < self.depth and self.error is None:
            n = min(size, self.end - self.next)
            if not channel.can_send(n):
                return
            try:
                chunk = self.chunk(n)
            except BaseException as e:
                self.stop(e)
                return
            write = _Write(self, self.next, chunk)
            flying.add(write)
            self.next += n
            try:
                channel.start_write(m.write_request_head(self.f.file_id, write.offset, n), chunk,
                                    self.f._client.tree_id, write)
            except BaseException as e:
                if not write.over:
                    flying.discard(write)
                    self.finish(write)
                self.stop(e)
                return

    async def one_waiting(self) -> None:
        """The next WRITE the ordinary way: it waits for its channel's credits."""
        n = min(self.size(), self.end - self.next)
        chunk = self.chunk(n)
        try:
            started = self.f._start_write(self.next, chunk, n, self.what)
        except BaseException:
            self.finish(_Write(self, self.next, chunk))
            raise
        offset, self.next = self.next, self.next + n
        await self.f._finish_write(started, offset, chunk, self.done)

    def answered(self, write: _Write, response, error: BaseException | None) -> None:
        if write.over:
            return          # abandoned when the pump stopped
        self.flying.discard(write)
        self.finish(write)
        if error is None:
            try:
                if response.status == wire.STATUS_NETWORK_SESSION_EXPIRED:
                    raise _SessionExpired(min([write.offset, *(w.offset for w in self.flying)]))
                if response.status != wire.STATUS_SUCCESS:
                    raise error_for(response.status, self.what)
                self.f._check_written(m.parse_write(response.message), write.chunk, write.offset)
            except BaseException as e:
                error = e
        if error is not None:
            self.stop(error)
        elif self.wake is not None:
            self.fill()
            if not self.flying or self.error is not None:
                self.wake_up()

    def finish(self, write: _Write) -> None:
        write.over = True
        if self.done is not None:
            self.done(write.chunk)

    def stop(self, error: BaseException | None) -> None:
        """The first failure ends the pump: the WRITEs in flight are abandoned (done called
        for their chunks; their answers are dropped when they come)."""
        if self.error is None and error is not None:
            self.error = error
        flying, self.flying = self.flying, set()
        for write in flying:
            self.finish(write)
        self.wake_up()

    def wake_up(self) -> None:
        if self.wake is not None and not self.wake.done():
            self.wake.set_result(None)


class RemoteFile:
    """An open file on the share. Not safe for concurrent calls on the same object (like a
    local file object); open it twice for that."""

    def __init__(self, client, path: str, created: m.CreateResponse, access: int):
        self._client = client
        self.path = path
        self.file_id = created.file_id
        self._access = access
        self._position = 0
        self.size_at_open = created.size
        self.closed = False

    @classmethod
    async def open(cls, client, path: str, mode: str = "r") -> "RemoteFile":
        access, disposition, append = parse_mode(mode)
        created = await client.create(path, access, disposition, wire.FILE_NON_DIRECTORY_FILE)
        f = cls(client, path, created, access)
        if append:
            f._position = created.size
        return f

    async def __aenter__(self) -> "RemoteFile":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        """Closes the handle; quietly when the connection is gone (the handle went with it)."""
        if not self.closed:
            self.closed = True
            if self._client.connected:
                await self._client.close_file(self.file_id)

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on closed file")

    # ---- position ----

    def tell(self) -> int:
        return self._position

    async def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self._check_open()
        if whence == os.SEEK_CUR:
            offset += self._position
        elif whence == os.SEEK_END:
            offset += (await self.stat()).size
        elif whence != os.SEEK_SET:
            raise ValueError(f"invalid whence {whence}")
        if offset < 0:
            raise ValueError("negative seek position")
        self._position = offset
        return offset

    # ---- data ----

    async def read(self, n: int = -1) -> bytes:
        """Up to n bytes from the position (all to the end with n < 0); fewer only at the end."""
        self._check_open()
        if n < 0:
            n = max(0, (await self.stat()).size - self._position)
        out = bytearray()
        got = await self.read_to(self._position, n, lambda _off, data: out.extend(data), exact=False)
        self._position += got
        return bytes(out)

    def _start_read(self, offset: int, length: int, into: int | None = None):
        return self._client.start_data_request(
            wire.READ, m.read_request(self.file_id, offset, length), payload=length,
            expect=(wire.STATUS_SUCCESS, wire.STATUS_END_OF_FILE), what=f"read {self.path!r}",
            into=None if into is None else FileTarget(into, offset, length))

    async def _finish_read(self, started, offset: int,
                           length: int) -> tuple[int, int, memoryview | Spliced]:
        r = await self._client.finish_data_request(started)
        if r.status == wire.STATUS_END_OF_FILE:
            return offset, length, memoryview(b"")
        if r.spliced is not None:      # checked by the channel before it wrote anything
            if r.spliced > length:
                raise ProtocolError(f"READ returned {r.spliced} bytes, {length} were asked for")
            return offset, length, Spliced(r.spliced)
        return offset, length, m.parse_read(r.message, length)

    @closing_on_lie
    async def read_to(self, offset: int, length: int, sink: Sink, *, exact: bool = True,
                      chunk_size: int | None = None, depth: int | None = None) -> int:
        """Reads [offset, offset+length) with READs pipelined, handing each chunk to
        sink(offset, data) in file order; returns the bytes read. With `exact` every byte must
        come (a short READ is a ProtocolError: the server said the file had them). Without it,
        the data may end early, but only once: a chunk after a short one must be empty.
        A sink with a `splice_fd` (a file the data goes to at the same offsets) may receive,
        instead of the data, Spliced(n): the n bytes went socket -> pipe -> that file directly
        (only for responses that are neither signed nor sealed).
        chunk_size, depth: bytes per READ and READs in flight (default: the client's io_size
        and transfer depth); a chunk_size above what the client negotiated (read_size) is
        lowered to it, and each READ to what the server's credit window lets through."""
        self._check_open()
        client = self._client
        if chunk_size is not None:
            chunk_size = max(1, min(chunk_size, max(client.io_size, client.read_size)))
        keys = client.keys
        into = getattr(sink, "splice_fd", None) if self._client.splice and \
            not (keys.sign or keys.encrypt) else None
        state = {"end": None, "total": 0}

        def jobs():
            start = offset
            while start < offset + length:
                if state["end"] is not None:
                    return          # the end of the file is known: ask no further
                size = client.io_size if chunk_size is None else client.fitting(chunk_size)
                n = min(size, offset + length - start)
                yield functools.partial(self._start_read, start, n, into), (start, n)
                start += n

        def take(result):
            start, asked, data = result
            if state["end"] is not None:
                if len(data):
                    raise ProtocolError(f"READ at offset {start} returned data after the file "
                                        f"ended at {state['end']}: the server is inconsistent")
                return
            if len(data) < asked:
                if exact:
                    raise ProtocolError(f"short read of {self.path!r}: asked for {asked} bytes at "
                                        f"offset {start}, the server returned {len(data)}")
                state["end"] = start + len(data)
            state["total"] += len(data)
            if len(data):
                return sink(start, data)
            return None

        await pipelined_requests(jobs(),
                                 client.transfer_depth if depth is None else max(1, depth),
                                 self._finish_read, take)
        return state["total"]

    async def write(self, data) -> int:
        """Writes all of data at the position (WRITEs pipelined); returns len(data)."""
        self._check_open()
        view = memoryview(data).cast("B")
        base = self._position
        n = await self.write_from(base, len(view), lambda off, length: view[off - base:off - base + length])
        self._position += n
        return n

    def _start_write(self, offset: int, chunk, n: int, what: str):
        return self._client.start_data_request(
            wire.WRITE, m.write_request_head(self.file_id, offset, n), data=chunk, payload=n,
            what=what)

    async def _finish_write(self, started, offset: int, chunk, done=None) -> None:
        try:
            r = await self._client.finish_data_request(started)
            count = m.parse_write(r.message)
        finally:
            if done is not None:
                done(chunk)
        self._check_written(count, chunk, offset)

    def _check_written(self, count: int, chunk, offset: int) -> None:
        """A WRITE answer's Count must be the chunk's length."""
        if count != len(chunk):
            raise ProtocolError(f"WRITE of {len(chunk)} bytes at offset {offset} of {self.path!r}: "
                                f"the server says it wrote {count}")

    @closing_on_lie
    async def write_from(self, offset: int, length: int, source: Source,
                         done: Callable[[object], object] | None = None, *,
                         chunk_size: int | None = None, depth: int | None = None) -> int:
        """Writes [offset, offset+length) from source(offset, n), WRITEs pipelined. done(chunk),
        if given, is called once each chunk's WRITE is answered (or abandoned): the source may
        then reuse its buffer (the data has left, or will never leave). chunk_size, depth:
        bytes per WRITE and WRITEs in flight (default: the client's io_size and transfer
        depth); a chunk_size above what the server allows is lowered to it."""
        self._check_open()
        client = self._client
        if chunk_size is not None:
            chunk_size = max(1, min(chunk_size, max(client.io_size, client.write_size)))

        what = f"write {self.path!r}"      # (once, not per WRITE)

        end = offset + length

        def jobs():         # (from `offset` as it stands: after a renewal, where the pump stopped)
            start = offset
            while start < end:
                n = min(_write_size(client, chunk_size), end - start)
                chunk = _source_chunk(source, start, n)
                yield (functools.partial(self._start_write, start, chunk, n, what),
                       (start, chunk, done))
                start += n

        def abandon(_start, chunk, done) -> None:
            if done is not None:
                done(chunk)

        depth = client.transfer_depth if depth is None else max(1, depth)
        renewed_at = None       # where the writing went on after the last renewal
        while (channel := client.sole_channel()) is not None:
            renewals = client.renewals
            try:
                await _WritePump(self, channel, offset, end - offset, source, done, chunk_size, depth,
                                 what).run()
                return length
            except _SessionExpired as e:
                # (refused again right after a renewal, nothing written since: not renewed twice)
                if e.offset == renewed_at or not await client.renew_session(renewals):
                    raise error_for(wire.STATUS_NETWORK_SESSION_EXPIRED, what) from None
                offset = renewed_at = e.offset
        await pipelined_requests(jobs(), depth, self._finish_write, abandon=abandon)
        return length

    async def flush(self) -> None:
        self._check_open()
        await self._client.request(wire.FLUSH, _flush_request(self.file_id))

    # ---- metadata ----

    async def stat(self) -> m.RemoteStat:
        self._check_open()
        return m.parse_network_open(await self._client.query_info(
            self.file_id, m.FILE_NETWORK_OPEN_INFORMATION, 56))

    async def truncate(self, size: int | None = None) -> int:
        self._check_open()
        size = self._position if size is None else size
        if size < 0:
            raise ValueError("negative size")
        await self._client.set_info(self.file_id, m.FILE_END_OF_FILE_INFORMATION,
                                    size.to_bytes(8, "little"), what=f"truncate {self.path!r}")
        return size

    async def set_times(self, *, atime_ns: int | None = None, mtime_ns: int | None = None,
                        ctime_ns: int | None = None, birthtime_ns: int | None = None) -> None:
        """Sets the times given (Unix ns); the others stay as they are."""
        self._check_open()

        def nt(ns):
            return 0 if ns is None else wire.nt_time(ns)
        await self._client.set_info(self.file_id, m.FILE_BASIC_INFORMATION,
                                    m.basic_information((nt(birthtime_ns), nt(atime_ns), nt(mtime_ns),
                                                         nt(ctime_ns))),
                                    what=f"set times of {self.path!r}")


def _flush_request(file_id: bytes) -> bytes:
    return struct.pack("<HHI16s", 24, 0, 0, file_id)

