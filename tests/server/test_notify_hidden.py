"""Change notify tells a user no name the share's listing rules hide from that user: `hide
unreadable`, `hide unwriteable files`, `hide special files` and `hide new files timeout` leave
entries out of QUERY_DIRECTORY, and CHANGE_NOTIFY must not report them either. A server
started as root acting as two Unix accounts made for the module, one share per rule and a
plain one; smbprotocol's FileSystemWatcher as the client; changes made on disk (the kernel's
events) and through the other user's session (the server's own).

Each test makes a name the rule hides and a visible one in the same directory: only the
visible one is reported. A removal under such a rule cannot be judged (the name is gone): the
watch answers STATUS_NOTIFY_ENUM_DIR, which names nothing. The plain share (no such rule, but
`hide files` and `hide dot files`, which only mark names hidden and keep them listed) reports
everything as before."""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

pytest.importorskip("smbprotocol")

from smbprotocol.change_notify import ChangeNotifyFlags, CompletionFilter, FileAction, FileSystemWatcher  # noqa: E402
from smbprotocol.open import Open  # noqa: E402

from notify_clients import clients_of  # noqa: E402
from servers import stop, unix_accounts, spawn_for_accounts  # noqa: E402

if os.geteuid() != 0 or not shutil.which("useradd"):
    pytest.skip("acting as Unix accounts needs root (and useradd)", allow_module_level=True)

PASSWORD = "Hidden-pw1"
SUFFIX = f"{os.getpid() % 100000}"
ALICE, BOB = f"srha{SUFFIX}", f"srhb{SUFFIX}"       # ALICE watches; BOB makes names through SMB
NAMES = CompletionFilter.FILE_NOTIFY_CHANGE_FILE_NAME | CompletionFilter.FILE_NOTIFY_CHANGE_DIR_NAME
ADDED, REMOVED = FileAction.FILE_ACTION_ADDED, FileAction.FILE_ACTION_REMOVED
OLD_NAME, NEW_NAME = FileAction.FILE_ACTION_RENAMED_OLD_NAME, FileAction.FILE_ACTION_RENAMED_NEW_NAME
ENUM_DIR = ("STATUS_NOTIFY_ENUM_DIR", "")        # an answer that lists nothing: enumerate instead
NEW_FILES_TIMEOUT = 30          # seconds; files older than that are shown
OLD = time.time() - 3600        # the times of files made "long ago"

SHARES = {
    # share: its options beyond `read only = no` (and the path)
    "unreadable": "hide unreadable = yes\ncreate mask = 0600\n",
    "unwriteable": "hide unwriteable files = yes\n",
    "special": "hide special files = yes\n",
    "newfiles": f"hide new files timeout = {NEW_FILES_TIMEOUT}\n",
}


@pytest.fixture(scope="module")
def accounts():
    yield from unix_accounts(ALICE, BOB)


@pytest.fixture(scope="module")
def server(accounts, tmp_path_factory):
    """[share] (plain: `hide files = /*.hid/`, `hide dot files = yes`) and one share per rule,
    each a root-owned 1777 directory; staging/ beside them, on the same file system, where
    files are made whole (mode, times) before a rename brings them into a share at once (so
    that no change is seen while a file is only half made)."""
    tmp = tmp_path_factory.mktemp("notify-hidden")
    top = Path(tempfile.mkdtemp(prefix="smbring-notify-hidden-", dir="/tmp"))
    top.chmod(0o755)
    dirs = {name: top / name for name in ("share", "staging", *SHARES)}
    for d in dirs.values():
        d.mkdir()
        d.chmod(0o1777)
    # the stream depot, made as root for all (sticky), as tests/server/test_boundary_accounts.py
    # makes it: made by the first user to make a stream, no other could make one
    (dirs["unreadable"] / ".smbring-streams").mkdir()
    (dirs["unreadable"] / ".smbring-streams").chmod(0o1777)
    more = "".join(f"[{name}]\npath = {dirs[name]}\nread only = no\n{options}"
                   for name, options in SHARES.items())
    proc, port, log = spawn_for_accounts(tmp, dirs["share"], (ALICE, BOB), PASSWORD,
                                         share_options="hide files = /*.hid/\nhide dot files = yes\n",
                                         more=more)
    yield {"port": port, "dirs": dirs, "proc": proc, "log": log, "accounts": accounts}
    stop(proc)
    shutil.rmtree(top, ignore_errors=True)


@pytest.fixture
def clients(server):
    with clients_of(server["port"], PASSWORD) as make:
        yield make


def watch(o: Open, tree: bool = False, completion_filter=NAMES) -> FileSystemWatcher:
    w = FileSystemWatcher(o)
    w.start(completion_filter, flags=ChangeNotifyFlags.SMB2_WATCH_TREE if tree else 0, output_buffer_length=65536)
    time.sleep(0.3)      # the interim response, and the server's kernel watches, are in place
    return w


def answer(w: FileSystemWatcher, timeout: float = 10.0) -> list[tuple[int, str]]:
    """One answer's changes; ENUM_DIR alone for STATUS_NOTIFY_ENUM_DIR (smbprotocol gives no
    entries for it: with a 64 KiB buffer nothing else answers without one)."""
    assert w.response_event.wait(timeout), "no change notification came"
    entries = w.result
    return [(a["action"].get_value(), a["file_name"].get_value()) for a in entries] or [ENUM_DIR]


def reported(o: Open, first: FileSystemWatcher, until: str, tree: bool = False,
             timeout: float = 15.0, completion_filter=NAMES) -> list[tuple[int, str]]:
    """What the watch `first` answered, then further requests on `o`, until a change names
    `until`."""
    seen = answer(first, timeout)
    deadline = time.monotonic() + timeout
    while not any(name == until for _, name in seen):
        seen += answer(watch(o, tree, completion_filter), max(0.1, deadline - time.monotonic()))
    return seen


def put(server, share: str, name: str, mode: int = 0o644, mtime: float | None = OLD) -> Path:
    """A root-owned file brought whole into the share's directory (made in staging/, then
    renamed: the kernel reports it as added, with its mode and times already set)."""
    staged = server["dirs"]["staging"] / name.replace("/", "_")
    fd = os.open(staged, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        os.fchmod(fd, mode)
        os.write(fd, b"data")
    finally:
        os.close(fd)
    if mtime is not None:
        os.utime(staged, (mtime, mtime))
    target = server["dirs"][share] / name
    os.rename(staged, target)
    return target


# -- each rule: the hidden name is not reported, the visible one is ----------------------------
def test_hide_unreadable_hides_a_file_made_on_disk_the_watcher_cannot_read(clients, server):
    alice = clients(ALICE, "unreadable")
    root = alice.open_dir()
    w = watch(root)
    put(server, "unreadable", "secret-600.txt", 0o600)       # root's: ALICE may not read it
    put(server, "unreadable", "public-644.txt", 0o644)
    assert reported(root, w, "public-644.txt") == [(ADDED, "public-644.txt")]


def test_hide_unreadable_hides_a_file_another_user_made_through_smb(clients, server):
    """BOB's file, made through his session (create mask 0600: his alone): the server's own
    report of it is judged as ALICE, who may not read it; BOB's own watch is told."""
    alice, bob = clients(ALICE, "unreadable"), clients(BOB, "unreadable")
    alice_root, bob_root = alice.open_dir(), bob.open_dir()
    alice_watch, bob_watch = watch(alice_root), watch(bob_root)
    bob.make_file("bobs-secret.txt")
    put(server, "unreadable", "marker-smb.txt", 0o644)
    assert answer(bob_watch)[0] == (ADDED, "bobs-secret.txt")
    assert reported(alice_root, alice_watch, "marker-smb.txt") == [(ADDED, "marker-smb.txt")]


def test_hide_unreadable_hides_a_named_stream_of_a_file_the_watcher_cannot_read(clients, server):
    """A stream's change is told as "file:stream": judged by its file, which ALICE may not
    read (BOB's, create mask 0600)."""
    alice, bob = clients(ALICE, "unreadable"), clients(BOB, "unreadable")
    bob.make_file("bobs-streamed.txt")
    root = alice.open_dir()
    time.sleep(0.3)
    streams = NAMES | CompletionFilter.FILE_NOTIFY_CHANGE_STREAM_NAME
    w = watch(root, completion_filter=streams)
    bob.make_file("bobs-streamed.txt:secret-stream")
    put(server, "unreadable", "marker-stream.txt", 0o644)
    assert reported(root, w, "marker-stream.txt", completion_filter=streams) == [(ADDED, "marker-stream.txt")]


def test_hide_unwriteable_files_hides_a_file_the_watcher_cannot_write(clients, server):
    alice = clients(ALICE, "unwriteable")
    root = alice.open_dir()
    w = watch(root)
    put(server, "unwriteable", "readonly-644.txt", 0o644)    # root's: ALICE may not write it
    put(server, "unwriteable", "writable-666.txt", 0o666)
    assert reported(root, w, "writable-666.txt") == [(ADDED, "writable-666.txt")]


def test_hide_special_files_hides_a_fifo(clients, server):
    alice = clients(ALICE, "special")
    root = alice.open_dir()
    w = watch(root)
    os.mkfifo(server["dirs"]["special"] / "a-fifo", 0o666)
    os.symlink("/etc", server["dirs"]["special"] / "link-out")     # out of the share: not a file
    put(server, "special", "regular.txt")
    assert reported(root, w, "regular.txt") == [(ADDED, "regular.txt")]


def test_hide_new_files_timeout_hides_a_new_file(clients, server):
    alice = clients(ALICE, "newfiles")
    root = alice.open_dir()
    w = watch(root)
    put(server, "newfiles", "brand-new.txt", mtime=None)      # modified now: hidden for a while
    put(server, "newfiles", "long-ago.txt")                   # modified an hour ago: shown
    assert reported(root, w, "long-ago.txt") == [(ADDED, "long-ago.txt")]


def test_hide_new_files_timeout_hides_names_below_a_new_directory(clients, server):
    """A recursive watch: `fresh` (a directory just made, so new) is left out of listings, and
    with it every name below it: an old file moved into it is not reported, not even as
    `fresh\\old.txt` (which would tell the name `fresh`)."""
    alice = clients(ALICE, "newfiles")
    root = alice.open_dir()
    w = watch(root, tree=True)
    fresh = server["dirs"]["newfiles"] / "fresh"
    fresh.mkdir()
    fresh.chmod(0o777)
    time.sleep(0.3)          # the server watches fresh/ once it has read that it was made
    put(server, "newfiles", "fresh/old-inside.txt")
    put(server, "newfiles", "old-marker.txt")
    assert reported(root, w, "old-marker.txt", tree=True) == [(ADDED, "old-marker.txt")]


def test_hide_unreadable_judges_names_below_the_watched_directory_too(clients, server):
    alice = clients(ALICE, "unreadable")
    root = alice.open_dir()
    sub = server["dirs"]["unreadable"] / "sub"
    sub.mkdir()
    sub.chmod(0o755)
    w = watch(root, tree=True)
    put(server, "unreadable", "sub/deep-secret.txt", 0o600)
    put(server, "unreadable", "sub/deep-public.txt", 0o644)
    assert reported(root, w, r"sub\deep-public.txt", tree=True) == [(ADDED, r"sub\deep-public.txt")]


# -- names that are gone: STATUS_NOTIFY_ENUM_DIR -------------------------------------------------
def test_a_removal_under_a_stat_based_rule_asks_to_enumerate(clients, server):
    """Whether the removed name was shown cannot be judged once it is gone: the watch answers
    STATUS_NOTIFY_ENUM_DIR, with no name, for a hidden file and a visible one alike."""
    for name, mode in (("gone-secret.txt", 0o600), ("gone-public.txt", 0o644)):
        path = put(server, "unreadable", name, mode)
        alice = clients(ALICE, "unreadable")
        w = watch(alice.open_dir())      # a watch set up after the file came
        path.unlink()
        assert answer(w) == [ENUM_DIR], name


def test_a_removal_through_smb_under_a_stat_based_rule_asks_to_enumerate(clients, server):
    alice, bob = clients(ALICE, "unwriteable"), clients(BOB, "unwriteable")
    bob.make_file("bobs-to-delete.txt")          # (create mask 0744: ALICE may not write it)
    root = alice.open_dir()
    time.sleep(0.3)
    w = watch(root)
    bob.delete_file("bobs-to-delete.txt")
    assert answer(w) == [ENUM_DIR]


def test_a_rename_in_one_directory_is_judged_by_the_file_under_its_new_name(clients, server):
    """The old name of a rename within one directory is the same file's: a visible file's
    rename is reported as the pair, a hidden file's not at all."""
    share = server["dirs"]["unreadable"]
    put(server, "unreadable", "hidden-before.txt", 0o600)
    put(server, "unreadable", "shown-before.txt", 0o644)
    alice = clients(ALICE, "unreadable")
    root = alice.open_dir()
    time.sleep(0.3)
    w = watch(root)
    os.rename(share / "hidden-before.txt", share / "hidden-after.txt")
    os.rename(share / "shown-before.txt", share / "shown-after.txt")
    assert reported(root, w, "shown-after.txt") == [(OLD_NAME, "shown-before.txt"),
                                                   (NEW_NAME, "shown-after.txt")]


def test_a_rename_out_of_the_directory_asks_to_enumerate(clients, server):
    """Across directories the old name's removal has nothing to judge it by."""
    share = server["dirs"]["unreadable"]
    (share / "elsewhere").mkdir()
    put(server, "unreadable", "moving-away.txt", 0o600)
    alice = clients(ALICE, "unreadable")
    root = alice.open_dir()
    time.sleep(0.3)
    w = watch(root)
    os.rename(share / "moving-away.txt", share / "elsewhere" / "moved.txt")
    assert answer(w) == [ENUM_DIR]


# -- no such rule: everything as before -----------------------------------------------------------
def test_a_share_without_these_rules_reports_every_name(clients, server):
    """The names the four rules hide, and those `hide files` and `hide dot files` mark hidden
    (they stay listed), are all reported; a removal and a rename name their files."""
    share = server["dirs"]["share"]
    alice = clients(ALICE, "share")
    root = alice.open_dir()
    w = watch(root)
    put(server, "share", "plain-600.txt", 0o600)
    os.mkfifo(share / "plain-fifo", 0o666)
    put(server, "share", "plain-new.txt", mtime=None)
    put(server, "share", "marked.hid")
    put(server, "share", ".dotted")
    seen = reported(root, w, ".dotted")
    assert seen == [(ADDED, "plain-600.txt"), (ADDED, "plain-fifo"), (ADDED, "plain-new.txt"),
                    (ADDED, "marked.hid"), (ADDED, ".dotted")]
    w = watch(root)
    os.rename(share / "plain-600.txt", share / "plain-renamed.txt")
    (share / "plain-new.txt").unlink()
    assert reported(root, w, "plain-new.txt") == [(OLD_NAME, "plain-600.txt"),
                                                (NEW_NAME, "plain-renamed.txt"),
                                                (REMOVED, "plain-new.txt")]
