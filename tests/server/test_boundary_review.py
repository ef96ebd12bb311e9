"""Attempts on the share boundary by a user with an account or a local user: links and
renames that lead out of the share, work the server does as root (the change watcher), and
the server's local sockets and files.

Each test tries to get around one check; the module's docstrings say which."""
from __future__ import annotations

import asyncio
import os

import pytest

from smbring.server.change_watcher import ChangeWatcher
from smbring.smb import notify
from smbring.smb.server_state import ServerState


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
