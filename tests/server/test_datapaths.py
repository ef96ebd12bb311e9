"""Every VFS module and READ path carries the same bytes: smbclient puts and gets a file with
checksums compared, and the server's own count of the path each read took is checked. A
client that holds the file open for writing forces `read path = auto` off splice (onto a send
from a map of the file, which copies as it sends)."""
import hashlib
import re
import shutil
import time
import uuid

import pytest

from servers import PASSWORD, USER, spawn, stop

if not shutil.which("smbclient"):
    pytest.skip("Samba's smbclient is not installed", allow_module_level=True)

import subprocess  # noqa: E402

SIZE = 24 << 20


def smbclient(port, command):
    return subprocess.run(["smbclient", "//127.0.0.1/share", "-p", str(port), "-U", f"{USER}%{PASSWORD}",
                           "-c", command], capture_output=True, text=True, timeout=120)


def paths_used(log) -> dict:
    """Sums the per-connection counts the server logs when a connection closes."""
    total = {"copy": 0, "mmap": 0, "splice": 0, "zc": 0}
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        found = re.findall(r"file reads sent by path (\{[^}]*\})", log.read_text())
        if found:
            for d in found:
                for k, v in eval(d).items():   # our own log line: a dict literal
                    total[k] += v
            return total
        time.sleep(0.1)
    return total


def paced() -> bool:
    """Whether this machine's TCP paces (BBR): read path auto then takes mmap only."""
    with open("/proc/sys/net/ipv4/tcp_congestion_control") as f:
        return f.read().startswith("bbr")


@pytest.mark.parametrize("vfs,read_path,expect", [
    ("io_uring", "copy", "copy"), ("io_uring", "mmap", "mmap"), ("io_uring", "splice", "splice"),
    ("io_uring", "zc", "zc"), ("io_uring", "auto", "mmap+splice"), ("threadpool", "splice", "splice"),
    ("posix", "copy", "copy"),
    ("", "auto", "mmap+splice"),        # the default stack: direct_writes over io_uring
])
def test_put_get_identical_bytes(tmp_path, vfs, read_path, expect):
    share = tmp_path / "share"
    share.mkdir()
    src = tmp_path / "src.bin"
    src.write_bytes(bytes(range(256)) * (SIZE // 256) + b"tail")
    proc, port, log = spawn(tmp_path, str(share), "--share", "share", "--vfs-objects", vfs,
                            "--read-path", read_path)
    try:
        # again and again: auto measures neither a connection's first 16 reads nor a send
        # from a map before its pages are mapped (warm), and keeps a way's first 16 samples
        # only after 16 more (see datapath.read_costs)
        gets = "; ".join(f"get file.bin {tmp_path / f'back{i}.bin' if i in (0, 15) else '/dev/null'}"
                         for i in range(16))
        r = smbclient(port, f"put {src} file.bin; {gets}")
        assert r.returncode == 0, r.stdout + r.stderr
        digest = hashlib.sha256(src.read_bytes()).hexdigest()
        assert hashlib.sha256((share / "file.bin").read_bytes()).hexdigest() == digest
        for back in ("back0.bin", "back15.bin"):
            assert hashlib.sha256((tmp_path / back).read_bytes()).hexdigest() == digest
        stop(proc)
        used = paths_used(log)
        if read_path == "auto" and paced():
            expect = "mmap"
        expected = expect.split("+")       # auto measures both mmap and splice as it goes ...
        assert all(used[p] > 0 for p in expected), used
        if read_path == "auto":            # ... and copies what direct writes left uncached
            expected.append("copy")
        assert sum(used.values()) == sum(used[p] for p in expected), used
        stack = vfs or "direct_writes -> io_uring"
        assert f"file data through {stack}" in log.read_text()
        if not vfs:     # both ways measured on the put's 8 MiB writes, and one preferred
            assert "direct_writes: device" in log.read_text()
    finally:
        stop(proc)


def test_auto_does_not_splice_a_file_open_for_writing(tmp_path):
    pytest.importorskip("smbprotocol")
    from smbprotocol.connection import Connection
    from smbprotocol.open import CreateDisposition, CreateOptions, FileAttributes, ImpersonationLevel, Open
    from smbprotocol.session import Session
    from smbprotocol.tree import TreeConnect

    share = tmp_path / "share"
    share.mkdir()
    data = bytes(range(256)) * (SIZE // 256)
    (share / "busy.bin").write_bytes(data)
    proc, port, log = spawn(tmp_path, str(share), "--share", "share")
    conn = Connection(uuid.uuid4(), "127.0.0.1", port)
    conn.connect()
    try:
        session = Session(conn, USER, PASSWORD)
        session.connect()
        tree = TreeConnect(session, r"\\127.0.0.1\share")
        tree.connect()
        writer = Open(tree, "busy.bin")
        writer.create(ImpersonationLevel.Impersonation, 0x0012019F, FileAttributes.FILE_ATTRIBUTE_NORMAL,
                      0x7, CreateDisposition.FILE_OPEN, CreateOptions.FILE_NON_DIRECTORY_FILE)
        writer.write(b"W" * 10, 0)           # a writer changes the file while others read it
        r = smbclient(port, f"get busy.bin {tmp_path / 'got.bin'}")
        assert r.returncode == 0, r.stdout + r.stderr
        assert (tmp_path / "got.bin").read_bytes() == b"W" * 10 + data[10:]
        writer.close()
    finally:
        conn.disconnect()
        stop(proc)
    used = paths_used(log)
    assert used["splice"] == 0 and used["mmap"] > 0, used
