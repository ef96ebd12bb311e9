"""The case index of a share directory is one per worker process, whatever the number of
connections: each connection's own would take one of the user's 128 inotify queues
(fs.inotify.max_user_instances) and up to 30 MB of names. Samba's smbclient against
`smbring serve --config`; the server's descriptors read from /proc.

Fails on a server that opens a share's files (and so its index) per connection or per tree
connect: four clients then leave four queues."""
import os
import subprocess
import time

from smbring.vfs.case_index import MIN_ENTRIES

from smbconf_server import smbconf  # noqa: F401  (the fixture)
from servers import PASSWORD, USER

CLIENTS = 4


def inotify_queues(pid: int) -> int:
    queues = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            queues += os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:inotify"
        except FileNotFoundError:
            pass
    return queues


def test_connections_to_a_share_use_one_case_index(smbconf, tmp_path):
    server = smbconf()
    big = server.root / "share" / "big"
    big.mkdir()
    for i in range(MIN_ENTRIES * 2):
        (big / f"file{i}").write_bytes(b"x")
    # the port is open a moment before serving starts (and makes the change watcher's queue):
    # one connection served first, so that `before` counts what a served server has
    subprocess.run(["smbclient", "//127.0.0.1/share", "-p", str(server.port), "-U", f"{USER}%{PASSWORD}",
                    "-c", "ls"], check=True, capture_output=True, timeout=60)
    before = inotify_queues(server.proc.pid)
    # each client asks for a name in another case than on disk (a lookup through the index)
    # and stays connected, reading its next command, until all have
    clients = [subprocess.Popen(
        ["smbclient", "//127.0.0.1/share", "-p", str(server.port), "-U", f"{USER}%{PASSWORD}"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(CLIENTS)]
    try:
        for i, client in enumerate(clients):
            client.stdin.write(f"get big\\FILE{i} {tmp_path / f'got{i}'}\n")
            client.stdin.flush()
        for i in range(CLIENTS):
            got = tmp_path / f"got{i}"
            for _ in range(100):
                # (smbclient makes the local file before it writes what it got into it)
                if got.exists() and got.stat().st_size:
                    break
                time.sleep(0.1)
            assert got.read_bytes() == b"x"
        assert all(client.poll() is None for client in clients)     # all still connected
        during = inotify_queues(server.proc.pid)
    finally:
        outputs = [client.communicate("quit\n", timeout=30)[0] for client in clients]
    assert all(client.returncode == 0 for client in clients), outputs
    assert during == before + 1, (before, during)
