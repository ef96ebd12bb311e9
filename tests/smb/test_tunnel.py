"""The tunnel cache's rules (smb.tunnel): what it keeps, for whom, for how long, how many. The
served behaviour is tested with smbclient in tests/server/test_short_names.py."""
from smbring.smb.tunnel import MAX_TUNNELED, TUNNEL_SECONDS, NameTunnel
from smbring.vfs.short_names import short_name

LONG = "quarterly report of the team.text"
DIRECTORY, ELSEWHERE = (1, 100), (1, 200)
ALICE, BOB = b"alice-sid", b"bob-sid"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_removed_long_name_comes_back_once_by_its_short_name_in_any_case():
    tunnel = NameTunnel()
    tunnel.removed(DIRECTORY, LONG, ALICE)
    assert tunnel.long_name(DIRECTORY, short_name(LONG).lower(), ALICE) == LONG
    assert tunnel.long_name(DIRECTORY, short_name(LONG), ALICE) is None       # taken
    assert len(tunnel) == 0


def test_only_in_its_directory_and_for_its_user():
    tunnel = NameTunnel()
    tunnel.removed(DIRECTORY, LONG, ALICE)
    assert tunnel.long_name(ELSEWHERE, short_name(LONG), ALICE) is None
    assert tunnel.long_name(DIRECTORY, short_name(LONG), BOB) is None
    assert tunnel.long_name(DIRECTORY, short_name(LONG), ALICE) == LONG


def test_an_83_name_is_not_kept_nor_is_a_name_that_cannot_be_mangled_looked_up():
    tunnel = NameTunnel()
    tunnel.removed(DIRECTORY, "README.TXT", ALICE)
    assert len(tunnel) == 0
    tunnel.removed(DIRECTORY, LONG, ALICE)
    assert tunnel.long_name(DIRECTORY, "README.TXT", ALICE) is None
    assert tunnel.long_name(DIRECTORY, LONG, ALICE) is None     # a long name is no short one


def test_kept_for_the_tunnel_period_only():
    clock = Clock()
    tunnel = NameTunnel(clock)
    tunnel.removed(DIRECTORY, LONG, ALICE)
    clock.now += TUNNEL_SECONDS
    assert tunnel.long_name(DIRECTORY, short_name(LONG), ALICE) == LONG
    tunnel.removed(DIRECTORY, LONG, ALICE)
    clock.now += TUNNEL_SECONDS + 0.001
    assert tunnel.long_name(DIRECTORY, short_name(LONG), ALICE) is None
    assert len(tunnel) == 0     # (expired entries are dropped as the cache is looked at)


def test_at_most_max_tunneled_names_the_oldest_dropped_first():
    tunnel = NameTunnel()
    names = [f"a long file name number {i}.text" for i in range(MAX_TUNNELED + 1)]
    for i, name in enumerate(names):
        tunnel.removed((1, i), name, ALICE)
    assert len(tunnel) == MAX_TUNNELED
    assert tunnel.long_name((1, 0), short_name(names[0]), ALICE) is None
    assert tunnel.long_name((1, 1), short_name(names[1]), ALICE) == names[1]
