"""A CREATE whose name another process changes while it runs (another worker's delete on
close, another program): judged again on what the name is by then, never answered for a name
that no longer is, or is no longer missing. Real files; the other process's change is made
at the moment between the CREATE's lookup of the name and its open of it."""
import os

import pytest
import smbcore
from sansio_client import ALL_ACCESS, SHARE_ALL

from smbring.smb import wire
from smbring.vfs.posix import PosixVFS


def changed_after_lookup(monkeypatch, name: str, change) -> None:
    """`change()` runs once, right after the CREATE's first lookup of `name`."""
    stat = PosixVFS.stat
    done = []

    def looked_up(self, parts, *a, **kw):
        try:
            return stat(self, parts, *a, **kw)
        finally:
            if parts and parts[-1] == name and not done:
                done.append(True)
                change()
    monkeypatch.setattr(PosixVFS, "stat", looked_up)


@pytest.mark.parametrize("disposition, status", [
    (wire.FILE_OPEN_IF, wire.STATUS_SUCCESS), (wire.FILE_OVERWRITE_IF, wire.STATUS_SUCCESS),
    (wire.FILE_OPEN, wire.STATUS_OBJECT_NAME_NOT_FOUND), (wire.FILE_OVERWRITE, wire.STATUS_OBJECT_NAME_NOT_FOUND)])
def test_a_name_removed_meanwhile_is_judged_as_missing(client, share, monkeypatch, disposition, status):
    (share / "going").write_bytes(b"old")
    changed_after_lookup(monkeypatch, "going", lambda: os.unlink(share / "going"))
    got, out = client.request(wire.CREATE, create_body("going", disposition))
    assert got == status, hex(got)
    if status == wire.STATUS_SUCCESS:
        assert int.from_bytes(out[4:8], "little") == wire.FILE_CREATED
        assert (share / "going").read_bytes() == b""


@pytest.mark.parametrize("disposition, status", [
    (wire.FILE_OPEN_IF, wire.STATUS_SUCCESS), (wire.FILE_OVERWRITE_IF, wire.STATUS_SUCCESS),
    (wire.FILE_CREATE, wire.STATUS_OBJECT_NAME_COLLISION)])
def test_a_name_made_meanwhile_is_judged_as_there(client, share, monkeypatch, disposition, status):
    changed_after_lookup(monkeypatch, "coming", lambda: (share / "coming").write_bytes(b"theirs"))
    got, out = client.request(wire.CREATE, create_body("coming", disposition))
    assert got == status, hex(got)
    if status == wire.STATUS_SUCCESS:
        expected = wire.FILE_OPENED if disposition == wire.FILE_OPEN_IF else wire.FILE_OVERWRITTEN
        assert int.from_bytes(out[4:8], "little") == expected
    if disposition != wire.FILE_OVERWRITE_IF:
        assert (share / "coming").read_bytes() == b"theirs"      # never overwritten unasked


def create_body(name: str, disposition: int) -> bytes:
    return smbcore.create_body(name, ALL_ACCESS, disposition, 0, share_access=SHARE_ALL)
