#!/usr/bin/env python3
"""What a wake-up costs a server at one request in flight, and why smbd's per-request
credential switch makes it cheaper on some virtual machines.

A TCP ping-pong of 72-byte messages over loopback: a server process on the first CPU, a client
on the second (a cross-CPU wake-up each way, as in `bench smallops --placement split`). Mode
`plain` answers each message; mode `creds` also calls setgroups([]) per message, as smbd does
when it becomes the connection's user for each request (needs root). Prints round trips per
second and the server's CPU per round trip, precisely (/proc/PID/schedstat, nanoseconds).

    sudo python3 scripts/idle_tick_pingpong.py plain
    sudo python3 scripts/idle_tick_pingpong.py creds

With `perf record -a -e timer:hrtimer_start` around it, the `plain` server's idle CPU stops
and restarts its scheduler tick (tick_nohz_idle_stop_tick, tick_nohz_restart) twice per round
trip; a credential change leaves RCU callbacks pending, which keeps the tick running, and where
programming the timer is a hypervisor exit that is the cheaper path.
"""
import os
import socket
import sys
import time

MESSAGE = b"x" * 72
WARMUP, ROUNDS = 2_000, 20_000


def serve(listener: socket.socket, mode: str, cpu: int) -> None:
    os.sched_setaffinity(0, {cpu})
    conn, _ = listener.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while data := conn.recv(100):
        if mode == "creds":
            os.setgroups([])
        conn.send(data)
    os._exit(0)


def on_cpu_ns(pid: int) -> int:
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


def main() -> int:
    mode = sys.argv[1] if len(sys.argv) > 1 else "plain"
    if mode not in ("plain", "creds"):
        print("usage: idle_tick_pingpong.py plain|creds", file=sys.stderr)
        return 2
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        print("needs two CPUs", file=sys.stderr)
        return 2
    listener = socket.create_server(("127.0.0.1", 0))
    pid = os.fork()
    if pid == 0:
        serve(listener, mode, cpus[0])
    os.sched_setaffinity(0, {cpus[1]})
    client = socket.create_connection(listener.getsockname())
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for _ in range(WARMUP):
        client.send(MESSAGE)
        client.recv(100)
    cpu0, t0 = on_cpu_ns(pid), time.perf_counter()
    for _ in range(ROUNDS):
        client.send(MESSAGE)
        client.recv(100)
    elapsed, cpu = time.perf_counter() - t0, on_cpu_ns(pid) - cpu0
    client.close()
    os.waitpid(pid, 0)
    print(f"{mode}: {ROUNDS / elapsed:,.0f} round trips/s, server CPU {cpu / ROUNDS / 1000:.1f} us per round trip")
    return 0


if __name__ == "__main__":
    sys.exit(main())
