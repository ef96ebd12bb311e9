"""The smbprotocol client over SMB 3.1.1 with signing required."""
import pytest

smbclient = pytest.importorskip("smbclient")  # the smbprotocol package's high-level API

from servers import PASSWORD, USER  # noqa: E402


@pytest.fixture
def unc(server):
    smbclient.register_session("127.0.0.1", username=USER, password=PASSWORD, port=server["port"],
                               require_signing=True)
    yield r"\\127.0.0.1\share", server["port"]
    smbclient.reset_connection_cache()


def test_files_seek_partial_io_stat_rename_remove(unc, server):
    root, port = unc
    path = root + r"\data.bin"
    with smbclient.open_file(path, mode="wb", port=port) as f:
        f.write(b"0123456789" * 10000)
    with smbclient.open_file(path, mode="r+b", port=port) as f:
        f.seek(5)
        assert f.read(7) == b"5678901"
        f.seek(99990)
        f.write(b"ABCDEFGHIJKLMNOP")
    assert (server["share"] / "data.bin").read_bytes()[99990:] == b"ABCDEFGHIJKLMNOP"
    assert smbclient.stat(path, port=port).st_size == 100006
    smbclient.mkdir(root + r"\sub", port=port)
    smbclient.rename(path, root + r"\sub\renamed.bin", port=port)
    assert sorted(smbclient.listdir(root, port=port)) == ["sub"]
    assert smbclient.listdir(root + r"\sub", port=port) == ["renamed.bin"]
    smbclient.remove(root + r"\sub\renamed.bin", port=port)
    smbclient.rmdir(root + r"\sub", port=port)
    assert smbclient.listdir(root, port=port) == []
    with pytest.raises(OSError):
        smbclient.stat(root + r"\missing", port=port)
    # the signed session used AES-GMAC, negotiated through the 3.1.1 signing context
    assert "negotiated dialect 0x311, cipher 2, signing 2" in server["log"].read_text()


def test_bad_password(server):
    with pytest.raises(Exception, match="LOGON_FAILURE|logon"):
        smbclient.register_session("127.0.0.1", username=USER, password="nope", port=server["port"])


def test_encrypted_session(server):
    smbclient.register_session("127.0.0.1", username=USER, password=PASSWORD, port=server["port"],
                               encrypt=True)
    try:
        path = r"\\127.0.0.1\share\sealed.bin"
        payload = bytes(range(256)) * 4096
        with smbclient.open_file(path, mode="wb", port=server["port"]) as f:
            f.write(payload)
        with smbclient.open_file(path, mode="rb", port=server["port"]) as f:
            assert f.read() == payload
        assert (server["share"] / "sealed.bin").read_bytes() == payload
    finally:
        smbclient.reset_connection_cache()


def test_share_modes_between_two_clients(unc, server):
    """A second open that wants what the first does not share is refused, and an
    overwrite refused that way leaves the data alone."""
    from smbprotocol.exceptions import SMBOSError

    root, port = unc
    path = root + r"\shared.txt"
    with smbclient.open_file(path, mode="w", port=port) as f:
        f.write("original")
    first = smbclient.open_file(path, mode="r", port=port, share_access="")   # shares nothing
    try:
        with pytest.raises(SMBOSError, match="SHARING_VIOLATION|0xc0000043"):
            smbclient.open_file(path, mode="w", port=port)                       # would truncate
        assert (server["share"] / "shared.txt").read_text() == "original"
    finally:
        first.close()
    with smbclient.open_file(path, mode="r", port=port, share_access="r") as a, \
            smbclient.open_file(path, mode="r", port=port, share_access="r") as b:
        assert a.read() == b.read() == "original"
