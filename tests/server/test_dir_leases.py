"""Directory leases (SMB 3, `smb3 directory leases`) across real smbprotocol connections to a
real server: what a directory open is granted (R or RH, never W; SMB 3 and a version 2 lease
context only), which changes in the directory break it (to none, with its epoch and an answer
where it held HANDLE caching) whoever makes them, which spare it (the ParentLeaseKey of the
changing open's lease, of the same client), the directory's own rename, a holder that never
answers, and the settings that turn them off (the option, `smb2 leases`, a share's `oplocks`).
With several workers: tests/server/test_workers_leases.py.

Every test here but the settings' ones fails on a server without directory leases: a
directory's lease context is then ignored (no lease, nothing to break)."""
import os
import struct
import time

import pytest

pytest.importorskip("smbprotocol")

from smbprotocol.connection import Dialects  # noqa: E402
from smbprotocol.open import CreateDisposition, CreateOptions  # noqa: E402

from test_leases import (ACK_REQUIRED, CAP_DIRECTORY_LEASING, CAP_LEASING, DELETE, LEASE,  # noqa: E402
                         NONE, READ, READ_WRITE, STATUS_INVALID_PARAMETER, Client, R, RH, RW, RWH, W,
                         key)
from test_lease_rename_hold import set_info  # noqa: E402
from waiting_calls import status_of  # noqa: E402
from smbconf_server import smbconf  # noqa: E402,F401  (the fixture)

DIR_ACCESS = READ | 0x4 | 0x2       # list, add a file, add a subdirectory (no DELETE: no rename of it)
BASIC, RENAME, LINK, DISPOSITION, EOF, ALLOCATION, FULL_EA = 4, 10, 11, 13, 20, 19, 15


@pytest.fixture
def clients(server):
    made = []

    def client(**kw) -> Client:
        made.append(Client(server["port"], **kw))
        return made[-1]
    yield client
    for c in made:
        c.close()


def dir_lease(c: Client, name: str, k: bytes, state: int = RH, epoch: int = 0, **kw):
    """A directory open with a version 2 lease: (Open, (key, state, flags, epoch))."""
    return c.open(name, k, state, v2=True, epoch=epoch, directory=True, access=DIR_ACCESS, **kw)


def name_info(name: str, replace: bool = False) -> bytes:
    """FILE_RENAME_INFORMATION / FILE_LINK_INFORMATION (MS-FSCC 2.4.37, 2.4.21)."""
    raw = name.encode("utf-16-le")
    return struct.pack("<B7xQI", int(replace), 0, len(raw)) + raw


def set_file_info(c: Client, o, klass: int, buf: bytes) -> None:
    c.conn.receive(set_info(c, o, klass, buf))


def expect_break(c: Client, k: bytes, old: int, epoch: int, *, ack: bool = True):
    br = c.next_break()
    assert br is not None, "no directory lease break"
    assert (br.key, br.old, br.new, br.epoch) == (k, old, 0, epoch)
    assert br.flags == (ACK_REQUIRED if old & 0x2 else 0)
    if ack and old & 0x2:
        assert c.ack(k, 0) == 0
    return br


def test_granted_states(clients):
    """R or RH as asked, never WRITE caching (RWH: RH, RW: R), the client's epoch plus one
    (as Samba's smb2.dirlease.leases); a version 1 context on a directory gets none."""
    a = clients()
    assert a.conn.server_capabilities.has_flag(CAP_LEASING | CAP_DIRECTORY_LEASING)
    for n, (asked, granted) in enumerate({RWH: RH, RW: R, RH: RH, R: R, W: 0}.items()):
        d, lease = dir_lease(a, f"d{n}", key(n), asked, epoch=0x11)
        assert d.oplock_level == LEASE
        assert lease == (key(n), granted, 0, 0x12)
        d.close()
    d, lease = a.open("d0", key(50), RWH, directory=True, access=DIR_ACCESS)     # version 1
    assert d.oplock_level == NONE and lease is None
    # an oplock is never granted on a directory
    d, lease = a.open("d0", None, directory=True, access=DIR_ACCESS, oplock=0x09)
    assert d.oplock_level == NONE


def test_smb21_gets_none(clients):
    a = clients(dialect=Dialects.SMB_2_1_0)
    assert a.conn.server_capabilities.has_flag(CAP_LEASING)
    assert not a.conn.server_capabilities.has_flag(CAP_DIRECTORY_LEASING)
    d, lease = dir_lease(a, "d", key(1), RH)
    assert d.oplock_level == NONE and lease is None


def test_a_client_that_does_not_announce_directory_leasing_gets_none(clients):
    """As Samba: the capability only for a client whose NEGOTIATE says it knows directory
    leases (impacket 0.13.1, which does not, fails every open of a name in a share's root
    against a server that announces it), and then no directory lease either."""
    a = clients(directory_leasing=False)
    assert a.conn.server_capabilities.has_flag(CAP_LEASING)
    assert not a.conn.server_capabilities.has_flag(CAP_DIRECTORY_LEASING)
    d, lease = dir_lease(a, "d", key(1), RH)
    assert d.oplock_level == NONE and lease is None
    f, lease = a.open("f", key(2), RWH)          # file leases as before
    assert lease[1] == RWH


def test_created_entry_breaks_and_the_holder_rearms(clients):
    a, b = clients(), clients()
    _d, lease = dir_lease(a, "d", key(1), RH, epoch=5)
    assert lease[1:] == (RH, 0, 6)
    f, _ = b.open("d\\f", key(2), RWH)             # another client makes a file in it
    expect_break(a, key(1), RH, 7)
    assert a.next_break(0.3) is None
    _d2, lease = dir_lease(a, "d", key(1), RH, disposition=CreateDisposition.FILE_OPEN)
    assert lease[1:] == (RH, 0, 8)                  # re-armed: one more
    b.open("d\\sub", None, directory=True, access=DIR_ACCESS)      # a subdirectory too
    expect_break(a, key(1), RH, 9)
    # a change below a subdirectory is not in this listing (as Samba)
    dir_lease(a, "d", key(1), RH, disposition=CreateDisposition.FILE_OPEN)
    b.open("d\\sub\\deeper", None)
    assert a.next_break(0.5) is None
    # an open that changes nothing breaks nothing
    f.close()
    b.open("d\\f", None, access=READ, disposition=CreateDisposition.FILE_OPEN)
    assert a.next_break(0.3) is None


def test_read_only_lease_is_told_without_answer(clients):
    a, b = clients(), clients()
    dir_lease(a, "d", key(1), R)
    b.open("d\\f", None)
    br = expect_break(a, key(1), R, 2)
    assert br.flags == 0


def test_parent_lease_key_spares_the_directory_lease(clients):
    """A change made through an open whose lease names the directory's lease as its
    ParentLeaseKey breaks nothing (MS-SMB2 3.2.4.3.8; Samba's smb2.dirlease tests); a wrong or
    no parent key breaks it; another client naming the key breaks it too (here; Samba and
    Windows compare the key alone)."""
    a, b = clients(), clients()
    dir_lease(a, "d", key(1), RH)
    f, lease = a.open("d\\f", key(2), RWH, v2=True, parent=key(1))
    assert lease[1:3] == (RWH, 0x04)               # PARENT_LEASE_KEY_SET, echoed
    set_file_info(a, f, EOF, struct.pack("<Q", 10))
    assert a.next_break(0.5) is None
    a.open("d\\g", key(3), RWH, v2=True, parent=key(9))     # a wrong one
    expect_break(a, key(1), RH, 2)
    dir_lease(a, "d", key(1), RH, disposition=CreateDisposition.FILE_OPEN)
    b.open("d\\h", key(4), RWH, v2=True, parent=key(1))     # another client's
    expect_break(a, key(1), RH, 4)


def test_another_user_naming_the_key_breaks_it(tmp_path):
    """The ParentLeaseKey spares a directory lease only for its own client and user: another
    connection of the client as the same user is spared, another user's connection naming the
    client's (cleartext) ClientGuid and the key is not (`smb.dirleases`)."""
    from servers import PASSWORD2, USER2, spawn, stop
    if os.geteuid() != 0:
        pytest.skip("a second user acts as nobody: needs root")
    share = tmp_path / "share"
    share.mkdir()
    (share / "d").mkdir(mode=0o777)
    (share / "d").chmod(0o777)
    proc, port, _log = spawn(tmp_path, str(share), "--share", "share", second_user=True)
    made = []
    try:
        a = Client(port)
        made.append(a)
        assert dir_lease(a, "d", key(1), RH)[1][1] == RH
        same = Client(port, guid=a.conn.client_guid)
        made.append(same)
        same.open("d\\f", key(2), RWH, v2=True, parent=key(1))
        assert a.next_break(0.5) is None
        other = Client(port, guid=a.conn.client_guid, user=USER2, password=PASSWORD2)
        made.append(other)
        other.open("d\\g", key(3), RWH, v2=True, parent=key(1))
        expect_break(a, key(1), RH, 2)
    finally:
        for c in made:
            c.close()
        stop(proc)


def test_delete_breaks_when_it_happens(clients):
    a, b = clients(), clients()
    b.open("d", None, directory=True, access=DIR_ACCESS)[0].close()
    b.open("d\\f", None)[0].close()
    dir_lease(a, "d", key(1), RH)
    gone, _ = b.open("d\\f", None, access=DELETE | READ, disposition=CreateDisposition.FILE_OPEN)
    set_file_info(b, gone, DISPOSITION, b"\x01")
    assert a.next_break(0.5) is None               # still listed while its delete is pending
    gone.close()
    expect_break(a, key(1), RH, 2)
    # delete on close asked at the open: the same
    dir_lease(a, "d", key(1), RH, disposition=CreateDisposition.FILE_OPEN)
    b.open("d\\g", None)[0].close()
    expect_break(a, key(1), RH, 4)
    dir_lease(a, "d", key(1), RH, disposition=CreateDisposition.FILE_OPEN)
    gone, _ = b.open("d\\g", None, access=DELETE | READ, disposition=CreateDisposition.FILE_OPEN,
                     options=CreateOptions.FILE_DELETE_ON_CLOSE)
    assert a.next_break(0.5) is None
    gone.close()
    expect_break(a, key(1), RH, 6)


@pytest.mark.parametrize("how", ["tree-disconnect", "logoff", "connection-lost"])
def test_a_delete_on_close_ended_without_a_close_breaks(clients, how):
    """The delete of an open closed by its tree's disconnect, its session's logoff or its
    connection's loss (no CLOSE at all) breaks the directory's lease as a CLOSE does."""
    a, b = clients(), clients()
    b.open("d", None, directory=True, access=DIR_ACCESS)[0].close()
    b.open("d\\f", None)[0].close()
    dir_lease(a, "d", key(1), RH)
    b.open("d\\f", None, access=DELETE | READ, disposition=CreateDisposition.FILE_OPEN,
           options=CreateOptions.FILE_DELETE_ON_CLOSE)
    assert a.next_break(0.5) is None
    if how == "tree-disconnect":
        b.tree.disconnect()
        b.session.open_table.clear()     # (its opens are gone: smbprotocol would close them at the end)
    elif how == "logoff":
        b.session.disconnect()
    else:
        b.conn.transport.close()
    expect_break(a, key(1), RH, 2)
    listing, _ = a.open("d", None, directory=True, access=DIR_ACCESS, disposition=CreateDisposition.FILE_OPEN)
    names = [e["file_name"].get_value().decode("utf-16-le") for e in listing.query_directory("*", 1)]
    assert "f" not in names, names


def test_delete_asked_under_the_lease_spares_it(clients):
    a = clients()
    assert dir_lease(a, "d", key(1), RH)[1][1] == RH
    f, _ = a.open("d\\f", key(2), RWH, v2=True, parent=key(1), access=READ_WRITE | DELETE)
    assert a.next_break(0.3) is None
    set_file_info(a, f, DISPOSITION, b"\x01")
    f.close()
    assert a.next_break(0.5) is None


def test_renames_in_out_and_within(clients):
    a, b = clients(), clients()
    for name in ("d", "x"):
        b.open(name, None, directory=True, access=DIR_ACCESS)
    b.open("x\\f", None)[0].close()
    dir_lease(a, "d", key(1), RH)
    dir_lease(a, "x", key(2), RH)
    f, _ = b.open("x\\f", None, access=READ_WRITE | DELETE, disposition=CreateDisposition.FILE_OPEN)
    set_file_info(b, f, RENAME, name_info("d\\f"))          # into d, out of x: both
    breaks = {br.key: br for br in (a.next_break(), a.next_break())}
    assert set(breaks) == {key(1), key(2)} and all(br.new == 0 for br in breaks.values())
    a.ack(key(1), 0)
    a.ack(key(2), 0)
    dir_lease(a, "d", key(1), RH, disposition=CreateDisposition.FILE_OPEN)
    set_file_info(b, f, RENAME, name_info("d\\g"))          # within d
    expect_break(a, key(1), RH, 4)
    assert a.next_break(0.3) is None                       # (one break for the pair)


def test_hard_link_breaks_the_new_names_directory(clients):
    a, b = clients(), clients()
    for name in ("d", "x"):
        b.open(name, None, directory=True, access=DIR_ACCESS)
    f, _ = b.open("x\\f", None)
    dir_lease(a, "d", key(1), RH)
    set_file_info(b, f, LINK, name_info("d\\l"))
    expect_break(a, key(1), RH, 2)


def test_metadata_a_listing_shows_breaks(clients):
    """SET_INFO of times, attributes, end of file, allocation, EAs; an overwrite; data written
    (at the writer's close, as Samba)."""
    a, b = clients(), clients()
    b.open("d", None, directory=True, access=DIR_ACCESS)
    f, _ = b.open("d\\f", None)
    changes = [
        (BASIC, struct.pack("<QQQQI4x", 0, 0, 0x01D0000000000000, 0, 0)),    # a write time
        (BASIC, struct.pack("<QQQQI4x", 0x01D0000000000000, 0, 0, 0, 0)),    # a creation time
        (BASIC, struct.pack("<QQQQI4x", 0, 0x01D0000000000000, 0, 0, 0)),    # an access time
        (BASIC, struct.pack("<QQQQI4x", 0, 0, 0, 0x01D0000000000000, 0)),    # a change time
        (BASIC, struct.pack("<QQQQI4x", 0, 0, 0, 0, 0x2)),                    # HIDDEN
        (BASIC, struct.pack("<QQQQI4x", 0, 0, 0, 0, 0x80)),                   # NORMAL again
        (EOF, struct.pack("<Q", 100)),
        (ALLOCATION, struct.pack("<Q", 8192)),
        (FULL_EA, struct.pack("<IBBH", 0, 0, 1, 1) + b"a\0" + b"v"),
    ]
    for klass, buf in changes:
        _d, lease = dir_lease(a, "d", key(1), RH, disposition=CreateDisposition.FILE_OPEN)
        assert lease[1] == RH
        set_file_info(b, f, klass, buf)
        expect_break(a, key(1), RH, lease[3] + 1)
    _d, lease = dir_lease(a, "d", key(1), RH, disposition=CreateDisposition.FILE_OPEN)
    f.write(b"more", 0)
    assert a.next_break(0.5) is None               # the size settles at the close
    f.close()
    expect_break(a, key(1), RH, lease[3] + 1)
    _d, lease = dir_lease(a, "d", key(1), RH, disposition=CreateDisposition.FILE_OPEN)
    b.open("d\\f", None, disposition=CreateDisposition.FILE_OVERWRITE)
    expect_break(a, key(1), RH, lease[3] + 1)
    # a set of nothing (zeros: leave every time and attribute as it is) breaks nothing
    dir_lease(a, "d", key(1), RH, disposition=CreateDisposition.FILE_OPEN)
    g, _ = b.open("d\\f", None, disposition=CreateDisposition.FILE_OPEN)
    set_file_info(b, g, BASIC, struct.pack("<QQQQI4x", 0, 0, 0, 0, 0))
    assert a.next_break(0.5) is None


def test_another_programs_change_breaks_the_lease(clients, server):
    """A change made on the server's disk by another program, not through SMB (a file made,
    written, its mode changed, renamed, removed; a directory made), breaks the directory's
    leases too, the exempt one of the server's own changes included: the leased directory is
    watched through inotify while the lease lasts. A change below a subdirectory is not in the
    listing and breaks nothing; nor does the kernel's word of the server's own changes, a
    close long after the write included (its write time set then)."""
    a = clients()
    d = server["share"] / "d"
    d.mkdir()
    (d / "sub").mkdir()
    changes = [
        lambda: (d / "made").write_bytes(b"x"),
        lambda: (d / "made").open("ab").write(b"more"),
        lambda: (d / "made").chmod(0o600),
        lambda: (d / "made").rename(d / "renamed"),
        lambda: (d / "renamed").unlink(),
        lambda: (d / "newdir").mkdir(),
    ]
    for change in changes:
        _d, lease = dir_lease(a, "d", key(1), RH, disposition=CreateDisposition.FILE_OPEN)
        assert lease[1] == RH
        time.sleep(0.1)         # (the watch is made on the loop's next turn)
        change()
        expect_break(a, key(1), RH, lease[3] + 1)
    dir_lease(a, "d", key(1), RH, disposition=CreateDisposition.FILE_OPEN)
    time.sleep(0.1)
    (d / "sub" / "deeper").write_bytes(b"x")
    assert a.next_break(1.0) is None
    # the holder's own changes under its lease (ParentLeaseKey): the kernel reports them too
    f, _ = a.open("d\\mine", key(2), RWH, v2=True, parent=key(1))
    f.write(b"data", 0)
    time.sleep(2.5)         # past the server's memory of its own changes by time alone
    f.close()
    assert a.next_break(1.5) is None


def test_another_program_renaming_the_leased_directory(clients, server):
    """A leased directory that another program renames (in a directory nothing watches) no
    longer bears the name it is watched by: its lease is broken (nothing would see changes
    in it under its new name), and a directory made in its place is watched for the lease
    taken on it next. Fails on a server that keeps watching the path through the moved
    directory's watch: no break, then none for the new directory's change."""
    a = clients()
    d = server["share"] / "d"
    d.mkdir()
    old, lease = dir_lease(a, "d", key(1), RH, disposition=CreateDisposition.FILE_OPEN)
    time.sleep(0.1)         # (the watch is made on the loop's next turn)
    d.rename(server["share"] / "moved")
    expect_break(a, key(1), RH, lease[3] + 1)
    d.mkdir()           # (the moved directory's handle and lease held still)
    _new, lease = dir_lease(a, "d", key(2), RH, disposition=CreateDisposition.FILE_OPEN)
    assert lease[1] == RH
    time.sleep(0.1)
    (d / "made").write_bytes(b"x")
    expect_break(a, key(2), RH, lease[3] + 1)
    old.close()
    _again, lease = dir_lease(a, "d", key(3), RH, disposition=CreateDisposition.FILE_OPEN)
    time.sleep(0.1)
    (d / "made").unlink()
    expect_break(a, key(3), RH, lease[3] + 1)


def test_another_program_renaming_a_leased_directory_in_a_leased_one(clients, server):
    """The same move seen in the watched directory it happened in: the parent's lease breaks
    (its listing changed) and so do the moved directory's own and its subdirectory's (their
    watches were made for the old names). Fails on a server that drops the moved
    directories' watches and keeps their leases."""
    a = clients()
    p = server["share"] / "p"
    (p / "d" / "s").mkdir(parents=True)
    _p, parent = dir_lease(a, "p", key(1), RH, disposition=CreateDisposition.FILE_OPEN)
    _d, lease = dir_lease(a, "p\\d", key(2), RH, disposition=CreateDisposition.FILE_OPEN)
    _s, below = dir_lease(a, "p\\d\\s", key(3), RH, disposition=CreateDisposition.FILE_OPEN)
    time.sleep(0.1)
    (p / "d").rename(p / "e")
    breaks = {}
    for _ in range(3):
        br = a.next_break()
        assert br is not None, f"no directory lease break after {breaks}"
        breaks[br.key] = (br.old, br.new, br.epoch)
        assert a.ack(br.key, 0) == 0
    assert breaks == {key(1): (RH, 0, parent[3] + 1), key(2): (RH, 0, lease[3] + 1),
                      key(3): (RH, 0, below[3] + 1)}


def test_stream_made_breaks_as_samba(clients):
    a, b = clients(), clients()
    b.open("d", None, directory=True, access=DIR_ACCESS)
    b.open("d\\f", None)
    dir_lease(a, "d", key(1), RH)
    b.open("d\\f:s", None)
    expect_break(a, key(1), RH, 2)


def test_rename_of_the_directory_breaks_its_handle_caching(clients, server):
    """The directory's own leases are a file's: renaming it takes their HANDLE caching (the
    rename waits for the answer), and its parent's listing changes; the lease goes on under
    the directory's new name."""
    a, b = clients(), clients()
    b.open("p", None, directory=True, access=DIR_ACCESS)
    b.open("p\\d", None, directory=True, access=DIR_ACCESS)[0].close()
    dir_lease(a, "p", key(1), RH)
    dir_lease(a, "p\\d", key(2), RH)
    mover, _ = b.open("p\\d", None, directory=True, access=READ | DELETE,
                      disposition=CreateDisposition.FILE_OPEN)
    sent = set_info(b, mover, RENAME, name_info("p\\e"))
    br = a.next_break()
    assert (br.key, br.old, br.new, br.flags) == (key(2), RH, R, ACK_REQUIRED)
    assert a.ack(key(2), R) == R
    b.conn.receive(sent)
    expect_break(a, key(1), RH, 2)
    # its lease is watched under its new name: another program's change there breaks it
    # (fails on a server whose watch stays with the old name, dropped with the rename)
    time.sleep(0.1)
    (server["share"] / "p" / "e" / "made").write_bytes(b"x")
    br = a.next_break()
    assert br is not None, "no directory lease break"
    assert (br.key, br.old, br.new, br.flags) == (key(2), R, 0, 0)


def test_key_of_a_file_is_not_a_directorys(clients):
    """A lease key names one file or directory (MS-SMB2 3.3.5.9.8, as Windows): the same key
    on both is refused, either way round."""
    a = clients()
    a.open("f", key(1), RWH, v2=True)
    assert status_of(lambda: dir_lease(a, "d", key(1), RH)) == STATUS_INVALID_PARAMETER
    dir_lease(a, "e", key(2), RH)
    assert status_of(lambda: a.open("g", key(2), RWH, v2=True)) == STATUS_INVALID_PARAMETER


def test_silent_holder_stalls_nobody(short_break_timeout, clients):
    """A holder that never answers its directory lease break: changes in the directory go on
    at once (a directory lease break holds nothing), and the lease is taken away after the
    break timeout."""
    a, b = clients(), clients()
    dir_lease(a, "d", key(1), RH)
    started = time.monotonic()
    for n in range(5):
        b.open(f"d\\f{n}", None)
    assert time.monotonic() - started < 2
    br = a.next_break()
    assert (br.old, br.new) == (RH, 0)
    assert a.next_break(0.3) is None               # one break, whatever follows
    time.sleep(short_break_timeout + 1.5)
    _d, lease = dir_lease(a, "d", key(1), 0, disposition=CreateDisposition.FILE_OPEN)
    assert lease[1] == 0


def test_flood_of_directory_leases_is_bounded(clients):
    """Directory leases live as long as their opens, as file leases: a client opening and
    closing under ever new keys leaves nothing (each key is free again for another one)."""
    a, b = clients(), clients()
    b.open("d0", None, directory=True, access=DIR_ACCESS)
    b.open("d1", None, directory=True, access=DIR_ACCESS)
    for n in range(200):
        d, lease = dir_lease(a, f"d{n % 2}", key(n), RH)
        assert lease[1] == RH
        d.close()
    for n in range(200):
        dir_lease(a, f"d{(n + 1) % 2}", key(n), RH)[0].close()


def test_option_off(smbconf):
    server = smbconf("smb3 directory leases = no", {"share": "read only = no"})
    a = Client(server.port)
    try:
        assert a.conn.server_capabilities.has_flag(CAP_LEASING)
        assert not a.conn.server_capabilities.has_flag(CAP_DIRECTORY_LEASING)
        d, lease = dir_lease(a, "d", key(1), RH)
        assert d.oplock_level == NONE and lease is None
        _f, lease = a.open("f", key(2), RWH, v2=True)
        assert lease[1] == RWH                     # file leases stay
    finally:
        a.close()


def test_leases_off_means_none(smbconf):
    server = smbconf("smb2 leases = no\nsmb3 directory leases = yes", {"share": "read only = no"})
    a = Client(server.port)
    try:
        assert not a.conn.server_capabilities.has_flag(CAP_DIRECTORY_LEASING)
        d, lease = dir_lease(a, "d", key(1), RH)
        assert lease is None
    finally:
        a.close()


def test_oplocks_off_share_grants_none(smbconf):
    server = smbconf("", {"share": "read only = no", "nooplocks": "read only = no\noplocks = no"})
    a = Client(server.port, share="nooplocks")
    try:
        d, lease = dir_lease(a, "d", key(1), RH)
        assert d.oplock_level == NONE and lease is None
    finally:
        a.close()
