"""`put` of a directory tree against a real `smbring serve`: byte-exact, all or nothing, and
every local name that would mean something else on the share (a separator, a stream, a
character Windows refuses, bytes that are not text), links and special files refused before
anything is sent. And the progress bar's line."""
import asyncio
import io
import os

import pytest

import smbring.client as sc
from smbring.client.progress import Progress

MiB = 1024 * 1024


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 300))


async def connected(srv, **kw):
    return await sc.connect(srv["host"], srv["port"], srv["user"], srv["password"], srv["name"], **kw)


def make_tree(root):
    (root / "a" / "b" / "c").mkdir(parents=True)
    (root / "empty").mkdir()
    files = {"top.bin": os.urandom(2 * MiB + 1), "a/x.txt": b"hello\n", "a/b/c/deep.bin": os.urandom(70_000),
             "a/b/zero": b"", "naïve ünïcode.txt": b"names in UTF-8"}
    for rel, data in files.items():
        (root / rel).write_bytes(data)
    return files


def test_a_tree_is_uploaded_whole(smbring_server, tmp_path):
    srv = smbring_server()
    local = tmp_path / "tree"
    files = make_tree(local)
    progress = Progress(io.StringIO())

    async def go():
        async with await connected(srv, channels=2) as c:
            assert await c.put(str(local), "", progress) == "tree"
            with pytest.raises(FileExistsError):
                await c.put(str(local), "")      # "tree" exists: a tree is never merged into one
            await c.mkdir("into")
            assert await c.put(str(local), "into") == "into/tree"   # an existing directory: into it
    run(go())
    for base in (srv["share"] / "tree", srv["share"] / "into" / "tree"):
        for rel, data in files.items():
            assert (base / rel).read_bytes() == data
        assert (base / "empty").is_dir()
    assert progress.done == progress.total == sum(len(d) for d in files.values())
    assert sorted(p.name for p in srv["share"].iterdir()) == ["into", "tree"]   # no temporaries


@pytest.mark.parametrize("server", ["smbring", "smbd"])
def test_a_tree_of_many_small_files_goes_both_ways_byte_exact(request, tmp_path, server):
    """300 small files (uploaded and downloaded several at a time) and a large one (on its
    own), up and back down, each byte as it was; the progress counts every byte once."""
    srv = request.getfixturevalue("smbring_server")() if server == "smbring" else \
        request.getfixturevalue("samba_server")()
    local = tmp_path / "many"
    (local / "sub").mkdir(parents=True)
    files = {f"sub/f{i:03d}" if i % 2 else f"f{i:03d}": os.urandom(i * 37) for i in range(300)}
    files["large.bin"] = os.urandom(5 * MiB + 3)
    for rel, data in files.items():
        (local / rel).write_bytes(data)
    up, down = Progress(io.StringIO()), Progress(io.StringIO())

    async def go():
        async with await connected(srv) as c:
            await c.put(str(local), "many", up)
            await c.get("many", str(tmp_path / "back"), down)
    run(go())
    for rel, data in files.items():
        assert (srv["share"] / "many" / rel).read_bytes() == data
        assert (tmp_path / "back" / rel).read_bytes() == data
    total = sum(len(d) for d in files.values())
    assert up.done == up.total == down.done == down.total == total


@pytest.mark.parametrize("name", ["a\\..\\..\\escape", "file:stream", "ctl\x01name", "what?",
                                  "pipe|name", b"latin1-\xe9".decode("utf-8", "surrogateescape")])
def test_names_the_share_would_misread_are_refused_before_anything_is_sent(smbring_server, tmp_path, name):
    srv = smbring_server()
    local = tmp_path / "tree"
    make_tree(local)
    (local / "a" / name).write_bytes(b"x")

    async def go():
        async with await connected(srv) as c:
            with pytest.raises(ValueError, match="cannot be"):
                await c.put(str(local), "up")
    run(go())
    assert list(srv["share"].iterdir()) == []      # nothing, not even a temporary


@pytest.mark.parametrize("kind", ["symlink", "fifo"])
def test_links_and_special_files_are_refused(smbring_server, tmp_path, kind):
    srv = smbring_server()
    local = tmp_path / "tree"
    make_tree(local)
    if kind == "symlink":
        (local / "a" / "passwd").symlink_to("/etc/passwd")
    else:
        os.mkfifo(local / "a" / "fifo")

    async def go():
        async with await connected(srv) as c:
            with pytest.raises(ValueError, match="symbolic link|not a regular file"):
                await c.put(str(local), "up")
    run(go())
    assert list(srv["share"].iterdir()) == []


class RemoveLater(Progress):
    """Deletes a local file of the tree once the upload is under way (after the tree was
    checked), so that the upload fails halfway."""

    def __init__(self, victim):
        super().__init__(io.StringIO())
        self.victim = victim

    def advance(self, n):
        super().advance(n)
        if self.victim.exists():
            self.victim.unlink()


def test_a_failed_tree_upload_leaves_nothing(smbring_server, tmp_path):
    """A file gone halfway through the tree: the temporary directory on the share is removed,
    the destination never appears."""
    srv = smbring_server()
    local = tmp_path / "tree"
    make_tree(local)
    victim = local / "zz-late.bin"
    victim.write_bytes(b"late")

    async def go():
        async with await connected(srv) as c:
            with pytest.raises(FileNotFoundError):
                await c.put(str(local), "up", RemoveLater(victim))
    run(go())
    assert list(srv["share"].iterdir()) == []


def test_progress_line():
    now = [100.0]
    out = io.StringIO()
    p = Progress(out, clock=lambda: now[0])
    p.expect(100 * MiB)
    now[0] += 2
    p.advance(50 * MiB)
    line = p.line()
    assert "50.0%" in line and "50.0 MiB of 100.0 MiB" in line and "25.0 MiB/s" in line
    assert "ETA 0:02" in line
    p.end()
    assert out.getvalue().endswith("\r")


def test_removing_a_failed_upload_follows_a_bottomless_listing_only_so_far():
    """A failed tree upload removes its temporary directory on the share by listing it: a
    server that lists a new subdirectory at every level is followed MAX_DEPTH levels (an
    upload never makes more), not until the stack runs out (a RecursionError)."""
    from smbring.client import messages as m
    from smbring.client.transfer import MAX_DEPTH, remove_tree
    from smbring.smb import wire

    class Bottomless:
        listed = 0

        async def listdir(self, path):
            self.listed += 1
            yield m.DirEntry("d", 0, 0, wire.ATTR_DIRECTORY, 0, 0, 0, 0, 0)

        async def remove(self, path):
            pass

        async def rmdir(self, path):
            pass

    client = Bottomless()
    run(remove_tree(client, "tmp"))
    assert client.listed == MAX_DEPTH
