"""Where directory leases are broken (SMB 3: MS-SMB2 3.3.4.7, MS-FSA 2.1.4.12's parent
oplock breaks; Samba's contend_dirleases). A client holding a lease on a directory caches its
listing: every change such a listing shows breaks the directory's leases to none, through
`oplocks.Oplocks.break_directory`. The commands call `entry_changed` (or `open_changed`) once
the change is made:

- a file or directory made in it (CREATE), a named stream made (as Samba), a file overwritten
  or superseded;
- an entry removed, when the removal happens (the last close of a delete on close, not the
  setting of the disposition: a file pending delete is still listed);
- a rename: the directory left and the directory entered (both, where they differ), a
  replaced target included;
- a hard link made (the new name's directory);
- SET_INFO of times or attributes (basic), of the end of file or the allocation size, of EAs
  (a listing shows EaSize) or of a security descriptor, through any open;
- data written through an open: at its close (as Samba: the size and write time a listing
  shows settle then).

The one change that breaks nothing is made under the directory's lease itself: the changing
open's lease names it as ParentLeaseKey, and is of the same client (ClientGuid) and of a user
of that lease's opens (`exempt`). Samba and Windows compare the key alone; the client and user
are checked here too because a ClientGuid is no secret: another user must not be able to keep
someone's directory cache from being told of his change.

Only the directory an entry is in is broken (not its ancestors, whose listings show the
directory's own times, as Samba). A change made by another program on the server, not through
SMB, breaks the directory's leases too: the shell watches each leased directory through
inotify (server.change_watcher; not with `kernel change notify = no`), and a change the
server did not make itself (`mark_own` here, the changes posted to smb.notify's watches)
breaks them all, none spared. With several workers, another worker's change reaches a
worker's watch as another program's would: the changing worker records it in the store
(`Oplocks.break_directory`'s `name`), and the others break nothing more for it
(`Oplocks.outside_change`). Samba does not see those without kernel oplocks.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from smbring.smb.commands.oplock_break import held_by_user_of

if TYPE_CHECKING:
    from smbring.smb.connection import Connection


def exempt(c: "Connection", o) -> tuple[bytes, bytes] | None:
    """The directory lease (ClientGuid, LeaseKey) a change made through the open `o` on the
    connection `c` leaves alone: its lease's ParentLeaseKey, where that is a lease of the same
    client held by a user of `o`'s session; else None."""
    oplocks = c.state.oplocks
    lease = oplocks.lease_of(o)
    if lease is None or lease.parent_key is None or lease.client_guid != c.client_guid:
        return None
    parent = oplocks.lease(c.client_guid, lease.parent_key)
    if parent is None or not parent.directory or not held_by_user_of(c, parent, o.session_id):
        return None
    return parent.ident


def entry_changed(c: "Connection", fs, parts: list, spared: tuple[bytes, bytes] | None = None) -> None:
    """The entry `parts` of a share (`fs`) changed as a listing of its directory shows: that
    directory's leases are broken, but `spared` (see `exempt`). A directory that cannot be
    found (renamed or removed meanwhile) breaks every directory lease instead."""
    oplocks = c.state.oplocks
    if not parts or not oplocks.directory_leases():
        return      # (the share's root: its directory is outside any share)
    # (the kernel's word of this change, where the directory is watched, is the server's own:
    # it must not break the lease `spared`)
    c.state.watches.mark_own("/".join([fs.root] + list(parts)))
    try:
        st = fs.stat(parts[:-1])
    except OSError:
        oplocks.break_all_directories()
        return
    oplocks.break_directory((st.st_dev, st.st_ino), spared, parts[-1])


def open_changed(c: "Connection", o, spared: tuple[bytes, bytes] | None = None, *,
                 through: bool = True) -> None:
    """The file the open `o` names changed (a stream's: its file's entry); `through`: the
    change was made through `o`, whose lease may spare its directory's (`exempt`)."""
    if not c.state.oplocks.directory_leases() or o.tree is None or o.tree.fs is None:
        return
    if through and spared is None:
        spared = exempt(c, o)
    entry_changed(c, o.tree.fs, entry_of(o), spared)


def entry_of(o) -> list:
    """The name a listing shows for the open's file (a named stream's: its file's)."""
    return list(o.base_parts) if o.stream is not None and o.base_parts is not None else list(o.parts)
