"""What one client's request, compound or short burst costs the event loop when the work is
O(something the client controls): the names of a directory listed again and again, the
named streams of a file looked through per request. One process serves every client, so a
request that holds the loop holds everyone: each probe runs while a second connection sends
ECHOs and records its slowest round trip (`EchoWatch`, in the server's CPU seconds, which a
loaded machine does not stretch as it does wall time).

The directories and streams are made in the share from outside the server (empty files, a
few MB of inodes): a client could make them as well, only more slowly.
"""
from __future__ import annotations

import os
import struct

import pytest

from raw import FID_ANY, close_body, create_body, query_directory_body, query_info_body, set_info_body
from smbring.smb import wire
from smbring.smb.commands.create import MAX_STREAMS
from test_resource_review import EchoWatch

STALL = 0.3         # the most another client's ECHO may wait, in CPU seconds of the server
FILE_DIRECTORY_FILE = 0x1
RESTART_SCANS = 0x1
FILE_NAMES_INFORMATION = 12
FILE_STREAM_INFORMATION = 22


@pytest.fixture(scope="module")
def server(servers):
    return servers()


def probe(server, action):
    """(action's result, the other client's slowest ECHO and the action's cost, in CPU seconds
    of the server)."""
    with EchoWatch(server) as watch:
        start = server.cpu_seconds()
        result = action()
        took = server.cpu_seconds() - start
    return result, watch.slowest_cpu, took


# -- QUERY_DIRECTORY: a large directory listed from the start by every request of a compound --
def big_directory(server, name: str, count: int) -> str:
    folder = server.path("rw") / name
    if not folder.exists():
        folder.mkdir()
        for i in range(count):
            os.close(os.open(folder / f"{i:06d}", os.O_CREAT | os.O_WRONLY, 0o644))
    return name


def test_compound_of_restarted_scans_of_a_large_directory(server):
    c, s = server.logon(timeout=120)
    rw = c.tree(s, "rw")
    fid = rw.open(big_directory(server, "big", 30000), wire.GENERIC_READ, wire.FILE_OPEN, FILE_DIRECTORY_FILE)
    c.grow_credits(512)
    queries = [rw.message(wire.QUERY_DIRECTORY, query_directory_body(fid, "*", FILE_NAMES_INFORMATION,
                                                                    RESTART_SCANS, 128), payload=128)
               for _ in range(128)]
    responses, slowest, took = probe(server, lambda: c.compound(queries))
    assert {r.status for r in responses} == {wire.STATUS_SUCCESS}
    assert slowest < STALL, f"slowest ECHO {slowest:.2f} s of CPU, the compound {took:.2f} s"


def test_compound_of_delete_dispositions_of_a_large_directory(server):
    """Setting a directory's delete disposition asks whether it is empty: one entry answers
    that, whatever the directory holds. Before, each request listed all its names on the
    event loop (30,000 here, 128 times in one compound)."""
    c, s = server.logon(timeout=120)
    rw = c.tree(s, "rw")
    fid = rw.open(big_directory(server, "big", 30000), wire.GENERIC_READ | wire.DELETE, wire.FILE_OPEN,
                  FILE_DIRECTORY_FILE)
    c.grow_credits(512)
    dispositions = [rw.message(wire.SET_INFO, set_info_body(fid, wire.INFO_FILE, 13, b"\x01"))
                    for _ in range(128)]
    responses, slowest, took = probe(server, lambda: c.compound(dispositions))
    assert {r.status for r in responses} == {wire.STATUS_DIRECTORY_NOT_EMPTY}
    assert slowest < STALL, f"slowest ECHO {slowest:.2f} s of CPU, the compound {took:.2f} s"
    assert rw.close(fid).status == wire.STATUS_SUCCESS
    assert len(os.listdir(server.path("rw") / "big")) == 30000


@pytest.mark.parametrize("count", [30000, 3000], ids=["indexed", "small"])
def test_compound_of_made_up_short_names_in_a_large_directory(server, count):
    """A CREATE of a name the directory holds in no spelling that could be a mangled 8.3
    name looks for the long name it stands for: 128 made-up ones in one compound (each a
    different name, so nothing is answered from the last) cost an index's map made once, in a
    directory of 30,000 names, or a read of one of 3,000 names each, not 128 hashings of every
    name. The directory's own short names still reach their files."""
    from smbring.vfs.short_names import ALPHABET, may_be_mangled, short_name
    c, s = server.logon(timeout=120)
    rw = c.tree(s, "rw")
    folder = big_directory(server, f"mangled{count}", count)
    long_one = f"a long name of a file {count}.text"
    os.close(os.open(server.path("rw") / folder / long_one, os.O_CREAT | os.O_WRONLY, 0o644))
    c.grow_credits(512)
    made_up = [f"{folder}\\ZQXWV~{ALPHABET[i // 36 % 36]}{ALPHABET[i % 36]}.TXT" for i in range(128)]
    assert all(may_be_mangled(name.rpartition("\\")[2]) for name in made_up)
    creates = [rw.message(wire.CREATE, create_body(name, wire.GENERIC_READ, wire.FILE_OPEN, 0)) for name in made_up]
    responses, slowest, took = probe(server, lambda: c.compound(creates))
    assert {r.status for r in responses} == {wire.STATUS_OBJECT_NAME_NOT_FOUND}
    assert slowest < STALL, f"slowest ECHO {slowest:.2f} s of CPU, the compound {took:.2f} s"
    fid = rw.open(f"{folder}\\{short_name(long_one)}", wire.GENERIC_READ, wire.FILE_OPEN)
    assert rw.close(fid).status == wire.STATUS_SUCCESS


# -- named streams: every stream looked at by requests on one of them -------------------------
def many_streams(server, rw, name: str, count: int) -> None:
    """`name` with `count` named streams: one made by the server, the others beside it in
    its stream directory."""
    tag = name.partition(".")[0]
    fid = rw.open(f"{name}:{tag}0", wire.GENERIC_READ | wire.GENERIC_WRITE, wire.FILE_OPEN_IF)
    rw.close(fid)
    depot = next(p.parent for p in server.path("rw").rglob(f"{tag}0") if p.parent.parent.name.startswith("."))
    for i in range(1, count):
        os.close(os.open(depot / f"{tag}{i}", os.O_CREAT | os.O_WRONLY, 0o644))


def related(m: bytearray) -> bytearray:
    struct.pack_into("<I", m, 16, struct.unpack_from("<I", m, 16)[0] | wire.FLAGS_RELATED)
    return m


def stream_creates(rw, name: str, count: int) -> list:
    """A compound of `count` CREATEs of new streams of `name`, each closed by a related CLOSE."""
    out = []
    for i in range(count):
        out.append(rw.message(wire.CREATE, create_body(f"{name}:new{i}", wire.GENERIC_READ | wire.GENERIC_WRITE,
                                                      wire.FILE_OPEN_IF, 0)))
        out.append(related(rw.message(wire.CLOSE, close_body(FID_ANY))))
    return out


def test_compound_of_stream_creates_beside_many_streams(server):
    """Each stream CREATE looked for its name, in any case, among the file's streams with a
    stat of each: 64 of them beside 20,000 streams held the loop 10 s. The names alone are
    looked through now, and no new stream is made past MAX_STREAMS."""
    c, s = server.logon(timeout=120)
    rw = c.tree(s, "rw")
    many_streams(server, rw, "crowded.bin", MAX_STREAMS)
    c.grow_credits(512)
    responses, slowest, took = probe(server, lambda: c.compound(stream_creates(rw, "crowded.bin", 64)))
    assert {r.status for r in responses} == {wire.STATUS_INSUFFICIENT_RESOURCES}, {r.status for r in responses}
    assert slowest < STALL, f"slowest ECHO {slowest:.2f} s of CPU, the compound {took:.2f} s"
    # an existing one is still reached, in any case
    rw.close(rw.open(f"crowded.bin:CROWDED{MAX_STREAMS - 1}", wire.GENERIC_READ))


def test_a_file_takes_streams_up_to_the_bound(server):
    c, s = server.logon(timeout=120)
    rw = c.tree(s, "rw")
    many_streams(server, rw, "bounded.bin", MAX_STREAMS - 1)
    rw.close(rw.open("bounded.bin:last", wire.GENERIC_WRITE, wire.FILE_CREATE))
    r = rw.create("bounded.bin:over", wire.GENERIC_WRITE, wire.FILE_CREATE)
    assert r.status == wire.STATUS_INSUFFICIENT_RESOURCES, r
    rw.close(rw.open("bounded.bin:LAST", wire.GENERIC_WRITE, wire.FILE_OPEN))


def test_compound_of_stream_queries_of_a_file_with_most_streams(server):
    c, s = server.logon(timeout=120)
    rw = c.tree(s, "rw")
    many_streams(server, rw, "queried.bin", MAX_STREAMS)
    fid = rw.open("queried.bin")
    c.grow_credits(512)
    queries = [rw.message(wire.QUERY_INFO, query_info_body(fid, wire.INFO_FILE, FILE_STREAM_INFORMATION, 65536),
                          payload=65536) for _ in range(128)]
    responses, slowest, took = probe(server, lambda: c.compound(queries))
    assert {r.status for r in responses} == {wire.STATUS_SUCCESS}, {r.status for r in responses}
    assert slowest < STALL, f"slowest ECHO {slowest:.2f} s of CPU, the compound {took:.2f} s"


# -- change notify: watches made and cancelled while many directories are watched ------------
WATCH_TREE = 0x1


def many_directories(server, name: str, count: int) -> str:
    folder = server.path("rw") / name
    if not folder.exists():
        folder.mkdir()
        for i in range(count):
            (folder / f"{i:05d}").mkdir()
    return name


def test_watches_made_and_cancelled_beside_many_watched_directories(server):
    """Each watch that came or went made the server look through every directory it watches
    in the kernel against every watched directory: with a tree of 4,000 watched recursively
    and 1,000 of its directories watched one by one, a watch made and cancelled held the loop
    for about a second. Now a change costs what changed."""
    c, s = server.logon(timeout=120)
    rw = c.tree(s, "rw")
    top = many_directories(server, "watched", 4000)
    c.grow_credits(2048)
    for i in range(1000):
        fid = rw.open(f"{top}\\{i:05d}", wire.GENERIC_READ, wire.FILE_OPEN, FILE_DIRECTORY_FILE)
        assert rw.change_notify(fid).status == wire.STATUS_PENDING
    d = rw.open(top, wire.GENERIC_READ, wire.FILE_OPEN, FILE_DIRECTORY_FILE)
    assert rw.change_notify(d, flags=WATCH_TREE).status == wire.STATUS_PENDING

    def watch_and_cancel():
        for i in range(1000, 1020):
            fid = rw.open(f"{top}\\{i:05d}", wire.GENERIC_READ, wire.FILE_OPEN, FILE_DIRECTORY_FILE)
            assert rw.change_notify(fid).status == wire.STATUS_PENDING
            assert rw.close(fid).status == wire.STATUS_SUCCESS      # the watch ends with it

    _, slowest, took = probe(server, watch_and_cancel)
    print(f"slowest ECHO {slowest:.3f} s of CPU, 20 watches made and cancelled {took:.3f} s")
    assert slowest < STALL, f"slowest ECHO {slowest:.2f} s of CPU, the watches {took:.2f} s"
    assert took < 1.0, f"20 watches made and cancelled cost {took:.2f} s of the server's CPU"
    c.close()
