"""When a write shows in a file's LastWriteTime: the delayed update of Windows' NTFS through
Windows Server 2019, which Samba's smbd keeps too (MS-FSA 2.1.4.17 notes the file modified;
only the time shown to whoever looks is deferred, and a handle's close always shows its
writes).

- The first write through a handle shows two seconds later (as the time it shows);
  later writes through the same handle show only when it closes, as the time of the close.
- A FLUSH, a change of the end of file or any FileBasicInformation set through the handle
  shows its pending update at once.
- A handle whose write time the client set or froze never moves it (`Open.kept_write_ns`,
  kept by SET_INFO, WRITE and the end-of-file change themselves).

A write through a named stream's handle is its file's: it moves the file's write time (the
stream's data is kept elsewhere, so the time is put on the file at close).

The kernel moves a file's mtime on every write, so while a handle has written the file,
clients are shown the time kept here instead (through every handle, the file's name and its
directory's listing); the file gets that time, or its close's, when the handle closes. The
delay is measured, never waited for: whoever looks first after it sees the update (the
table needs no timer)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

# how long after a handle's first write the write time shows it (smbd's
# WRITE_TIME_UPDATE_USEC_DELAY, Windows' two seconds)
DELAY_NS = 2_000_000_000


def file_key(o) -> tuple:
    """The file whose write time a handle's writes move: its own, or a named stream's file's
    (MS-FSA keeps LastWriteTime per file, not per stream)."""
    return getattr(o, "file_key", ()) or o.key


@dataclass
class Written:
    """What one handle's writes owe the write time."""

    due_ns: int | None      # its first write shows then (None: shown, or never delayed)
    on_close: bool          # written since its last update showed: its close shows it


class WriteTimes:
    """The write times shown in place of the kernel's, per file (st_dev, st_ino), and the
    handles whose writes they hold back. Times are ns since the Unix epoch."""

    def __init__(self, clock: Callable[[], int] = time.time_ns) -> None:
        self.clock = clock
        self._shown: dict[tuple, int] = {}
        self._written: dict[tuple, dict[object, Written]] = {}

    def shown(self, key: tuple) -> int | None:
        """The write time to report for the file, or None: the kernel's is right."""
        if key not in self._shown:
            return None
        self._settle(key)
        return self._shown.get(key)

    def writing(self, o, current_ns: Callable[[], int]) -> None:
        """A WRITE through `o` is about to reach the file (`current_ns`: the file's write
        time as the kernel has it now, before the write moves it)."""
        if o.kept_write_ns is not None:
            return          # the handle's own time stands (kept by the WRITE itself)
        key = file_key(o)
        self._settle(key)
        if key not in self._shown:
            self._shown[key] = current_ns()
        handles = self._written.setdefault(key, {})
        w = handles.get(o)
        if w is None:
            handles[o] = Written(due_ns=self.clock() + DELAY_NS, on_close=True)
        else:
            w.on_close = True

    def show_now(self, o) -> int | None:
        """FLUSH or FileBasicInformation through `o`: its pending update shows at once. The
        time the file must get now, or None when nothing was pending."""
        key = file_key(o)
        self._settle(key)
        w = self._written.get(key, {}).get(o)
        if w is None or (w.due_ns is None and not w.on_close):
            return None
        now = self.clock()
        w.due_ns, w.on_close = None, False
        self._shown[key] = now
        return now

    def modified_now(self, o) -> None:
        """The end of file set through `o`: the write time is now (the kernel's already, for
        a file no handle holds back); what `o` had pending is shown with it."""
        key = file_key(o)
        self._settle(key)
        handles = self._written.get(key)
        if handles is None:
            return
        w = handles.get(o)
        if w is not None:
            w.due_ns, w.on_close = None, False
        self._shown[key] = self.clock()

    def set_by_client(self, key: tuple, mtime_ns: int) -> None:
        """A client set the file's write time: every handle shows it from now on."""
        if key in self._shown:
            self._shown[key] = mtime_ns

    def closing(self, o) -> int | None:
        """`o` closes: the write time its file must get now (its close's, when writes of
        `o` are still to show; else the time shown), or None: nothing to put right."""
        key = file_key(o)
        handles = self._written.get(key)
        if handles is None or o not in handles:
            return None
        self._settle(key)
        w = handles.pop(o)
        when = self.clock() if w.on_close else self._shown.get(key)
        if handles:
            if when is not None:
                self._shown[key] = when       # the other handles show it too
        else:
            del self._written[key]
            self._shown.pop(key, None)
        return when

    def _settle(self, key: tuple) -> None:
        """Shows the delayed updates whose time has come (each as the time it came)."""
        handles = self._written.get(key)
        if not handles:
            return
        now = self.clock()
        for w in sorted((w for w in handles.values() if w.due_ns is not None and w.due_ns <= now),
                        key=lambda w: w.due_ns):
            self._shown[key] = w.due_ns
            w.due_ns, w.on_close = None, False
