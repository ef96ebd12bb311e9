"""Share listing with real clients against a real server: smbclient -L, rpcclient (srvsvc and
wkssvc), impacket's listShares and `net rpc share list`, through the IPC$ pipes."""
import shutil
import subprocess

import pytest
from servers import (PASSWORD, USER, free_port, spawn, stop,
                     loopback_on_445_or_skip as loopback_on_445)

SHARES = """
[data]
    path = {root}/data
    comment = Team data
    read only = no
[pub]
    path = {root}/pub
    comment = Public files
    guest ok = yes
[admin$]
    path = {root}/data
    comment = Hidden by its name
[secret]
    path = {root}/data
    comment = Not listed
    browseable = no
[staff]
    path = {root}/data
    comment = Staff only
    valid users = somebody
"""
LISTED = {"data": "Team data", "pub": "Public files", "admin$": "Hidden by its name", "staff": "Staff only",
          "IPC$": "IPC Service (The filer)"}


def configured(tmp_path, listen: str, extra: str = ""):
    for d in ("data", "pub"):
        (tmp_path / d).mkdir(exist_ok=True)
    conf = tmp_path / "smb.conf"
    conf.write_text(f"[global]\n    listen = {listen}\n    server string = The filer\n    netbios name = filer\n"
                    f"    workgroup = home\n{extra}" + SHARES.format(root=tmp_path))
    return conf


@pytest.fixture
def served(tmp_path):
    port = free_port()
    proc, port, log = spawn(tmp_path, "--config", str(configured(tmp_path, f"127.0.0.1:{port}")), port=port)
    yield {"port": port, "proc": proc, "log": log}
    stop(proc)


def need(tool: str) -> None:
    if not shutil.which(tool):
        pytest.skip(f"{tool} is not installed")


def run(*args, timeout=60):
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)


def listing(output: str) -> dict[str, tuple[str, str]]:
    """smbclient -L's table: name -> (type, comment)."""
    rows = {}
    for line in output.splitlines():
        parts = line.strip().split(None, 2)
        if line.startswith("\t") and len(parts) >= 2 and parts[1] in ("Disk", "IPC", "Printer"):
            rows[parts[0]] = (parts[1], parts[2] if len(parts) > 2 else "")
    return rows


def smbclient_list(port: int, *creds: str, extra=()):
    need("smbclient")
    return run("smbclient", "-L", "//127.0.0.1", "-p", str(port), *creds, *extra)


def test_smbclient_lists_the_browseable_shares_with_their_comments(served):
    out = smbclient_list(served["port"], "-U", f"{USER}%{PASSWORD}")
    assert out.returncode == 0, out.stdout + out.stderr
    rows = listing(out.stdout)
    assert rows == {name: ("IPC" if name == "IPC$" else "Disk", comment) for name, comment in LISTED.items()}
    assert "secret" not in out.stdout
    assert "Traceback" not in served["log"].read_text()


@pytest.mark.parametrize("protection", [["--client-protection=encrypt"], ["--client-protection=sign"],
                                        ["-m", "SMB2_02"], ["-m", "SMB3_00"]])
def test_smbclient_lists_over_signed_encrypted_and_older_dialects(served, protection):
    out = smbclient_list(served["port"], "-U", f"{USER}%{PASSWORD}", extra=protection)
    assert out.returncode == 0, out.stdout + out.stderr
    assert set(listing(out.stdout)) == set(LISTED)


def test_anonymous_lists_what_samba_shows_with_restrict_anonymous_0(served):
    """A guest ok share lets anonymous log on; like Samba (restrict anonymous = 0), the list is
    every browseable share, not only the ones a guest may enter."""
    out = smbclient_list(served["port"], "-N")
    assert out.returncode == 0, out.stdout + out.stderr
    assert set(listing(out.stdout)) == set(LISTED)


def test_restrict_anonymous_hides_the_list_from_anonymous_only(tmp_path):
    port = free_port()
    conf = configured(tmp_path, f"127.0.0.1:{port}", "    restrict anonymous = 1\n")
    proc, port, _log = spawn(tmp_path, "--config", str(conf), port=port)
    try:
        assert listing(smbclient_list(port, "-N").stdout) == {}
        assert set(listing(smbclient_list(port, "-U", f"{USER}%{PASSWORD}").stdout)) == set(LISTED)
    finally:
        stop(proc)


def rpcclient(port: int, command: str, *creds: str):
    need("rpcclient")
    return run("rpcclient", "-p", str(port), *(creds or ("-U", f"{USER}%{PASSWORD}")), "-c", command, "127.0.0.1")


def test_rpcclient_netshareenumall(served):
    out = rpcclient(served["port"], "netshareenumall")
    assert out.returncode == 0, out.stdout + out.stderr
    names = [line.split(":", 1)[1].strip() for line in out.stdout.splitlines() if line.startswith("netname:")]
    assert names == list(LISTED)
    assert "\tremark:\tTeam data" in out.stdout
    assert f"\tpath:\tC:{str(served['log'].parent / 'data').replace('/', chr(92))}" in out.stdout


def test_rpcclient_netsharegetinfo(served):
    out = rpcclient(served["port"], "netsharegetinfo secret")       # found, though not listed
    assert out.returncode == 0, out.stdout + out.stderr
    assert "netname: secret" in out.stdout and "\tremark:\tNot listed" in out.stdout
    assert "S-1-1-0" in out.stdout                                   # level 502: its descriptor
    out = rpcclient(served["port"], "netsharegetinfo nosuch")
    assert "WERR_INVALID_NAME" in out.stdout + out.stderr


def test_rpcclient_srvinfo_and_wkssvc(served):
    out = rpcclient(served["port"], "srvinfo")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "FILER" in out.stdout and "The filer" in out.stdout
    assert "platform_id     :\t500" in out.stdout and "os version      :\t6.1" in out.stdout
    assert rpcclient(served["port"], "wkssvc_wkstagetinfo").returncode == 0
    out = rpcclient(served["port"], "wkssvc_wkstagetinfo 102")
    assert "WERR_ACCESS_DENIED" in out.stdout + out.stderr          # administrators only, as Samba


def test_rpcclient_anonymous(served):
    out = rpcclient(served["port"], "netshareenumall", "-U%")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "netname: staff" in out.stdout


def test_impacket_list_shares(served):
    smbconnection = pytest.importorskip("impacket.smbconnection")
    conn = smbconnection.SMBConnection("127.0.0.1", "127.0.0.1", sess_port=served["port"])
    try:
        conn.login(USER, PASSWORD, domain="")
        shares = {s["shi1_netname"][:-1]: (s["shi1_type"], s["shi1_remark"][:-1]) for s in conn.listShares()}
    finally:
        conn.close()
    assert shares == {name: (0x80000003 if name == "IPC$" else 0, comment) for name, comment in LISTED.items()}




def test_net_rpc_share_list(tmp_path):
    need("net")
    address = loopback_on_445()
    conf = configured(tmp_path, f"{address}:445")
    proc, _port, _log = spawn(tmp_path, "--config", str(conf), port=445, host=address)
    try:
        out = run("net", "rpc", "share", "list", "-S", address, "-U", f"{USER}%{PASSWORD}")
    finally:
        stop(proc)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.split() == list(LISTED)


def test_the_listing_options_are_read(tmp_path):
    from smbring.server.config import load
    conf = configured(tmp_path, "127.0.0.1:1", "    restrict anonymous = 1\n    max open pipes = 2\n")
    conf.write_text(conf.read_text() + f"[old]\n    path = {tmp_path}\n    browsable = no\n")
    cfg = load(str(conf))
    assert not cfg.warnings
    assert (cfg.shares["data"].comment, cfg.shares["data"].browseable) == ("Team data", True)
    assert not cfg.shares["secret"].browseable and not cfg.shares["old"].browseable
    info = cfg.server_info
    assert (info.name, info.comment, info.workgroup, info.restrict_anonymous) == ("FILER", "The filer", "HOME", 1)
    assert cfg.limits.max_open_pipes == 2


@pytest.mark.parametrize("line", ["restrict anonymous = 3", "restrict anonymous = yes",
                                  "netbios name = a-name-longer-than-15", "[pub]\nbrowseable = perhaps"])
def test_bad_listing_options_are_refused(tmp_path, line):
    from smbring.server.config import ConfigError, load
    conf = tmp_path / "smb.conf"
    conf.write_text(f"[global]\n{line}\n[pub]\npath = {tmp_path}\n" if not line.startswith("[")
                    else f"{line}\npath = {tmp_path}\n")
    with pytest.raises(ConfigError):
        load(str(conf))
