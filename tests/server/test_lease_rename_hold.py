"""A rename, or a delete on close set through a handle, waits for the file's other handle
leases to be broken (MS-SMB2 3.3.4.7; smbtorture's smb2.lease.rename_wait), over real
smbprotocol connections to a real server: answered STATUS_PENDING first, done once the
holder acknowledges (or closes, or its break times out), cancellable, and never in the way
of other clients' requests."""
import struct
import time

import pytest

pytest.importorskip("smbprotocol")

from smbprotocol.exceptions import SMBResponseException  # noqa: E402
from smbprotocol.header import NtStatus  # noqa: E402
from smbprotocol.open import (CreateDisposition, CreateOptions, FileAttributes,  # noqa: E402
                              FileInformationClass, ImpersonationLevel, Open,
                              SMB2SetInfoRequest)

from test_leases import (ACK_REQUIRED, ALL_SHARE, DELETE, READ, READ_WRITE, RH, RWH, R,  # noqa: E402
                         STATUS_OBJECT_NAME_NOT_FOUND, clients, key)  # noqa: F401  (the fixture)
from waiting_calls import Background, status_of  # noqa: E402

STATUS_CANCELLED = 0xC0000120
FILE_DISPOSITION_INFORMATION = 13


def set_info(client, o: Open, klass: int, buf: bytes):
    """Sends a SET_INFO (not waiting for its answer): the request, to receive or cancel."""
    req = SMB2SetInfoRequest()
    req["info_type"] = 1                # SMB2_0_INFO_FILE
    req["file_info_class"] = klass
    req["file_id"] = o.file_id
    req["buffer"] = buf
    return client.conn.send(req, sid=client.session.session_id, tid=client.tree.tree_connect_id)


def rename_info(name: str, replace: bool = False) -> bytes:
    raw = name.encode("utf-16-le")      # FILE_RENAME_INFORMATION (MS-FSCC 2.4.37)
    return struct.pack("<B7xQI", int(replace), 0, len(raw)) + raw


def answer(client, request):
    """The request's final answer: its status (0 for success)."""
    return status_of(lambda: client.conn.receive(request))


def exists(client, name: str) -> bool:
    try:
        o, _ = client.open(name, access=0x80, disposition=CreateDisposition.FILE_OPEN)
    except SMBResponseException as e:
        assert e.status == STATUS_OBJECT_NAME_NOT_FOUND
        return False
    o.close()
    return True


def pending(client, request, wait: float = 5.0) -> bool:
    """Whether the server answered the request STATUS_PENDING (an interim answer) and
    nothing final yet."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        response = request.response
        if response is not None:
            return response["status"].get_value() == NtStatus.STATUS_PENDING
        time.sleep(0.02)
    return False


def held_rename(clients):
    """a renames "f" (lease 1, RH) while b holds lease 2 (RH) on it: the rename is held."""
    a, b = clients(), clients()
    renamer, _ = a.open("f", key(1), RH, access=READ_WRITE | DELETE)
    b.open("f", key(2), RH, access=READ)
    request = set_info(a, renamer, FileInformationClass.FILE_RENAME_INFORMATION, rename_info("g"))
    br = b.next_break()
    assert (br.key, br.old, br.new, br.flags) == (key(2), RH, R, ACK_REQUIRED)
    assert pending(a, request)
    return a, b, renamer, request


def test_rename_waits_for_the_holders_acknowledgement(clients):
    a, b, _renamer, request = held_rename(clients)
    c = clients()
    time.sleep(0.3)
    assert exists(c, "f") and not exists(c, "g")      # not renamed yet
    assert b.ack(key(2), R) == R
    assert answer(a, request) == 0
    assert exists(c, "g") and not exists(c, "f")
    assert a.next_break(0.3) is None                   # (its own lease is not broken)


def test_held_rename_stalls_no_other_client(clients):
    _a, b, _renamer, request = held_rename(clients)
    c = clients()
    started = time.monotonic()
    for n in range(5):
        o, lease = c.open(f"other{n}", key(10 + n), RWH)
        assert lease[1] == RWH
        o.close()
    assert time.monotonic() - started < 3
    assert not request.response_event.is_set() or \
        request.response["status"].get_value() == NtStatus.STATUS_PENDING
    b.ack(key(2), R)


def test_cancelled_rename_leaves_the_file_in_place(clients):
    a, b, _renamer, request = held_rename(clients)
    request.cancel()
    assert answer(a, request) == STATUS_CANCELLED
    assert b.ack(key(2), R) == R                       # the break itself stands
    time.sleep(0.3)
    assert exists(a, "f") and not exists(a, "g")


def test_closing_the_renamers_handle_ends_the_wait(clients):
    a, b, renamer, request = held_rename(clients)
    renamer.close()
    assert answer(a, request) == STATUS_CANCELLED
    b.ack(key(2), R)
    time.sleep(0.3)
    assert exists(a, "f") and not exists(a, "g")


def test_holder_that_closes_lets_the_rename_go(clients):
    a, b, _renamer, request = held_rename(clients)
    b.close()
    assert answer(a, request) == 0
    assert exists(a, "g")


def test_holder_that_never_answers_holds_the_rename_only_the_break_timeout(short_break_timeout, clients):
    """The break times out (35 s, Windows' and Samba's; shortened here, see test_oplocks): the
    lease is taken away and the rename goes on; a late acknowledgement is refused."""
    a, b, _renamer, request = held_rename(clients)
    waiting = Background(lambda: answer(a, request))
    assert waiting.wait(short_break_timeout + 10) == 0
    assert short_break_timeout - 1.5 <= waiting.elapsed <= short_break_timeout + 5
    assert exists(a, "g")
    assert status_of(lambda: b.ack(key(2), R)) != 0


def test_delete_on_close_waits_for_the_holders_acknowledgement(clients):
    a, b = clients(), clients()
    a.open("f", key(1), RH, access=READ)
    deleter, _ = b.open("f", access=DELETE, disposition=CreateDisposition.FILE_OPEN)
    request = set_info(b, deleter, FILE_DISPOSITION_INFORMATION, b"\x01")
    br = a.next_break()
    assert (br.key, br.old, br.new, br.flags) == (key(1), RH, R, ACK_REQUIRED)
    assert pending(b, request)
    assert a.ack(key(1), R) == R
    assert answer(b, request) == 0


def test_rename_by_the_lease_holder_itself_is_not_held(clients):
    """Opens of one lease never wait for each other: renaming through one of them breaks
    nothing and answers at once."""
    a = clients()
    renamer, _ = a.open("f", key(1), RH, access=READ_WRITE | DELETE)
    a.open("f", key(1), RH, access=READ)
    request = set_info(a, renamer, FileInformationClass.FILE_RENAME_INFORMATION, rename_info("g"))
    assert answer(a, request) == 0
    assert a.next_break(0.3) is None


def test_held_rename_within_a_compound(clients):
    """The way Windows renames: CREATE, SET_INFO (rename) and CLOSE in one related compound;
    the rename is held in the middle of it, and the CLOSE runs on the open once it is done."""
    a, b = clients(), clients()
    b.open("f", key(2), RH, access=READ)
    o = Open(a.tree, "f")
    create, create_done = o.create(
        ImpersonationLevel.Impersonation, READ | DELETE, FileAttributes.FILE_ATTRIBUTE_NORMAL,
        ALL_SHARE, CreateDisposition.FILE_OPEN, CreateOptions.FILE_NON_DIRECTORY_FILE, send=False)
    req = SMB2SetInfoRequest()
    req["info_type"] = 1
    req["file_info_class"] = FileInformationClass.FILE_RENAME_INFORMATION
    req["file_id"] = b"\xff" * 16
    req["buffer"] = rename_info("g")
    close, close_done = o.close(send=False)
    requests = a.conn.send_compound([create, req, close], a.session.session_id,
                                    a.tree.tree_connect_id, related=True)
    br = b.next_break()
    assert (br.key, br.old, br.new) == (key(2), RH, R)
    assert b.ack(key(2), R) == R
    answers = Background(lambda: (create_done(requests[0]), a.conn.receive(requests[1]),
                                  close_done(requests[2])))
    answers.wait()
    assert exists(a, "g") and not exists(a, "f")


STATUS_ACCESS_DENIED = 0xC0000022


def test_replacing_a_file_breaks_its_handle_leases_and_waits(clients):
    """A rename onto a file another client holds with a handle lease: that lease is broken
    first; once its holder has closed, the file is replaced."""
    a, b = clients(), clients()
    renamer, _ = a.open("src", key(1), RH, access=READ_WRITE | DELETE)
    target, _ = b.open("dst", key(2), RH, access=READ)
    request = set_info(a, renamer, FileInformationClass.FILE_RENAME_INFORMATION,
                       rename_info("dst", replace=True))
    br = b.next_break()
    assert (br.key, br.old, br.new) == (key(2), RH, R)
    assert pending(a, request)
    target.close()                          # the holder lets go of the file
    assert answer(a, request) == 0
    assert exists(a, "dst") and not exists(a, "src")


def test_replacing_a_file_still_open_is_refused_once_its_lease_is_broken(clients):
    a, b = clients(), clients()
    renamer, _ = a.open("src2", key(1), RH, access=READ_WRITE | DELETE)
    b.open("dst2", key(2), RH, access=READ)
    request = set_info(a, renamer, FileInformationClass.FILE_RENAME_INFORMATION,
                       rename_info("dst2", replace=True))
    assert b.next_break().new == R
    assert b.ack(key(2), R) == R            # answered, but the file stays open
    assert answer(a, request) == STATUS_ACCESS_DENIED
    assert exists(a, "src2") and exists(a, "dst2")


def test_replacing_an_open_file_without_leases_is_refused_at_once(clients):
    a, b = clients(), clients()
    renamer, _ = a.open("src3", access=READ_WRITE | DELETE)
    b.open("dst3", access=READ)
    request = set_info(a, renamer, FileInformationClass.FILE_RENAME_INFORMATION,
                       rename_info("dst3", replace=True))
    assert answer(a, request) == STATUS_ACCESS_DENIED


def test_renaming_a_directory_breaks_handle_leases_below_it(clients):
    """A file open below the directory with a handle lease: the lease is broken first; the
    directory moves once the file is closed, and is refused while it stays open."""
    a, b = clients(), clients()
    d, _ = a.open("d", access=READ | DELETE, directory=True)
    below, _ = b.open(r"d\f", key(2), RH, access=READ)
    request = set_info(a, d, FileInformationClass.FILE_RENAME_INFORMATION, rename_info("e"))
    br = b.next_break()
    assert (br.key, br.old, br.new) == (key(2), RH, R)
    assert pending(a, request)
    below.close()
    assert answer(a, request) == 0
    assert exists(a, r"e\f")
    again, _ = b.open(r"e\f", key(3), RH, access=READ)
    request = set_info(a, d, FileInformationClass.FILE_RENAME_INFORMATION, rename_info("g"))
    assert b.next_break().key == key(3)
    assert b.ack(key(3), R) == R
    assert answer(a, request) == STATUS_ACCESS_DENIED      # a file inside it is open
    again.close()
