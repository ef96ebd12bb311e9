"""A server started as root acts as each session's Unix account, and as itself for its own
work, with smbclient and smbprotocol against real `smbring serve --config` processes:

- listings: `hide unreadable` and `hide unwriteable files` are judged as the session's
  account (the kernel's answer for it: mode bits, ACLs), never as the server's root;
- a share whose directory the account cannot reach (a directory above it it may not search)
  connects, and every request on it is refused with STATUS_ACCESS_DENIED, as smbd 4.17
  answers (its chdir into the share as the user fails before each request);
- the server's own work after a user's file-system calls runs as the server: a reload that
  reads a configuration in a directory only root may read, the log's rotation in such a
  directory, the control socket's removal at SIGTERM, the username map read at logon;
- `smbring status` names each session's (and tree's) Unix account.

Unix accounts are made for the module (useradd, unique names, removed after); the shares lie
in a directory every account may search, the configuration, log and control socket in
pytest's directories, which only root may enter. Skipped where the tests do not run as root."""
from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from servers import free_port, spawn, stop

if os.geteuid() != 0 or not shutil.which("useradd"):
    pytest.skip("acting as Unix accounts needs root (and useradd)", allow_module_level=True)
if not shutil.which("smbclient"):
    pytest.skip("Samba's smbclient is not installed", allow_module_level=True)

smbclient_api = pytest.importorskip("smbclient")      # the smbprotocol package's high-level API
from smbprotocol.connection import Connection  # noqa: E402
from smbprotocol.exceptions import SMBResponseException  # noqa: E402
from smbprotocol.open import (  # noqa: E402
    CreateDisposition,
    CreateOptions,
    FileAttributes,
    FilePipePrinterAccessMask,
    ImpersonationLevel,
    Open,
    ShareAccess,
)
from smbprotocol.session import Session  # noqa: E402
from smbprotocol.tree import TreeConnect  # noqa: E402

CLI = [sys.executable, "-m", "smbring.cli"]
PASSWORD = "Server-work-pw1"
SUFFIX = f"{os.getpid() % 100000}"
ALICE, BOB, DAVE = (f"srw{n}{SUFFIX}" for n in ("a", "b", "d"))
GROUP = f"srwg{SUFFIX}"


def run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, text=True)


@pytest.fixture(scope="module")
def accounts():
    """ALICE (also in GROUP) and BOB: name -> pwd entry. DAVE has none (a username map
    names ALICE's account for him)."""
    made = []
    try:
        run("groupadd", GROUP)
        run("useradd", "--no-create-home", "--user-group", "--groups", GROUP, ALICE)
        made.append(ALICE)
        run("useradd", "--no-create-home", "--user-group", BOB)
        made.append(BOB)
        yield {name: pwd.getpwnam(name) for name in made}
    finally:
        for name in made:
            subprocess.run(["userdel", name], capture_output=True)
        subprocess.run(["groupdel", GROUP], capture_output=True)


@pytest.fixture(scope="module")
def shares_root(accounts):
    """A directory every account may search (pytest's are root's alone), with:
    listed/ : root600 (root 0600), alice600 (ALICE's 0600), pub644 (root 0644), rw666
    (root 0666), rootdir/ (root 0700), acl600 (root 0600 with an ACL granting ALICE read,
    where the file system keeps ACLs), in-link -> root600, out-link -> /etc/hostname;
    locked/share (0777, below root's 0700 locked/); grouponly/share (below root:GROUP 0710)."""
    import grp
    top = Path(tempfile.mkdtemp(prefix="smbring-server-work-", dir="/tmp"))
    top.chmod(0o755)
    listed = top / "listed"
    listed.mkdir()
    listed.chmod(0o777)
    for name, mode, owner in (("root600", 0o600, 0), ("alice600", 0o600, accounts[ALICE].pw_uid),
                              ("pub644", 0o644, 0), ("rw666", 0o666, 0), ("acl600", 0o600, 0)):
        path = listed / name
        path.write_text(name)
        os.chown(path, owner, -1)
        path.chmod(mode)
    (listed / "rootdir").mkdir()
    (listed / "rootdir").chmod(0o700)
    (listed / "in-link").symlink_to("root600")
    (listed / "out-link").symlink_to("/etc/hostname")
    acl = grant_read(listed / "acl600", accounts[ALICE].pw_uid)
    for name, mode, gid in (("locked", 0o700, 0), ("grouponly", 0o710, grp.getgrnam(GROUP).gr_gid)):
        (top / name / "share").mkdir(parents=True)
        (top / name / "share").chmod(0o777)
        (top / name / "share" / "f.txt").write_text("behind a closed door")
        (top / name / "share" / "f.txt").chmod(0o666)
        os.chown(top / name, 0, gid)
        (top / name).chmod(mode)
    (top / "work").mkdir()
    (top / "work").chmod(0o777)
    yield {"top": top, "acl": acl}
    shutil.rmtree(top, ignore_errors=True)


def grant_read(path: Path, uid: int) -> bool:
    """Gives uid read access to path by a POSIX ACL (system.posix_acl_access, version 2:
    user::rw-, user:uid:r--, group::---, mask::r--, other::---); False where the file system
    keeps no ACLs."""
    entries = [(0x01, 6, 0xFFFFFFFF), (0x02, 4, uid), (0x04, 0, 0xFFFFFFFF), (0x10, 4, 0xFFFFFFFF),
               (0x20, 0, 0xFFFFFFFF)]
    blob = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)
    try:
        os.setxattr(path, "system.posix_acl_access", blob)
    except OSError:
        return False
    return True


def start(tmp_path: Path, shares_root, global_options: str = "", extra_shares: str = ""):
    """`smbring serve --config` as root, acting as the accounts, with ALICE, BOB and DAVE in
    its password file; the configuration, log file, username map and control socket in
    tmp_path (root's 0700). Returns a dict: port, proc, conf, log (the log file), out (its
    standard output and error), ctl (the control socket)."""
    top = shares_root["top"]
    env = dict(os.environ, SMBRING_PASSDB=str(tmp_path / "passdb"))
    for user in (ALICE, BOB, DAVE):
        subprocess.run(CLI + ["user", "add", user, "--password-stdin"], input=PASSWORD + "\n", text=True,
                       check=True, env=env, capture_output=True)
    (tmp_path / "users.map").write_text(f"{ALICE} = {DAVE}\n")
    (tmp_path / "users.map").chmod(0o600)
    port = free_port()
    conf = tmp_path / "etc" / "smb.conf"
    conf.parent.mkdir(mode=0o700)
    conf.write_text(
        f"[global]\nlisten = 127.0.0.1:{port}\nusername map = {tmp_path / 'users.map'}\n"
        f"control socket = {tmp_path / 'ctl' / 'control'}\nlog file = {tmp_path / 'log' / 'log.smbd'}\n"
        f"{global_options}\n"
        f"[work]\npath = {top / 'work'}\nread only = no\n"
        f"[hideread]\npath = {top / 'listed'}\nhide unreadable = yes\n"
        f"[hidewrite]\npath = {top / 'listed'}\nhide unwriteable files = yes\n"
        f"[plain]\npath = {top / 'listed'}\n"
        f"[locked]\npath = {top / 'locked' / 'share'}\nread only = no\n"
        f"[grouponly]\npath = {top / 'grouponly' / 'share'}\nread only = no\n{extra_shares}")
    proc, port, out = spawn(tmp_path, "--config", str(conf), port=port, accounts=True)
    return {"port": port, "proc": proc, "conf": conf, "log": tmp_path / "log" / "log.smbd", "out": out,
            "ctl": tmp_path / "ctl" / "control", "tmp": tmp_path}


@pytest.fixture(scope="module")
def server(accounts, shares_root, tmp_path_factory):
    s = start(tmp_path_factory.mktemp("server-work"), shares_root)
    yield s
    stop(s["proc"])
    smbclient_api.reset_connection_cache()


def smbclient(server, share: str, command: str, user: str = ALICE) -> subprocess.CompletedProcess:
    return subprocess.run(["smbclient", f"//127.0.0.1/{share}", "-p", str(server["port"]),
                           "-U", f"{user}%{PASSWORD}", "-c", command], capture_output=True, text=True, timeout=60)


def listed_names(result: subprocess.CompletedProcess, must_succeed: bool = True) -> set[str]:
    """The names `smbclient -c ls` listed."""
    assert result.returncode == 0 or not must_succeed, result.stdout + result.stderr
    names = set()
    for line in result.stdout.splitlines():
        if line.startswith("  ") and not line.startswith("   "):
            names.add(line[2:].rsplit(None, 7)[0].rstrip())
    return names - {".", ".."}


def smbprotocol_names(server, share: str, user: str) -> set[str]:
    cache: dict = {}
    try:
        return set(smbclient_api.listdir(f"\\\\127.0.0.1\\{share}", username=user, password=PASSWORD,
                                         port=server["port"], connection_cache=cache))
    finally:
        for connection in cache.values():
            connection.disconnect()


# -- hide unreadable, hide unwriteable files: as the session's account ------------------------
ALL = {"root600", "alice600", "pub644", "rw666", "acl600", "rootdir", "in-link", "out-link"}


def test_plain_listing_shows_everything(server):
    assert listed_names(smbclient(server, "plain", "ls", BOB)) == ALL


def test_hide_unreadable_is_judged_as_the_sessions_account(server, shares_root):
    acl = {"acl600"} if shares_root["acl"] else set()     # ALICE may read it by its ACL alone
    for names in (listed_names(smbclient(server, "hideread", "ls", ALICE)),
                  smbprotocol_names(server, "hideread", ALICE)):
        # root's 0600 file, root's 0700 directory, a link to root's file, a link out: hidden
        assert names == {"alice600", "pub644", "rw666"} | acl, names
    for names in (listed_names(smbclient(server, "hideread", "ls", BOB)),
                  smbprotocol_names(server, "hideread", BOB)):
        assert names == {"pub644", "rw666"}, names
    # hidden from the listing, not made unreachable by name (as Samba): the account's own
    # permissions decide
    r = smbclient(server, "hideread", f"get root600 {server['tmp'] / 'x'}", ALICE)
    assert "NT_STATUS_ACCESS_DENIED" in r.stdout + r.stderr, r
    assert smbclient(server, "hideread", f"get alice600 {server['tmp'] / 'x'}", ALICE).returncode == 0


def test_hide_unwriteable_files_is_judged_as_the_sessions_account(server):
    for user, expected in ((ALICE, {"alice600", "rw666", "rootdir"}), (BOB, {"rw666", "rootdir"})):
        for names in (listed_names(smbclient(server, "hidewrite", "ls", user)),
                      smbprotocol_names(server, "hidewrite", user)):
            # directories are listed whether writable or not (as Samba lists them)
            assert names == expected, (user, names)


def test_hidden_names_stay_hidden_under_every_pattern(server):
    """The rules apply to what a pattern selects too: asking by name or wildcard lists no
    hidden entry."""
    for pattern in ("root600", "root*", "*600", "?oot600", "in-link", "rootdir"):
        r = smbclient(server, "hideread", f"ls {pattern}", BOB)
        assert not listed_names(r, must_succeed=False) & {"root600", "in-link", "rootdir"}, r
        assert r.returncode == 0 or "NT_STATUS_NO_SUCH_FILE" in r.stdout, r


# -- a share the account cannot reach ----------------------------------------------------------
def tree_then_open(port: int, share: str, user: str, name: str = "f.txt"):
    """smbprotocol: connect a tree, then open `name` for reading; returns (tree status, open
    status): 'ok' or the NTSTATUS name."""
    conn = Connection(uuid.uuid4(), "127.0.0.1", port)
    conn.connect(timeout=10)
    try:
        session = Session(conn, user, PASSWORD, require_encryption=False)
        session.connect()
        tree = TreeConnect(session, rf"\\127.0.0.1\{share}")
        try:
            tree.connect()
        except SMBResponseException as e:
            return type(e).__name__, None
        handle = Open(tree, name)
        try:
            handle.create(ImpersonationLevel.Impersonation, FilePipePrinterAccessMask.FILE_READ_DATA,
                          FileAttributes.FILE_ATTRIBUTE_NORMAL, ShareAccess.FILE_SHARE_READ,
                          CreateDisposition.FILE_OPEN, CreateOptions.FILE_NON_DIRECTORY_FILE)
            handle.close()
            opened = "ok"
        except SMBResponseException as e:
            opened = type(e).__name__
        tree.disconnect()
        return "ok", opened
    finally:
        conn.disconnect()


def test_a_share_the_account_cannot_reach_refuses_every_request(server, shares_root):
    # as smbd answers: the tree connects, every request on it is STATUS_ACCESS_DENIED
    assert tree_then_open(server["port"], "locked", ALICE) == ("ok", "AccessDenied")
    assert tree_then_open(server["port"], "locked", ALICE, "") == ("ok", "AccessDenied")
    for command in ("ls", "get f.txt /dev/null", "put /etc/hostname new.txt", "mkdir d", "cd ..; ls",
                    "ls ..\\..\\*", "allinfo f.txt"):
        r = smbclient(server, "locked", command, ALICE)
        assert "NT_STATUS_ACCESS_DENIED" in r.stdout + r.stderr, (command, r)
    assert sorted(os.listdir(shares_root["top"] / "locked" / "share")) == ["f.txt"]


def test_a_share_below_a_group_directory_is_reached_by_the_groups_members(server):
    assert tree_then_open(server["port"], "grouponly", ALICE) == ("ok", "ok")       # ALICE is in GROUP
    assert tree_then_open(server["port"], "grouponly", BOB) == ("ok", "AccessDenied")
    r = smbclient(server, "grouponly", "ls", ALICE)
    assert r.returncode == 0 and "f.txt" in r.stdout, r
    r = smbclient(server, "grouponly", "ls", BOB)
    assert "NT_STATUS_ACCESS_DENIED" in r.stdout + r.stderr, r


# -- smbring status: the Unix account ----------------------------------------------------------
def test_status_names_each_sessions_unix_account(server, accounts):
    assert wait_for(server["ctl"].exists)
    conn = Connection(uuid.uuid4(), "127.0.0.1", server["port"])
    conn.connect(timeout=10)
    try:
        session = Session(conn, DAVE, PASSWORD, require_encryption=False)      # mapped to ALICE
        session.connect()
        tree = TreeConnect(session, r"\\127.0.0.1\work")
        tree.connect()
        r = subprocess.run(CLI + ["status", "--json", "--control-socket", str(server["ctl"])],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        sessions = [s for c in json.loads(r.stdout)["connections"] for s in c["sessions"]]
        alice = accounts[ALICE]
        assert [s["unix"] for s in sessions] == [{"user": ALICE, "uid": alice.pw_uid, "gid": alice.pw_gid}]
        assert sessions[0]["user"].endswith(DAVE)
        assert [t["unix"]["user"] for t in sessions[0]["trees"]] == [ALICE]
        r = subprocess.run(CLI + ["status", "--control-socket", str(server["ctl"])],
                           capture_output=True, text=True, timeout=30)
        assert f"{ALICE} (uid {alice.pw_uid})" in r.stdout, r.stdout
        assert "Unix user" in r.stdout
    finally:
        conn.disconnect()


# -- the server's own work, after a user's file-system calls -----------------------------------
def users_io(server, user: str = ALICE) -> None:
    """A user's file-system calls: the event loop's thread acts as the user afterwards."""
    src = server["tmp"] / "upload"
    src.write_text("x" * 100)
    r = smbclient(server, "work", f"put {src} {user}-{time.monotonic_ns()}.txt; ls", user)
    assert r.returncode == 0, r


def wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_reload_reads_a_configuration_only_root_may_read(accounts, shares_root, tmp_path):
    s = start(tmp_path, shares_root)
    try:
        assert oct(s["conf"].parent.stat().st_mode & 0o777) == "0o700"
        users_io(s)
        s["conf"].write_text(s["conf"].read_text() + f"[added]\npath = {shares_root['top'] / 'work'}\n")
        s["proc"].send_signal(signal.SIGHUP)
        assert wait_for(lambda: "configuration reloaded" in s["log"].read_text()
                        or "reload failed" in s["log"].read_text())
        log = s["log"].read_text()
        assert "reload failed" not in log and "Permission denied" not in log, log
        assert smbclient(s, "added", "ls", BOB).returncode == 0
    finally:
        stop(s["proc"])


def test_the_log_rotates_after_a_users_calls(accounts, shares_root, tmp_path):
    s = start(tmp_path, shares_root, "max log size = 1")          # KiB: a few records
    try:
        for _ in range(6):
            users_io(s)
        users_io(s, BOB)
        assert wait_for(lambda: Path(str(s["log"]) + ".old").exists())
        assert smbclient(s, "work", "ls", BOB).returncode == 0
        assert wait_for(lambda: "connection from" in s["log"].read_text())
        out = s["out"].read_text()
        assert "Logging error" not in out and "PermissionError" not in out, out
        assert s["log"].stat().st_uid == 0 and Path(str(s["log"]) + ".old").stat().st_uid == 0
    finally:
        stop(s["proc"])


def test_sigterm_removes_the_control_socket_after_a_users_calls(accounts, shares_root, tmp_path):
    s = start(tmp_path, shares_root)
    assert wait_for(s["ctl"].exists)
    users_io(s)
    s["proc"].send_signal(signal.SIGTERM)
    assert s["proc"].wait(20) == 0
    assert not s["ctl"].exists(), s["log"].read_text()
    assert "stopped" in s["log"].read_text()


def test_username_map_only_root_may_read_is_read_at_every_logon(accounts, shares_root, tmp_path):
    s = start(tmp_path, shares_root)
    try:
        users_io(s, BOB)
        users_io(s, DAVE)          # DAVE has no account: the map (root's 0600) names ALICE's
        made = [p for p in (shares_root["top"] / "work").iterdir() if p.name.startswith(DAVE)]
        assert made and all(p.stat().st_uid == accounts[ALICE].pw_uid for p in made)
        assert "names not mapped" not in s["log"].read_text()
    finally:
        stop(s["proc"])


def test_the_server_stays_itself_under_interleaved_users_and_reloads(accounts, shares_root, tmp_path):
    """Reloads and status requests between the requests of two users: each keeps working,
    and what each user creates stays theirs."""
    s = start(tmp_path, shares_root)
    try:
        for i in range(3):
            users_io(s, ALICE)
            s["proc"].send_signal(signal.SIGHUP)
            users_io(s, BOB)
            r = subprocess.run(CLI + ["status", "--json", "--control-socket", str(s["ctl"])],
                               capture_output=True, text=True, timeout=30)
            assert r.returncode == 0, r.stderr
        assert wait_for(lambda: s["log"].read_text().count("configuration reloaded") == 3)
        assert "reload failed" not in s["log"].read_text()
        for user in (ALICE, BOB):
            made = [p for p in (shares_root["top"] / "work").iterdir() if p.name.startswith(user)]
            assert made and all(p.stat().st_uid == accounts[user].pw_uid for p in made)
    finally:
        stop(s["proc"])
