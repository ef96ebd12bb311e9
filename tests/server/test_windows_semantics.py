"""Windows file semantics that clients rely on, through real clients: names are
case-insensitive, DOS attributes and creation times stick, and delete-on-close waits for the
file's last open."""
import os
import shutil
import subprocess

import pytest

from servers import smbclient


def test_names_are_case_insensitive(server, tmp_path):
    (server["share"] / "Dir").mkdir()
    (server["share"] / "Dir" / "Report.TXT").write_bytes(b"contents")
    r = smbclient(server, f"get dir\\REPORT.txt {tmp_path / 'got'}; rename DIR\\report.txt dir\\Renamed.txt")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "got").read_bytes() == b"contents"
    assert os.listdir(server["share"] / "Dir") == ["Renamed.txt"]


def test_dos_attributes_stick(server):
    (server["share"] / "a.txt").write_bytes(b"x")
    r = smbclient(server, "setmode a.txt +hs; allinfo a.txt")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "attributes: HSA (26)" in r.stdout, r.stdout
    r = smbclient(server, "setmode a.txt -hs; setmode a.txt +r; allinfo a.txt")
    assert "attributes: RA (21)" in r.stdout, r.stdout
    assert not os.stat(server["share"] / "a.txt").st_mode & 0o222        # READONLY: no write bits
    r = smbclient(server, "del a.txt")
    assert "NT_STATUS_CANNOT_DELETE" in r.stdout + r.stderr and (server["share"] / "a.txt").exists()


def test_delete_on_close_waits_for_the_last_open(server):
    pytest.importorskip("smbprotocol")
    from test_async import Client
    from smbprotocol.open import (CreateDisposition, CreateOptions, FileAttributes, ImpersonationLevel,
                                  Open)
    (server["share"] / "doomed.txt").write_bytes(b"x")
    a, b = Client(server["port"]), Client(server["port"])
    try:
        keeper = a.open("doomed.txt")
        deleter = Open(b.tree, "doomed.txt")
        deleter.create(ImpersonationLevel.Impersonation, 0x00110080, FileAttributes.FILE_ATTRIBUTE_NORMAL,
                       0x7, CreateDisposition.FILE_OPEN,
                       CreateOptions.FILE_NON_DIRECTORY_FILE | CreateOptions.FILE_DELETE_ON_CLOSE)
        deleter.close()
        assert (server["share"] / "doomed.txt").exists()          # another open still holds it
        with pytest.raises(Exception, match="DELETE_PENDING|0xc0000056"):
            b.open("doomed.txt")                                  # but no new open gets in
        keeper.close()
        assert not (server["share"] / "doomed.txt").exists()
    finally:
        a.close()
        b.close()


def test_alternate_data_streams(server, tmp_path):
    """Streams (Windows' Zone.Identifier, macOS resource forks) are plain files in a depot the
    client cannot list or name; deleting the file deletes them."""
    zone = tmp_path / "zone"
    zone.write_text("[ZoneTransfer]\nZoneId=3\n")
    r = smbclient(server, f"put {zone} fresh.txt:Zone.Identifier; allinfo fresh.txt; "
                          f"get fresh.txt:Zone.Identifier {tmp_path / 'back'}; ls")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "stream: [:Zone.Identifier:$DATA], 24 bytes" in r.stdout, r.stdout
    assert (tmp_path / "back").read_text() == zone.read_text()
    assert (server["share"] / "fresh.txt").stat().st_size == 0      # the stream made the file
    assert ".smbring-streams" not in r.stdout
    r = smbclient(server, "ls .smbring-streams\\*")
    assert "NT_STATUS_OBJECT_NAME_INVALID" in r.stdout + r.stderr
    depot = server["share"] / ".smbring-streams"
    assert len(os.listdir(depot)) == 1
    r = smbclient(server, "del fresh.txt")
    assert r.returncode == 0 and os.listdir(depot) == []


def test_streams_never_pass_to_another_file(server, tmp_path):
    """A file deleted behind the server's back may hand its inode to the next one: streams are
    found through an id stored on the file, so the newcomer starts without any."""
    (tmp_path / "s").write_text("old stream")
    r = smbclient(server, f"put {tmp_path / 's'} old.txt:secret")
    assert r.returncode == 0, r.stdout + r.stderr
    os.unlink(server["share"] / "old.txt")                  # not through SMB
    for i in range(5):                                      # likely to reuse the inode
        (server["share"] / f"new{i}.txt").write_text("new")
        r = smbclient(server, f"allinfo new{i}.txt")
        assert "secret" not in r.stdout and "stream: [::$DATA]" in r.stdout, r.stdout
