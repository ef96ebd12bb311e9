"""NTFS security and attribute semantics through real clients (smbprotocol for the raw
requests, Samba's smbcacls --numeric for the ACLs as an administrator sees them), with real
Unix accounts where it matters: inheritance, OWNER RIGHTS, the READONLY attribute, the SACL's
privilege and FileBasicInformation's special times.

Each check comes with an attempt to get around it: a right an inherited ACE does not give,
an owner limited by OWNER RIGHTS asking for what owners usually get, a READONLY file
overwritten, superseded or deleted on close by a server acting as root. The share's masks
make new files and directories writable by every Unix account (0666/0777), so that what is
refused is refused by the descriptor or the attribute, never by the kernel."""
from __future__ import annotations

import os
import struct

import pytest
from smbconf_fixtures import (
    TAG,
    loopback_on_445,
    need_root_and_samba,
    output,
    serve,
    unix_accounts,
)

need_root_and_samba()
smbprotocol = pytest.importorskip("smbprotocol")

from smbprotocol.exceptions import SMBResponseException  # noqa: E402
from smbprotocol_user import UserClient  # noqa: E402

PASSWORD = "Ntfs-pw1"
OWNER = f"ntfso{TAG}"
OTHER = f"ntfsx{TAG}"

READ_DATA, WRITE_DATA, APPEND_DATA, READ_ATTRIBUTES, WRITE_ATTRIBUTES = 0x1, 0x2, 0x4, 0x80, 0x100
DELETE, READ_CONTROL, WRITE_DAC, ACCESS_SYSTEM_SECURITY = 0x10000, 0x20000, 0x40000, 0x01000000
MAXIMUM_ALLOWED, GENERIC_ALL, GENERIC_WRITE = 0x02000000, 0x10000000, 0x40000000
FILE_READ = 0x001200A9          # FILE_GENERIC_READ | FILE_EXECUTE
FILE_ALL = 0x001F01FF
SUPERSEDE, OPEN, CREATE, OPEN_IF, OVERWRITE, OVERWRITE_IF = range(6)
DIRECTORY_FILE, NON_DIRECTORY_FILE, DELETE_ON_CLOSE = 0x1, 0x40, 0x1000
ATTR_READONLY, ATTR_HIDDEN, ATTR_DIRECTORY, ATTR_NORMAL = 0x1, 0x2, 0x10, 0x80
INFO_FILE = 1
BASIC, DISPOSITION = 4, 13
OWNER_PART, GROUP_PART, DACL_PART, SACL_PART = 0x1, 0x2, 0x4, 0x8
ACCESS_DENIED, CANNOT_DELETE, PRIVILEGE_NOT_HELD = 0xC0000022, 0xC0000121, 0xC0000061
INVALID_PARAMETER = 0xC000000D


def sid(text: str) -> bytes:
    """S-1-A-x-y... -> its binary form."""
    _s, _one, authority, *subs = text.split("-")
    return (struct.pack("<BB", 1, len(subs)) + int(authority).to_bytes(6, "big") +
            b"".join(struct.pack("<I", int(s)) for s in subs))


def descriptor(*aces: tuple[int, int, int, str], control: int = 0) -> bytes:
    """A self-relative descriptor with a DACL only: aces are (type, flags, mask, SID text)."""
    body = b"".join(struct.pack("<BBHI", t, f, 8 + len(sid(who)), m) + sid(who) for t, f, m, who in aces)
    acl = struct.pack("<BBHHH", 2, 0, 8 + len(body), len(aces), 0) + body
    return struct.pack("<BBHIIII", 1, 0, 0x8004 | control, 0, 0, 0, 20) + acl


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with unix_accounts({OWNER: (), OTHER: ()}) as accounts:
        tmp = tmp_path_factory.mktemp("ntfs")
        share = tmp / "share"
        share.mkdir()
        share.chmod(0o777)
        options = (f"path = {share}\nread only = no\ncreate mask = 0777\nforce create mode = 0666\n"
                   "directory mask = 0777\nforce directory mode = 0777")
        with serve(tmp / "run", "", {"s": options}, {OWNER: PASSWORD, OTHER: PASSWORD},
                   host=loopback_on_445(), port=445) as served:
            served.accounts, served.share = accounts, share
            yield served


def client(server, user: str) -> UserClient:
    return UserClient(server.host, server.port, user, PASSWORD, "s")


def account_sid(server, user: str) -> str:
    return f"S-1-22-1-{server.accounts[user].uid}"


def test_an_inherited_ace_grants_no_more_than_the_parent_allows(server):
    """The folder lets the other account read what is made in it (an object-inherit ACE)
    and nothing more; the kernel would let it write (0666), the descriptor must not."""
    other = account_sid(server, OTHER)
    with client(server, OWNER) as c:
        d = c.open("inh", FILE_ALL, CREATE, options=DIRECTORY_FILE)
        assert c.set_sd(d, descriptor(
            (0, 0x3, FILE_ALL, account_sid(server, OWNER)),        # the owner: everything, inherited
            (0, 0x1, FILE_READ, other),                             # the other: read, to files
            (0, 0x0, FILE_READ, other)), DACL_PART) == 0           # and to list the folder
        d.close()
        c.open("inh\\f.txt", FILE_ALL, CREATE).close()
    assert os.stat(server.share / "inh" / "f.txt").st_mode & 0o777 == 0o666   # the kernel would allow
    with client(server, OTHER) as c:
        assert c.status("inh\\f.txt", READ_DATA) == 0
        for access in (WRITE_DATA, APPEND_DATA, WRITE_ATTRIBUTES, WRITE_DAC, DELETE, GENERIC_ALL, GENERIC_WRITE):
            assert c.status("inh\\f.txt", access) == ACCESS_DENIED, hex(access)
        assert c.status("inh\\f.txt", READ_DATA, OVERWRITE) == ACCESS_DENIED          # truncating writes
        assert c.status("inh\\f.txt", READ_DATA, options=DELETE_ON_CLOSE) == ACCESS_DENIED
        f = c.open("inh\\f.txt", MAXIMUM_ALLOWED)
        assert c.granted(f) & (WRITE_DATA | APPEND_DATA | WRITE_DAC | DELETE) == 0
        f.close()
        # nor may it add a file of its own to the folder, with or without a descriptor
        assert c.status("inh\\mine.txt", FILE_ALL, CREATE) == ACCESS_DENIED
        assert not (server.share / "inh" / "mine.txt").exists()
    assert (server.share / "inh" / "f.txt").exists()
    # as an administrator sees it: the other account's ACE, as inherited (no INHERITED flag:
    # the folder's DACL is not AUTO_INHERITED)
    r = server.smbcacls("s", "inh/f.txt", user=OWNER)
    assert f"ACL:{other}:0/0x0/0x001200a9" in output(r), output(r)      # (0: allowed)


def test_a_descriptor_stored_on_the_share_root_decides_who_opens_the_root(server):
    """The share's root is opened as any other directory: a descriptor a client stored on it
    refuses what it does not grant, though the kernel would allow everything (0777). Without
    that, an account the descriptor leaves out could still list the root, or open it with
    WRITE_DAC and write itself a descriptor of its own. (The root is OWNER's for the test:
    without a stored descriptor, WRITE_DAC is the Unix owner's only.)"""
    os.chown(server.share, server.accounts[OWNER].uid, -1)
    try:
        with client(server, OTHER) as c:
            assert c.status("", WRITE_DAC, options=DIRECTORY_FILE) == ACCESS_DENIED
        with client(server, OWNER) as c:
            root = c.open("", FILE_ALL, options=DIRECTORY_FILE)
            assert c.set_sd(root, descriptor(
                (0, 0x0, FILE_ALL, account_sid(server, OWNER))), DACL_PART) == 0
            root.close()
            assert c.status("", READ_DATA, options=DIRECTORY_FILE) == 0
        with client(server, OTHER) as c:
            for access in (READ_DATA, WRITE_DAC, WRITE_DATA, MAXIMUM_ALLOWED | WRITE_DAC):
                assert c.status("", access, options=DIRECTORY_FILE) == ACCESS_DENIED, hex(access)
            # what the descriptor grants everyone from the parent's side is not widened either
            assert c.status("", READ_ATTRIBUTES, options=DIRECTORY_FILE) == ACCESS_DENIED
    finally:
        try:
            os.removexattr(server.share, "user.smbring.sd")
        except OSError:
            pass
        os.chown(server.share, 0, -1)


def test_creator_owner_becomes_the_creator_and_stays_inheritable(server):
    """CREATOR OWNER in an inheritable ACE (Windows' "subfolders and files only") names
    whoever creates the child; a subfolder also keeps the CREATOR OWNER ACE inherit-only, for
    what is made in it; its GENERIC_ALL maps to FILE_ALL_ACCESS in the ACE that applies."""
    with client(server, OWNER) as c:
        d = c.open("co", FILE_ALL, CREATE, options=DIRECTORY_FILE)
        assert c.set_sd(d, descriptor(
            (0, 0xB, GENERIC_ALL, "S-1-3-0"), (0, 0x3, FILE_ALL, "S-1-1-0")), DACL_PART) == 0
        d.close()
    with client(server, OTHER) as c:
        c.open("co\\sub", FILE_ALL, CREATE, options=DIRECTORY_FILE).close()
    r = server.smbcacls("s", "co/sub", user=OTHER)
    text = output(r)
    assert f"ACL:{account_sid(server, OTHER)}:0/0x0/0x001f01ff" in text, text
    assert "ACL:S-1-3-0:0/0xb/0x10000000" in text, text     # OI|CI|IO, GENERIC_ALL as it was


def test_owner_rights_limit_the_owner(server):
    """Owners get READ_CONTROL and WRITE_DAC whatever the DACL says, unless an OWNER RIGHTS
    ACE is there: then it alone says what the owner gets. Here it gives reading only; the
    owner cannot then change the DACL, nor write, although the kernel would let it."""
    with client(server, OWNER) as c:
        f = c.open("or.txt", FILE_ALL, CREATE)
        assert c.set_sd(f, descriptor(
            (0, 0, FILE_READ, "S-1-3-4"), (0, 0, FILE_READ, account_sid(server, OTHER))), DACL_PART) == 0
        f.close()
        assert c.status("or.txt", READ_DATA | READ_CONTROL) == 0
        for access in (WRITE_DAC, WRITE_DATA, MAXIMUM_ALLOWED | WRITE_DAC):
            assert c.status("or.txt", access) == ACCESS_DENIED, hex(access)
        f = c.open("or.txt", MAXIMUM_ALLOWED)
        assert c.granted(f) & ~DELETE == FILE_READ
        f.close()
    # the same DACL without OWNER RIGHTS: the owner keeps WRITE_DAC (and can put it right)
    with client(server, OWNER) as c:
        c.open("plain.txt", FILE_ALL, CREATE).close()
        f = c.open("plain.txt", WRITE_DAC)
        assert c.set_sd(f, descriptor((0, 0, FILE_READ, "S-1-1-0")), DACL_PART) == 0
        f.close()
        assert c.status("plain.txt", WRITE_DAC) == 0
        assert c.status("plain.txt", WRITE_DATA) == ACCESS_DENIED
    # OWNER RIGHTS gives nothing to anyone but the owner
    with client(server, OTHER) as c:
        f = c.open("or.txt", MAXIMUM_ALLOWED)
        assert c.granted(f) & (WRITE_DAC | WRITE_DATA) == 0
        f.close()


def test_the_sacl_needs_a_privilege_nobody_holds(server):
    with client(server, OWNER) as c:
        c.open("sacl.txt", FILE_ALL, CREATE).close()
        assert c.status("sacl.txt", ACCESS_SYSTEM_SECURITY | READ_CONTROL) == PRIVILEGE_NOT_HELD
        f = c.open("sacl.txt", MAXIMUM_ALLOWED)
        with pytest.raises(SMBResponseException) as e:
            c.sd(f, SACL_PART)
        assert e.value.status == ACCESS_DENIED
        assert c.set_sd(f, descriptor(), SACL_PART) == ACCESS_DENIED
        f.close()
        # asking for no part at all needs no right and gets an empty descriptor (as Windows)
        f = c.open("sacl.txt", READ_ATTRIBUTES)
        with pytest.raises(SMBResponseException):
            c.sd(f, OWNER_PART)
        empty = c.sd(f, 0)
        assert struct.unpack_from("<IIII", empty, 4) == (0, 0, 0, 0)
        f.close()


def test_the_owner_sets_and_clears_read_only_and_read_only_holds(server):
    """A non-root owner may set and clear READONLY (the server stores the attribute while it
    may still write the file); while it is set, the file is written, overwritten, superseded
    and deleted by nobody."""
    path = server.share / "ro.txt"
    with client(server, OWNER) as c:
        f = c.open("ro.txt", FILE_ALL, CREATE)
        f.write(b"keep me")
        assert c.set_basic(f, ATTR_READONLY) == 0
        assert c.basic(f)[4] & ATTR_READONLY
        f.close()
        assert not os.stat(path).st_mode & 0o222
        attempts = [(WRITE_DATA, OPEN, 0), (APPEND_DATA, OPEN, 0), (GENERIC_WRITE, OPEN, 0),
                    (GENERIC_ALL, OPEN, 0), (READ_DATA, OVERWRITE, 0), (READ_DATA, OVERWRITE_IF, 0),
                    (READ_DATA, SUPERSEDE, 0), (READ_DATA, OVERWRITE, ATTR_READONLY)]
        for access, disposition, attrs in attempts:
            assert c.status("ro.txt", access, disposition, attrs) == ACCESS_DENIED, (hex(access), disposition)
        assert c.status("ro.txt", DELETE, options=DELETE_ON_CLOSE) == CANNOT_DELETE
        f = c.open("ro.txt", MAXIMUM_ALLOWED)
        assert not c.granted(f) & (WRITE_DATA | APPEND_DATA)
        assert c.set_info(f, INFO_FILE, DISPOSITION, b"\x01") == CANNOT_DELETE
        # the file's own DACL (from its mode) is left as it was: READONLY is an attribute
        f.close()
        assert path.read_bytes() == b"keep me"
        f = c.open("ro.txt", WRITE_ATTRIBUTES | READ_ATTRIBUTES)
        assert c.set_basic(f, ATTR_NORMAL) == 0
        assert not c.basic(f)[4] & ATTR_READONLY
        f.close()
        assert c.status("ro.txt", WRITE_DATA) == 0


@pytest.fixture(scope="module")
def root_server(tmp_path_factory):
    """A server whose sessions act as root (the kernel lets root write anything)."""
    from servers import PASSWORD as USER_PASSWORD
    from servers import USER, spawn, stop
    tmp = tmp_path_factory.mktemp("ntfs-root")
    share = tmp / "share"
    share.mkdir()
    proc, port, _log = spawn(tmp, str(share), "--share", "s")
    try:
        yield port, share, USER, USER_PASSWORD
    finally:
        stop(proc)


def root_client(root_server) -> UserClient:
    port, _share, user, password = root_server
    return UserClient("127.0.0.1", port, user, password, "s")


def test_read_only_holds_against_a_server_acting_as_root(root_server):
    _port, share, _user, _pw = root_server
    with root_client(root_server) as c:
        f = c.open("rootro.txt", FILE_ALL, CREATE, attrs=ATTR_READONLY)
        f.write(b"keep me")
        f.close()
        for access, disposition in ((WRITE_DATA, OPEN), (GENERIC_WRITE, OPEN), (READ_DATA, OVERWRITE),
                                    (READ_DATA, OVERWRITE_IF), (READ_DATA, SUPERSEDE)):
            assert c.status("rootro.txt", access, disposition) == ACCESS_DENIED, (hex(access), disposition)
        assert c.status("rootro.txt", DELETE, options=DELETE_ON_CLOSE) == CANNOT_DELETE
        f = c.open("rootro.txt", DELETE)
        assert c.set_info(f, INFO_FILE, DISPOSITION, b"\x01") == CANNOT_DELETE
        f.close()
        assert (share / "rootro.txt").read_bytes() == b"keep me"
        # a directory keeps READONLY as an attribute: it still takes new files, it is not deleted
        d = c.open("rodir", FILE_ALL, CREATE, options=DIRECTORY_FILE)
        assert c.set_basic(d, ATTR_READONLY | ATTR_DIRECTORY) == 0
        assert c.basic(d)[4] & ATTR_READONLY
        d.close()
        c.open("rodir\\inside.txt", FILE_ALL, CREATE).close()
        d = c.open("rodir", MAXIMUM_ALLOWED, options=DIRECTORY_FILE)
        assert c.granted(d) == FILE_ALL                     # (Windows takes nothing from a folder's)
        d.close()
        assert c.status("rodir", DELETE, options=DELETE_ON_CLOSE | DIRECTORY_FILE) == CANNOT_DELETE
        assert (share / "rodir" / "inside.txt").exists()


def test_overwriting_a_hidden_file_must_keep_it_hidden(root_server):
    """FILE_OVERWRITE of a HIDDEN (or SYSTEM) file must ask for the attribute again (MS-FSA
    2.1.5.1.2), else nothing is truncated."""
    _port, share, _user, _pw = root_server
    with root_client(root_server) as c:
        f = c.open("hidden.txt", FILE_ALL, CREATE, attrs=ATTR_HIDDEN)
        f.write(b"data")
        f.close()
        assert c.status("hidden.txt", WRITE_DATA, OVERWRITE_IF, ATTR_NORMAL) == ACCESS_DENIED
        assert (share / "hidden.txt").read_bytes() == b"data"
        assert c.status("hidden.txt", WRITE_DATA, OVERWRITE_IF, ATTR_HIDDEN) == 0
        assert (share / "hidden.txt").read_bytes() == b""


def test_special_times_leave_the_times_and_the_write_time_leaves_the_creation_time(root_server):
    with root_client(root_server) as c:
        f = c.open("times.txt", FILE_ALL, CREATE)
        created = struct.unpack_from("<Q", c.query_info(f, INFO_FILE, BASIC), 0)[0]
        assert c.set_basic(f, 0, (0, 0, 130_000_000_000_000_000, 0)) == 0
        basic = c.query_info(f, INFO_FILE, BASIC)
        assert struct.unpack_from("<QQQ", basic, 0)[0] == created
        assert struct.unpack_from("<Q", basic, 16)[0] == 130_000_000_000_000_000
        for special in (-1, -2):        # freeze, thaw: neither is a time
            assert c.set_basic(f, 0, (special, special, special, special)) == 0
            again = c.query_info(f, INFO_FILE, BASIC)
            assert struct.unpack_from("<QQ", again, 0) == (created, struct.unpack_from("<Q", basic, 8)[0])
            assert struct.unpack_from("<Q", again, 16)[0] == 130_000_000_000_000_000
        assert c.set_basic(f, 0, (-3, 0, 0, 0)) == INVALID_PARAMETER
        # a time before 1970, or after 2262 (past a signed 64-bit count of ns), is a time
        # like any other
        for when in (116_444_736_000_000_000 - 10_000_000, (15032385535 + 11644473600) * 10**7):
            assert c.set_basic(f, 0, (when, 0, when, when)) == 0
            assert struct.unpack_from("<QQQQ", c.query_info(f, INFO_FILE, BASIC), 0) == (
                when, struct.unpack_from("<Q", c.query_info(f, INFO_FILE, BASIC), 8)[0], when, when)
        f.close()


def test_a_write_time_set_or_frozen_on_a_handle_stays_through_its_writes(root_server):
    """MS-FSA 2.1.5.14.2: a write time set on a handle, or frozen there (-1), is not moved by
    that handle's own writes and size changes; thawing (-2) lets them move it again; another
    handle's writes move it as always."""
    _port, share, _user, _pw = root_server
    path = share / "frozen.txt"
    set_time = 130_000_000_000_000_000
    with root_client(root_server) as c:
        f = c.open("frozen.txt", FILE_ALL, CREATE)
        assert c.set_basic(f, 0, (0, 0, set_time, 0)) == 0
        f.write(b"more data", 0)
        assert c.set_info(f, INFO_FILE, 20, struct.pack("<Q", 100)) == 0        # EndOfFile
        assert os.stat(path).st_mtime_ns == (set_time - 116_444_736_000_000_000) * 100
        assert c.set_basic(f, 0, (0, 0, -2, 0)) == 0                        # thaw
        f.write(b"x", 0)
        thawed = os.stat(path).st_mtime_ns
        assert thawed > (set_time - 116_444_736_000_000_000) * 100
        assert c.set_basic(f, 0, (0, 0, -1, 0)) == 0                        # freeze
        frozen = os.stat(path).st_mtime_ns      # (the SET_INFO showed the handle's write)
        assert frozen >= thawed
        f.write(b"y", 0)
        assert os.stat(path).st_mtime_ns == frozen
        thawed = frozen
        other = c.open("frozen.txt", FILE_ALL)
        os.utime(path, ns=(thawed, thawed - 10**9))
        other.write(b"z", 0)                                                      # not frozen there
        assert os.stat(path).st_mtime_ns > thawed - 10**9
        other.close()
        f.close()


def test_a_read_only_file_is_not_replaced_by_a_rename(root_server):
    _port, share, _user, _pw = root_server
    with root_client(root_server) as c:
        c.open("target.txt", FILE_ALL, CREATE, attrs=ATTR_READONLY).close()
        (share / "target.txt").chmod(0o444)
        f = c.open("source.txt", FILE_ALL | DELETE, CREATE)
        name = "target.txt".encode("utf-16-le")
        rename = struct.pack("<B7xQI", 1, 0, len(name)) + name        # ReplaceIfExists
        assert c.set_info(f, INFO_FILE, 10, rename) == ACCESS_DENIED
        f.close()
        assert (share / "source.txt").exists() and (share / "target.txt").exists()
