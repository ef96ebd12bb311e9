"""A recursive change notify (WATCH_TREE) tells a user only names it could learn by listing:
a change below the watched directory is reported to a watch only if the watch's Unix account
may list (read and search) every directory from the watched one down to the changed name's
directory. A server started as root, two Unix accounts made for the module, smbprotocol's
FileSystemWatcher as the client; changes made on disk and through the other user's session.

Each test tries one way to learn a name hidden in another user's directory: a 0700 one, a
0711 one (searchable, not listable: its names can be reached when known, not learnt), a
directory under it that the watcher could list were it told its name, and a directory
swapped for the watcher's own while the server was not reading its kernel events."""
from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("smbprotocol")

from smbprotocol.change_notify import ChangeNotifyFlags, CompletionFilter, FileAction, FileSystemWatcher  # noqa: E402
from smbprotocol.exceptions import SMBResponseException  # noqa: E402
from smbprotocol.open import (  # noqa: E402
    Open,
)

from notify_clients import clients_of  # noqa: E402
from servers import stop, unix_accounts, spawn_for_accounts  # noqa: E402

from smbring.server.change_watcher import ChangeWatcher  # noqa: E402
from smbring.smb import notify  # noqa: E402
from smbring.smb.commands.change_notify import may_list_down  # noqa: E402
from smbring.smb.server_state import ServerState  # noqa: E402
from smbring.vfs.identity import Identity, ShareView, ThreadCredentials  # noqa: E402
from smbring.vfs.posix import PosixVFS  # noqa: E402

if os.geteuid() != 0 or not shutil.which("useradd"):
    pytest.skip("acting as Unix accounts needs root (and useradd)", allow_module_level=True)

PASSWORD = "Notify-pw1"
SUFFIX = f"{os.getpid() % 100000}"
ALICE, BOB = f"srna{SUFFIX}", f"srnb{SUFFIX}"       # ALICE watches, BOB owns the hidden places
NAMES = CompletionFilter.FILE_NOTIFY_CHANGE_FILE_NAME | CompletionFilter.FILE_NOTIFY_CHANGE_DIR_NAME
EVERYTHING = NAMES | CompletionFilter.FILE_NOTIFY_CHANGE_ATTRIBUTES | CompletionFilter.FILE_NOTIFY_CHANGE_SIZE \
    | CompletionFilter.FILE_NOTIFY_CHANGE_LAST_WRITE


@pytest.fixture(scope="module")
def accounts():
    yield from unix_accounts(ALICE, BOB)


@pytest.fixture(scope="module")
def server(accounts, tmp_path_factory):
    """share/ (root's, 1777: both users make their own directories in it) with pub/ (BOB's,
    0755), bobs/ (BOB's, 0700) and bobs711/ (BOB's, 0711) with open/ (BOB's, 0755) in it."""
    tmp = tmp_path_factory.mktemp("notify-visibility")
    top = Path(tempfile.mkdtemp(prefix="smbring-notify-", dir="/tmp"))
    top.chmod(0o755)
    share = top / "share"
    share.mkdir()
    share.chmod(0o1777)
    for rel, mode in (("pub", 0o755), ("bobs", 0o700), ("bobs711", 0o711), ("bobs711/open", 0o755)):
        (share / rel).mkdir()
        (share / rel).chmod(mode)
        os.chown(share / rel, *accounts[BOB])
    proc, port, log = spawn_for_accounts(tmp, share, (ALICE, BOB), PASSWORD)
    yield {"port": port, "share": share, "proc": proc, "log": log, "accounts": accounts}
    stop(proc)
    shutil.rmtree(top, ignore_errors=True)


@pytest.fixture
def clients(server):
    with clients_of(server["port"], PASSWORD) as make:
        yield make


def watch(o: Open, completion_filter=NAMES) -> FileSystemWatcher:
    w = FileSystemWatcher(o)
    w.start(completion_filter, flags=ChangeNotifyFlags.SMB2_WATCH_TREE, output_buffer_length=65536)
    time.sleep(0.3)      # the interim response, and the server's kernel watches, are in place
    return w


def reported(o: Open, until: str, completion_filter=NAMES, timeout: float = 10.0) -> list[tuple[int, str]]:
    """Every change reported on `o` (one request after another) until one names `until`."""
    seen = []
    deadline = time.monotonic() + timeout
    while not any(name == until for _, name in seen):
        w = watch(o, completion_filter)
        assert w.response_event.wait(max(0.1, deadline - time.monotonic())), f"no change notification: {seen}"
        seen += [(a["action"].get_value(), a["file_name"].get_value()) for a in w.result]
    return seen


def as_bob(server, path: Path, data: bytes = b"") -> None:
    """A file made on disk by BOB's own account (locally, not through the server)."""
    path.write_bytes(data)
    os.chown(path, *server["accounts"][BOB])


ADDED = FileAction.FILE_ACTION_ADDED


def test_names_made_on_disk_in_a_0700_directory_are_not_reported(clients, server):
    alice = clients(ALICE)
    root = alice.open_dir()
    w = watch(root)
    as_bob(server, server["share"] / "bobs" / "secret-on-disk.txt")
    (server["share"] / "pub" / "marker-1").write_bytes(b"")
    assert w.response_event.wait(10)
    seen = [(a["action"].get_value(), a["file_name"].get_value()) for a in w.result]
    if not any(name == r"pub\marker-1" for _, name in seen):
        seen += reported(root, r"pub\marker-1")
    assert seen == [(ADDED, r"pub\marker-1")]


def test_names_made_through_the_owners_session_in_a_0700_directory_are_not_reported(clients, server):
    alice, bob = clients(ALICE), clients(BOB)
    root = alice.open_dir()
    w = watch(root, EVERYTHING)
    bob.make_file(r"bobs\secret-by-smb.txt")
    bob.make_file(r"pub\marker-2")
    assert w.response_event.wait(10)
    seen = [(a["action"].get_value(), a["file_name"].get_value()) for a in w.result]
    if not any(name == r"pub\marker-2" for _, name in seen):
        seen += reported(root, r"pub\marker-2", EVERYTHING)
    assert not [name for _, name in seen if "secret" in name], seen
    assert (ADDED, r"pub\marker-2") in seen


def test_the_owner_watching_the_same_tree_still_sees_them(clients, server):
    alice, bob = clients(ALICE), clients(BOB)
    alice_root, bob_root = alice.open_dir(), bob.open_dir()
    alice_watch, bob_watch = watch(alice_root), watch(bob_root)
    as_bob(server, server["share"] / "bobs" / "for-bob.txt")
    (server["share"] / "pub" / "marker-3").write_bytes(b"")
    assert bob_watch.response_event.wait(10)
    seen = [(a["action"].get_value(), a["file_name"].get_value()) for a in bob_watch.result]
    assert seen[0] == (ADDED, r"bobs\for-bob.txt")
    assert alice_watch.response_event.wait(10)
    seen = [(a["action"].get_value(), a["file_name"].get_value()) for a in alice_watch.result]
    if not any(name == r"pub\marker-3" for _, name in seen):
        seen += reported(alice_root, r"pub\marker-3")
    assert seen == [(ADDED, r"pub\marker-3")]


def test_a_searchable_but_unlistable_directory_hides_its_names_and_those_below(clients, server):
    """bobs711 (0711): ALICE may open bobs711\\open by name, and list it, but cannot learn the
    name `open` (nor any other in bobs711) by listing: a watch of the root reports neither
    bobs711\\hidden.txt nor bobs711\\open\\deep.txt (the name `open` with it)."""
    alice = clients(ALICE)
    root = alice.open_dir()
    w = watch(root)
    as_bob(server, server["share"] / "bobs711" / "hidden.txt")
    as_bob(server, server["share"] / "bobs711" / "open" / "deep.txt")
    (server["share"] / "pub" / "marker-4").write_bytes(b"")
    assert w.response_event.wait(10)
    seen = [(a["action"].get_value(), a["file_name"].get_value()) for a in w.result]
    if not any(name == r"pub\marker-4" for _, name in seen):
        seen += reported(root, r"pub\marker-4")
    assert seen == [(ADDED, r"pub\marker-4")]


def test_a_watch_of_the_listable_directory_itself_reports_its_names(clients, server):
    """What ALICE may list it is told about: a watch opened on bobs711\\open (reached by a
    name she knows) reports what is made in it; bobs711 itself she may not open to list."""
    alice = clients(ALICE)
    with pytest.raises(SMBResponseException):
        alice.open_dir("bobs711")
    inner = alice.open_dir(r"bobs711\open")
    w = watch(inner)
    as_bob(server, server["share"] / "bobs711" / "open" / "listable.txt")
    assert w.response_event.wait(10)
    assert [(a["action"].get_value(), a["file_name"].get_value()) for a in w.result] == [(ADDED, "listable.txt")]


def test_a_hidden_directory_swapped_for_the_watchers_own_stays_hidden(clients, server):
    """A user who may rename in the directory above BOB's (one writable without the sticky
    bit; here the test, as root, makes the moves) swaps BOB's 0700 directory for a listable
    one of ALICE's while the server is not reading its kernel events (stopped for a moment):
    a name made in BOB's directory just before is judged by the directory it was made in,
    not by whatever bears that directory's name when the server reads the event."""
    share = server["share"]
    bobs = share / "bobs-swap"
    bobs.mkdir()
    bobs.chmod(0o700)
    os.chown(bobs, *server["accounts"][BOB])
    alice = clients(ALICE)
    root = alice.open_dir()
    w = watch(root)
    os.kill(server["proc"].pid, signal.SIGSTOP)
    try:
        as_bob(server, bobs / "swapped-secret.txt")
        os.rename(bobs, share / "bobs-away")
        bobs.mkdir()
        os.chown(bobs, *server["accounts"][ALICE])
        bobs.chmod(0o755)
    finally:
        os.kill(server["proc"].pid, signal.SIGCONT)
    (share / "pub" / "marker-5").write_bytes(b"")
    assert w.response_event.wait(10)
    seen = [(a["action"].get_value(), a["file_name"].get_value()) for a in w.result]
    if not any(name == r"pub\marker-5" for _, name in seen):
        seen += reported(root, r"pub\marker-5")
    assert not [name for _, name in seen if "secret" in name], seen
    assert (ADDED, r"pub\marker-5") in seen


def test_a_name_moved_out_of_a_hidden_directory_is_reported_only_where_it_arrives(clients, server):
    """A rename from BOB's 0700 directory into pub/: a removal there (hidden) and an addition
    here (listable): ALICE is told of the addition only."""
    as_bob(server, server["share"] / "bobs" / "moving.txt")
    alice = clients(ALICE)
    root = alice.open_dir()
    w = watch(root)
    os.rename(server["share"] / "bobs" / "moving.txt", server["share"] / "pub" / "moved.txt")
    assert w.response_event.wait(10)
    seen = [(a["action"].get_value(), a["file_name"].get_value()) for a in w.result]
    if not any(name == r"pub\moved.txt" for _, name in seen):
        seen += reported(root, r"pub\moved.txt")
    assert seen == [(ADDED, r"pub\moved.txt")]


def test_a_hidden_directory_too_many_to_watch_asks_only_its_owner_to_enumerate(server, tmp_path):
    """The kernel watches are bounded: a directory below the bound is not watched and the
    watches covering it are told to enumerate (STATUS_NOTIFY_ENUM_DIR). That answer too says
    something happened there: it goes only to watches whose account may list the directory.
    A ChangeWatcher bounded to 2 kernel watches over share/ (1777) and BOB's 0700 bobs/ with
    three subdirectories; ALICE's and BOB's watches judged by share views acting as them (in
    a thread of their own: the views switch that thread's credentials)."""
    share = tmp_path / "bounded"
    share.mkdir()
    share.chmod(0o1777)
    (share / "bobs").mkdir()
    for name in ("bobs", "bobs/d0", "bobs/d1", "bobs/d2"):
        (share / name).mkdir(exist_ok=True)
        os.chown(share / name, *server["accounts"][BOB])
    (share / "bobs").chmod(0o700)
    outcome = {}

    def run():
        creds = ThreadCredentials()
        base = PosixVFS(str(share))
        st = os.stat(share)
        loop = asyncio.new_event_loop()
        state = ServerState()
        watcher = ChangeWatcher(state, loop, limit=2, as_server=creds.as_server)
        watches = {}
        try:
            for user in (ALICE, BOB):
                uid, gid = server["accounts"][user]
                view = ShareView(base, Identity(user, uid, gid, (gid,)), creds)
                o = SimpleNamespace(tree=SimpleNamespace(fs=view), parts=[], key=(st.st_dev, st.st_ino))
                watches[user] = notify.Watch(str(share), notify.FILE_NAME, True, key=o.key,
                                             lists=may_list_down(o))
                state.watches.add(watches[user])
            loop.run_until_complete(asyncio.sleep(0.2))
            outcome.update(watched=watcher.watched(),
                           overflowed={u: w.overflowed for u, w in watches.items()})
        finally:
            creds.to_server()
            watcher.close()
            loop.close()
            os.close(base.root_fd)

    t = threading.Thread(target=run)
    t.start()
    t.join(30)
    assert outcome["watched"] == 2
    assert outcome["overflowed"] == {ALICE: False, BOB: True}
