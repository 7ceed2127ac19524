"""The kernel's ring of recent timeline events: what it keeps, numbering, reading from a number, losses."""

from llmos.kernel.tracering import TraceRing


def test_ring_keeps_device_sched_and_kv_events_only():
    assert TraceRing.keeps("device.busy") and TraceRing.keeps("sched.preempt") and TraceRing.keeps("kv.swap_out")
    assert not TraceRing.keeps("syscall") and not TraceRing.keeps("syscall.exit") and not TraceRing.keeps("mem.alloc")


def test_reading_from_a_number_and_counting_what_fell_out():
    ring = TraceRing(capacity=3)
    assert ring.since(0) == ([], 0)
    for i in range(5):
        ring.add(float(i), "device.busy", {"pid": i})
    assert ring.next == 6
    events, lost = ring.since(0)
    assert [e[0] for e in events] == [3, 4, 5] and lost == 2  # 1 and 2 fell out
    events, lost = ring.since(4)
    assert [e[0] for e in events] == [4, 5] and lost == 0
    assert ring.since(6) == ([], 0) and ring.since(99) == ([], 0)
    assert ring.since(2)[1] == 1
