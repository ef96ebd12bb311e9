"""Anonymous logons (an NTLMSSP AUTHENTICATE with no user name and no response), each check
with a client that tries to get around it.

The server admits them as smbd does by default, whether or not any share admits guests: the
session is a null session (SMB2_SESSION_FLAG_IS_NULL) without keys, acting as the guest account.
What it may reach is what these tests try to widen: a share without `guest ok` (ACCESS_DENIED),
a signature it has no key for (ACCESS_DENIED), a user's session through binding or
PreviousSessionId (refused, the user's session untouched), IPC$ under `restrict anonymous = 2`,
and a logon that only looks anonymous (a user name, or any response: refused as any logon that
proves no password)."""
import os
import struct

import pytest

from logon import ANONYMOUS, V1_FLAGS, neg_token_init, neg_token_resp, ntlm_authenticate, ntlm_negotiate
from raw import Session
from servers import USER
from smbcore import read_body, session_setup_body, write_body
from smbring.smb import acl, security, wire

WRAPS = pytest.mark.parametrize("wrap", [False, True], ids=["raw-ntlmssp", "spnego"])
FLAGS = V1_FLAGS | ANONYMOUS
ANONYMOUS_LOGON = acl.sid(5, 7)


@pytest.fixture(scope="module")
def plain(servers):
    """No share admits guests; restrict anonymous and map to guest at their defaults."""
    return servers()


def anonymous_exchange(c, session: Session | None = None, *, user: str = "", domain: str = "",
                       lm: bytes = b"", nt: bytes = b"", wrap: bool = True, flags: int = 0,
                       previous: int = 0, signing_key: bytes | None = None) -> Session:
    """An NTLM logon whose AUTHENTICATE carries `user` and the (lm, nt) responses given (by
    default none: anonymous). flags/previous/signing_key: the SESSION_SETUP's Flags (binding),
    PreviousSessionId and the key every leg is signed with. Returns the session (.status,
    .last)."""
    session = c.start_logon(session)

    def leg(token: bytes):
        msg = c.message(wire.SESSION_SETUP, session_setup_body(token, flags=flags, previous=previous),
                        session=session)
        c.send([msg], sign=None if signing_key is None else True, signing_key=signing_key)
        r = c.response_to(wire.Header.parse(msg).message_id)
        if session.preauth is not None:
            session.preauth.update(msg)
            if r.status == wire.STATUS_MORE_PROCESSING_REQUIRED:
                session.preauth.update(r.raw)
        session.last = r
        return r

    negotiate = ntlm_negotiate(FLAGS)
    r = leg(neg_token_init(negotiate) if wrap else negotiate)
    if r.status == wire.STATUS_MORE_PROCESSING_REQUIRED:
        session.id = r.header.session_id
        authenticate = ntlm_authenticate(user, lm, nt, FLAGS, domain)
        r = leg(neg_token_resp(authenticate) if wrap else authenticate)
    if r.status == wire.STATUS_SUCCESS:
        session.id = r.header.session_id
        session.flags = struct.unpack_from("<H", r.raw, 66)[0]
        c.sessions[session.id] = session
    return session


def negotiated(server, dialect=wire.SMB311, guid=None):
    c = server.client()
    assert c.negotiate((dialect,), client_guid=guid).status == wire.STATUS_SUCCESS
    return c


# -- what an anonymous session reaches ------------------------------------------------------------
@WRAPS
@pytest.mark.parametrize("dialect", [wire.SMB311, wire.SMB210], ids=["3.1.1", "2.1"])
def test_a_null_session_reaches_ipc_and_no_share_without_guest_ok(plain, wrap, dialect):
    c = negotiated(plain, dialect)
    s = anonymous_exchange(c, wrap=wrap)
    assert s.status == wire.STATUS_SUCCESS, s.last
    assert s.flags & wire.SESSION_FLAG_IS_NULL
    assert not s.last.header.flags & wire.FLAGS_SIGNED
    assert c.tree_connect(s, "IPC$").status == wire.STATUS_SUCCESS
    for share in ("ro", "rw", "enc"):
        assert c.tree_connect(s, share).status == wire.STATUS_ACCESS_DENIED, share
    for name in ("homes", "nosuchshare", "anonymous", "nobody"):     # no [homes] for anonymous
        assert c.tree_connect(s, name).status == wire.STATUS_BAD_NETWORK_NAME, name


LOOKS_ANONYMOUS = {
    # an empty user name with a response of any kind proves nothing: no anonymous logon
    "empty-user-nt-response": dict(nt=b"\0" * 24),
    "empty-user-ntlmv2-sized": dict(nt=os.urandom(48)),
    "empty-user-lm-byte": dict(lm=b"\x01"),
    "empty-user-lm-response": dict(lm=b"\0" * 24),
    # a user name with no responses is that user's logon, and proves no password
    "known-user-no-response": dict(user=USER),
    "unknown-user-no-response": dict(user="nosuchuser"),
    "guest-no-response": dict(user="guest"),
}


@WRAPS
@pytest.mark.parametrize("case", LOOKS_ANONYMOUS)
def test_a_logon_that_only_looks_anonymous_is_refused(plain, wrap, case):
    c = negotiated(plain)
    s = anonymous_exchange(c, wrap=wrap, **LOOKS_ANONYMOUS[case])
    assert s.status in (wire.STATUS_LOGON_FAILURE, wire.STATUS_INVALID_PARAMETER), s.last
    assert c.tree_connect(s, "IPC$").status == wire.STATUS_USER_SESSION_DELETED


def test_a_domain_name_does_not_make_an_anonymous_logon_a_users(plain):
    """(Samba's anonymous module looks at the account name only.)"""
    c = negotiated(plain)
    s = anonymous_exchange(c, domain="WORKGROUP")
    assert s.status == wire.STATUS_SUCCESS and s.flags & wire.SESSION_FLAG_IS_NULL
    assert c.tree_connect(s, "rw").status == wire.STATUS_ACCESS_DENIED


# -- no keys --------------------------------------------------------------------------------------
@pytest.mark.parametrize("guess", ["zero-session-key", "random"])
def test_a_null_session_has_no_key_to_sign_with(plain, guess):
    """The anonymous NTLM logon's session key is public (MS-NLMP: a SessionBaseKey of zeros,
    and the client's own random key under KEY_EXCH); the server derives no signing key from
    it, so no signature is one it accepts: a signed request is refused, whatever key signed it."""
    c = negotiated(plain)
    s = anonymous_exchange(c)
    assert s.status == wire.STATUS_SUCCESS
    key = (security.signing_key(b"\0" * 16, c.dialect, s.preauth.value) if guess == "zero-session-key"
           else os.urandom(16))
    msg = c.message(wire.TREE_CONNECT, struct.pack("<HHHH", 9, 0, 72, 26) + wire.utf16("\\\\h\\IPC$"),
                    session=s)
    c.send([msg], sign=True, signing_key=key)
    r = c.response_to(wire.Header.parse(msg).message_id)
    assert r.status == wire.STATUS_ACCESS_DENIED, r
    assert not r.header.flags & wire.FLAGS_SIGNED
    assert c.tree_connect(s, "IPC$").status == wire.STATUS_SUCCESS      # unsigned: served


def test_no_anonymous_logon_where_encryption_is_required(servers):
    """server smb encrypt = required: a session without keys could not encrypt (as smbd)."""
    server = servers({"server smb encrypt": "required"})
    c = negotiated(server)
    assert anonymous_exchange(c).status == wire.STATUS_ACCESS_DENIED
    _c, s = server.logon()
    assert s.status == wire.STATUS_SUCCESS


# -- a user's session stays the user's ------------------------------------------------------------
def user_with_open_file(server):
    c, s = server.logon()
    tree = c.tree(s, "rw")
    fid = tree.open(f"users-{os.urandom(4).hex()}", wire.GENERIC_READ | wire.GENERIC_WRITE, wire.FILE_CREATE)
    assert tree.request(wire.WRITE, write_body(fid, b"the user's data")).status == wire.STATUS_SUCCESS
    return c, s, tree, fid


def test_an_anonymous_logon_naming_a_users_session_as_previous_leaves_it(plain):
    c1, s1, tree, fid = user_with_open_file(plain)
    c2 = negotiated(plain, guid=c1.offered["guid"])
    s = anonymous_exchange(c2, previous=s1.id)
    assert s.status == wire.STATUS_SUCCESS and s.id != s1.id
    got = tree.request(wire.READ, read_body(fid, 100))
    assert got.status == wire.STATUS_SUCCESS and got.raw.endswith(b"the user's data")


@pytest.mark.parametrize("signed", [True, False], ids=["signed-with-the-sessions-key", "unsigned"])
def test_anonymous_cannot_bind_a_channel_to_a_users_session(plain, signed):
    """Binding as anonymous to a user's session, with every leg signed with that session's
    key (as if the key had leaked): ACCESS_DENIED once the logon shows who it is (as smbd:
    another identity than the session's); the session goes on on its own channel."""
    c1, s1, tree, fid = user_with_open_file(plain)
    c2 = negotiated(plain, guid=c1.offered["guid"])
    channel = Session(id=s1.id)
    r = anonymous_exchange(c2, channel, flags=wire.SESSION_FLAG_BINDING,
                           signing_key=s1.signing_key if signed else None).last
    assert r.status == (wire.STATUS_ACCESS_DENIED if signed else wire.STATUS_INVALID_PARAMETER), r
    got = c2.request(wire.READ, read_body(fid, 100), session=s1.id, tree_id=tree.id, sign=False)
    assert got.status in (wire.STATUS_USER_SESSION_DELETED, wire.STATUS_ACCESS_DENIED), got
    got = tree.request(wire.READ, read_body(fid, 100))
    assert got.status == wire.STATUS_SUCCESS and got.raw.endswith(b"the user's data")


def test_a_null_session_cannot_be_bound_to(plain):
    """A null session has no key to prove: a binding to it, unsigned or signed with a guessed
    key, is refused and it goes on unchanged."""
    c1 = negotiated(plain)
    s = anonymous_exchange(c1)
    assert s.status == wire.STATUS_SUCCESS
    c2 = negotiated(plain, guid=c1.offered["guid"])
    for key in (None, os.urandom(16)):
        r = anonymous_exchange(c2, Session(id=s.id), flags=wire.SESSION_FLAG_BINDING, signing_key=key).last
        assert r.status in (wire.STATUS_INVALID_PARAMETER, wire.STATUS_ACCESS_DENIED,
                            wire.STATUS_NOT_SUPPORTED), r
    assert c1.tree_connect(s, "IPC$").status == wire.STATUS_SUCCESS


def test_a_session_reauthenticated_anonymously_holding_ipc_ends_under_restrict_anonymous_2(servers):
    server = servers({"restrict anonymous": "2"})
    c, s = server.logon()
    c.tree(s, "IPC$")
    tree = c.tree(s, "rw")
    assert anonymous_exchange(c, s).status == wire.STATUS_ACCESS_DENIED
    assert tree.create("", wire.GENERIC_READ).status == wire.STATUS_USER_SESSION_DELETED


# -- whom security descriptors see ----------------------------------------------------------------
FILE_GENERIC_READ = 0x00120089


def file_with_dacl(server, aces, data: bytes) -> str:
    """A file the user makes on [rw] with the DACL given, then moved (on disk, its stored
    descriptor with it) into [public]; its name."""
    c, s = server.logon()
    tree = c.tree(s, "rw")
    name = f"sd-{os.urandom(4).hex()}.txt"
    fid = tree.open(name, wire.GENERIC_READ | wire.GENERIC_WRITE | 0x40000, wire.FILE_CREATE)
    assert tree.request(wire.WRITE, write_body(fid, data)).status == wire.STATUS_SUCCESS
    sd = acl.Descriptor(control=acl.SE_DACL_PRESENT, dacl=aces).pack(acl.DACL)
    assert tree.set_info(fid, wire.INFO_SECURITY, 0, sd, additional=acl.DACL).status == wire.STATUS_SUCCESS
    tree.close(fid)
    os.rename(server.path("rw") / name, server.path("public") / name)
    return name


def test_security_descriptors_see_a_null_session_as_anonymous_logon(servers):
    """S-1-5-7 is in the null session's token: an ACE granting it read lets it read, a deny
    ACE naming it shuts it out where Everyone may read (and a user still reads)."""
    server = servers(guest=True)
    granted = file_with_dacl(server, [acl.Ace(acl.ALLOWED, 0, FILE_GENERIC_READ, ANONYMOUS_LOGON)], b"for anonymous")
    denied = file_with_dacl(server, [acl.Ace(acl.DENIED, 0, FILE_GENERIC_READ, ANONYMOUS_LOGON),
                                     acl.Ace(acl.ALLOWED, 0, FILE_GENERIC_READ, acl.EVERYONE)], b"not for anonymous")
    c = negotiated(server)
    s = anonymous_exchange(c)
    tree = c.tree(s, "public")
    fid = tree.open(granted, wire.GENERIC_READ)
    got = tree.request(wire.READ, read_body(fid, 100))
    assert got.status == wire.STATUS_SUCCESS and got.raw.endswith(b"for anonymous")
    assert tree.create(denied, wire.GENERIC_READ).status == wire.STATUS_ACCESS_DENIED
    c, s = server.logon()
    user_tree = c.tree(s, "public")
    assert user_tree.create(granted, wire.GENERIC_READ).status == wire.STATUS_ACCESS_DENIED
    user_tree.close(user_tree.open(denied, wire.GENERIC_READ))


# -- a ClientGuid is no credential ----------------------------------------------------------------
def test_another_connection_with_a_clients_guid_cannot_use_up_its_sessions_or_pipes(plain):
    """NEGOTIATE alone puts a connection among those of its ClientGuid (so that channels can
    bind), and a ClientGuid travels in the clear. A connection that names another client's
    GUID and logs on anonymously many times, or opens pipes, must not exhaust that client's
    sessions or pipes: they are counted per connection."""
    from servers import PASSWORD
    from smbcore import create_body
    guid = os.urandom(16)
    victim = negotiated(plain, guid=guid)
    victim.logon(USER, PASSWORD)
    intruder = negotiated(plain, guid=guid)
    sessions = []
    for _ in range(80):
        s = anonymous_exchange(intruder)
        if s.status != wire.STATUS_SUCCESS:
            assert s.status == wire.STATUS_INSUFFICIENT_RESOURCES
            break
        sessions.append(s)
    assert len(sessions) >= 1
    # the intruder's connection is full; the victim's is not
    s2 = victim.logon(USER, PASSWORD)
    assert s2.status == wire.STATUS_SUCCESS
    # pipes: the intruder opens what it may on IPC$; the victim still opens its own
    tree = intruder.tree(sessions[0], "IPC$")
    for _ in range(200):
        r = tree.request(wire.CREATE, create_body("srvsvc", wire.GENERIC_READ | wire.GENERIC_WRITE,
                                                  wire.FILE_OPEN, 0))
        if r.status != wire.STATUS_SUCCESS:
            assert r.status == wire.STATUS_INSUFFICIENT_RESOURCES
            break
    vtree = victim.tree(s2, "IPC$")
    r = vtree.request(wire.CREATE, create_body("srvsvc", wire.GENERIC_READ | wire.GENERIC_WRITE, wire.FILE_OPEN, 0))
    assert r.status == wire.STATUS_SUCCESS


def test_another_connection_with_a_clients_guid_cannot_use_up_its_open_files(servers):
    """As above, for `max open files`: the intruder fills what its own connection may hold
    on a guest share; the client's connection still opens files."""
    from servers import PASSWORD
    from smbcore import create_body
    server = servers({"max open files": "4"}, guest=True)
    (server.root / "public" / "f.txt").write_text("x")
    guid = os.urandom(16)
    victim = negotiated(server, guid=guid)
    vs = victim.logon(USER, PASSWORD)
    intruder = negotiated(server, guid=guid)
    s = anonymous_exchange(intruder)
    assert s.status == wire.STATUS_SUCCESS
    tree = intruder.tree(s, "public")
    statuses = [tree.request(wire.CREATE, create_body("f.txt", wire.GENERIC_READ, wire.FILE_OPEN, 0)).status
                for _ in range(6)]
    assert statuses[:4] == [wire.STATUS_SUCCESS] * 4 and statuses[4] == wire.STATUS_TOO_MANY_OPENED_FILES
    vtree = victim.tree(vs, "public")
    r = vtree.request(wire.CREATE, create_body("f.txt", wire.GENERIC_READ, wire.FILE_OPEN, 0))
    assert r.status == wire.STATUS_SUCCESS


def test_another_connection_with_a_clients_guid_cannot_use_up_its_locks(servers):
    """As above, for `max locks per connection`."""
    from servers import PASSWORD
    from smbcore import create_body, lock_body
    server = servers({"max locks per connection": "2"}, guest=True)
    (server.root / "public" / "f.txt").write_text("x" * 100)
    guid = os.urandom(16)
    victim = negotiated(server, guid=guid)
    vs = victim.logon(USER, PASSWORD)
    intruder = negotiated(server, guid=guid)
    s = anonymous_exchange(intruder)
    tree = intruder.tree(s, "public")
    fid = tree.open("f.txt", wire.GENERIC_READ, wire.FILE_OPEN)
    shared_now = wire.LOCK_SHARED | wire.LOCK_FAIL_IMMEDIATELY
    statuses = [tree.request(wire.LOCK, lock_body(fid, [(i, 1, shared_now)])).status for i in range(3)]
    assert statuses == [wire.STATUS_SUCCESS, wire.STATUS_SUCCESS, wire.STATUS_INSUFFICIENT_RESOURCES]
    vtree = victim.tree(vs, "public")
    vfid = vtree.open("f.txt", wire.GENERIC_READ, wire.FILE_OPEN)
    assert vtree.request(wire.LOCK, lock_body(vfid, [(50, 1, shared_now)])).status == wire.STATUS_SUCCESS
