"""A directory listed by two threads at once through the same open: each listing has every
name. QUERY_DIRECTORY lists off the event loop, and two scans of one handle (a compound, or
pipelined requests with RESTART_SCANS) may run at the same time; a duplicated descriptor
shares its position, so each listing's reads moved the other's, and either could come back
short or with names twice."""
import os
import threading

from smbring.vfs import extents
from smbring.vfs.posix import PosixVFS


def listed_together(tmp_path, list_once) -> list[list[str]]:
    d = tmp_path / "big"
    d.mkdir()
    expected = sorted(f"file-{i:05d}-{'x' * 40}" for i in range(4000))
    for name in expected:
        (d / name).touch()
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    results, start = [], threading.Barrier(2)

    def lister():
        start.wait()
        for _ in range(15):
            results.append(sorted(list_once(fd)))
    try:
        threads = [threading.Thread(target=lister) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        os.close(fd)
    return expected, results


def test_two_listings_of_one_open_at_once_each_have_every_name(tmp_path):
    expected, results = listed_together(tmp_path, lambda fd: extents.list_names(fd, lambda n: True))
    assert len(results) == 30 and all(r == expected for r in results)


def test_two_whole_name_lists_of_one_open_at_once_each_have_every_name(tmp_path):
    expected, results = listed_together(tmp_path, PosixVFS.names)
    assert len(results) == 30 and all(r == expected for r in results)
