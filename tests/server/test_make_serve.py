"""`make serve`'s script (scripts/serve.sh) on first use: it makes a user with a random password,
says it, and serves; the user it names logs on with that password, with Samba's smbclient, on
the first start and on the next. As root, with no Unix account named smbring, the user acts as
the owner of the shared directory (a username map); as in Samba the map applies before the
password check, so the owner's entry in the password file must hold that password."""
import os
import pwd
import re
import shutil
import subprocess
import time

import pytest
from servers import free_port

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

pytestmark = pytest.mark.skipif(shutil.which("smbclient") is None,
                                reason="smbclient not installed (Debian package smbclient)")


def start(tmp_path, share, port):
    """serve.sh run as `make serve` runs it, with a password file and control socket of the
    test's own; returns the process and what it said before the server listened."""
    env = dict(os.environ, SHARE=str(share), LISTEN=f"127.0.0.1:{port}",
               SERVE_ARGS=f"--control-socket {tmp_path}/control",
               SMBRING_PASSDB=str(tmp_path / "passdb"))
    path = tmp_path / f"serve-{port}.log"
    # (appended to by the script, read through a file of its own: a shared file offset moved
    # by reading would have the script's next lines overwrite its first)
    with open(path, "ab") as log:
        proc = subprocess.Popen(["bash", "scripts/serve.sh"], cwd=REPO, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 30
    said = ""
    while time.monotonic() < deadline:
        said = path.read_text(errors="replace")
        if "serving share" in said:
            return proc, said
        assert proc.poll() is None, said
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"serve.sh did not start serving:\n{said}")


def stop(proc):
    proc.terminate()
    proc.wait(timeout=20)


def smbclient(port, password, command):
    return subprocess.run(["smbclient", "//127.0.0.1/share", "-p", str(port), "-U", f"smbring%{password}",
                           "-c", command], capture_output=True, text=True, timeout=60)


def test_the_first_user_logs_on_with_the_password_it_was_given(tmp_path):
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("smbring")
            pytest.skip("a Unix account smbring exists: the user acts as it, not as the share's owner")
        except KeyError:
            pass
    share = tmp_path / "share"
    port = free_port()
    proc, said = start(tmp_path, share, port)
    try:
        password = re.search(r"created user 'smbring' with password '([^']+)'", said).group(1)
        if os.geteuid() == 0:
            assert f"acts as {pwd.getpwuid(os.stat(share).st_uid).pw_name}" in said, said
        (tmp_path / "up.txt").write_text("made through make serve\n")
        r = smbclient(port, password, f"put {tmp_path / 'up.txt'} up.txt; ls")
        assert r.returncode == 0 and "up.txt" in r.stdout, r.stdout + r.stderr
        assert (share / "up.txt").read_text() == "made through make serve\n"
        r = smbclient(port, password + "x", "ls")
        assert "NT_STATUS_LOGON_FAILURE" in r.stdout + r.stderr
    finally:
        stop(proc)
    port = free_port()
    proc, said = start(tmp_path, share, port)       # the next start: no new user, same password
    try:
        assert "created user" not in said and "lacks" not in said, said
        r = smbclient(port, password, "ls")
        assert r.returncode == 0 and "up.txt" in r.stdout, r.stdout + r.stderr
    finally:
        stop(proc)
