"""QUERY_INFO and SET_INFO through the sans-I/O connection (MS-SMB2 3.3.5.20, 3.3.5.21) on real
files: the file, file-system and security classes, the access each SET_INFO class needs
(3.3.5.21.1), sizes out of range, rename and delete disposition."""
import os
import struct

import pytest
from sansio_client import ALL_ACCESS, FILE_DIRECTORY_FILE
from smbcore import set_info_body

from smbring.smb import acl, wire
from smbring.smb.fileinfo import MAX_FILE_SIZE

BASIC, STANDARD, INTERNAL, EA, ACCESS, RENAME, DISPOSITION = 4, 5, 6, 7, 8, 10, 13
POSITION, FULL_EA, MODE, ALL, ALLOCATION, END_OF_FILE = 14, 15, 16, 18, 19, 20
ALTERNATE_NAME, STREAM, NETWORK_OPEN, ATTRIBUTE_TAG = 21, 22, 34, 35
FS_VOLUME, FS_SIZE, FS_DEVICE, FS_ATTRIBUTE, FS_CONTROL, FS_FULL_SIZE, FS_OBJECT_ID, FS_SECTOR = 1, 3, 4, 5, 6, 7, 8, 11
FILE_READ_ATTRIBUTES = 0x80


@pytest.fixture
def share(share):
    """The share with the files these tests use."""
    (share / "f").write_bytes(b"x" * 5000)
    (share / "d").mkdir()
    return share


@pytest.fixture
def fid(client):
    return client.open("f")


def query(client, fid, klass, **kw):
    status, data = client.query_info(fid, klass, **kw)
    assert status == 0, hex(status)
    return data


# -- QUERY_INFO: file classes -----------------------------------------------------------------

def test_basic(client, fid, share):
    data = query(client, fid, BASIC)
    assert len(data) == 40
    _birth, _atime, mtime, _change, attrs = struct.unpack_from("<QQQQI", data)
    assert attrs == wire.ATTR_ARCHIVE
    assert mtime == wire.nt_time((share / "f").stat().st_mtime_ns)


def test_standard(client, fid):
    assert struct.unpack("<QQIBBH", query(client, fid, STANDARD)) == (8192, 5000, 1, 0, 0, 0)


def test_standard_of_a_directory(client):
    d = client.open("d", options=FILE_DIRECTORY_FILE)
    # one name (NumberOfLinks 1), however many subdirectories Unix counts
    assert struct.unpack("<QQIBBH", query(client, d, STANDARD))[1:5] == (0, 1, 0, 1)


def test_internal_is_the_inode(client, fid, share):
    assert struct.unpack("<Q", query(client, fid, INTERNAL))[0] == (share / "f").stat().st_ino


def test_all(client, share):
    fid = client.open("d\\g", disposition=wire.FILE_CREATE)
    data = query(client, fid, ALL)
    basic, standard = data[:40], data[40:64]
    inode, _ea, access, position, mode, _align, name_length = struct.unpack_from("<QIIQIII", data, 64)
    assert struct.unpack_from("<I", basic, 32)[0] == wire.ATTR_ARCHIVE
    assert struct.unpack("<QQIBBH", standard)[1] == 0
    assert (inode, access, position, mode) == ((share / "d" / "g").stat().st_ino, ALL_ACCESS, 0, 0)
    assert data[100:100 + name_length].decode("utf-16-le") == "\\d\\g" and len(data) == 100 + name_length


def test_all_cut_short_is_a_buffer_overflow(client):
    fid = client.open("a longer name")
    status, data = client.query_info(fid, ALL, out_len=104)
    assert status == wire.STATUS_BUFFER_OVERFLOW and len(data) == 104


def test_a_fixed_size_class_that_does_not_fit_is_a_length_mismatch(client, fid):
    assert client.query_info(fid, BASIC, out_len=39)[0] == wire.STATUS_INFO_LENGTH_MISMATCH
    assert client.query_info(fid, ALL, out_len=103)[0] == wire.STATUS_INFO_LENGTH_MISMATCH


def test_network_open(client, fid):
    data = query(client, fid, NETWORK_OPEN)
    assert len(data) == 56 and struct.unpack_from("<QQII", data, 32) == (8192, 5000, wire.ATTR_ARCHIVE, 0)


@pytest.mark.parametrize("name, options", [("f", 0), ("d", FILE_DIRECTORY_FILE), (".hidden", 0),
                                           ("old", 0), ("f:s", 0)])
def test_network_open_is_what_basic_and_standard_say(client, share, name, options):
    """FileNetworkOpenInformation (encoded in C for a file or directory, in Python for a
    stream) tells the times and attributes FileBasicInformation tells, and the sizes
    FileStandardInformation tells, whatever the file: a directory, a hidden name, times before
    1970 and a write time set through the handle, a named stream."""
    (share / ".hidden").write_bytes(b"h" * 10)
    (share / "old").write_bytes(b"o" * 70_000)
    os.utime(share / "old", ns=(-5_000_000_123, -86_400_000_000_001))
    fid = client.open(name, options=options)
    if name == "f:s":
        assert client.write(fid, b"stream data") == 0
    if name == "f":     # a write time set on the handle: shown in place of the kernel's
        times = struct.pack("<QQQQII", 0, 0, 130_000_000_000_000_000, 0, 0, 0)
        assert client.set_info(fid, BASIC, times) == 0
    net = query(client, fid, NETWORK_OPEN)
    basic, standard = query(client, fid, BASIC), query(client, fid, STANDARD)
    assert len(net) == 56
    assert net[:32] == basic[:32]                               # the four times
    assert net[48:52] == basic[32:36] and net[52:] == bytes(4)  # FileAttributes, Reserved
    assert net[32:48] == standard[:16]                          # AllocationSize, EndOfFile
    if name == "f":
        assert struct.unpack_from("<Q", net, 16)[0] == 130_000_000_000_000_000


@pytest.mark.parametrize("name, options", [("f", 0), ("d", FILE_DIRECTORY_FILE), (".hidden", 0),
                                           ("old", 0), ("f:s", 0), ("going", 0)])
def test_all_is_what_basic_standard_and_the_others_say(client, share, name, options):
    """FileAllInformation (its times, attributes and sizes encoded in C for a file or
    directory, in Python for a stream) is FileBasicInformation, FileStandardInformation,
    FileInternalInformation, FileEaInformation's size 0, FileAccessInformation,
    FilePositionInformation, FileModeInformation, an alignment of 0 and the name: for a
    directory, a hidden name, times before 1970, a write time set through the handle, a
    stream, a file about to be deleted (no link counted, DeletePending)."""
    (share / ".hidden").write_bytes(b"h" * 10)
    (share / "old").write_bytes(b"o" * 70_000)
    (share / "going").write_bytes(b"g")
    os.utime(share / "old", ns=(-5_000_000_123, -86_400_000_000_001))
    fid = client.open(name, options=options)
    if name == "f:s":
        assert client.write(fid, b"stream data") == 0
    if name == "f":
        times = struct.pack("<QQQQII", 0, 0, 130_000_000_000_000_000, 0, 0, 0)
        assert client.set_info(fid, BASIC, times) == 0
        assert client.set_info(fid, POSITION, struct.pack("<Q", 77)) == 0
    if name == "going":
        assert client.set_info(fid, DISPOSITION, b"\1") == 0
    data = query(client, fid, ALL)
    basic, standard = query(client, fid, BASIC), query(client, fid, STANDARD)
    assert data[:40] == basic and data[40:64] == standard
    assert data[64:72] == query(client, fid, INTERNAL)
    assert data[72:76] == bytes(4)                          # EaSize
    assert data[76:80] == query(client, fid, ACCESS)
    assert data[80:88] == query(client, fid, POSITION)
    assert data[88:92] == query(client, fid, MODE) and data[92:96] == bytes(4)
    (name_length,) = struct.unpack_from("<I", data, 96)
    assert data[100:].decode("utf-16-le") == "\\" + name and name_length == len(data) - 100
    if name == "going":
        assert struct.unpack_from("<IBB", standard, 16) == (0, 1, 0)
    if name == "f":
        assert struct.unpack_from("<Q", data, 16)[0] == 130_000_000_000_000_000
        assert struct.unpack_from("<Q", data, 80)[0] == 77


def test_attribute_tag(client):
    d = client.open("d", options=FILE_DIRECTORY_FILE)
    assert struct.unpack("<II", query(client, d, ATTRIBUTE_TAG)) == (wire.ATTR_DIRECTORY, 0)


def test_access_is_what_the_open_was_granted(client):
    fid = client.open("f", access=wire.GENERIC_READ)
    assert struct.unpack("<I", query(client, fid, ACCESS))[0] == 0x00120089     # FILE_GENERIC_READ


def test_position_and_mode(client, fid):
    assert client.set_info(fid, POSITION, struct.pack("<Q", 1234)) == 0
    assert struct.unpack("<Q", query(client, fid, POSITION))[0] == 1234
    assert client.set_info(fid, MODE, struct.pack("<I", 0x2)) == 0                # FILE_WRITE_THROUGH
    assert struct.unpack("<I", query(client, fid, MODE))[0] == 0x2
    assert client.set_info(fid, MODE, struct.pack("<I", 0x8)) == wire.STATUS_INVALID_PARAMETER


def test_alternate_name(client):
    fid = client.open("a long file name.txt")
    length = struct.unpack_from("<I", query(client, fid, ALTERNATE_NAME))[0]
    assert length and length <= 24


def stream_names(data):
    out, pos = [], 0
    while True:
        next_offset, name_length, size, _alloc = struct.unpack_from("<IIQQ", data, pos)
        out.append((data[pos + 24:pos + 24 + name_length].decode("utf-16-le"), size))
        if not next_offset:
            return out
        pos += next_offset


def test_stream_lists_the_data_and_each_named_stream(client, fid):
    assert stream_names(query(client, fid, STREAM)) == [("::$DATA", 5000)]
    s = client.open("f:extra", disposition=wire.FILE_CREATE)
    assert client.write(s, b"12345") == 0
    assert stream_names(query(client, fid, STREAM)) == [("::$DATA", 5000), (":extra:$DATA", 5)]


def test_stream_of_a_directory_has_no_data_stream(client):
    d = client.open("d", options=FILE_DIRECTORY_FILE)
    assert query(client, d, STREAM) == b""


def test_ea_classes(client, fid):
    assert struct.unpack("<I", query(client, fid, EA))[0] == 0
    assert client.query_info(fid, FULL_EA)[0] == wire.STATUS_NO_EAS_ON_FILE
    ea = struct.pack("<IBBH", 0, 0, 4, 5) + b"NAME\0value"
    assert client.set_info(fid, FULL_EA, ea) == 0
    assert struct.unpack("<I", query(client, fid, EA))[0] > 0
    assert b"value" in query(client, fid, FULL_EA)


@pytest.mark.parametrize("klass", [0, 1, 2, 99, 255])
def test_an_unknown_file_class(client, fid, klass):
    assert client.query_info(fid, klass)[0] == wire.STATUS_INVALID_INFO_CLASS


@pytest.mark.parametrize("klass", [BASIC, ALL, NETWORK_OPEN, ATTRIBUTE_TAG])
def test_attribute_classes_need_read_attributes(client, klass):
    fid = client.open("f", access=wire.FILE_READ_DATA)
    assert client.query_info(fid, klass)[0] == wire.STATUS_ACCESS_DENIED
    fid = client.open("f", access=FILE_READ_ATTRIBUTES)
    assert client.query_info(fid, klass)[0] == 0


def test_full_ea_needs_read_ea(client):
    fid = client.open("f", access=FILE_READ_ATTRIBUTES)
    assert client.query_info(fid, FULL_EA)[0] == wire.STATUS_ACCESS_DENIED


def test_normalized_name_on_311_only(client):
    fid = client.open("d\\g")
    assert client.query_info(fid, 48)[0] == wire.STATUS_NOT_SUPPORTED
    client.conn.dialect = wire.SMB311          # (an unsigned tree connect is refused on 3.1.1)
    assert query(client, fid, 48)[4:].decode("utf-16-le") == "d\\g"


# -- QUERY_INFO: file-system classes ---------------------------------------------------------------

def fs_query(client, fid, klass):
    return query(client, fid, klass, info_type=wire.INFO_FILESYSTEM)


def test_fs_volume(client, fid):
    data = fs_query(client, fid, FS_VOLUME)
    label_length = struct.unpack_from("<I", data, 12)[0]
    assert data[18:18 + label_length].decode("utf-16-le") == "s"      # the share's name (as Samba)


def test_fs_sizes_are_the_file_systems(client, fid, share):
    st = os.statvfs(share)
    total, free, sectors_per_unit, bytes_per_sector = struct.unpack("<QQII", fs_query(client, fid, FS_SIZE))
    assert total == st.f_blocks and sectors_per_unit * bytes_per_sector == st.f_frsize
    total, _caller_free, _free, _spu, _bps = struct.unpack("<QQQII", fs_query(client, fid, FS_FULL_SIZE))
    assert total == st.f_blocks


def test_fs_device_attribute_control_object_id_sector(client, fid):
    assert struct.unpack("<II", fs_query(client, fid, FS_DEVICE)) == (7, 0)      # FILE_DEVICE_DISK
    data = fs_query(client, fid, FS_ATTRIBUTE)
    _attrs, max_name, name_length = struct.unpack_from("<III", data)
    assert max_name == 255 and data[12:12 + name_length].decode("utf-16-le") == "NTFS"
    assert len(fs_query(client, fid, FS_CONTROL)) == 48
    assert len(fs_query(client, fid, FS_OBJECT_ID)) == 64
    sector = fs_query(client, fid, FS_SECTOR)
    assert len(sector) == 28
    # Flags: aligned device and partition, TRIM_ENABLED (FSCTL_FILE_LEVEL_TRIM releases storage)
    assert struct.unpack_from("<I", sector, 16)[0] == 0x1 | 0x2 | 0x8


@pytest.mark.parametrize("klass", [0, 2, 9, 10, 12, 99])
def test_an_unknown_fs_class(client, fid, klass):
    assert client.query_info(fid, klass, info_type=wire.INFO_FILESYSTEM)[0] == wire.STATUS_INVALID_INFO_CLASS


def test_quota_information_is_not_supported(client, fid):
    assert client.query_info(fid, 0, info_type=wire.INFO_QUOTA)[0] == wire.STATUS_NOT_SUPPORTED


# -- QUERY_INFO and SET_INFO: security --------------------------------------------------------

def descriptor(client, fid, parts=acl.OWNER | acl.GROUP | acl.DACL):
    return acl.parse(query(client, fid, 0, info_type=wire.INFO_SECURITY, additional=parts))


def test_security_descriptor_from_the_mode_bits(client, fid):
    d = descriptor(client, fid)
    assert d.owner == acl.OWNER_SID and d.group == acl.GROUP_SID and d.dacl


def test_security_descriptor_only_the_parts_asked_for(client, fid):
    d = descriptor(client, fid, acl.OWNER)
    assert d.owner == acl.OWNER_SID and d.group is None and not d.control & acl.SE_DACL_PRESENT


def test_security_descriptor_too_large_for_the_buffer_says_the_size_needed(client, fid):
    size = len(query(client, fid, 0, info_type=wire.INFO_SECURITY, additional=acl.OWNER | acl.GROUP | acl.DACL))
    status, body = client.request(wire.QUERY_INFO, struct.pack("<HBBIHHIII", 41, wire.INFO_SECURITY, 0, 8, 0, 0, 0,
                                                               acl.OWNER | acl.GROUP | acl.DACL, 0) + fid)
    assert status == wire.STATUS_BUFFER_TOO_SMALL
    assert struct.unpack_from("<I", body, 8)[0] == size


def test_reading_the_security_descriptor_needs_read_control(client):
    fid = client.open("f", access=FILE_READ_ATTRIBUTES)
    assert client.query_info(fid, 0, info_type=wire.INFO_SECURITY, additional=acl.DACL)[0] == \
        wire.STATUS_ACCESS_DENIED
    fid = client.open("f", access=acl.READ_CONTROL)
    assert client.query_info(fid, 0, info_type=wire.INFO_SECURITY, additional=acl.DACL)[0] == 0


def test_generic_read_may_read_the_security_descriptor(client):
    fid = client.open("f", access=wire.GENERIC_READ)
    assert client.query_info(fid, 0, info_type=wire.INFO_SECURITY, additional=acl.DACL)[0] == 0


def everyone_reads():
    return acl.Descriptor(control=acl.SE_SELF_RELATIVE | acl.SE_DACL_PRESENT,
                          dacl=[acl.Ace(acl.ALLOWED, 0, acl.FILE_ALL_ACCESS, acl.OWNER_SID),
                                acl.Ace(acl.ALLOWED, 0, 0x00120089, acl.EVERYONE)])


def test_setting_a_dacl_needs_write_dac_and_is_kept(client, fid):
    blob = everyone_reads().pack()
    reader = client.open("f", access=wire.GENERIC_READ | acl.READ_CONTROL)
    assert client.set_info(reader, 0, blob, info_type=wire.INFO_SECURITY, additional=acl.DACL) == \
        wire.STATUS_ACCESS_DENIED
    assert client.set_info(fid, 0, blob, info_type=wire.INFO_SECURITY, additional=acl.DACL) == 0
    assert [a.sid for a in descriptor(client, fid).dacl] == [acl.OWNER_SID, acl.EVERYONE]


def test_setting_the_owner_needs_write_owner(client):
    fid = client.open("f", access=acl.WRITE_DAC | acl.READ_CONTROL)
    blob = acl.Descriptor(owner=acl.OWNER_SID).pack()
    assert client.set_info(fid, 0, blob, info_type=wire.INFO_SECURITY, additional=acl.OWNER) == \
        wire.STATUS_ACCESS_DENIED


def test_setting_no_part_is_refused(client, fid):
    assert client.set_info(fid, 0, everyone_reads().pack(), info_type=wire.INFO_SECURITY, additional=0) == \
        wire.STATUS_ACCESS_DENIED


def test_a_malformed_descriptor_is_an_invalid_parameter(client, fid):
    assert client.set_info(fid, 0, b"\x01\0" + b"\xff" * 18, info_type=wire.INFO_SECURITY, additional=acl.DACL) == \
        wire.STATUS_INVALID_PARAMETER


def sacl() -> bytes:
    ace = struct.pack("<BBHI", 2, 0x40, 20, 0x1) + acl.EVERYONE      # SYSTEM_AUDIT_ACE, FAILED_ACCESS
    return struct.pack("<BBHHH", 2, 0, 8 + len(ace), 1, 0) + ace


def test_setting_a_sacl_needs_access_system_security(client, fid):
    d = everyone_reads()
    d.sacl_raw = sacl()
    assert client.set_info(fid, 0, d.pack(), info_type=wire.INFO_SECURITY, additional=acl.DACL | acl.SACL) == \
        wire.STATUS_ACCESS_DENIED


def test_reading_a_sacl_needs_access_system_security(client, fid):
    status, _ = client.query_info(fid, 0, info_type=wire.INFO_SECURITY, additional=acl.SACL)
    assert status == wire.STATUS_ACCESS_DENIED


# -- SET_INFO: the access each class needs (MS-SMB2 3.3.5.21.1) -----------------------------------

SETTABLE = {   # class -> (a valid buffer, the access it needs)
    BASIC: (struct.pack("<QQQQII", 0, 0, 0, 0, 0, 0), wire.FILE_WRITE_ATTRIBUTES),
    DISPOSITION: (b"\x01", wire.DELETE),
    FULL_EA: (struct.pack("<IBBH", 0, 0, 4, 5) + b"NAME\0value", wire.FILE_WRITE_EA),
    ALLOCATION: (struct.pack("<Q", 8192), wire.FILE_WRITE_DATA),
    END_OF_FILE: (struct.pack("<Q", 10), wire.FILE_WRITE_DATA),
    POSITION: (struct.pack("<Q", 10), 0),
    MODE: (struct.pack("<I", 0), 0),
}


def all_access_but(right):
    return wire.FILE_ALL_ACCESS & ~right


def rename_buffer(name, replace=False):
    n = wire.utf16(name)
    return struct.pack("<B7xQI", replace, 0, len(n)) + n


@pytest.mark.parametrize("klass", sorted(SETTABLE) + [RENAME])
def test_each_class_needs_its_access(client, klass):
    buf, needs = SETTABLE[klass] if klass != RENAME else (rename_buffer("renamed"), wire.DELETE)
    if needs:
        without = client.open("f", access=all_access_but(needs))
        assert client.set_info(without, klass, buf) == wire.STATUS_ACCESS_DENIED
    with_it = client.open("f", access=needs | FILE_READ_ATTRIBUTES)
    assert client.set_info(with_it, klass, buf) == 0


def test_clearing_a_delete_disposition_needs_no_access(client):
    fid = client.open("f", access=FILE_READ_ATTRIBUTES)
    assert client.set_info(fid, DISPOSITION, b"\x00") == 0


@pytest.mark.parametrize("klass", sorted(SETTABLE) + [RENAME])
def test_a_read_only_share_sets_nothing(share, klass, clients):
    c = clients(share={"read_only": True})
    fid = c.open("f", access=wire.MAXIMUM_ALLOWED)
    buf = SETTABLE[klass][0] if klass != RENAME else rename_buffer("renamed")
    assert c.set_info(fid, klass, buf) == wire.STATUS_ACCESS_DENIED
    assert sorted(os.listdir(share)) == ["d", "f"]
    assert (share / "f").stat().st_size == 5000


@pytest.mark.parametrize("klass", [0, 1, 9, 99])
def test_an_unknown_settable_class(client, fid, klass):
    assert client.set_info(fid, klass, b"\0" * 8) == wire.STATUS_INVALID_INFO_CLASS


def test_setting_file_system_information_is_not_supported(client, fid):
    assert client.set_info(fid, FS_CONTROL, b"\0" * 48, info_type=wire.INFO_FILESYSTEM) == wire.STATUS_NOT_SUPPORTED


def test_a_buffer_outside_the_message(client, fid):
    body = bytearray(set_info_body(fid, wire.INFO_FILE, END_OF_FILE, struct.pack("<Q", 1)))
    struct.pack_into("<I", body, 4, 100)                   # BufferLength past the message
    assert client.request(wire.SET_INFO, bytes(body))[0] == wire.STATUS_INVALID_PARAMETER
    assert (client.conn.opens[fid].tree.fs.fstat(client.conn.opens[fid].fd)).st_size == 5000


# -- SET_INFO: what each class does --------------------------------------------------------------

def test_basic_sets_times_and_the_read_only_attribute(client, fid, share):
    mtime = wire.nt_time(1_000_000_000 * 10**9)
    assert client.set_info(fid, BASIC, struct.pack("<QQQQII", 0, 0, mtime, 0, wire.ATTR_READONLY, 0)) == 0
    st = (share / "f").stat()
    assert st.st_mtime_ns == 1_000_000_000 * 10**9 and not st.st_mode & 0o222
    assert client.set_info(fid, BASIC, struct.pack("<QQQQII", 0, 0, 0, 0, wire.ATTR_NORMAL, 0)) == 0
    assert (share / "f").stat().st_mode & 0o200


@pytest.mark.parametrize("target, attrs", [("f", wire.ATTR_DIRECTORY), ("d", wire.ATTR_TEMPORARY)])
def test_basic_refuses_attributes_of_the_other_kind(client, target, attrs):
    fid = client.open(target)
    assert client.set_info(fid, BASIC, struct.pack("<QQQQII", 0, 0, 0, 0, attrs, 0)) == wire.STATUS_INVALID_PARAMETER


@pytest.mark.parametrize("size", [0, 1, 100000])
def test_end_of_file_sets_the_size(client, fid, share, size):
    assert client.set_info(fid, END_OF_FILE, struct.pack("<Q", size)) == 0
    assert (share / "f").stat().st_size == size


@pytest.mark.parametrize("klass", [END_OF_FILE, ALLOCATION])
@pytest.mark.parametrize("size, status", [
    (-1, wire.STATUS_INVALID_PARAMETER),
    (-(2 ** 63), wire.STATUS_INVALID_PARAMETER),
    (MAX_FILE_SIZE + 1, wire.STATUS_DISK_FULL),
    (2 ** 63 - 1, wire.STATUS_DISK_FULL),
])
def test_sizes_out_of_range(client, fid, share, klass, size, status):
    assert client.set_info(fid, klass, struct.pack("<q", size)) == status
    assert (share / "f").stat().st_size == 5000


def test_allocation_below_the_size_truncates(client, fid, share):
    assert client.set_info(fid, ALLOCATION, struct.pack("<Q", 100)) == 0
    assert (share / "f").stat().st_size == 100


def test_rename(client, fid, share):
    assert client.rename(fid, "d\\moved") == 0
    assert not (share / "f").exists() and (share / "d" / "moved").read_bytes() == b"x" * 5000
    assert client.close(fid) == 0
    assert client.create("d\\moved", disposition=wire.FILE_OPEN)[0] == 0


def test_the_name_an_open_reports_after_a_rename(client, fid):
    assert client.rename(fid, "d\\moved") == 0
    assert query(client, fid, ALL)[100:].decode("utf-16-le") == "\\d\\moved"


def test_rename_onto_an_existing_file(client, fid, share):
    (share / "g").write_bytes(b"g")
    assert client.rename(fid, "g") == wire.STATUS_OBJECT_NAME_COLLISION
    assert (share / "g").read_bytes() == b"g"
    assert client.rename(fid, "g", replace=True) == 0
    assert (share / "g").read_bytes() == b"x" * 5000 and not (share / "f").exists()


def test_rename_needs_every_other_open_to_share_delete(client, fid):
    other = client.open("f", access=FILE_READ_ATTRIBUTES, share=0x1 | 0x2)    # read and write, not delete
    assert client.rename(fid, "g") == wire.STATUS_SHARING_VIOLATION
    assert client.close(other) == 0
    assert client.rename(fid, "g") == 0


def test_a_directory_with_an_open_file_inside_is_not_renamed(client, share):
    d = client.open("d", options=FILE_DIRECTORY_FILE)
    inside = client.open("d\\inner")
    assert client.rename(d, "e") == wire.STATUS_ACCESS_DENIED
    assert client.close(inside) == 0
    assert client.rename(d, "e") == 0 and (share / "e").is_dir()


@pytest.mark.parametrize("name", ["..\\escaped", "d\\..\\..\\escaped", "a*b"])
def test_rename_to_a_name_outside_or_invalid(client, fid, share, name):
    assert client.rename(fid, name) != 0
    assert (share / "f").exists() and sorted(os.listdir(share.parent)) == ["share"]


def test_a_rename_name_length_past_the_buffer_is_an_invalid_parameter(client, fid, share):
    n = wire.utf16("moved")
    assert client.set_info(fid, RENAME, struct.pack("<B7xQI", 0, 0, 100) + n) == wire.STATUS_INVALID_PARAMETER
    assert sorted(os.listdir(share)) == ["d", "f"]


def test_a_stream_is_renamed_only_among_its_file_s_streams(client):
    # a full name is refused as smbd refuses it (its file is open: by this very handle); a
    # stream name (":t") renames it (smbtorture's smb2.streams.rename); the file's data
    # stream exists always: taken only with ReplaceIfExists (tests/server/test_streams_semantics)
    s = client.open("f:s", disposition=wire.FILE_CREATE)
    assert client.rename(s, "f:t") == wire.STATUS_SHARING_VIOLATION
    assert client.rename(s, "::$DATA") == wire.STATUS_OBJECT_NAME_COLLISION
    assert client.rename(s, ":t") == 0
    assert client.create("f:s", disposition=wire.FILE_OPEN)[0] == wire.STATUS_OBJECT_NAME_NOT_FOUND


def test_disposition_deletes_at_the_last_close(client, fid, share):
    assert client.delete_on_close(fid) == 0
    assert struct.unpack("<QQIBBH", query(client, fid, STANDARD))[2:4] == (0, 1)   # no link, delete pending
    assert client.create("f")[0] == wire.STATUS_DELETE_PENDING
    assert client.close(fid) == 0
    assert not (share / "f").exists()


def test_disposition_withdrawn(client, fid, share):
    assert client.delete_on_close(fid) == 0
    assert client.delete_on_close(fid, False) == 0
    assert client.close(fid) == 0
    assert (share / "f").exists()


def test_disposition_of_a_read_only_file_or_a_non_empty_directory(client, share):
    (share / "d" / "inner").write_bytes(b"")
    d = client.open("d", options=FILE_DIRECTORY_FILE)
    assert client.delete_on_close(d) == wire.STATUS_DIRECTORY_NOT_EMPTY
    (share / "f").chmod(0o444)
    fid = client.open("f", access=wire.GENERIC_READ | wire.DELETE)
    assert client.delete_on_close(fid) == wire.STATUS_CANNOT_DELETE
    client.conn.close_all()
    assert (share / "f").exists() and (share / "d").exists()
