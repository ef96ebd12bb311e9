"""`smb2 max read`, `smb2 max write`, `smb2 max trans` (as Samba's): NEGOTIATE announces them
and requests past them are refused (STATUS_INVALID_PARAMETER, as smbd answers), each bound
for its own requests; values a server cannot hold to stop it from starting. A raw client
against `smbring serve --config`, and smbclient, which follows what NEGOTIATE said."""
import struct

import pytest

from servers import PASSWORD, USER
from smbconf_server import smbconf  # noqa: F401  (the fixture)
from smbring.server.config import ConfigError, load
from smbring.smb import wire

LIMITS = "smb2 max read = 65536\nsmb2 max write = 131072\nsmb2 max trans = 65536"


def test_requests_past_the_announced_sizes_are_refused(smbconf):
    server = smbconf(LIMITS)
    (server.root / "share" / "big").write_bytes(bytes(range(256)) * 1024)
    c = server.raw()
    r = c.negotiate((wire.SMB311,))
    transact, read, write = struct.unpack_from("<III", r.body, 28)
    assert (transact, read, write) == (65536, 65536, 131072)
    tree = c.tree(c.logon(USER, PASSWORD), "share")
    fid = tree.open("big", wire.GENERIC_READ | wire.GENERIC_WRITE)
    assert tree.read(fid, 65536).status == wire.STATUS_SUCCESS
    assert tree.read(fid, 65537).status == wire.STATUS_INVALID_PARAMETER
    assert tree.write(fid, b"w" * 131072).status == wire.STATUS_SUCCESS      # (its own bound)
    assert tree.write(fid, b"w" * 131073).status == wire.STATUS_INVALID_PARAMETER
    assert tree.query_info(fid, wire.INFO_FILE, 18, output_length=65537).status == wire.STATUS_INVALID_PARAMETER
    assert tree.query_info(fid, wire.INFO_FILE, 18, output_length=65536).status == wire.STATUS_SUCCESS
    out = server.smbclient("share", "get big /dev/null")        # (a client keeps to them)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("line", ["smb2 max read = 1000", "smb2 max write = 16777216", "smb2 max trans = 8M"])
def test_sizes_the_server_cannot_hold_to_stop_it(tmp_path, line):
    (tmp_path / "s").mkdir()
    conf = tmp_path / "smb.conf"
    conf.write_text(f"[global]\n{line}\n[s]\npath = {tmp_path / 's'}\n")
    with pytest.raises(ConfigError):
        load(str(conf))
