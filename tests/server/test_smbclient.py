"""Samba's real smbclient against a real smbring server process."""
import hashlib
import os

import pytest

from servers import smbclient


@pytest.mark.parametrize("protocol", ["SMB3", "SMB3_02", "SMB3_00", "SMB2"])   # 3.0.x validate negotiate
def test_ls_get_put_mkdir_rename_del(server, tmp_path, protocol):
    share = server["share"]
    payload = os.urandom(3 * 1024 * 1024 + 17)
    (share / "big.bin").write_bytes(payload)
    upload = tmp_path / "upload.bin"
    upload.write_bytes(os.urandom(2 * 1024 * 1024 + 5))
    got = tmp_path / "got.bin"
    r = smbclient(server, f"ls; get big.bin {got}; put {upload} up.bin; mkdir dir1; "
                          "rename up.bin dir1\\moved.bin; ls dir1\\*; allinfo big.bin", "-m", protocol)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "big.bin" in r.stdout and "moved.bin" in r.stdout
    assert hashlib.sha256(got.read_bytes()).digest() == hashlib.sha256(payload).digest()
    assert (share / "dir1" / "moved.bin").read_bytes() == upload.read_bytes()
    assert "create_time" in r.stdout  # allinfo printed the file's times
    r = smbclient(server, "del dir1\\moved.bin; rmdir dir1; ls", "-m", protocol)
    assert r.returncode == 0, r.stdout
    assert not (share / "dir1").exists()


def test_recursive_mput_mget_with_checksums(server, tmp_path):
    src = tmp_path / "tree"
    (src / "a" / "b").mkdir(parents=True)
    files = {"top.txt": os.urandom(1000), "a/one.bin": os.urandom(70000), "a/b/two.bin": os.urandom(5)}
    for name, data in files.items():
        (src / name).write_bytes(data)
    r = smbclient(server, f"prompt off; recurse on; lcd {src}; mput *", "-m", "SMB3")
    assert r.returncode == 0, r.stdout + r.stderr
    for name, data in files.items():
        assert (server["share"] / name).read_bytes() == data
    out = tmp_path / "back"
    out.mkdir()
    r = smbclient(server, f"prompt off; recurse on; lcd {out}; mget *", "-m", "SMB3")
    assert r.returncode == 0, r.stdout + r.stderr
    for name, data in files.items():
        assert (out / name).read_bytes() == data


def test_wrong_password_is_refused(server):
    r = smbclient(server, "ls", password="wrong")
    assert r.returncode != 0 and "NT_STATUS_LOGON_FAILURE" in r.stdout + r.stderr


def test_paths_cannot_escape_the_share(server, tmp_path):
    (tmp_path / "secret.txt").write_text("outside")
    os.symlink(str(tmp_path / "secret.txt"), server["share"] / "link-out")
    got = tmp_path / "leak.txt"
    for path in ("..\\secret.txt", "link-out", "dir\\..\\..\\secret.txt"):
        r = smbclient(server, f"get {path} {got}")
        assert "NT_STATUS_" in r.stdout + r.stderr, path
        assert not got.exists() or got.read_text() != "outside"
    # a listing shows no size or times of the file outside either; a link inside is followed
    (tmp_path / "secret.txt").write_text("x" * 12345)
    (server["share"] / "inside.txt").write_text("y" * 777)
    os.symlink("inside.txt", server["share"] / "link-in")
    listing = smbclient(server, "ls").stdout
    out_line = next(line for line in listing.splitlines() if "link-out" in line)
    in_line = next(line for line in listing.splitlines() if "link-in" in line)
    assert "12345" not in out_line and " 777 " in in_line, listing


def test_encrypted_transfer(server, tmp_path):
    payload = os.urandom(1024 * 1024 + 3)
    (server["share"] / "e.bin").write_bytes(payload)
    got = tmp_path / "e.bin"
    r = smbclient(server, f"get e.bin {got}; put {got} back.bin", "-m", "SMB3",
                  "--client-protection=encrypt")
    assert r.returncode == 0, r.stdout + r.stderr
    assert got.read_bytes() == payload and (server["share"] / "back.bin").read_bytes() == payload
