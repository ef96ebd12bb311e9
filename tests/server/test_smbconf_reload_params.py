"""smb.conf as Samba reads it, with real servers, real Unix accounts and real clients:

- `username map` applies before authentication: the client's name is mapped first and the
  mapped account's password is checked (smbclient, smbprotocol);
- SIGHUP applies a new `username map` and `guest account` to the next logon; the options a
  reload cannot apply are logged as taking effect at restart;
- a logon refused because the user has no Unix account is in the logon audit;
- a parameter name neither Samba nor smbring knows stops the server (and `smbring testparm`)
  with the file, the line and the closest known name; Samba's own names are all known;
  parametric options are ignored with a notice;
- `smb passwd file`, `passdb backend = smbpasswd:PATH` (with a file Samba's smbpasswd made);
  other backends are refused.

Unix accounts are made with useradd (unique names, removed after) where the tests run as
root; the tests that need them are skipped otherwise."""
from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from servers import PASSWORD, USER, account_name_held, free_port, spawn, stop

CLI = [sys.executable, "-m", "smbring.cli"]
ROOT = os.geteuid() == 0
SUFFIX = f"{os.getpid() % 100000}"
SRC, DST, THIRD = (f"srm{n}{SUFFIX}" for n in ("s", "d", "t"))
SRC_PW, DST_PW = "Source-pw1", "Target-pw2"
VISITOR = "visitor"             # an SMB name with no Unix account, mapped by the tests' maps

needs_root = pytest.mark.skipif(not ROOT or not shutil.which("useradd"),
                                reason="acting as Unix accounts needs root (and useradd)")
needs_smbclient = pytest.mark.skipif(not shutil.which("smbclient"), reason="Samba's smbclient is not installed")


# -- helpers ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def accounts():
    """SRC, DST and THIRD as Unix accounts: name -> uid."""
    if not ROOT or not shutil.which("useradd"):
        pytest.skip("making Unix users needs root (and useradd)")
    made = []
    try:
        for name in (SRC, DST, THIRD):
            subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                           check=True, capture_output=True)
            made.append(name)
        yield {name: pwd.getpwnam(name).pw_uid for name in made}
    finally:
        for name in made:
            subprocess.run(["userdel", name], capture_output=True)


def add_user(passdb: Path, name: str, password: str) -> None:
    subprocess.run(CLI + ["user", "add", name, "--passdb", str(passdb), "--password-stdin"],
                   input=password + "\n", text=True, check=True, capture_output=True)


class Served:
    """A `smbring serve --config` process (acting as the Unix accounts: no test mapping) with
    its password file, smb.conf and log."""

    def __init__(self, run: Path, global_options: str, share_options: str = "read only = no",
                 users: dict | None = None, as_accounts: bool = True):
        self.run, self.port = run, free_port()
        self.share = run / "share"
        self.share.mkdir(exist_ok=True)
        self.share.chmod(0o777)         # every account may create files in it
        self.conf = run / "smb.conf"
        self.passdb = run / "passdb"
        self.write(global_options, share_options)
        for name, password in (users or {}).items():
            add_user(self.passdb, name, password)
        self.proc, _, self.log = spawn(run, "--config", str(self.conf), "--control-socket", "none",
                                       port=self.port, accounts=as_accounts)
        # the port is bound before the signal handlers are in place: wait until they are
        deadline = time.monotonic() + 15
        while "smbring serving" not in self.log_text():
            assert time.monotonic() < deadline and self.proc.poll() is None, self.log_text()
            time.sleep(0.05)

    def write(self, global_options: str, share_options: str = "read only = no") -> None:
        self.conf.write_text(f"[global]\nlisten = 127.0.0.1:{self.port}\n{global_options}\n"
                             f"[share]\npath = {self.share}\n{share_options}\n")

    def reload(self) -> str:
        """SIGHUP, then the log line saying how the reload went."""
        done = self.log_text().count("configuration reloaded") + self.log_text().count("reload failed")
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 15
        while True:
            lines = [line for line in self.log_text().splitlines()
                     if "configuration reloaded" in line or "reload failed" in line]
            if len(lines) > done:
                return lines[done]
            assert time.monotonic() < deadline and self.proc.poll() is None, self.log_text()
            time.sleep(0.05)

    def smbclient(self, command: str, user: str | None, password: str = "", port: int | None = None):
        creds = ["-N"] if user is None else ["-U", f"{user}%{password}"]
        return subprocess.run(["smbclient", "//127.0.0.1/share", "-p", str(port or self.port), *creds,
                               "-c", command], capture_output=True, text=True, timeout=60)

    def put(self, name: str, user: str | None, password: str = "") -> int | None:
        """Uploads a file as `user` (None: anonymous): the uid that owns it, None if refused."""
        src = self.run / "upload.txt"
        src.write_text("data\n")
        r = self.smbclient(f"put {src} {name}", user, password)
        target = self.share / name
        if r.returncode != 0 or not target.exists():
            assert "NT_STATUS_LOGON_FAILURE" in r.stdout + r.stderr, r.stdout + r.stderr
            return None
        return target.stat().st_uid

    def log_text(self) -> str:
        return self.log.read_text()

    def stop(self) -> None:
        stop(self.proc)


@pytest.fixture
def served(tmp_path):
    started = []

    def start(*args, **kwargs) -> Served:
        run = tmp_path / f"run{len(started)}"
        run.mkdir()
        server = Served(run, *args, **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def load(tmp_path: Path, text: str):
    from smbring.server.config import load as load_conf
    conf = tmp_path / "smb.conf"
    conf.write_text(text)
    return load_conf(str(conf))


# -- username map before authentication ---------------------------------------------------------
@needs_root
@needs_smbclient
def test_a_mapped_name_logs_on_with_the_target_accounts_password(served, accounts, tmp_path):
    usermap = tmp_path / "users.map"
    usermap.write_text(f"{DST} = {SRC} {VISITOR}\n")
    server = served(f"username map = {usermap}", users={SRC: SRC_PW, DST: DST_PW})
    # SRC's name maps to DST: DST's password logs on, and the session acts as DST
    assert server.put("a.txt", SRC, DST_PW) == accounts[DST]
    # SRC's own password is refused, though the password file holds it
    assert server.put("b.txt", SRC, SRC_PW) is None
    assert "smbring.audit: logon refused" in server.log_text()
    # a name the password file does not hold, mapped to DST, logs on with DST's password
    assert server.put("c.txt", VISITOR, DST_PW) == accounts[DST]
    assert server.put("d.txt", VISITOR, SRC_PW) is None
    # DST itself is not mapped
    assert server.put("e.txt", DST, DST_PW) == accounts[DST]
    # another spelling of the mapped name (case) is the same name
    assert server.put("f.txt", SRC.upper(), DST_PW) == accounts[DST]


@needs_root
def test_a_mapped_name_with_smbprotocol(served, accounts, tmp_path):
    smbclient = pytest.importorskip("smbclient")       # the smbprotocol package's high-level API
    from smbprotocol.exceptions import LogonFailure
    usermap = tmp_path / "users.map"
    usermap.write_text(f"{DST} = {SRC}\n")
    server = served(f"username map = {usermap}", users={SRC: SRC_PW, DST: DST_PW})
    try:
        with pytest.raises(LogonFailure):
            smbclient.register_session("127.0.0.1", username=SRC, password=SRC_PW, port=server.port,
                                       auth_protocol="ntlm")
        smbclient.register_session("127.0.0.1", username=SRC, password=DST_PW, port=server.port,
                                   auth_protocol="ntlm")
        with smbclient.open_file(r"\\127.0.0.1\share\p.txt", mode="w", port=server.port) as f:
            f.write("written by smbprotocol")
        assert (server.share / "p.txt").stat().st_uid == accounts[DST]
    finally:
        smbclient.reset_connection_cache()


@needs_root
@needs_smbclient
def test_a_map_to_a_name_without_a_password_refuses_the_source_password(served, accounts, tmp_path):
    # THIRD is a Unix account but not in the password file: nobody logs on through the map
    usermap = tmp_path / "users.map"
    usermap.write_text(f"{THIRD} = {SRC}\n")
    server = served(f"username map = {usermap}", users={SRC: SRC_PW})
    assert server.put("a.txt", SRC, SRC_PW) is None
    assert not (server.share / "a.txt").exists()


# -- a user without a Unix account ---------------------------------------------------------------
@needs_root
@needs_smbclient
def test_a_user_without_a_unix_account_is_refused_and_audited(served, accounts, tmp_path):
    # USER (in every test password file) has no Unix account; VISITOR maps to a name without one
    usermap = tmp_path / "users.map"
    usermap.write_text(f"nosuchaccount{SUFFIX} = {VISITOR}\n")
    server = served(f"username map = {usermap}", users={f"nosuchaccount{SUFFIX}": DST_PW})
    with account_name_held(USER):       # (other tests make an account of that name for a while)
        with pytest.raises(KeyError):
            pwd.getpwnam(USER)
        assert server.put("a.txt", USER, PASSWORD) is None
    assert server.put("b.txt", VISITOR, DST_PW) is None
    log = server.log_text()
    assert f"smbring.audit: logon refused: user {USER} from 127.0.0.1: no Unix account" in log, log
    assert f"smbring.audit: logon refused: user {VISITOR} from 127.0.0.1: no Unix account" in log, log


# -- SIGHUP ------------------------------------------------------------------------------------------
@needs_root
@needs_smbclient
def test_sighup_applies_a_new_username_map(served, accounts, tmp_path):
    # one password for all three, so that only the mapping decides who the session is
    first, second = tmp_path / "first.map", tmp_path / "second.map"
    first.write_text(f"{SRC} = {VISITOR}\n")
    second.write_text(f"{DST} = {VISITOR}\n")
    server = served(f"username map = {first}", users={VISITOR: PASSWORD, SRC: PASSWORD, DST: PASSWORD})
    assert server.put("before.txt", VISITOR, PASSWORD) == accounts[SRC]
    server.write(f"username map = {second}")
    assert "configuration reloaded" in server.reload()
    assert server.put("after.txt", VISITOR, PASSWORD) == accounts[DST]
    # a map that is not a file: the reload fails and the map in force stays
    server.write(f"username map = {tmp_path / 'missing.map'}")
    assert "reload failed" in server.reload()
    assert server.put("still.txt", VISITOR, PASSWORD) == accounts[DST]
    # without a map, VISITOR is VISITOR again: no Unix account, refused
    server.write("")
    assert "configuration reloaded" in server.reload()
    assert server.put("unmapped.txt", VISITOR, PASSWORD) is None


@needs_root
@needs_smbclient
def test_sighup_applies_a_new_guest_account(served, accounts):
    options = "read only = no\nguest ok = yes"
    server = served(f"guest account = {SRC}", options)
    assert server.put("before.txt", None) == accounts[SRC]
    server.write(f"guest account = {DST}", options)
    assert "configuration reloaded" in server.reload()
    assert server.put("after.txt", None) == accounts[DST]
    # an account the system does not have: the reload fails, the guest account stays
    server.write(f"guest account = nosuchaccount{SUFFIX}", options)
    assert "reload failed" in server.reload()
    assert server.put("still.txt", None) == accounts[DST]


@needs_smbclient
def test_options_a_reload_cannot_apply_are_named_as_taking_effect_at_restart(served, tmp_path):
    server = served("server string = first", as_accounts=False)
    other_port = free_port()
    # listen and control socket: set up once, at start; server string: applied
    server.conf.write_text(f"[global]\nlisten = 127.0.0.1:{other_port}\n"
                           f"control socket = {tmp_path / 'control'}\nserver string = second\n"
                           f"[share]\npath = {server.share}\nread only = no\n")
    assert "configuration reloaded" in server.reload()
    log = server.log_text()
    assert "listen takes effect at restart" in log, log
    assert "control socket takes effect at restart" in log, log
    assert "server string takes effect" not in log
    # still on the port it started on
    assert server.smbclient("ls", USER, PASSWORD).returncode == 0
    assert server.smbclient("ls", USER, PASSWORD, port=other_port).returncode != 0
    assert not (tmp_path / "control").exists()


@needs_smbclient
def test_a_misspelt_option_on_reload_keeps_the_configuration_in_force(served):
    server = served("", as_accounts=False)
    server.write("", "read only = no\nvaild users = nobody")
    line = server.reload()
    assert "reload failed" in line and "unknown parameter 'vaild users' (did you mean 'valid users'?)" in line
    assert server.smbclient("ls", USER, PASSWORD).returncode == 0


# -- unknown parameters --------------------------------------------------------------------------------
def test_an_unknown_parameter_stops_the_server_with_file_line_and_a_suggestion(tmp_path):
    from smbring.server.config import ConfigError
    conf = tmp_path / "smb.conf"
    for written, meant in [("raed only", "read only"), ("vaild users", "valid users"),
                           ("read_only", "read only"), ("guest okay", "guest ok"),
                           ("server sigining", "server signing")]:
        with pytest.raises(ConfigError) as e:
            load(tmp_path, f"[global]\nworkgroup = W\n[s]\npath = {tmp_path}\n{written} = no\n")
        assert str(e.value) == f"{conf}:5: unknown parameter '{written}' (did you mean '{meant}'?)"
    # nothing close: no suggestion
    with pytest.raises(ConfigError) as e:
        load(tmp_path, f"[s]\npath = {tmp_path}\nfrobnicate = 3\n")
    assert str(e.value) == f"{conf}:3: unknown parameter 'frobnicate'"
    # in [global], and in an included file: that file's name and line
    (tmp_path / "inc.conf").write_text("# included\n\nmin protcol = SMB3\n")
    with pytest.raises(ConfigError) as e:
        load(tmp_path, f"[global]\ninclude = inc.conf\n[s]\npath = {tmp_path}\n")
    assert str(e.value) == (f"{tmp_path / 'inc.conf'}:3: unknown parameter 'min protcol' "
                            "(did you mean 'min protocol'?)")


def test_names_compare_as_samba_compares_them(tmp_path):
    cfg = load(tmp_path, f"[global]\nServer  Signing = mandatory\n[s]\npath = {tmp_path}\nReadOnly = no\n"
                         "WRITE LIST = alice\n")
    assert cfg.signing_required and not cfg.shares["s"].read_only
    assert cfg.shares["s"].write_list == ["alice"]


def test_parametric_options_are_ignored_with_a_notice(tmp_path):
    cfg = load(tmp_path, f"[global]\nidmap config * : backend = tdb\nfruit:metadata = stream\n"
                         f"[s]\npath = {tmp_path}\nvfs objects = fruit\nfruit : resource = xattr\n"
                         "acl_xattr:ignore system acls = yes\n")
    notice = [n for n in cfg.notices if n.startswith("parametric options")]
    assert len(notice) == 1, cfg.notices
    for name in ("idmap config * : backend", "fruit:metadata", "fruit : resource", "acl_xattr:ignore system acls"):
        assert name in notice[0]


def test_samba_parameters_smbring_does_not_implement_are_ignored_with_a_notice(tmp_path):
    cfg = load(tmp_path, f"[global]\nwinbind use default domain = yes\nclient min protocol = SMB3\n"
                         f"[s]\npath = {tmp_path}\nmap acl inherit = no\ndfree cache time = 10\n")
    ignored = " ".join(n for n in cfg.notices if "ignored" in n)
    for name in ("winbind use default domain", "client min protocol", "map acl inherit", "dfree cache time"):
        assert name in ignored


def test_every_parameter_of_the_installed_samba_is_known():
    if not shutil.which("testparm"):
        pytest.skip("Samba's testparm is not installed")
    from smbring.server.smbconf_options import known
    out = subprocess.run(["testparm", "-sv", "/dev/null"], capture_output=True, text=True, timeout=60).stdout
    names = {line.split("=")[0].strip() for line in out.splitlines()
             if line.startswith("\t") and "=" in line}
    assert len(names) > 400, out[:500]
    assert [n for n in names if ":" not in n and not known(n)] == []


def test_testparm_and_serve_report_an_unknown_parameter(tmp_path):
    conf = tmp_path / "smb.conf"
    conf.write_text(f"[global]\nworkgroup = W\n[s]\npath = {tmp_path}\nhosts alow = 10.\n")
    expected = f"{conf}:5: unknown parameter 'hosts alow' (did you mean 'hosts allow'?)"
    r = subprocess.run(CLI + ["testparm", str(conf)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and expected in r.stderr, r.stderr
    r = subprocess.run(CLI + ["serve", "--config", str(conf), "--control-socket", "none"],
                       capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, SMBRING_PASSDB=str(tmp_path / "passdb")))
    assert r.returncode == 2 and expected in r.stderr, r.stderr


def test_the_stock_debian_smb_conf_loads_and_serves(tmp_path):
    stock = Path("/etc/samba/smb.conf")
    if not stock.is_file():
        pytest.skip("no /etc/samba/smb.conf here")
    r = subprocess.run(CLI + ["testparm", str(stock)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    # the same file, its log file moved under tmp_path (it logs to /var/log/samba)
    text = "\n".join(f"log file = {tmp_path}/log.smbd" if line.strip().startswith("log file") else line
                     for line in stock.read_text().splitlines())
    (tmp_path / "share").mkdir()
    conf = tmp_path / "smb.conf"
    conf.write_text(text + f"\n[data]\npath = {tmp_path / 'share'}\n")
    port = free_port()
    proc, _, _ = spawn(tmp_path, "--config", str(conf), "--listen", f"127.0.0.1:{port}",
                       "--control-socket", "none", port=port)
    try:
        if shutil.which("smbclient"):
            r = subprocess.run(["smbclient", "//127.0.0.1/data", "-p", str(port), "-U", f"{USER}%{PASSWORD}",
                                "-c", "ls"], capture_output=True, text=True, timeout=60)
            assert r.returncode == 0, r.stdout + r.stderr
    finally:
        stop(proc)


# -- the password file ---------------------------------------------------------------------------------
def test_smb_passwd_file_and_passdb_backend_name_the_password_file(tmp_path):
    from smbring.server.config import ConfigError
    share = f"[s]\npath = {tmp_path}\n"
    assert load(tmp_path, f"[global]\nsmb passwd file = /srv/a\n{share}").passdb == "/srv/a"
    assert load(tmp_path, f"[global]\npassdb = /srv/b\n{share}").passdb == "/srv/b"     # smbring's name
    assert load(tmp_path, f"[global]\npassdb backend = smbpasswd:/srv/c\n{share}").passdb == "/srv/c"
    assert load(tmp_path, f"[global]\npassdb backend = smbpasswd\nsmb passwd file = /srv/d\n{share}").passdb == "/srv/d"
    assert load(tmp_path, f"[global]\npassdb backend = smbpasswd\n{share}").passdb == "/etc/samba/smbpasswd"
    assert load(tmp_path, f"[global]\npassdb backend = smbpasswd:/srv/e\nsmb passwd file = /srv/f\n{share}").passdb == "/srv/e"
    assert load(tmp_path, share).passdb is None            # smbring's default file
    cfg = load(tmp_path, f"[global]\npassdb = /srv/b\n{share}")
    assert ("smb passwd file", "/srv/b") in cfg.sections[0][1]      # testparm shows Samba's name
    for backend in ("tdbsam", "tdbsam:/var/lib/samba/private/passdb.tdb"):
        with pytest.raises(ConfigError, match="smbpasswd files only, not tdbsam; export the users with `pdbedit"):
            load(tmp_path, f"[global]\npassdb backend = {backend}\n{share}")
    for backend in ("ldapsam:ldap://localhost", "samba_dsdb", "nonsense"):
        with pytest.raises(ConfigError, match="only the smbpasswd backend is supported"):
            load(tmp_path, f"[global]\npassdb backend = {backend}\n{share}")
    conf = tmp_path / "smb.conf"
    conf.write_text(f"[global]\npassdb backend = tdbsam\n{share}")
    r = subprocess.run(CLI + ["testparm", str(conf)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "tdbsam" in r.stderr


@needs_root
@needs_smbclient
def test_a_samba_made_smbpasswd_file_named_by_passdb_backend(served, accounts, tmp_path):
    if not shutil.which("smbpasswd"):
        pytest.skip("Samba's smbpasswd is not installed")
    # Samba's own tool writes the file, under a Samba configuration naming it the same way
    made = tmp_path / "samba-made" / "smbpasswd"
    made.parent.mkdir()
    samba_conf = tmp_path / "samba.conf"
    for d in ("private", "lock", "state", "cache"):
        (tmp_path / d).mkdir()
    samba_conf.write_text(f"[global]\npassdb backend = smbpasswd:{made}\nprivate dir = {tmp_path}/private\n"
                          f"lock directory = {tmp_path}/lock\nstate directory = {tmp_path}/state\n"
                          f"cache directory = {tmp_path}/cache\npid directory = {tmp_path}\n")
    subprocess.run(["smbpasswd", "-c", str(samba_conf), "-s", "-a", SRC], input=f"{SRC_PW}\n{SRC_PW}\n",
                   text=True, check=True, capture_output=True)
    server = served(f"passdb backend = smbpasswd:{made}")
    assert server.put("a.txt", SRC, SRC_PW) == accounts[SRC]
    assert server.put("b.txt", SRC, "wrong") is None
    # the file in SMBRING_PASSDB (USER's) is not the one read
    assert server.put("c.txt", USER, PASSWORD) is None
    # smb passwd file names it too
    other = served(f"smb passwd file = {made}")
    assert other.put("d.txt", SRC, SRC_PW) == accounts[SRC]


def test_the_example_configuration_names_the_password_file_as_samba_does():
    from smbring.server.config import load as load_conf
    example = Path(__file__).parents[2] / "contrib" / "smb.conf.example"
    cfg = load_conf(str(example))
    assert cfg.passdb == "/var/lib/smbring/passdb"
    assert "passdb backend" in cfg.options


@needs_root
@needs_smbclient
def test_user_lists_name_the_mapped_unix_account(served, accounts, tmp_path):
    """As in Samba, `valid users` (and the other lists) are checked against the Unix account
    the username map gave, not the name the client typed: a list naming the typed name does
    not let the mapped session in, one naming the account does."""
    usermap = tmp_path / "users.map"
    usermap.write_text(f"{DST} = {SRC}\n")
    server = served(f"username map = {usermap}", share_options=f"read only = no\nvalid users = {DST}",
                    users={SRC: SRC_PW, DST: DST_PW})
    r = server.smbclient("ls", SRC, DST_PW)                 # typed SRC, acts as DST: admitted
    assert r.returncode == 0, r.stdout + r.stderr
    server.write(f"username map = {usermap}", f"read only = no\nvalid users = {SRC}")
    assert "configuration reloaded" in server.reload()
    r = server.smbclient("ls", SRC, DST_PW)                 # the list names the typed name only
    assert r.returncode != 0 and "NT_STATUS_ACCESS_DENIED" in r.stdout + r.stderr, r.stdout + r.stderr
