"""An adversarial review of the logon: ways in without the password, against a real server.

Each AUTHENTICATE here is built by hand (MS-NLMP 2.2.1.3), so that one field at a time can be
wrong: a response copied from another exchange, an AUTHENTICATE with no CHALLENGE before it
or on another session's exchange, a zeroed or cut NTProofStr, a zeroed NTLM MIC the blob
announces (drop-the-MIC), a key exchange key of the wrong size, user names spelled to reach
another account. Then guests (`map to guest = bad user` never admits a known user with a
wrong password; a guest never reaches a share that must be encrypted) and re-authentication
(a wrong password ends the session with its opens). Each must be refused, or log on as the
account whose password the response proves, never another.
"""
import hashlib
import hmac
import os
import struct

import pytest
from smbcore import carry_out

from logon import (EXTENDED_SESSIONSECURITY, V1_FLAGS, neg_token_init, neg_token_resp, ntlm_negotiate,
                   ntlm_token, ntlmv2_blob, server_challenge, target_info)
from smbring.server.accounts import ServerAccount, UnixAccounts
from smbring.server.users import PasswordLookup
from smbring.smb import ntlm_crypto as nc
from smbring.smb import wire
from smbring.smb.connection import Connection
from smbring.smb.policy import Policy
from smbring.smb.state import Share
from smbring.vfs.posix import PosixVFS

KEY_EXCH, SIGN = 0x40000000, 0x10
FLAGS = V1_FLAGS | EXTENDED_SESSIONSECURITY | SIGN
REFUSED = (wire.STATUS_LOGON_FAILURE, wire.STATUS_INVALID_PARAMETER)
MIC_PRESENT = struct.pack("<HHI", 6, 4, 2)      # MsvAvFlags: a MIC is in the AUTHENTICATE


@pytest.fixture(scope="module")
def plain(servers):
    return servers()


@pytest.fixture(scope="module")
def bad_user(servers):
    """map to guest = bad user, with a guest ok share, and one that must be encrypted."""
    return servers({"map to guest": "bad user"}, guest=True)


def hmac_md5(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.md5).digest()


def negotiated(server):
    c = server.client()
    assert c.negotiate((wire.SMB311,)).status == wire.STATUS_SUCCESS
    return c


def authenticate_message(user: str, nt: bytes, *, domain: str = "", flags: int = FLAGS,
                         key: bytes = b"", mic: bytes | None = None) -> bytes:
    """AUTHENTICATE_MESSAGE; with `mic`, a Version and that MIC before the payload (at 88)."""
    start = 64 if mic is None else 88
    payload, fields = b"", b""
    for value in (b"\0" * 24, nt, wire.utf16(domain), wire.utf16(user), wire.utf16("CLIENT"), key):
        fields += struct.pack("<HHI", len(value), len(value), start + len(payload))
        payload += value
    head = b"NTLMSSP\0" + struct.pack("<I", 3) + fields + struct.pack("<I", flags)
    return head + (b"" if mic is None else b"\0" * 8 + mic) + payload


def v2(nt_hash: bytes, user: str, domain: str, challenge: bytes, blob: bytes) -> tuple[bytes, bytes]:
    """(NtChallengeResponse, SessionBaseKey) of NTLMv2 for the password whose hash is given."""
    key = hmac_md5(nt_hash, (nc.windows_upper(user) + domain).encode("utf-16-le"))
    proof = hmac_md5(key, challenge + blob)
    return proof + blob, hmac_md5(key, proof)


def exchange(c, build, *, wrap: bool = False, negotiate: bytes | None = None, session=None):
    """NEGOTIATE, then build(CHALLENGE message, NEGOTIATE message) as the AUTHENTICATE. The
    session (.status: the last answer's)."""
    negotiate = negotiate if negotiate is not None else ntlm_negotiate(FLAGS)
    session = c.start_logon(session)
    r = c.session_setup(session, neg_token_init(negotiate) if wrap else negotiate)
    assert r.status == wire.STATUS_MORE_PROCESSING_REQUIRED, r
    authenticate = build(ntlm_token(c.security_buffer(r)), negotiate)
    c.session_setup(session, neg_token_resp(authenticate) if wrap else authenticate)
    return session


def right_password(server, user=None, **knobs):
    """An AUTHENTICATE builder: NTLMv2 with USER's password, for the name `user`."""
    user = server.user if user is None else user

    def build(challenge, _negotiate):
        nt, _key = v2(server.nt_hash(), user, "", server_challenge(challenge),
                      ntlmv2_blob(target_info(challenge)))
        return authenticate_message(user, nt, **knobs)
    return build


def test_the_forging_here_logs_on(plain):
    """(What the refusals below are measured against: the same builder, all fields right.)"""
    c = negotiated(plain)
    assert exchange(c, right_password(plain)).status == wire.STATUS_SUCCESS
    assert exchange(negotiated(plain), right_password(plain), wrap=True).status == wire.STATUS_SUCCESS


# -- a response that proves nothing here ------------------------------------------------------------
def test_a_response_copied_from_another_connection_is_refused(plain):
    """The response an eavesdropper saw logs on nowhere else: each exchange has its own
    challenge (and timestamp), and an exchange takes one AUTHENTICATE."""
    seen = []

    def build(challenge, negotiate):
        seen.append(right_password(plain)(challenge, negotiate))
        return seen[-1]
    c1 = negotiated(plain)
    assert exchange(c1, build).status == wire.STATUS_SUCCESS
    c2 = negotiated(plain)
    s = exchange(c2, lambda _challenge, _negotiate: seen[0])
    assert s.status in REFUSED, s.last
    # the same connection, a new exchange: a new challenge, and the old answer is no answer
    s = exchange(c1, lambda _challenge, _negotiate: seen[0])
    assert s.status in REFUSED, s.last
    # once more on the exchange that took it (a re-authentication is a new exchange)
    assert exchange(c2, build).status == wire.STATUS_SUCCESS
    first = c2.sessions[max(c2.sessions)]
    r = c2.session_setup(first, seen[-1])
    assert r.status in REFUSED, r


def test_an_authenticate_without_a_challenge_is_refused(plain):
    """An AUTHENTICATE as the first token of an exchange (on a new session), or sent on the
    session of another exchange than the one whose challenge it answers."""
    c = negotiated(plain)
    donor = negotiated(plain)
    messages = []

    def build(challenge, negotiate):
        messages.append(right_password(plain)(challenge, negotiate))
        return messages[-1]
    exchange(donor, build)
    s = c.start_logon(None)
    assert c.session_setup(s, messages[0]).status in REFUSED
    # two exchanges in progress on one connection; the answer to the first sent on the second
    first, second = c.start_logon(None), c.start_logon(None)
    r1 = c.session_setup(first, ntlm_negotiate(FLAGS))
    r2 = c.session_setup(second, ntlm_negotiate(FLAGS))
    assert r1.status == r2.status == wire.STATUS_MORE_PROCESSING_REQUIRED
    answer_to_first = right_password(plain)(ntlm_token(c.security_buffer(r1)), b"")
    assert c.session_setup(second, answer_to_first).status in REFUSED
    assert c.tree_connect(second, "ro").status != wire.STATUS_SUCCESS


def test_a_logon_under_way_reaches_nothing(plain):
    """Between the CHALLENGE and the AUTHENTICATE the session has no user: its tree connects
    are refused, and after a failed AUTHENTICATE the session is gone."""
    c = negotiated(plain)
    s = c.start_logon(None)
    assert c.session_setup(s, ntlm_negotiate(FLAGS)).status == wire.STATUS_MORE_PROCESSING_REQUIRED
    for share in ("IPC$", "ro"):
        assert c.tree_connect(s, share, sign=False).status != wire.STATUS_SUCCESS, share
    r = c.session_setup(s, authenticate_message(plain.user, os.urandom(16) + b"\0" * 40))
    assert r.status in REFUSED, r
    assert c.tree_connect(s, "IPC$", sign=False).status == wire.STATUS_USER_SESSION_DELETED


PROOFS = {
    "zeroed-proof": lambda nt: b"\0" * 16 + nt[16:],
    "flipped-proof-bit": lambda nt: bytes([nt[0] ^ 1]) + nt[1:],
    "proof-only": lambda nt: nt[:16],
    "v1-sized": lambda nt: nt[:24],
    "cut-blob": lambda nt: nt[:40],
    "empty": lambda _nt: b"",
}


@pytest.mark.parametrize("case", PROOFS)
def test_a_zeroed_or_cut_ntproofstr_is_refused(plain, case):
    def build(challenge, negotiate):
        good = right_password(plain)(challenge, negotiate)
        nt_len, _max, nt_off = struct.unpack_from("<HHI", good, 20)
        nt = good[nt_off:nt_off + nt_len]
        return authenticate_message(plain.user, PROOFS[case](nt))
    c = negotiated(plain)
    s = exchange(c, build)
    assert s.status in REFUSED, s.last
    assert c.tree_connect(s, "ro").status != wire.STATUS_SUCCESS


# -- the NTLM MIC and the key exchange ---------------------------------------------------------------
def mic_logon(server, tamper, *, wrap=True):
    """NTLMv2 with the right password whose blob announces a MIC; tamper(auth, mic) gives the
    AUTHENTICATE sent (auth: with the right MIC, mic: that MIC)."""
    def build(challenge, negotiate):
        blob = ntlmv2_blob(MIC_PRESENT + target_info(challenge))
        nt, exported = v2(server.nt_hash(), server.user, "", server_challenge(challenge), blob)
        zeroed = authenticate_message(server.user, nt, mic=b"\0" * 16)
        mic = hmac_md5(exported, negotiate + challenge + zeroed)
        return tamper(authenticate_message(server.user, nt, mic=mic), mic)
    return exchange(negotiated(server), build, wrap=wrap)


def test_the_right_ntlm_mic_logs_on(plain):
    """(The MIC computed here is right: the SPNEGO exchange then wants a mechListMIC, which
    this client does not send; a raw NTLMSSP exchange completes.)"""
    assert mic_logon(plain, lambda auth, _mic: auth, wrap=False).status == wire.STATUS_SUCCESS


MIC_TAMPERING = {
    "zeroed-mic": lambda auth, _mic: auth[:72] + b"\0" * 16 + auth[88:],
    "flipped-mic": lambda auth, mic: auth[:72] + bytes([mic[0] ^ 1]) + mic[1:] + auth[88:],
    # the flags the MIC covers changed after it was made (signing dropped, as a relay would)
    "sign-flag-dropped": lambda auth, _mic: auth[:60] + struct.pack("<I", FLAGS & ~SIGN) + auth[64:],
    "mic-cut-off": lambda auth, _mic: authenticate_message_without_mic(auth),
}


def authenticate_message_without_mic(auth: bytes) -> bytes:
    """The same fields, the Version and MIC removed (the payload moved up to 64)."""
    fields = b""
    for at in range(12, 60, 8):
        length, maximum, offset = struct.unpack_from("<HHI", auth, at)
        fields += struct.pack("<HHI", length, maximum, offset - 24)
    return auth[:12] + fields + auth[60:64] + auth[88:]


@pytest.mark.parametrize("wrap", [False, True], ids=["raw-ntlmssp", "spnego"])
@pytest.mark.parametrize("case", MIC_TAMPERING)
def test_a_mic_the_blob_announces_cannot_be_dropped(plain, case, wrap):
    s = mic_logon(plain, MIC_TAMPERING[case], wrap=wrap)
    assert s.status in REFUSED, s.last


@pytest.mark.parametrize("size", [0, 8, 15, 17, 32])
def test_a_key_exchange_with_a_wrong_sized_key_is_refused(plain, size):
    c = negotiated(plain)
    s = exchange(c, right_password(plain, flags=FLAGS | KEY_EXCH, key=os.urandom(size)),
                 negotiate=ntlm_negotiate(FLAGS | KEY_EXCH))
    assert s.status == wire.STATUS_LOGON_FAILURE, s.last


def overlong(auth: bytes, at: int, length: int, offset: int) -> bytes:
    return auth[:at] + struct.pack("<HHI", length, length, offset) + auth[at + 8:]


FIELDS = {"lm": 12, "nt": 20, "domain": 28, "user": 36, "workstation": 44, "key": 52}


@pytest.mark.parametrize("where", [(0xFFFF, 64), (16, 0xFFFFFFFF), (0xFFFF, 0xFFFFFFF0)],
                         ids=["long", "far", "wrapping"])
@pytest.mark.parametrize("field", FIELDS)
def test_fields_outside_the_authenticate_are_refused(plain, field, where):
    c = negotiated(plain)
    s = exchange(c, lambda challenge, negotiate: overlong(right_password(plain)(challenge, negotiate),
                                                            FIELDS[field], *where))
    assert s.status in REFUSED, s.last
    assert exchange(c, right_password(plain)).status == wire.STATUS_SUCCESS, "the connection went on"


# -- names --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["alice\0", "alice ", " alice", "alice@WORKGROUP", "WORKGROUP\\alice",
                                  "\uff41lice", "a\u200blice", "alic\u0435", ""])
def test_a_name_that_is_not_the_account_is_refused_with_its_password(plain, name):
    """USER's password over another spelling (a trailing NUL or space, a UPN, the domain in
    the name field, fullwidth, zero-width or Cyrillic lookalikes, none): no such account."""
    assert plain.user == "alice"
    s = exchange(negotiated(plain), right_password(plain, user=name))
    assert s.status in REFUSED, s.last


@pytest.mark.parametrize("name,domain", [("ALICE", ""), ("Alice", "ANYDOMAIN"), ("alice", "alice@realm")])
def test_another_case_or_domain_logs_on_as_the_same_account(plain, name, domain):
    def build(challenge, _negotiate):
        nt, _key = v2(plain.nt_hash(), name, domain, server_challenge(challenge),
                      ntlmv2_blob(target_info(challenge)))
        return authenticate_message(name, nt, domain=domain)
    c = negotiated(plain)
    s = exchange(c, build)
    assert s.status == wire.STATUS_SUCCESS
    assert not s.flags & (wire.SESSION_FLAG_IS_GUEST | wire.SESSION_FLAG_IS_NULL)


# -- guests -------------------------------------------------------------------------------------------
def test_bad_user_never_makes_a_known_user_with_a_wrong_password_a_guest(bad_user):
    c = negotiated(bad_user)
    s = c.logon(bad_user.user, "wrong-password", check=False)
    assert s.status == wire.STATUS_LOGON_FAILURE, s.last
    s = c.logon("nosuchuser", "whatever", check=False)
    assert s.status == wire.STATUS_SUCCESS and s.flags & wire.SESSION_FLAG_IS_GUEST
    assert c.tree_connect(s, "public").status == wire.STATUS_SUCCESS
    for share in ("rw", "ro", "enc"):
        assert c.tree_connect(s, share).status == wire.STATUS_ACCESS_DENIED, share


def test_a_guest_never_reaches_a_share_that_must_be_encrypted(servers):
    """Every share guest ok ([global] default), `enc` with smb encrypt = required: a guest has
    no keys to encrypt with, so it is refused there."""
    server = servers({"map to guest": "bad user", "guest ok": "yes"}, guest=True)
    c = negotiated(server)
    s = c.logon("nosuchuser", "whatever", check=False)
    assert s.status == wire.STATUS_SUCCESS and s.flags & wire.SESSION_FLAG_IS_GUEST
    assert c.tree_connect(s, "ro").status == wire.STATUS_SUCCESS
    assert c.tree_connect(s, "enc").status == wire.STATUS_ACCESS_DENIED


# -- re-authentication --------------------------------------------------------------------------------
def test_a_reauthentication_with_a_wrong_password_ends_the_session_and_its_opens(plain):
    c, s = plain.logon()
    tree = c.tree(s, "rw")
    fid = tree.create("reauth.txt", wire.GENERIC_READ | wire.GENERIC_WRITE, wire.FILE_OVERWRITE_IF).file_id
    r = c.logon(plain.user, "wrong-password", session=s, check=False).last
    assert r.status == wire.STATUS_LOGON_FAILURE, r
    assert tree.read(fid, 1).status == wire.STATUS_USER_SESSION_DELETED
    # nor as anyone else without a password (a name with no responses)
    c, s = plain.logon()
    r = c.session_setup(s, authenticate_message(plain.user, b""))
    assert r.status in REFUSED, r
    assert c.tree_connect(s, "rw").status == wire.STATUS_USER_SESSION_DELETED


# -- share rules name the account whose password the logon proved -------------------------------------
# A server that is not root acts as its own user for everyone, and its share rules (valid
# users, invalid users, read list, write list) name the SMB user. The password file finds an
# account by its name in any case, folded as Unicode folds it: "ſteve" (long s) and "ﬆeve"
# (the st ligature) reach steve's line, and steve's password logs them on. The rules must
# then see "steve", the account proved, never the client's spelling, which no list names.
# (In-process: the test servers run as root, where rules name the Unix account.)
STEVE_PASSWORD = "Steve-pw3"


def in_process_server(tmp_path, more_shares: tuple[Share, ...] = (), **share):
    """A Connection past NEGOTIATE (2.0.2) of a server not running as root (`ServerAccount`),
    one share "s" with `share`'s rules (and `more_shares`), steve in its password file.
    (conn, request)."""
    passdb = tmp_path / "passdb"
    nt_hash = nc.nt_hash(STEVE_PASSWORD).hex().upper()
    passdb.write_text(f"steve:1000:{'X' * 32}:{nt_hash}:[U          ]:LCT-00000000\n")
    shares = {"s": Share("s", str(tmp_path), **share)} | {more.name: more for more in more_shares}
    conn = Connection(shares, lookup=PasswordLookup(str(passdb)), policy=Policy(accounts=UnixAccounts()),
                      open_fs=lambda share, _identity: PosixVFS(share.path), identities=ServerAccount())

    def request(command: int, body: bytes, message_id: int, session_id: int = 0):
        frame = struct.pack("<4sHHIHHIIQIIQ16s", b"\xfeSMB", 64, 0, 0, command, 1, 0, 0, message_id,
                            0, 0, session_id, b"\0" * 16) + body
        data = b"".join(carry_out(conn.handle_frame(frame)))
        status, = struct.unpack_from("<I", data, 8)
        sid, = struct.unpack_from("<Q", data, 40)
        return status, sid, data
    request(wire.NEGOTIATE, struct.pack("<HHHHI16sIHH", 36, 1, 1, 0, 0, b"\1" * 16, 0, 0, 0)
            + struct.pack("<H", wire.SMB202), 0)
    return conn, request


def in_process_logon(request, user: str) -> tuple[int, int]:
    """steve's password over the name `user` (NTLMv2, the name upper-cased as Windows does).
    (status, session id)."""
    def setup(token, message_id, session_id=0):
        body = struct.pack("<HBBIIHHQ", 25, 0, 1, 0, 0, 64 + 24, len(token), 0) + token
        status, sid, data = request(wire.SESSION_SETUP, body, message_id, session_id)
        off, length = struct.unpack_from("<HH", data, 68) if len(data) >= 72 else (0, 0)
        return status, sid, data[off:off + length]
    status, sid, challenge = setup(ntlm_negotiate(FLAGS), 1)
    assert status == wire.STATUS_MORE_PROCESSING_REQUIRED
    nt, _key = v2(nc.nt_hash(STEVE_PASSWORD), user, "", server_challenge(challenge),
                  ntlmv2_blob(target_info(challenge)))
    status, _, _ = setup(authenticate_message(user, nt), 2, sid)
    return status, sid


def in_process_tree_status(request, sid: int, share: str = "s", message_id: int = 3) -> int:
    path = wire.utf16("\\\\server\\" + share)
    status, _, _ = request(wire.TREE_CONNECT, struct.pack("<HHHH", 9, 0, 72, len(path)) + path, message_id, sid)
    return status


SPELLINGS = {"plain": "steve", "upper": "STEVE", "long-s": "\u017fteve", "st-ligature": "\ufb06eve",
             "long-st-ligature": "\ufb05eve"}


@pytest.mark.parametrize("name", SPELLINGS.values(), ids=SPELLINGS.keys())
@pytest.mark.parametrize("rule, status", [("invalid_users", wire.STATUS_ACCESS_DENIED),
                                          ("valid_users", wire.STATUS_SUCCESS)],
                         ids=["invalid-users-refuses", "valid-users-admits"])
def test_a_users_list_holds_whatever_spelling_reached_the_account(tmp_path, name, rule, status):
    conn, request = in_process_server(tmp_path, **{rule: ["steve"]})
    try:
        logon, sid = in_process_logon(request, name)
        assert logon == wire.STATUS_SUCCESS, hex(logon)
        assert in_process_tree_status(request, sid) == status
    finally:
        conn.close_all()


def test_a_server_not_run_as_root_gives_each_user_their_own_home_only(tmp_path):
    """Where every session acts as the server's one account, nothing but the share rules
    would keep one user out of another's home: a session reaches its own home (by its name or
    "homes"), never another account's by naming it (root's, whose home the system knows),
    whatever the [homes] section's rules."""
    for who in ("steve", "root"):
        (tmp_path / "homes" / who).mkdir(parents=True)
    homes = Share("homes", str(tmp_path / "homes" / "%S"), homes=True, section="homes")
    conn, request = in_process_server(tmp_path, more_shares=(homes,))
    try:
        logon, sid = in_process_logon(request, "steve")
        assert logon == wire.STATUS_SUCCESS, hex(logon)
        asked = {"steve": wire.STATUS_SUCCESS, "homes": wire.STATUS_SUCCESS,
                 "root": wire.STATUS_BAD_NETWORK_NAME, "ro\0ot": wire.STATUS_BAD_NETWORK_NAME}
        for message_id, (share, status) in enumerate(asked.items(), start=3):
            assert in_process_tree_status(request, sid, share, message_id) == status, share
    finally:
        conn.close_all()


def test_a_share_name_with_a_nul_is_no_accounts_home():
    """[homes] looks up any share name a client sends among the Unix accounts: one with a
    NUL (which the system's lookup refuses with ValueError) is simply no account's."""
    from smbring.server.accounts import user_in_group
    assert UnixAccounts().home("ro\0ot") is None
    assert not user_in_group("ro\0ot", "root") and not user_in_group("root", "ro\0ot")
    assert UnixAccounts().groups("ro\0ot") == frozenset()


def test_a_home_reached_by_two_names_counts_once_against_max_connections(tmp_path):
    """`max connections` of [homes] counts a home under its own name: reached as "homes" and
    by its owner's name, it is one share, not two with a count each."""
    (tmp_path / "homes" / "steve").mkdir(parents=True)
    homes = Share("homes", str(tmp_path / "homes" / "%S"), homes=True, section="homes", max_connections=1)
    conn, request = in_process_server(tmp_path, more_shares=(homes,))
    try:
        logon, sid = in_process_logon(request, "steve")
        assert logon == wire.STATUS_SUCCESS, hex(logon)
        assert in_process_tree_status(request, sid, "steve", 3) == wire.STATUS_SUCCESS
        assert in_process_tree_status(request, sid, "homes", 4) == wire.STATUS_INSUFFICIENT_RESOURCES
    finally:
        conn.close_all()
