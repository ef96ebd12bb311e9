"""smbring as a service, with real processes, signals and clients: SIGHUP reloads, SIGTERM
lets transfers finish, `smbring status` sees what clients hold (and only root or the
server's user may ask), socket activation, sd_notify, operator mistakes, metrics, logs."""
import hashlib
import json
import os
import pathlib
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest
from servers import PASSWORD, USER, as_root_args, free_port, smbclient, stop, wait_listening

CLI = [sys.executable, "-m", "smbring"]
smbprotocol = pytest.importorskip("smbprotocol")
from smbprotocol.connection import Connection  # noqa: E402
from smbprotocol.exceptions import SMBResponseException  # noqa: E402
from smbprotocol.open import (  # noqa: E402
    CreateDisposition,
    CreateOptions,
    FileAttributes,
    FilePipePrinterAccessMask,
    ImpersonationLevel,
    LockFlags,
    Open,
    ShareAccess,
    SMB2LockElement,
)
from smbprotocol.session import Session  # noqa: E402
from smbprotocol.tree import TreeConnect  # noqa: E402


def env_for(tmp_path, **extra):
    env = dict(os.environ, SMBRING_PASSDB=str(tmp_path / "passdb"), **extra)
    if not (tmp_path / "passdb").exists():
        subprocess.run(CLI + ["user", "add", USER, "--password-stdin"], input=PASSWORD + "\n", text=True,
                       check=True, env=env, capture_output=True)
    return env




_STARTED = []     # the servers this module's tests started; the fixture below reaps them


@pytest.fixture(autouse=True)
def _reap_servers():
    """A test that fails half way must not leave its server running (and its port taken)."""
    yield
    while _STARTED:
        proc = _STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def start(tmp_path, *args, env=None, port=None, **popen):
    """`smbring serve *args` with its log in tmp_path/server.log; returns (proc, port)."""
    port = port or free_port()
    log = tmp_path / "server.log"
    env = env or env_for(tmp_path)          # (USER first: as_root_args adds root to the file)
    args = list(args) + as_root_args(tmp_path)
    if "--config" not in args:
        args += ["--listen", f"127.0.0.1:{port}"]
    if "--control-socket" not in args:
        args += ["--control-socket", str(tmp_path / "ctl" / "control")]
    proc = subprocess.Popen(CLI + ["serve", *args, "--log-level", "info"], env=env,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, **popen)
    _STARTED.append(proc)
    wait_listening(proc, port, log)
    control = args[args.index("--control-socket") + 1]
    deadline = time.monotonic() + 10
    while control != "none" and not os.path.exists(control) and time.monotonic() < deadline:
        time.sleep(0.02)      # the port accepts (its backlog) before the control socket is up
    return proc, port


def status(tmp_path, as_json=True):
    r = subprocess.run(CLI + ["status", "--control-socket", str(tmp_path / "ctl" / "control")]
                       + (["--json"] if as_json else []), capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout) if as_json else r.stdout


class Client:
    """An smbprotocol session on a share that stays connected across the test."""

    def __init__(self, port, share, user=USER, password=PASSWORD, encrypt=False):
        self.conn = Connection(uuid.uuid4(), "127.0.0.1", port)
        self.conn.connect(timeout=10)
        self.session = Session(self.conn, user, password, require_encryption=encrypt)
        self.session.connect()
        self.tree = self.connect(share)

    def connect(self, share):
        tree = TreeConnect(self.session, rf"\\127.0.0.1\{share}")
        tree.connect()
        return tree

    def open(self, name, tree=None, write=False, create=False, share_access=ShareAccess.FILE_SHARE_READ):
        o = Open(tree or self.tree, name)
        access = FilePipePrinterAccessMask.GENERIC_READ | (FilePipePrinterAccessMask.GENERIC_WRITE if write else 0)
        o.create(ImpersonationLevel.Impersonation, access, FileAttributes.FILE_ATTRIBUTE_NORMAL, share_access,
                 CreateDisposition.FILE_OVERWRITE_IF if create else CreateDisposition.FILE_OPEN,
                 CreateOptions.FILE_NON_DIRECTORY_FILE)
        return o

    def close(self):
        self.conn.disconnect()


def write_config(path, shares: dict, **global_options):
    lines = ["[global]"] + [f"{k.replace('_', ' ')} = {v}" for k, v in global_options.items()]
    for name, options in shares.items():
        lines.append(f"[{name}]")
        lines += [f"{k.replace('_', ' ')} = {v}" for k, v in options.items()]
    path.write_text("\n".join(lines) + "\n")


def ls_share(port, share):
    return subprocess.run(["smbclient", f"//127.0.0.1/{share}", "-p", str(port), "-U", f"{USER}%{PASSWORD}",
                           "-c", "ls"], capture_output=True, text=True, timeout=60)


def wait_for_log(tmp_path, text, timeout=10):
    deadline = time.monotonic() + timeout
    while text not in (tmp_path / "server.log").read_text():
        assert time.monotonic() < deadline, (tmp_path / "server.log").read_text()
        time.sleep(0.05)


# -- SIGHUP -----------------------------------------------------------------------------------
def test_reload_adds_a_share_for_new_clients_while_an_old_session_keeps_working(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "in-a.txt").write_bytes(b"A" * 100)
    (b / "in-b.txt").write_text("b\n")
    port = free_port()
    conf = tmp_path / "smb.conf"
    write_config(conf, {"a": {"path": a, "read_only": "no"}}, listen=f"127.0.0.1:{port}")
    proc, _ = start(tmp_path, "--config", str(conf), port=port)
    try:
        old = Client(port, "a")
        r = ls_share(port, "b")
        assert "NT_STATUS_BAD_NETWORK_NAME" in r.stdout + r.stderr
        # b added, a made read-only: both for new tree connects only
        write_config(conf, {"a": {"path": a, "read_only": "yes"}, "b": {"path": b}}, listen=f"127.0.0.1:{port}")
        proc.send_signal(signal.SIGHUP)
        wait_for_log(tmp_path, "configuration reloaded")
        r = ls_share(port, "b")
        assert r.returncode == 0 and "in-b.txt" in r.stdout, r.stdout + r.stderr
        # the old session: its tree still reads and writes, and it reaches b too
        f = old.open("in-a.txt", write=True)
        assert f.read(0, 100) == b"A" * 100
        f.write(b"written after the reload", 0)
        f.close()
        assert (a / "in-a.txt").read_bytes().startswith(b"written after the reload")
        f = old.open("in-b.txt", tree=old.connect("b"))
        assert f.read(0, 2) == b"b\n"
        f.close()
        # a new tree connect to a is read-only now
        g = old.connect("a")
        with pytest.raises(Exception):
            old.open("new.txt", tree=g, write=True, create=True)
        # a broken configuration changes nothing
        conf.write_text("[global\nbroken")
        proc.send_signal(signal.SIGHUP)
        wait_for_log(tmp_path, "reload failed, keeping the configuration")
        r = ls_share(port, "b")
        assert r.returncode == 0 and "in-b.txt" in r.stdout
        assert proc.poll() is None
        old.close()
    finally:
        stop(proc)


# -- smbring control: close-share, close-denied-share -------------------------------------------
NETWORK_NAME_DELETED = "0xc00000c9"


def control(tmp_path, *args):
    return subprocess.run(CLI + ["control", *args, "--json", "--control-socket", str(tmp_path / "ctl" / "control")],
                          capture_output=True, text=True, timeout=60)


def test_close_share_ends_the_shares_tree_connects_and_their_opens_only(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "held.txt").write_bytes(b"A" * 10)
    (b / "other.txt").write_bytes(b"B" * 10)
    port = free_port()
    conf = tmp_path / "smb.conf"
    write_config(conf, {"a": {"path": a, "read_only": "no"}, "b": {"path": b}}, listen=f"127.0.0.1:{port}")
    proc, _ = start(tmp_path, "--config", str(conf), port=port)
    try:
        c = Client(port, "a")
        held = c.open("held.txt", write=True, share_access=0)     # nobody else may open it
        tree_b = c.connect("b")
        other = c.open("other.txt", tree=tree_b)
        r = control(tmp_path, "close-share", "A")                  # share names in any case
        assert r.returncode == 0, r.stderr
        closed = json.loads(r.stdout)["closed"]
        assert [(t["share"], t["why"]) for t in closed] == [("a", "close-share")]
        assert "closed by the administrator: close-share" in (tmp_path / "server.log").read_text()
        with pytest.raises(SMBResponseException, match=NETWORK_NAME_DELETED):
            held.read(0, 10)
        assert other.read(0, 10) == b"B" * 10                       # the other tree goes on
        # the open was closed with its tree: another client may open the file alone now
        d = Client(port, "a")
        d.open("held.txt", write=True, share_access=0).close()
        d.close()
        # the session stays: it connects the share again
        again = c.open("held.txt", tree=c.connect("a"))
        assert again.read(0, 10) == b"A" * 10
        trees = [t["share"] for conn in status(tmp_path)["connections"] for s in conn["sessions"]
                 for t in s["trees"]]
        assert sorted(trees) == ["a", "b"]
        # nothing connected to it: nothing closed
        r = control(tmp_path, "close-share", "nosuch")
        assert r.returncode == 0 and json.loads(r.stdout) == {"closed": []}
        c.conn.disconnect(close=False)      # (smbprotocol would disconnect the closed tree too)
    finally:
        stop(proc)


def test_close_denied_share_reloads_and_ends_only_what_the_new_configuration_refuses(tmp_path):
    dirs = {name: tmp_path / name for name in ("gone", "refused", "readonly", "moved", "kept")}
    for d in dirs.values():
        d.mkdir()
        (d / "f.txt").write_bytes(b"x")
    (tmp_path / "elsewhere").mkdir()
    port = free_port()
    conf = tmp_path / "smb.conf"
    shares = {name: {"path": d, "read_only": "no"} for name, d in dirs.items()}
    write_config(conf, shares, listen=f"127.0.0.1:{port}")
    proc, _ = start(tmp_path, "--config", str(conf), port=port)
    try:
        c = Client(port, "kept")
        trees = {name: c.connect(name) for name in dirs}
        opens = {name: c.open("f.txt", tree=trees[name]) for name in dirs}
        # the file changes: one share goes, one refuses the user, one becomes read-only,
        # one serves another directory; "kept" stays as it was
        del shares["gone"]
        shares["refused"]["valid_users"] = "someone-else"
        shares["readonly"]["read_only"] = "yes"
        shares["moved"]["path"] = tmp_path / "elsewhere"
        write_config(conf, shares, listen=f"127.0.0.1:{port}")
        r = control(tmp_path, "close-denied-share", "*")
        assert r.returncode == 0, r.stderr
        why = {t["share"]: t["why"] for t in json.loads(r.stdout)["closed"]}
        assert set(why) == {"gone", "refused", "readonly", "moved"}, why
        assert why["gone"] == "share gone" and why["readonly"] == "read only is now yes"
        assert "configuration reloaded" in (tmp_path / "server.log").read_text()
        for name in ("gone", "refused", "readonly", "moved"):
            with pytest.raises(SMBResponseException, match=NETWORK_NAME_DELETED):
                opens[name].read(0, 1)
        assert opens["kept"].read(0, 1) == b"x"
        # connected again, as the configuration now says
        with pytest.raises(SMBResponseException, match="0xc0000022"):     # ACCESS_DENIED
            c.connect("refused")
        ro = c.connect("readonly")
        with pytest.raises(SMBResponseException):
            c.open("new.txt", tree=ro, write=True, create=True)
        # asked again, nothing more is denied
        r = control(tmp_path, "close-denied-share", "*")
        assert r.returncode == 0 and json.loads(r.stdout)["closed"] == []
        c.conn.disconnect(close=False)
    finally:
        stop(proc)


def test_close_share_answers_a_change_notify_waiting_on_the_tree(tmp_path):
    from smbprotocol.change_notify import CompletionFilter, FileSystemWatcher
    share = tmp_path / "share"
    share.mkdir()
    proc, port = start(tmp_path, str(share))
    try:
        c = Client(port, "share")
        d = Open(c.tree, "")
        d.create(ImpersonationLevel.Impersonation, FilePipePrinterAccessMask.GENERIC_READ,
                 FileAttributes.FILE_ATTRIBUTE_DIRECTORY, ShareAccess.FILE_SHARE_READ | ShareAccess.FILE_SHARE_WRITE,
                 CreateDisposition.FILE_OPEN, CreateOptions.FILE_DIRECTORY_FILE)
        watcher = FileSystemWatcher(d)
        watcher.start(CompletionFilter.FILE_NOTIFY_CHANGE_FILE_NAME)
        time.sleep(0.2)                     # the interim answer came: the request waits
        r = control(tmp_path, "close-share", "*")
        assert r.returncode == 0 and len(json.loads(r.stdout)["closed"]) == 1, r.stdout + r.stderr
        assert watcher.response_event.wait(10), "the waiting CHANGE_NOTIFY was never answered"
        with pytest.raises(SMBResponseException, match="STATUS_NOTIFY_CLEANUP"):
            watcher.result
        c.conn.disconnect(close=False)
    finally:
        stop(proc)


def test_control_requests_that_name_no_share_are_refused(tmp_path):
    share = tmp_path / "share"
    share.mkdir()
    proc, port = start(tmp_path, str(share))
    try:
        r = subprocess.run(CLI + ["control", "close-share", " ", "--control-socket", str(tmp_path / "ctl" / "control")],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 2 and "name the share" in r.stderr
        path = str(tmp_path / "ctl" / "control")
        for request in (b"close-share\n", b"close-share \x01\n", b"close-everything now\n"):
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(path)
                s.sendall(request)
                answer = json.loads(s.makefile().readline())
            assert "error" in answer and "closed" not in answer, (request, answer)
        assert proc.poll() is None
    finally:
        stop(proc)


# -- SIGTERM ----------------------------------------------------------------------------------
def test_sigterm_during_a_large_get_lets_it_finish(tmp_path):
    if not shutil.which("smbclient"):
        pytest.skip("Samba's smbclient is not installed")
    share = tmp_path / "share"
    share.mkdir()
    data = os.urandom(1 << 20) * 48              # 48 MiB, read at ~16 MiB/s below: ~3 s
    (share / "big").write_bytes(data)
    proc, port = start(tmp_path, str(share))
    # the get writes to a pipe read slowly: smbclient (and so its READs) waits for it
    get = subprocess.Popen(["smbclient", "//127.0.0.1/share", "-p", str(port), "-U", f"{USER}%{PASSWORD}",
                            "-c", "get big -"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    digest, got = hashlib.sha256(), 0
    try:
        while got < 4 << 20:                     # the transfer is under way
            chunk = get.stdout.read(1 << 20)
            assert chunk, get.stderr.read()
            digest.update(chunk)
            got += len(chunk)
        proc.send_signal(signal.SIGTERM)
        with socket.socket() as s:               # no new connections meanwhile
            deadline = time.monotonic() + 5
            while s.connect_ex(("127.0.0.1", port)) == 0 and time.monotonic() < deadline:
                s.close()
                s = socket.socket()
                time.sleep(0.05)
        while True:
            chunk = get.stdout.read(1 << 20)
            if not chunk:
                break
            digest.update(chunk)
            got += len(chunk)
            time.sleep(0.06)
        assert get.wait(30) == 0, get.stderr.read()
        assert got == len(data) and digest.digest() == hashlib.sha256(data).digest()
        assert proc.wait(15) == 0
        log = (tmp_path / "server.log").read_text()
        assert "stopped: every connection finished" in log, log
        assert "Traceback" not in log
    finally:
        get.kill()
        stop(proc)


def test_sigterm_closes_connections_that_hold_files_after_the_timeout(tmp_path):
    share = tmp_path / "share"
    share.mkdir()
    (share / "f").write_bytes(b"x" * 10)
    proc, port = start(tmp_path, str(share), "--shutdown-timeout", "1")
    holder = Client(port, "share")
    holder.open("f")
    began = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0
    assert 0.9 <= time.monotonic() - began < 8
    assert "closed with work in flight after 1 s" in (tmp_path / "server.log").read_text()


# -- smbring status -----------------------------------------------------------------------
def test_status_shows_each_opens_oplock_or_lease(tmp_path):
    """smbstatus's Oplock column: the level an open holds, or its lease's state."""
    sys.path.insert(0, str(pathlib.Path(__file__).parents[1] / "security"))
    from raw import RawClient
    from smbcore import create_body

    from smbring.smb import wire
    share = tmp_path / "share"
    share.mkdir()
    proc, port = start(tmp_path, str(share))
    try:
        with RawClient(port) as c:
            c.negotiate()
            tree = c.tree(c.logon(USER, PASSWORD), "share")
            rw = wire.GENERIC_READ | wire.GENERIC_WRITE
            r = tree.request(wire.CREATE, create_body("batch.txt", rw, wire.FILE_OPEN_IF, 0, oplock=0x09))
            assert r.status == 0 and r.raw[66] == 0x09
            key = bytes(range(16))
            lease = [(b"RqLs", struct.pack("<16sIIQ", key, 0x7, 0, 0))]
            r = tree.request(wire.CREATE, create_body("leased.txt", rw, wire.FILE_OPEN_IF, 0, oplock=0xFF,
                                                      contexts=lease))
            assert r.status == 0 and r.raw[66] == 0xFF
            r = tree.create("plain.txt", rw, wire.FILE_OPEN_IF)
            assert r.status == 0
            opens = {o["name"]: o for conn in status(tmp_path)["connections"] for o in conn["opens"]}
            assert (opens["batch.txt"]["oplock"], opens["batch.txt"]["lease"]) == ("BATCH", None)
            assert opens["leased.txt"]["oplock"] == "LEASE"
            assert opens["leased.txt"]["lease"] == {"key": key.hex(), "state": "RWH"}
            assert (opens["plain.txt"]["oplock"], opens["plain.txt"]["lease"]) == ("NONE", None)
            text = status(tmp_path, as_json=False)
            assert "BATCH" in text and "LEASE(RWH)" in text
    finally:
        stop(proc)


def test_status_shows_sessions_opens_share_modes_and_locks(tmp_path):
    share = tmp_path / "share"
    share.mkdir()
    (share / "locked.bin").write_bytes(b"z" * 4096)
    proc, port = start(tmp_path, str(share))
    try:
        c = Client(port, "share")
        f = c.open("locked.bin", write=True)
        lock = SMB2LockElement()
        lock["offset"], lock["length"] = 100, 10
        lock["flags"] = LockFlags.SMB2_LOCKFLAG_EXCLUSIVE_LOCK | LockFlags.SMB2_LOCKFLAG_FAIL_IMMEDIATELY
        f.lock([lock])
        doc = status(tmp_path)
        [conn] = doc["connections"]
        assert conn["client"].startswith("127.0.0.1:") and conn["dialect"] == "SMB3_11"
        [session] = conn["sessions"]
        assert session["user"] == USER and session["signing"] and session["encryption"] is None
        assert [t["share"] for t in session["trees"]] == ["share"]
        [o] = conn["opens"]
        assert (o["name"], o["uses"], o["shares"], o["lease"]) == ("locked.bin", "RW", "R", None)
        assert o["locks"] == [{"offset": 100, "length": 10, "type": "exclusive"}]
        text = status(tmp_path, as_json=False)
        assert "locked.bin" in text and "exclusive" in text and USER in text and "SMB3_11" in text
        f.close()
        c.close()
        deadline = time.monotonic() + 5
        while status(tmp_path)["connections"]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        stop(proc)


def test_status_with_a_named_pipe_open(tmp_path):
    """A client holding a named pipe open (srvsvc: share listings, Windows' Explorer) is
    listed with its session, the pipe among no open files (as smbstatus; before, the status
    request itself failed, answered nothing, while any pipe was open)."""
    impacket = pytest.importorskip("impacket.smbconnection")
    share = tmp_path / "share"
    share.mkdir()
    proc, port = start(tmp_path, str(share))
    try:
        conn = impacket.SMBConnection("127.0.0.1", "127.0.0.1", sess_port=port)
        conn.login(USER, PASSWORD)
        tid = conn.connectTree("IPC$")
        conn.openFile(tid, "\\srvsvc")
        [listed] = status(tmp_path)["connections"]
        assert [s["user"] for s in listed["sessions"]] == [USER] and listed["opens"] == []
        assert USER in status(tmp_path, as_json=False)
        conn.close()
    finally:
        stop(proc)


def test_an_encrypted_smbclient_session_shows_its_cipher(tmp_path):
    share = tmp_path / "share"
    share.mkdir()
    proc, port = start(tmp_path, str(share))
    try:
        server = {"port": port}
        holder = subprocess.Popen(["smbclient", "//127.0.0.1/share", "-p", str(port), "-U", f"{USER}%{PASSWORD}",
                                   "--client-protection=encrypt"], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 20
            while True:
                sessions = [s for c in status(tmp_path)["connections"] for s in c["sessions"]]
                if sessions and sessions[0]["trees"]:
                    break
                assert time.monotonic() < deadline
                time.sleep(0.1)
            assert sessions[0]["encryption"].startswith("AES-") and sessions[0]["user"].endswith(USER)
        finally:
            holder.kill()
        assert smbclient(server, "ls").returncode == 0
    finally:
        stop(proc)


def test_only_root_or_the_servers_user_may_ask(tmp_path, unix_user):
    # the test's interpreter lives where another user cannot run it: the other user's
    # client is the system's Python with nothing but a socket
    system_python = shutil.which("python3", path="/usr/bin:/bin")
    if system_python is None:
        pytest.skip("no system python3 to run a client as another user")
    import tempfile
    from pathlib import Path
    share = tmp_path / "share"
    share.mkdir()
    # pytest's directories are root's alone: the socket goes where the other user can look
    outside = Path(tempfile.mkdtemp(prefix="smbring-test-", dir="/tmp"))
    os.chmod(outside, 0o755)
    ctl = outside / "ctl" / "control"
    proc, port = start(tmp_path, str(share), "--control-socket", str(ctl))
    try:
        assert oct(ctl.stat().st_mode & 0o777) == "0o600"
        assert oct(ctl.parent.stat().st_mode & 0o777) == "0o700"
        code = ("import socket,sys; s=socket.socket(socket.AF_UNIX)\n"
                "try: s.connect(sys.argv[1])\nexcept OSError as e: print('refused', e.errno); sys.exit()\n"
                "s.sendall(b'status\\n'); print(s.recv(65536).decode())")
        as_user = dict(user=unix_user, capture_output=True, text=True, timeout=30, cwd="/")
        r = subprocess.run([system_python, "-c", code, str(ctl)], **as_user)
        assert r.stdout.strip() == "refused 13", r.stdout + r.stderr        # EACCES: the 0700 directory
        # even with the directory and the socket opened to everyone, SO_PEERCRED refuses
        os.chmod(ctl.parent, 0o777)
        os.chmod(ctl, 0o777)
        r = subprocess.run([system_python, "-c", code, str(ctl)], **as_user)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout) == {"error": "permission denied"}
        assert f"control socket: uid {pwd_uid(unix_user)} refused" in (tmp_path / "server.log").read_text()
        r = subprocess.run(CLI + ["status", "--json", "--control-socket", str(ctl)], capture_output=True,
                           text=True, timeout=30)
        assert json.loads(r.stdout)["pid"] == proc.pid      # root still may
    finally:
        stop(proc)
        shutil.rmtree(outside, ignore_errors=True)


def pwd_uid(name):
    import pwd
    return pwd.getpwnam(name).pw_uid


def test_a_second_server_on_the_same_control_socket_does_not_take_it(tmp_path):
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    first, _ = start(tmp_path / "one", str(tmp_path), "--control-socket", str(tmp_path / "ctl" / "control"))
    try:
        second, _ = start(tmp_path / "two", str(tmp_path), "--control-socket", str(tmp_path / "ctl" / "control"),
                          env=env_for(tmp_path / "one"))
        try:
            assert status(tmp_path)["pid"] == first.pid
            # (its port accepts, in its backlog, before it tries the control socket)
            log, deadline = tmp_path / "two" / "server.log", time.monotonic() + 15
            while "another smbring serves it" not in log.read_text() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert "another smbring serves it" in log.read_text()
        finally:
            stop(second)
        assert status(tmp_path)["pid"] == first.pid       # the second left the first's socket
    finally:
        stop(first)


# -- systemd ----------------------------------------------------------------------------------
def test_socket_activation_and_sd_notify(tmp_path):
    share = tmp_path / "share"
    share.mkdir()
    (share / "hello.txt").write_text("hi\n")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(20)
    env = env_for(tmp_path, NOTIFY_SOCKET=str(tmp_path / "notify"))
    fd = listener.fileno()
    # as systemd starts a socket-activated service: the socket as descriptor 3, LISTEN_PID
    # naming the process (bash's $$ survives its exec), LISTEN_FDS=1
    script = (f'exec 3<&{fd} {fd}<&-; export LISTEN_PID=$$ LISTEN_FDS=1; '
              f'exec "$0" -m smbring serve "$1" --control-socket none --log-level info '
              + " ".join(as_root_args(tmp_path)))
    log = tmp_path / "server.log"
    proc = subprocess.Popen(["bash", "-c", script, sys.executable, str(share)], pass_fds=(fd,), env=env,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT)
    listener.close()
    try:
        assert notify.recv(4096).startswith(b"READY=1"), log.read_text()
        assert f"on 127.0.0.1:{port}" in log.read_text()       # the inherited socket, not 4445
        r = smbclient({"port": port}, "get hello.txt -")
        assert r.returncode == 0 and "hi" in r.stdout, r.stdout + r.stderr
        proc.send_signal(signal.SIGHUP)
        assert notify.recv(4096).startswith(b"RELOADING=1")
        assert notify.recv(4096) == b"READY=1"
        proc.send_signal(signal.SIGTERM)
        assert notify.recv(4096).startswith(b"STOPPING=1")
        assert proc.wait(15) == 0
    finally:
        stop(proc)
        notify.close()


# -- operator mistakes --------------------------------------------------------------------------
@pytest.mark.parametrize("listen, message", [
    ("nonsense", "expected HOST:PORT"),
    ("127.0.0.1:99999", "expected HOST:PORT"),
    ("::1:445", "in brackets"),
    ("no-such-host.invalid:4445", "not an address or a known host name"),
    ("192.0.2.1:4445", "no interface of this machine has that address"),
])
def test_a_bad_listen_is_one_clear_line(tmp_path, listen, message):
    (tmp_path / "share").mkdir()
    r = subprocess.run(CLI + ["serve", str(tmp_path / "share"), "--listen", listen], env=env_for(tmp_path),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr


def test_a_port_in_use_is_one_clear_line(tmp_path):
    (tmp_path / "share").mkdir()
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        r = subprocess.run(CLI + ["serve", str(tmp_path / "share"), "--listen", f"127.0.0.1:{port}"],
                           env=env_for(tmp_path), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "another server listens there" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.splitlines()) == 1


def test_port_445_without_privilege_says_how_to_get_it(tmp_path):
    # as a process without CAP_NET_BIND_SERVICE (root whose bounding set lacks it)
    if not shutil.which("setpriv") or os.geteuid() != 0:
        pytest.skip("needs root and setpriv to drop CAP_NET_BIND_SERVICE")
    share = tmp_path / "share"
    share.mkdir()
    r = subprocess.run(["setpriv", "--bounding-set", "-net_bind_service", "--inh-caps", "-net_bind_service"]
                       + CLI + ["serve", str(share), "--listen", "127.0.0.1:445"], env=env_for(tmp_path),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "socket activation" in r.stderr and "CAP_NET_BIND_SERVICE" in r.stderr
    assert len(r.stderr.splitlines()) == 1


def test_a_broken_configuration_is_one_clear_line(tmp_path):
    conf = tmp_path / "smb.conf"
    conf.write_text("[global\nbroken\n")
    r = subprocess.run(CLI + ["serve", "--config", str(conf)], env=env_for(tmp_path), capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr


# -- logs and metrics ---------------------------------------------------------------------------
def test_log_file_rotates_at_max_log_size_and_audits_logons(tmp_path):
    share = tmp_path / "share"
    share.mkdir()
    port = free_port()
    conf = tmp_path / "smb.conf"
    logfile = tmp_path / "logs" / "log.%m"
    write_config(conf, {"share": {"path": share}}, listen=f"127.0.0.1:{port}", log_file=logfile,
                 max_log_size=1, log_level=3)
    proc, _ = start(tmp_path, "--config", str(conf), port=port)
    try:
        server = {"port": port}
        for _ in range(6):
            assert smbclient(server, "ls").returncode == 0
        assert smbclient(server, "ls", password="wrong").returncode != 0
        written = tmp_path / "logs" / "log.smbring"
        deadline = time.monotonic() + 5
        while not (tmp_path / "logs" / "log.smbring.old").exists():
            assert time.monotonic() < deadline, "no rotation to .old"
            time.sleep(0.05)
        assert written.stat().st_size <= 1024 + 512
        text = written.read_text() + (tmp_path / "logs" / "log.smbring.old").read_text()
        assert f"logon refused: user WORKGROUP\\{USER} from 127.0.0.1" in text
    finally:
        stop(proc)


def test_metrics(tmp_path):
    pytest.importorskip("prometheus_client")
    share = tmp_path / "share"
    share.mkdir()
    (share / "f").write_bytes(os.urandom(1 << 20))
    mport = free_port()
    proc, port = start(tmp_path, str(share), "--metrics", f"127.0.0.1:{mport}")
    try:
        assert smbclient({"port": port}, "get f /dev/null; put /etc/hostname h").returncode == 0
        body = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=10).read().decode()
        assert 'smbring_requests_total{command="read"}' in body
        assert 'smbring_request_seconds_bucket{command="read"' in body
        values = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
                  if line and not line.startswith("#")}
        assert values["smbring_connections_total"] >= 1       # (the start-up probe counts too)
        read = sum(float(line.split()[-1]) for line in body.splitlines()
                   if line.startswith("smbring_read_bytes_total{"))
        assert read >= 1 << 20
        written = [line for line in body.splitlines() if line.startswith("smbring_written_bytes_total")]
        assert float(written[0].split()[-1]) == os.path.getsize("/etc/hostname")
    finally:
        stop(proc)


def test_version_and_python_m(tmp_path):
    r = subprocess.run(CLI + ["--version"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("smbring ")


def test_a_control_socket_directory_that_is_a_symbolic_link_is_not_used(tmp_path):
    """In a shared /tmp anyone may plant `smbring-UID` as a link to a directory of their
    choosing: the server must not put its control socket (nor the workers' store) there."""
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    (tmp_path / "ctl").symlink_to(target)
    proc, _ = start(tmp_path, str(tmp_path), "--control-socket", str(tmp_path / "ctl" / "control"))
    try:
        assert "is a symbolic link" in (tmp_path / "server.log").read_text()
        assert not list(target.iterdir())
    finally:
        stop(proc)
