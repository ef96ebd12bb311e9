"""A raw SMB2/3 client for adversarial tests: every field of every message is the caller's to
choose, so a test can send what a well-behaved client never would (a forged MessageId,
CreditCharge, SessionId or TreeId, a bad signature, another session's transform header, the
exact bytes of an earlier frame again).

One TCP connection with NetBIOS framing; any number of sessions on it. Key derivation, signing
and encryption use smbring.smb.security, whose primitives tests/smb/test_security.py checks
against independent implementations. Every read has a timeout: a dropped connection raises
Disconnected, silence raises NoAnswer, so "the server disconnected" is an outcome a test can
assert. Forged logons (LM, NTLMv1, anonymous, no mechListMIC) live in logon.py.
"""
from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass, field

import spnego
from smbcore import (  # the message bodies both test clients build requests from
    SHORT_BODY,
    change_notify_body,
    close_body,
    create_body,
    flush_body,
    ioctl_body,
    lock_body,
    negotiate_body,
    negotiate_contexts,
    query_directory_body,
    query_info_body,
    read_body,
    session_setup_body,
    set_info_body,
    smb1_negotiate_message,
    tree_connect_body,
    validate_negotiate_body,  # noqa: F401 - tests import it from here
    write_body,
)

from smbring.smb import security, wire

TIMEOUT = 10.0
CREDIT_BYTES = 65536          # one credit pays for 64 KiB of payload (MS-SMB2 3.1.5.2)
FID_ANY = b"\xff" * 16
STATUS_TOO_MANY_OPENED_FILES = 0xC000011F
SHAREFLAG_ENCRYPT_DATA = 0x8000
FSCTL_VALIDATE_NEGOTIATE_INFO = 0x00140204
FSCTL_CREATE_OR_GET_OBJECT_ID = 0x000900C0
STATUS_NAMES = {v: k for k, v in vars(wire).items() if k.startswith("STATUS_")}
STATUS_NAMES[STATUS_TOO_MANY_OPENED_FILES] = "STATUS_TOO_MANY_OPENED_FILES"
# (written out, not taken from the server: a server that echoed more would be caught)
ECHOED_STATUSES = frozenset({wire.STATUS_USER_SESSION_DELETED, wire.STATUS_INVALID_PARAMETER,
                             wire.STATUS_FILE_CLOSED, wire.STATUS_NETWORK_NAME_DELETED})


class Disconnected(Exception):
    """The server closed or reset the connection."""


class NoAnswer(Exception):
    """Nothing arrived within the timeout, and the connection is still open."""


class FrameTooLarge(Exception):
    """A response frame over the size the caller would accept (it was read and dropped)."""

    def __init__(self, size: int):
        super().__init__(f"a response frame of {size} bytes")
        self.size = size


class LogonError(Exception):
    def __init__(self, response: "Response"):
        super().__init__(f"logon failed: {response!r}")
        self.status = response.status


@dataclass
class Response:
    header: wire.Header
    raw: bytes                          # the whole message as received (decrypted)
    encrypted: bool = False
    signature_ok: bool | None = None    # for a signed response whose signing key we hold

    @property
    def status(self) -> int:
        return self.header.status

    @property
    def body(self) -> bytes:
        return self.raw[64:]

    @property
    def file_id(self) -> bytes:
        """The FileId of a CREATE response."""
        return self.raw[64 + 64:64 + 80]

    def buffer(self, at: int, fmt: str = "<HI") -> bytes:
        """A variable part named by (Offset, Length) at body[at:], the offset counted from
        the header: QUERY_INFO and QUERY_DIRECTORY answer so (at 2), IOCTL with "<II" at 32."""
        offset, length = struct.unpack_from(fmt, self.raw, 64 + at)
        return self.raw[offset:offset + length]

    def __repr__(self) -> str:
        name = STATUS_NAMES.get(self.status, hex(self.status))
        return f"<{name} to command {self.header.command}, MessageId {self.header.message_id}>"


@dataclass
class Session:
    id: int = 0
    key: bytes = b""               # what authentication produced (pyspnego's session_key)
    signing_key: bytes = b""
    encrypt_key: bytes = b""       # client -> server
    decrypt_key: bytes = b""       # server -> client
    flags: int = 0                 # SessionFlags of the last SESSION_SETUP response
    preauth: security.PreauthIntegrity | None = None
    trees: dict = field(default_factory=dict)     # TreeId -> ShareFlags
    last: Response | None = None   # the last SESSION_SETUP response

    @property
    def status(self) -> int:
        return self.last.status if self.last else -1


class RawClient:
    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = TIMEOUT,
                 source: str | None = None):
        # source: the local address to connect from (127.0.0.2: another client on loopback)
        self.sock = socket.create_connection((host, port), timeout=timeout,
                                             source_address=(source, 0) if source else None)
        self.dialect = 0
        self.cipher = 0
        self.signing_algorithm = None       # from a 3.1.1 signing context, else by dialect
        self.server: dict = {}              # what NEGOTIATE answered
        self.offered: dict = {}             # what our NEGOTIATE sent (VALIDATE_NEGOTIATE_INFO)
        self.preauth = security.PreauthIntegrity()
        self.next_message_id = 0
        self.credits = 1                    # granted and not yet spent
        self.most_credits = 1               # the most held at once
        self.credits_requested = 32
        self.sessions: dict[int, Session] = {}
        self.last_frame = b""               # the last frame sent, NetBIOS prefix included
        self.stray: list[Response] = []     # read while waiting for another MessageId
        self.signatures_sent: dict[int, bytes] = {}     # MessageId -> the signature sent with it

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- building and sending ---------------------------------------------------------------
    def charge_for(self, payload: int) -> int:
        if self.dialect in (0, wire.SMB202):
            return 0
        return max(1, (payload + CREDIT_BYTES - 1) // CREDIT_BYTES)

    def message(self, command: int, body: bytes, *, session: Session | int | None = None, tree_id: int = 0,
                flags: int = 0, message_id: int | None = None, credit_charge: int | None = None,
                credits: int | None = None, payload: int = 0) -> bytearray:
        """One request; without message_id it takes the next ones of the credit window. The
        CreditCharge pays for the payload sent or asked for, or for a large body (a LOCK of
        thousands of elements) beyond its fixed part."""
        charge = self.charge_for(max(payload, len(body) - 64)) if credit_charge is None else credit_charge
        if message_id is None:
            message_id = self.next_message_id
            self.next_message_id += max(charge, 1)
            self.credits -= max(charge, 1)
        sid = session.id if isinstance(session, Session) else (session or 0)
        hdr = wire.Header(command=command, flags=flags, credit_charge=charge, message_id=message_id,
                          credits=self.credits_requested if credits is None else credits,
                          tree_id=tree_id, session_id=sid)
        return bytearray(hdr.pack() + body)

    def sign_algorithm(self) -> int:
        return self.signing_algorithm if self.signing_algorithm is not None else security.algorithm_for(self.dialect)

    def send(self, messages: list[bytearray], *, sign: bool | None = None, signing_key: bytes | None = None,
             algorithm: int | None = None, flip_bit: bool = False, encrypt: bool | None = None,
             transform_session: Session | None = None) -> bytes:
        """Chains the messages into one frame (a compound when more than one) and sends it.

        sign: None signs when the session has a key and the frame is not encrypted; signing_key
        signs with another key, algorithm with another algorithm than the connection's; flip_bit changes the frame's last byte once it is signed or
        sealed. encrypt: None
        encrypts for a session that asked for it or a tree of an encrypted share;
        transform_session seals with that session's key and id instead of the message's own.
        """
        first = wire.Header.parse(messages[0])
        session = self.sessions.get(first.session_id)
        if encrypt is None:
            encrypt = transform_session is not None or bool(session and session.encrypt_key and (
                session.flags & wire.SESSION_FLAG_ENCRYPT_DATA or
                session.trees.get(first.tree_id, 0) & SHAREFLAG_ENCRYPT_DATA))
        if sign is None:
            sign = bool(session and session.signing_key) and not encrypt
        chained = bytearray()
        for i, msg in enumerate(messages):
            if i < len(messages) - 1:
                msg += b"\0" * (wire.pad8(len(msg)) - len(msg))
                struct.pack_into("<I", msg, 20, len(msg))
            if sign:
                security.apply_signature(self.sign_algorithm() if algorithm is None else algorithm,
                                         signing_key or session.signing_key, msg)
                self.signatures_sent[wire.Header.parse(msg).message_id] = bytes(msg[48:64])
            chained += msg
        if encrypt:
            sealer = transform_session or session
            transform, sealed = security.encrypt(self.cipher, sealer.encrypt_key, sealer.id, bytes(chained))
            chained = bytearray(transform + bytes(sealed))
        if flip_bit:
            chained[-1] ^= 1
        frame = len(chained).to_bytes(4, "big") + bytes(chained)
        self.send_frame(frame)
        return frame

    def send_frame(self, frame: bytes) -> None:
        """Sends bytes as they are (a replay sends an earlier frame again)."""
        self.last_frame = frame
        try:
            self.sock.sendall(frame)
        except OSError as e:
            raise Disconnected(str(e)) from None

    # -- receiving --------------------------------------------------------------------------
    def _recv_exact(self, n: int, keep: bool = True) -> bytes:
        out, got = bytearray(), 0
        while got < n:
            try:
                chunk = self.sock.recv(min(n - got, 1 << 20))
            except socket.timeout:
                raise NoAnswer(f"no answer within {self.sock.gettimeout()} s") from None
            except OSError as e:
                raise Disconnected(str(e)) from None
            if not chunk:
                raise Disconnected("connection closed by the server")
            got += len(chunk)
            if keep:
                out += chunk
        return bytes(out)

    def recv_frame(self, max_size: int | None = None) -> bytes:
        # a 24-bit length after a zero byte (MS-SMB2 2.1); read as 32 bits so that a server
        # sending a frame of 16 MiB or more is seen doing so
        size = int.from_bytes(self._recv_exact(4), "big")
        if max_size is not None and size > max_size:
            self._recv_exact(size, keep=False)
            raise FrameTooLarge(size)
        return self._recv_exact(size)

    def parse(self, frame: bytes) -> list[Response]:
        """A frame's responses: decrypted, split at NextCommand, credits counted."""
        encrypted = frame[:4] == wire.TRANSFORM_ID
        if encrypted:
            sid, _size = security.parse_transform(frame)
            frame = security.decrypt(self.cipher, self.sessions[sid].decrypt_key, frame)
        out, offset = [], 0
        while True:
            hdr = wire.Header.parse(frame[offset:offset + 64])
            end = offset + hdr.next_command if hdr.next_command else len(frame)
            raw = frame[offset:end]
            r = Response(hdr, raw, encrypted)
            s = self.sessions.get(hdr.session_id)
            if hdr.flags & wire.FLAGS_SIGNED and s and s.signing_key and not self.echoed(r):
                r.signature_ok = security.verify(self.sign_algorithm(), s.signing_key, raw)
                assert r.signature_ok, f"a badly signed response: {r!r}"
            self.credits += hdr.credits
            self.most_credits = max(self.most_credits, self.credits)
            out.append(r)
            if not hdr.next_command:
                return out
            offset = end

    def echoed(self, r: Response) -> bool:
        """Whether `r` carries its request's own signature back, as smbd and Windows answer the
        errors no key of theirs signs (USER_SESSION_DELETED, INVALID_PARAMETER, FILE_CLOSED,
        NETWORK_NAME_DELETED): Samba's client takes these unchecked; this one, only with the
        very signature it sent."""
        return (r.status in ECHOED_STATUSES and not r.encrypted
                and r.header.signature == self.signatures_sent.get(r.header.message_id))

    def response_to(self, message_id: int) -> Response:
        """The next response (an interim STATUS_PENDING too) to this MessageId; others that
        arrive first (completions of earlier async requests) are kept in self.stray."""
        for i, r in enumerate(self.stray):
            if r.header.message_id == message_id:
                return self.stray.pop(i)
        while True:
            responses = self.parse(self.recv_frame())
            mine = [r for r in responses if r.header.message_id == message_id]
            self.stray += [r for r in responses if r.header.message_id != message_id]
            if mine:
                return mine[0]

    # -- requests ---------------------------------------------------------------------------
    def request(self, command: int, body: bytes = SHORT_BODY, *, session=None, tree_id: int = 0,
                flags: int = 0, message_id: int | None = None, credit_charge: int | None = None,
                credits: int | None = None, payload: int = 0, **sending) -> Response:
        msg = self.message(command, body, session=session, tree_id=tree_id, flags=flags,
                           message_id=message_id, credit_charge=credit_charge, credits=credits,
                           payload=payload)
        self.send([msg], **sending)
        return self.response_to(wire.Header.parse(msg).message_id)

    def compound(self, messages: list[bytearray], **sending) -> list[Response]:
        self.send(messages, **sending)
        return [self.response_to(wire.Header.parse(m).message_id) for m in messages]

    def echo(self, **knobs) -> Response:
        return self.request(wire.ECHO, SHORT_BODY, **knobs)

    def logoff(self, session: Session, **knobs) -> Response:
        return self.request(wire.LOGOFF, SHORT_BODY, session=session, **knobs)

    def grow_credits(self, target: int, per_request: int = 65535) -> None:
        """ECHOs asking for many credits until `target` are held (or the server stops granting)."""
        while self.credits < target:
            before = self.credits
            self.echo(credits=per_request)
            if self.credits <= before:
                return

    def negotiate(self, dialects=wire.DIALECTS, *, security_mode=wire.SECURITY_SIGNING_ENABLED,
                  capabilities=wire.CAP_LARGE_MTU | wire.CAP_ENCRYPTION, client_guid: bytes | None = None,
                  ciphers=(security.AES_128_GCM, security.AES_128_CCM, security.AES_256_GCM, security.AES_256_CCM),
                  signing_algorithms=(security.AES_GMAC, security.AES_CMAC, security.HMAC_SHA256),
                  **knobs) -> Response:
        client_guid = client_guid or os.urandom(16)
        contexts = negotiate_contexts(ciphers, signing_algorithms) if wire.SMB311 in dialects else []
        self.offered = {"dialects": list(dialects), "security_mode": security_mode,
                        "capabilities": capabilities, "guid": client_guid}
        msg = self.message(wire.NEGOTIATE, negotiate_body(dialects, security_mode, capabilities,
                                                          client_guid, contexts), **knobs)
        self.send([msg])
        r = self.response_to(wire.Header.parse(msg).message_id)
        if r.status != wire.STATUS_SUCCESS:
            return r
        (_size, secmode, dialect, ctx_count, guid, caps, _t, max_read, _w, _time, _start, _so, _sl,
         ctx_off) = struct.unpack_from("<HHHH16sIIIIQQHHI", r.raw, 64)
        self.dialect = dialect
        self.server = {"security_mode": secmode, "dialect": dialect, "guid": guid,
                       "capabilities": caps, "max_read": max_read}
        if dialect in (wire.SMB300, wire.SMB302) and caps & wire.CAP_ENCRYPTION:
            self.cipher = security.AES_128_CCM
        if dialect == wire.SMB311:
            self.preauth.update(msg)
            self.preauth.update(r.raw)
            pos = ctx_off
            for _ in range(ctx_count):
                ctype, length = struct.unpack_from("<HH", r.raw, pos)
                if ctype == wire.ENCRYPTION_CAPABILITIES:
                    self.cipher = struct.unpack_from("<H", r.raw, pos + 10)[0]
                elif ctype == wire.SIGNING_CAPABILITIES:
                    self.signing_algorithm = struct.unpack_from("<H", r.raw, pos + 10)[0]
                pos = wire.pad8(pos + 8 + length)
        return r

    def smb1_negotiate(self) -> None:
        """An SMB1 NEGOTIATE offering SMB 2.002 and 2.??? (what old clients open with)."""
        smb1 = smb1_negotiate_message()
        self.send_frame(len(smb1).to_bytes(4, "big") + smb1)

    # -- logon ------------------------------------------------------------------------------
    def session_setup(self, session: Session, token: bytes, *, security_mode=None, flags: int = 0,
                      message_id: int | None = None, previous: int = 0, **sending) -> Response:
        """One leg; a Session with id 0 is a new one. Keeps its preauth hash (3.1.1) going.
        `previous`: the PreviousSessionId the leg names."""
        if security_mode is None:
            security_mode = self.offered.get("security_mode", wire.SECURITY_SIGNING_ENABLED)
        msg = self.message(wire.SESSION_SETUP, session_setup_body(token, security_mode, flags, previous),
                           session=session, message_id=message_id)
        self.send([msg], **sending)
        r = self.response_to(wire.Header.parse(msg).message_id)
        if session.preauth is not None:
            session.preauth.update(msg)
            if r.status == wire.STATUS_MORE_PROCESSING_REQUIRED:
                session.preauth.update(r.raw)
        session.last = r
        if r.header.session_id and r.status in (wire.STATUS_SUCCESS, wire.STATUS_MORE_PROCESSING_REQUIRED):
            session.id = r.header.session_id
            self.sessions[session.id] = session
            if r.status == wire.STATUS_SUCCESS:
                session.flags = struct.unpack_from("<H", r.raw, 66)[0]
        return r

    def security_buffer(self, r: Response) -> bytes:
        _size, _flags, off, length = struct.unpack_from("<HHHH", r.raw, 64)
        return r.raw[off:off + length]

    def start_logon(self, session: Session | None) -> Session:
        """A new session, or a re-authentication of one: its preauth hash starts anew."""
        session = session or Session()
        session.preauth = self.preauth.copy() if self.dialect == wire.SMB311 else None
        return session

    def establish(self, session: Session, key: bytes) -> None:
        """Derives the session's keys once its logon succeeded (none for guests)."""
        if session.flags & (wire.SESSION_FLAG_IS_GUEST | wire.SESSION_FLAG_IS_NULL) or not key:
            return
        key = key[:16].ljust(16, b"\0")
        preauth = session.preauth.value if session.preauth else None
        session.key = key
        session.signing_key = security.signing_key(key, self.dialect, preauth)
        if self.cipher:
            session.decrypt_key, session.encrypt_key = security.cipher_keys(key, self.dialect, preauth, self.cipher)
        last = session.last
        if last is not None and last.header.flags & wire.FLAGS_SIGNED:   # read before the key was known
            last.signature_ok = security.verify(self.sign_algorithm(), session.signing_key, last.raw)

    def begin_logon(self, user: str, password: str, *, protocol: str = "negotiate",
                    session: Session | None = None, **knobs):
        """The first leg of an NTLMv2 logon through pyspnego's client (raw NTLMSSP with
        protocol="ntlm"); with session, a re-authentication. (context, session, response)."""
        ctx = spnego.client(user, password, hostname="smbring", service="cifs", protocol=protocol)
        session = self.start_logon(session)
        return ctx, session, self.session_setup(session, ctx.step(), **knobs)

    def finish_logon(self, ctx, session: Session, r: Response, *, check: bool = True, **knobs) -> Session:
        """The remaining legs; LogonError unless the logon succeeds (with check)."""
        while r.status == wire.STATUS_MORE_PROCESSING_REQUIRED:
            r = self.session_setup(session, ctx.step(self.security_buffer(r)), **knobs)
        if r.status == wire.STATUS_SUCCESS:
            self.establish(session, ctx.session_key)
            assert r.signature_ok is not False, "our keys differ from the server's"
        elif check:
            raise LogonError(r)
        return session

    def logon(self, user: str, password: str, *, protocol: str = "negotiate", session: Session | None = None,
              check: bool = True, **knobs) -> Session:
        ctx, session, r = self.begin_logon(user, password, protocol=protocol, session=session, **knobs)
        return self.finish_logon(ctx, session, r, check=check, **knobs)

    # -- trees --------------------------------------------------------------------------------
    def tree_connect(self, session: Session, share: str, **knobs) -> Response:
        r = self.request(wire.TREE_CONNECT, tree_connect_body(f"\\\\127.0.0.1\\{share}"),
                         session=session, **knobs)
        if r.status == wire.STATUS_SUCCESS:
            session.trees[r.header.tree_id] = struct.unpack_from("<I", r.raw, 68)[0]
        return r

    def tree(self, session: Session, share: str, **knobs) -> "Tree":
        r = self.tree_connect(session, share, **knobs)
        assert r.status == wire.STATUS_SUCCESS, f"tree connect to {share}: {r!r}"
        return Tree(self, session, r.header.tree_id)


@dataclass
class Tree:
    """Requests on one tree connect; **knobs go to RawClient.request (forging, signing, ...)."""

    client: RawClient
    session: Session
    id: int

    def request(self, command: int, body: bytes, **knobs) -> Response:
        knobs.setdefault("session", self.session)
        knobs.setdefault("tree_id", self.id)
        return self.client.request(command, body, **knobs)

    def message(self, command: int, body: bytes, **knobs) -> bytearray:
        """For a compound: one request on this tree, not yet sent."""
        return self.client.message(command, body, session=self.session, tree_id=self.id, **knobs)

    def create(self, name: str, access: int = wire.GENERIC_READ, disposition: int = wire.FILE_OPEN,
               options: int = 0, *, share_access: int = 7, attributes: int = 0, contexts=(),
               name_offset=None, name_length=None, **knobs) -> Response:
        return self.request(wire.CREATE, create_body(
            name, access, disposition, options, share_access=share_access, attributes=attributes,
            contexts=contexts, name_offset=name_offset, name_length=name_length), **knobs)

    def open(self, name: str, access: int = wire.GENERIC_READ, disposition: int = wire.FILE_OPEN,
             options: int = 0, **knobs) -> bytes:
        """CREATE that must succeed: its FileId."""
        r = self.create(name, access, disposition, options, **knobs)
        assert r.status == wire.STATUS_SUCCESS, f"open {name!r}: {r!r}"
        return r.file_id

    def close(self, fid: bytes, **knobs) -> Response:
        return self.request(wire.CLOSE, close_body(fid), **knobs)

    def read(self, fid: bytes, length: int, offset: int = 0, **knobs) -> Response:
        knobs.setdefault("payload", length)
        return self.request(wire.READ, read_body(fid, length, offset), **knobs)

    def write(self, fid: bytes, data: bytes, offset: int = 0, **knobs) -> Response:
        knobs.setdefault("payload", len(data))
        return self.request(wire.WRITE, write_body(fid, data, offset), **knobs)

    def flush(self, fid: bytes, **knobs) -> Response:
        return self.request(wire.FLUSH, flush_body(fid), **knobs)

    def lock(self, fid: bytes, elements, **knobs) -> Response:
        return self.request(wire.LOCK, lock_body(fid, elements), **knobs)

    def query_info(self, fid: bytes, info_type: int, klass: int, output_length: int = 65536,
                   additional: int = 0, **knobs) -> Response:
        knobs.setdefault("payload", output_length)
        return self.request(wire.QUERY_INFO, query_info_body(fid, info_type, klass, output_length, additional),
                            **knobs)

    def set_info(self, fid: bytes, info_type: int, klass: int, data: bytes, additional: int = 0,
                 **knobs) -> Response:
        return self.request(wire.SET_INFO, set_info_body(fid, info_type, klass, data, additional), **knobs)

    def query_directory(self, fid: bytes, pattern: str = "*", klass: int = 37, flags: int = 0,
                        output_length: int = 65536, **knobs) -> Response:
        knobs.setdefault("payload", output_length)
        return self.request(wire.QUERY_DIRECTORY, query_directory_body(fid, pattern, klass, flags, output_length),
                            **knobs)

    def ioctl(self, fid: bytes, ctl: int, data: bytes = b"", max_output: int = 65536, **knobs) -> Response:
        knobs.setdefault("payload", max(len(data), max_output))
        return self.request(wire.IOCTL, ioctl_body(fid, ctl, data, max_output), **knobs)

    def change_notify(self, fid: bytes, completion_filter: int = 0x17, flags: int = 0,
                      output_length: int = 4096, **knobs) -> Response:
        knobs.setdefault("payload", output_length)
        return self.request(wire.CHANGE_NOTIFY, change_notify_body(fid, completion_filter, flags, output_length),
                            **knobs)

    def disconnect(self, **knobs) -> Response:
        return self.request(wire.TREE_DISCONNECT, SHORT_BODY, **knobs)


def answer_or_drop(action) -> Response | None:
    """action()'s response, or None when the server dropped the connection instead."""
    try:
        return action()
    except Disconnected:
        return None


class UserTree:
    """One user's connection (SMB 3.1.1, logged on) and its tree of `share`; closed at the
    end of a `with`."""

    def __init__(self, port: int, user: str, password: str, share: str = "share"):
        self.raw = RawClient(port)
        assert self.raw.negotiate((wire.SMB311,)).status == wire.STATUS_SUCCESS
        self.tree = self.raw.tree(self.raw.logon(user, password), share)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.raw.close()
