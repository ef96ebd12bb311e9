"""A rename inside a directory that is open: Windows renames by opening the directory for
writing (FILE_ADD_FILE) sharing read and write, so an open of the directory stops the rename
(STATUS_SHARING_VIOLATION) when it wants DELETE or does not share writing, and not when it
reads and writes the directory sharing both (smbtorture's smb2.notify.mask-change and
smb2.notify.rec rename files beside such a handle; smb2.rename's with_delete_access,
no_delete_access, no_delete_access2 and msword hold the other cases)."""
import pytest
from sansio_client import Client

from smbring.smb import wire
from smbring.smb.sharemodes import blocks_rename_in

DIRECTORY, NON_DIRECTORY = 0x1, 0x40
FILE_ALL = 0x1FF                    # SEC_FILE_ALL: data, EAs, attributes, DELETE_CHILD; no DELETE
DELETE = 0x10000
READ_ATTRIBUTES_SYNCHRONIZE = 0x00100080
R, W, D = 1, 2, 4


@pytest.mark.parametrize("access, share, status", [
    (FILE_ALL, R | W, 0),                                   # notify.mask-change's handle
    (FILE_ALL, R | W | D, 0),                               # rename.no_delete_access
    (FILE_ALL, 0, wire.STATUS_SHARING_VIOLATION),           # rename.no_delete_access2
    (FILE_ALL, R | D, wire.STATUS_SHARING_VIOLATION),       # does not share writing
    (FILE_ALL | DELETE, R | W | D, wire.STATUS_SHARING_VIOLATION),  # rename.with_delete_access
    (READ_ATTRIBUTES_SYNCHRONIZE, 0, 0),                    # rename.msword: attributes only
])
def test_a_rename_beside_an_open_of_its_directory(tmp_path, access, share, status):
    c = Client(tmp_path)
    c.close(c.open("d", options=DIRECTORY, disposition=wire.FILE_CREATE))
    held = c.open("d", access=access, share=share, options=DIRECTORY, disposition=wire.FILE_OPEN)
    f = c.open("d\\a", options=NON_DIRECTORY, disposition=wire.FILE_CREATE)
    assert c.rename(f, "d\\b", replace=True) == status
    assert (tmp_path / "d" / ("a" if status else "b")).exists()
    assert c.close(f) == 0 and c.close(held) == 0


def test_the_rule_is_one_for_every_share_mode_table():
    # (the LMDB table of `serve --workers` asks the same function)
    assert not blocks_rename_in(R | W, R | W)
    assert blocks_rename_in(R | W, R | D) and blocks_rename_in(D, R | W | D)
    assert not blocks_rename_in(0, 0)
