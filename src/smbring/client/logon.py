"""The security mechanism a SESSION_SETUP carries: smbring's own NTLMv2 initiator (the same
codecs as the server's, smbring.smb.ntlm_initiator) by default, or, asked for explicitly with
``auth="negotiate"``, pyspnego's Negotiate (Kerberos where a ticket can be had, else its own
NTLM). pyspnego is imported only then: its import alone costs a client tens of milliseconds
of CPU.

Both give the same interface: ``step(token) -> token``, ``complete``, ``session_key``.
"""
from __future__ import annotations

from smbring.client.errors import ProtocolError
from smbring.smb.ntlm_initiator import NtlmError, NtlmInitiator

AUTH_MECHANISMS = ("ntlm", "negotiate")


def check_auth(auth: str) -> None:
    if auth not in AUTH_MECHANISMS:
        raise ValueError(f"auth: one of {', '.join(AUTH_MECHANISMS)}, not {auth!r}")


def logon_context(auth: str, user: str, password: str, domain: str, host: str):
    """A fresh mechanism context for one logon (a session's, or a channel's binding)."""
    check_auth(auth)
    if auth == "ntlm":
        return NtlmInitiator(user, password, domain, host, service="cifs")
    try:
        import spnego
    except ImportError:
        raise RuntimeError("auth='negotiate' (Kerberos) needs pyspnego: "
                           "pip install 'smbring[client]'") from None
    principal = f"{domain}\\{user}" if domain else user
    return spnego.client(principal or None, password or None, hostname=host,
                         service="cifs", protocol="negotiate")


def step(context, token: bytes | None = None) -> bytes | None:
    """The mechanism's next token; a server token it refuses is a ProtocolError. pyspnego
    refuses a malformed token with whatever its parsers raise (KeyError, struct.error,
    OverflowError, its own SpnegoError...): every one of them means the same here."""
    try:
        return context.step(token)
    except NtlmError as e:
        raise ProtocolError(f"logon: {e}") from None
    except Exception as e:
        if token is None:       # nothing came from the server yet: the mechanism failed here
            raise RuntimeError(f"logon: {type(e).__name__}: {e}") from e
        raise ProtocolError(f"logon: the server's token was refused "
                            f"({type(e).__name__}: {e})") from None
