"""Real `smbring serve` processes for the integration tests: a user USER in a fresh password
file, a free loopback port, and Samba's smbclient against them. Importable from every test
directory (pytest's pythonpath includes tests/)."""
import contextlib
import fcntl
import os
import pathlib
import random
import shutil
import socket
import subprocess
import sys
import time

import pytest

from smbring.bench.smbclient import listens   # (also the benchmarks': which process holds a port)

USER, PASSWORD = "alice", "Secret-pw1"
# a second user, for servers started as root with `second_user` (acting as the Unix account
# nobody): tests of what one user may not do to another's session
USER2, PASSWORD2 = "bob", "Other-pw2"


def loopback_on_445() -> str | None:
    """A loopback address of its own (127/8 is all loopback on Linux) with port 445 free, for
    clients that ignore -p; None when binding port 445 needs privileges this process lacks."""
    import ipaddress
    import random
    rng = random.Random()
    for _ in range(20):
        address = str(ipaddress.IPv4Address((127 << 24) + rng.randrange(1 << 16, 1 << 24)))
        with socket.socket() as s:
            try:
                s.bind((address, 445))
                return address
            except PermissionError:
                return None
            except OSError:
                continue
    return None


def loopback_on_445_or_skip() -> str:
    """loopback_on_445(), the test skipped where there is none."""
    address = loopback_on_445()
    if address is None:
        pytest.skip("no loopback address with port 445 free (binding it needs privileges)")
    return address


def free_port() -> int:
    """A port nothing is bound to now, below the kernel's ephemeral range: a port from that
    range (what binding port 0 gives) can become any outgoing connection's source port before
    the server that was to listen on it binds it (seen: "Address already in use"), and a
    random one keeps two tests that ask at the same moment apart."""
    low, _high = (int(n) for n in open("/proc/sys/net/ipv4/ip_local_port_range").read().split())
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(10000, max(low, 10001))
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:      # (a range that leaves none: the kernel's choice)
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def add_user(passdb: str, name: str, password: str) -> None:
    """`name` in the password file `passdb` with `password`, unless it is there already."""
    if os.path.exists(passdb) and any(line.startswith(name + ":") for line in open(passdb)):
        return
    subprocess.run([sys.executable, "-m", "smbring.cli", "user", "add", name, "--passdb", passdb,
                    "--password-stdin"], input=password + "\n", text=True, check=True,
                   capture_output=True)


def as_root_args(tmp_path, passdb=None, second_user: bool = False) -> list[str]:
    """`smbring serve` options for a test server that is not about identities: started as
    root, a server acts as each user's Unix account, and USER has none; USER and guests then
    act as root (a username map `root = USER`, guest account root). As in Samba, the map
    applies before the password is checked: USER logs on with the password file's entry for
    root, which gets USER's password (added to `passdb`, default tmp_path/passdb, once).
    Other users act as their own Unix accounts; with `second_user`, USER2 acts as nobody
    (`nobody = USER2`, nobody's entry getting USER2's password)."""
    if os.geteuid() != 0:
        return []
    (tmp_path / "all-as-root.map").write_text(f"root = {USER}\n" + (f"nobody = {USER2}\n" if second_user else ""))
    passdb = str(passdb or tmp_path / "passdb")
    add_user(passdb, "root", PASSWORD)
    if second_user:
        add_user(passdb, "nobody", PASSWORD2)
    return ["--username-map", str(tmp_path / "all-as-root.map"), "--guest-account", "root"]


def own_control_socket(serve_args) -> list[str]:
    """`--control-socket` in a directory of the server's own, unless the test names one (on
    the command line or in its smb.conf): servers of different tests never meet at the default
    socket, where the second would run without one and requests could reach the wrong one.
    (A short path: a Unix socket's name has at most 107 bytes.)"""
    args = list(serve_args)
    if "--control-socket" in args:
        return []
    if "--config" in args:
        with open(args[args.index("--config") + 1]) as conf:
            if "control socket" in conf.read().lower():
                return []
    import atexit
    import tempfile
    directory = tempfile.mkdtemp(prefix="smbring-ctl-")
    atexit.register(shutil.rmtree, directory, True)
    return ["--control-socket", os.path.join(directory, "control")]


def spawn(tmp_path, *serve_args: str, port: int | None = None, preexec_fn=None, host: str = "127.0.0.1",
          accounts: bool = False, second_user: bool = False, config=None):
    """Starts `smbring serve *serve_args` with a user USER in a fresh password file; waits
    until it listens (preexec_fn runs in the server's process before it starts, e.g. to
    lower a resource limit; host: the address the server listens on, named in --config's
    smb.conf if given; `config`: a function that writes the smb.conf to serve for a port
    and returns its path, called again for each port tried). Returns (process, port, log
    path).

    A server started as root acts as its users' Unix accounts; USER has none, so unless
    `accounts` is set USER and guests act as root (see as_root_args), as the tests that are
    not about identities expect; `second_user`: USER2 logs on too, as nobody (as root only)."""
    if os.geteuid() == 0:
        searchable_to(tmp_path / "share")
    env = dict(os.environ, SMBRING_PASSDB=str(tmp_path / "passdb"))
    cli = [sys.executable, "-m", "smbring.cli"]
    subprocess.run(cli + ["user", "add", USER, "--password-stdin"], input=PASSWORD + "\n",
                   text=True, check=True, env=env, capture_output=True)
    # a port chosen here, taken by another program before the server bound it, is chosen
    # again (free_port makes that rare; a port the caller chose is the caller's)
    tries = 3 if port is None and "--config" not in serve_args else 1
    for attempt in range(tries):
        port = port if tries == 1 else free_port()
        log_path = tmp_path / "server.log"
        with open(log_path, "w") as log:
            args = (([] if config is None else ["--config", str(config(port))]) + list(serve_args)
                    + ([] if accounts else as_root_args(tmp_path, second_user=second_user))
                    + own_control_socket(serve_args))
            if "--config" not in args:
                args += ["--listen", f"{host}:{port}"]
            proc = subprocess.Popen(cli + ["serve", *args, "--log-level", "info"], env=env,
                                    stdout=log, stderr=subprocess.STDOUT, preexec_fn=preexec_fn)
        try:
            wait_listening(proc, port, log_path, host=host)
        except RuntimeError as e:
            if attempt == tries - 1 or "Address already in use" not in str(e):
                raise
            continue
        return proc, port, log_path


def wait_listening(proc, port: int, log_path, *, host: str = "127.0.0.1", timeout: float = 60) -> None:
    """Waits until the server process `proc` (or a child of it) listens on `port` and takes
    a connection there; RuntimeError with its log (`log_path`) if it ends first, or if it
    does not listen within `timeout` seconds (a loaded machine may take long to start
    Python), then it is killed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if listens(proc.pid, port):
            with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
                if s.connect_ex((host, port)) == 0:
                    return
        if proc.poll() is not None:
            raise RuntimeError(pathlib.Path(log_path).read_text(errors="replace"))
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"the server did not listen on port {port} within {timeout:g} s")


def stop(proc) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def smbclient(server, command: str, *extra: str, user=USER, password=PASSWORD):
    if not shutil.which("smbclient"):
        pytest.skip("Samba's smbclient is not installed")
    return subprocess.run(["smbclient", "//127.0.0.1/share", "-p", str(server["port"]),
                           "-U", f"{user}%{password}", *extra, "-c", command],
                          capture_output=True, text=True, timeout=60)


def searchable_to(path) -> None:
    """The test accounts must reach a share as smbd requires: the directories pytest made
    above it under /tmp (0700, root's) become passable (o+x), not listable. (pytest puts
    its own /tmp/pytest-of-root back to 0700 when another run starts: a test calls this
    again right before it starts a server.)"""
    from pathlib import Path
    for parent in Path(path).parents:
        if len(parent.parts) < 3 or parent.parts[1] != "tmp":
            continue            # only below /tmp
        st = parent.stat()
        if st.st_uid == 0 and not st.st_mode & 0o001:
            parent.chmod(st.st_mode & 0o7777 | 0o001)


@contextlib.contextmanager
def small_file_system(where: pathlib.Path, kind: str, size: int):
    """A file system of `size` bytes mounted on `where` (made, mode 0777; root only, else
    the test is skipped): "tmpfs" (its writes never wait: done inline), or "ext4", an image
    on a loop device (its writes go on the ring). Unmounted at the end."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")
    where.mkdir(exist_ok=True)
    if kind == "tmpfs":
        mount = ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0777", "tmpfs", str(where)]
    else:
        image = where.parent / f"{where.name}.img"
        with open(image, "wb") as f:
            f.truncate(size)
        made = subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", str(image)], capture_output=True, text=True)
        if made.returncode:
            pytest.skip(f"no ext4 image here: {made.stderr.strip()}")
        mount = ["mount", "-o", "loop", str(image), str(where)]
    mounted = subprocess.run(mount, capture_output=True, text=True)
    if mounted.returncode:
        pytest.skip(f"no {kind} mount here: {mounted.stderr.strip()}")
    try:
        os.chmod(where, 0o777)
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


@contextlib.contextmanager
def account_name_held(name: str):
    """Holds the Unix account name `name` for one test against the other test processes
    (pytest -n): a test that makes an account of that name, or relies on there being none,
    takes its turn; the hold ends with the block."""
    with open(f"/tmp/smbring-test-account-{name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)        # released when the file is closed
        yield


def unix_accounts(*names: str):
    """Unix accounts (each with its own group, no home) made for a test module as root and
    removed after it; yields {name: (uid, gid)}. Use as `yield from unix_accounts(...)` in a
    fixture."""
    import pwd
    made = []
    try:
        for name in names:
            subprocess.run(["useradd", "--no-create-home", "--user-group", name], check=True, capture_output=True)
            made.append(name)
        yield {n: (pwd.getpwnam(n).pw_uid, pwd.getpwnam(n).pw_gid) for n in made}
    finally:
        for name in made:
            subprocess.run(["userdel", name], capture_output=True)


def unix_accounts_with_group(names, group: str, member: str):
    """unix_accounts(*names), plus a group `group` whose one member is `member` (not its
    primary group): yields {name: (uid, gid)} with "extra": the group's gid. Use as
    `yield from` in a fixture."""
    import grp
    for made in unix_accounts(*names):
        subprocess.run(["groupadd", group], check=True, capture_output=True)
        try:
            subprocess.run(["usermod", "-aG", group, member], check=True, capture_output=True)
            yield dict(made, extra=grp.getgrnam(group).gr_gid)
        finally:
            subprocess.run(["groupdel", group], capture_output=True)


def sticky_share_server(tmp_path, prefix: str, users, password: str, more: str = "", share_options: str = ""):
    """spawn_for_accounts on a fresh 1777 directory (under a 0755 one in /tmp, reachable by
    every account; `more`, other shares, may name it as `{share}`): yields {"port", "share",
    "proc", "log"}, stopped and removed after. Use as `yield from` in a fixture."""
    import tempfile
    from pathlib import Path
    top = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    top.chmod(0o755)
    share = top / "share"
    share.mkdir()
    share.chmod(0o1777)
    proc, port, log = spawn_for_accounts(tmp_path, share, users, password, more=more.format(share=share),
                                         share_options=share_options)
    try:
        yield {"port": port, "share": share, "proc": proc, "log": log}
    finally:
        stop(proc)
        shutil.rmtree(top, ignore_errors=True)


def project_share_server(tmp_path, prefix: str, users, password: str, share_options: str = ""):
    """sticky_share_server with a project directory `shared` (0777) in the share that every
    account may write; yields its dict. Use as `yield from` in a fixture."""
    for started in sticky_share_server(tmp_path, prefix, users, password, share_options=share_options):
        shared = started["share"] / "shared"
        shared.mkdir()
        shared.chmod(0o777)
        yield started


def spawn_for_accounts(tmp_path, share_path, users, password: str, more: str = "", share_options: str = ""):
    """`smbring serve --config` as root, acting as real Unix accounts: [share] (read only =
    no, plus `share_options` lines) at share_path, `more` appended to the file (other
    shares), each of `users` in the password file with `password`. Returns (process, port,
    log path)."""
    def config(port: int):
        conf = tmp_path / "smb.conf"
        conf.write_text(f"[global]\nlisten = 127.0.0.1:{port}\n[share]\npath = {share_path}\nread only = no\n"
                        + share_options + more)
        return conf

    env = dict(os.environ, SMBRING_PASSDB=str(tmp_path / "passdb"))
    for user in users:
        subprocess.run([sys.executable, "-m", "smbring.cli", "user", "add", user, "--password-stdin"],
                       input=password + "\n", text=True, check=True, env=env, capture_output=True)
    return spawn(tmp_path, config=config, accounts=True)
