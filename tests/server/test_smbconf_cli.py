"""The command line over smb.conf (flags win, none is dropped), and Debian's stock smb.conf
served for real."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time

import pytest
from servers import PASSWORD, USER, as_root_args, free_port, spawn, stop
from smbconf_server import refused, smbconf  # noqa: F401

from smbring.smb import wire


def ls(share: str, port: int, host: str = "127.0.0.1") -> subprocess.CompletedProcess:
    return subprocess.run(["smbclient", f"//{host}/{share}", "-p", str(port), "-U", f"{USER}%{PASSWORD}",
                           "-c", "ls"], capture_output=True, text=True, timeout=60)


def test_read_only_flag_overrides_the_file(smbconf, tmp_path):
    src = tmp_path / "src.txt"
    src.write_text("x")
    server = smbconf("", {"share": "read only = no"}, "--read-only")
    assert refused(server.smbclient("share", f"put {src} new.txt"))
    assert not (tmp_path / "share" / "new.txt").exists()


def test_path_with_config_adds_a_share(smbconf, tmp_path):
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "here.txt").write_text("x")
    server = smbconf("", {"share": ""}, str(extra), "--share", "added")
    assert "here.txt" in server.smbclient("added", "ls").stdout
    assert server.smbclient("share", "ls").returncode == 0       # the file's shares stay


def test_guest_encrypt_and_signing_flags(smbconf):
    server = smbconf("server signing = auto", {"share": "read only = no"}, "--guest", "--encrypt",
                     "--signing-required")
    c = server.raw()
    c.negotiate((wire.SMB311,))
    assert c.server["security_mode"] & wire.SECURITY_SIGNING_REQUIRED      # --signing-required
    assert refused(server.smbclient("share", "ls", "-m", "SMB2"))            # --encrypt
    assert server.smbclient("share", "ls", "-m", "SMB3").returncode == 0
    r = server.smbclient("share", "ls", "-m", "SMB3", user="stranger", password="x")   # --guest
    assert "NT_STATUS_LOGON_FAILURE" not in r.stdout + r.stderr


def one_share(tmp_path, global_options: str):
    """smb.conf with [global] global_options and a share s."""
    if not shutil.which("smbclient"):
        pytest.skip("smbclient missing")
    share = tmp_path / "s"
    share.mkdir()
    conf = tmp_path / "smb.conf"
    conf.write_text(f"[global]\n{global_options}\n[s]\npath = {share}\n")
    return conf


def test_listen_and_passdb_flags_override_the_file(tmp_path):
    file_port, flag_port = free_port(), free_port()
    conf = one_share(tmp_path, f"listen = 127.0.0.1:{file_port}\npassdb = {tmp_path}/nowhere")
    # spawn puts alice in $SMBRING_PASSDB; --passdb names that file over the file's passdb
    proc, port, _log = spawn(tmp_path, "--config", str(conf), "--listen", f"127.0.0.1:{flag_port}",
                             "--passdb", str(tmp_path / "passdb"), port=flag_port)
    try:
        r = ls("s", port)
        assert r.returncode == 0, r.stdout + r.stderr
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", file_port)) != 0      # the file's address is not used
    finally:
        stop(proc)


def test_smb_ports_serves_each_port(tmp_path):
    a, b = free_port(), free_port()
    conf = one_share(tmp_path, f"smb ports = {a} 139 {b}")
    proc, _, log = spawn(tmp_path, "--config", str(conf), port=a)
    try:
        for port in (a, b):
            r = ls("s", port)
            assert r.returncode == 0, r.stdout + r.stderr
        assert "139 (NetBIOS session service) is not served" in log.read_text()
    finally:
        stop(proc)


def test_bind_interfaces_only_binds_only_those(tmp_path):
    port = free_port()
    conf = one_share(tmp_path, f"smb ports = {port}\ninterfaces = 127.0.0.2/8\nbind interfaces only = yes")
    env = dict(os.environ, SMBRING_PASSDB=str(tmp_path / "passdb"))
    subprocess.run([sys.executable, "-m", "smbring.cli", "user", "add", USER, "--password-stdin"],
                   input=PASSWORD + "\n", text=True, check=True, env=env, capture_output=True)
    proc = subprocess.Popen([sys.executable, "-m", "smbring.cli", "serve", "--config", str(conf),
                             *as_root_args(tmp_path)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.2", port)) == 0:
                    break
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0       # not bound there
        r = ls("s", port, host="127.0.0.2")
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        stop(proc)


def test_debian_stock_smb_conf_serves(tmp_path):
    stock = "/etc/samba/smb.conf"
    if not os.path.exists(stock) or not shutil.which("smbclient"):
        pytest.skip("no /etc/samba/smb.conf or smbclient")
    port = free_port()
    proc, port, log = spawn(tmp_path, "--config", stock, "--listen", f"127.0.0.1:{port}", port=port)
    try:
        r = ls("print$", port)
        assert r.returncode == 0, r.stdout + r.stderr
        r = ls("printers", port)
        assert "NT_STATUS_BAD_NETWORK_NAME" in r.stdout + r.stderr
        text = log.read_text()
        assert "printing is not supported" in text and "obey pam restrictions" in text
    finally:
        stop(proc)
