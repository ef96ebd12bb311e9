"""CHANGE_NOTIFY through the sans-I/O connection (MS-SMB2 3.3.5.19): a request waits (PENDING)
until a change under its directory matches its filter, then is answered late (with the frame
that made the change, or through the outbox when another connection of the same server made
it); changes made meanwhile wait for the next request; a buffer too small or too many changes
say "enumerate the directory" (NOTIFY_ENUM_DIR)."""
import struct

import pytest
from sansio_client import FILE_DIRECTORY_FILE, buffer, sent
from smbcore import SHORT_BODY, change_notify_body, create_body, set_info_body

from smbring.smb import notify, wire
from smbring.smb.limits import MAX_IO
from smbring.smb.server_state import ServerState
from smbring.smb.state import Session

NAMES = notify.FILE_NAME | notify.DIR_NAME
WATCH_TREE = 0x1


@pytest.fixture
def share(share):
    """The share with the files these tests use."""
    (share / "dir").mkdir()
    (share / "dir" / "sub").mkdir()
    (share / "dir" / "old").write_bytes(b"")
    return share


@pytest.fixture
def watched(client):
    """The directory open to list it, sharing everything (so files inside may be renamed)."""
    return client.open("dir", access=wire.FILE_READ_DATA, options=FILE_DIRECTORY_FILE)


def changes(body) -> list[tuple[int, str]]:
    """(Action, FileName) of each FILE_NOTIFY_INFORMATION in a CHANGE_NOTIFY response body."""
    data, out, pos = buffer(body), [], 0
    while data:
        next_offset, action, length = struct.unpack_from("<III", data, pos)
        out.append((action, data[pos + 12:pos + 12 + length].decode("utf-16-le")))
        if not next_offset:
            break
        pos += next_offset
    return out


def notify_request(client, fid, completion_filter=NAMES, flags=0, out_len=4096):
    """The answers to a CHANGE_NOTIFY: (header, body) each."""
    body = change_notify_body(fid, completion_filter, flags, out_len)
    return client.exchange(client.message(wire.CHANGE_NOTIFY, body))


def wait(client, fid, **kw):
    """A CHANGE_NOTIFY that waits: its interim response's header."""
    [(interim, _)] = notify_request(client, fid, **kw)
    assert interim.status == wire.STATUS_PENDING and interim.flags & wire.FLAGS_ASYNC
    return interim


def late(answers, interim):
    """(status, changes) of the late answer to `interim` among answers; none: None."""
    found = [(h, b) for h, b in answers if h.message_id == interim.message_id]
    if not found:
        return None
    [(header, body)] = found
    assert header.async_id == interim.async_id and header.flags & wire.FLAGS_ASYNC and header.credits == 0
    return header.status, (changes(body) if header.status == 0 else [])


def at_once(client, fid, **kw):
    """(status, changes) of a CHANGE_NOTIFY answered at once."""
    [(header, body)] = notify_request(client, fid, **kw)
    assert header.status != wire.STATUS_PENDING
    return header.status, (changes(body) if header.status == 0 else [])


def make(client, name, options=0):
    """The answers to a CREATE of a new file (or directory)."""
    return client.exchange(client.message(wire.CREATE, create_body(name, 0x001F01FF, wire.FILE_CREATE, options)))


def test_a_new_file_completes_a_waiting_request(client, watched):
    interim = wait(client, watched)
    assert late(make(client, "dir\\new"), interim) == (0, [(notify.ADDED, "new")])
    assert client.conn.async_requests == {}


def test_a_change_on_another_connection_is_answered_through_the_outbox(clients):
    state = ServerState()
    a, b = clients(state=state), clients(state=state)
    watched = a.open("dir", options=FILE_DIRECTORY_FILE)
    woken = []
    a.conn.on_output = lambda: woken.append(True)
    interim = wait(a, watched)
    assert b.create("dir\\from-b")[0] == 0
    assert woken == [True]
    assert late(sent(a.conn.outbox_drain()), interim) == (0, [(notify.ADDED, "from-b")])


def test_changes_outside_the_filter_are_not_reported(client, watched):
    interim = wait(client, watched, completion_filter=notify.FILE_NAME)
    assert late(make(client, "dir\\newdir", wire.FILE_DIRECTORY_FILE), interim) is None
    assert late(make(client, "newfile-elsewhere"), interim) is None        # not under the directory
    assert late(make(client, "dir\\newfile"), interim) == (0, [(notify.ADDED, "newfile")])


def test_a_subdirectory_is_watched_only_with_watch_tree(client, watched):
    interim = wait(client, watched)
    assert late(make(client, "dir\\sub\\deep"), interim) is None
    tree = client.open("dir", options=FILE_DIRECTORY_FILE)
    interim = wait(client, tree, flags=WATCH_TREE)
    assert late(make(client, "dir\\sub\\deeper"), interim) == (0, [(notify.ADDED, "sub\\deeper")])


def test_changes_made_meanwhile_wait_for_the_next_request(client, watched):
    interim = wait(client, watched)
    assert late(make(client, "dir\\x"), interim) == (0, [(notify.ADDED, "x")])
    make(client, "dir\\y")
    make(client, "dir\\z", wire.FILE_DIRECTORY_FILE)
    assert at_once(client, watched) == (0, [(notify.ADDED, "y"), (notify.ADDED, "z")])
    wait(client, watched)                      # taken: the next one waits again


def test_rename_write_and_delete_are_reported(client, watched):
    old = client.open("dir\\old")
    every = NAMES | notify.SIZE | notify.LAST_WRITE
    interim = wait(client, watched, completion_filter=every)
    body = set_info_body(old, wire.INFO_FILE, 10, rename_to("dir\\renamed"))
    rename = client.exchange(client.message(wire.SET_INFO, body))
    assert [h.status for h, _ in rename] == [0, 0]
    first = late(rename, interim)
    assert client.write(old, b"data") == 0
    assert client.delete_on_close(old) == 0 and client.close(old) == 0
    status, rest = at_once(client, watched, completion_filter=every)
    assert first[0] == status == 0
    assert first[1] + rest == [(notify.RENAMED_OLD_NAME, "old"), (notify.RENAMED_NEW_NAME, "renamed"),
                               (notify.MODIFIED, "renamed"), (notify.REMOVED, "renamed")]


def rename_to(name):
    n = wire.utf16(name)
    return struct.pack("<B7xQI", 0, 0, len(n)) + n


def test_a_move_to_another_directory_is_a_removal_here(client, watched):
    old = client.open("dir\\old")
    interim = wait(client, watched)
    answers = client.exchange(client.message(wire.SET_INFO, set_info_body(old, wire.INFO_FILE, 10,
                                                                          rename_to("moved"))))   # to the root
    assert late(answers, interim) == (0, [(notify.REMOVED, "old")])


def test_a_buffer_too_small_asks_for_an_enumeration(client, watched):
    interim = wait(client, watched, out_len=8)
    assert late(make(client, "dir\\a-long-name"), interim) == (wire.STATUS_NOTIFY_ENUM_DIR, [])


def test_too_many_changes_ask_for_an_enumeration(client, watched):
    interim = wait(client, watched, out_len=1024)      # the watch holds what 1024 bytes carry
    late(make(client, "dir\\first"), interim)
    for i in range(1024 // notify.entry_size("f000") + 1):
        make(client, f"dir\\f{i:03}")
    assert at_once(client, watched, out_len=4096) == (wire.STATUS_NOTIFY_ENUM_DIR, [])


def test_the_first_request_fixes_the_buffer_and_the_filter(client, watched):
    """Later requests on the same open cannot widen what the first asked for (MS-FSA)."""
    interim = wait(client, watched, completion_filter=notify.DIR_NAME, out_len=1)
    assert late(make(client, "dir\\a-file"), interim) is None      # not a directory name
    assert late(make(client, "dir\\a-dir", options=FILE_DIRECTORY_FILE), interim) == \
        (wire.STATUS_NOTIFY_ENUM_DIR, [])                           # does not fit in 1 byte
    make(client, "dir\\b-dir", options=FILE_DIRECTORY_FILE)
    assert at_once(client, watched, completion_filter=NAMES, out_len=4096) == (wire.STATUS_NOTIFY_ENUM_DIR, [])
    make(client, "dir\\b-file")
    wait(client, watched, completion_filter=NAMES, out_len=4096)     # file names: still not watched


def test_repeated_modifications_are_reported_once(client, watched):
    wait(client, watched, completion_filter=notify.SIZE | notify.FILE_NAME)
    fid = client.open("dir\\old")
    assert client.write(fid, b"x") == 0                 # answers the waiting request
    for _ in range(3):
        assert client.write(fid, b"x") == 0
    assert at_once(client, watched) == (0, [(notify.MODIFIED, "old")])


def test_closing_the_directory_ends_the_wait_with_notify_cleanup(client, watched):
    interim = wait(client, watched)
    answers = client.exchange(client.message(wire.CLOSE, struct.pack("<HHI", 24, 0, 0) + watched))
    assert late(answers, interim) == (wire.STATUS_NOTIFY_CLEANUP, [])


def test_cancel_ends_the_wait(client, watched):
    interim = wait(client, watched)
    answers = client.exchange(client.message(wire.CANCEL, SHORT_BODY, flags=wire.FLAGS_ASYNC,
                                             async_id=interim.async_id))
    assert late(answers, interim) == (wire.STATUS_CANCELLED, [])
    assert late(make(client, "dir\\after"), interim) is None


@pytest.mark.parametrize("by", ["another session", "no session", "unsigned where the session signs"])
def test_only_the_requests_own_session_can_cancel_it(client, watched, by):
    """Two sessions on one connection (a multi-user mount): a CANCEL naming the other session,
    none, or unsigned where the request's session signs everything, ends nothing; the
    session's own (as the client sends it, MS-SMB2 3.2.4.24) does."""
    client.conn.sessions[2] = Session(id=2, valid=True)
    interim = wait(client, watched)
    session_id = {"another session": 2, "no session": 0}.get(by, 1)
    if by == "unsigned where the session signs":
        client.conn.sessions[1].sign = True
    for flags, ids in ((wire.FLAGS_ASYNC, dict(async_id=interim.async_id)),
                       (0, dict(message_id=interim.message_id))):
        answers = client.exchange(client.message(wire.CANCEL, SHORT_BODY, flags=flags,
                                                 session_id=session_id, **ids))
        assert late(answers, interim) is None
    client.conn.sessions[1].sign = False
    answers = client.exchange(client.message(wire.CANCEL, SHORT_BODY, flags=wire.FLAGS_ASYNC,
                                             async_id=interim.async_id))
    assert late(answers, interim) == (wire.STATUS_CANCELLED, [])


def test_a_file_cannot_be_watched(client):
    fid = client.open("dir\\old")
    assert at_once(client, fid)[0] == wire.STATUS_INVALID_PARAMETER


def test_an_output_buffer_over_max_transact_size(clients):
    c = clients(credits=300)                    # enough for the CreditCharge
    fid = c.open("dir", options=FILE_DIRECTORY_FILE)
    [(header, _)] = c.exchange(c.message(wire.CHANGE_NOTIFY, change_notify_body(fid, NAMES, 0, MAX_IO + 1),
                                         charge=129))
    assert header.status == wire.STATUS_INVALID_PARAMETER
    [(header, _)] = c.exchange(c.message(wire.CHANGE_NOTIFY, change_notify_body(fid, NAMES, 0, MAX_IO), charge=128))
    assert header.status == wire.STATUS_PENDING


def test_a_huge_buffer_holds_no_more_than_a_watch_may(clients):
    """Asking for MaxTransactSize does not let a watch buffer that much: beyond WATCH_BYTES
    the client is asked to enumerate."""
    c = clients(credits=300)
    fid = c.open("dir", options=FILE_DIRECTORY_FILE)

    def huge():
        return c.exchange(c.message(wire.CHANGE_NOTIFY, change_notify_body(fid, NAMES, 0, MAX_IO), charge=128))
    [(interim, _)] = huge()
    late(make(c, "dir\\first"), interim)
    for i in range(notify.WATCH_BYTES // notify.entry_size("f0000") + 1):
        make(c, f"dir\\f{i:04}")
    [(header, _)] = huge()
    assert header.status == wire.STATUS_NOTIFY_ENUM_DIR


def test_a_handle_that_may_not_list_cannot_watch(client):
    fid = client.open("dir", access=0x80,     # FILE_READ_ATTRIBUTES
                      options=FILE_DIRECTORY_FILE)
    assert at_once(client, fid)[0] == wire.STATUS_ACCESS_DENIED


def test_two_waiting_requests_on_one_open_are_answered_in_turn(client, watched):
    first, second = wait(client, watched), wait(client, watched)
    answered = [late(make(client, f"dir\\{name}"), interim) for name, interim in (("a", first), ("b", second))]
    assert answered == [(0, [(notify.ADDED, "a")]), (0, [(notify.ADDED, "b")])]


class _Elsewhere(notify.Watch):
    """A watch a change must not even be looked at for: its directory is not the changed
    name's, nor (recursive) above it."""

    def relative(self, path):
        raise AssertionError(f"{self.path} was asked about {path}")


def test_a_change_looks_only_at_the_watches_of_its_directories():
    """Watches are found by the directories they watch: a change is not compared with every
    watch of the server (one client may keep thousands; every change by anyone would pay for
    them), yet reaches each it concerns, recursive ones above it too."""
    watches = notify.ChangeWatches()
    for i in range(2000):
        watches.add(_Elsewhere(f"/s/other{i}", NAMES, True))
    watches.add(_Elsewhere("/s/busy/deeper", NAMES, True))      # below the change: not concerned
    direct = notify.Watch("/s/busy", NAMES, False)
    above = notify.Watch("/s", NAMES, True)
    flat_above = notify.Watch("/s", NAMES, False)              # not recursive: not concerned
    root = notify.Watch("/", NAMES, True)
    for w in (direct, above, flat_above, root):
        watches.add(w)
    watches.post("/s/busy/new.txt", notify.ADDED, notify.FILE_NAME)
    assert direct.changes == [(notify.ADDED, "new.txt")]
    assert above.changes == [(notify.ADDED, "busy\\new.txt")]
    assert root.changes == [(notify.ADDED, "s\\busy\\new.txt")]
    assert flat_above.changes == []
    for w in (direct, above, root):
        watches.remove(w)
    watches.post("/s/busy/again.txt", notify.ADDED, notify.FILE_NAME)
    assert direct.changes == above.changes == root.changes == []
