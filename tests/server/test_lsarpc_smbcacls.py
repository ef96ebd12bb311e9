"""The lsarpc pipe against a real server: Samba's rpcclient (lsaquery, lookupnames, lookupsids
and their variants), smbcacls reading and editing security descriptors by name, and impacket
sending what no well-behaved client sends (hostile counts, forged and foreign handles, too many
handles, more access than granted).

smbcacls (Samba 4.17) connects to port 445 only, so the server listens on a loopback address
of its own on port 445 (root only; skipped otherwise)."""
from __future__ import annotations

import grp
import os
import pwd
import shutil
import struct
import subprocess

import pytest

from servers import (PASSWORD, USER, spawn, stop,
                     loopback_on_445_or_skip as loopback_on_445)
from smbring.smb import sids

OWN_USER = pwd.getpwuid(os.geteuid()).pw_name          # who the server acts as (username map)
OWN_GROUP = grp.getgrgid(os.getegid()).gr_name

STATUS_INVALID_INFO_CLASS = 0xC0000003
STATUS_INVALID_HANDLE = 0xC0000008
STATUS_INVALID_PARAMETER = 0xC000000D
STATUS_ACCESS_DENIED = 0xC0000022
STATUS_NONE_MAPPED = 0xC0000073
STATUS_INSUFFICIENT_RESOURCES = 0xC000009A
STATUS_SOME_NOT_MAPPED = 0x00000107
BAD_STUB_DATA = "rpc_x_bad_stub_data"          # the fault 0x6F7, as impacket names it


def need(tool: str) -> None:
    if not shutil.which(tool):
        pytest.skip(f"{tool} is not installed")


def run(*args, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)




def unused_id(lookup) -> int:
    """A uid (or gid) the system has no name for."""
    for candidate in range(54321, 60000):
        try:
            lookup(candidate)
        except KeyError:
            return candidate
    pytest.skip("no unused id")


def start(tmp_path, extra_global: str = ""):
    address = loopback_on_445()
    (tmp_path / "files").mkdir(exist_ok=True)
    conf = tmp_path / "smb.conf"
    conf.write_text(f"[global]\nlisten = {address}:445\nnetbios name = filer\nworkgroup = home\n{extra_global}\n"
                    f"[rw]\npath = {tmp_path / 'files'}\nread only = no\n"
                    f"[ro]\npath = {tmp_path / 'files'}\nread only = yes\n"
                    f"[pub]\npath = {tmp_path / 'files'}\nguest ok = yes\n")
    proc, _port, log = spawn(tmp_path, "--config", str(conf), port=445, host=address)
    return {"address": address, "proc": proc, "log": log, "files": tmp_path / "files"}


@pytest.fixture
def server(tmp_path):
    s = start(tmp_path)
    yield s
    stop(s["proc"])


def rpcclient(server, command: str, *creds: str) -> subprocess.CompletedProcess:
    need("rpcclient")
    return run("rpcclient", *(creds or ("-U", f"{USER}%{PASSWORD}")), "-c", command, server["address"])


def smbcacls(server, name: str, *args: str, share: str = "rw") -> subprocess.CompletedProcess:
    need("smbcacls")
    return run("smbcacls", f"//{server['address']}/{share}", name, "-U", f"{USER}%{PASSWORD}", *args)


def descriptor(result: subprocess.CompletedProcess) -> dict:
    """smbcacls' listing: OWNER, GROUP, and the ACL lines in order."""
    assert result.returncode == 0, result.stdout + result.stderr
    out = {"ACL": []}
    for line in result.stdout.splitlines():
        key, _, value = line.partition(":")
        if key == "ACL":
            out["ACL"].append(value)
        elif key in ("OWNER", "GROUP", "CONTROL"):
            out[key] = value
    return out


# -- rpcclient -------------------------------------------------------------------------------------
def test_lsaquery_primary_and_account_domain(server):
    out = rpcclient(server, "lsaquery")
    assert out.returncode == 0, out.stdout + out.stderr
    # a standalone server: its primary domain is the workgroup, with no SID
    assert "Domain Name: HOME" in out.stdout and "Domain Sid: (NULL SID)" in out.stdout
    out = rpcclient(server, "lsaquery 5")
    assert out.returncode == 0, out.stdout + out.stderr
    machine = sids.text(sids.machine_sid("FILER"))
    assert machine.startswith("S-1-5-21-")
    assert "Domain Name: FILER" in out.stdout and f"Domain Sid: {machine}" in out.stdout


def lookups(output: str) -> dict[str, str]:
    """rpcclient lookupnames' lines: name -> 'SID (type)'."""
    rows = {}
    for line in output.splitlines():
        name, _, rest = line.rpartition(" S-")
        if name:
            rows[name] = "S-" + rest
    return rows


def test_lookupnames_well_known_builtin_and_unix_names(server):
    out = rpcclient(server, 'lookupnames root daemon Everyone "NT AUTHORITY\\SYSTEM" "BUILTIN\\Administrators" '
                            'Users "CREATOR OWNER" "Unix User\\daemon" "Unix Group\\staff" staff FILER '
                            f"nosuch-{os.getpid()}")
    assert out.returncode == 0, out.stdout + out.stderr
    rows = lookups(out.stdout)
    uid, gid = pwd.getpwnam("daemon").pw_uid, grp.getgrnam("staff").gr_gid
    assert rows["root"] == "S-1-22-1-0 (User: 1)"
    assert rows["daemon"] == rows["Unix User\\daemon"] == f"S-1-22-1-{uid} (User: 1)"
    assert rows["Everyone"] == "S-1-1-0 (Well-known Group: 5)"
    assert rows["NT AUTHORITY\\SYSTEM"] == "S-1-5-18 (Well-known Group: 5)"
    assert rows["BUILTIN\\Administrators"] == "S-1-5-32-544 (Local Group: 4)"
    assert rows["Users"] == "S-1-5-32-545 (Local Group: 4)"
    assert rows["CREATOR OWNER"] == "S-1-3-0 (Well-known Group: 5)"
    assert rows["staff"] == rows["Unix Group\\staff"] == f"S-1-22-2-{gid} (Domain Group: 2)"
    assert rows["FILER"] == f"{sids.text(sids.machine_sid('FILER'))} (Domain: 3)"
    assert rows[f"nosuch-{os.getpid()}"].endswith("(UNKNOWN: 8)")


def test_lookupnames_none_mapped(server):
    out = rpcclient(server, f"lookupnames nosuch-{os.getpid()} 'FILER\\root' 'NOWHERE\\root'")
    # the account domain holds no accounts (users are Unix users), another domain is unknown
    assert "NT_STATUS_NONE_MAPPED" in out.stdout + out.stderr


def test_lookupsids_names_them_as_samba_does(server):
    uid, gid = unused_id(pwd.getpwuid), unused_id(grp.getgrgid)
    out = rpcclient(server, f"lookupsids S-1-22-1-0 S-1-1-0 S-1-5-18 S-1-5-32-544 S-1-3-0 S-1-22-2-{gid} "
                            f"S-1-22-1-{uid} S-1-5-21-1-2-3-4 S-1-5-32-9999")
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert f"S-1-22-1-0 Unix User\\{pwd.getpwuid(0).pw_name} (1)" in lines
    assert "S-1-1-0 \\Everyone (5)" in lines
    assert "S-1-5-18 NT Authority\\SYSTEM (5)" in lines
    assert "S-1-5-32-544 BUILTIN\\Administrators (4)" in lines
    assert "S-1-3-0 \\Creator Owner (5)" in lines
    # an id without a name is named by its number (as Samba's uidtoname)
    assert f"S-1-22-2-{gid} Unix Group\\{gid} (2)" in lines
    assert f"S-1-22-1-{uid} Unix User\\{uid} (1)" in lines
    assert "S-1-5-21-1-2-3-4 *unknown*\\*unknown* (8)" in lines
    assert "S-1-5-32-9999 *unknown*\\*unknown* (8)" in lines
    out = rpcclient(server, "lookupsids S-1-5-21-1-2-3-4")
    assert "NT_STATUS_NONE_MAPPED" not in out.stdout + out.stderr     # (unknown ones still listed)


def test_names_and_sids_round_trip(server):
    names = ["root", "daemon", "Everyone", "NT Authority\\Network", "BUILTIN\\Backup Operators", "Unix Group\\staff"]
    out = rpcclient(server, "lookupnames " + " ".join(f'"{n}"' for n in names))
    found = [lookups(out.stdout)[n].split()[0] for n in names]
    out = rpcclient(server, "lookupsids " + " ".join(found))
    back = [line.split(" ", 1)[1].rsplit(" (", 1)[0] for line in out.stdout.splitlines()]
    assert back == [f"Unix User\\{pwd.getpwnam('root').pw_name}", "Unix User\\daemon", "\\Everyone",
                    "NT Authority\\Network", "BUILTIN\\Backup Operators", "Unix Group\\staff"]


def test_the_other_lookup_calls(server):
    uid = pwd.getpwnam("daemon").pw_uid
    out = rpcclient(server, "lookupnames4 daemon")                         # LookupNames4
    assert f"daemon S-1-22-1-{uid} (User: 1)" in out.stdout, out.stdout + out.stderr
    out = rpcclient(server, f"lookupsids3 S-1-22-1-{uid}")                   # LookupSids3
    assert f"S-1-22-1-{uid} daemon (1)" in out.stdout, out.stdout + out.stderr
    out = rpcclient(server, "lookupnames_level 2 daemon Everyone")         # LookupNames, level 2
    rows = lookups(out.stdout)
    assert rows["daemon"] == f"S-1-22-1-{uid} (User: 1)"
    assert rows["Everyone"].endswith("(UNKNOWN: 8)")                         # only at level 1
    out = rpcclient(server, "lookupsids_level 7 S-1-1-0")
    assert "NT_STATUS_INVALID_PARAMETER" in out.stdout + out.stderr


def test_anonymous_lookups_follow_restrict_anonymous(tmp_path, server):
    out = rpcclient(server, "lookupnames daemon", "-U%")
    assert "S-1-22-1-" in out.stdout, out.stdout + out.stderr              # as Samba, at 0
    stop(server["proc"])
    (tmp_path / "r").mkdir()
    restricted = start(tmp_path / "r", "restrict anonymous = 1")
    try:
        for command in ("lookupnames daemon", "lookupsids S-1-1-0", "lsaquery", "lookupsids3 S-1-1-0",
                        "lookupnames4 daemon"):
            out = rpcclient(restricted, command, "-U%")
            assert "NT_STATUS_ACCESS_DENIED" in out.stdout + out.stderr, (command, out.stdout + out.stderr)
        out = rpcclient(restricted, "lookupnames daemon")
        assert "S-1-22-1-" in out.stdout, out.stdout + out.stderr
    finally:
        stop(restricted["proc"])


# -- smbcacls --------------------------------------------------------------------------------------
def test_smbcacls_shows_owners_and_aces_by_name_and_numeric(server):
    f = server["files"] / "f.txt"
    f.write_text("x")
    d = descriptor(smbcacls(server, "f.txt"))
    assert (d["OWNER"], d["GROUP"]) == (f"Unix User\\{OWN_USER}", f"Unix Group\\{OWN_GROUP}")
    assert d["ACL"] == ["Everyone:ALLOWED/0x0/RWXD"]
    d = descriptor(smbcacls(server, "f.txt", "--numeric"))
    assert (d["OWNER"], d["GROUP"]) == (f"S-1-22-1-{os.geteuid()}", f"S-1-22-2-{os.getegid()}")
    assert d["ACL"][0].startswith("S-1-1-0:0/0x0/")
    # the file's own owner and group, whoever they are, even without a name
    uid, gid = unused_id(pwd.getpwuid), unused_id(grp.getgrgid)
    os.chown(f, pwd.getpwnam("daemon").pw_uid, grp.getgrnam("staff").gr_gid)
    d = descriptor(smbcacls(server, "f.txt"))
    assert (d["OWNER"], d["GROUP"]) == ("Unix User\\daemon", "Unix Group\\staff")
    os.chown(f, uid, gid)
    d = descriptor(smbcacls(server, "f.txt"))
    assert (d["OWNER"], d["GROUP"]) == (f"Unix User\\{uid}", f"Unix Group\\{gid}")


def test_smbcacls_edits_aces_owner_and_group_by_name(server):
    (server["files"] / "g.txt").write_text("x")
    # smbcacls sends the owner and group back with every edit, which needs WRITE_OWNER: the
    # first edit gives the server's own account full control (the file has no stored
    # descriptor yet, so nothing is checked beyond the share)
    assert smbcacls(server, "g.txt", "-a", f"ACL:{OWN_USER}:ALLOWED/0x0/FULL").returncode == 0
    assert smbcacls(server, "g.txt", "-a", "ACL:daemon:ALLOWED/0x0/READ").returncode == 0
    d = descriptor(smbcacls(server, "g.txt"))
    assert d["ACL"] == ["Everyone:ALLOWED/0x0/RWXD", f"Unix User\\{OWN_USER}:ALLOWED/0x0/FULL",
                        "Unix User\\daemon:ALLOWED/0x0/READ"]
    uid = pwd.getpwnam("daemon").pw_uid
    assert f"S-1-22-1-{uid}:0/0x0/0x001200a9" in descriptor(smbcacls(server, "g.txt", "--numeric"))["ACL"]
    # modify by the qualified name, delete by the bare one
    assert smbcacls(server, "g.txt", "-M", "ACL:Unix User\\daemon:ALLOWED/0x0/FULL").returncode == 0
    assert "Unix User\\daemon:ALLOWED/0x0/FULL" in descriptor(smbcacls(server, "g.txt"))["ACL"]
    assert smbcacls(server, "g.txt", "-D", "ACL:daemon:ALLOWED/0x0/FULL").returncode == 0
    assert not any("daemon" in ace for ace in descriptor(smbcacls(server, "g.txt"))["ACL"])
    # well-known names, in any case; shown back as Samba names them
    for ace in ("ACL:NT AUTHORITY\\SYSTEM:ALLOWED/0x0/FULL", "ACL:builtin\\administrators:ALLOWED/OI|CI/FULL",
                "ACL:CREATOR OWNER:ALLOWED/0x0/FULL", "ACL:Everyone:DENIED/0x0/D"):
        assert smbcacls(server, "g.txt", "-a", ace).returncode == 0, ace
    acl = descriptor(smbcacls(server, "g.txt"))["ACL"]
    assert {"NT Authority\\SYSTEM:ALLOWED/0x0/FULL", "BUILTIN\\Administrators:ALLOWED/OI|CI/FULL",
            "Creator Owner:ALLOWED/0x0/FULL", "Everyone:DENIED/0x0/D"} <= set(acl)
    # owner and group by name (-C, -G)
    assert smbcacls(server, "g.txt", "-C", "daemon").returncode == 0
    assert smbcacls(server, "g.txt", "-G", "staff").returncode == 0
    d = descriptor(smbcacls(server, "g.txt"))
    assert (d["OWNER"], d["GROUP"]) == ("Unix User\\daemon", "Unix Group\\staff")


def test_smbcacls_unknown_names_change_nothing(server):
    (server["files"] / "h.txt").write_text("x")
    before = smbcacls(server, "h.txt").stdout
    for args in (("-a", f"ACL:nosuch-{os.getpid()}:ALLOWED/0x0/READ"), ("-C", f"nosuch-{os.getpid()}"),
                 ("-a", "ACL:FILER\\root:ALLOWED/0x0/READ"), ("-a", "ACL:Unix User\\:ALLOWED/0x0/READ")):
        result = smbcacls(server, "h.txt", *args)
        assert result.returncode != 0, args
        assert args[0] == "-C" or "to SID" in result.stdout + result.stderr, args
    assert smbcacls(server, "h.txt").stdout == before


def test_smbcacls_on_a_read_only_share_is_refused(server):
    (server["files"] / "r.txt").write_text("x")
    before = descriptor(smbcacls(server, "r.txt", share="ro"))       # reading is fine
    for args in (("-a", "ACL:daemon:ALLOWED/0x0/READ"), ("-C", "daemon"), ("-G", "staff"),
                 ("-S", "ACL:Everyone:ALLOWED/0x0/FULL"), ("-a", "ACL:S-1-1-0:ALLOWED/0x0/READ", "--numeric")):
        result = smbcacls(server, "r.txt", *args, share="ro")
        assert result.returncode != 0 and "NT_STATUS_ACCESS_DENIED" in result.stdout + result.stderr, args
    assert descriptor(smbcacls(server, "r.txt", share="ro")) == before
    assert descriptor(smbcacls(server, "r.txt")) == before


# -- what no client should send ----------------------------------------------------------------
@pytest.fixture
def lsa(server):
    """connect() -> an impacket DCE/RPC association on the server's lsarpc pipe."""
    transport = pytest.importorskip("impacket.dcerpc.v5.transport")
    from impacket.dcerpc.v5 import lsat
    from impacket.smbconnection import SMBConnection
    opened = []

    def connect():
        rpc = transport.DCERPCTransportFactory(f"ncacn_np:{server['address']}[\\pipe\\lsarpc]")
        rpc.set_credentials(USER, PASSWORD)
        conn = SMBConnection(server["address"], server["address"])
        conn.login(USER, PASSWORD)
        rpc.set_smb_connection(conn)
        dce = rpc.get_dce_rpc()
        dce.connect()
        dce.bind(lsat.MSRPC_UUID_LSAT)
        opened.append(dce)
        return dce
    yield connect
    for dce in opened:
        try:
            dce.disconnect()
        except Exception:
            pass


def open_policy(dce, access=0x02000000):
    from impacket.dcerpc.v5 import lsad
    return lsad.hLsarOpenPolicy2(dce, access)["PolicyHandle"]


def status_of(call) -> int:
    from impacket.dcerpc.v5.rpcrt import DCERPCException
    try:
        answer = call()
    except DCERPCException as e:
        return e.get_error_code()
    return answer["ErrorCode"]


def raw_call(dce, opnum: int, stub: bytes) -> bytes:
    dce.call(opnum, stub)
    return dce.recv()


def names_stub(handle: bytes, names: list[bytes], count: int | None = None, conformance: int | None = None,
               lengths=None) -> bytes:
    """LsarLookupNames' stub, by hand: names as UTF-16 bytes; the counts as given (hostile)."""
    n = len(names) if count is None else count
    stub = handle + struct.pack("<II", n, n if conformance is None else conformance)
    for i, name in enumerate(names):
        length, maximum = lengths[i] if lengths else (len(name), len(name))
        stub += struct.pack("<HHI", length, maximum, 0x20000 + 4 * i)
    for name in names:
        chars = len(name) // 2
        stub += struct.pack("<III", chars, 0, chars) + name + b"\0" * (-len(name) % 4)
    return stub + struct.pack("<IIHHI", 0, 0, 1, 0, 0)      # TranslatedSids (empty), level, count


def test_hostile_counts_fault_and_the_pipe_goes_on(lsa):
    from impacket.dcerpc.v5 import lsat
    from impacket.dcerpc.v5.rpcrt import DCERPCException
    dce = lsa()
    policy = open_policy(dce)
    handle = bytes(policy)
    name = "root".encode("utf-16-le")
    hostile = [
        names_stub(handle, [name] * 1001),                            # above the IDL's 1000
        names_stub(handle, [name], count=0xFFFFFFFF),                 # a count the data cannot hold
        names_stub(handle, [name], count=2),                          # more names than sent
        names_stub(handle, [name], conformance=7),                    # array size is not the count
        names_stub(handle, [name], lengths=[(60000, 60000)]),          # a string longer than the data
        names_stub(handle, [name], lengths=[(8, 4)]),                  # length above its maximum
        names_stub(handle, [name], lengths=[(7, 8)]),                  # half a character
    ]
    for stub in hostile:
        with pytest.raises(DCERPCException) as e:
            raw_call(dce, 14, stub)
        assert BAD_STUB_DATA in str(e.value)
    # SIDs: 16 sub-authorities, a count above 1000, a NULL SID
    sid16 = struct.pack("<IBB6s", 16, 1, 16, (5).to_bytes(6, "big")) + b"\1\0\0\0" * 16
    for sids_part in (struct.pack("<IIII", 1, 0x20000, 1, 0x20004) + sid16,
                      struct.pack("<IIII", 1001, 0x20000, 1001, 0) + b"\0\0\0\0" * 1000,
                      struct.pack("<IIII", 1, 0x20000, 1, 0)):
        with pytest.raises(DCERPCException) as e:
            raw_call(dce, 15, handle + sids_part + struct.pack("<IIHHI", 0, 0, 1, 0, 0))
        assert BAD_STUB_DATA in str(e.value)
    # the association goes on
    assert lsat.hLsarLookupNames(dce, policy, ["root"])["MappedCount"] == 1


def test_the_bound_itself_is_answered(server):
    # (rpcclient: impacket reads a pipe one fragment a READ, as Samba's message-mode pipes
    # give them, and these answers take several)
    out = rpcclient(server, "lookupnames " + " ".join(["root"] * 1000))
    assert out.stdout.count("root S-1-22-1-0 (User: 1)") == 1000, out.stdout[-500:] + out.stderr
    many = [f"S-1-5-21-{i}" + "-4294967295" * 13 for i in range(700)]
    out = rpcclient(server, "lookupsids " + " ".join(many))
    assert out.stdout.splitlines() == [f"{sid} *unknown*\\*unknown* (8)" for sid in many], out.stderr
    out = rpcclient(server, "lookupnames " + " ".join(["root"] * 1001))
    assert "root S-1-22-1-0" not in out.stdout                          # above the bound: a fault


def test_forged_closed_and_foreign_handles_are_invalid(lsa):
    from impacket.dcerpc.v5 import lsad, lsat
    dce, other = lsa(), lsa()
    handle = open_policy(dce)
    assert status_of(lambda: lsat.hLsarLookupNames(other, handle, ["root"])) == STATUS_INVALID_HANDLE
    forged = bytes(20)
    answer = raw_call(dce, 14, names_stub(forged, ["root".encode("utf-16-le")]))
    assert struct.unpack("<I", answer[-4:])[0] == STATUS_INVALID_HANDLE
    lsad.hLsarClose(dce, handle)
    assert status_of(lambda: lsat.hLsarLookupNames(dce, handle, ["root"])) == STATUS_INVALID_HANDLE
    assert status_of(lambda: lsad.hLsarClose(dce, handle)) == STATUS_INVALID_HANDLE


def test_open_handles_are_bounded(lsa):
    from impacket.dcerpc.v5 import lsad
    dce = lsa()
    handles = [open_policy(dce) for _ in range(256)]
    assert status_of(lambda: lsad.hLsarOpenPolicy2(dce, 0x02000000)) == STATUS_INSUFFICIENT_RESOURCES
    lsad.hLsarClose(dce, handles.pop())
    assert open_policy(dce)
    # another pipe has handles of its own
    assert open_policy(lsa())


def test_access_beyond_read_and_execute_is_refused(lsa):
    from impacket.dcerpc.v5 import lsad, lsat
    dce = lsa()
    for access in (0x000F0FFF, 0x10000000, 0x40000000, 0x00000010, 0x00080000, 0x01000000):
        assert status_of(lambda: lsad.hLsarOpenPolicy2(dce, access)) == STATUS_ACCESS_DENIED, hex(access)
    view_only = open_policy(dce, 0x00000001)              # view local information: no lookups
    assert status_of(lambda: lsat.hLsarLookupNames(dce, view_only, ["root"])) == STATUS_ACCESS_DENIED
    assert status_of(lambda: lsat.hLsarLookupSids(dce, view_only, ["S-1-1-0"])) == STATUS_ACCESS_DENIED
    answer = lsad.hLsarQueryInformationPolicy(dce, view_only, lsad.POLICY_INFORMATION_CLASS.PolicyAccountDomainInformation)
    assert answer["PolicyInformation"]["PolicyAccountDomainInfo"]["DomainName"] == "FILER"
    lookup_only = open_policy(dce, 0x00000800)
    assert status_of(lambda: lsad.hLsarQueryInformationPolicy(
        dce, lookup_only, lsad.POLICY_INFORMATION_CLASS.PolicyAccountDomainInformation)) == STATUS_ACCESS_DENIED
    assert lsat.hLsarLookupNames(dce, lookup_only, ["root"])["MappedCount"] == 1


def test_bad_levels(lsa):
    from impacket.dcerpc.v5 import lsad, lsat
    dce = lsa()
    handle = open_policy(dce)
    for level, status in ((12, STATUS_INVALID_INFO_CLASS), (1, STATUS_INVALID_INFO_CLASS),
                          (9, STATUS_INVALID_PARAMETER), (11, STATUS_INVALID_PARAMETER)):
        assert status_of(lambda: lsad.hLsarQueryInformationPolicy(dce, handle, level)) == status, level
    assert status_of(lambda: lsat.hLsarLookupSids(dce, handle, ["S-1-1-0"], 0)) == STATUS_INVALID_PARAMETER
    assert status_of(lambda: lsat.hLsarLookupNames(dce, handle, ["root"], 99)) == STATUS_NONE_MAPPED


def test_some_and_none_mapped(lsa):
    from impacket.dcerpc.v5 import lsat
    dce = lsa()
    handle = open_policy(dce)
    assert status_of(lambda: lsat.hLsarLookupNames(dce, handle, ["root", f"nosuch-{os.getpid()}"])) == \
        STATUS_SOME_NOT_MAPPED
    assert status_of(lambda: lsat.hLsarLookupSids(dce, handle, ["S-1-1-0", "S-1-5-21-9-9-9-9"])) == \
        STATUS_SOME_NOT_MAPPED
    assert status_of(lambda: lsat.hLsarLookupSids(dce, handle, ["S-1-5-21-9-9-9-9"])) == STATUS_NONE_MAPPED


def test_getusername_says_who_the_caller_is(server):
    """LsarGetUserName, as Samba answers it: the Unix account the session acts as, the
    server's name as its authority; ANONYMOUS LOGON of NT AUTHORITY for an anonymous caller.
    smbtorture's rpc.lsa-getuser passes."""
    r = rpcclient(server, "getusername")
    assert f"Account Name: {OWN_USER}, Authority Name: FILER" in r.stdout, r.stdout + r.stderr
    r = rpcclient(server, "getusername", "-U%")
    assert "Account Name: ANONYMOUS LOGON, Authority Name: NT AUTHORITY" in r.stdout, r.stdout + r.stderr
    need("smbtorture")
    r = run("smbtorture", f"ncacn_np:{server['address']}", "-U", f"{USER}%{PASSWORD}", "rpc.lsa-getuser",
            timeout=120)
    assert "success: lsa-getuser" in r.stdout, r.stdout[-2000:]
