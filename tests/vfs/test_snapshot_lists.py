"""vfs.shadow_copy.SnapshotLists: a share's snapshots listed again only when its snapshot
directory changed, or after a while; real directories."""
import os

from smbring.vfs import shadow_copy
from smbring.vfs.shadow_copy import ShadowCopyOptions, SnapshotLists

NAMES = ["@GMT-2026.12.01-10.00.00", "@GMT-2026.12.02-10.00.00"]


def volume(tmp_path):
    """A share at the root of a pretend mount point, its snapshot directory `.snapshots`."""
    mount = tmp_path / "vol"
    for name in NAMES:
        (mount / ".snapshots" / name).mkdir(parents=True)
    return ShadowCopyOptions(mountpoint=str(mount)), str(mount)


def counted(monkeypatch, name: str) -> list:
    """The calls made of shadow_copy's function `name` from now on (their arguments)."""
    calls = []
    real = getattr(shadow_copy, name)
    monkeypatch.setattr(shadow_copy, name, lambda *a: calls.append(a) or real(*a))
    return calls


def test_a_list_is_used_again_until_the_snapshot_directory_changes(tmp_path, monkeypatch):
    options, share = volume(tmp_path)
    listed = counted(monkeypatch, "snapshots")
    lists = SnapshotLists()
    first = lists.of(options, share)
    assert [os.path.basename(d) for _, d in first] == NAMES[::-1] and len(listed) == 1
    assert lists.of(options, share) == first and len(listed) == 1
    when = first[0][0]
    assert lists.at(options, share, when) == first[0][1] and len(listed) == 1
    # a new snapshot changes the directory: listed again, and found
    (tmp_path / "vol" / ".snapshots" / "@GMT-2026.12.03-10.00.00").mkdir()
    assert len(lists.of(options, share)) == 3 and len(listed) == 2
    # a removed one too
    os.rmdir(tmp_path / "vol" / ".snapshots" / NAMES[0])
    assert len(lists.of(options, share)) == 2 and len(listed) == 3


def test_a_kept_list_costs_no_search_for_the_snapshot_directory(tmp_path, monkeypatch):
    """Where the snapshot directory lies (the share's real path, its mount point: a stat of
    every directory above the share) is worked out with each listing, not with each use of
    the kept list; it is worked out again once the list is older than its bound."""
    options, share = volume(tmp_path)
    searched = counted(monkeypatch, "_layout")
    lists = SnapshotLists()
    first = lists.of(options, share)
    for when, directory in first * 3:
        assert lists.at(options, share, when) == directory
    assert lists.at(options, share, 0) is None and len(searched) == 1
    lists.fresh_for = 0
    assert lists.of(options, share) == first and len(searched) == 2


def test_a_list_older_than_its_bound_is_made_again(tmp_path, monkeypatch):
    """(A snapshot directory whose time never moves, as ZFS's may, is still read again.)"""
    options, share = volume(tmp_path)
    listed = counted(monkeypatch, "snapshots")
    lists = SnapshotLists(fresh_for=0)
    lists.of(options, share)
    lists.of(options, share)
    assert len(listed) == 2


def test_no_snapshot_directory_means_no_snapshots_and_nothing_kept(tmp_path):
    options = ShadowCopyOptions(mountpoint=str(tmp_path))
    lists = SnapshotLists(most=1)
    assert not lists.of(options, str(tmp_path)) and lists.at(options, str(tmp_path), 0) is None
    a, share_a = volume(tmp_path / "a")
    b, share_b = volume(tmp_path / "b")
    assert len(lists.of(a, share_a)) == 2 and len(lists.of(b, share_b)) == 2
    assert len(lists) == 1          # (at most `most` shares' lists)
