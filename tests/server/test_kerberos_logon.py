"""Kerberos logons against a real MIT KDC on loopback (tests/server/kdc.py), with real clients:
Samba's smbclient (--use-kerberos=required, and the older -k), smbprotocol
(auth_protocol="kerberos") and smbring's own client (auth="negotiate", `smbring ls
--kerberos`), against `smbring serve --config` with `kerberos method = dedicated keytab`.

- each client logs on with its ticket, lists, and puts and gets a file byte for byte; with
  `server signing = mandatory`, and with `smb encrypt = required` (AES-128 and AES-256
  ciphers: the latter use the whole 32-byte Kerberos key);
- refused (STATUS_LOGON_FAILURE, the server still serving): an AP-REQ replayed on a new
  connection; a ticket for another service principal (cifs/otherhost, and HTTP/localhost whose
  key the keytab holds); a principal of another realm; a principal without a Unix account; an
  account the password file disables; a user `invalid users` names (at the tree connect); an
  expired ticket; truncated and bit-flipped tokens;
- Kerberos not configured: NTLMSSP alone in the NEGOTIATE hint, a Kerberos token refused;
- a keytab missing, or without a cifs/ key, stops the server at start with the reason, and a
  reload to such a configuration keeps the one in force.

Runs as root (Unix accounts are made for the module); skipped where the KDC tools or the
python gssapi package are absent (as root in CI, make system-deps installs them)."""
from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import kdc
from servers import free_port, spawn, stop

if os.geteuid() != 0 or not shutil.which("useradd"):
    pytest.skip("Kerberos logons act as Unix accounts: needs root (and useradd)", allow_module_level=True)
if kdc.missing():
    pytest.skip(kdc.missing(), allow_module_level=True)

sys.path.insert(0, str(Path(__file__).parent.parent / "security"))   # raw.py
from raw import RawClient  # noqa: E402

from smbring.smb import spnego, wire  # noqa: E402

SUFFIX = f"{os.getpid() % 100000}"
ALICE, BOB, CAROL, GHOST = (f"krb{n}{SUFFIX}" for n in ("a", "b", "c", "g"))
PASSWORD = "Kerberos-pw1"
REALM, OTHER_REALM = "SMBRING.TEST", "OTHER.TEST"
CLI = [sys.executable, "-m", "smbring.cli"]
# the server's name for smbclient, which never tries Kerberos with "localhost" or an address
# (it connects to 127.0.0.1 with -I; krb5.conf maps .smbring.test to the realm, no DNS)
HOST = "kerberos.smbring.test"
STATUS_LOGON_FAILURE = 0xC000006D


@pytest.fixture(scope="module")
def realm(tmp_path_factory):
    """The realm (and a second one with no trust), its KDC running; the keytab of
    cifs/localhost, host/localhost and HTTP/localhost; ALICE, BOB (Unix accounts), CAROL (a
    Unix account, disabled in the password file), GHOST (no Unix account), and ALICE in the
    other realm, each with PASSWORD; cifs/otherhost, whose key the keytab does not hold."""
    top = tmp_path_factory.mktemp("kerberos")
    top.chmod(0o755)
    made = []
    realm = kdc.Realm.start(top / "realm", REALM, others=(OTHER_REALM,))
    try:
        for name in (ALICE, BOB, CAROL):
            subprocess.run(["useradd", "--no-create-home", "--user-group", name], check=True, capture_output=True)
            made.append(name)
        for name in (ALICE, BOB, CAROL, GHOST):
            realm.add_principal(name, PASSWORD)
        realm.add_principal(ALICE, PASSWORD, realm=OTHER_REALM)
        realm.add_principal("cifs/otherhost")
        realm.keytab(top / "smb.keytab", "cifs/localhost", "host/localhost", "HTTP/localhost", f"cifs/{HOST}")
        (top / "smb.keytab").chmod(0o600)
        realm.keytab(top / "http-only.keytab", "HTTP/localhost")
        realm.top = top
        yield realm
    finally:
        realm.stop()
        for name in made:
            subprocess.run(["userdel", name], capture_output=True)


def tickets(realm, tmp_path, user: str = ALICE, principal_realm: str = REALM, *options: str) -> dict:
    """kinit `user` into a ccache of the test's: the environment that uses it."""
    return realm.kinit(f"{user}@{principal_realm}", PASSWORD, tmp_path / f"{user}-{principal_realm}.ccache",
                       *options)


class KerberosServer:
    def __init__(self, port, proc, log, conf, share, env):
        self.port, self.proc, self.log, self.conf, self.share, self.env = port, proc, log, conf, share, env

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def conf_text(realm, port: int, share: Path, more: str = "", keytab: str | None = None,
              method: str = "dedicated keytab", share_more: str = "") -> str:
    kerberos = (f"kerberos method = {method}\ndedicated keytab file = {keytab or realm.top / 'smb.keytab'}\n"
                f"realm = {REALM}\n") if method else ""
    return (f"[global]\nlisten = 127.0.0.1:{port}\nshutdown timeout = 1\n{kerberos}{more}\n"
            f"[share]\npath = {share}\nread only = no\n{share_more}\n")


@pytest.fixture
def start(realm, tmp_path):
    """start(more [global] lines, ...) -> KerberosServer: `smbring serve --config` with
    Kerberos, its share a 0777 directory, BOB and CAROL in the password file (CAROL
    disabled), the server's environment the realm's (its krb5.conf)."""
    started = []

    def start_server(more: str = "", **conf) -> KerberosServer:
        share = tmp_path / f"share{len(started)}"
        share.mkdir()
        share.chmod(0o777)
        port = free_port()
        conf_path = tmp_path / f"smb{len(started)}.conf"
        conf_path.write_text(conf_text(realm, port, share, more, **conf))
        passdb = tmp_path / "passdb"
        env = dict(realm.env, SMBRING_PASSDB=str(passdb))
        for name in (BOB, CAROL):
            subprocess.run(CLI + ["user", "add", name, "--password-stdin"], input="Ntlm-pw1\n", text=True,
                           check=True, env=env, capture_output=True)
        subprocess.run(CLI + ["user", "disable", CAROL], check=True, env=env, capture_output=True)
        saved = os.environ.copy()
        os.environ.update(realm.env)            # (spawn passes its environment on to the server)
        try:
            proc, port, log = spawn(tmp_path, "--config", str(conf_path), port=port, accounts=True)
        finally:
            os.environ.clear()
            os.environ.update(saved)
        server = KerberosServer(port, proc, log, conf_path, share, env)
        started.append(server)
        return server

    yield start_server
    for server in started:
        stop(server.proc)


def smbclient(server, env: dict, command: str, *extra: str, kerberos: str = "--use-kerberos=required"):
    return subprocess.run(["smbclient", f"//{HOST}/share", "-I", "127.0.0.1", "-p", str(server.port), kerberos, *extra,
                           "-c", command], env=env, capture_output=True, text=True, timeout=60,
                          cwd=str(server.share.parent))


def payload(size: int = 300_000) -> bytes:
    return hashlib.sha256(b"kerberos").digest() * (size // 32) + b"end"


# -- real clients log on with their tickets ----------------------------------------------------
@pytest.mark.parametrize("more", ["", "server signing = mandatory", "smb encrypt = required",
                                  "smb encrypt = required\nserver smb3 encryption algorithms = aes-256-gcm"])
def test_smbclient_logs_on_lists_puts_and_gets(realm, start, tmp_path, more):
    server = start(more)
    env = tickets(realm, tmp_path)
    data = payload()
    (tmp_path / "up.bin").write_bytes(data)
    extra = ["--client-protection=encrypt"] if "encrypt" in more else []
    done = smbclient(server, env, f"put {tmp_path / 'up.bin'} up.bin; get up.bin {tmp_path / 'down.bin'}; ls",
                     *extra)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "up.bin" in done.stdout
    assert (tmp_path / "down.bin").read_bytes() == data
    assert (server.share / "up.bin").read_bytes() == data
    assert pwd.getpwuid((server.share / "up.bin").stat().st_uid).pw_name == ALICE
    assert f"logon accepted: user {REALM}\\{ALICE}" in server.log_text()


def test_smbclient_k_spelling(realm, start, tmp_path):
    server = start()
    env = tickets(realm, tmp_path)
    done = smbclient(server, env, "ls", kerberos="-k")
    assert done.returncode == 0, done.stdout + done.stderr
