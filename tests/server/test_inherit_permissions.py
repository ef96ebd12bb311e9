"""`inherit permissions` (as Samba's unix_mode): on such a share a new file takes its
directory's read and write bits and a new directory its directory's mode (setgid and sticky
bits too, never setuid, always writable by its owner), in place of `create mask` and
`directory mask`; a share without it keeps the masks. smbclient against `smbring serve
--config`; the modes read from the disk."""
import os
import stat

from smbconf_server import smbconf  # noqa: F401  (the fixture)

SHARES = {"inherit": "read only = no\ninherit permissions = yes\ncreate mask = 0600\ndirectory mask = 0700",
          "masked": "read only = no\ncreate mask = 0600\ndirectory mask = 0700"}


def test_new_files_and_directories_take_their_directorys_mode(smbconf, tmp_path):
    server = smbconf("", SHARES)
    local = tmp_path / "local.txt"
    local.write_bytes(b"x")
    for share in SHARES:
        project = tmp_path / share / "project"
        project.mkdir()
        project.chmod(0o6775)       # setuid, setgid, group-writable
        out = server.smbclient(share, f"put {local} project\\f.txt; mkdir project\\sub; "
                                      f"put {local} project\\sub\\g.txt")
        assert out.returncode == 0, out.stdout + out.stderr
    mode = lambda p: stat.S_IMODE(os.stat(p).st_mode)     # noqa: E731
    inherit, masked = tmp_path / "inherit" / "project", tmp_path / "masked" / "project"
    assert mode(inherit / "f.txt") == 0o664
    assert mode(inherit / "sub") == 0o2775                 # setgid kept, setuid never
    assert mode(inherit / "sub" / "g.txt") == 0o664
    assert mode(masked / "f.txt") == 0o600 and mode(masked / "sub") == 0o700
