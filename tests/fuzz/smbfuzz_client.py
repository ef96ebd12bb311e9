"""One connection under test, driven the way a client drives it, and the checks on what it
answers.

`Client` negotiates, has four sessions (a user, a guest, a user whose requests must be signed,
and one whose requests must be encrypted; no NTLM: sans-I/O, the sessions are put in place as
a logon would leave them), connects their trees, then sends the frames of an input with
MessageIds that follow the credit window and FileIds from earlier CREATE answers, carries out
the effects the core returns (smbfuzz_shell), and checks every answer:

- handle_frame returns or raises ConnectionError (a disconnect), nothing else;
- a frame whose MessageIds are all granted and unused is taken; one that reuses a MessageId,
  or uses one never granted, ends the connection before anything of it is done;
- every response is at most 24 bits long (the NetBIOS length) and parses as SMB2 (decrypted
  first when sealed); signed responses carry a valid signature, or, for INVALID_PARAMETER,
  FILE_CLOSED and NETWORK_NAME_DELETED only, the signature their own request carried (smbd's
  and Windows' answer made from the request's header: nothing the client did not have);
- no response holds the canary (the content of the files outside the shares) or the name of a
  file outside the shares; every file the connection holds open is inside its share, and
  every effect names a descriptor the connection holds open;
- a session that must sign (or encrypt) has no unsigned (or unencrypted) request carried out,
  nor one encrypted with another session's key, and a share that must be reached encrypted
  no unencrypted one; a second NEGOTIATE ends the connection;
- once the connection is gone (close_all, which must not raise), it left nothing behind: its
  ServerState holds nothing, and the connection no open, request or lock.
"""
from __future__ import annotations

import os
import struct
import traceback

from smbring.server.server import SMB1_HEADER_SIZE
from smbring.server.users import PasswordLookup
from smbring.smb import effects, security, wire
from smbring.smb.connection import Connection
from smbring.smb.server_state import ServerState
from smbring.smb.state import FID_ANY, Session
from smbring.smb.wire import Header
from smbring.vfs.posix import PosixVFS

import smbfuzz_credits as credits
import smbfuzz_input as fi
from smbfuzz_findings import Finding
from smbfuzz_shell import Shell

# the answers that may carry back their request's own signature (written out here, not taken
# from the server's code: a server that echoed more would then be caught)
ECHOED_STATUSES = frozenset({wire.STATUS_INVALID_PARAMETER, wire.STATUS_FILE_CLOSED,
                             wire.STATUS_NETWORK_NAME_DELETED, wire.STATUS_USER_SESSION_DELETED})

# the user's and the signing user's keys (the guest has none); the user signs when it chooses,
# and must on SMB 3.1.1 for its TREE_CONNECTs
SIGNING_KEYS = {fi.USER: bytes(range(16, 32)), fi.SIGNED: bytes(range(16))}
SEAL_KEYS = (bytes(range(32, 64)), bytes(range(64, 96)))   # server->client, client->server
SHAREFLAG_ENCRYPT_DATA = 0x8000
# requests that name no tree connect (its TreeId field is not looked at)
TREELESS = (wire.NEGOTIATE, wire.SESSION_SETUP, wire.LOGOFF, wire.TREE_CONNECT, wire.ECHO, wire.CANCEL)


class Client:
    """One connection, driven through one input."""

    def __init__(self, world, mode: fi.Mode, tolerate: frozenset = frozenset()):
        self.world = world
        self.tolerate = tolerate
        self.known: list[str] = []                   # known findings met (and tolerated)
        self.state = ServerState()
        self.conn = Connection(world.shares(mode.strict_allocate), lookup=PasswordLookup(os.path.join(world.root, "no-passdb")),
                               open_fs=PosixVFS, state=self.state, allow_guest=True,
                               local_address="127.0.0.1", file_closed=self.file_closed)
        self.shell = Shell(self.conn, mode.held_writes, self.check_response)
        self.window = credits.ClientWindow()
        self.alive = True
        self.next_mid = 0
        self.last_mid = 0
        self.planned: list[tuple[int, int]] | None = None  # (MessageId, charge) of the frame at hand
        self.counting_grants = True                  # not for the answer to an SMB1 NEGOTIATE
        self.commands_answered: list[tuple[int, int]] = []   # (command, status) in the frame at hand
        self.sessions: dict[int, int] = {}           # session slot -> SessionId
        self.trees: dict[int, dict[int, int]] = {}   # SessionId -> tree slot -> TreeId
        self.keys: dict[int, bytes] = {}             # SessionId -> signing key
        self.last_session = 0
        self.last_tree = 0
        self.fids: list[bytes] = []                  # FileIds of CREATE answers, oldest first
        self.pending: list[tuple[int, int]] = []     # (MessageId, AsyncId) answered PENDING
        self.file_keys: set = set()                  # (dev, ino) of every file opened
        self.requests: dict[int, tuple[bool, int, int]] = {}   # MessageId -> (signed, sealed by, tree)
        self.sent_signatures: dict[int, bytes] = {}  # MessageId -> the signature its request carried
        self.encrypted_trees: set[int] = set()       # TreeIds of shares reached encrypted only
        self.valid: set[int] = set()                 # SessionIds logged on
        self.downgraded: set[int] = set()            # sessions re-authenticated as guest or anonymous
        self.largest = 0                             # bytes in the longest response
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
        kinds = [(fi.USER, {"signing_key": SIGNING_KEYS[fi.USER]}), (fi.GUEST, {"guest": True}),
                 (fi.SIGNED, {"signing_key": SIGNING_KEYS[fi.SIGNED], "sign": True})]
        if c.cipher:
            size = 32 if c.cipher in (security.AES_256_CCM, security.AES_256_GCM) else 16
            kinds.append((fi.SEALED_SESSION, {"encrypt": True, "encrypt_key": SEAL_KEYS[0][:size],
                                              "decrypt_key": SEAL_KEYS[1][:size]}))
        for slot, extra in kinds:
            sid = c.state.sessions.new_session_id()     # (ids are the server's, as a logon's are)
            c.sessions[sid] = Session(id=sid, valid=True, user="guest" if extra.get("guest") else "fuzz", **extra)
            c.state.sessions.add(c.sessions[sid])
            if extra.get("encrypt"):
                self.seal_key, self.unseal_key = extra["decrypt_key"], extra["encrypt_key"]
            self.sessions[slot] = sid
            self.valid.add(sid)
            if extra.get("signing_key"):
                self.keys[sid] = extra["signing_key"]
            for tree_slot, share in ((fi.TREE_RW, "rw"), (fi.TREE_RO, "ro"), (fi.TREE_IPC, "IPC$")):
                path = wire.utf16(f"\\\\fuzz\\{share}")
                spec = fi.Spec(wire.TREE_CONNECT, flags=0x02 if sid in self.keys else 0, session=slot)
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
            return FID_ANY
        if slot == fi.FID_ZERO_SLOT:
            return b"\0" * 16
        return self.fids[-1 - (slot - 2) % len(self.fids)]   # 2: the newest

    def message_id(self, spec: fi.Spec, charge: int) -> int:
        """Mostly the next free one in sequence, as a client numbers them (a request takes
        `charge` ids); sometimes a repeat, a gap or a far one, which the server must refuse
        unless the window has room for it."""
        if spec.command == wire.CANCEL and spec.mid < fi.MID_REUSE:   # CANCEL takes no new id
            return self.pending[-1][0] if self.pending else self.last_mid
        if spec.mid < fi.MID_REUSE:
            mid = self.window.next_free(self.next_mid, charge)
            self.next_mid = mid + charge
        elif spec.mid < fi.MID_SKIP:
            mid = self.last_mid
        elif spec.mid < fi.MID_RANDOM:
            mid = self.next_mid + spec.mid - fi.MID_SKIP + 1
            self.next_mid = mid + charge
        else:
            mid = 0xFFFFFFFFFFFFFFFF if spec.mid == 0xFF else self.next_mid + (1 << (spec.mid - fi.MID_RANDOM + 8))
        self.last_mid = mid
        return mid

    # -- frames -------------------------------------------------------------------------------
    def render(self, frame: fi.Frame) -> bytes:
        """The frame's bytes; `planned` is left holding its requests' (MessageId, charge), or
        None when the fuzzer's patches make them unknown before the server reads them."""
        self.planned = []
        sealed = self.sessions.get(fi.SEALED_SESSION)
        first_slot = frame.messages[0].spec.session if frame.messages else None
        seal = sealed is not None and (frame.sealed or first_slot == fi.SEALED_SESSION)
        if frame.raw is not None:
            data = frame.raw
            self.planned = None
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
            for mid, _charge in self.planned or ():
                self.requests.pop(mid, None)    # what the patches made of them is not known
            self.planned = None
        return data

    def cancel(self, choice: int) -> bytes:
        """CANCEL of a waiting request, by its AsyncId (bit 0 set) or its MessageId."""
        mid, async_id = self.pending[(choice >> 1) % len(self.pending)] if self.pending else (self.last_mid, 0)
        hdr = Header(command=wire.CANCEL, message_id=mid, session_id=self.session_id(fi.USER),
                     flags=wire.FLAGS_ASYNC if choice & 1 else 0, async_id=async_id)
        return hdr.pack() + struct.pack("<HH", 4, 0)

    def chain(self, messages: list[fi.Message], sealed_by: int = 0) -> bytes:
        parts = []
        tree = 0        # the tree a related request inherits (the server's view, roughly)
        for i, m in enumerate(messages):
            spec = m.spec
            sid = self.session_id(spec.session)
            flags = spec.header_flags()
            charge = credits.charge(self.conn.dialect, spec.credit_charge)
            hdr = Header(command=spec.command, flags=flags, credit_charge=spec.credit_charge,
                         credits=spec.credits, message_id=self.message_id(spec, charge), session_id=sid,
                         tree_id=self.tree_id(spec.tree, sid))
            if spec.command != wire.CANCEL:
                self.planned.append((hdr.message_id, charge))
            tree = tree if flags & wire.FLAGS_RELATED and i else hdr.tree_id
            if spec.command != wire.CANCEL:     # (a CANCEL names the request it cancels: no answer
                # of its own; and a MessageId used twice ends the connection: the first stays)
                self.requests.setdefault(hdr.message_id, (bool(flags & wire.FLAGS_SIGNED), sealed_by, tree))
            if flags & wire.FLAGS_ASYNC:
                hdr.async_id = self.pending[-1][1] if self.pending else spec.mid
            body = bytearray(m.body)
            at = fi.FID_OFFSET.get(spec.command)
            if spec.fid != fi.NO_FID and at is not None and len(body) >= at + 16:
                body[at:at + 16] = self.fid(spec.fid)
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
        dialect = self.conn.dialect
        if len(data) < SMB1_HEADER_SIZE or len(data) > self.conn.frame_limit():
            self.alive = False        # the server drops such a frame's connection unread
            return
        smb1 = data[:4] == b"\xffSMB"
        if not smb1:        # (an answer may come in a later frame's turn: all are kept)
            for h in credits.chain_headers(data):    # (a sealed frame's none: they are not read)
                if h is not None and h.flags & wire.FLAGS_SIGNED:
                    self.sent_signatures.setdefault(h.message_id, h.signature)
        verdict = self.window.judge(self.planned) if self.planned is not None else credits.UNKNOWN
        self.counting_grants = not smb1     # its answer's one credit is MessageId 0's, granted before
        self.commands_answered = []
        try:
            self.shell.run(self.conn.handle_frame(data))
        except ConnectionError as e:
            self.alive = False
            if verdict == credits.OK and "credit window" in str(e):
                self.found(f"a frame of MessageIds granted and unused was refused: {e}", "credit-refused")
            return
        finally:
            self.counting_grants = True
        if verdict == credits.REFUSED:
            self.found(f"a frame reusing a MessageId, or using one never granted, was taken: "
                       f"{self.planned}", "credit-replay")
        taken = [] if smb1 else self.planned if self.planned is not None else \
            credits.requests_in(data, dialect, self.seal_key or None, self.conn.cipher)
        if taken is None:
            self.window.known_ids = False
        else:
            self.window.take(taken)
        self.window.either_first = smb1
        self.window.all_answers_seen = not self.shell.held
        self.check_opens()
        answers = [status for command, status in self.commands_answered if command == wire.NEGOTIATE]
        if dialect not in (0, wire.WILDCARD_DIALECT) and answers:
            self.found(f"a second NEGOTIATE was answered ({answers[0]:#x}); the connection should have ended",
                       "second-negotiate-malformed" if answers == [wire.STATUS_INVALID_PARAMETER] * len(answers)
                       else "second-negotiate")

    def disconnect(self) -> None:
        """What the server does when a connection ends: the WRITEs in flight are written, then
        close_all, which must not raise (the opens after the one that raised would stay open
        for good); of what that leaves in the outbox, only Forget is carried out."""
        try:
            self.shell.drain()
        except ConnectionError:
            pass
        for _ in range(len(self.conn.opens) + 1):
            try:
                self.conn.close_all()
                break
            except Exception as e:
                where = [frame.name for frame in traceback.extract_tb(e.__traceback__)]
                self.found(f"close_all raised {type(e).__name__}: {e} (in {' < '.join(reversed(where))})",
                           "close-all-raised")
        self.shell.run([e for e in self.conn.outbox_drain() if isinstance(e, effects.Forget)])

    def file_closed(self, share: str, fd: int) -> None:
        """The core tells the shell of a descriptor it closes, before the number can be reused."""
        try:
            os.fstat(fd)
        except OSError:
            raise Finding(f"file_closed({share!r}, {fd}) after the descriptor was closed") from None

    def found(self, message: str, kind: str) -> None:
        """A known finding is recorded (the input goes on); anything else fails."""
        if kind not in self.tolerate:
            raise Finding(message, kind)
        self.known.append(kind)

    # -- checks -------------------------------------------------------------------------------
    def check_response(self, message: bytes) -> None:
        self.largest = max(self.largest, len(message))
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
                    not security.verify(self.conn.sign_algorithm(), self.keys[h.session_id], part) and \
                    not self.echoed(h):
                raise Finding(f"a signed response (command {h.command}, status {h.status:#x}) has a bad signature")
            self.learn(h, part)
            if not h.next_command:
                return
            offset = end

    def echoed(self, h: Header) -> bool:
        """An answer that keeps its request's SIGNED flag and signature, unverified, as smbd and
        Windows answer a request refused before any key is looked up (a related request whose
        session check failed): only these statuses, which Samba's client takes unchecked."""
        return h.status in ECHOED_STATUSES and h.signature == self.sent_signatures.get(h.message_id)

    def learn(self, h: Header, part: bytes) -> None:
        """Ids and credits the answers hand out, for the requests that follow; and whether a
        session that must sign (or seal) had an unsigned (or unsealed) request carried out."""
        self.statuses.append((h.command, h.status))
        self.commands_answered.append((h.command, h.status))
        if self.counting_grants:
            self.window.grant(h.credits)
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
            if len(part) >= 64 + 8 and struct.unpack_from("<I", part, 64 + 4)[0] & SHAREFLAG_ENCRYPT_DATA:
                self.encrypted_trees.add(h.tree_id)
        elif h.command == wire.SESSION_SETUP and h.status in (wire.STATUS_SUCCESS,
                                                             wire.STATUS_MORE_PROCESSING_REQUIRED):
            self.last_session = h.session_id
            session_flags = struct.unpack_from("<H", part, 64 + 2)[0] if len(part) >= 68 else 0
            if h.status == wire.STATUS_SUCCESS and h.session_id in self.valid and session_flags & 0x3:
                self.downgraded.add(h.session_id)
            if h.status == wire.STATUS_SUCCESS:
                self.valid.add(h.session_id)
        elif h.command == wire.SESSION_SETUP and h.status == wire.STATUS_LOGON_FAILURE:
            self.valid.discard(h.session_id)        # a failed re-authentication ends the session

    def check_protection(self, h: Header) -> None:
        if h.status != wire.STATUS_SUCCESS or h.command in (wire.NEGOTIATE, wire.SESSION_SETUP, wire.ECHO):
            return
        if h.message_id not in self.requests:
            return              # a raw frame: its requests are not known
        signed, sealed_by, tree = self.requests[h.message_id]
        sealed = sealed_by == h.session_id
        if tree in self.encrypted_trees and not sealed and h.command not in TREELESS:
            self.found(f"an unencrypted request (command {h.command}) succeeded on a share that must be "
                       "reached encrypted", "unsealed-share-access")
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
        """Every file the connection holds open lies inside the share it was opened on, and
        can still be closed: its session and tree connect exist (LOGOFF and TREE_DISCONNECT
        close what they leave without one; an open nobody can reach stays until the
        connection ends)."""
        for o in self.conn.opens.values():
            self.file_keys.add(o.key)
            session = self.conn.sessions.get(o.session_id)
            if session is None or o.tree_id not in session.trees:
                self.found(f"an open of {o.display_name()!r} outlived its "
                           f"{'session' if session is None else 'tree connect'}", "orphan-open")
            target = os.readlink(f"/proc/self/fd/{o.fd}")
            root = o.tree.fs.root if o.tree is not None and o.tree.fs is not None else "?"
            if target != root and not target.startswith(root + "/"):
                raise Finding(f"an open of {o.display_name()!r} is {target}, outside {root}")

    def check_left_nothing(self) -> None:
        """After close_all: the connection holds nothing, and its ServerState (which would
        be the server's, shared by every connection) holds nothing of it."""
        c = self.conn
        if c.opens or c.async_requests or c.locks_here() or self.shell.held:
            raise Finding(f"left behind: {len(c.opens)} opens, {len(c.async_requests)} pending requests, "
                          f"{c.locks_here()} locks, {len(self.shell.held)} WRITEs not carried out")
        for key in self.file_keys:
            if self.state.share_modes.count(key):
                raise Finding(f"left behind: share modes on {key}")
            if not self.state.locks.idle(key):
                raise Finding(f"left behind: byte-range locks or lock requests on {key}")
            if self.state.is_delete_pending(key):
                raise Finding(f"left behind: a pending delete of {key}")
        if self.state.watches.active():
            raise Finding("left behind: a change-notify watch")
        residue = leftovers(self.state)
        if residue:
            raise Finding(f"left behind in the ServerState: {', '.join(residue)}")


# what the ServerState keeps of no client, which a client's leaving leaves as it was
NOT_A_CLIENTS = {
    "state.snapshots": "each shadow_copy2 share's snapshot list (vfs.shadow_copy.SnapshotLists)",
    # a user's, not a client's: what its LOCKs may still cost the kernel, kept across its
    # connections until it is full again, a few seconds (smb.posix_locks.KernelLockCredit)
    "state.kernel_lock_credit._credit": "each user's credit for the kernel's work on its LOCKs",
}


def leftovers(obj, path: str = "state", depth: int = 0) -> list[str]:
    """The containers in `obj`, and in the smbring objects it holds (a few levels down), that
    are not empty: ServerState has no "empty" query of its own, and this way a table added to
    it later is checked too."""
    out = []
    for name, value in vars(obj).items():
        where = f"{path}.{name}"
        if where in NOT_A_CLIENTS:
            continue
        if isinstance(value, (dict, set, frozenset, list)):
            if value:
                out.append(f"{where} ({len(value)})")
        elif depth < 3 and hasattr(value, "__dict__") and type(value).__module__.startswith("smbring."):
            out += leftovers(value, where, depth + 1)
    return out


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
