"""A file renamed through one handle is renamed for its other handles too: what they do by name
afterwards (a delete on close, a rename) reaches that file, never one that took its old name
since. (Before, each open kept the name it was opened by: a delete on close set through a
second handle removed the new file at the old name, and left the renamed one.)"""
import struct
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from servers import PASSWORD, USER, spawn, stop  # noqa: E402
from smbprotocol_user import UserClient  # noqa: E402

READ_WRITE, DELETE = 0x0012019F, 0x00010000
CREATE = 2
INFO_FILE, RENAME, DISPOSITION = 1, 10, 13


def rename_to(name: str) -> bytes:
    """FileRenameInformation (MS-FSCC 2.4.37): ReplaceIfExists 0, RootDirectory 0, the name."""
    encoded = name.encode("utf-16-le")
    return struct.pack("<B7xQI", 0, 0, len(encoded)) + encoded


@pytest.fixture
def served(tmp_path):
    share = tmp_path / "share"
    share.mkdir()
    proc, port, _log = spawn(tmp_path, str(share), "--share", "share")
    try:
        yield share, port
    finally:
        stop(proc)


def renamed_under_a_second_handle(c: UserClient, share):
    """x.txt opened twice, renamed to y.txt through the first handle, and a new x.txt made by
    someone else: (first handle, second handle)."""
    (share / "x.txt").write_text("the file renamed")
    first = c.open("x.txt", READ_WRITE | DELETE)
    second = c.open("x.txt", READ_WRITE | DELETE)
    assert c.set_info(first, INFO_FILE, RENAME, rename_to("y.txt")) == 0
    c.open("x.txt", READ_WRITE, disposition=CREATE).close()     # another file takes the name
    (share / "x.txt").write_text("someone else's new file")
    return first, second


def test_a_delete_on_close_through_another_handle_reaches_the_renamed_file(served):
    share, port = served
    with UserClient("127.0.0.1", port, USER, PASSWORD, "share") as c:
        first, second = renamed_under_a_second_handle(c, share)
        assert c.set_info(second, INFO_FILE, DISPOSITION, b"\x01") == 0
        first.close()
        second.close()      # the last handle: the delete on close is done here, by its name
    assert sorted(p.name for p in share.iterdir()) == ["x.txt"]
    assert (share / "x.txt").read_text() == "someone else's new file"


def test_a_rename_through_another_handle_moves_the_renamed_file(served):
    share, port = served
    with UserClient("127.0.0.1", port, USER, PASSWORD, "share") as c:
        first, second = renamed_under_a_second_handle(c, share)
        assert c.set_info(second, INFO_FILE, RENAME, rename_to("z.txt")) == 0
        first.close()
        second.close()
    assert (share / "z.txt").read_text() == "the file renamed"
    assert (share / "x.txt").read_text() == "someone else's new file"
    assert not (share / "y.txt").exists()
