"""Servers for the client's tests: a real `smbring serve`, a real Samba smbd (samba_servers),
and a proxy in front of either that lies on purpose (tampers with chosen responses)."""
import pytest

from servers import PASSWORD, USER, spawn, stop
from tampering import TamperingProxy
from samba_servers import samba_server  # noqa: F401  (the fixture)


@pytest.fixture
def smbring_server(tmp_path):
    """`smbring serve` sharing tmp_path/share (options: request.param via make_server)."""
    servers = []

    def make(*options):
        share = tmp_path / "share"
        share.mkdir(exist_ok=True)
        proc, port, log = spawn(tmp_path, str(share), "--share", "share", *options)
        servers.append(proc)
        return {"host": "127.0.0.1", "port": port, "share": share, "name": "share",
                "user": USER, "password": PASSWORD, "log": log}
    yield make
    for proc in servers:
        stop(proc)


@pytest.fixture
def tampering_proxy():
    return TamperingProxy
