"""Samba's smbtorture (Debian package samba-testsuite) against a real smbring server: each
suite must pass at least as many tests as it did when its floor was last raised, so a
regression in any of them fails CI. README lists the counts."""
import re
import shutil
import subprocess

import pytest

from servers import PASSWORD, USER

# suite -> tests passing on 2026-11-24 (104 in all; smbd passes 95 of these 112, impacket 15)
FLOORS = {
    "smb2.connect": 1, "smb2.read": 4, "smb2.rw": 3, "smb2.create": 14, "smb2.dir": 8,
    "smb2.getinfo": 8, "smb2.setinfo": 1, "smb2.rename": 11, "smb2.lock": 22, "smb2.compound": 19,
    "smb2.credits": 3, "smb2.delete-on-close-perms": 9, "smb2.sharemode": 3,
    # raised 2026-12-01 (smbd 4.17 here: tcon 1, mkdir 1, ioctl 42, oplock 38, session 55,
    # notify 17, lease 25, durable-open 20, durable-v2-open 14, acls 2)
    "smb2.tcon": 1, "smb2.mkdir": 1, "smb2.ioctl": 43, "smb2.oplock": 41, "smb2.session": 56,
    "smb2.notify": 21, "smb2.lease": 36, "smb2.durable-open": 23, "smb2.durable-v2-open": 15,
    "smb2.acls": 13, "smb2.timestamps": 14, "smb2.compound_find": 3, "smb2.deny": 2,
    "smb2.compound_async": 2, "smb2.session-id": 1, "smb2.sdread": 1, "smb2.openattr": 1,
    "smb2.winattr": 1, "smb2.streams": 5, "smb2.fileid": 4, "smb2.charset": 3,
    # added 2026-12-01 (replay of requests on another channel or connection, and channels
    # bound to one session); lock, session, lease, durable-open, durable-v2-open, timestamps,
    # fileid and replay raised the same day
    "smb2.replay": 29, "smb2.multichannel": 4,
}

pytestmark = pytest.mark.skipif(shutil.which("smbtorture") is None,
                                reason="smbtorture not installed (Debian package samba-testsuite)")


@pytest.mark.parametrize("suite", list(FLOORS))
def test_smbtorture_suite(server, tmp_path, suite):
    run = subprocess.run(
        ["smbtorture", r"//127.0.0.1/share", "-p", str(server["port"]), "-U", f"{USER}%{PASSWORD}",
         "--fullname", "--format=subunit", suite],
        cwd=tmp_path, capture_output=True, text=True, timeout=600)
    results = re.findall(r"^(success|failure|error|skip): (\S+)", run.stdout, re.M)
    passed = [name for kind, name in results if kind == "success"]
    failed = [name for kind, name in results if kind in ("failure", "error")]
    assert results, run.stdout[-2000:] + run.stderr[-2000:]
    assert len(passed) >= FLOORS[suite], f"{suite}: {len(passed)} passed, failing: {failed}"
    assert server["proc"].poll() is None, "the server died"
    assert "Traceback" not in server["log"].read_text()
