"""Running a piece of a test in a thread of its own: for what must not happen in the test
runner's thread (switching that thread's credentials, say), or must run beside it. Importable
from every test directory (pytest's pythonpath includes tests/)."""
import threading


def in_thread(fn, timeout: float = 30.0):
    """fn() in a new thread, waited for; its result, or its exception raised here."""
    result = {}

    def run():
        try:
            result["value"] = fn()
        except BaseException as e:  # handed to the test
            result["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise TimeoutError(f"{fn!r} still running after {timeout} s")
    if "error" in result:
        raise result["error"]
    return result.get("value")
