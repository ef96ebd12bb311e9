"""Carrying out the protocol core's effects for one connection (see ``smb.effects``).

The core decides what happens; this is where it happens: responses get their NetBIOS length
prefix and go to the transport (a READ's data straight from the file where the core left it
there), file data is read and written through the share's VFS module stack, and the core's
continuation gets the result. A WRITE the core marks `background` runs while the connection
receives its next frames (at most WRITES_IN_FLIGHT of them, each holding its frame); the core
asks with `Drain` where a later request must see them done.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import time

from smbring import datapath
from smbring.smb import effects
from smbring.vfs import extents, modules

log = logging.getLogger("smbring.server")
# background WRITEs per connection: the next payload arrives while the last goes to the disk
WRITES_IN_FLIGHT = 4
NETBIOS_MAX = 0xFFFFFF      # the 24-bit length of a NetBIOS session message


def descriptor(send: effects.Send, modules: dict) -> datapath.SendDescriptor:
    """A response as the transport sends it: the NetBIOS prefix, then the message and payload
    (a file range read through the share's modules when it must be read into memory)."""
    payload = send.payload
    size = len(send.message) + (payload.length if isinstance(payload, effects.FileRange)
                                else len(payload) if payload is not None else 0)
    if size > NETBIOS_MAX:
        raise ConnectionError(f"a response of {size} bytes cannot be framed")
    prefix = size.to_bytes(4, "big")
    if payload is None:
        return datapath.SendDescriptor(prefix, send.message)
    if isinstance(payload, effects.FileRange):
        payload = datapath.FileRange(payload.fd, payload.offset, payload.length, modules[payload.share])
    return datapath.SendDescriptor(prefix + bytes(send.message), payload, splice_safe=send.splice_safe,
                                   read_path=send.read_path)


def range_operation(effect):
    """Carries out a file-range operation (a blocking call: run it in a worker thread); its
    result, what the effect's `then` is called with."""
    if isinstance(effect, effects.CopyRange):
        return extents.copy_range(effect.src_fd, effect.src_offset, effect.dst_fd, effect.dst_offset,
                                  effect.length)
    if isinstance(effect, effects.CloneRange):
        return extents.clone_range(effect.src_fd, effect.src_offset, effect.dst_fd, effect.dst_offset,
                                   effect.length)
    if isinstance(effect, effects.ZeroRange):
        return extents.zero_range(effect.fd, effect.offset, effect.length, effect.deallocate)
    if isinstance(effect, effects.TrimRange):
        return extents.trim_range(effect.fd, effect.offset, effect.length, effect.leave_hole)
    if isinstance(effect, effects.AllocatedRanges):
        return extents.allocated_ranges(effect.fd, effect.offset, effect.length, effect.limit)
    if isinstance(effect, effects.ListNames):
        return extents.list_names(effect.fd, effect.keep)
    if isinstance(effect, effects.SetRangeLocks):
        return extents.set_range_locks_or_none(effect.fd, effect.changes, effect.undo)
    if isinstance(effect, effects.Busy):
        time.sleep(effect.seconds)
        return 0
    raise TypeError(f"not a file-range operation: {effect!r}")


def written_fd(effect) -> int:
    """The descriptor a file-range operation changes (or reads, for AllocatedRanges): the
    operation runs as its owner."""
    return effect.dst_fd if isinstance(effect, (effects.CopyRange, effects.CloneRange)) else effect.fd


# file I/O that starts the moment it is handed over where it comes first (a background WRITE
# waits for room, behind writes whose answers may wait for the client: it starts in its task)
STARTS_AT_ONCE = (effects.ReadInto, effects.Write, effects.Flush, *effects.RANGE_OPERATIONS)
_ONE_FD = (effects.Write, effects.Flush, effects.ZeroRange, effects.TrimRange, effects.AllocatedRanges,
           effects.ListNames, effects.SetRangeLocks, effects.Busy)


def named_descriptors(todo: list) -> tuple:
    """The descriptors the effects of `todo` name (a file read, written, copied or sent; a
    Drain's, which the WRITE waiting in it goes on to write once the writes before it end)."""
    fds = ()
    for effect in todo:
        kind = type(effect)
        if kind is effects.Send:
            if type(effect.payload) is effects.FileRange:
                fds += (effect.payload.fd,)
        elif kind is effects.ReadInto:
            fds += (effect.range.fd,)
        elif kind is effects.CopyRange or kind is effects.CloneRange:
            fds += (effect.src_fd, effect.dst_fd)
        elif kind in _ONE_FD:
            fds += (effect.fd,)
        elif kind is effects.Drain and effect.fd is not None:
            fds += (effect.fd,)
        elif kind is effects.Settle:
            fds += effect.fds
    return fds


class DescriptorHolds:
    """The descriptors that work carried out later still names, and the closes that wait for
    it: one for all the connections of a server (its event loop's thread only).

    The core names a file by its descriptor's number, and the work it asks for runs later or
    elsewhere: an io_uring op the loop submits at its next turn, a worker thread's copy, a
    READ's payload sent from the file after other connections were served. Were the number
    closed meanwhile (a CLOSE on another channel, a LOGOFF, a durable handle's expiry) and
    reused by another open, that work would read or write the other open's file. So the
    runner `hold`s every descriptor its effects name from the moment it receives them until
    they are carried out, and the core's closes go through `close`: a held descriptor stays
    open (its number unused) until the last hold on it is released.

    Of that work, the file I/O under way (begun with `io_began`: a READ, WRITE, FLUSH or
    range operation started, which ends on its own, unlike a response the client may never
    read) is what a CLOSE waits for before it answers (`after_io`, see smb.effects.Settle):
    only the I/O under way when it asks, so that new I/O cannot keep it waiting."""

    def __init__(self):
        self._held: dict[int, int] = {}             # fd -> holds on it
        self._closing: dict[int, list] = {}         # held fd -> the closes waiting for it
        self._under_way: dict[int, set] = {}        # fd -> the file I/O under way on it (tokens)
        self._token = 0
        # [the tokens still under way, then] for each `after_io` waiting (few, and only while
        # a CLOSE waits: every end of I/O looks at each)
        self._waiting: list[list] = []

    def hold(self, fds: tuple) -> None:
        held = self._held
        for fd in fds:
            held[fd] = held.get(fd, 0) + 1

    def release(self, fds: tuple) -> None:
        held = self._held
        for fd in fds:
            left = held[fd] - 1
            if left:
                held[fd] = left
                continue
            del held[fd]
            for close in self._closing.pop(fd, ()):
                try:
                    close()
                except Exception:       # a bug of ours: the other closes are made all the same
                    log.exception("closing descriptor %d failed", fd)

    def close(self, fd: int, close) -> None:
        """Calls close() (which closes fd) now, or when fd's last hold is released."""
        if fd in self._held:
            self._closing.setdefault(fd, []).append(close)
        else:
            close()

    def __contains__(self, fd: int) -> bool:
        return fd in self._held

    def io_began(self, fds: tuple) -> int:
        """File I/O on `fds` started; its token, for `io_ended`."""
        self._token = token = self._token + 1
        under_way = self._under_way
        for fd in fds:
            tokens = under_way.get(fd)
            if tokens is None:
                under_way[fd] = {token}
            else:
                tokens.add(token)
        return token

    def io_ended(self, fds: tuple, token: int) -> None:
        under_way = self._under_way
        for fd in fds:
            tokens = under_way.get(fd)
            if tokens is not None:
                tokens.discard(token)
                if not tokens:
                    del under_way[fd]
        if self._waiting:
            for waiter in list(self._waiting):
                pending, then = waiter
                pending.discard(token)
                if not pending:
                    self._waiting.remove(waiter)
                    try:
                        then()
                    except Exception:       # a bug of ours: the other waiters go on all the same
                        log.exception("going on after the I/O on %r failed", fds)

    def working(self, fd: int) -> bool:
        """Whether file I/O is under way on fd."""
        return fd in self._under_way

    def after_io(self, fds: tuple, then) -> None:
        """Calls then() once the file I/O under way on `fds` now has ended (at once if none)."""
        pending = set()
        for fd in fds:
            pending.update(self._under_way.get(fd, ()))
        if pending:
            self._waiting.append([pending, then])
        else:
            then()


class WritesInFlight:
    """The background WRITEs of one connection still running, with the bytes they write. A
    WRITE's task takes itself out when it ends (`ended`): a done callback would cost the
    loop a turn of its own (and a poll) after every one."""

    def __init__(self):
        self.tasks: dict[asyncio.Task, tuple[int, int, int]] = {}

    def __bool__(self) -> bool:
        self._prune()
        return bool(self.tasks)

    def _prune(self) -> None:
        """Forgets the tasks that ended without running (cancelled before their first step:
        their `ended` never ran)."""
        for task in [t for t in self.tasks if t.done()]:
            del self.tasks[task]

    def room(self) -> bool:
        """Whether one more may start now (see `start`)."""
        if len(self.tasks) < WRITES_IN_FLIGHT:
            return True
        self._prune()
        return len(self.tasks) < WRITES_IN_FLIGHT

    def ended(self, task) -> None:
        self.tasks.pop(task, None)

    async def drain(self, fd: int | None = None, start: int = 0, end: int = 0) -> None:
        """Until none runs (with fd: none overlapping fd's bytes start to end)."""
        while True:
            ahead = [t for t, (f, s, e) in self.tasks.items()
                     if not t.done() and (fd is None or (f == fd and s < end and start < e))]
            if not ahead:
                self._prune()
                return
            await asyncio.wait(ahead)

    def start_now(self, loop, fd: int, start: int, end: int, coro) -> None:
        """Runs coro as a task (the caller saw `room`, or waited `until_room`); coro calls
        `ended` when it ends."""
        self.tasks[loop.create_task(coro)] = (fd, start, end)

    async def until_room(self) -> None:
        """Until one more may start (`room`)."""
        while not self.room():
            await asyncio.wait(list(self.tasks), return_when=asyncio.FIRST_COMPLETED)


class EffectRunner:
    """Carries out one connection's effects, in order."""

    def __init__(self, transport, modules: dict, sending: asyncio.Lock, file_maps, peer, pool=None,
                 delivery=None, owners=None, holds: DescriptorHolds | None = None):
        self.transport = transport
        # the server's descriptors held for work in flight (see DescriptorHolds); every list
        # of effects is held from the moment it is received, in the same turn of the loop
        self.holds = holds if holds is not None else DescriptorHolds()
        # holds taken for runs not started yet (a frame served in the loop's callback is
        # carried out by the connection's task later): released by `release_unstarted`
        self._unstarted: dict[int, tuple] = {}
        # watches that break notifications reach the client (server.delivery.DeliveryWatch;
        # None: they are taken as delivered)
        self.delivery = delivery
        self.modules = modules          # share name -> VFS module stack
        self.sending = sending          # one frame on the wire at a time
        self.file_maps = file_maps
        self.peer = peer
        # where file-range operations (server-side copy, hole punching) run: the server's
        # file I/O threads (None: the event loop's default executor)
        self.pool = pool
        # who each descriptor's data I/O runs as (vfs.data_identity; None: the server acts as
        # itself): a range operation runs as its file's owner in the pool's thread
        self.owners = owners
        self.writes = WritesInFlight()
        self._loop = None               # (the running loop, once a background WRITE starts)
        # runs of `run` holding or waiting for `sending`: while there are any, a response
        # waits its turn the awaited way (run_now does not overtake them; the shell reads it
        # for every frame)
        self.sending_users = 0
        self._send_small = getattr(transport, "send_small", None)
        self._send_file_now = getattr(transport, "send_file_now", None)
        # for metrics: file bytes written, and read into memory (signed, sealed, compounded
        # READs; the others are counted by the transport's read paths)
        self.bytes_written = 0
        self.bytes_read_in_memory = 0

    def run_now(self, todo: list):
        """Carries out at once what needs no wait, in order: responses in memory that the
        transport sends (or holds back) at once (`send_small`), files to forget. Returns None
        when that was all, else an awaitable that carries out the rest (from the first effect
        that waits: file I/O, a response too large or behind another, a socket that is full).
        The usual request costs no coroutine, future or lock this way."""
        send_small = self._send_small
        if send_small is None:
            return self.run(todo) if todo else None
        for i, effect in enumerate(todo):
            kind = type(effect)
            if kind is effects.Send:
                payload = effect.payload
                if self.sending_users or effect.delivered is not None:
                    return self.run(todo[i:])
                message = effect.message
                if type(payload) is effects.FileRange:
                    # a small file READ whose bytes are in the page cache: read and sent here
                    done = None if self._send_file_now is None else self._send_file_now(
                        (len(message) + payload.length).to_bytes(4, "big") + message,
                        datapath.FileRange(payload.fd, payload.offset, payload.length,
                                           self.modules[payload.share]),
                        effect.read_path)
                    if done is None:
                        return self.run(todo[i:])
                    if done is False:
                        return self.flush_then(todo[i + 1:])
                    continue
                if payload is None:
                    size = len(message)
                    parts = [size.to_bytes(4, "big"), message]
                else:
                    size = len(message) + len(payload)
                    parts = [size.to_bytes(4, "big"), message, payload]
                done = send_small(parts, size + 4)
                if done is None:
                    return self.run(todo[i:])
                if done is False:       # a rest held back: sent before anything else
                    return self.flush_then(todo[i + 1:])
            elif kind is effects.Forget:
                self.file_maps.forget_file(effect.dev, effect.ino)
            elif kind is effects.ReadInto:
                # a signed, sealed or compounded READ's data, read here where the page cache
                # holds it: the response it completes goes on at once, as a request's would
                read = self._read_now(effect)
                if read is None:
                    return self.run(todo[i:])
                return self.run_now(effect.then(read) + todo[i + 1:])
            elif kind is effects.Write and effect.background and self.writes.room():
                # (as `run` starts it, without waiting for room: there is some)
                self._background(effect)
            elif kind is effects.Settle:
                self._settle(effect, todo[i + 1:])
                return None
            else:
                return self.run(todo[i:])
        return None

    def _read_now(self, effect: effects.ReadInto) -> int | None:
        """A ReadInto carried out here and now where the module stack reads it without waiting
        (its `read_now`: the page cache holds it all): its outcome as `_file_io` gives it
        (`_read_done`). None: it goes the awaited way (which reports a failure, if any).
        Nothing else runs meanwhile: no CLOSE waits for it, and its descriptor needs no hold."""
        rng, view = effect.range, effect.into
        read_now = getattr(self.modules[rng.share], "read_now", None)
        if read_now is None:
            return None
        try:
            done = read_now(rng.fd, view, rng.offset)
        except Exception:       # (the awaited way reads it again, and answers or logs what fails)
            return None
        return None if done is None else self._read_done(view, done)

    def _read_done(self, view: memoryview, done: int) -> int:
        """A ReadInto's outcome once `done` bytes are read into `view`: all of it, what the
        file no longer holds zeros, as promised."""
        self.bytes_read_in_memory += done
        if done < len(view):
            view[done:] = bytes(len(view) - done)
        return len(view)

    def _background(self, effect: effects.Write) -> None:
        """Starts a background WRITE's task (there is room for it)."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        fds = self.hold([effect])
        self.writes.start_now(loop, effect.fd, effect.offset, effect.offset + len(effect.data),
                              self._in_background(effect, fds, (fds, self.holds.io_began(fds))))

    def flush_then(self, todo: list):
        """The rest of a response the socket did not take at once, then `todo` (held now; its
        I/O is not under way before the client has taken the rest)."""
        return self._flushing(self.run(todo, begin=False))

    async def _flushing(self, then) -> None:
        self.sending_users += 1
        try:
            async with self.sending:
                await self.transport.flush()
        finally:
            self.sending_users -= 1
        await then

    def hold(self, todo: list) -> tuple:
        """Holds the descriptors `todo` names (until `release`): their numbers stay theirs."""
        fds = named_descriptors(todo)
        if fds:
            self.holds.hold(fds)
        return fds

    def release(self, fds: tuple) -> None:
        if fds:
            self.holds.release(fds)

    def run(self, todo: list, begin: bool = True):
        """An awaitable that carries out `todo`, in order; its descriptors are held from now
        (not from when it is awaited) until it is done, and (`begin`: it is awaited at once)
        file I/O that comes first is under way from now (`_begin`: a CLOSE of another channel
        handled before the awaitable's first step waits for it)."""
        fds = self.hold(todo) if todo else ()
        began = self._begin(todo[0]) if begin and fds and type(todo[0]) in STARTS_AT_ONCE and \
            not (type(todo[0]) is effects.Write and todo[0].background) else None
        if fds:
            self._unstarted[id(fds)] = fds, began
        return self._run(todo, fds, began)

    def release_unstarted(self) -> None:
        """The connection is gone: runs handed out and never awaited let go of their holds
        (and of the I/O they were to start)."""
        for fds, began in self._unstarted.values():
            self.holds.release(fds)
            if began is not None:
                self.holds.io_ended(*began)
        self._unstarted.clear()

    def _begin(self, effect) -> tuple:
        """File I/O under way from now on (until `_file_io` ends it): (its descriptors, token)."""
        fds = named_descriptors((effect,))
        return fds, self.holds.io_began(fds)

    async def _run(self, todo: list, fds: tuple = (), began: tuple | None = None) -> None:
        if fds:
            self._unstarted.pop(id(fds), None)
        try:
            for i, effect in enumerate(todo):
                if isinstance(effect, effects.Settle):
                    self._settle(effect, todo[i + 1:])
                    return
                if isinstance(effect, effects.Send):
                    self.sending_users += 1
                    try:
                        async with self.sending:
                            try:
                                await self.transport.send(descriptor(effect, self.modules))
                            except OSError:
                                if effect.delivered is not None:
                                    effect.delivered(False)     # the break goes on another channel
                                raise
                            if effect.delivered is not None and self.delivery is not None:
                                # (a small message may be held back a moment: the first look at
                                # what is acknowledged is a retransmission timeout later)
                                self.delivery.watch(effect.delivered)
                    finally:
                        self.sending_users -= 1
                elif isinstance(effect, effects.Write) and effect.background:
                    # (held again for the task, when it is made: this run may end before it does)
                    if not self.writes.room():
                        await self.writes.until_room()
                    self._background(effect)
                elif isinstance(effect, effects.Drain):
                    await self.writes.drain(effect.fd, effect.start, effect.end)
                    await self.run(effect.then(None))
                elif isinstance(effect, effects.Forget):
                    self.file_maps.forget_file(effect.dev, effect.ino)
                elif isinstance(effect, effects.Wait):
                    await self.run(effect.then(await self._waited(effect)))
                else:
                    await self.run(effect.then(await self._file_io(effect, began if i == 0 else None)))
        finally:
            if fds:
                self.holds.release(fds)

    @staticmethod
    async def _waited(effect: effects.Wait):
        """What effect.start's `done` is called with (its bound is the starter's)."""
        outcome = asyncio.get_running_loop().create_future()

        def done(result=None) -> None:
            if not outcome.done():
                outcome.set_result(result)
        effect.start(done)
        return await outcome

    def _settle(self, effect: effects.Settle, rest: list) -> None:
        """Goes on with effect.then(None), then `rest`, once the file I/O under way on its
        descriptors has ended (a task then: the connection reads on meanwhile). Their numbers
        are held until then."""
        held = self.hold([effect, *rest])

        def go_on() -> None:
            asyncio.get_running_loop().create_task(self._go_on(effect, rest, held))

        self.holds.after_io(effect.fds, go_on)

    async def _go_on(self, effect: effects.Settle, rest: list, held: tuple) -> None:
        try:        # (what waits is held again by run_now)
            await self._answer(lambda outcome: effect.then(outcome) + rest, None, "request")
        finally:
            self.release(held)

    async def _answer(self, then, outcome, what: str) -> None:
        """Carries out then(outcome) as run_now carries out a request's effects (an answer
        after work done while the connection read on); what goes wrong is logged."""
        try:
            pending = self.run_now(then(outcome))
            if pending is not None:
                await pending
        except OSError as e:
            log.info("connection from %s: answer to a %s lost: %s", self.peer, what, e)
        except Exception:
            log.exception("connection from %s: %s failed", self.peer, what)

    async def drain(self) -> None:
        """Until every background WRITE is written and answered."""
        await self.writes.drain()

    async def _file_io(self, effect, began: tuple | None = None):
        """The outcome of a file read, write, flush or range operation: its result, or the
        exception (the core answers it as an NTSTATUS). Under way (`began`, or from now) until
        it ends: the closes that wait for it, DescriptorHolds.after_io."""
        if began is None:
            began = self._begin(effect)
        try:
            if isinstance(effect, effects.ReadInto):
                return await self._read_into(effect)
            if isinstance(effect, effects.RANGE_OPERATIONS):
                work = (functools.partial(range_operation, effect) if self.owners is None
                        else self.owners.in_worker(written_fd(effect), range_operation, effect))
                if self.pool is None:
                    return await asyncio.get_running_loop().run_in_executor(None, work)
                return await modules.in_thread(self.pool, work)
            io = self.modules[effect.share]
            if isinstance(effect, effects.Write):
                written = await io.pwrite_all(effect.fd, effect.data, effect.offset)
                self.bytes_written += written
                return written
            await io.fsync(effect.fd)
            return 0
        except Exception as e:
            if not isinstance(e, OSError):
                log.exception("file I/O for %s failed", self.peer)
            return e
        finally:
            self.holds.io_ended(*began)

    async def _read_into(self, effect: effects.ReadInto) -> int:
        rng, view = effect.range, effect.into
        return self._read_done(view, await self.modules[rng.share].pread_into(rng.fd, view, rng.offset))

    async def _in_background(self, effect: effects.Write, fds: tuple, began: tuple) -> None:
        """A background WRITE's I/O and answer, while the connection reads on; the answer
        goes as run_now sends one (after any waiting their turn: see run_now). `fds`: the
        hold taken for it when it was made."""
        try:
            await self._answer(effect.then, await self._file_io(effect, began), "WRITE")
        finally:
            self.writes.ended(asyncio.current_task(self._loop))
            self.release(fds)
