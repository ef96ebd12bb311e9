"""A share's files as one Unix identity (vfs.identity): every call of the FileSystem protocol
made as the view's identity, credential switches cached, the server's own work as the server,
the modes of new files; direct_writes never writes through a descriptor opened only for
reading; the server's account resolution (username map, guest account, force user/group).

What switches a thread's credentials runs in a thread of its own that ends with the test."""
import asyncio
import inspect
import os
import pwd

import pytest
from threads import in_thread

from smbring.server.accounts import Accounts, account, map_username, parse_username_map
from smbring.smb.fs import FileSystem
from smbring.smb.state import Share
from smbring.vfs import identity, modules
from smbring.vfs.identity import CALLS, Identity, ShareView, ThreadCredentials
from smbring.vfs.posix import PosixVFS

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="acting as other ids needs root")
ALICE = Identity("alice", 61301, 61301, (61301, 61399))
BOB = Identity("bob", 61302, 61302, (61302,))


def test_the_view_covers_every_call_of_the_protocol():
    protocol = {name for name, _ in inspect.getmembers(FileSystem, inspect.isfunction)
                if not name.startswith("_")} - {"close"}
    assert set(CALLS) == protocol
    for name in CALLS:
        assert callable(getattr(ShareView, name))


@pytest.fixture
def share(tmp_path):
    """A share root (0755, root's) with root's 0600 file, a 1777 directory with a 0600 file of
    ALICE's, and a 0777 directory."""
    root = tmp_path / "share"
    root.mkdir()
    root.chmod(0o755)
    (root / "secret").write_text("root's")
    (root / "secret").chmod(0o600)
    (root / "sticky").mkdir()
    (root / "sticky").chmod(0o1777)
    (root / "sticky" / "alices").write_text("alice's")
    if os.geteuid() == 0:
        os.chown(root / "sticky" / "alices", ALICE.uid, ALICE.gid)
    (root / "open").mkdir()
    (root / "open").chmod(0o777)
    base = PosixVFS(str(root))     # the root opened once, as the server
    yield root, base
    base.close()


@ROOT_ONLY
def test_each_call_runs_as_the_views_identity(share):
    root, base = share

    def run():
        creds = ThreadCredentials()
        alice, bob = ShareView(base, ALICE, creds), ShareView(base, BOB, creds)
        with pytest.raises(PermissionError):
            alice.open(["secret"], os.O_RDONLY)
        fd = alice.open(["open", "a"], os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
        alice.close_file(fd)
        alice.mkdir(["open", "ad"])
        assert os.geteuid() == ALICE.uid          # cached: it stays as alice between calls
        assert alice.may_delete(["sticky", "alices"]) and not bob.may_delete(["sticky", "alices"])
        with pytest.raises(PermissionError):
            bob.remove(["sticky", "alices"], False)
        with pytest.raises(PermissionError):
            bob.fchmod(alice.open(["open", "a"], os.O_RDONLY), 0o666)   # not bob's file
        assert not bob.may_delete(["secret"]) and not bob.may_delete([])
        with creds.as_server():
            assert os.geteuid() == 0 and os.getegid() == 0
            assert open(root / "secret").read() == "root's"
        view_of_server = ShareView(base, None, creds)     # no identity: no switch at all
        view_of_server.stat(["secret"])
        return creds.switches
    switches = in_thread(run)
    assert switches == 5      # alice, bob, alice (the open), bob, the server
    for name in ("a", "ad"):
        st = (root / "open" / name).stat()
        assert (st.st_uid, st.st_gid) == (ALICE.uid, ALICE.gid)
    assert (root / "sticky" / "alices").exists()


@ROOT_ONLY
def test_every_bound_call_runs_as_its_views_identity_whatever_ran_before(share):
    """A view binds its calls once; each still runs as the view's identity after another
    view's call, the server's own work, or a call of an equal identity (the same account
    from another session: no switch needed, none made), and an identity that differs in its
    groups alone is switched to. The kernel is the judge: it answers by the effective ids."""
    root, base = share
    (root / "open" / "alices").write_text("alice's")
    (root / "open" / "alices").chmod(0o600)
    (root / "open" / "staff").write_text("group 61399's")
    (root / "open" / "staff").chmod(0o040)
    os.chown(root / "open" / "alices", ALICE.uid, ALICE.gid)
    os.chown(root / "open" / "staff", 0, 61399)
    alice_again = Identity("alice-again", ALICE.uid, ALICE.gid, ALICE.groups)  # equal, not the same
    alice_fewer = Identity("alice-fewer", ALICE.uid, ALICE.gid, (ALICE.gid,))  # no group 61399

    def run():
        creds = ThreadCredentials()
        views = {who.name: ShareView(base, who, creds) for who in (ALICE, BOB, alice_again, alice_fewer)}
        alice, bob, again, fewer = views["alice"], views["bob"], views["alice-again"], views["alice-fewer"]
        seen = []
        for step in range(2):
            assert not bob.may_open(["open", "alices"], 4) and alice.may_open(["open", "alices"], 4)
            seen.append(os.geteuid())
            with creds.as_server():
                pass                                   # the server's work between two calls
            assert alice.stat(["open", "alices"]).st_uid == ALICE.uid
            seen.append(os.geteuid())
            with pytest.raises(PermissionError):
                bob.fchmod(alice.open(["open", "alices"], os.O_RDONLY), 0o666)   # not bob's file
            assert bob.may_delete(["open", "alices"]) and not bob.may_delete(["sticky", "alices"])
            assert alice.may_delete(["sticky", "alices"])
            switches = creds.switches
            assert again.may_delete(["sticky", "alices"]) and again.may_open(["open", "alices"], 4)
            assert creds.switches == switches            # equal ids: the thread acts so already
            assert again.may_open(["open", "staff"], 4) and not fewer.may_open(["open", "staff"], 4)
            seen.append(os.getgroups())
            assert alice.may_open(["open", "staff"], 4)
            with pytest.raises(PermissionError):
                bob.remove(["sticky", "alices"], False)     # someone else's, in a sticky directory
        return seen
    seen = in_thread(run)
    assert seen == [ALICE.uid, ALICE.uid, [ALICE.gid]] * 2



def test_views_of_equal_identities_share_one_instance(share):
    """Each session of an account has its own Identity; the views of all of them act as one
    instance of it (ThreadCredentials.one_of), so that a call through one after a call
    through another finds the thread acting as it at one look; unequal ones stay apart, and
    the table of instances is bounded (past its bound it starts again, nothing else changes)."""
    _root, base = share
    creds = ThreadCredentials()
    copies = [Identity(f"alice-{i}", ALICE.uid, ALICE.gid, ALICE.groups) for i in range(3)]
    views = [ShareView(base, who, creds) for who in copies]
    assert all(v.identity is views[0].identity for v in views)
    assert ShareView(base, BOB, creds).identity is BOB
    assert ShareView(base, Identity("alice-fewer", ALICE.uid, ALICE.gid, (ALICE.gid,)), creds).identity \
        is not views[0].identity
    many = [Identity("u", 70000 + i, 70000, ()) for i in range(identity.MAX_IDENTITIES + 10)]
    for who in many:
        assert creds.one_of(who) is who or creds.one_of(who) == who
    assert len(creds._one_of_each) <= identity.MAX_IDENTITIES

@ROOT_ONLY
def test_credentials_belong_to_their_thread(share):
    _root, base = share
    creds = ThreadCredentials()          # this (the test's) thread's
    view = ShareView(base, ALICE, creds)
    with pytest.raises(RuntimeError):
        in_thread(lambda: view.stat(["open"]))
    assert os.geteuid() == 0


@ROOT_ONLY
def test_a_failed_switch_leaves_the_thread_as_the_server(share):
    def run():
        creds = ThreadCredentials()
        with pytest.raises(ValueError):
            creds.become(Identity("bad", 61301, 61301, (-3,)))
        assert creds.current == creds.server and os.geteuid() == 0
    in_thread(run)


@ROOT_ONLY
def test_the_servers_tasks_resume_as_the_server_and_a_moment_returns_to_the_user(share):
    """A task of the server's own (server_steps) runs each step as the server, whatever a
    session's task made the thread act as in between; a server_moment inside a user's call
    acts as the server and returns to the user."""
    _root, base = share

    def run():
        creds = ThreadCredentials()
        alice = ShareView(base, ALICE, creds)
        seen = []

        async def servers_work():
            for _ in range(3):
                seen.append(os.geteuid())
                await asyncio.sleep(0)
            return "done"

        async def users_work():
            for _ in range(3):
                alice.stat(["open"])             # the thread acts as alice afterwards
                await asyncio.sleep(0)

        async def main():
            server_task = asyncio.ensure_future(creds.server_steps(servers_work()))
            await asyncio.gather(users_work(), server_task)
            return server_task.result()
        assert asyncio.run(main()) == "done"
        assert seen == [0, 0, 0]
        alice.stat(["open"])
        with creds.server_moment():
            assert os.geteuid() == 0
        assert os.geteuid() == ALICE.uid and creds.current == ALICE
        in_thread(lambda: creds.as_server().__enter__())        # another thread: nothing to do
        with creds.as_server():
            assert os.geteuid() == 0
    in_thread(run)


def test_direct_writes_never_open_a_twin_for_a_read_only_descriptor(tmp_path):
    """The O_DIRECT twin is opened as the server: through a descriptor its opener could only
    read, that would let them write. Such a descriptor gets no twin, and the write fails as a
    write through it fails."""
    path = tmp_path / "f"
    path.write_bytes(b"\0" * (2 << 20))
    used = []

    class Recording:
        def __enter__(self):
            used.append(True)

        def __exit__(self, *exc):
            return False

    async def main():
        io = modules.DirectWrites(modules.Posix(), as_server=Recording)
        ro = os.open(path, os.O_RDONLY)
        rw = os.open(path, os.O_RDWR)
        try:
            for fd in (ro, rw):
                io._costs(fd).cost.update(buffered=1.0, direct=1e-12)   # direct the cheaper
            import mmap
            data = mmap.mmap(-1, 1 << 20)
            data[:] = b"x" * (1 << 20)
            with pytest.raises(OSError):
                await io.pwrite_all(ro, memoryview(data), 0)
            assert io._direct[ro] == -1 and not used
            assert await io.pwrite_all(rw, memoryview(data), 1 << 20) == 1 << 20
            assert io._direct[rw] >= 0 and used == [True]
        finally:
            io.closed(ro)
            io.closed(rw)
            os.close(ro)
            os.close(rw)
    asyncio.run(main())
    assert path.read_bytes()[:1 << 20] == b"\0" * (1 << 20)


# -- the server's account resolution ---------------------------------------------------------
def test_username_map_as_samba_reads_it():
    lines = parse_username_map(
        '# comment = x\n; other = y\nroot = administrator admin\n!sys = mary fred\n'
        'jane = "Jane Smith" DOM\\jane\nnobody-here =\nno equals sign\n')
    assert [(l.unix, l.names, l.stop) for l in lines] == [
        ("root", ("administrator", "admin"), False), ("sys", ("mary", "fred"), True),
        ("jane", ("Jane Smith", "DOM\\jane"), False)]
    assert map_username(lines, "Admin") == "root"               # without regard to case
    assert map_username(lines, "jane smith") == "jane"
    assert map_username(lines, "DOM\\jane") == "jane"
    assert map_username(lines, "zed") == "zed"                  # unmapped: itself
    wild = parse_username_map("!sys = mary\nguest = *\n")
    assert map_username(wild, "mary") == "sys"                  # "!" ends the search
    assert map_username(wild, "anyone") == "guest"
    later = parse_username_map("a = x\nb = a\n")
    assert map_username(later, "x") == "b"                      # each line sees the name so far
    groups = parse_username_map("staff = @wheel +ops\n")
    assert map_username(groups, "u", in_group=lambda user, g: g == "ops") == "staff"
    assert map_username(groups, "u", in_group=lambda user, g: False) == "u"


def test_accounts_resolve_users_guests_and_forced_ones(tmp_path):
    me = pwd.getpwuid(os.getuid()).pw_name
    usermap = tmp_path / "map"
    usermap.write_text(f"{me} = smbme\n")
    accounts = Accounts(str(usermap), guest_account=me)
    # (a logon names the account its password was proved for, the username map applied
    # already: ntlm.Identity.account; the map itself is test_username_map's)
    found = accounts.logon(me, "user")
    assert found == account(me) and found.uid == os.getuid()
    assert os.getgid() in found.groups or found.gid in found.groups
    assert accounts.logon("no-such-account-smbring", "user") is None
    assert accounts.logon("", "anonymous") == account(me) == accounts.logon("", "guest")
    assert accounts.logon("bad\0name", "user") is None
    share = Share("s", str(tmp_path), force_user=me, force_group="+no-such-group-smbring")
    assert accounts.for_share(share, ALICE) is None               # a group that is not there
    share.force_group = None
    assert accounts.for_share(share, ALICE) == account(me)
    share.force_user = None
    assert accounts.for_share(share, ALICE) == ALICE
    assert accounts.for_share(share, None) is None
    problems = Accounts(str(tmp_path / "missing"), "no-such-account-smbring").check(
        {"s": Share("s", "/", force_user="no-such-account-smbring")}, guests=True)
    assert len(problems) == 3


def test_force_group_for_members_only(tmp_path):
    import grp
    group = grp.getgrgid(os.getgid())
    share = Share("s", str(tmp_path), force_group="+" + group.gr_name)
    accounts = Accounts()
    member = Identity("m", 61305, 61305, (61305, group.gr_gid))
    stranger = Identity("s", 61306, 61306, (61306,))
    assert accounts.for_share(share, member).gid == group.gr_gid
    assert accounts.for_share(share, stranger) == stranger
    share.force_group = group.gr_name
    forced = accounts.for_share(share, stranger)
    assert forced.gid == group.gr_gid and group.gr_gid in forced.groups
