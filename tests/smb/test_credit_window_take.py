"""The credit window's `take` (in C, smbring._wire.CreditWindowBase) against the Python it
replaced, kept here as the model: the same answer and the same window after every step of
random sequences of requests (in order, out of order, reused, beyond the window, multi-credit,
huge ids, consumed and granted apart), and after an SMB1 NEGOTIATE's either-first start.
Fails where the C take differs from the model in any answer or any field of the window."""
import random

import pytest

from smbring.smb.credits import CreditWindow


class Model:
    """smb.credits.CreditWindow as it was in Python."""

    def __init__(self, max_credits: int):
        self.max, self.low, self.range, self.granted = max_credits, 0, 1, 1
        self._used: set[int] = set()
        self._either_first = False

    def take(self, message_id, charge, requested):
        if message_id == self.low and charge <= 1 and self.granted and not self._either_first:
            self.granted -= 1
            self.low = message_id + 1
            self.range -= 1
            while self.low in self._used:
                self._used.discard(self.low)
                self.low += 1
                self.range -= 1
        elif message_id is not None and not self._consume_any(message_id, charge):
            return -1
        if requested is None:
            return 0
        requested = max(requested, 1)
        most = self.max
        scaled = max((16 - self.granted * 16 // most) * requested // 16, charge, 1)
        give = min(scaled, most - self.range)
        self.granted += give
        self.range += give
        return give

    # the general case was Python and stays Python (the C take calls it): the same function
    _consume_any = CreditWindow._consume_any


def state(w) -> tuple:
    return w.max, w.low, w.range, w.granted, frozenset(w._used), w._either_first


def step(rng: random.Random, w) -> tuple:
    """A request's (message_id, charge, requested), mostly the usual one."""
    roll = rng.random()
    if roll < 0.6:
        message_id = w.low
    elif roll < 0.8:
        message_id = w.low + rng.randrange(0, max(w.range, 1) + 2)     # out of order, or beyond
    elif roll < 0.85:
        message_id = max(w.low - rng.randrange(1, 4), 0)                # reused
    elif roll < 0.88:
        message_id = rng.choice([2**63 - 1, 2**63, 2**64 - 1])          # huge
    else:
        message_id = None                                               # granted apart
    charge = rng.choice([0, 1, 1, 1, 2, 3, 8])
    requested = None if rng.random() < 0.1 else rng.choice([0, 1, 2, 16, 64, 0xFFFF])
    if message_id is None and requested is None:
        requested = 1
    return message_id, charge, requested


@pytest.mark.parametrize("max_credits", [1, 2, 8, 512, 8192])
@pytest.mark.parametrize("after_smb1", [False, True])
def test_take_answers_and_moves_the_window_as_the_model(max_credits, after_smb1):
    rng = random.Random(max_credits * 2 + after_smb1)
    for _ in range(40):
        real, model = CreditWindow(max_credits), Model(max_credits)
        if after_smb1:
            real.start_after_smb1_negotiate()
            model._either_first = True
        for _ in range(500):
            request = step(rng, model)
            assert real.take(*request) == model.take(*request), request
            assert state(real) == state(model), request


def test_wrong_arguments_raise():
    w = CreditWindow(8)
    with pytest.raises(TypeError):
        w.take(0, 1)
    with pytest.raises(TypeError):
        w.take("0", 1, 1)
    with pytest.raises(TypeError):
        w.take(0, 1, "1")
    with pytest.raises(TypeError):
        w.take(0, None, 1)
    with pytest.raises(OverflowError):
        w.take(0, 1, 2**80)
    with pytest.raises(ValueError):
        CreditWindow(0)
    assert state(w) == (8, 0, 1, 1, frozenset(), False)     # (nothing taken by the refusals)
