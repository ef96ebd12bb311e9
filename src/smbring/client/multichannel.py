"""Multichannel (MS-SMB2 3.2.4.1.1, 3.2.5.3.1): further connections bound to a session.

After the first connection has logged on and connected its share, the client asks the server
where else it can be reached (FSCTL_QUERY_NETWORK_INTERFACE_INFO, asked and answered under
the session's signature, so that the addresses come from the server that holds the key), opens
further connections spread over the listed addresses (one per address before any gets a second:
channels are there to add up links; an address that does not answer, or where another server
answers, is passed over; AddressPlan), NEGOTIATEs there the same dialect, cipher and signing
algorithm with the same ClientGuid, checks that the same server (ServerGuid) answered, and
binds it: a SESSION_SETUP with SMB2_SESSION_FLAG_BINDING, signed with the session's signing
key, carrying a new NTLMv2 logon as the same user. The final response must be signed with the
channel's own signing key (derived from that logon's session key and, on SMB 3.1.1, from that
connection's own preauthentication hash). The tree and the opens are the session's: every
channel reaches them.

A channel lost later (its connection closed, reset or silent: never one whose answer was
refused as broken) is opened again the same way: a new connection to the address it had, bound
to the session, after a short pause, up to REOPEN_ATTEMPTS times with the pause doubling each
time (Client._channel_lost). A transfer that lost a channel thus gets back to N channels.

A server that does not offer multichannel (no CAP_MULTI_CHANNEL, SMB 2.x, a guest session, no
interface list) or refuses a binding leaves the client with the channels it has, and
``Client.multichannel_note`` says why. So does an answer that fails its checks there (a bad
signature on the binding, another dialect or algorithm than the session's): that connection is
closed before it carries anything, nothing more is bound (someone in between is suspected),
and the session goes on over the channels it has.
"""
from __future__ import annotations

import asyncio
import ipaddress

from smbring.smb import security, wire
from smbring.client import messages as m
from smbring.client.channel import Channel, SessionKeys, is_loopback
from smbring.client.errors import ProtocolError, SMBError
from smbring.client.logon import logon_context, step
from smbring.client.session import Client, Negotiated, negotiate, validate_negotiate

MAX_CHANNELS = 32         # connections per session the client opens at most (smbd allows 32)
REOPEN_ATTEMPTS = 4       # tries to reopen one lost channel ...
REOPEN_PAUSE = 0.1        # ... the first after this many seconds, each later one after twice the last
CONNECT_TIMEOUT = 5.0     # seconds a listed address has to accept before the next one is tried
# listed addresses dialled at most (the fastest): a list of 256 that never answer would
# otherwise hold the connect up for 256 x CONNECT_TIMEOUT, over 20 minutes
MAX_ADDRESSES = 8


class BindingRefused(Exception):
    """This connection cannot join the session (the server said no, or offers something else)."""


class OtherServer(BindingRefused):
    """Another server (another ServerGuid) answered at a listed address: the next is tried."""


async def add_channels(client: Client, neg: Negotiated, count: int, user: str, password: str,
                       domain: str, dialects, ciphers, sign: bool, encrypt: bool) -> None:
    """Binds up to `count` more connections to the client's session; fewer (with the reason
    in client.multichannel_note) where the server does not offer it."""
    count = min(count, MAX_CHANNELS - 1)
    why = _why_not(client, neg)
    if why:
        client.multichannel_note = why
        return
    try:
        r = await client.request(wire.IOCTL, m.query_interfaces_request(), sign=True,
                                 what="QUERY_NETWORK_INTERFACE_INFO")
    except SMBError as e:
        client.multichannel_note = f"the server lists no network interfaces ({e})"
        return
    addresses = usable_addresses(m.parse_interfaces(r.message),
                                 from_loopback=is_loopback(client.channels[0].address))
    if not addresses:
        client.multichannel_note = "the server lists no address this client can use"
        return
    plan = AddressPlan(addresses, client.channels[0].address or client.host)
    for i in range(count):
        try:
            channel = await _open_and_bind(client, plan, neg, user, password, domain, ciphers, sign)
        except (SMBError, BindingRefused) as e:
            client.multichannel_note = f"channel {i + 2} not bound: {e}"
            return
        except ProtocolError as e:
            # an answer on that connection failed its checks (a bad or missing signature on
            # the binding, another dialect, algorithm or preauthentication hash): someone in
            # between on the way there, or a server that lies there. That connection was
            # closed unused; nothing more is bound, and the session goes on over the
            # channels it has, whose answers are verified with their own keys
            client.multichannel_note = f"channel {i + 2} refused: {e}"
            return
        except (OSError, ConnectionError) as e:
            client.multichannel_note = f"channel {i + 2} not connected: {e}"
            return
        client.add_channel(channel)
    # from now on a lost channel is bound again (the credentials stay with the binder)
    client.rebinder = Rebinder(client, neg, user, password, domain, ciphers, sign)


class Rebinder:
    """Opens a connection again and binds it to the client's session, as add_channels did."""

    def __init__(self, client: Client, neg: Negotiated, user: str, password: str, domain: str,
                 ciphers, sign: bool):
        self._client, self._neg = client, neg
        self._user, self._password, self._domain = user, password, domain
        self._ciphers, self._sign = ciphers, sign
        self.attempts, self.pause = REOPEN_ATTEMPTS, REOPEN_PAUSE

    async def bind(self, address: str) -> Channel:
        """A new channel to `address`, bound; raises what connecting or binding raised."""
        client = self._client
        channel = await Channel.open(address or client.host, client.port,
                                     timeout=client.channels[0].timeout)
        try:
            await _bind(client, self._neg, channel, self._user, self._password, self._domain,
                        self._ciphers, self._sign)
        except BaseException:
            await channel.close()
            raise
        return channel


def _why_not(client: Client, neg: Negotiated) -> str:
    if client.dialect < wire.SMB300:
        return f"dialect {client.dialect:#x} has no multichannel (SMB 3.0 and later)"
    if not neg.response.capabilities & wire.CAP_MULTI_CHANNEL:
        return "the server does not offer multichannel (no CAP_MULTI_CHANNEL)"
    if client.guest or not client.keys.signing_key:
        return "a guest session has no key to bind channels with"
    return ""


def usable_addresses(interfaces: list[m.NetworkInterface], from_loopback: bool = True) -> list[str]:
    """The listed addresses worth a connection, fastest first (RSS-capable first among equals),
    each once (in one spelling: an IPv4-mapped IPv6 address as the IPv4 one), at most
    MAX_ADDRESSES: never an unspecified, multicast or link-local address
    (the last needs a scope the server cannot give), and a loopback address only when the
    first connection went to one (`from_loopback`): a server elsewhere is not reached through
    this host's own loopback, where other services of this host listen."""
    ranked = sorted(interfaces, key=lambda i: (-i.speed, not i.capability & m.RSS_CAPABLE))
    out: list[str] = []
    for iface in ranked:
        ip = ipaddress.ip_address(iface.address)
        if not _dialable(ip) or (not from_loopback and is_loopback(iface.address)):
            continue
        # one spelling per address (an IPv4 address listed again as IPv4-mapped IPv6 is the
        # same one), so that channels spread over addresses that really differ
        address = str(ip.ipv4_mapped or ip) if ip.version == 6 else str(ip)
        if address not in out:
            out.append(address)
            if len(out) == MAX_ADDRESSES:
                break
    return out


def _dialable(ip) -> bool:
    """Not unspecified (0.0.0.0/8 "this network", ::: a connection there reaches this host),
    multicast, link-local, or IPv4's reserved 240/4 (the broadcast address among them); an
    IPv4 address written as IPv6 (::ffff:a.b.c.d), which the checks of IPv6 would let
    through, is judged as the IPv4 address it is."""
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.version == 4 and (ip.packed[0] == 0 or ip.is_reserved):
        return False
    return not (ip.is_unspecified or ip.is_multicast or ip.is_link_local)


class AddressPlan:
    """Where the next channel goes. Channels are for aggregating links: each goes to the listed
    address that carries the fewest channels so far (the first connection's counted), the
    fastest listed first among equals, so that N channels over N addresses use one each. An
    address that does not accept a connection within CONNECT_TIMEOUT, or where another server
    answers, is not tried again; with none left, the channel goes where the first connection
    went (the same server, by then checked)."""

    def __init__(self, listed: list[str], first: str):
        self.first = first
        self.load = {_canonical(a): 0 for a in listed}       # listed order: fastest first
        if _canonical(first) in self.load:
            self.load[_canonical(first)] += 1
        self.skipped: dict[str, str] = {}                    # address -> why it is not used

    def candidates(self) -> list[str]:
        live = [a for a in self.load if a not in self.skipped]
        return sorted(live, key=lambda a: self.load[a])       # stable: listed order among equals

    def used(self, address: str) -> None:
        address = _canonical(address)
        self.load[address] = self.load.get(address, 0) + 1


def _canonical(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return address


async def _open_and_bind(client: Client, plan: AddressPlan, neg: Negotiated, user: str,
                         password: str, domain: str, ciphers, sign: bool) -> Channel:
    """A new channel bound to the session, to the plan's best address that takes it."""
    timeout = client.channels[0].timeout
    tries = [(address, False) for address in plan.candidates()] + [(plan.first, True)]
    for address, last_resort in tries:
        try:
            channel = await asyncio.wait_for(Channel.open(address, client.port, timeout=timeout),
                                             min(timeout, CONNECT_TIMEOUT))
        except (OSError, asyncio.TimeoutError) as e:
            if last_resort:
                raise
            plan.skipped[_canonical(address)] = f"not reachable ({e or type(e).__name__})"
            continue
        try:
            await _bind(client, neg, channel, user, password, domain, ciphers, sign)
        except OtherServer as e:
            await channel.close()
            if last_resort:
                raise
            plan.skipped[_canonical(address)] = str(e)
            continue
        except BaseException:
            await channel.close()
            raise
        plan.used(address)
        return channel
    raise AssertionError("unreachable: the first address ends the loop")


async def _bind(client: Client, first: Negotiated, channel: Channel, user: str, password: str,
                domain: str, ciphers, sign: bool) -> None:
    keys = client.keys
    own = await negotiate(channel, (client.dialect,), (keys.cipher,) if keys.cipher else tuple(ciphers),
                          sign, False, client.guid, client.io_size, multichannel=True,
                          write_size=client.write_size)
    if own.response.server_guid != first.response.server_guid:
        raise OtherServer("another server answered there (its ServerGuid differs)")
    if own.response.dialect != client.dialect or own.cipher != keys.cipher or \
            own.signing_algorithm != keys.signing_algorithm:
        raise BindingRefused("the server negotiated other algorithms on this connection")
    if not own.response.capabilities & wire.CAP_MULTI_CHANNEL:
        raise BindingRefused("no CAP_MULTI_CHANNEL on this connection")
    if own.io_size < client.io_size or own.write_size < client.write_size:
        raise BindingRefused(f"this connection allows READs of {own.io_size} and WRITEs of "
                             f"{own.write_size} bytes only")
    channel.keys = await _binding_logon(client, own, channel, user, password, domain, sign)
    channel.register(channel.keys)
    if client.dialect in (wire.SMB300, wire.SMB302):
        await validate_negotiate(client, channel, own)


async def _binding_logon(client: Client, own: Negotiated, channel: Channel, user: str,
                         password: str, domain: str, sign: bool) -> SessionKeys:
    context = logon_context(client.auth, user, password, domain, client.host)
    security_mode = wire.SECURITY_SIGNING_ENABLED | (wire.SECURITY_SIGNING_REQUIRED if sign else 0)
    session = client.keys
    # the binding requests are signed with the session's key and never sealed (MS-SMB2 3.2.4.1.1)
    binding = SessionKeys(session_id=session.session_id, signing_key=session.signing_key,
                          signing_algorithm=session.signing_algorithm, sign=True)
    preauth = own.preauth.copy()
    token = step(context)
    while True:
        # verify=False: the interim answers may be signed with the session's key, the final
        # one with the channel's, which exists only once the logon is done (checked below)
        r = await channel.request(
            wire.SESSION_SETUP, m.session_setup_request(security_mode, token, wire.SESSION_FLAG_BINDING),
            keys=binding, keep_request=True, verify=False,
            expect=(wire.STATUS_SUCCESS, wire.STATUS_MORE_PROCESSING_REQUIRED),
            what="bind a channel")
        if client.dialect == wire.SMB311:
            preauth.update(r.request)
        if r.header.session_id != session.session_id:
            raise ProtocolError("the server answered a binding for another session")
        flags, reply = m.parse_session_setup(r.message)
        if r.status != wire.STATUS_MORE_PROCESSING_REQUIRED:
            break
        if client.dialect == wire.SMB311:
            preauth.update(r.message)
        token = step(context, reply)
        if not token:
            raise ProtocolError("the binding needs another step but the mechanism has nothing to send")
    if flags & (wire.SESSION_FLAG_IS_GUEST | wire.SESSION_FLAG_IS_NULL):
        raise ProtocolError("the server made a binding a guest logon")
    if reply:
        step(context, reply)
    if not context.complete:
        raise ProtocolError("the server accepted the binding before the mechanism completed")
    session_key = (context.session_key + b"\0" * 16)[:16]
    channel_key = security.signing_key(session_key, client.dialect,
                                       preauth.value if client.dialect == wire.SMB311 else None)
    if not r.header.flags & wire.FLAGS_SIGNED or \
            not security.verify(session.signing_algorithm, channel_key, r.message):
        raise ProtocolError("bad signature on the final binding SESSION_SETUP response: the "
                            "server does not hold the channel's key, or the messages were altered")
    return session.replace(signing_key=channel_key)
