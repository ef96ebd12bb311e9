"""A file's first open takes shortcuts (its share mode recorded without comparing it with
others, its oplock granted without looking at others): what a later open of the file meets
is the same as when the first open was one of many."""
import pytest
from sansio_client import SHARE_ALL
from smbcore import create_body

from smbring.smb import wire
from smbring.smb.server_state import ServerState

GENERIC_READ = 0x80000000
READ_ATTRIBUTES = 0x80
BATCH, LEVEL_II, NONE = 0x09, 0x01, 0x00


@pytest.fixture
def pair(clients, share):
    (share / "f").write_bytes(b"data")
    state = ServerState()       # one server: its share modes and oplocks
    return clients(state=state), clients(state=state)


def oplock_of(client, name, access=GENERIC_READ, share=SHARE_ALL, oplock=BATCH):
    """(status, the oplock level granted, the FileId) of an open asking for `oplock`."""
    status, body = client.request(wire.CREATE, create_body(name, access, wire.FILE_OPEN, 0,
                                                           share_access=share, oplock=oplock))
    return status, body[2] if status == 0 else None, body[64:80] if status == 0 else None


@pytest.mark.parametrize("first_share", [0, 1])     # shares nothing; shares reading only
def test_the_first_opens_share_mode_refuses_what_it_does_not_share(pair, first_share):
    first, second = pair
    fid = first.open("f", access=GENERIC_READ, share=first_share, disposition=wire.FILE_OPEN)
    expected = wire.STATUS_SHARING_VIOLATION if first_share == 0 else 0
    status, other = second.create("f", access=GENERIC_READ, share=SHARE_ALL, disposition=wire.FILE_OPEN)
    assert status == expected
    # writing is shared by neither: refused whatever the first shares
    assert second.create("f", access=wire.FILE_WRITE_DATA, disposition=wire.FILE_OPEN)[0] == \
        wire.STATUS_SHARING_VIOLATION
    # an open that does not share reading is refused beside a reader
    assert second.create("f", access=READ_ATTRIBUTES | wire.FILE_READ_DATA, share=0,
                         disposition=wire.FILE_OPEN)[0] == wire.STATUS_SHARING_VIOLATION
    if other is not None:
        assert second.close(other) == 0
    assert first.close(fid) == 0
    status, again = second.create("f", access=GENERIC_READ, share=0, disposition=wire.FILE_OPEN)
    assert status == 0 and second.close(again) == 0     # nothing left behind by the close


def test_an_attribute_only_first_open_takes_no_part_in_share_modes(pair):
    first, second = pair
    fid = first.open("f", access=READ_ATTRIBUTES, share=0, disposition=wire.FILE_OPEN)
    status, other = second.create("f", access=GENERIC_READ | wire.FILE_WRITE_DATA, share=0,
                                  disposition=wire.FILE_OPEN)
    assert status == 0
    # and the reader-writer that shares nothing now refuses a third open
    assert first.create("f", access=GENERIC_READ, disposition=wire.FILE_OPEN)[0] == \
        wire.STATUS_SHARING_VIOLATION
    assert second.close(other) == 0 and first.close(fid) == 0


def test_the_only_open_gets_the_oplock_it_asks_for_and_a_second_one_less(pair):
    first, second = pair
    status, level, fid = oplock_of(first, "f")
    assert (status, level) == (0, BATCH)
    # the batch is recorded for it: a second open waits for the holder's answer
    answers = second.send(wire.CREATE, create_body("f", GENERIC_READ, wire.FILE_OPEN, 0,
                                                   share_access=SHARE_ALL, oplock=BATCH))
    assert [s for s, _ in answers] == [wire.STATUS_PENDING]
    assert first.close(fid) == 0
    # the held CREATE goes on once the holder closes: the file's only open again, it is
    # granted what it asked for
    late = second.outbox()
    assert [(s, body[2]) for s, body in late] == [(0, BATCH)]


def test_a_second_open_beside_a_reader_gets_level_ii_not_batch(pair):
    first, second = pair
    status, level, fid = oplock_of(first, "f", oplock=LEVEL_II)
    assert (status, level) == (0, LEVEL_II)
    status, level, other = oplock_of(second, "f")
    assert (status, level) == (0, LEVEL_II)     # another open reads the file: no WRITE caching
    assert second.close(other) == 0 and first.close(fid) == 0
    status, level, fid = oplock_of(second, "f")
    assert (status, level) == (0, BATCH)        # alone again: all of it
    assert second.close(fid) == 0


def test_an_attribute_only_open_gets_no_oplock_on_a_file_it_did_not_make(pair):
    first, _second = pair
    status, level, fid = oplock_of(first, "f", access=READ_ATTRIBUTES)
    assert (status, level) == (0, NONE)
    assert first.close(fid) == 0
