"""`interfaces` with `bind interfaces only = yes`: the addresses the server binds to.

An entry is an interface name (shell wildcards allowed: ``eth*``), an address, or
address/mask (the address is bound; the mask says nothing more here). Samba's extended syntax
(``"eth0;speed=1000000000"``) is accepted, the part after ``;`` ignored. Host names are
refused: binding must not depend on name resolution."""
from __future__ import annotations

import fcntl
import os
import fnmatch
import ipaddress
import socket
import struct

SIOCGIFADDR = 0x8915


class InterfaceError(ValueError):
    pass


def interface_names() -> list[str]:
    return [name for _index, name in socket.if_nameindex()]


def ipv4_of(name: str) -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            packed = fcntl.ioctl(s.fileno(), SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
        except OSError:
            return None
    return socket.inet_ntoa(packed[20:24])


def ipv6_of(name: str) -> list[str]:
    """Global and loopback IPv6 addresses (link-local ones need a scope: left out)."""
    found = []
    try:
        with open("/proc/net/if_inet6") as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 6 and fields[5] == name:
                    ip = ipaddress.IPv6Address(bytes.fromhex(fields[0]))
                    if not ip.is_link_local:
                        found.append(str(ip))
    except OSError:
        pass
    return found


def addresses(entries: list[str]) -> list[str]:
    """The addresses to bind for the `interfaces` entries; InterfaceError for an entry that
    names nothing this machine has."""
    out: list[str] = []
    names = interface_names()
    for entry in entries:
        entry = entry.strip('"').split(";", 1)[0]
        if not entry:
            continue
        address = entry.split("/", 1)[0]
        try:
            out.append(str(ipaddress.ip_address(address)))
            continue
        except ValueError:
            pass
        matched = [n for n in names if fnmatch.fnmatchcase(n, entry)]
        if not matched:
            raise InterfaceError(f"{entry}: no such interface (host names are not looked up)")
        for name in matched:
            v4 = ipv4_of(name)
            out.extend(([v4] if v4 else []) + ipv6_of(name))
    if not out:
        raise InterfaceError("no address on the interfaces listed")
    return list(dict.fromkeys(out))


def _link(name: str) -> tuple[int, int]:
    """(bits per second, capability) of an interface from /sys/class/net: its speed (Mb/s;
    unknown for loopback and most virtual links: Samba's 1 Gb/s then) and RSS where it has
    more than one receive queue."""
    from smbring.smb.channels import RSS_CAPABLE
    speed = 1_000_000_000
    try:
        with open(f"/sys/class/net/{name}/speed") as f:
            mbits = int(f.read().strip())
        if mbits > 0:
            speed = mbits * 1_000_000
    except (OSError, ValueError):
        pass
    try:
        queues = [q for q in os.listdir(f"/sys/class/net/{name}/queues") if q.startswith("rx-")]
    except OSError:
        queues = []
    return speed, RSS_CAPABLE if len(queues) > 1 else 0


def advertised(listening: list[str]) -> list:
    """The NetworkInterfaces FSCTL_QUERY_NETWORK_INTERFACE_INFO lists for the addresses the
    server listens on: a wildcard address stands for every address of that family on the
    machine's interfaces, loopback left out (as Samba's default `interfaces`)."""
    from smbring.smb.channels import NetworkInterface
    out = []
    for index, name in socket.if_nameindex():
        v4, v6 = ipv4_of(name), ipv6_of(name)
        for address in ([v4] if v4 else []) + v6:
            ip = ipaddress.ip_address(address)
            wildcard = "0.0.0.0" if ip.version == 4 else "::"
            if address in listening or (wildcard in listening and not ip.is_loopback):
                speed, capability = _link(name)
                out.append(NetworkInterface(index=index, address=address, speed=speed,
                                            capability=capability))
    return out
