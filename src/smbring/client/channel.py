"""One TCP connection to an SMB server: framing, MessageIds and credits, signing and sealing,
and matching each response to the request that is waiting for it.

Many requests may be in flight at once: a request takes CreditCharge credits (and as many
MessageIds) when it is sent, and each response hands back what the server grants. A request
that finds too few credits waits until responses bring more. One task reads frames and
completes the waiting requests; everything it finds wrong (a bad signature, an unencrypted
answer on an encrypted session, an answer to nothing we asked) closes the connection with a
:class:`ProtocolError` that every waiting and later request receives.

The socket is driven directly (no asyncio streams), so that data is copied once each way in
user space at most: each frame is received with ``recv_into`` straight into a buffer (a large
one, a READ response, into a buffer of the client's ReceivePool, used again once its data is
written; a READ's data is a slice of it, never copied again), and each request goes out with
``sendmsg`` from the caller's buffers (a WRITE's data is sent from where it was read), or,
for a WRITE that is neither signed nor sealed, with ``sendfile`` from the local file itself.
A connection to this host's own address is not paced (``unpace``: reno where the system's
default is BBR), which would cost an upload a timer per packet.
"""
from __future__ import annotations

import asyncio
import errno
import os
import socket
import struct
from collections import deque

from smbring.smb import security, wire
from smbring.smb.credits import charge_needed
from smbring.smb.wire import Header
from smbring.client.buffers import (PIPE_SIZE, POOLED_MIN, FileRange, FileTarget, ReceivePool,
                                    splice_pipe)
from smbring.client.errors import ChannelTimeout, LocalFileError, ProtocolError, error_for

# how many credits the client tries to hold (granted and not yet used, plus those in flight):
# enough for 8 x 1 MiB READs and some metadata requests; Samba and smbring grant up to 8192
CREDIT_TARGET = 512
CREDIT_CAP = 1 << 16          # a server granting more is not believed beyond this
FRAME_SLACK = 64 * 1024       # headers, transform header, padding beyond the largest payload
UNSOLICITED = 0xFFFFFFFFFFFFFFFF   # the MessageId of a server's own notifications (breaks)
IOV_MAX = 1024                     # buffers per sendmsg (the kernel's UIO_MAXIOV)
RECEIVES_PER_WAKEUP = 64           # then the event loop gets back to the other channels
READ_HEAD = wire.HEADER_SIZE + 16  # a READ response up to its data (DataOffset is at least this)
SPLICE_F_MOVE, SPLICE_F_NONBLOCK = 1, 2
_LENGTH = struct.Struct(">I")      # a frame's length, before it (direct TCP)
# a request's header as Header.pack lays it out (ProtocolId, StructureSize, CreditCharge,
# Status 0, Command, CreditRequest, Flags 0, NextCommand 0, MessageId, Reserved 0, TreeId,
# SessionId, Signature 0), packed in one call on the unsigned short path
_REQUEST_HEADER = struct.Struct("<4sHHxxxxHHxxxxxxxxQxxxxIQ16x")
_parse_header = wire.HEADER_CODEC.parse   # Header.parse without its Python frame (per answer)
DEADLINE_SLACK = 0.001             # seconds a deadline may be early and still count as due
# the fewest bytes two answers can take (each its 4-byte length and at least a header): what
# the socket must hold before it wakes us between frames while two WRITEs or more wait
TWO_ANSWERS = 2 * (4 + wire.HEADER_SIZE)
# an answer's header as _write_answer reads it: ProtocolId, StructureSize, Status, Command,
# CreditResponse, Flags, NextCommand, MessageId, SessionId
_ANSWER = struct.Struct("<4sHxxIHHIIQ8xQ16x")
_LOST = (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN)   # a send's errors that are the connection's


class SessionKeys:
    """What protects one session's messages once it is established. (A plain class, as the
    records below: a dataclass compiles its methods at every start-up.)"""
    __slots__ = ("session_id", "signing_key", "signing_algorithm", "sign", "encrypt", "cipher",
                 "encrypt_key", "decrypt_key")

    def __init__(self, session_id: int = 0, signing_key: bytes = b"",
                 signing_algorithm: int = security.HMAC_SHA256, sign: bool = False,
                 encrypt: bool = False, cipher: int = 0, encrypt_key: bytes = b"",
                 decrypt_key: bytes = b""):
        self.session_id = session_id
        self.signing_key = signing_key
        self.signing_algorithm = signing_algorithm
        self.sign = sign                # sign requests, and insist that responses are signed
        self.encrypt = encrypt          # seal requests, and insist that responses are sealed
        self.cipher = cipher
        self.encrypt_key = encrypt_key  # client -> server
        self.decrypt_key = decrypt_key  # server -> client

    def replace(self, **changes) -> "SessionKeys":
        """A copy with `changes` (a channel's own signing key on SMB 3.1.1)."""
        return SessionKeys(**{**{name: getattr(self, name) for name in self.__slots__}, **changes})

    def __repr__(self) -> str:      # the keys themselves stay out of logs and tracebacks
        return (f"SessionKeys(session_id={self.session_id:#x}, sign={self.sign}, "
                f"encrypt={self.encrypt}, cipher={self.cipher})")


class Response:
    """One response. (Here and below: plain classes with __slots__, not dataclasses: each
    @dataclass generates and compiles its methods at import time, a share of every run's
    fixed CPU.)"""
    __slots__ = ("header", "message", "request", "spliced")

    def __init__(self, header: Header, message: bytes | bytearray, request: bytes | None = None,
                 spliced: int | None = None):
        self.header = header
        self.message = message      # the whole plaintext message, header first
        self.request = request      # the request as sent (for the preauthentication hash)
        self.spliced = spliced      # a READ whose data went to its file: message is its head

    @property
    def status(self) -> int:
        return self.header.status


class _WriteAnswer:
    """A WRITE's final Response as Channel._write_answer takes it (two or more per WRITE of an
    upload): the same attributes, its header parsed only when asked for (making the Header
    object cost more than the rest of the answer's way)."""
    __slots__ = ("status", "message", "request", "spliced", "_header")

    def __init__(self, status: int, message: bytes):
        self.status = status
        self.message = message
        self.request = self.spliced = self._header = None

    @property
    def header(self) -> Header:
        if self._header is None:
            self._header = _parse_header(self.message)
        return self._header


# what is not sent again after a renewal of its session: the logon itself, and the ends of
# the session and its tree (a client closing does not log on again to say goodbye)
_NOT_RENEWED = frozenset({wire.NEGOTIATE, wire.SESSION_SETUP, wire.LOGOFF, wire.TREE_DISCONNECT})

NO_DEADLINE = float("inf")     # a CHANGE_NOTIFY the server said it will answer when something changes


class _Pending:
    __slots__ = ("command", "charge", "future", "keys", "signed", "into", "deadline", "interim",
                 "chained", "signature")

    def __init__(self, command: int, charge: int, future: asyncio.Future, keys: SessionKeys | None,
                 signed: bool, into: FileTarget | None = None,
                 deadline: float = 0.0):
        self.command = command
        self.charge = charge
        self.future = future
        self.keys = keys
        self.signed = signed        # the response must carry a good signature (unless sealed)
        self.into = into            # a READ's file (a descriptor of the channel's own)
        self.deadline = deadline    # when the answer is due (the loop's clock)
        self.interim = False        # the server answered STATUS_PENDING (one such answer a request)
        self.chained = None         # sent in a compound (Channel.compound): its requests' _Pendings
        self.signature = b""        # the request's own signature, where it was signed


def _taken(future: asyncio.Future) -> None:
    """Marks a future's exception as seen (a compound's requests after the one that raised)."""
    if not future.cancelled():
        future.exception()


class _HeldRange(FileRange):
    """A file range queued on a channel with a descriptor of the channel's own (closed once
    the range is sent, or the channel fails)."""
    __slots__ = ()


class Channel:
    """One connected socket. `address`: where it leads (for diagnostics and the channel list);
    `keys`: what protects this client's session on this connection (each channel of a session
    has its own signing key on SMB 3.1.1), set once its logon or binding is done."""

    def __init__(self, sock: socket.socket, *, timeout: float = 60.0, address: str = ""):
        sock.setblocking(False)
        self._sock = sock
        self._sockname = sock.getsockname()
        self._loop = asyncio.get_running_loop()
        self.address = address
        self.keys: SessionKeys | None = None
        self.timeout = timeout
        self.multi_credit = False       # CAP_LARGE_MTU on a dialect above 2.0.2
        self.frame_limit = 1024 * 1024  # until NEGOTIATE says how large READs may be
        self._next_id = 0
        self._balance = 1               # credits granted and not yet used
        self._in_flight = 0             # credits of requests sent and not yet answered
        self.peak_in_flight = 0         # the most credits ever in flight at once (diagnostics)
        self.answered = 0               # final responses received (diagnostics)
        self.spliced = 0                # READ data bytes spliced to their file (diagnostics)
        self._credit_change = asyncio.Event()   # set whenever credits come back (or on failure)
        self._credit_waiters = 0                # tasks waiting on it (_take_credits)
        self._pending: dict[int, _Pending] = {}
        self._watchdog: asyncio.TimerHandle | None = None   # at the next deadline (_check_deadlines)
        self._error: BaseException | None = None
        self._sessions: dict[int, SessionKeys] = {}
        self.pool: ReceivePool | None = None   # where large frames are received (the client's)
        self.on_lost = None             # called with the channel when its connection is lost
        # the session this channel carries, where it can log on again once the server says
        # it has expired (its Kerberos ticket ended): an object with `renewals` (how often it
        # was renewed) and `renew_session(seen)` (a coroutine, True once renewed: the Client)
        self.renewer = None
        # receiving: the 4-byte frame length, then the frame into a buffer of its own
        self._length = bytearray(4)
        self._frame: bytearray | memoryview | None = None
        self._size = 0                  # of the frame being received
        # a READ spliced to its file: its head, then steps (skip n, splice n, skip n)
        self._head: bytearray | None = None
        self._steps: deque[tuple[str, int, FileTarget | None]] = deque()
        self._spliced = None
        self._splice_waiting = 0        # READs waiting that named their file
        self._reads_waiting = 0         # READs waiting, whether or not they named a file
        self._writes_waiting = 0        # WRITEs waiting for their final answer
        self._pipe: tuple[int, int] | None = None
        self._scratch = bytearray(64 * 1024)
        self._into = memoryview(self._length)
        self._got = 0
        # SO_RCVLOWAT: the bytes the socket must hold before it reports itself readable
        # (the rest of the frame being received, 1 between frames; 0: not settable here)
        self._lowat = 1
        # sending: what is queued and not yet taken by the kernel (views of the callers'
        # buffers, and ranges of local files)
        self._unsent: deque[memoryview | FileRange] = deque()
        self._writing = False
        # the send buffer a sendfile upload asked for (raise_send_buffer), once it has begun:
        # its size, or 0 where the kernel's autotuning was left to it
        self.send_buffer: int | None = None
        self._loop.add_reader(sock.fileno(), self._on_readable)

    @classmethod
    async def open(cls, host: str, port: int, *, timeout: float = 60.0) -> "Channel":
        """A new TCP connection to host:port (Nagle off: requests go out whole at once)."""
        loop = asyncio.get_running_loop()
        infos = _literal_address(host, port) or \
            await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        error: OSError | None = None
        for family, kind, proto, _name, sockaddr in infos:
            sock = socket.socket(family, kind, proto)
            try:
                sock.setblocking(False)
                await asyncio.wait_for(loop.sock_connect(sock, sockaddr), timeout)
            except (OSError, asyncio.TimeoutError) as e:
                sock.close()
                error = e if isinstance(e, OSError) else TimeoutError(f"connecting to {host}:{port} "
                                                                      f"timed out")
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if is_loopback(sockaddr[0]):
                unpace(sock)
            return cls(sock, timeout=timeout, address=sockaddr[0])
        raise error or OSError(f"{host}: no address")

    # ---- lifecycle ----

    def register(self, keys: SessionKeys) -> None:
        """Responses for this session id are checked with these keys from now on."""
        self._sessions[keys.session_id] = keys

    @property
    def closed(self) -> bool:
        return self._error is not None

    @property
    def error(self) -> BaseException | None:
        """Why the channel closed (None while it is open)."""
        return self._error

    @property
    def sockname(self):
        """The local end of the connection (address, port), as it was when it was open."""
        return self._sockname

    @property
    def load(self) -> int:
        """Requests sent and not yet answered: where a transfer puts its next chunk."""
        return len(self._pending)

    async def close(self) -> None:
        self._fail(ConnectionError("connection closed by the client"))

    def refuse(self, error: BaseException) -> None:
        """Closes the connection with `error`, an answer refused after the channel delivered
        it (a READ longer than asked, a name in a listing...): what was waiting on it, and
        every later request, fails with the same error."""
        self._fail(error)

    def abort(self) -> None:
        """Drops the connection at once (a reset: nothing more is received or sent), as a
        network failure would; what was waiting on it fails as lost."""
        if self._error is None:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self._fail(ConnectionError("connection lost: reset"))

    def _fail(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
            if self._watchdog is not None:
                self._watchdog.cancel()
                self._watchdog = None
            self._loop.remove_reader(self._sock.fileno())
            if self._writing:
                self._loop.remove_writer(self._sock.fileno())
                self._writing = False
            self._sock.close()
            for part in self._unsent:
                if part.__class__ is _HeldRange:
                    os.close(part.fd)
            self._unsent.clear()        # never sent now: the buffers go back to their owners
            self._frame = self._head = self._spliced = None
            self._steps.clear()
            if self._pipe:
                os.close(self._pipe[0])
                os.close(self._pipe[1])
                self._pipe = None
        for pending in self._pending.values():
            self._forget(pending)
            if not pending.future.done():
                pending.future.set_exception(self._error)
        self._pending.clear()
        self._credit_change.set()
        if self.on_lost is not None:
            on_lost, self.on_lost = self.on_lost, None
            on_lost(self)

    # ---- the socket ----

    def _send(self, parts) -> None:
        self._unsent.extend(p if p.__class__ is FileRange or p.__class__ is bytes
                            else memoryview(p).cast("B") for p in parts if len(p))
        self._flush()

    def _send_frame(self, head: bytes, data) -> None:
        """_send((head, data)) for the short path's frame: its head (bytes, never empty),
        then its data, if any (a WRITE's: bytes, a buffer or a FileRange)."""
        unsent = self._unsent
        unsent.append(head)
        if data is not None and len(data):
            unsent.append(data if data.__class__ is FileRange or data.__class__ is bytes
                          else memoryview(data).cast("B"))
        self._flush()

    def _flush(self) -> None:
        """What is queued goes out as far as the socket takes it; the rest when it is
        writable again."""
        unsent = self._unsent
        if self._writing:
            self._hold_ranges()
            return
        # sent at once where the socket takes it: a file range is sent from the caller's own
        # descriptor then (a dup and a close per WRITE saved); one the socket did not take
        # whole gets a descriptor of its own below, for the transfer may end (and close its
        # file) while the range still waits here
        self._on_writable()
        if unsent and self._error is None:
            self._hold_ranges()
            self._loop.add_writer(self._sock.fileno(), self._on_writable)
            self._writing = True

    def _hold_ranges(self) -> None:
        """Every file range still queued that is the caller's gets a descriptor of its own."""
        for i, part in enumerate(self._unsent):
            if part.__class__ is FileRange:
                self._unsent[i] = _HeldRange(os.dup(part.fd), part.offset, part.length)

    def _on_writable(self) -> None:
        try:
            while self._unsent:
                head = self._unsent[0]
                if isinstance(head, FileRange):
                    self._send_file(head)
                    continue
                views, more = [], 0
                for part in self._unsent:
                    if isinstance(part, FileRange):
                        more = socket.MSG_MORE      # a header: sent with the data that follows
                        break
                    views.append(part)
                    if len(views) == IOV_MAX:
                        break
                # (one buffer, a WRITE's header before its file range: send, lighter than sendmsg)
                sent = self._sock.send(views[0], more) if len(views) == 1 else \
                    self._sock.sendmsg(views, (), more)
                while sent:
                    head = self._unsent[0]
                    if sent >= len(head):
                        sent -= len(head)
                        self._unsent.popleft()
                    else:
                        self._unsent[0] = head[sent:]
                        sent = 0
        except (BlockingIOError, InterruptedError):
            return
        except LocalFileError as e:
            self._fail(e)
            return
        except OSError as e:
            self._fail(ConnectionError(f"connection lost: {e}"))
            return
        if self._writing:
            self._loop.remove_writer(self._sock.fileno())
            self._writing = False

    def _send_file(self, part: FileRange) -> None:
        """Sends a local file range with sendfile(2): page cache -> socket, no user-space copy."""
        if self.send_buffer is None:
            self.send_buffer = raise_send_buffer(self._sock)
        sent = self._sendfile(part)
        if sent == part.length:
            self._unsent.popleft()
            if part.__class__ is _HeldRange:
                os.close(part.fd)
        else:
            self._unsent[0] = part.__class__(part.fd, part.offset + sent, part.length - sent)

    def _sendfile(self, part: FileRange) -> int:
        """sendfile(2) of a file range to the socket: the bytes sent, at least one. The local
        file's failure, or its end before the range's, is a LocalFileError; the connection's,
        and a socket that takes nothing now, an OSError."""
        try:
            sent = os.sendfile(self._sock.fileno(), part.fd, part.offset, part.length)
        except (BlockingIOError, InterruptedError):
            raise
        except OSError as e:
            if e.errno in _LOST:
                raise
            raise LocalFileError(f"reading the local file failed during the upload: {e}") from None
        if not sent:
            # the header announced these bytes; the stream cannot be continued without them
            raise LocalFileError(f"the local file ended at {part.offset} during the upload, "
                                   f"{part.length} more bytes were due (it shrank?)")
        return sent

    def _on_readable(self) -> None:
        try:
            for _ in range(RECEIVES_PER_WAKEUP):
                if self._steps:
                    if not self._splice_step():
                        return          # the socket has nothing more now
                    continue
                if not self._reads_waiting and self._frame is None and self._head is None \
                        and not self._got:
                    if not self._receive_small_frames():
                        if self._error is None:
                            self._wake_for_rest()
                        return          # the socket had nothing more
                    continue
                n = self._sock.recv_into(self._into[self._got:])
                if not n:
                    raise EOFError
                self._got += n
                if self._got < len(self._into):
                    continue
                if self._frame is None and self._head is None:
                    self._start_frame()
                elif self._head is not None:
                    self._after_head()
                else:
                    frame = self._frame
                    self._frame, self._into, self._got = None, memoryview(self._length), 0
                    self._deliver(frame)
                if self._error is not None:
                    return
        except (BlockingIOError, InterruptedError):
            self._wake_for_rest()
        except EOFError:
            self._fail(ConnectionError("the server closed the connection"))
        except (ProtocolError, LocalFileError) as e:
            self._fail(e)
        except OSError as e:
            self._fail(ConnectionError(f"connection lost: {e}"))
        except Exception as e:   # a bug here must not leave requests waiting forever
            self._fail(ProtocolError(f"unreadable response: {e!r}"))

    def _wake_for_rest(self) -> None:
        """Before waiting for the socket again: in the middle of a frame, have the kernel wake
        us only once the rest of it is there (SO_RCVLOWAT; Linux also wakes us when the
        receive window is about to close, or the connection ends). A 4 MiB READ response then
        takes a wake-up or two instead of one per ~600 KiB that happened to be queued, each of
        them an epoll_wait, a turn of the event loop and a recv: against smbd on loopback a
        get took about a tenth less CPU per GiB. Between frames any byte wakes us, except
        while two WRITEs or more wait for their answers: then two answers' worth (TWO_ANSWERS;
        those two are sure to come, promptly). smbd answers most WRITEs twice (an interim
        STATUS_PENDING, then the result), and each answer woke us apart: an epoll_wait, a turn
        of the event loop and a recv for an interim that only grants credits. The pipeline
        keeps the others in flight meanwhile."""
        if not self._lowat:
            return
        if self._frame is not None and not self._steps:
            want = len(self._into) - self._got
        elif self._writes_waiting >= 2 and not self._reads_waiting and not self._got and \
                self._head is None and not self._steps:
            want = TWO_ANSWERS
        else:
            want = 1
        if want != self._lowat:
            try:
                self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, want)
                self._lowat = want
            except OSError:
                self._lowat = 0     # not here: wake-ups as the data comes

    def _receive_small_frames(self) -> bool:
        """Between frames, while no READ is waiting (an upload's WRITE answers, metadata): what
        the socket holds, up to the scratch buffer, in one recv, and every whole frame in it
        delivered; a frame that goes on past it continues the ordinary way. Receiving the
        4-byte length and the frame apart took two recv calls per frame, and smbd answers each
        WRITE twice (an interim STATUS_PENDING, then the result): about five recv calls per
        WRITE, now one or less. False when the socket has nothing more for now (it held less
        than the buffer). No READ is waiting, so no large frame is due whose data would have
        to be received into a pool buffer or spliced: the one copy of a READ's data stays
        the only one."""
        view = memoryview(self._scratch)
        n = self._sock.recv_into(view)
        if not n:
            raise EOFError
        at = 0
        while n - at >= 4:
            size = self._checked_size(_LENGTH.unpack_from(view, at)[0], view[at])
            if at + 4 + size > n:
                break
            if not self._write_answer(view, at + 4, size):
                self._deliver(bytearray(view[at + 4:at + 4 + size]))
            at += 4 + size
            if self._error is not None:
                return False
        rest = view[at:n]
        if len(rest) >= 4:
            self._length[:] = rest[:4]
            self._start_frame()
            self._into[:len(rest) - 4] = rest[4:]
            self._got = len(rest) - 4
        elif rest:
            self._length[:len(rest)] = rest
            self._into, self._got = memoryview(self._length), len(rest)
        return n == len(view)

    def _write_answer(self, view: memoryview, at: int, size: int) -> bool:
        """An answer to a WRITE of a session that neither signs nor seals (an upload's, two per
        WRITE), taken here in fewer steps than _deliver's: only where _deliver would take it
        as it stands (a plain header from the server, not compounded, its MessageId waiting
        for a WRITE, no signature to check, the request's session), so that every frame
        _deliver would refuse still goes there. False: not taken (_deliver's to judge)."""
        protocol, structure, status, command, credits, flags, next_command, message_id, \
            session_id = _ANSWER.unpack_from(view, at)
        pending = self._pending.get(message_id)
        if command != wire.WRITE or pending is None or pending.command != wire.WRITE or \
                pending.signed or next_command or not flags & wire.FLAGS_SERVER_TO_REDIR or \
                protocol != wire.PROTOCOL_ID or structure != wire.HEADER_SIZE:
            return False
        keys = pending.keys
        interim = status == wire.STATUS_PENDING and flags & wire.FLAGS_ASYNC
        if keys is not None and (keys.encrypt or (session_id != keys.session_id and not interim)):
            return False
        if interim:
            if pending.interim:
                return False            # (_deliver refuses it)
            self._interim(pending, credits)
            return True
        self._complete(message_id, credits, _WriteAnswer(status, bytes(view[at:at + size])))
        return True

    def _frame_size(self, length) -> int:
        """The size a frame's 4-byte length announces, checked."""
        return self._checked_size(int.from_bytes(length, "big"), length[0])

    def _checked_size(self, size: int, first: int) -> int:
        """`size`, the length a frame announced (`first`: its first byte), checked."""
        if size >> 24:
            raise ProtocolError(f"not a direct-TCP SMB frame (first byte {first:#x})")
        if size > self.frame_limit:
            raise ProtocolError(f"the server sent a frame of {size} bytes; the largest "
                                f"expected is {self.frame_limit}")
        if size < wire.HEADER_SIZE:
            raise ProtocolError(f"a frame of {size} bytes cannot hold an SMB2 header")
        return size

    def _start_frame(self) -> None:
        size = self._frame_size(self._length)
        self._size = size
        if size >= POOLED_MIN and self._splice_waiting:
            # a READ that may go straight to its file: its header first, to decide
            self._head = bytearray(READ_HEAD)
            self._into, self._got = memoryview(self._head), 0
            return
        self._receive_whole(size)

    def _receive_whole(self, size: int) -> None:
        if size >= POOLED_MIN and self.pool is not None:
            self._frame = self.pool.take(size)
        else:
            self._frame = bytearray(size)
        self._into, self._got = memoryview(self._frame), 0

    # ---- READ data spliced socket -> pipe -> file ----

    def _after_head(self) -> None:
        """The first READ_HEAD bytes of a large frame are in. If it is a clean, successful
        READ response to a request that named its file, on a session that neither signs nor
        seals, its data is spliced to the file; anything else (a transform, an error, a
        length that does not fit...) is received whole and checked the ordinary way."""
        head, self._head = self._head, None
        plan = self._splice_plan(head)
        if plan is None:
            self._receive_whole(self._size)
            self._frame[:READ_HEAD] = head
            self._got = READ_HEAD
            return
        header, pending, data_offset, length = plan
        target = pending.into
        self._steps.extend([("skip", data_offset - READ_HEAD, None),
                            ("splice", length, target),
                            ("skip", self._size - data_offset - length, None)])
        self._spliced = (header, bytes(head), length)
        if not self._pipe:
            self._pipe = splice_pipe()

    def _splice_plan(self, head: bytearray):
        """(header, pending, data offset, data length) when the frame may be spliced, else None."""
        if head[:4] != wire.PROTOCOL_ID:
            return None
        try:
            header = Header.parse(head)
        except ValueError:
            return None
        pending = self._pending.get(header.message_id)
        if pending is None or pending.into is None or pending.command != wire.READ or \
                header.command != wire.READ or header.status != wire.STATUS_SUCCESS or \
                header.next_command or not header.flags & wire.FLAGS_SERVER_TO_REDIR or \
                pending.signed or pending.keys is None or pending.keys.encrypt or \
                header.session_id != pending.keys.session_id:
            return None
        structure, data_offset, _r, length = struct.unpack_from("<HBBI", head, wire.HEADER_SIZE)
        if structure != 17 or data_offset < READ_HEAD or length > pending.into.asked or \
                data_offset + length > self._size or not length:
            return None
        return header, pending, data_offset, length

    def _splice_step(self) -> bool:
        """Moves the current step on (skipping padding, or data socket -> pipe -> file);
        False when the socket has nothing more for now."""
        kind, left, target = self._steps[0]
        if left:
            if kind == "skip":
                n = self._sock.recv_into(memoryview(self._scratch)[:min(left, len(self._scratch))])
            else:
                try:
                    n = os.splice(self._sock.fileno(), self._pipe[1], min(left, PIPE_SIZE),
                                  flags=SPLICE_F_MOVE | SPLICE_F_NONBLOCK)
                except BlockingIOError:
                    return False
                if n:
                    self._drain_pipe(n, target)
            if not n:
                raise EOFError
            left -= n
            self._steps[0] = (kind, left, target)
            if left:
                return True
        self._steps.popleft()
        if not self._steps:
            header, head, length = self._spliced
            self._spliced = None
            self.spliced += length
            self._into, self._got = memoryview(self._length), 0
            self._complete(header.message_id, header.credits,
                           Response(header, head, spliced=length))
        return True

    def _drain_pipe(self, n: int, target: FileTarget) -> None:
        """The n bytes just spliced into the pipe -> the file, at the READ's place in it."""
        while n:
            try:
                w = os.splice(self._pipe[0], target.fd, n, offset_dst=target.offset,
                              flags=SPLICE_F_MOVE)
            except OSError as e:
                raise LocalFileError(f"writing the downloaded data failed: {e}") from None
            if not w:
                raise LocalFileError("writing the downloaded data failed: the file took nothing")
            target.offset += w
            n -= w

    # ---- credits ----

    def charge_for(self, size: int) -> int:
        return charge_needed(size) if self.multi_credit else 1

    def can_send(self, payload: int) -> bool:
        """Whether a request moving `payload` bytes has its credits at hand."""
        return self._balance >= self.charge_for(payload)

    @property
    def credits_held(self) -> int:
        """Credits granted so far and not given back: unused, plus those of requests in flight
        (the server's window for this connection, as far as it has opened it)."""
        return self._balance + self._in_flight

    async def _take_credits(self, charge: int, *, or_none: bool = False) -> int | None:
        """The next MessageId, `charge` credits taken, once responses have brought them. With
        nothing in flight and too few held none will come: the server is refused, or
        (`or_none`: the caller can do with fewer at a time) None is returned."""
        while self._balance < charge:
            if self._error is not None:
                raise self._error
            if not self._in_flight:
                # nothing is in flight, so no response will ever bring more
                if or_none:
                    return None
                self._fail(ProtocolError(f"the server granted too few credits: {self._balance} "
                                         f"held, {charge} needed, none in flight"))
                raise self._error
            self._credit_change.clear()
            self._credit_waiters += 1
            try:
                # credits come back with answers, each due within `timeout`; as long a wait
                # with none back means none will come (the requests in flight may be ones
                # whose callers gave up, which the deadlines no longer watch)
                await asyncio.wait_for(self._credit_change.wait(), self.timeout)
            except asyncio.TimeoutError:
                self._fail(ChannelTimeout(f"no credits came back within {self.timeout:g} s: "
                                          f"{self._balance} held, {charge} needed, "
                                          f"{self._in_flight} in flight unanswered"))
                raise self._error from None
            finally:
                self._credit_waiters -= 1
        return self._take_credits_now(charge)

    def _take_credits_now(self, charge: int) -> int:
        """The next MessageId, charge credits taken (the caller has seen there are enough)."""
        if self._error is not None:
            raise self._error
        self._balance -= charge
        self._in_flight += charge
        self.peak_in_flight = max(self.peak_in_flight, self._in_flight)
        message_id = self._next_id
        self._next_id += charge
        return message_id

    def _credits_to_ask(self, charge: int) -> int:
        held = self._balance + self._in_flight
        return max(charge, charge + CREDIT_TARGET - held) if held < CREDIT_TARGET else charge

    def _granted(self, credits: int) -> None:
        self._balance = min(self._balance + credits, CREDIT_CAP)
        if self._credit_waiters:        # (twice per WRITE of an upload: no call when none waits)
            self._credit_change.set()

    # ---- requests ----

    async def request(self, command: int, body: bytes, *, keys: SessionKeys | None = None,
                      tree_id: int = 0, payload: int = 0, data=None, session_id: int = 0,
                      expect=(wire.STATUS_SUCCESS,), what: str = "",
                      keep_request: bool = False, sign: bool = False,
                      verify: bool = True, into: FileTarget | None = None) -> Response:
        """Sends one request and returns its final response. `payload`: the bytes it moves
        (sets the CreditCharge); `data`: bytes sent after `body` (a WRITE's data, not copied
        unless the message is signed or sealed); sign: sign this request even where the
        session does not sign everything (a 3.1.1 TREE_CONNECT); verify=False: the caller
        checks the response's signature itself (a binding, whose answers are signed with a
        key that only its end defines); into: a READ's file, where its data may be spliced
        (then Response.spliced says how much went there). A status outside `expect` raises
        SMBError (expect=None: no status raises)."""
        renewer = self.renewer if keys is not None and command not in _NOT_RENEWED else None
        while True:
            if self._error is not None:
                raise self._error
            renewals = renewer.renewals if renewer is not None else 0
            charge = self.charge_for(payload)
            message_id = await self._take_credits(charge)
            pending, sent = self._send_request(message_id, charge, command, body, keys, tree_id,
                                               session_id, data, sign, verify, into, keep_request)
            response = await pending.future
            # the session's logon has ended (MS-SMB2, handling session expiration): logged on
            # again, the request goes again (once: a session refused right after its renewal
            # is not renewed again)
            if response.status != wire.STATUS_NETWORK_SESSION_EXPIRED or renewer is None or \
                    not await renewer.renew_session(renewals):
                break
            renewer = None
        response.request = sent
        if expect is not None and response.status not in expect:
            raise error_for(response.status, what or _command_name(command))
        return response

    async def compound(self, parts, *, keys: SessionKeys | None,
                       tree_id: int) -> list[Response] | None:
        """Related requests sent in one frame (MS-SMB2 3.2.4.1.4), each after the first acting
        on the file the first one opened (its body names the FileId all 0xFF): `parts` as
        (command, body, payload). Their Responses in order, statuses unchecked (a server
        answers the requests after a failed one with its failure). A stat, or a small file's
        CREATE, READ or WRITE and CLOSE, then take one round trip instead of two or three.
        None, nothing sent, where the server's window will not hold the chain's credits at
        once (it grants one at a time, say): the caller sends the requests one by one."""
        if self._error is not None:
            raise self._error
        charges = [self.charge_for(payload) for _command, _body, payload in parts]
        message_id = await self._take_credits(sum(charges), or_none=True)
        if message_id is None:
            return None
        sealed = bool(keys and keys.encrypt)
        signed = bool(keys and keys.signing_key and keys.sign)
        messages, pendings = [], []
        for i, ((command, body, _payload), charge) in enumerate(zip(parts, charges)):
            last = i == len(parts) - 1
            size = wire.HEADER_SIZE + len(body)
            padded = size if last else wire.pad8(size)          # each request 8-byte aligned
            header = Header(command=command, flags=wire.FLAGS_RELATED if i else 0,
                            credit_charge=charge if self.multi_credit else 0,
                            credits=self._credits_to_ask(charge), message_id=message_id,
                            next_command=0 if last else padded, tree_id=tree_id,
                            session_id=keys.session_id if keys else 0)
            message = bytearray(header.pack() + body + bytes(padded - size))
            if signed and not sealed:   # each signed over itself, its padding too (3.2.4.1.1)
                security.apply_signature(keys.signing_algorithm, keys.signing_key, message)
            messages.append(message)
            pending = self._register(message_id, charge, command, keys, signed and not sealed, None)
            if signed and not sealed:
                pending.signature = bytes(message[48:64])
            pending.chained = pendings
            pendings.append(pending)
            message_id += charge
        chain = b"".join(messages)
        if sealed:
            transform, ciphertext = security.encrypt(keys.cipher, keys.encrypt_key, keys.session_id, chain)
            self._send([_LENGTH.pack(len(transform) + len(ciphertext)), transform, ciphertext])
        else:
            self._send([_LENGTH.pack(len(chain)), chain])
        futures = [pending.future for pending in pendings]
        try:
            # (awaited in turn, not gathered: gather's own future costs another turn of the
            # event loop per compound; their answers usually come in one frame)
            return [await future for future in futures]
        except BaseException:
            for future in futures:      # where the channel fails, each one's exception is taken
                if future.done():
                    _taken(future)
                else:
                    future.add_done_callback(_taken)
            raise

    def start_request(self, command: int, body: bytes, *, keys: SessionKeys | None = None,
                      tree_id: int = 0, payload: int = 0, data=None,
                      into: FileTarget | None = None, waiter=None) -> asyncio.Future | None:
        """request(), begun without a task where nothing has to wait: with the credits at
        hand, the request is sent now and the future its final Response will settle is
        returned (its status not checked: the caller does); None when the credits are short
        (request() waits for them). A download's READs go out this way, from the task that
        takes their data: a task per READ cost the event loop two more turns per READ (the
        task's first step, then waking the task that waits for it)."""
        if self._error is not None:
            raise self._error
        charge = self.charge_for(payload)
        if self._balance < charge:
            return None
        pending, _sent = self._send_request(self._take_credits_now(charge), charge, command, body,
                                            keys, tree_id, 0, data, False, True, into, False,
                                            waiter)
        return pending.future

    def start_write(self, body: bytes, data, tree_id: int, waiter) -> None:
        """start_request(WRITE, body, data=data, payload=len(data), waiter=waiter) for an upload
        whose WRITE has its credits at hand (can_send), in fewer steps where the session
        neither signs nor seals: the credits taken, the frame packed and registered, its head
        sent and its file range handed to sendfile in this one Python frame, as long as
        nothing else is queued before it and the socket takes it all."""
        keys = self.keys
        if keys is None or keys.encrypt or (keys.signing_key and keys.sign) or \
                data.__class__ is not FileRange:
            if self.start_request(wire.WRITE, body, keys=keys, tree_id=tree_id, payload=len(data),
                                  data=data, waiter=waiter) is None:
                raise ProtocolError("a WRITE started without its credits")     # (a bug)
            return
        if self._error is not None:
            raise self._error
        n = data.length
        charge = self.charge_for(n)
        if self._balance < charge:
            raise ProtocolError("a WRITE started without its credits")         # (a bug)
        message_id = self._take_credits_now(charge)
        head = self._plain_head(wire.WRITE, charge, message_id, tree_id, keys.session_id, body, n)
        self._register(message_id, charge, wire.WRITE, keys, False, None, waiter)
        if self._unsent or self._writing or self.send_buffer is None:
            self._send_frame(head, data)        # the general way (and the first WRITE's setup)
            return
        unsent = self._unsent
        try:
            sent = self._sock.send(head, socket.MSG_MORE)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as e:
            self._fail(ConnectionError(f"connection lost: {e}"))
            return
        if sent < len(head):
            unsent.append(head[sent:])
        else:
            try:
                sent = self._sendfile(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except LocalFileError as e:
                self._fail(e)
                return
            except OSError as e:
                self._fail(ConnectionError(f"connection lost: {e}"))
                return
            if sent == n:
                return
            if sent:
                data = FileRange(data.fd, data.offset + sent, n - sent)
        unsent.append(data)
        self._flush()       # the rest when the socket is writable (the range held: _hold_ranges)

    def _send_request(self, message_id: int, charge: int, command: int, body: bytes,
                      keys: SessionKeys | None, tree_id: int, session_id: int, data, sign: bool,
                      verify: bool, into: FileTarget | None, keep_request: bool, waiter=None):
        """Builds, signs or seals and sends one request whose credits are taken; returns its
        _Pending (the future, the deadline) and the request as sent when keep_request."""
        session_id = keys.session_id if keys else session_id
        sealed = bool(keys and keys.encrypt)
        signed = bool(keys and keys.signing_key and (keys.sign or sign))
        if not (sealed or signed or keep_request):
            # the common case (every WRITE of an unsigned upload) in fewer steps: no Header
            # object, the head packed in one call, then the data
            head = self._plain_head(command, charge, message_id, tree_id, session_id, body,
                                    len(data) if data is not None else 0)
            pending = self._register(message_id, charge, command, keys, False, into, waiter)
            self._send_frame(head, data)
            return pending, None
        if isinstance(data, FileRange):
            data = data.read()          # the signature or the cipher needs the bytes themselves
        header = Header(command=command, credit_charge=charge if self.multi_credit else 0,
                        credits=self._credits_to_ask(charge), message_id=message_id,
                        tree_id=tree_id, session_id=session_id)
        parts = [header.pack(), body] + ([data] if data is not None else [])
        if sealed:
            transform, ciphertext = security.encrypt(keys.cipher, keys.encrypt_key, keys.session_id,
                                                     b"".join(parts))
            parts = [transform, ciphertext]
        elif signed:
            message = bytearray(b"".join(parts))
            security.apply_signature(keys.signing_algorithm, keys.signing_key, message)
            parts = [message]
        # as it went out (signed: a binding's preauthentication hash covers the signature)
        sent = b"".join(parts) if keep_request else None
        pending = self._register(message_id, charge, command, keys, signed and verify, into,
                                 waiter)
        if signed and not sealed:
            pending.signature = bytes(parts[0][48:64])
        self._send([_LENGTH.pack(sum(len(p) for p in parts)), *parts])
        return pending, sent

    def _plain_head(self, command: int, charge: int, message_id: int, tree_id: int, session_id: int,
                    body: bytes, data_length: int) -> bytes:
        """A request's frame length, header (neither signed nor sealed) and body, packed in one
        step, for `data_length` bytes of data to follow."""
        return b"".join((_LENGTH.pack(wire.HEADER_SIZE + len(body) + data_length), _REQUEST_HEADER.pack(
            wire.PROTOCOL_ID, wire.HEADER_SIZE, charge if self.multi_credit else 0, command,
            self._credits_to_ask(charge), message_id, tree_id, session_id), body))

    def _register(self, message_id: int, charge: int, command: int, keys: SessionKeys | None,
                  signed: bool, into: FileTarget | None, waiter=None) -> _Pending:
        """The _Pending a request sent now waits on: its future (or the waiter standing for
        it), its deadline."""
        future = self._loop.create_future() if waiter is None else waiter
        if into is not None:
            into = FileTarget(os.dup(into.fd), into.offset, into.asked)
            self._splice_waiting += 1
        if command == wire.READ:
            self._reads_waiting += 1
        elif command == wire.WRITE:
            self._writes_waiting += 1
            if self._writes_waiting == 2:
                self._wake_for_rest()       # two answers' worth from now on
        # a deadline per request and one timer per channel (_check_deadlines), the future
        # awaited directly: asyncio.wait_for(asyncio.shield(...)) made three more turns of the
        # event loop per answer, and a timer per request cost each WRITE of an upload a
        # TimerHandle, its place in the loop's heap and its cancellation
        deadline = self._loop.time() + self.timeout
        pending = _Pending(command, charge, future, keys, signed, into, deadline)
        self._pending[message_id] = pending
        if self._watchdog is None or deadline < self._watchdog.when():
            # (sooner than the timer only where `timeout` was shortened since it was set)
            if self._watchdog is not None:
                self._watchdog.cancel()
            self._watchdog = self._loop.call_at(deadline, self._check_deadlines)
        return pending

    def _check_deadlines(self) -> None:
        """A request unanswered past its deadline (`timeout` after it was sent) gives the
        connection up: every request waiting on it fails with the ChannelTimeout, and a
        transfer goes on over the other channels. One whose waiter has gone (cancelled) is
        not waited for. Otherwise the timer is set again for the next deadline: while
        requests come and go it fires about once per `timeout`."""
        self._watchdog = None
        if self._error is not None:
            return
        # the loop runs a timer up to its clock's resolution early: that much is "due"
        now = self._loop.time() + DEADLINE_SLACK
        due = None
        for pending in self._pending.values():
            if pending.future.done() or pending.deadline == NO_DEADLINE:
                continue
            if pending.deadline <= now:
                self._fail(ChannelTimeout(f"no answer to {_command_name(pending.command)} "
                                          f"within {self.timeout:g} s"))
                return
            if due is None or pending.deadline < due:
                due = pending.deadline
        if due is not None:
            self._watchdog = self._loop.call_at(due, self._check_deadlines)

    # ---- responses ----

    def _deliver(self, frame: bytes) -> None:
        sealed_by = None
        if frame[:4] == wire.TRANSFORM_ID:
            try:
                session_id, _size = security.parse_transform(frame)
            except security.DecryptError as e:
                raise ProtocolError(f"bad transform header: {e}") from None
            sealed_by = self._sessions.get(session_id)
            if sealed_by is None or not sealed_by.cipher:
                raise ProtocolError(f"encrypted response for unknown session {session_id:#x}")
            try:
                frame = security.decrypt(sealed_by.cipher, sealed_by.decrypt_key, frame)
            except security.DecryptError as e:
                raise ProtocolError(f"encrypted response failed to decrypt: {e}") from None
        try:
            header = _parse_header(frame)
        except ValueError as e:
            raise ProtocolError(f"bad response header: {e}") from None
        if header.next_command:
            self._deliver_chain(frame, header, sealed_by)
        else:
            self._deliver_one(frame, header, sealed_by, False)

    def _deliver_chain(self, frame, header: Header, sealed_by) -> None:
        """A frame of compounded responses: each answers a request of a compound (the frame's
        first response decides nothing for the others), checked and delivered on its own. A
        NextCommand off the 8-byte grid, short of a header, or at or past the frame's end
        is a lie."""
        start = 0
        while True:
            step = header.next_command
            end = start + step if step else len(frame)
            if step and (step % 8 or step < wire.HEADER_SIZE or end + wire.HEADER_SIZE > len(frame)):
                raise ProtocolError(f"a compounded response whose NextCommand ({step}) does not "
                                    f"lead to the next response of its frame")
            self._deliver_one(frame[start:end], header, sealed_by, True)
            if not step:
                return
            start = end
            try:
                header = _parse_header(frame[start:])
            except ValueError as e:
                raise ProtocolError(f"bad response header in a compounded response: {e}") from None

    def _deliver_one(self, frame, header: Header, sealed_by, chained: bool) -> None:
        if not header.flags & wire.FLAGS_SERVER_TO_REDIR:
            raise ProtocolError("a message without SERVER_TO_REDIR: not a response")
        if header.command == wire.OPLOCK_BREAK and header.message_id == UNSOLICITED:
            if chained:
                raise ProtocolError("a compounded response that is an oplock break")
            return      # the client asks for no oplocks or leases: a break concerns nothing here
        pending = self._pending.get(header.message_id)
        if pending is None:
            raise ProtocolError(f"a response to MessageId {header.message_id}, which has no "
                                f"request waiting")
        if chained and pending.chained is None:
            raise ProtocolError("a compounded response to a request that was not compounded")
        if header.command != pending.command:
            raise ProtocolError(f"{_command_name(header.command)} response to a "
                                f"{_command_name(pending.command)} request")
        keys = pending.keys
        interim = header.status == wire.STATUS_PENDING and header.flags & wire.FLAGS_ASYNC
        if keys is not None and sealed_by is not None and sealed_by is not keys:
            raise ProtocolError("response sealed with another session's key")
        if keys is not None and keys.encrypt and sealed_by is None:
            raise ProtocolError(f"unencrypted {_command_name(header.command)} response on an "
                                f"encrypted session")
        if keys is not None and header.session_id != keys.session_id and not interim:
            raise ProtocolError(f"response for session {header.session_id:#x}, asked on "
                                f"{keys.session_id:#x}")
        if pending.signed and sealed_by is None and not interim:
            if not header.flags & wire.FLAGS_SIGNED:
                raise ProtocolError(f"unsigned {_command_name(header.command)} response on a "
                                    f"signed session")
            # (wire.ECHOED_FAILURES come with the request's own signature where no key could
            # sign them: taken so only with that very signature, where Samba's client takes
            # them unchecked, and only as the failures they are)
            if not security.verify(keys.signing_algorithm, keys.signing_key, frame) and not (
                    header.status in wire.ECHOED_FAILURES and pending.signature
                    and frame[48:64] == pending.signature):
                raise ProtocolError(f"bad signature on the {_command_name(header.command)} "
                                    f"response (MessageId {header.message_id}): the message "
                                    f"was altered or not sent by the server")
        if interim:
            if pending.interim:         # (as Samba's client: one STATUS_PENDING a request)
                raise ProtocolError(f"a second interim answer to {_command_name(pending.command)} "
                                    f"(MessageId {header.message_id})")
            self._interim(pending, header.credits)
            return
        self._complete(header.message_id, header.credits, Response(header, frame))

    def _interim(self, pending: _Pending, credits: int) -> None:
        """The server answered STATUS_PENDING: the final answer follows with the same
        MessageId. Its credits count now. The request's timer starts again (MS-SMB2 3.2.5.1.5:
        a server busy on it, an oplock break to wait for, has said so), once: a second interim
        answer is refused. So do the timers of the requests after it in its compound (a
        server handles them after it). A CHANGE_NOTIFY waits without a deadline: it is
        answered when something changes."""
        pending.interim = True
        self._granted(credits)
        if pending.command == wire.CHANGE_NOTIFY:
            pending.deadline = NO_DEADLINE
            return
        deadline = self._loop.time() + self.timeout
        for waiting in pending.chained or (pending,):
            waiting.deadline = max(waiting.deadline, deadline)

    def _complete(self, message_id: int, credits: int, response) -> None:
        pending = self._pending.pop(message_id)
        self._forget(pending)
        self.answered += 1
        self._in_flight -= pending.charge
        self._granted(credits)
        if not pending.future.done():
            pending.future.set_result(response)

    def _forget(self, pending: _Pending) -> None:
        if pending.command == wire.READ:
            self._reads_waiting -= 1
        elif pending.command == wire.WRITE:
            self._writes_waiting -= 1
        if pending.into is not None:
            os.close(pending.into.fd)
            pending.into = None
            self._splice_waiting -= 1


PACED = (b"bbr",)    # congestion controls that pace every socket they run (bbr, bbr2, bbr3...)
UNPACED = b"reno"    # built in, and always among the ones an unprivileged process may choose


def is_loopback(address: str) -> bool:
    """Whether a numeric address (as a connected socket reports its peer) is this host's own:
    127.0.0.0/8, ::1, or an IPv4 loopback address mapped into IPv6."""
    address = address.split("%", 1)[0]
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            packed = socket.inet_pton(family, address)
        except (OSError, ValueError):
            continue
        if family == socket.AF_INET:
            return packed[0] == 127
        return packed == bytes(15) + b"\x01" or \
            (packed[:12] == bytes(10) + b"\xff\xff" and packed[12] == 127)
    return False


def unpace(sock: socket.socket) -> str | None:
    """A loopback connection whose congestion control paces (BBR, where it is the system's
    default) is switched to one that does not (reno); returns the one now in use (None where
    the system does not say). BBR paces each packet it sends: once an upload outruns the
    pacing rate, every 64 KiB packet waits for a high-resolution timer, armed, fired and
    followed by a softirq of its own, and a sendfile upload outruns it at once. A loopback
    connection has no link or queue for pacing to protect, and no loss for the congestion
    control to react to; there the timers only cost CPU (on a 2-core virtual machine, an
    upload to smbd took 0.45 CPU-s/GiB with BBR and 0.28 with reno). Best effort: where the
    option is refused, the connection keeps what it has."""
    try:
        current = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16).rstrip(b"\0")
    except (OSError, AttributeError):
        return None
    if current.startswith(PACED):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, UNPACED)
            current = UNPACED
        except OSError:
            pass
    return current.decode(errors="replace")


def raise_send_buffer(sock: socket.socket) -> int:
    """The largest send buffer this process may ask for (SO_SNDBUF: net.core.wmem_max, which
    the kernel doubles), where that is more than the kernel's autotuning would ever reach
    (net.ipv4.tcp_wmem's maximum); returns the buffer set, 0 where it was left as it was.
    For a sendfile upload: with the autotuned 4 MiB, an 8 MiB WRITE went out in ~4 sendfile
    calls, a third of them refused (EAGAIN) and waited for again; with 8 MiB, ~2.6 calls per
    WRITE and a third less system time per GiB. Asking for less than autotuning reaches would
    lock the buffer smaller (many systems' wmem_max is 208 KiB): then nothing is asked."""
    try:
        with open("/proc/sys/net/core/wmem_max", "rb") as f:
            largest = int(f.read())
        with open("/proc/sys/net/ipv4/tcp_wmem", "rb") as f:
            autotuned = int(f.read().split()[2])
        if 2 * largest <= max(autotuned, sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)):
            return 0
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, largest)
        return sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
    except (OSError, ValueError, IndexError):
        return 0


def _literal_address(host: str, port: int) -> list[tuple] | None:
    """getaddrinfo's answer for a numeric IPv4 or IPv6 address, without asking it: the
    resolver runs in a thread of asyncio's executor, and a str host is first encoded with the
    idna codec (whose import alone cost about 12 ms of every command). None for a name."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except (OSError, ValueError):
            continue
        sockaddr = (host, port) if family == socket.AF_INET else (host, port, 0, 0)
        return [(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr)]
    return None


_NAMES = ("NEGOTIATE", "SESSION_SETUP", "LOGOFF", "TREE_CONNECT", "TREE_DISCONNECT", "CREATE",
          "CLOSE", "FLUSH", "READ", "WRITE", "LOCK", "IOCTL", "CANCEL", "ECHO", "QUERY_DIRECTORY",
          "CHANGE_NOTIFY", "QUERY_INFO", "SET_INFO", "OPLOCK_BREAK")


def _command_name(command: int) -> str:
    return _NAMES[command] if command < len(_NAMES) else f"command {command:#x}"
