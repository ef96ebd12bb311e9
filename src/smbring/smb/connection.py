"""One SMB2 connection's state machine: frames in, response frames out.

``Connection.handle_frame(bytes)`` takes one SMB2 message (or compound chain) without its
NetBIOS length prefix and returns the response frames to send, signed where the session
requires it. The protocol state (dialect, sessions, tree connects, opens, credits, signing) lives
here; file-system work is delegated to the share's VFS. Nothing here touches a socket.
"""
from __future__ import annotations

import errno
import fnmatch
import logging
import os
import stat
import struct
import time
import uuid
import zlib
from dataclasses import dataclass, field

from smbring.datapath import FILE_MAPS, FileRange, SendDescriptor
from smbring.server.users import PasswordLookup
from smbring.smb import acl, locks, notify, ntlm, security, sharemodes, wire
from smbring.smb.credits import CreditWindow, charge_needed
from smbring.smb.limits import MAX_IO, Limits
from smbring.smb.wire import Header
from smbring.vfs.modules import Posix
from smbring.vfs.posix import (STREAMS_DIR, DosInfo, NotAFile, PathError, PosixVFS, get_dos, get_dos_at, get_sd, list_eas,
                               set_dos, set_ea, set_sd, split_path, split_stream)

log = logging.getLogger("smbring.smb")

MAX_FILE_SIZE = 0xFFFFFFF0000   # NTFS's largest file; Windows clients expect the limit
MAX_IO_SMB202 = 65536   # SMB 2.0.2 has no multi-credit requests: 64 KiB at most (MS-SMB2 3.3.5.4)
ROOT_UUID = uuid.uuid4().bytes
FID_ANY = b"\xff" * 16

SPNEGO_INIT = ntlm.negotiate_token()   # the NEGOTIATE response's hint: NTLMSSP only


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


class ResponseBudget:
    """What the responses to one frame may still take: a compound of requests that each ask
    for up to MaxTransactSize must not make the server build a response of gigabytes (or one
    the 24-bit NetBIOS length cannot carry). A request asking for more than is left gets
    STATUS_INSUFFICIENT_RESOURCES."""

    def __init__(self, total: int):
        self.left = total

    def allows(self, asked: int) -> bool:
        return asked <= self.left

    def spend(self, body) -> None:
        size = len(body.prefix) + body.range.length if isinstance(body, FilePayload) else \
            len(body) if isinstance(body, (bytes, bytearray, memoryview)) else 0
        self.left -= 64 + 8 + size      # the header and the padding of a compound part too


@dataclass
class Chain:
    """What a compound chain carries from one request to the next (MS-SMB2 3.3.5.2.7)."""

    related: bool = False
    last: bool = True
    single: bool = True                    # the frame holds one request, not a compound
    session_id: int = 0xFFFFFFFFFFFFFFFF   # before the first request: nothing to inherit
    tree_id: int = 0xFFFFFFFF
    fid: bytes | None = None               # the open the previous request used or created
    create_error: int = 0                  # a failed CREATE fails the requests that follow it


@dataclass
class AsyncRequest:
    """A request answered STATUS_PENDING, completed later by complete_async()."""

    async_id: int
    hdr: Header
    sealed: bool
    signed: bool
    on_cancel: object = None     # called when CANCEL, close or disconnect ends the wait
    close_status: int = wire.STATUS_CANCELLED    # the answer when its open is closed


class GoAsync(Exception):
    """Raised by a handler whose request must wait: `start(areq)` arranges its completion."""

    def __init__(self, start):
        super().__init__("pending")
        self.start = start


ALLOWED_FLAGS = (wire.FLAGS_RELATED | wire.FLAGS_SIGNED | wire.FLAGS_DFS | wire.FLAGS_PRIORITY_MASK |
                 wire.FLAGS_REPLAY)


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


class SMBError(Exception):
    def __init__(self, status: int):
        super().__init__(hex(status))
        self.status = status


def in_request(msg, offset: int, length: int):
    """The variable part of a request named by its offset (from the SMB2 header) and length;
    one that does not lie inside the request after the header is malformed."""
    if length and (offset < wire.HEADER_SIZE or offset + length > len(msg)):
        raise SMBError(wire.STATUS_INVALID_PARAMETER)
    return msg[offset:offset + length]


def status_for_oserror(e: OSError) -> int:
    if isinstance(e, NotAFile):     # a FIFO, socket or device, never opened: Samba's answer
        return wire.STATUS_IO_REPARSE_TAG_NOT_HANDLED
    return {
        errno.ENOENT: wire.STATUS_OBJECT_NAME_NOT_FOUND,
        errno.EEXIST: wire.STATUS_OBJECT_NAME_COLLISION,
        errno.EACCES: wire.STATUS_ACCESS_DENIED,
        errno.EPERM: wire.STATUS_ACCESS_DENIED,
        errno.EXDEV: wire.STATUS_ACCESS_DENIED,      # RESOLVE_BENEATH refused an escape
        errno.ELOOP: wire.STATUS_ACCESS_DENIED,
        errno.ENOTDIR: wire.STATUS_OBJECT_PATH_NOT_FOUND,
        errno.EISDIR: wire.STATUS_FILE_IS_A_DIRECTORY,
        errno.ENOTEMPTY: wire.STATUS_DIRECTORY_NOT_EMPTY,
        errno.ENOSPC: wire.STATUS_DISK_FULL,
        errno.ENAMETOOLONG: wire.STATUS_OBJECT_NAME_INVALID,
        errno.EROFS: wire.STATUS_MEDIA_WRITE_PROTECTED,
        errno.EMFILE: wire.STATUS_INSUFFICIENT_RESOURCES,     # out of descriptors: refuse
        errno.ENFILE: wire.STATUS_INSUFFICIENT_RESOURCES,     # this request, keep serving
        errno.ENOMEM: wire.STATUS_INSUFFICIENT_RESOURCES,
        errno.EDQUOT: wire.STATUS_DISK_FULL,
        errno.EFBIG: wire.STATUS_DISK_FULL,
    }.get(e.errno, wire.STATUS_ACCESS_DENIED)


@dataclass
class Share:
    name: str
    path: str
    read_only: bool = False
    guest_ok: bool = False
    valid_users: list = field(default_factory=list)   # lower-case names; empty: everyone
    encrypt: bool = False                              # smb encrypt = required
    vfs_objects: list = field(default_factory=list)    # data modules, top first (vfs.modules)
    read_path: str | None = None                       # auto, copy, splice, zc (None: server's)


@dataclass(eq=False)
class Open:
    fd: int
    parts: list
    is_dir: bool
    access: int
    delete_on_close: bool = False
    dir_entries: list | None = None
    dir_pos: int = 0
    key: tuple = ()                 # (st_dev, st_ino): where its byte-range locks live
    position: int = 0               # CurrentByteOffset: just past the last read or write
    fid: bytes = b""
    tree: "Tree | None" = None
    session_id: int = 0
    tree_id: int = 0
    waiting: list = field(default_factory=list)   # AsyncRequests that end when it closes
    watch: notify.Watch | None = None              # after its first CHANGE_NOTIFY
    granted: int = 0                               # access granted (generic rights mapped)
    mode: int = 0                                  # FileModeInformation, as last set
    stream: str | None = None                      # a named stream: parts are its depot file
    base_parts: list | None = None                 # the file as the client names it
    base_key: str | None = None                    # and its stream id, for a stream

    def display_name(self) -> str:
        """The path as the client knows it: "dir\\file" or "dir\\file:stream"."""
        name = "\\".join(self.base_parts if self.base_parts is not None else self.parts)
        return f"{name}:{self.stream}" if self.stream else name

    def path(self) -> str:
        return "/".join([self.tree.vfs.root] + self.parts)


# every open of every connection: a directory with an open file inside cannot be renamed
OPEN_FILES: set = set()
# files to delete when their last open closes ((dev, ino) -> the open that asked for it), as
# delete-on-close works on Windows: other opens keep the file until they close too
DELETE_PENDING: dict = {}


@dataclass
class Tree:
    share: Share | None          # None: IPC$
    vfs: PosixVFS | None
    io: object = None            # the share's VFS module stack for file data (None: inline)


@dataclass
class Session:
    id: int
    auth: object = None
    preauth: security.PreauthIntegrity | None = None
    valid: bool = False
    guest: bool = False
    user: str = ""
    signing_key: bytes = b""
    sign: bool = False
    encrypt_key: bytes = b""      # server -> client
    decrypt_key: bytes = b""      # client -> server
    encrypt: bool = False         # every response of this session is encrypted
    trees: dict = field(default_factory=dict)
    reauth_of: str | None = None  # the user, while a re-authentication is in progress


class Connection:
    def __init__(self, shares: dict[str, Share], *, passdb_path: str, allow_guest: bool = False,
                 signing_required: bool = False, encryption_required: bool = False,
                 local_address: str = "", io_modules: dict | None = None,
                 limits: Limits | None = None, ntlm_auth: str = "ntlmv2-only"):
        self.limits = limits or Limits()
        self.ntlm_auth = ntlm_auth               # Samba's `ntlm auth`: ntlmv2-only, ntlmv1-permitted
        self.local_address = local_address     # for FSCTL_QUERY_NETWORK_INTERFACE_INFO
        # share name -> VFS module stack; with them, a lone WRITE or FLUSH comes back from
        # handle_frame as a Deferred for the I/O layer to carry out
        self.io_modules = io_modules or {}
        self.shares = {k.lower(): v for k, v in shares.items()}
        self.passdb_path, self.lookup = passdb_path, PasswordLookup(passdb_path)   # user -> NT hash
        self.allow_guest = allow_guest
        self.signing_required = signing_required
        self.encryption_required = encryption_required
        self.cipher = 0
        self.signing_algorithm = None    # chosen by a 3.1.1 signing context, else by dialect
        self._sealed_by: Session | None = None   # the session whose key sealed the frame at hand
        self.credits = CreditWindow(self.limits.max_credits)
        self.smb1_negotiated = False     # an SMB1 NEGOTIATE was answered with the SMB2 wildcard
        self.dialect = 0
        self.preauth = security.PreauthIntegrity()
        self.server_guid = uuid.uuid4().bytes
        self.sessions: dict[int, Session] = {}
        self.opens: dict[bytes, Open] = {}
        self.next_id = 1
        self.client_guid = b"\0" * 16
        self.client_security_mode = 0
        self.client_caps = 0
        self.client_dialects: tuple = ()
        self.async_requests: dict[int, AsyncRequest] = {}
        self._vfs: dict[str, PosixVFS] = {}     # share name -> its root, for every tree of it
        self.locks_held = 0                     # byte-range locks of all its opens
        self.outbox: list[SendDescriptor] = []
        self.on_output = None    # called when a pending request completes outside handle_frame
        self._seal_bufs = None

    # -- what the server asks of a connection ---------------------------------------------
    def logged_on(self) -> bool:
        """Whether a session is established (before that, frames are small and time out)."""
        return any(s.valid for s in self.sessions.values())

    def frame_limit(self) -> int:
        """The largest frame (without its 4-byte prefix) the connection accepts now."""
        return self.limits.max_frame if self.logged_on() else self.limits.max_frame_unauthenticated

    def idle_closable(self) -> bool:
        """Whether dropping the connection now would lose nothing: no open files and no
        request waiting (Samba's deadtime applies only then)."""
        return not self.opens and not self.async_requests

    # -- framing -------------------------------------------------------------------------
    def handle_frame(self, frame: bytes) -> list[SendDescriptor]:
        """One message or compound chain in; the responses to send, each with its NetBIOS
        length prefix, as send descriptors (a lone unsigned READ keeps its data in the file).
        A ConnectionError means the client broke the protocol: drop the connection."""
        if frame[:4] == b"\xffSMB":
            return [self._frame(self._smb1_negotiate(bytes(frame)))]
        if frame[:4] == wire.TRANSFORM_ID:
            return self._encrypted_frame(frame)
        if frame[:4] != wire.PROTOCOL_ID:
            raise ConnectionError("not SMB2")
        return self._plain_frame(frame, None)

    def _encrypted_frame(self, frame) -> list[SendDescriptor]:
        """Decrypts, handles, and encrypts the answer with the session's key."""
        try:
            sid, _size = security.parse_transform(frame)
            s = self.sessions.get(sid)
            if not s or not s.decrypt_key:
                raise ConnectionError("encrypted message for an unknown session")
            plain = security.decrypt(self.cipher, s.decrypt_key, frame)
        except security.DecryptError as e:
            raise ConnectionError(f"undecryptable message: {e}") from None
        return self._plain_frame(memoryview(plain), s)

    def _split(self, frame) -> list[tuple[Header, object]]:
        """The requests of a frame, each header parsed and its MessageIds taken from the credit
        window, before any is handled: a frame that breaks the framing, holds more requests
        than `max compound requests` or reuses a MessageId is refused whole."""
        messages = []
        offset = 0
        while True:
            if len(messages) >= self.limits.max_compound:
                raise ConnectionError(f"more than {self.limits.max_compound} requests in one frame")
            try:
                hdr = Header.parse(frame[offset:offset + 64])
            except (ValueError, struct.error) as e:
                raise ConnectionError(f"malformed SMB2 header: {e}") from None
            end = offset + hdr.next_command if hdr.next_command else len(frame)
            if end > len(frame) or end < offset + 64:
                raise ConnectionError("bad NextCommand")
            if hdr.command != wire.CANCEL and not self.credits.consume(hdr.message_id, self._charge(hdr)):
                raise ConnectionError(f"MessageId {hdr.message_id} (charge {hdr.credit_charge}) outside "
                                      f"the credit window [{self.credits.low}, +{self.credits.range})")
            messages.append((hdr, frame[offset:end]))
            if not hdr.next_command:
                return messages
            offset = end

    def _charge(self, hdr: Header) -> int:
        """The credits a request consumes: its CreditCharge once multi-credit requests exist
        (SMB 2.1 on), one before."""
        return max(hdr.credit_charge, 1) if self.dialect > wire.SMB202 else 1

    def _plain_frame(self, frame, encrypted_session) -> list[SendDescriptor]:
        # a decrypted message was authenticated by its cipher: it carries no signature
        self._sealed_by = encrypted_session
        messages = self._split(frame)
        out: list[tuple[Header, Header, object]] = []
        signed_requests: list[bool] = []
        chain = Chain(single=len(messages) == 1)
        budget = ResponseBudget(self.limits.max_frame)
        for i, (hdr, msg) in enumerate(messages):
            chain.related = bool(hdr.flags & wire.FLAGS_RELATED)
            chain.last = i == len(messages) - 1
            if chain.related:   # ids of the previous request (none before the first)
                hdr.session_id, hdr.tree_id = chain.session_id, chain.tree_id
            else:
                chain.fid = None
                if encrypted_session is not None and hdr.session_id != encrypted_session.id:
                    raise ConnectionError("an encrypted frame carried another session's request")
            resp = self._one(hdr, msg, chain, budget)
            if resp is not None:
                rhdr, body = resp
                if isinstance(body, FilePayload) and not chain.single:
                    body = body.materialize()   # a later request of the chain may close the file
                budget.spend(body)
                out.append((hdr, rhdr, body))
                signed_requests.append(bool(hdr.flags & wire.FLAGS_SIGNED))
        if len(out) == 1 and isinstance(out[0][2], FileIO):
            return self.outbox_drain() + [self._deferred(out[0], signed_requests, encrypted_session)]
        return self.outbox_drain() + self._responses(out, signed_requests, encrypted_session)

    def _deferred(self, response, signed_requests, encrypted_session) -> Deferred:
        req, rhdr, job = response

        def finish(result) -> list[SendDescriptor]:
            if isinstance(result, BaseException):
                rhdr.status = status_for_oserror(result) if isinstance(result, OSError) \
                    else wire.STATUS_INTERNAL_ERROR
                body = wire.error_body()
            else:
                body = job.done(result)
            return self._responses([(req, rhdr, body)], signed_requests, encrypted_session)

        return Deferred(job, finish)

    def _responses(self, out, signed_requests, encrypted_session) -> list[SendDescriptor]:
        if not out:
            return []
        seal = encrypted_session or next(
            (self.sessions[r.session_id] for _, r, _ in out
             if r.session_id in self.sessions and self.sessions[r.session_id].encrypt), None)
        if len(out) == 1 and isinstance(out[0][2], FilePayload) and seal is not None and seal.encrypt_key:
            # an encrypted READ: the plaintext is built in one reused buffer, read straight
            # into it, and sealed into another (the previous response has been sent by the
            # time the next frame is handled, so two buffers serve the connection)
            req, rhdr, payload = out[0]
            head = self._finish(req, rhdr, payload.prefix)
            r = payload.range
            plain, sealed = self._seal_buffers(len(head) + r.length)
            plain[:len(head)] = head
            done = Posix.pread_into_sync(r.fd, plain[len(head):], r.offset)
            plain[len(head) + done:] = bytes(r.length - done)
            return [self._sealed_frame(seal, plain, sealed)]
        if len(out) == 1 and isinstance(out[0][2], FilePayload) and seal is None:
            req, rhdr, payload = out[0]
            if not self._must_sign(rhdr, signed_requests[0]):
                head = self._finish(req, rhdr, payload.prefix)
                size = len(head) + payload.range.length
                return [SendDescriptor(size.to_bytes(4, "big") + bytes(head), payload.range,
                                       splice_safe=payload.splice_safe, read_path=payload.read_path)]
        # a compound response is 8-byte aligned and chained by NextCommand; each part is
        # signed on its own, after the chaining fields are final
        chained = bytearray()
        for i, (req, rhdr, body) in enumerate(out):
            if isinstance(body, FilePayload):
                body = body.materialize()
            part = self._finish(req, rhdr, body)
            if len(out) > 1:    # every part of a compound ends 8-byte aligned, the last too
                part += b"\0" * (wire.pad8(len(part)) - len(part))   # (as Windows sends it)
            if i < len(out) - 1:
                struct.pack_into("<I", part, 20, len(part))
            if seal is None and self._must_sign(rhdr, signed_requests[i]):
                security.apply_signature(self.sign_algorithm(),
                                         self.sessions[rhdr.session_id].signing_key, part)
            chained += part
        if seal is not None and seal.encrypt_key:
            return [self._sealed_frame(seal, chained)]
        return [self._frame(bytes(chained))]

    # -- asynchronous requests (blocking locks, change notify) ------------------------------
    def outbox_drain(self) -> list[SendDescriptor]:
        """Responses to requests that completed after their interim response."""
        out, self.outbox = self.outbox, []
        return out

    def complete_async(self, areq: "AsyncRequest", status: int, body: bytes | None = None) -> None:
        """Answers a pending request; the frame waits in the outbox for the I/O layer."""
        if self.async_requests.pop(areq.async_id, None) is None:
            return                                        # already answered or cancelled
        rhdr = Header(command=areq.hdr.command, status=status, flags=wire.FLAGS_ASYNC,
                      session_id=areq.hdr.session_id, async_id=areq.async_id)
        req = Header(command=areq.hdr.command, message_id=areq.hdr.message_id,
                     credit_charge=areq.hdr.credit_charge, credits=0,
                     flags=areq.hdr.flags & ~wire.FLAGS_RELATED)
        s = self.sessions.get(areq.hdr.session_id)
        frames = self._responses([(req, rhdr, body if body is not None else wire.error_body())],
                                 [areq.signed], s if areq.sealed else None)
        self.outbox.extend(frames)
        if self.on_output is not None:
            self.on_output()

    def cancel_async(self, areq: "AsyncRequest", status: int = wire.STATUS_CANCELLED) -> None:
        if areq.async_id in self.async_requests:
            if areq.on_cancel is not None:
                areq.on_cancel()
            self.complete_async(areq, status)

    def _cancel(self, hdr: Header) -> None:
        """CANCEL: by AsyncId, or by MessageId for a request still answered synchronously."""
        for areq in list(self.async_requests.values()):
            if (areq.async_id == hdr.async_id if hdr.flags & wire.FLAGS_ASYNC
                    else areq.hdr.message_id == hdr.message_id):
                self.cancel_async(areq)

    def _seal_buffers(self, size: int) -> tuple[memoryview, memoryview]:
        """Page-aligned buffers for an encrypted READ's plaintext and ciphertext, kept for the
        connection's next ones."""
        if self._seal_bufs is None or len(self._seal_bufs[0]) < size:
            import mmap
            cap = max(size, 1 << 20) + 4096
            self._seal_bufs = (mmap.mmap(-1, cap), mmap.mmap(-1, cap + 16))
        plain, sealed = self._seal_bufs
        return memoryview(plain)[:size], memoryview(sealed)

    def _sealed_frame(self, session: Session, plaintext, out=None) -> SendDescriptor:
        transform, ciphertext = security.encrypt(self.cipher, session.encrypt_key, session.id,
                                                 plaintext, out)
        size = len(transform) + len(ciphertext)
        return SendDescriptor(size.to_bytes(4, "big") + transform, ciphertext)

    @staticmethod
    def _frame(message: bytes) -> SendDescriptor:
        if len(message) > 0xFFFFFF:     # the NetBIOS length has 24 bits (the budget keeps us below)
            raise ConnectionError(f"a response of {len(message)} bytes cannot be framed")
        return SendDescriptor(len(message).to_bytes(4, "big") + message)

    @staticmethod
    def _finish(req: Header, rhdr: Header, body: bytes) -> bytearray:
        """The response message; its credits were granted when the request was taken on."""
        rhdr.flags |= wire.FLAGS_SERVER_TO_REDIR | (req.flags & wire.FLAGS_RELATED)
        rhdr.message_id = req.message_id
        rhdr.credit_charge = req.credit_charge
        return bytearray(rhdr.pack()) + body

    def sign_algorithm(self) -> int:
        if self.signing_algorithm is not None:
            return self.signing_algorithm
        return security.algorithm_for(self.dialect)

    def _must_sign(self, rhdr: Header, request_signed: bool) -> bool:
        """Responses are signed when their session signs everything, when the request was
        signed (MS-SMB2 3.3.4.1.1), and always the final SESSION_SETUP of SMB 3.x."""
        s = self.sessions.get(rhdr.session_id)
        if not s or not s.signing_key or s.guest:
            return False
        final_setup = rhdr.command == wire.SESSION_SETUP and rhdr.status == wire.STATUS_SUCCESS
        return s.sign or request_signed or (final_setup and self.dialect >= wire.SMB300)

    # -- dispatch ------------------------------------------------------------------------
    def _one(self, hdr: Header, msg, chain: "Chain", budget: "ResponseBudget"):
        rhdr = Header(command=hdr.command, session_id=hdr.session_id, tree_id=hdr.tree_id)
        if hdr.command == wire.CANCEL:
            self._cancel(hdr)
            return None
        # granted now, so that an interim response carries them and the final one none
        rhdr.credits = self.credits.grant(hdr.credits, self._charge(hdr))
        command = COMMANDS.get(hdr.command)
        session_ok = True
        try:
            if command is None or hdr.flags & ~ALLOWED_FLAGS:
                raise SMBError(wire.STATUS_INVALID_PARAMETER)
            if command.needs_session:
                try:
                    self._check_session(hdr, msg)
                except SMBError:
                    session_ok = False
                    if chain.related:   # MS-SMB2 3.3.5.2.7.2, as Samba and Windows answer
                        raise SMBError(wire.STATUS_INVALID_PARAMETER)
                    raise
            elif hdr.command == wire.SESSION_SETUP:
                self._check_session_setup(hdr, msg)
            elif hdr.command == wire.NEGOTIATE and hdr.flags & wire.FLAGS_SIGNED:
                raise SMBError(wire.STATUS_INVALID_PARAMETER)    # MS-SMB2 3.3.5.2.4
            if command.needs_tree:
                self.tree(hdr)
            if len(msg) < 66 or struct.unpack_from("<H", msg, 64)[0] != wire.REQUEST_SIZES[hdr.command] or \
                    len(msg) < 64 + (wire.REQUEST_SIZES[hdr.command] & ~1):
                raise SMBError(wire.STATUS_INVALID_PARAMETER)    # sizes checked before parsing a body
            sent, asked = command.sizes(msg)
            if max(sent, asked) > self.max_io():
                raise SMBError(wire.STATUS_INVALID_PARAMETER)    # over MaxRead/Write/TransactSize
            if self.dialect > wire.SMB202 and charge_needed(max(sent, asked)) > max(hdr.credit_charge, 1):
                raise SMBError(wire.STATUS_INVALID_PARAMETER)    # MS-SMB2 3.3.5.2.5
            if not budget.allows(asked):
                raise SMBError(wire.STATUS_INSUFFICIENT_RESOURCES)   # the frame's answers are full
            body, fid = command.handler(self, hdr, msg, rhdr, chain)
            if fid is not None:
                chain.fid = fid
            if isinstance(body, FileIO) and not (chain.single and body.io is not None):
                body = body.done(body.run_sync())   # a compound waits for nothing: inline
            return rhdr, body
        except GoAsync as e:
            if not chain.last:       # only the last of a compound may wait (Windows: <162>)
                rhdr.status = wire.STATUS_INTERNAL_ERROR
                return rhdr, wire.error_body()
            if len(self.async_requests) >= self.limits.max_pending_requests:
                rhdr.status = wire.STATUS_INSUFFICIENT_RESOURCES
                return rhdr, wire.error_body()
            areq = AsyncRequest(self.next_id, hdr, self._sealed_by is not None,
                                bool(hdr.flags & wire.FLAGS_SIGNED))
            self.next_id += 1
            self.async_requests[areq.async_id] = areq
            rhdr.status = wire.STATUS_PENDING
            rhdr.flags |= wire.FLAGS_ASYNC
            rhdr.async_id = areq.async_id
            e.start(areq)
            return rhdr, wire.error_body()
        except SMBError as e:
            log.debug("command %d: status %#x", hdr.command, e.status)
            rhdr.status = e.status
        except PathError as e:
            rhdr.status = (wire.STATUS_OBJECT_PATH_SYNTAX_BAD if e.kind == "syntax"
                           else wire.STATUS_OBJECT_NAME_INVALID)
        except ConnectionError:     # the client broke the protocol (an OSError: caught first)
            raise
        except OSError as e:
            log.debug("command %d: %s", hdr.command, e)
            rhdr.status = status_for_oserror(e)
        except (struct.error, IndexError, ValueError, UnicodeDecodeError):
            rhdr.status = wire.STATUS_INVALID_PARAMETER
        except Exception:  # a bug of ours: report it, answer, keep the connection
            log.exception("command %d failed", hdr.command)
            rhdr.status = wire.STATUS_INTERNAL_ERROR
        finally:
            chain.session_id = hdr.session_id if session_ok else 0
            chain.tree_id = hdr.tree_id if session_ok else 0
        if hdr.command == wire.CREATE:
            chain.create_error = rhdr.status
        return rhdr, wire.error_body()

    def max_io(self) -> int:
        """MaxReadSize, MaxWriteSize and MaxTransactSize as NEGOTIATE announced them."""
        return MAX_IO_SMB202 if self.dialect == wire.SMB202 else MAX_IO

    def _check_session(self, hdr: Header, msg) -> Session:
        s = self.sessions.get(hdr.session_id)
        if not s or not s.valid:
            raise SMBError(wire.STATUS_USER_SESSION_DELETED)
        self._check_protection(s, hdr, msg)
        return s

    def _check_protection(self, s: Session, hdr: Header, msg) -> None:
        """The request is covered by its session's encryption or signature, as the session
        requires (MS-SMB2 3.3.5.2.4, 3.3.5.2.9, 3.3.5.7). A request that is signed is verified
        whether or not the session requires signing."""
        if self._sealed_by is not None:
            return              # sealed with this session's key (_plain_frame checked)
        if s.encrypt:
            raise SMBError(wire.STATUS_ACCESS_DENIED)  # this session must be encrypted
        if hdr.flags & wire.FLAGS_SIGNED:
            if not s.signing_key or not security.verify(self.sign_algorithm(), s.signing_key, msg):
                raise SMBError(wire.STATUS_ACCESS_DENIED)
        elif s.sign:
            raise SMBError(wire.STATUS_ACCESS_DENIED)
        elif hdr.command == wire.TREE_CONNECT and self.dialect == wire.SMB311 and not s.guest:
            # MS-SMB2 3.3.5.7 (Samba answers ACCESS_DENIED, as here, where Windows disconnects)
            raise SMBError(wire.STATUS_ACCESS_DENIED)

    def _check_session_setup(self, hdr: Header, msg) -> None:
        """A new session within the connection's bounds; a re-authentication of an
        established session protected as that session's requests are (an unsigned
        SESSION_SETUP cannot end or take over a signed session)."""
        if not hdr.session_id:
            if len(self.sessions) >= self.limits.max_sessions or \
                    sum(not s.valid for s in self.sessions.values()) >= self.limits.max_pending_sessions:
                raise SMBError(wire.STATUS_INSUFFICIENT_RESOURCES)
            return
        s = self.sessions.get(hdr.session_id)
        if s is not None and s.valid and not s.guest:
            self._check_protection(s, hdr, msg)

    def token(self, hdr: Header) -> frozenset:
        """The SIDs a session's user acts as, for security descriptors (see smb.acl)."""
        s = self.sessions.get(hdr.session_id)
        return acl.GUEST_TOKEN if s is None or s.guest else acl.USER_TOKEN

    def tree(self, hdr: Header) -> Tree:
        """The tree connect a request names (checked once per request before its handler runs:
        MS-SMB2 3.3.5.2.11)."""
        s = self.sessions[hdr.session_id]
        t = s.trees.get(hdr.tree_id)
        if t is None:
            raise SMBError(wire.STATUS_NETWORK_NAME_DELETED)
        if t.share and t.share.encrypt and self._sealed_by is None:
            raise SMBError(wire.STATUS_ACCESS_DENIED)  # this share is reached encrypted only
        return t

    def open_for(self, fid: bytes, chain: "Chain", hdr: Header) -> Open:
        """The open a request names; in a related compound, FileId -1 is the previous one.
        An open is reachable only through the session and tree connect that made it: with any
        other it is closed, as far as the client can tell (MS-SMB2 3.3.5.x, FILE_CLOSED)."""
        if fid == FID_ANY and chain.related and chain.fid is not None:
            fid = chain.fid
        o = self.opens.get(bytes(fid))
        if o is None or o.session_id != hdr.session_id or o.tree_id != hdr.tree_id:
            if chain.related and chain.create_error:
                raise SMBError(chain.create_error)   # the CREATE it depends on failed
            raise SMBError(wire.STATUS_FILE_CLOSED)
        chain.fid = bytes(fid)
        return o

    def close_all(self) -> None:
        """The connection is gone: every open is closed as a CLOSE would (delete on close too)."""
        self.on_output = None
        for o in list(self.opens.values()):
            self.close_open(o)
        for vfs in self._vfs.values():
            vfs.close()
        self._vfs.clear()

    def share_vfs(self, share: Share) -> PosixVFS:
        """The share's files as this connection reaches them: one root descriptor per share,
        however many trees connect to it."""
        vfs = self._vfs.get(share.name)
        if vfs is None:
            vfs = self._vfs[share.name] = PosixVFS(share.path)
        return vfs

    def close_opens(self, session_id: int, tree_id: int | None = None) -> None:
        """TREE_DISCONNECT and LOGOFF close what they leave without a tree or session."""
        for o in list(self.opens.values()):
            if o.session_id == session_id and (tree_id is None or o.tree_id == tree_id):
                self.close_open(o)

    def close_open(self, o: Open) -> None:
        self.opens.pop(o.fid, None)
        OPEN_FILES.discard(o)
        for areq in list(o.waiting):
            self.cancel_async(areq, areq.close_status)
        o.waiting.clear()
        if o.watch is not None:
            notify.remove(o.watch)
        self.locks_held -= locks.count(o.key, id(o))
        locks.release_owner(o.key, id(o))
        sharemodes.remove(o.key, id(o))
        if o.tree is not None and o.tree.io is not None:
            o.tree.io.closed(o.fd)
        try:
            os.close(o.fd)
        except OSError:
            pass
        if o.delete_on_close and o.tree is not None and o.tree.vfs is not None:
            DELETE_PENDING[o.key] = o
        if o.key in DELETE_PENDING and not sharemodes.count(o.key):   # the last close deletes
            victim = DELETE_PENDING.pop(o.key)
            FILE_MAPS.forget_file(*o.key)        # a kept map would keep the blocks allocated
            try:
                sid = victim.tree.vfs.stream_id(victim.parts) if victim.stream is None else None
                victim.tree.vfs.remove(victim.parts, victim.is_dir)
                if victim.stream is None:
                    victim.tree.vfs.remove_streams(sid)
                    notify.post(victim.path(), notify.REMOVED,
                                notify.DIR_NAME if victim.is_dir else notify.FILE_NAME)
            except OSError as e:
                log.info("delete on close failed: %s", e)

    # -- SMB1 multi-protocol negotiate: answer with SMB2 wildcard ---------------------------
    def _smb1_negotiate(self, frame: bytes) -> bytes:
        """A multi-protocol NEGOTIATE (MS-SMB2 3.3.5.3.1), only as a connection's first frame."""
        if self.dialect or self.smb1_negotiated:
            raise ConnectionError("SMB1 NEGOTIATE after the first frame")
        if b"SMB 2.???" not in frame and b"SMB 2.002" not in frame:
            raise ConnectionError("SMB1 only client")
        self.smb1_negotiated = True
        self.credits.start_after_smb1_negotiate()
        # "SMB 2.???": an SMB2 NEGOTIATE follows; "SMB 2.002" alone: 2.0.2 it is, and the
        # client goes on with SESSION_SETUP (pysmb does)
        dialect = wire.WILDCARD_DIALECT if b"SMB 2.???" in frame else wire.SMB202
        body = self._negotiate_body(dialect, [])
        if dialect == wire.SMB202:
            self.dialect = dialect
        hdr = Header(command=wire.NEGOTIATE, flags=wire.FLAGS_SERVER_TO_REDIR, credits=1)
        return hdr.pack() + body

    def capabilities(self, dialect: int) -> int:
        """What NEGOTIATE announced (and FSCTL_VALIDATE_NEGOTIATE_INFO must repeat exactly)."""
        caps = wire.CAP_LARGE_MTU if dialect >= wire.SMB210 else 0
        if dialect in (wire.SMB300, wire.SMB302) and self.cipher:
            caps |= wire.CAP_ENCRYPTION
        return caps

    def _negotiate_body(self, dialect: int, contexts: list[bytes]) -> bytes:
        secmode = wire.SECURITY_SIGNING_ENABLED | (wire.SECURITY_SIGNING_REQUIRED if self.signing_required else 0)
        caps = self.capabilities(dialect)
        now = wire.nt_time(time.time_ns())
        sec_off = 64 + 64
        ctx_off = wire.pad8(sec_off + len(SPNEGO_INIT)) if contexts else 0
        io = MAX_IO_SMB202 if dialect == wire.SMB202 else MAX_IO
        body = struct.pack("<HHHH16sIIIIQQHHI", 65, secmode, dialect, len(contexts), self.server_guid,
                           caps, io, io, io, now, 0, sec_off, len(SPNEGO_INIT), ctx_off)
        body += SPNEGO_INIT
        if contexts:
            body += b"\0" * (ctx_off - 64 - len(body))
            for i, c in enumerate(contexts):
                body += c
                if i < len(contexts) - 1:
                    body += b"\0" * (wire.pad8(len(c)) - len(c))
        return body


# -- command handlers: (conn, header, message, response header, related fid) -> (body, fid) --

def h_negotiate(c: Connection, hdr: Header, msg: bytes, rhdr: Header, _):
    if c.dialect:
        raise ConnectionError("second NEGOTIATE")
    size, count, secmode, _r, caps, guid, ctx_off, ctx_count = struct.unpack_from("<HHHHI16sIH", msg, 64)
    if not count:
        raise SMBError(wire.STATUS_INVALID_PARAMETER)
    dialects = struct.unpack_from(f"<{count}H", msg, 64 + 36)
    chosen = next((d for d in wire.DIALECTS if d in dialects), None)
    if chosen is None:
        raise SMBError(wire.STATUS_NOT_SUPPORTED)
    c.dialect, c.client_guid, c.client_security_mode, c.client_caps = chosen, guid, secmode, caps
    c.client_dialects = dialects
    contexts = []
    if chosen in (wire.SMB300, wire.SMB302) and caps & wire.CAP_ENCRYPTION:
        c.cipher = security.AES_128_CCM
    if chosen == wire.SMB311:
        offered = []
        pos = ctx_off
        for _ in range(ctx_count):
            ctype, dlen = struct.unpack_from("<HH", msg, pos)
            data = msg[pos + 8:pos + 8 + dlen]
            if ctype == wire.ENCRYPTION_CAPABILITIES:
                n = struct.unpack_from("<H", data, 0)[0]
                offered = list(struct.unpack_from(f"<{n}H", data, 2))
            elif ctype == wire.SIGNING_CAPABILITIES:
                n = struct.unpack_from("<H", data, 0)[0]
                algs = struct.unpack_from(f"<{n}H", data, 2)
                c.signing_algorithm = next((a for a in security.SIGNING_PREFERENCE if a in algs), None)
            pos = wire.pad8(pos + 8 + dlen)
        c.cipher = next((x for x in security.CIPHER_PREFERENCE if x in offered), 0)
        c.preauth.update(msg)
        salt = os.urandom(32)
        preauth = struct.pack("<HHI", wire.PREAUTH_INTEGRITY_CAPABILITIES, 38, 0) + \
            struct.pack("<HHH", 1, 32, wire.SHA512) + salt
        contexts.append(preauth)
        if offered:
            contexts.append(struct.pack("<HHIHH", wire.ENCRYPTION_CAPABILITIES, 4, 0, 1, c.cipher))
        if c.signing_algorithm is not None:
            contexts.append(struct.pack("<HHIHH", wire.SIGNING_CAPABILITIES, 4, 0, 1, c.signing_algorithm))
    body = c._negotiate_body(chosen, contexts)
    log.info("negotiated dialect %#x, cipher %d, signing %s", chosen, c.cipher,
             c.signing_algorithm if c.signing_algorithm is not None else "by dialect")
    if chosen == wire.SMB311:
        full = rhdr_bytes(rhdr, hdr, body)
        c.preauth.update(full)
    return body, None


def rhdr_bytes(rhdr: Header, req: Header, body: bytes) -> bytes:
    """The response as it will be sent (for the preauth hash): same fields as _finish sets."""
    h = Header(**{k: getattr(rhdr, k) for k in rhdr.__dataclass_fields__})
    h.flags |= wire.FLAGS_SERVER_TO_REDIR
    h.message_id = req.message_id
    h.credit_charge = req.credit_charge
    return h.pack() + body


def h_session_setup(c: Connection, hdr: Header, msg: bytes, rhdr: Header, _):
    if not c.dialect:
        raise SMBError(wire.STATUS_INVALID_PARAMETER)
    _size, flags, secmode, caps, channel, off, length, prev = struct.unpack_from("<HBBIIHHQ", msg, 64)
    token = in_request(msg, off, length)
    s = c.sessions.get(hdr.session_id) if hdr.session_id else None
    if s is None:
        if hdr.session_id:
            raise SMBError(wire.STATUS_USER_SESSION_DELETED)
        sid = c.next_id
        c.next_id += 1
        s = Session(id=sid, preauth=c.preauth.copy())
        c.sessions[sid] = s
    elif s.valid:  # re-authentication: as the same user (checked when it completes)
        s.auth = None
        s.preauth = c.preauth.copy()
        s.reauth_of = s.user
    rhdr.session_id = s.id
    if c.dialect == wire.SMB311:
        s.preauth.update(msg)
    if s.auth is None:
        s.auth = ntlm.Acceptor(c.lookup, ntlm_auth=c.ntlm_auth, guest_ok=c.allow_guest)
    session_flags = 0
    try:
        out = s.auth.step(bytes(token))
    except ntlm.LogonFailure as e:  # wrong password, malformed token, refused by policy
        log.info("authentication failed: %s", e)
        del c.sessions[s.id]
        raise SMBError(wire.STATUS_LOGON_FAILURE)
    identity = s.auth.identity
    if s.auth.complete and s.reauth_of is not None:
        who = identity.user if identity.kind == "user" else identity.kind
        if (s.guest, s.reauth_of.rsplit("\\", 1)[-1].lower()) != (identity.kind != "user", who.lower()):
            log.info("session %d: re-authentication as %s refused (was %s)", s.id, who, s.reauth_of)
            del c.sessions[s.id]
            raise SMBError(wire.STATUS_ACCESS_DENIED)
        s.reauth_of = None
    if s.auth.complete and identity.kind != "user":
        # a guest session: no keys, so nothing signed or sealed; only guest-ok shares
        s.valid, s.guest, s.user, s.auth = True, True, identity.kind, None
        log.info("session %d: %s logon", s.id, identity.kind)
        flag = wire.SESSION_FLAG_IS_NULL if identity.kind == "anonymous" else wire.SESSION_FLAG_IS_GUEST
        return struct.pack("<HHHH", 9, flag, 72, len(out)) + out, None
    if s.auth.complete:
        s.user = f"{identity.domain}\\{identity.user}" if identity.domain else identity.user
        s.valid = True
        s.signing_key = security.signing_key(identity.session_key, c.dialect,
                                             s.preauth.value if s.preauth else None)
        s.sign = c.signing_required or bool(c.client_security_mode & wire.SECURITY_SIGNING_REQUIRED)
        if c.cipher:
            s.encrypt_key, s.decrypt_key = security.cipher_keys(
                identity.session_key, c.dialect, s.preauth.value if s.preauth else None, c.cipher)
            if c.encryption_required:
                s.encrypt = True
                session_flags |= wire.SESSION_FLAG_ENCRYPT_DATA
        log.info("session %d: user %s authenticated", s.id, s.user)
        rhdr.status = wire.STATUS_SUCCESS
    else:
        rhdr.status = wire.STATUS_MORE_PROCESSING_REQUIRED
    body = struct.pack("<HHHH", 9, session_flags, 72, len(out)) + out
    if c.dialect == wire.SMB311 and not s.auth.complete:
        s.preauth.update(rhdr_bytes(rhdr, hdr, body))
    return body, None


def h_logoff(c: Connection, hdr: Header, msg: bytes, rhdr: Header, _):
    c.close_opens(hdr.session_id)
    c.sessions.pop(hdr.session_id)
    return struct.pack("<HH", 4, 0), None


def h_tree_connect(c: Connection, hdr: Header, msg: bytes, rhdr: Header, _):
    _size, flags, off, length = struct.unpack_from("<HHHH", msg, 64)
    path = wire.from_utf16(in_request(msg, off, length))
    name = path.rsplit("\\", 1)[-1].lower()
    s = c.sessions[hdr.session_id]
    if len(s.trees) >= c.limits.max_trees:
        raise SMBError(wire.STATUS_INSUFFICIENT_RESOURCES)
    if name == "ipc$":
        tree, share_type, access = Tree(None, None), wire.SHARE_TYPE_PIPE, 0x001F01FF
    else:
        share = c.shares.get(name)
        if share is None:
            raise SMBError(wire.STATUS_BAD_NETWORK_NAME)
        if s.guest and not share.guest_ok:
            raise SMBError(wire.STATUS_ACCESS_DENIED)
        if share.valid_users and s.user.rsplit("\\", 1)[-1].lower() not in share.valid_users:
            raise SMBError(wire.STATUS_ACCESS_DENIED)
        if share.encrypt and not c.cipher:
            raise SMBError(wire.STATUS_ACCESS_DENIED)  # the client cannot encrypt
        tree = Tree(share, c.share_vfs(share), c.io_modules.get(share.name))
        share_type = wire.SHARE_TYPE_DISK
        access = READ_ONLY_ACCESS if share.read_only else wire.FILE_ALL_ACCESS
    tid = c.next_id
    c.next_id += 1
    s.trees[tid] = tree
    rhdr.tree_id = tid
    share_flags = 0x8000 if tree.share and tree.share.encrypt else 0  # SHAREFLAG_ENCRYPT_DATA
    return struct.pack("<HBBIII", 16, share_type, 0, share_flags, 0, access), None


def h_tree_disconnect(c: Connection, hdr: Header, msg: bytes, rhdr: Header, _):
    t = c.sessions[hdr.session_id].trees.pop(hdr.tree_id, None)
    if t is None:
        raise SMBError(wire.STATUS_NETWORK_NAME_DELETED)
    c.close_opens(hdr.session_id, hdr.tree_id)
    return struct.pack("<HH", 4, 0), None


# DOS attributes kept as set (MS-FSCC 2.6): READONLY HIDDEN SYSTEM ARCHIVE TEMPORARY OFFLINE
# NOT_CONTENT_INDEXED; DIRECTORY follows the file type and READONLY its write bits.
STORED_ATTRIBUTES = 0x1 | 0x2 | 0x4 | 0x20 | 0x100 | 0x1000 | 0x2000


def attributes(st: os.stat_result, dos: DosInfo | None = None) -> int:
    is_dir = stat.S_ISDIR(st.st_mode)
    if dos is not None and dos.attrs:
        a = dos.attrs & STORED_ATTRIBUTES & ~wire.ATTR_READONLY
    else:
        a = 0 if is_dir else wire.ATTR_ARCHIVE
    if is_dir:
        a |= wire.ATTR_DIRECTORY
    if not st.st_mode & 0o222 and not is_dir:
        a |= wire.ATTR_READONLY
    return a or wire.ATTR_NORMAL


def times(st: os.stat_result, dos: DosInfo | None = None) -> bytes:
    birth = wire.nt_time(getattr(st, "st_birthtime_ns", None) or min(st.st_mtime_ns, st.st_ctime_ns))
    change = wire.nt_time(st.st_ctime_ns)
    if dos is not None:
        birth = dos.create_time or birth
        if dos.change_time and dos.change_mtime_ns == st.st_mtime_ns:
            change = dos.change_time     # as set, until the next write moves the file on
    return struct.pack("<QQQQ", birth, wire.nt_time(st.st_atime_ns), wire.nt_time(st.st_mtime_ns), change)


def alloc_size(st: os.stat_result, dos: DosInfo | None = None) -> int:
    """AllocationSize: the size in whole clusters, or what a client reserved. Not st_blocks:
    ext4 counts a block of extended attributes there, and smbring keeps its metadata in them."""
    if stat.S_ISDIR(st.st_mode):
        return 0
    return max((st.st_size + 4095) & ~4095, dos.allocation if dos is not None else 0)


def parse_create_contexts(msg, off: int, length: int) -> dict[bytes, bytes]:
    """CREATE contexts by name (MS-SMB2 2.2.13.2); unknown ones are ignored by the caller."""
    out = {}
    pos, end = off, off + length
    while length and pos + 16 <= end:
        nxt, name_off, name_len, _r, data_off, data_len = struct.unpack_from("<IHHHHI", msg, pos)
        name = bytes(msg[pos + name_off:pos + name_off + name_len])
        data = bytes(msg[pos + data_off:pos + data_off + data_len]) if data_len else b""
        if pos + name_off + name_len > end or (data_len and pos + data_off + data_len > end) or \
                name_len < 4:       # context names are at least four bytes (Windows checks)
            raise SMBError(wire.STATUS_INVALID_PARAMETER)
        out[name] = data
        if not nxt:
            break
        pos += nxt
    return out


def encode_create_contexts(contexts: list[tuple[bytes, bytes]]) -> bytes:
    out = bytearray()
    for i, (name, data) in enumerate(contexts):
        entry = struct.pack("<IHHHHI", 0, 16, len(name), 0, 24 if data else 0, len(data)) + \
            name.ljust(8, b"\0") + data
        if i < len(contexts) - 1:
            entry += b"\0" * (wire.pad8(len(entry)) - len(entry))
            entry = struct.pack("<I", len(entry)) + entry[4:]
        out += entry
    return bytes(out)


def parse_eas(buf) -> list[tuple[str, bytes]]:
    """FILE_FULL_EA_INFORMATION entries (MS-FSCC 2.4.15)."""
    eas, pos = [], 0
    while pos + 8 <= len(buf):
        nxt, _flags, name_len, value_len = struct.unpack_from("<IBBH", buf, pos)
        name = bytes(buf[pos + 8:pos + 8 + name_len]).decode("ascii")
        value = bytes(buf[pos + 9 + name_len:pos + 9 + name_len + value_len])
        if not name or pos + 9 + name_len + value_len > len(buf):
            raise SMBError(wire.STATUS_INVALID_PARAMETER)
        eas.append((name, value))
        if not nxt:
            break
        pos += nxt
    return eas


def encode_eas(eas: list[tuple[str, bytes]]) -> bytes:
    def entry(name: str, value: bytes) -> bytes:
        n = name.encode("ascii", "replace")
        return struct.pack("<IBBH", 0, 0, len(n), len(value)) + n + b"\0" + value
    return wire.chain(entry(name, value) for name, value in eas)


def set_allocation(fd: int, size: int) -> None:
    """AllocationSize (the AlSi create context, FileAllocationInformation): disk space reserved
    without changing the file's size where the file system can (fallocate KEEP_SIZE), and the
    size remembered to report it back."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    if size > 0 and libc.fallocate(fd, 1, ctypes.c_long(0), ctypes.c_long(size)) != 0:  # KEEP_SIZE
        log.debug("fallocate(%d): %s", size, os.strerror(ctypes.get_errno()))
    dos = get_dos(fd) or DosInfo()
    dos.allocation = size
    set_dos(fd, dos)


def stored_sd(vfs: PosixVFS, parts: list[str]) -> "acl.Descriptor | None":
    """The security descriptor a client set on the file (or directory), if any."""
    try:
        fd = vfs.open(parts, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError:
        return None
    try:
        return sd_of(fd, "/".join(parts))
    except OSError:
        return None
    finally:
        os.close(fd)


def sd_of(fd: int, where: str) -> "acl.Descriptor | None":
    """The descriptor stored on an open file, if any (an unreadable one is ignored, loudly;
    an error reading it is raised)."""
    blob = get_sd(fd)
    try:
        return acl.parse(blob) if blob else None
    except acl.BadDescriptor:
        log.warning("%s: unreadable stored security descriptor ignored", where)
        return None


READ_ONLY_ACCESS = 0x001200A9   # FILE_GENERIC_READ | FILE_EXECUTE: all a read-only share grants

# attributes a client may not ask a new file to have (MS-FSCC 2.6; DEVICE, VOLUME, ...)
INVALID_CREATE_ATTRIBUTES = 0xFFFF8048


def h_create(c: Connection, hdr: Header, msg: bytes, rhdr: Header, _):
    (_size, _secflags, _oplock, _imp, _cf, _res, access, attrs, share_access, disposition,
     options, name_off, name_len, ctx_off, ctx_len) = struct.unpack_from("<HBBIQQIIIIIHHII", msg, 64)
    tree = c.tree(hdr)
    if tree.vfs is None:
        raise SMBError(wire.STATUS_NOT_SUPPORTED)      # named pipes: no RPC services
    if len(c.opens) >= c.limits.max_open_files:
        raise SMBError(wire.STATUS_TOO_MANY_OPENED_FILES)
    if _imp > 3:    # Anonymous, Identification, Impersonation, Delegate
        raise SMBError(wire.STATUS_BAD_IMPERSONATION_LEVEL)
    if access & 0x0CE0FE00:     # reserved access bits (MS-SMB2 3.3.5.9)
        raise SMBError(wire.STATUS_ACCESS_DENIED)
    if access & 0x01000000:     # ACCESS_SYSTEM_SECURITY: needs a privilege nobody here has
        raise SMBError(wire.STATUS_PRIVILEGE_NOT_HELD)
    if options & 0xFF000000 or attrs & INVALID_CREATE_ATTRIBUTES or disposition > wire.FILE_OVERWRITE_IF:
        raise SMBError(wire.STATUS_INVALID_PARAMETER)
    if options & 0x00102080:    # NO_EA_KNOWLEDGE, OPEN_BY_FILE_ID, RESERVE_OPFILTER
        raise SMBError(wire.STATUS_NOT_SUPPORTED)
    name = wire.from_utf16(in_request(msg, name_off, name_len)) if name_len else ""
    if name.startswith("\\"):
        raise SMBError(wire.STATUS_INVALID_PARAMETER)   # paths are relative to the share
    name, stream = split_stream(name)
    parts = split_path(name)
    in_request(msg, ctx_off, ctx_len)
    contexts = parse_create_contexts(msg, ctx_off, ctx_len)
    eas = parse_eas(contexts[b"ExtA"]) if b"ExtA" in contexts else []
    if b"TWrp" in contexts:     # a previous version (snapshot): smbring keeps none
        raise SMBError(wire.STATUS_OBJECT_NAME_NOT_FOUND)
    vfs = tree.vfs
    if tree.share.read_only and (acl.map_generic(access) & wire.WRITE_CLASS or
                                 options & wire.FILE_DELETE_ON_CLOSE or
                                 disposition in (wire.FILE_SUPERSEDE, wire.FILE_CREATE,
                                                 wire.FILE_OVERWRITE, wire.FILE_OVERWRITE_IF)):
        raise SMBError(wire.STATUS_ACCESS_DENIED)   # a read-only share grants no write right
    try:
        st = vfs.stat(parts)
        exists = True
    except (FileNotFoundError, NotADirectoryError):
        st, exists = None, False
        spelled = vfs.match_case(parts)     # names are case-insensitive in SMB
        if spelled != parts:
            parts = spelled
            try:
                st = vfs.stat(parts)
                exists = True
            except (FileNotFoundError, NotADirectoryError):
                pass
    base_parts, base_key = parts, None
    if stream is not None:      # a named stream of the file: a plain file in the stream depot
        if options & wire.FILE_DIRECTORY_FILE:
            raise SMBError(wire.STATUS_INVALID_PARAMETER)
        if not exists:
            if disposition in (wire.FILE_OPEN, wire.FILE_OVERWRITE):
                raise SMBError(wire.STATUS_OBJECT_NAME_NOT_FOUND)
            if tree.share.read_only:
                raise SMBError(wire.STATUS_ACCESS_DENIED)
            os.close(vfs.open(parts, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644))   # the file too
            st, exists = vfs.stat(parts), True
            notify.post("/".join([vfs.root] + parts), notify.ADDED, notify.FILE_NAME)
        opening = disposition in (wire.FILE_OPEN, wire.FILE_OVERWRITE)
        base_key = vfs.stream_id(parts, create=not opening and not tree.share.read_only)
        if base_key is None:
            raise SMBError(wire.STATUS_OBJECT_NAME_NOT_FOUND if opening else wire.STATUS_ACCESS_DENIED)
        parts = vfs.stream_parts(base_key, stream)
        spelled = next((n for n, _st in vfs.streams(base_key) if n.casefold() == stream.casefold()), None)
        if spelled is not None:      # stream names are case-insensitive too
            stream, parts = spelled, vfs.stream_parts(base_key, spelled)
        try:
            st, exists = vfs.stat(parts), True
        except FileNotFoundError:
            if opening:
                raise SMBError(wire.STATUS_OBJECT_NAME_NOT_FOUND)
            st, exists = None, False
            vfs.make_stream_dir(base_key)
    is_dir = exists and stat.S_ISDIR(st.st_mode)
    if exists and not (is_dir or stat.S_ISREG(st.st_mode)):
        raise SMBError(wire.STATUS_IO_REPARSE_TAG_NOT_HANDLED)  # a FIFO, socket or device: as Samba
    want_dir = bool(options & wire.FILE_DIRECTORY_FILE)
    if exists and want_dir and not is_dir:
        raise SMBError(wire.STATUS_NOT_A_DIRECTORY)
    if exists and options & wire.FILE_NON_DIRECTORY_FILE and is_dir:
        raise SMBError(wire.STATUS_FILE_IS_A_DIRECTORY)
    if exists and disposition == wire.FILE_CREATE:
        raise SMBError(wire.STATUS_OBJECT_NAME_COLLISION)
    if options & wire.FILE_DELETE_ON_CLOSE and not _may_delete(access):
        raise SMBError(wire.STATUS_ACCESS_DENIED)
    if options & wire.FILE_DELETE_ON_CLOSE and (attrs & wire.ATTR_READONLY and not exists or
                                                exists and not st.st_mode & 0o222):
        raise SMBError(wire.STATUS_CANNOT_DELETE)       # a read-only file cannot be deleted
    if exists and (st.st_dev, st.st_ino) in DELETE_PENDING:
        raise SMBError(wire.STATUS_DELETE_PENDING)
    if exists and not sharemodes.allowed((st.st_dev, st.st_ino), access, share_access):
        raise SMBError(wire.STATUS_SHARING_VIOLATION)  # before anything is truncated
    if not exists and disposition in (wire.FILE_OPEN, wire.FILE_OVERWRITE):
        if parts and len(parts) > 1:
            try:
                vfs.stat(parts[:-1])
            except FileNotFoundError:
                raise SMBError(wire.STATUS_OBJECT_PATH_NOT_FOUND)
        raise SMBError(wire.STATUS_OBJECT_NAME_NOT_FOUND)
    if not exists and tree.share.read_only:
        raise SMBError(wire.STATUS_ACCESS_DENIED)      # FILE_OPEN_IF would create it
    action = wire.FILE_OPENED
    token = c.token(hdr)
    # what the open is granted: generic rights mapped, MAXIMUM_ALLOWED resolved; every later
    # request on the handle is checked against this, never against what was asked
    granted = acl.check(access, None, None, token)
    if exists and parts:   # a stored security descriptor decides who opens the file
        sd = stored_sd(vfs, parts)
        if sd is not None:
            parent = stored_sd(vfs, parts[:-1]) or acl.from_mode(vfs.stat(parts[:-1]))
            granted = acl.check(access, sd, parent, token)
            if granted < 0:
                raise SMBError(wire.STATUS_ACCESS_DENIED)
    if tree.share.read_only:
        granted &= READ_ONLY_ACCESS
    if options & wire.FILE_DELETE_ON_CLOSE and not granted & wire.DELETE:
        raise SMBError(wire.STATUS_ACCESS_DENIED)
    new_sd = None
    if not exists:
        if b"SecD" in contexts:
            try:
                new_sd = acl.parse(contexts[b"SecD"])
            except acl.BadDescriptor:
                raise SMBError(wire.STATUS_INVALID_PARAMETER)
            new_sd = acl.complete(new_sd, stored_sd(vfs, parts[:-1]), want_dir)
        else:
            new_sd = acl.inherit(stored_sd(vfs, parts[:-1]), want_dir)
        if want_dir:
            vfs.mkdir(parts)
            is_dir = True
        else:
            fd = vfs.open(parts, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o444 if attrs & wire.ATTR_READONLY else 0o644)
            os.close(fd)
        action = wire.FILE_CREATED
    writable = bool(granted & (wire.FILE_WRITE_DATA | wire.FILE_APPEND_DATA))
    if is_dir:
        fd = vfs.open(parts, os.O_RDONLY | os.O_DIRECTORY)
    else:
        try:
            fd = vfs.open(parts, os.O_RDWR if writable else os.O_RDONLY)
        except PermissionError:
            fd = vfs.open(parts, os.O_RDONLY)
        if exists and disposition in (wire.FILE_OVERWRITE, wire.FILE_OVERWRITE_IF, wire.FILE_SUPERSEDE):
            os.ftruncate(fd, 0)
            action = wire.FILE_OVERWRITTEN if disposition != wire.FILE_SUPERSEDE else wire.FILE_SUPERSEDED
    if new_sd is not None:
        set_sd(fd, new_sd.pack())
    if action == wire.FILE_CREATED and attrs & STORED_ATTRIBUTES & ~wire.ATTR_READONLY:
        set_dos(fd, DosInfo(attrs=(attrs & STORED_ATTRIBUTES) | (0 if is_dir else wire.ATTR_ARCHIVE)))
    st = os.fstat(fd)
    dos = get_dos(fd)
    o = Open(fd=fd, parts=parts, is_dir=is_dir, access=access,
             delete_on_close=bool(options & wire.FILE_DELETE_ON_CLOSE), key=(st.st_dev, st.st_ino),
             tree=tree, session_id=hdr.session_id, tree_id=hdr.tree_id, granted=max(granted, 0),
             stream=stream, base_parts=base_parts, base_key=base_key)
    if not sharemodes.check_and_add(o.key, id(o), access, share_access):
        os.close(fd)
        raise SMBError(wire.STATUS_SHARING_VIOLATION)
    fid = os.urandom(8) + struct.pack("<Q", c.next_id)
    c.next_id += 1
    o.fid = fid
    c.opens[fid] = o
    OPEN_FILES.add(o)
    if action == wire.FILE_CREATED:
        notify.post(o.path(), notify.ADDED, notify.DIR_NAME if is_dir else notify.FILE_NAME)
    elif action != wire.FILE_OPENED:
        notify.post(o.path(), notify.MODIFIED, notify.SIZE | notify.LAST_WRITE)
    if eas and action != wire.FILE_OPENED:
        for ea_name, value in eas:
            set_ea(fd, ea_name, value)
    if b"AlSi" in contexts and action != wire.FILE_OPENED and not is_dir:
        set_allocation(fd, struct.unpack_from("<Q", contexts[b"AlSi"].ljust(8, b"\0"))[0])
        st, dos = os.fstat(fd), get_dos(fd)
    answers = []
    if b"MxAc" in contexts:    # the most this user may be granted here
        answers.append((b"MxAc", struct.pack("<II", 0, READ_ONLY_ACCESS if tree.share.read_only else wire.FILE_ALL_ACCESS)))
    if b"QFid" in contexts:    # an on-disk id: inode and device, then the volume
        answers.append((b"QFid", struct.pack("<QQ", st.st_ino, st.st_dev) + ROOT_UUID))
    extra = encode_create_contexts(answers)
    body = struct.pack("<HBBI", 89, 0, 0, action) + times(st, dos) + struct.pack(
        "<QQII", alloc_size(st, dos), 0 if is_dir else st.st_size, attributes(st, dos), 0) + fid + \
        struct.pack("<II", 152 if extra else 0, len(extra)) + extra
    return body, fid


def h_close(c: Connection, hdr: Header, msg: bytes, rhdr: Header, chain):
    _size, flags, _r = struct.unpack_from("<HHI", msg, 64)
    fid = bytes(msg[72:88])
    o = c.open_for(fid, chain, hdr)
    st = os.fstat(o.fd) if flags & wire.CLOSE_FLAG_POSTQUERY_ATTRIB else None
    dos = get_dos(o.fd) if st else None
    c.close_open(o)
    if st:
        body = struct.pack("<HHI", 60, flags, 0) + times(st, dos) + struct.pack(
            "<QQI", alloc_size(st, dos), 0 if o.is_dir else st.st_size, attributes(st, dos))
    else:
        body = struct.pack("<HHI", 60, 0, 0) + b"\0" * 52
    return body, o.fid


def h_flush(c: Connection, hdr: Header, msg: bytes, rhdr: Header, chain):
    o = c.open_for(bytes(msg[72:88]), chain, hdr)
    return FileIO("fsync", o.fd, io=o.tree.io, done=lambda _: struct.pack("<HH", 4, 0)), None


def h_read(c: Connection, hdr: Header, msg: bytes, rhdr: Header, chain):
    _size, _pad, _flags, length, offset = struct.unpack_from("<HBBIQ", msg, 64)
    o = c.open_for(bytes(msg[80:96]), chain, hdr)
    if o.is_dir:
        raise SMBError(wire.STATUS_INVALID_DEVICE_REQUEST)
    if length > MAX_IO or offset + length > 0x7FFFFFFFFFFFFFFF:
        raise SMBError(wire.STATUS_INVALID_PARAMETER)
    if not o.granted & (wire.FILE_READ_DATA | wire.FILE_EXECUTE):
        raise SMBError(wire.STATUS_ACCESS_DENIED)
    if not locks.io_allowed(o.key, offset, length, id(o), write=False):
        raise SMBError(wire.STATUS_FILE_LOCK_CONFLICT)
    min_count = struct.unpack_from("<I", msg, 96)[0]
    available = max(0, min(length, os.fstat(o.fd).st_size - offset))
    if (not available and length) or available < min_count:
        raise SMBError(wire.STATUS_END_OF_FILE)
    o.position = offset + available
    prefix = struct.pack("<HBBIII", 17, 80, 0, available, 0, 0)
    return FilePayload(prefix, FileRange(o.fd, offset, available, o.tree.io),
                       splice_safe=not sharemodes.has_writer(o.key),
                       read_path=o.tree.share.read_path), None


def h_write(c: Connection, hdr: Header, msg: bytes, rhdr: Header, chain):
    _size, data_off, length, offset = struct.unpack_from("<HHIQ", msg, 64)
    o = c.open_for(bytes(msg[80:96]), chain, hdr)
    if c.tree(hdr).share.read_only:
        raise SMBError(wire.STATUS_ACCESS_DENIED)
    if data_off + length > len(msg) or length > MAX_IO or offset + length > 0x7FFFFFFFFFFFFFFF:
        raise SMBError(wire.STATUS_INVALID_PARAMETER)
    if length and offset >= MAX_FILE_SIZE:
        raise SMBError(wire.STATUS_INVALID_PARAMETER)
    if offset + length >= MAX_FILE_SIZE and length:
        raise SMBError(wire.STATUS_DISK_FULL)      # what NTFS answers at its size limit
    if not o.granted & (wire.FILE_WRITE_DATA | wire.FILE_APPEND_DATA):
        raise SMBError(wire.STATUS_ACCESS_DENIED)
    if not locks.io_allowed(o.key, offset, length, id(o), write=True):
        raise SMBError(wire.STATUS_FILE_LOCK_CONFLICT)
    write_through = struct.unpack_from("<I", msg, 64 + 44)[0] & 0x1   # WRITEFLAG_WRITE_THROUGH

    def written(n: int) -> bytes:
        o.position = offset + n
        if notify.active():
            notify.post(o.path(), notify.MODIFIED, notify.SIZE | notify.LAST_WRITE)
        if write_through:
            os.fdatasync(o.fd)
        return struct.pack("<HHIIHH", 17, 0, n, 0, 0, 0)

    return FileIO("write", o.fd, offset, memoryview(msg)[data_off:data_off + length], o.tree.io, written), None


def _match(pattern: str, name: str) -> bool:
    if pattern in ("*", "<", "*.*"):
        return True
    return fnmatch.fnmatchcase(name.lower(), pattern.lower().replace("<", "*").replace(">", "?").replace('"', "."))


def dir_entry(klass: int, name: str, st: os.stat_result, file_index: int, dos=None) -> bytes:
    n = wire.utf16(name)
    common = struct.pack("<II", 0, file_index) + times(st, dos) + struct.pack(
        "<QQI", 0 if stat.S_ISDIR(st.st_mode) else st.st_size, alloc_size(st, dos), attributes(st, dos))
    short = wire.utf16(short_name(name)) if name not in (".", "..") else b""
    if klass == 1:    # FileDirectoryInformation
        return common + struct.pack("<I", len(n)) + n
    if klass == 2:    # FileFullDirectoryInformation
        return common + struct.pack("<II", len(n), 0) + n
    if klass == 3:    # FileBothDirectoryInformation
        return common + struct.pack("<IIBB", len(n), 0, len(short), 0) + short.ljust(24, b"\0") + n
    if klass == 12:   # FileNamesInformation
        return struct.pack("<III", 0, file_index, len(n)) + n
    if klass == 37:   # FileIdBothDirectoryInformation
        return common + struct.pack("<IIBB", len(n), 0, len(short), 0) + short.ljust(24, b"\0") + \
            struct.pack("<HQ", 0, st.st_ino) + n
    if klass == 38:   # FileIdFullDirectoryInformation
        return common + struct.pack("<IIIQ", len(n), 0, 0, st.st_ino) + n
    raise SMBError(wire.STATUS_INVALID_INFO_CLASS)


def h_query_directory(c: Connection, hdr: Header, msg: bytes, rhdr: Header, chain):
    _size, klass, flags, _index = struct.unpack_from("<HBBI", msg, 64)
    o = c.open_for(bytes(msg[72:88]), chain, hdr)
    name_off, name_len, out_len = struct.unpack_from("<HHI", msg, 88)
    pattern = wire.from_utf16(in_request(msg, name_off, name_len)) or "*"
    if not o.is_dir:
        raise SMBError(wire.STATUS_INVALID_PARAMETER)
    if o.dir_entries is None or flags & (0x1 | 0x10):      # RESTART_SCANS, REOPEN
        # names now, details as they are returned: what is deleted meanwhile is not listed
        o.dir_entries = [n for n in [".", ".."] + sorted(PosixVFS.names(o.fd))
                         if _match(pattern, n) and not (n == STREAMS_DIR and not o.parts)]
        o.dir_pos = 0
        if not o.dir_entries:
            raise SMBError(wire.STATUS_NO_SUCH_FILE)
    out = bytearray()
    last = None
    while o.dir_pos < len(o.dir_entries):
        name = o.dir_entries[o.dir_pos]
        if name in (".", ".."):
            st, dos = os.fstat(o.fd), get_dos(o.fd)
        else:
            st, dos = o.tree.vfs.entry_stat(o.fd, o.parts, name), get_dos_at(o.fd, name)
            if st is None:          # deleted since the scan began
                o.dir_pos += 1
                continue
        entry = dir_entry(klass, name, st, o.dir_pos, dos)
        start = wire.pad8(len(out))
        if start + len(entry) > out_len:
            if last is None:
                raise SMBError(wire.STATUS_INFO_LENGTH_MISMATCH if not out else wire.STATUS_BUFFER_OVERFLOW)
            break
        out += b"\0" * (start - len(out))
        if last is not None:
            struct.pack_into("<I", out, last, start - last)
        last = start
        out += entry
        o.dir_pos += 1
        if flags & 0x2:  # RETURN_SINGLE_ENTRY
            break
    if last is None:
        raise SMBError(wire.STATUS_NO_MORE_FILES)
    return struct.pack("<HHI", 9, 72, len(out)) + bytes(out), None


SHORT_NAME_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'()-@^_`{}~")


def short_name(name: str) -> str:
    """An 8.3 name: the name itself when it is one, else Samba's style of mangling (five
    characters, a tilde and two from a hash, then up to three of the extension)."""
    base, dot, ext = name.rpartition(".") if "." in name.lstrip(".") else (name, "", "")
    if (0 < len(base) <= 8 and len(ext) <= 3 and set(base.upper()) <= SHORT_NAME_CHARS
            and set(ext.upper()) <= SHORT_NAME_CHARS):
        return name.upper()
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    h = zlib.crc32(name.encode("utf-8", "surrogatepass"))
    prefix = "".join(ch for ch in base.upper() if ch in SHORT_NAME_CHARS and ch != "~")[:5] or "_"
    tail = "".join(ch for ch in ext.upper() if ch in SHORT_NAME_CHARS)[:3]
    mangled = f"{prefix}~{alphabet[h % 36]}{alphabet[(h // 36) % 36]}"
    return f"{mangled}.{tail}" if tail else mangled


# what reading each file information class needs (MS-SMB2 3.3.5.20.1)
READ_ATTRIBUTES_CLASSES = {4, 18, 34, 35}
FILE_READ_EA, FILE_READ_ATTRIBUTES, READ_CONTROL = 0x8, 0x80, 0x20000


def may_read(o: Open, need: int) -> bool:
    return bool(o.access & (need | wire.GENERIC_ALL | wire.MAXIMUM_ALLOWED |
                            (wire.GENERIC_READ if need != READ_CONTROL else 0)))


def file_info(c: Connection, o: Open, klass: int) -> bytes:
    if klass in READ_ATTRIBUTES_CLASSES and not may_read(o, FILE_READ_ATTRIBUTES) or \
            klass == 15 and not may_read(o, FILE_READ_EA):
        raise SMBError(wire.STATUS_ACCESS_DENIED)
    st = os.fstat(o.fd)
    dos = get_dos(o.fd)
    size = 0 if o.is_dir else st.st_size
    basic = times(st, dos) + struct.pack("<II", attributes(st, dos), 0)
    pending = o.delete_on_close or o.key in DELETE_PENDING
    # a file about to go is no longer counted among its names (NTFS reports NumberOfLinks 0)
    standard = struct.pack("<QQIBBH", alloc_size(st, dos), size, st.st_nlink - int(pending and st.st_nlink > 0),
                           int(pending), int(o.is_dir), 0)
    if klass == 4:
        return basic
    if klass == 5:
        return standard
    if klass == 6:
        return struct.pack("<Q", st.st_ino)
    if klass == 7:   # FileEaInformation: what FileFullEaInformation would take
        eas = list_eas(o.fd)
        return struct.pack("<I", len(encode_eas(eas)) if eas else 0)
    if klass == 15:  # FileFullEaInformation
        eas = list_eas(o.fd)
        if not eas:
            raise SMBError(wire.STATUS_NO_EAS_ON_FILE)
        return encode_eas(eas)
    if klass == 8:   # FileAccessInformation: the access granted
        return struct.pack("<I", o.granted)
    if klass == 14:
        return struct.pack("<Q", o.position)
    if klass == 16:
        return struct.pack("<I", o.mode)
    if klass == 17:
        return struct.pack("<I", 0)
    if klass == 18:  # FileAllInformation
        name = wire.utf16("\\" + o.display_name())
        return (basic + standard + struct.pack("<QIIQII", st.st_ino, 0, o.granted, o.position, o.mode, 0) +
                struct.pack("<I", len(name)) + name)
    if klass == 21:  # FileAlternateNameInformation: the 8.3 name old clients see
        base = o.base_parts if o.base_parts is not None else o.parts
        n = wire.utf16(short_name(base[-1]) if base else "")
        return struct.pack("<I", len(n)) + n
    if klass == 48:  # FileNormalizedNameInformation (SMB 3.1.1): the path as stored
        if c.dialect < wire.SMB311:
            raise SMBError(wire.STATUS_NOT_SUPPORTED)
        n = wire.utf16(o.display_name())
        return struct.pack("<I", len(n)) + n
    if klass == 22:  # FileStreamInformation: the file's own data, then its named streams
        key = o.base_key or o.tree.vfs.stream_id(o.parts)
        entries = []
        if not o.is_dir or o.stream:
            base = st if not o.stream else o.tree.vfs.stat(o.base_parts)   # beneath the root
            entries.append(("::$DATA", base.st_size, alloc_size(base)))
        for name, sst in o.tree.vfs.streams(key):
            entries.append((f":{name}:$DATA", sst.st_size, alloc_size(sst)))
        return wire.chain((struct.pack("<IIQQ", 0, len(wire.utf16(n)), sz, al) + wire.utf16(n)
                           for n, sz, al in entries), 8)
    if klass == 28:  # FileCompressionInformation
        return struct.pack("<QHBBB3s", size, 0, 0, 0, 0, b"\0" * 3)
    if klass == 34:  # FileNetworkOpenInformation
        return times(st, dos) + struct.pack("<QQII", alloc_size(st, dos), size, attributes(st, dos), 0)
    if klass == 35:  # FileAttributeTagInformation
        return struct.pack("<II", attributes(st, dos), 0)
    raise SMBError(wire.STATUS_INVALID_INFO_CLASS)


def fs_info(c: Connection, o: Open, vfs: PosixVFS, klass: int) -> bytes:
    sv = vfs.statvfs()
    unit = sv.f_frsize or 4096
    if klass == 1:   # FileFsVolumeInformation
        label = wire.utf16("smbring")
        return struct.pack("<QIIBB", 0, 0x534D4252, len(label), 0, 0) + label
    if klass == 3:   # FileFsSizeInformation
        return struct.pack("<QQII", sv.f_blocks, sv.f_bavail, unit // 512, 512)
    if klass == 4:   # FileFsDeviceInformation
        return struct.pack("<II", 7, 0)
    if klass == 5:   # FileFsAttributeInformation
        name = wire.utf16("NTFS")
        return struct.pack("<III", 0x3 | 0x40000, 255, len(name)) + name
    if klass == 7:   # FileFsFullSizeInformation
        return struct.pack("<QQQII", sv.f_blocks, sv.f_bavail, sv.f_bfree, unit // 512, 512)
    if klass == 6:   # FileFsControlInformation: no quotas
        return struct.pack("<QQQQQII", 0, 0, 0, 0xFFFFFFFFFFFFFFFF, 0xFFFFFFFFFFFFFFFF, 0, 0)
    if klass == 8:   # FileFsObjectIdInformation
        return ROOT_UUID + b"\0" * 48
    if klass == 11:  # FileFsSectorSizeInformation
        return struct.pack("<IIIIIIII", 512, 512, 512, 512, 0x3, 0, 0, 0)[:28]
    raise SMBError(wire.STATUS_INVALID_INFO_CLASS)


def current_sd(o: Open) -> acl.Descriptor:
    """The file's stored descriptor, else the one its mode bits give."""
    return sd_of(o.fd, o.path()) or acl.from_mode(os.fstat(o.fd))


def h_query_info(c: Connection, hdr: Header, msg: bytes, rhdr: Header, chain):
    _size, info_type, klass, out_len = struct.unpack_from("<HBBI", msg, 64)
    o = c.open_for(bytes(msg[88:104]), chain, hdr)
    tree = c.tree(hdr)
    if info_type == wire.INFO_FILE:
        data = file_info(c, o, klass)
    elif info_type == wire.INFO_FILESYSTEM:
        data = fs_info(c, o, tree.vfs, klass)
    elif info_type == wire.INFO_SECURITY:
        if not may_read(o, READ_CONTROL):
            raise SMBError(wire.STATUS_ACCESS_DENIED)
        parts = struct.unpack_from("<I", msg, 80)[0] or (acl.OWNER | acl.GROUP | acl.DACL)
        data = current_sd(o).pack(parts & (acl.OWNER | acl.GROUP | acl.DACL | acl.SACL))
    else:
        raise SMBError(wire.STATUS_NOT_SUPPORTED)
    if len(data) > out_len:
        fixed = VARIABLE_PART.get((info_type, klass))
        if fixed is None or out_len < fixed:
            # a fixed-size answer that does not fit at all is a length mismatch; a name or
            # list that is cut short is an overflow (MS-SMB2 3.3.5.20.1, MS-FSCC)
            if info_type != wire.INFO_SECURITY:
                raise SMBError(wire.STATUS_INFO_LENGTH_MISMATCH)
        if info_type == wire.INFO_SECURITY:
            rhdr.status = 0xC0000023  # STATUS_BUFFER_TOO_SMALL with the size needed
            return struct.pack("<HBBI", 9, 0, 0, 4) + struct.pack("<I", len(data)), None
        rhdr.status = wire.STATUS_BUFFER_OVERFLOW
        data = data[:out_len]
    return struct.pack("<HHI", 9, 72, len(data)) + data, None


# (info type, class) -> size of the fixed part before a variable-length name or list
# (the sizes Windows checks against, which smbtorture's buffercheck tests expect)
VARIABLE_PART = {
    (wire.INFO_FILE, 18): 104, (wire.INFO_FILE, 21): 8, (wire.INFO_FILE, 22): 32,
    (wire.INFO_FILE, 48): 8,
    (wire.INFO_FILESYSTEM, 1): 24, (wire.INFO_FILESYSTEM, 5): 16,
}


def _may_delete(access: int) -> bool:
    return bool(access & (wire.DELETE | wire.GENERIC_ALL | wire.MAXIMUM_ALLOWED))


def file_size(buf) -> int:
    """A size a client sets (end of file, allocation): a negative one (as the signed 64-bit
    value it is) is malformed, one past NTFS's largest file cannot fit (as NTFS answers)."""
    size = struct.unpack_from("<q", buf, 0)[0]
    if size < 0:
        raise SMBError(wire.STATUS_INVALID_PARAMETER)
    if size > MAX_FILE_SIZE:
        raise SMBError(wire.STATUS_DISK_FULL)
    return size


# the access each settable file information class needs (MS-SMB2 3.3.5.21.1)
SET_INFO_NEEDS = {4: wire.FILE_WRITE_ATTRIBUTES, 10: wire.DELETE, 13: wire.DELETE, 15: wire.FILE_WRITE_EA,
                  19: wire.FILE_WRITE_DATA, 20: wire.FILE_WRITE_DATA}


def h_set_info(c: Connection, hdr: Header, msg: bytes, rhdr: Header, chain):
    _size, info_type, klass, length, off = struct.unpack_from("<HBBIH", msg, 64)
    o = c.open_for(bytes(msg[80:96]), chain, hdr)
    tree = c.tree(hdr)
    if tree.share.read_only:
        raise SMBError(wire.STATUS_ACCESS_DENIED)
    buf = in_request(msg, off, length)
    if info_type == wire.INFO_SECURITY:
        parts = struct.unpack_from("<I", msg, 64 + 12)[0]     # AdditionalInformation
        needs = (acl.WRITE_DAC if parts & acl.DACL else 0) | (acl.WRITE_OWNER if parts & (acl.OWNER | acl.GROUP) else 0)
        if not needs or o.granted & needs != needs:
            raise SMBError(wire.STATUS_ACCESS_DENIED)
        try:
            new = acl.parse(buf)
        except acl.BadDescriptor:
            raise SMBError(wire.STATUS_INVALID_PARAMETER)
        set_sd(o.fd, acl.merge(current_sd(o), new, parts).pack())
        notify.post(o.path(), notify.MODIFIED, notify.SECURITY)
        return struct.pack("<H", 2), None
    if info_type != wire.INFO_FILE:
        raise SMBError(wire.STATUS_NOT_SUPPORTED)
    needs = SET_INFO_NEEDS.get(klass, 0)
    clearing_delete = klass == 13 and buf[:1] == b"\0"     # (undoing a delete needs nothing)
    if needs and not clearing_delete and not o.granted & needs:
        raise SMBError(wire.STATUS_ACCESS_DENIED)
    if klass == 4:  # Basic: times (0 = leave, -1 = don't change) and attributes (0 = leave)
        ctime_set, atime, mtime, change, attrs = struct.unpack_from("<QQQQI", buf, 0)
        if attrs & wire.ATTR_DIRECTORY and not o.is_dir or attrs & wire.ATTR_TEMPORARY and o.is_dir:
            raise SMBError(wire.STATUS_INVALID_PARAMETER)
        if attrs and not o.is_dir:   # READONLY lives in the write bits (0: leave attributes)
            mode = os.fstat(o.fd).st_mode & 0o7777
            want = mode & ~0o222 if attrs & wire.ATTR_READONLY else mode | 0o200
            if want != mode:
                os.fchmod(o.fd, want)
        keep = (0, 0xFFFFFFFFFFFFFFFF)
        if atime not in keep or mtime not in keep:
            st = os.fstat(o.fd)
            a = wire.unix_ns(atime) if atime not in keep else st.st_atime_ns
            m = wire.unix_ns(mtime) if mtime not in keep else st.st_mtime_ns
            os.utime(o.fd, ns=(a, m))
        if ctime_set not in keep or change not in keep or attrs:
            dos = get_dos(o.fd) or DosInfo()
            if ctime_set not in keep:
                dos.create_time = ctime_set
            if change not in keep:
                dos.change_time, dos.change_mtime_ns = change, os.fstat(o.fd).st_mtime_ns
            if attrs:
                dos.attrs = attrs & STORED_ATTRIBUTES or wire.ATTR_NORMAL
            set_dos(o.fd, dos)
    elif klass == 10:  # Rename: needs DELETE access, and every other open must share delete
        if o.stream is not None:
            raise SMBError(wire.STATUS_NOT_SUPPORTED)      # renaming streams: not here
        if not sharemodes.others_share(o.key, id(o), sharemodes.DELETE):
            raise SMBError(wire.STATUS_SHARING_VIOLATION)
        parent = tree.vfs.stat(o.parts[:-1])
        if sharemodes.blocks_child_rename((parent.st_dev, parent.st_ino)):
            raise SMBError(wire.STATUS_SHARING_VIOLATION)
        if o.is_dir and any(other is not o and other.path().startswith(o.path() + "/")
                            for other in OPEN_FILES):
            raise SMBError(wire.STATUS_ACCESS_DENIED)   # a file inside it is open
        replace = buf[0]
        name_len = struct.unpack_from("<I", buf, 16)[0]
        new_name = wire.from_utf16(buf[20:20 + name_len])
        new_parts = split_path(new_name)
        new_parts = tree.vfs.match_case(new_parts[:-1]) + new_parts[-1:]
        replaced = tree.vfs.stream_id(new_parts) if replace and new_parts != o.parts else None
        try:
            tree.vfs.rename(o.parts, new_parts, bool(replace))
        except FileExistsError:
            raise SMBError(wire.STATUS_OBJECT_NAME_COLLISION)
        tree.vfs.remove_streams(replaced)      # the streams of the file it replaced
        what = notify.DIR_NAME if o.is_dir else notify.FILE_NAME
        same_dir = new_parts[:-1] == o.parts[:-1]
        notify.post(o.path(), notify.RENAMED_OLD_NAME if same_dir else notify.REMOVED, what)
        o.parts = new_parts
        notify.post(o.path(), notify.RENAMED_NEW_NAME if same_dir else notify.ADDED, what)
    elif klass == 13:  # Disposition
        if buf[0] and not o.is_dir and not os.fstat(o.fd).st_mode & 0o222:
            raise SMBError(wire.STATUS_CANNOT_DELETE)
        if buf[0] and o.is_dir and PosixVFS.names(o.fd):
            raise SMBError(wire.STATUS_DIRECTORY_NOT_EMPTY)
        o.delete_on_close = bool(buf[0])
        if o.delete_on_close:            # pending for everyone from now on, as on Windows
            DELETE_PENDING[o.key] = o
        elif DELETE_PENDING.get(o.key) is o:
            del DELETE_PENDING[o.key]
    elif klass == 15:  # FullEa: set or (with an empty value) remove
        for ea_name, value in parse_eas(buf):
            set_ea(o.fd, ea_name, value)
    elif klass == 20:  # EndOfFile
        os.ftruncate(o.fd, file_size(buf))
        notify.post(o.path(), notify.MODIFIED, notify.SIZE | notify.LAST_WRITE)
    elif klass == 19:  # Allocation: below the end of file it truncates, above it reserves
        wanted = file_size(buf)
        if not o.is_dir:
            if wanted < os.fstat(o.fd).st_size:
                os.ftruncate(o.fd, wanted)
            set_allocation(o.fd, wanted)
    elif klass == 14:  # Position (CurrentByteOffset)
        o.position = struct.unpack_from("<Q", buf, 0)[0]
    elif klass == 16:  # Mode: only the flags a handle may change (MS-FSCC 2.4.26)
        mode = struct.unpack_from("<I", buf, 0)[0]
        if mode & ~(0x2 | 0x4 | 0x10 | 0x20):
            raise SMBError(wire.STATUS_INVALID_PARAMETER)
        o.mode = mode
    else:
        raise SMBError(wire.STATUS_INVALID_INFO_CLASS)
    return struct.pack("<H", 2), None


def h_echo(c: Connection, hdr: Header, msg: bytes, rhdr: Header, _):
    return struct.pack("<HH", 4, 0), None




def h_change_notify(c: Connection, hdr: Header, msg: bytes, rhdr: Header, chain):
    _size, flags, out_len = struct.unpack_from("<HHI", msg, 64)
    o = c.open_for(bytes(msg[72:88]), chain, hdr)
    completion_filter = struct.unpack_from("<I", msg, 88)[0]
    if not o.is_dir or out_len > MAX_IO:
        raise SMBError(wire.STATUS_INVALID_PARAMETER)
    if o.watch is None:
        o.watch = notify.Watch(o.path(), completion_filter, bool(flags & 0x1))  # WATCH_TREE
        notify.add(o.watch)
    watch = o.watch

    def answer() -> tuple[int, bytes]:
        data, fits = watch.take(out_len)
        if not fits:
            return wire.STATUS_NOTIFY_ENUM_DIR, struct.pack("<HHI", 9, 0, 0) + b"\0"
        return wire.STATUS_SUCCESS, struct.pack("<HHI", 9, 72, len(data)) + data

    if watch.changes or watch.overflowed:
        rhdr.status, body = answer()
        return body, None

    def start(areq: AsyncRequest) -> None:   # wait for the next change
        def deliver():
            stop()
            status, body = answer()
            c.complete_async(areq, status, body)

        def stop():
            watch.deliver = None
            if areq in o.waiting:
                o.waiting.remove(areq)

        areq.on_cancel, areq.close_status = stop, wire.STATUS_NOTIFY_CLEANUP
        o.waiting.append(areq)
        watch.deliver = deliver

    raise GoAsync(start)


LOCK_REQUESTS = (wire.LOCK_SHARED, wire.LOCK_EXCLUSIVE, wire.LOCK_SHARED | wire.LOCK_FAIL_IMMEDIATELY,
                 wire.LOCK_EXCLUSIVE | wire.LOCK_FAIL_IMMEDIATELY)


def h_lock(c: Connection, hdr: Header, msg: bytes, rhdr: Header, chain):
    _size, count, _seq = struct.unpack_from("<HHI", msg, 64)
    o = c.open_for(bytes(msg[72:88]), chain, hdr)
    if count == 0 or 88 + 24 * count > len(msg):
        raise SMBError(wire.STATUS_INVALID_PARAMETER)
    elements = [struct.unpack_from("<QQII", msg, 88 + 24 * i)[:3] for i in range(count)]
    body = struct.pack("<HH", 4, 0)
    if elements[0][2] & wire.LOCK_UNLOCK:   # an unlock request: element by element (3.3.5.14.1)
        released = 0
        try:
            for offset, length, flags in elements:
                if flags != wire.LOCK_UNLOCK:
                    raise SMBError(wire.STATUS_INVALID_PARAMETER)
                if not locks.release(o.key, offset, length, id(o), wake_waiters=False):
                    raise SMBError(wire.STATUS_RANGE_NOT_LOCKED)
                released += 1
        finally:
            c.locks_held -= released
            if released:
                locks.wake(o.key)       # once: each waiter retries once, not once per element
        return body, None
    for offset, length, flags in elements:
        if flags not in LOCK_REQUESTS or (count > 1 and not flags & wire.LOCK_FAIL_IMMEDIATELY):
            raise SMBError(wire.STATUS_INVALID_PARAMETER)
        if length and offset + length - 1 > 0xFFFFFFFFFFFFFFFF:
            raise SMBError(wire.STATUS_INVALID_LOCK_RANGE)
    if locks.count(o.key, id(o)) + count > c.limits.max_locks or \
            c.locks_held + count > c.limits.max_locks_per_connection:
        raise SMBError(wire.STATUS_INSUFFICIENT_RESOURCES)     # before any work
    wanted = [locks.Lock(off, ln, bool(fl & wire.LOCK_EXCLUSIVE), id(o)) for off, ln, fl in elements]
    if locks.acquire_all(o.key, wanted):
        c.locks_held += count
        return body, None
    if elements[0][2] & wire.LOCK_FAIL_IMMEDIATELY:
        raise SMBError(wire.STATUS_LOCK_NOT_GRANTED)

    def start(areq: AsyncRequest) -> None:   # a blocking lock waits for a release
        def retry():
            if locks.acquire_all(o.key, wanted):
                c.locks_held += count
                stop()
                c.complete_async(areq, wire.STATUS_SUCCESS, body)

        def stop():
            locks.unwait(o.key, retry)
            if areq in o.waiting:
                o.waiting.remove(areq)

        areq.on_cancel, areq.close_status = stop, wire.STATUS_RANGE_NOT_LOCKED
        o.waiting.append(areq)
        locks.wait(o.key, retry)

    raise GoAsync(start)


FSCTL_VALIDATE_NEGOTIATE_INFO = 0x00140204
FSCTL_QUERY_NETWORK_INTERFACE_INFO = 0x001401FC
FSCTL_DFS_GET_REFERRALS = 0x00060194
FSCTL_CREATE_OR_GET_OBJECT_ID = 0x000900C0
SMB2_0_IOCTL_IS_FSCTL = 0x1


def interface_info(address: str, link_speed: int = 10_000_000_000) -> bytes:
    """NETWORK_INTERFACE_INFO for the address the client reached us on (MS-SMB2 2.2.32.5)."""
    import ipaddress
    ip = ipaddress.ip_address(address)
    if ip.version == 4:
        sockaddr = struct.pack("<HH", 0x2, 0) + ip.packed
    else:
        sockaddr = struct.pack("<HHI", 0x17, 0, 0) + ip.packed + b"\0" * 4
    return struct.pack("<IIIIQ", 0, 1, 0, 0, link_speed) + sockaddr.ljust(128, b"\0")


def validate_negotiate(c: Connection, request, max_out: int) -> None:
    """FSCTL_VALIDATE_NEGOTIATE_INFO (MS-SMB2 3.3.5.15.12): what the client says it sent in
    NEGOTIATE must be what the server received, or someone in between changed it (a downgrade):
    the connection is dropped."""
    if c.dialect == wire.SMB311:
        raise ConnectionError("VALIDATE_NEGOTIATE_INFO on SMB 3.1.1 (preauth integrity covers it)")
    if max_out < 24 or len(request) < 24:
        raise ConnectionError("VALIDATE_NEGOTIATE_INFO: short request or response buffer")
    caps, guid, secmode, count = struct.unpack_from("<I16sHH", request, 0)
    dialects = struct.unpack_from(f"<{count}H", request, 24) if 24 + 2 * count <= len(request) else ()
    chosen = next((d for d in wire.DIALECTS if d in dialects), None)
    if (caps, guid, secmode, chosen) != (c.client_caps, c.client_guid, c.client_security_mode, c.dialect):
        raise ConnectionError("VALIDATE_NEGOTIATE_INFO does not match the NEGOTIATE received")


def h_ioctl(c: Connection, hdr: Header, msg: bytes, rhdr: Header, chain):
    _size, _r, ctl = struct.unpack_from("<HHI", msg, 64)
    fid = bytes(msg[72:88])
    in_off, in_len, _max_in, _out_off, _out_len, max_out, flags = struct.unpack_from("<IIIIIII", msg, 88)
    if not flags & SMB2_0_IOCTL_IS_FSCTL:
        raise SMBError(wire.STATUS_NOT_SUPPORTED)
    if ctl == FSCTL_VALIDATE_NEGOTIATE_INFO:
        validate_negotiate(c, in_request(msg, in_off, in_len), max_out)
        secmode = wire.SECURITY_SIGNING_ENABLED | (wire.SECURITY_SIGNING_REQUIRED if c.signing_required else 0)
        out = struct.pack("<I16sHH", c.capabilities(c.dialect), c.server_guid, secmode, c.dialect)
    elif ctl == FSCTL_QUERY_NETWORK_INTERFACE_INFO:
        if not c.local_address:
            raise SMBError(wire.STATUS_NOT_SUPPORTED)
        out = interface_info(c.local_address)
    elif ctl == FSCTL_DFS_GET_REFERRALS:
        raise SMBError(wire.STATUS_FS_DRIVER_REQUIRED)
    elif ctl == FSCTL_CREATE_OR_GET_OBJECT_ID:
        o = c.open_for(fid, chain, hdr)
        st = os.fstat(o.fd)
        object_id = struct.pack("<QQ", st.st_ino, st.st_dev)
        out = object_id + ROOT_UUID + object_id + b"\0" * 16   # ObjectId, BirthVolumeId, BirthObjectId, DomainId
    else:
        if fid != FID_ANY or chain.related:
            c.open_for(fid, chain, hdr)   # a file-level control on a closed handle: FILE_CLOSED
        raise SMBError(wire.STATUS_NOT_SUPPORTED)
    if len(out) > max_out:
        raise SMBError(wire.STATUS_BUFFER_TOO_SMALL)
    return struct.pack("<HHI16sIIIIII", 49, 0, ctl, fid, 112, 0, 112, len(out), 0, 0) + out, None


def _u32_at(offset: int):
    return lambda msg: struct.unpack_from("<I", msg, offset)[0]


def _nothing(_msg) -> int:
    return 0


@dataclass(frozen=True)
class Command:
    """What a command needs before its handler runs, declared once (Samba's smbd_smb2_table):
    a valid session (else USER_SESSION_DELETED), a tree connect (else NETWORK_NAME_DELETED),
    and how many bytes it sends and asks to receive (checked against MaxTransactSize, its
    CreditCharge and what the frame's responses may still take)."""

    handler: object
    needs_session: bool = True
    needs_tree: bool = True
    sent: object = _nothing       # msg -> payload bytes the request carries
    asked: object = _nothing      # msg -> the most response data it asks for

    def sizes(self, msg) -> tuple[int, int]:
        return self.sent(msg), self.asked(msg)


COMMANDS = {
    wire.NEGOTIATE: Command(h_negotiate, needs_session=False, needs_tree=False),
    wire.SESSION_SETUP: Command(h_session_setup, needs_session=False, needs_tree=False),
    wire.LOGOFF: Command(h_logoff, needs_tree=False),
    wire.TREE_CONNECT: Command(h_tree_connect, needs_tree=False),
    wire.TREE_DISCONNECT: Command(h_tree_disconnect),
    wire.CREATE: Command(h_create),
    wire.CLOSE: Command(h_close),
    wire.FLUSH: Command(h_flush),
    wire.READ: Command(h_read, asked=_u32_at(68)),
    wire.WRITE: Command(h_write, sent=_u32_at(68)),
    wire.LOCK: Command(h_lock),
    wire.IOCTL: Command(h_ioctl, sent=_u32_at(92), asked=_u32_at(108)),
    wire.ECHO: Command(h_echo, needs_session=False, needs_tree=False),
    wire.QUERY_DIRECTORY: Command(h_query_directory, asked=_u32_at(92)),
    wire.CHANGE_NOTIFY: Command(h_change_notify, asked=_u32_at(68)),
    wire.QUERY_INFO: Command(h_query_info, sent=_u32_at(76), asked=_u32_at(68)),
    wire.SET_INFO: Command(h_set_info, sent=_u32_at(68)),
}
