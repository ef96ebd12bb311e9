"""What the fuzzer counts as a finding, and the findings already reported.

A check that fails raises `Finding`; its `kind` names a known finding (one in KNOWN), so
that the fuzzer can record it and go on: otherwise one bug, met again and again, would hide
every other. tests/fuzz/crashes holds a reproducer of each, replayed with no finding
tolerated by test_replay.py.
"""
from __future__ import annotations

import os

from smbring.smb import wire

# Findings reported and not fixed yet, by kind: the fuzzer records them and goes on (so that
# one known bug does not hide the next); SMBRING_FUZZ_STRICT=1, and the replays of
# tests/fuzz/crashes, treat them as failures. Remove an entry once its bug is fixed.
KNOWN = {
    "reauth-fd-leak": "a failed re-authentication (a bad token, or another user) deletes the session "
                      "without closing its opens: they stay, unreachable, until the connection ends",
    "create-fd-leak": "h_create leaves the file it opened open when a later step fails (ftruncate "
                      "of a read-only descriptor for FILE_SUPERSEDE or FILE_OVERWRITE without write "
                      "access), and nothing ever closes it",
    "vfs-parent-fd-leak": "PosixVFS.parent opens the parent directory before it finds the path "
                          "empty (IndexError), and rename opens the first parent before the second "
                          "fails: a rename to an empty name leaks two descriptors",
    "root-delete-on-close": "delete on close of the share root: close_open calls PosixVFS.remove([]), "
                            "whose IndexError escapes close_all, and the opens after it stay open",
    "second-negotiate-malformed": "a second NEGOTIATE that is signed, carries a flag the core refuses "
                                  "or a wrong StructureSize fails _one's generic checks first and is "
                                  "answered STATUS_INVALID_PARAMETER; the connection stays (h_negotiate, "
                                  "which drops it, is never reached)",
}
STRICT = "SMBRING_FUZZ_STRICT"


def tolerated() -> frozenset:
    return frozenset() if os.environ.get(STRICT) == "1" else frozenset(KNOWN)


class Finding(AssertionError):
    """An input broke one of the checks; `kind` names the known ones."""

    def __init__(self, message: str, kind: str = ""):
        super().__init__(f"[{kind}] {message}" if kind else message)
        self.kind = kind



def leak_kinds(client, targets: list[str]) -> dict[str, list[str]]:
    """The leaked descriptors' targets by the known finding each looks like ("fd-leak": none)."""
    failed_create = any(cmd == wire.CREATE and status >> 30 == 3 for cmd, status in client.statuses)
    parents = "root-delete-on-close" in client.known or \
        any(cmd in (wire.SET_INFO, wire.CLOSE) for cmd, _ in client.statuses)
    kinds: dict[str, list[str]] = {}
    for target in targets:
        kind = "fd-leak"
        if os.path.isdir(target) and parents:
            kind = "vfs-parent-fd-leak"
        elif (target.endswith(" (deleted)") or os.path.isfile(target)) and failed_create:
            kind = "create-fd-leak"
        kinds.setdefault(kind, []).append(target)
    return kinds
