"""Helpers every test directory may use."""
import threading

import pytest

# tests that start real servers and drive real clients over sockets (all run by `make test`;
# `pytest -m "not integration"` runs the rest: the core without sockets, the engine, the VFS)
INTEGRATION_DIRS = {"server", "security", "fuzz", "client"}


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
