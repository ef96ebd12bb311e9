"""Writes the RPC fuzzer's seeds (tests/fuzz/rpc_corpus) from what real clients send: Samba's
rpcclient runs its srvsvc, wkssvc and lsarpc commands against `smbring serve`, whose pipes
record every write; impacket writes the calls rpcclient has no command for (NetrFileClose,
NetrShareCheck, NetrShareEnumSticky). Each recorded pipe becomes three seeds, its writes as
an administrator, a user and a guest sent them (rpc_harness's input format).

    .venv/bin/python tests/fuzz/make_rpc_corpus.py [OUTPUT_DIR]     # default: tests/fuzz/rpc_corpus
"""
from __future__ import annotations

import hashlib
import os
import pathlib
import shutil
import struct
import subprocess
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent), str(HERE.parent / "smb")]

import rpc_harness  # noqa: E402

COMMANDS = (
    "srvinfo", "srvinfo 102", "netshareenum", "netshareenumall", "netshareenum 2", "netshareenum 502",
    "netsharegetinfo share", "netsharegetinfo share 2", "netsharegetinfo share 502",
    "netsharegetinfo share 1005", "netsharegetinfo nosuch", "netfileenum", "netfileenum 2",
    "netsessenum", "netsessenum 0", "netsessenum 1", "netsessenum 2", "netsessenum 10",
    "netsessenum 502", "netsessdel 127.0.0.1 alice", "netconnenum", "netconnenum 0", "netdiskenum",
    "netremotetod", "lsaquery", "lookupnames root", "lookupnames nobody root",
    "lookupsids S-1-5-32-544 S-1-1-0 S-1-22-1-0", "lookupnames4 root", "lookupsids3 S-1-1-0",
    "lookupsids_level 1 S-1-1-0", "lookupnames_level 1 root", "getusername", "lsaenumsid",
    "wkssvc_wkstagetinfo",
)
# what the capturing server's pipes run first: each write (W) and read (R) recorded, per
# pipe, in RPC_CAPTURE
HOOK = '''
import os
from smbring.smb.rpc import endpoint as _endpoint
_write, _read, _pipes = _endpoint.Endpoint.write, _endpoint.Endpoint.read, {}
def _record(pipe, kind, data):
    n = _pipes.setdefault(id(pipe), len(_pipes))
    with open(f"{os.environ['RPC_CAPTURE']}/{os.getpid()}-{n:04}-{pipe.interface.pipe}", "ab") as f:
        f.write(kind + len(data).to_bytes(4, "little") + bytes(data))
def write(self, data):
    _record(self, b"W", data)
    return _write(self, data)
def read(self, limit):
    data = _read(self, limit)
    _record(self, b"R", data)
    return data
_endpoint.Endpoint.write, _endpoint.Endpoint.read = write, read
'''


def recorded(top: pathlib.Path) -> list[tuple[str, list[bytes]]]:
    """(interface, the writes) of every pipe rpcclient opened, each command on a pipe of its own."""
    from servers import PASSWORD, USER, spawn, stop
    hook, capture, share = top / "hook", top / "capture", top / "share"
    for d in (hook, capture, share):
        d.mkdir()
    (hook / "sitecustomize.py").write_text(HOOK)
    (share / "a.txt").write_text("a file")
    saved = dict(os.environ)
    os.environ.update(RPC_CAPTURE=str(capture), PYTHONPATH=f"{hook}:{os.environ.get('PYTHONPATH', '')}")
    try:
        proc, port, _log = spawn(top, str(share), "--share", "share")
    finally:
        os.environ.clear()
        os.environ.update(saved)
    try:
        for command in COMMANDS:
            subprocess.run(["rpcclient", "-p", str(port), "-U", f"{USER}%{PASSWORD}", "-c", command,
                            "127.0.0.1"], capture_output=True, timeout=60)
    finally:
        stop(proc)
    pipes = []
    for path in sorted(capture.iterdir()):
        data, writes, handles = path.read_bytes(), [], []
        while data:
            kind, n = data[:1], int.from_bytes(data[1:5], "little")
            piece = data[5:5 + n]
            data = data[5 + n:]
            if kind == b"R":
                handle = rpc_harness.handed_out(piece)
                handles += [handle] if handle else []
                continue
            for handle in handles:      # (this run's handles: any input's, in the harness)
                piece = piece.replace(handle, rpc_harness.HANDLE)
            writes.append(piece)
        pipes.append((path.name.rsplit("-", 1)[1], writes))
    return pipes


def written_by_impacket() -> list[tuple[str, list[bytes]]]:
    """srvsvc's calls rpcclient cannot make, bound and called as rpc_client builds them."""
    from impacket.dcerpc.v5 import srvs
    from rpc_client import bind_pdu, request_pdu, share_enum
    calls = []
    close = srvs.NetrFileClose()
    close["ServerName"], close["FileId"] = "\\\\server\x00", 7
    calls.append((11, close.getData()))
    check = srvs.NetrShareCheck()
    check["ServerName"], check["Device"] = "\\\\server\x00", "C:\\srv\\share\x00"
    calls.append((20, check.getData()))
    calls.append((36, share_enum(1, opnum=36)))
    return [("srvsvc", [bind_pdu(), request_pdu(opnum, stub)]) for opnum, stub in calls]


def later_lsa_versions(pipes) -> list[tuple[str, list[bytes]]]:
    """lsarpc's calls rpcclient makes only in their first versions, in their later ones:
    LsarOpenPolicy2 (its SystemName a string where LsarOpenPolicy's is one character), then
    LsarLookupNames2 and 3 and LsarLookupSids2 of the handle it hands out (the first
    versions' stub data, then LookupOptions and ClientRevision)."""
    from smbring.smb.rpc import lsarpc
    from rpc_client import request_pdu
    stubs = {}
    for interface, writes in pipes:
        for w in writes:
            if interface == "lsarpc" and len(w) >= 24 and w[2] == 0:
                stubs.setdefault(struct.unpack_from("<H", w, 22)[0], w[24:])
    system_name = "\\\\h\0".encode("utf-16-le")
    open2 = struct.pack("<IIII", 0x20000, 4, 0, 4) + system_name + stubs[6][8:]
    more = struct.pack("<II", 0, 2)
    calls = [(44, open2), (58, stubs[14] + more), (68, stubs[14] + more), (57, stubs[15] + more)]
    return [("lsarpc", [rpc_harness.bind_for(lsarpc.INTERFACE)]
             + [request_pdu(opnum, stub, call_id=2 + i) for i, (opnum, stub) in enumerate(calls)])]


def main() -> int:
    out = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "rpc_corpus"
    out.mkdir(exist_ok=True)
    top = pathlib.Path(tempfile.mkdtemp(prefix="rpc-corpus-"))
    top.chmod(0o755)
    try:
        pipes = recorded(top)
        pipes += written_by_impacket() + later_lsa_versions(pipes)
    finally:
        shutil.rmtree(top, ignore_errors=True)
    written = 0
    for interface, writes in pipes:
        for caller in ("administrator", "user", "guest"):
            mode = (rpc_harness.RAW | rpc_harness.INTERFACES.index(interface)
                    | rpc_harness.CALLERS.index(caller) << 2)
            seed = rpc_harness.encode(mode, [(w, 4280) for w in writes])
            rpc_harness.run_input(seed)         # (a seed must pass the checks itself)
            (out / hashlib.sha1(seed).hexdigest()).write_bytes(seed)
            written += 1
    print(f"{written} seeds from {len(pipes)} pipes in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
