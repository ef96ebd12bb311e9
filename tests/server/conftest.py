import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

USER, PASSWORD = "alice", "Secret-pw1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    """A real `smbring serve` process on a free loopback port, sharing tmp_path/share."""
    share = tmp_path / "share"
    share.mkdir()
    passdb = tmp_path / "passdb"
    env = dict(os.environ, SMBRING_PASSDB=str(passdb))
    cli = [sys.executable, "-m", "smbring.cli"]
    subprocess.run(cli + ["user", "add", USER, "--password-stdin"], input=PASSWORD + "\n",
                   text=True, check=True, env=env, capture_output=True)
    port = free_port()
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen(cli + ["serve", str(share), "--share", "share", "--listen",
                                   f"127.0.0.1:{port}", "--log-level", "info"],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        if proc.poll() is not None:
            raise RuntimeError(open(tmp_path / "server.log").read())
        time.sleep(0.05)
    yield {"port": port, "share": share, "proc": proc, "log": tmp_path / "server.log"}
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def smbclient(server, command: str, *extra: str, user=USER, password=PASSWORD):
    if not shutil.which("smbclient"):
        pytest.skip("Samba's smbclient is not installed")
    return subprocess.run(["smbclient", "//127.0.0.1/share", "-p", str(server["port"]),
                           "-U", f"{user}%{password}", *extra, "-c", command],
                          capture_output=True, text=True, timeout=60)
