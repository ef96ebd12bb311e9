"""IOCTL through the sans-I/O connection (MS-SMB2 3.3.5.15): FSCTL_VALIDATE_NEGOTIATE_INFO
against the NEGOTIATE the connection received (a mismatch is a downgrade: the connection is
dropped), the network interface list, object ids, and the controls smbring does not serve."""
import ipaddress
import struct

import pytest
from sansio_client import FILE_DIRECTORY_FILE
from smbcore import ioctl_body, negotiate_body, negotiate_contexts, validate_negotiate_body

from smbring.smb import wire
from smbring.smb.commands.ioctl import (
    FSCTL_CREATE_OR_GET_OBJECT_ID,
    FSCTL_DFS_GET_REFERRALS,
    FSCTL_QUERY_NETWORK_INTERFACE_INFO,
    FSCTL_VALIDATE_NEGOTIATE_INFO,
)
from smbring.smb.limits import MAX_IO
from smbring.smb.state import FID_ANY

GUID = bytes(range(16))
OFFERED = dict(dialects=(wire.SMB202, wire.SMB210, wire.SMB300, wire.SMB302),
               security_mode=wire.SECURITY_SIGNING_ENABLED, caps=wire.CAP_LARGE_MTU | wire.CAP_ENCRYPTION, guid=GUID)
FSCTL_PIPE_TRANSCEIVE = 0x0011C017
FSCTL_GET_INTEGRITY_INFORMATION = 0x0009027C   # not served (as by smbd)


@pytest.fixture
def share(share):
    """The share with the file these tests use."""
    (share / "f").write_bytes(b"x")
    return share


@pytest.fixture
def negotiated(clients):
    """Makes a client whose connection received a real NEGOTIATE offering OFFERED (and
    `dialects`); its session and tree are set up first (an unsigned tree connect is refused
    on 3.1.1)."""
    def make(dialects=OFFERED["dialects"], **options):
        c = clients(dialect=0, **options)
        contexts = negotiate_contexts((1, 2), (1,)) if wire.SMB311 in dialects else []
        [(header, _)] = c.exchange(c.message(wire.NEGOTIATE, negotiate_body(dialects, OFFERED["security_mode"],
                                                                            OFFERED["caps"], GUID, contexts)))
        assert header.status == 0
        return c
    return make


@pytest.fixture
def client(negotiated):
    return negotiated()


def validate(client, **changed):
    fields = dict(OFFERED, **changed)
    return client.ioctl(FSCTL_VALIDATE_NEGOTIATE_INFO,
                        data=validate_negotiate_body(fields["caps"], fields["guid"], fields["security_mode"],
                                                     fields["dialects"]), max_output=24)


@pytest.mark.parametrize("dialects", [OFFERED["dialects"], OFFERED["dialects"][:3]])
def test_validate_negotiate_info_that_matches_gets_the_servers_values(negotiated, dialects):
    c = negotiated(dialects)
    status, out = validate(c, dialects=dialects)
    assert status == 0
    caps, guid, security_mode, dialect = struct.unpack("<I16sHH", out)
    assert (guid, dialect) == (c.conn.server_guid, dialects[-1])
    assert security_mode == wire.SECURITY_SIGNING_ENABLED
    # (no directory leasing: the client's NEGOTIATE did not announce it)
    assert caps == wire.CAP_DFS | wire.CAP_LARGE_MTU | wire.CAP_LEASING | (
        wire.CAP_ENCRYPTION | wire.CAP_MULTI_CHANNEL if dialect >= wire.SMB300 else 0)


def test_validate_negotiate_info_repeats_a_required_signing(negotiated):
    c = negotiated(signing_required=True)
    _status, out = validate(c)
    assert struct.unpack_from("<H", out, 20)[0] == wire.SECURITY_SIGNING_ENABLED | wire.SECURITY_SIGNING_REQUIRED


@pytest.mark.parametrize("changed", [
    dict(caps=wire.CAP_LARGE_MTU),                                   # encryption stripped
    dict(guid=b"\xff" * 16),
    dict(security_mode=wire.SECURITY_SIGNING_ENABLED | wire.SECURITY_SIGNING_REQUIRED),
    dict(security_mode=0),
    dict(dialects=(wire.SMB202, wire.SMB210, wire.SMB300)),           # 3.0.2 removed: a downgrade
    dict(dialects=(wire.SMB202, wire.SMB210, wire.SMB300, wire.SMB302, wire.SMB311)),
    dict(dialects=()),
], ids=lambda d: next(iter(d)) + "=" + str(next(iter(d.values()))))
def test_validate_negotiate_info_that_differs_drops_the_connection(client, changed):
    with pytest.raises(ConnectionError):
        validate(client, **changed)


@pytest.mark.parametrize("dialects", [(wire.SMB302,), (wire.SMB210, wire.SMB302),
                                      (wire.SMB302, wire.SMB300, wire.SMB210, wire.SMB202)])   # reordered
def test_validate_negotiate_info_with_other_dialects_leading_to_the_same_drops_the_connection(client, dialects):
    with pytest.raises(ConnectionError):
        validate(client, dialects=dialects)


def test_validate_negotiate_info_on_311_drops_the_connection(negotiated):
    c = negotiated((wire.SMB302, wire.SMB311))
    with pytest.raises(ConnectionError):
        validate(c, dialects=(wire.SMB302, wire.SMB311))


@pytest.mark.parametrize("data, max_output", [(b"\0" * 23, 24), (None, 23), (None, 0)])
def test_validate_negotiate_info_short_drops_the_connection(client, data, max_output):
    if data is None:
        data = validate_negotiate_body(OFFERED["caps"], GUID, OFFERED["security_mode"], OFFERED["dialects"])
    with pytest.raises(ConnectionError):
        client.ioctl(FSCTL_VALIDATE_NEGOTIATE_INFO, data=data, max_output=max_output)


def test_validate_negotiate_info_with_more_dialects_than_sent(client):
    data = bytearray(validate_negotiate_body(OFFERED["caps"], GUID, OFFERED["security_mode"], OFFERED["dialects"]))
    struct.pack_into("<H", data, 22, 1000)           # DialectCount past the input
    with pytest.raises(ConnectionError):
        client.ioctl(FSCTL_VALIDATE_NEGOTIATE_INFO, data=bytes(data), max_output=24)


def test_an_input_outside_the_message_is_an_invalid_parameter(client):
    body = bytearray(ioctl_body(FID_ANY, FSCTL_VALIDATE_NEGOTIATE_INFO, b"\0" * 32, 24))
    struct.pack_into("<I", body, 28, 4000)           # InputCount
    assert client.request(wire.IOCTL, bytes(body))[0] == wire.STATUS_INVALID_PARAMETER


# -- network interfaces ---------------------------------------------------------------------

@pytest.mark.parametrize("address", ["192.0.2.7", "2001:db8::7"])
def test_network_interface_info_names_the_address_reached(negotiated, address):
    c = negotiated(local_address=address)
    status, out = c.ioctl(FSCTL_QUERY_NETWORK_INTERFACE_INFO)
    assert status == 0 and len(out) == 152
    next_offset, index, capability, _r, speed = struct.unpack_from("<IIIIQ", out)
    assert (next_offset, index, capability) == (0, 1, 0) and speed > 0
    ip = ipaddress.ip_address(address)
    family = struct.unpack_from("<H", out, 24)[0]
    if ip.version == 4:
        assert family == 2 and out[28:32] == ip.packed
    else:
        assert family == 0x17 and out[32:48] == ip.packed


def test_network_interface_info_without_an_address_is_not_supported(client):
    assert client.ioctl(FSCTL_QUERY_NETWORK_INTERFACE_INFO)[0] == wire.STATUS_NOT_SUPPORTED


def test_network_interface_info_that_does_not_fit(negotiated):
    c = negotiated(local_address="192.0.2.7")
    assert c.ioctl(FSCTL_QUERY_NETWORK_INTERFACE_INFO, max_output=151)[0] == wire.STATUS_BUFFER_TOO_SMALL


# -- object ids ---------------------------------------------------------------------------------

def test_object_id_is_stable_and_names_the_file(client, share):
    fid = client.open("f")
    status, out = client.ioctl(FSCTL_CREATE_OR_GET_OBJECT_ID, fid=fid)
    assert status == 0 and len(out) == 64
    st = (share / "f").stat()
    assert out[:16] == struct.pack("<QQ", st.st_ino, st.st_dev) == out[32:48]
    assert client.ioctl(FSCTL_CREATE_OR_GET_OBJECT_ID, fid=client.open("f"))[1] == out
    other = client.open("g")
    assert client.ioctl(FSCTL_CREATE_OR_GET_OBJECT_ID, fid=other)[1][:16] != out[:16]


def test_object_id_of_a_closed_file(client):
    fid = client.open("f")
    assert client.close(fid) == 0
    assert client.ioctl(FSCTL_CREATE_OR_GET_OBJECT_ID, fid=fid)[0] == wire.STATUS_FILE_CLOSED
    assert client.ioctl(FSCTL_CREATE_OR_GET_OBJECT_ID)[0] == wire.STATUS_FILE_CLOSED   # FileId -1


# -- what is not served ---------------------------------------------------------------------------

def test_a_dfs_referral_for_a_share_that_is_no_dfs_root_is_not_found(client):
    """(Referrals for DFS roots: tests/server/test_dfs.py.)"""
    assert client.ioctl(FSCTL_DFS_GET_REFERRALS, data=b"\x04\0" + wire.utf16("\\x\\s\0"))[0] == \
        0xC0000225       # STATUS_NOT_FOUND, as Samba answers for a share that is no DFS root


@pytest.mark.parametrize("ctl", [FSCTL_PIPE_TRANSCEIVE, FSCTL_GET_INTEGRITY_INFORMATION, 0, 0xFFFFFFFF])
def test_unknown_controls_are_not_supported(client, ctl):
    assert client.ioctl(ctl)[0] == wire.STATUS_NOT_SUPPORTED
    assert client.ioctl(ctl, fid=client.open("f"))[0] == wire.STATUS_NOT_SUPPORTED


def test_an_unknown_control_on_a_closed_file_is_file_closed(client):
    fid = client.open("f")
    assert client.close(fid) == 0
    assert client.ioctl(FSCTL_GET_INTEGRITY_INFORMATION, fid=fid)[0] == wire.STATUS_FILE_CLOSED


def test_an_ioctl_that_is_no_fsctl_is_not_supported(client):
    body = bytearray(ioctl_body(FID_ANY, FSCTL_QUERY_NETWORK_INTERFACE_INFO))
    struct.pack_into("<I", body, 48, 0)              # Flags: not SMB2_0_IOCTL_IS_FSCTL
    assert client.request(wire.IOCTL, bytes(body))[0] == wire.STATUS_NOT_SUPPORTED


def test_a_directory_has_an_object_id_too(client):
    d = client.open("d", options=FILE_DIRECTORY_FILE)
    assert client.ioctl(FSCTL_CREATE_OR_GET_OBJECT_ID, fid=d)[0] == 0


def test_a_max_output_over_max_transact_size(negotiated):
    c = negotiated()
    c.credits = 300
    c.request(wire.ECHO, b"\4\0\0\0")                # gather the credits to pay for it
    status, _ = c.request(wire.IOCTL, ioctl_body(FID_ANY, FSCTL_GET_INTEGRITY_INFORMATION, b"", MAX_IO + 1), charge=129)
    assert status == wire.STATUS_INVALID_PARAMETER
    status, _ = c.request(wire.IOCTL, ioctl_body(FID_ANY, FSCTL_GET_INTEGRITY_INFORMATION, b"", MAX_IO), charge=128)
    assert status == wire.STATUS_NOT_SUPPORTED                  # past the size checks
