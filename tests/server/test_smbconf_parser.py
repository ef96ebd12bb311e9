"""smb.conf's syntax and options as smbring reads them, against Samba's own reading as the
oracle: python3-samba's LoadParm (the system python's; it parses exactly as testparm does).
The oracle tests skip where Samba's python module is absent."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from smbring.server import config
from smbring.server.config import ConfigError, load
from smbring.smb import wire
from smbring.smb.policy import PROTOCOLS

ORACLE = r"""
import json, sys
import samba.param as p
lp = p.LoadParm()
lp.load(sys.argv[1])
out = {"services": lp.services(), "global": {}, "shares": {}}
for name in json.loads(sys.argv[2]):
    out["global"][name] = lp.get(name)
for share in lp.services():
    out["shares"][share] = {name: lp.get(name, share) for name in json.loads(sys.argv[3])}
print(json.dumps(out))
"""
GLOBAL = ["server min protocol", "server max protocol", "server signing", "server smb encrypt",
          "map to guest", "restrict anonymous", "guest account"]
SHARE = ["path", "comment", "read only", "guest ok", "guest only", "browseable", "valid users",
         "invalid users", "write list", "hosts allow", "hosts deny", "create mask", "directory mask",
         "force create mode", "veto files", "hide files", "hide dot files", "max connections",
         "server smb encrypt", "available", "printable"]


def samba(path) -> dict:
    if not os.path.exists("/usr/bin/python3"):
        pytest.skip("no system python")
    r = subprocess.run(["/usr/bin/python3", "-c", ORACLE, str(path), json.dumps(GLOBAL), json.dumps(SHARE)],
                       capture_output=True, text=True, timeout=60)
    if "No module named" in r.stderr:
        pytest.skip("python3-samba is not installed")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def ours(share) -> dict:
    """Our share in LoadParm's terms."""
    veto = "".join(f"/{n}" for n in share.veto_files) + "/" if share.veto_files else ""
    hide = "".join(f"/{n}" for n in share.hide_files) + "/" if share.hide_files else ""
    return {"path": share.path, "comment": share.comment, "read only": share.read_only,
            "guest ok": share.guest_ok, "guest only": share.guest_only, "browseable": share.browseable,
            "valid users": share.valid_users, "invalid users": share.invalid_users,
            "write list": share.write_list, "hosts allow": list(share.hosts_allow),
            "hosts deny": list(share.hosts_deny), "create mask": share.create_mask,
            "directory mask": share.directory_mask, "force create mode": share.force_create_mode,
            "veto files": veto, "hide files": hide, "hide dot files": share.hide_dot_files,
            "max connections": share.max_connections,
            "server smb encrypt": "required" if share.encrypt else "desired" if share.encrypt_desired else None}


def compare(conf_path, skipped=()):
    """Every share Samba serves, as Samba reads it, and every [global] option we honour."""
    theirs = samba(conf_path)
    cfg = load(str(conf_path))
    served = {s for s in theirs["services"] if theirs["shares"][s]["available"]
              and not theirs["shares"][s]["printable"]}
    assert {s.lower() for s in cfg.shares} == {s.lower() for s in served} - set(skipped)
    by_lower = {s.lower(): cfg.shares[s] for s in cfg.shares}
    for name in served - set(skipped):
        mine, want = ours(by_lower[name.lower()]), theirs["shares"][name]
        for option in SHARE:
            if option in ("available", "printable"):
                continue
            expected = want[option]
            if option == "server smb encrypt":
                expected = expected if expected in ("required", "desired") else None
            if option in ("path",) and name.lower() == "homes":
                continue
            assert mine[option] == expected, (name, option, mine[option], expected)
    g = theirs["global"]
    policy = cfg.policy
    assert policy.min_dialect == PROTOCOLS[g["server min protocol"].lower()]
    assert policy.max_dialect == PROTOCOLS[g["server max protocol"].lower()]
    assert cfg.signing_required == (g["server signing"] == "required")
    assert policy.encryption == {"default": "if_required"}.get(g["server smb encrypt"], g["server smb encrypt"])
    assert policy.map_to_guest == g["map to guest"].lower()
    assert policy.restrict_anonymous == g["restrict anonymous"]
    assert policy.guest_account == g["guest account"]
    return cfg


def test_syntax_as_samba_reads_it(tmp_path):
    inc = tmp_path / "inc.conf"
    inc.write_text("[included]\npath = /tmp\n comment = from the include\n[Data]\nguest ok = yes\n")
    conf = tmp_path / "smb.conf"
    conf.write_text(
        "; options before any section are [global]'s\n"
        "  MIN   Protocol = SMB2_10\n"
        "[global]\n"
        "\tserver signing\t=\tforced\n"
        "   smb encrypt = desired\n"
        "# a comment\n"
        "   map to guest = Bad   User\n"
        "   hide dot files = no\n"
        "[Data]\n"
        f"   path = {tmp_path}\\\n"
        "\n"
        "   comment = a ; not a comment # nor this   \n"
        "   WRITEABLE = yes\n"
        "   browsable = no\n"
        "   valid users = alice, \"john smith\" @staff\\\n"
        "      +wheel\n"
        "   allow hosts = 10.0.0.0/8, 127. EXCEPT 127.0.0.2\n"
        "   create mode = 0700\n"
        "   directory mode = 750\n"
        "   veto files = /*.x/y z/\n"
        "   max connections = 3\n"
        "   readonly = no\n"
        "[second]\n"
        "   directory = /tmp\n"
        "   public = yes\n"
        "   only guest = yes\n"
        "   write ok = no\n"
        "   smb encrypt = required\n"
        f"include = {inc}\n"
        "[third]\n"
        "   copy = Data\n"
        "   comment = copied\n"
        "[DATA]\n"
        "   invalid users = bob\n"
        "[nopath]\n"
        "   comment = no path: not served\n"
        "[off]\n   path = /tmp\n   available = no\n"
        "[print]\n   path = /tmp\n   print ok = yes\n")
    cfg = compare(conf)
    assert cfg.shares["Data"].comment == "a ; not a comment # nor this"
    assert cfg.shares["Data"].valid_users == ["alice", "john smith", "@staff", "+wheel"]
    assert cfg.shares["third"].max_connections == 3 and cfg.shares["third"].comment == "copied"
    assert any("[print]" in n for n in cfg.notices) and any("[nopath]" in n for n in cfg.notices)


def test_debian_stock_smb_conf_starts_and_says_what_it_skips():
    stock = "/etc/samba/smb.conf"
    if not os.path.exists(stock):
        pytest.skip("no /etc/samba/smb.conf")
    cfg = compare(stock)
    assert "homes" in {s.lower() for s in cfg.shares}
    assert any("printers" in n for n in cfg.notices)
    r = subprocess.run([sys.executable, "-m", "smbring.cli", "testparm", stock], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and "[homes]" in r.stdout and "printing is not supported" in r.stderr


@pytest.mark.parametrize("option, says", [
    ("preexec close = 1", "preexec close"),
    ("map to guest = bad password", "map to guest"), ("map to guest = Bad Uid", "map to guest"),
    ("security = ads", "security"), ("server role = active directory domain controller", "server role"),
    ("root directory = /srv", "root directory"),
    ("config file = /etc/other.conf", "config file"), ("preexec close = yes", "preexec close"),
    ("hosts deny = evil.example.com", "hosts deny"), ("valid users = &netgroup", "valid users"),
    ("server min protocol = SMB4", "server min protocol"), ("smb encrypt = maybe", "smb encrypt"),
    ("server signing = sometimes", "server signing"), ("read only = perhaps", "read only"),
    ("create mask = 0999", "create mask"), ("max connections = -1", "max connections"),
    ("server min protocol = SMB3\nserver max protocol = SMB2", "server min protocol"),
    ("server smb3 encryption algorithms = ROT13", "encryption algorithms"),
    ("path = %$(HOME)/../x\ninclude = /nonexistent/%m.conf", "include"),
    ("include = /nonexistent.conf", "include"),
    ("hosts allow = %I", "session variables"),
    ("inherit owner = sometimes", "inherit owner"),
])
def test_what_cannot_be_enforced_stops_the_server_with_one_line(tmp_path, option, says):
    conf = tmp_path / "smb.conf"
    conf.write_text(f"[global]\n{option}\n[s]\npath = {tmp_path}\n")
    with pytest.raises(ConfigError, match=says) as e:
        load(str(conf))
    assert "\n" not in str(e.value) and "smb.conf" in str(e.value)
    env = dict(os.environ, SMBRING_PASSDB=str(tmp_path / "passdb"))
    r = subprocess.run([sys.executable, "-m", "smbring.cli", "serve", "--config", str(conf)],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 2 and says in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = subprocess.run([sys.executable, "-m", "smbring.cli", "testparm", str(conf)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and says in r.stderr


def test_share_options_refused_in_a_share_too(tmp_path):
    conf = tmp_path / "smb.conf"
    conf.write_text(f"[s]\npath = {tmp_path}\npreexec close = yes\n")
    with pytest.raises(ConfigError, match=r"\[s\] preexec close = yes: = yes would make a script decide"):
        load(str(conf))


def test_dont_descend_paths(tmp_path):
    conf = tmp_path / "smb.conf"
    conf.write_text(f'[s]\npath = {tmp_path}\ndont descend = /proc, ./dev "a b/c/" .\n')
    assert load(str(conf)).shares["s"].dont_descend == ["proc", "dev", "a b/c", "."]


def test_ignored_options_are_listed_once(tmp_path, caplog):
    conf = tmp_path / "smb.conf"
    conf.write_text(f"[global]\nworkgroup = HOME\nmap acl inherit = 3\nobey pam restrictions = yes\n"
                    f"server signing = mandatory\n[a]\npath = {tmp_path}\noplocks = no\nmap acl inherit = 4\n"
                    f"[b]\npath = {tmp_path}\nmap acl inherit = 5\nserver signing = mandatory\n")
    cfg = load(str(conf))
    ignored = [n for n in cfg.notices if "ignored" in n]
    assert len(ignored) == 1
    assert "map acl inherit" in ignored[0] and "obey pam restrictions" in ignored[0]
    assert "server signing (a [global] option, in [b])" in ignored[0]
    assert "workgroup" not in ignored[0] and "oplocks" not in ignored[0]    # harmless: quiet


def test_global_share_options_are_every_shares_default(tmp_path):
    conf = tmp_path / "smb.conf"
    conf.write_text(f"[global]\nread only = no\nveto files = /*.bak/\nhosts deny = 10.\n"
                    f"[a]\npath = {tmp_path}\n[b]\npath = {tmp_path}\nread only = yes\nveto files =\n")
    cfg = load(str(conf))
    assert not cfg.shares["a"].read_only and cfg.shares["a"].veto_files == ["*.bak"]
    assert cfg.shares["b"].read_only and cfg.shares["b"].veto_files == []
    assert cfg.shares["a"].hosts_deny == ("10.",) and cfg.hosts_deny == ("10.",)


def test_testparm_prints_the_effective_configuration(tmp_path):
    conf = tmp_path / "smb.conf"
    conf.write_text(f"[global]\nwriteable = yes\n  Server   Signing = mandatory\n"
                    f"[Data]\ndirectory = {tmp_path}\nbrowsable = no\n")
    text = config.testparm_text(load(str(conf)))
    assert "[global]\n\tread only = no\n\tserver signing = mandatory\n" in text
    assert f"[Data]\n\tpath = {tmp_path}\n\tbrowseable = no\n" in text
    if shutil.which("testparm"):        # and Samba's testparm reads what we print the same way
        again = tmp_path / "again.conf"
        again.write_text(text)
        assert load(str(again)).shares["Data"].browseable is False


def test_include_loops_and_depth_are_refused(tmp_path):
    a, b = tmp_path / "a.conf", tmp_path / "b.conf"
    a.write_text(f"include = {b}\n[s]\npath = /tmp\n")
    b.write_text(f"include = {a}\n")
    with pytest.raises(ConfigError, match="include loop"):
        load(str(a))


def test_protocol_names(tmp_path):
    for name, dialect in (("SMB2_02", wire.SMB202), ("smb3_02", wire.SMB302), ("SMB3", wire.SMB311),
                          ("CORE+", wire.SMB202), ("default", wire.SMB311)):
        conf = tmp_path / "smb.conf"
        conf.write_text(f"[global]\nserver max protocol = {name}\n[s]\npath = {tmp_path}\n")
        assert load(str(conf)).policy.max_dialect == dialect


def test_every_option_is_in_the_administrators_table():
    from pathlib import Path

    from smbring.server.smbconf_options import OPTIONS, REFUSED, SYNONYMS
    from smbring.smb.limits import OPTIONS as LIMITS
    docs = Path(__file__).parents[2] / "docs"
    admin, security = (docs / "ADMIN.md").read_text(), (docs / "SECURITY.md").read_text()
    missing = [name for name in [*OPTIONS, *REFUSED, *SYNONYMS]
               if f"`{name}`" not in admin and not (name in LIMITS and f"`{name}`" in security)]
    assert not missing, missing
