"""`smbring orphaned-streams`: the named streams of files a local program deleted (the server
never saw them go) are listed and, with --remove, removed; the streams of every file the
share still has stay, wherever it was moved, and so do streams changed while it runs.
Streams written by smbclient through a real server."""
import json
import os
import subprocess
import sys
import time

from smbconf_server import smbconf  # noqa: F401  (the fixture)

from smbring.vfs.api import STREAMS_DIR

SHARES = {"s": "read only = no"}


def orphaned(share, *extra: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "smbring.cli", "orphaned-streams", str(share), "--json", *extra],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def put_with_stream(server, tmp_path, name: str, text: str) -> None:
    src = tmp_path / f"src-{text}"
    src.write_text(text)
    r = server.smbclient("s", f"put {src} {name}; put {src} {name}:extra")
    assert r.returncode == 0 and "NT_STATUS" not in r.stdout, r.stdout + r.stderr


def test_streams_of_a_file_deleted_locally_are_found_and_removed(smbconf, tmp_path):
    server = smbconf("", SHARES)
    share = tmp_path / "s"
    for name in ("gone.txt", "kept.txt", "moved.txt"):
        put_with_stream(server, tmp_path, name, name)
    depot_before = set(os.listdir(share / STREAMS_DIR))
    assert len(depot_before) == 3
    (share / "gone.txt").unlink()                       # a local program's delete
    (share / "sub").mkdir()
    os.rename(share / "moved.txt", share / "sub" / "moved.txt")     # a local program's move
    time.sleep(1.2)     # (older than the walk that removes: see the next test)
    found = orphaned(share)
    assert [(o["streams"], o["size"]) for o in found["orphans"]] == [(["extra"], len("gone.txt"))]
    gone = found["orphans"][0]["sid"]
    assert found["removed"] == [] and set(os.listdir(share / STREAMS_DIR)) == depot_before
    found = orphaned(share, "--remove")
    assert found["removed"] == [gone]
    assert set(os.listdir(share / STREAMS_DIR)) == depot_before - {gone}
    # the others' streams are still theirs
    for name in ("kept.txt", "sub\\moved.txt"):
        got = tmp_path / "got"
        r = server.smbclient("s", f"get {name}:extra {got}")
        assert r.returncode == 0 and got.read_text() == name.split("\\")[-1], r.stdout + r.stderr
    assert orphaned(share)["orphans"] == []


def test_streams_changed_since_the_walk_began_are_not_removed(smbconf, tmp_path):
    """A stream directory changed less than a second before the walk (a file a client makes
    while it runs may be one the walk has passed) is listed, not removed."""
    server = smbconf("", SHARES)
    share = tmp_path / "s"
    put_with_stream(server, tmp_path, "fresh.txt", "fresh")
    (share / "fresh.txt").unlink()
    found = orphaned(share, "--remove")
    assert len(found["orphans"]) == 1 and found["removed"] == []
    assert os.listdir(share / STREAMS_DIR) == [found["orphans"][0]["sid"]]


def test_an_id_copied_onto_another_file_keeps_nothing_alive(smbconf, tmp_path):
    """The id of a deleted file's streams set on another file by a local user (user.* xattrs
    are anyone's own) does not make them that file's: the depot records its file's inode."""
    server = smbconf("", SHARES)
    share = tmp_path / "s"
    put_with_stream(server, tmp_path, "victim.txt", "victim")
    sid = os.getxattr(share / "victim.txt", "user.smbring.streams")
    (share / "copier.txt").write_text("local")      # (made first: not on the victim's inode)
    (share / "victim.txt").unlink()
    os.setxattr(share / "copier.txt", "user.smbring.streams", sid)
    time.sleep(1.2)
    assert orphaned(share, "--remove")["removed"] == [sid.decode()]
