"""Sessions across connections against a real server, with the raw client (tests/security/raw.py):
binding a second channel (SMB2_SESSION_FLAG_BINDING), each check of a binding with a client
that tries to get around it, a channel's loss, PreviousSessionId, re-authentication keeping the
session's keys, and FSCTL_QUERY_NETWORK_INTERFACE_INFO.

(smbprotocol, impacket and pysmb cannot bind a channel: the raw client signs the binding with
the session's key and derives the channel's key itself, as MS-SMB2 3.2.5.3.2 has a client do.)
"""
from __future__ import annotations

import os
import struct
import subprocess
import time
import sys
from pathlib import Path

import pytest
import spnego

sys.path.insert(0, str(Path(__file__).parents[1] / "security"))
from logon import ANONYMOUS, V1_FLAGS, forged_logon  # noqa: E402
from raw import FID_ANY, Disconnected, RawClient, Session  # noqa: E402
from servers import PASSWORD, USER, free_port, spawn, stop  # noqa: E402
from smbcore import ioctl_body, read_body, session_setup_body, write_body  # noqa: E402

from smbring.smb import security, wire  # noqa: E402

FSCTL_QUERY_NETWORK_INTERFACE_INFO = 0x001401FC
OTHER, OTHER_PASSWORD = "otheruser", "Other-pass1"


@pytest.fixture(scope="module")
def start(tmp_path_factory):
    """start(**global options) -> (port, root): a server with one writable share `rw`."""
    procs = []

    def run(guest_share=False, **options):
        root = tmp_path_factory.mktemp("mc")
        (root / "rw").mkdir()
        port = free_port()
        # clients are often still connected when the module's servers stop: they need not
        # wait the default shutdown timeout (10 s each) for them
        options = {"shutdown_timeout": 1, **options}
        lines = ["[global]", f"listen = 127.0.0.1:{port}"]
        lines += [f"{k.replace('_', ' ')} = {v}" for k, v in options.items()]
        lines += ["[rw]", f"path = {root / 'rw'}", "read only = no"]
        if guest_share:     # (a guest ok share: the server then admits guests and anonymous)
            (root / "pub").mkdir(mode=0o777)
            lines += ["[pub]", f"path = {root / 'pub'}", "read only = no", "guest ok = yes"]
        (root / "smb.conf").write_text("\n".join(lines) + "\n")
        proc, port, _log = spawn(root, "--config", str(root / "smb.conf"), port=port)
        procs.append(proc)
        env = dict(os.environ, SMBRING_PASSDB=str(root / "passdb"))
        subprocess.run([sys.executable, "-m", "smbring.cli", "user", "add", OTHER, "--password-stdin"],
                       input=OTHER_PASSWORD + "\n", text=True, env=env, check=True, capture_output=True)
        return port, root

    yield run
    for proc in procs:
        stop(proc)


@pytest.fixture(scope="module")
def server(start):
    return start()


def connect(port, dialects=(wire.SMB311,), guid=None) -> RawClient:
    c = RawClient(port)
    r = c.negotiate(dialects, client_guid=guid)
    assert r.status == wire.STATUS_SUCCESS
    return c


def first_channel(port, dialects=(wire.SMB311,)):
    """A connection, its session, a tree on `rw` and a file open there with some data."""
    guid = os.urandom(16)
    c = connect(port, dialects, guid)
    s = c.logon(USER, PASSWORD)
    tree = c.tree(s, "rw")
    fid = tree.open(f"f-{os.urandom(4).hex()}", wire.GENERIC_READ | wire.GENERIC_WRITE, wire.FILE_CREATE)
    assert tree.request(wire.WRITE, write_body(fid, b"channel data")).status == wire.STATUS_SUCCESS
    return c, s, tree, fid, guid


def bind(c2: RawClient, s1: Session, user=USER, password=PASSWORD, *, sign=True, signing_key=None,
         flags=wire.SESSION_FLAG_BINDING, session_id=None, algorithm=None):
    """Binds c2 to the session s1 (every leg signed with the session's key, as a client
    binds, with `algorithm`: the session's, where it differs from c2's); returns (the
    channel's Session on c2, the last response)."""
    ctx = spnego.client(user, password, hostname="smbring", service="cifs", protocol="negotiate")
    channel = Session(id=s1.id if session_id is None else session_id)
    channel.preauth = c2.preauth.copy() if c2.dialect == wire.SMB311 else None
    token = ctx.step()
    while True:
        msg = c2.message(wire.SESSION_SETUP, session_setup_body(token, flags=flags), session=channel.id)
        c2.send([msg], sign=sign, signing_key=signing_key or s1.signing_key, algorithm=algorithm)
        r = c2.response_to(wire.Header.parse(msg).message_id)
        if channel.preauth is not None:
            channel.preauth.update(msg)
            if r.status == wire.STATUS_MORE_PROCESSING_REQUIRED:
                channel.preauth.update(r.raw)
        if r.status != wire.STATUS_MORE_PROCESSING_REQUIRED:
            break
        token = ctx.step(c2.security_buffer(r))
    if r.status == wire.STATUS_SUCCESS:
        key = ctx.session_key[:16].ljust(16, b"\0")
        channel.signing_key = security.signing_key(
            key, c2.dialect, channel.preauth.value if channel.preauth else None)
        channel.encrypt_key, channel.decrypt_key = s1.encrypt_key, s1.decrypt_key
        channel.flags = s1.flags
        channel.trees = s1.trees
        c2.sessions[channel.id] = channel
    return channel, r


def read_on(c: RawClient, s: Session, tree_id: int, fid: bytes):
    return c.request(wire.READ, read_body(fid, 100), session=s, tree_id=tree_id)


@pytest.mark.parametrize("dialect", [wire.SMB311, wire.SMB302, wire.SMB300])
def test_a_second_connection_binds_and_reaches_the_sessions_open(server, dialect):
    port, _root = server
    c1, s1, tree, fid, guid = first_channel(port, (dialect,))
    assert c1.server["capabilities"] & wire.CAP_MULTI_CHANNEL
    c2 = connect(port, (dialect,), guid)
    assert c2.server["guid"] == c1.server["guid"]       # one server GUID for all connections
    channel, r = bind(c2, s1)
    assert r.status == wire.STATUS_SUCCESS, r
    # the final response is signed with the channel's own key
    assert r.header.flags & wire.FLAGS_SIGNED
    assert security.verify(c2.sign_algorithm(), channel.signing_key, r.raw)
    if dialect == wire.SMB311:      # derived from this connection's preauth hash
        assert channel.signing_key != s1.signing_key
    got = read_on(c2, channel, tree.id, fid)
    assert got.status == wire.STATUS_SUCCESS and got.raw.endswith(b"channel data")
    assert security.verify(c2.sign_algorithm(), channel.signing_key, got.raw)
    # the first channel carries on as before
    assert read_on(c1, s1, tree.id, fid).status == wire.STATUS_SUCCESS
    # a request on the second channel signed with the first channel's key is refused (3.1.1)
    if dialect == wire.SMB311:
        msg = c2.message(wire.READ, read_body(fid, 10), session=channel, tree_id=tree.id)
        c2.send([msg], sign=True, signing_key=s1.signing_key)
        assert c2.response_to(wire.Header.parse(msg).message_id).status == wire.STATUS_ACCESS_DENIED
    c1.close()
    c2.close()


def test_the_session_outlives_a_channel_and_ends_with_the_last(server):
    port, _root = server
    c1, s1, tree, fid, guid = first_channel(port)
    c2 = connect(port, guid=guid)
    channel, r = bind(c2, s1)
    assert r.status == wire.STATUS_SUCCESS
    c1.close()                                  # the first channel is lost
    for _ in range(3):                          # (the server notices in its own time)
        assert read_on(c2, channel, tree.id, fid).status == wire.STATUS_SUCCESS
    c3 = connect(port, guid=guid)               # and can be bound again through another
    third, r = bind(c3, s1)                     # (signed with the session's key)
    assert r.status == wire.STATUS_SUCCESS
    c2.close()
    c3.close()
    # with its last channel the session went: binding to it now finds nothing
    c4 = connect(port, guid=guid)
    _ch, r = bind(c4, third)
    assert r.status == wire.STATUS_USER_SESSION_DELETED
    c4.close()


def test_binding_refusals_leave_the_session_alone(server):
    port, _root = server
    c1, s1, tree, fid, guid = first_channel(port)
    cases = []
    # not signed: INVALID_PARAMETER (MS-SMB2 3.3.5.5)
    c = connect(port, guid=guid)
    cases.append((bind(c, s1, sign=False)[1].status, wire.STATUS_INVALID_PARAMETER))
    # signed with a forged key: ACCESS_DENIED (3.3.5.2.4)
    c = connect(port, guid=guid)
    cases.append((bind(c, s1, signing_key=os.urandom(16))[1].status, wire.STATUS_ACCESS_DENIED))
    # a session id that does not exist
    c = connect(port, guid=guid)
    cases.append((bind(c, s1, session_id=s1.id + 1000)[1].status, wire.STATUS_USER_SESSION_DELETED))
    # another ClientGuid (MS-SMB2: MAY refuse; smbd cannot bind across clients either, and
    # answers REQUEST_NOT_ACCEPTED)
    c = connect(port, guid=os.urandom(16))
    cases.append((bind(c, s1)[1].status, wire.STATUS_REQUEST_NOT_ACCEPTED))
    # another dialect: with another signing algorithm than the session's AES-GMAC, refused
    # for that first, as smbd does (the binding is signed as the session signs, AES-GMAC)
    c = connect(port, (wire.SMB302,), guid=guid)
    cases.append((bind(c, s1, algorithm=security.AES_GMAC)[1].status, wire.STATUS_REQUEST_OUT_OF_SEQUENCE))
    # the same algorithm (AES-CMAC) on 3.1.1 for a 3.0.2 session: the dialect differs
    c0, s0, _t0, _f0, guid0 = first_channel(port, (wire.SMB302,))
    c = RawClient(port)
    assert c.negotiate((wire.SMB311,), client_guid=guid0,
                       signing_algorithms=(security.AES_CMAC,)).status == wire.STATUS_SUCCESS
    cases.append((bind(c, s0)[1].status, wire.STATUS_INVALID_PARAMETER))
    # SMB 2.1 cannot bind at all (to an AES-CMAC session; to an AES-GMAC one the algorithm
    # is refused first, as above)
    c = connect(port, (wire.SMB210,), guid=guid0)
    cases.append((bind(c, s0, algorithm=security.AES_CMAC)[1].status, wire.STATUS_REQUEST_NOT_ACCEPTED))
    c = connect(port, (wire.SMB210,), guid=guid)
    cases.append((bind(c, s1, algorithm=security.AES_GMAC)[1].status, wire.STATUS_REQUEST_OUT_OF_SEQUENCE))
    # signed with the connection's algorithm rather than the session's: not its signature
    c = connect(port, (wire.SMB302,), guid=guid)
    cases.append((bind(c, s1)[1].status, wire.STATUS_ACCESS_DENIED))
    # another user, with that user's right password: ACCESS_DENIED once authenticated
    c = connect(port, guid=guid)
    cases.append((bind(c, s1, OTHER, OTHER_PASSWORD)[1].status, wire.STATUS_ACCESS_DENIED))
    # the right user with a wrong password
    c = connect(port, guid=guid)
    cases.append((bind(c, s1, USER, "wrong")[1].status, wire.STATUS_LOGON_FAILURE))
    # a SESSION_SETUP without the binding flag does not reach another connection's session
    c = connect(port, guid=guid)
    cases.append((bind(c, s1, flags=0)[1].status, wire.STATUS_USER_SESSION_DELETED))
    # binding the connection that already carries the session
    cases.append((bind(c1, s1)[1].status, wire.STATUS_REQUEST_NOT_ACCEPTED))
    assert [got for got, _ in cases] == [want for _, want in cases]
    # after all of that the session works as before on its channel
    assert read_on(c1, s1, tree.id, fid).status == wire.STATUS_SUCCESS


def test_a_replayed_binding_does_not_bind(server):
    """The legs of a real binding, captured and sent again on a third connection of the
    same ClientGuid: the signature is the session's and verifies, but the authentication
    answers another challenge, so the channel is never made."""
    port, _root = server
    c1, s1, tree, fid, guid = first_channel(port)
    c2 = connect(port, guid=guid)
    frames = []
    send_frame = c2.send_frame
    c2.send_frame = lambda frame: (frames.append(frame), send_frame(frame))
    _channel, r = bind(c2, s1)
    assert r.status == wire.STATUS_SUCCESS and len(frames) == 2
    c3 = connect(port, guid=guid)
    statuses = []
    for frame in frames:
        c3.send_frame(frame)
        statuses.append(c3.parse(c3.recv_frame())[0].status)
    assert statuses[-1] != wire.STATUS_SUCCESS
    # (the AUTHENTICATE repeats the first CHALLENGE's timestamp: INVALID_PARAMETER, as Samba)
    assert statuses[-1] in (wire.STATUS_INVALID_PARAMETER, wire.STATUS_LOGON_FAILURE, wire.STATUS_ACCESS_DENIED)
    c3.next_message_id += len(frames)       # (the replayed frames took those MessageIds)
    # nothing was bound on c3: the session is not reachable there
    assert c3.request(wire.READ, read_body(fid, 10), session=s1.id, tree_id=tree.id).status == \
        wire.STATUS_USER_SESSION_DELETED
    assert read_on(c1, s1, tree.id, fid).status == wire.STATUS_SUCCESS


def test_bindings_are_bounded_per_session(start):
    port, _root = start(max_channels_per_session=2)
    c1, s1, tree, fid, guid = first_channel(port)
    c2 = connect(port, guid=guid)
    assert bind(c2, s1)[1].status == wire.STATUS_SUCCESS
    c3 = connect(port, guid=guid)
    assert bind(c3, s1)[1].status == wire.STATUS_INSUFFICIENT_RESOURCES
    assert read_on(c1, s1, tree.id, fid).status == wire.STATUS_SUCCESS


def test_multichannel_off_announces_nothing_and_binds_nothing(start):
    port, _root = start(server_multi_channel_support="no")
    c1, s1, _tree, _fid, guid = first_channel(port)
    assert not c1.server["capabilities"] & wire.CAP_MULTI_CHANNEL
    c2 = connect(port, guid=guid)
    assert bind(c2, s1)[1].status == wire.STATUS_REQUEST_NOT_ACCEPTED


def test_previous_session_id_closes_the_same_users_old_session(server):
    port, root = server
    c1, s1, tree, fid, _guid = first_channel(port)
    c2 = connect(port)
    ctx = spnego.client(USER, PASSWORD, hostname="smbring", service="cifs", protocol="negotiate")
    s2 = c2.start_logon(None)
    msg_flags = {}
    r = c2.request(wire.SESSION_SETUP, session_setup_body(ctx.step(), previous=s1.id), **msg_flags)
    s2.id = r.header.session_id
    s2.preauth = None
    r = c2.request(wire.SESSION_SETUP, session_setup_body(ctx.step(c2.security_buffer(r)), previous=s1.id),
                   session=s2.id)
    assert r.status == wire.STATUS_SUCCESS
    # the old session and its open are gone
    assert read_on(c1, s1, tree.id, fid).status == wire.STATUS_USER_SESSION_DELETED


def test_previous_session_id_of_another_user_is_left_alone(server):
    port, _root = server
    c1, s1, tree, fid, _guid = first_channel(port)
    c2 = connect(port)
    ctx = spnego.client(OTHER, OTHER_PASSWORD, hostname="smbring", service="cifs", protocol="negotiate")
    r = c2.request(wire.SESSION_SETUP, session_setup_body(ctx.step(), previous=s1.id))
    r = c2.request(wire.SESSION_SETUP, session_setup_body(ctx.step(c2.security_buffer(r)), previous=s1.id),
                   session=r.header.session_id)
    assert read_on(c1, s1, tree.id, fid).status == wire.STATUS_SUCCESS


def test_reauthentication_keeps_the_sessions_keys(server):
    port, _root = server
    c1, s1, tree, fid, _guid = first_channel(port)
    key = s1.signing_key
    ctx = spnego.client(USER, PASSWORD, hostname="smbring", service="cifs", protocol="negotiate")
    r = c1.request(wire.SESSION_SETUP, session_setup_body(ctx.step()), session=s1)
    assert r.status == wire.STATUS_MORE_PROCESSING_REQUIRED
    r = c1.request(wire.SESSION_SETUP, session_setup_body(ctx.step(c1.security_buffer(r))), session=s1)
    assert r.status == wire.STATUS_SUCCESS
    assert security.verify(c1.sign_algorithm(), key, r.raw)       # still the first logon's key
    assert read_on(c1, s1, tree.id, fid).status == wire.STATUS_SUCCESS


def test_network_interface_info_lists_the_listening_address(server):
    port, _root = server
    c1, s1, tree, _fid, _guid = first_channel(port)
    r = tree.request(wire.IOCTL, ioctl_body(FID_ANY, FSCTL_QUERY_NETWORK_INTERFACE_INFO))
    assert r.status == wire.STATUS_SUCCESS
    _s, _r, _ctl, _fid, _io, _il, out_off, out_len = struct.unpack_from("<HHI16sIIII", r.raw, 64)
    out = r.raw[out_off:out_off + out_len]
    following, index, capability, _res, speed, family, _port, address = struct.unpack_from("<IIIIQHH4s", out)
    assert (following, family, address) == (0, 2, bytes([127, 0, 0, 1]))
    assert index >= 1 and speed > 0 and capability & ~1 == 0
    # input is refused, as smbd refuses it
    r = tree.request(wire.IOCTL, ioctl_body(FID_ANY, FSCTL_QUERY_NETWORK_INTERFACE_INFO, b"x"))
    assert r.status == wire.STATUS_INVALID_PARAMETER


def test_a_dropped_binding_connection_does_not_disturb_the_session(server):
    """A channel that goes away halfway through its binding: the session is untouched."""
    port, _root = server
    c1, s1, tree, fid, guid = first_channel(port)
    c2 = connect(port, guid=guid)
    ctx = spnego.client(USER, PASSWORD, hostname="smbring", service="cifs", protocol="negotiate")
    msg = c2.message(wire.SESSION_SETUP, session_setup_body(ctx.step(), flags=wire.SESSION_FLAG_BINDING),
                     session=s1.id)
    c2.send([msg], sign=True, signing_key=s1.signing_key)
    assert c2.response_to(wire.Header.parse(msg).message_id).status == wire.STATUS_MORE_PROCESSING_REQUIRED
    c2.close()
    with pytest.raises((Disconnected, OSError)):
        c2.echo()
    assert read_on(c1, s1, tree.id, fid).status == wire.STATUS_SUCCESS


def signed_by(r, algorithm, key) -> bool:
    return bool(r.header.flags & wire.FLAGS_SIGNED) and security.verify(algorithm, key, r.raw)


def echoed_or_unsigned(r, c) -> bool:
    """Whether an answer carries no signature of the server's: none, or (USER_SESSION_DELETED,
    as smbd and Windows answer it) its request's own, echoed."""
    if not r.header.flags & wire.FLAGS_SIGNED:
        return True
    return r.status == wire.STATUS_USER_SESSION_DELETED and c.echoed(r)


def test_refused_bindings_are_answered_signed_with_the_sessions_key(server):
    """A client checks the answer to its binding with the session's key (smbXcli refuses an
    unsigned one with ACCESS_DENIED): smbd signs it whatever the status, once the request's
    signature proved the key; an answer to a request that did not prove it is never signed."""
    port, _root = server
    c1, s1, _tree, _fid, guid = first_channel(port)                    # 3.1.1, AES-GMAC
    c0, s0, _t0, _f0, guid0 = first_channel(port, (wire.SMB302,))      # 3.0.2, AES-CMAC
    # SMB 2.1 binding to the AES-CMAC session: REQUEST_NOT_ACCEPTED, signed as the session signs
    c = connect(port, (wire.SMB210,), guid=guid0)
    _ch, r = bind(c, s0, algorithm=security.AES_CMAC)
    assert r.status == wire.STATUS_REQUEST_NOT_ACCEPTED
    assert signed_by(r, security.AES_CMAC, s0.signing_key)
    # 3.0.2 of another ClientGuid: REQUEST_NOT_ACCEPTED, signed
    c = connect(port, (wire.SMB302,))
    _ch, r = bind(c, s0)
    assert r.status == wire.STATUS_REQUEST_NOT_ACCEPTED and signed_by(r, security.AES_CMAC, s0.signing_key)
    # 3.1.1 of another ClientGuid, to the AES-GMAC session: likewise
    c = connect(port)
    _ch, r = bind(c, s1)
    assert r.status == wire.STATUS_REQUEST_NOT_ACCEPTED and signed_by(r, security.AES_GMAC, s1.signing_key)
    # and without the binding flag: USER_SESSION_DELETED, signed
    _ch, r = bind(c, s1, flags=0)
    assert r.status == wire.STATUS_USER_SESSION_DELETED and signed_by(r, security.AES_GMAC, s1.signing_key)
    # a forged signature proves nothing: ACCESS_DENIED, unsigned, from any connection; and
    # USER_SESSION_DELETED with at most the request's own signature echoed, as smbd answers
    for c in (connect(port, guid=guid), connect(port), connect(port, (wire.SMB210,), guid=guid0)):
        _ch, r = bind(c, s1, signing_key=os.urandom(16))
        assert r.status == wire.STATUS_ACCESS_DENIED and not r.header.flags & wire.FLAGS_SIGNED
        _ch, r = bind(c, s1, signing_key=os.urandom(16), flags=0)
        assert r.status == wire.STATUS_USER_SESSION_DELETED and not signed_by(r, security.AES_GMAC, s1.signing_key)
        assert echoed_or_unsigned(r, c)
    # unsigned: INVALID_PARAMETER, unsigned
    _ch, r = bind(connect(port, guid=guid), s1, sign=False)
    assert r.status == wire.STATUS_INVALID_PARAMETER and not r.header.flags & wire.FLAGS_SIGNED
    # the sessions carry on
    for c, s in ((c1, s1), (c0, s0)):
        assert c.echo().status == wire.STATUS_SUCCESS


@pytest.mark.parametrize("session_algorithm, channel_algorithm",
                         [(security.AES_CMAC, security.HMAC_SHA256), (security.HMAC_SHA256, security.AES_CMAC)])
def test_a_channel_may_sign_with_another_non_gmac_algorithm(server, session_algorithm, channel_algorithm):
    """3.1.1 on both connections, AES-CMAC and HMAC-SHA256 negotiated apart: the binding is
    signed with the session's key and algorithm (as smbd verifies it), the channel signs with
    its own key and its connection's algorithm (smb2.session.bind_negative_smb3signCtoHs)."""
    port, _root = server
    guid = os.urandom(16)
    c1 = RawClient(port)
    assert c1.negotiate((wire.SMB311,), client_guid=guid,
                        signing_algorithms=(session_algorithm,)).status == wire.STATUS_SUCCESS
    s1 = c1.logon(USER, PASSWORD)
    tree = c1.tree(s1, "rw")
    fid = tree.open(f"alg-{os.urandom(4).hex()}", wire.GENERIC_READ | wire.GENERIC_WRITE, wire.FILE_CREATE)
    assert tree.request(wire.WRITE, write_body(fid, b"data")).status == wire.STATUS_SUCCESS
    c2 = RawClient(port)
    assert c2.negotiate((wire.SMB311,), client_guid=guid,
                        signing_algorithms=(channel_algorithm,)).status == wire.STATUS_SUCCESS
    # signed with the channel's connection's algorithm instead: not the session's signature
    _ch, r = bind(c2, s1, algorithm=channel_algorithm)
    assert r.status == wire.STATUS_ACCESS_DENIED
    channel, r = bind(c2, s1, algorithm=session_algorithm)
    assert r.status == wire.STATUS_SUCCESS, r
    assert signed_by(r, channel_algorithm, channel.signing_key)
    got = read_on(c2, channel, tree.id, fid)
    assert got.status == wire.STATUS_SUCCESS and signed_by(got, channel_algorithm, channel.signing_key)
    assert read_on(c1, s1, tree.id, fid).status == wire.STATUS_SUCCESS


# -- re-authentication as someone else (smbd: the session keeps its keys and its opens) ------

@pytest.fixture(scope="module")
def guest_server(start):
    return start(guest_share=True, map_to_guest="bad user")


def reauth_anonymous(c: RawClient, s: Session):
    """Re-authenticates s anonymously (an empty NTLM AUTHENTICATE), signed with its keys."""
    return forged_logon(c, "", lambda _challenge: (b"", b""), flags=V1_FLAGS | ANONYMOUS, session=s).last


def reauth(c: RawClient, s: Session, user=USER, password=PASSWORD):
    ctx, s, r = c.begin_logon(user, password, session=s)
    while r.status == wire.STATUS_MORE_PROCESSING_REQUIRED:
        r = c.session_setup(s, ctx.step(c.security_buffer(r)))
    return r


def test_reauthentication_as_anonymous_keeps_the_keys_and_the_opens(guest_server):
    """smb2.session.reauth2/3: a user's session re-authenticated anonymously goes on with the
    first logon's keys (signed, as the client expects) and its open handles; back as the user
    it works as before."""
    port, _root = guest_server
    c = connect(port)
    s = c.logon(USER, PASSWORD)
    tree = c.tree(s, "pub")
    fid = tree.open(f"anon-{os.urandom(4).hex()}", wire.GENERIC_READ | wire.GENERIC_WRITE, wire.FILE_CREATE)
    assert tree.request(wire.WRITE, write_body(fid, b"kept")).status == wire.STATUS_SUCCESS
    r = reauth_anonymous(c, s)
    assert r.status == wire.STATUS_SUCCESS, r
    assert signed_by(r, c.sign_algorithm(), s.signing_key)
    assert not struct.unpack_from("<H", r.raw, 66)[0] & (wire.SESSION_FLAG_IS_NULL | wire.SESSION_FLAG_IS_GUEST)
    got = read_on(c, s, tree.id, fid)
    assert got.status == wire.STATUS_SUCCESS and got.raw.endswith(b"kept")
    assert signed_by(got, c.sign_algorithm(), s.signing_key)
    # an anonymous session is no channel's: binding it is refused as for a guest
    c2 = connect(port, guid=c.offered["guid"])
    assert bind(c2, s)[1].status == wire.STATUS_NOT_SUPPORTED
    # a re-authentication signed with another key still cannot take the session over
    msg = c.message(wire.SESSION_SETUP, session_setup_body(b"\x60\x00"), session=s)
    c.send([msg], signing_key=os.urandom(16))
    assert c.response_to(wire.Header.parse(msg).message_id).status == wire.STATUS_ACCESS_DENIED
    r = reauth(c, s)
    assert r.status == wire.STATUS_SUCCESS and signed_by(r, c.sign_algorithm(), s.signing_key)
    assert read_on(c, s, tree.id, fid).status == wire.STATUS_SUCCESS


def test_reauthentication_as_anonymous_keeps_a_tree_anonymous_could_not_connect(guest_server):
    """[rw] admits no guests. As smbd (smb2.session.reauth2-4), a session re-authenticated
    anonymously keeps its tree connect there and its opens, acting as the guest account from
    then on; `guest ok` is asked of a new tree connect, which is refused."""
    port, _root = guest_server
    c = connect(port)
    s = c.logon(USER, PASSWORD)
    tree = c.tree(s, "rw")
    fid = tree.open(f"rw-{os.urandom(4).hex()}", wire.GENERIC_READ | wire.GENERIC_WRITE, wire.FILE_CREATE)
    assert tree.request(wire.WRITE, write_body(fid, b"kept")).status == wire.STATUS_SUCCESS
    assert reauth_anonymous(c, s).status == wire.STATUS_SUCCESS
    got = read_on(c, s, tree.id, fid)
    assert got.status == wire.STATUS_SUCCESS and got.raw.endswith(b"kept")
    assert c.tree_connect(s, "rw").status == wire.STATUS_ACCESS_DENIED
    assert reauth(c, s).status == wire.STATUS_SUCCESS
    assert c.tree_connect(s, "rw").status == wire.STATUS_SUCCESS


def test_a_session_without_keys_does_not_become_a_users(guest_server):
    """An anonymous session (no keys) re-authenticated as a user would have nothing to sign
    with: refused, and the session ends (the client logs on anew)."""
    port, _root = guest_server
    c = connect(port)
    s = forged_logon(c, "", lambda _challenge: (b"", b""), flags=V1_FLAGS | ANONYMOUS)
    assert s.status == wire.STATUS_SUCCESS and s.flags & wire.SESSION_FLAG_IS_NULL
    tree = c.tree(s, "pub")
    assert reauth(c, s).status == wire.STATUS_ACCESS_DENIED
    assert tree.create("x", wire.GENERIC_READ, wire.FILE_OPEN_IF).status == wire.STATUS_USER_SESSION_DELETED


def test_anonymous_reauthentication_without_a_guest_share(server):
    """No share admits guests: the anonymous logon is admitted all the same (as smbd's), and
    the re-authenticated session keeps its opens, signed with the first logon's keys."""
    port, _root = server
    c, s, tree, fid, _guid = first_channel(port)
    r = reauth_anonymous(c, s)
    assert r.status == wire.STATUS_SUCCESS and signed_by(r, c.sign_algorithm(), s.signing_key)
    got = read_on(c, s, tree.id, fid)
    assert got.status == wire.STATUS_SUCCESS and got.raw.endswith(b"channel data")
    assert c.tree_connect(s, "rw").status == wire.STATUS_ACCESS_DENIED


def test_reauthentication_as_another_user_acts_as_them(guest_server):
    """Re-authenticated as another user, the session acts as that user: its opens keep the
    access they were granted, new opens are checked as the new user (as root the server acts
    as the Unix account `nobody`, who may not write into [rw]), and back as the first user
    everything works again."""
    port, root = guest_server
    env = dict(os.environ, SMBRING_PASSDB=str(root / "passdb"))
    subprocess.run([sys.executable, "-m", "smbring.cli", "user", "add", "nobody", "--password-stdin"],
                   input="Nobody-pw1\n", text=True, env=env, check=True, capture_output=True)
    c, s, tree, fid, _guid = first_channel(port)
    r = reauth(c, s, "nobody", "Nobody-pw1")
    assert r.status == wire.STATUS_SUCCESS, r
    assert signed_by(r, c.sign_algorithm(), s.signing_key)      # the first logon's keys
    got = read_on(c, s, tree.id, fid)
    assert got.status == wire.STATUS_SUCCESS and got.raw.endswith(b"channel data")
    name = f"as-nobody-{os.urandom(4).hex()}"
    created = tree.create(name, wire.GENERIC_READ | wire.GENERIC_WRITE, wire.FILE_CREATE)
    if os.geteuid() == 0:       # the share's directory is root's, 0755: nobody may not create
        assert created.status == wire.STATUS_ACCESS_DENIED
    assert reauth(c, s).status == wire.STATUS_SUCCESS
    assert tree.create(f"{name}-2", wire.GENERIC_READ | wire.GENERIC_WRITE, wire.FILE_CREATE).status == \
        wire.STATUS_SUCCESS


def test_a_binding_that_authenticates_as_the_guest_is_access_denied(guest_server):
    """With map to guest = bad user an unknown user's binding authenticates as the guest, who
    is not the session's user: ACCESS_DENIED, as smbd answers (smb2.session.bind_invalid_auth
    where guests are admitted); where they are not, the same binding is LOGON_FAILURE
    (test_binding_refusals_leave_the_session_alone). The session carries on either way."""
    port, _root = guest_server
    c1, s1, tree, fid, guid = first_channel(port)
    _ch, r = bind(connect(port, guid=guid), s1, "nosuchuser", "whatever")
    assert r.status == wire.STATUS_ACCESS_DENIED
    assert signed_by(r, c1.sign_algorithm(), s1.signing_key)
    assert read_on(c1, s1, tree.id, fid).status == wire.STATUS_SUCCESS


def test_a_session_ended_by_a_failed_reauthentication_is_answered_signed(server):
    """A failed re-authentication on one channel ends the session on all of them, its
    LOGON_FAILURE signed with the channel's key; a client
    still naming it with its keys is answered USER_SESSION_DELETED signed, as smbd answers
    (smbXcli takes an unsigned answer for an attack: ACCESS_DENIED, smb2.session.
    bind_invalid_auth); a request that does not prove the key gets nothing signed."""
    port, _root = server
    c1, s1, tree, fid, guid = first_channel(port)
    c2 = connect(port, guid=guid)
    channel, r = bind(c2, s1)
    assert r.status == wire.STATUS_SUCCESS
    refused = reauth(c2, channel, USER, "wrong")     # signed as every answer to it (smb2.session.reauth6)
    assert refused.status == wire.STATUS_LOGON_FAILURE and signed_by(refused, c2.sign_algorithm(), channel.signing_key)
    got = read_on(c1, s1, tree.id, fid)
    assert got.status == wire.STATUS_USER_SESSION_DELETED and signed_by(got, c1.sign_algorithm(), s1.signing_key)
    got = read_on(c2, channel, tree.id, fid)        # (the channel's own key, 3.1.1)
    assert got.status == wire.STATUS_USER_SESSION_DELETED
    assert signed_by(got, c2.sign_algorithm(), channel.signing_key)
    msg = c1.message(wire.READ, read_body(fid, 10), session=s1, tree_id=tree.id)
    c1.send([msg], signing_key=os.urandom(16))
    got = c1.response_to(wire.Header.parse(msg).message_id)
    assert got.status == wire.STATUS_USER_SESSION_DELETED and not signed_by(got, c1.sign_algorithm(), s1.signing_key)
    assert echoed_or_unsigned(got, c1)
    # a session that logged off is simply gone: nothing of the server's signs the answer (smbd
    # echoes the request's own signature too)
    c3, s3, tree3, fid3, _g = first_channel(port)
    assert c3.logoff(s3).status == wire.STATUS_SUCCESS
    got = read_on(c3, s3, tree3.id, fid3)
    assert got.status == wire.STATUS_USER_SESSION_DELETED and not signed_by(got, c3.sign_algorithm(), s3.signing_key)
    assert echoed_or_unsigned(got, c3)


@pytest.mark.parametrize("same_client", [True, False])
def test_a_session_a_reconnect_replaced_is_answered_signed(server, same_client):
    """A logon naming the session of an earlier connection as its PreviousSessionId ends that
    session (MS-SMB2 3.3.5.5.3); the old connection, still naming it with its key, is answered
    USER_SESSION_DELETED signed with that key, as smbd answers (smbtorture smb2.session
    reconnect1 and reconnect2 with client signing = required: smbXcli takes an answer without
    the SIGNED flag for an attack); a request whose signature does not prove the key gets
    nothing signed. Whether the new connection names the same ClientGuid or another."""
    port, _root = server
    c1, s1, tree, fid, guid = first_channel(port)
    c2 = connect(port, guid=guid if same_client else None)
    c2.logon(USER, PASSWORD, previous=s1.id)
    got = read_on(c1, s1, tree.id, fid)
    assert got.status == wire.STATUS_USER_SESSION_DELETED and signed_by(got, c1.sign_algorithm(), s1.signing_key)
    msg = c1.message(wire.READ, read_body(fid, 10), session=s1, tree_id=tree.id)
    c1.send([msg], signing_key=os.urandom(16))
    got = c1.response_to(wire.Header.parse(msg).message_id)
    assert got.status == wire.STATUS_USER_SESSION_DELETED and not signed_by(got, c1.sign_algorithm(), s1.signing_key)
    assert echoed_or_unsigned(got, c1)


def test_a_sealed_request_on_a_connection_that_is_not_the_sessions_channel(server):
    """A frame sealed with the key of a session of the same client (ClientGuid) that is not
    bound on the connection it comes by is opened, as smbd opens it, and each of its requests
    answered USER_SESSION_DELETED, sealed, reaching nothing of the session (smbtorture
    smb2.session bind2, bind_invalid_auth and bind_different_user, encrypted, send a
    channel's requests before its binding); from another client the same frame ends the
    connection (MS-SMB2 3.3.5.2.1.1), as before."""
    port, _root = server
    c1, s1, tree, fid, guid = first_channel(port)
    assert s1.encrypt_key
    c2 = connect(port, guid=guid)
    c2.sessions[s1.id] = s1             # (its keys, to seal and open; no channel here)
    msg = c2.message(wire.READ, read_body(fid, 100), session=s1, tree_id=tree.id)
    c2.send([msg], encrypt=True)
    got = c2.response_to(wire.Header.parse(msg).message_id)
    assert got.status == wire.STATUS_USER_SESSION_DELETED and got.encrypted, got
    assert b"channel data" not in got.raw
    write = c2.message(wire.WRITE, write_body(fid, b"HIJACKED"), session=s1, tree_id=tree.id)
    c2.send([write], encrypt=True)
    assert c2.response_to(wire.Header.parse(write).message_id).status == wire.STATUS_USER_SESSION_DELETED
    c3 = connect(port)                  # another ClientGuid
    c3.sessions[s1.id] = s1
    with pytest.raises((Disconnected, OSError)):
        c3.send([c3.message(wire.READ, read_body(fid, 100), session=s1, tree_id=tree.id)], encrypt=True)
        c3.recv_frame()
    got = read_on(c1, s1, tree.id, fid)     # the session goes on, its file as it was
    assert got.status == wire.STATUS_SUCCESS and b"channel data" in got.raw and b"HIJACKED" not in got.raw


@pytest.mark.parametrize("dialect", [wire.SMB311, wire.SMB300])
def test_a_binding_under_way_reaches_nothing_of_the_session(server, dialect):
    """A binding's first leg is signed with the session's key, so whoever captured one can
    send it again from a connection of their own (with the victim's ClientGuid). Until the
    binding completes, that connection must reach nothing of the session: not its files
    through requests signed with the session's key (captured from the first channel, where
    3.0 and 3.1.1 sign with it), nor the held requests of a channel that is lost."""
    port, _root = server
    c1, s1, tree, fid, guid = first_channel(port, (dialect,))
    c2 = connect(port, (dialect,), guid)
    ctx = spnego.client(USER, PASSWORD, hostname="smbring", service="cifs", protocol="negotiate")
    leg = c2.message(wire.SESSION_SETUP, session_setup_body(ctx.step(), flags=wire.SESSION_FLAG_BINDING),
                     session=s1.id)
    c2.send([leg], sign=True, signing_key=s1.signing_key)
    assert c2.response_to(wire.Header.parse(leg).message_id).status == wire.STATUS_MORE_PROCESSING_REQUIRED
    # a READ as the first channel signs it, sent on the half-bound connection
    msg = c2.message(wire.READ, read_body(fid, 100), session=s1.id, tree_id=tree.id)
    c2.send([msg], sign=True, signing_key=s1.signing_key)
    got = c2.response_to(wire.Header.parse(msg).message_id)
    assert got.status == wire.STATUS_USER_SESSION_DELETED, got
    assert b"channel data" not in got.raw
    # the first channel goes on, and when it is lost the session ends: the half-bound
    # connection keeps nothing alive
    assert read_on(c1, s1, tree.id, fid).status == wire.STATUS_SUCCESS
    c1.close()
    time.sleep(0.5)
    again = c2.message(wire.READ, read_body(fid, 100), session=s1.id, tree_id=tree.id)
    c2.send([again], sign=True, signing_key=s1.signing_key)
    assert c2.response_to(wire.Header.parse(again).message_id).status == wire.STATUS_USER_SESSION_DELETED
    c2.close()
