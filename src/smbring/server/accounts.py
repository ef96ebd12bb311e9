"""The system's accounts for the protocol core (`smb.share_access.Accounts`): Unix groups for
``@group`` in user lists, home directories for ``[homes]`` and ``%H``, primary groups for
``%G``. Looked up at each tree connect (NSS: /etc/passwd, /etc/group, or whatever
nsswitch.conf says), so changes apply without a restart."""
from __future__ import annotations

import grp
import os
import pwd


class UnixAccounts:
    def groups(self, user: str) -> frozenset[str]:
        """The groups naming the user as a member, and the primary group of a Unix user of
        that name. A user smbring knows but the system does not is in the groups that list
        them by name."""
        names: set[str] = set()
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            entry = None
        if entry is not None:
            try:
                gids = os.getgrouplist(entry.pw_name, entry.pw_gid)
            except OSError:
                gids = [entry.pw_gid]
            for gid in gids:
                try:
                    names.add(grp.getgrgid(gid).gr_name.lower())
                except KeyError:
                    pass
        else:
            for group in grp.getgrall():
                if any(member.lower() == user.lower() for member in group.gr_mem):
                    names.add(group.gr_name.lower())
        return frozenset(names)

    def primary_group(self, user: str) -> str | None:
        try:
            return grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name
        except KeyError:
            return None

    def home(self, user: str) -> str | None:
        try:
            home = pwd.getpwnam(user).pw_dir
        except KeyError:
            return None
        return home if home and home != "/" and os.path.isabs(home) else None
