"""smb.write_times on its own, with a clock the test moves: when a handle's writes show in
the write time, what a close owes the file, and that nothing is kept once the handles that
wrote are gone."""
from __future__ import annotations

from dataclasses import dataclass

from smbring.smb.write_times import DELAY_NS, WriteTimes

KEY = (1, 2)
SECOND = 1_000_000_000


@dataclass(eq=False)
class Handle:
    key: tuple = KEY
    kept_write_ns: int | None = None


class Clock:
    def __init__(self) -> None:
        self.now = 1_000 * SECOND

    def __call__(self) -> int:
        return self.now


def table() -> tuple[WriteTimes, Clock]:
    clock = Clock()
    return WriteTimes(clock), clock


def test_nothing_is_shown_in_place_of_the_kernel_time_for_a_file_no_handle_wrote():
    times, _ = table()
    assert times.shown(KEY) is None
    assert times.closing(Handle()) is None
    assert times.show_now(Handle()) is None


def test_the_first_write_shows_after_the_delay_as_the_time_it_came_due():
    times, clock = table()
    h = Handle()
    times.writing(h, lambda: 5)
    assert times.shown(KEY) == 5
    clock.now += DELAY_NS - 1
    assert times.shown(KEY) == 5
    due = clock.now + 1
    clock.now += 10 * SECOND
    assert times.shown(KEY) == due
    assert times.closing(h) == due          # the disk gets what was shown
    assert times.shown(KEY) is None         # and the table forgets the file


def test_a_later_write_shows_at_close_as_the_time_of_the_close():
    times, clock = table()
    h = Handle()
    times.writing(h, lambda: 5)
    clock.now += 3 * SECOND
    first = times.shown(KEY)
    times.writing(h, lambda: 99)            # (never asked again: the time is held already)
    clock.now += 3 * SECOND
    assert times.shown(KEY) == first
    clock.now += SECOND
    assert times.closing(h) == clock.now


def test_a_write_due_before_the_next_write_shows_before_it_is_counted():
    """No one looked between the two writes: the first's update still came due first."""
    times, clock = table()
    h = Handle()
    times.writing(h, lambda: 5)
    clock.now += 3 * SECOND
    due = clock.now - SECOND
    times.writing(h, lambda: 99)
    assert times.shown(KEY) == due


def test_flush_shows_a_pending_write_once():
    times, clock = table()
    h = Handle()
    times.writing(h, lambda: 5)
    clock.now += 1
    assert times.show_now(h) == clock.now
    assert times.show_now(h) is None        # nothing pending any more
    clock.now += 10 * SECOND
    assert times.shown(KEY) == clock.now - 10 * SECOND
    assert times.closing(h) == clock.now - 10 * SECOND


def test_a_handle_whose_write_time_was_set_holds_nothing_back():
    times, _ = table()
    h = Handle(kept_write_ns=7)
    times.writing(h, lambda: 5)
    assert times.shown(KEY) is None
    assert times.closing(h) is None


def test_a_time_a_client_sets_is_what_every_handle_shows_until_a_close_owes_a_later_one():
    times, clock = table()
    writer, other = Handle(), Handle()
    times.writing(writer, lambda: 5)
    times.set_by_client(KEY, 42)
    assert times.shown(KEY) == 42
    assert times.closing(other) is None     # (it wrote nothing)
    clock.now += SECOND
    assert times.closing(writer) == clock.now    # its write was still to show: the close's time


def test_one_handle_closing_leaves_another_writer_held_back():
    times, clock = table()
    a, b = Handle(), Handle()
    times.writing(a, lambda: 5)
    times.writing(b, lambda: 6)
    clock.now += SECOND
    closed = times.closing(a)
    assert closed == clock.now
    assert times.shown(KEY) == closed       # b's write is still to show
    clock.now += 5 * SECOND
    assert times.shown(KEY) == closed + SECOND    # b's first write came due (at 2 s)
    assert times.closing(b) == closed + SECOND
    assert times.shown(KEY) is None


def test_the_end_of_file_shows_now_for_every_handle_holding_the_file_back():
    times, clock = table()
    writer, setter = Handle(), Handle()
    times.writing(writer, lambda: 5)
    clock.now += 1
    times.modified_now(setter)
    assert times.shown(KEY) == clock.now
    times.modified_now(writer)
    assert times.show_now(writer) is None
