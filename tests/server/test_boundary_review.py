"""Attempts on the share boundary by a user with an account or a local user: links and
renames that lead out of the share, work the server does as root (the change watcher), and
the server's local sockets and files.

Each test tries to get around one check; the module's docstrings say which."""
from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "security"))
from servers import PASSWORD, spawn, stop  # noqa: E402
from worker_servers import pid_of, wait_for_workers, worker_holding, worker_of  # noqa: E402

from smbring.server.change_watcher import ChangeWatcher  # noqa: E402
from smbring.smb import notify  # noqa: E402
from smbring.smb.server_state import ServerState  # noqa: E402


# -- change notify: the watcher works as root on path strings ----------------------------------
@pytest.fixture
def watcher(tmp_path):
    """The server's ChangeWatcher over a fresh ServerState (the real kernel, a real loop), a
    share directory and a directory outside it holding a subdirectory."""
    loop = asyncio.new_event_loop()
    state = ServerState()
    w = ChangeWatcher(state, loop)
    share = tmp_path / "share"
    outside = tmp_path / "outside"
    (outside / "private").mkdir(parents=True)
    share.mkdir()
    yield state, w, loop, share, outside
    w.close()
    loop.close()


def run_briefly(loop, seconds=0.2):
    loop.run_until_complete(asyncio.sleep(seconds))


def test_a_directory_swapped_for_a_link_out_is_never_watched(watcher):
    """A recursive watch adds a watch for each directory that appears below it, as root, by
    the path the watched directory had. A local user who may rename in the share moves a
    directory above the watched one away and puts a link out of the share in its place (no
    event of a watched directory says so); then a directory appears in the watched one. Its
    watch must not be added through the link (the server, as root, would watch a directory
    outside the share, and report the names made there to the client), nor the directories
    below it be listed through the link."""
    state, w, loop, share, outside = watcher
    (share / "a" / "b").mkdir(parents=True)
    (outside / "b" / "private" / "below").mkdir(parents=True)
    tree = notify.Watch(str(share / "a" / "b"), notify.FILE_NAME | notify.DIR_NAME, True, max_output=65536)
    state.watches.add(tree)
    run_briefly(loop)
    os.rename(share / "a", share / "a2")        # the watched directory is now a2/b ...
    (share / "a").symlink_to(outside)           # ... and a leads out of the share
    (share / "a2" / "b" / "private").mkdir()    # reported as a/b/private: its watch is added
    run_briefly(loop)
    tree.changes.clear()
    (outside / "b" / "private" / "secret-name.txt").write_bytes(b"x")
    (outside / "b" / "private" / "below" / "deeper-secret.txt").write_bytes(b"x")
    run_briefly(loop)
    reported = [path for _action, path in tree.changes]
    assert not any("secret" in p for p in reported), reported


# -- with several workers: the hand-off is the server's work, whoever the thread acted as ------
def add_smb_user(passdb, name: str, password: str) -> None:
    subprocess.run([sys.executable, "-m", "smbring.cli", "user", "add", name, "--passdb", str(passdb),
                    "--password-stdin"], input=password + "\n", text=True, check=True, capture_output=True)


@pytest.fixture
def workers_as_root(tmp_path, unix_user):
    """`serve --workers 2` as root acting as its users' accounts, a Unix account with an SMB
    password, a file it may read (root's, 0644)."""
    if os.geteuid() != 0:
        pytest.skip("acting as Unix accounts needs root")
    share = tmp_path / "share"
    share.mkdir()
    (share / "pub.txt").write_text("for everyone")
    (share / "pub.txt").chmod(0o644)
    (tmp_path / "run").mkdir(mode=0o700)
    add_smb_user(tmp_path / "passdb", unix_user, PASSWORD)
    control = str(tmp_path / "run" / "control")
    proc, port, log = spawn(tmp_path, str(share), "--share", "share", "--workers", "2",
                            "--control-socket", control, "--shutdown-timeout", "2", accounts=True)
    server = {"port": port, "share": share, "proc": proc, "log": log, "control": control,
              "run": tmp_path / "run", "workers": 2, "user": unix_user}
    try:
        wait_for_workers(server)
        yield server
    finally:
        stop(proc)


def test_a_connection_is_handed_over_while_a_users_request_ran_last(workers_as_root):
    """The worker that reads a connection's NEGOTIATE hands it to the worker serving its
    client through a socket in the server's 0700 run directory. The hand-off is the server's
    work: it must not be made as whichever user the worker's thread acted as last (that user
    cannot reach the socket, the connection then stays on the wrong worker, and binding a
    channel or reclaiming a durable handle there fails)."""
    from raw import RawClient
    server = workers_as_root
    port = server["port"]
    user = RawClient(port)          # a user's connection, and the worker serving it
    user.negotiate(client_guid=os.urandom(16))
    tree = user.tree(user.logon(server["user"], PASSWORD), "share")
    busy = worker_of(server, user)
    clients = []
    while True:                     # a client the other worker serves
        guid = os.urandom(16)
        c = RawClient(port)
        c.negotiate(client_guid=guid)
        clients.append(c)
        if worker_of(server, c) != busy:
            break
    home = 3 - busy
    pid = pid_of(server, home)
    os.kill(pid, signal.SIGSTOP)    # so that the busy worker accepts the client's next connection
    try:
        late = RawClient(port)
        clients.append(late)
        time.sleep(0.3)             # accepted, waiting for its NEGOTIATE
        tree.close(tree.open("pub.txt"))    # the busy worker's thread now acts as the user
        threading.Timer(0.5, os.kill, (pid, signal.SIGCONT)).start()
        late.negotiate(client_guid=guid)
    finally:
        time.sleep(0.6)
        os.kill(pid, signal.SIGCONT)
    assert worker_of(server, late) == home, server["log"].read_text()[-2000:]
    for c in clients + [user]:
        c.close()


def test_an_oplock_on_another_worker_is_broken_for_a_users_open(workers_as_root, monkeypatch):
    """A user's CREATE that meets a batch oplock held through the other worker posts a hint
    to that worker's wake-up socket (in the server's 0700 directory): sent as the user the
    thread acts as, it never arrives, the holder is never told, and the CREATE waits for the
    whole break timeout. The holder must be told at once."""
    pytest.importorskip("smbprotocol")
    import pwd

    import test_oplocks as oplocks
    from smbprotocol.connection import Connection
    from smbprotocol.session import Session
    from smbprotocol.tree import TreeConnect
    from waiting_calls import Background
    server = workers_as_root
    account = pwd.getpwnam(server["user"])
    os.chown(server["share"], account.pw_uid, account.pw_gid)

    class Client(oplocks.Client):
        def __init__(self, port):           # (oplocks.Client's, as the test's account)
            self.conn = Connection(__import__("uuid").uuid4(), "127.0.0.1", port)
            self.conn.connect()
            self.session = Session(self.conn, server["user"], PASSWORD, require_encryption=False)
            self.session.connect()
            self.tree = TreeConnect(self.session, r"\\127.0.0.1\share")
            self.tree.connect()
            self.breaks = oplocks.Request(oplocks.SMB2HeaderRequest(), None, self.conn,
                                          session_id=self.session.session_id)
            self.conn.outstanding_requests[oplocks.BREAK_ID] = self.breaks

    def where(c) -> int:
        probe = f"probe-{os.urandom(4).hex()}"
        c.open(probe)
        return worker_holding(server, probe)

    a = Client(server["port"])
    wa = where(a)
    os.kill(pid_of(server, wa), signal.SIGSTOP)
    try:
        b = Client(server["port"])      # accepted by the other worker
    finally:
        os.kill(pid_of(server, wa), signal.SIGCONT)
    try:
        assert where(b) != wa
        held = a.open("f", oplocks.BATCH)
        assert held.oplock_level == oplocks.BATCH
        opener = Background(lambda: b.open("f", oplocks.BATCH))
        told = a.next_break(timeout=10)
        assert told is not None, "the holder was never told to break"
        a.ack(held, oplocks.II)
        opener.wait()
        assert opener.elapsed < 5
    finally:
        a.close()
        b.close()


def test_a_local_user_reaches_nothing_of_the_run_directory(workers_as_root):
    """Everything the server makes for itself (the control sockets, the shared store, its
    lock, the hand-off and wake-up sockets) is the server's alone: nothing in the run
    directory may be read, written or connected to by another local user, who can neither
    ask for the status nor hand a connection nor post a wake-up."""
    import stat as st_
    server = workers_as_root
    run = server["run"]
    found = []
    for directory, dirs, files in os.walk(run):
        for name in dirs + files:
            path = os.path.join(directory, name)
            st = os.lstat(path)
            found.append(name)
            assert st.st_uid == 0, path
            assert not st.st_mode & 0o077, (path, oct(st.st_mode))
            assert not st_.S_ISLNK(st.st_mode), path
    assert st_.S_IMODE(os.stat(run).st_mode) == 0o700
    assert any(n.startswith("store-") for n in found) and any(n.startswith("handoff-") for n in found)
    assert any(n.startswith("wake-") for n in found) and "control" in found
    sockets = [os.path.join(d, n) for d, _dirs, files in os.walk(run) for n in files
               if st_.S_ISSOCK(os.lstat(os.path.join(d, n)).st_mode)]
    files = [os.path.join(d, n) for d, _dirs, fs in os.walk(run) for n in fs if os.path.join(d, n) not in sockets]
    # the other user's client: the system's Python, nothing but the standard library
    python = shutil.which("python3", path="/usr/bin:/bin")
    if python is None:
        pytest.skip("no system python3 to run a client as another user")
    code = ("import os, socket, sys\n"
            "for path in sys.argv[1:]:\n"
            "    kind = socket.SOCK_SEQPACKET if 'handoff' in path else socket.SOCK_DGRAM if 'wake' in path \\\n"
            "        else socket.SOCK_STREAM\n"
            "    try:\n"
            "        if os.path.basename(path).startswith(('control', 'handoff', 'wake')):\n"
            "            s = socket.socket(socket.AF_UNIX, kind); s.connect(path)\n"
            "        else:\n"
            "            open(path, 'rb').read(1)\n"
            "        print('reached', path)\n"
            "    except OSError as e:\n"
            "        print('refused', e.errno, path)\n")
    r = subprocess.run([python, "-c", code, *sockets, *files], user=server["user"], capture_output=True,
                       text=True, timeout=30, cwd="/")
    assert r.returncode == 0, r.stderr
    assert "reached" not in r.stdout, r.stdout
    assert r.stdout.count("refused 13") == len(sockets) + len(files), r.stdout


# -- the metrics endpoint: open to every local user, so bounded ---------------------------------
def test_idle_metrics_connections_cannot_take_the_servers_descriptors(tmp_path):
    """Anyone who can reach the metrics port (every local user, on 127.0.0.1) may connect;
    connections that send nothing must not pile up in the server (each holds a descriptor
    for its 10 s): past a small number at once, more are closed at once, and a scrape and SMB
    still work."""
    pytest.importorskip("prometheus_client")
    import urllib.request

    from servers import free_port, smbclient
    share = tmp_path / "share"
    share.mkdir()
    mport = free_port()
    proc, port, _log = spawn(tmp_path, str(share), "--share", "share", "--metrics", f"127.0.0.1:{mport}")
    idle = []
    try:
        deadline = time.monotonic() + 10
        while socket.socket().connect_ex(("127.0.0.1", mport)) != 0:     # (up after SMB's port)
            assert time.monotonic() < deadline, "metrics never listened"
            time.sleep(0.05)
        time.sleep(0.2)
        baseline = len(os.listdir(f"/proc/{proc.pid}/fd"))
        for _ in range(400):
            idle.append(socket.create_connection(("127.0.0.1", mport)))
        time.sleep(0.5)
        held = len(os.listdir(f"/proc/{proc.pid}/fd")) - baseline
        assert held <= 80, f"{held} descriptors held for 400 idle metrics connections"
        for s in idle:
            s.close()
        idle.clear()
        time.sleep(0.2)
        body = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=10).read()
        assert b"smbring_connections_open" in body
        assert smbclient({"port": port}, "ls").returncode == 0
    finally:
        for s in idle:
            s.close()
        stop(proc)


def test_the_handoff_peer_check_is_the_servers_uid_not_the_threads(tmp_path, unix_user, caplog):
    """A hand-off is taken only from root or the server's own user (SO_PEERCRED). The event
    loop's thread acts as sessions' users at times: were the check made against the thread's
    effective uid at that moment, a process of that user would be taken for the server."""
    import logging
    import pwd

    from smbring.server import handoff
    from smbring.uring import set_thread_credentials
    if os.geteuid() != 0:
        pytest.skip("acting as another account needs root")
    user = pwd.getpwnam(unix_user)
    handoffs = handoff.HandOffs(str(tmp_path), 1, server=None)      # made as root, as the server's
    os.chmod(handoffs.path, 0o666)      # (so that the user's connection gets as far as the check)
    loop = asyncio.new_event_loop()
    groups = os.getgroups()
    set_thread_credentials(user.pw_uid, user.pw_gid, (user.pw_gid,))     # the thread acts as the user
    try:
        peer = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        peer.connect(handoffs.path)                 # a process of that user
        conn, _ = handoffs.sock.accept()
        with caplog.at_level(logging.WARNING, logger="smbring.server"):
            taken = loop.run_until_complete(handoffs._message(conn))
    finally:
        set_thread_credentials(0, 0, tuple(groups))
        loop.close()
    assert taken == (None, None, None)
    assert "a peer of another user" in caplog.text, caplog.text
    conn.close()
    peer.close()
    handoffs.close()


def test_a_local_user_cannot_signal_or_inspect_the_server_acting_as_him(workers_as_root):
    """While a worker's thread acts as a user's account (only its effective ids switch), a
    process of that user may not signal the server's processes (their real and saved uid stay
    root's), nor read their memory, environment or descriptors (they are not dumpable once
    they switched), which would hand him every session's keys."""
    from raw import RawClient
    server = workers_as_root
    c = RawClient(server["port"])
    c.negotiate(client_guid=os.urandom(16))
    tree = c.tree(c.logon(server["user"], PASSWORD), "share")
    tree.close(tree.open("pub.txt"))        # the worker's thread now acts as the user
    worker = pid_of(server, worker_of(server, c))
    python = shutil.which("python3", path="/usr/bin:/bin")
    if python is None:
        pytest.skip("no system python3 to run a process as another user")
    code = ("import os, sys\n"
            "for pid in sys.argv[1:]:\n"
            "    try:\n"
            "        os.kill(int(pid), 0); print('signalled', pid)\n"
            "    except OSError as e:\n"
            "        print('refused', e.errno)\n"
            "    for what in ('environ', 'mem', 'fd', 'maps'):\n"
            "        path = f'/proc/{pid}/{what}'\n"
            "        try:\n"
            "            os.listdir(path) if what == 'fd' else open(path, 'rb').read(1)\n"
            "            print('read', path)\n"
            "        except OSError as e:\n"
            "            print('refused', e.errno)\n")
    pids = [str(worker), str(server["proc"].pid)]
    r = subprocess.run([python, "-c", code, *pids], user=server["user"], capture_output=True, text=True,
                       timeout=30, cwd="/")
    c.close()
    assert r.returncode == 0, r.stderr
    assert "signalled" not in r.stdout and "read" not in r.stdout, r.stdout
