"""Calls a test makes that may wait (a CREATE held for an oplock or lease break): run in a
thread, their outcome or NTSTATUS kept."""
import threading
import time

from smbprotocol.exceptions import SMBResponseException


def status_of(call) -> int:
    try:
        call()
    except SMBResponseException as e:
        return e.status
    return 0


class Background:
    """A call (a CREATE that waits for a break) in a thread."""

    def __init__(self, call):
        self.result = self.error = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(call,), daemon=True)
        self.started = time.monotonic()
        self.thread.start()

    def _run(self, call):
        try:
            self.result = call()
        except Exception as e:      # the test looks at it
            self.error = e
        finally:
            self.elapsed = time.monotonic() - self.started
            self.done.set()

    def wait(self, timeout: float = 10.0):
        assert self.done.wait(timeout), "the request was not answered"
        if self.error is not None:
            raise self.error
        return self.result
