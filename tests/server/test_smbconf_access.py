"""smb.conf's who-may-connect options against a real server and real clients: hosts allow/deny
([global] at accept, per share at tree connect), valid/invalid users with Unix groups, read and
write lists, guests (guest ok, guest only, map to guest, restrict anonymous), max connections,
[homes] and substituted paths. Each check comes with a client trying to get around it."""
from __future__ import annotations

import socket
import time

import pytest
from smbconf_server import OTHER, OTHER_PASSWORD, refused, smbconf  # noqa: F401

from servers import PASSWORD, USER
from smbring.smb import wire


def logon(server, source=None, user=USER, password=PASSWORD):
    c = server.raw(source=source)
    assert c.negotiate((wire.SMB311,)).status == wire.STATUS_SUCCESS
    return c, c.logon(user, password)


# -- hosts allow / hosts deny -------------------------------------------------------------------
def test_global_hosts_deny_drops_the_connection_at_accept(smbconf):
    server = smbconf("hosts deny = 127.0.0.2")
    from raw import Disconnected
    with pytest.raises((ConnectionError, OSError, Disconnected)):
        c = server.raw(source="127.0.0.2")
        c.negotiate((wire.SMB311,))          # closed before a byte is read
    c, s = logon(server)                     # 127.0.0.1 is not in the list
    assert c.tree_connect(s, "share").status == wire.STATUS_SUCCESS
    assert "127.0.0.2" in server.log_text() and "hosts allow / hosts deny" in server.log_text()


@pytest.mark.parametrize("allow, deny, from_2, from_1", [
    ("127.0.0.0/8 EXCEPT 127.0.0.2", "", False, True),     # EXCEPT inside an allow list
    ("127.0.0.0/255.0.0.0", "ALL", True, True),            # allow wins over deny where both match
    ("10.0.0.0/8", "", False, True),                       # loopback 127.0.0.1 is always allowed
    ("127.0.0.2", "ALL", True, False),                     # unless a deny list names it
    ("", "127.", False, False),                            # an address prefix
    ("127.0.0.*", "127.0.0.2", True, True),                # a wildcard
])
def test_hosts_lists_as_samba_reads_them(smbconf, allow, deny, from_2, from_1):
    options = (f"hosts allow = {allow}\n" if allow else "") + (f"hosts deny = {deny}\n" if deny else "")
    server = smbconf("", {"share": "read only = no\n" + options, "open": "read only = no"})
    for source, expected in (("127.0.0.2", from_2), ("127.0.0.1", from_1)):
        c, s = logon(server, source=source)
        r = c.tree_connect(s, "share")
        assert (r.status == wire.STATUS_SUCCESS) is expected, (source, hex(r.status))
        if not expected:
            assert r.status == wire.STATUS_ACCESS_DENIED
        # the same session still reaches a share without a list: the check is per share
        assert c.tree_connect(s, "open").status == wire.STATUS_SUCCESS


def test_share_hosts_deny_with_smbclient(smbconf):
    server = smbconf("", {"share": "read only = no\nhosts deny = 127.0.0.1"})
    r = server.smbclient("share", "ls")
    assert refused(r), r.stdout + r.stderr


def test_hostnames_in_hosts_lists_are_refused_at_start(tmp_path):
    from smbring.server.config import ConfigError, load
    for value in ("myhost", ".example.com", "@netgroup", "host*.example.com", "10.0.0.0/33"):
        conf = tmp_path / "smb.conf"
        conf.write_text(f"[global]\nhosts allow = {value}\n[s]\npath = {tmp_path}\n")
        with pytest.raises(ConfigError, match="hosts allow"):
            load(str(conf))


# -- user lists ---------------------------------------------------------------------------------
def test_valid_and_invalid_users_with_unix_groups(smbconf):
    # daemon is a Unix user whose primary group is daemon; alice is no Unix user at all
    server = smbconf("", {"grp": "valid users = @daemon", "plus": "valid users = +daemon",
                          "notgrp": "invalid users = @daemon", "both": f"valid users = {USER}\n"
                                                                      f"invalid users = {USER}",
                          "named": f"valid users = {OTHER.upper()}, nobody"},
                     users=((OTHER, OTHER_PASSWORD),))
    expected = {("grp", USER): False, ("grp", OTHER): True, ("plus", USER): False,
                ("plus", OTHER): True, ("notgrp", USER): True, ("notgrp", OTHER): False,
                ("both", USER): False, ("named", OTHER): True, ("named", USER): False}
    for (share, user), ok in expected.items():
        password = PASSWORD if user == USER else OTHER_PASSWORD
        r = server.smbclient(share, "ls", user=user, password=password)
        assert (r.returncode == 0) is ok, (share, user, r.stdout + r.stderr)
        if not ok:
            assert refused(r)
    # another spelling of a refused user name (case, a domain) is the same user
    for spelled in (USER.upper(), f"WORKGROUP\\{USER}", f"OTHERDOM\\{USER.capitalize()}"):
        r = server.smbclient("both", "ls", user=spelled)
        assert refused(r), (spelled, r.stdout + r.stderr)


def test_read_list_and_write_list(smbconf, tmp_path):
    src = tmp_path / "src.txt"
    src.write_text("data")
    server = smbconf("", {"rl": f"read only = no\nread list = {USER}",
                          "wl": f"read only = yes\nwrite list = {USER}",
                          "both": f"read only = no\nread list = {USER}\nwrite list = @nogroup, {USER}",
                          "grp": "read only = yes\nwrite list = @daemon"},
                     users=((OTHER, OTHER_PASSWORD),), accounts=True)
    r = server.smbclient("rl", f"put {src} new.txt")
    assert refused(r) and not (tmp_path / "rl" / "new.txt").exists()
    r = server.smbclient("rl", "mkdir d")
    assert refused(r) and not (tmp_path / "rl" / "d").exists()
    r = server.smbclient("wl", f"put {src} new.txt")
    assert r.returncode == 0 and (tmp_path / "wl" / "new.txt").read_text() == "data"
    r = server.smbclient("both", f"put {src} new.txt")        # write list wins (as in Samba)
    assert r.returncode == 0, r.stdout + r.stderr
    r = server.smbclient("grp", f"put {src} new.txt")
    assert refused(r)
    r = server.smbclient("grp", f"put {src} new.txt", user=OTHER, password=OTHER_PASSWORD)
    assert r.returncode == 0, r.stdout + r.stderr


# -- guests ------------------------------------------------------------------------------------
def test_map_to_guest(smbconf, tmp_path):
    never = smbconf("", {"pub": "guest ok = yes"})
    r = never.smbclient("pub", "ls", user="stranger", password="x")
    assert refused(r, "NT_STATUS_LOGON_FAILURE")          # Never (the default): refused
    assert never.smbclient("pub", "ls", user=None).returncode == 0   # anonymous still reaches it
    bad_user = smbconf("map to guest = bad user", {"pub": "guest ok = yes", "priv": ""})
    assert bad_user.smbclient("pub", "ls", user="stranger", password="x").returncode == 0
    assert refused(bad_user.smbclient("priv", "ls", user="stranger", password="x"))
    # a known user's wrong password is never a guest
    assert refused(bad_user.smbclient("pub", "ls", password="wrong"), "NT_STATUS_LOGON_FAILURE")


def test_guest_only_makes_everyone_the_guest(smbconf, tmp_path):
    server = smbconf("", {"g": "guest ok = yes\nguest only = yes\nread only = no\nvalid users = nobody",
                          "u": f"guest ok = yes\nread only = no\nvalid users = {USER}"}, accounts=True)
    # alice connects, but as the guest account: `valid users = nobody` lets her in
    assert server.smbclient("g", "ls").returncode == 0
    # without guest only she is herself, and a guest is nobody
    assert server.smbclient("u", "ls").returncode == 0
    assert refused(server.smbclient("u", "ls", user=None))


def test_restrict_anonymous_2_closes_ipc_to_anonymous(smbconf):
    server = smbconf("restrict anonymous = 2", {"pub": "guest ok = yes"})
    from logon import ANONYMOUS, V1_FLAGS, forged_logon
    c = server.raw()
    c.negotiate((wire.SMB311,))
    s = forged_logon(c, "", lambda _challenge: (b"", b""), flags=V1_FLAGS | ANONYMOUS)
    assert s.status == wire.STATUS_SUCCESS and s.flags & wire.SESSION_FLAG_IS_NULL
    assert c.tree_connect(s, "IPC$").status == wire.STATUS_ACCESS_DENIED
    assert c.tree_connect(s, "pub").status == wire.STATUS_SUCCESS    # guest ok still is (as Samba)
    c, s = logon(server)
    assert c.tree_connect(s, "IPC$").status == wire.STATUS_SUCCESS


# -- max connections -------------------------------------------------------------------------------
def test_max_connections_counts_tree_connects_of_all_clients(smbconf):
    server = smbconf("", {"share": "max connections = 2", "other": ""})
    first, s1 = logon(server)
    second, s2 = logon(server)
    third, s3 = logon(server)
    assert first.tree_connect(s1, "share").status == wire.STATUS_SUCCESS
    t2 = second.tree_connect(s2, "share")
    assert t2.status == wire.STATUS_SUCCESS
    assert third.tree_connect(s3, "share").status == wire.STATUS_INSUFFICIENT_RESOURCES
    # the same session asking again counts again (as Samba counts tree connects)
    assert first.tree_connect(s1, "share").status == wire.STATUS_INSUFFICIENT_RESOURCES
    assert third.tree_connect(s3, "other").status == wire.STATUS_SUCCESS
    # a tree disconnect, a logoff and a dropped connection each give their place back
    second.request(wire.TREE_DISCONNECT, b"\x04\x00\x00\x00", session=s2, tree_id=t2.header.tree_id)
    assert third.tree_connect(s3, "share").status == wire.STATUS_SUCCESS
    assert first.tree_connect(s1, "share").status == wire.STATUS_INSUFFICIENT_RESOURCES
    third.close()
    deadline = time.monotonic() + 5
    while first.tree_connect(s1, "share").status != wire.STATUS_SUCCESS:
        assert time.monotonic() < deadline, "the closed connection's tree still counts"
        time.sleep(0.05)


# -- [homes] and substitutions -------------------------------------------------------------------
def test_homes_is_each_users_own(smbconf, tmp_path):
    """As smbd: "homes" and the user's own name reach the user's home; another user's name
    (a Unix account with a home directory) is that user's home, which `valid users = %S`
    keeps to its owner: STATUS_ACCESS_DENIED, for a guest too; a name that is no account's
    is no share."""
    homes = tmp_path / "homes"
    for who in (USER, OTHER):
        (homes / who).mkdir(parents=True)
        (homes / who / f"{who}.txt").write_text(who)
    server = smbconf("map to guest = bad user",
                     {"homes": f"path = {homes}/%S\nread only = no\nvalid users = %S\nguest ok = yes"},
                     users=((OTHER, OTHER_PASSWORD),), accounts=True)
    for name in (USER, USER.upper(), "homes"):
        r = server.smbclient(name, "ls")
        assert r.returncode == 0 and f"{USER}.txt" in r.stdout, (name, r.stdout + r.stderr)
    r = server.smbclient(OTHER, "ls")                  # another user's home: not for USER
    assert refused(r, "NT_STATUS_ACCESS_DENIED") and f"{OTHER}.txt" not in r.stdout, r.stdout + r.stderr
    r = server.smbclient(OTHER, "ls", user=None)       # nor for a guest, guest ok or not
    assert refused(r, "NT_STATUS_ACCESS_DENIED"), r.stdout + r.stderr
    r = server.smbclient("homes", "ls", user=None)     # a guest has no home
    assert refused(r, "NT_STATUS_BAD_NETWORK_NAME"), r.stdout + r.stderr
    r = server.smbclient("no-such-account", "ls")
    assert refused(r, "NT_STATUS_BAD_NETWORK_NAME"), r.stdout + r.stderr
    r = server.smbclient(USER, "ls", user=OTHER, password=OTHER_PASSWORD)   # USER's, by OTHER
    assert refused(r, "NT_STATUS_ACCESS_DENIED"), r.stdout + r.stderr


def test_homes_follows_the_account_the_password_proved_not_the_name_typed(smbconf, tmp_path):
    """The client's spelling of its name picks no home: an alias of the username map, or
    another case of the name, reaches the home of the account whose password it gave, as
    smbd registers the home of the session's Unix account, and maps a share name that is an
    alias. Without `valid users`, another user's home is reachable by name, as in smbd (the
    session then acts there as its own account)."""
    homes = tmp_path / "homes"
    alias = "homealias"
    for who in (USER, alias, OTHER):
        (homes / who).mkdir(parents=True)
        (homes / who / f"{who}.txt").write_text(who)
    usermap = tmp_path / "usermap"
    usermap.write_text(f"{USER} = {alias}\n")
    server = smbconf(f"map to guest = never\nusername map = {usermap}",
                     {"homes": f"path = {homes}/%S\nread only = yes"},
                     users=((OTHER, OTHER_PASSWORD),), accounts=True)
    for typed, share in ((alias, alias), (alias, USER), (alias, "homes"), (USER.upper(), USER),
                         (USER.capitalize(), "homes")):
        r = server.smbclient(share, "ls", user=typed)
        assert r.returncode == 0, (typed, share, r.stdout + r.stderr)
        assert f"{USER}.txt" in r.stdout and f"{alias}.txt" not in r.stdout, (typed, share, r.stdout)
    r = server.smbclient(OTHER, "ls", user=alias)
    assert r.returncode == 0 and f"{OTHER}.txt" in r.stdout, r.stdout + r.stderr


def test_a_substituted_path_stays_where_it_was_meant(smbconf, tmp_path):
    base = tmp_path / "per-user"
    (base / USER).mkdir(parents=True)
    (base / USER / "mine.txt").write_text("x")
    (tmp_path / "secret.txt").write_text("outside")
    server = smbconf("map to guest = bad user", {"u": f"path = {base}/%U\nguest ok = yes"})
    r = server.smbclient("u", "ls")
    assert "mine.txt" in r.stdout, r.stdout + r.stderr
    # a guest naming itself "..": the path would be tmp_path; it becomes "_" and does not exist
    for name in ("..", "../..", "a/../..", "."):
        r = server.smbclient("u", "ls", user=name, password="x")
        assert "secret.txt" not in r.stdout and refused(r, "NT_STATUS_BAD_NETWORK_NAME"), (name, r.stdout)


def test_connections_from_a_second_loopback_address_are_real():
    """(The hosts tests rely on Linux routing 127.0.0.2 to loopback.)"""
    with socket.create_server(("127.0.0.1", 0)) as srv:
        c = socket.create_connection(srv.getsockname(), source_address=("127.0.0.2", 0))
        conn, peer = srv.accept()
        assert peer[0] == "127.0.0.2"
        conn.close()
        c.close()
