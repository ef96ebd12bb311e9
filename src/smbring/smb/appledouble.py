"""macOS's AppleDouble files ("._name") taken into their files' streams while serving, on a
fruit share with `fruit:convert_adouble` (on by default, as Samba's vfs_fruit converts them).

macOS writes a "._" file beside each file it copies to a volume that keeps no named streams
(FAT and exFAT disks, some NAS shares, archives): in it the file's Finder information (tags
and colours, type and creator), its resource fork, and any extended attributes it had
(com.apple.metadata:_kMDItemUserTags, ...). Copied onto a share, those files hold what
macOS's client looks for in the file's streams (AFP_AfpInfo, AFP_Resource, one per
attribute). As Samba's ad_convert, the "._" file beside a file is taken into its streams when
a client opens one of its Apple streams or lists its directory with macOS's enriched
listings (smb.commands.directory_aapl).

What is taken is only ever added: a stream the file has already is kept as it is (a name
compared without regard to case), never overwritten. Where everything the "._" file holds is
now in the file's streams, the "._" file is rewritten as Samba leaves one it took in, its
Finder information alone, written "Netatalk" (so it is never taken in again: a stream the
client removed later does not come back from it), or with `fruit:delete_empty_adfiles`
removed, as Samba removes one left with no resource fork. It is left as it was where
anything in it was not taken (a stream of that name already there, an attribute block that
does not parse, a resource fork over RUNTIME_FORK_MOST, an error) and where the account may
not rewrite or remove it; while a client has it open (perhaps still writing it) nothing is taken. A "._" file netatalk or Samba's vfs_fruit wrote (their
storage of a resource fork, `fruit:resource = file`) is not touched: Samba reads it again if
it serves the directory again; `smbring import-samba` takes it over and leaves it.

The conversion acts as the session's account, as Samba's does: only a regular "._" file
(reached without following a link) the account may read, owned by its file's owner (or by
root: someone who may only write the directory could otherwise give another's file streams),
into the streams of a file the account may write (`judge`: the rights an open of the file's
stream is judged by)."""
from __future__ import annotations

import logging
import os
import stat

from smbring.smb import aapl, dirleases, notify, wire
from smbring.smb.errors import SMBError
from smbring.smb.fs import MAX_STREAMS, PathError
from smbring.vfs import samba_xattrs

log = logging.getLogger("smbring.smb")

PREFIX = samba_xattrs.APPLEDOUBLE_PREFIX
# the largest resource fork taken while serving: copied in the kernel within the request
# (a few milliseconds); a larger one is left in its "._" file (`smbring import-samba` takes
# any size)
RUNTIME_FORK_MOST = 8 << 20


def converts(tree, parts: list[str]) -> bool:
    """Whether a "._" file beside the file at `parts` would be looked for: a fruit share
    that converts them, a file below its root that is not one itself."""
    share = tree.share
    return share.fruit and share.fruit_convert_adouble and bool(parts) and not parts[-1].startswith(PREFIX)


def convert(c, tree, parts: list[str], file_st: os.stat_result, judge) -> bool:
    """Takes the "._" file beside the file at `parts` (`file_st`: its stat) into the file's
    streams (see the module); `judge()`: the file's stream id (made where missing), the most
    an open of its streams may be granted, and its stat, as an open of one of its streams
    would be judged (create.take_appledouble gives it); it raises SMBError where the account may not
    write them. True where something was taken."""
    fs = tree.fs
    ad_parts = parts[:-1] + [PREFIX + parts[-1]]
    try:
        fd, st = fs.open_stat(ad_parts, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except (OSError, PathError):
        return False        # none (the usual), not a regular file, or not this account's to read
    taken, whole = 0, False
    try:
        # (a hard link to another file's, or another user's put beside this one: left alone,
        # before anything is read)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or not _owned_as(st, file_st):
            return False
        if c.state.share_modes.count((st.st_dev, st.st_ino)):
            return False    # open: perhaps being written (a copy under way), left until it is not
        try:
            head = fs.read_head(fd, samba_xattrs.APPLEDOUBLE_HEAD)
        except OSError:
            return False    # (the open it was asked for goes on as if there were none)
        content = samba_xattrs.appledouble_content(head, st.st_size)
        if content is None or content.by_netatalk:
            return False    # a file like any other, or Samba's (its resource fork: import-samba)
        pieces = _pieces(content, head if tree.share.fruit_wipe_blank_rfork else None)
        if not pieces:
            return False
        try:
            sid, limit, file_st = judge()
        except (SMBError, OSError, PathError):
            return False    # the account may not write the file's streams: left for one who may
        if sid is None or not limit & wire.FILE_WRITE_DATA or not _owned_as(st, file_st):
            return False
        if content.resource_fork[1] > RUNTIME_FORK_MOST:
            # (debug: each open of its Apple streams and each enriched listing says it again)
            log.debug("%s: a resource fork of %d bytes is left in it (more than is taken while "
                     "serving: smbring import-samba takes it)", "/".join(ad_parts), content.resource_fork[1])
        taken = _take(fs, sid, (file_st.st_uid, file_st.st_gid), fd, pieces)
        whole = content.streams is not None and content.resource_fork[1] <= RUNTIME_FORK_MOST \
            and taken == len(pieces)
    finally:
        fs.close_file(fd)
    if taken:
        log.info("%s: %d of its %d parts taken into the streams of %s", "/".join(ad_parts), taken,
                 len(pieces), parts[-1])
    if whole and tree.share.fruit_delete_empty_adfiles:
        try:
            fs.remove(ad_parts, False, key=(st.st_dev, st.st_ino))
        except (OSError, PathError) as e:
            log.info("%s: taken into its file's streams, not removed: %s", "/".join(ad_parts), e)
        else:
            c.state.watches.post("/".join([fs.root] + ad_parts), notify.REMOVED, notify.FILE_NAME)
            dirleases.entry_changed(c, fs, ad_parts)
    elif whole:
        _leave_converted(c, fs, ad_parts, st, content.finder_info)
    return bool(taken)


def _leave_converted(c, fs, ad_parts: list[str], st: os.stat_result, finder_info: bytes | None) -> None:
    """Rewrites the "._" file at `ad_parts` (`st`: its stat when read) as Samba leaves one it
    took in and keeps: its Finder information alone, written "Netatalk", which is never
    taken in again (a stream a client removes later does not come back from it)."""
    try:
        fd = fs.open(ad_parts, os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except (OSError, PathError) as e:
        log.info("%s: taken into its file's streams, left as it was: %s", "/".join(ad_parts), e)
        return
    try:
        now = fs.fstat(fd)
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            return      # (another file took the name meanwhile: not this one's to rewrite)
        converted = samba_xattrs.converted_appledouble(finder_info)
        fs.write_head(fd, converted)
        fs.ftruncate(fd, len(converted))
    except OSError as e:
        log.info("%s: taken into its file's streams, not rewritten: %s", "/".join(ad_parts), e)
        return
    finally:
        fs.close_file(fd)
    c.state.watches.post("/".join([fs.root] + ad_parts), notify.MODIFIED, notify.SIZE | notify.LAST_WRITE)
    dirleases.entry_changed(c, fs, ad_parts)


def _owned_as(st: os.stat_result, file_st: os.stat_result) -> bool:
    """Whether a "._" file (`st`) is its file's owner's, or root's."""
    return st.st_uid in (file_st.st_uid, 0)


def streams_of(content: samba_xattrs.AppleDoubleContent) -> list[tuple[str, object]]:
    """The streams a "._" file's content becomes, in order: (stream name, its bytes, or the
    (offset, length) of the "._" file they lie at). Also what `smbring import-samba` takes."""
    streams: list[tuple[str, object]] = []
    if content.finder_info is not None:
        streams.append((samba_xattrs.AFP_INFO_STREAM, aapl.afp_info_of(content.finder_info)))
    if content.resource_fork[1]:
        streams.append((samba_xattrs.RESOURCE_FORK_STREAM, content.resource_fork))
    streams.extend(content.streams or ())
    return streams


def _pieces(content: samba_xattrs.AppleDoubleContent, head: bytes | None = None) -> list[tuple[str, object]]:
    """`streams_of`, less what is not taken while serving: a resource fork over
    RUNTIME_FORK_MOST, and (`head`: the file's first bytes, given with
    fruit:wipe_intentionally_left_blank_rfork) one macOS wrote for none (BLANK_RESOURCE_FORK)."""
    offset, length = content.resource_fork
    blank = head is not None and head[offset:offset + length] == samba_xattrs.BLANK_RESOURCE_FORK
    return [(name, data) for name, data in streams_of(content)
            if name != samba_xattrs.RESOURCE_FORK_STREAM or (length <= RUNTIME_FORK_MOST and not blank)]


def _take(fs, sid: str, owner: tuple[int, int], ad_fd: int, pieces) -> int:
    """Makes each piece a stream of the file (`sid`) that has none of its name; how many were
    made."""
    try:
        fs.make_stream_dir(sid)
        present = {name.casefold() for name in fs.stream_names(sid)}
    except (OSError, PathError):
        return 0
    taken = 0
    for name, data in pieces:
        if name.casefold() in present:
            continue        # what the file has is kept
        if len(present) >= MAX_STREAMS:
            break           # (as a client's CREATE of one more is refused)
        try:
            fs.stream_parts(sid, name)      # (a name a stream may have: checked)
            out = fs.create_stream(sid, name, owner)
        except (OSError, PathError):
            continue
        try:
            if isinstance(data, tuple):
                fs.copy_range(ad_fd, data[0], out, data[1])
            else:
                fs.write_head(out, data)
        except OSError as e:
            log.info("stream %s not taken from its '._' file: %s", name, e)
            fs.close_file(out)
            try:
                fs.remove(fs.stream_parts(sid, name), False)      # (never left half written)
            except (OSError, PathError):
                pass
            continue
        fs.close_file(out)
        present.add(name.casefold())
        taken += 1
    return taken
