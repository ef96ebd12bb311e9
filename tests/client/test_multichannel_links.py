"""Multichannel over several network links: the client in one network namespace, the server
(`smbring serve`, Samba's smbd) in another, joined by two emulated links (veth pairs with a
rate limit, smbring.bench.netlinks). The server lists both links' addresses; the client
connects to the first and must bind its second channel over the second link: checked by the
addresses the client's channels reached, by the bytes each link's counters carried, and (on
smbring) by the peer address the server logged for the binding. A listed address that drops
every packet is passed over after the connect timeout, and the channel goes where the first
went. How channels are spread over listed addresses (AddressPlan) is checked on its own.

Needs root and `ip netns` (skipped otherwise, saying so)."""
import json
import os
import subprocess
import sys
import time

import pytest

from smbring.bench import netlinks
from smbring.bench.smbclient import smbd_global, wait_smbd_ready
from smbring.client import multichannel
from samba_servers import NO_WINBINDD
from servers import PASSWORD, USER, as_root_args, searchable_to

MiB = 1024 * 1024
PORT = 4455                 # the server namespace is the test's own: any port is free there
RATE = "500mbit"            # slow enough that a transfer is bound by the links, not the CPU

needs_links = pytest.mark.skipif(bool(netlinks.available()),
                                 reason=f"emulated links unavailable: {netlinks.available()}")

CLIENT = """
import asyncio, json, sys
import smbring.client as sc
async def main(host, port, user, password, share, channels, up, down):
    async with await sc.connect(host, int(port), user, password, share,
                                channels=int(channels), timeout=30) as c:
        await c.put(up, "big.bin")
        await c.get("big.bin", down)
        print(json.dumps({"channels": c.open_channels, "note": c.multichannel_note,
                          "addresses": [ch.address for ch in c.channels]}))
asyncio.run(main(*sys.argv[1:]))
"""


def smbd_conf(d, share, interfaces: str) -> str:
    return smbd_global(str(d), interfaces=interfaces, extra="    server multi channel support = yes\n") + f"""
[share]
    path = {share}
    read only = no
"""


@pytest.fixture
def links():
    with netlinks.Links(2, netlinks.rate_bits(RATE)) as made:
        yield made
    # nothing of them is left
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert made.client_ns not in listed and made.server_ns not in listed


def _stop(proc) -> None:
    """Stops a server and its process group (smbd's connection children; smbring's own)."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    try:
        os.killpg(proc.pid, 9)
    except (ProcessLookupError, PermissionError):
        pass


@pytest.fixture
def server_in(tmp_path, links):
    """Starts `smbring serve` or smbd inside the links' server namespace, on every link (and
    stops it before the links go: a namespace lives on while a process is in it)."""
    procs = []

    def start(kind: str) -> dict:
        share = tmp_path / "share"
        share.mkdir(exist_ok=True)
        searchable_to(share)
        log = tmp_path / f"{kind}.log"
        if kind == "smbring":
            env = dict(os.environ, SMBRING_PASSDB=str(tmp_path / "passdb"))
            cli = [sys.executable, "-m", "smbring.cli"]
            subprocess.run(cli + ["user", "add", USER, "--password-stdin"], input=PASSWORD + "\n",
                           text=True, check=True, env=env, capture_output=True)
            # on 0.0.0.0 it lists every address of its namespace but loopback: both links
            command = cli + ["serve", str(share), "--share", "share", "--listen", f"0.0.0.0:{PORT}",
                             "--log-level", "info", *as_root_args(tmp_path)]
            user = USER
        else:
            d = tmp_path / "samba"
            listed = " ".join(f'"{a};speed={links.rate},capability=RSS"' for a in links.server_addresses)
            conf = d / "smb.conf"
            conf.write_text(smbd_conf(d, share, listed))
            subprocess.run(["smbpasswd", "-c", str(conf), "-a", "-s", "root"],
                           input=f"{PASSWORD}\n{PASSWORD}\n", text=True, check=True, capture_output=True)
            command, env = ["smbd", "--foreground", "--debug-stdout", "-s", str(conf), "-p", str(PORT)], NO_WINBINDD
            user = "root"
        with open(log, "w") as out:
            # smbd makes itself a process group leader; smbring gets one of its own
            proc = subprocess.Popen(links.in_server(command), stdout=out, stderr=subprocess.STDOUT,
                                    env=env, start_new_session=kind == "smbring")
        procs.append(proc)
        links.wait_listening(PORT)
        if kind == "smbd":
            wait_smbd_ready(str(tmp_path / "samba" / "lock"))
        return {"share": share, "log": log, "user": user}
    yield start
    for proc in procs:
        _stop(proc)


def transfer(links: netlinks.Links, server: dict, tmp_path, size: int, channels: int = 2) -> dict:
    """put then get of `size` random bytes by the client in the client namespace; both byte-exact.
    Returns what the client reported, with the bytes each link carried."""
    up, down = tmp_path / "up.bin", tmp_path / "down.bin"
    up.write_bytes(os.urandom(size))
    before = links.server_bytes()
    done = subprocess.run(links.in_client([sys.executable, "-c", CLIENT, links.server_addresses[0],
                                           str(PORT), server["user"], PASSWORD, "share",
                                           str(channels), str(up), str(down)]),
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    report["carried"] = [b - a for a, b in zip(before, links.server_bytes())]
    assert (server["share"] / "big.bin").read_bytes() == up.read_bytes()
    assert down.read_bytes() == up.read_bytes()
    return report


@needs_links
@pytest.mark.parametrize("kind", ["smbring", "smbd"])
def test_the_second_channel_goes_over_the_second_link(links, server_in, tmp_path, kind):
    if kind == "smbd" and not os.path.exists("/usr/sbin/smbd"):
        pytest.skip("Samba's smbd is not installed")
    server = server_in(kind)
    size = 32 * MiB + 7
    report = transfer(links, server, tmp_path, size)
    assert report["channels"] == 2, report["note"]
    assert report["addresses"] == links.server_addresses, report
    # both links carried a real share of the put and the get (2 x size, plus headers), not a
    # logon's few kilobytes: the second channel moved data over the second link
    assert sum(report["carried"]) >= 2 * size
    assert all(carried >= 2 * size // 5 for carried in report["carried"]), report["carried"]
    if kind == "smbring":
        log = server["log"].read_text()
        # the binding came from the client's end of the second link
        assert f"from {links.client_addresses[1]}" in log, log[-2000:]


@needs_links
def test_a_listed_address_that_drops_everything_is_passed_over(links, server_in, tmp_path):
    server = server_in("smbring")
    # the second link drops every packet the client sends (a queue of no room): its SYNs go
    # unanswered. The server end's MAC address is made known beforehand, so that no ARP
    # request goes unanswered either (that would fail the connect at once: no route to host)
    peer = json.loads(subprocess.run(["ip", "-n", links.server_ns, "-j", "link", "show",
                                      links.server_devices[1]], capture_output=True, text=True,
                                     check=True).stdout)[0]["address"]
    subprocess.run(["ip", "-n", links.client_ns, "neigh", "replace", links.server_addresses[1],
                    "lladdr", peer, "dev", links.client_devices[1], "nud", "permanent"], check=True)
    subprocess.run(["tc", "-n", links.client_ns, "qdisc", "replace", "dev", links.client_devices[1],
                    "root", "pfifo", "limit", "0"], check=True, capture_output=True)
    start = time.monotonic()
    report = transfer(links, server, tmp_path, 8 * MiB + 1)
    # after a connect timeout of its own (CONNECT_TIMEOUT, not the client's 30 s for requests),
    # the second channel went where the first did
    assert multichannel.CONNECT_TIMEOUT <= time.monotonic() - start < 25
    assert report["channels"] == 2, report["note"]
    assert report["addresses"] == [links.server_addresses[0]] * 2, report
    assert report["carried"][1] < 64 * 1024            # a few unanswered SYNs at most


def test_channels_spread_over_the_listed_addresses_first():
    listed = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]
    plan = multichannel.AddressPlan(listed, "10.0.0.1")         # the first connection went to the first
    chosen = []
    for _ in range(6):
        address = plan.candidates()[0]
        plan.used(address)
        chosen.append(address)
    # one channel per address before any gets a second; the first connection's counted
    assert chosen == ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.1", "10.0.0.2", "10.0.0.3"]


def test_a_plan_passes_over_skipped_addresses_and_knows_spellings():
    plan = multichannel.AddressPlan(["2001:db8::1", "10.0.0.2", "10.0.0.3"], "2001:db8:0::1")
    assert plan.candidates() == ["10.0.0.2", "10.0.0.3", "2001:db8::1"]
    plan.skipped["10.0.0.2"] = "not reachable"
    assert plan.candidates() == ["10.0.0.3", "2001:db8::1"]
    plan.skipped["10.0.0.3"] = "another server answered there"
    plan.skipped["2001:db8::1"] = "not reachable"
    assert plan.candidates() == []                 # then the channel goes where the first went
    assert plan.first == "2001:db8:0::1"


def test_link_rates_are_read_as_tc_writes_them():
    assert netlinks.rate_bits("2gbit") == 2 * 10**9
    assert netlinks.rate_bits("500mbit") == 5 * 10**8
    assert netlinks.rate_bits("1.5gbit") == 15 * 10**8
    for bad in ("fast", "2gbps", "-1gbit", "10kbit", ""):
        with pytest.raises(ValueError):
            netlinks.rate_bits(bad)
