"""User names in UPN form (`user@DOMAIN` in NTLM's user field, an empty domain: what
`smbclient -U user@DOMAIN` sends) against a real server, as a standalone Samba answers them
(checked against smbd 4.17: its `sam_ignoredomain` method looks the whole name up in the
passdb): a name the password file does not hold, whatever follows the `@` (the workgroup,
the NetBIOS name, a realm, another domain), so refused, or the guest under `map to guest =
bad user`; a `username map` line naming the UPN makes it that account's."""
from __future__ import annotations

import pytest
from smbconf_server import refused, smbconf  # noqa: F401

from servers import USER

SUFFIXES = ["WORKGROUP", "workgroup", "SMBRING", "example.test", "OTHER"]


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_a_upn_is_a_name_the_password_file_does_not_hold(smbconf, suffix):
    server = smbconf("map to guest = never")
    r = server.smbclient("share", "ls", user=f"{USER}@{suffix}")
    assert refused(r, "NT_STATUS_LOGON_FAILURE"), r.stdout + r.stderr
    assert server.smbclient("share", "ls").returncode == 0        # the plain name logs on


def test_a_upn_under_bad_user_is_the_guest_not_the_account(smbconf):
    server = smbconf("map to guest = bad user", {"share": "read only = no", "pub": "guest ok = yes"})
    r = server.smbclient("share", "ls", user=f"{USER}@WORKGROUP")
    assert refused(r, "NT_STATUS_ACCESS_DENIED"), r.stdout + r.stderr   # a guest: no guest ok
    assert server.smbclient("pub", "ls", user=f"{USER}@WORKGROUP").returncode == 0


def test_a_username_map_line_makes_a_upn_the_accounts(smbconf, tmp_path):
    usermap = tmp_path / "usermap"
    usermap.write_text(f"{USER} = {USER}@WORKGROUP\n")
    # (accounts: as root, no command-line username map of the test harness over this one)
    server = smbconf(f"map to guest = never\nusername map = {usermap}", accounts=True)
    r = server.smbclient("share", "ls", user=f"{USER}@WORKGROUP")
    assert r.returncode == 0, r.stdout + r.stderr
    r = server.smbclient("share", "ls", user=f"{USER}@WORKGROUP", password="wrong")
    assert refused(r, "NT_STATUS_LOGON_FAILURE"), r.stdout + r.stderr
    r = server.smbclient("share", "ls", user=f"{USER}@OTHER")        # not in the map
    assert refused(r, "NT_STATUS_LOGON_FAILURE"), r.stdout + r.stderr
