"""Real `smbring serve --config smb.conf` processes for the smb.conf tests: write a file,
start a server on a free loopback port, run smbclient or a raw client against it. Every server
a test starts is stopped when it ends (the `smbconf` fixture)."""
from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from servers import PASSWORD, USER, account_name_held, spawn, stop

sys.path.insert(0, str(Path(__file__).parent.parent / "security"))   # raw.py

OTHER, OTHER_PASSWORD = "daemon", "Other-pw2"    # a Unix user (group daemon) in the password file


@dataclass
class ConfServer:
    port: int
    proc: object
    root: Path
    log: Path
    conf: Path
    env: dict = field(default_factory=dict)

    def smbclient(self, share: str, command: str, *extra: str, user: str | None = USER,
                  password: str = PASSWORD, host: str = "127.0.0.1") -> subprocess.CompletedProcess:
        """smbclient //host/share -c command; `user=None` logs on anonymously (-N)."""
        creds = ["-N"] if user is None else ["-U", f"{user}%{password}"]
        return subprocess.run(["smbclient", f"//{host}/{share}", "-p", str(self.port), *creds,
                               *extra, "-c", command], capture_output=True, text=True, timeout=60)

    def raw(self, source: str | None = None, timeout: float = 10.0):
        from raw import RawClient
        return RawClient(self.port, timeout=timeout, source=source)

    def log_text(self) -> str:
        return self.log.read_text()


def write_conf(path: Path, global_options: str, shares: dict[str, str]) -> Path:
    text = "[global]\n" + global_options + "\n"
    for name, options in shares.items():
        text += f"[{name}]\n{options}\n"
    path.write_text(text)
    return path


@pytest.fixture
def smbconf(tmp_path):
    """start(global options, {share: options}, *serve_args) -> ConfServer; `listen` is added
    to [global]. Each share's directory is tmp_path/<share> unless its options give a path."""
    if not shutil.which("smbclient"):
        pytest.skip("Samba's smbclient is not installed")
    started, accounts_made = [], []
    cleanup = ExitStack()

    def start(global_options: str = "", shares: dict[str, str] | None = None, *serve_args: str,
              users: tuple = (), preexec_fn=None, accounts: bool = False) -> ConfServer:
        """`accounts`: as root, USER gets a real Unix account of its name for the test, and
        every session acts as its own account (no mapping of USER to root), so user lists
        and %u see the names the test wrote."""
        shares = shares or {"share": "read only = no"}
        if accounts and os.geteuid() == 0 and not accounts_made:
            accounts_made.append(cleanup.enter_context(unix_account(USER)))
        run = tmp_path / f"run{len(started)}"
        run.mkdir()
        body = {}
        for name, options in shares.items():
            if "path" not in options.lower() and name.lower() not in ("homes", "printers"):
                (tmp_path / name).mkdir(exist_ok=True)
                # writable by OTHER's Unix account too (a server started as root acts as it)
                (tmp_path / name).chmod(0o777)
                options = f"path = {tmp_path / name}\n{options}"
            body[name] = options
        # a test's clients are often still connected when the server is stopped: it need not
        # wait the default 10 s for them (a test that wants another timeout sets its own)
        if "shutdown timeout" not in global_options.lower():
            global_options = f"shutdown timeout = 1\n{global_options}"
        def config(port: int) -> Path:
            return write_conf(run / "smb.conf", f"listen = 127.0.0.1:{port}\n{global_options}", body)
        env = dict(os.environ, SMBRING_PASSDB=str(run / "passdb"))
        for name, password in users:
            subprocess.run([sys.executable, "-m", "smbring.cli", "user", "add", name, "--password-stdin"],
                           input=password + "\n", text=True, check=True, env=env, capture_output=True)
        proc, port, log = spawn(run, *serve_args, preexec_fn=preexec_fn, accounts=accounts, config=config)
        server = ConfServer(port, proc, tmp_path, log, run / "smb.conf", env)
        started.append(server)
        return server

    with cleanup:
        yield start
        for server in started:
            stop(server.proc)


@contextmanager
def unix_account(name: str):
    """A Unix account `name` (its own group, no home, no shell) for one test, removed after;
    refuses to borrow an account that already exists, which the test would then delete. Tests
    running in parallel (pytest -n) that want the same name take turns: each holds a lock on
    the name from before the account is made until after it is removed."""
    with account_name_held(name):
        try:
            pwd.getpwnam(name)
        except KeyError:
            pass
        else:
            pytest.skip(f"a Unix account {name} exists already")
        subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", "--user-group", name],
                       check=True, capture_output=True)
        try:
            yield name
        finally:
            subprocess.run(["userdel", name], capture_output=True)


def refused(result: subprocess.CompletedProcess, status: str = "NT_STATUS_ACCESS_DENIED") -> bool:
    return status in result.stdout + result.stderr
