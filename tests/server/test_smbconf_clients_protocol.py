"""The server's protocol options with real clients and a real Unix account: `server signing =
mandatory` (a request without a signature is refused, whatever the client offered),
`server min protocol` and `server max protocol` (smbclient made to offer dialects outside the
range is refused NT_STATUS_NOT_SUPPORTED), and `restrict anonymous = 2` (an anonymous logon
reaches no IPC$: neither smbclient -L nor rpcclient).

Real clients honour a server's signing requirement of their own accord (smbclient and
smbprotocol sign even when told not to), so the client that does not sign is a raw one: it
logs on with NTLMv2 as the account, then sends requests without a signature."""
from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest
from smbconf_fixtures import TAG, need_root_and_samba, output, refused, serve, unix_accounts

from smbring.smb import wire

need_root_and_samba()
sys.path.insert(0, str(Path(__file__).parent.parent / "security"))     # raw.py

PASSWORD = "Protocol-pw1"
USER = f"sclp{TAG}"


@pytest.fixture(scope="module")
def account():
    with unix_accounts({USER: ()}) as made:
        yield made[USER]


@pytest.fixture
def start(account, tmp_path):
    """start(global options) -> a server with [s] (the account's writable directory) and
    [pub] (guest ok)."""
    served = []

    def start(global_options: str):
        root = tmp_path / f"s{len(served)}"
        root.mkdir()
        os.chown(root, account.uid, account.gid)
        shares = {"s": f"path = {root}\nread only = no", "pub": f"path = {root}\nguest ok = yes"}
        context = serve(tmp_path / f"run{len(served)}", global_options, shares, {USER: PASSWORD})
        served.append(context)
        return context.__enter__()

    yield start
    for context in served:
        context.__exit__(None, None, None)


# -- server signing -------------------------------------------------------------------------
@pytest.mark.parametrize("signing", ["mandatory", "auto"])
def test_server_signing_mandatory_refuses_unsigned_requests(start, signing):
    from raw import RawClient
    server = start(f"server signing = {signing}")
    mandatory = signing == "mandatory"
    # SMB 3.0.2: a dialect where an unsigned TREE_CONNECT is not refused for its own sake
    with RawClient(server.port) as client:
        r = client.negotiate((wire.SMB210, wire.SMB302), security_mode=wire.SECURITY_SIGNING_ENABLED)
        assert r.status == wire.STATUS_SUCCESS
        assert bool(client.server["security_mode"] & wire.SECURITY_SIGNING_REQUIRED) == mandatory
        session = client.logon(USER, PASSWORD)
        # unsigned: refused where signing is mandatory, served where it is not
        r = client.tree_connect(session, "s", sign=False)
        assert r.status == (wire.STATUS_ACCESS_DENIED if mandatory else wire.STATUS_SUCCESS), r
        # signed, then a request on that tree without a signature
        tree = client.tree(session, "s")
        r = tree.create("", wire.GENERIC_READ, wire.FILE_OPEN, sign=False)
        assert r.status == (wire.STATUS_ACCESS_DENIED if mandatory else wire.STATUS_SUCCESS), r
        r = tree.create("", wire.GENERIC_READ, wire.FILE_OPEN)           # signed: served
        assert r.status == wire.STATUS_SUCCESS, r


@pytest.mark.parametrize("signing", ["mandatory", "auto"])
def test_real_clients_told_not_to_sign_sign_all_the_same(start, signing):
    """smbclient --client-protection=off and smbprotocol require_signing=False: the server's
    requirement wins, and the session signs."""
    pytest.importorskip("smbprotocol")
    from smbprotocol.connection import Connection
    from smbprotocol.session import Session
    server = start(f"server signing = {signing}")
    r = server.smbclient("s", "ls", "--client-protection=off", user=USER)
    assert r.returncode == 0 and "NT_STATUS" not in output(r), output(r)
    connection = Connection(uuid.uuid4(), server.host, server.port, require_signing=False)
    connection.connect()
    try:
        session = Session(connection, USER, PASSWORD, require_encryption=False, auth_protocol="ntlm")
        session.connect()
        assert session.signing_required == (signing == "mandatory")
    finally:
        connection.disconnect()


# -- server min protocol / server max protocol ------------------------------------------------
def test_min_and_max_protocol_bound_what_smbclient_gets(start):
    server = start("server min protocol = SMB3_00\nserver max protocol = SMB3_02")
    below = ("--option=client max protocol=SMB2_10",)
    above = ("--option=client min protocol=SMB3_11",)
    for options in (below, above, ("-m", "SMB2_02")):
        r = server.smbclient("s", "ls", *options, user=USER)
        assert r.returncode != 0 and refused(r, "NT_STATUS_NOT_SUPPORTED"), (options, output(r))
    # exactly each end of the range, and a client offering everything: served, at most 3.0.2
    for low, high in (("SMB3_00", "SMB3_00"), ("SMB3_02", "SMB3_02"), ("SMB2_02", "SMB3_11")):
        r = server.smbclient("s", "ls", f"--option=client min protocol={low}",
                             f"--option=client max protocol={high}", user=USER)
        assert r.returncode == 0 and "NT_STATUS" not in output(r), (low, high, output(r))
    log = server.log_text()
    assert "negotiated dialect 0x300" in log and "negotiated dialect 0x302" in log
    assert "negotiated dialect 0x311" not in log and "negotiated dialect 0x210" not in log


def test_max_protocol_smb2_keeps_smbclient_from_smb3(start):
    server = start("server max protocol = SMB2")
    r = server.smbclient("s", "ls", "--option=client min protocol=SMB3", user=USER)
    assert r.returncode != 0 and refused(r, "NT_STATUS_NOT_SUPPORTED"), output(r)
    r = server.smbclient("s", "ls", user=USER)
    assert r.returncode == 0, output(r)
    assert "negotiated dialect 0x210" in server.log_text()


# -- restrict anonymous = 2 -------------------------------------------------------------------
@pytest.mark.parametrize("restrict", [2, 0])
def test_restrict_anonymous_2_keeps_anonymous_out_of_ipc(start, restrict):
    """Guests are allowed here ([pub] is guest ok), so an anonymous logon succeeds; with
    restrict anonymous = 2 it reaches no IPC$ (smbclient -L, rpcclient), as Samba's; the
    account's own logon is not concerned, nor is [pub] (Samba: guest ok undoes the setting
    for that share)."""
    server = start(f"restrict anonymous = {restrict}")
    attempts = {"smbclient -L": server.smbclient_list(user=None),
                "smbclient //IPC$": server.smbclient("IPC$", "ls", user=None),
                "rpcclient srvinfo": server.rpcclient("srvinfo", user=None),
                "rpcclient netshareenumall": server.rpcclient("netshareenumall", user=None)}
    for what, r in attempts.items():
        if restrict == 2:
            assert r.returncode != 0 and refused(r), (what, output(r))
            assert "pub" not in r.stdout and "IPC Service" not in r.stdout, (what, r.stdout)
        else:
            assert r.returncode == 0 or what == "smbclient //IPC$", (what, output(r))
            assert not refused(r), (what, output(r))
    r = server.smbclient_list(user=USER)
    assert r.returncode == 0 and "pub" in r.stdout, output(r)
    r = server.rpcclient("netshareenumall", user=USER)
    assert r.returncode == 0 and "netname: pub" in r.stdout, output(r)
    r = server.smbclient("pub", "ls", user=None)
    assert r.returncode == 0, output(r)
