"""Whole-file (and whole-tree) downloads and uploads that are either complete or absent.

``get`` writes to a temporary name beside the destination and renames it into place only when
every byte the server announced has arrived; a directory is assembled in a temporary directory
and renamed as a whole. ``put`` writes a temporary name on the share and renames it over the
destination at the end. On any failure the temporary is removed and the destination is left as
it was (a tree uploaded the same way: into a temporary directory on the share, renamed at the
end). What a hostile server may say is checked: short reads and wrong lengths
(ProtocolError), names in a listing that are paths or parent references (ProtocolError, nothing
written), trees with more levels, directories or files than the client's limits
(limits.Limits: LimitExceeded, nothing written). A local tree to upload is checked whole before
anything is sent: names the share would read as paths or streams, links, special files.

`progress`, where given, is told `expect(total bytes)` (again for each file of a tree it
finds) and `advance(bytes)` as data is written (cli.Progress draws it).
"""
from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import stat

from smbring.client.buffers import ALIGN, FileRange, Spliced, aligned
from smbring.client.errors import LimitExceeded, ProtocolError
from smbring.client import messages as m
from smbring.client.files import RemoteFile, parse_mode
from smbring.client.limits import DEFAULT_MAX_DEPTH
from smbring.client.session import check_listed_name, smb_path
from smbring.smb import wire

# directory levels an upload takes from a local tree, and the clean-up of a failed one
# follows on the share (a get follows the client's limits.depth, by default the same)
MAX_DEPTH = DEFAULT_MAX_DEPTH
# bytes of a download's blocks allocated ahead of its data (_Allocation): the server announces
# the size before it sends a byte, and a hostile one could announce a disk's free space
PREALLOCATE_AHEAD = 256 * 1024 * 1024
# a file smaller than this is written through the page cache: O_DIRECT (a second open of the
# file) and allocating ahead (fallocate) cost more than they save on one or two writes
DIRECT_MIN = 1024 * 1024
# the small files of a tree (one READ each) downloaded at once: each file is a few round trips
# (CREATE, READ, CLOSE), which one after another leave the link idle between them
TREE_FILES_IN_FLIGHT = 16
# a file up to this size goes in one compound with its CREATE and CLOSE (one round trip, its
# data copied in memory); a larger one is read and written as a stream (splice, sendfile)
COMPOUND_MOST = 1024 * 1024


def _in_one_compound(size: int, io_size: int) -> bool:
    """Whether a file of `size` bytes goes in one compound: one READ or WRITE of `io_size`
    (the client's read or write size) holds it, and it is no larger than COMPOUND_MOST."""
    return size <= min(io_size, COMPOUND_MOST)


def _new_local_file(path: str) -> int:
    """A download's file, created (never one already there, never through a link)."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)


def _temporary_name(name: str) -> str:
    # os.urandom, as secrets.token_hex uses (whose import, random and all, cost ~2 ms per command)
    return f".{name}.smbring-{os.urandom(4).hex()}.part"


def _basename(remote: str) -> str:
    path = smb_path(remote)
    return path.rsplit("\\", 1)[-1] if path else ""


async def get(client, remote: str, local: str, progress=None) -> str:
    """Downloads a remote file or directory tree to `local` (into it, when it is an existing
    directory and the remote is a file); returns the local path written."""
    st = await client.stat(remote)
    name = _basename(remote)
    if st.is_dir:
        if os.path.lexists(local):
            raise FileExistsError(f"{local} exists; a directory is downloaded to a new name")
        parent = os.path.dirname(os.path.abspath(local))
        staging = os.path.join(parent, _temporary_name(os.path.basename(os.path.abspath(local))))
        os.mkdir(staging, 0o700)
        walk = _Walk(client.limits)
        try:
            try:
                await _get_tree(client, smb_path(remote), staging, walk, 0, progress)
                await walk.downloads.finish()
            except BaseException as e:
                await walk.downloads.end(e)     # (nothing may write into what is removed)
                raise
            # the tree's files on disk before it is presented: one sync of the file system
            # for them all (an fsync each made a journal commit each, and the next file's
            # creation waited for it)
            await asyncio.get_running_loop().run_in_executor(None, _sync_file_system, staging)
            os.chmod(staging, 0o755)
            os.rename(staging, local)
        except BaseException:
            import shutil       # only here: it imports bz2, lzma... (about 7 ms per command)
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return local
    if os.path.isdir(local):
        if not name:
            raise ValueError("the share root is a directory")
        local = os.path.join(local, name)
    _refuse_special(local)
    if progress is not None:
        progress.expect(st.size)
    await _get_file(client, remote, local, st.size, progress)
    return local


def _refuse_special(local: str) -> None:
    """A download replaces its destination with a complete file renamed over it: over a
    device, a FIFO or a socket (`/dev/null` given to throw the data away) that would put a
    regular file in its place, for every program that uses it. Refused before anything is
    read. (A symbolic link is replaced, never followed.)"""
    try:
        mode = os.lstat(local).st_mode
    except FileNotFoundError:
        return
    if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
        raise OSError(errno.EINVAL, "not a regular file: a download would replace it", local)


class _Walk:
    """What a get of a tree has made so far, against the client's limits: a server could
    list new files and directories for ever; and its small files' downloads under way."""

    __slots__ = ("limits", "files", "directories", "downloads")

    def __init__(self, limits):
        self.limits = limits
        self.files = self.directories = 0
        self.downloads = _Transfers(TREE_FILES_IN_FLIGHT)

    def count(self, entry, remote: str) -> None:
        """Counts one entry listed in `remote`; LimitExceeded past a limit."""
        if entry.is_dir:
            self.directories += 1
            if self.directories > self.limits.directories:
                raise LimitExceeded(f"the tree has more than {self.limits.directories:,} "
                                    f"directories (at {remote!r})", "directories",
                                    self.limits.directories)
        else:
            self.files += 1
            if self.files > self.limits.files:
                raise LimitExceeded(f"the tree has more than {self.limits.files:,} files "
                                    f"(at {remote!r})", "files", self.limits.files)


async def _get_tree(client, remote: str, local_dir: str, walk: _Walk, depth: int,
                    progress=None) -> None:
    if depth >= walk.limits.depth:
        raise LimitExceeded(f"{remote!r} nests deeper than {walk.limits.depth} directories",
                            "depth", walk.limits.depth)
    # streamed: memory stays bounded however many names the server lists; closed here
    # (aclosing) whatever ends the walk (a full disk, a lie), while the session is still up:
    # left to the garbage collector, the listing's CLOSE ran after the logoff and failed
    # unseen ("Task exception was never retrieved")
    async with contextlib.aclosing(client.listdir(remote)) as listing:
        async for entry in listing:
            await _get_entry(client, remote, local_dir, walk, depth, progress, entry)


async def _get_entry(client, remote: str, local_dir: str, walk: _Walk, depth: int, progress,
                     entry) -> None:
    check_listed_name(entry.name)     # listdir did; a later caller must never skip it
    target = os.path.join(local_dir, entry.name)
    # and whatever the name check missed, the path must stay inside the staging directory
    if os.path.dirname(os.path.abspath(target)) != os.path.abspath(local_dir):
        raise ProtocolError(f"the listed name {entry.name!r} leads outside {local_dir!r}: "
                            f"refused")
    child = f"{remote}\\{entry.name}" if remote else entry.name
    # the staging directory was empty: a name there already was listed before
    if os.path.lexists(target):
        raise ProtocolError(f"the server listed the name {entry.name!r} twice in {remote!r}: "
                            f"refused")
    walk.count(entry, remote)
    if entry.is_dir:
        os.mkdir(target, 0o755)
        await _get_tree(client, child, target, walk, depth + 1, progress)
    else:
        # inside the staging directory: nothing is presented until the whole tree is there
        if progress is not None:
            progress.expect(entry.size)
        if _in_one_compound(entry.size, client.read_size):        # one READ: beside the others
            await walk.downloads.start(_download_small(client, child, target, entry.size, progress))
        elif entry.size <= client.read_size:
            await walk.downloads.start(_download(client, child, target, progress, sync=False))
        else:                                   # pipelined on its own
            await _download(client, child, target, progress, sync=False)


class _Transfers:
    """Downloads or uploads run beside each other, at most `limit` at once. The first to fail
    fails the next `start` or `finish` (with its own exception); after a failure, `end` sees
    every other one ended."""

    __slots__ = ("limit", "_running")

    def __init__(self, limit: int):
        self.limit = limit
        self._running: set[asyncio.Task] = set()

    async def start(self, transfer) -> None:
        """Starts `transfer` (a coroutine) once fewer than `limit` run."""
        try:
            while len(self._running) >= self.limit:
                await self._one_ended(asyncio.FIRST_COMPLETED)
        except BaseException:
            transfer.close()        # (never started: no "never awaited" warning)
            raise
        self._running.add(asyncio.ensure_future(transfer))

    async def finish(self) -> None:
        """Waits for every transfer; raises the first failure."""
        while self._running:
            await self._one_ended(asyncio.FIRST_EXCEPTION)

    async def _one_ended(self, when) -> None:
        done, self._running = await asyncio.wait(self._running, return_when=when)
        failed = _failures(done)
        if failed:
            raise failed[0]

    async def end(self, error: BaseException | None) -> None:
        """Once the walk has ended with `error` (None: it has not failed), every transfer has
        ended when this returns. After a failure, those still running (small files: a few
        round trips each, each bounded by the client's timeout) are let end on their own:
        one cancelled halfway could leave its file open on the server, which a clean-up
        could then not remove. Where the walk was cancelled (or is while it waits), they are
        cancelled. Their failures, after the one raised, are that lie or loss seen again:
        dropped."""
        try:
            if self._running and not isinstance(error, (asyncio.CancelledError, KeyboardInterrupt)):
                await asyncio.wait(self._running)
        finally:
            for task in self._running:
                task.cancel()
            if self._running:
                await asyncio.wait(self._running)
                _failures(self._running)
            self._running = set()


def _failures(tasks) -> list[BaseException]:
    """The exceptions of ended tasks (each looked at, so that none is reported as never
    retrieved), in no particular order; cancelled ones are not failures."""
    return [task.exception() for task in tasks if not task.cancelled() and task.exception() is not None]


async def _get_file(client, remote: str, local: str, size: int, progress=None) -> None:
    """`size`: what a stat said just before (a file one READ holds goes in one compound)."""
    directory = os.path.dirname(os.path.abspath(local))
    temporary = os.path.join(directory, _temporary_name(os.path.basename(local)))
    try:
        if _in_one_compound(size, client.read_size):
            await _download_small(client, remote, temporary, size, progress, sync=True)
        else:
            await _download(client, remote, temporary, progress)
        os.replace(temporary, local)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise


def _write_all(fd: int, views: list[memoryview], offset: int) -> None:
    """pwritev until every byte is written (a short write goes on; a full disk raises)."""
    views = list(views)
    while views:
        n = os.pwritev(fd, views, offset)
        offset += n
        while views and n >= len(views[0]):
            n -= len(views[0])
            views.pop(0)
        if n:
            views[0] = views[0][n:]


class FileSink:
    """Received chunks -> a local file, written straight from the receive buffers (each chunk
    is a slice of the frame it came in: no copy in user space), up to BATCH chunks or
    BATCH_BYTES per writev.
    The writes go through the io_uring ring (smbring.uring) where there is one, else a
    thread: either way off the event loop, which goes on receiving while the disk writes.
    At most MAX_WRITING batches are being written at once (the frames they hold stay alive
    until then); `finish()` waits for the last.

    With `direct_fd` (the same file opened with O_DIRECT), page-aligned chunks (the receive
    pool lands READ data on a page) are written with direct I/O: the disk takes the data from
    the receive buffer, with no copy into the page cache (a download is synced before it is
    renamed anyway, so the cache would only have held it until then). The rest (the last
    partial page, data from a sealed response) goes through the page cache. Without it, and
    with `splice` allowed, READ data of unsigned, unsealed responses is spliced into `fd`."""

    BATCH = 8                  # chunks per writev at most,
    BATCH_BYTES = 8 << 20      # and bytes (a batch goes once either is reached)
    MAX_WRITING = 2

    def __init__(self, fd: int, progress=None, direct_fd: int | None = None, splice: bool = True,
                 allocation: "_Allocation | None" = None):
        self.fd, self.progress, self.direct_fd = fd, progress, direct_fd
        self.allocation = allocation    # blocks allocated ahead of the data, as it comes
        # READ data may also be spliced into the file (RemoteFile.read_to): where there is no
        # direct I/O, splicing saves the copy from the socket at least
        self.splice_fd = fd if splice and direct_fd is None else None
        self.direct_bytes = 0      # bytes written with O_DIRECT (diagnostics)
        self._batch_fd = fd
        self._views: list[memoryview] = []
        self._offset = 0           # where the batch starts in the file
        self._batched = 0          # its bytes
        self._writing: list[_Batch] = []
        self._ring = _ring()        # (None: a thread writes)

    def __call__(self, offset: int, data):
        """Takes one chunk; returns an awaitable when the caller must wait for the disk."""
        if isinstance(data, Spliced):         # already in the file
            if self.progress is not None:
                self.progress.advance(len(data))
            return None
        if self.allocation is not None:
            self.allocation.cover(offset + len(data))
        fd = self.fd
        if self.direct_fd is not None and not offset % ALIGN and aligned(data):
            fd = self.direct_fd
        if self._views and (offset != self._offset + self._batched or fd != self._batch_fd):
            self._submit()
        if not self._views:
            self._offset, self._batch_fd = offset, fd
        self._views.append(memoryview(data))
        self._batched += len(data)
        if len(self._views) >= self.BATCH or self._batched >= self.BATCH_BYTES:
            self._submit()
            if len(self._writing) >= self.MAX_WRITING:
                return self._wait_oldest()
        return None

    def _submit(self) -> None:
        views, offset, size, fd = self._views, self._offset, self._batched, self._batch_fd
        self._views, self._batched = [], 0
        if self._ring is None:          # a thread writes
            task = asyncio.ensure_future(self._write_in_thread(views, offset, size, fd))
            self._writing.append(_Batch(task))
            return
        batch = _Batch(asyncio.get_running_loop().create_future())
        self._writing.append(batch)
        self._ring_write(batch, views, offset, size, fd)

    def _ring_write(self, batch: "_Batch", views, offset: int, size: int, fd: int) -> None:
        """Prepares the batch's writev on the ring and submits it at once. No task, no
        call_soon flush: the completion callback (run by the AsyncRing's eventfd reader)
        settles the batch's future, so a batch costs the event loop no turn of its own."""
        direct = fd == self.direct_fd

        def complete(req) -> None:
            nonlocal views
            if not req.done or batch.future.done():
                return
            res = req.res
            batch.request = None
            try:
                if res == -errno.EINVAL and direct:
                    # this file system takes no direct I/O after all: the page cache from now on
                    self.direct_fd = None
                    self._ring_write(batch, views, offset, size, self.fd)
                    return
                if res < 0:
                    raise OSError(-res, os.strerror(-res))
                if res < size:          # short: the rest the plain way (it raises ENOSPC)
                    _write_all(self.fd, _views_after(views, res), offset + res)
                if direct:
                    self.direct_bytes += size
                if self.progress is not None:
                    self.progress.advance(size)
            except Exception as e:      # the batch's waiter gets it (never the ring's dispatch)
                batch.future.set_exception(e)
            else:
                batch.future.set_result(None)
            # the receive buffers are free for the pool as soon as they are written, not only
            # once the batch's waiter has looked at it
            views = None

        ring = self._ring.ring
        batch.request = ring.writev(fd, views, offset, callback=complete)
        ring.submit()

    async def _write_in_thread(self, views, offset: int, size: int, fd: int) -> None:
        loop = asyncio.get_running_loop()
        if fd == self.direct_fd:
            try:
                await loop.run_in_executor(None, _write_all, fd, views, offset)
                self.direct_bytes += size
            except OSError as e:
                if e.errno != errno.EINVAL:
                    raise
                # this file system takes no direct I/O after all: the page cache from now on
                self.direct_fd = None
                await loop.run_in_executor(None, _write_all, self.fd, views, offset)
        else:
            await loop.run_in_executor(None, _write_all, fd, views, offset)
        if self.progress is not None:
            self.progress.advance(size)

    def _wait_oldest(self) -> asyncio.Future:
        return self._writing.pop(0).future

    async def finish(self) -> None:
        if self._views:
            self._submit()
        try:
            while self._writing:
                await self._wait_oldest()
        finally:
            for batch in self._writing:
                batch.cancel()
            tasks = [b.future for b in self._writing if isinstance(b.future, asyncio.Task)]
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)


class _Batch:
    """A FileSink write in progress: its future (a task where a thread writes), and its ring
    request (cancelled if the download ends first; the kernel lets go of the buffers then)."""

    __slots__ = ("future", "request")

    def __init__(self, future: asyncio.Future):
        self.future = future
        self.request = None

    def cancel(self) -> None:
        self.future.cancel()
        if self.request is not None:
            self.request.cancel()


def _views_after(views, n: int) -> list[memoryview]:
    """What is left of `views` after their first n bytes."""
    rest = []
    for v in views:
        if n >= len(v):
            n -= len(v)
            continue
        rest.append(v[n:])
        n = 0
    return rest


class FileSource:
    """A local file -> WRITE chunks. Where the WRITEs are neither signed nor sealed
    (`in_place`), each chunk is a FileRange that the channel sends with sendfile(2), from the
    page cache to the socket without a copy in user space. Otherwise each chunk is read with
    os.preadv into one of a few buffers that are used again once their WRITE is answered (the
    signature or the cipher is computed from there)."""

    def __init__(self, fd: int, chunk: int, progress=None, in_place: bool = False):
        self.fd, self.chunk, self.progress, self.in_place = fd, chunk, progress, in_place
        self._free: list[bytearray] = []

    def __call__(self, offset: int, n: int) -> memoryview | FileRange:
        if self.in_place:
            # as many bytes as the file still has: write_from refuses a short chunk before
            # anything is announced (the file shrank); sendfile itself checks again
            # (the size from lseek: an fstat per WRITE made a stat_result of 19 fields, about
            # five times the instructions; the descriptor's position is not used, sendfile
            # takes its offset)
            end = os.lseek(self.fd, 0, os.SEEK_END)
            return FileRange(self.fd, offset, max(0, min(n, end - offset)))
        buf = self._free.pop() if self._free else bytearray(self.chunk)
        view = memoryview(buf)[:n]
        got = 0
        while got < n:
            read = os.preadv(self.fd, [view[got:]], offset + got)
            if not read:
                break              # the file shrank: write_from reports the short chunk
            got += read
        return view[:got]

    def done(self, chunk: memoryview | FileRange) -> None:
        if self.progress is not None:
            self.progress.advance(len(chunk))
        if isinstance(chunk, memoryview):
            self._free.append(chunk.obj)


async def _download(client, remote: str, local: str, progress=None, sync: bool = True) -> None:
    """remote -> a new local file (O_EXCL, never following a link), byte for byte. The remote
    file is opened first: a name the server refuses creates nothing here. `sync`: on disk
    before it returns (a tree's files: its file system synced once at the end instead)."""
    async with await RemoteFile.open(client, remote, "r") as f:
        size = f.size_at_open
        fd = _new_local_file(local)
        direct_fd = _reopen_direct(fd) if client.direct and size >= DIRECT_MIN else None
        try:
            allocation = _Allocation(fd, size) if direct_fd is not None else None
            sink = FileSink(fd, progress, direct_fd, splice=client.splice, allocation=allocation)
            try:
                # READs of read_size: fewer requests, less CPU per byte on both ends
                got = await f.read_to(0, size, sink, exact=True, chunk_size=client.read_size,
                                      depth=client.read_depth)
            finally:
                await sink.finish()
                client.direct_bytes += sink.direct_bytes
            if got != size:
                raise ProtocolError(f"{remote!r}: {got} bytes arrived, the server announced {size}")
            os.ftruncate(fd, size)
            if sync:
                await _synced(fd)
        finally:
            if direct_fd is not None:
                os.close(direct_fd)
            os.close(fd)


async def _download_small(client, remote: str, local: str, listed: int, progress=None,
                          sync: bool = False) -> None:
    """A file that its listing (or a stat) says one READ holds: its CREATE, READ and CLOSE
    sent together (one round trip, not three), then written to a new local file as
    _download writes one (O_EXCL, never through a link; `sync`: on disk before it returns,
    else synced with the rest of its tree). A file grown past that READ since it was listed
    is fetched the usual way."""
    access, disposition, _append = parse_mode("r")
    asked = max(listed, 1)          # (an empty file's READ answers END_OF_FILE)
    created, read, _closed = await client.at_once(
        remote, access, disposition, wire.FILE_NON_DIRECTORY_FILE,
        middle=(wire.READ, m.read_request(m.NO_FILE, 0, asked), asked, f"read {remote!r}",
                (wire.STATUS_SUCCESS, wire.STATUS_END_OF_FILE)))
    size = created.size
    if size > asked:
        await _download(client, remote, local, progress, sync=sync)
        return
    data = m.parse_read(read.message, asked) if read.status == wire.STATUS_SUCCESS else memoryview(b"")
    if len(data) != size:
        raise ProtocolError(f"{remote!r}: {'short read: ' if len(data) < size else ''}{len(data)} "
                            f"bytes arrived, the server announced {size}")
    fd = _new_local_file(local)
    try:
        _write_all(fd, [data], 0)
        if sync:
            await _synced(fd)
    finally:
        os.close(fd)
    if progress is not None:
        progress.advance(size)


async def _synced(fd: int) -> None:
    """fsync(fd), on the ring where there is one (else in a thread): the event loop goes on
    meanwhile, with the other downloads of a tree."""
    ring = _ring()
    if ring is None:
        await asyncio.get_running_loop().run_in_executor(None, os.fsync, fd)
    else:
        await ring.fsync(fd)


def _ring():
    """The running loop's ring (smbring.uring.aio.AsyncRing), or None where io_uring cannot
    be used (the kernel, seccomp)."""
    try:
        from smbring.uring import aio
        return aio.get_ring()
    except Exception:
        return None


def _sync_file_system(path: str) -> None:
    """Everything written to the file system that holds `path` on disk (syncfs(2); sync(2)
    where there is no syncfs)."""
    import ctypes           # here only: a single file's get does without it
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        syncfs = getattr(ctypes.CDLL(None, use_errno=True), "syncfs", None)
        if syncfs is None:
            os.sync()
        elif syncfs(fd) != 0:
            raise OSError(ctypes.get_errno(), "syncfs failed", path)
    finally:
        os.close(fd)


class _Allocation:
    """A download's blocks, allocated before its data is written (fallocate(2), the system call
    itself: never glibc's emulation, which writes zeros). On ext4 an O_DIRECT write that
    extends a file, or fills a hole, takes the inode's lock for itself and is handed to a
    worker thread, so the downloads' writes went to disk one at a time; into allocated blocks
    inside the file's size they run side by side.

    Allocated ahead of the data only so far: up to PREALLOCATE_AHEAD bytes past what has
    arrived, extended by as much again each time the data gets within half of it of the end
    (a few fallocate calls per GiB), never past the size announced. A server announces the
    size before it sends anything: the whole of it at once would let a hostile one take a
    disk's free space, for as long as it keeps the download going, without sending it.
    Best effort: where the file system cannot, or the disk has no room, nothing more is asked
    and the writes allocate as they go (a full disk then fails the write)."""

    __slots__ = ("fd", "size", "end", "_fallocate")

    def __init__(self, fd: int, size: int):
        self.fd, self.size, self.end = fd, size, 0
        self._fallocate = _fallocate_call() if size > 0 else None
        self.cover(0)

    def cover(self, upto: int) -> None:
        """Blocks allocated well past `upto`, the end of the data that has arrived."""
        if self._fallocate is None or upto + PREALLOCATE_AHEAD // 2 <= self.end:
            return
        end = min(self.size, upto + PREALLOCATE_AHEAD)
        if end > self.end and self._fallocate(self.fd, 0, self.end, end - self.end) == 0:
            self.end = end
        else:           # refused (no room, no support) or all allocated: nothing more to ask
            self._fallocate = None


def _fallocate_call():
    """libc's fallocate(fd, mode, offset, length), or None where there is none."""
    import ctypes           # here only: ls and put do without it
    try:
        fallocate = ctypes.CDLL(None, use_errno=True).fallocate
    except (OSError, AttributeError):
        return None
    fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    return fallocate


def _reopen_direct(fd: int) -> int | None:
    """The file open as fd, opened again for O_DIRECT writes (through /proc/self/fd: the same
    file, whatever its name leads to now); None where the file system refuses direct I/O."""
    try:
        return os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_DIRECT | os.O_CLOEXEC)
    except (OSError, AttributeError):
        return None


async def put(client, local: str, remote: str, progress=None) -> str:
    """Uploads a local file or directory tree to `remote` (into it, when it names an existing
    directory or ends with a separator); returns the remote path written. A tree is uploaded
    into a temporary directory on the share and renamed into place as a whole; it must not
    exist there yet."""
    name = os.path.basename(os.path.normpath(local))
    target = smb_path(remote)
    absent = False          # the target was looked up, and is not there
    if remote.endswith(("/", "\\")) or not target:
        target = f"{target}\\{name}" if target else name
    else:
        try:
            if (await client.stat(target)).is_dir:
                target = f"{target}\\{name}"
        except FileNotFoundError:
            absent = True
    directory, _, base = target.rpartition("\\")
    temporary = f"{directory}\\{_temporary_name(base)}" if directory else _temporary_name(base)
    if os.path.isdir(local) and not os.path.islink(local):
        return await _put_tree(client, local, target, temporary, progress, absent)
    with open(local, "rb") as source:
        if progress is not None:
            progress.expect(os.fstat(source.fileno()).st_size)
        try:
            await _upload(client, source.fileno(), temporary, progress)
            await client.rename(temporary, target, replace=True)
        except BaseException:
            try:
                await client.remove(temporary)
            except (OSError, ConnectionError):
                pass
            raise
    return target.replace("\\", "/")


async def _upload(client, fd: int, remote: str, progress=None) -> None:
    """A local file (open, fd) -> a new remote file, its size checked at the end."""
    size = os.fstat(fd).st_size
    if _in_one_compound(size, client.write_size):
        await _upload_small(client, fd, remote, size, progress)
        return
    try:        # read ahead further (only a file not in the page cache yet gains anything)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
    except (OSError, AttributeError):
        pass
    async with await RemoteFile.open(client, remote, "x") as f:
        in_place = not (client.keys.sign or client.keys.encrypt)
        source = FileSource(fd, client.io_size, progress, in_place=in_place)
        if in_place:
            # sendfile needs no buffer of ours: WRITEs as large as the server takes (fewer
            # requests: less CPU on both sides), as many bytes in flight as io_size x depth
            await f.write_from(0, size, source, source.done, chunk_size=client.write_size,
                               depth=client.write_depth)
        else:
            await f.write_from(0, size, source, source.done)
        _check_size_on_server(remote, (await f.stat()).size, size)


async def _upload_small(client, fd: int, remote: str, size: int, progress=None) -> None:
    """A local file one WRITE holds -> a new remote file: its CREATE, WRITE and CLOSE (asking
    for the file's attributes after it) sent together, one round trip instead of four (the
    size was asked apart); the size the CLOSE reports checked."""
    data = os.pread(fd, size + 1, 0)
    if len(data) != size:
        raise OSError(errno.EIO, f"the local file changed size during the upload to {remote!r}")
    access, disposition, _append = parse_mode("x")
    write = (wire.WRITE, m.write_request_head(m.NO_FILE, 0, size) + data, size, f"write {remote!r}",
             (wire.STATUS_SUCCESS,)) if size else None
    _created, written, closed = await client.at_once(remote, access, disposition,
                                                     wire.FILE_NON_DIRECTORY_FILE, middle=write,
                                                     close_flags=wire.CLOSE_FLAG_POSTQUERY_ATTRIB)
    count = m.parse_write(written.message) if written is not None else 0
    if count != size:
        raise ProtocolError(f"WRITE of {size} bytes at offset 0 of {remote!r}: the server says "
                            f"it wrote {count}")
    on_server = m.parse_close_size(closed.message)
    if on_server is None:
        on_server = (await client.stat(remote)).size
    _check_size_on_server(remote, on_server, size)
    if progress is not None:
        progress.advance(size)


def _check_size_on_server(remote: str, on_server: int, size: int) -> None:
    """An upload's file must be as large on the server as the bytes written."""
    if on_server != size:
        raise ProtocolError(f"{remote!r} is {on_server} bytes on the server after writing {size}")


# characters a name on the share cannot hold: "\" separates paths there, ":" names a stream
# (a file "a:b" would become stream b of file a), the rest Windows refuses in names
_UNSHAREABLE = set('\\:*?"<>|') | {chr(c) for c in range(32)}


def check_local_name(name: str, where: str) -> None:
    """A local name that would mean something else on the share is refused, before anything
    is uploaded: a separator or a stream, a character Windows refuses, bytes that are not
    text (they cannot be encoded in UTF-16)."""
    bad = sorted(set(name) & _UNSHAREABLE)
    if bad or name in (".", ".."):
        raise ValueError(f"{where}: the name {name!r} cannot be uploaded (it holds "
                         f"{''.join(bad)!r}, which the share would read as a path, a stream or "
                         f"an invalid name)")
    try:
        name.encode("utf-16-le")
    except UnicodeEncodeError:
        raise ValueError(f"{where}: the name {name.encode('utf-8', 'surrogateescape')!r} is not "
                         f"valid text in this locale and cannot be named on the share") from None


def _local_tree(root: str) -> tuple[list[str], list[tuple[str, int]], int]:
    """(directories, files with their sizes, total bytes) under root, relative, parents first;
    symbolic links and special files are refused (a link could lead anywhere, a FIFO would
    never end)."""
    dirs, files, total = [], [], 0
    pending = [("", 0)]
    while pending:
        rel, depth = pending.pop()
        if depth >= MAX_DEPTH:
            raise ValueError(f"{os.path.join(root, rel)} nests deeper than {MAX_DEPTH} directories")
        with os.scandir(os.path.join(root, rel)) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            path = os.path.join(rel, entry.name) if rel else entry.name
            check_local_name(entry.name, os.path.join(root, rel))
            if entry.is_symlink():
                raise ValueError(f"{os.path.join(root, path)} is a symbolic link: not uploaded "
                                 f"(links are not followed)")
            if entry.is_dir(follow_symlinks=False):
                dirs.append(path)
                pending.append((path, depth + 1))
            elif entry.is_file(follow_symlinks=False):
                size = entry.stat(follow_symlinks=False).st_size
                files.append((path, size))
                total += size
            else:
                raise ValueError(f"{os.path.join(root, path)} is not a regular file or directory")
    return dirs, files, total


async def _put_tree(client, local: str, target: str, temporary: str, progress,
                    absent: bool = False) -> str:
    """`absent`: put looked the target up already and found nothing there (else it is looked
    up here: a tree is never merged into an existing one; the rename into place refuses one
    made meanwhile)."""
    dirs, files, total = _local_tree(local)      # every name checked before anything is sent
    if not absent:
        try:
            await client.stat(target)
            raise FileExistsError(f"{target.replace(chr(92), '/')} exists on the share; a "
                                  f"directory is uploaded to a new name")
        except FileNotFoundError:
            pass
    if progress is not None:
        progress.expect(total)
    await client.mkdir(temporary)
    uploads = _Transfers(TREE_FILES_IN_FLIGHT)
    try:
        for rel in dirs:
            await client.mkdir(temporary + "\\" + rel.replace(os.sep, "\\"))
        for rel, size in files:
            upload = _upload_path(client, os.path.join(local, rel),
                                  temporary + "\\" + rel.replace(os.sep, "\\"), progress)
            if size <= client.write_size:       # one WRITE: beside the others
                await uploads.start(upload)
            else:                               # pipelined on its own
                await upload
        await uploads.finish()
        await client.rename(temporary, target, replace=False)
    except BaseException as e:
        await uploads.end(e)
        if client.connected:
            await remove_tree(client, temporary)
        raise
    return target.replace("\\", "/")


async def _upload_path(client, path: str, remote: str, progress) -> None:
    """The local file at `path` (never through a link) -> a new remote file."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        await _upload(client, fd, remote, progress)
    finally:
        os.close(fd)


async def remove_tree(client, remote: str, depth: int = 0) -> None:
    """Removes a directory tree on the share, best effort (a failed upload's temporary), at
    most MAX_DEPTH levels down (an upload makes no deeper one; a server that lists a new
    subdirectory at every level would otherwise be followed until the stack ran out)."""
    if depth >= MAX_DEPTH:
        return
    try:
        entries = [e async for e in client.listdir(remote)]
        for entry in entries:
            child = f"{remote}\\{entry.name}"
            if entry.is_dir:
                await remove_tree(client, child, depth + 1)
            else:
                await client.remove(child)
        await client.rmdir(remote)
    except (OSError, ConnectionError):
        pass
