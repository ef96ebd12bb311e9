"""Fixtures of the sans-I/O tests: a share directory on real files and clients of it (see
sansio_client.py), each connection closed at the end as a server closes a dropped one."""
import pytest
from sansio_client import Client


@pytest.fixture
def share(tmp_path):
    """An empty share directory, alone in its parent (a test may check that nothing escaped).
    A test module adds its files by overriding this fixture with one that asks for it."""
    d = tmp_path / "share"
    d.mkdir()
    return d


@pytest.fixture
def clients(share):
    """Makes clients of the share (Client's options: state, limits, share, dialect, ...)."""
    made = []

    def make(**options) -> Client:
        made.append(Client(share, **options))
        return made[-1]
    yield make
    for c in made:
        c.conn.close_all()


@pytest.fixture
def client(clients):
    """One client with the default options."""
    return clients()


@pytest.fixture
def twins(tmp_path):
    """Two connections in the same state, each with its own share directory: the same
    request sent to both, one through `handle_frame` and the other through another path, must
    be answered alike (test_frame_paths.exchange_both)."""
    made = []
    for name in ("short", "general"):
        (tmp_path / name).mkdir()
        made.append(Client(tmp_path / name, credits=4))
    yield made
    for c in made:
        c.conn.close_all()
