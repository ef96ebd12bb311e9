"""What a share says about its volume (FileFsVolumeInformation, FileFsAttributeInformation),
as Samba says it: the share's name as the label unless `volume` names one, `fstype` (NTFS by
default) as the file system's name, and the capabilities Windows looks at, among them
FILE_PERSISTENT_ACLS, without which Explorer shows no Security tab. smbclient and a raw
client against `smbring serve --config`."""
import struct

from servers import PASSWORD, USER
from smbconf_server import smbconf  # noqa: F401  (the fixture)
from smbring.smb import wire

PERSISTENT_ACLS, UNICODE_ON_DISK, NAMED_STREAMS, SPARSE_FILES = 0x8, 0x4, 0x40000, 0x40
SHARES = {"share": "read only = no", "labelled": "read only = no\nvolume = Projects\nfstype = Samba"}


def fs_info(server, share: str, klass: int) -> bytes:
    c = server.raw()
    c.negotiate()
    with c:
        tree = c.tree(c.logon(USER, PASSWORD), share)
        fid = tree.open("", wire.GENERIC_READ, options=wire.FILE_DIRECTORY_FILE)
        r = tree.query_info(fid, wire.INFO_FILESYSTEM, klass)
        tree.close(fid)
    assert r.status == wire.STATUS_SUCCESS, r
    return r.buffer(2)


def label(info: bytes) -> str:
    size = struct.unpack_from("<I", info, 12)[0]
    return info[18:18 + size].decode("utf-16-le")


def attributes(info: bytes) -> tuple[int, str]:
    flags, _longest, size = struct.unpack_from("<III", info)
    return flags, info[12:12 + size].decode("utf-16-le")


def test_the_label_is_the_shares_name_unless_volume_names_one(smbconf):
    server = smbconf("", SHARES)
    assert label(fs_info(server, "share", 1)) == "share"
    assert label(fs_info(server, "labelled", 1)) == "Projects"
    out = server.smbclient("labelled", "volume")
    assert out.returncode == 0 and "Volume: |Projects|" in out.stdout, out.stdout + out.stderr


def test_the_file_system_says_it_keeps_acls_streams_and_its_fstype(smbconf):
    server = smbconf("", SHARES)
    flags, name = attributes(fs_info(server, "share", 5))
    assert name == "NTFS"
    assert flags & PERSISTENT_ACLS and flags & UNICODE_ON_DISK and flags & NAMED_STREAMS and flags & SPARSE_FILES
    assert attributes(fs_info(server, "labelled", 5))[1] == "Samba"


def test_nt_acl_support_no_stores_no_client_descriptor(smbconf, tmp_path):
    """`nt acl support = no` (as smbd): a SET_INFO of a DACL, and a CREATE's SecD context,
    succeed and store nothing; the volume no longer says it keeps ACLs. The same requests on
    a share with the default store them."""
    import os

    from smbring.smb import acl
    shares = {"plain": "read only = no", "noacl": "read only = no\nnt acl support = no"}
    server = smbconf("", shares)
    stored = "user.smbring.sd"
    for share, kept in (("plain", True), ("noacl", False)):
        c = server.raw()
        c.negotiate()
        with c:
            tree = c.tree(c.logon(USER, PASSWORD), share)
            fid = tree.open("f", wire.GENERIC_ALL, wire.FILE_OPEN_IF)
            st = os.stat(tmp_path / share / "f")
            blob = acl.from_mode(os.stat_result((0o100600,) + tuple(st)[1:])).pack()
            assert tree.set_info(fid, wire.INFO_SECURITY, 0, blob, acl.DACL).status == wire.STATUS_SUCCESS
            tree.close(fid)
            r = tree.create("g", wire.GENERIC_ALL, wire.FILE_CREATE, contexts=[(b"SecD", blob)])
            assert r.status == wire.STATUS_SUCCESS, r
            tree.close(r.file_id)
            root = tree.open("", wire.GENERIC_READ, options=wire.FILE_DIRECTORY_FILE)
            flags = struct.unpack_from("<I", tree.query_info(root, wire.INFO_FILESYSTEM, 5).buffer(2))[0]
        for name in ("f", "g"):
            assert (stored in os.listxattr(tmp_path / share / name)) is kept, (share, name)
        assert bool(flags & PERSISTENT_ACLS) is kept


def test_max_disk_size_caps_the_size_and_free_space_shown(smbconf):
    """`max disk size = 100` (MiB, as Samba's disk_norm): the share is said to be at most
    100 MiB, with less than that free, whatever the file system holds."""
    server = smbconf("max disk size = 100", SHARES)
    total, free, sectors, sector = struct.unpack("<QQII", fs_info(server, "share", 3))
    unit = sectors * sector
    assert 0 < total * unit <= 100 << 20 and free < total
    total7, caller_free, free7, _s, _b = struct.unpack("<QQQII", fs_info(server, "share", 7))
    assert total7 == total and caller_free < total and free7 < total
    out = server.smbclient("share", "du")
    assert out.returncode == 0 and "blocks of size" in out.stdout, out.stdout + out.stderr
