"""wkssvc over a named pipe of the sans-I/O connection: NetrWkstaGetInfo as Samba answers it
(read with impacket's NDR)."""
import pytest
from rpc_client import PipeClient, text, wksta_get_info, wkst

from smbring.smb.rpc.services import ServerInfo

WERR_ACCESS_DENIED, WERR_INVALID_LEVEL = 5, 124


@pytest.fixture
def client(share):
    c = PipeClient(share)
    c.conn.server_info = ServerInfo(name="filer", workgroup="home")
    yield c
    c.conn.close_all()


def get_info(client, level, guest=False):
    client.conn.sessions[1].guest = guest
    return wkst.NetrWkstaGetInfoResponse(client.call(client.bound("wkssvc"), 0, wksta_get_info(level)))


@pytest.mark.parametrize("guest", [False, True])
def test_level_100_for_anyone_in_upper_case(client, guest):
    info = get_info(client, 100, guest)["WkstaInfo"]["WkstaInfo100"]
    assert (info["wki100_platform_id"], text(info["wki100_computername"]), text(info["wki100_langroup"]),
            info["wki100_ver_major"], info["wki100_ver_minor"]) == (500, "FILER", "HOME", 6, 1)


def test_level_101_for_users_not_guests(client):
    info = get_info(client, 101)["WkstaInfo"]["WkstaInfo101"]
    assert text(info["wki101_computername"]) == "FILER" and text(info["wki101_lanroot"]) == ""
    assert get_info(client, 101, guest=True)["ErrorCode"] == WERR_ACCESS_DENIED


@pytest.mark.parametrize("level, error", [(102, WERR_ACCESS_DENIED), (502, WERR_ACCESS_DENIED),
                                          (1013, WERR_INVALID_LEVEL)])
def test_administrators_levels_are_refused_and_others_unknown(client, level, error):
    resp = get_info(client, level)
    assert resp["ErrorCode"] == error
