"""The `server` fixture: one `smbring serve` per test (see servers.py)."""
import pytest

from servers import spawn, stop


@pytest.fixture
def server(tmp_path):
    """A real `smbring serve` process on a free loopback port, sharing tmp_path/share."""
    share = tmp_path / "share"
    share.mkdir()
    proc, port, log = spawn(tmp_path, str(share), "--share", "share")
    yield {"port": port, "share": share, "proc": proc, "log": log}
    stop(proc)
