"""What the protocol core hands the I/O layer: responses to send (their data possibly still
in a file) and file I/O a response waits for."""
from __future__ import annotations

import os
from dataclasses import dataclass

from smbring.datapath import FileRange
from smbring.vfs.modules import Posix


@dataclass
class FilePayload:
    """A READ response body whose data is still in the file: the I/O layer moves it (copy,
    splice or zero-copy) unless the response must be signed, when it is read into memory."""

    prefix: bytes
    range: FileRange
    splice_safe: bool = False       # no open of the file may write to it (see datapath)
    read_path: str | None = None    # the share's read path

    def materialize(self) -> bytes:
        data = os.pread(self.range.fd, self.range.length, self.range.offset)
        return self.prefix + data.ljust(self.range.length, b"\0")


@dataclass
class FileIO:
    """File I/O a response waits for (WRITE's payload, FLUSH's fsync), described here and done
    by the I/O layer with the share's VFS module; `done(result)` then builds the response
    body. Without an I/O layer (or inside a compound) it runs inline through posix calls."""

    op: str                      # "write" | "fsync"
    fd: int
    offset: int = 0
    data: memoryview | None = None
    io: object = None            # the share's VFS module stack
    done: object = None          # result -> response body

    async def run(self) -> int:
        if self.io is None:
            return self.run_sync()
        if self.op == "write":
            return await self.io.pwrite_all(self.fd, self.data, self.offset)
        await self.io.fsync(self.fd)
        return 0

    def run_sync(self) -> int:
        if self.op == "write":
            return Posix.pwrite_all_sync(self.fd, self.data, self.offset)
        os.fsync(self.fd)
        return 0


class Deferred:
    """What handle_frame returns for a lone request that waits for file I/O: the I/O layer
    awaits `io.run()` and sends `finish(result or OSError)`."""

    def __init__(self, io: FileIO, finish):
        self.io, self.finish = io, finish
