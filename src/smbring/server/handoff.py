"""All the connections of one client on one worker (``smbring serve --workers N``).

A client's sessions, channels and open files live in the worker process that serves it:
its descriptors, its session keys. Multichannel (a second connection binding to the
session), durable and resilient handles (a new connection reclaiming an open) and a
PreviousSessionId all need the client's later connections to reach that same worker, while
the kernel gives each new connection to whichever worker accepts it first.

So connections are placed by the ClientGuid of their SMB2 NEGOTIATE (an SMB1 NEGOTIATE that
upgrades to SMB2, as smbclient sends, is answered where it arrives and the SMB2 NEGOTIATE
that follows is the one placed; an all-zero ClientGuid, SMB 2.0.2's, is not placed):

- the store's ``clients`` database records which worker serves each ClientGuid (key:
  ClientGuid + worker). A worker that takes a NEGOTIATE of a guid nobody serves records
  itself; its entry goes once it has no connection of that guid and no durable open made
  by it (a client reconnecting to its durable handle finds it there), or with the worker
  (the supervisor's cleanup after a death);
- a NEGOTIATE whose guid another worker serves is handed to it: the connection's socket
  goes over that worker's hand-off socket (``handoff-<worker>``, a Unix SOCK_SEQPACKET socket
  of mode 0600 in the store's 0700 directory) with SCM_RIGHTS, together with the NEGOTIATE
  frame, which the connection read exactly (nothing after it was read), and the receiver
  answers it as the first frame of a connection it accepted itself (an SMB1 NEGOTIATE
  answered before it goes along too: the receiver runs it through the connection without
  answering it again, so that the SMB2 NEGOTIATE finds the state it left).

The hand-off is a three-way exchange so that a connection is never served twice nor
dropped: the giver sends (header, frame, descriptor); the receiver checks everything and
answers ACK (or NO); the giver then sends COMMIT and closes its own copy of the descriptor
(the TCP stream stays open: the receiver holds the other copy). Without an ACK in time, or
when COMMIT cannot be sent, the giver serves the connection itself; a receiver that gets no
COMMIT shuts its reading side (a COMMIT sent after that fails at the giver) and takes one
last look before it drops its copy.

A ClientGuid is not a credential (any client can send any guid): it decides where a
connection is served, nothing else. Every check after it is the same as for a connection
accepted there (authentication, signing, limits per connection). A message on the hand-off
socket is checked before anything is done with it: its peer's uid (the server's or root),
its size (at most MAX_HANDED bytes of frame), the magic, that it carries exactly one
descriptor, that the descriptor is a connected TCP socket (SO_TYPE, SO_DOMAIN, SO_PROTOCOL,
not listening, a peer) on one of the server's ports, and that the bytes are exactly NetBIOS
frames of an SMB2 NEGOTIATE with the guid the header names, after at most one SMB1
NEGOTIATE. Anything else is
refused: every descriptor received is closed, the exchange ends, the worker goes on.

The same socket carries requests of one worker to another about what only the other holds
(`ask`): "end your session S, which a client of user U replaces" (a PreviousSessionId naming
a session of that worker), "close user U's opens of application instance I" (a CREATE with
an AppInstanceId), "hand me your detached durable open P, which user U reconnects to" (a
DHnC/DH2C, server.moves). A request is one message (REQUEST: magic, kind, length, at most
MAX_REQUEST bytes, no descriptor) and one answer of at most MAX_ANSWER bytes (an open handed
over: its description, at most MAX_OFFER bytes, with its descriptor; the asker then sends
COMMIT, and the giver asks the store who has it); the asker waits ANSWER_TIMEOUT at most (a
worker that is stopped or gone costs it that, never more), and the receiver acts on a
request only after its own checks (the session's user is the one named, ...): the asker is
another worker of the server, the user it names is one it authenticated.
"""
from __future__ import annotations

import array
import asyncio
import contextlib
import errno
import logging
import os
import socket
import stat
import struct
import time

from smbring.server.shared_store import WORKER, Store, StoreFull
from smbring.server.wakeups import bind_worker_socket

log = logging.getLogger("smbring.server")

MAGIC = b"SRH1"
HEADER = struct.Struct(">4s16sI")       # magic, ClientGuid, bytes of frame that follow
MAX_HANDED = 64 * 1024                  # a NEGOTIATE frame is a few hundred bytes
MAX_MESSAGE = HEADER.size + MAX_HANDED
MAX_FDS = 8                             # room to see (and close) descriptors sent in excess
MAX_IN_FLIGHT = 16                      # hand-offs under way at once, given and received each
ACK, NO, COMMIT = b"A", b"N", b"C"
ANSWER_TIMEOUT = 2.0                    # the giver waits this long for ACK or NO
MESSAGE_TIMEOUT = 2.0                   # the receiver waits this long for the message
COMMIT_TIMEOUT = 5.0                    # and this long for COMMIT after its ACK
BAD_MESSAGE_LOG_EVERY = 60.0
ZERO_GUID = bytes(16)

REQUEST_MAGIC = b"SRQ1"
REQUEST = struct.Struct(">4sBI")        # magic, kind, bytes of body that follow
MAX_REQUEST = 16 * 1024
MAX_ANSWER = 64
END_SESSION, CLOSE_APP_INSTANCE, RECLAIM = 1, 2, 3
REQUEST_KINDS = (END_SESSION, CLOSE_APP_INSTANCE, RECLAIM)
MAX_OFFER = 64 * 1024       # a detached open's description (server.moves)

SMB1_NEGOTIATE, SMB2_NEGOTIATE, OTHER = "smb1-negotiate", "smb2-negotiate", "other"
SMB2_HEADER = 64
NEGOTIATE_GUID_AT = SMB2_HEADER + 12    # StructureSize, DialectCount, SecurityMode, Reserved, Capabilities


def classify(frame) -> tuple[str, bytes | None]:
    """What a connection's frame (without its NetBIOS prefix) is for placing it: an SMB1
    NEGOTIATE, an SMB2 NEGOTIATE with its ClientGuid, or anything else."""
    frame = memoryview(frame)
    if len(frame) >= 5 and frame[:4] == b"\xffSMB" and frame[4] == 0x72:
        return SMB1_NEGOTIATE, None
    if (len(frame) >= NEGOTIATE_GUID_AT + 16 and frame[:4] == b"\xfeSMB"
            and int.from_bytes(frame[12:14], "little") == 0):
        return SMB2_NEGOTIATE, bytes(frame[NEGOTIATE_GUID_AT:NEGOTIATE_GUID_AT + 16])
    return OTHER, None


def socket_path(directory: str, worker: int) -> str:
    return os.path.join(directory, f"handoff-{worker}")


def encode(guid: bytes, data: bytes) -> bytes:
    return HEADER.pack(MAGIC, guid, len(data)) + data


def decode(message: bytes) -> tuple[bytes, bytes] | None:
    """(ClientGuid, frames with their prefixes), or None where the message does not carry
    exactly an SMB2 NEGOTIATE frame naming the header's non-zero guid, after at most one
    SMB1 NEGOTIATE frame (a client upgrading)."""
    if len(message) < HEADER.size or len(message) > MAX_MESSAGE:
        return None
    magic, guid, length = HEADER.unpack_from(message)
    data = message[HEADER.size:]
    if magic != MAGIC or length != len(data) or guid == ZERO_GUID:
        return None
    kinds, pos = [], 0
    while pos < len(data) and len(kinds) < 2:
        if len(data) - pos < 4 or data[pos] != 0:
            return None
        end = pos + 4 + int.from_bytes(data[pos + 1:pos + 4], "big")
        if end > len(data):
            return None
        kinds.append(classify(memoryview(data)[pos + 4:end]))
        pos = end
    if pos != len(data) or not kinds or kinds[-1] != (SMB2_NEGOTIATE, guid):
        return None
    if len(kinds) == 2 and kinds[0][0] != SMB1_NEGOTIATE:
        return None
    return guid, data


def encode_request(kind: int, body: bytes) -> bytes:
    return REQUEST.pack(REQUEST_MAGIC, kind, len(body)) + body


def decode_request(message: bytes) -> tuple[int, bytes] | None:
    """(kind, body) of a valid request, or None."""
    if len(message) < REQUEST.size or len(message) > REQUEST.size + MAX_REQUEST:
        return None
    magic, kind, length = REQUEST.unpack_from(message)
    if magic != REQUEST_MAGIC or kind not in REQUEST_KINDS or length != len(message) - REQUEST.size:
        return None
    return kind, message[REQUEST.size:]


def connected_tcp(fd: int, ports: set[int]) -> socket.socket | None:
    """The descriptor as a socket when it is a connected TCP socket on one of `ports` (the
    server's); None otherwise (the descriptor is closed then)."""
    sock = None
    try:
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            return None
        sock = socket.socket(fileno=fd)
        fd = -1                     # the socket object owns it from here
        if (sock.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE) != socket.SOCK_STREAM
                or sock.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN) not in (socket.AF_INET, socket.AF_INET6)
                or sock.getsockopt(socket.SOL_SOCKET, socket.SO_PROTOCOL) != socket.IPPROTO_TCP
                or sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)):
            return None
        sock.getpeername()          # ENOTCONN unless connected
        if sock.getsockname()[1] not in ports:
            return None
        result, sock = sock, None
        return result
    except OSError:
        return None
    finally:
        if sock is not None:
            sock.close()
        elif fd >= 0:
            os.close(fd)


def received_fds(ancillary) -> list[int]:
    """Every descriptor an SCM_RIGHTS message brought (to check, or to close)."""
    fds = []
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            whole = len(data) - len(data) % array.array("i").itemsize
            fds.extend(array.array("i", data[:whole]))
    return fds


async def _readable(sock: socket.socket, timeout: float) -> bool:
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    loop.add_reader(sock.fileno(), lambda: ready.done() or ready.set_result(None))
    try:
        await asyncio.wait_for(ready, timeout)
        return True
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(sock.fileno())


# -- which worker serves which client -------------------------------------------------------
class ClientRoutes:
    """The ``clients`` database: ClientGuid + worker -> (nothing), an entry per worker
    serving the guid. `place` checks and records in one write transaction, so two workers
    taking connections of a new guid at once agree on one; a second entry appears only when
    a hand-off failed (the giver serves the connection, and records itself too)."""

    def __init__(self, store: Store, holds):
        self.store = store
        self.db = store.db[b"clients"]
        self.holds = holds              # holds(guid): a durable open of that client is kept here
        self._here: dict[bytes, int] = {}   # guid -> this worker's connections of it
        self._key = lambda guid: guid + WORKER.pack(store.worker)

    def place(self, guid: bytes) -> int:
        """The worker that serves `guid`: this one (the connection is counted, and recorded
        in the store for the first) or another (nothing counted)."""
        if guid in self._here:
            self._here[guid] += 1
            return self.store.worker
        try:
            with self.store.write(grows=True) as txn:
                cursor = txn.cursor(self.db)
                if cursor.set_range(guid) and cursor.key()[:16] == guid:
                    other = WORKER.unpack_from(cursor.key(), 16)[0]
                    if other != self.store.worker:
                        return other
                txn.put(self._key(guid), b"", db=self.db)
        except StoreFull as e:        # served here, not recorded
            log.warning("client routes: %s not recorded: %s", guid.hex(), e)
        self._here[guid] = 1
        return self.store.worker

    def join(self, guid: bytes) -> None:
        """A connection of `guid` served here whatever the store says (handed here, or
        its hand-off failed)."""
        if guid in self._here:
            self._here[guid] += 1
            return
        try:
            with self.store.write() as txn:
                txn.put(self._key(guid), b"", db=self.db)
        except StoreFull as e:
            log.warning("client routes: %s not recorded: %s", guid.hex(), e)
        self._here[guid] = 1

    def leave(self, guid: bytes) -> None:
        """A connection of `guid` has ended here."""
        n = self._here.get(guid)
        if n is None:
            return
        self._here[guid] = n - 1
        if n == 1:
            self._forget_if_unheld(guid)

    def sweep(self) -> None:
        """Clients without connections here whose last durable open has gone are forgotten."""
        for guid in [g for g, n in self._here.items() if n <= 0]:
            self._forget_if_unheld(guid)

    def _forget_if_unheld(self, guid: bytes) -> None:
        if self.holds(guid):
            return
        del self._here[guid]
        try:
            with self.store.write() as txn:
                txn.delete(self._key(guid), db=self.db)
        except Exception as e:
            log.warning("client routes: %s not removed: %s", guid.hex(), e)

    def serving(self) -> dict[bytes, int]:
        return dict(self._here)


# -- the hand-off sockets -------------------------------------------------------------------
class HandOffs:
    """A worker's hand-off socket (receiving) and its side of giving connections away.

    `server` has `ports` (the set of ports it listens on), `refusal(sock)` (why a connection
    would not be taken now, or None) and `adopt(sock, guid, data)` (serve it, `data` first)."""

    def __init__(self, directory: str, worker: int, server):
        self.directory, self.worker, self.server = directory, worker, server
        self.path = socket_path(directory, worker)
        self.sock = bind_worker_socket(self.path, socket.SOCK_SEQPACKET)
        self.sock.listen(MAX_IN_FLIGHT)
        self._receiving: set[asyncio.Task] = set()
        self._giving = 0
        self._bad = 0
        self._bad_logged = 0.0
        self.given = self.received = self.refused = 0      # (for status and tests)
        self.asked = self.answered = 0
        # who may hand a connection besides root: the server's own user, as it starts (the
        # event loop's thread acts as sessions' users at times: geteuid later may name one)
        self.server_uid = os.geteuid()

    # -- receiving ------------------------------------------------------------------------
    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(self.sock)
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    await asyncio.sleep(0.1)
                    continue
                raise
            if len(self._receiving) >= MAX_IN_FLIGHT:
                conn.close()            # the giver sees the end and serves it itself
                self._refuse("too many hand-offs at once")
                continue
            task = asyncio.ensure_future(self._receive(conn))
            self._receiving.add(task)
            task.add_done_callback(self._receiving.discard)

    def _refuse(self, why: str) -> None:
        self.refused += 1
        self._bad += 1
        now = time.monotonic()
        if now - self._bad_logged >= BAD_MESSAGE_LOG_EVERY:
            self._bad_logged = now
            log.warning("hand-off socket %s: %d refused (the last: %s)", self.path, self._bad, why)

    async def _receive(self, conn: socket.socket) -> None:
        sock = None
        with conn:
            try:
                sock, guid, data = await self._message(conn)
                if sock is None:
                    return
                if guid is None:            # a request of another worker (`ask`)
                    kind, body = sock
                    sock = None
                    answer = self.server.answer(kind, body)
                    if asyncio.iscoroutine(answer):
                        answer = await answer
                    if isinstance(answer, bytes):
                        conn.send(answer[:MAX_ANSWER])
                    else:       # an open offered (server.moves): its description and descriptor
                        try:
                            conn.sendmsg([answer.data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                                          array.array("i", [answer.fd]))])
                            await _readable(conn, ANSWER_TIMEOUT)   # the taker done, or gone
                        finally:
                            answer.settle()     # the store says who has it now
                    self.answered += 1
                    return
                refusal = self.server.refusal(sock)
                if refusal is not None:
                    conn.send(NO)
                    self._refuse(refusal)
                    return
                conn.send(ACK)
                if not await self._committed(conn):
                    return          # the giver serves it (or gave up): our copy goes
                peer = sock.getpeername()
                self.received += 1
                self.server.adopt(sock, peer, guid, data)
                sock = None
            except Exception as e:      # a hand-off that fails must not stop the worker
                self._refuse(f"{type(e).__name__}: {e}")
            finally:
                if sock is not None:
                    sock.close()

    async def _message(self, conn: socket.socket):
        """(socket, guid, data) of a valid hand-off, ((kind, body), None, None) of a valid
        request, or (None, None, None)."""
        from smbring.server.control import peer_uid
        if peer_uid(conn) not in (0, self.server_uid):
            self._refuse("a peer of another user")
            return None, None, None
        if not await _readable(conn, MESSAGE_TIMEOUT):
            self._refuse("no message in time")
            return None, None, None
        try:
            message, ancillary, flags, _ = conn.recvmsg(
                MAX_MESSAGE + 1, socket.CMSG_SPACE(MAX_FDS * array.array("i").itemsize),
                socket.MSG_CMSG_CLOEXEC | socket.MSG_DONTWAIT)
        except OSError as e:
            self._refuse(f"receive failed: {e}")
            return None, None, None
        fds = received_fds(ancillary)
        if message[:4] == REQUEST_MAGIC:
            request = decode_request(message) if not flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC) else None
            if request is None or fds or ancillary:
                for fd in fds:
                    os.close(fd)
                self._refuse("malformed request")
                return None, None, None
            return request, None, None
        decoded = decode(message) if not flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC) else None
        if decoded is None or len(fds) != 1 or len(ancillary) != 1:
            for fd in fds:
                os.close(fd)
            self._refuse("malformed message" if decoded is None else f"{len(fds)} descriptors")
            return None, None, None
        sock = connected_tcp(fds[0], self.server.ports)
        if sock is None:
            self._refuse("the descriptor is not a connected TCP socket on the server's port")
            return None, None, None
        return sock, decoded[0], decoded[1]

    @staticmethod
    async def _committed(conn: socket.socket) -> bool:
        if await _readable(conn, COMMIT_TIMEOUT):
            try:
                return conn.recv(2, socket.MSG_DONTWAIT) == COMMIT
            except OSError:
                return False
        # no COMMIT in time: refuse any later one (the giver's send fails: it serves the
        # connection itself), then take one last look at what may have come just before
        try:
            conn.shutdown(socket.SHUT_RD)
            return conn.recv(2, socket.MSG_DONTWAIT) == COMMIT
        except OSError:
            return False

    # -- giving ---------------------------------------------------------------------------
    async def give(self, worker: int, sock: socket.socket, guid: bytes, data: bytes) -> bool:
        """Hands the connection `sock` to `worker`: True once that worker has taken it (the
        caller then closes its own descriptor and forgets the connection, without shutting
        it down); False when it stays here (the caller serves it)."""
        if len(data) > MAX_HANDED or self._giving >= MAX_IN_FLIGHT or worker == self.worker:
            return False
        loop = asyncio.get_running_loop()
        self._giving += 1
        link = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
        try:
            await asyncio.wait_for(loop.sock_connect(link, socket_path(self.directory, worker)), ANSWER_TIMEOUT)
            link.sendmsg([encode(guid, data)],
                         [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [sock.fileno()]))])
            if not await _readable(link, ANSWER_TIMEOUT) or link.recv(2, socket.MSG_DONTWAIT) != ACK:
                return False
            link.send(COMMIT)       # fails once the receiver has given up: then it stays here
            self.given += 1
            return True
        except (OSError, TimeoutError) as e:
            log.info("connection not handed to worker %d (served here): %s", worker, e)
            return False
        finally:
            self._giving -= 1
            link.close()

    # -- requests -------------------------------------------------------------------------
    async def ask(self, worker: int, kind: int, body: bytes) -> bytes | None:
        """Asks `worker` (see the module's description): its answer, or None where there is
        none within ANSWER_TIMEOUT (the worker is stopped, gone, or refused the request)."""
        async with self._asking(worker, kind, body) as link:
            if link is not None:
                return link.recv(MAX_ANSWER, socket.MSG_DONTWAIT) or None
        return None         # (none, or the link failed: _asking logged it)

    @contextlib.asynccontextmanager
    async def _asking(self, worker: int, kind: int, body: bytes):
        """A request sent to `worker`: the link its answer is ready on, closed after; None
        where it cannot be asked (itself, a request too long) or does not answer within
        ANSWER_TIMEOUT. A failure of the link (OSError, TimeoutError), here or in the block,
        is logged and leaves the block (the caller's answer is then what it had: none)."""
        if worker == self.worker or len(body) > MAX_REQUEST:
            yield None
            return
        loop = asyncio.get_running_loop()
        link = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
        self.asked += 1
        try:
            await asyncio.wait_for(loop.sock_connect(link, socket_path(self.directory, worker)), ANSWER_TIMEOUT)
            link.send(encode_request(kind, body))
            ready = await _readable(link, ANSWER_TIMEOUT)
            if not ready:
                log.info("worker %d did not answer a request in time", worker)
            yield link if ready else None
        except (OSError, TimeoutError) as e:
            log.info("worker %d not asked: %s", worker, e)
        finally:
            link.close()

    async def ask_for_descriptor(self, worker: int, kind: int, body: bytes, take) -> bool:
        """As `ask`, for an answer that may carry a descriptor (an open offered: server.moves):
        take(data, fd) is called with it (and closes fd where it does not keep it); whether
        it took it. Then the giver is told (COMMIT; it asks the store what happened)."""
        async with self._asking(worker, kind, body) as link:
            if link is None:
                return False
            data, ancillary, flags, _ = link.recvmsg(
                MAX_OFFER + 1, socket.CMSG_SPACE(MAX_FDS * array.array("i").itemsize),
                socket.MSG_CMSG_CLOEXEC | socket.MSG_DONTWAIT)
            fds = received_fds(ancillary)
            if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC) or len(fds) != 1:
                for fd in fds:
                    os.close(fd)
                return False
            took = take(data, fds[0])
            try:
                link.send(COMMIT)
            except OSError:
                pass
            return took
        return False        # (the link failed: _asking logged it)

    def others(self) -> list[int]:
        """The other workers (those with a hand-off socket in the store's directory). Read as
        the server: it is asked in the middle of a user's request (a reconnect, a CREATE
        naming an AppInstanceId), when the thread acts as that user, who may not read the
        server's 0700 directory; read as the user, it looked empty, and no other worker was
        ever asked for what it holds."""
        found = []
        try:
            with self.server.server_moment():
                names = os.listdir(self.directory)
        except OSError:
            return found
        for name in names:
            prefix, _, number = name.partition("-")
            if prefix == "handoff" and number.isdigit() and int(number) != self.worker:
                found.append(int(number))
        return sorted(found)

    def close(self) -> None:
        """Stops receiving (the socket's name goes with the store when the server stops, or
        is replaced by the next worker of this slot)."""
        for task in self._receiving:
            task.cancel()
        self.sock.close()


# -- what the protocol core asks of the other workers (ServerState.peers) ------------------
SESSION_ID = struct.Struct(">Q")
YES, NOT = b"1", b"0"


class Peers:
    """The other workers, for the protocol core (`ServerState.peers`): each request goes
    over the hand-off sockets (`HandOffs.ask`) in a task of its own; `done` is called with
    the outcome, or with None where there was no answer (its bound: ANSWER_TIMEOUT)."""

    def __init__(self, server):
        self.server = server            # its `handoffs` (None until serving, or stopping)
        self._tasks: set[asyncio.Task] = set()

    def end_session(self, worker: int, session_id: int, owner: str, done) -> None:
        """PreviousSessionId: `worker` ends its session `session_id` where it is a valid one
        of `owner` (the replacing session's resolved owner); done(True) where it did."""
        self._ask(worker, END_SESSION, SESSION_ID.pack(session_id) + owner.encode(),
                  lambda answer: done(answer == YES))

    def close_app_instance(self, app_instance: bytes, owner: str, done) -> None:
        """A CREATE naming an AppInstanceId: every other worker closes `owner`'s opens of that
        instance; done() once all have answered (or not, within the bound)."""
        handoffs = self.server.handoffs
        others = handoffs.others() if handoffs is not None else []
        if not others:
            done()
            return
        left = [len(others)]

        def one(_answer) -> None:
            left[0] -= 1
            if not left[0]:
                done()
        body = bytes(app_instance) + owner.encode()
        for worker in others:
            self._ask(worker, CLOSE_APP_INSTANCE, body, one)

    def reclaim(self, conn, tree, persistent: bytes, create_guid: bytes | None, owner: str, done) -> None:
        """A reconnect naming a durable open this worker does not hold: every other worker
        is asked for it (server.moves); the one holding it detached for this reconnect
        hands it over, and it waits detached here; done() once all have answered."""
        from smbring.server import moves
        handoffs = self.server.handoffs
        others = handoffs.others() if handoffs is not None else []
        body = moves.request_body(persistent, create_guid, conn.client_guid,
                                  (tree.share.name.lower(), tree.share.path), owner)
        if not others or len(body) > MAX_REQUEST:
            done()
            return
        left = [len(others)]

        def take(data: bytes, fd: int) -> bool:
            return moves.adopt(self.server, conn, tree, data, fd)

        def one(task: asyncio.Task) -> None:
            self._tasks.discard(task)
            left[0] -= 1
            if not left[0]:
                done()
        for worker in others:
            task = asyncio.ensure_future(self.server.server_work(
                handoffs.ask_for_descriptor(worker, RECLAIM, body, take)))
            self._tasks.add(task)
            task.add_done_callback(one)

    def _ask(self, worker: int, kind: int, body: bytes, then) -> None:
        handoffs = self.server.handoffs
        if handoffs is None or len(body) > MAX_REQUEST:
            then(None)
            return
        task = asyncio.ensure_future(self.server.server_work(handoffs.ask(worker, kind, body)))
        self._tasks.add(task)

        def answered(t: asyncio.Task) -> None:
            self._tasks.discard(t)
            answer = None if t.cancelled() or t.exception() is not None else t.result()
            then(answer)
        task.add_done_callback(answered)


def answer_end_session(state, body: bytes) -> bytes:
    """Another worker's END_SESSION request: the session ends here after `end_previous`'s
    checks (this worker's, valid, of the owner named)."""
    from smbring.smb.commands.session import end_previous
    if len(body) <= SESSION_ID.size:
        return NOT
    try:
        owner = body[SESSION_ID.size:].decode()
    except UnicodeDecodeError:
        return NOT
    return YES if end_previous(state, SESSION_ID.unpack_from(body)[0], owner) else NOT


def answer_close_app_instance(state, body: bytes, forget_file) -> bytes:
    """Another worker's CLOSE_APP_INSTANCE request: this worker's opens of the owner named
    with that AppInstanceId are closed (`close_app_instance_here`); forget_file(dev, ino) for
    a file a close deleted."""
    from smbring.smb.commands.create_durable import close_app_instance_here
    from smbring.smb.effects import Forget
    if len(body) <= 16:
        return NOT
    try:
        owner = body[16:].decode()
    except UnicodeDecodeError:
        return NOT
    effects: list = []
    closed = close_app_instance_here(state, body[:16], owner, effects)
    for effect in effects:
        if isinstance(effect, Forget):
            forget_file(effect.dev, effect.ino)
    return YES if closed else NOT
