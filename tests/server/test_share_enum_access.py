"""Share listings per caller, with real clients against a real server: `access based share
enum` (a share listed only to those who may connect to it: valid users, invalid users, guest
ok, hosts allow/deny), and the session's %-variables substituted in the comments that
NetShareEnum and NetShareGetInfo give (smbclient -L, rpcclient netshareenumall and
netsharegetinfo, as two users and anonymously)."""
from __future__ import annotations

import grp
import pwd
import shutil
import subprocess

import pytest
from smbconf_server import OTHER, OTHER_PASSWORD, smbconf  # noqa: F401

from servers import PASSWORD, USER

SHARES = {
    "open": "comment = for %U (%u) of %G at %I on %L, share %S",
    "team": "access based share enum = yes\nvalid users = " + OTHER + "\ncomment = team",
    "notme": f"access based share enum = yes\ninvalid users = {USER}\ncomment = not alice",
    "grouped": "access based share enum = yes\nvalid users = @" + OTHER + "\ncomment = by group",
    "fenced": "access based share enum = yes\nhosts deny = 127.0.0.1\ncomment = nobody from here",
    "plain": f"valid users = {OTHER}\ncomment = listed to all (no access based share enum)",
    "guests": "access based share enum = yes\nguest ok = yes\ncomment = guests too",
    "users": "access based share enum = yes\ncomment = users only",
    "mine": "access based share enum = yes\nvalid users = %U\ncomment = everyone's own",
}


def need(tool: str) -> None:
    if not shutil.which(tool):
        pytest.skip(f"{tool} is not installed")


def listed(server, *creds: str) -> dict[str, str]:
    """smbclient -L: share name -> comment."""
    need("smbclient")
    out = subprocess.run(["smbclient", "-L", "//127.0.0.1", "-p", str(server.port), *creds],
                         capture_output=True, text=True, timeout=60)
    rows = {}
    for line in out.stdout.splitlines():
        parts = line.strip().split(None, 2)
        if line.startswith("\t") and len(parts) >= 2 and parts[1] in ("Disk", "IPC"):
            rows[parts[0]] = parts[2] if len(parts) > 2 else ""
    return rows


def rpcclient(server, command: str, *creds: str) -> subprocess.CompletedProcess:
    need("rpcclient")
    return subprocess.run(["rpcclient", "-p", str(server.port), *creds, "-c", command, "127.0.0.1"],
                          capture_output=True, text=True, timeout=60)


def enumerated(server, *creds: str) -> list[str]:
    out = rpcclient(server, "netshareenumall", *creds)
    assert out.returncode == 0, out.stdout + out.stderr
    return [line.split(":", 1)[1].strip() for line in out.stdout.splitlines() if line.startswith("netname:")]


ALICE = ("-U", f"{USER}%{PASSWORD}")
DAEMON = ("-U", f"{OTHER}%{OTHER_PASSWORD}")
ANONYMOUS = ("-U%",)


@pytest.fixture
def server(smbconf):
    return smbconf("", SHARES, users=((OTHER, OTHER_PASSWORD),), accounts=True)


def test_access_based_share_enum_lists_what_each_user_may_connect_to(server):
    everyone = {"open", "plain", "guests", "users", "mine", "IPC$"}
    expected = {ALICE: everyone,
                DAEMON: everyone | {"team", "notme", "grouped"},
                ANONYMOUS: {"open", "plain", "guests", "IPC$"}}
    for creds, names in expected.items():
        assert set(listed(server, *creds)) == names, creds
        assert set(enumerated(server, *creds)) == names, creds
    # and what the listing promises holds: each listed share lets its user in, the others not
    for share in ("team", "notme", "grouped"):
        assert server.smbclient(share, "ls").returncode != 0
        assert server.smbclient(share, "ls", user=OTHER, password=OTHER_PASSWORD).returncode == 0
    assert server.smbclient("fenced", "ls").returncode != 0


def test_a_share_hidden_from_the_caller_is_not_described_either(server):
    out = rpcclient(server, "netsharegetinfo team", *ALICE)
    assert "WERR_INVALID_NAME" in out.stdout + out.stderr and "netname: team" not in out.stdout
    out = rpcclient(server, "netsharegetinfo team", *DAEMON)
    assert out.returncode == 0 and "netname: team" in out.stdout, out.stdout + out.stderr
    out = rpcclient(server, "netsharegetinfo fenced", *DAEMON)
    assert "WERR_INVALID_NAME" in out.stdout + out.stderr
    # without access based share enum, a share is described to anyone (as Samba)
    out = rpcclient(server, "netsharegetinfo plain", *ALICE)
    assert "netname: plain" in out.stdout, out.stdout + out.stderr


def test_comments_carry_the_callers_substitutions(server):
    def primary_group(name: str) -> str:
        try:
            return grp.getgrgid(pwd.getpwnam(name).pw_gid).gr_name
        except KeyError:
            return ""
    # as root alice is a Unix account of her own (with group alice); otherwise she has none
    # and %G is empty; daemon is a Unix user with a primary group
    want = {ALICE: f"for {USER} ({USER}) of {primary_group(USER)} at 127.0.0.1 on ",
            DAEMON: f"for {OTHER} ({OTHER}) of {primary_group(OTHER)} at 127.0.0.1 on "}
    for creds, start in want.items():
        comment = listed(server, *creds)["open"]
        assert comment.startswith(start) and comment.endswith(", share open"), comment
        assert "%" not in comment
        out = rpcclient(server, "netsharegetinfo open", *creds)
        assert f"\tremark:\t{comment}" in out.stdout, out.stdout + out.stderr
        out = rpcclient(server, "netshareenumall", *creds)
        assert f"\tremark:\t{comment}" in out.stdout, out.stdout + out.stderr


def test_a_substituted_user_list_decides_too(server):
    # valid users = %U: every user may connect to it, so every user sees it; guests may not
    # (guest ok is off), so anonymous does not
    assert "mine" in listed(server, *ALICE) and "mine" in listed(server, *DAEMON)
    assert "mine" not in listed(server, *ANONYMOUS)


def test_the_option_is_read(tmp_path):
    from smbring.server.config import load
    conf = tmp_path / "smb.conf"
    conf.write_text(f"[global]\naccess based share enum = yes\n[a]\npath = {tmp_path}\n"
                    f"[b]\npath = {tmp_path}\naccess based share enum = no\n")
    cfg = load(str(conf))
    assert cfg.shares["a"].access_based_share_enum and not cfg.shares["b"].access_based_share_enum
