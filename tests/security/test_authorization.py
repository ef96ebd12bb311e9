"""Authorization: what an open, a tree connect and a session let a client do.

A FileId belongs to the session and tree connect that opened it; a read-only share grants no
write-class right however it is asked for; an encrypted share is reached encrypted only, open
by open; a transform header speaks for one session only. Every refusal is checked on disk too.
"""
import os
import struct

import pytest

from logon import ANONYMOUS, V1_FLAGS, forged_logon
from raw import FSCTL_CREATE_OR_GET_OBJECT_ID, answer_or_drop, create_body, write_body
from smbring.smb.wire import FSCTL_SRV_REQUEST_RESUME_KEY
from smbring.smb.commands.ioctl_sparse import FSCTL_SET_ZERO_DATA
from smbring.smb import wire

READ_CONTROL, WRITE_DAC, WRITE_OWNER = 0x20000, 0x40000, 0x80000
FILE_ACCESS_INFORMATION, FILE_BASIC_INFORMATION, FILE_DISPOSITION_INFORMATION = 8, 4, 13
FILE_STANDARD_INFORMATION, FILE_FULL_EA_INFORMATION = 5, 15
DACL_SECURITY_INFORMATION = 0x4
WRITE_CLASS = (wire.FILE_WRITE_DATA | wire.FILE_APPEND_DATA | wire.FILE_WRITE_EA |
               wire.FILE_WRITE_ATTRIBUTES | wire.DELETE | WRITE_DAC | WRITE_OWNER)
SECRET = b"the file's secret content"


@pytest.fixture(scope="module")
def server(servers):
    return servers(guest=True)


def snapshot(path):
    """What a refused request must leave as it was: existence, data, mode, times, xattrs."""
    if not path.exists():
        return None
    st = path.stat()
    data = path.read_bytes() if path.is_file() else sorted(os.listdir(path))
    return data, st.st_mode, st.st_mtime_ns, {n: os.getxattr(path, n) for n in os.listxattr(path)}


def one_ea(name: bytes, value: bytes) -> bytes:
    return struct.pack("<IBBH", 0, 0, len(name), len(value)) + name + b"\0" + value


EMPTY_DACL_SD = struct.pack("<BBHIIII", 1, 0, 0x8004, 0, 0, 0, 20) + struct.pack("<BBHHH", 2, 0, 8, 0, 0)
HIDDEN_READONLY_1980 = struct.pack("<QQQQII", *[wire.nt_time(315532800 * 10**9)] * 4,
                                   wire.ATTR_HIDDEN | wire.ATTR_READONLY, 0)

# SET_INFO through a FileId: (info type, class, data, AdditionalInformation)
SET_INFO = {
    "basic-times-attributes": (wire.INFO_FILE, FILE_BASIC_INFORMATION, HIDDEN_READONLY_1980, 0),
    "disposition-delete": (wire.INFO_FILE, FILE_DISPOSITION_INFORMATION, b"\x01", 0),
    "extended-attributes": (wire.INFO_FILE, FILE_FULL_EA_INFORMATION, one_ea(b"planted", b"value"), 0),
    "security-descriptor": (wire.INFO_SECURITY, 0, EMPTY_DACL_SD, DACL_SECURITY_INFORMATION),
}


@pytest.mark.parametrize("case", SET_INFO)
def test_read_only_share_fid_is_closed_on_the_writable_tree(server, case):
    path = server.path("ro") / f"cross-tree-{case}.txt"
    path.write_bytes(SECRET)
    before = snapshot(path)
    c, s = server.logon()
    ro, rw = c.tree(s, "ro"), c.tree(s, "rw")
    fid = ro.open(path.name, wire.MAXIMUM_ALLOWED)
    info_type, klass, data, additional = SET_INFO[case]
    r = rw.set_info(fid, info_type, klass, data, additional)
    assert r.status == wire.STATUS_FILE_CLOSED, r
    ro.close(fid)
    assert snapshot(path) == before


def test_read_only_share_fid_cannot_be_read_or_closed_through_another_tree(server):
    path = server.path("ro") / "cross-tree-read.txt"
    path.write_bytes(SECRET)
    c, s = server.logon()
    ro, rw = c.tree(s, "ro"), c.tree(s, "rw")
    fid = ro.open(path.name, wire.GENERIC_READ)
    r = rw.read(fid, 64)
    assert r.status == wire.STATUS_FILE_CLOSED and SECRET not in r.raw, r
    assert rw.close(fid).status == wire.STATUS_FILE_CLOSED
    assert ro.read(fid, 64).status == wire.STATUS_SUCCESS, "the open is still there"


def other_session_ops():
    return {
        "read": lambda tree, fid: tree.read(fid, 64),
        "write": lambda tree, fid: tree.write(fid, b"written by another session"),
        "close": lambda tree, fid: tree.close(fid),
        "set-info-disposition": lambda tree, fid: tree.set_info(fid, wire.INFO_FILE, FILE_DISPOSITION_INFORMATION,
                                                                b"\x01"),
        "query-info": lambda tree, fid: tree.query_info(fid, wire.INFO_FILE, FILE_STANDARD_INFORMATION),
        "query-security": lambda tree, fid: tree.query_info(fid, wire.INFO_SECURITY, 0, 4096,
                                                            DACL_SECURITY_INFORMATION),
        "flush": lambda tree, fid: tree.flush(fid),
        "lock": lambda tree, fid: tree.lock(fid, [(0, 10, wire.LOCK_EXCLUSIVE | wire.LOCK_FAIL_IMMEDIATELY)]),
        "unlock": lambda tree, fid: tree.lock(fid, [(0, 1, wire.LOCK_UNLOCK)]),
        "resume-key": lambda tree, fid: tree.ioctl(fid, FSCTL_SRV_REQUEST_RESUME_KEY, b"", 32),
        "zero-data": lambda tree, fid: tree.ioctl(fid, FSCTL_SET_ZERO_DATA, struct.pack("<qq", 0, 64), 0),
        "object-id": lambda tree, fid: tree.ioctl(fid, FSCTL_CREATE_OR_GET_OBJECT_ID, b"", 64),
        "oplock-break-ack": lambda tree, fid: tree.request(wire.OPLOCK_BREAK,
                                                           struct.pack("<HBBI", 24, 0, 0, 0) + fid),
    }


@pytest.mark.parametrize("op", other_session_ops())
def test_fid_is_closed_to_another_session_on_the_same_connection(server, op):
    path = server.path("rw") / f"other-session-{op}.txt"
    path.write_bytes(SECRET)
    before = snapshot(path)
    c, a = server.logon()
    b = c.logon(server.user, server.password)
    tree_a, tree_b = c.tree(a, "rw"), c.tree(b, "rw")
    fid = tree_a.open(path.name, wire.GENERIC_READ | wire.GENERIC_WRITE | wire.DELETE)
    assert tree_a.lock(fid, [(0, 1, wire.LOCK_EXCLUSIVE)]).status == wire.STATUS_SUCCESS
    r = other_session_ops()[op](tree_b, fid)
    assert r.status == wire.STATUS_FILE_CLOSED and SECRET not in r.raw, r
    assert tree_a.read(fid, 64).status == wire.STATUS_SUCCESS, "session A's open is still there"
    # (the other session's unlock released nothing: A's lock is there to release)
    assert tree_a.lock(fid, [(0, 1, wire.LOCK_UNLOCK)]).status == wire.STATUS_SUCCESS
    tree_a.close(fid)
    assert snapshot(path) == before


@pytest.mark.parametrize("op", ["query-directory", "change-notify"])
def test_directory_fid_is_closed_to_another_session_on_the_same_connection(server, op):
    """A directory's FileId: another session can neither list it nor watch it (a watch would
    tell it of every change A's handle may see)."""
    (server.path("rw") / "other-session-dir").mkdir(exist_ok=True)
    (server.path("rw") / "other-session-dir" / "inside.txt").write_bytes(SECRET)
    c, a = server.logon()
    b = c.logon(server.user, server.password)
    tree_a, tree_b = c.tree(a, "rw"), c.tree(b, "rw")
    fid = tree_a.open("other-session-dir", wire.GENERIC_READ)
    if op == "query-directory":
        r = tree_b.query_directory(fid)
        assert r.status == wire.STATUS_FILE_CLOSED and "inside.txt".encode("utf-16-le") not in r.raw, r
        assert tree_a.query_directory(fid).status == wire.STATUS_SUCCESS
    else:
        r = tree_b.change_notify(fid)
        assert r.status == wire.STATUS_FILE_CLOSED, r
    tree_a.close(fid)


RIGHTS = {"FILE_WRITE_DATA": wire.FILE_WRITE_DATA, "FILE_APPEND_DATA": wire.FILE_APPEND_DATA,
          "FILE_WRITE_ATTRIBUTES": wire.FILE_WRITE_ATTRIBUTES, "FILE_WRITE_EA": wire.FILE_WRITE_EA,
          "DELETE": wire.DELETE, "WRITE_DAC": WRITE_DAC, "WRITE_OWNER": WRITE_OWNER,
          "GENERIC_WRITE": wire.GENERIC_WRITE, "GENERIC_ALL": wire.GENERIC_ALL}


@pytest.mark.parametrize("right", RIGHTS)
def test_read_only_share_refuses_every_write_class_right(server, right):
    path = server.path("ro") / f"right-{right}.txt"
    path.write_bytes(SECRET)
    c, s = server.logon()
    ro = c.tree(s, "ro")
    r = ro.create(path.name, wire.FILE_READ_DATA | RIGHTS[right])
    if r.status == wire.STATUS_SUCCESS:
        ro.close(r.file_id)
    assert r.status == wire.STATUS_ACCESS_DENIED, r


ANY_ACCESS = {"GENERIC_READ": wire.GENERIC_READ, "FILE_READ_DATA": wire.FILE_READ_DATA,
              "DELETE": wire.DELETE, "MAXIMUM_ALLOWED": wire.MAXIMUM_ALLOWED, "GENERIC_ALL": wire.GENERIC_ALL}


def test_maximum_allowed_on_read_only_share_grants_read_rights_only(server):
    path = server.path("ro") / "maximum-allowed.txt"
    path.write_bytes(SECRET)
    c, s = server.logon()
    ro = c.tree(s, "ro")
    fid = ro.open(path.name, wire.MAXIMUM_ALLOWED)
    r = ro.query_info(fid, wire.INFO_FILE, FILE_ACCESS_INFORMATION)
    granted = struct.unpack("<I", r.buffer(2))[0]
    assert granted & wire.FILE_READ_DATA and not granted & WRITE_CLASS, hex(granted)
    r = ro.set_info(fid, wire.INFO_FILE, FILE_DISPOSITION_INFORMATION, b"\x01")
    assert r.status == wire.STATUS_ACCESS_DENIED, r
    ro.close(fid)
    assert path.read_bytes() == SECRET


def as_user(server, share):
    c, s = server.logon()
    return c.tree(s, share)


def as_anonymous(server, share):
    c = server.client()
    c.negotiate((wire.SMB311,))
    s = forged_logon(c, "", lambda _challenge: (b"", b""), flags=V1_FLAGS | ANONYMOUS)
    assert s.status == wire.STATUS_SUCCESS and s.flags & wire.SESSION_FLAG_IS_NULL, s.last
    return c.tree(s, share)


@pytest.mark.parametrize("who, share", [("user", "ro"), ("anonymous", "public")])
@pytest.mark.parametrize("kind", ["file", "directory"])
@pytest.mark.parametrize("access", ANY_ACCESS)
def test_read_only_share_refuses_delete_on_close(server, who, share, kind, access):
    path = server.path(share) / f"keep-{who}-{kind}-{access}"
    if kind == "file":
        path.write_bytes(SECRET)
    else:
        path.mkdir()
    tree = (as_user if who == "user" else as_anonymous)(server, share)
    options = wire.FILE_DELETE_ON_CLOSE | (wire.FILE_DIRECTORY_FILE if kind == "directory" else 0)
    r = tree.create(path.name, ANY_ACCESS[access], options=options)
    if r.status == wire.STATUS_SUCCESS:
        tree.close(r.file_id)
    assert path.exists(), f"{kind} deleted through a read-only share (CREATE: {r!r})"
    assert r.status == wire.STATUS_ACCESS_DENIED, r


# each request sent in plaintext on the encrypted share, with (file, directory) FileIds opened
# encrypted
PLAINTEXT = {
    "READ": lambda t, f, d: t.read(f, 64, encrypt=False),
    "WRITE": lambda t, f, d: t.write(f, b"PLAINTEXT WRITE", encrypt=False),
    "LOCK": lambda t, f, d: t.lock(f, [(0, 10, wire.LOCK_EXCLUSIVE | wire.LOCK_FAIL_IMMEDIATELY)], encrypt=False),
    "FLUSH": lambda t, f, d: t.flush(f, encrypt=False),
    "CLOSE": lambda t, f, d: t.close(f, encrypt=False),
    "QUERY_DIRECTORY": lambda t, f, d: t.query_directory(d, encrypt=False),
    "IOCTL": lambda t, f, d: t.ioctl(f, FSCTL_CREATE_OR_GET_OBJECT_ID, max_output=64, encrypt=False),
    "CHANGE_NOTIFY": lambda t, f, d: t.change_notify(d, encrypt=False),
    "QUERY_INFO": lambda t, f, d: t.query_info(f, wire.INFO_FILE, FILE_STANDARD_INFORMATION, encrypt=False),
    "SET_INFO": lambda t, f, d: t.set_info(f, wire.INFO_FILE, FILE_DISPOSITION_INFORMATION, b"\x01", encrypt=False),
}


@pytest.mark.parametrize("command", PLAINTEXT)
def test_encrypted_share_refuses_plaintext_requests_on_an_encrypted_open(server, command):
    path = server.path("enc") / f"sealed-{command}.txt"
    path.write_bytes(SECRET)
    folder = server.path("enc") / f"sealed-dir-{command}"
    folder.mkdir()
    (folder / "secret-name").write_bytes(b"")
    before = snapshot(path), snapshot(folder)
    c, s = server.logon()
    enc = c.tree(s, "enc")
    fid = enc.open(path.name, wire.GENERIC_READ | wire.GENERIC_WRITE | wire.DELETE)
    dir_fid = enc.open(folder.name, wire.GENERIC_READ, options=wire.FILE_DIRECTORY_FILE)
    r = PLAINTEXT[command](enc, fid, dir_fid)
    assert r.status == wire.STATUS_ACCESS_DENIED, r
    assert SECRET not in r.raw and wire.utf16("secret-name") not in r.raw
    # the open is still there, unlocked, and nothing changed
    read = enc.read(fid, 64)
    assert read.encrypted and SECRET in read.raw, read
    assert enc.lock(fid, [(0, 10, wire.LOCK_UNLOCK)]).status == wire.STATUS_RANGE_NOT_LOCKED
    enc.close(fid)
    enc.close(dir_fid)
    assert (snapshot(path), snapshot(folder)) == before


def test_request_in_another_sessions_transform_header_is_not_executed(server):
    path = server.path("rw") / "transform.txt"
    path.write_bytes(SECRET)
    c, a = server.logon()
    b = c.logon(server.user, server.password)
    tree_b = c.tree(b, "rw")
    fid = tree_b.open(path.name, wire.GENERIC_READ | wire.GENERIC_WRITE)
    # session B's WRITE, sealed with session A's key under A's SessionId: refused, as smbd
    # refuses it, without reaching B's open
    r = tree_b.write(fid, b"HIJACKED", transform_session=a)
    assert r.status == wire.STATUS_ACCESS_DENIED and r.encrypted, r
    assert path.read_bytes() == SECRET


def test_a_compound_in_another_sessions_transform_header_runs_only_the_sealers_requests(server):
    """Session A seals a compound whose first request is A's and whose second, not related,
    is session B's WRITE: A's runs; B's is answered ACCESS_DENIED, sealed, as smbd answers it,
    and B's file is not written (until 2026-12-07 the whole frame was refused)."""
    path = server.path("rw") / "transform-compound.txt"
    path.write_bytes(SECRET)
    c, a = server.logon()
    b = c.logon(server.user, server.password)
    tree_a, tree_b = c.tree(a, "rw"), c.tree(b, "rw")
    fid = tree_b.open(path.name, wire.GENERIC_READ | wire.GENERIC_WRITE)
    first = tree_a.message(wire.CREATE, create_body("made-by-a.txt", wire.GENERIC_READ, wire.FILE_OPEN_IF, 0))
    second = tree_b.message(wire.WRITE, write_body(fid, b"HIJACKED", 0), payload=8)
    answers = c.compound([first, second], encrypt=True, transform_session=a)
    assert [r.status for r in answers] == [wire.STATUS_SUCCESS, wire.STATUS_ACCESS_DENIED], answers
    assert all(r.encrypted for r in answers), answers
    assert path.read_bytes() == SECRET
    assert (server.path("rw") / "made-by-a.txt").exists()


def test_a_request_after_a_held_create_in_another_sessions_transform_header_is_refused(server):
    """As above, the first request a CREATE that waits for another client's batch oplock to
    break: B's WRITE after it is refused too (it was run once the CREATE was answered, its
    session never checked against the transform's)."""
    path = server.path("rw") / "transform-held.txt"
    path.write_bytes(SECRET)
    (server.path("rw") / "transform-held-oplock.txt").write_bytes(b"")
    holder, h = server.logon()
    held = holder.tree(h, "rw")
    r = held.request(wire.CREATE, create_body("transform-held-oplock.txt", wire.GENERIC_READ, wire.FILE_OPEN, 0,
                                              oplock=0x09))
    assert r.status == wire.STATUS_SUCCESS and r.body[2] == 0x09, r       # a batch oplock
    c, a = server.logon()
    b = c.logon(server.user, server.password)
    tree_a, tree_b = c.tree(a, "rw"), c.tree(b, "rw")
    fid = tree_b.open(path.name, wire.GENERIC_READ | wire.GENERIC_WRITE)
    first = tree_a.message(wire.CREATE, create_body("transform-held-oplock.txt", wire.GENERIC_READ | wire.GENERIC_WRITE,
                                                    wire.FILE_OPEN, 0, share_access=7))
    second = tree_b.message(wire.WRITE, write_body(fid, b"HIJACKED", 0), payload=8)

    def send_then_release():
        c.send([first, second], encrypt=True, transform_session=a)
        try:
            return c.response_to(wire.Header.parse(first).message_id)   # (its interim, where held)
        finally:
            held.close(r.file_id)        # the oplock's holder goes: a held CREATE goes on
    answer_or_drop(send_then_release)
    answer_or_drop(lambda: c.response_to(wire.Header.parse(second).message_id))
    assert path.read_bytes() == SECRET
