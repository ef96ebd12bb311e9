"""Apple's AAPL create context and macOS copyfile (smb.aapl) on shares with `vfs objects =
fruit`, against `smbring serve --config`: the raw client reads the replies and the files are
checked on disk; Samba's smbtorture vfs.fruit runs against the same server."""
import shutil
import struct
import subprocess

import pytest

from servers import PASSWORD, USER
from smbcore import create_contexts_of
from smbconf_server import smbconf  # noqa: F401  (the fixture)
from smbring.smb import aapl, wire

FSCTL_SRV_REQUEST_RESUME_KEY = 0x00140078
FSCTL_SRV_COPYCHUNK = 0x001440F2
ALL = aapl.SERVER_CAPS | aapl.VOLUME_CAPS | aapl.MODEL_INFO
ASKED = aapl.SUPPORTS_READ_DIR_ATTR | aapl.UNIX_BASED | aapl.SUPPORTS_NFS_ACE     # (as macOS asks)
# (the fruit share shows "._" files, as in Samba's own test environment: vfs.fruit writes some)
SHARES = {"mac": "read only = no\nvfs objects = catia fruit streams_xattr\nfruit:veto_appledouble = no",
          "cased": "read only = no\nvfs objects = fruit\ncase sensitive = yes",
          "plain": "read only = no"}


def with_plain_view(tmp_path) -> dict[str, str]:
    """SHARES, and "macplain": the fruit share's directory shared without fruit."""
    return dict(SHARES, macplain=f"path = {tmp_path / 'mac'}\nread only = no")


def query(bitmap: int = ALL, caps: int = ASKED, command: int = aapl.SERVER_QUERY) -> bytes:
    return struct.pack("<IIQQ", command, 0, bitmap, caps)


def connected(server, share: str):
    c = server.raw()
    c.negotiate()
    return c, c.tree(c.logon(USER, PASSWORD), share)


def ask(tree, data: bytes, name: str = "probe"):
    r = tree.create(name, wire.GENERIC_READ | wire.GENERIC_WRITE, wire.FILE_OPEN_IF, contexts=[(b"AAPL", data)])
    if r.status == wire.STATUS_SUCCESS:
        tree.close(r.file_id)
    return r


def test_the_server_query_is_answered_as_samba_answers_it(smbconf):
    """Command, the request's bitmap, UNIX_BASED | OSX_COPYFILE (fruit:copyfile on) |
    READ_DIR_ATTR (asked for, as macOS asks) | NFS_ACE (fruit:nfs_aces, on by default), the
    volume's CASE_SENSITIVE where the share is,
    the model: 56 bytes for MacSamba, as smbtorture's vfs.fruit AAPL test expects of Samba;
    no READ_DIR_ATTR for a client that does not ask for it; no reply where fruit is not
    listed."""
    server = smbconf("fruit:copyfile = yes", SHARES)
    for share, volume in (("mac", 0), ("cased", aapl.CASE_SENSITIVE)):
        c, tree = connected(server, share)
        with c:
            r = ask(tree, query())
            assert r.status == wire.STATUS_SUCCESS, r
            reply = create_contexts_of(r)[b"AAPL"]
            assert len(reply) == 40 + len("MacSamba") * 2
            command, _reserved, bitmap, server_caps, volume_caps, _pad, length = struct.unpack_from("<IIQQQII", reply)
            assert (command, bitmap) == (aapl.SERVER_QUERY, ALL)
            assert server_caps == aapl.UNIX_BASED | aapl.SUPPORTS_OSX_COPYFILE | aapl.SUPPORTS_READ_DIR_ATTR | \
                aapl.SUPPORTS_NFS_ACE
            assert volume_caps == volume
            assert reply[40:40 + length].decode("utf-16-le") == "MacSamba"
            # only what is asked for
            only = create_contexts_of(ask(tree, query(aapl.SERVER_CAPS, aapl.UNIX_BASED)))[b"AAPL"]
            assert only == struct.pack("<IIQQ", 1, 0, aapl.SERVER_CAPS,
                                       aapl.UNIX_BASED | aapl.SUPPORTS_OSX_COPYFILE | aapl.SUPPORTS_NFS_ACE)
    c, tree = connected(server, "plain")
    with c:
        r = ask(tree, query())
        assert r.status == wire.STATUS_SUCCESS and b"AAPL" not in create_contexts_of(r)


@pytest.mark.parametrize("data", [query()[:16], query() + b"\0" * 8, query(command=2)],
                         ids=["short", "long", "command"])
def test_a_malformed_query_is_refused_and_opens_nothing(smbconf, data):
    server = smbconf("", SHARES)
    c, tree = connected(server, "mac")
    with c:
        r = ask(tree, data, "never-made")
        assert r.status == wire.STATUS_INVALID_PARAMETER, r
    assert not (server.root / "mac" / "never-made").exists()


def test_the_options_turn_it_off_and_name_the_model(smbconf):
    """`fruit:aapl = no`: no reply; `fruit:copyfile` off (Samba's default): no OSX_COPYFILE;
    `fruit:model`: the name sent."""
    server = smbconf("fruit:aapl = no", SHARES)
    c, tree = connected(server, "mac")
    with c:
        assert b"AAPL" not in create_contexts_of(ask(tree, query()))
    server = smbconf("fruit:model = Xserve", SHARES)
    c, tree = connected(server, "mac")
    with c:
        reply = create_contexts_of(ask(tree, query()))[b"AAPL"]
        assert struct.unpack_from("<Q", reply, 16)[0] == \
            aapl.UNIX_BASED | aapl.SUPPORTS_READ_DIR_ATTR | aapl.SUPPORTS_NFS_ACE
        assert reply[40:].decode("utf-16-le") == "Xserve"


def write_file(tree, name: str, data: bytes) -> None:
    fid = tree.open(name, wire.GENERIC_READ | wire.GENERIC_WRITE, wire.FILE_OVERWRITE_IF)
    for at in range(0, len(data), 65536):
        assert tree.write(fid, data[at:at + 65536], at).status == wire.STATUS_SUCCESS
    tree.close(fid)


def read_file(tree, name: str, size: int) -> bytes:
    fid = tree.open(name, wire.GENERIC_READ)
    out = b"".join(tree.read(fid, 65536, at).body[16:] for at in range(0, size, 65536))
    tree.close(fid)
    return out


def copy_no_chunks(tree, src_name: str, dst_name: str):
    src = tree.open(src_name, wire.GENERIC_READ)
    key = tree.ioctl(src, FSCTL_SRV_REQUEST_RESUME_KEY, max_output=32).buffer(32, "<II")[:24]
    dst = tree.open(dst_name, wire.GENERIC_READ | wire.GENERIC_WRITE, wire.FILE_OPEN_IF)
    r = tree.ioctl(dst, FSCTL_SRV_COPYCHUNK, struct.pack("<24sII", key, 0, 0), max_output=12)
    tree.close(src)
    tree.close(dst)
    return r


def test_copyfile_copies_the_whole_file_and_its_streams_once_negotiated(smbconf):
    """A COPYCHUNK of no chunks copies nothing (Windows' answer) until the tree connect has
    negotiated copyfile; then the whole file (over 16 MiB: in pieces) and its named streams,
    over the destination's stream of the same name; TotalBytesWritten is the file's size.
    Where fruit:copyfile is off, nothing is copied after the query either."""
    server = smbconf("fruit:copyfile = yes", SHARES)
    data = bytes(range(256)) * (70_000)      # 17.9 MB
    streams = {"AFP_Resource": b"resource fork" * 100, "foo\uf022bar": b"abcdefghij"}
    c, tree = connected(server, "mac")
    with c:
        write_file(tree, "src.bin", data)
        for name, value in streams.items():
            write_file(tree, f"src.bin:{name}", value)
        write_file(tree, "dst.bin:AFP_Resource", b"old and longer than the new one" * 100)
        r = copy_no_chunks(tree, "src.bin", "dst.bin")
        assert r.status == wire.STATUS_SUCCESS and r.buffer(32, "<II") == struct.pack("<III", 0, 0, 0), r
        assert (server.root / "mac" / "dst.bin").stat().st_size == 0
        ask(tree, query())
        r = copy_no_chunks(tree, "src.bin", "dst.bin")
        assert r.status == wire.STATUS_SUCCESS, r
        assert r.buffer(32, "<II") == struct.pack("<III", 0, 0, len(data))
        assert (server.root / "mac" / "dst.bin").read_bytes() == data
        for name, value in streams.items():
            assert read_file(tree, f"dst.bin:{name}", len(value) + 1) == value, name
        assert read_file(tree, "src.bin:AFP_Resource", 10_000) == streams["AFP_Resource"]
    server = smbconf("", SHARES)
    c, tree = connected(server, "mac")
    with c:
        write_file(tree, "src2.bin", b"x" * 1000)
        ask(tree, query())
        r = copy_no_chunks(tree, "src2.bin", "dst2.bin")
        assert r.status == wire.STATUS_SUCCESS and r.buffer(32, "<II") == struct.pack("<III", 0, 0, 0)
        assert (server.root / "mac" / "dst2.bin").stat().st_size == 0


def test_copyfile_needs_the_chunked_copys_rights(smbconf):
    """Reading the source and writing the destination, as any COPYCHUNK: a destination
    opened to read only is refused, and nothing is copied."""
    server = smbconf("fruit:copyfile = yes", SHARES)
    c, tree = connected(server, "mac")
    with c:
        write_file(tree, "src.bin", b"secret" * 100)
        write_file(tree, "dst.bin", b"")
        ask(tree, query())
        src = tree.open("src.bin", wire.GENERIC_READ)
        key = tree.ioctl(src, FSCTL_SRV_REQUEST_RESUME_KEY, max_output=32).buffer(32, "<II")[:24]
        dst = tree.open("dst.bin", wire.GENERIC_READ)
        r = tree.ioctl(dst, FSCTL_SRV_COPYCHUNK, struct.pack("<24sII", key, 0, 0), max_output=12)
        assert r.status == wire.STATUS_ACCESS_DENIED, r
    assert (server.root / "mac" / "dst.bin").stat().st_size == 0


# the tests of smbtorture's vfs.fruit that pass (31 of 32), and vfs.fruit_file_id's; the
# other wants a directory with open files renamed (which Samba no longer does either: it
# removed fruit:posix_rename, as harmful to Windows clients)
FRUIT_PASSING = (
    "copyfile", "write metadata", "resource fork IO", "SMB2/CREATE context AAPL", "stream names",
    "truncate resource fork to 0 bytes", "opening and creating resource fork", "fsync_resource_fork",
    "File without AFP_AfpInfo", "create delete-on-close AFP_AfpInfo", "setinfo delete-on-close AFP_AfpInfo",
    "setinfo eof AFP_AfpInfo", "delete AFP_AfpInfo by writing all 0", "setinfo eof AFP_AfpResource",
    "setinfo eof stream", "delete", "read open rsrc after rename",
    "readdir_attr with names with illegal ntfs characters", "creating rsrc with read-only access",
    "copy-chunk streams", "NFS ACE entries", "writing_afpinfo", "delete_trigger_convert_sharing_violation",
    "create delete-on-close AFP_AfpResource", "setinfo delete-on-close AFP_AfpResource", "null afpinfo",
    "invalid AFP_AfpInfo", "empty_stream", "read metadata",
    "OS X AppleDouble file conversion", "OS X AppleDouble file conversion without embedded xattr",
    "zero file id if AAPL negotiated")      # (vfs.fruit_file_id)


@pytest.mark.skipif(not shutil.which("smbtorture"), reason="Samba's smbtorture is not installed")
def test_smbtorture_fruit_keeps_its_passing_tests(smbconf, tmp_path):
    server = smbconf("fruit:copyfile = yes", with_plain_view(tmp_path))
    done = subprocess.run(["smbtorture", "//127.0.0.1/mac", "-p", str(server.port), "-U", f"{USER}%{PASSWORD}",
                           "--option=torture:share2=macplain", "vfs.fruit", "vfs.fruit_file_id"],
                          capture_output=True, text=True, timeout=600)
    passed = {line[len("success: "):] for line in done.stdout.splitlines() if line.startswith("success: ")}
    missing = sorted(set(FRUIT_PASSING) - passed)
    assert len(passed) >= 32 and not missing, (missing, done.stdout[-3000:])
