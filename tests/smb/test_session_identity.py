"""Who a session acts as, as the core asks the server (`Connection(identities=...)`): a logon
the server finds no account for is refused, a tree gets the share's files as the session's
account (force user: as the share's), and sessions of different accounts never share a
FileSystem. The identities here are the server's answers written out; the files are real."""
import struct

import pytest
import smbcore
import spnego as pyspnego
from test_ntlm import HASHES, PASSWORD, USER, answer, session_setup, smb2

from smbring.server.users import PasswordLookup
from smbring.smb import wire
from smbring.smb.connection import Connection
from smbring.smb.state import Share
from smbring.vfs.posix import PosixVFS


class Identities:
    """The server's side: logon(user, kind) and for_share(share, identity), recorded."""

    def __init__(self, accounts: dict, forced: dict | None = None):
        self.accounts = accounts            # user name (or kind) -> identity, absent: none
        self.forced = forced or {}          # share name -> identity (None: refused)
        self.asked: list = []

    def logon(self, user, kind):
        self.asked.append(("logon", user, kind))
        return self.accounts.get(user if kind == "user" else kind)

    def for_share(self, share, identity):
        self.asked.append(("share", share.name, identity))
        return self.forced.get(share.name, identity)


@pytest.fixture
def made(tmp_path):
    """make(identities, allow_guest=False) -> a Connection past NEGOTIATE whose password file
    holds USER; opened: the (share, identity) each FileSystem was made for."""
    passdb = tmp_path / "passdb"
    passdb.write_text(f"{USER}:1000:{'0' * 32}:{HASHES[USER].hex().upper()}:[U]:LCT-00000000\n")
    opened, conns = [], []

    def open_fs(share, identity):
        opened.append((share.name, identity))
        return PosixVFS(share.path)

    def make(identities, allow_guest=False, shares=("s",)):
        conn = Connection({name: Share(name, str(tmp_path), guest_ok=True) for name in shares},
                          lookup=PasswordLookup(str(passdb)), open_fs=open_fs,
                          identities=identities, allow_guest=allow_guest)
        conn.handle_frame(smb2(wire.NEGOTIATE, struct.pack("<HHHHI16sIHH", 36, 1, 1, 0, 0, b"\1" * 16, 0, 0, 0)
                               + struct.pack("<H", wire.SMB202), 0))
        conns.append(conn)
        return conn
    make.opened = opened
    yield make
    for conn in conns:
        conn.close_all()


def logon(conn, user=USER, password=PASSWORD, first_id=1) -> tuple[int, int]:
    """(status, session id) of an NTLM logon through the connection."""
    client = pyspnego.client(user, password, hostname="s", protocol="ntlm")
    status, session_id, reply = answer(conn, session_setup(client.step(), first_id))
    assert status == wire.STATUS_MORE_PROCESSING_REQUIRED
    status, _, _ = answer(conn, session_setup(client.step(reply), first_id + 1, session_id))
    return status, session_id


def tree_connect(conn, session_id, message_id, share="s") -> tuple[int, int]:
    frame = smb2(wire.TREE_CONNECT, smbcore.tree_connect_body(f"\\\\x\\{share}"), message_id, session_id)
    data = b"".join(smbcore.carry_out(conn.handle_frame(frame)))
    return struct.unpack_from("<I", data, 8)[0], struct.unpack_from("<I", data, 36)[0]


def test_a_user_the_server_has_no_account_for_is_refused(made):
    ids = Identities({})
    conn = made(ids)
    status, session_id = logon(conn)
    assert status == wire.STATUS_LOGON_FAILURE
    assert session_id not in conn.sessions
    assert ids.asked == [("logon", USER, "user")]


def test_a_tree_acts_as_the_sessions_account(made):
    conn = made(Identities({USER: "acct-alice"}))
    status, session_id = logon(conn)
    assert status == 0 and conn.sessions[session_id].identity == "acct-alice"
    status, tid = tree_connect(conn, session_id, 3)
    assert status == 0
    assert made.opened == [("s", "acct-alice")]
    assert conn.sessions[session_id].trees[tid].fs is conn.share_fs(conn.shares["s"], "acct-alice")


def test_sessions_of_different_accounts_get_different_file_systems(made):
    conn = made(Identities({USER: "acct-1"}))
    _, first = logon(conn)
    conn.identities.accounts[USER] = "acct-2"       # the next logon maps to another account
    _, second = logon(conn, first_id=3)
    _, t1 = tree_connect(conn, first, 5)
    _, t2 = tree_connect(conn, second, 6)
    fs1, fs2 = conn.sessions[first].trees[t1].fs, conn.sessions[second].trees[t2].fs
    assert fs1 is not fs2
    assert made.opened == [("s", "acct-1"), ("s", "acct-2")]
    _, t3 = tree_connect(conn, first, 7)              # the same account: the same files
    assert conn.sessions[first].trees[t3].fs is fs1


def test_force_user_and_a_refused_share(made):
    conn = made(Identities({USER: "acct-alice"}, forced={"forced": "acct-forced", "closed": None}),
                shares=("s", "forced", "closed"))
    _, session_id = logon(conn)
    status, _ = tree_connect(conn, session_id, 3, "forced")
    assert status == 0 and made.opened == [("forced", "acct-forced")]
    status, _ = tree_connect(conn, session_id, 4, "closed")
    assert status == wire.STATUS_ACCESS_DENIED
    assert made.opened == [("forced", "acct-forced")]


def test_guests_and_anonymous_ask_for_the_guest_account(made):
    ids = Identities({"guest": "acct-nobody", "anonymous": "acct-nobody"})
    conn = made(ids, allow_guest=True)
    status, session_id = logon(conn, user="stranger", password="whatever")   # a bad user: guest
    assert status == 0 and conn.sessions[session_id].guest
    assert conn.sessions[session_id].identity == "acct-nobody"
    assert ids.asked[-1] == ("logon", "", "guest")


def test_a_guest_without_guest_account_is_refused(made):
    conn = made(Identities({}), allow_guest=True)
    status, session_id = logon(conn, user="stranger", password="whatever")
    assert status == wire.STATUS_LOGON_FAILURE and session_id not in conn.sessions
