"""The pure rules under the smb.conf options: hosts lists as Samba's lib/util/access.c applies
them (the examples of smb.conf(5)), substitutions that cannot escape, user lists, and the
name rules (veto, hide; hide unreadable asks the session's account's answer)."""
from __future__ import annotations

import os
import stat

import pytest

from smbring.smb import hosts, share_access
from smbring.smb.share_access import NameRules
from smbring.smb.state import Share


@pytest.mark.parametrize("allow, deny, address, admitted", [
    ("150.203. EXCEPT 150.203.6.66", "", "150.203.1.1", True),          # smb.conf(5), example 1
    ("150.203. EXCEPT 150.203.6.66", "", "150.203.6.66", False),
    ("150.203.15.0/255.255.255.0", "", "150.203.15.7", True),          # example 2
    ("150.203.15.0/255.255.255.0", "", "150.203.16.7", False),
    ("10.0.0.0/8", "", "127.0.0.1", True),          # 127.0.0.1: allowed unless denied by name
    ("", "127.0.0.1", "127.0.0.1", False),
    ("127.0.0.1", "ALL", "127.0.0.1", True),
    ("", "ALL", "127.0.0.1", False),
    ("", "ALL", "127.0.0.2", False),
    ("ALL EXCEPT 10.", "", "10.1.1.1", False),
    ("EXCEPT 10.", "", "11.1.1.1", False),           # nothing before EXCEPT: nothing matches
    ("fe80::/64", "", "fe80::1", True),
    ("fe80::/64", "", "fe81::1", False),
    ("10.0.0.0/8", "", "::ffff:10.1.2.3", True),      # an IPv4 client on an IPv6 socket
    ("", "10.", "::ffff:10.1.2.3", False),
    ("LOCAL", "", "fe80::2", True),                   # no dot in the name (the address here)
    ("LOCAL", "", "10.0.0.1", False),
    ("10.0.0.?", "", "10.0.0.5", True),
    ("10.0.0.?", "", "10.0.0.50", False),
    ("10.1.1.1", "10.", "10.1.1.1", True),            # both lists: allow wins
    ("10.1.1.1", "10.", "10.1.1.2", False),
    ("10.1.1.1", "10.", "11.0.0.1", True),            # in neither: admitted
    ("010.1.1.1", "", "10.1.1.1", False),             # not an address Python reads: no match
])
def test_hosts_lists(allow, deny, address, admitted):
    parse = lambda text: hosts.parse_list(text) if text else ()    # noqa: E731
    try:
        allow_list = parse(allow)
    except hosts.HostsError:
        assert not admitted
        return
    assert hosts.allowed(allow_list, parse(deny), address) is admitted


def test_substitution_keeps_values_from_the_client_inside_their_directory():
    share = Share(name="u", path="/srv/%U/%m", valid_users=["%S", "@staff"], comment="%U on %L")
    values = share_access.session_values(user="nobody", asked_as="../../etc/x y", domain="D",
                                         share="u", client_address="::1", server_name="SRV",
                                         dialect="SMB3_11", accounts=share_access.NoAccounts())
    resolved = share_access.resolve(share, values)
    assert resolved.path == "/srv/.._.._etc_x_y/__1"
    assert ".." not in resolved.path.split("/")
    assert resolved.valid_users == ["u", "@staff"] and resolved.comment == ".._.._etc_x_y on SRV"
    for bad in ("..", ".", "...", ""):
        assert share_access.safe(bad) == "_"
    # an administrator's own path that climbs is refused at tree connect
    assert share_access.resolve(Share(name="x", path="/srv/%S/../etc"), dict(values, S="a")) is \
        share_access.BAD_VALUE


def test_user_lists():
    class Groups(share_access.NoAccounts):
        def groups(self, user):
            return frozenset({"staff"}) if user == "alice" else frozenset()

    tokens = share_access.split_list('bob, "john smith" +staff')
    assert tokens == ["bob", "john smith", "+staff"]
    assert share_access.in_list(tokens, "ALICE", Groups())
    assert share_access.in_list(tokens, "WORKGROUP\\Bob", Groups())
    assert share_access.in_list(tokens, "john smith", Groups())
    assert not share_access.in_list(tokens, "carol", Groups())
    assert not share_access.in_list(["@staff"], "carol", Groups())


def rules(**options) -> NameRules:
    return NameRules(**options)


def test_veto_and_hide_patterns():
    r = NameRules.of(Share(name="s", path="/", veto_files=share_access.split_names("/*.tmp/a?c/Private/"),
                           hide_files=share_access.split_names("/*.bak/")))
    assert r.vetoed("X.TMP") and r.vetoed("abc") and r.vetoed("PRIVATE") and r.vetoed(".tmp")
    assert not r.vetoed("abcd") and not r.vetoed("x.tmp2") and not r.vetoed("private2")
    assert r.vetoed_path(["dir", "private", "f"]) == 1 and r.vetoed_path(["a", "b"]) is None
    assert r.hidden(".profile") and r.hidden("old.BAK") and not r.hidden("plain")
    assert not r.hidden(".") and not r.hidden("..")
    # special characters in a pattern are literal, not regular expressions
    r = NameRules.of(Share(name="s", path="/", veto_files=["a+b", "[x]"]))
    assert r.vetoed("a+b") and r.vetoed("[X]") and not r.vetoed("aab") and not r.vetoed("x")


def st(mode, uid=1000, gid=1000, mtime=0.0):
    return os.stat_result((mode, 1, 1, 1, uid, gid, 0, 0, int(mtime), 0))


def test_hide_unreadable_and_unwriteable_ask_the_sessions_account():
    asked = []

    def may(allowed):
        """The session's account's answer: it may do what `allowed` holds."""
        def check(mode):
            asked.append(mode)
            return mode & allowed == mode
        return check
    r = NameRules(hide_unreadable=True, hide_unwriteable=True)
    assert not r.unlisted(st(stat.S_IFREG | 0o600), may(os.R_OK | os.W_OK))
    assert r.unlisted(st(stat.S_IFREG | 0o666), may(os.W_OK))       # its account may not read it
    assert r.unlisted(st(stat.S_IFREG | 0o666), may(os.R_OK))       # nor write this one
    assert not r.unlisted(st(stat.S_IFDIR | 0o555), may(os.R_OK))   # directories are never unwriteable
    assert r.unlisted(st(stat.S_IFDIR | 0o700), may(0))
    assert r.unlisted(st(stat.S_IFLNK | 0o777), may(os.R_OK | os.W_OK))   # a link leading out
    assert asked == [os.R_OK | os.W_OK] * 3 + [os.R_OK] * 2          # one question per entry
    assert not NameRules(hide_unreadable=True).unlisted(st(stat.S_IFREG), may(os.R_OK))
    asked.clear()
    assert not NameRules(hide_dot_files=True).unlisted(st(stat.S_IFREG), may(0))
    assert asked == []                                                # not asked when both are off
    assert NameRules(hide_special_files=True).unlisted(st(stat.S_IFIFO | 0o666), may(0))
    assert NameRules(hide_new_files_timeout=60).unlisted(st(stat.S_IFREG | 0o644, mtime=2e9), may(0))
