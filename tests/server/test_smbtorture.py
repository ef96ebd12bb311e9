"""Samba's smbtorture (Debian package samba-testsuite) against a real smbring server: each
suite must pass at least as many tests as it did when its floor was last raised, so a
regression in any of them fails CI. README lists the counts."""
import concurrent.futures
import re
import shutil
import subprocess

import pytest

from servers import PASSWORD, USER, spawn, stop

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
    "smb2.winattr": 1, "smb2.streams": 13, "smb2.fileid": 4, "smb2.charset": 3,
    # added 2026-12-01 (replay of requests on another channel or connection, and channels
    # bound to one session); lock, session, lease, durable-open, durable-v2-open, timestamps,
    # fileid and replay raised the same day
    "smb2.replay": 29, "smb2.multichannel": 4,
}

pytestmark = pytest.mark.skipif(shutil.which("smbtorture") is None,
                                reason="smbtorture not installed (Debian package samba-testsuite)")

# suites run at once, each against a server of its own: a suite spends most of its time
# waiting (break timeouts, reconnects: all of them, six at once, keep a quarter of one core busy),
# so six share the machine without crowding it
AT_ONCE = 6
# the suites that take longest (each 1 to 3 minutes, the others seconds) start first: started
# last, one of them would run on alone after the others are done
SLOWEST = ["smb2.lease", "smb2.durable-open", "smb2.replay", "smb2.oplock", "smb2.notify",
           "smb2.multichannel", "smb2.timestamps", "smb2.dir", "smb2.create", "smb2.compound_find"]


def run_suite(root, suite: str) -> dict:
    """One suite against a fresh server sharing root/share: what passed and failed, and
    whether the server survived without a traceback."""
    share = root / "share"
    share.mkdir()
    proc, port, log = spawn(root, str(share), "--share", "share")
    try:
        run = subprocess.run(
            ["smbtorture", r"//127.0.0.1/share", "-p", str(port), "-U", f"{USER}%{PASSWORD}",
             "--fullname", "--format=subunit", suite],
            cwd=root, capture_output=True, text=True, timeout=600)
        alive = proc.poll() is None
    finally:
        stop(proc)
    results = re.findall(r"^(success|failure|error|skip): (\S+)", run.stdout, re.M)
    return {"results": results, "output": run.stdout[-2000:] + run.stderr[-2000:], "alive": alive,
            "traceback": "Traceback" in log.read_text()}


@pytest.fixture(scope="module")
def outcomes(request, tmp_path_factory):
    """The suites this session selected, run AT_ONCE at a time: suite -> run_suite's dict."""
    chosen = [item.callspec.params["suite"] for item in request.session.items
              if item.originalname == "test_smbtorture_suite" and hasattr(item, "callspec")]
    in_order = sorted(dict.fromkeys(chosen), key=lambda s: SLOWEST.index(s) if s in SLOWEST else len(SLOWEST))
    with concurrent.futures.ThreadPoolExecutor(AT_ONCE) as pool:
        futures = {suite: pool.submit(run_suite, tmp_path_factory.mktemp(suite.replace(".", "-")), suite)
                   for suite in in_order}
        return {suite: future.result() for suite, future in futures.items()}


@pytest.mark.parametrize("suite", list(FLOORS))
def test_smbtorture_suite(outcomes, suite):
    outcome = outcomes[suite]
    results = outcome["results"]
    passed = [name for kind, name in results if kind == "success"]
    failed = [name for kind, name in results if kind in ("failure", "error")]
    assert results, outcome["output"]
    assert len(passed) >= FLOORS[suite], f"{suite}: {len(passed)} passed, failing: {failed}"
    assert outcome["alive"], "the server died"
    assert not outcome["traceback"], "a traceback in the server's log"
