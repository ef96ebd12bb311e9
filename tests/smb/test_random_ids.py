"""FileIds' random halves come from the kernel's generator in batches: every id is fresh
bytes (never one handed out before, never a repeat across a refill), each connection draws
its own, and a request larger than a batch is still served whole."""
from smbring.smb.random_ids import RandomBytes


def test_ids_are_fresh_across_refills():
    ids = RandomBytes(batch=64)
    taken = [ids.take(8) for _ in range(1000)]      # ~125 refills
    assert all(len(t) == 8 for t in taken)
    assert len(set(taken)) == len(taken)
    assert ids.take(100) and len(ids.take(100)) == 100     # more than a batch at once


def test_two_connections_draw_different_ids():
    a, b = RandomBytes(), RandomBytes()
    assert {a.take(8) for _ in range(64)}.isdisjoint({b.take(8) for _ in range(64)})
