"""A server that invents names for ever: listings and trees are bounded by the client's limits
(limits.Limits), each reached with LimitExceeded naming the limit (the CLI: exit status 4 and
the option that raises it), nothing presented as complete; a listing that goes round is
refused without keeping the names it gave."""
import asyncio
import itertools
import os
import struct
import sys

import pytest

import smbring.client as sc
from smbring.client.errors import LimitExceeded
from smbring.client.limits import DEFAULT_MAX_ENTRIES, Limits, NameRepeats
from smbring.smb import wire

from test_lying_server import cli_ls, is_listing, run, through

ENTRY = struct.Struct("<IIQQQQQQIIIBB24sHQ")      # FileIdBothDirectoryInformation, then the name


def directory_entries(names) -> bytes:
    """FileIdBothDirectoryInformation entries of empty files with these names."""
    out = bytearray()
    for i, name in enumerate(names):
        raw = wire.utf16(name)
        size = (ENTRY.size + len(raw) + 7) & ~7
        last = i == len(names) - 1
        t = 133_000_000_000_000_000
        out += ENTRY.pack(0 if last else size, 0, t, t, t, t, 0, 0, wire.ATTR_ARCHIVE, len(raw),
                          0, 0, 0, b"", 0, i) + raw
        if not last:
            out += b"\0" * (size - ENTRY.size - len(raw))
    return bytes(out)


def inventing_names(per_batch: int = 100, given: list | None = None):
    """A tamper function for a server that never ends a listing: every end of one
    (STATUS_NO_MORE_FILES) becomes a batch of `per_batch` names never listed before
    (counted in `given`, when one is passed)."""
    numbers = itertools.count()

    def tamper(frame):
        if not is_listing(frame, wire.STATUS_NO_MORE_FILES):
            return frame
        batch = directory_entries([f"invented-{next(numbers):09}" for _ in range(per_batch)])
        if given is not None:
            given.append(per_batch)
        out = bytearray(frame[:wire.HEADER_SIZE])
        struct.pack_into("<I", out, 8, wire.STATUS_SUCCESS)
        return out + struct.pack("<HHI", 9, wire.HEADER_SIZE + 8, len(batch)) + batch
    return tamper


@pytest.fixture
def listed_dir(smbring_server):
    srv = smbring_server()
    (srv["share"] / "dir").mkdir()
    (srv["share"] / "dir" / "real").write_bytes(b"x")
    return srv


def test_a_listing_of_invented_names_ends_at_the_limit(listed_dir, tampering_proxy):
    """listdir gives at most max_entries entries of a listing that never ends, then raises
    LimitExceeded naming the limit; the connection stays usable (a large directory is no
    lie)."""
    given = []

    async def go():
        proxy, c = await through(tampering_proxy, listed_dir, inventing_names(given=given))
        try:
            names = []
            with pytest.raises(LimitExceeded, match="more than 1,000 entries") as e:
                async for entry in c.listdir("dir", max_entries=1000):
                    names.append(entry.name)
            assert (e.value.limit, e.value.value) == ("entries", 1000)
            assert len(names) == 1000 and len(set(names)) == 1000
            assert sum(given) <= 1000          # no further than one batch past the limit
            assert c.connected and (await c.stat("dir/real")).size == 1
        finally:
            await c.close()
            await proxy.__aexit__(None, None, None)
    run(go())


def test_the_default_limit_is_finite_and_is_the_clients(listed_dir, tampering_proxy):
    """Without max_entries, listdir takes the client's limits.entries: finite by default,
    and what connect(limits=...) sets."""
    assert 1_000_000 <= DEFAULT_MAX_ENTRIES < 100_000_000
    assert Limits().entries == DEFAULT_MAX_ENTRIES

    async def go():
        proxy, c = await through(tampering_proxy, listed_dir, inventing_names(),
                                 limits=Limits(entries=300))
        try:
            with pytest.raises(LimitExceeded, match="Limits.entries is 300"):
                async for _entry in c.listdir("dir"):
                    pass
        finally:
            await c.close()
            await proxy.__aexit__(None, None, None)
    run(go())


def test_cli_ls_of_invented_names_stops_at_the_limit_and_shows_nothing(listed_dir, tampering_proxy):
    code, out, err = run(cli_ls(listed_dir, tampering_proxy, inventing_names(), "--max-entries", "500"))
    assert code == 4, (out, err)
    assert out == ""
    assert "500" in err and "--max-entries" in err and "nothing was listed" in err


@pytest.mark.parametrize("value", ["0", "-1"])
def test_cli_refuses_a_limit_below_one(listed_dir, tampering_proxy, value):
    code, out, err = run(cli_ls(listed_dir, tampering_proxy, lambda f: f, "--max-entries", value))
    assert code == 2, (out, err)
    assert "at least 1" in err


@pytest.fixture
def tree(smbring_server):
    """top/ with 4 files, 3 directories of 2 files each, one of them 2 levels deeper."""
    srv = smbring_server()
    top = srv["share"] / "top"
    for d in ("a", "b", "c/d/e"):
        (top / d).mkdir(parents=True)
    for i in range(4):
        (top / f"f{i}").write_bytes(b"x")
    for d in ("a", "b", "c"):
        for i in range(2):
            (top / d / f"g{i}").write_bytes(b"y")
    return srv


@pytest.mark.parametrize("limit, value, message", [
    ("files", 5, "more than 5 files"),
    ("directories", 2, "more than 2 directories"),
    ("depth", 2, "deeper than 2 directories"),
    ("entries", 4, "more than 4 entries"),
])
def test_get_of_a_tree_past_a_limit_leaves_nothing(tree, tmp_path, limit, value, message):
    """A get of a tree stops at whichever limit it reaches first, leaves nothing behind, and
    the connection stays usable; with the limit one higher (or the default) it completes."""
    work = tmp_path / "work"
    work.mkdir()
    needed = {"files": 10, "directories": 5, "depth": 4, "entries": 7}[limit]

    async def go():
        c = await sc.connect("127.0.0.1", tree["port"], tree["user"], tree["password"], tree["name"],
                             limits=Limits(**{limit: value}))
        try:
            with pytest.raises(LimitExceeded, match=message) as e:
                await c.get("top", str(work / "dest"))
            assert e.value.limit == limit
            assert os.listdir(work) == []
            c.limits = Limits(**{limit: needed})
            await c.get("top", str(work / "dest"))
        finally:
            await c.close()
    run(go())
    assert sorted(os.listdir(work / "dest")) == ["a", "b", "c", "f0", "f1", "f2", "f3"]


async def cli_get(srv, *options, cwd):
    p = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "smbring.cli", "get",
        f"smb://{srv['user']}@127.0.0.1:{srv['port']}/share/top", "dest", *options,
        env=dict(os.environ, SMBRING_PASSWORD=srv["password"]), cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await p.communicate()
    return p.returncode, out.decode(), err.decode()


@pytest.mark.parametrize("option, value", [("--max-files", "9"), ("--max-dirs", "4"),
                                           ("--max-depth", "3"), ("--max-entries", "6")])
def test_cli_get_past_a_limit_names_the_option_and_writes_nothing(tree, tmp_path, option, value):
    work = tmp_path / "work"
    work.mkdir()
    code, out, err = run(cli_get(tree, option, value, cwd=work))
    assert code == 4, (out, err)
    assert option in err and "nothing was written" in err
    assert os.listdir(work) == []


# ---- a listing that goes round, told with one name kept ----

@pytest.mark.parametrize("before, period", [(0, 1), (0, 2), (1, 1), (5, 3), (100, 7), (3, 1000),
                                            (1000, 1), (777, 333)])
def test_names_that_come_round_are_seen_within_three_rounds(before, period):
    """A sequence of `before` names, then `period` names over and over: NameRepeats sees a
    repeat within about three times before + period names, and never among distinct ones."""
    names = [f"p{i}" for i in range(before)] + [f"c{i}" for i in range(period)] * 10_000
    repeats = NameRepeats()
    at = next(i for i, name in enumerate(names) if repeats.seen(name))
    assert before + period <= at <= 3 * (before + period) + 2
    distinct = NameRepeats()
    assert not any(distinct.seen(f"n{i}") for i in range(100_000))
