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

import asyncio
import hashlib
import os
import pwd
import re
import shutil
import signal
import struct
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
from tampering import TamperingProxy  # noqa: E402

from smbring.smb import spnego, wire  # noqa: E402

SUFFIX = f"{os.getpid() % 100000}"
ALICE, BOB, CAROL, GHOST, SYSTEM = (f"krb{n}{SUFFIX}" for n in ("a", "b", "c", "g", "s"))
PASSWORD = "Kerberos-pw1"
REALM, OTHER_REALM = "SMBRING.TEST", "OTHER.TEST"
CASE_REALM = REALM.lower()      # another realm (realm names are case-sensitive), same letters
CLI = [sys.executable, "-m", "smbring.cli"]
# the server's name for smbclient, which never tries Kerberos with "localhost" or an address
# (it connects to 127.0.0.1 with -I; krb5.conf maps .smbring.test to the realm, no DNS)
HOST = "kerberos.smbring.test"
STATUS_LOGON_FAILURE = 0xC000006D


@pytest.fixture(scope="module")
def realm(tmp_path_factory):
    """The realm (and two more with no trust: OTHER_REALM, and CASE_REALM, the realm's name in
    lower case), its KDC running; the keytab of
    cifs/localhost, host/localhost and HTTP/localhost; ALICE, BOB (Unix accounts), CAROL (a
    Unix account, disabled in the password file), GHOST (no Unix account), and ALICE in the
    other realms, each with PASSWORD; cifs/otherhost, whose key the keytab does not hold."""
    top = tmp_path_factory.mktemp("kerberos")
    top.chmod(0o755)
    made = []
    realm = kdc.Realm.start(top / "realm", REALM, others=(OTHER_REALM, CASE_REALM))
    try:
        for name in (ALICE, BOB, CAROL):
            subprocess.run(["useradd", "--no-create-home", "--user-group", name], check=True, capture_output=True)
            made.append(name)
        # a system account (uid below 1000, below Samba's default min domain uid)
        subprocess.run(["useradd", "--system", "--no-create-home", "--user-group", SYSTEM], check=True,
                       capture_output=True)
        made.append(SYSTEM)
        for name in (ALICE, BOB, CAROL, GHOST, SYSTEM, "root"):
            realm.add_principal(name, PASSWORD)
        realm.add_principal(ALICE, PASSWORD, realm=OTHER_REALM)
        realm.add_principal(ALICE, PASSWORD, realm=CASE_REALM)
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
    return realm.kinit(f"{user}@{principal_realm}", PASSWORD, tmp_path / f"{user.replace('/', '_')}-{principal_realm}.ccache",
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


def test_smbprotocol_logs_on_with_kerberos(realm, start, tmp_path, monkeypatch):
    smbclient_api = pytest.importorskip("smbclient")
    server = start("server signing = mandatory")
    env = tickets(realm, tmp_path)
    for name in ("KRB5_CONFIG", "KRB5CCNAME"):
        monkeypatch.setenv(name, env[name])
    data = payload(200_000)
    try:
        smbclient_api.register_session("localhost", port=server.port, auth_protocol="kerberos",
                                       require_signing=True)
        with smbclient_api.open_file(r"\\localhost\share\smbprotocol.bin", mode="wb", port=server.port) as f:
            f.write(data)
        with smbclient_api.open_file(r"\\localhost\share\smbprotocol.bin", mode="rb", port=server.port) as f:
            assert f.read() == data
        assert "smbprotocol.bin" in smbclient_api.listdir(r"\\localhost\share", port=server.port)
    finally:
        smbclient_api.reset_connection_cache()
    assert f"logon accepted: user {REALM}\\{ALICE}" in server.log_text()


@pytest.mark.parametrize("flags", [[], ["--encrypt"], ["--sign"]])
def test_smbring_client_logs_on_with_kerberos(realm, start, tmp_path, flags):
    server = start("smb encrypt = required" if flags == ["--encrypt"] else "")
    env = tickets(realm, tmp_path)
    data = payload(500_000)
    (tmp_path / "up.bin").write_bytes(data)
    url = f"smb://localhost:{server.port}/share"      # (the ticket's principal)

    def cli(*args):
        done = subprocess.run(CLI + [*args], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout
    cli("put", "--kerberos", "--no-progress", *flags, f"{url}/up.bin", str(tmp_path / "up.bin"))
    cli("get", "--kerberos", "--no-progress", *flags, f"{url}/up.bin", str(tmp_path / "down.bin"))
    assert "up.bin" in cli("ls", "--kerberos", *flags, url)
    assert (tmp_path / "down.bin").read_bytes() == data
    assert f"logon accepted: user {REALM}\\{ALICE}" in server.log_text()


# -- what the server refuses ----------------------------------------------------------------------
def initiator(realm, env: dict, service: str = "cifs@localhost", mech: str = "1.2.840.113554.1.2.2"):
    """A GSS-API Kerberos initiator (python-gssapi) with the tickets of `env`: (context, AP-REQ)."""
    import gssapi
    os.environ["KRB5_CONFIG"] = realm.env["KRB5_CONFIG"]
    store = {b"ccache": env["KRB5CCNAME"].encode()}
    creds = gssapi.Credentials(usage="initiate", store=store, mechs=[gssapi.OID.from_int_seq(mech)])
    flags = gssapi.RequirementFlag.mutual_authentication | gssapi.RequirementFlag.integrity
    ctx = gssapi.SecurityContext(name=gssapi.Name(service, gssapi.NameType.hostbased_service), creds=creds,
                                 usage="initiate", mech=gssapi.OID.from_int_seq(mech), flags=flags)
    return ctx, ctx.step()


def session_key(ctx) -> bytes:
    import gssapi
    from gssapi.raw import inquire_sec_context_by_oid
    return inquire_sec_context_by_oid(ctx, gssapi.OID.from_int_seq("1.2.840.113554.1.2.2.5.5"))[0]


def logon(server, token: bytes, dialects=None):
    """A new connection's NEGOTIATE and one SESSION_SETUP with `token`: (client, session, response)."""
    client = RawClient(server.port)
    client.negotiate(**({"dialects": dialects} if dialects else {}))
    session = client.start_logon(None)
    return client, session, client.session_setup(session, token)


def negotiate_hint(server) -> list[bytes]:
    """The mechanisms of the NEGOTIATE response's SPNEGO hint."""
    import struct
    with RawClient(server.port) as client:
        raw = client.negotiate().raw
    offset, length = struct.unpack_from("<HH", raw, 64 + 56)
    return spnego.parse_init(raw[offset:offset + length]).mech_types


def still_serves(realm, server, tmp_path) -> None:
    env = tickets(realm, tmp_path, BOB)
    done = smbclient(server, env, "ls")
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("mech, mechs", [
    ("1.2.840.113554.1.2.2", [spnego.KRB5_OID, spnego.NTLMSSP_OID]),
    ("1.2.840.48018.1.2.2", [spnego.MS_KRB5_OID, spnego.KRB5_OID, spnego.NTLMSSP_OID]),   # as Windows
    ("1.2.840.113554.1.2.2", None),                                                     # bare, no SPNEGO
])
def test_ap_rep_comes_back_and_the_keys_agree(realm, start, tmp_path, mech, mechs):
    server = start("server signing = mandatory")
    env = tickets(realm, tmp_path)
    ctx, token = initiator(realm, env, mech=mech)
    client, session, r = logon(server, spnego.encode_init(mechs, token) if mechs else token)
    with client:
        assert r.status == wire.STATUS_SUCCESS, hex(r.status)
        answer = client.security_buffer(r)
        if mechs:
            resp = spnego.parse_resp(answer)
            assert resp.neg_state == spnego.ACCEPT_COMPLETED
            assert resp.supported_mech == mechs[0]
            answer = resp.response_token
        ctx.step(answer)            # the AP-REP: mutual authentication (a wrong one raises)
        assert ctx.complete
        client.establish(session, session_key(ctx))
        assert r.signature_ok, "the server's signing key is not the Kerberos session key's"
    assert negotiate_hint(server) == [spnego.MS_KRB5_OID, spnego.KRB5_OID, spnego.NTLMSSP_OID]


def test_replayed_ap_req_on_a_new_connection_is_refused(realm, start, tmp_path):
    server = start()
    env = tickets(realm, tmp_path)
    _ctx, token = initiator(realm, env)
    init = spnego.encode_init([spnego.KRB5_OID], token)
    first = logon(server, init)
    assert first[2].status == wire.STATUS_SUCCESS
    replayed = logon(server, init)
    assert replayed[2].status == STATUS_LOGON_FAILURE
    assert "replay" in server.log_text().lower()
    for client, _s, _r in (first, replayed):
        client.close()
    still_serves(realm, server, tmp_path)


@pytest.mark.parametrize("service", ["cifs@otherhost", "HTTP@localhost"])
def test_ticket_for_another_service_is_refused(realm, start, tmp_path, service):
    server = start()
    env = tickets(realm, tmp_path)
    _ctx, token = initiator(realm, env, service=service)
    client, _s, r = logon(server, spnego.encode_init([spnego.KRB5_OID], token))
    client.close()
    assert r.status == STATUS_LOGON_FAILURE
    still_serves(realm, server, tmp_path)


def test_principal_of_another_realm_is_refused(realm, start, tmp_path):
    realm.trust(OTHER_REALM, REALM)
    server = start()
    env = tickets(realm, tmp_path, ALICE, OTHER_REALM)
    _ctx, token = initiator(realm, env)
    client, _s, r = logon(server, spnego.encode_init([spnego.KRB5_OID], token))
    client.close()
    assert r.status == STATUS_LOGON_FAILURE
    assert f"{ALICE}@{OTHER_REALM} is not of realm {REALM}" in server.log_text()


def test_principal_of_a_realm_differing_only_in_case_is_refused(realm, start, tmp_path):
    """A trusted realm whose name is ours in lower case is another realm (RFC 4120 names are
    case-sensitive): its ALICE gets a ticket for our cifs/ over the trust, and is refused,
    though the configured realm itself is matched without regard to case."""
    realm.trust(CASE_REALM, REALM)
    server = start()
    env = tickets(realm, tmp_path, ALICE, CASE_REALM)
    _ctx, token = initiator(realm, env)
    client, _s, r = logon(server, spnego.encode_init([spnego.KRB5_OID], token))
    client.close()
    assert r.status == STATUS_LOGON_FAILURE
    assert f"{ALICE}@{CASE_REALM} is not of realm {REALM}" in server.log_text()
    still_serves(realm, server, tmp_path)


@pytest.mark.parametrize("user, status", [(GHOST, STATUS_LOGON_FAILURE), (CAROL, 0xC0000072)],
                         ids=["no-unix-account", "disabled"])
def test_principal_without_an_account_or_barred_is_refused(realm, start, tmp_path, user, status):
    """GHOST has no Unix account (LOGON_FAILURE); the password file disables CAROL
    (ACCOUNT_DISABLED, as her NTLM logon is answered)."""
    server = start()
    env = tickets(realm, tmp_path, user)
    done = smbclient(server, env, "ls")
    assert done.returncode != 0
    _ctx, token = initiator(realm, env)
    client, _s, r = logon(server, spnego.encode_init([spnego.KRB5_OID], token))
    client.close()
    assert r.status == status, hex(r.status)


# (ids, not the names: those hold the process id, which differs between pytest-xdist's workers)
@pytest.mark.parametrize("principal", [ALICE.upper(), ALICE.capitalize(), f"{ALICE}/admin"],
                         ids=["upper-case", "capitalized", "instance"])
def test_a_principal_that_only_resembles_an_account_is_refused(realm, start, tmp_path, principal):
    """Kerberos names are case-sensitive: in the realm, KRBA..., Krba... and krba.../admin are
    other principals than ALICE's (another person may hold them): none acts as ALICE's
    account (LOGON_FAILURE, nothing written), unless a `username map` line joins it to her."""
    realm.add_principal(principal, PASSWORD)
    server = start()
    env = tickets(realm, tmp_path, principal)
    done = smbclient(server, env, "put /etc/hostname planted")
    assert done.returncode != 0, done.stdout
    _ctx, token = initiator(realm, env)
    client, _s, r = logon(server, spnego.encode_init([spnego.KRB5_OID], token))
    client.close()
    assert r.status == STATUS_LOGON_FAILURE, hex(r.status)
    assert f"no Unix account named exactly '{principal}'" in server.log_text()
    assert not (server.share / "planted").exists()
    mapping = tmp_path / "users.map"
    # a map line's names are compared with a principal's exactly too: one that names the
    # principal in other letters' case (another principal) maps nothing
    mapping.write_text(f'{ALICE} = "{principal.swapcase()}"\n')
    server = start(f"username map = {mapping}")
    done = smbclient(server, env, "put /etc/hostname planted")
    assert done.returncode != 0, done.stdout
    assert not (server.share / "planted").exists()
    mapping.write_text(f'{ALICE} = "{principal}"\n')
    server = start(f"username map = {mapping}")
    done = smbclient(server, env, "put /etc/hostname planted")
    assert done.returncode == 0, done.stdout + done.stderr
    assert pwd.getpwuid((server.share / "planted").stat().st_uid).pw_name == ALICE
    still_serves(realm, server, tmp_path)


@pytest.mark.parametrize("user", ["root", SYSTEM], ids=["root", "system-account"])
def test_principal_of_root_or_a_system_account_is_refused(realm, start, tmp_path, user):
    """root@REALM and a system account's principal (uid below `min domain uid`, 1000 by
    default as in Samba) never act as those accounts; the share is left untouched."""
    server = start()
    env = tickets(realm, tmp_path, user)
    done = smbclient(server, env, "put /etc/hostname planted")
    assert done.returncode != 0
    _ctx, token = initiator(realm, env)
    client, _s, r = logon(server, spnego.encode_init([spnego.KRB5_OID], token))
    client.close()
    assert r.status == STATUS_LOGON_FAILURE, hex(r.status)
    assert "below min domain uid (1000)" in server.log_text()
    assert not (server.share / "planted").exists()
    still_serves(realm, server, tmp_path)


def test_min_domain_uid_lowered_lets_a_system_account_in(realm, start, tmp_path):
    """An admin who means it lowers `min domain uid` to the account's uid; root stays out
    while the bound is above 0."""
    uid = pwd.getpwnam(SYSTEM).pw_uid
    server = start(f"min domain uid = {uid}")
    done = smbclient(server, tickets(realm, tmp_path, SYSTEM), "ls")
    assert done.returncode == 0, done.stdout + done.stderr
    assert smbclient(server, tickets(realm, tmp_path, "root"), "ls").returncode != 0


def test_invalid_users_applies_to_kerberos_logons(realm, start, tmp_path):
    server = start(share_more=f"invalid users = {ALICE}")
    done = smbclient(server, tickets(realm, tmp_path), "ls")
    assert "NT_STATUS_ACCESS_DENIED" in done.stdout + done.stderr
    still_serves(realm, server, tmp_path)


def test_expired_ticket_is_refused(realm, start, tmp_path):
    server = start()
    env = tickets(realm, tmp_path, ALICE, REALM, "-l", "3s")
    _ctx, token = initiator(realm, env)      # made while the ticket was good
    time.sleep(3 + 2 + 1.5)                  # its end, krb5.conf's clockskew, a margin
    client, _s, r = logon(server, spnego.encode_init([spnego.KRB5_OID], token))
    client.close()
    assert r.status == STATUS_LOGON_FAILURE
    assert "expired" in server.log_text().lower()


def test_tampered_tokens_are_refused(realm, start, tmp_path):
    server = start()
    env = tickets(realm, tmp_path)
    _ctx, token = initiator(realm, env)
    flipped = bytearray(token)
    flipped[len(token) // 2] ^= 0x01          # inside the ticket's or authenticator's ciphertext
    for bad in (token[:len(token) // 2], bytes(flipped), token[:40], b"\x60\x03\x06\x01\x00"):
        client, _s, r = logon(server, spnego.encode_init([spnego.KRB5_OID], bad))
        client.close()
        assert r.status in (STATUS_LOGON_FAILURE, wire.STATUS_INVALID_PARAMETER), hex(r.status)
        client, _s, r = logon(server, bad)
        client.close()
        assert r.status in (STATUS_LOGON_FAILURE, wire.STATUS_INVALID_PARAMETER), hex(r.status)
    still_serves(realm, server, tmp_path)
    assert "Traceback" not in server.log_text()


def test_a_flood_of_refused_ap_reqs_holds_up_nobody(realm, start, tmp_path):
    """Each Kerberos logon costs the server a ticket decryption and a replay cache look-up on
    its event loop. One client sending refused AP-REQs as fast as it can for 3 s (a replayed
    one, a tampered one, truncated ones, garbage; a new connection where one is closed on it)
    does not hold up another client's ECHOs (none waits a second), every one is refused, and
    the server serves Kerberos logons after it."""
    import threading
    server = start()
    env = tickets(realm, tmp_path)
    _ctx, token = initiator(realm, env)
    client, _s, r = logon(server, spnego.encode_init([spnego.KRB5_OID], token))
    client.close()
    assert r.status == wire.STATUS_SUCCESS                  # (from now on, a replay)
    flipped = bytearray(token)
    flipped[len(token) // 2] ^= 0x01
    bad = [spnego.encode_init([spnego.KRB5_OID], t) for t in (token, bytes(flipped), token[:len(token) // 2])]
    bad += [token, token[:40], b"\x60\x03\x06\x01\x00", os.urandom(2000)]

    watcher = RawClient(server.port)
    watcher.negotiate()
    session = watcher.logon(BOB, "Ntlm-pw1")
    slowest, stop_watch, failures = [0.0], threading.Event(), []

    def watch():
        while not stop_watch.is_set():
            began = time.monotonic()
            try:
                assert watcher.echo(session=session).status == wire.STATUS_SUCCESS
            except Exception as e:      # noqa: BLE001 - reported below
                failures.append(e)
                return
            slowest[0] = max(slowest[0], time.monotonic() - began)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    sent, statuses, flooder = 0, set(), None
    try:
        until = time.monotonic() + 3.0
        while time.monotonic() < until:
            if flooder is None:
                flooder = RawClient(server.port)
                flooder.negotiate()
            try:
                r = flooder.session_setup(flooder.start_logon(None), bad[sent % len(bad)])
            except (OSError, EOFError, ConnectionError):
                flooder.close()
                flooder = None
                continue
            statuses.add(r.status)
            sent += 1
    finally:
        stop_watch.set()
        thread.join(10)
        watcher.close()
        if flooder is not None:
            flooder.close()
    assert not failures, failures
    assert sent > 100, sent
    assert statuses <= {STATUS_LOGON_FAILURE, wire.STATUS_INVALID_PARAMETER}, [hex(s) for s in statuses]
    assert slowest[0] < 1.0, f"another client's ECHO waited {slowest[0]:.2f} s"
    still_serves(realm, server, tmp_path)
    assert "Traceback" not in server.log_text()


def test_kerberos_not_configured_is_not_offered(realm, start, tmp_path):
    server = start(method="")
    assert negotiate_hint(server) == [spnego.NTLMSSP_OID]
    env = tickets(realm, tmp_path)
    _ctx, token = initiator(realm, env)
    for attempt in (spnego.encode_init([spnego.KRB5_OID], token), token):
        client, _s, r = logon(server, attempt)
        client.close()
        assert r.status == STATUS_LOGON_FAILURE, hex(r.status)
    done = smbclient(server, env, "ls")
    assert done.returncode != 0


@pytest.mark.parametrize("keytab, says", [("missing.keytab", "No such file"),
                                          ("http-only.keytab", "holds no key of a cifs/ or host/ principal")])
def test_unusable_keytab_stops_the_server_at_start(realm, tmp_path, keytab, says):
    share = tmp_path / "share"
    share.mkdir()
    conf = tmp_path / "smb.conf"
    conf.write_text(conf_text(realm, free_port(), share, keytab=str(realm.top / keytab)))
    done = subprocess.run(CLI + ["serve", "--config", str(conf)], env=dict(realm.env, SMBRING_PASSDB=str(tmp_path / "p")),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "Kerberos" in done.stderr and says in done.stderr


def test_reload_to_an_unusable_keytab_keeps_kerberos(realm, start, tmp_path):
    server = start()
    deadline = time.monotonic() + 15
    while "serving" not in server.log_text():       # (its SIGHUP handler is set by then)
        assert time.monotonic() < deadline and server.proc.poll() is None, server.log_text()
        time.sleep(0.05)
    text = server.conf.read_text()
    server.conf.write_text(text.replace(str(realm.top / "smb.keytab"), str(realm.top / "missing.keytab")))
    server.proc.send_signal(signal.SIGHUP)
    while "reload failed" not in server.log_text():
        assert time.monotonic() < deadline and server.proc.poll() is None, server.log_text()
        time.sleep(0.05)
    assert "missing.keytab" in server.log_text()
    done = smbclient(server, tickets(realm, tmp_path), "ls")
    assert done.returncode == 0, done.stdout + done.stderr


# -- the client against a server that lies in the exchange ---------------------------------------
def flip_in_ap_rep(frame):
    """The final SESSION_SETUP answer with one bit of its security buffer's end (inside the
    AP-REP's encrypted part) flipped."""
    command, status = struct.unpack_from("<H", frame, 12)[0], struct.unpack_from("<I", frame, 8)[0]
    if command == wire.SESSION_SETUP and status == wire.STATUS_SUCCESS:
        offset, length = struct.unpack_from("<HH", frame, 64 + 4)
        frame[offset + length - 8] ^= 0x01
    return frame


@pytest.mark.parametrize("tamper", [None, flip_in_ap_rep], ids=["as-sent", "ap-rep-altered"])
def test_the_client_checks_the_servers_ap_rep(realm, start, tmp_path, monkeypatch, tamper):
    """smbring's client (auth="negotiate") on SMB 2.1 without signing, where only mutual
    authentication can tell a server that lies in its last SESSION_SETUP answer: an AP-REP
    altered on the way is a clear ProtocolError and no session; the same logon as sent works."""
    import smbring.client as sc
    server = start()
    env = tickets(realm, tmp_path)
    for name in ("KRB5_CONFIG", "KRB5CCNAME"):
        monkeypatch.setenv(name, env[name])

    async def logon_through_proxy():
        async with TamperingProxy(server.port, tamper or (lambda frame: frame)) as proxy:
            client = await sc.connect("localhost", proxy.port, ALICE, "", "share", auth="negotiate",
                                      dialects=(wire.SMB210,))
            await client.close()

    if tamper is None:
        asyncio.run(asyncio.wait_for(logon_through_proxy(), 60))
        return
    with pytest.raises(sc.ProtocolError, match="the server's token was refused"):
        asyncio.run(asyncio.wait_for(logon_through_proxy(), 60))     # (MIT: "integrity check failed")
    assert f"logon accepted: user {REALM}\\{ALICE}" in server.log_text()     # (the server did)



def test_a_logon_after_another_users_file_work_is_accepted(realm, start, tmp_path):
    """The event loop's thread goes on acting as the last user whose files it touched (it
    switches back to the server only for the server's own work): ALICE's session writes a
    file, then BOB logs on. MIT's acceptor reads the keytab and the replay cache (both the
    server's, 0600 and in its 0700 run directory) at every AP-REQ, so it must run as the
    server, whoever the thread acted as last."""
    server = start()
    (tmp_path / "up.bin").write_bytes(payload(4096))
    for user in (ALICE, BOB, ALICE):
        env = tickets(realm, tmp_path, user)
        done = smbclient(server, env, f"put {tmp_path / 'up.bin'} by-{user}.bin; ls")
        assert done.returncode == 0, (user, done.stdout + done.stderr, server.log_text()[-2000:])
        assert pwd.getpwuid((server.share / f"by-{user}.bin").stat().st_uid).pw_name == user


def test_an_ap_req_replayed_to_another_worker_is_refused(realm, start, tmp_path):
    """With `smbring workers = 2` the workers share one replay cache (the run directory's): an
    AP-REQ accepted by one worker is refused by the other, and by the first again."""
    from smbring.server.control import ask
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    server = start(f"smbring workers = 2\ncontrol socket = {run / 'control'}")
    deadline = time.monotonic() + 20
    while True:
        try:
            if all(w.get("pid") and "error" not in w for w in ask(str(run / "control"))["workers"]):
                break
        except OSError:
            pass
        assert time.monotonic() < deadline, server.log_text()
        time.sleep(0.1)

    def worker_of(client) -> int:
        me = "127.0.0.1:%d" % client.sock.getsockname()[1]
        for _ in range(100):
            for conn in ask(str(run / "control"))["connections"]:
                if conn["client"] == me:
                    return conn["worker"]
            time.sleep(0.05)
        raise AssertionError(f"{me} not in status")

    env = tickets(realm, tmp_path)
    _ctx, token = initiator(realm, env)
    init = spnego.encode_init([spnego.KRB5_OID], token)
    first = logon(server, init)
    assert first[2].status == wire.STATUS_SUCCESS
    accepted_by = worker_of(first[0])
    again = logon(server, init)
    assert again[2].status == STATUS_LOGON_FAILURE, hex(again[2].status)
    # the other worker: the first one stopped while the replay connects, so the other
    # accepts it (the kernel may well give every connection to one worker otherwise)
    import test_workers_handoff as handoff
    other = handoff.connect_while_stopped({"control": str(run / "control")}, accepted_by,
                                          lambda: logon(server, init))
    clients = [first[0], again[0], other[0]]
    assert other[2].status == STATUS_LOGON_FAILURE, hex(other[2].status)
    assert worker_of(other[0]) != accepted_by
    for client in clients:
        client.close()
    assert "replay" in server.log_text().lower()
    still_serves(realm, server, tmp_path)


def test_a_binding_with_another_principals_ticket_is_refused(realm, start, tmp_path):
    """Multichannel with Kerberos: a second connection of the client binds to ALICE's session
    with a fresh AP-REQ of ALICE's (signed with the session's key, as a client binds); BOB's
    valid ticket, signed the same way, is ACCESS_DENIED and leaves the session as it was."""
    from raw import Session
    server = start("server multi channel support = yes")
    guid = os.urandom(16)
    alice, bob = tickets(realm, tmp_path, ALICE), tickets(realm, tmp_path, BOB)

    def connection():
        c = RawClient(server.port)
        assert c.negotiate((wire.SMB311,), client_guid=guid).status == wire.STATUS_SUCCESS
        return c

    def kerberos_leg(c, session, env, **sending):
        ctx, token = initiator(realm, env)
        r = c.session_setup(session, spnego.encode_init([spnego.KRB5_OID], token), **sending)
        if r.status == wire.STATUS_SUCCESS:
            ctx.step(spnego.parse_resp(c.security_buffer(r)).response_token)
        return ctx, r

    c1 = connection()
    s1 = c1.start_logon(None)
    ctx, r = kerberos_leg(c1, s1, alice)
    assert r.status == wire.STATUS_SUCCESS
    c1.establish(s1, session_key(ctx))
    assert r.signature_ok

    def bind(env):
        c = connection()
        channel = Session(id=s1.id, preauth=c.preauth.copy())
        ctx, r = kerberos_leg(c, channel, env, flags=wire.SESSION_FLAG_BINDING, sign=True,
                              signing_key=s1.signing_key)
        return c, channel, ctx, r

    c2, _ch, _ctx, r = bind(bob)
    assert r.status == wire.STATUS_ACCESS_DENIED, hex(r.status)
    assert "binding refused" in server.log_text()
    assert c1.echo(session=s1).status == wire.STATUS_SUCCESS
    c3, channel, ctx, r = bind(alice)
    assert r.status == wire.STATUS_SUCCESS, hex(r.status)
    c3.establish(channel, session_key(ctx))
    assert r.signature_ok, "the channel's key is not derived from the binding's Kerberos key"
    tree = c3.tree_connect(channel, "share")
    assert tree.status == wire.STATUS_SUCCESS
    for c in (c1, c2, c3):
        c.close()


def test_a_session_expires_with_its_ticket_until_it_is_renewed(realm, start, tmp_path):
    """MS-SMB2 3.3.5.2.9, with Session.ExpirationTime the end of the logon's ticket (as smbd
    sets it): once the ticket has ended, the session's requests are answered
    STATUS_NETWORK_SESSION_EXPIRED, but for a CLOSE, a LOGOFF and an unlock (what it holds can
    be let go, nothing more taken); a re-authentication with a fresh ticket brings it back,
    with its opens, locks and tree connect as they were."""
    from smbcore import close_body, create_body, lock_body, query_info_body
    server = start()
    short = tickets(realm, tmp_path, ALICE, REALM, "-l", "4s")
    ended = time.monotonic() + 4
    c = RawClient(server.port)
    c.negotiate()
    session = c.start_logon(None)
    ctx, token = initiator(realm, short)
    r = c.session_setup(session, spnego.encode_init([spnego.KRB5_OID], token))
    assert r.status == wire.STATUS_SUCCESS, hex(r.status)
    ctx.step(spnego.parse_resp(c.security_buffer(r)).response_token)
    c.establish(session, session_key(ctx))
    tree = c.tree(session, "share")
    rw = wire.GENERIC_READ | wire.GENERIC_WRITE

    def opened(name: str) -> bytes:
        r = tree.request(wire.CREATE, create_body(name, rw, wire.FILE_OPEN_IF, 0))
        assert r.status == wire.STATUS_SUCCESS, hex(r.status)
        return r.file_id

    kept, closed = opened("kept"), opened("closed")

    def query(fid: bytes) -> int:
        return tree.request(wire.QUERY_INFO, query_info_body(fid, wire.INFO_FILE, 5)).status   # standard

    lock = wire.LOCK_EXCLUSIVE | wire.LOCK_FAIL_IMMEDIATELY
    assert tree.request(wire.LOCK, lock_body(kept, [(0, 10, lock)])).status == wire.STATUS_SUCCESS
    assert query(kept) == wire.STATUS_SUCCESS
    time.sleep(max(ended - time.monotonic(), 0) + 2 + 1.5)   # its end, the clock skew allowed, a margin
    expired = wire.STATUS_NETWORK_SESSION_EXPIRED
    assert query(kept) == expired
    assert tree.request(wire.CREATE, create_body("new", rw, wire.FILE_OPEN_IF, 0)).status == expired
    assert tree.request(wire.LOCK, lock_body(kept, [(20, 10, lock)])).status == expired
    assert tree.request(wire.LOCK, lock_body(kept, [(0, 10, wire.LOCK_UNLOCK)])).status == wire.STATUS_SUCCESS
    assert tree.request(wire.CLOSE, close_body(closed)).status == wire.STATUS_SUCCESS
    assert not (server.share / "new").exists()
    assert server.log_text().count("expired with its Kerberos ticket") == 1
    # a re-authentication with a fresh ticket (signed, as a client re-authenticates)
    fresh = realm.kinit(f"{ALICE}@{REALM}", PASSWORD, tmp_path / "fresh.ccache")
    ctx, token = initiator(realm, fresh)
    r = c.session_setup(c.start_logon(session), spnego.encode_init([spnego.KRB5_OID], token), sign=True)
    assert r.status == wire.STATUS_SUCCESS, hex(r.status)
    assert query(kept) == wire.STATUS_SUCCESS
    assert tree.request(wire.LOCK, lock_body(kept, [(20, 10, lock)])).status == wire.STATUS_SUCCESS
    assert query(closed) == wire.STATUS_FILE_CLOSED
    assert "re-authenticated" in server.log_text()
    c.close()





@pytest.mark.parametrize("protection", ["", "signed", "sealed", "two channels"])
def test_the_smbring_client_renews_a_session_whose_ticket_ended(realm, start, tmp_path, monkeypatch, protection):
    """Session expiration from the client's side: once the logon's ticket has ended the
    server refuses the session's requests (STATUS_NETWORK_SESSION_EXPIRED), and smbring's
    client logs the session on again, with the ticket renewed in its credential cache
    meanwhile (as a renewal daemon keeps it), then sends the request again (MS-SMB2). A stat,
    a listing, a write and a read through a file opened before the end, a put (WRITEs driven
    by their answers) and a get all go on, in the same session, tree and open. Where no fresh
    ticket can be had, the operation fails with an error and the connections end (no hang,
    no endless retry). Signed and sealed sessions renew signed and sealed; a session of two
    channels renews once, for both. Fails without the renewal: SMBError
    NETWORK_SESSION_EXPIRED."""
    import asyncio

    from smbring.client import connect
    server = start({"signed": "server signing = mandatory", "sealed": "smb encrypt = required"}.get(protection, ""))
    channels = 2 if protection == "two channels" else 1
    ccache = tmp_path / "alice.ccache"
    env = realm.kinit(f"{ALICE}@{REALM}", PASSWORD, ccache, "-l", "4s")
    for name in ("KRB5_CONFIG", "KRB5CCNAME"):
        monkeypatch.setenv(name, env[name])
    data = payload(3_000_000)
    (tmp_path / "up.bin").write_bytes(data)

    async def until_the_ticket_ends(started: float) -> None:
        await asyncio.sleep(max(started + 4 - time.monotonic(), 0) + 2 + 1.5)   # + the skew allowed, a margin

    async def renewed() -> None:
        started = time.monotonic()
        client = await connect("localhost", server.port, share="share", auth="negotiate", channels=channels)
        assert (client.signing, client.encrypting) == (protection == "signed", protection == "sealed")
        assert client.open_channels == channels, client.multichannel_note
        async with client:
            f = await client.open("kept.bin", "w+")
            await f.write(b"before")
            await until_the_ticket_ends(started)
            realm.kinit(f"{ALICE}@{REALM}", PASSWORD, ccache)      # a fresh ticket in the cache
            assert (await client.stat("kept.bin")).size == 6
            assert client.renewals == 1
            await f.write(b" after")
            await f.seek(0)
            assert await f.read() == b"before after"
            await f.close()
            assert "kept.bin" in [e.name async for e in client.listdir("")]
            await client.put(str(tmp_path / "up.bin"), "up.bin")
            await client.get("up.bin", str(tmp_path / "down.bin"))
            assert client.renewals == 1
        assert (tmp_path / "down.bin").read_bytes() == data

    async def a_put_across_the_end() -> None:
        realm.kinit(f"{ALICE}@{REALM}", PASSWORD, ccache, "-l", "4s")
        started = time.monotonic()
        client = await connect("localhost", server.port, share="share", auth="negotiate", channels=channels)
        async with client:
            f = await client.open("across.bin", "w")
            await until_the_ticket_ends(started)
            realm.kinit(f"{ALICE}@{REALM}", PASSWORD, ccache)
            await f.write(data)             # the first WRITEs refused, the rest after the renewal
            await f.close()
            assert client.renewals == 1
        assert (server.share / "across.bin").read_bytes() == data

    async def no_fresh_ticket() -> None:
        realm.kinit(f"{ALICE}@{REALM}", PASSWORD, ccache, "-l", "4s")
        started = time.monotonic()
        client = await connect("localhost", server.port, share="share", auth="negotiate")
        async with client:
            await until_the_ticket_ends(started)
            with pytest.raises(RuntimeError, match="logon"):      # the mechanism's own reason
                await asyncio.wait_for(client.stat("kept.bin"), 30)
            assert not client.connected

    asyncio.run(renewed())
    asyncio.run(a_put_across_the_end())
    asyncio.run(no_fresh_ticket())
    assert server.log_text().count("re-authenticated") >= 2


def test_a_logon_after_another_users_work_reads_the_keytab_as_the_server(realm, start, tmp_path):
    """The event loop's thread acts as the last session's user until the server's own work
    needs root (vfs.identity): the keytab (root's, 0600) is read and the replay cache written
    at each AP-REQ as the server, so a logon that comes while another user's connection has
    just worked, or a re-authentication, is not refused for a key the user cannot read."""
    from smbcore import create_body
    server = start()
    c = RawClient(server.port)
    c.negotiate()
    session = c.start_logon(None)
    ctx, token = initiator(realm, tickets(realm, tmp_path, ALICE))
    r = c.session_setup(session, spnego.encode_init([spnego.KRB5_OID], token))
    assert r.status == wire.STATUS_SUCCESS, hex(r.status)
    ctx.step(spnego.parse_resp(c.security_buffer(r)).response_token)
    c.establish(session, session_key(ctx))
    tree = c.tree(session, "share")
    r = tree.request(wire.CREATE, create_body("alices", wire.GENERIC_WRITE, wire.FILE_CREATE, 0))
    assert r.status == wire.STATUS_SUCCESS, hex(r.status)      # (the thread acts as ALICE now)
    ctx, token = initiator(realm, tickets(realm, tmp_path, ALICE))
    r = c.session_setup(c.start_logon(session), spnego.encode_init([spnego.KRB5_OID], token), sign=True)
    assert r.status == wire.STATUS_SUCCESS, hex(r.status)      # a re-authentication
    r = tree.request(wire.CREATE, create_body("alices2", wire.GENERIC_WRITE, wire.FILE_CREATE, 0))
    assert r.status == wire.STATUS_SUCCESS, hex(r.status)
    done = smbclient(server, tickets(realm, tmp_path, BOB), "ls")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "logon refused" not in server.log_text()
    c.close()



@pytest.mark.skipif(shutil.which("smbtorture") is None, reason="smbtorture not installed")
def test_smbtorture_session_expiry(realm, start, tmp_path):
    """Samba's own tests of an expiring Kerberos session, smb2.session.expire* with -k yes:
    a ticket of 4 seconds; requests refused once it has ended, a re-authentication, then on
    again; signed, encrypted, and what an expired session may still do. smbtorture resolves
    the server's name itself (it has no -I): the machine's own name is used where it
    resolves to 127.0.0.1, where the server listens, with a cifs/ key of that name in a
    keytab of its own."""
    import socket
    name = socket.gethostname()
    try:
        addresses = {a[4][0] for a in socket.getaddrinfo(name, None, socket.AF_INET)}
    except OSError:
        addresses = set()
    if addresses != {"127.0.0.1"}:
        pytest.skip(f"the machine's name {name!r} does not resolve to 127.0.0.1 alone")
    keytab = realm.keytab(tmp_path / "own.keytab", f"cifs/{name}")
    keytab.chmod(0o600)
    server = start(keytab=str(keytab))
    env = dict(realm.env, KRB5CCNAME=f"FILE:{tmp_path / 'torture.ccache'}")
    tests = ["smb2.session.expire1n", "smb2.session.expire1s", "smb2.session.expire1e",
             "smb2.session.expire2s", "smb2.session.expire2e", "smb2.session.expire_disconnect"]
    run = subprocess.run(["smbtorture", f"//{name}/share", "-p", str(server.port), "-U", f"{ALICE}%{PASSWORD}",
                          "--use-kerberos=required", "--realm", REALM, "--format=subunit", *tests],
                         env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    results = re.findall(r"^(success|failure|error|skip): (\S+)", run.stdout, re.M)
    assert len(results) == len(tests) and all(kind == "success" for kind, _ in results), \
        run.stdout[-4000:] + run.stderr[-2000:]
