"""A real Samba smbd for tests (root only): the `samba_server` fixture, which the client's
tests and the server's (what smbring takes over from Samba) share."""
import os
import signal
import subprocess

import pytest

from servers import PASSWORD, free_port, wait_listening
from smbring.bench.smbclient import smbd_global, wait_smbd_ready

SMBD = "/usr/sbin/smbd"
# its accounts are its passdb's alone: never a winbindd's (a test's domain controller runs one
# at the default socket, and its ids were taken for this smbd's users, refusing their logons)
NO_WINBINDD = dict(os.environ, _NO_WINBINDD="1")
SAMBA_USER = "root"          # Samba's users need a Unix account; root has one everywhere


def samba_conf(d, extra: str = "", shares: str = "") -> str:
    """smb.conf of the tests' smbd: its state under d, its share d/share; `extra`: more
    [global] lines; `shares`: sections after [share]."""
    return smbd_global(str(d), log_file=f"{d}/log/log.%m", log_level=1,
                       extra="    netbios name = CLIENTTEST\n" + extra) + f"""
[share]
    path = {d}/share
    read only = no
{shares}"""


@pytest.fixture
def samba_server(tmp_path):
    """Samba's smbd on a free loopback port (root only), its state and share in tmp_path;
    always stopped. make(extra, shares) adds [global] lines, and share sections after
    [share] ("{d}" in them: the server's directory, its share tmp_path/samba/share)."""
    if os.geteuid() != 0 or not os.path.exists(SMBD):
        pytest.skip("Samba's smbd (run as root) is needed")
    procs = []

    def make(extra: str = "", shares: str = ""):
        d = tmp_path / "samba"
        for sub in ("log", "share"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        conf = d / "smb.conf"
        conf.write_text(samba_conf(d, extra, shares.replace("{d}", str(d))))
        subprocess.run(["smbpasswd", "-c", str(conf), "-a", "-s", SAMBA_USER],
                       input=f"{PASSWORD}\n{PASSWORD}\n", text=True, check=True, capture_output=True)
        port = free_port()
        log = open(d / "log" / "smbd.out", "w")
        # smbd makes itself a process group (no --no-process-group): its SIGTERM to the
        # group reaches its children, never this test's process
        proc = subprocess.Popen([SMBD, "--foreground", "--debug-stdout", "-s", str(conf), "-p", str(port)],
                                stdout=log, stderr=subprocess.STDOUT, env=NO_WINBINDD)
        procs.append((proc, log))
        wait_listening(proc, port, d / "log" / "smbd.out")
        wait_smbd_ready(str(d / "lock"))
        return {"host": "127.0.0.1", "port": port, "share": d / "share", "name": "share",
                "user": SAMBA_USER, "password": PASSWORD, "log": d / "log"}
    yield make
    for proc, log in procs:
        _stop_smbd(proc)
        log.close()


def _stop_smbd(proc) -> None:
    try:
        group = os.getpgid(proc.pid)
    except ProcessLookupError:
        group = None
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    # the connection children of this smbd, if any outlived it (its own group, never ours)
    if group is not None and group == proc.pid and group != os.getpgid(0):
        try:
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass
