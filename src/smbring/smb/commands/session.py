"""SESSION_SETUP (logon, re-authentication, binding a channel, PreviousSessionId) and LOGOFF
(MS-SMB2 3.3.5.5, 3.3.5.6). Multichannel is described in `smb.channels`."""
from __future__ import annotations

import logging
import struct
import time
from typing import TYPE_CHECKING

from smbring.smb import ntlm, security, share_access, wire
from smbring.smb.channels import Channel, signer_on
from smbring.smb.commands.negotiate import rhdr_bytes
from smbring.smb.commands.tree import binding_refusal, reauthorize, tree_files
from smbring.smb.effects import FileSteps, Wait
from smbring.smb.errors import SMBError, in_request
from smbring.smb.state import Session
from smbring.smb.wire import Header

if TYPE_CHECKING:
    from smbring.smb.connection import Connection

log = logging.getLogger("smbring.smb")
# every logon attempt, with its user, client address and result: a logger of its own, so that
# an administrator can send it elsewhere or keep it at another level
audit = logging.getLogger("smbring.audit")


def h_session_setup(c: Connection, hdr: Header, msg: bytes, rhdr: Header, _):
    if not c.dialect:
        raise SMBError(wire.STATUS_INVALID_PARAMETER)
    _size, flags, secmode, caps, channel, off, length, prev = struct.unpack_from("<HBBIIHHQ", msg, 64)
    token = in_request(msg, off, length)
    if flags & wire.SESSION_FLAG_BINDING:
        return bind(c, hdr, msg, rhdr, bytes(token))
    s = c.sessions.get(hdr.session_id) if hdr.session_id else None
    if s is not None and not c.reaches(s):
        s = None        # a session of another connection: reached by binding only
    if s is None:
        if hdr.session_id:
            other = c.state.sessions.get(hdr.session_id)
            if other is not None:       # (another connection's or another client's)
                answer_as_session(c, hdr, msg, rhdr, other)
            raise SMBError(wire.STATUS_USER_SESSION_DELETED)
        sid = c.state.sessions.new_session_id()
        s = Session(id=sid, preauth=c.preauth.copy(), client=c.client, dialect=c.dialect,
                    cipher=c.cipher, signing_algorithm=c.sign_algorithm())
        s.channels[c] = Channel()
        c.sessions[sid] = s
        c.state.sessions.add(s)
    elif s.valid and (s.auth is None or s.auth.complete):
        # a re-authentication starts (as whoever authenticates: `reauthenticated`); its
        # later legs go on with this acceptor
        s.auth = None
        s.preauth = c.preauth.copy()
        s.reauth_of = s.user
    if s.valid and s.signing_key and hdr.flags & wire.FLAGS_SIGNED:
        # a re-authentication of a session with keys, its request's signature verified
        # (Connection._check_session_setup): every answer to it is signed with the key the
        # client checks it with, a refusal too although the session then ends, as smbd signs
        # it (Samba's client that signs takes an unsigned LOGON_FAILURE for an attack)
        rhdr.signer = signer_on(s, c)
    rhdr.session_id = s.id
    if c.dialect == wire.SMB311:
        s.preauth.update(msg)
    if s.auth is None:
        s.auth = new_acceptor(c)
    session_flags = 0
    try:
        out = s.auth.step(bytes(token))
    except ntlm.LogonFailure as e:  # wrong password, malformed token, refused by policy
        audit.warning("logon refused: user %s from %s: %s", s.auth.user or "(not given)",
                      c.client_address or "?", e)
        end_session(c, s)
        raise SMBError(logon_failure_status(e))
    identity = s.auth.identity
    if s.auth.complete and s.reauth_of is not None:
        return reauthenticated(c, s, identity, out, rhdr)
    if s.auth.complete:
        act_as(c, s, account_of(identity), identity.kind, identity.user)
    if s.auth.complete and identity.kind != "user":
        # a guest session: no keys, so nothing signed or sealed; only guest-ok shares
        if c.encryption_required:       # smb encrypt = required in [global]: no guests
            log.info("session %d: %s logon refused: encryption is required", s.id, identity.kind)
            end_session(c, s)
            raise SMBError(wire.STATUS_ACCESS_DENIED)
        s.valid, s.guest, s.user, s.auth = True, True, identity.kind, None
        s.asked_as, s.domain = identity.user, identity.domain
        audit.info("logon accepted: %s (user %s) from %s, session %d", identity.kind,
                   identity.user or "(none)", c.client_address or "?", s.id)
        flag = wire.SESSION_FLAG_IS_NULL if identity.kind == "anonymous" else wire.SESSION_FLAG_IS_GUEST
        return struct.pack("<HHHH", 9, flag, 72, len(out)) + out, None
    if s.auth.complete:
        if c.encryption_required and not c.cipher:
            # smb encrypt = required in [global]: a client that cannot encrypt is refused
            log.info("session %d: logon of %s refused: encryption is required and the client "
                     "cannot encrypt", s.id, identity.user)
            end_session(c, s)
            raise SMBError(wire.STATUS_ACCESS_DENIED)
        s.user = user_name(identity)
        s.asked_as, s.domain, s.account = identity.user, identity.domain, identity.account
        s.owner = resolved_owner(c, s)
        s.valid = True
        renew(s, identity)
        s.signing_key = security.signing_key(identity.session_key, c.dialect,
                                             s.preauth.value if s.preauth else None)
        s.channels[c].signing_key = s.signing_key
        s.sign = c.signing_required or bool(c.client_security_mode & wire.SECURITY_SIGNING_REQUIRED)
        if c.cipher:
            s.encrypt_key, s.decrypt_key = security.cipher_keys(
                identity.session_key, c.dialect, s.preauth.value if s.preauth else None, c.cipher)
            if c.policy.encryption in ("required", "desired"):
                s.encrypt = True
                session_flags |= wire.SESSION_FLAG_ENCRYPT_DATA
        audit.info("logon accepted: user %s from %s, session %d", s.user, c.client_address or "?", s.id)
        old = c.sessions.get(prev) if prev and prev != s.id else None
        if old is not None and old.valid and not old.guest and old.owner == s.owner:
            end_session(c, old)    # PreviousSessionId: the client's earlier session ends (MS-SMB2 3.3.5.5.3)
        rhdr.status = wire.STATUS_SUCCESS
        if prev and prev != s.id:
            close_previous(c, s, prev)
            worker = c.state.sessions.worker_of(prev)
            if worker is not None and c.state.peers is not None:
                # another worker's session: that worker ends it (after the same checks), and
                # the answer waits for it, as smbd's waits for the other smbd's
                body = struct.pack("<HHHH", 9, session_flags, 72, len(out)) + out
                return FileSteps(previous_elsewhere(c, s, worker, prev, body)), None
    else:
        rhdr.status = wire.STATUS_MORE_PROCESSING_REQUIRED
    body = struct.pack("<HHHH", 9, session_flags, 72, len(out)) + out
    if c.dialect == wire.SMB311 and not s.auth.complete:
        s.preauth.update(rhdr_bytes(rhdr, hdr, body))
    return body, None


def end_session(c: Connection, s: Session) -> None:
    """A logon or re-authentication failed, or a new session replaces `s` (PreviousSessionId):
    the session ends, with what it opened. Its keys are remembered a while
    (`Client.remember_ended`): a channel that still asks in its name is answered
    USER_SESSION_DELETED signed, as smbd answers it."""
    if s.signing_key:
        c.client.remember_ended(s)
    c.end_session(s.id)


def new_acceptor(c: Connection) -> ntlm.Acceptor:
    """An NTLM exchange as the server's logon policy has it. An anonymous logon (no user name,
    no password) is always accepted, as smbd's `anonymous` auth module accepts it: the session
    it makes has no keys, acts as the guest account, and reaches only IPC$ (not under
    `restrict anonymous = 2`) and shares with `guest ok` (`tree.refusal`). Unknown users
    become guests only under `map to guest = bad user` where some share admits guests (never
    an account the password file holds but bars: disabled, locked out, ...). Where the server
    offers Kerberos, a ticket's principal is mapped to its account by the server
    (server.kerberos) and the logon goes on from here as an NTLM one does."""
    return ntlm.Acceptor(c.lookup, ntlm_auth=c.ntlm_auth, guest_ok=c.allow_guest, anonymous_ok=True,
                         bad_user_to_guest=c.allow_guest and c.policy.map_to_guest == "bad user",
                         netbios_name=c.policy.server_name, kerberos=c.kerberos)


def user_name(identity: ntlm.Identity) -> str:
    """The session's user: DOMAIN\\user as the client gave it, or the guest's kind."""
    if identity.kind != "user":
        return identity.kind
    return f"{identity.domain}\\{identity.user}" if identity.domain else identity.user


def account_of(identity: ntlm.Identity) -> str:
    """The account a user's logon proved the password of, for the server's `identities`: as
    the password file spells it, the username map applied (a client's "ALICE" is "alice");
    "" for a guest or an anonymous logon."""
    if identity.kind != "user":
        return ""
    return identity.account or identity.user


def resolved_owner(c: Connection, s: Session) -> str:
    """Who the session is, as the server resolved its logon, whatever the client typed (a
    user name's case, a domain, which a standalone server ignores for its local accounts,
    an alias of the username map): "uid:N" where the server acts as each user's Unix
    account, as Samba compares a token's user SID; otherwise "user:" and the password file's
    account whose password logged the session on (the username map applied, spelled as the
    file spells it: two lines of a name in different cases are two accounts). Empty for a
    guest or an anonymous logon: nobody can be told from another guest."""
    return "" if s.guest else owner_of_user(c, s.user, s.identity, s.account)


def owner_of_user(c: Connection, user: str, account, proved: str = "") -> str:
    """`resolved_owner` of a user logged on as `user` ("DOMAIN\\name" or "name"), acting as
    `account` (the server's `identities`' logon answer), having proved the password of the
    password file's account `proved` (where the lookup names it)."""
    if not user:
        return ""
    identities = c.identities
    if identities is not None and getattr(identities, "acts_as_each_user", False) and account is not None:
        return f"uid:{account.uid}"
    if proved:
        return "user:" + proved
    list_name = getattr(identities, "list_name", None)
    return "user:" + (list_name(user) if list_name is not None else share_access.bare(user))


def renew(s: Session, identity: ntlm.Identity) -> None:
    """The session's expiry, from the logon or re-authentication that just completed: its
    Kerberos ticket's end (time.monotonic()); 0, never, for NTLM, guests and a ticket of no
    bound."""
    s.expires = 0.0 if identity.expires_in is None else time.monotonic() + max(identity.expires_in, 0)
    s.expiry_told = False


def reauthenticated(c: Connection, s: Session, identity: ntlm.Identity, out: bytes, rhdr: Header):
    """A re-authentication of the session completed (MS-SMB2 3.3.5.5.3), as smbd has it: the
    session keeps its keys (the first logon's: its channels sign and seal as before) and its
    opens, and acts from now on as whoever authenticated: the same user, another one, or
    the guest or anonymous (where the server admits guests at all), its tree connects checked
    again as them (`tree.reauthorize`: one the new user may not reach ends the session,
    ACCESS_DENIED). A session that logged on without keys (a guest's) does not become a
    user's this way, for it would have no keys to sign with: ACCESS_DENIED, the session ends,
    and the client logs on anew."""
    was, was_guest = s.reauth_of, s.guest
    s.reauth_of = s.auth = None
    user, guest = user_name(identity), identity.kind != "user"
    if not guest and not s.signing_key:
        audit.warning("logon refused: user %s from %s: re-authentication of session %d of %s, "
                      "which has no keys", user, c.client_address or "?", s.id, was)
        end_session(c, s)
        raise SMBError(wire.STATUS_ACCESS_DENIED)
    same = (guest, share_access.bare(user).lower()) == (was_guest, share_access.bare(was).lower())
    if same:
        act_as(c, s, account_of(identity), identity.kind, identity.user)
    else:
        account = None
        if c.identities is not None:
            account = c.identities.logon(account_of(identity), identity.kind)
            if account is None:
                audit.warning("logon refused: user %s from %s: no Unix account", user, c.client_address or "?")
                end_session(c, s)
                raise SMBError(wire.STATUS_LOGON_FAILURE)
        s.identity = account
    s.user, s.guest, s.asked_as, s.domain = user, guest, identity.user, identity.domain
    s.account = identity.account if not guest else ""
    renew(s, identity)
    s.owner = resolved_owner(c, s)
    if not same:
        why = reauthorize(c, s)
        if why is not None:
            audit.warning("re-authentication refused: %s from %s, session %d (was %s): %s", user,
                          c.client_address or "?", s.id, was, why)
            end_session(c, s)
            raise SMBError(wire.STATUS_ACCESS_DENIED)
    audit.info("re-authenticated: %s from %s, session %d%s", user, c.client_address or "?", s.id,
               "" if same else f" (was {was})")
    rhdr.status = wire.STATUS_SUCCESS
    if s.signing_key:
        flags = wire.SESSION_FLAG_ENCRYPT_DATA if s.encrypt else 0
    else:
        flags = wire.SESSION_FLAG_IS_NULL if identity.kind == "anonymous" else wire.SESSION_FLAG_IS_GUEST
    return struct.pack("<HHHH", 9, flags, 72, len(out)) + out, None


def logon_failure_status(e: ntlm.LogonFailure) -> int:
    """What a failed logon answers: INVALID_PARAMETER for a malformed NTLMv2 response (as
    Samba), an account's own status where the password file bars it (ACCOUNT_DISABLED,
    ACCOUNT_LOCKED_OUT, ...: `ntlm.AccountRefused`), LOGON_FAILURE for everything else (wrong
    password, unknown user, policy)."""
    if isinstance(e, ntlm.InvalidResponse):
        return wire.STATUS_INVALID_PARAMETER
    if isinstance(e, ntlm.AccountRefused):
        return e.status
    return wire.STATUS_LOGON_FAILURE


def act_as(c: Connection, s: Session, user: str, kind: str, typed: str = "") -> None:
    """Binds the session to the account its file-system calls act as, where the server acts
    as its users' accounts (`user`: the account the logon proved, `account_of`; `typed`: the
    client's spelling, for the audit): a user without one is refused (STATUS_LOGON_FAILURE),
    as Samba refuses. A re-authentication may find the account changed (its groups): the
    session's trees act as it from now on."""
    if c.identities is None:
        return
    account = c.identities.logon(user, kind)
    if account is None:
        # the password was right: only the audit says why the logon failed after all
        audit.warning("logon refused: user %s from %s: no Unix account%s",
                      (typed or user if kind == "user" else "") or "(none)",
                      c.client_address or "?", "" if kind == "user" else f" for the {kind}")
        end_session(c, s)
        raise SMBError(wire.STATUS_LOGON_FAILURE)
    if account != s.identity:
        for t in s.trees.values():
            if t.share is not None:
                shared = c.identities.for_share(t.share, account)
                if shared is None:
                    log.info("session %d: %s may no longer reach share %s", s.id, user, t.share.name)
                    end_session(c, s)
                    raise SMBError(wire.STATUS_LOGON_FAILURE)
                t.fs = tree_files(c, t.share, shared)
    s.identity = account


def bound_owner(c: Connection, identity: ntlm.Identity) -> str:
    """`resolved_owner` of the user a binding authenticated: a channel is the session's
    user's only (Samba compares the token's user SID), however the name was spelled."""
    account = c.identities.logon(account_of(identity), "user") if c.identities is not None else None
    return owner_of_user(c, user_name(identity), account, identity.account)


def h_logoff(c: Connection, hdr: Header, msg: bytes, rhdr: Header, _):
    s = c.sessions[hdr.session_id]
    if s.signing_key and (s.sign or hdr.flags & wire.FLAGS_SIGNED):
        # signed as any answer of the session (MS-SMB2 3.3.4.1.1), with the key it has now:
        # once it has ended nothing names it (sealed instead where the request was)
        rhdr.signer = signer_on(s, c)
    busy = c.busy_opens(hdr.session_id)
    if busy:        # the I/O under way on its opens ends before they close
        return FileSteps(c.after_io(busy, lambda: logged_off(c, hdr.session_id))), None
    return logged_off(c, hdr.session_id), None


def logged_off(c: Connection, session_id: int) -> bytes:
    """Ends the session; the LOGOFF response's body."""
    c.end_session(session_id)
    return struct.pack("<HH", 4, 0)


def close_previous(c: Connection, s: Session, previous_id: int) -> None:
    """PreviousSessionId (MS-SMB2 3.3.5.5.3): the client reconnected; its old session, if it
    was the same user's, ends with what it opened, on whichever connection it lives.
    Another user's session, a guest's, or one that is gone is left alone, as Samba does."""
    end_previous(c.state, previous_id, s.owner, s, c)


def end_previous(state, previous_id: int, owner: str, s: Session | None = None, here=None) -> bool:
    """Ends the session `previous_id` where it is a valid one of `owner` (a resolved owner,
    `resolved_owner`, never empty: a guest replaces nothing) on this server's connections,
    with what it opened (durable opens detached, the others closed); whether it did. `s`:
    the session replacing it (None: another worker's, which asked, see
    `previous_elsewhere`); `here`: the connection asking (its output goes with its answer)."""
    old = state.sessions.get(previous_id)
    if not owner or old is None or old is s or old.guest or not old.valid or old.owner != owner:
        return False
    c = next(iter(old.channels), None)
    if c is None:
        return False
    log.info("session %d of %s ends: the client's new session %s replaces it", old.id, old.user,
             "here" if s is None else s.id)
    end_session(c, old)
    if c is not here and c.on_output is not None and c.outbox:
        c.on_output()
    return True


def previous_elsewhere(c: Connection, s: Session, worker: int, previous_id: int, body: bytes):
    """Steps: another worker is asked to end its session `previous_id` where it is `s`'s
    user's (`end_previous` there); the SESSION_SETUP is answered once it has (or has not:
    another user's, gone, a worker that does not answer within the peers' bound)."""
    def start(done) -> None:
        c.state.peers.end_session(worker, previous_id, s.owner, done)
    yield Wait(start)
    return body


def answer_as_session(c: Connection, hdr: Header, msg, rhdr: Header, s: Session) -> bool:
    """A SESSION_SETUP naming a session that this connection carries no bound channel of (a
    binding, or a request on the wrong connection): when it is signed and its signature is
    the session's (`signer_on`), the answer is signed alike, whatever its status, as smbd
    answers (a client that signed its request wants the answer signed, MS-SMB2 3.3.4.1.1; a
    client checks a refused binding's answer with the session's key). Whether it verified.
    A request whose signature does not verify gets nothing signed."""
    if not hdr.flags & wire.FLAGS_SIGNED:
        return False
    algorithm, key = signer_on(s, c)
    if not key or not security.verify(algorithm, key, msg):
        return False
    rhdr.signer = (algorithm, key)
    return True


def bind(c: Connection, hdr: Header, msg, rhdr: Header, token: bytes):
    """SESSION_SETUP with SMB2_SESSION_FLAG_BINDING: this connection becomes a channel of an
    existing session (MS-SMB2 3.3.5.5, in the order and with the statuses smbd answers). The
    request is signed with the session's key, and verified first; the client authenticates
    again as the session's user; the channel then signs with its own key. A refused or failed
    binding leaves the session as it was on its other channels."""
    if not hdr.session_id:
        raise SMBError(wire.STATUS_INVALID_PARAMETER)
    s = c.state.sessions.get(hdr.session_id)
    if s is None:
        raise SMBError(wire.STATUS_USER_SESSION_DELETED)
    if hdr.flags & wire.FLAGS_SIGNED and not answer_as_session(c, hdr, msg, rhdr, s):
        raise SMBError(wire.STATUS_ACCESS_DENIED)       # (MS-SMB2 3.3.5.2.4)
    rhdr.session_id = s.id
    algorithm = c.sign_algorithm()
    if s.signing_algorithm >= security.AES_GMAC and algorithm != s.signing_algorithm:
        raise SMBError(wire.STATUS_REQUEST_OUT_OF_SEQUENCE)
    if algorithm >= security.AES_GMAC and s.signing_algorithm != algorithm:
        raise SMBError(wire.STATUS_NOT_SUPPORTED)
    if c.dialect < wire.SMB300 or not c.policy.multi_channel:
        raise SMBError(wire.STATUS_REQUEST_NOT_ACCEPTED)
    if not hdr.flags & wire.FLAGS_SIGNED:
        raise SMBError(wire.STATUS_INVALID_PARAMETER)
    if s.dialect != c.dialect or s.cipher != c.cipher:
        raise SMBError(wire.STATUS_INVALID_PARAMETER)
    if s.client is not c.client:
        # another ClientGuid's session (MS-SMB2 3.3.5.5: the server MAY refuse): smbd cannot
        # bind across clients either, and answers so, rather than USER_SESSION_DELETED,
        # lest the client start a new session
        raise SMBError(wire.STATUS_REQUEST_NOT_ACCEPTED)
    ch = s.channels.get(c)
    if ch is not None and ch.bound:
        raise SMBError(wire.STATUS_REQUEST_NOT_ACCEPTED)  # bound here already
    if s.guest:
        raise SMBError(wire.STATUS_NOT_SUPPORTED)       # guests and anonymous have no key
    why = binding_refusal(c, s)
    if why is not None:         # a share the session is connected to refuses this address
        audit.warning("binding refused: from %s to session %d of %s: %s", c.client_address or "?",
                      s.id, s.user, why)
        raise SMBError(wire.STATUS_ACCESS_DENIED)
    if not s.valid or (s.auth is not None and not s.auth.complete):
        raise SMBError(wire.STATUS_REQUEST_NOT_ACCEPTED)  # logon or re-authentication under way
    if ch is None:
        if len(s.channels) >= c.limits.max_channels:
            log.info("session %d: binding refused: %d channels already", s.id, len(s.channels))
            raise SMBError(wire.STATUS_INSUFFICIENT_RESOURCES)
        ch = s.channels[c] = Channel(preauth=c.preauth.copy())
        # as a logon authenticates (a guest or anonymous is then refused as any other user
        # than the session's: ACCESS_DENIED, as smbd answers)
        ch.auth = new_acceptor(c)
    if c.dialect == wire.SMB311:
        ch.preauth.update(msg)
    try:
        out = ch.auth.step(token)
    except ntlm.LogonFailure as e:
        audit.warning("binding refused: user %s from %s to session %d: %s", ch.auth.user or "(not given)",
                      c.client_address or "?", s.id, e)
        del s.channels[c]
        raise SMBError(logon_failure_status(e))
    if not ch.auth.complete:
        rhdr.status = wire.STATUS_MORE_PROCESSING_REQUIRED
        body = struct.pack("<HHHH", 9, 0, 72, len(out)) + out
        if c.dialect == wire.SMB311:     # the response as sent: signed with the session's key
            sent = bytearray(rhdr_bytes(rhdr, hdr, body))
            security.apply_signature(*rhdr.signer, sent)
            ch.preauth.update(sent)
        return body, None
    identity = ch.auth.identity
    ch.auth = None
    if identity.kind != "user" or bound_owner(c, identity) != s.owner:
        audit.warning("binding refused: user %s from %s to session %d of %s", identity.user,
                      c.client_address or "?", s.id, s.user)
        del s.channels[c]
        raise SMBError(wire.STATUS_ACCESS_DENIED)
    ch.signing_key = security.signing_key(identity.session_key, c.dialect,
                                          ch.preauth.value if c.dialect == wire.SMB311 else None)
    ch.preauth = None
    rhdr.signer = None      # the final answer is signed with the channel's own key
    audit.info("channel bound: user %s from %s, session %d (%d channels)", s.user,
               c.client_address or "?", s.id, len(s.channels))
    rhdr.status = wire.STATUS_SUCCESS
    return struct.pack("<HHHH", 9, 0, 72, len(out)) + out, None
