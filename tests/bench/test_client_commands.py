"""`smbring bench client`: the commands each client is run with."""
import os
import subprocess

import pytest

from smbring.bench import client as bench

# stand-ins: smbclient records its arguments in the file its get names (and fails when asked
# to); sync records the files it was given beside them
FAKE_SMBCLIENT = """#!/bin/sh
for last; do :; done
case "$last" in get*) echo "$@" > "${last#get bigfile }" ;; esac
exit "${FAKE_STATUS:-0}"
"""
FAKE_SYNC = """#!/bin/sh
for last; do :; done
echo "$last" >> "$last.synced"
"""


@pytest.fixture
def fake_smbclient(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("smbclient", FAKE_SMBCLIENT), ("sync", FAKE_SYNC)):
        script = bin_dir / name
        script.write_text(text)
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return tmp_path


def test_smbclient_sync_get_runs_smbclient_then_syncs_the_download(fake_smbclient):
    local = str(fake_smbclient / "download")
    command = bench._command("smbclient-sync", "127.0.0.1", 445, "get", local, 1)
    subprocess.run(command, check=True)
    assert "get bigfile" in open(local).read()       # smbclient ran, to this file
    assert open(local + ".synced").read() == local + "\n"     # and then the file was synced


def test_smbclient_sync_get_fails_as_smbclient_does(fake_smbclient):
    local = str(fake_smbclient / "download")
    command = bench._command("smbclient-sync", "127.0.0.1", 445, "get", local, 1)
    env = dict(os.environ, FAKE_STATUS="3")
    assert subprocess.run(command, env=env).returncode == 3
    assert not os.path.exists(local + ".synced")


def test_plain_smbclient_is_not_synced():
    for case in ("get", "put"):
        command = bench._command("smbclient", "127.0.0.1", 445, case, "/tmp/x", 1)
        assert command[0] == "smbclient"
    assert bench.CASES_OF["smbclient-sync"] == ("get", "tree-get")


def test_tree_cases_run_smbclient_recursively_and_sync_its_tree():
    get = bench._command("smbclient", "127.0.0.1", 445, "tree-get", "/tmp/dl", 1)
    assert get[-1] == "lcd /tmp/dl; prompt off; recurse on; mget tree"
    put = bench._command("smbclient", "127.0.0.1", 445, "tree-put", "/tmp/src", 1)
    assert put[-1].startswith("mkdir upload-tree-smbclient; cd upload-tree-smbclient; lcd /tmp/src;")
    assert put[-1].endswith("recurse on; mput *")
    synced = bench._command("smbclient-sync", "127.0.0.1", 445, "tree-get", "/tmp/dl", 1)
    assert synced[:3] == ["sh", "-c", '"$@" && sync -f -- "$0"'] and synced[3] == "/tmp/dl"
    assert "smbprotocol" not in [c for c, cases in bench.CASES_OF.items() if "tree-get" in cases]


def test_a_tree_is_prepared_once_and_compared_whole(tmp_path):
    share = tmp_path / "share"
    share.mkdir()
    source = bench.prepare_tree(str(tmp_path), str(share), 5, 1)
    assert sorted(os.listdir(source)) == [f"f{i:05d}" for i in range(5)]
    assert bench._same_tree(source, str(share / "tree"))
    (share / "tree" / "f00003").write_bytes(b"changed")
    assert not bench._same_tree(source, str(share / "tree"))
    assert bench.prepare_tree(str(tmp_path), str(share), 5, 1) == source    # kept: not made again
    assert (share / "tree" / "f00003").read_bytes() == b"changed"
    bench.prepare_tree(str(tmp_path), str(share), 6, 1)                     # another shape: made again
    assert bench._same_tree(source, str(share / "tree")) and len(os.listdir(source)) == 6
