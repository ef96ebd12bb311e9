"""Time Machine destinations (`fruit:time machine`, smb.time_machine) against `smbring serve
--config`: the AAPL reply offers FULL_SYNC there, and with `fruit:time machine max size` the
share's size is that bound, less what its sparse bundles' bands take (band size from each
Info.plist, times the bands), as Samba's vfs_fruit shows it; smbtorture's
vfs.fruit_timemachine runs against the same server."""
import os
import shutil
import struct
import subprocess

import pytest

from servers import PASSWORD, USER
from smbcore import create_contexts_of
from smbconf_server import smbconf  # noqa: F401  (the fixture)
from smbring.smb import aapl, wire
from test_aapl import ask, connected, query

TM = "read only = no\nvfs objects = fruit\nfruit:time machine = yes\nfruit:time machine max size = 32K"
SHARES = {"tm": TM, "mac": "read only = no\nvfs objects = fruit",
          "plain": "read only = no\nfruit:time machine = yes\nfruit:time machine max size = 32K"}
PLIST = b"<dict>\n        <key>band-size</key>\n        <integer>8192</integer>\n</dict>\n"


def size_info(tree) -> tuple[int, int, int, int]:
    fid = tree.open("", wire.GENERIC_READ, options=wire.FILE_DIRECTORY_FILE)
    r = tree.query_info(fid, wire.INFO_FILESYSTEM, 3)
    tree.close(fid)
    assert r.status == wire.STATUS_SUCCESS, r
    return struct.unpack("<QQII", r.buffer(2))


def test_full_sync_is_offered_and_the_size_is_the_bound_less_the_bands(smbconf):
    """32 KiB, two 8 KiB bands: 32 units of 1 KiB, 16 free; a band more or less shows at
    once; a bundle being made (no Info.plist yet, or no bands) counts for nothing; past the
    bound, nothing free. A fruit share without the option, and a share with it but without
    fruit, show the file system's size and no FULL_SYNC."""
    server = smbconf("", SHARES)
    root = server.root / "tm"
    c, tree = connected(server, "tm")
    with c:
        volume, = struct.unpack_from("<Q", create_contexts_of(ask(tree, query()))[b"AAPL"], 24)
        assert volume & aapl.FULL_SYNC
        assert size_info(tree) == (32, 32, 2, 512)
        bundle = root / "host.sparsebundle"
        (bundle / "bands").mkdir(parents=True)
        (bundle / "bands" / "0").write_bytes(b"")
        assert size_info(tree) == (32, 32, 2, 512)          # no Info.plist yet
        (bundle / "Info.plist").write_bytes(PLIST)
        (bundle / "bands" / "0").unlink()
        assert size_info(tree) == (32, 32, 2, 512)          # no bands yet
        for band in ("1", "2"):
            (bundle / "bands" / band).write_bytes(b"")
        assert size_info(tree) == (32, 16, 2, 512)
        (bundle / "bands" / "2").unlink()
        assert size_info(tree) == (32, 24, 2, 512)
        (root / "other.sparsebundle" / "bands").mkdir(parents=True)
        (root / "other.sparsebundle" / "Info.plist").write_bytes(PLIST)
        for band in range(5):
            (root / "other.sparsebundle" / "bands" / str(band)).write_bytes(b"")
        assert size_info(tree) == (32, 0, 2, 512)           # 48 KiB of bands: none free
        shutil.rmtree(root / "other.sparsebundle")
        assert size_info(tree) == (32, 24, 2, 512)
    sv = os.statvfs(server.root)
    for share in ("mac", "plain"):
        c, tree = connected(server, share)
        with c:
            r = ask(tree, query())
            if share == "mac":
                volume, = struct.unpack_from("<Q", create_contexts_of(r)[b"AAPL"], 24)
                assert not volume & aapl.FULL_SYNC
            total, _free, per_unit, sector = size_info(tree)
            assert (total, per_unit * sector) == (sv.f_blocks, sv.f_frsize)


def test_a_size_that_is_no_size_stops_the_server(tmp_path):
    from servers import free_port
    import sys
    conf = tmp_path / "smb.conf"
    (tmp_path / "s").mkdir()
    conf.write_text(f"[global]\nlisten = 127.0.0.1:{free_port()}\n[s]\npath = {tmp_path / 's'}\n"
                    "vfs objects = fruit\nfruit:time machine max size = 1X\n")
    r = subprocess.run([sys.executable, "-m", "smbring.cli", "testparm", str(conf)], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode != 0 and "fruit:time machine max size" in r.stderr and "1X" in r.stderr, r.stderr


@pytest.mark.skipif(not shutil.which("smbtorture"), reason="Samba's smbtorture is not installed")
def test_smbtorture_timemachine_volsize_passes(smbconf):
    server = smbconf("fruit:copyfile = yes", SHARES)    # (its AAPL check wants copyfile too)
    done = subprocess.run(["smbtorture", "//127.0.0.1/tm", "-p", str(server.port), "-U", f"{USER}%{PASSWORD}",
                           "vfs.fruit_timemachine"], capture_output=True, text=True, timeout=120)
    assert "success: Timemachine-volsize" in done.stdout, done.stdout[-3000:]


def test_durable_handles_are_turned_on_for_time_machine(tmp_path):
    """Time Machine reconnects to its open backup files: `durable handles = no` on its share
    is turned on, with a notice, as Samba does; on any other share it stays off."""
    from smbring.server.config import load
    conf = tmp_path / "smb.conf"
    (tmp_path / "s").mkdir()
    conf.write_text(f"[tm]\npath = {tmp_path / 's'}\nvfs objects = fruit\nfruit:time machine = yes\n"
                    f"durable handles = no\n[other]\npath = {tmp_path / 's'}\ndurable handles = no\n")
    cfg = load(str(conf))
    assert cfg.shares["tm"].durable_handles and cfg.shares["tm"].time_machine
    assert not cfg.shares["other"].durable_handles and not cfg.shares["other"].time_machine
    assert any("durable handles turned on" in n for n in cfg.notices)
