"""`smbring get|put|ls|mkdir|rm|mv` against a real `smbring serve`, as a user runs them."""
import json
import os
import subprocess
import sys


def smbring(*args, password=None, env_extra=None, cwd=None):
    env = dict(os.environ)
    env.pop("SMBRING_PASSWORD", None)
    if password is not None:
        env["SMBRING_PASSWORD"] = password
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "smbring.cli", *args], capture_output=True,
                          text=True, env=env, timeout=120, cwd=cwd, stdin=subprocess.DEVNULL)


def url(srv, path=""):
    return f"smb://{srv['user']}@127.0.0.1:{srv['port']}/share/{path}"


def test_put_ls_get_mv_rm_mkdir(smbring_server, tmp_path):
    srv = smbring_server()
    pw = srv["password"]
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(3 * 1024 * 1024 + 5))
    assert smbring("mkdir", url(srv, "dir"), password=pw).returncode == 0
    r = smbring("put", url(srv, "dir/"), str(src), password=pw)
    assert r.returncode == 0, r.stderr
    assert (srv["share"] / "dir" / "src.bin").read_bytes() == src.read_bytes()
    r = smbring("put", str(src), url(srv, "dir/second.bin"), "--encrypt", password=pw)   # LOCAL URL
    assert r.returncode == 0, r.stderr
    r = smbring("ls", url(srv, "dir"), "--json", password=pw)
    assert r.returncode == 0, r.stderr
    listing = {e["name"]: e for e in json.loads(r.stdout)}
    assert set(listing) == {"src.bin", "second.bin"}
    assert listing["src.bin"]["size"] == src.stat().st_size and not listing["src.bin"]["is_dir"]
    r = smbring("ls", url(srv), password=pw)
    assert r.returncode == 0 and r.stdout.startswith("D ") and "dir" in r.stdout
    r = smbring("get", url(srv, "dir/src.bin"), str(tmp_path / "back.bin"), "--sign", password=pw)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "back.bin").read_bytes() == src.read_bytes()
    r = smbring("get", url(srv, "dir/second.bin"), password=pw, cwd=tmp_path)   # default name, here
    assert r.returncode == 0 and (tmp_path / "second.bin").read_bytes() == src.read_bytes()
    assert smbring("mv", url(srv, "dir/src.bin"), "dir/moved.bin", password=pw).returncode == 0
    assert (srv["share"] / "dir" / "moved.bin").exists()
    r = smbring("mv", url(srv, "dir/moved.bin"), url(srv, "dir/second.bin"), password=pw)
    assert r.returncode == 1 and "COLLISION" in r.stderr
    assert smbring("mv", url(srv, "dir/moved.bin"), url(srv, "dir/second.bin"), "--replace",
                   password=pw).returncode == 0
    assert smbring("rm", url(srv, "dir/second.bin"), password=pw).returncode == 0
    assert smbring("rm", url(srv, "dir"), password=pw).returncode == 0
    assert os.listdir(srv["share"]) == []


def test_credentials_file_and_wrong_password(smbring_server, tmp_path):
    srv = smbring_server()
    creds = tmp_path / "creds"
    creds.write_text(f"username = {srv['user']}\npassword = {srv['password']}\n")
    anonymous_url = f"smb://127.0.0.1:{srv['port']}/share/"
    r = smbring("mkdir", anonymous_url + "made", "--credentials", str(creds))
    assert r.returncode == 0, r.stderr
    assert (srv["share"] / "made").is_dir()
    r = smbring("ls", url(srv), password="wrong")
    assert r.returncode == 1 and "LOGON_FAILURE" in r.stderr


def test_password_in_the_url_is_refused(smbring_server):
    srv = smbring_server()
    r = smbring("ls", f"smb://{srv['user']}:{srv['password']}@127.0.0.1:{srv['port']}/share")
    assert r.returncode == 2 and "password does not belong in the URL" in r.stderr


def test_no_password_and_no_terminal_is_a_usage_error(smbring_server):
    srv = smbring_server()
    r = smbring("ls", url(srv))
    assert r.returncode == 2 and "no password" in r.stderr and "Traceback" not in r.stderr


def test_missing_remote_file(smbring_server, tmp_path):
    srv = smbring_server()
    r = smbring("get", url(srv, "nope"), str(tmp_path / "x"), password=srv["password"])
    assert r.returncode == 1 and "OBJECT_NAME_NOT_FOUND" in r.stderr
    assert not (tmp_path / "x").exists()


def test_cp_copies_in_the_server(smbring_server):
    srv = smbring_server()
    pw = srv["password"]
    data = os.urandom(2 * 1024 * 1024 + 3)
    (srv["share"] / "a.bin").write_bytes(data)
    r = smbring("cp", url(srv, "a.bin"), "b.bin", password=pw)
    assert r.returncode == 0, r.stderr
    assert (srv["share"] / "b.bin").read_bytes() == data
    r = smbring("cp", url(srv, "a.bin"), url(srv, "b.bin"), password=pw)
    assert r.returncode == 1 and "COLLISION" in r.stderr
    assert smbring("cp", url(srv, "a.bin"), url(srv, "b.bin"), "--replace", password=pw).returncode == 0
    other_share = f"smb://{srv['user']}@127.0.0.1:{srv['port']}/elsewhere/b.bin"
    r = smbring("cp", url(srv, "a.bin"), other_share, password=pw)
    assert r.returncode == 2 and "within one share" in r.stderr


def test_watch_prints_each_change_until_interrupted(smbring_server):
    """`smbring watch --json --recursive`: a line per change as it comes (here made by another
    program in the shared directory, which the server sees through inotify); Ctrl-C ends it."""
    import queue
    import signal
    import threading
    import time
    srv = smbring_server()
    (srv["share"] / "dir").mkdir()
    env = dict(os.environ, SMBRING_PASSWORD=srv["password"])
    proc = subprocess.Popen([sys.executable, "-m", "smbring.cli", "watch", url(srv, "dir"), "--json",
                             "--recursive"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, stdin=subprocess.DEVNULL)
    try:
        time.sleep(2)       # (logged on, its request waiting)
        (srv["share"] / "dir" / "sub").mkdir()
        time.sleep(0.3)
        (srv["share"] / "dir" / "sub" / "new.txt").write_bytes(b"x")
        printed = queue.Queue()     # (read by a thread: a line that never comes fails, not hangs)
        threading.Thread(target=lambda: [printed.put(line) for line in proc.stdout], daemon=True).start()
        lines = []
        while {"action": "added", "name": "sub/new.txt"} not in lines:
            lines.append(json.loads(printed.get(timeout=20)))
        assert lines[0] == {"action": "added", "name": "sub"}
        assert {"action": "added", "name": "sub/new.txt"} in lines
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 130, proc.stderr.read()
