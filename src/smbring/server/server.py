"""The asyncio SMB server: one task per connection, NetBIOS session framing, bounded frames.

Socket I/O goes through the io_uring engine's asyncio glue (``smbring.uring.aio``) and the
data paths of ``smbring.datapath``: requests are received with the ring, responses are sent as
send descriptors, so a READ's data can travel file -> socket without Python copying it. Where
io_uring is unavailable, the same loop runs on plain asyncio sockets.

Malformed framing or a protocol violation closes the connection; an error inside a command
becomes an NTSTATUS (see ``smb.connection``).

The server's own bounds (see ``smb.limits``): the connections in all and per client address,
counted at accept (one over either is closed at once); the frame size, asked of the connection
for every frame (small until a session is established); the handshake timeout and deadtime,
checked by one periodic sweep over all connections, which also lets idle connections drop
their large buffers. A shortage of descriptors or memory pauses accepting instead of ending
the server.
"""
from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import mmap
import os
import resource
import socket
import sys
import time

from smbring.datapath import DIRECT_SEND_MAX, FileMaps, FileRange, Receiver, Sender, SendDescriptor, read_costs
from smbring.server import handoff, interfaces
from smbring.server.activity import ServerAdministration
from smbring.server.accounts import Accounts, ServerAccount, map_name
from smbring.server.accounts import account as unix_account
from smbring.server.busy_poll import BusyPoll
from smbring.server.change_watcher import ChangeWatcher
from smbring.server.delivery import DeliveryWatch
from smbring.server.effects import WRITES_IN_FLIGHT, DescriptorHolds, EffectRunner
from smbring.server.frame_budget import ArrivingFrames, frame_time
from smbring.server.users import PasswordLookup
from smbring.smb.ntlmssp import AccountRefused
from smbring.smb import effects, hosts, wire
from smbring.smb.commands import tree as tree_commands
from smbring.smb.connection import Connection
from smbring.smb.limits import MAX_IO, Limits
from smbring.smb.rpc.services import ServerInfo
from smbring.smb.policy import Policy
from smbring.smb.server_state import ServerState
from smbring.smb.state import Share
from smbring.vfs import modules
from smbring.vfs.identity import ShareView, ThreadCredentials
from smbring.vfs.posix import PosixVFS

log = logging.getLogger("smbring.server")
SMB1_HEADER_SIZE = 32       # the smallest frame: an SMB1 NEGOTIATE (the core refuses short SMB2 ones)
MAX_FRAME = Limits.max_frame
# accept() errors that mean the process or the system is short of descriptors or memory: wait
# for some to be freed, accepting again after BACKOFF_FIRST seconds, doubling to BACKOFF_MOST
OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
# descriptors a server keeps for itself besides connections and opens (listeners, logs, the
# ring and its event descriptor, inotify, the shared store, the control socket, a worker's pipes)
OWN_DESCRIPTORS = 128
BACKOFF_FIRST, BACKOFF_MOST = 0.1, 1.0
# accept() errors of the connection being accepted, not of the listener (see accept(2))
NEXT_CONNECTION = {errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.EINTR, errno.ENETDOWN,
                   errno.ENOPROTOOPT, errno.EHOSTDOWN, errno.ENONET, errno.EHOSTUNREACH,
                   errno.EOPNOTSUPP, errno.ENETUNREACH}
LOG_EVERY = 60.0    # a message that may repeat (a refused address) is logged once a minute
STOP_PAUSE = 0.5    # stopping: a quiet connection whose client paused this long is closed
STOP_CLEANUP = 5.0  # stopping: how long the connections cut at the timeout may take to clean up
# another worker's reconnect waits this long for a durable open still attached here to be let
# go by the connection its client left: well under the asker's wait for any answer
HELD_WAIT = 0.75 * handoff.ANSWER_TIMEOUT
# such waits under way at once: each holds one of the few hand-off slots (handoff.MAX_IN_FLIGHT)
# that every user's connections and reconnects share, so a client repeating reconnects that
# name its own attached opens cannot fill them
MAX_HELD_RECLAIMS = handoff.MAX_IN_FLIGHT // 2


def describe_address(address) -> str:
    """host:port, [v6]:port, or a Unix socket's path."""
    if isinstance(address, tuple):
        host, port = address[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return str(address)

class FrameBuffers:
    """Page-aligned buffers for large frames (WRITEs, mostly), reused once nothing views them.
    A fresh 8 MiB bytearray per WRITE is zero-filled, and on a VM whose host takes freed
    memory back its pages fault in again; a reused buffer is warm. A frame is placed so that
    a WRITE's payload (`smb.wire.WRITE_DATA_OFFSET`, after the SMB2 header and the WRITE
    request) starts on a page:
    `direct_writes` can then hand it to O_DIRECT as it is."""

    LARGE = 1 << 20
    SKEW = (mmap.PAGESIZE - wire.WRITE_DATA_OFFSET) % mmap.PAGESIZE
    KEPT = WRITES_IN_FLIGHT + 2     # the frames in flight, the one arriving, one spare
    IDLE = 5.0                      # seconds without a large frame before the buffers go

    def __init__(self):
        self._bufs: list[mmap.mmap] = []
        self._last_large = 0.0

    def frame(self, n: int) -> memoryview:
        if n < self.LARGE or n + self.SKEW > MAX_FRAME + mmap.PAGESIZE:
            return memoryview(bytearray(n))
        self._last_large = time.monotonic()
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

    def release_idle(self) -> None:
        """Unmaps the buffers nothing views once no large frame came for IDLE seconds: a
        thousand idle connections should not keep 8 MiB each."""
        if not self._bufs or time.monotonic() - self._last_large < self.IDLE:
            return
        kept = []
        for buf in self._bufs:
            if sys.getrefcount(buf) == 3:      # the list, `buf`, getrefcount's argument
                buf.close()
            else:
                kept.append(buf)
        self._bufs = kept


class RingTransport:
    """Receives and sends on one socket through the engine."""

    def __init__(self, aring, sock: socket.socket, read_path: str, crowded=None, maps=None, costs=None):
        self.rx = Receiver(aring, sock)
        self.tx = Sender(aring, sock, read_path=read_path, max_payload=MAX_IO, crowded=crowded,
                         maps=maps, costs=costs)
        self.frames = FrameBuffers()
        # responses to a client's pipelined requests leave together (see Sender.send)
        self.tx.more_requests = self.rx.frame_waiting
        self.rx.before_wait = self.tx.flushing
        self.rx.holding = self.tx.holding
        # the ways that need no coroutine, for the connection's loop and its effects runner
        self.take_frame = self.rx.take_frame
        self.drained = self.rx.drained
        self.receive_now = self.rx.receive_now
        self.holding = self.tx.holding
        self.receive_more = self.rx.receive_more
        self.send_small = self.tx.send_small
        self.send_file_now = self.tx.send_file_now

    def serve_with(self, serve) -> None:
        """What answers the frames received while the connection waits (Receiver.serve)."""
        self.rx.serve = serve

    def frames_served_by(self, conn: Connection, runner: EffectRunner, link: "Link", on_served, answer,
                         send_later):
        """The receive buffer's serve_frames, answering with `conn` and carrying out with
        `runner` as Server.handle's `begin` does (`on_served(started)` after each frame, or
        None), the plain ECHOs at the head with `answer` (Connection.answer_echoes, or None)
        and, where their answers wait, `send_later(responses, flush_only)`; held by the
        buffer until it is closed."""
        self.rx.set_server(conn.handle_frame, runner.run_now, runner.flush_then, on_served, answer, send_later,
                           runner, self.tx, link, conn, check_frame_size, effects.Send, SMB1_HEADER_SIZE,
                           DIRECT_SEND_MAX)
        return self.rx.serve_frames

    async def recv_exact(self, n: int) -> memoryview:
        if n <= Receiver.BUFFER:        # a prefix, a small request: out of the receive buffer
            return await self.rx.recv_small(n)
        view = self.frames.frame(n)
        await self.rx.recv_exact(view)
        return view

    async def send(self, desc) -> None:
        await self.tx.send(desc)

    async def flush(self) -> None:
        await self.tx.flush()

    def flush_nowait(self) -> None:
        self.tx.flush_nowait()

    def release_idle(self) -> None:
        self.frames.release_idle()

    def revive_wait(self) -> None:
        self.rx.revive_wait()

    def close(self) -> None:
        self.rx.close()
        self.tx.close()


class PlainTransport:
    """The fallback: asyncio's own socket calls, file data read into memory."""

    take_frame = send_small = send_file_now = None     # (no ways without a coroutine: see RingTransport)

    def __init__(self, sock: socket.socket):
        self.loop = asyncio.get_running_loop()
        self.sock = sock

    async def recv_exact(self, n: int) -> memoryview:
        # asyncio reads what has arrived at once, without a turn of the loop: a client that
        # keeps its socket full would never let the other connections run
        await asyncio.sleep(0)
        view = memoryview(bytearray(n))
        await _receive_into(self.loop, self.sock, view, 0)
        return view

    def flush_nowait(self) -> None:
        pass            # nothing is held back

    async def send(self, desc) -> None:
        data = bytes(desc.header)
        if isinstance(desc.payload, FileRange):
            r = desc.payload
            buf = bytearray(r.length)            # zeros where the file is shorter now
            await r.io.pread_into(r.fd, memoryview(buf), r.offset)
            data += buf
        elif desc.payload is not None:
            data += bytes(desc.payload)
        await self.loop.sock_sendall(self.sock, data)

    def release_idle(self) -> None:
        pass            # no buffers kept between frames

    def revive_wait(self) -> None:
        pass            # (asyncio's own receives)

    def close(self) -> None:
        pass


class Link:
    """One client connection as the server keeps track of it: what its timeouts count from,
    whether a response is on its way, and a way to close it from outside its task."""

    def __init__(self, sock: socket.socket, conn: Connection, transport, now: float, peer=None):
        self.sock = sock
        self.conn = conn
        self.transport = transport
        self.peer = peer                        # the client's (address, port)
        self.connected_at = time.time()         # for status
        self.last_frame = now                   # when the last complete frame arrived
        self.not_logged_on_since: float | None = now  # accepted, or its last session ended
        self.sending = asyncio.Lock()           # one frame on the wire at a time
        self.closed_because: str | None = None
        self.busy = False                       # a frame is being received or answered
        self.frame_due: float | None = None     # a large frame arriving: the time it is due
        self.runner: EffectRunner | None = None
        self.client_guid: bytes | None = None   # counted in the server's routes (server.handoff)

    def quiet(self) -> bool:
        """Whether closing the connection now would cut nothing: no frame on its way in or
        out, no WRITE in flight, no open file, no request waiting (a graceful stop closes a
        connection once it is quiet)."""
        return (not self.busy and not self.sending.locked() and self.conn.idle_closable()
                and not (self.runner is not None and self.runner.writes))

    def close(self, reason: str) -> None:
        """Ends the connection: its task sees the end of the stream and cleans up."""
        self.closed_because = reason
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def check_frame_size(conn: Connection, size: int) -> None:
    """Refuses (ConnectionError) a frame of `size` bytes, its prefix not counted, that the
    connection does not take now: at most `conn.frame_limit()`, small until a session is
    established, and never shorter than the shortest message (pysmb's SMB1 NEGOTIATE: 58
    bytes)."""
    limits = conn.limits
    # a frame within both limits is taken whatever the logon state: no look at the sessions
    # (asked for every frame; the outcome is the same as below)
    if SMB1_HEADER_SIZE <= size <= limits.max_frame_unauthenticated and size <= limits.max_frame:
        return
    limit = conn.frame_limit()
    if size < SMB1_HEADER_SIZE or size > limit:
        raise ConnectionError(f"frame of {size} bytes refused (at most {limit} "
                              f"{'now' if conn.logged_on() else 'before logon'})")


class Throttle:
    """Logs a message about one key (a client address, say) at most once every `every`
    seconds, so that a client repeating what is refused cannot flood the log."""

    def __init__(self, every: float = LOG_EVERY):
        self.every = every
        self.last: dict = {}

    def due(self, key, now: float) -> bool:
        if now - self.last.get(key, -self.every) < self.every:
            return False
        if len(self.last) >= 4096:     # forget what is too old to matter
            self.last = {k: t for k, t in self.last.items() if now - t < self.every}
        self.last[key] = now
        return True


def raise_open_files_limit() -> int:
    """Raises the soft limit on open files to the hard limit, as smbd does: every connection
    and every open file holds a descriptor. Returns the limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard
    if hard == resource.RLIM_INFINITY:      # the kernel's own ceiling then
        try:
            with open("/proc/sys/fs/nr_open") as f:
                want = int(f.read())
        except (OSError, ValueError):
            want = soft
    if soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError) as e:
            log.warning("could not raise the open files limit from %d to %d: %s", soft, want, e)
    log.info("open files: %d at most (RLIMIT_NOFILE)", soft)
    return soft


def max_opens(open_files: int, limits: Limits) -> int:
    """The most files this process may hold open, all users together: its open files limit
    less what its connections (one socket each), the durable opens kept for a reconnect and
    its own files (listeners, logs, the ring, the store) need, so that a few users' opens never
    leave it unable to accept a connection or log on (smbd clamps `max open files` to its
    limit in the same way). At least half the limit, however low it is."""
    connections = limits.max_connections or 1024
    reserve = connections + limits.max_disconnected_durable + OWN_DESCRIPTORS
    return max(open_files - reserve, open_files // 2)


def sweep_period(limits: Limits) -> float:
    """How often the timeouts are checked: a quarter of the shortest, between 50 ms and 1 s
    (idle buffers are released on the same sweep)."""
    timeouts = [t for t in (limits.handshake_timeout, limits.deadtime * 60) if t > 0]
    return max(0.05, min([1.0] + [t / 4 for t in timeouts]))


class Server:
    def __init__(self, shares: dict[str, Share], *, passdb_path: str, allow_guest: bool = False,
                 signing_required: bool = False, read_path: str = "auto", use_uring: bool = True,
                 limits: Limits | None = None, ntlm_auth: str = "ntlmv2-only",
                 server_info: ServerInfo | None = None, policy: Policy | None = None,
                 hosts_allow=(), hosts_deny=(), username_map: str | None = None,
                 guest_account: str = "nobody", worker=None, busy_poll: int = 0):
        self.shares = shares
        # [global] security settings for the core, and `hosts allow`/`hosts deny` of
        # [global], checked when a connection is accepted
        self.policy = policy or Policy()
        self.hosts_allow, self.hosts_deny = tuple(hosts_allow), tuple(hosts_deny)
        self.lookup = PasswordLookup(passdb_path)   # one cached read for all connections
        # Samba's username map: applied before authentication (the mapped name's password is
        # checked), and as root to the account a session acts as
        self.username_map = username_map
        # who sessions act as: started as root, each its Unix account (the event loop's thread
        # switches its credentials for their file-system calls, see vfs.identity, and the
        # server's own work runs under creds.as_server); otherwise the server's own user
        if os.geteuid() == 0:
            self.creds: ThreadCredentials | None = ThreadCredentials()
            self.identities = Accounts(username_map, guest_account, as_server=self.creds.as_server)
        else:
            self.creds = None
            self.identities = ServerAccount(username_map)
        self._share_files: dict[tuple, PosixVFS] = {}   # (share directory, follow symlinks, snapshot) -> its files, opened by the server
        # the data paths' state, shared by every connection (see smbring.datapath): maps of
        # files (the fds are the process's), and what read path auto has measured
        self.file_maps = FileMaps()
        self.read_costs = read_costs()
        # descriptors that work in flight names: their closes wait for it (a number is the
        # process's: one for every connection, see server.effects.DescriptorHolds)
        self.holds = DescriptorHolds()
        self.allow_guest = allow_guest
        self.signing_required = signing_required
        self.read_path = read_path
        # `busy poll`: the loop keeps looking for requests after an answer (microseconds)
        self.busy_poll = BusyPoll(busy_poll)
        self.use_uring = use_uring
        self.limits = limits or Limits()
        self.open_files = 0         # the open files limit in force, once serving
        self.arriving = ArrivingFrames(self.limits.max_frame_memory << 20)
        self.ntlm_auth = ntlm_auth
        self.server_info = server_info    # what share listings say of the server
        # what srvsvc's administrators' calls see and do (sessions, tree connects, open files)
        self.administration = ServerAdministration(self)
        self.connections = 0
        self.per_address: dict[str, int] = {}
        self.links: set[Link] = set()
        self.throttle = Throttle()
        self._modules = None
        self._pool = None           # the threadpool module's threads (made with the stacks)
        # one worker of several (server.workers): what every worker must see is in the
        # shared store, connection bounds included
        self.worker = worker
        self.store = self.admissions = None
        # which worker serves which client, and the hand-off of connections between them
        self.routes = self.handoffs = None
        self.ports: set[int] = set()        # the ports listened on (a handed socket must be on one)
        backends = None
        if worker is not None:
            from smbring.server.handoff import ClientRoutes
            from smbring.server.shared_store import SharedConnections, Store
            self.store = Store(worker.store_directory, worker.worker)
            backends = worker.backends(self.store, as_server=self._as_server())
            self.admissions = SharedConnections(self.store)
        else:
            # the break timeout a test may shorten (SMBRING_BREAK_TIMEOUT), as each worker's
            from smbring.server.workers import break_timeout
            from smbring.smb.oplocks import BREAK_TIMEOUT, Oplocks
            from smbring.smb.server_state import Backends
            backends = Backends(oplocks=Oplocks(timeout=break_timeout(BREAK_TIMEOUT)))
        # opens, share modes, locks, watches: shared by all connections
        self.state = ServerState(backends=backends)
        if worker is not None:
            self.routes = ClientRoutes(self.store, holds=self.state.durable.holds_client)
            # another worker's CREATE closes this one's detached durable opens as one process does
            self.state.oplocks.close_detached_with(self.state.durable, self.file_maps.forget_file)
            # another worker set a directory's delete pending: the change notifies waiting on
            # this worker's opens of it end (STATUS_DELETE_PENDING) as one process ends them
            self.state.oplocks.delete_pending_with(self._directory_delete_pending)
            # another worker renamed a file this one has open: its opens take the new name
            self.state.oplocks.renamed_with(self.state.catch_up_renames)
            # what only another worker holds (a session a PreviousSessionId names, ...) is
            # asked of it over the hand-off sockets
            self.state.peers = handoff.Peers(self)
        self.stopping = False          # a graceful stop: no new connections, quiet ones close
        self.metrics = None            # a server.metrics.Metrics when metrics are on
        self.change_watcher: ChangeWatcher | None = None   # inotify, made when serving starts
        self._tasks: set[asyncio.Task] = set()    # one per connection
        # the Kerberos acceptor (server.kerberos.Kerberos), set by the service once its keytab
        # was checked; None: Kerberos not offered (NTLMSSP only)
        self.kerberos = None
        # the persistent FileIds another worker's reconnect waits on here (`_answer_reclaim`)
        self._held_reclaims: set[bytes] = set()

    def _directory_delete_pending(self, key: tuple) -> None:
        if self.state.is_delete_pending(key):
            self.state.watches.delete_pending(key)

    def _ring(self):
        """The loop's io_uring, or None where it is unavailable (then for good). A shortage of
        descriptors or memory is raised: it says nothing about io_uring."""
        if not self.use_uring:
            return None
        try:
            from smbring.uring import aio
            return aio.get_ring()
        except (ImportError, OSError) as e:
            if isinstance(e, OSError) and e.errno in OUT_OF_RESOURCES:
                raise
            log.warning("io_uring unavailable (%s): serving with plain asyncio sockets", e)
            self.use_uring = False
            return None

    def _io_modules(self) -> dict:
        """Each share's VFS module stack for file data (built once, on the running loop)."""
        if self._modules is None:
            aring = self._ring()
            self._pool = modules.thread_pool(     # (threads start only when a stack uses it)
                initializer=self.creds.server_thread if self.creds else None)
            self._modules = {name: modules.build(share.vfs_objects, aring,
                                                 crowded=lambda: self.connections > 1, pool=self._pool,
                                                 as_server=self._as_server(), owners=self._owners())
                             for name, share in self.shares.items()}
            for name, stack in self._modules.items():
                log.info("share %s: file data through %s", name, stack.describe())
        return self._modules

    @staticmethod
    def _serving_loop():
        """The running event loop, None outside one (a reload before serving started)."""
        try:
            return asyncio.get_running_loop()
        except RuntimeError:
            return None

    def _start_change_watcher(self) -> None:
        """Kernel watches for the directories clients watch (changes by other programs)."""
        if self.change_watcher is not None or not self.policy.kernel_change_notify:
            return
        try:
            self.change_watcher = ChangeWatcher(self.state, asyncio.get_running_loop(),
                                                as_server=self.creds.as_server if self.creds else None)
        except OSError as e:
            log.warning("change notify: inotify unavailable (%s): changes made by other programs "
                        "are not reported", e)

    # -- who a session acts as -----------------------------------------------------------------
    def _as_server(self):
        """What runs the server's own work as the server (None: not root, nothing to switch)."""
        return self.creds.as_server if self.creds else None

    def _owners(self):
        """Who each descriptor's data I/O runs as (see vfs.data_identity); None: not root."""
        return self.creds.data if self.creds else None

    def server_work(self, coro):
        """`coro` made to run each of its steps as the server: the server's own tasks (the
        service around it, accepting, timeouts, the control socket), which would otherwise
        resume as whichever user the event loop's thread acted as last."""
        return self.creds.server_steps(coro) if self.creds else coro

    def as_server(self):
        """A context for the server's own work (the thread stays the server's after it)."""
        return self.creds.as_server() if self.creds else contextlib.nullcontext()

    def server_moment(self):
        """A context for the server's work in the middle of a user's (a log record): as the
        server, then back to the user."""
        return self.creds.server_moment() if self.creds else contextlib.nullcontext()

    def server_thread(self) -> None:
        """Run first in every thread the server starts: a thread begins with the credentials
        of the one that started it, acting as some user perhaps."""
        if self.creds:
            self.creds.server_thread()

    def _lookup(self, name: str):
        """The NT hash of the account the client's name maps to (`username map`, as Samba
        maps before checking the password), from the password file, read as the server
        (whoever the event loop's thread acted as last)."""
        if self.creds is None:
            return self.lookup(map_name(self.username_map, name))
        with self.creds.as_server():
            return self.lookup(map_name(self.username_map, name))

    def kerberos_account(self, user: str) -> str | None:
        """The account a Kerberos principal's user part logs on as (server.kerberos): the name
        the username map gives it, as the password file spells it where the file holds it
        (AccountRefused where the file bars it: disabled, locked out), which must be a Unix
        account; None where there is none. Read as the server, as `_lookup` reads.

        A name the map leaves alone must be the account's name exactly: Kerberos names are
        case-sensitive, so in an MIT realm `Alice@REALM` is another principal than
        `alice@REALM`, perhaps another person's, and `alice/admin` another again (as MIT's
        default aname_to_lname rule, which maps only a one-component name to itself). Samba
        finds accounts without regard to case because Active Directory's names are so; a
        map line is the admin's way to join other names to an account, and its names are
        compared with the principal's exactly too (`alice = Alice` maps `Alice`, not
        `ALICE`)."""
        with self.creds.as_server() if self.creds is not None else contextlib.nullcontext():
            name = map_name(self.username_map, user, exact_case=True)
            held = self.lookup(name)
            if held is not None and held.barred is not None:
                raise AccountRefused(f"{name!r}: {held.barred.why}", held.barred.status)
            account = held.account if held is not None else name
            found = unix_account(account)
            if found is None:
                return None
            if name == user and found.name != user:
                return None
            return account if held is not None else found.name

    def _open_fs(self, share: Share, identity) -> ShareView:
        """The share's files as identity: a view of the share directory's one PosixVFS, whose
        root the server opened as itself when the directory was first reached."""
        where = (share.path, share.follow_symlinks, share.snapshot)
        base = self._share_files.get(where)
        if base is None:
            if self.creds is None:
                base = PosixVFS(share.path, share.follow_symlinks, share.snapshot)
            else:
                with self.creds.as_server():
                    base = PosixVFS(share.path, share.follow_symlinks, share.snapshot)
            self._share_files[where] = base
        return ShareView(base, identity, self.creds)

    def _transport(self, sock: socket.socket):
        aring = self._ring()
        if aring is None:
            return PlainTransport(sock)
        return RingTransport(aring, sock, self.read_path, crowded=lambda: self.connections > 1,
                             maps=self.file_maps, costs=self.read_costs)

    # -- connections in all and per client address ------------------------------------------
    def _refusal(self, address: str) -> str | None:
        """Why a new connection from address is refused, if it is."""
        if not hosts.allowed(self.hosts_allow, self.hosts_deny, address):
            return "not allowed (hosts allow / hosts deny)"
        limits = self.limits
        if self.admissions is not None:     # counted over all workers (then _admit counts here)
            return self.admissions.admit(address, limits.max_connections,
                                         limits.max_connections_per_address)
        if limits.max_connections and self.connections >= limits.max_connections:
            return (f"{self.connections} connections in all "
                    f"(max smbd processes = {limits.max_connections})")
        held = self.per_address.get(address, 0)
        if limits.max_connections_per_address and held >= limits.max_connections_per_address:
            return (f"{held} connections from it "
                    f"(max connections per client = {limits.max_connections_per_address})")
        return None

    def _admit(self, address: str) -> None:
        self.connections += 1
        self.per_address[address] = self.per_address.get(address, 0) + 1

    def _leave(self, address: str) -> None:
        if self.admissions is not None:
            self.admissions.leave(address)
        self.connections -= 1
        self.per_address[address] -= 1
        if not self.per_address[address]:
            del self.per_address[address]

    async def _accept(self, listener: socket.socket):
        """The next connection. Short of descriptors or memory, accepting pauses (the
        connections wait in the listen backlog) until some are freed."""
        loop = asyncio.get_running_loop()
        delay, logged = 0.0, False
        while True:
            try:
                pair = await loop.sock_accept(listener)
            except OSError as e:
                if e.errno in NEXT_CONNECTION:
                    continue
                if e.errno not in OUT_OF_RESOURCES:
                    raise
                if self.throttle.due("accept", loop.time()):
                    log.error("out of descriptors or memory (%s, %d connections): not accepting "
                              "for a while", e.strerror, self.connections)
                    logged = True
                delay = min(delay * 2, BACKOFF_MOST) if delay else BACKOFF_FIRST
                await asyncio.sleep(delay)
                continue
            if logged:
                log.warning("accepting connections again (%d connections)", self.connections)
            return pair

    async def _receive_large(self, link: Link, receive, size: int) -> memoryview:
        """A frame larger than the receive buffer: counted among the server's frames
        arriving (server.frame_budget: it may wait for room), and due within
        frame_time(size) (the timeout sweep closes the connection otherwise)."""
        arriving = self.arriving
        await arriving.take(size)
        link.frame_due = asyncio.get_running_loop().time() + frame_time(size)
        try:
            return await receive(size)      # a view: WRITE data is not copied
        finally:
            link.frame_due = None
            arriving.give_back(size)

    # -- timeouts ---------------------------------------------------------------------------
    def _overdue(self, link: Link, now: float) -> str | None:
        """Why link is closed now, if its timeout has passed: a large frame not all arrived
        in time; the handshake timeout while not logged on, deadtime once logged on when
        closing loses nothing (no open file, no request waiting). A response on its way is
        given one more period to finish."""
        if link.frame_due is not None and now > link.frame_due:
            return "a frame not received in time (slower than 64 KiB/s, or stopped)"
        limits = self.limits
        if link.conn.logged_on():
            link.not_logged_on_since = None
            if not limits.deadtime or not link.conn.idle_closable():
                return None
            waited, allowed = now - link.last_frame, limits.deadtime * 60
            reason = f"idle past deadtime ({limits.deadtime:g} minutes)"
        else:
            if link.not_logged_on_since is None:       # its last session has ended
                link.not_logged_on_since = now
            if not limits.handshake_timeout:
                return None
            waited, allowed = now - link.not_logged_on_since, limits.handshake_timeout
            reason = f"not logged on within the handshake timeout ({limits.handshake_timeout:g} s)"
        if waited < allowed or (link.sending.locked() and waited < 2 * allowed):
            return None
        return reason

    async def _sweep(self) -> None:
        """Closes the connections whose timeout has passed, and lets the others drop their
        large buffers if they have been idle; one pass over all of them each period."""
        loop = asyncio.get_running_loop()
        period = sweep_period(self.limits)
        while True:
            await asyncio.sleep(period)
            try:        # oplock breaks not answered in time: the CREATEs held for them go on
                self.state.oplocks.expire()
            except Exception:
                log.exception("timeout sweep: oplock breaks not expired")
            try:        # users' credits for the kernel's lock work grow; blocking LOCKs waiting try again
                self.state.retry_kernel_lock_waits()
            except Exception:
                log.exception("timeout sweep: blocking locks not retried")
            try:        # durable opens detached past their timeout are closed
                closing: list = []
                if self.state.durable.expire(closing):
                    log.info("durable handles past their timeout closed")
                for effect in closing:          # a file deleted on close: its maps go
                    if isinstance(effect, effects.Forget):
                        self.file_maps.forget_file(effect.dev, effect.ino)
            except Exception:
                log.exception("timeout sweep: durable handles not expired")
            if self.routes is not None:
                try:        # clients of this worker with no connection nor durable open left
                    self.routes.sweep()
                except Exception:
                    log.exception("timeout sweep: client routes not swept")
            now = loop.time()
            for link in list(self.links):
                try:
                    reason = self._overdue(link, now)
                    if reason is not None:
                        link.close(reason)
                    else:
                        link.transport.release_idle()
                        link.transport.revive_wait()
                except Exception:     # one connection's fault must not end the sweeps
                    log.exception("timeout sweep: connection skipped")

    # -- one connection -----------------------------------------------------------------------
    async def handle(self, sock: socket.socket, peer, handed: bytes | None = None,
                     client_guid: bytes | None = None) -> None:
        """Serves one connection. `handed`: the frame another worker read of it before
        handing it here (server.handoff), answered first; `client_guid`: its ClientGuid,
        counted in the routes already."""
        loop = asyncio.get_running_loop()
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            modules_by_share = self._io_modules()
            conn = Connection(self.shares, lookup=self._lookup, open_fs=self._open_fs,
                              identities=self.identities,
                              allow_guest=self.allow_guest, signing_required=self.signing_required,
                              local_address=sock.getsockname()[0], client_address=str(peer[0]),
                              file_closed=lambda share, fd: modules_by_share[share].closed(fd),
                              close_descriptor=self.holds.close, io_under_way=self.holds.working,
                              limits=self.limits, ntlm_auth=self.ntlm_auth, state=self.state,
                              server_info=self.server_info, policy=self.policy,
                              kerberos=self.kerberos, administration=self.administration)
            transport = self._transport(sock)
        except OSError as e:         # reset before it could be set up, or out of descriptors
            log.info("connection from %s lost: %s", peer, e)
            sock.close()
            return
        link = Link(sock, conn, transport, loop.time(), peer)
        link.client_guid = client_guid
        self.links.add(link)
        log.info("connection from %s%s", peer, " (handed from another worker)" if handed else "")
        # one frame on the wire at a time: responses and late answers to pending requests
        # (a lock granted because another connection unlocked) take turns
        # a break notification the client's TCP stack does not acknowledge: the connection
        # is lost, the break goes on another channel (smb.breaks)
        delivery = DeliveryWatch(sock, lambda: conn.force_unacked_timeout, link.close)
        runner = link.runner = EffectRunner(transport, modules_by_share, link.sending, self.file_maps, peer,
                                            pool=self._pool, delivery=delivery, owners=self._owners(),
                                            holds=self.holds)
        metrics = self.metrics
        if metrics is not None:
            metrics.connected()
        flushes = set()

        async def flush_outbox(held):
            try:
                await runner.run(conn.outbox_drain())
            except OSError as e:
                log.info("connection from %s: late answer lost: %s", peer, e)
            finally:
                runner.release(held)

        def on_output():
            # (what the outbox names is held now: the task runs at the loop's next turn)
            task = asyncio.ensure_future(flush_outbox(runner.hold(conn.outbox)))
            flushes.add(task)
            task.add_done_callback(flushes.discard)

        conn.on_output = on_output
        # a worker of several: until the connection's SMB2 NEGOTIATE is placed (answered
        # here or handed to the worker serving its client, server.handoff), its frames are
        # read exactly, so that nothing after the NEGOTIATE has been taken from the socket
        receive, prelude = transport.recv_exact, None
        routing = self.handoffs is not None and handed is None
        if routing or handed:
            prelude = Prelude(loop, sock, handed)
            receive = prelude.recv_exact
        seen = bytearray()              # the frames read before the SMB2 NEGOTIATE (SMB1's)
        # most requests are whole in the receive buffer once it is filled, and most
        # responses go out at once: those are answered and sent without a coroutine, by the
        # receive buffer (serve_frames, below)
        ring_served = transport.take_frame is not None
        receive_now = getattr(transport, "receive_now", None)
        run_now = runner.run_now
        monotonic = time.monotonic
        started = 0.0           # when the frame begun last arrived (its latency's start)

        # every frame is answered in two steps, wherever it was received: `begin` carries out
        # what needs no wait and returns what does (None: nothing), then, once that is
        # awaited, `finish`. The receive buffer's serve_frames does both the same way for the
        # frames it holds whole; `begin` is for a frame received the awaited way, its size
        # checked from its prefix
        def begin(frame):
            nonlocal started
            link.last_frame = started = monotonic()     # (the loop's clock, without its method)
            return run_now(conn.handle_frame(frame))

        def finish(began: float) -> None:
            link.busy = False
            if metrics is not None:
                metrics.frame(conn.frame_commands, monotonic() - began)

        async def send_later(responses, flush_only: bool) -> None:
            # (as EffectRunner.run sends a response, after those before it)
            async with link.sending:
                if flush_only:
                    await transport.flush()
                else:
                    await transport.send(SendDescriptor(responses))

        if ring_served:
            # what the receive buffer holds whole is answered by its serve_frames, as `begin`
            # answers a frame; the plain ECHOs at its head (most of a client's keep-alives, all
            # of a benchmark's) together, in C (Connection.answer_echoes: the core's checks and
            # credits), with one send, where nothing is counted per frame (no metrics)
            serve_frames = transport.frames_served_by(
                conn, runner, link, on_served=finish if metrics is not None else None,
                answer=conn.answer_echoes if metrics is None else None, send_later=send_later)
            # while the task waits for the client (receive_more), the frames the event loop's
            # readiness callback received are answered there by serve_frames as the loop below
            # answers them, as long as each needs no wait (Receiver.serve); what waits is kept
            # in the receiver's `answering` and the task woken for it
            busy_poll = self.busy_poll
            if busy_poll.budget:
                def answered() -> int | None:       # (the last frame's last command)
                    commands = conn.frame_commands
                    return commands[-1] if commands else None
                transport.serve_with(busy_poll.served(serve_frames, answered))
            else:
                transport.serve_with(serve_frames)
            receiver = transport.rx
        elif self.busy_poll.budget and not self.busy_poll.unserved_noted:
            # (said once: the admin asked for it, and it is not done)
            self.busy_poll.unserved_noted = True
            log.warning("busy poll = %d: not done, connections are served without io_uring "
                        "(--no-io-uring, or io_uring unavailable)", round(self.busy_poll.budget * 1e6))
        try:
            while True:
                frame = None        # (a large frame's buffer is given back once idle: not held here)
                if prelude is None and ring_served:
                    served = serve_frames()
                    if served is not True and served is not False:
                        pending, began = served
                        await pending
                        finish(began)
                        continue
                    if transport.drained():     # (else part of a frame is in: the way below)
                        if not receive_now():
                            await transport.receive_more()
                            answering = receiver.answering
                            if answering is not None:   # a frame served while waiting waits
                                receiver.answering = None
                                pending, began = answering
                                await pending
                                finish(began)
                        continue
                # the awaited way: prefix, then message
                replayed = prelude is not None and bool(prelude.pending)
                head = await receive(4)
                link.busy = True
                if head[0] != 0:
                    raise ConnectionError("not a NetBIOS session message")
                size = int.from_bytes(head[1:], "big")
                check_frame_size(conn, size)
                if size > Receiver.BUFFER:
                    frame = await self._receive_large(link, receive, size)
                else:
                    frame = await receive(size)  # a view: WRITE data is not copied
                kind = None
                if routing or replayed:
                    kind, guid = handoff.classify(frame)
                if routing:
                    if kind == handoff.SMB1_NEGOTIATE and not seen:
                        seen += bytes(head) + bytes(frame)     # (upgrading to SMB2: placed on the next)
                    else:
                        routing = False
                        if kind == handoff.SMB2_NEGOTIATE and guid != handoff.ZERO_GUID and \
                                await self._place(link, guid, bytes(seen) + bytes(head) + bytes(frame)):
                            break                   # handed over: our descriptor goes, not the stream
                if prelude is not None and not routing and not prelude.pending:
                    receive, prelude = transport.recv_exact, None   # the ring's receives from now on
                if replayed and kind == handoff.SMB1_NEGOTIATE:
                    conn.handle_frame(frame)        # answered by the worker that handed it over
                    link.busy = False
                    continue
                pending = begin(frame)
                if pending is not None:
                    await pending
                finish(started)     # (the readiness callback serves none meanwhile: it runs in receive_more only)
        except (ConnectionError, OSError) as e:
            # a client that hangs up between requests has simply left: not an error
            log.info("connection from %s closed: %s", peer,
                     link.closed_because or (e if link.busy else "by the client"))
        except Exception:
            log.exception("connection from %s failed", peer)
        finally:
            self.links.discard(link)
            if metrics is not None:
                metrics.disconnected(link)
            try:
                await runner.drain()     # their files stay open until their data is written
                try:        # answers held back for requests that came before the last one
                    transport.flush_nowait()
                except OSError:
                    pass
                conn.close_all()
                runner.release_unstarted()      # (a frame served but never carried out)
                for effect in conn.outbox_drain():      # only Forget is carried out now
                    if isinstance(effect, effects.Forget):
                        self.file_maps.forget_file(effect.dev, effect.ino)
                stats = getattr(getattr(transport, "tx", None), "stats", None)
                if stats is not None and any(stats.by_path.values()):
                    log.info("connection from %s: file reads sent by path %s (zero-copy sends the kernel "
                             "copied: %d of %d; read path auto: %r)", peer, stats.by_path, stats.zc_copied,
                             stats.zc_sends, self.read_costs)
                transport.close()
            finally:
                if link.client_guid is not None:
                    try:
                        self.routes.leave(link.client_guid)
                    except Exception:
                        log.exception("connection from %s: its client route not released", peer)
                sock.close()     # whatever failed above, the client sees the connection end

    async def serve(self, host: str, port: int, *more: tuple[str, int]) -> None:
        """Listens on host:port and on each further (host, port) of `more` (smb.conf's
        `smb ports` and `interfaces`), and serves until cancelled."""
        listeners = []
        try:
            for address in [(host, port), *more]:
                listeners.append(socket.create_server(address, reuse_port=False, backlog=128,
                                                      family=_family(address[0])))
        except BaseException:
            for listener in listeners:
                listener.close()
            raise
        await self.serve_on(listeners)

    async def serve_on(self, listeners: list[socket.socket]) -> None:
        """Serves on listening sockets (made here or inherited: socket activation) until
        cancelled or until stop() ends accepting."""
        self.open_files = raise_open_files_limit()
        if self.limits.max_connections and self.open_files < self.limits.max_connections + 64:
            log.warning("the open files limit (%d) is low for max smbd processes = %d: "
                        "connections beyond it wait until descriptors are freed", self.open_files,
                        self.limits.max_connections)
        self.state.max_opens = max_opens(self.open_files, self.limits)
        # what connections share is set up before the first is accepted: not when the
        # descriptors may have run short
        self._io_modules()
        self._start_change_watcher()
        if self.creds is None:
            log.warning("not running as root: every session acts as the server's user (uid %d), "
                        "whatever its SMB user", os.geteuid())
        for listener in listeners:
            listener.setblocking(False)
        # the addresses a multichannel client may open further channels to
        self.state.sessions.network_interfaces = interfaces.advertised(
            [listener.getsockname()[0] for listener in listeners
             if listener.family in (socket.AF_INET, socket.AF_INET6)])
        log.info("smbring%s serving %s on %s",
                 f" worker {self.worker.worker} (pid {os.getpid()})" if self.worker else "",
                 ", ".join(self.shares),
                 ", ".join(describe_address(listener.getsockname()) for listener in listeners))
        self.ports = {listener.getsockname()[1] for listener in listeners
                      if listener.family in (socket.AF_INET, socket.AF_INET6)}
        sweeper = asyncio.ensure_future(self.server_work(self._sweep()))
        accepting = [asyncio.ensure_future(self.server_work(self._accept_loop(listener)))
                     for listener in listeners]
        receiving = self._start_handoffs()
        try:
            await asyncio.gather(*accepting)
        finally:
            for task in accepting:
                task.cancel()
            sweeper.cancel()
            if receiving is not None:
                receiving.cancel()
                self.handoffs.close()
                self.handoffs = None
            for listener in listeners:
                listener.close()

    # -- connections handed between workers (server.handoff) ------------------------------
    def _start_handoffs(self):
        """A worker of several: its hand-off socket, received on by the task returned."""
        if self.worker is None:
            return None
        try:
            self.handoffs = handoff.HandOffs(self.worker.store_directory, self.worker.worker, self)
        except OSError as e:
            log.error("no hand-off socket (every connection is served where it arrives: "
                      "multichannel and durable handles may fail): %s", e)
            return None
        return asyncio.ensure_future(self.server_work(self.handoffs.serve()))

    async def _place(self, link: Link, guid: bytes, data: bytes) -> bool:
        """The connection's SMB2 NEGOTIATE names client `guid`: True when it was handed to
        the worker serving that client (the caller forgets it); else it is served here."""
        target = self.routes.place(guid)
        if target != self.worker.worker:
            if self.handoffs is not None:       # (None: stopping)
                self.links.discard(link)        # no timeout or stop shuts it down while handed
                # the server's work (its socket is in the server's 0700 run directory), not
                # the user's whose request the event loop's thread served last
                if await self.server_work(self.handoffs.give(target, link.sock, guid, data)):
                    log.info("connection from %s handed to worker %d (its client's)", link.peer, target)
                    return True
                self.links.add(link)
            self.routes.join(guid)              # served here after all
        link.client_guid = guid
        return False

    def answer(self, kind: int, body: bytes):
        """Another worker's request (server.handoff): the answer (bytes), or an open offered
        to it (server.moves.Offer); for a reconnect's request, a coroutine giving either."""
        if kind == handoff.RECLAIM:
            return self._answer_reclaim(body)
        if kind == handoff.END_SESSION:
            return handoff.answer_end_session(self.state, body)
        if kind == handoff.CLOSE_APP_INSTANCE:
            return handoff.answer_close_app_instance(self.state, body, self.file_maps.forget_file)
        return handoff.NOT

    async def _answer_reclaim(self, body: bytes):
        """A reconnect on another worker asks for a durable open: offered where this worker
        holds it detached. Where it is still attached to the connection its client has just
        left (that connection's end not read yet: the two connections' events reach two
        processes in no set order), the offer waits for the end, at most HELD_WAIT seconds,
        as one process holds such a reconnect (`create_durable.DETACH_WAIT`)."""
        from smbring.server import moves
        offered = moves.offer(self, body)
        persistent = moves.held(self, body) if offered is None else None
        if persistent is not None:
            if persistent in self._held_reclaims or len(self._held_reclaims) >= MAX_HELD_RECLAIMS:
                # one reconnect already waits for that open (only one could have it), or
                # enough wait: this one finds nothing, at once
                return handoff.NOT
            self._held_reclaims.add(persistent)
            ended = asyncio.get_running_loop().create_future()
            cancel = self.state.durable.wait_detached(
                persistent, lambda: ended.done() or ended.set_result(None), HELD_WAIT)
            try:
                await asyncio.wait_for(ended, HELD_WAIT)
            except asyncio.TimeoutError:
                pass
            finally:
                cancel()
                self._held_reclaims.discard(persistent)
            offered = moves.offer(self, body)
        return offered if offered is not None else handoff.NOT

    def refusal(self, sock: socket.socket) -> str | None:
        """Why a connection handed by another worker is not taken now."""
        if self.stopping:
            return "stopping"
        address = sock.getpeername()[0]
        if not hosts.allowed(self.hosts_allow, self.hosts_deny, address):
            return f"{address} not allowed (hosts allow / hosts deny)"
        return None

    def adopt(self, sock: socket.socket, peer, guid: bytes, data: bytes) -> None:
        """Serves a connection another worker handed over, as if accepted here; `data` (its
        NEGOTIATE) first. (Admitted by that worker: counted here, not checked again.)"""
        address = peer[0]
        self._admit(address)
        if self.admissions is not None:
            self.admissions.adopt(address)
        self.routes.join(guid)
        task = asyncio.ensure_future(self.handle(sock, peer, handed=data, client_guid=guid))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda _, address=address: self._leave(address))

    async def _accept_loop(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while not self.stopping:
            sock, peer = await self._accept(listener)
            address = peer[0]
            refusal = self._refusal(address)
            if refusal is not None:
                if self.throttle.due(address, loop.time()):
                    log.warning("refusing connections from %s: %s", address, refusal)
                sock.close()
                continue
            self._admit(address)
            if self.stopping:
                sock.close()
                self._leave(address)
                return
            task = asyncio.ensure_future(self.handle(sock, peer))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            task.add_done_callback(lambda _, address=address: self._leave(address))
            # accept returns at once while connections wait: let the others run between
            await asyncio.sleep(0)

    # -- a graceful stop and a reload -----------------------------------------------------
    async def stop(self, timeout: float) -> None:
        """Stops accepting, lets the connections finish what they are doing (each is closed
        once it is quiet: nothing in flight, no open file), and after `timeout` seconds
        closes those left. The caller cancels serve_on() first."""
        loop = asyncio.get_running_loop()
        self.stopping = True
        deadline = loop.time() + timeout
        busy = len(self.links)
        log.info("stopping: %d connections to finish (at most %g s)", busy, timeout)
        while self._tasks and loop.time() < deadline:
            now = loop.time()
            for link in list(self.links):
                # a quiet connection closes once the client has paused: a client finishing
                # a transfer (close, tree disconnect, logoff) is not cut between requests
                if link.quiet() and (not link.conn.logged_on() or now - link.last_frame >= STOP_PAUSE):
                    link.close("the server is stopping")
            await asyncio.wait(list(self._tasks), timeout=min(STOP_PAUSE / 5, max(deadline - now, 0)))
        cut = list(self.links)
        for link in cut:
            link.close(f"the server is stopping: {timeout:g} s passed")
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=STOP_CLEANUP)
        if cut:
            log.warning("stopped: %d connections closed with work in flight after %g s", len(cut), timeout)
        else:
            log.info("stopped: every connection finished")
        if self.change_watcher is not None:
            self.change_watcher.close()
            self.change_watcher = None
        close_locks = getattr(self.state.locks, "close", None)
        if close_locks is not None:         # (the shared store's: its retry timer)
            close_locks()
        for files in self._share_files.values():     # no connection is left to use them
            files.close()
        self._share_files.clear()
        if self.creds is not None:      # the accounts' io_uring personalities kept for reuse
            self.creds.data.release()

    def close_share(self, name: str, denied_only: bool = False) -> list[dict]:
        """An administrator's close-share (`smbring control close-share NAME`, Samba's
        `smbcontrol smbd close-share`): every tree connect to the share (`*`: to any share,
        IPC$ too) ends, with its opens; with `denied_only` (close-denied-share), only those
        the shares now in force would not connect as they are (commands.tree.denied_now).
        The sessions stay. Returns what was closed, for the answer and the log."""
        closed, seen = [], set()
        for link in list(self.links):
            conn = link.conn
            # (a session with several channels is in each of their tables: judged once)
            for s in [s for s in conn.sessions.values() if s.id not in seen and conn.reaches(s)]:
                seen.add(s.id)
                for tid, t in list(s.trees.items()):
                    share = t.name if t.share is not None else "ipc$"
                    if name != "*" and share != name.lower():
                        continue
                    why = tree_commands.denied_now(conn, s, t) if denied_only else "close-share"
                    if why is None:
                        continue
                    tree_commands.force_disconnect(conn, s, tid)
                    client = str(link.peer[0]) if link.peer else "?"
                    log.warning("tree connect %d of session %d (%s from %s) to %s closed by the "
                                "administrator: %s", tid, s.id, s.user, client, share, why)
                    closed.append({"share": share, "session": s.id, "tree": tid, "user": s.user,
                                   "client": client, "why": why})
            conn.flush_outbox()         # what the closes left to do: breaks, deletes on close
        return closed

    def reconfigure(self, shares: dict[str, Share], *, passdb_path: str, allow_guest: bool,
                    signing_required: bool, read_path: str, limits: Limits, ntlm_auth: str,
                    server_info: ServerInfo | None = None, policy: Policy | None = None,
                    hosts_allow=None, hosts_deny=None, username_map: str | None = None,
                    guest_account: str = "nobody", kerberos=None, busy_poll: int = 0) -> None:
        """A reload: the shares apply to new tree connects on every connection (trees
        connected keep the share they connected to); the username map and the guest account
        to the next logon on any connection; the rest to new connections. (What applies only
        at a restart is named in the log by the caller: see config.RESTART_ONLY.)"""
        if self._modules is not None:
            for name, share in shares.items():
                old = self.shares.get(name)
                if name not in self._modules:
                    self._modules[name] = modules.build(share.vfs_objects, self._ring(),
                                                        crowded=lambda: self.connections > 1,
                                                        pool=self._pool, as_server=self._as_server(),
                                                        owners=self._owners())
                elif old is not None and old.vfs_objects != share.vfs_objects:
                    log.warning("share %s: a change of vfs objects takes effect at restart", name)
        self.shares = shares
        for link in self.links:
            link.conn.update_shares(shares)
        if passdb_path != self.lookup.path:
            self.lookup = PasswordLookup(passdb_path)
        self.allow_guest, self.signing_required = allow_guest, signing_required
        self.read_path, self.limits, self.ntlm_auth = read_path, limits, ntlm_auth
        # (connections served with busy polling follow the new budget, 0 included; those
        # served without it since they began go on so)
        self.busy_poll.set_budget(busy_poll)
        self.arriving.limit = limits.max_frame_memory << 20     # (frames arriving keep their count)
        if self.open_files:
            self.state.max_opens = max_opens(self.open_files, limits)
        if server_info is not None:
            self.server_info = server_info
        if policy is not None:
            self.policy = policy
            if not policy.kernel_change_notify and self.change_watcher is not None:
                self.change_watcher.close()         # (`kernel change notify = no` now)
                self.change_watcher = None
            elif self._serving_loop() is not None:
                self._start_change_watcher()
        if hosts_allow is not None:
            self.hosts_allow, self.hosts_deny = hosts_allow, hosts_deny or ()
        self.username_map = username_map
        self.identities.username_map = username_map    # every connection shares this object
        if isinstance(self.identities, Accounts):
            self.identities.guest_account = guest_account
        self.kerberos = kerberos        # (for new connections, as ntlm auth)
        if kerberos is not None:
            log.info("%s", kerberos.describe())


class Prelude:
    """recv_exact for a connection's first frames: the bytes another worker handed over,
    then the socket read for exactly what is asked (plain reads: the ring's receive buffer
    would take what follows, which a hand-off could not carry)."""

    def __init__(self, loop, sock: socket.socket, handed: bytes | None):
        self.loop, self.sock = loop, sock
        self.pending = bytearray(handed or b"")

    async def recv_exact(self, n: int) -> memoryview:
        view, got = memoryview(bytearray(n)), min(n, len(self.pending))
        view[:got] = self.pending[:got]
        del self.pending[:got]
        await _receive_into(self.loop, self.sock, view, got)
        return view


async def _receive_into(loop, sock: socket.socket, view: memoryview, got: int) -> None:
    """Fills view[got:] from the socket; ConnectionResetError where the peer closes first."""
    while got < len(view):
        k = await loop.sock_recv_into(sock, view[got:])
        if not k:
            raise ConnectionResetError("peer closed")
        got += k


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET
