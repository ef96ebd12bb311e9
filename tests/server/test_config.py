"""smb.conf-style configuration, and a server started from it used by smbclient."""
import os
import subprocess
from contextlib import ExitStack

import pytest
from smbconf_server import unix_account

from servers import PASSWORD, USER, free_port, spawn, stop
from smbring.server.config import ConfigError, load


def test_parse_shares_and_warn_about_ignored_options(tmp_path):
    conf = tmp_path / "smb.conf"
    conf.write_text(f"""
[global]
    server signing = mandatory
    workgroup = HOME
    acl map full control = no
[Data]
    path = {tmp_path}
    read only = no
    valid users = alice, bob
    vfs objects = io_uring fruit
[pub]
    path = {tmp_path}
    guest ok = yes
""")
    cfg = load(str(conf))
    assert cfg.signing_required
    assert set(cfg.shares) == {"Data", "pub"}
    assert not cfg.shares["Data"].read_only and cfg.shares["pub"].read_only
    assert cfg.shares["Data"].valid_users == ["alice", "bob"] and cfg.shares["pub"].guest_ok
    assert any("acl map full control" in w for w in cfg.warnings)
    assert any("fruit" in w for w in cfg.warnings)


@pytest.mark.parametrize("body", ["[s]\nread only = no\n", "[s]\npath = /tmp\nread only = maybe\n",
                                  "[global]\nworkgroup = X\n"])
def test_bad_configurations_are_refused(tmp_path, body):
    conf = tmp_path / "bad.conf"
    conf.write_text(body)
    with pytest.raises(ConfigError):
        load(str(conf))


def smbclient_at(port: int, share: str, creds: list[str], cmd: str):
    if not __import__("shutil").which("smbclient"):
        pytest.skip("smbclient missing")
    return subprocess.run(["smbclient", f"//127.0.0.1/{share}", "-p", str(port), *creds, "-c", cmd],
                          capture_output=True, text=True, timeout=60)


def test_server_from_config_read_only_and_valid_users(tmp_path):
    ro, rw = tmp_path / "ro", tmp_path / "rw"
    ro.mkdir()
    rw.mkdir()
    (ro / "f.txt").write_text("x")
    port = free_port()
    conf = tmp_path / "smb.conf"
    conf.write_text(f"[global]\nlisten = 127.0.0.1:{port}\n[ro]\npath = {ro}\n"
                    f"[rw]\npath = {rw}\nread only = no\nvalid users = {USER}\n"
                    f"[other]\npath = {rw}\nvalid users = somebody\n")
    with ExitStack() as cleanup:
        if os.geteuid() == 0:       # USER acts as a Unix account of its own name
            cleanup.enter_context(unix_account(USER))
            rw.chmod(0o777)
        proc, port, _ = spawn(tmp_path, "--config", str(conf), port=port, accounts=True)
        cleanup.callback(stop, proc)

        def run(share, cmd):
            return smbclient_at(port, share, ["-U", f"{USER}%{PASSWORD}"], cmd)

        r = run("ro", f"put {conf} new.txt")
        assert "NT_STATUS_ACCESS_DENIED" in r.stdout + r.stderr and not (ro / "new.txt").exists()
        r = run("rw", f"put {conf} new.txt")
        assert r.returncode == 0 and (rw / "new.txt").exists(), r.stdout + r.stderr
        r = run("other", "ls")
        assert "NT_STATUS_ACCESS_DENIED" in r.stdout + r.stderr


def test_encrypted_only_share(tmp_path):
    import shutil
    if not shutil.which("smbclient"):
        pytest.skip("smbclient missing")
    share = tmp_path / "s"
    share.mkdir()
    (share / "f.txt").write_text("sealed")
    proc, port, _ = spawn(tmp_path, str(share), "--encrypt")
    try:
        base = ["smbclient", "//127.0.0.1/share", "-p", str(port), "-U", f"{USER}%{PASSWORD}", "-m", "SMB3"]
        r = subprocess.run(base + ["-c", "ls"], capture_output=True, text=True, timeout=60)
        assert "f.txt" in r.stdout, r.stdout + r.stderr  # smbclient follows the share's flag
        r = subprocess.run(base + ["-m", "SMB2", "-c", "ls"], capture_output=True, text=True, timeout=60)
        assert "NT_STATUS_ACCESS_DENIED" in r.stdout + r.stderr   # SMB 2.x cannot encrypt
    finally:
        stop(proc)


def test_guest_only_where_a_share_allows_it(tmp_path):
    import shutil
    if not shutil.which("smbclient"):
        pytest.skip("smbclient missing")
    pub, priv = tmp_path / "pub", tmp_path / "priv"
    pub.mkdir()
    priv.mkdir()
    (pub / "hello.txt").write_text("open to all")
    port = free_port()
    conf = tmp_path / "smb.conf"
    conf.write_text(f"[global]\nlisten = 127.0.0.1:{port}\nmap to guest = bad user\n"
                    f"[pub]\npath = {pub}\nguest ok = yes\n[priv]\npath = {priv}\n")
    proc, port, _ = spawn(tmp_path, "--config", str(conf), port=port)
    try:
        def run(share, creds, cmd):
            return smbclient_at(port, share, creds, cmd)

        for creds in (["-N"], ["-U", "nobody%whatever"]):      # anonymous, and a user we do not know
            r = run("pub", creds, "get hello.txt " + str(tmp_path / "got.txt"))
            assert r.returncode == 0, r.stdout + r.stderr
            assert (tmp_path / "got.txt").read_text() == "open to all"
            r = run("priv", creds, "ls")
            assert "NT_STATUS_ACCESS_DENIED" in r.stdout + r.stderr
        r = run("pub", ["-U", f"{USER}%wrong-password"], "ls")      # a known user's bad password
        assert "NT_STATUS_LOGON_FAILURE" in r.stdout + r.stderr
    finally:
        stop(proc)


def write_global(tmp_path, options: str):
    conf = tmp_path / "limits.conf"
    conf.write_text(f"[global]\n{options}\n[s]\npath = {tmp_path}\n")
    return str(conf)


def test_limits_and_ntlm_auth_from_global(tmp_path):
    from smbring.smb.limits import OPTIONS, Limits
    cfg = load(write_global(tmp_path, ""))
    assert cfg.limits == Limits() and cfg.ntlm_auth == "ntlmv2-only" and not cfg.warnings
    sizes = ("smb2 max read", "smb2 max write", "smb2 max trans")     # (64 KiB at least)
    counts = [option for option in OPTIONS if option not in ("handshake timeout", "deadtime") + sizes]
    cfg = load(write_global(tmp_path, "\n".join(f"{option} = 7" for option in counts) + """
handshake timeout = 2.5
smb2 max read = 65536
deadtime = .5
max smbd processes = 0
NTLM   Auth = Yes"""))
    assert not cfg.warnings      # every option is known
    assert cfg.limits.max_credits == 7 and cfg.limits.max_locks == 7 and cfg.limits.max_compound == 7
    assert cfg.limits.handshake_timeout == 2.5 and cfg.limits.deadtime == 0.5 and cfg.limits.max_read == 65536
    assert cfg.limits.max_connections == 0 and cfg.limits.max_connections_per_address == 7
    assert cfg.ntlm_auth == "ntlmv1-permitted"
    for value, meant in [("no", "ntlmv2-only"), ("false", "ntlmv2-only"), ("disabled", "disabled"),
                         ("mschapv2-and-ntlmv2-only", "ntlmv2-only"),
                         ("ntlmv1-permitted", "ntlmv1-permitted"), ("true", "ntlmv1-permitted")]:
        assert load(write_global(tmp_path, f"ntlm auth = {value}")).ntlm_auth == meant
    assert load(write_global(tmp_path, "deadtime = 0")).limits.deadtime == 0


@pytest.mark.parametrize("option, message", [
    ("max open files = -1", "whole number"),
    ("max open files = 0", "at least 1"),
    ("smb2 max credits = 1.5", "whole number"),
    ("max trees per session = lots", "whole number"),
    ("max locks per open = 0x10", "whole number"),
    ("max compound requests = 1_000", "whole number"),
    ("max connections per client =", "whole number"),
    ("handshake timeout = -5", "seconds"),
    ("handshake timeout = inf", "seconds"),
    ("handshake timeout = nan", "seconds"),
    ("handshake timeout = 1e3", "seconds"),
    ("deadtime = 10 minutes", "minutes"),
    ("deadtime = -0.5", "minutes"),
    ("deadtime = \u0661\u0660", "minutes"),         # digits, but not ASCII ones
    ("ntlm auth = maybe", "ntlm auth"),
    ("ntlm auth = ntlmv1", "ntlm auth"),
])
def test_bad_limits_are_refused(tmp_path, option, message):
    with pytest.raises(ConfigError, match=message):
        load(write_global(tmp_path, option))


def test_sync_always_csc_policy_and_strict_sync_are_read_per_share(tmp_path):
    """`sync always` (every WRITE flushed before it is answered: smb tests) per share, with a
    [global] default; `csc policy` as its ShareFlags value; `strict sync` is read (a bad value
    refused) but never makes FLUSH or write-through weaker."""
    conf = tmp_path / "smb.conf"
    conf.write_text(f"[global]\nsync always = yes\nstrict sync = no\n[a]\npath = {tmp_path}\n"
                    f"[b]\npath = {tmp_path}\nsync always = no\n")
    cfg = load(str(conf))
    assert cfg.shares["a"].sync_always and not cfg.shares["b"].sync_always
    assert not any("sync" in w for w in cfg.warnings)
    conf.write_text(f"[a]\npath = {tmp_path}\ncsc policy = disable\n[b]\npath = {tmp_path}\ncsc policy = Documents\n")
    assert (load(str(conf)).shares["a"].csc_policy, load(str(conf)).shares["b"].csc_policy) == (0x30, 0x10)
    conf.write_text(f"[a]\npath = {tmp_path}\nstrict sync = sometimes\n")
    with pytest.raises(ConfigError, match="strict sync"):
        load(str(conf))
