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
    assert bench.CASES_OF["smbclient-sync"] == ("get",)
