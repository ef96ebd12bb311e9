"""The `server` fixture: one `smbring serve` per test (see servers.py)."""
import os

import pytest

from servers import searchable_to, spawn, stop


@pytest.fixture(autouse=True)
def _reachable_tmp_path(request):
    """As root the server acts as each session's Unix account and, as smbd, refuses a share
    that account cannot reach: a test's own directory (pytest makes it 0700) is made
    passable (o+x, not listable) for the test accounts."""
    if os.geteuid() == 0 and "tmp_path" in request.fixturenames:
        searchable_to(request.getfixturevalue("tmp_path") / "share")


# seconds an oplock or lease break waits for an answer in a server of a test that asks for
# `short_break_timeout` (35 s otherwise, as Windows and Samba)
SHORT_BREAK_TIMEOUT = 5.0


@pytest.fixture
def short_break_timeout(monkeypatch):
    """The servers the test starts after this fixture (name it before `server` or `clients`)
    time an unanswered break out after SHORT_BREAK_TIMEOUT seconds instead of 35 (the
    SMBRING_BREAK_TIMEOUT variable; test_oplocks checks that without it a server uses 35 s)."""
    monkeypatch.setenv("SMBRING_BREAK_TIMEOUT", str(SHORT_BREAK_TIMEOUT))
    return SHORT_BREAK_TIMEOUT


@pytest.fixture
def server(tmp_path):
    """A real `smbring serve` process on a free loopback port, sharing tmp_path/share."""
    share = tmp_path / "share"
    share.mkdir()
    proc, port, log = spawn(tmp_path, str(share), "--share", "share")
    yield {"port": port, "share": share, "proc": proc, "log": log}
    stop(proc)


@pytest.fixture
def unix_user():
    """A Unix account made for the test (root only), removed after it: a user that is
    neither root nor the server's."""
    import os
    import secrets
    import subprocess
    if os.geteuid() != 0:
        pytest.skip("making a Unix user needs root")
    name = f"smbrt{secrets.token_hex(4)}"
    subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                   check=True, capture_output=True)
    try:
        yield name
    finally:
        subprocess.run(["userdel", name], capture_output=True)
