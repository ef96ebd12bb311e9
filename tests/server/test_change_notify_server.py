"""Change notify against a real server: smbprotocol's FileSystemWatcher on one connection, the
changes made by another connection or directly on disk (inotify, in the server), and the
bounds: kernel watches, buffered changes, links out of the share, veto'd names."""
import asyncio
import contextlib
import os
import struct
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("smbprotocol")

from smbprotocol.change_notify import ChangeNotifyFlags, CompletionFilter, FileAction, FileSystemWatcher  # noqa: E402
from smbprotocol.exceptions import SMBResponseException  # noqa: E402
from smbprotocol.open import (  # noqa: E402
    CreateDisposition,
    CreateOptions,
    DirectoryAccessMask,
    FileAttributes,
    ImpersonationLevel,
    Open,
    ShareAccess,
)

from notify_clients import Client  # noqa: E402
from servers import stop  # noqa: E402
from smbconf_server import smbconf  # noqa: E402,F401  (the fixture)

import smbcore  # noqa: E402
from smbring.server.change_watcher import MAX_KERNEL_WATCHES, TICK, ChangeWatcher  # noqa: E402
from smbring.smb import notify  # noqa: E402
from smbring.smb import wire  # noqa: E402
from smbring.smb.server_state import ServerState  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent.parent / "smb"))
import sansio_client  # noqa: E402

NAMES = CompletionFilter.FILE_NOTIFY_CHANGE_FILE_NAME | CompletionFilter.FILE_NOTIFY_CHANGE_DIR_NAME
QUIET = 1.5     # seconds: longer than the server keeps its own changes apart from the kernel's


@pytest.fixture
def clients(server):
    made = []

    def make(share="share"):
        made.append(Client(server["port"], share))
        return made[-1]
    yield make
    for c in made:
        c.close()


def actions(watcher, timeout=10.0) -> list[tuple[int, str]]:
    assert watcher.response_event.wait(timeout), "no change notification came"
    return [(a["action"].get_value(), a["file_name"].get_value()) for a in watcher.result]


def watch(o: Open, completion_filter=NAMES, tree=False, out_len=65536) -> FileSystemWatcher:
    w = FileSystemWatcher(o)
    w.start(completion_filter, flags=ChangeNotifyFlags.SMB2_WATCH_TREE if tree else 0,
            output_buffer_length=out_len)
    time.sleep(0.2)      # the interim response, and the server's kernel watch, are in place
    return w


def test_a_file_made_on_disk_is_reported(clients, server):
    c = clients()
    root = c.open_dir()
    w = watch(root)
    (server["share"] / "from-disk.txt").write_bytes(b"x")
    assert actions(w) == [(FileAction.FILE_ACTION_ADDED, "from-disk.txt")]


def test_a_tree_on_disk_is_followed_as_directories_appear(clients, server):
    c = clients()
    root = c.open_dir()
    w = watch(root, tree=True)
    (server["share"] / "new-dir").mkdir()
    assert actions(w) == [(FileAction.FILE_ACTION_ADDED, "new-dir")]
    w = watch(root, tree=True)
    (server["share"] / "new-dir" / "deep.txt").write_bytes(b"x")
    assert actions(w) == [(FileAction.FILE_ACTION_ADDED, r"new-dir\deep.txt")]


def test_a_rename_on_disk_is_an_old_and_new_name_pair(clients, server):
    (server["share"] / "before").write_bytes(b"")
    c = clients()
    w = watch(c.open_dir())
    os.rename(server["share"] / "before", server["share"] / "after")
    assert actions(w) == [(FileAction.FILE_ACTION_RENAMED_OLD_NAME, "before"),
                          (FileAction.FILE_ACTION_RENAMED_NEW_NAME, "after")]


def test_a_watched_directory_renamed_through_the_server_is_followed(clients, server):
    """A watch on a directory renamed through the server follows it, as a handle's watch
    does on Windows (Samba's stays on the old name): what is made in it afterwards, on disk
    and through another connection, is reported, and nothing made in another directory
    that takes the old name. Fails on a server whose watch stays on the old name (it
    reports a file made in the new directory of that name)."""
    import test_lease_rename_hold as renames
    (server["share"] / "d").mkdir()
    a, b = clients(), clients()
    watched = a.open_dir("d")
    w = watch(watched)
    mover = Open(b.tree, "d")
    mover.create(ImpersonationLevel.Impersonation, DirectoryAccessMask.DELETE | DirectoryAccessMask.FILE_READ_ATTRIBUTES,
                 FileAttributes.FILE_ATTRIBUTE_DIRECTORY, ShareAccess.FILE_SHARE_READ | ShareAccess.FILE_SHARE_WRITE
                 | ShareAccess.FILE_SHARE_DELETE, CreateDisposition.FILE_OPEN, CreateOptions.FILE_DIRECTORY_FILE)
    request = renames.set_info(b, mover, renames.FileInformationClass.FILE_RENAME_INFORMATION,
                               renames.rename_info("e"))
    assert renames.answer(b, request) == 0
    mover.close()
    time.sleep(0.2)         # (the kernel's watch follows on the server's next turn)
    (server["share"] / "e" / "on-disk.txt").write_bytes(b"x")
    assert actions(w) == [(FileAction.FILE_ACTION_ADDED, "on-disk.txt")]
    w = watch(watched)
    (server["share"] / "d").mkdir()         # another directory of the old name
    b.make_file("d\\elsewhere.txt")
    b.make_file("e\\through-b.txt")
    assert actions(w) == [(FileAction.FILE_ACTION_ADDED, "through-b.txt")]


def test_another_connection_is_reported_once_not_again_by_the_kernel(clients, server):
    a, b = clients(), clients()
    everything = NAMES | CompletionFilter.FILE_NOTIFY_CHANGE_ATTRIBUTES | CompletionFilter.FILE_NOTIFY_CHANGE_SIZE \
        | CompletionFilter.FILE_NOTIFY_CHANGE_LAST_WRITE
    root = a.open_dir()
    w = watch(root, everything)
    b.make_file("from-b.txt")
    assert actions(w) == [(FileAction.FILE_ACTION_ADDED, "from-b.txt")]
    w = watch(root, everything)           # what came after, buffered: the write, once
    assert actions(w) == [(FileAction.FILE_ACTION_MODIFIED, "from-b.txt")]
    time.sleep(QUIET)
    w = watch(root, everything)           # what b did is not reported again (inotify saw it too)
    (server["share"] / "marker").write_bytes(b"")
    assert actions(w) == [(FileAction.FILE_ACTION_ADDED, "marker")]


def test_a_compound_create_and_change_notify(clients, server):
    c = clients()
    o = Open(c.tree, "")
    create, create_unpack = o.create(
        ImpersonationLevel.Impersonation, DirectoryAccessMask.FILE_LIST_DIRECTORY,
        FileAttributes.FILE_ATTRIBUTE_DIRECTORY, ShareAccess.FILE_SHARE_READ | ShareAccess.FILE_SHARE_WRITE,
        CreateDisposition.FILE_OPEN, CreateOptions.FILE_DIRECTORY_FILE, send=False)
    w = FileSystemWatcher(o)
    o.file_id = b"\xff" * 16
    notify_request, start = w.start(NAMES, send=False)
    requests = c.conn.send_compound([create, notify_request], c.session.session_id,
                                    c.tree.tree_connect_id, related=True)
    create_unpack(requests[0])
    start(requests[1])
    time.sleep(0.2)
    (server["share"] / "after-compound").write_bytes(b"")
    assert actions(w) == [(FileAction.FILE_ACTION_ADDED, "after-compound")]


def test_a_link_out_of_the_share_is_not_followed(clients, server, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (server["share"] / "sub").mkdir()
    (server["share"] / "sub" / "link").symlink_to(outside)
    c = clients()
    with pytest.raises(SMBResponseException):
        c.open_dir(r"sub\link")                    # the link is no way out of the share
    w = watch(c.open_dir(), tree=True)
    (outside / "secret.txt").write_bytes(b"x")     # outside: never reported
    time.sleep(0.3)
    (server["share"] / "sub" / "inside.txt").write_bytes(b"x")
    assert actions(w) == [(FileAction.FILE_ACTION_ADDED, r"sub\inside.txt")]


def test_veto_files_are_never_reported(smbconf):
    srv = smbconf("", {"share": "read only = no\nveto files = /*.secret/"})
    c = Client(srv.port)
    try:
        w = watch(c.open_dir())
        (srv.root / "share" / "hidden.secret").write_bytes(b"x")
        time.sleep(0.3)
        (srv.root / "share" / "shown.txt").write_bytes(b"x")
        assert actions(w) == [(FileAction.FILE_ACTION_ADDED, "shown.txt")]
    finally:
        c.close()


def test_kernel_change_notify_no_reports_the_servers_own_changes_only(smbconf):
    srv = smbconf("kernel change notify = no")
    c, other = Client(srv.port), Client(srv.port)
    try:
        w = watch(c.open_dir())
        (srv.root / "share" / "from-disk.txt").write_bytes(b"x")     # not seen: no inotify
        time.sleep(QUIET)
        other.make_file("from-a-client.txt")
        assert actions(w) == [(FileAction.FILE_ACTION_ADDED, "from-a-client.txt")]
    finally:
        other.close()
        c.close()


def test_a_reload_turns_kernel_change_notify_off_and_on(tmp_path):
    from test_smbconf_reload_params import Served
    served = Served(tmp_path, "kernel change notify = yes", as_accounts=False)
    try:
        for on in (False, True):
            served.write(f"kernel change notify = {'yes' if on else 'no'}")
            assert "configuration reloaded" in served.reload()
            c, other = Client(served.port), Client(served.port)
            try:
                w = watch(c.open_dir())
                (served.share / f"from-disk-{on}.txt").write_bytes(b"x")
                time.sleep(QUIET)
                other.make_file(f"from-a-client-{on}.txt")
                assert actions(w) == ([(FileAction.FILE_ACTION_ADDED, f"from-disk-{on}.txt")] if on else
                                      [(FileAction.FILE_ACTION_ADDED, f"from-a-client-{on}.txt")])
            finally:
                other.close()
                c.close()
    finally:
        stop(served.proc)


def test_change_notify_no_answers_not_implemented(smbconf):
    """As smbd answers with `change notify = no` (smbtorture smb2.change_notify_disabled)."""
    srv = smbconf("change notify = no")
    c = Client(srv.port)
    try:
        w = FileSystemWatcher(c.open_dir())
        w.start(NAMES)
        assert w.response_event.wait(10), "no answer came"
        with pytest.raises(SMBResponseException) as refused:
            w.result
        assert refused.value.status == 0xC0000002
    finally:
        c.close()


# -- the bounds, with the server's watcher in this process (the real kernel, a real loop) -----

@contextlib.contextmanager
def watching(limit: int = MAX_KERNEL_WATCHES):
    """(ServerState, its ChangeWatcher with at most `limit` kernel watches, their loop)."""
    loop = asyncio.new_event_loop()
    state = ServerState()
    w = ChangeWatcher(state, loop, limit=limit)
    try:
        yield state, w, loop
    finally:
        w.close()
        loop.close()


@pytest.fixture
def watcher(tmp_path):
    """A ChangeWatcher with at most 5 kernel watches over a fresh ServerState."""
    with watching(5) as (state, w, loop):
        yield state, w, loop, tmp_path


def run_briefly(loop, seconds=0.2):
    loop.run_until_complete(asyncio.sleep(seconds))


def test_a_tree_larger_than_the_watch_bound_asks_for_an_enumeration(watcher):
    state, w, loop, tmp_path = watcher
    for i in range(10):
        (tmp_path / f"d{i}").mkdir()
    watch_ = notify.Watch(str(tmp_path), notify.FILE_NAME, True, max_output=4096)
    state.watches.add(watch_)
    run_briefly(loop)
    assert w.watched() == 5                        # the bound, not one more
    assert watch_.overflowed                        # so the client will re-read the directory
    state.watches.remove(watch_)
    run_briefly(loop, TICK + 0.5)
    assert w.watched() == 0                        # none left, a tick after no watch needs them


def test_a_client_that_never_reads_its_changes_holds_a_bounded_buffer(watcher):
    state, w, loop, tmp_path = watcher
    watch_ = notify.Watch(str(tmp_path), notify.FILE_NAME, False, max_output=notify.MAX_OUTPUT, owner="c")
    state.watches.add(watch_)
    run_briefly(loop)
    for i in range(5000):
        (tmp_path / f"file-with-a-longish-name-{i:05}").write_bytes(b"")
    run_briefly(loop, 0.5)
    assert watch_.size <= notify.WATCH_BYTES
    assert watch_.overflowed and watch_.changes == []     # dropped: an enumeration is asked for


def test_a_tree_watch_inside_a_watched_tree_follows_directories_made_later(tmp_path):
    """A recursive watch made inside a tree watched recursively already is not walked again
    (its directories are watched), and the tree's directories stay followed when the outer
    watch goes: a directory made later, before and after the kernel watches no watch needs
    any more are dropped (a tick), is watched, and changes in it are reported."""
    loop = asyncio.new_event_loop()
    state = ServerState()
    w = ChangeWatcher(state, loop)
    try:
        (tmp_path / "a" / "b").mkdir(parents=True)
        (tmp_path / "elsewhere").mkdir()
        outer = notify.Watch(str(tmp_path), notify.FILE_NAME | notify.DIR_NAME, True, max_output=65536)
        state.watches.add(outer)
        run_briefly(loop)
        watched = w.watched()
        assert watched == 4                         # the root, a, a/b, elsewhere
        inner = notify.Watch(str(tmp_path / "a"), notify.FILE_NAME, True, max_output=65536)
        state.watches.add(inner)
        run_briefly(loop)
        assert w.watched() == watched
        state.watches.remove(outer)
        run_briefly(loop)
        (tmp_path / "a" / "b" / "early").mkdir()        # before the tick drops what is not needed
        run_briefly(loop)
        (tmp_path / "a" / "b" / "early" / "one.txt").write_text("x")
        run_briefly(loop, TICK + 0.5)
        assert w.watched() == 3                     # a, a/b, a/b/early: the root and elsewhere dropped
        (tmp_path / "a" / "b" / "late").mkdir()
        run_briefly(loop)
        (tmp_path / "a" / "b" / "late" / "two.txt").write_text("x")
        run_briefly(loop)
        reported = [name for _action, name in inner.changes]
        assert "b\\early\\one.txt" in reported and "b\\late\\two.txt" in reported, reported
        state.watches.remove(inner)
        run_briefly(loop, TICK + 0.5)
        assert w.watched() == 0
    finally:
        w.close()
        loop.close()


def test_a_change_made_before_a_watch_is_not_reported_to_it(watcher):
    """A change whose kernel event is still queued when a watch is made (the kernel watch of
    one that went lingers until the next tick; another worker's, or the server's own change
    made while nothing watched, is not known as the server's) is not the new watch's to
    report: the client asked after it was made. (Samba's smb2.session encryption tests ask
    a recursive watch of the share's root right after making a file, and take a report for
    a failure.)"""
    state, w, loop, tmp_path = watcher
    first = notify.Watch(str(tmp_path), notify.FILE_NAME, True, max_output=4096)
    state.watches.add(first)
    run_briefly(loop)
    state.watches.remove(first)
    run_briefly(loop)
    assert w.watched() == 1                         # kept until the next tick
    (tmp_path / "before").write_text("x")           # queued, not read: the loop did not turn
    second = notify.Watch(str(tmp_path), notify.FILE_NAME, True, max_output=4096)
    state.watches.add(second)
    run_briefly(loop)
    assert second.changes == []
    (tmp_path / "after").write_text("x")
    run_briefly(loop)
    assert [name for _action, name in second.changes] == ["after"]
    state.watches.remove(second)


def test_a_change_made_before_a_directory_lease_does_not_break_it(watcher):
    """As for a watch, so for a directory lease: a change whose kernel event is still queued
    when a CREATE is granted the lease (the kernel watch of a lease just closed lingers until
    the next tick) was made before the client's listing under the lease, and must not break
    it; a change made after does. Through the sans-I/O connection's CREATE, on real files."""
    state, w, loop, tmp_path = watcher
    (tmp_path / "d").mkdir()
    client = sansio_client.Client(tmp_path, state)
    client.conn.client_caps = wire.CAP_LEASING | wire.CAP_DIRECTORY_LEASING

    def lease_directory(key: bytes) -> bytes:
        context = (b"RqLs", struct.pack("<16sIIQ16sHH", key, 0x1 | 0x2, 0, 0, bytes(16), 0, 0))
        status, body = client.request(wire.CREATE, smbcore.create_body(
            "d", 0x1 | 0x2 | 0x4, wire.FILE_OPEN, sansio_client.FILE_DIRECTORY_FILE,
            oplock=0xFF, contexts=[context]))
        assert status == 0 and body[2] == 0xFF, hex(status)        # a lease
        return body[64:80]

    def breaks() -> list[bytes]:
        return [body[8:24] for status, body in client.outbox() if len(body) == 44]

    first = lease_directory(b"1" * 16)
    run_briefly(loop)
    assert w.watched() == 1
    assert client.close(first) == 0
    run_briefly(loop)
    assert w.watched() == 1                         # kept until the next tick
    (tmp_path / "d" / "before").write_text("x")     # queued, not read: the loop did not turn
    second = lease_directory(b"2" * 16)
    run_briefly(loop)
    assert breaks() == []
    (tmp_path / "d" / "after").write_text("x")
    run_briefly(loop)
    assert breaks() == [b"2" * 16]
    client.close(second)


# -- directory leases watched, with the server's watcher in this process ------------------------

class DirectoryOpen:
    """What the oplock table reads of an open of a directory (it keys opens by identity)."""

    def __init__(self, path):
        st = os.stat(path)
        self.key, self.is_dir, self._path = (st.st_dev, st.st_ino), True, str(path)
        self.lease_watched = None

    def path(self) -> str:
        return self._path


def leased(state: ServerState, path) -> tuple[DirectoryOpen, list]:
    """A directory lease (RH) on `path` in the server's tables (its key the path's): its
    open, and the breaks sent for it."""
    sent = []
    o = DirectoryOpen(path)
    state.oplocks.add(o, 0x1)
    state.oplocks.grant_lease(o, b"g" * 16, str(path).encode()[-16:].rjust(16), 0x1 | 0x2, version=2,
                              send_lease_break=lambda _o, _lease, old, new, ack: sent.append((old, new)))
    state.watch_leased_directory(o)     # (as a CREATE granting a directory lease asks)
    return o, sent


def test_a_leased_directory_that_cannot_be_watched_has_its_lease_broken_at_once(tmp_path):
    """A directory lease that cannot learn of another program's changes (its directory not
    watched) is broken as soon as the watch is found wanting: past half the bound of kernel
    watches (here 4: leases take 2 at most, CHANGE_NOTIFY watches keep the rest), or a
    directory gone meanwhile."""
    with watching(4) as (state, w, loop):
        for name in "abcd":
            (tmp_path / name).mkdir()
        sent = [leased(state, tmp_path / name)[1] for name in "abc"]
        run_briefly(loop)
        assert sent == [[], [], [(0x3, 0)]] and w.watched() == 2
        watch_ = notify.Watch(str(tmp_path / "d"), notify.FILE_NAME, False, max_output=4096)
        state.watches.add(watch_)           # a client's watch: the other half is there for it
        run_briefly(loop)
        assert w.watched() == 3 and not watch_.overflowed
        (tmp_path / "gone").mkdir()
        gone = leased(state, tmp_path / "gone")
        os.rmdir(tmp_path / "gone")
        run_briefly(loop)
        assert gone[1] == [(0x3, 0)]


def test_another_programs_change_in_a_leased_directory_breaks_it_the_servers_own_does_not(tmp_path):
    """The directory is watched while its lease lasts, and no longer once it ends."""
    with watching() as (state, w, loop):
        o, sent = leased(state, tmp_path)
        run_briefly(loop)
        assert w.watched() == 1 and sent == []
        state.watches.mark_own(f"{tmp_path}/own")       # as smb.dirleases marks the server's
        (tmp_path / "own").write_bytes(b"x")
        run_briefly(loop)
        assert sent == []
        (tmp_path / "theirs").write_bytes(b"x")
        run_briefly(loop)
        assert sent == [(0x3, 0)]
        state.oplocks.remove(o)
        state.unwatch_leased_directory(o)   # (as its close does)
        run_briefly(loop, TICK + 0.5)
        assert w.watched() == 0
