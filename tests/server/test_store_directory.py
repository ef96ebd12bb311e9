"""The shared store's directory (serve --workers): a server starting removes the stores of
servers that are gone, never the store of one that runs, even one that is starting at the
same moment."""
import os
import threading

from smbring.server import workers


def test_a_store_being_made_is_never_taken_for_a_dead_servers(tmp_path):
    """Two starts racing, many times: each store another start removes must be one whose
    owner let go of it. Without the store's lock being taken before it is visible as a
    store, a start now and then removed a store its owner had just made."""
    control = str(tmp_path / "run" / "control")
    made, done = [], threading.Event()

    def other_server():
        while not done.is_set():
            made.append(workers.store_directory(control))

    thread = threading.Thread(target=other_server)
    thread.start()
    try:
        for _ in range(500):
            made.append(workers.store_directory(control))
    finally:
        done.set()
        thread.join()
    lost = [path for path, _fd in made if not os.path.isdir(path)]
    assert lost == [], f"{len(lost)} of {len(made)} stores removed while their owner held them"
    for _path, fd in made:
        os.close(fd)
    # once their owners are gone, the next start removes them all
    path, fd = workers.store_directory(control)
    assert [n for n in os.listdir(tmp_path / "run") if "store-" in n] == [os.path.basename(path)]
    os.close(fd)
