"""Each session acts as its Unix account (a server started as root): the kernel's permission
checks apply to it and what it creates belongs to it, with smbclient and smbprotocol, and
requests of two users interleaved on one server never run as the other.

Two Unix accounts are made for the module (useradd, unique names, removed after), one of them
in a group made for it too; a third SMB user has no account, a fourth is mapped to the first
by a username map. Skipped where the tests do not run as root."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from servers import smbclient as run_smbclient
from servers import spawn, stop

if os.geteuid() != 0 or not shutil.which("useradd"):
    pytest.skip("acting as Unix accounts needs root (and useradd)", allow_module_level=True)

smbprotocol = pytest.importorskip("smbclient")   # the smbprotocol package's high-level API
from smbprotocol.exceptions import SMBOSError  # noqa: E402

PASSWORD = "Identity-pw1"
SUFFIX = f"{os.getpid() % 100000}"
ALICE, BOB, CAROL, DAVE = (f"sri{n}{SUFFIX}" for n in ("a", "b", "c", "d"))
GROUP = f"srig{SUFFIX}"
NOBODY = 65534


def run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, text=True)


@pytest.fixture(scope="module")
def accounts():
    """ALICE (also in GROUP) and BOB as Unix accounts: name -> (uid, gid)."""
    made = []
    try:
        run("groupadd", GROUP)
        run("useradd", "--no-create-home", "--user-group", "--groups", GROUP, ALICE)
        made.append(ALICE)
        run("useradd", "--no-create-home", "--user-group", BOB)
        made.append(BOB)
        import pwd
        yield {n: (pwd.getpwnam(n).pw_uid, pwd.getpwnam(n).pw_gid) for n in (ALICE, BOB)}
    finally:
        for name in made:
            subprocess.run(["userdel", name], capture_output=True)
        subprocess.run(["groupdel", GROUP], capture_output=True)


@pytest.fixture(scope="module")
def server(accounts, tmp_path_factory):
    """A root server, as the accounts (no mapping of everyone to root), guests allowed, with:
    root600.txt (root, 0600), pub.txt (root, 0644), shared/ (sticky, 1777) holding a 0600 file
    of ALICE and one of BOB, group/ (root:GROUP 0770) holding g.txt (root:GROUP 0640)."""
    import grp
    tmp = tmp_path_factory.mktemp("identity")
    # pytest's directories are root's alone (0700): the users could not reach a share there
    # (a tree connect would connect, and every request be refused, as smbd does)
    reachable = Path(tempfile.mkdtemp(prefix="smbring-identity-", dir="/tmp"))
    reachable.chmod(0o755)
    share = reachable / "share"
    share.mkdir()
    share.chmod(0o755)
    (share / "root600.txt").write_text("root's secret")
    (share / "root600.txt").chmod(0o600)
    (share / "pub.txt").write_text("for everyone")
    (share / "pub.txt").chmod(0o644)
    shared = share / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    for name in (ALICE, BOB):
        f = shared / f"{name}600.txt"
        f.write_text(f"{name}'s secret")
        f.chmod(0o600)
        os.chown(f, *accounts[name])
    gid = grp.getgrnam(GROUP).gr_gid
    group = share / "group"
    group.mkdir()
    os.chown(group, 0, gid)
    group.chmod(0o770)
    (group / "g.txt").write_text("for the group")
    os.chown(group / "g.txt", 0, gid)
    (group / "g.txt").chmod(0o640)
    env = dict(os.environ, SMBRING_PASSDB=str(tmp / "passdb"))
    for user in (ALICE, BOB, CAROL, DAVE):
        subprocess.run([sys.executable, "-m", "smbring.cli", "user", "add", user, "--password-stdin"],
                       input=PASSWORD + "\n", text=True, check=True, env=env, capture_output=True)
    usermap = tmp / "users.map"
    usermap.write_text(f"# DAVE's files are ALICE's\n{ALICE} = {DAVE}\n")
    proc, port, log = spawn(tmp, str(share), "--share", "share", "--guest",
                            "--username-map", str(usermap), accounts=True)
    yield {"port": port, "share": share, "proc": proc, "log": log, "ids": accounts}
    stop(proc)
    smbprotocol.reset_connection_cache()
    shutil.rmtree(reachable, ignore_errors=True)


def smbclient(server, command: str, user: str):
    return run_smbclient(server, command, user=user, password=PASSWORD)


def owner(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_uid, st.st_gid


# -- smbclient ------------------------------------------------------------------------------------
def test_smbclient_a_user_reads_only_what_their_account_may(server, tmp_path):
    out = tmp_path / "out"
    r = smbclient(server, f"get root600.txt {out}", ALICE)
    assert "NT_STATUS_ACCESS_DENIED" in r.stdout + r.stderr, r
    r = smbclient(server, f"get shared\\{BOB}600.txt {out}", ALICE)
    assert "NT_STATUS_ACCESS_DENIED" in r.stdout + r.stderr, r
    r = smbclient(server, f"get shared\\{ALICE}600.txt {out}", ALICE)
    assert r.returncode == 0, r
    assert out.read_text() == f"{ALICE}'s secret"
    r = smbclient(server, f"get pub.txt {out}", BOB)
    assert r.returncode == 0 and out.read_text() == "for everyone", r


def test_smbclient_new_files_belong_to_their_creator(server, tmp_path):
    src = tmp_path / "src"
    src.write_text("data")
    for user in (ALICE, BOB):
        r = smbclient(server, f"put {src} shared\\new-{user}.txt; mkdir shared\\dir-{user}", user)
        assert r.returncode == 0, r
        assert owner(server["share"] / "shared" / f"new-{user}.txt") == server["ids"][user]
        assert owner(server["share"] / "shared" / f"dir-{user}") == server["ids"][user]
    # the share root is root's 0755: nobody else creates anything in it
    r = smbclient(server, f"put {src} in-root.txt", ALICE)
    assert "NT_STATUS_ACCESS_DENIED" in r.stdout + r.stderr, r
    assert not (server["share"] / "in-root.txt").exists()


def test_smbclient_sticky_directory_keeps_others_files(server, tmp_path):
    src = tmp_path / "src"
    src.write_text("mine")
    assert smbclient(server, f"put {src} shared\\sticky-{ALICE}.txt", ALICE).returncode == 0
    r = smbclient(server, f"del shared\\sticky-{ALICE}.txt", BOB)
    assert "NT_STATUS_ACCESS_DENIED" in r.stdout + r.stderr, r
    r = smbclient(server, f"rename shared\\sticky-{ALICE}.txt shared\\taken.txt", BOB)
    assert "NT_STATUS_ACCESS_DENIED" in r.stdout + r.stderr, r
    assert (server["share"] / "shared" / f"sticky-{ALICE}.txt").read_text() == "mine"
    assert smbclient(server, f"del shared\\sticky-{ALICE}.txt", ALICE).returncode == 0


def test_smbclient_supplementary_groups_count(server, tmp_path):
    out = tmp_path / "out"
    r = smbclient(server, f"get group\\g.txt {out}", ALICE)          # ALICE is in GROUP
    assert r.returncode == 0 and out.read_text() == "for the group", r
    r = smbclient(server, f"get group\\g.txt {out}", BOB)            # BOB is not
    assert "NT_STATUS_ACCESS_DENIED" in r.stdout + r.stderr, r
    r = smbclient(server, "ls group\\*", BOB)
    assert "NT_STATUS_ACCESS_DENIED" in r.stdout + r.stderr, r


def test_a_listing_shows_what_the_users_account_may_see(server):
    """A directory whose names its account may read but not search (r without x): the user
    lists it, and every entry's details would need a search, so only "." and ".." show (as
    `ls -l` by the account finds nothing it may stat). Root, the server's own account, would
    see every file: the listing's file-system calls run as the session's account."""
    names = server["share"] / "names-only"
    names.mkdir()
    names.chmod(0o744)
    for n in ("one.txt", "two.txt", "three.txt"):
        (names / n).write_text(n)
    try:
        r = smbclient(server, "ls names-only\\*", ALICE)
        assert r.returncode == 0, r
        listed = [line.split()[0] for line in r.stdout.splitlines() if line.startswith("  ")]
        assert sorted(listed) == [".", ".."], r.stdout
        r = smbclient(server, "ls *", ALICE)        # the root: readable and searchable by all
        assert "pub.txt" in r.stdout and "names-only" in r.stdout, r.stdout
    finally:
        shutil.rmtree(names)


def test_an_open_the_account_may_not_make_breaks_nobodys_oplock(server):
    """BOB may not read ALICE's 0600 file: his CREATE is refused ACCESS_DENIED at once, and
    ALICE's batch oplock is not broken for it (as Windows checks access before it breaks
    anything): a user must not be able to take other users' caching away, nor close their
    detached durable opens, with opens he could never make."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "security"))
    from raw import NoAnswer, RawClient
    from smbcore import create_body

    from smbring.smb import wire
    name = f"shared\\{ALICE}600.txt"
    with RawClient(server["port"]) as alice, RawClient(server["port"]) as bob:
        alice.negotiate()
        atree = alice.tree(alice.logon(ALICE, PASSWORD), "share")
        r = atree.request(wire.CREATE, create_body(name, wire.GENERIC_READ | wire.GENERIC_WRITE,
                                                   wire.FILE_OPEN, 0, oplock=0x09))
        assert r.status == wire.STATUS_SUCCESS and r.raw[66] == 0x09
        bob.negotiate()
        btree = bob.tree(bob.logon(BOB, PASSWORD), "share")
        for access in (wire.GENERIC_READ, wire.GENERIC_WRITE):
            r = btree.request(wire.CREATE, create_body(name, access, wire.FILE_OPEN, 0))
            assert r.status == wire.STATUS_ACCESS_DENIED, r
        alice.sock.settimeout(1.0)
        try:
            frame = alice.recv_frame()
        except NoAnswer:
            frame = None
        assert frame is None, f"ALICE was sent {frame!r}"


def test_guest_acts_as_nobody(server, tmp_path):
    if not shutil.which("smbclient"):
        pytest.skip("Samba's smbclient is not installed")
    src, out = tmp_path / "src", tmp_path / "out"
    src.write_text("guest data")

    def anonymous(command):
        return subprocess.run(["smbclient", "//127.0.0.1/share", "-p", str(server["port"]), "-N",
                               "-c", command], capture_output=True, text=True, timeout=60)
    r = anonymous(f"get pub.txt {out}")
    assert r.returncode == 0 and out.read_text() == "for everyone", r
    r = anonymous(f"get root600.txt {out}")
    assert "NT_STATUS_ACCESS_DENIED" in r.stdout + r.stderr, r
    r = anonymous(f"put {src} shared\\from-guest.txt")
    assert r.returncode == 0, r
    assert (server["share"] / "shared" / "from-guest.txt").stat().st_uid == NOBODY


def test_a_user_without_unix_account_cannot_log_on(server):
    r = smbclient(server, "ls", CAROL)
    assert "NT_STATUS_LOGON_FAILURE" in r.stdout + r.stderr, r
    assert f"{CAROL} (Unix name {CAROL}) has no Unix account: logon refused" in server["log"].read_text()
    with pytest.raises(Exception, match="LOGON_FAILURE|0xc000006d"):
        smbprotocol.register_session("127.0.0.1", username=CAROL, password=PASSWORD,
                                     port=server["port"], connection_cache={})


def test_username_map_names_the_account(server, tmp_path):
    src = tmp_path / "src"
    src.write_text("mapped")
    r = smbclient(server, f"put {src} shared\\from-dave.txt", DAVE)
    assert r.returncode == 0, r
    assert owner(server["share"] / "shared" / "from-dave.txt") == server["ids"][ALICE]
    r = smbclient(server, f"get shared\\{BOB}600.txt {tmp_path / 'x'}", DAVE)
    assert "NT_STATUS_ACCESS_DENIED" in r.stdout + r.stderr, r


# -- smbprotocol ----------------------------------------------------------------------------------
def unc(*parts: str) -> str:
    return "\\\\127.0.0.1\\share\\" + "\\".join(parts)


def test_smbprotocol_access_and_ownership(server):
    port, cache = server["port"], {}
    kw = dict(username=ALICE, password=PASSWORD, port=port, connection_cache=cache)
    try:
        with pytest.raises(SMBOSError, match="ACCESS_DENIED|0xc0000022"):
            smbprotocol.open_file(unc("root600.txt"), "rb", **kw)
        with pytest.raises(SMBOSError, match="ACCESS_DENIED|0xc0000022"):
            smbprotocol.open_file(unc("shared", f"{BOB}600.txt"), "rb", **kw)
        with pytest.raises(SMBOSError, match="ACCESS_DENIED|0xc0000022"):
            smbprotocol.open_file(unc("pub.txt"), "ab", **kw)          # root's 0644: no writing
        with smbprotocol.open_file(unc("shared", "sp-alice.bin"), "wb", **kw) as f:
            f.write(b"x" * 100000)
        assert owner(server["share"] / "shared" / "sp-alice.bin") == server["ids"][ALICE]
        with smbprotocol.open_file(unc("group", "g.txt"), "rb", **kw) as f:
            assert f.read() == b"for the group"
        bob = dict(kw, username=BOB)     # a second session on the same connection
        with pytest.raises(SMBOSError, match="ACCESS_DENIED|0xc0000022"):
            smbprotocol.remove(unc("shared", "sp-alice.bin"), **bob)
        with pytest.raises(SMBOSError, match="ACCESS_DENIED|0xc0000022"):
            smbprotocol.open_file(unc("group", "g.txt"), "rb", **bob)
        smbprotocol.remove(unc("shared", "sp-alice.bin"), **kw)
    finally:
        for connection in cache.values():
            connection.disconnect()


# -- interleaved: never as the other ---------------------------------------------------------
def hammer(user: str, other: str, kw: dict, rounds: int, errors: list, barrier) -> None:
    """A tight loop of one user: each round creates a file (to be owned by user), reads the
    user's own 0600 file, and tries the other's (always refused). Every open shares
    everything: the other's opens must not make a sharing violation of what is at stake."""
    kw = dict(kw, share_access="rwd")
    try:
        barrier.wait()
        for i in range(rounds):
            with smbprotocol.open_file(unc("shared", f"loop-{user}-{i}.txt"), "w", **kw) as f:
                f.write(user)
            with smbprotocol.open_file(unc("shared", f"{user}600.txt"), "r", **kw) as f:
                assert f.read() == f"{user}'s secret"
            try:
                smbprotocol.open_file(unc("shared", f"{other}600.txt"), "r", **kw).close()
                errors.append(f"{user} read {other}'s file in round {i}")
            except SMBOSError as e:
                if "ACCESS_DENIED" not in str(e) and "0xc0000022" not in str(e):
                    errors.append(f"{user}, round {i}: {e}")
    except Exception as e:      # reported by the test, not lost in the thread
        errors.append(f"{user}: {e!r}")


@pytest.mark.parametrize("one_connection", [False, True], ids=["two-connections", "one-connection"])
def test_interleaved_users_never_act_as_each_other(server, one_connection):
    rounds = 60
    shared_cache: dict = {}
    caches = {ALICE: shared_cache, BOB: shared_cache} if one_connection else {ALICE: {}, BOB: {}}
    errors: list = []
    barrier = threading.Barrier(2)
    kws = {user: dict(username=user, password=PASSWORD, port=server["port"], connection_cache=caches[user])
           for user in (ALICE, BOB)}
    threads = [threading.Thread(target=hammer, args=(user, other, kws[user], rounds, errors, barrier))
               for user, other in ((ALICE, BOB), (BOB, ALICE))]
    start = time.monotonic()
    try:
        if one_connection:
            # both sessions set up before the threads start: smbprotocol publishes a connection
            # in the cache once NEGOTIATE has granted it its one credit and fails (rather than
            # waits for credits) a request sent while that credit is spent, so a thread's
            # SESSION_SETUP racing the other's raised "requires 1 credits but only 0"; two
            # threads that both missed the cache also made a connection each (the test then
            # ran on two)
            for user in (ALICE, BOB):
                smbprotocol.register_session("127.0.0.1", **kws[user])
            [one] = shared_cache.values()
            assert len(one.session_table) == 2
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
    finally:
        for cache in {id(c): c for c in caches.values()}.values():
            for connection in cache.values():
                connection.disconnect()
    assert not errors, errors[:5]
    if one_connection:
        assert list(shared_cache.values()) == [one]      # every request went on it
    shared = server["share"] / "shared"
    for user in (ALICE, BOB):
        for i in range(rounds):
            path = shared / f"loop-{user}-{i}.txt"
            assert owner(path) == server["ids"][user], (path, owner(path))
            path.unlink()
    assert time.monotonic() - start < 300
