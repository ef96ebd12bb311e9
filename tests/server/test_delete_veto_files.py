"""`delete veto files` (as Samba's): a directory that holds only vetoed names (macOS's
`.DS_Store` and `._*` files, the usual `veto files`) is deleted with them, whatever they
hold; one name a client can see keeps it (NT_STATUS_DIRECTORY_NOT_EMPTY). Without the option
the vetoed names keep it, as in Samba. smbclient against `smbring serve --config`."""
from smbconf_server import smbconf  # noqa: F401  (the fixture)

VETO = r"veto files = /.DS_Store/._*/"
SHARES = {"mac": f"read only = no\n{VETO}\ndelete veto files = yes", "plain": f"read only = no\n{VETO}"}


def album(root, visible: bool = False):
    """A directory with macOS's leftovers (a vetoed directory among them, with a file in it)."""
    root.mkdir()
    (root / ".DS_Store").write_bytes(b"finder")
    (root / "._photo.jpg").write_bytes(b"appledouble")
    (root / "._resources").mkdir()
    (root / "._resources" / "inside").write_bytes(b"x")
    if visible:
        (root / "photo.jpg").write_bytes(b"jpeg")


def test_a_directory_of_vetoed_names_is_deleted_with_them(smbconf, tmp_path):
    server = smbconf("", SHARES)
    album(tmp_path / "mac" / "album")
    out = server.smbclient("mac", "rmdir album")
    assert out.returncode == 0 and "NT_STATUS" not in out.stdout, out.stdout + out.stderr
    assert not (tmp_path / "mac" / "album").exists()


def test_a_name_a_client_can_see_keeps_the_directory_and_the_vetoed_names(smbconf, tmp_path):
    server = smbconf("", SHARES)
    album(tmp_path / "mac" / "album", visible=True)
    out = server.smbclient("mac", "rmdir album")
    assert "NT_STATUS_DIRECTORY_NOT_EMPTY" in out.stdout + out.stderr
    assert (tmp_path / "mac" / "album" / ".DS_Store").exists()
    assert (tmp_path / "mac" / "album" / "._resources" / "inside").exists()


def test_without_the_option_vetoed_names_keep_the_directory(smbconf, tmp_path):
    server = smbconf("", SHARES)
    album(tmp_path / "plain" / "album")
    out = server.smbclient("plain", "rmdir album")
    assert "NT_STATUS_DIRECTORY_NOT_EMPTY" in out.stdout + out.stderr
    assert (tmp_path / "plain" / "album" / ".DS_Store").exists()


def test_the_named_streams_of_files_in_a_vetoed_directory_go_with_them(smbconf, tmp_path):
    """A file inside a vetoed directory that is deleted leaves no named streams behind in the
    share's stream depot (as the vetoed file beside it does not)."""
    import os

    from smbring.vfs.posix import PosixVFS
    server = smbconf("", SHARES)
    album(tmp_path / "mac" / "album")
    files = PosixVFS(str(tmp_path / "mac"))
    try:
        sids = []
        for parts in (["album", "._resources", "inside"], ["album", "._photo.jpg"]):
            sid = files.stream_id(parts, create=True)
            os.close(files.create_stream(sid, "com.apple.ResourceFork", (os.getuid(), os.getgid())))
            sids.append(sid)
        out = server.smbclient("mac", "rmdir album")
        assert out.returncode == 0 and "NT_STATUS" not in out.stdout, out.stdout + out.stderr
        assert not (tmp_path / "mac" / "album").exists()
        for sid in sids:
            assert not os.path.exists(os.path.join(files.depot, sid)), sid
    finally:
        files.close()
