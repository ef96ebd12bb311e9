"""Kerberos logons: the server's acceptor (MIT's GSS-API through the python ``gssapi`` package),
offered only where smb.conf asks for it, and the mapping of a ticket's principal to an account.

smb.conf, with Samba's option names (a standalone server, `security = user`; Samba itself does
Kerberos only as a domain member, smbring with an MIT realm's keytab):

- ``kerberos method``: ``dedicated keytab`` (the keytab ``dedicated keytab file`` names) or
  ``system keytab`` (the system's default keytab: KRB5_KTNAME, else /etc/krb5.keytab);
  Samba's default ``secrets only`` means that Kerberos is not offered (and so do
  ``secrets and keytab``'s secrets: that value is refused, the server joins no domain);
- ``realm``: the realm whose users log on (and whose keys for cifs/ or host/ the keytab
  holds), required with a keytab method.

Fail closed: a server told to offer Kerberos checks at start (and at each reload, which keeps
the configuration in force when a check fails) that the gssapi package is there, that the
keytab can be read, and that it holds a key of a cifs/ or host/ principal of the realm, and
acquires acceptor credentials from it; any failure stops it with the reason. Not configured, it
offers NTLMSSP only and refuses a Kerberos token.

Each logon (`Kerberos.context()`): the AP-REQ is accepted with credentials that hold every key
of the keytab (so any host name a client used reaches the server), then the ticket's service
must be cifs or host of the realm (a ticket for another service whose key the keytab happens to
hold, HTTP/, is refused); replays are refused by MIT's file replay cache, kept in the server's
run directory; the session key is the Kerberos session (sub)key
(GSS_C_INQ_SSPI_SESSION_KEY), which MS-SMB2 derives signing and sealing keys from; the AP-REP
goes back to the client (mutual authentication). The principal ``user@REALM`` must be of the
configured realm (compared without regard to case, as Samba compares realms) and be exactly
the realm of the ticket's service (realm names are case-sensitive: a trusted realm that differs
only in case is another realm); ``user`` then
goes through the ``username map`` and must name a Unix account (one the map leaves alone: of
exactly that name, Kerberos names being case-sensitive; Server.kerberos_account) whose uid is at least ``min
domain uid`` (Samba's option, default 1000: never root or a system account), and, where the
password file holds the account, the account must not be barred there (disabled, locked out): from there the
logon is the NTLM logon's (smb.commands.session), with its share rules and limits.

The work of one logon is local and bounded: the keytab (a small local file) read, one record
written to the replay cache (MIT's file2 type writes without fsync), no network: it runs on the
event loop as the password file's look-up does.
"""
from __future__ import annotations

import contextlib
import logging
import os
import struct
from dataclasses import dataclass

from smbring.server.accounts import account as unix_account
from smbring.smb.ntlmssp import AccountRefused, Identity, LogonFailure

log = logging.getLogger("smbring.kerberos")

KRB5_MECH = "1.2.840.113554.1.2.2"
MS_KRB5_MECH = "1.2.840.48018.1.2.2"
SESSION_KEY_OID = "1.2.840.113554.1.2.2.5.5"      # GSS_C_INQ_SSPI_SESSION_KEY (MIT)
SERVICES = ("cifs", "host")
METHODS = {"secrets only": None, "dedicated keytab": "dedicated", "system keytab": "system",
           "secrets and keytab": "secrets"}
REPLAY_CACHE = "krb5.rcache2"
# Samba's `min domain uid`: a realm's principal never acts as a Unix account below it (root,
# daemon, bin...), whose names a realm may well hold for other uses (root/admin's "root")
MIN_DOMAIN_UID = 1000


class KerberosError(Exception):
    """Kerberos was asked for and cannot be offered: the server does not start (or reload)."""


@dataclass(frozen=True)
class KerberosSettings:
    method: str            # "dedicated" or "system"
    keytab: str            # the keytab's path (the system's default resolved)
    realm: str
    min_domain_uid: int = MIN_DOMAIN_UID


def method_of(value: str) -> str | None:
    """`kerberos method` -> "dedicated", "system", "secrets" or None (secrets only)."""
    method = METHODS.get(" ".join(value.lower().split()))
    if method is None and " ".join(value.lower().split()) not in METHODS:
        raise ValueError(f"one of {', '.join(METHODS)}, not {value!r}")
    return method


def settings(method: str | None, keytab: str, realm: str,
             min_domain_uid: int = MIN_DOMAIN_UID) -> KerberosSettings | None:
    """What smb.conf's three options ask for; None: Kerberos not offered. ValueError where
    they contradict each other (a keytab method without a realm, a dedicated keytab without
    its file, secrets, which need a domain join)."""
    if method is None:
        return None
    if method == "secrets":
        raise ValueError("kerberos method = secrets and keytab needs a domain join (the machine "
                         "account's secrets); smbring is a standalone server: use dedicated keytab "
                         "or system keytab")
    if not realm.strip():
        raise ValueError(f"kerberos method = {method} keytab needs `realm` (the realm whose users log on)")
    if method == "dedicated":
        if not keytab.strip():
            raise ValueError("kerberos method = dedicated keytab needs `dedicated keytab file`")
        path = keytab.strip()
    else:
        path = os.environ.get("KRB5_KTNAME") or "/etc/krb5.keytab"
    for prefix in ("FILE:", "WRFILE:"):
        if path.startswith(prefix):
            path = path[len(prefix):]
    return KerberosSettings(method, path, realm.strip(), min_domain_uid)


# -- the keytab file (MIT's format, version 0x502; 0x501 in host order) -------------------------
def keytab_principals(data: bytes) -> list[str]:
    """The principals ("service/host@REALM") of a keytab file's entries; ValueError for a file
    that is not a keytab."""
    if len(data) < 2 or data[0] != 5 or data[1] not in (1, 2):
        raise ValueError("not a keytab file")
    order = ">" if data[1] == 2 else "="
    pos, names = 2, []
    while pos + 4 <= len(data):
        (size,) = struct.unpack_from(order + "i", data, pos)
        pos += 4
        if size == 0:
            break
        if size < 0:            # a hole left by a removed entry
            pos += -size
            continue
        entry, pos = data[pos:pos + size], pos + size
        if len(entry) < size:
            raise ValueError("keytab entry cut short")
        (count,) = struct.unpack_from(order + "H", entry, 0)
        at = 2
        if data[1] == 1:
            count -= 1          # version 1 counted the realm as a component

        def counted(at: int) -> tuple[str, int]:
            (n,) = struct.unpack_from(order + "H", entry, at)
            if at + 2 + n > len(entry):
                raise ValueError("keytab entry cut short")
            return entry[at + 2:at + 2 + n].decode("utf-8", "replace"), at + 2 + n
        realm, at = counted(at)
        parts = []
        for _ in range(count):
            part, at = counted(at)
            parts.append(part)
        names.append("/".join(parts) + "@" + realm)
    return names


def service_principals(principals: list[str], realm: str) -> list[str]:
    """Those of `principals` a client may name for SMB: cifs/... or host/... of `realm`."""
    found = []
    for name in principals:
        who, _, of = name.rpartition("@")
        service, slash, _host = who.partition("/")
        if slash and service.lower() in SERVICES and of.lower() == realm.lower():
            found.append(name)
    return list(dict.fromkeys(found))


def split_principal(name: str) -> tuple[str, str]:
    """"user@REALM" -> ("user", "REALM"); an escaped "\\@" belongs to the name."""
    at = len(name)
    while True:
        at = name.rfind("@", 0, at)
        if at <= 0 or name[at - 1] != "\\":
            break
    if at <= 0:
        return name, ""
    return name[:at], name[at + 1:]


class Kerberos:
    """The server's Kerberos acceptor: acceptor credentials from the keytab, checked when it
    is made (KerberosError with the reason where they cannot be had). `account(user)` maps a
    principal's user part to the account (see the module's description): the account's name,
    or None where there is none; AccountRefused where the password file bars it."""

    def __init__(self, config: KerberosSettings, run_directory: str, account, as_server=None):
        try:
            import gssapi
            import gssapi.raw
        except ImportError:
            raise KerberosError("Kerberos is configured (kerberos method) but the python gssapi "
                                "package is not installed: pip install 'smbring[kerberos]'") from None
        self.config, self.realm, self.account = config, config.realm, account
        # the keytab (root's only) is read, and the replay cache written, at each AP-REQ: as
        # the server, whatever user the event loop's thread acted as last (vfs.identity)
        self.as_server = as_server or contextlib.nullcontext
        self._gssapi = gssapi
        try:
            with open(config.keytab, "rb") as f:
                data = f.read()
        except OSError as e:
            raise KerberosError(f"keytab {config.keytab}: {e.strerror}") from None
        try:
            principals = keytab_principals(data)
        except (ValueError, struct.error) as e:
            raise KerberosError(f"keytab {config.keytab}: {e}") from None
        self.principals = service_principals(principals, config.realm)
        if not self.principals:
            held = ", ".join(dict.fromkeys(principals)) or "no key at all"
            raise KerberosError(f"keytab {config.keytab} holds no key of a cifs/ or host/ principal of "
                                f"realm {config.realm} (it holds {held})")
        self.replay_cache = os.path.join(run_directory, REPLAY_CACHE)
        # (the store's bytes live as long as the credentials: MIT reads them when they are made)
        self._store = {b"keytab": os.fsencode(config.keytab),
                       b"rcache": b"file2:" + os.fsencode(self.replay_cache)}
        self._mechs = [gssapi.OID.from_int_seq(KRB5_MECH), gssapi.OID.from_int_seq(MS_KRB5_MECH)]
        self._session_key_oid = gssapi.OID.from_int_seq(SESSION_KEY_OID)
        try:
            # no name: every key of the keytab accepts (the service is checked after)
            self.credentials = gssapi.raw.acquire_cred_from(self._store, name=None, mechs=self._mechs,
                                                            usage="accept").creds
        except gssapi.raw.GSSError as e:
            raise KerberosError(f"keytab {config.keytab}: {describe(e)}") from None

    def describe(self) -> str:
        return (f"Kerberos offered: realm {self.realm}, keytab {self.config.keytab} "
                f"({', '.join(self.principals)}), replay cache {self.replay_cache}")

    def context(self) -> "KerberosContext":
        return KerberosContext(self)


def _display(raw, name) -> str:
    return raw.display_name(name, name_type=False).name.decode("utf-8", "replace")


def describe(e) -> str:
    """A GSSError's minor message (what MIT says: "Request is a replay", "Ticket expired")."""
    try:
        minor = e.get_all_statuses(False)
    except Exception:
        minor = None
    text = "; ".join(m for m in (minor or []) if m and "Unknown error" not in m) if minor else ""
    return text or " ".join(str(e).split())


class KerberosContext:
    """One Kerberos exchange, the mechanism interface smb.ntlm.Acceptor drives: step(AP-REQ)
    -> AP-REP, then `identity`; MICs for SPNEGO's mechListMIC."""

    mic_present = True      # (as Samba's new_spnego for krb5's CFX tokens, where a MIC applies)

    def __init__(self, kerberos: Kerberos):
        self.kerberos = kerberos
        self.identity: Identity | None = None
        self.user = ""
        self._context = None

    def step(self, token: bytes) -> bytes:
        if self._context is not None:
            raise LogonFailure("Kerberos: one AP-REQ per exchange")
        k, gssapi = self.kerberos, self.kerberos._gssapi
        raw = gssapi.raw
        try:
            # (the raw call: it raises a refusal at once; the high-level step would hand back
            # the KRB-ERROR token and defer the error)
            with k.as_server():
                result = raw.accept_sec_context(token, acceptor_creds=k.credentials)
        except raw.GSSError as e:
            raise LogonFailure(f"Kerberos: {describe(e)}") from None
        self._context = result.context
        if result.more_steps:
            raise LogonFailure("Kerberos: the AP-REQ wants more than one leg (DCE style)")
        try:
            principal = _display(raw, result.initiator_name)
            target = _display(raw, raw.inquire_context(result.context, initiator_name=False, target_name=True,
                                                       lifetime=False, mech=False, flags=False,
                                                       locally_init=False, complete=False).target_name)
            key = raw.inquire_sec_context_by_oid(result.context, k._session_key_oid)[0]
        except raw.GSSError as e:
            raise LogonFailure(f"Kerberos: {describe(e)}") from None
        self.user = principal
        service, _, host_realm = target.partition("/")
        _host, realm_of_service = split_principal(host_realm)
        if service.lower() not in SERVICES or realm_of_service.lower() != k.realm.lower():
            raise LogonFailure(f"Kerberos: a ticket for {target}, not for cifs/ or host/ of realm {k.realm}")
        user, realm = split_principal(principal)
        # The configured realm is matched without regard to case (as Samba matches it), but
        # the principal's realm must be the ticket's own realm exactly: Kerberos realm names
        # are case-sensitive (RFC 4120), so "realm.test" is another realm than "REALM.TEST",
        # and a cross-realm trust with it must not make its "alice" ours.
        if realm.lower() != k.realm.lower() or realm != realm_of_service:
            raise LogonFailure(f"Kerberos: principal {principal} is not of realm {realm_of_service}")
        account = k.account(user)       # (AccountRefused where the password file bars it)
        if account is None:
            raise LogonFailure(f"Kerberos: principal {principal}: no Unix account named exactly {user!r} "
                               "(nor a username map line for it)")
        found = unix_account(account)
        if found is None or found.uid < k.config.min_domain_uid:
            raise LogonFailure(f"Kerberos: principal {principal}: account {account!r} is below "
                               f"min domain uid ({k.config.min_domain_uid})")
        self.identity = Identity(user=user, domain=realm, kind="user", session_key=bytes(key),
                                 account=account, expires_in=result.lifetime)
        return bytes(result.token or b"")

    def can_sign(self) -> bool:
        return True

    def sign(self, data: bytes) -> bytes:
        return self.kerberos._gssapi.raw.get_mic(self._context, data)

    def verify(self, data: bytes, mic: bytes) -> None:
        raw = self.kerberos._gssapi.raw
        try:
            raw.verify_mic(self._context, data, mic)
        except raw.GSSError as e:
            raise LogonFailure(f"Kerberos: the mechListMIC does not verify ({describe(e)})") from None


__all__ = ["AccountRefused", "Kerberos", "KerberosContext", "KerberosError", "KerberosSettings",
           "keytab_principals", "method_of", "service_principals", "settings", "split_principal"]
