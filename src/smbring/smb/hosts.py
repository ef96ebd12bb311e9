"""`hosts allow` and `hosts deny` as Samba reads and applies them (lib/util/access.c).

A list holds addresses (``10.1.2.3``, ``::1``), networks (``10.0.0.0/8``,
``10.0.0.0/255.0.0.0``, ``fe80::/64``), address prefixes ending in a dot (``150.203.``),
wildcards over addresses (``192.168.1.*``), ``ALL``, ``LOCAL`` and ``EXCEPT``. Samba matches
the client's address, and its name only with ``hostname lookups = yes``; smbring never looks
names up, so a list naming hosts (``myhost``, ``.example.com``) or NIS netgroups (``@group``)
is refused when the configuration is read (`parse_list` raises HostsError), not ignored.

Pure functions: no I/O, no state.
"""
from __future__ import annotations

import fnmatch
import ipaddress
import re

_SEPARATORS = re.compile(r"[\s,]+")
_PREFIX = re.compile(r"[0-9]+(\.[0-9]+)*\.")           # 150.203.
_WILDCARD = re.compile(r"[0-9a-fA-F.:*?]+")             # 192.168.*.1, fe80::*
_LOOPBACK = {"127.0.0.1", "::1"}


class HostsError(ValueError):
    pass


def parse_list(text: str) -> tuple[str, ...]:
    """The tokens of a hosts list, each checked; HostsError names the first that smbring cannot
    match without looking names up."""
    tokens = tuple(t for t in _SEPARATORS.split(text.strip()) if t)
    for token in tokens:
        _check(token)
    return tokens


def _check(token: str) -> None:
    upper = token.upper()
    if upper in ("ALL", "EXCEPT", "LOCAL"):
        return
    if upper == "FAIL":
        raise HostsError("FAIL is not supported")
    if token.startswith("@") or token.startswith("&"):
        raise HostsError(f"{token}: NIS netgroups are not supported")
    if token.startswith("."):
        raise HostsError(f"{token}: domain names need hostname lookups, which smbring does not "
                         "make; give addresses or networks")
    if _PREFIX.fullmatch(token):
        return
    if "/" in token:
        try:
            ipaddress.ip_network(token, strict=False)
            return
        except ValueError:
            raise HostsError(f"{token}: not a network (address/bits or address/netmask)") from None
    if "*" in token or "?" in token:
        if _WILDCARD.fullmatch(token):
            return
        raise HostsError(f"{token}: wildcards over host names need hostname lookups, which "
                         "smbring does not make")
    try:
        ipaddress.ip_address(token)
    except ValueError:
        raise HostsError(f"{token}: host names need hostname lookups, which smbring does not "
                         "make; give addresses or networks") from None


def _token_matches(token: str, address: str) -> bool:
    """Samba's string_match with hostname lookups off: the client's name is its address."""
    upper = token.upper()
    if upper == "ALL":
        return True
    if upper == "LOCAL":
        return "." not in address
    if token.endswith("."):
        return address.startswith(token)
    if "/" in token:
        try:
            return ipaddress.ip_address(address) in ipaddress.ip_network(token, strict=False)
        except (ValueError, TypeError):
            return False
    if "*" in token or "?" in token:
        return fnmatch.fnmatchcase(address.lower(), token.lower().replace("[", "[[]"))
    try:
        return ipaddress.ip_address(token) == ipaddress.ip_address(address)
    except ValueError:
        return False


def _client_matches(token: str, address: str) -> bool:
    """An IPv4 client reached over an IPv6 socket (::ffff:a.b.c.d) matches as either form."""
    if _token_matches(token, address):
        return True
    mapped = _ipv4_of(address)
    return mapped is not None and _token_matches(token, mapped)


def _ipv4_of(address: str) -> str | None:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return None


def list_match(tokens, address: str) -> bool:
    """Samba's list_match: the first token that matches decides, unless a token after EXCEPT
    matches too."""
    tokens = list(tokens)
    for i, token in enumerate(tokens):
        if token.upper() == "EXCEPT":
            return False
        if _client_matches(token, address):
            rest = tokens[i + 1:]
            while rest and rest[0].upper() != "EXCEPT":
                rest.pop(0)
            return not any(_client_matches(t, address) for t in rest[1:])
    return False


def allowed(allow, deny, address: str) -> bool:
    """Whether a client address passes `hosts allow` and `hosts deny` (Samba's allow_access):
    with only an allow list, it must match it; with only a deny list, it must not match it;
    with both, a match in the allow list wins. The loopback address is admitted unless the
    deny list names it and the allow list does not."""
    for form in (address, _ipv4_of(address)):
        if form in _LOOPBACK:
            return not (deny and list_match(deny, address) and not (allow and list_match(allow, address)))
    if not deny and not allow:
        return True
    if not deny:
        return list_match(allow, address)
    if not allow:
        return not list_match(deny, address)
    if list_match(allow, address):
        return True
    return not list_match(deny, address)
