"""Anonymous (null session) logons with real clients, as smbd answers them with its default
options (`restrict anonymous = 0`, `map to guest = Never`, no share with `guest ok`):

- an NTLMSSP logon with an empty user name and no password succeeds, with
  SMB2_SESSION_FLAG_IS_NULL, no keys, acting as the `guest account` (a Unix account: files it
  makes are the guest account's, and it reads only what that account may);
- it reaches IPC$ (share listing, server information) and no share without `guest ok`;
- `restrict anonymous = 1` refuses it the share listing and server information,
  `restrict anonymous = 2` IPC$ itself (and a `map to guest = bad user` guest likewise), while
  a `guest ok` share stays open to it;
- a user's session that re-authenticates anonymously (smbtorture smb2.session.reauth2-4) keeps
  its tree connects and its opens, and from then on acts as the guest account there: it reads
  through a handle opened before, opens anew only what the guest account may, writes only as
  the guest account, and connects no new tree to a share without `guest ok`.

The server runs as root and acts as a Unix account made for the module; clients are Samba's
smbclient and rpcclient, impacket, and the raw client of tests/security (re-authentication,
which no client library offers)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from smbconf_fixtures import TAG, need_root_and_samba, output, refused, serve, unix_accounts

from smbring.smb import wire

need_root_and_samba()
sys.path.insert(0, str(Path(__file__).parent.parent / "security"))     # raw.py, logon.py
from logon import ANONYMOUS, V1_FLAGS, forged_logon  # noqa: E402
from raw import RawClient  # noqa: E402
from smbcore import read_body, write_body  # noqa: E402

PASSWORD = "Anon-pw1"
USER = f"sanon{TAG}"
NOBODY = 65534
SECRET = "the user's secret"


@pytest.fixture(scope="module")
def account():
    with unix_accounts({USER: ()}) as made:
        yield made[USER]


@pytest.fixture(scope="module")
def tree_root(account, tmp_path_factory):
    """priv/ (the account's, 0755): secret.txt (0600) and open.txt (0644), both the
    account's, and drop/ (1777); pub/ (0777) for guest ok shares."""
    root = tmp_path_factory.mktemp("anon")
    root.chmod(0o755)
    priv = root / "priv"
    priv.mkdir()
    (priv / "secret.txt").write_text(SECRET)
    (priv / "secret.txt").chmod(0o600)
    (priv / "open.txt").write_text("readable by all")
    (priv / "drop").mkdir()
    (priv / "drop").chmod(0o1777)
    for path in (priv, priv / "secret.txt", priv / "open.txt"):
        os.chown(path, account.uid, account.gid)
    (root / "pub").mkdir(mode=0o777)
    (root / "pub").chmod(0o777)
    return root


@pytest.fixture(scope="module")
def start(tree_root, tmp_path_factory):
    """start(global options, with_pub=False) -> Served: [priv] (no guest ok), [only]
    (valid users = the account), and with with_pub [pub] (guest ok). Stopped after the module."""
    contexts = []

    def run(global_options: str = "", with_pub: bool = False):
        shares = {"priv": f"path = {tree_root / 'priv'}\nread only = no",
                  "only": f"path = {tree_root / 'priv'}\nread only = no\nvalid users = {USER}"}
        if with_pub:
            shares["pub"] = f"path = {tree_root / 'pub'}\nread only = no\nguest ok = yes"
        context = serve(tmp_path_factory.mktemp("run"), global_options, shares, {USER: PASSWORD})
        contexts.append(context)
        return context.__enter__()

    yield run
    for context in contexts:
        context.__exit__(None, None, None)


@pytest.fixture(scope="module")
def default(start):
    """smbd's defaults: no guest ok share, restrict anonymous = 0, map to guest = Never."""
    return start()


# -- the anonymous logon ------------------------------------------------------------------------
def test_smbclient_anonymous_lists_shares_and_reaches_no_share(default):
    r = default.smbclient_list(user=None)
    assert r.returncode == 0 and "Anonymous login successful" in output(r), output(r)
    assert "priv" in r.stdout and "IPC$" in r.stdout, r.stdout
    for share in ("priv", "only"):
        r = default.smbclient(share, "ls", user=None)
        assert "Anonymous login successful" in output(r) and refused(r), output(r)
    r = default.rpcclient("srvinfo", user=None)
    assert r.returncode == 0, output(r)
    assert "logon accepted: anonymous" in default.log_text()


@pytest.mark.parametrize("dialect", ["SMB2_DIALECT_21", "SMB2_DIALECT_30"])
def test_impacket_null_session(default, dialect):
    """impacket's login('', ''): share listing through IPC$, no share without guest ok. (Over
    SMB 3.1.1 impacket signs every request, also anonymous ones, with a key it made up: the
    server, which gives an anonymous session no key, refuses them.)"""
    from impacket import smb3structs
    from impacket.smbconnection import SessionError, SMBConnection
    conn = SMBConnection("127.0.0.1", "127.0.0.1", sess_port=default.port,
                         preferredDialect=getattr(smb3structs, dialect))
    try:
        conn.login("", "")
        assert not conn.isGuestSession()
        names = {share["shi1_netname"][:-1] for share in conn.listShares()}
        assert {"priv", "only", "IPC$"} <= names
        with pytest.raises(SessionError) as refusal:
            conn.connectTree("priv")
        assert refusal.value.getErrorCode() == wire.STATUS_ACCESS_DENIED
    finally:
        conn.close()


def anonymous(server, dialect=wire.SMB311):
    c = RawClient(server.port)
    assert c.negotiate((dialect,)).status == wire.STATUS_SUCCESS
    s = forged_logon(c, "", lambda _challenge: (b"", b""), flags=V1_FLAGS | ANONYMOUS)
    return c, s


def test_the_null_session_has_no_keys_and_acts_as_the_guest_account(start, tree_root):
    """IS_NULL and an unsigned answer; on a guest ok share the session reads and writes as the
    guest account (nobody), never as the account whose files are there."""
    server = start(with_pub=True)
    c, s = anonymous(server)
    assert s.status == wire.STATUS_SUCCESS, s.last
    assert s.flags & wire.SESSION_FLAG_IS_NULL and not s.flags & wire.SESSION_FLAG_IS_GUEST
    assert not s.last.header.flags & wire.FLAGS_SIGNED
    assert c.tree_connect(s, "priv").status == wire.STATUS_ACCESS_DENIED
    tree = c.tree(s, "pub")
    name = f"from-anonymous-{os.urandom(3).hex()}.txt"
    fid = tree.open(name, wire.GENERIC_READ | wire.GENERIC_WRITE, wire.FILE_CREATE)
    assert tree.request(wire.WRITE, write_body(fid, b"anonymous data")).status == wire.STATUS_SUCCESS
    tree.close(fid)
    assert (tree_root / "pub" / name).stat().st_uid == NOBODY
    c.close()


# -- restrict anonymous -------------------------------------------------------------------------
def test_restrict_anonymous_1_refuses_the_listing_not_the_logon(start):
    server = start("restrict anonymous = 1")
    r = server.smbclient_list(user=None)
    assert "Anonymous login successful" in output(r), output(r)
    assert not any(line.split()[:1] == ["priv"] for line in r.stdout.splitlines()), r.stdout
    r = server.rpcclient("srvinfo", user=None)
    assert r.returncode != 0 and "ACCESS_DENIED" in output(r), output(r)
    c, s = anonymous(server)
    assert s.status == wire.STATUS_SUCCESS and c.tree_connect(s, "IPC$").status == wire.STATUS_SUCCESS
    c.close()
    r = server.smbclient_list(user=USER)
    assert r.returncode == 0 and "priv" in r.stdout, output(r)


def test_restrict_anonymous_2_keeps_anonymous_and_guests_out_of_ipc(start):
    """As Samba: the logon succeeds, IPC$ is no guest share any more (for a `map to guest =
    bad user` guest neither), a guest ok share stays reachable, a user is not concerned."""
    server = start("restrict anonymous = 2\nmap to guest = bad user", with_pub=True)
    c, s = anonymous(server)
    assert s.status == wire.STATUS_SUCCESS and s.flags & wire.SESSION_FLAG_IS_NULL
    assert c.tree_connect(s, "IPC$").status == wire.STATUS_ACCESS_DENIED
    assert c.tree_connect(s, "priv").status == wire.STATUS_ACCESS_DENIED
    assert c.tree_connect(s, "pub").status == wire.STATUS_SUCCESS
    c.close()
    r = server.smbclient("IPC$", "ls", user=f"stranger{TAG}", password="whatever")
    assert refused(r), output(r)
    r = server.smbclient("pub", "ls", user=f"stranger{TAG}", password="whatever")
    assert r.returncode == 0, output(r)
    r = server.smbclient_list(user=USER)
    assert r.returncode == 0 and "pub" in r.stdout, output(r)


# -- a user's session re-authenticated anonymously (smb2.session.reauth2-4) ----------------------
def reauth_anonymous(c, s):
    return forged_logon(c, "", lambda _challenge: (b"", b""), flags=V1_FLAGS | ANONYMOUS, session=s).last


def test_reauthenticated_anonymously_a_session_keeps_its_opens_and_acts_as_the_guest(default, tree_root):
    c = RawClient(default.port)
    assert c.negotiate((wire.SMB311,)).status == wire.STATUS_SUCCESS
    s = c.logon(USER, PASSWORD)
    tree = c.tree(s, "priv")
    held = tree.open("secret.txt", wire.GENERIC_READ)
    r = reauth_anonymous(c, s)
    assert r.status == wire.STATUS_SUCCESS, r
    # the first logon's keys go on signing (no IS_NULL: the session is not keyless)
    assert r.header.flags & wire.FLAGS_SIGNED and r.signature_ok is not False
    assert not s.flags & wire.SESSION_FLAG_IS_NULL
    # the open made as the user keeps the access it was granted (as smbd: reauth2)
    got = tree.request(wire.READ, read_body(held, 100))
    assert got.status == wire.STATUS_SUCCESS and got.raw.endswith(SECRET.encode()), got
    # anything new is the guest account's (nobody): the user's 0600 file stays shut
    assert tree.create("secret.txt", wire.GENERIC_READ).status == wire.STATUS_ACCESS_DENIED
    fid = tree.open("open.txt", wire.GENERIC_READ)
    tree.close(fid)
    assert tree.create("in-root.txt", wire.GENERIC_WRITE, wire.FILE_CREATE).status == wire.STATUS_ACCESS_DENIED
    assert not (tree_root / "priv" / "in-root.txt").exists()
    name = f"drop\\anon-{os.urandom(3).hex()}.txt"
    fid = tree.open(name, wire.GENERIC_WRITE, wire.FILE_CREATE)
    tree.close(fid)
    made = tree_root / "priv" / name.replace("\\", "/")
    assert made.stat().st_uid == NOBODY, "anonymous wrote as another account than the guest's"
    # and no new tree connect to a share without guest ok
    assert c.tree_connect(s, "priv").status == wire.STATUS_ACCESS_DENIED
    # back as the user, the user's rights are back
    ctx, s, r = c.begin_logon(USER, PASSWORD, session=s)
    while r.status == wire.STATUS_MORE_PROCESSING_REQUIRED:
        r = c.session_setup(s, ctx.step(c.security_buffer(r)))
    assert r.status == wire.STATUS_SUCCESS, r
    fid = tree.open("secret.txt", wire.GENERIC_READ)
    tree.close(fid)
    tree.close(held)
    c.close()


def test_reauthenticated_anonymously_a_session_loses_a_share_the_guest_may_not_use(default):
    """[only] admits the account alone (valid users): the guest account may not keep the tree
    connect there, so the re-authentication is refused and the session ends with its opens."""
    c = RawClient(default.port)
    assert c.negotiate((wire.SMB311,)).status == wire.STATUS_SUCCESS
    s = c.logon(USER, PASSWORD)
    tree = c.tree(s, "only")
    held = tree.open("secret.txt", wire.GENERIC_READ)
    assert reauth_anonymous(c, s).status == wire.STATUS_ACCESS_DENIED
    assert tree.request(wire.READ, read_body(held, 100)).status == wire.STATUS_USER_SESSION_DELETED
    c.close()
