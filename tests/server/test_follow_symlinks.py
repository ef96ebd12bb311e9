"""`follow symlinks = no` (as Samba's): no path through a symbolic link inside the share is
followed, a file's link or a directory's, where the default follows those that stay in the
share (a link leading out of it never is). smbclient against `smbring serve --config`."""
import os

from smbconf_server import smbconf  # noqa: F401  (the fixture)

SHARES = {"strict": "read only = no\nfollow symlinks = no", "loose": "read only = no"}


def links(root):
    (root / "real.txt").write_bytes(b"real")
    (root / "realdir").mkdir()
    (root / "realdir" / "inner.txt").write_bytes(b"inner")
    os.symlink("real.txt", root / "link.txt")
    os.symlink("realdir", root / "dirlink")


def test_no_path_through_a_link_is_followed(smbconf, tmp_path):
    server = smbconf("", SHARES)
    for share in SHARES:
        links(tmp_path / share)
    for name in ("link.txt", "dirlink\\inner.txt"):
        out = server.smbclient("strict", f"get {name} {tmp_path / 'got'}")
        assert "NT_STATUS_" in out.stdout + out.stderr and not (tmp_path / "got").exists(), out.stdout
        out = server.smbclient("loose", f"get {name} {tmp_path / 'got'}")
        assert out.returncode == 0 and (tmp_path / "got").read_bytes() in (b"real", b"inner"), out.stdout + out.stderr
        (tmp_path / "got").unlink()
    out = server.smbclient("strict", f"get real.txt {tmp_path / 'got'}; put {tmp_path / 'got'} link.txt")
    assert (tmp_path / "got").read_bytes() == b"real"
    assert os.path.islink(tmp_path / "strict" / "link.txt")        # not written through, nor replaced
    assert (tmp_path / "strict" / "real.txt").read_bytes() == b"real"
