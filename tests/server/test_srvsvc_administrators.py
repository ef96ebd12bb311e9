"""srvsvc's calls for administrators (Windows' Computer Management, "Shared Folders":
Sessions, Open Files; rpcclient's netsessenum, netfileenum, netconnenum): who is logged on,
to which shares, with which files open, for a session acting as root (as Samba grants them
to BUILTIN\\Administrators, which root's token holds); refused to anyone else. The time of
day, the disks and NetrShareCheck, for any caller. Samba's own Python bindings and
smbtorture's rpc.srvsvc against `smbring serve`."""
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from servers import PASSWORD, USER, spawn, stop
from smbconf_server import smbconf  # noqa: F401  (the fixture)

CLIENT = Path(__file__).with_name("srvsvc_client.py")
ACCESS_DENIED = 5

pytestmark = pytest.mark.skipif(not shutil.which("smbclient"), reason="Samba's smbclient is not installed")


def samba_client(port: int, share_path: Path, user: str = USER, password: str = PASSWORD, act: bool = False) -> dict:
    if not os.path.exists("/usr/bin/python3"):
        pytest.skip("no system python3")
    done = subprocess.run(["/usr/bin/python3", str(CLIENT), str(port), user, password,
                           "C:" + str(share_path).replace("/", "\\"), *(["act"] if act else [])],
                          capture_output=True, text=True, timeout=120)
    if "No module named" in done.stderr:
        pytest.skip("python3-samba is not installed")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def holding_open(port: int, name: str):
    """smbclient keeping `name` open on [share] until told to quit."""
    holder = subprocess.Popen(["smbclient", "//127.0.0.1/share", "-p", str(port), "-U", f"{USER}%{PASSWORD}"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    holder.stdin.write(f"open {name}\n")
    holder.stdin.flush()
    return holder


@pytest.mark.skipif(os.geteuid() != 0, reason="an administrator's session acts as root")
def test_an_administrator_sees_who_is_connected_and_what_is_open(tmp_path):
    share = tmp_path / "share"
    share.mkdir()
    (share / "held.txt").write_text("x")
    proc, port, _log = spawn(tmp_path, str(share), "--share", "share")
    holder = holding_open(port, "held.txt")
    try:
        deadline = time.monotonic() + 30
        while True:     # (until the holder's open is in)
            seen = samba_client(port, share)
            if any(f["path"].endswith("\\held.txt") for f in seen["files3"]) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        # once more: the client asks for the sessions before the files, so the look that
        # first saw the open may have counted the holder's session before the open was made
        seen = samba_client(port, share)
    finally:
        holder.communicate("quit\n", timeout=30)
        stop(proc)
    # two sessions: the holder's and the caller's own
    assert [s["client"] for s in seen["sessions0"]] == ["127.0.0.1", "127.0.0.1"]
    for level in ("sessions1", "sessions2", "sessions502"):
        assert [s["user"] for s in seen[level]] == [USER, USER], seen[level]
        assert all(s["num_open"] >= 1 and s["user_flags"] & 0x1 == 0 for s in seen[level])
    assert seen["sessions502"][0]["client_type"].startswith("SMB ")
    assert len(seen["sessions10"]) == 2 and len(seen["sessions_of_user"]) == 2
    assert seen["sessions_of_nobody"] == [] and seen["sessions_of_other_client"] == []
    assert len(seen["sessions_of_client"]) == 2
    [held] = [f for f in seen["files3"] if f["path"].endswith("\\held.txt")]
    assert held["path"] == "C:" + str(share / "held.txt").replace("/", "\\")
    assert held["user"] == USER and held["permissions"] & 0x1 and held["num_locks"] == 0
    assert held["fid"] in [f["fid"] for f in seen["files2"]]
    assert held in seen["files_below_share"] and seen["files_elsewhere"] == []
    [to_share] = seen["connections_to_share"]
    assert (to_share["share"], to_share["user"], to_share["conn_type"]) == ("127.0.0.1", USER, 0)
    assert to_share["num_open"] == 1
    assert sorted(c["share"] for c in seen["connections_from_client"]) == ["IPC$", "share"]
    assert seen["connections_to_nothing"] == {"error": [2310, "WERR_NERR_NETNAMENOTFOUND"]}
    assert abs(seen["time_of_day"]["elapsed"] - time.time()) < 120
    assert seen["disks"] == {"total": 1, "disks": ["C:", ""]}
    assert seen["share_check"] == 0        # STYPE_DISKTREE
    assert seen["share_check_elsewhere"] == {"error": [2311, "WERR_NERR_DEVICENOTSHARED"]}


@pytest.mark.skipif(os.geteuid() != 0, reason="the caller acts as an account of its own")
def test_anyone_else_learns_nothing_of_other_sessions(smbconf):
    """A session acting as an ordinary account (not root) is refused every list, as Samba
    refuses one without BUILTIN\\Administrators; the time, the disks and the share check
    are anyone's."""
    server = smbconf("", {"share": "read only = no"}, accounts=True)
    seen = samba_client(server.port, server.root / "share")
    for call in ("sessions0", "sessions1", "sessions502", "sessions10", "files2", "files3",
                 "connections_to_share", "connections_from_client"):
        assert seen[call] == {"error": [ACCESS_DENIED, "WERR_ACCESS_DENIED"]}, call
    assert seen["disks"]["disks"] == ["C:", ""] and "elapsed" in seen["time_of_day"]
    assert seen["share_check"] == 0


@pytest.mark.skipif(not shutil.which("smbtorture") or os.geteuid() != 0,
                    reason="Samba's smbtorture is not installed, or not root")
def test_smbtorture_rpc_srvsvc(tmp_path):
    """The tests of smbtorture's rpc.srvsvc that pass (smbd 4.17 passes 7 of them here):
    NetShareEnum wants an error for a level Windows has and Samba and smbring serve,
    NetTransportEnum and NetCharDev* what no Unix server has, the anonymous ones a refusal
    that `restrict anonymous` gives (off by default, as in Samba)."""
    share = tmp_path / "share"
    share.mkdir()
    proc, port, _log = spawn(tmp_path, str(share), "--share", "share")
    try:
        done = subprocess.run(["smbtorture", "ncacn_np:127.0.0.1", "-U", f"{USER}%{PASSWORD}",
                               f"--option=smb ports={port}", "rpc.srvsvc"],
                              capture_output=True, text=True, timeout=300)
    finally:
        stop(proc)
    passed = {line.split(".", 1)[1] for line in done.stdout.splitlines()
              if line.startswith("success: srvsvc (admin access).")}
    assert passed >= {"NetSrvGetInfo", "NetShareGetInfo", "NetShareEnumAll", "NetSessEnum", "NetRemoteTOD",
                      "NetNameValidate", "NetFileEnum", "NetDiskEnum", "NetConnEnum"}, done.stdout[-3000:]


@pytest.mark.skipif(os.geteuid() != 0, reason="an administrator's session acts as root")
def test_an_administrator_closes_a_file_and_ends_sessions(tmp_path):
    """NetrFileClose: the holder's handle is gone (its next use: STATUS_FILE_CLOSED), its
    share mode with it (another client may open the file to write); NetrSessionDel of the
    user: every session of theirs ends but the caller's own (the holder's next request:
    STATUS_USER_SESSION_DELETED)."""
    share = tmp_path / "share"
    share.mkdir()
    (share / "held.txt").write_text("x")
    (share / "other.txt").write_text("y")
    proc, port, _log = spawn(tmp_path, str(share), "--share", "share")
    holder = holding_open(port, "held.txt")
    second = holding_open(port, "other.txt")
    try:
        deadline = time.monotonic() + 30
        while not any(f["path"].endswith("\\held.txt") for f in samba_client(port, share)["files3"]):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        done = samba_client(port, share, act=True)
        holder.stdin.write("close 1\n")
        holder.stdin.flush()
        second.stdin.write("ls\n")
        second.stdin.flush()
        held_out, _ = holder.communicate("quit\n", timeout=30)
        second_out, _ = second.communicate("quit\n", timeout=30)
    finally:
        stop(proc)
    # (each client's first file has the same FileId's volatile half: their ids differ all the same)
    assert sorted(f["path"].rsplit("\\", 1)[1] for f in done["files3"]) == ["held.txt", "other.txt"]
    assert len({f["fid"] for f in done["files3"]}) == 2
    assert done["close_held"] is None, done
    assert done["close_held_again"] == {"error": [2314, "WERR_NERR_FILEIDNOTFOUND"]}
    assert done["end_sessions_of_user"] is None
    assert done["end_sessions_of_other_client"] == {"error": [2312, "WERR_NERR_CLIENTNAMENOTFOUND"]}
    assert done["end_nothing_named"] == {"error": [87, "WERR_INVALID_PARAMETER"]}
    assert len(done["sessions_after"]) == 1          # the caller's own, spared
    assert "NT_STATUS_FILE_CLOSED" in held_out or "NT_STATUS_USER_SESSION_DELETED" in held_out, held_out
    assert "NT_STATUS_USER_SESSION_DELETED" in second_out, second_out


@pytest.mark.skipif(os.geteuid() != 0, reason="the caller acts as an account of its own")
def test_anyone_else_may_close_nothing(smbconf):
    server = smbconf("", {"share": "read only = no"}, accounts=True)
    done = samba_client(server.port, server.root / "share", act=True)
    for call in ("close_held", "end_sessions_of_user", "end_sessions_of_other_client"):
        assert done[call] == {"error": [ACCESS_DENIED, "WERR_ACCESS_DENIED"]}, call


@pytest.mark.skipif(os.geteuid() != 0, reason="a guest's session acts as root here")
def test_an_anonymous_session_acting_as_root_is_no_administrator(tmp_path):
    """Where guests act as root (the tests' servers map them so), an anonymous caller is
    still refused every list and every close: a guest is never an administrator."""
    share = tmp_path / "share"
    share.mkdir()
    proc, port, _log = spawn(tmp_path, str(share), "--share", "share")
    try:
        done = samba_client(port, share, user="", password="", act=True)
    finally:
        stop(proc)
    for call in ("sessions0", "sessions502", "files3", "connections_from_client", "close_held",
                 "end_sessions_of_other_client"):
        assert done[call] == {"error": [ACCESS_DENIED, "WERR_ACCESS_DENIED"]}, (call, done[call])
