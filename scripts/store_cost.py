"""What a shared state store would cost per open: the share-mode record of a file, updated
in LMDB by N processes as N workers would (one write transaction to add an open, one to
remove it), on /dev/shm, without fsync (the state is volatile, as Samba's locking.tdb).

    python3 -m venv /tmp/v && /tmp/v/bin/pip install lmdb && /tmp/v/bin/python scripts/store_cost.py

Prints opens + closes per second and the CPU each pair costs, for 1 process on one file, 2
processes on one file (every transaction contends) and 2 processes on 1,000 files."""
import multiprocessing
import os
import shutil
import struct
import time

import lmdb

PATH = f"/dev/shm/smbring-store-cost-{os.getpid()}"
ENTRY = struct.Struct("<QQIIQ")        # owner (worker, open id), access, share mode, lease key hash


def worker(count: int, worker_id: int, inodes: list[int], results) -> None:
    env = lmdb.open(PATH, map_size=1 << 30, sync=False, metasync=False, max_dbs=2)
    share_modes = env.open_db(b"share_modes")
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(count):
        key = struct.pack("<QQ", 2049, inodes[i % len(inodes)])      # (st_dev, st_ino)
        mine = ENTRY.pack(worker_id, i, 0x12019F, 7, 0)
        with env.begin(write=True, db=share_modes) as txn:            # CREATE: check and add
            txn.put(key, (txn.get(key) or b"") + mine)
        with env.begin(write=True, db=share_modes) as txn:            # CLOSE: remove
            held = txn.get(key) or b""
            at = held.find(mine)
            rest = held[:at] + held[at + ENTRY.size:]
            txn.put(key, rest) if rest else txn.delete(key)
    results.put((time.perf_counter() - wall, time.process_time() - cpu))


def main(count: int = 50_000) -> None:
    for processes, inodes in ((1, [1]), (2, [1]), (2, list(range(1000)))):
        shutil.rmtree(PATH, ignore_errors=True)
        results = multiprocessing.Queue()
        procs = [multiprocessing.Process(target=worker, args=(count, w, inodes, results))
                 for w in range(processes)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        runs = [results.get() for _ in procs]
        wall, cpu = max(r[0] for r in runs), sum(r[1] for r in runs)
        print(f"{processes} process(es), {len(inodes)} file(s): {count * processes / wall:,.0f} "
              f"open+close/s, {cpu / (count * processes) * 1e6:.1f} us CPU per open+close")
    shutil.rmtree(PATH, ignore_errors=True)


if __name__ == "__main__":
    main()
