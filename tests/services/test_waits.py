"""Waiting allocations: what fits goes ahead, a waiter that only its own frees can help blocks nobody, and
no waiter is passed more than `max_bypass` times (services/memory/waits.py)."""

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from llmos.services.memory.admission import Admission
from llmos.services.memory.tensor import TensorMemory
from llmos.services.memory.waits import WaitQueue


def drain(q: WaitQueue, mem: TensorMemory, ids, passed=None) -> list:
    """What the kernel does after every free: run each waiter admitted now, earliest first.

    `passed`, if given, counts (independently of the queue's own counter) how often each waiter was passed.
    """
    ran = []
    while (w := q.next_ready(mem)) is not None:
        if passed is not None:
            count_passes(q, mem, passed, w.arrival)
        mem.charge(next(ids), w.owner, w.size)
        ran.append(w.payload)
    return ran


def count_passes(q: WaitQueue, mem: TensorMemory, passed: dict, arrival: float) -> None:
    """An allocation that arrived at `arrival` is admitted: it passes every earlier waiter that waits for device memory."""
    for w in q.waiting:
        if w.arrival < arrival and not WaitQueue.quota_blocked(mem, w):
            passed[w] = passed.get(w, 0) + 1


def test_a_waiter_blocked_by_its_own_quota_blocks_nobody():
    mem, q, ids = TensorMemory(100, default_quota=50), WaitQueue(), iter(range(100))
    mem.charge(next(ids), 1, 50)  # owner 1's quota is full
    assert q.check(mem, 1, 10) is Admission.LATER
    q.add(1, 10, "mine")
    assert q.admit(mem, 2, 30) is Admission.OK  # owner 2 fits: it goes ahead
    q.add(2, 60, "too big for the quota")  # NEVER would not park; here: waits for nothing it can get
    assert drain(q, mem, ids) == [] and q.waiting[0].bypassed == 0  # quota-blocked: not counted, reserves nothing


def test_a_waiter_passed_max_bypass_times_reserves_its_size():
    mem, q, ids = TensorMemory(100), WaitQueue(max_bypass=2), iter(range(100))
    mem.charge(big := next(ids), 1, 80)
    q.add(2, 50, "large")  # needs 50, 20 free
    for _ in range(2):
        assert q.admit(mem, 3, 5) is Admission.OK  # small ones go ahead...
        mem.charge(next(ids), 3, 5)
    assert q.waiting[0].bypassed == 2
    assert q.check(mem, 3, 5) is Admission.LATER  # ...until it has been passed twice: 10 free, 50 reserved
    mem.release(big)  # 90 free
    assert q.check(mem, 3, 40) is Admission.OK and q.check(mem, 3, 41) is Admission.LATER  # must leave 50
    assert drain(q, mem, ids) == ["large"]


class WaitQueueMachine(RuleBasedStateMachine):
    """Random waiting and plain allocations and frees, the queue drained after every free as the kernel does."""

    def __init__(self):
        super().__init__()
        self.mem = TensorMemory(100, default_quota=60)
        self.q = WaitQueue(max_bypass=3)
        self.ids = iter(range(10**9))
        self.passed = {}  # waiter -> allocations admitted after it while it waited for device memory

    @rule(owner=st.integers(1, 3), size=st.integers(0, 70), wait=st.booleans())
    def alloc(self, owner, size, wait):
        verdict = self.q.admit(self.mem, owner, size)
        if verdict is Admission.OK:
            count_passes(self.q, self.mem, self.passed, float("inf"))
            self.mem.charge(next(self.ids), owner, size)
        elif verdict is Admission.LATER and wait:
            self.q.add(owner, size)

    @precondition(lambda self: self.mem.allocations)
    @rule(data=st.data())
    def free(self, data):
        self.mem.release(data.draw(st.sampled_from(sorted(self.mem.allocations))))
        drain(self.q, self.mem, self.ids, self.passed)

    @invariant()
    def nothing_that_may_run_is_left_waiting(self):
        for w in self.q.waiting:
            assert self.q.check(self.mem, w.owner, w.size, before=w) is Admission.LATER

    @invariant()
    def no_waiter_is_passed_more_than_max_bypass_times(self):
        assert all(self.passed.get(w, 0) <= self.q.max_bypass for w in self.q.waiting)

    def teardown(self):
        while self.mem.allocations:  # everyone frees in the end: every waiter gets its memory
            self.mem.release(min(self.mem.allocations))
            drain(self.q, self.mem, self.ids)
        assert not self.q.waiting


TestWaitQueueMachine = WaitQueueMachine.TestCase
