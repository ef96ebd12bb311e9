"""A request that ends an open (CLOSE, TREE_DISCONNECT, LOGOFF) or makes it durable (FLUSH)
answers once the file I/O the shell has under way on it (a WRITE of another channel) has
ended, as Samba's CLOSE waits for its open's aio requests: the core says so with a `Settle`
where the shell reports I/O under way (Connection.io_under_way), and nothing else."""
import struct

import pytest
from sansio_client import sent
from smbcore import SHORT_BODY, close_body, flush_body, read_body

from smbring.smb import wire
from smbring.smb.effects import Flush, Send, Settle


@pytest.fixture
def share(share):
    (share / "f").write_bytes(b"x" * 100)
    return share


@pytest.fixture
def fid(client):
    return client.open("f")


def under_way(client, fid):
    """The shell reports I/O under way on the open's descriptor (and no other)."""
    fd = client.conn.opens[fid].fd
    client.conn.io_under_way = lambda d: d == fd
    return fd


def handle(client, command, body, **header):
    return client.conn.handle_frame(client.message(command, body, **header))


def test_a_close_answers_at_once_where_no_io_is_under_way(client, fid):
    client.conn.io_under_way = lambda fd: False
    [(header, _body)] = sent(handle(client, wire.CLOSE, close_body(fid)))
    assert header.status == 0 and fid not in client.conn.opens


def test_a_close_waits_for_the_io_under_way_and_reports_what_it_wrote(client, fid, share):
    fd = under_way(client, fid)
    [settle] = handle(client, wire.CLOSE, close_body(fid, wire.CLOSE_FLAG_POSTQUERY_ATTRIB))
    assert isinstance(settle, Settle) and settle.fds == (fd,)
    assert fid in client.conn.opens        # not closed yet
    # meanwhile no request reaches the open (as Samba's closing fsp): no new I/O starts
    [(header, _body)] = sent(handle(client, wire.READ, read_body(fid, 10)))
    assert header.status == wire.STATUS_FILE_CLOSED
    (share / "f").write_bytes(b"x" * 4096)      # what the WRITE under way leaves
    [(header, body)] = sent(settle.then(None))
    assert header.status == 0 and fid not in client.conn.opens
    assert struct.unpack_from("<Q", body, 48)[0] == 4096      # EndOfFile


def test_a_close_whose_open_was_closed_meanwhile(client, fid):
    under_way(client, fid)
    [settle] = handle(client, wire.CLOSE, close_body(fid))
    client.conn.close_open(client.conn.opens[fid])      # (its connection lost, say)
    [(header, _body)] = sent(settle.then(None))
    assert header.status == wire.STATUS_FILE_CLOSED


def test_a_flush_waits_for_the_io_under_way_before_it_syncs(client, fid):
    fd = under_way(client, fid)
    [settle] = handle(client, wire.FLUSH, flush_body(fid))
    assert isinstance(settle, Settle) and settle.fds == (fd,)
    [flush] = settle.then(None)
    assert isinstance(flush, Flush) and flush.fd == fd
    [(header, _body)] = sent(flush.then(0))
    assert header.status == 0


@pytest.mark.parametrize("command", [wire.TREE_DISCONNECT, wire.LOGOFF])
def test_a_tree_disconnect_or_logoff_waits_for_the_io_under_way(client, fid, command):
    fd = under_way(client, fid)
    [settle] = handle(client, command, SHORT_BODY)
    assert isinstance(settle, Settle) and settle.fds == (fd,)
    assert fid in client.conn.opens
    [(header, _body)] = sent(settle.then(None))
    assert header.status == 0 and fid not in client.conn.opens


def test_a_compound_ending_in_a_close_waits_in_its_place(client, fid):
    """WRITE and CLOSE compounded: the CLOSE waits where it is, the responses go together."""
    from smbcore import compound, write_body
    under_way(client, fid)
    frame = compound([client.message(wire.WRITE, write_body(fid, b"abc")),
                      client.message(wire.CLOSE, close_body(fid))])
    todo = client.conn.handle_frame(frame)
    while not isinstance(todo[-1], Settle):     # (the WRITE, carried out)
        todo = todo[-1].then(3)
    [(w, _), (c, _)] = sent(todo[-1].then(None))
    assert (w.status, c.status) == (0, 0) and not any(isinstance(e, Send) for e in todo)
