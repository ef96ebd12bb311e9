"""What the SMB core and the file systems that serve it share: the SMB path rules, the errors
a file system raises for a client's path, and the DOS information it keeps for a file. Types
and pure functions only, no I/O.

The core (``smbring.smb``) calls a file system through the ``smbring.smb.fs.FileSystem``
protocol; an implementation (``smbring.vfs.posix.PosixVFS``) lies below the core and must not
import it, so what both sides name lives here, below both.
"""
from __future__ import annotations

import errno
from dataclasses import dataclass

from smbring._dirent import split_ascii_path

# (the C split of an ASCII name, smbring/_dirent/paths.c, holds the same names and characters)
RESERVED = frozenset({"CON", "PRN", "AUX", "NUL"} | {f"COM{i}" for i in range(1, 10)} |
                     {f"LPT{i}" for i in range(1, 10)})
BAD_CHARS = frozenset('"*/:<>?|') | {chr(c) for c in range(32)}
# a stream name may hold control characters (NTFS allows 0x01-0x1F there, and clients use
# them: "\x05DocumentSummaryInformation"); a file system keeps them out of its own file names
# (vfs/posix.py `depot_name`). NUL, separators and the type separator ":" never.
STREAM_BAD_CHARS = frozenset("/\\:\0")

# where a file system keeps alternate data streams, in the share root: a name clients can
# neither open (split_path refuses it) nor see in a listing of the root
STREAMS_DIR = ".smbring-streams"

# what a kernel (POSIX) byte-range lock over a range is to become (FileSystem.set_range_locks)
RANGE_UNLOCKED, RANGE_READ, RANGE_WRITE = 0, 1, 2


class PathError(Exception):
    """A client path that names nothing we may serve; `kind` picks the status."""

    def __init__(self, kind: str):
        super().__init__(kind)
        self.kind = kind  # "invalid" | "syntax"


class NotAFile(OSError):
    """A FIFO, socket or device node: never opened for a client. Opening one could wait
    forever (a FIFO waits for its other end) or act on a device; Samba refuses these opens with
    STATUS_IO_REPARSE_TAG_NOT_HANDLED. Its errno is EACCES (access denied) for code that only
    looks at the errno."""

    def __init__(self, path: str):
        super().__init__(errno.EACCES, "not a regular file or directory", path)


@dataclass
class DosInfo:
    """What Windows keeps for a file and Unix does not, as a file system stores it."""

    attrs: int = 0            # 0: none stored
    create_time: int = 0      # NT time; 0: none stored
    change_time: int = 0
    change_mtime_ns: int = 0
    allocation: int = 0       # AllocationSize as set (AlSi, FileAllocationInformation)


def check_stream_name(stream: str) -> None:
    """A stream name names one entry of its file's stream directory: never ".", "..", nor
    anything with a separator, a colon or NUL."""
    if (stream in ("", ".", "..") or set(stream) & STREAM_BAD_CHARS
            or len(stream.encode("utf-8", "surrogatepass")) > 255):
        raise PathError("invalid")


def split_stream(name: str) -> tuple[str, str | None]:
    """"dir\\file:stream:$DATA" -> ("dir\\file", "stream"); no stream (or "::$DATA", the file
    itself) -> (name, None). Only $DATA streams exist on a file system like this one."""
    head, sep, last = name.rpartition("\\")
    if ":" not in last:
        return name, None
    base, _, spec = last.partition(":")
    stream, typed, kind = spec.partition(":")
    # ("name:" names no type: invalid, as on Windows, not the $DATA stream)
    if typed and kind.upper() != "$DATA" or ":" in kind:
        raise PathError("invalid")
    if not stream:
        if not base:
            raise PathError("invalid")
        return head + sep + base, None
    check_stream_name(stream)
    return head + sep + base, stream


def nameable(component: str) -> bool:
    """Whether a client may name `component` in a path (`split_path` takes it as it is):
    never the stream depot, a reserved DOS device name or a name with a character no SMB
    name holds."""
    try:
        return split_path(component) == [component]
    except PathError:
        return False


def split_path(name: str) -> list[str]:
    """SMB path (relative to the share) -> checked components. A forward slash separates
    components as a backslash does, as smbd reads SMB2 paths (check_path_syntax): no name
    holds one, so a component never does, and `..` spelled either way goes no higher."""
    # (an ASCII name, the usual one, is split and checked in C, as below: its components, or
    # the kind of the first refusal; what other characters upper-case or case-fold to, and
    # their encoded length, are Python's to say)
    parts = split_ascii_path(name, STREAMS_DIR)
    if parts.__class__ is list:
        return parts
    if parts is not None:
        raise PathError(parts)
    return split_any_path(name)


def split_any_path(name: str) -> list[str]:
    """`split_path` of any name, in Python (what the C split of an ASCII name must match)."""
    if "\0" in name:
        raise PathError("invalid")
    # repeated separators name nothing more than one does (smbd folds them the same way)
    parts: list[str] = []
    for p in name.replace("/", "\\").split("\\"):
        if not p:
            continue
        if p == "..":
            # as Samba's check_path_syntax: `a\..` names what `a`'s directory is, by the
            # name alone (never through a link); nothing goes above the share
            if not parts:
                raise PathError("syntax")
            parts.pop()
            continue
        if p == ".":
            raise PathError("syntax")
        # (UTF-8 takes at most 4 bytes a character: a name of 63 or fewer is not encoded)
        if len(p) > 63 and len(p.encode("utf-8", "surrogatepass")) > 255 or set(p) & BAD_CHARS:
            raise PathError("invalid")
        if p.split(".")[0].upper() in RESERVED or p.casefold() == STREAMS_DIR:
            raise PathError("invalid")
        parts.append(p)
    return parts
