"""What the smb.conf client tests share: real Unix accounts made for a module, a real
`smbring serve --config` acting as those accounts (started as root, no mapping of everyone to
root), Samba's own clients (smbclient, rpcclient, smbcacls) against it, a smbclient kept
connected through a pipe, and network namespaces from which a client has another address.

Everything made here is removed again: accounts (userdel/groupdel), namespaces and their veth
pairs (ip netns del), servers (stopped). Names carry the test process's id, so two runs on one
machine do not meet."""
from __future__ import annotations

import ipaddress
import os
import pwd
import select
import shutil
import subprocess
import sys
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from servers import searchable_to, spawn, stop
from servers import loopback_on_445_or_skip as loopback_on_445  # noqa: F401 - for the tests that use these fixtures

TAG = f"{os.getpid() % 100000}"
SAMBA_TOOLS = ("smbclient", "rpcclient", "smbcacls")


def need_root_and_samba() -> None:
    """Module-level skip where these tests cannot run: they make Unix accounts and serve as
    root, and drive Samba's clients."""
    if os.geteuid() != 0 or not shutil.which("useradd"):
        pytest.skip("acting as Unix accounts needs root (and useradd)", allow_module_level=True)
    for tool in SAMBA_TOOLS:
        if not shutil.which(tool):
            pytest.skip(f"Samba's {tool} is not installed", allow_module_level=True)


def run(*cmd: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), check=check, capture_output=True, text=True, **kw)


# -- Unix accounts --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int


@contextmanager
def unix_accounts(users: dict[str, tuple[str, ...]], groups: tuple[str, ...] = ()):
    """Makes the Unix groups `groups`, then each user (its own primary group of its name,
    and the supplementary groups listed); yields name -> Account; removes them all after."""
    made_users, made_groups = [], []
    try:
        for group in groups:
            run("groupadd", group)
            made_groups.append(group)
        for name, extra in users.items():
            args = ["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", "--user-group"]
            if extra:
                args += ["--groups", ",".join(extra)]
            run(*args, name)
            made_users.append(name)
        yield {n: Account(n, pwd.getpwnam(n).pw_uid, pwd.getpwnam(n).pw_gid) for n in users}
    finally:
        for name in made_users:
            run("userdel", name, check=False)
        for group in made_groups:
            run("groupdel", group, check=False)


# -- servers --------------------------------------------------------------------------------
@dataclass
class Served:
    """A running `smbring serve --config` and the Samba clients that talk to it."""
    host: str
    port: int
    root: Path
    conf: Path
    log: Path
    proc: subprocess.Popen
    password: str
    control: Path

    def _creds(self, user: str | None, password: str | None) -> list[str]:
        return ["-N"] if user is None else ["-U", f"{user}%{self.password if password is None else password}"]

    def smbclient(self, share: str, command: str, *extra: str, user: str | None = None,
                  password: str | None = None, netns: str | None = None,
                  host: str | None = None) -> subprocess.CompletedProcess:
        """smbclient //host/share -c command, as `user` (None: anonymous, -N), from the
        namespace `netns` if given."""
        prefix = ["ip", "netns", "exec", netns] if netns else []
        return run(*prefix, "smbclient", f"//{host or self.host}/{share}", "-p", str(self.port),
                   *self._creds(user, password), *extra, "-c", command, check=False, timeout=60)

    def smbclient_list(self, *extra: str, user: str | None = None) -> subprocess.CompletedProcess:
        return run("smbclient", "-L", f"//{self.host}", "-p", str(self.port), *self._creds(user, None),
                   *extra, check=False, timeout=60)

    def rpcclient(self, command: str, user: str | None = None) -> subprocess.CompletedProcess:
        creds = ["-U%"] if user is None else ["-U", f"{user}%{self.password}"]
        return run("rpcclient", "-p", str(self.port), *creds, "-c", command, self.host,
                   check=False, timeout=60)

    def smbcacls(self, share: str, path: str, *args: str, user: str) -> subprocess.CompletedProcess:
        """smbcacls --numeric (names would need an LSA pipe); it connects to port 445 only."""
        assert self.port == 445, "smbcacls ignores every port but 445"
        return run("smbcacls", f"//{self.host}/{share}", path, "--numeric", *self._creds(user, None),
                   *args, check=False, timeout=60)

    def held(self, share: str, user: str | None, *extra: str) -> "HeldClient":
        return HeldClient(self, share, user, extra)

    def status(self) -> dict:
        import json
        r = run(sys.executable, "-m", "smbring.cli", "status", "--json", "--control-socket",
                str(self.control))
        return json.loads(r.stdout)

    def log_text(self) -> str:
        return self.log.read_text()


def conf_text(global_options: str, shares: dict[str, str]) -> str:
    text = "[global]\n" + global_options + "\n"
    for name, options in shares.items():
        text += f"[{name}]\n{options}\n"
    return text




@contextmanager
def serve(workdir: Path, global_options: str, shares: dict[str, str], users: dict[str, str],
          *, host: str = "127.0.0.1", port: int | None = None, bind: tuple[str, ...] = ()):
    """Serves smb.conf ([global] `global_options` and `shares`) as root, each session acting
    as its Unix account; `users` (name -> password) go in a fresh password file. The server
    listens on host:port, or with `bind` on each of those addresses (bind interfaces only).
    Yields a Served; stops the server after."""
    workdir.mkdir(parents=True, exist_ok=True)
    control = workdir / "control"
    conf = workdir / "smb.conf"

    def config(port: int) -> Path:
        if bind:
            where = (f"interfaces = {' '.join(bind)}\nbind interfaces only = yes\nsmb ports = {port}\n")
        else:
            where = f"listen = {host}:{port}\n"
        conf.write_text(conf_text(f"{where}control socket = {control}\n{global_options}", shares))
        return conf

    for options in shares.values():
        for line in options.splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "path" and "%" not in value:
                searchable_to(Path(value.strip()))
    env = dict(os.environ, SMBRING_PASSDB=str(workdir / "passdb"))
    password = next(iter(users.values()), "")
    for name, pw in users.items():
        run(sys.executable, "-m", "smbring.cli", "user", "add", name, "--password-stdin",
            input=pw + "\n", env=env)
    proc, port, log = spawn(workdir, port=port, host=bind[0] if bind else host, accounts=True,
                            config=config)
    try:
        yield Served(host if not bind else bind[0], port, workdir, conf, log, proc, password, control)
    finally:
        stop(proc)


def output(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


def refused(result: subprocess.CompletedProcess, status: str = "NT_STATUS_ACCESS_DENIED") -> bool:
    return status in output(result)


def snapshot(root: Path) -> dict[str, tuple]:
    """Every name under root with what a client could have changed: type, mode, owner, size,
    modification time, contents of files, link count."""
    seen = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        content = path.read_bytes() if path.is_file() and not path.is_symlink() else None
        seen[str(path.relative_to(root))] = (st.st_mode, st.st_uid, st.st_gid, st.st_size,
                                             st.st_mtime_ns, st.st_nlink, content)
    return seen


# -- a smbclient kept connected -----------------------------------------------------------------
class HeldClient:
    """smbclient reading its commands from a pipe held open: connected (session and tree)
    until `close`, so tests can hold tree connects at once or leave a client idle."""

    def __init__(self, served: Served, share: str, user: str | None, extra: tuple = ()):
        creds = served._creds(user, None)
        # stdbuf: smbclient's output to a pipe is block-buffered, answers would wait for its end
        self.proc = subprocess.Popen(
            ["stdbuf", "-oL", "smbclient", f"//{served.host}/{share}", "-p", str(served.port), *creds,
             *extra],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.seen = b""

    def ask(self, command: str, ends: tuple[bytes, ...], timeout: float = 20.0) -> str | None:
        """Sends one command; returns what smbclient says up to the end of the first line
        holding one of `ends` (or up to its end, or the timeout); None if smbclient has ended.
        One command at a time: smbclient reads its input through a buffer, so a second line
        sent with the first would wait there unseen."""
        try:
            self.proc.stdin.write(command.encode() + b"\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            return None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while not any(end in self.seen for end in ends):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                break
            chunk = os.read(fd, 65536)
            if not chunk:
                break               # smbclient has ended
            self.seen += chunk
        found = [self.seen.find(end) for end in ends if end in self.seen]
        cut = self.seen.find(b"\n", min(found)) + 1 if found else 0
        cut = cut or len(self.seen)
        text, self.seen = self.seen[:cut], self.seen[cut:]
        return text.decode(errors="replace")

    def close(self) -> str:
        if self.proc.returncode is not None:
            return self.seen.decode(errors="replace")
        if self.proc.stdin.closed:          # (a write failed): communicate would flush it
            self.proc.stdin = None
        try:                                # closes stdin: smbclient ends
            rest, _ = self.proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rest, _ = self.proc.communicate()
        return (self.seen + (rest or b"")).decode(errors="replace")


# -- network namespaces ------------------------------------------------------------------------
@dataclass(frozen=True)
class Namespace:
    """A network namespace joined to this one by a veth pair: a client inside it reaches
    `server_address` from `client_address`."""
    name: str
    client_address: str
    server_address: str


@contextmanager
def client_namespaces(count: int):
    """`count` network namespaces, each with a veth pair on a /30 of 10.x (x from the process
    id): host side .1 (the server binds it), namespace side .2. Deleted after, whatever
    happened."""
    if not shutil.which("ip"):
        pytest.skip("iproute2's ip is not installed")
    base = ipaddress.IPv4Address(f"10.{200 + os.getpid() % 50}.{os.getpid() // 50 % 250}.0")
    made: list[Namespace] = []
    with ExitStack() as cleanup:
        for i in range(count):
            name, host_if, ns_if = f"smbrt{TAG}n{i}", f"srt{TAG}h{i}", f"srt{TAG}c{i}"
            server_address, client_address = str(base + 4 * i + 1), str(base + 4 * i + 2)
            made_ns = run("ip", "netns", "add", name, check=False)
            if made_ns.returncode != 0:
                pytest.skip(f"cannot make a network namespace: {made_ns.stderr.strip()}")
            cleanup.callback(run, "ip", "netns", "del", name, check=False)
            run("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
            cleanup.callback(run, "ip", "link", "del", host_if, check=False)
            run("ip", "link", "set", ns_if, "netns", name)
            run("ip", "addr", "add", f"{server_address}/30", "dev", host_if)
            run("ip", "link", "set", host_if, "up")
            inside = ("ip", "netns", "exec", name)
            run(*inside, "ip", "addr", "add", f"{client_address}/30", "dev", ns_if)
            run(*inside, "ip", "link", "set", ns_if, "up")
            run(*inside, "ip", "link", "set", "lo", "up")
            made.append(Namespace(name, client_address, server_address))
        yield made
