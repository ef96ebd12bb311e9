"""A real MIT Kerberos realm on loopback for the Kerberos logon tests: a KDC database, kdc.conf
and krb5.conf in a fresh directory, krb5kdc on a random loopback port, service principals with
a keytab, user principals, and tickets got with kinit (the password on stdin) into a ccache of
the caller's.

    realm = Realm.start(directory)       # krb5kdc running; realm.env: KRB5_CONFIG, KRB5_KDC_PROFILE
    realm.add_principal("alice", "pw")
    realm.keytab(path, "cifs/localhost", "host/localhost")
    realm.kinit("alice", "pw", ccache)   # -> env with KRB5CCNAME=ccache
    realm.stop()

krb5.conf turns off what would leave loopback or depend on the machine's names: no DNS
lookups, no reverse lookups (`rdns = false`), no host name canonicalisation
(`dns_canonicalize_hostname = false`), the KDC only at 127.0.0.1:PORT. `Realm.missing()`
says what is not installed (the tests skip with it)."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

TOOLS = {"krb5kdc": "krb5-kdc", "kdb5_util": "krb5-kdc", "kadmin.local": "krb5-admin-server",
         "kinit": "krb5-user", "kvno": "krb5-user"}
SBIN = ("/usr/sbin", "/usr/bin", "/sbin")


def tool(name: str) -> str | None:
    return shutil.which(name) or next((f"{d}/{name}" for d in SBIN if os.access(f"{d}/{name}", os.X_OK)), None)


def missing() -> str | None:
    """Why a realm cannot be made here (None: it can)."""
    absent = sorted({f"{name} ({package})" for name, package in TOOLS.items() if tool(name) is None})
    if absent:
        return "the MIT Kerberos tools are not installed: " + ", ".join(absent)
    import importlib.util
    if importlib.util.find_spec("gssapi") is None:      # (the acceptor's and the tests' initiator)
        return "the python gssapi package is not installed"
    return None


def _free_port() -> int:
    # a port free for both TCP and UDP (the KDC listens on both)
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            with socket.socket() as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port for the KDC")


class Realm:
    def __init__(self, directory: Path, name: str, port: int, others: tuple[str, ...] = ()):
        self.directory, self.name, self.port, self.others = directory, name, port, others
        self.env = dict(os.environ, KRB5_CONFIG=str(directory / "krb5.conf"),
                        KRB5_KDC_PROFILE=str(directory / "kdc.conf"),
                        KRB5CCNAME=f"FILE:{directory / 'nobody.ccache'}",
                        KRB5_KTNAME=f"FILE:{directory / 'no.keytab'}",
                        KRB5RCACHEDIR=str(directory))
        self.proc: subprocess.Popen | None = None

    @classmethod
    def start(cls, directory: Path, name: str = "SMBRING.TEST", others: tuple[str, ...] = ()) -> "Realm":
        """A realm `name` (and `others`, served by the same KDC, with no trust between them)
        in `directory`, its KDC started."""
        directory.mkdir(parents=True, exist_ok=True)
        realm = cls(directory, name, _free_port(), others)
        realm._write_conf()
        for each in (name, *others):
            realm._run(tool("kdb5_util"), "-r", each, "create", "-s", "-W", "-P", "master-" + each)
        realm._start_kdc()
        return realm

    def _write_conf(self) -> None:
        d = self.directory
        realms = ""
        kdc_realms = ""
        for each in (self.name, *self.others):
            realms += f"  {each} = {{\n    kdc = 127.0.0.1:{self.port}\n  }}\n"
            kdc_realms += (f"  {each} = {{\n    database_name = {d}/principal-{each}\n"
                           f"    key_stash_file = {d}/stash-{each}\n"
                           f"    acl_file = {d}/kadm5.acl\n"
                           f"    kdc_ports = {self.port}\n    kdc_tcp_ports = {self.port}\n"
                           f"    max_life = 10h\n    max_renewable_life = 0\n"
                           f"    supported_enctypes = aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal\n"
                           "  }\n")
        (d / "kadm5.acl").write_text("")
        (d / "kdc.conf").write_text(
            "[kdcdefaults]\n"
            f"  kdc_ports = {self.port}\n  kdc_tcp_ports = {self.port}\n"
            f"[realms]\n{kdc_realms}"
            f"[logging]\n  kdc = FILE:{d}/kdc.log\n")
        (d / "krb5.conf").write_text(
            "[libdefaults]\n"
            f"  default_realm = {self.name}\n"
            "  dns_lookup_kdc = false\n  dns_lookup_realm = false\n"
            "  rdns = false\n  dns_canonicalize_hostname = false\n"
            "  ignore_acceptor_hostname = false\n"
            "  udp_preference_limit = 1\n"
            # (the tests' expired tickets are refused seconds after they end, not 5 minutes)
            "  clockskew = 2\n"
            f"[realms]\n{realms}"
            # (every realm trusts every other directly, where a trust is made: `trust`)
            "[capaths]\n" + "".join(f"  {a} = {{\n" + "".join(f"    {b} = .\n" for b in (self.name, *self.others) if b != a)
                                     + "  }\n" for a in (self.name, *self.others)) +
            f"[domain_realm]\n  localhost = {self.name}\n  .localhost = {self.name}\n  .smbring.test = {self.name}\n")

    def _run(self, *cmd: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        done = subprocess.run(cmd, env=self.env, input=stdin, capture_output=True, text=True, timeout=60)
        if done.returncode:
            raise RuntimeError(f"{' '.join(cmd)}: {done.stdout}{done.stderr}")
        return done

    def _start_kdc(self) -> None:
        log = open(self.directory / "krb5kdc.out", "w")
        # -n: in the foreground (stopped by the fixture); -P: its pid file in the realm's directory
        self.proc = subprocess.Popen([tool("krb5kdc"), "-n", "-r", self.name,
                                      *[a for o in self.others for a in ("-r", o)],
                                      "-P", str(self.directory / "krb5kdc.pid")],
                                     env=self.env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("krb5kdc ended: " + (self.directory / "krb5kdc.out").read_text())
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("krb5kdc did not listen")

    def kadmin(self, query: str, realm: str | None = None) -> str:
        done = self._run(tool("kadmin.local"), "-r", realm or self.name, "-q", query)
        return done.stdout + done.stderr

    def add_principal(self, name: str, password: str | None = None, realm: str | None = None,
                      options: str = "") -> str:
        """The principal `name` (in `realm`, default the realm's own), with `password`, or a
        random key. Returns its full name."""
        realm = realm or self.name
        full = f"{name}@{realm}"
        key = f"-pw {password}" if password is not None else "-randkey"
        out = self.kadmin(f"addprinc {options} {key} {full}", realm)
        if "created" not in out and "already exists" not in out:
            raise RuntimeError(f"addprinc {full}: {out}")
        return full

    def trust(self, client_realm: str, service_realm: str) -> None:
        """Users of `client_realm` get tickets for services of `service_realm` (the cross-realm
        key krbtgt/SERVICE@CLIENT, the same in both databases)."""
        shared = f"trust-{client_realm}-{service_realm}"
        for database in (client_realm, service_realm):
            out = self.kadmin(f"addprinc -pw {shared} krbtgt/{service_realm}@{client_realm}", database)
            if "created" not in out and "already exists" not in out:
                raise RuntimeError(f"cross-realm key in {database}: {out}")

    def keytab(self, path: Path, *principals: str, realm: str | None = None) -> Path:
        """A keytab at `path` with keys of `principals` (made with random keys where absent)."""
        realm = realm or self.name
        for name in principals:
            self.add_principal(name, realm=realm)
            # (-norandkey: the principal's key as it is, so keytabs made one after another agree)
            self.kadmin(f"ktadd -k {path} -norandkey {name}@{realm}", realm)
        return path

    def kinit(self, principal: str, password: str, ccache: Path, *options: str) -> dict:
        """Tickets for `principal` in the ccache file `ccache`; the environment that uses them."""
        env = dict(self.env, KRB5CCNAME=f"FILE:{ccache}")
        done = subprocess.run([tool("kinit"), *options, principal], env=env, input=password + "\n",
                              capture_output=True, text=True, timeout=60)
        if done.returncode:
            raise RuntimeError(f"kinit {principal}: {done.stdout}{done.stderr}")
        return env

    def kvno(self, env: dict, service: str) -> None:
        """A service ticket for `service` into the ccache `env` names."""
        done = subprocess.run([tool("kvno"), service], env=env, capture_output=True, text=True, timeout=60)
        if done.returncode:
            raise RuntimeError(f"kvno {service}: {done.stdout}{done.stderr}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
