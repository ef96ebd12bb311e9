"""8.3 short names (MS-FSCC 2.1.5.2.1): what a listing shows as a long name's short name, and
the way back, from a short name a client sends to the long name it stands for.

A name that is an 8.3 name already (at most 8 characters, a dot and at most 3 of the DOS set,
judged upper-cased) is its own short name. Any other is mangled as Samba mangles: up to five
characters of its base, a tilde and two characters of a hash of the whole name, then up to
three characters of its extension ("long name of a file.text" -> "LONGN~4Q.TEX"). The short
name is computed, never stored: two long names of a directory may share one (a client
naming it reaches the first of them in the directory's order, as with Samba's hash2).

The way back is asked only for a name that could be a mangled one (it holds the tilde) and
that the directory holds in no spelling. A directory the share's CaseIndex keeps (local,
32 to 200,000 entries) answers from a map of its long names by short name, made once and
kept current with the index; any other is read and looked through, at most MAX_SCANNED
names of it: a larger one is not searched, so a client naming made-up short names cannot
make the server hash a huge directory request after request.
"""
from __future__ import annotations

import itertools
import zlib

SHORT_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'()-@^_`{}~")
ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_ALPHABET_SET = frozenset(ALPHABET)
MAX_SCANNED = 4096          # names of a directory not indexed looked through for a short name at most


def _split(name: str) -> tuple[str, str, str]:
    """(base, dot, extension): the extension after the last dot, none for a name whose only
    dots lead it (".profile")."""
    return name.rpartition(".") if "." in name.lstrip(".") else (name, "", "")


def is_short_name(name: str) -> bool:
    """Whether `name` is an 8.3 name (upper-cased: upper case may lengthen a name, as
    "\ufb03" becomes "FFI")."""
    base, _dot, ext = _split(name)
    upper_base, upper_ext = base.upper(), ext.upper()
    return (0 < len(upper_base) <= 8 and len(upper_ext) <= 3 and set(upper_base) <= SHORT_NAME_CHARS
            and set(upper_ext) <= SHORT_NAME_CHARS)


def short_name(name: str) -> str:
    """A name's 8.3 name: the name itself (upper-cased) when it is one, else mangled."""
    mangled = mangled_name(name)
    if mangled is not None:
        return mangled
    base, dot, ext = _split(name)
    return f"{base.upper()}.{ext.upper()}" if dot else base.upper()


def mangled_name(name: str) -> str | None:
    """A long name's mangled 8.3 name; None for a name that is an 8.3 name already."""
    if is_short_name(name):
        return None
    base, _dot, ext = _split(name)
    h = zlib.crc32(name.encode("utf-8", "surrogatepass"))
    prefix = "".join(itertools.islice(_dos_chars(base.upper()), 5)) or "_"
    tail = "".join(ch for ch in ext.upper() if ch in SHORT_NAME_CHARS)[:3]
    mangled = f"{prefix}~{ALPHABET[h % 36]}{ALPHABET[(h // 36) % 36]}"
    return f"{mangled}.{tail}" if tail else mangled


def _dos_chars(text: str):
    """The characters of (upper-cased) `text` a mangled name's prefix keeps."""
    return (ch for ch in text if ch in SHORT_NAME_CHARS and ch != "~")


def may_be_mangled(name: str) -> bool:
    """Whether `name` could be a mangled short name: an 8.3 name with a tilde followed by
    two characters of the hash's alphabet."""
    base, _dot, _ext = _split(name)
    at = base.find("~")
    return (at >= 1 and len(base) == at + 3 and set(base[at + 1:].upper()) <= _ALPHABET_SET
            and is_short_name(name))


def long_name_of(names: list[str], short: str) -> str | None:
    """The first of a directory's `names` whose mangled short name is `short` (compared
    upper-cased), if any; None too for a directory of more than MAX_SCANNED names. Names
    that are 8.3 names already are left out: they are their own short names, found by the
    lookup without regard to case."""
    if not may_be_mangled(short) or len(names) > MAX_SCANNED:
        return None
    wanted = short.upper()
    first = wanted[0]
    for name in names:
        # (a cheap look first: a mangled name starts with the first DOS character of its
        # name, "_" where its base has none)
        if first != "_" and next(_dos_chars(name.upper()), "") != first:
            continue
        if mangled_name(name) == wanted:
            return name
    return None
