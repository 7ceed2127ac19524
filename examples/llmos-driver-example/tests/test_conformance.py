"""The example driver passes the llmos driver conformance kit, and its allocator keeps its promises."""

from llmos.drivers.conformance import DriverConformance
from llmos_driver_example.arena import ALIGN, Arena
from llmos_driver_example.driver import ArenaDriver


class TestArenaDriver(DriverConformance):
    driver_class = ArenaDriver
    capacity_options = {"capacity_bytes": 1 << 20}  # small enough for the kit to fill


def test_fragmented_holes_refuse_then_merge():
    arena = Arena(4 * ALIGN)
    a, b, c = arena.take(ALIGN), arena.take(ALIGN + 1), arena.take(1)  # b takes two units
    assert (a, b, c) == (0, ALIGN, 3 * ALIGN) and arena.take(1) is None
    arena.give(a, ALIGN)
    arena.give(c, 1)
    assert arena.free == 2 * ALIGN and arena.take(2 * ALIGN) is None  # two units free, in two pieces
    arena.give(b, ALIGN + 1)
    assert arena.holes == [(0, 4 * ALIGN)]
