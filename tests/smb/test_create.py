"""CREATE and CLOSE through the sans-I/O connection (MS-SMB2 3.3.5.9, 3.3.5.10) on real files:
dispositions, directory options, what a read-only share refuses, access granted, names that do
not lie in the message, named streams, the bound on open files, and CLOSE's attributes."""
import os
import struct

import pytest
from sansio_client import ALL_ACCESS
from smbcore import create_body

from smbring.smb import wire
from smbring.smb.limits import Limits

FILE_ACCESS_INFORMATION = 8


@pytest.fixture
def read_only(clients):
    return clients(share={"read_only": True})


def create(client, name, access=ALL_ACCESS, disposition=wire.FILE_OPEN_IF, options=0, **kw):
    """(status, the response's CreateAction, EndofFile, FileAttributes and FileId)."""
    status, body = client.request(wire.CREATE, create_body(name, access, disposition, options, **kw))
    if status:
        return status, None
    action = struct.unpack_from("<I", body, 4)[0]
    _alloc, size, attrs = struct.unpack_from("<QQI", body, 40)
    return status, dict(action=action, size=size, attrs=attrs, fid=body[64:80])


# disposition -> (on an existing file: status, action, whether its data is kept; on none: ...)
DISPOSITIONS = {
    wire.FILE_SUPERSEDE: ((0, wire.FILE_SUPERSEDED, False), (0, wire.FILE_CREATED)),
    wire.FILE_OPEN: ((0, wire.FILE_OPENED, True), (wire.STATUS_OBJECT_NAME_NOT_FOUND, None)),
    wire.FILE_CREATE: ((wire.STATUS_OBJECT_NAME_COLLISION, None, True), (0, wire.FILE_CREATED)),
    wire.FILE_OPEN_IF: ((0, wire.FILE_OPENED, True), (0, wire.FILE_CREATED)),
    wire.FILE_OVERWRITE: ((0, wire.FILE_OVERWRITTEN, False), (wire.STATUS_OBJECT_NAME_NOT_FOUND, None)),
    wire.FILE_OVERWRITE_IF: ((0, wire.FILE_OVERWRITTEN, False), (0, wire.FILE_CREATED)),
}


@pytest.mark.parametrize("disposition", DISPOSITIONS)
def test_disposition_on_an_existing_file(client, share, disposition):
    (share / "f").write_bytes(b"data")
    status, action, kept = DISPOSITIONS[disposition][0]
    got, fields = create(client, "f", disposition=disposition)
    assert got == status
    assert (share / "f").read_bytes() == (b"data" if kept else b"")
    if not status:
        assert fields["action"] == action and fields["size"] == (4 if kept else 0)


@pytest.mark.parametrize("disposition", DISPOSITIONS)
def test_disposition_on_no_file(client, share, disposition):
    status, action = DISPOSITIONS[disposition][1]
    got, fields = create(client, "f", disposition=disposition)
    assert got == status
    assert (share / "f").exists() == (not status)
    if not status:
        assert fields["action"] == action and fields["attrs"] == wire.ATTR_ARCHIVE


def test_an_unknown_disposition_is_an_invalid_parameter(client, share):
    assert create(client, "f", disposition=6)[0] == wire.STATUS_INVALID_PARAMETER
    assert not (share / "f").exists()


def test_opening_below_a_missing_directory_is_path_not_found(client):
    assert create(client, "nodir\\f", disposition=wire.FILE_OPEN)[0] == wire.STATUS_OBJECT_PATH_NOT_FOUND
    assert create(client, "f", disposition=wire.FILE_OPEN)[0] == wire.STATUS_OBJECT_NAME_NOT_FOUND


def test_names_are_case_insensitive(client, share):
    (share / "Dir").mkdir()
    (share / "Dir" / "File.txt").write_bytes(b"x")
    status, fields = create(client, "dIR\\fILE.TXT", disposition=wire.FILE_OPEN)
    assert status == 0 and fields["size"] == 1


def test_directory_file_creates_a_directory(client, share):
    status, fields = create(client, "d", disposition=wire.FILE_CREATE, options=wire.FILE_DIRECTORY_FILE)
    assert status == 0 and fields["action"] == wire.FILE_CREATED
    assert (share / "d").is_dir() and fields["attrs"] & wire.ATTR_DIRECTORY and fields["size"] == 0


def test_directory_file_on_a_file_is_not_a_directory(client, share):
    (share / "f").write_bytes(b"x")
    assert create(client, "f", options=wire.FILE_DIRECTORY_FILE)[0] == wire.STATUS_NOT_A_DIRECTORY


def test_non_directory_file_on_a_directory_is_a_directory(client, share):
    (share / "d").mkdir()
    assert create(client, "d", options=wire.FILE_NON_DIRECTORY_FILE)[0] == wire.STATUS_FILE_IS_A_DIRECTORY
    status, fields = create(client, "d")          # neither option: the directory it is
    assert status == 0 and fields["attrs"] & wire.ATTR_DIRECTORY


def test_the_share_root_opens_as_a_directory(client):
    status, fields = create(client, "", options=wire.FILE_DIRECTORY_FILE, disposition=wire.FILE_OPEN)
    assert status == 0 and fields["attrs"] & wire.ATTR_DIRECTORY


def test_a_fifo_is_never_opened(client, share):
    os.mkfifo(share / "fifo")
    assert create(client, "fifo", access=wire.GENERIC_READ)[0] == wire.STATUS_IO_REPARSE_TAG_NOT_HANDLED


@pytest.mark.parametrize("name, status", [
    ("..\\outside", wire.STATUS_OBJECT_PATH_SYNTAX_BAD),
    ("a\\..\\..\\outside", wire.STATUS_OBJECT_PATH_SYNTAX_BAD),
    ("\\f", wire.STATUS_INVALID_PARAMETER),              # paths are relative to the share
    ("f*", wire.STATUS_OBJECT_NAME_INVALID),
    ("f:a:b:c", wire.STATUS_OBJECT_NAME_INVALID),
    (".smbring-streams", wire.STATUS_OBJECT_NAME_INVALID),
])
def test_names_that_name_nothing_servable(client, share, name, status):
    assert create(client, name)[0] == status
    assert sorted(os.listdir(share)) == [] and sorted(os.listdir(share.parent)) == ["share"]


@pytest.mark.parametrize("options, status", [
    (0x01000000, wire.STATUS_INVALID_PARAMETER),           # reserved create options
    (0x00100000, wire.STATUS_NOT_SUPPORTED),               # FILE_RESERVE_OPFILTER
    (0x00002000, wire.STATUS_NOT_SUPPORTED),               # FILE_OPEN_BY_FILE_ID
])
def test_create_options_refused(client, options, status):
    assert create(client, "f", options=options)[0] == status


@pytest.mark.parametrize("access, status", [
    (0x00100000 | 0x00800000, wire.STATUS_ACCESS_DENIED),   # a reserved bit
    (0x01000000, wire.STATUS_PRIVILEGE_NOT_HELD),          # ACCESS_SYSTEM_SECURITY
])
def test_access_bits_refused(client, access, status):
    assert create(client, "f", access=access)[0] == status


def test_an_impersonation_level_past_delegate_is_refused(client):
    assert create(client, "f", impersonation=4)[0] == wire.STATUS_BAD_IMPERSONATION_LEVEL


@pytest.mark.parametrize("fields, status", [
    # several refused at once: the first in the order they are judged decides (impersonation,
    # reserved access, ACCESS_SYSTEM_SECURITY, reserved options / attributes / disposition,
    # options not supported)
    (dict(impersonation=4, access=0x01000000, options=0x01000000), wire.STATUS_BAD_IMPERSONATION_LEVEL),
    (dict(access=0x00800000 | 0x01000000, options=0x00002000), wire.STATUS_ACCESS_DENIED),
    (dict(access=0x01000000, options=0x01000000), wire.STATUS_PRIVILEGE_NOT_HELD),
    (dict(access=0x01000000, attributes=0x8), wire.STATUS_PRIVILEGE_NOT_HELD),
    (dict(options=0x01000000 | 0x00002000), wire.STATUS_INVALID_PARAMETER),
    (dict(options=0x00002000, attributes=0x8), wire.STATUS_INVALID_PARAMETER),
    (dict(options=0x00100000, disposition=6), wire.STATUS_INVALID_PARAMETER),
    (dict(disposition=6), wire.STATUS_INVALID_PARAMETER),
    (dict(options=0x00000080), wire.STATUS_NOT_SUPPORTED),       # FILE_CREATE_TREE_CONNECTION
    (dict(impersonation=3, access=0x02000000), 0),               # Delegate, MAXIMUM_ALLOWED: none refused
])
def test_fields_refused_together(client, fields, status):
    assert create(client, "f", **{"disposition": wire.FILE_OPEN_IF, **fields})[0] == status


def test_attributes_a_new_file_cannot_have(client):
    assert create(client, "f", attributes=0x8)[0] == wire.STATUS_INVALID_PARAMETER      # VOLUME


def test_a_new_read_only_file(client, share):
    status, fields = create(client, "f", disposition=wire.FILE_CREATE, attributes=wire.ATTR_READONLY)
    assert status == 0 and fields["attrs"] & wire.ATTR_READONLY
    assert not (share / "f").stat().st_mode & 0o222


# -- names and contexts that do not lie in the message ------------------------------------------

@pytest.mark.parametrize("offset, length", [
    (120, 4000),                  # past the message's end
    (8, 4),                       # inside the header
    (0, 2),
    (0xFFFF, 0xFFFF),
])
def test_a_name_outside_the_message_is_an_invalid_parameter(client, offset, length):
    status, _ = create(client, "f", name_offset=offset, name_length=length)
    assert status == wire.STATUS_INVALID_PARAMETER


def test_contexts_outside_the_message_are_an_invalid_parameter(client):
    body = bytearray(create_body("f", ALL_ACCESS, wire.FILE_OPEN_IF, 0, contexts=[(b"MxAc", b"")]))
    _off, length = struct.unpack_from("<II", body, 48)
    struct.pack_into("<I", body, 52, length + 64)          # CreateContextsLength past the end
    assert client.request(wire.CREATE, bytes(body))[0] == wire.STATUS_INVALID_PARAMETER


def test_the_maximal_access_context(client, read_only, share):
    (share / "f").write_bytes(b"x")
    for c, most in ((client, wire.FILE_ALL_ACCESS), (read_only, wire.READ_ONLY_ACCESS)):
        status, body = c.request(wire.CREATE, create_body("f", wire.GENERIC_READ, wire.FILE_OPEN, 0,
                                                          contexts=[(b"MxAc", b"")]))
        assert status == 0
        offset, length = struct.unpack_from("<II", body, 80)
        context = body[offset - 64:offset - 64 + length]
        assert context[16:20] == b"MxAc" and struct.unpack_from("<II", context, 24) == (0, most)


# -- a read-only share ------------------------------------------------------------------------

WRITE_CLASS_RIGHTS = [wire.FILE_WRITE_DATA, wire.FILE_APPEND_DATA, wire.FILE_WRITE_EA, wire.FILE_WRITE_ATTRIBUTES,
                      wire.FILE_DELETE_CHILD, wire.DELETE, wire.WRITE_DAC, wire.WRITE_OWNER, wire.GENERIC_WRITE,
                      wire.GENERIC_ALL, wire.FILE_ALL_ACCESS]


@pytest.mark.parametrize("right", WRITE_CLASS_RIGHTS, ids=hex)
@pytest.mark.parametrize("kind", ["file", "dir"])
def test_read_only_share_refuses_every_write_class_right(read_only, share, right, kind):
    (share / "d").mkdir()
    (share / "f").write_bytes(b"x")
    name, options = ("f", 0) if kind == "file" else ("d", wire.FILE_DIRECTORY_FILE)
    assert create(read_only, name, access=wire.FILE_READ_DATA | right, disposition=wire.FILE_OPEN,
                  options=options)[0] == wire.STATUS_ACCESS_DENIED


def test_read_only_share_refuses_delete_on_close(read_only, share):
    (share / "f").write_bytes(b"x")
    status, _ = create(read_only, "f", access=wire.GENERIC_READ | wire.DELETE,
                       disposition=wire.FILE_OPEN, options=wire.FILE_DELETE_ON_CLOSE)
    assert status == wire.STATUS_ACCESS_DENIED
    status, _ = create(read_only, "f", access=wire.MAXIMUM_ALLOWED, disposition=wire.FILE_OPEN,
                       options=wire.FILE_DELETE_ON_CLOSE)
    assert status == wire.STATUS_ACCESS_DENIED
    assert (share / "f").read_bytes() == b"x"


@pytest.mark.parametrize("disposition", [wire.FILE_SUPERSEDE, wire.FILE_CREATE, wire.FILE_OVERWRITE,
                                         wire.FILE_OVERWRITE_IF])
@pytest.mark.parametrize("exists", [True, False])
def test_read_only_share_refuses_creating_dispositions(read_only, share, disposition, exists):
    if exists:
        (share / "f").write_bytes(b"x")
    assert create(read_only, "f", access=wire.GENERIC_READ, disposition=disposition)[0] == \
        wire.STATUS_ACCESS_DENIED
    assert os.listdir(share) == (["f"] if exists else [])
    if exists:
        assert (share / "f").read_bytes() == b"x"


def test_read_only_share_open_if_opens_but_never_creates(read_only, share):
    (share / "f").write_bytes(b"x")
    assert create(read_only, "f", access=wire.GENERIC_READ)[0] == 0
    assert create(read_only, "g", access=wire.GENERIC_READ)[0] == wire.STATUS_ACCESS_DENIED
    assert create(read_only, "d", access=wire.GENERIC_READ, options=wire.FILE_DIRECTORY_FILE)[0] == \
        wire.STATUS_ACCESS_DENIED
    assert os.listdir(share) == ["f"]


def test_read_only_share_creates_no_stream(read_only, share):
    (share / "f").write_bytes(b"x")
    assert create(read_only, "f:s", access=wire.GENERIC_READ)[0] == wire.STATUS_ACCESS_DENIED
    assert create(read_only, "f:s", access=wire.GENERIC_READ, disposition=wire.FILE_OPEN)[0] == \
        wire.STATUS_OBJECT_NAME_NOT_FOUND
    assert os.listdir(share) == ["f"]


def granted(client, fid):
    status, info = client.query_info(fid, FILE_ACCESS_INFORMATION)
    assert status == 0
    return struct.unpack("<I", info)[0]


def test_maximum_allowed_on_a_read_only_share_grants_read_rights_only(read_only, share):
    (share / "f").write_bytes(b"x")
    status, fields = create(read_only, "f", access=wire.MAXIMUM_ALLOWED, disposition=wire.FILE_OPEN)
    assert status == 0
    rights = granted(read_only, fields["fid"])
    assert rights & wire.FILE_READ_DATA and not rights & ~wire.READ_ONLY_ACCESS
    assert read_only.write(fields["fid"], b"y") == wire.STATUS_ACCESS_DENIED
    assert read_only.delete_on_close(fields["fid"]) == wire.STATUS_ACCESS_DENIED
    assert (share / "f").read_bytes() == b"x"


def test_maximum_allowed_on_a_writable_share_grants_everything(client, share):
    (share / "f").write_bytes(b"x")
    _status, fields = create(client, "f", access=wire.MAXIMUM_ALLOWED, disposition=wire.FILE_OPEN)
    assert granted(client, fields["fid"]) == wire.FILE_ALL_ACCESS


def test_generic_rights_are_granted_mapped(client, share):
    (share / "f").write_bytes(b"x")
    _status, fields = create(client, "f", access=wire.GENERIC_READ, disposition=wire.FILE_OPEN)
    rights = granted(client, fields["fid"])
    assert rights & wire.FILE_READ_DATA and not rights & (wire.FILE_WRITE_DATA | wire.GENERIC_READ)


# -- delete on close and share modes ----------------------------------------------------------

def test_delete_on_close_needs_delete_access(client, share):
    (share / "f").write_bytes(b"x")
    status, _ = create(client, "f", access=wire.GENERIC_READ, options=wire.FILE_DELETE_ON_CLOSE)
    assert status == wire.STATUS_ACCESS_DENIED
    _status, fields = create(client, "f", access=wire.GENERIC_READ | wire.DELETE, options=wire.FILE_DELETE_ON_CLOSE)
    assert (share / "f").exists()
    assert client.close(fields["fid"]) == 0
    assert not (share / "f").exists()


def test_delete_on_close_of_a_read_only_file_cannot_delete(client, share):
    (share / "f").write_bytes(b"x")
    (share / "f").chmod(0o444)
    assert create(client, "f", options=wire.FILE_DELETE_ON_CLOSE)[0] == wire.STATUS_CANNOT_DELETE
    assert create(client, "g", options=wire.FILE_DELETE_ON_CLOSE, attributes=wire.ATTR_READONLY)[0] == \
        wire.STATUS_CANNOT_DELETE
    assert sorted(os.listdir(share)) == ["f"]


def test_a_sharing_violation_truncates_nothing(client, share):
    (share / "f").write_bytes(b"data")
    fid = client.open("f", access=wire.GENERIC_READ, share=wire.FILE_READ_DATA)   # FILE_SHARE_READ
    assert create(client, "f", access=wire.GENERIC_WRITE, disposition=wire.FILE_OVERWRITE)[0] == \
        wire.STATUS_SHARING_VIOLATION
    assert (share / "f").read_bytes() == b"data"
    assert create(client, "f", access=wire.GENERIC_READ)[0] == 0
    assert client.close(fid) == 0
    assert create(client, "f", access=wire.GENERIC_WRITE)[0] == 0


# -- named streams ----------------------------------------------------------------------------

def test_a_stream_is_data_of_its_own_beside_the_file(client, share):
    (share / "f").write_bytes(b"main")
    status, fields = create(client, "f:s", disposition=wire.FILE_CREATE)
    assert status == 0 and fields["action"] == wire.FILE_CREATED and fields["size"] == 0
    assert client.write(fields["fid"], b"stream data") == 0
    assert (share / "f").read_bytes() == b"main"
    status, fields = create(client, "F:S:$DATA", disposition=wire.FILE_OPEN)   # names' case ignored
    assert status == 0 and fields["size"] == len(b"stream data")
    assert sorted(os.listdir(share)) == [".smbring-streams", "f"]


def test_a_stream_of_a_missing_file_creates_the_file(client, share):
    assert create(client, "new:s", disposition=wire.FILE_CREATE)[0] == 0
    assert (share / "new").read_bytes() == b""


@pytest.mark.parametrize("disposition", [wire.FILE_OPEN, wire.FILE_OVERWRITE])
def test_opening_a_missing_stream_is_not_found(client, share, disposition):
    (share / "f").write_bytes(b"x")
    assert create(client, "f:s", disposition=disposition)[0] == wire.STATUS_OBJECT_NAME_NOT_FOUND
    assert create(client, "g:s", disposition=disposition)[0] == wire.STATUS_OBJECT_NAME_NOT_FOUND
    assert os.listdir(share) == ["f"]


def test_a_stream_is_never_a_directory(client, share):
    (share / "f").write_bytes(b"x")
    # (refused as Windows and smbd refuse it: smbtorture's smb2.streams.dir)
    assert create(client, "f:s", options=wire.FILE_DIRECTORY_FILE)[0] == wire.STATUS_NOT_A_DIRECTORY


def test_the_unnamed_stream_is_the_file(client, share):
    (share / "f").write_bytes(b"main")
    status, fields = create(client, "f::$DATA", disposition=wire.FILE_OPEN)
    assert status == 0 and fields["size"] == 4


# -- the bound on open files --------------------------------------------------------------------

def test_max_open_files(share, clients):
    c = clients(limits=Limits(max_open_files=5))
    (share / "f").write_bytes(b"x")
    fids = [c.open("f") for _ in range(5)]
    assert create(c, "f")[0] == wire.STATUS_TOO_MANY_OPENED_FILES
    assert create(c, "g", disposition=wire.FILE_CREATE)[0] == wire.STATUS_TOO_MANY_OPENED_FILES
    assert not (share / "g").exists()
    assert c.close(fids[0]) == 0
    assert create(c, "f")[0] == 0


# -- CLOSE ----------------------------------------------------------------------------------------

def close(client, fid, flags):
    """(status, the body's Flags, AllocationSize, EndofFile, FileAttributes)."""
    status, body = client.request(wire.CLOSE, struct.pack("<HHI", 24, flags, 0) + fid)
    if status:
        return status, None
    return status, struct.unpack_from("<H", body, 2) + struct.unpack_from("<QQI", body, 40)


def test_close_with_postquery_attrib_returns_the_file_attributes(client, share):
    (share / "f").write_bytes(b"x" * 5000)
    status, (flags, alloc, size, attrs) = close(client, client.open("f"), wire.CLOSE_FLAG_POSTQUERY_ATTRIB)
    assert status == 0
    assert (flags, alloc, size, attrs) == (wire.CLOSE_FLAG_POSTQUERY_ATTRIB, 8192, 5000, wire.ATTR_ARCHIVE)


def test_close_with_postquery_attrib_of_a_directory(client, share):
    (share / "d").mkdir()
    fid = client.open("d", options=wire.FILE_DIRECTORY_FILE)
    assert close(client, fid, wire.CLOSE_FLAG_POSTQUERY_ATTRIB)[1] == (1, 0, 0, wire.ATTR_DIRECTORY)


def test_close_without_postquery_attrib_returns_zeros(client, share):
    (share / "f").write_bytes(b"x" * 5000)
    assert close(client, client.open("f"), 0) == (0, (0, 0, 0, 0))


def test_close_ends_the_open(client, share):
    (share / "f").write_bytes(b"x")
    fid = client.open("f")
    assert client.close(fid) == 0
    assert client.close(fid) == wire.STATUS_FILE_CLOSED
    assert client.read(fid, 0, 1) == wire.STATUS_FILE_CLOSED
    assert client.conn.opens == {}


def test_a_parent_component_is_resolved_by_name_within_the_share(client, share):
    """`a\\..` names what `a`'s directory is, as Samba reads it (smbtorture's notify tree
    test opens `dir\\sub\\..`): by the name alone, never through a link, never above the share."""
    (share / "d").mkdir()
    os.symlink("/etc", share / "out")
    status, _ = create(client, "d\\..\\made.txt", disposition=wire.FILE_CREATE)
    assert status == 0 and (share / "made.txt").exists()
    status, _ = create(client, "out\\..\\d\\..\\..\\passwd", disposition=wire.FILE_OPEN)
    assert status == wire.STATUS_OBJECT_PATH_SYNTAX_BAD
    status, _ = create(client, "out\\..\\passwd", disposition=wire.FILE_OPEN)   # the share's (none)
    assert status == wire.STATUS_OBJECT_NAME_NOT_FOUND
    assert sorted(os.listdir(share)) == ["d", "made.txt", "out"]
