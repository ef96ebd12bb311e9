"""Helpers every test directory may use."""
import os
import shutil
import tempfile
import threading

import pytest

# tests that start real servers and drive real clients over sockets (all run by `make test`;
# `pytest -m "not integration"` runs the rest: the core without sockets, the engine, the VFS)
INTEGRATION_DIRS = {"server", "security", "fuzz", "client"}


_OWN_BASETEMP = pytest.StashKey[str]()


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    """A run as root keeps its temporary directories under one of its own (0711: passable for
    the test accounts, not listable), not under /tmp/pytest-of-root: pytest puts that shared
    directory back to 0700 whenever another run starts, and the shares the tests serve to
    Unix accounts below it would then become unreachable to them in the middle of a test."""
    if os.geteuid() == 0 and not config.option.basetemp and not hasattr(config, "workerinput"):
        base = tempfile.mkdtemp(prefix="smbring-pytest-")
        os.chmod(base, 0o711)
        config.option.basetemp = os.path.join(base, "t")
        config.stash[_OWN_BASETEMP] = base


def pytest_sessionfinish(session, exitstatus):
    """The run's own directory goes when every test passed; after a failure it stays for
    looking into (its path is printed)."""
    base = session.config.stash.get(_OWN_BASETEMP, None)
    if base is None:
        return
    if exitstatus == 0:
        shutil.rmtree(base, ignore_errors=True)
    else:
        print(f"\ntest files kept in {base}")


@pytest.fixture(autouse=True)
def _working_directory_kept():
    """Each test ends in the working directory it began in: a passing test's tmp_path is
    removed at its end (tmp_path_retention_policy), and a later test's clients started from
    inside it would find no working directory."""
    before = os.getcwd()
    yield
    try:
        now = os.getcwd()
    except FileNotFoundError:       # (removed already: it was the test's tmp_path)
        now = None
    if now != before:
        os.chdir(before)


def pytest_collection_modifyitems(items):
    for item in items:
        if INTEGRATION_DIRS & set(item.path.parent.parts[-1:]):
            item.add_marker(pytest.mark.integration)


def _promptly(fn, seconds: float = 2.0):
    """fn() run in a daemon thread: what it returned or the exception it raised, or "hung" if it
    is still running after `seconds` (so a call that blocks fails its test instead of hanging
    the run)."""
    outcome = {}

    def run():
        try:
            outcome["value"] = fn()
        except BaseException as e:      # noqa: B036 - handed back to the test
            outcome["error"] = e
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    return "hung" if thread.is_alive() else outcome.get("error", outcome.get("value"))


@pytest.fixture
def promptly():
    return _promptly
