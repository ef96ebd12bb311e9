"""Hints between the worker processes of one server (``smbring serve --workers N``): one
Unix datagram socket per worker, ``wake-<worker>`` in the shared store's directory (a fresh
directory of mode 0700 in the server's run directory, see server.workers.store_directory),
bound with mode 0600: only the server's user (or root) can write to it.

The shared store holds every oplock and lease; a message only tells a worker to look at it
again: "a CREATE waiting on file X may go on" (WAKE), "every CREATE waiting may try again"
(WAKE_ALL: the supervisor, once a dead worker's entries are gone), "tell your client its
oplock on open X breaks to level L" (OPLOCK_BREAK), "tell your client its lease breaks from
S to T" (LEASE_BREAK), "a CREATE here waits for your detached durable open X of file F to be
closed" (CLOSE_DETACHED), "directory F is now to be deleted: end the change notifies waiting
on it" (DELETE_PENDING; a worker's watches are its own, and nothing on disk changes until the
last open closes, so inotify cannot tell it), "the file F you have open was renamed: its
new name is in the store" (RENAMED). The receiver checks each against the store
before acting on it (see server.shared_oplocks); a message is never the only way something
happens (waiting requests are retried on a timer too), so a lost one only delays (a lost
DELETE_PENDING leaves the change notifies waiting until the directory is deleted or their
handle closes).

Every message has a fixed size per kind and is dropped unless it has exactly that size, the
magic, a known kind and valid fields: a malformed one is logged (at most once a minute) and
costs nothing else. A send never blocks: a worker that is gone or whose queue is full misses
the hint (its waiting requests poll).
"""
from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
import struct
import time
from dataclasses import dataclass

log = logging.getLogger("smbring.server")

MAGIC = b"SRW1"
HEADER = struct.Struct(">4sB")
WAKE, WAKE_ALL, OPLOCK_BREAK, LEASE_BREAK, CLOSE_DETACHED, DELETE_PENDING, RENAMED = 1, 2, 3, 4, 5, 6, 7
FILE = struct.Struct(">QQ")                       # st_dev, st_ino
BODIES = {
    WAKE: struct.Struct(">QQ"),
    WAKE_ALL: struct.Struct(">"),
    OPLOCK_BREAK: struct.Struct(">QQQB"),         # file, open id, level (0 or 1)
    LEASE_BREAK: struct.Struct(">QQ16s16sBBBH"),  # file, ClientGuid, LeaseKey, old, new, ack, epoch
    CLOSE_DETACHED: struct.Struct(">QQQ"),        # file, open id
    DELETE_PENDING: struct.Struct(">QQ"),         # the directory
    RENAMED: struct.Struct(">QQ"),                # the file
}
MAX_MESSAGE = HEADER.size + max(b.size for b in BODIES.values())
CACHING_BITS = 0x7                                # READ | HANDLE | WRITE
BAD_MESSAGE_LOG_EVERY = 60.0


@dataclass(frozen=True)
class Message:
    kind: int
    file: tuple | None = None
    open_id: int = 0
    level: int = 0
    client_guid: bytes = b""
    lease_key: bytes = b""
    old: int = 0
    new: int = 0
    ack: bool = False
    epoch: int = 0


def encode(m: Message) -> bytes:
    head = HEADER.pack(MAGIC, m.kind)
    body = BODIES[m.kind]
    if m.kind in (WAKE, DELETE_PENDING, RENAMED):
        return head + body.pack(*m.file)
    if m.kind == WAKE_ALL:
        return head
    if m.kind == OPLOCK_BREAK:
        return head + body.pack(*m.file, m.open_id, m.level)
    if m.kind == CLOSE_DETACHED:
        return head + body.pack(*m.file, m.open_id)
    return head + body.pack(*m.file, m.client_guid, m.lease_key, m.old, m.new, int(m.ack), m.epoch)


def decode(data: bytes) -> Message | None:
    """The message, or None where it is not exactly a valid one."""
    if len(data) < HEADER.size:
        return None
    magic, kind = HEADER.unpack_from(data)
    body = BODIES.get(kind)
    if magic != MAGIC or body is None or len(data) != HEADER.size + body.size:
        return None
    fields = body.unpack_from(data, HEADER.size)
    if kind in (WAKE, DELETE_PENDING, RENAMED):
        return Message(kind, file=fields)
    if kind == WAKE_ALL:
        return Message(WAKE_ALL)
    if kind == OPLOCK_BREAK:
        dev, ino, open_id, level = fields
        if level not in (0, 1):        # an oplock breaks to none or level II
            return None
        return Message(OPLOCK_BREAK, file=(dev, ino), open_id=open_id, level=level)
    if kind == CLOSE_DETACHED:
        dev, ino, open_id = fields
        return Message(CLOSE_DETACHED, file=(dev, ino), open_id=open_id)
    dev, ino, guid, key, old, new, ack, epoch = fields
    if old & ~CACHING_BITS or new & ~CACHING_BITS or new & ~old or new == old or ack not in (0, 1):
        return None
    return Message(LEASE_BREAK, file=(dev, ino), client_guid=guid, lease_key=key, old=old,
                   new=new, ack=bool(ack), epoch=epoch)


def socket_path(directory: str, worker: int) -> str:
    return os.path.join(directory, f"wake-{worker}")


def sender() -> socket.socket:
    """An unbound socket for sending only (the supervisor's)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
    return s


def send(sock: socket.socket, directory: str, worker: int, message: Message) -> bool:
    """Sends without waiting; False when the worker is not there or its queue is full."""
    try:
        sock.sendto(encode(message), socket_path(directory, worker))
        return True
    except OSError:     # (ENOENT, ECONNREFUSED: gone or restarting; EAGAIN: its queue is full)
        return False


def bind_worker_socket(path: str, kind: int) -> socket.socket:
    """A Unix socket of a worker's slot, bound at `path` with mode 0600 (no moment with a wider
    one), non-blocking; a socket left there by the slot's dead predecessor is replaced,
    anything else at the path is refused (OSError)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise OSError(f"{path}: exists and is not a socket")
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, kind | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
    old_umask = os.umask(0o177)
    try:
        sock.bind(path)
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    return sock


class Channel:
    """A worker's own socket: bound at its start (a dead predecessor's is replaced), read by
    the worker's event loop once `start` is called."""

    def __init__(self, directory: str, worker: int, as_server=None):
        self.directory = directory
        self.worker = worker
        # a context in which the thread acts as the server: a send names a socket in the
        # server's 0700 directory, and the event loop's thread may be acting as a user (a
        # CREATE of the user's asks for the break), who cannot reach it
        self.as_server = as_server or contextlib.nullcontext
        self.path = socket_path(directory, worker)
        self.sock = bind_worker_socket(self.path, socket.SOCK_DGRAM)
        self._loop = None
        self._handler = None
        self._bad = 0
        self._bad_logged = 0.0

    def send(self, worker: int, message: Message) -> bool:
        with self.as_server():
            return send(self.sock, self.directory, worker, message)

    def start(self, loop, handler) -> None:
        """Messages go to handler(Message) from now on (once: later calls do nothing)."""
        if self._loop is not None:
            return
        self._loop, self._handler = loop, handler
        loop.add_reader(self.sock.fileno(), self._readable)

    def _readable(self) -> None:
        for _ in range(256):        # a bounded batch: the loop's other work goes on between
            try:
                data = self.sock.recv(MAX_MESSAGE + 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                log.warning("wake-up socket %s: %s", self.path, e)
                return
            message = decode(data)
            if message is None:
                self._bad += 1
                now = time.monotonic()
                if now - self._bad_logged >= BAD_MESSAGE_LOG_EVERY:
                    self._bad_logged = now
                    log.warning("wake-up socket %s: %d malformed messages dropped", self.path, self._bad)
                continue
            try:
                self._handler(message)
            except Exception:       # a hint that fails must not stop the worker
                log.exception("wake-up socket %s: a message could not be handled", self.path)

    def close(self) -> None:
        if self._loop is not None:
            try:
                self._loop.remove_reader(self.sock.fileno())
            except Exception:
                pass
        self.sock.close()
