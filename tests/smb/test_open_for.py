"""Connection.open_for, the open a request names, looked up and checked in one C call
(smbring._wire.OpenFinder): found only through the session and tree connect that made it,
a related request's FileId -1 taken from its chain, a pipe told from a file, the request's
ChannelSequence taken, the CREATE's replay entry forgotten; wrong calls and objects missing
what it reads raise, never crash (run under AddressSanitizer by `make test-asan`)."""
import dataclasses
from types import SimpleNamespace

import pytest
from smbcore import create_body

from smbring._wire import OpenFinder
from smbring.smb import connection, wire
from smbring.smb.errors import SMBError
from smbring.smb.state import FID_ANY, Chain, Open, Pipe

ALL = 0x001F01FF


@pytest.fixture
def opened(client):
    """(client, the FileId of a file it opened)."""
    status, body = client.request(wire.CREATE, create_body("f", ALL, wire.FILE_OPEN_IF, 0, share_access=7))
    assert status == 0
    return client, bytes(body[64:80])


def hdr_of(client, command=wire.READ, **fields) -> wire.Header:
    return wire.Header(command=command, session_id=fields.pop("session_id", 1),
                       tree_id=fields.pop("tree_id", client.tid), **fields)


def status_of(call) -> int:
    with pytest.raises(SMBError) as e:
        call()
    return e.value.status


def test_found_through_its_session_and_tree(opened):
    c, fid = opened
    chain = Chain()
    o = c.conn.open_for(fid, chain, hdr_of(c))
    assert o is c.conn.client.opens[fid] and isinstance(o, Open)
    assert chain.fid == fid and type(chain.fid) is bytes
    # any bytes-like FileId, kept in the chain as bytes
    chain = Chain()
    assert c.conn.open_for(memoryview(bytearray(fid)), chain, hdr_of(c)) is o
    assert chain.fid == fid and type(chain.fid) is bytes
    # as a bound method, and through the class
    assert getattr(c.conn, "open_for")(fid, Chain(), hdr_of(c)) is o
    assert connection.Connection.open_for(c.conn, fid, Chain(), hdr_of(c)) is o


@pytest.mark.parametrize("case", ["another session", "another tree", "unknown", "closing"])
def test_closed_as_far_as_the_client_can_tell(opened, case):
    c, fid = opened
    hdr = hdr_of(c)
    if case == "another session":
        hdr.session_id = 2
    elif case == "another tree":
        hdr.tree_id = c.tid + 1
    elif case == "unknown":
        fid = bytes(16)
    else:
        c.conn.client.opens[fid].closing = True
    chain = Chain()
    assert status_of(lambda: c.conn.open_for(fid, chain, hdr)) == wire.STATUS_FILE_CLOSED
    assert chain.fid is None        # nothing taken from a request refused


def test_a_related_request_names_the_previous_open(opened):
    c, fid = opened
    chain = Chain(related=True, fid=fid)
    assert c.conn.open_for(FID_ANY, chain, hdr_of(c)) is c.conn.client.opens[fid]
    # not related: FileId -1 is a FileId like any other (none such)
    assert status_of(lambda: c.conn.open_for(FID_ANY, Chain(fid=fid), hdr_of(c))) == wire.STATUS_FILE_CLOSED
    # related, no previous open: the CREATE it depended on failed, and says how
    failed = Chain(related=True, create_error=wire.STATUS_OBJECT_NAME_NOT_FOUND)
    assert status_of(lambda: c.conn.open_for(FID_ANY, failed, hdr_of(c))) == wire.STATUS_OBJECT_NAME_NOT_FOUND
    assert status_of(lambda: c.conn.open_for(FID_ANY, Chain(related=True), hdr_of(c))) == wire.STATUS_FILE_CLOSED


def test_a_file_is_not_a_pipe_nor_a_pipe_a_file(opened):
    c, fid = opened
    assert status_of(lambda: c.conn.open_for(fid, Chain(), hdr_of(c), kind=Pipe)) == \
        wire.STATUS_INVALID_DEVICE_REQUEST
    assert status_of(lambda: c.conn.open_for(fid, Chain(), hdr_of(c), Pipe)) == wire.STATUS_INVALID_DEVICE_REQUEST
    pipe_fid = b"p" * 16
    c.conn.client.opens[pipe_fid] = Pipe(name="srvsvc", endpoint=None, fid=pipe_fid, session_id=1, tree_id=c.tid)
    try:
        for command, status in [(wire.SET_INFO, wire.STATUS_NOT_SUPPORTED), (wire.FLUSH, wire.STATUS_NOT_IMPLEMENTED),
                                (wire.IOCTL, wire.STATUS_FS_DRIVER_REQUIRED),
                                (wire.READ, wire.STATUS_INVALID_DEVICE_REQUEST)]:
            assert status_of(lambda: c.conn.open_for(pipe_fid, Chain(), hdr_of(c, command))) == status
        assert c.conn.open_for(pipe_fid, Chain(), hdr_of(c), kind=Pipe).name == "srvsvc"
    finally:
        del c.conn.client.opens[pipe_fid]


def test_channel_sequence_taken_on_smb3(opened):
    c, fid = opened
    o = c.conn.client.opens[fid]
    assert c.conn.open_for(fid, Chain(), hdr_of(c, status=5)) is o and o.channel_sequence == 5
    # older: a READ goes on, a WRITE is refused
    assert c.conn.open_for(fid, Chain(), hdr_of(c, status=4)) is o and o.channel_sequence == 5
    assert status_of(lambda: c.conn.open_for(fid, Chain(), hdr_of(c, wire.WRITE, status=4))) == \
        wire.STATUS_FILE_NOT_AVAILABLE
    # (only the low 16 bits are the ChannelSequence)
    assert c.conn.open_for(fid, Chain(), hdr_of(c, status=0x50005)) is o and o.channel_sequence == 5
    # SMB 2.x has none
    c.conn.dialect = wire.SMB210
    assert c.conn.open_for(fid, Chain(), hdr_of(c, wire.WRITE, status=1)) is o and o.channel_sequence == 5


def test_the_creates_replay_entry_goes_at_first_use(opened):
    c, fid = opened
    o = c.conn.client.opens[fid]
    key = (b"client", b"create-guid")
    c.conn.state.durable.remember(key, o, wire.FILE_OPENED)
    assert c.conn.state.durable.created(key) is not None and o.create_key == key
    c.conn.open_for(fid, Chain(), hdr_of(c))
    assert c.conn.state.durable.created(key) is None and o.create_key is None
    # another CREATE of the same key takes the entry over: the first open forgets its key
    c.conn.state.durable.remember(key, o, wire.FILE_OPENED)
    other = dataclasses.replace(o)
    c.conn.state.durable.remember(key, other, wire.FILE_CREATED)
    assert o.create_key is None and other.create_key == key
    c.conn.state.durable.forget(o)
    assert c.conn.state.durable.created(key) == (other, wire.FILE_CREATED)
    c.conn.state.durable.forget(other)
    assert c.conn.state.durable.created(key) is None and c.conn.state.durable.held() == 0


@pytest.mark.parametrize("args, kwargs, message", [
    ((), {}, "open_for"),
    ((b"x", Chain()), {}, "open_for"),
    ((b"x", Chain(), None, Open, Open), {}, "open_for"),
    ((b"x", Chain(), None), {"other": Open}, "the only keyword is kind"),
    ((b"x", Chain(), None), {"kind": Open, "other": 1}, "the only keyword is kind"),
    ((b"x", Chain(), None, Open), {"kind": Open}, "open_for"),
])
def test_wrong_calls_raise(client, args, kwargs, message):
    with pytest.raises(TypeError, match=message):
        client.conn.open_for(*args, **kwargs)


def test_objects_missing_what_it_reads_raise(opened):
    c, fid = opened
    hdr = hdr_of(c)
    with pytest.raises(AttributeError):
        connection._open_for(SimpleNamespace(), fid, Chain(), hdr)          # no client
    with pytest.raises(AttributeError):
        connection._open_for(SimpleNamespace(client=None), fid, Chain(), hdr)
    with pytest.raises(AttributeError):
        connection._open_for(c.conn, fid, object(), hdr)                   # FileId -1 needs chain.related
    with pytest.raises(AttributeError):
        connection._open_for(c.conn, fid, Chain(), object())               # no session_id
    with pytest.raises(TypeError):
        connection._open_for(c.conn, 5, Chain(), hdr)                      # not bytes-like
    # an opens table that is no dict is asked with .get
    table = SimpleNamespace(get=lambda key: c.conn.client.opens.get(key))
    conn = SimpleNamespace(client=SimpleNamespace(opens=table), dialect=c.conn.dialect, state=c.conn.state)
    assert connection._open_for(conn, fid, Chain(), hdr) is c.conn.client.opens[fid]
    # the durable table is asked only of an open a replayable CREATE made (its create_key);
    # an exception raised by the ChannelSequence check or the durable table comes through
    conn.state = SimpleNamespace()
    assert connection._open_for(conn, fid, Chain(), hdr) is c.conn.client.opens[fid]
    c.conn.client.opens[fid].create_key = (b"client", b"create-guid")
    with pytest.raises(AttributeError):
        connection._open_for(conn, fid, Chain(), hdr)
    conn.dialect = "3.0"
    with pytest.raises(TypeError):
        connection._open_for(conn, fid, Chain(), hdr)


def test_finders_refused():
    args = (Open, SMBError, {}, lambda o, h: None, FID_ANY, 0x300, 0xC0000128, 0xC0000010)
    finder = OpenFinder(*args)
    with pytest.raises(TypeError, match="already initialised"):
        finder.__init__(*args)
    with pytest.raises(TypeError, match="not callable"):
        OpenFinder(Open, SMBError, {}, None, FID_ANY, 0x300, 0xC0000128, 0xC0000010)
    with pytest.raises(TypeError):
        OpenFinder(Open, SMBError, [], len, FID_ANY, 0x300, 0xC0000128, 0xC0000010)
    with pytest.raises(TypeError):
        OpenFinder(Open, SMBError, {}, len, "not bytes", 0x300, 0xC0000128, 0xC0000010)
    with pytest.raises(RuntimeError, match="not initialised"):
        OpenFinder.__new__(OpenFinder)(None, b"", None, None)
