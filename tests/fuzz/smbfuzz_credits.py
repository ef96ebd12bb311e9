"""The MessageIds a client may use, as the client sees them (MS-SMB2 3.2.4.1.6, 3.3.1.1).

The server opens the window with one id (for NEGOTIATE) and every response grants more
(its CreditResponse); a request takes CreditCharge ids from its MessageId on (one before SMB
2.1), and each id may be used once. `ClientWindow` keeps that account from what the client
sent and what the answers said, independently of the server's own (smb/credits.py), so the
fuzzer can say what the server must do with a frame:

- "ok": every id of every request is granted and unused: the server must take the frame;
- "refused": an id is used already, or (every response seen) not granted: the server must
  drop the connection before it does anything of the frame;
- "unknown": the client cannot tell (a WRITE answered later may have granted more; a frame
  the fuzzer mangled may have used ids the client does not know of).

After an SMB1 NEGOTIATE answered with the wildcard dialect the next request may use either
MessageId 0 or 1 (MS-SMB2 3.3.5.3.1).
"""
from __future__ import annotations

import struct

from smbring.smb import security, wire
from smbring.smb.wire import Header

OK, REFUSED, UNKNOWN = "ok", "refused", "unknown"


class ClientWindow:
    def __init__(self):
        self.limit = 1              # ids below this were granted
        self.low = 0                # every id below this is used
        self.used: set[int] = set()     # used ids at or above low
        self.either_first = False   # an SMB1 NEGOTIATE was answered: 0 or 1 comes next
        self.all_answers_seen = True    # else `limit` is only a lower bound
        self.known_ids = True       # else the server may have taken ids the client does not know

    def grant(self, credits: int) -> None:
        self.limit += credits

    def is_free(self, mid: int, charge: int) -> bool:
        return mid >= self.low and not any(m in self.used for m in range(mid, mid + charge))

    def next_free(self, hint: int, charge: int) -> int:
        """The first MessageId from `hint` on with `charge` unused ids (a client numbers its
        requests in sequence; the fuzzer's own frames may have used some ids out of order)."""
        mid = max(hint, self.low)
        while not self.is_free(mid, charge):
            mid += 1
        return mid

    def judge(self, requests: list[tuple[int, int]]) -> str:
        """What the server must do with a frame of these (MessageId, charge) requests."""
        trial = self.copy()
        verdict = OK
        for mid, charge in requests:
            trial.start(mid)
            if not trial.is_free(mid, charge):
                return REFUSED              # a replay: refused whatever was granted
            if mid + charge > trial.limit and self.all_answers_seen:
                return REFUSED              # never granted
            if mid + charge > trial.limit or not self.known_ids:
                verdict = UNKNOWN
            trial.use(mid, charge)
        return verdict

    def take(self, requests: list[tuple[int, int]]) -> None:
        """The server took these requests."""
        for mid, charge in requests:
            self.start(mid)
            self.use(mid, charge)

    def start(self, mid: int) -> None:
        if self.either_first and mid == 1 and self.low == 0:
            self.use(0, 1)                  # the SMB1 NEGOTIATE counts as MessageId 0
            self.limit += 1
        self.either_first = False

    def use(self, mid: int, charge: int) -> None:
        self.used.update(range(mid, mid + charge))
        while self.low in self.used:
            self.used.discard(self.low)
            self.low += 1

    def copy(self) -> "ClientWindow":
        other = ClientWindow()
        other.__dict__.update(self.__dict__, used=set(self.used))
        return other


def charge(dialect: int, credit_charge: int) -> int:
    """The ids a request takes: its CreditCharge from SMB 2.1 on, one before."""
    return max(credit_charge, 1) if dialect > wire.SMB202 else 1


def requests_in(frame: bytes, dialect: int, unseal_key: bytes | None, cipher: int):
    """The (MessageId, charge) of every request of a frame as the server reads it, or None
    when the client cannot read it (a transform it has no key for, a broken chain)."""
    if frame[:4] == wire.TRANSFORM_ID:
        if unseal_key is None:
            return None
        try:
            frame = security.decrypt(cipher, unseal_key, frame)
        except security.DecryptError:
            return None
    out = []
    for h in chain_headers(frame):
        if h is None:
            return None
        if h.command != wire.CANCEL:
            out.append((h.message_id, charge(dialect, h.credit_charge)))
    return out


def chain_headers(frame: bytes):
    """The headers of a plain frame's chain, in order, NextCommand followed; None last where
    one does not parse."""
    offset = 0
    while True:
        try:
            h = Header.parse(frame[offset:offset + 64])
        except (ValueError, struct.error):
            yield None
            return
        yield h
        if not h.next_command:
            return
        offset += h.next_command
