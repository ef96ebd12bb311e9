"""The client against a full disk, for real: `smbring get` into a small local file system
and `smbring put` onto a server whose share is one. Each fails with a clear error and leaves
no file under the name asked for and no partial file behind: what is there is whole."""
import os

import pytest
from servers import small_file_system
from test_cli import smbring, url

SIZE = 2 << 20              # the small file system
BIG = 3 << 20               # a file that does not fit in it


@pytest.fixture(params=["tmpfs", "ext4"])
def small_dir(request, tmp_path):
    with small_file_system(tmp_path / "small", request.param, SIZE) as where:
        yield where


def assert_clean_failure(r) -> None:
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    assert "space" in r.stderr.lower() or "DISK_FULL" in r.stderr, r.stderr


def test_a_get_that_does_not_fit_leaves_nothing(smbring_server, small_dir):
    srv = smbring_server()
    (srv["share"] / "big.bin").write_bytes(os.urandom(BIG))
    r = smbring("get", url(srv, "big.bin"), str(small_dir / "big.bin"), "--no-progress",
                password=srv["password"])
    assert_clean_failure(r)
    assert os.listdir(small_dir) in ([], ["lost+found"])     # (ext4's own)


def test_a_tree_get_that_does_not_fit_keeps_only_whole_files(smbring_server, small_dir):
    srv = smbring_server()
    tree = srv["share"] / "tree"
    tree.mkdir()
    wanted = {f"f{n}.bin": os.urandom(700 << 10) for n in range(5)}      # 3.5 MiB in all
    for name, data in wanted.items():
        (tree / name).write_bytes(data)
    r = smbring("get", url(srv, "tree"), str(small_dir / "tree"), "--no-progress", password=srv["password"])
    assert_clean_failure(r)
    got = small_dir / "tree"
    for name in (os.listdir(got) if got.exists() else []):
        assert name in wanted, f"{name} left behind"
        assert (got / name).read_bytes() == wanted[name], f"{name} is there, but not whole"


def test_a_put_onto_a_full_share_leaves_nothing_there(smbring_server, tmp_path):
    with small_file_system(tmp_path / "share", "ext4", SIZE) as share:
        srv = smbring_server()
        assert srv["share"] == share
        src = tmp_path / "big.bin"
        src.write_bytes(os.urandom(BIG))
        r = smbring("put", str(src), url(srv, "big.bin"), "--no-progress", password=srv["password"])
        assert_clean_failure(r)
        assert sorted(os.listdir(share)) in ([], ["lost+found"]), os.listdir(share)
