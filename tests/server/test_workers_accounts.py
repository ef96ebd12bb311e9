"""``smbring serve --workers 2`` as it is deployed: started as root, each user acting as a real
Unix account (the other worker tests map their user to root). What a worker asks the others in
the middle of a user's request must reach them while its thread acts as that user, who may not
read the server's own 0700 run directory:

- a DHnC reconnect under a new ClientGuid, served by the other worker, reclaims the detached
  durable open (smbtorture's smb2.durable-open.reopen2 and reopen1a-lease reconnect so);
- a CREATE naming an AppInstanceId closes the same account's earlier open of that instance on
  the other worker (smbtorture's smb2.durable-v2-open.app-instance).

Before, the list of the other workers was read as the user: empty, so no worker was asked, the
reconnect was answered OBJECT_NAME_NOT_FOUND (the open lost to its client) and the earlier
instance's open stayed."""
from __future__ import annotations

import os
import shutil
import struct
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "security"))
import test_workers_durable as durable  # noqa: E402
import test_workers_handoff as workers  # noqa: E402
from servers import free_port, spawn, stop, unix_accounts  # noqa: E402
from test_workers_reconnect import app_open, reads  # noqa: E402
from worker_servers import wait_for_workers, worker_of  # noqa: E402

from smbring.smb import wire  # noqa: E402

if os.geteuid() != 0 or not shutil.which("useradd"):
    pytest.skip("acting as a Unix account needs root (and useradd)", allow_module_level=True)

ACCOUNT = f"wacc{os.getpid() % 100000}"
PASSWORD = "Workers-pw1"


@pytest.fixture(scope="module")
def account():
    yield from unix_accounts(ACCOUNT)


@pytest.fixture
def server(account, tmp_path):
    uid, gid = account[ACCOUNT]
    top = Path(tempfile.mkdtemp(prefix="smbring-wacc-", dir="/tmp"))
    top.chmod(0o755)
    share = top / "share"
    share.mkdir()
    os.chown(share, uid, gid)
    (tmp_path / "run").mkdir(mode=0o700)
    control = str(tmp_path / "run" / "control")
    port = free_port()
    conf = tmp_path / "smb.conf"
    conf.write_text(f"[global]\nlisten = 127.0.0.1:{port}\nsmbring workers = 2\n"
                    f"[share]\npath = {share}\nread only = no\n")
    env = dict(os.environ, SMBRING_PASSDB=str(tmp_path / "passdb"))
    import subprocess
    subprocess.run([sys.executable, "-m", "smbring.cli", "user", "add", ACCOUNT, "--password-stdin"],
                   input=PASSWORD + "\n", text=True, check=True, env=env, capture_output=True)
    proc, port, log = spawn(tmp_path, "--config", str(conf), "--control-socket", control,
                            "--shutdown-timeout", "2", port=port, accounts=True)
    server = {"port": port, "share": share, "proc": proc, "log": log, "control": control,
              "run": tmp_path / "run", "workers": 2}
    try:
        wait_for_workers(server)
        yield server
    finally:
        stop(proc)
        shutil.rmtree(top, ignore_errors=True)


class AccountClient(durable.Client):
    """durable.Client logged on as ACCOUNT."""

    def __init__(self, server, avoid: int | None = None):
        self.guid = os.urandom(16)
        port = server["port"]
        if avoid is not None:
            self.raw = workers.connect_while_stopped(server, avoid, lambda: workers.connect(port, self.guid))
        else:
            self.raw = workers.connect(port, self.guid)
        self.tree = self.raw.tree(self.raw.logon(ACCOUNT, PASSWORD), "share")
        self.worker = worker_of(server, self.raw)
        assert avoid is None or self.worker != avoid


def acted_as_the_account(client: AccountClient) -> None:
    """A request whose file-system calls the worker makes as the account: its thread goes on
    acting as the account (it switches back only for the server's own work), as after any
    request of a user's; `worker_of` above, a request of the server's, left it root."""
    r = client.create("touched.txt")
    assert r.status == wire.STATUS_SUCCESS, r
    assert client.tree.request(wire.CLOSE, struct.pack("<HHI16s", 24, 0, 0, r.file_id)).status == 0


def test_a_durable_open_is_reclaimed_through_the_other_worker(server):
    holder = AccountClient(server)
    fid, reclaimer = durable.durable_open(holder, "kept.txt", "dhnq-batch")
    assert (server["share"] / "kept.txt").stat().st_uid != 0        # made as the account
    durable.lose(holder)
    again = AccountClient(server, avoid=holder.worker)
    acted_as_the_account(again)
    r = durable.reclaim_on(again, reclaimer, wait=0)
    assert r.status == wire.STATUS_SUCCESS, r
    assert r.file_id[:8] == fid[:8]
    assert durable.handle_works(again, r.file_id)
    again.close()


def test_an_app_instance_closes_its_earlier_open_on_the_other_worker(server):
    instance = os.urandom(16)
    first = AccountClient(server)
    r = app_open(first, "app.txt", instance)
    assert r.status == wire.STATUS_SUCCESS, r
    fid = r.file_id
    second = AccountClient(server, avoid=first.worker)
    acted_as_the_account(second)
    r = app_open(second, "app.txt", instance)
    assert r.status == wire.STATUS_SUCCESS, r
    assert durable.oplock_of(r) == durable.BATCH        # alone on the file
    assert reads(first, fid) == wire.STATUS_FILE_CLOSED
    first.close()
    second.close()


# smbtorture's reconnects (each makes a new connection, under a new ClientGuid, as soon as it
# has closed the old one): with two workers, half of them reach the other worker
TORTURE_RECONNECTS = ["smb2.durable-open.reopen2", "smb2.durable-open.reopen1a-lease",
                      "smb2.durable-v2-open.reopen1a-lease", "smb2.durable-v2-open.app-instance"]


@pytest.mark.skipif(shutil.which("smbtorture") is None, reason="smbtorture not installed (samba-testsuite)")
def test_smbtorture_reconnects_through_workers(server, tmp_path):
    import re
    import subprocess
    for _ in range(2):
        run = subprocess.run(["smbtorture", "//127.0.0.1/share", "-p", str(server["port"]),
                              "-U", f"{ACCOUNT}%{PASSWORD}", *TORTURE_RECONNECTS],
                             cwd=tmp_path, capture_output=True, text=True, timeout=300)
        passed = re.findall(r"^success: (\S+)", run.stdout, re.M)
        assert len(passed) == len(TORTURE_RECONNECTS), run.stdout[-3000:]
