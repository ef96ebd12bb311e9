"""Message sequencing and credits (MS-SMB2 3.3.1.1, 3.3.5.2.3, 3.3.5.2.5): every MessageId is
used once and only inside the window the server granted, a request pays CreditCharge for its
size, and a client never holds more credits than `smb2 max credits`."""
import pytest

from raw import FSCTL_CREATE_OR_GET_OBJECT_ID, Disconnected, answer_or_drop
from smbring.smb import wire

MiB = 1 << 20


@pytest.fixture(scope="module")
def server(servers):
    return servers()


@pytest.mark.parametrize("which", ["the-negotiates", "the-last-one"])
def test_reused_message_id_disconnects(server, which):
    c, s = server.logon()
    assert c.echo(session=s).status == wire.STATUS_SUCCESS
    used = 0 if which == "the-negotiates" else c.next_message_id - 1
    with pytest.raises(Disconnected):
        c.echo(session=s, message_id=used)


@pytest.mark.parametrize("beyond", [0, 1 << 40], ids=["first-outside", "far-outside"])
def test_message_id_beyond_the_credit_window_disconnects(server, beyond):
    c, s = server.logon()
    with pytest.raises(Disconnected):
        c.echo(session=s, message_id=c.next_message_id + c.credits + beyond)


def test_message_id_anywhere_inside_the_window_is_accepted(server):
    c, s = server.logon()
    last = c.next_message_id + c.credits - 1
    assert c.echo(session=s, message_id=last).status == wire.STATUS_SUCCESS
    assert c.echo(session=s).status == wire.STATUS_SUCCESS     # the ids below it are still free


def test_replayed_signed_write_is_not_applied(server):
    path = server.path("rw") / "replay.txt"
    path.write_bytes(b"")
    c, s = server.logon()
    rw = c.tree(s, "rw")
    fid = rw.open(path.name, wire.GENERIC_READ | wire.GENERIC_WRITE)
    assert rw.write(fid, b"first write").status == wire.STATUS_SUCCESS
    replay = c.last_frame
    assert rw.write(fid, b"SECOND WRITE").status == wire.STATUS_SUCCESS
    replayed_id = wire.Header.parse(replay[4:]).message_id

    def send_again():
        c.send_frame(replay)
        return c.response_to(replayed_id)

    r = answer_or_drop(send_again)
    assert r is None or r.status != wire.STATUS_SUCCESS, r
    assert path.read_bytes() == b"SECOND WRITE"


# requests of 1 MiB (sent or asked for): 16 credits' worth
LARGE = {
    "READ": lambda t, f, d, **k: t.read(f, MiB, **k),
    "WRITE": lambda t, f, d, **k: t.write(f, b"w" * MiB, **k),
    "IOCTL": lambda t, f, d, **k: t.ioctl(f, FSCTL_CREATE_OR_GET_OBJECT_ID, max_output=MiB, **k),
    "QUERY_DIRECTORY": lambda t, f, d, **k: t.query_directory(d, output_length=MiB, **k),
}


@pytest.mark.parametrize("command", LARGE)
@pytest.mark.parametrize("charge", [1, 15, 16])
def test_credit_charge_must_pay_for_the_size(server, command, charge):
    path = server.path("rw") / f"charge-{command}-{charge}.bin"
    path.write_bytes(b"r" * MiB)
    c, s = server.logon()
    rw = c.tree(s, "rw")
    fid = rw.open(path.name, wire.GENERIC_READ | wire.GENERIC_WRITE)
    dir_fid = rw.open("", wire.GENERIC_READ, options=wire.FILE_DIRECTORY_FILE)
    c.grow_credits(64)
    r = LARGE[command](rw, fid, dir_fid, credit_charge=charge)
    if charge < 16:
        assert r.status == wire.STATUS_INVALID_PARAMETER, r
        assert path.read_bytes() == b"r" * MiB
    else:
        assert r.status == wire.STATUS_SUCCESS, r


def test_credits_granted_never_exceed_smb2_max_credits(servers):
    small = servers({"smb2 max credits": 64})
    c = small.client()
    c.credits_requested = 65535
    assert c.negotiate().status == wire.STATUS_SUCCESS
    s = c.logon(small.user, small.password)
    for _ in range(50):
        assert c.echo(session=s).status == wire.STATUS_SUCCESS
    assert c.most_credits <= 64, f"the client held {c.most_credits} credits"
