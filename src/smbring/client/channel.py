"""One TCP connection to an SMB server: framing, MessageIds and credits, signing and sealing,
and matching each response to the request that is waiting for it.

Many requests may be in flight at once: a request takes CreditCharge credits (and as many
MessageIds) when it is sent, and each response hands back what the server grants. A request
that finds too few credits waits until responses bring more. One task reads frames and
completes the waiting requests; everything it finds wrong (a bad signature, an unencrypted
answer on an encrypted session, an answer to nothing we asked) closes the connection with a
:class:`ProtocolError` that every waiting and later request receives.
"""
from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass

from smbring.smb import security, wire
from smbring.smb.credits import charge_needed
from smbring.smb.wire import Header
from smbring.client.errors import ProtocolError, error_for

# how many credits the client tries to hold (granted and not yet used, plus those in flight):
# enough for 8 x 1 MiB READs and some metadata requests; Samba and smbring grant up to 8192
CREDIT_TARGET = 512
CREDIT_CAP = 1 << 16          # a server granting more is not believed beyond this
FRAME_SLACK = 64 * 1024       # headers, transform header, padding beyond the largest payload
UNSOLICITED = 0xFFFFFFFFFFFFFFFF   # the MessageId of a server's own notifications (breaks)


@dataclass
class SessionKeys:
    """What protects one session's messages once it is established."""
    session_id: int = 0
    signing_key: bytes = b""
    signing_algorithm: int = security.HMAC_SHA256
    sign: bool = False              # sign requests, and insist that responses are signed
    encrypt: bool = False           # seal requests, and insist that responses are sealed
    cipher: int = 0
    encrypt_key: bytes = b""        # client -> server
    decrypt_key: bytes = b""        # server -> client


@dataclass
class Response:
    header: Header
    message: bytes                  # the whole plaintext message, header first
    request: bytes | None = None    # the request as sent (for the preauthentication hash)

    @property
    def status(self) -> int:
        return self.header.status


@dataclass
class _Pending:
    command: int
    charge: int
    future: asyncio.Future
    keys: SessionKeys | None
    signed: bool                # the response must carry a good signature (unless sealed)


class Channel:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                 timeout: float = 60.0):
        self._reader, self._writer = reader, writer
        self.timeout = timeout
        self.multi_credit = False       # CAP_LARGE_MTU on a dialect above 2.0.2
        self.frame_limit = 1024 * 1024  # until NEGOTIATE says how large READs may be
        self._next_id = 0
        self._balance = 1               # credits granted and not yet used
        self._in_flight = 0             # credits of requests sent and not yet answered
        self.peak_in_flight = 0         # the most credits ever in flight at once (diagnostics)
        self._credit_change = asyncio.Event()   # set whenever credits come back (or on failure)
        self._pending: dict[int, _Pending] = {}
        self._error: BaseException | None = None
        self._sessions: dict[int, SessionKeys] = {}
        self._task = asyncio.get_running_loop().create_task(self._read_loop())

    # ---- lifecycle ----

    def register(self, keys: SessionKeys) -> None:
        """Responses for this session id are checked with these keys from now on."""
        self._sessions[keys.session_id] = keys

    @property
    def closed(self) -> bool:
        return self._error is not None

    async def close(self) -> None:
        self._fail(ConnectionError("connection closed by the client"))
        self._task.cancel()
        try:
            await self._task
        except (asyncio.CancelledError, Exception):
            pass

    def _fail(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
            self._writer.close()
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(self._error)
        self._pending.clear()
        self._credit_change.set()

    # ---- credits ----

    def charge_for(self, size: int) -> int:
        return charge_needed(size) if self.multi_credit else 1

    async def _take_credits(self, charge: int) -> int:
        while self._balance < charge:
            if self._error is not None:
                raise self._error
            if not self._in_flight:
                # nothing is in flight, so no response will ever bring more
                self._fail(ProtocolError(f"the server granted too few credits: {self._balance} "
                                         f"held, {charge} needed, none in flight"))
                raise self._error
            self._credit_change.clear()
            await self._credit_change.wait()
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
        self._credit_change.set()

    # ---- requests ----

    async def request(self, command: int, body: bytes, *, keys: SessionKeys | None = None,
                      tree_id: int = 0, payload: int = 0, data=None, session_id: int = 0,
                      expect=(wire.STATUS_SUCCESS,), what: str = "",
                      keep_request: bool = False, sign: bool = False) -> Response:
        """Sends one request and returns its final response. `payload`: the bytes it moves
        (sets the CreditCharge); `data`: bytes sent after `body` (a WRITE's data, not copied
        unless the message is signed or sealed); sign: sign this request even where the
        session does not sign everything (a 3.1.1 TREE_CONNECT). A status outside `expect`
        raises SMBError."""
        if self._error is not None:
            raise self._error
        charge = self.charge_for(payload)
        message_id = await self._take_credits(charge)
        header = Header(command=command, credit_charge=charge if self.multi_credit else 0,
                        credits=self._credits_to_ask(charge), message_id=message_id,
                        tree_id=tree_id, session_id=keys.session_id if keys else session_id)
        parts = [header.pack(), body] + ([data] if data is not None else [])
        sent = b"".join(parts) if keep_request else None
        sealed = bool(keys and keys.encrypt)
        signed = bool(keys and keys.signing_key and (keys.sign or sign))
        if sealed:
            transform, ciphertext = security.encrypt(keys.cipher, keys.encrypt_key, keys.session_id,
                                                     b"".join(parts))
            parts = [transform, ciphertext]
        elif signed:
            message = bytearray(b"".join(parts))
            security.apply_signature(keys.signing_algorithm, keys.signing_key, message)
            parts = [message]
        future = asyncio.get_running_loop().create_future()
        self._pending[message_id] = _Pending(command, charge, future, keys, signed)
        size = sum(len(p) for p in parts)
        self._writer.write(struct.pack(">I", size))
        self._writer.writelines(parts)
        try:
            await self._writer.drain()
            response = await asyncio.wait_for(asyncio.shield(future), self.timeout)
        except asyncio.TimeoutError:
            self._fail(ProtocolError(f"no answer to {_command_name(command)} within "
                                     f"{self.timeout:g} s"))
            raise self._error from None
        except (ConnectionError, OSError) as e:
            if self._error is None:
                self._fail(ConnectionError(f"connection lost: {e}"))
            raise self._error from None
        response.request = sent
        if response.status not in expect:
            raise error_for(response.status, what or _command_name(command))
        return response

    # ---- responses ----

    async def _read_loop(self) -> None:
        try:
            while True:
                head = await self._reader.readexactly(4)
                size = struct.unpack(">I", head)[0]
                if size >> 24:
                    raise ProtocolError(f"not a direct-TCP SMB frame (first byte {head[0]:#x})")
                if size > self.frame_limit:
                    raise ProtocolError(f"the server sent a frame of {size} bytes; the largest "
                                        f"expected is {self.frame_limit}")
                frame = await self._reader.readexactly(size)
                self._deliver(frame)
        except asyncio.IncompleteReadError:
            self._fail(ConnectionError("the server closed the connection"))
        except ProtocolError as e:
            self._fail(e)
        except (ConnectionError, OSError) as e:
            self._fail(ConnectionError(f"connection lost: {e}"))
        except asyncio.CancelledError:
            raise
        except Exception as e:   # a bug here must not leave requests waiting forever
            self._fail(ProtocolError(f"unreadable response: {e!r}"))

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
            header = Header.parse(frame)
        except ValueError as e:
            raise ProtocolError(f"bad response header: {e}") from None
        if not header.flags & wire.FLAGS_SERVER_TO_REDIR:
            raise ProtocolError("a message without SERVER_TO_REDIR: not a response")
        if header.next_command:
            raise ProtocolError("a compounded response to a request that was not compounded")
        if header.command == wire.OPLOCK_BREAK and header.message_id == UNSOLICITED:
            return      # the client asks for no oplocks or leases: a break concerns nothing here
        pending = self._pending.get(header.message_id)
        if pending is None:
            raise ProtocolError(f"a response to MessageId {header.message_id}, which has no "
                                f"request waiting")
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
            if not security.verify(keys.signing_algorithm, keys.signing_key, frame):
                raise ProtocolError(f"bad signature on the {_command_name(header.command)} "
                                    f"response (MessageId {header.message_id}): the message "
                                    f"was altered or not sent by the server")
        if interim:
            # the final response follows with the same MessageId; credits granted now count
            self._granted(header.credits)
            return
        del self._pending[header.message_id]
        self._in_flight -= pending.charge
        self._granted(header.credits)
        if not pending.future.done():
            pending.future.set_result(Response(header, frame))


_NAMES = ("NEGOTIATE", "SESSION_SETUP", "LOGOFF", "TREE_CONNECT", "TREE_DISCONNECT", "CREATE",
          "CLOSE", "FLUSH", "READ", "WRITE", "LOCK", "IOCTL", "CANCEL", "ECHO", "QUERY_DIRECTORY",
          "CHANGE_NOTIFY", "QUERY_INFO", "SET_INFO", "OPLOCK_BREAK")


def _command_name(command: int) -> str:
    return _NAMES[command] if command < len(_NAMES) else f"command {command:#x}"
