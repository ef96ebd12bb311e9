"""srvsvc over a named pipe of the sans-I/O connection: NetrShareEnum (every level served),
NetrShareEnumSticky, NetrShareGetInfo and NetrServerGetInfo, as Samba answers them; requests
written and answers read with impacket's NDR (an implementation independent of smbring's)."""
import struct

import pytest
from rpc_client import (
    PipeClient,
    server_get_info,
    share_enum,
    share_get_info,
    srvs,
    text,
)

from smbring.smb import acl, wire
from smbring.smb.rpc.ndr import STR, U32, Reader
from smbring.smb.rpc.services import ServerInfo
from smbring.smb.state import Share

WERR_ACCESS_DENIED, WERR_INVALID_NAME, WERR_INVALID_LEVEL = 5, 123, 124
STYPE_IPC_HIDDEN = 0x80000003
SERVER = ServerInfo(name="FILER", comment="The filer", workgroup="HOME")


@pytest.fixture
def client(share, tmp_path):
    """A client of a server with these shares: data (writable, with a comment), pub (guest ok,
    read-only), admin$ (hidden by its name), secret (not browseable), staff (valid users)."""
    c = PipeClient(share)
    c.conn.shares = {s.name.lower(): s for s in (
        Share("data", "/srv/data", read_only=False, comment="Team data"),
        Share("pub", "/srv/pub", read_only=True, guest_ok=True, comment="Public"),
        Share("admin$", "/srv/admin", comment="Hidden by its name"),
        Share("secret", "/srv/secret", browseable=False, comment="Not listed"),
        Share("staff", "/srv/staff", valid_users=["bob"], comment="Staff only"),
    )}
    c.conn.server_info = SERVER
    yield c
    c.conn.close_all()


def enum(client, level, resume=None, opnum=15, guest=False):
    client.conn.sessions[1].guest = guest
    fid = client.bound()
    stub = client.call(fid, opnum, share_enum(level, resume, opnum))
    return (srvs.NetrShareEnumResponse if opnum == 15 else srvs.NetrShareEnumStickyResponse)(stub)


def entries(resp, level):
    return resp["InfoStruct"]["ShareInfo"][f"Level{level}"]["Buffer"]


LISTED = ["data", "pub", "admin$", "staff", "IPC$"]


def test_enum_level_1_lists_the_browseable_shares_with_their_comments_then_ipc(client):
    resp = enum(client, 1)
    assert resp["ErrorCode"] == 0 and resp["TotalEntries"] == len(LISTED)
    got = [(text(e["shi1_netname"]), e["shi1_type"], text(e["shi1_remark"])) for e in entries(resp, 1)]
    assert got == [("data", 0, "Team data"), ("pub", 0, "Public"), ("admin$", 0, "Hidden by its name"),
                   ("staff", 0, "Staff only"), ("IPC$", STYPE_IPC_HIDDEN, "IPC Service (The filer)")]


def test_enum_level_0_names_only(client):
    assert [text(e["shi0_netname"]) for e in entries(enum(client, 0), 0)] == LISTED


def test_enum_level_2_gives_paths_as_samba_does(client):
    got = {text(e["shi2_netname"]): e for e in entries(enum(client, 2), 2)}
    assert text(got["data"]["shi2_path"]) == "C:\\srv\\data" and text(got["IPC$"]["shi2_path"]) == ""
    assert got["data"]["shi2_max_uses"] == 0xFFFFFFFF and text(got["data"]["shi2_passwd"]) == ""
    assert text(got["pub"]["shi2_remark"]) == "Public"


@pytest.mark.parametrize("level", [502, 503])
def test_enum_levels_502_and_503_carry_the_share_security_descriptor(client, level):
    got = {text(e[f"shi{level}_netname"]): e for e in entries(enum(client, level), level)}
    sd = acl.parse(b"".join(got["data"][f"shi{level}_security_descriptor"]))
    assert [(a.type, a.mask, a.sid) for a in sd.dacl] == [(acl.ALLOWED, acl.FILE_ALL_ACCESS, acl.EVERYONE)]
    assert sd.owner == acl.sid(5, 32, 544)
    ro = acl.parse(b"".join(got["pub"][f"shi{level}_security_descriptor"]))
    assert ro.dacl[0].mask == wire.READ_ONLY_ACCESS      # a read-only share: what its tree connect grants
    assert text(got["data"][f"shi{level}_path"]) == "C:\\srv\\data"
    if level == 503:
        assert text(got["data"]["shi503_servername"]) == "*"


def test_enum_level_501(client):
    got = [(text(e["shi501_netname"]), e["shi501_flags"]) for e in entries(enum(client, 501), 501)]
    assert got == [(name, 0) for name in LISTED]


@pytest.mark.parametrize("level, size", [(1004, 1), (1005, 1)])
def test_enum_levels_1004_and_1005_as_samba_has_them(client, level, size):
    """(Not in MS-SRVS's container union, so read with smbring's own NDR reader.)"""
    client.conn.sessions[1].guest = False
    fid = client.bound()
    stub = client.call(fid, 15, struct.pack("<IIIIIII", 0, level, level, 0x20004, 0, 0, 0xFFFFFFFF) +
                       struct.pack("<I", 0))
    r = Reader(stub)
    assert (r.u32(), r.u32(), r.pointer() != 0, r.u32()) == (level, level, True, len(LISTED))
    assert r.pointer()
    rows = r.structs((STR,) if level == 1004 else (U32,), r.count())
    assert rows == ([("Team data",), ("Public",), ("Hidden by its name",), ("Staff only",),
                     ("IPC Service (The filer)",)] if level == 1004 else [(0,)] * len(LISTED))
    assert (r.u32(), r.pointer(), r.u32()) == (len(LISTED), 0, 0)


def test_the_sticky_enum_leaves_hidden_shares_out(client):
    resp = enum(client, 1, opnum=36)
    assert [text(e["shi1_netname"]) for e in entries(resp, 1)] == ["data", "pub", "staff"]


def test_the_resume_handle_starts_later_and_is_reset(client):
    resp = enum(client, 0, resume=3)
    assert [text(e["shi0_netname"]) for e in entries(resp, 0)] == ["staff", "IPC$"]
    assert resp["ResumeHandle"] == 0 and resp["TotalEntries"] == 2
    resp = enum(client, 0, resume=1000)
    assert resp["ErrorCode"] == 0 and resp["TotalEntries"] == 0


def test_a_guest_lists_the_same_shares_as_samba_with_restrict_anonymous_0(client):
    assert [text(e["shi1_netname"]) for e in entries(enum(client, 1, guest=True), 1)] == LISTED


def test_restrict_anonymous_refuses_guests_and_not_users(client):
    client.conn.server_info = ServerInfo(restrict_anonymous=1)
    resp = enum(client, 1, guest=True)
    assert resp["ErrorCode"] == WERR_ACCESS_DENIED and resp["TotalEntries"] == 0
    assert enum(client, 1, guest=False)["ErrorCode"] == 0


def get_info(client, name, level, guest=False):
    client.conn.sessions[1].guest = guest
    return srvs.NetrShareGetInfoResponse(client.call(client.bound(), 16, share_get_info(name, level)))


def test_get_info_finds_a_share_by_name_in_any_case_browseable_or_not(client):
    info = get_info(client, "SECRET", 2)["InfoStruct"]["ShareInfo2"]
    assert (text(info["shi2_netname"]), text(info["shi2_remark"]), text(info["shi2_path"])) == \
        ("secret", "Not listed", "C:\\srv\\secret")
    info = get_info(client, "ipc$", 1)["InfoStruct"]["ShareInfo1"]
    assert (text(info["shi1_netname"]), info["shi1_type"]) == ("IPC$", STYPE_IPC_HIDDEN)


@pytest.mark.parametrize("level", [0, 1, 2, 501, 502, 503, 1004, 1005])
def test_get_info_serves_every_level(client, level):
    resp = get_info(client, "data", level)
    assert resp["ErrorCode"] == 0
    assert resp["InfoStruct"]["tag"] == level


def test_get_info_of_an_unknown_share_is_invalid_name(client):
    resp = get_info(client, "nosuch", 1)
    assert resp["ErrorCode"] == WERR_INVALID_NAME


@pytest.mark.parametrize("level", [1006, 1501])
def test_get_info_levels_not_served_are_invalid_level(client, level):
    assert get_info(client, "data", level)["ErrorCode"] == WERR_INVALID_LEVEL


def test_enum_levels_not_served_are_invalid_level(client):
    fid = client.bound()
    # level 7 has no arm in the union: the answer has none either
    stub = client.call(fid, 15, struct.pack("<IIIII", 0, 7, 7, 0xFFFFFFFF, 0))
    assert stub == struct.pack("<IIIII", 7, 7, 0, 0, WERR_INVALID_LEVEL)


def test_server_info_levels(client):
    fid = client.bound()
    resp = srvs.NetrServerGetInfoResponse(client.call(fid, 21, server_get_info(101)))
    info = resp["InfoStruct"]["ServerInfo101"]
    assert (info["sv101_platform_id"], text(info["sv101_name"]), info["sv101_version_major"],
            info["sv101_version_minor"], text(info["sv101_comment"])) == (500, "FILER", 6, 1, "The filer")
    assert info["sv101_type"] & 0x8003 == 0x8003               # workstation, server, NT server
    info = srvs.NetrServerGetInfoResponse(client.call(fid, 21, server_get_info(100), call_id=3))
    assert text(info["InfoStruct"]["ServerInfo100"]["sv100_name"]) == "FILER"
    info = srvs.NetrServerGetInfoResponse(client.call(fid, 21, server_get_info(102), call_id=4))
    assert text(info["InfoStruct"]["ServerInfo102"]["sv102_userpath"]) == "C:\\"
    resp = srvs.NetrServerGetInfoResponse(client.call(fid, 21, server_get_info(103), call_id=5))
    assert resp["ErrorCode"] == WERR_INVALID_LEVEL


def test_server_info_is_refused_to_guests_under_restrict_anonymous(client):
    client.conn.server_info = ServerInfo(restrict_anonymous=1)
    client.conn.sessions[1].guest = True
    resp = srvs.NetrServerGetInfoResponse(client.call(client.bound(), 21, server_get_info(101)))
    assert resp["ErrorCode"] == WERR_ACCESS_DENIED
    resp = get_info(client, "data", 1, guest=True)
    assert resp["ErrorCode"] == WERR_ACCESS_DENIED
