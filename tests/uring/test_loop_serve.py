"""`smbring serve --event-loop`: a real server on the ring loop, driven by Samba's smbclient;
which loop serves by default and on each choice; the choices the option refuses."""
from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import time

import pytest

from servers import PASSWORD, USER, free_port, spawn, stop

IO_URING_ENTER = {"x86_64": 426, "aarch64": 426}


def smbclient(server, command: str, *extra: str):
    """Samba's smbclient, without a sanitizer preloaded into the server's tests (`make
    test-asan` preloads libasan, under which smbclient hangs before its first request)."""
    if not shutil.which("smbclient"):
        pytest.skip("Samba's smbclient is not installed")
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "ASAN_OPTIONS")}
    return subprocess.run(["smbclient", "//127.0.0.1/share", "-p", str(server["port"]),
                           "-U", f"{USER}%{PASSWORD}", *extra, "-c", command],
                          capture_output=True, text=True, timeout=120, env=env)


@pytest.fixture
def ring_server(tmp_path):
    share = tmp_path / "share"
    share.mkdir()
    proc, port, log = spawn(tmp_path, str(share), "--share", "share", "--event-loop", "ring")
    yield {"port": port, "share": share, "proc": proc, "log": log}
    stop(proc)


def test_serves_smbclient_on_the_ring_loop(ring_server, tmp_path):
    share = ring_server["share"]
    payload = os.urandom(3 * 1024 * 1024 + 17)
    (share / "big.bin").write_bytes(payload)
    upload = tmp_path / "upload.bin"
    upload.write_bytes(os.urandom(1024 * 1024 + 5))
    got = tmp_path / "got.bin"
    r = smbclient(ring_server, f"ls; get big.bin {got}; put {upload} up.bin; mkdir d; ls", "-m", "SMB3")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "big.bin" in r.stdout and "up.bin" in r.stdout
    assert hashlib.sha256(got.read_bytes()).digest() == hashlib.sha256(payload).digest()
    assert (share / "up.bin").read_bytes() == upload.read_bytes()
    assert (share / "d").is_dir()


@pytest.mark.skipif(platform.machine() not in IO_URING_ENTER, reason="syscall numbers known for x86_64, aarch64")
def test_the_idle_server_waits_in_io_uring_enter(ring_server):
    pid = ring_server["proc"].pid
    for _ in range(50):         # the main thread, once it has settled into waiting
        with open(f"/proc/{pid}/syscall") as f:
            number = f.read().split()[0]    # a number, or "running"
        if number == str(IO_URING_ENTER[platform.machine()]):
            break
        time.sleep(0.05)
    assert number == str(IO_URING_ENTER[platform.machine()])


@pytest.mark.parametrize("args, env, says", [
    (["--event-loop", "ring", "--no-io-uring"], {}, "cannot go with --no-io-uring"),
    ([], {"SMBRING_EVENT_LOOP": "libev"}, "the event loop is asyncio, ring or uvloop"),
    (["--event-loop", "epoll"], {}, "invalid choice"),
])
def test_refused_choices(tmp_path, args, env, says):
    r = subprocess.run([sys.executable, "-m", "smbring.cli", "serve", str(tmp_path), "--guest",
                        "--listen", f"127.0.0.1:{free_port()}", *args], env=dict(os.environ, **env),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert says in r.stderr


@pytest.mark.skipif(platform.machine() not in IO_URING_ENTER, reason="syscall numbers known for x86_64, aarch64")
def test_the_variable_is_a_default_that_no_io_uring_overrides(tmp_path, monkeypatch):
    """SMBRING_EVENT_LOOP=ring with --no-io-uring serves on asyncio's loop (idle in epoll_wait),
    where --event-loop ring --no-io-uring is refused."""
    monkeypatch.setenv("SMBRING_EVENT_LOOP", "ring")
    share = tmp_path / "share"
    share.mkdir()
    proc, port, log = spawn(tmp_path, str(share), "--share", "share", "--no-io-uring")
    try:
        idle = {"x86_64": ("232", "281", "441"), "aarch64": ("22", "441")}[platform.machine()]
        for _ in range(100):        # (a server still starting may be in a read or anything)
            with open(f"/proc/{proc.pid}/syscall") as f:
                number = f.read().split()[0]
            if number in idle or number == str(IO_URING_ENTER[platform.machine()]):
                break
            time.sleep(0.05)
        assert number in idle
        r = smbclient({"port": port}, "ls", "-m", "SMB3")
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        stop(proc)


def runs_uvloop(pid: int) -> bool:
    """Whether the process has uvloop's loop module loaded (asyncio's loop never imports it)."""
    with open(f"/proc/{pid}/maps") as f:
        return "/uvloop/loop." in f.read()


@pytest.mark.parametrize("args, env, loop", [
    ([], {}, "uvloop"),                                             # the default
    (["--event-loop", "asyncio"], {}, "asyncio"),
    ([], {"SMBRING_EVENT_LOOP": "asyncio"}, "asyncio"),
    (["--event-loop", "uvloop"], {"SMBRING_EVENT_LOOP": "asyncio"}, "uvloop"),   # the option wins
])
def test_the_loop_that_serves(tmp_path, monkeypatch, args, env, loop):
    """By default the server runs on uvloop; `--event-loop asyncio` (or the variable) on
    asyncio's loop, which never imports uvloop. Either serves smbclient."""
    monkeypatch.delenv("SMBRING_EVENT_LOOP", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    share = tmp_path / "share"
    share.mkdir()
    (share / "f.txt").write_text("on the loop")
    proc, port, log = spawn(tmp_path, str(share), "--share", "share", *args)
    try:
        r = smbclient({"port": port}, f"get f.txt {tmp_path / 'got.txt'}", "-m", "SMB3")
        assert r.returncode == 0, r.stdout + r.stderr
        assert (tmp_path / "got.txt").read_text() == "on the loop"
        assert runs_uvloop(proc.pid) == (loop == "uvloop")
    finally:
        stop(proc)
