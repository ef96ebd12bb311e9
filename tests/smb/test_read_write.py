"""READ, WRITE and FLUSH through the sans-I/O connection: the effects the core asks of the shell
(smb.effects) and the answers once the shell calls `then` with the outcome.

A lone unsigned READ passes its data through as a FileRange (never read by the core); a signed,
sealed or compounded READ asks for it with ReadInto and resumes. A WRITE is a Write effect,
answered only after `then`; a lone WRITE in a plain frame runs in the background, and later
frames first Drain what they must see written."""
import errno
import os
import struct

import pytest
from sansio_client import parse, sent
from smbcore import SHORT_BODY, close_body, compound, flush_body, lock_body, read_body, write_body

from smbring.smb import security, wire
from smbring.smb.effects import Drain, FileRange, Flush, ReadInto, Send, Write
from smbring.smb.fileinfo import MAX_FILE_SIZE
from smbring.smb.limits import MAX_IO

DATA = bytes(range(256)) * 40          # 10240 bytes
WRITE_THROUGH = 0x1


@pytest.fixture
def share(share):
    """The share with the files these tests use."""
    (share / "f").write_bytes(DATA)
    return share


@pytest.fixture
def fid(client):
    return client.open("f")


def fd_of(client, fid):
    return client.conn.opens[fid].fd


def read(client, fid, length, offset=0, **header):
    """The effects of one READ frame."""
    return client.conn.handle_frame(client.message(wire.READ, read_body(fid, length, offset), **header))


def write(client, fid, data, offset=0, flags=0, **header):
    """The effects of one WRITE frame."""
    return client.conn.handle_frame(client.message(wire.WRITE, write_body(fid, data, offset, flags), **header))


def echo(client):
    return client.conn.handle_frame(client.message(wire.ECHO, SHORT_BODY))


def answer(effects):
    """The one response the effects send (carried out): (header, body)."""
    [response] = sent(effects)
    return response


def read_data(body):
    """The data of a READ response body."""
    offset, length = struct.unpack_from("<BxI", body, 2)
    return body[offset - 64:offset - 64 + length]


def written_count(body):
    return struct.unpack_from("<I", body, 4)[0]


# -- READ ---------------------------------------------------------------------------------------

def test_a_lone_unsigned_read_passes_a_file_range_through(client, fid, share):
    [effect] = read(client, fid, 1000, offset=100)
    assert isinstance(effect, Send)
    assert effect.payload == FileRange(fd_of(client, fid), 100, 1000, "s")
    header, body = parse(bytes(effect.message))
    assert header.status == 0 and header.flags & wire.FLAGS_SERVER_TO_REDIR
    assert len(body) == 16 and struct.unpack_from("<BxI", body, 2) == (80, 1000)   # data follows
    (share / "f").write_bytes(b"\xee" * len(DATA))   # the core read nothing: the shell reads now
    _header, body = answer([effect])
    assert read_data(body) == b"\xee" * 1000


def test_a_read_near_the_end_of_file_is_short(client, fid):
    [effect] = read(client, fid, 1000, offset=len(DATA) - 10)
    assert effect.payload.length == 10


@pytest.mark.parametrize("offset", [len(DATA), len(DATA) + 1, 2 ** 62])
def test_a_read_at_or_past_the_end_of_file(client, fid, offset):
    header, _body = answer(read(client, fid, 10, offset=offset))
    assert header.status == wire.STATUS_END_OF_FILE


@pytest.mark.parametrize("offset", [2 ** 63 - 5, 2 ** 64 - 1])
def test_a_read_ending_past_the_largest_offset(client, fid, offset):
    assert answer(read(client, fid, 10, offset=offset))[0].status == wire.STATUS_INVALID_PARAMETER


def test_a_read_short_of_its_minimum_count(client, fid):
    body = bytearray(read_body(fid, 100, len(DATA) - 10))
    struct.pack_into("<I", body, 32, 11)                    # MinimumCount
    assert client.request(wire.READ, bytes(body))[0] == wire.STATUS_END_OF_FILE
    struct.pack_into("<I", body, 32, 10)
    assert client.request(wire.READ, bytes(body))[0] == wire.STATUS_SUCCESS


def test_read_path_and_splice_safety_come_with_the_range(clients):
    c = clients(share={"read_path": "copy"})
    reader = c.open("f", access=wire.GENERIC_READ)
    [effect] = read(c, reader, 10)
    assert effect.splice_safe and effect.read_path == "copy"
    c.open("f", access=wire.GENERIC_WRITE)                  # a writer: splice could see it change
    [effect] = read(c, reader, 10)
    assert not effect.splice_safe


def test_a_compound_read_reads_into_memory_and_resumes(client, fid):
    frame = compound([client.message(wire.READ, read_body(fid, 100, 10)),
                      client.message(wire.ECHO, SHORT_BODY)])
    [effect] = client.conn.handle_frame(frame)
    assert isinstance(effect, ReadInto)
    assert effect.range == FileRange(fd_of(client, fid), 10, 100, "s") and len(effect.into) == 100
    effect.into[:] = b"z" * 100                 # what the shell read: the core sends that
    [done] = effect.then(100)
    assert isinstance(done, Send) and not isinstance(done.payload, FileRange)
    (read_header, read_body_), (echo_header, _) = sent([done])
    assert read_header.status == 0 and read_data(read_body_) == b"z" * 100
    assert echo_header.command == wire.ECHO


def test_a_compound_reads_before_a_later_close_of_its_file(client, fid):
    frame = compound([client.message(wire.READ, read_body(fid, 100)), client.message(wire.CLOSE, close_body(fid))])
    [effect] = client.conn.handle_frame(frame)
    assert isinstance(effect, ReadInto) and fid in client.conn.opens     # not closed yet
    [(read_header, body), (close_header, _)] = sent([effect])
    assert read_data(body) == DATA[:100] and close_header.status == 0
    assert fid not in client.conn.opens


def test_a_read_the_shell_fails_is_answered_with_its_status(client, fid):
    frame = compound([client.message(wire.READ, read_body(fid, 100)), client.message(wire.ECHO, SHORT_BODY)])
    [effect] = client.conn.handle_frame(frame)
    [done] = effect.then(OSError(errno.ENOMEM, "no memory"))
    read_header, _ = sent([done])[0]
    assert read_header.status == wire.STATUS_INSUFFICIENT_RESOURCES


SIGNING_KEY = bytes(range(16))


def test_a_signed_read_is_read_into_memory_and_signed(client, fid):
    client.conn.sessions[1].signing_key = SIGNING_KEY
    request = bytearray(client.message(wire.READ, read_body(fid, 100)))
    security.apply_signature(client.conn.sign_algorithm(), SIGNING_KEY, request)
    [effect] = client.conn.handle_frame(bytes(request))
    assert isinstance(effect, ReadInto)
    [done] = carry_into(effect)
    response = bytes(done.message)
    assert wire.Header.parse(response).flags & wire.FLAGS_SIGNED
    assert security.verify(client.conn.sign_algorithm(), SIGNING_KEY, response)
    assert read_data(response[64:]) == DATA[:100]


def carry_into(effect: ReadInto):
    """Reads the range as the shell would and resumes the core."""
    r = effect.range
    effect.into[:] = os.pread(r.fd, r.length, r.offset)
    return effect.then(r.length)


def seal_session(client):
    """Session 1 encrypts from now on; (the key the client seals with, the key it opens with)."""
    s = client.conn.sessions[1]
    client.conn.cipher = security.AES_128_GCM
    s.decrypt_key, s.encrypt_key, s.encrypt = b"c" * 16, b"s" * 16, True
    return s.decrypt_key, s.encrypt_key


def sealed(key, plaintext: bytes) -> bytes:
    transform, ciphertext = security.encrypt(security.AES_128_GCM, key, 1, plaintext)
    return transform + bytes(ciphertext)


def test_a_sealed_read_is_read_into_a_buffer_and_sealed(client, fid):
    to_server, to_client = seal_session(client)
    [effect] = client.conn.handle_frame(sealed(to_server, client.message(wire.READ, read_body(fid, 100, 5))))
    assert isinstance(effect, ReadInto)
    [done] = carry_into(effect)
    plain = security.decrypt(security.AES_128_GCM, to_client, bytes(done.message) + bytes(done.payload))
    assert wire.Header.parse(plain).status == 0 and read_data(plain[64:]) == DATA[5:105]


def test_a_read_over_max_read_size(clients):
    c = clients(credits=300)                        # enough for the CreditCharge
    fid = c.open("f")
    assert answer(read(c, fid, MAX_IO + 1, charge=129))[0].status == wire.STATUS_INVALID_PARAMETER
    assert isinstance(read(c, fid, MAX_IO, charge=128)[0], Send)


def test_a_read_of_a_directory(client):
    d = client.open("d", options=wire.FILE_DIRECTORY_FILE)
    assert answer(read(client, d, 10))[0].status == wire.STATUS_INVALID_DEVICE_REQUEST


def test_a_read_needs_read_access(client):
    fid = client.open("f", access=wire.FILE_WRITE_DATA)
    assert answer(read(client, fid, 10))[0].status == wire.STATUS_ACCESS_DENIED
    fid = client.open("f", access=wire.FILE_EXECUTE)       # execute reads too
    assert answer(read(client, fid, 10))[0].status == wire.STATUS_SUCCESS


# -- WRITE ----------------------------------------------------------------------------------------

def test_a_lone_write_is_a_background_write_answered_after_then(client, fid, share):
    [effect] = write(client, fid, b"new data", offset=3)
    assert isinstance(effect, Write) and effect.background
    assert (effect.share, effect.fd, effect.offset, bytes(effect.data)) == ("s", fd_of(client, fid), 3, b"new data")
    assert (share / "f").read_bytes() == DATA              # the core wrote nothing
    os.pwrite(effect.fd, effect.data, effect.offset)
    header, body = answer(effect.then(len(effect.data)))
    assert header.status == 0 and written_count(body) == 8
    assert (share / "f").read_bytes()[:11] == DATA[:3] + b"new data"


def test_the_write_answer_carries_the_count_the_shell_reports(client, fid):
    [effect] = write(client, fid, b"x" * 100)
    _header, body = answer(effect.then(100))
    assert written_count(body) == 100


def test_a_write_in_a_compound_is_not_in_the_background(client, fid):
    frame = compound([client.message(wire.WRITE, write_body(fid, b"abc")), client.message(wire.ECHO, SHORT_BODY)])
    [effect] = client.conn.handle_frame(frame)
    assert isinstance(effect, Write) and not effect.background
    [done] = effect.then(3)
    assert [h.command for h, _ in sent([done])] == [wire.WRITE, wire.ECHO]


def test_a_sealed_write_is_not_in_the_background(client, fid):
    to_server, _to_client = seal_session(client)
    [effect] = client.conn.handle_frame(sealed(to_server, client.message(wire.WRITE, write_body(fid, b"abc"))))
    assert isinstance(effect, Write) and not effect.background and bytes(effect.data) == b"abc"


def test_a_write_through_write_is_flushed_before_it_is_answered(client, fid):
    [effect] = write(client, fid, b"durable", flags=WRITE_THROUGH)
    assert isinstance(effect, Write)
    [flush] = effect.then(7)
    assert isinstance(flush, Flush) and (flush.share, flush.fd) == ("s", fd_of(client, fid))
    header, body = answer(flush.then(0))
    assert header.status == 0 and written_count(body) == 7


def test_a_write_through_whose_flush_fails(client, fid):
    [effect] = write(client, fid, b"durable", flags=WRITE_THROUGH)
    [flush] = effect.then(7)
    assert answer(flush.then(OSError(errno.ENOSPC, "full")))[0].status == wire.STATUS_DISK_FULL


def test_a_failed_write_is_not_flushed(client, fid):
    [effect] = write(client, fid, b"durable", flags=WRITE_THROUGH)
    assert answer(effect.then(OSError(errno.EDQUOT, "quota")))[0].status == wire.STATUS_DISK_FULL


@pytest.mark.parametrize("error, status", [
    (OSError(errno.ENOSPC, "full"), wire.STATUS_DISK_FULL),
    (OSError(errno.EFBIG, "too big"), wire.STATUS_DISK_FULL),
    (OSError(errno.EROFS, "read-only"), wire.STATUS_MEDIA_WRITE_PROTECTED),
    (OSError(errno.EACCES, "denied"), wire.STATUS_ACCESS_DENIED),
    (RuntimeError("a bug in the shell"), wire.STATUS_INTERNAL_ERROR),
])
def test_a_write_the_shell_fails_is_answered_with_its_status(client, fid, error, status):
    [effect] = write(client, fid, b"abc")
    assert answer(effect.then(error))[0].status == status
    assert not any(isinstance(e, Drain) for e in echo(client))   # nothing left in flight


def test_flush(client, fid):
    [effect] = client.conn.handle_frame(client.message(wire.FLUSH, flush_body(fid)))
    assert isinstance(effect, Flush) and effect.fd == fd_of(client, fid)
    assert answer(effect.then(0))[0].status == 0
    [effect] = client.conn.handle_frame(client.message(wire.FLUSH, flush_body(fid)))
    assert answer(effect.then(OSError(errno.EROFS, "ro")))[0].status == wire.STATUS_MEDIA_WRITE_PROTECTED


# -- background writes and the frames after them ---------------------------------------------

def test_a_later_frame_drains_the_background_writes_first(client, fid):
    [pending] = write(client, fid, b"abc")
    effects = echo(client)
    assert len(effects) == 1 and isinstance(effects[0], Drain) and effects[0].fd is None
    pending.then(3)                                       # the write completes
    [after] = effects[0].then(None)
    assert isinstance(after, Send) and parse(bytes(after.message))[0].command == wire.ECHO


def test_a_read_after_a_background_write_drains_first(client, fid):
    [pending] = write(client, fid, b"abc")
    [drain] = read(client, fid, 3)
    assert isinstance(drain, Drain)
    answer(pending.then(3))
    [send] = drain.then(None)
    assert isinstance(send.payload, FileRange)


def test_a_lone_write_beside_a_background_write_does_not_wait(client, fid):
    [first] = write(client, fid, b"abc", offset=0)
    [second] = write(client, fid, b"def", offset=3)       # adjacent, not overlapping
    assert isinstance(second, Write) and second.background
    other = client.open("f")
    [third] = write(client, other, b"ghi", offset=0)      # another descriptor
    assert isinstance(third, Write)
    for effect in (first, second, third):
        effect.then(3)


def test_an_overlapping_lone_write_drains_that_range(client, fid):
    [first] = write(client, fid, b"abcdef", offset=10)
    [drain] = write(client, fid, b"xyz", offset=15)
    assert isinstance(drain, Drain) and (drain.fd, drain.start, drain.end) == (fd_of(client, fid), 15, 18)
    answer(first.then(6))
    [second] = drain.then(None)
    assert isinstance(second, Write) and second.offset == 15 and second.background
    assert answer(second.then(3))[0].status == 0


def test_once_written_nothing_is_drained(client, fid):
    [effect] = write(client, fid, b"abc")
    answer(effect.then(3))
    [send] = echo(client)
    assert isinstance(send, Send)


# -- WRITE's checks ---------------------------------------------------------------------------

def test_a_write_needs_write_access(client):
    fid = client.open("f", access=wire.GENERIC_READ)
    assert answer(write(client, fid, b"abc"))[0].status == wire.STATUS_ACCESS_DENIED
    fid = client.open("f", access=wire.FILE_APPEND_DATA)
    assert isinstance(write(client, fid, b"abc")[0], Write)


def test_a_write_on_a_read_only_share(share, clients):
    c = clients(share={"read_only": True})
    fid = c.open("f", access=wire.MAXIMUM_ALLOWED)
    assert answer(write(c, fid, b"abc"))[0].status == wire.STATUS_ACCESS_DENIED
    assert (share / "f").read_bytes() == DATA


def test_write_data_outside_the_message(client, fid):
    body = bytearray(write_body(fid, b"abc"))
    struct.pack_into("<I", body, 4, 4)                    # Length one past the data
    assert client.request(wire.WRITE, bytes(body))[0] == wire.STATUS_INVALID_PARAMETER
    struct.pack_into("<HI", body, 2, 0xFFF0, 3)           # DataOffset past the message
    assert client.request(wire.WRITE, bytes(body))[0] == wire.STATUS_INVALID_PARAMETER


@pytest.mark.parametrize("offset, status", [
    (MAX_FILE_SIZE, wire.STATUS_INVALID_PARAMETER),
    (MAX_FILE_SIZE - 2, wire.STATUS_DISK_FULL),            # would end past NTFS's largest file
    (2 ** 63 - 2, wire.STATUS_INVALID_PARAMETER),
])
def test_a_write_past_the_largest_file(client, fid, offset, status):
    assert answer(write(client, fid, b"abc", offset=offset))[0].status == status


def test_a_write_of_nothing_far_out_is_no_write_of_data(client, fid):
    [effect] = write(client, fid, b"", offset=MAX_FILE_SIZE + 10)
    assert isinstance(effect, Write) and len(effect.data) == 0


# -- byte-range locks -------------------------------------------------------------------------------

def lock(client, fid, offset, length, flags):
    [(status, _)] = client.send(wire.LOCK, lock_body(fid, [(offset, length, flags | wire.LOCK_FAIL_IMMEDIATELY)]))
    assert status == 0


@pytest.mark.parametrize("held, reading, writing", [
    (wire.LOCK_EXCLUSIVE, wire.STATUS_FILE_LOCK_CONFLICT, wire.STATUS_FILE_LOCK_CONFLICT),
    (wire.LOCK_SHARED, wire.STATUS_SUCCESS, wire.STATUS_FILE_LOCK_CONFLICT),
])
def test_locks_of_another_open(client, fid, held, reading, writing):
    other = client.open("f")
    lock(client, other, 100, 10, held)
    assert answer(read(client, fid, 10, offset=105))[0].status == reading
    assert answer(write(client, fid, b"x" * 10, offset=95))[0].status == writing
    assert isinstance(write(client, fid, b"x" * 10, offset=110)[0], Write)   # beside the range


def test_an_opens_own_exclusive_lock_lets_it_read_and_write(client, fid):
    lock(client, fid, 100, 10, wire.LOCK_EXCLUSIVE)
    assert isinstance(read(client, fid, 10, offset=100)[0].payload, FileRange)
    assert isinstance(write(client, fid, b"x", offset=100)[0], Write)


def flushed_before_answer(client, fid, flags=0) -> bool:
    """Whether one WRITE is flushed before it is answered (a Flush follows its Write)."""
    [effect] = write(client, fid, b"durable", flags=flags)
    assert isinstance(effect, Write)
    [after] = effect.then(7)
    if isinstance(after, Flush):
        assert written_count(answer(after.then(0))[1]) == 7
        return True
    return False


def test_unbuffered_writes_and_write_through_handles_are_flushed_before_they_are_answered(client):
    """WRITEFLAG_WRITE_UNBUFFERED (as Samba takes it), and every WRITE through a handle opened
    with FILE_WRITE_THROUGH (MS-SMB2 2.2.13); a plain WRITE on a plain handle is not."""
    plain = client.open("f", access=wire.GENERIC_READ | wire.GENERIC_WRITE)
    through = client.open("f", access=wire.GENERIC_READ | wire.GENERIC_WRITE, options=wire.FILE_WRITE_THROUGH)
    assert not flushed_before_answer(client, plain)
    assert flushed_before_answer(client, plain, flags=0x2)
    assert flushed_before_answer(client, through)


def test_sync_always_flushes_every_write(clients, share):
    """smb.conf's `sync always = yes`: every WRITE on the share, whatever its flags."""
    client = clients(share={"sync_always": True})
    assert flushed_before_answer(client, client.open("f", access=wire.GENERIC_READ | wire.GENERIC_WRITE))
