"""MS-DFS roots (`msdfs root = yes`, `host msdfs`), as Samba serves them: a symbolic link
whose target reads "msdfs:server\\share" refers clients to that share. Samba's smbclient
follows the referrals (it connects to their targets on port 445 whatever -p says, so the
server listens on a loopback address of its own, on port 445: root only); a raw client
checks the wire (capabilities, share flags, STATUS_PATH_NOT_COVERED, MS-DFSC referrals)."""
from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from servers import PASSWORD, USER, free_port, loopback_on_445_or_skip, spawn, stop
from smbring.smb import wire

sys.path.insert(0, str(Path(__file__).parents[1] / "security"))     # raw.py

FSCTL_DFS_GET_REFERRALS = 0x00060194
STATUS_PATH_NOT_COVERED = 0xC0000257
STATUS_NOT_FOUND = 0xC0000225
STATUS_FS_DRIVER_REQUIRED = 0xC000019C


def layout(tmp_path, address: str) -> None:
    root, target = tmp_path / "root", tmp_path / "target"
    (target / "sub").mkdir(parents=True)
    (target / "sub" / "file.txt").write_bytes(b"through dfs\n")
    (root / "dir").mkdir(parents=True)
    (root / "plain.txt").write_bytes(b"plain\n")
    os.symlink(f"msdfs:{address}\\target", root / "link")
    os.symlink(f"msdfs:{address}\\target,{address}\\target", root / "Two")
    os.symlink(f"msdfs:{address}\\target", root / "dir" / "deep")
    os.symlink("plain.txt", root / "ordinary")        # a link of another kind: no DFS link
    for directory, _dirs, files in os.walk(tmp_path):
        os.chmod(directory, 0o755)


def start(tmp_path, address: str, port: int | None, extra_global: str = ""):
    layout(tmp_path, address)
    conf = tmp_path / "smb.conf"
    port = port or free_port()
    listen = f"{address}:{port}"
    conf.write_text(f"[global]\nlisten = {listen}\nshutdown timeout = 1\n{extra_global}\n"
                    f"[dfsroot]\npath = {tmp_path / 'root'}\nread only = no\nmsdfs root = yes\n"
                    f"[target]\npath = {tmp_path / 'target'}\nread only = no\n"
                    f"[only]\npath = {tmp_path / 'root'}\nmsdfs root = yes\nvalid users = nobody-else\n")
    proc, port, _log = spawn(tmp_path, "--config", str(conf), port=port, host=address)
    return proc, port


@pytest.mark.skipif(not shutil.which("smbclient"), reason="Samba's smbclient is not installed")
def test_smbclient_follows_dfs_links(tmp_path):
    address = loopback_on_445_or_skip()
    proc, _port = start(tmp_path, address, 445)
    try:
        def smbclient(command: str) -> subprocess.CompletedProcess:
            return subprocess.run(["smbclient", f"//{address}/dfsroot", "-U", f"{USER}%{PASSWORD}", "-c", command],
                                  capture_output=True, text=True, timeout=60)
        listed = smbclient("ls")
        assert listed.returncode == 0, listed.stdout + listed.stderr
        kinds = {line.split()[0]: line.split()[1] for line in listed.stdout.splitlines()
                 if len(line.split()) > 2 and line.split()[0] in ("link", "Two", "plain.txt")}
        assert kinds == {"link": "D", "Two": "D", "plain.txt": "A"}, listed.stdout      # links as directories
        for path in ("link\\sub\\file.txt", "LINK\\sub\\file.txt", "Two\\sub\\file.txt", "dir\\deep\\sub\\file.txt"):
            got = smbclient(f"get {path} {tmp_path / 'got'}")
            assert got.returncode == 0, (path, got.stdout + got.stderr)
            assert (tmp_path / "got").read_bytes() == b"through dfs\n"
            (tmp_path / "got").unlink()
        inside = smbclient("cd link; ls")
        assert "sub" in inside.stdout, inside.stdout
        plain = smbclient(f"get plain.txt {tmp_path / 'plain'}")
        assert plain.returncode == 0 and (tmp_path / "plain").read_bytes() == b"plain\n"
    finally:
        stop(proc)


def referral_request(path: str, level: int = 4) -> bytes:
    return struct.pack("<H", level) + (path + "\0").encode("utf-16-le")


def parse_referrals(out: bytes) -> tuple[int, int, list[dict]]:
    """RESP_GET_DFS_REFERRAL: (PathConsumed, ReferralHeaderFlags, the referrals)."""
    consumed, count, flags = struct.unpack_from("<HHI", out)
    entries, at = [], 8
    for _ in range(count):
        version, size, server_type, _flags = struct.unpack_from("<HHHH", out, at)
        offsets = struct.unpack_from("<HHH", out, at + (16 if version == 2 else 12))
        path, _alternate, target = (utf16z(out, at + offset) for offset in offsets)
        entries.append({"version": version, "size": size, "server_type": server_type, "path": path,
                        "target": target})
        at += size
    return consumed, flags, entries


def utf16z(data: bytes, at: int) -> str:
    end = at
    while data[end:end + 2] != b"\0\0":
        end += 2
    return data[at:end].decode("utf-16-le")


def output(r) -> bytes:
    """An IOCTL response's output buffer."""
    offset, length = struct.unpack_from("<II", r.raw, 64 + 32)
    return r.raw[offset:offset + length]


def test_the_wire_as_ms_smb2_and_ms_dfsc_say(tmp_path):
    from raw import RawClient
    proc, port = start(tmp_path, "127.0.0.1", None)
    try:
        with RawClient(port) as c:
            c.negotiate()
            assert c.server["capabilities"] & wire.CAP_DFS
            session = c.logon(USER, PASSWORD)
            r = c.tree_connect(session, "dfsroot")
            flags, caps = struct.unpack_from("<II", r.raw, 64 + 4)
            assert flags & 0x3 == 0x3 and caps & 0x8, (hex(flags), hex(caps))
            r = c.tree_connect(session, "target")
            flags, caps = struct.unpack_from("<II", r.raw, 64 + 4)
            assert not flags & 0x3 and not caps & 0x8
            root = c.tree(session, "dfsroot")
            for name, dfs_flag in (("127.0.0.1\\dfsroot\\link\\sub\\file.txt", wire.FLAGS_DFS),
                                   ("link\\sub\\file.txt", 0), ("LINK", 0), ("dir\\deep", 0),
                                   ("127.0.0.1\\dfsroot\\Two", wire.FLAGS_DFS)):
                r = root.create(name, flags=dfs_flag)
                assert r.status == STATUS_PATH_NOT_COVERED, (name, r)
            r = root.create("127.0.0.1\\dfsroot\\plain.txt", flags=wire.FLAGS_DFS)
            assert r.status == wire.STATUS_SUCCESS, r
            root.close(r.file_id)
            r = root.create("ordinary")
            assert r.status != STATUS_PATH_NOT_COVERED
            ipc = c.tree(session, "IPC$")
            any_fid = b"\xff" * 16
            for level, version in ((1, 2), (2, 2), (3, 3), (4, 4), (9, 4)):
                r = ipc.ioctl(any_fid, FSCTL_DFS_GET_REFERRALS, referral_request("\\srv\\DfsRoot\\link\\sub\\f", level))
                assert r.status == wire.STATUS_SUCCESS, (level, r)
                consumed, hflags, [entry] = parse_referrals(output(r))
                assert consumed == len("\\srv\\DfsRoot\\link") * 2 and hflags == 0x2
                assert (entry["version"], entry["server_type"]) == (version, 0)
                assert entry["path"] == "\\srv\\DfsRoot\\link" and entry["target"] == "\\127.0.0.1\\target"
            r = ipc.ioctl(any_fid, FSCTL_DFS_GET_REFERRALS, referral_request("\\srv\\dfsroot\\Two"))
            _consumed, _flags, entries = parse_referrals(output(r))
            assert [e["target"] for e in entries] == ["\\127.0.0.1\\target"] * 2
            r = ipc.ioctl(any_fid, FSCTL_DFS_GET_REFERRALS, referral_request("\\srv\\dfsroot"))
            consumed, hflags, [entry] = parse_referrals(output(r))
            assert (consumed, hflags, entry["server_type"], entry["target"]) == (
                len("\\srv\\dfsroot") * 2, 0x3, 1, "\\srv\\dfsroot")
            for path in ("\\srv\\target\\sub", "\\srv\\dfsroot\\plain.txt", "\\srv\\dfsroot\\ordinary",
                         "\\srv\\nosuch", "\\srv\\only\\link", "\\srv"):
                r = ipc.ioctl(any_fid, FSCTL_DFS_GET_REFERRALS, referral_request(path))
                assert r.status == STATUS_NOT_FOUND, (path, r)
            r = ipc.ioctl(any_fid, FSCTL_DFS_GET_REFERRALS, b"\x04")
            assert r.status == wire.STATUS_INVALID_PARAMETER
            r = ipc.ioctl(any_fid, FSCTL_DFS_GET_REFERRALS, referral_request("\\srv\\dfsroot\\link"), max_output=20)
            assert r.status == wire.STATUS_BUFFER_TOO_SMALL
    finally:
        stop(proc)


def test_host_msdfs_no_offers_no_dfs(tmp_path):
    from raw import RawClient
    proc, port = start(tmp_path, "127.0.0.1", None, "host msdfs = no")
    try:
        with RawClient(port) as c:
            c.negotiate()
            assert not c.server["capabilities"] & wire.CAP_DFS
            session = c.logon(USER, PASSWORD)
            r = c.tree_connect(session, "dfsroot")
            assert not struct.unpack_from("<I", r.raw, 64 + 4)[0] & 0x3
            root = c.tree(session, "dfsroot")
            assert root.create("link\\sub\\file.txt").status != STATUS_PATH_NOT_COVERED
            r = c.tree(session, "IPC$").ioctl(b"\xff" * 16, FSCTL_DFS_GET_REFERRALS, referral_request("\\srv\\dfsroot"))
            assert r.status == STATUS_FS_DRIVER_REQUIRED
    finally:
        stop(proc)
