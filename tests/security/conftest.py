"""Real `smbring serve --config FILE` processes for the adversarial tests.

Each server shares four directories: `ro` (read only), `rw` (writable), `enc` (writable,
smb encrypt = required) and, with guest=True, `public` (guest ok, read only). [global] options
(limits, ntlm auth) are passed as a dict. `servers` keeps its servers for the whole module;
`fresh_servers` stops them after each test (for tests that load or may wedge a server).
"""
from __future__ import annotations

import os
import socket
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))   # raw.py and logon.py, for the test modules

from raw import RawClient, Session  # noqa: E402
from servers import PASSWORD, USER, free_port, spawn, stop  # noqa: E402
from smbring.server.users import PasswordDB  # noqa: E402
from smbring.smb import wire  # noqa: E402


SHARES = {"ro": "read only = yes", "rw": "read only = no",
          "enc": "read only = no\nsmb encrypt = required"}


@dataclass
class Server:
    port: int
    proc: object
    root: Path
    log: Path
    clients: list = field(default_factory=list)
    user: str = USER
    password: str = PASSWORD

    def path(self, share: str) -> Path:
        return self.root / share

    @property
    def pid(self) -> int:
        return self.proc.pid

    def nt_hash(self) -> bytes:
        return PasswordDB(str(self.root / "passdb")).load().users[USER]

    def client(self, timeout: float = 10.0) -> RawClient:
        c = RawClient(self.port, timeout=timeout)
        self.clients.append(c)
        return c

    def logon(self, dialects=(wire.SMB311,), *, security_mode=wire.SECURITY_SIGNING_ENABLED,
              timeout: float = 10.0) -> tuple[RawClient, Session]:
        """A new connection with one session of USER (NTLMv2)."""
        c = self.client(timeout)
        r = c.negotiate(dialects, security_mode=security_mode)
        assert r.status == wire.STATUS_SUCCESS, repr(r)
        return c, c.logon(USER, PASSWORD)

    def alive(self) -> bool:
        if self.proc.poll() is not None:
            return False
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def proc_status(self, key: str) -> int:
        """A field of /proc/PID/status in kB (VmRSS, VmHWM)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        raise KeyError(key)

    def cpu_seconds(self) -> float:
        """The CPU time the server's process has used (user and system, all its threads):
        what it computed, which a loaded machine does not inflate as it does wall time."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def fd_count(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))


def config_text(port: int, root: Path, options: dict, guest: bool) -> str:
    lines = ["[global]", f"listen = 127.0.0.1:{port}"] + [f"{k} = {v}" for k, v in options.items()]
    shares = dict(SHARES, **({"public": "read only = yes\nguest ok = yes"} if guest else {}))
    for name, settings in shares.items():
        lines += ["", f"[{name}]", f"path = {root / name}", settings]
    return "\n".join(lines) + "\n"


@contextmanager
def _servers(tmp_path_factory):
    started: list[Server] = []

    def start(options: dict | None = None, guest: bool = False, preexec_fn=None) -> Server:
        root = tmp_path_factory.mktemp("smb")
        for name in list(SHARES) + ["public"]:
            (root / name).mkdir()
        port = free_port()
        conf = root / "smb.conf"
        conf.write_text(config_text(port, root, options or {}, guest))
        proc, port, log = spawn(root, "--config", str(conf), port=port, preexec_fn=preexec_fn)
        server = Server(port, proc, root, log)
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            for c in server.clients:
                c.close()
            stop(server.proc)


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """start(options=None, guest=False, preexec_fn=None) -> Server (preexec_fn: run in the
    server's process before it starts); servers stop when the module ends."""
    with _servers(tmp_path_factory) as start:
        yield start


@pytest.fixture
def fresh_servers(tmp_path_factory):
    """As `servers`, stopped when the test ends."""
    with _servers(tmp_path_factory) as start:
        yield start
