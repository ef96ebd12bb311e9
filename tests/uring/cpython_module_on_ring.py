"""One of CPython's asyncio test modules run whole on ring loops, in a process of its own:

    python cpython_module_on_ring.py test_tasks

The event loop policy's loops are smbring.uring.loop.RingEventLoop; the module's tests are
CPython's, unchanged. unittest's report (one line a test, then every failure) goes to stderr;
the last line of stdout is a JSON summary: tests run, whether all passed, those that did
not, the reasons of the tests skipped, how many ring loops were made.

tests/uring/test_loop_cpython.py runs each module this way rather than inside pytest's
process: nothing a module does to its process (exits, signal handlers, threads, children,
descriptors, garbage left for the collector) reaches the test run, and the module's own
speed does not depend on what ran before it in the same process. A test still running after
PER_TEST seconds ends this process with every thread's stack on stderr: a wake-up the loop
loses fails the module, with the place, instead of hanging the run.
"""
import asyncio
import faulthandler
import importlib
import json
import sys
import unittest

from smbring.uring.loop import RingEventLoopPolicy

PER_TEST = 60       # seconds; CPython's slowest asyncio test takes a few


class CountingRingPolicy(RingEventLoopPolicy):
    """The ring loop policy, counting the loops it makes (a module that made none did not run
    on the ring)."""

    def __init__(self):
        super().__init__()
        self.made = 0

    def new_event_loop(self):
        self.made += 1
        return super().new_event_loop()


class HangGuardedResult(unittest.TextTestResult):
    def startTest(self, test):
        faulthandler.dump_traceback_later(PER_TEST, exit=True)
        super().startTest(test)

    def stopTest(self, test):
        super().stopTest(test)
        faulthandler.cancel_dump_traceback_later()


def main(name: str) -> int:
    policy = CountingRingPolicy()
    asyncio.set_event_loop_policy(policy)
    module = importlib.import_module(f"test.test_asyncio.{name}")
    suite = unittest.defaultTestLoader.loadTestsFromModule(module)
    result = unittest.TextTestRunner(stream=sys.stderr, verbosity=2, resultclass=HangGuardedResult).run(suite)
    sys.stderr.flush()
    failed = [test.id() for test, _ in result.failures + result.errors + result.unexpectedSuccesses]
    print(json.dumps({"run": result.testsRun, "passed": result.wasSuccessful(), "failed": failed,
                      "skipped": sorted({why for _, why in result.skipped}), "ring_loops": policy.made}),
          flush=True)
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
