"""SESSION_SETUP (logon, re-authentication) and LOGOFF (MS-SMB2 3.3.5.5, 3.3.5.6)."""
from __future__ import annotations

import logging
import struct
from typing import TYPE_CHECKING

from smbring.smb import ntlm, security, wire
from smbring.smb.commands.negotiate import rhdr_bytes
from smbring.smb.commands.tree import tree_files
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
    s = c.sessions.get(hdr.session_id) if hdr.session_id else None
    if s is None:
        if hdr.session_id:
            raise SMBError(wire.STATUS_USER_SESSION_DELETED)
        sid = c.next_id
        c.next_id += 1
        s = Session(id=sid, preauth=c.preauth.copy())
        c.sessions[sid] = s
    elif s.valid:  # re-authentication: as the same user (checked when it completes)
        s.auth = None
        s.preauth = c.preauth.copy()
        s.reauth_of = s.user
    rhdr.session_id = s.id
    if c.dialect == wire.SMB311:
        s.preauth.update(msg)
    if s.auth is None:
        s.auth = ntlm.Acceptor(c.lookup, ntlm_auth=c.ntlm_auth, guest_ok=c.allow_guest,
                               bad_user_to_guest=c.allow_guest and c.policy.map_to_guest == "bad user",
                               netbios_name=c.policy.server_name)
    session_flags = 0
    try:
        out = s.auth.step(bytes(token))
    except ntlm.LogonFailure as e:  # wrong password, malformed token, refused by policy
        audit.warning("logon refused: user %s from %s: %s", s.auth.user or "(not given)",
                      c.client_address or "?", e)
        c.end_session(s.id)
        raise SMBError(wire.STATUS_LOGON_FAILURE)
    identity = s.auth.identity
    if s.auth.complete and s.reauth_of is not None:
        who = identity.user if identity.kind == "user" else identity.kind
        if (s.guest, s.reauth_of.rsplit("\\", 1)[-1].lower()) != (identity.kind != "user", who.lower()):
            audit.warning("logon refused: user %s from %s: re-authentication of session %d "
                          "(was %s)", who, c.client_address or "?", s.id, s.reauth_of)
            c.end_session(s.id)
            raise SMBError(wire.STATUS_ACCESS_DENIED)
        s.reauth_of = None
    if s.auth.complete:
        act_as(c, s, identity.user if identity.kind == "user" else "", identity.kind)
    if s.auth.complete and identity.kind != "user":
        # a guest session: no keys, so nothing signed or sealed; only guest-ok shares
        if c.encryption_required:       # smb encrypt = required in [global]: no guests
            log.info("session %d: %s logon refused: encryption is required", s.id, identity.kind)
            c.end_session(s.id)
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
            c.end_session(s.id)
            raise SMBError(wire.STATUS_ACCESS_DENIED)
        s.user = f"{identity.domain}\\{identity.user}" if identity.domain else identity.user
        s.asked_as, s.domain = identity.user, identity.domain
        s.valid = True
        s.signing_key = security.signing_key(identity.session_key, c.dialect,
                                             s.preauth.value if s.preauth else None)
        s.sign = c.signing_required or bool(c.client_security_mode & wire.SECURITY_SIGNING_REQUIRED)
        if c.cipher:
            s.encrypt_key, s.decrypt_key = security.cipher_keys(
                identity.session_key, c.dialect, s.preauth.value if s.preauth else None, c.cipher)
            if c.policy.encryption in ("required", "desired"):
                s.encrypt = True
                session_flags |= wire.SESSION_FLAG_ENCRYPT_DATA
        audit.info("logon accepted: user %s from %s, session %d", s.user, c.client_address or "?", s.id)
        old = c.sessions.get(prev) if prev and prev != s.id else None
        if old is not None and old.valid and not old.guest and old.user.lower() == s.user.lower():
            c.end_session(prev)    # PreviousSessionId: the client's earlier session ends (MS-SMB2 3.3.5.5.3)
        rhdr.status = wire.STATUS_SUCCESS
    else:
        rhdr.status = wire.STATUS_MORE_PROCESSING_REQUIRED
    body = struct.pack("<HHHH", 9, session_flags, 72, len(out)) + out
    if c.dialect == wire.SMB311 and not s.auth.complete:
        s.preauth.update(rhdr_bytes(rhdr, hdr, body))
    return body, None


def act_as(c: Connection, s: Session, user: str, kind: str) -> None:
    """Binds the session to the account its file-system calls act as, where the server acts
    as its users' accounts: a user without one is refused (STATUS_LOGON_FAILURE), as Samba
    refuses. A re-authentication may find the account changed (its groups): the session's
    trees act as it from now on."""
    if c.identities is None:
        return
    account = c.identities.logon(user, kind)
    if account is None:
        # the password was right: only the audit says why the logon failed after all
        audit.warning("logon refused: user %s from %s: no Unix account%s", user or "(none)",
                      c.client_address or "?", "" if kind == "user" else f" for the {kind}")
        c.end_session(s.id)
        raise SMBError(wire.STATUS_LOGON_FAILURE)
    if account != s.identity:
        for t in s.trees.values():
            if t.share is not None:
                shared = c.identities.for_share(t.share, account)
                if shared is None:
                    log.info("session %d: %s may no longer reach share %s", s.id, user, t.share.name)
                    c.end_session(s.id)
                    raise SMBError(wire.STATUS_LOGON_FAILURE)
                t.fs = tree_files(c, t.share, shared)
    s.identity = account


def h_logoff(c: Connection, hdr: Header, msg: bytes, rhdr: Header, _):
    c.end_session(hdr.session_id)
    return struct.pack("<HH", 4, 0), None
