"""One SMB2 connection's state machine: frames in, effects out (sans-I/O, as h11).

``Connection.handle_frame(bytes)`` takes one SMB2 message (or compound chain) without its
NetBIOS length prefix and returns effects (`smb.effects`): responses to send, signed or
sealed as their session requires, and file I/O to carry out before the core goes on (the
shell calls the effect's `then` with the result). The protocol state (dialect, sessions, tree
connects, opens, credits, signing) lives here. A frame is processed by a generator that yields
the file I/O it waits for, so a compound or a sealed READ suspends where it needs data and
resumes where it left off. The usual frame, one request whose answer is in memory at once, is
answered without one (`handle_frame`), with the same checks in the same order.
"""
from __future__ import annotations

import dataclasses
import logging
import mmap
import struct
import time
from typing import Callable

from smbring import _wire
from smbring._wire import answer_echoes as _answer_echoes
from smbring._wire import check_sizes as _check_sizes

from smbring.smb import aapl, acl, breaks, dirleases, leasing, notify, posix_locks, security, vetoed_entries, wire
from smbring.smb.channels import Client, signing_key_on
from smbring.smb.commands import negotiate
from smbring.smb.credits import CreditWindow
from smbring.smb.dispatch import COMMANDS, FLAGS_NOT_ALLOWED
from smbring.smb.effects import (
    Drain,
    FileIO,
    FilePayload,
    FileSteps,
    Flush,
    Forget,
    ReadInto,
    Send,
    Settle,
    Write,
)
from smbring.smb.errors import SMBError, Unverified, status_for_oserror
from smbring.smb.fileinfo import show_on_close, streams_going_with
from smbring.smb.fs import FileSystem, PathError
from smbring.smb.limits import MAX_IO_SMB202, Limits
from smbring.smb.rpc.services import ServerInfo
from smbring.smb.oplocks import HANDLE, WRITE as WRITE_CACHING
from smbring.smb.policy import Policy
from smbring.smb.random_ids import RandomBytes
from smbring.smb.server_state import ServerState
from smbring.smb.state import (
    FID_ANY,
    AsyncRequest,
    Chain,
    GoAsync,
    Open,
    Pipe,
    Session,
    Share,
    Tree,
)
from smbring.smb.wire import (
    CANCEL,
    FLAGS_RELATED,
    FLAGS_SERVER_TO_REDIR,
    FLAGS_SIGNED,
    IOCTL,
    NEGOTIATE,
    SESSION_SETUP,
    SMB202,
    WRITE,
    Header,
)

log = logging.getLogger("smbring.smb")
# A Chain as Chain() makes it, without the call of its __init__ (about 0.1 us, for every
# request): each of its fields has a plain default, which dataclasses keep as a class
# attribute, so a bare instance reads them until it sets its own (tests/smb/test_frame_paths.py
# checks that this still holds)
_new_chain = object.__new__
# the same for the Send of a response in memory (its other fields' defaults: nothing follows
# it, no break to watch; checked by the same test)
_new_send = object.__new__
# (Header.parse and Header.response_to without a Python call around them)
_parse_header = wire.HEADER_CODEC.parse
_response_header = wire.HEADER_CODEC.response_to
# the checks before a handler, for a frame of one request that needs no signature, seal or
# special case (_wire/admit.c): None for any other, then checked as any (_one)
_admit = _wire.Admission(wire.HEADER_CODEC, COMMANDS, Chain, object.__new__,
                         (FLAGS_NOT_ALLOWED | FLAGS_RELATED | FLAGS_SIGNED) & 0xFFFFFFFF).admit
_pack_header = wire.HEADER_CODEC.pack
_answer = wire.HEADER_CODEC.answer
# Connection.handle_frame (see there): the usual request's way through it in one C call
_handle_frame = _wire.FrameHandler(_admit, _answer, Send, object.__new__)
_PADDING = [bytes(n) for n in range(8)]     # what ends a compound's response 8-byte aligned
# the shortest a request can be: its header and its body's StructureSize (Samba's
# SMB2_HDR_BODY + 2); a shorter one drops the connection, as Samba drops it
SHORTEST_REQUEST = wire.HEADER_SIZE + 2


# what a file command answers when it names a named pipe (Samba's answers on IPC$)
NOT_FOR_PIPES = {wire.SET_INFO: wire.STATUS_NOT_SUPPORTED, wire.FLUSH: wire.STATUS_NOT_IMPLEMENTED,
                 wire.QUERY_DIRECTORY: wire.STATUS_NOT_SUPPORTED, wire.IOCTL: wire.STATUS_FS_DRIVER_REQUIRED}


# -- channel sequence numbers (MS-SMB2 3.3.5.2.10) ---------------------------------------------
# A client that resends a request on another channel (after losing one) raises the session's
# ChannelSequence; a request still carrying an older one must not modify the file after the
# newer ones did. Kept per open, as Samba's smbd_smb2_request_dispatch_update_counts: requests
# here are answered before the next is taken, so no request counts are needed.
MODIFYING = (wire.WRITE, wire.SET_INFO, wire.IOCTL)


def check_channel_sequence(o: Open, hdr: Header) -> None:
    """Takes the request's ChannelSequence (the low half of the header's Status field in a
    3.x request) for the open; an older one fails a WRITE, SET_INFO or IOCTL with
    STATUS_FILE_NOT_AVAILABLE (other commands go on)."""
    sequence = hdr.status & 0xFFFF
    diff = sequence - o.channel_sequence
    if abs(diff) > 0x7FFF:
        diff = -diff            # the client's 16-bit counter wrapped (Samba's reading)
    if diff > 0:
        o.channel_sequence = sequence
    elif diff < 0 and hdr.command in MODIFYING:
        raise SMBError(wire.STATUS_FILE_NOT_AVAILABLE)


# Connection.open_for(fid, chain, hdr, kind=Open) -> the open a request names; in a related
# compound, FileId -1 is the previous one. An open is reachable only through the session and
# tree connect that made it: with any other it is closed, as far as the client can tell
# (MS-SMB2 3.3.5.x, FILE_CLOSED). A named pipe (`kind` Pipe) is not a file, nor a file a pipe:
# INVALID_DEVICE_REQUEST (NOT_FOR_PIPES). A file's open has the request's ChannelSequence
# taken (check_channel_sequence: a request with the open's own, the usual one, neither takes
# nor refuses anything) and its CREATE's answer known to have arrived (no replay of it now).
# Looked up and checked in one C call (_wire/open_for.c): every request on a file starts here.
_open_for = _wire.OpenFinder(Open, SMBError, NOT_FOR_PIPES, check_channel_sequence, FID_ANY, wire.SMB300,
                             wire.STATUS_FILE_CLOSED, wire.STATUS_INVALID_DEVICE_REQUEST)


def _with_request_signature(part, req: Header, status: int) -> bytearray | bytes:
    """An answer to a signed request that no key of the server signs (its session is not
    found, or has no key): INVALID_PARAMETER, FILE_CLOSED, NETWORK_NAME_DELETED and
    USER_SESSION_DELETED keep the request's SIGNED flag and signature, as smbd and Windows
    answer them (they make a response from its request's header, and refuse these before any
    signature is checked): Samba's clients, where they require signing, take these only so
    (smbXcli_base.c: the flag must be set; an echoed signature, or none, is not checked, nor
    is any of USER_SESSION_DELETED) and take them for forged otherwise. Nothing is lent: the
    signature is the client's own. (A session that a PreviousSessionId or a failed
    re-authentication ended is answered signed with its key instead: `Client.deleted`.) Any
    other answer stays as it is, unsigned."""
    if status not in wire.ECHOED_FAILURES:
        return part
    part = bytearray(part)
    part[16] |= FLAGS_SIGNED        # (the Flags field's low byte holds the bit)
    part[48:64] = req.signature
    return part


def _answered_as_named(rhdr: Header, hdr: Header, msg, sealed: bool = False) -> None:
    """A related request whose session check failed (the first of a chain inherits no
    session; one after a failed request inherits none) is answered as smbd answers it, from
    its request's header: with the SessionId its header named and, where it was signed, its
    SIGNED flag and signature, never a signature of the server's (none of it was verified:
    no answer is signed for it). Samba's clients that require signing look the answer's
    session up by that SessionId, and take such an INVALID_PARAMETER only so (see
    _with_request_signature). Not in an answer to a `sealed` frame: that answer is sealed,
    and a sealed message carries no signature (MS-SMB2 3.3.4.1.1)."""
    rhdr.session_id = int.from_bytes(msg[40:48], "little")
    if hdr.flags & FLAGS_SIGNED and not sealed:
        rhdr.flags |= FLAGS_SIGNED
        rhdr.signature = hdr.signature
    rhdr.signer = ()        # (errors.Unverified's mark: the server neither signs nor seals for it)


def _another_sessions_request(hdr: Header) -> None:
    """A request in a sealed frame that names another session than the one whose key sealed
    it (and is not related to the request before it). One that needs a session is answered
    by the session check (`Connection._check_session`: ACCESS_DENIED or
    USER_SESSION_DELETED, sealed, as smbd answers it), reaching nothing of the session it
    names; any other (NEGOTIATE, SESSION_SETUP, ECHO, CANCEL, an unknown command) ends the
    connection: no client sends one so, and a SESSION_SETUP would start or bind a session
    under another session's seal."""
    entry = COMMANDS.get(hdr.command)
    if entry is None or not entry.needs_session:
        raise ConnectionError("an encrypted frame carried another session's request")


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
        kind = type(body)       # (the usual answer first, without isinstance's cost)
        size = len(body) if kind is bytes or kind is bytearray or isinstance(body, memoryview) else \
            len(body.prefix) + body.range.length if isinstance(body, FilePayload) else 0
        self.left -= 64 + 8 + size      # the header and the padding of a compound part too


class Connection:
    def __init__(self, shares: dict[str, Share], *, lookup, open_fs: Callable[[str], FileSystem],
                 allow_guest: bool = False, signing_required: bool = False,
                 encryption_required: bool = False, local_address: str = "", client_address: str = "",
                 file_closed=None, close_descriptor=None, io_under_way=None,
                 limits: Limits | None = None, ntlm_auth: str = "ntlmv2-only",
                 state: ServerState | None = None, server_info: ServerInfo | None = None,
                 policy: Policy | None = None, identities=None, kerberos=None, administration=None):
        # what all connections of the server share (opens, share modes, locks, watches);
        # a connection on its own has its own
        self.state = state if state is not None else ServerState()
        self.limits = limits or Limits()
        self.ntlm_auth = ntlm_auth               # Samba's `ntlm auth`: ntlmv2-only, ntlmv1-permitted
        self.server_info = server_info or ServerInfo()   # what srvsvc and wkssvc say of the server
        # what srvsvc's administrators' calls see and do (rpc.services.Administration; None:
        # a connection on its own offers none)
        self.administration = administration
        self.local_address = local_address     # for FSCTL_QUERY_NETWORK_INTERFACE_INFO
        self.client_address = client_address   # for hosts allow/deny of a share, %I, %m
        # [global] security settings (dialects, encryption, guests); encryption_required is
        # `smb encrypt = required` in [global]
        self.policy = policy or Policy()
        if encryption_required:
            self.policy = dataclasses.replace(self.policy, encryption="required")
        # file_closed(share name, fd): the shell forgets what its VFS modules keep for a
        # descriptor before the number can be reused
        self.file_closed = file_closed
        # close_descriptor(fd, close): the shell calls close() (which closes fd) now, or once
        # no work it carries out names fd any more: a descriptor's number is never reused
        # while a WRITE, READ or copy of another channel still means this file by it (None:
        # at once; nothing outlives the core's call)
        self.close_descriptor = close_descriptor
        # io_under_way(fd): whether the shell has file I/O started on fd still running (on
        # any connection); a CLOSE, FLUSH, TREE_DISCONNECT or LOGOFF answers after it (`after_io`).
        # None: nothing outlives the core's call
        self.io_under_way = io_under_way
        self.shares = {k.lower(): v for k, v in shares.items()}
        self.open_fs = open_fs          # a share's root path -> its FileSystem (vfs.posix.PosixVFS)
        # who each session acts as, where the server acts as its users' accounts (None: no
        # such thing, one FileSystem per share): identities.logon(user name, kind) -> an
        # identity or None (the logon is refused); identities.for_share(share, identity) ->
        # the identity its trees of that share act as (force user), or None (refused). Then
        # open_fs(share, identity) gives the share's files as that identity.
        self.identities = identities
        self.lookup = lookup     # user name -> NT hash, None when unknown (the server reads its file)
        # the server's Kerberos acceptor (server.kerberos), None where Kerberos is not offered:
        # kerberos.context() -> one exchange for a logon's SPNEGO (smb.ntlm.Acceptor)
        self.kerberos = kerberos
        self.allow_guest = allow_guest
        self.signing_required = signing_required
        self.encryption_required = self.policy.encryption == "required"
        self.cipher = 0
        self.signing_algorithm = None    # chosen by a 3.1.1 signing context, else by dialect
        self._sealed_by: Session | None = None   # the session whose key sealed the frame at hand
        self.credits = CreditWindow(self.limits.max_credits)
        self.random_ids = RandomBytes()  # FileIds' persistent halves (one getrandom for many)
        self.smb1_negotiated = False     # an SMB1 NEGOTIATE was answered with the SMB2 wildcard
        self.dialect = 0
        self.preauth = security.PreauthIntegrity()
        self.server_guid = self.state.sessions.server_guid   # one per server: channels compare it
        # sessions, opens and their FileSystems live in a Client (smb.channels): this
        # connection's own until NEGOTIATE joins it to the client's other SMB 3 channels
        self.client = Client()
        self.client.connections.append(self)
        self.client_guid = b"\0" * 16
        self.client_security_mode = 0
        self.client_caps = 0
        self.client_dialects: tuple = ()
        self.async_requests: dict[int, AsyncRequest] = {}
        self.force_unacked_timeout = False     # breaks count as never delivered (smb.breaks)
        self.outbox: list = []   # effects produced outside handle_frame (late answers, Forget)
        self.on_output = None    # called when the outbox fills outside handle_frame
        self._read_buf = self._seal_buf = None    # (_plain_buffer, _sealed_buffer)
        self._background: set[tuple[int, int, int]] = set()   # (fd, start, end) of background Writes
        self.frame_commands: list[int] = []      # the commands of the last frame (for metrics)
        self.closed = False                      # close_all() has run

    # -- the tables its client shares with the client's other channels (smb.channels) -------
    @property
    def sessions(self) -> dict[int, Session]:
        return self.client.sessions

    @property
    def opens(self) -> dict:
        return self.client.opens

    @property
    def _fs(self) -> dict:
        return self.client.fs      # (share path, identity) -> its files, for every tree

    @property
    def next_id(self) -> int:
        return self.client.next_id

    @next_id.setter
    def next_id(self, value: int) -> None:
        self.client.next_id = value

    def join_client(self) -> None:
        """After NEGOTIATE: an SMB 3 connection works on the tables of its ClientGuid's other
        connections (so that its sessions can bind channels here), where multichannel is on."""
        if not (self.policy.multi_channel and self.dialect >= wire.SMB300 and any(self.client_guid)):
            return
        if self.sessions or self.opens:
            return      # (NEGOTIATE comes first: nothing can be here yet)
        self.client.connections.remove(self)
        self.client = self.state.sessions.client_for(self.client_guid)
        self.client.connections.append(self)

    def reaches(self, s: Session) -> bool:
        """Whether the session has a channel on this connection, its binding complete. (A
        Session put straight into the table, without SESSION_SETUP, has no client: the tests'
        shortcut; it belongs to this connection.)"""
        channel = s.channels.get(self)
        if channel is not None:
            return channel.auth is None     # (not channel.in_binding, without the property's call)
        return s.client is None and not s.channels

    # -- what the server asks of a connection ---------------------------------------------
    def logged_on(self) -> bool:
        """Whether a session is established here (before that, frames are small and time out).
        (Asked for every frame: a plain loop, no generator.)"""
        for s in self.client.sessions.values():
            if s.valid and self.reaches(s):
                return True
        return False

    def frame_limit(self) -> int:
        """The largest frame (without its 4-byte prefix) the connection accepts now."""
        return self.limits.max_frame if self.logged_on() else self.limits.max_frame_unauthenticated

    def idle_closable(self) -> bool:
        """Whether dropping the connection now would lose nothing: no open files and no
        request waiting (Samba's deadtime applies only then)."""
        return not self.opens and not self.async_requests

    # -- framing -------------------------------------------------------------------------
    def answer_echoes(self, buf, start: int, end: int, max_frames: int):
        """The plain ECHOs at the head of `buf[start:end]` (received NetBIOS session messages)
        answered at once, in C (smbring._wire.answer_echoes says which frames are plain:
        one unsigned ECHO, no session, within the frame size taken before logon, the credit
        window's next MessageId), as `handle_frame` would answer each of them, credits
        included: None when the first frame is not one (nothing changed; it goes through
        `handle_frame`), else (the offset after the last one answered, how many, their
        responses with their NetBIOS prefixes). Only when nothing may go before the answers:
        no late answer in the outbox, no background write a frame waits for."""
        if end - start < 72 or buf[start + 16] != wire.ECHO or self.outbox or self._background:
            return None         # (the first frame's command, its low byte: other requests go at once)
        limits = self.limits
        if limits.max_compound < 1:     # (then every frame goes the chain's way: handle_frame)
            return None
        size = limits.max_frame if limits.max_frame < limits.max_frame_unauthenticated \
            else limits.max_frame_unauthenticated
        done = _answer_echoes(buf, start, end, max_frames, size, self.credits, self.dialect > SMB202,
                              self.client.sessions)
        if done is not None:
            self.frame_commands = [wire.ECHO]
        return done

    # handle_frame(frame, sealed_by=None) -> effects: one message or compound chain in (without
    # its NetBIOS prefix), the effects out. A ConnectionError means the client broke the
    # protocol: drop the connection. `sealed_by` is for the frame's own decryption
    # (`_other_frame`): the session whose key sealed it, `frame` its plaintext.
    # The usual request (one, no compound, neither signed nor sealed, no background write to
    # wait for first: _wire/admit.c) goes its whole way in C (_wire/frames.c): admitted, its
    # handler called, a failure answered by `_answer_failure`, an answer in memory sent as one
    # Send; any other answer is `_answered`'s, any other frame `_frame_not_admitted`'s.
    handle_frame = _handle_frame

    def _frame_not_admitted(self, frame, sealed_by) -> list:
        """`handle_frame` of a frame the admission left (any but the usual request): an SMB1
        NEGOTIATE, an encrypted frame, a compound, a signed request, ...; a single request
        is handled here as `_frame` would handle it, without its generator, chain loop and
        budget, unless its response waits for file I/O (then steps from where `_frame`
        would yield on)."""
        # (the first byte tells the kinds apart: a plain SMB2 frame's whole magic is checked
        # by Header.parse, without a slice of it made for every frame)
        if not len(frame) or frame[0] != 0xFE:
            return self._other_frame(frame, sealed_by)
        try:
            hdr = _parse_header(frame)
        except (ValueError, struct.error) as e:
            raise ConnectionError(f"malformed SMB2 header: {e}") from None
        if len(frame) < SHORTEST_REQUEST:
            raise ConnectionError("a request without its StructureSize")
        command = hdr.command
        lone_write = command == WRITE and sealed_by is None     # (wire.is_lone_write)
        if hdr.next_command or self.limits.max_compound < 1 or (self._background and not lone_write):
            return self._drive(self._frame(frame, sealed_by, lone_write and not hdr.next_command), None)
        # _split for one request
        # its MessageIds consumed and its response's credits granted in one call (_one would
        # grant them): nothing in between touches the window
        granted = 0 if command == CANCEL else self.credits.take(
            hdr.message_id, (hdr.credit_charge or 1) if self.dialect > SMB202 else 1, hdr.credits)
        if granted < 0:
            raise ConnectionError(f"MessageId {hdr.message_id} (charge {hdr.credit_charge}) outside "
                                  f"the credit window [{self.credits.low}, +{self.credits.range})")
        self.frame_commands = [command]
        chain = _new_chain(Chain)
        if hdr.flags & FLAGS_RELATED:       # related to nothing: no ids to inherit
            chain.related = True
            hdr.session_id, hdr.tree_id = chain.session_id, chain.tree_id
        elif sealed_by is not None and hdr.session_id != sealed_by.id:
            _another_sessions_request(hdr)
        self._sealed_by = sealed_by
        resp = self._one(hdr, frame, chain, self.limits.max_frame, granted)
        if resp is None:
            return self.outbox_drain()
        rhdr, body = resp
        return self._answered(hdr, rhdr, body, hdr.flags & FLAGS_SIGNED != 0, sealed_by, lone_write)

    def _answered(self, hdr: Header, rhdr: Header, body, signed: bool, sealed_by, lone_write: bool) -> list:
        """The effects of a single request's answer (`body`, as a handler gives it), the
        outbox's before them."""
        kind = type(body)
        if kind is bytes or kind is bytearray or kind is memoryview:
            out = self.outbox
            if out:
                self.outbox = []
                return out + self._response(hdr, rhdr, body, signed, sealed_by)
            return self._response(hdr, rhdr, body, signed, sealed_by)
        if kind is FilePayload and sealed_by is None and not signed:
            # a READ's data left in the file, as _read_response sends it where its session
            # neither seals nor signs it (its first case), without the steps around it
            s = self.client.sessions.get(rhdr.session_id)
            if s is None or not (s.encrypt or s.sign):
                rhdr.flags |= FLAGS_SERVER_TO_REDIR | (hdr.flags & FLAGS_RELATED)
                rhdr.message_id = hdr.message_id
                rhdr.credit_charge = hdr.credit_charge
                send = Send(_pack_header(rhdr) + body.prefix, body.range, splice_safe=body.splice_safe,
                            read_path=body.read_path)
                out = self.outbox
                if out:
                    self.outbox = []
                    out.append(send)
                    return out
                return [send]
        return self._drive(self._single_steps(hdr, rhdr, body, signed, sealed_by, lone_write), None)

    def _other_frame(self, frame, sealed_by) -> list:
        """A frame that is not a plain SMB2 one: an SMB1 NEGOTIATE, or an encrypted frame,
        decrypted and handled (what it holds must be a plain SMB2 frame)."""
        magic = frame[:4]
        if sealed_by is None:
            if magic == b"\xffSMB":
                return [Send(self._checked(negotiate.smb1_negotiate(self, bytes(frame))))]
            if magic == wire.TRANSFORM_ID:
                return self.handle_frame(*self._decrypt(frame))
            raise ConnectionError("not SMB2")
        raise ConnectionError("malformed SMB2 header: an encrypted frame held no SMB2 message")

    def _single_steps(self, hdr: Header, rhdr: Header, body, signed: bool, sealed_by, lone_write: bool):
        """The rest of `_frame`'s steps for a frame of one request whose response waits."""
        if isinstance(body, FileIO):
            body = yield from self._file_io(body, rhdr, background=lone_write)
        elif isinstance(body, FileSteps):
            body = yield from self._file_steps(body, rhdr)
        if isinstance(body, FilePayload):
            return (yield from self._read_response((hdr, rhdr, body), signed, sealed_by))
        return self._responses([(hdr, rhdr, body)], [signed], sealed_by)

    def _decrypt(self, frame):
        """The plaintext of an encrypted frame and the session whose key sealed it: a session
        of this client, bound here or not, as smbd looks it up (its requests on a connection
        that is not its channel are answered USER_SESSION_DELETED, sealed, by the session
        check: smbtorture smb2.session bind2 encrypted); a frame for any other session ends
        the connection (MS-SMB2 3.3.5.2.1.1)."""
        try:
            sid, _size = security.parse_transform(frame)
            s = self.sessions.get(sid)
            if not s or not s.decrypt_key:
                raise ConnectionError("encrypted message for an unknown session")
            plain = memoryview(security.decrypt(self.cipher, s.decrypt_key, frame))
            s.client_seals = True
            return plain, s
        except security.DecryptError as e:
            raise ConnectionError(f"undecryptable message: {e}") from None

    def _drive(self, steps, result) -> list:
        """Runs a frame's steps until they finish (their responses) or wait for file I/O (the
        effect, whose `then` resumes them); effects made meanwhile (the outbox) go first."""
        try:
            need = steps.send(result)
        except StopIteration as done:
            return self.outbox_drain() + done.value
        need.then = lambda outcome: self._drive(steps, outcome)
        return self.outbox_drain() + [need]

    def _split(self, frame, sealed_by=None) -> list[tuple[Header, object]]:
        """The requests of a frame, each header parsed and its MessageIds taken from the credit
        window, before any is handled: a frame that breaks the framing, holds more requests
        than `max compound requests`, reuses a MessageId, or (encrypted, by `sealed_by`'s key)
        carries another session's request that needs no session (`_another_sessions_request`)
        is refused whole. (A related request acts in the session of the one before it, whatever
        its header says.)"""
        messages = []
        commands = []
        offset = 0
        credits = self.credits
        while True:
            if len(messages) >= self.limits.max_compound:
                raise ConnectionError(f"more than {self.limits.max_compound} requests in one frame")
            try:
                hdr = _parse_header(frame[offset:offset + 64])
            except (ValueError, struct.error) as e:
                raise ConnectionError(f"malformed SMB2 header: {e}") from None
            end = offset + hdr.next_command if hdr.next_command else len(frame)
            # (no alignment check: a NextCommand that is not a multiple of 8 is followed, as
            # Samba follows it; a part must hold its header and StructureSize and end inside
            # the frame, as Samba's smbd_smb2_inbuf_parse_compound wants, or the frame is refused)
            if end > len(frame) or end < offset + SHORTEST_REQUEST:
                raise ConnectionError("bad NextCommand" if hdr.next_command else
                                      "a request without its StructureSize")
            if sealed_by is not None and hdr.session_id != sealed_by.id and not hdr.flags & FLAGS_RELATED:
                _another_sessions_request(hdr)
            command = hdr.command
            # (the MessageIds taken now, its credits granted when it is handled: _one; a
            # request consumes its CreditCharge once multi-credit requests exist, SMB 2.1 on,
            # one before, as handle_frame and _one take it)
            if command != CANCEL and credits.take(
                    hdr.message_id, (hdr.credit_charge or 1) if self.dialect > SMB202 else 1, None) < 0:
                raise ConnectionError(f"MessageId {hdr.message_id} (charge {hdr.credit_charge}) outside "
                                      f"the credit window [{credits.low}, +{credits.range})")
            messages.append((hdr, frame[offset:end]))
            commands.append(command)
            if not hdr.next_command:
                self.frame_commands = commands
                return messages
            offset = end

    def _frame(self, frame, sealed_by, lone_write: bool | None = None):
        """The steps of one frame (a generator): each request in turn, yielding the file I/O a
        response waits for; returns the effects that answer the frame. A lone WRITE in a plain
        frame may be written in the background (`lone_write`: whether the frame is one, where
        the caller knows): every other frame first waits for those."""
        if lone_write is None:
            lone_write = sealed_by is None and wire.is_lone_write(frame)
        if self._background and not lone_write:
            yield Drain()
        messages = self._split(frame, sealed_by)
        chain = _new_chain(Chain)           # (Chain() without its __init__'s call: its defaults)
        chain.single = len(messages) == 1
        return (yield from self._chain_steps(messages, chain, sealed_by, lone_write))

    def _chain_steps(self, messages, chain: "Chain", sealed_by, lone_write: bool):
        """The steps of a chain's requests (a generator): each in turn, related ones acting on
        what the one before left in `chain`, yielding the file I/O a response waits for;
        returns the effects that answer them. A CREATE held for an oplock break ends them: its
        interim answer goes with those before it, and the requests after it wait in its
        AsyncRequest until it is answered (_chain_rest)."""
        out: list[tuple[Header, Header, object]] = []
        signed_requests: list[bool] = []
        budget = ResponseBudget(self.limits.max_frame)
        last = len(messages) - 1
        for i, (hdr, msg) in enumerate(messages):
            chain.related = related = hdr.flags & FLAGS_RELATED != 0
            chain.last = i == last
            if related:         # ids of the previous request (none before the first)
                hdr.session_id, hdr.tree_id = chain.session_id, chain.tree_id
            else:
                chain.fid = None
            self._sealed_by = sealed_by     # (set again for each request: steps may interleave)
            resp = self._one(hdr, msg, chain, budget.left)
            if chain.split is not None:     # a held CREATE: the rest of the chain follows its answer
                areq, chain.split = chain.split, None
                areq.rest = [(h, bytes(m)) for h, m in messages[i + 1:]]
                areq.chain, areq.sealed_by = chain, sealed_by
                out.append((hdr, *resp))
                signed_requests.append(bool(hdr.flags & wire.FLAGS_SIGNED))
                return self._responses(out, signed_requests, sealed_by)
            if resp is None:
                continue
            rhdr, body = resp
            kind = type(body)
            if kind is FileIO:
                body = yield from self._file_io(body, rhdr, background=lone_write)
            elif kind is FileSteps:
                body = yield from self._file_steps(body, rhdr)
            elif kind is FilePayload and not chain.single:
                # in memory now: a later request of the chain may close the file
                body = yield from self._read(body.range, body.prefix, rhdr)
            budget.spend(body)
            out.append((hdr, rhdr, body))
            signed_requests.append(hdr.flags & FLAGS_SIGNED != 0)
        if len(out) == 1 and isinstance(out[0][2], FilePayload):
            return (yield from self._read_response(out[0], signed_requests[0], sealed_by))
        return self._responses(out, signed_requests, sealed_by)

    def _chain_rest(self, areq: "AsyncRequest"):
        """The steps of a compound's requests after a held CREATE, once it is answered: as
        `_frame` handles them, with the chain the CREATE left (its FileId, or its failure)."""
        rest = [(hdr, memoryview(msg)) for hdr, msg in areq.rest]
        return (yield from self._chain_steps(rest, areq.chain, areq.sealed_by, False))

    def _file_io(self, job: FileIO, rhdr: Header, background: bool):
        """A WRITE's or FLUSH's file I/O (steps); the response body."""
        if job.op == "flush":
            yield from self.after_io(self.busy_descriptors((job.fd,)))    # other channels' writes too
            result = yield Flush(job.share, job.fd)
        else:
            if job.at_end is not None:
                # the end is where the writes before it leave it: this connection's background
                # writes and the file I/O under way on the file end first (the appends of
                # other opens still under way are counted in, see ServerState.append_offset)
                if any(fd == job.fd for fd, _start, _end in self._background):
                    yield Drain(fd=job.fd, start=0, end=1 << 64)
                yield from self.after_io(self.busy_descriptors((job.fd,)))
                try:
                    job.offset = job.at_end()
                except SMBError as e:
                    rhdr.status = e.status
                    return wire.error_body()
            span = (job.fd, job.offset, job.offset + len(job.data))
            if background and any(fd == span[0] and start < span[2] and span[1] < end
                                  for fd, start, end in self._background):
                yield Drain(fd=span[0], start=span[1], end=span[2])   # writes land in order
            if background:
                self._background.add(span)
            try:
                result = yield Write(job.share, job.fd, job.offset, job.data, background=background)
            finally:
                self._background.discard(span)
                if job.ended is not None:
                    job.ended()
            if job.then_flush and not isinstance(result, BaseException):
                flushed = yield Flush(job.share, job.fd)      # write through: durable first
                if isinstance(flushed, BaseException):
                    result = flushed
        if isinstance(result, BaseException):
            return self._failed(rhdr, result)
        return job.done(result)

    @staticmethod
    def _file_steps(job: FileSteps, rhdr: Header):
        """A response that waits for file-range operations (steps): the body its steps return,
        or the error response they raise."""
        try:
            return (yield from job.steps)
        except SMBError as e:
            rhdr.status = e.status
        except ConnectionError:
            raise
        except OSError as e:        # a file-system call of the steps failed
            rhdr.status = status_for_oserror(e)
        except Exception:
            log.exception("file-range steps failed")      # a bug of ours, not the client's
            rhdr.status = wire.STATUS_INTERNAL_ERROR
        return wire.error_body()

    def _read(self, rng, prefix: bytes, rhdr: Header):
        """A READ's response body with its data read into memory (steps)."""
        body = bytearray(len(prefix) + rng.length)
        body[:len(prefix)] = prefix
        result = yield ReadInto(rng, memoryview(body)[len(prefix):])
        if isinstance(result, BaseException):
            return self._failed(rhdr, result)
        return body

    @staticmethod
    def _failed(rhdr: Header, error: BaseException) -> bytes:
        """The error response for file I/O that failed (an unexpected failure is ours: logged)."""
        if isinstance(error, OSError):
            rhdr.status = status_for_oserror(error)
        else:
            log.error("file I/O failed: %r", error)
            rhdr.status = wire.STATUS_INTERNAL_ERROR
        return wire.error_body()

    def _read_response(self, response, signed: bool, sealed_by):
        """A lone READ's response (steps): unsigned, its data stays in the file for the shell to
        move (passed through untouched); signed or sealed, the header and the data are read
        into one reused buffer (the previous response has been sent by the time the next
        frame is handled), then signed there, over exactly the bytes then sent, or sealed
        into a second buffer."""
        req, rhdr, payload = response
        seal = self._seal_for([response], sealed_by)
        if seal is None and not self._must_sign(rhdr, signed):
            head = self._finish(req, rhdr, payload.prefix)
            return [Send(bytes(head), payload.range, splice_safe=payload.splice_safe,
                         read_path=payload.read_path)]
        head = self._finish(req, rhdr, payload.prefix)
        r = payload.range
        plain = self._plain_buffer(len(head) + r.length)
        plain[:len(head)] = head
        result = yield ReadInto(r, plain[len(head):])
        if isinstance(result, BaseException):
            return self._responses([(req, rhdr, self._failed(rhdr, result))], [signed], sealed_by)
        if seal is None:
            self._sign(plain, rhdr, signed, None)
            return [Send(self._checked(plain))]
        return [self._sealed(seal, plain, self._sealed_buffer(len(plain)))]

    def _seal_for(self, out, sealed_by) -> Session | None:
        """The session whose key seals the responses: the request's, or one that encrypts all
        (not the SESSION_SETUP that completes it: the client has no keys before it, so that
        one is signed, MS-SMB2 3.3.4.1.4)."""
        if sealed_by is not None:
            return sealed_by
        sessions = self.client.sessions
        for _, r, _ in out:
            s = sessions.get(r.session_id)
            if s is not None and s.encrypt and r.command != wire.SESSION_SETUP and r.signer != ():
                return s        # (not for the answer to a request its key did not protect)
        return None

    def _response(self, req: Header, rhdr: Header, body, signed: bool, sealed_by) -> list:
        """The response to a frame of one request, its body in memory, as `_responses` makes
        it (the usual answer: one message, no chaining, no copy of it)."""
        s = self.client.sessions.get(rhdr.session_id)
        if s is None and sealed_by is None and rhdr.signer is None:
            # no session (an ECHO, a NEGOTIATE, an error for a session that is not there):
            # nothing to sign or seal with, as _finish makes it but immutable
            rhdr.flags |= FLAGS_SERVER_TO_REDIR | (req.flags & FLAGS_RELATED)
            rhdr.message_id = req.message_id
            rhdr.credit_charge = req.credit_charge
            part = _pack_header(rhdr) + body
            if signed:
                part = _with_request_signature(part, req, rhdr.status)
            if len(part) > 0xFFFFFF:
                self._checked(part)
            send = _new_send(Send)      # (Send(part), without its __init__'s call)
            send.message = part
            return [send]
        seal = sealed_by
        if seal is None and s is not None and s.encrypt and rhdr.command != SESSION_SETUP and \
                rhdr.signer != ():      # (errors.Unverified: neither sealed nor signed)
            seal = s
        if seal is None:
            if rhdr.signer:
                part = self._finish(req, rhdr, body)
                security.apply_signature(*rhdr.signer, part)
            # (_must_sign is False unless one of the first three holds: asked only then)
            elif s is not None and (signed or s.sign or rhdr.command == SESSION_SETUP) and \
                    self._must_sign(rhdr, signed):
                part = self._finish(req, rhdr, body)
                security.apply_signature(self.sign_algorithm(), signing_key_on(s, self), part)
            else:       # (as _finish makes it, but immutable: nothing writes to it)
                rhdr.flags |= FLAGS_SERVER_TO_REDIR | (req.flags & FLAGS_RELATED)
                rhdr.message_id = req.message_id
                rhdr.credit_charge = req.credit_charge
                part = _pack_header(rhdr) + body
                if signed and rhdr.signer is None:
                    part = _with_request_signature(part, req, rhdr.status)
        else:
            part = self._finish(req, rhdr, body)
            if seal.encrypt_key:
                return [self._sealed(seal, part)]
        if len(part) > 0xFFFFFF:
            self._checked(part)
        send = _new_send(Send)
        send.message = part
        return [send]

    def _responses(self, out, signed_requests, sealed_by) -> list:
        """The responses, in memory, as one Send: a compound response is 8-byte aligned and
        chained by NextCommand, each part signed on its own after the chaining fields are
        final; the whole sealed where its session encrypts."""
        if not out:
            return []
        if len(out) == 1:
            return self._response(*out[0], signed_requests[0], sealed_by)
        seal = self._seal_for(out, sealed_by)
        sessions = self.client.sessions
        parts = []
        last = len(out) - 1
        for i, (req, rhdr, body) in enumerate(out):
            # (as _finish makes it, the chaining fields set before the header is packed)
            rhdr.flags |= FLAGS_SERVER_TO_REDIR | (req.flags & FLAGS_RELATED)
            rhdr.message_id = req.message_id
            rhdr.credit_charge = req.credit_charge
            # every part of a compound ends 8-byte aligned, the last too (as Windows sends it)
            size = wire.HEADER_SIZE + len(body)
            padded = (size + 7) & ~7        # (wire.pad8)
            if i < last:
                rhdr.next_command = padded
            part = _pack_header(rhdr) + body + _PADDING[padded - size]
            # (_sign signs nothing unless one of these holds: the part of a session that signs
            # nothing it was not asked to is not passed to it)
            s = sessions.get(rhdr.session_id)
            if seal is None and (rhdr.signer or signed_requests[i] or rhdr.command == SESSION_SETUP
                                 or s is not None and s.sign):
                part = self._sign(part, rhdr, signed_requests[i], seal)
                if signed_requests[i] and rhdr.signer is None and not part[16] & FLAGS_SIGNED:
                    part = _with_request_signature(part, req, rhdr.status)
            parts.append(part)
        chained = b"".join(parts)
        if seal is not None and seal.encrypt_key:
            return [self._sealed(seal, chained)]
        send = _new_send(Send)      # (Send(...), without its __init__'s call)
        send.message = self._checked(chained)
        return [send]

    def _sign(self, part, rhdr: Header, request_signed: bool, seal):
        """Signs a response that must be (unless sealed): with the key a SESSION_SETUP answer
        names (rhdr.signer, commands.session), else its session's key on this connection.
        The part: signed in place where it is writable, a signed copy where it is bytes."""
        if seal is not None:
            return part
        if rhdr.signer:
            key = rhdr.signer
        elif self._must_sign(rhdr, request_signed):
            key = self.sign_algorithm(), signing_key_on(self.sessions[rhdr.session_id], self)
        else:
            return part
        if type(part) is bytes:
            part = bytearray(part)
        security.apply_signature(*key, part)
        return part

    # -- asynchronous requests (blocking locks, change notify) ------------------------------
    def outbox_drain(self) -> list:
        """Effects made outside a frame's steps: answers to requests that completed after
        their interim response, files to forget."""
        out, self.outbox = self.outbox, []
        return out

    def complete_async(self, areq: "AsyncRequest", status: int, body: bytes | None = None) -> None:
        """Answers a pending request; the answer waits in the outbox for the shell."""
        if self.async_requests.pop(areq.async_id, None) is None:
            return                                        # already answered or cancelled
        if areq.orphaned:
            return          # its connection is gone: nobody to answer
        rhdr = Header(command=areq.hdr.command, status=status, flags=wire.FLAGS_ASYNC,
                      session_id=areq.hdr.session_id, async_id=areq.async_id)
        req = Header(command=areq.hdr.command, message_id=areq.hdr.message_id,
                     credit_charge=areq.hdr.credit_charge, credits=0,
                     flags=areq.hdr.flags & ~wire.FLAGS_RELATED)
        # sealed as the request was, with its session's key even when the session has ended
        # meanwhile (a LOGOFF while a CREATE waits for a break): nothing of it leaves in clear
        self.outbox.extend(self._responses([(req, rhdr, body if body is not None else wire.error_body())],
                                           [areq.signed], areq.sealed_by if areq.sealed else None))
        if areq.rest and not self.closed:      # the compound's requests after it
            if areq.hdr.command == wire.CREATE:
                areq.chain.create_error = status   # (a held SET_INFO's failure is its own)
            rest = self._drive(self._chain_rest(areq), None)   # (drains the outbox: before it)
            self.outbox.extend(rest)
        if self.on_output is not None:
            self.on_output()

    def flush_outbox(self) -> None:
        """Hands the shell what another connection's request or an administrator put in this
        one's outbox (breaks, late answers, files to forget), if anything."""
        if self.outbox and self.on_output is not None:
            self.on_output()

    def resume(self, areq: "AsyncRequest", run) -> None:
        """Runs a waiting request's handler again (a CREATE held for an oplock break) and
        answers it, or lets it wait again; `run(rhdr)` returns the response body and FileId."""
        if self.closed or areq.async_id not in self.async_requests:
            return                                        # cancelled meanwhile
        hdr = areq.hdr
        rhdr = Header(command=hdr.command, session_id=hdr.session_id, tree_id=hdr.tree_id)
        s = self.sessions.get(hdr.session_id)
        # the request runs again as the frame it came in: sealed or not, whatever frame this
        # connection handled last (a share that alone asks for encryption sees both kinds)
        self._sealed_by = areq.sealed_by
        try:
            if s is None or not s.valid:
                raise SMBError(wire.STATUS_USER_SESSION_DELETED)
            body, fid = run(rhdr)
            if areq.chain is not None:
                areq.chain.fid = fid
        except GoAsync as e:
            e.start(areq)
            return
        except SMBError as e:
            rhdr.status, body = e.status, None
        except PathError:
            rhdr.status, body = wire.STATUS_OBJECT_NAME_INVALID, None
        except OSError as e:
            rhdr.status, body = status_for_oserror(e), None
        except Exception:   # a bug of ours: answer, keep the connection
            log.exception("command %d failed when resumed", hdr.command)
            rhdr.status, body = wire.STATUS_INTERNAL_ERROR, None
        self.complete_async(areq, rhdr.status, body)

    def send_oplock_break(self, o: Open, level: int) -> None:
        """Tells the client that holds an oplock on `o` to break it to `level`
        (MS-SMB2 3.3.4.6): an unsolicited message, MessageId -1, no session or tree, not
        signed; sealed where the open's session encrypts; on a channel of the open's session
        (smb.breaks: the oldest, the next one where it is not delivered)."""
        oplocks, client = self.state.oplocks, self.client
        s = self.sessions.get(o.session_id)
        breaks.send(client, struct.pack("<HBBI", 24, level, 0, 0) + o.fid, s, oplock=True,
                    retry=self.policy.oplock_break_retry,
                    wanted=lambda: client.opens.get(o.fid) is o and oplocks.breaking(o),
                    share_encrypts=_share_encrypts(s, o))

    def send_lease_break(self, o: Open, lease, old: int, new: int, ack_required: bool) -> None:
        """Tells the client that holds `lease` (through the open `o`) to break it from `old`
        to `new` (MS-SMB2 3.3.4.7), sent as an oplock break is, on the client's oldest
        connection (a lease belongs to the client, not to one connection), or where the
        open's session encrypts its oldest channel (smb.breaks)."""
        s = self.sessions.get(o.session_id)
        oplocks = self.state.oplocks
        breaks.send(self.client, leasing.break_notification(lease, old, new, ack_required), s,
                    oplock=False, retry=True, wanted=lambda: oplocks.lease_breaking(lease),
                    share_encrypts=self._break_sealed(s, o), session_id=o.session_id,
                    owner=self._durable_owner(o) if s is None else "")

    def _durable_owner(self, o: Open) -> str:
        """Whose an open is once its session is gone: the user its durable record names
        (`Session.owner`), empty for an open that has none (it is nobody's to be told of)."""
        d = self.state.durable.of(o)
        return d.user if d is not None else ""

    def _break_sealed(self, s: Session | None, o: Open) -> bool:
        """Whether what the server tells of the open must be sealed: its share asks for
        encryption, or (its session gone, which cannot say) the server does."""
        if s is not None:
            return _share_encrypts(s, o)
        return self.policy.encryption in ("required", "desired") or \
            _asks_encryption(getattr(o.tree, "share", None))

    def cancel_async(self, areq: "AsyncRequest", status: int = wire.STATUS_CANCELLED) -> None:
        if areq.async_id in self.async_requests:
            if areq.on_cancel is not None:
                areq.on_cancel()
            self.complete_async(areq, status)

    def _cancel(self, hdr: Header, msg) -> None:
        """CANCEL: by AsyncId, or by MessageId for a request still answered synchronously.
        Only by the session that sent the request (the client names it, MS-SMB2 3.2.4.24),
        protected as that session's requests are: another session on the connection, or an
        unsigned CANCEL where the session signs, ends nothing."""
        for areq in list(self.async_requests.values()):
            if (areq.async_id == hdr.async_id if hdr.flags & wire.FLAGS_ASYNC
                    else areq.hdr.message_id == hdr.message_id and not areq.orphaned):
                if self._cancelled_by(areq, hdr, msg):
                    self.cancel_async(areq)

    def _cancelled_by(self, areq: "AsyncRequest", hdr: Header, msg) -> bool:
        session_id = areq.hdr.session_id
        if hdr.session_id != session_id:
            return False
        s = self.client.sessions.get(session_id)
        if s is None:
            return not session_id      # (no session behind the request: nothing to protect)
        try:
            self._check_protection(s, hdr, msg)
        except SMBError:
            return False
        return True

    def _plain_buffer(self, size: int) -> memoryview:
        """A page-aligned buffer for a signed or sealed READ's response, kept for the
        connection's next ones (anonymous memory: no file behind it; its pages, once touched,
        are not faulted in again for every response)."""
        if self._read_buf is None or len(self._read_buf) < size:
            self._read_buf = mmap.mmap(-1, max(size, 1 << 20) + 4096)
        return memoryview(self._read_buf)[:size]

    def _sealed_buffer(self, size: int) -> memoryview:
        """Where a sealed READ's ciphertext is written (size + 16: the tag), kept as above."""
        if self._seal_buf is None or len(self._seal_buf) < size + 16:
            self._seal_buf = mmap.mmap(-1, max(size, 1 << 20) + 4096 + 16)
        return memoryview(self._seal_buf)

    def _sealed(self, session: Session, plaintext, out=None) -> Send:
        transform, ciphertext = security.encrypt(self.cipher, session.encrypt_key, session.id,
                                                 plaintext, out)
        self._checked(transform, len(ciphertext))
        return Send(transform, ciphertext)

    @staticmethod
    def _checked(message, more: int = 0):
        """A response the NetBIOS length (24 bits) can carry; the budget keeps them below."""
        if len(message) + more > 0xFFFFFF:
            raise ConnectionError(f"a response of {len(message) + more} bytes cannot be framed")
        return message

    @staticmethod
    def _finish(req: Header, rhdr: Header, body: bytes) -> bytearray:
        """The response message; its credits were granted when the request was taken on."""
        rhdr.flags |= wire.FLAGS_SERVER_TO_REDIR | (req.flags & wire.FLAGS_RELATED)
        rhdr.message_id = req.message_id
        rhdr.credit_charge = req.credit_charge
        message = bytearray(rhdr.pack())
        message += body
        return message

    def sign_algorithm(self) -> int:
        if self.signing_algorithm is not None:
            return self.signing_algorithm
        return security.algorithm_for(self.dialect)

    def _must_sign(self, rhdr: Header, request_signed: bool) -> bool:
        """Responses are signed when their session signs everything, when the request was
        signed (MS-SMB2 3.3.4.1.1), and always the final SESSION_SETUP of SMB 3.x."""
        if rhdr.signer is not None:
            return False    # (a key named is applied before this is asked; () is errors.Unverified)
        s = self.client.sessions.get(rhdr.session_id)
        # (the answer below needs one of these: the key, the cost of the question, is not
        # looked up for the answers of a session that signs nothing it was not asked to)
        if not s or not (s.sign or request_signed or rhdr.command == wire.SESSION_SETUP) or \
                not signing_key_on(s, self):        # (a guest's session has no key)
            return False
        if rhdr.command == wire.SESSION_SETUP and not self.reaches(s):
            return False    # signed where its signature verified (rhdr.signer, commands.session)
        final_setup = rhdr.command == wire.SESSION_SETUP and rhdr.status == wire.STATUS_SUCCESS
        return s.sign or request_signed or (final_setup and self.dialect >= wire.SMB300)

    # -- dispatch ------------------------------------------------------------------------
    def _one(self, hdr: Header, msg, chain: "Chain", budget_left: int, granted: int = -1):
        """One request: the checks before its handler (Samba's smbd_smb2_request_dispatch),
        then the handler; (response header, body), or None for a CANCEL. `budget_left`: what
        the frame's responses may still take (ResponseBudget). `granted`: the credits its
        response grants, where granted already (handle_frame's lone request); -1: granted here."""
        command = hdr.command
        rhdr = _response_header(hdr)
        if command == CANCEL:
            self._cancel(hdr, msg)
            return None
        # granted now, so that an interim response carries them and the final one none
        # (its MessageIds were taken when its frame was split: _split)
        rhdr.credits = granted if granted >= 0 else \
            self.credits.take(None, (hdr.credit_charge or 1) if self.dialect > SMB202 else 1, hdr.credits)
        if command == IOCTL:
            hooked = breaks.force_unacked_timeout(self, hdr, msg)     # (a test control, off by default)
            if hooked is not None:
                rhdr.status, body = hooked
                return rhdr, body
        entry = COMMANDS.get(command)
        session_ok = True
        try:
            if entry is None or hdr.flags & FLAGS_NOT_ALLOWED:
                raise SMBError(wire.STATUS_INVALID_PARAMETER)
            if entry.needs_session:
                try:
                    s = self._check_session(hdr, msg)
                except SMBError:
                    session_ok = False
                    if chain.related:   # MS-SMB2 3.3.5.2.7.2, as Samba and Windows answer
                        _answered_as_named(rhdr, hdr, msg, self._sealed_by is not None)
                        raise SMBError(wire.STATUS_INVALID_PARAMETER)
                    raise
                if entry.needs_tree:    # (only commands that need a session need a tree: dispatch)
                    # self.tree(hdr), its usual outcome without the call: the session's tree
                    # connect, reached unencrypted where its share allows; else tree() raises
                    t = s.trees.get(hdr.tree_id)
                    if t is None or t.share and t.share.encrypt and self._sealed_by is None:
                        self.tree(hdr)
                    chain.tree = t      # (for the handler: Chain.tree)
            elif command == SESSION_SETUP:
                self._check_session_setup(hdr, msg)
            elif command == wire.ECHO and hdr.flags & FLAGS_SIGNED:
                self._check_signed_echo(hdr, msg)
            elif command == NEGOTIATE and hdr.flags & FLAGS_SIGNED:
                raise SMBError(wire.STATUS_INVALID_PARAMETER)    # MS-SMB2 3.3.5.2.4
            # sizes checked before a body is parsed: its StructureSize, MaxRead/Write/
            # TransactSize, the CreditCharge (MS-SMB2 3.3.5.2.5), what the frame's answers
            # may still take (_wire/sizes.c)
            status = _check_sizes(msg, entry.layout, command, self.dialect, hdr.credit_charge,
                                  self.limits, budget_left)
            if status:
                raise SMBError(status)
            body, fid = entry.handler(self, hdr, msg, rhdr, chain)
            if fid is not None:
                chain.fid = fid
            return rhdr, body
        except ConnectionError:     # the client broke the protocol (an OSError: kept apart)
            raise
        except Exception as e:
            return self._answer_failure(e, hdr, rhdr, chain)
        finally:
            chain.session_id = hdr.session_id if session_ok else 0
            chain.tree_id = hdr.tree_id if session_ok else 0

    def _answer_failure(self, e: Exception, hdr: Header, rhdr: Header, chain: "Chain"):
        """The answer to a request whose checks or handler raised `e` (not a ConnectionError):
        (response header, body)."""
        if isinstance(e, GoAsync):
            # only the last of a compound may wait (Windows: <162>), but a CREATE or a rename
            # held for a break, whose holder may answer on this connection: the chain is split there
            # (as Samba does), the requests after it handled once it is answered
            if not chain.last and hdr.command not in (wire.CREATE, wire.SET_INFO):
                rhdr.status = wire.STATUS_INTERNAL_ERROR
                return rhdr, wire.error_body()
            if len(self.async_requests) >= self.limits.max_pending_requests:
                rhdr.status = wire.STATUS_INSUFFICIENT_RESOURCES
                return rhdr, wire.error_body()
            areq = AsyncRequest(self.next_id, hdr, self._sealed_by is not None,
                                bool(hdr.flags & wire.FLAGS_SIGNED), sealed_by=self._sealed_by)
            self.next_id += 1
            self.async_requests[areq.async_id] = areq
            rhdr.status = wire.STATUS_PENDING
            rhdr.flags |= wire.FLAGS_ASYNC
            rhdr.async_id = areq.async_id
            e.start(areq)
            if not chain.last:
                chain.split = areq
            return rhdr, wire.error_body()
        if isinstance(e, SMBError):
            log.debug("command %d: status %#x", hdr.command, e.status)
            rhdr.status = e.status
            if getattr(e, "signer", None) is not None:      # (channels.SessionDeleted)
                rhdr.signer = e.signer
        elif isinstance(e, PathError):
            rhdr.status = (wire.STATUS_OBJECT_PATH_SYNTAX_BAD if e.kind == "syntax"
                           else wire.STATUS_OBJECT_NAME_INVALID)
        elif isinstance(e, OSError):
            log.debug("command %d: %s", hdr.command, e)
            rhdr.status = status_for_oserror(e)
        elif isinstance(e, (struct.error, IndexError, ValueError, UnicodeDecodeError)):
            rhdr.status = wire.STATUS_INVALID_PARAMETER
        else:   # a bug of ours: report it, answer, keep the connection
            log.error("command %d failed", hdr.command, exc_info=e)
            rhdr.status = wire.STATUS_INTERNAL_ERROR
        if hdr.command == wire.CREATE:
            chain.create_error = rhdr.status
        return rhdr, wire.error_body()

    def max_io(self, command: int) -> int:
        """The most a request of `command` may move: MaxReadSize (READ), MaxWriteSize
        (WRITE) or MaxTransactSize (the others) as NEGOTIATE announced them."""
        if self.dialect == wire.SMB202:
            return MAX_IO_SMB202
        limits = self.limits
        return limits.max_read if command == wire.READ else limits.max_write if command == WRITE else limits.max_trans

    def _check_session(self, hdr: Header, msg) -> Session:
        s = self.client.sessions.get(hdr.session_id)
        if not s or not s.valid:
            raise self.client.deleted(self, hdr, msg)
        # self.reaches(s), its usual case (a channel here, bound) without the call
        channel = s.channels.get(self)
        if (channel.auth is not None) if channel is not None else not self.reaches(s):
            raise self.client.deleted(self, hdr, msg)       # (another connection's session)
        if self._sealed_by is None:
            # _check_protection passes a request without these (nothing sealed, signed or
            # required of it): called only where one holds
            if s.encrypt or s.sign or hdr.flags & FLAGS_SIGNED or hdr.command == wire.TREE_CONNECT:
                self._check_protection(s, hdr, msg)
        elif self._sealed_by.id != s.id:
            # a request of another session in a frame sealed with this one's key: the seal
            # vouches for nothing of the session it names (smbd answers ACCESS_DENIED too; a
            # session not found was answered above, as any)
            raise SMBError(wire.STATUS_ACCESS_DENIED)
        if s.expires and s.expires <= time.monotonic() and not self._allowed_expired(hdr, msg):
            if not s.expiry_told:
                s.expiry_told = True
                log.info("session %d of %s from %s expired with its Kerberos ticket: refused until "
                         "it re-authenticates", s.id, s.user, self.client_address or "?")
            raise SMBError(wire.STATUS_NETWORK_SESSION_EXPIRED)
        return s

    @staticmethod
    def _allowed_expired(hdr: Header, msg) -> bool:
        """What an expired session may still do (MS-SMB2 3.3.5.2.9, as smbd): LOGOFF, CLOSE,
        and a LOCK that unlocks (what it holds can be let go; nothing more taken)."""
        if hdr.command == wire.LOGOFF or hdr.command == wire.CLOSE:
            return True
        # (the first lock element's Flags: header 64, the LOCK's fixed part 24, Offset and
        # Length 16; a LOCK too short for them is the handler's to refuse)
        return hdr.command == wire.LOCK and len(msg) >= 108 and bool(msg[104] & wire.LOCK_UNLOCK)

    def _check_protection(self, s: Session, hdr: Header, msg) -> None:
        """The request is covered by its session's encryption or signature, as the session
        requires (MS-SMB2 3.3.5.2.4, 3.3.5.2.9, 3.3.5.7). A request that is signed is verified
        whether or not the session requires signing."""
        if self._sealed_by is not None:
            return              # sealed with this session's key (_plain_frame checked)
        if s.encrypt:
            raise Unverified()      # this session must be encrypted
        if hdr.flags & wire.FLAGS_SIGNED:
            key = signing_key_on(s, self)
            if not key or not security.verify(self.sign_algorithm(), key, msg):
                raise Unverified()
        elif s.sign:
            raise Unverified()
        elif hdr.command == wire.TREE_CONNECT and self.dialect == wire.SMB311 and not s.guest:
            # MS-SMB2 3.3.5.7 (Samba answers ACCESS_DENIED, as here, where Windows disconnects)
            raise SMBError(wire.STATUS_ACCESS_DENIED)

    def _check_session_setup(self, hdr: Header, msg) -> None:
        """A new session within the connection's bounds; a re-authentication of an
        established session protected as that session's requests are (an unsigned
        SESSION_SETUP cannot end or take over a signed session)."""
        if not hdr.session_id:
            # counted on this connection: another connection with the same ClientGuid (which
            # NEGOTIATE alone gives) must not use up this one's sessions
            here = [s for s in self.sessions.values() if self in s.channels]
            if len(here) >= self.limits.max_sessions or \
                    sum(not s.valid for s in here) >= self.limits.max_pending_sessions:
                raise SMBError(wire.STATUS_INSUFFICIENT_RESOURCES)
            return
        if msg[66] & wire.SESSION_FLAG_BINDING:
            return      # checked by the binding itself (commands.session, MS-SMB2 3.3.5.5)
        s = self.sessions.get(hdr.session_id)
        if s is not None and s.valid and s.signing_key and self.reaches(s):
            try:
                self._check_protection(s, hdr, msg)
            except Unverified:
                # signed as smbd signs it: a client checks a refused re-authentication's
                # answer with the session's key (smbtorture smb2.session.bind_negative_*)
                raise SMBError(wire.STATUS_ACCESS_DENIED) from None

    def _check_signed_echo(self, hdr: Header, msg) -> None:
        """An ECHO needs no session, but one signed for a session of this connection is verified
        (as smbd does, MS-SMB2 3.3.5.2.4): its answer would be signed with that session's key."""
        s = self.client.sessions.get(hdr.session_id) if hdr.session_id else None
        if s is None or not s.valid or self._sealed_by is not None or not self.reaches(s):
            return          # (answered unsigned: _must_sign finds no key here)
        key = signing_key_on(s, self)
        if key and not security.verify(self.sign_algorithm(), key, msg):
            raise Unverified()

    def token(self, hdr: Header) -> frozenset:
        """The SIDs a session's user acts as, for security descriptors (see smb.acl)."""
        s = self.client.sessions.get(hdr.session_id)
        t = s.trees.get(hdr.tree_id) if s is not None else None
        return acl.GUEST_TOKEN if t is None else t.token

    def tree(self, hdr: Header) -> Tree:
        """The tree connect a request names (checked once per request before its handler runs:
        MS-SMB2 3.3.5.2.11)."""
        s = self.client.sessions[hdr.session_id]
        t = s.trees.get(hdr.tree_id)
        if t is None:
            raise SMBError(wire.STATUS_NETWORK_NAME_DELETED)
        if t.share and t.share.encrypt and self._sealed_by is None:
            raise SMBError(wire.STATUS_ACCESS_DENIED)  # this share is reached encrypted only
        return t

    open_for = _open_for        # (fid, chain, hdr, kind=Open) -> the open a request names

    def busy_descriptors(self, fds) -> tuple:
        """Those of `fds` that the shell has file I/O under way on."""
        busy = self.io_under_way
        if busy is None:
            return ()
        return tuple(fd for fd in fds if busy(fd))

    def busy_opens(self, session_id: int, tree_id: int | None = None) -> tuple:
        """The descriptors of the session's opens (of one tree connect) with file I/O under
        way: what its TREE_DISCONNECT or LOGOFF waits for before it closes them."""
        if self.io_under_way is None:
            return ()
        return self.busy_descriptors([o.fd for o in self.opens.values() if isinstance(o, Open) and
                                      o.session_id == session_id and (tree_id is None or o.tree_id == tree_id)])

    @staticmethod
    def after_io(fds: tuple, then: Callable[[], bytes] | None = None):
        """Steps: on once the file I/O under way on `fds` has ended (none when there is none),
        then what then() returns (a response body), as Samba's CLOSE waits for its open's aio
        requests (smbd_smb2_close_send): the response of a request that ends an open says what
        that I/O made of the file, and a client that sees it may reopen the file and find the
        data there."""
        if fds:
            yield Settle(fds)
        return then() if then is not None else None

    def close_all(self) -> None:
        """The connection is gone: its channels go; a session left without a channel ends,
        every open of it closed as a CLOSE would (delete on close too). The client's last
        connection closes whatever is left."""
        self.on_output = None
        self.closed = True          # nothing waiting resumes now
        if self not in self.client.connections:
            return          # closed already
        for areq in list(self.async_requests.values()):
            self.async_requests.pop(areq.async_id, None)   # nobody to answer any more
            heir = self._heir_of(areq)
            if heir is not None:
                areq.orphaned = True        # it goes on there, unanswered (smb.durable)
                heir.async_requests[areq.async_id] = areq
            elif areq.on_cancel is not None:
                areq.on_cancel()
        for s in list(self.sessions.values()):
            # (a binding still under way on another connection keeps nothing alive)
            if s.channels.pop(self, None) is not None and \
                    not any(not ch.in_binding for ch in s.channels.values()):
                self._end_quietly(s.id)
        self.client.connections.remove(self)
        if self.client.connections:
            return          # the other channels carry on with the client's tables
        self.state.sessions.forget_client(self.client)
        for o in list(self.opens.values()):
            try:
                self.close_open(o)
            except Exception:       # a bug of ours: the other opens are closed all the same
                log.exception("closing %s at disconnect failed", o.display_name())
        for s in list(self.sessions.values()):
            self._end_quietly(s.id)
        for fs in self._fs.values():
            if not self.state.durable.uses(fs):     # (a detached open still reaches its file)
                fs.close()
        self._fs.clear()

    def _heir_of(self, areq: "AsyncRequest") -> "Connection | None":
        """Where a CREATE a replay may name goes on when this connection is lost: another
        channel of its session (a single request, not a compound's part), if any."""
        if not areq.replayable or areq.rest:
            return None
        s = self.sessions.get(areq.hdr.session_id)
        if s is None:
            return None
        return next((x for x in s.channels if x is not self and not x.closed and x.reaches(s)), None)

    def _end_quietly(self, session_id: int) -> None:
        try:
            self.end_session(session_id)
        except Exception:           # a bug of ours: the other sessions end all the same
            log.exception("ending session %d at disconnect failed", session_id)

    def share_fs(self, share: Share, identity=None) -> FileSystem:
        """The share's files as this connection reaches them, as `identity` (where the server
        acts as each user's account): one FileSystem per share directory and identity,
        however many trees connect to it (a share's directory may depend on the session:
        path = /srv/%U)."""
        where = (share.path, share.follow_symlinks, share.snapshot, identity)
        fs = self._fs.get(where)
        if fs is None:
            fs = self.open_fs(share.path) if self.identities is None else self.open_fs(share, identity)
            self._fs[where] = fs
        return fs

    def drop_tree(self, tree: Tree) -> None:
        """A tree connect ends (TREE_DISCONNECT, LOGOFF, the connection's end): it no longer
        counts against its share's `max connections`."""
        if tree.counted is not None:
            self.state.disconnect_tree(tree.counted)
            tree.counted = None

    def update_shares(self, shares: dict[str, Share]) -> None:
        """A reload: new tree connects see these shares; the trees connected keep the share
        (and the files) they connected to."""
        self.shares = {k.lower(): v for k, v in shares.items()}

    def end_session(self, session_id: int) -> None:
        """LOGOFF, or a failed (re-)authentication, the loss of its last channel, a
        PreviousSessionId: the session goes, with what it opened, on all its channels (its
        durable opens wait detached, smb.durable, as Samba keeps them)."""
        self.close_opens(session_id, detach=True)
        s = self.sessions.pop(session_id, None)
        if s is not None:
            self.state.sessions.remove(s)
            s.valid = False
            s.channels.clear()
            for tree in s.trees.values():
                self.drop_tree(tree)

    def close_opens(self, session_id: int, tree_id: int | None = None, detach: bool = False) -> None:
        """TREE_DISCONNECT and LOGOFF close what they leave without a tree or session; where
        the session ends (`detach`), a durable open is detached instead (a tree disconnect
        closes it, as Samba's does)."""
        for o in list(self.opens.values()):
            if o.session_id == session_id and (tree_id is None or o.tree_id == tree_id):
                if not (detach and self.detach_open(o)):
                    self.close_open(o)

    def add_open(self, o) -> None:
        """A new open (or pipe) in the client's table, counted on its session (`max open
        files` counts the opens of the sessions a connection carries, so that another
        connection naming the same ClientGuid cannot use up this one's) and to its user
        (`max open files per user`: a detached durable open is counted again when reclaimed)."""
        # (self.client's tables, not the properties that name them: asked for every open)
        self.client.opens[o.fid] = o
        s = self.client.sessions.get(o.session_id)
        if s is not None:
            s.opens_held += 1
            o.counted_for = s.owner
            self.state.count_user_opens(s.owner, 1)

    def sessions_here(self):
        """The sessions this connection carries (its per-connection limits count theirs)."""
        return (s for s in self.sessions.values() if self.reaches(s))

    def opens_here(self) -> int:
        # (sessions_here's count as a plain loop: asked for every CREATE)
        held = 0
        for s in self.client.sessions.values():
            if self.reaches(s):
                held += s.opens_held
        return held

    def count_locks(self, o, n: int) -> None:
        """Byte-range locks taken (n > 0) or released through the open, counted on its
        session (`max locks per connection` counts the sessions a connection carries) and to
        its user (`max locks per user`)."""
        s = self.client.sessions.get(o.session_id)
        if s is not None:
            s.locks_held += n
        if o.lock_owner is not None:
            self.state.count_user_locks(o.lock_owner, n)

    def locks_here(self) -> int:
        return sum(s.locks_held for s in self.sessions_here())

    def _forget_open(self, o) -> None:
        client = self.client
        if client.opens.pop(o.fid, None) is not None:
            s = client.sessions.get(o.session_id)
            if s is not None:
                s.opens_held -= 1
            if o.counted_for is not None:
                self.state.count_user_opens(o.counted_for, -1)
                o.counted_for = None

    def detach_open(self, o) -> bool:
        """A durable open whose session is gone waits, detached, for a reconnect (True);
        False: it is not durable."""
        d = self.state.durable.of(o) if isinstance(o, Open) else None
        caching = self.state.oplocks.caching(o) if d is not None else 0
        if d is None or not (d.resilient or caching & HANDLE):
            return False    # (its batch oplock or handle lease was broken: no longer durable;
            #                 a resilient open does not depend on its oplock)
        locks = self.state.locks.count(o.key, id(o))
        if locks and not d.resilient and not caching & WRITE_CACHING:
            # its byte-range locks would stop the file's other opens (which caching without
            # WRITE allows) for as long as it waits, its client gone: closed, as Samba's
            # vfs_default_durable_disconnect refuses
            return False
        self._forget_open(o)
        o.closing = False       # (a CLOSE waiting for its I/O is not answered: a reconnect may reclaim it)
        for areq in list(o.waiting):
            (self.client.connection_of(areq) or self).cancel_async(areq, areq.close_status)
        o.waiting.clear()
        self.count_locks(o, -locks)         # counted again by the session that reclaims it
        self.state.oplocks.rebind(o, None)
        return self.state.durable.detach(o, lambda effects: self.release_file(o, effects), locks,
                                         self.limits.max_disconnected_durable, self.outbox)

    def close_open(self, o: Open, shown: bool = False) -> None:
        """`shown`: the write time the open owes its file is given already (a CLOSE's)."""
        self._forget_open(o)
        for areq in list(o.waiting):      # answered on the channel each came through
            (self.client.connection_of(areq) or self).cancel_async(areq, areq.close_status)
        o.waiting.clear()
        if isinstance(o, Pipe):
            s = self.sessions.get(o.session_id)
            if s is not None:
                s.pipes_open -= 1
            return          # a pipe holds no file, lock or share mode
        closed = self.release_file(o, self.outbox, shown)
        if closed.locks_released:
            self.count_locks(o, -closed.locks_released)

    def release_file(self, o: Open, effects: list, shown: bool = False):
        """What closing an open does beyond its client's tables (also for a detached durable
        open, which has none): its share mode, locks and oplock go, its descriptor is closed,
        a delete on close is done; a file to forget goes to `effects`. `shown`: as close_open."""
        if not shown:       # (a CLOSE has done so already)
            show_on_close(self.state.write_times, o)
        # the directory lease its changes spare, known while its lease is (it goes with the open)
        spared = o.spares = dirleases.exempt(self, o) if self.state.oplocks.directory_leases() else None
        if self.state.locks.count(o.key, id(o)) and posix_locks.mirrors(o):
            # its kernel locks go before the requests waiting for its locks retry (closing the
            # descriptor may not end them: a kept map of the file holds its description)
            o.tree.fs.set_range_locks(o.fd, posix_locks.UNLOCK_ALL)
        closed = self.state.close_open(o)
        o.released = True
        self.close_open_descriptor(o.tree, o.fd)
        victim = closed.delete
        if victim is not None and victim.tree is not None and victim.tree.fs is not None:
            effects.append(Forget(*o.key))   # a kept map would keep the blocks allocated
            # a delete on close asked through another open (closed before) spares the lease
            # both opens name, none else (as Samba)
            self._delete_on_close(victim, spared if victim is o or getattr(victim, "spares", None) == spared
                                  else None)
        elif getattr(o, "wrote", False):
            dirleases.open_changed(self, o, spared, through=False)
        self.state.oplocks.wake(o.key)      # CREATEs held for its oplock's break go on
        return closed

    def _delete_on_close(self, victim, spared: tuple | None = None) -> None:
        """Removes the name a delete on close was asked through: an open of this process's,
        or the name another worker's open recorded (server.shared_store.RecordedDelete),
        reached through the closing open's share. Only where that name still leads to the
        open's file (FileSystem.remove's `key`: a name another file, or a link to one, took
        since is left alone); a file's named streams go with it (not with a name of a file that
        keeps another: `streams_going_with`), and watchers are told."""
        fs = victim.tree.fs
        in_depot = victim.is_stream
        try:
            if in_depot and victim.tree.share.fruit and aapl.keeps_resource_fork(
                    victim.stream, fs.stat(victim.parts).st_size):
                log.info("delete on close of %s ignored: a resource fork (fruit)", victim.path())
                return
            sid = None if in_depot else streams_going_with(fs, victim.parts)
            if victim.is_dir and victim.tree.share.delete_veto_files:
                vetoed_entries.remove_vetoed(fs, victim.tree.names, victim.parts)
            fs.remove(victim.parts, victim.is_dir, key=victim.key)
            if not in_depot:
                fs.remove_streams(sid)
        except OSError as e:
            # (FileNotFoundError: gone already, or the name no longer names the open's file,
            # which the error's text says)
            log.info("delete on close of %s not done: %s", victim.path(), e)
            return
        if in_depot and victim.stream is None:
            return      # a stream another worker's open asked for: known here by its depot file only
        if not in_depot and victim.tree.share.mangled_names:
            self.state.tunnel.lost(fs, victim.parts, victim.tree.token.owner)
        self.state.watches.post_open(victim, notify.REMOVED,
                                     notify.DIR_NAME if victim.is_dir else notify.FILE_NAME)
        # `spared`: the directory lease the delete was asked under (smb.dirleases)
        dirleases.open_changed(self, victim, spared, through=False)

    def close_open_descriptor(self, tree, fd: int) -> None:
        """Closes a descriptor an open of `tree` had (one effects may name), the VFS modules
        told first; where the shell defers it (`close_descriptor`), both happen when its work
        naming the descriptor is done."""
        fs, file_closed = tree.fs, self.file_closed
        share = tree.share.name if tree.share is not None and file_closed is not None else None

        def close() -> None:
            if share is not None:
                file_closed(share, fd)
            try:
                fs.close_file(fd)
            except OSError:
                pass

        if self.close_descriptor is None:
            close()
        else:
            self.close_descriptor(fd, close)



def _share_encrypts(s: Session | None, o: Open) -> bool:
    """Whether the share of an open's tree connect asks for encryption (`smb encrypt` required
    or desired): what the server tells of the open (its breaks) is then sealed."""
    t = s.trees.get(o.tree_id) if s is not None else None
    return t is not None and _asks_encryption(t.share)


def _asks_encryption(share) -> bool:
    """Whether a share asks for encryption (`smb encrypt` required or desired)."""
    return bool(share and (share.encrypt or share.encrypt_desired))
