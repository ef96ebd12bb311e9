"""smb.conf's syntax, read as Samba reads it (lib/util/tini.c and the include handling of
lib/param): what the options mean is `smbring.server.config`'s business.

- A line's leading whitespace is skipped and every run of whitespace inside it becomes one
  space; a backslash at the end of a line continues it on the next.
- Lines whose first character is ``;`` or ``#`` are comments (there are no comments after a
  value: ``comment = a ; b`` is the value ``a ; b``).
- ``[name]`` opens a section (what follows ``]`` on the line is ignored; a ``[`` without ``]``
  is an error); a section named again continues the first (names compared without case).
  Options before the first section belong to ``[global]``.
- ``name = value``: one space around each side is trimmed; a line without ``=`` is an option
  with an empty value (which no known option takes: it is reported as unknown).
- ``include = FILE`` reads FILE there, as if typed in place (load-time substitutions done by
  the caller's `expand`); includes nest at most `MAX_INCLUDE_DEPTH` deep and never loop.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

MAX_INCLUDE_DEPTH = 16
MAX_FILE_SIZE = 16 << 20


class SmbConfError(ValueError):
    """A file smb.conf's syntax cannot read (the message says where)."""


@dataclass
class Option:
    name: str           # as written, whitespace collapsed
    value: str
    where: str          # FILE:LINE, for messages


@dataclass
class Section:
    name: str
    options: list[Option] = field(default_factory=list)


@dataclass
class Document:
    sections: dict[str, Section] = field(default_factory=dict)   # lower-case name -> section
    files: list[str] = field(default_factory=list)                # the files read, in order
    # what the files say in their order: (section key, option), None for a section's header
    # (Samba applies it in this order: `copy` copies what is set so far)
    events: list = field(default_factory=list)

    def section(self, name: str) -> Section:
        key = name.lower()
        if key not in self.sections:
            self.sections[key] = Section(name)
        self.events.append((key, None))
        return self.sections[key]

    def add(self, section: str, option: Option) -> None:
        key = section.lower()
        if key not in self.sections:
            self.section(section)
        self.sections[key].options.append(option)
        self.events.append((key, option))


def key(name: str) -> str:
    """How Samba compares option names (strwicmp): without case or whitespace."""
    return "".join(name.split()).lower()


def logical_lines(text: str):
    """(line number, line) for each logical line: continuations joined, whitespace collapsed,
    blank lines and comments dropped."""
    pending, start = "", 0
    for number, raw in enumerate(text.split("\n"), 1):
        if not pending:
            start = number
        line = raw.rstrip("\r")
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = " ".join((pending + line).split())
        pending = ""
        if line and line[0] not in "#;":
            yield start, line
    if pending.strip():
        line = " ".join(pending.split())
        if line[0] not in "#;":
            yield start, line


def parse(path: str, expand=lambda value: value) -> Document:
    """The document a file holds, its includes read in place. `expand` makes a value's
    load-time substitutions (for include paths); it may raise ValueError to refuse one.
    Raises SmbConfError for what cannot be read (OSError for a file that cannot be opened)."""
    doc = Document()
    doc.section("global")
    _read(doc, os.path.abspath(path), "global", [], expand)
    return doc


def _read(doc: Document, path: str, current: str, stack: list[str], expand) -> str:
    """Reads one file into doc, starting in section `current`; returns the section it ends
    in (an included file may open sections)."""
    if path in stack:
        raise SmbConfError(f"{stack[-1]}: include loop through {path}")
    if len(stack) >= MAX_INCLUDE_DEPTH:
        raise SmbConfError(f"{stack[-1]}: includes nested more than {MAX_INCLUDE_DEPTH} deep")
    with open(path, "rb") as f:
        data = f.read(MAX_FILE_SIZE + 1)
    if len(data) > MAX_FILE_SIZE:
        raise SmbConfError(f"{path}: larger than {MAX_FILE_SIZE >> 20} MiB")
    text = data.decode("utf-8", errors="replace")
    doc.files.append(path)
    for number, line in logical_lines(text):
        where = f"{path}:{number}"
        if line.startswith("["):
            end = line.find("]")
            if end < 0:
                raise SmbConfError(f"{where}: a section name without its closing ']'")
            current = line[1:end]
            if not current.strip():
                raise SmbConfError(f"{where}: an empty section name")
            doc.section(current)
            continue
        name, equals, value = line.partition("=")
        name, value = _trim_one_space(name), _trim_one_space(value) if equals else ""
        if key(name) == "include":
            try:
                target = expand(value)
            except ValueError as e:
                raise SmbConfError(f"{where}: include = {value}: {e}") from None
            target = os.path.join(os.path.dirname(path), target)
            try:
                current = _read(doc, os.path.abspath(target), current, stack + [path], expand)
            except FileNotFoundError:
                raise SmbConfError(f"{where}: include = {value}: no such file") from None
            except OSError as e:
                raise SmbConfError(f"{where}: include = {value}: {e.strerror}") from None
            continue
        doc.add(current, Option(name, value, where))
    return current


def _trim_one_space(text: str) -> str:
    """tini.c's trim_one_space: whitespace is already collapsed, so one space each side."""
    if text.startswith(" "):
        text = text[1:]
    if text.endswith(" "):
        text = text[:-1]
    return text
