"""CREATE with as few system calls as the checks allow: an existing file is opened once, to
read its stored descriptor and DOS information, and a read-only open keeps that descriptor as
its own; a new file's directory is opened once for its type and its descriptor; a new name is
looked up case-insensitively in its directory only. Every check still applies on each of these
paths (sans-I/O, real files; the identity cases act as another account, so they need root)."""
import fcntl
import os
import pathlib
import shutil
import stat
import struct
import tempfile

import pytest
from sansio_client import Client, open_descriptors
from smbcore import create_body

from smbring.smb import acl, wire
from smbring.smb.server_state import ServerState
from smbring.vfs.identity import Identity, ShareView, ThreadCredentials
from smbring.vfs.posix import PosixVFS

GENERIC_READ = 0x80000000
READ_ATTRIBUTES = 0x80
BATCH_OPLOCK = 0x09
ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="acting as another account needs root")
ALICE = Identity("alice", 61311, 61311, (61311,))


def dacl(*aces) -> bytes:
    return acl.Descriptor(control=acl.SE_SELF_RELATIVE | acl.SE_DACL_PRESENT, dacl=list(aces)).pack()


def set_dacl(client, name, blob, directory=False) -> None:
    fid = client.open(name, access=acl.WRITE_DAC | acl.READ_CONTROL, disposition=wire.FILE_OPEN,
                      options=wire.FILE_DIRECTORY_FILE if directory else 0)
    assert client.set_info(fid, 0, blob, info_type=wire.INFO_SECURITY, additional=acl.DACL) == 0
    assert client.close(fid) == 0


def the_open(client, fid):
    return client.conn.opens[fid]


# -- an existing file: one open for its metadata, kept by a read-only open ------------------

def test_a_stored_dacl_refuses_a_read_only_open_and_leaks_nothing(client, share):
    (share / "f").write_bytes(b"secret")
    set_dacl(client, "f", dacl(acl.Ace(acl.ALLOWED, 0, 0x00120080, acl.EVERYONE)))  # attributes only
    before = open_descriptors()
    for _ in range(20):
        status, _fid = client.create("f", access=GENERIC_READ, disposition=wire.FILE_OPEN)
        assert status == wire.STATUS_ACCESS_DENIED
    assert open_descriptors() == before and not client.conn.opens
    fid = client.open("f", access=READ_ATTRIBUTES, disposition=wire.FILE_OPEN)    # what it allows
    assert client.read(fid, 0, 6) == wire.STATUS_ACCESS_DENIED
    assert client.close(fid) == 0


def test_a_read_only_open_holds_a_read_only_blocking_descriptor(client, share):
    (share / "f").write_bytes(b"data")
    fid = client.open("f", access=GENERIC_READ, share=7, disposition=wire.FILE_OPEN)
    flags = fcntl.fcntl(the_open(client, fid).fd, fcntl.F_GETFL)
    assert flags & os.O_ACCMODE == os.O_RDONLY
    assert not flags & os.O_NONBLOCK            # io_uring would answer EAGAIN
    assert client.write(fid, b"x") == wire.STATUS_ACCESS_DENIED
    assert (share / "f").read_bytes() == b"data"
    st = os.fstat(the_open(client, fid).fd)
    assert the_open(client, fid).key == (st.st_dev, st.st_ino) == (os.stat(share / "f").st_dev,
                                                                  os.stat(share / "f").st_ino)
    assert client.close(fid) == 0


def test_maximum_allowed_and_write_opens_get_a_descriptor_that_writes(client, share):
    """Only an open that cannot be granted writing keeps the read-only descriptor."""
    (share / "f").write_bytes(b"data")
    for access in (wire.MAXIMUM_ALLOWED, wire.FILE_WRITE_DATA | READ_ATTRIBUTES, wire.GENERIC_ALL):
        fid = client.open("f", access=access, disposition=wire.FILE_OPEN)
        assert fcntl.fcntl(the_open(client, fid).fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDWR
        assert client.write(fid, b"D") == 0
        assert client.close(fid) == 0
    assert (share / "f").read_bytes() == b"Data"


def test_a_directory_open_holds_a_directory(client, share):
    (share / "d").mkdir()
    fid = client.open("d", access=GENERIC_READ, disposition=wire.FILE_OPEN)
    assert stat.S_ISDIR(os.fstat(the_open(client, fid).fd).st_mode)
    assert fcntl.fcntl(the_open(client, fid).fd, fcntl.F_GETFL) & os.O_DIRECTORY
    assert client.close(fid) == 0


def test_the_share_root_is_opened_once_and_its_stored_descriptor_still_decides(client, share):
    """The root's CREATE reads its stored descriptor and DOS information through the one open
    it keeps as its own (no separate open for the descriptor); the stat it reports is the
    root's (\".\" beneath the root's own descriptor is no other directory), and a stored
    DACL on the root still refuses what it does not grant, leaking nothing."""
    before = open_descriptors()
    status, out = client.request(wire.CREATE, create_body("", GENERIC_READ, wire.FILE_OPEN,
                                                          wire.FILE_DIRECTORY_FILE))
    assert status == 0 and open_descriptors() == before + 1
    fid = out[64:80]
    fd = the_open(client, fid).fd
    st, here = os.fstat(fd), os.stat(share)
    assert stat.S_ISDIR(st.st_mode) and fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY
    assert the_open(client, fid).key == (st.st_dev, st.st_ino) == (here.st_dev, here.st_ino)
    _size, _oplock, _flags, action, _birth, access_time, write_time, change_time, _alloc, end, attrs = \
        struct.unpack_from("<HBBI4QQQI", out)
    assert action == wire.FILE_OPENED and end == 0 and attrs & 0x10        # a directory
    assert (access_time, write_time, change_time) == (
        wire.nt_time(here.st_atime_ns), wire.nt_time(here.st_mtime_ns), wire.nt_time(here.st_ctime_ns))
    assert client.close(fid) == 0 and open_descriptors() == before
    set_dacl(client, "", dacl(acl.Ace(acl.ALLOWED, 0, 0x00120080 | acl.WRITE_DAC | acl.READ_CONTROL,
                                      acl.EVERYONE)), directory=True)
    for _ in range(20):
        status, _fid = client.create("", access=GENERIC_READ, disposition=wire.FILE_OPEN)
        assert status == wire.STATUS_ACCESS_DENIED
    assert open_descriptors() == before and not client.conn.opens
    fid = client.open("", access=READ_ATTRIBUTES, disposition=wire.FILE_OPEN)    # what it allows
    assert client.close(fid) == 0 and open_descriptors() == before


def test_refused_opens_of_an_existing_file_leak_no_descriptor(clients, share):
    (share / "f").write_bytes(b"data")
    (share / "ro").write_bytes(b"data")
    state = ServerState()       # one server: its share modes
    holder, other = clients(state=state), clients(state=state)
    held = holder.open("f", access=GENERIC_READ, share=0, disposition=wire.FILE_OPEN)  # shares nothing
    ro = holder.open("ro", access=wire.FILE_WRITE_ATTRIBUTES, disposition=wire.FILE_OPEN)
    assert holder.set_info(ro, 4, b"\0" * 32 + (wire.ATTR_READONLY).to_bytes(4, "little") + b"\0" * 4) == 0
    before = open_descriptors()
    for _ in range(20):
        assert other.create("f", access=GENERIC_READ, disposition=wire.FILE_OPEN)[0] == \
            wire.STATUS_SHARING_VIOLATION
        assert other.create("ro", access=acl.DELETE | GENERIC_READ, disposition=wire.FILE_OPEN,
                            options=wire.FILE_DELETE_ON_CLOSE)[0] == wire.STATUS_CANNOT_DELETE
    assert open_descriptors() == before
    assert not other.conn.opens and held


def test_an_open_waiting_for_an_oplock_break_holds_no_descriptor(clients, share):
    (share / "f").write_bytes(b"data")
    state = ServerState()
    holder, other = clients(state=state), clients(state=state)
    status, _fid = holder.create("f", access=GENERIC_READ | wire.FILE_WRITE_DATA, disposition=wire.FILE_OPEN,
                                 oplock=BATCH_OPLOCK)
    assert status == 0
    before = open_descriptors()
    answers = other.send(wire.CREATE, create_body("f", GENERIC_READ, wire.FILE_OPEN, 0, share_access=7))
    assert [s for s, _ in answers] == [wire.STATUS_PENDING]
    assert open_descriptors() == before


# -- a new file: its directory read once, its name looked up in that directory only ---------

def test_a_directory_dacl_without_add_file_refuses_new_files_and_directories(client, share):
    (share / "d").mkdir()
    set_dacl(client, "d", dacl(acl.Ace(acl.ALLOWED, 0, 0x001200A9, acl.EVERYONE)), directory=True)
    assert client.create("d\\new", disposition=wire.FILE_CREATE)[0] == wire.STATUS_ACCESS_DENIED
    assert client.create("d\\sub", disposition=wire.FILE_CREATE,
                         options=wire.FILE_DIRECTORY_FILE)[0] == wire.STATUS_ACCESS_DENIED
    assert os.listdir(share / "d") == []
    set_dacl(client, "d", dacl(acl.Ace(acl.ALLOWED, 0, 0x001200AB, acl.EVERYONE)), directory=True)
    status, fid = client.create("d\\new", disposition=wire.FILE_CREATE)
    assert status == 0 and client.close(fid) == 0
    assert client.create("d\\sub", disposition=wire.FILE_CREATE,
                         options=wire.FILE_DIRECTORY_FILE)[0] == wire.STATUS_ACCESS_DENIED


def test_a_new_name_below_a_file_a_missing_or_an_outside_directory_is_refused(client, share, tmp_path):
    (share / "file.txt").write_bytes(b"x")
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, share / "out")
    os.symlink("../outside", share / "up")
    assert client.create("file.txt\\new", disposition=wire.FILE_CREATE)[0] == wire.STATUS_OBJECT_PATH_NOT_FOUND
    assert client.create("missing\\new", disposition=wire.FILE_CREATE)[0] == wire.STATUS_OBJECT_PATH_NOT_FOUND
    for name in ("out\\new", "up\\new", "out\\sub\\new"):
        assert client.create(name, disposition=wire.FILE_OPEN_IF)[0] != 0
    assert os.listdir(outside) == []


@pytest.mark.parametrize("on_disk, asked", [
    ("a.txt", "A.TXT"), ("STRASSE", "straße"), ("Σίσυφος", "ΣΊΣΥΦΟΣ"), ("e02999", "E02999"),
    ("ﬀ", "FF"),
])
def test_a_new_name_that_exists_in_another_case_is_that_file(client, share, on_disk, asked):
    """Among thousands of names: the one that differs in case only is found, whichever it is."""
    d = share / "d"
    d.mkdir()
    for i in range(3000):
        (d / f"e{i:05d}").touch()
    (d / on_disk).write_bytes(b"on disk")
    assert client.create(f"d\\{asked}", disposition=wire.FILE_CREATE)[0] == wire.STATUS_OBJECT_NAME_COLLISION
    status, fid = client.create(f"d\\{asked}", access=GENERIC_READ, disposition=wire.FILE_OPEN_IF)
    assert status == 0
    assert the_open(client, fid).parts == ["d", on_disk]
    assert client.close(fid) == 0
    assert set(os.listdir(d)) == {f"e{i:05d}" for i in range(3000)} | {on_disk}     # nothing made


def test_a_new_names_directory_is_opened_once_for_its_case_lookup_and_its_metadata(share):
    """The directory of a name not found as spelled is opened once: the case-insensitive look
    for the name and the read of its stored descriptor and default ACL go through that open
    (a name found there in another case is that file, and no metadata is read)."""
    opened = []

    class Counting(PosixVFS):
        def open(self, parts, flags, mode=0o644):
            opened.append(list(parts))
            return super().open(parts, flags, mode)

    base = Counting(str(share))
    client = Client(share, tree=False)
    client.conn.open_fs = lambda path: base
    try:
        status, client.tid, _body = client.tree_connect()
        assert status == 0
        (share / "d").mkdir()
        (share / "d" / "Old.txt").write_bytes(b"old")
        fid = client.open("d\\new.txt", access=wire.FILE_WRITE_DATA, disposition=wire.FILE_CREATE)
        assert client.close(fid) == 0
        assert opened.count(["d"]) == 1 and (share / "d" / "new.txt").exists()
        opened.clear()
        fid = client.open("d\\OLD.TXT", access=GENERIC_READ, disposition=wire.FILE_OPEN_IF)
        assert the_open(client, fid).parts == ["d", "Old.txt"] and client.close(fid) == 0
        assert opened.count(["d"]) == 1
    finally:
        client.conn.close_all()         # (closes the share's files, `base`, too)


def test_the_case_of_a_new_name_is_never_looked_up_outside_the_share(client, share, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"outside")
    os.symlink(outside, share / "out")
    assert PosixVFS(str(share)).match_case(["out", "SECRET.TXT"]) == ["out", "SECRET.TXT"]
    assert client.create("out\\SECRET.TXT", disposition=wire.FILE_OPEN)[0] != 0


# -- acting as an account: a directory it may not read -------------------------------------

@pytest.fixture
def as_alice():
    """A client whose files are reached as ALICE (the thread's credentials switched), of a
    share the account can reach (pytest's own directories are root's alone, 0700)."""
    share = pathlib.Path(tempfile.mkdtemp(prefix="smbring-as-alice-"))
    share.chmod(0o777)
    creds = ThreadCredentials()
    base = PosixVFS(str(share))
    client = Client(share, tree=False)
    client.conn.open_fs = lambda path: ShareView(base, ALICE, creds)
    status, client.tid, _body = client.tree_connect()
    assert status == 0
    client.as_server = creds.as_server      # for the test's own files
    client.share = share
    try:
        yield client
    finally:
        client.conn.close_all()
        creds.to_server()
        base.close()
        shutil.rmtree(share)


@ROOT_ONLY
def test_a_directory_one_may_write_but_not_read_takes_new_files(as_alice):
    """Its type comes from a stat then (no open for its descriptor is possible): a new file
    is made, as before; one that may not even search it is refused, and nothing is made."""
    share = as_alice.share
    with as_alice.as_server():
        (share / "drop").mkdir()
        (share / "drop").chmod(0o733)
        (share / "closed").mkdir()
        (share / "closed").chmod(0o766)
    status, fid = as_alice.create("drop\\new", disposition=wire.FILE_CREATE)
    assert status == 0 and as_alice.close(fid) == 0
    assert as_alice.create("closed\\new", disposition=wire.FILE_CREATE)[0] == wire.STATUS_ACCESS_DENIED
    with as_alice.as_server():
        assert os.stat(share / "drop" / "new").st_uid == ALICE.uid
        assert os.listdir(share / "closed") == []


@ROOT_ONLY
def test_a_file_the_account_may_not_read_is_not_opened_through_its_metadata_open(as_alice):
    share = as_alice.share
    with as_alice.as_server():
        (share / "root-only").write_bytes(b"secret")
        (share / "root-only").chmod(0o600)
    before = open_descriptors()
    assert as_alice.create("root-only", access=GENERIC_READ, disposition=wire.FILE_OPEN)[0] == \
        wire.STATUS_ACCESS_DENIED
    assert open_descriptors() == before


# -- a new file: its creating descriptor is the open's, where the kernel would open it again --

def test_a_new_file_opened_to_write_keeps_its_creating_descriptor_and_leaks_none(client, share):
    before = open_descriptors()
    for i in range(20):
        fid = client.open(f"new{i}", access=wire.FILE_WRITE_DATA | GENERIC_READ, disposition=wire.FILE_CREATE)
        fd = the_open(client, fid).fd
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        assert flags & os.O_ACCMODE == os.O_RDWR and not flags & os.O_NONBLOCK
        assert os.fstat(fd).st_ino == os.stat(share / f"new{i}").st_ino
        assert client.write(fid, b"abc") == 0
        assert client.close(fid) == 0
        assert (share / f"new{i}").read_bytes() == b"abc"
    # one asked to read only is opened again read-only, as before
    fid = client.open("ro", access=GENERIC_READ, disposition=wire.FILE_CREATE)
    assert fcntl.fcntl(the_open(client, fid).fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY
    assert client.close(fid) == 0
    assert open_descriptors() == before and not client.conn.opens


@ROOT_ONLY
def test_a_new_read_only_file_keeps_its_creating_descriptor(as_alice):
    """A file made READONLY (0444) by its CREATE: the account may not open it to write again,
    yet its creator's handle writes it (Windows, smbd: the attribute speaks for later opens),
    so the open is the creating read-write descriptor (an open again could only read, and the
    handle's writes failed: EBADF), and nothing leaks."""
    before = open_descriptors()
    fid = as_alice.open("locked", access=wire.FILE_WRITE_DATA | GENERIC_READ, disposition=wire.FILE_CREATE,
                        attributes=wire.ATTR_READONLY)
    o = the_open(as_alice, fid)
    assert fcntl.fcntl(o.fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDWR
    assert o.granted & wire.FILE_WRITE_DATA
    assert as_alice.close(fid) == 0
    fid = as_alice.open("open", access=wire.FILE_WRITE_DATA | GENERIC_READ, disposition=wire.FILE_CREATE)
    assert fcntl.fcntl(the_open(as_alice, fid).fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDWR
    assert as_alice.close(fid) == 0
    with as_alice.as_server():
        assert os.stat(as_alice.share / "open").st_uid == ALICE.uid
    assert open_descriptors() == before
