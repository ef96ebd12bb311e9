"""The system's users and groups by name and id (`smb.sids.UnixNames`), for the name lookups
of the lsarpc pipe: looked up at each call, so that new accounts are known without a restart."""
from __future__ import annotations

import grp
import pwd


class UnixNames:
    def user_id(self, name: str) -> int | None:
        try:
            return pwd.getpwnam(name).pw_uid
        except (KeyError, ValueError):      # (ValueError: a name with a NUL in it)
            return None

    def user_name(self, uid: int) -> str | None:
        try:
            return pwd.getpwuid(uid).pw_name
        except (KeyError, ValueError, OverflowError):
            return None

    def group_id(self, name: str) -> int | None:
        try:
            return grp.getgrnam(name).gr_gid
        except (KeyError, ValueError):
            return None

    def group_name(self, gid: int) -> str | None:
        try:
            return grp.getgrgid(gid).gr_name
        except (KeyError, ValueError, OverflowError):
            return None
