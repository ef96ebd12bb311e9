"""smbring's client logs on with Kerberos to Samba's smbd: a Samba Active Directory domain
controller provisioned for the module (`samba-tool domain provision`, its own KDC and file
server) in a network namespace of its own, so that its fixed ports (88, 389, 445, ...) meet
nothing else; the client runs in that namespace (`ip netns exec`), the DC's name in the
namespace's own hosts file (/etc/netns/NAME/hosts), a krb5.conf that names the KDC's address.

- `smbring put/get/ls --kerberos` with a ticket from kinit: byte-exact, plain, signed and
  sealed; the service ticket the client asked for is cifs/ of the DC (klist);
- no ticket: `--kerberos` does not fall back to asking for a password; it fails, clearly.

Needs root, `ip netns`, and Samba's AD DC packages (samba-ad-dc, samba-ad-provision; make
system-deps installs them as root); skipped otherwise, saying so."""
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from servers import searchable_to

if os.geteuid() != 0 or not shutil.which("ip"):
    pytest.skip("a domain controller in a network namespace needs root and ip", allow_module_level=True)
if not (shutil.which("samba-tool") and shutil.which("samba") and shutil.which("kinit")
        and Path("/usr/share/samba/setup/ad-schema").is_dir()
        and any(Path("/usr/lib").glob("*/samba/ldb/samba_dsdb.so"))):
    pytest.skip("Samba's AD DC is not installed (samba-ad-dc, samba-ad-provision, krb5-user)",
                allow_module_level=True)
pytest.importorskip("gssapi", reason="Kerberos in smbring's client needs gssapi (smbring[kerberos])")

REALM, DOMAIN, HOST = "DC.SMBRING.TEST", "DCTEST", "dc1"
FQDN = f"{HOST}.dc.smbring.test"
ADDRESS = "127.0.0.9"
USER, PASSWORD = "alice", "Kerberos-pw1!x"
CLI = [sys.executable, "-m", "smbring.cli"]


class DomainController:
    def __init__(self, top: Path):
        self.top = top
        self.netns = f"smbringdc{os.getpid()}"
        self.proc = None

    def in_netns(self, *cmd: str) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *cmd]

    def start(self) -> None:
        top = self.top
        subprocess.run(["samba-tool", "domain", "provision", f"--realm={REALM}", f"--domain={DOMAIN}",
                        f"--host-name={HOST}", "--adminpass=Admin-pw1!x", "--server-role=dc",
                        "--dns-backend=NONE", f"--targetdir={top}", f"--option=interfaces={ADDRESS}",
                        "--option=bind interfaces only=yes"], check=True, capture_output=True, timeout=300)
        conf = top / "etc" / "smb.conf"
        text = conf.read_text()
        # the file server and what a logon needs; not NetBIOS, replication, DNS updates
        text = "\n".join(("\tserver services = s3fs, rpc, ldap, kdc, winbindd"
                          if line.strip().startswith("server services") else
                          f"\tlog file = {top}/log.%m" if line.strip().startswith("log file") else line)
                         for line in text.splitlines())
        (top / "share").mkdir(mode=0o777)
        (top / "share").chmod(0o777)
        searchable_to(top / "share")        # (the domain's user acts as a uid of winbind's)
        # (its pid file of its own: not the system's /run/samba, where a packaged samba keeps one)
        text = text.replace("[global]", f"[global]\n\tpid directory = {top}", 1)
        conf.write_text(text + f"\n[share]\n\tpath = {top}/share\n\tread only = No\n")
        subprocess.run(["samba-tool", "user", "create", USER, PASSWORD, "-H", str(top / "private" / "sam.ldb")],
                       check=True, capture_output=True, timeout=120)
        (top / "krb5.conf").write_text(
            f"[libdefaults]\n\tdefault_realm = {REALM}\n\tdns_lookup_realm = false\n\tdns_lookup_kdc = false\n"
            f"\trdns = false\n\tdns_canonicalize_hostname = false\n"
            f"[realms]\n{REALM} = {{\n\tkdc = {ADDRESS}\n}}\n[domain_realm]\n\t.dc.smbring.test = {REALM}\n")
        subprocess.run(["ip", "netns", "add", self.netns], check=True, capture_output=True)
        hosts = Path("/etc/netns") / self.netns
        hosts.mkdir(parents=True, exist_ok=True)
        (hosts / "hosts").write_text(f"127.0.0.1 localhost\n{ADDRESS} {FQDN} {HOST}\n")
        for cmd in (["ip", "link", "set", "lo", "up"], ["ip", "addr", "add", f"{ADDRESS}/8", "dev", "lo"]):
            subprocess.run(self.in_netns(*cmd), check=True, capture_output=True)
        self.log = open(top / "samba.out", "w")
        # (-i: in the foreground, logging to its output; it ends when its input does, so that
        # stays an open pipe until stop)
        self.proc = subprocess.Popen(self.in_netns("samba", "-i", "-s", str(conf)), stdin=subprocess.PIPE,
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.wait_listening(445)
        self.wait_listening(88)

    def wait_listening(self, port: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            listening = subprocess.run(self.in_netns("ss", "-Hltn", f"sport = :{port}"), capture_output=True,
                                       text=True).stdout
            if listening.strip():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise RuntimeError(f"the domain controller does not listen on {port}: "
                           + (self.top / "samba.out").read_text()[-2000:])

    def kinit(self, ccache: Path) -> dict:
        env = dict(os.environ, KRB5_CONFIG=str(self.top / "krb5.conf"), KRB5CCNAME=f"FILE:{ccache}")
        subprocess.run(self.in_netns("kinit", f"{USER}@{REALM}"), input=PASSWORD + "\n", text=True, env=env,
                       check=True, capture_output=True, timeout=60)
        return env

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            self.proc.stdin.close()
            self.log.close()
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)
        shutil.rmtree(Path("/etc/netns") / self.netns, ignore_errors=True)


@pytest.fixture(scope="module")
def dc(tmp_path_factory):
    top = tmp_path_factory.mktemp("dc")
    controller = DomainController(top)
    try:
        controller.start()
        yield controller
    finally:
        controller.stop()


def smbring(dc, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(dc.in_netns(*CLI, *args), env=env, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("flags", [[], ["--sign"], ["--encrypt"]], ids=["plain", "signed", "sealed"])
def test_put_get_ls_with_a_ticket(dc, tmp_path, flags):
    env = dc.kinit(tmp_path / "alice.cc")
    data = hashlib.sha256(b"samba dc").digest() * 40_000 + b"end"
    (tmp_path / "up.bin").write_bytes(data)
    url = f"smb://{FQDN}/share"
    name = f"up-{len(flags) and flags[0][2:] or 'plain'}.bin"
    for args in (["put", "--kerberos", "--no-progress", *flags, f"{url}/{name}", str(tmp_path / "up.bin")],
                 ["get", "--kerberos", "--no-progress", *flags, f"{url}/{name}", str(tmp_path / "down.bin")]):
        done = smbring(dc, env, *args)
        assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "down.bin").read_bytes() == data
    assert (dc.top / "share" / name).read_bytes() == data
    listed = smbring(dc, env, "ls", "--kerberos", *flags, url)
    assert name in listed.stdout, listed.stdout + listed.stderr
    tickets = subprocess.run(["klist"], env=env, capture_output=True, text=True).stdout
    assert f"cifs/{FQDN}@{REALM}" in tickets, tickets      # (a Kerberos logon to this server)


def test_without_a_ticket_kerberos_fails_clearly(dc, tmp_path):
    env = dict(os.environ, KRB5_CONFIG=str(dc.top / "krb5.conf"), KRB5CCNAME=f"FILE:{tmp_path / 'none.cc'}")
    done = smbring(dc, env, "ls", "--kerberos", f"smb://{FQDN}/share")
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert done.stderr.strip(), "a failed logon says why"
