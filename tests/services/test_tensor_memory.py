"""Tensor memory accounting: admission answers and its invariants under any sequence of calls."""

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from llmos.services.memory.admission import Admission
from llmos.services.memory.tensor import TensorMemory


def test_admission_answers():
    mem = TensorMemory(100, default_quota=60)
    assert mem.admit(1, 101) is Admission.NEVER  # bigger than the device
    assert mem.admit(1, 61) is Admission.NEVER  # bigger than the quota
    mem.charge(1, owner=1, nbytes=50)
    assert mem.admit(1, 20) is Admission.LATER  # own quota full for now
    mem.charge(2, owner=2, nbytes=45)
    assert mem.admit(3, 10) is Admission.LATER  # the device is full for now
    assert mem.admit(3, 5) is Admission.OK
    with pytest.raises(ValueError, match="not admissible"):
        mem.charge(3, owner=3, nbytes=10)
    mem.set_quota(3, 200)
    assert mem.quota(3) == 100  # a quota never exceeds the device


def test_transfer_moves_the_charge():
    mem = TensorMemory(100)
    mem.charge(7, owner=1, nbytes=30)
    mem.transfer(7, 2)
    assert mem.by_owner == {2: 30} and mem.used == 30
    assert mem.release(7) == 30 and mem.used == 0 and mem.by_owner == {}


class TensorMemoryMachine(RuleBasedStateMachine):
    """Random charges, releases, transfers and quota changes keep the books exact."""

    def __init__(self):
        super().__init__()
        self.mem = TensorMemory(1000, default_quota=400)
        self.next_id = 0

    @rule(owner=st.integers(1, 4), nbytes=st.integers(0, 500))
    def charge(self, owner, nbytes):
        verdict = self.mem.admit(owner, nbytes)
        if verdict is Admission.OK:
            self.mem.charge(self.next_id, owner, nbytes)
            self.next_id += 1
        else:
            with pytest.raises(ValueError):
                self.mem.charge(self.next_id, owner, nbytes)

    @precondition(lambda self: self.mem.allocations)
    @rule(data=st.data())
    def release(self, data):
        self.mem.release(data.draw(st.sampled_from(sorted(self.mem.allocations))))

    @precondition(lambda self: self.mem.allocations)
    @rule(data=st.data(), owner=st.integers(1, 4))
    def transfer(self, data, owner):
        self.mem.transfer(data.draw(st.sampled_from(sorted(self.mem.allocations))), owner)

    @invariant()
    def books_balance(self):
        by_owner = {}
        for owner, nbytes in self.mem.allocations.values():
            by_owner[owner] = by_owner.get(owner, 0) + nbytes
        assert {o: n for o, n in by_owner.items() if n} == self.mem.by_owner
        assert self.mem.used == sum(by_owner.values()) <= self.mem.capacity
        assert self.mem.free == self.mem.capacity - self.mem.used


TestTensorMemoryMachine = TensorMemoryMachine.TestCase
