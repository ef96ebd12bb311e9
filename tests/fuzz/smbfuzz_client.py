"""One connection under test, driven the way a client drives it, and the checks on what it
answers.

`Client` negotiates, has four sessions (a user, a guest, a user whose requests must be signed,
and one whose requests must be encrypted; no NTLM: sans-I/O, the sessions are put in place as
a logon would leave them), connects their trees, then sends the frames of an input with
MessageIds in sequence and FileIds from earlier CREATE answers, and checks every answer:

- handle_frame returns or raises ConnectionError (a disconnect), nothing else;
- every response frame has a valid 24-bit NetBIOS length and parses as SMB2 (decrypted first
  when sealed); signed responses carry a valid signature;
- no response holds the canary (the content of the files outside the shares) or the name of a
  file outside the shares; every file the connection holds open is inside its share;
- a session that must sign (or encrypt) has no unsigned (or unencrypted) request carried out,
  nor one encrypted with another session's key; a second NEGOTIATE ends the connection;
- once the connection is gone, it left nothing behind in the core's global tables.
"""
from __future__ import annotations

import os
import struct
import traceback

from smbring.datapath import FileRange
from smbring.smb import connection, locks, notify, security, sharemodes, wire
from smbring.smb.connection import Connection, Deferred, Session
from smbring.smb.wire import Header
from smbring.vfs.modules import Posix

import smbfuzz_input as fi
from smbfuzz_findings import Finding

NETBIOS_MAX = 1 << 24
SIGNING_KEY = bytes(range(16))
SEAL_KEYS = (bytes(range(32, 64)), bytes(range(64, 96)))   # server->client, client->server


class Client:
    """One connection, driven through one input."""

    def __init__(self, world, mode: fi.Mode, tolerate: frozenset = frozenset()):
        self.world = world
        self.tolerate = tolerate
        self.known: list[str] = []                   # known findings met (and tolerated)
        self.conn = Connection(world.shares(), passdb_path=os.path.join(world.root, "no-passdb"),
                               allow_guest=True, local_address="127.0.0.1",
                               io_modules={"rw": Posix()} if mode.io_modules else None)
        self.alive = True
        self.next_mid = 0
        self.last_mid = 0
        self.sessions: dict[int, int] = {}           # session slot -> SessionId
        self.trees: dict[int, dict[int, int]] = {}   # SessionId -> tree slot -> TreeId
        self.keys: dict[int, bytes] = {}             # SessionId -> signing key
        self.last_session = 0
        self.last_tree = 0
        self.fids: list[bytes] = []                  # FileIds of CREATE answers, oldest first
        self.pending: list[tuple[int, int]] = []     # (MessageId, AsyncId) answered PENDING
        self.file_keys: set = set()                  # (dev, ino) of every file opened
        self.requests: dict[int, tuple[bool, int]] = {}    # MessageId -> (signed, sealed by session)
        self.valid: set[int] = set()                 # SessionIds logged on
        self.reauth_failed = False                   # a logged-on session failed to re-authenticate
        self.downgraded: set[int] = set()            # sessions re-authenticated as guest or anonymous
        self.cross_tree = False                      # a FileId sent with another tree's TreeId
        self.largest = 0                             # bytes in the longest response frame
        self.statuses: list[tuple[int, int]] = []    # (command, status) of every response
        self.seal_key = self.unseal_key = b""        # the sealed session's, once it exists
        if mode.dialect:
            self.log_on(mode.dialect, mode.other_offer)

    # -- set-up -------------------------------------------------------------------------------
    def log_on(self, dialect: int, other_offer: bool = False) -> None:
        """NEGOTIATE, then the sessions a logon would leave, then their tree connects."""
        self.send_frame(fi.Frame(messages=[fi.Message(fi.Spec(wire.NEGOTIATE, session=fi.NO_SESSION),
                                                      negotiate_body(dialect, other_offer))]))
        c = self.conn
        if c.dialect != dialect:
            raise Finding(f"NEGOTIATE of {dialect:#x} chose {c.dialect:#x}")
        kinds = [(fi.USER, {}), (fi.GUEST, {"guest": True}),
                 (fi.SIGNED, {"signing_key": SIGNING_KEY, "sign": True})]
        if c.cipher:
            size = 32 if c.cipher in (security.AES_256_CCM, security.AES_256_GCM) else 16
            kinds.append((fi.SEALED_SESSION, {"encrypt": True, "encrypt_key": SEAL_KEYS[0][:size],
                                              "decrypt_key": SEAL_KEYS[1][:size]}))
        for slot, extra in kinds:
            sid = c.next_id
            c.next_id += 1
            c.sessions[sid] = Session(id=sid, valid=True, user="guest" if extra.get("guest") else "fuzz", **extra)
            if extra.get("encrypt"):
                self.seal_key, self.unseal_key = extra["decrypt_key"], extra["encrypt_key"]
            self.sessions[slot] = sid
            self.valid.add(sid)
            if extra.get("signing_key"):
                self.keys[sid] = extra["signing_key"]
            for tree_slot, share in ((fi.TREE_RW, "rw"), (fi.TREE_RO, "ro"), (fi.TREE_IPC, "IPC$")):
                path = wire.utf16(f"\\\\fuzz\\{share}")
                spec = fi.Spec(wire.TREE_CONNECT, flags=0x02 if slot == fi.SIGNED else 0, session=slot)
                self.send_frame(fi.Frame(messages=[fi.Message(spec, struct.pack("<HHHH", 9, 0, 72, len(path)) + path)]))
                if self.last_tree:
                    self.trees.setdefault(sid, {})[tree_slot] = self.last_tree
                    self.last_tree = 0
        self.last_session = self.sessions[fi.USER]
        self.last_tree = self.trees.get(self.last_session, {}).get(fi.TREE_RW, 0)
        if not self.alive or fi.TREE_RW not in self.trees.get(self.sessions[fi.USER], {}):
            raise Finding("set-up failed: the user session could not connect the writable share")

    # -- ids ----------------------------------------------------------------------------------
    def session_id(self, slot: int) -> int:
        if slot in (fi.SEALED_SESSION, fi.SEALED_PLAIN):
            slot = fi.SEALED_SESSION if fi.SEALED_SESSION in self.sessions else fi.USER
        if slot in (fi.USER, fi.GUEST, fi.SIGNED, fi.SEALED_SESSION):
            return self.sessions.get(slot, self.last_session)
        return {fi.NO_SESSION: 0, fi.ALL_ONES: 0xFFFFFFFFFFFFFFFF}.get(slot, slot)

    def tree_id(self, slot: int, session_id: int) -> int:
        own = self.trees.get(session_id, {})
        if slot in (fi.TREE_RW, fi.TREE_RO, fi.TREE_IPC):
            return own.get(slot, self.last_tree)
        if slot == fi.TREE_OTHER_SESSION:
            others = [t[fi.TREE_RW] for s, t in self.trees.items() if s != session_id and fi.TREE_RW in t]
            return others[0] if others else 0
        if slot == fi.TREE_LAST:
            return self.last_tree
        return {fi.TREE_ZERO: 0, fi.TREE_ALL_ONES: 0xFFFFFFFF}.get(slot, slot)

    def fid(self, slot: int) -> bytes:
        if slot == fi.FID_ANY_SLOT or (slot != fi.FID_ZERO_SLOT and not self.fids):
            return connection.FID_ANY
        if slot == fi.FID_ZERO_SLOT:
            return b"\0" * 16
        return self.fids[-1 - (slot - 2) % len(self.fids)]   # 2: the newest

    def message_id(self, spec: fi.Spec) -> int:
        """Mostly the next in sequence, as a client numbers them (a request of N credits uses
        N ids); sometimes a repeat, a gap or a far one, which the server must refuse."""
        if spec.command == wire.CANCEL and spec.mid < fi.MID_REUSE:   # CANCEL takes no new id
            return self.pending[-1][0] if self.pending else self.last_mid
        if spec.mid < fi.MID_REUSE:
            mid = self.next_mid
            self.next_mid += max(1, spec.credit_charge)
        elif spec.mid < fi.MID_SKIP:
            mid = self.last_mid
        elif spec.mid < fi.MID_RANDOM:
            mid = self.next_mid + spec.mid - fi.MID_SKIP + 1
            self.next_mid = mid + max(1, spec.credit_charge)
        else:
            mid = 0xFFFFFFFFFFFFFFFF if spec.mid == 0xFF else self.next_mid + (1 << (spec.mid - fi.MID_RANDOM + 8))
        self.last_mid = mid
        return mid

    # -- frames -------------------------------------------------------------------------------
    def render(self, frame: fi.Frame) -> bytes:
        sealed = self.sessions.get(fi.SEALED_SESSION)
        first_slot = frame.messages[0].spec.session if frame.messages else None
        seal = sealed is not None and (frame.sealed or first_slot == fi.SEALED_SESSION)
        if frame.raw is not None:
            data = frame.raw
        elif frame.cancel is not None:
            data = self.cancel(frame.cancel)
        else:
            data = self.chain(frame.messages, sealed if seal else 0)
        if seal:
            transform, ciphertext = security.encrypt(self.conn.cipher, self.seal_key, sealed, data)
            data = transform + bytes(ciphertext)
        if frame.patches and data:
            patched = bytearray(data)
            for pos, value in frame.patches:
                patched[pos % len(patched)] = value
            data = bytes(patched)
        return data

    def cancel(self, choice: int) -> bytes:
        """CANCEL of a waiting request, by its AsyncId (bit 0 set) or its MessageId."""
        mid, async_id = self.pending[(choice >> 1) % len(self.pending)] if self.pending else (self.last_mid, 0)
        hdr = Header(command=wire.CANCEL, message_id=mid, session_id=self.session_id(fi.USER),
                     flags=wire.FLAGS_ASYNC if choice & 1 else 0, async_id=async_id)
        return hdr.pack() + struct.pack("<HH", 4, 0)

    def chain(self, messages: list[fi.Message], sealed_by: int = 0) -> bytes:
        parts = []
        for i, m in enumerate(messages):
            spec = m.spec
            sid = self.session_id(spec.session)
            flags = spec.header_flags()
            hdr = Header(command=spec.command, flags=flags, credit_charge=spec.credit_charge,
                         credits=spec.credits, message_id=self.message_id(spec), session_id=sid,
                         tree_id=self.tree_id(spec.tree, sid))
            self.requests[hdr.message_id] = (bool(flags & wire.FLAGS_SIGNED), sealed_by)
            if flags & wire.FLAGS_ASYNC:
                hdr.async_id = self.pending[-1][1] if self.pending else spec.mid
            body = bytearray(m.body)
            at = fi.FID_OFFSET.get(spec.command)
            if spec.fid != fi.NO_FID and at is not None and len(body) >= at + 16:
                body[at:at + 16] = self.fid(spec.fid)
            if at is not None and not flags & wire.FLAGS_RELATED:
                named = self.conn.opens.get(bytes(body[at:at + 16]))
                self.cross_tree |= named is not None and named.tree_id != hdr.tree_id
            part = bytearray(hdr.pack()) + body
            if i < len(messages) - 1:
                part += b"\0" * (wire.pad8(len(part)) - len(part))
                struct.pack_into("<I", part, 20, len(part))
            parts.append((part, sid, flags))
        out = bytearray()
        for part, sid, flags in parts:
            if flags & wire.FLAGS_SIGNED and sid in self.keys:
                security.apply_signature(self.conn.sign_algorithm(), self.keys[sid], part)
            out += part
        return bytes(out)

    def send_frame(self, frame: fi.Frame) -> None:
        if not self.alive:
            return
        data = self.render(frame)
        negotiated = self.conn.dialect not in (0, wire.WILDCARD_DIALECT)
        limit = self.conn.frame_limit()
        if len(data) < 64 or len(data) > limit:
            self.alive = False        # the server drops such a frame's connection unread
            return
        try:
            answers = self.conn.handle_frame(data)
        except ConnectionError:
            self.alive = False
            return
        self.take(answers)
        self.check_opens()
        if negotiated and any(status_of(a, wire.NEGOTIATE) for a in answers):
            self.found("a second NEGOTIATE was answered; the connection should have ended",
                       "second-negotiate")

    def disconnect(self) -> None:
        """What the server does when a connection ends: close_all, which must not raise (the
        opens after the one that raised would stay open for good)."""
        for _ in range(len(self.conn.opens) + 1):
            try:
                self.conn.close_all()
                return
            except Exception as e:
                where = [frame.name for frame in traceback.extract_tb(e.__traceback__)]
                kind = "root-delete-on-close" if isinstance(e, IndexError) and "parent" in where \
                    else "close-all-raised"
                self.found(f"close_all raised {type(e).__name__}: {e} (in {' < '.join(reversed(where))})", kind)

    def found(self, message: str, kind: str) -> None:
        """A known finding is recorded (the input goes on); anything else fails."""
        if kind not in self.tolerate:
            raise Finding(message, kind)
        self.known.append(kind)

    def take(self, answers) -> None:
        for answer in answers:
            if isinstance(answer, Deferred):
                try:
                    result = answer.io.run_sync()
                except OSError as e:
                    result = e
                self.take(answer.finish(result))
            else:
                self.check_response(answer)

    # -- checks -------------------------------------------------------------------------------
    def check_response(self, desc) -> None:
        payload = desc.payload
        if isinstance(payload, FileRange):
            data = os.pread(payload.fd, payload.length, payload.offset).ljust(payload.length, b"\0")
        else:
            data = bytes(payload) if payload is not None else b""
        frame = bytes(desc.header) + data
        size = int.from_bytes(frame[:4], "big")
        if len(frame) < 4 + 64 or size != len(frame) - 4:
            raise Finding(f"response length field {size}, frame of {len(frame) - 4} bytes")
        self.largest = max(self.largest, size)
        if size >= NETBIOS_MAX:
            self.found(f"a response of {size} bytes: too long for the 24-bit NetBIOS length", "compound-response-size")
        message = frame[4:]
        if message[:4] == wire.TRANSFORM_ID:
            sid, _ = security.parse_transform(message)
            if sid != self.sessions.get(fi.SEALED_SESSION):
                raise Finding(f"a response sealed for session {sid:#x}, which has no keys")
            try:
                message = security.decrypt(self.conn.cipher, self.unseal_key, message)
            except security.DecryptError as e:
                raise Finding(f"a sealed response does not decrypt: {e}") from None
        self.check_secrets(message)
        self.check_chain(message)

    def check_secrets(self, message: bytes) -> None:
        if self.world.canary in message:
            raise Finding("a response holds the content of a file outside the shares")
        if self.world.secret_name in message:
            raise Finding("a response names a file outside the shares")

    def check_chain(self, message: bytes) -> None:
        offset = 0
        while True:
            try:
                h = Header.parse(message[offset:offset + 64])
            except (ValueError, struct.error) as e:
                raise Finding(f"response at {offset} does not parse: {e}") from None
            end = offset + h.next_command if h.next_command else len(message)
            if h.next_command and (h.next_command % 8 or end > len(message) or h.next_command < 64):
                raise Finding(f"response NextCommand {h.next_command} in a frame of {len(message)}")
            if not h.flags & wire.FLAGS_SERVER_TO_REDIR:
                raise Finding("response without SMB2_FLAGS_SERVER_TO_REDIR")
            if end - offset < 64 + 2:
                raise Finding("response without a body")
            part = message[offset:end]
            if h.flags & wire.FLAGS_SIGNED and h.session_id in self.keys and \
                    not security.verify(self.conn.sign_algorithm(), self.keys[h.session_id], part):
                raise Finding(f"a signed response (command {h.command}) has a bad signature")
            self.learn(h, part)
            if not h.next_command:
                return
            offset = end

    def learn(self, h: Header, part: bytes) -> None:
        """Ids the answers hand out, for the requests that follow; and whether a session
        that must sign (or seal) had an unsigned (or unsealed) request carried out."""
        self.statuses.append((h.command, h.status))
        self.check_protection(h)
        if h.status == wire.STATUS_PENDING and h.flags & wire.FLAGS_ASYNC:
            self.pending.append((h.message_id, h.async_id))
            return
        if h.flags & wire.FLAGS_ASYNC:
            self.pending = [p for p in self.pending if p[1] != h.async_id]
        if h.command == wire.CREATE and h.status == wire.STATUS_SUCCESS and len(part) >= 64 + 80:
            self.fids.append(bytes(part[64 + 64:64 + 80]))
        elif h.command == wire.TREE_CONNECT and h.status == wire.STATUS_SUCCESS:
            self.last_tree = h.tree_id
        elif h.command == wire.SESSION_SETUP and h.status in (wire.STATUS_SUCCESS,
                                                             wire.STATUS_MORE_PROCESSING_REQUIRED):
            self.last_session = h.session_id
            session_flags = struct.unpack_from("<H", part, 64 + 2)[0] if len(part) >= 68 else 0
            if h.status == wire.STATUS_SUCCESS and h.session_id in self.valid and session_flags & 0x3:
                self.downgraded.add(h.session_id)
            if h.status == wire.STATUS_SUCCESS:
                self.valid.add(h.session_id)
        elif h.command == wire.SESSION_SETUP and h.status == wire.STATUS_LOGON_FAILURE and h.session_id in self.valid:
            self.reauth_failed = True
            self.valid.discard(h.session_id)

    def check_protection(self, h: Header) -> None:
        if h.status != wire.STATUS_SUCCESS or h.command in (wire.NEGOTIATE, wire.SESSION_SETUP, wire.ECHO):
            return
        if h.message_id not in self.requests:
            return              # a raw frame: its requests are not known
        signed, sealed_by = self.requests[h.message_id]
        sealed = sealed_by == h.session_id
        if sealed_by and not sealed:
            self.found(f"a request (command {h.command}) of session {h.session_id:#x}, encrypted with the "
                       f"key of session {sealed_by:#x}, succeeded", "sealed-session-mismatch")
            return              # the signing and sealing checks below would blame the same cause
        if h.session_id == self.sessions.get(fi.SIGNED) and not (signed or sealed):
            kind = "reauth-drops-signing" if h.session_id in self.downgraded else "unsigned-accepted"
            self.found(f"an unsigned request (command {h.command}) succeeded on a session that must sign", kind)
        if h.session_id == self.sessions.get(fi.SEALED_SESSION) and not sealed:
            kind = "reauth-drops-signing" if h.session_id in self.downgraded else "unsealed-accepted"
            self.found(f"an unencrypted request (command {h.command}) succeeded on a session that must "
                       "encrypt", kind)

    def check_opens(self) -> None:
        """Every file the connection holds open lies inside the share it was opened on."""
        for o in self.conn.opens.values():
            self.file_keys.add(o.key)
            target = os.readlink(f"/proc/self/fd/{o.fd}")
            root = o.tree.vfs.root if o.tree is not None and o.tree.vfs is not None else "?"
            if target != root and not target.startswith(root + "/"):
                raise Finding(f"an open of {o.display_name()!r} is {target}, outside {root}")

    def check_left_nothing(self) -> None:
        """After close_all: the global tables hold nothing of this connection."""
        if connection.OPEN_FILES or connection.DELETE_PENDING:
            raise Finding(f"left behind: {len(connection.OPEN_FILES)} open files, "
                          f"{len(connection.DELETE_PENDING)} pending deletes")
        if notify.active():
            raise Finding("left behind: a change-notify watch")
        for key in self.file_keys:
            if sharemodes.count(key):
                raise Finding(f"left behind: share modes on {key}")
            if locks.conflicts(key, 0, 0xFFFFFFFFFFFFFFFF, True, owner=-1):
                raise Finding(f"left behind: byte-range locks on {key}")
        if self.conn.async_requests:
            raise Finding(f"left behind: {len(self.conn.async_requests)} pending requests")



def negotiate_body(dialect: int, other_offer: bool = False) -> bytes:
    """What a client offers for one dialect: for 3.1.1 the preauth and cipher contexts (and
    a signing context with the other offer), for 3.0 and 3.0.2 the encryption capability
    (none with the other offer)."""
    caps = wire.CAP_ENCRYPTION if dialect in (wire.SMB300, wire.SMB302) and not other_offer else 0
    contexts = []
    if dialect == wire.SMB311:
        cipher = security.AES_256_GCM if other_offer else security.AES_128_GCM
        contexts = [struct.pack("<HHIHH", wire.PREAUTH_INTEGRITY_CAPABILITIES, 38, 0, 1, 32) +
                    struct.pack("<H", wire.SHA512) + b"\x5a" * 32,
                    struct.pack("<HHIHH", wire.ENCRYPTION_CAPABILITIES, 4, 0, 1, cipher)]
        if other_offer:
            contexts.append(struct.pack("<HHIHH", wire.SIGNING_CAPABILITIES, 4, 0, 1, security.AES_GMAC))
    ctx_off = wire.pad8(64 + 36 + 2) if contexts else 0
    body = struct.pack("<HHHHI16sIHHH", 36, 1, wire.SECURITY_SIGNING_ENABLED, 0, caps, b"\x11" * 16,
                       ctx_off, len(contexts), 0, dialect)
    if contexts:
        body += b"\0" * (ctx_off - 64 - len(body))
        body += b"".join(c + b"\0" * (wire.pad8(len(c)) - len(c)) for c in contexts)
    return body



def status_of(desc, command: int) -> bool:
    """Whether a plain response frame answers `command` (first message only)."""
    header = bytes(getattr(desc, "header", b""))
    return len(header) >= 4 + 64 and header[4:8] == wire.PROTOCOL_ID and \
        struct.unpack_from("<H", header, 4 + 12)[0] == command


