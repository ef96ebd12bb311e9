"""`smbring import-samba PATH`: takes over what Samba's smbd kept in a share's extended
attributes, so that a directory Samba served shows the same to smbring's clients:

- DOS attributes and creation times (`user.DOSATTRIB`) become smbring's (`user.smbring.dos`):
  hidden, system and archive files stay so, creation times stay;
- named streams kept by vfs_streams_xattr (`user.DosStream.<name>:$DATA`: Zone.Identifier,
  macOS's AFP_AfpInfo and AFP_Resource with `fruit:metadata = stream`, ...) become smbring's
  streams (files in the share's stream depot, owned by the file's owner);
- macOS's metadata as vfs_fruit keeps it by default: the Finder information in the
  AppleDouble xattr `user.org.netatalk.Metadata` (`fruit:metadata = netatalk`) and the
  resource fork in the AppleDouble file `._<name>` beside the file (`fruit:resource = file`)
  become its AFP_AfpInfo and AFP_Resource streams. The "._" files stay; a fruit share does not
  show them (`fruit:veto_appledouble`). Extended attributes macOS embedded in a "._" file
  become the named streams macOS's client shows them as (`com.apple.metadata:_kMDItemUserTags`
  -> `com.apple.metadata\uf022_kMDItemUserTags`: characters Windows refuses in a name go to
  Unicode's private use area, as vfs_fruit maps them).

Samba's own xattrs are left as they were (smbring never shows or changes them), so Samba can
serve the directory again. What smbring already keeps for a file is never overwritten.
- NT ACLs (`security.NTACL`, vfs_acl_xattr) become smbring's security descriptors (owned by
  the file's owner and group, as Samba keeps them), each ACE's SID as smbring names the same
  account: the SIDs Samba gave the file's owner and group, and (given Samba's smb.conf)
  those of its passdb users and mapped groups (`pdbedit`, `net groupmap`), become the Unix
  SIDs (S-1-22-1-uid, S-1-22-2-gid) smbring's tokens hold; well-known SIDs and Unix SIDs stay. A
  descriptor naming a SID that maps to no account here, or holding ACEs smbring does not
  evaluate, or (version 4) whose hash says the file's POSIX ACLs, owner, group or mode
  changed after Samba stored it (Samba then shows those; `--ignore-system-acls`: taken all
  the same, as Samba's `acl_xattr:ignore system acls`), is not taken over (the report names
  the file): its POSIX ACLs and mode, which Samba kept with it, still apply, with no deny the
  NT ACL may have added. Symbolic links are not followed, other file systems
mounted below PATH are not entered, and the report says what could not be done, file by
file; the exit status is 1 when anything could not (an NT ACL not taken over among them).
"""
from __future__ import annotations

import argparse
import errno
import grp
import json
import os
import pwd
import stat
import subprocess
import sys
from dataclasses import asdict, dataclass, field

from smbring.smb import aapl, acl, appledouble
from smbring.smb import sids as smb_sids
from smbring.smb.fileinfo import ATTR_SPARSE_FILE, STORED_ATTRIBUTES
from smbring.vfs import samba_xattrs
from smbring.vfs.api import STREAMS_DIR, DosInfo, PathError
from smbring.vfs.posix import DOS_XATTR, SD_XATTR, PosixVFS

MAX_PROBLEMS_SHOWN = 50


@dataclass
class Report:
    files: int = 0                   # files and directories looked at
    dos_taken: int = 0
    dos_kept: int = 0                # smbring had its own already
    streams_taken: int = 0
    streams_kept: int = 0            # a stream of that name was there already
    acls_taken: int = 0
    acls_kept: int = 0               # smbring had its own descriptor already
    nt_acls: int = 0                 # security.NTACL not taken over (nt_acl_files)
    problems: list[str] = field(default_factory=list)
    nt_acl_files: list[str] = field(default_factory=list)

    def problem(self, path: str, what: str) -> None:
        self.problems.append(f"{path}: {what}")


def import_tree(root: str, dry_run: bool = False, sids: dict[bytes, bytes] | None = None,
                ignore_system_acls: bool = False) -> Report:
    """Takes over Samba's metadata for everything beneath `root` (see the module); `sids`:
    Samba's SIDs of accounts and what smbring names them (`samba_sids`);
    `ignore_system_acls`: NT ACLs taken whatever their hashes say (Samba's `acl_xattr:ignore
    system acls`)."""
    root = os.path.realpath(root)
    report = Report()
    sids = sids or {}
    vfs = PosixVFS(root)
    try:
        device = os.stat(root).st_dev
        for top, dirs, files in os.walk(root):
            rel_top = os.path.relpath(top, root)
            parts_top = [] if rel_top == "." else rel_top.split(os.sep)
            if not parts_top:
                dirs[:] = [d for d in dirs if d != STREAMS_DIR]
            for name in list(dirs):
                st = os.lstat(os.path.join(top, name))
                if st.st_dev != device:
                    report.problem(os.path.join(top, name), "another file system mounted here: not entered")
                    dirs.remove(name)
            doubles = {n for n in files if n.startswith(samba_xattrs.APPLEDOUBLE_PREFIX)}
            if not parts_top:
                _File(vfs, root, [], report, dry_run, sids, ignore_system_acls).take(None)
            for name in dirs + files:
                double = samba_xattrs.APPLEDOUBLE_PREFIX + name
                _File(vfs, os.path.join(top, name), parts_top + [name], report, dry_run, sids,
                      ignore_system_acls).take(
                    parts_top + [double] if double in doubles else None)
    finally:
        vfs.close()
    return report


class _File:
    """One file or directory of the tree, and what is taken over for it."""

    def __init__(self, vfs: PosixVFS, path: str, parts: list[str], report: Report, dry_run: bool,
                 sids: dict, ignore_system_acls: bool = False):
        self.vfs, self.path, self.parts, self.report = vfs, path, parts, report
        self.dry_run, self.sids, self.ignore_system_acls = dry_run, sids, ignore_system_acls
        self.fd = self.st = self.sid = None

    def take(self, appledouble: list[str] | None) -> None:
        """`appledouble`: the "._" file beside it (its path in the tree), if there is one."""
        report = self.report
        try:
            self.st = os.lstat(self.path)
            if not (stat.S_ISREG(self.st.st_mode) or stat.S_ISDIR(self.st.st_mode)):
                return      # links are not followed; Samba keeps nothing on devices and pipes
            names = os.listxattr(self.path, follow_symlinks=False)
        except OSError as e:
            report.problem(self.path, e.strerror or str(e))
            return
        report.files += 1
        streams = [(x, n) for x in names if (n := samba_xattrs.stream_name(x)) is not None]
        dos = samba_xattrs.DOSATTRIB_XATTR in names
        nt_acl = samba_xattrs.NTACL_XATTR in names
        netatalk = samba_xattrs.NETATALK_XATTR in names
        if not (dos or streams or nt_acl or netatalk or appledouble):
            return
        try:
            self.fd = _open_beneath(self.vfs, self.parts)
        except (OSError, PathError) as e:
            report.problem(self.path, f"not opened: {getattr(e, 'strerror', None) or e}")
            return
        try:
            st = os.fstat(self.fd)
            if (st.st_dev, st.st_ino) != (self.st.st_dev, self.st.st_ino):
                report.problem(self.path, "replaced while it was read: left alone")
                return
            if dos:
                self._take_dos(DOS_XATTR in names)
            if nt_acl:
                self._take_nt_acl(SD_XATTR in names)
            for xattr, name in sorted(streams):
                self._stream(name, lambda x=xattr: [samba_xattrs.stream_data(os.getxattr(self.fd, x))])
            if netatalk:
                info = samba_xattrs.finder_info(os.getxattr(self.fd, samba_xattrs.NETATALK_XATTR))
                if info is not None:
                    self._stream(AFP_INFO, lambda: [aapl.afp_info_of(info)])
            if appledouble is not None:
                self._take_appledouble(appledouble)
        except OSError as e:        # (changed while it was read, a full disk, ...)
            report.problem(self.path, e.strerror or str(e))
        finally:
            os.close(self.fd)

    def _take_dos(self, ours: bool) -> None:
        if ours:
            self.report.dos_kept += 1
            return
        found = samba_xattrs.dos_info(os.getxattr(self.fd, samba_xattrs.DOSATTRIB_XATTR))
        if found is None:
            self.report.problem(self.path, f"{samba_xattrs.DOSATTRIB_XATTR} does not parse: left alone")
            return
        attrs, created = found
        # (READONLY of a file is its write bits to smbring, as with Samba's `map readonly`)
        info = DosInfo(attrs=(attrs or 0) & (STORED_ATTRIBUTES | ATTR_SPARSE_FILE), create_time=created or 0)
        if not self.dry_run:
            PosixVFS.set_dos(self.fd, info)
        self.report.dos_taken += 1

    def _take_nt_acl(self, ours: bool) -> None:
        report = self.report
        if ours:
            report.acls_kept += 1
            return
        why = None
        owner, group = acl.unix_user(self.st.st_uid), acl.sid(22, 2, self.st.st_gid)
        found = samba_xattrs.nt_acl(os.getxattr(self.fd, samba_xattrs.NTACL_XATTR))
        try:
            descriptor = acl.parse(found.descriptor) if found is not None else None
        except acl.BadDescriptor:
            descriptor = None
        if descriptor is None:
            why = "does not parse"
        elif found.posix_acl_hash is not None and not self.ignore_system_acls and \
                self._posix_acl_hash() != found.posix_acl_hash:
            # (Samba then shows what the POSIX ACLs say, as smbring will)
            why = "its POSIX ACLs, owner, group or mode changed after Samba stored it (its hash differs)"
        elif any(ace.body for ace in descriptor.dacl or ()):
            why = "holds ACEs smbring does not evaluate"
        else:
            # the descriptor's owner and group are the SIDs Samba gave the file's uid and gid
            # (they hold even where Samba's account database is not at hand)
            sids = dict(self.sids)
            if descriptor.owner:
                sids.setdefault(descriptor.owner, owner)
            if descriptor.group:
                sids.setdefault(descriptor.group, group)
            unknown = sorted({smb_sids.text(a.sid) for a in descriptor.dacl or () if _named(a.sid, sids) is None})
            if unknown:
                why = f"names SIDs no account here has: {', '.join(unknown)}"
        if why is not None:
            report.nt_acls += 1
            report.nt_acl_files.append(f"{self.path}: {why}")
            return
        # (its owner and group are the file's, as Samba keeps them: named as smbring names them)
        descriptor.owner, descriptor.group = owner, group
        for ace in descriptor.dacl or ():
            ace.sid = _named(ace.sid, sids)
        if not self.dry_run:
            PosixVFS.set_sd(self.fd, descriptor.pack())
        report.acls_taken += 1

    def _posix_acl_hash(self) -> bytes | None:
        """The hash a version 4 NT ACL of the file would hold now (samba_xattrs.posix_acl_hash):
        None where its POSIX ACLs do not parse."""
        st = os.fstat(self.fd)
        is_dir = stat.S_ISDIR(st.st_mode)
        access = samba_xattrs.posix_acl_entries(_xattr_or_none(self.fd, POSIX_ACL_ACCESS), st.st_mode)
        # (a directory without a default ACL has an empty one, as libacl gives it; a file none)
        default = samba_xattrs.posix_acl_entries(_xattr_or_none(self.fd, POSIX_ACL_DEFAULT) or EMPTY_POSIX_ACL,
                                                 0) if is_dir else None
        if access is None or (is_dir and default is None):
            return None
        return samba_xattrs.posix_acl_hash(access, default, st.st_uid, st.st_gid, st.st_mode)

    def _take_appledouble(self, parts: list[str]) -> None:
        """The resource fork (and, where the file has none yet, the Finder information) of
        the "._" file beside it: read without following a link, only a regular file's, and
        only one its file's owner (or root) owns."""
        path = os.path.join(self.vfs.root, *parts)
        try:
            fd = _open_beneath(self.vfs, parts)
        except (OSError, PathError) as e:
            self.report.problem(path, f"not opened: {getattr(e, 'strerror', None) or e}")
            return
        try:
            st = os.fstat(fd)
            if st.st_uid not in (self.st.st_uid, 0):
                # (someone who may write the directory could have put it beside another's file)
                self.report.problem(path, "owned by another user than its file: left alone")
                return
            head = os.pread(fd, APPLEDOUBLE_HEAD, 0) if stat.S_ISREG(st.st_mode) else b""
            content = samba_xattrs.appledouble_content(head, st.st_size)
            if content is None:
                self.report.problem(path, "not an AppleDouble file: left alone")
                return
            # (the extended attributes macOS embedded among them, as the named streams it shows
            # them as)
            if content.streams is None:
                self.report.problem(path, "its embedded extended attributes do not parse: left alone")
            for name, data in appledouble.streams_of(content):
                self._stream(name, lambda d=data: _read_range(fd, *d) if isinstance(d, tuple) else [d])
        finally:
            os.close(fd)

    def _stream(self, name: str, data) -> None:
        """The named stream made of the pieces `data()` gives, unless the file has one of
        that name."""
        report, path = self.report, self.path
        try:
            self.vfs.stream_parts("0" * 16, name)        # (a name smbring could keep: checked)
        except PathError:
            report.problem(path, f"stream {name!r}: not a name a stream may have here: left alone")
            return
        if self.dry_run:
            report.streams_taken += 1
            return
        try:
            if self.sid is None:
                self.sid = self.vfs.stream_id_of(self.fd, create=True)
                if self.sid is None:
                    raise OSError("no stream id")
                self.vfs.make_stream_dir(self.sid)
            if any(n.casefold() == name.casefold() for n in self.vfs.stream_names(self.sid)):
                report.streams_kept += 1        # (names of streams are one without regard to case)
                return
            try:
                out = self.vfs.create_stream(self.sid, name, (self.st.st_uid, self.st.st_gid))
            except FileExistsError:
                report.streams_kept += 1
                return
            try:
                for piece in data():
                    view = memoryview(piece)
                    while view:
                        view = view[os.write(out, view):]
            finally:
                os.close(out)
        except (OSError, PathError) as e:
            report.problem(path, f"stream {name!r}: {getattr(e, 'strerror', None) or e}")
            return
        report.streams_taken += 1


def _open_beneath(vfs: PosixVFS, parts: list[str]) -> int:
    """The file or directory at `parts`, reached beneath the tree's root without following a
    link on the way (a directory swapped for one while the tree is walked leads nowhere
    else); anything but a regular file or a directory is refused."""
    return vfs.open(parts, os.O_RDONLY)


def _named(sid: bytes, sids: dict[bytes, bytes]) -> bytes | None:
    """What smbring names the account Samba named `sid`: the mapped SID; a well-known or a
    Unix SID as it is; None for another (a domain's or Samba's own SAM, S-1-5-21-...)."""
    if sid in sids:
        return sids[sid]
    authority, subs = smb_sids.parts(sid)
    return None if authority == 5 and subs[:1] == (21,) else sid


def samba_sids(conf: str) -> dict[bytes, bytes]:
    """Samba's SIDs of its passdb users (`pdbedit -L -v`) and of its mapped groups (`net
    groupmap list`) -> the Unix SIDs of the accounts they are here; an account unknown here,
    or a group mapped to no Unix group, maps to nothing."""
    out: dict[bytes, bytes] = {}
    users = subprocess.run(["pdbedit", "-s", conf, "-L", "-v"], capture_output=True, text=True, timeout=120)
    if users.returncode != 0:
        raise RuntimeError(f"pdbedit -s {conf}: {users.stderr.strip() or users.returncode}")
    name = None
    for line in users.stdout.splitlines():
        key, _, value = line.partition(":")
        if key == "Unix username":
            name = value.strip()
        elif key == "User SID" and name:
            try:
                out[smb_sids.from_text(value)] = acl.unix_user(pwd.getpwnam(name).pw_uid)
            except (KeyError, ValueError):
                pass
    groups = subprocess.run(["net", "-s", conf, "groupmap", "list"], capture_output=True, text=True, timeout=120)
    for line in groups.stdout.splitlines():     # "NAME (S-1-...) -> unixgroup"
        sid_part, arrow, unix = line.rpartition(") -> ")
        if not arrow or "(" not in sid_part:
            continue
        try:
            out[smb_sids.from_text(sid_part.rsplit("(", 1)[1])] = acl.sid(22, 2, grp.getgrnam(unix.strip()).gr_gid)
        except (KeyError, ValueError):
            pass
    return out


AFP_INFO = samba_xattrs.AFP_INFO_STREAM
APPLEDOUBLE_HEAD = samba_xattrs.APPLEDOUBLE_HEAD


POSIX_ACL_ACCESS, POSIX_ACL_DEFAULT = "system.posix_acl_access", "system.posix_acl_default"
EMPTY_POSIX_ACL = samba_xattrs.POSIX_ACL_VERSION.to_bytes(4, "little")


def _xattr_or_none(fd: int, name: str) -> bytes | None:
    """The extended attribute's value, None where the file has none (or its file system none)."""
    try:
        return os.getxattr(fd, name)
    except OSError as e:
        if e.errno in (errno.ENODATA, errno.ENOTSUP):
            return None
        raise


def _read_range(fd: int, offset: int, length: int):
    """The bytes at offset.. of the file, a MiB at a time."""
    done = 0
    while done < length:
        chunk = os.pread(fd, min(length - done, 1 << 20), offset + done)
        if not chunk:
            raise OSError("the AppleDouble file is shorter than its resource fork")
        done += len(chunk)
        yield chunk


def register(sub) -> None:
    p = sub.add_parser("import-samba", help="take over the DOS attributes and streams Samba kept "
                       "in a directory's extended attributes")
    p.add_argument("path", help="the directory a Samba share served (its path)")
    p.add_argument("--samba-conf", metavar="SMB.CONF", help="Samba's smb.conf: its users' and mapped "
                   "groups' SIDs in NT ACLs are taken over as these accounts (pdbedit, net groupmap)")
    p.add_argument("--dry-run", action="store_true", help="count what would be taken over, change nothing")
    p.add_argument("--ignore-system-acls", action="store_true",
                   help="take NT ACLs over whatever their hashes say, as Samba does on a share with "
                   "`acl_xattr:ignore system acls = yes` (else one whose file's POSIX ACLs, owner, group or "
                   "mode changed after Samba stored it is not taken: Samba shows those instead)")
    p.add_argument("--json", action="store_true", help="the report as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not os.path.isdir(args.path):
        print(f"smbring import-samba: {args.path}: not a directory", file=sys.stderr)
        return 2
    try:
        sids = samba_sids(args.samba_conf) if args.samba_conf else {}
    except (OSError, RuntimeError, subprocess.SubprocessError) as e:
        print(f"smbring import-samba: Samba's accounts: {e}", file=sys.stderr)
        return 2
    report = import_tree(args.path, args.dry_run, sids, args.ignore_system_acls)
    if args.json:
        print(json.dumps(asdict(report), indent=1))
    else:
        verb = "would take" if args.dry_run else "took"
        print(f"{report.files} files and directories; {verb} over the DOS attributes of "
              f"{report.dos_taken} ({report.dos_kept} had smbring's own), the NT ACLs of "
              f"{report.acls_taken} ({report.acls_kept} had smbring's own) and {report.streams_taken} "
              f"streams ({report.streams_kept} were there already)")
        if report.nt_acls:
            print(f"{report.nt_acls} NT ACLs (security.NTACL) not taken over: their POSIX ACLs "
                  "and modes apply", file=sys.stderr)
            for path in report.nt_acl_files[:MAX_PROBLEMS_SHOWN]:
                print(f"  {path}", file=sys.stderr)
        for line in report.problems[:MAX_PROBLEMS_SHOWN]:
            print(f"problem: {line}", file=sys.stderr)
        if len(report.problems) > MAX_PROBLEMS_SHOWN:
            print(f"... and {len(report.problems) - MAX_PROBLEMS_SHOWN} more problems", file=sys.stderr)
    return 1 if report.problems or report.nt_acls else 0
