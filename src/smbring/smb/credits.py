"""The credit window of one connection (MS-SMB2 3.3.1.1, 3.3.1.2, 3.3.5.2.3, 3.3.5.2.5).

A client may only send a request whose MessageIds (CreditCharge of them, from its MessageId on)
lie in the window the server has granted and were never used before: that is what stops a
captured signed or encrypted request from being replayed, and what bounds how much work a client
may have outstanding. The window opens with one id (for NEGOTIATE) and each response grants more.
A request outside it ends the connection, as Samba and Windows do.

Credits are granted as Samba grants them: what the client asks for, scaled down as the credits it
already holds approach `smb2 max credits`, at least what the request consumed, and never so many
that the window would span more than `smb2 max credits` MessageIds.
"""
from __future__ import annotations

from smbring._wire import CreditWindowBase

CREDIT_SIZE = 65536     # the payload one credit covers (MS-SMB2 3.1.5.2)


def charge_needed(size: int) -> int:
    """The CreditCharge a request moving `size` bytes (in or out) must carry."""
    return 1 if size <= 0 else (size - 1) // CREDIT_SIZE + 1


class CreditWindow(CreditWindowBase):
    """The window's state (max, low, range, granted, _used, _either_first) and its `take`
    are in C (smbring._wire.CreditWindowBase): `take(message_id, charge, requested)` takes
    the request's MessageIds out of the window (none where `message_id` is None: taken
    already, as a compound's are when its frame is split), then grants its response's
    credits (none where `requested` is None: 0), one call for a lone request, which is
    taken and answered with nothing between; -1 when its ids are outside the window or used
    already (nothing taken or granted: the caller drops the connection). The
    usual request (the next MessageId, one credit) is taken there; any other through
    `_consume_any`. Then the credits granted: what the request asked (at least 1), scaled
    as Samba scales them, ``(16 - granted * 16 // max) * asked // 16``, at least its
    charge and 1, at most what keeps the window within `max`; the window grows by as many.
    (In C because every request takes: in Python it was ~95 bytecodes a request.)"""

    def __init__(self, max_credits: int):
        if max_credits < 1:
            raise ValueError("smb2 max credits must be at least 1")
        self.max = max_credits
        self.low = 0            # the lowest MessageId not yet used
        self.range = 1          # MessageIds low .. low + range - 1 are granted (used or not)
        self.granted = 1        # of those, the ones the client may still use
        self._used: set[int] = set()   # used MessageIds above low (the client used them out of order)
        self._either_first = False

    def start_after_smb1_negotiate(self) -> None:
        """An SMB1 NEGOTIATE answered with the SMB2 wildcard dialect counts as MessageId 0
        (MS-SMB2 3.3.5.3.1): the client's SMB2 NEGOTIATE follows with MessageId 1, though
        some clients start again from 0. Either, once."""
        self._either_first = True

    def _consume_any(self, message_id: int, charge: int) -> bool:
        """`take` of the MessageIds of any request but the usual one (the next, one credit)."""
        charge = max(charge, 1)
        if self._either_first and message_id == 1 and self.low == 0:
            self.low = 1
        self._either_first = False
        if charge > self.granted or message_id < self.low or \
                message_id + charge > self.low + self.range:
            return False
        ids = range(message_id, message_id + charge)
        if any(m in self._used for m in ids):
            return False
        self._used.update(ids)
        self.granted -= charge
        while self.low in self._used:       # the window slides past every id now used
            self._used.discard(self.low)
            self.low += 1
            self.range -= 1
        return True
