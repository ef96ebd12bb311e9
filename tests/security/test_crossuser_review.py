"""State that spans users and connections (leases and their breaks, durable handles, change
notify, byte-range locks, share modes, delete-pending), tried by a user with an account
(BOB) against another user's (ALICE's): a server started as root acting as two Unix accounts
made for the module, raw requests (raw.py), the helpers of test_session_review.

BOB knows what travels in the clear or can be guessed (ALICE's ClientGuid, FileIds), not her
LeaseKeys. Each test shows with ALICE's own requests that what it protects works."""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
from servers import spawn_for_accounts, stop, unix_accounts
from test_session_review import PASSWORD, Conn  # noqa: F401  (PASSWORD: the accounts' own)

from smbring.smb import oplocks, wire
from smbring.smb.channels import Channel
from smbring.smb.durable import Durable
from smbring.smb.state import Open, Session

sys.path.insert(0, str(Path(__file__).parent.parent / "smb"))
import sansio_client  # noqa: E402

if os.geteuid() != 0 or not shutil.which("useradd"):
    pytest.skip("acting as Unix accounts needs root (and useradd)", allow_module_level=True)

SUFFIX = f"{os.getpid() % 100000}"
ALICE, BOB = f"xura{SUFFIX}", f"xurb{SUFFIX}"
READ_WRITE = 0x0012019F
R, W, H = 1, 4, 2


@pytest.fixture(scope="module")
def accounts():
    yield from unix_accounts(ALICE, BOB)


@pytest.fixture(scope="module")
def server(accounts, tmp_path_factory):
    """share/ (1777, durable handles on): ALICE's private/ (0700) with secret.txt in it."""
    tmp = tmp_path_factory.mktemp("crossuser")
    top = Path(tempfile.mkdtemp(prefix="smbring-crossuser-", dir="/tmp"))
    top.chmod(0o755)
    share = top / "share"
    share.mkdir()
    share.chmod(0o1777)
    private = share / "private"
    private.mkdir()
    (private / "secret.txt").write_text("alice's")
    for p in (private, private / "secret.txt"):
        os.chown(p, *accounts[ALICE])
    private.chmod(0o700)
    proc, port, log = spawn_for_accounts(tmp, share, (ALICE, BOB), PASSWORD,
                                         share_options="durable handles = yes\n")
    yield {"port": port, "share": share, "proc": proc, "log": log, "accounts": accounts}
    stop(proc)
    shutil.rmtree(top, ignore_errors=True)


# -- where a lease break goes once the open's session is gone ----------------------------------

def _on_client(conn, client, session_id: int = 0, owner: str = "", guest: bool = False,
               user: str = ""):
    """The connection works on `client`'s tables, with a logged-on session of `owner`."""
    conn.client.connections.remove(conn)
    conn.client = client
    client.connections.append(conn)
    if session_id:
        client.sessions[session_id] = Session(id=session_id, valid=True, owner=owner, guest=guest,
                                              user=user, client=client,
                                              channels={conn: Channel(signing_key=b"k" * 16)})


def _breaks(conn) -> list[bytes]:
    return [body for h, body in sansio_client.sent(conn.outbox_drain()) if h.command == wire.OPLOCK_BREAK]


@pytest.mark.parametrize("durable_owner", ["uid:1", ""])
def test_a_lease_break_whose_session_is_gone_goes_to_its_users_logon_only(tmp_path, durable_owner):
    """No request of a client path is known to leave a leased open attached with its session
    gone (a session's end closes its opens or detaches its durable ones, whose breaks then go
    nowhere), so the rule is tried on the connections themselves: the break of such an open
    goes to a logon of the user its durable record names (as when the session lives), never
    to another user's logon on the same ClientGuid (which would learn her LeaseKey), nor
    anywhere where no record names the user. An anonymous session's lease goes to that
    session only."""
    state_dir = tmp_path / "s"
    state_dir.mkdir()
    origin = sansio_client.connection(state_dir)
    client = origin.client
    bob, alice = sansio_client.connection(state_dir, origin.state), sansio_client.connection(state_dir, origin.state)
    _on_client(bob, client, 7, owner="uid:2")           # BOB's logon, oldest: first in line
    _on_client(alice, client, 8, owner="uid:1")
    o = Open(fd=-1, parts=["f"], is_dir=False, access=READ_WRITE, session_id=5)   # (5: gone)
    if durable_owner:
        origin.state.durable.grant(Durable(open=o, persistent=b"p" * 8, user=durable_owner,
                                           client_guid=b"g" * 16, create_guid=b"", timeout=60,
                                           share=("s", str(state_dir))))
    lease = oplocks.Lease(b"g" * 16, b"K" * 16, (1, 2), 1, state=R | W | H)
    origin.send_lease_break(o, lease, R | W | H, R | H, True)
    assert _breaks(bob) == []
    assert len(_breaks(alice)) == (1 if durable_owner else 0)
    # an anonymous session's lease: its own session only, not BOB's logon
    anon = sansio_client.connection(state_dir, origin.state)
    _on_client(anon, client, 9, guest=True, user="anonymous")
    o.session_id = 9
    origin.send_lease_break(o, lease, R | W | H, R | H, True)
    assert _breaks(bob) == [] and _breaks(alice) == []
    assert len(_breaks(anon)) == 1
