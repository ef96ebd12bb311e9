"""The credit window through the connection (MS-SMB2 3.3.1.1, 3.3.5.2.3, 3.3.5.2.5): which
MessageIds a frame may carry, what a request's CreditCharge must pay, and how many credits the
responses grant. A frame outside the window drops the connection (ConnectionError)."""
import pytest
from smbcore import SHORT_BODY, compound, lock_body, read_body

from smbring.smb import wire
from smbring.smb.limits import Limits

KiB = 1024


def echo(client, message_id, credits=1, charge=0):
    """The header of the answer to an ECHO with that MessageId."""
    [(header, _body)] = client.exchange(client.message(wire.ECHO, SHORT_BODY, message_id=message_id,
                                                       credits=credits, charge=charge))
    return header


@pytest.fixture
def client(clients):
    """A client asking for one credit a request: the window moves one id at a time."""
    return clients(credits=1)


@pytest.fixture
def wide(clients):
    """A client that holds 16 credits (MessageIds 1 to 16) after its tree connect."""
    return clients(credits=16)


def test_ids_in_order_each_answered_with_the_credit_asked_for(client):
    for message_id in range(1, 50):
        header = echo(client, message_id)
        assert header.status == wire.STATUS_SUCCESS
        assert header.message_id == message_id and header.credits == 1


def test_ids_out_of_order_inside_the_window(wide):
    for message_id in (16, 3, 1, 2, 9, 4):
        assert echo(wide, message_id).status == wire.STATUS_SUCCESS
    assert wide.conn.credits.low == 5          # the window slid past 1 to 4, not past the gap


@pytest.mark.parametrize("reused", [0, 1, 7])
def test_a_reused_id_drops_the_connection(wide, reused):
    echo(wide, 1)
    echo(wide, 7)                              # above the window's low end: remembered as used
    with pytest.raises(ConnectionError):
        echo(wide, reused)


@pytest.mark.parametrize("beyond", [17, 1000, 2 ** 64 - 1])
def test_an_id_beyond_the_window_drops_the_connection(wide, beyond):
    with pytest.raises(ConnectionError):
        echo(wide, beyond)


def test_the_window_grows_only_by_what_is_granted(client):
    assert echo(client, 1).credits == 1
    with pytest.raises(ConnectionError):       # one id granted, 2 is not
        echo(client, 3)


def test_a_compound_reusing_an_id_of_its_own_is_refused_whole(wide):
    frame = compound([wide.message(wire.ECHO, SHORT_BODY, message_id=1),
                      wide.message(wire.ECHO, SHORT_BODY, message_id=1)])
    with pytest.raises(ConnectionError):
        wide.exchange(frame)


def test_cancel_takes_no_id_and_gets_no_answer(wide):
    echo(wide, 1)
    assert wide.exchange(wide.message(wire.CANCEL, SHORT_BODY, message_id=1)) == []
    assert echo(wide, 2).status == wire.STATUS_SUCCESS


@pytest.fixture
def large_file(wide, share):
    (share / "large").write_bytes(b"x" * (256 * KiB))
    return wide.open("large")


def read(client, fid, length, charge, message_id=None):
    body = read_body(fid, length)
    [(header, _body)] = client.exchange(client.message(wire.READ, body, charge=charge, **(
        {"message_id": message_id} if message_id is not None else {})))
    return header


@pytest.mark.parametrize("length, charge, status", [
    (64 * KiB, 0, wire.STATUS_SUCCESS),        # CreditCharge 0 counts as 1
    (64 * KiB, 1, wire.STATUS_SUCCESS),
    (64 * KiB + 1, 1, wire.STATUS_INVALID_PARAMETER),
    (64 * KiB + 1, 2, wire.STATUS_SUCCESS),
    (256 * KiB, 3, wire.STATUS_INVALID_PARAMETER),
    (256 * KiB, 4, wire.STATUS_SUCCESS),
    (256 * KiB, 6, wire.STATUS_SUCCESS),       # paying more is allowed
])
def test_a_large_read_must_carry_the_credit_charge_it_costs(wide, large_file, length, charge, status):
    assert read(wide, large_file, length, charge).status == status


def test_a_credit_charge_takes_as_many_ids(wide, large_file):
    first = wide.next_message_id
    assert read(wide, large_file, 256 * KiB, 4).status == wire.STATUS_SUCCESS
    assert wide.conn.credits.low == first + 4
    with pytest.raises(ConnectionError):
        echo(wide, first + 2)                  # one of the READ's four


def test_a_credit_charge_over_the_credits_held_drops_the_connection(share, clients):
    c = clients(credits=3)                     # holds 3 after the tree connect
    (share / "f").write_bytes(b"x")
    fid = c.open("f")                          # holds 3 - 1 + 3
    c.credits = 0
    with pytest.raises(ConnectionError):
        read(c, fid, 64 * KiB * 6, 6)


def test_on_2002_a_request_takes_one_id_whatever_its_charge(share, clients):
    c = clients(dialect=wire.SMB202, credits=4)
    (share / "f").write_bytes(b"x" * (64 * KiB))
    fid = c.open("f")
    first = c.next_message_id
    assert read(c, fid, 64 * KiB, 3).status == wire.STATUS_SUCCESS
    assert c.conn.credits.low == first + 1
    assert echo(c, first + 1).status == wire.STATUS_SUCCESS
    assert read(c, fid, 64 * KiB + 1, 2).status == wire.STATUS_INVALID_PARAMETER   # over 64 KiB


@pytest.mark.parametrize("max_credits", [1, 16, 130])
def test_credits_granted_never_exceed_smb2_max_credits(clients, max_credits):
    c = clients(credits=1000, limits=Limits(max_credits=max_credits))
    held = c.conn.credits.granted              # what the tree connect's answer granted
    assert held <= max_credits
    for i in range(3 * max_credits):
        header = echo(c, c.next_message_id, credits=1000 if i % 3 else 0)
        held += header.credits - 1
        assert 1 <= held <= max_credits       # never none: the client could not go on
        assert c.conn.credits.range <= max_credits
    with pytest.raises(ConnectionError):       # the window spans max_credits ids at most
        echo(c, c.conn.credits.low + max_credits)


def test_credits_held_out_of_order_still_bound_the_window(clients):
    c = clients(credits=1000, limits=Limits(max_credits=16))
    low = c.conn.credits.low
    for message_id in range(low + 15, low, -1):   # all but the lowest, highest first
        echo(c, message_id, credits=1000)
    assert c.conn.credits.range <= 16
    with pytest.raises(ConnectionError):
        echo(c, low + 16)


def lock_body_for(fid, flags):
    return lock_body(fid, [(0, 10, flags)])


def test_an_async_final_response_grants_no_credit(wide, share):
    (share / "f").write_bytes(b"x" * 10)
    holder, waiter = wide.open("f"), wide.open("f")
    wide.exchange(wide.message(wire.LOCK, lock_body_for(holder, wire.LOCK_EXCLUSIVE)))
    [(interim, _)] = wide.exchange(wide.message(wire.LOCK, lock_body_for(waiter, wire.LOCK_EXCLUSIVE),
                                                credits=5))
    assert interim.status == wire.STATUS_PENDING and interim.flags & wire.FLAGS_ASYNC
    assert interim.credits == 5                # granted with the interim response
    answers = wide.exchange(wide.message(wire.LOCK, lock_body_for(holder, wire.LOCK_UNLOCK)))
    final = next(h for h, _b in answers if h.message_id == interim.message_id)
    assert final.status == wire.STATUS_SUCCESS and final.async_id == interim.async_id
    assert final.credits == 0
