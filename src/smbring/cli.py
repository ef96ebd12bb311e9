"""The ``smbring`` command. Each subcommand lives with the layer it belongs to.

A subcommand module exposes ``register(subparsers)``, which adds its parser and sets ``func``
(called with the parsed arguments; its return value is the exit status).
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

# subcommand -> module that registers it; imported only when that subcommand is asked for,
# so a broken or heavy layer never slows down or breaks the others.
SUBCOMMANDS = {
    "features": "smbring.uring.cli",
    "serve": "smbring.server.cli",
    "testparm": "smbring.server.cli",
    "user": "smbring.server.users",
    "import-samba": "smbring.server.samba_import",
    "orphaned-streams": "smbring.server.orphaned_streams",
    "status": "smbring.server.control",
    "control": "smbring.server.control",
    "bench": "smbring.bench.cli",
    # the client: smb:// URLs, as smbclient's commands
    "get": "smbring.client.cli",
    "put": "smbring.client.cli",
    "ls": "smbring.client.cli",
    "mkdir": "smbring.client.cli",
    "rm": "smbring.client.cli",
    "mv": "smbring.client.cli",
    "cp": "smbring.client.cli",
    "watch": "smbring.client.cli",
}


def version() -> str:
    """The installed distribution's version (the source tree's when run from it)."""
    import importlib.metadata     # only for --version: its import costs every command ~20 ms
    try:
        return importlib.metadata.version("smbring")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


class _Version(argparse.Action):
    """--version, looked up only when asked for."""

    def __init__(self, option_strings, dest, **kw):
        super().__init__(option_strings, dest, nargs=0, **kw)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"smbring {version()}")
        parser.exit()


class Formatter(argparse.HelpFormatter):
    """argparse's help formatter, sized as argparse sizes it (the terminal's width less 2) but
    without shutil: argparse makes a formatter for every add_argument, and the first one
    imported shutil (with bz2 and lzma), a few ms of every command."""

    def __init__(self, prog, indent_increment=2, max_help_position=24, width=None):
        if width is None:
            width = _terminal_columns() - 2
        super().__init__(prog, indent_increment, max_help_position, width)


def _terminal_columns() -> int:
    """shutil.get_terminal_size().columns: $COLUMNS, else stdout's terminal, else 80."""
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


class Parser(argparse.ArgumentParser):
    """An ArgumentParser with :class:`Formatter`; subcommands' parsers are made of this class
    too (add_subparsers hands its parser class on)."""

    def __init__(self, *args, formatter_class=Formatter, **kw):
        super().__init__(*args, formatter_class=formatter_class, **kw)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = Parser(prog="smbring", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action=_Version, help="show the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    seen = set()
    for name, module in SUBCOMMANDS.items():
        if (only and name != only) or module in seen:
            continue
        seen.add(module)
        layer = importlib.import_module(module)
        if only and hasattr(layer, "register_command"):
            layer.register_command(sub, only)   # a module of several commands: just the one asked for
        else:
            layer.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    only = argv[0] if argv and argv[0] in SUBCOMMANDS else None
    args = build_parser(only).parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into head & co.
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
