"""The client command's start-up stays lean: `smbring get|put|ls` load no module they do not
use. Every run pays for what it imports before its first request (a 2 GiB transfer's fixed
CPU), and the modules below were made lazy on purpose; an eager import slipping back in
would go unnoticed without this test. Each check runs the installed entry point's code in a
fresh interpreter, as a user's run does."""
import subprocess
import sys

import pytest

COMMANDS = ("get", "put", "ls")

# Never loaded by a client run's start-up: used by other commands, only on request (--json,
# --kerberos, a password prompt, --version, a download's aligned buffers, --channels), or
# only by the server's layers.
MUST_NOT_LOAD = (
    "shutil", "secrets", "json", "datetime", "getpass", "termios", "ctypes", "platform",
    "importlib.metadata", "email", "zipfile", "tempfile", "random", "bz2", "lzma",
    "urllib.request", "pwd", "grp",
    "spnego",                                   # pyspnego: only for --kerberos
    "smbring.client.multichannel",              # only for --channels N > 1
    "smbring.client.progress",                  # only when stderr is a terminal
)

# smbring's own modules a client run may load: anything else (the server, the VFS, the ring,
# the event engine, the bench, the server's protocol state machine) is a regression. A module
# the client truly comes to need is added here on purpose.
SMBRING_ALLOWED = {
    "smbring", "smbring._wire", "smbring.cli",
    "smbring.client", "smbring.client.buffers", "smbring.client.channel", "smbring.client.cli",
    "smbring.client.errors", "smbring.client.files", "smbring.client.limits",
    "smbring.client.logon", "smbring.client.messages", "smbring.client.progress", "smbring.client.session",
    "smbring.client.transfer",
    "smbring.smb", "smbring.smb.credits", "smbring.smb.md4", "smbring.smb.ntlm_crypto",
    "smbring.smb.ntlm_initiator", "smbring.smb.ntlmssp", "smbring.smb.security",
    "smbring.smb.spnego", "smbring.smb.wire",
}

MARKER = "--- modules ---"

# The entry point (smbring = smbring.cli:main) up to the point where the command would
# connect: its parser is built (its layer imported), then --help ends the run.
PROBE = f"""
import sys
import smbring.cli
try:
    smbring.cli.main([sys.argv[1], "--help"])
except SystemExit:
    pass
print({MARKER!r})
print("\\n".join(sorted(sys.modules)))
"""


def loaded_modules(command: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", PROBE, command], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    assert MARKER in out, out
    return set(out.split(MARKER, 1)[1].split())


@pytest.mark.parametrize("command", COMMANDS)
def test_start_up_loads_no_module_the_command_does_not_use(command):
    modules = loaded_modules(command)
    assert "smbring.client.cli" in modules, "the probe did not reach the client's layer"
    assert sorted(set(MUST_NOT_LOAD) & modules) == []
    assert sorted(m for m in modules if m.startswith("smbring") and m not in SMBRING_ALLOWED) == []


def test_the_probe_sees_an_eager_import():
    """The check can fail: a run that imports one of the lazy modules is seen as such."""
    probe = PROBE.replace("import smbring.cli\n", "import smbring.cli\nimport json\n")
    out = subprocess.run([sys.executable, "-c", probe, "get"], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    assert "json" in out.split(MARKER, 1)[1].split()


@pytest.mark.parametrize("command", ("get", "put", "ls", "mkdir", "rm", "mv"))
def test_a_run_builds_only_its_own_command_parser(command):
    from smbring.cli import build_parser
    parser = build_parser(command)
    extra = ["x"] if command in ("put", "mv") else []
    assert parser.parse_args([command, "smb://u@h/s/p"] + extra).func
    other = "ls" if command != "ls" else "get"
    with pytest.raises(SystemExit):         # argparse: invalid choice (not built)
        parser.parse_args([other, "smb://u@h/s/p"])


def test_all_commands_are_listed_without_one_asked_for():
    from smbring.cli import SUBCOMMANDS, build_parser
    parser = build_parser()
    for command in ("get", "put", "ls", "mkdir", "rm", "mv"):
        assert command in SUBCOMMANDS
        extra = ["x"] if command in ("put", "mv") else []
        assert parser.parse_args([command, "smb://u@h/s/p"] + extra).command == command


def test_the_client_records_are_not_dataclasses():
    """Each dataclass compiles its methods at import time; the client's internal records are
    plain classes (the public DirEntry, RemoteStat stay dataclasses)."""
    import dataclasses
    from smbring.client import buffers, channel, cli, messages
    from smbring.smb import ntlm_initiator
    for cls in (channel.Response, channel._Pending, buffers.FileRange, buffers.FileTarget,
                buffers.Spliced, messages.NegotiateResponse, messages.CreateResponse, cli.Target,
                channel.SessionKeys, messages.NetworkInterface, ntlm_initiator.Challenge,
                ntlm_initiator.Authenticated):
        assert not dataclasses.is_dataclass(cls), cls
    assert dataclasses.is_dataclass(messages.DirEntry) and dataclasses.is_dataclass(messages.RemoteStat)
    assert buffers.FileRange(3, 4, 5) == buffers.FileRange(3, 4, 5) != buffers.FileRange(3, 4, 6)
    assert cli.parse_url("smb://d;u@h:4445/s/a/b") == cli.Target("h", 4445, "u", "d", "s", "a/b")
    assert messages.NetworkInterface(1, "a", 2, 3) == messages.NetworkInterface(1, "a", 2, 3) != \
        messages.NetworkInterface(1, "a", 2, 4)
    keys = channel.SessionKeys(session_id=5, signing_key=b"k", sign=True)
    moved = keys.replace(signing_key=b"c")
    assert (moved.session_id, moved.signing_key, moved.sign, keys.signing_key) == (5, b"c", True, b"k")
    with pytest.raises(TypeError):
        keys.replace(no_such_field=1)
