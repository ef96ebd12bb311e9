"""The password file is Samba's smbpasswd: a file Samba's own tool made logs on and survives
`smbring user add`; lines smbring does not change stay byte for byte; flags are honoured."""
import shutil
import subprocess
import sys

import pytest
from servers import PASSWORD, as_root_args, free_port, stop, wait_listening

from smbring.server.users import PasswordDB, PasswordLookup, parse_line
from smbring.smb import wire
from smbring.smb.ntlm_crypto import nt_hash
from smbring.smb.ntlmssp import Barred

CLI = [sys.executable, "-m", "smbring"]

# lines as Samba 4's smbpasswd writes them (made with `smbpasswd -a`, `-d`, `-n`, `-a -m`)
SAMBA_LINES = [
    "daemon:1:XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX:D25B088BA6991B38A960C3CFCA03953C:[U          ]:LCT-6B0DFF7B:",
    "bin:2:XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX:4517392048ED11670149F4F4BD0B6520:[DU         ]:LCT-6B0DFF7B:",
    "sys:3:NO PASSWORDXXXXXXXXXXXXXXXXXXXXX:NO PASSWORDXXXXXXXXXXXXXXXXXXXXX:[NDU        ]:LCT-00000000:",
    "ws1$:1003:XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX:8241A54C1E99ADD3E10A011DC290E067:[W          ]:LCT-6B0DFF80:",
]


def user(*args, passdb, password=None):
    return subprocess.run(CLI + ["user", *args, "--passdb", str(passdb)] +
                          (["--password-stdin"] if password is not None else []),
                          input=(password + "\n") if password is not None else None,
                          capture_output=True, text=True, timeout=30)


def test_samba_lines_parse_and_format_back_identically():
    for line in SAMBA_LINES:
        account = parse_line(line)
        assert account is not None
        assert account.format() == line     # what smbring writes is what Samba writes


def test_who_may_log_on(tmp_path):
    passdb = tmp_path / "smbpasswd"
    passdb.write_text("\n".join(SAMBA_LINES) + "\n")
    lookup = PasswordLookup(str(passdb))
    assert lookup("daemon") == bytes.fromhex("D25B088BA6991B38A960C3CFCA03953C")
    assert lookup("DAEMON") == lookup("daemon")            # names in any case
    assert lookup("daemon").barred is None
    # known accounts that may not log on: refused with their own status, never unknown names
    # (which `map to guest = bad user` would make guests)
    assert lookup("bin").barred == Barred("disabled", wire.STATUS_ACCOUNT_DISABLED)
    assert lookup("sys").barred.before_password            # NO PASSWORD: no null passwords
    assert lookup("sys").barred.status == wire.STATUS_LOGON_FAILURE
    assert lookup("ws1$").barred.status == wire.STATUS_NOLOGON_WORKSTATION_TRUST_ACCOUNT
    assert lookup("nosuchuser") is None


def test_lines_smbring_does_not_change_survive_byte_for_byte(tmp_path):
    passdb = tmp_path / "smbpasswd"
    odd = ["# a comment", "", "garbage without colons", "old:5:" + "A" * 32 + ":", "x:-1:bad"]
    passdb.write_text("\n".join(SAMBA_LINES + odd) + "\n")
    before = passdb.read_text().splitlines()
    r = user("add", "carol", passdb=passdb, password="pw-carol-1")
    assert r.returncode == 0, r.stderr
    assert "user carol added" in r.stdout and str(passdb) in r.stdout
    after = passdb.read_text().splitlines()
    assert after[:len(before)] == before
    carol = parse_line(after[-1])
    assert carol.nt_hash == nt_hash("pw-carol-1") and carol.lm == "X" * 32 and carol.flags == "U"
    assert after[-1].endswith(":") and "[U          ]:LCT-" in after[-1]
    assert oct(passdb.stat().st_mode & 0o777) == "0o600"


def test_names_are_unique_in_any_case_and_options_stand_anywhere(tmp_path):
    passdb = tmp_path / "smbpasswd"
    passdb.write_text("\n".join(SAMBA_LINES) + "\n")
    # --passdb before the action and after it
    r = subprocess.run(CLI + ["user", "--passdb", str(passdb), "add", "DAEMON", "--password-stdin"],
                       input="new-pw-1\n", capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "password of user daemon changed" in r.stdout
    db = PasswordDB(str(passdb)).load()
    assert [a.name for a in db.accounts].count("daemon") == 1 and not db.find("DAEMON").name == "DAEMON"
    assert db.find("daemon").nt_hash == nt_hash("new-pw-1")
    assert db.find("daemon").uid == 1                      # kept


def test_disable_enable_and_a_disabled_account_keeps_its_flag(tmp_path):
    passdb = tmp_path / "smbpasswd"
    passdb.write_text("\n".join(SAMBA_LINES) + "\n")
    r = user("add", "bin", passdb=passdb, password="pw-bin-2")
    assert "disabled" in r.stdout and PasswordLookup(str(passdb))("bin").barred is not None
    r = user("enable", "bin", passdb=passdb)
    assert r.returncode == 0 and "user bin enabled" in r.stdout
    assert PasswordLookup(str(passdb))("bin") == nt_hash("pw-bin-2")
    assert PasswordLookup(str(passdb))("bin").barred is None
    r = user("disable", "bin", passdb=passdb)
    assert "user bin disabled" in r.stdout and "[DU         ]" in passdb.read_text()
    r = user("add", "ws1$", passdb=passdb, password="x")
    assert r.returncode == 1 and "trust account" in r.stderr    # never turned into a user
    r = user("del", "nobody-here", passdb=passdb)
    assert r.returncode == 1 and "no user nobody-here" in r.stderr
    r = user("list", passdb=passdb)
    assert "daemon\n" in r.stdout and "bin\tcannot log on: disabled" in r.stdout
    r = user("del", "Bin", passdb=passdb)
    assert r.returncode == 0 and "user bin removed" in r.stdout and "\nbin:" not in passdb.read_text()


def test_a_hand_edited_repeat_counts_once_the_first(tmp_path):
    passdb = tmp_path / "smbpasswd"
    first, second = nt_hash("one").hex().upper(), nt_hash("two").hex().upper()
    passdb.write_text(f"eve:1:{'X' * 32}:{first}:[U          ]:LCT-00000000:\n"
                      f"EVE:2:{'X' * 32}:{second}:[U          ]:LCT-00000000:\n")
    assert PasswordLookup(str(passdb))("Eve") == nt_hash("one")


# -- a file made by Samba's smbpasswd, with a real server and smbclient -------------------
@pytest.fixture
def samba_passdb(tmp_path, unix_user):
    """An smbpasswd file made by Samba's own smbpasswd: the test user, and a disabled one."""
    if not shutil.which("smbpasswd"):
        pytest.skip("Samba's smbpasswd is not installed")
    conf = tmp_path / "samba.conf"
    passdb = tmp_path / "smbpasswd"
    for d in ("private", "lock", "state", "cache"):
        (tmp_path / d).mkdir()
    conf.write_text(f"[global]\npassdb backend = smbpasswd:{passdb}\nprivate dir = {tmp_path}/private\n"
                    f"lock directory = {tmp_path}/lock\nstate directory = {tmp_path}/state\n"
                    f"cache directory = {tmp_path}/cache\npid directory = {tmp_path}\n")
    smbpasswd = ["smbpasswd", "-c", str(conf)]
    subprocess.run(smbpasswd + ["-s", "-a", unix_user], input=f"{PASSWORD}\n{PASSWORD}\n",
                   text=True, check=True, capture_output=True)
    subprocess.run(smbpasswd + ["-s", "-a", "daemon"], input=f"{PASSWORD}\n{PASSWORD}\n",
                   text=True, check=True, capture_output=True)
    subprocess.run(smbpasswd + ["-d", "daemon"], text=True, check=True, capture_output=True)
    return passdb


def _serve(tmp_path, passdb):
    share = tmp_path / "share"
    share.mkdir(exist_ok=True)
    (share / "hello.txt").write_text("hello\n")
    port = free_port()
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen(CLI + ["serve", str(share), "--listen", f"127.0.0.1:{port}", "--passdb", str(passdb),
                                   "--control-socket", "none", *as_root_args(tmp_path, passdb)],
                            stdout=log, stderr=subprocess.STDOUT)
    wait_listening(proc, port, tmp_path / "server.log")
    return proc, port


def _ls(port, name, password=PASSWORD):
    return subprocess.run(["smbclient", "//127.0.0.1/share", "-p", str(port), "-U", f"{name}%{password}",
                           "-c", "ls"], capture_output=True, text=True, timeout=60)


def test_a_samba_made_file_logs_on_and_survives_user_add(tmp_path, samba_passdb, unix_user):
    if not shutil.which("smbclient"):
        pytest.skip("Samba's smbclient is not installed")
    samba_made = samba_passdb.read_text()
    assert f"\n{unix_user}:" in "\n" + samba_made and "[DU         ]" in samba_made
    proc, port = _serve(tmp_path, samba_passdb)
    try:
        r = _ls(port, unix_user)
        assert r.returncode == 0 and "hello.txt" in r.stdout, r.stdout + r.stderr
        r = _ls(port, "daemon")                                   # disabled by smbpasswd -d
        assert r.returncode != 0 and "NT_STATUS_ACCOUNT_DISABLED" in r.stdout + r.stderr
        r = _ls(port, "daemon", "wrong")                          # as Samba: nothing more said
        assert r.returncode != 0 and "NT_STATUS_LOGON_FAILURE" in r.stdout + r.stderr
        # (a Unix account, so that the server started as root has one to act as)
        added = user("add", "nobody", passdb=samba_passdb, password="Other-pw-2")
        assert added.returncode == 0, added.stderr
        assert samba_passdb.read_text().startswith(samba_made)   # Samba's lines untouched
        assert _ls(port, unix_user).returncode == 0               # still logs on
        assert _ls(port, "nobody", "Other-pw-2").returncode == 0  # and the new user too
        audit = (tmp_path / "server.log").read_text()
        assert "logon refused: user WORKGROUP\\daemon from 127.0.0.1" in audit
        assert f"logon accepted: user WORKGROUP\\{unix_user} from 127.0.0.1" in audit
    finally:
        stop(proc)
    if shutil.which("pdbedit"):     # and Samba still reads the file smbring wrote
        conf = tmp_path / "samba.conf"
        listed = subprocess.run(["pdbedit", "-s", str(conf), "-L"], capture_output=True, text=True)
        assert f"{unix_user}:" in listed.stdout, listed.stdout + listed.stderr
