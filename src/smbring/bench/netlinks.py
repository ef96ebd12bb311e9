"""Emulated network links for multichannel runs: two network namespaces of their own (a client
side and a server side) joined by N veth pairs, each pair a link with its own subnet
(10.77.<i>.1 on the client's end, 10.77.<i>.2 on the server's) and its own rate limit (a
token bucket, ``tc qdisc tbf``, on the sending end of both directions).

Nothing touches the machine's own namespace: its interfaces, routes and loopback stay as they
were; processes are put inside with ``ip netns exec``. Deleting the namespaces deletes the
veths with them; ``Links`` does so on leaving its ``with`` block whatever happened (an
exception, Ctrl-C, SIGTERM turned into an exception by the caller). Namespaces left behind by a
run that was killed outright (their names carry its pid, no longer alive) are removed by the
next run. The processes put inside must be stopped before: a namespace lives on, unnamed, while
a process is in it.

Needs root (CAP_NET_ADMIN) and iproute2's ``ip`` and ``tc``; ``available()`` says why not.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

PREFIX = "smbring-links-"
SUBNET = "10.77.{index}.{host}"     # /30 per link: .1 client end, .2 server end
UNITS = {"bit": 1, "kbit": 10**3, "mbit": 10**6, "gbit": 10**9, "tbit": 10**12}


def available() -> str:
    """'' where links can be made here, else why not."""
    if os.geteuid() != 0:
        return "network namespaces and veths need root (CAP_NET_ADMIN)"
    for tool in ("ip", "tc"):
        if not shutil.which(tool):
            return f"iproute2's `{tool}` is not installed"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    if probe.returncode:
        return f"`ip netns` does not work here: {probe.stderr.strip()}"
    return ""


def rate_bits(text: str) -> int:
    """'2gbit', '500mbit', '100000kbit', '1000000' (bits) -> bits per second."""
    found = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([a-z]*)", text.strip().lower())
    if not found or found.group(2) not in ("",) + tuple(UNITS):
        raise ValueError(f"link rate {text!r}: expected a number with bit, kbit, mbit or gbit")
    bits = int(float(found.group(1)) * UNITS.get(found.group(2) or "bit"))
    if bits < 10**6:
        raise ValueError(f"link rate {text!r}: at least 1mbit")
    return bits


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def remove_stale() -> None:
    """Deletes namespaces an earlier run made and left behind (its pid is gone)."""
    listing = _ip("netns", "list", check=False).stdout
    for line in listing.splitlines():
        name = line.split()[0] if line.split() else ""
        found = re.fullmatch(re.escape(PREFIX) + r"(\d+)-[0-9a-f]+-[cs]", name)
        if found and not os.path.exists(f"/proc/{found.group(1)}"):
            _ip("netns", "del", name, check=False)


class Links:
    """`count` links of `rate` bits per second each way. Use as a context manager."""

    def __init__(self, count: int, rate: int, mtu: int = 1500):
        if not 1 <= count <= 64:
            raise ValueError("links: from 1 to 64")
        self.count, self.rate, self.mtu = count, rate, mtu
        own = f"{PREFIX}{os.getpid()}-{os.urandom(3).hex()}"     # several may exist at once
        self.client_ns, self.server_ns = f"{own}-c", f"{own}-s"
        self.client_addresses = [SUBNET.format(index=i + 1, host=1) for i in range(count)]
        self.server_addresses = [SUBNET.format(index=i + 1, host=2) for i in range(count)]
        self.server_devices = [f"mls{i}" for i in range(count)]
        self.client_devices = [f"mlc{i}" for i in range(count)]

    # ---- set-up and tear-down ----

    def __enter__(self) -> "Links":
        why = available()
        if why:
            raise RuntimeError(why)
        remove_stale()
        try:
            self._make()
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def _make(self) -> None:
        for ns in (self.client_ns, self.server_ns):
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        # tbf: a burst of 4 ms at the rate, never less than a 64 KiB GSO packet (else the
        # packet would be cut up first); a queue of 20 ms before packets are dropped
        burst = max(self.rate // 8 // 250, 128 * 1024)
        for i in range(self.count):
            c, s = self.client_devices[i], self.server_devices[i]
            _ip("link", "add", c, "netns", self.client_ns, "type", "veth", "peer", "name", s,
                "netns", self.server_ns)
            for ns, dev, address in ((self.client_ns, c, self.client_addresses[i]),
                                     (self.server_ns, s, self.server_addresses[i])):
                _ip("-n", ns, "addr", "add", f"{address}/30", "dev", dev)
                _ip("-n", ns, "link", "set", dev, "mtu", str(self.mtu), "up")
                subprocess.run(["tc", "-n", ns, "qdisc", "add", "dev", dev, "root", "tbf",
                                "rate", f"{self.rate}bit", "burst", str(burst), "latency", "20ms"],
                               capture_output=True, text=True, check=True)

    def remove(self) -> None:
        """Deletes both namespaces (and so every veth); what is already gone is fine."""
        for ns in (self.client_ns, self.server_ns):
            _ip("netns", "del", ns, check=False)

    # ---- use ----

    def in_client(self, command: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.client_ns, *command]

    def in_server(self, command: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.server_ns, *command]

    def wait_listening(self, port: int, timeout: float = 15.0) -> None:
        """Waits until something in the server namespace accepts on the first link's address
        and `port`, tried from the client namespace (as the clients will)."""
        probe = ("import socket, sys, time\n"
                 "deadline = time.monotonic() + float(sys.argv[3])\n"
                 "while time.monotonic() < deadline:\n"
                 "    with socket.socket() as s:\n"
                 "        s.settimeout(1)\n"
                 "        if s.connect_ex((sys.argv[1], int(sys.argv[2]))) == 0:\n"
                 "            sys.exit(0)\n"
                 "    time.sleep(0.1)\n"
                 "sys.exit(1)\n")
        done = subprocess.run(self.in_client([sys.executable, "-c", probe, self.server_addresses[0],
                                              str(port), str(timeout)]))
        if done.returncode:
            raise RuntimeError(f"nothing listens on {self.server_addresses[0]}:{port}")

    def server_bytes(self) -> list[int]:
        """Bytes each link has carried so far, both ways (from the server ends' counters)."""
        out = _ip("-n", self.server_ns, "-j", "-s", "link", "show").stdout
        by_name = {link["ifname"]: link for link in json.loads(out)}
        counts = []
        for dev in self.server_devices:
            stats = by_name[dev]["stats64"]
            counts.append(stats["rx"]["bytes"] + stats["tx"]["bytes"])
        return counts
