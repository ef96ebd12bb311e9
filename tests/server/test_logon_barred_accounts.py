"""Accounts the password file holds but bars from logging on (flags D, L, N, trust accounts)
against a real server and smbclient, under `map to guest = bad user` with a guest share: each
is refused with the status Samba's check_sam_security gives it, never made a guest (Samba maps
to the guest only names its passdb does not hold), and a wrong password says nothing more."""
from __future__ import annotations

import subprocess
import sys

import pytest
from smbconf_server import refused, smbconf  # noqa: F401

from smbring.smb.ntlm_crypto import nt_hash

PW = "Barred-pw1"


def add(server, name: str, password: str = PW) -> None:
    subprocess.run([sys.executable, "-m", "smbring.cli", "user", "add", name, "--password-stdin"],
                   input=password + "\n", text=True, check=True, env=server.env, capture_output=True)


def set_flags(server, name: str, flags: str) -> None:
    """The account's flags written into its line by hand, as Samba's pdbedit -c would."""
    path = server.env["SMBRING_PASSDB"]
    lines = open(path).read().splitlines()
    for i, line in enumerate(lines):
        if line.startswith(name + ":"):
            head, _, rest = line.partition("[")
            lines[i] = f"{head}[{flags:<11}]{rest.partition(']')[2]}"
    open(path, "w").write("\n".join(lines) + "\n")


@pytest.fixture
def barred(smbconf):
    def start(map_to_guest: str):
        server = smbconf(f"map to guest = {map_to_guest}", {"share": "guest ok = yes"})
        for name in ("dis", "lock", "both", "nopw"):
            add(server, name)
        set_flags(server, "dis", "DU")
        set_flags(server, "lock", "UL")
        set_flags(server, "both", "DUL")
        with open(server.env["SMBRING_PASSDB"], "a") as f:     # a trust account, with a password
            f.write(f"ws1$:1003:{'X' * 32}:{nt_hash(PW).hex().upper()}:[W          ]:LCT-00000000:\n")
        path = server.env["SMBRING_PASSDB"]     # an account without a password (smbpasswd -n)
        text = open(path).read()
        line = next(x for x in text.splitlines() if x.startswith("nopw:"))
        open(path, "w").write(text.replace(line, "nopw:1004:" + "NO PASSWORD" + "X" * 21 + ":"
                                           + "NO PASSWORD" + "X" * 21 + ":[NU         ]:LCT-00000000:"))
        return server
    return start


# (user, password) -> what the logon answers; the same under `bad user` and `never`
CASES = [
    ("dis", PW, "NT_STATUS_ACCOUNT_DISABLED"),
    ("dis", "wrong", "NT_STATUS_LOGON_FAILURE"),        # no hint that the account exists
    ("lock", PW, "NT_STATUS_ACCOUNT_LOCKED_OUT"),
    ("lock", "wrong", "NT_STATUS_ACCOUNT_LOCKED_OUT"),  # Samba checks the lock first
    ("both", PW, "NT_STATUS_ACCOUNT_LOCKED_OUT"),
    ("ws1$", PW, "NT_STATUS_NOLOGON_WORKSTATION_TRUST_ACCOUNT"),
    ("ws1$", "wrong", "NT_STATUS_LOGON_FAILURE"),
    ("nopw", "", "NT_STATUS_LOGON_FAILURE"),
    ("nopw", "anything", "NT_STATUS_LOGON_FAILURE"),
]


@pytest.mark.parametrize("map_to_guest", ["bad user", "never"])
def test_a_barred_account_is_refused_with_its_status_and_never_becomes_a_guest(barred, map_to_guest):
    server = barred(map_to_guest)
    for name, password, status in CASES:
        r = server.smbclient("share", "ls", user=name, password=password)
        assert r.returncode != 0 and refused(r, status), (name, password, r.stdout + r.stderr)
        assert "Anonymous login successful" not in r.stdout + r.stderr
    r = server.smbclient("share", "ls", user="nosuchuser", password="x")
    if map_to_guest == "bad user":     # an unknown name is still the guest's (the control)
        assert r.returncode == 0, r.stdout + r.stderr
    else:
        assert refused(r, "NT_STATUS_LOGON_FAILURE"), r.stdout + r.stderr
    audit = server.log_text()
    assert "logon accepted: guest (user dis)" not in audit and "logon accepted: guest (user lock)" not in audit
    assert "'dis': disabled (the password was right)" in audit
